//! Why a packet could not be protected or unprotected.

/// Per-packet SRTP/SRTCP failure. Doubles as the drop reason the relay counts, so each variant is a
/// distinct cause an operator can act on (an attack looks different from a broken peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// Fewer bytes than the fixed header plus the trailer (tag, SRTCP index) the suite needs.
    #[error("packet too short for SRTP/SRTCP")]
    TooShort,
    /// The caller's buffer cannot hold the protected packet (or `len` exceeds the buffer).
    #[error("buffer too small for the protected packet")]
    BufferTooSmall,
    /// Not RTP/RTCP version 2, or the header's CSRC count / extension length overruns the packet.
    #[error("malformed RTP/RTCP header")]
    Malformed,
    /// The authentication tag did not verify: forged, corrupted, or keyed with another key.
    #[error("SRTP/SRTCP authentication failed")]
    AuthFailed,
    /// Already received, or older than the 64-packet replay window.
    #[error("SRTP/SRTCP replayed or too old")]
    Replay,
    /// 2^48 SRTP or 2^31 SRTCP packets were protected with this key (RFC 3711 §9.2): re-key.
    #[error("SRTP/SRTCP packet index exhausted for this key")]
    KeyExhausted,
}
