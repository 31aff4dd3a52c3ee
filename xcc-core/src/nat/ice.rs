//! ICE-lite responder for one client leg (RFC 8445 §2.5 and §7.3): answers the peer's
//! connectivity checks on XCC's media port so that ICE softphones select XCC's candidate, and tells
//! the leg when a check nominated a path it should latch to.
//!
//! XCC is always the lite, controlled agent: it gathers only host and server-reflexive candidates,
//! never sends checks of its own as part of ICE, and lets the full agent decide. A response is
//! written only for a request that carries a valid FINGERPRINT, the right USERNAME and a valid
//! MESSAGE-INTEGRITY under the local password, so a spoofed source can never turn the port into a
//! reflector; the response has a fixed maximum size ([`MAX_RESPONSE_LEN`]). A per-source and a
//! per-leg token bucket bound the HMAC work an attacker can cause. Nothing here allocates after
//! construction.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use super::stun::{BINDING_ERROR, BINDING_INDICATION, BINDING_REQUEST, BINDING_SUCCESS};
use super::stun::{Message, Writer};

/// The largest response [`IceLite::handle_request`] writes: header (20) + XOR-MAPPED-ADDRESS for
/// IPv6 (24) + MESSAGE-INTEGRITY (24) + FINGERPRINT (8). A 487 error response is smaller.
pub const MAX_RESPONSE_LEN: usize = 76;

/// The ICE character set (RFC 8445 §15.4: ALPHA / DIGIT / "+" / "/"): 64 symbols, so one random
/// byte masked to 6 bits picks one without bias.
const ICE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Length of generated ufrags: 8 symbols, 48 bits (RFC 8445 §5.3 asks for at least 24).
const UFRAG_LEN: usize = 8;
/// Length of generated passwords: 24 symbols, 144 bits (RFC 8445 §5.3 asks for at least 128).
const PWD_LEN: usize = 24;

/// One side's ICE username fragment and password (`a=ice-ufrag`, `a=ice-pwd`).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IceCredentials {
    /// Username fragment; public, appears in every check.
    pub ufrag: String,
    /// Password; keys MESSAGE-INTEGRITY. Kept out of `Debug` output.
    pub pwd: String,
}

impl fmt::Debug for IceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceCredentials")
            .field("ufrag", &self.ufrag)
            .field("pwd", &"<redacted>")
            .finish()
    }
}

impl IceCredentials {
    /// Fresh local credentials. The password is a key: pass a CSPRNG (e.g. `rand::rngs::OsRng`
    /// wrapped, or `ThreadRng`) in production; tests pass a seeded one.
    pub fn generate(rng: &mut impl rand::RngCore) -> Self {
        let mut bytes = [0u8; UFRAG_LEN + PWD_LEN];
        rng.fill_bytes(&mut bytes);
        let mut symbols = bytes
            .iter()
            .map(|b| char::from(ICE_CHARS[usize::from(b & 63)]));
        IceCredentials {
            ufrag: symbols.by_ref().take(UFRAG_LEN).collect(),
            pwd: symbols.collect(),
        }
    }

    /// Whether a ufrag / pwd pair from an offer is acceptable (RFC 8445 §15.4 lengths and
    /// character set: ufrag 4-256, pwd 22-256 ice-chars).
    pub fn is_valid(&self) -> bool {
        let ok = |s: &str, min: usize| {
            (min..=256).contains(&s.len()) && s.bytes().all(|b| ICE_CHARS.contains(&b))
        };
        ok(&self.ufrag, 4) && ok(&self.pwd, 22)
    }
}

/// Token-bucket limits for STUN checks on one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckLimits {
    /// Checks one source may send in a burst (a full agent retransmits and re-checks; 20 is ample).
    pub burst_per_source: u32,
    /// Sustained checks per second from one source.
    pub rate_per_source: u32,
    /// Burst over all sources of the leg (bounds work under spoofed-source floods).
    pub burst_per_leg: u32,
    /// Sustained checks per second over all sources of the leg.
    pub rate_per_leg: u32,
}

impl Default for CheckLimits {
    fn default() -> Self {
        CheckLimits {
            burst_per_source: 20,
            rate_per_source: 10,
            burst_per_leg: 100,
            rate_per_leg: 50,
        }
    }
}

/// Sources tracked per leg; beyond that the least recently seen source is forgotten.
const LIMITER_SLOTS: usize = 16;

/// A token bucket in thousandths of a token, so integer arithmetic refills smoothly.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Milli-tokens available.
    milli: u64,
    /// Last refill.
    last: Instant,
}

impl Bucket {
    fn full(now: Instant, burst: u32) -> Self {
        Bucket {
            milli: u64::from(burst) * 1000,
            last: now,
        }
    }

    /// Refills for the time since the last call and takes one token if there is one.
    fn take(&mut self, now: Instant, burst: u32, rate: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        // Capped at u32::MAX ms so the product stays below 2^64.
        let refill = elapsed.as_millis().min(u128::from(u32::MAX)) as u64 * u64::from(rate);
        self.milli = self
            .milli
            .saturating_add(refill)
            .min(u64::from(burst) * 1000);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Per-source plus per-leg rate limit in a fixed table: no allocation per packet.
#[derive(Debug)]
struct CheckLimiter {
    /// Limits.
    limits: CheckLimits,
    /// Recently seen sources and their buckets.
    slots: [Option<(SocketAddr, Bucket)>; LIMITER_SLOTS],
    /// The whole leg's bucket.
    leg: Option<Bucket>,
}

impl CheckLimiter {
    fn new(limits: CheckLimits) -> Self {
        CheckLimiter {
            limits,
            slots: [None; LIMITER_SLOTS],
            leg: None,
        }
    }

    /// Whether a check from `from` may be processed now.
    fn allow(&mut self, now: Instant, from: SocketAddr) -> bool {
        let l = self.limits;
        // The source's bucket first, so one flooding source cannot drain the leg's bucket and
        // starve the real peer; the leg's bucket then bounds sources that rotate.
        if !self.take_source(now, from) {
            return false;
        }
        let leg = self
            .leg
            .get_or_insert_with(|| Bucket::full(now, l.burst_per_leg));
        leg.take(now, l.burst_per_leg, l.rate_per_leg)
    }

    /// Takes a token from `from`'s bucket, tracking it if new.
    fn take_source(&mut self, now: Instant, from: SocketAddr) -> bool {
        let l = self.limits;
        if let Some((_, bucket)) = self.slots.iter_mut().flatten().find(|(a, _)| *a == from) {
            return bucket.take(now, l.burst_per_source, l.rate_per_source);
        }
        // New source: a free slot, else the one seen longest ago.
        let victim = self
            .slots
            .iter()
            .position(Option::is_none)
            .or_else(|| (0..LIMITER_SLOTS).min_by_key(|&i| self.slots[i].map(|(_, b)| b.last)))
            .unwrap_or(0);
        let mut bucket = Bucket::full(now, l.burst_per_source);
        let allowed = bucket.take(now, l.burst_per_source, l.rate_per_source);
        self.slots[victim] = Some((from, bucket));
        allowed
    }
}

/// Why a datagram got no success response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckDrop {
    /// Over the per-source or per-leg rate.
    RateLimited,
    /// Not a well-formed STUN message.
    Malformed,
    /// A STUN message other than a Binding request or indication (responses to XCC's own
    /// hole-punching requests go to [`super::punch::Puncher`]).
    NotRequest,
    /// No FINGERPRINT (ICE requires it, RFC 8445 §7.2.2).
    NoFingerprint,
    /// FINGERPRINT does not match.
    BadFingerprint,
    /// USERNAME absent or not `local-ufrag:remote-ufrag`.
    BadUsername,
    /// MESSAGE-INTEGRITY absent.
    NoIntegrity,
    /// MESSAGE-INTEGRITY does not verify under the local password.
    BadIntegrity,
    /// The caller's output buffer is smaller than [`MAX_RESPONSE_LEN`].
    BufferTooSmall,
}

/// What [`IceLite::handle_request`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// An authenticated check: send `out[..len]` back to `from`. With `nominated` the controlling
    /// agent selected this path (USE-CANDIDATE): the leg latches to `from`.
    Success {
        /// Response length in `out`.
        len: usize,
        /// USE-CANDIDATE was present.
        nominated: bool,
    },
    /// An authenticated check from an agent that also claims the controlled role: send the 487
    /// (Role Conflict) in `out[..len]` so it becomes controlling (a lite agent cannot).
    RoleConflict {
        /// Response length in `out`.
        len: usize,
    },
    /// A Binding indication (keepalive, RFC 6263): nothing to send.
    Keepalive,
    /// Nothing to send; counted by reason.
    Dropped(CheckDrop),
}

/// Counters of one responder, for the leg's snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckCounters {
    /// Success responses written.
    pub answered: u64,
    /// Of those, with USE-CANDIDATE.
    pub nominations: u64,
    /// 487 responses written.
    pub role_conflicts: u64,
    /// Binding indications seen.
    pub keepalives: u64,
    /// Requests refused (any [`CheckDrop`]).
    pub refused: u64,
    /// Of those, refused by the rate limit.
    pub rate_limited: u64,
}

/// The ICE-lite responder of one client leg; owned by the worker that owns the leg's socket.
#[derive(Debug)]
pub struct IceLite {
    /// XCC's credentials for this leg (signalled in the answer).
    local: IceCredentials,
    /// The peer's ufrag from the offer; `None` accepts any remote part of USERNAME.
    remote_ufrag: Option<String>,
    /// Rate limits.
    limiter: CheckLimiter,
    /// Counters.
    counters: CheckCounters,
}

impl IceLite {
    /// A responder with `local` credentials; `remote` comes from the offer (`None` when the offer
    /// had no ufrag, or before it is known).
    pub fn new(
        local: IceCredentials,
        remote: Option<&IceCredentials>,
        limits: CheckLimits,
    ) -> Self {
        IceLite {
            local,
            remote_ufrag: remote.map(|r| r.ufrag.clone()),
            limiter: CheckLimiter::new(limits),
            counters: CheckCounters::default(),
        }
    }

    /// XCC's credentials for the answer.
    pub fn local(&self) -> &IceCredentials {
        &self.local
    }

    /// Updates the remote ufrag after a re-offer (ICE restart changes it).
    pub fn set_remote(&mut self, remote: Option<&IceCredentials>) {
        self.remote_ufrag = remote.map(|r| r.ufrag.clone());
    }

    /// Counters so far.
    pub fn counters(&self) -> CheckCounters {
        self.counters
    }

    /// Handles one STUN datagram from `from` (already recognised with [`super::stun::is_stun`]);
    /// a response, if any, is written into `out`.
    pub fn handle_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        out: &mut [u8],
    ) -> CheckOutcome {
        let outcome = self.check(now, from, bytes, out);
        let c = &mut self.counters;
        match outcome {
            CheckOutcome::Success { nominated, .. } => {
                c.answered += 1;
                c.nominations += u64::from(nominated);
            }
            CheckOutcome::RoleConflict { .. } => c.role_conflicts += 1,
            CheckOutcome::Keepalive => c.keepalives += 1,
            CheckOutcome::Dropped(reason) => {
                c.refused += 1;
                c.rate_limited += u64::from(reason == CheckDrop::RateLimited);
            }
        }
        outcome
    }

    fn check(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        out: &mut [u8],
    ) -> CheckOutcome {
        use CheckDrop::*;
        use CheckOutcome::Dropped;
        if !self.limiter.allow(now, from) {
            return Dropped(RateLimited);
        }
        let Ok(msg) = Message::parse(bytes) else {
            return Dropped(Malformed);
        };
        match msg.msg_type() {
            BINDING_REQUEST => {}
            BINDING_INDICATION => return CheckOutcome::Keepalive,
            _ => return Dropped(NotRequest),
        }
        if !msg.has_fingerprint() {
            return Dropped(NoFingerprint);
        }
        if !msg.verify_fingerprint() {
            return Dropped(BadFingerprint);
        }
        if !self.username_matches(msg.username()) {
            return Dropped(BadUsername);
        }
        if !msg.has_integrity() {
            return Dropped(NoIntegrity);
        }
        if !msg.verify_integrity(self.local.pwd.as_bytes()) {
            return Dropped(BadIntegrity);
        }
        if out.len() < MAX_RESPONSE_LEN {
            return Dropped(BufferTooSmall);
        }
        let id = msg.transaction_id();
        let key = self.local.pwd.as_bytes();
        if msg.ice_controlled().is_some() {
            // RFC 8445 §7.3.1.1: both sides claim "controlled". A lite agent cannot become
            // controlling, so it acts as if its tie-breaker were the smallest possible: it keeps
            // its role and answers 487, and the full agent switches to controlling.
            let written = Writer::new(out, BINDING_ERROR, id).and_then(|mut w| {
                w.error_code(487, "Role Conflict")?;
                w.integrity(key)?;
                w.fingerprint()?;
                Ok(w.finish())
            });
            return match written {
                Ok(len) => CheckOutcome::RoleConflict { len },
                Err(_) => Dropped(BufferTooSmall),
            };
        }
        let written = Writer::new(out, BINDING_SUCCESS, id).and_then(|mut w| {
            w.xor_mapped_address(from)?;
            w.integrity(key)?;
            w.fingerprint()?;
            Ok(w.finish())
        });
        match written {
            Ok(len) => CheckOutcome::Success {
                len,
                nominated: msg.use_candidate(),
            },
            // `out` holds MAX_RESPONSE_LEN bytes, the most these three attributes need.
            Err(_) => Dropped(BufferTooSmall),
        }
    }

    /// USERNAME must be `<local ufrag>:<remote ufrag>` (RFC 8445 §7.2.2).
    fn username_matches(&self, username: Option<&[u8]>) -> bool {
        let Some(username) = username else {
            return false;
        };
        let local = self.local.ufrag.as_bytes();
        let Some(rest) = username
            .strip_prefix(local)
            .and_then(|r| r.strip_prefix(b":"))
        else {
            return false;
        };
        match &self.remote_ufrag {
            Some(remote) => rest == remote.as_bytes(),
            None => !rest.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::time::Duration;

    /// How long one token takes to refill at `rate` per second.
    fn token_interval(rate: u32) -> Duration {
        Duration::from_millis(1000 / u64::from(rate))
    }

    #[test]
    fn generated_credentials_meet_rfc_8445() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let a = IceCredentials::generate(&mut rng);
        let b = IceCredentials::generate(&mut rng);
        assert!(a.is_valid() && b.is_valid());
        assert_eq!((a.ufrag.len(), a.pwd.len()), (UFRAG_LEN, PWD_LEN));
        assert_ne!(a, b);
        assert!(
            !format!("{a:?}").contains(&a.pwd),
            "Debug hides the password"
        );
    }

    #[test]
    fn unknown_remote_ufrag_accepts_any_non_empty_remote_part() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let local = IceCredentials::generate(&mut rng);
        let ice = IceLite::new(local.clone(), None, CheckLimits::default());
        let ok = format!("{}:peer", local.ufrag);
        let empty = format!("{}:", local.ufrag);
        assert!(ice.username_matches(Some(ok.as_bytes())));
        assert!(!ice.username_matches(Some(empty.as_bytes())));
        assert!(!ice.username_matches(Some(local.ufrag.as_bytes())));
        assert!(!ice.username_matches(None));
    }

    #[test]
    fn invalid_offer_credentials_are_refused() {
        let short = IceCredentials {
            ufrag: "abc".into(),
            pwd: "x".repeat(22),
        };
        let bad_char = IceCredentials {
            ufrag: "abcd".into(),
            pwd: format!("{}!", "x".repeat(22)),
        };
        assert!(!short.is_valid() && !bad_char.is_valid());
    }

    #[test]
    fn limiter_refuses_after_burst_and_refills() {
        let limits = CheckLimits {
            burst_per_source: 3,
            rate_per_source: 10,
            burst_per_leg: 100,
            rate_per_leg: 100,
        };
        let mut l = CheckLimiter::new(limits);
        let t0 = Instant::now();
        let a: SocketAddr = "198.51.100.1:1000".parse().unwrap();
        let b: SocketAddr = "198.51.100.2:1000".parse().unwrap();
        assert!((0..3).all(|_| l.allow(t0, a)));
        assert!(!l.allow(t0, a));
        assert!(l.allow(t0, b), "another source has its own bucket");
        assert!(l.allow(t0 + token_interval(10), a));
        assert!(!l.allow(t0 + token_interval(10), a));
    }

    #[test]
    fn full_table_forgets_the_least_recently_seen_source() {
        let limits = CheckLimits {
            burst_per_source: 1,
            rate_per_source: 1,
            burst_per_leg: 1000,
            rate_per_leg: 1000,
        };
        let mut l = CheckLimiter::new(limits);
        let t0 = Instant::now();
        let source = |i: u16| SocketAddr::from(([198, 51, 100, 4], 3000 + i));
        // Each source spends its single token, the first one earliest.
        for i in 0..LIMITER_SLOTS as u16 {
            assert!(l.allow(t0 + Duration::from_micros(u64::from(i)), source(i)));
        }
        let t1 = t0 + Duration::from_millis(1);
        assert!(!l.allow(t1, source(1)), "still tracked, bucket empty");
        assert!(
            l.allow(t1, source(100)),
            "a new source takes the oldest slot"
        );
        assert!(!l.allow(t1, source(2)), "others are still tracked");
        assert!(l.allow(t1, source(0)), "the evicted source starts afresh");
    }

    #[test]
    fn one_flooding_source_does_not_starve_the_leg() {
        let limits = CheckLimits {
            burst_per_source: 2,
            rate_per_source: 1,
            burst_per_leg: 5,
            rate_per_leg: 1,
        };
        let mut l = CheckLimiter::new(limits);
        let t0 = Instant::now();
        let flood: SocketAddr = "198.51.100.5:1000".parse().unwrap();
        let peer: SocketAddr = "198.51.100.6:1000".parse().unwrap();
        let allowed = (0..100).filter(|_| l.allow(t0, flood)).count();
        assert_eq!(allowed, 2);
        assert!(l.allow(t0, peer));
    }

    #[test]
    fn leg_bucket_bounds_many_sources() {
        let limits = CheckLimits {
            burst_per_source: 5,
            rate_per_source: 5,
            burst_per_leg: 10,
            rate_per_leg: 1,
        };
        let mut l = CheckLimiter::new(limits);
        let t0 = Instant::now();
        let allowed = (0..100u16)
            .filter(|i| l.allow(t0, SocketAddr::from(([198, 51, 100, 3], 2000 + i))))
            .count();
        assert_eq!(allowed, 10);
    }
}
