//! Per-worker traffic totals since start, for monitoring (Prometheus counters).
//!
//! A call's own counters vanish with the call, so a sum over live calls would go backwards at every
//! hang-up. Each worker therefore keeps the final counters of the calls it ended ("retired") and,
//! once per tick, publishes retired + live as plain atomic words. The worker is the only writer;
//! each word only ever grows, so a reader needs no lock and no retry: a scrape may mix two ticks,
//! but every value it reads is monotonic, which is what a counter needs.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::media::LegCounters;
use crate::relay::published::{COUNTER_WORDS, counter_words, counters_from_words};

/// Words: the counters, then calls ended.
const WORDS: usize = COUNTER_WORDS + 1;

/// What one worker publishes; shared between the worker (writer) and the control plane.
#[derive(Debug, Default)]
pub(crate) struct WorkerTotals {
    /// Counter words, then calls ended.
    words: [AtomicU64; WORDS],
}

impl WorkerTotals {
    /// Publishes the worker's totals (worker side, once per tick).
    pub fn store(&self, counters: &LegCounters, calls_ended: u64) {
        for (w, v) in self.words.iter().zip(counter_words(counters)) {
            w.store(v, Ordering::Relaxed);
        }
        self.words[COUNTER_WORDS].store(calls_ended, Ordering::Relaxed);
    }

    /// The last published totals and calls ended.
    pub fn load(&self) -> (LegCounters, u64) {
        let mut words = [0u64; WORDS];
        for (v, w) in words.iter_mut().zip(&self.words) {
            *v = w.load(Ordering::Relaxed);
        }
        (counters_from_words(&words), words[COUNTER_WORDS])
    }
}

/// Adds `b` into `a`, field by field (wrapping: counters of this size never wrap in practice).
pub(crate) fn add_counters(a: &mut LegCounters, b: &LegCounters) {
    let mut out = [0u64; COUNTER_WORDS];
    for ((o, x), y) in out.iter_mut().zip(counter_words(a)).zip(counter_words(b)) {
        *o = x.wrapping_add(y);
    }
    *a = counters_from_words(&out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::DropCounters;

    #[test]
    fn store_load_round_trips_and_add_sums_every_field() {
        let a = LegCounters {
            packets_in: 1,
            bytes_in: 2,
            packets_out: 3,
            bytes_out: 4,
            rtcp_in: 5,
            rtcp_out: 6,
            rtcp_malformed: 7,
            drops: DropCounters {
                auth_failure: 8,
                replay: 9,
                stranger: 10,
                malformed: 11,
                no_route: 12,
                stray: 13,
                send_error: 14,
            },
        };
        let t = WorkerTotals::default();
        t.store(&a, 42);
        assert_eq!(t.load(), (a, 42));
        let mut sum = a;
        add_counters(&mut sum, &a);
        assert_eq!(counter_words(&sum), counter_words(&a).map(|v| v * 2));
    }
}
