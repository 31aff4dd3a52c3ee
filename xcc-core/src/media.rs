//! The control plane's one handle on the media plane.
//!
//! SIP and gRPC both drive media through [`MediaControl`]: allocate a call (four ports), configure
//! each leg once the far end's SDP is known, read counters, release. Commands travel to the owning
//! worker over a channel; counters come back from snapshots the workers publish, so no caller ever
//! blocks a worker.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::ids::{CallId, LegSide};

/// At most how old the traffic counters in a snapshot, `Status` or the workers' totals are:
/// workers publish mere traffic every fourth 50 ms tick (latches and configuration at the next
/// one). Whoever waits for counters to settle must watch them for longer than this.
pub const COUNTERS_LAG: Duration = crate::relay::worker::COUNTERS_LAG;
use crate::leg::LatchPolicy;
use crate::ports::{PortPool, RangeChange, allocate_n, allocate_pairs};
use crate::quality::{LegQualitySummary, MonitorConfig, QualityEvent, QualitySnapshot};
use crate::relay::call::CallTimers;
use crate::relay::published::{CallState, Published};
use crate::relay::spares::{ReleasePair, SparePool, TakePair};
use crate::relay::totals::WorkerTotals;
use crate::relay::worker::{self, WAKER, WorkerSetup};
use crate::relay::{Command, Freed, NewCall};
use crate::socket::{SocketOptions, bind_media_socket};
use crate::srtp::{ContextProgress, KeyingMaterial, SrtpPolicy, SrtpSuite};

/// Media-plane settings; every field has a default that runs on a fresh machine.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Address the media sockets bind to; also advertised on the PBX leg when unspecified.
    pub bind_address: IpAddr,
    /// First port of the pool (inclusive).
    pub port_min: u16,
    /// Last port of the pool (inclusive).
    pub port_max: u16,
    /// How long a freed port rests before reuse, so late packets of an old call never reach a new one.
    pub quarantine_secs: u64,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// DSCP mark on every media packet (EF = 46).
    pub dscp: u8,
    /// A call with no media on any leg for this long is ended.
    pub media_timeout_secs: u64,
    /// The same limit while the call is on hold (sendonly / inactive).
    pub hold_timeout_secs: u64,
    /// How long after (re)configuration a plain-RTP leg may latch onto a source other than the
    /// signalled address.
    pub rtp_learning_window_ms: u64,
    /// SO_RCVBUF / SO_SNDBUF for each media socket, in bytes.
    pub socket_buffer_bytes: usize,
    /// Per-leg quality monitoring: evaluation period, report ages, VoIP-ready limits.
    pub quality: MonitorConfig,
}

impl MediaConfig {
    /// Checks every value; the daemon refuses to start (exit 64) on the error.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |key, reason: &str| {
            Err(crate::Error::Config {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.port_min == 0 {
            return bad("port_min", "0 is not a port (it would let the kernel pick)");
        }
        if self.port_min > self.port_max {
            return bad("port_min", "greater than port_max");
        }
        // Whole pairs only: a call needs two even/odd pairs.
        if PortPool::new(self.port_min, self.port_max, Duration::ZERO)
            .status(Instant::now())
            .total
            < 4
        {
            return bad(
                "port_max",
                "range holds fewer than two even/odd pairs (4 ports), one call needs both",
            );
        }
        if self.dscp > 63 {
            return bad("dscp", "DSCP is 6 bits (0-63)");
        }
        if self.media_timeout_secs == 0 {
            return bad("media_timeout_secs", "must be at least 1 s");
        }
        if self.hold_timeout_secs == 0 {
            return bad("hold_timeout_secs", "must be at least 1 s");
        }
        if self.socket_buffer_bytes == 0 {
            return bad("socket_buffer_bytes", "must not be 0");
        }
        if self.workers > 1024 {
            return bad("workers", "more than 1024 worker threads");
        }
        let voip = &self.quality.voip_ready;
        if !(0.0..1.0).contains(&voip.recover_margin) {
            return bad(
                "quality.voip_ready.recover_margin",
                "must be in [0, 1): a fraction of the limit",
            );
        }
        let limits = &voip.limits;
        let positive = [
            limits.one_way_delay_ms,
            limits.round_trip_ms,
            limits.loss_percent,
            limits.jitter_ms,
        ]
        .iter()
        .all(|v| v.is_finite() && *v > 0.0);
        if !positive {
            return bad(
                "quality.voip_ready.limits",
                "every limit must be a positive number",
            );
        }
        Ok(())
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port_min: 30000,
            port_max: 33000,
            quarantine_secs: 5,
            workers: 0,
            dscp: 46,
            media_timeout_secs: 60,
            hold_timeout_secs: 3600,
            rtp_learning_window_ms: 3000,
            socket_buffer_bytes: 256 * 1024,
            quality: MonitorConfig::default(),
        }
    }
}

/// The two ports of one leg, exactly as bound (XCC never remaps ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LegPorts {
    /// Even RTP port.
    pub rtp: u16,
    /// RTCP port, always `rtp + 1` (unused when the leg negotiates rtcp-mux).
    pub rtcp: u16,
}

/// What [`MediaControl::allocate`] hands back: the call's id and its four bound ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatedCall {
    /// The new call.
    pub call: CallId,
    /// Ports per leg, indexed by [`LegSide::index`].
    pub ports: [LegPorts; 2],
    /// The client leg's TURN-relayed addresses when XCC relays through its own TURN server
    /// (`[turn]`): clients must be told these, not XCC's own address and ports.
    pub relay: Option<RelayedPorts>,
}

/// The relayed transport addresses of one client leg's two TURN allocations (one per socket:
/// an allocation is tied to the 5-tuple of the socket that made it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RelayedPorts {
    /// Relayed address of the RTP socket's allocation: the client leg's `c=` and `m=` port.
    pub rtp: SocketAddr,
    /// Relayed address of the RTCP socket's allocation (`a=rtcp`: TURN servers do not keep
    /// RTP + 1).
    pub rtcp: SocketAddr,
    /// XCC's address as the TURN server saw it (the relay candidate's related address).
    pub mapped: Option<SocketAddr>,
}

/// XCC as a TURN client (RFC 8656, UDP) for satellites whose uplink lets no inbound media through:
/// every call's client leg is relayed through an allocation on `server`. Allocations are made
/// ahead of calls (`spares` of them kept ready and refreshed) so answering a call never waits for
/// a round trip to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// The TURN server (resolved by the caller).
    pub server: SocketAddr,
    /// UDP (the allocation on the leg's own socket), or TCP (a connection per allocation) for
    /// uplinks that let only TCP out. TCP allocations die with their connection, so calls
    /// relayed over TCP do not survive a restart.
    pub transport: crate::nat::turn::TurnTransport,
    /// Long-term credential username.
    pub username: String,
    /// Long-term credential password.
    pub password: String,
    /// Requested allocation lifetime; the server may shorten it, XCC refreshes before it ends.
    pub lifetime: Duration,
    /// Client legs kept allocated ahead of calls; a burst larger than this waits for new ones
    /// (refused with [`crate::Error::RelayUnavailable`] meanwhile).
    pub spares: usize,
}

impl RelayConfig {
    /// Checks the values a daemon may have read from its configuration.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |key, reason: &str| {
            Err(crate::Error::Config {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.server.port() == 0 || self.server.ip().is_unspecified() {
            return bad("turn.server", "needs a routable address and a port");
        }
        if self.username.is_empty() || self.password.is_empty() {
            return bad(
                "turn.username",
                "long-term credentials need a username and a password",
            );
        }
        if self.lifetime < Duration::from_secs(60) {
            return bad(
                "turn.lifetime_secs",
                "at least 60 s (refreshes come a minute early)",
            );
        }
        if self.spares == 0 {
            return bad(
                "turn.spares",
                "at least 1, or no call could ever be answered",
            );
        }
        Ok(())
    }
}

/// How the relay stands, for `Status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayStatus {
    /// The TURN server.
    pub server: SocketAddr,
    /// Client legs allocated and waiting for a call.
    pub ready: usize,
    /// Allocations in progress.
    pub pending: usize,
    /// Allocations the server granted since start.
    pub allocated_total: u64,
    /// Allocations (or their refreshes) that failed since start.
    pub failed_total: u64,
    /// The most recent failure, in words.
    pub last_error: Option<String>,
    /// When an allocation last succeeded.
    pub last_success: Option<SystemTime>,
}

/// SDP direction of a leg as negotiated; sendonly / inactive mean hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    /// Media both ways.
    #[default]
    SendRecv,
    /// The peer only sends (it put the call on hold).
    SendOnly,
    /// The peer only receives.
    RecvOnly,
    /// No media either way.
    Inactive,
}

/// SRTP keys of one leg, one per direction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SrtpKeys {
    /// The peer's key (from its `a=crypto`): decrypts what the peer sends to XCC.
    pub inbound: KeyingMaterial,
    /// XCC's key for this leg (from XCC's `a=crypto`): encrypts what XCC sends to the peer.
    pub outbound: KeyingMaterial,
}

/// Where a leg's peer is and how to talk to it, learned from signalling. Serializable: the call
/// store keeps it (keys included) so a restarted xccd resumes the leg.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct LegConfig {
    /// Signalled RTP address; `None` when unknown (XCC waits to latch).
    pub remote_rtp: Option<SocketAddr>,
    /// Signalled RTCP address; `None` means RTP port + 1 (or the RTP address with rtcp-mux).
    pub remote_rtcp: Option<SocketAddr>,
    /// RTCP multiplexed on the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// `None` for plain RTP.
    pub srtp: Option<SrtpKeys>,
    /// Negotiated direction.
    pub direction: Direction,
    /// SDES session parameters (`UNENCRYPTED_SRTP`, ...) for both directions; ignored for plain RTP.
    pub srtp_policy: SrtpPolicy,
    /// RTP clock rate per payload type from the peer's `a=rtpmap` lines
    /// ([`crate::sdp::SessionDescription::audio_clock_rates`]); static types need no entry.
    /// Without a rate the leg's jitter is not measured (never guessed).
    pub clock_rates: Vec<(u8, u32)>,
    /// ICE-lite on this leg (client legs whose offer carried `a=ice-ufrag`/`a=ice-pwd`): STUN
    /// checks are answered and a nominated one latches the leg. `None`: STUN is a counted drop.
    pub ice: Option<IceSetup>,
}

/// Credentials of one leg's ICE-lite agent, from signalling (the answer carries `local`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IceSetup {
    /// XCC's credentials: they key the responses and authenticate the peer's checks.
    pub local: crate::nat::ice::IceCredentials,
    /// The peer's credentials from the offer; `None` accepts any remote ufrag in USERNAME.
    pub remote: Option<crate::nat::ice::IceCredentials>,
    /// The peer's RTP-component candidates, highest priority first
    /// ([`crate::nat::candidate::RemoteIce::rtp_targets`]): hole-punching targets after the
    /// signalled address.
    pub candidates: Vec<SocketAddr>,
}

/// Where one leg's SRTP contexts stand: the ROC and packet index per direction. The worker
/// publishes it lock-free with the counters; a store persists its
/// [`checkpoint`](ContextProgress::checkpoint) so a restarted xccd resumes SRTP where it was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LegSrtpProgress {
    /// Receiving side (what the peer sends, unprotected with its key).
    pub inbound: ContextProgress,
    /// Sending side (what XCC sends, protected with XCC's key).
    pub outbound: ContextProgress,
}

impl LegSrtpProgress {
    /// Both directions rounded down to their checkpoints.
    pub fn checkpoint(&self) -> Self {
        Self {
            inbound: self.inbound.checkpoint(),
            outbound: self.outbound.checkpoint(),
        }
    }
}

/// One leg's part of a [`ResumePoint`].
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct LegResume {
    /// The last configuration; `None` while signalling has not configured the leg.
    pub config: Option<LegConfig>,
    /// Latched RTP source.
    pub latched_rtp: Option<SocketAddr>,
    /// Latched RTCP source.
    pub latched_rtcp: Option<SocketAddr>,
    /// SRTP progress (as published: a store keeps its checkpoint).
    pub srtp: LegSrtpProgress,
}

/// Everything the media plane needs to take a call over again after a restart
/// ([`MediaControl::restore`]); read from a running engine with [`MediaControl::resume_points`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The call keeps its id (signalling and the gRPC session refer to it).
    pub call: CallId,
    /// When it was first allocated.
    pub created: SystemTime,
    /// The exact ports: peers were told them, so only these will do.
    pub ports: [LegPorts; 2],
    /// Per leg, indexed by [`LegSide::index`].
    pub legs: [LegResume; 2],
    /// The client leg's TURN allocations, when it was relayed: the restarted engine rebinds the
    /// same ports, so the allocations (tied to the 5-tuple) are still the server's to refresh.
    pub relay: Option<RelayedPorts>,
}

/// What [`MediaControl::resume_points_changed`] found.
#[derive(Debug, Default)]
pub struct ResumeScan {
    /// Every live call, by id.
    pub live: Vec<CallId>,
    /// The calls whose resume generation moved, by id, each with its generation.
    pub changed: Vec<(u64, ResumePoint)>,
}

/// Why a call's media ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EndReason {
    /// The control plane released it (hang-up, BYE, gRPC delete).
    Released,
    /// No media for the configured time.
    MediaTimeout,
    /// The engine is shutting down.
    Shutdown,
}

/// Packets dropped on a leg, by reason. Every drop is counted, none is fatal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DropCounters {
    /// SRTP/SRTCP authentication failed.
    pub auth_failure: u64,
    /// SRTP/SRTCP replayed or too old.
    pub replay: u64,
    /// From a source other than the latched one, and not authenticated.
    pub stranger: u64,
    /// Not parseable as RTP/RTCP.
    pub malformed: u64,
    /// Nowhere to send it yet (the other leg has no destination) or direction forbids it.
    pub no_route: u64,
    /// Non-media noise on a media port (STUN, keepalive "PING"s, ...).
    pub stray: u64,
    /// Accepted and routed, but the kernel refused the send (socket buffer full, ICMP error).
    pub send_error: u64,
}

/// Per-leg quality at the end of a call, for the call record.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CallQuality {
    /// Per leg, indexed by [`LegSide::index`]: final figures and which VoIP-ready limits were
    /// broken and for how long.
    pub legs: [LegQualitySummary; 2],
    /// MOS of the whole call (both legs' RTTs added, losses compounded); `None` unless both legs
    /// measured an RTT.
    pub mos: Option<f64>,
    /// R factor of the same computation.
    pub r_factor: Option<f64>,
}

/// Per-leg traffic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LegCounters {
    /// RTP + RTCP packets received and accepted.
    pub packets_in: u64,
    /// Bytes of those packets, as received.
    pub bytes_in: u64,
    /// Packets sent to this leg's peer.
    pub packets_out: u64,
    /// Bytes sent, as sent.
    pub bytes_out: u64,
    /// RTCP packets among `packets_in`.
    pub rtcp_in: u64,
    /// RTCP packets among `packets_out`.
    pub rtcp_out: u64,
    /// RTCP from the peer that XCC's parser refused (lengths do not tile, bad padding, ...) after
    /// SRTCP authentication: still forwarded (XCC is transparent to the other leg) but unread.
    pub rtcp_malformed: u64,
    /// Drops by reason.
    pub drops: DropCounters,
    /// Hole-punching probes sent towards the client before it latched.
    pub punch_sent: u64,
    /// Authenticated answers to those probes (ICE clients only).
    pub punch_answered: u64,
}

/// A leg as last published by its worker.
#[derive(Debug, Clone, PartialEq)]
pub struct LegSnapshot {
    /// Which leg.
    pub side: LegSide,
    /// Local address of the RTP socket (bind address and port).
    pub local_rtp: SocketAddr,
    /// Local ports as bound.
    pub ports: LegPorts,
    /// Signalled peer RTP address.
    pub signalled: Option<SocketAddr>,
    /// Where media from this leg's peer actually comes from (and is sent to).
    pub latched: Option<SocketAddr>,
    /// Latched RTCP source.
    pub latched_rtcp: Option<SocketAddr>,
    /// Negotiated suite, `None` for plain RTP.
    pub srtp_suite: Option<SrtpSuite>,
    /// Negotiated direction.
    pub direction: Direction,
    /// Counters.
    pub counters: LegCounters,
    /// Loss, jitter, RTT, MOS and VoIP-ready state of what this leg's peer sends (sampled values
    /// as of the monitor's last 1 s evaluation).
    pub quality: QualitySnapshot,
}

/// A call as last published by its worker.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSnapshot {
    /// The call.
    pub call: CallId,
    /// When it was allocated.
    pub created: SystemTime,
    /// Time since any leg last accepted media.
    pub idle: Duration,
    /// Legs, indexed by [`LegSide::index`].
    pub legs: [LegSnapshot; 2],
}

/// Pool occupancy; `free + used + quarantined == total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PoolStatus {
    /// Ports in the configured range that belong to a whole even/odd pair (an odd `port_min` or
    /// an even `port_max` leaves one port out).
    pub total: usize,
    /// Ports ready to allocate.
    pub free: usize,
    /// Ports bound to calls.
    pub used: usize,
    /// Ports resting after release.
    pub quarantined: usize,
}

/// One worker's load and traffic since the engine started ([`MediaControl::worker_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerStats {
    /// Calls the worker owns now.
    pub calls: usize,
    /// Calls the worker has ended since start.
    pub calls_ended: u64,
    /// Both legs of every call it owns or owned, summed: packets and bytes forwarded, drops by
    /// reason. Monotonic.
    pub counters: LegCounters,
}

/// What the media plane tells the control plane without being asked.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// A leg latched (or re-latched after proof) onto a peer address.
    Latched {
        /// The call.
        call: CallId,
        /// The leg.
        side: LegSide,
        /// The peer's address.
        addr: SocketAddr,
    },
    /// A call's media ended; its ports are in quarantine.
    Ended {
        /// The call.
        call: CallId,
        /// Why.
        reason: EndReason,
        /// Final state of the call.
        last: Box<CallSnapshot>,
        /// Quality per leg and for the call, for the call record.
        quality: Box<CallQuality>,
    },
    /// A leg crossed or recovered a VoIP-ready limit (at most one per limit per evaluation).
    Quality {
        /// The call.
        call: CallId,
        /// The leg.
        side: LegSide,
        /// What happened.
        event: QualityEvent,
        /// The configured limit the event is about (ms or percent), for operators reading the
        /// event without the configuration.
        threshold: f64,
    },
}

/// The running media plane: worker threads, the port pool, the event channel.
///
/// Dropping it without [`MediaEngine::shutdown`] still stops the workers.
pub struct MediaEngine {
    /// What the control handles share.
    shared: Arc<Shared>,
    /// Worker threads, joined on shutdown.
    threads: Vec<JoinHandle<()>>,
}

/// State shared by every [`MediaControl`] clone. Only control-plane threads lock `registry`;
/// workers never touch it.
struct Shared {
    /// Validated configuration.
    config: MediaConfig,
    /// Pool and call table.
    registry: Mutex<Registry>,
    /// One link per worker.
    workers: Vec<WorkerLink>,
    /// Pairs the workers closed, waiting for quarantine.
    freed: Receiver<Freed>,
    /// Next call id.
    next_call: AtomicU64,
    /// Set once shutdown began: no more allocations.
    stopped: AtomicBool,
    /// Time origin of the instants workers publish.
    epoch: Instant,
    /// DSCP for sockets bound from now on; a reload changes it (live calls keep theirs).
    dscp: AtomicU8,
    /// Client legs allocated on the TURN server ahead of calls, when `[turn]` is on (set once,
    /// right after start).
    spares: OnceLock<SparePool>,
}

/// How the control plane reaches one worker.
struct WorkerLink {
    /// Command queue.
    commands: Sender<Command>,
    /// Wakes the worker's poll after a command.
    waker: mio::Waker,
    /// Bumped by the worker on every tick: proof of life for the watchdog.
    heartbeat: Arc<AtomicU64>,
    /// Traffic since start, published by the worker every tick.
    totals: Arc<WorkerTotals>,
}

/// Control-plane bookkeeping.
struct Registry {
    /// Port pairs.
    pool: PortPool,
    /// Live calls.
    calls: HashMap<CallId, CallRecord>,
    /// Live calls per worker, for least-loaded placement.
    load: Vec<usize>,
}

/// What the control plane remembers of a call; counters come from `published`.
struct CallRecord {
    /// Owning worker.
    worker: usize,
    /// Ports as bound.
    ports: [LegPorts; 2],
    /// Allocation time.
    created: SystemTime,
    /// Last configuration per leg.
    configs: [LegConfig; 2],
    /// Whether each leg was configured at all (an unconfigured leg accepts nothing).
    configured: [bool; 2],
    /// The worker's lock-free record.
    published: Arc<Published>,
    /// The client leg's relayed addresses (`[turn]`), for restarts.
    relay: Option<RelayedPorts>,
}

impl MediaEngine {
    /// Validates `config`, spawns the workers and returns the engine with the receiving end of its
    /// event channel (one receiver: the daemon fans events out to its subscribers).
    pub fn start(config: MediaConfig) -> crate::Result<(MediaEngine, Receiver<MediaEvent>)> {
        Self::start_relayed(config, None)
    }

    /// [`MediaEngine::start`], relaying every client leg through XCC's own TURN allocations when
    /// `relay` is set (see [`RelayConfig`]).
    pub fn start_relayed(
        config: MediaConfig,
        relay: Option<RelayConfig>,
    ) -> crate::Result<(MediaEngine, Receiver<MediaEvent>)> {
        Self::start_with(config, relay, false)
    }

    /// [`MediaEngine::start_relayed`] for a restart: the TURN spare pool takes no port until
    /// [`MediaControl::restore_done`], so stored calls ([`MediaControl::restore`]) get their
    /// ports back first.
    pub fn start_restoring(
        config: MediaConfig,
        relay: Option<RelayConfig>,
    ) -> crate::Result<(MediaEngine, Receiver<MediaEvent>)> {
        Self::start_with(config, relay, true)
    }

    fn start_with(
        config: MediaConfig,
        relay: Option<RelayConfig>,
        hold_spares: bool,
    ) -> crate::Result<(MediaEngine, Receiver<MediaEvent>)> {
        config.validate()?;
        if let Some(relay) = &relay {
            relay.validate()?;
        }
        let n = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (freed_tx, freed_rx) = crossbeam_channel::unbounded();
        let epoch = Instant::now();
        let timers = CallTimers {
            media_timeout: Duration::from_secs(config.media_timeout_secs),
            hold_timeout: Duration::from_secs(config.hold_timeout_secs),
        };
        let policy = LatchPolicy {
            learning_window: Duration::from_millis(config.rtp_learning_window_ms),
        };
        let mut links = Vec::with_capacity(n);
        let mut setups = Vec::with_capacity(n);
        for index in 0..n {
            let io_err = |source| crate::Error::Socket {
                addr: SocketAddr::new(config.bind_address, 0),
                source,
            };
            let poll = mio::Poll::new().map_err(io_err)?;
            let waker = mio::Waker::new(poll.registry(), WAKER).map_err(io_err)?;
            let (tx, rx) = crossbeam_channel::unbounded();
            let heartbeat = Arc::new(AtomicU64::new(0));
            let totals = Arc::new(WorkerTotals::default());
            links.push(WorkerLink {
                commands: tx,
                waker,
                heartbeat: heartbeat.clone(),
                totals: totals.clone(),
            });
            setups.push(WorkerSetup {
                index,
                poll,
                commands: rx,
                events: events_tx.clone(),
                freed: freed_tx.clone(),
                epoch,
                timers,
                policy,
                quality: config.quality,
                local_ip: config.bind_address,
                heartbeat,
                totals,
            });
        }
        let dscp = config.dscp;
        let shared = Arc::new(Shared {
            registry: Mutex::new(Registry {
                pool: PortPool::new(
                    config.port_min,
                    config.port_max,
                    Duration::from_secs(config.quarantine_secs),
                ),
                calls: HashMap::new(),
                load: vec![0; n],
            }),
            config,
            workers: links,
            freed: freed_rx,
            next_call: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
            epoch,
            dscp: AtomicU8::new(dscp),
            spares: OnceLock::new(),
        });
        let mut engine = MediaEngine {
            shared,
            threads: Vec::with_capacity(n),
        };
        for setup in setups {
            let name = format!("xcc-media-{}", setup.index);
            match std::thread::Builder::new()
                .name(name)
                .spawn(move || worker::run(setup))
            {
                Ok(t) => engine.threads.push(t),
                Err(source) => {
                    engine.stop();
                    return Err(crate::Error::Socket {
                        addr: SocketAddr::new(engine.shared.config.bind_address, 0),
                        source,
                    });
                }
            }
        }
        if let Some(relay) = relay {
            let server = relay.server;
            let (take, release) = spare_pairs(&engine.shared);
            match SparePool::start(relay, take, release, hold_spares) {
                Ok(pool) => {
                    let _ = engine.shared.spares.set(pool);
                }
                Err(source) => {
                    engine.stop();
                    return Err(crate::Error::Socket {
                        addr: server,
                        source,
                    });
                }
            }
        }
        tracing::info!(workers = n, "media engine started");
        Ok((engine, events_rx))
    }

    /// A cheap, cloneable handle for the control plane.
    pub fn control(&self) -> MediaControl {
        MediaControl {
            shared: self.shared.clone(),
        }
    }

    /// Ends every call (event reason [`EndReason::Shutdown`]), joins the workers, frees the ports.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.shared.stopped.store(true, Ordering::Release);
        // Spares first: their thread frees ports through the registry, workers then end calls.
        if let Some(spares) = self.shared.spares.get() {
            spares.stop();
        }
        for link in &self.shared.workers {
            let _ = link.commands.send(Command::Shutdown);
            let _ = link.waker.wake();
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a media worker panicked");
            }
        }
        drop(self.shared.lock());
        tracing::info!("media engine stopped");
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    /// Binds an even/odd pair on the media address with the current DSCP and buffer size.
    fn pair_binder(
        &self,
    ) -> impl FnMut(u16) -> Result<(mio::net::UdpSocket, mio::net::UdpSocket), crate::ports::BindError>
    {
        let opts = SocketOptions {
            dscp: self.dscp.load(Ordering::Relaxed),
            buffer_bytes: self.config.socket_buffer_bytes,
        };
        let ip = self.config.bind_address;
        move |rtp| {
            let a = bind_media_socket(SocketAddr::new(ip, rtp), opts)?;
            // The pool only holds pairs whose odd port is inside the range, so rtp + 1 fits.
            let b = bind_media_socket(SocketAddr::new(ip, rtp + 1), opts)?;
            Ok((a, b))
        }
    }

    /// Locks the registry and folds in what workers freed since the last look.
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves consistent counts (each step is one operation).
        let mut reg = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        while let Ok(f) = self.freed.try_recv() {
            if let Some(rec) = reg.calls.remove(&f.call) {
                reg.load[rec.worker] = reg.load[rec.worker].saturating_sub(1);
            }
            for rtp in f.rtp_ports {
                reg.pool.release(rtp, f.at);
            }
        }
        reg
    }

    /// Sends a command to a worker and wakes it.
    fn send(&self, worker: usize, cmd: Command) -> crate::Result<()> {
        let link = &self.workers[worker];
        link.commands.send(cmd).map_err(|_| crate::Error::Stopped)?;
        link.waker.wake().map_err(|_| crate::Error::Stopped)
    }

    fn snapshot(&self, call: CallId, rec: &CallRecord) -> Option<CallSnapshot> {
        if rec.published.is_ended() {
            return None;
        }
        // The worker writes at most once per tick; a reader only retries while a write is in
        // progress, so this bound is never reached in practice.
        let state = rec.published.read(100_000)?;
        let last = self.epoch + Duration::from_nanos(state.last_media_nanos);
        let idle = Instant::now().saturating_duration_since(last);
        let configs = [&rec.configs[0], &rec.configs[1]];
        Some(snapshot_of(
            call,
            rec.created,
            idle,
            self.config.bind_address,
            rec.ports,
            configs,
            &state,
        ))
    }
}

/// How the TURN spare thread takes pairs from, and returns them to, the engine's port pool. Weak
/// references: the engine owns the spare pool, not the other way round.
fn spare_pairs(shared: &Arc<Shared>) -> (TakePair, ReleasePair) {
    let weak = Arc::downgrade(shared);
    let take: TakePair = Box::new(move || {
        let sh = weak.upgrade().ok_or(crate::Error::Stopped)?;
        let bind = sh.pair_binder();
        let [(rtp, (a, b))] = allocate_n::<1, _>(&mut sh.lock().pool, Instant::now(), bind)?;
        Ok((rtp, [a, b]))
    });
    let weak = Arc::downgrade(shared);
    let release: ReleasePair = Box::new(move |rtp| {
        if let Some(sh) = weak.upgrade() {
            sh.lock().pool.release(rtp, Instant::now());
        }
    });
    (take, release)
}

/// Builds the public snapshot from what the control plane knows and what the worker published.
pub(crate) fn snapshot_of(
    call: CallId,
    created: SystemTime,
    idle: Duration,
    local_ip: IpAddr,
    ports: [LegPorts; 2],
    configs: [&LegConfig; 2],
    state: &CallState,
) -> CallSnapshot {
    let leg = |side: LegSide| {
        let i = side.index();
        LegSnapshot {
            side,
            local_rtp: SocketAddr::new(local_ip, ports[i].rtp),
            ports: ports[i],
            signalled: configs[i].remote_rtp,
            latched: state.legs[i].latched,
            latched_rtcp: state.legs[i].latched_rtcp,
            srtp_suite: configs[i].srtp.as_ref().map(|k| k.inbound.suite),
            direction: configs[i].direction,
            counters: state.legs[i].counters,
            quality: state.legs[i].quality,
        }
    };
    CallSnapshot {
        call,
        created,
        idle,
        legs: [leg(LegSide::Client), leg(LegSide::Pbx)],
    }
}

/// Cloneable, `Send + Sync` handle through which SIP and gRPC drive media. Never blocks on a worker.
#[derive(Clone)]
pub struct MediaControl {
    /// Engine state shared with every clone.
    shared: Arc<Shared>,
}

impl MediaControl {
    /// How XCC's own TURN relay stands; `None` when `[turn]` is off.
    pub fn relay_status(&self) -> Option<RelayStatus> {
        self.shared.spares.get().map(SparePool::status)
    }

    /// Takes four ports (two even/odd pairs) from the pool, binds them with DSCP set and hands them
    /// to a worker. Fails with [`crate::Error::PoolExhausted`] when no pair is left. With `[turn]`
    /// on, the client pair is a ready TURN spare (its relayed addresses in
    /// [`AllocatedCall::relay`]), or the call is refused with [`crate::Error::RelayUnavailable`].
    pub fn allocate(&self) -> crate::Result<AllocatedCall> {
        let sh = &self.shared;
        if sh.stopped.load(Ordering::Acquire) {
            return Err(crate::Error::Stopped);
        }
        let bind = sh.pair_binder();
        let (client, pbx, relay) = match sh.spares.get() {
            None => {
                let mut reg = sh.lock();
                let [client, pbx] = allocate_pairs(&mut reg.pool, Instant::now(), bind)?;
                (client, pbx, None)
            }
            Some(spares) => {
                // The PBX pair first: a call refused for want of ports must not use up a spare.
                let [pbx] = allocate_n::<1, _>(&mut sh.lock().pool, Instant::now(), bind)?;
                match spares.take() {
                    Ok(ready) => {
                        let [a, b] = ready.sockets;
                        ((ready.rtp_port, (a, b)), pbx, Some(Box::new(ready.relay)))
                    }
                    Err(e) => {
                        let port = pbx.0;
                        drop(pbx);
                        sh.lock().pool.put_back(port);
                        return Err(e);
                    }
                }
            }
        };
        let ((crtp, (c0, c1)), (prtp, (p0, p1))) = (client, pbx);
        let ports = [
            LegPorts {
                rtp: crtp,
                rtcp: crtp + 1,
            },
            LegPorts {
                rtp: prtp,
                rtcp: prtp + 1,
            },
        ];
        let relayed = relay.as_ref().map(|r| r.relayed());
        let mut reg = sh.lock();
        // `load` has one entry per worker and there is at least one worker.
        let worker = (0..reg.load.len())
            .min_by_key(|&w| reg.load[w])
            .unwrap_or(0);
        let call = CallId(sh.next_call.fetch_add(1, Ordering::Relaxed));
        let published = Arc::new(Published::new(&CallState::default()));
        let created = SystemTime::now();
        reg.load[worker] += 1;
        reg.calls.insert(
            call,
            CallRecord {
                worker,
                ports,
                created,
                configs: Default::default(),
                configured: [false; 2],
                published: published.clone(),
                relay: relayed,
            },
        );
        drop(reg);
        let new = NewCall {
            call,
            sockets: [c0, c1, p0, p1],
            ports,
            created,
            published,
            resume: None,
            relay,
        };
        sh.send(worker, Command::Add(Box::new(new)))?;
        tracing::debug!(%call, worker, client = crtp, pbx = prtp, relayed = ?relayed, "call allocated");
        Ok(AllocatedCall {
            call,
            ports,
            relay: relayed,
        })
    }

    /// (Re)configures one leg: peer address, keys, rtcp-mux, direction. Re-opens the plain-RTP
    /// learning window; SRTP legs keep latching only on authenticated packets.
    pub fn configure_leg(
        &self,
        call: CallId,
        side: LegSide,
        config: LegConfig,
    ) -> crate::Result<()> {
        let mut reg = self.shared.lock();
        let rec = reg
            .calls
            .get_mut(&call)
            .filter(|r| !r.published.is_ended())
            .ok_or(crate::Error::UnknownCall(call))?;
        rec.configs[side.index()] = config.clone();
        rec.configured[side.index()] = true;
        rec.published.bump_resume();
        let worker = rec.worker;
        drop(reg);
        self.shared.send(
            worker,
            Command::Configure {
                call,
                side,
                config: Box::new(config),
            },
        )
    }

    /// Ends the call: its sockets close, its ports go to quarantine, an `Ended` event follows.
    pub fn release(&self, call: CallId) -> crate::Result<()> {
        let reg = self.shared.lock();
        let rec = reg
            .calls
            .get(&call)
            .filter(|r| !r.published.is_ended())
            .ok_or(crate::Error::UnknownCall(call))?;
        let worker = rec.worker;
        drop(reg);
        self.shared.send(worker, Command::Release(call))
    }

    /// The call as last published by its worker.
    pub fn snapshot(&self, call: CallId) -> crate::Result<CallSnapshot> {
        let reg = self.shared.lock();
        let rec = reg
            .calls
            .get(&call)
            .ok_or(crate::Error::UnknownCall(call))?;
        self.shared
            .snapshot(call, rec)
            .ok_or(crate::Error::UnknownCall(call))
    }

    /// Every live call as last published.
    pub fn calls(&self) -> Vec<CallSnapshot> {
        let reg = self.shared.lock();
        let mut out: Vec<CallSnapshot> = reg
            .calls
            .iter()
            .filter_map(|(&id, rec)| self.shared.snapshot(id, rec))
            .collect();
        out.sort_by_key(|s| s.call);
        out
    }

    /// What every live call needs to resume after a restart: configuration from the registry,
    /// latches and SRTP progress from what the workers last published (no worker is asked).
    pub fn resume_points(&self) -> Vec<ResumePoint> {
        self.resume_points_changed(&HashMap::new())
            .changed
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// [`MediaControl::resume_points`] for the calls whose resume generation is not the one in
    /// `known` (or that `known` lacks), with that generation, plus the ids of every live call.
    /// A call's generation moves with its configuration, latches and SRTP checkpoints, so a
    /// reader that wrote a call at generation `g` has nothing new to write while it stays `g`;
    /// unchanged calls are neither decoded nor cloned.
    pub fn resume_points_changed(&self, known: &HashMap<CallId, u64>) -> ResumeScan {
        let reg = self.shared.lock();
        let mut scan = ResumeScan::default();
        for (&call, rec) in reg.calls.iter().filter(|(_, r)| !r.published.is_ended()) {
            scan.live.push(call);
            // Before the state: a change published after this read moves it again.
            let generation = rec.published.resume_gen();
            if known.get(&call) == Some(&generation) {
                continue;
            }
            let Some(state) = rec.published.read(100_000) else {
                continue;
            };
            let leg = |i: usize| LegResume {
                config: rec.configured[i].then(|| rec.configs[i].clone()),
                latched_rtp: state.legs[i].latched,
                latched_rtcp: state.legs[i].latched_rtcp,
                srtp: state.legs[i].srtp,
            };
            scan.changed.push((
                generation,
                ResumePoint {
                    call,
                    created: rec.created,
                    ports: rec.ports,
                    legs: [leg(0), leg(1)],
                    relay: rec.relay,
                },
            ));
        }
        drop(reg);
        scan.live.sort_unstable();
        // Sorted by id (a stable order for writers and tests); the key is a copy, the moves are
        // of the changed calls only.
        scan.changed.sort_by_key(|(_, p)| p.call);
        scan
    }

    /// Takes a call over again after a restart: binds exactly its stored ports (the pool marks
    /// them used), configures its legs, restores latches and SRTP progress, and hands it to a
    /// worker, which forwards at once. The call keeps its id; later allocations get higher ids.
    ///
    /// Fails with [`crate::Error::PortUnavailable`] when a stored port is outside the pool or
    /// cannot be bound (another process took it): the caller reports and drops the call.
    pub fn restore(&self, point: ResumePoint) -> crate::Result<AllocatedCall> {
        let sh = &self.shared;
        if sh.stopped.load(Ordering::Acquire) {
            return Err(crate::Error::Stopped);
        }
        let mut bind = sh.pair_binder();
        let now = Instant::now();
        let mut reg = sh.lock();
        if reg.calls.contains_key(&point.call) {
            return Err(crate::Error::PortUnavailable {
                port: point.ports[0].rtp,
                reason: "a live call already has this id",
            });
        }
        let mut taken: Vec<u16> = Vec::with_capacity(2);
        let mut sockets = Vec::with_capacity(4);
        for p in point.ports {
            let fail = |reg: &mut Registry, taken: &[u16], reason| {
                for &rtp in taken {
                    reg.pool.put_back(rtp);
                }
                crate::Error::PortUnavailable {
                    port: p.rtp,
                    reason,
                }
            };
            if p.rtcp != p.rtp.wrapping_add(1) || !reg.pool.take_exact(p.rtp, now) {
                return Err(fail(&mut reg, &taken, "not a free pair of the pool"));
            }
            taken.push(p.rtp);
            // The check above made `p.rtcp` = `p.rtp + 1`, the pair the binder binds.
            match bind(p.rtp) {
                Ok((a, b)) => {
                    sockets.push(a);
                    sockets.push(b);
                }
                Err(e) => {
                    let busy = matches!(e, crate::ports::BindError::Busy);
                    tracing::warn!(call = %point.call, port = p.rtp, busy, "stored port cannot be bound");
                    return Err(fail(&mut reg, &taken, "cannot be bound"));
                }
            }
        }
        let Ok(sockets) = <[mio::net::UdpSocket; 4]>::try_from(sockets) else {
            // Two pairs were bound above, two sockets each.
            return Err(crate::Error::Stopped);
        };
        let worker = (0..reg.load.len())
            .min_by_key(|&w| reg.load[w])
            .unwrap_or(0);
        sh.next_call.fetch_max(point.call.0 + 1, Ordering::Relaxed);
        // Until the worker's first publication, readers (the store among them) see what is
        // being restored, not an empty call.
        let mut initial = CallState::default();
        for (state, leg) in initial.legs.iter_mut().zip(&point.legs) {
            state.latched = leg.latched_rtp;
            state.latched_rtcp = leg.latched_rtcp;
            state.srtp = leg.srtp;
        }
        let published = Arc::new(Published::new(&initial));
        reg.load[worker] += 1;
        let configs = [
            point.legs[0].config.clone().unwrap_or_default(),
            point.legs[1].config.clone().unwrap_or_default(),
        ];
        reg.calls.insert(
            point.call,
            CallRecord {
                worker,
                ports: point.ports,
                created: point.created,
                configs,
                configured: [
                    point.legs[0].config.is_some(),
                    point.legs[1].config.is_some(),
                ],
                published: published.clone(),
                relay: point.relay.filter(|_| sh.spares.get().is_some()),
            },
        );
        drop(reg);
        let relay = match (point.relay, sh.spares.get()) {
            (Some(relayed), Some(spares)) => match spares.resume(relayed, now) {
                Some(relay) => Some(Box::new(relay)),
                None => {
                    tracing::warn!(call = %point.call, ?relayed, "call was relayed over TCP: its allocation ended with the old process, the client leg is not reachable where the client sends");
                    None
                }
            },
            (Some(relayed), None) => {
                tracing::warn!(call = %point.call, ?relayed, "call was relayed through TURN, [turn] is off now: its client leg is not reachable where the client sends");
                None
            }
            (None, _) => None,
        };
        let new = NewCall {
            call: point.call,
            sockets,
            ports: point.ports,
            created: point.created,
            published,
            resume: Some(Box::new(point.legs.clone())),
            relay,
        };
        sh.send(worker, Command::Add(Box::new(new)))?;
        tracing::info!(call = %point.call, worker, client = point.ports[0].rtp, pbx = point.ports[1].rtp, "call restored");
        Ok(AllocatedCall {
            call: point.call,
            ports: point.ports,
            relay: None,
        })
    }

    /// Every stored call is restored (or dropped): the TURN spare pool of an engine started
    /// with [`MediaEngine::start_restoring`] may take ports now.
    pub fn restore_done(&self) {
        if let Some(spares) = self.shared.spares.get() {
            spares.release_hold();
        }
    }

    /// Moves the port pool to `port_min..=port_max` while calls run (configuration reload): new
    /// ports are handed out at once; ports outside the new range stop being handed out, and those
    /// carrying a call leave the pool (their sockets close) when that call ends.
    pub fn resize_pool(&self, port_min: u16, port_max: u16) -> crate::Result<RangeChange> {
        let mut probe = self.shared.config.clone();
        probe.port_min = port_min;
        probe.port_max = port_max;
        probe.validate()?;
        let mut reg = self.shared.lock();
        let in_use: std::collections::HashSet<u16> = reg
            .calls
            .values()
            .flat_map(|r| r.ports.iter().map(|p| p.rtp))
            .collect();
        let change = reg
            .pool
            .set_range(port_min, port_max, Instant::now(), |p| in_use.contains(&p));
        tracing::info!(
            port_min,
            port_max,
            added = change.added,
            removed = change.removed,
            retiring = change.retiring,
            "media port pool resized"
        );
        Ok(change)
    }

    /// Ports held by live calls but outside the pool's range since a reload shrank it.
    pub fn retiring_ports(&self) -> usize {
        let reg = self.shared.lock();
        reg.calls
            .values()
            .flat_map(|r| r.ports.iter())
            .filter(|p| !reg.pool.contains(p.rtp))
            .count()
            * 2
    }

    /// DSCP for media sockets bound from now on (new and restored calls); live calls keep the
    /// mark they were bound with.
    pub fn set_dscp(&self, dscp: u8) -> crate::Result<()> {
        if dscp > 63 {
            return Err(crate::Error::Config {
                key: "dscp",
                reason: "DSCP is 6 bits (0-63)".to_owned(),
            });
        }
        self.shared.dscp.store(dscp, Ordering::Relaxed);
        Ok(())
    }

    /// DSCP that new calls get.
    pub fn dscp(&self) -> u8 {
        self.shared.dscp.load(Ordering::Relaxed)
    }

    /// Pool occupancy.
    pub fn pool_status(&self) -> PoolStatus {
        self.shared.lock().pool.status(Instant::now())
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// Per-worker load and traffic since start, in worker order: for monitoring. Counters are
    /// monotonic (ended calls stay counted) and at most one tick (50 ms) old.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        let load = self.shared.lock().load.clone();
        self.shared
            .workers
            .iter()
            .zip(load)
            .map(|(w, calls)| {
                let (counters, calls_ended) = w.totals.load();
                WorkerStats {
                    calls,
                    calls_ended,
                    counters,
                }
            })
            .collect()
    }

    /// Each worker's tick counter, in worker order. A worker bumps its counter once per tick
    /// (every 50 ms, busy or idle), so a counter that stops moving means a stalled worker: the
    /// daemon's systemd watchdog only pings while every counter advances.
    pub fn worker_heartbeats(&self) -> Vec<u64> {
        self.shared
            .workers
            .iter()
            .map(|w| w.heartbeat.load(Ordering::Relaxed))
            .collect()
    }
}
