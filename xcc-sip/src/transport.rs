//! Transport-layer rules that are not framing: RFC 3261 §18.2.1 (`received`), RFC 3581 (`rport`)
//! on requests we receive, and §18.2.2 / RFC 3581 §4 on where responses go.

use std::net::{IpAddr, SocketAddr};

use crate::error::Error;
use crate::message::{Request, Response};

/// SIP's default port for UDP/TCP (RFC 3261 §19.1.2).
pub const DEFAULT_PORT: u16 = 5060;

/// Which kind of transport a message arrived on or leaves by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Unreliable: transactions retransmit.
    Udp,
    /// Reliable, connection-oriented: no retransmissions, wait timers are zero.
    Tcp,
}

impl Transport {
    /// RFC 3261 "reliable transport".
    pub fn is_reliable(self) -> bool {
        matches!(self, Self::Tcp)
    }
}

/// Stamps the top Via of a received request with where it really came from.
///
/// `received` is added when the sent-by host differs from the source address, or always when the
/// client asked for `rport` (RFC 3581 §4); an empty `rport` is filled with the source port. This is
/// what lets responses reach a softphone behind NAT.
pub fn stamp_received(req: &mut Request, source: SocketAddr) {
    let Some(via) = req.headers.via.first_mut() else {
        return;
    };
    let wants_rport = via.rport().is_some();
    let src_ip = source.ip().to_string();
    let host = via.host.trim_start_matches('[').trim_end_matches(']');
    let same_host = host.parse::<IpAddr>().is_ok_and(|ip| ip == source.ip());
    if !same_host || wants_rport {
        via.set_param("received", Some(src_ip));
    }
    if wants_rport {
        via.set_param("rport", Some(source.port().to_string()));
    }
}

/// Where a response must be sent when no connection can be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseTarget {
    /// A literal address: send there.
    Addr(SocketAddr),
    /// A host name from sent-by: resolve it (RFC 3263 §6) then send to `port`.
    Resolve {
        /// sent-by host name.
        host: String,
        /// Port to use.
        port: u16,
    },
}

/// RFC 3261 §18.2.2 and RFC 3581 §4 for a response leaving over UDP (or over a new TCP
/// connection when the original one is gone): `received` + `rport` first, then sent-by.
pub fn response_target(resp: &Response) -> Result<ResponseTarget, Error> {
    let via = resp.headers.top_via().ok_or_else(|| Error::Unroutable {
        sent_by: String::new(),
    })?;
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port.unwrap_or(DEFAULT_PORT),
    };
    if let Some(received) = via.received() {
        let ip = received
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| Error::Unroutable {
                sent_by: received.to_owned(),
            })?;
        return Ok(ResponseTarget::Addr(SocketAddr::new(ip, port)));
    }
    let host = via.host.trim_start_matches('[').trim_end_matches(']');
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => ResponseTarget::Addr(SocketAddr::new(ip, port)),
        Err(_) => ResponseTarget::Resolve {
            host: via.host.clone(),
            port,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn req(via: &str) -> Request {
        let raw = format!(
            "OPTIONS sip:x@example.com SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        match Message::parse(raw.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn rport_is_filled_and_received_added_behind_nat() {
        let mut r = req("SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKa");
        stamp_received(&mut r, "198.51.100.7:40123".parse().unwrap());
        let via = r.headers.top_via().unwrap();
        assert_eq!(via.received(), Some("198.51.100.7"));
        assert_eq!(via.rport(), Some(Some(40123)));
        let resp = Response::for_request(&r, 200, "OK", Some("t"));
        assert_eq!(
            response_target(&resp).unwrap(),
            ResponseTarget::Addr("198.51.100.7:40123".parse().unwrap())
        );
    }

    #[test]
    fn received_only_when_host_differs_without_rport() {
        let mut r = req("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa");
        stamp_received(&mut r, "192.0.2.1:5070".parse().unwrap());
        assert_eq!(r.headers.top_via().unwrap().received(), None);
        let mut r = req("SIP/2.0/UDP pbx.example.net;branch=z9hG4bKa");
        stamp_received(&mut r, "192.0.2.9:5060".parse().unwrap());
        assert_eq!(r.headers.top_via().unwrap().received(), Some("192.0.2.9"));
        assert_eq!(r.headers.top_via().unwrap().rport(), None);
        // Without rport the response goes to received at the sent-by port (default 5060).
        let resp = Response::for_request(&r, 200, "OK", None);
        assert_eq!(
            response_target(&resp).unwrap(),
            ResponseTarget::Addr("192.0.2.9:5060".parse().unwrap())
        );
    }

    #[test]
    fn ipv6_source_and_sent_by() {
        let mut r = req("SIP/2.0/UDP [2001:db8::5]:5060;rport;branch=z9hG4bKa");
        stamp_received(&mut r, "[2001:db8::9]:40000".parse().unwrap());
        let via = r.headers.top_via().unwrap();
        // RFC 3261 `received` carries the bare IPv6 address.
        assert_eq!(via.received(), Some("2001:db8::9"));
        let resp = Response::for_request(&r, 200, "OK", None);
        assert_eq!(
            response_target(&resp).unwrap(),
            ResponseTarget::Addr("[2001:db8::9]:40000".parse().unwrap())
        );
        let mut r = req("SIP/2.0/UDP [::1]:5070;branch=z9hG4bKa");
        stamp_received(&mut r, "[::1]:5070".parse().unwrap());
        assert_eq!(
            r.headers.top_via().unwrap().received(),
            None,
            "same host: no received"
        );
        let resp = Response::for_request(&r, 200, "OK", None);
        assert_eq!(
            response_target(&resp).unwrap(),
            ResponseTarget::Addr("[::1]:5070".parse().unwrap())
        );
    }

    #[test]
    fn sent_by_name_needs_resolution() {
        let r = req("SIP/2.0/UDP pbx.example.net:5080;branch=z9hG4bKa");
        let resp = Response::for_request(&r, 200, "OK", None);
        assert_eq!(
            response_target(&resp).unwrap(),
            ResponseTarget::Resolve {
                host: "pbx.example.net".into(),
                port: 5080
            }
        );
    }
}
