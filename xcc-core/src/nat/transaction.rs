//! One STUN client transaction over UDP: the RFC 8489 §6.2.1 retransmission schedule, in virtual
//! time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::stun::TransactionId;

/// When to retransmit a request and when to give up on it.
///
/// RFC 8489 §6.2.1: the first retransmission after RTO, each later one after double the previous
/// interval, `max_transmits` (Rc) sends in all, then `last_wait_factor` (Rm) × RTO of silence before
/// the transaction fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmission {
    /// Initial retransmission timeout (RFC: 500 ms on a fixed line).
    pub rto: Duration,
    /// Total sends, first one included (RFC's Rc, default 7).
    pub max_transmits: u32,
    /// Multiplier of RTO to wait after the last send (RFC's Rm, default 16).
    pub last_wait_factor: u32,
}

impl Retransmission {
    /// RFC 8489 defaults: sends at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; fails at 39.5 s.
    pub const RFC: Retransmission = Retransmission {
        rto: Duration::from_millis(500),
        max_transmits: 7,
        last_wait_factor: 16,
    };

    /// XCC's default for failover between configured servers: sends at 0, 0.5, 1.5, 3.5 s; fails at
    /// 5.5 s, so a dead first server delays learning the address by seconds, not 39.5 s.
    pub const FAILOVER: Retransmission = Retransmission {
        rto: Duration::from_millis(500),
        max_transmits: 4,
        last_wait_factor: 4,
    };

    /// Total time from the first send until the transaction fails.
    pub fn timeout(&self) -> Duration {
        let sends = self.max_transmits.max(1);
        // Sum of the intervals RTO, 2 RTO, ... between sends, then Rm × RTO.
        let between = (1..sends).fold(Duration::ZERO, |acc, n| {
            acc + self.rto.saturating_mul(1 << (n - 1).min(20))
        });
        between + self.rto.saturating_mul(self.last_wait_factor)
    }
}

impl Default for Retransmission {
    fn default() -> Self {
        Retransmission::FAILOVER
    }
}

/// What the owner of a transaction must do after [`Transaction::on_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxStep {
    /// Nothing yet.
    Wait,
    /// Send the request again.
    Retransmit,
    /// No response in time: the transaction failed.
    TimedOut,
}

/// A request in flight: its id, destination and retransmission state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transaction {
    /// Matches the response.
    pub(crate) id: TransactionId,
    /// Where the request goes; a response must come from here.
    pub(crate) dest: SocketAddr,
    /// Sends so far (the first included).
    sent: u32,
    /// Next retransmission or the final deadline.
    deadline: Instant,
    /// Interval before the next retransmission.
    interval: Duration,
    /// The schedule.
    schedule: Retransmission,
}

impl Transaction {
    /// A transaction whose first send happens now (the caller transmits it).
    pub(crate) fn start(
        now: Instant,
        id: TransactionId,
        dest: SocketAddr,
        schedule: Retransmission,
    ) -> Self {
        let mut tx = Transaction {
            id,
            dest,
            sent: 1,
            deadline: now,
            interval: schedule.rto,
            schedule,
        };
        tx.arm(now);
        tx
    }

    /// Sets the deadline after a send.
    fn arm(&mut self, now: Instant) {
        if self.sent >= self.schedule.max_transmits.max(1) {
            self.deadline = now
                + self
                    .schedule
                    .rto
                    .saturating_mul(self.schedule.last_wait_factor);
        } else {
            self.deadline = now + self.interval;
            self.interval = self.interval.saturating_mul(2);
        }
    }

    /// When [`Transaction::on_timeout`] next has something to do.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Advances the schedule to `now`.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> TxStep {
        if now < self.deadline {
            return TxStep::Wait;
        }
        if self.sent >= self.schedule.max_transmits.max(1) {
            return TxStep::TimedOut;
        }
        self.sent += 1;
        // Schedule from the deadline, not from `now`, so a late driver does not stretch the timers.
        let at = self.deadline;
        self.arm(at);
        TxStep::Retransmit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_schedule_sends_seven_times_and_fails_at_39_5_s() {
        let t0 = Instant::now();
        let addr = "127.0.0.1:3478".parse().unwrap();
        let mut tx = Transaction::start(t0, TransactionId([0; 12]), addr, Retransmission::RFC);
        let mut sends = vec![Duration::ZERO];
        loop {
            let at = tx.deadline();
            match tx.on_timeout(at) {
                TxStep::Retransmit => sends.push(at - t0),
                TxStep::TimedOut => {
                    assert_eq!(at - t0, Duration::from_millis(39_500));
                    break;
                }
                TxStep::Wait => unreachable!("called at the deadline"),
            }
        }
        let ms: Vec<u128> = sends.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(Retransmission::RFC.timeout(), Duration::from_millis(39_500));
        assert_eq!(
            Retransmission::FAILOVER.timeout(),
            Duration::from_millis(5_500)
        );
    }

    #[test]
    fn early_timeout_call_does_nothing() {
        let t0 = Instant::now();
        let addr = "127.0.0.1:3478".parse().unwrap();
        let mut tx = Transaction::start(t0, TransactionId([0; 12]), addr, Retransmission::RFC);
        assert_eq!(tx.on_timeout(t0 + Duration::from_millis(499)), TxStep::Wait);
    }
}
