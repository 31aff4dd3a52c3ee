//! XCC as its own TURN client (`[turn]`, RFC 8656 over UDP or TCP), end to end through the real
//! xccd: a satellite whose uplink lets no inbound media through.
//!
//! ```text
//!  ns "c" (private)                 ns "n" (NAT)                      ns "p" (public)
//!  xccd + PBX 198.51.100.2  ---  198.51.100.1 | 203.0.113.1  ---  coturn 203.0.113.10:3478 (.11)
//!                                masquerade random out of n1       phone 203.0.113.20:23700
//!                                forward n1 -> n0: only established
//!                                replies from 203.0.113.10:3478
//! ```
//!
//! The NAT maps symmetrically and its forward filter drops everything from the public side except
//! coturn's replies (`netns_support::Inbound::OnlyTurnServer`), so the phone can reach xccd only
//! through the allocations xccd holds on coturn (long-term credentials `xcc`/`secret`). Each
//! call: SDES-SRTP phone, plain-RTP PBX, every packet after setup counted in order at the far end;
//! the phone must hear XCC from the relayed address. Without root, `ip netns`, nft or coturn,
//! each test skips (`common::skip`).
//!
//! The `over_tcp` tests put xccd behind an uplink that lets only TCP out
//! (`Inbound::OnlyTcpToTurnServer`: from the private side only TCP to coturn's 3478, back only
//! that connection's packets) with `[turn] transport = "tcp"` (RFC 8656 §3.1) and no `[stun]`.

mod common;
#[path = "common/netns_call.rs"]
mod netns_call;
#[path = "../xcc-core/tests/netns_support/mod.rs"]
mod netns_support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::DaemonConfig;
use common::call::SUITE;
use netns_call::{
    COUNTED, PBX_PORT, Phone, Places, WAIT, World, attribute, bind_in, exchange_counted,
    ice_host_offer, new_phone, nominate, pbx_recv, pbx_talks_first, phone_offer, sdp,
    talk_until_both_hear,
};
use netns_support::{
    Inbound, NAT_PUBLIC, Nat, PEER, PRIVATE, RELAY_PORTS, STUN_PRIMARY, Topology, recv_until,
};
use xcc_core::nat::stun;
use xcc_grpc::pb;

/// coturn's addresses: its relayed addresses are its listening ones.
const COTURN: [&str; 2] = ["203.0.113.10", "203.0.113.11"];
/// Media ports per xccd: 10 calls of 4 ports, spares included.
const POOL_LEN: u16 = 40;
/// Client legs xccd keeps allocated ahead of calls.
const SPARES: u16 = 2;
/// The length of a non-ICE hole-punching probe: a STUN Binding indication with FINGERPRINT.
const PROBE_LEN: usize = 28;

/// The satellite's uplink: what the NAT's filter lets through, and how xccd reaches coturn.
#[derive(Clone, Copy, PartialEq)]
enum Uplink {
    /// UDP out, and in only coturn's replies ([`Inbound::OnlyTurnServer`]): `[stun]`, and `[turn]`
    /// over UDP.
    Udp,
    /// Only TCP to coturn's TURN port out, and in only that connection
    /// ([`Inbound::OnlyTcpToTurnServer`]): `[turn] transport = "tcp"`, no `[stun]` (no STUN server
    /// could answer).
    OnlyTcp,
}

/// The topology for `uplink`, or `None` when the test skips.
fn topology(uplink: Uplink) -> Option<Topology> {
    let inbound = match uplink {
        Uplink::Udp => Inbound::OnlyTurnServer,
        Uplink::OnlyTcp => Inbound::OnlyTcpToTurnServer,
    };
    match Topology::build_with(Nat::Symmetric, true, true, inbound) {
        Ok(t) => Some(t),
        Err(why) => {
            common::skip(&format!("network namespaces unavailable: {why}"));
            None
        }
    }
}

/// xccd behind the NAT with the PBX, TURN on coturn under `password` (over UDP with STUN too,
/// or over TCP, as `uplink` says), the phone on the public side.
fn relayed_world(
    topo: Topology,
    name: &str,
    pool_min: u16,
    password: &str,
    uplink: Uplink,
) -> World {
    let mut cfg = DaemonConfig::new(name, pool_min, POOL_LEN);
    cfg.bind_address = PRIVATE.into();
    cfg.public_address = None;
    cfg.pbx_address = PRIVATE.into();
    let turn = format!(
        "[turn]\nserver = \"{STUN_PRIMARY}\"\nusername = \"xcc\"\npassword = \"{password}\"\n\
         lifetime_secs = 600\nspares = {SPARES}\n"
    );
    cfg.sections = match uplink {
        // STUN too, as a satellite would have it: without the relay, xccd would advertise the
        // NAT's address (203.0.113.1), which the filter makes useless.
        Uplink::Udp => format!("[stun]\nservers = [\"{STUN_PRIMARY}\"]\n\n{turn}"),
        // No STUN (the filter drops it): without the relay, xccd would advertise its own private
        // address.
        Uplink::OnlyTcp => format!("{turn}transport = \"tcp\"\n"),
    };
    World::start(
        topo,
        cfg,
        Places {
            xcc_ns: "c",
            phone_ns: "p",
            phone_ip: PEER,
            pbx_ip: PRIVATE,
        },
    )
}

/// xccd's log and the end of coturn's, for failure messages.
fn logs(w: &World) -> String {
    format!(
        "xccd log:\n{}\ncoturn log ({}, last 40 lines):\n{}",
        w.xccd.log(),
        w.topo.coturn_log_path(),
        w.topo.coturn_log_tail(40)
    )
}

/// The client leg's relayed transport addresses as the answer names them.
struct Relayed {
    /// `c=` and the `m=audio` port.
    rtp: SocketAddr,
    /// `a=rtcp:PORT IN IP4 ADDR`.
    rtcp: SocketAddr,
}

fn is_coturn_relay(addr: SocketAddr) -> bool {
    COTURN.iter().any(|ip| addr.ip().to_string() == *ip) && RELAY_PORTS.contains(&addr.port())
}

/// Reads the relayed addresses from `answer` and checks they are coturn's (not the NAT's
/// 203.0.113.1, not xccd's own 198.51.100.2), RTCP on an allocation of its own.
fn relayed_in(w: &World, answer: &str) -> Relayed {
    let rtp = common::call::media_target(answer);
    assert!(
        is_coturn_relay(rtp),
        "the phone must be told coturn's relayed address ({COTURN:?}, ports {RELAY_PORTS:?}), \
         not the NAT's ({NAT_PUBLIC}) or xccd's own ({PRIVATE}); c=/m= say {rtp}. Answer:\n\
         {answer}\n{}",
        logs(w)
    );
    let rtcp = common::call::rtcp_target(answer).unwrap_or_else(|| {
        panic!(
            "no a=rtcp: the relayed RTCP address (its own allocation, not RTP + 1) must be \
             signalled. Answer:\n{answer}\n{}",
            logs(w)
        )
    });
    assert!(
        is_coturn_relay(rtcp) && rtcp != rtp,
        "a=rtcp must be coturn's relayed address of a second allocation, got {rtcp} (RTP {rtp}). \
         Answer:\n{answer}\n{}",
        logs(w)
    );
    Relayed { rtp, rtcp }
}

/// Every media packet the phone received came from `relayed`.
fn heard_only_through(w: &World, phone: &Phone, relayed: SocketAddr) {
    let other: Vec<&SocketAddr> = phone.media_from.iter().filter(|f| **f != relayed).collect();
    assert!(
        other.is_empty(),
        "the phone heard XCC from {other:?}, not only from the relayed address {relayed}; \
         {}",
        logs(w)
    );
}

/// The phone talks to `to` (sequence numbers from `first`) until the PBX hears it; returns the
/// next sequence number.
fn phone_talks_until_the_pbx_hears(
    w: &World,
    phone: &mut Phone,
    to: SocketAddr,
    first: u16,
) -> u16 {
    let mut seq = first;
    let deadline = Instant::now() + WAIT;
    loop {
        phone.send(&w.phone, seq, to);
        seq += 1;
        if pbx_recv(&w.pbx).is_some() {
            return seq;
        }
        assert!(
            Instant::now() < deadline,
            "the phone's SRTP sent to {to} never reached the PBX; {}",
            logs(w)
        );
    }
}

/// Non-ICE phone signalling its own public address; the answer names coturn's relayed address;
/// the phone's SRTP sent there reaches the PBX as RTP, and the PBX's audio reaches the phone as
/// SRTP from the relayed address: every packet, both ways.
#[test]
fn relayed_client_leg_carries_srtp_both_ways_when_the_phone_talks_first() {
    let Some(topo) = topology(Uplink::Udp) else {
        return;
    };
    let w = relayed_world(topo, "turn-phone-first", 25400, "secret", Uplink::Udp);
    phone_talks_first_then_both_ways(&w);
}

/// The phone-first call of `w`: the answer names coturn's relayed address; the phone's SRTP sent
/// there reaches the PBX, XCC latches on the phone, then every packet is counted both ways and
/// the phone hears XCC only from the relayed address.
fn phone_talks_first_then_both_ways(w: &World) {
    let key: [u8; 30] = rand::random();
    let signalled = w.phone.local_addr().unwrap();
    let (answer, to_pbx, id) = w.call(&phone_offer(signalled, &key, &[]));
    let relayed = relayed_in(w, &answer);
    let mut phone = new_phone(&key, &answer);

    let seq = phone_talks_until_the_pbx_hears(w, &mut phone, relayed.rtp, 1);
    let leg = w.latched_client_leg(id);
    assert_eq!(
        leg.latched,
        signalled.to_string(),
        "latched on the phone as the relay names it (no NAT on the phone); {}",
        logs(w)
    );
    while pbx_recv(&w.pbx).is_some() {}
    exchange_counted(w, &mut phone, relayed.rtp, to_pbx, seq);
    heard_only_through(w, &phone, relayed.rtp);
}

/// The uplink lets only TCP to coturn's TURN port out (checked first): xccd, with `[turn]
/// transport = "tcp"`, holds each allocation on a TCP connection of its own, and the non-ICE
/// phone's call works as over UDP: the answer names coturn's relayed address, every packet is
/// counted both ways, the phone hears XCC only from the relayed address. The NAT carried xccd's
/// TCP connections to coturn and dropped nothing xccd sent (no UDP, no STUN tried).
#[test]
fn client_leg_relayed_over_tcp_carries_srtp_both_ways_through_an_uplink_that_lets_only_tcp_out() {
    let Some(topo) = topology(Uplink::OnlyTcp) else {
        return;
    };
    filter_lets_only_tcp_to_the_turn_server_out(&topo);
    let (out_before, in_before) = (
        topo.outbound_dropped().unwrap(),
        topo.inbound_dropped().unwrap(),
    );
    let w = relayed_world(
        topo,
        "turn-tcp-phone-first",
        25640,
        "secret",
        Uplink::OnlyTcp,
    );
    phone_talks_first_then_both_ways(&w);
    let connections = w.topo.turn_tcp_connections();
    let (out_after, in_after) = (
        w.topo.outbound_dropped().unwrap(),
        w.topo.inbound_dropped().unwrap(),
    );
    eprintln!(
        "TCP connections from xccd to coturn's TURN port (established): {connections}; the \
         filter dropped {} packets out, {} in, while xccd ran",
        out_after - out_before,
        in_after - in_before
    );
    assert!(
        connections >= 2,
        "the call's two allocations (RTP, RTCP) each hold a TCP connection to {STUN_PRIMARY} \
         through the NAT, found {connections}; {}",
        logs(&w)
    );
    assert_eq!(
        out_after,
        out_before,
        "xccd sent packets the uplink does not let out (only TCP to {STUN_PRIMARY} passes); {}",
        logs(&w)
    );
}

/// The phone sends nothing before it has heard from XCC: XCC's hole-punching probe (a 28-byte
/// STUN Binding indication, first byte 0) reaches it from the relayed address, then the PBX
/// talks first and all its first packets reach the phone through the relay; then the phone
/// talks and both ways are counted.
#[test]
fn relayed_client_leg_lets_the_pbx_talk_first() {
    pbx_talks_first_through_the_relay(Uplink::Udp, "turn-pbx-first", 25440);
}

/// [`relayed_client_leg_lets_the_pbx_talk_first`] with xccd's allocations over TCP, through the
/// uplink that lets only TCP out.
#[test]
fn client_leg_relayed_over_tcp_lets_the_pbx_talk_first() {
    pbx_talks_first_through_the_relay(Uplink::OnlyTcp, "turn-tcp-pbx-first", 25680);
}

/// The PBX-first call behind `uplink` (xccd named `name`, its pool from `pool_min`).
fn pbx_talks_first_through_the_relay(uplink: Uplink, name: &str, pool_min: u16) {
    let Some(topo) = topology(uplink) else {
        return;
    };
    let w = relayed_world(topo, name, pool_min, "secret", uplink);
    let key: [u8; 30] = rand::random();
    let signalled = w.phone.local_addr().unwrap();
    let (answer, to_pbx, id) = w.call(&phone_offer(signalled, &key, &[]));
    let relayed = relayed_in(&w, &answer);
    let mut phone = new_phone(&key, &answer);

    let deadline = Instant::now() + WAIT;
    while !phone.stun_seen.iter().any(|s| s.from == relayed.rtp) {
        assert_eq!(phone.recv(&w.phone), None, "no media: the PBX is silent");
        assert!(
            Instant::now() < deadline,
            "no hole-punching probe from the relayed address {} (seen: {:?}); {}",
            relayed.rtp,
            phone.stun_seen,
            logs(&w)
        );
    }
    let probes: Vec<_> = phone
        .stun_seen
        .iter()
        .filter(|s| s.from == relayed.rtp)
        .collect();
    assert!(
        probes
            .iter()
            .all(|s| s.kind == stun::BINDING_INDICATION && s.len == PROBE_LEN),
        "a non-ICE phone gets {PROBE_LEN}-byte Binding indications (first byte 0, discarded as \
         RTP version 0): {probes:?}"
    );

    pbx_talks_first(&w, &mut phone, to_pbx);
    heard_only_through(&w, &phone, relayed.rtp);
    exchange_counted(&w, &mut phone, relayed.rtp, to_pbx, COUNTED + 1);
    heard_only_through(&w, &phone, relayed.rtp);
    let leg = w.latched_client_leg(id);
    assert_eq!(leg.latched, signalled.to_string());
    assert!(leg.punch_probes_sent > 0, "{leg:?}");
}

/// `a=candidate` lines of `sdp`: (component, address, type).
fn candidates(sdp: &str) -> Vec<(u32, SocketAddr, String)> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            assert!(f.len() >= 8 && f[6] == "typ", "malformed candidate {c:?}");
            let ip: IpAddr = f[4].parse().expect("candidate address");
            let port: u16 = f[5].parse().expect("candidate port");
            (
                f[1].parse().expect("component"),
                SocketAddr::new(ip, port),
                f[7].to_owned(),
            )
        })
        .collect()
}

/// ICE phone: the answer is ICE-lite with relay candidates only (XCC's own addresses are
/// unreachable); the phone's nominating check to the relayed address gets a success response
/// from it under XCC's ice-pwd; XCC latches on the phone and media flows both ways.
#[test]
fn ice_phone_checks_through_the_relay_and_latches() {
    let Some(topo) = topology(Uplink::Udp) else {
        return;
    };
    let w = relayed_world(topo, "turn-ice", 25480, "secret", Uplink::Udp);
    let phone_at = w.phone.local_addr().unwrap();
    let key: [u8; 30] = rand::random();
    let (phone_ufrag, phone_pwd) = ("TrnI", "phonepasswordphonepassword");
    let offer = ice_host_offer(phone_at, &key, phone_ufrag, phone_pwd);
    let (answer, to_pbx, id) = w.call(&offer);
    assert!(
        answer.contains("a=ice-lite\r\n"),
        "ICE-lite answer:\n{answer}"
    );
    let relayed = relayed_in(&w, &answer);
    let offered = candidates(&answer);
    assert!(
        !offered.is_empty() && offered.iter().all(|(_, _, typ)| typ == "relay"),
        "relay candidates only (typ relay): {offered:?}\n{answer}"
    );
    assert!(
        offered.contains(&(1, relayed.rtp, "relay".into())),
        "component 1 is the relayed RTP address {}: {offered:?}",
        relayed.rtp
    );
    if let Some((_, rtcp, _)) = offered.iter().find(|(c, _, _)| *c == 2) {
        assert_eq!(*rtcp, relayed.rtcp, "component 2 is a=rtcp's address");
    }
    let (xcc_ufrag, xcc_pwd) = (
        attribute(&answer, "ice-ufrag"),
        attribute(&answer, "ice-pwd"),
    );
    let mut phone = new_phone(&key, &answer);

    let seen = nominate(&w, &mut phone, relayed.rtp, xcc_ufrag, phone_ufrag, xcc_pwd);
    assert_eq!(
        seen, phone_at,
        "XCC sees the phone at its own address (the relay's peer address)"
    );
    let leg = w.latched_client_leg(id);
    assert_eq!(leg.latched, phone_at.to_string(), "latched on the check");

    exchange_counted(&w, &mut phone, relayed.rtp, to_pbx, 1);
    heard_only_through(&w, &phone, relayed.rtp);
}

/// The NAT's filter, checked before xccd runs: a socket behind the NAT that sent to the phone
/// does not hear the phone's reply (dropped and counted), while coturn's answer to a Binding
/// request gets in.
fn filter_lets_only_the_turn_server_in(topo: &Topology) {
    let inside = bind_in(topo, "c", PRIVATE, 23650);
    let outside = bind_in(topo, "p", PEER, 23702);
    let mut buf = [0u8; 1500];
    inside
        .send_to(b"out", outside.local_addr().unwrap())
        .unwrap();
    let (_, mapped) = recv_until(&outside, &mut buf, Instant::now() + WAIT)
        .expect("outbound from behind the NAT passes");
    assert_eq!(mapped.ip().to_string(), NAT_PUBLIC, "masqueraded");
    let dropped = topo.inbound_dropped().unwrap();
    outside.send_to(b"reply", mapped).unwrap();
    let deadline = Instant::now() + WAIT;
    while topo.inbound_dropped().unwrap() == dropped {
        assert!(
            Instant::now() < deadline,
            "the filter did not count the phone's reply"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    inside.set_nonblocking(true).unwrap();
    assert!(
        inside.recv_from(&mut buf).is_err(),
        "a reply from the phone got through the filter"
    );
    inside.set_nonblocking(false).unwrap();

    let server: SocketAddr = STUN_PRIMARY.parse().unwrap();
    let dropped = topo.inbound_dropped().unwrap();
    let deadline = Instant::now() + WAIT;
    let public = loop {
        let id = stun::TransactionId(rand::random());
        let mut req = [0u8; 20];
        let len = stun::Writer::new(&mut req, stun::BINDING_REQUEST, id)
            .expect("20-byte buffer fits a header")
            .finish();
        inside.send_to(&req[..len], server).unwrap();
        if let Some((n, from)) = recv_until(&inside, &mut buf, Instant::now() + WAIT / 20)
            && from == server
            && let Ok(m) = stun::Message::parse(&buf[..n])
            && m.transaction_id() == id
        {
            break m.xor_mapped_address().expect("XOR-MAPPED-ADDRESS");
        }
        assert!(Instant::now() < deadline, "coturn's answer was filtered");
    };
    assert_eq!(public.ip().to_string(), NAT_PUBLIC);
    assert_eq!(topo.inbound_dropped().unwrap(), dropped, "nothing dropped");
}

/// A STUN Binding request with transaction id `id`.
fn binding_request(id: stun::TransactionId) -> Vec<u8> {
    let mut req = [0u8; 20];
    let len = stun::Writer::new(&mut req, stun::BINDING_REQUEST, id)
        .expect("20-byte buffer fits a header")
        .finish();
    req[..len].to_vec()
}

/// Waits (bounded) until `counter` moves past `before`.
fn counted(what: &str, before: u64, counter: impl Fn() -> u64) {
    let deadline = Instant::now() + WAIT;
    while counter() == before {
        assert!(Instant::now() < deadline, "the filter did not count {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`Inbound::OnlyTcpToTurnServer`]'s filter, checked before xccd runs, from behind the NAT: a
/// Binding request over UDP to coturn's TURN port gets no answer (dropped and counted), a TCP
/// connection to coturn's other port (3479) is not made (its SYN dropped and counted), and over
/// TCP to the TURN port coturn answers with the NAT's address.
fn filter_lets_only_tcp_to_the_turn_server_out(topo: &Topology) {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let server: SocketAddr = STUN_PRIMARY.parse().unwrap();
    let inside = bind_in(topo, "c", PRIVATE, 23651);
    let dropped = topo.outbound_dropped().unwrap();
    let id = stun::TransactionId(rand::random());
    inside.send_to(&binding_request(id), server).unwrap();
    counted("UDP to coturn", dropped, || {
        topo.outbound_dropped().unwrap()
    });
    let mut buf = [0u8; 1500];
    assert_eq!(
        recv_until(
            &inside,
            &mut buf,
            Instant::now() + Duration::from_millis(300)
        ),
        None,
        "coturn answered a Binding request over UDP through the filter"
    );

    let other = SocketAddr::new(server.ip(), 3479);
    let dropped = topo.outbound_dropped().unwrap();
    let refused = topo.inside("c", move || {
        TcpStream::connect_timeout(&other, Duration::from_millis(500))
    });
    assert!(refused.is_err(), "a TCP connection to {other} was made");
    counted("a SYN to another port", dropped, || {
        topo.outbound_dropped().unwrap()
    });

    let dropped = (
        topo.outbound_dropped().unwrap(),
        topo.inbound_dropped().unwrap(),
    );
    let public = topo.inside("c", move || {
        let mut tcp = TcpStream::connect_timeout(&server, WAIT).expect("TCP to the TURN port");
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let id = stun::TransactionId(rand::random());
        tcp.write_all(&binding_request(id)).unwrap();
        let mut msg = vec![0u8; 20];
        tcp.read_exact(&mut msg).expect("coturn's answer over TCP");
        let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
        msg.resize(20 + len, 0);
        tcp.read_exact(&mut msg[20..])
            .expect("the answer's attributes");
        let m = stun::Message::parse(&msg).expect("a STUN answer");
        assert_eq!(m.transaction_id(), id);
        m.xor_mapped_address().expect("XOR-MAPPED-ADDRESS")
    });
    assert_eq!(public.ip().to_string(), NAT_PUBLIC, "masqueraded");
    assert_eq!(
        (
            topo.outbound_dropped().unwrap(),
            topo.inbound_dropped().unwrap()
        ),
        dropped,
        "nothing of the TCP exchange with the TURN port dropped"
    );
}

/// A control for the topology: the phone's SRTP sent straight to the NAT's public address on
/// xccd's bound client port never reaches xccd (its client-leg counters do not move, the PBX
/// hears nothing of it), while the same phone's SRTP to the relayed address does.
#[test]
fn direct_packets_to_xcc_are_blocked_so_only_the_relay_works() {
    let Some(topo) = topology(Uplink::Udp) else {
        return;
    };
    filter_lets_only_the_turn_server_in(&topo);
    let w = relayed_world(topo, "turn-direct", 25520, "secret", Uplink::Udp);
    let key: [u8; 30] = rand::random();
    let signalled = w.phone.local_addr().unwrap();
    let (answer, _, id) = w.call(&phone_offer(signalled, &key, &[]));
    let relayed = relayed_in(&w, &answer);
    let mut phone = new_phone(&key, &answer);

    let before = w.client_leg(id);
    let bound = SocketAddr::new(NAT_PUBLIC.parse().unwrap(), before.rtp_port as u16);
    const DIRECT: u16 = 10;
    for seq in 1..=DIRECT {
        phone.send(&w.phone, seq, bound);
    }
    // Through the relay, after the direct packets: both arrive on xccd's client RTP socket, so
    // by the time the PBX hears the relayed ones, any direct one would have been handled.
    phone_talks_until_the_pbx_hears(&w, &mut phone, relayed.rtp, DIRECT + 1);
    let mut heard = Vec::new();
    while let Some(seq) = pbx_recv(&w.pbx) {
        heard.push(seq);
    }
    assert!(
        heard.iter().all(|seq| *seq > DIRECT),
        "a packet sent straight to {bound} reached the PBX: {heard:?}"
    );
    let leg = w.latched_client_leg(id);
    let (b, a) = (
        before.counters.unwrap_or_default(),
        leg.counters.unwrap_or_default(),
    );
    assert_eq!(
        (a.drop_stray, a.drop_stranger, a.drop_auth_failure),
        (b.drop_stray, b.drop_stranger, b.drop_auth_failure),
        "xccd saw packets sent straight to {bound}: {leg:?}"
    );
    assert_eq!(
        leg.latched,
        signalled.to_string(),
        "latched through the relay"
    );
}

/// xccd's credentials are wrong, so coturn refuses every allocation: CreateSession fails with
/// UNAVAILABLE every time, more times than the pool has calls, and no port is left held for
/// a refused session.
#[test]
fn no_ready_allocation_refuses_the_session_as_unavailable() {
    let Some(topo) = topology(Uplink::Udp) else {
        return;
    };
    let w = relayed_world(topo, "turn-refused", 25560, "not-the-secret", Uplink::Udp);
    let key: [u8; 30] = rand::random();
    let offer = phone_offer(w.phone.local_addr().unwrap(), &key, &[]);
    // More attempts than the pool has calls: one leaked call's ports each would exhaust it.
    let attempts = POOL_LEN / 4 + 2;
    for attempt in 1..=attempts {
        match w.try_create(&offer) {
            Err(e) if e.code() == tonic::Code::Unavailable => {
                if attempt == 1 {
                    eprintln!("refused: {}", e.message());
                }
            }
            Err(e) => panic!(
                "attempt {attempt}: expected UNAVAILABLE (no TURN allocation: coturn refuses \
                 xccd's credentials), got {:?}: {}; {}",
                e.code(),
                e.message(),
                logs(&w)
            ),
            Ok(s) => panic!(
                "attempt {attempt}: a session without a relay: {s:?}; {}",
                logs(&w)
            ),
        }
    }
    let listed = w.list_calls();
    assert!(listed.calls.is_empty(), "no call: {listed:?}");
    let status = w.status();
    assert!(
        status.ports_used <= u64::from(SPARES) * 4,
        "at most the spares' ports are held ({SPARES} x 4), not the refused sessions': \
         {status:?}"
    );
}

/// Waits (bounded) until the call store holds call `id` with the client leg's relayed addresses
/// and the phone's latch: what a restart resumes from.
fn wait_stored(w: &World, id: u64, relayed: &Relayed, phone_at: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stored = w.xccd.stored_call(id);
        if let Some(v) = &stored
            && v["relay"]["rtp"] == relayed.rtp.to_string()
            && v["relay"]["rtcp"] == relayed.rtcp.to_string()
            && v["legs"][0]["latched_rtp"] == phone_at.to_string()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "call {id} not stored with relay {} / {} and latch {phone_at}: {stored:?}",
            relayed.rtp,
            relayed.rtcp
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The NAT's public ports for xccd's client RTP and RTCP sockets towards coturn.
fn nat_mappings(w: &World, rtp_port: u16) -> [Option<u16>; 2] {
    [rtp_port, rtp_port + 1].map(|p| w.topo.nat_mapping(p))
}

/// A relayed call survives `kill -9`: xccd restarts with the same config and state directory,
/// rebinds the client leg's ports (the NAT keeps their mappings, so coturn sees the same
/// 5-tuples), and takes its allocations over (Refresh, permission, channel). The phone, told
/// nothing new, keeps sending to the relayed address it was given: once both sides have heard
/// each other again, every packet is counted both ways, and the phone hears XCC only from that
/// address. The call keeps its id, and a re-offer from the PBX still names the relayed addresses.
#[test]
fn relayed_call_survives_kill_9_and_media_resumes_through_the_same_relay() {
    let Some(topo) = topology(Uplink::Udp) else {
        return;
    };
    let mut w = relayed_world(topo, "turn-restart", 25600, "secret", Uplink::Udp);
    let key: [u8; 30] = rand::random();
    let signalled = w.phone.local_addr().unwrap();
    let (answer, to_pbx, id) = w.call(&phone_offer(signalled, &key, &[]));
    let relayed = relayed_in(&w, &answer);
    let mut phone = new_phone(&key, &answer);
    let seq = phone_talks_until_the_pbx_hears(&w, &mut phone, relayed.rtp, 1);
    let leg = w.latched_client_leg(id);
    while pbx_recv(&w.pbx).is_some() {}
    exchange_counted(&w, &mut phone, relayed.rtp, to_pbx, seq);
    let seq = seq + COUNTED;
    wait_stored(&w, id, &relayed, signalled);
    let client_port = leg.rtp_port as u16;
    let mapped_before = nat_mappings(&w, client_port);

    let ready = w.kill9_and_restart();
    let mapped_after = nat_mappings(&w, client_port);
    eprintln!(
        "NAT mappings of xccd's client ports {client_port}/{} towards coturn: before the crash \
         {mapped_before:?}, after the restart {mapped_after:?}",
        client_port + 1
    );
    let seq = talk_until_both_hear(&w, &mut phone, relayed.rtp, to_pbx, seq);
    eprintln!("media both ways again {:?} after READY", ready.elapsed());
    assert_eq!(
        mapped_after, mapped_before,
        "the NAT kept the client sockets' mappings (same 5-tuples at coturn)"
    );
    exchange_counted(&w, &mut phone, relayed.rtp, to_pbx, seq);
    let seq = seq + COUNTED;
    heard_only_through(&w, &phone, relayed.rtp);
    let log = w.xccd.log();
    assert!(
        log.contains("stored call resumed")
            && !log.contains("TURN request for the client leg failed"),
        "the call resumed and its allocations were taken over without a failed request; {}",
        logs(&w)
    );

    // The dead process's spares still hold allocations on their 5-tuples at coturn: the new
    // spares on those ports release them (437, then a Refresh with lifetime 0) instead of failing.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let status = w.status();
        if status.turn_ready == Some(u64::from(SPARES)) || Instant::now() >= deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (status.turn_ready, status.turn_failed_total),
        (Some(u64::from(SPARES)), Some(0)),
        "every spare allocated after the restart, none failed: {status:?}; {}",
        logs(&w)
    );

    let listed = w.list_calls();
    let ids: Vec<u64> = listed.calls.iter().map(|c| c.call_id).collect();
    assert_eq!(ids, vec![id], "the call is listed with its id: {listed:?}");
    let leg = w.client_leg(id);
    assert_eq!(leg.latched, signalled.to_string(), "{leg:?}");

    // The PBX re-offers: the offer to the phone names the same relayed addresses, and media
    // flows under the keys it carries once the phone answers.
    let pbx_ip = w.pbx.local_addr().unwrap().ip();
    let offer =
        w.rt.block_on(w.sessions().update_session(pb::UpdateSessionRequest {
            session_id: id,
            offer_from: pb::Side::Pbx as i32,
            sdp: sdp(pbx_ip, PBX_PORT, "RTP/AVP", &[]),
        }))
        .unwrap_or_else(|e| panic!("re-offer: {e}; {}", logs(&w)))
        .into_inner();
    assert_eq!(offer.sdp_for, pb::Side::Client as i32);
    let reoffered = relayed_in(&w, &offer.sdp);
    assert_eq!(
        (reoffered.rtp, reoffered.rtcp),
        (relayed.rtp, relayed.rtcp),
        "the re-offer names the relayed addresses the phone was given:\n{}",
        offer.sdp
    );
    // The phone answers with its key under the tag XCC offered the suite with.
    let tag = offer
        .sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .find(|l| l.contains(SUITE))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no a=crypto with {SUITE} offered:\n{}", offer.sdp));
    let phone_answer =
        phone_offer(signalled, &key, &[]).replace("a=crypto:1 ", &format!("a=crypto:{tag} "));
    w.rt.block_on(w.sessions().answer_session(pb::AnswerSessionRequest {
        session_id: id,
        sdp: phone_answer,
    }))
    .unwrap_or_else(|e| panic!("the phone's answer: {e}; {}", logs(&w)));
    let mut phone = Phone {
        media_from: phone.media_from,
        ..new_phone(&key, &offer.sdp)
    };
    let seq = talk_until_both_hear(&w, &mut phone, relayed.rtp, to_pbx, seq);
    exchange_counted(&w, &mut phone, relayed.rtp, to_pbx, seq);
    heard_only_through(&w, &phone, relayed.rtp);
}
