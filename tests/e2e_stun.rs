//! `xccctl stun-check` and `xccctl nat-type` against a real STUN server: coturn started by the
//! test on 127.0.0.1 and 127.0.0.2 (RFC 5780 needs two addresses), ports 23578/23579 (natwire's
//! range), stopped on drop. Without coturn the tests skip (`common::skip`).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use xcc_core::nat::stun;

const PORT: u16 = 23578;

/// coturn on loopback, killed on drop.
struct Coturn {
    /// One coturn at a time on these ports (the tests of this file run in parallel).
    _serial: std::sync::MutexGuard<'static, ()>,
    child: Child,
    pidfile: String,
}

impl Coturn {
    /// Starts coturn (`--stun-only`) on `127.0.0.1:PORT` and `127.0.0.2:PORT`, alternate port
    /// PORT+1, and waits until both answer a Binding request (bounded).
    fn start() -> Option<Coturn> {
        static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        if Command::new("turnserver")
            .arg("--version")
            .output()
            .is_err()
        {
            common::skip("coturn (turnserver) not installed");
            return None;
        }
        let pidfile = format!("/tmp/xcc-e2e-stun-{}.pid", std::process::id());
        let child = Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--stun-only"])
            .args(["-L", "127.0.0.1", "-L", "127.0.0.2"])
            .args(["--listening-port", &PORT.to_string()])
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
        for server in ["127.0.0.1", "127.0.0.2"] {
            let server = SocketAddr::new(server.parse().unwrap(), PORT);
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
fn answers(server: SocketAddr) -> bool {
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

fn xccctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xccctl"))
        .args(args)
        .output()
        .expect("run xccctl")
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
fn stun_check_reports_the_mapped_address_and_rtt_from_coturn() {
    let Some(_coturn) = Coturn::start() else {
        return;
    };
    let server = format!("127.0.0.1:{PORT}");
    let out = xccctl(&["--json", "stun-check", &server, "--bind", "127.0.0.1"]);
    assert!(out.status.success(), "{out:?}");
    let v = json(&out);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["public_ip"], "127.0.0.1", "{v}");
    assert_eq!(
        v["mapped"], v["local"],
        "no NAT on loopback: coturn saw the local socket"
    );
    assert!(v["rtt_ms"].as_f64().is_some_and(|r| r >= 0.0), "{v}");
    assert_eq!(v["transmissions"], 1, "{v}");

    // The human form names the address.
    let out = xccctl(&["stun-check", &server, "--bind", "127.0.0.1"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("127.0.0.1"), "{text}");
}

#[test]
fn stun_check_of_a_port_without_server_says_refused_and_fails() {
    // No coturn needed: nothing listens on PORT + 10, ICMP says so.
    let server = format!("127.0.0.1:{}", PORT + 10);
    let out = xccctl(&["--json", "stun-check", &server, "--bind", "127.0.0.1"]);
    assert!(!out.status.success(), "{out:?}");
    let v = json(&out);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"], "refused", "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

#[test]
fn nat_type_against_coturn_on_loopback_finds_no_nat() {
    let Some(_coturn) = Coturn::start() else {
        return;
    };
    let server = format!("127.0.0.1:{PORT}");
    let out = xccctl(&["--json", "nat-type", &server, "--bind", "127.0.0.1"]);
    assert!(out.status.success(), "{out:?}");
    let v = json(&out);
    assert_eq!(v["mapping"], "NoNat", "{v}");
    assert!(
        v["public"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{v}"
    );
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains("No NAT")),
        "{v}"
    );
}
