//! The packet path allocates nothing: thousands of packets through a running engine in steady
//! state, with a counting global allocator. Alone in its test binary so no other test allocates
//! during the measured window.

mod alloc_support;
mod media_support;

use std::sync::atomic::Ordering;

use alloc_support::{
    ALLOCS, Counting, receiver_report_fixed, rtp_packet_fixed, sender_report_fixed,
};
use media_support::*;
use xcc_core::ids::LegSide;
use xcc_core::srtp::SrtpSuite;

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_forwarding_allocates_nothing() {
    let (engine, _events) = engine(27000, 27049, |c| c.workers = 1);
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
    let (c_rtp, p_rtp) = (local(c.rtp), local(p.rtp));
    let (c_rtcp, p_rtcp) = (local(c.rtcp), local(p.rtcp));

    let mut up = [0u8; 256];
    let mut down = [0u8; 256];
    let mut rx = [0u8; 2048];
    let mut round = |seq: u16| {
        // Buffers are reused; the phone's in-place SRTP does not allocate either.
        up[..172].copy_from_slice(&rtp_packet_fixed(seq, 0xc1));
        let n = sp.tx.protect_rtp(&mut up, 172).unwrap();
        client.rtp.send_to(&up[..n], c_rtp).unwrap();
        let (got, _) = pbx.rtp.recv_from(&mut rx).unwrap();
        assert_eq!(got, 172);
        down[..172].copy_from_slice(&rtp_packet_fixed(seq, 0xb2));
        pbx.rtp.send_to(&down[..172], p_rtp).unwrap();
        // A hole-punching keepalive may precede the first packet (the leg latches on the
        // client's first SRTP packet, which stops them).
        let got = loop {
            let (got, _) = client.rtp.recv_from(&mut rx).unwrap();
            if !media_support::is_punch_keepalive(&rx[..got]) {
                break got;
            }
        };
        assert_eq!(got, 182);
        // Every 50th round an SR crosses towards the PBX and an RR comes back: the quality
        // monitors parse both directions of RTCP on the way.
        if seq.is_multiple_of(50) {
            up[..28].copy_from_slice(&sender_report_fixed(0xc1, u32::from(seq)));
            let n = sp.tx.protect_rtcp(&mut up, 28).unwrap();
            client.rtcp.send_to(&up[..n], c_rtcp).unwrap();
            let (got, _) = pbx.rtcp.recv_from(&mut rx).unwrap();
            assert_eq!(got, 28);
            pbx.rtcp
                .send_to(&receiver_report_fixed(0xb2, 0xc1), p_rtcp)
                .unwrap();
            client.rtcp.recv_from(&mut rx).unwrap();
        }
    };
    // Warm-up: latching (events), first-use initialisation anywhere in std.
    for seq in 1..=200 {
        round(seq);
    }
    // At least 5,000 rounds and at least 1.2 s, so the monitors' 1 s evaluation and the
    // publication of its result run inside the measured window.
    let before = ALLOCS.load(Ordering::SeqCst);
    let start = std::time::Instant::now();
    let mut last = 200;
    for seq in 201..=60_000 {
        round(seq);
        last = seq;
        if seq >= 5200 && start.elapsed() >= std::time::Duration::from_millis(1200) {
            break;
        }
    }
    let allocated = ALLOCS.load(Ordering::SeqCst) - before;
    let rtp = u64::from(last);
    let rtcp = rtp / 50;
    assert_eq!(allocated, 0, "allocations while forwarding {rtp} rounds");
    // The forwarding really happened through the engine's SRTP leg (snapshots lag one tick), and
    // the monitors saw it.
    wait_for(std::time::Duration::from_secs(5), || {
        let s = ctl.snapshot(call.call).unwrap();
        let c = s.legs[0].counters;
        (c.packets_in == rtp + rtcp && c.packets_out == rtp + rtcp).then_some(())
    });
    let s = ctl.snapshot(call.call).unwrap();
    // A.1 probation: the first packet of each stream only validates the source.
    assert_eq!(s.legs[0].quality.received, rtp - 1);
    assert_eq!(s.legs[1].quality.received, rtp - 1);
    assert!(
        s.legs[0].quality.interval_loss_percent.is_some(),
        "evaluated"
    );
    assert!(s.legs[1].quality.rtt_ms.is_some(), "SR/RR matched");
    engine.shutdown();
}
