//! The Prometheus endpoint: a small registry of collectors rendered in the text exposition format
//! 0.0.4, served over plain HTTP (`GET /metrics`) by hyper (already in the tree through tonic).
//!
//! A subsystem plugs in by implementing [`Collector`] (or using the ready-made [`Family`] for
//! labelled counters/gauges) and calling [`Registry::register`] once at start-up. Collectors are
//! asked at scrape time, so nothing here touches the packet path: the media families read the
//! per-worker totals the workers publish every tick, the quality histograms are fed from the event
//! feed (one observation per leg at the end of each call).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::broadcast::error::RecvError;
use xcc_core::media::MediaControl;
use xcc_grpc::control::ControlState;
use xcc_grpc::events::EventHub;
use xcc_grpc::pb;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Concurrent scrapes served; more wait for a slot (Prometheus scrapes one at a time).
const MAX_CONNECTIONS: usize = 16;
/// A client that has not sent its request headers by then is dropped (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Metric type, as written on the `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic; name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, `_sum`, `_count`.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The text being rendered for one scrape. Collectors call [`Exposition::family`] once per
/// family, then [`Exposition::sample`] per labelled value.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample line; label values are escaped as the format requires.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A one-sample family without labels.
    pub fn single(&mut self, name: &str, help: &str, kind: Kind, value: f64) {
        self.family(name, help, kind);
        self.sample(name, &[], value);
    }

    /// The rendered text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Something that contributes families to a scrape. Called on the scrape's task: keep it cheap
/// and never block on the media plane.
pub trait Collector: Send + Sync {
    /// Writes this collector's families.
    fn collect(&self, out: &mut Exposition);
}

/// The set of collectors the endpoint renders, in registration order. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    collectors: Arc<RwLock<Vec<Arc<dyn Collector>>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a collector (at start-up; family names must be unique across collectors).
    pub fn register(&self, collector: Arc<dyn Collector>) {
        self.collectors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(collector);
    }

    /// Renders every collector.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        let collectors = self
            .collectors
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for c in collectors {
            c.collect(&mut out);
        }
        out.finish()
    }
}

/// A labelled counter or gauge family a subsystem updates and the registry renders: the easy way
/// for SIP (transactions by method and status) or STUN (discovery state) to plug in.
///
/// Updates take a short mutex: fine for signalling-rate events, not for the packet path.
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl Family {
    /// A counter family (`name` ends in `_total`) with these label names.
    pub fn counter(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self::new(name, help, Kind::Counter, labels)
    }

    /// A gauge family with these label names.
    pub fn gauge(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self::new(name, help, Kind::Gauge, labels)
    }

    fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            help,
            kind,
            labels,
            values: Mutex::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<String>, f64>> {
        self.values.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `by` to the series with these label values (one per label name, in order; missing
    /// values are empty strings, extra ones ignored).
    pub fn add(&self, values: &[&str], by: f64) {
        *self.map().entry(self.key(values)).or_insert(0.0) += by;
    }

    /// Sets the series (gauges).
    pub fn set(&self, values: &[&str], v: f64) {
        self.map().insert(self.key(values), v);
    }

    fn key(&self, values: &[&str]) -> Vec<String> {
        (0..self.labels.len())
            .map(|i| values.get(i).copied().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Collector for Family {
    fn collect(&self, out: &mut Exposition) {
        out.family(self.name, self.help, self.kind);
        for (key, v) in self.map().iter() {
            let labels: Vec<(&str, &str)> = self
                .labels
                .iter()
                .zip(key)
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            out.sample(self.name, &labels, *v);
        }
    }
}

/// A fixed-bucket histogram (cumulative on output, as the format wants).
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut Exposition, name: &str, labels: &[(&str, &str)]) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let le = format!("{b}");
            let mut l = labels.to_vec();
            l.push(("le", &le));
            out.sample(&bucket, &l, cumulative as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        out.sample(&bucket, &l, self.count as f64);
        out.sample(&format!("{name}_sum"), labels, self.sum);
        out.sample(&format!("{name}_count"), labels, self.count as f64);
    }
}

/// Media plane, port pool and worker families, read at scrape time.
pub struct MediaCollector {
    media: MediaControl,
    state: Arc<ControlState>,
}

impl MediaCollector {
    /// Reads `media` and `state` at every scrape.
    pub fn new(media: MediaControl, state: Arc<ControlState>) -> Self {
        Self { media, state }
    }
}

/// Drop reasons in label order: label value and accessor.
const DROP_REASONS: [&str; 7] = [
    "auth_failure",
    "replay",
    "stranger",
    "malformed",
    "no_route",
    "stray",
    "send_error",
];

impl Collector for MediaCollector {
    fn collect(&self, out: &mut Exposition) {
        let workers = self.media.worker_stats();
        let pool = self.media.pool_status();
        let mut total = xcc_core::media::LegCounters::default();
        let (mut active, mut ended) = (0u64, 0u64);
        for w in &workers {
            let c = &w.counters;
            total.packets_in += c.packets_in;
            total.bytes_in += c.bytes_in;
            total.packets_out += c.packets_out;
            total.bytes_out += c.bytes_out;
            total.rtcp_in += c.rtcp_in;
            total.rtcp_out += c.rtcp_out;
            total.rtcp_malformed += c.rtcp_malformed;
            let d = &mut total.drops;
            d.auth_failure += c.drops.auth_failure;
            d.replay += c.drops.replay;
            d.stranger += c.drops.stranger;
            d.malformed += c.drops.malformed;
            d.no_route += c.drops.no_route;
            d.stray += c.drops.stray;
            d.send_error += c.drops.send_error;
            active += w.calls as u64;
            ended += w.calls_ended;
        }
        out.single("xcc_build_info", "XCC version; always 1.", Kind::Gauge, 1.0);
        out.single(
            "xcc_draining",
            "1 while XCC refuses new sessions (drain), else 0.",
            Kind::Gauge,
            if self.state.is_draining() { 1.0 } else { 0.0 },
        );
        out.single(
            "xcc_calls_active",
            "Calls holding media ports now.",
            Kind::Gauge,
            active as f64,
        );
        out.single(
            "xcc_calls_ended_total",
            "Calls whose media ended since start.",
            Kind::Counter,
            ended as f64,
        );
        out.family(
            "xcc_ports",
            "Media ports of the pool by state (free, used, quarantined).",
            Kind::Gauge,
        );
        for (state, n) in [
            ("free", pool.free),
            ("used", pool.used),
            ("quarantined", pool.quarantined),
        ] {
            out.sample("xcc_ports", &[("state", state)], n as f64);
        }
        out.single(
            "xcc_ports_capacity",
            "Media ports in the pool (whole even/odd pairs).",
            Kind::Gauge,
            pool.total as f64,
        );
        out.family(
            "xcc_media_packets_total",
            "RTP and RTCP packets accepted from peers (in) and sent to peers (out), all legs.",
            Kind::Counter,
        );
        out.sample(
            "xcc_media_packets_total",
            &[("direction", "in")],
            total.packets_in as f64,
        );
        out.sample(
            "xcc_media_packets_total",
            &[("direction", "out")],
            total.packets_out as f64,
        );
        out.family(
            "xcc_media_bytes_total",
            "Bytes of those packets as received (in) and as sent (out).",
            Kind::Counter,
        );
        out.sample(
            "xcc_media_bytes_total",
            &[("direction", "in")],
            total.bytes_in as f64,
        );
        out.sample(
            "xcc_media_bytes_total",
            &[("direction", "out")],
            total.bytes_out as f64,
        );
        out.family(
            "xcc_rtcp_packets_total",
            "RTCP packets among xcc_media_packets_total.",
            Kind::Counter,
        );
        out.sample(
            "xcc_rtcp_packets_total",
            &[("direction", "in")],
            total.rtcp_in as f64,
        );
        out.sample(
            "xcc_rtcp_packets_total",
            &[("direction", "out")],
            total.rtcp_out as f64,
        );
        out.single(
            "xcc_rtcp_malformed_total",
            "Authenticated RTCP that did not parse (forwarded, not read).",
            Kind::Counter,
            total.rtcp_malformed as f64,
        );
        let d = &total.drops;
        let drops = [
            d.auth_failure,
            d.replay,
            d.stranger,
            d.malformed,
            d.no_route,
            d.stray,
            d.send_error,
        ];
        out.family(
            "xcc_media_drops_total",
            "Media packets dropped, by reason.",
            Kind::Counter,
        );
        for (reason, n) in DROP_REASONS.iter().zip(drops) {
            out.sample("xcc_media_drops_total", &[("reason", reason)], n as f64);
        }
        out.single(
            "xcc_srtp_auth_failures_total",
            "SRTP/SRTCP packets that failed authentication (also in drops, reason auth_failure).",
            Kind::Counter,
            d.auth_failure as f64,
        );
        out.family(
            "xcc_worker_calls",
            "Calls owned by each media worker thread.",
            Kind::Gauge,
        );
        let names: Vec<String> = (0..workers.len()).map(|i| i.to_string()).collect();
        for (w, name) in workers.iter().zip(&names) {
            out.sample("xcc_worker_calls", &[("worker", name)], w.calls as f64);
        }
        out.family(
            "xcc_worker_packets_total",
            "Packets accepted by each media worker thread (its share of the load).",
            Kind::Counter,
        );
        for (w, name) in workers.iter().zip(&names) {
            out.sample(
                "xcc_worker_packets_total",
                &[("worker", name)],
                w.counters.packets_in as f64,
            );
        }
    }
}

/// Bucket bounds: jitter in seconds (the VoIP-ready limit is 20 ms).
const JITTER_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2];
/// Loss as a ratio (the limit is 3 %).
const LOSS_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5];
/// Round trip in seconds (the limit is 150 ms).
const RTT_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0];
/// MOS (1 to 4.5 in the E-model).
const MOS_BUCKETS: &[f64] = &[1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, 4.5];

/// Per-side histograms of one figure.
#[derive(Debug, Clone)]
struct BySide {
    client: Histogram,
    pbx: Histogram,
}

impl BySide {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            client: Histogram::new(bounds),
            pbx: Histogram::new(bounds),
        }
    }

    fn side(&mut self, side: i32) -> Option<&mut Histogram> {
        match pb::Side::try_from(side) {
            Ok(pb::Side::Client) => Some(&mut self.client),
            Ok(pb::Side::Pbx) => Some(&mut self.pbx),
            _ => None,
        }
    }

    fn write(&self, out: &mut Exposition, name: &str, help: &str) {
        out.family(name, help, Kind::Histogram);
        self.client.write(out, name, &[("side", "client")]);
        self.pbx.write(out, name, &[("side", "pbx")]);
    }
}

/// What the quality collector accumulates from the event feed.
#[derive(Debug, Clone)]
struct QualityState {
    jitter: BySide,
    loss: BySide,
    rtt: BySide,
    mos: BySide,
    call_mos: Histogram,
    /// Legs ended without a MOS (no RTT measured), by side.
    no_mos: [u64; 2],
    /// VoIP-ready events by (side, limit, kind).
    alerts: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// Events this collector missed because it fell behind the feed.
    lagged: u64,
}

/// Quality histograms (one observation per leg per finished call, from its call record) and
/// VoIP-ready event counts, fed by a task reading the event feed.
pub struct QualityCollector {
    state: Mutex<QualityState>,
}

impl Default for QualityCollector {
    fn default() -> Self {
        Self {
            state: Mutex::new(QualityState {
                jitter: BySide::new(JITTER_BUCKETS),
                loss: BySide::new(LOSS_BUCKETS),
                rtt: BySide::new(RTT_BUCKETS),
                mos: BySide::new(MOS_BUCKETS),
                call_mos: Histogram::new(MOS_BUCKETS),
                no_mos: [0; 2],
                alerts: BTreeMap::new(),
                lagged: 0,
            }),
        }
    }
}

fn side_name(side: i32) -> &'static str {
    match pb::Side::try_from(side) {
        Ok(pb::Side::Client) => "client",
        Ok(pb::Side::Pbx) => "pbx",
        _ => "unknown",
    }
}

fn limit_name(limit: i32) -> &'static str {
    match pb::VoipLimit::try_from(limit) {
        Ok(pb::VoipLimit::OneWayDelay) => "one_way_delay",
        Ok(pb::VoipLimit::RoundTrip) => "round_trip",
        Ok(pb::VoipLimit::Loss) => "loss",
        Ok(pb::VoipLimit::Jitter) => "jitter",
        _ => "unknown",
    }
}

impl QualityCollector {
    fn lock(&self) -> std::sync::MutexGuard<'_, QualityState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one event from the feed into account.
    pub fn observe(&self, event: &pb::Event) {
        let mut s = self.lock();
        match &event.kind {
            Some(pb::event::Kind::Record(r)) => {
                for leg in [&r.client, &r.pbx].into_iter().flatten() {
                    let Some(q) = &leg.quality else { continue };
                    let side = leg.side;
                    // A leg that never received media says nothing about the network.
                    if q.expected > 0
                        && let Some(h) = s.loss.side(side)
                    {
                        h.observe(q.loss_percent / 100.0);
                    }
                    if let (Some(j), Some(h)) = (q.jitter_ms, s.jitter.side(side)) {
                        h.observe(j / 1000.0);
                    }
                    if let (Some(rtt), Some(h)) = (q.rtt_ms, s.rtt.side(side)) {
                        h.observe(rtt / 1000.0);
                    }
                    let mos = q.mos_avg.or(q.mos);
                    match (mos, s.mos.side(side)) {
                        (Some(m), Some(h)) => h.observe(m),
                        (None, _) if q.expected > 0 => {
                            let i = usize::from(side_name(side) == "pbx");
                            s.no_mos[i] += 1;
                        }
                        _ => {}
                    }
                }
                if let Some(m) = r.mos {
                    s.call_mos.observe(m);
                }
            }
            Some(pb::event::Kind::Quality(a)) => {
                let kind = match pb::quality_alert::Kind::try_from(a.kind) {
                    Ok(pb::quality_alert::Kind::Crossed) => "crossed",
                    Ok(pb::quality_alert::Kind::Recovered) => "recovered",
                    _ => "unknown",
                };
                *s.alerts
                    .entry((side_name(a.side), limit_name(a.limit), kind))
                    .or_insert(0) += 1;
            }
            _ => {}
        }
    }

    /// Counts events missed by a lagging feed reader.
    pub fn lagged(&self, missed: u64) {
        self.lock().lagged += missed;
    }
}

impl Collector for QualityCollector {
    fn collect(&self, out: &mut Exposition) {
        let s = self.lock().clone();
        s.jitter.write(
            out,
            "xcc_leg_jitter_seconds",
            "Interarrival jitter (RFC 3550) of each leg at the end of its call.",
        );
        s.loss.write(
            out,
            "xcc_leg_loss_ratio",
            "Packet loss of each leg over its whole call (legs that received media).",
        );
        s.rtt.write(
            out,
            "xcc_leg_rtt_seconds",
            "Last round-trip time (RTCP LSR/DLSR) of each leg at the end of its call.",
        );
        s.mos.write(
            out,
            "xcc_leg_mos",
            "Average E-model MOS of each leg over its call (legs with an RTT).",
        );
        out.family(
            "xcc_call_mos",
            "E-model MOS of whole calls (both legs' RTTs added) with an RTT on both legs.",
            Kind::Histogram,
        );
        s.call_mos.write(out, "xcc_call_mos", &[]);
        out.family(
            "xcc_leg_without_mos_total",
            "Legs that received media but ended without a MOS (no RTT measured on them).",
            Kind::Counter,
        );
        out.sample(
            "xcc_leg_without_mos_total",
            &[("side", "client")],
            s.no_mos[0] as f64,
        );
        out.sample(
            "xcc_leg_without_mos_total",
            &[("side", "pbx")],
            s.no_mos[1] as f64,
        );
        out.family(
            "xcc_voip_ready_events_total",
            "VoIP-ready limit crossings and recoveries, by leg side, limit and kind.",
            Kind::Counter,
        );
        for ((side, limit, kind), n) in &s.alerts {
            out.sample(
                "xcc_voip_ready_events_total",
                &[("side", side), ("limit", limit), ("kind", kind)],
                *n as f64,
            );
        }
        out.single(
            "xcc_metrics_events_lagged_total",
            "Feed events the metrics reader missed (it fell behind); quality figures undercount.",
            Kind::Counter,
            s.lagged as f64,
        );
    }
}

/// Feeds `collector` from `hub` until the hub closes.
pub fn spawn_quality_feed(hub: &EventHub, collector: Arc<QualityCollector>) {
    let mut rx = hub.subscribe();
    let mut closed = hub.closed();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                next = rx.recv() => match next {
                    Ok(event) => collector.observe(&event),
                    Err(RecvError::Lagged(n)) => collector.lagged(n),
                    Err(RecvError::Closed) => return,
                },
                _ = closed.wait_for(|c| *c) => return,
            }
        }
    });
}

async fn handle(
    registry: Registry,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "not found: try /metrics\n".into(),
        ));
    }
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n".into());
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return Ok(r);
    }
    let body = registry.render();
    let mut r = reply(StatusCode::OK, if head { String::new() } else { body });
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    Ok(r)
}

/// Serves `registry` on `listener` until `shutdown` resolves. One task per connection, at most
/// [`MAX_CONNECTIONS`] at a time; HTTP/1.1 only.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = &mut shutdown => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| handle(registry.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
            }
        });
    }
}

/// Binds `[metrics] listen` and serves the media and quality families until `shutdown`. A bind
/// failure is logged and the daemon runs on without metrics: monitoring must never keep calls
/// from being carried. Returns the bound address, `None` when disabled or not bound.
pub async fn start(
    listen: Option<SocketAddr>,
    registry: Registry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Option<SocketAddr> {
    let addr = listen?;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot bind the metrics endpoint; running without it");
            return None;
        }
    };
    let bound = listener.local_addr().ok();
    tracing::info!(address = ?bound, "metrics endpoint listening (GET /metrics)");
    tokio::spawn(serve(listener, registry, shutdown));
    bound
}

/// XCC's own TURN relay (`[turn]`), read at scrape time from the [`ControlState`]'s TURN source
/// (the media plane's `relay_status`). Registered only when `[turn]` is on, so a satellite without
/// a relay shows no `xcc_turn_*` family; nothing is written either while the media plane has not
/// reported on the relay (absent rather than a made-up zero).
pub struct TurnCollector {
    state: Arc<ControlState>,
}

impl TurnCollector {
    /// Reads `state`'s TURN source at every scrape.
    pub fn new(state: Arc<ControlState>) -> Self {
        Self { state }
    }
}

impl Collector for TurnCollector {
    fn collect(&self, out: &mut Exposition) {
        let Some((_, Some(s))) = self.state.turn() else {
            return;
        };
        out.single(
            "xcc_turn_ready",
            "Client legs allocated on the TURN server and waiting for a call (0: new calls are refused).",
            Kind::Gauge,
            s.ready as f64,
        );
        out.single(
            "xcc_turn_pending",
            "TURN allocations in progress.",
            Kind::Gauge,
            s.pending as f64,
        );
        out.single(
            "xcc_turn_allocations_total",
            "TURN allocations the server granted since start.",
            Kind::Counter,
            s.allocated_total as f64,
        );
        out.single(
            "xcc_turn_allocation_failures_total",
            "TURN allocations or refreshes that failed since start.",
            Kind::Counter,
            s.failed_total as f64,
        );
        if let Some(at) = s.last_success {
            let secs = at
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            out.single(
                "xcc_turn_last_success_timestamp_seconds",
                "Unix time of the last successful TURN allocation.",
                Kind::Gauge,
                secs,
            );
        }
    }
}

/// Adds [`TurnCollector`] to the daemon's registry; the daemon calls it only when `[turn]` is on.
pub fn register_turn(metrics: &Registry, state: Arc<ControlState>) {
    metrics.register(Arc::new(TurnCollector::new(state)));
}

/// The registry the daemon serves: media/pool/worker families and quality histograms fed from
/// `hub`. SIP and STUN add theirs with [`Registry::register`].
pub fn daemon_registry(media: MediaControl, state: Arc<ControlState>, hub: &EventHub) -> Registry {
    let registry = Registry::new();
    registry.register(Arc::new(MediaCollector::new(media, state)));
    let quality = Arc::new(QualityCollector::default());
    spawn_quality_feed(hub, quality.clone());
    registry.register(quality);
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_escapes_labels_and_writes_integers_plainly() {
        let mut e = Exposition::default();
        e.family("xcc_x_total", "Help with \\ and\nnewline.", Kind::Counter);
        e.sample("xcc_x_total", &[("a", "q\"b\\n\nl")], 3.0);
        e.sample("xcc_x_total", &[], 0.25);
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP xcc_x_total Help with \\\\ and\\nnewline.\n# TYPE xcc_x_total counter\n\
             xcc_x_total{a=\"q\\\"b\\\\n\\nl\"} 3\nxcc_x_total 0.25\n"
        );
    }

    #[test]
    fn histogram_is_cumulative_with_inf_sum_and_count() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.5, 9.0, f64::NAN] {
            h.observe(v);
        }
        let mut e = Exposition::default();
        h.write(&mut e, "m", &[("side", "pbx")]);
        let text = e.finish();
        assert!(
            text.contains("m_bucket{side=\"pbx\",le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("m_bucket{side=\"pbx\",le=\"2\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("m_bucket{side=\"pbx\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("m_sum{side=\"pbx\"} 12.5\n"), "{text}");
        assert!(text.contains("m_count{side=\"pbx\"} 4\n"), "{text}");
    }

    #[test]
    fn family_adds_and_sets_by_label_values() {
        let f = Family::counter("xcc_sip_transactions_total", "SIP.", &["method", "status"]);
        f.add(&["INVITE", "200"], 1.0);
        f.add(&["INVITE", "200"], 2.0);
        f.add(&["BYE"], 1.0);
        let mut e = Exposition::default();
        f.collect(&mut e);
        let text = e.finish();
        assert!(text.contains("xcc_sip_transactions_total{method=\"INVITE\",status=\"200\"} 3\n"));
        assert!(text.contains("xcc_sip_transactions_total{method=\"BYE\",status=\"\"} 1\n"));
    }

    fn control_state() -> Arc<ControlState> {
        let (reporter, _) = tonic_health::server::health_reporter();
        Arc::new(ControlState::new(std::time::Instant::now(), reporter))
    }

    fn scrape(c: &dyn Collector) -> String {
        let mut e = Exposition::default();
        c.collect(&mut e);
        e.finish()
    }

    #[test]
    fn turn_families_follow_the_relay_status_and_are_absent_without_turn() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use xcc_core::media::RelayStatus;
        let state = control_state();
        let collector = TurnCollector::new(state.clone());
        assert_eq!(scrape(&collector), "", "no [turn]: no family");

        let server: SocketAddr = "198.51.100.7:3478".parse().unwrap();
        let failed = Arc::new(AtomicU64::new(0));
        let read = failed.clone();
        let reported = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let is_reported = reported.clone();
        state.set_turn(xcc_grpc::nat::TurnSource {
            server,
            status: Box::new(move || {
                is_reported.load(Ordering::Relaxed).then(|| RelayStatus {
                    server,
                    ready: 4,
                    pending: 1,
                    allocated_total: 12,
                    failed_total: read.load(Ordering::Relaxed),
                    last_error: None,
                    last_success: (read.load(Ordering::Relaxed) == 0)
                        .then(|| std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)),
                })
            }),
        });
        assert_eq!(
            scrape(&collector),
            "",
            "configured but not reported yet: absent, not zero"
        );
        reported.store(true, Ordering::Relaxed);
        let text = scrape(&collector);
        for line in [
            "# TYPE xcc_turn_ready gauge\nxcc_turn_ready 4\n",
            "# TYPE xcc_turn_pending gauge\nxcc_turn_pending 1\n",
            "# TYPE xcc_turn_allocations_total counter\nxcc_turn_allocations_total 12\n",
            "# TYPE xcc_turn_allocation_failures_total counter\nxcc_turn_allocation_failures_total 0\n",
            "# TYPE xcc_turn_last_success_timestamp_seconds gauge\n\
             xcc_turn_last_success_timestamp_seconds 1700000000.5\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        // Read at scrape time: the next scrape sees the media plane's new figures.
        failed.store(2, Ordering::Relaxed);
        let text = scrape(&collector);
        assert!(
            text.contains("xcc_turn_allocation_failures_total 2\n"),
            "{text}"
        );
        assert!(
            !text.contains("xcc_turn_last_success_timestamp_seconds"),
            "absent before the first success: {text}"
        );
    }
}
