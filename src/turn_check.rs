//! On-demand TURN check for `xccctl turn-check`: one allocation on the server xccd would relay
//! through (`[turn]`), with its credentials and transport, then its release (Refresh with
//! lifetime 0), so no quota stays used. [`TurnCheck`] is the sans-IO core: it drives a
//! [`TurnClient`] through Allocate and Deallocate and turns its events and the times it is given
//! into a [`TurnOutcome`]; [`turn_check`] drives it on one blocking UDP socket (bound where xccd
//! binds its media) or one TCP connection (framed with [`TcpFramer`]), with bounded waits.
//!
//! It runs in xccctl for the reasons `stun-check` does (`crate::stun_check`): same view as xccd,
//! works while xccd is down, and the control API never makes xccd send to an address a caller
//! chose.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xcc_core::nat::Retransmission;
use xcc_core::nat::turn::{
    TcpFramer, TurnClient, TurnConfig, TurnEvent, TurnInput, TurnOperation, TurnTransport,
};

use crate::config::TurnSettings;
use crate::stun_check::CheckError;

/// Largest datagram read.
const MAX_ANSWER: usize = 1500;
/// Longest single wait for input, so a core that asks for no timer cannot hang the loop.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Framing buffer for the TCP stream: the check's answers are a few hundred bytes.
const TCP_FRAMING: usize = 8 * 1024;

/// What the allocation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// The relayed transport address on the server.
    pub relayed: SocketAddr,
    /// XCC's address as the server saw it (XOR-MAPPED-ADDRESS), when it said.
    pub mapped: Option<SocketAddr>,
    /// Lifetime the server granted.
    pub lifetime: Duration,
    /// From the first request to the success (the 401 round included).
    pub setup: Duration,
    /// From the last request sent to the success: one round trip when that request was not
    /// retransmitted.
    pub rtt: Duration,
    /// Requests sent for the allocation, retransmissions included (2 with the usual 401 round).
    pub requests: u32,
}

/// How the release of the allocation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The server confirmed it.
    Released,
    /// The server answered with an error.
    Refused {
        /// The STUN error code.
        code: Option<u16>,
    },
    /// No answer within the schedule.
    Unanswered,
    /// The TCP connection closed or was refused before the answer.
    ConnectionLost,
}

/// What one TURN check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnOutcome {
    /// The server allocated; then XCC released the allocation.
    Allocated {
        /// The allocation.
        allocation: Allocation,
        /// Its release.
        release: Release,
    },
    /// The server answered the Allocate with an error (after the credentials when it asked).
    Rejected {
        /// The STUN error code.
        code: u16,
    },
    /// The server answered success but named no relayed address.
    NoRelayedAddress,
    /// Nothing listens there: ICMP port unreachable (UDP) or a reset (TCP connect).
    Refused,
    /// The server closed the TCP connection before answering.
    Closed,
    /// No answer within the failover schedule (over TCP: no connection, or no answer on it).
    Silent {
        /// Requests sent (0: the TCP connection was never made).
        requests: u32,
        /// Responses received (a 401 answered, then silence).
        answers: u32,
        /// How long XCC waited.
        waited: Duration,
    },
}

/// The check's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Allocate (with its 401 round) in flight.
    Allocating,
    /// Allocated; the release (Refresh with lifetime 0) in flight.
    Releasing(Allocation),
    /// Finished.
    Done(TurnOutcome),
}

/// The sans-IO check: one [`TurnClient`], its Allocate, its release, and the times of each.
/// Drive it like the client: [`TurnCheck::handle_timeout`], [`TurnCheck::poll_transmit`],
/// [`TurnCheck::handle_datagram`], [`TurnCheck::poll_timeout`], until
/// [`TurnCheck::outcome`] says how it ended. The driver reports what only a socket can see
/// ([`TurnCheck::handle_refused`], [`TurnCheck::handle_closed`]).
#[derive(Debug)]
pub struct TurnCheck {
    /// The client making the allocation.
    client: TurnClient,
    /// Where the check is.
    phase: Phase,
    /// When the first request was sent.
    first_sent: Option<Instant>,
    /// When the latest request was sent.
    last_sent: Option<Instant>,
    /// The latest `now` passed in (requests polled after it were sent then).
    now: Instant,
    /// When the check started.
    start: Instant,
    /// Requests sent for the allocation.
    requests: u32,
    /// Responses consumed while allocating.
    answers: u32,
    /// After this the check ends as [`TurnOutcome::Silent`] whatever the client still waits for
    /// (a 437 release round and two schedules fit well within it).
    deadline: Instant,
}

impl TurnCheck {
    /// A check whose Allocate goes out at the first [`TurnCheck::handle_timeout`].
    pub fn new(config: TurnConfig, now: Instant) -> Self {
        let limit = config.retransmission.timeout() * 3 + Duration::from_secs(5);
        TurnCheck {
            client: TurnClient::new(config, now),
            phase: Phase::Allocating,
            first_sent: None,
            last_sent: None,
            now,
            start: now,
            requests: 0,
            answers: 0,
            deadline: now + limit,
        }
    }

    /// How the check ended, once it has.
    pub fn outcome(&self) -> Option<TurnOutcome> {
        match self.phase {
            Phase::Done(outcome) => Some(outcome),
            _ => None,
        }
    }

    /// Advances the client's timers; a failed request ends the check.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl rand::RngCore) {
        self.now = self.now.max(now);
        if self.outcome().is_some() {
            return;
        }
        self.client.handle_timeout(now, rng);
        self.take_events(false);
        if self.outcome().is_none() && now >= self.deadline {
            self.silent();
        }
    }

    /// Offers a datagram (or a TCP frame) from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        rng: &mut impl rand::RngCore,
    ) {
        self.now = self.now.max(now);
        if self.outcome().is_some() {
            return;
        }
        if self.client.handle_datagram(now, from, bytes, rng) != TurnInput::Consumed {
            return;
        }
        if self.phase == Phase::Allocating {
            self.answers += 1;
        }
        self.take_events(true);
        if let Phase::Releasing(allocation) = self.phase {
            if self.client.relayed().is_none() {
                self.phase = Phase::Done(TurnOutcome::Allocated {
                    allocation,
                    release: Release::Released,
                });
            } else {
                // The release goes out now (after the allocation) or again (after a 438).
                self.client.handle_timeout(now, rng);
            }
        }
    }

    /// The socket said nothing listens (ICMP port unreachable, TCP reset).
    pub fn handle_refused(&mut self) {
        self.lost(TurnOutcome::Refused);
    }

    /// The TCP connection closed or broke.
    pub fn handle_closed(&mut self) {
        self.lost(TurnOutcome::Closed);
    }

    /// The next request to send.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        if self.outcome().is_some() {
            return None;
        }
        let (_, bytes) = self.client.poll_transmit()?;
        if matches!(self.phase, Phase::Allocating) {
            self.requests += 1;
            self.first_sent.get_or_insert(self.now);
            self.last_sent = Some(self.now);
        }
        Some(bytes)
    }

    /// When [`TurnCheck::handle_timeout`] must next be called; `None` once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome().is_some() {
            return None;
        }
        Some(
            self.client
                .poll_timeout()
                .map_or(self.deadline, |at| at.min(self.deadline)),
        )
    }

    /// Applies the client's events; `answered` when a response caused them.
    fn take_events(&mut self, answered: bool) {
        while let Some(event) = self.client.poll_event() {
            match (event, self.phase) {
                (
                    TurnEvent::Allocated {
                        relayed,
                        mapped,
                        lifetime,
                    },
                    Phase::Allocating,
                ) => {
                    let first = self.first_sent.unwrap_or(self.start);
                    let last = self.last_sent.unwrap_or(first);
                    self.phase = Phase::Releasing(Allocation {
                        relayed,
                        mapped,
                        lifetime,
                        setup: self.now.saturating_duration_since(first),
                        rtt: self.now.saturating_duration_since(last),
                        requests: self.requests,
                    });
                    self.client.close(self.now);
                }
                (
                    TurnEvent::Failed {
                        operation: TurnOperation::Allocate,
                        code,
                    },
                    Phase::Allocating,
                ) => {
                    self.phase = Phase::Done(match code {
                        Some(code) => TurnOutcome::Rejected { code },
                        // A success without XOR-RELAYED-ADDRESS fails with no code.
                        None if answered => TurnOutcome::NoRelayedAddress,
                        None => self.silent_outcome(),
                    });
                }
                (
                    TurnEvent::Failed {
                        operation: TurnOperation::Deallocate,
                        code,
                    },
                    Phase::Releasing(allocation),
                ) => {
                    let release = match code {
                        Some(code) => Release::Refused { code: Some(code) },
                        None if answered => Release::Refused { code: None },
                        None => Release::Unanswered,
                    };
                    self.phase = Phase::Done(TurnOutcome::Allocated {
                        allocation,
                        release,
                    });
                }
                _ => {}
            }
        }
    }

    /// The allocation failed for want of an answer.
    fn silent_outcome(&self) -> TurnOutcome {
        TurnOutcome::Silent {
            requests: self.requests,
            answers: self.answers,
            waited: self
                .now
                .saturating_duration_since(self.first_sent.unwrap_or(self.start)),
        }
    }

    /// Ends the check for want of an answer.
    fn silent(&mut self) {
        self.phase = Phase::Done(match self.phase {
            Phase::Releasing(allocation) => TurnOutcome::Allocated {
                allocation,
                release: Release::Unanswered,
            },
            _ => self.silent_outcome(),
        });
    }

    /// Ends the check because the path to the server is gone.
    fn lost(&mut self, outcome: TurnOutcome) {
        self.phase = match self.phase {
            Phase::Allocating => Phase::Done(outcome),
            Phase::Releasing(allocation) => Phase::Done(TurnOutcome::Allocated {
                allocation,
                release: Release::ConnectionLost,
            }),
            done => done,
        };
    }
}

/// A check's result with its context, for printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnReport {
    /// The server as given (`turn.server` or the argument).
    pub server: String,
    /// The address asked.
    pub address: SocketAddr,
    /// How XCC reached it.
    pub transport: TurnTransport,
    /// The long-term credential user.
    pub username: String,
    /// The local socket or connection end; `None` when no connection was made.
    pub local: Option<SocketAddr>,
    /// What happened.
    pub outcome: TurnOutcome,
}

/// The standard reason phrase of a STUN/TURN error code (RFC 8489 §14.8, RFC 8656 §19).
pub fn code_name(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "unknown error",
    }
}

/// `"udp"` or `"tcp"`, as `[turn] transport` spells it.
fn transport_name(t: TurnTransport) -> &'static str {
    match t {
        TurnTransport::Udp => "udp",
        TurnTransport::Tcp => "tcp",
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl TurnReport {
    /// Whether the server allocated (the release's fate is reported, not judged).
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, TurnOutcome::Allocated { .. })
    }

    /// The failure's kind for scripts: `credentials`, `quota`, `allocation_mismatch`,
    /// `error_response`, `no_relayed_address`, `refused`, `closed`, `no_answer`; `None` on success.
    pub fn error_kind(&self) -> Option<&'static str> {
        Some(match self.outcome {
            TurnOutcome::Allocated { .. } => return None,
            TurnOutcome::Rejected { code: 401 | 441 } => "credentials",
            TurnOutcome::Rejected { code: 486 } => "quota",
            TurnOutcome::Rejected { code: 437 } => "allocation_mismatch",
            TurnOutcome::Rejected { .. } => "error_response",
            TurnOutcome::NoRelayedAddress => "no_relayed_address",
            TurnOutcome::Refused => "refused",
            TurnOutcome::Closed => "closed",
            TurnOutcome::Silent { .. } => "no_answer",
        })
    }

    /// One paragraph for an administrator.
    pub fn describe(&self) -> String {
        let name = self.server.trim_start_matches('[').trim_end_matches(']');
        let who =
            if self.server == self.address.to_string() || name == self.address.ip().to_string() {
                self.address.to_string()
            } else {
                format!("{} ({})", self.server, self.address)
            };
        let over = match self.transport {
            TurnTransport::Udp => "UDP",
            TurnTransport::Tcp => "TCP",
        };
        let user = &self.username;
        let port = self.address.port();
        match self.outcome {
            TurnOutcome::Allocated {
                allocation: a,
                release,
            } => {
                let seen = match (a.mapped, self.local) {
                    (None, _) => "it did not say which address it saw".to_owned(),
                    (Some(m), Some(l)) if m.ip() == l.ip() => {
                        format!("it saw XCC as {m} (no NAT between XCC and the server)")
                    }
                    (Some(m), Some(l)) => format!("it saw XCC as {m} (NAT: local {l} appears so)"),
                    (Some(m), None) => format!("it saw XCC as {m}"),
                };
                let released = match release {
                    Release::Released => "Released again (no quota left used).".to_owned(),
                    Release::Refused { code } => format!(
                        "The release was refused ({}): the allocation holds quota until its \
                         lifetime ends.",
                        code.map_or_else(
                            || "no code".to_owned(),
                            |c| format!("{c} {}", code_name(c))
                        )
                    ),
                    Release::Unanswered => "The release was not answered: the allocation may \
                                            hold quota until its lifetime ends."
                        .to_owned(),
                    Release::ConnectionLost => "The connection ended before the release was \
                                                confirmed (over TCP the server drops the \
                                                allocation with it)."
                        .to_owned(),
                };
                let rounds = if a.requests == 1 {
                    "1 request".to_owned()
                } else {
                    format!("{} requests", a.requests)
                };
                format!(
                    "TURN server {who} over {over} allocated {} for user \"{user}\" (lifetime \
                     {} s) in {:.1} ms ({rounds}, last round trip {:.1} ms); {seen}. {released}",
                    a.relayed,
                    a.lifetime.as_secs(),
                    ms(a.setup),
                    ms(a.rtt),
                )
            }
            TurnOutcome::Rejected {
                code: code @ (401 | 441),
            } => format!(
                "TURN server {who} refused the credentials of user \"{user}\" ({code} {}): check \
                 turn.username and turn.password (or turn.password_file), and that the user \
                 exists in the server's realm.",
                code_name(code)
            ),
            TurnOutcome::Rejected { code: 486 } => format!(
                "TURN server {who} accepted the credentials but refused the allocation: user \
                 \"{user}\" has reached its allocation quota (486 Allocation Quota Reached). \
                 xccd's spares and calls hold 2 allocations each on it; wait for stale ones to \
                 expire or raise the quota."
            ),
            TurnOutcome::Rejected { code: 437 } => format!(
                "TURN server {who} answered 437 Allocation Mismatch: an allocation already exists \
                 for XCC's address and port, and releasing it did not help."
            ),
            TurnOutcome::Rejected { code: 442 } => format!(
                "TURN server {who} does not relay UDP for this user (442 Unsupported Transport \
                 Protocol)."
            ),
            TurnOutcome::Rejected { code } => format!(
                "TURN server {who} refused the allocation with {code} {}.",
                code_name(code)
            ),
            TurnOutcome::NoRelayedAddress => format!(
                "TURN server {who} answered the Allocate with success but no relayed address: \
                 XCC cannot use it."
            ),
            TurnOutcome::Refused => match self.transport {
                TurnTransport::Udp => format!(
                    "Nothing listens on {who} (UDP): the host answered ICMP port unreachable. \
                     Check the port (3478 is usual)."
                ),
                TurnTransport::Tcp => format!(
                    "{who} refused the TCP connection: nothing listens on TCP port {port}. Check \
                     the port (3478 is usual) and that the server accepts TURN over TCP."
                ),
            },
            TurnOutcome::Closed => format!(
                "TURN server {who} closed the TCP connection before answering the Allocate."
            ),
            TurnOutcome::Silent {
                requests: 0,
                waited,
                ..
            } => format!(
                "No answer from {who}: the TCP connection was not made in {:.1} s. The server is \
                 down, or TCP to port {port} is blocked on the way (firewall).",
                waited.as_secs_f64()
            ),
            TurnOutcome::Silent {
                requests,
                answers: 0,
                waited,
            } => format!(
                "No answer from {who} over {over} to {requests} request{} in {:.1} s: the server \
                 is down, or {over} to port {port} is blocked on the way (firewall).",
                if requests == 1 { "" } else { "s" },
                waited.as_secs_f64()
            ),
            TurnOutcome::Silent {
                requests, waited, ..
            } => format!(
                "TURN server {who} answered the first request (asking for credentials) but not \
                 the authenticated one: no answer to {requests} requests in {:.1} s.",
                waited.as_secs_f64()
            ),
        }
    }

    /// One JSON object, like `xccctl --json stun-check`'s: the context, `ok`, `message`, then
    /// the allocation's figures or the failure's `error` kind (with `code` and `reason` for an
    /// error response).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "server": self.server, "address": self.address.to_string(),
            "transport": transport_name(self.transport), "username": self.username,
            "local": self.local.map(|l| l.to_string()), "ok": self.is_ok(),
            "message": self.describe(),
        });
        let extra = match self.outcome {
            TurnOutcome::Allocated {
                allocation: a,
                release,
            } => {
                let (released, release_error, release_code) = match release {
                    Release::Released => (true, None, None),
                    Release::Refused { code } => (false, Some("error_response"), code),
                    Release::Unanswered => (false, Some("no_answer"), None),
                    Release::ConnectionLost => (false, Some("closed"), None),
                };
                json!({
                    "relayed": a.relayed.to_string(), "mapped": a.mapped.map(|m| m.to_string()),
                    "lifetime_secs": a.lifetime.as_secs(), "setup_ms": ms(a.setup),
                    "rtt_ms": ms(a.rtt), "requests": a.requests, "released": released,
                    "release_error": release_error, "release_code": release_code,
                })
            }
            TurnOutcome::Rejected { code } => json!({
                "error": self.error_kind(), "code": code, "reason": code_name(code),
            }),
            TurnOutcome::Silent {
                requests,
                answers,
                waited,
            } => json!({
                "error": self.error_kind(), "requests": requests, "answers": answers,
                "waited_ms": waited.as_millis() as u64,
            }),
            TurnOutcome::NoRelayedAddress | TurnOutcome::Refused | TurnOutcome::Closed => {
                json!({"error": self.error_kind()})
            }
        };
        if let (Some(o), Value::Object(extra)) = (v.as_object_mut(), extra) {
            o.extend(extra);
        }
        v
    }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> CheckError {
    move |source| CheckError::Io { what, source }
}

/// Allocates once on `settings.server` with its credentials and transport, then releases. Over
/// UDP from a socket bound on `bind` (port 0); over TCP from the address the kernel chooses, as
/// xccd's own TURN connections do.
pub fn turn_check(
    settings: &TurnSettings,
    bind: IpAddr,
    retransmission: Retransmission,
) -> Result<TurnReport, CheckError> {
    let config = TurnConfig {
        server: settings.server,
        transport: settings.transport,
        username: settings.username.clone(),
        password: settings.password.0.clone(),
        lifetime: settings.lifetime,
        retransmission,
    };
    let report = |local, outcome| TurnReport {
        server: settings.server_name.clone(),
        address: settings.server,
        transport: settings.transport,
        username: settings.username.clone(),
        local,
        outcome,
    };
    match settings.transport {
        TurnTransport::Udp => {
            let (local, outcome) = over_udp(config, bind)?;
            Ok(report(Some(local), outcome))
        }
        TurnTransport::Tcp => {
            let start = Instant::now();
            let stream =
                match TcpStream::connect_timeout(&settings.server, retransmission.timeout()) {
                    Ok(s) => s,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        return Ok(report(None, TurnOutcome::Refused));
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                        let waited = start.elapsed();
                        return Ok(report(
                            None,
                            TurnOutcome::Silent {
                                requests: 0,
                                answers: 0,
                                waited,
                            },
                        ));
                    }
                    Err(e) => return Err(io("connect")(e)),
                };
            let local = stream.local_addr().map_err(io("local address"))?;
            let outcome = over_tcp(config, stream)?;
            Ok(report(Some(local), outcome))
        }
    }
}

/// How long to wait for input before the core's next timer.
fn wait_for(check: &TurnCheck) -> Duration {
    check
        .poll_timeout()
        .map(|at| at.saturating_duration_since(Instant::now()))
        .unwrap_or(Duration::ZERO)
        .clamp(Duration::from_millis(1), MAX_WAIT)
}

/// The check on one connected UDP socket.
fn over_udp(config: TurnConfig, bind: IpAddr) -> Result<(SocketAddr, TurnOutcome), CheckError> {
    let server = config.server;
    let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).map_err(io("bind"))?;
    // Connected, so an ICMP port unreachable comes back as ECONNREFUSED.
    socket.connect(server).map_err(io("connect"))?;
    let local = socket.local_addr().map_err(io("local address"))?;
    let mut check = TurnCheck::new(config, Instant::now());
    let mut rng = rand::rng();
    let mut buf = [0u8; MAX_ANSWER];
    loop {
        check.handle_timeout(Instant::now(), &mut rng);
        let mut refused = false;
        while let Some(bytes) = check.poll_transmit() {
            match socket.send(bytes) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused = true,
                Err(e) => return Err(io("send")(e)),
            }
        }
        if refused {
            check.handle_refused();
        }
        if let Some(outcome) = check.outcome() {
            return Ok((local, outcome));
        }
        socket
            .set_read_timeout(Some(wait_for(&check)))
            .map_err(io("read timeout"))?;
        match socket.recv(&mut buf) {
            Ok(len) => check.handle_datagram(Instant::now(), server, &buf[..len], &mut rng),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => check.handle_refused(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(io("receive")(e)),
        }
        if let Some(outcome) = check.outcome() {
            return Ok((local, outcome));
        }
    }
}

/// The check on one TCP connection, its stream cut into messages by [`TcpFramer`].
fn over_tcp(config: TurnConfig, mut stream: TcpStream) -> Result<TurnOutcome, CheckError> {
    let server = config.server;
    let _ = stream.set_nodelay(true);
    let mut check = TurnCheck::new(config, Instant::now());
    let mut rng = rand::rng();
    let mut framer = TcpFramer::with_capacity(TCP_FRAMING);
    loop {
        check.handle_timeout(Instant::now(), &mut rng);
        let mut lost = false;
        while let Some(bytes) = check.poll_transmit() {
            if stream.write_all(bytes).is_err() {
                lost = true;
            }
        }
        if lost {
            check.handle_closed();
        }
        if let Some(outcome) = check.outcome() {
            return Ok(outcome);
        }
        stream
            .set_read_timeout(Some(wait_for(&check)))
            .map_err(io("read timeout"))?;
        let space = framer.space();
        if space.is_empty() {
            // A frame larger than the buffer: not a TURN server's answer.
            check.handle_closed();
        } else {
            match stream.read(space) {
                Ok(0) => check.handle_closed(),
                Ok(n) => {
                    framer.filled(n);
                    let now = Instant::now();
                    loop {
                        match framer.next_frame() {
                            Ok(Some(frame)) => check.handle_datagram(now, server, frame, &mut rng),
                            Ok(None) => break,
                            Err(_) => {
                                check.handle_closed();
                                break;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => check.handle_refused(),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => check.handle_closed(),
            }
        }
        if let Some(outcome) = check.outcome() {
            return Ok(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use xcc_core::nat::stun::{Message, Writer, attr};

    const SERVER: &str = "203.0.113.10:3478";
    const RELAYED: &str = "203.0.113.10:49200";
    const MAPPED: &str = "198.51.100.1:30000";
    const LOCAL: &str = "10.0.0.5:40000";

    fn config() -> TurnConfig {
        TurnConfig {
            server: SERVER.parse().unwrap(),
            transport: TurnTransport::Udp,
            username: "xcc".into(),
            password: "secret".into(),
            lifetime: Duration::from_secs(600),
            retransmission: Retransmission::FAILOVER,
        }
    }

    fn report(outcome: TurnOutcome) -> TurnReport {
        TurnReport {
            server: "turn.example.net".into(),
            address: SERVER.parse().unwrap(),
            transport: TurnTransport::Udp,
            username: "xcc".into(),
            local: Some(LOCAL.parse().unwrap()),
            outcome,
        }
    }

    fn allocation() -> Allocation {
        Allocation {
            relayed: RELAYED.parse().unwrap(),
            mapped: Some(MAPPED.parse().unwrap()),
            lifetime: Duration::from_secs(600),
            setup: Duration::from_millis(84),
            rtt: Duration::from_millis(42),
            requests: 2,
        }
    }

    /// A server answering `request` with success (no credentials asked, so no integrity), or
    /// with `error` when given: Allocate names the relayed and mapped addresses.
    fn answer(request: &[u8], error: Option<u16>) -> Vec<u8> {
        let msg = Message::parse(request).unwrap();
        let mut buf = [0u8; 256];
        let class = if error.is_some() { 0x0110 } else { 0x0100 };
        let mut w = Writer::new(&mut buf, msg.msg_type() | class, msg.transaction_id()).unwrap();
        if let Some(code) = error {
            w.error_code(code, code_name(code)).unwrap();
            w.attribute(attr::REALM, b"xcc.test").unwrap();
            w.attribute(attr::NONCE, b"n1").unwrap();
        } else if msg.msg_type() == 0x0003 {
            w.xor_address(attr::XOR_RELAYED_ADDRESS, RELAYED.parse().unwrap())
                .unwrap();
            w.xor_mapped_address(MAPPED.parse().unwrap()).unwrap();
            w.attribute(attr::LIFETIME, &300u32.to_be_bytes()).unwrap();
        } else {
            w.attribute(attr::LIFETIME, &msg.lifetime().unwrap().to_be_bytes())
                .unwrap();
        }
        let len = w.finish();
        buf[..len].to_vec()
    }

    #[test]
    fn an_allocation_is_timed_reported_and_released_with_lifetime_zero() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let server = SERVER.parse().unwrap();
        let mut check = TurnCheck::new(config(), t0);
        check.handle_timeout(t0, &mut rng);
        let allocate = check.poll_transmit().unwrap().to_vec();
        assert!(check.poll_transmit().is_none());
        let t1 = t0 + Duration::from_millis(30);
        check.handle_datagram(t1, server, &answer(&allocate, None), &mut rng);
        assert_eq!(check.outcome(), None, "the release is still to come");
        let release = check.poll_transmit().expect("the release goes out at once");
        let msg = Message::parse(release).unwrap();
        assert_eq!(msg.msg_type(), 0x0004, "a Refresh");
        assert_eq!(msg.lifetime(), Some(0), "with lifetime 0");
        let release = release.to_vec();
        check.handle_datagram(t1, server, &answer(&release, None), &mut rng);
        assert_eq!(
            check.outcome(),
            Some(TurnOutcome::Allocated {
                allocation: Allocation {
                    relayed: RELAYED.parse().unwrap(),
                    mapped: Some(MAPPED.parse().unwrap()),
                    lifetime: Duration::from_secs(300),
                    setup: Duration::from_millis(30),
                    rtt: Duration::from_millis(30),
                    requests: 1,
                },
                release: Release::Released,
            })
        );
        assert_eq!(check.poll_timeout(), None);
    }

    #[test]
    fn a_401_to_the_authenticated_allocate_is_refused_credentials() {
        let mut rng = StdRng::seed_from_u64(2);
        let t0 = Instant::now();
        let server = SERVER.parse().unwrap();
        let mut check = TurnCheck::new(config(), t0);
        check.handle_timeout(t0, &mut rng);
        for _ in 0..2 {
            let request = check.poll_transmit().expect("a request").to_vec();
            check.handle_datagram(t0, server, &answer(&request, Some(401)), &mut rng);
        }
        assert_eq!(check.outcome(), Some(TurnOutcome::Rejected { code: 401 }));
        let r = report(check.outcome().unwrap());
        assert!(
            r.describe().contains("refused the credentials"),
            "{}",
            r.describe()
        );
        assert_eq!(r.to_json()["error"], "credentials");
    }

    #[test]
    fn silence_is_no_answer_after_the_failover_schedule() {
        let mut rng = StdRng::seed_from_u64(3);
        let t0 = Instant::now();
        let mut check = TurnCheck::new(config(), t0);
        let mut now = t0;
        let mut sent = 0;
        while check.outcome().is_none() {
            check.handle_timeout(now, &mut rng);
            while check.poll_transmit().is_some() {
                sent += 1;
            }
            now = check.poll_timeout().unwrap_or(now);
            assert!(now - t0 < Duration::from_secs(60), "bounded");
        }
        assert_eq!(sent, 4);
        assert_eq!(
            check.outcome(),
            Some(TurnOutcome::Silent {
                requests: 4,
                answers: 0,
                waited: Retransmission::FAILOVER.timeout(),
            })
        );
    }

    #[test]
    fn a_refused_path_during_the_release_keeps_the_allocation_as_the_result() {
        let mut rng = StdRng::seed_from_u64(4);
        let t0 = Instant::now();
        let mut check = TurnCheck::new(config(), t0);
        check.handle_timeout(t0, &mut rng);
        let allocate = check.poll_transmit().unwrap().to_vec();
        check.handle_datagram(
            t0,
            SERVER.parse().unwrap(),
            &answer(&allocate, None),
            &mut rng,
        );
        check.handle_closed();
        assert!(matches!(
            check.outcome(),
            Some(TurnOutcome::Allocated {
                release: Release::ConnectionLost,
                ..
            })
        ));
    }

    #[test]
    fn success_words_and_json_name_relay_mapping_lifetime_and_times() {
        let r = report(TurnOutcome::Allocated {
            allocation: allocation(),
            release: Release::Released,
        });
        assert!(r.is_ok());
        assert_eq!(
            r.describe(),
            "TURN server turn.example.net (203.0.113.10:3478) over UDP allocated \
             203.0.113.10:49200 for user \"xcc\" (lifetime 600 s) in 84.0 ms (2 requests, last \
             round trip 42.0 ms); it saw XCC as 198.51.100.1:30000 (NAT: local 10.0.0.5:40000 \
             appears so). Released again (no quota left used)."
        );
        let v = r.to_json();
        assert_eq!(v["ok"], true);
        assert_eq!(v["transport"], "udp");
        assert_eq!(v["relayed"], RELAYED);
        assert_eq!(v["mapped"], MAPPED);
        assert_eq!(v["local"], LOCAL);
        assert_eq!(v["lifetime_secs"], 600);
        assert_eq!(v["rtt_ms"], 42.0);
        assert_eq!(v["setup_ms"], 84.0);
        assert_eq!(v["requests"], 2);
        assert_eq!(v["released"], true);
        assert_eq!(v["release_error"], Value::Null);
        assert!(v.get("error").is_none());
    }

    #[test]
    fn an_unconfirmed_release_says_quota_stays_used_but_the_check_passes() {
        let r = report(TurnOutcome::Allocated {
            allocation: allocation(),
            release: Release::Unanswered,
        });
        assert!(r.is_ok());
        assert!(r.describe().contains("not answered"), "{}", r.describe());
        assert!(r.describe().contains("quota"), "{}", r.describe());
        assert_eq!(r.to_json()["released"], false);
        assert_eq!(r.to_json()["release_error"], "no_answer");
    }

    #[test]
    fn failures_are_named_in_words_and_json() {
        let cases: &[(TurnOutcome, &str, &str)] = &[
            (
                TurnOutcome::Rejected { code: 441 },
                "credentials",
                "refused the credentials of user \"xcc\" (441 Wrong Credentials)",
            ),
            (
                TurnOutcome::Rejected { code: 486 },
                "quota",
                "allocation quota (486 Allocation Quota Reached)",
            ),
            (
                TurnOutcome::Rejected { code: 437 },
                "allocation_mismatch",
                "437 Allocation Mismatch",
            ),
            (
                TurnOutcome::Rejected { code: 508 },
                "error_response",
                "refused the allocation with 508 Insufficient Capacity",
            ),
            (
                TurnOutcome::Rejected { code: 499 },
                "error_response",
                "499 unknown error",
            ),
            (
                TurnOutcome::NoRelayedAddress,
                "no_relayed_address",
                "no relayed address",
            ),
            (TurnOutcome::Refused, "refused", "ICMP port unreachable"),
            (TurnOutcome::Closed, "closed", "closed the TCP connection"),
            (
                TurnOutcome::Silent {
                    requests: 4,
                    answers: 0,
                    waited: Duration::from_millis(5500),
                },
                "no_answer",
                "No answer from turn.example.net (203.0.113.10:3478) over UDP to 4 requests in \
                 5.5 s",
            ),
            (
                TurnOutcome::Silent {
                    requests: 2,
                    answers: 1,
                    waited: Duration::from_millis(5500),
                },
                "no_answer",
                "not the authenticated one",
            ),
        ];
        for (outcome, kind, words) in cases {
            let r = report(*outcome);
            assert!(!r.is_ok());
            assert!(
                r.describe().contains(words),
                "{outcome:?}: {}",
                r.describe()
            );
            let v = r.to_json();
            assert_eq!(v["ok"], false);
            assert_eq!(v["error"], *kind, "{v}");
            assert_eq!(v["message"], r.describe());
        }
        let v = report(TurnOutcome::Rejected { code: 486 }).to_json();
        assert_eq!(v["code"], 486);
        assert_eq!(v["reason"], "Allocation Quota Reached");
    }

    #[test]
    fn tcp_failures_speak_of_the_connection() {
        let mut r = report(TurnOutcome::Refused);
        r.transport = TurnTransport::Tcp;
        r.local = None;
        assert!(
            r.describe().contains("refused the TCP connection"),
            "{}",
            r.describe()
        );
        assert_eq!(r.to_json()["local"], Value::Null);
        r.outcome = TurnOutcome::Silent {
            requests: 0,
            answers: 0,
            waited: Duration::from_millis(5500),
        };
        assert!(
            r.describe()
                .contains("TCP connection was not made in 5.5 s"),
            "{}",
            r.describe()
        );
    }

    #[test]
    fn an_ip_server_is_named_once() {
        let mut r = report(TurnOutcome::Refused);
        r.server = "203.0.113.10".into();
        assert!(
            r.describe()
                .starts_with("Nothing listens on 203.0.113.10:3478 (UDP)"),
            "{}",
            r.describe()
        );
    }
}
