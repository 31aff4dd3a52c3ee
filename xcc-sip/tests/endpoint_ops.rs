//! Model-style random operation sequences on the transaction layer: requests and responses in
//! any order, duplicated, for unknown keys, with the clock jumping. Nothing panics, every
//! transmit is a parseable message, and once the clock runs past every timer the endpoint is
//! empty (no transaction leaks).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xcc_sip::endpoint::{Endpoint, EndpointEvent, Peer};
use xcc_sip::transaction::{Timers, TransactionKey};
use xcc_sip::transport::Transport;
use xcc_sip::{Message, Request, Response};

const METHODS: [&str; 5] = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"];

fn request(method: &str, branch: u8, via_host: &str) -> Request {
    let raw = format!(
        "{method} sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {via_host};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=f\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: ops\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    match Message::parse(raw.as_bytes()).expect("valid") {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

#[test]
fn random_operation_sequences_never_leak_or_panic() {
    for seed in 0..200u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut ep = Endpoint::new(Timers::default());
        let start = Instant::now();
        let mut now = start;
        let mut server_keys: Vec<(TransactionKey, Request)> = Vec::new();
        let transport = if rng.random_bool(0.5) {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        let peer = Peer {
            addr: "127.0.0.1:5999".parse().unwrap(),
            transport,
        };
        for _ in 0..60 {
            let method = METHODS[rng.random_range(0..METHODS.len())];
            let branch = rng.random_range(0..6u8);
            match rng.random_range(0..6) {
                0 => {
                    let _ = ep.send_request(now, request(method, branch, "127.0.0.1:5060"), peer);
                }
                1 => {
                    let req = request(method, branch, "127.0.0.1:5999");
                    ep.handle_message(now, peer, Message::Request(req));
                }
                2 => {
                    // A response to something we may or may not have sent.
                    let req = request(method, branch, "127.0.0.1:5060");
                    let status = [100, 180, 200, 404, 486, 503][rng.random_range(0..6)];
                    let resp = Response::for_request(&req, status, "R", Some("t"));
                    ep.handle_message(now, peer, Message::Response(resp));
                }
                3 if !server_keys.is_empty() => {
                    let (key, req) = server_keys[rng.random_range(0..server_keys.len())].clone();
                    let status = [180, 200, 486][rng.random_range(0..3)];
                    let _ = ep.send_response(
                        now,
                        &key,
                        Response::for_request(&req, status, "R", Some("t")),
                    );
                }
                _ => {
                    now += Duration::from_millis(rng.random_range(0..5000));
                    ep.handle_timeout(now);
                }
            }
            while let Some(t) = ep.poll_transmit() {
                Message::parse(&t.bytes).expect("we only send parseable messages");
            }
            while let Some(ev) = ep.poll_event() {
                if let EndpointEvent::Request { key, request, .. } = ev {
                    server_keys.push((key, *request));
                }
            }
        }
        // Answer whatever is still open, then let every timer run out.
        for (key, req) in &server_keys {
            let _ = ep.send_response(now, key, Response::for_request(req, 500, "R", Some("t")));
        }
        for _ in 0..1000 {
            let Some(t) = ep.poll_timeout() else { break };
            now = now.max(t);
            ep.handle_timeout(now);
            while ep.poll_transmit().is_some() {}
            while ep.poll_event().is_some() {}
        }
        assert!(
            ep.is_empty(),
            "seed {seed}: {} transactions leaked",
            ep.len()
        );
    }
}
