//! XCC's own SIP message type and its strict parser (RFC 3261 §7, §25; RFC 4475 torture set).
//!
//! The rest of the crate sees only these types, never a third-party parser's: known headers are
//! typed once at parse time (so a message that reaches a transaction is known to be well-formed),
//! unknown ones are kept in order, unfolded, under their canonical name.

use std::fmt::{self, Write as _};

use bytes::Bytes;

use crate::error::{Malformed, ParseError};
use crate::header::{CSeq, NameAddr, Via, canonical_name, is_token, parse_decimal, split_list};
use crate::uri::SipUri;

/// Largest Content-Length accepted from a datagram or a stream (a B2BUA's SDP is a few KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// A SIP method; extension methods are kept as written (methods are case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// Starts a session (RFC 3261 §13).
    Invite,
    /// Confirms a final INVITE response.
    Ack,
    /// Ends a session.
    Bye,
    /// Cancels a pending INVITE.
    Cancel,
    /// Capabilities / keepalive.
    Options,
    /// Registration (never sent by XCC, still parsed).
    Register,
    /// Reliable provisional ack (RFC 3262).
    Prack,
    /// Mid-dialog update (RFC 3311).
    Update,
    /// Mid-dialog info (DTMF etc., RFC 6086).
    Info,
    /// Any other token.
    Other(String),
}

impl Method {
    /// Parses a method token.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "OPTIONS" => Self::Options,
            "REGISTER" => Self::Register,
            "PRACK" => Self::Prack,
            "UPDATE" => Self::Update,
            "INFO" => Self::Info,
            s if is_token(s) => Self::Other(s.to_owned()),
            _ => return None,
        })
    }

    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Prack => "PRACK",
            Self::Update => "UPDATE",
            Self::Info => "INFO",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A header the B2BUA does not interpret, kept verbatim (unfolded) under its canonical name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical name (`Subject` for `s`), or the name as received when unknown.
    pub name: String,
    /// Value with folding replaced by single spaces and outer whitespace trimmed.
    pub value: String,
}

/// The headers every request and response carries, typed, plus the rest in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// Via entries, top first (never empty once parsed).
    pub via: Vec<Via>,
    /// From (caller, with its tag).
    pub from: NameAddr,
    /// To (callee; tag once a dialog exists).
    pub to: NameAddr,
    /// Call-ID.
    pub call_id: String,
    /// CSeq.
    pub cseq: CSeq,
    /// Max-Forwards, when present (requests should carry it).
    pub max_forwards: Option<u8>,
    /// Contact entries (remote target).
    pub contact: Vec<NameAddr>,
    /// Route set to follow.
    pub route: Vec<NameAddr>,
    /// Record-Route entries (the route set a dialog learns).
    pub record_route: Vec<NameAddr>,
    /// Content-Type, if the message has a body.
    pub content_type: Option<String>,
    /// Everything else, in order of appearance.
    pub other: Vec<Header>,
}

impl Headers {
    /// The top Via: the hop that sent this message.
    pub fn top_via(&self) -> Option<&Via> {
        self.via.first()
    }

    /// First value of an untyped header, case-insensitive name.
    pub fn other(&self, name: &str) -> Option<&str> {
        self.other
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    fn write(&self, out: &mut String, body: &[u8]) {
        // Writing to a String cannot fail.
        for v in &self.via {
            let _ = write!(out, "Via: {v}\r\n");
        }
        if let Some(m) = self.max_forwards {
            let _ = write!(out, "Max-Forwards: {m}\r\n");
        }
        let _ = write!(out, "From: {}\r\nTo: {}\r\n", self.from, self.to);
        let _ = write!(out, "Call-ID: {}\r\nCSeq: {}\r\n", self.call_id, self.cseq);
        for (name, list) in [
            ("Contact", &self.contact),
            ("Record-Route", &self.record_route),
            ("Route", &self.route),
        ] {
            for v in list {
                let _ = write!(out, "{name}: {v}\r\n");
            }
        }
        for h in &self.other {
            let _ = write!(out, "{}: {}\r\n", h.name, h.value);
        }
        if let Some(ct) = &self.content_type {
            let _ = write!(out, "Content-Type: {ct}\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method from the Request-Line.
    pub method: Method,
    /// Request-URI as written (scheme checked; SIP URIs validated).
    pub uri: String,
    /// Typed and untyped headers.
    pub headers: Headers,
    /// Body (SDP for a B2BUA), exactly Content-Length bytes.
    pub body: Bytes,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 100..=699.
    pub status: u16,
    /// Reason phrase (may be empty).
    pub reason: String,
    /// Typed and untyped headers.
    pub headers: Headers,
    /// Body.
    pub body: Bytes,
}

/// Either kind of message, as it comes off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Request {
    /// The Request-URI as a SIP URI when it is one (it is not for `tel:`).
    pub fn sip_uri(&self) -> Option<SipUri> {
        SipUri::parse(&self.uri).ok()
    }

    /// Content-Length as it will be sent (always the body length).
    pub fn content_length(&self) -> usize {
        self.body.len()
    }

    /// Serialises to wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        self.headers.write(&mut s, &self.body);
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

impl Response {
    /// Content-Length as it will be sent.
    pub fn content_length(&self) -> usize {
        self.body.len()
    }

    /// Builds a response to `req` per RFC 3261 §8.2.6: Via, From, To, Call-ID and CSeq copied.
    /// A `to_tag` is added to To when given and To has none.
    pub fn for_request(req: &Request, status: u16, reason: &str, to_tag: Option<&str>) -> Self {
        let mut to = req.headers.to.clone();
        if let (Some(tag), None) = (to_tag, to.tag()) {
            to.set_tag(tag);
        }
        Self {
            status,
            reason: reason.to_owned(),
            headers: Headers {
                via: req.headers.via.clone(),
                from: req.headers.from.clone(),
                to,
                call_id: req.headers.call_id.clone(),
                cseq: req.headers.cseq.clone(),
                max_forwards: None,
                contact: Vec::new(),
                route: Vec::new(),
                record_route: Vec::new(),
                content_type: None,
                other: Vec::new(),
            },
            body: Bytes::new(),
        }
    }

    /// Serialises to wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("SIP/2.0 {} {}\r\n", self.status, self.reason);
        self.headers.write(&mut s, &self.body);
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

impl Message {
    /// Parses one message from a datagram (or one frame cut by [`crate::framing`]).
    ///
    /// Bytes after Content-Length are ignored (RFC 4475 dblreq); without Content-Length the body
    /// runs to the end of the datagram (RFC 3261 §18.3).
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        let start = buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(buf.len());
        let buf = &buf[start..];
        let head_end = find_head_end(buf).ok_or(ParseError::drop(Malformed::NoHeadEnd))?;
        let head = std::str::from_utf8(&buf[..head_end])
            .map_err(|_| ParseError::drop(Malformed::Encoding))?;
        let rest = &buf[head_end + 4..];
        let (start_line, lines) = head.split_once("\r\n").unwrap_or((head, ""));
        let raw = unfold(lines).ok_or(ParseError::drop(Malformed::HeaderLine))?;
        let is_response = start_line.starts_with("SIP/");
        // Only the error path pays for collecting what a 400 would copy.
        let fail = |reason| ParseError {
            reason,
            reply_headers: unfold(lines).and_then(|raw| reply_headers(&raw)),
        };
        if is_response {
            let (status, reason) = parse_status_line(start_line)?;
            let (headers, body) = typed(raw, rest).map_err(|e| ParseError::drop(e.reason))?;
            Ok(Self::Response(Response {
                status,
                reason,
                headers,
                body,
            }))
        } else {
            let (method, uri) = parse_request_line(start_line).map_err(fail)?;
            let (headers, body) = typed(raw, rest).map_err(|e| fail(e.reason))?;
            if headers.cseq.method != method.as_str() {
                return Err(fail(Malformed::CSeq));
            }
            Ok(Self::Request(Request {
                method,
                uri,
                headers,
                body,
            }))
        }
    }

    /// Headers of either kind.
    pub fn headers(&self) -> &Headers {
        match self {
            Self::Request(r) => &r.headers,
            Self::Response(r) => &r.headers,
        }
    }

    /// Mutable headers of either kind.
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Self::Request(r) => &mut r.headers,
            Self::Response(r) => &mut r.headers,
        }
    }

    /// Serialises to wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Request(r) => r.to_bytes(),
            Self::Response(r) => r.to_bytes(),
        }
    }
}

/// Offset of the CRLF CRLF that ends the head.
pub(crate) fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Header lines unfolded into `(name, value)`; `None` on a line without a token name and colon.
fn unfold(lines: &str) -> Option<Vec<(&str, String)>> {
    let mut out: Vec<(&str, String)> = Vec::new();
    for line in lines.split("\r\n") {
        if line.contains(['\r', '\n']) {
            return None;
        }
        if line.starts_with([' ', '\t']) {
            let last = out.last_mut()?;
            if !last.1.is_empty() {
                last.1.push(' ');
            }
            last.1.push_str(line.trim());
            continue;
        }
        let (name, value) = line.split_once(':')?;
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return None;
        }
        out.push((name, value.trim().to_owned()));
    }
    // A folded value may have gained trailing blanks from its last continuation line.
    for (_, v) in &mut out {
        let end = v.trim_end().len();
        v.truncate(end);
    }
    Some(out)
}

/// The raw Via/From/To/Call-ID/CSeq a 400 would copy, when all five are present.
fn reply_headers(raw: &[(&str, String)]) -> Option<Vec<Header>> {
    let mut out = Vec::new();
    for want in ["Via", "From", "To", "Call-ID", "CSeq"] {
        let found: Vec<_> = raw
            .iter()
            .filter(|(n, _)| canonical_name(n) == Some(want))
            .map(|(_, v)| Header {
                name: want.to_owned(),
                value: v.clone(),
            })
            .collect();
        if found.is_empty() {
            return None;
        }
        // A reply is routed by the top Via: if that is illegible there is nobody to answer.
        if want == "Via" {
            // `found` is non-empty (checked above) and split_list never returns an empty list.
            let top = split_list(&found[0].value)?;
            Via::parse_version(top[0], false).ok()?;
        }
        out.extend(found);
    }
    Some(out)
}

fn parse_request_line(line: &str) -> Result<(Method, String), Malformed> {
    let mut it = line.split(' ');
    let (Some(m), Some(uri), Some(ver), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(Malformed::StartLine);
    };
    let method = Method::parse(m).ok_or(Malformed::Method)?;
    if ver != "SIP/2.0" {
        return Err(if ver.starts_with("SIP/") {
            Malformed::Version
        } else {
            Malformed::StartLine
        });
    }
    let (scheme, _) = uri.split_once(':').ok_or(Malformed::RequestUri)?;
    if scheme.is_empty()
        // In bounds: the emptiness test short-circuits first.
        || !scheme.as_bytes()[0].is_ascii_alphabetic()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(Malformed::RequestUri);
    }
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        let u = SipUri::parse(uri).map_err(|_| Malformed::RequestUri)?;
        if u.headers.is_some() {
            return Err(Malformed::RequestUri);
        }
    } else if uri.bytes().any(|b| b <= b' ' || b == b'<' || b == b'>') {
        return Err(Malformed::RequestUri);
    }
    Ok((method, uri.to_owned()))
}

fn parse_status_line(line: &str) -> Result<(u16, String), ParseError> {
    let bad = |r| ParseError::drop(r);
    let rest = line
        .strip_prefix("SIP/2.0 ")
        .ok_or(bad(Malformed::Version))?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 {
        return Err(bad(Malformed::StatusCode));
    }
    let status = parse_decimal(code, 700).ok_or(bad(Malformed::StatusCode))?;
    if status < 100 || reason.contains(['\r', '\n']) {
        return Err(bad(Malformed::StatusCode));
    }
    // Bounded above by 700 just now.
    Ok((status as u16, reason.to_owned()))
}

/// Types the known headers, checks the mandatory ones and cuts the body.
fn typed(raw: Vec<(&str, String)>, rest: &[u8]) -> Result<(Headers, Bytes), ParseError> {
    let bad = ParseError::drop;
    let (mut via, mut from, mut to, mut call_id, mut cseq) = (Vec::new(), None, None, None, None);
    let (mut max_forwards, mut content_length, mut content_type) = (None, None, None);
    let (mut contact, mut route, mut record_route, mut other) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let list = |v: &str, which| -> Result<Vec<NameAddr>, ParseError> {
        split_list(v)
            .ok_or(bad(Malformed::NameAddr(which)))?
            .into_iter()
            .map(|e| NameAddr::parse(e, which))
            .collect()
    };
    for (name, value) in raw {
        match canonical_name(name) {
            Some("Via") => {
                for e in split_list(&value).ok_or(bad(Malformed::Via))? {
                    via.push(Via::parse(e)?);
                }
            }
            Some("From") => set_once(&mut from, NameAddr::parse(&value, "From")?, "From")?,
            Some("To") => set_once(&mut to, NameAddr::parse(&value, "To")?, "To")?,
            Some("Call-ID") => {
                if value.is_empty() || value.contains([' ', '\t']) {
                    return Err(bad(Malformed::Missing("Call-ID")));
                }
                set_once(&mut call_id, value, "Call-ID")?;
            }
            Some("CSeq") => set_once(&mut cseq, CSeq::parse(&value)?, "CSeq")?,
            Some("Max-Forwards") => {
                let v = parse_decimal(&value, 256).ok_or(bad(Malformed::MaxForwards))?;
                // Bounded above by 256 just now.
                set_once(&mut max_forwards, v as u8, "Max-Forwards")?;
            }
            Some("Content-Length") => {
                let v = parse_decimal(&value, MAX_BODY as u64 + 1)
                    .ok_or(bad(Malformed::ContentLength))?;
                if content_length.is_some_and(|c| c != v) {
                    return Err(bad(Malformed::ContentLength));
                }
                content_length = Some(v);
            }
            Some("Content-Type") => content_type = Some(value),
            Some("Contact") if value == "*" => other.push(Header {
                name: "Contact".to_owned(),
                value,
            }),
            Some("Contact") => contact.extend(list(&value, "Contact")?),
            Some("Route") => route.extend(list(&value, "Route")?),
            Some("Record-Route") => record_route.extend(list(&value, "Record-Route")?),
            Some(canonical) => other.push(Header {
                name: canonical.to_owned(),
                value,
            }),
            None => other.push(Header {
                name: name.to_owned(),
                value,
            }),
        }
    }
    if via.is_empty() {
        return Err(bad(Malformed::Missing("Via")));
    }
    let body = match content_length {
        // Bounded by MAX_BODY above.
        Some(n) => rest.get(..n as usize).ok_or(bad(Malformed::Truncated))?,
        None if rest.len() > MAX_BODY => return Err(bad(Malformed::ContentLength)),
        None => rest,
    };
    Ok((
        Headers {
            via,
            from: from.ok_or(bad(Malformed::Missing("From")))?,
            to: to.ok_or(bad(Malformed::Missing("To")))?,
            call_id: call_id.ok_or(bad(Malformed::Missing("Call-ID")))?,
            cseq: cseq.ok_or(bad(Malformed::Missing("CSeq")))?,
            max_forwards,
            contact,
            route,
            record_route,
            content_type,
            other,
        },
        Bytes::copy_from_slice(body),
    ))
}

fn set_once<T>(slot: &mut Option<T>, v: T, which: &'static str) -> Result<(), ParseError> {
    if slot.replace(v).is_some() {
        return Err(ParseError::drop(Malformed::Missing(which)));
    }
    Ok(())
}
