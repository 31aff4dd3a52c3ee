//! VoIP-ready limits: hysteresis keeps single spikes and oscillation from flapping, sustained
//! breaches raise one event each way, and the call-record summary says what was broken and for
//! how long. Driven both directly and through a leg monitor fed by an impaired stream.

mod quality_common;

use std::time::{Duration, Instant, UNIX_EPOCH};

use quality_common::*;
use xcc_core::quality::ntp::NtpTime;
use xcc_core::quality::rtcp::ReportBlock;
use xcc_core::quality::{
    LegMonitor, Limit, MonitorConfig, QualityEvent, Sample, VoipEvent, VoipReady, VoipReadyConfig,
};

fn jitter(v: f64) -> Sample {
    Sample {
        jitter_ms: Some(v),
        ..Sample::default()
    }
}

/// Feeds one jitter value per second; returns the events.
fn feed(v: &mut VoipReady, t0: Instant, values: &[f64]) -> Vec<(u64, VoipEvent)> {
    let mut out = Vec::new();
    for (s, &x) in values.iter().enumerate() {
        let now = t0 + Duration::from_secs(s as u64);
        for e in v.handle_sample(now, jitter(x)).into_iter().flatten() {
            out.push((s as u64, e));
        }
    }
    out
}

#[test]
fn a_single_spike_does_not_flap() {
    let mut v = VoipReady::new(VoipReadyConfig::default());
    let t0 = Instant::now();
    let mut values = vec![8.0; 60];
    values[30] = 200.0;
    assert!(feed(&mut v, t0, &values).is_empty());
    assert!(v.summary(t0 + Duration::from_secs(60)).broken().is_empty());
}

#[test]
fn alternating_bad_and_good_samples_never_cross() {
    let mut v = VoipReady::new(VoipReadyConfig::default());
    let values: Vec<f64> = (0..120)
        .map(|s| if s % 2 == 0 { 30.0 } else { 10.0 })
        .collect();
    assert!(feed(&mut v, Instant::now(), &values).is_empty());
}

#[test]
fn sustained_breach_crosses_once_and_recovers_once() {
    let mut v = VoipReady::new(VoipReadyConfig::default());
    let t0 = Instant::now();
    // 10 s fine, 20 s at 30 ms, then a wobble just under the limit (inside the 10 % margin),
    // then 20 s fine.
    let mut values = vec![5.0; 10];
    values.extend([30.0; 20]);
    values.extend([19.0, 25.0, 19.5, 19.0, 19.0, 19.0, 19.0, 19.0]);
    values.extend([5.0; 20]);
    let events = feed(&mut v, t0, &values);
    assert_eq!(events.len(), 2, "{events:?}");
    // Crossed when the first bad sample (t = 10 s) has lasted min_duration (5 s).
    assert_eq!(
        events[0],
        (
            15,
            VoipEvent::LimitCrossed {
                limit: Limit::Jitter,
                value: 30.0
            }
        )
    );
    // Good (<= 18 ms) from t = 38 s; recovered 5 s later; broken from 10 s to 38 s.
    assert_eq!(
        events[1],
        (
            43,
            VoipEvent::LimitRecovered {
                limit: Limit::Jitter,
                value: 5.0,
                broken_for: Duration::from_secs(28)
            }
        )
    );
    let summary = v.summary(t0 + Duration::from_secs(100));
    let rec = summary.of(Limit::Jitter);
    assert_eq!(rec.episodes, 1);
    assert_eq!(rec.broken_for, Duration::from_secs(28));
    assert_eq!(rec.worst, 30.0);
    assert!(summary.broken().contains(Limit::Jitter));
    assert!(!summary.broken().contains(Limit::Loss));
}

#[test]
fn summary_at_hang_up_counts_the_open_episode() {
    let mut v = VoipReady::new(VoipReadyConfig::default());
    let t0 = Instant::now();
    let mut values = vec![5.0; 10];
    values.extend([45.0; 15]);
    feed(&mut v, t0, &values);
    assert!(v.broken_now().contains(Limit::Jitter));
    let summary = v.summary(t0 + Duration::from_secs(30));
    assert_eq!(
        summary.of(Limit::Jitter).broken_for,
        Duration::from_secs(20)
    );
    assert_eq!(summary.of(Limit::Jitter).worst, 45.0);
}

#[test]
fn margin_and_duration_are_configurable() {
    let config = VoipReadyConfig {
        recover_margin: 0.0,
        min_duration: Duration::from_secs(2),
        ..VoipReadyConfig::default()
    };
    let mut v = VoipReady::new(config);
    // 3 s bad crosses after 2 s; 19.5 recovers with no margin after 2 s.
    let events = feed(
        &mut v,
        Instant::now(),
        &[25.0, 25.0, 25.0, 19.5, 19.5, 19.5],
    );
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, 2);
    assert_eq!(events[1].0, 5);
}

fn limits_in(events: &[(Instant, QualityEvent)], crossed: bool) -> Vec<Limit> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            QualityEvent::VoipReady(VoipEvent::LimitCrossed { limit, .. }) if crossed => {
                Some(*limit)
            }
            QualityEvent::VoipReady(VoipEvent::LimitRecovered { limit, .. }) if !crossed => {
                Some(*limit)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn lossy_period_raises_and_clears_the_loss_limit() {
    let t0 = Instant::now();
    let mut rng = rng(30);
    let sender = Sender::pcmu(0x77, 12_345);
    let mut m = LegMonitor::new(MonitorConfig::default(), t0);
    let mut events = Vec::new();
    let clean = Impairment::default();
    let lossy = Impairment {
        loss: 0.10,
        ..Impairment::default()
    };
    // 60 s clean, 20 s at 10 % loss, 40 s clean; 50 packets/s.
    for (range, imp) in [(0..3000, clean), (3000..4000, lossy), (4000..6000, clean)] {
        let (d, _) = sender.run_range(t0, range, imp, &mut rng);
        drive(&mut m, &d, &mut events);
    }
    assert_eq!(limits_in(&events, true), [Limit::Loss]);
    assert_eq!(limits_in(&events, false), [Limit::Loss]);
    let summary = m.summary(t0 + Duration::from_secs(120));
    let rec = summary.voip_ready.of(Limit::Loss);
    assert_eq!(rec.episodes, 1);
    // The lossy period lasted 20 s; evaluation runs once per second.
    let secs = rec.broken_for.as_secs_f64();
    assert!((secs - 20.0).abs() <= 2.0, "broken for {secs} s");
    assert!(rec.worst > 3.0);
    let snap = m.snapshot();
    assert!(snap.broken_now.is_empty());
    assert!(snap.broken_ever.contains(Limit::Loss));
    assert!(
        (snap.loss_percent - 10.0 / 6.0).abs() < 0.5,
        "{}",
        snap.loss_percent
    );
    // No RTT was ever measured: no delay verdicts and no MOS.
    assert_eq!(snap.rtt_ms, None);
    assert_eq!(snap.mos, None);
}

#[test]
fn one_lossy_second_does_not_raise_an_event() {
    let t0 = Instant::now();
    let mut rng = rng(31);
    let sender = Sender::pcmu(0x78, 0);
    let mut m = LegMonitor::new(MonitorConfig::default(), t0);
    let mut events = Vec::new();
    let burst = Impairment {
        loss: 0.5,
        ..Impairment::default()
    };
    for (range, imp) in [
        (0..1500, Impairment::default()),
        (1500..1550, burst),
        (1550..3000, Impairment::default()),
    ] {
        let (d, _) = sender.run_range(t0, range, imp, &mut rng);
        drive(&mut m, &d, &mut events);
    }
    assert!(m.receive().lost() > 10, "the burst did lose packets");
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn network_jitter_raises_the_jitter_limit() {
    let t0 = Instant::now();
    let mut rng = rng(32);
    let sender = Sender::pcmu(0x79, 0);
    let mut m = LegMonitor::new(MonitorConfig::default(), t0);
    let mut events = Vec::new();
    // Uniform 0-90 ms extra delay: mean |D| ~ 30 ms, well over 20 ms.
    let imp = Impairment {
        max_jitter: Duration::from_millis(90),
        ..Impairment::default()
    };
    let (d, _) = sender.run(t0, 1500, imp, &mut rng);
    drive(&mut m, &d, &mut events);
    assert_eq!(limits_in(&events, true), [Limit::Jitter]);
    assert!(m.snapshot().jitter_ms.unwrap() > 20.0);
}

/// One SR/RR exchange per 5 s with the given one-way delay; RTP clean throughout.
fn run_with_delay(m: &mut LegMonitor, t0: Instant, from_s: u64, to_s: u64, one_way_ms: u64) {
    let mut events = Vec::new();
    run_with_delay_events(m, t0, from_s, to_s, one_way_ms, &mut events);
}

fn run_with_delay_events(
    m: &mut LegMonitor,
    t0: Instant,
    from_s: u64,
    to_s: u64,
    one_way_ms: u64,
    events: &mut Vec<(Instant, QualityEvent)>,
) {
    let wall0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let sender = Sender::pcmu(0x80, 0);
    let mut rng = rng(from_s);
    let hold = Duration::from_millis(700);
    for s in (from_s..to_s).step_by(5) {
        // XCC sends an SR at the start of each 5 s; the peer's RR comes back after the network
        // round trip and its own hold time, interleaved with the RTP of that window.
        let sent = t0 + Duration::from_secs(s);
        run_timers(m, sent, events);
        let lsr = NtpTime::from_system_time(wall0 + Duration::from_secs(s)).compact();
        m.record_sr_sent(sent, 0xabcd, lsr);
        let block = ReportBlock {
            reporter: 0x1,
            ssrc: 0xabcd,
            lsr,
            dlsr: xcc_core::quality::ntp::duration_to_compact(hold),
            ..ReportBlock::default()
        };
        let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 1];
        let mut b = [0u8; 24];
        block.write(&mut b);
        rr.extend_from_slice(&b);
        let arrival = sent + hold + Duration::from_millis(2 * one_way_ms);
        let end = (s + 5).min(to_s);
        let (d, _) = sender.run_range(t0, s * 50..end * 50, Impairment::default(), &mut rng);
        let split = d.partition_point(|x| x.at < arrival);
        drive(m, &d[..split], events);
        run_timers(m, arrival, events);
        m.handle_rtcp(arrival, &rr).unwrap();
        drive(m, &d[split..], events);
    }
    run_timers(m, t0 + Duration::from_secs(to_s), events);
}

#[test]
fn long_delay_breaks_delay_limits_and_lowers_mos() {
    let t0 = Instant::now();
    let mut m = LegMonitor::new(MonitorConfig::default(), t0);
    let mut events = Vec::new();
    // 30 s at 20 ms one way, 30 s at 120 ms (RTT 240 ms), 30 s back at 20 ms.
    run_with_delay_events(&mut m, t0, 0, 30, 20, &mut events);
    let good = m.snapshot();
    assert!((good.rtt_ms.unwrap() - 40.0).abs() < 0.1);
    let good_mos = good.mos.unwrap();
    assert!(good_mos > 4.3, "{good_mos}");
    run_with_delay_events(&mut m, t0, 30, 60, 120, &mut events);
    let bad = m.snapshot();
    assert!((bad.one_way_delay_ms.unwrap() - 120.0).abs() < 0.1);
    assert!(bad.mos.unwrap() < good_mos);
    assert!(bad.broken_now.contains(Limit::OneWayDelay));
    assert!(bad.broken_now.contains(Limit::RoundTrip));
    run_with_delay_events(&mut m, t0, 60, 90, 20, &mut events);
    let after = m.snapshot();
    assert!(after.broken_now.is_empty());
    let mut crossed = limits_in(&events, true);
    crossed.sort_by_key(|l| l.index());
    assert_eq!(crossed, [Limit::OneWayDelay, Limit::RoundTrip]);
    assert_eq!(limits_in(&events, false).len(), 2);
    // min <= avg <= max, and min is the bad period's score.
    let (min, avg) = (after.mos_min.unwrap(), after.mos_avg.unwrap());
    assert!((min - bad.mos.unwrap()).abs() < 1e-9);
    assert!(min < avg && avg < good_mos + 1e-9);
}

#[test]
fn stale_rtt_stops_counting() {
    let t0 = Instant::now();
    let config = MonitorConfig {
        rtt_max_age: Duration::from_secs(10),
        ..MonitorConfig::default()
    };
    let mut m = LegMonitor::new(config, t0);
    run_with_delay(&mut m, t0, 0, 5, 20);
    assert!(m.snapshot().rtt_ms.is_some());
    // 20 s more RTP and no RTCP: the old RTT must not keep feeding the MOS.
    let sender = Sender::pcmu(0x80, 0);
    let mut rng = rng(99);
    let (d, _) = sender.run_range(t0, 250..1250, Impairment::default(), &mut rng);
    let mut events = Vec::new();
    drive(&mut m, &d, &mut events);
    let s = m.snapshot();
    assert_eq!(s.rtt_ms, None);
    assert_eq!(s.mos, None);
    assert!(s.mos_min.is_some(), "history keeps the earlier scores");
}

/// Seeded model check: for random sample streams (values around every limit, gaps of unknown
/// values, irregular sampling), events per limit strictly alternate crossed / recovered, the
/// summary counts one episode per crossing, and no episode is shorter than the debounce.
#[test]
fn random_samples_alternate_events_and_match_the_summary() {
    use rand::Rng;
    let mut rng = rng(33);
    for _ in 0..200 {
        let config = VoipReadyConfig {
            min_duration: Duration::from_millis(rng.random_range(0..4000)),
            recover_margin: rng.random_range(0.0..0.3),
            ..VoipReadyConfig::default()
        };
        let mut v = VoipReady::new(config);
        let t0 = Instant::now();
        let mut now = t0;
        let mut open = [false; 4];
        let mut crossings = [0u32; 4];
        for _ in 0..500 {
            now += Duration::from_millis(rng.random_range(200..2000));
            let mut pick = |limit: f64| {
                rng.random_bool(0.9)
                    .then(|| limit * rng.random_range(0.5..1.5))
            };
            let sample = Sample {
                one_way_delay_ms: pick(50.0),
                round_trip_ms: pick(150.0),
                loss_percent: pick(3.0),
                jitter_ms: pick(20.0),
            };
            for e in v.handle_sample(now, sample).into_iter().flatten() {
                match e {
                    VoipEvent::LimitCrossed { limit, value } => {
                        assert!(!open[limit.index()], "crossed twice");
                        assert!(value > config.limits.of(limit));
                        open[limit.index()] = true;
                        crossings[limit.index()] += 1;
                    }
                    VoipEvent::LimitRecovered {
                        limit, broken_for, ..
                    } => {
                        assert!(open[limit.index()], "recovered while not broken");
                        assert!(broken_for >= config.min_duration);
                        open[limit.index()] = false;
                    }
                }
            }
            for l in Limit::ALL {
                assert_eq!(v.broken_now().contains(l), open[l.index()]);
            }
        }
        let summary = v.summary(now);
        for l in Limit::ALL {
            assert_eq!(summary.of(l).episodes, crossings[l.index()]);
        }
    }
}
