//! The media engine as the B2BUA sees it: offer/answer through XCC's ports, behind a trait so that
//! the signalling core is tested against a fake and the daemon plugs in its session table.

use xcc_core::ids::CallId;

use super::Side;

/// What the B2BUA asks of the media plane. Implemented by the daemon over
/// `xcc_grpc::session::SessionTable` (client leg = [`Side::Server`], PBX leg = [`Side::Pbx`]);
/// every method is called from the B2BUA's single task, never from the packet path.
///
/// Contract: each call id returned by [`MediaSessions::offer`] gets exactly one
/// [`MediaSessions::release`], after which the B2BUA never names it again.
pub trait MediaSessions {
    /// A new call: `sdp` is the initial offer from `from`; allocate ports and return the offer
    /// to send to the other side. `key` identifies the SIP call (side, Call-ID, From tag) so a
    /// retried create is recognised.
    fn offer(&mut self, key: &str, from: Side, sdp: &str) -> Result<MediaOffer, MediaRefusal>;
    /// The answer to the pending offer, from the side the offer was sent to; returns the SDP
    /// for the offerer. Called at most once per offer (a 200 after a 183 with SDP reuses the
    /// first answer).
    fn answer(&mut self, call: CallId, sdp: &str) -> Result<String, MediaRefusal>;
    /// A re-offer (re-INVITE: hold, resume, new codec or address) from `from` on an answered
    /// call; returns the offer for the other side. On refusal the old media must stay as it was.
    fn reoffer(&mut self, call: CallId, from: Side, sdp: &str) -> Result<String, MediaRefusal>;
    /// The other side refused the pending re-offer (or never answered it): forget it and keep
    /// the media negotiated before, so the next re-offer is not refused as "still pending".
    fn abandon_offer(&mut self, call: CallId);
    /// The call is over: free its ports.
    fn release(&mut self, call: CallId);
}

/// A new call's media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaOffer {
    /// The call (= media session) id, also the B2BUA's call id.
    pub call: CallId,
    /// The offer to send to the other side, rewritten to XCC's address and ports.
    pub sdp: String,
}

/// Why the media plane said no; each maps to one SIP status (see [`MediaRefusal::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaRefusal {
    /// No free port quadruple: 503 with Retry-After, so the caller retries later or elsewhere.
    #[error("media port pool exhausted")]
    Exhausted,
    /// XCC is draining and takes no new calls: 503 with Retry-After.
    #[error("draining")]
    Draining,
    /// XCC relays its client legs through a TURN server and has no allocation ready on it
    /// (unreachable, refusing, or slower than the call rate): 503 with Retry-After, like an
    /// exhausted pool, but named apart so the Warning and the log say which resource ran out.
    #[error("no TURN relay allocation ready: {reason}")]
    RelayUnavailable {
        /// The media plane's words (server and last failure), for the Warning header and the log.
        reason: String,
    },
    /// The SDP is unusable (no audio, no acceptable crypto suite, unparsable): 488.
    #[error("unacceptable SDP: {reason}")]
    BadSdp {
        /// What was wrong, for the Warning header and the log.
        reason: String,
    },
    /// The media plane no longer knows the call (it ended underneath, e.g. a media timeout
    /// racing a re-INVITE): 481.
    #[error("unknown call")]
    UnknownCall,
    /// An offer is already pending on the call (glare inside the media plane): 491.
    #[error("an offer is already pending")]
    OfferPending,
    /// Anything else (a bug or an OS error in the media plane): 500.
    #[error("media plane failure: {reason}")]
    Internal {
        /// What failed, for the log.
        reason: String,
    },
}

impl MediaRefusal {
    /// The SIP status this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Exhausted | Self::Draining | Self::RelayUnavailable { .. } => 503,
            Self::BadSdp { .. } => 488,
            Self::UnknownCall => 481,
            Self::OfferPending => 491,
            Self::Internal { .. } => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_refusals_are_503_and_the_relay_is_named_apart() {
        let relay = MediaRefusal::RelayUnavailable {
            reason: "no TURN allocation ready on 198.51.100.7:3478: 401".into(),
        };
        assert_eq!(relay.status(), 503);
        assert_eq!(MediaRefusal::Exhausted.status(), 503);
        assert_eq!(MediaRefusal::Draining.status(), 503);
        assert!(
            relay
                .to_string()
                .starts_with("no TURN relay allocation ready: "),
            "{relay}"
        );
    }
}
