//! The worker pool: share-nothing threads that own calls and forward their packets.
//!
//! Each worker owns its calls outright (sockets, legs, SRTP contexts, counters) and runs its own
//! mio `Poll`. The control plane reaches a worker only through [`Command`]s on a crossbeam channel
//! followed by a [`mio::Waker`] wake-up; workers answer through the event channel, the freed-ports
//! channel and the lock-free [`published::Published`] record of each call.

pub mod call;
pub(crate) mod client_relay;
pub(crate) mod published;
pub(crate) mod ready_set;
pub(crate) mod spares;
pub(crate) mod totals;
pub(crate) mod turn_link;
pub(crate) mod worker;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::ids::{CallId, LegSide};
use crate::media::{LegConfig, LegPorts};

/// Everything a worker needs to take over a freshly allocated call.
#[derive(Debug)]
pub(crate) struct NewCall {
    /// The call.
    pub call: CallId,
    /// Bound sockets: client RTP, client RTCP, PBX RTP, PBX RTCP.
    pub sockets: [mio::net::UdpSocket; 4],
    /// Ports as bound, per leg.
    pub ports: [LegPorts; 2],
    /// When the control plane allocated it (for snapshots).
    pub created: SystemTime,
    /// Where the control plane reads the worker's counters.
    pub published: Arc<published::Published>,
    /// For a call restored after a restart: configuration, latches and SRTP progress per leg.
    pub resume: Option<Box<[crate::media::LegResume; 2]>>,
    /// The client leg's TURN allocations when `[turn]` relays client legs.
    pub relay: Option<Box<client_relay::ClientRelay>>,
}

/// Control plane to worker.
#[derive(Debug)]
pub(crate) enum Command {
    /// Take ownership of a new call.
    Add(Box<NewCall>),
    /// (Re)configure one leg of a call.
    Configure {
        /// The call.
        call: CallId,
        /// The leg.
        side: LegSide,
        /// Signalling for it.
        config: Box<LegConfig>,
    },
    /// End a call as released.
    Release(CallId),
    /// End every call and stop.
    Shutdown,
}

/// Worker to control plane: a call's pairs may go to quarantine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Freed {
    /// The call that held them.
    pub call: CallId,
    /// Even ports of its two pairs.
    pub rtp_ports: [u16; 2],
    /// When its sockets were closed.
    pub at: Instant,
}
