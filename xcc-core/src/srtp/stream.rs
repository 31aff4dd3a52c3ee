//! Per-SSRC state: packet index estimation (ROC), replay windows, and the fixed table holding them.
//!
//! A leg normally carries one SSRC per direction, occasionally a few (a PBX changing SSRC on
//! transfer, RTX). A fixed array of [`MAX_STREAMS`] slots, least recently used evicted, covers that
//! without ever touching the heap on the packet path.

/// SSRCs tracked per direction and packet kind.
pub(super) const MAX_STREAMS: usize = 8;

/// Replay window size in packets (RFC 3711 §3.3.2 minimum, the libsrtp default).
pub(super) const REPLAY_WINDOW: u64 = 64;

/// Largest SRTP packet index (48 bits: 32-bit ROC, 16-bit sequence number).
pub(super) const MAX_SRTP_INDEX: u64 = (1 << 48) - 1;

/// Largest SRTCP index (31 bits; the top bit of the trailer word is the E flag).
pub(super) const MAX_SRTCP_INDEX: u32 = (1 << 31) - 1;

/// Estimates the 48-bit packet index of sequence number `seq` given the highest index seen so
/// far (RFC 3711 §3.3.1 and Appendix A): picks ROC-1, ROC or ROC+1, whichever puts the packet
/// closest to the highest one.
///
/// With ROC 0 there is no earlier roll-over, so a sequence number more than 2^15 above `s_l` is a
/// forward jump, not a late packet. The result may exceed [`MAX_SRTP_INDEX`]; callers check.
pub(super) fn estimate_index(highest: u64, seq: u16) -> u64 {
    let roc = highest >> 16;
    let s_l = highest as u16; // low 16 bits: the highest sequence number
    let v = if s_l < 0x8000 {
        if seq > s_l && seq - s_l > 0x8000 && roc > 0 {
            roc - 1
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    (v << 16) | u64::from(seq)
}

/// Why [`ReplayWindow::check`] refused an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stale {
    /// Older than the window reaches.
    TooOld,
    /// Inside the window and already accepted.
    Duplicate,
}

/// Sliding window over packet indices (48-bit SRTP or 31-bit SRTCP), RFC 3711 §3.3.2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ReplayWindow {
    /// Highest index accepted; for SRTP its bits 16.. are the ROC and bits ..16 are `s_l`.
    pub highest: u64,
    /// Bit `i` set: index `highest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// A window whose first accepted packet has `index`.
    pub fn starting_at(index: u64) -> Self {
        Self {
            highest: index,
            seen: 1,
        }
    }

    /// Whether `index` may be accepted. Does not change state: that waits for authentication.
    pub fn check(&self, index: u64) -> Result<(), Stale> {
        if index > self.highest {
            return Ok(());
        }
        let age = self.highest - index;
        if age >= REPLAY_WINDOW {
            Err(Stale::TooOld)
        } else if self.seen & (1 << age) != 0 {
            Err(Stale::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Records an authenticated packet (its index passed [`check`](Self::check)).
    pub fn accept(&mut self, index: u64) {
        if index > self.highest {
            let shift = index - self.highest;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = index;
        } else {
            let age = self.highest - index;
            if age < REPLAY_WINDOW {
                self.seen |= 1 << age;
            }
        }
    }
}

/// One slot of an [`SsrcTable`].
#[derive(Debug, Clone, Copy, Default)]
struct Slot<S> {
    /// Stream the slot belongs to; meaningless while `live` is false.
    ssrc: u32,
    /// Whether the slot holds a stream.
    live: bool,
    /// Table clock at last use, for least-recently-used eviction.
    used: u64,
    /// The stream's state.
    state: S,
}

/// Fixed-capacity map SSRC -> state with LRU eviction; never allocates.
#[derive(Debug, Clone)]
pub(super) struct SsrcTable<S> {
    /// The streams, scanned linearly: eight entries, a few cache lines, no hashing.
    slots: [Slot<S>; MAX_STREAMS],
    /// Monotonic use counter (a packet count, not time: the core reads no clock).
    clock: u64,
}

impl<S: Copy + Default> SsrcTable<S> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            slots: [Slot::default(); MAX_STREAMS],
            clock: 0,
        }
    }

    /// The slot holding `ssrc`, if any. Does not count as a use.
    pub fn find(&self, ssrc: u32) -> Option<usize> {
        self.slots.iter().position(|s| s.live && s.ssrc == ssrc)
    }

    /// The state in slot `i` (from [`find`](Self::find) or [`insert`](Self::insert)).
    pub fn state(&self, i: usize) -> &S {
        &self.slots[i].state
    }

    /// Mutable state in slot `i`, marking the stream as just used.
    pub fn use_mut(&mut self, i: usize) -> &mut S {
        self.clock += 1;
        let slot = &mut self.slots[i];
        slot.used = self.clock;
        &mut slot.state
    }

    /// The most recently used stream and its state, if any (what a restart resumes).
    pub fn most_recent(&self) -> Option<(u32, S)> {
        self.slots
            .iter()
            .filter(|s| s.live)
            .max_by_key(|s| s.used)
            .map(|s| (s.ssrc, s.state))
    }

    /// Stores a new stream, in a free slot or over the least recently used one.
    pub fn insert(&mut self, ssrc: u32, state: S) -> usize {
        let free = self.slots.iter().position(|s| !s.live);
        let lru = || {
            self.slots
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.used)
                .map_or(0, |(i, _)| i)
        };
        let i = free.unwrap_or_else(lru);
        self.slots[i] = Slot {
            ssrc,
            live: true,
            used: 0,
            state,
        };
        *self.use_mut(i) = state;
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_follows_rfc3711_appendix_a() {
        let idx = |roc: u64, seq: u64| (roc << 16) | seq;
        // In order and small gaps: same ROC.
        assert_eq!(estimate_index(idx(3, 100), 101), idx(3, 101));
        assert_eq!(estimate_index(idx(3, 100), 50), idx(3, 50));
        // Wrap forward.
        assert_eq!(estimate_index(idx(3, 65530), 2), idx(4, 2));
        // Late packet from before the wrap.
        assert_eq!(estimate_index(idx(4, 2), 65530), idx(3, 65530));
        // ROC 0 has no earlier roll-over: a far-ahead sequence number is a forward jump.
        assert_eq!(estimate_index(idx(0, 100), 40000), idx(0, 40000));
        // The largest ROC may estimate past 2^48; callers refuse it.
        assert!(estimate_index(idx(u32::MAX.into(), 65530), 1) > MAX_SRTP_INDEX);
    }

    #[test]
    fn window_refuses_duplicates_and_stale_but_takes_late_packets() {
        let mut w = ReplayWindow::starting_at(1000);
        assert_eq!(w.check(1000), Err(Stale::Duplicate));
        assert_eq!(w.check(999), Ok(()));
        w.accept(999);
        assert_eq!(w.check(999), Err(Stale::Duplicate));
        w.accept(1063);
        assert_eq!(w.check(1000), Err(Stale::Duplicate));
        assert_eq!(w.check(999), Err(Stale::TooOld));
        assert_eq!(w.check(1001), Ok(()));
        w.accept(5000);
        assert_eq!(w.check(1063), Err(Stale::TooOld));
        assert_eq!(w.check(4937), Ok(()));
        assert_eq!(w.check(4936), Err(Stale::TooOld));
    }

    #[test]
    fn table_evicts_least_recently_used() {
        let mut t = SsrcTable::<u32>::new();
        for ssrc in 0..MAX_STREAMS as u32 {
            t.insert(ssrc, ssrc * 10);
        }
        // Use every stream but 3 again; 3 becomes the oldest.
        for ssrc in (0..MAX_STREAMS as u32).filter(|&s| s != 3) {
            let i = t.find(ssrc).unwrap();
            t.use_mut(i);
        }
        let i = t.insert(99, 990);
        assert_eq!(t.find(3), None);
        assert_eq!(t.find(99), Some(i));
        assert_eq!(*t.state(i), 990);
        assert_eq!(t.find(4).map(|i| *t.state(i)), Some(40));
    }
}
