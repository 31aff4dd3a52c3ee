//! One leg of a call, sans-IO: where its peer is, whom it has latched onto, what it counted.
//!
//! Every packet decision is a pure function of (leg state, packet, now), implementing DESIGN.md
//! "Latching and security":
//! - an SRTP leg latches, and re-latches, only on a packet that authenticates from the new source;
//! - a plain-RTP leg latches during the learning window that follows each (re)configuration,
//!   preferring the signalled address: a packet from it always wins inside the window, another
//!   source may latch only while nothing came from the signalled address; after the window the
//!   latch is frozen (and an unlatched leg accepts only its signalled address);
//! - everything else is dropped and counted by reason, never fatal.

use crate::prefetch::prefetch;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::ids::LegSide;
use crate::media::{
    Direction, DropCounters, IceSetup, LegConfig, LegCounters, LegSrtpProgress, SrtpKeys,
};
use crate::nat::candidate::{COMPONENT_RTP, Candidate, CandidateType};
use crate::nat::ice::{CheckLimits, CheckOutcome, IceLite};
use crate::nat::punch::{ProbeKind, PunchSchedule, Puncher};
use crate::quality::{ClockRates, LegMonitor, MonitorConfig};
use crate::rtp::{self, PacketClass};
use crate::srtp::{SrtpContext, SrtpError, SrtpPolicy};

/// Which of the leg's two local sockets a packet came in on or goes out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalPort {
    /// The even RTP port (also RTCP with rtcp-mux).
    Rtp,
    /// The odd RTCP port.
    Rtcp,
}

/// Why a packet was dropped; each maps to one field of [`DropCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// SRTP/SRTCP authentication failed.
    AuthFailure,
    /// SRTP/SRTCP replayed or too old.
    Replay,
    /// From a source that is not (and may not become) the latched one.
    Stranger,
    /// Looked like RTP/RTCP but its header does not hold together.
    Malformed,
    /// Nowhere to send it, or the receiving peer does not take media now.
    NoRoute,
    /// Not media at all (STUN, keepalive "PING", too short, DTLS ...).
    Stray,
    /// The kernel refused the send.
    SendError,
}

impl DropReason {
    /// The drop reason for a packet from the expected source that failed to unprotect.
    fn from_srtp(e: SrtpError) -> Self {
        match e {
            SrtpError::AuthFailed => DropReason::AuthFailure,
            SrtpError::Replay => DropReason::Replay,
            SrtpError::TooShort
            | SrtpError::BufferTooSmall
            | SrtpError::Malformed
            | SrtpError::KeyExhausted => DropReason::Malformed,
        }
    }

    /// Adds one to the matching counter.
    pub fn count(self, drops: &mut DropCounters) {
        let c = match self {
            DropReason::AuthFailure => &mut drops.auth_failure,
            DropReason::Replay => &mut drops.replay,
            DropReason::Stranger => &mut drops.stranger,
            DropReason::Malformed => &mut drops.malformed,
            DropReason::NoRoute => &mut drops.no_route,
            DropReason::Stray => &mut drops.stray,
            DropReason::SendError => &mut drops.send_error,
        };
        *c += 1;
    }
}

/// What the leg made of a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Accepted: the first `len` bytes of the buffer are now plain RTP/RTCP, ready for the other
    /// leg. `latched` is `Some` when this packet moved the latch (an event for the control plane).
    Media {
        /// Plaintext length.
        len: usize,
        /// RTCP rather than RTP.
        rtcp: bool,
        /// The new latched address, when this packet (re)latched the leg.
        latched: Option<SocketAddr>,
    },
    /// Dropped (already counted on this leg).
    Drop(DropReason),
}

/// Where an outgoing packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outbound {
    /// Bytes to send from the start of the buffer.
    pub len: usize,
    /// Local socket to send from (symmetric RTP: the one the peer sends to).
    pub from: LocalPort,
    /// Peer address.
    pub to: SocketAddr,
}

/// The address one stream (RTP, or RTCP on its own port) of a leg is latched onto.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Latch {
    /// Where the peer's packets come from, and where XCC sends.
    addr: Option<SocketAddr>,
    /// A packet from the signalled address came during the current learning window: no other
    /// source may take the latch until the next (re)configuration.
    signalled_seen: bool,
}

impl Latch {
    /// Plain-RTP latching rule; returns whether `from` is accepted and whether the latch moved.
    fn plain(
        &mut self,
        from: SocketAddr,
        signalled: Option<SocketAddr>,
        learning: bool,
    ) -> Option<bool> {
        let is_signalled = signalled == Some(from);
        if self.addr == Some(from) {
            self.signalled_seen |= learning && is_signalled;
            return Some(false);
        }
        let may_latch = if learning {
            is_signalled || (!self.signalled_seen && self.addr.is_none())
        } else {
            // Frozen; an unlatched leg still takes its signalled peer (media may start long after
            // configuration, e.g. after ringing).
            is_signalled && self.addr.is_none()
        };
        if !may_latch {
            return None;
        }
        self.signalled_seen |= learning && is_signalled;
        self.addr = Some(from);
        Some(true)
    }
}

/// SRTP state of a leg: the keys it was built from and one context per direction.
struct LegCrypto {
    /// What the contexts were derived from; an identical re-configuration keeps them (and so
    /// keeps the ROC and replay window instead of reopening old packets to replay).
    keys: SrtpKeys,
    /// Session parameters the contexts were built with.
    policy: SrtpPolicy,
    /// Unprotects what the peer sends.
    inbound: SrtpContext,
    /// Protects what XCC sends to the peer.
    outbound: SrtpContext,
}

impl std::fmt::Debug for LegCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegCrypto")
            .field("suite", &self.keys.inbound.suite)
            .finish_non_exhaustive()
    }
}

/// Learning window of plain-RTP legs and the clock it runs on.
#[derive(Debug, Clone, Copy)]
pub struct LatchPolicy {
    /// How long after each (re)configuration a plain leg may learn its peer's address.
    pub learning_window: Duration,
}

/// One leg's state, owned by the worker that owns the call.
#[derive(Debug)]
pub struct Leg {
    /// Client or PBX.
    side: LegSide,
    /// What signalling said.
    config: LegConfig,
    /// Latch of the RTP stream (and of RTCP with rtcp-mux).
    rtp_latch: Latch,
    /// Latch of RTCP on the odd port.
    rtcp_latch: Latch,
    /// End of the current learning window.
    learning_until: Instant,
    /// Whether the leg has been configured at all (an unconfigured leg accepts nothing).
    configured: bool,
    /// `Some` on an SRTP leg.
    crypto: Option<LegCrypto>,
    /// Traffic and drops.
    counters: LegCounters,
    /// Quality of what the peer sends, and RTT from the RTCP exchanged with it.
    monitor: LegMonitor,
    /// ICE-lite responder, when signalling set one up.
    ice: Option<IceLite>,
    /// Hole punching towards the client until the leg latches (client legs only).
    punch: Punch,
}

/// Hole-punching state of a leg: a configuration asks for it, the next worker tick starts it (it
/// needs the worker's RNG for the tie-breaker and transaction ids), latching ends it.
#[derive(Debug, Default)]
enum Punch {
    /// Nothing to do (PBX leg, no destination, already latched, or finished).
    #[default]
    Idle,
    /// (Re)configured with a destination and not latched: start at the next tick.
    Requested,
    /// Probing.
    Running(Box<Puncher>),
}

/// What [`Leg::handle_stun`] did with a STUN datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StunReply {
    /// Send the first `n` bytes of the output buffer back to the source, from the same socket.
    pub send: Option<usize>,
    /// The leg latched (or re-latched) onto this source: a nominated, authenticated check.
    pub latched: Option<SocketAddr>,
}

impl Leg {
    /// A fresh, unconfigured leg: it drops everything as `no_route`/stranger until configured.
    pub fn new(side: LegSide, now: Instant) -> Self {
        Self::with_monitor(side, now, MonitorConfig::default())
    }

    /// [`Leg::new`] with the quality monitor's settings.
    pub fn with_monitor(side: LegSide, now: Instant, quality: MonitorConfig) -> Self {
        Self {
            side,
            config: LegConfig::default(),
            rtp_latch: Latch::default(),
            rtcp_latch: Latch::default(),
            learning_until: now,
            configured: false,
            crypto: None,
            counters: LegCounters::default(),
            ice: None,
            punch: Punch::Idle,
            monitor: LegMonitor::new(quality, now),
        }
    }

    /// Applies signalling and reopens the learning window. Existing latches stay (a re-INVITE with
    /// the same peer must not interrupt media); a new signalled address wins inside the window.
    pub fn configure(&mut self, config: LegConfig, policy: LatchPolicy, now: Instant) {
        self.crypto = match (config.srtp.as_ref(), self.crypto.take()) {
            (None, _) => None,
            (Some(k), Some(c)) if c.keys == *k && c.policy == config.srtp_policy => Some(c),
            (Some(k), _) => Some(LegCrypto {
                keys: k.clone(),
                policy: config.srtp_policy,
                inbound: SrtpContext::new(&k.inbound, config.srtp_policy),
                outbound: SrtpContext::new(&k.outbound, config.srtp_policy),
            }),
        };
        self.ice = match (config.ice.as_ref(), self.ice.take()) {
            (None, _) => None,
            // Same local credentials (a re-INVITE without ICE restart): keep the rate limiter.
            (Some(IceSetup { local, remote, .. }), Some(mut ice)) if ice.local() == local => {
                ice.set_remote(remote.as_ref());
                Some(ice)
            }
            (Some(IceSetup { local, remote, .. }), _) => Some(IceLite::new(
                local.clone(),
                remote.as_ref(),
                CheckLimits::default(),
            )),
        };
        // Rates follow the latest SDP; the statistics themselves survive a re-INVITE (an SSRC
        // or sequence restart opens a new epoch inside the monitor).
        let rates = self.monitor.clock_rates_mut();
        *rates = ClockRates::default();
        for &(pt, rate) in &config.clock_rates {
            if let Err(error) = rates.set(pt, rate) {
                tracing::debug!(side = ?self.side, pt, rate, %error, "ignoring clock rate");
            }
        }
        self.config = config;
        self.learning_until = now + policy.learning_window;
        self.rtp_latch.signalled_seen = false;
        self.rtcp_latch.signalled_seen = false;
        self.configured = true;
        // Every configuration of an unlatched client leg (its offer, then again with XCC's answer)
        // restarts punching, so a long ringing phase does not use the schedule up before the
        // answer reaches the client.
        let has_target = self.config.remote_rtp.is_some()
            || self
                .config
                .ice
                .as_ref()
                .is_some_and(|i| !i.candidates.is_empty());
        self.punch = if self.side == LegSide::Client && has_target && self.rtp_latch.addr.is_none()
        {
            Punch::Requested
        } else {
            Punch::Idle
        };
    }

    /// Advances hole punching on the worker tick: starts a requested puncher (`rng` draws its
    /// tie-breaker and transaction ids), ends it once the leg latched or the schedule is used up.
    pub fn handle_punch_timeout(&mut self, now: Instant, rng: &mut impl rand::RngCore) {
        if self.rtp_latch.addr.is_some() {
            self.punch = Punch::Idle;
            return;
        }
        if matches!(self.punch, Punch::Requested) {
            // Signalled address first, then candidates; the puncher keeps the first MAX_TARGETS
            // distinct ones. Once per configuration, never per tick.
            let ice = self.config.ice.as_ref();
            let candidates = ice.map(|i| i.candidates.as_slice()).unwrap_or_default();
            let mut targets = [SocketAddr::from(([0, 0, 0, 0], 0)); crate::nat::punch::MAX_TARGETS];
            let mut n = 0;
            for (slot, t) in targets
                .iter_mut()
                .zip(self.config.remote_rtp.iter().chain(candidates))
            {
                *slot = *t;
                n += 1;
            }
            let targets = &targets[..n];
            let kind = match ice {
                Some(IceSetup {
                    local,
                    remote: Some(remote),
                    ..
                }) => ProbeKind::Ice {
                    local: local.clone(),
                    remote: remote.clone(),
                    tie_breaker: rng.next_u64(),
                    priority: Candidate::priority_for(CandidateType::PeerReflexive, COMPONENT_RTP),
                },
                _ => ProbeKind::Keepalive,
            };
            self.punch = Punch::Running(Box::new(Puncher::new(
                now,
                targets,
                kind,
                PunchSchedule::default(),
            )));
        }
        if let Punch::Running(p) = &mut self.punch {
            p.handle_timeout(now, rng);
        }
    }

    /// The next hole-punching probe, written into `buf` (at least 128 bytes): destination and
    /// length, to send from the leg's RTP socket. Counted as sent.
    pub fn poll_punch(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let Punch::Running(p) = &mut self.punch else {
            return None;
        };
        let probe = p.poll_transmit(buf);
        if probe.is_some() {
            self.counters.punch_sent += 1;
        } else if p.is_done() {
            self.punch = Punch::Idle;
        }
        probe
    }

    /// Whether the leg is punching (or will at the next tick).
    pub fn is_punching(&self) -> bool {
        !matches!(self.punch, Punch::Idle)
    }

    /// Which side this leg faces.
    pub fn side(&self) -> LegSide {
        self.side
    }

    /// The current signalling.
    pub fn config(&self) -> &LegConfig {
        &self.config
    }

    /// Counters so far.
    pub fn counters(&self) -> &LegCounters {
        &self.counters
    }

    /// The quality monitor of this leg.
    pub fn monitor(&self) -> &LegMonitor {
        &self.monitor
    }

    /// The quality monitor, for its timer and events.
    pub fn monitor_mut(&mut self) -> &mut LegMonitor {
        &mut self.monitor
    }

    /// Latched RTP source.
    pub fn latched_rtp(&self) -> Option<SocketAddr> {
        self.rtp_latch.addr
    }

    /// Latched RTCP source (the RTP one with rtcp-mux).
    pub fn latched_rtcp(&self) -> Option<SocketAddr> {
        if self.config.rtcp_mux {
            self.rtp_latch.addr
        } else {
            self.rtcp_latch.addr
        }
    }

    /// Hints what a packet arriving on `port` of this leg will touch: configuration, latch,
    /// counters, the inbound SRTP context and, for RTP, the receive statistics (see
    /// [`crate::prefetch`]). RTCP arriving on the RTP port (rtcp-mux) is rarer than RTP there,
    /// so the RTP state is hinted.
    pub fn prefetch_receive(&self, port: LocalPort) {
        let rtcp = self.prefetch_route(port);
        if let Some(c) = &self.crypto {
            c.inbound.prefetch(true, rtcp);
        }
        if !rtcp {
            self.monitor.prefetch_rtp();
        }
    }

    /// Hints what forwarding a packet of the kind `port` carries to this leg's peer will touch:
    /// configuration, latch, counters and the outbound SRTP context (see [`crate::prefetch`]).
    pub fn prefetch_send(&self, port: LocalPort) {
        let rtcp = self.prefetch_route(port);
        if let Some(c) = &self.crypto {
            c.outbound.prefetch(false, rtcp);
        }
    }

    /// Hints what either direction reads for `port`: configuration, that port's latch, counters.
    /// Returns whether `port` is the RTCP port.
    fn prefetch_route(&self, port: LocalPort) -> bool {
        let rtcp = port == LocalPort::Rtcp;
        prefetch(&self.config);
        prefetch(if rtcp {
            &self.rtcp_latch
        } else {
            &self.rtp_latch
        });
        prefetch(&self.counters);
        rtcp
    }

    /// Signalled RTCP address: explicit, else RTP port + 1, else the RTP address with rtcp-mux.
    fn signalled_rtcp(&self) -> Option<SocketAddr> {
        if self.config.rtcp_mux {
            return self.config.remote_rtp;
        }
        self.config.remote_rtcp.or_else(|| {
            self.config
                .remote_rtp
                .and_then(|a| Some(SocketAddr::new(a.ip(), a.port().checked_add(1)?)))
        })
    }

    /// Where this leg's SRTP contexts stand (default on a plain leg): the store checkpoints it so a
    /// restarted xccd resumes with the right ROC and never reuses a packet index.
    pub fn srtp_progress(&self) -> LegSrtpProgress {
        self.crypto
            .as_ref()
            .map_or_else(LegSrtpProgress::default, |c| LegSrtpProgress {
                inbound: c.inbound.recv_progress(),
                outbound: c.outbound.send_progress(),
            })
    }

    /// Restores what a restart would otherwise lose, after [`Leg::configure`] with the stored
    /// configuration: the latched addresses and the SRTP progress of both directions.
    pub fn resume(
        &mut self,
        latched_rtp: Option<SocketAddr>,
        latched_rtcp: Option<SocketAddr>,
        srtp: &LegSrtpProgress,
    ) {
        self.rtp_latch.addr = latched_rtp;
        if !self.config.rtcp_mux {
            self.rtcp_latch.addr = latched_rtcp;
        }
        if let Some(c) = self.crypto.as_mut() {
            c.inbound.resume_recv(&srtp.inbound);
            c.outbound.resume_send(&srtp.outbound);
        }
    }

    /// ICE-lite counters, when the leg has a responder.
    pub fn ice_counters(&self) -> Option<crate::nat::ice::CheckCounters> {
        self.ice.as_ref().map(IceLite::counters)
    }

    /// Moves the latch of `port`'s stream to `from` because `from` proved it knows a secret of
    /// this leg (a nominated ICE check, a hole-punching answer), as an authenticated SRTP packet
    /// does. Returns whether the latch moved.
    pub fn latch_authenticated(&mut self, port: LocalPort, from: SocketAddr) -> bool {
        if !self.configured {
            return false;
        }
        let latch = if port == LocalPort::Rtcp && !self.config.rtcp_mux {
            &mut self.rtcp_latch
        } else {
            &mut self.rtp_latch
        };
        let moved = latch.addr != Some(from);
        latch.addr = Some(from);
        moved
    }

    /// Handles a STUN datagram (RFC 7983 demux, [`crate::nat::stun::is_stun`]) received on
    /// `port` from `from`: an authenticated check is answered into `out`, a nominated one latches.
    /// Without a responder, or when the check is refused, it is a counted `stray` drop.
    /// No allocation: the response is written into the caller's buffer.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        port: LocalPort,
        from: SocketAddr,
        pkt: &[u8],
        out: &mut [u8],
    ) -> StunReply {
        // An authenticated answer to one of XCC's own probes proves the client is reachable at
        // `from`: latch there, as a nominated check would.
        if let Punch::Running(p) = &self.punch
            && port == LocalPort::Rtp
            && p.handle_response(from, pkt)
        {
            self.counters.punch_answered += 1;
            self.punch = Punch::Idle;
            let latched = self.latch_authenticated(port, from).then_some(from);
            return StunReply {
                send: None,
                latched,
            };
        }
        let Some(ice) = self.ice.as_mut().filter(|_| self.configured) else {
            DropReason::Stray.count(&mut self.counters.drops);
            return StunReply::default();
        };
        match ice.handle_request(now, from, pkt, out) {
            CheckOutcome::Success { len, nominated } => {
                let latched = (nominated && self.latch_authenticated(port, from)).then_some(from);
                StunReply {
                    send: Some(len),
                    latched,
                }
            }
            CheckOutcome::RoleConflict { len } => StunReply {
                send: Some(len),
                latched: None,
            },
            CheckOutcome::Keepalive => StunReply::default(),
            CheckOutcome::Dropped(_) => {
                DropReason::Stray.count(&mut self.counters.drops);
                StunReply::default()
            }
        }
    }

    /// Handles a datagram of `len` bytes at the start of `buf`, received on `port` from `from`.
    /// On acceptance the buffer holds plaintext ready for the other leg.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        port: LocalPort,
        from: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Inbound {
        let verdict = self.decide(now, port, from, buf, len);
        match verdict {
            Inbound::Media {
                rtcp,
                len: plain_len,
                ..
            } => {
                self.counters.packets_in += 1;
                self.counters.bytes_in += len as u64;
                self.counters.rtcp_in += u64::from(rtcp);
                if let Some(plain) = buf.get(..plain_len) {
                    self.observe(now, plain, rtcp);
                }
            }
            Inbound::Drop(reason) => reason.count(&mut self.counters.drops),
        }
        verdict
    }

    /// Feeds an accepted plaintext packet to the monitor. RTCP the monitor cannot parse is
    /// counted and still forwarded: it authenticated and passed the header check, and the other
    /// leg's peer may read what XCC's stricter parser refuses.
    fn observe(&mut self, now: Instant, plain: &[u8], rtcp: bool) {
        if rtcp {
            if self.monitor.handle_rtcp(now, plain).is_err() {
                self.counters.rtcp_malformed += 1;
            }
        } else if let Ok(header) = rtp::parse_rtp(plain) {
            self.monitor.handle_rtp(now, (&header).into());
        }
    }

    fn decide(
        &mut self,
        now: Instant,
        port: LocalPort,
        from: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Inbound {
        let Some(pkt) = buf.get(..len) else {
            return Inbound::Drop(DropReason::Malformed);
        };
        let rtcp = match (rtp::classify(pkt), port) {
            (PacketClass::Stun | PacketClass::Stray, _) => return Inbound::Drop(DropReason::Stray),
            (PacketClass::Rtp, LocalPort::Rtp) => {
                if rtp::parse_rtp(pkt).is_err() {
                    return Inbound::Drop(DropReason::Malformed);
                }
                false
            }
            (PacketClass::Rtcp, LocalPort::Rtcp) => true,
            (PacketClass::Rtcp, LocalPort::Rtp) if self.config.rtcp_mux => true,
            // RTCP on the RTP port without rtcp-mux, RTP on the RTCP port: not this leg's media.
            (PacketClass::Rtcp | PacketClass::Rtp, _) => return Inbound::Drop(DropReason::Stray),
        };
        if rtcp && rtp::check_rtcp(pkt).is_err() {
            return Inbound::Drop(DropReason::Malformed);
        }
        if !self.configured {
            return Inbound::Drop(DropReason::Stranger);
        }
        let learning = now < self.learning_until;
        let rtp_host = self.rtp_latch.addr.map(|a| a.ip());
        let (latch, signalled) = if port == LocalPort::Rtcp {
            let s = self.signalled_rtcp();
            (&mut self.rtcp_latch, s)
        } else {
            (&mut self.rtp_latch, self.config.remote_rtp)
        };
        let Some(crypto) = self.crypto.as_mut() else {
            // Plain RTCP on its own port: besides the signalled address, only the host the RTP
            // latch already trusts may teach the RTCP latch (a NAT-shifted port), so a stranger
            // cannot grab RTCP while the peer has not sent its first report yet.
            let foreign = port == LocalPort::Rtcp
                && signalled != Some(from)
                && latch.addr != Some(from)
                && rtp_host != Some(from.ip());
            if foreign {
                return Inbound::Drop(DropReason::Stranger);
            }
            return match latch.plain(from, signalled, learning) {
                None => Inbound::Drop(DropReason::Stranger),
                Some(moved) => Inbound::Media {
                    len,
                    rtcp,
                    latched: moved.then_some(from),
                },
            };
        };
        // SRTP: only a packet that authenticates (and is no replay) may latch or move the latch.
        let known = latch.addr == Some(from);
        let unprotected = if rtcp {
            crypto.inbound.unprotect_rtcp(buf, len)
        } else {
            crypto.inbound.unprotect_rtp(buf, len)
        };
        match unprotected {
            Ok(plain_len) => {
                latch.addr = Some(from);
                Inbound::Media {
                    len: plain_len,
                    rtcp,
                    latched: (!known).then_some(from),
                }
            }
            Err(_) if latch.addr.is_some() && !known => Inbound::Drop(DropReason::Stranger),
            Err(e) => Inbound::Drop(DropReason::from_srtp(e)),
        }
    }

    /// Prepares the first `len` plaintext bytes of `buf` for this leg's peer: checks direction,
    /// picks the destination (latched, else signalled) and the local socket. An RTCP packet's SRs
    /// are remembered (before protection) so the peer's LSR/DLSR give this leg's RTT.
    pub fn prepare_send(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
        rtcp: bool,
    ) -> Result<Outbound, DropReason> {
        // RTCP keeps flowing on hold (RFC 3264 §5.1); RTP only towards a peer that receives.
        if !rtcp
            && !matches!(
                self.config.direction,
                Direction::SendRecv | Direction::RecvOnly
            )
        {
            return Err(DropReason::NoRoute);
        }
        let (to, from) = if rtcp && !self.config.rtcp_mux {
            (
                self.rtcp_latch.addr.or_else(|| self.signalled_rtcp()),
                LocalPort::Rtcp,
            )
        } else {
            (
                self.rtp_latch.addr.or(self.config.remote_rtp),
                LocalPort::Rtp,
            )
        };
        let to = to.ok_or(DropReason::NoRoute)?;
        if buf.len() < len {
            return Err(DropReason::Malformed);
        }
        if rtcp {
            // A compound the parser refuses was already counted on the leg it came from.
            let _ = self.monitor.handle_rtcp_sent(now, &buf[..len]);
        }
        let len = match self.crypto.as_mut() {
            None => len,
            Some(c) if rtcp => c
                .outbound
                .protect_rtcp(buf, len)
                .map_err(|_| DropReason::Malformed)?,
            Some(c) => c
                .outbound
                .protect_rtp(buf, len)
                .map_err(|_| DropReason::Malformed)?,
        };
        Ok(Outbound { len, from, to })
    }

    /// Records a packet handed to the kernel for this leg's peer.
    pub fn record_sent(&mut self, len: usize, rtcp: bool) {
        self.counters.packets_out += 1;
        self.counters.bytes_out += len as u64;
        self.counters.rtcp_out += u64::from(rtcp);
    }

    /// Counts a drop decided outside the leg (e.g. the other leg had no route).
    pub fn record_drop(&mut self, reason: DropReason) {
        reason.count(&mut self.counters.drops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(3);
    const POLICY: LatchPolicy = LatchPolicy {
        learning_window: WINDOW,
    };

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn rtp_pkt() -> [u8; 172] {
        let mut p = [0u8; 172];
        p[..12].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4]);
        p
    }

    fn rtcp_pkt() -> [u8; 28] {
        let mut p = [0u8; 28];
        p[..8].copy_from_slice(&[0x80, 200, 0, 6, 1, 2, 3, 4]);
        p
    }

    fn plain_leg(now: Instant, remote: Option<&str>) -> Leg {
        let mut leg = Leg::new(LegSide::Pbx, now);
        leg.configure(
            LegConfig {
                remote_rtp: remote.map(addr),
                ..LegConfig::default()
            },
            POLICY,
            now,
        );
        leg
    }

    fn recv(leg: &mut Leg, now: Instant, from: &str) -> Inbound {
        let mut p = rtp_pkt();
        leg.handle_receive(now, LocalPort::Rtp, addr(from), &mut p, 172)
    }

    #[test]
    fn signalled_address_latches_and_counts() {
        let t0 = Instant::now();
        let mut leg = plain_leg(t0, Some("10.0.0.1:4000"));
        let got = recv(&mut leg, t0, "10.0.0.1:4000");
        assert_eq!(
            got,
            Inbound::Media {
                len: 172,
                rtcp: false,
                latched: Some(addr("10.0.0.1:4000"))
            }
        );
        assert_eq!(
            recv(&mut leg, t0, "10.0.0.1:4000"),
            Inbound::Media {
                len: 172,
                rtcp: false,
                latched: None
            }
        );
        assert_eq!(leg.counters().packets_in, 2);
        assert_eq!(leg.counters().bytes_in, 344);
    }

    #[test]
    fn other_source_latches_in_window_when_signalled_is_silent() {
        let t0 = Instant::now();
        let mut leg = plain_leg(t0, Some("10.0.0.1:4000"));
        // NAT rewrote the port: the only source there is.
        let got = recv(&mut leg, t0 + Duration::from_secs(1), "10.0.0.1:5555");
        assert!(matches!(
            got,
            Inbound::Media {
                latched: Some(_),
                ..
            }
        ));
        assert_eq!(leg.latched_rtp(), Some(addr("10.0.0.1:5555")));
        // A third source cannot take it over.
        assert_eq!(
            recv(&mut leg, t0 + Duration::from_secs(1), "10.9.9.9:1"),
            Inbound::Drop(DropReason::Stranger)
        );
    }

    #[test]
    fn signalled_address_wins_inside_window() {
        let t0 = Instant::now();
        let mut leg = plain_leg(t0, Some("10.0.0.1:4000"));
        recv(&mut leg, t0, "192.0.2.66:666");
        assert_eq!(leg.latched_rtp(), Some(addr("192.0.2.66:666")));
        let got = recv(&mut leg, t0 + Duration::from_secs(2), "10.0.0.1:4000");
        assert!(matches!(
            got,
            Inbound::Media {
                latched: Some(_),
                ..
            }
        ));
        assert_eq!(leg.latched_rtp(), Some(addr("10.0.0.1:4000")));
        // Once the signalled address spoke, the earlier source is a stranger even inside the window.
        assert_eq!(
            recv(&mut leg, t0 + Duration::from_secs(2), "192.0.2.66:666"),
            Inbound::Drop(DropReason::Stranger)
        );
    }

    #[test]
    fn latch_is_frozen_after_window() {
        let t0 = Instant::now();
        let mut leg = plain_leg(t0, Some("10.0.0.1:4000"));
        recv(&mut leg, t0, "10.0.0.1:5555");
        let late = t0 + WINDOW;
        // Even the signalled address cannot move a latch after the window.
        assert_eq!(
            recv(&mut leg, late, "10.0.0.1:4000"),
            Inbound::Drop(DropReason::Stranger)
        );
        assert_eq!(
            recv(&mut leg, late, "10.0.0.1:5555"),
            Inbound::Media {
                len: 172,
                rtcp: false,
                latched: None
            }
        );
        assert_eq!(leg.counters().drops.stranger, 1);
    }

    #[test]
    fn unlatched_leg_after_window_takes_only_its_signalled_peer() {
        let t0 = Instant::now();
        let mut leg = plain_leg(t0, Some("10.0.0.1:4000"));
        let late = t0 + Duration::from_secs(30);
        assert_eq!(
            recv(&mut leg, late, "192.0.2.66:666"),
            Inbound::Drop(DropReason::Stranger)
        );
        assert!(matches!(
            recv(&mut leg, late, "10.0.0.1:4000"),
            Inbound::Media {
                latched: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn reconfiguration_reopens_the_window() {
        let t0 = Instant::now();
        let mut leg = plain_leg(t0, Some("10.0.0.1:4000"));
        recv(&mut leg, t0, "10.0.0.1:4000");
        let t1 = t0 + Duration::from_secs(60);
        // re-INVITE moves the peer.
        leg.configure(
            LegConfig {
                remote_rtp: Some(addr("10.0.0.2:6000")),
                ..LegConfig::default()
            },
            POLICY,
            t1,
        );
        assert!(matches!(
            recv(&mut leg, t1, "10.0.0.2:6000"),
            Inbound::Media {
                latched: Some(_),
                ..
            }
        ));
        assert_eq!(
            recv(&mut leg, t1, "10.0.0.1:4000"),
            Inbound::Drop(DropReason::Stranger)
        );
    }

    #[test]
    fn unconfigured_leg_accepts_nothing() {
        let t0 = Instant::now();
        let mut leg = Leg::new(LegSide::Client, t0);
        assert_eq!(
            recv(&mut leg, t0, "10.0.0.1:4000"),
            Inbound::Drop(DropReason::Stranger)
        );
    }

    #[test]
    fn stray_and_malformed_are_counted_not_fatal() {
        let t0 = Instant::now();
        let mut leg = plain_leg(t0, Some("10.0.0.1:4000"));
        let from = addr("10.0.0.1:4000");
        let mut ping = *b"PING\0\0\0\0\0\0\0\0\0\0\0\0";
        assert_eq!(
            leg.handle_receive(t0, LocalPort::Rtp, from, &mut ping, 16),
            Inbound::Drop(DropReason::Stray)
        );
        let mut stun = [0u8; 20];
        stun[..8].copy_from_slice(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(
            leg.handle_receive(t0, LocalPort::Rtp, from, &mut stun, 20),
            Inbound::Drop(DropReason::Stray)
        );
        let mut short = [0x80u8, 0, 0];
        assert_eq!(
            leg.handle_receive(t0, LocalPort::Rtp, from, &mut short, 3),
            Inbound::Drop(DropReason::Stray)
        );
        let mut bad = rtp_pkt();
        bad[0] = 0x8f; // 15 CSRCs do not fit in 20 bytes
        assert_eq!(
            leg.handle_receive(t0, LocalPort::Rtp, from, &mut bad, 20),
            Inbound::Drop(DropReason::Malformed)
        );
        let mut p = rtp_pkt();
        assert_eq!(
            leg.handle_receive(t0, LocalPort::Rtp, from, &mut p, 999),
            Inbound::Drop(DropReason::Malformed)
        );
        let d = leg.counters().drops;
        assert_eq!((d.stray, d.malformed, d.stranger), (3, 2, 0));
        assert_eq!(leg.counters().packets_in, 0);
        assert_eq!(leg.latched_rtp(), None, "noise never latches");
    }

    #[test]
    fn rtcp_port_latches_separately_and_mux_uses_rtp_port() {
        let t0 = Instant::now();
        let mut leg = plain_leg(t0, Some("10.0.0.1:4000"));
        let mut r = rtcp_pkt();
        let got = leg.handle_receive(t0, LocalPort::Rtcp, addr("10.0.0.1:4001"), &mut r, 28);
        assert_eq!(
            got,
            Inbound::Media {
                len: 28,
                rtcp: true,
                latched: Some(addr("10.0.0.1:4001"))
            }
        );
        assert_eq!(leg.latched_rtp(), None);
        // Without mux, RTCP on the RTP port is not this leg's media.
        let got = leg.handle_receive(t0, LocalPort::Rtp, addr("10.0.0.1:4000"), &mut r, 28);
        assert_eq!(got, Inbound::Drop(DropReason::Stray));

        let mut mux = Leg::new(LegSide::Client, t0);
        let cfg = LegConfig {
            remote_rtp: Some(addr("10.0.0.1:4000")),
            rtcp_mux: true,
            ..LegConfig::default()
        };
        mux.configure(cfg, POLICY, t0);
        let got = mux.handle_receive(t0, LocalPort::Rtp, addr("10.0.0.1:4000"), &mut r, 28);
        assert!(matches!(got, Inbound::Media { rtcp: true, .. }));
        assert_eq!(mux.counters().rtcp_in, 1);
        let out = mux.prepare_send(Instant::now(), &mut r, 28, true).unwrap();
        assert_eq!((out.from, out.to), (LocalPort::Rtp, addr("10.0.0.1:4000")));
    }

    #[test]
    fn destination_is_latched_else_signalled_else_no_route() {
        let t0 = Instant::now();
        let mut p = rtp_pkt();
        let mut none = plain_leg(t0, None);
        assert_eq!(
            none.prepare_send(Instant::now(), &mut p, 172, false),
            Err(DropReason::NoRoute)
        );
        let mut leg = plain_leg(t0, Some("10.0.0.1:4000"));
        assert_eq!(
            leg.prepare_send(Instant::now(), &mut p, 172, false)
                .unwrap()
                .to,
            addr("10.0.0.1:4000")
        );
        let rtcp = leg.prepare_send(Instant::now(), &mut p, 28, true).unwrap();
        assert_eq!(
            (rtcp.from, rtcp.to),
            (LocalPort::Rtcp, addr("10.0.0.1:4001"))
        );
        recv(&mut leg, t0, "10.0.0.1:7000");
        assert_eq!(
            leg.prepare_send(Instant::now(), &mut p, 172, false)
                .unwrap()
                .to,
            addr("10.0.0.1:7000")
        );
    }

    #[test]
    fn no_rtp_towards_a_peer_that_does_not_receive_but_rtcp_flows() {
        let t0 = Instant::now();
        let mut p = rtp_pkt();
        for (dir, rtp_ok) in [
            (Direction::SendRecv, true),
            (Direction::RecvOnly, true),
            (Direction::SendOnly, false),
            (Direction::Inactive, false),
        ] {
            let mut leg = Leg::new(LegSide::Pbx, t0);
            let cfg = LegConfig {
                remote_rtp: Some(addr("10.0.0.1:4000")),
                direction: dir,
                ..LegConfig::default()
            };
            leg.configure(cfg, POLICY, t0);
            assert_eq!(
                leg.prepare_send(Instant::now(), &mut p, 172, false).is_ok(),
                rtp_ok,
                "{dir:?}"
            );
            assert!(
                leg.prepare_send(Instant::now(), &mut p, 28, true).is_ok(),
                "{dir:?}"
            );
        }
    }

    #[test]
    fn stranger_cannot_take_an_unused_rtcp_latch_but_the_rtp_host_can() {
        let t0 = Instant::now();
        let mut leg = plain_leg(t0, Some("10.0.0.1:4000"));
        let mut r = rtcp_pkt();
        let got = leg.handle_receive(t0, LocalPort::Rtcp, addr("203.0.113.1:9"), &mut r, 28);
        assert_eq!(got, Inbound::Drop(DropReason::Stranger));
        // The peer behind NAT: RTP latched from a shifted port, RTCP from another shifted port.
        recv(&mut leg, t0, "10.0.0.1:5555");
        let got = leg.handle_receive(t0, LocalPort::Rtcp, addr("10.0.0.1:5556"), &mut r, 28);
        assert_eq!(
            got,
            Inbound::Media {
                len: 28,
                rtcp: true,
                latched: Some(addr("10.0.0.1:5556"))
            }
        );
        assert_eq!(leg.latched_rtcp(), Some(addr("10.0.0.1:5556")));
    }

    #[test]
    fn random_datagrams_never_panic_and_are_all_counted() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let t0 = Instant::now();
        let mut plain = plain_leg(t0, Some("10.0.0.1:4000"));
        recv(&mut plain, t0, "10.0.0.1:4000");
        let mut mux = Leg::new(LegSide::Client, t0);
        let keys = crate::media::SrtpKeys {
            inbound: crate::srtp::KeyingMaterial::generate(crate::srtp::SrtpSuite::AeadAes128Gcm),
            outbound: crate::srtp::KeyingMaterial::generate(crate::srtp::SrtpSuite::AeadAes128Gcm),
        };
        let cfg = LegConfig {
            remote_rtp: Some(addr("10.0.0.2:4000")),
            rtcp_mux: true,
            srtp: Some(keys),
            ..LegConfig::default()
        };
        mux.configure(cfg, POLICY, t0);
        const N: u64 = 20_000;
        let mut buf = [0u8; 1600];
        for i in 0..N {
            let len = rng.random_range(0..300);
            rng.fill(&mut buf[..len]);
            if i % 2 == 0 {
                // Bias towards the RTP/RTCP range so the deeper checks are exercised.
                if let Some(b) = buf.first_mut() {
                    *b = 0x80 | (*b & 0x3f);
                }
            }
            let port = if i % 3 == 0 {
                LocalPort::Rtcp
            } else {
                LocalPort::Rtp
            };
            let stranger = addr("203.0.113.1:9");
            // After the window for the plain leg, so a stranger cannot latch its unused RTCP.
            assert!(matches!(
                plain.handle_receive(t0 + WINDOW, port, stranger, &mut buf, len),
                Inbound::Drop(_)
            ));
            assert!(matches!(
                mux.handle_receive(t0, port, stranger, &mut buf, len),
                Inbound::Drop(_)
            ));
        }
        for leg in [&plain, &mux] {
            let d = leg.counters().drops;
            let total = d.auth_failure + d.replay + d.stranger + d.malformed + d.no_route + d.stray;
            assert_eq!(total, N, "every drop counted once");
        }
        assert_eq!(
            mux.latched_rtp(),
            None,
            "nothing unauthenticated latches an SRTP leg"
        );
    }

    mod srtp {
        use super::*;
        use crate::media::SrtpKeys;
        use crate::srtp::{KeyingMaterial, SrtpSuite};

        struct Peer {
            tx: SrtpContext,
            seq: u16,
        }

        impl Peer {
            fn packet(&mut self) -> ([u8; 256], usize) {
                let mut p = [0u8; 256];
                p[..172].copy_from_slice(&rtp_pkt());
                p[2..4].copy_from_slice(&self.seq.to_be_bytes());
                self.seq += 1;
                let n = self.tx.protect_rtp(&mut p, 172).unwrap();
                (p, n)
            }
        }

        fn srtp_leg(now: Instant) -> (Leg, Peer) {
            let keys = SrtpKeys {
                inbound: KeyingMaterial::generate(SrtpSuite::AesCm128HmacSha1_80),
                outbound: KeyingMaterial::generate(SrtpSuite::AesCm128HmacSha1_80),
            };
            let peer = Peer {
                tx: SrtpContext::new(&keys.inbound, SrtpPolicy::default()),
                seq: 1,
            };
            let mut leg = Leg::new(LegSide::Client, now);
            let cfg = LegConfig {
                remote_rtp: Some(addr("192.0.2.10:5000")),
                srtp: Some(keys),
                ..LegConfig::default()
            };
            leg.configure(cfg, POLICY, now);
            (leg, peer)
        }

        fn forged() -> ([u8; 256], usize) {
            let mut p = [0u8; 256];
            p[..172].copy_from_slice(&rtp_pkt());
            p[2..4].copy_from_slice(&999u16.to_be_bytes()); // fresh index: only the tag is wrong
            (p, 182)
        }

        #[test]
        fn latches_only_on_an_authenticated_packet() {
            let t0 = Instant::now();
            let (mut leg, mut peer) = srtp_leg(t0);
            // Even the signalled address cannot latch without authenticating.
            let (mut f, n) = forged();
            let got = leg.handle_receive(t0, LocalPort::Rtp, addr("192.0.2.10:5000"), &mut f, n);
            assert_eq!(got, Inbound::Drop(DropReason::AuthFailure));
            assert_eq!(leg.latched_rtp(), None);
            // A good packet from anywhere (NAT) latches, and comes out as plain RTP.
            let (mut p, n) = peer.packet();
            let got = leg.handle_receive(t0, LocalPort::Rtp, addr("198.51.100.7:40000"), &mut p, n);
            assert_eq!(
                got,
                Inbound::Media {
                    len: 172,
                    rtcp: false,
                    latched: Some(addr("198.51.100.7:40000"))
                }
            );
            assert_eq!(p[12..172], rtp_pkt()[12..172]);
        }

        #[test]
        fn stranger_cannot_steal_latched_leg_but_a_proven_move_relatches() {
            let t0 = Instant::now();
            let (mut leg, mut peer) = srtp_leg(t0);
            let (mut p, n) = peer.packet();
            leg.handle_receive(t0, LocalPort::Rtp, addr("198.51.100.7:40000"), &mut p, n);
            let (mut f, n) = forged();
            let got = leg.handle_receive(t0, LocalPort::Rtp, addr("203.0.113.66:1"), &mut f, n);
            assert_eq!(got, Inbound::Drop(DropReason::Stranger));
            // Replaying a captured genuine packet from elsewhere: authenticates, but is a replay.
            let (mut p2, n2) = peer.packet();
            let captured = p2;
            leg.handle_receive(t0, LocalPort::Rtp, addr("198.51.100.7:40000"), &mut p2, n2);
            let mut replay = captured;
            let got =
                leg.handle_receive(t0, LocalPort::Rtp, addr("203.0.113.66:1"), &mut replay, n2);
            assert_eq!(got, Inbound::Drop(DropReason::Stranger));
            assert_eq!(leg.latched_rtp(), Some(addr("198.51.100.7:40000")));
            // The mobile changes network: its next genuine packet moves the latch, long after any window.
            let (mut p3, n3) = peer.packet();
            let late = t0 + Duration::from_secs(600);
            let got =
                leg.handle_receive(late, LocalPort::Rtp, addr("203.0.113.5:2222"), &mut p3, n3);
            assert!(matches!(
                got,
                Inbound::Media {
                    latched: Some(_),
                    ..
                }
            ));
            assert_eq!(leg.latched_rtp(), Some(addr("203.0.113.5:2222")));
            let d = leg.counters().drops;
            assert_eq!((d.stranger, d.auth_failure, d.replay), (2, 0, 0));
        }

        #[test]
        fn failures_from_the_latched_source_count_by_reason() {
            let t0 = Instant::now();
            let (mut leg, mut peer) = srtp_leg(t0);
            let from = addr("198.51.100.7:40000");
            let (mut p, n) = peer.packet();
            let captured = p;
            leg.handle_receive(t0, LocalPort::Rtp, from, &mut p, n);
            let mut again = captured;
            assert_eq!(
                leg.handle_receive(t0, LocalPort::Rtp, from, &mut again, n),
                Inbound::Drop(DropReason::Replay)
            );
            let (mut f, n) = forged();
            assert_eq!(
                leg.handle_receive(t0, LocalPort::Rtp, from, &mut f, n),
                Inbound::Drop(DropReason::AuthFailure)
            );
            let d = leg.counters().drops;
            assert_eq!((d.replay, d.auth_failure, d.stranger), (1, 1, 0));
        }

        #[test]
        fn identical_reconfiguration_keeps_the_replay_window() {
            let t0 = Instant::now();
            let (mut leg, mut peer) = srtp_leg(t0);
            let from = addr("198.51.100.7:40000");
            let (mut p, n) = peer.packet();
            let captured = p;
            leg.handle_receive(t0, LocalPort::Rtp, from, &mut p, n);
            let same = leg.config().clone();
            leg.configure(same, POLICY, t0);
            let mut again = captured;
            assert_eq!(
                leg.handle_receive(t0, LocalPort::Rtp, from, &mut again, n),
                Inbound::Drop(DropReason::Replay)
            );
        }

        #[test]
        fn outbound_is_protected_with_the_legs_own_key() {
            let t0 = Instant::now();
            let (mut leg, _) = srtp_leg(t0);
            let mut rx = SrtpContext::new(
                &leg.config().srtp.as_ref().unwrap().outbound,
                SrtpPolicy::default(),
            );
            let mut p = [0u8; 256];
            p[..172].copy_from_slice(&rtp_pkt());
            let out = leg
                .prepare_send(Instant::now(), &mut p, 172, false)
                .unwrap();
            assert_eq!(out.len, 182);
            assert_eq!(rx.unprotect_rtp(&mut p, out.len), Ok(172));
            assert_eq!(p[..172], rtp_pkt()[..172]);
        }
    }

    fn rtp_with(pt: u8, seq: u16, ts: u32) -> [u8; 172] {
        let mut p = rtp_pkt();
        p[1] = pt;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p
    }

    #[test]
    fn accepted_rtp_feeds_the_monitor_with_the_signalled_clock_rate() {
        let t0 = Instant::now();
        let from = addr("10.0.0.1:4000");
        let run = |rates: Vec<(u8, u32)>| {
            let mut leg = Leg::new(LegSide::Pbx, t0);
            leg.configure(
                LegConfig {
                    remote_rtp: Some(from),
                    clock_rates: rates,
                    ..LegConfig::default()
                },
                POLICY,
                t0,
            );
            // 20 ms of Opus per packet, arriving 20 ms apart except every third 5 ms late.
            for seq in 0..30u16 {
                let late = if seq % 3 == 0 { 5 } else { 0 };
                let now = t0 + Duration::from_millis(20 * u64::from(seq) + late);
                let mut p = rtp_with(111, seq, u32::from(seq) * 960);
                leg.handle_receive(now, LocalPort::Rtp, from, &mut p, 172);
            }
            // A stranger's packets never reach the monitor.
            let mut p = rtp_with(111, 500, 0);
            leg.handle_receive(t0, LocalPort::Rtp, addr("192.0.2.9:9"), &mut p, 172);
            leg.monitor().snapshot()
        };
        let with_rate = run(vec![(111, 48000), (200, 8000), (96, 0)]);
        assert_eq!(with_rate.received, 29, "A.1: the first packet is probation");
        assert_eq!(with_rate.expected, 29);
        assert!(
            with_rate.jitter_ms.is_some_and(|j| j > 0.5),
            "{with_rate:?}"
        );
        let without = run(Vec::new());
        assert_eq!(without.received, 29);
        assert_eq!(without.jitter_ms, None, "unknown rate: no jitter, no guess");
    }

    #[test]
    fn unparseable_rtcp_is_counted_and_still_forwarded() {
        let t0 = Instant::now();
        let mut leg = plain_leg(t0, Some("10.0.0.1:4000"));
        let mut p = [0u8; 40];
        // A valid first header (the relay's check) and a second packet overrunning the datagram.
        p[..8].copy_from_slice(&[0x80, 201, 0, 1, 0, 0, 0, 7]);
        p[8..16].copy_from_slice(&[0x81, 202, 0, 9, 0, 0, 0, 7]);
        let got = leg.handle_receive(t0, LocalPort::Rtcp, addr("10.0.0.1:4001"), &mut p, 16);
        assert!(matches!(got, Inbound::Media { rtcp: true, .. }), "{got:?}");
        assert_eq!(leg.counters().rtcp_malformed, 1);
        assert_eq!(leg.counters().rtcp_in, 1);
        assert_eq!(leg.counters().drops, DropCounters::default());
        assert_eq!(leg.monitor().summary(t0).rtcp_malformed, 1);
    }

    /// A leg with ICE-lite credentials and no signalled address (a phone behind a NAT).
    fn ice_leg(now: Instant) -> (Leg, IceSetup) {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let setup = IceSetup {
            local: crate::nat::ice::IceCredentials::generate(&mut rng),
            remote: Some(crate::nat::ice::IceCredentials::generate(&mut rng)),
            candidates: Vec::new(),
        };
        let mut leg = Leg::new(LegSide::Client, now);
        leg.configure(
            LegConfig {
                ice: Some(setup.clone()),
                ..LegConfig::default()
            },
            POLICY,
            now,
        );
        (leg, setup)
    }

    /// A Binding request as the phone's full ICE agent (controlling) sends it, built with the
    /// nat module's writer: USERNAME `local:remote`, integrity under `pwd`, FINGERPRINT.
    fn ice_check(setup: &IceSetup, pwd: &str, nominate: bool, id: u8) -> Vec<u8> {
        use crate::nat::stun::{BINDING_REQUEST, TransactionId, Writer, attr};
        let remote = setup
            .remote
            .as_ref()
            .expect("test setup has remote credentials");
        let username = format!("{}:{}", setup.local.ufrag, remote.ufrag);
        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf, BINDING_REQUEST, TransactionId([id; 12])).unwrap();
        w.attribute(attr::USERNAME, username.as_bytes()).unwrap();
        w.attribute(attr::PRIORITY, &0x6e00_01ffu32.to_be_bytes())
            .unwrap();
        w.attribute(attr::ICE_CONTROLLING, &7u64.to_be_bytes())
            .unwrap();
        if nominate {
            w.attribute(attr::USE_CANDIDATE, &[]).unwrap();
        }
        w.integrity(pwd.as_bytes()).unwrap();
        w.fingerprint().unwrap();
        let len = w.finish();
        buf[..len].to_vec()
    }

    #[test]
    fn ice_check_is_answered_and_latches_only_when_nominated() {
        let t0 = Instant::now();
        let (mut leg, setup) = ice_leg(t0);
        let phone = addr("203.0.113.9:40000");
        let mut out = [0u8; crate::nat::ice::MAX_RESPONSE_LEN];

        let check = ice_check(&setup, &setup.local.pwd, false, 1);
        let reply = leg.handle_stun(t0, LocalPort::Rtp, phone, &check, &mut out);
        let len = reply.send.expect("an authenticated check is answered");
        assert_eq!(reply.latched, None, "not nominated: no latch");
        assert_eq!(leg.latched_rtp(), None);
        let resp = crate::nat::stun::Message::parse(&out[..len]).unwrap();
        assert_eq!(resp.msg_type(), crate::nat::stun::BINDING_SUCCESS);
        assert_eq!(resp.transaction_id().0, [1; 12]);
        assert!(resp.verify_integrity(setup.local.pwd.as_bytes()));
        assert!(resp.verify_fingerprint());
        assert_eq!(resp.xor_mapped_address(), Some(phone));

        let check = ice_check(&setup, &setup.local.pwd, true, 2);
        let reply = leg.handle_stun(t0, LocalPort::Rtp, phone, &check, &mut out);
        assert!(reply.send.is_some());
        assert_eq!(reply.latched, Some(phone));
        assert_eq!(leg.latched_rtp(), Some(phone));
        assert_eq!(
            leg.latched_rtcp(),
            None,
            "the RTCP stream latches on its own"
        );

        // The same nomination again answers but does not report a new latch.
        let check = ice_check(&setup, &setup.local.pwd, true, 3);
        let reply = leg.handle_stun(t0, LocalPort::Rtp, phone, &check, &mut out);
        assert!(reply.send.is_some());
        assert_eq!(reply.latched, None);

        let rtcp_from = addr("203.0.113.9:40001");
        let check = ice_check(&setup, &setup.local.pwd, true, 4);
        let reply = leg.handle_stun(t0, LocalPort::Rtcp, rtcp_from, &check, &mut out);
        assert_eq!(reply.latched, Some(rtcp_from));
        assert_eq!(leg.latched_rtcp(), Some(rtcp_from));
        assert_eq!(leg.latched_rtp(), Some(phone));

        let counters = leg.ice_counters().expect("the leg has a responder");
        assert_eq!((counters.answered, counters.nominations), (4, 3));
        assert_eq!(leg.counters().drops, DropCounters::default());
    }

    #[test]
    fn ice_check_with_wrong_password_is_refused_and_counted() {
        let t0 = Instant::now();
        let (mut leg, setup) = ice_leg(t0);
        let stranger = addr("198.51.100.66:5000");
        let mut out = [0u8; crate::nat::ice::MAX_RESPONSE_LEN];
        let wrong = "x".repeat(setup.local.pwd.len());
        let check = ice_check(&setup, &wrong, true, 9);
        let reply = leg.handle_stun(t0, LocalPort::Rtp, stranger, &check, &mut out);
        assert_eq!(reply, StunReply::default(), "no response, no latch");
        assert_eq!(leg.latched_rtp(), None);
        assert_eq!(leg.counters().drops.stray, 1);
        assert_eq!(leg.ice_counters().map(|c| c.refused), Some(1));
        assert_eq!(leg.ice_counters().map(|c| c.answered), Some(0));
    }

    #[test]
    fn stun_on_a_leg_without_ice_is_a_counted_stray() {
        let t0 = Instant::now();
        let (_, setup) = ice_leg(t0);
        let mut leg = plain_leg(t0, None);
        let phone = addr("203.0.113.9:40000");
        let mut out = [0u8; crate::nat::ice::MAX_RESPONSE_LEN];
        let check = ice_check(&setup, &setup.local.pwd, true, 5);
        let reply = leg.handle_stun(t0, LocalPort::Rtp, phone, &check, &mut out);
        assert_eq!(reply, StunReply::default());
        assert_eq!(leg.latched_rtp(), None);
        assert_eq!(leg.counters().drops.stray, 1);
        assert_eq!(leg.ice_counters(), None);
    }
    /// The client leg of a phone signalled at `signalled`, with ICE (credentials and candidates)
    /// when `ice` is set.
    fn punching_leg(now: Instant, signalled: &str, ice: Option<IceSetup>) -> Leg {
        let mut leg = Leg::new(LegSide::Client, now);
        leg.configure(
            LegConfig {
                remote_rtp: Some(addr(signalled)),
                ice,
                ..LegConfig::default()
            },
            POLICY,
            now,
        );
        leg
    }

    #[test]
    fn unlatched_client_leg_sends_bounded_keepalives_that_stop_at_latch() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let t0 = Instant::now();
        let phone = addr("203.0.113.9:40000");
        let mut leg = punching_leg(t0, "203.0.113.9:40000", None);
        assert!(leg.is_punching());
        let mut buf = [0u8; 256];
        leg.handle_punch_timeout(t0, &mut rng);
        let (to, len) = leg.poll_punch(&mut buf).expect("a probe at once");
        assert_eq!(to, phone);
        let msg = crate::nat::stun::Message::parse(&buf[..len]).unwrap();
        assert_eq!(msg.msg_type(), crate::nat::stun::BINDING_INDICATION);
        assert_eq!(
            buf[0], 0,
            "first byte 0: RTP version 0, discarded by RTP stacks"
        );
        assert_eq!(
            leg.poll_punch(&mut buf),
            None,
            "one target, one probe per round"
        );
        assert_eq!(leg.counters().punch_sent, 1);

        // The whole schedule is bounded: 50 rounds (about 16 s), then nothing, however long.
        let mut now = t0;
        for _ in 0..600 {
            now += Duration::from_millis(50);
            leg.handle_punch_timeout(now, &mut rng);
            while leg.poll_punch(&mut buf).is_some() {}
        }
        assert_eq!(leg.counters().punch_sent, 50);
        assert!(!leg.is_punching());

        // A re-configuration (XCC's answer went out) restarts it; latching stops it.
        leg.configure(leg.config().clone(), POLICY, now);
        leg.handle_punch_timeout(now, &mut rng);
        assert!(leg.poll_punch(&mut buf).is_some());
        assert!(leg.latch_authenticated(LocalPort::Rtp, phone));
        leg.handle_punch_timeout(now + Duration::from_millis(50), &mut rng);
        assert_eq!(leg.poll_punch(&mut buf), None);
        assert!(!leg.is_punching());
        // A latched leg reconfigured (re-INVITE) does not punch again.
        leg.configure(leg.config().clone(), POLICY, now);
        assert!(!leg.is_punching());
    }

    #[test]
    fn pbx_leg_and_leg_without_destination_never_punch() {
        let t0 = Instant::now();
        let mut pbx = Leg::new(LegSide::Pbx, t0);
        pbx.configure(
            LegConfig {
                remote_rtp: Some(addr("10.0.0.1:4000")),
                ..LegConfig::default()
            },
            POLICY,
            t0,
        );
        assert!(!pbx.is_punching());
        let (leg, _) = ice_leg(t0);
        assert!(!leg.is_punching(), "no signalled address, no candidates");
    }

    /// The phone's answer to XCC's probe `probe`: success with XOR-MAPPED-ADDRESS, integrity
    /// under `pwd` (the phone's own password, as RFC 8445 §7.2.5 requires).
    fn probe_answer(probe: &[u8], pwd: &str, mapped: SocketAddr) -> Vec<u8> {
        use crate::nat::stun::{BINDING_SUCCESS, Message, Writer};
        let id = Message::parse(probe).unwrap().transaction_id();
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf, BINDING_SUCCESS, id).unwrap();
        w.xor_mapped_address(mapped).unwrap();
        w.integrity(pwd.as_bytes()).unwrap();
        w.fingerprint().unwrap();
        let len = w.finish();
        buf[..len].to_vec()
    }

    #[test]
    fn ice_probe_to_a_candidate_answered_with_the_phones_password_latches_there() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let t0 = Instant::now();
        let srflx = addr("203.0.113.1:50000");
        let setup = IceSetup {
            local: crate::nat::ice::IceCredentials::generate(&mut rng),
            remote: Some(crate::nat::ice::IceCredentials::generate(&mut rng)),
            candidates: vec![srflx, addr("198.51.100.2:40000")],
        };
        let remote = setup.remote.clone().unwrap();
        // c= holds the phone's private address (unreachable); the srflx candidate is the way in.
        let mut leg = punching_leg(t0, "198.51.100.2:40000", Some(setup.clone()));
        let mut buf = [0u8; 256];
        leg.handle_punch_timeout(t0, &mut rng);
        let mut probes = Vec::new();
        while let Some((to, len)) = leg.poll_punch(&mut buf) {
            probes.push((to, buf[..len].to_vec()));
        }
        let dests: Vec<SocketAddr> = probes.iter().map(|p| p.0).collect();
        assert_eq!(
            dests,
            [addr("198.51.100.2:40000"), srflx],
            "deduplicated, signalled first"
        );
        let (_, probe) = &probes[1];
        let msg = crate::nat::stun::Message::parse(probe).unwrap();
        assert_eq!(msg.msg_type(), crate::nat::stun::BINDING_REQUEST);
        let username = format!("{}:{}", remote.ufrag, setup.local.ufrag);
        assert_eq!(msg.username(), Some(username.as_bytes()));
        assert!(msg.verify_integrity(remote.pwd.as_bytes()));

        let mut out = [0u8; crate::nat::ice::MAX_RESPONSE_LEN];
        // A forged answer (wrong password) proves nothing: no latch, a counted stray.
        let forged = probe_answer(probe, "wrong-password-0123456789", srflx);
        let reply = leg.handle_stun(t0, LocalPort::Rtp, srflx, &forged, &mut out);
        assert_eq!(reply, StunReply::default());
        assert_eq!(leg.latched_rtp(), None);
        assert_eq!(leg.counters().drops.stray, 1);
        // The right answer from a source that was not probed proves nothing either.
        let good = probe_answer(probe, &remote.pwd, srflx);
        let other = addr("203.0.113.66:50000");
        assert_eq!(
            leg.handle_stun(t0, LocalPort::Rtp, other, &good, &mut out)
                .latched,
            None
        );
        // From the probed candidate it latches, and punching ends.
        let reply = leg.handle_stun(t0, LocalPort::Rtp, srflx, &good, &mut out);
        assert_eq!(reply.latched, Some(srflx));
        assert_eq!(reply.send, None);
        assert_eq!(leg.latched_rtp(), Some(srflx));
        assert_eq!(leg.counters().punch_answered, 1);
        assert_eq!(leg.counters().punch_sent, 2);
        assert!(!leg.is_punching());
    }
}
