//! Identifiers shared by the media plane and its callers.

use std::fmt;

/// One relayed call, unique for the lifetime of the process.
///
/// A number rather than the SIP Call-ID: both signalling planes (SIP and gRPC) map their own ids
/// onto it, and workers index their tables with it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which side of a call a leg faces. A call always has exactly these two legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LegSide {
    /// Softphone / mobile app side: SDES-SRTP, often behind NAT.
    Client,
    /// PBX / SBC side: plain RTP (or SRTP).
    Pbx,
}

impl LegSide {
    /// The leg media from this side is forwarded to.
    pub fn other(self) -> Self {
        match self {
            LegSide::Client => LegSide::Pbx,
            LegSide::Pbx => LegSide::Client,
        }
    }

    /// Index into per-call `[T; 2]` arrays (client = 0, pbx = 1).
    pub fn index(self) -> usize {
        match self {
            LegSide::Client => 0,
            LegSide::Pbx => 1,
        }
    }
}

impl fmt::Display for LegSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LegSide::Client => "client",
            LegSide::Pbx => "pbx",
        })
    }
}
