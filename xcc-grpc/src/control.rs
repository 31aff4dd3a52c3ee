//! Process-wide control state: readiness, drain, uptime, and the health statuses derived from them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Services whose health follows "accepts new sessions". Calls and Satellite keep answering while
/// draining (operators watch the drain through them), so only the overall status ("") and Sessions
/// turn NOT_SERVING.
const GATED_SERVICES: [&str; 2] = ["", "xcc.v1.Sessions"];
/// Services that serve whenever the process is up.
const ALWAYS_SERVICES: [&str; 2] = ["xcc.v1.Calls", "xcc.v1.Satellite"];

/// Shared by the gRPC services and the daemon's signal handling.
pub struct ControlState {
    /// Process start, for `Status.uptime_secs`.
    started: Instant,
    /// Set once listeners are bound and the media plane runs; until then health is NOT_SERVING.
    ready: AtomicBool,
    /// Drain in progress: new sessions refused.
    draining: AtomicBool,
    /// The grpc.health.v1 statuses this state publishes.
    health: HealthReporter,
    /// Public address discovery as last published by its driver; `None` when none runs.
    public_address: std::sync::RwLock<Option<crate::nat::PublicAddressStatus>>,
    /// Replaces the process's log filter; installed once by the daemon, which owns logging.
    log_level: OnceLock<LogLevelHook>,
    /// A drain was asked to stop the process once idle (`Drain{exit_when_idle}`).
    exit_when_idle: AtomicBool,
    /// Wakes the daemon when `exit_when_idle` is set.
    exit_wake: Notify,
    /// When the running drain's grace ends (set by the daemon while it waits for calls to end).
    drain_deadline: Mutex<Option<Instant>>,
    /// The daemon's configuration reload, for `Satellite.Reload`.
    reloader: OnceLock<Arc<dyn Reload>>,
    /// XCC's own TURN relay, when `[turn]` is on: read at request time for `Status`.
    turn: OnceLock<crate::nat::TurnSource>,
}

/// What a configuration reload did; see `Satellite.Reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// One line per change applied live.
    pub applied: Vec<String>,
    /// Keys that differ from what runs but only take effect on a restart.
    pub restart_required: Vec<String>,
    /// The file read, if any.
    pub path: Option<PathBuf>,
}

/// The daemon's reload, reachable from the control API. Blocking (reads a file); the service calls
/// it off the async workers.
pub trait Reload: std::fmt::Debug + Send + Sync + 'static {
    /// Re-reads, validates and applies. `Err(reason)`: refused, nothing changed.
    fn reload(&self) -> Result<ReloadReport, String>;
}

impl std::fmt::Debug for ControlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlState")
            .field("started", &self.started)
            .field("ready", &self.ready)
            .field("draining", &self.draining)
            .field("log_hook", &self.log_level.get().is_some())
            .field("exit_when_idle", &self.exit_when_idle)
            .field("reloader", &self.reloader.get().is_some())
            .field("turn", &self.turn.get())
            .finish_non_exhaustive()
    }
}

/// Why a log level change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLevelError {
    /// The filter does not parse; the parser's message.
    Invalid(String),
    /// `RUST_LOG` pins the filter for the life of the process.
    Pinned,
}

/// Applies a log filter at run time (`Satellite.SetLogLevel`). A hook rather than a dependency
/// on the daemon's logging set-up, which lives in the root crate.
pub type LogLevelHook = Box<dyn Fn(&str) -> Result<(), LogLevelError> + Send + Sync>;

impl ControlState {
    /// A state that is not ready yet; `started` is when the process began (uptime counts from it).
    pub fn new(started: Instant, health: HealthReporter) -> Self {
        Self {
            started,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            health,
            public_address: std::sync::RwLock::new(None),
            log_level: OnceLock::new(),
            exit_when_idle: AtomicBool::new(false),
            exit_wake: Notify::new(),
            drain_deadline: Mutex::new(None),
            reloader: OnceLock::new(),
            turn: OnceLock::new(),
        }
    }

    /// Installs the log-level hook (once; later calls are ignored).
    pub fn set_log_hook(&self, hook: LogLevelHook) {
        let _ = self.log_level.set(hook);
    }

    /// Applies `level` through the installed hook; `level` is the request's `level` field.
    pub fn set_log_level(&self, level: &str) -> crate::Result<()> {
        if level.is_empty() {
            return Err(crate::Error::InvalidArgument {
                field: "level",
                reason: "required, e.g. \"info\" or \"warn,xcc_sip=debug\"".into(),
            });
        }
        let Some(hook) = self.log_level.get() else {
            return Err(crate::Error::Unavailable {
                reason: "this process has no run-time log control",
            });
        };
        hook(level).map_err(|e| match e {
            LogLevelError::Invalid(reason) => crate::Error::InvalidArgument {
                field: "level",
                reason,
            },
            LogLevelError::Pinned => crate::Error::Unavailable {
                reason: "RUST_LOG pins the log filter; unset it to change the level at run time",
            },
        })
    }

    /// Installs the reload `Satellite.Reload` runs (once; later calls are ignored).
    pub fn set_reloader(&self, reloader: Arc<dyn Reload>) {
        let _ = self.reloader.set(reloader);
    }

    /// The installed reload, if any.
    pub fn reloader(&self) -> Option<Arc<dyn Reload>> {
        self.reloader.get().cloned()
    }

    /// Asks the daemon to exit once no call is left (drains too). Returns whether this changed it.
    pub async fn drain_and_exit(&self) -> bool {
        self.drain().await;
        let changed = !self.exit_when_idle.swap(true, Ordering::AcqRel);
        if changed {
            tracing::info!("drain: xccd exits once no call is left");
        }
        self.exit_wake.notify_one();
        changed
    }

    /// True once an exit-when-idle drain was asked for (gRPC or SIGTERM).
    pub fn exit_when_idle(&self) -> bool {
        self.exit_when_idle.load(Ordering::Acquire)
    }

    /// Resolves once [`ControlState::drain_and_exit`] ran (at once if it already did).
    pub async fn exit_requested(&self) {
        loop {
            let notified = self.exit_wake.notified();
            if self.exit_when_idle() {
                return;
            }
            notified.await;
        }
    }

    /// Records when the running drain's grace ends (`None`: no deadline running).
    pub fn set_drain_deadline(&self, at: Option<Instant>) {
        *self
            .drain_deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// Time left of the running drain's grace, if one runs.
    pub fn drain_grace_left(&self, now: Instant) -> Option<Duration> {
        self.drain_deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|d| d.saturating_duration_since(now))
    }

    /// Time since the process started.
    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// True while new sessions are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// True once [`ControlState::set_ready`] ran.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records public address discovery's latest state (for `Status`).
    pub fn set_public_address(&self, status: crate::nat::PublicAddressStatus) {
        // A poisoned lock only means a reader panicked; the value is replaced whole.
        *self
            .public_address
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(status);
    }

    /// Public address discovery's latest state, if a driver published one.
    pub fn public_address(&self) -> Option<crate::nat::PublicAddressStatus> {
        self.public_address
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Installs XCC's own TURN relay (once, at start, only when `[turn]` is on; later calls are
    /// ignored: the relay is restart-only).
    pub fn set_turn(&self, source: crate::nat::TurnSource) {
        let _ = self.turn.set(source);
    }

    /// The TURN server and the relay's current status (`None` inside when the media plane has
    /// not reported yet); `None` when `[turn]` is off.
    pub fn turn(&self) -> Option<(std::net::SocketAddr, Option<xcc_core::media::RelayStatus>)> {
        self.turn.get().map(|t| (t.server, (t.status)()))
    }

    /// Marks the process ready: health turns SERVING unless draining.
    pub async fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
        self.publish().await;
    }

    /// Starts (or keeps) draining: refuse new sessions, health NOT_SERVING. Returns whether this
    /// call changed the state.
    pub async fn drain(&self) -> bool {
        let changed = !self.draining.swap(true, Ordering::AcqRel);
        if changed {
            tracing::info!("draining: new sessions refused, existing calls continue");
        }
        self.publish().await;
        changed
    }

    /// Ends a drain started by [`ControlState::drain`].
    pub async fn resume(&self) -> bool {
        let changed = self.draining.swap(false, Ordering::AcqRel);
        if changed {
            tracing::info!("resumed: accepting new sessions");
        }
        self.publish().await;
        changed
    }

    /// Pushes the current statuses to the health service.
    pub async fn publish(&self) {
        let ready = self.is_ready();
        let gated = if ready && !self.is_draining() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let always = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in GATED_SERVICES {
            self.health.set_service_status(name, gated).await;
        }
        for name in ALWAYS_SERVICES {
            self.health.set_service_status(name, always).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_server::Health;

    async fn status(svc: &impl Health, name: &str) -> i32 {
        let req = tonic::Request::new(HealthCheckRequest {
            service: name.into(),
        });
        svc.check(req)
            .await
            .expect("service registered")
            .into_inner()
            .status
    }

    #[tokio::test]
    async fn health_follows_ready_and_drain() {
        let (reporter, server) = tonic_health::server::health_reporter();
        let svc = tonic_health::server::HealthService::from_health_reporter(reporter.clone());
        drop(server);
        let state = ControlState::new(Instant::now(), reporter);
        state.publish().await;
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
        assert_eq!(status(&svc, "").await, not_serving, "starting");
        state.set_ready().await;
        assert_eq!(status(&svc, "").await, serving);
        assert_eq!(status(&svc, "xcc.v1.Sessions").await, serving);
        assert!(state.drain().await);
        assert!(!state.drain().await, "second drain changes nothing");
        assert_eq!(status(&svc, "").await, not_serving);
        assert_eq!(status(&svc, "xcc.v1.Sessions").await, not_serving);
        assert_eq!(
            status(&svc, "xcc.v1.Calls").await,
            serving,
            "calls stay observable"
        );
        assert!(state.resume().await);
        assert_eq!(status(&svc, "").await, serving);
    }
}
