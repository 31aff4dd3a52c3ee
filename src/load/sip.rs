//! `xcc-load sip`: the I/O around [`super::sip_ua`]. One UDP socket plays the controlling server
//! (UACs, INVITE to XCC's server-side SIP port), one plays the PBX trunk (UASs, answering the
//! INVITEs XCC relays); calls start at `--rate` and are told apart on the trunk by the
//! Request-URI user (`load<i>`), which XCC keeps on the far INVITE.
//!
//! Setup and teardown run on the caller's thread with mio; during the media phase [`Driver::serve`]
//! keeps answering on a thread of its own (XCC's retransmitted 2xx, OPTIONS, a BYE from XCC).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use mio::net::UdpSocket as MioSocket;
use mio::{Events, Interest, Poll, Token};
use xcc_core::sdes::CryptoAttribute;
use xcc_core::srtp::SrtpContext;
use xcc_sip::{Message, Method, SipUri};

use super::error::LoadError;
use super::phones::CallMedia;
use super::sessions::{SUITE, media_target, sdp};
use super::sip_ua::{UaTimers, Uac, UacParams, UacState, Uas, stateless_reply};

const SERVER: Token = Token(0);
const TRUNK: Token = Token(1);
/// Largest SIP datagram read (RFC 3261 §18.1.1 keeps UDP requests under the path MTU anyway).
const MAX_DATAGRAM: usize = 65_535;
/// Request-URI user of call `i`.
const USER_PREFIX: &str = "load";

/// One call set up over SIP.
pub struct SipCall {
    /// Call index within the run.
    pub index: u32,
    /// INVITE -> 200.
    pub setup: Duration,
    /// The phones and where they send.
    pub media: CallMedia,
}

/// What setting calls up produced.
pub struct Setup {
    /// Calls with media on both legs.
    pub calls: Vec<SipCall>,
    /// Why the others failed, one line each.
    pub failures: Vec<String>,
}

/// The two SIP sockets and every call's agents.
pub struct Driver {
    poll: Poll,
    server: MioSocket,
    trunk: MioSocket,
    xcc: SocketAddr,
    uacs: Vec<Uac>,
    /// The client phone's own key, per call.
    keys: Vec<CryptoAttribute>,
    by_call_id: HashMap<String, usize>,
    /// UAS per trunk Call-ID, with its call index and where XCC's trunk sent from.
    uases: HashMap<String, (usize, Uas, SocketAddr)>,
    uas_of_call: Vec<Option<String>>,
    phones: Vec<Option<(UdpSocket, UdpSocket)>>,
    run_id: String,
    timers: UaTimers,
    buf: Vec<u8>,
    /// Datagrams that were not SIP, or SIP for no call of ours.
    pub strays: u64,
}

impl Driver {
    /// Binds the controlling server's socket (`uac`) and the trunk (`trunk`); XCC's server-side
    /// SIP address is `xcc` (the command line has checked they are loopback).
    pub fn bind(
        uac: SocketAddr,
        trunk: SocketAddr,
        xcc: SocketAddr,
        phones: Vec<(UdpSocket, UdpSocket)>,
    ) -> Result<Self, LoadError> {
        let poll = Poll::new().map_err(LoadError::io("create poll"))?;
        let mut server = MioSocket::bind(uac).map_err(LoadError::io("bind --uac"))?;
        let mut trunk_socket = MioSocket::bind(trunk).map_err(LoadError::io("bind --trunk"))?;
        poll.registry()
            .register(&mut server, SERVER, Interest::READABLE)
            .map_err(LoadError::io("register SIP socket"))?;
        poll.registry()
            .register(&mut trunk_socket, TRUNK, Interest::READABLE)
            .map_err(LoadError::io("register SIP socket"))?;
        let n = phones.len();
        let run_id = format!(
            "{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or(0)
        );
        Ok(Self {
            poll,
            server,
            trunk: trunk_socket,
            xcc,
            uacs: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            by_call_id: HashMap::with_capacity(n),
            uases: HashMap::with_capacity(n),
            uas_of_call: vec![None; n],
            phones: phones.into_iter().map(Some).collect(),
            run_id,
            timers: UaTimers::default(),
            buf: vec![0; MAX_DATAGRAM],
            strays: 0,
        })
    }

    /// Places every call at `rate` per second and waits until each is set up or failed
    /// (bounded: the last start plus 64·T1 plus slack).
    pub fn set_up(&mut self, rate: f64) -> Result<Setup, LoadError> {
        let n = self.phones.len();
        let began = Instant::now();
        let gap = Duration::from_secs_f64(1.0 / rate);
        let deadline = began + gap * n as u32 + self.timers.t1 * 64 + Duration::from_secs(2);
        let mut started = 0;
        loop {
            let now = Instant::now();
            while started < n && now >= began + gap * started as u32 {
                self.start(now, started)?;
                started += 1;
            }
            let done = started == n && (0..n).all(|i| self.settled(i));
            if done || now >= deadline {
                break;
            }
            let next_start = (started < n).then(|| began + gap * started as u32);
            self.turn(next_start, deadline)?;
        }
        let mut calls = Vec::new();
        let mut failures = Vec::new();
        for i in 0..n {
            match self.media_of(i) {
                Ok(Some(c)) => calls.push(c),
                Ok(None) => {}
                Err(e) => failures.push(e.to_string()),
            }
        }
        Ok(Setup { calls, failures })
    }

    /// Keeps answering SIP until `stop` is set (checked every 50 ms): run on its own thread during
    /// the media phase, then hand the driver back for [`Driver::tear_down`].
    pub fn serve(&mut self, stop: &std::sync::atomic::AtomicBool) -> Result<(), LoadError> {
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            let until = Instant::now() + Duration::from_millis(50);
            self.turn(None, until)?;
        }
        Ok(())
    }

    /// Sends BYE on every established call and waits for the answers (and answers XCC's BYEs
    /// on the trunk). Returns how many calls did not end cleanly.
    pub fn tear_down(&mut self) -> Result<usize, LoadError> {
        let now = Instant::now();
        for uac in &mut self.uacs {
            uac.hang_up(now);
        }
        let deadline = now + self.timers.t1 * 64 + Duration::from_secs(1);
        while Instant::now() < deadline
            && self
                .uacs
                .iter()
                .any(|u| matches!(u.state(), UacState::Terminating))
        {
            self.turn(None, deadline)?;
        }
        // XCC's BYE to the PBX follows the 200 to ours closely; give it a moment to land.
        let grace = Instant::now() + Duration::from_millis(200);
        while Instant::now() < grace {
            self.turn(None, grace)?;
        }
        Ok(self
            .uacs
            .iter()
            .filter(|u| !matches!(u.state(), UacState::Ended))
            .count())
    }

    /// Calls whose UAS saw XCC's BYE (the B2BUA relayed our hang-up to the PBX).
    pub fn trunk_byes(&self) -> usize {
        self.uases
            .values()
            .filter(|(_, u, _)| matches!(u.state(), super::sip_ua::UasState::Ended))
            .count()
    }

    fn start(&mut self, now: Instant, i: usize) -> Result<(), LoadError> {
        let Some((client, _)) = self.phones[i].as_ref() else {
            return Ok(());
        };
        let port = client
            .local_addr()
            .map_err(LoadError::io("phone address"))?
            .port();
        let key = CryptoAttribute::generate(1, SUITE);
        let offer = sdp(port, "RTP/SAVP", Some(&format!("a=crypto:{key}")));
        let local = self
            .server
            .local_addr()
            .map_err(LoadError::io("SIP address"))?;
        let uac = Uac::new(
            now,
            UacParams {
                id: format!("{}-{i}", self.run_id),
                local,
                remote: self.xcc,
                user: format!("{USER_PREFIX}{i}"),
                offer,
                timers: self.timers,
            },
        );
        self.by_call_id.insert(uac.call_id().to_owned(), i);
        self.uacs.push(uac);
        self.keys.push(key);
        self.flush_uac(i);
        Ok(())
    }

    /// Set up (both sides) or failed: nothing more to wait for.
    fn settled(&self, i: usize) -> bool {
        match self.uacs.get(i).map(Uac::state) {
            Some(UacState::Established) => self.uas_of_call[i].is_some(),
            Some(UacState::Failed(_) | UacState::Ended) => true,
            _ => false,
        }
    }

    /// One wait for SIP traffic or a timer, then everything due.
    fn turn(&mut self, wake: Option<Instant>, deadline: Instant) -> Result<(), LoadError> {
        let mut next = wake.unwrap_or(deadline).min(deadline);
        for t in self.uacs.iter().filter_map(Uac::poll_timeout) {
            next = next.min(t);
        }
        for t in self.uases.values().filter_map(|(_, u, _)| u.poll_timeout()) {
            next = next.min(t);
        }
        let timeout = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        let mut events = Events::with_capacity(8);
        if let Err(e) = self.poll.poll(&mut events, Some(timeout))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            return Err(LoadError::io("poll SIP sockets")(e));
        }
        // Level of readiness does not matter: both sockets are drained every turn.
        self.drain(SERVER);
        self.drain(TRUNK);
        let now = Instant::now();
        for i in 0..self.uacs.len() {
            if self.uacs[i].poll_timeout().is_some_and(|t| t <= now) {
                self.uacs[i].handle_timeout(now);
                self.flush_uac(i);
            }
        }
        let due: Vec<String> = self
            .uases
            .iter()
            .filter(|(_, (_, u, _))| u.poll_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some((_, uas, _)) = self.uases.get_mut(&k) {
                uas.handle_timeout(now);
            }
            self.flush_uas(&k);
        }
        Ok(())
    }

    fn drain(&mut self, token: Token) {
        // Bounded: at most this many datagrams per turn, so timers still run under a flood.
        for _ in 0..1024 {
            let socket = if token == SERVER {
                &self.server
            } else {
                &self.trunk
            };
            let (len, from) = match socket.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            let Ok(msg) = Message::parse(&self.buf[..len]) else {
                self.strays += 1;
                continue;
            };
            let now = Instant::now();
            if token == SERVER {
                self.on_server(now, msg);
            } else {
                self.on_trunk(now, msg, from);
            }
        }
    }

    fn on_server(&mut self, now: Instant, msg: Message) {
        match self.by_call_id.get(&msg.headers().call_id).copied() {
            Some(i) => {
                self.uacs[i].handle(now, msg);
                self.flush_uac(i);
            }
            None => {
                self.strays += 1;
                if let Message::Request(req) = &msg
                    && let Some(bytes) = stateless_reply(req)
                {
                    let _ = self.server.send_to(&bytes, self.xcc);
                }
            }
        }
    }

    fn on_trunk(&mut self, now: Instant, msg: Message, from: SocketAddr) {
        let Message::Request(req) = msg else {
            self.strays += 1;
            return;
        };
        let call_id = req.headers.call_id.clone();
        if let Some((_, uas, source)) = self.uases.get_mut(&call_id) {
            *source = from;
            uas.handle_request(&req);
            self.flush_uas(&call_id);
            return;
        }
        let index = (req.method == Method::Invite)
            .then(|| SipUri::parse(&req.uri).ok())
            .flatten()
            .and_then(|u| u.user)
            .and_then(|u| u.strip_prefix(USER_PREFIX)?.parse::<usize>().ok())
            .filter(|&i| i < self.phones.len() && self.uas_of_call[i].is_none());
        let Some(i) = index else {
            self.strays += u64::from(req.method != Method::Options);
            if let Some(bytes) = stateless_reply(&req) {
                let _ = self.trunk.send_to(&bytes, from);
            }
            return;
        };
        let Some(port) = self.phones[i]
            .as_ref()
            .and_then(|(_, pbx)| pbx.local_addr().ok())
            .map(|a| a.port())
        else {
            return;
        };
        let local = self.trunk.local_addr().unwrap_or(from);
        let answer = sdp(port, "RTP/AVP", None);
        let tag = format!("p{}-{i}", self.run_id);
        let uas = Uas::answer(now, &req, answer, local, &tag, self.timers);
        self.uas_of_call[i] = Some(call_id.clone());
        self.uases.insert(call_id.clone(), (i, uas, from));
        self.flush_uas(&call_id);
    }

    fn flush_uac(&mut self, i: usize) {
        while let Some(bytes) = self.uacs[i].poll_transmit() {
            // A refused send is a lost datagram: the agent's timers retransmit.
            let _ = self.server.send_to(&bytes, self.xcc);
        }
    }

    fn flush_uas(&mut self, call_id: &str) {
        if let Some((_, uas, to)) = self.uases.get_mut(call_id) {
            while let Some(bytes) = uas.poll_transmit() {
                let _ = self.trunk.send_to(&bytes, *to);
            }
        }
    }

    /// Call `i`'s media once both sides answered: the phones, XCC's two leg addresses (from
    /// the 200 on the server side, from the INVITE on the trunk) and the SRTP keys.
    fn media_of(&mut self, i: usize) -> Result<Option<SipCall>, LoadError> {
        let index = i as u32; // i < calls <= MAX_CALLS.
        let uac = &self.uacs[i];
        let setup = match (uac.state(), uac.setup_time(), uac.answer()) {
            (UacState::Established, Some(s), Some(_)) => s,
            (UacState::Failed(why), ..) => {
                return Err(LoadError::Sip {
                    call: index,
                    reason: why.clone(),
                });
            }
            _ => {
                return Err(LoadError::Sip {
                    call: index,
                    reason: "not set up before the deadline".into(),
                });
            }
        };
        let Some(offer) = self.uas_of_call[i]
            .as_ref()
            .and_then(|k| self.uases.get(k))
            .map(|(_, u, _)| u.offer().to_owned())
        else {
            return Err(LoadError::Sip {
                call: index,
                reason: "answered, but XCC's INVITE never reached the trunk".into(),
            });
        };
        let (client_target, cryptos) = media_target(index, uac.answer().unwrap_or_default())?;
        let (pbx_target, _) = media_target(index, &offer)?;
        let ours = &self.keys[i];
        let theirs = cryptos
            .into_iter()
            .find(|c| c.tag == ours.tag && c.suite == ours.suite)
            .ok_or_else(|| LoadError::Sdp {
                call: index,
                reason: format!(
                    "no a=crypto answering tag {} {}",
                    ours.tag,
                    SUITE.sdes_name()
                ),
            })?;
        let Some((client, pbx)) = self.phones[i].take() else {
            return Ok(None);
        };
        Ok(Some(SipCall {
            index,
            setup,
            media: CallMedia {
                client,
                pbx,
                client_target,
                pbx_target,
                client_tx: Some(SrtpContext::new(&ours.key, ours.srtp_policy())),
                client_rx: Some(SrtpContext::new(&theirs.key, theirs.srtp_policy())),
            },
        }))
    }
}
