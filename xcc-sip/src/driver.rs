//! The thin async shell around [`Endpoint`]: owns a bound UDP socket and the clock, nothing else.
//!
//! Everything protocol-related stays in the sans-IO core; this loop only moves bytes, reads
//! `Instant::now()` once per wake-up, and sleeps until `poll_timeout`. Sockets are bound by the
//! caller (see [`bind_udp`]) so tests use 127.0.0.1 port 0 and the daemon sets DSCP once.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::endpoint::{Endpoint, EndpointEvent, Peer, Target};
use crate::error::Error;
use crate::message::{Request, Response};
use crate::transaction::TransactionKey;
use crate::transport::Transport;

/// DSCP CS3, the product's default for signalling.
pub const DSCP_CS3: u8 = 24;

/// Largest UDP datagram we read (RFC 3261 §18.1.1 moves anything near the MTU to TCP anyway).
const MAX_DATAGRAM: usize = 65_535;

/// Binds a UDP socket for SIP with the given DSCP on its IP header (IPv4 TOS / IPv6 traffic
/// class), non-blocking, ready for tokio.
pub fn bind_udp(addr: SocketAddr, dscp: u8) -> Result<UdpSocket, Error> {
    let io = |source| Error::Socket { addr, source };
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .map_err(io)?;
    let tos = u32::from(dscp) << 2;
    if addr.is_ipv4() {
        s.set_tos_v4(tos).map_err(io)?;
    } else {
        s.set_tclass_v6(tos).map_err(io)?;
    }
    s.set_nonblocking(true).map_err(io)?;
    s.bind(&addr.into()).map_err(io)?;
    UdpSocket::from_std(s.into()).map_err(io)
}

/// What the dialog layer asks the driver to do.
#[derive(Debug)]
pub enum Command {
    /// Start a client transaction (or send an ACK for a 2xx).
    SendRequest {
        /// The request, Via branch filled in.
        request: Box<Request>,
        /// Next hop.
        dest: SocketAddr,
    },
    /// Answer within a server transaction.
    SendResponse {
        /// The server transaction.
        key: TransactionKey,
        /// The response.
        response: Box<Response>,
    },
}

/// Runs `endpoint` on `socket` until `commands` closes. Events go to `events`; a full or closed
/// event channel drops the event (counted by the receiver's absence, never blocking the socket).
pub async fn run_udp(
    socket: UdpSocket,
    mut endpoint: Endpoint,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<EndpointEvent>,
) -> Result<Endpoint, Error> {
    let local = socket.local_addr().map_err(|source| Error::Socket {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        flush(&socket, &mut endpoint, &events).await;
        let deadline = endpoint.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let source = Peer { addr: from, transport: Transport::Udp };
                    endpoint.handle_bytes(Instant::now(), source, &buf[..n]);
                }
                // ICMP port unreachable and friends surface here on Linux: keep serving.
                Err(e) => tracing::debug!(%local, error = %e, "udp recv"),
            },
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return Ok(endpoint) };
                let now = Instant::now();
                let result = match cmd {
                    Command::SendRequest { request, dest } => endpoint
                        .send_request(now, *request, Peer { addr: dest, transport: Transport::Udp })
                        .map(|_| ()),
                    Command::SendResponse { key, response } => {
                        endpoint.send_response(now, &key, *response)
                    }
                };
                if let Err(e) = result {
                    tracing::warn!(%local, error = %e, "command refused");
                }
            }
            () = sleep => endpoint.handle_timeout(Instant::now()),
        }
    }
}

async fn flush(socket: &UdpSocket, ep: &mut Endpoint, events: &mpsc::Sender<EndpointEvent>) {
    while let Some(t) = ep.poll_transmit() {
        match t.target {
            Target::Peer(p) => {
                if let Err(e) = socket.send_to(&t.bytes, p.addr).await {
                    tracing::debug!(to = %p.addr, error = %e, "udp send");
                }
            }
            Target::Resolve { host, port } => {
                // Resolution belongs to the caller's resolver (RFC 3263); not wired yet.
                tracing::warn!(%host, port, "response needs DNS resolution; dropped");
            }
        }
    }
    while let Some(ev) = ep.poll_event() {
        if events.try_send(ev).is_err() {
            tracing::warn!("event channel full or closed; event dropped");
        }
    }
}

/// Binds a TCP listener for SIP with the given DSCP (inherited by accepted connections).
pub fn bind_tcp(addr: SocketAddr, dscp: u8) -> Result<tokio::net::TcpListener, Error> {
    let io = |source| Error::Socket { addr, source };
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
        .map_err(io)?;
    let tos = u32::from(dscp) << 2;
    if addr.is_ipv4() {
        s.set_tos_v4(tos).map_err(io)?;
    } else {
        s.set_tclass_v6(tos).map_err(io)?;
    }
    s.set_reuse_address(true).map_err(io)?;
    s.set_nonblocking(true).map_err(io)?;
    s.bind(&addr.into()).map_err(io)?;
    s.listen(1024).map_err(io)?;
    tokio::net::TcpListener::from_std(s.into()).map_err(io)
}

/// What connection tasks tell the TCP loop.
enum Conn {
    /// A connection is up; bytes for `addr` go into the sender.
    Up(SocketAddr, mpsc::Sender<Vec<u8>>),
    /// A framed message (or malformed frame) from `addr`.
    Frame(SocketAddr, crate::framing::Frame),
    /// The connection to `addr` is gone.
    Down(SocketAddr),
}

/// Per-connection queue depth: a peer that does not read gets dropped, not buffered forever.
const CONN_QUEUE: usize = 256;

/// Runs `endpoint` over TCP: accepts on `listener`, reuses a connection per peer address for
/// both directions (RFC 3261 §18), opens one when sending to a new peer, answers CRLF CRLF
/// pings, and closes a connection whose framing fails (oversize, no Content-Length).
pub async fn run_tcp(
    listener: tokio::net::TcpListener,
    mut endpoint: Endpoint,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<EndpointEvent>,
) -> Result<Endpoint, Error> {
    use std::collections::HashMap;

    let (conn_tx, mut conn_rx) = mpsc::channel::<Conn>(1024);
    let mut conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut pending: HashMap<SocketAddr, Vec<Vec<u8>>> = HashMap::new();
    loop {
        while let Some(t) = endpoint.poll_transmit() {
            let Target::Peer(p) = t.target else {
                tracing::warn!("TCP response needs DNS resolution; dropped");
                continue;
            };
            match conns.get(&p.addr) {
                Some(tx) => {
                    if tx.try_send(t.bytes).is_err() {
                        tracing::warn!(peer = %p.addr, "connection queue full; message dropped");
                    }
                }
                None => {
                    let first = !pending.contains_key(&p.addr);
                    pending.entry(p.addr).or_default().push(t.bytes);
                    if first {
                        tokio::spawn(connect(p.addr, conn_tx.clone()));
                    }
                }
            }
        }
        while let Some(ev) = endpoint.poll_event() {
            if events.try_send(ev).is_err() {
                tracing::warn!("event channel full or closed; event dropped");
            }
        }
        let deadline = endpoint.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => { tokio::spawn(serve_conn(stream, addr, conn_tx.clone())); }
                Err(e) => tracing::debug!(error = %e, "tcp accept"),
            },
            Some(c) = conn_rx.recv() => match c {
                Conn::Up(addr, tx) => {
                    for bytes in pending.remove(&addr).unwrap_or_default() {
                        let _ = tx.try_send(bytes);
                    }
                    conns.insert(addr, tx);
                }
                Conn::Down(addr) => {
                    conns.remove(&addr);
                    // Bytes still pending means the connection never came up: fail fast.
                    if pending.remove(&addr).is_some() {
                        endpoint.handle_transport_error(Peer { addr, transport: Transport::Tcp });
                    }
                }
                Conn::Frame(addr, frame) => {
                    let source = Peer { addr, transport: Transport::Tcp };
                    match frame {
                        crate::framing::Frame::Message(m) => {
                            endpoint.handle_message(Instant::now(), source, *m)
                        }
                        crate::framing::Frame::Malformed(e) => endpoint.handle_malformed(source, &e),
                        crate::framing::Frame::Ping => {
                            if let Some(tx) = conns.get(&addr) {
                                let _ = tx.try_send(crate::framing::PONG.to_vec());
                            }
                        }
                    }
                }
            },
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return Ok(endpoint) };
                let now = Instant::now();
                let result = match cmd {
                    Command::SendRequest { request, dest } => endpoint
                        .send_request(now, *request, Peer { addr: dest, transport: Transport::Tcp })
                        .map(|_| ()),
                    Command::SendResponse { key, response } => {
                        endpoint.send_response(now, &key, *response)
                    }
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "command refused");
                }
            }
            () = sleep => endpoint.handle_timeout(Instant::now()),
        }
    }
}

async fn connect(addr: SocketAddr, conns: mpsc::Sender<Conn>) {
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(stream)) => serve_conn(stream, addr, conns).await,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "tcp connect");
            let _ = conns.send(Conn::Down(addr)).await;
        }
        Err(_) => {
            tracing::debug!(%addr, "tcp connect timed out");
            let _ = conns.send(Conn::Down(addr)).await;
        }
    }
}

/// Owns one connection: frames what it reads, writes what the loop queues.
async fn serve_conn(stream: tokio::net::TcpStream, addr: SocketAddr, conns: mpsc::Sender<Conn>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CONN_QUEUE);
    if conns.send(Conn::Up(addr, tx)).await.is_err() {
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
    let mut framer = crate::framing::StreamFramer::default();
    let mut buf = vec![0u8; 16 * 1024];
    'read: loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => framer.push(&buf[..n]),
        }
        loop {
            match framer.poll_frame() {
                Ok(Some(frame)) => {
                    if conns.send(Conn::Frame(addr, frame)).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "closing stream");
                    break 'read;
                }
            }
        }
    }
    writer.abort();
    let _ = conns.send(Conn::Down(addr)).await;
}
