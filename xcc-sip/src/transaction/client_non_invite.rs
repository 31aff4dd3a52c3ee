//! Non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6).

use std::collections::VecDeque;
use std::time::Instant;

use super::{Event, Retransmit, State, Timers, due, earliest};
use crate::message::{Message, Request, Response};

/// Sends BYE/OPTIONS/CANCEL/...: timer E retransmits (doubling, capped at T2; at T2 once a
/// provisional arrived), timer F gives up, timer K absorbs final retransmissions.
#[derive(Debug)]
pub struct NonInviteClient {
    /// The request, kept for retransmission.
    request: Request,
    state: State,
    timers: Timers,
    /// Reliable transports skip timer E and zero timer K.
    reliable: bool,
    /// Timer E: retransmit (Trying, Proceeding).
    timer_e: Option<Retransmit>,
    /// Timer F: give up (Trying, Proceeding).
    timer_f: Option<Instant>,
    /// Timer K: linger in Completed.
    timer_k: Option<Instant>,
    transmits: VecDeque<Message>,
    events: VecDeque<Event>,
}

impl NonInviteClient {
    /// Starts the transaction: the request is queued at once.
    pub fn new(now: Instant, request: Request, timers: Timers, reliable: bool) -> Self {
        let timer_e = (!reliable).then(|| Retransmit {
            at: now + timers.t1,
            interval: timers.t1,
        });
        let mut transmits = VecDeque::new();
        transmits.push_back(Message::Request(request.clone()));
        Self {
            request,
            state: State::Trying,
            timers,
            reliable,
            timer_e,
            timer_f: Some(now + timers.t1x64()),
            timer_k: None,
            transmits,
            events: VecDeque::new(),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Feeds a response matched to this transaction.
    pub fn handle_response(&mut self, now: Instant, resp: Response) {
        match (self.state, resp.status) {
            (State::Trying | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
                self.events.push_back(Event::Response(Box::new(resp)));
            }
            (State::Trying | State::Proceeding, _) => {
                self.state = State::Completed;
                self.timer_e = None;
                self.timer_f = None;
                let k = if self.reliable {
                    std::time::Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.timer_k = Some(now + k);
                self.events.push_back(Event::Response(Box::new(resp)));
            }
            // Completed absorbs retransmitted finals.
            _ => {}
        }
    }

    /// Fires whatever timers are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let active = matches!(self.state, State::Trying | State::Proceeding);
        if active && due(self.timer_f, now) {
            self.events.push_back(Event::Timeout);
            self.terminate();
            return;
        }
        if let Some(e) = self.timer_e
            && active
            && e.at <= now
        {
            let interval = if self.state == State::Proceeding {
                self.timers.t2
            } else {
                (e.interval * 2).min(self.timers.t2)
            };
            self.timer_e = Some(Retransmit {
                at: now + interval,
                interval,
            });
            self.transmits
                .push_back(Message::Request(self.request.clone()));
        }
        if self.state == State::Completed && due(self.timer_k, now) {
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
        earliest(&[self.timer_e.map(|e| e.at), self.timer_f, self.timer_k])
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.timer_e = None;
        self.timer_f = None;
        self.timer_k = None;
        self.events.push_back(Event::Terminated);
    }
}
