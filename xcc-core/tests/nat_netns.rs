//! The NAT cores through a real Linux NAT: network namespaces that the test creates and removes,
//! an nftables masquerade between a private side (198.51.100.0/24) and a public side
//! (203.0.113.0/24), and coturn as the STUN server on the public side.
//!
//! ```text
//!  ns "c" (XCC or client)      ns "n" (NAT)                        ns "p" (public)
//!  c0 198.51.100.2  ------  n0 198.51.100.1 | n1 203.0.113.1  ------  p0 203.0.113.10, .11 (coturn)
//!                                  masquerade out of n1                    203.0.113.20 (peer)
//! ```
//!
//! Every socket lives in a namespace the test created (a thread enters it with `setns`); nothing
//! is sent from the root namespace. The namespaces and coturn are removed on drop, also when an
//! assertion fails. Without root or `ip netns`, or without coturn, each test prints why and passes
//! without checking anything.

use std::io::{ErrorKind, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

mod netns_support;
use netns_support::*;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use xcc_core::nat::Retransmission;
use xcc_core::nat::discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};
use xcc_core::nat::ice::{CheckLimits, CheckOutcome, IceCredentials, IceLite};
use xcc_core::nat::nat_type::{
    FilteringBehavior, MappingBehavior, NatTypeConfig, NatTypeProbe, Recommendation,
};
use xcc_core::nat::punch::{ProbeKind, PunchSchedule, Puncher};
use xcc_core::nat::stun;
use xcc_core::nat::turn::{
    TcpFramer, TurnClient, TurnConfig, TurnEvent, TurnInput, TurnTransport, is_data_indication,
};

/// Short retransmissions: the namespaces' links are lossless and filtering tests wait for silence.
const FAST: Retransmission = Retransmission {
    rto: Duration::from_millis(100),
    max_transmits: 3,
    last_wait_factor: 4,
};

/// Builds the topology or prints why the test is skipped.
fn topology(nat: Nat, peer: bool) -> Option<Topology> {
    topology_with(nat, peer, false)
}

/// Skips a test whose tools or privileges are missing, saying why; under CI (`CI` set, as `.ci/run`
/// is run) a skip is a failure, because CI installs everything these tests need.
fn skip(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "cannot run under CI: {why}"
    );
    eprintln!("SKIPPED: {why}");
}

/// [`topology`], with coturn as a TURN server (long-term credentials `xcc`/`secret`) when `turn`.
fn topology_with(nat: Nat, peer: bool, turn: bool) -> Option<Topology> {
    match Topology::build(nat, peer, turn) {
        Ok(t) => Some(t),
        Err(why) => {
            skip(&format!("network namespaces unavailable: {why}"));
            None
        }
    }
}

#[test]
fn discovery_learns_the_nat_public_address() {
    let Some(topo) = topology(Nat::PortRestrictedCone, false) else {
        return;
    };
    let learned = topo.inside("c", || {
        let sock = UdpSocket::bind((PRIVATE, 0)).expect("bind in client namespace");
        let start = Instant::now();
        let config = DiscoveryConfig {
            // The first server does not exist: discovery must fail over to coturn.
            servers: vec![
                "203.0.113.99:3478".parse().unwrap(),
                STUN_PRIMARY.parse().unwrap(),
            ],
            retransmission: FAST,
            retry_after_all_failed: Duration::from_millis(200),
            ..DiscoveryConfig::default()
        };
        let mut d = Discovery::new(config, start).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut buf = [0u8; 1500];
        let mut unreachable = Vec::new();
        while start.elapsed() < DEADLINE {
            d.handle_timeout(Instant::now(), &mut rng);
            while let Some((to, bytes)) = d.poll_transmit() {
                sock.send_to(bytes, to).expect("send inside namespace");
            }
            while let Some(event) = d.poll_event() {
                match event {
                    DiscoveryEvent::PublicAddressChanged { current, .. } => {
                        return Some((current, unreachable));
                    }
                    DiscoveryEvent::ServerUnreachable { server, .. } => unreachable.push(server),
                }
            }
            let until = d.poll_timeout().unwrap_or_else(Instant::now);
            if let Some((n, from)) = recv_until(&sock, &mut buf, until) {
                d.handle_response(Instant::now(), from, &buf[..n]);
            }
        }
        None
    });
    let (ip, unreachable) = learned.expect("public address learned before the deadline");
    assert_eq!(
        ip,
        NAT_PUBLIC.parse::<IpAddr>().unwrap(),
        "the NAT's address"
    );
    assert!(unreachable.contains(&"203.0.113.99:3478".parse().unwrap()));
}

/// Runs a NAT type probe from the private side against coturn.
fn probe_nat(topo: &Topology) -> xcc_core::nat::nat_type::NatReport {
    topo.inside("c", || {
        let sock = UdpSocket::bind((PRIVATE, 0)).expect("bind in client namespace");
        let start = Instant::now();
        let mut p = NatTypeProbe::new(
            NatTypeConfig {
                primary: STUN_PRIMARY.parse().unwrap(),
                secondary: None,
                local: Some(sock.local_addr().unwrap()),
                retransmission: FAST,
            },
            start,
        );
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut buf = [0u8; 1500];
        while start.elapsed() < DEADLINE {
            if let Some(report) = p.verdict() {
                return *report;
            }
            p.handle_timeout(Instant::now(), &mut rng);
            while let Some((to, bytes)) = p.poll_transmit() {
                sock.send_to(bytes, to).expect("send inside namespace");
            }
            let until = p.poll_timeout().unwrap_or_else(Instant::now);
            if let Some((n, from)) = recv_until(&sock, &mut buf, until) {
                p.handle_response(Instant::now(), from, &buf[..n], &mut rng);
            }
        }
        panic!("NAT type probe did not finish before the deadline");
    })
}

#[test]
fn masquerade_is_a_port_restricted_cone_needing_hole_punching() {
    let Some(topo) = topology(Nat::PortRestrictedCone, false) else {
        return;
    };
    let report = probe_nat(&topo);
    assert_eq!(
        report.public.map(|a| a.ip()),
        Some(NAT_PUBLIC.parse().unwrap())
    );
    assert_eq!(report.mapping, MappingBehavior::EndpointIndependent);
    assert_eq!(
        report.filtering,
        Some(FilteringBehavior::AddressAndPortDependent)
    );
    assert_eq!(report.recommendation(), Recommendation::HolePunching);
}

#[test]
fn masquerade_random_is_symmetric_needing_turn() {
    let Some(topo) = topology(Nat::Symmetric, false) else {
        return;
    };
    let report = probe_nat(&topo);
    assert_eq!(report.mapping, MappingBehavior::AddressAndPortDependent);
    assert_eq!(report.recommendation(), Recommendation::Turn);
}

/// A nominating ICE check from `peer` credentials to XCC's (USERNAME `xcc:peer`).
fn peer_check(xcc: &IceCredentials, peer: &IceCredentials, id: u8, buf: &mut [u8]) -> usize {
    let mut w = stun::Writer::new(buf, stun::BINDING_REQUEST, stun::TransactionId([id; 12]))
        .expect("buffer fits a header");
    let username = format!("{}:{}", xcc.ufrag, peer.ufrag);
    w.attribute(stun::attr::USERNAME, username.as_bytes())
        .unwrap();
    w.attribute(stun::attr::ICE_CONTROLLING, &7u64.to_be_bytes())
        .unwrap();
    w.attribute(stun::attr::USE_CANDIDATE, &[]).unwrap();
    w.integrity(xcc.pwd.as_bytes()).unwrap();
    w.fingerprint().unwrap();
    w.finish()
}

/// XCC sits behind the port-restricted NAT (masquerade keeps its media port); an ICE peer on the
/// public side checks XCC's public address. Checks that arrive before XCC sent to their source
/// are dropped by the NAT; XCC's hole-punching check reaches the peer, which answers it (proving
/// the path to XCC) and then sends its own nominating checks, which now pass: the ICE-lite
/// responder answers, the peer verifies the answer, and XCC latches to the peer.
#[test]
fn punching_opens_xcc_nat_for_the_peer_checks() {
    let Some(topo) = topology(Nat::PortRestrictedCone, true) else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let xcc_creds = IceCredentials::generate(&mut rng);
    let peer_creds = IceCredentials::generate(&mut rng);
    let xcc_port = 30_000u16;
    let peer_addr = SocketAddr::new(PEER.parse().unwrap(), 40_000);
    let stranger_addr = SocketAddr::new(PEER.parse().unwrap(), 40_001);
    let xcc_public = SocketAddr::new(NAT_PUBLIC.parse().unwrap(), xcc_port);
    let (listening_tx, listening_rx) = std::sync::mpsc::channel::<()>();
    let (unsolicited_done_tx, unsolicited_done_rx) = std::sync::mpsc::channel::<()>();

    let (xc, pc) = (xcc_creds.clone(), peer_creds.clone());
    let peer_ns = format!("/run/netns/{}", topo.ns("p"));
    let peer = std::thread::spawn(move || {
        enter(&peer_ns);
        let sock = UdpSocket::bind(peer_addr).expect("bind peer");
        let stranger = UdpSocket::bind(stranger_addr).expect("bind stranger");
        let mut req = [0u8; 256];
        let mut buf = [0u8; 1500];
        // Phase 1: while XCC listens, valid checks from a port XCC never sent to.
        listening_rx.recv().expect("XCC listens");
        for id in 0..10 {
            let len = peer_check(&xc, &pc, id, &mut req);
            stranger.send_to(&req[..len], xcc_public).expect("send");
        }
        // A checkpoint through the same path: once XCC sees nothing but we are past all sends.
        unsolicited_done_tx.send(()).expect("XCC waits");
        // Phase 2: wait for XCC's punching check on the real port, answer it, then check XCC.
        let start = Instant::now();
        let mut punched = false;
        let mut checks = 0u32;
        let mut id = 100u8;
        while start.elapsed() < DEADLINE {
            if punched {
                id = id.wrapping_add(1);
                let len = peer_check(&xc, &pc, id, &mut req);
                sock.send_to(&req[..len], xcc_public).expect("peer send");
                checks += 1;
            }
            let until = Instant::now() + Duration::from_millis(20);
            while Instant::now() < until {
                let Some((n, from)) = recv_until(&sock, &mut buf, until) else {
                    continue;
                };
                let Ok(msg) = stun::Message::parse(&buf[..n]) else {
                    continue;
                };
                if msg.msg_type() == stun::BINDING_SUCCESS
                    && from == xcc_public
                    && msg.verify_integrity(xc.pwd.as_bytes())
                    && msg.verify_fingerprint()
                {
                    return Some((checks, msg.xor_mapped_address()));
                }
                if msg.msg_type() == stun::BINDING_REQUEST
                    && msg.verify_integrity(pc.pwd.as_bytes())
                {
                    punched = true;
                    let mut out = [0u8; 128];
                    let mut w =
                        stun::Writer::new(&mut out, stun::BINDING_SUCCESS, msg.transaction_id())
                            .unwrap();
                    w.xor_mapped_address(from).unwrap();
                    w.integrity(pc.pwd.as_bytes()).unwrap();
                    w.fingerprint().unwrap();
                    let len = w.finish();
                    sock.send_to(&out[..len], from).expect("peer answer");
                }
            }
        }
        None
    });

    let (xc, pc) = (xcc_creds, peer_creds);
    let result = topo.inside("c", move || {
        let sock = UdpSocket::bind((PRIVATE, xcc_port)).expect("bind XCC media port");
        let mut ice = IceLite::new(xc.clone(), Some(&pc), CheckLimits::default());
        let mut buf = [0u8; 1500];
        let mut out = [0u8; 128];
        listening_tx.send(()).expect("peer waits");
        unsolicited_done_rx.recv().expect("peer finished phase 1");
        // Anything that got through the NAT is queued on the socket by now or arrives within a
        // round trip on a veth link; drain for a short bounded window.
        let mut heard_before_punching = 0u32;
        while recv_until(&sock, &mut buf, Instant::now() + Duration::from_millis(100)).is_some() {
            heard_before_punching += 1;
        }
        let start = Instant::now();
        let kind = ProbeKind::Ice {
            local: xc.clone(),
            remote: pc.clone(),
            tie_breaker: 5,
            priority: 1_845_501_695,
        };
        let mut puncher = Puncher::new(start, &[peer_addr], kind, PunchSchedule::default());
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut proven_by_answer = false;
        let mut nominated_from = None;
        while start.elapsed() < DEADLINE {
            if let (Some(from), true) = (nominated_from, proven_by_answer) {
                return Some((from, heard_before_punching, puncher.sent()));
            }
            puncher.handle_timeout(Instant::now(), &mut rng);
            let mut probe = [0u8; 256];
            while let Some((to, len)) = puncher.poll_transmit(&mut probe) {
                sock.send_to(&probe[..len], to).expect("punch");
            }
            let until = puncher
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_millis(50));
            let Some((n, from)) = recv_until(&sock, &mut buf, until) else {
                continue;
            };
            let bytes = &buf[..n];
            if !stun::is_stun(bytes) {
                continue;
            }
            if puncher.handle_response(from, bytes) {
                proven_by_answer = true;
                continue;
            }
            match ice.handle_request(Instant::now(), from, bytes, &mut out) {
                CheckOutcome::Success { len, nominated } => {
                    sock.send_to(&out[..len], from).expect("answer");
                    if nominated {
                        puncher.stop();
                        nominated_from = Some(from);
                    }
                }
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        None
    });
    let (latched, heard_before, probes) =
        result.expect("punching answered and a nominating check got through");
    assert_eq!(latched, peer_addr);
    assert_eq!(
        heard_before, 0,
        "the NAT filtered checks from a source XCC never sent to"
    );
    assert!(probes >= 1);
    let (checks, mapped) = peer
        .join()
        .expect("peer thread")
        .expect("peer verified XCC's answer");
    assert!(checks >= 1);
    assert_eq!(mapped, Some(peer_addr));
}

/// The client sits behind a symmetric NAT (`masquerade random`) and XCC on the public side. The
/// client learns its server-reflexive address from coturn with the discovery core on its media
/// socket and signals it; XCC punches towards it. The client's checks reach XCC from whatever
/// port the NAT picked for XCC's address; the ICE-lite responder answers that source, the client
/// verifies the answer through the NAT, and XCC latches to the authenticated source, not to the
/// signalled one.
#[test]
fn symmetric_nat_client_latches_on_authenticated_check() {
    let Some(topo) = topology(Nat::Symmetric, true) else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let xcc_creds = IceCredentials::generate(&mut rng);
    let client_creds = IceCredentials::generate(&mut rng);
    let xcc_addr = SocketAddr::new(PEER.parse().unwrap(), 30_000);
    let (signal_tx, signal_rx) = std::sync::mpsc::channel::<SocketAddr>();

    let (xc, cc) = (xcc_creds.clone(), client_creds.clone());
    let client_ns = format!("/run/netns/{}", topo.ns("c"));
    let client = std::thread::spawn(move || {
        enter(&client_ns);
        let sock = UdpSocket::bind((PRIVATE, 40_000)).expect("bind client media socket");
        // STUN from the media socket, as a softphone gathers its srflx candidate.
        let start = Instant::now();
        let config = DiscoveryConfig {
            servers: vec![STUN_PRIMARY.parse().unwrap()],
            retransmission: FAST,
            ..DiscoveryConfig::default()
        };
        let mut d = Discovery::new(config, start).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let mut buf = [0u8; 1500];
        let srflx = loop {
            assert!(start.elapsed() < DEADLINE, "client discovery timed out");
            d.handle_timeout(Instant::now(), &mut rng);
            while let Some((to, bytes)) = d.poll_transmit() {
                sock.send_to(bytes, to).expect("send inside namespace");
            }
            if let Some(xcc_core::nat::discovery::AddressSource::Stun { mapped, .. }) = d.source() {
                break mapped;
            }
            let until = d.poll_timeout().unwrap_or_else(Instant::now);
            if let Some((n, from)) = recv_until(&sock, &mut buf, until) {
                d.handle_response(Instant::now(), from, &buf[..n]);
            }
        };
        signal_tx.send(srflx).expect("XCC waits for the offer");
        // Nominating checks to XCC until an answer verifies.
        let mut req = [0u8; 256];
        let mut id = 0u8;
        while start.elapsed() < DEADLINE {
            id = id.wrapping_add(1);
            let len = peer_check(&xc, &cc, id, &mut req);
            sock.send_to(&req[..len], xcc_addr).expect("client send");
            let until = Instant::now() + Duration::from_millis(20);
            while Instant::now() < until {
                let Some((n, from)) = recv_until(&sock, &mut buf, until) else {
                    continue;
                };
                if let Ok(msg) = stun::Message::parse(&buf[..n])
                    && msg.msg_type() == stun::BINDING_SUCCESS
                    && from == xcc_addr
                    && msg.verify_integrity(xc.pwd.as_bytes())
                    && msg.verify_fingerprint()
                {
                    return Some((srflx, msg.xor_mapped_address()));
                }
            }
        }
        None
    });

    let (xc, cc) = (xcc_creds, client_creds);
    let latched = topo.inside("p", move || {
        let sock = UdpSocket::bind(xcc_addr).expect("bind XCC media port");
        let signalled = signal_rx.recv().expect("client signalled its candidate");
        let mut ice = IceLite::new(xc.clone(), Some(&cc), CheckLimits::default());
        let start = Instant::now();
        let kind = ProbeKind::Ice {
            local: xc,
            remote: cc,
            tie_breaker: 9,
            priority: 1_845_501_695,
        };
        let mut puncher = Puncher::new(start, &[signalled], kind, PunchSchedule::default());
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut buf = [0u8; 1500];
        let mut out = [0u8; 128];
        while start.elapsed() < DEADLINE {
            puncher.handle_timeout(Instant::now(), &mut rng);
            let mut probe = [0u8; 256];
            while let Some((to, len)) = puncher.poll_transmit(&mut probe) {
                sock.send_to(&probe[..len], to).expect("punch");
            }
            let until = puncher
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_millis(50));
            let Some((n, from)) = recv_until(&sock, &mut buf, until) else {
                continue;
            };
            if let CheckOutcome::Success { len, nominated } =
                ice.handle_request(Instant::now(), from, &buf[..n], &mut out)
            {
                sock.send_to(&out[..len], from).expect("answer");
                if nominated {
                    puncher.stop();
                    return Some((signalled, from));
                }
            }
        }
        None
    });
    let (signalled, latched) = latched.expect("an authenticated check arrived through the NAT");
    assert_eq!(latched.ip(), NAT_PUBLIC.parse::<IpAddr>().unwrap());
    let (_, mapped) = client
        .join()
        .expect("client thread")
        .expect("client verified XCC's answer through the symmetric NAT");
    assert_eq!(
        mapped,
        Some(latched),
        "XCC answered the source it latched to"
    );
    if latched != signalled {
        eprintln!("symmetric NAT: signalled {signalled}, latched {latched}");
    }
}

/// XCC's end of the link to the TURN server: a UDP socket, or a TCP connection and its framer.
enum Link {
    Udp(UdpSocket),
    Tcp(std::net::TcpStream, Box<TcpFramer>),
}

impl Link {
    fn open(transport: TurnTransport) -> Link {
        let server: SocketAddr = STUN_PRIMARY.parse().unwrap();
        match transport {
            TurnTransport::Udp => Link::Udp(UdpSocket::bind((PRIVATE, 30_000)).expect("bind")),
            TurnTransport::Tcp => {
                let sock = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )
                .expect("tcp socket");
                let local: SocketAddr = SocketAddr::new(PRIVATE.parse().unwrap(), 30_000);
                sock.bind(&local.into()).expect("bind");
                sock.connect_timeout(&server.into(), DEADLINE)
                    .expect("connect to coturn");
                Link::Tcp(sock.into(), Box::new(TcpFramer::new()))
            }
        }
    }

    fn send(&mut self, bytes: &[u8], to: SocketAddr) {
        match self {
            Link::Udp(sock) => {
                sock.send_to(bytes, to).expect("udp send");
            }
            Link::Tcp(stream, _) => stream.write_all(bytes).expect("tcp send"),
        }
    }

    /// The next datagram or frame, with its source, before `until`.
    fn recv(&mut self, until: Instant) -> Option<(Vec<u8>, SocketAddr)> {
        match self {
            Link::Udp(sock) => {
                let mut buf = [0u8; 1500];
                recv_until(sock, &mut buf, until).map(|(n, from)| (buf[..n].to_vec(), from))
            }
            Link::Tcp(stream, framer) => loop {
                if let Some(frame) = framer.next_frame().expect("stream in sync") {
                    return Some((frame.to_vec(), STUN_PRIMARY.parse().unwrap()));
                }
                let wait = until
                    .saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(1), Duration::from_millis(200));
                stream.set_read_timeout(Some(wait)).expect("timeout");
                match std::io::Read::read(stream, framer.space()) {
                    Ok(0) => panic!("coturn closed the TCP connection"),
                    Ok(n) => framer.filled(n),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return None;
                    }
                    Err(e) => panic!("tcp read: {e}"),
                }
            },
        }
    }
}

/// XCC behind a NAT allocates a relayed address on coturn (long-term credentials) over
/// `transport`, permits a peer, and media flows both ways through the relay: first as Send/Data
/// indications, then, once a channel is bound, as ChannelData. The peer sees XCC's media come from
/// the relayed address.
fn turn_relays_both_ways(transport: TurnTransport) {
    let Some(topo) = topology_with(Nat::PortRestrictedCone, true, true) else {
        return;
    };
    let peer_addr = SocketAddr::new(PEER.parse().unwrap(), 40_000);
    let (relayed_tx, relayed_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let peer_ns = format!("/run/netns/{}", topo.ns("p"));
    let peer = std::thread::spawn(move || {
        enter(&peer_ns);
        let sock = UdpSocket::bind(peer_addr).expect("bind peer");
        let Ok(relayed) = relayed_rx.recv() else {
            return (false, false);
        };
        let start = Instant::now();
        let mut buf = [0u8; 1500];
        let (mut via_indication, mut via_channel) = (false, false);
        while start.elapsed() < DEADLINE && !(via_indication && via_channel) {
            sock.send_to(b"media from peer", relayed)
                .expect("peer send");
            let until = Instant::now() + Duration::from_millis(20);
            while Instant::now() < until {
                if let Some((n, from)) = recv_until(&sock, &mut buf, until)
                    && from == relayed
                {
                    via_indication |= &buf[..n] == b"xcc via indication";
                    via_channel |= &buf[..n] == b"xcc via channel";
                }
            }
        }
        (via_indication, via_channel)
    });

    let result = topo.inside("c", move || {
        let mut link = Link::open(transport);
        let start = Instant::now();
        let mut turn = TurnClient::new(
            TurnConfig {
                server: STUN_PRIMARY.parse().unwrap(),
                transport,
                username: "xcc".into(),
                password: "secret".into(),
                lifetime: Duration::from_secs(600),
                retransmission: FAST,
            },
            start,
        );
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut out = [0u8; 1500];
        let mut relayed = None;
        let mut mapped = None;
        let mut channel_bound = false;
        let mut sent_indication = false;
        while start.elapsed() < DEADLINE {
            turn.handle_timeout(Instant::now(), &mut rng);
            while let Some((to, bytes)) = turn.poll_transmit() {
                let bytes = bytes.to_vec();
                link.send(&bytes, to);
            }
            while let Some(event) = turn.poll_event() {
                match event {
                    TurnEvent::Allocated {
                        relayed: r,
                        mapped: m,
                        ..
                    } => {
                        relayed = Some(r);
                        mapped = m;
                        assert!(turn.create_permission(Instant::now(), peer_addr.ip()));
                    }
                    TurnEvent::PermissionGranted { .. } => {
                        relayed_tx
                            .send(relayed.expect("allocated before permission"))
                            .expect("peer waits");
                    }
                    TurnEvent::ChannelBound { .. } => channel_bound = true,
                    TurnEvent::Failed { operation, code } => {
                        eprintln!("TURN {operation:?} failed: {code:?}");
                        return None;
                    }
                }
            }
            let until = turn
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_millis(50))
                .min(Instant::now() + Duration::from_millis(50));
            let Some((bytes, from)) = link.recv(until) else {
                continue;
            };
            let as_channel_data = (0x40..=0x4F).contains(&bytes[0]);
            let as_indication = is_data_indication(&bytes);
            let TurnInput::Data { peer, payload } =
                turn.handle_datagram(Instant::now(), from, &bytes, &mut rng)
            else {
                continue;
            };
            assert_eq!(peer, peer_addr);
            assert_eq!(payload, b"media from peer");
            if !sent_indication && as_indication {
                let len = turn
                    .wrap_send(peer, b"xcc via indication", &mut out)
                    .expect("fits");
                assert!(stun::is_stun(&out[..len]));
                link.send(&out[..len], turn.server());
                sent_indication = true;
                turn.bind_channel(Instant::now(), peer);
            } else if channel_bound && as_channel_data {
                let len = turn
                    .wrap_send(peer, b"xcc via channel", &mut out)
                    .expect("fits");
                assert!((0x40..=0x4F).contains(&out[0]), "ChannelData framing");
                link.send(&out[..len], turn.server());
                return Some((relayed, mapped));
            }
        }
        None
    });
    let (relayed, mapped) = result.expect("media arrived both ways before the deadline");
    let relayed = relayed.expect("allocated");
    assert!(["203.0.113.10", "203.0.113.11"].contains(&relayed.ip().to_string().as_str()));
    assert_eq!(mapped.map(|m| m.ip()), Some(NAT_PUBLIC.parse().unwrap()));
    let (via_indication, via_channel) = peer.join().expect("peer thread");
    assert!(via_indication, "the peer got XCC's Send indication payload");
    assert!(via_channel, "the peer got XCC's ChannelData payload");
}

#[test]
fn turn_over_udp_on_coturn_relays_both_ways() {
    turn_relays_both_ways(TurnTransport::Udp);
}

#[test]
fn turn_over_tcp_on_coturn_relays_both_ways() {
    turn_relays_both_ways(TurnTransport::Tcp);
}
