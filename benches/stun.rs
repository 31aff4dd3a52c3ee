//! Cost of answering one ICE connectivity check: XCC's zero-allocation responder against stun-rs
//! decoding and verifying the same request (the reference, measured in the same run).
//!
//! The request is what a full agent sends: USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE,
//! MESSAGE-INTEGRITY, FINGERPRINT (96 bytes). XCC's number includes writing the signed response;
//! stun-rs's only decodes and validates, so the ratio understates XCC's advantage.
//!
//! Run: `cargo bench --bench stun -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use stun_rs::attributes::ice::{IceControlling, Priority, UseCandidate};
use stun_rs::attributes::stun::{Fingerprint, MessageIntegrity, UserName};
use stun_rs::methods::BINDING;
use stun_rs::{
    DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    StunMessageBuilder,
};
use xcc_core::nat::ice::{CheckLimits, CheckOutcome, IceCredentials, IceLite};

fn stun(c: &mut Criterion) {
    let local = IceCredentials {
        ufrag: "XccUfrag".into(),
        pwd: "XccPasswordXccPassword24".into(),
    };
    let remote = IceCredentials {
        ufrag: "PeerUfra".into(),
        pwd: "PeerPasswordPeerPasswor".into(),
    };
    let username = format!("{}:{}", local.ufrag, remote.ufrag);
    let msg = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_attribute(UserName::new(username.as_str()).expect("ASCII username"))
        .with_attribute(Priority::from(1_853_824_767))
        .with_attribute(IceControlling::from(42))
        .with_attribute(UseCandidate::default())
        .with_attribute(MessageIntegrity::new(
            HMACKey::new_short_term(&local.pwd).expect("ASCII password"),
        ))
        .with_attribute(Fingerprint::default())
        .build();
    let mut request = [0u8; 256];
    let len = MessageEncoderBuilder::default()
        .build()
        .encode(&mut request, &msg)
        .expect("fits 256 bytes");
    let request = &request[..len];

    // Limits out of the way: the bench measures parsing, verification and the response.
    let limits = CheckLimits {
        burst_per_source: u32::MAX / 1000,
        rate_per_source: u32::MAX / 1000,
        burst_per_leg: u32::MAX / 1000,
        rate_per_leg: u32::MAX / 1000,
    };
    let mut ice = IceLite::new(local.clone(), Some(&remote), limits);
    let from: SocketAddr = "198.51.100.20:40000".parse().expect("literal");
    let now = Instant::now();
    let mut out = [0u8; 128];
    assert!(matches!(
        ice.handle_request(now, from, request, &mut out),
        CheckOutcome::Success { .. }
    ));

    let mut group = c.benchmark_group("ice_check");
    group.bench_function("xcc_handle_request", |b| {
        b.iter(|| black_box(ice.handle_request(now, from, black_box(request), &mut out)))
    });
    let decoder = MessageDecoderBuilder::default()
        .with_context(
            DecoderContextBuilder::default()
                .with_key(HMACKey::new_short_term(&local.pwd).expect("ASCII password"))
                .with_validation()
                .build(),
        )
        .build();
    group.bench_function("stun_rs_decode_validate", |b| {
        b.iter(|| black_box(decoder.decode(black_box(request)).is_ok()))
    });
    group.finish();
}

criterion_group!(benches, stun);
criterion_main!(benches);
