//! The synthetic phones: one sender loop and one receiver loop for every call of the run (not a
//! thread per call), playing 20 ms packets both ways on each call, paced evenly across calls.
//!
//! Call `i` has two streams: `2i` from the client phone to the PBX phone (SRTP into the relay when
//! the client leg is keyed, RTP out) and `2i + 1` back. Packet `k` of call `i` is due at
//! `k * 20 ms + i * 20 ms / calls`, so the relay sees a steady rate instead of bursts every 20 ms.

use std::io::{ErrorKind, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::UdpSocket as MioSocket;
use mio::{Events, Interest, Poll, Token};
use xcc_core::srtp::SrtpContext;

use super::error::LoadError;
use super::forwarder::PortRange;
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
                Ok(s) => return Ok(s),
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
    /// One-way latency of every packet received.
    pub latency: Histogram,
    /// How late the sender was against each packet's due time.
    pub send_lag: Histogram,
    /// Sends the kernel refused (socket buffer full): a load-generator limit, not relay loss.
    pub send_errors: u64,
    /// Datagrams that were not our media: wrong source, not RTP, not ours, or wrong stream.
    pub foreign: u64,
    /// SRTP packets from the relay that did not authenticate.
    pub auth_failures: u64,
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

/// Plays `duration` of media on every call; `on_start`/`on_end` run on this thread right when the
/// sender starts and finishes (CPU sampling brackets exactly the media phase).
pub fn play(
    calls: Vec<CallMedia>,
    duration: Duration,
    mut on_start: impl FnMut(),
    mut on_end: impl FnMut(),
) -> Result<MediaOutcome, LoadError> {
    let packets = u32::try_from(duration.as_nanos() / PTIME.as_nanos())
        .map_err(|_| LoadError::Usage {
            reason: format!("duration {duration:?} too long"),
        })?
        .max(1);
    let progress = Arc::new(Progress::default());
    let poll = Poll::new().map_err(LoadError::io("create poll"))?;
    let mut receivers = Vec::with_capacity(calls.len());
    let mut senders = Vec::with_capacity(calls.len());
    for (i, c) in calls.into_iter().enumerate() {
        let pbx_rx = register(&poll, &c.pbx, Token(2 * i))?;
        let client_rx = register(&poll, &c.client, Token(2 * i + 1))?;
        receivers.push(RxCall {
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
    let epoch = Instant::now();
    let start = epoch + Duration::from_millis(20);
    let n = senders.len();
    let rx_progress = Arc::clone(&progress);
    let receiver = std::thread::Builder::new()
        .name("load-rx".into())
        .spawn(move || receive(poll, receivers, packets, epoch, &rx_progress))
        .map_err(LoadError::io("spawn receiver"))?;
    let tx_progress = Arc::clone(&progress);
    let sender = std::thread::Builder::new()
        .name("load-tx".into())
        .spawn(move || send(senders, packets, epoch, start, &tx_progress))
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
    let rx = receiver
        .join()
        .map_err(|_| LoadError::io("receiver thread")(std::io::Error::other("panicked")))?;
    if live {
        let _ = writeln!(std::io::stderr());
    }
    let streams = tx
        .sent
        .into_iter()
        .zip(rx.streams)
        .map(|(sent, stats)| StreamOutcome { sent, stats })
        .collect();
    Ok(MediaOutcome {
        streams,
        latency: rx.latency,
        send_lag: tx.lag,
        send_errors: tx.errors,
        foreign: rx.foreign,
        auth_failures: rx.auth_failures,
        elapsed: tx.elapsed,
    })
}

fn register(poll: &Poll, socket: &UdpSocket, token: Token) -> Result<MioSocket, LoadError> {
    let clone = socket.try_clone().map_err(LoadError::io("clone socket"))?;
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
    sent: Vec<u64>,
    lag: Histogram,
    errors: u64,
    elapsed: Duration,
}

fn send(
    mut calls: Vec<TxCall>,
    packets: u32,
    epoch: Instant,
    start: Instant,
    progress: &Progress,
) -> TxOutcome {
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
        if due > now {
            std::thread::sleep(due - now);
        }
        // Every packet's lateness, oversleeping included (0 when on time).
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
                sent_ns: (Instant::now() - epoch).as_nanos() as u64,
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
        sent,
        lag,
        errors,
        elapsed: Duration::from_nanos(((end - epoch).as_nanos() as u64).saturating_sub(start_ns)),
    }
}

struct RxCall {
    pbx: MioSocket,
    client: MioSocket,
    /// Where the client phone's packets must come from (the relay's client leg).
    client_source: SocketAddr,
    /// Where the PBX phone's packets must come from (the relay's PBX leg).
    pbx_source: SocketAddr,
    srtp: Option<SrtpContext>,
}

struct RxOutcome {
    streams: Vec<StreamStats>,
    latency: Histogram,
    foreign: u64,
    auth_failures: u64,
}

fn receive(
    mut poll: Poll,
    mut calls: Vec<RxCall>,
    packets: u32,
    epoch: Instant,
    progress: &Progress,
) -> RxOutcome {
    let mut streams: Vec<StreamStats> = (0..calls.len() * 2)
        .map(|_| StreamStats::new(packets))
        .collect();
    let mut latency = Histogram::new();
    let (mut foreign, mut auth_failures) = (0u64, 0u64);
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 2048];
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
            let stream = event.token().0;
            let Some(call) = calls.get_mut(stream / 2) else {
                continue;
            };
            let to_pbx = stream % 2 == 0;
            // Edge-triggered: drain until WouldBlock, skipping a bounded number of one-shot errors.
            let mut errors = 0;
            loop {
                let socket = if to_pbx { &call.pbx } else { &call.client };
                let (len, from) = match socket.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) if errors < super::forwarder::MAX_RECV_ERRORS => {
                        errors += 1;
                        continue;
                    }
                    Err(_) => break,
                };
                let arrival = (Instant::now() - epoch).as_nanos() as u64;
                let expected_from = if to_pbx {
                    call.pbx_source
                } else {
                    call.client_source
                };
                if from != expected_from {
                    foreign += 1;
                    continue;
                }
                // XCC's hole-punching probes reach the client until its leg latches; a phone's
                // RTP stack discards STUN (RFC 7983), and so does this one.
                if !to_pbx && xcc_core::nat::stun::is_stun(&buf[..len]) {
                    continue;
                }
                let len = match (to_pbx, call.srtp.as_mut()) {
                    (false, Some(ctx)) => match ctx.unprotect_rtp(&mut buf, len) {
                        Ok(len) => len,
                        Err(_) => {
                            auth_failures += 1;
                            continue;
                        }
                    },
                    _ => len,
                };
                let Ok(hdr) = xcc_core::rtp::parse_rtp(&buf[..len]) else {
                    foreign += 1;
                    continue;
                };
                let want = if to_pbx {
                    Direction::ToPbx
                } else {
                    Direction::ToClient
                };
                match payload::read_payload(&buf[hdr.header_len.min(len)..len]) {
                    Some(Payload::Probe) => {}
                    Some(Payload::Media(s))
                        if s.call as usize == stream / 2 && s.direction == want =>
                    {
                        streams[stream].record(
                            s.index,
                            hdr.timestamp,
                            s.sent_ns,
                            arrival,
                            &mut latency,
                        );
                        progress.received.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => foreign += 1,
                }
            }
        }
    }
    RxOutcome {
        streams,
        latency,
        foreign,
        auth_failures,
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
}
