//! Property-style test: seeded random sequences of plausible and broken SIP traffic from both
//! peers, timeouts, transport errors, daemon hang-ups, drain toggles and media refusals, thrown
//! at the B2BUA. Invariants: it never panics; the media contract holds at every step (no
//! double release, no use after release); every started call ends exactly once; and once the
//! daemon hangs up what is left and every timer has run out, nothing remains (no call, no
//! table entry, no transaction, no media).
//!
//! A failing seed is printed; rerun it alone with `B2BUA_SEED=n`.

mod b2bua_common;

use std::collections::HashMap;
use std::time::Duration;

use b2bua_common::*;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xcc_sip::b2bua::{B2buaEvent, HangupReason, MediaRefusal, Side};
use xcc_sip::dialog::Dialog;
use xcc_sip::{Message, Method, Request, Response};

/// What the two scripted peers know.
#[derive(Default)]
struct Peers {
    /// INVITEs the peers sent (initial ones), for CANCEL, retransmission and ACK of non-2xx.
    invites: Vec<(Side, Request)>,
    /// Requests XCC sent to the peers, to answer.
    inbox: Vec<(Side, Request)>,
    /// Dialogs the peers hold.
    dialogs: Vec<(Side, Dialog)>,
    /// Everything the peers sent, for retransmission and mutation.
    history: Vec<(Side, Vec<u8>)>,
    /// The To tag each peer answers a Call-ID with.
    tags: HashMap<String, String>,
    /// 2xx responses XCC sent to the peers' INVITEs, to ACK.
    oks: Vec<(Side, Response)>,
    calls: u32,
}

fn side(rng: &mut ChaCha8Rng) -> Side {
    if rng.random() {
        Side::Server
    } else {
        Side::Pbx
    }
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, v: &'a [T]) -> Option<&'a T> {
    (!v.is_empty()).then(|| &v[rng.random_range(0..v.len())])
}

fn offer(side: Side) -> &'static str {
    match side {
        Side::Server => SERVER_OFFER,
        Side::Pbx => PBX_ANSWER,
    }
}

impl Peers {
    /// Reads what XCC sent since the last step.
    fn absorb(&mut self, h: &mut Harness, rng: &mut ChaCha8Rng) {
        while let Some((s, _, m)) = h.outbox.pop_front() {
            match m {
                Message::Request(r) if r.method == Method::Ack => {}
                Message::Request(r) => self.inbox.push((s, r)),
                Message::Response(r) => {
                    if r.headers.cseq.method != "INVITE" || r.status < 200 {
                        continue;
                    }
                    let Some(inv) = self
                        .invites
                        .iter()
                        .find(|(is, i)| *is == s && i.headers.call_id == r.headers.call_id)
                        .map(|(_, i)| i.clone())
                    else {
                        // A 2xx to a re-INVITE: ACK it through the dialog.
                        if (200..300).contains(&r.status) {
                            self.oks.push((s, r));
                        }
                        continue;
                    };
                    if (200..300).contains(&r.status) {
                        if r.headers.cseq.seq == inv.headers.cseq.seq
                            && let Some(d) = Dialog::uac(&inv, &r, Harness::contact(s))
                            && !self.dialogs.iter().any(|(_, x)| x.key == d.key)
                        {
                            self.dialogs.push((s, d));
                        }
                        self.oks.push((s, r));
                    } else if rng.random_bool(0.9) {
                        // The peer's transaction layer ACKs a non-2xx on the INVITE's branch.
                        let mut ack = inv.clone();
                        ack.method = Method::Ack;
                        ack.headers.cseq.method = "ACK".into();
                        ack.headers.to = r.headers.to.clone();
                        ack.body = Bytes::new();
                        ack.headers.content_type = None;
                        self.send(h, s, &ack);
                    }
                }
            }
        }
    }

    fn send(&mut self, h: &mut Harness, s: Side, req: &Request) {
        let bytes = Message::Request(req.clone()).to_bytes();
        self.history.push((s, bytes.clone()));
        h.inject_bytes(s, &bytes);
    }

    fn send_response(&mut self, h: &mut Harness, s: Side, resp: Response) {
        let bytes = Message::Response(resp).to_bytes();
        self.history.push((s, bytes.clone()));
        h.inject_bytes(s, &bytes);
    }

    /// One random action.
    fn step(&mut self, h: &mut Harness, rng: &mut ChaCha8Rng) {
        match rng.random_range(0..100) {
            0..12 => {
                // A new call from either side, now and then without SDP or out of hops.
                let s = side(rng);
                if rng.random_bool(0.7) {
                    // Refusals and drain are episodes, not the steady state.
                    h.media.refuse_offer = None;
                    h.media.refuse_answer = None;
                    h.b2bua.set_draining(false);
                }
                self.calls += 1;
                let id = format!("r{}", self.calls);
                let sdp = rng.random_bool(0.9).then(|| offer(s));
                let extra = if rng.random_bool(0.05) {
                    "Require: 100rel\r\n"
                } else {
                    ""
                };
                let inv = h.invite(s, &id, sdp, extra);
                self.history
                    .push((s, Message::Request(inv.clone()).to_bytes()));
                self.invites.push((s, inv));
            }
            12..40 => {
                // Answer something XCC sent.
                if self.inbox.is_empty() {
                    return;
                }
                // Mostly recent requests: old ones have usually timed out.
                let n = self.inbox.len();
                let i = if rng.random_bool(0.8) {
                    rng.random_range(n.saturating_sub(6)..n)
                } else {
                    rng.random_range(0..n)
                };
                let (s, req) = self.inbox.remove(i);
                self.inbox.push((s, req.clone()));
                let i = n - 1;
                let tag = self
                    .tags
                    .entry(req.headers.call_id.clone())
                    .or_insert_with(|| format!("t{}", rng.random::<u32>()))
                    .clone();
                let status = if req.method == Method::Invite {
                    *pick(
                        rng,
                        &[
                            100, 180, 183, 200, 200, 200, 200, 200, 200, 401, 407, 481, 486, 487,
                            488, 491, 503,
                        ],
                    )
                    .expect("non-empty")
                } else {
                    *pick(rng, &[200, 200, 200, 481, 500]).expect("non-empty")
                };
                let mut resp = Response::for_request(&req, status, "R", Some(&tag));
                if req.method == Method::Invite && (101..300).contains(&status) {
                    resp.headers.contact.push(Harness::contact(s));
                    if status != 180 && rng.random_bool(0.9) {
                        resp.headers.content_type = Some("application/sdp".into());
                        resp.body = Bytes::from(offer(s));
                    }
                }
                if status == 401 || status == 407 {
                    resp.headers.other.push(xcc_sip::Header {
                        name: if status == 401 {
                            "WWW-Authenticate"
                        } else {
                            "Proxy-Authenticate"
                        }
                        .into(),
                        value: "Digest realm=\"pbx\", nonce=\"n\", qop=\"auth\"".into(),
                    });
                }
                if (200..300).contains(&status)
                    && req.method == Method::Invite
                    && req.headers.to.tag().is_none()
                    && let Some(d) = Dialog::uas(&req, &tag, 1000, Harness::contact(s))
                    && !self.dialogs.iter().any(|(_, x)| x.key == d.key)
                {
                    self.dialogs.push((s, d));
                }
                if status >= 200 || rng.random_bool(0.3) {
                    self.inbox.swap_remove(i);
                }
                self.send_response(h, s, resp);
            }
            40..48 => {
                // ACK a 2xx XCC sent (or lose the ACK).
                if self.oks.is_empty() {
                    return;
                }
                let (s, ok) = self.oks.swap_remove(rng.random_range(0..self.oks.len()));
                if rng.random_bool(0.15) {
                    return;
                }
                let key = xcc_sip::dialog::DialogKey::for_response(&ok);
                let via = h.via(s);
                if let Some((_, d)) = self
                    .dialogs
                    .iter()
                    .find(|(ds, d)| *ds == s && Some(&d.key) == key.as_ref())
                {
                    let ack = d.ack(ok.headers.cseq.seq, via, Bytes::new());
                    self.send(h, s, &ack);
                }
            }
            48..62 => {
                // An in-dialog request from a peer.
                if self.dialogs.is_empty() {
                    return;
                }
                let i = rng.random_range(0..self.dialogs.len());
                let s = self.dialogs[i].0;
                let via = h.via(s);
                let method = pick(
                    rng,
                    &[
                        Method::Bye,
                        Method::Bye,
                        Method::Invite,
                        Method::Invite,
                        Method::Info,
                        Method::Options,
                        Method::Update,
                    ],
                )
                .expect("non-empty")
                .clone();
                let body = match method {
                    Method::Invite if rng.random_bool(0.8) => Bytes::from(offer(s)),
                    _ => Bytes::new(),
                };
                let req = self.dialogs[i].1.new_request(method.clone(), via, body);
                if method == Method::Bye {
                    self.dialogs.swap_remove(i);
                }
                self.send(h, s, &req);
            }
            62..67 => {
                // CANCEL an INVITE a peer sent.
                let Some((s, inv)) = pick(rng, &self.invites).cloned() else {
                    return;
                };
                let mut c = inv;
                c.method = Method::Cancel;
                c.headers.cseq.method = "CANCEL".into();
                c.body = Bytes::new();
                c.headers.content_type = None;
                self.send(h, s, &c);
            }
            67..75 => {
                // Retransmit something a peer sent.
                if let Some((s, bytes)) = pick(rng, &self.history).cloned() {
                    h.inject_bytes(s, &bytes);
                }
            }
            75..80 => {
                // Garbage: a peer's message, truncated or with bytes flipped.
                let Some((s, mut bytes)) = pick(rng, &self.history).cloned() else {
                    return;
                };
                if rng.random() {
                    let n = rng.random_range(0..=bytes.len());
                    bytes.truncate(n);
                } else {
                    for _ in 0..rng.random_range(1..8) {
                        let i = rng.random_range(0..bytes.len().max(1));
                        if let Some(b) = bytes.get_mut(i) {
                            *b = rng.random();
                        }
                    }
                }
                h.inject_bytes(s, &bytes);
            }
            80..90 => {
                let ms = *pick(rng, &[10, 500, 500, 2_000, 2_000, 5_000, 5_000, 33_000])
                    .expect("non-empty");
                h.advance(Duration::from_millis(ms));
            }
            90..92 if rng.random_bool(0.2) => h.transport_error(side(rng)),
            90..92 => {}
            92..95 => {
                if h.media.allocated > 0 {
                    let id = rng.random_range(1..=h.media.allocated);
                    h.hangup(id, HangupReason::Api);
                }
            }
            95 => {
                let d = !h.b2bua.is_draining();
                h.b2bua.set_draining(d);
            }
            _ => {
                // The media plane says no to the next operations, or yes again.
                let refusal = pick(
                    rng,
                    &[
                        None,
                        None,
                        Some(MediaRefusal::Exhausted),
                        Some(MediaRefusal::BadSdp { reason: "x".into() }),
                    ],
                )
                .expect("non-empty")
                .clone();
                match rng.random_range(0..3) {
                    0 => h.media.refuse_offer = refusal,
                    1 => h.media.refuse_answer = refusal,
                    _ => h.media.refuse_reoffer = refusal,
                }
            }
        }
    }
}

fn run(seed: u64, steps: usize) {
    let mut cfg = config();
    cfg.pbx.credentials = Some(xcc_sip::auth::Credentials {
        username: "u".into(),
        password: "p".into(),
    });
    let mut h = Harness::new(cfg);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut peers = Peers::default();
    for _ in 0..steps {
        peers.step(&mut h, &mut rng);
        peers.absorb(&mut h, &mut rng);
        assert!(
            h.media.violations.is_empty(),
            "media contract: {:?}\nlog tail: {:?}",
            h.media.violations,
            &h.media.log[h.media.log.len().saturating_sub(30)..]
        );
        assert!(
            h.media.live.len() <= h.b2bua.calls(),
            "media held by no call: {} live, {} calls",
            h.media.live.len(),
            h.b2bua.calls()
        );
    }
    // The daemon hangs up whatever is left (drain grace), then every timer runs out.
    h.media.refuse_offer = None;
    h.media.refuse_answer = None;
    h.media.refuse_reoffer = None;
    for id in 1..=h.media.allocated {
        h.hangup(id, HangupReason::Drain);
    }
    h.settle_and_check();
    if std::env::var_os("B2BUA_STATS").is_some() {
        eprintln!("seed {seed}: {:?}", h.b2bua.counters());
        let mut reasons: HashMap<String, usize> = HashMap::new();
        for e in &h.events {
            if let B2buaEvent::CallEnded { reason, .. } = e {
                *reasons.entry(format!("{reason:?}")).or_default() += 1;
            }
        }
        eprintln!("seed {seed}: ended {reasons:?}");
    }
    let mut started = Vec::new();
    let mut ended = Vec::new();
    for e in &h.events {
        match e {
            B2buaEvent::CallStarted { call, .. } => started.push(call.0),
            B2buaEvent::CallEnded { call, .. } => ended.push(call.0),
            _ => {}
        }
    }
    ended.sort_unstable();
    assert_eq!(started, ended, "every started call ends exactly once");
    assert_eq!(started.len() as u64, h.media.allocated);
}

#[test]
fn random_traffic_never_panics_or_leaks() {
    if let Ok(seed) = std::env::var("B2BUA_SEED") {
        run(seed.parse().expect("B2BUA_SEED is a number"), 600);
        return;
    }
    for seed in 0..48 {
        let r = std::panic::catch_unwind(|| run(seed, 600));
        if let Err(e) = r {
            eprintln!("failing seed: B2BUA_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
