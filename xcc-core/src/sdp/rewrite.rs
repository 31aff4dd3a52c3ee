//! [`SessionDescription::rewrite_audio`]: what XCC changes in the SDP it emits on a leg.

use std::net::{IpAddr, SocketAddr};

use super::grammar::{address_type, attribute, parse_direction, parse_media, parse_origin};
use super::{AudioRewrite, SessionDescription, parse_error};
use crate::error::{Error, Result};
use crate::media::Direction;
use crate::sdes::CryptoAttribute;

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
    /// Rewrites the first audio section (and c=/o= addresses) so media flows through XCC; sets any
    /// other m= section's port to 0 (declined); strips ICE (a=candidate, ice-ufrag, ice-pwd,
    /// ice-options, end-of-candidates, ice-lite) and DTLS (fingerprint, setup) attributes.
    ///
    /// Declined sections keep their lines except `a=crypto` and `a=rtcp`, and their c= carries
    /// XCC's address too, so no key or address of one side reaches the other.
    ///
    /// Within the audio section: the m= port and proto are replaced (the format list is kept
    /// verbatim), c= and a=rtcp carry XCC's address and ports, `a=crypto` lines are replaced by
    /// `rw.crypto` (at the place of the first one, else at the end of the section), the direction
    /// attribute is replaced when `rw.direction` is set, and a=rtcp-mux follows `rw.rtcp_mux`.
    /// With `rw.rtcp_address` (and no rtcp-mux) the section carries exactly one a=rtcp, with that
    /// address: the first a=rtcp is replaced, later ones dropped, and one is added at the end of
    /// the section when there was none.
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
        // With rtcp-mux RTCP travels on the RTP address; `address` and `ports.rtcp` apply then.
        let explicit_rtcp = rw.rtcp_address.filter(|_| !rw.rtcp_mux);
        let mut rtcp_done = false;
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
                // Keys and RTCP ports of declined streams are dropped, and every address is
                // XCC's: neither side learns the other's keys or addresses (topology hiding).
                let declined = index >= session_end;
                if attr.is_some_and(|(name, _)| name == "crypto" || (declined && name == "rtcp")) {
                    continue;
                }
                if line.starts_with("c=") {
                    out.push(connection.clone());
                } else if let Some(origin) = line.strip_prefix("o=") {
                    out.push(rewrite_origin_address(origin, rw.address));
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
                "rtcp" => match explicit_rtcp {
                    Some(rtcp) => {
                        if !rtcp_done {
                            out.push(rtcp_line(rtcp));
                            rtcp_done = true;
                        }
                    }
                    None => out.push(rtcp_line(SocketAddr::new(rw.address, rw.ports.rtcp))),
                },
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
        if let (Some(rtcp), false) = (explicit_rtcp, rtcp_done) {
            tail.push(rtcp_line(rtcp));
        }
        out.splice(audio_out_end..audio_out_end, tail);
        self.numbers = (1..=out.len()).collect();
        self.lines = out;
        Ok(())
    }
}

/// The attribute line for a direction.
fn direction_line(direction: Direction) -> String {
    match direction {
        Direction::SendRecv => "a=sendrecv",
        Direction::SendOnly => "a=sendonly",
        Direction::RecvOnly => "a=recvonly",
        Direction::Inactive => "a=inactive",
    }
    .to_owned()
}

/// `a=rtcp:<port> IN IP4|IP6 <addr>` (RFC 3605).
fn rtcp_line(rtcp: SocketAddr) -> String {
    format!(
        "a=rtcp:{} IN {} {}",
        rtcp.port(),
        address_type(rtcp.ip()),
        rtcp.ip()
    )
}

/// One `a=crypto` line per attribute.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::LegPorts;
    use crate::sdp::MediaTransport;

    /// A PBX offer without a=rtcp; `extra` goes at the end of its audio section.
    fn offer(extra: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n\
             m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n{extra}a=sendrecv\r\n\
             m=video 6002 RTP/AVP 96\r\na=rtcp:6003\r\n"
        )
    }

    /// A client leg relayed through TURN: RTP and RTCP allocations on different relayed IPs.
    fn relayed(rtcp_mux: bool) -> AudioRewrite {
        AudioRewrite {
            address: "192.0.2.80".parse().unwrap(),
            ports: LegPorts {
                rtp: 49152,
                rtcp: 49153,
            },
            transport: MediaTransport::RtpSavp,
            rtcp_mux,
            crypto: Vec::new(),
            direction: None,
            rtcp_address: Some("192.0.2.81:50000".parse().unwrap()),
        }
    }

    fn rewritten(text: &str, rw: &AudioRewrite) -> SessionDescription {
        let mut sdp = SessionDescription::parse(text).unwrap();
        sdp.rewrite_audio(rw).unwrap();
        sdp
    }

    fn rtcp_lines(sdp: &SessionDescription) -> Vec<String> {
        let text = sdp.to_string();
        text.lines()
            .filter(|l| l.starts_with("a=rtcp:"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn explicit_rtcp_address_replaces_every_a_rtcp_with_one_line() {
        let text = offer("a=rtcp:6001\r\na=rtcp:6001 IN IP4 198.51.100.9\r\n");
        let sdp = rewritten(&text, &relayed(false));
        assert_eq!(rtcp_lines(&sdp), ["a=rtcp:50000 IN IP4 192.0.2.81"]);
        let audio = sdp.audio().unwrap();
        assert_eq!(audio.rtcp, Some("192.0.2.81:50000".parse().unwrap()));
        assert_eq!(audio.connection, Some("192.0.2.80".parse().unwrap()));
        assert_eq!(audio.port, 49152);
        assert!(
            sdp.to_string()
                .contains("a=rtpmap:0 PCMU/8000\r\na=rtcp:50000 IN IP4 192.0.2.81\r\n"),
            "in place of the first a=rtcp: {sdp}"
        );
    }

    #[test]
    fn explicit_rtcp_address_is_added_at_the_end_of_the_audio_section() {
        let sdp = rewritten(&offer(""), &relayed(false));
        let text = sdp.to_string();
        assert!(
            text.contains("a=sendrecv\r\na=rtcp:50000 IN IP4 192.0.2.81\r\nm=video 0 "),
            "{text}"
        );
        assert_eq!(
            sdp.audio().unwrap().rtcp,
            Some("192.0.2.81:50000".parse().unwrap())
        );
    }

    #[test]
    fn explicit_rtcp_address_is_written_as_ipv6() {
        let rw = AudioRewrite {
            rtcp_address: Some("[2001:db8::81]:50000".parse().unwrap()),
            ..relayed(false)
        };
        let sdp = rewritten(&offer(""), &rw);
        assert_eq!(rtcp_lines(&sdp), ["a=rtcp:50000 IN IP6 2001:db8::81"]);
    }

    #[test]
    fn explicit_rtcp_address_is_ignored_under_rtcp_mux() {
        let sdp = rewritten(&offer("a=rtcp-mux\r\n"), &relayed(true));
        assert!(rtcp_lines(&sdp).is_empty(), "{sdp}");
        assert!(sdp.audio().unwrap().rtcp_mux);
        // An a=rtcp the offer had is rewritten as without an explicit address.
        let sdp = rewritten(&offer("a=rtcp:6001\r\na=rtcp-mux\r\n"), &relayed(true));
        assert_eq!(rtcp_lines(&sdp), ["a=rtcp:49153 IN IP4 192.0.2.80"]);
    }

    #[test]
    fn without_explicit_rtcp_address_a_rtcp_is_rewritten_as_before() {
        let rw = AudioRewrite {
            rtcp_address: None,
            ..relayed(false)
        };
        let sdp = rewritten(&offer("a=rtcp:6001\r\na=rtcp:6001\r\n"), &rw);
        assert_eq!(
            rtcp_lines(&sdp),
            [
                "a=rtcp:49153 IN IP4 192.0.2.80",
                "a=rtcp:49153 IN IP4 192.0.2.80"
            ]
        );
        assert!(rtcp_lines(&rewritten(&offer(""), &rw)).is_empty());
    }
}
