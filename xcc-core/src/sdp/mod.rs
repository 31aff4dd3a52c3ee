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

use self::grammar::{
    address_type, attribute, next_token, parse_connection, parse_direction, parse_media,
    parse_origin, parse_rtcp,
};
use crate::error::{Error, Result};
use crate::media::{Direction, LegPorts};
use crate::sdes::CryptoAttribute;

mod grammar;
mod rewrite;

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
    /// Clock rates from the section's `a=rtpmap` lines, for [`crate::media::LegConfig::clock_rates`]
    /// (see [`SessionDescription::audio_clock_rates`]).
    pub clock_rates: Vec<(u8, u32)>,
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
    /// Where RTCP must be sent when that is not `address` and `ports.rtcp`: a client leg relayed
    /// through TURN has a separate allocation (its own relayed IP and port) for RTCP. `Some`
    /// writes exactly one `a=rtcp:<port> IN IP4|IP6 <addr>` with it, replacing the section's
    /// a=rtcp or added at its end; ignored with `rtcp_mux` (RTCP then shares the RTP address).
    /// `None`: a=rtcp lines carry `address` and `ports.rtcp`, and none is added.
    pub rtcp_address: Option<SocketAddr>,
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
            clock_rates: self.audio_clock_rates(),
        })
    }

    /// RTP clock rates of the first audio section's `a=rtpmap:<pt> <name>/<rate>[/<channels>]`
    /// lines, for [`crate::media::LegConfig::clock_rates`] (jitter needs the rate of dynamic
    /// types such as Opus). Malformed lines, types above 127 and a zero rate are skipped.
    pub fn audio_clock_rates(&self) -> Vec<(u8, u32)> {
        let Some((start, end)) = self.audio_section() else {
            return Vec::new();
        };
        self.lines[start + 1..end]
            .iter()
            .filter_map(|l| match attribute(l)? {
                ("rtpmap", Some(value)) => parse_rtpmap(value),
                _ => None,
            })
            .collect()
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

    /// The attribute lines ICE reads for the audio stream: session level first, then the audio
    /// section's, so [`crate::nat::candidate::RemoteIce::from_attributes`] lets a media-level
    /// ufrag/pwd override a session-level one (RFC 8839 §5.4). Empty without an audio section.
    pub fn audio_attribute_lines(&self) -> impl Iterator<Item = &str> {
        let session_end = self.session_end();
        let (start, end) = self.audio_section().unwrap_or((0, 0));
        self.lines[..session_end]
            .iter()
            .chain(&self.lines[start..end])
            .filter(|l| l.starts_with("a="))
            .map(String::as_str)
    }

    /// Adds XCC's ICE-lite lines to a description already rewritten for the client leg
    /// ([`Self::rewrite_audio`] strips the peer's ICE lines first): session lines go before the
    /// first m=, media lines at the end of the audio section. Called only towards clients: the
    /// PBX leg never does ICE.
    pub fn add_ice_lines(&mut self, ice: &crate::nat::candidate::IceAnswerLines) -> Result<()> {
        let (_, audio_end) = self.audio_section().ok_or(Error::SdpNoAudio)?;
        self.lines
            .splice(audio_end..audio_end, ice.media.iter().cloned());
        let session_end = self.session_end();
        self.lines
            .splice(session_end..session_end, ice.session.iter().cloned());
        self.numbers = (1..=self.lines.len()).collect();
        Ok(())
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

/// `<pt> <encoding>/<rate>[/<params>]` (RFC 8866 §6.6) to (payload type, clock rate).
fn parse_rtpmap(value: &str) -> Option<(u8, u32)> {
    let (pt, encoding) = next_token(value)?;
    let pt = pt.parse::<u8>().ok().filter(|&pt| pt < 128)?;
    let (_, rest) = encoding.trim().split_once('/')?;
    let rate = rest
        .split('/')
        .next()?
        .parse::<u32>()
        .ok()
        .filter(|&r| r > 0)?;
    Some((pt, rate))
}

fn parse_error(line: usize, reason: &'static str) -> Error {
    Error::SdpParse { line, reason }
}
