//! Calls through the real xccd across real NATs: network namespaces built by the shared topology
//! of the NAT core tests (`xcc-core/tests/netns_support`), an nftables masquerade (port-restricted
//! cone) or `masquerade random` (symmetric), coturn on the public side, xccd itself inside a
//! namespace (`ip netns exec`), an SDES-SRTP phone and a plain-RTP PBX as UDP sockets created
//! inside the namespaces. The test thread enters xccd's namespace to speak gRPC to its control
//! port on that namespace's loopback; nothing is sent from the root namespace.
//!
//! Each call: SRTP both ways, every packet after setup counted at the far end (none lost).
//! Without root, `ip netns`, nft or coturn, each test skips (`common::skip`).

mod common;
#[path = "common/netns_call.rs"]
mod netns_call;
#[path = "../xcc-core/tests/netns_support/mod.rs"]
mod netns_support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::DaemonConfig;
use common::call::media_target;
use netns_call::{
    COUNTED, Places, TurnPhone, WAIT, World, attribute, exchange_counted, ice_host_offer,
    new_phone, nominate, pbx_recv, pbx_talks_first, phone_offer,
};
use netns_support::{Nat, PEER, PRIVATE, PUBLIC_HOST, STUN_PRIMARY, Topology};
use xcc_core::nat::stun;
use xcc_grpc::pb;

/// The NAT's public address (masquerade source).
const NAT_PUBLIC: &str = netns_support::NAT_PUBLIC;
/// A public-side address nobody holds: STUN requests to it vanish (no ARP answer, no ICMP).
const SILENT_STUN: &str = "203.0.113.40:3478";

/// Where xccd runs.
#[derive(Clone, Copy, PartialEq)]
enum XccSide {
    /// On the public side at [`PUBLIC_HOST`] (static `public_address`), the PBX at [`PEER`]; the
    /// phone behind the NAT.
    Public,
    /// Behind the NAT with the PBX (a satellite behind its uplink's NAT), public address learned
    /// from coturn (`[stun] servers`); the phone on the public side at [`PEER`].
    BehindNat,
}

/// The namespaces, coturn (`turn`: with long-term credentials) and xccd on `side` of `nat`,
/// pool from `pool_min`; `None` when the test skips.
fn world(name: &str, nat: Nat, side: XccSide, turn: bool, pool_min: u16) -> Option<World> {
    world_with(name, nat, side, turn, pool_min, true)
}

/// [`world`]; `silent_first` puts a silent STUN server before coturn (xccd behind the NAT only).
fn world_with(
    name: &str,
    nat: Nat,
    side: XccSide,
    turn: bool,
    pool_min: u16,
    silent_first: bool,
) -> Option<World> {
    let topo = match Topology::build(nat, true, turn) {
        Ok(t) => t,
        Err(why) => {
            common::skip(&format!("network namespaces unavailable: {why}"));
            return None;
        }
    };
    let mut cfg = DaemonConfig::new(name, pool_min, 20);
    let places = match side {
        XccSide::Public => {
            cfg.bind_address = PUBLIC_HOST.into();
            cfg.public_address = Some(PUBLIC_HOST.into());
            cfg.pbx_address = PUBLIC_HOST.into();
            Places {
                xcc_ns: "p",
                phone_ns: "c",
                phone_ip: PRIVATE,
                pbx_ip: PEER,
            }
        }
        XccSide::BehindNat => {
            cfg.bind_address = PRIVATE.into();
            cfg.public_address = None;
            cfg.pbx_address = PRIVATE.into();
            // A silent server first: xccd fails over to coturn after its retransmissions
            // (5.5 s), long enough for the test to watch the change happen.
            let silent = if silent_first {
                format!("\"{SILENT_STUN}\", ")
            } else {
                String::new()
            };
            cfg.sections = format!("[stun]\nservers = [{silent}\"{STUN_PRIMARY}\"]\n");
            Places {
                xcc_ns: "c",
                phone_ns: "p",
                phone_ip: PEER,
                pbx_ip: PRIVATE,
            }
        }
    };
    Some(World::start(topo, cfg, places))
}

/// Phone behind a port-restricted cone NAT, no ICE, signalling its private address (what a phone
/// without STUN does): XCC latches on its first authenticated SRTP packet, from the NAT's public
/// address, and sends the PBX's audio back there.
#[test]
fn cone_nat_phone_talks_first_and_xcc_latches_on_its_srtp_context() {
    let Some(w) = world(
        "nat-cone-first",
        Nat::PortRestrictedCone,
        XccSide::Public,
        false,
        23800,
    ) else {
        return;
    };
    let key: [u8; 30] = rand::random();
    let signalled = w.phone.local_addr().unwrap();
    let (answer, to_pbx, id) = w.call(&phone_offer(signalled, &key, &[]));
    let to_xcc = media_target(&answer);
    assert_eq!(
        to_xcc.ip().to_string(),
        PUBLIC_HOST,
        "static public address"
    );
    let mut phone = new_phone(&key, &answer);

    // Setup: the phone talks until the PBX hears it.
    let mut seq = 1;
    let deadline = Instant::now() + WAIT;
    loop {
        phone.send(&w.phone, seq, to_xcc);
        seq += 1;
        if pbx_recv(&w.pbx).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the phone never reached the PBX");
    }
    let leg = w.latched_client_leg(id);
    assert_eq!(leg.signalled, signalled.to_string());
    let latched: SocketAddr = leg.latched.parse().expect("latched");
    assert_eq!(
        latched.ip().to_string(),
        NAT_PUBLIC,
        "latched on the NAT's mapping"
    );
    while pbx_recv(&w.pbx).is_some() {}
    exchange_counted(&w, &mut phone, to_xcc, to_pbx, seq);
}

/// xccd behind a port-restricted cone NAT (a satellite behind its uplink): it learns its public
/// address from coturn and advertises it; the phone (public, no ICE) talks first while the PBX
/// is silent. The NAT drops whatever comes from an address XCC has not sent to, so only XCC's
/// hole punching (STUN Binding indications to the signalled address, from the leg's port) lets
/// the phone's audio in: the phone sees a probe from XCC's public port before it sends anything.
#[test]
fn xcc_behind_cone_nat_punches_so_the_phone_can_talk_first() {
    let Some(w) = world(
        "nat-xcc-behind",
        Nat::PortRestrictedCone,
        XccSide::BehindNat,
        false,
        23820,
    ) else {
        return;
    };
    // Discovery through the NAT, after failing over from the silent server: an event says the
    // advertised address changed from the fallback (the bind address) to the NAT's public one,
    // and the status says where it comes from.
    let mut calls = pb::calls_client::CallsClient::new(w.channel.clone());
    let mut events =
        w.rt.block_on(calls.watch_events(pb::WatchEventsRequest {}))
            .unwrap()
            .into_inner();
    let before = w.status();
    let changed = w.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let event = events.message().await.unwrap().expect("event stream open");
                if let Some(pb::event::Kind::PublicAddressChanged(c)) = event.kind {
                    return c;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no PublicAddressChanged; status before: {before:?}"))
    });
    if before.public_address_source == pb::PublicAddressSource::Fallback as i32 {
        assert_eq!(
            before.public_address, PRIVATE,
            "the fallback is the bind address"
        );
        assert_eq!(before.stun_state, pb::StunState::Discovering as i32);
    }
    assert_eq!(changed.previous, PRIVATE);
    assert_eq!(changed.current, NAT_PUBLIC);
    assert_eq!(changed.source, pb::PublicAddressSource::Stun as i32);
    assert_eq!(changed.stun_server, STUN_PRIMARY);
    let status = w.status();
    assert_eq!(status.public_address, NAT_PUBLIC);
    assert_eq!(
        status.public_address_source,
        pb::PublicAddressSource::Stun as i32
    );
    assert_eq!(status.stun_state, pb::StunState::Ok as i32);
    assert_eq!(status.stun_server, STUN_PRIMARY);

    let key: [u8; 30] = rand::random();
    let signalled = w.phone.local_addr().unwrap();
    let (answer, to_pbx, id) = w.call(&phone_offer(signalled, &key, &[]));
    let to_xcc = media_target(&answer);
    assert_eq!(
        to_xcc.ip().to_string(),
        NAT_PUBLIC,
        "the learned address is advertised"
    );
    let mut phone = new_phone(&key, &answer);

    // XCC sends first: a probe from its public media port reaches the phone.
    let deadline = Instant::now() + WAIT;
    while !phone.stun_seen.iter().any(|seen| seen.from == to_xcc) {
        assert_eq!(phone.recv(&w.phone), None, "no media: the PBX is silent");
        assert!(
            Instant::now() < deadline,
            "no hole-punching probe from {to_xcc}"
        );
    }
    assert!(
        phone
            .stun_seen
            .iter()
            .all(|seen| seen.kind == stun::BINDING_INDICATION),
        "a non-ICE phone gets Binding indications: {:?}",
        phone.stun_seen
    );

    // Now the phone talks first, the PBX still silent: its audio gets through.
    let mut seq = 1;
    let deadline = Instant::now() + WAIT;
    loop {
        phone.send(&w.phone, seq, to_xcc);
        seq += 1;
        if pbx_recv(&w.pbx).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the phone never reached the PBX");
    }
    let leg = w.latched_client_leg(id);
    assert!(leg.punch_probes_sent > 0, "{leg:?}");
    // The same on the metrics endpoint (the worker totals are published every tick).
    let deadline = Instant::now() + WAIT;
    let metrics = loop {
        let m = w.scrape();
        if !m.contains("xcc_hole_punch_probes_total 0\n") {
            break m;
        }
        assert!(Instant::now() < deadline, "no probes in the metrics:\n{m}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for line in [
        "xcc_public_address_info{address=\"203.0.113.1\",source=\"stun\"} 1\n",
        "xcc_stun_state{state=\"ok\"} 1\n",
        "xcc_stun_state{state=\"discovering\"} 0\n",
        "xcc_stun_last_success_timestamp_seconds ",
        "xcc_hole_punch_answers_total 0\n",
    ] {
        assert!(metrics.contains(line), "{line:?} in:\n{metrics}");
    }
    eprintln!(
        "punching: {} probes sent before the phone's audio latched the leg",
        leg.punch_probes_sent
    );
    assert_eq!(leg.latched, signalled.to_string(), "no NAT on the phone");
    while pbx_recv(&w.pbx).is_some() {}
    exchange_counted(&w, &mut phone, to_xcc, to_pbx, seq);
}

/// The phone's server-reflexive address, asked from its media socket.
fn srflx(sock: &UdpSocket, server: SocketAddr) -> SocketAddr {
    let mut req = [0u8; 20];
    let id = stun::TransactionId(rand::random());
    let len = stun::Writer::new(&mut req, stun::BINDING_REQUEST, id)
        .unwrap()
        .finish();
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + WAIT;
    loop {
        sock.send_to(&req[..len], server).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf)
            && from == server
            && let Ok(m) = stun::Message::parse(&buf[..n])
            && m.transaction_id() == id
        {
            return m.xor_mapped_address().expect("XOR-MAPPED-ADDRESS");
        }
        assert!(Instant::now() < deadline, "coturn never answered");
    }
}

/// Phone behind a symmetric NAT (`masquerade random`): the srflx it learned from coturn is not
/// the mapping the NAT picks towards XCC. It signals ICE (host + srflx) and nominates; XCC latches
/// to the authenticated check's source. Then the PBX talks first: its very first packets reach
/// the phone, which has not sent any media yet.
#[test]
fn symmetric_nat_ice_phone_latches_after_authenticated_check_and_hears_the_pbx_first() {
    let Some(w) = world(
        "nat-symmetric",
        Nat::Symmetric,
        XccSide::Public,
        false,
        23840,
    ) else {
        return;
    };
    let server: SocketAddr = STUN_PRIMARY.parse().unwrap();
    let reflexive = srflx(&w.phone, server);
    assert_eq!(reflexive.ip().to_string(), NAT_PUBLIC);
    let host = w.phone.local_addr().unwrap();
    let key: [u8; 30] = rand::random();
    let (phone_ufrag, phone_pwd) = ("NatP", "phonepasswordphonepassword");
    let offer = phone_offer(
        reflexive,
        &key,
        &[
            format!("a=ice-ufrag:{phone_ufrag}"),
            format!("a=ice-pwd:{phone_pwd}"),
            format!(
                "a=candidate:1 1 UDP 2130706431 {} {} typ host",
                host.ip(),
                host.port()
            ),
            format!(
                "a=candidate:2 1 UDP 1694498815 {} {} typ srflx raddr {} rport {}",
                reflexive.ip(),
                reflexive.port(),
                host.ip(),
                host.port()
            ),
        ],
    );
    let (answer, to_pbx, id) = w.call(&offer);
    assert!(answer.contains("a=ice-lite\r\n"), "{answer}");
    let to_xcc = media_target(&answer);
    let (xcc_ufrag, xcc_pwd) = (
        attribute(&answer, "ice-ufrag"),
        attribute(&answer, "ice-pwd"),
    );
    let mut phone = new_phone(&key, &answer);

    let seen = nominate(&w, &mut phone, to_xcc, xcc_ufrag, phone_ufrag, xcc_pwd);
    assert_eq!(seen.ip().to_string(), NAT_PUBLIC);
    let leg = w.latched_client_leg(id);
    assert_eq!(
        leg.latched,
        seen.to_string(),
        "latched on the checked mapping"
    );

    pbx_talks_first(&w, &mut phone, to_pbx);
    exchange_counted(&w, &mut phone, to_xcc, to_pbx, COUNTED + 1);
}

/// Phone behind a symmetric NAT that relays through coturn: its only candidate is its TURN
/// relayed address (permission for XCC's address). Its checks reach XCC from the relay; XCC
/// latches on the authenticated nominating check to the relayed address, the PBX talks first
/// and SRTP flows both ways through the relay (Send/Data indications).
#[test]
fn turn_relayed_phone_latches_on_the_relay_and_srtp_flows_through_it() {
    let Some(w) = world("nat-turn", Nat::Symmetric, XccSide::Public, true, 23860) else {
        return;
    };
    let mut turn = TurnPhone::new(STUN_PRIMARY.parse().unwrap());
    turn.allocate_for(&w.phone, PUBLIC_HOST.parse().unwrap());
    let relayed = turn.relayed.expect("allocated");
    let mapped = turn.mapped.expect("XOR-MAPPED-ADDRESS in the allocation");
    assert_eq!(mapped.ip().to_string(), NAT_PUBLIC);
    let key: [u8; 30] = rand::random();
    let (phone_ufrag, phone_pwd) = ("TrnP", "phonepasswordphonepassword");
    let offer = phone_offer(
        relayed,
        &key,
        &[
            format!("a=ice-ufrag:{phone_ufrag}"),
            format!("a=ice-pwd:{phone_pwd}"),
            format!(
                "a=candidate:1 1 UDP 16777215 {} {} typ relay raddr {} rport {}",
                relayed.ip(),
                relayed.port(),
                mapped.ip(),
                mapped.port()
            ),
        ],
    );
    let (answer, to_pbx, id) = w.call(&offer);
    let to_xcc = media_target(&answer);
    let (xcc_ufrag, xcc_pwd) = (
        attribute(&answer, "ice-ufrag"),
        attribute(&answer, "ice-pwd"),
    );
    let mut phone = new_phone(&key, &answer);
    phone.turn = Some(turn);

    let seen = nominate(&w, &mut phone, to_xcc, xcc_ufrag, phone_ufrag, xcc_pwd);
    assert_eq!(seen, relayed, "XCC sees the phone at its relayed address");
    let leg = w.latched_client_leg(id);
    assert_eq!(leg.latched, relayed.to_string(), "latched on the relay");

    pbx_talks_first(&w, &mut phone, to_pbx);
    exchange_counted(&w, &mut phone, to_xcc, to_pbx, COUNTED + 1);
}

/// The phone's answer to XCC's hole-punching check: success, its source as XOR-MAPPED-ADDRESS,
/// MESSAGE-INTEGRITY under the phone's pwd (the check's USERNAME is `phone:xcc`).
fn answer_check(req: &stun::Message<'_>, from: SocketAddr, phone_pwd: &str) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let mut w = stun::Writer::new(&mut buf, stun::BINDING_SUCCESS, req.transaction_id())
        .expect("buffer fits a header");
    w.xor_mapped_address(from).unwrap();
    w.integrity(phone_pwd.as_bytes()).unwrap();
    w.fingerprint().unwrap();
    let len = w.finish();
    buf[..len].to_vec()
}

/// xccd behind a port-restricted cone NAT, an ICE phone on the public side that sends nothing
/// before it hears from XCC: XCC's hole-punching check (ICE-CONTROLLED, USERNAME `phone:xcc`,
/// under the phone's pwd) crosses its own NAT and reaches the phone, whose authenticated answer
/// comes back through the mapping the check opened and latches the leg. Then the PBX talks first
/// and its first packets all reach the phone, which has sent no check and no media.
#[test]
fn xcc_behind_cone_nat_latches_on_the_ice_phones_answer_to_its_check_and_the_pbx_talks_first() {
    let Some(w) = world_with(
        "nat-xcc-ice",
        Nat::PortRestrictedCone,
        XccSide::BehindNat,
        false,
        23880,
        false,
    ) else {
        return;
    };
    let deadline = Instant::now() + WAIT;
    while w.status().public_address_source != pb::PublicAddressSource::Stun as i32 {
        assert!(Instant::now() < deadline, "no STUN success");
        std::thread::sleep(Duration::from_millis(50));
    }
    let phone_at = w.phone.local_addr().unwrap();
    let key: [u8; 30] = rand::random();
    let (phone_ufrag, phone_pwd) = ("IceP", "phonepasswordphonepassword");
    let offer = ice_host_offer(phone_at, &key, phone_ufrag, phone_pwd);
    let (answer, to_pbx, id) = w.call(&offer);
    let to_xcc = media_target(&answer);
    assert_eq!(to_xcc.ip().to_string(), NAT_PUBLIC);
    let xcc_ufrag = attribute(&answer, "ice-ufrag");
    let mut phone = new_phone(&key, &answer);

    // The phone only answers XCC's checks.
    let mut buf = [0u8; 1500];
    let mut answered = 0;
    let deadline = Instant::now() + WAIT;
    while answered == 0 {
        assert!(
            Instant::now() < deadline,
            "no check from XCC reached the phone"
        );
        let Ok((n, from)) = w.phone.recv_from(&mut buf) else {
            continue;
        };
        assert!(stun::is_stun(&buf[..n]), "no media before the latch");
        let req = stun::Message::parse(&buf[..n]).expect("a STUN message");
        assert_eq!(from, to_xcc, "from XCC's public media port");
        assert_eq!(req.msg_type(), stun::BINDING_REQUEST);
        assert_eq!(
            req.username(),
            Some(format!("{phone_ufrag}:{xcc_ufrag}").as_bytes())
        );
        assert!(req.verify_integrity(phone_pwd.as_bytes()));
        assert!(
            req.ice_controlled().is_some(),
            "XCC is ICE-lite: controlled"
        );
        w.phone
            .send_to(&answer_check(&req, from, phone_pwd), from)
            .unwrap();
        answered += 1;
    }
    let leg = w.latched_client_leg(id);
    assert_eq!(leg.latched, phone_at.to_string());
    assert!(leg.punch_answers >= 1, "{leg:?}");
    let deadline = Instant::now() + WAIT;
    while w.scrape().contains("xcc_hole_punch_answers_total 0\n") {
        assert!(
            Instant::now() < deadline,
            "the answer is not in the metrics"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    pbx_talks_first(&w, &mut phone, to_pbx);
    exchange_counted(&w, &mut phone, to_xcc, to_pbx, COUNTED + 1);
}

/// `xccctl` run on the private side, as an administrator would on the satellite.
fn xccctl_in(topo: &Topology, which: &str, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns(which),
            env!("CARGO_BIN_EXE_xccctl"),
        ])
        .arg("--json")
        .args(args)
        .output()
        .expect("run xccctl");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `xccctl stun-check` and `nat-type` behind each NAT: the public address is the NAT's, and the
/// verdict is what the NAT is (cone: hole punching; symmetric: TURN), in words.
#[test]
fn xccctl_stun_check_and_nat_type_behind_each_nat_say_what_to_do() {
    for (nat, mapping, recommendation, words) in [
        (
            Nat::PortRestrictedCone,
            "EndpointIndependent",
            "HolePunching",
            "endpoint-independent mapping",
        ),
        (
            Nat::Symmetric,
            "AddressAndPortDependent",
            "Turn",
            "symmetric NAT",
        ),
    ] {
        let topo = match Topology::build(nat, false, false) {
            Ok(t) => t,
            Err(why) => {
                common::skip(&format!("network namespaces unavailable: {why}"));
                return;
            }
        };
        let check = xccctl_in(&topo, "c", &["stun-check", STUN_PRIMARY, "--bind", PRIVATE]);
        assert_eq!(check["ok"], true, "{check}");
        assert_eq!(check["public_ip"], NAT_PUBLIC, "{check}");
        let verdict = xccctl_in(&topo, "c", &["nat-type", STUN_PRIMARY, "--bind", PRIVATE]);
        assert_eq!(verdict["mapping"], mapping, "{verdict}");
        assert_eq!(verdict["recommendation"], recommendation, "{verdict}");
        assert!(
            verdict["message"]
                .as_str()
                .is_some_and(|m| m.contains(words)),
            "{verdict}"
        );
    }
}
