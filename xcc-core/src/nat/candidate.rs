//! ICE attributes in SDP (RFC 8839): what XCC writes into its answer on an ICE client leg
//! (`a=ice-lite`, `a=ice-ufrag`, `a=ice-pwd`, `a=candidate`) and what it reads from an offer.
//!
//! Plain functions over attribute lines, so the SDP rewriter ([`crate::sdp`]), which strips every
//! ICE attribute of the far side, can append XCC's own. Lines are `a=name:value` without a line
//! ending; a leading `a=` and a trailing CR are tolerated on input.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::ice::IceCredentials;
use crate::media::RelayedPorts;

/// Candidates read from one offer at most: the rest are ignored, so a hostile SDP cannot make XCC
/// probe an unbounded list of addresses.
pub const MAX_REMOTE_CANDIDATES: usize = 16;

/// RTP component id (RFC 8445 §5.1.1.1).
pub const COMPONENT_RTP: u16 = 1;
/// RTCP component id (absent with rtcp-mux).
pub const COMPONENT_RTCP: u16 = 2;

/// The kind of a candidate; decides its type preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateType {
    /// An address bound on the host.
    Host,
    /// The host address as a STUN server sees it through NAT.
    ServerReflexive,
    /// Learned from a check's source.
    PeerReflexive,
    /// An address on a TURN server.
    Relayed,
}

impl CandidateType {
    /// The `typ` token.
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateType::Host => "host",
            CandidateType::ServerReflexive => "srflx",
            CandidateType::PeerReflexive => "prflx",
            CandidateType::Relayed => "relay",
        }
    }

    /// RFC 8445 §5.1.2.2 recommended type preference.
    pub fn preference(self) -> u32 {
        match self {
            CandidateType::Host => 126,
            CandidateType::PeerReflexive => 110,
            CandidateType::ServerReflexive => 100,
            CandidateType::Relayed => 0,
        }
    }

    fn from_token(token: &str) -> Option<Self> {
        Some(match token {
            "host" => CandidateType::Host,
            "srflx" => CandidateType::ServerReflexive,
            "prflx" => CandidateType::PeerReflexive,
            "relay" => CandidateType::Relayed,
            _ => return None,
        })
    }
}

/// One `a=candidate` (UDP only: XCC relays media over UDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Groups candidates of the same type and base (1-32 ice-chars).
    pub foundation: String,
    /// 1 = RTP, 2 = RTCP.
    pub component: u16,
    /// RFC 8445 §5.1.2 priority.
    pub priority: u32,
    /// Transport address.
    pub address: SocketAddr,
    /// Kind.
    pub kind: CandidateType,
    /// `raddr`/`rport`: the base of a reflexive or relayed candidate.
    pub related: Option<SocketAddr>,
}

impl Candidate {
    /// RFC 8445 §5.1.2.1 priority with a single local interface (local preference 65535).
    pub fn priority_for(kind: CandidateType, component: u16) -> u32 {
        (kind.preference() << 24) | (65535 << 8) | (256 - u32::from(component.clamp(1, 256)))
    }

    /// XCC's host candidate for a bound media port.
    pub fn host(address: SocketAddr, component: u16) -> Self {
        Candidate {
            foundation: "1".to_owned(),
            component,
            priority: Candidate::priority_for(CandidateType::Host, component),
            address,
            kind: CandidateType::Host,
            related: None,
        }
    }

    /// XCC's server-reflexive candidate: the STUN-learned public IP with the bound port (XCC's
    /// NAT forwards media ports 1:1), related to the host address.
    pub fn server_reflexive(public: IpAddr, base: SocketAddr, component: u16) -> Self {
        Candidate {
            foundation: "2".to_owned(),
            component,
            priority: Candidate::priority_for(CandidateType::ServerReflexive, component),
            address: SocketAddr::new(public, base.port()),
            kind: CandidateType::ServerReflexive,
            related: Some(base),
        }
    }

    /// XCC's relayed candidate: an address allocated on a TURN server ([`super::turn`]), related
    /// to XCC's own public mapping as the TURN server saw it.
    pub fn relayed(relayed: SocketAddr, mapped: SocketAddr, component: u16) -> Self {
        Candidate {
            foundation: "3".to_owned(),
            component,
            priority: Candidate::priority_for(CandidateType::Relayed, component),
            address: relayed,
            kind: CandidateType::Relayed,
            related: Some(mapped),
        }
    }

    /// Parses an `a=candidate` value (after `candidate:`). `None` for non-UDP candidates, FQDN
    /// (mDNS) addresses and anything malformed: such candidates are skipped, not fatal.
    pub fn parse(value: &str) -> Option<Self> {
        let mut t = value.split_ascii_whitespace();
        let foundation = t.next()?;
        if foundation.is_empty() || foundation.len() > 32 {
            return None;
        }
        let component: u16 = t.next()?.parse().ok()?;
        if !(1..=256).contains(&component) {
            return None;
        }
        if !t.next()?.eq_ignore_ascii_case("udp") {
            return None;
        }
        let priority: u32 = t.next()?.parse().ok()?;
        let ip: IpAddr = t.next()?.parse().ok()?;
        let port: u16 = t.next()?.parse().ok()?;
        if t.next()? != "typ" {
            return None;
        }
        let kind = CandidateType::from_token(t.next()?)?;
        let mut raddr: Option<IpAddr> = None;
        let mut rport: Option<u16> = None;
        while let Some(name) = t.next() {
            let value = t.next()?;
            match name {
                "raddr" => raddr = value.parse().ok(),
                "rport" => rport = value.parse().ok(),
                _ => {}
            }
        }
        Some(Candidate {
            foundation: foundation.to_owned(),
            component,
            priority,
            address: SocketAddr::new(ip, port),
            kind,
            related: raddr.zip(rport).map(|(ip, port)| SocketAddr::new(ip, port)),
        })
    }
}

impl fmt::Display for Candidate {
    /// The attribute line, e.g. `a=candidate:1 1 UDP 2130706431 203.0.113.1 30000 typ host`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a=candidate:{} {} UDP {} {} {} typ {}",
            self.foundation,
            self.component,
            self.priority,
            self.address.ip(),
            self.address.port(),
            self.kind.as_str()
        )?;
        if let Some(r) = self.related {
            write!(f, " raddr {} rport {}", r.ip(), r.port())?;
        }
        Ok(())
    }
}

/// XCC's candidates for one client leg: host candidates for the advertised local address, plus
/// server-reflexive ones when a public IP was learned and differs. `rtcp_port` is `None` with
/// rtcp-mux.
pub fn leg_candidates(
    local_rtp: SocketAddr,
    rtcp_port: Option<u16>,
    public: Option<IpAddr>,
) -> Vec<Candidate> {
    let mut bases = vec![(local_rtp, COMPONENT_RTP)];
    if let Some(port) = rtcp_port {
        bases.push((SocketAddr::new(local_rtp.ip(), port), COMPONENT_RTCP));
    }
    let mut out: Vec<Candidate> = bases
        .iter()
        .map(|&(addr, c)| Candidate::host(addr, c))
        .collect();
    if let Some(ip) = public.filter(|ip| *ip != local_rtp.ip() && !ip.is_unspecified()) {
        out.extend(
            bases
                .iter()
                .map(|&(addr, c)| Candidate::server_reflexive(ip, addr, c)),
        );
    }
    out
}

/// XCC's candidates for a client leg relayed through its own TURN allocations
/// ([`crate::media::RelayedPorts`]): relayed ones only, component 1 on the RTP allocation and
/// component 2 on the RTCP one (`host_rtcp_port` `None` with rtcp-mux, so no component 2). Host
/// and server-reflexive candidates are left out on purpose: the relay is used because nothing
/// unsolicited reaches XCC directly, so checks towards those could only fail and delay the
/// phone's nomination. The related address is the mapping the TURN server reported, else the
/// bound host address of that component (RFC 8839 §5.1: informative only, never checked).
pub fn relay_candidates(
    relay: &RelayedPorts,
    host_rtp: SocketAddr,
    host_rtcp_port: Option<u16>,
) -> Vec<Candidate> {
    let mut out = vec![Candidate::relayed(
        relay.rtp,
        relay.mapped.unwrap_or(host_rtp),
        COMPONENT_RTP,
    )];
    if let Some(port) = host_rtcp_port {
        let host_rtcp = SocketAddr::new(host_rtp.ip(), port);
        out.push(Candidate::relayed(
            relay.rtcp,
            relay.mapped.unwrap_or(host_rtcp),
            COMPONENT_RTCP,
        ));
    }
    out
}

/// The ICE lines of XCC's answer: `a=ice-lite` belongs at session level; the others in the audio
/// section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceAnswerLines {
    /// Session-level lines (`a=ice-lite`).
    pub session: Vec<String>,
    /// Media-level lines (`a=ice-ufrag`, `a=ice-pwd`, `a=candidate`...).
    pub media: Vec<String>,
}

/// Builds the answer's ICE lines for a lite agent.
pub fn answer_lines(local: &IceCredentials, candidates: &[Candidate]) -> IceAnswerLines {
    let mut media = vec![
        format!("a=ice-ufrag:{}", local.ufrag),
        format!("a=ice-pwd:{}", local.pwd),
    ];
    media.extend(candidates.iter().map(Candidate::to_string));
    IceAnswerLines {
        session: vec!["a=ice-lite".to_owned()],
        media,
    }
}

/// ICE parameters of an offer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteIce {
    /// ufrag and pwd when both are present and valid (RFC 8445 §15.4); `None` means the peer
    /// does not do ICE and gets keepalives instead of checks.
    pub credentials: Option<IceCredentials>,
    /// UDP candidates with IP addresses, at most [`MAX_REMOTE_CANDIDATES`].
    pub candidates: Vec<Candidate>,
    /// The peer is itself lite (then XCC cannot expect checks from it).
    pub lite: bool,
}

impl RemoteIce {
    /// Reads the session-level attribute lines and then the audio section's: a media-level ufrag
    /// or pwd overrides the session-level one (RFC 8839 §5.4).
    pub fn from_attributes<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut ufrag: Option<&str> = None;
        let mut pwd: Option<&str> = None;
        let mut remote = RemoteIce::default();
        for line in lines {
            let line = line.trim_end_matches(['\r', '\n']);
            let line = line.strip_prefix("a=").unwrap_or(line);
            let (name, value) = match line.split_once(':') {
                Some((n, v)) => (n, v.trim()),
                None => (line, ""),
            };
            match name {
                "ice-ufrag" => ufrag = Some(value),
                "ice-pwd" => pwd = Some(value),
                "ice-lite" => remote.lite = true,
                "candidate" if remote.candidates.len() < MAX_REMOTE_CANDIDATES => {
                    if let Some(c) = Candidate::parse(value) {
                        remote.candidates.push(c);
                    }
                }
                _ => {}
            }
        }
        remote.credentials = ufrag.zip(pwd).and_then(|(u, p)| {
            let c = IceCredentials {
                ufrag: u.to_owned(),
                pwd: p.to_owned(),
            };
            c.is_valid().then_some(c)
        });
        remote
    }

    /// RTP-component candidate addresses, highest priority first: the hole-punching targets after
    /// the signalled address.
    pub fn rtp_targets(&self) -> Vec<SocketAddr> {
        let mut c: Vec<&Candidate> = self
            .candidates
            .iter()
            .filter(|c| c.component == COMPONENT_RTP)
            .collect();
        c.sort_by_key(|c| std::cmp::Reverse(c.priority));
        c.iter().map(|c| c.address).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_srflx_lines_follow_rfc_8839() {
        let local: SocketAddr = "10.0.0.5:30000".parse().unwrap();
        let c = leg_candidates(local, Some(30001), Some("203.0.113.1".parse().unwrap()));
        let lines: Vec<String> = c.iter().map(Candidate::to_string).collect();
        assert_eq!(
            lines,
            [
                "a=candidate:1 1 UDP 2130706431 10.0.0.5 30000 typ host",
                "a=candidate:1 2 UDP 2130706430 10.0.0.5 30001 typ host",
                "a=candidate:2 1 UDP 1694498815 203.0.113.1 30000 typ srflx raddr 10.0.0.5 rport 30000",
                "a=candidate:2 2 UDP 1694498814 203.0.113.1 30001 typ srflx raddr 10.0.0.5 rport 30001",
            ]
        );
    }

    #[test]
    fn no_srflx_when_public_equals_local_or_rtcp_mux() {
        let local: SocketAddr = "203.0.113.1:30000".parse().unwrap();
        let c = leg_candidates(local, None, Some(local.ip()));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, CandidateType::Host);
    }

    #[test]
    fn answer_has_lite_ufrag_pwd_and_candidates() {
        let local = IceCredentials {
            ufrag: "abcd".into(),
            pwd: "abcdefghijklmnopqrstuv".into(),
        };
        let cands = [Candidate::host("203.0.113.1:30000".parse().unwrap(), 1)];
        let lines = answer_lines(&local, &cands);
        assert_eq!(lines.session, ["a=ice-lite"]);
        assert_eq!(lines.media[0], "a=ice-ufrag:abcd");
        assert_eq!(lines.media[1], "a=ice-pwd:abcdefghijklmnopqrstuv");
        assert!(lines.media[2].starts_with("a=candidate:1 1 UDP "));
    }

    #[test]
    fn reads_offer_credentials_and_candidates() {
        let session = ["a=ice-ufrag:sess", "a=ice-pwd:sessionpasswordsessionpw"];
        let media = [
            "a=ice-ufrag:8hhY\r",
            "a=ice-pwd:asd88fgpdd777uzjYhagZg",
            "a=candidate:1 1 UDP 2130706431 198.51.100.20 40000 typ host",
            "a=candidate:2 1 UDP 1694498815 203.0.113.77 61000 typ srflx raddr 198.51.100.20 rport 40000",
            "a=candidate:1 2 UDP 2130706430 198.51.100.20 40001 typ host",
            "a=candidate:3 1 TCP 1 198.51.100.20 9 typ host tcptype active",
            "a=candidate:4 1 UDP 2130706431 1f3c-uuid.local 40000 typ host",
            "a=candidate:garbage",
            "a=end-of-candidates",
        ];
        let remote = RemoteIce::from_attributes(session.into_iter().chain(media));
        let creds = remote.credentials.clone().unwrap();
        assert_eq!(creds.ufrag, "8hhY");
        assert_eq!(creds.pwd, "asd88fgpdd777uzjYhagZg");
        assert_eq!(remote.candidates.len(), 3);
        assert_eq!(
            remote.candidates[1].related,
            Some("198.51.100.20:40000".parse().unwrap())
        );
        assert_eq!(
            remote.rtp_targets(),
            [
                "198.51.100.20:40000".parse::<SocketAddr>().unwrap(),
                "203.0.113.77:61000".parse().unwrap()
            ]
        );
        assert!(!remote.lite);
    }

    #[test]
    fn offer_without_valid_credentials_is_not_ice() {
        let remote = RemoteIce::from_attributes(["a=ice-ufrag:abcd", "a=ice-pwd:short"]);
        assert_eq!(remote.credentials, None);
        let remote = RemoteIce::from_attributes(["a=sendrecv"]);
        assert_eq!(remote, RemoteIce::default());
    }

    #[test]
    fn candidate_count_is_bounded() {
        let line = "a=candidate:1 1 UDP 1 198.51.100.20 40000 typ host";
        let lines = vec![line; 1000];
        let remote = RemoteIce::from_attributes(lines);
        assert_eq!(remote.candidates.len(), MAX_REMOTE_CANDIDATES);
    }

    #[test]
    fn relayed_candidate_has_the_lowest_type_preference() {
        let c = Candidate::relayed(
            "203.0.113.10:49200".parse().unwrap(),
            "203.0.113.1:30000".parse().unwrap(),
            1,
        );
        assert_eq!(
            c.to_string(),
            "a=candidate:3 1 UDP 16777215 203.0.113.10 49200 typ relay raddr 203.0.113.1 rport 30000"
        );
        assert!(c.priority < Candidate::priority_for(CandidateType::ServerReflexive, 1));
    }

    #[test]
    fn relay_candidates_are_relayed_only_one_per_component() {
        let relay = RelayedPorts {
            rtp: "192.0.2.80:49152".parse().unwrap(),
            rtcp: "192.0.2.81:50000".parse().unwrap(),
            mapped: Some("203.0.113.1:61000".parse().unwrap()),
        };
        let host: SocketAddr = "10.0.0.5:30000".parse().unwrap();
        let lines: Vec<String> = relay_candidates(&relay, host, Some(30001))
            .iter()
            .map(Candidate::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "a=candidate:3 1 UDP 16777215 192.0.2.80 49152 typ relay raddr 203.0.113.1 rport 61000",
                "a=candidate:3 2 UDP 16777214 192.0.2.81 50000 typ relay raddr 203.0.113.1 rport 61000",
            ]
        );
    }

    #[test]
    fn relay_candidates_relate_to_the_host_address_without_a_mapping_and_skip_rtcp_under_mux() {
        let relay = RelayedPorts {
            rtp: "192.0.2.80:49152".parse().unwrap(),
            rtcp: "192.0.2.81:50000".parse().unwrap(),
            mapped: None,
        };
        let host: SocketAddr = "10.0.0.5:30000".parse().unwrap();
        let both = relay_candidates(&relay, host, Some(30001));
        let related: Vec<_> = both.iter().map(|c| c.related).collect();
        assert_eq!(
            related,
            [Some(host), Some("10.0.0.5:30001".parse().unwrap())]
        );
        let muxed = relay_candidates(&relay, host, None);
        assert_eq!(muxed.len(), 1);
        assert_eq!(
            (muxed[0].component, muxed[0].kind, muxed[0].address),
            (COMPONENT_RTP, CandidateType::Relayed, relay.rtp)
        );
    }

    #[test]
    fn written_candidates_parse_back() {
        let c = Candidate::server_reflexive(
            "2001:db8::1".parse().unwrap(),
            "[fd00::5]:30000".parse().unwrap(),
            1,
        );
        let line = c.to_string();
        let value = line.strip_prefix("a=candidate:").unwrap();
        assert_eq!(Candidate::parse(value), Some(c));
    }
}
