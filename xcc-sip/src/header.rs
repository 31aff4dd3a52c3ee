//! Header names (with RFC 3261 §7.3.3 compact forms) and the typed headers a B2BUA reads:
//! Via, name-addr (From/To/Contact/Route/Record-Route) and CSeq.

use std::fmt;

use crate::error::{Malformed, ParseError};
use crate::uri::{SipUri, split_host_port};

/// RFC 3261 `token` characters: method names, header names, parameter names.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// True when `s` is a non-empty RFC 3261 token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// Canonical spelling of a header name; compact forms expand so that `v:` and `Via:` are one name.
pub(crate) fn canonical_name(name: &str) -> Option<&'static str> {
    const LONG: &[&str] = &[
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Content-Length",
        "Content-Type",
        "Route",
        "Record-Route",
        "Subject",
        "Supported",
        "Content-Encoding",
        "Event",
        "Refer-To",
        "Allow-Events",
        "Referred-By",
        "Session-Expires",
        "Accept-Contact",
        "Reject-Contact",
        "Request-Disposition",
        "Identity",
        "Identity-Info",
    ];
    if name.len() == 1 {
        // Indexing is in bounds: the length is 1.
        let long = match name.as_bytes()[0].to_ascii_lowercase() {
            b'v' => "Via",
            b'f' => "From",
            b't' => "To",
            b'i' => "Call-ID",
            b'm' => "Contact",
            b'l' => "Content-Length",
            b'c' => "Content-Type",
            b's' => "Subject",
            b'k' => "Supported",
            b'e' => "Content-Encoding",
            b'o' => "Event",
            b'r' => "Refer-To",
            b'u' => "Allow-Events",
            b'b' => "Referred-By",
            b'x' => "Session-Expires",
            b'a' => "Accept-Contact",
            b'j' => "Reject-Contact",
            b'd' => "Request-Disposition",
            b'y' => "Identity",
            b'n' => "Identity-Info",
            _ => return None,
        };
        return Some(long);
    }
    LONG.iter().copied().find(|l| l.eq_ignore_ascii_case(name))
}

/// A generic `;name[=value]` parameter list as used by Via and name-addr headers.
pub type Params = Vec<(String, Option<String>)>;

/// Parses `;a=b;c` (leading `;` already stripped per element). LWS around `=` is allowed
/// (RFC 4475 wsinv); an empty element (`;;`) or a non-token name is an error.
fn parse_params<'a>(
    parts: impl Iterator<Item = &'a str>,
    err: Malformed,
) -> Result<Params, ParseError> {
    let mut out = Vec::new();
    for p in parts {
        let (n, v) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p.trim(), None),
        };
        let quoted = |v: &str| {
            v.len() >= 2 && v.starts_with('"') && closing_quote(&v[1..]) == Some(v.len() - 2)
        };
        let bad_value = |v: &str| v.is_empty() || (v.contains([' ', '\t', '"']) && !quoted(v));
        if !is_token(n) || v.is_some_and(bad_value) {
            return Err(ParseError::drop(err));
        }
        out.push((n.to_ascii_lowercase(), v.map(str::to_owned)));
    }
    Ok(out)
}

/// Splits on `;` outside quoted strings (`;reason="a;b"` is one parameter).
fn split_params(s: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut quoted, mut escape, mut start) = (false, false, 0);
    for (i, b) in s.bytes().enumerate() {
        match (escape, b) {
            (true, _) => escape = false,
            (false, b'\\') if quoted => escape = true,
            (false, b'"') => quoted = !quoted,
            (false, b';') if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter()
}

fn find_param<'a>(params: &'a Params, name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_deref())
}

/// Splits a header value on commas that are outside quoted strings and `<...>`; an empty element
/// (`a,,b`) is reported as `None` so the caller can reject it.
pub(crate) fn split_list(s: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escape, mut start) = (false, false, false, 0);
    for (i, b) in s.bytes().enumerate() {
        if escape {
            escape = false;
            continue;
        }
        match b {
            b'\\' if quoted => escape = true,
            b'"' if !angle => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    if out.iter().any(|e| e.is_empty()) {
        return None;
    }
    Some(out)
}

/// One Via entry: where to send responses and the branch that keys the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token, upper-cased (`UDP`, `TCP`, `TLS`, ...).
    pub transport: String,
    /// sent-by host as written.
    pub host: String,
    /// sent-by port, if written.
    pub port: Option<u16>,
    /// Parameters in order, names lower-cased.
    pub params: Params,
}

impl Via {
    /// Parses one Via element; LWS around `/` is allowed as RFC 3261 §25.1 permits.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::parse_version(s, true)
    }

    /// Like [`Via::parse`], but with `strict == false` any `SIP/x.y` is accepted so that a 505
    /// can still be routed back to a peer speaking another version (RFC 4475 badvers).
    pub(crate) fn parse_version(s: &str, strict: bool) -> Result<Self, ParseError> {
        let bad = || ParseError::drop(Malformed::Via);
        let mut it = s.splitn(3, '/');
        let (name, version, rest) = (
            it.next().ok_or_else(bad)?.trim(),
            it.next().ok_or_else(bad)?.trim(),
            it.next().ok_or_else(bad)?.trim_start(),
        );
        let version_ok = if strict {
            version == "2.0"
        } else {
            !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        };
        if !name.eq_ignore_ascii_case("SIP") || !version_ok {
            return Err(bad());
        }
        let tend = rest.find([' ', '\t']).ok_or_else(bad)?;
        let transport = &rest[..tend];
        if !is_token(transport) {
            return Err(bad());
        }
        let mut parts = split_params(&rest[tend..]);
        let sent_by = parts.next().unwrap_or_default().trim();
        let (host, port) = split_host_port(sent_by).ok_or_else(bad)?;
        Ok(Self {
            transport: transport.to_ascii_uppercase(),
            host: host.to_owned(),
            port,
            params: parse_params(parts, Malformed::Via)?,
        })
    }

    /// The `branch` parameter; RFC 3261 branches start with `z9hG4bK`.
    pub fn branch(&self) -> Option<&str> {
        find_param(&self.params, "branch").flatten()
    }

    /// The `received` parameter a server transport added.
    pub fn received(&self) -> Option<&str> {
        find_param(&self.params, "received").flatten()
    }

    /// `rport`: `None` absent, `Some(None)` requested (RFC 3581), `Some(Some(p))` filled.
    pub fn rport(&self) -> Option<Option<u16>> {
        find_param(&self.params, "rport").map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// Sets (or replaces) a parameter, keeping its position when it already exists.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        match self.params.iter_mut().find(|(n, _)| n == name) {
            Some(p) => p.1 = value,
            None => self.params.push((name.to_owned(), value)),
        }
    }

    /// `host[:port]` as used in transaction keys.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host.to_ascii_lowercase()),
            None => self.host.to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write_params(f, &self.params)
    }
}

fn write_params(f: &mut fmt::Formatter<'_>, params: &Params) -> fmt::Result {
    for (n, v) in params {
        match v {
            Some(v) => write!(f, ";{n}={v}")?,
            None => write!(f, ";{n}")?,
        }
    }
    Ok(())
}

/// `[display-name] <uri> *(;param)` or `addr-spec *(;param)`: From, To, Contact, Route,
/// Record-Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name as written (quotes and escapes kept), if any.
    pub display: Option<String>,
    /// The URI text (inside `<>` when it had them).
    pub uri: String,
    /// Header parameters after the URI, names lower-cased (`tag`, `expires`, `q`).
    pub params: Params,
}

impl NameAddr {
    /// Parses one element; `which` names the header for the error.
    pub fn parse(s: &str, which: &'static str) -> Result<Self, ParseError> {
        let bad = || ParseError::drop(Malformed::NameAddr(which));
        let s = s.trim();
        let (display, uri, rest) = if let Some(q) = s.strip_prefix('"') {
            let end = closing_quote(q).ok_or_else(bad)?;
            let after = q[end + 1..].trim_start();
            let inner = after.strip_prefix('<').ok_or_else(bad)?;
            let close = inner.find('>').ok_or_else(bad)?;
            (
                Some(s[..end + 2].to_owned()),
                &inner[..close],
                &inner[close + 1..],
            )
        } else if let Some(open) = s.find('<') {
            let name = s[..open].trim();
            if !name
                .split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .all(is_token)
            {
                return Err(bad());
            }
            let inner = &s[open + 1..];
            let close = inner.find('>').ok_or_else(bad)?;
            let display = (!name.is_empty()).then(|| name.to_owned());
            (display, &inner[..close], &inner[close + 1..])
        } else {
            // addr-spec: parameters after the URI belong to the header (RFC 3261 §20).
            let (uri, rest) = match s.find(';') {
                Some(i) => (s[..i].trim_end(), &s[i..]),
                None => (s, ""),
            };
            // RFC 3261 §20: an addr-spec with `,` `?` or `;` must be in `<>` (RFC 4475 regbadct).
            if uri.contains(['?', ',']) {
                return Err(bad());
            }
            (None, uri, rest)
        };
        if uri.is_empty() || uri.bytes().any(|b| b <= b' ' || b"<>\"".contains(&b)) {
            return Err(bad());
        }
        let scheme = uri.split_once(':').map(|(s, _)| s).ok_or_else(bad)?;
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            SipUri::parse(uri).map_err(|_| bad())?;
        } else if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        let rest = rest.trim();
        let params = if rest.is_empty() {
            Vec::new()
        } else {
            let rest = rest.strip_prefix(';').ok_or_else(bad)?;
            parse_params(split_params(rest), Malformed::NameAddr(which))?
        };
        Ok(Self {
            display,
            uri: uri.to_owned(),
            params,
        })
    }

    /// The dialog tag (RFC 3261 §19.3).
    pub fn tag(&self) -> Option<&str> {
        find_param(&self.params, "tag").flatten()
    }

    /// Sets the tag (a UAS adds its To tag to responses).
    pub fn set_tag(&mut self, tag: &str) {
        match self.params.iter_mut().find(|(n, _)| n == "tag") {
            Some(p) => p.1 = Some(tag.to_owned()),
            None => self.params.push(("tag".to_owned(), Some(tag.to_owned()))),
        }
    }

    /// The URI as a SIP URI, when it is one.
    pub fn sip_uri(&self) -> Option<SipUri> {
        SipUri::parse(&self.uri).ok()
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{d} ")?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

/// Index of the closing `"` in a quoted string body (after the opening quote), honouring `\`.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escape = false;
    for (i, b) in s.bytes().enumerate() {
        match (escape, b) {
            (true, _) => escape = false,
            (false, b'\\') => escape = true,
            (false, b'"') => return Some(i),
            (false, b'\r' | b'\n') => return None,
            _ => {}
        }
    }
    None
}

/// `CSeq: number method`: orders requests in a dialog and ties a response to its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number, below 2^31 (RFC 3261 §8.1.1.5).
    pub seq: u32,
    /// Method, case-sensitive.
    pub method: String,
}

impl CSeq {
    /// Parses `number LWS method`, allowing leading zeros and folding (RFC 4475 wsinv).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::drop(Malformed::CSeq);
        let mut it = s.split([' ', '\t']).filter(|w| !w.is_empty());
        let (num, method) = (it.next().ok_or_else(bad)?, it.next().ok_or_else(bad)?);
        if it.next().is_some() || !is_token(method) {
            return Err(bad());
        }
        let seq = parse_decimal(num, 1 << 31).ok_or_else(bad)?;
        Ok(Self {
            seq: u32::try_from(seq).map_err(|_| bad())?,
            method: method.to_owned(),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Digits only, value strictly below `limit`; leading zeros allowed, overflow rejected.
pub(crate) fn parse_decimal(s: &str, limit: u64) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if v >= limit {
            return None;
        }
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws_and_params() {
        let v =
            Via::parse("SIP  / 2.0  / tcp     spindle.example.com   ;   branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, "spindle.example.com");
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
    }

    #[test]
    fn via_rport_states() {
        let v = Via::parse("SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKx").unwrap();
        assert_eq!(v.rport(), Some(None));
        let v = Via::parse("SIP/2.0/UDP 10.0.0.1:5060;rport=4000;received=1.2.3.4").unwrap();
        assert_eq!(v.rport(), Some(Some(4000)));
        assert_eq!(v.received(), Some("1.2.3.4"));
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""  <sip:jdrosen@example.com> ; tag = 98asjd8"#,
            "From",
        )
        .unwrap();
        assert_eq!(n.tag(), Some("98asjd8"));
        assert_eq!(n.uri, "sip:jdrosen@example.com");
        let n = NameAddr::parse(
            "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
            "To",
        )
        .unwrap();
        assert_eq!(n.tag(), Some("1918181833n"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323", "From").unwrap();
        assert_eq!(n.display.as_deref(), Some("caller"));
        assert!(NameAddr::parse(r#""Mr. J. User <sip:j.user@example.com>"#, "To").is_err());
        assert!(NameAddr::parse("Bell, Alexander <sip:a@b>", "From").is_err());
        assert!(NameAddr::parse(r#""W" < sip:t@example.org >"#, "To").is_err());
    }

    #[test]
    fn quoted_parameter_values() {
        let n = NameAddr::parse(
            r#"<sip:a@b>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reason="busy; back soon""#,
            "Contact",
        )
        .unwrap();
        assert_eq!(n.params.len(), 2);
        assert_eq!(n.params[1].1.as_deref(), Some(r#""busy; back soon""#));
        assert!(NameAddr::parse(r#"<sip:a@b>;x="open"#, "Contact").is_err());
        assert!(NameAddr::parse("<sip:a@b>;x=a b", "Contact").is_err());
    }

    #[test]
    fn cseq_limits() {
        assert_eq!(CSeq::parse("0009 INVITE").unwrap().seq, 9);
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("1").is_err());
    }

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let l = split_list(r#""a,b" <sip:x;a=1,2>, <sip:y>"#).unwrap();
        assert_eq!(l.len(), 2);
        assert!(split_list("a,,b").is_none());
    }
}
