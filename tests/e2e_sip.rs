//! SIP through a real xccd, with SIPp as the controlling server and as the PBX, and a test-owned
//! SDES-SRTP phone on the client leg. Ports 20000-21299 (each test owns 100 from its base);
//! the burst tests 21400-21699 (ports named on each); the restart tests 21700-21999.
//! benches/sip_setup.sh uses 21300-21399 and its media pool (see the script). The TURN test
//! 22400-22599: its own 100 from 22400, coturn on 22500 (alternate 22501) relaying on 22510-22549.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use xcc_grpc::pb;

mod common;
use common::coturn::{Coturn, TurnOptions};
use common::phone::{self, Phone};
use common::sipp::{self, Outcome, Sipp};
use common::{Daemon, DaemonConfig};

/// One test's ports, all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
struct Ports {
    base: u16,
}

impl Ports {
    fn new(index: u16) -> Self {
        Ports {
            base: 20000 + index * 100,
        }
    }
    /// XCC's server-side listener (4901's stand-in).
    fn xcc_server(self) -> SocketAddr {
        addr(self.base)
    }
    /// XCC's trunk listener (5060's stand-in).
    fn xcc_trunk(self) -> SocketAddr {
        addr(self.base + 1)
    }
    /// SIPp as the controlling server (4900's stand-in).
    fn server(self) -> SocketAddr {
        addr(self.base + 2)
    }
    /// SIPp as the PBX.
    fn pbx(self) -> SocketAddr {
        addr(self.base + 3)
    }
    fn server_cp(self) -> u16 {
        self.base + 4
    }
    fn pbx_cp(self) -> u16 {
        self.base + 5
    }
    fn server_media(self) -> u16 {
        self.base + 10
    }
    fn pbx_media(self) -> u16 {
        self.base + 30
    }
    fn phone(self) -> SocketAddr {
        addr(self.base + 50)
    }
    /// xccd's media pool: base+60..base+99 (10 calls).
    fn pool(self) -> (u16, u16) {
        (self.base + 60, 40)
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// xccd with SIP between SIPp-server and SIPp-PBX over UDP.
fn sip_daemon(name: &str, p: Ports, extra: &str) -> DaemonConfig {
    let (min, len) = p.pool();
    let mut cfg = DaemonConfig::new(name, min, len);
    cfg.sections = format!(
        "[sip]\nserver_listen = \"{}\"\ntrunk_listen = \"{}\"\nserver_target = \"{}\"\n\
         server_transport = \"udp\"\npbx_target = \"{}\"\npbx_transport = \"udp\"\n\
         options_interval_secs = 0\n{extra}",
        p.xcc_server(),
        p.xcc_trunk(),
        p.server(),
        p.pbx(),
    );
    cfg
}

fn run_dir(d: &Daemon) -> PathBuf {
    d.dir.join("sipp")
}

/// Skips (or fails under CI) when SIPp is missing.
fn have_sipp() -> bool {
    if sipp::available() {
        return true;
    }
    common::skip("sipp (Debian sip-tester) is not installed");
    false
}

struct Grpc {
    sessions: pb::sessions_client::SessionsClient<Channel>,
    calls: pb::calls_client::CallsClient<Channel>,
    satellite: pb::satellite_client::SatelliteClient<Channel>,
}

async fn grpc(d: &Daemon) -> Grpc {
    let ch = d.channel().await;
    Grpc {
        sessions: pb::sessions_client::SessionsClient::new(ch.clone()),
        calls: pb::calls_client::CallsClient::new(ch.clone()),
        satellite: pb::satellite_client::SatelliteClient::new(ch),
    }
}

impl Grpc {
    async fn status(&mut self) -> pb::StatusResponse {
        self.satellite
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    async fn sessions(&mut self) -> Vec<pb::Session> {
        self.sessions
            .list_sessions(pb::ListSessionsRequest {})
            .await
            .unwrap()
            .into_inner()
            .sessions
    }

    async fn calls(&mut self) -> Vec<pb::Call> {
        self.calls
            .list_calls(pb::ListCallsRequest {})
            .await
            .unwrap()
            .into_inner()
            .calls
    }

    /// Waits (bounded) for one session in state ACTIVE and returns it.
    async fn active_session(&mut self) -> pb::Session {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let all = self.sessions().await;
            if let Some(s) = all
                .iter()
                .find(|s| s.state == pb::session::State::Active as i32)
            {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no active session in time: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until `Status` says `n` TURN spares are allocated and ready.
    async fn turn_ready(&mut self, n: u64, d: &Daemon) -> pb::StatusResponse {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.status().await;
            if s.turn_ready == Some(n) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{n} TURN spares never ready: {s:?}\n{}",
                d.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until every media port is back in the pool and no call is left.
    async fn ports_back(&mut self) -> pb::StatusResponse {
        self.ports_back_but(0).await
    }

    /// Waits (bounded) until no call is left and only `held` media ports are out of the pool
    /// (TURN spares hold a pair each).
    async fn ports_back_but(&mut self, held: u64) -> pb::StatusResponse {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.status().await;
            if s.ports_free + held == s.ports_total && s.calls == 0 {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "ports not back in the pool: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn wait(run: sipp::Running) -> Outcome {
    tokio::task::spawn_blocking(move || run.wait())
        .await
        .unwrap()
}

fn assert_clean(name: &str, o: &Outcome, calls: u64) {
    assert!(o.status.success(), "{name}: SIPp failed\n{}", o.report());
    assert_eq!(
        o.stat("SuccessfulCall(C)"),
        calls,
        "{name}: successful calls\n{}",
        o.report()
    );
    assert_eq!(o.stat("FailedCall(C)"), 0, "{name}\n{}", o.report());
}

/// The phone talks SRTP to `target` for at most 5 s until it heard at least 5 packets of the
/// PBX's own audio and 5 echoes of its own (so media crossed XCC both ways), none failing
/// authentication; `context` (xccd's log, say) goes into the failure messages.
async fn hear_audio_and_echo(
    phone: Phone,
    target: SocketAddr,
    xcc_key: Vec<u8>,
    context: &str,
) -> phone::Heard {
    let heard = tokio::task::spawn_blocking(move || {
        phone.talk(target, &xcc_key, Duration::from_secs(5), |h| {
            h.echoes >= 5 && h.far_audio >= 5
        })
    })
    .await
    .unwrap();
    assert!(
        heard.far_audio >= 5,
        "the PBX's audio reaches the phone: {heard:?}\n{context}"
    );
    assert!(
        heard.echoes >= 5,
        "the phone's audio reaches the PBX (and its echo comes back): {heard:?}\n{context}"
    );
    assert_eq!(heard.bad, 0, "{heard:?}");
    heard
}

/// A server-originated call: the PBX (SIPp UAS, echoing RTP) is up, then the server (SIPp UAC)
/// sends XCC an INVITE whose SRTP offer points at the returned phone; the call lasts 6 s.
fn server_call(p: Ports, dir: &Path) -> (sipp::Running, Phone, sipp::Running) {
    let pbx = Sipp::new("pbx_uas.xml", p.pbx(), p.pbx_media(), p.pbx_cp())
        .arg("-rtp_echo")
        .spawn(dir);
    let phone = Phone::bind(p.phone());
    let mut server = Sipp::new(
        "server_uac.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    )
    .key("phone_port", phone.port())
    .key("phone_key", phone::encode_key(&phone.key))
    .arg("-d")
    .arg("6000");
    server.remote = Some(p.xcc_server());
    (pbx, phone, server.spawn(dir))
}

/// The server (SIPp UAC) calls through XCC to the PBX (SIPp UAS); the phone on the client leg
/// talks SRTP, the PBX plays g711a.pcap and echoes what it gets; the server hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_originated_call_relays_media_both_ways_and_bye_frees_ports() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(0);
    let mut cfg = sip_daemon("sip-server-call", p, "");
    let metrics = addr(p.base + 55);
    cfg.metrics_listen = metrics.to_string();
    let d = Daemon::start_config(&cfg);
    let mut g = grpc(&d).await;
    let dir = run_dir(&d);
    let (pbx, phone, server) = server_call(p, &dir);

    let session = g.active_session().await;
    assert_eq!(session.sdp_for, pb::Side::Client as i32, "{session:?}");
    assert!(session.sdp.contains("RTP/SAVP"), "{}", session.sdp);
    let (tag, xcc_key) = phone::crypto_of(&session.sdp);
    assert_eq!(tag, 1);
    let target = common::call::media_target(&session.sdp);
    assert_eq!(
        g.calls().await.len(),
        1,
        "the SIP call is a call in ListCalls"
    );

    hear_audio_and_echo(phone, target, xcc_key, "").await;

    let s = wait(server).await;
    assert_clean("server", &s, 1);
    let b = wait(pbx).await;
    assert_clean("pbx", &b, 1);
    let after = g.ports_back().await;
    assert_eq!(after.ports_used, 0);
    d.wait_log("SIP call ended", Duration::from_secs(5));

    // The SIP families on /metrics (copied from the B2BUA at most once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(metrics);
        if text.contains("xcc_sip_calls_total{event=\"ended\"} 1") {
            break text;
        }
        assert!(Instant::now() < deadline, "no SIP metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for line in [
        "xcc_sip_calls_total{event=\"started\"} 1",
        "xcc_sip_calls_total{event=\"answered\"} 1",
        "xcc_sip_requests_total{side=\"server\",direction=\"in\",method=\"INVITE\"} 1",
        "xcc_sip_requests_total{side=\"pbx\",direction=\"out\",method=\"INVITE\"} 1",
        "xcc_sip_requests_total{side=\"server\",direction=\"in\",method=\"BYE\"} 1",
        "xcc_sip_responses_total{side=\"server\",direction=\"out\",method=\"INVITE\",status=\"200\"}",
        "xcc_sip_responses_total{side=\"server\",direction=\"out\",method=\"BYE\",status=\"200\"}",
        "xcc_sip_responses_total{side=\"pbx\",direction=\"in\",method=\"INVITE\",status=\"200\"}",
        "xcc_sip_calls 0",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
}

/// Reads SIPp `run`'s `file` until `find` gets what it looks for (bounded by 15 s); fails naming
/// `what` and the file's text.
fn poll_sipp_file<T>(
    run: &sipp::Running,
    file: &str,
    what: &str,
    mut find: impl FnMut(&str) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(run.dir.join(file)).unwrap_or_default();
        if let Some(found) = find(&text) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "SIPp never {what} in {}:\n{text}",
            run.dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) for the first response `status` SIPp `run` received with a body, in its
/// message trace, and returns that body: what XCC sent, byte for byte as SIPp read it.
fn received_sdp(run: &sipp::Running, status: &str) -> String {
    let start = format!("SIP/2.0 {status}");
    poll_sipp_file(
        run,
        "messages.log",
        &format!("traced a {start} with SDP"),
        |text| {
            text.split("message received")
                .skip(1)
                .filter_map(|m| m.split_once("\n\n").map(|(_, msg)| msg.trim_start()))
                .filter(|msg| msg.starts_with(&start))
                .find_map(|msg| {
                    let (_, rest) = msg.split_once("\r\n\r\n").or(msg.split_once("\n\n"))?;
                    rest.contains("m=audio").then(|| {
                        rest.split("-----------------------------------------------")
                            .next()
                            .unwrap_or(rest)
                            .to_owned()
                    })
                })
        },
    )
}

/// With `[turn]`, a SIP call's client leg is relayed like a gRPC session's: the server (SIPp UAC)
/// offers SRTP for the phone, XCC's 200 OK names two of coturn's relayed addresses (RTP in c=/m=,
/// RTCP in `a=rtcp`) taken from its ready spares, the phone's SRTP reaches the PBX through coturn
/// and the PBX's audio comes back from the relayed address; the server's BYE frees the ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_call_with_turn_relays_the_client_leg_through_xccs_allocation() {
    if !have_sipp() {
        return;
    }
    const TURN_PORT: u16 = 22500;
    const RELAY: (u16, u16) = (22510, 22549);
    let Some(_coturn) = Coturn::start_turn(
        &["127.0.0.1"],
        TURN_PORT,
        TurnOptions {
            user: "xcc:secret",
            realm: "xcc.test",
            relay: RELAY,
            user_quota: None,
            loopback_peers: true,
        },
    ) else {
        return;
    };
    let p = Ports { base: 22400 };
    let d = Daemon::start_config(&sip_daemon(
        "sip-turn",
        p,
        &format!(
            "\n[turn]\nserver = \"127.0.0.1:{TURN_PORT}\"\nusername = \"xcc\"\n\
             password = \"secret\"\nlifetime_secs = 600\nspares = 2\n"
        ),
    ));
    let mut g = grpc(&d).await;
    g.turn_ready(2, &d).await;

    let dir = run_dir(&d);
    let (pbx, phone, server) = server_call(p, &dir);

    let answer = received_sdp(&server, "200");
    let relayed = |a: SocketAddr| {
        a.ip() == std::net::Ipv4Addr::LOCALHOST && (RELAY.0..=RELAY.1).contains(&a.port())
    };
    let target = common::call::media_target(&answer);
    assert!(
        relayed(target),
        "c=/m= must name coturn's relayed address (127.0.0.1:{RELAY:?}), not xccd's pool \
         ({:?}): {target}\n{answer}",
        p.pool()
    );
    let rtcp = common::call::rtcp_target(&answer)
        .unwrap_or_else(|| panic!("no a=rtcp for the relayed RTCP allocation:\n{answer}"));
    assert!(
        relayed(rtcp) && rtcp != target,
        "a=rtcp must name a second relayed address: {rtcp} (RTP {target})\n{answer}"
    );
    let (tag, xcc_key) = phone::crypto_of(&answer);
    assert_eq!(tag, 1, "{answer}");
    let session = g.active_session().await;
    assert_eq!(
        common::call::media_target(&session.sdp),
        target,
        "Sessions shows the relayed address too: {}",
        session.sdp
    );

    let heard = hear_audio_and_echo(phone, target, xcc_key, &d.log()).await;
    assert_eq!(
        heard.elsewhere, 0,
        "everything the phone heard came from the relayed address {target}: {heard:?}"
    );

    let s = wait(server).await;
    assert_clean("server", &s, 1);
    let b = wait(pbx).await;
    assert_clean("pbx", &b, 1);
    // The call's ports are back; only the two spares' pairs are out (the one the call took has
    // been replaced).
    g.ports_back_but(2 * 2).await;
    let after = g.turn_ready(2, &d).await;
    assert_eq!(after.turn_failed_total, Some(0), "{after:?}");
    assert_eq!(after.ports_used, 2 * 2, "{after:?}");
    d.wait_log("SIP call ended", Duration::from_secs(5));
}

/// `GET /metrics` over a plain TCP connection (HTTP/1.0, bounded).
fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Waits (bounded) for SIPp's `<log>` line `xcc_port=P xcc_key=K end` and returns XCC's media
/// address (loopback) and key for the phone.
fn logged_xcc_media(run: &sipp::Running) -> (SocketAddr, Vec<u8>) {
    poll_sipp_file(run, "logs.log", "logged XCC's offer", |text| {
        let line = text.lines().find(|l| l.contains(" end"))?;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("{name} in {line:?}"))
                .to_owned()
        };
        let port: u16 = field("xcc_port=").parse().unwrap();
        Some((addr(port), phone::decode_key(&field("xcc_key="))))
    })
}

/// The PBX (SIPp UAC) calls through XCC to the server (SIPp UAS), which answers XCC's SRTP offer
/// for the phone; media flows both ways; the PBX hangs up and XCC's BYE reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_originated_call_gets_srtp_offer_media_flows_and_pbx_bye_ends_both() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(1);
    let d = Daemon::start_config(&sip_daemon("sip-pbx-call", p, ""));
    let mut g = grpc(&d).await;
    let dir = run_dir(&d);
    let phone = Phone::bind(p.phone());
    let server = Sipp::new(
        "server_uas.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    )
    .key("phone_port", phone.port())
    .key("phone_key", phone::encode_key(&phone.key))
    .spawn(&dir);
    let mut pbx = Sipp::new("pbx_uac.xml", p.pbx(), p.pbx_media(), p.pbx_cp())
        .arg("-rtp_echo")
        .arg("-d")
        .arg("6000");
    pbx.remote = Some(p.xcc_trunk());
    let pbx = pbx.spawn(&dir);

    let (target, xcc_key) = logged_xcc_media(&server);
    let session = g.active_session().await;
    assert_eq!(session.offer_from, pb::Side::Pbx as i32, "{session:?}");
    hear_audio_and_echo(phone, target, xcc_key, "").await;

    let b = wait(pbx).await;
    assert_clean("pbx", &b, 1);
    let s = wait(server).await;
    assert_clean("server", &s, 1);
    g.ports_back().await;
}

/// The server cancels while the PBX rings: XCC answers the CANCEL, cancels towards the PBX,
/// relays its 487, and frees the ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_cancel_while_ringing_cancels_the_pbx_leg_and_frees_ports() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(2);
    let d = Daemon::start_config(&sip_daemon("sip-cancel", p, ""));
    let mut g = grpc(&d).await;
    let dir = run_dir(&d);
    let pbx = Sipp::new("pbx_uas_cancel.xml", p.pbx(), p.pbx_media(), p.pbx_cp()).spawn(&dir);
    let mut server = Sipp::new(
        "server_uac_cancel.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    );
    server.remote = Some(p.xcc_server());
    let server = server.spawn(&dir);
    let s = wait(server).await;
    assert_clean("server", &s, 1);
    let b = wait(pbx).await;
    assert_clean("pbx", &b, 1);
    assert_eq!(g.ports_back().await.ports_used, 0);
    d.wait_log("Cancelled", Duration::from_secs(5));
}

/// The PBX never answers (nothing listens at its address): XCC gives up after timer B (T1 is
/// 50 ms here, so 3.2 s) with 408 (or 503 once it knows the PBX is unreachable), and the media
/// ports allocated for the call are back in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_timeout_answers_the_server_408_or_503_and_frees_ports() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(3);
    let d = Daemon::start_config(&sip_daemon("sip-timeout", p, "t1_ms = 50\n"));
    let mut g = grpc(&d).await;
    let dir = run_dir(&d);
    let mut server = Sipp::new(
        "server_uac_timeout.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    );
    server.remote = Some(p.xcc_server());
    let server = server.spawn(&dir);
    // The call holds its ports while XCC retries the INVITE.
    let deadline = Instant::now() + Duration::from_secs(5);
    while g.status().await.ports_used == 0 {
        assert!(Instant::now() < deadline, "the call never took ports");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = wait(server).await;
    assert_clean("server", &s, 1);
    let logs = s.logs();
    assert!(
        logs.contains("final=408") || logs.contains("final=503"),
        "{logs}"
    );
    assert_eq!(g.ports_back().await.ports_used, 0);
}

/// Every media port is taken (by a gRPC session): a SIP INVITE gets 503 with Retry-After (the
/// configured value), and the pool is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_answers_503_with_retry_after() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(4);
    let mut cfg = sip_daemon("sip-exhausted", p, "retry_after_secs = 17\n");
    cfg.pool_len = 4;
    let d = Daemon::start_config(&cfg);
    let mut g = grpc(&d).await;
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio 20490 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";
    let held = g
        .sessions
        .create_session(pb::CreateSessionRequest {
            idempotency_key: "hog".into(),
            offer_from: pb::Side::Pbx as i32,
            sdp: offer.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.status().await.ports_free, 0);
    let dir = run_dir(&d);
    let mut server = Sipp::new(
        "server_uac_503.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    );
    server.remote = Some(p.xcc_server());
    let s = wait(server.spawn(&dir)).await;
    assert_clean("server", &s, 1);
    assert!(s.logs().contains("retry_after=17 end"), "{}", s.logs());
    assert_eq!(
        g.sessions().await.len(),
        1,
        "no session for the refused call"
    );
    g.sessions
        .delete_session(pb::DeleteSessionRequest {
            session_id: held.session_id,
        })
        .await
        .unwrap();
    g.ports_back().await;
}

/// A BYE that matches no dialog, on either listener, is answered 481.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bye_for_an_unknown_dialog_gets_481_on_both_listeners() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(5);
    let d = Daemon::start_config(&sip_daemon("sip-481", p, ""));
    let dir = run_dir(&d);
    for (i, target) in [p.xcc_trunk(), p.xcc_server()].into_iter().enumerate() {
        let mut bye = Sipp::new("bye_unknown.xml", p.pbx(), p.pbx_media(), p.pbx_cp());
        bye.remote = Some(target);
        let o = wait(bye.spawn(&dir.join(i.to_string()))).await;
        assert_clean("bye", &o, 1);
    }
}

/// The server holds (re-INVITE a=sendonly) and resumes (a=sendrecv): XCC relays each re-offer to
/// the PBX with the same direction and each answer back (recvonly, then sendrecv), both checked
/// by the SIPp scenarios; the call then ends normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_hold_and_resume_reinvites_are_relayed_with_their_directions() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(6);
    let d = Daemon::start_config(&sip_daemon("sip-hold", p, ""));
    let mut g = grpc(&d).await;
    let dir = run_dir(&d);
    let pbx = Sipp::new("pbx_uas_hold.xml", p.pbx(), p.pbx_media(), p.pbx_cp()).spawn(&dir);
    let key: [u8; 30] = rand::random();
    let mut server = Sipp::new(
        "server_uac_hold.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    )
    .key("phone_port", p.phone().port())
    .key("phone_key", phone::encode_key(&key));
    server.remote = Some(p.xcc_server());
    let s = wait(server.spawn(&dir)).await;
    assert_clean("server", &s, 1);
    assert!(
        s.logs().contains("answer2=a=recvonly") && s.logs().contains("answer3=a=sendrecv"),
        "{}",
        s.logs()
    );
    let b = wait(pbx).await;
    assert_clean("pbx", &b, 1);
    assert!(
        b.logs().contains("offer1=a=sendonly") && b.logs().contains("offer2=a=sendrecv"),
        "{}",
        b.logs()
    );
    g.ports_back().await;
}

/// gRPC `HangUp` of a SIP call ends it in SIP: BYE to the server and to the PBX (both SIPp
/// scenarios wait for it), ports freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_hangup_sends_bye_to_both_sides() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(7);
    let d = Daemon::start_config(&sip_daemon("sip-hangup", p, ""));
    let mut g = grpc(&d).await;
    let dir = run_dir(&d);
    let pbx = Sipp::new("pbx_uas.xml", p.pbx(), p.pbx_media(), p.pbx_cp()).spawn(&dir);
    let key: [u8; 30] = rand::random();
    let mut server = Sipp::new(
        "server_uac_byed.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    )
    .key("phone_port", p.phone().port())
    .key("phone_key", phone::encode_key(&key));
    server.remote = Some(p.xcc_server());
    let server = server.spawn(&dir);
    let session = g.active_session().await;
    // The answer reached the server once the session is active; let the ACK land (bounded).
    d.wait_log("SIP call answered", Duration::from_secs(5));
    g.calls
        .hang_up(pb::HangUpRequest {
            call_id: session.session_id,
        })
        .await
        .unwrap();
    let s = wait(server).await;
    assert_clean("server", &s, 1);
    let b = wait(pbx).await;
    assert_clean("pbx", &b, 1);
    g.ports_back().await;
    d.wait_log("Hangup(Api)", Duration::from_secs(5));
}

/// While draining (gRPC `Drain`), a new INVITE is refused 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_refuses_new_invites_with_503_retry_after() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(8);
    let d = Daemon::start_config(&sip_daemon("sip-drain", p, "retry_after_secs = 17\n"));
    let mut g = grpc(&d).await;
    g.satellite
        .drain(pb::DrainRequest {
            exit_when_idle: false,
        })
        .await
        .unwrap();
    let dir = run_dir(&d);
    let mut server = Sipp::new(
        "server_uac_503.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    );
    server.remote = Some(p.xcc_server());
    let s = wait(server.spawn(&dir)).await;
    assert_clean("server", &s, 1);
    assert!(s.logs().contains("retry_after=17 end"), "{}", s.logs());
    assert_eq!(g.status().await.ports_used, 0);
}

/// The server side over TCP (the product default): SIPp connects to XCC's server-side TCP
/// listener, the call is relayed to the PBX over UDP, and the BYE comes back on the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_call_over_tcp_is_relayed_to_a_udp_pbx() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(9);
    let mut cfg = sip_daemon("sip-tcp", p, "");
    cfg.sections = cfg
        .sections
        .replace("server_transport = \"udp\"", "server_transport = \"tcp\"");
    let d = Daemon::start_config(&cfg);
    let mut g = grpc(&d).await;
    let dir = run_dir(&d);
    let pbx = Sipp::new("pbx_uas.xml", p.pbx(), p.pbx_media(), p.pbx_cp()).spawn(&dir);
    let key: [u8; 30] = rand::random();
    let mut server = Sipp::new(
        "server_uac.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    )
    .key("phone_port", p.phone().port())
    .key("phone_key", phone::encode_key(&key))
    .arg("-t")
    .arg("t1")
    .arg("-d")
    .arg("500");
    server.remote = Some(p.xcc_server());
    let s = wait(server.spawn(&dir)).await;
    assert_clean("server", &s, 1);
    assert!(
        s.messages().contains("TCP message received"),
        "{}",
        s.report()
    );
    let b = wait(pbx).await;
    assert_clean("pbx", &b, 1);
    g.ports_back().await;
}

/// A SIP call with no media at all ends on the media timeout (1 s here): XCC sends BYE to the
/// server and to the PBX (both scenarios wait for it) and frees the ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_timeout_sends_bye_to_both_sides() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(10);
    let mut cfg = sip_daemon("sip-media-timeout", p, "");
    cfg.media_extra = "media_timeout_secs = 1\n".into();
    let d = Daemon::start_config(&cfg);
    let mut g = grpc(&d).await;
    let dir = run_dir(&d);
    let pbx = Sipp::new("bench_pbx_uas.xml", p.pbx(), p.pbx_media(), p.pbx_cp()).spawn(&dir);
    let key: [u8; 30] = rand::random();
    let mut server = Sipp::new(
        "server_uac_byed.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    )
    .key("phone_port", p.phone().port())
    .key("phone_key", phone::encode_key(&key));
    server.remote = Some(p.xcc_server());
    let s = wait(server.spawn(&dir)).await;
    assert_clean("server", &s, 1);
    let b = wait(pbx).await;
    assert_clean("pbx", &b, 1);
    g.ports_back().await;
    d.wait_log("Hangup(MediaTimeout)", Duration::from_secs(5));
}

/// xccd stopping (SIGINT) with a SIP call up hangs it up in SIP first: BYE to both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_xccd_sends_bye_to_both_sides_of_live_calls() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(11);
    let mut d = Daemon::start_config(&sip_daemon("sip-stop", p, ""));
    let mut g = grpc(&d).await;
    let dir = run_dir(&d);
    let pbx = Sipp::new("bench_pbx_uas.xml", p.pbx(), p.pbx_media(), p.pbx_cp()).spawn(&dir);
    let key: [u8; 30] = rand::random();
    let mut server = Sipp::new(
        "server_uac_byed.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    )
    .key("phone_port", p.phone().port())
    .key("phone_key", phone::encode_key(&key));
    server.remote = Some(p.xcc_server());
    let server = server.spawn(&dir);
    g.active_session().await;
    d.wait_log("SIP call answered", Duration::from_secs(5));
    d.signal(libc::SIGINT);
    let status = d.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", d.log());
    let s = wait(server).await;
    assert_clean("server", &s, 1);
    let b = wait(pbx).await;
    assert_clean("pbx", &b, 1);
}

/// A SIP listener that cannot be bound is a start-up error naming it (exit 69), not a daemon
/// that reports READY without SIP.
#[test]
fn a_taken_sip_port_stops_startup_with_69_naming_the_listener() {
    // Ports 20520-20527: unused by the 481 test that owns 20500-20599 (it needs no xccd pool
    // ports there and no SIPp media below base+30).
    let base = 20520;
    let _taken = std::net::UdpSocket::bind(addr(base)).unwrap();
    let dir = std::env::temp_dir().join(format!("xcc-e2e-sip-taken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let control = addr(base + 2);
    let mut cfg = DaemonConfig::new("sip-taken", base + 4, 4);
    cfg.sections = format!(
        "[sip]\ntrunk_listen = \"{}\"\nserver_listen = \"{}\"\nserver_target = \"{}\"\n\
         pbx_target = \"{}\"\noptions_interval_secs = 0\n",
        addr(base),
        addr(base + 1),
        addr(base + 3),
        addr(base + 3),
    );
    std::fs::write(dir.join("xcc.toml"), cfg.toml(control)).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_xccd"))
        .arg("--config")
        .arg(dir.join("xcc.toml"))
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the pid of the child this test spawned and has not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("xccd kept running without its SIP trunk listener");
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("cannot bind SIP trunk UDP"), "{stderr}");
    assert!(!stderr.contains("xccd ready"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The PBX challenges with 401 Digest: XCC retries the INVITE with the configured credentials
/// (SIPp's `verifyauth` checks them) and the call completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_digest_challenge_is_answered_with_the_configured_credentials() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(12);
    let d = Daemon::start_config(&sip_daemon(
        "sip-auth",
        p,
        "pbx_user = \"xcc\"\npbx_password = \"s3cret\"\n",
    ));
    let mut g = grpc(&d).await;
    let dir = run_dir(&d);
    let pbx = Sipp::new("pbx_uas_auth.xml", p.pbx(), p.pbx_media(), p.pbx_cp())
        .key("pbx_user", "xcc")
        .key("pbx_password", "s3cret")
        .spawn(&dir);
    let key: [u8; 30] = rand::random();
    let mut server = Sipp::new(
        "server_uac.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    )
    .key("phone_port", p.phone().port())
    .key("phone_key", phone::encode_key(&key))
    .arg("-d")
    .arg("300");
    server.remote = Some(p.xcc_server());
    let s = wait(server.spawn(&dir)).await;
    assert_clean("server", &s, 1);
    let b = wait(pbx).await;
    assert_clean("pbx", &b, 1);
    assert!(
        b.logs().contains("auth=good") && !b.logs().contains("auth=bad"),
        "{}\n{}",
        b.logs(),
        b.report()
    );
    g.ports_back().await;
}

// ---- calls survive a crash of xccd (dialogs from the call store) ---------------------------------

/// Waits (bounded) until the call store holds a record with a SIP dialog blob: the B2BUA's state
/// reached the disk, so a crash now keeps the dialogs.
fn wait_stored_dialog(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = std::fs::read_dir(d.store_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "call"))
            .any(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("\"signalling\":\""))
            });
        if stored {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no dialog blob in {}",
            d.store_dir().display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Phone talks until it hears its echo (the PBX's `-rtp_echo`): media through XCC both ways.
async fn talk_both_ways(phone: Phone, first_seq: u16, target: SocketAddr, key: Vec<u8>) -> Phone {
    let (phone, heard) = tokio::task::spawn_blocking(move || {
        // Drop what queued up since the last talk (the PBX's audio through the old process):
        // this talk counts what the current xccd relays.
        let mut buf = [0u8; 2048];
        while phone.socket.recv_from(&mut buf).is_ok() {}
        let heard = phone.talk_from(first_seq, target, &key, Duration::from_secs(5), |h| {
            h.echoes >= 5
        });
        (phone, heard)
    })
    .await
    .unwrap();
    assert!(
        heard.echoes >= 5,
        "phone -> XCC -> PBX echo -> XCC -> phone: {heard:?}"
    );
    assert_eq!(heard.bad, 0, "{heard:?}");
    phone
}

/// Files left in the call store (records, temporaries, set-aside damage).
fn store_files(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.store_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits (bounded) until the call store is empty.
async fn store_empty(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store_files(d).is_empty() {
        assert!(
            Instant::now() < deadline,
            "call store not empty: {:?}",
            store_files(d)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server-originated SIP call with media both ways; xccd is killed (-9) and restarted; media
/// resumes on the same ports, and the server's BYE afterwards (its dialog restored from the call
/// store) is relayed to the PBX: 200 on both sides, ports and store empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_sip_call_then_the_servers_bye_reaches_the_pbx() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(17);
    let mut d = Daemon::start_config(&sip_daemon("sip-restart-server-bye", p, ""));
    let mut g = grpc(&d).await;
    let dir = run_dir(&d);
    let pbx = Sipp::new("pbx_uas.xml", p.pbx(), p.pbx_media(), p.pbx_cp())
        .arg("-rtp_echo")
        .spawn(&dir);
    let phone = Phone::bind(p.phone());
    let mut server = Sipp::new(
        "server_uac.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    )
    .key("phone_port", phone.port())
    .key("phone_key", phone::encode_key(&phone.key))
    .arg("-d")
    .arg("8000");
    server.remote = Some(p.xcc_server());
    let server = server.spawn(&dir);

    let session = g.active_session().await;
    let (_, xcc_key) = phone::crypto_of(&session.sdp);
    let target = common::call::media_target(&session.sdp);
    let phone = talk_both_ways(phone, 1, target, xcc_key.clone()).await;
    wait_stored_dialog(&d);

    d.kill9();
    let d = d.restart();
    d.wait_log("SIP call resumed", Duration::from_secs(5));
    let mut g = grpc(&d).await;
    let resumed = g.active_session().await;
    assert_eq!(resumed.session_id, session.session_id, "same call");
    let _phone = talk_both_ways(phone, 1000, target, xcc_key).await;

    // The server's BYE (after its pause) finds the restored dialog: relayed to the PBX.
    let s = wait(server).await;
    assert_clean("server", &s, 1);
    assert!(
        !s.messages().contains("SIP/2.0 481"),
        "no 481:\n{}",
        s.messages()
    );
    let b = wait(pbx).await;
    assert_clean("pbx", &b, 1);
    let after = g.ports_back().await;
    assert_eq!(after.ports_used, 0);
    d.wait_log("SIP call ended", Duration::from_secs(5));
    store_empty(&d).await;
}

/// The same with the PBX calling and hanging up: after the restart the PBX's BYE is relayed to
/// the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_sip_call_then_the_pbxs_bye_reaches_the_server() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(18);
    let mut d = Daemon::start_config(&sip_daemon("sip-restart-pbx-bye", p, ""));
    let mut g = grpc(&d).await;
    let dir = run_dir(&d);
    let phone = Phone::bind(p.phone());
    let server = Sipp::new(
        "server_uas.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    )
    .key("phone_port", phone.port())
    .key("phone_key", phone::encode_key(&phone.key))
    .spawn(&dir);
    let mut pbx = Sipp::new("pbx_uac.xml", p.pbx(), p.pbx_media(), p.pbx_cp())
        .arg("-rtp_echo")
        .arg("-d")
        .arg("8000");
    pbx.remote = Some(p.xcc_trunk());
    let pbx = pbx.spawn(&dir);

    let (target, xcc_key) = logged_xcc_media(&server);
    let session = g.active_session().await;
    let phone = talk_both_ways(phone, 1, target, xcc_key.clone()).await;
    wait_stored_dialog(&d);

    d.kill9();
    let d = d.restart();
    d.wait_log("SIP call resumed", Duration::from_secs(5));
    let mut g = grpc(&d).await;
    assert_eq!(g.active_session().await.session_id, session.session_id);
    let _phone = talk_both_ways(phone, 1000, target, xcc_key).await;

    let b = wait(pbx).await;
    assert_clean("pbx", &b, 1);
    assert!(
        !b.messages().contains("SIP/2.0 481"),
        "no 481:\n{}",
        b.messages()
    );
    let s = wait(server).await;
    assert_clean("server", &s, 1);
    g.ports_back().await;
    store_empty(&d).await;
}

/// A SIP call still ringing at the crash is not restored (only answered calls store their
/// dialogs): the restarted xccd releases its resumed media at once, so no port leaks and the
/// store ends empty. The PBX here is a socket that takes the INVITE and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_ringing_releases_the_calls_media_at_restart() {
    if !have_sipp() {
        return;
    }
    let p = Ports::new(19);
    let mut d = Daemon::start_config(&sip_daemon("sip-restart-ringing", p, ""));
    let mut g = grpc(&d).await;
    let dir = run_dir(&d);
    let silent_pbx = std::net::UdpSocket::bind(p.pbx()).unwrap();
    silent_pbx
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut server = Sipp::new(
        "server_uac_timeout.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    );
    server.remote = Some(p.xcc_server());
    let _server = server.spawn(&dir);
    // The INVITE reached the "PBX": the call exists, with ports and a stored record.
    let mut buf = [0u8; 4096];
    let (len, _) = silent_pbx.recv_from(&mut buf).expect("INVITE at the PBX");
    assert!(buf[..len].starts_with(b"INVITE "));
    assert!(g.status().await.ports_used > 0);
    // Stored with its session: a first record can precede the session's creation (the store
    // writes what the media plane has), and without the session a restart cannot tell a SIP call.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store_files(&d).iter().any(|f| {
        f.strip_suffix(".call")
            .and_then(|id| id.parse().ok())
            .and_then(|id| d.stored_call(id))
            .is_some_and(|rec| !rec["session"].is_null())
    }) {
        assert!(
            Instant::now() < deadline,
            "the ringing call was never stored with its session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    d.kill9();
    let d = d.restart();
    d.wait_log(
        "SIP call was being set up at the restart",
        Duration::from_secs(5),
    );
    let mut g = grpc(&d).await;
    assert_eq!(g.ports_back().await.ports_used, 0);
    assert!(g.sessions().await.is_empty());
    store_empty(&d).await;
}

/// `n` calls from SIPp-server through xccd to SIPp-PBX, each waiting for XCC's BYE (both
/// scenarios fail a call that never gets one), placed at `n` calls/s.
fn burst_calls(d: &Daemon, p: Ports, n: u32) -> (sipp::Running, sipp::Running) {
    let dir = run_dir(d);
    let mut pbx = Sipp::new("bench_pbx_uas.xml", p.pbx(), p.pbx_media(), p.pbx_cp());
    pbx.calls = n;
    let pbx = pbx.spawn(&dir);
    let key: [u8; 30] = rand::random();
    let mut server = Sipp::new(
        "server_uac_byed.xml",
        p.server(),
        p.server_media(),
        p.server_cp(),
    )
    .key("phone_port", p.phone().port())
    .key("phone_key", phone::encode_key(&key))
    .arg("-r")
    .arg(&n.to_string())
    .arg("-l")
    .arg(&n.to_string());
    server.calls = n;
    server.remote = Some(p.xcc_server());
    (server.spawn(&dir), pbx)
}

/// Many SIP calls whose media ends at about the same time (no media: a 1 s media timeout) each
/// get BYE on both sides: the ends reach the SIP task on a lossless queue, not on the event
/// feed that also carries records and quality alerts and drops events for a lagging watcher.
/// Ports 21400-21579.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_media_timeouts_sends_bye_to_both_sides_of_every_call() {
    if !have_sipp() {
        return;
    }
    const CALLS: u32 = 30;
    let p = Ports { base: 21400 };
    let mut cfg = sip_daemon("sip-timeout-burst", p, "");
    (cfg.pool_min, cfg.pool_len) = (21460, 120);
    cfg.media_extra = "media_timeout_secs = 1\n".into();
    let d = Daemon::start_config(&cfg);
    let mut g = grpc(&d).await;
    let (server, pbx) = burst_calls(&d, p, CALLS);
    let s = wait(server).await;
    assert_clean("server", &s, CALLS.into());
    let b = wait(pbx).await;
    assert_clean("pbx", &b, CALLS.into());
    g.ports_back().await;
    assert_eq!(
        d.log()
            .lines()
            .filter(|l| l.contains("SIP call ended") && l.contains("Hangup(MediaTimeout)"))
            .count(),
        CALLS as usize,
        "one media-timeout hang-up per call"
    );
}

/// Every SIP call hung up through gRPC at once (concurrent `HangUp`s) gets BYE on both sides.
/// Ports 21580-21699.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_grpc_hangups_sends_bye_to_both_sides_of_every_call() {
    if !have_sipp() {
        return;
    }
    const CALLS: u32 = 15;
    let p = Ports { base: 21580 };
    let mut cfg = sip_daemon("sip-hangup-burst", p, "");
    (cfg.pool_min, cfg.pool_len) = (21640, 60);
    let d = Daemon::start_config(&cfg);
    let mut g = grpc(&d).await;
    let (server, pbx) = burst_calls(&d, p, CALLS);
    let deadline = Instant::now() + Duration::from_secs(20);
    let active = loop {
        let active: Vec<u64> = g
            .sessions()
            .await
            .iter()
            .filter(|s| s.state == pb::session::State::Active as i32)
            .map(|s| s.session_id)
            .collect();
        if active.len() == CALLS as usize {
            break active;
        }
        assert!(Instant::now() < deadline, "active sessions: {active:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Every answer reached the server once its session is active; let the ACKs land (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.log().matches("SIP call answered").count() < CALLS as usize {
        assert!(Instant::now() < deadline, "not every call answered in SIP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hangups: Vec<_> = active
        .into_iter()
        .map(|call_id| {
            let mut calls = g.calls.clone();
            tokio::spawn(async move { calls.hang_up(pb::HangUpRequest { call_id }).await })
        })
        .collect();
    for h in hangups {
        h.await.unwrap().unwrap();
    }
    let s = wait(server).await;
    assert_clean("server", &s, CALLS.into());
    let b = wait(pbx).await;
    assert_clean("pbx", &b, CALLS.into());
    g.ports_back().await;
    assert_eq!(
        d.log()
            .lines()
            .filter(|l| l.contains("SIP call ended") && l.contains("Hangup(Api)"))
            .count(),
        CALLS as usize,
        "one API hang-up per call"
    );
}
