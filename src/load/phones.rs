//! The synthetic phones: one paced sender loop for every call of the run and a few receiver
//! loops, each owning a shard of the calls (not a thread per call), playing 20 ms packets both
//! ways on each call, paced evenly across calls. Receivers read with `recvmmsg` (up to `BATCH`
//! datagrams per system call) from edge-triggered mio readiness.
//!
//! Call `i` has two streams: `2i` from the client phone to the PBX phone (SRTP into the relay when
//! the client leg is keyed, RTP out) and `2i + 1` back. Packet `k` of call `i` is due at
//! `k * 20 ms + i * 20 ms / calls`, so the relay sees a steady rate instead of bursts every 20 ms.

use std::collections::HashSet;
use std::io::{ErrorKind, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::UdpSocket as MioSocket;
use mio::{Events, Interest, Poll, Token};
use xcc_core::recv_batch::{BATCH, RecvBatch};
use xcc_core::srtp::SrtpContext;

use super::error::LoadError;
use super::forwarder::PortRange;
use super::netstat;
use super::payload::{self, Direction, PACKET_LEN, Payload, Stamp, TS_PER_PACKET};
use super::stats::{Histogram, StreamStats};

/// Packet interval per stream.
pub const PTIME: Duration = Duration::from_millis(20);
/// Time the receiver keeps listening after the last send, for packets still in flight.
const DRAIN: Duration = Duration::from_millis(300);
/// Room for the SRTP tag after the packet (largest: 16-byte GCM tag).
const SRTP_ROOM: usize = 16;

/// Binds the phones' sockets on 127.0.0.1 inside a port range of their own, so they never take
/// ports from the relay's media pool (the kernel's ephemeral range usually overlaps it).
pub struct PhoneBinder {
    /// Where to look next.
    next: u32,
    /// Last port of the range.
    last: u32,
}

impl PhoneBinder {
    /// Phones from `range`, lowest port first.
    pub fn new(range: PortRange) -> Self {
        Self {
            next: u32::from(range.first),
            last: u32::from(range.last),
        }
    }

    /// The next free port of the range, bound; ports in use (by anyone) are skipped.
    pub fn bind(&mut self) -> Result<UdpSocket, LoadError> {
        while self.next <= self.last {
            let port = self.next as u16; // <= last, a u16.
            self.next += 1;
            match UdpSocket::bind((IpAddr::from([127, 0, 0, 1]), port)) {
                Ok(s) => {
                    // Now, long before media: the kernel switches stamping on through deferred
                    // work the first time any socket asks, and a datagram queued before that is
                    // stamped only when read.
                    enable_rx_timestamps(&s).map_err(LoadError::io("enable receive timestamps"))?;
                    return Ok(s);
                }
                Err(e) if e.kind() == ErrorKind::AddrInUse => continue,
                Err(e) => return Err(LoadError::io("bind phone")(e)),
            }
        }
        Err(LoadError::Usage {
            reason: "--phone-ports has no free port left for the phones (two per call)".into(),
        })
    }

    /// `calls` pairs of (client, PBX) phones.
    pub fn bind_pairs(&mut self, calls: u32) -> Result<Vec<(UdpSocket, UdpSocket)>, LoadError> {
        (0..calls)
            .map(|_| Ok((self.bind()?, self.bind()?)))
            .collect()
    }
}

/// One call's phones and where they send.
pub struct CallMedia {
    /// The client phone's socket (talks to the relay's client leg).
    pub client: UdpSocket,
    /// The PBX phone's socket (talks to the relay's PBX leg).
    pub pbx: UdpSocket,
    /// The relay's client-leg address.
    pub client_target: SocketAddr,
    /// The relay's PBX-leg address.
    pub pbx_target: SocketAddr,
    /// The client's own key, protecting what it sends; `None` for plain RTP.
    pub client_tx: Option<SrtpContext>,
    /// The relay's client-leg key, unprotecting what the client receives.
    pub client_rx: Option<SrtpContext>,
}

/// The run's measurement clock: CLOCK_REALTIME nanoseconds since the run's start.
///
/// Realtime, not monotonic, because the kernel stamps received datagrams with CLOCK_REALTIME
/// (`SO_TIMESTAMPNS`): send stamps, kernel arrivals and user-space arrivals must all be read on
/// the clock the kernel uses, or latency would carry the offset between two clocks. Pacing and
/// deadlines stay on `Instant` (they compare no stamps). A step of the realtime clock during a run
/// (not a slew: NTP slews both clocks alike) would distort that run's latency.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    /// CLOCK_REALTIME at the run's start, ns since the Unix epoch.
    epoch_ns: u64,
}

impl RunClock {
    /// A clock whose zero is now.
    pub fn start() -> Self {
        Self {
            epoch_ns: realtime_ns(),
        }
    }

    /// Nanoseconds since the run's start.
    pub fn now_ns(&self) -> u64 {
        self.since_start(realtime_ns())
    }

    /// A CLOCK_REALTIME reading (ns since the Unix epoch, as the kernel stamps) on this clock.
    pub fn since_start(&self, realtime_ns: u64) -> u64 {
        realtime_ns.saturating_sub(self.epoch_ns)
    }
}

/// CLOCK_REALTIME, ns since the Unix epoch (0 if the clock reads before it).
fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &raw mut ts) };
    xcc_core::recv_batch::timespec_ns(&ts).unwrap_or(0)
}

pub use xcc_core::recv_batch::enable_rx_timestamps;

/// Counters both loops update for the live progress line.
#[derive(Debug, Default)]
struct Progress {
    sent: AtomicU64,
    received: AtomicU64,
    /// Nanoseconds (run clock) the sender finished at; 0 while sending.
    sender_done_ns: AtomicU64,
}

/// One stream's outcome.
#[derive(Debug)]
pub struct StreamOutcome {
    /// Packets handed to the kernel.
    pub sent: u64,
    /// Receive-side counters.
    pub stats: StreamStats,
}

/// What playing the media measured.
#[derive(Debug)]
pub struct MediaOutcome {
    /// Streams `2i` (to PBX) and `2i + 1` (to client) of every call.
    pub streams: Vec<StreamOutcome>,
    /// One-way latency of every packet received: send stamp to the kernel's receive stamp on the
    /// phone's socket (the relay plus loopback), or to the user-space read for `arrival_fallbacks`.
    pub latency: Histogram,
    /// Kernel receive stamp to the user-space read, per media datagram that had a stamp: the
    /// load generator's own queueing (receiver threads waiting for a CPU or busy elsewhere).
    pub receive_delay: Histogram,
    /// Media datagrams without a kernel receive stamp (control messages truncated, or none),
    /// measured on the user-space arrival time instead.
    pub arrival_fallbacks: u64,
    /// How late the sender was against each packet's due time.
    pub send_lag: Histogram,
    /// Sends the kernel refused (socket buffer full): a load-generator limit, not relay loss.
    pub send_errors: u64,
    /// Datagrams that were not our media: wrong source, not RTP, not ours, or wrong stream.
    pub foreign: u64,
    /// SRTP packets from the relay that did not authenticate.
    pub auth_failures: u64,
    /// Datagrams the kernel dropped at the phones' sockets (receive buffer full): the load
    /// generator did not read fast enough. `None` if /proc/net/udp was unreadable.
    pub phone_socket_drops: Option<u64>,
    /// Datagrams the kernel dropped at the relay's leg sockets (IPv4 loopback relays only).
    pub relay_socket_drops: Option<u64>,
    /// Receiver threads used.
    pub rx_threads: usize,
    /// How long the sender was runnable but waited for a CPU; `None` without schedstats.
    pub sender_cpu_wait: Option<Duration>,
    /// The same for the receiver that waited longest.
    pub receiver_cpu_wait: Option<Duration>,
    /// Wall time from the first due packet to the last send.
    pub elapsed: Duration,
}

/// Splitmix64: spreads the call index into per-stream SSRCs and initial sequence numbers and
/// timestamps (deterministic, so a run is reproducible; not a security property).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Per-stream RTP identity.
#[derive(Clone, Copy)]
struct Origin {
    ssrc: u32,
    seq0: u16,
    ts0: u32,
}

fn origin(stream: usize) -> Origin {
    let r = mix(stream as u64);
    Origin {
        ssrc: r as u32,
        seq0: (r >> 32) as u16,
        ts0: (r >> 48) as u32 * 65_536,
    }
}

/// Sends one latching probe from every phone (for relays that learn both peers from traffic,
/// like the bare forwarder); receivers discard probes.
pub fn send_probes(calls: &[CallMedia]) -> Result<(), LoadError> {
    let mut buf = [0u8; PACKET_LEN];
    for (i, c) in calls.iter().enumerate() {
        payload::write_probe(&mut buf, origin(2 * i).ssrc);
        c.client
            .send_to(&buf, c.client_target)
            .map_err(LoadError::io("send probe"))?;
        payload::write_probe(&mut buf, origin(2 * i + 1).ssrc);
        c.pbx
            .send_to(&buf, c.pbx_target)
            .map_err(LoadError::io("send probe"))?;
    }
    Ok(())
}

/// How the phones' loops run: threads and pacing.
#[derive(Debug, Clone, Copy)]
pub struct PlayOptions {
    /// Receiver threads, each owning a shard of the calls (call `i` goes to shard `i % n`).
    pub rx_threads: usize,
    /// The sender sends every packet due within this much of now before it sleeps again: one
    /// wake-up per quantum instead of one per call slot (`k * 20 ms + i * 20 ms / N`).
    pub quantum: Duration,
}

impl Default for PlayOptions {
    fn default() -> Self {
        Self {
            rx_threads: 1,
            quantum: DEFAULT_QUANTUM,
        }
    }
}

/// Default pacing quantum: 1/80 of the packet interval. At 750 calls the slots are 27 µs apart,
/// so one wake-up covers ~9 slots (18 packets) and no packet leaves more than 250 µs early.
pub const DEFAULT_QUANTUM: Duration = Duration::from_micros(250);

/// Receive buffer per datagram (larger than any packet of ours).
const RX_BUF: usize = 2048;

/// Plays `duration` of media on every call; `on_start`/`on_end` run on this thread right when the
/// sender starts and finishes (CPU sampling brackets exactly the media phase). `on_sockets` runs
/// after every loop has finished but while the sockets are still open, with the phones' and the
/// relay's local addresses, to read their kernel drop counters.
pub fn play(
    calls: Vec<CallMedia>,
    duration: Duration,
    options: PlayOptions,
    mut on_start: impl FnMut(),
    mut on_end: impl FnMut(),
) -> Result<MediaOutcome, LoadError> {
    let packets = u32::try_from(duration.as_nanos() / PTIME.as_nanos())
        .map_err(|_| LoadError::Usage {
            reason: format!("duration {duration:?} too long"),
        })?
        .max(1);
    let progress = Arc::new(Progress::default());
    let shards = options.rx_threads.clamp(1, calls.len().max(1));
    let mut polls = Vec::with_capacity(shards);
    let mut receivers: Vec<Vec<RxCall>> = Vec::with_capacity(shards);
    for _ in 0..shards {
        polls.push(Poll::new().map_err(LoadError::io("create poll"))?);
        receivers.push(Vec::with_capacity(calls.len() / shards + 1));
    }
    let mut senders = Vec::with_capacity(calls.len());
    let mut phone_addrs = HashSet::with_capacity(calls.len() * 2);
    for (i, c) in calls.into_iter().enumerate() {
        let shard = i % shards;
        let j = receivers[shard].len();
        for s in [&c.pbx, &c.client] {
            if let Ok(a) = s.local_addr() {
                phone_addrs.insert(a);
            }
        }
        let pbx_rx = register(&polls[shard], &c.pbx, Token(2 * j))?;
        let client_rx = register(&polls[shard], &c.client, Token(2 * j + 1))?;
        receivers[shard].push(RxCall {
            index: i,
            pbx: pbx_rx,
            client: client_rx,
            client_source: c.client_target,
            pbx_source: c.pbx_target,
            srtp: c.client_rx,
        });
        senders.push(TxCall {
            client: c.client,
            pbx: c.pbx,
            client_target: c.client_target,
            pbx_target: c.pbx_target,
            srtp: c.client_tx,
        });
    }
    let relay_addrs: HashSet<SocketAddr> = senders
        .iter()
        .flat_map(|c| [c.client_target, c.pbx_target])
        .collect();
    let epoch = Instant::now();
    let clock = RunClock::start();
    let start = epoch + Duration::from_millis(20);
    let n = senders.len();
    let mut rx_threads = Vec::with_capacity(shards);
    for (shard, (poll, calls)) in polls.into_iter().zip(receivers).enumerate() {
        let rx_progress = Arc::clone(&progress);
        rx_threads.push(
            std::thread::Builder::new()
                .name(format!("load-rx{shard}"))
                .spawn(move || receive(poll, calls, packets, epoch, clock, &rx_progress))
                .map_err(LoadError::io("spawn receiver"))?,
        );
    }
    let tx_progress = Arc::clone(&progress);
    let quantum = options.quantum;
    let sender = std::thread::Builder::new()
        .name("load-tx".into())
        .spawn(move || {
            send(
                senders,
                packets,
                (epoch, clock),
                start,
                quantum,
                &tx_progress,
            )
        })
        .map_err(LoadError::io("spawn sender"))?;

    let live = std::io::stderr().is_terminal();
    let expected = 2 * n as u64 * u64::from(packets);
    let now = Instant::now();
    if start > now {
        std::thread::sleep(start - now);
    }
    on_start();
    while !sender.is_finished() {
        std::thread::sleep(Duration::from_millis(if live { 250 } else { 20 }));
        if live {
            let sent = progress.sent.load(Ordering::Relaxed);
            let received = progress.received.load(Ordering::Relaxed);
            let _ = write!(
                std::io::stderr(),
                "\r{:5.1}s  calls {n}  sent {sent}/{expected}  received {received}  ",
                start.elapsed().as_secs_f64()
            );
        }
    }
    on_end();
    let tx = sender
        .join()
        .map_err(|_| LoadError::io("sender thread")(std::io::Error::other("panicked")))?;
    let mut streams: Vec<StreamStats> = Vec::new();
    streams.resize_with(n * 2, || StreamStats::new(0));
    let mut latency = Histogram::new();
    let mut receive_delay = Histogram::new();
    let (mut foreign, mut auth_failures, mut arrival_fallbacks) = (0, 0, 0);
    let mut open_sockets = Vec::with_capacity(shards);
    let mut receiver_cpu_wait: Option<Duration> = None;
    for t in rx_threads {
        let rx = t
            .join()
            .map_err(|_| LoadError::io("receiver thread")(std::io::Error::other("panicked")))?;
        for (index, [to_pbx, to_client]) in rx.streams {
            streams[2 * index] = to_pbx;
            streams[2 * index + 1] = to_client;
        }
        latency.merge(&rx.latency);
        receive_delay.merge(&rx.receive_delay);
        arrival_fallbacks += rx.arrival_fallbacks;
        foreign += rx.foreign;
        auth_failures += rx.auth_failures;
        open_sockets.push(rx.sockets);
        receiver_cpu_wait = match (receiver_cpu_wait, rx.cpu_wait) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    // Both ends' sockets are still open here (the phones' in `open_sockets`, the relay's in
    // the relay): their drop counters are still there to read.
    let phone_drops = netstat::udp_drops(&phone_addrs);
    let relay_drops = netstat::udp_drops(&relay_addrs);
    drop(open_sockets);
    if live {
        let _ = writeln!(std::io::stderr());
    }
    let streams = tx
        .sent
        .into_iter()
        .zip(streams)
        .map(|(sent, stats)| StreamOutcome { sent, stats })
        .collect();
    Ok(MediaOutcome {
        streams,
        latency,
        receive_delay,
        arrival_fallbacks,
        send_lag: tx.lag,
        send_errors: tx.errors,
        foreign,
        auth_failures,
        phone_socket_drops: phone_drops,
        relay_socket_drops: relay_drops,
        rx_threads: shards,
        sender_cpu_wait: tx.cpu_wait,
        receiver_cpu_wait,
        elapsed: tx.elapsed,
    })
}

fn register(poll: &Poll, socket: &UdpSocket, token: Token) -> Result<MioSocket, LoadError> {
    let clone = socket.try_clone().map_err(LoadError::io("clone socket"))?;
    // Already on since `PhoneBinder::bind` for our phones; again here so that every socket read
    // is stamped whoever bound it (idempotent).
    enable_rx_timestamps(&clone).map_err(LoadError::io("enable receive timestamps"))?;
    // Shared with the sender's handle: its sends become non-blocking too, and a full socket
    // buffer shows up as a counted send error instead of stalling every other call.
    clone
        .set_nonblocking(true)
        .map_err(LoadError::io("set non-blocking"))?;
    let mut rx = MioSocket::from_std(clone);
    poll.registry()
        .register(&mut rx, token, Interest::READABLE)
        .map_err(LoadError::io("register socket"))?;
    Ok(rx)
}

struct TxCall {
    client: UdpSocket,
    pbx: UdpSocket,
    client_target: SocketAddr,
    pbx_target: SocketAddr,
    srtp: Option<SrtpContext>,
}

struct TxOutcome {
    cpu_wait: Option<Duration>,
    sent: Vec<u64>,
    lag: Histogram,
    errors: u64,
    elapsed: Duration,
}

/// `epoch` paces (monotonic), `clock` stamps (the receivers' clock).
fn send(
    mut calls: Vec<TxCall>,
    packets: u32,
    (epoch, clock): (Instant, RunClock),
    start: Instant,
    quantum: Duration,
    progress: &Progress,
) -> TxOutcome {
    let wait_before = super::cpu::thread_runqueue_wait();
    let n = calls.len() as u64;
    let mut sent = vec![0u64; calls.len() * 2];
    let mut lag = Histogram::new();
    let mut errors = 0;
    let mut buf = [0u8; PACKET_LEN + SRTP_ROOM];
    let ptime = PTIME.as_nanos() as u64;
    let start_ns = (start - epoch).as_nanos() as u64;
    for j in 0..u64::from(packets) * n {
        let (k, i) = (j / n, (j % n) as usize);
        let due = start + Duration::from_nanos(k * ptime + i as u64 * ptime / n);
        let now = Instant::now();
        if due > now + quantum {
            std::thread::sleep(due - now);
        }
        // Every packet's lateness, oversleeping included (0 when on time or early).
        lag.record(Instant::now().saturating_duration_since(due).as_nanos() as u64);
        let call = &mut calls[i];
        let k32 = k as u32; // k < packets, a u32.
        for dir in [Direction::ToPbx, Direction::ToClient] {
            let stream = 2 * i + dir as usize;
            let o = origin(stream);
            let stamp = Stamp {
                call: i as u32,
                direction: dir,
                index: k32,
                sent_ns: clock.now_ns(),
            };
            // Cannot fail: `buf` is PACKET_LEN + SRTP_ROOM bytes, so its first PACKET_LEN exist.
            let pkt: &mut [u8; PACKET_LEN] = (&mut buf[..PACKET_LEN])
                .try_into()
                .expect("buf holds PACKET_LEN + SRTP_ROOM bytes");
            payload::write_packet(
                pkt,
                o.seq0.wrapping_add(k as u16),
                o.ts0.wrapping_add(k32.wrapping_mul(TS_PER_PACKET)),
                o.ssrc,
                &stamp,
            );
            let (socket, target, len) = match dir {
                Direction::ToPbx => {
                    let len = match call.srtp.as_mut() {
                        Some(ctx) => match ctx.protect_rtp(&mut buf, PACKET_LEN) {
                            Ok(len) => len,
                            Err(_) => {
                                errors += 1;
                                continue;
                            }
                        },
                        None => PACKET_LEN,
                    };
                    (&call.client, call.client_target, len)
                }
                Direction::ToClient => (&call.pbx, call.pbx_target, PACKET_LEN),
            };
            match socket.send_to(&buf[..len], target) {
                Ok(_) => sent[stream] += 1,
                Err(_) => errors += 1,
            }
        }
        progress.sent.fetch_add(2, Ordering::Relaxed);
    }
    let end = Instant::now();
    progress
        .sender_done_ns
        .store(((end - epoch).as_nanos() as u64).max(1), Ordering::Release);
    TxOutcome {
        cpu_wait: wait_before
            .zip(super::cpu::thread_runqueue_wait())
            .map(|(a, b)| b.saturating_sub(a)),
        sent,
        lag,
        errors,
        elapsed: Duration::from_nanos(((end - epoch).as_nanos() as u64).saturating_sub(start_ns)),
    }
}

struct RxCall {
    /// The call's index in the run.
    index: usize,
    pbx: MioSocket,
    client: MioSocket,
    /// Where the client phone's packets must come from (the relay's client leg).
    client_source: SocketAddr,
    /// Where the PBX phone's packets must come from (the relay's PBX leg).
    pbx_source: SocketAddr,
    srtp: Option<SrtpContext>,
}

struct RxOutcome {
    cpu_wait: Option<Duration>,
    /// (call index, [to PBX, to client]) for the shard's calls.
    streams: Vec<(usize, [StreamStats; 2])>,
    latency: Histogram,
    receive_delay: Histogram,
    arrival_fallbacks: u64,
    foreign: u64,
    auth_failures: u64,
    /// The shard's sockets, kept open until the drop counters are read.
    sockets: Vec<RxCall>,
}

/// When a datagram arrived, on the run's clock.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    /// The kernel's receive stamp; `None` when the datagram carried none.
    kernel_ns: Option<u64>,
    /// When `recvmmsg` returned it to user space.
    user_ns: u64,
}

/// What one receiver counts, apart from the per-stream statistics.
struct RxCounters<'a> {
    latency: &'a mut Histogram,
    receive_delay: &'a mut Histogram,
    arrival_fallbacks: &'a mut u64,
    foreign: &'a mut u64,
    auth_failures: &'a mut u64,
    progress: &'a Progress,
}

fn receive(
    mut poll: Poll,
    mut calls: Vec<RxCall>,
    packets: u32,
    epoch: Instant,
    clock: RunClock,
    progress: &Progress,
) -> RxOutcome {
    let wait_before = super::cpu::thread_runqueue_wait();
    let mut streams: Vec<[StreamStats; 2]> = (0..calls.len())
        .map(|_| [StreamStats::new(packets), StreamStats::new(packets)])
        .collect();
    let mut latency = Histogram::new();
    let mut receive_delay = Histogram::new();
    let (mut foreign, mut auth_failures, mut arrival_fallbacks) = (0u64, 0u64, 0u64);
    let mut events = Events::with_capacity(1024);
    let mut batch = RecvBatch::new(RX_BUF, RX_BUF);
    // Bound even if the sender stalls: twice the media time plus slack.
    let hard_stop = epoch + PTIME * packets * 2 + Duration::from_secs(5);
    loop {
        let done = progress.sender_done_ns.load(Ordering::Acquire);
        let now = Instant::now();
        if (done != 0 && now > epoch + Duration::from_nanos(done) + DRAIN) || now > hard_stop {
            break;
        }
        if poll
            .poll(&mut events, Some(Duration::from_millis(10)))
            .is_err()
        {
            continue;
        }
        for event in events.iter() {
            let token = event.token().0;
            let j = token / 2;
            let (Some(call), Some(stats)) = (calls.get_mut(j), streams.get_mut(j)) else {
                continue;
            };
            let to_pbx = token % 2 == 0;
            let mut counters = RxCounters {
                latency: &mut latency,
                receive_delay: &mut receive_delay,
                arrival_fallbacks: &mut arrival_fallbacks,
                foreign: &mut foreign,
                auth_failures: &mut auth_failures,
                progress,
            };
            drain(call, to_pbx, stats, &mut batch, clock, &mut counters);
        }
    }
    RxOutcome {
        cpu_wait: wait_before
            .zip(super::cpu::thread_runqueue_wait())
            .map(|(a, b)| b.saturating_sub(a)),
        streams: calls.iter().map(|c| c.index).zip(streams).collect(),
        latency,
        receive_delay,
        arrival_fallbacks,
        foreign,
        auth_failures,
        sockets: calls,
    }
}

/// Edge-triggered: reads one socket until the kernel says it is empty, skipping a bounded
/// number of one-shot errors.
fn drain(
    call: &mut RxCall,
    to_pbx: bool,
    stats: &mut [StreamStats; 2],
    batch: &mut RecvBatch,
    clock: RunClock,
    c: &mut RxCounters<'_>,
) {
    let mut errors = 0;
    loop {
        let socket = if to_pbx { &call.pbx } else { &call.client };
        let n = match batch.recv(socket.as_raw_fd()) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(_) if errors < super::forwarder::MAX_RECV_ERRORS => {
                errors += 1;
                continue;
            }
            Err(_) => return,
        };
        let user_ns = clock.now_ns();
        for i in 0..n {
            let arrival = Arrival {
                kernel_ns: batch.kernel_time_ns(i).map(|t| clock.since_start(t)),
                user_ns,
            };
            let (len, from) = batch.meta(i);
            let buf = batch.buf_mut(i);
            accept(call, to_pbx, stats, buf, len, from, arrival, c);
        }
        if n < BATCH {
            return;
        }
    }
}

/// Checks and measures one datagram received by a phone.
#[allow(clippy::too_many_arguments)]
fn accept(
    call: &mut RxCall,
    to_pbx: bool,
    stats: &mut [StreamStats; 2],
    buf: &mut [u8],
    len: usize,
    from: Option<SocketAddr>,
    arrival: Arrival,
    c: &mut RxCounters<'_>,
) {
    let expected_from = if to_pbx {
        call.pbx_source
    } else {
        call.client_source
    };
    if from != Some(expected_from) {
        *c.foreign += 1;
        return;
    }
    // XCC's hole-punching probes reach the client until its leg latches; a phone's RTP stack
    // discards STUN (RFC 7983), and so does this one.
    if !to_pbx && xcc_core::nat::stun::is_stun(&buf[..len]) {
        return;
    }
    let len = match (to_pbx, call.srtp.as_mut()) {
        (false, Some(ctx)) => match ctx.unprotect_rtp(buf, len) {
            Ok(len) => len,
            Err(_) => {
                *c.auth_failures += 1;
                return;
            }
        },
        _ => len,
    };
    let Ok(hdr) = xcc_core::rtp::parse_rtp(&buf[..len]) else {
        *c.foreign += 1;
        return;
    };
    let want = if to_pbx {
        Direction::ToPbx
    } else {
        Direction::ToClient
    };
    match payload::read_payload(&buf[hdr.header_len.min(len)..len]) {
        Some(Payload::Probe) => {}
        Some(Payload::Media(s)) if s.call as usize == call.index && s.direction == want => {
            // Latency and jitter end at the kernel's stamp; without one, at the read.
            let arrival = match arrival.kernel_ns {
                Some(k) => {
                    c.receive_delay.record(arrival.user_ns.saturating_sub(k));
                    k
                }
                None => {
                    *c.arrival_fallbacks += 1;
                    arrival.user_ns
                }
            };
            stats[usize::from(!to_pbx)].record(
                s.index,
                hdr.timestamp,
                s.sent_ns,
                arrival,
                c.latency,
            );
            c.progress.received.fetch_add(1, Ordering::Relaxed);
        }
        _ => *c.foreign += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_skip_ports_in_use_and_stay_in_range() {
        // Find two adjacent free ports from a high range, then occupy the first.
        let range = PortRange::parse("25900-25905").unwrap();
        let taken = UdpSocket::bind(("127.0.0.1", 25_900));
        let mut binder = PhoneBinder::new(range);
        let pairs = binder.bind_pairs(2).unwrap();
        for (a, b) in &pairs {
            for s in [a, b] {
                let addr = s.local_addr().unwrap();
                assert!(addr.ip().is_loopback());
                assert!((25_900..=25_905).contains(&addr.port()));
                if taken.is_ok() {
                    assert_ne!(addr.port(), 25_900, "a port in use is skipped");
                }
            }
        }
        drop(pairs);
        let mut small = PhoneBinder::new(PortRange::parse("25906-25907").unwrap());
        assert!(
            small.bind_pairs(2).is_err(),
            "range exhausted is an error, not a wrap"
        );
    }

    /// A PBX phone (to_pbx stream of call 0) receiving from a "relay" socket, both on 127.0.0.1.
    fn pbx_phone(timestamps: bool) -> (UdpSocket, RxCall) {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let pbx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        if timestamps {
            enable_rx_timestamps(&pbx).unwrap();
        }
        let relay_addr = relay.local_addr().unwrap();
        relay.connect(pbx.local_addr().unwrap()).unwrap();
        if timestamps {
            wait_for_stamping(&relay, &pbx);
        }
        let call = RxCall {
            index: 0,
            pbx: MioSocket::from_std(pbx),
            client: MioSocket::from_std(client),
            client_source: relay_addr,
            pbx_source: relay_addr,
            srtp: None,
        };
        (relay, call)
    }

    /// Waits (bounded) until the kernel stamps datagrams when they are queued, not when read:
    /// the first socket to ask switches stamping on through deferred work, and until then the
    /// stamp is the read time.
    fn wait_for_stamping(relay: &UdpSocket, phone: &UdpSocket) {
        let mut batch = RecvBatch::new(RX_BUF, RX_BUF);
        for _ in 0..100 {
            relay.send(b"warm-up").unwrap();
            std::thread::sleep(Duration::from_millis(5));
            let n = batch.recv(phone.as_raw_fd()).unwrap();
            let read = realtime_ns();
            if (0..n).any(|i| {
                batch
                    .kernel_time_ns(i)
                    .is_some_and(|t| read.saturating_sub(t) >= 2_000_000)
            }) {
                return;
            }
        }
        panic!("the kernel never stamped a datagram when it was queued");
    }

    /// Sends `n` media packets of call 0 towards the PBX phone, stamped on `clock`.
    fn send_media(relay: &UdpSocket, clock: RunClock, n: u32) {
        let mut buf = [0u8; PACKET_LEN];
        for k in 0..n {
            let stamp = Stamp {
                call: 0,
                direction: Direction::ToPbx,
                index: k,
                sent_ns: clock.now_ns(),
            };
            payload::write_packet(&mut buf, k as u16, k * TS_PER_PACKET, 1, &stamp);
            relay.send(&buf).unwrap();
        }
    }

    /// What `drain` counted for `n` packets: (latency, receive delay, fallbacks, received).
    fn drain_all(call: &mut RxCall, clock: RunClock, n: u32) -> (Histogram, Histogram, u64, u64) {
        let mut stats = [StreamStats::new(n), StreamStats::new(n)];
        let (mut latency, mut receive_delay) = (Histogram::new(), Histogram::new());
        let (mut foreign, mut auth_failures, mut fallbacks) = (0, 0, 0);
        let progress = Progress::default();
        let mut batch = RecvBatch::new(RX_BUF, RX_BUF);
        // Loopback delivers within sendto; the retries only absorb scheduling, bounded.
        for _ in 0..200 {
            let mut c = RxCounters {
                latency: &mut latency,
                receive_delay: &mut receive_delay,
                arrival_fallbacks: &mut fallbacks,
                foreign: &mut foreign,
                auth_failures: &mut auth_failures,
                progress: &progress,
            };
            drain(call, true, &mut stats, &mut batch, clock, &mut c);
            if stats[0].received() >= u64::from(n) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(foreign, 0, "every datagram is ours");
        let received = stats[0].received();
        (latency, receive_delay, fallbacks, received)
    }

    #[test]
    fn kernel_stamps_each_datagram_between_send_and_read() {
        let (relay, call) = pbx_phone(true);
        let before = realtime_ns();
        send_media(&relay, RunClock::start(), 3);
        let mut batch = RecvBatch::new(RX_BUF, RX_BUF);
        let mut got = 0;
        // More than the 3 datagrams' worth of tries, bounded.
        for _ in 0..200 {
            match batch.recv(call.pbx.as_raw_fd()) {
                Ok(n) => {
                    let after = realtime_ns();
                    for i in 0..n {
                        let t = batch.kernel_time_ns(i).expect("kernel receive stamp");
                        // Stamped when loopback queued it (or, at the latest, when it was read).
                        assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
                    }
                    got += n;
                }
                Err(e) => assert_eq!(e.kind(), ErrorKind::WouldBlock),
            }
            if got >= 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got, 3);
    }

    #[test]
    fn stamped_arrivals_measure_latency_and_receive_delay_without_fallback() {
        let (relay, mut call) = pbx_phone(true);
        let clock = RunClock::start();
        send_media(&relay, clock, 5);
        // Read late on purpose: the queueing shows as receive delay, not as latency.
        std::thread::sleep(Duration::from_millis(30));
        let (latency, delay, fallbacks, received) = drain_all(&mut call, clock, 5);
        assert_eq!((received, fallbacks), (5, 0));
        assert_eq!(delay.count(), 5);
        assert!(
            delay.quantile(0.5) >= 25_000_000,
            "receive delay {} ns covers the 30 ms sleep",
            delay.quantile(0.5)
        );
        assert!(
            latency.max() < 25_000_000,
            "latency {} ns ends at the kernel's stamp, before the sleep",
            latency.max()
        );
    }

    #[test]
    fn unstamped_arrivals_fall_back_to_the_read_time_and_are_counted() {
        let (relay, mut call) = pbx_phone(false);
        let clock = RunClock::start();
        send_media(&relay, clock, 4);
        std::thread::sleep(Duration::from_millis(30));
        let (latency, delay, fallbacks, received) = drain_all(&mut call, clock, 4);
        assert_eq!((received, fallbacks), (4, 4));
        assert_eq!(delay.count(), 0, "no stamp, no receive delay");
        assert!(
            latency.quantile(0.5) >= 25_000_000,
            "latency {} ns ends at the read, after the sleep",
            latency.quantile(0.5)
        );
    }

    #[test]
    fn run_clock_counts_from_its_start() {
        let clock = RunClock::start();
        let t = clock.now_ns();
        assert!(t < 1_000_000_000, "{t} ns since start");
        assert_eq!(clock.since_start(0), 0, "before the start saturates");
        assert_eq!(
            xcc_core::recv_batch::timespec_ns(&libc::timespec {
                tv_sec: 2,
                tv_nsec: 5
            }),
            Some(2_000_000_005)
        );
        assert_eq!(
            xcc_core::recv_batch::timespec_ns(&libc::timespec {
                tv_sec: -1,
                tv_nsec: 0
            }),
            None
        );
    }
}
