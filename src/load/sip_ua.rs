//! Sans-IO SIP user agents for `xcc-load sip`: a UAC playing the controlling server (INVITE with
//! an SDES-SRTP offer, ACK, BYE) and a UAS playing the PBX (answers with RTP), over UDP.
//!
//! Messages are xcc-sip's types, parsed and serialised by xcc-sip (no second parser here). Each
//! agent is one dialog: the driver feeds it what arrived (`handle_*`), the time (`handle_timeout`)
//! and sends what it queued (`poll_transmit`): no sockets, no clock, no randomness (identifiers
//! come in from the driver). Retransmission follows RFC 3261 over UDP: INVITE per Timer A (T1,
//! doubling) until a response or 64·T1 (Timer B); BYE per Timer E (doubling, capped at T2) until
//! a final response or 64·T1 (Timer F); the UAS's 200 per §13.3.1.4 (T1 doubling to T2) until the
//! ACK or 64·T1. Retransmitted requests and 2xx are answered again (the 200, the ACK).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use xcc_sip::{CSeq, Headers, Message, Method, NameAddr, Request, Response, Via};

/// RFC 3261 timer values the agents use.
#[derive(Debug, Clone, Copy)]
pub struct UaTimers {
    /// RTT estimate (500 ms by default).
    pub t1: Duration,
    /// Cap of non-INVITE and 2xx retransmission intervals (4 s by default).
    pub t2: Duration,
}

impl Default for UaTimers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
        }
    }
}

impl UaTimers {
    fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// Where a UAC's call stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UacState {
    /// INVITE sent, nothing heard (retransmitting).
    Calling,
    /// A provisional arrived; waiting for the final response.
    Proceeding,
    /// 2xx received and ACKed: media flows.
    Established,
    /// BYE sent, waiting for its final response.
    Terminating,
    /// The dialog ended normally (our BYE answered, or the peer's BYE received).
    Ended,
    /// Setup or teardown failed; the reason says how.
    Failed(String),
}

/// What a UAC needs to place one call.
#[derive(Debug, Clone)]
pub struct UacParams {
    /// Unique per call and run: Call-ID, tag and branch are derived from it.
    pub id: String,
    /// Our UDP address (Via, Contact).
    pub local: SocketAddr,
    /// XCC's server-side SIP address (every request goes there).
    pub remote: SocketAddr,
    /// Request-URI user part: XCC keeps it on the far INVITE, so the UAS can tell calls apart.
    pub user: String,
    /// SDP offer.
    pub offer: String,
    /// Retransmission timers.
    pub timers: UaTimers,
}

/// The controlling server's side of one call (UAC).
#[derive(Debug)]
pub struct Uac {
    params: UacParams,
    state: UacState,
    invite: Request,
    started: Instant,
    setup: Option<Duration>,
    answer: Option<String>,
    /// The ACK for the 2xx, kept to answer its retransmissions.
    ack: Option<Request>,
    /// The BYE while it is outstanding.
    bye: Option<Request>,
    /// Remote target (Contact of the 2xx) and route set (Record-Route reversed).
    target: Option<String>,
    route: Vec<NameAddr>,
    /// To with the peer's tag, once answered.
    to: Option<NameAddr>,
    next_cseq: u32,
    branches: u32,
    retransmit_at: Option<Instant>,
    interval: Duration,
    deadline: Option<Instant>,
    retransmissions: u32,
    out: VecDeque<Vec<u8>>,
}

impl Uac {
    /// Builds the INVITE and queues it.
    pub fn new(now: Instant, params: UacParams) -> Self {
        let from = NameAddr {
            display: None,
            uri: format!("sip:xcc-load@{}", params.local),
            params: Vec::new(),
        };
        let mut from = from;
        from.set_tag(&format!("t{}", params.id));
        let to = NameAddr {
            display: None,
            uri: format!("sip:{}@{}", params.user, params.remote),
            params: Vec::new(),
        };
        let headers = Headers {
            via: vec![via(params.local, &format!("z9hG4bK{}-0", params.id))],
            from,
            to,
            call_id: format!("{}@xcc-load", params.id),
            cseq: CSeq {
                seq: 1,
                method: "INVITE".into(),
            },
            max_forwards: Some(70),
            contact: vec![contact(params.local)],
            route: Vec::new(),
            record_route: Vec::new(),
            content_type: Some("application/sdp".into()),
            other: Vec::new(),
        };
        let invite = Request {
            method: Method::Invite,
            uri: format!("sip:{}@{}", params.user, params.remote),
            headers,
            body: params.offer.clone().into_bytes().into(),
        };
        let t1 = params.timers.t1;
        let deadline = now + params.timers.t1x64();
        let mut uac = Self {
            params,
            state: UacState::Calling,
            started: now,
            setup: None,
            answer: None,
            ack: None,
            bye: None,
            target: None,
            route: Vec::new(),
            to: None,
            next_cseq: 2,
            branches: 1,
            retransmit_at: Some(now + t1),
            interval: t1,
            deadline: Some(deadline),
            retransmissions: 0,
            out: VecDeque::new(),
            invite,
        };
        uac.out.push_back(uac.invite.to_bytes());
        uac
    }

    /// The call's state.
    pub fn state(&self) -> &UacState {
        &self.state
    }

    /// The Call-ID the driver routes responses by.
    pub fn call_id(&self) -> &str {
        &self.invite.headers.call_id
    }

    /// INVITE -> first 2xx, once answered.
    pub fn setup_time(&self) -> Option<Duration> {
        self.setup
    }

    /// XCC's SDP answer, once answered.
    pub fn answer(&self) -> Option<&str> {
        self.answer.as_deref()
    }

    /// Requests sent again after a timer fired (INVITE and BYE).
    pub fn retransmissions(&self) -> u32 {
        self.retransmissions
    }

    /// Feeds a parsed message addressed to this call (same Call-ID).
    pub fn handle(&mut self, now: Instant, msg: Message) {
        match msg {
            Message::Response(r) => self.handle_response(now, r),
            Message::Request(r) => self.handle_request(r),
        }
    }

    fn handle_response(&mut self, now: Instant, resp: Response) {
        let for_invite = resp.headers.cseq.method == "INVITE";
        let for_bye = self.bye.as_ref().is_some_and(|b| {
            resp.headers.cseq.method == "BYE" && resp.headers.cseq.seq == b.headers.cseq.seq
        });
        match (for_invite, resp.status) {
            (true, 100..=199) if self.state == UacState::Calling => {
                // Timer A stops; Timer B keeps bounding the wait for a final response.
                self.state = UacState::Proceeding;
                self.retransmit_at = None;
            }
            (true, 200..=299) => match self.state {
                UacState::Calling | UacState::Proceeding => {
                    self.setup = Some(now.saturating_duration_since(self.started));
                    self.answer = Some(String::from_utf8_lossy(&resp.body).into_owned());
                    self.target = resp.headers.contact.first().map(|c| c.uri.clone());
                    self.route = resp.headers.record_route.iter().rev().cloned().collect();
                    self.to = Some(resp.headers.to.clone());
                    let ack = self.in_dialog(Method::Ack, self.invite.headers.cseq.seq);
                    self.out.push_back(ack.to_bytes());
                    self.ack = Some(ack);
                    self.state = UacState::Established;
                    self.retransmit_at = None;
                    self.deadline = None;
                }
                // A retransmitted 2xx: its ACK was lost; send it again (§13.2.2.4).
                _ => {
                    if let Some(ack) = &self.ack {
                        self.out.push_back(ack.to_bytes());
                    }
                }
            },
            (true, status) if status >= 300 => {
                if matches!(self.state, UacState::Calling | UacState::Proceeding) {
                    self.out.push_back(self.non_2xx_ack(&resp).to_bytes());
                    self.state =
                        UacState::Failed(format!("INVITE answered {status} {}", resp.reason));
                    self.retransmit_at = None;
                    self.deadline = None;
                } else if self.state.is_failed() {
                    // Retransmitted final: ACK it again (the server transaction absorbs it).
                    self.out.push_back(self.non_2xx_ack(&resp).to_bytes());
                }
            }
            (false, 200..=699) if for_bye && self.state == UacState::Terminating => {
                self.state = if resp.status < 300 {
                    UacState::Ended
                } else {
                    // The dialog ends anyway (§15.1.1); say why it was not a clean 200.
                    UacState::Failed(format!("BYE answered {} {}", resp.status, resp.reason))
                };
                self.bye = None;
                self.retransmit_at = None;
                self.deadline = None;
            }
            _ => {}
        }
    }

    fn handle_request(&mut self, req: Request) {
        let status = match req.method {
            Method::Ack => return,
            Method::Bye => {
                if matches!(self.state, UacState::Established | UacState::Terminating) {
                    self.state = UacState::Ended;
                    self.bye = None;
                    self.retransmit_at = None;
                    self.deadline = None;
                }
                (200, "OK")
            }
            Method::Options => (200, "OK"),
            _ => (501, "Not Implemented"),
        };
        let resp = Response::for_request(&req, status.0, status.1, None);
        self.out.push_back(resp.to_bytes());
    }

    /// Ends an established call with BYE (Timer E retransmission, Timer F bound).
    pub fn hang_up(&mut self, now: Instant) {
        if self.state != UacState::Established {
            return;
        }
        let seq = self.next_cseq;
        self.next_cseq += 1;
        let bye = self.in_dialog(Method::Bye, seq);
        self.out.push_back(bye.to_bytes());
        self.bye = Some(bye);
        self.state = UacState::Terminating;
        self.interval = self.params.timers.t1;
        self.retransmit_at = Some(now + self.interval);
        self.deadline = Some(now + self.params.timers.t1x64());
    }

    /// Retransmits or gives up as the timers say.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            self.state = UacState::Failed(match self.state {
                UacState::Terminating => "no final response to BYE within 64*T1 (Timer F)".into(),
                _ => "no final response to INVITE within 64*T1 (Timer B)".into(),
            });
            self.retransmit_at = None;
            self.deadline = None;
            self.bye = None;
            return;
        }
        let Some(at) = self.retransmit_at.filter(|&at| now >= at) else {
            return;
        };
        let timers = self.params.timers;
        let bytes = match self.state {
            UacState::Calling => {
                self.interval *= 2;
                self.invite.to_bytes()
            }
            UacState::Terminating => match &self.bye {
                Some(bye) => {
                    self.interval = (self.interval * 2).min(timers.t2);
                    bye.to_bytes()
                }
                None => return,
            },
            _ => {
                self.retransmit_at = None;
                return;
            }
        };
        self.out.push_back(bytes);
        self.retransmissions += 1;
        self.retransmit_at = Some(at + self.interval);
    }

    /// Next datagram to send to XCC.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// When `handle_timeout` must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.retransmit_at, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// ACK or BYE within the dialog: remote target, route set, the peer's tag, a new branch.
    fn in_dialog(&mut self, method: Method, seq: u32) -> Request {
        // ACK for a 2xx is its own transaction (new branch); so is BYE.
        let branch = format!("z9hG4bK{}-{}", self.params.id, self.branches);
        self.branches += 1;
        let mut headers = self.invite.headers.clone();
        headers.via = vec![via(self.params.local, &branch)];
        headers.to = self.to.clone().unwrap_or_else(|| headers.to.clone());
        headers.cseq = CSeq {
            seq,
            method: method.as_str().to_owned(),
        };
        headers.route = self.route.clone();
        headers.content_type = None;
        Request {
            method,
            uri: self
                .target
                .clone()
                .unwrap_or_else(|| self.invite.uri.clone()),
            headers,
            body: Vec::new().into(),
        }
    }

    /// ACK for a non-2xx final: part of the INVITE transaction (same branch and Request-URI,
    /// To from the response), §17.1.1.3.
    fn non_2xx_ack(&self, resp: &Response) -> Request {
        let mut headers = self.invite.headers.clone();
        headers.to = resp.headers.to.clone();
        headers.cseq = CSeq {
            seq: self.invite.headers.cseq.seq,
            method: "ACK".into(),
        };
        headers.content_type = None;
        Request {
            method: Method::Ack,
            uri: self.invite.uri.clone(),
            headers,
            body: Vec::new().into(),
        }
    }
}

impl UacState {
    fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }
}

/// Where a UAS's call stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UasState {
    /// 200 sent, retransmitted until the ACK.
    Answered,
    /// ACK received: media flows.
    Confirmed,
    /// BYE received and answered.
    Ended,
    /// No ACK within 64·T1.
    NoAck,
}

/// The PBX's side of one call (UAS): answers an INVITE from XCC's trunk with 200 and RTP.
#[derive(Debug)]
pub struct Uas {
    state: UasState,
    invite_cseq: u32,
    ok: Response,
    offer: String,
    timers: UaTimers,
    retransmit_at: Option<Instant>,
    interval: Duration,
    deadline: Option<Instant>,
    out: VecDeque<Vec<u8>>,
}

impl Uas {
    /// Answers `invite` with 200 carrying `answer_sdp` and queues it; `tag` is our To tag.
    pub fn answer(
        now: Instant,
        invite: &Request,
        answer_sdp: String,
        local: SocketAddr,
        tag: &str,
        timers: UaTimers,
    ) -> Self {
        let mut ok = Response::for_request(invite, 200, "OK", Some(tag));
        ok.headers.contact = vec![contact(local)];
        // §12.1.1: a dialog-creating response echoes Record-Route.
        ok.headers.record_route = invite.headers.record_route.clone();
        ok.headers.content_type = Some("application/sdp".into());
        ok.body = answer_sdp.into_bytes().into();
        let mut uas = Self {
            state: UasState::Answered,
            invite_cseq: invite.headers.cseq.seq,
            offer: String::from_utf8_lossy(&invite.body).into_owned(),
            timers,
            retransmit_at: Some(now + timers.t1),
            interval: timers.t1,
            deadline: Some(now + timers.t1x64()),
            out: VecDeque::new(),
            ok,
        };
        uas.out.push_back(uas.ok.to_bytes());
        uas
    }

    /// The call's state.
    pub fn state(&self) -> &UasState {
        &self.state
    }

    /// XCC's SDP offer (its PBX-leg address, plain RTP).
    pub fn offer(&self) -> &str {
        &self.offer
    }

    /// Feeds a request of this dialog (same Call-ID); responses are queued for its source.
    pub fn handle_request(&mut self, req: &Request) {
        match req.method {
            Method::Invite if req.headers.cseq.seq == self.invite_cseq => {
                // A retransmitted INVITE: our 200 was lost or late.
                self.out.push_back(self.ok.to_bytes());
            }
            Method::Ack => {
                if self.state == UasState::Answered {
                    self.state = UasState::Confirmed;
                    self.retransmit_at = None;
                    self.deadline = None;
                }
            }
            Method::Bye => {
                self.state = UasState::Ended;
                self.retransmit_at = None;
                self.deadline = None;
                self.out
                    .push_back(Response::for_request(req, 200, "OK", None).to_bytes());
            }
            Method::Options => self
                .out
                .push_back(Response::for_request(req, 200, "OK", None).to_bytes()),
            _ => self
                .out
                .push_back(Response::for_request(req, 501, "Not Implemented", None).to_bytes()),
        }
    }

    /// Retransmits the 200 until the ACK (T1 doubling, capped at T2), gives up after 64·T1.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != UasState::Answered {
            return;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            self.state = UasState::NoAck;
            self.retransmit_at = None;
            self.deadline = None;
            return;
        }
        if let Some(at) = self.retransmit_at.filter(|&at| now >= at) {
            self.out.push_back(self.ok.to_bytes());
            self.interval = (self.interval * 2).min(self.timers.t2);
            self.retransmit_at = Some(at + self.interval);
        }
    }

    /// Next datagram to send back to XCC's trunk.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// When `handle_timeout` must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.retransmit_at, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A response to a request outside any dialog we know (OPTIONS 200, anything else 481).
pub fn stateless_reply(req: &Request) -> Option<Vec<u8>> {
    let (status, reason) = match req.method {
        Method::Ack => return None,
        Method::Options => (200, "OK"),
        _ => (481, "Call/Transaction Does Not Exist"),
    };
    Some(Response::for_request(req, status, reason, None).to_bytes())
}

fn via(local: SocketAddr, branch: &str) -> Via {
    // The text is ours and well-formed; `Via::parse` is xcc-sip's, so serialising stays its job.
    let text = format!("SIP/2.0/UDP {local};branch={branch};rport");
    Via::parse(&text).unwrap_or_else(|_| Via {
        transport: "UDP".into(),
        host: local.ip().to_string(),
        port: Some(local.port()),
        params: vec![("branch".into(), Some(branch.into()))],
    })
}

fn contact(local: SocketAddr) -> NameAddr {
    NameAddr {
        display: None,
        uri: format!("sip:xcc-load@{local}"),
        params: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UAC: &str = "127.0.0.1:25810";
    const XCC: &str = "127.0.0.1:25811";

    fn params() -> UacParams {
        UacParams {
            id: "run1-7".into(),
            local: UAC.parse().unwrap(),
            remote: XCC.parse().unwrap(),
            user: "load7".into(),
            offer: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                    m=audio 4000 RTP/SAVP 0\r\n"
                .into(),
            timers: UaTimers::default(),
        }
    }

    /// Parses what an agent sent, as the other side would.
    fn wire(bytes: Vec<u8>) -> Message {
        Message::parse(&bytes).expect("our own output parses")
    }

    fn request(bytes: Vec<u8>) -> Request {
        match wire(bytes) {
            Message::Request(r) => r,
            Message::Response(r) => panic!("expected a request, got {}", r.status),
        }
    }

    fn answer(now: Instant, invite: &Request) -> Uas {
        Uas::answer(
            now,
            invite,
            "v=0\r\nm=audio 5000 RTP/AVP 0\r\n".into(),
            XCC.parse().unwrap(),
            "pbx1",
            UaTimers::default(),
        )
    }

    #[test]
    fn call_is_set_up_acked_and_ended_by_bye() {
        let t0 = Instant::now();
        let mut uac = Uac::new(t0, params());
        let invite = request(uac.poll_transmit().unwrap());
        assert_eq!(invite.method, Method::Invite);
        assert_eq!(invite.uri, format!("sip:load7@{XCC}"));
        assert!(
            invite
                .headers
                .top_via()
                .unwrap()
                .branch()
                .unwrap()
                .starts_with("z9hG4bK")
        );
        assert!(String::from_utf8_lossy(&invite.body).contains("RTP/SAVP"));

        let t1 = t0 + Duration::from_millis(30);
        let mut uas = answer(t1, &invite);
        assert!(uas.offer().contains("RTP/SAVP"));
        uac.handle(t1, wire(uas.poll_transmit().unwrap()));
        assert_eq!(uac.state(), &UacState::Established);
        assert_eq!(uac.setup_time(), Some(Duration::from_millis(30)));
        assert!(uac.answer().unwrap().contains("RTP/AVP"));

        let ack = request(uac.poll_transmit().unwrap());
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.headers.cseq.seq, 1);
        assert_eq!(
            ack.headers.to.tag(),
            Some("pbx1"),
            "ACK carries the answerer's tag"
        );
        assert_eq!(
            ack.uri,
            format!("sip:xcc-load@{XCC}"),
            "sent to the remote target"
        );
        assert_ne!(
            ack.headers.top_via().unwrap().branch(),
            invite.headers.top_via().unwrap().branch(),
            "the ACK for a 2xx is a new transaction"
        );
        uas.handle_request(&ack);
        assert_eq!(uas.state(), &UasState::Confirmed);
        assert_eq!(
            uas.poll_timeout(),
            None,
            "the ACK stops the 200's retransmission"
        );

        let t2 = t1 + Duration::from_secs(5);
        uac.hang_up(t2);
        let bye = request(uac.poll_transmit().unwrap());
        assert_eq!((bye.method.clone(), bye.headers.cseq.seq), (Method::Bye, 2));
        uas.handle_request(&bye);
        assert_eq!(uas.state(), &UasState::Ended);
        uac.handle(t2, wire(uas.poll_transmit().unwrap()));
        assert_eq!(uac.state(), &UacState::Ended);
        assert_eq!(uac.poll_timeout(), None);
        assert_eq!(uac.retransmissions(), 0);
    }

    #[test]
    fn lost_invites_are_resent_per_timer_a_and_the_call_still_sets_up() {
        let t0 = Instant::now();
        let mut uac = Uac::new(t0, params());
        let first = uac.poll_transmit().unwrap(); // lost
        let ms = Duration::from_millis;
        assert_eq!(uac.poll_timeout(), Some(t0 + ms(500)));
        uac.handle_timeout(t0 + ms(499));
        assert!(uac.poll_transmit().is_none(), "not before T1");
        uac.handle_timeout(t0 + ms(500));
        let second = uac.poll_transmit().unwrap(); // lost too
        assert_eq!(second, first, "a retransmission is the same request");
        assert_eq!(uac.poll_timeout(), Some(t0 + ms(1500)), "interval doubles");
        uac.handle_timeout(t0 + ms(1500));
        let third = request(uac.poll_transmit().unwrap());
        assert_eq!(uac.poll_timeout(), Some(t0 + ms(3500)));
        let mut uas = answer(t0 + ms(1510), &third);
        uac.handle(t0 + ms(1520), wire(uas.poll_transmit().unwrap()));
        assert_eq!(uac.state(), &UacState::Established);
        assert_eq!(
            uac.setup_time(),
            Some(ms(1520)),
            "setup counts from the first INVITE"
        );
        assert_eq!(uac.retransmissions(), 2);
    }

    #[test]
    fn lost_200_is_resent_by_the_uas_and_reacked_by_the_uac() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut uac = Uac::new(t0, params());
        let invite = request(uac.poll_transmit().unwrap());
        let mut uas = answer(t0, &invite);
        let _lost = uas.poll_transmit().unwrap();
        // The UAC retransmits its INVITE; the UAS answers it with the same 200.
        uac.handle_timeout(t0 + ms(500));
        uas.handle_request(&request(uac.poll_transmit().unwrap()));
        let again = uas.poll_transmit().unwrap();
        uac.handle(t0 + ms(501), wire(again.clone()));
        let ack = request(uac.poll_transmit().unwrap());
        // The ACK is lost too: the UAS's own Timer G-like retransmission fires, the UAC re-ACKs.
        uas.handle_timeout(t0 + ms(500));
        let resent = uas.poll_transmit().unwrap();
        assert_eq!(resent, again);
        assert_eq!(uas.poll_timeout(), Some(t0 + ms(1500)));
        uac.handle(t0 + ms(502), wire(resent));
        let reack = request(uac.poll_transmit().unwrap());
        assert_eq!(reack, ack, "the same ACK again");
        uas.handle_request(&reack);
        assert_eq!(uas.state(), &UasState::Confirmed);
        assert_eq!(uac.state(), &UacState::Established);
    }

    #[test]
    fn lost_bye_is_resent_per_timer_e_capped_at_t2() {
        let t0 = Instant::now();
        let mut uac = Uac::new(t0, params());
        let invite = request(uac.poll_transmit().unwrap());
        let mut uas = answer(t0, &invite);
        uac.handle(t0, wire(uas.poll_transmit().unwrap()));
        let _ack = uac.poll_transmit().unwrap();
        uac.hang_up(t0);
        let bye = uac.poll_transmit().unwrap();
        let mut at = t0;
        let mut gaps = Vec::new();
        for _ in 0..6 {
            let next = uac.poll_timeout().unwrap();
            gaps.push((next - at).as_millis());
            at = next;
            uac.handle_timeout(at);
            assert_eq!(uac.poll_transmit().unwrap(), bye);
        }
        assert_eq!(gaps, [500, 1000, 2000, 4000, 4000, 4000]);
        uas.handle_request(&request(bye));
        uac.handle(at, wire(uas.poll_transmit().unwrap()));
        assert_eq!(uac.state(), &UacState::Ended);
    }

    #[test]
    fn unanswered_invite_fails_after_64_t1() {
        let t0 = Instant::now();
        let mut uac = Uac::new(t0, params());
        let mut sent = 0;
        while let Some(at) = uac.poll_timeout() {
            assert!(at <= t0 + Duration::from_secs(32), "bounded by Timer B");
            uac.handle_timeout(at);
            while uac.poll_transmit().is_some() {
                sent += 1;
            }
        }
        // The INVITE, then retransmissions at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s.
        assert_eq!(sent, 7);
        assert_eq!(
            uac.retransmissions(),
            6,
            "six retransmissions before Timer B"
        );
        assert!(matches!(uac.state(), UacState::Failed(r) if r.contains("Timer B")));
    }

    #[test]
    fn rejected_invite_is_acked_on_its_transaction_and_fails() {
        let t0 = Instant::now();
        let mut uac = Uac::new(t0, params());
        let invite = request(uac.poll_transmit().unwrap());
        let busy = Response::for_request(&invite, 503, "Service Unavailable", Some("x"));
        uac.handle(t0, Message::Response(busy));
        let ack = request(uac.poll_transmit().unwrap());
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(
            ack.headers.top_via().unwrap().branch(),
            invite.headers.top_via().unwrap().branch(),
            "ACK for a non-2xx stays in the INVITE transaction"
        );
        assert!(matches!(uac.state(), UacState::Failed(r) if r.contains("503")));
        assert_eq!(uac.poll_timeout(), None);
    }

    #[test]
    fn bye_from_xcc_ends_the_call_with_200() {
        let t0 = Instant::now();
        let mut uac = Uac::new(t0, params());
        let invite = request(uac.poll_transmit().unwrap());
        let mut uas = answer(t0, &invite);
        uac.handle(t0, wire(uas.poll_transmit().unwrap()));
        let ack = request(uac.poll_transmit().unwrap());
        // XCC hangs up (media timeout, say): a BYE in the dialog, toward the UAC.
        let mut bye = ack.clone();
        bye.method = Method::Bye;
        bye.headers.cseq = CSeq {
            seq: 9,
            method: "BYE".into(),
        };
        uac.handle(t0, Message::Request(bye));
        match wire(uac.poll_transmit().unwrap()) {
            Message::Response(r) => assert_eq!((r.status, r.headers.cseq.seq), (200, 9)),
            Message::Request(_) => panic!("expected 200"),
        }
        assert_eq!(uac.state(), &UacState::Ended);
        uac.hang_up(t0);
        assert!(
            uac.poll_transmit().is_none(),
            "no BYE after the dialog ended"
        );
    }

    #[test]
    fn options_outside_a_dialog_get_200_and_strays_481() {
        let t0 = Instant::now();
        let mut uac = Uac::new(t0, params());
        let mut options = request(uac.poll_transmit().unwrap());
        options.method = Method::Options;
        options.headers.cseq.method = "OPTIONS".into();
        let reply = |r: &Request| match wire(stateless_reply(r).unwrap()) {
            Message::Response(r) => r.status,
            Message::Request(_) => 0,
        };
        assert_eq!(reply(&options), 200);
        let mut bye = options.clone();
        bye.method = Method::Bye;
        bye.headers.cseq.method = "BYE".into();
        assert_eq!(reply(&bye), 481);
        let mut ack = options;
        ack.method = Method::Ack;
        ack.headers.cseq.method = "ACK".into();
        assert!(stateless_reply(&ack).is_none(), "ACK is never answered");
    }
}
