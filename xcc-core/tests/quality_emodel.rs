//! E-model against worked examples: G.107 Annex B's R-to-MOS points, and inputs worked through
//! the simplified model by hand (the same figures baresip publishes for its identical model).

use std::time::Duration;

use xcc_core::quality::emodel::{self, EmodelInput};

fn input(rtt_ms: u64, jitter_ms: f64, loss_percent: f64) -> EmodelInput {
    EmodelInput {
        rtt: Duration::from_millis(rtt_ms),
        jitter_ms,
        loss_percent,
    }
}

#[test]
fn g107_annex_b_r_to_mos_points() {
    // G.107 Annex B: MOS = 1 + 0.035 R + 7e-6 R (R - 60)(100 - R).
    for (r, mos) in [
        (50.0, 2.575),
        (60.0, 3.1),
        (70.0, 3.597),
        (80.0, 4.024),
        (90.0, 4.339),
    ] {
        assert!((emodel::mos_from_r(r) - mos).abs() < 1e-9, "R {r}");
    }
    assert_eq!(emodel::mos_from_r(100.0), 4.5);
    assert_eq!(emodel::mos_from_r(130.0), 4.5);
    assert_eq!(emodel::mos_from_r(0.0), 1.0);
    assert_eq!(emodel::mos_from_r(-20.0), 1.0);
    // Just above 0 the polynomial dips under 1: G.107 keeps MOS at 1.
    assert_eq!(emodel::mos_from_r(3.0), 1.0);
}

#[test]
fn worked_examples_of_the_simplified_model() {
    // (rtt ms, jitter ms, loss %) -> (R, MOS), Le = rtt + 2 jitter + 10.
    let cases = [
        // Le 10: R = 93.2 - 10/40 = 92.95.
        (input(0, 0.0, 0.0), 92.95, 4.404),
        // Le 510: R = 93.2 - 390/10 = 54.2.
        (input(500, 0.0, 0.0), 54.2, 2.796),
        // Le 210: R = 93.2 - 90/10 = 84.2.
        (input(0, 100.0, 0.0), 84.2, 4.172),
        // Le 410: R = 93.2 - 290/10 = 64.2.
        (input(0, 200.0, 0.0), 64.2, 3.315),
        // Le 10, 1 % loss: R = 92.95 - 2.5 = 90.45.
        (input(0, 0.0, 1.0), 90.45, 4.350),
        // At every VoIP-ready limit at once: Le 200, R = 93.2 - 8 - 7.5 = 77.7.
        (input(150, 20.0, 3.0), 77.7, 3.934),
        // A good satellite leg: Le 60, R = 93.2 - 1.5 - 2.5 = 89.2.
        (input(40, 5.0, 1.0), 89.2, 4.319),
    ];
    for (i, r, mos) in cases {
        let s = emodel::score_input(i);
        assert!((s.r_factor - r).abs() < 1e-9, "{i:?}: R {}", s.r_factor);
        assert!((s.mos - mos).abs() < 0.0005, "{i:?}: MOS {}", s.mos);
    }
}

#[test]
fn low_delay_clean_path_scores_about_4_4() {
    let s = emodel::score(Some(Duration::from_millis(20)), 2.0, 0.0).unwrap();
    assert!((4.38..4.41).contains(&s.mos), "{}", s.mos);
}

#[test]
fn unknown_rtt_gives_no_score() {
    assert_eq!(emodel::score(None, 5.0, 1.0), None);
}

#[test]
fn mos_falls_with_every_impairment() {
    let base = emodel::score_input(input(50, 5.0, 0.5)).mos;
    assert!(emodel::score_input(input(250, 5.0, 0.5)).mos < base);
    assert!(emodel::score_input(input(50, 40.0, 0.5)).mos < base);
    assert!(emodel::score_input(input(50, 5.0, 5.0)).mos < base);
    // Monotonic along the delay axis, across the 160 ms knee.
    let mut prev = f64::INFINITY;
    for rtt in (0..2000).step_by(10) {
        let m = emodel::score_input(input(rtt, 0.0, 0.0)).mos;
        assert!(m <= prev, "rtt {rtt}");
        prev = m;
    }
    // A hopeless path bottoms out at 1, not below.
    assert_eq!(emodel::score_input(input(0, 0.0, 100.0)).mos, 1.0);
}

#[test]
fn call_score_adds_leg_rtts_and_compounds_loss() {
    use xcc_core::quality::{QualitySnapshot, call_score};
    let client = QualitySnapshot {
        rtt_ms: Some(40.0),
        judged_loss_percent: Some(1.0),
        judged_jitter_ms: Some(5.0),
        ..QualitySnapshot::default()
    };
    let pbx = QualitySnapshot {
        rtt_ms: Some(60.0),
        judged_loss_percent: Some(2.0),
        judged_jitter_ms: Some(10.0),
        ..QualitySnapshot::default()
    };
    // RTT 100 ms, loss 1 - 0.99 * 0.98 = 2.98 %, jitter 10 ms: Le = 130,
    // R = 93.2 - 130/40 - 2.5 * 2.98 = 82.5.
    let s = call_score(&[client, pbx]).unwrap();
    assert!((s.r_factor - 82.5).abs() < 1e-9, "{}", s.r_factor);
    let no_rtt = QualitySnapshot {
        rtt_ms: None,
        ..pbx
    };
    assert_eq!(call_score(&[client, no_rtt]), None);
}
