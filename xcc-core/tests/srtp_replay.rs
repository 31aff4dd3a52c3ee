//! Replay, tampering and wrong keys are refused with the reason the relay counts, and refused
//! packets leave the receive state untouched.

mod srtp_common;

use rand::RngCore;
use srtp_common::*;
use xcc_core::srtp::{SrtpContext, SrtpError, SrtpPolicy, SrtpSuite};

fn pair(suite: SrtpSuite, seed: u64) -> (SrtpContext, SrtpContext, rand_chacha::ChaCha8Rng) {
    let mut rng = rng(seed);
    let km = keying(&mut rng, suite);
    (
        SrtpContext::new(&km, SrtpPolicy::default()),
        SrtpContext::new(&km, SrtpPolicy::default()),
        rng,
    )
}

fn protect_rtp(
    tx: &mut SrtpContext,
    rng: &mut impl RngCore,
    ssrc: u32,
    seq: u16,
) -> (Vec<u8>, Vec<u8>) {
    let plain = rtp_packet(rng, ssrc, seq);
    let mut buf = with_room(&plain, ROOM);
    let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
    buf.truncate(len);
    (plain, buf)
}

fn unprotect_rtp(rx: &mut SrtpContext, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = wire.to_vec();
    let len = rx.unprotect_rtp(&mut buf, wire.len())?;
    buf.truncate(len);
    Ok(buf)
}

fn unprotect_rtcp(rx: &mut SrtpContext, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = wire.to_vec();
    let len = rx.unprotect_rtcp(&mut buf, wire.len())?;
    buf.truncate(len);
    Ok(buf)
}

#[test]
fn replayed_srtp_is_refused_but_late_packets_inside_the_window_pass() {
    for (k, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        let (mut tx, mut rx, mut rng) = pair(suite, k as u64);
        let wires: Vec<_> = (1000..1100u16)
            .map(|s| protect_rtp(&mut tx, &mut rng, 7, s))
            .collect();
        // Deliver 1099 first, then everything else in order: 1035..1098 are late but in the
        // window, 1000..=1035 fell out of it.
        assert_eq!(unprotect_rtp(&mut rx, &wires[99].1).unwrap(), wires[99].0);
        assert_eq!(
            unprotect_rtp(&mut rx, &wires[99].1),
            Err(SrtpError::Replay),
            "{suite:?}"
        );
        for (i, (plain, wire)) in wires.iter().enumerate().take(99) {
            let got = unprotect_rtp(&mut rx, wire);
            if 1099 - (1000 + i) < 64 {
                assert_eq!(got.as_ref(), Ok(plain), "{suite:?} late packet {i}");
                assert_eq!(
                    unprotect_rtp(&mut rx, wire),
                    Err(SrtpError::Replay),
                    "{suite:?}"
                );
            } else {
                assert_eq!(got, Err(SrtpError::Replay), "{suite:?} stale packet {i}");
            }
        }
    }
}

#[test]
fn replayed_srtcp_is_refused() {
    for (k, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        let (mut tx, mut rx, mut rng) = pair(suite, 10 + k as u64);
        let mut wires = Vec::new();
        for _ in 0..100 {
            let plain = rtcp_packet(&mut rng, 9);
            let mut buf = with_room(&plain, ROOM);
            let len = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
            buf.truncate(len);
            wires.push((plain, buf));
        }
        assert_eq!(unprotect_rtcp(&mut rx, &wires[99].1).unwrap(), wires[99].0);
        assert_eq!(
            unprotect_rtcp(&mut rx, &wires[99].1),
            Err(SrtpError::Replay),
            "{suite:?}"
        );
        assert_eq!(unprotect_rtcp(&mut rx, &wires[50].1).unwrap(), wires[50].0);
        assert_eq!(
            unprotect_rtcp(&mut rx, &wires[50].1),
            Err(SrtpError::Replay),
            "{suite:?}"
        );
        assert_eq!(
            unprotect_rtcp(&mut rx, &wires[10].1),
            Err(SrtpError::Replay),
            "{suite:?}"
        );
    }
}

#[test]
fn any_flipped_bit_fails_authentication() {
    for (k, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        let (mut tx, _, mut rng) = pair(suite, 20 + k as u64);
        let (_, wire) = protect_rtp(&mut tx, &mut rng, 7, 500);
        // Every byte after the first (flipping the version bits makes it Malformed instead).
        for at in 1..wire.len() {
            let (_, mut rx, _) = pair(suite, 20 + k as u64);
            let mut bad = wire.clone();
            bad[at] ^= 0x01;
            let got = unprotect_rtp(&mut rx, &bad);
            assert!(
                matches!(
                    got,
                    Err(SrtpError::AuthFailed | SrtpError::Malformed | SrtpError::TooShort)
                ),
                "{suite:?} byte {at}: {got:?}"
            );
            // A flip in the tag or payload must be an authentication failure specifically.
            if at >= wire.len() - suite.rtp_overhead() {
                assert_eq!(got, Err(SrtpError::AuthFailed), "{suite:?} tag byte {at}");
            }
        }
        let plain = rtcp_packet(&mut rng, 9);
        let mut buf = with_room(&plain, ROOM);
        let len = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
        for at in 1..len {
            let (_, mut rx, _) = pair(suite, 20 + k as u64);
            let mut bad = buf[..len].to_vec();
            bad[at] ^= 0x80;
            assert_eq!(
                unprotect_rtcp(&mut rx, &bad),
                Err(SrtpError::AuthFailed),
                "{suite:?} rtcp byte {at}"
            );
        }
    }
}

#[test]
fn wrong_key_fails_authentication() {
    for (k, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        let (mut tx, _, mut rng) = pair(suite, 30 + k as u64);
        let (_, mut other, _) = pair(suite, 1000 + k as u64);
        let (_, wire) = protect_rtp(&mut tx, &mut rng, 7, 1);
        assert_eq!(
            unprotect_rtp(&mut other, &wire),
            Err(SrtpError::AuthFailed),
            "{suite:?}"
        );
        let plain = rtcp_packet(&mut rng, 9);
        let mut buf = with_room(&plain, ROOM);
        let len = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
        assert_eq!(
            unprotect_rtcp(&mut other, &buf[..len]),
            Err(SrtpError::AuthFailed),
            "{suite:?}"
        );
    }
}

#[test]
fn forged_packets_do_not_move_the_receive_state() {
    let (mut tx, mut rx, mut rng) = pair(SrtpSuite::AesCm128HmacSha1_80, 40);
    let (_, first) = protect_rtp(&mut tx, &mut rng, 7, 100);
    unprotect_rtp(&mut rx, &first).unwrap();
    // A forgery claiming seq 60000 (which would shift the window and ROC guess) is refused ...
    let mut forged = first.clone();
    forged[2..4].copy_from_slice(&60000u16.to_be_bytes());
    assert_eq!(unprotect_rtp(&mut rx, &forged), Err(SrtpError::AuthFailed));
    // ... and the genuine stream carries on as if it never arrived.
    for seq in 101..200 {
        let (plain, wire) = protect_rtp(&mut tx, &mut rng, 7, seq);
        assert_eq!(unprotect_rtp(&mut rx, &wire), Ok(plain));
    }
}

#[test]
fn protect_refuses_to_reuse_an_index() {
    let (mut tx, _, mut rng) = pair(SrtpSuite::AesCm128HmacSha1_80, 50);
    protect_rtp(&mut tx, &mut rng, 7, 100);
    protect_rtp(&mut tx, &mut rng, 7, 101);
    let plain = rtp_packet(&mut rng, 7, 100);
    let mut buf = with_room(&plain, ROOM);
    // Same SSRC and index with another payload would be a two-time pad.
    assert_eq!(
        tx.protect_rtp(&mut buf, plain.len()),
        Err(SrtpError::Replay)
    );
    // A reordered, not yet used index is fine.
    protect_rtp(&mut tx, &mut rng, 7, 99);
}
