//! OPTIONS keepalive monitoring of the PBX and the XPhone server (RFC 3261 §11): probe every
//! interval, declare the peer down after consecutive failures, up again on the first answer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::header::{CSeq, NameAddr, Via};
use crate::message::{Headers, Method, Request};
use crate::transaction::{TransactionKey, generate_branch};

/// Reachability as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No probe has completed yet.
    Unknown,
    /// The peer answered recently.
    Up,
    /// `down_after` probes in a row failed.
    Down,
}

/// A change worth telling the operator (and routing) about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthEvent {
    /// Peer became reachable.
    Up,
    /// Peer became unreachable.
    Down,
}

/// Monitor configuration.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Request-URI of the probes (`sip:pbx.example.net:5060`).
    pub target: String,
    /// Our identity in From/To.
    pub local: NameAddr,
    /// Our Via without branch (transport and sent-by); a fresh branch is added per probe.
    pub via: Via,
    /// Time between probes.
    pub interval: Duration,
    /// Consecutive failures before Down.
    pub down_after: u32,
}

/// Sans-IO OPTIONS monitor for one peer.
#[derive(Debug)]
pub struct OptionsMonitor {
    cfg: MonitorConfig,
    health: Health,
    /// Failures since the last answer.
    failures: u32,
    /// When the next probe is due.
    next_probe: Instant,
    /// The probe in flight (one at a time).
    outstanding: Option<TransactionKey>,
    /// CSeq of the probes (one Call-ID for the monitor's life, like most PBX monitors).
    seq: u32,
    /// Call-ID and From tag, fixed for the monitor's life.
    call_id: String,
    tag: String,
    events: VecDeque<HealthEvent>,
}

impl OptionsMonitor {
    /// A monitor whose first probe is due at `now`.
    pub fn new(now: Instant, cfg: MonitorConfig, rng: &mut impl Rng) -> Self {
        Self {
            cfg,
            health: Health::Unknown,
            failures: 0,
            next_probe: now,
            outstanding: None,
            seq: 0,
            call_id: format!("{:032x}", rng.random::<u128>()),
            tag: format!("{:016x}", rng.random::<u64>()),
            events: VecDeque::new(),
        }
    }

    /// Current view of the peer.
    pub fn health(&self) -> Health {
        self.health
    }

    /// When `handle_timeout` is next due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_probe
    }

    /// Next health change.
    pub fn poll_event(&mut self) -> Option<HealthEvent> {
        self.events.pop_front()
    }

    /// Returns the OPTIONS to send through the endpoint when a probe is due. A probe still
    /// outstanding at that point counts as a failure (its transaction will also time out; only
    /// the first verdict counts).
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl Rng) -> Option<Request> {
        if now < self.next_probe {
            return None;
        }
        if self.outstanding.take().is_some() {
            self.fail();
        }
        self.next_probe = now + self.cfg.interval;
        self.seq = self.seq.wrapping_add(1) & 0x7fff_ffff;
        let mut via = self.cfg.via.clone();
        via.set_param("branch", Some(generate_branch(rng)));
        let mut from = self.cfg.local.clone();
        from.set_tag(&self.tag);
        let req = Request {
            method: Method::Options,
            uri: self.cfg.target.clone(),
            headers: Headers {
                via: vec![via],
                from,
                to: NameAddr {
                    display: None,
                    uri: self.cfg.target.clone(),
                    params: Vec::new(),
                },
                call_id: self.call_id.clone(),
                cseq: CSeq {
                    seq: self.seq,
                    method: "OPTIONS".to_owned(),
                },
                max_forwards: Some(70),
                contact: Vec::new(),
                route: Vec::new(),
                record_route: Vec::new(),
                content_type: None,
                other: Vec::new(),
            },
            body: bytes::Bytes::new(),
        };
        self.outstanding = TransactionKey::client(&req);
        Some(req)
    }

    /// A final response to a probe. Any answer proves the peer alive except 408 and 503
    /// (RFC 3261 §21.5.4: overloaded or down for maintenance).
    pub fn handle_response(&mut self, key: &TransactionKey, status: u16) {
        if self.outstanding.as_ref() != Some(key) || status < 200 {
            return;
        }
        self.outstanding = None;
        if status == 408 || status == 503 {
            self.fail();
        } else {
            self.failures = 0;
            if self.health != Health::Up {
                self.health = Health::Up;
                self.events.push_back(HealthEvent::Up);
            }
        }
    }

    /// The probe's transaction timed out (timer F).
    pub fn handle_transaction_timeout(&mut self, key: &TransactionKey) {
        if self.outstanding.as_ref() == Some(key) {
            self.outstanding = None;
            self.fail();
        }
    }

    fn fail(&mut self) {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.cfg.down_after && self.health != Health::Down {
            self.health = Health::Down;
            self.events.push_back(HealthEvent::Down);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::message::Message;

    fn monitor(now: Instant, rng: &mut ChaCha8Rng) -> OptionsMonitor {
        OptionsMonitor::new(
            now,
            MonitorConfig {
                target: "sip:pbx.example.net:5060".into(),
                local: NameAddr::parse("<sip:xcc@192.0.2.50>", "From").unwrap(),
                via: Via::parse("SIP/2.0/UDP 192.0.2.50:5060;rport").unwrap(),
                interval: Duration::from_secs(30),
                down_after: 2,
            },
            rng,
        )
    }

    #[test]
    fn probes_every_interval_and_flips_health() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let t0 = Instant::now();
        let mut m = monitor(t0, &mut rng);
        let p1 = m.handle_timeout(t0, &mut rng).unwrap();
        assert!(
            Message::parse(&p1.to_bytes()).is_ok(),
            "probe is a valid request"
        );
        assert_eq!(m.poll_timeout(), t0 + Duration::from_secs(30));
        assert!(
            m.handle_timeout(t0 + Duration::from_secs(1), &mut rng)
                .is_none()
        );
        m.handle_response(&TransactionKey::client(&p1).unwrap(), 200);
        assert_eq!(m.poll_event(), Some(HealthEvent::Up));

        // Two failures in a row (a timeout, then a 503) take it down; one answer brings it back.
        let p2 = m
            .handle_timeout(t0 + Duration::from_secs(30), &mut rng)
            .unwrap();
        assert_ne!(p2.headers.via[0].branch(), p1.headers.via[0].branch());
        assert_eq!(p2.headers.cseq.seq, 2);
        m.handle_transaction_timeout(&TransactionKey::client(&p2).unwrap());
        assert_eq!(m.health(), Health::Up);
        let p3 = m
            .handle_timeout(t0 + Duration::from_secs(60), &mut rng)
            .unwrap();
        m.handle_response(&TransactionKey::client(&p3).unwrap(), 503);
        assert_eq!(m.poll_event(), Some(HealthEvent::Down));
        let p4 = m
            .handle_timeout(t0 + Duration::from_secs(90), &mut rng)
            .unwrap();
        m.handle_response(&TransactionKey::client(&p4).unwrap(), 405);
        assert_eq!(
            m.poll_event(),
            Some(HealthEvent::Up),
            "405 still proves it alive"
        );
    }

    #[test]
    fn unanswered_probe_counts_when_the_next_is_due() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let t0 = Instant::now();
        let mut m = monitor(t0, &mut rng);
        let p1 = m.handle_timeout(t0, &mut rng).unwrap();
        m.handle_timeout(t0 + Duration::from_secs(30), &mut rng)
            .unwrap();
        m.handle_timeout(t0 + Duration::from_secs(60), &mut rng)
            .unwrap();
        assert_eq!(m.poll_event(), Some(HealthEvent::Down));
        // A late answer to an old probe is ignored.
        m.handle_response(&TransactionKey::client(&p1).unwrap(), 200);
        assert_eq!(m.health(), Health::Down);
    }
}
