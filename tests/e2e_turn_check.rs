//! `xccctl turn-check` against a real TURN server: coturn started by the test on 127.0.0.1 with
//! long-term credentials (`xcc:secret`, realm `xcc.test`), listening on 23548 (UDP and TCP,
//! alternate port 23549), relaying on 23520-23539; nothing listens on 23558; the test's own
//! silent socket holds 23559. All in natwire's range (23500-23599). Without coturn the tests that
//! need it skip (`common::skip`).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::coturn::{Coturn, TurnOptions};
use common::{stdout_json, xccctl};
use serde_json::Value;

const PORT: u16 = 23548;
const RELAY: (u16, u16) = (23520, 23539);
/// Nothing listens here, over UDP or TCP.
const NOTHING: u16 = 23558;
/// A UDP socket of the test's that never answers.
const SILENT: u16 = 23559;

const TURN: TurnOptions = TurnOptions {
    user: "xcc:secret",
    realm: "xcc.test",
    relay: RELAY,
    user_quota: None,
    loopback_peers: false,
};

fn coturn(turn: TurnOptions) -> Option<Coturn> {
    Coturn::start_turn(&["127.0.0.1"], PORT, turn)
}

fn server() -> String {
    format!("127.0.0.1:{PORT}")
}

/// An xcc.toml as an operator would write it, `[turn]` on coturn with the password in a file.
fn config_file(name: &str, password: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("xcc-e2e-turn-check-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("turn.secret");
    std::fs::write(&secret, format!("{password}\n")).unwrap();
    let path = dir.join("xcc.toml");
    std::fs::write(
        &path,
        format!(
            "[media]\nbind_address = \"127.0.0.1\"\n\n\
             [turn]\nserver = \"127.0.0.1:{PORT}\"\ntransport = \"udp\"\nusername = \"xcc\"\n\
             password_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    path
}

/// The relayed address is on coturn's relay range, and the rest of a success is filled in.
fn assert_allocated(v: &Value, transport: &str) {
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["transport"], transport, "{v}");
    let relayed: std::net::SocketAddr = v["relayed"].as_str().unwrap().parse().unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1", "{v}");
    assert!(
        (RELAY.0..=RELAY.1).contains(&relayed.port()),
        "relayed {relayed} outside coturn's range {RELAY:?}"
    );
    assert_eq!(
        v["mapped"], v["local"],
        "no NAT on loopback: coturn saw the local end"
    );
    assert!(v["lifetime_secs"].as_u64().is_some_and(|l| l > 0), "{v}");
    assert!(v["rtt_ms"].as_f64().is_some_and(|r| r >= 0.0), "{v}");
    assert!(
        v["setup_ms"].as_f64() >= v["rtt_ms"].as_f64(),
        "setup includes the 401 round: {v}"
    );
    assert_eq!(
        v["requests"], 2,
        "the 401 round, then the authenticated Allocate: {v}"
    );
    assert_eq!(v["released"], true, "{v}");
}

#[test]
fn turn_check_over_udp_allocates_on_coturns_relay_range_from_the_configuration() {
    let Some(_coturn) = coturn(TURN) else {
        return;
    };
    // No flags: server, transport, credentials and bind address all come from the file.
    let config = config_file("udp", "secret");
    let config = config.to_str().unwrap();
    let out = xccctl(&["--json", "turn-check", "--config", config]);
    assert!(out.status.success(), "{out:?}");
    let v = stdout_json(&out);
    assert_allocated(&v, "udp");
    assert_eq!(v["server"], server(), "{v}");
    assert!(
        v["local"]
            .as_str()
            .is_some_and(|l| l.starts_with("127.0.0.1:")),
        "bound on media.bind_address: {v}"
    );

    // The human form names the relayed address and the release.
    let out = xccctl(&["turn-check", "--config", config]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("over UDP allocated 127.0.0.1:"), "{text}");
    assert!(text.contains("Released again"), "{text}");
}

#[test]
fn turn_check_over_tcp_allocates_and_releases() {
    let Some(_coturn) = coturn(TURN) else {
        return;
    };
    // The flag overrides the file's `transport = "udp"`.
    let config = config_file("tcp", "secret");
    let out = xccctl(&[
        "--json",
        "turn-check",
        "--transport",
        "tcp",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_allocated(&stdout_json(&out), "tcp");
}

#[test]
fn turn_check_with_a_wrong_password_says_the_credentials_were_refused() {
    let Some(_coturn) = coturn(TURN) else {
        return;
    };
    let config = config_file("wrong", "not-the-secret");
    let out = xccctl(&["--json", "turn-check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v = stdout_json(&out);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"], "credentials", "{v}");
    assert_eq!(v["code"], 401, "{v}");

    // Over TCP, with every value on the command line (no file read).
    let server = server();
    let out = xccctl(&[
        "turn-check",
        &server,
        "--transport",
        "tcp",
        "--username",
        "xcc",
        "--password",
        "not-the-secret",
        "--bind",
        "127.0.0.1",
        "--config",
        "/nonexistent/xcc.toml",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refused the credentials of user \"xcc\""),
        "{text}"
    );
}

#[test]
fn turn_check_with_nothing_listening_says_refused_and_fails() {
    // No coturn needed: nothing listens on NOTHING; ICMP (UDP) and a reset (TCP) say so.
    let server = format!("127.0.0.1:{NOTHING}");
    let base = [
        "turn-check",
        server.as_str(),
        "--username",
        "xcc",
        "--password",
        "secret",
        "--bind",
        "127.0.0.1",
    ];
    let out = xccctl(&[&["--json"], &base[..]].concat());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v = stdout_json(&out);
    assert_eq!(v["error"], "refused", "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("Nothing listens") && m.contains("ICMP port unreachable")),
        "{v}"
    );

    let out = xccctl(&[&base[..], &["--transport", "tcp"]].concat());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("refused the TCP connection"), "{text}");
}

#[test]
fn turn_check_of_a_silent_server_says_no_answer_after_the_failover_schedule() {
    // No coturn needed: the test holds the port and reads what arrives.
    let silent = std::net::UdpSocket::bind(("127.0.0.1", SILENT)).unwrap();
    let server = format!("127.0.0.1:{SILENT}");
    let start = Instant::now();
    let out = xccctl(&[
        "--json",
        "turn-check",
        &server,
        "--username",
        "xcc",
        "--password",
        "secret",
        "--bind",
        "127.0.0.1",
    ]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v = stdout_json(&out);
    assert_eq!(v["error"], "no_answer", "{v}");
    assert_eq!(v["requests"], 4, "Retransmission::FAILOVER: {v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("No answer from") && m.contains("in 5.5 s")),
        "{v}"
    );
    assert!(
        (Duration::from_millis(5400)..Duration::from_secs(10)).contains(&took),
        "gave up after {took:?}"
    );
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1500];
    let mut received = 0;
    while silent.recv_from(&mut buf).is_ok() {
        received += 1;
    }
    assert_eq!(received, 4, "every request reached the server's port");
}

#[test]
fn a_released_allocation_frees_the_users_quota_for_the_next_check() {
    // One allocation per user: without the release it would hold the quota for its 600 s.
    let Some(_coturn) = coturn(TurnOptions {
        user_quota: Some(1),
        ..TURN
    }) else {
        return;
    };
    let config = config_file("quota", "secret");
    let config = config.to_str().unwrap();
    let out = xccctl(&["--json", "turn-check", "--config", config]);
    assert!(out.status.success(), "{out:?}");
    // coturn deletes a released allocation on its next one-second timer: until then the quota
    // is still used, and the check says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refused = 0;
    loop {
        let out = xccctl(&["--json", "turn-check", "--config", config]);
        let v = stdout_json(&out);
        if out.status.success() {
            assert_allocated(&v, "udp");
            eprintln!("quota free again after {refused} checks refused with 486");
            break;
        }
        refused += 1;
        assert_eq!(v["error"], "quota", "{v}");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("allocation quota")),
            "{v}"
        );
        assert!(
            Instant::now() < deadline,
            "the quota was not freed by the release: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn turn_check_without_a_server_says_so_and_exits_64() {
    let dir = std::env::temp_dir().join(format!("xcc-e2e-turn-check-none-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("xcc.toml");
    std::fs::write(&path, "[media]\nbind_address = \"127.0.0.1\"\n").unwrap();
    let out = xccctl(&["turn-check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no TURN server"), "{err}");
}
