//! Just enough RTP / RTCP header parsing to know which bytes SRTP leaves in clear.
//!
//! Hand-parsed (a couple of nanoseconds) rather than through the `rtp` crate, which allocates for
//! CSRCs and extensions.

use super::SrtpError;

/// Fixed RTP header length (RFC 3550 §5.1).
pub(super) const RTP_FIXED_HEADER: usize = 12;
/// RTCP bytes SRTCP leaves in clear: the first header word and the sender SSRC (RFC 3711 §3.4).
pub(super) const RTCP_CLEAR_HEADER: usize = 8;

/// The fields of an RTP header that SRTP needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RtpHeader {
    /// Synchronisation source: selects the per-stream ROC and replay state.
    pub ssrc: u32,
    /// Sequence number: the low 16 bits of the packet index.
    pub seq: u16,
    /// Fixed header + CSRCs + extension: authenticated but never encrypted.
    pub len: usize,
}

/// Parses the RTP header at the start of `pkt` (the whole packet, payload included).
pub(super) fn parse_rtp(pkt: &[u8]) -> Result<RtpHeader, SrtpError> {
    let fixed = pkt.get(..RTP_FIXED_HEADER).ok_or(SrtpError::TooShort)?;
    if fixed[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    let csrc_count = usize::from(fixed[0] & 0x0f);
    let mut len = RTP_FIXED_HEADER + 4 * csrc_count;
    if fixed[0] & 0x10 != 0 {
        // RFC 3550 §5.3.1: 16-bit profile, 16-bit length in 32-bit words, then the words.
        let ext = pkt.get(len..len + 4).ok_or(SrtpError::Malformed)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    if len > pkt.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(RtpHeader {
        ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
        seq: u16::from_be_bytes([fixed[2], fixed[3]]),
        len,
    })
}

/// Checks the first RTCP header of `pkt` and returns the sender SSRC that keys SRTCP state.
pub(super) fn parse_rtcp(pkt: &[u8]) -> Result<u32, SrtpError> {
    let head = pkt.get(..RTCP_CLEAR_HEADER).ok_or(SrtpError::TooShort)?;
    if head[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    Ok(u32::from_be_bytes([head[4], head[5], head[6], head[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_header_with_csrcs_and_extension_stays_in_clear() {
        // V=2, X=1, CC=2; two CSRCs; extension profile 0xBEDE with 1 word.
        let mut pkt = vec![0x92, 0x00, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        pkt.extend_from_slice(&[0; 8]);
        pkt.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 1, 2, 3, 4]);
        pkt.extend_from_slice(b"payload");
        let h = parse_rtp(&pkt).unwrap();
        assert_eq!(
            h,
            RtpHeader {
                ssrc: 0xdead_beef,
                seq: 0x1234,
                len: 12 + 8 + 8
            }
        );
    }

    #[test]
    fn rtp_header_overrunning_the_packet_is_malformed() {
        let mut pkt = vec![0x8f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        pkt.extend_from_slice(&[0; 16]);
        assert_eq!(parse_rtp(&pkt), Err(SrtpError::Malformed));
        let ext = [
            0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0, 2, 0, 0, 0, 0,
        ];
        assert_eq!(parse_rtp(&ext), Err(SrtpError::Malformed));
        assert_eq!(parse_rtp(&[0x40; 12]), Err(SrtpError::Malformed));
        assert_eq!(parse_rtp(&[0x80; 11]), Err(SrtpError::TooShort));
    }

    #[test]
    fn rtcp_needs_version_two_and_eight_bytes() {
        assert_eq!(parse_rtcp(&[0x80, 200, 0, 6, 1, 2, 3, 4]), Ok(0x0102_0304));
        assert_eq!(
            parse_rtcp(&[0x80, 200, 0, 6, 1, 2, 3]),
            Err(SrtpError::TooShort)
        );
        assert_eq!(
            parse_rtcp(&[0x00, 200, 0, 6, 1, 2, 3, 4]),
            Err(SrtpError::Malformed)
        );
    }
}
