//! SIP in xccd: the four listeners (trunk and server side, UDP and TCP each), one tokio task
//! driving the sans-IO [`B2bua`], and the [`MediaSessions`] adapter that puts SIP calls in the
//! same [`SessionTable`] as gRPC sessions (so they show in `ListCalls`, count against the pool,
//! are refused while draining, and end with BYE on a gRPC `HangUp` or a media timeout).
//!
//! Nothing protocol-specific lives here: the task moves bytes between sockets and the B2BUA,
//! reads the clock once per wake-up, and sleeps until [`B2bua::poll_timeout`].

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use xcc_core::ids::CallId;
use xcc_grpc::control::ControlState;
use xcc_grpc::events::{CallEnd, EventHub};
use xcc_grpc::pb;
use xcc_grpc::session::{Advertised, Outcome, SessionTable};
use xcc_sip::auth::Credentials;
use xcc_sip::b2bua::{
    B2bua, B2buaConfig, B2buaEvent, HangupReason, MediaOffer, MediaRefusal, MediaSessions, Side,
    SideConfig,
};
use xcc_sip::endpoint::{Peer, Target, Transmit};
use xcc_sip::framing::{Frame, PONG, StreamFramer};
use xcc_sip::transaction::Timers;
use xcc_sip::transport::Transport;

use crate::config::SipSettings;
use crate::error::{Error, Result};

/// Largest UDP datagram read.
const MAX_DATAGRAM: usize = 65_535;
/// Per-connection send queue: a peer that stops reading loses messages, never blocks the task.
const CONN_QUEUE: usize = 256;
/// How long an outgoing TCP connect may take before its transactions fail.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the counters are copied for metrics scrapes.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// Datagrams read per side in one wake-up before timers are looked at again.
const UDP_BATCH: usize = 64;
/// On stop: how long BYEs and their answers may take before the task gives up.
const STOP_WITHIN: Duration = Duration::from_secs(2);

/// The running SIP task.
pub struct SipHandle {
    stop: mpsc::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    /// Where each listener is bound: server UDP, server TCP, trunk UDP, trunk TCP.
    pub bound: [SocketAddr; 4],
    /// Live `[sip]` peer changes into the task (see [`PeersApplier`]).
    peers: Arc<PeerSlot>,
    /// What the B2BUA's sides were built from: `[sip]` and the start-time addresses.
    built: (SipSettings, Advertised),
}

impl SipHandle {
    /// Ends every SIP call with BYE/CANCEL on both sides (bounded by [`STOP_WITHIN`]) and stops
    /// the task: the daemon's last step before the media plane shuts down.
    pub async fn stop(self) {
        let _ = self.stop.send(()).await;
        match tokio::time::timeout(STOP_WITHIN + Duration::from_secs(1), self.task).await {
            Ok(_) => {}
            Err(_) => tracing::warn!("SIP task did not stop in time"),
        }
    }
}

/// The call store as the SIP layer uses it: where dialog blobs are written, and what the store
/// resumed at start-up (calls whose dialogs are re-created before the listeners serve).
pub struct StoredCalls<'a> {
    /// Dialog blobs are stored with their call through it.
    pub store: crate::store::StoreHandle,
    /// The calls the store resumed, with their dialog blobs.
    pub resumed: &'a crate::store::Resumed,
}

/// Binds the four SIP listeners (a failure is a startup error naming the listener) and starts
/// the B2BUA task. Call before READY=1.
pub fn start_sip(
    s: &SipSettings,
    advertised: Advertised,
    sessions: Arc<SessionTable>,
    state: Arc<ControlState>,
    hub: EventHub,
    metrics: &crate::metrics::Registry,
    stored: StoredCalls<'_>,
) -> Result<SipHandle> {
    let udp = |what: &'static str, addr: SocketAddr| {
        xcc_sip::driver::bind_udp(addr, s.dscp).map_err(|e| bind_error(what, addr, e))
    };
    let tcp = |what: &'static str, addr: SocketAddr| {
        xcc_sip::driver::bind_tcp(addr, s.dscp).map_err(|e| bind_error(what, addr, e))
    };
    let server_udp = udp("SIP server-side UDP", s.server_listen)?;
    let server_tcp = tcp("SIP server-side TCP", s.server_listen)?;
    let trunk_udp = udp("SIP trunk UDP", s.trunk_listen)?;
    let trunk_tcp = tcp("SIP trunk TCP", s.trunk_listen)?;
    let addr = |r: std::io::Result<SocketAddr>, what, fallback| {
        r.map_err(|source| Error::Bind {
            what,
            addr: fallback,
            source,
        })
    };
    let bound = [
        addr(
            server_udp.local_addr(),
            "SIP server-side UDP",
            s.server_listen,
        )?,
        addr(
            server_tcp.local_addr(),
            "SIP server-side TCP",
            s.server_listen,
        )?,
        addr(trunk_udp.local_addr(), "SIP trunk UDP", s.trunk_listen)?,
        addr(trunk_tcp.local_addr(), "SIP trunk TCP", s.trunk_listen)?,
    ];
    let cfg = b2bua_config(s, advertised, bound[0].port(), bound[2].port());
    tracing::info!(
        server_listen = %bound[0], trunk_listen = %bound[2],
        server_target = %s.server_target, server_transport = ?s.server_transport,
        pbx_target = %s.pbx_target, pbx_transport = ?s.pbx_transport,
        server_local = %cfg.server.local, trunk_local = %cfg.pbx.local,
        "SIP listening"
    );
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let mut b2bua = B2bua::new(cfg, Instant::now(), seed);
    let mut media = TableMedia::new(sessions, state, hub.clone(), stored.store);
    restore_calls(&mut b2bua, &mut media, stored.resumed);
    let (stop, stop_rx) = mpsc::channel(1);
    let peers = Arc::new(PeerSlot::default());
    let io = Io {
        udp: [server_udp, trunk_udp],
        tcp: [server_tcp, trunk_tcp],
        peers: peers.clone(),
    };
    let published = Arc::new(SipMetrics::default());
    metrics.register(published.clone());
    let task = tokio::spawn(run(
        b2bua,
        media,
        io,
        hub.subscribe_ends(),
        stop_rx,
        published,
    ));
    Ok(SipHandle {
        stop,
        task,
        bound,
        peers,
        built: (s.clone(), advertised),
    })
}

/// After a restart: re-creates the dialogs of the SIP calls the store resumed (their media is
/// already forwarding), before the listeners serve. A blob the B2BUA refuses, or a SIP call
/// resumed without one (it was still being set up at the crash: its caller's INVITE transaction
/// fails on its own timers), has its media released, so nothing is left half alive.
fn restore_calls(b2bua: &mut B2bua, media: &mut TableMedia, resumed: &crate::store::Resumed) {
    let now = Instant::now();
    for (&call, blob) in &resumed.signalling {
        match b2bua.restore_dialogs(call, blob, now) {
            Ok(()) => {
                media.ours.insert(call);
                tracing::info!(%call, "SIP call resumed");
            }
            Err(e) => {
                tracing::warn!(%call, error = %e, "SIP call cannot resume; media released");
                media.release(call);
            }
        }
    }
    for &call in &resumed.calls {
        if resumed.signalling.contains_key(&call) {
            continue;
        }
        let sip = media
            .sessions
            .get(call)
            .is_ok_and(|v| v.idempotency_key.starts_with("sip"));
        if sip {
            tracing::info!(%call, "SIP call was being set up at the restart; media released");
            media.release(call);
        }
    }
}

fn bind_error(what: &'static str, addr: SocketAddr, e: xcc_sip::Error) -> Error {
    match e {
        xcc_sip::Error::Socket { source, .. } => Error::Bind { what, addr, source },
        other => Error::Bind {
            what,
            addr,
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// `[sip]` mapped onto the B2BUA's configuration. Via/Contact addresses: the configured
/// advertised address, else the listener's if specific, else the PBX-leg media address.
fn b2bua_config(
    s: &SipSettings,
    advertised: Advertised,
    server_port: u16,
    trunk_port: u16,
) -> B2buaConfig {
    let local = |configured: Option<std::net::IpAddr>, listen: SocketAddr, port: u16| {
        let ip = configured.unwrap_or_else(|| {
            if listen.ip().is_unspecified() {
                advertised.pbx
            } else {
                listen.ip()
            }
        });
        SocketAddr::new(ip, port)
    };
    let mut server = SideConfig::new(
        Peer {
            addr: s.server_target,
            transport: s.server_transport.to_sip(),
        },
        local(s.server_advertised, s.server_listen, server_port),
    );
    let mut pbx = SideConfig::new(
        Peer {
            addr: s.pbx_target,
            transport: s.pbx_transport.to_sip(),
        },
        local(s.trunk_advertised, s.trunk_listen, trunk_port),
    );
    server.options_interval = s.options_interval;
    pbx.options_interval = s.options_interval;
    pbx.credentials = s
        .pbx_credentials
        .as_ref()
        .map(|(user, password)| Credentials {
            username: user.clone(),
            password: password.0.clone(),
        });
    let mut cfg = B2buaConfig::new(server, pbx);
    cfg.timers = Timers {
        t1: s.t1,
        t2: Timers::default().t2.max(s.t1),
        ..Timers::default()
    };
    cfg.retry_after = s.retry_after_secs;
    cfg
}

// ---- the MediaSessions adapter ------------------------------------------------------------------

/// [`MediaSessions`] over the daemon's session table. Remembers which calls are SIP calls, so a
/// media-plane end (gRPC `HangUp`, media timeout) of one of them becomes a B2BUA hang-up.
struct TableMedia {
    sessions: Arc<SessionTable>,
    state: Arc<ControlState>,
    hub: EventHub,
    /// The call store: dialog blobs go with their call's record.
    store: crate::store::StoreHandle,
    /// Calls offered and not yet released.
    ours: HashSet<CallId>,
    /// Keyed hash for idempotency keys longer than the table accepts.
    hasher: std::collections::hash_map::RandomState,
}

impl TableMedia {
    fn new(
        sessions: Arc<SessionTable>,
        state: Arc<ControlState>,
        hub: EventHub,
        store: crate::store::StoreHandle,
    ) -> Self {
        Self {
            sessions,
            state,
            hub,
            store,
            ours: HashSet::new(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The session-table key for a SIP call key: `sip:` + the key, or a keyed hash of it when
    /// too long (Call-IDs are unbounded; the table stores at most 128 bytes).
    fn table_key(&self, key: &str) -> String {
        table_key(&self.hasher, key)
    }

    fn announce(&self, call: CallId, outcome: Outcome, from: xcc_core::ids::LegSide) {
        match outcome {
            Outcome::Started => self.hub.publish(
                call,
                pb::event::Kind::Started(pb::CallStarted {
                    offer_from: xcc_grpc::service::side_to_pb(from) as i32,
                }),
            ),
            Outcome::Answered => self
                .hub
                .publish(call, pb::event::Kind::Answered(pb::CallAnswered {})),
            Outcome::Replayed | Outcome::Updated => {}
        }
    }
}

/// See [`TableMedia::table_key`].
fn table_key(hasher: &impl BuildHasher, key: &str) -> String {
    let plain = format!("sip:{key}");
    if plain.len() <= xcc_grpc::session::MAX_IDEMPOTENCY_KEY {
        return plain;
    }
    let mut h = hasher.build_hasher();
    h.write(key.as_bytes());
    let a = h.finish();
    h.write_u8(0xff);
    format!("sip#{a:016x}{:016x}", h.finish())
}

/// The session table's errors as the B2BUA's refusals.
fn refusal(e: xcc_grpc::Error) -> MediaRefusal {
    use xcc_grpc::Error as E;
    match e {
        E::Draining => MediaRefusal::Draining,
        E::NotFound { .. } => MediaRefusal::UnknownCall,
        E::WrongState { .. } => MediaRefusal::OfferPending,
        E::InvalidArgument { reason, .. } => MediaRefusal::BadSdp { reason },
        E::Media {
            source: xcc_core::Error::PoolExhausted { .. },
            ..
        } => MediaRefusal::Exhausted,
        E::Media {
            source: source @ xcc_core::Error::RelayUnavailable { .. },
            ..
        } => MediaRefusal::RelayUnavailable {
            reason: source.to_string(),
        },
        E::Media {
            field: Some(_),
            source,
        } => MediaRefusal::BadSdp {
            reason: source.to_string(),
        },
        other => MediaRefusal::Internal {
            reason: other.to_string(),
        },
    }
}

impl MediaSessions for TableMedia {
    fn offer(&mut self, key: &str, from: Side, sdp: &str) -> Result<MediaOffer, MediaRefusal> {
        if self.state.is_draining() {
            return Err(MediaRefusal::Draining);
        }
        let (view, outcome) = self
            .sessions
            .create(&self.table_key(key), from.leg(), sdp)
            .map_err(refusal)?;
        self.ours.insert(view.call);
        self.announce(view.call, outcome, from.leg());
        Ok(MediaOffer {
            call: view.call,
            sdp: view.sdp,
        })
    }

    fn answer(&mut self, call: CallId, sdp: &str) -> Result<String, MediaRefusal> {
        let (view, outcome) = self.sessions.answer(call, sdp).map_err(refusal)?;
        self.announce(call, outcome, view.offer_from);
        Ok(view.sdp)
    }

    fn reoffer(&mut self, call: CallId, from: Side, sdp: &str) -> Result<String, MediaRefusal> {
        let (view, _) = self
            .sessions
            .update(call, from.leg(), sdp)
            .map_err(refusal)?;
        Ok(view.sdp)
    }

    fn abandon_offer(&mut self, call: CallId) {
        self.sessions.abandon_offer(call);
    }

    /// Off the task: `SessionTable::delete` returns only once the call store has durably deleted
    /// the call's record (a directory fsync, ~0.3 ms here, more on a busy disk). Run on the
    /// task, that wait capped the setup rate (benches/README.md); on blocking threads, the
    /// deletions of calls ending together share one fsync and the task answers the BYE at once.
    fn release(&mut self, call: CallId) {
        self.ours.remove(&call);
        let sessions = self.sessions.clone();
        tokio::task::spawn_blocking(move || match sessions.delete(call) {
            Ok(()) | Err(xcc_grpc::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(%call, error = %e, "releasing a SIP call's media failed"),
        });
    }
}

// ---- metrics ---------------------------------------------------------------------------------------

/// The B2BUA's counters as of the last copy (at most [`PUBLISH_EVERY`] old), rendered at scrape
/// time: the task never blocks on a scrape, a scrape never touches the B2BUA.
#[derive(Default)]
struct SipMetrics {
    last: std::sync::Mutex<Option<Published>>,
}

struct Published {
    counters: xcc_sip::b2bua::B2buaCounters,
    health: [xcc_sip::monitor::Health; 2],
    calls: usize,
}

impl SipMetrics {
    fn publish(&self, b2bua: &B2bua) {
        let p = Published {
            counters: b2bua.counters(),
            health: [b2bua.health(Side::Server), b2bua.health(Side::Pbx)],
            calls: b2bua.calls(),
        };
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(p);
    }
}

impl crate::metrics::Collector for SipMetrics {
    fn collect(&self, out: &mut crate::metrics::Exposition) {
        use crate::metrics::Kind;
        let guard = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(p) = guard.as_ref() else {
            return;
        };
        let c = &p.counters;
        out.family(
            "xcc_sip_requests_total",
            "SIP requests by side (server, pbx), direction (in, out) and method.",
            Kind::Counter,
        );
        for side in [Side::Server, Side::Pbx] {
            let sc = &c.sides[side.index()];
            for (dir, map) in [("in", &sc.requests_in), ("out", &sc.requests_out)] {
                for (method, n) in map {
                    let labels = [
                        ("side", side.as_str()),
                        ("direction", dir),
                        ("method", method),
                    ];
                    out.sample("xcc_sip_requests_total", &labels, *n as f64);
                }
            }
        }
        out.family(
            "xcc_sip_responses_total",
            "SIP responses by side, direction, method (CSeq) and status (sent: the B2BUA's own, not 100 Trying).",
            Kind::Counter,
        );
        for side in [Side::Server, Side::Pbx] {
            let sc = &c.sides[side.index()];
            for (dir, map) in [("in", &sc.responses_in), ("out", &sc.responses_out)] {
                for ((method, status), n) in map {
                    let status = status.to_string();
                    let labels = [
                        ("side", side.as_str()),
                        ("direction", dir),
                        ("method", method),
                        ("status", &status),
                    ];
                    out.sample("xcc_sip_responses_total", &labels, *n as f64);
                }
            }
        }
        out.family(
            "xcc_sip_calls_total",
            "SIP calls by event: started, answered, ended, refused (before a call existed).",
            Kind::Counter,
        );
        for (event, n) in [
            ("started", c.calls_started),
            ("answered", c.calls_answered),
            ("ended", c.calls_ended),
            ("refused", c.calls_refused),
        ] {
            out.sample("xcc_sip_calls_total", &[("event", event)], n as f64);
        }
        out.family(
            "xcc_sip_messages_dropped_total",
            "SIP messages not processed: unmatched (481 or no dialog), malformed (answered 400/505 or dropped).",
            Kind::Counter,
        );
        for (reason, n) in [
            ("unmatched", c.unmatched),
            ("malformed_answered", c.malformed_answered),
            ("malformed_dropped", c.malformed_dropped),
        ] {
            out.sample(
                "xcc_sip_messages_dropped_total",
                &[("reason", reason)],
                n as f64,
            );
        }
        out.family(
            "xcc_sip_calls",
            "SIP calls holding signalling state (ringing, answered, or cancelled and lingering).",
            Kind::Gauge,
        );
        out.sample("xcc_sip_calls", &[], p.calls as f64);
        out.family(
            "xcc_sip_peer_up",
            "OPTIONS verdict per side: 1 up, 0 down; absent while unknown or not monitored.",
            Kind::Gauge,
        );
        for side in [Side::Server, Side::Pbx] {
            let v = match p.health[side.index()] {
                xcc_sip::monitor::Health::Up => 1.0,
                xcc_sip::monitor::Health::Down => 0.0,
                xcc_sip::monitor::Health::Unknown => continue,
            };
            out.sample("xcc_sip_peer_up", &[("side", side.as_str())], v);
        }
    }
}

// ---- the task -------------------------------------------------------------------------------------

/// The sockets, by [`Side::index`].
struct Io {
    udp: [UdpSocket; 2],
    tcp: [TcpListener; 2],
    /// New peer configurations from a reload.
    peers: Arc<PeerSlot>,
}

/// What connection tasks report.
enum Conn {
    /// A connection to `addr` on `side` is up.
    Up(Side, SocketAddr, mpsc::Sender<Vec<u8>>),
    /// A frame from `addr`.
    Frame(Side, SocketAddr, Frame),
    /// The connection is gone.
    Down(Side, SocketAddr),
}

/// TCP connections of both sides.
#[derive(Default)]
struct Streams {
    conns: [HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>; 2],
    /// Bytes for peers whose connection is being opened.
    pending: [HashMap<SocketAddr, Vec<Vec<u8>>>; 2],
}

async fn run(
    mut b2bua: B2bua,
    mut media: TableMedia,
    io: Io,
    mut ends: mpsc::UnboundedReceiver<CallEnd>,
    mut stop: mpsc::Receiver<()>,
    published: Arc<SipMetrics>,
) {
    let (conn_tx, mut conn_rx) = mpsc::channel::<Conn>(1024);
    let mut streams = Streams::default();
    let mut bufs = [vec![0u8; MAX_DATAGRAM], vec![0u8; MAX_DATAGRAM]];
    let mut stopping: Option<Instant> = None;
    // Counters are copied for scrapes at most once per PUBLISH_EVERY; `dirty` schedules the copy
    // of the last change even when nothing else wakes the task.
    let mut published_at = Instant::now();
    let mut dirty = true;
    loop {
        flush(&mut b2bua, &io, &mut streams, &conn_tx).await;
        log_events(&mut b2bua, &media.store);
        let now = Instant::now();
        if dirty && now >= published_at + PUBLISH_EVERY {
            published.publish(&b2bua);
            published_at = now;
            dirty = false;
        }
        if let Some(until) = stopping
            && (b2bua.calls() == 0 || Instant::now() >= until)
        {
            tracing::info!(calls_left = b2bua.calls(), "SIP stopped");
            return;
        }
        let draining = media.state.is_draining();
        if draining != b2bua.is_draining() {
            b2bua.set_draining(draining);
        }
        let publish = dirty.then_some(published_at + PUBLISH_EVERY);
        let deadline = [b2bua.poll_timeout(), stopping, publish]
            .into_iter()
            .flatten()
            .min();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let [buf0, buf1] = &mut bufs;
        tokio::select! {
            r = io.udp[0].recv_from(buf0) => {
                udp_in(&mut b2bua, &mut media, Side::Server, r, buf0);
                udp_drain(&mut b2bua, &mut media, &io, bufs_of(buf0, buf1));
            }
            r = io.udp[1].recv_from(buf1) => {
                udp_in(&mut b2bua, &mut media, Side::Pbx, r, buf1);
                udp_drain(&mut b2bua, &mut media, &io, bufs_of(buf0, buf1));
            }
            r = io.tcp[0].accept() => accept(Side::Server, r, &conn_tx),
            r = io.tcp[1].accept() => accept(Side::Pbx, r, &conn_tx),
            Some(c) = conn_rx.recv() => conn_event(&mut b2bua, &mut media, &mut streams, c),
            Some(end) = ends.recv() => {
                media_ended(&mut b2bua, &mut media, end);
                // Ends come in bursts (a media timeout of many calls, a bulk hang-up): take
                // what is queued before the next timeout scan.
                while let Ok(end) = ends.try_recv() {
                    media_ended(&mut b2bua, &mut media, end);
                }
            }
            _ = stop.recv(), if stopping.is_none() => {
                let now = Instant::now();
                let calls: Vec<CallId> = media.ours.iter().copied().collect();
                tracing::info!(calls = calls.len(), "SIP stopping: hanging up calls");
                for call in calls {
                    b2bua.hangup(now, call, HangupReason::Drain, &mut media);
                }
                stopping = Some(now + STOP_WITHIN);
            }
            () = io.peers.changed.notified() => {
                if let Some((server, pbx)) = io.peers.take() {
                    let now = Instant::now();
                    b2bua.set_side(now, Side::Server, server);
                    b2bua.set_side(now, Side::Pbx, pbx);
                    tracing::info!("SIP peers replaced: new calls use them");
                }
            }
            () = sleep => b2bua.handle_timeout(Instant::now(), &mut media),
        }
        dirty = true;
    }
}

fn udp_in(
    b2bua: &mut B2bua,
    media: &mut TableMedia,
    side: Side,
    r: std::io::Result<(usize, SocketAddr)>,
    buf: &[u8],
) {
    match r {
        Ok((n, from)) => {
            let source = Peer {
                addr: from,
                transport: Transport::Udp,
            };
            b2bua.handle_bytes(Instant::now(), side, source, &buf[..n], media);
        }
        // ICMP port unreachable from an earlier send surfaces here on Linux: keep serving.
        Err(e) => tracing::debug!(%side, error = %e, "SIP UDP receive"),
    }
}

fn bufs_of<'a>(a: &'a mut [u8], b: &'a mut [u8]) -> [&'a mut [u8]; 2] {
    [a, b]
}

/// Reads whatever else is already queued on both UDP sockets (bounded) before the loop asks
/// for the next timeout again: `B2bua::poll_timeout` scans every transaction, so under load
/// one scan per batch instead of one per datagram.
fn udp_drain(b2bua: &mut B2bua, media: &mut TableMedia, io: &Io, bufs: [&mut [u8]; 2]) {
    let [buf0, buf1] = bufs;
    for _ in 0..UDP_BATCH {
        let mut any = false;
        for (side, buf) in [(Side::Server, &mut *buf0), (Side::Pbx, &mut *buf1)] {
            match io.udp[side.index()].try_recv_from(buf) {
                Ok(r) => {
                    udp_in(b2bua, media, side, Ok(r), buf);
                    any = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => udp_in(b2bua, media, side, Err(e), buf),
            }
        }
        if !any {
            return;
        }
    }
}

fn accept(
    side: Side,
    r: std::io::Result<(tokio::net::TcpStream, SocketAddr)>,
    conns: &mpsc::Sender<Conn>,
) {
    match r {
        Ok((stream, addr)) => {
            tokio::spawn(serve_conn(side, stream, addr, conns.clone()));
        }
        Err(e) => tracing::debug!(%side, error = %e, "SIP TCP accept"),
    }
}

fn conn_event(b2bua: &mut B2bua, media: &mut TableMedia, streams: &mut Streams, c: Conn) {
    match c {
        Conn::Up(side, addr, tx) => {
            for bytes in streams.pending[side.index()]
                .remove(&addr)
                .unwrap_or_default()
            {
                if tx.try_send(bytes).is_err() {
                    tracing::warn!(%side, peer = %addr, "SIP connection queue full; message dropped");
                }
            }
            streams.conns[side.index()].insert(addr, tx);
        }
        Conn::Down(side, addr) => {
            streams.conns[side.index()].remove(&addr);
            // Bytes still pending: the connection never came up; its transactions fail now.
            if streams.pending[side.index()].remove(&addr).is_some() {
                let peer = Peer {
                    addr,
                    transport: Transport::Tcp,
                };
                b2bua.handle_transport_error(Instant::now(), side, peer, media);
            }
        }
        Conn::Frame(side, addr, frame) => match frame {
            Frame::Message(m) => {
                let peer = Peer {
                    addr,
                    transport: Transport::Tcp,
                };
                b2bua.handle_message(Instant::now(), side, peer, *m, media);
            }
            Frame::Malformed(e) => {
                tracing::debug!(%side, peer = %addr, error = ?e, "malformed SIP message on TCP");
                let peer = Peer {
                    addr,
                    transport: Transport::Tcp,
                };
                b2bua.handle_malformed(side, peer, &e);
            }
            Frame::Ping => {
                if let Some(tx) = streams.conns[side.index()].get(&addr) {
                    let _ = tx.try_send(PONG.to_vec());
                }
            }
        },
    }
}

/// The end of a call's media (gRPC `HangUp`, media timeout, shutdown): a SIP call's end hangs it
/// up in SIP (BYE, or CANCEL while ringing). Ends of other calls, and of SIP calls the B2BUA
/// already released, are ignored. Delivered by [`EventHub::subscribe_ends`], which never drops
/// one: no end can be missed however busy the event feed is (docs/sip.md, "Decisions").
fn media_ended(b2bua: &mut B2bua, media: &mut TableMedia, end: CallEnd) {
    if !media.ours.contains(&end.call) {
        return;
    }
    let reason = match end.reason {
        pb::call_ended::Reason::MediaTimeout => HangupReason::MediaTimeout,
        pb::call_ended::Reason::Shutdown => HangupReason::Drain,
        _ => HangupReason::Api,
    };
    tracing::info!(call = %end.call, ?reason, "media ended: hanging up the SIP call");
    b2bua.hangup(Instant::now(), end.call, reason, media);
}

/// Sends everything the B2BUA queued, each on its side's listener.
async fn flush(b2bua: &mut B2bua, io: &Io, streams: &mut Streams, conn_tx: &mpsc::Sender<Conn>) {
    while let Some((side, Transmit { target, bytes })) = b2bua.poll_transmit() {
        let peer = match target {
            Target::Peer(p) => p,
            Target::Resolve { host, port } => {
                // RFC 3263 resolution of a Via sent-by host is not wired (see docs/sip.md).
                tracing::warn!(%side, %host, port, "SIP response needs DNS resolution; dropped");
                continue;
            }
        };
        match peer.transport {
            Transport::Udp => {
                if let Err(e) = io.udp[side.index()].send_to(&bytes, peer.addr).await {
                    tracing::debug!(%side, to = %peer.addr, error = %e, "SIP UDP send");
                }
            }
            _ => match streams.conns[side.index()].get(&peer.addr) {
                Some(tx) => {
                    if tx.try_send(bytes).is_err() {
                        tracing::warn!(%side, peer = %peer.addr, "SIP connection queue full; message dropped");
                    }
                }
                None => {
                    let pending = &mut streams.pending[side.index()];
                    let first = !pending.contains_key(&peer.addr);
                    pending.entry(peer.addr).or_default().push(bytes);
                    if first {
                        tokio::spawn(connect(side, peer.addr, conn_tx.clone()));
                    }
                }
            },
        }
    }
}

fn log_events(b2bua: &mut B2bua, store: &crate::store::StoreHandle) {
    while let Some(ev) = b2bua.poll_event() {
        match ev {
            B2buaEvent::CallStarted {
                call,
                from,
                caller,
                callee,
                sip_call_id,
            } => tracing::info!(%call, %from, %caller, %callee, %sip_call_id, "SIP call started"),
            B2buaEvent::CallAnswered { call } => tracing::info!(%call, "SIP call answered"),
            B2buaEvent::CallEnded { call, reason } => {
                // The media release already deleted the record; this forgets the blob too.
                store.set_signalling(call, None);
                tracing::info!(%call, ?reason, "SIP call ended")
            }
            B2buaEvent::DialogState { call, blob } => {
                store.set_signalling(call, Some(blob));
                store.poke();
            }
            B2buaEvent::CallRefused { from, status } => {
                tracing::info!(%from, status, "SIP call refused")
            }
            B2buaEvent::PeerHealth { side, health } => {
                tracing::warn!(%side, ?health, "SIP peer health changed")
            }
        }
    }
}

async fn connect(side: Side, addr: SocketAddr, conns: mpsc::Sender<Conn>) {
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => serve_conn(side, stream, addr, conns).await,
        Ok(Err(e)) => {
            tracing::debug!(%side, %addr, error = %e, "SIP TCP connect");
            let _ = conns.send(Conn::Down(side, addr)).await;
        }
        Err(_) => {
            tracing::debug!(%side, %addr, "SIP TCP connect timed out");
            let _ = conns.send(Conn::Down(side, addr)).await;
        }
    }
}

/// Owns one connection: frames what it reads, writes what the task queues.
async fn serve_conn(
    side: Side,
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    conns: mpsc::Sender<Conn>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CONN_QUEUE);
    if conns.send(Conn::Up(side, addr, tx)).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut framer = StreamFramer::default();
    let mut buf = vec![0u8; 16 * 1024];
    'read: loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => framer.push(&buf[..n]),
        }
        loop {
            match framer.poll_frame() {
                Ok(Some(frame)) => {
                    if conns.send(Conn::Frame(side, addr, frame)).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%side, %addr, error = %e, "closing SIP stream");
                    break 'read;
                }
            }
        }
    }
    writer.abort();
    let _ = conns.send(Conn::Down(side, addr)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, SipTransport};

    fn settings() -> SipSettings {
        SipSettings {
            trunk_listen: "0.0.0.0:5060".parse().unwrap(),
            server_listen: "10.1.1.1:4901".parse().unwrap(),
            server_target: "10.9.9.9:4900".parse().unwrap(),
            server_transport: SipTransport::Tcp,
            pbx_target: "10.8.8.8:5060".parse().unwrap(),
            pbx_transport: SipTransport::Udp,
            trunk_advertised: None,
            server_advertised: None,
            pbx_credentials: Some(("xcc".into(), Secret("pw".into()))),
            options_interval: Some(Duration::from_secs(30)),
            dscp: 24,
            retry_after_secs: 17,
            t1: Duration::from_millis(100),
        }
    }

    fn advertised() -> Advertised {
        Advertised {
            client: "203.0.113.5".parse().unwrap(),
            pbx: "10.0.0.5".parse().unwrap(),
        }
    }

    #[test]
    fn via_contact_addresses_follow_advertised_then_listener_then_pbx_leg() {
        let mut s = settings();
        let cfg = b2bua_config(&s, advertised(), 4901, 5060);
        assert_eq!(
            cfg.pbx.local,
            "10.0.0.5:5060".parse().unwrap(),
            "wildcard listener"
        );
        assert_eq!(
            cfg.server.local,
            "10.1.1.1:4901".parse().unwrap(),
            "specific listener"
        );
        s.trunk_advertised = Some("198.51.100.7".parse().unwrap());
        let cfg = b2bua_config(&s, advertised(), 4901, 5061);
        assert_eq!(cfg.pbx.local, "198.51.100.7:5061".parse().unwrap());
        assert_eq!(cfg.server.peer.transport, Transport::Tcp);
        assert_eq!(cfg.pbx.peer.addr, s.pbx_target);
        assert_eq!(cfg.pbx.credentials.as_ref().unwrap().username, "xcc");
        assert!(cfg.server.credentials.is_none());
        assert_eq!(cfg.retry_after, 17);
        assert_eq!(cfg.timers.t1, Duration::from_millis(100));
    }

    #[test]
    fn long_call_keys_are_hashed_to_fit_the_table() {
        let h = std::collections::hash_map::RandomState::new();
        assert_eq!(table_key(&h, "pbx/abc/tag"), "sip:pbx/abc/tag");
        let long_a = format!("server/{}/t", "a".repeat(300));
        let long_b = format!("server/{}/t", "b".repeat(300));
        let ka = table_key(&h, &long_a);
        assert!(ka.len() <= xcc_grpc::session::MAX_IDEMPOTENCY_KEY);
        assert_eq!(
            ka,
            table_key(&h, &long_a),
            "a retried INVITE maps to the same key"
        );
        assert_ne!(ka, table_key(&h, &long_b));
    }

    #[test]
    fn table_errors_map_to_sip_statuses() {
        let exhausted = xcc_grpc::Error::Media {
            field: None,
            source: xcc_core::Error::PoolExhausted { free: 0, needed: 4 },
        };
        assert_eq!(refusal(exhausted), MediaRefusal::Exhausted);
        let relay = xcc_grpc::Error::Media {
            field: None,
            source: xcc_core::Error::RelayUnavailable {
                server: "198.51.100.7:3478".parse().unwrap(),
                reason: "allocations still being made".into(),
            },
        };
        let relay = refusal(relay);
        assert!(
            matches!(&relay, MediaRefusal::RelayUnavailable { reason } if reason.contains("198.51.100.7:3478")),
            "{relay:?}"
        );
        assert_eq!(relay.status(), 503, "transient: 503 with Retry-After");
        assert_eq!(refusal(xcc_grpc::Error::Draining).status(), 503);
        let bad = xcc_grpc::Error::InvalidArgument {
            field: "sdp",
            reason: "no audio".into(),
        };
        assert_eq!(refusal(bad).status(), 488);
        let gone = xcc_grpc::Error::NotFound {
            field: "session_id",
            call: CallId(7),
        };
        assert_eq!(refusal(gone), MediaRefusal::UnknownCall);
        let pending = xcc_grpc::Error::WrongState {
            call: CallId(7),
            reason: "pending",
        };
        assert_eq!(refusal(pending).status(), 491);
    }
}

// ---- live reload of the peers ---------------------------------------------------------------------

/// The last peer configuration a reload handed to the task, not yet taken.
#[derive(Default)]
struct PeerSlot {
    next: std::sync::Mutex<Option<(SideConfig, SideConfig)>>,
    changed: tokio::sync::Notify,
}

impl PeerSlot {
    fn put(&self, sides: (SideConfig, SideConfig)) {
        *self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sides);
        // notify_one keeps a permit when the task is busy: the change is never missed.
        self.changed.notify_one();
    }

    fn take(&self) -> Option<(SideConfig, SideConfig)> {
        self.next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// `[sip]` peers live: `server_target`, `pbx_target`, their transports, the PBX digest
/// credentials and `options_interval_secs`. New calls and OPTIONS probes use the new values;
/// calls already set up keep their dialogs (their in-dialog requests follow the peers'
/// Contact). Listeners, advertised addresses, `dscp`, `t1_ms`, `retry_after_secs` and `enabled`
/// stay restart-only (sockets and timers are built once).
pub struct PeersApplier {
    peers: Arc<PeerSlot>,
    advertised: Advertised,
    /// Bound ports (server side, trunk): Via/Contact keep them.
    ports: (u16, u16),
    /// The settings the sides were last built from (start or last reload).
    current: std::sync::Mutex<SipSettings>,
}

impl SipHandle {
    /// The reload applier for this task's peers (register it with the daemon's reloader).
    pub fn peers_applier(&self) -> PeersApplier {
        PeersApplier {
            peers: self.peers.clone(),
            advertised: self.built.1,
            ports: (self.bound[0].port(), self.bound[2].port()),
            current: std::sync::Mutex::new(self.built.0.clone()),
        }
    }
}

/// Keys [`PeersApplier`] changes live.
const LIVE_SIP_KEYS: &[&str] = &[
    "sip.server_target",
    "sip.server_transport",
    "sip.pbx_target",
    "sip.pbx_transport",
    "sip.pbx_user",
    "sip.pbx_password",
    "sip.pbx_password_file",
    "sip.options_interval_secs",
];

impl PeersApplier {
    /// `next`'s `[sip]` resolved, or why it cannot replace the running peers.
    fn settings(next: &crate::config::Config) -> std::result::Result<SipSettings, String> {
        match next.sip.validate() {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(
                "sip.enabled: this change switches SIP off (a target removed or enabled = false); \
                 that takes a restart"
                    .to_owned(),
            ),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl crate::reload::Applier for PeersApplier {
    fn keys(&self) -> &'static [&'static str] {
        LIVE_SIP_KEYS
    }

    fn check(
        &self,
        _running: &crate::config::Config,
        next: &crate::config::Config,
    ) -> std::result::Result<(), String> {
        Self::settings(next).map(|_| ())
    }

    fn apply(&self, _running: &crate::config::Config, next: &crate::config::Config) -> Vec<String> {
        let n = match Self::settings(next) {
            Ok(n) => n,
            // `check` passed moments ago: only a password file or DNS name that changed since.
            Err(e) => return vec![format!("sip peers kept: {e}")],
        };
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let o = current.clone();
        let mut lines = Vec::new();
        let diff = |key: &str, from: String, to: String| {
            (from != to).then(|| format!("{key}: {from} -> {to} (new calls)"))
        };
        lines.extend(diff(
            "sip.server_target",
            format!("{} {:?}", o.server_target, o.server_transport),
            format!("{} {:?}", n.server_target, n.server_transport),
        ));
        lines.extend(diff(
            "sip.pbx_target",
            format!("{} {:?}", o.pbx_target, o.pbx_transport),
            format!("{} {:?}", n.pbx_target, n.pbx_transport),
        ));
        let user = |s: &SipSettings| {
            s.pbx_credentials
                .as_ref()
                .map_or("none".to_owned(), |(u, _)| format!("user {u:?}"))
        };
        if o.pbx_credentials != n.pbx_credentials {
            let (from, to) = (user(&o), user(&n));
            lines.push(if from == to {
                "sip.pbx_password: changed (new challenges)".to_owned()
            } else {
                format!("sip.pbx_user: {from} -> {to} (new challenges)")
            });
        }
        let secs = |s: &SipSettings| s.options_interval.map_or(0, |d| d.as_secs());
        lines.extend(diff(
            "sip.options_interval_secs",
            secs(&o).to_string(),
            secs(&n).to_string(),
        ));
        if lines.is_empty() {
            return lines;
        }
        let cfg = b2bua_config(&n, self.advertised, self.ports.0, self.ports.1);
        self.peers.put((cfg.server, cfg.pbx));
        *current = n;
        lines
    }
}
