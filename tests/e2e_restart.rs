//! Calls survive a crash: xccd is killed with SIGKILL mid-call and restarted in the same directory
//! (as systemd's Restart= would); the call store brings the calls back on their ports, with their
//! keys, latches, SRTP rollover counters and gRPC sessions. Ended calls stay ended; a corrupt or
//! truncated record is set aside and xccd still starts.
//!
//! Ports 22000-22299 (the ops range).

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use webrtc_srtp::context::Context;
use xcc_grpc::pb;

mod common;
use common::call::{media_target, rtp_filled, srtp_context};
use common::{Clients, Daemon, DaemonConfig, clients};

const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";

fn sdp(port: u16, transport: &str, extra: &str) -> String {
    format!(
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} {transport} 0\r\na=rtpmap:0 PCMU/8000\r\n{extra}a=sendrecv\r\n"
    )
}

fn xcc_key(sdp: &str) -> Vec<u8> {
    let line = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .expect("a=crypto in XCC's answer");
    let inline = line.split_whitespace().nth(2).unwrap();
    let b64 = inline.strip_prefix("inline:").unwrap().split('|').next();
    base64::engine::general_purpose::STANDARD
        .decode(b64.unwrap())
        .unwrap()
}

fn phone() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// A client-offered call with an SRTP softphone and a plain-RTP PBX that keep their state (SRTP
/// contexts, sequence numbers) across xccd's restarts, as real phones do.
struct Call {
    id: u64,
    client: UdpSocket,
    pbx: UdpSocket,
    client_target: SocketAddr,
    pbx_target: SocketAddr,
    client_tx: Context,
    client_rx: Context,
    /// Next sequence number of both phones.
    seq: u16,
}

async fn call(c: &mut Clients, key: &str, first_seq: u16) -> Call {
    let (client, pbx) = (phone(), phone());
    let client_key: [u8; 30] = rand::random();
    let crypto = format!(
        "a=crypto:1 {SUITE} inline:{}\r\n",
        base64::engine::general_purpose::STANDARD.encode(client_key)
    );
    let offer = sdp(client.local_addr().unwrap().port(), "RTP/SAVP", &crypto);
    let s = c
        .sessions
        .create_session(pb::CreateSessionRequest {
            idempotency_key: key.into(),
            offer_from: pb::Side::Client as i32,
            sdp: offer,
        })
        .await
        .unwrap()
        .into_inner();
    let pbx_target = media_target(&s.sdp);
    let answer = sdp(pbx.local_addr().unwrap().port(), "RTP/AVP", "");
    let a = c
        .sessions
        .answer_session(pb::AnswerSessionRequest {
            session_id: s.session_id,
            sdp: answer,
        })
        .await
        .unwrap()
        .into_inner();
    Call {
        id: s.session_id,
        client_target: media_target(&a.sdp),
        pbx_target,
        client_tx: srtp_context(&client_key),
        client_rx: srtp_context(&xcc_key(&a.sdp)),
        client,
        pbx,
        seq: first_seq,
    }
}

/// What one exchange saw.
#[derive(Debug, Default)]
struct Flow {
    /// Plain RTP from the client, received by the PBX.
    at_pbx: usize,
    /// SRTP from the PBX that the client authenticated.
    at_client: usize,
    /// SRTP the client could not authenticate (a lost ROC shows up here).
    client_auth_failures: usize,
    /// When each phone first received media.
    first_at_pbx: Option<Instant>,
    first_at_client: Option<Instant>,
}

impl Call {
    /// Sends `packets` per direction, one pair every `gap`, and reads whatever arrives.
    fn exchange(&mut self, packets: usize, gap: Duration) -> Flow {
        let mut flow = Flow::default();
        let mut buf = [0u8; 1500];
        let mut read = |flow: &mut Flow, c: &mut Call| {
            while let Ok((len, _)) = c.pbx.recv_from(&mut buf) {
                assert_eq!(&buf[12..len], &[0x11; 160], "PBX gets the client's audio");
                flow.at_pbx += 1;
                flow.first_at_pbx.get_or_insert_with(Instant::now);
            }
            while let Ok((len, _)) = c.client.recv_from(&mut buf) {
                match c.client_rx.decrypt_rtp(&buf[..len]) {
                    Ok(plain) => {
                        assert_eq!(&plain[12..], &[0x22; 160], "client gets the PBX's audio");
                        flow.at_client += 1;
                        flow.first_at_client.get_or_insert_with(Instant::now);
                    }
                    Err(_) => flow.client_auth_failures += 1,
                }
            }
        };
        for _ in 0..packets {
            let out = self
                .client_tx
                .encrypt_rtp(&rtp_filled(self.seq, 0x1111, 0x11))
                .unwrap();
            self.client.send_to(&out, self.client_target).unwrap();
            self.pbx
                .send_to(&rtp_filled(self.seq, 0x2222, 0x22), self.pbx_target)
                .unwrap();
            self.seq = self.seq.wrapping_add(1);
            std::thread::sleep(gap);
            read(&mut flow, self);
        }
        // Stragglers still in flight.
        std::thread::sleep(Duration::from_millis(50));
        read(&mut flow, self);
        flow
    }
}

/// Files in the store directory.
fn store_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Polls (bounded) until `f` holds.
fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn status(c: &mut Clients) -> pb::StatusResponse {
    c.satellite
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn wait_ports_back(c: &mut Clients) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(c).await;
        if s.ports_free == s.ports_total && s.calls == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "ports not back: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_call_media_resumes_with_its_roc_and_the_call_ends_normally() {
    let mut d = Daemon::start_config(&DaemonConfig::new("restart-media", 22000, 16));
    let mut c = clients(&d).await;
    // Both phones start just below the sequence wrap: the wrap happens before the crash.
    let mut call = call(&mut c, "restart-1", 65_000).await;
    let before = call.exchange(800, Duration::from_millis(1));
    assert!(
        before.at_pbx > 700 && before.at_client > 700,
        "media before the crash: {before:?}"
    );
    assert_eq!(before.client_auth_failures, 0);
    let session = c
        .sessions
        .get_session(pb::GetSessionRequest {
            session_id: call.id,
        })
        .await
        .unwrap()
        .into_inner();
    // The store checkpoints the ROC change of both directions of the client leg.
    let store = d.store_dir();
    wait_until(
        "ROC 1 of both directions stored",
        Duration::from_secs(5),
        || {
            d.stored_call(call.id).is_some_and(|v| {
                let srtp = &v["legs"][0]["srtp"];
                srtp["inbound"]["rtp"]["index"].as_u64() >= Some(1 << 16)
                    && srtp["outbound"]["rtp"]["index"].as_u64() >= Some(1 << 16)
            })
        },
    );

    let killed = Instant::now();
    d.kill9();
    let d = d.restart();
    let ready = Instant::now();
    eprintln!("kill -9 to READY of the new process: {:?}", ready - killed);
    let mut c = clients(&d).await;
    // 50 packets a second, like a phone.
    let after = call.exchange(50, Duration::from_millis(20));
    assert_eq!(
        after.client_auth_failures, 0,
        "XCC resumed its SRTP sender with the ROC the client expects: {after:?}"
    );
    let (Some(pbx_at), Some(client_at)) = (after.first_at_pbx, after.first_at_client) else {
        panic!("media did not resume: {after:?}\n{}", d.log());
    };
    let gap = pbx_at.max(client_at).duration_since(ready);
    eprintln!("media resumed {gap:?} after READY");
    assert!(gap < Duration::from_secs(1), "media resumed after {gap:?}");
    assert!(after.at_pbx >= 45 && after.at_client >= 45, "{after:?}");
    d.wait_log("stored call resumed", Duration::from_secs(1));

    // The session came back as it was, and hangs up through gRPC as any other call.
    let restored = c
        .sessions
        .get_session(pb::GetSessionRequest {
            session_id: call.id,
        })
        .await
        .unwrap()
        .into_inner();
    // Counters and quality measurements start again from zero in the new process; everything
    // else is as it was.
    let without_counters = |mut s: pb::Session| {
        for leg in [s.client.as_mut(), s.pbx.as_mut()].into_iter().flatten() {
            leg.counters = None;
            leg.quality = None;
        }
        s
    };
    assert_eq!(without_counters(restored), without_counters(session));
    c.calls
        .hang_up(pb::HangUpRequest { call_id: call.id })
        .await
        .unwrap();
    wait_ports_back(&mut c).await;
    assert_eq!(store_files(&store), Vec::<String>::new(), "store empty");
    // A new call gets a new id, not the restored one.
    let next = self::call(&mut c, "restart-2", 1).await;
    assert!(next.id > call.id, "{} after {}", next.id, call.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ended_before_the_crash_stays_ended() {
    let mut d = Daemon::start_config(&DaemonConfig::new("restart-ended", 22100, 16));
    let mut c = clients(&d).await;
    let mut kept = call(&mut c, "kept", 1).await;
    let ended = call(&mut c, "ended", 1).await;
    let store = d.store_dir();
    wait_until("both calls stored", Duration::from_secs(5), || {
        d.stored_call(kept.id).is_some() && d.stored_call(ended.id).is_some()
    });
    c.sessions
        .delete_session(pb::DeleteSessionRequest {
            session_id: ended.id,
        })
        .await
        .unwrap();
    // No wait: the hang-up is on disk when DeleteSession returns.
    d.kill9();
    let d = d.restart();
    let mut c = clients(&d).await;
    let list = c
        .sessions
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<u64> = list.sessions.iter().map(|s| s.session_id).collect();
    assert_eq!(ids, vec![kept.id]);
    assert_eq!(
        status(&mut c).await.ports_used,
        4,
        "only the kept call's ports"
    );
    let flow = kept.exchange(30, Duration::from_millis(5));
    assert!(flow.at_pbx > 20 && flow.at_client > 20, "{flow:?}");
    c.sessions
        .delete_session(pb::DeleteSessionRequest {
            session_id: kept.id,
        })
        .await
        .unwrap();
    wait_ports_back(&mut c).await;
    assert_eq!(store_files(&store), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_records_are_set_aside_and_xccd_starts() {
    let mut d = Daemon::start_config(&DaemonConfig::new("restart-corrupt", 22200, 16));
    let mut c = clients(&d).await;
    let flipped = call(&mut c, "flipped", 1).await;
    let cut = call(&mut c, "cut", 1).await;
    let store = d.store_dir();
    // Both records renamed into place (a `.tmp` still being written does not count).
    wait_until("both calls stored", Duration::from_secs(5), || {
        d.stored_call(flipped.id).is_some() && d.stored_call(cut.id).is_some()
    });
    d.kill9();
    let path = store.join(format!("{}.call", flipped.id));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let path = store.join(format!("{}.call", cut.id));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();

    let d = d.restart();
    let mut c = clients(&d).await;
    let log = d.log();
    assert!(log.contains("checksum mismatch"), "{log}");
    assert!(log.contains("truncated"), "{log}");
    assert!(
        log.contains(&format!("{}.call", flipped.id)),
        "the log names the file"
    );
    let files = store_files(&store);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files.iter().all(|f| f.contains(".call.corrupt-")),
        "{files:?}"
    );
    // Nothing resumed, nothing leaked; xccd serves new calls.
    wait_ports_back(&mut c).await;
    let fresh = call(&mut c, "fresh", 1).await;
    assert!(fresh.id >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_call_whose_port_is_taken_is_dropped_cleanly() {
    let mut d = Daemon::start_config(&DaemonConfig::new("restart-busy", 22300, 16));
    let mut c = clients(&d).await;
    let lost = call(&mut c, "lost", 1).await;
    let store = d.store_dir();
    wait_until("call stored", Duration::from_secs(5), || {
        d.stored_call(lost.id).is_some()
    });
    d.kill9();
    // Another process takes the call's PBX-leg RTCP port while xccd is down.
    let squatter = UdpSocket::bind(SocketAddr::new(
        "127.0.0.1".parse().unwrap(),
        lost.pbx_target.port() + 1,
    ))
    .unwrap();
    let d = d.restart();
    let mut c = clients(&d).await;
    d.wait_log("stored call cannot resume", Duration::from_secs(1));
    assert_eq!(store_files(&store), Vec::<String>::new(), "record deleted");
    let s = status(&mut c).await;
    assert_eq!(
        (s.calls, s.ports_used),
        (0, 0),
        "nothing half-restored: {s:?}"
    );
    let err = c
        .sessions
        .get_session(pb::GetSessionRequest {
            session_id: lost.id,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    drop(squatter);
}

/// The nice value of each of xccd's threads, by thread name (`/proc/PID/task/*/stat`, field 19).
fn thread_nice(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue; // a thread that ended meanwhile
        };
        // "tid (comm) state ppid ...": fields after the closing parenthesis, nice is field 19.
        let (head, rest) = stat.rsplit_once(") ").unwrap();
        let comm = head.split_once(" (").unwrap().1.to_owned();
        let nice: i32 = rest.split(' ').nth(16).unwrap().parse().unwrap();
        out.push((comm, nice));
    }
    out
}

/// The store's writer (an fsync per record) and the event fan-out run below the media workers,
/// so a burst of record writes never holds packets back on a shared core (docs/load.md).
#[test]
fn housekeeping_threads_run_below_the_media_workers() {
    let d = Daemon::start_config(&DaemonConfig::new("restart-nice", 22240, 16));
    // Threads start while xccd comes up: wait (bounded) until the three named here exist.
    let mut threads = thread_nice(d.pid());
    wait_until("xccd's threads started", Duration::from_secs(10), || {
        threads = thread_nice(d.pid());
        ["xcc-media-0", "xcc-store", "xcc-events"]
            .iter()
            .all(|name| threads.iter().any(|(n, _)| n == name))
    });
    let nice_of = |name: &str| {
        threads
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no thread {name} in {threads:?}"))
            .1
    };
    let media = nice_of("xcc-media-0");
    assert_eq!(
        media,
        nice_of("xccd"),
        "media workers keep the process's priority: {threads:?}"
    );
    for housekeeping in ["xcc-store", "xcc-events"] {
        assert_eq!(
            nice_of(housekeeping),
            (media + xcc_core::priority::HOUSEKEEPING_NICE).min(19),
            "{threads:?}"
        );
    }
}
