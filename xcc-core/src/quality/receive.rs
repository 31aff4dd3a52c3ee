//! Receive statistics of one leg's incoming RTP (RFC 3550 A.1, A.3, A.8).
//!
//! [`ReceiveStats::handle_rtp`] is called for every accepted RTP packet: it is O(1), touches only
//! inline state and never allocates. Sequence validation follows A.1 (probation of
//! `MIN_SEQUENTIAL` packets, `MAX_DROPOUT` / `MAX_MISORDER` windows, resynchronisation after two
//! sequential packets of a large jump); an SSRC change or a resynchronisation starts a new
//! *epoch*, whose counts are folded into the leg's lifetime totals so nothing is forgotten.
//!
//! Differences from the letter of RFC 3550, on purpose:
//! - Duplicates are recognised (a 128-packet bitmap behind the highest sequence) and *not* counted
//!   as received, so they cannot hide loss; RFC 3550 counts them, which can make loss negative.
//! - Duplicates do not update jitter (their transit time says nothing about the network path
//!   of a new packet).

use std::time::{Duration, Instant};

use super::clock_rate::ClockRates;

/// Packets in sequence needed before a new source counts (A.1).
const MIN_SEQUENTIAL: u8 = 2;
/// A forward jump below this is loss; above it, a possible restart (A.1).
const MAX_DROPOUT: u16 = 3000;
/// A backward step below this is reordering; above it, a possible restart (A.1).
const MAX_MISORDER: u16 = 100;

/// The fields of an accepted RTP packet the statistics need, copied from the parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpArrival {
    /// Synchronisation source.
    pub ssrc: u32,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Payload type (0-127).
    pub payload_type: u8,
}

impl From<&crate::rtp::RtpHeader> for RtpArrival {
    /// The relay's parsed header carries every field the statistics need.
    fn from(h: &crate::rtp::RtpHeader) -> Self {
        Self {
            ssrc: h.ssrc,
            seq: h.seq,
            timestamp: h.timestamp,
            payload_type: h.payload_type,
        }
    }
}

/// What one packet did to the statistics; returned so callers and tests can count classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqClass {
    /// Counted: next in order, or after a gap (`gap` packets missing before it).
    InOrder {
        /// Packets skipped between the previous highest sequence and this one.
        gap: u16,
    },
    /// Counted: older than the highest sequence, not seen before.
    Reordered,
    /// Already received: not counted.
    Duplicate,
    /// A new source (or a restarted one) still on probation: not counted yet.
    Probation,
    /// A large jump, ignored unless the next packet confirms it (then a new epoch starts).
    Jump,
}

/// Interval reference for RFC 3550 A.3 "fraction lost": each consumer (the RR writer, the quality
/// evaluation) keeps its own so they do not reset each other's intervals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntervalMark {
    /// Lifetime expected count at the previous interval end.
    expected_prior: u64,
    /// Lifetime received count at the previous interval end.
    received_prior: u64,
}

/// Loss over one interval (RFC 3550 A.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntervalLoss {
    /// Packets expected in the interval.
    pub expected: u64,
    /// Expected minus received; negative when late packets of an earlier interval arrived.
    pub lost: i64,
    /// Fraction lost in 1/256 units as written in a report block (0 when nothing was lost).
    pub fraction: u8,
}

impl IntervalLoss {
    /// Loss in percent, `None` when no packet was expected (silence or hold says nothing).
    pub fn percent(&self) -> Option<f64> {
        if self.expected == 0 {
            return None;
        }
        Some(self.lost.max(0) as f64 * 100.0 / self.expected as f64)
    }
}

/// Per-leg receive statistics.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    /// SSRC of the current epoch; `None` before the first packet.
    ssrc: Option<u32>,
    /// Highest sequence number seen in the current epoch (or the probation candidate).
    max_seq: u16,
    /// Wrap count times 2^16 (A.1 `cycles`), 64-bit so it never wraps itself.
    cycles: u64,
    /// Extended sequence number of the first counted packet of the epoch.
    base_seq: u64,
    /// The sequence a large jump must continue with to be accepted; `None` when no jump pending.
    bad_seq: Option<u16>,
    /// Sequential packets still needed before the epoch counts; 0 once validated.
    probation: u8,
    /// Unique packets counted in the epoch.
    received: u64,
    /// Bit `i` set: extended sequence `highest - i` received (duplicate detection window).
    seen: u128,
    /// Expected and received of finished epochs (SSRC changes, restarts).
    retired_expected: u64,
    /// See `retired_expected`.
    retired_received: u64,
    /// Duplicates over the leg's lifetime.
    duplicates: u64,
    /// Late (reordered) packets over the leg's lifetime.
    reordered: u64,
    /// SSRC changes seen.
    ssrc_changes: u64,
    /// Resynchronisations after a confirmed large jump.
    restarts: u64,
    /// Reference for arrival times in RTP units: the first packet's arrival.
    epoch_time: Option<Instant>,
    /// Clock rate the last transit was measured with; a change resets the transit.
    jitter_rate: u32,
    /// Previous transit time (arrival - timestamp) in RTP units; `None` after a reset.
    transit: Option<u32>,
    /// Interarrival jitter in RTP units scaled by 16 (the integer form of A.8).
    jitter_q4: u64,
    /// Payload type of the last counted packet (its clock rate converts the jitter).
    last_pt: Option<u8>,
}

impl Default for ReceiveStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ReceiveStats {
    /// Statistics before the first packet.
    pub fn new() -> Self {
        Self {
            ssrc: None,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: None,
            probation: MIN_SEQUENTIAL,
            received: 0,
            seen: 0,
            retired_expected: 0,
            retired_received: 0,
            duplicates: 0,
            reordered: 0,
            ssrc_changes: 0,
            restarts: 0,
            epoch_time: None,
            jitter_rate: 0,
            transit: None,
            jitter_q4: 0,
            last_pt: None,
        }
    }

    /// Updates the statistics with one accepted packet. O(1), no allocation.
    pub fn handle_rtp(&mut self, now: Instant, pkt: RtpArrival, rates: &ClockRates) -> SeqClass {
        match self.ssrc {
            Some(s) if s == pkt.ssrc => {}
            Some(_) => {
                self.ssrc_changes += 1;
                self.new_source(pkt);
            }
            None => self.new_source(pkt),
        }
        let class = self.update_seq(pkt.seq);
        if matches!(class, SeqClass::InOrder { .. } | SeqClass::Reordered) {
            self.update_jitter(now, pkt, rates);
            self.last_pt = Some(pkt.payload_type);
        }
        class
    }

    /// Starts probation of a new source (A.1: `max_seq = seq - 1` so the first packet is "next").
    fn new_source(&mut self, pkt: RtpArrival) {
        self.retire_epoch();
        self.ssrc = Some(pkt.ssrc);
        self.max_seq = pkt.seq.wrapping_sub(1);
        self.probation = MIN_SEQUENTIAL;
        self.bad_seq = None;
        self.transit = None;
    }

    /// Folds the current epoch's counts into the lifetime totals.
    fn retire_epoch(&mut self) {
        if self.probation == 0 {
            self.retired_expected += self.epoch_expected();
            self.retired_received += self.received;
        }
        self.received = 0;
        self.cycles = 0;
        self.base_seq = 0;
        self.seen = 0;
    }

    /// A.1 `init_seq`: the epoch starts counting at `seq`.
    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u64::from(seq);
        self.max_seq = seq;
        self.bad_seq = None;
        self.cycles = 0;
        self.received = 1;
        self.seen = 1;
    }

    /// A.1 `update_seq`, plus duplicate and reorder classification.
    fn update_seq(&mut self, seq: u16) -> SeqClass {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if udelta == 1 {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    return SeqClass::InOrder { gap: 0 };
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return SeqClass::Probation;
        }
        if udelta == 0 {
            self.duplicates += 1;
            return SeqClass::Duplicate;
        }
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += 1 << 16;
            }
            self.max_seq = seq;
            self.seen = if udelta >= 128 {
                1
            } else {
                (self.seen << udelta) | 1
            };
            self.received += 1;
            self.bad_seq = None;
            return SeqClass::InOrder { gap: udelta - 1 };
        }
        if udelta <= u16::MAX - MAX_MISORDER {
            // A large jump: resynchronise only if the next packet continues from it.
            if self.bad_seq == Some(seq) {
                self.restarts += 1;
                self.retire_epoch();
                self.init_seq(seq);
                self.transit = None;
                return SeqClass::InOrder { gap: 0 };
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return SeqClass::Jump;
        }
        // Within MAX_MISORDER behind the highest: late or duplicate.
        let back = self.max_seq.wrapping_sub(seq);
        let ext = self.extended_max().checked_sub(u64::from(back));
        match ext {
            // Older than the epoch's first packet: a straggler from before it; count as late.
            Some(e) if e >= self.base_seq => {}
            _ => {
                self.reordered += 1;
                return SeqClass::Reordered;
            }
        }
        let bit = 1u128 << back; // back < MAX_MISORDER < 128
        if self.seen & bit != 0 {
            self.duplicates += 1;
            return SeqClass::Duplicate;
        }
        self.seen |= bit;
        self.received += 1;
        self.reordered += 1;
        SeqClass::Reordered
    }

    /// A.8 interarrival jitter, integer form, in the payload's RTP clock.
    fn update_jitter(&mut self, now: Instant, pkt: RtpArrival, rates: &ClockRates) {
        let Some(rate) = rates.rate(pkt.payload_type) else {
            return;
        };
        if rate != self.jitter_rate {
            self.jitter_rate = rate;
            self.transit = None;
        }
        let epoch = *self.epoch_time.get_or_insert(now);
        let elapsed = now.saturating_duration_since(epoch);
        let transit = arrival_units(elapsed, rate).wrapping_sub(pkt.timestamp);
        if let Some(prev) = self.transit {
            let d = u64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            // J += (|D| - J) / 16, kept scaled by 16 to stay in integers.
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// Extended highest sequence number of the current epoch (A.1: cycles + max_seq).
    pub fn extended_max(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    /// Packets expected in the current epoch.
    fn epoch_expected(&self) -> u64 {
        if self.probation > 0 {
            return 0;
        }
        self.extended_max() + 1 - self.base_seq
    }

    /// Packets expected over the leg's lifetime (A.3).
    pub fn expected(&self) -> u64 {
        self.retired_expected + self.epoch_expected()
    }

    /// Unique packets received over the leg's lifetime.
    pub fn received(&self) -> u64 {
        self.retired_received + self.received
    }

    /// Cumulative lost (A.3: expected - received), negative only if late packets of a finished
    /// epoch were counted.
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received() as i64
    }

    /// Cumulative loss in percent of expected, 0 before anything was expected.
    pub fn loss_percent(&self) -> f64 {
        let expected = self.expected();
        if expected == 0 {
            return 0.0;
        }
        self.lost().max(0) as f64 * 100.0 / expected as f64
    }

    /// Loss since `mark`, which is moved to now (A.3).
    pub fn interval(&self, mark: &mut IntervalMark) -> IntervalLoss {
        let expected = self.expected();
        let received = self.received();
        let expected_interval = expected.saturating_sub(mark.expected_prior);
        let received_interval = received.saturating_sub(mark.received_prior);
        mark.expected_prior = expected;
        mark.received_prior = received;
        let lost = expected_interval as i64 - received_interval as i64;
        let fraction = if expected_interval == 0 || lost <= 0 {
            0
        } else {
            // lost <= expected_interval, so the quotient is <= 256; 256 saturates to 255.
            ((lost as u64 * 256) / expected_interval).min(255) as u8
        };
        IntervalLoss {
            expected: expected_interval,
            lost,
            fraction,
        }
    }

    /// Duplicates seen (lifetime).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Late packets seen (lifetime).
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// SSRC changes seen.
    pub fn ssrc_changes(&self) -> u64 {
        self.ssrc_changes
    }

    /// Resynchronisations after a confirmed sequence jump.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// SSRC of the current stream.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Payload type of the last counted packet.
    pub fn last_payload_type(&self) -> Option<u8> {
        self.last_pt
    }

    /// Jitter in RTP timestamp units, as written in a report block.
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    /// Jitter in milliseconds, `None` until a clock rate was known for a counted packet.
    pub fn jitter_ms(&self) -> Option<f64> {
        if self.jitter_rate == 0 {
            return None;
        }
        Some(self.jitter_q4 as f64 / 16.0 * 1000.0 / f64::from(self.jitter_rate))
    }
}

/// Arrival time in RTP units of `rate` since the reference, modulo 2^32 (only differences are
/// used). Split into seconds and nanoseconds so the arithmetic stays in 64 bits without overflow.
fn arrival_units(elapsed: Duration, rate: u32) -> u32 {
    let rate = u64::from(rate);
    let whole = elapsed.as_secs().wrapping_mul(rate);
    let frac = u64::from(elapsed.subsec_nanos()) * rate / 1_000_000_000;
    // Truncation is the modulo 2^32 the RTP timestamp arithmetic wants.
    whole.wrapping_add(frac) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, ts: u32) -> RtpArrival {
        RtpArrival {
            ssrc: 0x1234,
            seq,
            timestamp: ts,
            payload_type: 0,
        }
    }

    #[test]
    fn relay_header_converts() {
        let raw = [0x80, 0x6f, 0x12, 0x34, 0, 0, 1, 0, 0xde, 0xad, 0xbe, 0xef];
        let h = crate::rtp::parse_rtp(&raw).unwrap();
        let a = RtpArrival::from(&h);
        assert_eq!(
            a,
            RtpArrival {
                ssrc: 0xdead_beef,
                seq: 0x1234,
                timestamp: 256,
                payload_type: 111
            }
        );
    }

    #[test]
    fn first_packet_is_on_probation_second_counts() {
        let mut s = ReceiveStats::new();
        let r = ClockRates::default();
        let t = Instant::now();
        assert_eq!(s.handle_rtp(t, pkt(10, 0), &r), SeqClass::Probation);
        assert_eq!(
            s.handle_rtp(t, pkt(11, 160), &r),
            SeqClass::InOrder { gap: 0 }
        );
        assert_eq!((s.expected(), s.received()), (1, 1));
    }

    #[test]
    fn gap_counts_as_loss_and_late_arrival_repairs_it() {
        let mut s = ReceiveStats::new();
        let r = ClockRates::default();
        let t = Instant::now();
        for seq in [1, 2, 3, 5, 6] {
            s.handle_rtp(t, pkt(seq, 0), &r);
        }
        assert_eq!(s.lost(), 1);
        assert_eq!(s.handle_rtp(t, pkt(4, 0), &r), SeqClass::Reordered);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.handle_rtp(t, pkt(4, 0), &r), SeqClass::Duplicate);
        assert_eq!(s.handle_rtp(t, pkt(6, 0), &r), SeqClass::Duplicate);
        assert_eq!((s.duplicates(), s.reordered(), s.lost()), (2, 1, 0));
    }

    #[test]
    fn arrival_units_split_matches_wide_math() {
        let d = Duration::new(100_000, 999_999_999);
        let wide = (d.as_nanos() * 48000 / 1_000_000_000) as u32;
        assert_eq!(arrival_units(d, 48000), wide);
    }

    #[test]
    fn interval_fraction_is_rfc_scaled() {
        let mut s = ReceiveStats::new();
        let r = ClockRates::default();
        let t = Instant::now();
        let mut mark = IntervalMark::default();
        s.handle_rtp(t, pkt(0, 0), &r);
        for seq in 1..=100u16 {
            if seq % 4 != 0 {
                s.handle_rtp(t, pkt(seq, 0), &r);
            }
        }
        // Expected 1..=100 minus the last (100 is lost, so the highest is 99): 99, lost 24.
        let i = s.interval(&mut mark);
        assert_eq!((i.expected, i.lost), (99, 24));
        assert_eq!(i.fraction, (24 * 256 / 99) as u8);
        assert_eq!(s.interval(&mut mark), IntervalLoss::default());
    }
}
