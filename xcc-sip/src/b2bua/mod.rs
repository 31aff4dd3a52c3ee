//! The back-to-back user agent: one call across two dialogs, one towards the controlling server
//! and one towards the PBX, with media through XCC.
//!
//! Sans-IO like the rest of the crate. The B2BUA owns one [`Endpoint`] per [`Side`] and is a UA
//! on each: its own Call-ID, tags, CSeq and Contact on the far dialog, so in-dialog requests come
//! back to XCC. Media is behind [`MediaSessions`], passed into every call that may touch it.
//!
//! Drive loop: `handle_bytes(now, side, source, bytes, media)` for every datagram/frame a side's
//! listener receives; drain [`B2bua::poll_transmit`] (which side's listener sends it) and
//! [`B2bua::poll_event`]; sleep until [`B2bua::poll_timeout`] and call
//! [`B2bua::handle_timeout`].

mod call;
mod compose;
mod config;
mod event;
mod indialog;
mod media;
mod persist;
mod setup;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use xcc_core::ids::{CallId, LegSide};

pub use config::{B2buaConfig, SideConfig};
pub use event::{B2buaCounters, B2buaEvent, EndReason, HangupReason, SideCounters};
pub use media::{MediaOffer, MediaRefusal, MediaSessions};
pub use persist::DIALOG_STATE_VERSION;

use crate::dialog::DialogKey;
use crate::endpoint::{Endpoint, EndpointEvent, Peer, Transmit};
use crate::header::NameAddr;
use crate::message::{Header, Method, Request, Response};
use crate::monitor::{Health, HealthEvent, MonitorConfig, OptionsMonitor};
use crate::transaction::TransactionKey;
use call::Call;

/// Which of XCC's two SIP neighbours a message comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The controlling (XPhone) server: XCC listens on 4901 and sends to its 4900. Its calls'
    /// media is the client leg (SDES-SRTP).
    Server,
    /// The PBX/SBC trunk on 5060; plain RTP media.
    Pbx,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Self {
        match self {
            Self::Server => Self::Pbx,
            Self::Pbx => Self::Server,
        }
    }

    /// Array index (Server 0, Pbx 1) for per-side tables.
    pub fn index(self) -> usize {
        match self {
            Self::Server => 0,
            Self::Pbx => 1,
        }
    }

    /// The media leg this side's SDP describes.
    pub fn leg(self) -> LegSide {
        match self {
            Self::Server => LegSide::Client,
            Self::Pbx => LegSide::Pbx,
        }
    }

    /// Lower-case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Pbx => "pbx",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client transaction XCC started is for.
#[derive(Debug)]
enum Client {
    /// The INVITE towards the called side of a call.
    Invite(CallId),
    /// A relayed re-INVITE.
    ReInvite(CallId),
    /// A relayed in-dialog request (INFO, MESSAGE): its final response goes back to `from`.
    Relay {
        /// The side that sent the original.
        from: Side,
        /// The original's server transaction.
        server: TransactionKey,
        /// The original, to build the response from.
        request: Box<Request>,
    },
    /// A BYE or CANCEL: nothing to do with the answer.
    Fire,
}

/// An ACK XCC sent for a 2xx, kept for 64*T1 to answer retransmissions of that 2xx (which
/// arrive when the ACK was lost), even after the call itself is gone.
#[derive(Debug)]
struct SentAck {
    ack: Request,
    dest: Peer,
    until: Instant,
}

/// Identifies a 2xx: side, Call-ID, CSeq number, To tag.
type AckKey = (Side, String, u32, String);

/// The B2BUA core.
#[derive(Debug)]
pub struct B2bua {
    /// Sides, timers, Retry-After, User-Agent.
    cfg: B2buaConfig,
    /// One transaction layer per side, by [`Side::index`].
    endpoints: [Endpoint; 2],
    /// OPTIONS monitors, per side, when configured.
    monitors: [Option<OptionsMonitor>; 2],
    /// Tags, Call-IDs, branches, cnonces.
    rng: StdRng,
    /// Refuse new calls.
    draining: bool,
    /// Live calls.
    calls: HashMap<CallId, Call>,
    /// Both dialogs of every call, for in-dialog requests and ACKs.
    dialogs: HashMap<(Side, DialogKey), CallId>,
    /// Initial INVITEs still unanswered, by their server transaction (CANCEL lookup).
    invites_in: HashMap<(Side, TransactionKey), CallId>,
    /// Client transactions XCC started for calls.
    clients: HashMap<(Side, TransactionKey), Client>,
    /// ACKs sent for 2xx, for re-ACKing retransmissions.
    acks: HashMap<AckKey, SentAck>,
    /// `acks` by expiry, oldest first (expiries are monotonic: now + 64*T1).
    ack_expiry: VecDeque<(Instant, AckKey)>,
    /// Call deadlines (2xx retransmission, ACK wait, cancel linger), earliest first; pushed
    /// whenever a call's deadline is set, checked against the call when popped (stale entries
    /// are dropped), so wake-ups cost O(log n) instead of a scan of every call.
    call_timers: BinaryHeap<Reverse<(Instant, CallId)>>,
    /// Lifecycle events for the daemon.
    events: VecDeque<B2buaEvent>,
    /// Calls whose dialog state changed since the last [`B2buaEvent::DialogState`].
    dirty: BTreeSet<CallId>,
    /// What is counted (the endpoints' malformed counts are added on read).
    counters: B2buaCounters,
}

impl B2bua {
    /// A B2BUA with no calls. `seed` feeds the RNG for tags, Call-IDs, branches and cnonces
    /// (the daemon passes OS randomness, tests a fixed seed). OPTIONS monitoring of each side
    /// with an `options_interval` starts at `now`.
    pub fn new(cfg: B2buaConfig, now: Instant, seed: [u8; 32]) -> Self {
        let mut rng = StdRng::from_seed(seed);
        let monitors = [&cfg.server, &cfg.pbx].map(|side| monitor_for(side, now, &mut rng));
        Self {
            endpoints: [Endpoint::new(cfg.timers), Endpoint::new(cfg.timers)],
            monitors,
            rng,
            cfg,
            draining: false,
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            invites_in: HashMap::new(),
            clients: HashMap::new(),
            acks: HashMap::new(),
            ack_expiry: VecDeque::new(),
            call_timers: BinaryHeap::new(),
            events: VecDeque::new(),
            dirty: BTreeSet::new(),
            counters: B2buaCounters::default(),
        }
    }

    /// One datagram (UDP) or one frame (TCP, cut by [`crate::framing`]) received by `side`'s
    /// listener from `source`. Malformed requests are answered 400/505 by the transaction
    /// layer; anything else malformed is counted and dropped.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        side: Side,
        source: Peer,
        bytes: &[u8],
        media: &mut impl MediaSessions,
    ) {
        self.endpoints[side.index()].handle_bytes(now, source, bytes);
        self.process(now, media);
    }

    /// A message from `side` that is already parsed (a stream framer's frame): as
    /// [`B2bua::handle_bytes`] without encoding it again to be parsed again.
    pub fn handle_message(
        &mut self,
        now: Instant,
        side: Side,
        source: Peer,
        msg: crate::Message,
        media: &mut impl MediaSessions,
    ) {
        self.endpoints[side.index()].handle_message(now, source, msg);
        self.process(now, media);
    }

    /// A message from `side` that did not parse (a malformed stream frame): answered 400/505
    /// when the error carries enough to address a response, else counted as dropped, exactly
    /// as for a datagram.
    pub fn handle_malformed(&mut self, side: Side, source: Peer, err: &crate::ParseError) {
        self.endpoints[side.index()].handle_malformed(source, err);
    }

    /// Fires due timers: transactions, 2xx retransmission, OPTIONS probes, lingering state.
    pub fn handle_timeout(&mut self, now: Instant, media: &mut impl MediaSessions) {
        for ep in &mut self.endpoints {
            ep.handle_timeout(now);
        }
        self.process(now, media);
        for side in [Side::Server, Side::Pbx] {
            let Some(m) = self.monitors[side.index()].as_mut() else {
                continue;
            };
            if m.poll_timeout() > now {
                continue;
            }
            if let Some(probe) = m.handle_timeout(now, &mut self.rng) {
                let dest = self.side_cfg(side).peer;
                self.send(now, side, probe, dest);
            }
        }
        let mut due = Vec::new();
        while let Some(&Reverse((at, id))) = self.call_timers.peek() {
            if at > now {
                break;
            }
            self.call_timers.pop();
            due.push(id);
        }
        for id in due {
            if self
                .calls
                .get(&id)
                .and_then(Call::deadline)
                .is_some_and(|d| d <= now)
            {
                self.call_timeout(now, id, media);
                self.schedule_call(id);
            }
        }
        while let Some((at, _)) = self.ack_expiry.front() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.ack_expiry.pop_front()
                && self.acks.get(&key).is_some_and(|a| a.until <= now)
            {
                self.acks.remove(&key);
            }
        }
        self.process(now, media);
    }

    /// The driver could not deliver to `peer` on `side` (TCP connect refused or reset): the
    /// transactions towards it fail now (a pending INVITE is answered 503 to its caller).
    pub fn handle_transport_error(
        &mut self,
        now: Instant,
        side: Side,
        peer: Peer,
        media: &mut impl MediaSessions,
    ) {
        self.endpoints[side.index()].handle_transport_error(peer);
        self.process(now, media);
    }

    /// Ends a call from the daemon's side (media timeout, gRPC hang-up, drain grace): BYE on
    /// both dialogs once answered, 487 + CANCEL while ringing; media released. Unknown ids are
    /// ignored (the call may have just ended).
    pub fn hangup(
        &mut self,
        now: Instant,
        call: CallId,
        reason: HangupReason,
        media: &mut impl MediaSessions,
    ) {
        let Some(phase) = self.calls.get(&call).map(|c| c.phase) else {
            return;
        };
        match phase {
            call::Phase::Early => self.cancel_call(now, call, EndReason::Hangup(reason), media),
            call::Phase::Confirmed => {
                self.bye_call(now, call, None, EndReason::Hangup(reason), media)
            }
            call::Phase::Cancelling { .. } => {}
        }
        self.process(now, media);
    }

    /// While draining, new INVITEs and out-of-dialog OPTIONS are answered 503 with
    /// Retry-After; calls in progress continue.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Replaces `side`'s peer configuration (a live reload of `[sip]`): new calls and OPTIONS
    /// probes go to `next.peer` with `next`'s Request-URI host, credentials and probe interval.
    /// Calls already set up keep their dialogs (in-dialog requests follow each dialog's remote
    /// target and route set). `next.local` is ignored: it follows the listener, which does not
    /// move. The side's monitor restarts (health Unknown) when what it probes or how changed.
    pub fn set_side(&mut self, now: Instant, side: Side, next: SideConfig) {
        let current = match side {
            Side::Server => &mut self.cfg.server,
            Side::Pbx => &mut self.cfg.pbx,
        };
        let probe_changed = current.peer != next.peer
            || current.peer_host != next.peer_host
            || current.options_interval != next.options_interval
            || current.down_after != next.down_after;
        let local = current.local;
        *current = SideConfig { local, ..next };
        if probe_changed {
            let cfg = config::side_of(&self.cfg, side);
            self.monitors[side.index()] = monitor_for(cfg, now, &mut self.rng);
        }
    }

    /// Whether new calls are refused.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Next message to send, with the side whose listener must send it.
    pub fn poll_transmit(&mut self) -> Option<(Side, Transmit)> {
        for side in [Side::Server, Side::Pbx] {
            if let Some(t) = self.endpoints[side.index()].poll_transmit() {
                return Some((side, t));
            }
        }
        None
    }

    /// When [`B2bua::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let endpoints = self.endpoints.iter().filter_map(Endpoint::poll_timeout);
        let monitors = self
            .monitors
            .iter()
            .flatten()
            .map(OptionsMonitor::poll_timeout);
        let calls = self.call_timers.peek().map(|Reverse((at, _))| *at);
        let acks = self.ack_expiry.front().map(|(at, _)| *at);
        endpoints.chain(monitors).chain(calls).chain(acks).min()
    }

    /// Next lifecycle or health event.
    pub fn poll_event(&mut self) -> Option<B2buaEvent> {
        self.events.pop_front()
    }

    /// Calls holding signalling state (ringing, answered, or cancelled and awaiting the far
    /// side's final response).
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Live transactions per side, by [`Side::index`] (leak checks).
    pub fn transactions(&self) -> [usize; 2] {
        [self.endpoints[0].len(), self.endpoints[1].len()]
    }

    /// Sizes of every internal table: calls, dialogs, unanswered INVITEs, client transactions,
    /// cached ACKs. All zero once every call and timer has run out (leak checks).
    pub fn table_sizes(&self) -> [usize; 5] {
        [
            self.calls.len(),
            self.dialogs.len(),
            self.invites_in.len(),
            self.clients.len(),
            self.acks.len(),
        ]
    }

    /// A side's OPTIONS-monitor verdict (`Unknown` when it is not monitored).
    pub fn health(&self, side: Side) -> Health {
        self.monitors[side.index()]
            .as_ref()
            .map_or(Health::Unknown, OptionsMonitor::health)
    }

    /// Counters for metrics.
    pub fn counters(&self) -> B2buaCounters {
        let mut c = self.counters.clone();
        for ep in &self.endpoints {
            let e = ep.counters();
            c.malformed_answered += e.answered_malformed;
            c.malformed_dropped += e.dropped_malformed + e.dropped_no_branch;
        }
        c
    }

    // ----- internals shared by setup.rs and indialog.rs -----

    /// Queues the call's current deadline (after it was set or moved).
    fn schedule_call(&mut self, id: CallId) {
        if let Some(at) = self.calls.get(&id).and_then(Call::deadline) {
            self.call_timers.push(Reverse((at, id)));
        }
    }

    fn side_cfg(&self, side: Side) -> &SideConfig {
        config::side_of(&self.cfg, side)
    }

    /// Our Via towards `side` with a fresh branch.
    fn new_via(&mut self, side: Side) -> crate::header::Via {
        compose::via(config::side_of(&self.cfg, side), &mut self.rng)
    }

    /// Handles every endpoint and monitor event until none is left.
    fn process(&mut self, now: Instant, media: &mut impl MediaSessions) {
        loop {
            let mut any = false;
            for side in [Side::Server, Side::Pbx] {
                while let Some(ev) = self.endpoints[side.index()].poll_event() {
                    any = true;
                    self.on_event(now, side, ev, media);
                }
                if let Some(m) = self.monitors[side.index()].as_mut() {
                    while let Some(h) = m.poll_event() {
                        let health = match h {
                            HealthEvent::Up => Health::Up,
                            HealthEvent::Down => Health::Down,
                        };
                        self.events
                            .push_back(B2buaEvent::PeerHealth { side, health });
                    }
                }
            }
            if !any {
                break;
            }
        }
        while let Some(id) = self.dirty.pop_first() {
            if let Some(blob) = self.export_dialogs(id) {
                self.events
                    .push_back(B2buaEvent::DialogState { call: id, blob });
            }
        }
    }

    fn on_event(
        &mut self,
        now: Instant,
        side: Side,
        ev: EndpointEvent,
        media: &mut impl MediaSessions,
    ) {
        match ev {
            EndpointEvent::Request {
                key,
                request,
                source,
            } => {
                self.count_request_in(side, &request.method);
                self.on_request(now, side, key, *request, source, media);
            }
            EndpointEvent::Cancel { invite, .. } => {
                self.count_request_in(side, &Method::Cancel);
                match self.invites_in.get(&(side, invite.clone())).copied() {
                    Some(id) => self.cancel_call(now, id, EndReason::Cancelled, media),
                    None => self.cancel_reinvite(now, side, &invite, media),
                }
            }
            EndpointEvent::Ack { request, .. } => {
                self.count_request_in(side, &Method::Ack);
                self.on_ack(side, &request);
            }
            EndpointEvent::Response { key, response } => {
                self.count_response_in(side, &response);
                self.on_response(now, side, key, *response, media);
            }
            EndpointEvent::StrayResponse { response, .. } => {
                self.count_response_in(side, &response);
                if response.headers.cseq.method == "INVITE" && (200..300).contains(&response.status)
                {
                    if !self.reack(now, side, &response) {
                        self.stray_2xx(now, side, &response, true);
                    }
                } else {
                    self.counters.unmatched += 1;
                }
            }
            EndpointEvent::Timeout { key } => self.on_failure(now, side, key, 408, media),
            EndpointEvent::TransportError { key } => self.on_failure(now, side, key, 503, media),
        }
    }

    fn count_response_in(&mut self, side: Side, response: &Response) {
        *self.counters.sides[side.index()]
            .responses_in
            .entry((response.headers.cseq.method.to_string(), response.status))
            .or_default() += 1;
    }

    fn count_request_in(&mut self, side: Side, method: &Method) {
        *self.counters.sides[side.index()]
            .requests_in
            .entry(method.as_str().to_owned())
            .or_default() += 1;
    }

    /// A new request (server transaction `key`).
    fn on_request(
        &mut self,
        now: Instant,
        side: Side,
        key: TransactionKey,
        req: Request,
        source: Peer,
        media: &mut impl MediaSessions,
    ) {
        if let Some(dk) = DialogKey::for_incoming(&req) {
            match self.dialogs.get(&(side, dk)).copied() {
                Some(id) => self.in_dialog(now, side, id, key, req, source, media),
                None => {
                    self.counters.unmatched += 1;
                    self.respond(now, side, &key, &req, 481, None, None, Vec::new());
                }
            }
            return;
        }
        match req.method {
            Method::Invite => self.new_call(now, side, key, req, source, media),
            Method::Options => {
                if self.draining {
                    let extra = vec![self.retry_after()];
                    self.respond(now, side, &key, &req, 503, None, None, extra);
                } else {
                    let extra = vec![
                        header("Allow", compose::ALLOW),
                        header("Accept", "application/sdp"),
                    ];
                    self.respond(now, side, &key, &req, 200, None, None, extra);
                }
            }
            Method::Bye | Method::Info | Method::Update | Method::Prack => {
                self.counters.unmatched += 1;
                self.respond(now, side, &key, &req, 481, None, None, Vec::new());
            }
            _ => {
                let extra = vec![header("Allow", compose::ALLOW)];
                self.respond(now, side, &key, &req, 405, None, None, extra);
            }
        }
    }

    /// A client transaction's response.
    fn on_response(
        &mut self,
        now: Instant,
        side: Side,
        key: TransactionKey,
        resp: Response,
        media: &mut impl MediaSessions,
    ) {
        let status = resp.status;
        let invite_2xx = key.method == Method::Invite && (200..300).contains(&status);
        if invite_2xx && self.reack(now, side, &resp) {
            return;
        }
        let ck = (side, key);
        let client = if status >= 200 {
            self.clients.remove(&ck)
        } else {
            match self.clients.get(&ck) {
                Some(Client::Invite(id)) => Some(Client::Invite(*id)),
                _ => None,
            }
        };
        match client {
            Some(Client::Invite(id)) => self.on_invite_response(now, side, id, resp, media),
            Some(Client::ReInvite(id)) => self.on_reinvite_response(now, side, id, resp, media),
            Some(Client::Relay {
                from,
                server,
                request,
            }) => {
                self.respond(now, from, &server, &request, status, None, None, Vec::new());
            }
            Some(Client::Fire) => {}
            None if ck.1.method == Method::Options => {
                if let Some(m) = self.monitors[side.index()].as_mut() {
                    m.handle_response(&ck.1, status);
                }
            }
            None if invite_2xx => self.stray_2xx(now, side, &resp, true),
            None => {}
        }
    }

    /// A client transaction ended without a final response: timer B/F/C (`status` 408) or a
    /// transport error (503).
    fn on_failure(
        &mut self,
        now: Instant,
        side: Side,
        key: TransactionKey,
        status: u16,
        media: &mut impl MediaSessions,
    ) {
        if key.role == crate::transaction::Role::Server {
            // Timer H: the peer never ACKed our non-2xx; nothing left to do.
            return;
        }
        match self.clients.remove(&(side, key.clone())) {
            Some(Client::Invite(id)) => self.on_invite_failure(now, id, status, media),
            Some(Client::ReInvite(id)) => self.on_reinvite_failure(now, id, status, media),
            Some(Client::Relay {
                from,
                server,
                request,
            }) => {
                self.respond(now, from, &server, &request, status, None, None, Vec::new());
            }
            Some(Client::Fire) => {}
            None => {
                if let Some(m) = self.monitors[side.index()].as_mut() {
                    m.handle_transaction_timeout(&key);
                }
            }
        }
    }

    /// Sends a request on a side; the key of its client transaction (`None` for ACK or when the
    /// endpoint refused it, which a fresh branch makes impossible).
    fn send(
        &mut self,
        now: Instant,
        side: Side,
        req: Request,
        dest: Peer,
    ) -> Option<TransactionKey> {
        *self.counters.sides[side.index()]
            .requests_out
            .entry(req.method.as_str().to_owned())
            .or_default() += 1;
        match self.endpoints[side.index()].send_request(now, req, dest) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(%side, error = %e, "request not sent");
                None
            }
        }
    }

    /// Sends the ACK for a 2xx and remembers it for 64*T1 to answer retransmissions.
    fn send_ack(&mut self, now: Instant, side: Side, ack: Request, dest: Peer, to_tag: &str) {
        let key = (
            side,
            ack.headers.call_id.clone(),
            ack.headers.cseq.seq,
            to_tag.to_owned(),
        );
        let until = now + self.cfg.timers.t1x64();
        self.ack_expiry.push_back((until, key.clone()));
        self.acks.insert(
            key,
            SentAck {
                ack: ack.clone(),
                dest,
                until,
            },
        );
        self.send(now, side, ack, dest);
    }

    /// Re-sends the cached ACK when `resp` is a retransmitted 2xx; false when it is new.
    fn reack(&mut self, now: Instant, side: Side, resp: &Response) -> bool {
        let key = (
            side,
            resp.headers.call_id.clone(),
            resp.headers.cseq.seq,
            resp.headers.to.tag().unwrap_or_default().to_owned(),
        );
        let Some(sent) = self.acks.get(&key) else {
            return false;
        };
        let (ack, dest) = (sent.ack.clone(), sent.dest);
        self.send(now, side, ack, dest);
        true
    }

    /// A 2xx to an INVITE that belongs to no live call (it answered a cancelled INVITE, or it is
    /// a second 2xx from a forked INVITE): ACK it, and BYE it when `bye`. Only for Call-IDs XCC
    /// made, so nobody can make XCC send requests at a third party with forged responses.
    fn stray_2xx(&mut self, now: Instant, side: Side, resp: &Response, bye: bool) {
        let suffix = format!("@{}", compose::uri_host(self.side_cfg(side).local.ip()));
        if !resp.headers.call_id.ends_with(&suffix) {
            self.counters.unmatched += 1;
            return;
        }
        let contact = compose::contact(self.side_cfg(side));
        let Some(mut d) = compose::dialog_from_response(resp, contact) else {
            self.counters.unmatched += 1;
            return;
        };
        let dest = compose::dialog_peer(&d, self.side_cfg(side).peer);
        let via = self.new_via(side);
        let ack = d.ack(resp.headers.cseq.seq, via, bytes::Bytes::new());
        self.send_ack(now, side, ack, dest, &d.key.remote_tag.clone());
        if bye {
            let via = self.new_via(side);
            let bye = d.new_request(Method::Bye, via, bytes::Bytes::new());
            if let Some(k) = self.send(now, side, bye, dest) {
                self.clients.insert((side, k), Client::Fire);
            }
        }
    }

    /// Answers a server transaction; returns what was sent.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        now: Instant,
        side: Side,
        key: &TransactionKey,
        req: &Request,
        status: u16,
        tag: Option<&str>,
        body: Option<&str>,
        extra: Vec<Header>,
    ) -> Option<Response> {
        let contact = (req.method == Method::Invite && (101..300).contains(&status))
            .then(|| compose::contact(self.side_cfg(side)));
        let mut resp = compose::response(req, status, tag, contact, body, &self.cfg.user_agent);
        if req.method == Method::Invite
            && (101..300).contains(&status)
            && req.headers.to.tag().is_none()
        {
            // Dialog-creating responses echo Record-Route (RFC 3261 §12.1.1), so the caller's
            // route set matches ours and its ACK/BYE reach XCC through the same proxies.
            resp.headers
                .record_route
                .clone_from(&req.headers.record_route);
        }
        resp.headers.other.extend(extra);
        match self.endpoints[side.index()].send_response(now, key, resp.clone()) {
            Ok(()) => {
                *self.counters.sides[side.index()]
                    .responses_out
                    .entry((req.method.as_str().to_owned(), status))
                    .or_default() += 1;
                Some(resp)
            }
            Err(e) => {
                tracing::debug!(%side, status, error = %e, "response not sent");
                None
            }
        }
    }

    /// `Retry-After` with the configured delay.
    fn retry_after(&self) -> Header {
        header("Retry-After", &self.cfg.retry_after.to_string())
    }
}

/// The OPTIONS monitor of a side with an `options_interval`, first probe at `now`.
fn monitor_for(side: &SideConfig, now: Instant, rng: &mut StdRng) -> Option<OptionsMonitor> {
    let interval = side.options_interval?;
    let host = uri_target(side);
    Some(OptionsMonitor::new(
        now,
        MonitorConfig {
            target: format!("sip:{host}"),
            local: NameAddr {
                display: None,
                uri: format!("sip:xcc@{}", compose::uri_host(side.local.ip())),
                params: Vec::new(),
            },
            via: compose::via(side, rng),
            interval,
            down_after: side.down_after.max(1),
        },
        rng,
    ))
}

/// Request-URI host of probes and new calls towards a side.
fn uri_target(side: &SideConfig) -> String {
    if side.peer_host.is_empty() {
        format!(
            "{}:{}",
            compose::uri_host(side.peer.addr.ip()),
            side.peer.addr.port()
        )
    } else {
        side.peer_host.clone()
    }
}

/// An untyped header.
fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}
