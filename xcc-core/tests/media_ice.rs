//! ICE-lite on a client leg through a running engine over 127.0.0.1: a full ICE agent (stun-rs)
//! gets a verifiable answer and its nomination latches the leg; a wrong password gets nothing.

mod media_support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use media_support::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stun_rs::attributes::ice::{IceControlling, Priority, UseCandidate};
use stun_rs::attributes::stun::{Fingerprint, MessageIntegrity, UserName, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{
    DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    StunMessageBuilder, TransactionId,
};
use xcc_core::ids::LegSide;
use xcc_core::media::{IceSetup, LegConfig, MediaEvent};
use xcc_core::nat::ice::IceCredentials;

const LIMIT: Duration = Duration::from_secs(5);

/// A nominating (USE-CANDIDATE) Binding request from a controlling agent, as a phone sends it.
fn nominating_check(username: &str, pwd: &str, id: [u8; 12]) -> Vec<u8> {
    let msg = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_transaction_id(TransactionId::from(id))
        .with_attribute(UserName::new(username).unwrap())
        .with_attribute(Priority::from(0x6e00_01ff))
        .with_attribute(IceControlling::from(0x1234_5678))
        .with_attribute(UseCandidate::default())
        .with_attribute(MessageIntegrity::new(HMACKey::new_short_term(pwd).unwrap()))
        .with_attribute(Fingerprint::default())
        .build();
    let mut buf = [0u8; 512];
    let len = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &msg)
        .unwrap();
    buf[..len].to_vec()
}

/// Decodes with stun-rs, requiring MESSAGE-INTEGRITY under `pwd` (and FINGERPRINT) to verify.
fn decode_verified(bytes: &[u8], pwd: &str) -> stun_rs::StunMessage {
    let ctx = DecoderContextBuilder::default()
        .with_key(HMACKey::new_short_term(pwd).unwrap())
        .with_validation()
        .build();
    let (msg, len) = MessageDecoderBuilder::default()
        .with_context(ctx)
        .build()
        .decode(bytes)
        .expect("stun-rs verifies the response under XCC's local pwd");
    assert_eq!(len, bytes.len());
    msg
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

/// Waits for the `Latched` event of the client leg (other events are skipped).
fn await_latched(events: &crossbeam_channel::Receiver<MediaEvent>) -> SocketAddr {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(MediaEvent::Latched {
                side: LegSide::Client,
                addr,
                ..
            }) => return addr,
            Ok(_) => continue,
            Err(e) => panic!("no Latched event within {LIMIT:?}: {e}"),
        }
    }
}

#[test]
fn nominated_check_is_answered_and_latches_a_wrong_password_gets_nothing() {
    let (engine, events) = engine(27200, 27299, |c| c.workers = 1);
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let setup = IceSetup {
        local: IceCredentials::generate(&mut rng),
        remote: Some(IceCredentials::generate(&mut rng)),
        candidates: Vec::new(),
    };
    let pbx = Phone::new();
    // The client's address is unknown (behind a NAT): only ICE can tell XCC where it is.
    ctl.configure_leg(
        call.call,
        LegSide::Client,
        LegConfig {
            ice: Some(setup.clone()),
            ..LegConfig::default()
        },
    )
    .unwrap();
    ctl.configure_leg(
        call.call,
        LegSide::Pbx,
        LegConfig {
            remote_rtp: Some(pbx.rtp_addr()),
            remote_rtcp: Some(pbx.rtcp_addr()),
            ..LegConfig::default()
        },
    )
    .unwrap();
    let [c, p] = call.ports;
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let remote = setup.remote.as_ref().unwrap();
    let username = format!("{}:{}", setup.local.ufrag, remote.ufrag);

    let phone = socket();
    let id = [0x5a; 12];
    let check = nominating_check(&username, &setup.local.pwd, id);
    phone.send_to(&check, at(c.rtp)).unwrap();
    let (resp, from) = recv(&phone);
    assert_eq!(from, at(c.rtp), "answered from the port the check reached");
    let msg = decode_verified(&resp, &setup.local.pwd);
    assert_eq!(msg.class(), MessageClass::SuccessResponse);
    assert_eq!(msg.method(), BINDING);
    assert_eq!(msg.transaction_id().as_bytes(), &id);
    let mapped = msg
        .get::<XorMappedAddress>()
        .expect("XOR-MAPPED-ADDRESS present")
        .as_xor_mapped_address()
        .unwrap();
    assert_eq!(*mapped.socket_address(), phone.local_addr().unwrap());

    assert_eq!(await_latched(&events), phone.local_addr().unwrap());
    let snap = wait_for(LIMIT, || {
        let s = ctl.snapshot(call.call).unwrap();
        (s.legs[0].latched == Some(phone.local_addr().unwrap())).then_some(s)
    });
    assert_eq!(snap.legs[0].side, LegSide::Client);
    assert_eq!(snap.legs[0].counters.drops, Default::default());

    // Media from the PBX now reaches the phone at the address ICE proved.
    let down = rtp_packet(1, 0x2222, 0x5a);
    pbx.rtp.send_to(&down, at(p.rtp)).unwrap();
    let (got, from) = recv(&phone);
    assert_eq!((got, from), (down, at(c.rtp)));

    // A stranger who does not know XCC's pwd: no answer, no latch, a counted drop.
    let stranger = socket();
    let wrong = "x".repeat(setup.local.pwd.len());
    stranger
        .send_to(&nominating_check(&username, &wrong, [0x66; 12]), at(c.rtp))
        .unwrap();
    let snap = wait_for(LIMIT, || {
        let s = ctl.snapshot(call.call).unwrap();
        (s.legs[0].counters.drops.stray == 1).then_some(s)
    });
    assert_eq!(snap.legs[0].latched, Some(phone.local_addr().unwrap()));
    // The check was handled (the drop is counted) before the snapshot: any answer would be queued.
    assert!(!pending(&stranger), "a wrong password gets no response");
    assert!(!pending(&phone));
}
