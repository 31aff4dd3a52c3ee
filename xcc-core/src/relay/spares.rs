//! Client legs allocated on XCC's TURN server ahead of calls.
//!
//! A call's answer must name the relayed address, and getting one takes a round trip to the TURN
//! server (two with the 401 nonce exchange; a satellite link makes that hundreds of
//! milliseconds). So one thread keeps `spares` client-leg socket pairs allocated and refreshed;
//! [`SparePool::take`] hands one to a new call without waiting, and the thread makes the next.
//! The thread is control plane: it locks its own small state, never a worker.
//!
//! A spare is an even/odd pair from the media port pool, bound like any media socket, with one
//! [`TurnClient`] per socket (an allocation belongs to the socket's 5-tuple, or over TCP to a
//! connection of its own next to the socket). Failed spares give their ports back to quarantine
//! and the next attempt waits (1 s, doubling to 60 s), so a dead or misconfigured server costs a
//! few datagrams a minute, not a busy loop.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::media::{RelayConfig, RelayStatus, RelayedPorts};
use crate::nat::Retransmission;
use crate::nat::turn::{TurnClient, TurnConfig, TurnEvent, TurnTransport};
use crate::relay::client_relay::ClientRelay;
use crate::relay::turn_link::{Fill, TcpLink, TurnLink};

/// Token of the pool thread's waker.
const WAKER: Token = Token(usize::MAX);
/// First pause after a failed allocation; doubled per failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest sleep of the pool thread (bounds how late a stop or a missed wake-up is seen).
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Binds one even/odd pair from the media port pool: `(rtp port, [rtp, rtcp] sockets)`.
pub(crate) type TakePair = Box<dyn Fn() -> crate::Result<(u16, [UdpSocket; 2])> + Send + Sync>;
/// Returns a pair (by its RTP port) to the pool's quarantine.
pub(crate) type ReleasePair = Box<dyn Fn(u16) + Send + Sync>;

/// A spare handed to a call: the bound pair and its allocations.
#[derive(Debug)]
pub(crate) struct ReadySpare {
    /// Even port of the pair.
    pub rtp_port: u16,
    /// RTP and RTCP sockets.
    pub sockets: [UdpSocket; 2],
    /// The allocations, for the worker.
    pub relay: ClientRelay,
}

/// Tokens per spare: the two UDP sockets, then the two TCP links (TCP transport only).
const SPARE_TOKENS: usize = 4;

/// One spare being made or kept.
#[derive(Debug)]
struct Spare {
    /// Its tokens are `id * SPARE_TOKENS + i`.
    id: usize,
    /// Even port of the pair.
    rtp_port: u16,
    /// RTP and RTCP sockets, registered with the pool thread's poll while here.
    sockets: [UdpSocket; 2],
    /// One client and link per socket.
    relay: ClientRelay,
    /// XCC's address as the server saw it.
    mapped: Option<SocketAddr>,
    /// Why it failed, once it did.
    failed: Option<String>,
}

impl Spare {
    /// The relayed RTP and RTCP addresses once both allocations are granted and nothing failed.
    fn ready(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.failed
            .is_none()
            .then(|| self.relay.granted())
            .flatten()
    }

    fn is_ready(&self) -> bool {
        self.ready().is_some()
    }
}

/// The pool's state, behind one mutex shared by the thread and [`SparePool::take`].
#[derive(Debug, Default)]
struct State {
    /// Spares being allocated and ready ones.
    spares: Vec<Spare>,
    /// Next spare id.
    next_id: usize,
    /// No new attempt before this (after failures).
    retry_at: Option<Instant>,
    /// Current pause after a failure.
    backoff: Duration,
    /// Allocated spares since start.
    allocated_total: u64,
    /// Failed spares since start.
    failed_total: u64,
    /// The latest failure in words.
    last_error: Option<String>,
    /// The latest success.
    last_success: Option<SystemTime>,
}

/// What the thread and the handles share.
struct Shared {
    config: RelayConfig,
    state: Mutex<State>,
    /// To register and deregister spare sockets from any thread.
    registry: mio::Registry,
    /// Wakes the thread after a take (to refill) or for stopping.
    waker: mio::Waker,
    stop: AtomicBool,
    /// No spare takes a port while set: a restarting engine restores its stored calls' ports
    /// first ([`SparePool::release_hold`]).
    held: AtomicBool,
    take_pair: TakePair,
    release_pair: ReleasePair,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation is a push, a remove or a counter: a panic leaves a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The pool and its thread; stopping it deallocates every spare.
pub(crate) struct SparePool {
    shared: Arc<Shared>,
    /// Joined once by [`SparePool::stop`].
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SparePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparePool")
            .field("server", &self.shared.config.server)
            .finish_non_exhaustive()
    }
}

impl SparePool {
    /// Starts the thread; it begins allocating at once, or with `held` once
    /// [`SparePool::release_hold`] is called.
    pub(crate) fn start(
        config: RelayConfig,
        take_pair: TakePair,
        release_pair: ReleasePair,
        held: bool,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let registry = poll.registry().try_clone()?;
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State {
                backoff: FIRST_BACKOFF,
                ..State::default()
            }),
            registry,
            waker,
            stop: AtomicBool::new(false),
            held: AtomicBool::new(held),
            take_pair,
            release_pair,
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("xcc-turn-spares".into())
            .spawn(move || run(&for_thread, poll))?;
        tracing::info!(
            server = %shared.config.server,
            spares = shared.config.spares,
            "TURN relay for client legs: allocating spares"
        );
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Lets a held pool take ports and allocate.
    pub(crate) fn release_hold(&self) {
        if self.shared.held.swap(false, Ordering::AcqRel) {
            let _ = self.shared.waker.wake();
        }
    }

    /// A ready spare for a new call, without waiting; the thread then allocates a replacement.
    pub(crate) fn take(&self) -> crate::Result<ReadySpare> {
        let sh = &self.shared;
        let mut st = sh.lock();
        let ready = st
            .spares
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.ready().map(|addresses| (i, addresses)));
        let Some((i, (rtp, rtcp))) = ready else {
            let reason = st
                .last_error
                .clone()
                .unwrap_or_else(|| "allocations are still being made".to_owned());
            return Err(crate::Error::RelayUnavailable {
                server: sh.config.server,
                reason,
            });
        };
        let mut spare = st.spares.remove(i);
        drop(st);
        deregister(sh, &mut spare);
        let _ = sh.waker.wake();
        let relayed = RelayedPorts {
            rtp,
            rtcp,
            mapped: spare.mapped,
        };
        spare.relay.set_relayed(relayed);
        Ok(ReadySpare {
            rtp_port: spare.rtp_port,
            sockets: spare.sockets,
            relay: spare.relay,
        })
    }

    /// The allocations of a call relayed before a restart, taken over on the same ports (see
    /// [`TurnClient::resume`]).
    /// `None` over TCP: a TCP allocation died with its connection, and a new one would have a
    /// relayed address the client was never told.
    pub(crate) fn resume(&self, relayed: RelayedPorts, now: Instant) -> Option<ClientRelay> {
        let config = turn_config(&self.shared.config);
        if config.transport != TurnTransport::Udp {
            return None;
        }
        let turn = [relayed.rtp, relayed.rtcp].map(|r| TurnClient::resume(config.clone(), r, now));
        Some(ClientRelay::new(
            turn,
            [TurnLink::Udp, TurnLink::Udp],
            relayed,
        ))
    }

    /// How the pool stands.
    pub(crate) fn status(&self) -> RelayStatus {
        let st = self.shared.lock();
        let ready = st.spares.iter().filter(|s| s.is_ready()).count();
        RelayStatus {
            server: self.shared.config.server,
            ready,
            pending: st.spares.len() - ready,
            allocated_total: st.allocated_total,
            failed_total: st.failed_total,
            last_error: st.last_error.clone(),
            last_success: st.last_success,
        }
    }

    /// Stops the thread after it deallocated every spare.
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.shared.waker.wake();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("the TURN spare thread panicked");
        }
    }
}

impl Drop for SparePool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread: read answers, drive timers, refill, sleep until the next timer.
fn run(sh: &Shared, mut poll: Poll) {
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; 2048];
    let mut rng = rand::rng();
    let mut sleep = Duration::ZERO;
    loop {
        if let Err(e) = poll.poll(&mut events, Some(sleep))
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::error!(error = %e, "TURN spare thread poll failed, stopping");
            break;
        }
        let now = Instant::now();
        let mut st = sh.lock();
        if sh.stop.load(Ordering::Acquire) {
            close_all(sh, &mut st, now);
            return;
        }
        for event in events.iter() {
            if event.token() != WAKER {
                read(sh, &mut st, event.token(), now, &mut buf, &mut rng);
            }
        }
        refill(sh, &mut st, now);
        drive(sh, &mut st, now, &mut rng);
        sleep = next_sleep(&st, now);
    }
    let mut st = sh.lock();
    close_all(sh, &mut st, Instant::now());
}

/// Reads what waits on one spare socket or TCP link.
fn read(
    sh: &Shared,
    st: &mut State,
    token: Token,
    now: Instant,
    buf: &mut [u8],
    rng: &mut impl rand::RngCore,
) {
    let (id, k) = (token.0 / SPARE_TOKENS, token.0 % SPARE_TOKENS);
    let Some(spare) = st.spares.iter_mut().find(|s| s.id == id) else {
        return; // taken by a call since the poll
    };
    let server = sh.config.server;
    for _ in 0..64 {
        let (len, from, stream) = if k < 2 {
            match spare.sockets[k].recv_from(buf) {
                Ok((n, from)) => (n, from, false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => continue, // a pending ICMP error, consumed
            }
        } else {
            let Some(link) = spare.relay.link_mut(k - 2).and_then(TurnLink::tcp) else {
                return;
            };
            link.flush();
            match link.next_frame(buf) {
                Some(n) => (n, server, true),
                None => match link.fill() {
                    Fill::Data => continue,
                    Fill::Empty => return,
                    Fill::Closed => {
                        spare
                            .failed
                            .get_or_insert_with(|| "TCP connection to the TURN server lost".into());
                        return;
                    }
                },
            }
        };
        // Anything but the server's answers (a stray to an unused port) is ignored.
        let _ = spare.relay.unwrap(now, k % 2, from, stream, buf, len, rng);
    }
    // More than 64 queued: come back at once (edge-triggered readiness).
    let _ = sh.waker.wake();
}

/// Starts spares until `config.spares` exist, unless a failure asked to wait.
fn refill(sh: &Shared, st: &mut State, now: Instant) {
    if sh.held.load(Ordering::Acquire) || st.retry_at.is_some_and(|at| now < at) {
        return;
    }
    st.retry_at = None;
    while st.spares.len() < sh.config.spares {
        let (rtp_port, sockets) = match (sh.take_pair)() {
            Ok(pair) => pair,
            Err(e) => {
                // Pool exhausted or a bind error: calls are refused anyway, retry later.
                fail(st, now, format!("no media port pair for a spare: {e}"));
                return;
            }
        };
        let id = st.next_id;
        st.next_id += 1;
        let config = turn_config(&sh.config);
        let links = match config.transport {
            TurnTransport::Udp => Ok([TurnLink::Udp, TurnLink::Udp]),
            TurnTransport::Tcp => TcpLink::connect(config.server).and_then(|a| {
                let b = TcpLink::connect(config.server)?;
                Ok([TurnLink::Tcp(Box::new(a)), TurnLink::Tcp(Box::new(b))])
            }),
        };
        let links = match links {
            Ok(links) => links,
            Err(e) => {
                drop(sockets);
                (sh.release_pair)(rtp_port);
                fail(st, now, format!("cannot connect to the TURN server: {e}"));
                return;
            }
        };
        let turn = [
            TurnClient::new(config.clone(), now),
            TurnClient::new(config, now),
        ];
        let mut spare = Spare {
            id,
            rtp_port,
            sockets,
            relay: ClientRelay::new(turn, links, placeholder(sh.config.server)),
            mapped: None,
            failed: None,
        };
        if let Err(e) = register(sh, &mut spare) {
            deregister(sh, &mut spare);
            drop(spare);
            (sh.release_pair)(rtp_port);
            fail(st, now, format!("cannot register a spare socket: {e}"));
            return;
        }
        st.spares.push(spare);
    }
}

/// The sans-IO client's settings for one allocation.
fn turn_config(relay: &RelayConfig) -> TurnConfig {
    TurnConfig {
        server: relay.server,
        transport: relay.transport,
        username: relay.username.clone(),
        password: relay.password.clone(),
        lifetime: relay.lifetime,
        retransmission: Retransmission::FAILOVER,
    }
}

/// Timers, requests and events of every spare; failed ones are closed and their ports freed.
fn drive(sh: &Shared, st: &mut State, now: Instant, rng: &mut impl rand::RngCore) {
    let mut newly_ready = 0;
    for spare in &mut st.spares {
        // Readiness is counted when the last of the two Allocated events is read.
        let mut granted_now = false;
        spare.relay.handle_timeout(now, rng);
        spare.relay.pump([&spare.sockets[0], &spare.sockets[1]]);
        for k in 0..2 {
            if spare
                .relay
                .link_mut(k)
                .and_then(TurnLink::tcp)
                .is_some_and(|l| l.is_dead())
            {
                spare
                    .failed
                    .get_or_insert_with(|| "TCP connection to the TURN server lost".into());
            }
            let Some(turn) = spare.relay.turn_mut(k) else {
                continue;
            };
            while let Some(event) = turn.poll_event() {
                match event {
                    TurnEvent::Allocated { mapped, .. } => {
                        spare.mapped = spare.mapped.or(mapped);
                        granted_now = true;
                    }
                    TurnEvent::Failed { operation, code } => {
                        spare.failed.get_or_insert_with(|| match code {
                            Some(code) => {
                                format!("{operation:?} refused by the server: error {code}")
                            }
                            None => format!("{operation:?} not answered by the server"),
                        });
                    }
                    TurnEvent::PermissionGranted { .. } | TurnEvent::ChannelBound { .. } => {}
                }
            }
        }
        if let (true, Some((relayed_rtp, relayed_rtcp))) = (granted_now, spare.ready()) {
            newly_ready += 1;
            tracing::debug!(rtp = spare.rtp_port, %relayed_rtp, %relayed_rtcp, "TURN spare ready");
        }
    }
    if newly_ready > 0 {
        if st.allocated_total == 0 || st.last_error.is_some() {
            tracing::info!(server = %sh.config.server, "TURN server allocating client legs");
        }
        st.allocated_total += newly_ready;
        st.last_success = Some(SystemTime::now());
        st.last_error = None;
        st.backoff = FIRST_BACKOFF;
    }
    let mut i = 0;
    while i < st.spares.len() {
        let Some(why) = st.spares[i].failed.clone() else {
            i += 1;
            continue;
        };
        let spare = st.spares.remove(i);
        tracing::warn!(server = %sh.config.server, reason = %why, "TURN allocation failed");
        discard(sh, spare, now);
        fail(st, now, why);
    }
}

/// Counts a failure and schedules the next attempt.
fn fail(st: &mut State, now: Instant, why: String) {
    st.failed_total += 1;
    st.last_error = Some(why);
    st.retry_at = Some(now + st.backoff);
    st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
}

/// Deallocates (one datagram per allocation, no wait), deregisters and frees the ports.
fn discard(sh: &Shared, mut spare: Spare, now: Instant) {
    spare.relay.close(now);
    spare.relay.handle_timeout(now, &mut rand::rng());
    spare.relay.pump([&spare.sockets[0], &spare.sockets[1]]);
    deregister(sh, &mut spare);
    let port = spare.rtp_port;
    drop(spare);
    (sh.release_pair)(port);
}

/// Registers a spare's sockets and TCP links with the pool thread's poll.
fn register(sh: &Shared, spare: &mut Spare) -> io::Result<()> {
    let base = spare.id * SPARE_TOKENS;
    for (k, s) in spare.sockets.iter_mut().enumerate() {
        sh.registry
            .register(s, Token(base + k), Interest::READABLE)?;
    }
    for k in 0..2 {
        if let Some(link) = spare.relay.link_mut(k).and_then(TurnLink::tcp) {
            let interest = Interest::READABLE | Interest::WRITABLE;
            sh.registry
                .register(link.stream(), Token(base + 2 + k), interest)?;
        }
    }
    Ok(())
}

/// Takes a spare's sockets and links out of the pool thread's poll (before a worker takes them).
fn deregister(sh: &Shared, spare: &mut Spare) {
    for s in &mut spare.sockets {
        let _ = sh.registry.deregister(s);
    }
    for k in 0..2 {
        if let Some(link) = spare.relay.link_mut(k).and_then(TurnLink::tcp) {
            let _ = sh.registry.deregister(link.stream());
        }
    }
}

/// Relayed addresses until the server grants real ones (never handed out: `is_ready` waits).
fn placeholder(server: SocketAddr) -> RelayedPorts {
    RelayedPorts {
        rtp: server,
        rtcp: server,
        mapped: None,
    }
}

/// Deallocates every spare (shutdown).
fn close_all(sh: &Shared, st: &mut State, now: Instant) {
    for spare in st.spares.drain(..) {
        discard(sh, spare, now);
    }
}

/// Until the earliest timer of any spare, the retry time, or [`MAX_SLEEP`].
fn next_sleep(st: &State, now: Instant) -> Duration {
    st.spares
        .iter()
        .flat_map(|s| s.relay.poll_timeouts())
        .chain(st.retry_at)
        .min()
        .map_or(MAX_SLEEP, |at| at.saturating_duration_since(now))
        .min(MAX_SLEEP)
}
