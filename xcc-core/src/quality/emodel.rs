//! E-model MOS estimate (ITU-T G.107, simplified).
//!
//! The full E-model needs codec impairment factors, echo and loudness ratings XCC does not know.
//! Like rtpengine (and PingPlotter, Twilio and baresip, which use the same form) XCC uses the
//! simplified model, so figures from both relays compare directly:
//!
//! ```text
//! effective latency  Le = RTT + 2 * jitter + 10            (ms; 10 ms stands for codec delay)
//! R = 93.2 - Le / 40            if Le < 160
//! R = 93.2 - (Le - 120) / 10    otherwise
//! R = R - 2.5 * loss%
//! MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R)   (G.107 Annex B; 1 below R = 0, 4.5 above 100)
//! ```
//!
//! 93.2 is G.107's default R for G.711 with no impairment. The delay term takes the *round-trip*
//! time as rtpengine does (its "MOS-CQ", fed the end-to-end RTT); a one-way figure would need
//! `2 * one_way`. Without an RTT the model has no delay input, and [`score`] returns `None` rather
//! than guessing one.

use std::time::Duration;

/// Inputs of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmodelInput {
    /// Round-trip time of the path being scored.
    pub rtt: Duration,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Packet loss, percent (0-100).
    pub loss_percent: f64,
}

/// The model's output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Transmission rating factor R (may be negative on a hopeless path).
    pub r_factor: f64,
    /// Mean opinion score, 1.0-4.5.
    pub mos: f64,
}

/// Scores a path; `None` when the RTT is unknown (the model cannot be fed honestly without it).
pub fn score(rtt: Option<Duration>, jitter_ms: f64, loss_percent: f64) -> Option<Score> {
    rtt.map(|rtt| {
        score_input(EmodelInput {
            rtt,
            jitter_ms,
            loss_percent,
        })
    })
}

/// Scores a path whose RTT is known.
pub fn score_input(input: EmodelInput) -> Score {
    // NaN or negative inputs (a broken report) are treated as 0 so they cannot poison averages.
    let jitter = finite_non_negative(input.jitter_ms);
    let loss = finite_non_negative(input.loss_percent).min(100.0);
    let latency = input.rtt.as_secs_f64() * 1000.0 + 2.0 * jitter + 10.0;
    let r = if latency < 160.0 {
        93.2 - latency / 40.0
    } else {
        93.2 - (latency - 120.0) / 10.0
    } - 2.5 * loss;
    Score {
        r_factor: r,
        mos: mos_from_r(r),
    }
}

/// G.107 Annex B mapping from R to MOS (clamped to 1.0-4.5 as the Recommendation states).
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        return 1.0;
    }
    if r >= 100.0 {
        return 4.5;
    }
    let mos = 1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r);
    mos.clamp(1.0, 4.5)
}

fn finite_non_negative(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 { v } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rtt_no_mos() {
        assert_eq!(score(None, 0.0, 0.0), None);
    }

    #[test]
    fn garbage_inputs_do_not_poison() {
        let s = score_input(EmodelInput {
            rtt: Duration::ZERO,
            jitter_ms: f64::NAN,
            loss_percent: -3.0,
        });
        assert!((s.r_factor - 92.95).abs() < 1e-9);
        assert_eq!(mos_from_r(f64::NAN), 1.0);
    }
}
