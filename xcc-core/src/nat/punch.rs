//! Hole punching for one client leg: until the leg latches, XCC sends probes from the leg's RTP
//! socket towards the client's signalled address and candidates, so that a port-restricted NAT in
//! front of the client opens a mapping for XCC and media that XCC must send first (early media, hold
//! music, a PBX that talks first) gets through.
//!
//! Probes to ICE peers are authenticated Binding requests (USERNAME `remote:local`, PRIORITY,
//! ICE-CONTROLLED, MESSAGE-INTEGRITY under the remote password, FINGERPRINT) that a full agent
//! answers; an authenticated answer proves the path ([`Puncher::handle_response`]). Probes to
//! non-ICE peers are 28-byte STUN Binding indications (RFC 6263 §4.1 style keepalives): their first
//! byte is 0, an invalid RTP version, so RTP stacks discard them, and STUN-aware stacks ignore
//! indications. The schedule is fast at first (a client behind NAT usually starts sending within a
//! second) and then slow, with a bounded number of rounds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::ice::IceCredentials;
use super::stun::{self, BINDING_INDICATION, BINDING_REQUEST, BINDING_SUCCESS, Message, Writer};

/// Most destinations one leg probes (signalled address plus candidates); more are ignored, which
/// bounds the work per round.
pub const MAX_TARGETS: usize = 8;

/// Rounds whose transaction ids are still accepted in answers (answers may take longer than the
/// 50 ms fast interval).
const REMEMBERED_ROUNDS: usize = 8;

/// When probes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PunchSchedule {
    /// Interval between rounds at first.
    pub fast_interval: Duration,
    /// How long the fast interval lasts from the start.
    pub fast_for: Duration,
    /// Interval after that.
    pub slow_interval: Duration,
    /// Rounds in all; then the puncher stops even if the leg never latched.
    pub max_rounds: u32,
}

impl Default for PunchSchedule {
    /// 50 ms for 1 s (20 rounds), then 500 ms; 50 rounds in all (about 16 s).
    fn default() -> Self {
        PunchSchedule {
            fast_interval: Duration::from_millis(50),
            fast_for: Duration::from_secs(1),
            slow_interval: Duration::from_millis(500),
            max_rounds: 50,
        }
    }
}

/// What each probe is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// The peer does ICE: authenticated Binding requests.
    Ice {
        /// XCC's credentials on this leg.
        local: IceCredentials,
        /// The peer's credentials from its offer.
        remote: IceCredentials,
        /// ICE-CONTROLLED tie-breaker (random per leg).
        tie_breaker: u64,
        /// PRIORITY XCC would give a peer-reflexive candidate of its own.
        priority: u32,
    },
    /// The peer does not do ICE: Binding indications.
    Keepalive,
}

/// The hole-punching planner of one client leg; owned by the worker that owns the leg's socket.
#[derive(Debug)]
pub struct Puncher {
    /// Probe destinations, deduplicated.
    targets: [Option<SocketAddr>; MAX_TARGETS],
    /// What to send.
    kind: ProbeKind,
    /// When.
    schedule: PunchSchedule,
    /// First round's time.
    started: Instant,
    /// Next round's time; `None` once stopped.
    next: Option<Instant>,
    /// Rounds started.
    rounds: u32,
    /// Index of the next target to emit in the current round; `MAX_TARGETS` when none pending.
    cursor: usize,
    /// Random transaction-id bases of recent rounds (target index XORed into the last byte).
    bases: [Option<[u8; 12]>; REMEMBERED_ROUNDS],
    /// Probes emitted.
    sent: u64,
}

impl Puncher {
    /// Starts punching now towards `targets` (the signalled address first, then candidates).
    pub fn new(
        now: Instant,
        targets: &[SocketAddr],
        kind: ProbeKind,
        schedule: PunchSchedule,
    ) -> Self {
        let mut unique = [None; MAX_TARGETS];
        let mut n = 0;
        for &t in targets {
            if n == MAX_TARGETS {
                break;
            }
            if t.port() != 0 && !t.ip().is_unspecified() && !unique[..n].contains(&Some(t)) {
                unique[n] = Some(t);
                n += 1;
            }
        }
        Puncher {
            targets: unique,
            kind,
            schedule,
            started: now,
            next: (n > 0 && schedule.max_rounds > 0).then_some(now),
            rounds: 0,
            cursor: MAX_TARGETS,
            bases: [None; REMEMBERED_ROUNDS],
            sent: 0,
        }
    }

    /// The leg latched (media or an authenticated check arrived): stop probing.
    pub fn stop(&mut self) {
        self.next = None;
        self.cursor = MAX_TARGETS;
    }

    /// Whether the puncher has nothing left to do.
    pub fn is_done(&self) -> bool {
        self.next.is_none() && self.cursor >= MAX_TARGETS
    }

    /// Probes emitted so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Starts a round when one is due; `rng` draws transaction ids.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl rand::RngCore) {
        let Some(at) = self.next else {
            return;
        };
        if now < at {
            return;
        }
        let mut base = [0u8; 12];
        rng.fill_bytes(&mut base);
        self.bases.rotate_right(1);
        self.bases[0] = Some(base);
        self.cursor = 0;
        self.rounds += 1;
        self.next = if self.rounds >= self.schedule.max_rounds {
            None
        } else {
            let interval = if at.saturating_duration_since(self.started) < self.schedule.fast_for {
                self.schedule.fast_interval
            } else {
                self.schedule.slow_interval
            };
            // From the due time, so a late driver does not stretch the schedule; never in the past.
            Some((at + interval).max(now))
        };
    }

    /// The next probe of the current round, written into `buf` (at least 128 bytes): destination
    /// and length.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        while self.cursor < MAX_TARGETS {
            let index = self.cursor;
            self.cursor += 1;
            let Some(dest) = self.targets[index] else {
                self.cursor = MAX_TARGETS;
                return None;
            };
            let base = self.bases[0]?;
            let id = transaction_id(base, index);
            let written = match &self.kind {
                ProbeKind::Ice {
                    local,
                    remote,
                    tie_breaker,
                    priority,
                } => Writer::new(buf, BINDING_REQUEST, id).and_then(|mut w| {
                    write_username(&mut w, &remote.ufrag, &local.ufrag)?;
                    w.attribute(stun::attr::PRIORITY, &priority.to_be_bytes())?;
                    w.attribute(stun::attr::ICE_CONTROLLED, &tie_breaker.to_be_bytes())?;
                    w.integrity(remote.pwd.as_bytes())?;
                    w.fingerprint()?;
                    Ok(w.finish())
                }),
                ProbeKind::Keepalive => {
                    Writer::new(buf, BINDING_INDICATION, id).and_then(|mut w| {
                        w.fingerprint()?;
                        Ok(w.finish())
                    })
                }
            };
            match written {
                Ok(len) => {
                    self.sent += 1;
                    return Some((dest, len));
                }
                // Only a too-small caller buffer fails; skip rather than send a partial probe.
                Err(_) => continue,
            }
        }
        None
    }

    /// When [`Puncher::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// Offers a STUN datagram from `from`: true when it is an authenticated success answer to one
    /// of XCC's recent ICE probes from the probed address, which proves the client can be reached
    /// there (the leg may latch to `from`). Keepalive probes get no answers.
    pub fn handle_response(&self, from: SocketAddr, bytes: &[u8]) -> bool {
        let ProbeKind::Ice { remote, .. } = &self.kind else {
            return false;
        };
        let Ok(msg) = Message::parse(bytes) else {
            return false;
        };
        if msg.msg_type() != BINDING_SUCCESS {
            return false;
        }
        let Some(index) = self.targets.iter().position(|t| *t == Some(from)) else {
            return false;
        };
        let id = msg.transaction_id();
        let ours = self
            .bases
            .iter()
            .flatten()
            .any(|&base| transaction_id(base, index) == id);
        ours && msg.verify_fingerprint() && msg.verify_integrity(remote.pwd.as_bytes())
    }
}

/// Transaction id of the probe to target `index` in a round with random `base`.
fn transaction_id(mut base: [u8; 12], index: usize) -> stun::TransactionId {
    // `index` < MAX_TARGETS = 8 fits a byte.
    base[11] ^= index as u8;
    stun::TransactionId(base)
}

/// Writes USERNAME `remote:local` without allocating.
fn write_username(w: &mut Writer<'_>, remote: &str, local: &str) -> Result<(), stun::StunError> {
    let mut name = [0u8; 513];
    let len = remote.len() + 1 + local.len();
    let Some(slot) = name.get_mut(..len) else {
        return Err(stun::StunError::BufferTooSmall { capacity: 513 });
    };
    slot[..remote.len()].copy_from_slice(remote.as_bytes());
    slot[remote.len()] = b':';
    slot[remote.len() + 1..].copy_from_slice(local.as_bytes());
    w.attribute(stun::attr::USERNAME, slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::ice::{CheckLimits, CheckOutcome, IceLite};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const CLIENT: &str = "198.51.100.20:40000";
    const CANDIDATE: &str = "203.0.113.50:61000";

    /// Runs the puncher until `until` (or it stops), returning (time, destination, bytes) per probe.
    fn run(
        p: &mut Puncher,
        rng: &mut ChaCha8Rng,
        from: Instant,
        until: Instant,
    ) -> Vec<(Instant, SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        let mut now = from;
        for _ in 0..10_000 {
            p.handle_timeout(now, rng);
            while let Some((to, len)) = p.poll_transmit(&mut buf) {
                out.push((now, to, buf[..len].to_vec()));
            }
            match p.poll_timeout() {
                Some(at) if at <= until => now = at,
                _ => break,
            }
        }
        out
    }

    fn ice_kind(rng: &mut ChaCha8Rng) -> (ProbeKind, IceCredentials, IceCredentials) {
        let local = IceCredentials::generate(rng);
        let remote = IceCredentials::generate(rng);
        let kind = ProbeKind::Ice {
            local: local.clone(),
            remote: remote.clone(),
            tie_breaker: 99,
            priority: 1_853_824_767,
        };
        (kind, local, remote)
    }

    #[test]
    fn schedule_is_fast_then_slow_and_bounded() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let schedule = PunchSchedule::default();
        let mut p = Puncher::new(
            t0,
            &[CLIENT.parse().unwrap()],
            ProbeKind::Keepalive,
            schedule,
        );
        let sent = run(&mut p, &mut rng, t0, t0 + Duration::from_secs(3600));
        assert_eq!(sent.len(), 50);
        let offsets: Vec<u128> = sent.iter().map(|s| (s.0 - t0).as_millis()).collect();
        assert_eq!(offsets[..3], [0, 50, 100]);
        assert_eq!(offsets[19], 950);
        assert_eq!(offsets[20], 1000);
        assert_eq!(offsets[21], 1500);
        assert_eq!(*offsets.last().unwrap(), 1000 + 29 * 500);
        assert!(p.is_done());
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn stops_when_the_leg_latches() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut p = Puncher::new(
            t0,
            &[CLIENT.parse().unwrap()],
            ProbeKind::Keepalive,
            PunchSchedule::default(),
        );
        let before = run(&mut p, &mut rng, t0, t0 + Duration::from_millis(120));
        assert_eq!(before.len(), 3);
        p.stop();
        let after = run(
            &mut p,
            &mut rng,
            t0 + Duration::from_millis(120),
            t0 + Duration::from_secs(60),
        );
        assert!(after.is_empty());
        assert!(p.is_done());
    }

    #[test]
    fn every_round_probes_each_distinct_target() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let targets: Vec<SocketAddr> = [CLIENT, CANDIDATE, CLIENT, "0.0.0.0:9", "198.51.100.9:0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut p = Puncher::new(t0, &targets, ProbeKind::Keepalive, PunchSchedule::default());
        let sent = run(&mut p, &mut rng, t0, t0);
        let dests: Vec<SocketAddr> = sent.iter().map(|s| s.1).collect();
        assert_eq!(dests, [CLIENT.parse().unwrap(), CANDIDATE.parse().unwrap()]);
    }

    #[test]
    fn keepalive_is_not_rtp() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut p = Puncher::new(
            t0,
            &[CLIENT.parse().unwrap()],
            ProbeKind::Keepalive,
            PunchSchedule::default(),
        );
        let sent = run(&mut p, &mut rng, t0, t0);
        let bytes = &sent[0].2;
        assert_eq!(bytes.len(), 28);
        assert_eq!(bytes[0] >> 6, 0, "RTP version 0: RTP stacks drop it");
        let msg = Message::parse(bytes).unwrap();
        assert_eq!(msg.msg_type(), BINDING_INDICATION);
        assert!(msg.verify_fingerprint());
    }

    #[test]
    fn ice_probe_is_a_check_the_peer_accepts_and_its_answer_proves_the_path() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (kind, local, remote) = ice_kind(&mut rng);
        let client: SocketAddr = CLIENT.parse().unwrap();
        let mut p = Puncher::new(t0, &[client], kind, PunchSchedule::default());
        let sent = run(&mut p, &mut rng, t0, t0);
        // The client's agent, modelled by an ICE responder with the roles mirrored, accepts it.
        let mut peer = IceLite::new(remote.clone(), Some(&local), CheckLimits::default());
        let xcc: SocketAddr = "203.0.113.1:30000".parse().unwrap();
        let mut answer = [0u8; 128];
        let outcome = peer.handle_request(t0, xcc, &sent[0].2, &mut answer);
        let CheckOutcome::RoleConflict { .. } = outcome else {
            // The mirrored responder is itself "controlled", so it must see a controlled peer
            // and ask for a role switch; success would mean ICE-CONTROLLED was missing.
            panic!("expected the probe to carry ICE-CONTROLLED, got {outcome:?}");
        };
        // A success answer signed with the remote password proves the path; forgeries do not.
        let id = Message::parse(&sent[0].2).unwrap().transaction_id();
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf, BINDING_SUCCESS, id).unwrap();
        w.xor_mapped_address(xcc).unwrap();
        w.integrity(remote.pwd.as_bytes()).unwrap();
        w.fingerprint().unwrap();
        let len = w.finish();
        assert!(p.handle_response(client, &buf[..len]));
        assert!(!p.handle_response(CANDIDATE.parse().unwrap(), &buf[..len]));
        let mut forged = [0u8; 128];
        let mut w = Writer::new(&mut forged, BINDING_SUCCESS, id).unwrap();
        w.xor_mapped_address(xcc).unwrap();
        w.integrity(local.pwd.as_bytes()).unwrap();
        w.fingerprint().unwrap();
        let len = w.finish();
        assert!(!p.handle_response(client, &forged[..len]));
    }

    #[test]
    fn ice_probe_username_and_integrity_match_rfc_8445() {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let (kind, local, remote) = ice_kind(&mut rng);
        let mut p = Puncher::new(
            t0,
            &[CLIENT.parse().unwrap()],
            kind,
            PunchSchedule::default(),
        );
        let sent = run(&mut p, &mut rng, t0, t0);
        let msg = Message::parse(&sent[0].2).unwrap();
        let expected = format!("{}:{}", remote.ufrag, local.ufrag);
        assert_eq!(msg.username(), Some(expected.as_bytes()));
        assert!(msg.verify_integrity(remote.pwd.as_bytes()));
        assert_eq!(msg.ice_controlled(), Some(99));
        assert_eq!(msg.priority(), Some(1_853_824_767));
    }

    #[test]
    fn no_targets_means_nothing_to_do() {
        let p = Puncher::new(
            Instant::now(),
            &[],
            ProbeKind::Keepalive,
            PunchSchedule::default(),
        );
        assert!(p.is_done());
        assert_eq!(p.poll_timeout(), None);
    }
}
