//! The product's "Firewall Generator": the packet-filter rules a satellite needs, derived from its
//! configuration.
//!
//! [`ruleset`] is a pure function of the [`Config`]; the renderers turn its result into an nftables
//! script, iptables commands or a table for people. SIP follows `[sip]` (no SIP rules while SIP is
//! off), STUN `[stun] servers` and TURN `[turn] server` when set; ports the configuration does not
//! carry (STUN and TURN when unset, NTP) are the product documentation's defaults, named as such
//! in every rendering so an operator knows which line follows the file and which follows the
//! manual.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::config::{
    Config, DEFAULT_TURN_PORT, SIP_SERVER_OUT_PORT, SIP_TRUNK_PORT, SipTransport, target_port,
};

/// STUN binding requests for the public address (documented: 3478 and 3479).
pub const DEFAULT_STUN_PORTS: [u16; 2] = [3478, 3479];
/// TURN over UDP (documented: depends on the server; 3478 is the standard port).
pub const DEFAULT_TURN_UDP_PORT: u16 = 3478;
/// TURN over TCP (documented: 443 and 3478).
pub const DEFAULT_TURN_TCP_PORTS: [u16; 2] = [443, 3478];
/// NTP.
pub const NTP_PORT: u16 = 123;

/// Which way a flow is opened; replies are covered by connection tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A peer opens the flow towards XCC: the local (destination) port is XCC's.
    In,
    /// XCC opens the flow: the remote (destination) port is the peer's.
    Out,
}

/// Transport protocol of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl PortRange {
    /// One port.
    pub const fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// `30000-33000` or `5060`: nftables and people read the same form.
    fn dashed(self) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}-{}", self.first, self.last)
        }
    }

    /// `30000:33000`, iptables' form.
    fn coloned(self) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}:{}", self.first, self.last)
        }
    }
}

/// The port match of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// Destination ports: XCC's for [`Direction::In`], the peer's for [`Direction::Out`].
    Destination(PortRange),
    /// Source ports: XCC's own, for flows towards peers whose port is unknown in advance (media).
    Source(PortRange),
}

impl Ports {
    fn nft(self) -> String {
        match self {
            Ports::Destination(p) => format!("dport {}", p.dashed()),
            Ports::Source(p) => format!("sport {}", p.dashed()),
        }
    }

    fn iptables(self) -> String {
        match self {
            Ports::Destination(p) => format!("--dport {}", p.coloned()),
            Ports::Source(p) => format!("--sport {}", p.coloned()),
        }
    }

    /// The peer-side port for people: `any` when the rule matches XCC's source port.
    fn table(self) -> String {
        match self {
            Ports::Destination(p) => p.dashed(),
            Ports::Source(_) => "any".to_owned(),
        }
    }
}

/// Where a rule's port came from, so the output tells which line follows the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A configuration key (dotted name).
    Config(&'static str),
    /// A default from the product documentation; the configuration has no key for it yet.
    Documented,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Config(key) => write!(f, "config {key}"),
            Origin::Documented => f.write_str("documented default"),
        }
    }
}

/// One allowed flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Who opens the flow.
    pub direction: Direction,
    /// UDP or TCP.
    pub transport: Transport,
    /// Which ports the rule matches.
    pub ports: Ports,
    /// Restricts an incoming rule to the address XCC binds, when the configuration names one.
    pub local: Option<IpAddr>,
    /// What the flow is for, shown to operators.
    pub purpose: &'static str,
    /// Where the port came from.
    pub origin: Origin,
}

/// Everything a satellite's filter needs, plus remarks for flows that need no rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// Allowed flows, incoming first.
    pub rules: Vec<Rule>,
    /// Explanations rendered as comments (e.g. why the control port has no rule).
    pub notes: Vec<String>,
}

/// Output format of `xccctl firewall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An `nft -f` script.
    Nftables,
    /// `iptables` / `ip6tables` commands.
    Iptables,
    /// A table for people.
    Table,
}

/// The rules this configuration needs.
pub fn ruleset(config: &Config) -> Ruleset {
    let mut rules = Vec::new();
    let mut notes = Vec::new();
    let specific = |ip: IpAddr| (!ip.is_unspecified()).then_some(ip);
    let media_ip = specific(config.media.bind_address);
    let media = PortRange {
        first: config.media.port_min,
        last: config.media.port_max,
    };
    let mut rule = |direction, transport, ports: PortRange, local, purpose, origin| {
        rules.push(Rule {
            direction,
            transport,
            ports: Ports::Destination(ports),
            local,
            purpose,
            origin,
        })
    };
    use Direction::{In, Out};
    use Transport::{Tcp, Udp};
    let doc = Origin::Documented;
    rule(
        In,
        Udp,
        media,
        media_ip,
        "media: SRTP from clients/TURN, RTP from the PBX",
        Origin::Config("media.port_min..media.port_max"),
    );
    let sip = &config.sip;
    let sip_on = sip.is_enabled();
    if sip_on {
        let (trunk, server) = (sip.trunk_listen, sip.server_listen);
        for t in [Udp, Tcp] {
            let p = PortRange::single(trunk.port());
            let purpose = "SIP trunk from the PBX/SBC";
            rule(
                In,
                t,
                p,
                specific(trunk.ip()),
                purpose,
                Origin::Config("sip.trunk_listen"),
            );
        }
        for t in [Tcp, Udp] {
            let p = PortRange::single(server.port());
            let purpose = "SIP from the XPhone server";
            rule(
                In,
                t,
                p,
                specific(server.ip()),
                purpose,
                Origin::Config("sip.server_listen"),
            );
        }
    }
    let listen = config.control.listen;
    if listen.ip().is_loopback() {
        notes.push(format!(
            "control.listen is {listen} (loopback): the gRPC control port needs no rule"
        ));
    } else {
        rule(
            In,
            Tcp,
            PortRange::single(listen.port()),
            specific(listen.ip()),
            "gRPC control from the XPhone server",
            Origin::Config("control.listen"),
        );
    }
    if sip_on {
        // XCC opens flows only over the configured transport; replies ride on conntrack.
        let transport = |t: SipTransport| match t {
            SipTransport::Udp => Udp,
            SipTransport::Tcp => Tcp,
        };
        let pbx = target_port(
            sip.pbx_target.as_deref().unwrap_or_default(),
            SIP_TRUNK_PORT,
        );
        let p = PortRange::single(pbx);
        let purpose = "SIP trunk to the PBX/SBC";
        let origin = Origin::Config("sip.pbx_target");
        rule(Out, transport(sip.pbx_transport), p, None, purpose, origin);
        let server = target_port(
            sip.server_target.as_deref().unwrap_or_default(),
            SIP_SERVER_OUT_PORT,
        );
        let p = PortRange::single(server);
        let purpose = "SIP to the XPhone server";
        let origin = Origin::Config("sip.server_target");
        rule(
            Out,
            transport(sip.server_transport),
            p,
            None,
            purpose,
            origin,
        );
    }
    // STUN: the ports of `[stun] servers` when configured (xccd asks them), else the documented
    // defaults (`xccctl stun-check` / `nat-type` use 3478). TURN: `[turn] server`'s port when
    // set (XCC allocates from its media sockets; the server's answers and the relayed media come
    // back on that flow through conntrack, so no inbound rule beyond the media pool's), else the
    // documented UDP and TCP ports. STUN and TURN often share a port: one rule for both, never a
    // duplicate.
    let stun_ports = configured_stun_ports(config);
    let (stun_ports, stun_origin) = if stun_ports.is_empty() {
        (DEFAULT_STUN_PORTS.to_vec(), doc)
    } else {
        (stun_ports, Origin::Config("stun.servers"))
    };
    let turn = config
        .turn
        .server_text()
        .map(|server| target_port(server, DEFAULT_TURN_PORT));
    let (turn_port, turn_origin) = match turn {
        Some(port) => (port, Origin::Config("turn.server")),
        None => (DEFAULT_TURN_UDP_PORT, doc),
    };
    // `turn.transport = "tcp"`: XCC's allocations each hold a TCP connection to the server.
    let turn_tcp =
        turn.is_some() && config.turn.transport.trim() == crate::config::TURN_TRANSPORT_TCP;
    for &port in &stun_ports {
        let shared = port == turn_port && !turn_tcp;
        let (purpose, origin) = match (shared, stun_origin, turn_origin) {
            (false, ..) => ("STUN: public address", stun_origin),
            (true, Origin::Config(_), Origin::Config(_)) => (
                "STUN: public address; TURN relay (UDP)",
                Origin::Config("stun.servers, turn.server"),
            ),
            // One of the two follows the file: name that one.
            (true, Origin::Documented, o) | (true, o, Origin::Documented) => {
                ("STUN: public address; TURN relay (UDP)", o)
            }
        };
        rule(Out, Udp, PortRange::single(port), None, purpose, origin);
    }
    if turn_tcp {
        let p = PortRange::single(turn_port);
        rule(Out, Tcp, p, None, "TURN relay (TCP)", turn_origin);
    } else if !stun_ports.contains(&turn_port) {
        let p = PortRange::single(turn_port);
        rule(Out, Udp, p, None, "TURN relay (UDP)", turn_origin);
    }
    if turn.is_none() {
        // Without `[turn]`: the manual's TCP ports, for TURN over TCP/TLS.
        for port in DEFAULT_TURN_TCP_PORTS {
            let p = PortRange::single(port);
            rule(Out, Tcp, p, None, "TURN relay (TCP)", doc);
        }
    }
    rule(
        Out,
        Udp,
        PortRange::single(NTP_PORT),
        None,
        "NTP: clock for RTCP and timers",
        doc,
    );
    notes.push(
        "media towards clients and the PBX goes to whatever port the peer uses: allow established \
         flows out and, if the output policy drops, UDP from the media pool"
            .to_owned(),
    );
    rules.push(Rule {
        direction: Out,
        transport: Udp,
        ports: Ports::Source(media),
        local: media_ip,
        purpose: "media to clients and the PBX (from the pool)",
        origin: Origin::Config("media.port_min..media.port_max"),
    });
    if !sip_on {
        notes.push(
            "SIP is off (sip.server_target and sip.pbx_target unset, or sip.enabled = false): \
             no SIP rules"
                .to_owned(),
        );
    }
    Ruleset { rules, notes }
}

/// The distinct UDP ports of `[stun] servers`, in order (entries that do not parse are left to
/// validation, which runs before any rule is printed).
fn configured_stun_ports(config: &Config) -> Vec<u16> {
    let mut ports = Vec::new();
    for entry in &config.stun.servers {
        if let Ok(server) = crate::config::StunServer::parse(entry)
            && !ports.contains(&server.port)
        {
            ports.push(server.port);
        }
    }
    ports
}

impl Ruleset {
    /// Renders in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Nftables => self.nftables(),
            Format::Iptables => self.iptables(),
            Format::Table => self.table(),
        }
    }

    /// An `nft -f` script: chains `xcc_in` / `xcc_out` in the `inet filter` table of Debian's
    /// `/etc/nftables.conf`, and jumps to them from its `input` / `output` chains.
    pub fn nftables(&self) -> String {
        let mut out = String::from(
            "#!/usr/sbin/nft -f\n\
             # XCC satellite: generated by `xccctl firewall --format nftables`.\n\
             # Declares the inet filter table of Debian's /etc/nftables.conf (a no-op when it exists),\n\
             # fills the chains xcc_in / xcc_out and jumps to them; replies ride on conntrack.\n",
        );
        for note in &self.notes {
            let _ = writeln!(out, "# {note}");
        }
        out.push_str(
            "table inet filter {\n\
             \tchain input {\n\t\ttype filter hook input priority filter;\n\t}\n\
             \tchain output {\n\t\ttype filter hook output priority filter;\n\t}\n\
             \tchain xcc_in {\n\t}\n\
             \tchain xcc_out {\n\t}\n\
             }\n\
             flush chain inet filter xcc_in\n\
             flush chain inet filter xcc_out\n\
             add rule inet filter xcc_in ct state established,related accept\n\
             add rule inet filter xcc_out ct state established,related accept\n",
        );
        for r in &self.rules {
            let chain = match r.direction {
                Direction::In => "xcc_in",
                Direction::Out => "xcc_out",
            };
            // The local address is the destination coming in, the source going out.
            let (v4, v6) = match r.direction {
                Direction::In => ("ip daddr", "ip6 daddr"),
                Direction::Out => ("ip saddr", "ip6 saddr"),
            };
            let addr = match r.local {
                Some(IpAddr::V4(a)) => format!("{v4} {a} "),
                Some(IpAddr::V6(a)) => format!("{v6} {a} "),
                None => String::new(),
            };
            let ports = r.ports.nft();
            let _ = writeln!(
                out,
                "add rule inet filter {chain} {addr}{} {ports} accept comment \"{} ({})\"",
                r.transport.name(),
                r.purpose,
                r.origin
            );
        }
        out.push_str(
            "# Jumps: load this file once per boot (nftables.service), or they are added twice.\n\
             add rule inet filter input jump xcc_in\n\
             add rule inet filter output jump xcc_out\n",
        );
        out
    }

    /// `iptables` and `ip6tables` commands appending to chains `XCC-IN` / `XCC-OUT`.
    pub fn iptables(&self) -> String {
        let mut out = String::from(
            "#!/bin/sh\n\
             # XCC satellite: generated by `xccctl firewall --format iptables`.\n\
             # Creates chains XCC-IN / XCC-OUT in the filter table and jumps to them from INPUT / OUTPUT.\n\
             set -e\n",
        );
        for note in &self.notes {
            let _ = writeln!(out, "# {note}");
        }
        for tool in ["iptables", "ip6tables"] {
            for chain in ["XCC-IN", "XCC-OUT"] {
                let _ = writeln!(out, "{tool} -N {chain} 2>/dev/null || {tool} -F {chain}");
                let _ = writeln!(
                    out,
                    "{tool} -A {chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
                );
            }
            for r in &self.rules {
                let flag = match r.direction {
                    Direction::In => "-d",
                    Direction::Out => "-s",
                };
                let addr = match (tool, r.local) {
                    (_, None) => String::new(),
                    ("iptables", Some(IpAddr::V4(a))) => format!("{flag} {a} "),
                    ("ip6tables", Some(IpAddr::V6(a))) => format!("{flag} {a} "),
                    // A rule bound to the other family's address does not apply to this tool.
                    _ => continue,
                };
                let chain = match r.direction {
                    Direction::In => "XCC-IN",
                    Direction::Out => "XCC-OUT",
                };
                let t = r.transport.name();
                let ports = r.ports.iptables();
                let _ = writeln!(
                    out,
                    "{tool} -A {chain} {addr}-p {t} -m {t} {ports} -m comment --comment \"{} ({})\" -j ACCEPT",
                    r.purpose, r.origin
                );
            }
            let _ = writeln!(
                out,
                "{tool} -C INPUT -j XCC-IN 2>/dev/null || {tool} -A INPUT -j XCC-IN"
            );
            let _ = writeln!(
                out,
                "{tool} -C OUTPUT -j XCC-OUT 2>/dev/null || {tool} -A OUTPUT -j XCC-OUT"
            );
        }
        out
    }

    /// A table for people: one flow per line.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<4} {:<5} {:<11} {:<15} {:<47} {}\n",
            "DIR", "PROTO", "PORT", "LOCAL", "PURPOSE", "SOURCE"
        );
        for r in &self.rules {
            let dir = match r.direction {
                Direction::In => "in",
                Direction::Out => "out",
            };
            let port = r.ports.table();
            let local = r.local.map_or_else(|| "any".to_owned(), |a| a.to_string());
            let _ = writeln!(
                out,
                "{dir:<4} {:<5} {port:<11} {local:<15} {:<47} {}",
                r.transport.name(),
                r.purpose,
                r.origin
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

/// `xccctl firewall`: loads and validates `path` as xccd would, prints the rules, and returns the
/// exit code (64 for an invalid configuration, as `xccd check-config`).
pub fn print(format: Format, path: &std::path::Path) -> std::process::ExitCode {
    match Config::load(path).and_then(|(c, _)| c.validate()) {
        Ok(v) => {
            print!("{}", ruleset(&v.config).render(format));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xccctl: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn non_default() -> Config {
        Config::parse(
            "[media]\nbind_address = \"192.0.2.10\"\nport_min = 40000\nport_max = 40999\n\
             [control]\nlisten = \"0.0.0.0:3390\"\nallow_insecure_control = true\n\
             [sip]\ntrunk_listen = \"192.0.2.10:5070\"\nserver_listen = \"0.0.0.0:4911\"\n\
             pbx_target = \"pbx.example.net:5080\"\nserver_target = \"198.51.100.2\"\n",
            Path::new("test.toml"),
        )
        .unwrap()
    }

    #[test]
    fn table_for_a_non_default_config_is_exact() {
        let c = non_default();
        let got = ruleset(&c).render(Format::Table);
        let want = "\
DIR  PROTO PORT        LOCAL           PURPOSE                                         SOURCE
in   udp   40000-40999 192.0.2.10      media: SRTP from clients/TURN, RTP from the PBX config media.port_min..media.port_max
in   udp   5070        192.0.2.10      SIP trunk from the PBX/SBC                      config sip.trunk_listen
in   tcp   5070        192.0.2.10      SIP trunk from the PBX/SBC                      config sip.trunk_listen
in   tcp   4911        any             SIP from the XPhone server                      config sip.server_listen
in   udp   4911        any             SIP from the XPhone server                      config sip.server_listen
in   tcp   3390        any             gRPC control from the XPhone server             config control.listen
out  udp   5080        any             SIP trunk to the PBX/SBC                        config sip.pbx_target
out  tcp   4900        any             SIP to the XPhone server                        config sip.server_target
out  udp   3478        any             STUN: public address; TURN relay (UDP)          documented default
out  udp   3479        any             STUN: public address                            documented default
out  tcp   443         any             TURN relay (TCP)                                documented default
out  tcp   3478        any             TURN relay (TCP)                                documented default
out  udp   123         any             NTP: clock for RTCP and timers                  documented default
out  udp   any         192.0.2.10      media to clients and the PBX (from the pool)    config media.port_min..media.port_max
note: media towards clients and the PBX goes to whatever port the peer uses: allow established flows out and, if the output policy drops, UDP from the media pool
";
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn stun_rules_follow_the_configured_servers() {
        let c = Config::parse(
            "[stun]\nservers = [\"203.0.113.10\", \"stun.example.net:19302\", \"203.0.113.11:19302\"]\n",
            Path::new("test.toml"),
        )
        .unwrap();
        let stun: Vec<_> = ruleset(&c)
            .rules
            .into_iter()
            .filter(|r| r.purpose.starts_with("STUN"))
            .map(|r| (r.ports, r.origin))
            .collect();
        let origin = Origin::Config("stun.servers");
        assert_eq!(
            stun,
            [
                (Ports::Destination(PortRange::single(3478)), origin),
                (Ports::Destination(PortRange::single(19302)), origin),
            ]
        );
        assert_renders(
            &c,
            Format::Table,
            "out  udp   19302       any             STUN: public address                            config stun.servers",
            "3479",
        );
    }

    /// No two rules of `set` open the same flow (direction, transport, ports, local address).
    fn assert_no_flow_twice(set: &Ruleset) {
        for (i, a) in set.rules.iter().enumerate() {
            for b in &set.rules[i + 1..] {
                assert!(
                    (a.direction, a.transport, a.ports, a.local)
                        != (b.direction, b.transport, b.ports, b.local),
                    "{a:?} and {b:?}"
                );
            }
        }
    }

    /// `config`'s ruleset rendered as `format` contains `has` and not `lacks`.
    fn assert_renders(config: &Config, format: Format, has: &str, lacks: &str) {
        let text = ruleset(config).render(format);
        assert!(text.contains(has), "{text}");
        assert!(!text.contains(lacks), "{text}");
    }

    #[test]
    fn no_flow_is_listed_twice() {
        assert_no_flow_twice(&ruleset(&non_default()));
    }

    #[test]
    fn sip_off_means_no_sip_rules_and_a_note() {
        let set = ruleset(&Config::default());
        assert!(
            !set.rules.iter().any(|r| r.purpose.starts_with("SIP")),
            "{:?}",
            set.rules
        );
        assert!(set.notes.iter().any(|n| n.starts_with("SIP is off")));
        let table = ruleset(&non_default()).render(Format::Table);
        assert!(!table.contains("SIP is off"), "{table}");
    }

    #[test]
    fn loopback_control_gets_a_note_instead_of_a_rule() {
        let c = Config::default();
        let set = ruleset(&c);
        assert!(
            !set.rules
                .iter()
                .any(|r| r.origin == Origin::Config("control.listen"))
        );
        assert!(set.notes[0].contains("needs no rule"), "{:?}", set.notes);
        let nft = set.render(Format::Nftables);
        assert!(nft.contains("# control.listen is 127.0.0.1:3280 (loopback)"));
        assert!(
            !nft.lines()
                .any(|l| l.starts_with("add rule") && l.contains("3280")),
            "{nft}"
        );
    }

    #[test]
    fn renderers_follow_the_configured_pool_and_address() {
        let c = non_default();
        let set = ruleset(&c);
        let nft = set.render(Format::Nftables);
        assert!(nft.contains(
            "add rule inet filter xcc_in ip daddr 192.0.2.10 udp dport 40000-40999 accept"
        ));
        assert!(nft.contains(
            "add rule inet filter xcc_out ip saddr 192.0.2.10 udp sport 40000-40999 accept"
        ));
        assert!(nft.contains("add rule inet filter xcc_in tcp dport 3390 accept"));
        assert!(!nft.contains("30000"));
        let ipt = set.render(Format::Iptables);
        assert!(ipt.contains("iptables -A XCC-IN -d 192.0.2.10 -p udp -m udp --dport 40000:40999"));
        // The IPv4-bound media rule has no ip6tables twin.
        assert!(!ipt.contains("ip6tables -A XCC-IN -d 192.0.2.10"));
        assert!(ipt.contains("ip6tables -A XCC-IN -p tcp -m tcp --dport 3390"));
    }

    fn with_turn(extra: &str) -> Config {
        Config::parse(
            &format!("[turn]\nserver = \"turn.example.net:3479\"\nusername = \"u\"\npassword = \"p\"\n{extra}"),
            Path::new("test.toml"),
        )
        .unwrap()
    }

    fn turn_and_stun(c: &Config) -> Vec<(Transport, Ports, &'static str, Origin)> {
        ruleset(c)
            .rules
            .into_iter()
            .filter(|r| {
                r.direction == Direction::Out
                    && (r.purpose.contains("TURN") || r.purpose.starts_with("STUN"))
            })
            .map(|r| (r.transport, r.ports, r.purpose, r.origin))
            .collect()
    }

    #[test]
    fn turn_rule_follows_the_configured_server_and_replaces_the_documented_ones() {
        let one = |p| Ports::Destination(PortRange::single(p));
        let turn = Origin::Config("turn.server");
        assert_eq!(
            turn_and_stun(&with_turn("")),
            [
                (
                    Transport::Udp,
                    one(3478),
                    "STUN: public address",
                    Origin::Documented
                ),
                (
                    Transport::Udp,
                    one(3479),
                    "STUN: public address; TURN relay (UDP)",
                    turn
                ),
            ],
            "the server's port, UDP only: no documented TCP rules"
        );
        let table = ruleset(&with_turn("")).render(Format::Table);
        assert!(
            table.contains("out  udp   3479        any             STUN: public address; TURN relay (UDP)          config turn.server"),
            "{table}"
        );
        let c = with_turn("[stun]\nservers = [\"203.0.113.10\", \"203.0.113.11:3479\"]\n");
        assert_eq!(
            turn_and_stun(&c),
            [
                (
                    Transport::Udp,
                    one(3478),
                    "STUN: public address",
                    Origin::Config("stun.servers")
                ),
                (
                    Transport::Udp,
                    one(3479),
                    "STUN: public address; TURN relay (UDP)",
                    Origin::Config("stun.servers, turn.server")
                ),
            ]
        );
        let c = Config::parse(
            "[turn]\nserver = \"[2001:db8::7]:5000\"\n",
            Path::new("test.toml"),
        )
        .unwrap();
        assert!(
            turn_and_stun(&c).contains(&(Transport::Udp, one(5000), "TURN relay (UDP)", turn)),
            "{:?}",
            turn_and_stun(&c)
        );
        let c = Config::parse(
            "[turn]\nserver = \"turn.example.net\"\n",
            Path::new("test.toml"),
        )
        .unwrap();
        assert!(turn_and_stun(&c).contains(&(
            Transport::Udp,
            one(3478),
            "STUN: public address; TURN relay (UDP)",
            turn
        )));
        assert_renders(
            &with_turn(""),
            Format::Nftables,
            "add rule inet filter xcc_out udp dport 3479 accept comment \"STUN: public address; TURN relay (UDP) (config turn.server)\"",
            "tcp dport 443",
        );
    }

    #[test]
    fn turn_over_tcp_gets_a_tcp_rule_to_the_server_and_no_udp_one() {
        let turn = Origin::Config("turn.server");
        let one = |p| Ports::Destination(PortRange::single(p));
        let rules = turn_and_stun(&with_turn("transport = \"tcp\"\n"));
        assert!(
            rules.contains(&(Transport::Tcp, one(3479), "TURN relay (TCP)", turn)),
            "{rules:?}"
        );
        assert!(
            !rules
                .iter()
                .any(|r| r.0 == Transport::Udp && r.2.contains("TURN")),
            "{rules:?}"
        );
    }

    #[test]
    fn without_turn_the_documented_turn_ports_stay() {
        let c = Config::parse("[turn]\nserver = \"\"\n", Path::new("test.toml")).unwrap();
        let rules = turn_and_stun(&c);
        assert!(rules.iter().all(|r| r.3 == Origin::Documented), "{rules:?}");
        assert!(
            rules
                .iter()
                .any(|r| r.0 == Transport::Tcp && r.1 == Ports::Destination(PortRange::single(443)))
        );
        assert_no_flow_twice(&ruleset(&with_turn("")));
    }
}
