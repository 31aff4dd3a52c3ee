//! xccd end to end over loopback: the real daemon process, a tonic client, and two UDP "phones"
//! (an SDES-SRTP softphone on the client leg, a plain-RTP PBX on the other).
//!
//! Each test starts its own xccd with its own control port and media pool, and waits for readiness
//! on an sd_notify socket (READY=1), which also proves the notification protocol.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use base64::Engine;
use stun_rs::attributes::ice::{IceControlling, Priority, UseCandidate};
use stun_rs::attributes::stun::{Fingerprint, MessageIntegrity, UserName, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{
    DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    StunMessageBuilder, TransactionId,
};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use xcc_grpc::pb;

const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";

mod common;
use common::call::{media_target, srtp_context};
use common::{Clients, Daemon, DaemonConfig, clients};

impl Clients {
    async fn status(&mut self) -> pb::StatusResponse {
        self.satellite
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    async fn health(&mut self, service: &str) -> i32 {
        self.health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
    }

    async fn create(
        &mut self,
        key: &str,
        from: pb::Side,
        sdp: &str,
    ) -> Result<pb::Session, tonic::Status> {
        let req = pb::CreateSessionRequest {
            idempotency_key: key.into(),
            offer_from: from as i32,
            sdp: sdp.into(),
        };
        self.sessions
            .create_session(req)
            .await
            .map(|r| r.into_inner())
    }

    async fn answer(&mut self, id: u64, sdp: &str) -> Result<pb::Session, tonic::Status> {
        self.sessions
            .answer_session(pb::AnswerSessionRequest {
                session_id: id,
                sdp: sdp.into(),
            })
            .await
            .map(|r| r.into_inner())
    }
}

fn sdp(port: u16, transport: &str, extra: &[String]) -> String {
    sdp_dir(port, transport, extra, "sendrecv")
}

fn sdp_dir(port: u16, transport: &str, extra: &[String], direction: &str) -> String {
    let mut lines = vec![
        "v=0".to_owned(),
        "o=- 4242 1 IN IP4 127.0.0.1".into(),
        "s=-".into(),
        "c=IN IP4 127.0.0.1".into(),
        "t=0 0".into(),
        format!("m=audio {port} {transport} 0 101"),
        "a=rtpmap:0 PCMU/8000".into(),
        "a=rtpmap:101 telephone-event/8000".into(),
    ];
    lines.extend(extra.iter().cloned());
    lines.push(format!("a={direction}"));
    lines.join("\r\n") + "\r\n"
}

fn crypto_line(tag: u32, key: &[u8; 30]) -> String {
    format!(
        "a=crypto:{tag} {SUITE} inline:{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The (tag, key+salt) of the `a=crypto` line for [`SUITE`].
fn crypto_of(sdp: &str) -> (u32, Vec<u8>) {
    for line in sdp.lines() {
        let Some(rest) = line.strip_prefix("a=crypto:") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let tag: u32 = parts.next().unwrap().parse().unwrap();
        if parts.next() != Some(SUITE) {
            continue;
        }
        let inline = parts.next().unwrap().strip_prefix("inline:").unwrap();
        let b64 = inline.split('|').next().unwrap();
        return (
            tag,
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        );
    }
    panic!("no a=crypto {SUITE} in:\n{sdp}");
}

fn rtp_packet(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn phone() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s
}

/// Receives the next datagram that is not STUN (RFC 7983: first byte 0-3), as a phone's RTP stack
/// does: before the client leg latches, XCC's hole punching sends STUN probes to the signalled
/// address, and a phone discards them.
fn recv_media(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    loop {
        let (len, from) = sock.recv_from(buf)?;
        if len > 0 && buf[0] > 3 {
            return Ok((len, from));
        }
    }
}

/// The two phones of one call and the keys each side uses.
struct Phones {
    client: UdpSocket,
    pbx: UdpSocket,
    /// Where the client sends (XCC's client leg, from XCC's SDP to the client).
    client_target: SocketAddr,
    /// Where the PBX sends (XCC's PBX leg, from XCC's SDP to the PBX).
    pbx_target: SocketAddr,
    /// The client's own key (it encrypts with it).
    client_key: Vec<u8>,
    /// XCC's key on the client leg (the client decrypts with it).
    xcc_key: Vec<u8>,
}

/// Sends audio both ways until each phone has received the other's payload; asserts equality.
fn exchange_media(p: &Phones, first_seq: u16) {
    let to_pbx = [0x11u8; 160];
    let to_client = [0x22u8; 160];
    let mut client_tx = srtp_context(&p.client_key);
    let mut client_rx = srtp_context(&p.xcc_key);
    let (mut pbx_got, mut client_got) = (false, false);
    let mut buf = [0u8; 1500];
    for seq in first_seq..first_seq + 250 {
        let srtp = client_tx
            .encrypt_rtp(&rtp_packet(seq, 0x1111, &to_pbx))
            .unwrap();
        p.client.send_to(&srtp, p.client_target).unwrap();
        p.pbx
            .send_to(&rtp_packet(seq, 0x2222, &to_client), p.pbx_target)
            .unwrap();
        if let Ok((len, _)) = p.pbx.recv_from(&mut buf) {
            assert!(len > 12, "runt RTP at the PBX");
            assert_eq!(
                &buf[12..len],
                &to_pbx,
                "PBX receives the client's audio in the clear"
            );
            pbx_got = true;
        }
        if let Ok((len, _)) = recv_media(&p.client, &mut buf) {
            let plain = client_rx
                .decrypt_rtp(&buf[..len])
                .expect("client authenticates XCC's SRTP");
            assert_eq!(&plain[12..], &to_client, "client receives the PBX's audio");
            client_got = true;
        }
        if pbx_got && client_got {
            return;
        }
    }
    panic!("media did not flow: pbx received {pbx_got}, client received {client_got}");
}

/// Offer from the client, answer from the PBX; returns the session and the phones.
async fn client_offered_call(c: &mut Clients, key: &str) -> (pb::Session, Phones) {
    let client = phone();
    let pbx = phone();
    let client_key: [u8; 30] = rand::random();
    let offer = sdp(
        client.local_addr().unwrap().port(),
        "RTP/SAVP",
        &[crypto_line(1, &client_key)],
    );
    let s = c.create(key, pb::Side::Client, &offer).await.unwrap();
    assert_eq!(s.state, pb::session::State::AwaitingAnswer as i32);
    assert_eq!(s.sdp_for, pb::Side::Pbx as i32);
    assert!(
        s.sdp.contains("RTP/AVP") && !s.sdp.contains("a=crypto"),
        "plain RTP to the PBX:\n{}",
        s.sdp
    );
    let pbx_target = media_target(&s.sdp);
    let answer = sdp(pbx.local_addr().unwrap().port(), "RTP/AVP", &[]);
    let a = c.answer(s.session_id, &answer).await.unwrap();
    assert_eq!(a.state, pb::session::State::Active as i32);
    assert_eq!(a.sdp_for, pb::Side::Client as i32);
    assert!(a.sdp.contains("RTP/SAVP"), "SRTP to the client:\n{}", a.sdp);
    let (tag, xcc_key) = crypto_of(&a.sdp);
    assert_eq!(tag, 1, "XCC answers with the offered tag");
    assert_ne!(xcc_key, client_key.to_vec(), "XCC uses its own key");
    let client_target = media_target(&a.sdp);
    (
        a,
        Phones {
            client,
            pbx,
            client_target,
            pbx_target,
            client_key: client_key.to_vec(),
            xcc_key,
        },
    )
}

async fn wait_ports_back(c: &mut Clients) -> pb::StatusResponse {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = c.status().await;
        if s.ports_free == s.ports_total {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "ports not back in the pool: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_offer_relays_srtp_and_rtp_both_ways_and_hangup_frees_ports() {
    let d = Daemon::start("client-offer", 24000, 100);
    let mut c = clients(&d).await;
    let mut events = c
        .calls
        .watch_events(pb::WatchEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let (s, phones) = client_offered_call(&mut c, "client-offer-1").await;
    for leg in [&s.client, &s.pbx] {
        let port = leg.as_ref().unwrap().rtp_port;
        assert!(
            (24000..24100).contains(&port),
            "port {port} from the configured pool"
        );
    }
    assert_eq!(c.status().await.ports_used, 4);
    let calls = c
        .calls
        .list_calls(pb::ListCallsRequest {})
        .await
        .unwrap()
        .into_inner()
        .calls;
    assert_eq!(
        calls.iter().map(|c| c.call_id).collect::<Vec<_>>(),
        vec![s.session_id],
        "the session is a call"
    );

    exchange_media(&phones, 1);

    // Workers publish snapshots on their timer tick: poll (bounded) until this media shows.
    let client_addr = phones.client.local_addr().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let call = loop {
        let req = pb::GetCallRequest {
            call_id: s.session_id,
        };
        let call = c.calls.get_call(req).await.unwrap().into_inner();
        let pkts = |l: &Option<pb::Leg>| {
            l.as_ref()
                .and_then(|l| l.counters)
                .map_or(0, |c| c.packets_in)
        };
        let latched = call
            .client
            .as_ref()
            .is_some_and(|l| l.latched == client_addr);
        if latched && pkts(&call.client) > 0 && pkts(&call.pbx) > 0 {
            break call;
        }
        assert!(
            Instant::now() < deadline,
            "snapshot never showed the media: {call:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client_leg = call.client.unwrap();
    assert_eq!(
        client_leg.latched,
        phones.client.local_addr().unwrap().to_string()
    );
    assert_eq!(client_leg.srtp_suite, SUITE);
    assert!(client_leg.counters.unwrap().packets_in > 0);
    let pbx_leg = call.pbx.unwrap();
    assert_eq!(pbx_leg.srtp_suite, "");
    assert!(pbx_leg.counters.unwrap().packets_in > 0);

    c.calls
        .hang_up(pb::HangUpRequest {
            call_id: s.session_id,
        })
        .await
        .unwrap();
    let after = wait_ports_back(&mut c).await;
    assert_eq!(after.calls, 0);
    assert_eq!(after.ports_used, 0);

    // The feed saw the call's life: started, answered, latched, ended (released).
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.iter().any(|k| matches!(k, pb::event::Kind::Ended(_))) {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, events.message())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        assert_eq!(e.call_id, s.session_id);
        seen.push(e.kind.unwrap());
    }
    assert!(matches!(seen[0], pb::event::Kind::Started(_)), "{seen:?}");
    assert!(
        seen.iter()
            .any(|k| matches!(k, pb::event::Kind::Answered(_))),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|k| matches!(k, pb::event::Kind::Latched(_))),
        "{seen:?}"
    );
    let Some(pb::event::Kind::Ended(ended)) = seen.last() else {
        unreachable!()
    };
    assert_eq!(ended.reason, pb::call_ended::Reason::Released as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_offer_gets_srtp_offer_for_client_and_media_flows() {
    let d = Daemon::start("pbx-offer", 24100, 100);
    let mut c = clients(&d).await;
    let client = phone();
    let pbx = phone();
    let offer = sdp(pbx.local_addr().unwrap().port(), "RTP/AVP", &[]);
    let s = c
        .create("pbx-offer-1", pb::Side::Pbx, &offer)
        .await
        .unwrap();
    assert_eq!(s.sdp_for, pb::Side::Client as i32);
    assert!(
        s.sdp.contains("RTP/SAVP"),
        "SRTP offer to the client:\n{}",
        s.sdp
    );
    let (tag, xcc_key) = crypto_of(&s.sdp);
    let client_target = media_target(&s.sdp);
    let client_key: [u8; 30] = rand::random();
    let answer = sdp(
        client.local_addr().unwrap().port(),
        "RTP/SAVP",
        &[crypto_line(tag, &client_key)],
    );
    let a = c.answer(s.session_id, &answer).await.unwrap();
    assert_eq!(a.sdp_for, pb::Side::Pbx as i32);
    assert!(
        a.sdp.contains("RTP/AVP") && !a.sdp.contains("a=crypto"),
        "plain answer to the PBX:\n{}",
        a.sdp
    );
    let pbx_target = media_target(&a.sdp);
    exchange_media(
        &Phones {
            client,
            pbx,
            client_target,
            pbx_target,
            client_key: client_key.to_vec(),
            xcc_key,
        },
        1,
    );
    c.sessions
        .delete_session(pb::DeleteSessionRequest {
            session_id: s.session_id,
        })
        .await
        .unwrap();
    let err = c
        .sessions
        .get_session(pb::GetSessionRequest {
            session_id: s.session_id,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_offer_with_same_idempotency_key_returns_same_session() {
    let d = Daemon::start("idempotent", 24200, 100);
    let mut c = clients(&d).await;
    let key: [u8; 30] = rand::random();
    let offer = sdp(40000, "RTP/SAVP", &[crypto_line(1, &key)]);
    let first = c
        .create("retry-me", pb::Side::Client, &offer)
        .await
        .unwrap();
    let second = c
        .create("retry-me", pb::Side::Client, &offer)
        .await
        .unwrap();
    assert_eq!(first.session_id, second.session_id);
    assert_eq!(first.sdp, second.sdp);
    let st = c.status().await;
    assert_eq!((st.calls, st.ports_used), (1, 4), "allocated once");
    let listed = c
        .sessions
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].idempotency_key, "retry-me");
    let other = sdp(40002, "RTP/SAVP", &[crypto_line(1, &key)]);
    let err = c
        .create("retry-me", pb::Side::Client, &other)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("idempotency_key"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_codes_naming_the_field() {
    let d = Daemon::start("bad-requests", 24300, 8);
    let mut c = clients(&d).await;
    let key: [u8; 30] = rand::random();
    let good = sdp(40000, "RTP/SAVP", &[crypto_line(1, &key)]);
    let cases = [
        ("", pb::Side::Client, good.as_str(), "idempotency_key"),
        ("k1", pb::Side::Unspecified, good.as_str(), "offer_from"),
        ("k2", pb::Side::Client, "", "sdp"),
        ("k3", pb::Side::Client, "this is not SDP", "sdp"),
    ];
    for (key, side, body, field) in cases {
        let err = c.create(key, side, body).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{field}: {}",
            err.message()
        );
        assert!(
            err.message().contains(field),
            "{field} not named in {:?}",
            err.message()
        );
    }
    let plain = sdp(40000, "RTP/AVP", &[]);
    let err = c.create("k4", pb::Side::Client, &plain).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "a client offer without a=crypto: {}",
        err.message()
    );
    assert_eq!(
        c.status().await.ports_used,
        0,
        "invalid requests never allocate"
    );

    let err = c
        .sessions
        .get_session(pb::GetSessionRequest { session_id: 999 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .calls
        .hang_up(pb::HangUpRequest { call_id: 999 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("call_id"));
    let err = c
        .calls
        .get_call(pb::GetCallRequest { call_id: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // The 8-port pool holds two calls; the third is RESOURCE_EXHAUSTED.
    let a = c.create("pool-1", pb::Side::Client, &good).await.unwrap();
    c.create("pool-2", pb::Side::Client, &good).await.unwrap();
    let err = c
        .create("pool-3", pb::Side::Client, &good)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());

    // Answering a session twice: no offer pending.
    c.answer(a.session_id, &sdp(40010, "RTP/AVP", &[]))
        .await
        .unwrap();
    let err = c
        .answer(a.session_id, &sdp(40010, "RTP/AVP", &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_flips_health_and_refuses_new_sessions_until_resume() {
    let d = Daemon::start("drain", 24400, 100);
    // Start-up lines are written before READY; stderr is a file here, as under journald, so the
    // lines must carry no colour escape codes.
    let log = d.log();
    assert!(
        log.contains("INFO"),
        "xccd logged nothing before READY: {log}"
    );
    assert!(
        !log.contains('\x1b'),
        "colour codes in a non-terminal log: {log}"
    );
    let mut c = clients(&d).await;
    assert_eq!(c.health("").await, ServingStatus::Serving as i32);
    c.satellite
        .drain(pb::DrainRequest::default())
        .await
        .unwrap();
    assert_eq!(c.health("").await, ServingStatus::NotServing as i32);
    assert_eq!(
        c.health("xcc.v1.Sessions").await,
        ServingStatus::NotServing as i32
    );
    assert!(c.status().await.draining);
    let key: [u8; 30] = rand::random();
    let offer = sdp(40000, "RTP/SAVP", &[crypto_line(1, &key)]);
    let err = c
        .create("during-drain", pb::Side::Client, &offer)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    c.satellite.resume(pb::ResumeRequest {}).await.unwrap();
    assert_eq!(c.health("").await, ServingStatus::Serving as i32);
    c.create("after-resume", pb::Side::Client, &offer)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_until_the_last_call_ends_then_exits_zero() {
    let mut d = Daemon::start("sigterm", 24500, 100);
    let mut c = clients(&d).await;
    let (s, phones) = client_offered_call(&mut c, "sigterm-call").await;
    d.signal(libc::SIGTERM);
    let note = d.next_notification(Duration::from_secs(10));
    assert!(note.starts_with("STOPPING=1"), "{note:?}");
    assert_eq!(c.health("").await, ServingStatus::NotServing as i32);
    // The running call continues during the drain.
    exchange_media(&phones, 1);
    assert!(d.is_running(), "xccd must wait for the call");
    c.calls
        .hang_up(pb::HangUpRequest {
            call_id: s.session_id,
        })
        .await
        .unwrap();
    let status = d.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_at_once_even_with_calls() {
    let mut d = Daemon::start("sigint", 24600, 100);
    let mut c = clients(&d).await;
    let _call = client_offered_call(&mut c, "sigint-call").await;
    d.signal(libc::SIGINT);
    let status = d.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_log_level_and_keeps_serving() {
    let d = Daemon::start("sighup", 24700, 100);
    let config = d.dir.join("xcc.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("level = \"debug\"", "level = \"warn\"");
    std::fs::write(&config, text).unwrap();
    d.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log().contains("log level reloaded") {
        assert!(Instant::now() < deadline, "no reload logged:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = clients(&d).await;
    assert_eq!(c.health("").await, ServingStatus::Serving as i32);
    // A broken file on SIGHUP is refused and the daemon keeps running.
    std::fs::write(&config, "[media]\nport_min = 5\n").unwrap();
    d.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log().contains("configuration rejected") {
        assert!(
            Instant::now() < deadline,
            "no rejection logged:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.health("").await, ServingStatus::Serving as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_media_ends_with_media_timeout_on_the_feed() {
    let d = Daemon::start_config(&DaemonConfig {
        media_extra: "media_timeout_secs = 1\n".into(),
        ..DaemonConfig::new("timeout", 24800, 100)
    });
    let mut c = clients(&d).await;
    let mut events = c
        .calls
        .watch_events(pb::WatchEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let (s, _phones) = client_offered_call(&mut c, "silent-call").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let ended = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, events.message())
            .await
            .expect("ended in time")
            .unwrap()
            .unwrap();
        if let Some(pb::event::Kind::Ended(ended)) = e.kind {
            assert_eq!(e.call_id, s.session_id);
            break ended;
        }
    };
    assert_eq!(ended.reason, pb::call_ended::Reason::MediaTimeout as i32);
    let err = c
        .sessions
        .get_session(pb::GetSessionRequest {
            session_id: s.session_id,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "a timed-out session is forgotten"
    );
}

/// Waits (bounded) until the published snapshot of `call` satisfies `pred`.
async fn wait_call(
    c: &mut Clients,
    call: u64,
    what: &str,
    pred: impl Fn(&pb::Call) -> bool,
) -> pb::Call {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = c
            .calls
            .get_call(pb::GetCallRequest { call_id: call })
            .await
            .unwrap()
            .into_inner();
        if pred(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{what} never showed: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hold_and_resume_through_update_session() {
    let d = Daemon::start("hold", 24900, 100);
    let mut c = clients(&d).await;
    let (s, phones) = client_offered_call(&mut c, "hold-call").await;
    exchange_media(&phones, 1);
    let key: [u8; 30] = phones.client_key.clone().try_into().unwrap();
    let client_port = phones.client.local_addr().unwrap().port();
    let pbx_port = phones.pbx.local_addr().unwrap().port();

    // Hold: the client re-offers sendonly; XCC passes it on to the PBX.
    let hold = sdp_dir(client_port, "RTP/SAVP", &[crypto_line(1, &key)], "sendonly");
    let req = pb::UpdateSessionRequest {
        session_id: s.session_id,
        offer_from: pb::Side::Client as i32,
        sdp: hold,
    };
    let u = c.sessions.update_session(req).await.unwrap().into_inner();
    assert_eq!(u.state, pb::session::State::AwaitingAnswer as i32);
    assert_eq!(u.sdp_for, pb::Side::Pbx as i32);
    assert!(
        u.sdp.contains("a=sendonly"),
        "hold reaches the PBX:\n{}",
        u.sdp
    );
    let a = c
        .answer(s.session_id, &sdp_dir(pbx_port, "RTP/AVP", &[], "recvonly"))
        .await
        .unwrap();
    assert_eq!(
        crypto_of(&a.sdp).1,
        phones.xcc_key,
        "XCC keeps its key across the re-offer"
    );
    wait_call(&mut c, s.session_id, "client leg on hold", |call| {
        call.client
            .as_ref()
            .is_some_and(|l| l.direction == "sendonly")
    })
    .await;

    // Resume: sendrecv again, and media flows both ways on the same keys.
    let resume = sdp_dir(client_port, "RTP/SAVP", &[crypto_line(1, &key)], "sendrecv");
    let req = pb::UpdateSessionRequest {
        session_id: s.session_id,
        offer_from: pb::Side::Client as i32,
        sdp: resume,
    };
    c.sessions.update_session(req).await.unwrap();
    c.answer(s.session_id, &sdp(pbx_port, "RTP/AVP", &[]))
        .await
        .unwrap();
    wait_call(&mut c, s.session_id, "client leg resumed", |call| {
        call.client
            .as_ref()
            .is_some_and(|l| l.direction == "sendrecv")
    })
    .await;
    exchange_media(&phones, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drain_ends_calls_when_the_grace_period_expires() {
    let mut d = Daemon::start_config(&DaemonConfig {
        grace_secs: 1,
        ..DaemonConfig::new("grace", 25100, 100)
    });
    let mut c = clients(&d).await;
    let mut events = c
        .calls
        .watch_events(pb::WatchEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let (s, _phones) = client_offered_call(&mut c, "outlives-grace").await;
    d.signal(libc::SIGTERM);
    let note = d.next_notification(Duration::from_secs(10));
    assert!(note.starts_with("STOPPING=1"), "{note:?}");
    let status = d.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
    assert!(d.log().contains("drain grace expired"), "log:\n{}", d.log());
    assert!(
        !d.log().contains("did not stop"),
        "graceful stop is not held by connected clients:\n{}",
        d.log()
    );
    // The call was still up when the grace ran out: its end, if the feed delivered it before the
    // server closed, says SHUTDOWN, never RELEASED.
    while let Ok(Some(e)) = events.message().await {
        if let Some(pb::event::Kind::Ended(ended)) = e.kind {
            assert_eq!(e.call_id, s.session_id);
            assert_eq!(ended.reason, pb::call_ended::Reason::Shutdown as i32);
        }
    }
}

/// A nominating (USE-CANDIDATE) Binding request from a controlling ICE agent, built by stun-rs.
fn nominating_check(username: &str, pwd: &str, id: [u8; 12]) -> Vec<u8> {
    let msg = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_transaction_id(TransactionId::from(id))
        .with_attribute(UserName::new(username).unwrap())
        .with_attribute(Priority::from(0x6e00_01ff))
        .with_attribute(IceControlling::from(0x0bad_cafe))
        .with_attribute(UseCandidate::default())
        .with_attribute(MessageIntegrity::new(HMACKey::new_short_term(pwd).unwrap()))
        .with_attribute(Fingerprint::default())
        .build();
    let mut buf = [0u8; 512];
    let len = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &msg)
        .unwrap();
    buf[..len].to_vec()
}

/// The value of the first `a=<name>:` line.
fn attribute_value<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_client_offer_gets_ice_lite_answer_and_a_nominated_check_routes_srtp() {
    let d = Daemon::start("ice", 25200, 100);
    let mut c = clients(&d).await;
    // The phone signals a decoy port (as if behind a NAT that changes it): only its ICE check
    // can tell XCC where it really is.
    let decoy = phone();
    let client = phone();
    let pbx = phone();
    let client_key: [u8; 30] = rand::random();
    let (phone_ufrag, phone_pwd) = ("E2eP", "phonepasswordphonepassword");
    let offer = sdp(
        decoy.local_addr().unwrap().port(),
        "RTP/SAVP",
        &[
            crypto_line(1, &client_key),
            format!("a=ice-ufrag:{phone_ufrag}"),
            format!("a=ice-pwd:{phone_pwd}"),
            format!(
                "a=candidate:1 1 UDP 2130706431 127.0.0.1 {} typ host",
                client.local_addr().unwrap().port()
            ),
        ],
    );
    let s = c.create("ice-1", pb::Side::Client, &offer).await.unwrap();
    assert!(
        !s.sdp.contains("a=ice") && !s.sdp.contains("a=candidate"),
        "no ICE towards the PBX:\n{}",
        s.sdp
    );
    let pbx_target = media_target(&s.sdp);
    let answer = sdp(pbx.local_addr().unwrap().port(), "RTP/AVP", &[]);
    let a = c.answer(s.session_id, &answer).await.unwrap();
    assert!(a.sdp.contains("a=ice-lite\r\n"), "ICE-lite:\n{}", a.sdp);
    let xcc_ufrag = attribute_value(&a.sdp, "ice-ufrag").expect("XCC's ufrag");
    let xcc_pwd = attribute_value(&a.sdp, "ice-pwd").expect("XCC's pwd");
    assert_ne!(xcc_ufrag, phone_ufrag);
    let client_target = media_target(&a.sdp);
    let ports = a.client.as_ref().unwrap();
    assert_eq!(u32::from(client_target.port()), ports.rtp_port);
    for (component, port) in [(1, ports.rtp_port), (2, ports.rtcp_port)] {
        let host = format!(" {component} UDP ");
        let at = format!(" 127.0.0.1 {port} typ host");
        assert!(
            a.sdp
                .lines()
                .any(|l| l.starts_with("a=candidate:") && l.contains(&host) && l.ends_with(&at)),
            "host candidate {component} on {port}:\n{}",
            a.sdp
        );
    }
    let (_, xcc_key) = crypto_of(&a.sdp);

    // The ICE phone's nominating check gets a response verified under XCC's pwd.
    let id: [u8; 12] = rand::random();
    let check = nominating_check(&format!("{xcc_ufrag}:{phone_ufrag}"), xcc_pwd, id);
    client.send_to(&check, client_target).unwrap();
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + Duration::from_secs(5);
    let len = loop {
        match client.recv_from(&mut buf) {
            // XCC's own hole-punching checks (Binding requests) may arrive first.
            Ok((len, _)) if len >= 2 && buf[..2] == [0, 1] => {}
            Ok((len, from)) => {
                assert_eq!(from, client_target, "answered from the checked port");
                break len;
            }
            Err(_) => assert!(Instant::now() < deadline, "no answer to the ICE check"),
        }
    };
    let ctx = DecoderContextBuilder::default()
        .with_key(HMACKey::new_short_term(xcc_pwd).unwrap())
        .with_validation()
        .build();
    let (resp, _) = MessageDecoderBuilder::default()
        .with_context(ctx)
        .build()
        .decode(&buf[..len])
        .expect("the response verifies under XCC's pwd (MESSAGE-INTEGRITY, FINGERPRINT)");
    assert_eq!(resp.class(), MessageClass::SuccessResponse);
    assert_eq!(resp.transaction_id().as_bytes(), &id);
    let mapped = resp
        .get::<XorMappedAddress>()
        .expect("XOR-MAPPED-ADDRESS")
        .as_xor_mapped_address()
        .unwrap();
    assert_eq!(*mapped.socket_address(), client.local_addr().unwrap());

    // The nomination latched the leg: the PBX's audio reaches the phone, not the decoy, before
    // the phone sent any media.
    let to_client = [0x33u8; 160];
    let mut client_rx = srtp_context(&xcc_key);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seq = 1u16;
    loop {
        pbx.send_to(&rtp_packet(seq, 0x2222, &to_client), pbx_target)
            .unwrap();
        seq += 1;
        if let Ok((len, _)) = recv_media(&client, &mut buf) {
            let plain = client_rx
                .decrypt_rtp(&buf[..len])
                .expect("the phone authenticates XCC's SRTP");
            assert_eq!(&plain[12..], &to_client);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the PBX's audio never reached the ICE phone"
        );
    }
    assert!(
        recv_media(&decoy, &mut buf).is_err(),
        "no media went to the signalled decoy (hole-punching probes may)"
    );

    // Then SRTP flows both ways as for any client.
    let phones = Phones {
        client,
        pbx,
        client_target,
        pbx_target,
        client_key: client_key.to_vec(),
        xcc_key,
    };
    exchange_media(&phones, 1000);
}
