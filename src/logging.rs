//! tracing set-up with a filter that SIGHUP and `Satellite.SetLogLevel` can replace at run time.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

use xcc_grpc::control::LogLevelError;

use crate::config::{LogConfig, LogFormat};

/// The process's log control, set once by [`init`] (the subscriber is process-global too).
static CONTROL: OnceLock<LogControl> = OnceLock::new();

/// Level names a bare directive may be (anything else without `=` would silently become a target
/// filter: `inf` would hide every line).
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a filter more strictly than `EnvFilter` does: a directive without `=` or a span filter
/// must be a level name.
pub fn check_level(level: &str) -> Result<EnvFilter, String> {
    for d in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains('=')
            && !d.contains('[')
            && !LEVELS.contains(&d.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "{d:?} is neither a level ({}) nor target=level",
                LEVELS.join(", ")
            ));
        }
    }
    level.parse::<EnvFilter>().map_err(|e| e.to_string())
}

/// Applies `level` at run time (the gRPC hook): validated with [`check_level`], refused while
/// `RUST_LOG` pins the filter or before [`init`].
pub fn apply_level(level: &str) -> Result<(), LogLevelError> {
    let filter = check_level(level).map_err(LogLevelError::Invalid)?;
    let Some(handle) = CONTROL.get().and_then(|c| c.handle.as_ref()) else {
        return Err(LogLevelError::Pinned);
    };
    tracing::info!(level, "log level set over the control API");
    handle
        .reload(filter)
        .map_err(|e| LogLevelError::Invalid(e.to_string()))
}

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
    let control = LogControl {
        handle: (!pinned).then_some(handle),
    };
    let _ = CONTROL.set(control.clone());
    control
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_words_must_be_levels() {
        assert!(check_level("info").is_ok());
        assert!(check_level("WARN,xcc_sip=debug").is_ok());
        assert!(check_level("xcc::cdr=info,off").is_ok());
        let e = check_level("inf").unwrap_err();
        assert!(e.contains("\"inf\""), "{e}");
        assert!(check_level("info,=[").is_err());
    }
}
