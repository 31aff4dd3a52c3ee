//! Receive-side measurements: loss, duplicates, reordering (from the packet index in the payload),
//! RFC 3550 A.8 interarrival jitter (from the RTP timestamp) and one-way latency (from the send
//! time in the payload; sender and receiver read the same host clock).
//!
//! Everything is sized when the run is planned, so recording a packet never allocates.

/// Nanoseconds per RTP timestamp unit at 8 kHz.
const NS_PER_TS: i64 = 125_000;

/// Latency histogram with ~1.6 % relative precision: exact below 128 ns, then 64 linear
/// sub-buckets per power of two (log-linear, as HDR histograms do), fixed size.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Counts per bucket.
    buckets: Box<[u64]>,
    /// Values recorded.
    count: u64,
    /// Sum of values, for the mean.
    sum: u128,
    /// Largest value recorded, exact.
    max: u64,
}

/// Sub-bucket bits: 2^6 = 64 buckets per octave.
const SUB_BITS: u32 = 6;
/// Values below this are their own bucket.
const LINEAR: u64 = 1 << (SUB_BITS + 1);
/// Buckets for every u64.
const BUCKETS: usize = LINEAR as usize + (64 - SUB_BITS as usize - 1) * (1 << SUB_BITS);

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram covering all of `u64`.
    pub fn new() -> Self {
        Self {
            buckets: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let octave = 63 - v.leading_zeros(); // >= SUB_BITS + 1
        let shift = octave - SUB_BITS;
        let mantissa = (v >> shift) as usize; // in [64, 128)
        LINEAR as usize + (octave - SUB_BITS - 1) as usize * (1 << SUB_BITS) + mantissa
            - (1 << SUB_BITS)
    }

    /// Highest value that falls into bucket `i` (percentiles report the upper bound, so they
    /// never understate latency).
    fn upper(i: usize) -> u64 {
        if (i as u64) < LINEAR {
            return i as u64;
        }
        let rest = i - LINEAR as usize;
        let octave = rest as u32 / (1 << SUB_BITS) + SUB_BITS + 1;
        let mantissa = (rest % (1 << SUB_BITS)) as u64 + (1 << SUB_BITS);
        let shift = octave - SUB_BITS;
        let upper = (u128::from(mantissa + 1) << shift) - 1;
        u64::try_from(upper).unwrap_or(u64::MAX)
    }

    /// Adds one value.
    pub fn record(&mut self, v: u64) {
        self.buckets[Self::index(v)] += 1;
        self.count += 1;
        self.sum += u128::from(v);
        self.max = self.max.max(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest value (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean value (0 when empty).
    pub fn mean(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            (self.sum / u128::from(self.count)) as u64
        }
    }

    /// The value at quantile `q` (0..=1) by nearest rank, as its bucket's upper bound capped at
    /// the exact maximum; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }
}

/// One received stream's counters.
#[derive(Debug, Clone)]
pub struct StreamStats {
    /// One bit per packet index the sender may send, to tell duplicates from first arrivals.
    seen: Box<[u64]>,
    /// Packets the sender can send on this stream; higher indices are not ours.
    capacity: u32,
    /// Distinct packets received.
    received: u64,
    /// Copies of packets already received.
    duplicates: u64,
    /// Packets that arrived after a higher index had (late, not lost).
    reordered: u64,
    /// Packets whose index is beyond what the run can send (corrupt or foreign).
    out_of_range: u64,
    /// Highest index received.
    highest: Option<u32>,
    /// RFC 3550 A.8 jitter estimate, in nanoseconds scaled by 16 (integer arithmetic as A.8).
    jitter_x16: i64,
    /// Transit time of the previous packet (arrival minus media time), ns.
    last_transit: Option<i64>,
    /// RTP timestamp of the first packet, the origin for media time.
    first_ts: Option<u32>,
    /// One-way latency of this stream.
    latency_sum: u128,
    latency_max: u64,
}

impl StreamStats {
    /// Counters for a stream of at most `capacity` packets.
    pub fn new(capacity: u32) -> Self {
        Self {
            seen: vec![0; (capacity as usize).div_ceil(64)].into_boxed_slice(),
            capacity,
            received: 0,
            duplicates: 0,
            reordered: 0,
            out_of_range: 0,
            highest: None,
            jitter_x16: 0,
            last_transit: None,
            first_ts: None,
            latency_sum: 0,
            latency_max: 0,
        }
    }

    /// Records packet `index` with RTP timestamp `ts`, sent at `sent_ns` and received at
    /// `arrival_ns` (both on the run's clock); latency also goes into `total`.
    pub fn record(
        &mut self,
        index: u32,
        ts: u32,
        sent_ns: u64,
        arrival_ns: u64,
        total: &mut Histogram,
    ) {
        let (word, bit) = (index as usize / 64, index % 64);
        let Some(slot) = self.seen.get_mut(word).filter(|_| index < self.capacity) else {
            self.out_of_range += 1;
            return;
        };
        if *slot & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        *slot |= 1 << bit;
        self.received += 1;
        match self.highest {
            Some(h) if index < h => self.reordered += 1,
            _ => self.highest = Some(index),
        }
        let latency = arrival_ns.saturating_sub(sent_ns);
        total.record(latency);
        self.latency_sum += u128::from(latency);
        self.latency_max = self.latency_max.max(latency);

        let first = *self.first_ts.get_or_insert(ts);
        let media_ns = i64::from(ts.wrapping_sub(first) as i32) * NS_PER_TS;
        let transit = arrival_ns as i64 - media_ns;
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            // J += (|D| - J) / 16, kept scaled by 16 (RFC 3550 A.8).
            self.jitter_x16 += d - ((self.jitter_x16 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Distinct packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets sent but never received (`sent` from the sender's count).
    pub fn lost(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.received)
    }

    /// Duplicate arrivals.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Late arrivals (after a higher index).
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Indices outside the run's range.
    pub fn out_of_range(&self) -> u64 {
        self.out_of_range
    }

    /// Current interarrival jitter, ns.
    pub fn jitter_ns(&self) -> u64 {
        (self.jitter_x16 >> 4).max(0) as u64
    }

    /// Mean one-way latency, ns (0 when nothing arrived).
    pub fn latency_mean_ns(&self) -> u64 {
        if self.received == 0 {
            0
        } else {
            (self.latency_sum / u128::from(self.received)) as u64
        }
    }

    /// Largest one-way latency, ns.
    pub fn latency_max_ns(&self) -> u64 {
        self.latency_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Feeds `indices` as a 20 ms stream with a constant 1 ms transit.
    fn feed(indices: &[u32]) -> StreamStats {
        let mut s = StreamStats::new(100);
        let mut h = Histogram::new();
        for &i in indices {
            let sent = u64::from(i) * 20 * MS;
            s.record(i, 1000 + i * 160, sent, sent + MS, &mut h);
        }
        s
    }

    #[test]
    fn loss_counts_indices_never_received() {
        let s = feed(&[0, 1, 3, 4, 7]);
        assert_eq!(s.received(), 5);
        assert_eq!(s.lost(8), 3);
        assert_eq!((s.duplicates(), s.reordered()), (0, 0));
    }

    #[test]
    fn duplicates_are_not_counted_as_received() {
        let s = feed(&[0, 1, 1, 2, 1]);
        assert_eq!(s.received(), 3);
        assert_eq!(s.duplicates(), 2);
        assert_eq!(s.lost(3), 0);
    }

    #[test]
    fn late_packet_is_reordered_not_lost() {
        let s = feed(&[0, 2, 1, 3]);
        assert_eq!(s.reordered(), 1);
        assert_eq!(s.lost(4), 0);
    }

    #[test]
    fn index_beyond_capacity_is_counted_apart() {
        let s = feed(&[0, 100, 5000]);
        assert_eq!(s.received(), 1);
        assert_eq!(s.out_of_range(), 2);
    }

    #[test]
    fn constant_transit_has_zero_jitter_and_varying_transit_has_some() {
        assert_eq!(feed(&[0, 1, 2, 3, 4]).jitter_ns(), 0);
        let mut s = StreamStats::new(100);
        let mut h = Histogram::new();
        for i in 0..50u32 {
            let sent = u64::from(i) * 20 * MS;
            // Alternating 1 ms and 3 ms transit: |D| = 2 ms every packet, J converges to 2 ms.
            let transit = if i % 2 == 0 { MS } else { 3 * MS };
            s.record(i, i * 160, sent, sent + transit, &mut h);
        }
        let j = s.jitter_ns();
        assert!((1_900_000..=2_000_000).contains(&j), "jitter {j}");
    }

    #[test]
    fn jitter_survives_timestamp_wrap() {
        let mut s = StreamStats::new(100);
        let mut h = Histogram::new();
        for i in 0..10u32 {
            let sent = u64::from(i) * 20 * MS;
            s.record(
                i,
                (u32::MAX - 400).wrapping_add(i * 160),
                sent,
                sent + MS,
                &mut h,
            );
        }
        assert_eq!(s.jitter_ns(), 0);
    }

    #[test]
    fn latency_mean_and_max_per_stream() {
        let mut s = StreamStats::new(10);
        let mut h = Histogram::new();
        s.record(0, 0, 0, 100, &mut h);
        s.record(1, 160, 1000, 1300, &mut h);
        assert_eq!((s.latency_mean_ns(), s.latency_max_ns()), (200, 300));
        assert_eq!(h.count(), 2);
    }

    #[test]
    fn percentiles_of_uniform_values_are_within_bucket_precision() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        for (q, exact) in [(0.5, 500_000u64), (0.99, 990_000), (0.999, 999_000)] {
            let got = h.quantile(q);
            let err = got.abs_diff(exact) as f64 / exact as f64;
            assert!(err < 0.02, "q{q}: {got} vs {exact}");
            assert!(
                got >= exact,
                "upper bound never understates: {got} < {exact}"
            );
        }
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.max(), 1_000_000);
    }

    #[test]
    fn percentile_picks_the_tail() {
        let mut h = Histogram::new();
        for _ in 0..990 {
            h.record(50);
        }
        for _ in 0..10 {
            h.record(5_000_000);
        }
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.quantile(0.99), 50);
        assert!(h.quantile(0.999) >= 5_000_000);
        assert_eq!(Histogram::new().quantile(0.99), 0);
    }

    #[test]
    fn bucket_bounds_cover_every_value() {
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            255,
            256,
            1 << 20,
            (1 << 20) + 12_345,
            u64::MAX,
        ] {
            let i = Histogram::index(v);
            assert!(i < BUCKETS, "{v}");
            assert!(Histogram::upper(i) >= v, "{v}");
            if i > 0 {
                assert!(Histogram::upper(i - 1) < v, "{v}");
            }
        }
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(1000);
        a.merge(&b);
        assert_eq!((a.count(), a.max(), a.mean()), (2, 1000, 505));
    }
}
