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
