//! A seeded lossy, reordering, duplicating network between a sender and a receiver, across a
//! roll-over: every packet that arrives for the first time is accepted exactly once, every
//! duplicate is a replay.

mod srtp_common;

use std::collections::HashSet;

use rand::Rng;
use srtp_common::*;
use xcc_core::srtp::{SrtpContext, SrtpError, SrtpPolicy, SrtpSuite};

/// In flight: (sequence number, plain packet, wire packet).
type Flight = (u16, Vec<u8>, Vec<u8>);

/// Largest delay in packet times: reordering depth, well inside the 64-packet window.
const JITTER: u32 = 8;

fn run(suite: SrtpSuite, seed: u64, packets: u32) {
    let mut rng = rng(seed);
    let km = keying(&mut rng, suite);
    let mut tx = SrtpContext::new(&km, SrtpPolicy::default());
    let mut rx = SrtpContext::new(&km, SrtpPolicy::default());
    // (delivery time, packet), delivered in time order.
    let mut in_flight: Vec<(u32, Flight)> = Vec::new();
    let mut seen = HashSet::new();
    let (mut accepted, mut replays) = (0u32, 0u32);

    let mut deliver = |(seq, plain, wire): Flight, rx: &mut SrtpContext| {
        let mut buf = wire.clone();
        let got = rx.unprotect_rtp(&mut buf, wire.len());
        if seen.insert(seq) {
            let len =
                got.unwrap_or_else(|e| panic!("{suite:?} seq {seq}: first copy refused: {e}"));
            assert_eq!(buf[..len], plain[..]);
            accepted += 1;
        } else {
            assert_eq!(
                got,
                Err(SrtpError::Replay),
                "{suite:?} seq {seq}: duplicate"
            );
            replays += 1;
        }
    };

    for i in 0..packets {
        let seq = (60_000 + i) as u16;
        let plain = rtp_packet(&mut rng, 0x5eed, seq);
        let mut buf = with_room(&plain, ROOM);
        let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
        buf.truncate(len);
        if rng.random_bool(0.05) {
            continue; // lost
        }
        if rng.random_bool(0.02) {
            let at = i + rng.random_range(0..=JITTER);
            in_flight.push((at, (seq, plain.clone(), buf.clone()))); // duplicated
        }
        in_flight.push((i + rng.random_range(0..=JITTER), (seq, plain, buf)));
        in_flight.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        while in_flight.last().is_some_and(|(at, _)| *at <= i) {
            let (_, f) = in_flight.pop().expect("checked by the loop condition");
            deliver(f, &mut rx);
        }
    }
    while let Some((_, f)) = in_flight.pop() {
        deliver(f, &mut rx);
    }
    assert!(
        accepted as f64 > packets as f64 * 0.9,
        "{accepted} of {packets}"
    );
    assert!(
        replays > 0,
        "the network duplicated nothing: the test would prove nothing"
    );
}

#[test]
fn lossy_reordering_duplicating_network_across_a_wrap() {
    run(SrtpSuite::AesCm128HmacSha1_80, 1, 20_000);
    run(SrtpSuite::AeadAes128Gcm, 2, 20_000);
    run(SrtpSuite::AesCm256HmacSha1_32, 3, 10_000);
}
