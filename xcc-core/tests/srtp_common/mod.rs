//! Shared helpers for the SRTP integration tests: seeded packet generators and the mapping to the
//! webrtc-srtp oracle.
#![allow(dead_code)] // each test binary uses a different subset

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use webrtc_srtp::protection_profile::ProtectionProfile;
use xcc_core::srtp::{KeyingMaterial, SrtpSuite};

/// Deterministic RNG for a test, so failures reproduce.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// The oracle's name for a suite (webrtc-srtp supports all six).
pub fn profile(suite: SrtpSuite) -> ProtectionProfile {
    match suite {
        SrtpSuite::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
        SrtpSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpSuite::AesCm256HmacSha1_80 => ProtectionProfile::Aes256CmHmacSha1_80,
        SrtpSuite::AesCm256HmacSha1_32 => ProtectionProfile::Aes256CmHmacSha1_32,
        SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
    }
}

/// Random keying material for `suite`.
pub fn keying(rng: &mut impl RngCore, suite: SrtpSuite) -> KeyingMaterial {
    let mut key = vec![0u8; suite.key_len()];
    let mut salt = vec![0u8; suite.salt_len()];
    rng.fill_bytes(&mut key);
    rng.fill_bytes(&mut salt);
    KeyingMaterial::new(suite, &key, &salt).expect("lengths come from the suite")
}

/// The oracle context for the same key, replay protection on (64 packets) as XCC's is.
pub fn oracle(km: &KeyingMaterial) -> webrtc_srtp::context::Context {
    webrtc_srtp::context::Context::new(
        km.key(),
        km.salt(),
        profile(km.suite),
        Some(webrtc_srtp::option::srtp_replay_protection(64)),
        Some(webrtc_srtp::option::srtcp_replay_protection(64)),
    )
    .expect("valid key lengths")
}

/// A random RTP packet: random CSRC count, optional header extension (RFC 8285 one-byte or an
/// opaque RFC 3550 profile),
/// optional padding, payload of 0..=200 bytes.
pub fn rtp_packet(rng: &mut impl RngCore, ssrc: u32, seq: u16) -> Vec<u8> {
    let cc: u8 = rng.random_range(0..=4);
    let extension = rng.random_bool(0.3);
    let padding = rng.random_bool(0.2);
    let mut p = Vec::with_capacity(300);
    p.push(0x80 | (u8::from(padding) << 5) | (u8::from(extension) << 4) | cc);
    p.push(rng.random::<u8>()); // marker + payload type: anything
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&rng.random::<u32>().to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for _ in 0..cc {
        p.extend_from_slice(&rng.random::<u32>().to_be_bytes());
    }
    if extension {
        if rng.random_bool(0.5) {
            // RFC 8285 one-byte elements (profile 0xBEDE), zero-padded to a word boundary.
            let mut ext = Vec::new();
            for _ in 0..rng.random_range(1..=3) {
                let len: u8 = rng.random_range(0..=15);
                ext.push((rng.random_range(1..=14u8) << 4) | len);
                ext.extend((0..=len).map(|_| rng.random::<u8>()));
            }
            while ext.len() % 4 != 0 {
                ext.push(0);
            }
            p.extend_from_slice(&0xBEDEu16.to_be_bytes());
            p.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
            p.extend_from_slice(&ext);
        } else {
            let words: u16 = rng.random_range(0..=4);
            // A profile outside 0xBEDE / 0x100x: the oracle keeps it as one opaque extension.
            p.extend_from_slice(&0x4321u16.to_be_bytes());
            p.extend_from_slice(&words.to_be_bytes());
            for _ in 0..words * 4 {
                p.push(rng.random());
            }
        }
    }
    let payload: usize = rng.random_range(0..=200);
    for _ in 0..payload {
        p.push(rng.random());
    }
    if padding {
        let pad: u8 = rng.random_range(1..=16);
        p.extend(std::iter::repeat_n(0u8, usize::from(pad) - 1));
        p.push(pad);
    }
    p
}

/// A random RTCP packet: one header (SR..APP types) with a consistent length word and sender SSRC.
pub fn rtcp_packet(rng: &mut impl RngCore, ssrc: u32) -> Vec<u8> {
    let words: usize = rng.random_range(1..=40);
    let mut p = Vec::with_capacity(4 * words + 4);
    p.push(0x80 | rng.random_range(0..=31u8));
    p.push(rng.random_range(200..=204u8));
    p.extend_from_slice(&(words as u16).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for _ in 0..(words - 1) * 4 {
        p.push(rng.random());
    }
    p
}

/// Copies `pkt` into a buffer with `room` spare bytes, as a receive buffer would be.
pub fn with_room(pkt: &[u8], room: usize) -> Vec<u8> {
    let mut b = pkt.to_vec();
    b.resize(pkt.len() + room, 0);
    b
}

/// Room every suite's transform needs (largest RTCP overhead).
pub const ROOM: usize = 4 + 16;
