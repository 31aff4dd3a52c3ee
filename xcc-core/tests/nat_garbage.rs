//! Every NAT core that reads the network takes garbage, truncations and bit flips of valid
//! messages without panicking and without changing state.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xcc_core::nat::Retransmission;
use xcc_core::nat::discovery::{Discovery, DiscoveryConfig};
use xcc_core::nat::ice::IceCredentials;
use xcc_core::nat::nat_type::{NatTypeConfig, NatTypeProbe};
use xcc_core::nat::punch::{ProbeKind, PunchSchedule, Puncher};
use xcc_core::nat::stun::{self, Message, Writer};
use xcc_core::nat::turn::{TcpFramer, TurnClient, TurnConfig, TurnInput, TurnTransport};

const SERVER: &str = "203.0.113.10:3478";

/// Inputs: random bytes of every length up to 300, STUN-looking headers over random bodies, and
/// every truncation and single-bit flip of `valid`.
fn inputs(valid: &[u8], seed: u64) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for len in 0..=300usize {
        let mut g = vec![0u8; len];
        rng.fill(&mut g[..]);
        out.push(g.clone());
        if len >= 20 {
            g[0] = rng.random_range(0..4);
            g[2..4].copy_from_slice(&((len - 20) as u16 & !3).to_be_bytes());
            g[4..8].copy_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
            out.push(g);
        }
    }
    for len in 0..valid.len() {
        out.push(valid[..len].to_vec());
    }
    for i in 0..valid.len() {
        for bit in 0..8 {
            let mut f = valid.to_vec();
            f[i] ^= 1 << bit;
            out.push(f);
        }
    }
    out
}

/// A success response for `request` carrying XOR-MAPPED-ADDRESS and XOR-RELAYED-ADDRESS.
fn success(request: &[u8], msg_type: u16) -> Vec<u8> {
    let id = Message::parse(request).unwrap().transaction_id();
    let mut buf = [0u8; 256];
    let mut w = Writer::new(&mut buf, msg_type, id).unwrap();
    w.xor_mapped_address("198.51.100.1:4000".parse().unwrap())
        .unwrap();
    w.xor_address(
        stun::attr::XOR_RELAYED_ADDRESS,
        "203.0.113.10:49200".parse().unwrap(),
    )
    .unwrap();
    w.fingerprint().unwrap();
    let len = w.finish();
    buf[..len].to_vec()
}

#[test]
fn discovery_survives_garbage() {
    let t0 = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let config = DiscoveryConfig {
        servers: vec![SERVER.parse().unwrap()],
        ..DiscoveryConfig::default()
    };
    let mut d = Discovery::new(config, t0).unwrap();
    d.handle_timeout(t0, &mut rng);
    let request = d.poll_transmit().unwrap().1.to_vec();
    let valid = success(&request, stun::BINDING_SUCCESS);
    let server: SocketAddr = SERVER.parse().unwrap();
    for input in inputs(&valid, 2) {
        if input != valid {
            d.handle_response(t0, server, &input);
        }
    }
    // A single flip can only be accepted where no check covers it (e.g. FINGERPRINT's type, which
    // turns it into an unknown attribute); the transaction id and the address it carries are
    // covered, so no input may ever produce a wrong address.
    match d.public_address() {
        None => assert!(d.handle_response(t0, server, &valid)),
        Some(ip) => assert_eq!(ip, "198.51.100.1".parse::<std::net::IpAddr>().unwrap()),
    }
}

#[test]
fn nat_type_probe_survives_garbage() {
    let t0 = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut p = NatTypeProbe::new(
        NatTypeConfig {
            primary: SERVER.parse().unwrap(),
            secondary: None,
            local: None,
            retransmission: Retransmission::FAILOVER,
        },
        t0,
    );
    p.handle_timeout(t0, &mut rng);
    let request = p.poll_transmit().unwrap().1.to_vec();
    let valid = success(&request, stun::BINDING_SUCCESS);
    let server: SocketAddr = SERVER.parse().unwrap();
    for input in inputs(&valid, 4) {
        if input != valid {
            // Bit flips that keep the framing and the id may be taken as an answer; the point
            // is that nothing panics.
            let _ = p.handle_response(t0, server, &input, &mut rng);
        }
    }
}

#[test]
fn turn_client_survives_garbage() {
    let t0 = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut c = TurnClient::new(
        TurnConfig {
            server: SERVER.parse().unwrap(),
            username: "xcc".into(),
            password: "secret".into(),
            transport: TurnTransport::Udp,
            lifetime: Duration::from_secs(600),
            retransmission: Retransmission::FAILOVER,
        },
        t0,
    );
    c.handle_timeout(t0, &mut rng);
    let request = c.poll_transmit().unwrap().1.to_vec();
    let valid = success(&request, 0x0103);
    let server: SocketAddr = SERVER.parse().unwrap();
    for input in inputs(&valid, 6) {
        if let TurnInput::Data { payload, .. } = c.handle_datagram(t0, server, &input, &mut rng) {
            assert!(payload.len() <= input.len());
        }
    }
}

#[test]
fn puncher_answers_survive_garbage() {
    let t0 = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let local = IceCredentials::generate(&mut rng);
    let remote = IceCredentials::generate(&mut rng);
    let peer: SocketAddr = "198.51.100.20:40000".parse().unwrap();
    let kind = ProbeKind::Ice {
        local,
        remote: remote.clone(),
        tie_breaker: 1,
        priority: 1,
    };
    let mut p = Puncher::new(t0, &[peer], kind, PunchSchedule::default());
    p.handle_timeout(t0, &mut rng);
    let mut buf = [0u8; 256];
    let (_, len) = p.poll_transmit(&mut buf).unwrap();
    let id = Message::parse(&buf[..len]).unwrap().transaction_id();
    let mut answer = [0u8; 128];
    let mut w = Writer::new(&mut answer, stun::BINDING_SUCCESS, id).unwrap();
    w.xor_mapped_address(peer).unwrap();
    w.integrity(remote.pwd.as_bytes()).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    let valid = answer[..n].to_vec();
    for input in inputs(&valid, 8) {
        // Everything but the exact answer is refused: integrity and fingerprint cover it all.
        assert_eq!(p.handle_response(peer, &input), input == valid);
    }
}

#[test]
fn tcp_framer_survives_garbage() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for len in 0..=600usize {
        let mut g = vec![0u8; len];
        rng.fill(&mut g[..]);
        let mut f = TcpFramer::new();
        f.push(&g).unwrap();
        let mut consumed = 0;
        // Frames never claim more bytes than arrived; garbage ends in an error or a wait.
        while let Ok(Some(frame)) = f.next_frame() {
            consumed += frame.len();
            assert!(consumed <= len);
        }
    }
}
