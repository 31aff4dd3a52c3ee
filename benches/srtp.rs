//! SRTP per-packet cost: XCC's in-place transform against webrtc-srtp 0.17 in the same run.
//!
//! A 172-byte RTP packet (12-byte header + 160 bytes of G.711 payload, 20 ms) for
//! AES_CM_128_HMAC_SHA1_80 and AEAD_AES_128_GCM. Both sides run with 64-packet replay protection
//! (webrtc-srtp's is off by default; XCC's is always on), so each does the same work.
//!
//! Packets are prepared in rings of [`RING`] outside the timed section, with fresh contexts per
//! ring: every timed call sees a new sequence number, as on the wire (a repeated one would be a
//! replay and take the cheap refusal path).
//!
//! Run: `cargo bench --bench srtp -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;
use xcc_core::srtp::{KeyingMaterial, SrtpContext, SrtpPolicy, SrtpSuite};

/// Packets per prepared ring (about 190 KiB of packets: stays in L2, like a receive batch).
const RING: usize = 1024;
/// RTP header + 20 ms of G.711.
const PAYLOAD: usize = 160;

fn keying(suite: SrtpSuite) -> KeyingMaterial {
    let key: Vec<u8> = (0..suite.key_len() as u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let salt: Vec<u8> = (0..suite.salt_len() as u8)
        .map(|i| i.wrapping_mul(101).wrapping_add(3))
        .collect();
    KeyingMaterial::new(suite, &key, &salt).expect("lengths come from the suite")
}

fn oracle(km: &KeyingMaterial, profile: ProtectionProfile) -> Context {
    Context::new(
        km.key(),
        km.salt(),
        profile,
        Some(srtp_replay_protection(64)),
        Some(srtcp_replay_protection(64)),
    )
    .expect("valid key")
}

/// Plain 172-byte RTP packet number `i`, in a buffer with room for any suite's tag.
fn plain(i: usize) -> Vec<u8> {
    let mut p = vec![0x80, 0x00, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
    p[2..4].copy_from_slice(&(i as u16).to_be_bytes());
    p[4..8].copy_from_slice(&((i as u32) * 160).to_be_bytes());
    p.extend((0..PAYLOAD).map(|b| (b ^ i) as u8));
    p
}

/// Runs `iters` timed calls of `run` over rings built (untimed) by `setup`.
fn in_rings<S>(
    iters: u64,
    mut setup: impl FnMut() -> S,
    mut run: impl FnMut(&mut S, usize),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(RING);
        let mut state = setup();
        let start = Instant::now();
        for i in 0..n {
            run(&mut state, i);
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn bench_suite(c: &mut Criterion, suite: SrtpSuite, profile: ProtectionProfile) {
    let km = keying(suite);
    let mut group = c.benchmark_group(format!("srtp/{}", suite.sdes_name()));
    let room = suite.rtp_overhead();

    group.bench_function("protect/xcc", |b| {
        b.iter_custom(|iters| {
            in_rings(
                iters,
                || {
                    let bufs: Vec<Vec<u8>> = (0..RING).map(|i| with_room(plain(i), room)).collect();
                    (SrtpContext::new(&km, SrtpPolicy::default()), bufs)
                },
                |(ctx, bufs), i| {
                    black_box(
                        ctx.protect_rtp(&mut bufs[i], 12 + PAYLOAD)
                            .expect("protect"),
                    );
                },
            )
        })
    });
    group.bench_function("protect/webrtc-srtp", |b| {
        b.iter_custom(|iters| {
            in_rings(
                iters,
                || {
                    (
                        oracle(&km, profile),
                        (0..RING).map(plain).collect::<Vec<_>>(),
                    )
                },
                |(ctx, pkts), i| {
                    black_box(ctx.encrypt_rtp(&pkts[i]).expect("protect"));
                },
            )
        })
    });

    // Protected rings: (ciphertext, length), produced once by XCC (byte-identical to the oracle's).
    let protected: Vec<Vec<u8>> = {
        let mut tx = SrtpContext::new(&km, SrtpPolicy::default());
        (0..RING)
            .map(|i| {
                let mut b = with_room(plain(i), room);
                let n = tx.protect_rtp(&mut b, 12 + PAYLOAD).expect("protect");
                b.truncate(n);
                b
            })
            .collect()
    };
    group.bench_function("unprotect/xcc", |b| {
        b.iter_custom(|iters| {
            in_rings(
                iters,
                || {
                    (
                        SrtpContext::new(&km, SrtpPolicy::default()),
                        protected.clone(),
                    )
                },
                |(ctx, bufs), i| {
                    let len = bufs[i].len();
                    black_box(ctx.unprotect_rtp(&mut bufs[i], len).expect("unprotect"));
                },
            )
        })
    });
    group.bench_function("unprotect/webrtc-srtp", |b| {
        b.iter_custom(|iters| {
            in_rings(
                iters,
                || oracle(&km, profile),
                |ctx, i| {
                    black_box(ctx.decrypt_rtp(&protected[i]).expect("unprotect"));
                },
            )
        })
    });
    group.finish();
}

fn with_room(mut p: Vec<u8>, room: usize) -> Vec<u8> {
    p.resize(p.len() + room, 0);
    p
}

fn srtp(c: &mut Criterion) {
    bench_suite(
        c,
        SrtpSuite::AesCm128HmacSha1_80,
        ProtectionProfile::Aes128CmHmacSha1_80,
    );
    bench_suite(
        c,
        SrtpSuite::AeadAes128Gcm,
        ProtectionProfile::AeadAes128Gcm,
    );
}

criterion_group!(benches, srtp);
criterion_main!(benches);
