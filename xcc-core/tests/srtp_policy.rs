//! RFC 4568 session parameters: UNENCRYPTED_SRTP, UNENCRYPTED_SRTCP, UNAUTHENTICATED_SRTP.

mod srtp_common;

use srtp_common::*;
use xcc_core::srtp::{SrtpContext, SrtpError, SrtpPolicy, SrtpSuite};

fn contexts(
    suite: SrtpSuite,
    policy: SrtpPolicy,
    seed: u64,
) -> (SrtpContext, SrtpContext, rand_chacha::ChaCha8Rng) {
    let mut rng = rng(seed);
    let km = keying(&mut rng, suite);
    (
        SrtpContext::new(&km, policy),
        SrtpContext::new(&km, policy),
        rng,
    )
}

/// Fixed-layout packet: 12-byte header, payload of `0xAB` bytes, so "in clear" is checkable.
fn clear_rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 42];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0xAB; 160]);
    p
}

#[test]
fn unencrypted_srtp_is_authenticated_but_readable() {
    for (k, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        let policy = SrtpPolicy {
            encrypt_rtp: false,
            ..SrtpPolicy::default()
        };
        let (mut tx, mut rx, _) = contexts(suite, policy, k as u64);
        let plain = clear_rtp(1);
        let mut buf = with_room(&plain, ROOM);
        let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
        assert_eq!(len, plain.len() + suite.rtp_overhead(), "{suite:?}");
        assert_eq!(
            buf[..plain.len()],
            plain[..],
            "{suite:?}: payload must stay in clear"
        );
        let mut forged = buf.clone();
        forged[20] ^= 1;
        assert_eq!(
            rx.unprotect_rtp(&mut forged, len),
            Err(SrtpError::AuthFailed),
            "{suite:?}"
        );
        let got = rx.unprotect_rtp(&mut buf, len).unwrap();
        assert_eq!(buf[..got], plain[..]);
    }
}

#[test]
fn unauthenticated_srtp_has_no_tag_with_hmac_suites() {
    let policy = SrtpPolicy {
        authenticate_rtp: false,
        ..SrtpPolicy::default()
    };
    let (mut tx, mut rx, _) = contexts(SrtpSuite::AesCm128HmacSha1_80, policy, 10);
    let plain = clear_rtp(1);
    let mut buf = with_room(&plain, ROOM);
    let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
    assert_eq!(len, plain.len());
    assert_ne!(buf[12..len], plain[12..], "still encrypted");
    let got = rx.unprotect_rtp(&mut buf, len).unwrap();
    assert_eq!(buf[..got], plain[..]);
    // Replay protection still applies.
    let mut again = with_room(&plain, ROOM);
    let len = tx.protect_rtp(&mut again, plain.len());
    assert_eq!(len, Err(SrtpError::Replay));
}

#[test]
fn unencrypted_srtcp_clears_the_e_flag_and_stays_authenticated() {
    for (k, suite) in SrtpSuite::ALL.into_iter().enumerate() {
        let policy = SrtpPolicy {
            encrypt_rtcp: false,
            ..SrtpPolicy::default()
        };
        let (mut tx, _, mut rng) = contexts(suite, policy, 20 + k as u64);
        // The receiver follows the E flag, whatever its own policy says.
        let (_, mut rx, _) = contexts(suite, SrtpPolicy::default(), 20 + k as u64);
        let plain = rtcp_packet(&mut rng, 77);
        let mut buf = with_room(&plain, ROOM);
        let len = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
        assert_eq!(len, plain.len() + suite.rtcp_overhead());
        assert_eq!(buf[..plain.len()], plain[..], "{suite:?}: in clear");
        let trailer_at = if suite.rtp_overhead() == 16 {
            len - 4
        } else {
            len - 14
        };
        assert_eq!(buf[trailer_at] & 0x80, 0, "{suite:?}: E flag");
        let mut forged = buf.clone();
        forged[9] ^= 1;
        assert_eq!(
            rx.unprotect_rtcp(&mut forged, len),
            Err(SrtpError::AuthFailed),
            "{suite:?}"
        );
        let got = rx.unprotect_rtcp(&mut buf, len).unwrap();
        assert_eq!(buf[..got], plain[..]);
    }
}

#[test]
fn default_policy_encrypts_everything() {
    let p = SrtpPolicy::default();
    assert!(p.encrypt_rtp && p.encrypt_rtcp && p.authenticate_rtp);
    let (mut tx, _, _) = contexts(SrtpSuite::AesCm128HmacSha1_80, p, 30);
    let plain = clear_rtp(5);
    let mut buf = with_room(&plain, ROOM);
    let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
    assert_eq!(buf[..12], plain[..12], "header in clear");
    assert_ne!(buf[12..len - 10], plain[12..], "payload encrypted");
}
