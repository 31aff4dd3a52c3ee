//! INVITE server transaction (RFC 3261 §17.2.1, Figure 7).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Event, Retransmit, State, Timers, due, earliest};
use crate::error::Error;
use crate::message::{Message, Method, Request, Response};

/// Answers an INVITE: sends 100 Trying at once, absorbs retransmitted INVITEs by resending the
/// last response, retransmits a non-2xx final on timer G (capped at T2) until the ACK or timer H.
/// After a 2xx it is Accepted (RFC 6026) until timer L: retransmitted INVITEs are absorbed and
/// further 2xx (the dialog layer's retransmissions, §13.3.1.4) are sent.
#[derive(Debug)]
pub struct InviteServer {
    /// The INVITE, used to build the 100 Trying.
    request: Request,
    state: State,
    timers: Timers,
    /// Reliable transports skip timer G and zero timer I.
    reliable: bool,
    /// Last response sent: what a retransmitted INVITE gets.
    last: Option<Response>,
    /// Timer G: retransmit the final (Completed).
    timer_g: Option<Retransmit>,
    /// Timer H: give up waiting for the ACK (Completed).
    timer_h: Option<Instant>,
    /// Timer I: absorb ACK retransmissions (Confirmed).
    timer_i: Option<Instant>,
    /// Timer L (RFC 6026): absorb INVITE retransmissions after a 2xx (Accepted).
    timer_l: Option<Instant>,
    transmits: VecDeque<Message>,
    events: VecDeque<Event>,
}

impl InviteServer {
    /// Starts the transaction for a received INVITE and queues 100 Trying (§17.2.1: the TU is
    /// not known to answer within 200 ms, so we never make the client retransmit).
    pub fn new(_now: Instant, request: Request, timers: Timers, reliable: bool) -> Self {
        let trying = Response::for_request(&request, 100, "Trying", None);
        let mut transmits = VecDeque::new();
        transmits.push_back(Message::Response(trying.clone()));
        Self {
            request,
            state: State::Proceeding,
            timers,
            reliable,
            last: Some(trying),
            timer_g: None,
            timer_h: None,
            timer_i: None,
            timer_l: None,
            transmits,
            events: VecDeque::new(),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The INVITE being answered.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// A retransmitted INVITE or the ACK for a non-2xx final.
    pub fn handle_request(&mut self, now: Instant, req: &Request) {
        match (&req.method, self.state) {
            (Method::Invite, State::Proceeding | State::Completed) => {
                if let Some(last) = &self.last {
                    self.transmits.push_back(Message::Response(last.clone()));
                }
            }
            (Method::Ack, State::Completed) => {
                self.state = State::Confirmed;
                self.timer_g = None;
                self.timer_h = None;
                let i = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.timer_i = Some(now + i);
            }
            // Confirmed absorbs ACK retransmissions; anything else is not ours.
            _ => {}
        }
    }

    /// Sends a response from the transaction user.
    pub fn send_response(&mut self, now: Instant, resp: Response) -> Result<(), Error> {
        if self.state == State::Accepted && (200..300).contains(&resp.status) {
            self.transmits.push_back(Message::Response(resp));
            return Ok(());
        }
        if self.state != State::Proceeding {
            return Err(Error::TransactionState {
                key: self.request.headers.call_id.clone(),
                reason: "INVITE server already sent a final response",
            });
        }
        self.transmits.push_back(Message::Response(resp.clone()));
        match resp.status {
            100..=199 => self.last = Some(resp),
            200..=299 => {
                self.state = State::Accepted;
                self.last = None;
                self.timer_l = Some(now + self.timers.t1x64());
            }
            _ => {
                self.state = State::Completed;
                self.last = Some(resp);
                self.timer_g = (!self.reliable).then(|| Retransmit {
                    at: now + self.timers.t1,
                    interval: self.timers.t1,
                });
                self.timer_h = Some(now + self.timers.t1x64());
            }
        }
        Ok(())
    }

    /// Fires whatever timers are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Completed && due(self.timer_h, now) {
            self.events.push_back(Event::Timeout);
            self.terminate();
            return;
        }
        if let Some(g) = self.timer_g
            && self.state == State::Completed
            && g.at <= now
        {
            let interval = (g.interval * 2).min(self.timers.t2);
            self.timer_g = Some(Retransmit {
                at: now + interval,
                interval,
            });
            if let Some(last) = &self.last {
                self.transmits.push_back(Message::Response(last.clone()));
            }
        }
        if (self.state == State::Confirmed && due(self.timer_i, now))
            || (self.state == State::Accepted && due(self.timer_l, now))
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
            self.timer_g.map(|g| g.at),
            self.timer_h,
            self.timer_i,
            self.timer_l,
        ])
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.timer_g = None;
        self.timer_h = None;
        self.timer_i = None;
        self.timer_l = None;
        self.events.push_back(Event::Terminated);
    }
}
