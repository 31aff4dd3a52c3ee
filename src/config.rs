//! `xcc.toml`: one file, every key defaulted, unknown keys refused, errors naming the key.
//!
//! Loading is two steps: [`Config::parse`] (TOML syntax, types, unknown keys) and
//! [`Config::validate`] (cross-field rules, files, the control-port security rule), so that
//! `xccd check-config` runs exactly what start-up runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use xcc_core::media::MediaConfig;
use xcc_core::srtp::SrtpSuite;
use xcc_grpc::server::TlsMaterial;

use crate::error::{Error, Result};

/// The whole file. A new section (the SIP helper's `[sip]`) is one more field here, with its own
/// `#[serde(default, deny_unknown_fields)]` struct, and one more block in [`default_toml`].
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Media plane: pool, workers, timeouts (owned by xcc-core).
    pub media: MediaConfig,
    /// gRPC control port.
    pub control: ControlConfig,
    /// Addresses XCC advertises.
    pub nat: NatConfig,
    /// SDES policy towards clients.
    pub sdes: SdesConfig,
    /// Logging.
    pub log: LogConfig,
    /// Public address discovery with STUN.
    pub stun: StunConfig,
    /// SIP B2BUA: listeners, peers, credentials.
    pub sip: SipConfig,
    /// Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Where calls are stored so they survive a restart.
    pub state: crate::store::StateConfig,
    /// XCC's own TURN relay for the client legs (off unless `server` is set).
    pub turn: TurnConfig,
}

/// `[metrics]`: the Prometheus scrape endpoint (`GET /metrics`, plain HTTP).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `address:port` to listen on; `""` disables the endpoint. Loopback by default: the
    /// figures are not secret but say how busy the satellite is, so exposing them is a choice.
    pub listen: String,
}

/// Default metrics address: loopback, port 9480 (unassigned in the Prometheus exporter port
/// list; 9100 belongs to node_exporter which a satellite likely runs too).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9480";

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN.into(),
        }
    }
}

impl MetricsConfig {
    /// The address to bind, `None` when disabled.
    pub fn address(&self) -> Result<Option<SocketAddr>> {
        let s = self.listen.trim();
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|e| {
            invalid(
                "metrics.listen",
                format!("{s:?} is not address:port ({e}); \"\" disables the endpoint"),
            )
        })
    }
}

/// `[control]`: the gRPC port the XPhone server drives XCC through.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Listen address; anything but loopback needs mutual TLS or `allow_insecure_control`.
    pub listen: SocketAddr,
    /// Server certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to.
    pub tls_client_ca: Option<PathBuf>,
    /// Accept plaintext control on a non-loopback address (a trusted management network only).
    pub allow_insecure_control: bool,
    /// On SIGTERM (or an exit-when-idle drain), how long running calls may continue before XCC
    /// exits anyway. Live on reload.
    pub drain_grace_secs: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3280),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            allow_insecure_control: false,
            drain_grace_secs: 300,
        }
    }
}

/// `[nat]`: what XCC tells peers its address is.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatConfig {
    /// Address advertised on the client leg (the satellite's public address behind NAT).
    pub public_address: Option<IpAddr>,
    /// Address advertised on the PBX leg; defaults as `public_address` does.
    pub pbx_address: Option<IpAddr>,
}

/// `[stun]`: how XCC learns the public address it advertises to clients, when `[nat]
/// public_address` is not set. No servers (the default): no STUN traffic, the fallback address is
/// advertised.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StunConfig {
    /// STUN servers in order of preference: `"IP"`, `"IP:PORT"`, `"[IPv6]:PORT"`, `"HOST"` or
    /// `"HOST:PORT"`; the port defaults to 3478. The next one is asked when one does not answer.
    pub servers: Vec<String>,
    /// Seconds between checks once the address is known (a NAT may change its public IP).
    pub refresh_secs: u64,
    /// Seconds to wait after every server failed before trying again.
    pub retry_secs: u64,
}

impl Default for StunConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            refresh_secs: 60,
            retry_secs: 10,
        }
    }
}

/// The STUN port used when a `[stun] servers` entry names none.
pub const DEFAULT_STUN_PORT: u16 = 3478;

/// One `[stun] servers` entry, split into host and port (names are resolved by the driver, so a
/// DNS outage at start-up does not stop xccd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunServer {
    /// IP literal or DNS name.
    pub host: String,
    /// UDP port.
    pub port: u16,
}

impl std::fmt::Display for StunServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl StunServer {
    /// Parses one entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> std::result::Result<Self, String> {
        let entry = entry.trim();
        if let Ok(sa) = entry.parse::<SocketAddr>() {
            return Self::checked(sa.ip().to_string(), sa.port(), entry);
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return Self::checked(ip.to_string(), DEFAULT_STUN_PORT, entry);
        }
        let (host, port) = match entry.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{entry:?}: port {p:?} is not a number 1-65535"))?,
            ),
            None => (entry, DEFAULT_STUN_PORT),
        };
        let valid_name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid_name {
            return Err(format!(
                "{entry:?} is neither an IP address nor a host name"
            ));
        }
        Self::checked(host.to_owned(), port, entry)
    }

    fn checked(host: String, port: u16, entry: &str) -> std::result::Result<Self, String> {
        if port == 0 {
            return Err(format!("{entry:?}: port 0"));
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && (ip.is_unspecified() || ip.is_multicast())
        {
            return Err(format!("{entry:?} cannot be a STUN server"));
        }
        Ok(Self { host, port })
    }
}

/// `[turn]`: XCC as its own TURN client. For satellites whose uplink lets no inbound media
/// through, every call's client leg is relayed through allocations XCC holds on this server
/// (UDP). Off unless `server` is set: most satellites are reachable directly or through STUN and
/// hole punching, and a relay costs a hop and server quota.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// The TURN server, `"HOST[:PORT]"` or `"[IPv6]:PORT"` (port 3478 by default); unset or
    /// empty: no relay. Resolved once at start: calls cannot be set up without it, so a name that
    /// does not resolve stops xccd rather than refusing every call later.
    pub server: Option<String>,
    /// Transport towards the server: `"udp"` (the allocation on the client leg's own socket) or
    /// `"tcp"` (a connection per allocation, for uplinks that let only TCP out; such calls do not
    /// survive a restart). TLS is not supported and refused by name.
    pub transport: String,
    /// Long-term credential username (RFC 8489 §9.2).
    pub username: Option<String>,
    /// Long-term credential password (or `password_file`, exactly one).
    pub password: Option<Secret>,
    /// File holding the password (its content without a trailing newline), so the main file
    /// can stay world-readable.
    pub password_file: Option<PathBuf>,
    /// Allocation lifetime XCC asks for, seconds (RFC 8656 default 600); the server may shorten
    /// it and XCC refreshes before it ends.
    pub lifetime_secs: u64,
    /// Client legs kept allocated ahead of calls, so answering never waits for a round trip to
    /// the server; a burst larger than this is refused (503 / UNAVAILABLE) until more are ready.
    pub spares: usize,
}

/// The TURN port used when `[turn] server` names none (RFC 8656).
pub const DEFAULT_TURN_PORT: u16 = 3478;
/// The default `[turn] transport`.
pub const TURN_TRANSPORT_UDP: &str = "udp";
/// `[turn] transport` for TCP connections to the server.
pub const TURN_TRANSPORT_TCP: &str = "tcp";

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            server: None,
            transport: TURN_TRANSPORT_UDP.into(),
            username: None,
            password: None,
            password_file: None,
            lifetime_secs: 600,
            spares: 4,
        }
    }
}

/// `[turn]` after validation: the server resolved, the password read. `None` in
/// [`Validated::turn`] means no relay.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnSettings {
    /// `server` as written, for logs (the name an operator recognises).
    pub server_name: String,
    /// The address allocations are made on.
    pub server: SocketAddr,
    /// Long-term credential username.
    pub username: String,
    /// Long-term credential password.
    pub password: Secret,
    /// Requested allocation lifetime.
    pub lifetime: std::time::Duration,
    /// Client legs kept allocated ahead of calls.
    pub spares: usize,
    /// How allocations reach the server.
    pub transport: xcc_core::nat::turn::TurnTransport,
}

impl TurnSettings {
    /// What the media plane needs to relay (`MediaEngine::start_relayed`).
    pub fn relay_config(&self) -> xcc_core::media::RelayConfig {
        xcc_core::media::RelayConfig {
            server: self.server,
            username: self.username.clone(),
            password: self.password.0.clone(),
            lifetime: self.lifetime,
            spares: self.spares,
            transport: self.transport,
        }
    }
}

impl TurnConfig {
    /// The server text when the relay is on (`server` set and not blank).
    pub fn server_text(&self) -> Option<&str> {
        self.server
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// Checks every key; resolves the server (preferring the family of `media_bind`, which the
    /// allocating sockets are bound to) and reads the password file. `Ok(None)` when off.
    pub fn validate(&self, media_bind: IpAddr) -> Result<Option<TurnSettings>> {
        use xcc_core::nat::turn::TurnTransport;
        let transport = match self.transport.trim() {
            TURN_TRANSPORT_UDP => TurnTransport::Udp,
            TURN_TRANSPORT_TCP => TurnTransport::Tcp,
            other => {
                let what = if other.eq_ignore_ascii_case("tls") {
                    format!("{other:?}: TURN over TLS is not supported yet (see docs/nat.md);")
                } else {
                    format!("{other:?} is not a transport;")
                };
                return Err(invalid(
                    "turn.transport",
                    format!("{what} use \"udp\" or \"tcp\""),
                ));
            }
        };
        if !(60..=3600).contains(&self.lifetime_secs) {
            return Err(invalid(
                "turn.lifetime_secs",
                format!("{} is outside 60-3600", self.lifetime_secs),
            ));
        }
        if !(1..=256).contains(&self.spares) {
            return Err(invalid(
                "turn.spares",
                format!("{} is outside 1-256", self.spares),
            ));
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(invalid(
                "turn.password_file",
                "set turn.password or turn.password_file, not both".into(),
            ));
        }
        let Some(text) = self.server_text() else {
            return Ok(None);
        };
        let username = match self.username.as_deref().map(str::trim) {
            Some(u) if !u.is_empty() => u.to_owned(),
            _ => {
                return Err(invalid(
                    "turn.username",
                    "required when turn.server is set".into(),
                ));
            }
        };
        let password = match (&self.password, &self.password_file) {
            (Some(p), _) if p.0.is_empty() => {
                return Err(invalid("turn.password", "must not be empty".into()));
            }
            (Some(p), _) => p.clone(),
            (None, Some(path)) => read_turn_password(path)?,
            (None, None) => {
                return Err(invalid(
                    "turn.password",
                    "required when turn.server is set: set turn.password or turn.password_file"
                        .into(),
                ));
            }
        };
        let server = resolve_turn_server(text, media_bind)?;
        Ok(Some(TurnSettings {
            server_name: text.to_owned(),
            server,
            username,
            password,
            lifetime: std::time::Duration::from_secs(self.lifetime_secs),
            spares: self.spares,
            transport,
        }))
    }
}

/// The password file's content without its trailing newline (`\n` or `\r\n`); anything else,
/// spaces included, is part of the password.
fn read_turn_password(path: &Path) -> Result<Secret> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid("turn.password_file", format!("{}: {e}", path.display())))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(invalid(
            "turn.password_file",
            format!("{} is empty", path.display()),
        ));
    }
    Ok(Secret(text.to_owned()))
}

/// `[turn] server` to one address. A name may resolve to both families: the media sockets that
/// allocate are bound to `media_bind`, so an address of its family is chosen (an IPv4 socket cannot
/// reach an IPv6 server); an IP literal of the other family is refused.
fn resolve_turn_server(text: &str, media_bind: IpAddr) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    const KEY: &str = "turn.server";
    let same_family = |a: &SocketAddr| match media_bind {
        IpAddr::V4(_) => a.is_ipv4(),
        // An unspecified IPv6 bind is dual-stack on Linux by default: either family is reachable.
        IpAddr::V6(ip) => a.is_ipv6() || ip.is_unspecified(),
    };
    let literal = text.parse::<SocketAddr>().ok().or_else(|| {
        text.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, DEFAULT_TURN_PORT))
    });
    let addr = match literal {
        Some(addr) => addr,
        None => {
            let with_port = match text.rsplit_once(':') {
                Some((_, p)) if p.parse::<u16>().is_ok() => text.to_owned(),
                Some(_) => {
                    return Err(invalid(
                        KEY,
                        format!("{text:?} is not HOST[:PORT] (port 1-65535)"),
                    ));
                }
                None => format!("{text}:{DEFAULT_TURN_PORT}"),
            };
            let addrs: Vec<SocketAddr> = with_port
                .to_socket_addrs()
                .map_err(|e| {
                    invalid(
                        KEY,
                        format!(
                            "{text:?} does not resolve: {e} (calls cannot be relayed without the \
                             TURN server)"
                        ),
                    )
                })?
                .collect();
            let Some(addr) = addrs
                .iter()
                .find(|a| same_family(a))
                .or(addrs.first())
                .copied()
            else {
                return Err(invalid(KEY, format!("{text:?} resolves to no address")));
            };
            addr
        }
    };
    if addr.ip().is_unspecified() || addr.ip().is_multicast() || addr.port() == 0 {
        return Err(invalid(KEY, format!("{addr} cannot be a TURN server")));
    }
    if !same_family(&addr) {
        return Err(invalid(
            KEY,
            format!(
                "{addr} is not reachable from media.bind_address {media_bind} (another address \
                 family)"
            ),
        ));
    }
    Ok(addr)
}

/// `[sdes]`: SRTP suites XCC offers when it sends the offer to a client.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SdesConfig {
    /// Suite names as in `a=crypto`, best first.
    pub offer_suites: Vec<String>,
}

impl Default for SdesConfig {
    fn default() -> Self {
        Self {
            offer_suites: SrtpSuite::ALL
                .iter()
                .map(|s| s.sdes_name().to_owned())
                .collect(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directive: `info`, `xcc_grpc=debug,info`, ... (`RUST_LOG` overrides).
    pub level: String,
    /// `text` for people, `json` for collectors.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

// ---- [sip] (sipwire) ----------------------------------------------------------------------------

/// SIP transport towards a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    /// Datagrams; transactions retransmit.
    Udp,
    /// One connection per peer, reused both ways.
    Tcp,
}

impl SipTransport {
    /// The xcc-sip transport.
    pub fn to_sip(self) -> xcc_sip::transport::Transport {
        match self {
            SipTransport::Udp => xcc_sip::transport::Transport::Udp,
            SipTransport::Tcp => xcc_sip::transport::Transport::Tcp,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SipTransport::Udp => "udp",
            SipTransport::Tcp => "tcp",
        }
    }
}

/// A secret read from the file: never printed by `Debug`, so a logged config cannot leak it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[sip]`: the B2BUA between the XPhone server (4901 in, 4900 out) and the PBX/SBC (5060).
///
/// SIP runs only when it can place calls: by default (`enabled` unset) exactly when both
/// `server_target` and `pbx_target` are set, so xccd on an empty file (and every gRPC-only
/// deployment) never binds 5060/4901.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// `true` requires both targets, `false` keeps SIP off; unset: on when both targets are set.
    pub enabled: Option<bool>,
    /// Trunk listener (UDP and TCP): the PBX/SBC sends here.
    pub trunk_listen: SocketAddr,
    /// Server-side listener (UDP and TCP): the XPhone server sends here.
    pub server_listen: SocketAddr,
    /// The XPhone server, `host[:port]` (port default 4900); resolved at start and at each reload.
    pub server_target: Option<String>,
    /// Transport towards the server.
    pub server_transport: SipTransport,
    /// The PBX/SBC, `host[:port]` (port default 5060); resolved at start and at each reload.
    pub pbx_target: Option<String>,
    /// Transport towards the PBX.
    pub pbx_transport: SipTransport,
    /// Address in Via/Contact towards the PBX; unset: `trunk_listen`'s address if specific,
    /// else the PBX-leg media address (`nat.pbx_address` or its fallback).
    pub trunk_advertised: Option<IpAddr>,
    /// Address in Via/Contact towards the server; unset: `server_listen`'s address if specific,
    /// else the same fallback.
    pub server_advertised: Option<IpAddr>,
    /// Digest user for 401/407 challenges from the PBX.
    pub pbx_user: Option<String>,
    /// Digest password (or use `pbx_password_file`, not both).
    pub pbx_password: Option<Secret>,
    /// File holding the digest password (first line; a trailing newline is ignored).
    pub pbx_password_file: Option<PathBuf>,
    /// OPTIONS keepalive towards both peers, seconds; 0 = off.
    pub options_interval_secs: u64,
    /// DSCP on signalling packets (24 = CS3).
    pub dscp: u8,
    /// Retry-After seconds on 503 (pool exhausted, no TURN allocation ready, draining).
    pub retry_after_secs: u32,
    /// RFC 3261 T1 in milliseconds (timer B/F = 64*T1: the PBX timeout).
    pub t1_ms: u64,
}

/// Default trunk port (RFC 3261 and the product documentation).
pub const SIP_TRUNK_PORT: u16 = 5060;
/// Default port XCC listens on for the XPhone server.
pub const SIP_SERVER_IN_PORT: u16 = 4901;
/// Default port of the XPhone server.
pub const SIP_SERVER_OUT_PORT: u16 = 4900;

impl Default for SipConfig {
    fn default() -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Self {
            enabled: None,
            trunk_listen: SocketAddr::new(any, SIP_TRUNK_PORT),
            server_listen: SocketAddr::new(any, SIP_SERVER_IN_PORT),
            server_target: None,
            server_transport: SipTransport::Tcp,
            pbx_target: None,
            pbx_transport: SipTransport::Udp,
            trunk_advertised: None,
            server_advertised: None,
            pbx_user: None,
            pbx_password: None,
            pbx_password_file: None,
            options_interval_secs: 30,
            dscp: 24,
            retry_after_secs: 30,
            t1_ms: 500,
        }
    }
}

/// `[sip]` after validation: targets resolved, the password read. `None` in [`Validated::sip`]
/// means SIP is off.
#[derive(Debug, Clone, PartialEq)]
pub struct SipSettings {
    /// Trunk listener (UDP and TCP).
    pub trunk_listen: SocketAddr,
    /// Server-side listener (UDP and TCP).
    pub server_listen: SocketAddr,
    /// The XPhone server.
    pub server_target: SocketAddr,
    /// Transport towards the server.
    pub server_transport: SipTransport,
    /// The PBX/SBC.
    pub pbx_target: SocketAddr,
    /// Transport towards the PBX.
    pub pbx_transport: SipTransport,
    /// Configured Via/Contact address towards the PBX, if any.
    pub trunk_advertised: Option<IpAddr>,
    /// Configured Via/Contact address towards the server, if any.
    pub server_advertised: Option<IpAddr>,
    /// Digest user and password for the PBX.
    pub pbx_credentials: Option<(String, Secret)>,
    /// OPTIONS interval; `None` = off.
    pub options_interval: Option<std::time::Duration>,
    /// DSCP on signalling.
    pub dscp: u8,
    /// Retry-After on 503.
    pub retry_after_secs: u32,
    /// RFC 3261 T1.
    pub t1: std::time::Duration,
}

impl SipConfig {
    /// Whether SIP runs with this configuration (see [`SipConfig::enabled`]).
    pub fn is_enabled(&self) -> bool {
        self.enabled
            .unwrap_or(self.server_target.is_some() && self.pbx_target.is_some())
    }

    /// Checks every key and resolves the targets; `Ok(None)` when SIP is off.
    pub fn validate(&self) -> Result<Option<SipSettings>> {
        if self.dscp > 63 {
            return Err(invalid(
                "sip.dscp",
                format!("{} does not fit in 6 bits", self.dscp),
            ));
        }
        if !(10..=10_000).contains(&self.t1_ms) {
            return Err(invalid(
                "sip.t1_ms",
                format!("{} is outside 10-10000 ms", self.t1_ms),
            ));
        }
        for (key, addr) in [
            ("sip.trunk_advertised", self.trunk_advertised),
            ("sip.server_advertised", self.server_advertised),
        ] {
            if let Some(addr) = addr
                && (addr.is_unspecified() || addr.is_multicast())
            {
                return Err(invalid(
                    key,
                    format!("{addr} cannot be advertised to a peer"),
                ));
            }
        }
        for (key, addr) in [
            ("sip.trunk_listen", self.trunk_listen),
            ("sip.server_listen", self.server_listen),
        ] {
            if addr.ip().is_multicast() || addr.port() == 0 {
                return Err(invalid(
                    key,
                    format!("{addr}: a listener needs a unicast address and a fixed port"),
                ));
            }
        }
        if self.trunk_listen == self.server_listen {
            return Err(invalid(
                "sip.server_listen",
                format!("{} is also sip.trunk_listen", self.server_listen),
            ));
        }
        let credentials = self.credentials()?;
        if self.enabled == Some(true) {
            for (key, v) in [
                ("sip.server_target", &self.server_target),
                ("sip.pbx_target", &self.pbx_target),
            ] {
                if v.is_none() {
                    return Err(invalid(key, "required when sip.enabled = true".into()));
                }
            }
        }
        // Targets are checked even when SIP is off, so a typo is caught before it is switched on.
        let server = self
            .server_target
            .as_deref()
            .map(|t| resolve_target("sip.server_target", t, SIP_SERVER_OUT_PORT))
            .transpose()?;
        let pbx = self
            .pbx_target
            .as_deref()
            .map(|t| resolve_target("sip.pbx_target", t, SIP_TRUNK_PORT))
            .transpose()?;
        let (true, Some(server_target), Some(pbx_target)) = (self.is_enabled(), server, pbx) else {
            return Ok(None);
        };
        Ok(Some(SipSettings {
            trunk_listen: self.trunk_listen,
            server_listen: self.server_listen,
            server_target,
            server_transport: self.server_transport,
            pbx_target,
            pbx_transport: self.pbx_transport,
            trunk_advertised: self.trunk_advertised,
            server_advertised: self.server_advertised,
            pbx_credentials: credentials,
            options_interval: (self.options_interval_secs > 0)
                .then(|| std::time::Duration::from_secs(self.options_interval_secs)),
            dscp: self.dscp,
            retry_after_secs: self.retry_after_secs,
            t1: std::time::Duration::from_millis(self.t1_ms),
        }))
    }

    fn credentials(&self) -> Result<Option<(String, Secret)>> {
        let password = match (&self.pbx_password, &self.pbx_password_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "sip.pbx_password_file",
                    "set sip.pbx_password or sip.pbx_password_file, not both".into(),
                ));
            }
            (Some(p), None) => Some(p.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid("sip.pbx_password_file", format!("{}: {e}", path.display()))
                })?;
                let line = text.lines().next().unwrap_or_default().to_owned();
                if line.is_empty() {
                    return Err(invalid(
                        "sip.pbx_password_file",
                        format!("{} is empty", path.display()),
                    ));
                }
                Some(Secret(line))
            }
            (None, None) => None,
        };
        match (&self.pbx_user, password) {
            (Some(user), Some(password)) if !user.is_empty() => Ok(Some((user.clone(), password))),
            (Some(_), Some(_)) => Err(invalid("sip.pbx_user", "must not be empty".into())),
            (Some(_), None) => Err(invalid(
                "sip.pbx_password",
                "sip.pbx_user needs sip.pbx_password or sip.pbx_password_file".into(),
            )),
            (None, Some(_)) => Err(invalid(
                "sip.pbx_user",
                "required when a PBX password is set".into(),
            )),
            (None, None) => Ok(None),
        }
    }
}

/// The port of a `host[:port]` / `[v6]:port` target without resolving it (for the firewall
/// generator, which must not depend on DNS).
pub fn target_port(text: &str, default_port: u16) -> u16 {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return addr.port();
    }
    if text.parse::<IpAddr>().is_ok() || text.ends_with(']') {
        return default_port;
    }
    text.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(default_port)
}

/// `host[:port]` or `[v6]:port` to one address (the first the resolver gives).
fn resolve_target(key: &'static str, text: &str, default_port: u16) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return check_target(key, addr);
    }
    if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return check_target(key, SocketAddr::new(ip, default_port));
    }
    let with_port = if text
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        text.to_owned()
    } else {
        format!("{text}:{default_port}")
    };
    let mut addrs = with_port
        .to_socket_addrs()
        .map_err(|e| invalid(key, format!("{text:?} does not resolve: {e}")))?;
    let addr = addrs
        .next()
        .ok_or_else(|| invalid(key, format!("{text:?} resolves to no address")))?;
    check_target(key, addr)
}

fn check_target(key: &'static str, addr: SocketAddr) -> Result<SocketAddr> {
    if addr.ip().is_unspecified() || addr.ip().is_multicast() || addr.port() == 0 {
        return Err(invalid(key, format!("{addr} is not a peer address")));
    }
    Ok(addr)
}

/// A configuration that passed [`Config::validate`], with the files it names already read.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The configuration as written.
    pub config: Config,
    /// Mutual-TLS material when `[control] tls_*` are set.
    pub tls: Option<TlsMaterial>,
    /// Suites offered to clients, parsed.
    pub offer_suites: Vec<SrtpSuite>,
    /// `[stun] servers`, parsed, in order.
    pub stun_servers: Vec<StunServer>,
    /// `[sip]` resolved; `None` when SIP is off.
    pub sip: Option<SipSettings>,
    /// `[turn]` resolved; `None` when XCC relays nothing.
    pub turn: Option<TurnSettings>,
}

impl Config {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::ConfigSyntax {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads and parses `path`. A missing file means "all defaults" (the packaged unit always passes
    /// `--config /etc/xcc/xcc.toml`, which an operator may not have written yet); that is logged by
    /// the caller.
    pub fn load(path: &Path) -> Result<(Self, bool)> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Self::parse(&text, path)?, true)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Self::default(), false)),
            Err(source) => Err(Error::ConfigRead {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Cross-field rules; reads the TLS files. Every error names its key.
    pub fn validate(self) -> Result<Validated> {
        let m = &self.media;
        if m.port_min > m.port_max {
            return Err(invalid(
                "media.port_min",
                format!("{} is above media.port_max {}", m.port_min, m.port_max),
            ));
        }
        if m.port_min < 1024 {
            return Err(invalid(
                "media.port_min",
                format!("{} is a privileged port; use 1024 or above", m.port_min),
            ));
        }
        // One call takes two even/odd pairs; the first even port at or above port_min starts them.
        let first_even = u32::from(m.port_min) + u32::from(m.port_min % 2);
        let usable = (u32::from(m.port_max) + 1).saturating_sub(first_even);
        if usable < 4 {
            return Err(invalid(
                "media.port_max",
                format!(
                    "range {}-{} holds {usable} usable ports; one call needs 4",
                    m.port_min, m.port_max
                ),
            ));
        }
        if m.dscp > 63 {
            return Err(invalid(
                "media.dscp",
                format!("{} does not fit in 6 bits", m.dscp),
            ));
        }
        if m.bind_address.is_multicast() {
            return Err(invalid(
                "media.bind_address",
                format!("{} is a multicast address", m.bind_address),
            ));
        }
        for (key, addr) in [
            ("nat.public_address", self.nat.public_address),
            ("nat.pbx_address", self.nat.pbx_address),
        ] {
            if let Some(addr) = addr
                && (addr.is_unspecified() || addr.is_multicast())
            {
                return Err(invalid(
                    key,
                    format!("{addr} cannot be advertised to a peer"),
                ));
            }
        }
        if let Err(e) = self.log.level.parse::<tracing_subscriber::EnvFilter>() {
            return Err(invalid("log.level", e.to_string()));
        }
        let mut offer_suites = Vec::new();
        for name in &self.sdes.offer_suites {
            match SrtpSuite::from_sdes_name(name) {
                Some(s) if !offer_suites.contains(&s) => offer_suites.push(s),
                Some(_) => {
                    return Err(invalid("sdes.offer_suites", format!("{name} listed twice")));
                }
                None => {
                    return Err(invalid(
                        "sdes.offer_suites",
                        format!("unknown suite {name:?}"),
                    ));
                }
            }
        }
        if offer_suites.is_empty() {
            return Err(invalid(
                "sdes.offer_suites",
                "at least one suite is needed".into(),
            ));
        }
        let stun_servers = self.stun_servers()?;
        self.metrics.address()?;
        if !self.state.dir.is_absolute() {
            return Err(invalid(
                "state.dir",
                format!("{} is not an absolute path", self.state.dir.display()),
            ));
        }
        let tls = self.control_tls()?;
        let sip = self.sip.validate()?;
        let turn = self.turn.validate(self.media.bind_address)?;
        let c = &self.control;
        if !c.listen.ip().is_loopback() && tls.is_none() && !c.allow_insecure_control {
            return Err(invalid(
                "control.listen",
                format!(
                    "{} is not a loopback address: set control.tls_cert, control.tls_key and control.tls_client_ca \
                     (mutual TLS), or control.allow_insecure_control = true on a trusted network",
                    c.listen
                ),
            ));
        }
        Ok(Validated {
            config: self,
            tls,
            offer_suites,
            stun_servers,
            sip,
            turn,
        })
    }

    fn stun_servers(&self) -> Result<Vec<StunServer>> {
        let s = &self.stun;
        if s.servers.len() > 16 {
            return Err(invalid(
                "stun.servers",
                format!("{} servers listed; at most 16", s.servers.len()),
            ));
        }
        let mut servers = Vec::new();
        for entry in &s.servers {
            let server = StunServer::parse(entry).map_err(|r| invalid("stun.servers", r))?;
            if servers.contains(&server) {
                return Err(invalid("stun.servers", format!("{server} listed twice")));
            }
            servers.push(server);
        }
        if !(5..=86_400).contains(&s.refresh_secs) {
            return Err(invalid(
                "stun.refresh_secs",
                format!("{} is outside 5-86400", s.refresh_secs),
            ));
        }
        if !(1..=3_600).contains(&s.retry_secs) {
            return Err(invalid(
                "stun.retry_secs",
                format!("{} is outside 1-3600", s.retry_secs),
            ));
        }
        Ok(servers)
    }

    fn control_tls(&self) -> Result<Option<TlsMaterial>> {
        let c = &self.control;
        let keys = [
            ("control.tls_cert", &c.tls_cert),
            ("control.tls_key", &c.tls_key),
            ("control.tls_client_ca", &c.tls_client_ca),
        ];
        let set = keys.iter().filter(|(_, v)| v.is_some()).count();
        if set == 0 {
            return Ok(None);
        }
        let read = |(key, path): (&'static str, &Option<PathBuf>)| -> Result<Vec<u8>> {
            let Some(path) = path else {
                return Err(invalid(
                    key,
                    "required when any control.tls_* key is set".into(),
                ));
            };
            std::fs::read(path).map_err(|e| invalid(key, format!("{}: {e}", path.display())))
        };
        Ok(Some(TlsMaterial {
            cert_pem: read(keys[0])?,
            key_pem: read(keys[1])?,
            client_ca_pem: read(keys[2])?,
        }))
    }
}

fn invalid(key: &'static str, reason: String) -> Error {
    Error::ConfigInvalid { key, reason }
}

fn opt_line(key: &str, value: Option<impl std::fmt::Display>, example: &str) -> String {
    match value {
        Some(v) => format!("{key} = \"{v}\""),
        None => format!("# {key} = \"{example}\""),
    }
}

/// The defaults as a commented TOML file (`xccd print-default-config`); parses back to
/// `Config::default()`.
pub fn default_toml() -> String {
    let c = Config::default();
    let m = &c.media;
    let suites = c
        .sdes
        .offer_suites
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"# xcc.toml: every key is optional; these are the defaults.

[media]
# Address the media sockets bind to. 0.0.0.0 = all IPv4 interfaces.
bind_address = "{bind}"
# UDP port pool (inclusive). Each call takes four ports: two even RTP ports and their RTCP (RTP + 1).
# Live on reload: new ports are handed out at once; removed ports stay with their calls, then close.
port_min = {pmin}
port_max = {pmax}
# Seconds a freed port rests before reuse, so late packets never reach a new call.
quarantine_secs = {quar}
# Forwarding threads; 0 = one per CPU core.
workers = {workers}
# DSCP mark on media packets (46 = EF). Live on reload for new calls.
dscp = {dscp}
# A call with no media for this long is ended (seconds); the longer limit applies while on hold.
media_timeout_secs = {mto}
hold_timeout_secs = {hto}
# After (re)configuration a plain-RTP leg may latch onto another source than signalled for this long.
rtp_learning_window_ms = {learn}
# SO_RCVBUF / SO_SNDBUF of every media socket.
socket_buffer_bytes = {buf}

[media.quality]
# Call quality: how often loss, jitter and MOS are sampled and the VoIP-ready limits checked
# (durations are {{ secs, nanos }} tables; at least 100 ms).
eval_interval = {ev}
# A peer's RTCP report / a round-trip time older than this stops counting.
peer_report_max_age = {pra}
rtt_max_age = {rma}

[media.quality.voip_ready]
# A limit must stay broken (or, to recover, under limit x (1 - recover_margin)) this long before
# the gRPC feed gets an alert.
min_duration = {mind}
recover_margin = {margin:?}

[media.quality.voip_ready.limits]
one_way_delay_ms = {owd:?}
round_trip_ms = {rt:?}
loss_percent = {loss:?}
jitter_ms = {jit:?}

[control]
# gRPC control API. Any non-loopback address requires mutual TLS (the three tls_* keys) or
# allow_insecure_control = true.
listen = "{listen}"
# tls_cert = "/etc/xcc/control.crt"
# tls_key = "/etc/xcc/control.key"
# tls_client_ca = "/etc/xcc/clients-ca.crt"
allow_insecure_control = {insecure}
# SIGTERM (or xccctl drain --exit) drains: no new sessions, running calls continue up to this
# many seconds. Live on reload, also for a drain already running.
drain_grace_secs = {grace}

[nat]
# Address signalled to clients; when set, [stun] is not used. Unset: learned from [stun] servers,
# and until one answers (or without servers): media.bind_address if it is specific, else the first
# non-loopback interface address, else 127.0.0.1 (xccd logs which it chose and why).
{public}
# Address signalled to the PBX. Unset: chosen the same way.
{pbx}

[stun]
# STUN servers XCC asks for its public address (used unless nat.public_address is set), in order
# of preference, failing over to the next: "IP", "IP:PORT", "[IPv6]:PORT", "HOST" or "HOST:PORT"
# (port 3478 when omitted). Empty: no STUN; the fallback address above is advertised.
servers = []
# Seconds between checks once the address is known; a change is re-advertised without a restart.
refresh_secs = {refresh}
# Seconds to wait after every server failed in a row before asking again.
# The three [stun] keys are live on reload: discovery restarts with the new list and the advertised
# address stays until a new server answers.
retry_secs = {retry}

[turn]
# XCC as its own TURN client (UDP), for uplinks that let no inbound media through: every call's
# client leg is relayed through allocations XCC holds on this server. Unset or "": off.
# "HOST[:PORT]" or "[IPv6]:PORT" (port {turn_port} when omitted). A name is resolved at start and
# must resolve (xccd does not start otherwise). Every [turn] key needs a restart.
# server = "turn.example.net:{turn_port}"
# "udp", or "tcp" for uplinks that let only TCP out (TCP-relayed calls do not survive a restart).
transport = "{turn_transport}"
# Long-term credentials: username plus password or password_file (exactly one; the file's
# content without its trailing newline).
# username = "xcc"
# password_file = "/etc/xcc/turn-password"
# Allocation lifetime XCC asks for, seconds (60-3600); refreshed before it ends.
lifetime_secs = {turn_lifetime}
# Client legs kept allocated ahead of calls (1-256); calls beyond them are refused (SIP 503 with
# Retry-After, gRPC UNAVAILABLE) until new allocations are ready.
spares = {turn_spares}

[sdes]
# SRTP suites XCC offers to clients (when the PBX made the offer), best first.
offer_suites = [{suites}]

[state]
# Calls are kept here (one file per call under calls/, owner-only) so that they survive a crash or
# restart of xccd. The packaged unit's StateDirectory= creates /var/lib/xcc. Changing it needs a
# restart (the calls stored in the old directory are not moved).
dir = "{state_dir}"

[log]
# tracing filter, e.g. "info" or "xcc_grpc=debug,info"; RUST_LOG overrides it. Live on reload.
level = "{level}"
# "text" or "json".
format = "text"

[sip]
# The B2BUA between the XPhone server and the PBX/SBC. Unset `enabled`: SIP runs exactly when both
# server_target and pbx_target are set; true requires them; false keeps SIP off.
# enabled = true
# Listeners, UDP and TCP each: the PBX/SBC sends to trunk_listen, the XPhone server to server_listen.
trunk_listen = "{trunk_listen}"
server_listen = "{server_listen}"
# The XPhone server, "host[:port]" (default port {server_port}), and the transport towards it.
# server_target = "10.0.0.2:{server_port}"
server_transport = "{server_transport}"
# The PBX/SBC, "host[:port]" (default port {trunk_port}), and the transport towards it.
# pbx_target = "10.0.0.5:{trunk_port}"
pbx_transport = "{pbx_transport}"
# Address written in Via/Contact towards each peer. Unset: the listener's address if specific,
# else the PBX-leg media address (nat.pbx_address or its fallback).
# trunk_advertised = "10.0.0.7"
# server_advertised = "10.0.0.7"
# Digest credentials answering the PBX's 401/407: pbx_user plus pbx_password or pbx_password_file.
# pbx_user = "xcc"
# pbx_password_file = "/etc/xcc/pbx-password"
# OPTIONS keepalive towards both peers, seconds (0 = off).
# Live on reload: server_target, pbx_target, their transports, the pbx_* credentials and
# options_interval_secs (new calls and probes; running calls keep their dialogs). The rest of [sip]
# needs a restart, and so does switching SIP on or off.
options_interval_secs = {options}
# DSCP on signalling packets (24 = CS3).
dscp = {sip_dscp}
# Retry-After (seconds) on 503 when the media pool is exhausted, no TURN allocation is ready
# ([turn]) or XCC is draining.
retry_after_secs = {retry_after}
# RFC 3261 T1 (ms): retransmissions start here; an unanswered INVITE times out after 64*T1.
t1_ms = {t1}

[metrics]
# Prometheus endpoint (GET /metrics, plain HTTP); "" disables it. If the address cannot be bound
# xccd logs an error and runs on without metrics.
listen = "{metrics}"
"#,
        bind = m.bind_address,
        pmin = m.port_min,
        pmax = m.port_max,
        quar = m.quarantine_secs,
        workers = m.workers,
        dscp = m.dscp,
        mto = m.media_timeout_secs,
        hto = m.hold_timeout_secs,
        learn = m.rtp_learning_window_ms,
        buf = m.socket_buffer_bytes,
        listen = c.control.listen,
        insecure = c.control.allow_insecure_control,
        grace = c.control.drain_grace_secs,
        public = opt_line("public_address", c.nat.public_address, "203.0.113.10"),
        pbx = opt_line("pbx_address", c.nat.pbx_address, "10.0.0.5"),
        level = c.log.level,
        refresh = c.stun.refresh_secs,
        retry = c.stun.retry_secs,
        turn_port = DEFAULT_TURN_PORT,
        turn_transport = c.turn.transport,
        turn_lifetime = c.turn.lifetime_secs,
        turn_spares = c.turn.spares,
        trunk_listen = c.sip.trunk_listen,
        server_listen = c.sip.server_listen,
        server_port = SIP_SERVER_OUT_PORT,
        trunk_port = SIP_TRUNK_PORT,
        server_transport = c.sip.server_transport.name(),
        pbx_transport = c.sip.pbx_transport.name(),
        options = c.sip.options_interval_secs,
        sip_dscp = c.sip.dscp,
        retry_after = c.sip.retry_after_secs,
        t1 = c.sip.t1_ms,
        metrics = c.metrics.listen,
        ev = duration_toml(m.quality.eval_interval),
        pra = duration_toml(m.quality.peer_report_max_age),
        rma = duration_toml(m.quality.rtt_max_age),
        mind = duration_toml(m.quality.voip_ready.min_duration),
        margin = m.quality.voip_ready.recover_margin,
        owd = m.quality.voip_ready.limits.one_way_delay_ms,
        rt = m.quality.voip_ready.limits.round_trip_ms,
        loss = m.quality.voip_ready.limits.loss_percent,
        jit = m.quality.voip_ready.limits.jitter_ms,
        state_dir = c.state.dir.display(),
    )
}

/// A `Duration` the way serde reads it from TOML.
fn duration_toml(d: std::time::Duration) -> String {
    format!("{{ secs = {}, nanos = {} }}", d.as_secs(), d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("test.toml"))
    }

    fn key_of(e: Error) -> &'static str {
        match e {
            Error::ConfigInvalid { key, .. } => key,
            other => panic!("expected ConfigInvalid, got {other}"),
        }
    }

    #[test]
    fn empty_file_is_all_defaults_and_valid() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        let v = c.validate().unwrap();
        assert!(v.tls.is_none());
        assert_eq!(v.offer_suites, SrtpSuite::ALL.to_vec());
    }

    #[test]
    fn printed_defaults_parse_back_to_defaults() {
        let text = default_toml();
        assert_eq!(parse(&text).unwrap(), Config::default());
        assert!(
            text.contains("# public_address"),
            "optional keys are shown commented out"
        );
    }

    #[test]
    fn metrics_listen_is_checked_and_empty_disables() {
        let c = parse("[metrics]\nlisten = \"\"\n").unwrap();
        assert_eq!(c.metrics.address().unwrap(), None);
        let c = parse("[metrics]\nlisten = \"[::1]:9999\"\n").unwrap();
        assert_eq!(
            c.metrics.address().unwrap(),
            Some("[::1]:9999".parse().unwrap())
        );
        let c = parse("[metrics]\nlisten = \"localhost\"\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "metrics.listen");
        assert!(
            parse("[metrics]\nport = 1\n").is_err(),
            "unknown key refused"
        );
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = parse("[media]\nport_mni = 40000\n").unwrap_err();
        assert!(e.to_string().contains("port_mni"), "{e}");
        let e = parse("[bogus]\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = parse("[control]\nlisten = \"127.0.0.1:3280\"\ntls = true\n").unwrap_err();
        assert!(e.to_string().contains("tls"), "{e}");
    }

    #[test]
    fn bad_address_is_refused_naming_the_key() {
        let e = parse("[control]\nlisten = \"not-an-address\"\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("listen"), "{text}");
        assert!(matches!(e, Error::ConfigSyntax { .. }));
    }

    #[test]
    fn reversed_port_range_names_port_min() {
        let c = parse("[media]\nport_min = 40000\nport_max = 39000\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "media.port_min");
    }

    #[test]
    fn too_small_port_range_names_port_max() {
        let c = parse("[media]\nport_min = 40001\nport_max = 40003\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "media.port_max");
        let c = parse("[media]\nport_min = 40000\nport_max = 40003\n").unwrap();
        assert!(
            c.validate().is_ok(),
            "four ports from an even start is one call"
        );
    }

    #[test]
    fn non_loopback_control_needs_tls_or_explicit_insecure() {
        let c = parse("[control]\nlisten = \"0.0.0.0:3280\"\n").unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("allow_insecure_control"), "{e}");
        assert_eq!(key_of(e), "control.listen");
        let c =
            parse("[control]\nlisten = \"0.0.0.0:3280\"\nallow_insecure_control = true\n").unwrap();
        assert!(c.validate().is_ok());
        let c = parse("[control]\nlisten = \"[::1]:3280\"\n").unwrap();
        assert!(c.validate().is_ok(), "IPv6 loopback is loopback");
    }

    #[test]
    fn partial_tls_names_the_missing_key() {
        let dir = std::env::temp_dir().join(format!("xcc-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("c.pem");
        std::fs::write(&cert, "x").unwrap();
        let text = format!(
            "[control]\nlisten = \"0.0.0.0:3280\"\ntls_cert = \"{}\"\n",
            cert.display()
        );
        assert_eq!(
            key_of(parse(&text).unwrap().validate().unwrap_err()),
            "control.tls_key"
        );
        let text = format!(
            "[control]\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"/nonexistent/ca.pem\"\n",
            cert.display(),
            cert.display()
        );
        assert_eq!(
            key_of(parse(&text).unwrap().validate().unwrap_err()),
            "control.tls_client_ca"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_log_level_and_suites_are_named() {
        let c = parse("[log]\nlevel = \"info,=[\"\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "log.level");
        let e = parse("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(e.to_string().contains("format"), "{e}");
        let c = parse("[sdes]\noffer_suites = [\"NULL_HMAC\"]\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "sdes.offer_suites");
        let c = parse("[sdes]\noffer_suites = []\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "sdes.offer_suites");
    }

    #[test]
    fn stun_servers_parse_with_default_port_and_bad_ones_are_named() {
        let c = parse(
            "[stun]\nservers = [\"203.0.113.10\", \"203.0.113.11:3479\", \"[2001:db8::1]:5349\", \"stun.example.net\", \"stun2.example.net:19302\"]\n",
        )
        .unwrap();
        let v = c.validate().unwrap();
        let shown: Vec<String> = v.stun_servers.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            shown,
            [
                "203.0.113.10:3478",
                "203.0.113.11:3479",
                "[2001:db8::1]:5349",
                "stun.example.net:3478",
                "stun2.example.net:19302"
            ]
        );
        for bad in [
            "\"0.0.0.0\"",
            "\"host:0\"",
            "\"bad host\"",
            "\"a:b:c\"",
            "\"\"",
        ] {
            let c = parse(&format!("[stun]\nservers = [{bad}]\n")).unwrap();
            assert_eq!(key_of(c.validate().unwrap_err()), "stun.servers", "{bad}");
        }
        let c = parse("[stun]\nservers = [\"203.0.113.10\", \"203.0.113.10:3478\"]\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "stun.servers");
        let c = parse("[stun]\nrefresh_secs = 1\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "stun.refresh_secs");
        let c = parse("[stun]\nretry_secs = 0\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "stun.retry_secs");
        let e = parse("[stun]\nserver = []\n").unwrap_err();
        assert!(e.to_string().contains("server"), "{e}");
    }

    #[test]
    fn sip_is_off_on_defaults_and_on_when_both_targets_are_set() {
        let v = parse("").unwrap().validate().unwrap();
        assert!(v.sip.is_none(), "a fresh machine binds no SIP port");
        let c = parse("[sip]\npbx_target = \"127.0.0.1\"\n").unwrap();
        assert!(
            c.validate().unwrap().sip.is_none(),
            "one target is not enough"
        );
        let c = parse(
            "[sip]\npbx_target = \"127.0.0.1\"\nserver_target = \"[::1]\"\n\
             trunk_listen = \"127.0.0.1:20060\"\n",
        )
        .unwrap();
        let s = c.validate().unwrap().sip.expect("on");
        assert_eq!(s.pbx_target, "127.0.0.1:5060".parse().unwrap());
        assert_eq!(s.server_target, "[::1]:4900".parse().unwrap());
        assert_eq!(s.server_transport, SipTransport::Tcp);
        assert_eq!(s.dscp, 24);
        let c = parse(
            "[sip]\nenabled = false\npbx_target = \"127.0.0.1:5\"\nserver_target = \"127.0.0.1:6\"\n",
        )
        .unwrap();
        assert!(c.validate().unwrap().sip.is_none());
    }

    #[test]
    fn sip_errors_name_their_key() {
        let c = parse("[sip]\nenabled = true\npbx_target = \"127.0.0.1\"\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "sip.server_target");
        let c = parse("[sip]\npbx_target = \"0.0.0.0:5060\"\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "sip.pbx_target");
        let c = parse("[sip]\ndscp = 64\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "sip.dscp");
        let c = parse("[sip]\npbx_user = \"xcc\"\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "sip.pbx_password");
        let c = parse("[sip]\npbx_password = \"pw\"\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "sip.pbx_user");
        let c =
            parse("[sip]\npbx_user = \"u\"\npbx_password = \"p\"\npbx_password_file = \"/x\"\n")
                .unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "sip.pbx_password_file");
        let c =
            parse("[sip]\npbx_user = \"u\"\npbx_password_file = \"/nonexistent/pw\"\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "sip.pbx_password_file");
        let c = parse("[sip]\nserver_listen = \"0.0.0.0:5060\"\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "sip.server_listen");
        let c = parse("[sip]\nt1_ms = 0\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "sip.t1_ms");
        let e = parse("[sip]\npbx_transport = \"sctp\"\n").unwrap_err();
        assert!(e.to_string().contains("pbx_transport"), "{e}");
        let e = parse("[sip]\ntrunk_port = 5060\n").unwrap_err();
        assert!(e.to_string().contains("trunk_port"), "{e}");
    }

    #[test]
    fn sip_password_file_is_read_and_never_debug_printed() {
        let dir = std::env::temp_dir().join(format!("xcc-sip-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let text = format!(
            "[sip]\npbx_target = \"127.0.0.1\"\nserver_target = \"127.0.0.1\"\n\
             pbx_user = \"xcc\"\npbx_password_file = \"{}\"\n",
            pw.display()
        );
        let v = parse(&text).unwrap().validate().unwrap();
        let (user, secret) = v.sip.as_ref().unwrap().pbx_credentials.clone().unwrap();
        assert_eq!((user.as_str(), secret.0.as_str()), ("xcc", "s3cret"));
        let c = parse("[sip]\npbx_user = \"u\"\npbx_password = \"hunter2\"\n").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn advertised_addresses_must_be_usable() {
        let c = parse("[nat]\npublic_address = \"0.0.0.0\"\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "nat.public_address");
    }

    #[test]
    fn turn_is_off_by_default_with_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.turn.server, None);
        assert_eq!(c.turn.transport, "udp");
        assert_eq!((c.turn.lifetime_secs, c.turn.spares), (600, 4));
        assert!(c.validate().unwrap().turn.is_none());
        let c = parse("[turn]\nserver = \"  \"\n").unwrap();
        assert!(
            c.validate().unwrap().turn.is_none(),
            "an empty server is off"
        );
        assert!(default_toml().contains("[turn]\n"));
        assert!(default_toml().contains("# server = \"turn.example.net:3478\""));
    }

    #[test]
    fn turn_parses_with_default_port_and_builds_the_relay_config() {
        let c = parse(
            "[turn]\nserver = \"127.0.0.1\"\nusername = \"xcc\"\npassword = \"pw\"\n\
             lifetime_secs = 900\nspares = 8\n",
        )
        .unwrap();
        let t = c.validate().unwrap().turn.expect("on");
        assert_eq!(t.server, "127.0.0.1:3478".parse().unwrap());
        assert_eq!(t.server_name, "127.0.0.1");
        let r = t.relay_config();
        assert_eq!(r.server, "127.0.0.1:3478".parse().unwrap());
        assert_eq!((r.username.as_str(), r.password.as_str()), ("xcc", "pw"));
        assert_eq!(r.lifetime, std::time::Duration::from_secs(900));
        assert_eq!(r.spares, 8);
        let c = parse(
            "[turn]\nserver = \"localhost:3479\"\ntransport = \"udp\"\nusername = \"u\"\n\
             password = \"p\"\n",
        )
        .unwrap();
        let t = c.validate().unwrap().turn.expect("on");
        assert_eq!(
            t.server,
            "127.0.0.1:3479".parse().unwrap(),
            "IPv4 bind: IPv4 address"
        );
        let c = parse(
            "[media]\nbind_address = \"::\"\n[turn]\nserver = \"[::1]:3480\"\nusername = \"u\"\n\
             password = \"p\"\n",
        )
        .unwrap();
        assert_eq!(
            c.validate().unwrap().turn.unwrap().server,
            "[::1]:3480".parse().unwrap()
        );
        assert!(
            !format!("{:?}", parse("[turn]\npassword = \"hunter2\"\n").unwrap())
                .contains("hunter2")
        );
    }

    #[test]
    fn turn_refusals_name_their_key() {
        let on = "[turn]\nserver = \"127.0.0.1\"\nusername = \"u\"\npassword = \"p\"\n";
        let refused = |extra: &str| {
            let text = format!("{on}{extra}");
            parse(&text).unwrap().validate().unwrap_err()
        };
        let e = refused("transport = \"tls\"\n");
        let text = e.to_string();
        assert!(
            text.contains("not supported yet") && text.contains("docs/nat.md"),
            "{text}"
        );
        assert_eq!(key_of(e), "turn.transport");
        let e = refused("transport = \"sctp\"\n");
        assert!(e.to_string().contains("\"udp\" or \"tcp\""), "{e}");
        assert_eq!(key_of(e), "turn.transport");
        let tcp = parse(&format!("{on}transport = \"tcp\"\n"))
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(
            tcp.turn.unwrap().relay_config().transport,
            xcc_core::nat::turn::TurnTransport::Tcp
        );
        assert_eq!(
            key_of(refused("lifetime_secs = 59\n")),
            "turn.lifetime_secs"
        );
        assert_eq!(
            key_of(refused("lifetime_secs = 3601\n")),
            "turn.lifetime_secs"
        );
        assert_eq!(key_of(refused("spares = 0\n")), "turn.spares");
        assert_eq!(key_of(refused("spares = 257\n")), "turn.spares");
        assert_eq!(
            key_of(refused("password_file = \"/nonexistent/turn\"\n")),
            "turn.password_file",
            "both password and password_file"
        );
        let c = parse("[turn]\nserver = \"127.0.0.1\"\npassword = \"p\"\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "turn.username");
        let c = parse("[turn]\nserver = \"127.0.0.1\"\nusername = \"u\"\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "turn.password");
        let c =
            parse("[turn]\nserver = \"127.0.0.1\"\nusername = \"u\"\npassword = \"\"\n").unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "turn.password");
        let c = parse(
            "[turn]\nserver = \"127.0.0.1\"\nusername = \"u\"\npassword_file = \"/nonexistent/turn\"\n",
        )
        .unwrap();
        assert_eq!(key_of(c.validate().unwrap_err()), "turn.password_file");
        for server in [
            "0.0.0.0",
            "127.0.0.1:0",
            "224.0.0.1",
            "host:port",
            "no-such-host.invalid",
            "[::1]:3478",
        ] {
            let c = parse(&format!(
                "[turn]\nserver = \"{server}\"\nusername = \"u\"\npassword = \"p\"\n"
            ))
            .unwrap();
            let e = c.validate().unwrap_err();
            assert_eq!(key_of(e), "turn.server", "{server}");
        }
        let e = parse("[turn]\nservers = []\n").unwrap_err();
        assert!(
            e.to_string().contains("servers"),
            "unknown key refused: {e}"
        );
    }

    #[test]
    fn turn_password_file_loses_only_its_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("xcc-turn-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        for (content, want) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            (" with space ", " with space "),
            ("two\nlines\n", "two\nlines"),
        ] {
            std::fs::write(&pw, content).unwrap();
            let text = format!(
                "[turn]\nserver = \"127.0.0.1\"\nusername = \"xcc\"\npassword_file = \"{}\"\n",
                pw.display()
            );
            let t = parse(&text).unwrap().validate().unwrap().turn.unwrap();
            assert_eq!(t.password.0, want, "{content:?}");
        }
        std::fs::write(&pw, "\n").unwrap();
        let text = format!(
            "[turn]\nserver = \"127.0.0.1\"\nusername = \"xcc\"\npassword_file = \"{}\"\n",
            pw.display()
        );
        let e = parse(&text).unwrap().validate().unwrap_err();
        assert_eq!(key_of(e), "turn.password_file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
