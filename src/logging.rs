//! tracing set-up with a filter that SIGHUP can replace at run time.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

use crate::config::{LogConfig, LogFormat};

/// Replaces the active filter (SIGHUP). `None` when `RUST_LOG` pins the filter.
#[derive(Clone)]
pub struct LogControl {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

impl LogControl {
    /// Applies a new `log.level`; the level was validated with the rest of the configuration.
    pub fn set_level(&self, level: &str) {
        let Some(handle) = &self.handle else {
            tracing::info!("RUST_LOG is set; log.level from the configuration is ignored");
            return;
        };
        match level.parse::<EnvFilter>() {
            Ok(filter) => {
                // Logged before the switch: the new filter may hide info lines.
                tracing::info!(level, "log level reloaded");
                if let Err(e) = handle.reload(filter) {
                    tracing::warn!(error = %e, "log level reload failed");
                }
            }
            Err(e) => tracing::warn!(level, error = %e, "log.level rejected"),
        }
    }
}

/// Installs the global subscriber (stderr; journald captures it). `RUST_LOG`, when set, overrides
/// `log.level` for the life of the process.
pub fn init(config: &LogConfig) -> LogControl {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<EnvFilter>().ok());
    let pinned = from_env.is_some();
    // The level was validated by Config::validate; "info" is only a guard against a race with SIGHUP.
    let filter = from_env.unwrap_or_else(|| {
        config
            .level
            .parse()
            .unwrap_or_else(|_| EnvFilter::new("info"))
    });
    let (filter, handle) = reload::Layer::new(filter);
    let json = config.format == LogFormat::Json;
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(json.then(|| fmt::layer().json().with_writer(std::io::stderr)))
        // Colours only on a terminal: under systemd stderr goes to journald, which stores the escape
        // codes verbatim.
        .with((!json).then(|| {
            fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
        }))
        .try_init();
    if let Err(e) = result {
        eprintln!("xccd: logging already initialised: {e}");
    }
    LogControl {
        handle: (!pinned).then_some(handle),
    }
}
