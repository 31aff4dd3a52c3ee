//! The port pool: even RTP ports with RTCP on RTP+1, handed out two pairs per call.
//!
//! [`PortPool`] is the sans-IO bookkeeping (free list, quarantine, counts) driven by an injected
//! clock; [`allocate_pairs`] is the thin binder around it that skips pairs another process holds.
//! XCC advertises exactly the ports it bound, so a pair is only ever handed out whole.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use crate::media::PoolStatus;

/// Pairs one call needs: one for the client leg, one for the PBX leg.
pub const PAIRS_PER_CALL: usize = 2;

/// Free list of even/odd port pairs with a quarantine for released ones.
///
/// Every operation is O(1) amortised: pairs live in FIFO queues, and because the quarantine length
/// is constant, release deadlines are already in order.
#[derive(Debug)]
pub struct PortPool {
    /// Pairs ready to hand out, identified by their even (RTP) port; taken from the front.
    free: VecDeque<u16>,
    /// Released pairs and the instant they may be reused, oldest first.
    quarantine: VecDeque<(Instant, u16)>,
    /// How long a released pair rests.
    quarantine_for: Duration,
    /// Pairs currently bound to calls (or being bound).
    used: usize,
    /// Pairs in the range.
    pairs: usize,
    /// First even port of the range.
    first: u32,
    /// `port_max` of the range: a pair belongs when its odd port is at or below it.
    last: u32,
}

/// What [`PortPool::set_range`] changed, in ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RangeChange {
    /// Ports newly handed out (the grown part, minus ports still held by calls).
    pub added: usize,
    /// Free or resting ports that left the pool at once.
    pub removed: usize,
    /// Ports outside the new range still carrying calls: they leave the pool when the call ends.
    pub retiring: usize,
}

impl PortPool {
    /// A pool over the whole even/odd pairs inside `port_min..=port_max` (an odd `port_min` starts
    /// at the next even port; a lone last port without its odd partner is left out).
    pub fn new(port_min: u16, port_max: u16, quarantine_for: Duration) -> Self {
        let (first, last) = bounds(port_min, port_max);
        let free: VecDeque<u16> = pairs_in(first, last).collect();
        let pairs = free.len();
        Self {
            free,
            quarantine: VecDeque::new(),
            quarantine_for,
            used: 0,
            pairs,
            first,
            last,
        }
    }

    /// Whether the pair starting at `rtp` belongs to the current range.
    pub fn contains(&self, rtp: u16) -> bool {
        let rtp = u32::from(rtp);
        rtp % 2 == 0 && rtp >= self.first && rtp < self.last
    }

    /// Moves the pool to `port_min..=port_max` while calls run (a configuration reload).
    ///
    /// Pairs of the new range that were not in the old one become free at once, except those
    /// `in_use` says a call still holds. Free and resting pairs outside the new range leave at
    /// once; used ones outside it stay with their call and leave when it releases them
    /// ([`PortPool::release`] drops a pair outside the range instead of resting it). O(pairs).
    pub fn set_range(
        &mut self,
        port_min: u16,
        port_max: u16,
        now: Instant,
        in_use: impl Fn(u16) -> bool,
    ) -> RangeChange {
        self.thaw(now);
        let old = (self.first, self.last);
        let (first, last) = bounds(port_min, port_max);
        self.first = first;
        self.last = last;
        let before = self.free.len() + self.quarantine.len();
        self.free
            .retain(|&p| u32::from(p) >= first && u32::from(p) < last);
        self.quarantine
            .retain(|&(_, p)| u32::from(p) >= first && u32::from(p) < last);
        let removed = before - self.free.len() - self.quarantine.len();
        let was_in = |p: u16| u32::from(p) >= old.0 && u32::from(p) < old.1;
        let mut added = 0;
        let mut retiring = 0;
        for p in pairs_in(first, last) {
            if !was_in(p) && !in_use(p) {
                self.free.push_back(p);
                added += 1;
            }
        }
        for p in pairs_in(old.0, old.1) {
            if !self.contains(p) && in_use(p) {
                retiring += 1;
            }
        }
        self.pairs = pairs_in(first, last).count();
        RangeChange {
            added: added * 2,
            removed: removed * 2,
            retiring: retiring * 2,
        }
    }

    /// Moves pairs whose quarantine ended back to the free list.
    fn thaw(&mut self, now: Instant) {
        while let Some(&(until, rtp)) = self.quarantine.front() {
            if until > now {
                break;
            }
            self.quarantine.pop_front();
            self.free.push_back(rtp);
        }
    }

    /// Takes the next free pair (its even port), or `None` when every pair is used or resting.
    pub fn take(&mut self, now: Instant) -> Option<u16> {
        self.thaw(now);
        let rtp = self.free.pop_front()?;
        self.used += 1;
        Some(rtp)
    }

    /// Takes the pair starting at `rtp` if it is free or resting in quarantine (a restart
    /// restoring a stored call: its peers know exactly these ports). O(pairs), start-up only.
    pub fn take_exact(&mut self, rtp: u16, now: Instant) -> bool {
        self.thaw(now);
        if let Some(i) = self.free.iter().position(|&p| p == rtp) {
            self.free.remove(i);
        } else if let Some(i) = self.quarantine.iter().position(|&(_, p)| p == rtp) {
            self.quarantine.remove(i);
        } else {
            return false;
        }
        self.used += 1;
        true
    }

    /// Gives back a pair that was taken but not used (bind failed because another process holds
    /// it, or the call could not be completed): it goes to the end of the free list so the next
    /// allocation tries other pairs first.
    pub fn put_back(&mut self, rtp: u16) {
        debug_assert!(self.used > 0, "put_back without take");
        self.used = self.used.saturating_sub(1);
        if self.contains(rtp) {
            self.free.push_back(rtp);
        }
    }

    /// Releases a pair that carried a call: it rests in quarantine before reuse, or leaves the
    /// pool when a reload moved the range away from it.
    pub fn release(&mut self, rtp: u16, now: Instant) {
        debug_assert!(self.used > 0, "release without take");
        self.used = self.used.saturating_sub(1);
        if self.contains(rtp) {
            self.quarantine.push_back((now + self.quarantine_for, rtp));
        }
    }

    /// Free pairs right now (after thawing).
    pub fn free_pairs(&mut self, now: Instant) -> usize {
        self.thaw(now);
        self.free.len()
    }

    /// Occupancy in ports; `total` counts only ports that belong to a whole pair.
    pub fn status(&mut self, now: Instant) -> PoolStatus {
        self.thaw(now);
        PoolStatus {
            total: self.pairs * 2,
            free: self.free.len() * 2,
            used: self.used * 2,
            quarantined: self.quarantine.len() * 2,
        }
    }
}

/// The first even port at or above `port_min`, and `port_max`, widened for arithmetic.
fn bounds(port_min: u16, port_max: u16) -> (u32, u32) {
    (u32::from(port_min).next_multiple_of(2), u32::from(port_max))
}

/// Even ports of the whole pairs in `first..=last` (the odd partner must be at or below `last`).
fn pairs_in(first: u32, last: u32) -> impl Iterator<Item = u16> {
    // rtp < last <= u16::MAX, so the conversion never fails.
    (first..last)
        .step_by(2)
        .filter_map(|p| u16::try_from(p).ok())
}

/// Takes [`PAIRS_PER_CALL`] pairs and binds each with `bind(rtp_port)`.
///
/// A pair whose bind fails with `EADDRINUSE` (held by another process) goes to the end of the free
/// list and the next pair is tried; every free pair is tried at most once. Any other bind error is
/// returned as is. On failure every pair taken so far is put back.
pub fn allocate_pairs<T>(
    pool: &mut PortPool,
    now: Instant,
    bind: impl FnMut(u16) -> Result<T, BindError>,
) -> crate::Result<[(u16, T); PAIRS_PER_CALL]> {
    allocate_n(pool, now, bind)
}

/// [`allocate_pairs`] for `N` pairs: one for a call whose client leg comes from the TURN spares,
/// one for each spare.
pub fn allocate_n<const N: usize, T>(
    pool: &mut PortPool,
    now: Instant,
    mut bind: impl FnMut(u16) -> Result<T, BindError>,
) -> crate::Result<[(u16, T); N]> {
    let mut attempts = pool.free_pairs(now);
    let mut bound: [Option<(u16, T)>; N] = std::array::from_fn(|_| None);
    let mut filled = 0;
    while filled < N {
        let next = if attempts > 0 { pool.take(now) } else { None };
        let Some(rtp) = next else {
            for (port, _) in bound.iter_mut().filter_map(Option::take) {
                pool.put_back(port);
            }
            let free = pool.free_pairs(now) * 2;
            return Err(crate::Error::PoolExhausted {
                free,
                needed: N * 2,
            });
        };
        attempts -= 1;
        match bind(rtp) {
            Ok(t) => {
                bound[filled] = Some((rtp, t));
                filled += 1;
            }
            Err(BindError::Busy) => {
                tracing::debug!(rtp, "media port pair busy in another process, skipped");
                pool.put_back(rtp);
            }
            Err(BindError::Fatal(e)) => {
                pool.put_back(rtp);
                for (port, _) in bound.iter_mut().filter_map(Option::take) {
                    pool.put_back(port);
                }
                return Err(e);
            }
        }
    }
    // The loop above only exits once every slot is filled.
    Ok(bound.map(|b| b.expect("allocate_n: loop exits with every pair bound")))
}

/// Why binding a pair failed, as far as the pool cares.
#[derive(Debug)]
pub enum BindError {
    /// The port is held by someone else: skip the pair.
    Busy,
    /// Anything else: give up.
    Fatal(crate::Error),
}

impl BindError {
    /// Classifies a bind error: `EADDRINUSE` is [`BindError::Busy`].
    pub fn from_io(addr: std::net::SocketAddr, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::AddrInUse {
            BindError::Busy
        } else {
            BindError::Fatal(crate::Error::Socket { addr, source })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(min: u16, max: u16) -> PortPool {
        PortPool::new(min, max, Duration::from_secs(5))
    }

    #[test]
    fn pairs_start_even_and_skip_lone_last_port() {
        let mut p = pool(30001, 30008);
        let now = Instant::now();
        let got: Vec<u16> = std::iter::from_fn(|| p.take(now)).collect();
        assert_eq!(got, vec![30002, 30004, 30006]);
        assert_eq!(p.status(now).total, 6);
    }

    #[test]
    fn default_range_gives_750_calls() {
        let mut p = pool(30000, 33000);
        let st = p.status(Instant::now());
        assert_eq!(st.total, 3000);
        assert_eq!(st.free / 4, 750);
    }

    #[test]
    fn released_pair_rests_in_quarantine_until_virtual_clock_passes() {
        let mut p = pool(40000, 40003);
        let t0 = Instant::now();
        let a = p.take(t0).unwrap();
        let b = p.take(t0).unwrap();
        assert_eq!(p.take(t0), None);
        p.release(a, t0);
        let st = p.status(t0);
        assert_eq!((st.free, st.used, st.quarantined), (0, 2, 2));
        assert_eq!(p.take(t0 + Duration::from_millis(4999)), None);
        assert_eq!(p.take(t0 + Duration::from_secs(5)), Some(a));
        p.release(b, t0 + Duration::from_secs(6));
        p.release(a, t0 + Duration::from_secs(7));
        let st = p.status(t0 + Duration::from_secs(11));
        assert_eq!((st.free, st.used, st.quarantined), (2, 0, 2));
        let st = p.status(t0 + Duration::from_secs(12));
        assert_eq!((st.free, st.used, st.quarantined), (4, 0, 0));
    }

    #[test]
    fn allocation_takes_two_pairs_and_exhaustion_is_typed() {
        let mut p = pool(40000, 40007);
        let now = Instant::now();
        let call = allocate_pairs(&mut p, now, Ok).unwrap();
        assert_eq!([call[0].0, call[1].0], [40000, 40002]);
        allocate_pairs(&mut p, now, Ok).unwrap();
        let err = allocate_pairs(&mut p, now, Ok).unwrap_err();
        assert!(
            matches!(err, crate::Error::PoolExhausted { free: 0, needed: 4 }),
            "{err:?}"
        );
    }

    #[test]
    fn half_allocation_on_exhaustion_returns_the_taken_pair() {
        let mut p = pool(40000, 40005);
        let now = Instant::now();
        allocate_pairs(&mut p, now, Ok).unwrap();
        let err = allocate_pairs(&mut p, now, Ok).unwrap_err();
        assert!(
            matches!(err, crate::Error::PoolExhausted { free: 2, .. }),
            "{err:?}"
        );
        assert_eq!(p.status(now).free, 2);
    }

    #[test]
    fn busy_pair_is_skipped_and_moves_to_the_back() {
        let mut p = pool(40000, 40009);
        let now = Instant::now();
        let call = allocate_pairs(&mut p, now, |rtp| {
            if rtp == 40002 {
                Err(BindError::Busy)
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!([call[0].0, call[1].0], [40000, 40004]);
        // 40002 went to the back: after 40006 and 40008.
        let order: Vec<u16> = std::iter::from_fn(|| p.take(now)).collect();
        assert_eq!(order, vec![40006, 40008, 40002]);
    }

    #[test]
    fn all_busy_is_exhaustion_not_a_loop() {
        let mut p = pool(40000, 40009);
        let now = Instant::now();
        let mut tries = 0;
        let err = allocate_pairs(&mut p, now, |_| {
            tries += 1;
            Err::<(), _>(BindError::Busy)
        })
        .unwrap_err();
        assert!(matches!(err, crate::Error::PoolExhausted { .. }));
        assert_eq!(tries, 5, "each free pair tried exactly once");
        assert_eq!(p.status(now).free, 10);
    }

    #[test]
    fn exact_pair_is_taken_from_free_or_quarantine_once() {
        let mut p = pool(40000, 40009);
        let now = Instant::now();
        assert!(p.take_exact(40004, now));
        assert!(!p.take_exact(40004, now), "already used");
        assert!(!p.take_exact(40005, now), "odd: not a pair");
        assert!(!p.take_exact(50000, now), "outside the range");
        p.release(40004, now);
        assert!(
            p.take_exact(40004, now),
            "quarantine does not stop a restore"
        );
        let st = p.status(now);
        assert_eq!((st.free, st.used, st.quarantined), (8, 2, 0));
        let rest: Vec<u16> = std::iter::from_fn(|| p.take(now)).collect();
        assert_eq!(rest, vec![40000, 40002, 40006, 40008]);
    }

    #[test]
    fn shrink_keeps_used_pairs_until_released_and_grow_skips_them() {
        let mut p = pool(40000, 40009);
        let now = Instant::now();
        let used = [p.take(now).unwrap(), p.take(now).unwrap()];
        assert_eq!(used, [40000, 40002]);
        let in_use = |rtp| used.contains(&rtp);
        // Shrink to 40004-40009: 40000/40002 retire with their call, nothing else is free.
        let c = p.set_range(40004, 40009, now, in_use);
        assert_eq!(
            c,
            RangeChange {
                added: 0,
                removed: 0,
                retiring: 4
            }
        );
        let st = p.status(now);
        assert_eq!((st.total, st.free, st.used), (6, 6, 4));
        assert!(!p.contains(40000) && p.contains(40004));
        // A released retiring pair leaves instead of resting.
        p.release(40000, now);
        let st = p.status(now);
        assert_eq!((st.free, st.used, st.quarantined), (6, 2, 0));
        // Grow back over 40000-40003: 40000 is free again, 40002 is still held by its call.
        let c = p.set_range(40000, 40013, now, |rtp| rtp == 40002);
        assert_eq!(
            c,
            RangeChange {
                added: 6,
                removed: 0,
                retiring: 0
            }
        );
        let order: Vec<u16> = std::iter::from_fn(|| p.take(now)).collect();
        assert_eq!(order, vec![40004, 40006, 40008, 40000, 40010, 40012]);
        p.release(40002, now);
        assert_eq!(p.status(now).quarantined, 2, "back in range: it rests");
    }

    #[test]
    fn shrink_drops_free_and_resting_pairs_at_once() {
        let mut p = pool(40000, 40009);
        let now = Instant::now();
        let a = p.take(now).unwrap();
        p.release(a, now);
        let c = p.set_range(40004, 40007, now, |_| false);
        assert_eq!(
            c,
            RangeChange {
                added: 0,
                removed: 6,
                retiring: 0
            }
        );
        let st = p.status(now);
        assert_eq!((st.total, st.free, st.used, st.quarantined), (4, 4, 0, 0));
        assert_eq!(p.take(now), Some(40004));
    }

    #[test]
    fn fatal_bind_error_returns_every_taken_pair() {
        let mut p = pool(40000, 40009);
        let now = Instant::now();
        let addr: std::net::SocketAddr = "127.0.0.1:40002".parse().unwrap();
        let err = allocate_pairs(&mut p, now, |rtp| {
            if rtp == 40002 {
                Err(BindError::from_io(
                    addr,
                    io::Error::from(io::ErrorKind::PermissionDenied),
                ))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(matches!(err, crate::Error::Socket { .. }));
        let st = p.status(now);
        assert_eq!((st.free, st.used), (10, 0));
    }
}
