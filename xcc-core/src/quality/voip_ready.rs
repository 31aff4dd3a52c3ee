//! "VoIP ready" limits (product documentation: one-way delay <= 50 ms, total delay <= 150 ms,
//! loss <= 3 %, jitter <= 20 ms) with hysteresis, so one bad sample does not flap the flag.
//!
//! A limit is *crossed* once every sample for at least `min_duration` was above it, and
//! *recovered* once every sample for at least `min_duration` was at or below
//! `limit * (1 - recover_margin)`. An unknown value (no RTT yet, no packets expected) leaves the
//! state as it is. The broken time of an episode runs from its first bad sample to its first good
//! one, so the call record neither hides the debounce time nor counts the recovery wait.
//!
//! Sans-IO: [`VoipReady::handle_sample`] takes `now` and returns the events it caused.

use std::time::{Duration, Instant};

/// One of the four limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Limit {
    /// One-way delay (estimated as RTT / 2), ms.
    OneWayDelay,
    /// Round-trip ("total") delay, ms.
    RoundTrip,
    /// Packet loss, percent.
    Loss,
    /// Interarrival jitter, ms.
    Jitter,
}

impl Limit {
    /// All limits, in index order.
    pub const ALL: [Limit; 4] = [
        Limit::OneWayDelay,
        Limit::RoundTrip,
        Limit::Loss,
        Limit::Jitter,
    ];

    /// Index into per-limit arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A set of limits, e.g. those broken now; a bitmask so snapshots stay `Copy` and tiny.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct LimitSet(u8);

impl LimitSet {
    /// No limit.
    pub const EMPTY: LimitSet = LimitSet(0);

    /// Whether `limit` is in the set.
    pub fn contains(self, limit: Limit) -> bool {
        self.0 & (1 << limit.index()) != 0
    }

    /// Adds `limit`.
    pub fn insert(&mut self, limit: Limit) {
        self.0 |= 1 << limit.index();
    }

    /// Removes `limit`.
    pub fn remove(&mut self, limit: Limit) {
        self.0 &= !(1 << limit.index());
    }

    /// True when no limit is in the set: the leg is "VoIP ready".
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The limits in the set.
    pub fn iter(self) -> impl Iterator<Item = Limit> {
        Limit::ALL.into_iter().filter(move |l| self.contains(*l))
    }
}

/// Threshold values, in the units of [`Limit`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoipLimits {
    /// One-way delay, ms.
    pub one_way_delay_ms: f64,
    /// Round-trip delay, ms.
    pub round_trip_ms: f64,
    /// Loss, percent.
    pub loss_percent: f64,
    /// Jitter, ms.
    pub jitter_ms: f64,
}

impl Default for VoipLimits {
    fn default() -> Self {
        Self {
            one_way_delay_ms: 50.0,
            round_trip_ms: 150.0,
            loss_percent: 3.0,
            jitter_ms: 20.0,
        }
    }
}

impl VoipLimits {
    /// The threshold of `limit`.
    pub fn of(&self, limit: Limit) -> f64 {
        match limit {
            Limit::OneWayDelay => self.one_way_delay_ms,
            Limit::RoundTrip => self.round_trip_ms,
            Limit::Loss => self.loss_percent,
            Limit::Jitter => self.jitter_ms,
        }
    }
}

/// Debounce settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoipReadyConfig {
    /// The thresholds.
    pub limits: VoipLimits,
    /// Fraction below the limit a value must fall to count as recovered (0.1 = 10 %).
    pub recover_margin: f64,
    /// How long a limit must stay broken (or recovered) before the state changes.
    pub min_duration: Duration,
}

impl Default for VoipReadyConfig {
    fn default() -> Self {
        Self {
            limits: VoipLimits::default(),
            recover_margin: 0.1,
            min_duration: Duration::from_secs(5),
        }
    }
}

/// Measured values at one evaluation; `None` where unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// One-way delay, ms.
    pub one_way_delay_ms: Option<f64>,
    /// Round-trip delay, ms.
    pub round_trip_ms: Option<f64>,
    /// Loss, percent.
    pub loss_percent: Option<f64>,
    /// Jitter, ms.
    pub jitter_ms: Option<f64>,
}

impl Sample {
    /// The value for `limit`.
    pub fn of(&self, limit: Limit) -> Option<f64> {
        match limit {
            Limit::OneWayDelay => self.one_way_delay_ms,
            Limit::RoundTrip => self.round_trip_ms,
            Limit::Loss => self.loss_percent,
            Limit::Jitter => self.jitter_ms,
        }
    }
}

/// A limit changed state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VoipEvent {
    /// `limit` has been exceeded for at least the minimum duration.
    LimitCrossed {
        /// Which limit.
        limit: Limit,
        /// The sample that confirmed it.
        value: f64,
    },
    /// `limit` is back within its recovery threshold.
    LimitRecovered {
        /// Which limit.
        limit: Limit,
        /// The sample that confirmed it.
        value: f64,
        /// Length of the episode that ended.
        broken_for: Duration,
    },
}

/// What the call record says about one limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LimitRecord {
    /// Episodes in which the limit was broken.
    pub episodes: u32,
    /// Total time broken, open episode included up to the summary time.
    pub broken_for: Duration,
    /// Worst value seen while broken (0 when never broken).
    pub worst: f64,
}

/// Per-leg summary for the call record, indexed by [`Limit::index`].
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VoipSummary {
    /// One record per limit.
    pub limits: [LimitRecord; 4],
}

impl VoipSummary {
    /// Limits that were broken at least once.
    pub fn broken(&self) -> LimitSet {
        let mut set = LimitSet::EMPTY;
        for l in Limit::ALL {
            if self.limits[l.index()].episodes > 0 {
                set.insert(l);
            }
        }
        set
    }

    /// The record of `limit`.
    pub fn of(&self, limit: Limit) -> &LimitRecord {
        &self.limits[limit.index()]
    }
}

/// Debounce state of one limit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Within limits.
    Ok,
    /// Above the limit since `since`, not yet for long enough.
    Pending { since: Instant },
    /// Broken since `since`.
    Broken { since: Instant },
    /// Broken since `since`, good samples since `good_since`.
    Recovering { since: Instant, good_since: Instant },
}

/// The four limit states of one leg and their history.
#[derive(Debug, Clone)]
pub struct VoipReady {
    /// Thresholds and debounce.
    config: VoipReadyConfig,
    /// One state per limit.
    states: [State; 4],
    /// Closed episodes (open ones are added by `summary`).
    summary: VoipSummary,
}

impl VoipReady {
    /// All limits within bounds.
    pub fn new(config: VoipReadyConfig) -> Self {
        Self {
            config,
            states: [State::Ok; 4],
            summary: VoipSummary::default(),
        }
    }

    /// Feeds one evaluation; returns up to one event per limit.
    pub fn handle_sample(&mut self, now: Instant, sample: Sample) -> [Option<VoipEvent>; 4] {
        let mut events = [None; 4];
        for limit in Limit::ALL {
            if let Some(value) = sample.of(limit) {
                events[limit.index()] = self.step(now, limit, value);
            }
        }
        events
    }

    fn step(&mut self, now: Instant, limit: Limit, value: f64) -> Option<VoipEvent> {
        let threshold = self.config.limits.of(limit);
        let recover_below = threshold * (1.0 - self.config.recover_margin);
        let min = self.config.min_duration;
        let i = limit.index();
        let bad = value > threshold;
        let good = value <= recover_below;
        let record = &mut self.summary.limits[i];
        let (next, event) = match self.states[i] {
            State::Ok | State::Pending { .. } if !bad => (State::Ok, None),
            State::Ok | State::Pending { .. } => {
                let since = match self.states[i] {
                    State::Pending { since } => since,
                    _ => now,
                };
                if now.saturating_duration_since(since) >= min {
                    record.episodes += 1;
                    record.worst = record.worst.max(value);
                    (
                        State::Broken { since },
                        Some(VoipEvent::LimitCrossed { limit, value }),
                    )
                } else {
                    (State::Pending { since }, None)
                }
            }
            State::Broken { since } | State::Recovering { since, .. } if !good => {
                if bad {
                    record.worst = record.worst.max(value);
                }
                (State::Broken { since }, None)
            }
            State::Broken { since } | State::Recovering { since, .. } => {
                let good_since = match self.states[i] {
                    State::Recovering { good_since, .. } => good_since,
                    _ => now,
                };
                if now.saturating_duration_since(good_since) >= min {
                    let broken_for = good_since.saturating_duration_since(since);
                    record.broken_for += broken_for;
                    (
                        State::Ok,
                        Some(VoipEvent::LimitRecovered {
                            limit,
                            value,
                            broken_for,
                        }),
                    )
                } else {
                    (State::Recovering { since, good_since }, None)
                }
            }
        };
        self.states[i] = next;
        event
    }

    /// Limits broken now (crossed and not yet recovered).
    pub fn broken_now(&self) -> LimitSet {
        let mut set = LimitSet::EMPTY;
        for l in Limit::ALL {
            if matches!(
                self.states[l.index()],
                State::Broken { .. } | State::Recovering { .. }
            ) {
                set.insert(l);
            }
        }
        set
    }

    /// The history so far, with any open episode counted up to `now` (the call record at hang-up).
    pub fn summary(&self, now: Instant) -> VoipSummary {
        let mut s = self.summary;
        for l in Limit::ALL {
            let open = match self.states[l.index()] {
                State::Broken { since } => now.saturating_duration_since(since),
                State::Recovering { since, good_since } => {
                    good_since.saturating_duration_since(since)
                }
                _ => continue,
            };
            s.limits[l.index()].broken_for += open;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jitter(v: f64) -> Sample {
        Sample {
            jitter_ms: Some(v),
            ..Sample::default()
        }
    }

    #[test]
    fn zero_min_duration_crosses_and_recovers_at_once() {
        let mut v = VoipReady::new(VoipReadyConfig {
            min_duration: Duration::ZERO,
            ..VoipReadyConfig::default()
        });
        let t = Instant::now();
        let e = v.handle_sample(t, jitter(25.0));
        assert_eq!(
            e[Limit::Jitter.index()],
            Some(VoipEvent::LimitCrossed {
                limit: Limit::Jitter,
                value: 25.0
            })
        );
        // 19 ms is under the limit but not under 18 ms (10 % margin): still broken.
        let e = v.handle_sample(t + Duration::from_secs(1), jitter(19.0));
        assert_eq!(e, [None; 4]);
        assert!(v.broken_now().contains(Limit::Jitter));
        let e = v.handle_sample(t + Duration::from_secs(2), jitter(10.0));
        assert!(matches!(
            e[Limit::Jitter.index()],
            Some(VoipEvent::LimitRecovered { broken_for, .. }) if broken_for == Duration::from_secs(2)
        ));
        assert!(v.broken_now().is_empty());
    }

    #[test]
    fn unknown_values_leave_state_alone() {
        let mut v = VoipReady::new(VoipReadyConfig::default());
        let t = Instant::now();
        for s in 0..100 {
            let e = v.handle_sample(t + Duration::from_secs(s), Sample::default());
            assert_eq!(e, [None; 4]);
        }
        assert_eq!(
            v.summary(t + Duration::from_secs(100)),
            VoipSummary::default()
        );
    }
}
