//! Two endpoints over a seeded lossy network in virtual time: retransmissions and absorption
//! must carry INVITE/486/ACK and BYE/200 through 30 % loss without duplicate requests upstairs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xcc_sip::endpoint::{Endpoint, EndpointEvent, Peer, Target};
use xcc_sip::transaction::Timers;
use xcc_sip::transport::Transport;
use xcc_sip::{Message, Response};

const A: &str = "127.0.0.1:5060";
const B: &str = "127.0.0.1:5070";

fn peer(s: &str) -> Peer {
    Peer {
        addr: s.parse().unwrap(),
        transport: Transport::Udp,
    }
}

/// In-flight datagrams: (arrival, from, to, bytes).
type Wire = VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>;

struct Pair {
    a: Endpoint,
    b: Endpoint,
    wire: Wire,
    rng: ChaCha8Rng,
    loss: f64,
    now: Instant,
    b_requests: Vec<String>,
    a_finals: Vec<u16>,
    a_timeouts: usize,
}

impl Pair {
    fn ship(&mut self) {
        for (ep, from) in [(&mut self.a, A), (&mut self.b, B)] {
            while let Some(t) = ep.poll_transmit() {
                let Target::Peer(p) = t.target else {
                    panic!("loopback only")
                };
                if self.rng.random_bool(self.loss) {
                    continue;
                }
                let delay = Duration::from_millis(self.rng.random_range(5..60));
                self.wire
                    .push_back((self.now + delay, from.parse().unwrap(), p.addr, t.bytes));
            }
        }
    }

    fn collect(&mut self) {
        while let Some(ev) = self.a.poll_event() {
            match ev {
                EndpointEvent::Response { response, .. } if response.status >= 200 => {
                    self.a_finals.push(response.status)
                }
                EndpointEvent::Timeout { .. } => self.a_timeouts += 1,
                _ => {}
            }
        }
        while let Some(ev) = self.b.poll_event() {
            if let EndpointEvent::Request { key, request, .. } = ev {
                self.b_requests.push(request.method.to_string());
                let status = if request.method.as_str() == "INVITE" {
                    486
                } else {
                    200
                };
                let resp = Response::for_request(&request, status, "X", Some("btag"));
                self.b.send_response(self.now, &key, resp).unwrap();
            }
        }
        self.ship();
    }

    /// Advances to the next packet arrival or timer, bounded.
    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        for _ in 0..10_000 {
            self.collect();
            let next_pkt = self.wire.iter().map(|w| w.0).min();
            let next = [next_pkt, self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|&n| n <= end) else {
                break;
            };
            self.now = self.now.max(next);
            let (ready, rest): (Wire, Wire) = self.wire.drain(..).partition(|w| w.0 <= self.now);
            self.wire = rest;
            for (_, from, to, bytes) in ready {
                let ep = if to == A.parse().unwrap() {
                    &mut self.a
                } else {
                    &mut self.b
                };
                ep.handle_bytes(self.now, peer(&from.to_string()), &bytes);
            }
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
        }
    }
}

fn request(method: &str, branch: &str) -> xcc_sip::Request {
    let raw = format!(
        "{method} sip:b@{B} SIP/2.0\r\nVia: SIP/2.0/UDP {A};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:a@{A}>;tag=atag\r\nTo: <sip:b@{B}>\r\nCall-ID: pair\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    match Message::parse(raw.as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    }
}

#[test]
fn transactions_survive_thirty_percent_loss() {
    let mut completed = 0;
    for seed in 0..20u64 {
        let mut p = Pair {
            a: Endpoint::new(Timers::default()),
            b: Endpoint::new(Timers::default()),
            wire: VecDeque::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            loss: 0.3,
            now: Instant::now(),
            b_requests: Vec::new(),
            a_finals: Vec::new(),
            a_timeouts: 0,
        };
        let now = p.now;
        p.a.send_request(now, request("INVITE", "z9hG4bKinv"), peer(B))
            .unwrap();
        p.a.send_request(now, request("BYE", "z9hG4bKbye"), peer(B))
            .unwrap();
        p.run(Duration::from_secs(60));
        // Each request reaches B's user at most once however often it was retransmitted.
        assert!(p.b_requests.iter().filter(|m| *m == "INVITE").count() <= 1);
        assert!(p.b_requests.iter().filter(|m| *m == "BYE").count() <= 1);
        // Each client transaction ends exactly once: a final response or a timeout.
        assert_eq!(
            p.a_finals.len() + p.a_timeouts,
            2,
            "seed {seed}: {:?}",
            p.a_finals
        );
        if p.a_timeouts == 0 {
            completed += 1;
            let mut finals = p.a_finals.clone();
            finals.sort();
            assert_eq!(finals, [200, 486]);
        }
        // Everything is cleaned up after the wait timers.
        assert!(p.a.is_empty() && p.b.is_empty(), "seed {seed} leaked");
    }
    assert!(
        completed >= 18,
        "only {completed}/20 completed at 30 % loss"
    );
}
