//! Public address discovery: STUN Binding requests to the configured servers, with failover,
//! periodic refresh and change detection, in virtual time.
//!
//! XCC advertises on the client leg the public IP learned here with the port it bound (the
//! operator's NAT must forward media ports 1:1), so only a change of the mapped *IP* is an event; the
//! mapped port of the discovery socket is kept for status. The driver owns one UDP socket:
//!
//! ```text
//! loop {
//!     discovery.handle_timeout(now, &mut rng);
//!     while let Some((to, bytes)) = discovery.poll_transmit() { socket.send_to(bytes, to) }
//!     while let Some(event) = discovery.poll_event() { publish(event) }
//!     wait for a datagram or discovery.poll_timeout();
//!     on a datagram: discovery.handle_response(now, from, bytes);
//! }
//! ```

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::stun::{self, BINDING_ERROR, BINDING_REQUEST, BINDING_SUCCESS, Message, Writer};
use super::transaction::{Retransmission, Transaction, TxStep};
use crate::error::{Error, Result};

/// How discovery behaves; the defaults suit a satellite behind an operator's NAT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// STUN servers in order of preference (UDP, usually ports 3478/3479).
    pub servers: Vec<SocketAddr>,
    /// Operator-configured public address: no STUN traffic at all, the address is reported once.
    pub static_address: Option<IpAddr>,
    /// Time between successful checks; a NAT may change its public IP (DHCP, failover link).
    pub refresh: Duration,
    /// Pause after every server failed in a row before starting again at the next one.
    pub retry_after_all_failed: Duration,
    /// Retransmission schedule of one request.
    pub retransmission: Retransmission,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            servers: Vec::new(),
            static_address: None,
            refresh: Duration::from_secs(60),
            retry_after_all_failed: Duration::from_secs(10),
            retransmission: Retransmission::FAILOVER,
        }
    }
}

/// Where the current public address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSource {
    /// `static_address` in the configuration.
    Static,
    /// A STUN server's XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS) for the discovery socket.
    Stun {
        /// The server that answered.
        server: SocketAddr,
        /// The full mapping of the discovery socket (its port says whether the NAT keeps ports).
        mapped: SocketAddr,
    },
}

/// What discovery reports to the control plane (status, metrics, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// The public IP is known for the first time or changed: re-advertise client legs.
    PublicAddressChanged {
        /// The address before, `None` at the first discovery.
        previous: Option<IpAddr>,
        /// The address now.
        current: IpAddr,
        /// How it was learned.
        source: AddressSource,
    },
    /// A server did not answer within the retransmission schedule (or answered with an error);
    /// discovery moved to the next server.
    ServerUnreachable {
        /// The server.
        server: SocketAddr,
        /// The STUN error code when it answered with an error, `None` on silence.
        error_code: Option<u16>,
    },
}

/// The discovery state machine; see the module docs for the drive loop.
#[derive(Debug)]
pub struct Discovery {
    /// Settings.
    config: DiscoveryConfig,
    /// Index into `config.servers` of the server asked next (sticks to one that answers).
    server: usize,
    /// Servers that failed since the last success, to know when a round is complete.
    failures_in_round: usize,
    /// The request in flight.
    tx: Option<Transaction>,
    /// When to start the next request when none is in flight.
    next_check: Option<Instant>,
    /// The public IP as last learned.
    current: Option<IpAddr>,
    /// The last answer's full source.
    source: Option<AddressSource>,
    /// The encoded request in flight (header + FINGERPRINT).
    request: [u8; 28],
    /// A (re)transmission is waiting for `poll_transmit`.
    send_pending: bool,
    /// Events not yet polled.
    events: VecDeque<DiscoveryEvent>,
}

impl Discovery {
    /// Builds discovery; with a static address it reports that address once and never sends.
    /// Fails when neither a server nor a static address is configured.
    pub fn new(config: DiscoveryConfig, now: Instant) -> Result<Self> {
        if config.servers.is_empty() && config.static_address.is_none() {
            return Err(Error::Config {
                key: "stun_servers",
                reason: "no STUN server and no static public_address".to_owned(),
            });
        }
        if config.retransmission.max_transmits == 0 || config.retransmission.rto.is_zero() {
            return Err(Error::Config {
                key: "stun_retransmission",
                reason: "rto and max_transmits must be positive".to_owned(),
            });
        }
        let mut discovery = Discovery {
            server: 0,
            failures_in_round: 0,
            tx: None,
            next_check: None,
            current: None,
            source: None,
            request: [0; 28],
            send_pending: false,
            events: VecDeque::new(),
            config,
        };
        match discovery.config.static_address {
            Some(ip) => {
                discovery.current = Some(ip);
                discovery.source = Some(AddressSource::Static);
                discovery
                    .events
                    .push_back(DiscoveryEvent::PublicAddressChanged {
                        previous: None,
                        current: ip,
                        source: AddressSource::Static,
                    });
            }
            None => discovery.next_check = Some(now),
        }
        Ok(discovery)
    }

    /// The public IP as last learned (or configured).
    pub fn public_address(&self) -> Option<IpAddr> {
        self.current
    }

    /// How the public IP was learned.
    pub fn source(&self) -> Option<AddressSource> {
        self.source
    }

    /// Asks again now (on demand, e.g. `xccctl stun-check`, or when an interface changed). No effect
    /// while a request is in flight or with a static address.
    pub fn check_now(&mut self, now: Instant) {
        if self.tx.is_none() && self.config.static_address.is_none() {
            self.next_check = Some(now);
        }
    }

    /// Advances timers: retransmits, fails over, starts refreshes. `rng` draws transaction ids.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl rand::RngCore) {
        if let Some(tx) = self.tx.as_mut() {
            match tx.on_timeout(now) {
                TxStep::Wait => {}
                TxStep::Retransmit => self.send_pending = true,
                TxStep::TimedOut => self.fail(now, None),
            }
        }
        if self.tx.is_none() && self.next_check.is_some_and(|at| at <= now) {
            self.start(now, rng);
        }
    }

    /// Sends a fresh request to the current server.
    fn start(&mut self, now: Instant, rng: &mut impl rand::RngCore) {
        let Some(&dest) = self.config.servers.get(self.server) else {
            return;
        };
        let id = stun::TransactionId::random(rng);
        let written = Writer::new(&mut self.request, BINDING_REQUEST, id).and_then(|mut w| {
            w.fingerprint()?;
            Ok(w.finish())
        });
        // 20-byte header + 8-byte FINGERPRINT always fit the 28-byte buffer.
        if written != Ok(self.request.len()) {
            return;
        }
        self.tx = Some(Transaction::start(
            now,
            id,
            dest,
            self.config.retransmission,
        ));
        self.next_check = None;
        self.send_pending = true;
    }

    /// The current server failed: report it and move on, immediately unless the round is over.
    fn fail(&mut self, now: Instant, error_code: Option<u16>) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        tracing::warn!(server = %tx.dest, ?error_code, "STUN server unreachable");
        self.events.push_back(DiscoveryEvent::ServerUnreachable {
            server: tx.dest,
            error_code,
        });
        self.send_pending = false;
        let servers = self.config.servers.len();
        self.server = (self.server + 1) % servers;
        self.failures_in_round += 1;
        if self.failures_in_round >= servers {
            self.failures_in_round = 0;
            self.next_check = Some(now + self.config.retry_after_all_failed);
        } else {
            self.next_check = Some(now);
        }
    }

    /// Offers a datagram received on the discovery socket. Returns whether it answered the request
    /// in flight; anything else (late, forged, from another address, malformed) is ignored.
    pub fn handle_response(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        let Some(tx) = self.tx else {
            return false;
        };
        let Ok(msg) = Message::parse(bytes) else {
            return false;
        };
        if msg.transaction_id() != tx.id || from != tx.dest {
            return false;
        }
        if msg.has_fingerprint() && !msg.verify_fingerprint() {
            return false;
        }
        match msg.msg_type() {
            BINDING_SUCCESS => {
                let Some(mapped) = msg.xor_mapped_address().or_else(|| msg.mapped_address()) else {
                    return false;
                };
                self.succeed(now, tx.dest, mapped);
                true
            }
            BINDING_ERROR => {
                self.fail(now, msg.error_code());
                true
            }
            _ => false,
        }
    }

    /// Records an answer and schedules the refresh.
    fn succeed(&mut self, now: Instant, server: SocketAddr, mapped: SocketAddr) {
        self.tx = None;
        self.send_pending = false;
        self.failures_in_round = 0;
        self.next_check = Some(now + self.config.refresh);
        let source = AddressSource::Stun { server, mapped };
        self.source = Some(source);
        let ip = mapped.ip();
        if self.current != Some(ip) {
            tracing::info!(previous = ?self.current, current = %ip, %server, "public address learned");
            self.events.push_back(DiscoveryEvent::PublicAddressChanged {
                previous: self.current,
                current: ip,
                source,
            });
            self.current = Some(ip);
        }
    }

    /// The next datagram to send, if any: destination and bytes.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, &[u8])> {
        if !self.send_pending {
            return None;
        }
        self.send_pending = false;
        let dest = self.tx?.dest;
        Some((dest, &self.request))
    }

    /// When [`Discovery::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.tx {
            Some(tx) => Some(tx.deadline()),
            None => self.next_check,
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DiscoveryEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const A: &str = "127.0.0.1:3478";
    const B: &str = "127.0.0.2:3479";

    fn config(servers: &[&str]) -> DiscoveryConfig {
        DiscoveryConfig {
            servers: servers.iter().map(|s| s.parse().unwrap()).collect(),
            ..DiscoveryConfig::default()
        }
    }

    /// A server's answer to `request` reporting `mapped`.
    fn answer(request: &[u8], mapped: SocketAddr, xor: bool) -> Vec<u8> {
        let id = Message::parse(request).unwrap().transaction_id();
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf, BINDING_SUCCESS, id).unwrap();
        if xor {
            w.xor_mapped_address(mapped).unwrap();
        } else {
            let ip = match mapped.ip() {
                IpAddr::V4(ip) => ip.octets(),
                IpAddr::V6(_) => unreachable!("tests use IPv4"),
            };
            let mut v = vec![0, 1];
            v.extend_from_slice(&mapped.port().to_be_bytes());
            v.extend_from_slice(&ip);
            w.attribute(stun::attr::MAPPED_ADDRESS, &v).unwrap();
        }
        w.fingerprint().unwrap();
        let len = w.finish();
        buf[..len].to_vec()
    }

    /// Drives timers up to `until`, collecting (time, destination, request) of every send.
    fn run(
        d: &mut Discovery,
        rng: &mut ChaCha8Rng,
        from: Instant,
        until: Instant,
    ) -> Vec<(Instant, SocketAddr, Vec<u8>)> {
        let mut sent = Vec::new();
        let mut now = from;
        for _ in 0..10_000 {
            d.handle_timeout(now, rng);
            while let Some((to, bytes)) = d.poll_transmit() {
                sent.push((now, to, bytes.to_vec()));
            }
            match d.poll_timeout() {
                Some(at) if at <= until => now = at.max(now),
                _ => break,
            }
        }
        sent
    }

    #[test]
    fn learns_address_from_xor_mapped_address() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut d = Discovery::new(config(&[A]), t0).unwrap();
        let sent = run(&mut d, &mut rng, t0, t0);
        assert_eq!(sent.len(), 1);
        let (_, to, req) = &sent[0];
        assert_eq!(*to, A.parse::<SocketAddr>().unwrap());
        let mapped: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        assert!(d.handle_response(t0, *to, &answer(req, mapped, true)));
        assert_eq!(d.public_address(), Some(mapped.ip()));
        assert_eq!(
            d.poll_event(),
            Some(DiscoveryEvent::PublicAddressChanged {
                previous: None,
                current: mapped.ip(),
                source: AddressSource::Stun {
                    server: *to,
                    mapped
                }
            })
        );
    }

    #[test]
    fn falls_back_to_mapped_address_of_old_servers() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut d = Discovery::new(config(&[A]), t0).unwrap();
        let sent = run(&mut d, &mut rng, t0, t0);
        let mapped: SocketAddr = "203.0.113.8:1234".parse().unwrap();
        assert!(d.handle_response(t0, sent[0].1, &answer(&sent[0].2, mapped, false)));
        assert_eq!(d.public_address(), Some(mapped.ip()));
    }

    #[test]
    fn silent_server_fails_over_to_the_next() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut d = Discovery::new(config(&[A, B]), t0).unwrap();
        let fail_at = t0 + Retransmission::FAILOVER.timeout();
        let sent = run(&mut d, &mut rng, t0, fail_at);
        let to_a = sent.iter().filter(|s| s.1 == A.parse().unwrap()).count();
        assert_eq!(to_a, 4, "Rc sends to the first server");
        let (at, to, req) = sent.last().unwrap();
        assert_eq!(*to, B.parse::<SocketAddr>().unwrap());
        assert_eq!(*at, fail_at, "failover is immediate");
        assert_eq!(
            d.poll_event(),
            Some(DiscoveryEvent::ServerUnreachable {
                server: A.parse().unwrap(),
                error_code: None
            })
        );
        let mapped: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        assert!(d.handle_response(*at, *to, &answer(req, mapped, true)));
        assert_eq!(d.public_address(), Some(mapped.ip()));
    }

    #[test]
    fn all_servers_down_retries_after_pause_then_recovers() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let cfg = config(&[A, B]);
        let pause = cfg.retry_after_all_failed;
        let mut d = Discovery::new(cfg, t0).unwrap();
        let round = Retransmission::FAILOVER.timeout() * 2;
        let sent = run(&mut d, &mut rng, t0, t0 + round);
        assert_eq!(sent.len(), 8);
        assert_eq!(d.poll_timeout(), Some(t0 + round + pause));
        let sent = run(&mut d, &mut rng, t0 + round, t0 + round + pause);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1, A.parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn refresh_detects_a_changed_address() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let cfg = config(&[A]);
        let refresh = cfg.refresh;
        let mut d = Discovery::new(cfg, t0).unwrap();
        let sent = run(&mut d, &mut rng, t0, t0);
        let first: SocketAddr = "203.0.113.10:4000".parse().unwrap();
        d.handle_response(t0, sent[0].1, &answer(&sent[0].2, first, true));
        d.poll_event();
        // Same IP, other port: no event (media advertises the bound port, not this mapping).
        let t1 = t0 + refresh;
        let sent = run(&mut d, &mut rng, t0, t1);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, t1);
        let moved_port = SocketAddr::new(first.ip(), 4001);
        d.handle_response(t1, sent[0].1, &answer(&sent[0].2, moved_port, true));
        assert_eq!(d.poll_event(), None);
        // New IP: event with the previous one.
        let t2 = t1 + refresh;
        let sent = run(&mut d, &mut rng, t1, t2);
        let second: SocketAddr = "203.0.113.11:4000".parse().unwrap();
        d.handle_response(t2, sent[0].1, &answer(&sent[0].2, second, true));
        assert!(matches!(
            d.poll_event(),
            Some(DiscoveryEvent::PublicAddressChanged { previous: Some(p), current: c, .. })
                if p == first.ip() && c == second.ip()
        ));
    }

    #[test]
    fn bogus_responses_are_ignored() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let mut d = Discovery::new(config(&[A]), t0).unwrap();
        let sent = run(&mut d, &mut rng, t0, t0);
        let (_, server, req) = &sent[0];
        let mapped: SocketAddr = "198.51.100.66:6666".parse().unwrap();
        let good = answer(req, mapped, true);
        // From another address.
        assert!(!d.handle_response(t0, "127.0.0.9:3478".parse().unwrap(), &good));
        // Wrong transaction id.
        let mut wrong_id = good.clone();
        wrong_id[10] ^= 0xff;
        assert!(!d.handle_response(t0, *server, &wrong_id));
        // Corrupted (fingerprint no longer matches).
        let mut corrupt = good.clone();
        corrupt[27] ^= 1;
        assert!(!d.handle_response(t0, *server, &corrupt));
        // A success without any address.
        let id = Message::parse(req).unwrap().transaction_id();
        let mut buf = [0u8; 20];
        let len = Writer::new(&mut buf, BINDING_SUCCESS, id).unwrap().finish();
        assert!(!d.handle_response(t0, *server, &buf[..len]));
        // Garbage and truncations.
        for len in 0..good.len() {
            assert!(!d.handle_response(t0, *server, &good[..len]));
        }
        assert_eq!(d.public_address(), None);
        assert_eq!(d.poll_event(), None);
        // The real answer still works.
        assert!(d.handle_response(t0, *server, &good));
        assert_eq!(d.public_address(), Some(mapped.ip()));
    }

    #[test]
    fn error_response_fails_over_with_its_code() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut d = Discovery::new(config(&[A, B]), t0).unwrap();
        let sent = run(&mut d, &mut rng, t0, t0);
        let id = Message::parse(&sent[0].2).unwrap().transaction_id();
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf, BINDING_ERROR, id).unwrap();
        w.error_code(500, "Server Error").unwrap();
        let len = w.finish();
        assert!(d.handle_response(t0, sent[0].1, &buf[..len]));
        assert_eq!(
            d.poll_event(),
            Some(DiscoveryEvent::ServerUnreachable {
                server: A.parse().unwrap(),
                error_code: Some(500)
            })
        );
        let sent = run(&mut d, &mut rng, t0, t0);
        assert_eq!(sent[0].1, B.parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn check_now_asks_before_the_refresh_is_due() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        let mut d = Discovery::new(config(&[A]), t0).unwrap();
        let sent = run(&mut d, &mut rng, t0, t0);
        let mapped: SocketAddr = "203.0.113.12:4000".parse().unwrap();
        d.handle_response(t0, sent[0].1, &answer(&sent[0].2, mapped, true));
        let t1 = t0 + Duration::from_secs(5);
        assert!(d.poll_timeout() > Some(t1));
        d.check_now(t1);
        assert_eq!(d.poll_timeout(), Some(t1));
        let sent = run(&mut d, &mut rng, t1, t1);
        assert_eq!(sent.len(), 1);
    }

    #[test]
    fn static_address_short_circuits_stun() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut cfg = config(&[A]);
        cfg.static_address = Some("203.0.113.1".parse().unwrap());
        let mut d = Discovery::new(cfg, t0).unwrap();
        assert!(matches!(
            d.poll_event(),
            Some(DiscoveryEvent::PublicAddressChanged {
                source: AddressSource::Static,
                ..
            })
        ));
        let sent = run(&mut d, &mut rng, t0, t0 + Duration::from_secs(3600));
        assert!(sent.is_empty());
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn transaction_ids_differ_between_requests() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut d = Discovery::new(config(&[A, B]), t0).unwrap();
        let sent = run(
            &mut d,
            &mut rng,
            t0,
            t0 + Retransmission::FAILOVER.timeout(),
        );
        let first = Message::parse(&sent[0].2).unwrap().transaction_id();
        let retransmit = Message::parse(&sent[1].2).unwrap().transaction_id();
        let next_server = Message::parse(&sent.last().unwrap().2)
            .unwrap()
            .transaction_id();
        assert_eq!(first, retransmit, "a retransmission keeps its id");
        assert_ne!(first, next_server);
    }
}
