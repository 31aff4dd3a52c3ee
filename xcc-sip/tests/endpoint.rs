//! The transaction layer: matching, absorption, stray messages, malformed input, timeouts.

use std::time::{Duration, Instant};

use xcc_sip::endpoint::{Endpoint, EndpointEvent, Peer, Target, Transmit};
use xcc_sip::transaction::{State, Timers};
use xcc_sip::transport::Transport;
use xcc_sip::{Message, Request, Response};

fn pbx() -> Peer {
    Peer {
        addr: "127.0.0.1:5070".parse().unwrap(),
        transport: Transport::Udp,
    }
}

fn msg(method: &str, branch: &str, extra: &str) -> String {
    format!(
        "{method} sip:xcc@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1:5060;rport;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:pbx@10.1.1.1>;tag=p1\r\nTo: <sip:xcc@127.0.0.1>{extra}\r\nCall-ID: ep-1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

fn transmits(ep: &mut Endpoint) -> Vec<Transmit> {
    std::iter::from_fn(|| ep.poll_transmit()).collect()
}

fn events(ep: &mut Endpoint) -> Vec<EndpointEvent> {
    std::iter::from_fn(|| ep.poll_event()).collect()
}

fn status(t: &Transmit) -> u16 {
    match Message::parse(&t.bytes).expect("we send parseable messages") {
        Message::Response(r) => r.status,
        Message::Request(_) => 0,
    }
}

#[test]
fn incoming_invite_is_surfaced_once_and_retransmissions_absorbed() {
    let now = Instant::now();
    let mut ep = Endpoint::new(Timers::default());
    let invite = msg("INVITE", "z9hG4bKinv1", "");
    ep.handle_bytes(now, pbx(), invite.as_bytes());
    let ev = events(&mut ep);
    let [EndpointEvent::Request { key, request, .. }] = &ev[..] else {
        panic!("{ev:?}")
    };
    // received/rport stamped: responses reach the NATed source, not the Via's private address.
    assert_eq!(request.headers.via[0].rport(), Some(Some(5070)));
    let t = transmits(&mut ep);
    assert_eq!(t.len(), 1);
    assert_eq!(status(&t[0]), 100);
    assert_eq!(t[0].target, Target::Peer(pbx()));

    ep.handle_bytes(now + Duration::from_millis(500), pbx(), invite.as_bytes());
    assert!(
        events(&mut ep).is_empty(),
        "retransmission is not a new request"
    );
    assert_eq!(
        transmits(&mut ep).iter().map(status).collect::<Vec<_>>(),
        [100]
    );

    let resp = Response::for_request(request, 486, "Busy Here", Some("x1"));
    ep.send_response(now, key, resp).unwrap();
    assert_eq!(
        transmits(&mut ep).iter().map(status).collect::<Vec<_>>(),
        [486]
    );
    ep.handle_bytes(now, pbx(), msg("ACK", "z9hG4bKinv1", ";tag=x1").as_bytes());
    assert!(
        events(&mut ep).is_empty(),
        "ACK for non-2xx stays in the transaction"
    );
    assert_eq!(ep.state(key), Some(State::Confirmed));
}

#[test]
fn ack_for_2xx_and_cancel_reach_the_dialog_layer() {
    let now = Instant::now();
    let mut ep = Endpoint::new(Timers::default());
    ep.handle_bytes(now, pbx(), msg("INVITE", "z9hG4bKinv2", "").as_bytes());
    let ev = events(&mut ep);
    let [EndpointEvent::Request { key, .. }] = &ev[..] else {
        panic!()
    };
    ep.handle_bytes(now, pbx(), msg("CANCEL", "z9hG4bKinv2", "").as_bytes());
    let ev = events(&mut ep);
    let [EndpointEvent::Cancel { invite, .. }] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(invite, key);
    // The CANCEL itself was answered 200 (after the INVITE's 100 Trying).
    let sent: Vec<u16> = transmits(&mut ep).iter().map(status).collect();
    assert_eq!(sent, [100, 200]);
    // A retransmitted CANCEL gets the same answer and no second event.
    ep.handle_bytes(now, pbx(), msg("CANCEL", "z9hG4bKinv2", "").as_bytes());
    assert!(events(&mut ep).is_empty());
    assert_eq!(
        transmits(&mut ep).iter().map(status).collect::<Vec<_>>(),
        [200]
    );
    // A CANCEL for an INVITE we never saw: 481, no event.
    ep.handle_bytes(now, pbx(), msg("CANCEL", "z9hG4bKnone", "").as_bytes());
    assert!(events(&mut ep).is_empty());
    assert_eq!(
        transmits(&mut ep).iter().map(status).collect::<Vec<_>>(),
        [481]
    );
    ep.handle_bytes(now, pbx(), msg("ACK", "z9hG4bKack9", ";tag=x").as_bytes());
    assert!(matches!(&events(&mut ep)[..], [EndpointEvent::Ack { .. }]));
}

#[test]
fn outgoing_invite_responses_and_stray_2xx() {
    let start = Instant::now();
    let mut ep = Endpoint::new(Timers::default());
    let Message::Request(req) =
        Message::parse(msg("INVITE", "z9hG4bKout1", "").as_bytes()).unwrap()
    else {
        panic!()
    };
    let key = ep.send_request(start, req.clone(), pbx()).unwrap().unwrap();
    assert_eq!(transmits(&mut ep).len(), 1);
    let ok = Response::for_request(&req, 200, "OK", Some("t9"));
    ep.handle_message(start, pbx(), Message::Response(ok.clone()));
    assert!(
        matches!(&events(&mut ep)[..], [EndpointEvent::Response { key: k, response }] if *k == key && response.status == 200)
    );
    // RFC 6026 Accepted: a retransmitted 2xx still reaches the dialog layer through the key.
    ep.handle_message(start, pbx(), Message::Response(ok.clone()));
    assert!(matches!(
        &events(&mut ep)[..],
        [EndpointEvent::Response { .. }]
    ));
    let m = ep.poll_timeout().unwrap();
    assert_eq!(m - start, Duration::from_secs(32), "timer M");
    ep.handle_timeout(m);
    assert!(ep.is_empty());
    ep.handle_message(m, pbx(), Message::Response(ok));
    assert!(matches!(
        &events(&mut ep)[..],
        [EndpointEvent::StrayResponse { .. }]
    ));
}

#[test]
fn invite_retransmitted_after_2xx_is_not_a_new_call() {
    let now = Instant::now();
    let mut ep = Endpoint::new(Timers::default());
    let invite = msg("INVITE", "z9hG4bKinv3", "");
    ep.handle_bytes(now, pbx(), invite.as_bytes());
    let ev = events(&mut ep);
    let [EndpointEvent::Request { key, request, .. }] = &ev[..] else {
        panic!()
    };
    ep.send_response(
        now,
        key,
        Response::for_request(request, 200, "OK", Some("t")),
    )
    .unwrap();
    ep.handle_bytes(now + Duration::from_millis(300), pbx(), invite.as_bytes());
    assert!(events(&mut ep).is_empty());
    assert!(ep.contains(key));
}

#[test]
fn client_timeout_surfaces_and_frees_the_transaction() {
    let start = Instant::now();
    let mut ep = Endpoint::new(Timers::default());
    let Message::Request(req) =
        Message::parse(msg("OPTIONS", "z9hG4bKopt1", "").as_bytes()).unwrap()
    else {
        panic!()
    };
    let key = ep.send_request(start, req, pbx()).unwrap().unwrap();
    let mut sends = transmits(&mut ep).len();
    let mut now = start;
    for _ in 0..100 {
        let Some(t) = ep.poll_timeout() else { break };
        now = t;
        ep.handle_timeout(now);
        sends += transmits(&mut ep).len();
    }
    assert_eq!(now - start, Duration::from_secs(32));
    assert_eq!(sends, 11);
    assert_eq!(events(&mut ep), [EndpointEvent::Timeout { key }]);
    assert!(ep.is_empty());
}

#[test]
fn malformed_request_gets_400_malformed_response_is_dropped() {
    let now = Instant::now();
    let mut ep = Endpoint::new(Timers::default());
    let bad = msg("OPTIONS", "z9hG4bKbad", "").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    ep.handle_bytes(now, pbx(), bad.as_bytes());
    let t = transmits(&mut ep);
    assert_eq!(t.len(), 1);
    assert!(t[0].bytes.starts_with(b"SIP/2.0 400 Bad Request\r\n"));
    assert!(events(&mut ep).is_empty());
    ep.handle_bytes(now, pbx(), b"SIP/2.0 99999 nope\r\n\r\n");
    ep.handle_bytes(now, pbx(), b"\x00\x01garbage");
    assert!(transmits(&mut ep).is_empty());
    ep.handle_bytes(now, pbx(), b"\r\n\r\n");
    assert!(transmits(&mut ep).is_empty());
    let c = ep.counters();
    assert_eq!((c.answered_malformed, c.dropped_malformed), (1, 2));
    assert_eq!(c.keepalives, 1);
}

#[test]
fn tcp_responses_go_back_on_the_connection() {
    let now = Instant::now();
    let mut ep = Endpoint::new(Timers::default());
    let peer = Peer {
        addr: "127.0.0.1:40000".parse().unwrap(),
        transport: Transport::Tcp,
    };
    let bye = msg("BYE", "z9hG4bKbye1", ";tag=x").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    ep.handle_bytes(now, peer, bye.as_bytes());
    let ev = events(&mut ep);
    let [EndpointEvent::Request { key, request, .. }] = &ev[..] else {
        panic!()
    };
    let req: &Request = request;
    ep.send_response(now, key, Response::for_request(req, 200, "OK", None))
        .unwrap();
    assert_eq!(transmits(&mut ep)[0].target, Target::Peer(peer));
    // Timer J is zero on TCP: the next timeout pass frees it.
    assert_eq!(ep.poll_timeout(), Some(now));
    ep.handle_timeout(now);
    assert!(ep.is_empty());
}

#[test]
fn transport_error_ends_client_transactions_to_that_peer_only() {
    let now = Instant::now();
    let mut ep = Endpoint::new(Timers::default());
    let other = Peer {
        addr: "127.0.0.1:5080".parse().unwrap(),
        transport: Transport::Tcp,
    };
    let tcp_pbx = Peer {
        transport: Transport::Tcp,
        ..pbx()
    };
    let parse = |m: String| match Message::parse(m.as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    };
    let k1 = ep
        .send_request(now, parse(msg("INVITE", "z9hG4bKte1", "")), tcp_pbx)
        .unwrap()
        .unwrap();
    ep.send_request(now, parse(msg("OPTIONS", "z9hG4bKte2", "")), other)
        .unwrap();
    ep.handle_transport_error(tcp_pbx);
    assert_eq!(events(&mut ep), [EndpointEvent::TransportError { key: k1 }]);
    assert_eq!(ep.len(), 1, "the transaction to the other peer survives");
}
