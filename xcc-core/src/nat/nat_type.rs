//! NAT type detection on demand (`xccctl nat-type`): how the NAT in front of XCC maps and filters
//! UDP, in words an administrator understands, with what to do about it.
//!
//! With an RFC 5780 server (one that returns OTHER-ADDRESS and honours CHANGE-REQUEST, as coturn
//! does with two addresses) the probe runs the RFC 5780 §4.3/§4.4 tests; with a plain server it
//! compares the mappings two configured servers report, which tells endpoint-independent from
//! dependent mapping but not which kind of dependent. Filtering tests run before XCC sends anything
//! to the server's other address, so the mapping tests cannot open the filter they measure.
//!
//! Sans-IO like [`super::discovery`]: drive it with `handle_timeout` / `poll_transmit` /
//! `handle_response` on one UDP socket until [`NatTypeProbe::verdict`] is `Some`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use super::stun::{self, BINDING_REQUEST, BINDING_SUCCESS, Message, Writer};
use super::transaction::{Retransmission, Transaction, TxStep};

/// How the NAT chooses the public address for a local socket (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingBehavior {
    /// The server saw XCC's own local address: no NAT on the path.
    NoNat,
    /// One public address per local socket, whatever the destination ("cone" NAT).
    EndpointIndependent,
    /// A new public address per destination IP.
    AddressDependent,
    /// A new public address per destination IP and port ("symmetric" NAT).
    AddressAndPortDependent,
    /// Different destinations saw different public addresses (two plain servers cannot tell which
    /// kind of dependence).
    Dependent,
    /// Only one server could be asked and it does not support RFC 5780.
    Unknown,
}

/// Which inbound packets the NAT or firewall lets through to a mapping (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilteringBehavior {
    /// From anyone ("full cone").
    EndpointIndependent,
    /// Only from IPs XCC sent to ("restricted cone").
    AddressDependent,
    /// Only from IP:port pairs XCC sent to ("port-restricted cone").
    AddressAndPortDependent,
}

/// What the administrator should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recommendation {
    /// Clients reach XCC's advertised address directly.
    Direct,
    /// Clients reach XCC only after XCC sent to them first: keep hole punching on (it is on by
    /// default), or forward the media port range to XCC 1:1.
    HolePunching,
    /// The public address depends on the destination, or UDP does not get out at all: configure a
    /// TURN server, or forward the media port range to XCC 1:1 and set `public_address`.
    Turn,
}

/// The result of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatReport {
    /// XCC's public address as the primary server saw it; `None` when it never answered.
    pub public: Option<SocketAddr>,
    /// Mapping behaviour.
    pub mapping: MappingBehavior,
    /// Filtering behaviour; `None` when the server cannot test it (no RFC 5780 support) or when no
    /// server answered.
    pub filtering: Option<FilteringBehavior>,
    /// Whether the NAT kept the local port (useful with 1:1 port forwarding).
    pub port_preserved: Option<bool>,
}

impl NatReport {
    /// Whether no server answered at all (UDP blocked or servers down).
    pub fn is_blocked(&self) -> bool {
        self.public.is_none()
    }

    /// What to do about it.
    pub fn recommendation(&self) -> Recommendation {
        use FilteringBehavior as F;
        use MappingBehavior as M;
        if self.is_blocked() {
            return Recommendation::Turn;
        }
        match (self.mapping, self.filtering) {
            (M::AddressDependent | M::AddressAndPortDependent | M::Dependent, _) => {
                Recommendation::Turn
            }
            (M::NoNat | M::EndpointIndependent, Some(F::EndpointIndependent)) => {
                Recommendation::Direct
            }
            (M::NoNat, None) => Recommendation::Direct,
            _ => Recommendation::HolePunching,
        }
    }
}

impl fmt::Display for NatReport {
    /// A paragraph for `xccctl nat-type`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(public) = self.public else {
            return write!(
                f,
                "No STUN server answered: outgoing UDP to the STUN ports seems blocked, or the \
                 servers are down. Recommendation: allow UDP 3478/3479 out, or configure a TURN \
                 server (TCP 443)."
            );
        };
        write!(f, "Public address {public}. ")?;
        f.write_str(match self.mapping {
            MappingBehavior::NoNat => "No NAT: XCC's own address is public. ",
            MappingBehavior::EndpointIndependent => {
                "The NAT keeps one public address per XCC port whatever the destination \
                 (endpoint-independent mapping). "
            }
            MappingBehavior::AddressDependent => {
                "The NAT picks a new public address for each destination IP \
                 (address-dependent mapping): the address XCC learns is not the one clients see. "
            }
            MappingBehavior::AddressAndPortDependent => {
                "The NAT picks a new public address for each destination IP and port \
                 (symmetric NAT): the address XCC learns is not the one clients see. "
            }
            MappingBehavior::Dependent => {
                "Two STUN servers saw different public addresses (destination-dependent mapping, \
                 symmetric NAT): the address XCC learns is not the one clients see. "
            }
            MappingBehavior::Unknown => {
                "Mapping behaviour unknown: configure a second STUN server, or one supporting \
                 RFC 5780, to test it. "
            }
        })?;
        f.write_str(match self.filtering {
            Some(FilteringBehavior::EndpointIndependent) => {
                "Inbound packets are accepted from anyone (endpoint-independent filtering). "
            }
            Some(FilteringBehavior::AddressDependent) => {
                "Inbound packets are accepted only from IPs XCC sent to first \
                 (address-dependent filtering). "
            }
            Some(FilteringBehavior::AddressAndPortDependent) => {
                "Inbound packets are accepted only from addresses and ports XCC sent to first \
                 (port-restricted filtering). "
            }
            None => "Filtering not tested (the server does not support RFC 5780). ",
        })?;
        if self.port_preserved == Some(false) {
            f.write_str("The NAT changes ports. ")?;
        }
        f.write_str(match self.recommendation() {
            Recommendation::Direct => "Recommendation: direct; nothing to configure.",
            Recommendation::HolePunching => {
                "Recommendation: hole punching (on by default), or forward the media port range \
                 to XCC 1:1."
            }
            Recommendation::Turn => {
                "Recommendation: TURN; or forward the media port range to XCC 1:1 and set \
                 public_address."
            }
        })
    }
}

/// Where to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatTypeConfig {
    /// The STUN server asked first (RFC 5780 tests when it returns OTHER-ADDRESS).
    pub primary: SocketAddr,
    /// Another server for the two-server comparison when the primary lacks RFC 5780.
    pub secondary: Option<SocketAddr>,
    /// The probe socket's local address, to recognise "no NAT"; `None` or unspecified skips that.
    pub local: Option<SocketAddr>,
    /// Retransmissions; filtering tests expect silence, so each costs one full timeout.
    pub retransmission: Retransmission,
}

/// The tests, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    /// Binding to the primary: mapping M1 and OTHER-ADDRESS.
    Basic,
    /// RFC 5780 filtering test II: answer from the other IP and port.
    FilterChangeIpPort,
    /// RFC 5780 filtering test III: answer from the other port.
    FilterChangePort,
    /// RFC 5780 mapping test II: to the other IP, primary port.
    MapOtherIp,
    /// RFC 5780 mapping test III: to the other IP and port.
    MapOtherIpPort,
    /// Two-server comparison: to the secondary.
    MapSecondary,
}

/// The NAT type probe; see the module docs.
#[derive(Debug)]
pub struct NatTypeProbe {
    /// Settings.
    config: NatTypeConfig,
    /// The test in flight.
    test: Option<Test>,
    /// Its transaction.
    tx: Option<Transaction>,
    /// Encoded request (header + CHANGE-REQUEST + FINGERPRINT).
    request: [u8; 36],
    /// Request length.
    request_len: usize,
    /// A (re)transmission waits for `poll_transmit`.
    send_pending: bool,
    /// Mapping from the basic test.
    m1: Option<SocketAddr>,
    /// Mapping from the second mapping test.
    m2: Option<SocketAddr>,
    /// RFC 5780 OTHER-ADDRESS of the primary.
    other: Option<SocketAddr>,
    /// Filtering result.
    filtering: Option<FilteringBehavior>,
    /// Mapping result.
    mapping: Option<MappingBehavior>,
    /// The final report.
    verdict: Option<NatReport>,
    /// When the probe was created: the first request is due then.
    created: Instant,
}

impl NatTypeProbe {
    /// A probe; the first request is due at `now`.
    pub fn new(config: NatTypeConfig, now: Instant) -> Self {
        NatTypeProbe {
            config,
            test: None,
            tx: None,
            request: [0; 36],
            request_len: 0,
            send_pending: false,
            m1: None,
            m2: None,
            other: None,
            filtering: None,
            mapping: None,
            verdict: None,
            created: now,
        }
    }

    /// The report once every test finished.
    pub fn verdict(&self) -> Option<&NatReport> {
        self.verdict.as_ref()
    }

    /// Advances timers and starts tests.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl rand::RngCore) {
        if self.verdict.is_some() {
            return;
        }
        if self.test.is_none() {
            if now >= self.created {
                self.start(now, Test::Basic, rng);
            }
            return;
        }
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        match tx.on_timeout(now) {
            TxStep::Wait => {}
            TxStep::Retransmit => self.send_pending = true,
            TxStep::TimedOut => self.advance(now, None, rng),
        }
    }

    /// Offers a datagram from the probe socket; true when it answered the test in flight.
    /// `now` and `rng` start the next test right away.
    pub fn handle_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        rng: &mut impl rand::RngCore,
    ) -> bool {
        let (Some(tx), Some(test)) = (self.tx, self.test) else {
            return false;
        };
        let Ok(msg) = Message::parse(bytes) else {
            return false;
        };
        if msg.transaction_id() != tx.id || msg.msg_type() != BINDING_SUCCESS {
            return false;
        }
        if msg.has_fingerprint() && !msg.verify_fingerprint() {
            return false;
        }
        // Filtering tests are answered from another address by design; the 96-bit random id is
        // what authenticates them. Every other answer must come from where the request went.
        let filtering = matches!(test, Test::FilterChangeIpPort | Test::FilterChangePort);
        if !filtering && from != tx.dest {
            return false;
        }
        if test == Test::Basic {
            self.other = msg.other_address();
        }
        let Some(mapped) = msg.xor_mapped_address().or_else(|| msg.mapped_address()) else {
            return false;
        };
        self.advance(now, Some(mapped), rng);
        true
    }

    /// Records the result of the test in flight (`None` = no answer) and starts the next one.
    fn advance(&mut self, now: Instant, mapped: Option<SocketAddr>, rng: &mut impl rand::RngCore) {
        self.tx = None;
        self.send_pending = false;
        let Some(test) = self.test else {
            return;
        };
        let next = match test {
            Test::Basic => {
                let Some(m1) = mapped else {
                    self.finish();
                    return;
                };
                self.m1 = Some(m1);
                let local = self.config.local.filter(|l| !l.ip().is_unspecified());
                if local == Some(m1) {
                    self.mapping = Some(MappingBehavior::NoNat);
                }
                if self.other.is_some() {
                    Some(Test::FilterChangeIpPort)
                } else {
                    self.next_mapping_test()
                }
            }
            Test::FilterChangeIpPort => {
                if mapped.is_some() {
                    self.filtering = Some(FilteringBehavior::EndpointIndependent);
                    self.next_mapping_test()
                } else {
                    Some(Test::FilterChangePort)
                }
            }
            Test::FilterChangePort => {
                self.filtering = Some(if mapped.is_some() {
                    FilteringBehavior::AddressDependent
                } else {
                    FilteringBehavior::AddressAndPortDependent
                });
                self.next_mapping_test()
            }
            Test::MapOtherIp => match mapped {
                Some(m2) if Some(m2) == self.m1 => {
                    self.mapping = Some(MappingBehavior::EndpointIndependent);
                    None
                }
                Some(m2) => {
                    self.m2 = Some(m2);
                    Some(Test::MapOtherIpPort)
                }
                None => {
                    self.mapping = Some(MappingBehavior::Unknown);
                    None
                }
            },
            Test::MapOtherIpPort => {
                self.mapping = Some(match mapped {
                    Some(m3) if Some(m3) == self.m2 => MappingBehavior::AddressDependent,
                    Some(_) => MappingBehavior::AddressAndPortDependent,
                    None => MappingBehavior::Dependent,
                });
                None
            }
            Test::MapSecondary => {
                self.mapping = Some(match mapped {
                    Some(m2) if Some(m2) == self.m1 => MappingBehavior::EndpointIndependent,
                    Some(_) => MappingBehavior::Dependent,
                    None => MappingBehavior::Unknown,
                });
                None
            }
        };
        match next {
            Some(test) => self.start(now, test, rng),
            None => self.finish(),
        }
    }

    /// The mapping test to run after the basic and filtering tests, if any is still needed.
    fn next_mapping_test(&mut self) -> Option<Test> {
        if self.mapping.is_some() {
            return None;
        }
        if self.other.is_some() {
            Some(Test::MapOtherIp)
        } else if self.config.secondary.is_some() {
            Some(Test::MapSecondary)
        } else {
            self.mapping = Some(MappingBehavior::Unknown);
            None
        }
    }

    /// Sends the request for `test`.
    fn start(&mut self, now: Instant, test: Test, rng: &mut impl rand::RngCore) {
        let primary = self.config.primary;
        let other = self.other.unwrap_or(primary);
        let (dest, change) = match test {
            Test::Basic => (primary, None),
            Test::FilterChangeIpPort => (primary, Some(0x06u32)),
            Test::FilterChangePort => (primary, Some(0x02)),
            Test::MapOtherIp => (SocketAddr::new(other.ip(), primary.port()), None),
            Test::MapOtherIpPort => (other, None),
            Test::MapSecondary => match self.config.secondary {
                Some(s) => (s, None),
                None => {
                    self.finish();
                    return;
                }
            },
        };
        let id = stun::TransactionId::random(rng);
        let written = Writer::new(&mut self.request, BINDING_REQUEST, id).and_then(|mut w| {
            if let Some(flags) = change {
                w.attribute(stun::attr::CHANGE_REQUEST, &flags.to_be_bytes())?;
            }
            w.fingerprint()?;
            Ok(w.finish())
        });
        // At most 20 + 8 + 8 bytes: always fits the 36-byte buffer.
        let Ok(len) = written else {
            self.finish();
            return;
        };
        self.request_len = len;
        self.test = Some(test);
        self.tx = Some(Transaction::start(
            now,
            id,
            dest,
            self.config.retransmission,
        ));
        self.send_pending = true;
    }

    /// Writes the report.
    fn finish(&mut self) {
        self.tx = None;
        self.send_pending = false;
        let local_port = self.config.local.map(|l| l.port());
        self.verdict = Some(NatReport {
            public: self.m1,
            mapping: self.mapping.unwrap_or(MappingBehavior::Unknown),
            filtering: self.filtering,
            port_preserved: self.m1.zip(local_port).map(|(m, p)| m.port() == p),
        });
    }

    /// The next datagram to send: destination and bytes.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, &[u8])> {
        if !self.send_pending {
            return None;
        }
        self.send_pending = false;
        let dest = self.tx?.dest;
        Some((dest, &self.request[..self.request_len]))
    }

    /// When [`NatTypeProbe::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.verdict.is_some() {
            return None;
        }
        match self.tx {
            Some(tx) => Some(tx.deadline()),
            None => Some(self.created),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::net::IpAddr;

    const LOCAL: &str = "10.0.0.5:40000";
    const PRIMARY: &str = "203.0.113.10:3478";
    const ALT: &str = "203.0.113.11:3479";
    const SECONDARY: &str = "203.0.113.20:3478";

    /// A simulated NAT + STUN server pair in virtual time.
    struct World {
        /// Public IP of the NAT.
        public_ip: IpAddr,
        /// Mapping: keyed by what the NAT looks at for this behaviour.
        mapping: MappingBehavior,
        /// Filtering.
        filtering: FilteringBehavior,
        /// The server offers RFC 5780.
        rfc5780: bool,
        /// Destinations XCC sent to (for filtering).
        sent_to: Vec<SocketAddr>,
    }

    impl World {
        /// The public port the NAT uses towards `dest`.
        fn mapped_port(&self, dest: SocketAddr) -> u16 {
            match self.mapping {
                MappingBehavior::EndpointIndependent | MappingBehavior::NoNat => 40000,
                MappingBehavior::AddressDependent => 50000 + u16::from(last_octet(dest)),
                _ => 50000 + u16::from(last_octet(dest)) * 10 + dest.port() % 10,
            }
        }

        fn admits(&self, from: SocketAddr) -> bool {
            match self.filtering {
                FilteringBehavior::EndpointIndependent => true,
                FilteringBehavior::AddressDependent => {
                    self.sent_to.iter().any(|s| s.ip() == from.ip())
                }
                FilteringBehavior::AddressAndPortDependent => self.sent_to.contains(&from),
            }
        }

        /// The server's answer to `request` sent to `dest`, if the server and NAT let it back.
        fn exchange(&mut self, dest: SocketAddr, request: &[u8]) -> Option<(SocketAddr, Vec<u8>)> {
            self.sent_to.push(dest);
            let primary: SocketAddr = PRIMARY.parse().unwrap();
            let alt: SocketAddr = ALT.parse().unwrap();
            let servers = [
                primary,
                alt,
                SocketAddr::new(alt.ip(), primary.port()),
                SECONDARY.parse().unwrap(),
            ];
            if !servers.contains(&dest) || (!self.rfc5780 && dest.ip() == alt.ip()) {
                return None;
            }
            let msg = Message::parse(request).unwrap();
            let mut change = 0u32;
            // Find CHANGE-REQUEST by hand: the codec does not expose it (servers only read it).
            if request.len() >= 32 && request[20..22] == stun::attr::CHANGE_REQUEST.to_be_bytes() {
                change = u32::from_be_bytes(request[24..28].try_into().unwrap());
            }
            if change != 0 && !self.rfc5780 {
                return None;
            }
            let ip = if change & 4 != 0 { alt.ip() } else { dest.ip() };
            let port = if change & 2 != 0 {
                alt.port()
            } else {
                dest.port()
            };
            let from = SocketAddr::new(ip, port);
            if !self.admits(from) {
                return None;
            }
            let mapped = SocketAddr::new(self.public_ip, self.mapped_port(dest));
            let mut buf = [0u8; 128];
            let mut w = Writer::new(&mut buf, BINDING_SUCCESS, msg.transaction_id()).unwrap();
            w.xor_mapped_address(mapped).unwrap();
            if self.rfc5780 {
                let mut v = vec![0, 1];
                v.extend_from_slice(&alt.port().to_be_bytes());
                if let IpAddr::V4(ip) = alt.ip() {
                    v.extend_from_slice(&ip.octets());
                }
                w.attribute(stun::attr::OTHER_ADDRESS, &v).unwrap();
            }
            w.fingerprint().unwrap();
            let len = w.finish();
            Some((from, buf[..len].to_vec()))
        }
    }

    fn last_octet(a: SocketAddr) -> u8 {
        match a.ip() {
            IpAddr::V4(ip) => ip.octets()[3],
            IpAddr::V6(ip) => ip.octets()[15],
        }
    }

    /// Runs a probe against `world` to completion in virtual time.
    fn probe(world: &mut World, secondary: bool) -> NatReport {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut now = Instant::now();
        let mut p = NatTypeProbe::new(
            NatTypeConfig {
                primary: PRIMARY.parse().unwrap(),
                secondary: secondary.then(|| SECONDARY.parse().unwrap()),
                local: Some(LOCAL.parse().unwrap()),
                retransmission: Retransmission::FAILOVER,
            },
            now,
        );
        for _ in 0..1000 {
            p.handle_timeout(now, &mut rng);
            while let Some((dest, bytes)) = p.poll_transmit() {
                let bytes = bytes.to_vec();
                if let Some((from, answer)) = world.exchange(dest, &bytes) {
                    assert!(p.handle_response(now, from, &answer, &mut rng));
                }
            }
            match p.poll_timeout() {
                Some(at) => now = now.max(at),
                None => break,
            }
        }
        *p.verdict().expect("probe finishes")
    }

    fn world(mapping: MappingBehavior, filtering: FilteringBehavior, rfc5780: bool) -> World {
        World {
            public_ip: "198.51.100.1".parse().unwrap(),
            mapping,
            filtering,
            rfc5780,
            sent_to: Vec::new(),
        }
    }

    #[test]
    fn full_cone_is_direct() {
        let mut w = world(
            MappingBehavior::EndpointIndependent,
            FilteringBehavior::EndpointIndependent,
            true,
        );
        let r = probe(&mut w, false);
        assert_eq!(r.mapping, MappingBehavior::EndpointIndependent);
        assert_eq!(r.filtering, Some(FilteringBehavior::EndpointIndependent));
        assert_eq!(r.recommendation(), Recommendation::Direct);
        assert_eq!(r.port_preserved, Some(true));
    }

    #[test]
    fn port_restricted_cone_needs_hole_punching() {
        let mut w = world(
            MappingBehavior::EndpointIndependent,
            FilteringBehavior::AddressAndPortDependent,
            true,
        );
        let r = probe(&mut w, false);
        assert_eq!(r.mapping, MappingBehavior::EndpointIndependent);
        assert_eq!(
            r.filtering,
            Some(FilteringBehavior::AddressAndPortDependent)
        );
        assert_eq!(r.recommendation(), Recommendation::HolePunching);
        assert!(r.to_string().contains("hole punching"));
    }

    #[test]
    fn restricted_cone_is_address_dependent_filtering() {
        let mut w = world(
            MappingBehavior::EndpointIndependent,
            FilteringBehavior::AddressDependent,
            true,
        );
        let r = probe(&mut w, false);
        assert_eq!(r.filtering, Some(FilteringBehavior::AddressDependent));
    }

    #[test]
    fn symmetric_nat_needs_turn() {
        let mut w = world(
            MappingBehavior::AddressAndPortDependent,
            FilteringBehavior::AddressAndPortDependent,
            true,
        );
        let r = probe(&mut w, false);
        assert_eq!(r.mapping, MappingBehavior::AddressAndPortDependent);
        assert_eq!(r.recommendation(), Recommendation::Turn);
        assert!(r.to_string().contains("symmetric NAT"));
    }

    #[test]
    fn address_dependent_mapping_is_told_apart() {
        let mut w = world(
            MappingBehavior::AddressDependent,
            FilteringBehavior::EndpointIndependent,
            true,
        );
        let r = probe(&mut w, false);
        assert_eq!(r.mapping, MappingBehavior::AddressDependent);
    }

    #[test]
    fn two_plain_servers_compare_mappings() {
        let mut cone = world(
            MappingBehavior::EndpointIndependent,
            FilteringBehavior::AddressAndPortDependent,
            false,
        );
        let r = probe(&mut cone, true);
        assert_eq!(r.mapping, MappingBehavior::EndpointIndependent);
        assert_eq!(r.filtering, None);
        let mut symmetric = world(
            MappingBehavior::AddressAndPortDependent,
            FilteringBehavior::AddressAndPortDependent,
            false,
        );
        let r = probe(&mut symmetric, true);
        assert_eq!(r.mapping, MappingBehavior::Dependent);
        assert_eq!(r.recommendation(), Recommendation::Turn);
    }

    #[test]
    fn one_plain_server_leaves_mapping_unknown() {
        let mut w = world(
            MappingBehavior::EndpointIndependent,
            FilteringBehavior::AddressAndPortDependent,
            false,
        );
        let r = probe(&mut w, false);
        assert_eq!(r.mapping, MappingBehavior::Unknown);
        assert!(r.to_string().contains("unknown"));
    }

    #[test]
    fn no_nat_when_server_sees_local_address() {
        let mut w = world(
            MappingBehavior::NoNat,
            FilteringBehavior::EndpointIndependent,
            true,
        );
        w.public_ip = "10.0.0.5".parse().unwrap();
        let r = probe(&mut w, false);
        assert_eq!(r.mapping, MappingBehavior::NoNat);
        assert_eq!(r.recommendation(), Recommendation::Direct);
    }

    #[test]
    fn silence_means_blocked() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let t0 = Instant::now();
        let mut p = NatTypeProbe::new(
            NatTypeConfig {
                primary: PRIMARY.parse().unwrap(),
                secondary: None,
                local: None,
                retransmission: Retransmission::FAILOVER,
            },
            t0,
        );
        let mut now = t0;
        for _ in 0..100 {
            p.handle_timeout(now, &mut rng);
            while p.poll_transmit().is_some() {}
            match p.poll_timeout() {
                Some(at) => now = now.max(at),
                None => break,
            }
        }
        let r = p.verdict().expect("finishes on silence");
        assert!(r.is_blocked());
        assert_eq!(r.recommendation(), Recommendation::Turn);
        assert_eq!(now - t0, Retransmission::FAILOVER.timeout());
    }
}
