//! What arrives on a media port: demultiplexing (RFC 7983, RFC 5761) and the RTP fixed header.
//!
//! Hand-parsed on purpose: the packet path reads four fields, which costs a couple of nanoseconds,
//! where a general RTP crate allocates for CSRCs and extensions.

/// RTP fixed header length.
pub const RTP_HEADER_LEN: usize = 12;
/// RTCP common header length (V/P/RC, PT, length, SSRC of sender).
pub const RTCP_HEADER_LEN: usize = 8;

/// Kind of a datagram received on a media port, decided from its first two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketClass {
    /// RTP (or SRTP).
    Rtp,
    /// RTCP (or SRTCP): second byte 192..=223, i.e. payload types 64-95 with the marker bit set,
    /// which RFC 5761 keeps free of RTP so both can share a port.
    Rtcp,
    /// STUN (first byte 0..=3): ICE checks and keepalives. Not media; a NAT responder answers them.
    Stun,
    /// Anything else: too short, DTLS/ZRTP/TURN ranges, plaintext "PING"s, garbage.
    Stray,
}

/// Classifies a datagram per RFC 7983 §7 (first byte) and RFC 5761 §4 (RTP versus RTCP).
pub fn classify(pkt: &[u8]) -> PacketClass {
    let Some(&first) = pkt.first() else {
        return PacketClass::Stray;
    };
    match first {
        // A STUN message is at least its 20-byte header.
        0..=3 if pkt.len() >= 20 => PacketClass::Stun,
        128..=191 => match pkt.get(1) {
            Some(192..=223) if pkt.len() >= RTCP_HEADER_LEN => PacketClass::Rtcp,
            Some(192..=223) => PacketClass::Stray,
            Some(_) if pkt.len() >= RTP_HEADER_LEN => PacketClass::Rtp,
            _ => PacketClass::Stray,
        },
        _ => PacketClass::Stray,
    }
}

/// The RTP fields XCC looks at on the packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub seq: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Bytes up to the payload: fixed header, CSRCs and the header extension.
    pub header_len: usize,
}

/// Why an RTP header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpHeaderError {
    /// Shorter than the fixed header.
    TooShort,
    /// Version field is not 2.
    Version,
    /// CSRC list or header extension runs past the end of the packet.
    Truncated,
}

/// Parses the RTP header of `pkt` (plain or SRTP: the header is never encrypted).
pub fn parse_rtp(pkt: &[u8]) -> Result<RtpHeader, RtpHeaderError> {
    let Some(fixed) = pkt.first_chunk::<RTP_HEADER_LEN>() else {
        return Err(RtpHeaderError::TooShort);
    };
    if fixed[0] >> 6 != 2 {
        return Err(RtpHeaderError::Version);
    }
    let csrc_count = usize::from(fixed[0] & 0x0f);
    let mut header_len = RTP_HEADER_LEN + 4 * csrc_count;
    if fixed[0] & 0x10 != 0 {
        // Extension: 16-bit profile, 16-bit length in 32-bit words, then the words.
        let ext = pkt
            .get(header_len..header_len + 4)
            .ok_or(RtpHeaderError::Truncated)?;
        header_len += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    if header_len > pkt.len() {
        return Err(RtpHeaderError::Truncated);
    }
    Ok(RtpHeader {
        payload_type: fixed[1] & 0x7f,
        marker: fixed[1] & 0x80 != 0,
        seq: u16::from_be_bytes([fixed[2], fixed[3]]),
        timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
        header_len,
    })
}

/// Checks the RTCP common header of the first packet of a (S)RTCP compound: version 2.
pub fn check_rtcp(pkt: &[u8]) -> Result<(), RtpHeaderError> {
    match pkt.first() {
        None => Err(RtpHeaderError::TooShort),
        Some(_) if pkt.len() < RTCP_HEADER_LEN => Err(RtpHeaderError::TooShort),
        Some(b) if b >> 6 != 2 => Err(RtpHeaderError::Version),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(first: u8, pt: u8, extra: &[u8]) -> Vec<u8> {
        let mut p = vec![
            first, pt, 0x12, 0x34, 0, 0, 0x03, 0x20, 0xde, 0xad, 0xbe, 0xef,
        ];
        p.extend_from_slice(extra);
        p
    }

    #[test]
    fn demux_table() {
        let stun = {
            let mut s = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
            s.resize(20, 0);
            s
        };
        let cases: &[(&[u8], PacketClass)] = &[
            (&[], PacketClass::Stray),
            (&stun, PacketClass::Stun),
            (&stun[..19], PacketClass::Stray),
            (b"PING\0\0\0\0\0\0\0\0\0\0\0\0", PacketClass::Stray),
            (
                &[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                PacketClass::Stray,
            ), // DTLS
            (&rtp(0x80, 0, &[]), PacketClass::Rtp),
            (&rtp(0x80, 0xe0, &[]), PacketClass::Rtp), // PT 96 with marker: 224, still RTP
            (&rtp(0x80, 0x7f, &[]), PacketClass::Rtp),
            (&rtp(0x80, 0, &[])[..11], PacketClass::Stray),
            (&[0x80, 200, 0, 1, 0, 0, 0, 1], PacketClass::Rtcp),
            (&[0x81, 201, 0, 1, 0, 0, 0, 1], PacketClass::Rtcp),
            (&[0x80, 223, 0, 1, 0, 0, 0, 1], PacketClass::Rtcp),
            (&[0x80, 200, 0, 1, 0, 0, 0], PacketClass::Stray),
            (&[0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], PacketClass::Stray), // version 3
        ];
        for (i, (pkt, want)) in cases.iter().enumerate() {
            assert_eq!(classify(pkt), *want, "case {i}");
        }
    }

    #[test]
    fn parses_fixed_header() {
        let h = parse_rtp(&rtp(0x80, 0x80 | 8, b"payload")).unwrap();
        assert_eq!(
            h,
            RtpHeader {
                payload_type: 8,
                marker: true,
                seq: 0x1234,
                timestamp: 800,
                ssrc: 0xdeadbeef,
                header_len: 12
            }
        );
    }

    #[test]
    fn parses_csrcs_and_extension() {
        let mut extra = vec![0u8; 8]; // two CSRCs
        extra.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 1, 2, 3, 4]); // one-word extension
        extra.extend_from_slice(b"xy");
        let h = parse_rtp(&rtp(0x92, 0, &extra)).unwrap();
        assert_eq!(h.header_len, 12 + 8 + 8);
    }

    #[test]
    fn refuses_truncated_or_foreign_headers() {
        assert_eq!(parse_rtp(&[0x80; 11]), Err(RtpHeaderError::TooShort));
        assert_eq!(parse_rtp(&rtp(0x40, 0, &[])), Err(RtpHeaderError::Version));
        assert_eq!(
            parse_rtp(&rtp(0x83, 0, &[0; 8])),
            Err(RtpHeaderError::Truncated)
        );
        assert_eq!(
            parse_rtp(&rtp(0x90, 0, &[0xbe, 0xde])),
            Err(RtpHeaderError::Truncated)
        );
        assert_eq!(
            parse_rtp(&rtp(0x90, 0, &[0xbe, 0xde, 0, 2, 0, 0, 0, 0])),
            Err(RtpHeaderError::Truncated)
        );
        assert_eq!(
            check_rtcp(&[0x80, 200, 0, 1, 0, 0, 0]),
            Err(RtpHeaderError::TooShort)
        );
        assert_eq!(check_rtcp(&[0x80, 200, 0, 1, 0, 0, 0, 1]), Ok(()));
    }

    #[test]
    fn never_panics_on_short_prefixes() {
        let full = {
            let mut e = vec![0u8; 4];
            e.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 1, 2, 3, 4]);
            rtp(0x91, 0, &e)
        };
        for n in 0..=full.len() {
            let _ = classify(&full[..n]);
            let _ = parse_rtp(&full[..n]);
            let _ = check_rtcp(&full[..n]);
        }
    }
}
