//! Live reconfiguration of XCC's peers (issue 8 item 5): `[stun]` servers and `[sip]` targets
//! change on a reload without a restart; an invalid change is refused with the key named.
//!
//! Ports 22900-22999 (SIP, media) and 23900-23999 (STUN), the reloadx range.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use xcc_grpc::pb;

mod common;
use common::coturn::Coturn;
use common::{Daemon, DaemonConfig};

type Satellite = pb::satellite_client::SatelliteClient<Channel>;

async fn satellite(d: &Daemon) -> Satellite {
    pb::satellite_client::SatelliteClient::new(d.channel().await)
}

async fn status(c: &mut Satellite) -> pb::StatusResponse {
    c.status(pb::StatusRequest {}).await.unwrap().into_inner()
}

/// Polls Status (bounded) until `f` holds.
async fn wait_status(
    c: &mut Satellite,
    what: &str,
    f: impl Fn(&pb::StatusResponse) -> bool,
) -> pb::StatusResponse {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = status(c).await;
        if f(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rewrites the daemon's config file with `edit`.
fn edit_config(d: &Daemon, edit: impl FnOnce(String) -> String) {
    let path = d.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let new = edit(text.clone());
    assert_ne!(new, text, "the edit changed nothing");
    std::fs::write(&path, new).unwrap();
}

async fn reload(c: &mut Satellite) -> Result<pb::ReloadResponse, tonic::Status> {
    c.reload(pb::ReloadRequest {})
        .await
        .map(tonic::Response::into_inner)
}

const COTURN_PORT: u16 = 23978;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moves_discovery_from_a_silent_server_to_coturn_without_a_restart() {
    let Some(_coturn) = Coturn::start(&["127.0.0.1"], COTURN_PORT) else {
        return;
    };
    // A socket that never answers: discovery stays on the fallback.
    let silent = UdpSocket::bind("127.0.0.1:23901").unwrap();
    let mut cfg = DaemonConfig::new("reload-stun", 22900, 8);
    cfg.public_address = None;
    cfg.sections =
        "[stun]\nservers = [\"127.0.0.1:23901\"]\nrefresh_secs = 5\nretry_secs = 1\n".to_owned();
    let d = Daemon::start_config(&cfg);
    let mut c = satellite(&d).await;
    // The silent server got asked, and nothing was learned from it.
    let mut buf = [0u8; 1500];
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    silent
        .recv_from(&mut buf)
        .expect("xccd asks the silent server");
    let s = status(&mut c).await;
    assert_eq!(
        s.public_address_source(),
        pb::PublicAddressSource::Fallback,
        "{s:?}"
    );
    let pid = d.pid();

    edit_config(&d, |t| {
        t.replace(
            "servers = [\"127.0.0.1:23901\"]",
            &format!("servers = [\"127.0.0.1:{COTURN_PORT}\"]"),
        )
    });
    let r = reload(&mut c).await.unwrap();
    assert!(
        r.applied
            .iter()
            .any(|l| l.starts_with("stun:") && l.contains(&format!("127.0.0.1:{COTURN_PORT}"))),
        "{r:?}"
    );
    assert!(r.restart_required.is_empty(), "{r:?}");
    let s = wait_status(&mut c, "STUN-learned address after the reload", |s| {
        s.public_address_source() == pb::PublicAddressSource::Stun
    })
    .await;
    assert_eq!(s.public_address, "127.0.0.1", "{s:?}");
    assert_eq!(s.stun_server, format!("127.0.0.1:{COTURN_PORT}"), "{s:?}");
    assert_eq!(s.stun_state(), pb::StunState::Ok, "{s:?}");
    assert_eq!(d.pid(), pid, "no restart");

    // Servers removed: back to the fallback, as a start without servers would be.
    edit_config(&d, |t| {
        t.replace(
            &format!("servers = [\"127.0.0.1:{COTURN_PORT}\"]"),
            "servers = []",
        )
    });
    let r = reload(&mut c).await.unwrap();
    assert!(
        r.applied.iter().any(|l| l.contains("discovery off")),
        "{r:?}"
    );
    wait_status(&mut c, "fallback after removing the servers", |s| {
        s.public_address_source() == pb::PublicAddressSource::Fallback
            && s.stun_state() == pb::StunState::Disabled
    })
    .await;
}

// ---- [sip] peers ------------------------------------------------------------------------------

const XCC_SERVER: &str = "127.0.0.1:22950";
const XCC_TRUNK: &str = "127.0.0.1:22951";
const SERVER: &str = "127.0.0.1:22952";
const PBX_A: &str = "127.0.0.1:22953";
const PBX_B: &str = "127.0.0.1:22954";

/// A UDP socket standing in for a SIP peer.
fn peer(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// Sends the server side's INVITE number `n` (an SDES-SRTP client offer) to XCC.
fn invite(server: &UdpSocket, n: u32) {
    let sdp = "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 22990 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
               a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk\r\n\
               a=sendrecv\r\n";
    let msg = format!(
        "INVITE sip:1000@{XCC_SERVER} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {SERVER};branch=z9hG4bK-reload-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=from{n}\r\n\
         To: <sip:1000@127.0.0.1>\r\n\
         Call-ID: reload-{n}@test\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@{SERVER}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    server.send_to(msg.as_bytes(), XCC_SERVER).unwrap();
}

/// The Call-IDs of INVITEs `pbx` receives within `within` (retransmissions counted once).
fn invites_at(pbx: &UdpSocket, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 65535];
    let mut ids = Vec::new();
    while Instant::now() < deadline {
        let Ok((len, _)) = pbx.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..len]);
        if !text.starts_with("INVITE ") {
            continue;
        }
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID: "))
            .unwrap_or_default()
            .trim()
            .to_owned();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// Waits (bounded) for the first INVITE at `pbx`; returns its Call-ID.
fn next_invite(pbx: &UdpSocket) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(id) = invites_at(pbx, Duration::from_millis(200)).pop() {
            return id;
        }
        assert!(Instant::now() < deadline, "no INVITE reached the PBX");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_sends_new_calls_to_the_new_pbx_and_refuses_an_invalid_target() {
    let (server, pbx_a, pbx_b) = (peer(SERVER), peer(PBX_A), peer(PBX_B));
    let mut cfg = DaemonConfig::new("reload-sip", 22960, 24);
    cfg.sections = format!(
        "[sip]\nserver_listen = \"{XCC_SERVER}\"\ntrunk_listen = \"{XCC_TRUNK}\"\n\
         server_target = \"{SERVER}\"\nserver_transport = \"udp\"\n\
         pbx_target = \"{PBX_A}\"\npbx_transport = \"udp\"\noptions_interval_secs = 0\n"
    );
    let d = Daemon::start_config(&cfg);
    let mut c = satellite(&d).await;
    let pid = d.pid();

    invite(&server, 1);
    let first = next_invite(&pbx_a);

    edit_config(&d, |t| {
        t.replace(
            &format!("pbx_target = \"{PBX_A}\""),
            &format!("pbx_target = \"{PBX_B}\""),
        )
    });
    let r = reload(&mut c).await.unwrap();
    assert!(
        r.applied
            .iter()
            .any(|l| l.starts_with("sip.pbx_target:") && l.contains(PBX_B)),
        "{r:?}"
    );
    assert!(r.restart_required.is_empty(), "{r:?}");
    d.wait_log("SIP peers replaced", Duration::from_secs(10));

    invite(&server, 2);
    let second = next_invite(&pbx_b);
    assert_ne!(second, first, "a new call");
    // PBX A hears at most retransmissions of the call it already had.
    let at_a = invites_at(&pbx_a, Duration::from_millis(500));
    assert!(at_a.iter().all(|id| *id == first), "{at_a:?}");

    // An unusable target is refused with the key named; the running peers stay.
    edit_config(&d, |t| {
        t.replace(
            &format!("pbx_target = \"{PBX_B}\""),
            "pbx_target = \"0.0.0.0:5060\"",
        )
    });
    let err = reload(&mut c).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("sip.pbx_target"), "{err:?}");
    // Switching SIP off is refused too: it takes a restart.
    edit_config(&d, |t| t.replace("pbx_target = \"0.0.0.0:5060\"\n", ""));
    let err = reload(&mut c).await.expect_err("refused");
    assert!(err.message().contains("restart"), "{err:?}");
    // A listener change is accepted as a file but waits for a restart.
    edit_config(&d, |t| {
        t.replace(
            "pbx_transport = \"udp\"",
            &format!("pbx_target = \"{PBX_B}\"\npbx_transport = \"udp\""),
        )
        .replace(XCC_TRUNK, "127.0.0.1:22955")
    });
    let r = reload(&mut c).await.unwrap();
    assert_eq!(r.restart_required, vec!["sip.trunk_listen"], "{r:?}");
    assert!(r.applied.is_empty(), "{r:?}");

    invite(&server, 3);
    let third = next_invite(&pbx_b);
    assert!(third != first && third != second, "{third}");
    assert_eq!(d.pid(), pid, "no restart");
}
