//! coturn started by a test on loopback addresses, killed on drop: `--stun-only`
//! ([`Coturn::start`]), or a TURN server with long-term credentials ([`Coturn::start_turn`]).
//! Without coturn installed, both call [`super::skip`] and return `None`.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use xcc_core::nat::stun;

/// One coturn at a time per test binary (a test file's tests run in parallel on one port).
static SERIAL: Mutex<()> = Mutex::new(());

/// coturn as a TURN server: long-term credentials and the ports it relays on.
#[derive(Debug, Clone, Copy)]
pub struct TurnOptions {
    /// `USER:PASSWORD` (`--user`).
    pub user: &'static str,
    /// `--realm`.
    pub realm: &'static str,
    /// Relayed ports, inclusive (`--min-port`, `--max-port`), on the first listening address.
    pub relay: (u16, u16),
    /// Allocations one user may hold at a time (`--user-quota`); `None`: no limit.
    pub user_quota: Option<u32>,
    /// `--allow-loopback-peers`: relay to peers on 127.0.0.0/8 (coturn refuses them otherwise),
    /// for tests whose phones live on loopback.
    pub loopback_peers: bool,
}

/// A running coturn.
pub struct Coturn {
    _serial: MutexGuard<'static, ()>,
    child: Child,
    pidfile: String,
}

impl Coturn {
    /// Starts coturn listening on each of `addresses` at `port` (alternate port `port + 1`)
    /// and waits until every one answers a Binding request (bounded).
    pub fn start(addresses: &[&str], port: u16) -> Option<Coturn> {
        Self::start_with(addresses, port, None)
    }

    /// Starts coturn as a TURN server with `turn`'s credentials, relaying from the first of
    /// `addresses`; ready like [`Coturn::start`] (it answers Binding requests without
    /// credentials).
    pub fn start_turn(addresses: &[&str], port: u16, turn: TurnOptions) -> Option<Coturn> {
        Self::start_with(addresses, port, Some(turn))
    }

    fn start_with(addresses: &[&str], port: u16, turn: Option<TurnOptions>) -> Option<Coturn> {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        if Command::new("turnserver")
            .arg("--version")
            .output()
            .is_err()
        {
            super::skip("coturn (turnserver) not installed");
            return None;
        }
        let pidfile = format!("/tmp/xcc-e2e-coturn-{}-{port}.pid", std::process::id());
        let mut cmd = Command::new("turnserver");
        cmd.args(["-n", "--no-cli", "--no-tls", "--no-dtls"]);
        for a in addresses {
            cmd.args(["-L", a]);
        }
        match turn {
            None => {
                cmd.arg("--stun-only");
            }
            Some(t) => {
                cmd.args(["--lt-cred-mech", "--user", t.user, "--realm", t.realm])
                    .args(["--relay-ip", addresses[0]])
                    .args(["--min-port", &t.relay.0.to_string()])
                    .args(["--max-port", &t.relay.1.to_string()]);
                if let Some(quota) = t.user_quota {
                    cmd.args(["--user-quota", &quota.to_string()]);
                }
                if t.loopback_peers {
                    cmd.arg("--allow-loopback-peers");
                }
            }
        }
        let child = cmd
            .args(["--listening-port", &port.to_string()])
            .args(["--pidfile", &pidfile, "--log-file", "stdout"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnserver");
        let coturn = Coturn {
            _serial: serial,
            child,
            pidfile,
        };
        for a in addresses {
            let server = SocketAddr::new(a.parse().expect("an IP address"), port);
            assert!(answers(server), "coturn does not answer on {server}");
        }
        Some(coturn)
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pidfile);
    }
}

/// Whether `server` answers a Binding request within 10 s (retried every 100 ms).
pub fn answers(server: SocketAddr) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1500];
    let mut req = [0u8; 20];
    let mut n = 0u8;
    while Instant::now() < deadline {
        n = n.wrapping_add(1);
        let len = stun::Writer::new(
            &mut req,
            stun::BINDING_REQUEST,
            stun::TransactionId([n; 12]),
        )
        .expect("20 bytes fit a header")
        .finish();
        let _ = sock.send_to(&req[..len], server);
        if let Ok((len, from)) = sock.recv_from(&mut buf)
            && from == server
            && stun::Message::parse(&buf[..len]).is_ok()
        {
            return true;
        }
    }
    false
}
