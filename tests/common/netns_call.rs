//! One call through the real xccd inside the namespaces of `xcc-core/tests/netns_support`: xccd
//! started in one namespace (`ip netns exec`), an SDES-SRTP phone and a plain-RTP PBX as UDP
//! sockets created inside the namespaces, gRPC from the test thread after it joined xccd's
//! namespace, and the packet exchanges the NAT tests count (`e2e_nat`, `e2e_turn`).
//!
//! Not declared in `common/mod.rs`: it needs `netns_support`, which only the NAT test binaries
//! include (by path), so they include this file by path too, next to `mod common`. Each uses a
//! subset, hence `allow(dead_code)`.
#![allow(dead_code)]

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use base64::Engine;
use tonic::transport::Channel;
use webrtc_srtp::context::Context;
use xcc_core::nat::Retransmission;
use xcc_core::nat::stun;
use xcc_core::nat::turn::{TurnClient, TurnConfig, TurnEvent, TurnInput, TurnTransport};
use xcc_grpc::pb;

use crate::common::call::{SUITE, crypto_key, media_target, rtp_filled, srtp_context};
use crate::common::{Daemon, DaemonConfig};
use crate::netns_support::{Topology, enter};

/// Media sockets of the phone and the PBX (inside their namespaces).
pub const PHONE_PORT: u16 = 23700;
pub const PBX_PORT: u16 = 23600;
/// Packets counted each way after setup.
pub const COUNTED: u16 = 50;
/// xccd's Prometheus endpoint, on its namespace's loopback.
pub const METRICS: &str = "127.0.0.1:23990";
/// Bound of every wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// Where each party of a [`World`] sits: namespace (`c`, `n` or `p`) and address.
pub struct Places {
    /// xccd's namespace; the PBX shares it.
    pub xcc_ns: &'static str,
    /// The phone's namespace and address (bound on [`PHONE_PORT`]).
    pub phone_ns: &'static str,
    pub phone_ip: &'static str,
    /// The PBX's address in xccd's namespace (bound on [`PBX_PORT`]).
    pub pbx_ip: &'static str,
}

/// One test's world: namespaces, coturn, xccd, the two media sockets.
pub struct World {
    pub xccd: Daemon,
    pub phone: UdpSocket,
    pub pbx: UdpSocket,
    pub rt: tokio::runtime::Runtime,
    pub channel: Channel,
    /// Idempotency keys handed out so far (each CreateSession attempt gets its own).
    attempts: Cell<u32>,
    /// Dropped last (fields drop in order): coturn and the namespaces go after xccd.
    pub topo: Topology,
}

impl World {
    /// Starts xccd from `cfg` in `places.xcc_ns` (metrics on [`METRICS`]), binds the phone and the
    /// PBX, and moves this test's thread into xccd's namespace for gRPC (its control port is on
    /// that namespace's loopback); the thread ends with the test.
    pub fn start(topo: Topology, mut cfg: DaemonConfig, places: Places) -> World {
        cfg.netns = Some(topo.ns(places.xcc_ns));
        // Inside xccd's own namespace: no other daemon can hold the port.
        cfg.metrics_listen = METRICS.into();
        let xccd = Daemon::start_config(&cfg);
        let phone = bind_in(&topo, places.phone_ns, places.phone_ip, PHONE_PORT);
        let pbx = bind_in(&topo, places.xcc_ns, places.pbx_ip, PBX_PORT);
        enter(&topo.ns_path(places.xcc_ns));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = connect(&rt, &xccd);
        World {
            topo,
            xccd,
            phone,
            pbx,
            rt,
            channel,
            attempts: Cell::new(0),
        }
    }

    /// `kill -9` xccd and start it again with the same config and state directory, as systemd
    /// would; returns when the new process said READY=1 (its gRPC channel connected again).
    pub fn kill9_and_restart(&mut self) -> Instant {
        self.xccd.kill9();
        self.xccd.restart_in_place();
        let ready = Instant::now();
        self.channel = connect(&self.rt, &self.xccd);
        ready
    }

    /// One scrape of xccd's metrics endpoint (this thread is in xccd's namespace).
    pub fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(METRICS).expect("metrics endpoint");
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: xcc\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        tcp.read_to_string(&mut body).unwrap();
        body
    }

    /// ListCalls: every call xccd holds.
    pub fn list_calls(&self) -> pb::ListCallsResponse {
        let mut calls = pb::calls_client::CallsClient::new(self.channel.clone());
        self.rt
            .block_on(calls.list_calls(pb::ListCallsRequest {}))
            .unwrap()
            .into_inner()
    }

    pub fn sessions(&self) -> pb::sessions_client::SessionsClient<Channel> {
        pb::sessions_client::SessionsClient::new(self.channel.clone())
    }

    pub fn status(&self) -> pb::StatusResponse {
        let mut c = pb::satellite_client::SatelliteClient::new(self.channel.clone());
        self.rt
            .block_on(c.status(pb::StatusRequest {}))
            .unwrap_or_else(|e| panic!("status: {e}; log:\n{}", self.xccd.log()))
            .into_inner()
    }

    /// One CreateSession attempt for the client's `offer`, under a fresh idempotency key.
    pub fn try_create(&self, offer: &str) -> Result<pb::Session, tonic::Status> {
        let attempt = self.attempts.get() + 1;
        self.attempts.set(attempt);
        let mut s = self.sessions();
        self.rt
            .block_on(s.create_session(pb::CreateSessionRequest {
                idempotency_key: format!("{}-{attempt}", self.xccd.dir.display()),
                offer_from: pb::Side::Client as i32,
                sdp: offer.into(),
            }))
            .map(tonic::Response::into_inner)
    }

    /// Client offer `offer`, PBX answer on [`PBX_PORT`]: returns (answer for the phone, where the
    /// PBX sends, session id). UNAVAILABLE (xccd's TURN relay has no allocation ready yet) is
    /// retried, bounded by [`WAIT`]; nothing else is.
    pub fn call(&self, offer: &str) -> (String, SocketAddr, u64) {
        let deadline = Instant::now() + WAIT;
        let created = loop {
            match self.try_create(offer) {
                Ok(created) => break created,
                Err(e) if e.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("create: {e}; log:\n{}", self.xccd.log()),
            }
        };
        let pbx_ip = self.pbx.local_addr().unwrap().ip();
        let pbx_target = media_target(&created.sdp);
        let answered = self
            .rt
            .block_on(self.sessions().answer_session(pb::AnswerSessionRequest {
                session_id: created.session_id,
                sdp: sdp(pbx_ip, PBX_PORT, "RTP/AVP", &[]),
            }))
            .unwrap_or_else(|e| panic!("answer: {e}; log:\n{}", self.xccd.log()))
            .into_inner();
        (answered.sdp, pbx_target, created.session_id)
    }

    /// The client leg's snapshot now.
    pub fn client_leg(&self, session_id: u64) -> pb::Leg {
        self.rt
            .block_on(
                self.sessions()
                    .get_session(pb::GetSessionRequest { session_id }),
            )
            .unwrap_or_else(|e| panic!("get session: {e}; log:\n{}", self.xccd.log()))
            .into_inner()
            .client
            .expect("client leg")
    }

    /// The client leg once its snapshot shows a latch (snapshots are published by the worker
    /// after the packet that latched; polled, bounded).
    pub fn latched_client_leg(&self, session_id: u64) -> pb::Leg {
        let deadline = Instant::now() + WAIT;
        loop {
            let leg = self.client_leg(session_id);
            if !leg.latched.is_empty() {
                return leg;
            }
            assert!(Instant::now() < deadline, "never latched: {leg:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A gRPC channel to `xccd`'s control port (the calling thread is in xccd's namespace).
fn connect(rt: &tokio::runtime::Runtime, xccd: &Daemon) -> Channel {
    rt.block_on(async {
        Channel::from_shared(xccd.endpoint.clone())
            .unwrap()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("control port: {e}; log:\n{}", xccd.log()))
    })
}

/// A UDP socket bound to `ip:port` inside namespace `which`.
pub fn bind_in(topo: &Topology, which: &str, ip: &str, port: u16) -> UdpSocket {
    let addr = SocketAddr::new(ip.parse().unwrap(), port);
    topo.inside(which, move || {
        let s = UdpSocket::bind(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        s
    })
}

pub fn sdp(ip: IpAddr, port: u16, transport: &str, extra: &[String]) -> String {
    let mut lines = vec![
        "v=0".to_owned(),
        format!("o=- 4242 1 IN IP4 {ip}"),
        "s=-".into(),
        format!("c=IN IP4 {ip}"),
        "t=0 0".into(),
        format!("m=audio {port} {transport} 0"),
        "a=rtpmap:0 PCMU/8000".into(),
    ];
    lines.extend(extra.iter().cloned());
    lines.push("a=sendrecv".into());
    lines.join("\r\n") + "\r\n"
}

pub fn crypto_line(key: &[u8; 30]) -> String {
    format!(
        "a=crypto:1 {SUITE} inline:{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

pub fn attribute<'a>(sdp: &'a str, name: &str) -> &'a str {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no a={name} in:\n{sdp}"))
}

pub fn seq_of(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2], p[3]])
}

/// A STUN message the phone set aside.
#[derive(Debug, Clone, Copy)]
pub struct StunSeen {
    /// Where it came from (for a TURN phone: the peer of the Data indication).
    pub from: SocketAddr,
    /// Message type (0 when it did not parse).
    pub kind: u16,
    /// Its length in bytes.
    pub len: usize,
}

/// The phone's end: SRTP out under its key, SRTP in under XCC's; STUN is set aside (counted),
/// as a phone's RTP stack discards it (RFC 7983). With `turn`, everything goes through its
/// allocation on coturn.
pub struct Phone {
    pub tx: Context,
    pub rx: Context,
    pub stun_seen: Vec<StunSeen>,
    /// The source of every media packet received, in order.
    pub media_from: Vec<SocketAddr>,
    pub turn: Option<TurnPhone>,
}

impl Phone {
    /// Sends `bytes` to `to`, directly or as a TURN Send indication.
    pub fn send_raw(&mut self, sock: &UdpSocket, bytes: &[u8], to: SocketAddr) {
        match &mut self.turn {
            None => {
                sock.send_to(bytes, to).unwrap();
            }
            Some(t) => t.send(sock, bytes, to),
        }
    }

    /// One datagram (for TURN: one Data indication's payload) within 20 ms.
    pub fn recv_raw(&mut self, sock: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match &mut self.turn {
            None => sock.recv_from(buf).ok(),
            Some(t) => {
                let (from, payload) = t.pump(sock)?;
                buf[..payload.len()].copy_from_slice(&payload);
                Some((payload.len(), from))
            }
        }
    }

    pub fn send(&mut self, sock: &UdpSocket, seq: u16, to: SocketAddr) {
        let wire = self.tx.encrypt_rtp(&rtp_filled(seq, 0x1111, 0x11)).unwrap();
        self.send_raw(sock, &wire, to);
    }

    /// The next media packet's sequence number (payload checked), within 20 ms.
    pub fn recv(&mut self, sock: &UdpSocket) -> Option<u16> {
        let mut buf = [0u8; 1500];
        loop {
            let (len, from) = self.recv_raw(sock, &mut buf)?;
            if stun::is_stun(&buf[..len]) {
                let kind = stun::Message::parse(&buf[..len]).map_or(0, |m| m.msg_type());
                self.stun_seen.push(StunSeen { from, kind, len });
                continue;
            }
            let plain = self
                .rx
                .decrypt_rtp(&buf[..len])
                .expect("the phone authenticates XCC's SRTP");
            assert_eq!(plain[12..], [0x22; 160], "the PBX's payload");
            self.media_from.push(from);
            return Some(seq_of(&plain));
        }
    }
}

/// The phone's TURN allocation on coturn (long-term credentials `xcc`/`secret`), driven on its
/// media socket.
pub struct TurnPhone {
    turn: TurnClient,
    pub relayed: Option<SocketAddr>,
    pub mapped: Option<SocketAddr>,
    permitted: bool,
}

impl TurnPhone {
    pub fn new(server: SocketAddr) -> TurnPhone {
        TurnPhone {
            turn: TurnClient::new(
                TurnConfig {
                    server,
                    transport: TurnTransport::Udp,
                    username: "xcc".into(),
                    password: "secret".into(),
                    lifetime: Duration::from_secs(600),
                    retransmission: Retransmission::FAILOVER,
                },
                Instant::now(),
            ),
            relayed: None,
            mapped: None,
            permitted: false,
        }
    }

    /// Runs timers, sends what the client wants sent, takes one datagram (20 ms at most):
    /// `Some` when it was relayed data from a peer.
    fn pump(&mut self, sock: &UdpSocket) -> Option<(SocketAddr, Vec<u8>)> {
        let mut rng = rand::rng();
        self.turn.handle_timeout(Instant::now(), &mut rng);
        while let Some((to, bytes)) = self.turn.poll_transmit() {
            let bytes = bytes.to_vec();
            sock.send_to(&bytes, to).unwrap();
        }
        while let Some(event) = self.turn.poll_event() {
            match event {
                TurnEvent::Allocated {
                    relayed, mapped, ..
                } => {
                    self.relayed = Some(relayed);
                    self.mapped = mapped;
                }
                TurnEvent::PermissionGranted { .. } => self.permitted = true,
                TurnEvent::ChannelBound { .. } => {}
                TurnEvent::Failed { operation, code } => {
                    panic!("TURN {operation:?} failed: {code:?}")
                }
            }
        }
        let mut buf = [0u8; 1500];
        let (n, from) = sock.recv_from(&mut buf).ok()?;
        match self
            .turn
            .handle_datagram(Instant::now(), from, &buf[..n], &mut rng)
        {
            TurnInput::Data { peer, payload } => Some((peer, payload.to_vec())),
            _ => None,
        }
    }

    fn send(&mut self, sock: &UdpSocket, bytes: &[u8], to: SocketAddr) {
        let mut out = [0u8; 1600];
        let len = self.turn.wrap_send(to, bytes, &mut out).expect("fits");
        sock.send_to(&out[..len], self.turn.server()).unwrap();
    }

    /// Allocates and permits `peer`, bounded.
    pub fn allocate_for(&mut self, sock: &UdpSocket, peer: IpAddr) {
        let deadline = Instant::now() + WAIT;
        while self.relayed.is_none() {
            self.pump(sock);
            assert!(Instant::now() < deadline, "no TURN allocation");
        }
        assert!(self.turn.create_permission(Instant::now(), peer));
        while !self.permitted {
            self.pump(sock);
            assert!(Instant::now() < deadline, "no TURN permission");
        }
    }
}

pub fn pbx_recv(sock: &UdpSocket) -> Option<u16> {
    let mut buf = [0u8; 1500];
    let (len, _) = sock.recv_from(&mut buf).ok()?;
    assert_eq!(
        buf[12..len],
        [0x11; 160],
        "the phone's payload, decrypted by XCC"
    );
    Some(seq_of(&buf[..len]))
}

/// Both ways at once, [`COUNTED`] packets each, 20 ms apart, sequence numbers from `first`;
/// every one must arrive (the path is set up: nothing may be lost).
pub fn exchange_counted(
    w: &World,
    phone: &mut Phone,
    to_xcc: SocketAddr,
    to_pbx: SocketAddr,
    first: u16,
) {
    let (mut at_pbx, mut at_phone) = (Vec::new(), Vec::new());
    for seq in first..first + COUNTED {
        phone.send(&w.phone, seq, to_xcc);
        w.pbx
            .send_to(&rtp_filled(seq, 0x2222, 0x22), to_pbx)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        at_pbx.extend(pbx_recv(&w.pbx));
        at_phone.extend(phone.recv(&w.phone));
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while (at_pbx.len() < COUNTED as usize || at_phone.len() < COUNTED as usize)
        && Instant::now() < deadline
    {
        at_pbx.extend(pbx_recv(&w.pbx));
        at_phone.extend(phone.recv(&w.phone));
    }
    let want: Vec<u16> = (first..first + COUNTED).collect();
    assert_eq!(at_pbx, want, "phone -> PBX: every packet, in order");
    assert_eq!(at_phone, want, "PBX -> phone: every packet, in order");
}

/// Both sides talk, one packet each way every 20 ms with sequence numbers from `first`, until
/// each has heard the other (bounded by [`WAIT`]); what is still in flight then is read and set
/// aside. Returns the next sequence number. The settling point before a counted exchange when
/// the path is being set up again (after a restart).
pub fn talk_until_both_hear(
    w: &World,
    phone: &mut Phone,
    to_xcc: SocketAddr,
    to_pbx: SocketAddr,
    first: u16,
) -> u16 {
    let (mut pbx_heard, mut phone_heard) = (false, false);
    let deadline = Instant::now() + WAIT;
    let mut seq = first;
    while !(pbx_heard && phone_heard) {
        assert!(
            Instant::now() < deadline,
            "within {WAIT:?}: the PBX heard the phone: {pbx_heard}, the phone heard the PBX: \
             {phone_heard}; log:\n{}",
            w.xccd.log()
        );
        phone.send(&w.phone, seq, to_xcc);
        w.pbx
            .send_to(&rtp_filled(seq, 0x2222, 0x22), to_pbx)
            .unwrap();
        seq += 1;
        pbx_heard |= pbx_recv(&w.pbx).is_some();
        phone_heard |= phone.recv(&w.phone).is_some();
    }
    while pbx_recv(&w.pbx).is_some() || phone.recv(&w.phone).is_some() {}
    seq
}

/// The PBX talks first (the phone has sent no media at all): its first [`COUNTED`] packets, all
/// of them, reach the phone.
pub fn pbx_talks_first(w: &World, phone: &mut Phone, to_pbx: SocketAddr) {
    let mut heard = Vec::new();
    for seq in 1..=COUNTED {
        w.pbx
            .send_to(&rtp_filled(seq, 0x2222, 0x22), to_pbx)
            .unwrap();
        heard.extend(phone.recv(&w.phone));
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while heard.len() < COUNTED as usize && Instant::now() < deadline {
        heard.extend(phone.recv(&w.phone));
    }
    assert_eq!(
        heard,
        (1..=COUNTED).collect::<Vec<_>>(),
        "the PBX's first packets, all of them, before the phone sent media"
    );
}

/// The phone's offer: its key, SRTP, `c=`/port as given, plus `extra` lines.
pub fn phone_offer(at: SocketAddr, key: &[u8; 30], extra: &[String]) -> String {
    let mut lines = vec![crypto_line(key)];
    lines.extend(extra.iter().cloned());
    sdp(at.ip(), at.port(), "RTP/SAVP", &lines)
}

/// An ICE phone's offer at `at`: its key, SRTP, `ufrag`/`pwd` and one host candidate, `at`.
pub fn ice_host_offer(at: SocketAddr, key: &[u8; 30], ufrag: &str, pwd: &str) -> String {
    phone_offer(
        at,
        key,
        &[
            format!("a=ice-ufrag:{ufrag}"),
            format!("a=ice-pwd:{pwd}"),
            format!(
                "a=candidate:1 1 UDP 2130706431 {} {} typ host",
                at.ip(),
                at.port()
            ),
        ],
    )
}

pub fn new_phone(key: &[u8; 30], answer: &str) -> Phone {
    Phone {
        tx: srtp_context(key),
        rx: srtp_context(&crypto_key(answer)),
        stun_seen: Vec::new(),
        media_from: Vec::new(),
        turn: None,
    }
}

/// A nominating ICE check from the phone (controlling) to XCC's ICE-lite port.
pub fn nominating_check(
    xcc_ufrag: &str,
    phone_ufrag: &str,
    xcc_pwd: &str,
    id: [u8; 12],
) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let mut w = stun::Writer::new(&mut buf, stun::BINDING_REQUEST, stun::TransactionId(id))
        .expect("buffer fits a header");
    w.attribute(
        stun::attr::USERNAME,
        format!("{xcc_ufrag}:{phone_ufrag}").as_bytes(),
    )
    .unwrap();
    w.attribute(stun::attr::PRIORITY, &1_845_501_695u32.to_be_bytes())
        .unwrap();
    w.attribute(stun::attr::ICE_CONTROLLING, &7u64.to_be_bytes())
        .unwrap();
    w.attribute(stun::attr::USE_CANDIDATE, &[]).unwrap();
    w.integrity(xcc_pwd.as_bytes()).unwrap();
    w.fingerprint().unwrap();
    let len = w.finish();
    buf[..len].to_vec()
}

/// Sends nominating checks (directly or through TURN) until XCC's verified answer arrives;
/// returns the answer's XOR-MAPPED-ADDRESS (the phone as XCC sees it).
pub fn nominate(
    w: &World,
    phone: &mut Phone,
    to: SocketAddr,
    xcc_ufrag: &str,
    phone_ufrag: &str,
    xcc_pwd: &str,
) -> SocketAddr {
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + WAIT;
    loop {
        let id: [u8; 12] = rand::random();
        let check = nominating_check(xcc_ufrag, phone_ufrag, xcc_pwd, id);
        phone.send_raw(&w.phone, &check, to);
        for _ in 0..5 {
            let Some((n, from)) = phone.recv_raw(&w.phone, &mut buf) else {
                continue;
            };
            let Ok(m) = stun::Message::parse(&buf[..n]) else {
                continue;
            };
            if from == to && m.msg_type() == stun::BINDING_SUCCESS && m.transaction_id().0 == id {
                assert!(
                    m.verify_integrity(xcc_pwd.as_bytes()),
                    "answer under XCC's pwd"
                );
                assert!(m.verify_fingerprint());
                return m.xor_mapped_address().expect("XOR-MAPPED-ADDRESS");
            }
        }
        assert!(
            Instant::now() < deadline,
            "no verified answer to the check sent to {to}; log:\n{}",
            w.xccd.log()
        );
    }
}
