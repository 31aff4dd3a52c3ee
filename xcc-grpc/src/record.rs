//! Quality on the wire and the call record: the `LegQuality`, `QualityAlert` and `CallRecord`
//! messages, and the record's one-line JSON form for the log (target [`CDR_TARGET`]).
//!
//! The proto message is the one source of truth; the JSON line is derived from it so the feed and
//! the log can never disagree.

use std::time::SystemTime;

use serde_json::{Value, json};
use xcc_core::ids::LegSide;
use xcc_core::media::{CallQuality, CallSnapshot, EndReason};
use xcc_core::quality::{Limit, LimitSet, QualityEvent, QualitySnapshot, VoipEvent};

use crate::events::unix_ms;
use crate::pb;
use crate::service::{counters_to_pb, side_to_pb};

/// `tracing` target of the call-record log line, so operators can route records (journald
/// `SYSLOG_IDENTIFIER`-style filters, `RUST_LOG=xcc::cdr=info`) apart from diagnostics.
pub const CDR_TARGET: &str = "xcc::cdr";

/// Core limit to proto limit.
pub fn limit_to_pb(limit: Limit) -> pb::VoipLimit {
    match limit {
        Limit::OneWayDelay => pb::VoipLimit::OneWayDelay,
        Limit::RoundTrip => pb::VoipLimit::RoundTrip,
        Limit::Loss => pb::VoipLimit::Loss,
        Limit::Jitter => pb::VoipLimit::Jitter,
    }
}

/// Stable lower-case name of a limit, for logs, JSON and metric labels.
pub fn limit_name(limit: Limit) -> &'static str {
    match limit {
        Limit::OneWayDelay => "one_way_delay",
        Limit::RoundTrip => "round_trip",
        Limit::Loss => "loss",
        Limit::Jitter => "jitter",
    }
}

fn limits_to_pb(set: LimitSet) -> Vec<i32> {
    set.iter().map(|l| limit_to_pb(l) as i32).collect()
}

/// The wire form of a leg's quality snapshot.
pub fn quality_to_pb(q: &QualitySnapshot) -> pb::LegQuality {
    pb::LegQuality {
        expected: q.expected,
        received: q.received,
        lost: q.lost,
        loss_percent: q.loss_percent,
        interval_loss_percent: q.interval_loss_percent,
        duplicates: q.duplicates,
        reordered: q.reordered,
        jitter_ms: q.jitter_ms,
        peer_loss_percent: q.peer.map(|p| p.fraction_lost_percent),
        peer_jitter_ms: q.peer.and_then(|p| p.jitter_ms),
        rtt_ms: q.rtt_ms,
        one_way_delay_ms: q.one_way_delay_ms,
        mos: q.mos,
        mos_min: q.mos_min,
        mos_avg: q.mos_avg,
        r_factor: q.r_factor,
        broken_now: limits_to_pb(q.broken_now),
        broken_ever: limits_to_pb(q.broken_ever),
        voip_ready: q.broken_now.is_empty(),
    }
}

/// The wire form of a VoIP-ready crossing or recovery.
pub fn alert_to_pb(side: LegSide, event: &QualityEvent, threshold: f64) -> pb::QualityAlert {
    let QualityEvent::VoipReady(event) = event;
    let (limit, kind, value, broken_ms) = match *event {
        VoipEvent::LimitCrossed { limit, value } => {
            (limit, pb::quality_alert::Kind::Crossed, value, 0)
        }
        VoipEvent::LimitRecovered {
            limit,
            value,
            broken_for,
        } => (
            limit,
            pb::quality_alert::Kind::Recovered,
            value,
            u64::try_from(broken_for.as_millis()).unwrap_or(u64::MAX),
        ),
    };
    pb::QualityAlert {
        side: side_to_pb(side) as i32,
        limit: limit_to_pb(limit) as i32,
        kind: kind as i32,
        value,
        threshold,
        broken_ms,
    }
}

/// Proto end reason.
pub fn reason_to_pb(reason: EndReason) -> pb::call_ended::Reason {
    match reason {
        EndReason::Released => pb::call_ended::Reason::Released,
        EndReason::MediaTimeout => pb::call_ended::Reason::MediaTimeout,
        EndReason::Shutdown => pb::call_ended::Reason::Shutdown,
    }
}

/// What the control plane knows of a finished call besides the media plane's view.
#[derive(Debug, Clone, Copy)]
pub struct RecordTimes {
    /// When the call was answered (offer/answer completed), if ever.
    pub answered: Option<SystemTime>,
    /// When it ended.
    pub ended: SystemTime,
}

/// Builds the record of a finished call from its last snapshot and quality summary.
pub fn call_record(
    last: &CallSnapshot,
    reason: EndReason,
    quality: &CallQuality,
    times: RecordTimes,
) -> pb::CallRecord {
    let start = unix_ms(last.created);
    let end = unix_ms(times.ended).max(start);
    let answer = times.answered.map(unix_ms).map(|a| a.clamp(start, end));
    let leg = |side: LegSide| {
        let i = side.index();
        let summary = &quality.legs[i];
        let breaches = Limit::ALL
            .iter()
            .filter_map(|&l| {
                let r = summary.voip_ready.of(l);
                (r.episodes > 0).then(|| pb::LimitBreach {
                    limit: limit_to_pb(l) as i32,
                    episodes: r.episodes,
                    broken_ms: u64::try_from(r.broken_for.as_millis()).unwrap_or(u64::MAX),
                    worst: r.worst,
                })
            })
            .collect();
        pb::LegRecord {
            side: side_to_pb(side) as i32,
            counters: Some(counters_to_pb(&last.legs[i].counters)),
            quality: Some(quality_to_pb(&summary.last)),
            breaches,
            rtcp_received: summary.rtcp_received,
        }
    };
    pb::CallRecord {
        call_id: last.call.0,
        start_unix_ms: start,
        answer_unix_ms: answer.unwrap_or(0),
        end_unix_ms: end,
        duration_ms: end - start,
        talk_ms: answer.map_or(0, |a| end - a),
        reason: reason_to_pb(reason) as i32,
        client: Some(leg(LegSide::Client)),
        pbx: Some(leg(LegSide::Pbx)),
        mos: quality.mos,
        r_factor: quality.r_factor,
    }
}

fn limit_name_pb(v: i32) -> &'static str {
    match pb::VoipLimit::try_from(v) {
        Ok(pb::VoipLimit::OneWayDelay) => "one_way_delay",
        Ok(pb::VoipLimit::RoundTrip) => "round_trip",
        Ok(pb::VoipLimit::Loss) => "loss",
        Ok(pb::VoipLimit::Jitter) => "jitter",
        _ => "unknown",
    }
}

fn names(limits: &[i32]) -> Vec<&'static str> {
    limits.iter().map(|&l| limit_name_pb(l)).collect()
}

fn counters_json(c: &pb::LegCounters) -> Value {
    json!({
        "packets_in": c.packets_in, "bytes_in": c.bytes_in,
        "packets_out": c.packets_out, "bytes_out": c.bytes_out,
        "rtcp_in": c.rtcp_in, "rtcp_out": c.rtcp_out, "rtcp_malformed": c.rtcp_malformed,
        "drops": {
            "auth_failure": c.drop_auth_failure, "replay": c.drop_replay,
            "stranger": c.drop_stranger, "malformed": c.drop_malformed,
            "no_route": c.drop_no_route, "stray": c.drop_stray, "send_error": c.drop_send_error,
        },
    })
}

/// JSON form of a leg's quality (absent values are `null`, never a guess).
pub fn quality_json(q: &pb::LegQuality) -> Value {
    json!({
        "expected": q.expected, "received": q.received, "lost": q.lost,
        "loss_percent": q.loss_percent, "duplicates": q.duplicates, "reordered": q.reordered,
        "jitter_ms": q.jitter_ms, "peer_loss_percent": q.peer_loss_percent,
        "peer_jitter_ms": q.peer_jitter_ms, "rtt_ms": q.rtt_ms,
        "one_way_delay_ms": q.one_way_delay_ms, "mos": q.mos, "mos_min": q.mos_min,
        "mos_avg": q.mos_avg, "r_factor": q.r_factor,
        "broken_ever": names(&q.broken_ever),
    })
}

fn leg_json(l: &pb::LegRecord) -> Value {
    let breaches: Vec<Value> = l
        .breaches
        .iter()
        .map(|b| {
            json!({
                "limit": limit_name_pb(b.limit), "episodes": b.episodes,
                "broken_ms": b.broken_ms, "worst": b.worst,
            })
        })
        .collect();
    json!({
        "counters": l.counters.as_ref().map(counters_json),
        "quality": l.quality.as_ref().map(quality_json),
        "rtcp_received": l.rtcp_received,
        "breaches": breaches,
    })
}

/// The record as one JSON object (the `xcc::cdr` log line).
pub fn record_json(r: &pb::CallRecord) -> Value {
    let reason = match pb::call_ended::Reason::try_from(r.reason) {
        Ok(pb::call_ended::Reason::Released) => "released",
        Ok(pb::call_ended::Reason::MediaTimeout) => "media_timeout",
        Ok(pb::call_ended::Reason::Shutdown) => "shutdown",
        _ => "unspecified",
    };
    json!({
        "call_id": r.call_id,
        "start_unix_ms": r.start_unix_ms,
        "answer_unix_ms": (r.answer_unix_ms != 0).then_some(r.answer_unix_ms),
        "end_unix_ms": r.end_unix_ms,
        "duration_ms": r.duration_ms,
        "talk_ms": r.talk_ms,
        "reason": reason,
        "mos": r.mos,
        "r_factor": r.r_factor,
        "client": r.client.as_ref().map(leg_json),
        "pbx": r.pbx.as_ref().map(leg_json),
    })
}

/// Logs the record as one line on [`CDR_TARGET`]: the message is the JSON object itself, so a
/// text-format log line ends in parseable JSON and a JSON-format log carries it in `message`.
/// The call's id is in the JSON (and in the enclosing `call` span); no other field follows the
/// message, so the line ends in the object.
pub fn log_record(r: &pb::CallRecord) {
    let line = record_json(r).to_string();
    tracing::info!(target: CDR_TARGET, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use xcc_core::ids::CallId;
    use xcc_core::media::{LegCounters, LegPorts, LegSnapshot};
    use xcc_core::quality::{LegQualitySummary, LimitRecord, VoipSummary};

    fn snapshot(created: SystemTime) -> CallSnapshot {
        let leg = |side| LegSnapshot {
            side,
            local_rtp: "127.0.0.1:30000".parse().unwrap(),
            ports: LegPorts {
                rtp: 30000,
                rtcp: 30001,
            },
            signalled: None,
            latched: None,
            latched_rtcp: None,
            srtp_suite: None,
            direction: Default::default(),
            counters: LegCounters {
                packets_in: 10,
                ..Default::default()
            },
            quality: QualitySnapshot::default(),
        };
        CallSnapshot {
            call: CallId(9),
            created,
            idle: Duration::ZERO,
            legs: [leg(LegSide::Client), leg(LegSide::Pbx)],
        }
    }

    #[test]
    fn record_has_times_breaches_and_json_agrees() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut voip = VoipSummary::default();
        voip.limits[Limit::Loss.index()] = LimitRecord {
            episodes: 2,
            broken_for: Duration::from_millis(7500),
            worst: 12.5,
        };
        let summary = LegQualitySummary {
            last: QualitySnapshot::default(),
            voip_ready: voip,
            rtcp_received: 3,
            rtcp_malformed: 0,
        };
        let quality = CallQuality {
            legs: [
                summary,
                LegQualitySummary {
                    voip_ready: VoipSummary::default(),
                    ..summary
                },
            ],
            mos: None,
            r_factor: None,
        };
        let r = call_record(
            &snapshot(start),
            EndReason::MediaTimeout,
            &quality,
            RecordTimes {
                answered: Some(start + Duration::from_secs(2)),
                ended: start + Duration::from_secs(62),
            },
        );
        assert_eq!(r.duration_ms, 62_000);
        assert_eq!(r.talk_ms, 60_000);
        let client = r.client.as_ref().unwrap();
        assert_eq!(client.breaches.len(), 1);
        assert_eq!(client.breaches[0].broken_ms, 7500);
        assert!(r.pbx.as_ref().unwrap().breaches.is_empty());
        let j = record_json(&r);
        assert_eq!(j["reason"], "media_timeout");
        assert_eq!(j["client"]["breaches"][0]["limit"], "loss");
        assert_eq!(j["client"]["counters"]["packets_in"], 10);
        assert!(j["mos"].is_null(), "no RTT, no MOS: null, not a guess");
        // Unanswered: answer absent, talk time 0.
        let r = call_record(
            &snapshot(start),
            EndReason::Released,
            &quality,
            RecordTimes {
                answered: None,
                ended: start + Duration::from_secs(1),
            },
        );
        assert_eq!((r.answer_unix_ms, r.talk_ms), (0, 0));
        assert!(record_json(&r)["answer_unix_ms"].is_null());
    }
}
