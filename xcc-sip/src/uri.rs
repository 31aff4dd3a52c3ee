//! SIP URIs (RFC 3261 §19.1): just enough structure to route requests and responses.

use std::fmt;

use crate::error::{Malformed, ParseError};

/// A SIP or SIPS URI split into the parts routing needs; the original text is kept so that
/// forwarding never re-escapes anything (the rsipstack `%` double-escape bug cannot happen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    raw: String,
    /// `sips` rather than `sip`: TLS required end to end.
    pub secure: bool,
    /// userinfo before `@`, still escaped.
    pub user: Option<String>,
    /// Host name, IPv4 or bracketed IPv6 literal, as written.
    pub host: String,
    /// Explicit port, if any.
    pub port: Option<u16>,
    /// URI parameters (`;lr`, `;transport=tcp`), names lower-cased.
    pub params: Vec<(String, Option<String>)>,
    /// `?headers` part, escaped, if any (never allowed in a Request-URI).
    pub headers: Option<String>,
}

impl SipUri {
    /// Parses a `sip:`/`sips:` URI; other schemes (tel:, urn:) are rejected here.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::drop(Malformed::Uri);
        if s.is_empty()
            || s.bytes()
                .any(|b| b <= b' ' || b == b'<' || b == b'>' || b == b'"')
        {
            return Err(bad());
        }
        let (scheme, rest) = s.split_once(':').ok_or_else(bad)?;
        let secure = if scheme.eq_ignore_ascii_case("sip") {
            false
        } else if scheme.eq_ignore_ascii_case("sips") {
            true
        } else {
            return Err(bad());
        };
        let (user, hostpart) = match rest.split_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_owned()), h),
            Some(_) => return Err(bad()),
            None => (None, rest),
        };
        let (hostpart, headers) = match hostpart.split_once('?') {
            Some((h, q)) => (h, Some(q.to_owned())),
            None => (hostpart, None),
        };
        let mut parts = hostpart.split(';');
        let hostport = parts.next().unwrap_or_default();
        let (host, port) = split_host_port(hostport).ok_or_else(bad)?;
        let mut params = Vec::new();
        for p in parts {
            if p.is_empty() {
                return Err(bad());
            }
            let (n, v) = match p.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (p, None),
            };
            if n.is_empty() {
                return Err(bad());
            }
            params.push((n.to_ascii_lowercase(), v));
        }
        Ok(Self {
            raw: s.to_owned(),
            secure,
            user,
            host: host.to_owned(),
            port,
            params,
            headers,
        })
    }

    /// The URI exactly as received.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Value of a URI parameter (`transport`, `maddr`); `Some(None)` for a flag like `lr`.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// Loose routing flag (RFC 3261 §16.12): decides strict vs loose route handling.
    pub fn is_loose_route(&self) -> bool {
        self.param("lr").is_some()
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Splits `host[:port]`, accepting `[v6]:port`; `None` when the host is empty or the port is not a
/// u16. Host characters are checked against RFC 3261 `hostname`/`IPv4address`/`IPv6reference`.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &s[..end + 2];
        if !rest[..end]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        match &rest[end + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty()
        || !(host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    {
        return None;
    }
    let port = match port {
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_host_port_params() {
        let u = SipUri::parse("sip:alice@192.0.2.1:5070;transport=tcp;lr").unwrap();
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.host, "192.0.2.1");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("transport"), Some(Some("tcp")));
        assert!(u.is_loose_route());
    }

    #[test]
    fn parses_ipv6_and_escaped_user() {
        let u = SipUri::parse("sips:sips%3Auser%40example.com@[2001:db8::1]:5061").unwrap();
        assert!(u.secure);
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.port, Some(5061));
        assert_eq!(
            u.to_string(),
            "sips:sips%3Auser%40example.com@[2001:db8::1]:5061"
        );
    }

    #[test]
    fn rejects_bad_uris() {
        for s in [
            "",
            "sip:",
            "http://x",
            "sip:a b",
            "sip:@host",
            "sip:h:99999",
            "sip:h;;lr",
        ] {
            assert!(SipUri::parse(s).is_err(), "{s}");
        }
    }
}
