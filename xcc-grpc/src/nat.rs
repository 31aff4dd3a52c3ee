//! Public address discovery as the control API reports it: the status fields of
//! `Satellite.Status` and the `PublicAddressChanged` event.
//!
//! The daemon's discovery driver owns the STUN socket and the sans-IO
//! [`xcc_core::nat::discovery::Discovery`]; it publishes a [`PublicAddressStatus`] into
//! [`crate::control::ControlState`] after every change, and this module turns it into protobuf.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

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
}
