//! The XCC daemon's wiring: configuration, logging, advertised addresses, systemd readiness, and the
//! run loop that ties the media plane to the control API. `xccd` parses arguments and signals and
//! calls into here; nothing protocol-specific lives in this crate.

pub mod config;
pub mod daemon;
pub mod error;
pub mod firewall;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod netif;
pub mod notify;
pub mod public_address;
pub mod reload;
pub mod sip;
pub mod store;
pub mod stun_check;
pub mod turn_check;
pub mod watchdog;

pub use error::{Error, Result};
