//! SRTP phone on the client leg, RTP or SRTP on the PBX leg, through a running engine.

mod media_support;

use std::time::Duration;

use media_support::*;
use xcc_core::ids::LegSide;
use xcc_core::srtp::SrtpSuite;

const LIMIT: Duration = Duration::from_secs(5);

#[test]
fn srtp_client_and_rtp_pbx_talk_both_ways_with_srtcp() {
    let (engine, _events) = engine(26400, 26499, |_| {});
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

    for seq in 1..=20u16 {
        let up = rtp_packet(seq, 0xc1, 0x11);
        client
            .rtp
            .send_to(&sp.protect(&up, false), local(c.rtp))
            .unwrap();
        assert_eq!(
            recv(&pbx.rtp),
            (up, local(p.rtp)),
            "decrypted towards the PBX"
        );

        let down = rtp_packet(seq, 0xb2, 0x22);
        pbx.rtp.send_to(&down, local(p.rtp)).unwrap();
        let (wire, from) = recv(&client.rtp);
        assert_eq!(from, local(c.rtp));
        assert_eq!(wire.len(), down.len() + 10, "80-bit tag appended");
        assert_ne!(wire[12..172], down[12..], "payload encrypted on the wire");
        assert_eq!(
            sp.unprotect(&wire, false),
            down,
            "encrypted towards the client"
        );
    }
    let rr = rtcp_packet(0xc1);
    client
        .rtcp
        .send_to(&sp.protect(&rr, true), local(c.rtcp))
        .unwrap();
    assert_eq!(recv(&pbx.rtcp), (rr.clone(), local(p.rtcp)));
    pbx.rtcp.send_to(&rr, local(p.rtcp)).unwrap();
    let (wire, _) = recv(&client.rtcp);
    assert_eq!(sp.unprotect(&wire, true), rr);

    let snap = wait_for(LIMIT, || {
        let s = ctl.snapshot(call.call).unwrap();
        (s.legs[0].counters.packets_out == 21 && s.legs[1].counters.packets_out == 21).then_some(s)
    });
    let (cl, pb) = (&snap.legs[0], &snap.legs[1]);
    assert_eq!(cl.srtp_suite, Some(SrtpSuite::AesCm128HmacSha1_80));
    assert_eq!(
        (
            cl.counters.packets_in,
            cl.counters.rtcp_in,
            cl.counters.rtcp_out
        ),
        (21, 1, 1)
    );
    assert_eq!(
        cl.counters.bytes_in,
        20 * 182 + (28 + 14),
        "counted as received, SRTP size"
    );
    assert_eq!(
        pb.counters.bytes_out,
        20 * 172 + 28,
        "counted as sent, plain size"
    );
    assert_eq!(cl.counters.drops, Default::default());
    assert_eq!(cl.latched, Some(client.rtp_addr()));
    engine.shutdown();
}

#[test]
fn srtp_to_srtp_is_reencrypted_under_each_legs_keys() {
    let (engine, _events) = engine(26500, 26599, |_| {});
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let (client, pbx) = (Phone::new(), Phone::new());
    let mut a = SrtpPhone::new(SrtpSuite::AesCm128HmacSha1_80);
    let mut b = SrtpPhone::new(SrtpSuite::AeadAes128Gcm);
    ctl.configure_leg(
        call.call,
        LegSide::Client,
        leg_to(&client, Some(a.keys.clone())),
    )
    .unwrap();
    ctl.configure_leg(call.call, LegSide::Pbx, leg_to(&pbx, Some(b.keys.clone())))
        .unwrap();
    let [c, p] = call.ports;
    for seq in 1..=5u16 {
        let up = rtp_packet(seq, 0xa, 0x33);
        let wire_a = a.protect(&up, false);
        client.rtp.send_to(&wire_a, local(c.rtp)).unwrap();
        let (wire_b, _) = recv(&pbx.rtp);
        assert_ne!(wire_a, wire_b);
        assert_eq!(b.unprotect(&wire_b, false), up);

        let down = rtp_packet(seq, 0xb, 0x44);
        pbx.rtp
            .send_to(&b.protect(&down, false), local(p.rtp))
            .unwrap();
        let (wire, _) = recv(&client.rtp);
        assert_eq!(a.unprotect(&wire, false), down);
    }
    let rr = rtcp_packet(0xb);
    pbx.rtcp
        .send_to(&b.protect(&rr, true), local(p.rtcp))
        .unwrap();
    let (wire, _) = recv(&client.rtcp);
    assert_eq!(a.unprotect(&wire, true), rr);
    engine.shutdown();
}
