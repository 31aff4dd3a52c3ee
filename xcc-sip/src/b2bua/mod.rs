//! The back-to-back user agent: one call across two dialogs, one towards the controlling server
//! and one towards the PBX, with media through XCC.
//!
//! Sans-IO like the rest of the crate. The B2BUA owns one [`Endpoint`] per [`Side`] and is a UA
//! on each: its own Call-ID, tags, CSeq and Contact on the far dialog, so in-dialog requests come
//! back to XCC. Media is behind [`MediaSessions`], passed into every call that may touch it.
//!
//! Drive loop: `handle_bytes(now, side, source, bytes, media)` for every datagram/frame a side's
//! listener receives; drain [`B2bua::poll_transmit`] (which side's listener sends it) and
//! [`B2bua::poll_event`]; sleep until [`B2bua::poll_timeout`] and call
//! [`B2bua::handle_timeout`].

mod config;
mod event;
mod media;

use std::time::Instant;

use xcc_core::ids::{CallId, LegSide};

pub use config::{B2buaConfig, SideConfig};
pub use event::{B2buaCounters, B2buaEvent, EndReason, HangupReason, SideCounters};
pub use media::{MediaOffer, MediaRefusal, MediaSessions};

use crate::endpoint::{Endpoint, Peer, Transmit};

/// Which of XCC's two SIP neighbours a message comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The controlling (XPhone) server: XCC listens on 4901 and sends to its 4900. Its calls'
    /// media is the client leg (SDES-SRTP).
    Server,
    /// The PBX/SBC trunk on 5060; plain RTP media.
    Pbx,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Self {
        match self {
            Self::Server => Self::Pbx,
            Self::Pbx => Self::Server,
        }
    }

    /// Array index (Server 0, Pbx 1) for per-side tables.
    pub fn index(self) -> usize {
        match self {
            Self::Server => 0,
            Self::Pbx => 1,
        }
    }

    /// The media leg this side's SDP describes.
    pub fn leg(self) -> LegSide {
        match self {
            Self::Server => LegSide::Client,
            Self::Pbx => LegSide::Pbx,
        }
    }

    /// Lower-case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Pbx => "pbx",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The B2BUA core.
#[derive(Debug)]
pub struct B2bua {
    cfg: B2buaConfig,
    endpoints: [Endpoint; 2],
    draining: bool,
    counters: B2buaCounters,
}

impl B2bua {
    /// A B2BUA with no calls. `seed` feeds the RNG for tags, Call-IDs, branches and cnonces
    /// (the daemon passes OS randomness, tests a fixed seed). OPTIONS monitoring of each side
    /// with an `options_interval` starts at `now`.
    pub fn new(cfg: B2buaConfig, now: Instant, seed: [u8; 32]) -> Self {
        let _ = (now, seed);
        Self {
            endpoints: [Endpoint::new(cfg.timers), Endpoint::new(cfg.timers)],
            cfg,
            draining: false,
            counters: B2buaCounters::default(),
        }
    }

    /// One datagram (UDP) or one frame (TCP, cut by [`crate::framing`]) received by `side`'s
    /// listener from `source`.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        side: Side,
        source: Peer,
        bytes: &[u8],
        media: &mut impl MediaSessions,
    ) {
        let _ = (now, side, source, bytes, media);
    }

    /// Fires due timers: transactions, 2xx retransmission, OPTIONS probes, lingering state.
    pub fn handle_timeout(&mut self, now: Instant, media: &mut impl MediaSessions) {
        let _ = (now, media);
    }

    /// The driver could not deliver to `peer` on `side` (TCP connect refused or reset): the
    /// transactions towards it fail now (a pending INVITE is answered 503 to its caller).
    pub fn handle_transport_error(
        &mut self,
        now: Instant,
        side: Side,
        peer: Peer,
        media: &mut impl MediaSessions,
    ) {
        let _ = (now, side, peer, media);
    }

    /// Ends a call from the daemon's side (media timeout, gRPC hang-up, drain grace): BYE on
    /// both dialogs once answered, 487 + CANCEL while ringing; media released. Unknown ids are
    /// ignored (the call may have just ended).
    pub fn hangup(
        &mut self,
        now: Instant,
        call: CallId,
        reason: HangupReason,
        media: &mut impl MediaSessions,
    ) {
        let _ = (now, call, reason, media);
    }

    /// While draining, new INVITEs and out-of-dialog OPTIONS are answered 503 with
    /// Retry-After; calls in progress continue.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Whether new calls are refused.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Next message to send, with the side whose listener must send it.
    pub fn poll_transmit(&mut self) -> Option<(Side, Transmit)> {
        for side in [Side::Server, Side::Pbx] {
            if let Some(t) = self.endpoints[side.index()].poll_transmit() {
                return Some((side, t));
            }
        }
        None
    }

    /// When [`B2bua::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.endpoints
            .iter()
            .filter_map(Endpoint::poll_timeout)
            .min()
    }

    /// Next lifecycle or health event.
    pub fn poll_event(&mut self) -> Option<B2buaEvent> {
        None
    }

    /// Calls holding signalling state (ringing, answered, or cancelled and awaiting the far
    /// side's final response).
    pub fn calls(&self) -> usize {
        0
    }

    /// Live transactions per side (leak checks).
    pub fn transactions(&self) -> [usize; 2] {
        [self.endpoints[0].len(), self.endpoints[1].len()]
    }

    /// Counters for metrics.
    pub fn counters(&self) -> B2buaCounters {
        self.counters.clone()
    }
}
