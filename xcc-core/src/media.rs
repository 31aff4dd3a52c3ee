//! The control plane's one handle on the media plane.
//!
//! SIP and gRPC both drive media through [`MediaControl`]: allocate a call (four ports), configure
//! each leg once the far end's SDP is known, read counters, release. Commands travel to the owning
//! worker over a channel; counters come back from snapshots the workers publish, so no caller ever
//! blocks a worker.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use crate::ids::{CallId, LegSide};
use crate::srtp::{KeyingMaterial, SrtpSuite};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The peer's key (from its `a=crypto`): decrypts what the peer sends to XCC.
    pub inbound: KeyingMaterial,
    /// XCC's key for this leg (from XCC's `a=crypto`): encrypts what XCC sends to the peer.
    pub outbound: KeyingMaterial,
}

/// Where a leg's peer is and how to talk to it, learned from signalling.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
    /// Drops by reason.
    pub drops: DropCounters,
}

/// A leg as last published by its worker.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// A call as last published by its worker.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Pool occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PoolStatus {
    /// Ports in the configured range.
    pub total: usize,
    /// Ports ready to allocate.
    pub free: usize,
    /// Ports bound to calls.
    pub used: usize,
    /// Ports resting after release.
    pub quarantined: usize,
}

/// What the media plane tells the control plane without being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    },
}

/// The running media plane: worker threads, the port pool, the event channel.
///
/// Dropping it without [`MediaEngine::shutdown`] still stops the workers.
pub struct MediaEngine {
    _private: (),
}

impl MediaEngine {
    /// Validates `config`, spawns the workers and returns the engine with the receiving end of its
    /// event channel (one receiver: the daemon fans events out to its subscribers).
    pub fn start(
        config: MediaConfig,
    ) -> crate::Result<(MediaEngine, crossbeam_channel::Receiver<MediaEvent>)> {
        let _ = config;
        unimplemented!("media plane: issue 2")
    }

    /// A cheap, cloneable handle for the control plane.
    pub fn control(&self) -> MediaControl {
        unimplemented!("media plane: issue 2")
    }

    /// Ends every call (event reason [`EndReason::Shutdown`]), joins the workers, frees the ports.
    pub fn shutdown(self) {}
}

/// Cloneable, `Send + Sync` handle through which SIP and gRPC drive media. Never blocks on a worker.
#[derive(Clone)]
pub struct MediaControl {
    _private: (),
}

impl MediaControl {
    /// Takes four ports (two even/odd pairs) from the pool, binds them with DSCP set and hands them
    /// to a worker. Fails with [`crate::Error::PoolExhausted`] when no pair is left.
    pub fn allocate(&self) -> crate::Result<AllocatedCall> {
        unimplemented!("media plane: issue 2")
    }

    /// (Re)configures one leg: peer address, keys, rtcp-mux, direction. Re-opens the plain-RTP
    /// learning window; SRTP legs keep latching only on authenticated packets.
    pub fn configure_leg(
        &self,
        call: CallId,
        side: LegSide,
        config: LegConfig,
    ) -> crate::Result<()> {
        let _ = (call, side, config);
        unimplemented!("media plane: issue 2")
    }

    /// Ends the call: its sockets close, its ports go to quarantine, an `Ended` event follows.
    pub fn release(&self, call: CallId) -> crate::Result<()> {
        let _ = call;
        unimplemented!("media plane: issue 2")
    }

    /// The call as last published by its worker.
    pub fn snapshot(&self, call: CallId) -> crate::Result<CallSnapshot> {
        let _ = call;
        unimplemented!("media plane: issue 2")
    }

    /// Every live call as last published.
    pub fn calls(&self) -> Vec<CallSnapshot> {
        unimplemented!("media plane: issue 2")
    }

    /// Pool occupancy.
    pub fn pool_status(&self) -> PoolStatus {
        unimplemented!("media plane: issue 2")
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        unimplemented!("media plane: issue 2")
    }
}
