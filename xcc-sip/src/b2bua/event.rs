//! What the B2BUA tells the daemon: call lifecycle, peer health, and counters for metrics.

use std::collections::BTreeMap;

use xcc_core::ids::CallId;

use super::Side;
use crate::monitor::Health;

/// Why the daemon (not a SIP peer) ends a call with [`super::B2bua::hangup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupReason {
    /// The media plane saw no packets for too long.
    MediaTimeout,
    /// An operator or the controlling server hung up through gRPC.
    Api,
    /// The drain grace period ran out.
    Drain,
}

/// Why a call ended; every [`B2buaEvent::CallStarted`] is followed by exactly one
/// [`B2buaEvent::CallEnded`] carrying one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// A BYE from this side after the call was answered.
    Bye {
        /// Who hung up.
        from: Side,
    },
    /// The caller cancelled before the answer (CANCEL, or BYE on the early dialog).
    Cancelled,
    /// The called side answered the INVITE with this final status (relayed to the caller).
    Rejected {
        /// The status.
        status: u16,
    },
    /// The called side never answered (timer B, or timer C while ringing): 408 to the caller.
    Timeout,
    /// The called side could not be reached (transport error): 503 to the caller.
    Unreachable,
    /// The caller never acknowledged XCC's 2xx (64*T1): BYE both sides.
    AckTimeout,
    /// The called side's answer SDP was refused by the media plane: BYE it, 488 to the caller.
    MediaRefused,
    /// A re-INVITE ended the dialog (the other side answered it 481/408 or never answered).
    ReInviteFailed {
        /// The status that ended it (408 for a timeout).
        status: u16,
    },
    /// The daemon hung up.
    Hangup(HangupReason),
}

/// Lifecycle and health notifications, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum B2buaEvent {
    /// A new call was accepted (media allocated, INVITE sent to the other side).
    CallStarted {
        /// Call id (= media session id).
        call: CallId,
        /// The side whose INVITE started it.
        from: Side,
        /// The caller's From URI.
        caller: String,
        /// The called user (Request-URI user part).
        callee: String,
        /// The SIP Call-ID on the caller's side, for correlating logs.
        sip_call_id: String,
    },
    /// The called side answered (200 relayed to the caller).
    CallAnswered {
        /// Call id.
        call: CallId,
    },
    /// The call is over and its media released.
    CallEnded {
        /// Call id.
        call: CallId,
        /// Why.
        reason: EndReason,
    },
    /// A confirmed call's dialog state changed (answered, in-dialog request, re-INVITE done):
    /// store `blob` with the call; [`super::B2bua::restore_dialogs`] re-creates the call from it
    /// after a restart. Coalesced: at most one per call per `handle_*` call.
    DialogState {
        /// Call id.
        call: CallId,
        /// The serialised dialogs (versioned JSON, see `persist.rs`).
        blob: Vec<u8>,
    },
    /// An INVITE was refused before a call existed (503 pool/drain, 488 SDP, 483, 420, ...).
    CallRefused {
        /// The side that sent it.
        from: Side,
        /// The status answered.
        status: u16,
    },
    /// A side's OPTIONS monitor changed its verdict.
    PeerHealth {
        /// Which side.
        side: Side,
        /// New health.
        health: Health,
    },
}

/// Message counters per side, for metrics labels `side`, `method`, `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SideCounters {
    /// Requests received, by method (extension methods as written).
    pub requests_in: BTreeMap<String, u64>,
    /// Requests sent, by method.
    pub requests_out: BTreeMap<String, u64>,
    /// Responses received, by the method they answer (CSeq) and status code: "INVITE 503" is
    /// what an operator looks for, and a bare status cannot say which transaction failed.
    pub responses_in: BTreeMap<(String, u16), u64>,
    /// Responses sent by the B2BUA (not the transaction layer's 100 Trying or retransmissions),
    /// by method and status code.
    pub responses_out: BTreeMap<(String, u16), u64>,
}

/// Everything the B2BUA counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct B2buaCounters {
    /// Server side, indexed by [`Side::index`].
    pub sides: [SideCounters; 2],
    /// Calls started.
    pub calls_started: u64,
    /// Calls answered.
    pub calls_answered: u64,
    /// Calls ended (every reason).
    pub calls_ended: u64,
    /// INVITEs refused before a call existed.
    pub calls_refused: u64,
    /// Requests that referred to no dialog (answered 481) or ACKs/responses that matched nothing.
    pub unmatched: u64,
    /// Malformed messages answered 400/505 by the transaction layers.
    pub malformed_answered: u64,
    /// Malformed messages dropped by the transaction layers.
    pub malformed_dropped: u64,
}
