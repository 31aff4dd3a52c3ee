//! `xccctl stun-check` and `xccctl nat-type` against a real STUN server: coturn started by the
//! test on 127.0.0.1 and 127.0.0.2 (RFC 5780 needs two addresses), ports 23578/23579 (natwire's
//! range), stopped on drop. Without coturn the tests skip (`common::skip`).

mod common;

use common::coturn::Coturn;
use common::{stdout_json, xccctl};

const PORT: u16 = 23578;

/// coturn on 127.0.0.1 and 127.0.0.2 (RFC 5780 needs two addresses).
fn coturn() -> Option<Coturn> {
    Coturn::start(&["127.0.0.1", "127.0.0.2"], PORT)
}

#[test]
fn stun_check_reports_the_mapped_address_and_rtt_from_coturn() {
    let Some(_coturn) = coturn() else {
        return;
    };
    let server = format!("127.0.0.1:{PORT}");
    let out = xccctl(&["--json", "stun-check", &server, "--bind", "127.0.0.1"]);
    assert!(out.status.success(), "{out:?}");
    let v = stdout_json(&out);
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
    let v = stdout_json(&out);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"], "refused", "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

#[test]
fn nat_type_against_coturn_on_loopback_finds_no_nat() {
    let Some(_coturn) = coturn() else {
        return;
    };
    let server = format!("127.0.0.1:{PORT}");
    let out = xccctl(&["--json", "nat-type", &server, "--bind", "127.0.0.1"]);
    assert!(out.status.success(), "{out:?}");
    let v = stdout_json(&out);
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
