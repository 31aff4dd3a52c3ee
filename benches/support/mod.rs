//! Packets and the SRTP reference row shared by the forwarding benches (`forward.rs`,
//! `turn_relay.rs`), which include it with `mod support;`.
#![allow(dead_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use xcc_core::srtp::{KeyingMaterial, SrtpContext, SrtpPolicy};

/// RTP header + 20 ms of G.711.
pub const RTP_LEN: usize = 172;
/// Packets per prepared ring.
pub const RING: usize = 1024;

/// An RTP packet with sequence number `seq` (timestamp `seq * 160`, SSRC 0x12345678).
pub fn rtp(seq: u16) -> [u8; RTP_LEN] {
    let mut p = [0u8; RTP_LEN];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    for (i, b) in p[12..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

/// `n` packets a phone protected under `keys`, sequence numbers 1 to `n`, each in its own
/// buffer with its length: prepared outside the timed section.
pub fn protected_ring(keys: &KeyingMaterial, n: usize) -> Vec<([u8; 256], usize)> {
    let mut phone = SrtpContext::new(keys, SrtpPolicy::default());
    let mut ring = vec![([0u8; 256], 0usize); n];
    for (i, (buf, len)) in ring.iter_mut().enumerate() {
        buf[..RTP_LEN].copy_from_slice(&rtp(i as u16 + 1));
        *len = phone.protect_rtp(buf, RTP_LEN).expect("room for the tag");
    }
    ring
}

/// The time `SrtpContext::unprotect_rtp` alone takes for `iters` packets under `keys`, every
/// packet with a fresh sequence number (a ring of at most [`RING`] and a fresh context each).
pub fn unprotect_only(keys: &KeyingMaterial, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(RING as u64) as usize;
        left -= n as u64;
        let mut ring = protected_ring(keys, n);
        let mut xcc = SrtpContext::new(keys, SrtpPolicy::default());
        let start = Instant::now();
        for (buf, len) in ring.iter_mut() {
            black_box(xcc.unprotect_rtp(buf, *len).ok());
        }
        total += start.elapsed();
    }
    total
}
