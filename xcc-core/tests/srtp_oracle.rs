//! Byte-for-byte agreement with webrtc-srtp 0.17 (the oracle) for every suite, RTP and RTCP,
//! protect and unprotect, over seeded random packets.

mod srtp_common;

use rand::{Rng, RngCore};
use srtp_common::*;
use xcc_core::srtp::{SrtpContext, SrtpPolicy, SrtpSuite};

/// Protects `seqs` with XCC and the oracle and requires identical bytes; then each side
/// unprotects the other's output back to the original packet.
fn rtp_agrees(suite: SrtpSuite, seed: u64, seqs: impl Iterator<Item = u16>) -> usize {
    let mut rng = rng(seed);
    let km = keying(&mut rng, suite);
    let ssrc = rng.next_u32();
    let (mut x_tx, mut x_rx) = (
        SrtpContext::new(&km, SrtpPolicy::default()),
        SrtpContext::new(&km, SrtpPolicy::default()),
    );
    let (mut o_tx, mut o_rx) = (oracle(&km), oracle(&km));
    let mut n = 0;
    for seq in seqs {
        let plain = rtp_packet(&mut rng, ssrc, seq);
        let mut buf = with_room(&plain, ROOM);
        let len = x_tx.protect_rtp(&mut buf, plain.len()).expect("protect");
        let expected = o_tx.encrypt_rtp(&plain).expect("oracle protect");
        assert_eq!(
            &buf[..len],
            &expected[..],
            "{suite:?} seq {seq}: protect differs"
        );

        let out = o_rx
            .decrypt_rtp(&buf[..len])
            .expect("oracle unprotect of XCC output");
        assert_eq!(
            &out[..],
            &plain[..],
            "{suite:?} seq {seq}: oracle unprotect"
        );
        let len = x_rx
            .unprotect_rtp(&mut buf, len)
            .expect("XCC unprotect of oracle output");
        assert_eq!(
            &buf[..len],
            &plain[..],
            "{suite:?} seq {seq}: unprotect differs"
        );
        n += 1;
    }
    n
}

fn rtcp_agrees(suite: SrtpSuite, seed: u64, count: usize) {
    let mut rng = rng(seed);
    let km = keying(&mut rng, suite);
    let ssrcs = [rng.next_u32(), rng.next_u32()];
    let (mut x_tx, mut x_rx) = (
        SrtpContext::new(&km, SrtpPolicy::default()),
        SrtpContext::new(&km, SrtpPolicy::default()),
    );
    let (mut o_tx, mut o_rx) = (oracle(&km), oracle(&km));
    for i in 0..count {
        let ssrc = ssrcs[rng.random_range(0..2)];
        let plain = rtcp_packet(&mut rng, ssrc);
        let mut buf = with_room(&plain, ROOM);
        let len = x_tx.protect_rtcp(&mut buf, plain.len()).expect("protect");
        let expected = o_tx.encrypt_rtcp(&plain).expect("oracle protect");
        assert_eq!(
            &buf[..len],
            &expected[..],
            "{suite:?} packet {i}: protect differs"
        );

        let out = o_rx
            .decrypt_rtcp(&buf[..len])
            .expect("oracle unprotect of XCC output");
        assert_eq!(
            &out[..],
            &plain[..],
            "{suite:?} packet {i}: oracle unprotect"
        );
        let len = x_rx
            .unprotect_rtcp(&mut buf, len)
            .expect("XCC unprotect of oracle output");
        assert_eq!(
            &buf[..len],
            &plain[..],
            "{suite:?} packet {i}: unprotect differs"
        );
    }
}

#[test]
fn rtp_matches_oracle_for_every_suite() {
    for (k, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        let start: u16 = rng(k as u64).random();
        rtp_agrees(
            suite,
            100 + k as u64,
            (0..300u16).map(|i| start.wrapping_add(i)),
        );
    }
}

#[test]
fn rtp_matches_oracle_across_roc_wrap_from_65530() {
    for (k, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        rtp_agrees(
            suite,
            200 + k as u64,
            (0..40u16).map(|i| 65530u16.wrapping_add(i)),
        );
    }
}

#[test]
fn rtp_matches_oracle_over_many_wraps() {
    // Random forward gaps of up to 3000 packets (well under 2^15): about one wrap per 40
    // packets, so 2000 packets cross ~45 roll-overs without running 3 million packets.
    for (k, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        let mut gaps = rng(300 + k as u64);
        let mut seq: u16 = gaps.random();
        let seqs = (0..2000).map(move |_| {
            seq = seq.wrapping_add(gaps.random_range(1..=3000));
            seq
        });
        assert_eq!(rtp_agrees(suite, 400 + k as u64, seqs), 2000);
    }
}

#[test]
fn rtp_matches_oracle_over_contiguous_wraps() {
    // Every sequence number from 65000 across two roll-overs, for the suite phones offer first.
    let count = 65536 + 1000;
    let seqs = (0..count).map(|i: u32| (i + 65000) as u16);
    assert_eq!(
        rtp_agrees(SrtpSuite::AesCm128HmacSha1_80, 500, seqs),
        count as usize
    );
}

#[test]
fn rtcp_matches_oracle_for_every_suite() {
    for (k, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        rtcp_agrees(suite, 600 + k as u64, 300);
    }
}
