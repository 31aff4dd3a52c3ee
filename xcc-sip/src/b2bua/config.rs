//! What the B2BUA needs to know about each side and about itself; the daemon maps `[sip]` here.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::Credentials;
use crate::endpoint::Peer;
use crate::transaction::Timers;

/// One side of XCC: the controlling server (port 4901 in, 4900 out) or the PBX/SBC (5060).
#[derive(Debug, Clone)]
pub struct SideConfig {
    /// Where new calls and OPTIONS probes towards this side go (the server at host:4900, the
    /// PBX at host:5060), and by which transport.
    pub peer: Peer,
    /// Host written in Request-URIs and To of new calls towards this side (the PBX's domain or
    /// IP as it expects to see it). Empty: the peer's IP address.
    pub peer_host: String,
    /// XCC's signalling address as this side must see it: Via sent-by, Contact and From host of
    /// requests XCC sends here, so that responses and in-dialog requests come back to XCC.
    pub local: SocketAddr,
    /// Digest credentials for 401/407 challenges from this side (the PBX trunk); `None` relays
    /// the challenge as a failure.
    pub credentials: Option<Credentials>,
    /// Interval of OPTIONS probes to `peer`; `None` disables monitoring of this side.
    pub options_interval: Option<Duration>,
    /// Consecutive failed probes before the side is declared down.
    pub down_after: u32,
}

impl SideConfig {
    /// A side with the given peer and local address, no credentials and no monitoring.
    pub fn new(peer: Peer, local: SocketAddr) -> Self {
        Self {
            peer,
            peer_host: String::new(),
            local,
            credentials: None,
            options_interval: None,
            down_after: 3,
        }
    }
}

/// The whole B2BUA's configuration.
#[derive(Debug, Clone)]
pub struct B2buaConfig {
    /// The controlling server side (client leg: SDES-SRTP media).
    pub server: SideConfig,
    /// The PBX/SBC side (plain RTP media).
    pub pbx: SideConfig,
    /// RFC 3261 timers for both endpoints (T1/T2/T4, timer C).
    pub timers: Timers,
    /// Seconds put in Retry-After when refusing with 503 (pool exhausted, draining, unreachable).
    pub retry_after: u32,
    /// `User-Agent` / `Server` header value; empty leaves the header out.
    pub user_agent: String,
}

impl B2buaConfig {
    /// Defaults for everything but the two sides: RFC timers, Retry-After 30 s, `XCC`.
    pub fn new(server: SideConfig, pbx: SideConfig) -> Self {
        Self {
            server,
            pbx,
            timers: Timers::default(),
            retry_after: 30,
            user_agent: format!("XCC/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The configuration of one side.
pub(super) fn side_of(cfg: &B2buaConfig, side: super::Side) -> &SideConfig {
    match side {
        super::Side::Server => &cfg.server,
        super::Side::Pbx => &cfg.pbx,
    }
}
