//! Live reconfiguration (SIGHUP, `Satellite.Reload`, `xccctl reload`).
//!
//! A reload re-reads the file given with `--config` and validates it exactly as start-up does. An
//! invalid file is refused with the reason (naming the key) and nothing changes. A valid one is
//! handed to each [`Applier`]: first every applier's [`Applier::check`] (any refusal refuses the whole
//! reload, so a reload is all or nothing), then every [`Applier::apply`]. Keys no applier claims
//! and whose value differs from what the process started with are reported as "restart required".
//!
//! A section plugs in by implementing [`Applier`] (claiming its dotted keys) and registering it with
//! [`Reloader::register`] from its own `start_*` wiring; nothing else changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use xcc_core::media::MediaControl;
use xcc_grpc::control::{Reload, ReloadReport};

use crate::config::{Config, Validated};
use crate::logging::LogControl;

/// Where the running configuration came from.
#[derive(Clone)]
pub struct Source {
    /// `--config`, if given.
    pub path: Option<PathBuf>,
    /// The log filter handle (`log.level` is live).
    pub log: LogControl,
}

/// Builds the reloader with the appliers of the sections this crate runs (pool, DSCP, log level,
/// drain grace). Other sections register theirs on the returned handle.
pub fn start_reload(
    source: Source,
    v: &Validated,
    media: &MediaControl,
    grace: &Arc<DrainGrace>,
) -> Arc<Reloader> {
    let r = Arc::new(Reloader::new(source.path, v));
    r.register(PoolApplier(media.clone()));
    r.register(DscpApplier(media.clone()));
    r.register(LogLevelApplier(source.log));
    r.register(DrainGraceApplier(grace.clone()));
    r
}

/// Runs a reload off the async workers (it reads a file); the outcome is logged by the reload.
pub async fn run_blocking(reloader: &Arc<Reloader>) {
    let r = reloader.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || r.reload()).await {
        tracing::error!(error = %e, "reload task failed");
    }
}

/// One section's (or one feature's) share of a reload.
pub trait Applier: Send + Sync + 'static {
    /// The dotted keys this applier changes live (`"media.port_min"`, `"sip.peers"`); a key prefix
    /// ending in `.` claims a whole table (`"sip."`). Claimed keys are never "restart required".
    fn keys(&self) -> &'static [&'static str];

    /// Whether `next` can be applied while `running` runs; `Err(reason naming the key)` refuses
    /// the whole reload before any applier changed anything. Default: always.
    fn check(&self, _running: &Config, _next: &Config) -> Result<(), String> {
        Ok(())
    }

    /// Applies what differs between `running` and `next` for the claimed keys; one line per change
    /// (`"media.dscp: 46 -> 34 (new calls)"`). Must not fail after a successful `check`: report a
    /// late problem as a line and keep the old value.
    fn apply(&self, running: &Config, next: &Config) -> Vec<String>;
}

/// The reload: the file, what runs, and the registered appliers.
pub struct Reloader {
    /// `--config`; `None` runs on defaults and has nothing to re-read.
    path: Option<PathBuf>,
    /// What the process started with: restart-only keys are compared against it.
    booted: Config,
    /// `[turn]` as resolved at start: a reload compares what the file cannot show (the password
    /// file's content, the address a name resolves to) and reports a change as restart-required.
    booted_turn: Option<crate::config::TurnSettings>,
    /// The configuration of the last successful reload (or start); serialises reloads.
    running: Mutex<Config>,
    /// Registered appliers, applied in registration order.
    appliers: Mutex<Vec<Box<dyn Applier>>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for the process started with `v` read from `path`.
    pub fn new(path: Option<PathBuf>, v: &Validated) -> Self {
        Self {
            path,
            booted: v.config.clone(),
            booted_turn: v.turn.clone(),
            running: Mutex::new(v.config.clone()),
            appliers: Mutex::new(Vec::new()),
        }
    }

    /// Adds a section's applier (from that section's `start_*` wiring).
    pub fn register(&self, applier: impl Applier) {
        self.appliers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(applier));
    }

    /// Re-reads, validates and applies; `Err(reason)` means refused and nothing changed.
    pub fn reload_now(&self) -> Result<ReloadReport, String> {
        let Some(path) = &self.path else {
            return Err("xccd runs without --config: there is no file to re-read".into());
        };
        let next = match Config::load(path) {
            Ok((_, false)) => return Err(format!("{} does not exist", path.display())),
            Ok((config, true)) => config.validate().map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        };
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let appliers = self.appliers.lock().unwrap_or_else(PoisonError::into_inner);
        for a in appliers.iter() {
            a.check(&running, &next.config)?;
        }
        let mut applied = Vec::new();
        for a in appliers.iter() {
            applied.extend(a.apply(&running, &next.config));
        }
        let claimed = |key: &str| {
            appliers.iter().flat_map(|a| a.keys()).any(|k| {
                if let Some(prefix) = k.strip_suffix('.') {
                    key == prefix || key.starts_with(k)
                } else {
                    key == *k
                }
            })
        };
        let mut restart_required: Vec<String> = changed_keys(&self.booted, &next.config)
            .into_iter()
            .filter(|k| !claimed(k))
            .collect();
        for key in
            turn_resolved_changes(self.booted_turn.as_ref(), next.turn.as_ref(), &next.config)
        {
            if !restart_required.iter().any(|k| k == key) {
                restart_required.push(key.to_owned());
            }
        }
        restart_required.sort();
        *running = next.config;
        Ok(ReloadReport {
            applied,
            restart_required,
            path: Some(path.clone()),
        })
    }
}

impl Reload for Reloader {
    fn reload(&self) -> Result<ReloadReport, String> {
        match self.reload_now() {
            Ok(report) => {
                for line in &report.applied {
                    tracing::info!(change = %line, "reload applied");
                }
                for key in &report.restart_required {
                    tracing::warn!(key = %key, "reload: changed in the file, takes effect on restart");
                }
                tracing::info!(
                    applied = report.applied.len(),
                    restart_required = report.restart_required.len(),
                    "configuration reloaded"
                );
                Ok(report)
            }
            Err(reason) => {
                tracing::error!(%reason, config = ?self.path, "reload refused: configuration rejected, running configuration kept");
                Err(reason)
            }
        }
    }
}

/// `[turn]` keys whose effect changed although their text did not: the server name resolves to
/// another address, or the password file holds another password. Every `turn.*` key is
/// restart-only (the media plane's allocations were made with the values at start), so these
/// are reported with the keys whose text changed.
fn turn_resolved_changes(
    booted: Option<&crate::config::TurnSettings>,
    next: Option<&crate::config::TurnSettings>,
    next_config: &Config,
) -> Vec<&'static str> {
    let (Some(b), Some(n)) = (booted, next) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    if b.server != n.server {
        keys.push("turn.server");
    }
    if b.password != n.password {
        keys.push(if next_config.turn.password_file.is_some() {
            "turn.password_file"
        } else {
            "turn.password"
        });
    }
    keys
}

/// Dotted keys whose values differ between `a` and `b` (a key present on one side only counts).
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (fa, fb) = (flatten(a), flatten(b));
    let mut keys: Vec<String> = fa
        .keys()
        .chain(fb.keys())
        .filter(|k| fa.get(*k) != fb.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn flatten(c: &Config) -> BTreeMap<String, toml::Value> {
    fn walk(prefix: &str, v: toml::Value, out: &mut BTreeMap<String, toml::Value>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other);
            }
        }
    }
    let mut out = BTreeMap::new();
    // Config serialises to TOML (default_toml relies on it); a failure leaves the map empty and
    // the diff then lists nothing as restart-required, which is only a reporting loss.
    if let Ok(v) = toml::Value::try_from(c) {
        walk("", v, &mut out);
    }
    out
}

/// `[control] drain_grace_secs`, readable by a running drain and changed by a reload.
#[derive(Debug, Default)]
pub struct DrainGrace {
    secs: AtomicU64,
    changed: Notify,
}

impl DrainGrace {
    /// Starts at `secs`.
    pub fn new(secs: u64) -> Arc<Self> {
        Arc::new(Self {
            secs: AtomicU64::new(secs),
            changed: Notify::new(),
        })
    }

    /// The grace now.
    pub fn get(&self) -> Duration {
        Duration::from_secs(self.secs.load(Ordering::Relaxed))
    }

    /// Sets it and wakes a running drain, which moves its deadline.
    pub fn set(&self, secs: u64) {
        self.secs.store(secs, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Resolves at the next [`DrainGrace::set`].
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// `media.port_min` / `media.port_max`: the pool grows and shrinks live.
pub struct PoolApplier(pub MediaControl);

impl Applier for PoolApplier {
    fn keys(&self) -> &'static [&'static str] {
        &["media.port_min", "media.port_max"]
    }
    /// The media plane's own rules for a range (what `resize_pool` checks), before anything moves.
    fn check(&self, _running: &Config, next: &Config) -> Result<(), String> {
        next.media.validate().map_err(|e| e.to_string())
    }
    fn apply(&self, running: &Config, next: &Config) -> Vec<String> {
        let (o, n) = (&running.media, &next.media);
        if (o.port_min, o.port_max) == (n.port_min, n.port_max) {
            return Vec::new();
        }
        let line = match self.0.resize_pool(n.port_min, n.port_max) {
            Ok(c) => format!(
                "media.port_min/port_max: {}-{} -> {}-{} (+{} ports, -{} ports now, {} ports close when their calls end)",
                o.port_min, o.port_max, n.port_min, n.port_max, c.added, c.removed, c.retiring
            ),
            Err(e) => format!("media.port_min/port_max: not resized, pool kept: {e}"),
        };
        vec![line]
    }
}

/// `media.dscp`: new calls get the new mark; running calls keep theirs.
pub struct DscpApplier(pub MediaControl);

impl Applier for DscpApplier {
    fn keys(&self) -> &'static [&'static str] {
        &["media.dscp"]
    }
    fn apply(&self, running: &Config, next: &Config) -> Vec<String> {
        let (o, n) = (running.media.dscp, next.media.dscp);
        if o == n {
            return Vec::new();
        }
        match self.0.set_dscp(n) {
            Ok(()) => vec![format!("media.dscp: {o} -> {n} (new calls)")],
            Err(e) => vec![format!("media.dscp: kept {o}: {e}")],
        }
    }
}

/// `log.level`.
pub struct LogLevelApplier(pub LogControl);

impl Applier for LogLevelApplier {
    fn keys(&self) -> &'static [&'static str] {
        &["log.level"]
    }
    fn apply(&self, running: &Config, next: &Config) -> Vec<String> {
        let (o, n) = (&running.log.level, &next.log.level);
        if o == n {
            return Vec::new();
        }
        self.0.set_level(n);
        vec![format!("log.level: {o:?} -> {n:?}")]
    }
}

/// `control.drain_grace_secs`: a drain already running moves its deadline.
pub struct DrainGraceApplier(pub Arc<DrainGrace>);

impl Applier for DrainGraceApplier {
    fn keys(&self) -> &'static [&'static str] {
        &["control.drain_grace_secs"]
    }
    fn apply(&self, running: &Config, next: &Config) -> Vec<String> {
        let (o, n) = (
            running.control.drain_grace_secs,
            next.control.drain_grace_secs,
        );
        if o == n {
            return Vec::new();
        }
        self.0.set(n);
        vec![format!("control.drain_grace_secs: {o} -> {n}")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn validated(text: &str) -> Validated {
        Config::parse(text, std::path::Path::new("test.toml"))
            .unwrap()
            .validate()
            .unwrap()
    }

    fn file(dir: &std::path::Path, text: &str) -> PathBuf {
        let p = dir.join("xcc.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Records what it saw; refuses when `media.workers` is 7 (a stand-in for "cannot apply live").
    struct Probe {
        applied: Arc<AtomicUsize>,
    }
    impl Applier for Probe {
        fn keys(&self) -> &'static [&'static str] {
            &["log."]
        }
        fn check(&self, _: &Config, next: &Config) -> Result<(), String> {
            if next.media.workers == 7 {
                return Err("media.workers: 7 is refused by the probe".into());
            }
            Ok(())
        }
        fn apply(&self, running: &Config, next: &Config) -> Vec<String> {
            self.applied.fetch_add(1, Ordering::Relaxed);
            if running.log.level != next.log.level {
                vec![format!("log.level -> {}", next.log.level)]
            } else {
                Vec::new()
            }
        }
    }

    #[test]
    fn changed_keys_are_dotted_and_sorted() {
        let a = Config::default();
        let mut b = a.clone();
        b.media.dscp = 10;
        b.control.drain_grace_secs = 1;
        assert_eq!(
            changed_keys(&a, &b),
            vec!["control.drain_grace_secs", "media.dscp"]
        );
        assert!(changed_keys(&a, &a).is_empty());
    }

    #[test]
    fn claimed_keys_apply_others_wait_for_restart_and_refusals_change_nothing() {
        let dir = std::env::temp_dir().join(format!("xcc-reload-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let start = "[log]\nlevel = \"info\"\n";
        let path = file(&dir, start);
        let r = Reloader::new(Some(path.clone()), &validated(start));
        let applied = Arc::new(AtomicUsize::new(0));
        r.register(Probe {
            applied: applied.clone(),
        });

        file(&dir, "[log]\nlevel = \"debug\"\n[media]\nworkers = 3\n");
        let report = r.reload_now().unwrap();
        assert_eq!(report.applied, vec!["log.level -> debug"]);
        assert_eq!(report.restart_required, vec!["media.workers"]);
        assert_eq!(report.path.as_deref(), Some(path.as_path()));

        // Invalid file: refused with the key, no applier ran.
        file(&dir, "[media]\ndscp = 99\n");
        let err = r.reload_now().unwrap_err();
        assert!(err.contains("media.dscp"), "{err}");
        // An applier's refusal refuses the whole reload.
        file(&dir, "[log]\nlevel = \"warn\"\n[media]\nworkers = 7\n");
        let err = r.reload_now().unwrap_err();
        assert!(err.contains("refused by the probe"), "{err}");
        assert_eq!(
            applied.load(Ordering::Relaxed),
            1,
            "only the first reload applied"
        );
        // The running level is still "debug": going back to it changes nothing.
        file(&dir, "[log]\nlevel = \"debug\"\n");
        let report = r.reload_now().unwrap();
        assert!(report.applied.is_empty(), "{report:?}");
        assert!(report.restart_required.is_empty(), "{report:?}");

        std::fs::remove_file(&path).unwrap();
        assert!(r.reload_now().unwrap_err().contains("does not exist"));
        let none = Reloader::new(None, &validated(start));
        assert!(none.reload_now().unwrap_err().contains("--config"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn drain_grace_wakes_a_waiter() {
        let g = DrainGrace::new(30);
        let waiter = {
            let g = g.clone();
            tokio::spawn(async move { g.changed().await })
        };
        // notify_waiters only reaches a registered waiter: set until it is woken (bounded).
        for _ in 0..1000 {
            if waiter.is_finished() {
                break;
            }
            g.set(5);
            tokio::task::yield_now().await;
        }
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("waiter woken")
            .unwrap();
        assert_eq!(g.get(), Duration::from_secs(5));
    }

    #[test]
    fn every_turn_key_waits_for_a_restart_even_a_new_password_file_content() {
        let dir = std::env::temp_dir().join(format!("xcc-reload-turn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("turn-pw");
        std::fs::write(&pw, "one\n").unwrap();
        let on = format!(
            "[turn]\nserver = \"127.0.0.1\"\nusername = \"xcc\"\npassword_file = \"{}\"\n",
            pw.display()
        );
        let path = file(&dir, "");
        let r = Reloader::new(Some(path.clone()), &validated(""));
        file(&dir, &on);
        let report = r.reload_now().unwrap();
        assert!(report.applied.is_empty(), "{report:?}");
        assert_eq!(
            report.restart_required,
            vec!["turn.password_file", "turn.server", "turn.username"]
        );

        let r = Reloader::new(Some(path.clone()), &validated(&on));
        file(
            &dir,
            &format!("{on}lifetime_secs = 900\nspares = 8\ntransport = \"udp\"\n"),
        );
        let report = r.reload_now().unwrap();
        assert_eq!(
            report.restart_required,
            vec!["turn.lifetime_secs", "turn.spares"],
            "an unchanged transport is no change"
        );
        std::fs::write(&pw, "two\n").unwrap();
        file(&dir, &on);
        let report = r.reload_now().unwrap();
        assert_eq!(report.restart_required, vec!["turn.password_file"]);
        // An invalid [turn] refuses the whole reload, naming the key.
        file(
            &dir,
            "[turn]\nserver = \"127.0.0.1\"\ntransport = \"tls\"\n",
        );
        assert!(r.reload_now().unwrap_err().contains("turn.transport"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
