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
    /// A stored call's port cannot be taken again after a restart (outside the pool now, already
    /// used, or bound by another process): the call cannot resume.
    #[error("port {port} unavailable: {reason}")]
    PortUnavailable {
        /// The RTP port of the pair.
        port: u16,
        /// Why.
        reason: &'static str,
    },
    /// An `a=crypto` attribute value is malformed (RFC 4568 §9.2 grammar).
    #[error("a=crypto: {reason}")]
    CryptoParse {
        /// Which rule of the grammar the value broke.
        reason: &'static str,
    },
    /// An `a=crypto` attribute names a suite XCC does not implement; the caller skips it and
    /// considers the peer's other attributes.
    #[error("a=crypto: unsupported suite `{name}`")]
    UnsupportedSuite {
        /// The suite name as received (at most 64 characters kept).
        name: String,
    },
    /// An `a=crypto` attribute carries more than one `inline:` key; XCC keys one master key per
    /// direction (no MKI-based rekeying), so it refuses the attribute instead of ignoring keys.
    #[error("a=crypto: {count} inline keys given, XCC supports one")]
    MultipleKeys {
        /// Number of `inline:` key parameters in the attribute.
        count: usize,
    },
    /// An `a=crypto` session parameter XCC cannot honour (a non-zero KDR, or an unknown mandatory
    /// parameter, RFC 4568 §6.3.7): the attribute must be treated as invalid.
    #[error("a=crypto: unsupported session parameter `{param}`")]
    UnsupportedSessionParam {
        /// The parameter as received (at most 64 characters kept).
        param: String,
    },
    /// None of the peer's `a=crypto` attributes uses a suite and parameters XCC supports (SIP 488).
    #[error("no acceptable a=crypto among {offered} offered")]
    NoCommonSuite {
        /// Attributes the peer offered (supported or not).
        offered: usize,
    },
    /// The answerer's `a=crypto` does not match any attribute XCC offered (RFC 4568 §7.1.3: same tag
    /// and suite are required).
    #[error("answered a=crypto tag {tag} ({suite}) was not offered")]
    CryptoAnswerMismatch {
        /// Tag in the answer.
        tag: u32,
        /// Suite in the answer.
        suite: &'static str,
    },
    /// SDP text breaks the RFC 8866 grammar in a way XCC cannot relay.
    #[error("sdp line {line}: {reason}")]
    SdpParse {
        /// 1-based line number in the received text (0 when the whole body is at fault).
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The SDP has no audio m= section, and XCC relays exactly one audio stream per call.
    #[error("sdp has no audio m= section")]
    SdpNoAudio,
    /// The media engine is shutting down or its workers are gone.
    #[error("media engine stopped")]
    Stopped,
    /// XCC relays its client legs through a TURN server (`[turn]`) and has no allocation ready on
    /// it: the server is unreachable, refuses the credentials or is slower than the call rate
    /// (SIP 503 with Retry-After, gRPC UNAVAILABLE). Calls are never set up without the relay,
    /// because clients could not reach XCC's own address.
    #[error("no TURN allocation ready on {server}: {reason}")]
    RelayUnavailable {
        /// The TURN server.
        server: SocketAddr,
        /// The last failure, or that allocations are still being made.
        reason: String,
    },
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
