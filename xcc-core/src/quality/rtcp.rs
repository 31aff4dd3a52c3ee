//! Zero-copy reading of RTCP compound packets (RFC 3550 §6.4, validity checks of A.2).
//!
//! [`RtcpCompound::parse`] walks and validates every packet header of a (decrypted) datagram once;
//! afterwards the iterators over packets and report blocks cannot fail. Nothing is allocated, so
//! a worker may read RTCP inline; it is still off the RTP fast path (about one packet per 5 s per
//! stream). Only SR and RR contents are decoded: other types (SDES, BYE, APP, feedback, XR) are
//! validated for framing and reported by type.
//!
//! Deliberate leniency: the first packet need not be an SR or RR, so reduced-size RTCP (RFC 5506)
//! is accepted; every other A.2 rule (version 2, lengths that tile the datagram, padding only on
//! the last packet) is enforced.

use super::error::QualityError;
use super::ntp::NtpTime;

/// RTCP packet type of a sender report.
pub const PT_SR: u8 = 200;
/// RTCP packet type of a receiver report.
pub const PT_RR: u8 = 201;
/// Bytes in one report block.
const BLOCK_LEN: usize = 24;
/// Header + sender SSRC.
const RR_FIXED: usize = 8;
/// Header + sender SSRC + sender info.
const SR_FIXED: usize = 28;

/// A validated compound RTCP datagram.
#[derive(Debug, Clone, Copy)]
pub struct RtcpCompound<'a> {
    /// The whole datagram; every header in it was checked by `parse`.
    bytes: &'a [u8],
}

impl<'a> RtcpCompound<'a> {
    /// Checks the framing of every packet in `bytes` (RFC 3550 A.2).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, QualityError> {
        if bytes.len() < 4 {
            return Err(QualityError::TooShort {
                len: bytes.len(),
                needed: 4,
            });
        }
        let mut offset = 0;
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            let (packet, padded) = split_packet(rest, offset)?;
            if padded && packet.len() != rest.len() {
                return Err(QualityError::BadPadding { offset });
            }
            let body = unpadded(packet, padded, offset)?;
            check_reports(body)?;
            offset += packet.len();
        }
        Ok(Self { bytes })
    }

    /// The packets in order.
    pub fn packets(&self) -> Packets<'a> {
        Packets { rest: self.bytes }
    }

    /// The report blocks of every SR and RR in the compound, with the SSRC of the report's sender.
    pub fn report_blocks(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        self.packets().flat_map(|p| match p {
            RtcpPacket::SenderReport(sr) => sr.blocks,
            RtcpPacket::ReceiverReport(rr) => rr.blocks,
            RtcpPacket::Other { .. } => ReportBlocks::empty(),
        })
    }

    /// The sender info of every SR in the compound.
    pub fn sender_infos(&self) -> impl Iterator<Item = SenderInfo> + 'a {
        self.packets().filter_map(|p| match p {
            RtcpPacket::SenderReport(sr) => Some(sr.info),
            _ => None,
        })
    }
}

/// Splits the first packet off `rest`: (packet bytes incl. padding, padding bit).
fn split_packet(rest: &[u8], offset: usize) -> Result<(&[u8], bool), QualityError> {
    if rest.len() < 4 {
        return Err(QualityError::TooShort {
            len: rest.len(),
            needed: 4,
        });
    }
    let version = rest[0] >> 6;
    if version != 2 {
        return Err(QualityError::BadVersion { version });
    }
    let words = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
    let declared = (words + 1) * 4;
    if declared > rest.len() {
        return Err(QualityError::LengthOverrun {
            offset,
            declared,
            available: rest.len(),
        });
    }
    Ok((&rest[..declared], rest[0] & 0x20 != 0))
}

/// The packet without its padding.
fn unpadded(packet: &[u8], padded: bool, offset: usize) -> Result<&[u8], QualityError> {
    if !padded {
        return Ok(packet);
    }
    // split_packet guarantees at least the 4-byte header.
    let pad = usize::from(packet[packet.len() - 1]);
    if pad == 0 || pad > packet.len() - 4 {
        return Err(QualityError::BadPadding { offset });
    }
    Ok(&packet[..packet.len() - pad])
}

/// Checks that an SR/RR's report count fits its length.
fn check_reports(body: &[u8]) -> Result<(), QualityError> {
    let packet_type = body[1];
    let fixed = match packet_type {
        PT_SR => SR_FIXED,
        PT_RR => RR_FIXED,
        _ => return Ok(()),
    };
    let count = body[0] & 0x1f;
    if body.len() < fixed {
        return Err(QualityError::TooShort {
            len: body.len(),
            needed: fixed,
        });
    }
    if fixed + usize::from(count) * BLOCK_LEN > body.len() {
        return Err(QualityError::ReportCountOverrun {
            packet_type,
            count,
            len: body.len(),
        });
    }
    Ok(())
}

/// Reads a big-endian u32 at `at`; callers have checked the bounds during `parse`.
fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        // Unreachable after `parse`; a zero is harmless and keeps this total.
        _ => 0,
    }
}

/// Iterator over the packets of a validated compound.
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    /// Not yet visited part of the datagram.
    rest: &'a [u8],
}

impl<'a> Iterator for Packets<'a> {
    type Item = RtcpPacket<'a>;

    fn next(&mut self) -> Option<RtcpPacket<'a>> {
        // Framing was validated by `parse`; any error here just ends the iteration.
        let (packet, padded) = split_packet(self.rest, 0).ok()?;
        self.rest = &self.rest[packet.len()..];
        let body = unpadded(packet, padded, 0).ok()?;
        // `unpadded` leaves at least the 4-byte header, so bytes 0 and 1 exist; `parse` checked
        // that SR/RR bodies hold their fixed part, and `get` keeps this total regardless.
        let count = usize::from(body[0] & 0x1f);
        let ssrc = be32(body, 4);
        Some(match body[1] {
            PT_SR => RtcpPacket::SenderReport(SenderReport {
                info: SenderInfo {
                    ssrc,
                    ntp: NtpTime(u64::from(be32(body, 8)) << 32 | u64::from(be32(body, 12))),
                    rtp_timestamp: be32(body, 16),
                    packet_count: be32(body, 20),
                    octet_count: be32(body, 24),
                },
                blocks: ReportBlocks::new(ssrc, body.get(SR_FIXED..).unwrap_or_default(), count),
            }),
            PT_RR => RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc,
                blocks: ReportBlocks::new(ssrc, body.get(RR_FIXED..).unwrap_or_default(), count),
            }),
            packet_type => RtcpPacket::Other {
                packet_type,
                body: packet,
            },
        })
    }
}

/// One packet of a compound.
#[derive(Debug, Clone)]
pub enum RtcpPacket<'a> {
    /// SR (PT 200).
    SenderReport(SenderReport<'a>),
    /// RR (PT 201).
    ReceiverReport(ReceiverReport<'a>),
    /// Any other type, framing checked, contents not decoded.
    Other {
        /// The packet type.
        packet_type: u8,
        /// The packet including its header.
        body: &'a [u8],
    },
}

/// A sender report: the sender's clocks and its reception reports.
#[derive(Debug, Clone)]
pub struct SenderReport<'a> {
    /// The sender info block.
    pub info: SenderInfo,
    /// Its reception report blocks.
    pub blocks: ReportBlocks<'a>,
}

/// A receiver report.
#[derive(Debug, Clone)]
pub struct ReceiverReport<'a> {
    /// SSRC of the reporter.
    pub ssrc: u32,
    /// Its reception report blocks.
    pub blocks: ReportBlocks<'a>,
}

/// The sender info of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// SSRC of the sender.
    pub ssrc: u32,
    /// Wall clock when the SR was sent; its compact form comes back as LSR.
    pub ntp: NtpTime,
    /// The same instant in RTP units.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packet_count: u32,
    /// Payload octets sent.
    pub octet_count: u32,
}

/// One reception report block (RFC 3550 §6.4.1): a peer's view of a stream it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// SSRC of the reporter (the SR/RR sender).
    pub reporter: u32,
    /// SSRC of the stream reported on.
    pub ssrc: u32,
    /// Loss since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in RTP units.
    pub jitter: u32,
    /// Compact NTP of the last SR received (0: none yet).
    pub lsr: u32,
    /// Delay since that SR, 1/65536 s.
    pub dlsr: u32,
}

impl ReportBlock {
    /// Writes the 24-byte block (for XCC's own RR/SR); `out` must hold 24 bytes.
    pub fn write(&self, out: &mut [u8; 24]) {
        let lost = (self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0xff_ffff;
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        out[4..8].copy_from_slice(&(u32::from(self.fraction_lost) << 24 | lost).to_be_bytes());
        out[8..12].copy_from_slice(&self.extended_highest_seq.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.lsr.to_be_bytes());
        out[20..24].copy_from_slice(&self.dlsr.to_be_bytes());
    }
}

/// Iterator over the report blocks of one SR or RR.
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a> {
    /// SSRC of the report's sender.
    reporter: u32,
    /// Exactly `count` blocks (checked by `parse`); trailing profile extensions excluded.
    rest: &'a [u8],
}

impl<'a> ReportBlocks<'a> {
    fn new(reporter: u32, after_fixed: &'a [u8], count: usize) -> Self {
        let len = (count * BLOCK_LEN).min(after_fixed.len());
        Self {
            reporter,
            rest: &after_fixed[..len],
        }
    }

    fn empty() -> Self {
        Self {
            reporter: 0,
            rest: &[],
        }
    }
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        if self.rest.len() < BLOCK_LEN {
            return None;
        }
        let b = &self.rest[..BLOCK_LEN];
        self.rest = &self.rest[BLOCK_LEN..];
        let word = be32(b, 4);
        // Sign-extend the 24-bit cumulative loss.
        let cumulative_lost = ((word << 8) as i32) >> 8;
        Some(ReportBlock {
            reporter: self.reporter,
            ssrc: be32(b, 0),
            fraction_lost: (word >> 24) as u8,
            cumulative_lost,
            extended_highest_seq: be32(b, 8),
            jitter: be32(b, 12),
            lsr: be32(b, 16),
            dlsr: be32(b, 20),
        })
    }
}

/// Writes the 4-byte common header: version 2, no padding, `count`, `packet_type`, length of a
/// packet of `total` bytes (a multiple of 4).
fn write_header(out: &mut [u8], count: u8, packet_type: u8, total: usize) {
    out[0] = 0x80 | (count & 0x1f);
    out[1] = packet_type;
    // Callers bound `total` far below 2^18 bytes, so the word count fits 16 bits.
    out[2..4].copy_from_slice(&((total / 4 - 1) as u16).to_be_bytes());
}

/// The first `needed` bytes of `out`, or the error saying it is too small.
fn room(out: &mut [u8], needed: usize) -> Result<&mut [u8], QualityError> {
    let len = out.len();
    out.get_mut(..needed)
        .ok_or(QualityError::BufferTooSmall { needed, len })
}

/// Writes a receiver report from `reporter` with at most one block (XCC relays one stream per
/// leg) into `out`, without allocating; returns the bytes written. RFC 3550 §6.1 wants it in a
/// compound with an SDES CNAME ([`write_sdes_cname`]).
pub fn write_receiver_report(
    out: &mut [u8],
    reporter: u32,
    block: Option<&ReportBlock>,
) -> Result<usize, QualityError> {
    let total = RR_FIXED + BLOCK_LEN * usize::from(block.is_some());
    let out = room(out, total)?;
    write_header(out, u8::from(block.is_some()), PT_RR, total);
    out[4..8].copy_from_slice(&reporter.to_be_bytes());
    if let Some(b) = block {
        let mut buf = [0u8; BLOCK_LEN];
        b.write(&mut buf);
        out[RR_FIXED..].copy_from_slice(&buf);
    }
    Ok(total)
}

/// Writes a sender report (`info`, at most one block) into `out`; returns the bytes written.
pub fn write_sender_report(
    out: &mut [u8],
    info: &SenderInfo,
    block: Option<&ReportBlock>,
) -> Result<usize, QualityError> {
    let total = SR_FIXED + BLOCK_LEN * usize::from(block.is_some());
    let out = room(out, total)?;
    write_header(out, u8::from(block.is_some()), PT_SR, total);
    out[4..8].copy_from_slice(&info.ssrc.to_be_bytes());
    out[8..16].copy_from_slice(&info.ntp.0.to_be_bytes());
    out[16..20].copy_from_slice(&info.rtp_timestamp.to_be_bytes());
    out[20..24].copy_from_slice(&info.packet_count.to_be_bytes());
    out[24..28].copy_from_slice(&info.octet_count.to_be_bytes());
    if let Some(b) = block {
        let mut buf = [0u8; BLOCK_LEN];
        b.write(&mut buf);
        out[SR_FIXED..].copy_from_slice(&buf);
    }
    Ok(total)
}

/// Writes an SDES packet with one chunk carrying a CNAME (RFC 3550 §6.5.1), null-terminated and
/// padded to a 32-bit boundary; returns the bytes written.
pub fn write_sdes_cname(out: &mut [u8], ssrc: u32, cname: &[u8]) -> Result<usize, QualityError> {
    let item_len =
        u8::try_from(cname.len()).map_err(|_| QualityError::CnameTooLong { len: cname.len() })?;
    // Header, SSRC, type + length + text, then at least one null octet up to the word boundary.
    let unpadded = 8 + 2 + cname.len() + 1;
    let total = unpadded.div_ceil(4) * 4;
    let out = room(out, total)?;
    write_header(out, 1, 202, total);
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    out[8] = 1; // CNAME
    out[9] = item_len;
    out[10..10 + cname.len()].copy_from_slice(cname);
    out[10 + cname.len()..].fill(0);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RR from 0x11111111 with one block about 0x22222222, then an SDES with an empty chunk.
    const RR_SDES: [u8; 40] = [
        0x81, 201, 0, 7, 0x11, 0x11, 0x11, 0x11, // RR header, reporter
        0x22, 0x22, 0x22, 0x22, // block: ssrc
        0x40, 0xff, 0xff, 0xfe, // fraction 64/256, cumulative -2
        0, 1, 0, 5, // ext highest 65541
        0, 0, 0, 80, // jitter
        0xb7, 0x05, 0x20, 0x00, // lsr
        0x00, 0x05, 0x40, 0x00, // dlsr
        0x81, 202, 0, 1, 0x11, 0x11, 0x11,
        0x11, // SDES with one chunk, no items (bad but framed)
    ];

    #[test]
    fn rr_block_fields_decode() {
        let c = RtcpCompound::parse(&RR_SDES).unwrap();
        let blocks: Vec<_> = c.report_blocks().collect();
        assert_eq!(
            blocks,
            [ReportBlock {
                reporter: 0x1111_1111,
                ssrc: 0x2222_2222,
                fraction_lost: 64,
                cumulative_lost: -2,
                extended_highest_seq: 65541,
                jitter: 80,
                lsr: 0xb705_2000,
                dlsr: 0x0005_4000,
            }]
        );
        assert_eq!(c.packets().count(), 2);
    }

    #[test]
    fn block_write_reads_back() {
        let c = RtcpCompound::parse(&RR_SDES).unwrap();
        let block = c.report_blocks().next().unwrap();
        let mut out = [0u8; 24];
        block.write(&mut out);
        assert_eq!(out, RR_SDES[8..32]);
    }

    #[test]
    fn written_compound_reads_back() {
        let info = SenderInfo {
            ssrc: 0xabcd,
            ntp: NtpTime(0x0102_0304_0506_0708),
            rtp_timestamp: 9,
            packet_count: 10,
            octet_count: 11,
        };
        let block = ReportBlock {
            reporter: 0xabcd,
            ssrc: 0x1234,
            fraction_lost: 3,
            cumulative_lost: -7,
            extended_highest_seq: 70_000,
            jitter: 44,
            lsr: 5,
            dlsr: 6,
        };
        let mut buf = [0u8; 128];
        let mut n = write_sender_report(&mut buf, &info, Some(&block)).unwrap();
        n += write_sdes_cname(&mut buf[n..], 0xabcd, b"xcc").unwrap();
        n += write_receiver_report(&mut buf[n..], 0xabcd, None).unwrap();
        assert_eq!(n, 52 + 16 + 8);
        let c = RtcpCompound::parse(&buf[..n]).unwrap();
        assert_eq!(c.sender_infos().collect::<Vec<_>>(), [info]);
        assert_eq!(c.report_blocks().collect::<Vec<_>>(), [block]);
        assert_eq!(c.packets().count(), 3);
        assert_eq!(
            write_receiver_report(&mut buf[..31], 1, Some(&block)),
            Err(QualityError::BufferTooSmall {
                needed: 32,
                len: 31
            })
        );
        assert_eq!(
            write_sdes_cname(&mut buf, 1, &[b'a'; 256]),
            Err(QualityError::CnameTooLong { len: 256 })
        );
    }

    #[test]
    fn framing_errors_are_typed() {
        assert_eq!(
            RtcpCompound::parse(&RR_SDES[..3]).unwrap_err(),
            QualityError::TooShort { len: 3, needed: 4 }
        );
        let mut v1 = RR_SDES;
        v1[0] = 0x41;
        assert_eq!(
            RtcpCompound::parse(&v1).unwrap_err(),
            QualityError::BadVersion { version: 1 }
        );
        assert!(matches!(
            RtcpCompound::parse(&RR_SDES[..36]).unwrap_err(),
            QualityError::LengthOverrun { offset: 32, .. }
        ));
        let mut count = RR_SDES;
        count[0] = 0x82; // two blocks claimed, one present
        count[3] = 7;
        assert!(matches!(
            RtcpCompound::parse(&count).unwrap_err(),
            QualityError::ReportCountOverrun { count: 2, .. }
        ));
        let mut pad = RR_SDES;
        pad[0] |= 0x20; // padding on the first of two packets
        assert_eq!(
            RtcpCompound::parse(&pad).unwrap_err(),
            QualityError::BadPadding { offset: 0 }
        );
    }
}
