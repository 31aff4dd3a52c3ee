//! Receive statistics against a seeded, impaired synthetic stream on a virtual clock: the measured
//! loss, duplicates, reordering and jitter match the ground truth the network model recorded.

mod quality_common;

use std::time::{Duration, Instant};

use quality_common::*;
use rand::Rng;
use xcc_core::quality::{ClockRates, ReceiveStats, RtpArrival, SeqClass};

fn feed(stats: &mut ReceiveStats, rates: &ClockRates, deliveries: &[Delivery]) {
    for d in deliveries {
        stats.handle_rtp(d.at, d.pkt, rates);
    }
}

#[test]
fn random_loss_is_measured_exactly() {
    let mut rng = rng(1);
    let sender = Sender::pcmu(0xabc, 1000);
    let imp = Impairment {
        loss: 0.05,
        ..Impairment::default()
    };
    let (deliveries, truth) = sender.run(Instant::now(), 20_000, imp, &mut rng);
    let mut stats = ReceiveStats::new();
    feed(&mut stats, &ClockRates::default(), &deliveries);

    let (expected, lost) = expected_loss(&deliveries, &truth, sender.first_seq);
    assert_eq!(stats.expected(), expected);
    assert_eq!(stats.lost(), lost as i64);
    // And the statistic is what the network did: 5 % +- 0.5 point over 20k packets.
    assert!(
        (stats.loss_percent() - 5.0).abs() < 0.5,
        "{}",
        stats.loss_percent()
    );
    assert_eq!(stats.duplicates(), 0);
    assert_eq!(stats.reordered(), 0);
}

#[test]
fn duplicates_are_counted_and_do_not_mask_loss() {
    let mut rng = rng(2);
    let sender = Sender::pcmu(0xabc, 40_000);
    let imp = Impairment {
        loss: 0.02,
        duplicate: 0.03,
        ..Impairment::default()
    };
    let (deliveries, truth) = sender.run(Instant::now(), 10_000, imp, &mut rng);
    assert!(truth.duplicates > 200);
    let mut stats = ReceiveStats::new();
    feed(&mut stats, &ClockRates::default(), &deliveries);

    let (expected, lost) = expected_loss(&deliveries, &truth, sender.first_seq);
    // A duplicate of the very first packet falls in probation and is not classified.
    let dup_of_first = u64::from(deliveries[1].pkt.seq == deliveries[0].pkt.seq);
    assert_eq!(stats.duplicates(), truth.duplicates - dup_of_first);
    assert_eq!(stats.expected(), expected);
    assert_eq!(
        stats.lost(),
        lost as i64,
        "duplicates would hide loss if counted"
    );
}

#[test]
fn swapped_packets_count_as_reordered_not_lost() {
    let mut rng = rng(3);
    let sender = Sender::pcmu(7, 500);
    let imp = Impairment {
        swap: 0.05,
        ..Impairment::default()
    };
    let (deliveries, truth) = sender.run(Instant::now(), 10_000, imp, &mut rng);
    assert!(truth.swaps > 300);
    let mut stats = ReceiveStats::new();
    feed(&mut stats, &ClockRates::default(), &deliveries);

    // A swap at the very start delays validation; every later swap is one late packet.
    let (expected, lost) = expected_loss(&deliveries, &truth, sender.first_seq);
    assert_eq!(lost, 0);
    assert_eq!(stats.lost(), 0);
    assert_eq!(stats.expected(), expected);
    let early = u64::from(deliveries[0].pkt.seq != sender.first_seq);
    assert_eq!(stats.reordered(), truth.swaps - early);
}

/// Mean of the running jitter estimate sampled once per packet after a warm-up.
fn mean_jitter_ms(sender: Sender, imp: Impairment, rates: &ClockRates, seed: u64) -> f64 {
    let mut rng = rng(seed);
    let (deliveries, _) = sender.run(Instant::now(), 30_000, imp, &mut rng);
    let mut stats = ReceiveStats::new();
    let mut sum = 0.0;
    let mut n = 0u32;
    for (i, d) in deliveries.iter().enumerate() {
        stats.handle_rtp(d.at, d.pkt, rates);
        if i >= 1000 {
            sum += stats.jitter_ms().expect("clock rate known");
            n += 1;
        }
    }
    sum / f64::from(n)
}

/// With one-way delay uniform in [0, D] and no reordering (D < ptime), consecutive transit
/// differences are |X - Y| for independent uniforms, whose mean is D / 3; the A.8 estimator is a
/// running mean of exactly that.
#[test]
fn jitter_matches_uniform_delay_model_for_pcmu() {
    let imp = Impairment {
        max_jitter: Duration::from_millis(15),
        base_delay: Duration::from_millis(40),
        ..Impairment::default()
    };
    let j = mean_jitter_ms(Sender::pcmu(1, 0), imp, &ClockRates::default(), 4);
    assert!((j - 5.0).abs() < 0.25, "jitter {j} ms, model 5 ms");
}

#[test]
fn jitter_in_ms_uses_the_dynamic_clock_rate_of_opus() {
    let imp = Impairment {
        max_jitter: Duration::from_millis(15),
        ..Impairment::default()
    };
    let opus = Sender {
        pt: 111,
        rate: 48_000,
        ..Sender::pcmu(2, 0)
    };
    let mut rates = ClockRates::default();
    rates.set(111, 48_000).unwrap();
    let j = mean_jitter_ms(opus, imp, &rates, 5);
    assert!((j - 5.0).abs() < 0.25, "jitter {j} ms, model 5 ms");
}

#[test]
fn unknown_dynamic_clock_rate_reports_no_jitter() {
    let mut rng = rng(6);
    let opus = Sender {
        pt: 111,
        rate: 48_000,
        ..Sender::pcmu(2, 0)
    };
    let (deliveries, _) = opus.run(Instant::now(), 100, Impairment::default(), &mut rng);
    let mut stats = ReceiveStats::new();
    feed(&mut stats, &ClockRates::default(), &deliveries);
    assert_eq!(stats.jitter_ms(), None);
    assert_eq!(stats.expected(), 99);
}

#[test]
fn constant_delay_has_zero_jitter() {
    let mut rng = rng(7);
    let imp = Impairment {
        base_delay: Duration::from_millis(123),
        ..Impairment::default()
    };
    let (deliveries, _) = Sender::pcmu(3, 9).run(Instant::now(), 1000, imp, &mut rng);
    let mut stats = ReceiveStats::new();
    feed(&mut stats, &ClockRates::default(), &deliveries);
    assert_eq!(stats.jitter(), 0);
    assert_eq!(stats.jitter_ms(), Some(0.0));
}

#[test]
fn sequence_wrap_extends_the_highest_sequence() {
    let mut rng = rng(8);
    let sender = Sender::pcmu(4, 65_000);
    let imp = Impairment {
        loss: 0.01,
        swap: 0.01,
        ..Impairment::default()
    };
    let (deliveries, truth) = sender.run(Instant::now(), 3000, imp, &mut rng);
    let mut stats = ReceiveStats::new();
    feed(&mut stats, &ClockRates::default(), &deliveries);
    let (expected, lost) = expected_loss(&deliveries, &truth, sender.first_seq);
    assert!(stats.extended_max() > 65_535, "wrapped once");
    assert_eq!(
        stats.extended_max(),
        65_536
            + u64::from(
                deliveries
                    .iter()
                    .map(|d| d.pkt.seq)
                    .filter(|&s| s < 10_000)
                    .max()
                    .unwrap()
            )
    );
    assert_eq!(stats.expected(), expected);
    assert_eq!(stats.lost(), lost as i64);
}

#[test]
fn ssrc_change_starts_a_new_epoch_and_keeps_totals() {
    let mut rng = rng(9);
    let t0 = Instant::now();
    let a = Sender::pcmu(0xaaaa, 100);
    let b = Sender::pcmu(0xbbbb, 50_000);
    let (first, _) = a.run(t0, 500, Impairment::default(), &mut rng);
    let (second, _) = b.run(
        t0 + Duration::from_secs(10),
        500,
        Impairment::default(),
        &mut rng,
    );
    let mut stats = ReceiveStats::new();
    let rates = ClockRates::default();
    feed(&mut stats, &rates, &first);
    feed(&mut stats, &rates, &second);
    assert_eq!(stats.ssrc(), Some(0xbbbb));
    assert_eq!(stats.ssrc_changes(), 1);
    // 499 counted of each stream (the first of each is on probation), no phantom loss from the
    // sequence jump between them.
    assert_eq!(stats.expected(), 998);
    assert_eq!(stats.received(), 998);
    assert_eq!(stats.lost(), 0);
}

#[test]
fn a_single_stray_jump_is_ignored() {
    let rates = ClockRates::default();
    let t = Instant::now();
    let s = Sender::pcmu(5, 0);
    let mut stats = ReceiveStats::new();
    for i in 0..100 {
        stats.handle_rtp(t, s.packet(i), &rates);
    }
    let stray = RtpArrival {
        seq: 30_000,
        ..s.packet(0)
    };
    assert_eq!(stats.handle_rtp(t, stray, &rates), SeqClass::Jump);
    for i in 100..200 {
        stats.handle_rtp(t, s.packet(i), &rates);
    }
    assert_eq!(
        (stats.expected(), stats.lost(), stats.restarts()),
        (199, 0, 0)
    );
}

#[test]
fn two_sequential_packets_after_a_jump_resynchronise() {
    let rates = ClockRates::default();
    let t = Instant::now();
    let s = Sender::pcmu(5, 0);
    let mut stats = ReceiveStats::new();
    for i in 0..100 {
        stats.handle_rtp(t, s.packet(i), &rates);
    }
    // The sender restarted its sequence space 20000 ahead without changing SSRC.
    for i in 20_000..20_100 {
        stats.handle_rtp(t, s.packet(i), &rates);
    }
    assert_eq!(stats.restarts(), 1);
    // 99 of the old epoch plus 99 of the new (the jump's first packet only armed the restart).
    assert_eq!((stats.expected(), stats.lost()), (198, 0));
}

/// Seeded model check: arbitrary sequence behaviour (steps, gaps, back-steps, huge jumps,
/// duplicates, SSRC flips, timestamp chaos) never panics and keeps the A.3 invariants.
#[test]
fn random_sequences_keep_the_counting_invariants() {
    let mut rng = rng(10);
    let rates = ClockRates::default();
    let t0 = Instant::now();
    for round in 0..200u64 {
        let mut stats = ReceiveStats::new();
        let mut seq: u16 = rng.random();
        let mut ssrc = 1u32;
        let mut at = t0;
        for _ in 0..2000 {
            let step: i32 = match rng.random_range(0..100) {
                0..=79 => 1,
                80..=87 => rng.random_range(2..50),
                88..=93 => -rng.random_range(0..120),
                94..=96 => rng.random_range(0..65_536),
                _ => {
                    ssrc ^= 1;
                    1
                }
            };
            seq = seq.wrapping_add(step as u16);
            at += Duration::from_micros(rng.random_range(0..60_000));
            let pkt = RtpArrival {
                ssrc,
                seq,
                timestamp: rng.random(),
                payload_type: rng.random_range(0..128),
            };
            stats.handle_rtp(at, pkt, &rates);
            assert!(stats.received() <= stats.expected(), "round {round}");
            assert!(stats.lost() >= 0);
            assert!((0.0..=100.0).contains(&stats.loss_percent()));
        }
    }
}

/// The integer estimator (scaled by 16) tracks RFC 3550 A.8's floating-point definition,
/// J += (|D| - J) / 16, on a stream whose jitter exceeds the packet interval (so it reorders).
#[test]
fn integer_jitter_tracks_the_rfc_float_formula() {
    let mut rng = rng(11);
    let t0 = Instant::now();
    let imp = Impairment {
        max_jitter: Duration::from_millis(70),
        ..Impairment::default()
    };
    let (deliveries, _) = Sender::pcmu(12, 100).run(t0, 5000, imp, &mut rng);
    let rates = ClockRates::default();
    let mut stats = ReceiveStats::new();
    let mut reference = 0.0f64;
    let mut prev_transit: Option<f64> = None;
    let mut worst = 0.0f64;
    for d in &deliveries {
        let class = stats.handle_rtp(d.at, d.pkt, &rates);
        if !matches!(class, SeqClass::InOrder { .. } | SeqClass::Reordered) {
            continue;
        }
        let arrival = d.at.duration_since(t0).as_secs_f64() * 8000.0;
        let transit = arrival - f64::from(d.pkt.timestamp);
        if let Some(p) = prev_transit {
            reference += ((transit - p).abs() - reference) / 16.0;
        }
        prev_transit = Some(transit);
        worst = worst.max((f64::from(stats.jitter()) - reference).abs());
    }
    assert!(stats.reordered() > 100, "the stream did reorder");
    // Arrival is truncated to whole RTP units and J to an integer: within 2 units (0.25 ms).
    assert!(
        worst <= 2.0,
        "integer estimator strayed {worst} units from the float one"
    );
    assert!(reference > 100.0, "jitter was substantial: {reference}");
}
