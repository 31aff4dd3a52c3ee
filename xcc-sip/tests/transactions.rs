//! RFC 3261 §17 transaction timers driven in virtual time: no sockets, no sleeping.

use std::time::{Duration, Instant};

use xcc_sip::transaction::{
    Event, InviteClient, InviteServer, NonInviteClient, NonInviteServer, State, Timers,
};
use xcc_sip::{Message, Method, Request, Response};

const MS: Duration = Duration::from_millis(1);

fn request(method: &str) -> Request {
    let raw = format!(
        "{method} sip:bob@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKtest1\r\nMax-Forwards: 70\r\nFrom: <sip:alice@192.0.2.10>;tag=a1\r\nTo: <sip:bob@192.0.2.20>\r\nCall-ID: tsx-test\r\nCSeq: 7 {method}\r\nRoute: <sip:192.0.2.30;lr>\r\nContent-Length: 0\r\n\r\n"
    );
    match Message::parse(raw.as_bytes()).expect("valid request") {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!("request line"),
    }
}

fn response(req: &Request, status: u16) -> Response {
    Response::for_request(req, status, "Whatever", Some("b2"))
}

/// Runs the machine's timers until `until`, recording (time since start, message) of every send.
macro_rules! run {
    ($tsx:expr, $start:expr, $now:expr, $until:expr, $sent:expr) => {{
        while let Some(m) = $tsx.poll_transmit() {
            $sent.push(($now - $start, m));
        }
        while let Some(t) = $tsx.poll_timeout() {
            if t > $start + $until {
                break;
            }
            $now = t;
            $tsx.handle_timeout($now);
            while let Some(m) = $tsx.poll_transmit() {
                $sent.push(($now - $start, m));
            }
        }
    }};
}

fn events(mut poll: impl FnMut() -> Option<Event>) -> Vec<Event> {
    std::iter::from_fn(&mut poll).collect()
}

fn intervals(sent: &[(Duration, Message)]) -> Vec<Duration> {
    sent.windows(2).map(|w| w[1].0 - w[0].0).collect()
}

#[test]
fn invite_retransmits_until_timer_b() {
    let start = Instant::now();
    let mut now = start;
    let mut tsx = InviteClient::new(now, request("INVITE"), Timers::default(), false);
    let mut sent = Vec::new();
    run!(tsx, start, now, Duration::from_secs(120), sent);
    // Timer A doubles with no T2 cap: 0.5, 1, 2, 4, 8, 16 s; timer B (64*T1) ends it at 32 s.
    assert_eq!(
        intervals(&sent),
        [500, 1000, 2000, 4000, 8000, 16000].map(|m| m * MS)
    );
    assert_eq!(now - start, Duration::from_secs(32));
    assert_eq!(
        events(|| tsx.poll_event()),
        [Event::Timeout, Event::Terminated]
    );
    assert_eq!(tsx.state(), State::Terminated);
}

#[test]
fn invite_over_tcp_never_retransmits() {
    let start = Instant::now();
    let mut now = start;
    let mut tsx = InviteClient::new(now, request("INVITE"), Timers::default(), true);
    let mut sent = Vec::new();
    run!(tsx, start, now, Duration::from_secs(120), sent);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        events(|| tsx.poll_event()),
        [Event::Timeout, Event::Terminated]
    );
}

#[test]
fn provisional_stops_invite_retransmission() {
    let start = Instant::now();
    let mut now = start;
    let req = request("INVITE");
    let mut tsx = InviteClient::new(now, req.clone(), Timers::default(), false);
    let mut sent = Vec::new();
    run!(tsx, start, now, 600 * MS, sent);
    assert_eq!(sent.len(), 2);
    tsx.handle_response(now, response(&req, 180));
    assert_eq!(tsx.state(), State::Proceeding);
    assert_eq!(
        tsx.poll_timeout(),
        Some(now + Duration::from_secs(180)),
        "Proceeding is bounded by timer C only"
    );
    tsx.handle_response(now, response(&req, 200));
    let ev = events(|| tsx.poll_event());
    assert!(matches!(&ev[..], [Event::Response(r1), Event::Response(r2)]
        if r1.status == 180 && r2.status == 200));
    assert!(
        tsx.poll_transmit().is_none(),
        "2xx is ACKed by the dialog, not the transaction"
    );
    assert_eq!(tsx.state(), State::Accepted);
}

#[test]
fn invite_client_accepted_passes_2xx_retransmissions_until_timer_m() {
    let start = Instant::now();
    let req = request("INVITE");
    let mut tsx = InviteClient::new(start, req.clone(), Timers::default(), false);
    tsx.handle_response(start, response(&req, 200));
    tsx.handle_response(start + Duration::from_secs(1), response(&req, 200));
    let ev = events(|| tsx.poll_event());
    assert_eq!(ev.len(), 2, "both 2xx go up so the dialog re-ACKs: {ev:?}");
    assert_eq!(
        tsx.poll_timeout(),
        Some(start + Duration::from_secs(32)),
        "timer M"
    );
    tsx.handle_timeout(start + Duration::from_secs(32));
    assert_eq!(events(|| tsx.poll_event()), [Event::Terminated]);
}

#[test]
fn invite_server_accepted_absorbs_retransmissions_until_timer_l() {
    let start = Instant::now();
    let req = request("INVITE");
    let mut tsx = InviteServer::new(start, req.clone(), Timers::default(), false);
    tsx.send_response(start, response(&req, 200)).unwrap();
    while tsx.poll_transmit().is_some() {}
    assert_eq!(tsx.state(), State::Accepted);
    tsx.handle_request(start + Duration::from_secs(1), &req);
    assert!(
        tsx.poll_transmit().is_none(),
        "INVITE retransmission absorbed"
    );
    // The dialog layer's own 2xx retransmission still goes out through the transaction.
    tsx.send_response(start + Duration::from_secs(1), response(&req, 200))
        .unwrap();
    assert!(matches!(tsx.poll_transmit(), Some(Message::Response(r)) if r.status == 200));
    assert!(tsx.send_response(start, response(&req, 486)).is_err());
    assert_eq!(
        tsx.poll_timeout(),
        Some(start + Duration::from_secs(32)),
        "timer L"
    );
    tsx.handle_timeout(start + Duration::from_secs(32));
    assert_eq!(tsx.state(), State::Terminated);
}

#[test]
fn ack_for_non_2xx_is_sent_by_transaction() {
    let start = Instant::now();
    let req = request("INVITE");
    let mut tsx = InviteClient::new(start, req.clone(), Timers::default(), false);
    tsx.poll_transmit();
    tsx.handle_response(start, response(&req, 486));
    let Some(Message::Request(ack)) = tsx.poll_transmit() else {
        panic!("ACK expected")
    };
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, req.uri);
    assert_eq!(ack.headers.cseq.seq, 7);
    assert_eq!(ack.headers.cseq.method, "ACK");
    assert_eq!(ack.headers.via, req.headers.via[..1]);
    assert_eq!(ack.headers.to.tag(), Some("b2"));
    assert_eq!(ack.headers.from, req.headers.from);
    assert_eq!(ack.headers.route, req.headers.route);
    // A retransmitted 486 is answered with the same ACK and not passed up again.
    tsx.handle_response(start + 10 * MS, response(&req, 486));
    assert!(matches!(tsx.poll_transmit(), Some(Message::Request(a)) if a == ack));
    let ev = events(|| tsx.poll_event());
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(tsx.state(), State::Completed);
}

#[test]
fn timer_d_is_32s_on_udp_and_zero_on_tcp() {
    let start = Instant::now();
    for (reliable, d) in [(false, Duration::from_secs(32)), (true, Duration::ZERO)] {
        let req = request("INVITE");
        let mut tsx = InviteClient::new(start, req.clone(), Timers::default(), reliable);
        tsx.handle_response(start, response(&req, 503));
        assert_eq!(tsx.poll_timeout(), Some(start + d));
        tsx.handle_timeout(start + d - Duration::from_nanos(1).min(d));
        if !d.is_zero() {
            assert_eq!(tsx.state(), State::Completed);
        }
        tsx.handle_timeout(start + d);
        assert_eq!(tsx.state(), State::Terminated);
    }
}

#[test]
fn non_invite_client_caps_at_t2() {
    let start = Instant::now();
    let mut now = start;
    let mut tsx = NonInviteClient::new(now, request("BYE"), Timers::default(), false);
    let mut sent = Vec::new();
    run!(tsx, start, now, Duration::from_secs(120), sent);
    let iv = intervals(&sent);
    assert_eq!(iv[..4], [500, 1000, 2000, 4000].map(|m| m * MS));
    assert!(iv[4..].iter().all(|&i| i == 4000 * MS), "{iv:?}");
    assert_eq!(iv.len(), 10);
    assert_eq!(now - start, Duration::from_secs(32), "timer F");
    assert_eq!(
        events(|| tsx.poll_event()),
        [Event::Timeout, Event::Terminated]
    );
}

#[test]
fn non_invite_proceeding_retransmits_every_t2_and_timer_k() {
    let start = Instant::now();
    let mut now = start;
    let req = request("OPTIONS");
    let mut tsx = NonInviteClient::new(now, req.clone(), Timers::default(), false);
    tsx.poll_transmit();
    tsx.handle_response(now, response(&req, 100));
    let mut sent = Vec::new();
    run!(tsx, start, now, 10_000 * MS, sent);
    // First timer E was armed at T1; once Proceeding every retransmit waits T2.
    assert_eq!(intervals(&sent), [4000 * MS, 4000 * MS]);
    tsx.handle_response(now, response(&req, 200));
    assert_eq!(
        tsx.poll_timeout(),
        Some(now + Duration::from_secs(5)),
        "timer K = T4"
    );
    tsx.handle_response(now, response(&req, 200));
    let ev = events(|| tsx.poll_event());
    assert_eq!(ev.len(), 2, "100 and one 200 passed up: {ev:?}");
}

#[test]
fn server_absorbs_retransmitted_invite() {
    let start = Instant::now();
    let req = request("INVITE");
    let mut tsx = InviteServer::new(start, req.clone(), Timers::default(), false);
    assert!(matches!(tsx.poll_transmit(), Some(Message::Response(r)) if r.status == 100));
    tsx.handle_request(start + 500 * MS, &req);
    assert!(matches!(tsx.poll_transmit(), Some(Message::Response(r)) if r.status == 100));
    tsx.send_response(start + 600 * MS, response(&req, 180))
        .unwrap();
    assert!(matches!(tsx.poll_transmit(), Some(Message::Response(r)) if r.status == 180));
    tsx.handle_request(start + 1500 * MS, &req);
    assert!(matches!(tsx.poll_transmit(), Some(Message::Response(r)) if r.status == 180));
    assert!(tsx.poll_transmit().is_none());
    assert_eq!(tsx.state(), State::Proceeding);
}

#[test]
fn timer_h_without_ack_is_a_transaction_error() {
    let start = Instant::now();
    let mut now = start;
    let req = request("INVITE");
    let mut tsx = InviteServer::new(now, req.clone(), Timers::default(), false);
    tsx.poll_transmit();
    tsx.send_response(now, response(&req, 486)).unwrap();
    let mut sent = Vec::new();
    run!(tsx, start, now, Duration::from_secs(120), sent);
    let iv = intervals(&sent);
    // Timer G doubles up to T2, then stays there, until timer H at 64*T1.
    assert_eq!(iv[..4], [500, 1000, 2000, 4000].map(|m| m * MS));
    assert!(iv[4..].iter().all(|&i| i == 4000 * MS));
    assert_eq!(now - start, Duration::from_secs(32));
    assert_eq!(
        events(|| tsx.poll_event()),
        [Event::Timeout, Event::Terminated]
    );
}

#[test]
fn ack_confirms_invite_server_then_timer_i() {
    let start = Instant::now();
    let req = request("INVITE");
    let mut tsx = InviteServer::new(start, req.clone(), Timers::default(), false);
    tsx.send_response(start, response(&req, 404)).unwrap();
    let mut ack = req.clone();
    ack.method = Method::Ack;
    tsx.handle_request(start + 100 * MS, &ack);
    assert_eq!(tsx.state(), State::Confirmed);
    assert_eq!(
        tsx.poll_timeout(),
        Some(start + 100 * MS + Duration::from_secs(5))
    );
    // A retransmitted INVITE in Confirmed gets nothing; the ACK retransmission is absorbed.
    while tsx.poll_transmit().is_some() {}
    tsx.handle_request(start + 200 * MS, &req);
    tsx.handle_request(start + 200 * MS, &ack);
    assert!(tsx.poll_transmit().is_none());
    tsx.handle_timeout(start + Duration::from_secs(6));
    assert_eq!(tsx.state(), State::Terminated);
    assert!(tsx.send_response(start, response(&req, 500)).is_err());
}

#[test]
fn non_invite_server_absorbs_then_replays_and_timer_j() {
    let start = Instant::now();
    for (reliable, j) in [(false, Duration::from_secs(32)), (true, Duration::ZERO)] {
        let req = request("BYE");
        let mut tsx = NonInviteServer::new(start, req.clone(), Timers::default(), reliable);
        tsx.handle_request(start, &req);
        assert!(
            tsx.poll_transmit().is_none(),
            "Trying absorbs retransmissions"
        );
        tsx.send_response(start, response(&req, 200)).unwrap();
        assert!(tsx.poll_transmit().is_some());
        tsx.handle_request(start + MS, &req);
        assert!(matches!(tsx.poll_transmit(), Some(Message::Response(r)) if r.status == 200));
        assert_eq!(tsx.poll_timeout(), Some(start + j));
        tsx.handle_timeout(start + j);
        assert_eq!(tsx.state(), State::Terminated);
    }
}

#[test]
fn configurable_t1_scales_every_timer() {
    let t = Timers {
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(400),
        t4: Duration::from_secs(1),
        c: Duration::from_secs(180),
    };
    let start = Instant::now();
    let mut now = start;
    let mut tsx = NonInviteClient::new(now, request("OPTIONS"), t, false);
    let mut sent = Vec::new();
    run!(tsx, start, now, Duration::from_secs(60), sent);
    assert_eq!(now - start, 6400 * MS, "F = 64*T1");
    assert!(intervals(&sent).iter().all(|&i| i <= 400 * MS));
}

#[test]
fn cancel_matches_the_invite_only_once_proceeding() {
    let start = Instant::now();
    let req = request("INVITE");
    let mut tsx = InviteClient::new(start, req.clone(), Timers::default(), false);
    assert!(
        tsx.cancel().is_none(),
        "no CANCEL before a provisional (RFC 3261 §9.1)"
    );
    tsx.handle_response(start, response(&req, 180));
    let cancel = tsx.cancel().unwrap();
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.uri, req.uri);
    assert_eq!(cancel.headers.via, req.headers.via[..1]);
    assert_eq!(
        cancel.headers.to, req.headers.to,
        "To without the provisional's tag"
    );
    assert_eq!(
        (cancel.headers.cseq.seq, cancel.headers.cseq.method.as_str()),
        (7, "CANCEL")
    );
    assert_eq!(cancel.headers.route, req.headers.route);
    // Server-side it keys to the INVITE's CANCEL transaction, which targets the INVITE.
    let key = xcc_sip::transaction::TransactionKey::server(&cancel).unwrap();
    assert_eq!(
        key.cancelled_invite(),
        xcc_sip::transaction::TransactionKey::server(&req).unwrap()
    );
}

#[test]
fn timer_c_ends_an_invite_that_rings_forever() {
    let start = Instant::now();
    let req = request("INVITE");
    let mut tsx = InviteClient::new(start, req.clone(), Timers::default(), false);
    tsx.handle_response(start, response(&req, 180));
    // Each provisional restarts timer C.
    tsx.handle_response(start + Duration::from_secs(100), response(&req, 183));
    tsx.handle_timeout(start + Duration::from_secs(180));
    assert_eq!(tsx.state(), State::Proceeding);
    tsx.handle_timeout(start + Duration::from_secs(280));
    assert_eq!(tsx.state(), State::Terminated);
    let ev = events(|| tsx.poll_event());
    assert_eq!(ev[ev.len() - 2..], [Event::Timeout, Event::Terminated]);
}
