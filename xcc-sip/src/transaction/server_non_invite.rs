//! Non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Event, State, Timers, due, earliest};
use crate::error::Error;
use crate::message::{Message, Request, Response};

/// Answers BYE/OPTIONS/CANCEL/...: retransmitted requests are absorbed in Trying and answered
/// with the last response afterwards; timer J keeps the final around for retransmissions.
#[derive(Debug)]
pub struct NonInviteServer {
    /// The request, for the error key.
    request: Request,
    state: State,
    timers: Timers,
    /// Reliable transports zero timer J.
    reliable: bool,
    /// Last response sent.
    last: Option<Response>,
    /// Timer J: linger in Completed.
    timer_j: Option<Instant>,
    transmits: VecDeque<Message>,
    events: VecDeque<Event>,
}

impl NonInviteServer {
    /// Starts the transaction for a received request.
    pub fn new(_now: Instant, request: Request, timers: Timers, reliable: bool) -> Self {
        Self {
            request,
            state: State::Trying,
            timers,
            reliable,
            last: None,
            timer_j: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// A retransmission of the request.
    pub fn handle_request(&mut self, _now: Instant, _req: &Request) {
        if matches!(self.state, State::Proceeding | State::Completed)
            && let Some(last) = &self.last
        {
            self.transmits.push_back(Message::Response(last.clone()));
        }
    }

    /// Sends a response from the transaction user.
    pub fn send_response(&mut self, now: Instant, resp: Response) -> Result<(), Error> {
        if !matches!(self.state, State::Trying | State::Proceeding) {
            return Err(Error::TransactionState {
                key: self.request.headers.call_id.clone(),
                reason: "non-INVITE server already sent a final response",
            });
        }
        self.transmits.push_back(Message::Response(resp.clone()));
        if resp.status < 200 {
            self.state = State::Proceeding;
        } else {
            self.state = State::Completed;
            let j = if self.reliable {
                Duration::ZERO
            } else {
                self.timers.t1x64()
            };
            self.timer_j = Some(now + j);
        }
        self.last = Some(resp);
        Ok(())
    }

    /// Fires whatever timers are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Completed && due(self.timer_j, now) {
            self.state = State::Terminated;
            self.timer_j = None;
            self.events.push_back(Event::Terminated);
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
        earliest(&[self.timer_j])
    }
}
