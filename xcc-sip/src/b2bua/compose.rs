//! Building the messages XCC originates as a UA on each side: Via, Contact, the INVITE towards
//! the other side, responses with XCC's own headers, and where in-dialog requests go.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use rand::Rng;

use super::config::SideConfig;
use crate::dialog::Dialog;
use crate::endpoint::Peer;
use crate::header::{CSeq, NameAddr, Via};
use crate::message::{Header, Headers, Method, Request, Response};
use crate::transaction::generate_branch;
use crate::transport::{DEFAULT_PORT, Transport};
use crate::uri::SipUri;

/// Methods XCC accepts, for `Allow` (INFO and MESSAGE are relayed within a call).
pub(super) const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, MESSAGE, UPDATE";

/// The transport token for Via.
fn transport_token(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    }
}

/// An address as a URI host: IPv6 in brackets.
pub(super) fn uri_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Our Via towards a side, with a fresh branch and `rport` (RFC 3581) so NATed peers answer to
/// the port we sent from.
pub(super) fn via(side: &SideConfig, rng: &mut impl Rng) -> Via {
    Via {
        transport: transport_token(side.peer.transport).to_owned(),
        host: uri_host(side.local.ip()),
        port: Some(side.local.port()),
        params: vec![
            ("branch".to_owned(), Some(generate_branch(rng))),
            ("rport".to_owned(), None),
        ],
    }
}

/// Our Contact on a side: in-dialog requests must come back to XCC's listener there.
pub(super) fn contact(side: &SideConfig) -> NameAddr {
    let transport = match side.peer.transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
    };
    NameAddr {
        display: None,
        uri: format!(
            "sip:xcc@{}:{}{transport}",
            uri_host(side.local.ip()),
            side.local.port()
        ),
        params: Vec::new(),
    }
}

/// A random token of 64 bits (tags) as hex.
pub(super) fn token(rng: &mut impl Rng) -> String {
    format!("{:016x}", rng.random::<u64>())
}

/// The user part of a `sip:`/`sips:` URI, or the number of a `tel:` URI.
pub(super) fn user_of(uri: &str) -> Option<String> {
    if let Ok(u) = SipUri::parse(uri) {
        return u.user.filter(|u| !u.is_empty());
    }
    let (scheme, rest) = uri.split_once(':')?;
    if !scheme.eq_ignore_ascii_case("tel") {
        return None;
    }
    let number = rest.split(';').next().unwrap_or_default();
    // The number goes into a SIP URI user part: keep it to characters that need no escaping.
    (!number.is_empty()
        && number
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.*#()".contains(&b)))
    .then(|| number.to_owned())
}

/// Host (and port) of new requests' Request-URI and To towards a side.
fn peer_host(side: &SideConfig) -> String {
    if side.peer_host.is_empty() {
        let a = side.peer.addr;
        format!("{}:{}", uri_host(a.ip()), a.port())
    } else {
        side.peer_host.clone()
    }
}

/// The INVITE starting the far dialog: the near INVITE's called user and caller identity (display
/// name and user kept), everything else XCC's own (Call-ID, tag, CSeq, Via, Contact).
pub(super) struct NewInvite<'a> {
    /// The far side's configuration.
    pub side: &'a SideConfig,
    /// Called user (Request-URI user part of the near INVITE).
    pub callee: &'a str,
    /// The near INVITE.
    pub near: &'a Request,
    /// Max-Forwards already decremented.
    pub max_forwards: u8,
    /// The offer for the far side.
    pub sdp: String,
    /// `User-Agent`, empty for none.
    pub user_agent: &'a str,
}

impl NewInvite<'_> {
    /// Builds the request (fresh Call-ID, From tag and branch from `rng`).
    pub(super) fn build(self, rng: &mut impl Rng) -> Request {
        let host = peer_host(self.side);
        let uri = format!("sip:{}@{host}", self.callee);
        let local = uri_host(self.side.local.ip());
        let caller = user_of(&self.near.headers.from.uri).unwrap_or_else(|| "anonymous".into());
        let from = NameAddr {
            display: self.near.headers.from.display.clone(),
            uri: format!("sip:{caller}@{local}"),
            params: vec![("tag".to_owned(), Some(token(rng)))],
        };
        let to = NameAddr {
            display: self.near.headers.to.display.clone(),
            uri: uri.clone(),
            params: Vec::new(),
        };
        let mut other = vec![Header {
            name: "Allow".into(),
            value: ALLOW.into(),
        }];
        if !self.user_agent.is_empty() {
            other.push(Header {
                name: "User-Agent".into(),
                value: self.user_agent.to_owned(),
            });
        }
        Request {
            method: Method::Invite,
            uri,
            headers: Headers {
                via: vec![via(self.side, rng)],
                from,
                to,
                call_id: format!("{:032x}@{local}", rng.random::<u128>()),
                cseq: CSeq {
                    seq: 1,
                    method: "INVITE".into(),
                },
                max_forwards: Some(self.max_forwards),
                contact: vec![contact(self.side)],
                route: Vec::new(),
                record_route: Vec::new(),
                content_type: Some("application/sdp".into()),
                other,
            },
            body: Bytes::from(self.sdp),
        }
    }
}

/// A response from XCC as UAS: the RFC 3261 §8.2.6 copy plus our tag, Contact for dialog
/// creating INVITE responses, `Server`, and the body.
pub(super) fn response(
    req: &Request,
    status: u16,
    tag: Option<&str>,
    contact: Option<NameAddr>,
    body: Option<&str>,
    user_agent: &str,
) -> Response {
    let mut resp = Response::for_request(req, status, reason(status), tag);
    resp.headers.contact.extend(contact);
    if !user_agent.is_empty() {
        resp.headers.other.push(Header {
            name: "Server".into(),
            value: user_agent.to_owned(),
        });
    }
    if let Some(b) = body {
        resp.headers.content_type = Some("application/sdp".into());
        resp.body = Bytes::copy_from_slice(b.as_bytes());
    }
    resp
}

/// Standard reason phrases for the statuses XCC emits or relays (others get an empty phrase,
/// which RFC 3261 allows).
pub(super) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "",
    }
}

/// Where an in-dialog request goes: the first Route, else the remote target, when it names an
/// IP literal; a host name (which would need DNS) falls back to the side's configured peer.
pub(super) fn dialog_peer(dialog: &Dialog, default: Peer) -> Peer {
    let uri = dialog
        .route_set
        .first()
        .map_or(dialog.remote_target.as_str(), |r| r.uri.as_str());
    let Ok(u) = SipUri::parse(uri) else {
        return default;
    };
    let host = u.host.trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = host.parse::<IpAddr>() else {
        return default;
    };
    let transport = match u.param("transport") {
        Some(Some(t)) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        Some(Some(t)) if t.eq_ignore_ascii_case("udp") => Transport::Udp,
        _ => default.transport,
    };
    Peer {
        addr: SocketAddr::new(ip, u.port.unwrap_or(DEFAULT_PORT)),
        transport,
    }
}

/// A UAC dialog from a 2xx alone (no INVITE at hand): for ACKing and BYEing a 2xx that matches
/// no call (a late answer to a cancelled INVITE, a forked second 2xx).
pub(super) fn dialog_from_response(resp: &Response, local_contact: NameAddr) -> Option<Dialog> {
    Some(Dialog {
        key: crate::dialog::DialogKey::for_response(resp)?,
        local: resp.headers.from.clone(),
        remote: resp.headers.to.clone(),
        remote_target: resp.headers.contact.first()?.uri.clone(),
        route_set: resp.headers.record_route.iter().rev().cloned().collect(),
        local_seq: resp.headers.cseq.seq,
        remote_seq: None,
        local_contact,
    })
}

/// Whether a body is SDP we can hand to the media plane.
pub(super) fn sdp_body(headers: &Headers, body: &[u8]) -> Option<Result<String, ()>> {
    if body.is_empty() {
        return None;
    }
    let is_sdp = headers.content_type.as_deref().is_none_or(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/sdp"))
    });
    if !is_sdp {
        return Some(Err(()));
    }
    Some(std::str::from_utf8(body).map(str::to_owned).map_err(|_| ()))
}
