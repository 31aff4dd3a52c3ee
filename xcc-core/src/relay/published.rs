//! Counters and latches a worker publishes for the control plane, without locks.
//!
//! Each call has one [`Published`] record: a seqlock over plain atomic words. The owning worker is
//! the only writer (a few dozen Relaxed stores per publication, at most once per tick); readers
//! retry while a write is in progress and never make the worker wait.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use crate::media::{DropCounters, LegCounters};

/// Words per published address: tag and port, then up to 128 bits of IP.
const ADDR_WORDS: usize = 3;
/// Words per leg: counters, latched RTP, latched RTCP.
const LEG_WORDS: usize = COUNTER_WORDS + 2 * ADDR_WORDS;
/// Counter fields of [`LegCounters`] including drops.
const COUNTER_WORDS: usize = 13;
/// Words of a call: two legs and the last-media instant.
pub(crate) const CALL_WORDS: usize = 2 * LEG_WORDS + 1;

/// What the worker publishes about one leg.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LegState {
    /// Traffic counters.
    pub counters: LegCounters,
    /// Latched RTP source.
    pub latched: Option<SocketAddr>,
    /// Latched RTCP source.
    pub latched_rtcp: Option<SocketAddr>,
}

/// What the worker publishes about one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
}

impl Published {
    /// An all-zero record.
    pub fn new(state: &CallState) -> Self {
        let p = Self {
            seq: AtomicU64::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
            ended: AtomicBool::new(false),
        };
        p.write(state);
        p
    }

    /// Publishes `state`. Only the owning worker calls this (single writer).
    pub fn write(&self, state: &CallState) {
        let words = encode(state);
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (w, v) in self.words.iter().zip(words) {
            w.store(v, Ordering::Relaxed);
        }
        self.seq.store(s.wrapping_add(2), Ordering::Release);
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
        let c = &leg.counters;
        let d = &c.drops;
        let counters = [
            c.packets_in,
            c.bytes_in,
            c.packets_out,
            c.bytes_out,
            c.rtcp_in,
            c.rtcp_out,
            d.auth_failure,
            d.replay,
            d.stranger,
            d.malformed,
            d.no_route,
            d.stray,
            d.send_error,
        ];
        chunk[..COUNTER_WORDS].copy_from_slice(&counters);
        chunk[COUNTER_WORDS..COUNTER_WORDS + ADDR_WORDS].copy_from_slice(&encode_addr(leg.latched));
        chunk[COUNTER_WORDS + ADDR_WORDS..].copy_from_slice(&encode_addr(leg.latched_rtcp));
    }
    out[CALL_WORDS - 1] = state.last_media_nanos;
    out
}

fn decode(words: &[u64; CALL_WORDS]) -> CallState {
    let mut state = CallState {
        last_media_nanos: words[CALL_WORDS - 1],
        ..CallState::default()
    };
    for (leg, chunk) in state.legs.iter_mut().zip(words.chunks_exact(LEG_WORDS)) {
        let w = |i: usize| chunk[i];
        leg.counters = LegCounters {
            packets_in: w(0),
            bytes_in: w(1),
            packets_out: w(2),
            bytes_out: w(3),
            rtcp_in: w(4),
            rtcp_out: w(5),
            drops: DropCounters {
                auth_failure: w(6),
                replay: w(7),
                stranger: w(8),
                malformed: w(9),
                no_route: w(10),
                stray: w(11),
                send_error: w(12),
            },
        };
        leg.latched = decode_addr(&chunk[COUNTER_WORDS..COUNTER_WORDS + ADDR_WORDS]);
        leg.latched_rtcp = decode_addr(&chunk[COUNTER_WORDS + ADDR_WORDS..]);
    }
    state
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
        let p = Published::new(&CallState::default());
        p.write(&st);
        assert_eq!(p.read(1), Some(st));
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
