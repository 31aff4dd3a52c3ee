//! One call's signalling state across its two dialogs.

use std::time::{Duration, Instant};

use xcc_core::ids::CallId;

use super::Side;
use crate::dialog::Dialog;
use crate::message::{Request, Response};
use crate::transaction::TransactionKey;

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The INVITE towards the called side is pending.
    Early,
    /// Answered: 2xx sent to the caller.
    Confirmed,
    /// The caller cancelled (or the daemon hung up while ringing): 487 sent, media released,
    /// CANCEL sent or waiting for a provisional to be allowed; the call is forgotten when the
    /// called side's INVITE ends or at `until` (64*T1, RFC 3261 §9.1).
    Cancelling {
        /// When to give up on the called side's final response.
        until: Instant,
    },
}

/// One dialog side of the call.
#[derive(Debug, Default)]
pub(super) struct Leg {
    /// The dialog, once it exists: the caller's at once (XCC is its UAS), the called side's at
    /// the 2xx.
    pub dialog: Option<Dialog>,
    /// The last SDP XCC sent this side: the answer to an offerless re-INVITE (session refresh).
    pub last_sdp: Option<String>,
}

/// XCC's 2xx to an INVITE from `side`, retransmitted over UDP until the ACK (RFC 3261
/// §13.3.1.4), given up at 64*T1.
#[derive(Debug)]
pub(super) struct OkRetransmit {
    /// The side the 2xx goes to.
    pub side: Side,
    /// Its INVITE server transaction (Accepted: it sends what we hand it).
    pub key: TransactionKey,
    /// The 2xx.
    pub response: Response,
    /// Next retransmission; `None` on a reliable transport.
    pub next: Option<Instant>,
    /// Current interval (T1 doubling to T2).
    pub interval: Duration,
    /// No ACK by then: end the call.
    pub give_up: Instant,
}

/// A re-INVITE being relayed: from `from` to the other side.
#[derive(Debug)]
pub(super) struct ReInvite {
    /// The side that sent it.
    pub from: Side,
    /// Its server transaction on `from`'s endpoint.
    pub server: TransactionKey,
    /// The request, to build the response from.
    pub request: Request,
    /// `from` sent it over a reliable transport (no 2xx retransmission).
    pub reliable: bool,
}

/// A call.
#[derive(Debug)]
pub(super) struct Call {
    /// Call id (= media session id).
    pub id: CallId,
    /// The side whose INVITE started the call (XCC is UAS there, UAC on the other side).
    pub origin: Side,
    /// The caller's INVITE came over a reliable transport (no 2xx retransmission).
    pub origin_reliable: bool,
    /// Where the call is.
    pub phase: Phase,
    /// The two dialogs, by [`Side::index`].
    pub legs: [Leg; 2],
    /// Our To tag on the caller's dialog.
    pub local_tag: String,
    /// The caller's INVITE and its server transaction.
    pub invite_in: Request,
    /// Key of `invite_in`'s server transaction.
    pub invite_in_key: TransactionKey,
    /// The INVITE sent to the called side (the latest, after a digest retry).
    pub invite_out: Request,
    /// Its client transaction.
    pub invite_out_key: TransactionKey,
    /// A 401/407 was already answered once: the next one is relayed.
    pub auth_tried: bool,
    /// The answer given to the caller with early media (183): the 2xx reuses it.
    pub early_answer: Option<String>,
    /// Cancelled before the called side sent a provisional: CANCEL as soon as one arrives.
    pub cancel_wanted: bool,
    /// The media session is still allocated (released exactly once).
    pub media_live: bool,
    /// Pending 2xx retransmission towards a side.
    pub ok_retx: Option<OkRetransmit>,
    /// A re-INVITE in flight (either direction; a second one gets 491).
    pub reinvite: Option<ReInvite>,
}

impl Call {
    /// The side XCC called.
    pub fn called(&self) -> Side {
        self.origin.other()
    }

    /// The leg facing `side`.
    pub fn leg(&self, side: Side) -> &Leg {
        &self.legs[side.index()]
    }

    /// The leg facing `side`, mutable.
    pub fn leg_mut(&mut self, side: Side) -> &mut Leg {
        &mut self.legs[side.index()]
    }

    /// Earliest call timer.
    pub fn deadline(&self) -> Option<Instant> {
        let retx = self
            .ok_retx
            .as_ref()
            .map(|r| r.next.map_or(r.give_up, |n| n.min(r.give_up)));
        let cancel = match self.phase {
            Phase::Cancelling { until } => Some(until),
            _ => None,
        };
        [retx, cancel].into_iter().flatten().min()
    }
}
