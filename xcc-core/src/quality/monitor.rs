//! One leg's quality monitor: receive statistics, the peer's RTCP view, RTT, MOS and the
//! VoIP-ready state, behind the sans-IO verbs the worker drives.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::clock_rate::ClockRates;
use super::emodel;
use super::error::QualityError;
use super::ntp;
use super::receive::{IntervalMark, ReceiveStats, RtpArrival, SeqClass};
use super::rtcp::{ReportBlock, RtcpCompound};
use super::voip_ready::{LimitSet, Sample, VoipEvent, VoipReady, VoipReadyConfig, VoipSummary};

/// SRs remembered per leg for matching LSR; RFC 3550 reports echo the latest SR, and at one SR
/// per ~5 s eight cover 40 s of late or lost RRs.
const SENT_SR_SLOTS: usize = 8;
/// RTTs above this are discarded as inconsistent (as rtpengine does with 10 s).
const MAX_RTT: Duration = Duration::from_secs(10);
/// Floor of the evaluation period: a zero period would make `poll_timeout` always due and spin
/// the worker's timer loop.
const MIN_EVAL_INTERVAL: Duration = Duration::from_millis(100);

/// Settings of a leg monitor.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// How often loss, jitter and MOS are sampled and the limits checked (at least 100 ms).
    pub eval_interval: Duration,
    /// A peer report older than this no longer counts (the peer stopped sending RTCP).
    pub peer_report_max_age: Duration,
    /// An RTT older than this no longer counts.
    pub rtt_max_age: Duration,
    /// Limits and hysteresis.
    pub voip_ready: VoipReadyConfig,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            eval_interval: Duration::from_secs(1),
            peer_report_max_age: Duration::from_secs(20),
            rtt_max_age: Duration::from_secs(30),
            voip_ready: VoipReadyConfig::default(),
        }
    }
}

/// The peer's view of what XCC sends it, from its last report block.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeerView {
    /// Loss since its previous report, percent.
    pub fraction_lost_percent: f64,
    /// Cumulative lost as reported.
    pub cumulative_lost: i32,
    /// Jitter in ms, `None` when the clock rate of the stream is unknown.
    pub jitter_ms: Option<f64>,
}

/// What the relay publishes per leg: plain `Copy` data, cheap to hand across threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QualitySnapshot {
    /// SSRC of the stream received now.
    pub ssrc: Option<u32>,
    /// Packets expected (RFC 3550 A.3), lifetime.
    pub expected: u64,
    /// Unique packets received, lifetime.
    pub received: u64,
    /// Cumulative lost, lifetime.
    pub lost: i64,
    /// Cumulative loss, percent.
    pub loss_percent: f64,
    /// Loss over the last evaluation interval, percent; `None` when nothing was expected.
    pub interval_loss_percent: Option<f64>,
    /// Duplicates received.
    pub duplicates: u64,
    /// Late packets received.
    pub reordered: u64,
    /// Interarrival jitter of what XCC receives, ms.
    pub jitter_ms: Option<f64>,
    /// The peer's view of what XCC sends, if it reported recently.
    pub peer: Option<PeerView>,
    /// Loss the limits and MOS were judged on: the worse of both directions, percent.
    pub judged_loss_percent: Option<f64>,
    /// Jitter the limits and MOS were judged on: the worse of both directions, ms.
    pub judged_jitter_ms: Option<f64>,
    /// Round-trip time to the peer, ms.
    pub rtt_ms: Option<f64>,
    /// One-way delay estimate (RTT / 2: the path is assumed symmetric), ms.
    pub one_way_delay_ms: Option<f64>,
    /// Latest MOS; `None` without an RTT.
    pub mos: Option<f64>,
    /// Latest R factor.
    pub r_factor: Option<f64>,
    /// Lowest MOS of the leg.
    pub mos_min: Option<f64>,
    /// Average of the MOS samples of the leg.
    pub mos_avg: Option<f64>,
    /// Limits broken now.
    pub broken_now: LimitSet,
    /// Limits broken at any time.
    pub broken_ever: LimitSet,
}

/// What a leg hands the call record at hang-up.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LegQualitySummary {
    /// Final figures.
    pub last: QualitySnapshot,
    /// Which limits were broken and for how long.
    pub voip_ready: VoipSummary,
    /// RTCP packets accepted from the peer.
    pub rtcp_received: u64,
    /// RTCP packets from the peer that failed to parse.
    pub rtcp_malformed: u64,
}

/// An event for the control plane (gRPC feed, log line).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QualityEvent {
    /// A VoIP-ready limit crossed or recovered.
    VoipReady(VoipEvent),
}

/// An SR XCC sent (or relayed) to the peer, kept to match the peer's LSR.
#[derive(Debug, Clone, Copy)]
struct SentSr {
    /// SSRC of the SR's sender.
    ssrc: u32,
    /// Compact NTP timestamp the SR carried.
    lsr: u32,
    /// When it left XCC.
    sent: Instant,
}

/// One leg's quality state. Owned by the worker that owns the leg; never shared.
#[derive(Debug, Clone)]
pub struct LegMonitor {
    /// Settings.
    config: MonitorConfig,
    /// Clock rate per payload type, from the leg's SDP.
    rates: ClockRates,
    /// What XCC receives from the peer.
    receive: ReceiveStats,
    /// Interval reference of the quality evaluation.
    eval_mark: IntervalMark,
    /// Interval reference of XCC's own receiver reports.
    report_mark: IntervalMark,
    /// SRs sent to the peer, ring buffer.
    sent_srs: [Option<SentSr>; SENT_SR_SLOTS],
    /// Next ring slot.
    sent_next: usize,
    /// Compact NTP of the peer's last SR and when it arrived (LSR/DLSR of XCC's own reports).
    peer_sr: Option<(u32, Instant)>,
    /// The peer's last report and its arrival.
    peer: Option<(PeerView, Instant)>,
    /// Last RTT and its measurement time.
    rtt: Option<(Duration, Instant)>,
    /// When the next evaluation is due.
    next_eval: Instant,
    /// Result of the last evaluation.
    last: QualitySnapshot,
    /// Sum and count of MOS samples for the average.
    mos_sum: f64,
    /// See `mos_sum`.
    mos_count: u64,
    /// Limit states.
    voip: VoipReady,
    /// Limits broken at any time.
    broken_ever: LimitSet,
    /// Events not yet polled.
    events: VecDeque<QualityEvent>,
    /// RTCP accepted.
    rtcp_received: u64,
    /// RTCP refused.
    rtcp_malformed: u64,
}

impl LegMonitor {
    /// Hints the receive statistics an RTP packet updates (see [`crate::prefetch`]).
    pub(crate) fn prefetch_rtp(&self) {
        crate::prefetch::prefetch(&self.receive);
    }

    /// A monitor for a leg configured at `now`.
    pub fn new(mut config: MonitorConfig, now: Instant) -> Self {
        config.eval_interval = config.eval_interval.max(MIN_EVAL_INTERVAL);
        Self {
            config,
            rates: ClockRates::default(),
            receive: ReceiveStats::new(),
            eval_mark: IntervalMark::default(),
            report_mark: IntervalMark::default(),
            sent_srs: [None; SENT_SR_SLOTS],
            sent_next: 0,
            peer_sr: None,
            peer: None,
            rtt: None,
            next_eval: later(now, config.eval_interval),
            last: QualitySnapshot::default(),
            mos_sum: 0.0,
            mos_count: 0,
            voip: VoipReady::new(config.voip_ready),
            broken_ever: LimitSet::EMPTY,
            // Room for every limit to cross and recover before the control plane polls.
            events: VecDeque::with_capacity(8),
            rtcp_received: 0,
            rtcp_malformed: 0,
        }
    }

    /// Clock rates of the leg's payload types; set dynamic ones from `a=rtpmap`.
    pub fn clock_rates_mut(&mut self) -> &mut ClockRates {
        &mut self.rates
    }

    /// The receive statistics.
    pub fn receive(&self) -> &ReceiveStats {
        &self.receive
    }

    /// Per accepted RTP packet from the peer (after SRTP authentication): O(1), no allocation,
    /// no lock, no log.
    #[inline]
    pub fn handle_rtp(&mut self, now: Instant, pkt: RtpArrival) -> SeqClass {
        self.receive.handle_rtp(now, pkt, &self.rates)
    }

    /// Per RTCP datagram from the peer (SRTCP already removed). A malformed datagram is counted
    /// and its error returned for the caller's drop counter; state is untouched by it.
    pub fn handle_rtcp(&mut self, now: Instant, bytes: &[u8]) -> Result<(), QualityError> {
        let compound = match RtcpCompound::parse(bytes) {
            Ok(c) => c,
            Err(e) => {
                self.rtcp_malformed += 1;
                return Err(e);
            }
        };
        self.rtcp_received += 1;
        for info in compound.sender_infos() {
            self.peer_sr = Some((info.ntp.compact(), now));
        }
        let mut chosen: Option<ReportBlock> = None;
        for block in compound.report_blocks() {
            if let Some(rtt) = self.match_rtt(now, &block) {
                self.rtt = Some((rtt, now));
            }
            // Prefer the block about the stream XCC sends (the SSRC of its SRs).
            let ours = self.sent_srs.iter().flatten().any(|s| s.ssrc == block.ssrc);
            if chosen.is_none() || ours {
                chosen = Some(block);
            }
        }
        if let Some(block) = chosen {
            let rate = self
                .receive
                .last_payload_type()
                .and_then(|pt| self.rates.rate(pt));
            let view = PeerView {
                fraction_lost_percent: f64::from(block.fraction_lost) * 100.0 / 256.0,
                cumulative_lost: block.cumulative_lost,
                jitter_ms: rate.map(|r| f64::from(block.jitter) * 1000.0 / f64::from(r)),
            };
            self.peer = Some((view, now));
        }
        Ok(())
    }

    /// Per RTCP datagram sent to the peer (XCC's own, or relayed from the other leg), before
    /// SRTCP protection: remembers its SRs so the peer's LSR/DLSR give the RTT of this leg.
    pub fn handle_rtcp_sent(&mut self, now: Instant, bytes: &[u8]) -> Result<(), QualityError> {
        let compound = RtcpCompound::parse(bytes)?;
        for info in compound.sender_infos() {
            self.record_sr_sent(now, info.ssrc, info.ntp.compact());
        }
        Ok(())
    }

    /// Records one SR sent to the peer: its sender SSRC and compact NTP timestamp.
    pub fn record_sr_sent(&mut self, now: Instant, ssrc: u32, lsr: u32) {
        self.sent_srs[self.sent_next] = Some(SentSr {
            ssrc,
            lsr,
            sent: now,
        });
        self.sent_next = (self.sent_next + 1) % SENT_SR_SLOTS;
    }

    /// RTT from a report block whose LSR names an SR this leg sent: (now - sent) - DLSR. Using
    /// the monotonic send time instead of `A - LSR` keeps wall-clock steps out of the result.
    fn match_rtt(&self, now: Instant, block: &ReportBlock) -> Option<Duration> {
        if block.lsr == 0 {
            return None;
        }
        let sent = self
            .sent_srs
            .iter()
            .flatten()
            .filter(|s| s.lsr == block.lsr && s.ssrc == block.ssrc)
            .map(|s| s.sent)
            .max()?;
        let rtt = now
            .saturating_duration_since(sent)
            .checked_sub(ntp::compact_to_duration(block.dlsr))?;
        (rtt <= MAX_RTT).then_some(rtt)
    }

    /// The report block XCC would send the peer about its stream now (fraction lost since the
    /// previous call, cumulative lost, jitter, LSR/DLSR). `None` before a stream was seen.
    /// `reporter` is left 0: the SSRC XCC reports as is the RR writer's choice.
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let ssrc = self.receive.ssrc()?;
        let interval = self.receive.interval(&mut self.report_mark);
        let (lsr, dlsr) = match self.peer_sr {
            Some((lsr, at)) => (
                lsr,
                ntp::duration_to_compact(now.saturating_duration_since(at)),
            ),
            None => (0, 0),
        };
        Some(ReportBlock {
            reporter: 0,
            ssrc,
            fraction_lost: interval.fraction,
            cumulative_lost: i32::try_from(self.receive.lost()).unwrap_or(i32::MAX),
            // RFC 3550: the low 32 bits of the extended highest sequence.
            extended_highest_seq: self.receive.extended_max() as u32,
            jitter: self.receive.jitter(),
            lsr,
            dlsr,
        })
    }

    /// When [`LegMonitor::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_eval
    }

    /// Runs the evaluation if due: samples loss, jitter, RTT and MOS, checks the limits, queues
    /// events. Off the fast path (once per `eval_interval`).
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_eval {
            return;
        }
        self.next_eval = later(now, self.config.eval_interval);
        self.evaluate(now);
    }

    fn evaluate(&mut self, now: Instant) {
        let interval = self.receive.interval(&mut self.eval_mark);
        let own_loss = interval.percent();
        let own_jitter = self.receive.jitter_ms();
        let peer = self
            .peer
            .filter(|(_, at)| now.saturating_duration_since(*at) <= self.config.peer_report_max_age)
            .map(|(v, _)| v);
        let rtt = self
            .rtt
            .filter(|(_, at)| now.saturating_duration_since(*at) <= self.config.rtt_max_age)
            .map(|(r, _)| r);
        // A leg is as good as its worse direction.
        let loss = worse(own_loss, peer.map(|p| p.fraction_lost_percent));
        let jitter = worse(own_jitter, peer.and_then(|p| p.jitter_ms));
        let rtt_ms = rtt.map(|r| r.as_secs_f64() * 1000.0);
        let sample = Sample {
            one_way_delay_ms: rtt_ms.map(|r| r / 2.0),
            round_trip_ms: rtt_ms,
            loss_percent: loss,
            jitter_ms: jitter,
        };
        for event in self.voip.handle_sample(now, sample).into_iter().flatten() {
            if let VoipEvent::LimitCrossed { limit, .. } = event {
                self.broken_ever.insert(limit);
            }
            self.events.push_back(QualityEvent::VoipReady(event));
        }
        let score = emodel::score(rtt, jitter.unwrap_or(0.0), loss.unwrap_or(0.0));
        if let Some(s) = score {
            self.mos_sum += s.mos;
            self.mos_count += 1;
        }
        let mos_min = match (self.last.mos_min, score) {
            (Some(m), Some(s)) => Some(m.min(s.mos)),
            (m, s) => m.or(s.map(|s| s.mos)),
        };
        self.last = QualitySnapshot {
            interval_loss_percent: own_loss,
            peer,
            judged_loss_percent: loss,
            judged_jitter_ms: jitter,
            rtt_ms,
            one_way_delay_ms: sample.one_way_delay_ms,
            mos: score.map(|s| s.mos),
            r_factor: score.map(|s| s.r_factor),
            mos_min,
            mos_avg: (self.mos_count > 0).then(|| self.mos_sum / self.mos_count as f64),
            ..self.last
        };
    }

    /// Next queued event for the control plane.
    pub fn poll_event(&mut self) -> Option<QualityEvent> {
        self.events.pop_front()
    }

    /// The figures to publish: counters as of now, sampled values as of the last evaluation.
    pub fn snapshot(&self) -> QualitySnapshot {
        QualitySnapshot {
            ssrc: self.receive.ssrc(),
            expected: self.receive.expected(),
            received: self.receive.received(),
            lost: self.receive.lost(),
            loss_percent: self.receive.loss_percent(),
            duplicates: self.receive.duplicates(),
            reordered: self.receive.reordered(),
            jitter_ms: self.receive.jitter_ms(),
            broken_now: self.voip.broken_now(),
            broken_ever: self.broken_ever,
            ..self.last
        }
    }

    /// The call record's quality part, open episodes counted up to `now`.
    pub fn summary(&self, now: Instant) -> LegQualitySummary {
        LegQualitySummary {
            last: self.snapshot(),
            voip_ready: self.voip.summary(now),
            rtcp_received: self.rtcp_received,
            rtcp_malformed: self.rtcp_malformed,
        }
    }
}

/// MOS of the whole call as one listener hears the other, for the call record: the path runs
/// through both legs, so RTTs add (rtpengine's end-to-end RTT), losses compound and the worse
/// jitter dominates. `None` unless both legs have an RTT.
pub fn call_score(legs: &[QualitySnapshot; 2]) -> Option<emodel::Score> {
    let rtt_ms = legs[0].rtt_ms? + legs[1].rtt_ms?;
    let kept: f64 = legs
        .iter()
        .map(|l| 1.0 - l.judged_loss_percent.unwrap_or(0.0) / 100.0)
        .product();
    let jitter = worse(legs[0].judged_jitter_ms, legs[1].judged_jitter_ms).unwrap_or(0.0);
    Some(emodel::score_input(emodel::EmodelInput {
        rtt: Duration::try_from_secs_f64(rtt_ms / 1000.0).ok()?,
        jitter_ms: jitter,
        loss_percent: (1.0 - kept) * 100.0,
    }))
}

/// The larger of two optional values.
fn worse(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// `now + d` without panicking on overflow (an absurd configured period): falls back to the
/// floor period, then to `now` (evaluate on every call) if even that cannot be represented.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(MIN_EVAL_INTERVAL))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_eval_interval_is_floored_so_timers_cannot_spin() {
        let t = Instant::now();
        let config = MonitorConfig {
            eval_interval: Duration::ZERO,
            ..MonitorConfig::default()
        };
        let mut m = LegMonitor::new(config, t);
        assert_eq!(m.poll_timeout(), t + MIN_EVAL_INTERVAL);
        m.handle_timeout(t + MIN_EVAL_INTERVAL);
        assert!(m.poll_timeout() > t + MIN_EVAL_INTERVAL);
    }

    #[test]
    fn malformed_rtcp_is_counted_and_changes_nothing() {
        let t = Instant::now();
        let mut m = LegMonitor::new(MonitorConfig::default(), t);
        let err = m.handle_rtcp(t, &[0x81, 201, 0, 7, 0, 0]).unwrap_err();
        assert_eq!(
            err,
            QualityError::LengthOverrun {
                offset: 0,
                declared: 32,
                available: 6
            }
        );
        m.handle_timeout(t + Duration::from_secs(1));
        let s = m.summary(t);
        assert_eq!((s.rtcp_received, s.rtcp_malformed), (0, 1));
        assert_eq!(s.last.peer, None);
    }

    #[test]
    fn stale_peer_report_stops_counting() {
        let t = Instant::now();
        let mut m = LegMonitor::new(MonitorConfig::default(), t);
        let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 1];
        let mut b = [0u8; 24];
        ReportBlock {
            ssrc: 5,
            fraction_lost: 128,
            ..ReportBlock::default()
        }
        .write(&mut b);
        rr.extend_from_slice(&b);
        m.handle_rtcp(t, &rr).unwrap();
        m.handle_timeout(t + Duration::from_secs(1));
        assert_eq!(m.snapshot().judged_loss_percent, Some(50.0));
        m.handle_timeout(t + Duration::from_secs(30));
        assert_eq!(m.snapshot().peer, None);
        assert_eq!(m.snapshot().judged_loss_percent, None);
    }
}
