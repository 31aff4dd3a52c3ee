//! The media plane's one error type.

use std::net::SocketAddr;

use crate::ids::CallId;

/// Everything that can go wrong in `xcc-core`, structured so callers can map it to SIP status codes
/// or gRPC status without parsing strings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Master key + salt did not have the length the suite needs.
    #[error("{suite}: keying material must be {expected} bytes, got {got}")]
    KeyLength {
        /// Suite name as in `a=crypto`.
        suite: &'static str,
        /// key + salt bytes required.
        expected: usize,
        /// key + salt bytes given.
        got: usize,
    },
    /// The port pool has no free even/odd pair left (SIP 503, gRPC RESOURCE_EXHAUSTED).
    #[error("port pool exhausted: {free} ports free, {needed} needed")]
    PoolExhausted {
        /// Ports currently free.
        free: usize,
        /// Ports the request needed.
        needed: usize,
    },
    /// No call with this id (already ended or never existed).
    #[error("unknown call {0}")]
    UnknownCall(CallId),
    /// A socket could not be bound or configured.
    #[error("socket {addr}: {source}")]
    Socket {
        /// Address being bound or configured.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An `a=crypto` attribute could not be parsed or is not supported.
    #[error("a=crypto: {0}")]
    Crypto(String),
    /// SDP could not be parsed or lacks what XCC needs.
    #[error("sdp: {0}")]
    Sdp(String),
    /// The media engine is shutting down or its workers are gone.
    #[error("media engine stopped")]
    Stopped,
    /// A packet could not be protected or unprotected.
    #[error("srtp: {0}")]
    Srtp(#[from] crate::srtp::SrtpError),
    /// Invalid configuration value.
    #[error("invalid media config `{key}`: {reason}")]
    Config {
        /// The configuration key.
        key: &'static str,
        /// Why it was refused.
        reason: String,
    },
}

/// Result alias for the media plane.
pub type Result<T, E = Error> = std::result::Result<T, E>;
