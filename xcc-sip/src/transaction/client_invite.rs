//! INVITE client transaction (RFC 3261 §17.1.1, Figure 5).

use std::collections::VecDeque;
use std::time::Instant;

use super::{Event, Retransmit, State, Timers, due, earliest};
use crate::message::{Headers, Message, Method, Request, Response};

/// Sends an INVITE, retransmits it on timer A (doubling, no cap) until a response or timer B,
/// and acknowledges non-2xx finals itself (§17.1.1.3). A 2xx moves it to Accepted (RFC 6026):
/// every 2xx, first or retransmitted, is passed up for the dialog layer to ACK, until timer M.
#[derive(Debug)]
pub struct InviteClient {
    /// The INVITE, kept for retransmission and to build the ACK.
    request: Request,
    state: State,
    timers: Timers,
    /// Reliable transports skip timer A and zero timer D.
    reliable: bool,
    /// Timer A: retransmit the INVITE (Calling only).
    timer_a: Option<Retransmit>,
    /// Timer B: give up (Calling only).
    timer_b: Option<Instant>,
    /// Timer D: absorb final-response retransmissions (Completed).
    timer_d: Option<Instant>,
    /// Timer M (RFC 6026): keep passing 2xx retransmissions up (Accepted).
    timer_m: Option<Instant>,
    /// Timer C: bound on Proceeding, restarted by every provisional.
    timer_c: Option<Instant>,
    /// The ACK for a non-2xx final, resent for every retransmitted final.
    ack: Option<Request>,
    transmits: VecDeque<Message>,
    events: VecDeque<Event>,
}

impl InviteClient {
    /// Starts the transaction: the INVITE is queued for sending at once.
    pub fn new(now: Instant, request: Request, timers: Timers, reliable: bool) -> Self {
        let timer_a = (!reliable).then(|| Retransmit {
            at: now + timers.t1,
            interval: timers.t1,
        });
        let mut transmits = VecDeque::new();
        transmits.push_back(Message::Request(request.clone()));
        Self {
            request,
            state: State::Calling,
            timers,
            reliable,
            timer_a,
            timer_b: Some(now + timers.t1x64()),
            timer_d: None,
            timer_m: None,
            timer_c: None,
            ack: None,
            transmits,
            events: VecDeque::new(),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The INVITE this transaction sends (a CANCEL is built from it).
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The CANCEL for this INVITE (RFC 3261 §9.1): same Request-URI, Call-ID, From, To, top Via
    /// (so the branch matches at the server) and Route, CSeq number with method CANCEL. Send it as
    /// its own non-INVITE transaction, and only once a provisional arrived (state Proceeding).
    pub fn cancel(&self) -> Option<Request> {
        if self.state != State::Proceeding {
            return None;
        }
        Some(self.build_ack_like(&self.request.headers.to, Method::Cancel))
    }

    /// Feeds a response matched to this transaction.
    pub fn handle_response(&mut self, now: Instant, resp: Response) {
        match (self.state, resp.status) {
            (State::Calling | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                self.timer_a = None;
                self.timer_b = None;
                self.timer_c = Some(now + self.timers.c);
                self.events.push_back(Event::Response(Box::new(resp)));
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                self.timer_a = None;
                self.timer_b = None;
                self.timer_c = None;
                self.timer_m = Some(now + self.timers.t1x64());
                self.events.push_back(Event::Response(Box::new(resp)));
            }
            (State::Accepted, 200..=299) => {
                self.events.push_back(Event::Response(Box::new(resp)));
            }
            (State::Calling | State::Proceeding, _) => {
                let ack = self.build_ack(&resp);
                self.transmits.push_back(Message::Request(ack.clone()));
                self.ack = Some(ack);
                self.state = State::Completed;
                self.timer_a = None;
                self.timer_b = None;
                self.timer_c = None;
                self.timer_d = Some(now + self.timers.timer_d(self.reliable));
                self.events.push_back(Event::Response(Box::new(resp)));
            }
            (State::Completed, 300..=699) => {
                if let Some(ack) = &self.ack {
                    self.transmits.push_back(Message::Request(ack.clone()));
                }
            }
            // Late provisionals or 2xx after a non-2xx final, or anything once terminated.
            _ => {}
        }
    }

    /// Fires whatever timers are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let gave_up = (self.state == State::Calling && due(self.timer_b, now))
            || (self.state == State::Proceeding && due(self.timer_c, now));
        if gave_up {
            self.events.push_back(Event::Timeout);
            self.terminate();
            return;
        }
        if let Some(a) = self.timer_a
            && self.state == State::Calling
            && a.at <= now
        {
            // Timer A doubles without the T2 cap (§17.1.1.2); timer B bounds it.
            let interval = a.interval * 2;
            self.timer_a = Some(Retransmit {
                at: now + interval,
                interval,
            });
            self.transmits
                .push_back(Message::Request(self.request.clone()));
        }
        if (self.state == State::Completed && due(self.timer_d, now))
            || (self.state == State::Accepted && due(self.timer_m, now))
        {
            self.terminate();
        }
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmits.pop_front()
    }

    /// Next event for the user.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(&[
            self.timer_a.map(|a| a.at),
            self.timer_b,
            self.timer_d,
            self.timer_m,
            self.timer_c,
        ])
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.timer_a = None;
        self.timer_b = None;
        self.timer_d = None;
        self.timer_m = None;
        self.timer_c = None;
        self.events.push_back(Event::Terminated);
    }

    /// §17.1.1.3: same Request-URI, Call-ID, From, top Via and CSeq number as the INVITE, To from
    /// the response (with its tag), the INVITE's Route set.
    fn build_ack(&self, resp: &Response) -> Request {
        self.build_ack_like(&resp.headers.to, Method::Ack)
    }

    /// ACK and CANCEL share their shape; only To and the method differ.
    fn build_ack_like(&self, to: &crate::header::NameAddr, method: Method) -> Request {
        let h = &self.request.headers;
        Request {
            method: method.clone(),
            uri: self.request.uri.clone(),
            headers: Headers {
                via: h.via.iter().take(1).cloned().collect(),
                from: h.from.clone(),
                to: to.clone(),
                call_id: h.call_id.clone(),
                cseq: crate::header::CSeq {
                    seq: h.cseq.seq,
                    method: method.as_str().to_owned(),
                },
                max_forwards: Some(70),
                contact: Vec::new(),
                route: h.route.clone(),
                record_route: Vec::new(),
                content_type: None,
                other: Vec::new(),
            },
            body: bytes::Bytes::new(),
        }
    }
}
