//! coturn with long-term credentials on 127.0.0.1 and an engine relaying its client legs through
//! it, for the TURN media tests. coturn must allow loopback peers (`--allow-loopback-peers`): the
//! phones and XCC all live on 127.0.0.1. Without coturn installed, [`Coturn::start`] returns
//! `None` (the test skips), which fails under CI.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::media_support::{Phone, SrtpPhone, leg_to, local};
use xcc_core::ids::{CallId, LegSide};
use xcc_core::media::{MediaConfig, MediaControl, MediaEngine, MediaEvent, RelayConfig};
use xcc_core::srtp::SrtpSuite;

/// coturn's listening port on 127.0.0.1.
pub const TURN_PORT: u16 = 27478;
/// coturn's relay port range (outside every test pool).
pub const RELAY_PORTS: (u16, u16) = (27500, 27599);
/// The engine's pool.
pub const POOL: (u16, u16) = (27400, 27449);
/// Bound of every wait.
pub const LIMIT: Duration = Duration::from_secs(10);

/// The ports one coturn and its engine use; test binaries that may run at the same time each
/// take their own set.
#[derive(Debug, Clone, Copy)]
pub struct TurnPorts {
    /// coturn's listening port on 127.0.0.1.
    pub turn: u16,
    /// coturn's relay port range (outside every test pool).
    pub relay: (u16, u16),
    /// The engine's pool.
    pub pool: (u16, u16),
}

/// The ports of `media_turn.rs`.
pub const DEFAULT_PORTS: TurnPorts = TurnPorts {
    turn: TURN_PORT,
    relay: RELAY_PORTS,
    pool: POOL,
};

/// One coturn per test binary at a time: the tests share its port.
static SERIAL: Mutex<()> = Mutex::new(());

/// coturn with user `xcc:secret` in realm `xcc.test`, killed on drop.
pub struct Coturn {
    _serial: MutexGuard<'static, ()>,
    child: Child,
}

impl Coturn {
    /// coturn on [`DEFAULT_PORTS`].
    pub fn start() -> Option<Coturn> {
        Self::start_on(DEFAULT_PORTS)
    }

    /// coturn listening on `ports.turn`, relaying on `ports.relay`.
    pub fn start_on(ports: TurnPorts) -> Option<Coturn> {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        if Command::new("turnserver")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "coturn (turnserver) must be installed under CI"
            );
            eprintln!("skipped: coturn (turnserver) not installed");
            return None;
        }
        let pidfile = format!("/tmp/xcc-media-turn-{}.pid", std::process::id());
        let child = Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls"])
            .args(["-L", "127.0.0.1", "--relay-ip", "127.0.0.1"])
            .args(["--listening-port", &ports.turn.to_string()])
            .args(["--min-port", &ports.relay.0.to_string()])
            .args(["--max-port", &ports.relay.1.to_string()])
            .args([
                "--lt-cred-mech",
                "--user",
                "xcc:secret",
                "--realm",
                "xcc.test",
            ])
            .args(["--allow-loopback-peers", "--pidfile", &pidfile])
            .args(["--log-file", "stdout"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnserver");
        Some(Coturn {
            _serial: serial,
            child,
        })
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Credentials `xcc:password` for the coturn on [`DEFAULT_PORTS`], two spares.
pub fn relay(password: &str) -> RelayConfig {
    relay_on(DEFAULT_PORTS, password)
}

/// Credentials `xcc:password` for the coturn on `ports`, two spares.
pub fn relay_on(ports: TurnPorts, password: &str) -> RelayConfig {
    RelayConfig {
        server: local(ports.turn),
        transport: xcc_core::nat::turn::TurnTransport::Udp,
        username: "xcc".into(),
        password: password.into(),
        lifetime: Duration::from_secs(600),
        spares: 2,
    }
}

/// One worker on [`DEFAULT_PORTS`]' pool, relayed through its coturn.
pub fn relayed_engine(password: &str) -> (MediaEngine, crossbeam_channel::Receiver<MediaEvent>) {
    relayed_engine_on(DEFAULT_PORTS, password)
}

/// One worker on `ports.pool`, relayed through the coturn on `ports.turn`.
pub fn relayed_engine_on(
    ports: TurnPorts,
    password: &str,
) -> (MediaEngine, crossbeam_channel::Receiver<MediaEvent>) {
    relayed_engine_with(ports, relay_on(ports, password))
}

/// One worker on `ports.pool`, relaying its client legs as `relay` says.
pub fn relayed_engine_with(
    ports: TurnPorts,
    relay: RelayConfig,
) -> (MediaEngine, crossbeam_channel::Receiver<MediaEvent>) {
    let cfg = MediaConfig {
        bind_address: "127.0.0.1".parse().unwrap(),
        port_min: ports.pool.0,
        port_max: ports.pool.1,
        workers: 1,
        quarantine_secs: 0,
        ..MediaConfig::default()
    };
    MediaEngine::start_relayed(cfg, Some(relay)).expect("engine starts")
}

/// Configures `call` between a phone speaking SRTP (AES_CM_128_HMAC_SHA1_80) on the client leg
/// and a plain-RTP PBX on the PBX leg; returns `(phone, pbx, the phone's SRTP contexts)`.
pub fn configure_srtp_call(ctl: &MediaControl, call: CallId) -> (Phone, Phone, SrtpPhone) {
    let (phone, pbx) = (Phone::new(), Phone::new());
    let sp = SrtpPhone::new(SrtpSuite::AesCm128HmacSha1_80);
    ctl.configure_leg(call, LegSide::Client, leg_to(&phone, Some(sp.keys.clone())))
        .unwrap();
    ctl.configure_leg(call, LegSide::Pbx, leg_to(&pbx, None))
        .unwrap();
    (phone, pbx, sp)
}
