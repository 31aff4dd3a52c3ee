//! Counters and latches a worker publishes for the control plane, without locks.
//!
//! Each call has one [`Published`] record: a seqlock over plain atomic words. The owning worker is
//! the only writer (a few dozen Relaxed stores per publication, at most once per tick, and for mere
//! traffic once every fourth); readers
//! retry while a write is in progress and never make the worker wait.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use crate::media::{DropCounters, LegCounters, LegSrtpProgress};
use crate::quality::{Limit, LimitSet, PeerView, QualitySnapshot};
use crate::srtp::{ContextProgress, StreamIndex};

/// Words per published address: tag and port, then up to 128 bits of IP.
const ADDR_WORDS: usize = 3;
/// Words per leg: counters, latched RTP, latched RTCP, quality, SRTP progress.
const LEG_WORDS: usize = COUNTER_WORDS + 2 * ADDR_WORDS + QUALITY_WORDS + SRTP_WORDS;
/// SRTP progress: four streams (inbound RTP/RTCP, outbound RTP/RTCP), each a presence-and-SSRC
/// word and an index word.
const SRTP_WORDS: usize = 8;
/// Where the SRTP words start inside a leg.
const SRTP_AT: usize = COUNTER_WORDS + 2 * ADDR_WORDS + QUALITY_WORDS;
/// Counter fields of [`LegCounters`] including drops.
pub(crate) const COUNTER_WORDS: usize = 16;
/// Words of a [`QualitySnapshot`]: a presence mask for the optional values, the limit sets, then
/// one word per number (floats as their bits).
const QUALITY_WORDS: usize = 22;
/// Words of a call: two legs and the last-media instant.
pub(crate) const CALL_WORDS: usize = 2 * LEG_WORDS + 1;

/// What the worker publishes about one leg.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct LegState {
    /// Traffic counters.
    pub counters: LegCounters,
    /// Latched RTP source.
    pub latched: Option<SocketAddr>,
    /// Latched RTCP source.
    pub latched_rtcp: Option<SocketAddr>,
    /// The leg monitor's figures.
    pub quality: QualitySnapshot,
    /// Where the SRTP contexts stand (ROC and index per direction), for the store.
    pub srtp: LegSrtpProgress,
}

/// What the worker publishes about one call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CallState {
    /// Per leg, indexed by `LegSide::index`.
    pub legs: [LegState; 2],
    /// Nanoseconds from the engine epoch to the last accepted media (or to the call's creation).
    pub last_media_nanos: u64,
}

/// A seqlock-protected [`CallState`], shared by the owning worker (writer) and the control plane.
#[derive(Debug)]
pub(crate) struct Published {
    /// Even when stable, odd while the worker writes.
    seq: AtomicU64,
    /// The encoded state.
    words: [AtomicU64; CALL_WORDS],
    /// Set by the worker once the call ended; the control plane then forgets it.
    ended: AtomicBool,
    /// Moves whenever what a restart needs from this call may have changed: a latch or an SRTP
    /// checkpoint (the worker, in [`Published::write`]) or a leg's configuration (the control
    /// plane, [`Published::bump_resume`]). The call store skips calls whose generation it has
    /// already written instead of reading and comparing every call every round (that took
    /// ~2 % of xccd's CPU at 750 calls, docs/load.md, session 6).
    resume_gen: AtomicU64,
}

impl Published {
    /// An all-zero record.
    pub fn new(state: &CallState) -> Self {
        let p = Self {
            seq: AtomicU64::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
            ended: AtomicBool::new(false),
            resume_gen: AtomicU64::new(0),
        };
        p.write(state);
        p
    }

    /// The resume generation (see the field). Read it before the state: a change published after
    /// this read moves it again.
    pub fn resume_gen(&self) -> u64 {
        self.resume_gen.load(Ordering::Acquire)
    }

    /// Records that a restart would now need something else from this call.
    pub fn bump_resume(&self) {
        self.resume_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Publishes `state`. Only the owning worker calls this (single writer).
    pub fn write(&self, state: &CallState) {
        let words = encode(state);
        // The single writer reads its own last write: no race. Compared before it is replaced.
        let resume_moved = self.resume_part_differs(&words);
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (w, v) in self.words.iter().zip(words) {
            w.store(v, Ordering::Relaxed);
        }
        self.seq.store(s.wrapping_add(2), Ordering::Release);
        if resume_moved {
            // After the state: a reader that sees the new generation reads the new state.
            self.bump_resume();
        }
    }

    /// Whether `new` differs from the words now published in what a restart keeps: the latches
    /// and the SRTP progress rounded to its checkpoints (the store writes nothing else from here).
    fn resume_part_differs(&self, new: &[u64; CALL_WORDS]) -> bool {
        (0..2).any(|leg| {
            let at = leg * LEG_WORDS;
            let latches = at + COUNTER_WORDS..at + COUNTER_WORDS + 2 * ADDR_WORDS;
            let srtp = at + SRTP_AT..at + LEG_WORDS;
            latches
                .clone()
                .any(|i| self.words[i].load(Ordering::Relaxed) != new[i])
                || {
                    let mut old = [0u64; SRTP_WORDS];
                    for (o, i) in old.iter_mut().zip(srtp.clone()) {
                        *o = self.words[i].load(Ordering::Relaxed);
                    }
                    decode_srtp(&old).checkpoint() != decode_srtp(&new[srtp]).checkpoint()
                }
        })
    }

    /// Reads a consistent copy; `None` if the writer kept interfering for `tries` attempts (it
    /// writes at most once per tick, so a couple of tries always suffice in practice).
    pub fn read(&self, tries: usize) -> Option<CallState> {
        for _ in 0..tries {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut words = [0u64; CALL_WORDS];
            for (v, w) in words.iter_mut().zip(&self.words) {
                *v = w.load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return Some(decode(&words));
            }
        }
        None
    }

    /// Marks the call as ended (worker side).
    pub fn set_ended(&self) {
        self.ended.store(true, Ordering::Release);
    }

    /// Whether the worker ended the call.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }
}

fn encode(state: &CallState) -> [u64; CALL_WORDS] {
    let mut out = [0u64; CALL_WORDS];
    for (leg, chunk) in state.legs.iter().zip(out.chunks_exact_mut(LEG_WORDS)) {
        chunk[..COUNTER_WORDS].copy_from_slice(&counter_words(&leg.counters));
        chunk[COUNTER_WORDS..COUNTER_WORDS + ADDR_WORDS].copy_from_slice(&encode_addr(leg.latched));
        chunk[COUNTER_WORDS + ADDR_WORDS..COUNTER_WORDS + 2 * ADDR_WORDS]
            .copy_from_slice(&encode_addr(leg.latched_rtcp));
        chunk[COUNTER_WORDS + 2 * ADDR_WORDS..SRTP_AT]
            .copy_from_slice(&encode_quality(&leg.quality));
        chunk[SRTP_AT..].copy_from_slice(&encode_srtp(&leg.srtp));
    }
    out[CALL_WORDS - 1] = state.last_media_nanos;
    out
}

/// [`LegCounters`] as words, in a fixed order shared with [`counters_from_words`].
pub(crate) fn counter_words(c: &LegCounters) -> [u64; COUNTER_WORDS] {
    let d = &c.drops;
    [
        c.packets_in,
        c.bytes_in,
        c.packets_out,
        c.bytes_out,
        c.rtcp_in,
        c.rtcp_out,
        c.rtcp_malformed,
        d.auth_failure,
        d.replay,
        d.stranger,
        d.malformed,
        d.no_route,
        d.stray,
        d.send_error,
        c.punch_sent,
        c.punch_answered,
    ]
}

/// Inverse of [`counter_words`]; `w` holds at least [`COUNTER_WORDS`] words.
pub(crate) fn counters_from_words(w: &[u64]) -> LegCounters {
    let w = |i: usize| w.get(i).copied().unwrap_or(0);
    LegCounters {
        packets_in: w(0),
        bytes_in: w(1),
        packets_out: w(2),
        bytes_out: w(3),
        rtcp_in: w(4),
        rtcp_out: w(5),
        rtcp_malformed: w(6),
        drops: DropCounters {
            auth_failure: w(7),
            replay: w(8),
            stranger: w(9),
            malformed: w(10),
            no_route: w(11),
            stray: w(12),
            send_error: w(13),
        },
        punch_sent: w(14),
        punch_answered: w(15),
    }
}

fn decode(words: &[u64; CALL_WORDS]) -> CallState {
    let mut state = CallState {
        last_media_nanos: words[CALL_WORDS - 1],
        ..CallState::default()
    };
    for (leg, chunk) in state.legs.iter_mut().zip(words.chunks_exact(LEG_WORDS)) {
        leg.counters = counters_from_words(&chunk[..COUNTER_WORDS]);
        leg.latched = decode_addr(&chunk[COUNTER_WORDS..COUNTER_WORDS + ADDR_WORDS]);
        leg.latched_rtcp =
            decode_addr(&chunk[COUNTER_WORDS + ADDR_WORDS..COUNTER_WORDS + 2 * ADDR_WORDS]);
        leg.quality = decode_quality(&chunk[COUNTER_WORDS + 2 * ADDR_WORDS..SRTP_AT]);
        leg.srtp = decode_srtp(&chunk[SRTP_AT..]);
    }
    state
}

/// The optional values of a [`QualitySnapshot`], in word order after the mask and limit words.
type OptionalF64s = [Option<f64>; 11];

fn optional_f64s(q: &QualitySnapshot) -> OptionalF64s {
    [
        q.interval_loss_percent,
        q.jitter_ms,
        q.judged_loss_percent,
        q.judged_jitter_ms,
        q.rtt_ms,
        q.one_way_delay_ms,
        q.mos,
        q.r_factor,
        q.mos_min,
        q.mos_avg,
        q.peer.and_then(|p| p.jitter_ms),
    ]
}

/// Presence-mask bit of `ssrc` (the optional floats use bits 0..11).
const SSRC_BIT: u64 = 1 << 11;
/// Presence-mask bit of `peer`.
const PEER_BIT: u64 = 1 << 12;

fn limit_bits(set: LimitSet) -> u64 {
    Limit::ALL
        .iter()
        .filter(|l| set.contains(**l))
        .fold(0, |acc, l| acc | 1 << l.index())
}

fn limit_set(bits: u64) -> LimitSet {
    let mut set = LimitSet::EMPTY;
    for l in Limit::ALL.iter().filter(|l| bits & 1 << l.index() != 0) {
        set.insert(*l);
    }
    set
}

fn encode_quality(q: &QualitySnapshot) -> [u64; QUALITY_WORDS] {
    let opts = optional_f64s(q);
    let mut mask = 0u64;
    for (bit, v) in opts.iter().enumerate() {
        if v.is_some() {
            mask |= 1 << bit;
        }
    }
    if q.ssrc.is_some() {
        mask |= SSRC_BIT;
    }
    if q.peer.is_some() {
        mask |= PEER_BIT;
    }
    let peer = q.peer.unwrap_or(PeerView {
        fraction_lost_percent: 0.0,
        cumulative_lost: 0,
        jitter_ms: None,
    });
    let mut out = [0u64; QUALITY_WORDS];
    out[0] = mask;
    out[1] = limit_bits(q.broken_now) | limit_bits(q.broken_ever) << 8;
    out[2] = u64::from(q.ssrc.unwrap_or(0));
    out[3] = q.expected;
    out[4] = q.received;
    out[5] = q.lost as u64;
    out[6] = q.loss_percent.to_bits();
    out[7] = q.duplicates;
    out[8] = q.reordered;
    out[9] = peer.fraction_lost_percent.to_bits();
    // Sign-extended back on decode.
    out[10] = i64::from(peer.cumulative_lost) as u64;
    for (w, v) in out[11..].iter_mut().zip(opts) {
        *w = v.unwrap_or(0.0).to_bits();
    }
    out
}

fn decode_quality(w: &[u64]) -> QualitySnapshot {
    let mask = w[0];
    let opt = |i: usize| (mask & 1 << i != 0).then(|| f64::from_bits(w[11 + i]));
    QualitySnapshot {
        ssrc: (mask & SSRC_BIT != 0).then_some(w[2] as u32),
        expected: w[3],
        received: w[4],
        lost: w[5] as i64,
        loss_percent: f64::from_bits(w[6]),
        interval_loss_percent: opt(0),
        duplicates: w[7],
        reordered: w[8],
        jitter_ms: opt(1),
        peer: (mask & PEER_BIT != 0).then(|| PeerView {
            fraction_lost_percent: f64::from_bits(w[9]),
            cumulative_lost: w[10] as i64 as i32,
            jitter_ms: opt(10),
        }),
        judged_loss_percent: opt(2),
        judged_jitter_ms: opt(3),
        rtt_ms: opt(4),
        one_way_delay_ms: opt(5),
        mos: opt(6),
        r_factor: opt(7),
        mos_min: opt(8),
        mos_avg: opt(9),
        broken_now: limit_set(w[1] & 0xff),
        broken_ever: limit_set(w[1] >> 8 & 0xff),
    }
}

/// Presence bit of a stream in its SSRC word.
const STREAM_PRESENT: u64 = 1 << 32;

fn encode_srtp(p: &LegSrtpProgress) -> [u64; SRTP_WORDS] {
    let streams = [
        p.inbound.rtp,
        p.inbound.rtcp,
        p.outbound.rtp,
        p.outbound.rtcp,
    ];
    let mut out = [0u64; SRTP_WORDS];
    for (w, s) in out.chunks_exact_mut(2).zip(streams) {
        if let Some(s) = s {
            w[0] = STREAM_PRESENT | u64::from(s.ssrc);
            w[1] = s.index;
        }
    }
    out
}

fn decode_srtp(w: &[u64]) -> LegSrtpProgress {
    let stream = |i: usize| {
        (w[2 * i] & STREAM_PRESENT != 0).then(|| StreamIndex {
            ssrc: w[2 * i] as u32,
            index: w[2 * i + 1],
        })
    };
    LegSrtpProgress {
        inbound: ContextProgress {
            rtp: stream(0),
            rtcp: stream(1),
        },
        outbound: ContextProgress {
            rtp: stream(2),
            rtcp: stream(3),
        },
    }
}

fn encode_addr(addr: Option<SocketAddr>) -> [u64; ADDR_WORDS] {
    match addr {
        None => [0; ADDR_WORDS],
        Some(SocketAddr::V4(a)) => [
            4 << 16 | u64::from(a.port()),
            u64::from(a.ip().to_bits()),
            0,
        ],
        Some(SocketAddr::V6(a)) => {
            let ip = a.ip().to_bits();
            [6 << 16 | u64::from(a.port()), (ip >> 64) as u64, ip as u64]
        }
    }
}

fn decode_addr(w: &[u64]) -> Option<SocketAddr> {
    let port = (w[0] & 0xffff) as u16;
    let ip = match w[0] >> 16 {
        4 => IpAddr::V4(Ipv4Addr::from_bits(w[1] as u32)),
        6 => IpAddr::V6(Ipv6Addr::from_bits(
            u128::from(w[1]) << 64 | u128::from(w[2]),
        )),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_counters_and_addresses() {
        let mut st = CallState {
            last_media_nanos: 123_456_789,
            ..CallState::default()
        };
        st.legs[0].counters.packets_in = 7;
        st.legs[0].counters.drops.send_error = 3;
        st.legs[0].latched = Some("192.0.2.1:4000".parse().unwrap());
        st.legs[1].counters.drops.stranger = u64::MAX;
        st.legs[1].latched_rtcp = Some("[2001:db8::1]:65535".parse().unwrap());
        st.legs[0].counters.rtcp_malformed = 2;
        st.legs[0].counters.punch_sent = 11;
        st.legs[0].counters.punch_answered = 1;
        st.legs[1].srtp.outbound.rtp = Some(StreamIndex {
            ssrc: 0,
            index: (7 << 16) | 65535,
        });
        st.legs[1].srtp.inbound.rtcp = Some(StreamIndex {
            ssrc: u32::MAX,
            index: 64,
        });
        let mut broken = LimitSet::EMPTY;
        broken.insert(Limit::Jitter);
        st.legs[1].quality = QualitySnapshot {
            ssrc: Some(0xdead_beef),
            expected: 100,
            received: 95,
            lost: -3,
            loss_percent: 5.0,
            jitter_ms: Some(12.5),
            rtt_ms: Some(40.25),
            mos_avg: Some(4.1),
            peer: Some(PeerView {
                fraction_lost_percent: 1.5,
                cumulative_lost: -7,
                jitter_ms: None,
            }),
            broken_now: broken,
            broken_ever: broken,
            ..QualitySnapshot::default()
        };
        st.legs[0].quality.peer = Some(PeerView {
            fraction_lost_percent: 0.0,
            cumulative_lost: 1,
            jitter_ms: Some(3.0),
        });
        let p = Published::new(&CallState::default());
        p.write(&st);
        assert_eq!(p.read(1), Some(st));
    }

    #[test]
    fn the_resume_generation_moves_with_latches_and_checkpoints_only() {
        let p = Published::new(&CallState::default());
        let g0 = p.resume_gen();
        let mut st = CallState::default();
        // Traffic, quality, the media instant and SRTP progress inside one checkpoint: no move.
        st.legs[0].counters.packets_in = 500;
        st.legs[1].quality.received = 500;
        st.last_media_nanos = 42;
        st.legs[0].srtp.inbound.rtp = Some(StreamIndex { ssrc: 9, index: 1 });
        p.write(&st);
        let g1 = p.resume_gen();
        assert_ne!(g1, g0, "a new SRTP stream is a new checkpoint");
        st.legs[0].srtp.inbound.rtp = Some(StreamIndex {
            ssrc: 9,
            index: (1 << crate::srtp::RTP_CHECKPOINT_BITS) - 1,
        });
        st.legs[0].counters.packets_in = 16_000;
        p.write(&st);
        assert_eq!(p.resume_gen(), g1, "same checkpoint, only traffic moved");
        // Crossing a checkpoint moves it.
        st.legs[0].srtp.inbound.rtp = Some(StreamIndex {
            ssrc: 9,
            index: 1 << crate::srtp::RTP_CHECKPOINT_BITS,
        });
        p.write(&st);
        let g2 = p.resume_gen();
        assert_ne!(g2, g1);
        // A latch, on either leg and either port, moves it; writing it again does not.
        st.legs[1].latched_rtcp = Some("[2001:db8::1]:5005".parse().unwrap());
        p.write(&st);
        let g3 = p.resume_gen();
        assert_ne!(g3, g2);
        p.write(&st);
        assert_eq!(p.resume_gen(), g3);
        st.legs[0].latched = Some("198.51.100.7:4000".parse().unwrap());
        p.write(&st);
        assert_ne!(p.resume_gen(), g3);
        // The control plane's bump (a configuration) moves it too.
        let g4 = p.resume_gen();
        p.bump_resume();
        assert_ne!(p.resume_gen(), g4);
    }

    #[test]
    fn reader_never_sees_a_torn_write() {
        let p = std::sync::Arc::new(Published::new(&CallState::default()));
        let writer = {
            let p = p.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    let mut st = CallState {
                        last_media_nanos: i,
                        ..CallState::default()
                    };
                    st.legs[0].counters.packets_in = i;
                    st.legs[1].counters.bytes_out = i;
                    p.write(&st);
                }
            })
        };
        let mut seen = 0;
        while !writer.is_finished() && seen < 1_000_000 {
            if let Some(st) = p.read(64) {
                assert_eq!(st.legs[0].counters.packets_in, st.last_media_nanos);
                assert_eq!(st.legs[1].counters.bytes_out, st.last_media_nanos);
            }
            seen += 1;
        }
        writer.join().unwrap();
    }
}
