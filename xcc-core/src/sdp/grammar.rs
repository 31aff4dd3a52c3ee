//! The RFC 8866 line grammar XCC depends on: each function reads one line's value and returns
//! `None` when it does not match, so callers decide between an error and skipping the line.

use std::net::{IpAddr, SocketAddr};

use crate::media::Direction;

/// An m= line split into what the rewrite needs.
pub(super) struct MediaLine<'a> {
    /// `audio`, `video`, ...
    pub(super) media: &'a str,
    /// The port, without any `/<number of ports>`.
    pub(super) port: u16,
    /// The transport protocol token, verbatim.
    pub(super) proto: &'a str,
    /// The format list exactly as received (may be empty for a rejected stream).
    pub(super) formats: &'a str,
}

/// `m=<media> <port>[/<number of ports>] <proto> <fmt> ...` (value after `m=`).
pub(super) fn parse_media(value: &str) -> Option<MediaLine<'_>> {
    let (media, rest) = next_token(value)?;
    let (port, rest) = next_token(rest)?;
    let (proto, rest) = next_token(rest)?;
    let port_number = port.split_once('/').map_or(port, |(p, _)| p);
    if !port_number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(MediaLine {
        media,
        port: port_number.parse().ok()?,
        proto,
        formats: rest.trim(),
    })
}

/// `c=<nettype> <addrtype> <connection-address>`: returns (addrtype, address without TTL/count).
pub(super) fn parse_connection(value: &str) -> Option<(&str, &str)> {
    let (net, rest) = next_token(value)?;
    let (kind, rest) = next_token(rest)?;
    let (address, rest) = next_token(rest)?;
    if net != "IN" || !matches!(kind, "IP4" | "IP6") || !rest.trim().is_empty() {
        return None;
    }
    let address = address.split('/').next().unwrap_or(address);
    Some((kind, address))
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`.
pub(super) fn parse_origin(value: &str) -> Option<[&str; 6]> {
    let mut fields = value.split_ascii_whitespace();
    let mut out = [""; 6];
    for slot in &mut out {
        *slot = fields.next()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(out)
}

/// `a=rtcp:<port> [IN IP4|IP6 <address>]` (RFC 3605): `None` when malformed, `Some(None)` when
/// the address is unspecified (hold) or defaults to a held connection.
pub(super) fn parse_rtcp(value: &str, connection: Option<IpAddr>) -> Option<Option<SocketAddr>> {
    let (port, rest) = next_token(value)?;
    let port: u16 = port.parse().ok()?;
    if rest.trim().is_empty() {
        return Some(connection.map(|ip| SocketAddr::new(ip, port)));
    }
    let (_, address) = parse_connection(rest)?;
    let ip: IpAddr = address.parse().ok()?;
    Some((!ip.is_unspecified()).then(|| SocketAddr::new(ip, port)))
}

/// Splits an `a=` line into (name, value after the first colon). Trailing blanks after a flag
/// attribute (`a=sendonly `, seen from some gateways) do not change its name.
pub(super) fn attribute(line: &str) -> Option<(&str, Option<&str>)> {
    let body = line.strip_prefix("a=")?;
    Some(match body.split_once(':') {
        Some((name, value)) => (name, Some(value)),
        None => (body.trim_end_matches([' ', '\t']), None),
    })
}

/// The first whitespace-separated token and the rest after it.
pub(super) fn next_token(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start_matches([' ', '\t']);
    if text.is_empty() {
        return None;
    }
    Some(match text.find([' ', '\t']) {
        Some(end) => (&text[..end], &text[end..]),
        None => (text, ""),
    })
}

/// The direction attributes of RFC 8866 §6.7.
pub(super) fn parse_direction(name: &str) -> Option<Direction> {
    match name {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    }
}

/// The <addrtype> token for an address.
pub(super) fn address_type(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}
