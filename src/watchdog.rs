//! The systemd watchdog (`WatchdogSec=`): `WATCHDOG=1` at half the interval, but only while every
//! media worker proves it is alive.
//!
//! A ping from a timer alone would only prove that the tokio runtime runs; a worker spinning or
//! blocked in a syscall would keep its calls silent while systemd believed all was well. So each
//! ping is earned: the workers bump a counter every tick
//! ([`xcc_core::media::MediaControl::worker_heartbeats`]), and [`Liveness`] lets a ping through only
//! when every counter moved since the previous check. A stalled worker stops the pings; systemd
//! then kills and restarts xccd (`Restart=on-failure`).

use std::ffi::OsString;
use std::time::Duration;

use xcc_core::media::MediaControl;

use crate::notify::Notifier;

/// The watchdog interval systemd asked for, from `WATCHDOG_USEC` and `WATCHDOG_PID`
/// (sd_watchdog_enabled(3)): `None` when unset, zero, unparsable, or meant for another process.
pub fn interval_from_env_values(
    usec: Option<OsString>,
    pid: Option<OsString>,
    own_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.trim().parse().ok()?;
        if pid != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// Reads `WATCHDOG_USEC` / `WATCHDOG_PID` for this process.
pub fn interval_from_env() -> Option<Duration> {
    interval_from_env_values(
        std::env::var_os("WATCHDOG_USEC"),
        std::env::var_os("WATCHDOG_PID"),
        std::process::id(),
    )
}

/// Decides, from successive heartbeat readings, whether the workers earned a ping. Pure: the driver
/// passes the readings in.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// Counters at the previous check.
    last: Vec<u64>,
}

impl Liveness {
    /// Starts from the counters as they are now.
    pub fn new(initial: Vec<u64>) -> Self {
        Self { last: initial }
    }

    /// `Ok` when every worker's counter advanced since the last check, else the indexes of the
    /// workers that did not. The readings become the new reference either way, so a worker that
    /// recovers earns the next ping.
    pub fn check(&mut self, now: Vec<u64>) -> Result<(), Vec<usize>> {
        let stalled: Vec<usize> = if now.len() == self.last.len() {
            now.iter()
                .zip(&self.last)
                .enumerate()
                .filter(|(_, (n, l))| n <= l)
                .map(|(i, _)| i)
                .collect()
        } else {
            // The worker set never changes while xccd runs; a mismatch is treated as a stall of all.
            (0..now.len().max(self.last.len())).collect()
        };
        self.last = now;
        if stalled.is_empty() && !self.last.is_empty() {
            Ok(())
        } else {
            Err(stalled)
        }
    }
}

/// Starts the ping task when systemd asked for a watchdog; returns its handle so the daemon can
/// stop it when it stops the workers.
pub fn spawn(
    interval: Option<Duration>,
    media: MediaControl,
    notifier: Notifier,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = interval?;
    let period = interval / 2;
    tracing::info!(
        watchdog_ms = interval.as_millis() as u64,
        "systemd watchdog enabled; pinging while every media worker ticks"
    );
    Some(tokio::spawn(async move {
        let mut liveness = Liveness::new(media.worker_heartbeats());
        let mut timer = tokio::time::interval(period);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer.tick().await; // the first tick completes at once
        loop {
            timer.tick().await;
            match liveness.check(media.worker_heartbeats()) {
                Ok(()) => notifier.notify_or_log("WATCHDOG=1"),
                Err(stalled) => tracing::error!(
                    ?stalled,
                    "media workers did not tick; withholding the watchdog ping"
                ),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<OsString> {
        Some(s.into())
    }

    #[test]
    fn interval_needs_usec_and_a_matching_or_absent_pid() {
        let ten = Some(Duration::from_secs(10));
        assert_eq!(interval_from_env_values(v("10000000"), None, 42), ten);
        assert_eq!(interval_from_env_values(v("10000000"), v("42"), 42), ten);
        assert_eq!(interval_from_env_values(v("10000000"), v("43"), 42), None);
        assert_eq!(interval_from_env_values(None, v("42"), 42), None);
        assert_eq!(interval_from_env_values(v("0"), None, 42), None);
        assert_eq!(interval_from_env_values(v("ten"), None, 42), None);
        assert_eq!(interval_from_env_values(v("10000000"), v("x"), 42), None);
    }

    #[test]
    fn a_ping_needs_every_worker_to_have_ticked() {
        let mut l = Liveness::new(vec![5, 7]);
        assert_eq!(l.check(vec![6, 9]), Ok(()));
        // Worker 1 stalls: no ping, and it is named.
        assert_eq!(l.check(vec![8, 9]), Err(vec![1]));
        // It recovers: the next check pings again.
        assert_eq!(l.check(vec![9, 10]), Ok(()));
        // Both stall.
        assert_eq!(l.check(vec![9, 10]), Err(vec![0, 1]));
    }

    #[test]
    fn no_workers_or_a_changed_worker_set_never_pings() {
        assert_eq!(Liveness::new(vec![]).check(vec![]), Err(vec![]));
        assert_eq!(Liveness::new(vec![1]).check(vec![2, 2]), Err(vec![0, 1]));
    }

    /// The real engine and ping task: pings while the workers run; once the workers stop (a stall
    /// as far as the watchdog can tell), at most the ping already earned, then none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pings_stop_when_the_workers_stop() {
        use std::os::unix::net::UnixDatagram;
        let dir = std::env::temp_dir().join(format!("xcc-wd-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let config = xcc_core::media::MediaConfig {
            bind_address: "127.0.0.1".parse().unwrap(),
            port_min: 20700,
            port_max: 20799,
            workers: 2,
            ..Default::default()
        };
        let (engine, _events) = xcc_core::media::MediaEngine::start(config).unwrap();
        let period = Duration::from_millis(100);
        let task = spawn(
            Some(period * 2),
            engine.control(),
            Notifier::from_env_value(Some(path.clone().into())),
        )
        .unwrap();
        // Counts pings until `deadline`, or until `enough` arrived.
        let count = |deadline: std::time::Instant, enough: usize| {
            let mut n = 0;
            let mut buf = [0u8; 64];
            while n < enough && std::time::Instant::now() < deadline {
                if let Ok(len) = rx.recv(&mut buf) {
                    assert_eq!(&buf[..len], b"WATCHDOG=1");
                    n += 1;
                }
            }
            n
        };
        let soon = std::time::Instant::now() + Duration::from_secs(10);
        let pings = tokio::task::block_in_place(|| count(soon, 2));
        assert_eq!(pings, 2, "no pings while the workers run");
        tokio::task::spawn_blocking(move || engine.shutdown())
            .await
            .unwrap();
        // Ten periods with the workers gone: one ping may have been earned before they stopped.
        let window = std::time::Instant::now() + period * 10;
        let late = tokio::task::block_in_place(|| count(window, usize::MAX));
        assert!(late <= 1, "{late} pings after the workers stopped");
        task.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
