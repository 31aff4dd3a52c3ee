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
