//! No input of any length makes the transform panic: garbage and truncations give typed errors.

mod srtp_common;

use rand::{Rng, RngCore};
use srtp_common::*;
use xcc_core::srtp::{SrtpContext, SrtpError, SrtpPolicy, SrtpSuite};

/// Random bytes of every length 0..=200, with the first byte also forced to look like RTP/RTCP
/// version 2 so the parsers get past the version check.
#[test]
fn garbage_of_every_length_is_an_error_not_a_panic() {
    for (k, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        let mut rng = rng(k as u64);
        let km = keying(&mut rng, suite);
        let mut ctx = SrtpContext::new(&km, SrtpPolicy::default());
        for len in 0..=200usize {
            for variant in 0..4 {
                let mut pkt = vec![0u8; len];
                rng.fill_bytes(&mut pkt);
                if len > 0 && variant > 0 {
                    pkt[0] = 0x80 | (pkt[0] & 0x3f);
                }
                if len > 1 && variant == 3 {
                    pkt[0] &= 0xe0; // no CSRCs, no extension: only the length stands in the way
                    pkt[1] = rng.random_range(200..=204);
                }
                let mut buf = pkt.clone();
                assert!(
                    ctx.unprotect_rtp(&mut buf, len).is_err(),
                    "{suite:?} rtp len {len}"
                );
                let mut buf = pkt.clone();
                assert!(
                    ctx.unprotect_rtcp(&mut buf, len).is_err(),
                    "{suite:?} rtcp len {len}"
                );
                // Protect accepts well-formed plain packets, so only require it not to panic and
                // to stay inside the buffer it was given.
                let mut buf = with_room(&pkt, ROOM);
                if let Ok(n) = ctx.protect_rtp(&mut buf, len) {
                    assert!(n <= buf.len());
                }
                let mut buf = with_room(&pkt, ROOM);
                if let Ok(n) = ctx.protect_rtcp(&mut buf, len) {
                    assert!(n <= buf.len());
                }
            }
        }
    }
}

/// Every truncation of a valid SRTP / SRTCP packet is refused; the short ones as TooShort.
#[test]
fn truncated_packets_are_refused() {
    for (k, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        let mut rng = rng(100 + k as u64);
        let km = keying(&mut rng, suite);
        let mut tx = SrtpContext::new(&km, SrtpPolicy::default());
        let plain = rtp_packet(&mut rng, 1, 1);
        let mut wire = with_room(&plain, ROOM);
        let full = tx.protect_rtp(&mut wire, plain.len()).unwrap();
        let rtcp = rtcp_packet(&mut rng, 1);
        let mut rtcp_wire = with_room(&rtcp, ROOM);
        let rtcp_full = tx.protect_rtcp(&mut rtcp_wire, rtcp.len()).unwrap();
        for len in 0..full {
            let mut rx = SrtpContext::new(&km, SrtpPolicy::default());
            let mut buf = wire.clone();
            assert!(
                rx.unprotect_rtp(&mut buf, len).is_err(),
                "{suite:?} rtp cut to {len}"
            );
            if len < 12 {
                assert_eq!(
                    rx.unprotect_rtp(&mut wire.clone(), len),
                    Err(SrtpError::TooShort)
                );
            }
        }
        for len in 0..rtcp_full {
            let mut rx = SrtpContext::new(&km, SrtpPolicy::default());
            let mut buf = rtcp_wire.clone();
            let got = rx.unprotect_rtcp(&mut buf, len);
            if len < 8 + suite.rtcp_overhead() {
                assert_eq!(got, Err(SrtpError::TooShort), "{suite:?} rtcp cut to {len}");
            } else {
                assert_eq!(
                    got,
                    Err(SrtpError::AuthFailed),
                    "{suite:?} rtcp cut to {len}"
                );
            }
        }
    }
}

#[test]
fn lengths_beyond_the_buffer_are_refused() {
    let mut rng = rng(200);
    let km = keying(&mut rng, SrtpSuite::AesCm128HmacSha1_80);
    let mut ctx = SrtpContext::new(&km, SrtpPolicy::default());
    let plain = rtp_packet(&mut rng, 1, 1);
    // `len` larger than the buffer.
    let mut buf = plain.clone();
    assert_eq!(
        ctx.protect_rtp(&mut buf, plain.len() + 1),
        Err(SrtpError::BufferTooSmall)
    );
    assert_eq!(
        ctx.unprotect_rtp(&mut buf, plain.len() + 1),
        Err(SrtpError::BufferTooSmall)
    );
    assert_eq!(
        ctx.protect_rtcp(&mut buf, plain.len() + 1),
        Err(SrtpError::BufferTooSmall)
    );
    assert_eq!(
        ctx.unprotect_rtcp(&mut buf, plain.len() + 1),
        Err(SrtpError::BufferTooSmall)
    );
    // No room for the tag: refused, and the packet is left as it was.
    let mut buf = with_room(&plain, 9);
    assert_eq!(
        ctx.protect_rtp(&mut buf, plain.len()),
        Err(SrtpError::BufferTooSmall)
    );
    assert_eq!(buf[..plain.len()], plain[..]);
    let rtcp = rtcp_packet(&mut rng, 1);
    let mut buf = with_room(&rtcp, 13);
    assert_eq!(
        ctx.protect_rtcp(&mut buf, rtcp.len()),
        Err(SrtpError::BufferTooSmall)
    );
    assert_eq!(buf[..rtcp.len()], rtcp[..]);
}

/// Random structural mutations of valid SRTP/SRTCP packets (byte changes, header bit flips in
/// CC/X/P, truncation, extension): never a panic, and never accepted.
#[test]
fn mutated_packets_are_never_accepted() {
    for (k, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        let mut rng = rng(300 + k as u64);
        let km = keying(&mut rng, suite);
        let mut tx = SrtpContext::new(&km, SrtpPolicy::default());
        for n in 0..1500u16 {
            let rtcp = n % 2 == 1;
            let plain = if rtcp {
                rtcp_packet(&mut rng, 3)
            } else {
                rtp_packet(&mut rng, 3, n)
            };
            let mut wire = with_room(&plain, ROOM);
            let len = if rtcp {
                tx.protect_rtcp(&mut wire, plain.len()).unwrap()
            } else {
                tx.protect_rtp(&mut wire, plain.len()).unwrap()
            };
            wire.truncate(len);
            let original = wire.clone();
            match rng.random_range(0..4) {
                0 => {
                    let at = rng.random_range(0..wire.len());
                    wire[at] ^= rng.random_range(1..=255u8);
                }
                1 => wire[0] ^= [0x01, 0x0f, 0x10, 0x20][rng.random_range(0..4)],
                2 => wire.truncate(rng.random_range(0..wire.len())),
                _ => wire.extend((0..rng.random_range(1..32)).map(|_| rng.random::<u8>())),
            }
            if wire == original {
                continue;
            }
            let mut rx = SrtpContext::new(&km, SrtpPolicy::default());
            let len = wire.len();
            wire.resize(len + ROOM, 0);
            let got = if rtcp {
                rx.unprotect_rtcp(&mut wire, len)
            } else {
                rx.unprotect_rtp(&mut wire, len)
            };
            assert!(
                got.is_err(),
                "{suite:?} packet {n}: mutated packet accepted"
            );
        }
    }
}
