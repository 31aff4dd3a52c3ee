//! A stranger spraying both legs' ports gets nothing forwarded, injects nothing, and is counted.

mod media_support;

use std::net::UdpSocket;
use std::time::Duration;

use media_support::*;
use xcc_core::ids::LegSide;
use xcc_core::srtp::SrtpSuite;

#[test]
fn stranger_spraying_both_legs_gets_and_injects_nothing() {
    let (engine, _events) = engine(26600, 26699, |_| {});
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let (client, pbx) = (Phone::new(), Phone::new());
    let mut sp = SrtpPhone::new(SrtpSuite::AesCm128HmacSha1_80);
    ctl.configure_leg(
        call.call,
        LegSide::Client,
        leg_to(&client, Some(sp.keys.clone())),
    )
    .unwrap();
    ctl.configure_leg(call.call, LegSide::Pbx, leg_to(&pbx, None))
        .unwrap();
    let [c, p] = call.ports;
    // Both phones speak first, so both legs are latched.
    client
        .rtp
        .send_to(&sp.protect(&rtp_packet(1, 1, 1), false), local(c.rtp))
        .unwrap();
    recv(&pbx.rtp);
    pbx.rtp.send_to(&rtp_packet(1, 2, 2), local(p.rtp)).unwrap();
    recv(&client.rtp);
    client
        .rtcp
        .send_to(&sp.protect(&rtcp_packet(1), true), local(c.rtcp))
        .unwrap();
    recv(&pbx.rtcp);
    pbx.rtcp.send_to(&rtcp_packet(2), local(p.rtcp)).unwrap();
    recv(&client.rtcp);

    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    const N: u64 = 50;
    for seq in 0..N as u16 {
        let forged = rtp_packet(100 + seq, 0x666, 0x66);
        let mut forged_srtp = forged.clone();
        forged_srtp.extend_from_slice(&[0u8; 10]);
        stranger.send_to(&forged_srtp, local(c.rtp)).unwrap();
        stranger.send_to(&forged, local(p.rtp)).unwrap();
        stranger
            .send_to(&rtcp_packet(0x666), local(c.rtcp))
            .unwrap();
        stranger
            .send_to(&rtcp_packet(0x666), local(p.rtcp))
            .unwrap();
    }
    // Every spray packet is accounted for as a drop before anything else is asserted.
    let snap = wait_for(Duration::from_secs(5), || {
        let s = ctl.snapshot(call.call).unwrap();
        let d = |i: usize| s.legs[i].counters.drops;
        (d(0).stranger == 2 * N && d(1).stranger == 2 * N).then_some(s)
    });
    assert_eq!(snap.legs[1].latched_rtcp, Some(pbx.rtcp_addr()));
    assert_eq!(snap.legs[0].counters.packets_in, 2);
    assert_eq!(snap.legs[1].counters.packets_in, 2);
    assert_eq!(snap.legs[0].latched, Some(client.rtp_addr()));
    assert_eq!(snap.legs[1].latched, Some(pbx.rtp_addr()));
    for s in [&client.rtp, &client.rtcp, &pbx.rtp, &pbx.rtcp, &stranger] {
        assert!(!pending(s), "nothing forwarded or reflected");
    }
    // Media still flows, and the first thing the PBX gets is the genuine packet.
    let genuine = rtp_packet(2, 1, 0x77);
    client
        .rtp
        .send_to(&sp.protect(&genuine, false), local(c.rtp))
        .unwrap();
    assert_eq!(recv(&pbx.rtp).0, genuine);
    engine.shutdown();
}
