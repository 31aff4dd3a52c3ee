//! SDP offer/answer rewriting so that media flows through XCC's ports (shared by SIP and gRPC).
//!
//! XCC is a B2BUA for media: each side must see XCC's address, ports, transport and keys, and
//! nothing else may change, because phones and PBXs negotiate codecs, packetisation and DTMF among
//! themselves. So a [`SessionDescription`] is the received text split into lines, validated once
//! against the RFC 8866 grammar XCC depends on; [`SessionDescription::rewrite_audio`] replaces the
//! few lines it owns and every other line is written back byte for byte.
//!
//! Choices (see `docs/sdp.md`): LF and CRLF are both accepted and blank lines skipped; output always
//! uses CRLF. Only the first audio m= section is relayed; every other section is declined with port
//! 0 and loses its `a=crypto` lines (its keys must not leak to the other side). ICE and DTLS
//! attributes are stripped everywhere, since XCC terminates transport on each leg.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::error::{Error, Result};
use crate::media::{Direction, LegPorts};
use crate::sdes::CryptoAttribute;

/// The audio stream of a session description, as XCC needs it to configure a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioMedia {
    /// Media-level c= else session-level c=; `None` for `0.0.0.0` / `::` (RFC 2543 hold) or when a
    /// rejected stream (port 0) carries no address.
    pub connection: Option<IpAddr>,
    /// RTP port; 0 means the stream is rejected.
    pub port: u16,
    /// From `a=rtcp` (RFC 3605), its address defaulting to `connection`; `None` when absent,
    /// malformed or on hold (RTCP is then on `port + 1`, or on `port` with rtcp-mux).
    pub rtcp: Option<SocketAddr>,
    /// `a=rtcp-mux` (RFC 5761) present.
    pub rtcp_mux: bool,
    /// The m= line's transport protocol.
    pub transport: MediaTransport,
    /// `a=crypto` lines with suites XCC supports; unsupported or malformed ones are skipped.
    pub cryptos: Vec<CryptoAttribute>,
    /// Media-level direction, else session-level, else sendrecv; with a `0.0.0.0` connection the
    /// peer cannot receive, so sendrecv becomes sendonly and recvonly becomes inactive
    /// (RFC 3264 §8.4 old-style hold).
    pub direction: Direction,
    /// RTP payload types of the m= format list, in offer order.
    pub payload_types: Vec<u8>,
}

/// The transport protocol of an m= line; decides whether a leg speaks SRTP and whether RTCP
/// feedback may be used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaTransport {
    /// `RTP/AVP`: plain RTP (what PBXs speak).
    RtpAvp,
    /// `RTP/AVPF`: plain RTP with RTCP feedback.
    RtpAvpf,
    /// `RTP/SAVP`: SRTP (what SDES softphones speak).
    RtpSavp,
    /// `RTP/SAVPF`: SRTP with RTCP feedback.
    RtpSavpf,
    /// Anything else (`UDP/TLS/RTP/SAVPF`, `udp`, `TCP/MSRP`, ...), kept verbatim.
    Other(String),
}

impl MediaTransport {
    /// Whether the transport implies SRTP (SDES keys required).
    pub fn is_secure(&self) -> bool {
        matches!(self, MediaTransport::RtpSavp | MediaTransport::RtpSavpf)
    }

    /// Classifies an m= proto token; case-insensitive because some devices lower-case it.
    pub fn from_proto(proto: &str) -> Self {
        const KNOWN: [(&str, MediaTransport); 4] = [
            ("RTP/AVP", MediaTransport::RtpAvp),
            ("RTP/AVPF", MediaTransport::RtpAvpf),
            ("RTP/SAVP", MediaTransport::RtpSavp),
            ("RTP/SAVPF", MediaTransport::RtpSavpf),
        ];
        KNOWN
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(proto))
            .map(|(_, t)| t)
            .unwrap_or_else(|| MediaTransport::Other(proto.to_owned()))
    }

    /// The m= proto token.
    pub fn as_str(&self) -> &str {
        match self {
            MediaTransport::RtpAvp => "RTP/AVP",
            MediaTransport::RtpAvpf => "RTP/AVPF",
            MediaTransport::RtpSavp => "RTP/SAVP",
            MediaTransport::RtpSavpf => "RTP/SAVPF",
            MediaTransport::Other(proto) => proto,
        }
    }
}

impl fmt::Display for MediaTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What XCC puts into the audio section of the SDP it emits on one leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioRewrite {
    /// XCC's address on this leg (its public address on the client leg).
    pub address: IpAddr,
    /// The leg's bound ports, advertised unchanged (XCC never remaps ports).
    pub ports: LegPorts,
    /// Transport of this leg (SAVP towards clients, AVP towards the PBX).
    pub transport: MediaTransport,
    /// Whether this leg multiplexes RTCP: `a=rtcp-mux` is kept (or added) only if true.
    pub rtcp_mux: bool,
    /// Replaces every `a=crypto` line of the section; empty removes them.
    pub crypto: Vec<CryptoAttribute>,
    /// `None` keeps the section's direction attribute (an old-style hold, `c=0.0.0.0`, is written
    /// as the direction [`AudioMedia::direction`] reports, since XCC's address replaces it).
    pub direction: Option<Direction>,
}

/// The origin (o=) fields a B2BUA compares to tell a changed SDP from a repeated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `<username>`, `-` when the sender has none.
    pub username: String,
    /// `<sess-id>`.
    pub session_id: u64,
    /// `<sess-version>`: bumped by the sender on every change.
    pub version: u64,
    /// `<unicast-address>`, verbatim (may be a host name).
    pub address: String,
}

/// A parsed session description that keeps every line it does not rewrite byte for byte.
#[derive(Clone)]
pub struct SessionDescription {
    /// Lines without their line ending, each `<type>=<value>`, validated by [`Self::parse`].
    lines: Vec<String>,
    /// 1-based number of each line in the received text (blank lines are not stored), so errors
    /// point at the line a trace shows; after a rewrite, the number in the output.
    numbers: Vec<usize>,
}

impl PartialEq for SessionDescription {
    /// Equal when they print the same: where blank lines were skipped does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.lines == other.lines
    }
}

impl Eq for SessionDescription {}

/// Attributes of ICE (RFC 8839) and DTLS-SRTP (RFC 8842) that XCC strips: it terminates the
/// transport on each leg, so the peer's candidates and fingerprints are meaningless to the other.
const STRIPPED_ATTRIBUTES: [&str; 11] = [
    "candidate",
    "remote-candidates",
    "end-of-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "fingerprint",
    "setup",
    "tls-id",
];

impl SessionDescription {
    /// Parses SDP text with LF or CRLF line endings. Never panics: anything XCC cannot relay
    /// gives [`Error::SdpParse`] with the 1-based line number.
    pub fn parse(text: &str) -> Result<Self> {
        let mut lines = Vec::new();
        let mut numbers = Vec::new();
        let mut seen_origin = false;
        for (index, raw) in text.split('\n').enumerate() {
            let number = index + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                continue;
            }
            let bytes = line.as_bytes();
            if bytes.len() < 2 || !bytes[0].is_ascii_lowercase() || bytes[1] != b'=' {
                return Err(parse_error(number, "not a <type>=<value> line"));
            }
            if line.contains('\r') || line.contains('\0') {
                return Err(parse_error(number, "control character in line"));
            }
            let value = &line[2..];
            if lines.is_empty() {
                if line != "v=0" {
                    return Err(parse_error(number, "first line is not v=0"));
                }
            } else {
                match bytes[0] {
                    b'v' => return Err(parse_error(number, "repeated v= line")),
                    b'o' => {
                        if seen_origin {
                            return Err(parse_error(number, "repeated o= line"));
                        }
                        parse_origin(value).ok_or(parse_error(number, "malformed o= line"))?;
                        seen_origin = true;
                    }
                    b'c' => {
                        parse_connection(value).ok_or(parse_error(number, "malformed c= line"))?;
                    }
                    b'm' => {
                        parse_media(value).ok_or(parse_error(number, "malformed m= line"))?;
                    }
                    _ => {}
                }
            }
            lines.push(line.to_owned());
            numbers.push(number);
        }
        if lines.is_empty() {
            return Err(parse_error(0, "empty body"));
        }
        if !seen_origin {
            return Err(parse_error(0, "no o= line"));
        }
        Ok(Self { lines, numbers })
    }

    /// The first audio m= section (XCC relays one audio stream per call).
    pub fn audio(&self) -> Result<AudioMedia> {
        let (start, end) = self.audio_section().ok_or(Error::SdpNoAudio)?;
        let session = &self.lines[..self.session_end()];
        let section = &self.lines[start..end];
        let line_number = |offset: usize| self.line_number(start + offset);
        // Validated by `parse`: the section starts with a well-formed m= line.
        let media = parse_media(&section[0][2..])
            .ok_or(parse_error(line_number(0), "malformed m= line"))?;

        let connection_line = section
            .iter()
            .enumerate()
            .find(|(_, l)| l.starts_with("c="))
            .map(|(i, l)| (start + i, l))
            .or_else(|| {
                session
                    .iter()
                    .enumerate()
                    .find(|(_, l)| l.starts_with("c="))
            });
        let (address, on_hold) = match connection_line {
            Some((index, line)) => {
                let (_, address) = parse_connection(&line[2..])
                    .ok_or(parse_error(self.line_number(index), "malformed c= line"))?;
                let ip = address.parse::<IpAddr>().map_err(|_| {
                    parse_error(
                        self.line_number(index),
                        "connection address is not an IP literal",
                    )
                })?;
                if ip.is_unspecified() {
                    (None, true)
                } else {
                    (Some(ip), false)
                }
            }
            None if media.port == 0 => (None, false),
            None => return Err(parse_error(line_number(0), "audio has no c= line")),
        };

        let mut rtcp = None;
        let mut rtcp_mux = false;
        let mut cryptos = Vec::new();
        let mut direction = None;
        for (offset, line) in section.iter().enumerate().skip(1) {
            let Some((name, value)) = attribute(line) else {
                continue;
            };
            match name {
                "rtcp" => match parse_rtcp(value.unwrap_or_default(), address) {
                    Some(parsed) => rtcp = parsed,
                    // RTCP then goes to RTP port + 1, as if the optional attribute were absent.
                    None => {
                        tracing::debug!(line = line_number(offset), "skipping malformed a=rtcp")
                    }
                },
                "rtcp-mux" => rtcp_mux = true,
                "crypto" => match CryptoAttribute::parse(value.unwrap_or_default()) {
                    Ok(crypto) => cryptos.push(crypto),
                    Err(error) => {
                        tracing::debug!(line = line_number(offset), %error, "skipping a=crypto");
                    }
                },
                _ => direction = parse_direction(name).or(direction),
            }
        }
        let direction = direction
            .or_else(|| {
                session
                    .iter()
                    .rev()
                    .filter_map(|l| attribute(l))
                    .find_map(|(name, _)| parse_direction(name))
            })
            .unwrap_or_default();
        let direction = if on_hold {
            match direction {
                Direction::SendRecv => Direction::SendOnly,
                Direction::RecvOnly => Direction::Inactive,
                other => other,
            }
        } else {
            direction
        };
        let payload_types = media
            .formats
            .split_ascii_whitespace()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter(|&pt| pt < 128)
            .collect();
        Ok(AudioMedia {
            connection: address,
            port: media.port,
            rtcp,
            rtcp_mux,
            transport: MediaTransport::from_proto(media.proto),
            cryptos,
            direction,
            payload_types,
        })
    }

    /// Rewrites the first audio section (and c=/o= addresses) so media flows through XCC; sets any
    /// other m= section's port to 0 (declined); strips ICE (a=candidate, ice-ufrag, ice-pwd,
    /// ice-options, end-of-candidates, ice-lite) and DTLS (fingerprint, setup) attributes.
    ///
    /// Within the audio section: the m= port and proto are replaced (the format list is kept
    /// verbatim), c= and a=rtcp carry XCC's address and ports, `a=crypto` lines are replaced by
    /// `rw.crypto` (at the place of the first one, else at the end of the section), the direction
    /// attribute is replaced when `rw.direction` is set, and a=rtcp-mux follows `rw.rtcp_mux`.
    pub fn rewrite_audio(&mut self, rw: &AudioRewrite) -> Result<()> {
        let (audio_start, audio_end) = self.audio_section().ok_or(Error::SdpNoAudio)?;
        let session_end = self.session_end();
        let session_has_c = self.lines[..session_end]
            .iter()
            .any(|l| l.starts_with("c="));
        let audio_has_c = self.lines[audio_start..audio_end]
            .iter()
            .any(|l| l.starts_with("c="));
        let connection = format!("c=IN {} {}", address_type(rw.address), rw.address);
        // XCC's real address replaces an old-style hold's 0.0.0.0, so the hold must be stated as
        // a direction or it would read as sendrecv.
        let new_direction = rw.direction.or_else(|| {
            self.audio()
                .ok()
                .filter(|a| a.connection.is_none() && a.port != 0)
                .map(|a| a.direction)
        });

        let mut out = Vec::with_capacity(self.lines.len() + rw.crypto.len() + 3);
        let mut crypto_done = false;
        let mut direction_done = false;
        let mut mux_seen = false;
        let mut connection_done = audio_has_c || session_has_c;
        let mut audio_out_end = None;
        for (index, line) in self.lines.iter().enumerate() {
            if index == audio_end {
                audio_out_end = Some(out.len());
            }
            let in_audio = (audio_start..audio_end).contains(&index);
            let attr = attribute(line);
            if let Some((name, _)) = attr
                && STRIPPED_ATTRIBUTES.contains(&name)
            {
                continue;
            }
            if !in_audio {
                if attr.is_some_and(|(name, _)| name == "crypto") {
                    continue;
                }
                if index < session_end {
                    if line.starts_with("c=") {
                        out.push(connection.clone());
                    } else if let Some(origin) = line.strip_prefix("o=") {
                        out.push(rewrite_origin_address(origin, rw.address));
                    } else {
                        out.push(line.clone());
                    }
                } else if let Some(value) = line.strip_prefix("m=") {
                    out.push(decline_media(value));
                } else {
                    out.push(line.clone());
                }
                continue;
            }
            if index == audio_start {
                let media = parse_media(&line[2..])
                    .ok_or(parse_error(self.line_number(index), "malformed m= line"))?;
                let mut m = format!("m={} {} {}", media.media, rw.ports.rtp, rw.transport);
                if !media.formats.is_empty() {
                    m.push(' ');
                    m.push_str(media.formats);
                }
                out.push(m);
                continue;
            }
            if !connection_done && !line.starts_with("i=") {
                out.push(connection.clone());
                connection_done = true;
            }
            if line.starts_with("c=") {
                out.push(connection.clone());
                continue;
            }
            let Some((name, _)) = attr else {
                out.push(line.clone());
                continue;
            };
            match name {
                "crypto" => {
                    if !crypto_done {
                        push_cryptos(&mut out, &rw.crypto);
                        crypto_done = true;
                    }
                }
                "rtcp-mux" => {
                    if rw.rtcp_mux && !mux_seen {
                        out.push(line.clone());
                    }
                    mux_seen = true;
                }
                "rtcp" => out.push(format!(
                    "a=rtcp:{} IN {} {}",
                    rw.ports.rtcp,
                    address_type(rw.address),
                    rw.address
                )),
                _ => match (parse_direction(name), new_direction) {
                    (Some(_), Some(direction)) => {
                        if !direction_done {
                            out.push(direction_line(direction));
                            direction_done = true;
                        }
                    }
                    _ => out.push(line.clone()),
                },
            }
        }
        // What the audio section still lacks goes at its end.
        let audio_out_end = audio_out_end.unwrap_or(out.len());
        let mut tail = Vec::new();
        if !connection_done {
            tail.push(connection.clone());
        }
        if !crypto_done {
            push_cryptos(&mut tail, &rw.crypto);
        }
        if rw.rtcp_mux && !mux_seen {
            tail.push("a=rtcp-mux".to_owned());
        }
        if let (Some(direction), false) = (new_direction, direction_done) {
            tail.push(direction_line(direction));
        }
        out.splice(audio_out_end..audio_out_end, tail);
        self.numbers = (1..=out.len()).collect();
        self.lines = out;
        Ok(())
    }

    /// XCC's own origin for the leg it emits on (B2BUA: each side sees XCC as the session owner);
    /// callers bump `version` on every new offer of the same session. The username becomes `-`.
    pub fn set_origin(&mut self, session_id: u64, version: u64, address: IpAddr) {
        let origin = format!(
            "o=- {session_id} {version} IN {} {address}",
            address_type(address)
        );
        match self.lines.iter_mut().find(|l| l.starts_with("o=")) {
            Some(line) => *line = origin,
            // `parse` guarantees an o= line, and no method removes it.
            None => {
                let at = 1.min(self.lines.len());
                self.lines.insert(at, origin);
                self.numbers = (1..=self.lines.len()).collect();
            }
        }
    }

    /// The sender's origin: a B2BUA compares `session_id`/`version` to tell a re-INVITE that
    /// changes media from a refresh that does not.
    pub fn origin(&self) -> Result<Origin> {
        let (index, line) = self
            .lines
            .iter()
            .enumerate()
            .find(|(_, l)| l.starts_with("o="))
            .ok_or(parse_error(0, "no o= line"))?;
        let fields = parse_origin(&line[2..])
            .ok_or(parse_error(self.line_number(index), "malformed o= line"))?;
        Ok(Origin {
            username: fields[0].to_owned(),
            session_id: fields[1].parse().map_err(|_| {
                parse_error(self.line_number(index), "o= sess-id is not a 64-bit number")
            })?,
            version: fields[2].parse().map_err(|_| {
                parse_error(
                    self.line_number(index),
                    "o= sess-version is not a 64-bit number",
                )
            })?,
            address: fields[5].to_owned(),
        })
    }

    /// Index one past the last session-level line.
    fn session_end(&self) -> usize {
        self.lines
            .iter()
            .position(|l| l.starts_with("m="))
            .unwrap_or(self.lines.len())
    }

    /// `[start, end)` of the first `m=audio` section.
    fn audio_section(&self) -> Option<(usize, usize)> {
        let start = self.lines.iter().position(|l| {
            l.strip_prefix("m=")
                .and_then(parse_media)
                .is_some_and(|m| m.media == "audio")
        })?;
        let end = self.lines[start + 1..]
            .iter()
            .position(|l| l.starts_with("m="))
            .map_or(self.lines.len(), |p| start + 1 + p);
        Some((start, end))
    }

    /// Line number for errors about a stored line.
    fn line_number(&self, index: usize) -> usize {
        self.numbers.get(index).copied().unwrap_or(index + 1)
    }
}

impl fmt::Display for SessionDescription {
    /// The SDP body, every line ending in CRLF (RFC 8866 §5).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            f.write_str(line)?;
            f.write_str("\r\n")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SessionDescription {
    /// The lines, with SDES keys (`a=crypto`) and `k=` keys redacted so they never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for line in &self.lines {
            if line.starts_with("a=crypto:") {
                list.entry(&"a=crypto:<redacted>");
            } else if line.starts_with("k=") {
                list.entry(&"k=<redacted>");
            } else {
                list.entry(line);
            }
        }
        list.finish()
    }
}

/// An m= line split into what the rewrite needs.
struct MediaLine<'a> {
    media: &'a str,
    port: u16,
    proto: &'a str,
    /// The format list exactly as received (may be empty for a rejected stream).
    formats: &'a str,
}

/// `m=<media> <port>[/<number of ports>] <proto> <fmt> ...` (value after `m=`).
fn parse_media(value: &str) -> Option<MediaLine<'_>> {
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
fn parse_connection(value: &str) -> Option<(&str, &str)> {
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
fn parse_origin(value: &str) -> Option<[&str; 6]> {
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
fn parse_rtcp(value: &str, connection: Option<IpAddr>) -> Option<Option<SocketAddr>> {
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
fn attribute(line: &str) -> Option<(&str, Option<&str>)> {
    let body = line.strip_prefix("a=")?;
    Some(match body.split_once(':') {
        Some((name, value)) => (name, Some(value)),
        None => (body.trim_end_matches([' ', '\t']), None),
    })
}

/// The first whitespace-separated token and the rest after it.
fn next_token(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start_matches([' ', '\t']);
    if text.is_empty() {
        return None;
    }
    Some(match text.find([' ', '\t']) {
        Some(end) => (&text[..end], &text[end..]),
        None => (text, ""),
    })
}

fn parse_direction(name: &str) -> Option<Direction> {
    match name {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    }
}

fn direction_line(direction: Direction) -> String {
    match direction {
        Direction::SendRecv => "a=sendrecv",
        Direction::SendOnly => "a=sendonly",
        Direction::RecvOnly => "a=recvonly",
        Direction::Inactive => "a=inactive",
    }
    .to_owned()
}

fn address_type(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn push_cryptos(out: &mut Vec<String>, cryptos: &[CryptoAttribute]) {
    out.extend(cryptos.iter().map(|c| format!("a=crypto:{c}")));
}

/// Replaces the address of an o= value, keeping username, ids and version.
fn rewrite_origin_address(value: &str, address: IpAddr) -> String {
    match parse_origin(value) {
        Some([user, id, version, net, _, _]) => format!(
            "o={user} {id} {version} {net} {} {address}",
            address_type(address)
        ),
        // Unreachable for parsed SDP; keep the line rather than invent one.
        None => format!("o={value}"),
    }
}

/// Sets an m= line's port to 0, keeping the rest verbatim.
fn decline_media(value: &str) -> String {
    match parse_media(value) {
        Some(m) if m.port == 0 => format!("m={value}"),
        Some(m) if m.formats.is_empty() => format!("m={} 0 {}", m.media, m.proto),
        Some(m) => format!("m={} 0 {} {}", m.media, m.proto, m.formats),
        None => format!("m={value}"),
    }
}

fn parse_error(line: usize, reason: &'static str) -> Error {
    Error::SdpParse { line, reason }
}
