//! Every way a call ends raises `Ended` and sends its ports to quarantine.

mod media_support;

use std::time::Duration;

use media_support::*;
use xcc_core::ids::LegSide;
use xcc_core::media::{EndReason, MediaEvent};

#[test]
fn silent_call_ends_with_media_timeout() {
    let (engine, events) = engine(26800, 26849, |c| {
        c.media_timeout_secs = 1;
        c.quarantine_secs = 60;
    });
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let (client, pbx) = (Phone::new(), Phone::new());
    ctl.configure_leg(call.call, LegSide::Client, leg_to(&client, None))
        .unwrap();
    ctl.configure_leg(call.call, LegSide::Pbx, leg_to(&pbx, None))
        .unwrap();
    client
        .rtp
        .send_to(&rtp_packet(1, 1, 1), local(call.ports[0].rtp))
        .unwrap();
    assert_eq!(recv(&pbx.rtp).0, rtp_packet(1, 1, 1));
    let MediaEvent::Ended { reason, last, .. } =
        await_ended(&events, call.call, Duration::from_secs(10))
    else {
        unreachable!()
    };
    assert_eq!(reason, EndReason::MediaTimeout);
    assert_eq!(
        last.legs[0].counters.packets_in, 1,
        "final counters travel with the event"
    );
    assert!(last.idle >= Duration::from_secs(1));
    assert!(matches!(
        ctl.snapshot(call.call),
        Err(xcc_core::Error::UnknownCall(_))
    ));
    let st = ctl.pool_status();
    assert_eq!((st.used, st.quarantined), (0, 4));
    engine.shutdown();
}

#[test]
fn release_and_shutdown_both_raise_ended() {
    let (engine, events) = engine(26850, 26899, |_| {});
    let ctl = engine.control();
    let a = ctl.allocate().unwrap();
    let b = ctl.allocate().unwrap();
    ctl.release(a.call).unwrap();
    let MediaEvent::Ended { reason, .. } = await_ended(&events, a.call, Duration::from_secs(5))
    else {
        unreachable!()
    };
    assert_eq!(reason, EndReason::Released);
    assert_eq!(
        ctl.calls().iter().map(|s| s.call).collect::<Vec<_>>(),
        vec![b.call]
    );
    engine.shutdown();
    let MediaEvent::Ended { reason, .. } = await_ended(&events, b.call, Duration::from_secs(5))
    else {
        unreachable!()
    };
    assert_eq!(reason, EndReason::Shutdown);
    assert!(matches!(ctl.allocate(), Err(xcc_core::Error::Stopped)));
    assert_eq!(ctl.pool_status().used, 0);
}

#[test]
fn a_worker_with_more_calls_than_one_tick_chunk_times_out_every_one() {
    // One worker, 70 calls: a tick is spread over iterations of 32 calls (TICK_CHUNK), and a
    // cursor that stopped after the first chunk would leave the others running forever.
    const CALLS: usize = 70;
    let (engine, events) = engine(28400, 28699, |c| {
        c.workers = 1;
        c.media_timeout_secs = 1;
    });
    let ctl = engine.control();
    let mut waiting: std::collections::HashSet<_> =
        (0..CALLS).map(|_| ctl.allocate().unwrap().call).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left) {
            Ok(MediaEvent::Ended { call, reason, .. }) => {
                assert_eq!(reason, EndReason::MediaTimeout, "{call}");
                assert!(
                    waiting.remove(&call),
                    "{call} ended twice or was never allocated"
                );
            }
            Ok(_) => continue,
            Err(e) => panic!("{} of {CALLS} calls never timed out: {e}", waiting.len()),
        }
    }
    assert!(ctl.calls().is_empty());
    engine.shutdown();
}
