//! Virtual-time harness for the sans-IO B2BUA: a fake media plane that checks the
//! [`MediaSessions`] contract, scripted peers (the controlling server and the PBX) that build
//! their messages with the crate's own dialog code, and leak checks.
//!
//! Shared by `b2bua_flows.rs`, `b2bua_random.rs` and `benches/b2bua_call.rs`.
#![allow(dead_code)]

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use xcc_core::ids::CallId;
use xcc_sip::b2bua::{
    B2bua, B2buaConfig, B2buaEvent, HangupReason, MediaOffer, MediaRefusal, MediaSessions, Side,
    SideConfig,
};
use xcc_sip::dialog::Dialog;
use xcc_sip::endpoint::{Peer, Target};
use xcc_sip::transport::Transport;
use xcc_sip::{Message, Method, NameAddr, Request, Response, Via};

/// The controlling server's address (its 4900). No socket is ever bound: sans-IO.
pub const SERVER_PEER: &str = "127.0.0.1:20900";
/// XCC's listener towards the server (its 4901).
pub const SERVER_LOCAL: &str = "127.0.0.1:20901";
/// The PBX (its 5060).
pub const PBX_PEER: &str = "127.0.0.1:20570";
/// XCC's listener towards the PBX (its 5060).
pub const PBX_LOCAL: &str = "127.0.0.1:20560";

/// An SDES offer as the server sends it.
pub const SERVER_OFFER: &str = "v=0\r\no=srv 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n";
/// A plain-RTP answer as the PBX sends it.
pub const PBX_ANSWER: &str = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

/// Parses an address constant.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("constant address")
}

/// A side's peer (where XCC sends, where the peer's messages come from).
pub fn peer(side: Side) -> Peer {
    Peer {
        addr: addr(match side {
            Side::Server => SERVER_PEER,
            Side::Pbx => PBX_PEER,
        }),
        transport: Transport::Udp,
    }
}

/// The B2BUA configuration the harness uses unless a test changes it.
pub fn config() -> B2buaConfig {
    B2buaConfig::new(
        SideConfig::new(peer(Side::Server), addr(SERVER_LOCAL)),
        SideConfig::new(peer(Side::Pbx), addr(PBX_LOCAL)),
    )
}

/// A media plane that hands out ids, answers with recognisable SDP and records every call,
/// flagging contract violations (double release, use after release) in `violations`.
#[derive(Debug, Default)]
pub struct FakeMedia {
    next: u64,
    /// Allocated and not released.
    pub live: BTreeSet<u64>,
    /// Every id ever allocated.
    pub allocated: u64,
    /// Every release.
    pub released: u64,
    /// Calls with an offer (initial or re-offer) awaiting its answer.
    pub pending: BTreeSet<u64>,
    /// Contract violations seen.
    pub violations: Vec<String>,
    /// Calls made, in order ("offer server", "answer 1", ...).
    pub log: Vec<String>,
    /// Refuse the next offers with this.
    pub refuse_offer: Option<MediaRefusal>,
    /// Refuse answers with this.
    pub refuse_answer: Option<MediaRefusal>,
    /// Refuse re-offers with this.
    pub refuse_reoffer: Option<MediaRefusal>,
    /// Pool size: offers beyond it are refused `Exhausted`.
    pub capacity: Option<usize>,
}

impl FakeMedia {
    /// The SDP XCC sends for call `id` towards `to`.
    pub fn sdp(id: u64, what: &str) -> String {
        format!(
            "v=0\r\no=xcc {id} 1 IN IP4 127.0.0.1\r\ns={what}\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 10000 RTP/AVP 0\r\n"
        )
    }

    fn check_live(&mut self, what: &str, call: CallId) -> Result<(), MediaRefusal> {
        if self.live.contains(&call.0) {
            Ok(())
        } else {
            self.violations
                .push(format!("{what} on dead call {}", call.0));
            Err(MediaRefusal::UnknownCall)
        }
    }
}

impl MediaSessions for FakeMedia {
    fn offer(&mut self, _key: &str, from: Side, _sdp: &str) -> Result<MediaOffer, MediaRefusal> {
        self.log.push(format!("offer {from}"));
        if let Some(r) = self.refuse_offer.clone() {
            return Err(r);
        }
        if self.capacity.is_some_and(|c| self.live.len() >= c) {
            return Err(MediaRefusal::Exhausted);
        }
        self.next += 1;
        self.allocated += 1;
        self.live.insert(self.next);
        self.pending.insert(self.next);
        Ok(MediaOffer {
            call: CallId(self.next),
            sdp: Self::sdp(self.next, "offer"),
        })
    }

    fn answer(&mut self, call: CallId, _sdp: &str) -> Result<String, MediaRefusal> {
        self.log.push(format!("answer {}", call.0));
        self.check_live("answer", call)?;
        if !self.pending.contains(&call.0) {
            self.violations
                .push(format!("answer without a pending offer on {}", call.0));
        }
        // Like the session table: a refused answer leaves the offer pending.
        if let Some(r) = self.refuse_answer.clone() {
            return Err(r);
        }
        self.pending.remove(&call.0);
        Ok(Self::sdp(call.0, "answer"))
    }

    fn reoffer(&mut self, call: CallId, from: Side, _sdp: &str) -> Result<String, MediaRefusal> {
        self.log.push(format!("reoffer {} {from}", call.0));
        self.check_live("reoffer", call)?;
        if let Some(r) = self.refuse_reoffer.clone() {
            return Err(r);
        }
        if !self.pending.insert(call.0) {
            return Err(MediaRefusal::OfferPending);
        }
        Ok(Self::sdp(call.0, "reoffer"))
    }

    fn abandon_offer(&mut self, call: CallId) {
        self.log.push(format!("abandon {}", call.0));
        if self.check_live("abandon_offer", call).is_ok() {
            self.pending.remove(&call.0);
        }
    }

    fn release(&mut self, call: CallId) {
        self.log.push(format!("release {}", call.0));
        if self.live.remove(&call.0) {
            self.released += 1;
            self.pending.remove(&call.0);
        } else {
            self.violations
                .push(format!("release of dead call {}", call.0));
        }
    }
}

/// The B2BUA, its fake media, virtual time and everything it sent.
pub struct Harness {
    /// The core under test.
    pub b2bua: B2bua,
    /// Its media plane.
    pub media: FakeMedia,
    /// Virtual time.
    pub now: Instant,
    /// Sent and not yet looked at: side, destination, message.
    pub outbox: VecDeque<(Side, Peer, Message)>,
    /// Events not yet looked at.
    pub events: Vec<B2buaEvent>,
    /// When set, every message in and out is copied to `wire` (bench reference).
    pub record: bool,
    /// Messages in and out, in order, while `record`.
    pub wire: Vec<Vec<u8>>,
    /// Transport of each side's peer (by `Side::index`); UDP unless a test says otherwise.
    pub transports: [Transport; 2],
    /// Sent messages that do not parse (400s echoing a broken header).
    pub unparseable: usize,
    branch: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new(config())
    }
}

impl Harness {
    /// A harness over a B2BUA with `cfg` and a fixed seed.
    pub fn new(cfg: B2buaConfig) -> Self {
        let now = Instant::now();
        Self {
            b2bua: B2bua::new(cfg, now, [7; 32]),
            media: FakeMedia::default(),
            now,
            outbox: VecDeque::new(),
            events: Vec::new(),
            transports: [Transport::Udp; 2],
            record: false,
            wire: Vec::new(),
            unparseable: 0,
            branch: 0,
        }
    }

    /// The daemon hangs call `id` up.
    pub fn hangup(&mut self, id: u64, reason: HangupReason) {
        self.b2bua
            .hangup(self.now, CallId(id), reason, &mut self.media);
        self.collect();
    }

    /// Where `side`'s peer sends from (and XCC sends to), with its transport.
    pub fn source(&self, side: Side) -> Peer {
        Peer {
            transport: self.transports[side.index()],
            ..peer(side)
        }
    }

    /// Picks up what the B2BUA sent and reported after a direct call into it.
    pub fn collect_now(&mut self) {
        self.collect();
    }

    fn collect(&mut self) {
        while let Some((side, t)) = self.b2bua.poll_transmit() {
            if self.record {
                self.wire.push(t.bytes.clone());
            }
            let Target::Peer(p) = t.target else {
                panic!("the harness uses IP literals only: {:?}", t.target);
            };
            match Message::parse(&t.bytes) {
                Ok(msg) => self.outbox.push_back((side, p, msg)),
                // Only the transaction layer's 400 to a request whose CSeq/Call-ID it
                // could not read copies the broken header back.
                Err(_) => self.unparseable += 1,
            }
        }
        while let Some(e) = self.b2bua.poll_event() {
            self.events.push(e);
        }
    }

    /// Raw bytes from `side`'s peer.
    pub fn inject_bytes(&mut self, side: Side, bytes: &[u8]) {
        if self.record {
            self.wire.push(bytes.to_vec());
        }
        self.b2bua
            .handle_bytes(self.now, side, self.source(side), bytes, &mut self.media);
        self.collect();
    }

    /// A message from `side`'s peer.
    pub fn inject(&mut self, side: Side, msg: &Message) {
        self.inject_bytes(side, &msg.to_bytes());
    }

    /// A request from `side`'s peer.
    pub fn send(&mut self, side: Side, req: &Request) {
        self.inject(side, &Message::Request(req.clone()));
    }

    /// Moves virtual time forward by `d`, firing every timer due on the way.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..100_000 {
            match self.b2bua.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.b2bua.handle_timeout(self.now, &mut self.media);
                    self.collect();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// The driver reports that `side`'s peer is unreachable.
    pub fn transport_error(&mut self, side: Side) {
        self.b2bua
            .handle_transport_error(self.now, side, self.source(side), &mut self.media);
        self.collect();
    }

    /// A fresh Via of `side`'s peer.
    pub fn via(&mut self, side: Side) -> Via {
        self.branch += 1;
        let p = peer(side).addr;
        let t = match self.source(side).transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        };
        Via::parse(&format!("SIP/2.0/{t} {p};branch=z9hG4bK-h{}", self.branch)).expect("valid Via")
    }

    /// `side`'s peer's Contact.
    pub fn contact(side: Side) -> NameAddr {
        NameAddr::parse(&format!("<sip:peer@{}>", peer(side).addr), "Contact")
            .expect("valid Contact")
    }

    /// A new INVITE from `side` calling user `callee`; injected and returned.
    pub fn invite(&mut self, side: Side, call_id: &str, sdp: Option<&str>, extra: &str) -> Request {
        let via = self.via(side);
        let body = sdp.unwrap_or("");
        let ct = if sdp.is_some() {
            "Content-Type: application/sdp\r\n"
        } else {
            ""
        };
        let p = peer(side).addr;
        let text = format!(
            "INVITE sip:1001@{p} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@{p}>;tag=f-{call_id}\r\nTo: \"Bob\" <sip:1001@{p}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{p}>\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let Ok(Message::Request(req)) = Message::parse(text.as_bytes()) else {
            panic!("harness INVITE does not parse:\n{text}");
        };
        self.send(side, &req);
        req
    }

    /// A response from `side`'s peer to `req` (which XCC sent it), with the peer's Contact on
    /// dialog-creating responses; injected and returned.
    pub fn reply(
        &mut self,
        side: Side,
        req: &Request,
        status: u16,
        tag: Option<&str>,
        body: Option<&str>,
    ) -> Response {
        let mut resp = Response::for_request(req, status, "X", tag);
        if req.method == Method::Invite && (101..300).contains(&status) {
            resp.headers.contact.push(Self::contact(side));
        }
        if let Some(b) = body {
            resp.headers.content_type = Some("application/sdp".into());
            resp.body = Bytes::copy_from_slice(b.as_bytes());
        }
        self.inject(side, &Message::Response(resp.clone()));
        resp
    }

    /// Removes and returns the first message sent to `side` matching `pred`.
    pub fn take(&mut self, side: Side, what: &str, pred: impl Fn(&Message) -> bool) -> Message {
        let i = self
            .outbox
            .iter()
            .position(|(s, _, m)| *s == side && pred(m))
            .unwrap_or_else(|| panic!("no {what} sent to {side}; outbox:\n{}", self.dump()));
        let (_, p, m) = self.outbox.remove(i).expect("position is in range");
        assert_eq!(p, self.source(side), "{what} went to the wrong address");
        m
    }

    /// The first response with `status` sent to `side`.
    pub fn response(&mut self, side: Side, status: u16) -> Response {
        match self.take(
            side,
            &format!("{status}"),
            |m| matches!(m, Message::Response(r) if r.status == status),
        ) {
            Message::Response(r) => r,
            Message::Request(_) => unreachable!("matched a response"),
        }
    }

    /// The first `method` request sent to `side`.
    pub fn request(&mut self, side: Side, method: Method) -> Request {
        let what = method.as_str().to_owned();
        match self.take(
            side,
            &what,
            |m| matches!(m, Message::Request(r) if r.method == method),
        ) {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!("matched a request"),
        }
    }

    /// How many messages matching `pred` were sent to `side` (and not yet taken).
    pub fn count(&self, side: Side, pred: impl Fn(&Message) -> bool) -> usize {
        self.outbox
            .iter()
            .filter(|(s, _, m)| *s == side && pred(m))
            .count()
    }

    /// Statuses of the responses sent to `side`, in order.
    pub fn statuses(&self, side: Side) -> Vec<u16> {
        self.outbox
            .iter()
            .filter(|(s, _, _)| *s == side)
            .filter_map(|(_, _, m)| match m {
                Message::Response(r) => Some(r.status),
                Message::Request(_) => None,
            })
            .collect()
    }

    /// Forgets everything sent so far.
    pub fn clear(&mut self) {
        self.outbox.clear();
    }

    /// The outbox, one line per message.
    pub fn dump(&self) -> String {
        self.outbox
            .iter()
            .map(|(s, _, m)| match m {
                Message::Request(r) => format!("  -> {s}: {} {}\n", r.method, r.headers.cseq),
                Message::Response(r) => format!("  -> {s}: {} ({})\n", r.status, r.headers.cseq),
            })
            .collect()
    }

    /// Takes the events seen so far.
    pub fn take_events(&mut self) -> Vec<B2buaEvent> {
        std::mem::take(&mut self.events)
    }

    /// Lets every timer run out (no peer answers anything any more), then checks that nothing
    /// is left: no call, no table entry, no transaction, no allocated media, no contract
    /// violation.
    pub fn settle_and_check(&mut self) {
        self.advance(Duration::from_secs(300));
        self.check_clean();
    }

    /// The leak and contract invariants, now.
    pub fn check_clean(&self) {
        assert_eq!(self.b2bua.calls(), 0, "calls left");
        assert_eq!(self.b2bua.table_sizes(), [0; 5], "B2BUA tables not empty");
        assert_eq!(self.b2bua.transactions(), [0, 0], "transactions left");
        assert!(
            self.media.live.is_empty(),
            "media not released: {:?}",
            self.media.live
        );
        assert_eq!(self.media.allocated, self.media.released);
        assert!(
            self.media.violations.is_empty(),
            "media contract broken: {:?}",
            self.media.violations
        );
    }
}

/// The server's dialog (UAC) from its INVITE and XCC's 2xx.
pub fn uac_dialog(side: Side, invite: &Request, ok: &Response) -> Dialog {
    Dialog::uac(invite, ok, Harness::contact(side)).expect("2xx with To tag and Contact")
}

/// The called peer's dialog (UAS) from the INVITE XCC sent it and the tag it answered with.
pub fn uas_dialog(side: Side, invite: &Request, tag: &str) -> Dialog {
    Dialog::uas(invite, tag, 100, Harness::contact(side)).expect("INVITE with From tag and Contact")
}

/// An established call, server -> PBX: returns the server's and the PBX's dialogs. The ACK to
/// XCC's 200 is sent; the outbox is cleared.
pub fn established(h: &mut Harness, call_id: &str) -> (Dialog, Dialog) {
    let inv = h.invite(Side::Server, call_id, Some(SERVER_OFFER), "");
    let out = h.request(Side::Pbx, Method::Invite);
    let tag = format!("p-{call_id}");
    h.reply(Side::Pbx, &out, 200, Some(&tag), Some(PBX_ANSWER));
    let ok = h.response(Side::Server, 200);
    let server = uac_dialog(Side::Server, &inv, &ok);
    let via = h.via(Side::Server);
    h.send(
        Side::Server,
        &server.ack(ok.headers.cseq.seq, via, Bytes::new()),
    );
    let pbx = uas_dialog(Side::Pbx, &out, &tag);
    h.clear();
    (server, pbx)
}
