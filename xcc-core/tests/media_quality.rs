//! Quality measured by a running engine over 127.0.0.1: loss and jitter of a lossy, jittered
//! stream, RTT from an SR crossing the call and the other phone's RR, malformed RTCP counted,
//! VoIP-ready events and the call record's quality.

mod media_support;

use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime};

use media_support::*;
use xcc_core::ids::LegSide;
use xcc_core::media::{LegConfig, MediaEvent};
use xcc_core::quality::{Limit, QualityEvent, VoipEvent, ntp};
use xcc_core::srtp::SrtpSuite;

const LIMIT: Duration = Duration::from_secs(10);

/// Seeded xorshift: reproducible send jitter without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// RTP with payload type `pt`, sequence `seq` and timestamp `ts`.
fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend([0x55u8; 80]);
    p
}

/// A 28-byte sender report without blocks.
fn sender_report(ssrc: u32, ntp_msw: u32, ntp_lsw: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    for w in [ssrc, ntp_msw, ntp_lsw, 1234, 10, 1600] {
        p.extend_from_slice(&w.to_be_bytes());
    }
    p
}

/// A 32-byte receiver report with one block about `about`.
fn receiver_report(reporter: u32, about: u32, fraction: u8, lsr: u32, dlsr: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&reporter.to_be_bytes());
    p.extend_from_slice(&about.to_be_bytes());
    p.extend_from_slice(&[fraction, 0, 0, 3]);
    for w in [100u32, 40, lsr, dlsr] {
        p.extend_from_slice(&w.to_be_bytes());
    }
    p
}

/// Drains a phone socket in the background so the kernel buffer never fills; bounded by time.
fn drain(sock: &UdpSocket, for_at_most: Duration) -> std::thread::JoinHandle<()> {
    let sock = sock.try_clone().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + for_at_most;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if sock.recv_from(&mut buf).is_err() {
                return;
            }
        }
    })
}

#[test]
fn lossy_jittered_srtp_stream_shows_its_loss_and_jitter_on_the_receiving_leg() {
    let (engine, _events) = engine(28200, 28219, |_| {});
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let (client, pbx) = (Phone::new(), Phone::new());
    let mut sp = SrtpPhone::new(SrtpSuite::AesCm128HmacSha1_80);
    // Dynamic payload type 96 at 16 kHz: without the rate from SDP there would be no jitter.
    let cfg = LegConfig {
        clock_rates: vec![(96, 16000)],
        ..leg_to(&client, Some(sp.keys.clone()))
    };
    ctl.configure_leg(call.call, LegSide::Client, cfg).unwrap();
    ctl.configure_leg(call.call, LegSide::Pbx, leg_to(&pbx, None))
        .unwrap();
    let sink = drain(&pbx.rtp, Duration::from_secs(20));
    let to = local(call.ports[0].rtp);

    // 1000 packets 2 ms apart (32 timestamp units at 16 kHz), every 20th missing (5 % loss),
    // each sent up to 1.5 ms late.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let start = Instant::now();
    for seq in 0..1000u16 {
        if seq % 20 == 10 {
            continue;
        }
        let late = Duration::from_micros(rng.next() % 1500);
        let due = start + Duration::from_millis(2 * u64::from(seq)) + late;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let wire = sp.protect(&rtp(96, seq, u32::from(seq) * 32, 0xc0ffee), false);
        client.rtp.send_to(&wire, to).unwrap();
    }

    let q = wait_for(LIMIT, || {
        let s = ctl.snapshot(call.call).ok()?;
        let q = s.legs[LegSide::Client.index()].quality;
        (q.expected == 999).then_some(q)
    });
    assert_eq!(q.ssrc, Some(0xc0ffee));
    // RFC 3550 A.1: the first packet is the probation candidate, counting starts at the second
    // (sequence 1), so 999 expected, 949 received: 5.005 % lost. Loopback does not lose packets
    // in practice; the tolerance allows one stray kernel drop.
    assert!(
        (q.loss_percent - 5.0).abs() <= 0.15,
        "loss {} %",
        q.loss_percent
    );
    assert!((948..=949).contains(&q.received), "{q:?}");
    let jitter = q.jitter_ms.expect("clock rate of PT 96 was configured");
    assert!(jitter > 0.1, "jittered sends show jitter: {jitter} ms");
    // Nothing came from the PBX phone: its leg measured nothing.
    let pbx_q = ctl.snapshot(call.call).unwrap().legs[LegSide::Pbx.index()].quality;
    assert_eq!((pbx_q.expected, pbx_q.received), (0, 0));
    drop(engine);
    sink.join().unwrap();
}

#[test]
fn sr_from_the_client_and_rr_from_the_pbx_phone_give_the_pbx_leg_an_rtt() {
    let (engine, _events) = engine(28220, 28239, |_| {});
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let (client, pbx) = (Phone::new(), Phone::new());
    ctl.configure_leg(call.call, LegSide::Client, leg_to(&client, None))
        .unwrap();
    ctl.configure_leg(call.call, LegSide::Pbx, leg_to(&pbx, None))
        .unwrap();
    let [c, p] = call.ports;

    let now_ntp = ntp::NtpTime::from_system_time(SystemTime::now());
    let sr = sender_report(0xa11ce, (now_ntp.0 >> 32) as u32, now_ntp.0 as u32);
    client.rtcp.send_to(&sr, local(c.rtcp)).unwrap();
    let (got, _) = recv(&pbx.rtcp);
    let received = Instant::now();
    assert_eq!(got, sr, "the SR crosses the call untouched");

    // The PBX phone holds the SR for a while before reporting, and says so in DLSR (rounded
    // down, so the RTT XCC derives can only err towards the real transit, never below zero).
    let hold = Duration::from_millis(300);
    std::thread::sleep(hold);
    let dlsr = ntp::duration_to_compact(received.elapsed());
    let rr = receiver_report(0xb0b, 0xa11ce, 0, now_ntp.compact(), dlsr);
    pbx.rtcp.send_to(&rr, local(p.rtcp)).unwrap();
    let (got, _) = recv(&client.rtcp);
    assert_eq!(got, rr, "the RR crosses back untouched");

    let q = wait_for(LIMIT, || {
        let s = ctl.snapshot(call.call).ok()?;
        s.legs[LegSide::Pbx.index()].quality.rtt_ms.map(|_| s)
    });
    let pbx_q = q.legs[LegSide::Pbx.index()].quality;
    let rtt = pbx_q.rtt_ms.unwrap();
    // Loopback transit only: the 300 ms the phone held the report were taken out via DLSR.
    assert!(
        (0.0..hold.as_secs_f64() * 1000.0 / 2.0).contains(&rtt),
        "rtt {rtt} ms"
    );
    assert_eq!(pbx_q.one_way_delay_ms, Some(rtt / 2.0));
    assert!(pbx_q.mos.is_some(), "an RTT makes the E-model computable");
    // No SR went towards the client phone: its leg has no RTT.
    assert_eq!(q.legs[LegSide::Client.index()].quality.rtt_ms, None);
}

#[test]
fn malformed_rtcp_is_counted_forwarded_and_not_fatal_and_the_record_carries_quality() {
    let (engine, events) = engine(28240, 28259, |_| {});
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let (client, pbx) = (Phone::new(), Phone::new());
    ctl.configure_leg(call.call, LegSide::Client, leg_to(&client, None))
        .unwrap();
    ctl.configure_leg(call.call, LegSide::Pbx, leg_to(&pbx, None))
        .unwrap();
    let [c, _] = call.ports;

    // A valid first header (passes the relay's check) followed by a packet whose length runs
    // past the datagram: the quality parser refuses the compound.
    let mut bad = receiver_report(0x1, 0x2, 0, 0, 0);
    bad.extend_from_slice(&[0x81, 202, 0, 9, 0, 0, 0, 1]);
    client.rtcp.send_to(&bad, local(c.rtcp)).unwrap();
    let (got, _) = recv(&pbx.rtcp);
    assert_eq!(
        got, bad,
        "forwarded: XCC stays transparent to the other leg"
    );

    // The leg keeps working: a good report (50 % lost) and RTP still get through and count.
    let good = receiver_report(0x1, 0x2, 128, 0, 0);
    client.rtcp.send_to(&good, local(c.rtcp)).unwrap();
    assert_eq!(recv(&pbx.rtcp).0, good);
    for seq in 1..=3 {
        let up = rtp_packet(seq, 0x3, 0x11);
        client.rtp.send_to(&up, local(c.rtp)).unwrap();
        assert_eq!(recv(&pbx.rtp).0, up);
    }

    let s = wait_for(LIMIT, || {
        let s = ctl.snapshot(call.call).ok()?;
        let leg = &s.legs[LegSide::Client.index()];
        (leg.counters.rtcp_malformed == 1 && leg.quality.peer.is_some()).then_some(s)
    });
    let leg = &s.legs[LegSide::Client.index()];
    assert_eq!(leg.counters.rtcp_in, 2, "both RTCP datagrams were accepted");
    assert_eq!(
        leg.counters.drops.malformed, 0,
        "not a drop: it was forwarded"
    );
    assert_eq!(
        leg.quality.peer.map(|p| p.fraction_lost_percent),
        Some(50.0)
    );

    ctl.release(call.call).unwrap();
    let MediaEvent::Ended { quality, last, .. } = await_ended(&events, call.call, LIMIT) else {
        unreachable!("await_ended returns Ended")
    };
    let client_q = &quality.legs[LegSide::Client.index()];
    assert_eq!((client_q.rtcp_received, client_q.rtcp_malformed), (1, 1));
    // A.1 probation: the first of the three packets only validates the source.
    assert_eq!(client_q.last.received, 2);
    assert_eq!(
        last.legs[LegSide::Client.index()].counters.rtcp_malformed,
        1
    );
    assert_eq!(
        quality.mos, None,
        "no RTT on either leg: no call MOS, no guess"
    );
}

#[test]
fn sustained_loss_raises_one_voip_ready_event_for_the_leg() {
    // A 2 s debounce instead of the default 5 s: MediaConfig::quality reaches the monitors.
    let (engine, events) = engine(28260, 28279, |c| {
        c.quality.voip_ready.min_duration = Duration::from_secs(2);
    });
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let (client, pbx) = (Phone::new(), Phone::new());
    ctl.configure_leg(call.call, LegSide::Client, leg_to(&client, None))
        .unwrap();
    ctl.configure_leg(call.call, LegSide::Pbx, leg_to(&pbx, None))
        .unwrap();
    let sink = drain(&client.rtp, Duration::from_secs(30));
    let to = local(call.ports[1].rtp);

    // Every fifth packet from the PBX phone is lost (20 %) at 50 packets/s until the leg's
    // debounce lets the loss limit trip; bounded at 15 s.
    let start = Instant::now();
    let mut crossed = None;
    for seq in 0..750u16 {
        let due = start + Duration::from_millis(20 * u64::from(seq));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if seq % 5 != 0 {
            pbx.rtp
                .send_to(&rtp(0, seq, u32::from(seq) * 160, 0x77), to)
                .unwrap();
        }
        while let Ok(ev) = events.try_recv() {
            if let MediaEvent::Quality {
                call: id,
                side,
                event,
                threshold,
            } = ev
            {
                assert_eq!((id, side), (call.call, LegSide::Pbx));
                assert_eq!(
                    threshold, 3.0,
                    "the event carries the configured loss limit"
                );
                crossed = Some(event);
            }
        }
        if crossed.is_some() {
            break;
        }
    }
    let Some(QualityEvent::VoipReady(VoipEvent::LimitCrossed { limit, .. })) = crossed else {
        panic!("no loss event: {crossed:?}");
    };
    assert_eq!(limit, Limit::Loss);
    let s = ctl.snapshot(call.call).unwrap();
    assert!(
        s.legs[LegSide::Pbx.index()]
            .quality
            .broken_ever
            .contains(Limit::Loss)
    );
    assert!(
        s.legs[LegSide::Client.index()]
            .quality
            .broken_ever
            .is_empty()
    );

    ctl.release(call.call).unwrap();
    let MediaEvent::Ended { quality, .. } = await_ended(&events, call.call, LIMIT) else {
        unreachable!("await_ended returns Ended")
    };
    let rec = quality.legs[LegSide::Pbx.index()].voip_ready;
    assert_eq!(rec.of(Limit::Loss).episodes, 1);
    assert!(rec.of(Limit::Loss).broken_for >= Duration::from_secs(2));
    drop(engine);
    sink.join().unwrap();
}
