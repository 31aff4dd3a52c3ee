//! xcc-load end to end: the real xccd on its own control port and media ports, the real xcc-load
//! binary placing calls through it, and the bare forwarder reference.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod common;
use common::{Daemon, DaemonConfig};

/// xccd at log level info (debug logging would load the relay under test).
fn start(name: &str, pool_min: u16, pool_len: u16) -> Daemon {
    Daemon::start_config(&DaemonConfig {
        log_level: "info".into(),
        grace_secs: 5,
        ..DaemonConfig::new(&format!("load-{name}"), pool_min, pool_len)
    })
}

/// Phones' ports for every run here: inside the load tests' range (25000-25999), not xcc-load's
/// default 26000-29999, which overlaps xcc-core's test ports. Concurrent runs share it safely:
/// phones skip ports in use.
const PHONE_PORTS: &str = "25700-25899";

/// Runs xcc-load to completion (bounded by its own --duration; the test harness bounds the rest).
fn xcc_load(args: &[&str]) -> Output {
    let measuring = matches!(args.first(), Some(&("grpc" | "bare" | "sweep")));
    let phones: &[&str] = if measuring {
        &["--phone-ports", PHONE_PORTS]
    } else {
        &[]
    };
    Command::new(env!("CARGO_BIN_EXE_xcc-load"))
        .args(args)
        .args(phones)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs xcc-load, which must succeed, and returns its JSON report.
fn report_of(args: &[&str]) -> Value {
    let out = xcc_load(args);
    assert!(
        out.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&out)
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}); stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn assert_clean_media(r: &Value, calls: u64) {
    let media = &r["media"];
    assert_eq!(r["calls_established"], calls, "report: {r:#}");
    assert_eq!(media["streams"], 2 * calls);
    assert_eq!(media["streams_without_packets"], 0, "report: {r:#}");
    assert_eq!(media["lost"], 0, "no loss on loopback: {r:#}");
    assert!(media["packets_sent"].as_u64().unwrap() >= 2 * calls * 50);
    assert_eq!(media["packets_received"], media["packets_sent"]);
    for q in ["p50", "p99", "p999", "max"] {
        let v = media["latency_us"][q].as_f64().unwrap();
        assert!(v > 0.0, "latency {q} must be positive: {r:#}");
        assert!(
            media["receive_delay_us"][q].is_number(),
            "receive delay {q} measured from kernel stamps: {r:#}"
        );
    }
    assert_eq!(
        media["arrival_fallbacks"], 0,
        "every phone socket asks for kernel receive stamps: {r:#}"
    );
    let per_call = r["calls"].as_array().unwrap();
    assert_eq!(per_call.len() as u64, calls);
    for c in per_call {
        for dir in ["to_pbx", "to_client"] {
            assert!(c[dir]["received"].as_u64().unwrap() > 0, "{dir} of {c}");
        }
    }
}

#[test]
fn grpc_calls_through_xccd_carry_srtp_and_rtp_without_loss() {
    let d = start("grpc", 25_000, 40);
    let pid = d.pid().to_string();
    let out = xcc_load(&[
        "grpc",
        "--calls",
        "3",
        "--duration",
        "2",
        "--json",
        "--addr",
        &d.endpoint,
        "--xccd-pid",
        &pid,
    ]);
    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{}\nxccd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let r = json_of(&out);
    assert_eq!(r["mode"], "grpc");
    assert_clean_media(&r, 3);
    assert_eq!(r["media"]["auth_failures"], 0);
    let setup = &r["setup_ms"];
    assert!(
        setup["max"].as_f64().unwrap() > 0.0,
        "setup time measured: {r:#}"
    );
    for c in r["calls"].as_array().unwrap() {
        assert!(c["session_id"].as_u64().unwrap() > 0);
        assert!(c["setup_ms"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(r["relay_cpu"]["pid"], d.pid());
    let counters = &r["relay_counters"];
    assert_eq!(counters["sessions"], 3, "xccd's counters read back: {r:#}");
    assert!(counters["client"]["packets_in"].as_u64().unwrap() > 0);
    assert!(counters["pbx"]["packets_out"].as_u64().unwrap() > 0);
    assert_eq!(r["release_failures"], 0);
}

#[test]
fn grpc_run_with_bare_reference_reports_cpu_ratio() {
    let d = start("ratio", 25_100, 40);
    let pid = d.pid().to_string();
    let r = report_of(&[
        "grpc",
        "--calls",
        "2",
        "--duration",
        "1",
        "--json",
        "--addr",
        &d.endpoint,
        "--xccd-pid",
        &pid,
        "--bare-ports",
        "25200-25203",
    ]);
    let reference = &r["reference"];
    assert_eq!(reference["mode"], "bare");
    assert_clean_media(reference, 2);
    assert_ne!(
        reference["relay_cpu"]["pid"],
        d.pid(),
        "the forwarder is its own process"
    );
    assert!(
        r["cpu_ratio_to_reference"].is_number(),
        "ratio stated: {r:#}"
    );
    for q in ["p50", "p99", "p999"] {
        let added = r["added_latency_us"][q].as_f64().unwrap();
        let own = r["media"]["latency_us"][q].as_f64().unwrap();
        let bare = reference["media"]["latency_us"][q].as_f64().unwrap();
        assert!(
            (added - (own - bare)).abs() < 1e-6,
            "added {q} is xccd's minus the forwarder's: {r:#}"
        );
    }
    assert!(
        reference["added_latency_us"].is_null(),
        "the reference has no reference of its own"
    );
}

#[test]
fn bare_forwarder_forwards_both_ways() {
    let r = report_of(&[
        "bare",
        "--pairs",
        "4",
        "--duration",
        "1",
        "--json",
        "--ports",
        "25300-25307",
    ]);
    assert_eq!(r["mode"], "bare");
    assert_clean_media(&r, 4);
    assert!(
        r["relay_cpu"]["cpu_seconds"].is_number(),
        "forwarder CPU measured: {r:#}"
    );
}

#[test]
fn sharded_receivers_account_for_every_packet() {
    let r = report_of(&[
        "bare",
        "--pairs",
        "5",
        "--duration",
        "1",
        "--rx-threads",
        "3",
        "--json",
        "--ports",
        "25320-25329",
    ]);
    assert_eq!(r["media"]["rx_threads"], 3, "{r:#}");
    // Calls 0..5 over 3 shards: every call's both streams measured, none misattributed.
    assert_clean_media(&r, 5);
    assert_eq!(r["media"]["foreign"], 0, "{r:#}");
    assert_eq!(
        r["media"]["phone_socket_drops"], 0,
        "the phones' sockets are read from /proc/net/udp: {r:#}"
    );
    assert!(r["media"]["relay_socket_drops"].is_u64(), "{r:#}");
    for w in ["sender_cpu_wait_pct", "receiver_cpu_wait_pct"] {
        assert!(r["media"][w].is_number(), "run-queue wait read: {r:#}");
    }
}

#[test]
fn argument_errors_exit_2_with_a_message() {
    for (args, needle) in [
        (&["grpc", "--duration", "2"][..], "--calls"),
        (&["grpc", "--calls", "0", "--duration", "2"][..], "--calls"),
        (
            &[
                "grpc",
                "--calls",
                "3",
                "--duration",
                "2",
                "--addr",
                "http://192.0.2.1:3280",
            ][..],
            "loopback",
        ),
        (
            &[
                "bare",
                "--pairs",
                "4",
                "--duration",
                "1",
                "--ports",
                "25301-25308",
            ][..],
            "even",
        ),
        (
            &[
                "bare",
                "--pairs",
                "4",
                "--duration",
                "1",
                "--ports",
                "25300-25303",
            ][..],
            "pairs",
        ),
        (
            &[
                "sweep",
                "--from",
                "5",
                "--to",
                "1",
                "--step",
                "1",
                "--duration",
                "1",
            ][..],
            "below",
        ),
        (
            &[
                "sip",
                "--calls",
                "3",
                "--duration",
                "2",
                "--server",
                "192.0.2.1:4901",
            ][..],
            "loopback",
        ),
        (
            &[
                "grpc",
                "--calls",
                "3",
                "--duration",
                "2",
                "--relay-cpu",
                "0",
            ][..],
            "--xccd-pid",
        ),
    ] {
        let out = xcc_load(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: stderr:\n{stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: stderr lacks {needle:?}:\n{stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

#[test]
fn sweep_runs_every_step_and_reports_capacity_fields() {
    let d = start("sweep", 25_400, 40);
    let pid = d.pid().to_string();
    let r = report_of(&[
        "sweep",
        "--from",
        "1",
        "--to",
        "3",
        "--step",
        "2",
        "--duration",
        "1",
        "--pause",
        "0",
        "--json",
        "--addr",
        &d.endpoint,
        "--xccd-pid",
        &pid,
    ]);
    let steps = r["steps"].as_array().unwrap();
    let counts: Vec<u64> = steps.iter().map(|s| s["calls"].as_u64().unwrap()).collect();
    assert_eq!(counts, [1, 3]);
    for s in steps {
        assert_eq!(s["established"], s["calls"], "{s}");
        assert_eq!(s["loss_pct"], 0.0, "{s}");
        assert!(s["relay_cores_per_1000_calls"].is_number(), "{s}");
        assert!(s["receive_delay_p99_us"].is_number(), "{s}");
        assert!(
            s["added_latency_p99_us"].is_null(),
            "no --bare-ports, no added latency: {s}"
        );
    }
    assert!(r.get("capacity").is_some() && r["load_limited"].is_boolean());
}

/// With `--bare-ports` every step also judges the bare forwarder by the same rule, so the
/// report states both capacities and their ratio (issue 7: xccd's >= 90 % of the forwarder's).
#[test]
fn sweep_with_the_reference_judges_the_bare_forwarder_by_the_same_rule() {
    let d = start("sweep-bare", 25_440, 40);
    let pid = d.pid().to_string();
    let r = report_of(&[
        "sweep",
        "--from",
        "2",
        "--to",
        "2",
        "--step",
        "1",
        "--duration",
        "1",
        "--json",
        "--addr",
        &d.endpoint,
        "--xccd-pid",
        &pid,
        "--bare-ports",
        "25610-25613",
    ]);
    let step = &r["steps"][0];
    let bare_ok = step["bare_within_capacity"]
        .as_bool()
        .unwrap_or_else(|| panic!("no bare verdict: {step}"));
    assert!(step["bare_cores_per_1000_calls"].is_number(), "{step}");
    assert_eq!(
        step["loss_pct"], 0.0,
        "two calls on loopback lose nothing: {step}"
    );
    // The verdicts themselves depend on this machine's scheduling (p99 < 5 ms over 200 packets);
    // the capacities must follow from them, whichever they are.
    let xccd_ok = step["within_capacity"].as_bool().unwrap();
    let capacity = |ok: bool| {
        if ok {
            serde_json::json!(2)
        } else {
            serde_json::Value::Null
        }
    };
    assert_eq!(r["bare_capacity"], capacity(bare_ok), "{r}");
    assert_eq!(r["capacity"], capacity(xccd_ok), "{r}");
    let ratio = if xccd_ok && bare_ok {
        serde_json::json!(1.0)
    } else {
        serde_json::Value::Null
    };
    assert_eq!(r["capacity_ratio_to_reference"], ratio, "{r}");
}

#[test]
fn repeated_runs_report_the_spread_of_the_cpu_ratio() {
    let d = start("repeat", 25_500, 40);
    let pid = d.pid().to_string();
    let r = report_of(&[
        "grpc",
        "--calls",
        "1",
        "--duration",
        "1",
        "--repeat",
        "2",
        "--json",
        "--addr",
        &d.endpoint,
        "--xccd-pid",
        &pid,
        "--bare-ports",
        "25600-25601",
    ]);
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        assert_clean_media(run, 1);
    }
    let spread = &r["cpu_ratio"];
    assert_eq!(spread["samples"], 2, "{r:#}");
    let (min, median, max) = (
        spread["min"].as_f64().unwrap(),
        spread["median"].as_f64().unwrap(),
        spread["max"].as_f64().unwrap(),
    );
    assert!(min <= median && median <= max, "{r:#}");
    assert_eq!(
        r["added_latency_p99_us"]["samples"], 2,
        "added p99 latency over both runs: {r:#}"
    );
}
