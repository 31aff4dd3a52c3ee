//! The packet path of a client leg relayed through XCC's own TURN allocations allocates nothing:
//! thousands of SRTP<->RTP rounds through coturn on loopback, in steady state (latched, channels
//! bound, spare pool refilled), with a counting global allocator. Alone in its test binary so no
//! other test allocates during the measured window; on its own coturn and ports so it can run
//! next to `media_turn.rs`.
//!
//! `XCC_ALLOC_BACKTRACE=1` prints a backtrace for every allocation inside the measured window.

mod alloc_support;
mod media_support;
mod turn_support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alloc_support::{
    ALLOCS, Counting, TRACE, receiver_report_fixed, rtp_packet_fixed, sender_report_fixed,
};
use media_support::*;
use turn_support::{Coturn, LIMIT, TurnPorts, configure_srtp_call, relay_on, relayed_engine_on};
use xcc_core::media::{CallSnapshot, MediaControl};

/// coturn, its relay range and the engine's pool for this binary (none overlaps another test's).
const PORTS: TurnPorts = TurnPorts {
    turn: 27678,
    relay: (27700, 27749),
    pool: (27600, 27649),
};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Which client sockets (0 RTP, 1 RTCP) the worker reported a bound TURN channel for: the
/// worker logs `TURN channel bound` (debug, target `xcc_core::relay::client_relay`) on the first
/// tick after coturn confirmed the ChannelBind, from then on it sends ChannelData.
static CHANNEL_BOUND: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

/// A subscriber that sees only the worker's "channel bound" event and records its socket.
struct ChannelWatch;

impl ChannelWatch {
    fn is_channel_bound(meta: &tracing::Metadata<'_>) -> bool {
        meta.is_event()
            && meta.target() == "xcc_core::relay::client_relay"
            && meta.fields().field("number").is_some()
    }
}

impl tracing::Subscriber for ChannelWatch {
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if Self::is_channel_bound(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        Self::is_channel_bound(meta)
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Socket;
        impl tracing::field::Visit for Socket {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "socket"
                    && let Some(flag) = CHANNEL_BOUND.get(value as usize)
                {
                    flag.store(true, Ordering::SeqCst);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        event.record(&mut Socket);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Sends `first()` from `from` to `to` until `sink` receives something (the phone's first packets
/// may race XCC's CreatePermission round trip with coturn); returns what arrived and its source.
fn send_until_received(
    from: &UdpSocket,
    to: SocketAddr,
    sink: &UdpSocket,
    mut first: impl FnMut() -> Vec<u8>,
) -> (Vec<u8>, SocketAddr) {
    sink.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    let got = loop {
        assert!(Instant::now() < deadline, "nothing passed the relay");
        from.send_to(&first(), to).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((n, src)) = sink.recv_from(&mut buf) {
            break (buf[..n].to_vec(), src);
        }
    };
    sink.set_read_timeout(Some(LIMIT)).unwrap();
    got
}

/// A snapshot once two in a row, a tick apart, agree (nothing in flight, counters published).
fn settled_snapshot(ctl: &MediaControl, call: xcc_core::ids::CallId) -> CallSnapshot {
    let counts = |s: &CallSnapshot| s.legs.each_ref().map(|l| (l.counters, l.quality.received));
    let mut last = ctl.snapshot(call).unwrap();
    wait_for(LIMIT, || {
        // Longer than the counters' publication lag, so "unchanged" means settled.
        std::thread::sleep(xcc_core::media::COUNTERS_LAG + Duration::from_millis(50));
        let now = ctl.snapshot(call).unwrap();
        let same = counts(&now) == counts(&last);
        last = now;
        same.then(|| last.clone())
    })
}

#[test]
fn relayed_steady_state_forwarding_allocates_nothing() {
    let Some(_coturn) = Coturn::start_on(PORTS) else {
        return;
    };
    tracing::subscriber::set_global_default(ChannelWatch).expect("first subscriber");
    let (engine, _events) = relayed_engine_on(PORTS, "secret");
    let spares = relay_on(PORTS, "secret").spares;
    let ctl = engine.control();
    wait_for(LIMIT, || ctl.relay_status().filter(|s| s.ready >= 1));
    let call = ctl.allocate().expect("a spare is ready");
    let relayed = call.relay.expect("the client leg is relayed");
    let (phone, pbx, mut sp) = configure_srtp_call(&ctl, call.call);
    let [_, p] = call.ports;
    let (p_rtp, p_rtcp) = (local(p.rtp), local(p.rtcp));

    // Latching on both client sockets (the first SRTP and SRTCP through the relay); each latch
    // makes the worker bind a TURN channel to the phone on that socket.
    let first = rtp_packet(1, 0xc1, 0x11);
    let wire = sp.protect(&first, false);
    let got = send_until_received(&phone.rtp, relayed.rtp, &pbx.rtp, || wire.clone());
    assert_eq!(got, (first, p_rtp));
    let rr = rtcp_packet(0xc1);
    // A repeated SRTCP index would be a replay: every attempt protects the next one.
    let got = send_until_received(&phone.rtcp, relayed.rtcp, &pbx.rtcp, || {
        sp.protect(&rr, true)
    });
    assert_eq!(got, (rr, p_rtcp));

    let mut up = [0u8; 256];
    let mut down = [0u8; 256];
    let mut rx = [0u8; 2048];
    let mut round = |seq: u16| {
        // Buffers are reused; the phone's in-place SRTP does not allocate either.
        up[..172].copy_from_slice(&rtp_packet_fixed(seq, 0xc1));
        let n = sp.tx.protect_rtp(&mut up, 172).unwrap();
        phone.rtp.send_to(&up[..n], relayed.rtp).unwrap();
        let (got, from) = pbx.rtp.recv_from(&mut rx).unwrap();
        assert_eq!((got, from), (172, p_rtp));
        assert_eq!(rx[..172], rtp_packet_fixed(seq, 0xc1));
        down[..172].copy_from_slice(&rtp_packet_fixed(seq, 0xb2));
        pbx.rtp.send_to(&down[..172], p_rtp).unwrap();
        // Hole-punching keepalives (through the relay too) may precede the latch.
        let (got, from) = loop {
            let (got, from) = phone.rtp.recv_from(&mut rx).unwrap();
            if !is_punch_keepalive(&rx[..got]) {
                break (got, from);
            }
        };
        assert_eq!(
            (got, from),
            (182, relayed.rtp),
            "XCC's SRTP comes from the relayed address"
        );
        let n = sp.rx.unprotect_rtp(&mut rx, got).unwrap();
        assert_eq!(rx[..n], down[..172]);
        // Every 50th round an SR crosses towards the PBX and an RR comes back, on the RTCP
        // allocation.
        if seq.is_multiple_of(50) {
            up[..28].copy_from_slice(&sender_report_fixed(0xc1, u32::from(seq)));
            let n = sp.tx.protect_rtcp(&mut up, 28).unwrap();
            phone.rtcp.send_to(&up[..n], relayed.rtcp).unwrap();
            let (got, _) = pbx.rtcp.recv_from(&mut rx).unwrap();
            assert_eq!(got, 28);
            pbx.rtcp
                .send_to(&receiver_report_fixed(0xb2, 0xc1), p_rtcp)
                .unwrap();
            let (got, from) = phone.rtcp.recv_from(&mut rx).unwrap();
            assert_eq!(from, relayed.rtcp);
            sp.rx.unprotect_rtcp(&mut rx, got).unwrap();
        }
    };

    // Warm-up: until coturn confirmed both ChannelBinds and the worker switched to ChannelData
    // (bounded by LIMIT), then more rounds on the ChannelData path for first-use initialisation.
    let mut seq = 2u16;
    let deadline = Instant::now() + LIMIT;
    while !CHANNEL_BOUND.iter().all(|b| b.load(Ordering::SeqCst)) {
        assert!(
            Instant::now() < deadline,
            "no TURN channel bound within {LIMIT:?}"
        );
        round(seq);
        seq += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    for _ in 0..200 {
        round(seq);
        seq += 1;
    }
    // The spare thread replaced the taken spare and is idle (it only wakes for timers).
    wait_for(LIMIT, || {
        ctl.relay_status()
            .filter(|s| s.ready == spares && s.pending == 0)
    });
    let before = settled_snapshot(&ctl, call.call);

    // At least 5,000 rounds and at least 1.2 s, so the monitors' 1 s evaluation, a few worker
    // ticks with the relay's timers and a wake-up of the spare thread run inside the window.
    let trace = std::env::var_os("XCC_ALLOC_BACKTRACE").is_some();
    let first_measured = seq;
    let allocs_before = ALLOCS.load(Ordering::SeqCst);
    TRACE.store(trace, Ordering::SeqCst);
    let start = Instant::now();
    loop {
        round(seq);
        seq += 1;
        if seq - first_measured >= 5000 && start.elapsed() >= Duration::from_millis(1200) {
            break;
        }
    }
    TRACE.store(false, Ordering::SeqCst);
    let allocated = ALLOCS.load(Ordering::SeqCst) - allocs_before;
    let rtp = u64::from(seq - first_measured);
    let rtcp = (first_measured..seq)
        .filter(|s| s.is_multiple_of(50))
        .count() as u64;
    assert_eq!(
        allocated, 0,
        "allocations while forwarding {rtp} rounds through the relay"
    );

    // The rounds really went through the engine's relayed SRTP leg and its plain PBX leg, and the
    // quality monitors saw every RTP packet.
    let after = settled_snapshot(&ctl, call.call);
    for side in [0, 1] {
        let (a, b) = (after.legs[side].counters, before.legs[side].counters);
        assert_eq!(a.packets_in - b.packets_in, rtp + rtcp, "leg {side} in");
        assert_eq!(a.packets_out - b.packets_out, rtp + rtcp, "leg {side} out");
        assert_eq!(
            after.legs[side].quality.received - before.legs[side].quality.received,
            rtp,
            "leg {side} monitor"
        );
    }
    assert!(after.legs[1].quality.rtt_ms.is_some(), "SR/RR matched");
    ctl.release(call.call).unwrap();
    drop(engine);
}
