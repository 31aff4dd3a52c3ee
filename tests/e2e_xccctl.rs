//! xccctl, the real binary, against the control API served in-process over loopback with a media
//! plane that has no calls (the daemon-level flows are in e2e_grpc.rs).

use std::process::Output;
use std::sync::Arc;
use std::time::Instant;

use xcc_core::ids::{CallId, LegSide};
use xcc_core::media::{AllocatedCall, CallSnapshot, LegConfig, PoolStatus};
use xcc_grpc::control::ControlState;
use xcc_grpc::events::EventHub;
use xcc_grpc::media::MediaPlane;
use xcc_grpc::service::ControlPlane;
use xcc_grpc::session::{Advertised, SessionTable};

/// A media plane with no calls and a pool of 100 ports.
struct Idle;

impl MediaPlane for Idle {
    fn allocate(&self) -> xcc_core::Result<AllocatedCall> {
        Err(xcc_core::Error::PoolExhausted { free: 0, needed: 4 })
    }
    fn configure_leg(&self, call: CallId, _: LegSide, _: LegConfig) -> xcc_core::Result<()> {
        Err(xcc_core::Error::UnknownCall(call))
    }
    fn release(&self, call: CallId) -> xcc_core::Result<()> {
        Err(xcc_core::Error::UnknownCall(call))
    }
    fn snapshot(&self, call: CallId) -> xcc_core::Result<CallSnapshot> {
        Err(xcc_core::Error::UnknownCall(call))
    }
    fn calls(&self) -> Vec<CallSnapshot> {
        Vec::new()
    }
    fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            total: 100,
            free: 96,
            used: 4,
            quarantined: 0,
        }
    }
    fn workers(&self) -> usize {
        2
    }
}

async fn serve() -> String {
    serve_with_hub().await.0
}

async fn serve_with_hub() -> (String, EventHub) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    let state = Arc::new(ControlState::new(Instant::now(), reporter));
    state.set_ready().await;
    let advertised = Advertised {
        client: [127, 0, 0, 1].into(),
        pbx: [127, 0, 0, 1].into(),
    };
    let sessions = Arc::new(SessionTable::new(Arc::new(Idle), advertised, Vec::new()));
    let hub = EventHub::new();
    let plane = ControlPlane {
        sessions,
        state,
        hub: hub.clone(),
    };
    tokio::spawn(async move {
        xcc_grpc::server::serve(plane, health, listener, None, std::future::pending()).await
    });
    (format!("http://{addr}"), hub)
}

async fn xccctl(addr: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_xccctl"));
    cmd.arg("--addr").arg(addr).args(args);
    cmd.output().await.unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn status_as_json_and_as_a_table() {
    let addr = serve().await;
    let out = xccctl(&addr, &["--json", "status"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["ports_total"], 100);
    assert_eq!(v["ports_used"], 4);
    assert_eq!(v["workers"], 2);
    assert_eq!(v["draining"], false);
    let out = xccctl(&addr, &["status"]).await;
    let text = stdout(&out);
    assert!(text.starts_with("FIELD"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ports_free") && l.trim_end().ends_with("96")),
        "{text}"
    );
}

#[tokio::test]
async fn drain_and_resume_change_status() {
    let addr = serve().await;
    let out = xccctl(&addr, &["drain"]).await;
    assert!(out.status.success());
    assert!(stdout(&out).contains("draining"));
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&xccctl(&addr, &["--json", "status"]).await)).unwrap();
    assert_eq!(v["draining"], true);
    assert!(xccctl(&addr, &["resume"]).await.status.success());
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&xccctl(&addr, &["--json", "status"]).await)).unwrap();
    assert_eq!(v["draining"], false);
}

#[tokio::test]
async fn calls_is_an_empty_json_list_and_unknown_call_fails() {
    let addr = serve().await;
    let out = xccctl(&addr, &["--json", "calls"]).await;
    assert_eq!(stdout(&out).trim(), "[]");
    let out = xccctl(&addr, &["hangup", "42"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("call_id") && err.to_lowercase().contains("not found"),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_daemon_is_an_error_not_a_hang() {
    // A port nothing listens on: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = xccctl(&format!("http://127.0.0.1:{port}"), &["status"]).await;
    assert!(!out.status.success());
}

#[tokio::test]
async fn watch_prints_one_json_line_per_event() {
    use tokio::io::AsyncBufReadExt;
    let (addr, hub) = serve_with_hub().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_xccctl"))
        .args(["--addr", &addr, "--json", "watch"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // xccctl subscribes at some point after start: publish until a line arrives (bounded).
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    let line = loop {
        hub.publish(
            CallId(9),
            xcc_grpc::pb::event::Kind::Answered(xcc_grpc::pb::CallAnswered {}),
        );
        let next =
            tokio::time::timeout(std::time::Duration::from_millis(100), lines.next_line()).await;
        if let Ok(line) = next {
            break line.unwrap().expect("a line before EOF");
        }
        assert!(Instant::now() < deadline, "xccctl watch printed nothing");
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "answered");
    assert_eq!(v["call_id"], 9);
    hub.close();
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "watch ends cleanly when the server closes the feed"
    );
}
