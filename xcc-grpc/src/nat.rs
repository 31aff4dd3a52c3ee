//! Public address discovery and XCC's own TURN relay as the control API reports them: the status
//! fields of `Satellite.Status` and the `PublicAddressChanged` event.
//!
//! The daemon's discovery driver owns the STUN socket and the sans-IO
//! [`xcc_core::nat::discovery::Discovery`]; it publishes a [`PublicAddressStatus`] into
//! [`crate::control::ControlState`] after every change, and this module turns it into protobuf.
//! The TURN relay's counters move inside the media plane on their own, so the daemon installs a
//! [`TurnSource`] that `Status` reads at request time instead.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use xcc_core::media::RelayStatus;

use crate::events::unix_ms;
use crate::pb;

/// Where the address signalled to clients comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressOrigin {
    /// `[nat] public_address`.
    Static,
    /// A STUN server's answer.
    Stun,
    /// Neither (yet): the bind, interface or loopback address chosen at start.
    Fallback,
}

/// What discovery is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryState {
    /// No servers configured, or a static address: no STUN traffic.
    Disabled,
    /// No answer yet; the fallback is advertised meanwhile.
    Discovering,
    /// The last check succeeded.
    Ok,
    /// Every server failed in the last round; the last address stays advertised.
    Failing,
}

/// The public address and how it was obtained, for `Status` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicAddressStatus {
    /// The address signalled to clients now.
    pub address: IpAddr,
    /// Where it comes from.
    pub origin: AddressOrigin,
    /// Discovery's state.
    pub state: DiscoveryState,
    /// The server that answered last.
    pub server: Option<SocketAddr>,
    /// When a server last answered.
    pub last_success: Option<SystemTime>,
    /// The last failure in words, cleared by a success.
    pub last_error: Option<String>,
}

impl PublicAddressStatus {
    /// A status without discovery: `address` from `[nat] public_address` (`Static`) or the
    /// fallback choice.
    pub fn without_stun(address: IpAddr, origin: AddressOrigin) -> Self {
        Self {
            address,
            origin,
            state: DiscoveryState::Disabled,
            server: None,
            last_success: None,
            last_error: None,
        }
    }
}

/// The protobuf enum of an origin.
pub fn origin_to_pb(origin: AddressOrigin) -> pb::PublicAddressSource {
    match origin {
        AddressOrigin::Static => pb::PublicAddressSource::Static,
        AddressOrigin::Stun => pb::PublicAddressSource::Stun,
        AddressOrigin::Fallback => pb::PublicAddressSource::Fallback,
    }
}

/// The protobuf enum of a state.
pub fn state_to_pb(state: DiscoveryState) -> pb::StunState {
    match state {
        DiscoveryState::Disabled => pb::StunState::Disabled,
        DiscoveryState::Discovering => pb::StunState::Discovering,
        DiscoveryState::Ok => pb::StunState::Ok,
        DiscoveryState::Failing => pb::StunState::Failing,
    }
}

/// Fills the `Status` fields 30-35 from `status`.
pub fn fill_status(out: &mut pb::StatusResponse, status: &PublicAddressStatus) {
    out.public_address = status.address.to_string();
    out.public_address_source = origin_to_pb(status.origin) as i32;
    out.stun_server = status.server.map(|s| s.to_string()).unwrap_or_default();
    out.stun_last_success_unix_ms = status.last_success.map(unix_ms).unwrap_or(0);
    out.stun_state = state_to_pb(status.state) as i32;
    out.stun_last_error = status.last_error.clone().unwrap_or_default();
}

/// Reads how XCC's TURN relay stands at the moment it is asked (`MediaControl::relay_status` in
/// the daemon): a closure rather than the media handle, so the control plane and metrics are
/// tested with any status.
pub type RelayStatusFn = Box<dyn Fn() -> Option<RelayStatus> + Send + Sync>;

/// XCC's own TURN relay (`[turn]`) as `Status` and the metrics see it; installed by the daemon
/// only when `[turn]` is on.
pub struct TurnSource {
    /// The configured server, resolved at start: shown even before the media plane reports.
    pub server: SocketAddr,
    /// The media plane's view of the relay, read at request time.
    pub status: RelayStatusFn,
}

impl std::fmt::Debug for TurnSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnSource")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Fills the `Status` fields 50-56: `server` always, the rest when the media plane reported.
pub fn fill_turn_status(
    out: &mut pb::StatusResponse,
    server: SocketAddr,
    status: Option<&RelayStatus>,
) {
    out.turn_server = server.to_string();
    let Some(s) = status else {
        return;
    };
    out.turn_ready = Some(s.ready as u64);
    out.turn_pending = Some(s.pending as u64);
    out.turn_allocated_total = Some(s.allocated_total);
    out.turn_failed_total = Some(s.failed_total);
    out.turn_last_error = s.last_error.clone().unwrap_or_default();
    out.turn_last_success_unix_ms = s.last_success.map(unix_ms);
}

/// The event announcing that clients are now told `status.address` instead of `previous`.
pub fn changed_event(previous: Option<IpAddr>, status: &PublicAddressStatus) -> pb::event::Kind {
    pb::event::Kind::PublicAddressChanged(pb::PublicAddressChanged {
        previous: previous.map(|p| p.to_string()).unwrap_or_default(),
        current: status.address.to_string(),
        source: origin_to_pb(status.origin) as i32,
        stun_server: status.server.map(|s| s.to_string()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_event_carry_the_stun_details() {
        let status = PublicAddressStatus {
            address: "203.0.113.1".parse().unwrap(),
            origin: AddressOrigin::Stun,
            state: DiscoveryState::Ok,
            server: Some("203.0.113.10:3478".parse().unwrap()),
            last_success: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1234)),
            last_error: None,
        };
        let mut out = pb::StatusResponse::default();
        fill_status(&mut out, &status);
        assert_eq!(out.public_address, "203.0.113.1");
        assert_eq!(
            out.public_address_source,
            pb::PublicAddressSource::Stun as i32
        );
        assert_eq!(out.stun_server, "203.0.113.10:3478");
        assert_eq!(out.stun_last_success_unix_ms, 1234);
        assert_eq!(out.stun_state, pb::StunState::Ok as i32);
        let pb::event::Kind::PublicAddressChanged(e) =
            changed_event(Some("127.0.0.1".parse().unwrap()), &status)
        else {
            panic!("wrong kind");
        };
        assert_eq!(e.previous, "127.0.0.1");
        assert_eq!(e.current, "203.0.113.1");
        assert_eq!(e.stun_server, "203.0.113.10:3478");
    }

    #[test]
    fn status_carries_the_turn_relay_and_leaves_unknowns_absent() {
        let server: SocketAddr = "198.51.100.7:3478".parse().unwrap();
        let mut out = pb::StatusResponse::default();
        fill_turn_status(&mut out, server, None);
        assert_eq!(out.turn_server, "198.51.100.7:3478");
        assert_eq!(out.turn_ready, None, "not reported is not zero");
        assert_eq!(out.turn_last_success_unix_ms, None);
        let status = RelayStatus {
            server,
            ready: 0,
            pending: 2,
            allocated_total: 9,
            failed_total: 1,
            last_error: Some("401 Unauthorized".into()),
            last_success: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(5678)),
        };
        fill_turn_status(&mut out, server, Some(&status));
        assert_eq!(
            out.turn_ready,
            Some(0),
            "zero ready is reported, not absent"
        );
        assert_eq!(out.turn_pending, Some(2));
        assert_eq!(out.turn_allocated_total, Some(9));
        assert_eq!(out.turn_failed_total, Some(1));
        assert_eq!(out.turn_last_error, "401 Unauthorized");
        assert_eq!(out.turn_last_success_unix_ms, Some(5678));
        let never = RelayStatus {
            last_success: None,
            last_error: None,
            ..status
        };
        let mut out = pb::StatusResponse::default();
        fill_turn_status(&mut out, server, Some(&never));
        assert_eq!(out.turn_last_success_unix_ms, None);
        assert_eq!(out.turn_last_error, "");
    }
}
