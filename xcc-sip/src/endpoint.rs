//! The transaction layer: owns every transaction, matches what arrives to them and surfaces what
//! belongs to none (new requests, ACK for 2xx, stray 2xx retransmissions) to the dialog layer.
//!
//! Sans-IO like the transactions it owns: feed datagrams/frames with [`Endpoint::handle_message`]
//! or [`Endpoint::handle_bytes`], the clock with [`Endpoint::handle_timeout`], drain
//! [`Endpoint::poll_transmit`] and [`Endpoint::poll_event`], sleep until [`Endpoint::poll_timeout`].

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use crate::error::{Error, ParseError};
use crate::message::{Message, Method, Request, Response};
use crate::transaction::{
    Event, InviteClient, InviteServer, NonInviteClient, NonInviteServer, State, Timers,
    TransactionKey,
};
use crate::transport::{ResponseTarget, Transport, response_target, stamp_received};

/// A remote transport address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Remote IP and port.
    pub addr: SocketAddr,
    /// Transport the message came on / goes by (TCP: the connection to that address).
    pub transport: Transport,
}

/// Where a transmit goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A known address (and, for TCP, the connection to it).
    Peer(Peer),
    /// A sent-by host name the driver must resolve (RFC 3263 §6) before sending over UDP.
    Resolve {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub target: Target,
    /// The serialised message.
    pub bytes: Vec<u8>,
}

/// What the dialog layer must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEvent {
    /// A new request; a server transaction now exists under `key`: answer with
    /// [`Endpoint::send_response`]. CANCEL never arrives here (see [`EndpointEvent::Cancel`]).
    Request {
        /// Server transaction key.
        key: TransactionKey,
        /// The request, top Via stamped with received/rport.
        request: Box<Request>,
        /// Where it came from.
        source: Peer,
    },
    /// A CANCEL for an INVITE still in Proceeding (RFC 3261 §9.2). The endpoint has already
    /// answered the CANCEL with 200; the user now answers the INVITE under `invite` with 487.
    /// A CANCEL for an unknown INVITE is answered 481 and one arriving after the final response
    /// 200, both without an event.
    Cancel {
        /// The INVITE server transaction to end with 487.
        invite: TransactionKey,
        /// The CANCEL.
        request: Box<Request>,
    },
    /// An ACK that matched no transaction: the ACK for a 2xx, which belongs to the dialog.
    Ack {
        /// The ACK.
        request: Box<Request>,
        /// Where it came from.
        source: Peer,
    },
    /// A response from a client transaction.
    Response {
        /// Client transaction key.
        key: TransactionKey,
        /// The response.
        response: Box<Response>,
    },
    /// A response that matched no transaction (e.g. a 2xx retransmitted after timer M); the
    /// dialog layer may still re-send its ACK.
    StrayResponse {
        /// The response.
        response: Box<Response>,
        /// Where it came from.
        source: Peer,
    },
    /// Client: timer B/F fired (act as if 408 arrived). Server: timer H fired (no ACK).
    Timeout {
        /// The transaction.
        key: TransactionKey,
    },
    /// The transport could not reach the peer (TCP connect refused or reset, RFC 3261
    /// §17.1.4); the client transaction is gone. Act as if 503 arrived.
    TransportError {
        /// The transaction.
        key: TransactionKey,
    },
}

/// One of the four machines.
#[derive(Debug)]
enum Tsx {
    InviteClient(InviteClient),
    NonInviteClient(NonInviteClient),
    InviteServer(InviteServer),
    NonInviteServer(NonInviteServer),
}

macro_rules! each {
    ($tsx:expr, $t:ident => $e:expr) => {
        match $tsx {
            Tsx::InviteClient($t) => $e,
            Tsx::NonInviteClient($t) => $e,
            Tsx::InviteServer($t) => $e,
            Tsx::NonInviteServer($t) => $e,
        }
    };
}

/// A transaction and the peer it talks to.
#[derive(Debug)]
struct Entry {
    tsx: Tsx,
    peer: Peer,
}

/// Counters a driver exports; every drop is counted, never logged per packet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Malformed requests answered with 400/505.
    pub answered_malformed: u64,
    /// Malformed messages dropped (bad responses, illegible Via).
    pub dropped_malformed: u64,
    /// Requests without an RFC 3261 branch (RFC 2543 peers), dropped.
    pub dropped_no_branch: u64,
    /// CRLF keepalive datagrams, ignored (many PBXs send them over UDP to hold NAT bindings).
    pub keepalives: u64,
}

/// The transaction layer for one set of sockets.
#[derive(Debug)]
pub struct Endpoint {
    /// Timer configuration for every transaction created here.
    timers: Timers,
    /// Live transactions, client and server (the key's role keeps them apart).
    transactions: HashMap<TransactionKey, Entry>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<EndpointEvent>,
    counters: Counters,
}

impl Endpoint {
    /// An empty transaction layer.
    pub fn new(timers: Timers) -> Self {
        Self {
            timers,
            transactions: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// Drop and answer counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Number of live transactions (tests and leak checks).
    pub fn len(&self) -> usize {
        self.transactions.len()
    }

    /// No live transactions.
    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
    }

    /// Whether a transaction is alive (e.g. the INVITE a CANCEL targets).
    pub fn contains(&self, key: &TransactionKey) -> bool {
        self.transactions.contains_key(key)
    }

    /// The peer a live transaction talks to (a challenged INVITE is retried there, even when
    /// the side's configured peer changed meanwhile).
    pub fn peer(&self, key: &TransactionKey) -> Option<Peer> {
        self.transactions.get(key).map(|e| e.peer)
    }

    /// State of a live transaction.
    pub fn state(&self, key: &TransactionKey) -> Option<State> {
        self.transactions
            .get(key)
            .map(|e| each!(&e.tsx, t => t.state()))
    }

    /// Feeds one datagram or one stream frame. Malformed requests with legible Via/From/To/
    /// Call-ID/CSeq are answered 400 (505 for a bad version) straight back to the source.
    pub fn handle_bytes(&mut self, now: Instant, source: Peer, bytes: &[u8]) {
        if !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0))
        {
            self.counters.keepalives += 1;
            return;
        }
        match Message::parse(bytes) {
            Ok(msg) => self.handle_message(now, source, msg),
            Err(e) => self.handle_malformed(source, &e),
        }
    }

    /// Answers or drops a message that did not parse (also used for malformed stream frames).
    pub fn handle_malformed(&mut self, source: Peer, err: &ParseError) {
        let (Some(status), Some(headers)) = (err.answer_status(), &err.reply_headers) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let reason = if status == 505 {
            "Version Not Supported"
        } else {
            "Bad Request"
        };
        let mut s = format!("SIP/2.0 {status} {reason}\r\n");
        for h in headers {
            // Writing to a String cannot fail.
            let _ = write!(s, "{}: {}\r\n", h.name, h.value);
        }
        let _ = write!(
            s,
            "Warning: 399 xcc \"{:?}\"\r\nContent-Length: 0\r\n\r\n",
            err.reason
        );
        self.counters.answered_malformed += 1;
        self.transmits.push_back(Transmit {
            target: Target::Peer(source),
            bytes: s.into_bytes(),
        });
    }

    /// Feeds a parsed message.
    pub fn handle_message(&mut self, now: Instant, source: Peer, msg: Message) {
        match msg {
            Message::Request(mut req) => {
                stamp_received(&mut req, source.addr);
                self.handle_request(now, source, req);
            }
            Message::Response(resp) => self.handle_response(now, source, resp),
        }
    }

    fn handle_request(&mut self, now: Instant, source: Peer, req: Request) {
        let Some(key) = TransactionKey::server(&req) else {
            self.counters.dropped_no_branch += 1;
            return;
        };
        if let Some(entry) = self.transactions.get_mut(&key) {
            // RFC 6026 §8.7: an ACK reaching an Accepted INVITE server belongs to the dialog.
            if req.method == Method::Ack
                && let Tsx::InviteServer(t) = &entry.tsx
                && t.state() == State::Accepted
            {
                self.events.push_back(EndpointEvent::Ack {
                    request: Box::new(req),
                    source,
                });
                return;
            }
            match &mut entry.tsx {
                Tsx::InviteServer(t) => t.handle_request(now, &req),
                Tsx::NonInviteServer(t) => t.handle_request(now, &req),
                // Server keys never map to client machines.
                _ => {}
            }
            self.drain(&key);
            return;
        }
        if req.method == Method::Ack {
            self.events.push_back(EndpointEvent::Ack {
                request: Box::new(req),
                source,
            });
            return;
        }
        let reliable = source.transport.is_reliable();
        if req.method == Method::Cancel {
            self.handle_cancel(now, source, key, req);
            return;
        }
        let tsx = if req.method == Method::Invite {
            Tsx::InviteServer(InviteServer::new(now, req.clone(), self.timers, reliable))
        } else {
            Tsx::NonInviteServer(NonInviteServer::new(
                now,
                req.clone(),
                self.timers,
                reliable,
            ))
        };
        self.transactions
            .insert(key.clone(), Entry { tsx, peer: source });
        self.events.push_back(EndpointEvent::Request {
            key: key.clone(),
            request: Box::new(req),
            source,
        });
        self.drain(&key);
    }

    /// RFC 3261 §9.2: the CANCEL gets its own transaction and an immediate answer.
    fn handle_cancel(&mut self, now: Instant, source: Peer, key: TransactionKey, req: Request) {
        let invite = key.cancelled_invite();
        let pending = self.state(&invite);
        let mut tsx = NonInviteServer::new(
            now,
            req.clone(),
            self.timers,
            source.transport.is_reliable(),
        );
        let (status, reason) = match pending {
            Some(_) => (200, "OK"),
            None => (481, "Call/Transaction Does Not Exist"),
        };
        // A fresh server transaction in Trying always accepts its first response.
        let _ = tsx.send_response(now, Response::for_request(&req, status, reason, None));
        self.transactions.insert(
            key.clone(),
            Entry {
                tsx: Tsx::NonInviteServer(tsx),
                peer: source,
            },
        );
        if pending == Some(State::Proceeding) {
            self.events.push_back(EndpointEvent::Cancel {
                invite,
                request: Box::new(req),
            });
        }
        self.drain(&key);
    }

    fn handle_response(&mut self, now: Instant, source: Peer, resp: Response) {
        let key = TransactionKey::for_response(&resp);
        match key.as_ref().and_then(|k| self.transactions.get_mut(k)) {
            Some(entry) => {
                match &mut entry.tsx {
                    Tsx::InviteClient(t) => t.handle_response(now, resp),
                    Tsx::NonInviteClient(t) => t.handle_response(now, resp),
                    // Client keys never map to server machines.
                    _ => {}
                }
                if let Some(k) = key {
                    self.drain(&k);
                }
            }
            None => self.events.push_back(EndpointEvent::StrayResponse {
                response: Box::new(resp),
                source,
            }),
        }
    }

    /// Sends a request. ACK (for a 2xx) goes out directly and returns `None`; anything else
    /// starts a client transaction and returns its key.
    pub fn send_request(
        &mut self,
        now: Instant,
        req: Request,
        dest: Peer,
    ) -> Result<Option<TransactionKey>, Error> {
        if req.method == Method::Ack {
            self.transmits.push_back(Transmit {
                target: Target::Peer(dest),
                bytes: req.to_bytes(),
            });
            return Ok(None);
        }
        let key = TransactionKey::client(&req).ok_or_else(|| Error::NoBranch {
            method: req.method.to_string(),
        })?;
        if self.transactions.contains_key(&key) {
            return Err(Error::DuplicateTransaction {
                key: key.to_string(),
            });
        }
        let reliable = dest.transport.is_reliable();
        let tsx = if req.method == Method::Invite {
            Tsx::InviteClient(InviteClient::new(now, req, self.timers, reliable))
        } else {
            Tsx::NonInviteClient(NonInviteClient::new(now, req, self.timers, reliable))
        };
        self.transactions
            .insert(key.clone(), Entry { tsx, peer: dest });
        self.drain(&key);
        Ok(Some(key))
    }

    /// Sends the CANCEL for a pending INVITE client transaction (RFC 3261 §9.1) to the peer the
    /// INVITE went to, as its own non-INVITE transaction. A CANCEL may only follow a provisional
    /// response: `Ok(None)` when the INVITE is unknown or not in Proceeding (the caller retries
    /// when a provisional arrives, or lets the INVITE's own final response end it).
    pub fn cancel(
        &mut self,
        now: Instant,
        invite: &TransactionKey,
    ) -> Result<Option<TransactionKey>, Error> {
        let Some(Entry {
            tsx: Tsx::InviteClient(t),
            peer,
        }) = self.transactions.get(invite)
        else {
            return Ok(None);
        };
        let (Some(cancel), peer) = (t.cancel(), *peer) else {
            return Ok(None);
        };
        self.send_request(now, cancel, peer)
    }

    /// Sends a response within a server transaction.
    pub fn send_response(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        resp: Response,
    ) -> Result<(), Error> {
        let unknown = || Error::UnknownTransaction {
            key: key.to_string(),
        };
        let entry = self.transactions.get_mut(key).ok_or_else(unknown)?;
        match &mut entry.tsx {
            Tsx::InviteServer(t) => t.send_response(now, resp)?,
            Tsx::NonInviteServer(t) => t.send_response(now, resp)?,
            _ => return Err(unknown()),
        }
        self.drain(key);
        Ok(())
    }

    /// The driver could not deliver to `peer` (connect failed, connection reset before the
    /// request went out): every client transaction towards it ends now instead of at timer B/F.
    pub fn handle_transport_error(&mut self, peer: Peer) {
        let dead: Vec<TransactionKey> = self
            .transactions
            .iter()
            .filter(|(k, e)| k.role == crate::transaction::Role::Client && e.peer == peer)
            .map(|(k, _)| k.clone())
            .collect();
        for key in dead {
            self.transactions.remove(&key);
            self.events.push_back(EndpointEvent::TransportError { key });
        }
    }

    /// Fires due timers of every transaction.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TransactionKey> = self
            .transactions
            .iter()
            .filter(|(_, e)| each!(&e.tsx, t => t.poll_timeout()).is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(e) = self.transactions.get_mut(&key) {
                each!(&mut e.tsx, t => t.handle_timeout(now));
            }
            self.drain(&key);
        }
    }

    /// Earliest timer of any transaction.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transactions
            .values()
            .filter_map(|e| each!(&e.tsx, t => t.poll_timeout()))
            .min()
    }

    /// Next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the dialog layer.
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    /// Moves a transaction's transmits and events out, and forgets it once terminated.
    fn drain(&mut self, key: &TransactionKey) {
        let Some(entry) = self.transactions.get_mut(key) else {
            return;
        };
        let peer = entry.peer;
        while let Some(msg) = each!(&mut entry.tsx, t => t.poll_transmit()) {
            let target = match &msg {
                Message::Response(r) if !peer.transport.is_reliable() => {
                    match response_target(r) {
                        Ok(ResponseTarget::Addr(addr)) => Target::Peer(Peer {
                            addr,
                            transport: peer.transport,
                        }),
                        Ok(ResponseTarget::Resolve { host, port }) => {
                            Target::Resolve { host, port }
                        }
                        // The Via was stamped on arrival, so the source is the best we have.
                        Err(_) => Target::Peer(peer),
                    }
                }
                _ => Target::Peer(peer),
            };
            self.transmits.push_back(Transmit {
                target,
                bytes: msg.to_bytes(),
            });
        }
        let mut terminated = false;
        while let Some(ev) = each!(&mut entry.tsx, t => t.poll_event()) {
            match ev {
                Event::Response(response) => self.events.push_back(EndpointEvent::Response {
                    key: key.clone(),
                    response,
                }),
                Event::Timeout => self
                    .events
                    .push_back(EndpointEvent::Timeout { key: key.clone() }),
                Event::Terminated => terminated = true,
            }
        }
        if terminated {
            self.transactions.remove(key);
        }
    }
}
