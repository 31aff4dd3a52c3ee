//! The public address driver: runs [`xcc_core::nat::discovery::Discovery`] (sans-IO) on one UDP
//! socket bound on the media bind address, and publishes what it learns to the places that need
//! it: the session table (what clients are told), the control state (`Status`), the event feed
//! (`PublicAddressChanged`) and the log.
//!
//! Until a server answers, the fallback chosen at start (bind address, first interface address or
//! 127.0.0.1) is advertised, and `Status` says so (source FALLBACK, state DISCOVERING): a client on
//! the same network still works, and an operator sees at once why remote clients would not.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use xcc_core::ids::CallId;
use xcc_core::nat::Retransmission;
use xcc_core::nat::discovery::{AddressSource, Discovery, DiscoveryConfig, DiscoveryEvent};
use xcc_grpc::control::ControlState;
use xcc_grpc::events::EventHub;
use xcc_grpc::nat::{AddressOrigin, DiscoveryState, PublicAddressStatus, changed_event};
use xcc_grpc::session::SessionTable;

use crate::config::{StunServer, Validated};

/// Largest STUN answer read; anything longer is not a Binding response XCC asked for.
const MAX_ANSWER: usize = 1500;

/// Where discovery results go.
#[derive(Clone)]
pub struct Sinks {
    /// Client-leg address for new SDP.
    pub sessions: Arc<SessionTable>,
    /// `Status` fields.
    pub state: Arc<ControlState>,
    /// `PublicAddressChanged` events.
    pub hub: EventHub,
}

impl Sinks {
    /// Publishes `status`; when the address changed, re-advertises it, logs and raises the event.
    fn publish(&self, previous: Option<IpAddr>, status: PublicAddressStatus) {
        if previous != Some(status.address) {
            tracing::info!(
                previous = ?previous,
                current = %status.address,
                source = ?status.origin,
                server = ?status.server,
                "client leg advertises a new public address"
            );
            self.sessions.set_client_address(status.address);
            self.hub
                .publish(CallId(0), changed_event(previous, &status));
        }
        self.state.set_public_address(status);
    }
}

/// What the discovery task runs with; replaced live by a reload ([`StunApplier`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StunSettings {
    /// `[stun] servers`, in order; empty: no discovery, the fallback is advertised.
    pub servers: Vec<StunServer>,
    /// `[stun] refresh_secs`.
    pub refresh: Duration,
    /// `[stun] retry_secs`.
    pub retry: Duration,
}

impl StunSettings {
    /// The `[stun]` table of `c` (validated: every entry parses).
    pub fn of(c: &crate::config::Config) -> Self {
        Self {
            servers: c
                .stun
                .servers
                .iter()
                .filter_map(|e| StunServer::parse(e).ok())
                .collect(),
            refresh: Duration::from_secs(c.stun.refresh_secs),
            retry: Duration::from_secs(c.stun.retry_secs),
        }
    }
}

/// Starts the discovery task unless `[nat] public_address` is set (then it records the static
/// address in the status and returns `None`). The task runs even without `[stun] servers`
/// (advertising the fallback), so a reload can add servers. Registers [`StunApplier`] with
/// `reloader`. `fallback` is the client address advertised until a server answers.
pub fn start_public_address(
    v: &Validated,
    fallback: IpAddr,
    sinks: Sinks,
    reloader: &crate::reload::Reloader,
) -> Option<JoinHandle<()>> {
    let c = &v.config;
    if let Some(ip) = c.nat.public_address {
        if !v.stun_servers.is_empty() {
            tracing::info!(address = %ip, "nat.public_address is set: [stun] servers are not asked");
        }
        sinks
            .state
            .set_public_address(PublicAddressStatus::without_stun(ip, AddressOrigin::Static));
        reloader.register(StunApplier { settings: None });
        return None;
    }
    let settings = StunSettings {
        servers: v.stun_servers.clone(),
        refresh: Duration::from_secs(c.stun.refresh_secs),
        retry: Duration::from_secs(c.stun.retry_secs),
    };
    let (tx, rx) = watch::channel(settings);
    reloader.register(StunApplier { settings: Some(tx) });
    // Set now, so a `Status` before the task's first turn already says what it will do.
    let mut status = PublicAddressStatus::without_stun(fallback, AddressOrigin::Fallback);
    if !v.stun_servers.is_empty() {
        status.state = DiscoveryState::Discovering;
    }
    sinks.state.set_public_address(status.clone());
    let driver = Driver {
        bind: c.media.bind_address,
        fallback,
        status,
        sinks,
    };
    Some(tokio::spawn(driver.run(rx)))
}

/// `[stun] servers`, `refresh_secs`, `retry_secs` live: the running discovery restarts its
/// schedule with the new values and keeps advertising the last learned address until the new
/// servers answer (or all fail). `[nat] public_address` stays restart-only: the session table's
/// host candidate and the PBX-leg fallback are chosen from it at start.
pub struct StunApplier {
    /// The discovery task's settings; `None` when `[nat] public_address` is set (no task).
    settings: Option<watch::Sender<StunSettings>>,
}

impl crate::reload::Applier for StunApplier {
    fn keys(&self) -> &'static [&'static str] {
        &["stun.servers", "stun.refresh_secs", "stun.retry_secs"]
    }

    fn apply(&self, running: &crate::config::Config, next: &crate::config::Config) -> Vec<String> {
        let (o, n) = (StunSettings::of(running), StunSettings::of(next));
        if o == n {
            return Vec::new();
        }
        let show = |s: &StunSettings| {
            let servers: Vec<String> = s.servers.iter().map(ToString::to_string).collect();
            format!(
                "[{}] refresh {}s retry {}s",
                servers.join(", "),
                s.refresh.as_secs(),
                s.retry.as_secs()
            )
        };
        let what = match &self.settings {
            None => "saved; not asked while nat.public_address is set".to_owned(),
            Some(tx) => {
                if tx.send(n.clone()).is_err() {
                    "kept: the discovery task is gone".to_owned()
                } else if n.servers.is_empty() {
                    "discovery off, the fallback address is advertised".to_owned()
                } else {
                    "discovery restarted; the last address stays advertised until the new servers answer"
                        .to_owned()
                }
            }
        };
        vec![format!("stun: {} -> {} ({what})", show(&o), show(&n))]
    }
}

/// The task's state.
struct Driver {
    /// Media bind address: STUN must see the NAT mapping media sockets get.
    bind: IpAddr,
    /// Advertised while no server ever answered, and when discovery is switched off.
    fallback: IpAddr,
    /// What was last published.
    status: PublicAddressStatus,
    /// Where it goes.
    sinks: Sinks,
}

impl Driver {
    /// Runs discovery with the current settings, restarting it whenever they change; ends
    /// when the settings' sender is gone (the daemon stops).
    async fn run(mut self, mut settings: watch::Receiver<StunSettings>) {
        let socket = match UdpSocket::bind(SocketAddr::new(self.bind, 0)).await {
            Ok(s) => s,
            Err(e) => {
                self.fail_hard(format!("cannot bind the STUN socket on {}: {e}", self.bind));
                return;
            }
        };
        loop {
            let current = settings.borrow_and_update().clone();
            if current.servers.is_empty() {
                // As at a start without servers: the fallback, no STUN traffic.
                let previous = self.status.address;
                self.status =
                    PublicAddressStatus::without_stun(self.fallback, AddressOrigin::Fallback);
                self.sinks.publish(Some(previous), self.status.clone());
                if settings.changed().await.is_err() {
                    return;
                }
                continue;
            }
            // The address stays (learned or fallback); the state says a new round runs.
            self.status.state = DiscoveryState::Discovering;
            self.status.last_error = None;
            self.sinks
                .publish(Some(self.status.address), self.status.clone());
            tokio::select! {
                () = self.discover(&socket, &current) => return,
                changed = settings.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tracing::info!("[stun] changed: public address discovery restarts");
                }
            }
        }
    }

    /// One discovery run with `settings` (never ends by itself; dropped on a change).
    async fn discover(&mut self, socket: &UdpSocket, settings: &StunSettings) {
        let servers = self.resolve(&settings.servers, settings.retry).await;
        let refresh = settings.refresh;
        let config = DiscoveryConfig {
            servers,
            static_address: None,
            refresh,
            retry_after_all_failed: settings.retry,
            retransmission: Retransmission::FAILOVER,
        };
        let count = config.servers.len();
        let mut discovery = match Discovery::new(config, Instant::now()) {
            Ok(d) => d,
            Err(e) => {
                self.fail_hard(format!("discovery cannot start: {e}"));
                return std::future::pending().await;
            }
        };
        tracing::info!(servers = count, local = ?socket.local_addr().ok(), "public address discovery started");
        // ThreadRng is a CSPRNG: transaction ids must not be guessable by an off-path forger.
        let mut failures_in_a_row = 0usize;
        let mut buf = vec![0u8; MAX_ANSWER];
        loop {
            let now = Instant::now();
            discovery.handle_timeout(now, &mut rand::rng());
            while let Some((to, bytes)) = discovery.poll_transmit() {
                if let Err(e) = socket.send_to(bytes, to).await {
                    tracing::debug!(server = %to, error = %e, "STUN send failed");
                }
            }
            self.drain_events(&mut discovery, &mut failures_in_a_row, count);
            let wake = discovery.poll_timeout().unwrap_or(now + refresh).max(now);
            tokio::select! {
                received = socket.recv_from(&mut buf) => {
                    let Ok((len, from)) = received else { continue };
                    let Some(bytes) = buf.get(..len) else { continue };
                    if discovery.handle_response(Instant::now(), from, bytes) {
                        let failed = self.drain_events(&mut discovery, &mut failures_in_a_row, count);
                        if !failed {
                            failures_in_a_row = 0;
                            self.succeeded(&discovery);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Resolves every configured server (names through the system resolver), keeping the ones of
    /// the socket's address family, in order; retries while none resolves.
    async fn resolve(&mut self, servers: &[StunServer], retry: Duration) -> Vec<SocketAddr> {
        loop {
            let mut out = Vec::new();
            for s in servers {
                match tokio::net::lookup_host((s.host.as_str(), s.port)).await {
                    Ok(addrs) => {
                        let mut addrs = addrs.filter(|a| a.is_ipv4() == self.bind.is_ipv4());
                        match addrs.next() {
                            Some(a) if !out.contains(&a) => out.push(a),
                            Some(_) => {}
                            None => {
                                tracing::warn!(server = %s, bind = %self.bind, "STUN server has no address of the media bind address's family")
                            }
                        }
                    }
                    Err(e) => tracing::warn!(server = %s, error = %e, "cannot resolve STUN server"),
                }
            }
            if !out.is_empty() {
                return out;
            }
            self.status.state = DiscoveryState::Failing;
            self.status.last_error = Some("no STUN server name resolves".to_owned());
            self.sinks
                .publish(Some(self.status.address), self.status.clone());
            tokio::time::sleep(retry).await;
        }
    }

    /// Publishes discovery's events; returns whether one was a failure.
    fn drain_events(
        &mut self,
        discovery: &mut Discovery,
        failures: &mut usize,
        servers: usize,
    ) -> bool {
        let mut failed = false;
        while let Some(event) = discovery.poll_event() {
            match event {
                DiscoveryEvent::PublicAddressChanged {
                    current, source, ..
                } => {
                    let previous = self.status.address;
                    self.status.address = current;
                    self.status.origin = AddressOrigin::Stun;
                    if let AddressSource::Stun { server, .. } = source {
                        self.status.server = Some(server);
                    }
                    // The success bookkeeping follows in `succeeded`; publish the change now.
                    self.status.state = DiscoveryState::Ok;
                    self.status.last_success = Some(SystemTime::now());
                    self.status.last_error = None;
                    self.sinks.publish(Some(previous), self.status.clone());
                }
                DiscoveryEvent::ServerUnreachable { server, error_code } => {
                    failed = true;
                    *failures += 1;
                    let why = match error_code {
                        Some(code) => format!("{server} answered with STUN error {code}"),
                        None => format!("{server} did not answer"),
                    };
                    tracing::warn!(%server, ?error_code, "STUN server failed; trying the next");
                    self.status.last_error = Some(why);
                    if *failures >= servers {
                        self.status.state = DiscoveryState::Failing;
                        tracing::warn!(
                            advertised = %self.status.address,
                            "every STUN server failed; the last address stays advertised"
                        );
                    }
                    self.sinks
                        .publish(Some(self.status.address), self.status.clone());
                }
            }
        }
        failed
    }

    /// A server answered (the address may be unchanged): refresh the status.
    fn succeeded(&mut self, discovery: &Discovery) {
        if let Some(AddressSource::Stun { server, mapped }) = discovery.source() {
            tracing::debug!(%server, %mapped, "STUN check succeeded");
            self.status.server = Some(server);
        }
        self.status.state = DiscoveryState::Ok;
        self.status.origin = AddressOrigin::Stun;
        self.status.last_success = Some(SystemTime::now());
        self.status.last_error = None;
        self.sinks
            .publish(Some(self.status.address), self.status.clone());
    }

    /// Discovery cannot run at all: say so in the status and the log; the fallback stays.
    fn fail_hard(&mut self, why: String) {
        tracing::error!(reason = %why, "public address discovery is off");
        self.status.state = DiscoveryState::Failing;
        self.status.last_error = Some(why);
        self.sinks
            .publish(Some(self.status.address), self.status.clone());
    }
}

/// Prometheus families of NAT traversal, read at scrape time (nothing is updated on the packet
/// path): the advertised address and its source, discovery's state and last success, and the
/// hole-punching probes and answers of all calls (from the media workers' totals, ended calls
/// kept).
pub struct NatCollector {
    media: xcc_core::media::MediaControl,
    state: Arc<ControlState>,
}

impl NatCollector {
    /// Reads `state`'s public address status and `media`'s worker totals at every scrape.
    pub fn new(media: xcc_core::media::MediaControl, state: Arc<ControlState>) -> Self {
        Self { media, state }
    }
}

/// Discovery states in label order.
const STUN_STATES: [(DiscoveryState, &str); 4] = [
    (DiscoveryState::Disabled, "disabled"),
    (DiscoveryState::Discovering, "discovering"),
    (DiscoveryState::Ok, "ok"),
    (DiscoveryState::Failing, "failing"),
];

impl crate::metrics::Collector for NatCollector {
    fn collect(&self, out: &mut crate::metrics::Exposition) {
        use crate::metrics::Kind;
        if let Some(status) = self.state.public_address() {
            let source = match status.origin {
                AddressOrigin::Static => "static",
                AddressOrigin::Stun => "stun",
                AddressOrigin::Fallback => "fallback",
            };
            out.family(
                "xcc_public_address_info",
                "Address advertised to clients and where it comes from; always 1.",
                Kind::Gauge,
            );
            let address = status.address.to_string();
            out.sample(
                "xcc_public_address_info",
                &[("address", &address), ("source", source)],
                1.0,
            );
            out.family(
                "xcc_stun_state",
                "Public address discovery: 1 for the current state, 0 for the others.",
                Kind::Gauge,
            );
            for (state, name) in STUN_STATES {
                let v = if status.state == state { 1.0 } else { 0.0 };
                out.sample("xcc_stun_state", &[("state", name)], v);
            }
            if let Some(at) = status.last_success {
                let secs = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                out.single(
                    "xcc_stun_last_success_timestamp_seconds",
                    "Unix time of the last STUN answer.",
                    Kind::Gauge,
                    secs,
                );
            }
        }
        let (mut sent, mut answered) = (0u64, 0u64);
        for w in self.media.worker_stats() {
            sent += w.counters.punch_sent;
            answered += w.counters.punch_answered;
        }
        out.single(
            "xcc_hole_punch_probes_total",
            "Hole-punching probes sent to client legs before they latched.",
            Kind::Counter,
            sent as f64,
        );
        out.single(
            "xcc_hole_punch_answers_total",
            "Authenticated answers to hole-punching checks (each latched a leg).",
            Kind::Counter,
            answered as f64,
        );
    }
}

/// Registers [`NatCollector`] with the daemon's metrics registry.
pub fn register_metrics(
    metrics: &crate::metrics::Registry,
    media: xcc_core::media::MediaControl,
    state: Arc<ControlState>,
) {
    metrics.register(Arc::new(NatCollector::new(media, state)));
}
