//! What the synthetic phones put on the wire: a 12-byte RTP header and a 160-byte G.711-sized
//! payload that carries the call, the direction, the packet index and the send time, so the
//! receiver measures loss, order and one-way latency from the packet alone.

/// RTP header bytes (no CSRC, no extension).
pub const RTP_HEADER_LEN: usize = 12;
/// 20 ms of G.711 at 8 kHz.
pub const PAYLOAD_LEN: usize = 160;
/// Plain RTP packet length on the wire.
pub const PACKET_LEN: usize = RTP_HEADER_LEN + PAYLOAD_LEN;
/// RTP timestamp advance per packet (8 kHz clock, 20 ms).
pub const TS_PER_PACKET: u32 = 160;
/// PCMU, static payload type 0.
const PAYLOAD_TYPE: u8 = 0;
/// Marks a payload as ours, so stray datagrams are counted, not measured.
const MAGIC: [u8; 4] = *b"XCCL";
/// Marks a latching probe (sent before media to the bare forwarder); never measured.
const PROBE_MAGIC: [u8; 4] = *b"XCCP";
/// PCMU silence, the filler after the measured fields.
const FILLER: u8 = 0xd5;

/// Which way a stream flows through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client phone (SRTP) to PBX phone (RTP).
    ToPbx = 0,
    /// PBX phone (RTP) to client phone (SRTP).
    ToClient = 1,
}

/// The measured fields inside one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Call index within the run.
    pub call: u32,
    /// Stream direction.
    pub direction: Direction,
    /// Packet index within the stream (0-based, no wrap within a bounded run).
    pub index: u32,
    /// When the packet was sent: CLOCK_REALTIME ns since the run's start (`phones::RunClock`, the
    /// clock the kernel stamps arrivals with).
    pub sent_ns: u64,
}

/// Writes an RTP packet with `stamp` into `buf[..PACKET_LEN]`.
pub fn write_packet(buf: &mut [u8; PACKET_LEN], seq: u16, ts: u32, ssrc: u32, stamp: &Stamp) {
    buf[0] = 0x80;
    buf[1] = PAYLOAD_TYPE;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    let p = &mut buf[RTP_HEADER_LEN..];
    p[0..4].copy_from_slice(&MAGIC);
    p[4..8].copy_from_slice(&stamp.call.to_be_bytes());
    p[8] = stamp.direction as u8;
    p[9..13].copy_from_slice(&stamp.index.to_be_bytes());
    p[13..21].copy_from_slice(&stamp.sent_ns.to_be_bytes());
    p[21..].fill(FILLER);
}

/// Writes a latching probe (RTP-shaped so any relay treats it as media) into `buf`.
pub fn write_probe(buf: &mut [u8; PACKET_LEN], ssrc: u32) {
    buf.fill(FILLER);
    buf[0] = 0x80;
    buf[1] = PAYLOAD_TYPE;
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    buf[RTP_HEADER_LEN..RTP_HEADER_LEN + 4].copy_from_slice(&PROBE_MAGIC);
}

/// What a received payload turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// A measured media packet.
    Media(Stamp),
    /// A latching probe.
    Probe,
}

/// Reads the stamp from an RTP payload; `None` when it is not one of ours.
pub fn read_payload(payload: &[u8]) -> Option<Payload> {
    if payload.get(..4) == Some(&PROBE_MAGIC[..]) {
        return Some(Payload::Probe);
    }
    if payload.len() != PAYLOAD_LEN || payload[..4] != MAGIC {
        return None;
    }
    let direction = match payload[8] {
        0 => Direction::ToPbx,
        1 => Direction::ToClient,
        _ => return None,
    };
    let u32_at = |at: usize| {
        u32::from_be_bytes([
            payload[at],
            payload[at + 1],
            payload[at + 2],
            payload[at + 3],
        ])
    };
    let mut sent = [0u8; 8];
    sent.copy_from_slice(&payload[13..21]);
    Some(Payload::Media(Stamp {
        call: u32_at(4),
        direction,
        index: u32_at(9),
        sent_ns: u64::from_be_bytes(sent),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_packet() {
        let stamp = Stamp {
            call: 7,
            direction: Direction::ToClient,
            index: 123_456,
            sent_ns: 9_876_543_210,
        };
        let mut buf = [0u8; PACKET_LEN];
        write_packet(&mut buf, 65_535, 4_000_000_000, 0xdead_beef, &stamp);
        let hdr = xcc_core::rtp::parse_rtp(&buf).unwrap();
        assert_eq!(
            (hdr.seq, hdr.timestamp, hdr.ssrc),
            (65_535, 4_000_000_000, 0xdead_beef)
        );
        assert_eq!(
            read_payload(&buf[RTP_HEADER_LEN..]),
            Some(Payload::Media(stamp))
        );
    }

    #[test]
    fn foreign_and_truncated_payloads_are_refused() {
        assert_eq!(read_payload(&[0u8; PAYLOAD_LEN]), None);
        assert_eq!(read_payload(b"XCCL"), None);
        let mut buf = [0u8; PACKET_LEN];
        write_probe(&mut buf, 1);
        assert_eq!(read_payload(&buf[RTP_HEADER_LEN..]), Some(Payload::Probe));
    }
}
