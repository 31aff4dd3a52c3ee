//! The ICE-lite responder against an independent STUN implementation (stun-rs): requests that a
//! real ICE agent would send get responses that agent accepts; everything else gets nothing.

use std::net::SocketAddr;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stun_rs::attributes::ice::{IceControlled, IceControlling, Priority, UseCandidate};
use stun_rs::attributes::stun::{
    ErrorCode, Fingerprint, MessageIntegrity, UserName, XorMappedAddress,
};
use stun_rs::methods::BINDING;
use stun_rs::{
    DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    StunMessageBuilder, TransactionId,
};
use xcc_core::nat::ice::{
    CheckDrop, CheckLimits, CheckOutcome, IceCredentials, IceLite, MAX_RESPONSE_LEN,
};

const CLIENT_V4: &str = "198.51.100.20:51000";
const CLIENT_V6: &str = "[2001:db8::20]:51000";

/// What the client puts in its check.
#[derive(Clone, Copy)]
struct Check<'a> {
    username: Option<&'a str>,
    pwd: Option<&'a str>,
    fingerprint: bool,
    use_candidate: bool,
    controlled: bool,
}

fn credentials() -> (IceCredentials, IceCredentials) {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    (
        IceCredentials::generate(&mut rng),
        IceCredentials::generate(&mut rng),
    )
}

/// Encodes a Binding request with stun-rs, as a full ICE agent (the client) would.
fn request(check: Check<'_>, id: [u8; 12]) -> Vec<u8> {
    let mut b = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_transaction_id(TransactionId::from(id))
        .with_attribute(Priority::from(0x6e00_01ff));
    if let Some(u) = check.username {
        b = b.with_attribute(UserName::new(u).unwrap());
    }
    b = if check.controlled {
        b.with_attribute(IceControlled::from(7))
    } else {
        b.with_attribute(IceControlling::from(7))
    };
    if check.use_candidate {
        b = b.with_attribute(UseCandidate::default());
    }
    if let Some(p) = check.pwd {
        b = b.with_attribute(MessageIntegrity::new(HMACKey::new_short_term(p).unwrap()));
    }
    if check.fingerprint {
        b = b.with_attribute(Fingerprint::default());
    }
    let msg = b.build();
    let mut buf = [0u8; 512];
    let len = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &msg)
        .unwrap();
    buf[..len].to_vec()
}

fn good_check<'a>(username: &'a str, pwd: &'a str) -> Check<'a> {
    Check {
        username: Some(username),
        pwd: Some(pwd),
        fingerprint: true,
        use_candidate: false,
        controlled: false,
    }
}

fn responder(local: &IceCredentials, remote: &IceCredentials) -> IceLite {
    IceLite::new(local.clone(), Some(remote), CheckLimits::default())
}

/// Decodes `bytes` with stun-rs, requiring valid MESSAGE-INTEGRITY under `pwd` and FINGERPRINT.
fn decode_verified(bytes: &[u8], pwd: &str) -> stun_rs::StunMessage {
    let ctx = DecoderContextBuilder::default()
        .with_key(HMACKey::new_short_term(pwd).unwrap())
        .with_validation()
        .build();
    let (msg, len) = MessageDecoderBuilder::default()
        .with_context(ctx)
        .build()
        .decode(bytes)
        .expect("stun-rs accepts the response");
    assert_eq!(len, bytes.len());
    msg
}

#[test]
fn independent_client_check_gets_verifiable_response() {
    let (local, remote) = credentials();
    let mut ice = responder(&local, &remote);
    let username = format!("{}:{}", local.ufrag, remote.ufrag);
    for from in [CLIENT_V4, CLIENT_V6] {
        let from: SocketAddr = from.parse().unwrap();
        let id = [3u8; 12];
        let req = request(good_check(&username, &local.pwd), id);
        let mut out = [0u8; 1500];
        let outcome = ice.handle_request(Instant::now(), from, &req, &mut out);
        let CheckOutcome::Success { len, nominated } = outcome else {
            panic!("expected success, got {outcome:?}");
        };
        assert!(!nominated);
        assert!(len <= MAX_RESPONSE_LEN);
        let msg = decode_verified(&out[..len], &local.pwd);
        assert_eq!(msg.class(), MessageClass::SuccessResponse);
        assert_eq!(msg.method(), BINDING);
        assert_eq!(msg.transaction_id().as_bytes(), &id);
        let mapped = msg
            .get::<XorMappedAddress>()
            .expect("XOR-MAPPED-ADDRESS present")
            .as_xor_mapped_address()
            .unwrap();
        assert_eq!(*mapped.socket_address(), from);
    }
}

#[test]
fn use_candidate_reports_nomination() {
    let (local, remote) = credentials();
    let mut ice = responder(&local, &remote);
    let username = format!("{}:{}", local.ufrag, remote.ufrag);
    let mut check = good_check(&username, &local.pwd);
    check.use_candidate = true;
    let mut out = [0u8; 128];
    let outcome = ice.handle_request(
        Instant::now(),
        CLIENT_V4.parse().unwrap(),
        &request(check, [4; 12]),
        &mut out,
    );
    assert!(matches!(
        outcome,
        CheckOutcome::Success {
            nominated: true,
            ..
        }
    ));
    assert_eq!(ice.counters().nominations, 1);
}

#[test]
fn controlled_peer_gets_authenticated_487() {
    let (local, remote) = credentials();
    let mut ice = responder(&local, &remote);
    let username = format!("{}:{}", local.ufrag, remote.ufrag);
    let mut check = good_check(&username, &local.pwd);
    check.controlled = true;
    let mut out = [0u8; 128];
    let outcome = ice.handle_request(
        Instant::now(),
        CLIENT_V4.parse().unwrap(),
        &request(check, [5; 12]),
        &mut out,
    );
    let CheckOutcome::RoleConflict { len } = outcome else {
        panic!("expected 487, got {outcome:?}");
    };
    let msg = decode_verified(&out[..len], &local.pwd);
    assert_eq!(msg.class(), MessageClass::ErrorResponse);
    let code = msg
        .get::<ErrorCode>()
        .unwrap()
        .as_error_code()
        .unwrap()
        .error_code()
        .error_code();
    assert_eq!(code, 487);
}

/// RFC 5769 §2.1: the sample request verifies through the responder (its sender claims the
/// controlled role, so the authenticated answer is a 487).
#[test]
fn rfc5769_sample_request_passes_verification() {
    let request: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];
    let local = IceCredentials {
        ufrag: "evtj".into(),
        pwd: "VOkJxbRl1RmTxUk/WvJxBt".into(),
    };
    let remote = IceCredentials {
        ufrag: "h6vY".into(),
        pwd: "x".repeat(22),
    };
    let mut out = [0u8; 128];
    let from = CLIENT_V4.parse().unwrap();
    let mut ice = responder(&local, &remote);
    let outcome = ice.handle_request(Instant::now(), from, &request, &mut out);
    assert!(matches!(outcome, CheckOutcome::RoleConflict { .. }));
    let wrong_pwd = IceCredentials {
        pwd: "VOkJxbRl1RmTxUk/WvJxBu".into(),
        ..local
    };
    let mut ice = responder(&wrong_pwd, &remote);
    let outcome = ice.handle_request(Instant::now(), from, &request, &mut out);
    assert_eq!(outcome, CheckOutcome::Dropped(CheckDrop::BadIntegrity));
}

#[test]
fn bad_credentials_get_no_response() {
    let (local, remote) = credentials();
    let good_user = format!("{}:{}", local.ufrag, remote.ufrag);
    let swapped_user = format!("{}:{}", remote.ufrag, local.ufrag);
    let wrong_remote = format!("{}:zzzz", local.ufrag);
    let cases: [(Check<'_>, CheckDrop); 6] = [
        (good_check(&good_user, &remote.pwd), CheckDrop::BadIntegrity),
        (
            good_check(&swapped_user, &local.pwd),
            CheckDrop::BadUsername,
        ),
        (
            good_check(&wrong_remote, &local.pwd),
            CheckDrop::BadUsername,
        ),
        (
            Check {
                username: None,
                ..good_check(&good_user, &local.pwd)
            },
            CheckDrop::BadUsername,
        ),
        (
            Check {
                pwd: None,
                ..good_check(&good_user, &local.pwd)
            },
            CheckDrop::NoIntegrity,
        ),
        (
            Check {
                fingerprint: false,
                ..good_check(&good_user, &local.pwd)
            },
            CheckDrop::NoFingerprint,
        ),
    ];
    let mut ice = responder(&local, &remote);
    for (i, (check, reason)) in cases.into_iter().enumerate() {
        let mut out = [0u8; 128];
        let outcome = ice.handle_request(
            Instant::now(),
            CLIENT_V4.parse().unwrap(),
            &request(check, [i as u8; 12]),
            &mut out,
        );
        assert_eq!(outcome, CheckOutcome::Dropped(reason), "case {i}");
        assert_eq!(out, [0u8; 128], "case {i}: nothing written");
    }
}

#[test]
fn truncations_bit_flips_and_garbage_never_succeed_or_panic() {
    let (local, remote) = credentials();
    let username = format!("{}:{}", local.ufrag, remote.ufrag);
    let good = request(good_check(&username, &local.pwd), [9; 12]);
    // No rate limit in the way: this test is about parsing and verification.
    let limits = CheckLimits {
        burst_per_source: u32::MAX / 1000,
        rate_per_source: 1,
        burst_per_leg: u32::MAX / 1000,
        rate_per_leg: 1,
    };
    let mut ice = IceLite::new(local.clone(), Some(&remote), limits);
    let from: SocketAddr = CLIENT_V4.parse().unwrap();
    let now = Instant::now();
    let mut out = [0u8; 128];
    let mut tried = 0;
    let mut attempt = |ice: &mut IceLite, bytes: &[u8]| {
        tried += 1;
        let outcome = ice.handle_request(now, from, bytes, &mut out);
        // A flipped class bit may turn the request into an indication: still nothing sent.
        assert!(
            matches!(outcome, CheckOutcome::Dropped(_) | CheckOutcome::Keepalive),
            "{bytes:02x?} gave {outcome:?}"
        );
    };
    for len in 0..good.len() {
        attempt(&mut ice, &good[..len]);
    }
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut flipped = good.clone();
            flipped[i] ^= 1 << bit;
            attempt(&mut ice, &flipped);
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for len in 0..=600 {
        let mut garbage = vec![0u8; len];
        rng.fill(&mut garbage[..]);
        attempt(&mut ice, &garbage);
        // Garbage behind a valid-looking header.
        if len >= 20 {
            garbage[0] = 0;
            garbage[1] = 1;
            garbage[2..4].copy_from_slice(&((len - 20) as u16 & !3).to_be_bytes());
            garbage[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            attempt(&mut ice, &garbage);
        }
    }
    let counters = ice.counters();
    assert_eq!(counters.answered + counters.role_conflicts, 0);
    assert!(tried > 1000);
    // The untouched request still succeeds: the drops above were for cause.
    let outcome = ice.handle_request(now, from, &good, &mut out);
    assert!(matches!(outcome, CheckOutcome::Success { .. }));
}

#[test]
fn flood_from_one_source_is_rate_limited() {
    let (local, remote) = credentials();
    let limits = CheckLimits::default();
    let mut ice = IceLite::new(local.clone(), Some(&remote), limits);
    let username = format!("{}:{}", local.ufrag, remote.ufrag);
    let req = request(good_check(&username, &local.pwd), [1; 12]);
    let now = Instant::now();
    let from: SocketAddr = CLIENT_V4.parse().unwrap();
    let mut out = [0u8; 128];
    let answered = (0..limits.burst_per_source * 3)
        .filter(|_| {
            matches!(
                ice.handle_request(now, from, &req, &mut out),
                CheckOutcome::Success { .. }
            )
        })
        .count();
    assert_eq!(answered, limits.burst_per_source as usize);
    assert_eq!(
        ice.counters().rate_limited,
        u64::from(limits.burst_per_source * 2)
    );
    // Another source is not starved by the first one's flood.
    let other: SocketAddr = "198.51.100.21:51000".parse().unwrap();
    assert!(matches!(
        ice.handle_request(now, other, &req, &mut out),
        CheckOutcome::Success { .. }
    ));
}

#[test]
fn small_output_buffer_is_refused_not_overrun() {
    let (local, remote) = credentials();
    let mut ice = responder(&local, &remote);
    let username = format!("{}:{}", local.ufrag, remote.ufrag);
    let req = request(good_check(&username, &local.pwd), [2; 12]);
    let mut out = [0u8; MAX_RESPONSE_LEN - 1];
    let outcome = ice.handle_request(Instant::now(), CLIENT_V4.parse().unwrap(), &req, &mut out);
    assert_eq!(outcome, CheckOutcome::Dropped(CheckDrop::BufferTooSmall));
}

#[test]
fn response_is_never_larger_than_the_fixed_bound() {
    // The smallest valid check (4-char ufrags) still gets at most MAX_RESPONSE_LEN bytes back, so
    // the amplification factor is bounded even for authenticated peers.
    let local = IceCredentials {
        ufrag: "abcd".into(),
        pwd: "abcdefghijklmnopqrstuv".into(),
    };
    let remote = IceCredentials {
        ufrag: "wxyz".into(),
        pwd: "abcdefghijklmnopqrstuv".into(),
    };
    let mut ice = responder(&local, &remote);
    let req = request(good_check("abcd:wxyz", &local.pwd), [6; 12]);
    let mut out = [0u8; 1500];
    let outcome = ice.handle_request(Instant::now(), CLIENT_V6.parse().unwrap(), &req, &mut out);
    let CheckOutcome::Success { len, .. } = outcome else {
        panic!("expected success, got {outcome:?}");
    };
    assert_eq!(len, MAX_RESPONSE_LEN);
    assert!(len <= req.len() + 24 + 8);
}
