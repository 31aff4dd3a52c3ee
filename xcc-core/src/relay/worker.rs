//! One worker thread: a mio loop over the sockets of the calls it owns.
//!
//! The loop reads the clock once per wake-up and hands `now` to the sans-IO [`Call`]. The UDP
//! sockets sit in a level-triggered [`ReadySet`]: each round reads one datagram with `recvfrom`
//! from every socket that holds one, then per packet the call's decision and one `send_to`, in a
//! receive buffer allocated once: no lock, no allocation, no log line. No socket is read only to
//! learn that it is empty. Not `recvmmsg`: a wake-up finds one datagram per socket at 50
//! packets/s, and perf put one `recvmmsg` (a datagram, then an empty try, each through a
//! `msghdr` and an iovec) at 1.2-1.7x the kernel time of two `recvfrom` (the same datagram, then
//! `EAGAIN`) in the same runs (docs/load.md, session 6).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::ids::{CallId, LegSide};
use crate::leg::{DropReason, LatchPolicy, LocalPort};
use crate::media::{EndReason, LegCounters, LegPorts, MediaEvent};
use crate::nat::ice::MAX_RESPONSE_LEN;
use crate::nat::stun::is_stun;
use crate::nat::turn::SEND_OVERHEAD;
use crate::quality::{MonitorConfig, QualityEvent, VoipEvent};
use crate::recv_batch::RecvBatch;
use crate::relay::call::{Call, CallTimers};
use crate::relay::client_relay::{ClientRelay, RelayNotice, Unwrapped};
use crate::relay::published::Published;
use crate::relay::ready_set::ReadySet;
use crate::relay::totals::{WorkerTotals, add_counters};
use crate::relay::turn_link::{Fill, TurnLink};
use crate::relay::{Command, Freed, NewCall};

/// Token of the waker; socket tokens are `slot * SLOT_TOKENS + socket`.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// Token of the UDP sockets' [`ReadySet`] in the poll: some media socket holds a datagram.
const UDP_READY: Token = Token(usize::MAX - 1);
/// Rounds of one datagram per ready socket before the loop looks at commands, streams and
/// timers again (the set is asked again at once if it still has ready sockets).
const UDP_ROUNDS: usize = 64;
/// Tokens per slot: the four UDP sockets, then the TURN TCP links of the client RTP and RTCP
/// sockets (when the client leg is relayed over TCP).
const SLOT_TOKENS: usize = 6;
/// How often timers are checked and changes published.
const TICK: Duration = Duration::from_millis(50);
/// Calls one loop iteration ticks: a tick over hundreds of calls is spread over iterations with
/// the sockets read in between, so no packet waits behind the whole of it (750 calls took
/// 0.3-1.1 ms per tick on average, up to 6 ms, measured in the loaded worker).
const TICK_CHUNK: usize = 32;
/// A call whose only change is traffic is published every this many ticks (200 ms), its turn
/// set by its slot so the work spreads evenly over the ticks; latches, configuration and quality
/// evaluations are published at the next tick.
const COUNTER_TICKS: u64 = 4;
/// How stale a snapshot's traffic counters may be (see [`crate::media::COUNTERS_LAG`]).
pub(crate) const COUNTERS_LAG: Duration =
    Duration::from_millis(TICK.as_millis() as u64 * COUNTER_TICKS);
/// Largest datagram read; the buffer keeps room behind it for an SRTP tag and SRTCP trailer.
const MAX_DATAGRAM: usize = 2048;
/// Receive buffer: datagram plus the largest protect overhead.
const BUF_LEN: usize = MAX_DATAGRAM + 64;
/// Frames read from one TURN TCP link before others get a turn; the rest waits in the backlog.
const BURST: usize = 64;
/// Room for one hole-punching probe (the puncher needs at least 128 bytes).
const PUNCH_BUF_LEN: usize = 640;

/// What a worker thread starts with.
pub(crate) struct WorkerSetup {
    /// Position in the pool, for logs.
    pub index: usize,
    /// This worker's poll; its waker is registered on it.
    pub poll: Poll,
    /// Commands from the control plane.
    pub commands: Receiver<Command>,
    /// Events for the daemon.
    pub events: Sender<MediaEvent>,
    /// Pairs for the pool's quarantine.
    pub freed: Sender<Freed>,
    /// The engine's time origin for published instants.
    pub epoch: Instant,
    /// Media timers.
    pub timers: CallTimers,
    /// Latching policy.
    pub policy: LatchPolicy,
    /// Settings of every leg's quality monitor.
    pub quality: MonitorConfig,
    /// Bind address, for snapshots.
    pub local_ip: IpAddr,
    /// Bumped once per tick; read by [`crate::media::MediaControl::worker_heartbeats`].
    pub heartbeat: Arc<AtomicU64>,
    /// Traffic since start (ended calls plus live ones), published once per tick; read by
    /// [`crate::media::MediaControl::worker_stats`].
    pub totals: Arc<WorkerTotals>,
}

/// A call as a worker holds it.
struct Slot {
    /// Its id.
    id: CallId,
    /// The sans-IO state.
    call: Call,
    /// Client RTP, client RTCP, PBX RTP, PBX RTCP.
    sockets: [mio::net::UdpSocket; 4],
    /// As bound.
    ports: [LegPorts; 2],
    /// Allocation time.
    created: SystemTime,
    /// Where counters go.
    published: Arc<Published>,
    /// The client leg's TURN allocations when `[turn]` relays client legs: what its sockets send
    /// and receive passes the TURN server.
    relay: Option<Box<ClientRelay>>,
}

/// Socket index inside a slot for a leg's local port.
fn socket_index(side: LegSide, port: LocalPort) -> usize {
    side.index() * 2 + usize::from(port == LocalPort::Rtcp)
}

/// Slot and socket index (0-3 UDP, 4-5 TURN TCP) of a token.
fn split_token(token: usize) -> (usize, usize) {
    (token / SLOT_TOKENS, token % SLOT_TOKENS)
}

/// Leg and local port of socket `sock_i` (0-3) of a slot; the inverse of [`socket_index`].
fn socket_role(sock_i: usize) -> (LegSide, LocalPort) {
    let side = if sock_i < 2 {
        LegSide::Client
    } else {
        LegSide::Pbx
    };
    let port = if sock_i.is_multiple_of(2) {
        LocalPort::Rtp
    } else {
        LocalPort::Rtcp
    };
    (side, port)
}

/// The worker: owns every call it was given until it ends.
struct Worker {
    setup: WorkerSetup,
    /// Calls by slot; a slot's sockets are registered with tokens `slot * SLOT_TOKENS + i`.
    slots: Vec<Option<Slot>>,
    /// Empty slots for reuse.
    free_slots: Vec<usize>,
    /// Call id to slot.
    by_id: HashMap<CallId, usize>,
    /// The UDP sockets, level-triggered.
    ready: ReadySet,
    /// The ready set may hold ready sockets: ask it before sleeping.
    udp_more: bool,
    /// TURN TCP links that still had data when their burst ended.
    backlog: Vec<Token>,
    /// Backlog being processed (swapped with `backlog`, both keep their capacity).
    backlog_now: Vec<Token>,
    /// The receive buffers, allocated once; datagram `b` of a batch is handled in buffer `b`
    /// (TURN TCP frames in buffer 0).
    rx: RecvBatch,
    /// ICE-lite responses are written here (the request stays in `buf`).
    stun_out: [u8; MAX_RESPONSE_LEN],
    /// Hole-punching probes are written here (an ICE check with USERNAME of two 256-byte ufrags
    /// at most fits; a probe that does not is skipped by the puncher, never truncated).
    punch_out: [u8; PUNCH_BUF_LEN],
    /// Datagrams for a TURN server are wrapped here (payload plus a Send indication's header).
    relay_out: Box<[u8]>,
    /// Transaction ids and tie-breakers of hole-punching probes (thread-local CSPRNG).
    rng: rand::rngs::ThreadRng,
    /// Stop after this loop iteration.
    stopping: bool,
    /// Final counters (both legs) of every call this worker ended.
    retired: LegCounters,
    /// Calls this worker ended.
    calls_ended: u64,
    /// Ticks run so far (whose turn it is to publish counters).
    ticks: u64,
    /// The next slot of the tick in progress, `None` between ticks.
    tick_cursor: Option<usize>,
}

/// Runs a worker until it receives [`Command::Shutdown`] or the control plane is gone.
pub(crate) fn run(setup: WorkerSetup) {
    let ready = match ReadySet::new().and_then(|r| {
        let fd = r.as_raw_fd();
        setup
            .poll
            .registry()
            .register(&mut SourceFd(&fd), UDP_READY, Interest::READABLE)
            .map(|()| r)
    }) {
        Ok(r) => r,
        Err(e) => {
            // Without it no media socket can be read: refuse every call rather than hold them
            // silently (the engine's shutdown still finds this worker's channel closed).
            tracing::error!(worker = setup.index, error = %e, "media worker cannot create its socket set, stopping");
            return;
        }
    };
    let mut w = Worker {
        setup,
        ready,
        udp_more: false,
        slots: Vec::new(),
        free_slots: Vec::new(),
        by_id: HashMap::new(),
        backlog: Vec::with_capacity(1024),
        backlog_now: Vec::with_capacity(1024),
        rx: RecvBatch::new(MAX_DATAGRAM, BUF_LEN),
        stun_out: [0u8; MAX_RESPONSE_LEN],
        punch_out: [0u8; PUNCH_BUF_LEN],
        relay_out: vec![0u8; BUF_LEN + SEND_OVERHEAD].into_boxed_slice(),
        rng: rand::rng(),
        stopping: false,
        retired: LegCounters::default(),
        calls_ended: 0,
        ticks: 0,
        tick_cursor: None,
    };
    tracing::debug!(worker = w.setup.index, "media worker started");
    let mut events = Events::with_capacity(1024);
    let mut next_tick = Instant::now() + TICK;
    while !w.stopping {
        let timeout = if w.backlog.is_empty() && w.tick_cursor.is_none() && !w.udp_more {
            next_tick.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        if let Err(e) = w.setup.poll.poll(&mut events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::error!(worker = w.setup.index, error = %e, "media worker poll failed, stopping");
            w.end_all(EndReason::Shutdown, Instant::now());
            return;
        }
        let now = Instant::now();
        // Commands first: a packet that arrives right after a configuration must see it.
        if !w.setup.commands.is_empty() {
            w.handle_commands(now);
            if w.stopping {
                break;
            }
        }
        std::mem::swap(&mut w.backlog, &mut w.backlog_now);
        for i in 0..w.backlog_now.len() {
            let token = w.backlog_now[i];
            w.drain_socket(token, now);
        }
        w.backlog_now.clear();
        for event in events.iter() {
            match event.token() {
                WAKER => {}
                UDP_READY => w.udp_more = true,
                token => w.drain_socket(token, now),
            }
        }
        if w.udp_more {
            w.drain_udp(now);
        }
        if w.tick_cursor.is_none() && now >= next_tick {
            w.tick_cursor = Some(0);
            next_tick = now + TICK;
            w.setup.heartbeat.fetch_add(1, Ordering::Relaxed);
        }
        if w.tick_cursor.is_some() {
            w.tick_chunk(now);
        }
    }
    tracing::debug!(worker = w.setup.index, "media worker stopped");
}

impl Worker {
    /// Reads rounds of one datagram from every ready UDP socket and forwards them, until none
    /// is ready or [`UDP_ROUNDS`] have run (then `udp_more` stays set and the loop comes back
    /// without sleeping).
    fn drain_udp(&mut self, now: Instant) {
        for _ in 0..UDP_ROUNDS {
            let n = match self.ready.wait_now() {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Not expected on a valid epoll descriptor; the next socket event retries.
                    tracing::error!(worker = self.setup.index, error = %e, "media socket set failed");
                    self.udp_more = false;
                    return;
                }
            };
            if n == 0 {
                self.udp_more = false;
                return;
            }
            // The calls' state is cold with many calls: ask for all of it before the first read,
            // so the misses overlap the system calls.
            for k in 0..n {
                let (slot_i, sock_i) = split_token(self.ready.token(k));
                if let Some(Some(slot)) = self.slots.get(slot_i) {
                    let (side, port) = socket_role(sock_i);
                    slot.call.prefetch(side, port);
                }
            }
            for k in 0..n {
                let (slot_i, sock_i) = split_token(self.ready.token(k));
                self.read_one(slot_i, sock_i, now);
            }
        }
    }

    /// Reads and forwards one datagram from UDP socket `sock_i` of slot `slot_i`.
    fn read_one(&mut self, slot_i: usize, sock_i: usize, now: Instant) {
        let Some(Some(slot)) = self.slots.get(slot_i) else {
            return; // a call that ended earlier in this round
        };
        match self.rx.recv_one(slot.sockets[sock_i].as_raw_fd()) {
            Ok(()) => {}
            // Nothing after all, or a pending socket error (e.g. ICMP) that this call consumed:
            // a socket that still holds data is reported again next round.
            Err(_) => return,
        }
        // Only IPv4 and IPv6 sources reach a UDP socket bound to an IP address.
        if let (len, Some(from)) = self.rx.meta(0) {
            self.handle_datagram(slot_i, sock_i, from, false, 0, len, now);
        }
    }

    /// Serves a TURN TCP link the poll reported (UDP sockets come through [`Worker::drain_udp`]).
    fn drain_socket(&mut self, token: Token, now: Instant) {
        let (slot_i, sock_i) = split_token(token.0);
        if sock_i >= 4 {
            self.drain_stream(token, slot_i, sock_i - 4, now);
        }
    }

    /// Flushes one client socket's TURN TCP link and handles up to [`BURST`] frames from it.
    fn drain_stream(&mut self, token: Token, slot_i: usize, k: usize, now: Instant) {
        for _ in 0..BURST {
            let Some(Some(slot)) = self.slots.get_mut(slot_i) else {
                return;
            };
            let Some(relay) = slot.relay.as_deref_mut() else {
                return;
            };
            let server = relay.server();
            let Some(link) = relay.link_mut(k).and_then(TurnLink::tcp) else {
                return;
            };
            link.flush();
            let len = match link.next_frame(&mut self.rx.buf_mut(0)[..MAX_DATAGRAM]) {
                Some(len) => len,
                None => match link.fill() {
                    Fill::Data => continue,
                    Fill::Empty => return,
                    Fill::Closed => {
                        let _span = tracing::info_span!("call", id = slot.id.0).entered();
                        tracing::warn!(
                            socket = k,
                            "TURN TCP connection lost: the client leg's relay is gone"
                        );
                        let _ = self.setup.poll.registry().deregister(link.stream());
                        return;
                    }
                },
            };
            self.handle_datagram(slot_i, k, server, true, 0, len, now);
        }
        self.backlog.push(token);
    }

    /// One datagram in the first `len` bytes of receive buffer `b`, received on socket `sock_i`
    /// of slot `slot_i` from `from` (or a frame of that client socket's TURN TCP link when
    /// `from_stream`).
    #[allow(clippy::too_many_arguments)]
    fn handle_datagram(
        &mut self,
        slot_i: usize,
        sock_i: usize,
        mut from: SocketAddr,
        from_stream: bool,
        b: usize,
        mut len: usize,
        now: Instant,
    ) {
        let Some(Some(slot)) = self.slots.get_mut(slot_i) else {
            return;
        };
        let buf = self.rx.buf_mut(b);
        let (side, port) = socket_role(sock_i);
        // A relayed client leg hears its peer only through the TURN server.
        if let Some(relay) = slot.relay.as_deref_mut().filter(|_| sock_i < 2) {
            match relay.unwrap(now, sock_i, from, from_stream, buf, len, &mut self.rng) {
                Unwrapped::Media { peer, len: n } => (from, len) = (peer, n),
                Unwrapped::Control => {
                    // The next queued request (a permission after a refresh, ...) goes out now,
                    // not at the next tick.
                    relay.handle_timeout(now, &mut self.rng);
                    pump_relay(&slot.sockets, relay);
                    return;
                }
                Unwrapped::Stray => {
                    slot.call.record_drop(side, DropReason::Stray);
                    return;
                }
            }
        }
        // RFC 7983 demux: STUN on a leg port is an ICE check (or a stray), never media.
        if is_stun(&buf[..len]) {
            let reply =
                slot.call
                    .handle_stun(now, side, port, from, &buf[..len], &mut self.stun_out);
            if let Some(n) = reply.send {
                let _ = send_via(
                    &slot.sockets,
                    slot.relay.as_deref_mut(),
                    sock_i,
                    &self.stun_out[..n],
                    from,
                    &mut self.relay_out,
                );
            }
            if let Some(addr) = reply.latched {
                relay_latched(slot, sock_i, addr, now);
                let _ = self.setup.events.send(MediaEvent::Latched {
                    call: slot.id,
                    side,
                    addr,
                });
            }
            return;
        }
        let step = slot.call.handle_receive(now, side, port, from, buf, len);
        if let Some(addr) = step.latched {
            // Latching happens once per peer (and per proven move): not a per-packet cost.
            relay_latched(slot, sock_i, addr, now);
            let _ = self.setup.events.send(MediaEvent::Latched {
                call: slot.id,
                side,
                addr,
            });
        }
        if let Some((to, out, rtcp)) = step.send {
            let ok = send_via(
                &slot.sockets,
                slot.relay.as_deref_mut(),
                socket_index(to, out.from),
                &buf[..out.len],
                out.to,
                &mut self.relay_out,
            );
            slot.call.record_send(side, to, out.len, rtcp, ok);
        }
    }

    /// Applies every queued command.
    fn handle_commands(&mut self, now: Instant) {
        loop {
            match self.setup.commands.try_recv() {
                Ok(Command::Add(new)) => self.add(*new, now),
                Ok(Command::Configure { call, side, config }) => {
                    if let Some(slot) = self.by_id.get(&call).and_then(|&i| self.slots[i].as_mut())
                    {
                        if let Some(relay) = slot.relay.as_deref_mut()
                            && side == LegSide::Client
                        {
                            // The peer's permissions go out now, ahead of its first packets.
                            relay.permit(now, &config);
                            relay.handle_timeout(now, &mut self.rng);
                            pump_relay(&slot.sockets, relay);
                        }
                        slot.call.configure(side, *config, now);
                    }
                }
                Ok(Command::Release(call)) => {
                    if let Some(&i) = self.by_id.get(&call) {
                        self.end(i, EndReason::Released, now);
                    }
                }
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => {
                    self.end_all(EndReason::Shutdown, now);
                    self.stopping = true;
                    return;
                }
                Err(TryRecvError::Empty) => return,
            }
        }
    }

    /// Takes over a new call and registers its sockets.
    fn add(&mut self, new: NewCall, now: Instant) {
        let NewCall {
            call: id,
            sockets,
            ports,
            created,
            published,
            resume,
            relay,
        } = new;
        let i = self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let registry = self.setup.poll.registry();
        for (k, s) in sockets.iter().enumerate() {
            if let Err(e) = self.ready.add(s.as_raw_fd(), i * SLOT_TOKENS + k) {
                tracing::error!(call = %id, error = %e, "cannot register media socket");
            }
        }
        // Data queued before registration is reported too (level-triggered): nothing to poke.
        let mut relay = relay;
        if let Some(relay) = relay.as_deref_mut() {
            for k in 0..2 {
                if let Some(link) = relay.link_mut(k).and_then(TurnLink::tcp) {
                    let token = Token(i * SLOT_TOKENS + 4 + k);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = registry.register(link.stream(), token, interest) {
                        tracing::error!(call = %id, error = %e, "cannot register a TURN TCP link");
                    }
                }
            }
        }
        let mut call = Call::with_quality(
            now,
            self.setup.timers,
            self.setup.policy,
            self.setup.quality,
        );
        if let Some(legs) = resume {
            for (side, leg) in [LegSide::Client, LegSide::Pbx].into_iter().zip(legs.iter()) {
                if let Some(config) = &leg.config {
                    call.configure(side, config.clone(), now);
                    call.resume_leg(side, (leg.latched_rtp, leg.latched_rtcp), &leg.srtp);
                    if let Some(relay) = relay.as_deref_mut().filter(|_| side == LegSide::Client) {
                        // Permissions and channels last minutes on the server; renew them now.
                        relay.permit(now, config);
                        for (k, latched) in
                            [leg.latched_rtp, leg.latched_rtcp].into_iter().enumerate()
                        {
                            if let Some(peer) = latched {
                                relay.latched(now, k, peer);
                            }
                        }
                    }
                }
            }
        }
        published.write(&call.state(self.setup.epoch));
        self.slots[i] = Some(Slot {
            id,
            call,
            sockets,
            ports,
            created,
            published,
            relay,
        });
        self.by_id.insert(id, i);
        tracing::debug!(worker = self.setup.index, call = %id, "call added");
    }

    /// Timers and publication for the next [`TICK_CHUNK`] slots of the tick in progress; the
    /// last chunk ends the tick. A call added to a slot the tick has passed waits for the next
    /// one.
    fn tick_chunk(&mut self, now: Instant) {
        let Some(start) = self.tick_cursor else {
            return;
        };
        let end = start.saturating_add(TICK_CHUNK).min(self.slots.len());
        for i in start..end {
            self.tick_slot(i, now);
        }
        if end < self.slots.len() {
            self.tick_cursor = Some(end);
            return;
        }
        self.tick_cursor = None;
        // Totals follow the same cadence as counters: readers are metrics scrapes and Status.
        if self.ticks.is_multiple_of(COUNTER_TICKS) {
            self.publish_totals();
        }
        self.ticks += 1;
    }

    /// One call's timers and publication.
    fn tick_slot(&mut self, i: usize, now: Instant) {
        let Some(slot) = self.slots[i].as_mut() else {
            return;
        };
        if slot.call.is_timed_out(now) {
            self.end(i, EndReason::MediaTimeout, now);
            return;
        }
        slot.call.handle_timeout(now);
        // Hole punching: a few probes per leg per tick at most, from the client RTP socket.
        slot.call.handle_punch_timeout(now, &mut self.rng);
        let client_rtp = socket_index(LegSide::Client, LocalPort::Rtp);
        while let Some((to, len)) = slot.call.poll_punch(&mut self.punch_out) {
            let _ = send_via(
                &slot.sockets,
                slot.relay.as_deref_mut(),
                client_rtp,
                &self.punch_out[..len],
                to,
                &mut self.relay_out,
            );
        }
        if let Some(relay) = slot.relay.as_deref_mut() {
            relay.handle_timeout(now, &mut self.rng);
            pump_relay(&slot.sockets, relay);
            while let Some(RelayNotice::Failed { socket, code }) = relay.poll_notice() {
                let _span = tracing::info_span!("call", id = slot.id.0).entered();
                tracing::warn!(socket, ?code, "TURN request for the client leg failed");
            }
        }
        while let Some((side, event)) = slot.call.poll_quality_event() {
            let _span = tracing::info_span!("call", id = slot.id.0).entered();
            tracing::info!(?side, ?event, "media quality");
            // Rare (hysteresis: at most one per limit and direction every few seconds).
            let QualityEvent::VoipReady(
                VoipEvent::LimitCrossed { limit, .. } | VoipEvent::LimitRecovered { limit, .. },
            ) = event;
            let threshold = self.setup.quality.voip_ready.limits.of(limit);
            let _ = self.setup.events.send(MediaEvent::Quality {
                call: slot.id,
                side,
                event,
                threshold,
            });
        }
        let counters_due = (i as u64) % COUNTER_TICKS == self.ticks % COUNTER_TICKS;
        if slot.call.take_dirty(counters_due) {
            slot.published.write(&slot.call.state(self.setup.epoch));
        }
    }

    /// Publishes retired + live counters (off the packet path: once per tick, O(calls)).
    fn publish_totals(&self) {
        let mut sum = self.retired;
        for slot in self.slots.iter().flatten() {
            for side in [LegSide::Client, LegSide::Pbx] {
                add_counters(&mut sum, slot.call.leg(side).counters());
            }
        }
        self.setup.totals.store(&sum, self.calls_ended);
    }

    /// Ends every call.
    fn end_all(&mut self, reason: EndReason, now: Instant) {
        for i in 0..self.slots.len() {
            if self.slots[i].is_some() {
                self.end(i, reason, now);
            }
        }
    }

    /// Ends one call: final publication, sockets closed, ports to quarantine, `Ended` event.
    fn end(&mut self, i: usize, reason: EndReason, now: Instant) {
        let Some(mut slot) = self.slots[i].take() else {
            return;
        };
        self.free_slots.push(i);
        self.by_id.remove(&slot.id);
        let state = slot.call.state(self.setup.epoch);
        let quality = slot.call.quality(now);
        for side in [LegSide::Client, LegSide::Pbx] {
            add_counters(&mut self.retired, slot.call.leg(side).counters());
        }
        self.calls_ended += 1;
        slot.published.write(&state);
        slot.published.set_ended();
        let last = crate::media::snapshot_of(
            slot.id,
            slot.created,
            slot.call.idle(now),
            self.setup.local_ip,
            slot.ports,
            [
                slot.call.leg(LegSide::Client).config(),
                slot.call.leg(LegSide::Pbx).config(),
            ],
            &state,
        );
        if let Some(relay) = slot.relay.as_deref_mut() {
            // Deallocate now rather than leave the server holding relayed ports for the lifetime.
            relay.close(now);
            relay.handle_timeout(now, &mut self.rng);
            pump_relay(&slot.sockets, relay);
        }
        for s in &slot.sockets {
            let _ = self.ready.remove(s.as_raw_fd());
        }
        if let Some(relay) = slot.relay.as_deref_mut() {
            for k in 0..2 {
                if let Some(link) = relay.link_mut(k).and_then(TurnLink::tcp) {
                    let _ = self.setup.poll.registry().deregister(link.stream());
                }
            }
        }
        drop(slot.sockets);
        let _ = self.setup.freed.send(Freed {
            call: slot.id,
            rtp_ports: [slot.ports[0].rtp, slot.ports[1].rtp],
            at: now,
        });
        let _span = tracing::info_span!("call", id = slot.id.0).entered();
        tracing::info!(
            ?reason,
            mos = ?quality.mos,
            client_broken = ?quality.legs[0].voip_ready.broken(),
            pbx_broken = ?quality.legs[1].voip_ready.broken(),
            "call media ended"
        );
        let _ = self.setup.events.send(MediaEvent::Ended {
            call: slot.id,
            reason,
            last: Box::new(last),
            quality: Box::new(quality),
        });
    }
}

/// Sends `bytes` to `to` from socket `sock_i` of a call: wrapped for the TURN server when that is
/// a relayed client-leg socket. Returns whether the kernel took the whole datagram.
fn send_via(
    sockets: &[mio::net::UdpSocket; 4],
    relay: Option<&mut ClientRelay>,
    sock_i: usize,
    bytes: &[u8],
    to: SocketAddr,
    wrap_buf: &mut [u8],
) -> bool {
    match relay {
        Some(relay) if sock_i < 2 => {
            relay.send_wrapped(sock_i, &sockets[sock_i], to, bytes, wrap_buf)
        }
        _ => matches!(sockets[sock_i].send_to(bytes, to), Ok(n) if n == bytes.len()),
    }
}

/// Sends the TURN requests a relay has queued (permissions, channel binds, refreshes).
fn pump_relay(sockets: &[mio::net::UdpSocket; 4], relay: &mut ClientRelay) {
    relay.pump([&sockets[0], &sockets[1]]);
}

/// A relayed client leg latched to `peer` on socket `sock_i`: bind it a channel.
fn relay_latched(slot: &mut Slot, sock_i: usize, peer: SocketAddr, now: Instant) {
    if let Some(relay) = slot.relay.as_deref_mut().filter(|_| sock_i < 2) {
        relay.latched(now, sock_i, peer);
        // The ChannelBind goes out on the next tick with the other requests.
    }
}
