//! A deterministic synthetic RTP sender and impaired network for the quality tests: seeded RNG,
//! virtual clock (an `Instant` base plus offsets), ground truth kept beside what is delivered.

#![allow(dead_code)] // each test binary uses a different part

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xcc_core::quality::RtpArrival;

/// Seeded RNG for a test.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// What the network does to the stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Probability a packet is dropped.
    pub loss: f64,
    /// Probability a delivered packet is delivered twice (the copy right after it).
    pub duplicate: f64,
    /// Probability a delivered packet swaps places with the next one.
    pub swap: f64,
    /// Extra one-way delay, uniform in `[0, max_jitter]`; arrival order follows arrival time.
    pub max_jitter: Duration,
    /// Fixed one-way delay.
    pub base_delay: Duration,
}

/// A packet as the receiver sees it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// Arrival time on the virtual clock.
    pub at: Instant,
    /// Header fields.
    pub pkt: RtpArrival,
}

/// Ground truth of one run.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    /// Packets sent.
    pub sent: u64,
    /// Sequence indexes (0-based, unwrapped) dropped.
    pub dropped: Vec<u64>,
    /// Extra copies delivered.
    pub duplicates: u64,
    /// Adjacent swaps performed.
    pub swaps: u64,
}

/// A 20 ms packetised audio sender.
#[derive(Debug, Clone, Copy)]
pub struct Sender {
    /// SSRC.
    pub ssrc: u32,
    /// First sequence number.
    pub first_seq: u16,
    /// First timestamp.
    pub first_ts: u32,
    /// Payload type.
    pub pt: u8,
    /// Clock rate in Hz.
    pub rate: u32,
    /// Packetisation interval.
    pub ptime: Duration,
}

impl Sender {
    /// PCMU, 20 ms, 8 kHz.
    pub fn pcmu(ssrc: u32, first_seq: u16) -> Self {
        Self {
            ssrc,
            first_seq,
            first_ts: 0x1000_0000,
            pt: 0,
            rate: 8000,
            ptime: Duration::from_millis(20),
        }
    }

    /// Header of packet `i` (0-based).
    pub fn packet(&self, i: u64) -> RtpArrival {
        let per_packet = (u64::from(self.rate) * self.ptime.as_micros() as u64 / 1_000_000) as u32;
        RtpArrival {
            ssrc: self.ssrc,
            seq: self.first_seq.wrapping_add(i as u16),
            timestamp: self
                .first_ts
                .wrapping_add(per_packet.wrapping_mul(i as u32)),
            payload_type: self.pt,
        }
    }

    /// Sends `count` packets from `start` through `imp`; deliveries sorted by arrival.
    pub fn run(
        &self,
        start: Instant,
        count: u64,
        imp: Impairment,
        rng: &mut ChaCha8Rng,
    ) -> (Vec<Delivery>, Truth) {
        self.run_range(start, 0..count, imp, rng)
    }

    /// Sends packets `range` (packet `i` leaves at `start + i * ptime`) through `imp`, so a
    /// stream can change impairment part way.
    pub fn run_range(
        &self,
        start: Instant,
        range: std::ops::Range<u64>,
        imp: Impairment,
        rng: &mut ChaCha8Rng,
    ) -> (Vec<Delivery>, Truth) {
        let mut truth = Truth {
            sent: range.end - range.start,
            ..Truth::default()
        };
        let mut out: Vec<Delivery> = Vec::with_capacity(truth.sent as usize * 2);
        for i in range {
            let sent_at = start + self.ptime * i as u32;
            // Draw every random number for every packet so impairments are independent.
            let lost = rng.random_bool(imp.loss);
            let dup = rng.random_bool(imp.duplicate);
            let jitter = imp.max_jitter.mul_f64(rng.random::<f64>());
            if lost {
                truth.dropped.push(i);
                continue;
            }
            let at = sent_at + imp.base_delay + jitter;
            out.push(Delivery {
                at,
                pkt: self.packet(i),
            });
            if dup {
                truth.duplicates += 1;
                out.push(Delivery {
                    at: at + Duration::from_micros(100),
                    pkt: self.packet(i),
                });
            }
        }
        out.sort_by_key(|d| d.at);
        if imp.swap > 0.0 {
            let mut k = 0;
            while k + 1 < out.len() {
                if out[k].pkt.seq != out[k + 1].pkt.seq && rng.random_bool(imp.swap) {
                    let (a, b) = (out[k].at, out[k + 1].at);
                    out.swap(k, k + 1);
                    out[k].at = a;
                    out[k + 1].at = b;
                    truth.swaps += 1;
                    k += 2; // a swapped pair is not swapped again
                } else {
                    k += 1;
                }
            }
        }
        (out, truth)
    }
}

/// (expected, lost) the receiver should report. Counting starts at the first packet that follows
/// its predecessor in arrival order (RFC 3550 A.1 probation, MIN_SEQUENTIAL = 2); losses after the
/// last delivered packet are not yet known to be lost.
pub fn expected_loss(deliveries: &[Delivery], truth: &Truth, first_seq: u16) -> (u64, u64) {
    let index = |seq: u16| u64::from(seq.wrapping_sub(first_seq));
    let base = deliveries
        .windows(2)
        .find(|w| w[1].pkt.seq == w[0].pkt.seq.wrapping_add(1))
        .map(|w| index(w[1].pkt.seq))
        .expect("two consecutive packets were delivered");
    let highest = deliveries
        .iter()
        .map(|d| index(d.pkt.seq))
        .max()
        .unwrap_or(0);
    let expected = highest + 1 - base;
    let lost = truth
        .dropped
        .iter()
        .filter(|&&i| i >= base && i <= highest)
        .count() as u64;
    (expected, lost)
}

/// Feeds deliveries to a leg monitor, running its evaluation timer on the virtual clock as a
/// worker would, and collects every event it raises.
pub fn drive(
    monitor: &mut xcc_core::quality::LegMonitor,
    deliveries: &[Delivery],
    events: &mut Vec<(Instant, xcc_core::quality::QualityEvent)>,
) {
    for d in deliveries {
        run_timers(monitor, d.at, events);
        monitor.handle_rtp(d.at, d.pkt);
    }
}

/// Runs every evaluation due up to `until`.
pub fn run_timers(
    monitor: &mut xcc_core::quality::LegMonitor,
    until: Instant,
    events: &mut Vec<(Instant, xcc_core::quality::QualityEvent)>,
) {
    while monitor.poll_timeout() <= until {
        let at = monitor.poll_timeout();
        monitor.handle_timeout(at);
        while let Some(e) = monitor.poll_event() {
            events.push((at, e));
        }
    }
}
