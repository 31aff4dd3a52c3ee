//! Call quality: what each leg receives (loss, duplicates, reordering, jitter; RFC 3550 A.1-A.8),
//! what the peer reports over RTCP, round-trip time from LSR/DLSR, an E-model MOS and the
//! "VoIP ready" limits with hysteresis.
//!
//! Everything is sans-IO and owned by the worker that owns the leg. The drive loop, per leg:
//!
//! ```text
//! accepted RTP packet  -> monitor.handle_rtp(now, RtpArrival { ssrc, seq, timestamp, payload_type })
//! RTCP from the peer   -> monitor.handle_rtcp(now, &plain_rtcp)   // Err => count a malformed drop
//! RTCP to the peer     -> monitor.handle_rtcp_sent(now, &plain_rtcp)   // before SRTCP protect
//! timer                -> if now >= monitor.poll_timeout() { monitor.handle_timeout(now) }
//! events               -> while let Some(e) = monitor.poll_event() { send to control plane }
//! publish              -> monitor.snapshot()        (Copy)
//! hang-up              -> monitor.summary(now)      (call record)
//! ```
//!
//! Only `handle_rtp` runs per packet: it is O(1) and allocation-free. RTCP parsing is zero-copy
//! too, but runs about once per 5 s per stream.

mod clock_rate;
pub mod emodel;
mod error;
mod monitor;
pub mod ntp;
mod receive;
pub mod rtcp;
mod voip_ready;

pub use clock_rate::ClockRates;
pub use error::QualityError;
pub use monitor::{
    LegMonitor, LegQualitySummary, MonitorConfig, PeerView, QualityEvent, QualitySnapshot,
    call_score,
};
pub use receive::{IntervalLoss, IntervalMark, ReceiveStats, RtpArrival, SeqClass};
pub use voip_ready::{
    Limit, LimitRecord, LimitSet, Sample, VoipEvent, VoipLimits, VoipReady, VoipReadyConfig,
    VoipSummary,
};
