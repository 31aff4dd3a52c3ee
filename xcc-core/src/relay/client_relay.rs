//! A client leg relayed through XCC's own TURN allocations, as its worker drives it.
//!
//! When `[turn]` is on, clients are told the relayed addresses, so every datagram of the client leg
//! passes the TURN server: what arrives from the server is unwrapped (a Data indication or
//! ChannelData) and handed to the leg as if it came from the peer, so latching, SRTP
//! authentication and ICE-lite work unchanged; what the leg sends is wrapped for the server. Direct
//! datagrams on the client ports are dropped: the client was never told those ports, so only
//! strangers and scanners send there.
//!
//! Sans-IO like the rest of the leg: the worker passes `now`, the received bytes and its buffers;
//! nothing here reads a clock, allocates per packet or touches a socket.

use std::net::SocketAddr;
use std::time::Instant;

use mio::net::UdpSocket;

use crate::media::{LegConfig, RelayedPorts};
use crate::nat::turn::{TurnClient, TurnEvent, TurnInput};
use crate::relay::turn_link::TurnLink;

/// The two allocations of one client leg, indexed like the leg's sockets (0 RTP, 1 RTCP).
#[derive(Debug)]
pub(crate) struct ClientRelay {
    /// One client per socket: an allocation belongs to the 5-tuple of the socket (or the TCP
    /// connection) that made it.
    turn: [TurnClient; 2],
    /// How each allocation reaches the server.
    links: [TurnLink; 2],
    /// What clients were told.
    relayed: RelayedPorts,
}

/// What the worker must do with a datagram received on a relayed client socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unwrapped {
    /// The peer's datagram now starts the buffer: `len` bytes from `peer`.
    Media {
        /// The peer, as the TURN server saw it.
        peer: SocketAddr,
        /// Length of the datagram at the start of the buffer.
        len: usize,
    },
    /// The server's answer to one of XCC's requests: nothing more to do.
    Control,
    /// Not through the relay, or not understood: a counted stray.
    Stray,
}

/// Something the worker reports about the relay (rare: allocation-level changes only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayNotice {
    /// The allocation of socket `socket` failed to refresh or a request failed: media on that
    /// socket stops when the allocation expires.
    Failed {
        /// 0 RTP, 1 RTCP.
        socket: usize,
        /// The server's STUN error code; `None` on timeout.
        code: Option<u16>,
    },
}

impl ClientRelay {
    /// Two clients and their links (from the spare pool, or resumed after a restart).
    pub(crate) fn new(turn: [TurnClient; 2], links: [TurnLink; 2], relayed: RelayedPorts) -> Self {
        Self {
            turn,
            links,
            relayed,
        }
    }

    /// The relayed addresses clients were told.
    pub(crate) fn relayed(&self) -> RelayedPorts {
        self.relayed
    }

    /// The TURN server (both allocations are on it): frames of a TCP link come from it.
    pub(crate) fn server(&self) -> SocketAddr {
        self.turn[0].server()
    }

    /// The relayed addresses of both allocations, once the server granted both.
    pub(crate) fn granted(&self) -> Option<(SocketAddr, SocketAddr)> {
        Some((self.turn[0].relayed()?, self.turn[1].relayed()?))
    }

    /// Records the relayed addresses once the spare's allocations are granted.
    pub(crate) fn set_relayed(&mut self, relayed: RelayedPorts) {
        self.relayed = relayed;
    }

    /// The client of socket `socket` (the spare pool reads its events).
    pub(crate) fn turn_mut(&mut self, socket: usize) -> Option<&mut TurnClient> {
        self.turn.get_mut(socket)
    }

    /// The link of socket `socket` (drivers register, flush and read TCP links).
    pub(crate) fn link_mut(&mut self, socket: usize) -> Option<&mut TurnLink> {
        self.links.get_mut(socket)
    }

    /// Unwraps `buf[..len]` received for client socket `socket` from `from`: a UDP datagram
    /// (`from_stream` false) or a frame of the socket's TCP link (`from_stream` true, `from` the
    /// server). On [`Unwrapped::Media`] the payload has been moved to the start of `buf` (a copy
    /// inside the receive buffer, no allocation).
    #[allow(clippy::too_many_arguments)] // the worker's receive path, one call per datagram
    pub(crate) fn unwrap(
        &mut self,
        now: Instant,
        socket: usize,
        from: SocketAddr,
        from_stream: bool,
        buf: &mut [u8],
        len: usize,
        rng: &mut impl rand::RngCore,
    ) -> Unwrapped {
        let (Some(turn), Some(link)) = (self.turn.get_mut(socket), self.links.get(socket)) else {
            return Unwrapped::Stray;
        };
        // Over TCP the server never sends on the UDP socket: a datagram claiming to be from it
        // there is forged.
        if from != turn.server() || link.is_udp() == from_stream {
            return Unwrapped::Stray;
        }
        let base = buf.as_ptr() as usize;
        let (peer, start, plen) = match turn.handle_datagram(now, from, &buf[..len], rng) {
            TurnInput::Data { peer, payload } => {
                (peer, payload.as_ptr() as usize - base, payload.len())
            }
            TurnInput::Consumed => return Unwrapped::Control,
            TurnInput::Ignored => return Unwrapped::Stray,
        };
        buf.copy_within(start..start + plen, 0);
        Unwrapped::Media { peer, len: plen }
    }

    /// Wraps `payload` for `to` and sends it to the server on socket `socket`'s link, `out`
    /// being the scratch buffer; false when it was not sent (counted by the worker).
    pub(crate) fn send_wrapped(
        &mut self,
        socket: usize,
        udp: &UdpSocket,
        to: SocketAddr,
        payload: &[u8],
        out: &mut [u8],
    ) -> bool {
        let Some((server, n)) = self.wrap(socket, to, payload, out) else {
            return false;
        };
        self.links[socket].send(udp, server, &out[..n])
    }

    /// Sends the requests the clients have queued (permissions, channels, refreshes), each on
    /// its socket's link.
    pub(crate) fn pump(&mut self, udp: [&UdpSocket; 2]) {
        let Self { turn, links, .. } = self;
        for ((turn, link), udp) in turn.iter_mut().zip(links.iter_mut()).zip(udp) {
            while let Some((to, bytes)) = turn.poll_transmit() {
                let _ = link.send(udp, to, bytes);
            }
        }
    }

    /// Wraps `payload` for `to` into `out` (a Send indication, or ChannelData once a channel is
    /// bound); returns where to send the result and its length. `None` when `out` is too small,
    /// which the worker counts as a send error.
    pub(crate) fn wrap(
        &mut self,
        socket: usize,
        to: SocketAddr,
        payload: &[u8],
        out: &mut [u8],
    ) -> Option<(SocketAddr, usize)> {
        let turn = self.turn.get_mut(socket)?;
        let n = turn.wrap_send(to, payload, out).ok()?;
        Some((turn.server(), n))
    }

    /// Lets the leg's signalled peer in: permissions for its signalled RTP and RTCP addresses and
    /// ICE candidates, on both allocations, so its first packets and XCC's first probes pass.
    pub(crate) fn permit(&mut self, now: Instant, config: &LegConfig) {
        let ips = config
            .remote_rtp
            .into_iter()
            .chain(config.remote_rtcp)
            .chain(
                config
                    .ice
                    .iter()
                    .flat_map(|ice| ice.candidates.iter().copied()),
            )
            .map(|a| a.ip());
        for ip in ips {
            if ip.is_unspecified() {
                continue; // c=0.0.0.0 (old-style hold) names nobody
            }
            for turn in &mut self.turn {
                if !turn.create_permission(now, ip) {
                    tracing::warn!(%ip, "TURN permission table full, peer not permitted");
                }
            }
        }
    }

    /// The leg latched to `peer` on `socket`: bind a channel so media travels with a 4-byte
    /// header instead of a 36-byte indication.
    pub(crate) fn latched(&mut self, now: Instant, socket: usize, peer: SocketAddr) {
        if let Some(turn) = self.turn.get_mut(socket) {
            let _ = turn.bind_channel(now, peer);
        }
    }

    /// Advances both allocations' timers (refreshes, permissions, channels, retransmissions).
    pub(crate) fn handle_timeout(&mut self, now: Instant, rng: &mut impl rand::RngCore) {
        for turn in &mut self.turn {
            turn.handle_timeout(now, rng);
        }
    }

    /// When each client next needs [`ClientRelay::handle_timeout`].
    pub(crate) fn poll_timeouts(&self) -> impl Iterator<Item = Instant> + '_ {
        self.turn.iter().filter_map(TurnClient::poll_timeout)
    }

    /// The next request to send from client socket `socket`: destination and bytes (drivers use
    /// [`ClientRelay::pump`], which sends them on the right link).
    #[cfg(test)]
    pub(crate) fn poll_transmit(&mut self, socket: usize) -> Option<(SocketAddr, &[u8])> {
        self.turn.get_mut(socket)?.poll_transmit()
    }

    /// The next notice worth reporting.
    pub(crate) fn poll_notice(&mut self) -> Option<RelayNotice> {
        for (socket, turn) in self.turn.iter_mut().enumerate() {
            while let Some(event) = turn.poll_event() {
                match event {
                    TurnEvent::Failed { code, .. } => {
                        return Some(RelayNotice::Failed { socket, code });
                    }
                    TurnEvent::PermissionGranted { peer } => {
                        tracing::debug!(socket, %peer, "TURN permission granted");
                    }
                    TurnEvent::ChannelBound { peer, number } => {
                        tracing::debug!(socket, %peer, number, "TURN channel bound");
                    }
                    TurnEvent::Allocated { .. } => {}
                }
            }
        }
        None
    }

    /// Releases both allocations (a Deallocate each, sent once by the following
    /// [`ClientRelay::poll_transmit`] calls: the call is over, nobody waits for the answer).
    pub(crate) fn close(&mut self, now: Instant) {
        for turn in &mut self.turn {
            turn.close(now);
        }
    }

    /// Whether `ip` is the TURN server (its own datagrams are never media).
    #[cfg(test)]
    fn is_server(&self, ip: std::net::IpAddr) -> bool {
        self.turn.iter().any(|t| t.server().ip() == ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::IceSetup;
    use crate::nat::ice::IceCredentials;
    use crate::nat::stun::{Message, TransactionId, Writer, attr};
    use crate::nat::turn::fake::{self, MAPPED, PEER, RELAYED, SERVER};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::net::IpAddr;

    /// A relay whose two clients were allocated by the scripted server.
    fn relay(t0: Instant) -> (ClientRelay, fake::Server, ChaCha8Rng) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut server = fake::server();
        let turn = [0, 1].map(|_| {
            let mut c = TurnClient::new(fake::config("secret"), t0);
            fake::pump(&mut c, &mut server, t0, &mut rng);
            c
        });
        let relayed = RelayedPorts {
            rtp: RELAYED.parse().unwrap(),
            rtcp: RELAYED.parse().unwrap(),
            mapped: Some(MAPPED.parse().unwrap()),
        };
        (
            ClientRelay::new(turn, [TurnLink::Udp, TurnLink::Udp], relayed),
            server,
            rng,
        )
    }

    /// Sends every queued request of `socket` to the scripted server and feeds back its answers.
    fn exchange(
        r: &mut ClientRelay,
        server: &mut fake::Server,
        socket: usize,
        now: Instant,
        rng: &mut ChaCha8Rng,
    ) -> usize {
        let mut n = 0;
        for _ in 0..16 {
            r.handle_timeout(now, rng);
            let Some((_, req)) = r.poll_transmit(socket) else {
                break;
            };
            let answer = server.answer(req);
            let mut buf = answer.clone();
            let len = buf.len();
            assert_eq!(
                r.unwrap(
                    now,
                    socket,
                    SERVER.parse().unwrap(),
                    false,
                    &mut buf,
                    len,
                    rng
                ),
                Unwrapped::Control
            );
            n += 1;
        }
        n
    }

    /// A Data indication from `peer` carrying `payload`, as the server relays it.
    fn data_indication(peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf, 0x0017, TransactionId([9; 12])).unwrap();
        w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        w.attribute(attr::DATA, payload).unwrap();
        let n = w.finish();
        buf[..n].to_vec()
    }

    #[test]
    fn data_from_the_server_is_moved_to_the_buffer_start_with_the_peer_as_source() {
        let t0 = Instant::now();
        let (mut r, _, mut rng) = relay(t0);
        let peer: SocketAddr = PEER.parse().unwrap();
        let rtp = [0x80u8, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xAA, 0xBB];
        let mut buf = [0u8; 2048];
        let wire = data_indication(peer, &rtp);
        buf[..wire.len()].copy_from_slice(&wire);
        let got = r.unwrap(
            t0,
            0,
            SERVER.parse().unwrap(),
            false,
            &mut buf,
            wire.len(),
            &mut rng,
        );
        assert_eq!(
            got,
            Unwrapped::Media {
                peer,
                len: rtp.len()
            }
        );
        assert_eq!(&buf[..rtp.len()], &rtp);
    }

    #[test]
    fn direct_datagrams_and_forged_server_traffic_are_strays() {
        let t0 = Instant::now();
        let (mut r, _, mut rng) = relay(t0);
        let peer: SocketAddr = PEER.parse().unwrap();
        let wire = data_indication(peer, b"\x80\0\0\x01");
        let mut buf = [0u8; 2048];
        buf[..wire.len()].copy_from_slice(&wire);
        // The same bytes straight from the peer (not via the server) are not media of this leg.
        assert_eq!(
            r.unwrap(t0, 0, peer, false, &mut buf, wire.len(), &mut rng),
            Unwrapped::Stray
        );
        // A frame "from the stream" of a UDP link cannot be: a driver bug, never media.
        assert_eq!(
            r.unwrap(
                t0,
                0,
                SERVER.parse().unwrap(),
                true,
                &mut buf,
                wire.len(),
                &mut rng
            ),
            Unwrapped::Stray
        );
        // Plain RTP from the server's address but not a TURN message: nothing to unwrap.
        let mut rtp = [0x80u8; 40];
        assert_eq!(
            r.unwrap(
                t0,
                1,
                SERVER.parse().unwrap(),
                false,
                &mut rtp,
                40,
                &mut rng
            ),
            Unwrapped::Stray
        );
        assert!(r.is_server(SERVER.parse::<SocketAddr>().unwrap().ip()));
    }

    #[test]
    fn configuration_permits_signalled_address_and_candidates_on_both_sockets() {
        let t0 = Instant::now();
        let (mut r, mut server, mut rng) = relay(t0);
        let config = LegConfig {
            remote_rtp: Some("198.51.100.20:40000".parse().unwrap()),
            remote_rtcp: Some("198.51.100.20:40001".parse().unwrap()),
            ice: Some(IceSetup {
                local: IceCredentials::generate(&mut rng),
                remote: None,
                candidates: vec!["203.0.113.1:5000".parse().unwrap()],
            }),
            ..LegConfig::default()
        };
        r.permit(t0, &config);
        let before = server.requests.len();
        // Two distinct IPs, one CreatePermission each, on each socket.
        assert_eq!(exchange(&mut r, &mut server, 0, t0, &mut rng), 2);
        assert_eq!(exchange(&mut r, &mut server, 1, t0, &mut rng), 2);
        let peers: Vec<IpAddr> = server.requests[before..]
            .iter()
            .map(|q| Message::parse(q).unwrap().xor_peer_address().unwrap().ip())
            .collect();
        assert_eq!(
            peers,
            [
                "198.51.100.20",
                "203.0.113.1",
                "198.51.100.20",
                "203.0.113.1"
            ]
            .map(|s| s.parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn media_is_wrapped_for_the_server_then_sent_as_channel_data_after_latching() {
        let t0 = Instant::now();
        let (mut r, mut server, mut rng) = relay(t0);
        let peer: SocketAddr = PEER.parse().unwrap();
        let payload = [0x80u8; 172];
        let mut out = [0u8; 2048];
        let (to, n) = r.wrap(0, peer, &payload, &mut out).unwrap();
        assert_eq!(to, SERVER.parse().unwrap());
        let msg = Message::parse(&out[..n]).unwrap();
        assert_eq!(msg.xor_peer_address(), Some(peer));
        assert_eq!(msg.data(), Some(&payload[..]));
        r.latched(t0, 0, peer);
        assert_eq!(
            exchange(&mut r, &mut server, 0, t0, &mut rng),
            1,
            "ChannelBind"
        );
        let (_, n) = r.wrap(0, peer, &payload, &mut out).unwrap();
        assert_eq!(n, 4 + payload.len());
        assert_eq!(out[0] & 0xF0, 0x40, "ChannelData");
        // A too small buffer is refused, never truncated.
        assert!(r.wrap(0, peer, &payload, &mut out[..100]).is_none());
    }

    #[test]
    fn close_sends_one_deallocate_per_socket() {
        let t0 = Instant::now();
        let (mut r, _, mut rng) = relay(t0);
        r.close(t0);
        r.handle_timeout(t0, &mut rng);
        for socket in 0..2 {
            let (_, req) = r.poll_transmit(socket).expect("Deallocate");
            let msg = Message::parse(req).unwrap();
            assert_eq!(msg.lifetime(), Some(0));
        }
    }
}
