//! The quality module's error type.
//!
//! Kept separate from [`crate::Error`] because its only consumer is the worker, which turns every
//! variant into a counted drop; nothing here is reported to signalling.

/// Why an RTCP packet or a quality setting was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QualityError {
    /// Shorter than the 4-byte RTCP common header, or than the SR/RR fixed part it announces.
    #[error("rtcp: {len} bytes, at least {needed} needed")]
    TooShort {
        /// Bytes available.
        len: usize,
        /// Bytes the header or packet type requires.
        needed: usize,
    },
    /// The version field is not 2 (RFC 3550 §6.4.1).
    #[error("rtcp: version {version}, expected 2")]
    BadVersion {
        /// Version found.
        version: u8,
    },
    /// A packet's length field runs past the end of the datagram (RFC 3550 A.2).
    #[error("rtcp packet at offset {offset}: length {declared} bytes exceeds the {available} left")]
    LengthOverrun {
        /// Byte offset of the packet in the compound.
        offset: usize,
        /// Length the header declares, in bytes including the header.
        declared: usize,
        /// Bytes left in the datagram from `offset`.
        available: usize,
    },
    /// The report count does not fit in the packet's declared length.
    #[error("rtcp packet type {packet_type}: {count} report blocks do not fit in {len} bytes")]
    ReportCountOverrun {
        /// 200 (SR) or 201 (RR).
        packet_type: u8,
        /// Report count from the header.
        count: u8,
        /// Packet length in bytes (padding excluded).
        len: usize,
    },
    /// The padding bit is set on a packet other than the last, or the pad count is zero or longer
    /// than the packet (RFC 3550 A.2).
    #[error("rtcp packet at offset {offset}: invalid padding")]
    BadPadding {
        /// Byte offset of the packet in the compound.
        offset: usize,
    },
    /// The caller's buffer cannot hold the RTCP packet being written.
    #[error("rtcp: {needed} bytes needed, buffer holds {len}")]
    BufferTooSmall {
        /// Bytes the packet needs.
        needed: usize,
        /// Bytes available.
        len: usize,
    },
    /// An SDES CNAME longer than the 255 octets an SDES item can carry.
    #[error("rtcp: CNAME of {len} bytes exceeds 255")]
    CnameTooLong {
        /// Length given.
        len: usize,
    },
    /// A payload type above 127 cannot carry RTP (the marker bit shares its byte).
    #[error("payload type {pt} is not a valid RTP payload type")]
    InvalidPayloadType {
        /// The value given.
        pt: u8,
    },
    /// A clock rate of zero would divide jitter by zero.
    #[error("clock rate must be positive")]
    ZeroClockRate,
}
