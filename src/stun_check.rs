//! On-demand STUN diagnostics for `xccctl stun-check` and `xccctl nat-type`: the sans-IO cores
//! ([`Discovery`] with one server, [`NatTypeProbe`]) driven on one blocking UDP socket bound where
//! xccd binds its media, so the answer describes the NAT in front of the media ports.
//!
//! They run in xccctl on the satellite rather than inside xccd behind a gRPC call: the view is the
//! same (same host, same bind address, same NAT), they work while xccd is down (when they are
//! needed most), and the control API never makes xccd send UDP to an address a remote caller
//! chose.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use xcc_core::nat::Retransmission;
use xcc_core::nat::discovery::{AddressSource, Discovery, DiscoveryConfig, DiscoveryEvent};
use xcc_core::nat::nat_type::{NatReport, NatTypeConfig, NatTypeProbe};

use crate::config::StunServer;

/// Largest datagram read.
const MAX_ANSWER: usize = 1500;

/// What one STUN check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The server answered.
    Answered {
        /// XCC's address as the server saw it.
        mapped: SocketAddr,
        /// Time from the first request to the answer (it includes retransmission waits when
        /// `transmissions` > 1: which request was answered cannot be told).
        rtt: Duration,
        /// Requests sent.
        transmissions: u32,
    },
    /// The server answered with a STUN error.
    ErrorResponse {
        /// The STUN error code.
        code: Option<u16>,
    },
    /// ICMP said nothing listens there.
    Refused,
    /// No answer within the retransmission schedule.
    Silent {
        /// Requests sent.
        transmissions: u32,
        /// How long XCC waited.
        waited: Duration,
    },
}

/// A check's result with its context, for printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The server as given.
    pub server: String,
    /// The address asked.
    pub address: SocketAddr,
    /// The local socket.
    pub local: SocketAddr,
    /// What happened.
    pub outcome: CheckOutcome,
}

impl CheckReport {
    /// Whether the server answered with an address.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, CheckOutcome::Answered { .. })
    }

    /// One paragraph for an administrator.
    pub fn describe(&self) -> String {
        let who = if self.server == self.address.to_string() {
            self.server.clone()
        } else {
            format!("{} ({})", self.server, self.address)
        };
        match &self.outcome {
            CheckOutcome::Answered {
                mapped,
                rtt,
                transmissions,
            } => {
                let nat = if mapped.ip() == self.local.ip() {
                    "no NAT between XCC and the server".to_owned()
                } else {
                    format!("NAT: local {} appears as {mapped}", self.local)
                };
                let retries = if *transmissions > 1 {
                    format!(" after {transmissions} requests (some were lost)")
                } else {
                    String::new()
                };
                format!(
                    "STUN server {who} answered in {:.1} ms{retries}: XCC's public address is {} ({nat}).",
                    rtt.as_secs_f64() * 1000.0,
                    mapped.ip()
                )
            }
            CheckOutcome::ErrorResponse { code } => format!(
                "STUN server {who} answered with error {}: it is reachable but refused a plain Binding request.",
                code.map(|c| c.to_string())
                    .unwrap_or_else(|| "(no code)".into())
            ),
            CheckOutcome::Refused => format!(
                "Nothing listens on {who}: the host answered ICMP port unreachable. Check the port (3478 is usual)."
            ),
            CheckOutcome::Silent {
                transmissions,
                waited,
            } => format!(
                "No answer from {who} to {transmissions} requests in {:.1} s: the server is down, or UDP to port {} is blocked on the way (firewall).",
                waited.as_secs_f64(),
                self.address.port()
            ),
        }
    }
}

/// Why a diagnostic could not even start.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The server argument is not `HOST[:PORT]`.
    #[error("{0}")]
    BadServer(String),
    /// The name does not resolve (to an address of the local socket's family).
    #[error("cannot resolve {server}: {reason}")]
    Resolve {
        /// The server as given.
        server: String,
        /// Why.
        reason: String,
    },
    /// Socket setup or I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> CheckError {
    move |source| CheckError::Io { what, source }
}

/// Resolves `HOST[:PORT]` (port 3478 by default) to an address of `bind`'s family.
pub fn resolve(server: &str, bind: IpAddr) -> Result<SocketAddr, CheckError> {
    let parsed = StunServer::parse(server).map_err(CheckError::BadServer)?;
    let addrs = (parsed.host.as_str(), parsed.port)
        .to_socket_addrs()
        .map_err(|e| CheckError::Resolve {
            server: server.to_owned(),
            reason: e.to_string(),
        })?;
    addrs
        .into_iter()
        .find(|a| a.is_ipv4() == bind.is_ipv4())
        .ok_or_else(|| CheckError::Resolve {
            server: server.to_owned(),
            reason: format!("no address of the same family as {bind}"),
        })
}

/// Asks `server` once (with retransmissions) from a socket bound on `bind`.
pub fn stun_check(
    server: &str,
    bind: IpAddr,
    retransmission: Retransmission,
) -> Result<CheckReport, CheckError> {
    let address = resolve(server, bind)?;
    let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).map_err(io("bind"))?;
    // Connected, so an ICMP port unreachable comes back as ECONNREFUSED.
    socket.connect(address).map_err(io("connect"))?;
    let local = socket.local_addr().map_err(io("local address"))?;
    let start = Instant::now();
    let config = DiscoveryConfig {
        servers: vec![address],
        static_address: None,
        retransmission,
        ..DiscoveryConfig::default()
    };
    let mut discovery =
        Discovery::new(config, start).map_err(|e| CheckError::BadServer(e.to_string()))?;
    let mut transmissions = 0u32;
    let mut buf = [0u8; MAX_ANSWER];
    let report = |outcome| CheckReport {
        server: server.to_owned(),
        address,
        local,
        outcome,
    };
    loop {
        let now = Instant::now();
        discovery.handle_timeout(now, &mut rand::rng());
        while let Some((_, bytes)) = discovery.poll_transmit() {
            transmissions += 1;
            if let Err(e) = socket.send(bytes) {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    return Ok(report(CheckOutcome::Refused));
                }
                return Err(io("send")(e));
            }
        }
        if let Some(DiscoveryEvent::ServerUnreachable { error_code, .. }) = discovery.poll_event() {
            return Ok(report(match error_code {
                Some(code) => CheckOutcome::ErrorResponse { code: Some(code) },
                None => CheckOutcome::Silent {
                    transmissions,
                    waited: now - start,
                },
            }));
        }
        let wait = discovery
            .poll_timeout()
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_millis(1));
        socket
            .set_read_timeout(Some(wait))
            .map_err(io("read timeout"))?;
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                let at = Instant::now();
                if discovery.handle_response(at, from, &buf[..len]) {
                    match (discovery.poll_event(), discovery.source()) {
                        (
                            Some(DiscoveryEvent::PublicAddressChanged { .. }),
                            Some(AddressSource::Stun { mapped, .. }),
                        ) => {
                            return Ok(report(CheckOutcome::Answered {
                                mapped,
                                rtt: at - start,
                                transmissions,
                            }));
                        }
                        (Some(DiscoveryEvent::ServerUnreachable { error_code, .. }), _) => {
                            return Ok(report(CheckOutcome::ErrorResponse { code: error_code }));
                        }
                        _ => {}
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Ok(report(CheckOutcome::Refused));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(io("receive")(e)),
        }
    }
}

/// Runs the NAT type tests against `primary` (RFC 5780 when it supports it) and, for the
/// two-server comparison, `secondary`, from a socket bound on `bind`.
pub fn nat_type(
    primary: SocketAddr,
    secondary: Option<SocketAddr>,
    bind: IpAddr,
    retransmission: Retransmission,
) -> Result<NatReport, CheckError> {
    let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).map_err(io("bind"))?;
    let local = socket.local_addr().map_err(io("local address"))?;
    let mut probe = NatTypeProbe::new(
        NatTypeConfig {
            primary,
            secondary,
            local: Some(local),
            retransmission,
        },
        Instant::now(),
    );
    let mut buf = [0u8; MAX_ANSWER];
    let mut rng = rand::rng();
    loop {
        if let Some(report) = probe.verdict() {
            return Ok(*report);
        }
        probe.handle_timeout(Instant::now(), &mut rng);
        while let Some((to, bytes)) = probe.poll_transmit() {
            // An unreachable server shows as silence in the report; nothing to do here.
            let _ = socket.send_to(bytes, to);
        }
        if probe.verdict().is_some() {
            continue;
        }
        let wait = probe
            .poll_timeout()
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_millis(1));
        socket
            .set_read_timeout(Some(wait))
            .map_err(io("read timeout"))?;
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                probe.handle_response(Instant::now(), from, &buf[..len], &mut rng);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(io("receive")(e)),
        }
    }
}
