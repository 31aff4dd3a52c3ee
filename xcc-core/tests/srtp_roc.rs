//! Roll-over counter edge cases (RFC 3711 §3.3.1): the receiver must follow the sender across
//! wraps, lost first packets and long gaps, and never desynchronise for good.

mod srtp_common;

use rand::RngCore;
use srtp_common::*;
use xcc_core::srtp::{SrtpContext, SrtpError, SrtpPolicy, SrtpSuite};

struct Link {
    tx: SrtpContext,
    rx: SrtpContext,
    rng: rand_chacha::ChaCha8Rng,
}

impl Link {
    fn new(suite: SrtpSuite, seed: u64) -> Self {
        let mut rng = rng(seed);
        let km = keying(&mut rng, suite);
        Link {
            tx: SrtpContext::new(&km, SrtpPolicy::default()),
            rx: SrtpContext::new(&km, SrtpPolicy::default()),
            rng,
        }
    }

    /// Protects packet `seq` of `ssrc`; returns (plain, wire).
    fn send(&mut self, ssrc: u32, seq: u16) -> (Vec<u8>, Vec<u8>) {
        let plain = rtp_packet(&mut self.rng, ssrc, seq);
        let mut buf = with_room(&plain, ROOM);
        let len = self.tx.protect_rtp(&mut buf, plain.len()).unwrap();
        buf.truncate(len);
        (plain, buf)
    }

    fn deliver(&mut self, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = wire.to_vec();
        let len = self.rx.unprotect_rtp(&mut buf, wire.len())?;
        buf.truncate(len);
        Ok(buf)
    }

    /// Sends and delivers, requiring the plain packet back.
    fn roundtrip(&mut self, ssrc: u32, seq: u16) {
        let (plain, wire) = self.send(ssrc, seq);
        assert_eq!(self.deliver(&wire), Ok(plain), "seq {seq}");
    }
}

const SUITES: [SrtpSuite; 2] = [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AeadAes128Gcm];

#[test]
fn stream_starting_near_65535_whose_first_packets_are_lost() {
    for suite in SUITES {
        let mut link = Link::new(suite, 1);
        // 65530..=65535 and 0..=2 are sent but lost: the receiver's first packet is seq 3 with
        // ROC 1, which a receiver assuming ROC 0 could never authenticate.
        for seq in (65530..=65535).chain(0..=2) {
            link.send(5, seq);
        }
        for seq in 3..2000 {
            link.roundtrip(5, seq);
        }
    }
}

#[test]
fn late_packet_from_before_the_wrap_is_accepted() {
    for suite in SUITES {
        let mut link = Link::new(suite, 2);
        link.roundtrip(5, 65500);
        let (plain_late, late) = link.send(5, 65535);
        link.roundtrip(5, 0);
        link.roundtrip(5, 1);
        // 65535 arrives after 0 and 1: ROC - 1.
        assert_eq!(link.deliver(&late), Ok(plain_late));
        link.roundtrip(5, 2);
    }
}

#[test]
fn same_roc_gap_over_2_pow_15_is_followed() {
    for suite in SUITES {
        // With ROC 0.
        let mut link = Link::new(suite, 3);
        link.roundtrip(5, 100);
        // Lost in transit (the sender sees every 500th, enough to keep its own ROC).
        for seq in (101..40_000).step_by(500) {
            link.send(5, seq);
        }
        link.roundtrip(5, 40_000);
        link.roundtrip(5, 40_001);

        // With ROC 1: the RFC estimate takes seq 50000 after seq 100 for a late packet of ROC 0,
        // which is out of the window; it is in fact a forward jump and must authenticate as one.
        let mut link = Link::new(suite, 4);
        for seq in (65500..=65535).chain(0..=100) {
            link.roundtrip(5, seq);
        }
        for seq in (101..50_000).step_by(500) {
            link.send(5, seq);
        }
        link.roundtrip(5, 50_000);
        for seq in 50_001..50_100 {
            link.roundtrip(5, seq);
        }
        // And the next wrap is still followed (one packet in a thousand arrives).
        let sparse = (50_100..=65_500).step_by(100).chain((0..5000).step_by(100));
        for seq in sparse {
            let (plain, wire) = link.send(5, seq);
            if seq % 1000 == 0 {
                assert_eq!(link.deliver(&wire), Ok(plain), "seq {seq}");
            }
        }
    }
}

#[test]
fn rejected_stale_packet_is_still_a_replay_verdict() {
    let mut link = Link::new(SrtpSuite::AesCm128HmacSha1_80, 5);
    let (_, old) = link.send(5, 1000);
    link.deliver(&old).unwrap();
    for seq in 1001..1200 {
        link.roundtrip(5, seq);
    }
    assert_eq!(link.deliver(&old), Err(SrtpError::Replay));
}

#[test]
fn many_ssrcs_evict_the_least_recently_used() {
    let mut link = Link::new(SrtpSuite::AesCm128HmacSha1_80, 6);
    // Nine streams take turns: the table holds eight, each stream is re-learnt when it comes
    // back (ROC 0 or the lost-start guess of ROC 1), and traffic keeps flowing.
    let ssrcs: Vec<u32> = (0..9).map(|_| link.rng.next_u32()).collect();
    for round in 0..50u16 {
        for &ssrc in &ssrcs {
            link.roundtrip(ssrc, 1000 + round);
        }
    }
    // The active stream stays in the table while another churns: a replay of it is caught.
    let (_, wire) = link.send(ssrcs[0], 2000);
    link.deliver(&wire).unwrap();
    for (i, &ssrc) in ssrcs[1..8].iter().enumerate() {
        link.roundtrip(ssrc, 2000 + i as u16);
    }
    assert_eq!(link.deliver(&wire), Err(SrtpError::Replay));
}

#[test]
fn srtcp_index_is_per_ssrc_and_starts_at_one() {
    let mut link = Link::new(SrtpSuite::AesCm128HmacSha1_80, 7);
    for (ssrc, index) in [(1u32, 1u32), (2, 1), (1, 2), (1, 3), (2, 2)] {
        let plain = rtcp_packet(&mut link.rng, ssrc);
        let mut buf = with_room(&plain, ROOM);
        let len = link.tx.protect_rtcp(&mut buf, plain.len()).unwrap();
        // HMAC suites: ... || E flag + index || 80-bit tag.
        let trailer = u32::from_be_bytes(buf[len - 14..len - 10].try_into().unwrap());
        assert_eq!(trailer, 0x8000_0000 | index, "ssrc {ssrc}");
        let got = link.rx.unprotect_rtcp(&mut buf, len).unwrap();
        assert_eq!(buf[..got], plain[..]);
    }
}
