//! Live operations on a running xccd: configuration reload (SIGHUP and `Satellite.Reload`) that
//! grows and shrinks the port pool under running calls, refused reloads, and drain progress
//! (`xccctl drain --wait [--exit] [--timeout]`).
//!
//! Ports 22600-22899 (the ops range).

use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use xcc_grpc::pb;

mod common;
use common::call::media_target;
use common::{Clients, Daemon, DaemonConfig, clients};

async fn status(c: &mut Clients) -> pb::StatusResponse {
    c.satellite
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

fn sdp(port: u16, transport: &str, extra: &str) -> String {
    format!(
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} {transport} 0\r\na=rtpmap:0 PCMU/8000\r\n{extra}a=sendrecv\r\n"
    )
}

fn phone() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// A client-offered SRTP call answered by a plain-RTP PBX. The test only drives PBX -> client
/// (XCC encrypts towards the client's signalled address), which proves the call's sockets forward.
struct Call {
    id: u64,
    client: UdpSocket,
    pbx: UdpSocket,
    /// XCC's PBX-leg RTP address (where the PBX sends).
    pbx_target: SocketAddr,
    /// XCC's client-leg RTP port.
    client_port: u16,
    seq: u16,
}

async fn try_call(c: &mut Clients, key: &str) -> Result<Call, tonic::Status> {
    let (client, pbx) = (phone(), phone());
    let crypto = format!(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"
    );
    let offer = sdp(client.local_addr().unwrap().port(), "RTP/SAVP", &crypto);
    let s = c
        .sessions
        .create_session(pb::CreateSessionRequest {
            idempotency_key: key.into(),
            offer_from: pb::Side::Client as i32,
            sdp: offer,
        })
        .await?
        .into_inner();
    let pbx_target = media_target(&s.sdp);
    let answer = sdp(pbx.local_addr().unwrap().port(), "RTP/AVP", "");
    let a = c
        .sessions
        .answer_session(pb::AnswerSessionRequest {
            session_id: s.session_id,
            sdp: answer,
        })
        .await?
        .into_inner();
    Ok(Call {
        id: s.session_id,
        client,
        pbx,
        pbx_target,
        client_port: media_target(&a.sdp).port(),
        seq: 1,
    })
}

async fn call(c: &mut Clients, key: &str) -> Call {
    try_call(c, key).await.unwrap()
}

impl Call {
    /// Sends `n` RTP packets from the PBX, 5 ms apart, and counts what reaches the client.
    fn pbx_to_client(&mut self, n: usize) -> usize {
        let mut got = 0;
        let mut buf = [0u8; 1500];
        for _ in 0..n {
            let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x22, 0x22];
            pkt[2..4].copy_from_slice(&self.seq.to_be_bytes());
            pkt.extend_from_slice(&[0x22; 160]);
            self.pbx.send_to(&pkt, self.pbx_target).unwrap();
            self.seq = self.seq.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(5));
            while self.client.recv_from(&mut buf).is_ok() {
                got += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        while self.client.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        got
    }
}

/// The DSCP of the next packet on `sock` (IP_RECVTOS must be on), waiting up to 2 s.
fn next_dscp(sock: &UdpSocket) -> Option<u8> {
    use std::os::fd::AsRawFd;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 1500];
    // Room for one cmsghdr with a one-byte payload, aligned.
    let mut control = [0u64; 8];
    while Instant::now() < deadline {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; every pointer below outlives the recvmsg call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: a valid socket and a msghdr whose buffers are live and sized as declared.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        // SAFETY: walking the control buffer recvmsg filled, with the libc CMSG helpers.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_TOS {
                    return Some(*libc::CMSG_DATA(c) >> 2);
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        return None;
    }
    None
}

fn recv_tos(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a live fd and an int option value.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVTOS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IP_RECVTOS");
}

/// Sends one PBX packet and returns the DSCP XCC put on what reached the client.
fn dscp_towards_client(call: &mut Call) -> Option<u8> {
    let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x22, 0x22];
    pkt[2..4].copy_from_slice(&call.seq.to_be_bytes());
    pkt.extend_from_slice(&[0x22; 160]);
    call.seq = call.seq.wrapping_add(1);
    call.pbx.send_to(&pkt, call.pbx_target).unwrap();
    next_dscp(&call.client)
}

/// Rewrites the daemon's config file with `edit` (on the text as the harness wrote it).
fn edit_config(d: &Daemon, edit: impl FnOnce(String) -> String) {
    let path = d.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let new = edit(text.clone());
    assert_ne!(new, text, "the edit changed nothing");
    std::fs::write(&path, new).unwrap();
}

/// Polls Status (bounded) until `f` holds.
async fn wait_status(
    c: &mut Clients,
    what: &str,
    f: impl Fn(&pb::StatusResponse) -> bool,
) -> pb::StatusResponse {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(c).await;
        if f(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinking_the_pool_keeps_a_call_on_a_removed_port_until_it_ends() {
    // 16 ports: 22600-22615, four calls.
    let d = Daemon::start_config(&DaemonConfig::new("live-shrink", 22600, 16));
    let mut c = clients(&d).await;
    let mut a = call(&mut c, "a").await;
    assert_eq!(a.client_port, 22600, "the first call takes the first pairs");
    assert!(a.pbx_to_client(20) >= 15, "media before the reload");

    // Keep only 22608-22615: the call's ports 22600/22602 leave the range.
    edit_config(&d, |t| t.replace("port_min = 22600", "port_min = 22608"));
    let r = c
        .satellite
        .reload(pb::ReloadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.applied.len(), 1, "{r:?}");
    assert!(
        r.applied[0].contains("22600-22615 -> 22608-22615")
            && r.applied[0].contains("4 ports close"),
        "{r:?}"
    );
    assert!(r.restart_required.is_empty(), "{r:?}");
    let s = status(&mut c).await;
    assert_eq!(
        (s.ports_total, s.ports_free, s.ports_retiring),
        (8, 8, 4),
        "{s:?}"
    );

    // The call continues on its removed ports.
    assert!(a.pbx_to_client(20) >= 15, "media after the reload");
    // New calls come from the new range only; two fit, the third finds the pool exhausted.
    let b = call(&mut c, "b").await;
    let b2 = call(&mut c, "b2").await;
    assert!(b.client_port >= 22608 && b2.client_port >= 22608);
    let err = try_call(&mut c, "c").await.err().expect("pool exhausted");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    // Ending the call closes its ports for good: nothing retiring, the OS port is free, and the
    // pool still only holds the new range.
    c.calls
        .hang_up(pb::HangUpRequest { call_id: a.id })
        .await
        .unwrap();
    let s = wait_status(&mut c, "retiring ports gone", |s| {
        s.ports_retiring == 0 && s.calls == 2
    })
    .await;
    assert_eq!((s.ports_total, s.ports_used), (8, 8), "{s:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while UdpSocket::bind("127.0.0.1:22600").is_err() {
        assert!(Instant::now() < deadline, "the removed port was not closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = try_call(&mut c, "d")
        .await
        .err()
        .expect("22600 is not handed out again");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    drop((b, b2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_the_pool_on_sighup_hands_out_the_new_ports_at_once() {
    // 4 ports: one call.
    let d = Daemon::start_config(&DaemonConfig::new("live-grow", 22700, 4));
    let mut c = clients(&d).await;
    let mut a = call(&mut c, "a").await;
    recv_tos(&a.client);
    assert_eq!(
        dscp_towards_client(&mut a),
        Some(46),
        "EF before the reload"
    );
    let err = try_call(&mut c, "b").await.err().expect("pool full");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);

    edit_config(&d, |t| {
        t.replace("port_max = 22703", "port_max = 22707")
            .replace("[media]\n", "[media]\ndscp = 34\n")
            .replace("level = \"debug\"", "level = \"info\"")
    });
    d.signal(libc::SIGHUP);
    d.wait_log("configuration reloaded", Duration::from_secs(10));
    let log = d.log();
    for change in [
        "22700-22703 -> 22700-22707",
        "media.dscp: 46 -> 34",
        "log.level",
    ] {
        assert!(log.contains(change), "{change} not logged:\n{log}");
    }
    let mut b = call(&mut c, "b").await;
    assert_eq!(b.client_port, 22704, "a new port, at once");
    recv_tos(&b.client);
    assert_eq!(
        dscp_towards_client(&mut b),
        Some(34),
        "the new call has the new DSCP"
    );
    assert_eq!(
        dscp_towards_client(&mut a),
        Some(46),
        "the running call keeps its DSCP"
    );
    assert!(b.pbx_to_client(20) >= 15, "media on the new ports");
    let s = status(&mut c).await;
    assert_eq!((s.ports_total, s.ports_used), (8, 8), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_is_refused_with_the_key_and_the_running_config_stays() {
    let d = Daemon::start_config(&DaemonConfig::new("live-invalid", 22750, 8));
    let mut c = clients(&d).await;
    let before = status(&mut c).await;

    edit_config(&d, |t| {
        t.replace("port_max = 22757", "port_max = 22799")
            .replace("[media]\n", "[media]\ndscp = 99\n")
    });
    let err = c
        .satellite
        .reload(pb::ReloadRequest {})
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("media.dscp"), "{err:?}");
    d.wait_log("reload refused", Duration::from_secs(5));
    // The same through xccctl: exit 1, the reason on stderr.
    let out = wait_output(xccctl(&d, &["reload"]), Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("media.dscp"), "{stderr}");
    let after = status(&mut c).await;
    assert_eq!(
        after.ports_total, before.ports_total,
        "the pool did not grow"
    );
    let _a = call(&mut c, "a").await;
    let _b = call(&mut c, "b").await;
    assert!(try_call(&mut c, "c").await.is_err(), "still 8 ports");

    // A valid file with a key that only a restart applies: reported, not applied.
    edit_config(&d, |t| {
        t.replace("dscp = 99\n", "")
            .replace("workers = 1", "workers = 2")
    });
    let r = c
        .satellite
        .reload(pb::ReloadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.restart_required, vec!["media.workers"], "{r:?}");
    let out = wait_output(xccctl(&d, &["--json", "reload"]), Duration::from_secs(20));
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["restart_required"],
        serde_json::json!(["media.workers"]),
        "{v}"
    );
    assert_eq!(
        v["applied"],
        serde_json::json!([]),
        "nothing new to apply: {v}"
    );
    assert_eq!(status(&mut c).await.workers, 1);
    assert!(r.applied.iter().any(|l| l.contains("22750-22799")), "{r:?}");
}

/// Runs the real xccctl against `d` in the background.
fn xccctl(d: &Daemon, args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_xccctl"))
        .arg("--addr")
        .arg(&d.endpoint)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (bounded) for a child on a thread, so the wait is an event.
fn wait_output(child: std::process::Child, within: Duration) -> std::process::Output {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    rx.recv_timeout(within)
        .expect("xccctl finished in time")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_wait_prints_progress_and_exit_stops_xccd_when_idle() {
    let mut cfg = DaemonConfig::new("live-drain-exit", 22800, 16);
    cfg.grace_secs = 120;
    let mut d = Daemon::start_config(&cfg);
    let mut c = clients(&d).await;
    let a = call(&mut c, "a").await;
    let b = call(&mut c, "b").await;

    let mut ctl = xccctl(
        &d,
        &["--json", "drain", "--wait", "--exit", "--timeout", "60"],
    );
    // xccctl's lines as they come, so the test can wait for each progress line.
    let (tx, lines) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = ctl.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(serde_json::from_str(&line).unwrap_or(serde_json::Value::Null));
        }
    });
    let next_line = || {
        lines
            .recv_timeout(Duration::from_secs(10))
            .expect("xccctl prints a line within 10 s")
    };
    let first = next_line();
    assert_eq!(first["calls"], 2, "{first}");
    assert_eq!(first["exit_when_idle"], true, "{first}");
    let s = wait_status(&mut c, "exit-when-idle drain", |s| {
        s.draining && s.exit_when_idle && s.drain_grace_left_secs > 0
    })
    .await;
    assert!(s.drain_grace_left_secs <= 120, "{s:?}");
    assert_eq!(s.calls, 2);
    let refused = try_call(&mut c, "late").await.err().expect("refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let resume = c
        .satellite
        .resume(pb::ResumeRequest {})
        .await
        .expect_err("an exit cannot be resumed");
    assert_eq!(resume.code(), tonic::Code::FailedPrecondition, "{resume:?}");

    c.calls
        .hang_up(pb::HangUpRequest { call_id: a.id })
        .await
        .unwrap();
    let progress = next_line();
    assert_eq!(progress["calls"], 1, "progress printed: {progress}");
    assert!(d.is_running(), "one call left: xccd still runs");
    c.calls
        .hang_up(pb::HangUpRequest { call_id: b.id })
        .await
        .unwrap();

    let status = d.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", d.log());
    let last = next_line();
    assert!(
        last["calls"] == 0 || last["exited"] == true,
        "ends at zero or with xccd gone: {last}"
    );
    let out = wait_output(ctl, Duration::from_secs(20));
    assert!(out.status.success(), "{out:?}");
    assert!(d.log().contains("drain complete: no calls left"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_wait_times_out_with_75_and_xccd_keeps_draining() {
    let mut d = Daemon::start_config(&DaemonConfig::new("live-drain-timeout", 22850, 8));
    let mut c = clients(&d).await;
    let mut a = call(&mut c, "a").await;
    let out = wait_output(
        xccctl(&d, &["drain", "--wait", "--timeout", "1"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 calls still running"),
        "{out:?}"
    );
    assert!(d.is_running());
    let s = status(&mut c).await;
    assert!(s.draining && !s.exit_when_idle && s.calls == 1, "{s:?}");
    assert!(a.pbx_to_client(10) >= 5, "the call continues");
}
