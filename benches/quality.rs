//! Quality-monitor cost: the per-packet statistics update against the RTP header parse the relay
//! already does for every packet, and XCC's RTCP reader against the rtcp crate (webrtc-rs), in
//! the same run.
//!
//! RTP: a ring of [`RING`] prepared packets (5 % loss, jittered arrivals) so
//! every timed call sees a new sequence number and arrival time, as on the wire.
//!
//! Run: `cargo bench --bench quality -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use xcc_core::quality::rtcp::RtcpCompound;
use xcc_core::quality::{LegMonitor, MonitorConfig, RtpArrival};

/// Packets per prepared ring.
const RING: usize = 4096;

/// 12-byte RTP headers and arrival times of a 20 ms PCMU stream with loss and jitter.
fn ring(t0: Instant) -> Vec<([u8; 12], Instant)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut out = Vec::with_capacity(RING);
    let mut i: u32 = 0;
    while out.len() < RING {
        i += 1;
        if rng.random_bool(0.05) {
            continue;
        }
        let seq = (i as u16).to_be_bytes();
        let ts = (i * 160).to_be_bytes();
        let header = [
            0x80, 0, seq[0], seq[1], ts[0], ts[1], ts[2], ts[3], 0x12, 0x34, 0x56, 0x78,
        ];
        let at = t0 + Duration::from_millis(u64::from(i) * 20 + rng.random_range(0..30));
        out.push((header, at));
    }
    out
}

/// What the relay does per packet anyway: the hand parse of the fixed header.
fn parse(h: &[u8; 12]) -> RtpArrival {
    RtpArrival {
        ssrc: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        seq: u16::from_be_bytes([h[2], h[3]]),
        timestamp: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        payload_type: h[1] & 0x7f,
    }
}

fn rtp(c: &mut Criterion) {
    let t0 = Instant::now();
    let packets = ring(t0);
    let mut g = c.benchmark_group("rtp_per_packet");
    g.bench_function("header_parse_reference", |b| {
        let mut k = 0;
        b.iter(|| {
            let (h, _) = &packets[k % RING];
            k += 1;
            black_box(parse(black_box(h)))
        })
    });
    g.bench_function("header_parse_plus_handle_rtp", |b| {
        let mut k = 0;
        let mut m = LegMonitor::new(MonitorConfig::default(), t0);
        b.iter(|| {
            if k % RING == 0 {
                // A fresh monitor per ring lap, so sequence numbers keep moving forward.
                m = LegMonitor::new(MonitorConfig::default(), t0);
            }
            let (h, at) = &packets[k % RING];
            k += 1;
            black_box(m.handle_rtp(*at, parse(black_box(h))))
        })
    });
    g.finish();
}

/// SR with one report block + SDES CNAME, as a softphone sends every ~5 s.
const SR_SDES: [u8; 72] = [
    0x81, 200, 0, 12, 0x12, 0x34, 0x56, 0x78, // SR header, sender
    0xe8, 0x9b, 0x1c, 0x00, 0x40, 0x00, 0x00, 0x00, // NTP
    0, 1, 0, 0, 0, 0, 0, 100, 0, 0, 0x3e, 0x80, // RTP ts, packets, octets
    0xab, 0xcd, 0xef, 0x01, 0x05, 0, 0, 12, 0, 1, 0x10, 0x00, // block: ssrc, lost, ext seq
    0, 0, 0, 80, 0xb7, 0x05, 0x20, 0x00, 0, 0, 0x80, 0x00, // jitter, lsr, dlsr
    0x81, 202, 0, 4, 0x12, 0x34, 0x56, 0x78, // SDES, chunk ssrc
    1, 8, b'x', b'c', b'c', b'@', b's', b'a', b't', b'1', 0, 0, // CNAME + end + pad
];

fn rtcp_read(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtcp_sr_sdes");
    g.bench_function("rtcp_crate_unmarshal_reference", |b| {
        b.iter(|| {
            let mut bytes = Bytes::from_static(&SR_SDES);
            black_box(rtcp::packet::unmarshal(black_box(&mut bytes)).map(|p| p.len()))
        })
    });
    g.bench_function("xcc_parse_and_walk_blocks", |b| {
        b.iter(|| {
            let c = RtcpCompound::parse(black_box(&SR_SDES)).expect("valid");
            black_box(c.report_blocks().map(|r| r.jitter).sum::<u32>())
        })
    });
    g.finish();
}

criterion_group!(benches, rtp, rtcp_read);
criterion_main!(benches);
