//! The pool through a running engine: no leaks, exhaustion, busy ports, config validation.

mod media_support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use media_support::*;
use xcc_core::media::{MediaConfig, MediaEngine};

#[test]
fn many_allocate_release_cycles_leak_no_port() {
    // 5 calls' worth of ports.
    let (engine, events) = engine(26900, 26919, |c| c.quarantine_secs = 0);
    let ctl = engine.control();
    let total = ctl.pool_status().total;
    assert_eq!(total, 20);
    for _ in 0..40 {
        let calls: Vec<_> = (0..5).map(|_| ctl.allocate().unwrap()).collect();
        assert!(matches!(
            ctl.allocate(),
            Err(xcc_core::Error::PoolExhausted { needed: 4, .. })
        ));
        for c in &calls {
            ctl.release(c.call).unwrap();
        }
        let ids: Vec<_> = calls.iter().map(|c| c.call).collect();
        await_all_ended(&events, &ids, Duration::from_secs(5));
    }
    let st = wait_for(Duration::from_secs(5), || {
        let st = ctl.pool_status();
        (st.free == total).then_some(st)
    });
    assert_eq!((st.used, st.quarantined), (0, 0));
    assert!(ctl.calls().is_empty());
    engine.shutdown();
}

#[test]
fn port_held_by_another_process_is_skipped() {
    let _holder = UdpSocket::bind("127.0.0.1:26941").unwrap();
    let (engine, _events) = engine(26940, 26949, |_| {});
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let rtp: Vec<u16> = call.ports.iter().map(|p| p.rtp).collect();
    assert_eq!(rtp, vec![26942, 26944], "pair 26940/26941 skipped");
    for p in call.ports {
        assert_eq!(p.rtcp, p.rtp + 1);
    }
    engine.shutdown();
}

#[test]
fn calls_spread_over_the_least_loaded_workers() {
    let (engine, _events) = engine(26950, 26999, |_| {});
    let ctl = engine.control();
    assert_eq!(ctl.workers(), 2);
    let calls: Vec<_> = (0..4).map(|_| ctl.allocate().unwrap()).collect();
    assert_eq!(ctl.calls().len(), 4);
    // All four are live and independently addressable.
    for c in &calls {
        assert_eq!(ctl.snapshot(c.call).unwrap().legs[0].ports, c.ports[0]);
    }
    engine.shutdown();
}

#[test]
fn invalid_config_is_refused_with_its_key() {
    type Tweak = fn(&mut MediaConfig);
    let cases: [(Tweak, &str); 10] = [
        (|c| (c.port_min, c.port_max) = (40010, 40000), "port_min"),
        (|c| (c.port_min, c.port_max) = (40000, 40002), "port_max"),
        (|c| (c.port_min, c.port_max) = (40001, 40004), "port_max"),
        (|c| c.port_min = 0, "port_min"),
        (|c| c.dscp = 64, "dscp"),
        (|c| c.media_timeout_secs = 0, "media_timeout_secs"),
        (|c| c.hold_timeout_secs = 0, "hold_timeout_secs"),
        (
            |c| c.quality.voip_ready.recover_margin = 1.0,
            "quality.voip_ready.recover_margin",
        ),
        (
            |c| c.quality.voip_ready.limits.loss_percent = 0.0,
            "quality.voip_ready.limits",
        ),
        (
            |c| c.quality.voip_ready.limits.jitter_ms = f64::NAN,
            "quality.voip_ready.limits",
        ),
    ];
    for (tweak, want) in cases {
        let mut cfg = MediaConfig::default();
        tweak(&mut cfg);
        match MediaEngine::start(cfg) {
            Err(xcc_core::Error::Config { key, .. }) => assert_eq!(key, want),
            Err(e) => panic!("{want}: wrong error {e}"),
            Ok(_) => panic!("{want}: accepted"),
        }
    }
    // Odd port_min is fine: pairs start on the next even port.
    let mut ok = MediaConfig {
        port_min: 40001,
        port_max: 40005,
        ..MediaConfig::default()
    };
    assert!(ok.validate().is_ok());
    ok.workers = 1;
    assert!(ok.validate().is_ok());
}

#[test]
fn worker_heartbeats_advance_while_idle_and_freeze_after_shutdown() {
    let (engine, _events) = engine(20400, 20499, |_| {});
    let control = engine.control();
    let first = control.worker_heartbeats();
    assert_eq!(first.len(), 2);
    // Every worker must tick on its own, with no traffic and no commands.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = control.worker_heartbeats();
        if now.iter().zip(&first).all(|(n, f)| n > f) {
            break;
        }
        assert!(Instant::now() < deadline, "heartbeats stuck at {now:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    engine.shutdown();
    // The workers are joined: nothing bumps the counters any more.
    let stopped = control.worker_heartbeats();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(control.worker_heartbeats(), stopped);
}

/// A restarting engine's TURN spares take no port before the stored calls are restored
/// (`MediaControl::restore_done`): a spare on a stored call's port would make that call's
/// restore fail and drop it.
#[test]
fn a_restoring_engine_lends_turn_spares_no_port_until_restore_is_done() {
    // A "TURN server" that never answers: spares take their ports and wait for it.
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay = xcc_core::media::RelayConfig {
        server: server.local_addr().unwrap(),
        transport: xcc_core::nat::turn::TurnTransport::Udp,
        username: "xcc".into(),
        password: "secret".into(),
        lifetime: Duration::from_secs(600),
        spares: 2,
    };
    let config = MediaConfig {
        bind_address: "127.0.0.1".parse().unwrap(),
        port_min: 26920,
        port_max: 26929,
        workers: 1,
        quarantine_secs: 0,
        ..MediaConfig::default()
    };
    let (engine, _events) = MediaEngine::start_restoring(config, Some(relay)).unwrap();
    let ctl = engine.control();
    // Absence: the spare thread ran its first refill long before this window ends.
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        assert_eq!(ctl.pool_status().used, 0, "a held spare took a port");
        std::thread::sleep(Duration::from_millis(10));
    }
    ctl.restore_done();
    wait_for(Duration::from_secs(5), || {
        (ctl.pool_status().used == 4).then_some(())
    });
    engine.shutdown();
}
