//! RFC 3261 §17 transactions as sans-IO state machines.
//!
//! Every machine is driven with the same verbs: `handle_*(now, input)` feeds it a message or the
//! clock, `poll_transmit()` yields messages to send, `poll_timeout()` says when to call
//! `handle_timeout(now)` next, `poll_event()` yields what the transaction user must know. Nothing
//! here reads the clock or touches a socket, so the 32-second timers run in microseconds in tests.
//!
//! [`Endpoint`](crate::endpoint::Endpoint) owns many of them and does the matching.

mod client_invite;
mod client_non_invite;
mod key;
mod server_invite;
mod server_non_invite;

use std::time::{Duration, Instant};

pub use client_invite::InviteClient;
pub use client_non_invite::NonInviteClient;
pub use key::{Role, TransactionKey, generate_branch};
pub use server_invite::InviteServer;
pub use server_non_invite::NonInviteServer;

use crate::message::Response;

/// RFC 3261 timer base values (§17.1.1.1, Table 4); configurable for networks with longer RTTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate; every retransmit interval starts here (default 500 ms).
    pub t1: Duration,
    /// Cap on non-INVITE request and INVITE response retransmit intervals (default 4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (default 5 s).
    pub t4: Duration,
    /// Timer C (RFC 3261 §16.6, default 180 s): how long an INVITE client stays in Proceeding
    /// after the last provisional. RFC 3261 gives UACs no bound (the TU is expected to CANCEL),
    /// which leaks the transaction when a peer rings forever and ignores CANCEL.
    pub c: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            c: Duration::from_secs(180),
        }
    }
}

impl Timers {
    /// 64*T1: timers B, F, H and J.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }

    /// Timer D: at least 32 s on unreliable transports, zero on reliable ones (§17.1.1.2).
    pub fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            Duration::from_secs(32).max(self.t1x64())
        }
    }
}

/// RFC 3261 transaction states (Figures 5-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// INVITE client: request sent, nothing heard.
    Calling,
    /// Non-INVITE: request sent (client) or received (server), no response yet.
    Trying,
    /// A provisional response was received (client) or sent (server).
    Proceeding,
    /// A final response was received or sent; absorbing retransmissions.
    Completed,
    /// INVITE server: ACK received for a non-2xx final response.
    Confirmed,
    /// INVITE, after a 2xx (RFC 6026): absorbs retransmitted INVITEs (server) and passes 2xx
    /// retransmissions up (client) until timer L / M, so a late INVITE retransmission never looks
    /// like a new call.
    Accepted,
    /// Done; the owner drops the transaction.
    Terminated,
}

/// What a transaction tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Client: a response to pass up (retransmitted finals are absorbed, not repeated).
    Response(Box<Response>),
    /// Client: timer B or F fired (treat as 408). Server: timer H fired, ACK never came.
    Timeout,
    /// The transaction reached Terminated.
    Terminated,
}

/// A deadline with its current retransmit interval (timers A, E, G double/cap it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retransmit {
    /// When it fires.
    pub at: Instant,
    /// The interval just used.
    pub interval: Duration,
}

/// Earliest of several optional deadlines.
pub(crate) fn earliest(deadlines: &[Option<Instant>]) -> Option<Instant> {
    deadlines.iter().flatten().min().copied()
}

/// True when a deadline is set and not after `now`.
pub(crate) fn due(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|d| d <= now)
}
