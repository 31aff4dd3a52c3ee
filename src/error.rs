//! The daemon's one error type, and the process exit code each variant means.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why xccd could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("{}: {source}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type or an unknown key; `message` quotes the key and line.
    #[error("{}: {message}", path.display())]
    ConfigSyntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("invalid `{key}`: {reason}")]
    ConfigInvalid {
        /// Dotted key, e.g. `media.port_min`.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// A listener could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Address tried.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The media plane refused to start or failed.
    #[error("media plane: {0}")]
    Media(#[from] xcc_core::Error),
    /// The control plane failed.
    #[error("control plane: {0}")]
    Control(#[from] xcc_grpc::Error),
    /// A thread or signal handler could not be set up.
    #[error("{what}: {source}")]
    Runtime {
        /// What was being set up.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// sysexits.h EX_USAGE: the configuration is wrong; restarting will not help.
pub const EXIT_CONFIG: u8 = 64;
/// sysexits.h EX_UNAVAILABLE: a runtime failure (bind, media plane).
pub const EXIT_RUNTIME: u8 = 69;

impl Error {
    /// Process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::ConfigRead { .. } | Error::ConfigSyntax { .. } | Error::ConfigInvalid { .. } => {
                EXIT_CONFIG
            }
            Error::Media(xcc_core::Error::Config { .. }) => EXIT_CONFIG,
            _ => EXIT_RUNTIME,
        }
    }
}

/// Result alias for the daemon.
pub type Result<T, E = Error> = std::result::Result<T, E>;
