//! The run's findings: a table for people, JSON (`--json`) for scripts and tests.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::phones::{MediaOutcome, StreamOutcome};
use super::stats::Histogram;

/// One run against one relay (xccd or the bare forwarder).
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// `grpc` (xccd through the control API) or `bare` (the reference forwarder).
    pub mode: &'static str,
    /// Calls asked for.
    pub calls_requested: u32,
    /// Calls the relay accepted and that carried media.
    pub calls_established: u32,
    /// Why the others failed, one line each.
    pub setup_failures: Vec<String>,
    /// Session deletions that failed after the media phase.
    pub release_failures: usize,
    /// Setup time per call (CreateSession + AnswerSession), ms; absent for the bare forwarder.
    pub setup_ms: Option<Quantiles>,
    /// Media totals over every stream.
    pub media: MediaSummary,
    /// The relay's CPU over the media phase, when its pid is known.
    pub relay_cpu: Option<CpuSummary>,
    /// This load generator's CPU over the media phase.
    pub load_cpu: Option<CpuSummary>,
    /// Whether the load generator, not the relay, may have limited the run, and why.
    pub load_limited: Vec<String>,
    /// The bare forwarder measured in the same run with the same calls and duration.
    pub reference: Option<Box<RunReport>>,
    /// Relay CPU per 1000 calls divided by the reference's.
    pub cpu_ratio_to_reference: Option<f64>,
    /// The relay's latency minus the reference's (issue 7's target is on added latency).
    pub added_latency_us: Option<AddedLatency>,
    /// xccd's own per-leg counters for the run's calls, read after the media phase (grpc only).
    pub relay_counters: Option<super::sessions::RelayCounters>,
    /// SIP signalling outcome (sip mode only).
    pub sip: Option<SipSummary>,
    /// Per call detail.
    pub calls: Vec<CallReport>,
}

/// What `sip` mode saw of the signalling besides setup times.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct SipSummary {
    /// Calls whose synthetic PBX received XCC's BYE (our hang-up relayed to the trunk).
    pub trunk_byes: usize,
    /// Datagrams on the SIP sockets that were not SIP or matched no call of ours.
    pub strays: u64,
}

fn pct(part: std::time::Duration, whole: std::time::Duration) -> f64 {
    100.0 * part.as_secs_f64() / whole.as_secs_f64().max(1e-9)
}

/// Quantiles of a distribution in the report's unit.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Quantiles {
    /// From a histogram of nanoseconds, in units of `unit_ns`.
    pub fn of(h: &Histogram, unit_ns: f64) -> Self {
        Self {
            p50: h.quantile(0.5) as f64 / unit_ns,
            p99: h.quantile(0.99) as f64 / unit_ns,
            p999: h.quantile(0.999) as f64 / unit_ns,
            max: h.max() as f64 / unit_ns,
            mean: h.mean() as f64 / unit_ns,
        }
    }
}

/// The relay's latency quantiles minus the bare forwarder's from the same invocation, µs. Signed:
/// negative when xccd was faster at that quantile (the shared machine's noise, or bucket
/// precision: each quantile is its bucket's upper bound, ~1.6 %). Both sides are send stamp to
/// kernel arrival, so the difference is xccd's own work and queueing over a bare UDP relay.
#[derive(Debug, Serialize, Clone, Copy, PartialEq)]
pub struct AddedLatency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl AddedLatency {
    /// `relay - reference` per quantile.
    pub fn between(relay: &Quantiles, reference: &Quantiles) -> Self {
        Self {
            p50: relay.p50 - reference.p50,
            p99: relay.p99 - reference.p99,
            p999: relay.p999 - reference.p999,
        }
    }
}

/// Media totals.
#[derive(Debug, Serialize)]
pub struct MediaSummary {
    /// Media phase length (first due packet to last send), s.
    pub seconds: f64,
    /// Streams played (two per call).
    pub streams: usize,
    /// Streams on which nothing arrived.
    pub streams_without_packets: usize,
    /// Packets the phones handed to the kernel.
    pub packets_sent: u64,
    /// Distinct packets received.
    pub packets_received: u64,
    /// Sent and never received.
    pub lost: u64,
    /// `lost / packets_sent`, percent.
    pub loss_pct: f64,
    /// Copies received.
    pub duplicates: u64,
    /// Received after a later packet of the same stream.
    pub reordered: u64,
    /// Datagrams that were not our media (wrong source or content).
    pub foreign: u64,
    /// Relay SRTP that did not authenticate at the client phone.
    pub auth_failures: u64,
    /// Sends the load generator's kernel refused (not relay loss).
    pub send_errors: u64,
    /// One-way latency through the relay, µs: the send stamp to the kernel's receive stamp on the
    /// phone's socket (the relay's time plus loopback), so the load generator's own queueing is
    /// left out (it is `receive_delay_us`). Packets counted in `arrival_fallbacks` end at the
    /// user-space read instead.
    pub latency_us: Quantiles,
    /// The kernel's receive stamp to the user-space read, µs: how long datagrams waited in the
    /// phones' receive buffers for the load generator. `None` when no datagram was stamped.
    pub receive_delay_us: Option<Quantiles>,
    /// Media datagrams without a kernel receive stamp, whose latency and jitter are measured to
    /// the user-space read (so they include the load generator's queueing).
    pub arrival_fallbacks: u64,
    /// RFC 3550 interarrival jitter at the end of each stream, ms.
    pub jitter_ms: JitterSummary,
    /// How late the sender was against the pacing schedule, µs.
    pub send_lag_us: Quantiles,
    /// Datagrams the kernel dropped at the phones' sockets (receive buffer full): packets the
    /// relay delivered but the load generator did not read in time. `None`: not readable.
    pub phone_socket_drops: Option<u64>,
    /// Datagrams the kernel dropped at the relay's leg sockets (IPv4 relays only).
    pub relay_socket_drops: Option<u64>,
    /// The phones' receiver threads.
    pub rx_threads: usize,
    /// Share of the media phase the sender was runnable but waited for a CPU, %.
    pub sender_cpu_wait_pct: Option<f64>,
    /// The same for the receiver that waited longest, %.
    pub receiver_cpu_wait_pct: Option<f64>,
}

/// Jitter across streams.
#[derive(Debug, Serialize)]
pub struct JitterSummary {
    /// Mean over streams.
    pub mean: f64,
    /// Worst stream.
    pub max: f64,
}

/// CPU used over the media phase.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct CpuSummary {
    /// The process measured.
    pub pid: u32,
    /// utime + stime consumed, s.
    pub cpu_seconds: f64,
    /// Average cores busy (cpu seconds / wall seconds).
    pub cores: f64,
    /// Cores busy per 1000 calls at this load.
    pub cores_per_1000_calls: f64,
}

impl CpuSummary {
    /// From a CPU time delta over `wall`, carrying `calls` calls.
    pub fn new(pid: u32, cpu: Duration, wall: Duration, calls: u32) -> Self {
        let cores = cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9);
        Self {
            pid,
            cpu_seconds: cpu.as_secs_f64(),
            cores,
            cores_per_1000_calls: cores * 1000.0 / f64::from(calls.max(1)),
        }
    }
}

/// One call.
#[derive(Debug, Serialize)]
pub struct CallReport {
    /// Index within the run.
    pub call: u32,
    /// xccd's session id (0 for the bare forwarder).
    pub session_id: u64,
    /// Setup time, ms (0 for the bare forwarder).
    pub setup_ms: f64,
    /// Client phone to PBX phone.
    pub to_pbx: StreamReport,
    /// PBX phone to client phone.
    pub to_client: StreamReport,
}

/// One stream.
#[derive(Debug, Serialize)]
pub struct StreamReport {
    /// Packets sent.
    pub sent: u64,
    /// Distinct packets received.
    pub received: u64,
    /// Never received.
    pub lost: u64,
    /// Copies.
    pub duplicates: u64,
    /// Late arrivals.
    pub reordered: u64,
    /// Jitter at the end of the stream, ms.
    pub jitter_ms: f64,
    /// Mean one-way latency, µs.
    pub latency_mean_us: f64,
    /// Worst one-way latency, µs.
    pub latency_max_us: f64,
}

impl StreamReport {
    fn of(s: &StreamOutcome) -> Self {
        Self {
            sent: s.sent,
            received: s.stats.received(),
            lost: s.stats.lost(s.sent),
            duplicates: s.stats.duplicates(),
            reordered: s.stats.reordered(),
            jitter_ms: s.stats.jitter_ns() as f64 / 1e6,
            latency_mean_us: s.stats.latency_mean_ns() as f64 / 1e3,
            latency_max_us: s.stats.latency_max_ns() as f64 / 1e3,
        }
    }
}

/// Totals and per-call detail from a media outcome; `calls[i]` is (index, session id, setup).
pub fn summarize(
    media: &MediaOutcome,
    calls: &[(u32, u64, Duration)],
) -> (MediaSummary, Vec<CallReport>) {
    let mut summary = MediaSummary {
        seconds: media.elapsed.as_secs_f64(),
        streams: media.streams.len(),
        streams_without_packets: 0,
        packets_sent: 0,
        packets_received: 0,
        lost: 0,
        loss_pct: 0.0,
        duplicates: 0,
        reordered: 0,
        foreign: media.foreign,
        auth_failures: media.auth_failures,
        send_errors: media.send_errors,
        latency_us: Quantiles::of(&media.latency, 1e3),
        receive_delay_us: (media.receive_delay.count() > 0)
            .then(|| Quantiles::of(&media.receive_delay, 1e3)),
        arrival_fallbacks: media.arrival_fallbacks,
        jitter_ms: JitterSummary {
            mean: 0.0,
            max: 0.0,
        },
        send_lag_us: Quantiles::of(&media.send_lag, 1e3),
        phone_socket_drops: media.phone_socket_drops,
        relay_socket_drops: media.relay_socket_drops,
        rx_threads: media.rx_threads,
        sender_cpu_wait_pct: media.sender_cpu_wait.map(|w| pct(w, media.elapsed)),
        receiver_cpu_wait_pct: media.receiver_cpu_wait.map(|w| pct(w, media.elapsed)),
    };
    let mut jitter_sum = 0.0;
    for s in &media.streams {
        summary.packets_sent += s.sent;
        summary.packets_received += s.stats.received();
        summary.lost += s.stats.lost(s.sent);
        summary.duplicates += s.stats.duplicates();
        summary.reordered += s.stats.reordered();
        if s.stats.received() == 0 {
            summary.streams_without_packets += 1;
        }
        let j = s.stats.jitter_ns() as f64 / 1e6;
        jitter_sum += j;
        summary.jitter_ms.max = summary.jitter_ms.max.max(j);
    }
    if !media.streams.is_empty() {
        summary.jitter_ms.mean = jitter_sum / media.streams.len() as f64;
    }
    if summary.packets_sent > 0 {
        summary.loss_pct = 100.0 * summary.lost as f64 / summary.packets_sent as f64;
    }
    let per_call = calls
        .iter()
        .zip(media.streams.chunks_exact(2))
        .map(|(&(call, session_id, setup), pair)| CallReport {
            call,
            session_id,
            setup_ms: setup.as_secs_f64() * 1e3,
            to_pbx: StreamReport::of(&pair[0]),
            to_client: StreamReport::of(&pair[1]),
        })
        .collect();
    (summary, per_call)
}

/// The report as a table, the reference under it.
pub fn table(r: &RunReport) -> String {
    let mut out = String::new();
    let m = &r.media;
    let _ = writeln!(
        out,
        "{} run: {}/{} calls, {:.1} s of media, {} streams",
        r.mode, r.calls_established, r.calls_requested, m.seconds, m.streams
    );
    if let Some(s) = &r.setup_ms {
        let _ = writeln!(
            out,
            "  setup ms         p50 {:.2}  p99 {:.2}  max {:.2}",
            s.p50, s.p99, s.max
        );
    }
    let _ = writeln!(
        out,
        "  packets          sent {}  received {}  lost {} ({:.3} %)  dup {}  reordered {}",
        m.packets_sent, m.packets_received, m.lost, m.loss_pct, m.duplicates, m.reordered
    );
    let _ = writeln!(
        out,
        "  dropped          foreign {}  auth failures {}  send errors {}  silent streams {}",
        m.foreign, m.auth_failures, m.send_errors, m.streams_without_packets
    );
    let drops = |d: Option<u64>| d.map_or_else(|| "?".to_owned(), |d| d.to_string());
    let _ = writeln!(
        out,
        "  socket drops     phones {}  relay {}    receiver threads {}",
        drops(m.phone_socket_drops),
        drops(m.relay_socket_drops),
        m.rx_threads
    );
    let wait = |w: Option<f64>| w.map_or_else(|| "?".to_owned(), |w| format!("{w:.1} %"));
    let _ = writeln!(
        out,
        "  waited for CPU   sender {}  worst receiver {}",
        wait(m.sender_cpu_wait_pct),
        wait(m.receiver_cpu_wait_pct)
    );
    let l = &m.latency_us;
    let _ = writeln!(
        out,
        "  latency µs       p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}    (send to kernel arrival)",
        l.p50, l.p99, l.p999, l.max
    );
    match &m.receive_delay_us {
        Some(d) => {
            let _ = writeln!(
                out,
                "  receive delay µs p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}    (kernel arrival to read: the generator's queueing)",
                d.p50, d.p99, d.p999, d.max
            );
        }
        None => {
            let _ = writeln!(out, "  receive delay µs ? (no kernel receive stamps)");
        }
    }
    if m.arrival_fallbacks > 0 {
        let _ = writeln!(
            out,
            "  WARNING {} packets had no kernel receive stamp: their latency ends at the read",
            m.arrival_fallbacks
        );
    }
    let _ = writeln!(
        out,
        "  jitter ms        mean {:.3}  max {:.3}    send lag µs p99 {:.1} max {:.1}",
        m.jitter_ms.mean, m.jitter_ms.max, m.send_lag_us.p99, m.send_lag_us.max
    );
    for (name, cpu) in [("relay cpu", &r.relay_cpu), ("load cpu", &r.load_cpu)] {
        if let Some(c) = cpu {
            let _ = writeln!(
                out,
                "  {name:<16} pid {}  {:.3} s  {:.3} cores  {:.4} cores/1000 calls",
                c.pid, c.cpu_seconds, c.cores, c.cores_per_1000_calls
            );
        }
    }
    if let Some(c) = &r.relay_counters {
        let _ = writeln!(
            out,
            "  xccd counters    client leg in {} out {}  pbx leg in {} out {}  drops auth {} stranger {} no-route {}",
            c.client.packets_in,
            c.client.packets_out,
            c.pbx.packets_in,
            c.pbx.packets_out,
            c.client.drop_auth_failure + c.pbx.drop_auth_failure,
            c.client.drop_stranger + c.pbx.drop_stranger,
            c.client.drop_no_route + c.pbx.drop_no_route
        );
    }
    for why in &r.load_limited {
        let _ = writeln!(out, "  WARNING load generator may be the bottleneck: {why}");
    }
    if let Some(sip) = &r.sip {
        let _ = writeln!(
            out,
            "  sip              BYEs relayed to the trunk {}  stray datagrams {}",
            sip.trunk_byes, sip.strays
        );
    }
    if !r.setup_failures.is_empty() {
        let _ = writeln!(out, "  setup failures   {}", r.setup_failures.len());
        for f in r.setup_failures.iter().take(5) {
            let _ = writeln!(out, "    {f}");
        }
    }
    if let Some(reference) = &r.reference {
        let _ = writeln!(out, "reference (same run):");
        for line in table(reference).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    match r.cpu_ratio_to_reference {
        Some(ratio) => {
            let _ = writeln!(
                out,
                "relay CPU per 1000 calls / bare forwarder's: {ratio:.2}x"
            );
        }
        None if r.reference.is_some() => {
            let _ = writeln!(out, "relay CPU ratio: not measured (give --xccd-pid)");
        }
        None => {}
    }
    if let Some(a) = &r.added_latency_us {
        let _ = writeln!(
            out,
            "added latency over the bare forwarder µs: p50 {:+.1}  p99 {:+.1}  p99.9 {:+.1}",
            a.p50, a.p99, a.p999
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(p50: f64, p99: f64, p999: f64) -> Quantiles {
        Quantiles {
            p50,
            p99,
            p999,
            max: p999,
            mean: p50,
        }
    }

    #[test]
    fn added_latency_is_the_signed_difference_per_quantile() {
        let a = AddedLatency::between(&q(120.0, 900.0, 2_000.0), &q(100.0, 950.0, 1_500.0));
        assert_eq!(
            a,
            AddedLatency {
                p50: 20.0,
                p99: -50.0,
                p999: 500.0
            }
        );
    }
}
