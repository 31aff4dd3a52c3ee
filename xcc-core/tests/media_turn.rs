//! Client legs relayed through XCC's own TURN allocations (`MediaEngine::start_relayed`), against
//! a real coturn on loopback with long-term credentials: spares are allocated ahead of calls, the
//! call's client leg speaks SRTP through the relay both ways, direct datagrams to the bound client
//! ports are dropped, and a server refusing the credentials makes allocation fail cleanly without
//! leaking ports.
//! The coturn harness is `turn_support`.

mod media_support;
mod turn_support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use media_support::*;
use turn_support::{
    Coturn, DEFAULT_PORTS, LIMIT, RELAY_PORTS, TURN_PORT, configure_srtp_call, relay,
    relayed_engine, relayed_engine_with,
};
use xcc_core::nat::turn::TurnTransport;

/// Receives datagrams on `sock` until one is not a TURN/STUN message from XCC's punching.
fn recv_media(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    recv(sock)
}

#[test]
fn relayed_client_leg_carries_srtp_both_ways_through_coturn() {
    carries_srtp_both_ways(TurnTransport::Udp);
}

#[test]
fn client_leg_relayed_over_tcp_carries_srtp_both_ways_through_coturn() {
    carries_srtp_both_ways(TurnTransport::Tcp);
}

/// A relayed call over `transport`: SRTP both ways, RTCP on its own allocation, direct datagrams
/// to the bound ports dropped.
fn carries_srtp_both_ways(transport: TurnTransport) {
    let Some(_coturn) = Coturn::start() else {
        return;
    };
    let (engine, _events) = relayed_engine_with(
        DEFAULT_PORTS,
        xcc_core::media::RelayConfig {
            transport,
            ..relay("secret")
        },
    );
    let ctl = engine.control();
    // Spares are made ahead of calls: the first one appears within a few round trips (coturn
    // may take a moment to listen, the failover schedule retries).
    let status = wait_for(LIMIT, || ctl.relay_status().filter(|s| s.ready >= 1));
    assert_eq!(status.server, local(TURN_PORT));
    assert!(status.allocated_total >= 1 && status.last_error.is_none());

    let call = ctl.allocate().expect("a spare is ready");
    let relayed = call.relay.expect("the client leg is relayed");
    for addr in [relayed.rtp, relayed.rtcp] {
        assert_eq!(addr.ip(), local(0).ip());
        assert!(
            (RELAY_PORTS.0..=RELAY_PORTS.1).contains(&addr.port()),
            "{addr} is on coturn's relay range, not one of XCC's ports"
        );
    }
    assert_ne!(relayed.rtp, relayed.rtcp, "one allocation per socket");

    let (phone, pbx, mut sp) = configure_srtp_call(&ctl, call.call);
    let [c, p] = call.ports;

    // XCC permits the phone as soon as the leg is configured; the phone's first packets may
    // still race the CreatePermission round trip, so it repeats its first one until it passes.
    let first = rtp_packet(1, 0xc1, 0x11);
    let wire = sp.protect(&first, false);
    pbx.rtp
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut got = None;
    for _ in 0..50 {
        phone.rtp.send_to(&wire, relayed.rtp).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((n, from)) = pbx.rtp.recv_from(&mut buf) {
            got = Some((buf[..n].to_vec(), from));
            break;
        }
    }
    pbx.rtp.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(
        got,
        Some((first, local(p.rtp))),
        "the phone's SRTP reached the PBX decrypted, through the relay"
    );
    for seq in 2..=30u16 {
        let up = rtp_packet(seq, 0xc1, 0x11);
        phone
            .rtp
            .send_to(&sp.protect(&up, false), relayed.rtp)
            .unwrap();
        assert_eq!(recv_media(&pbx.rtp), (up, local(p.rtp)));

        let down = rtp_packet(seq, 0xb2, 0x22);
        pbx.rtp.send_to(&down, local(p.rtp)).unwrap();
        let (wire, from) = recv_media(&phone.rtp);
        assert_eq!(
            from, relayed.rtp,
            "XCC's media comes from the relayed address"
        );
        assert_eq!(sp.unprotect(&wire, false), down);
    }
    // RTCP travels on its own allocation.
    let rr = rtcp_packet(0xc1);
    let mut srtcp = sp.protect(&rr, true);
    let mut delivered = None;
    pbx.rtcp
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    for _ in 0..50 {
        phone.rtcp.send_to(&srtcp, relayed.rtcp).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((n, from)) = pbx.rtcp.recv_from(&mut buf) {
            delivered = Some((buf[..n].to_vec(), from));
            break;
        }
        // A repeated SRTCP index would be a replay: protect the next one.
        srtcp = sp.protect(&rr, true);
    }
    assert_eq!(delivered, Some((rr, local(p.rtcp))));

    // The bound client port is not where the phone was told to send: direct packets are strays.
    let snapshot_strays = |ctl: &xcc_core::media::MediaControl| {
        ctl.snapshot(call.call).unwrap().legs[0]
            .counters
            .drops
            .stray
    };
    let before = snapshot_strays(&ctl);
    let direct = sp.protect(&rtp_packet(31, 0xc1, 0x11), false);
    phone.rtp.send_to(&direct, local(c.rtp)).unwrap();
    wait_for(LIMIT, || (snapshot_strays(&ctl) > before).then_some(()));
    assert!(!pending(&pbx.rtp), "a direct packet never reaches the PBX");

    ctl.release(call.call).unwrap();
    drop(engine);
}

#[test]
fn refused_credentials_fail_spares_and_calls_cleanly_without_leaking_ports() {
    let Some(_coturn) = Coturn::start() else {
        return;
    };
    let (engine, _events) = relayed_engine("wrong");
    let ctl = engine.control();
    let status = wait_for(LIMIT, || ctl.relay_status().filter(|s| s.failed_total >= 1));
    assert_eq!(status.ready, 0);
    let reason = status.last_error.expect("the failure is described");
    assert!(
        reason.contains("401"),
        "the server's refusal is named: {reason}"
    );
    match ctl.allocate() {
        Err(xcc_core::Error::RelayUnavailable { server, reason }) => {
            assert_eq!(server, local(TURN_PORT));
            assert!(reason.contains("401"), "{reason}");
        }
        other => panic!("expected RelayUnavailable, got {other:?}"),
    }
    // The refused call gave its PBX pair back; failed spares gave theirs back: only the spares
    // being retried (at most `spares` pairs) hold ports.
    let pool = ctl.pool_status();
    assert!(
        pool.used <= 2 * 2,
        "at most the retried spares' ports are in use, got {pool:?}"
    );
    assert!(ctl.calls().is_empty());
    drop(engine);
}

/// Drives `client` on `sock` against coturn until it reports an event (bounded).
fn drive_until_event(
    client: &mut xcc_core::nat::turn::TurnClient,
    sock: &UdpSocket,
) -> xcc_core::nat::turn::TurnEvent {
    let mut rng = rand::rng();
    let mut buf = [0u8; 2048];
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while std::time::Instant::now() < deadline {
        let now = std::time::Instant::now();
        client.handle_timeout(now, &mut rng);
        while let Some((to, bytes)) = client.poll_transmit() {
            sock.send_to(bytes, to).unwrap();
        }
        if let Some(event) = client.poll_event() {
            return event;
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            client.handle_datagram(std::time::Instant::now(), from, &buf[..n], &mut rng);
        }
    }
    panic!("no TURN event within {LIMIT:?}");
}

#[test]
fn a_client_on_a_5_tuple_with_a_stale_allocation_releases_it_and_allocates() {
    use xcc_core::nat::Retransmission;
    use xcc_core::nat::turn::{TurnClient, TurnConfig, TurnEvent};
    let Some(_coturn) = Coturn::start() else {
        return;
    };
    let config = TurnConfig {
        server: local(TURN_PORT),
        transport: TurnTransport::Udp,
        username: "xcc".into(),
        password: "secret".into(),
        lifetime: Duration::from_secs(600),
        retransmission: Retransmission::FAILOVER,
    };
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // A first client allocates, then vanishes without deallocating (a killed process).
    let mut dead = TurnClient::new(config.clone(), std::time::Instant::now());
    let first = match drive_until_event(&mut dead, &sock) {
        TurnEvent::Allocated { relayed, .. } => relayed,
        other => panic!("first allocation: {other:?}"),
    };
    drop(dead);
    // A new client on the same socket meets the stale allocation (437) and takes its place.
    let mut fresh = TurnClient::new(config, std::time::Instant::now());
    match drive_until_event(&mut fresh, &sock) {
        TurnEvent::Allocated { relayed, .. } => {
            assert_eq!(relayed.ip(), first.ip());
        }
        other => panic!("the stale allocation was not released: {other:?}"),
    }
}
