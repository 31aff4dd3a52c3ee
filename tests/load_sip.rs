//! `xcc-load sip` end to end: the real xccd with SIP on loopback ports of the load tests' range,
//! the real xcc-load playing the controlling server (UAC) and the PBX (UAS on the trunk).

use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod common;
use common::{Daemon, DaemonConfig};

/// XCC's server-side SIP listener (4901's stand-in).
const XCC_SERVER: &str = "127.0.0.1:25940";
/// XCC's trunk listener (5060's stand-in).
const XCC_TRUNK: &str = "127.0.0.1:25941";
/// xcc-load's controlling server (XCC's `server_target`).
const LOAD_UAC: &str = "127.0.0.1:25942";
/// xcc-load's PBX (XCC's `pbx_target`).
const LOAD_PBX: &str = "127.0.0.1:25943";

fn sip_daemon() -> Daemon {
    let mut cfg = DaemonConfig::new("load-sip", 25_950, 40);
    cfg.log_level = "info".into();
    cfg.sections = format!(
        "[sip]\nserver_listen = \"{XCC_SERVER}\"\ntrunk_listen = \"{XCC_TRUNK}\"\n\
         server_target = \"{LOAD_UAC}\"\nserver_transport = \"udp\"\n\
         pbx_target = \"{LOAD_PBX}\"\npbx_transport = \"udp\"\noptions_interval_secs = 0\n"
    );
    Daemon::start_config(&cfg)
}

fn xcc_load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xcc-load"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn sip_calls_through_xccd_carry_srtp_and_rtp_and_end_with_bye_both_ways() {
    let d = sip_daemon();
    let pid = d.pid().to_string();
    let out = xcc_load(&[
        "sip",
        "--calls",
        "3",
        "--rate",
        "20",
        "--duration",
        "2",
        "--server",
        XCC_SERVER,
        "--trunk",
        LOAD_PBX,
        "--uac",
        LOAD_UAC,
        "--xccd-pid",
        &pid,
        "--phone-ports",
        "25700-25899",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{}\nstdout:\n{}\nxccd log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        d.log()
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mode"], "sip");
    assert_eq!(r["calls_established"], 3, "{r:#}");
    let media = &r["media"];
    assert_eq!(media["lost"], 0, "no loss on loopback: {r:#}");
    assert_eq!(
        media["auth_failures"], 0,
        "SRTP keys from the SDP exchange: {r:#}"
    );
    assert_eq!(media["streams_without_packets"], 0, "{r:#}");
    assert!(media["packets_sent"].as_u64().unwrap() >= 3 * 2 * 50);
    assert_eq!(media["packets_received"], media["packets_sent"]);
    assert_eq!(
        media["arrival_fallbacks"], 0,
        "SIP mode's phones ask for kernel receive stamps too: {r:#}"
    );
    assert!(
        r["setup_ms"]["max"].as_f64().unwrap() > 0.0,
        "INVITE -> 200 measured: {r:#}"
    );
    assert_eq!(r["release_failures"], 0, "every BYE answered 200: {r:#}");
    assert_eq!(
        r["sip"]["trunk_byes"], 3,
        "XCC relayed each hang-up to the PBX: {r:#}"
    );
    assert_eq!(r["relay_cpu"]["pid"], d.pid());
}
