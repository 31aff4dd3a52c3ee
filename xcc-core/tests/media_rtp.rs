//! RTP <-> RTP through a running engine over 127.0.0.1: both directions, RTCP beside RTP.

mod media_support;

use std::time::Duration;

use media_support::*;
use xcc_core::ids::LegSide;
use xcc_core::media::{Direction, LegConfig};

const LIMIT: Duration = Duration::from_secs(5);

#[test]
fn rtp_and_rtcp_cross_both_ways_untouched_and_are_counted() {
    let (engine, _events) = engine(26000, 26099, |_| {});
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let (client, pbx) = (Phone::new(), Phone::new());
    ctl.configure_leg(
        call.call,
        LegSide::Client,
        LegConfig {
            remote_rtp: Some(client.rtp_addr()),
            remote_rtcp: Some(client.rtcp_addr()),
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
    let at = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));

    for seq in 0..10u16 {
        let up = rtp_packet(seq, 0x1111, 0xa5);
        client.rtp.send_to(&up, at(c.rtp)).unwrap();
        let (got, from) = recv(&pbx.rtp);
        assert_eq!(got, up, "client -> pbx payload untouched");
        assert_eq!(from, at(p.rtp), "sent from the PBX leg's own RTP port");

        let down = rtp_packet(seq, 0x2222, 0x5a);
        pbx.rtp.send_to(&down, at(p.rtp)).unwrap();
        let (got, from) = recv(&client.rtp);
        assert_eq!(got, down, "pbx -> client payload untouched");
        assert_eq!(from, at(c.rtp));
    }
    let rr = rtcp_packet(0x1111);
    client.rtcp.send_to(&rr, at(c.rtcp)).unwrap();
    let (got, from) = recv(&pbx.rtcp);
    assert_eq!((got, from), (rr.clone(), at(p.rtcp)));
    pbx.rtcp.send_to(&rr, at(p.rtcp)).unwrap();
    let (got, from) = recv(&client.rtcp);
    assert_eq!((got, from), (rr, at(c.rtcp)));

    let snap = wait_for(LIMIT, || {
        let s = ctl.snapshot(call.call).unwrap();
        (s.legs[0].counters.packets_in == 11 && s.legs[1].counters.packets_out == 11).then_some(s)
    });
    for leg in &snap.legs {
        let n = &leg.counters;
        assert_eq!(
            (n.packets_in, n.packets_out, n.rtcp_in, n.rtcp_out),
            (11, 11, 1, 1),
            "{:?}",
            leg.side
        );
        assert_eq!(n.bytes_in, 10 * 172 + 28);
        assert_eq!(n.drops, Default::default());
    }
    assert_eq!(snap.legs[0].latched, Some(client.rtp_addr()));
    assert_eq!(snap.legs[0].latched_rtcp, Some(client.rtcp_addr()));
    assert_eq!(snap.legs[1].latched, Some(pbx.rtp_addr()));
    assert_eq!(snap.legs[0].ports, c);
    engine.shutdown();
}

#[test]
fn rtcp_mux_leg_takes_and_gets_rtcp_on_its_rtp_port() {
    let (engine, _events) = engine(26100, 26199, |_| {});
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let (client, pbx) = (Phone::new(), Phone::new());
    let mux = LegConfig {
        remote_rtp: Some(client.rtp_addr()),
        rtcp_mux: true,
        ..LegConfig::default()
    };
    ctl.configure_leg(call.call, LegSide::Client, mux).unwrap();
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
    let at = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let [c, p] = call.ports;
    let rr = rtcp_packet(0x3333);
    // Muxed RTCP from the client arrives on the RTCP port of the non-muxed PBX leg...
    client.rtp.send_to(&rr, at(c.rtp)).unwrap();
    assert_eq!(recv(&pbx.rtcp), (rr.clone(), at(p.rtcp)));
    // ... and the PBX's RTCP goes to the client's RTP address, from the client leg's RTP port.
    pbx.rtcp.send_to(&rr, at(p.rtcp)).unwrap();
    assert_eq!(recv(&client.rtp), (rr, at(c.rtp)));
    engine.shutdown();
}

#[test]
fn hold_stops_rtp_towards_the_sendonly_peer_but_not_its_rtcp() {
    let (engine, _events) = engine(26200, 26299, |_| {});
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let (client, pbx) = (Phone::new(), Phone::new());
    let cfg = |p: &Phone, direction| LegConfig {
        remote_rtp: Some(p.rtp_addr()),
        remote_rtcp: Some(p.rtcp_addr()),
        direction,
        ..LegConfig::default()
    };
    // The client put the call on hold: it only sends.
    ctl.configure_leg(
        call.call,
        LegSide::Client,
        cfg(&client, Direction::SendOnly),
    )
    .unwrap();
    ctl.configure_leg(call.call, LegSide::Pbx, cfg(&pbx, Direction::SendRecv))
        .unwrap();
    let at = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let [c, p] = call.ports;
    pbx.rtp.send_to(&rtp_packet(1, 9, 0), at(p.rtp)).unwrap();
    let rr = rtcp_packet(9);
    pbx.rtcp.send_to(&rr, at(p.rtcp)).unwrap();
    assert_eq!(recv(&client.rtcp).0, rr, "RTCP flows on hold");
    wait_for(LIMIT, || {
        (ctl.snapshot(call.call).unwrap().legs[1]
            .counters
            .drops
            .no_route
            == 1)
            .then_some(())
    });
    assert!(!pending(&client.rtp), "no RTP towards a sendonly peer");
    // Music on hold still reaches the PBX.
    let moh = rtp_packet(1, 7, 0x77);
    client.rtp.send_to(&moh, at(c.rtp)).unwrap();
    assert_eq!(recv(&pbx.rtp).0, moh);
    engine.shutdown();
}

#[test]
fn unknown_calls_are_typed_errors() {
    let (engine, _events) = engine(26300, 26399, |_| {});
    let ctl = engine.control();
    let bogus = xcc_core::ids::CallId(u64::MAX);
    assert!(matches!(
        ctl.snapshot(bogus),
        Err(xcc_core::Error::UnknownCall(_))
    ));
    assert!(matches!(
        ctl.release(bogus),
        Err(xcc_core::Error::UnknownCall(_))
    ));
    assert!(matches!(
        ctl.configure_leg(bogus, LegSide::Pbx, LegConfig::default()),
        Err(xcc_core::Error::UnknownCall(_))
    ));
    engine.shutdown();
}

#[test]
fn ipv6_bind_address_forwards_over_loopback() {
    use std::net::{SocketAddr, UdpSocket};
    let Ok(probe) = UdpSocket::bind("[::1]:0") else {
        return; // no IPv6 loopback here: nothing to prove
    };
    drop(probe);
    let (engine, _events) = engine(26700, 26799, |c| c.bind_address = "::1".parse().unwrap());
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let phone = || {
        let s = UdpSocket::bind("[::1]:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let (a, b) = (phone(), phone());
    let cfg = |s: &UdpSocket| LegConfig {
        remote_rtp: Some(s.local_addr().unwrap()),
        ..LegConfig::default()
    };
    ctl.configure_leg(call.call, LegSide::Client, cfg(&a))
        .unwrap();
    ctl.configure_leg(call.call, LegSide::Pbx, cfg(&b)).unwrap();
    let at = |port| SocketAddr::new("::1".parse().unwrap(), port);
    let pkt = rtp_packet(1, 6, 6);
    a.send_to(&pkt, at(call.ports[0].rtp)).unwrap();
    assert_eq!(recv(&b), (pkt, at(call.ports[1].rtp)));
    let snap = ctl.snapshot(call.call).unwrap();
    assert_eq!(snap.legs[0].local_rtp, at(call.ports[0].rtp));
    engine.shutdown();
}

#[test]
fn a_burst_larger_than_one_read_turn_is_forwarded_whole_and_in_order() {
    let (engine, _events) = engine(27100, 27109, |c| c.workers = 1);
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let (client, pbx) = (Phone::new(), Phone::new());
    ctl.configure_leg(call.call, LegSide::Client, leg_to(&client, None))
        .unwrap();
    ctl.configure_leg(call.call, LegSide::Pbx, leg_to(&pbx, None))
        .unwrap();
    // More than twice what the worker reads from one socket per turn (64): the rest must not be
    // stranded by edge-triggered readiness. (Small enough for the phone's default receive buffer.)
    const N: u16 = 150;
    for seq in 0..N {
        client
            .rtp
            .send_to(&rtp_packet(seq, 5, 0), local(call.ports[0].rtp))
            .unwrap();
    }
    for seq in 0..N {
        let mut buf = [0u8; 2048];
        let got = pbx
            .rtp
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("packet {seq} of {N} missing: {e}"));
        assert_eq!(got, 172);
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), seq);
    }
    engine.shutdown();
}
