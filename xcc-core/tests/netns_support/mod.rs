//! Network-namespace topology shared by the NAT tests of xcc-core (`nat_netns.rs`) and the
//! end-to-end calls through xccd (`tests/e2e_nat.rs`, which includes this file by path): a private
//! side (198.51.100.0/24) behind an nftables masquerade, a public side (203.0.113.0/24) with
//! coturn, removed on drop (also when an assertion fails).
//!
//! ```text
//!  ns "c" (private)            ns "n" (NAT)                        ns "p" (public)
//!  c0 198.51.100.2  ------  n0 198.51.100.1 | n1 203.0.113.1  ------  p0 203.0.113.10, .11 (coturn)
//!                                  masquerade out of n1                    203.0.113.20 (peer), .30
//! ```
//!
//! [`Inbound::OnlyTurnServer`] adds a forward filter on the NAT for the uplink that lets no
//! inbound media through: from n1 to n0 only replies from coturn's TURN port pass.
//! [`Inbound::OnlyTcpToTurnServer`] is the uplink that lets only TCP out: from n0 to n1 only TCP to
//! coturn's TURN port, from n1 to n0 only that connection's packets.
//!
//! Each test binary uses a subset, hence `allow(dead_code)`.
#![allow(dead_code)]

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use xcc_core::nat::stun;

pub const PRIVATE: &str = "198.51.100.2";
pub const NAT_PUBLIC: &str = "203.0.113.1";
pub const STUN_PRIMARY: &str = "203.0.113.10:3478";
pub const PEER: &str = "203.0.113.20";
/// A second public host (with `peer`): xccd when it sits on the public side.
pub const PUBLIC_HOST: &str = "203.0.113.30";

/// coturn's relayed ports (`--min-port`, `--max-port`); its relayed addresses are its
/// listening ones, 203.0.113.10 and .11.
pub const RELAY_PORTS: std::ops::RangeInclusive<u16> = 49152..=49300;

/// Upper bound of any one drive loop.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// How the NAT maps.
#[derive(Clone, Copy)]
pub enum Nat {
    /// `masquerade`: endpoint-independent mapping, port-restricted filtering (conntrack).
    PortRestrictedCone,
    /// `masquerade random`: a new random port per destination (symmetric NAT).
    Symmetric,
}

/// What the NAT lets in from the public side.
#[derive(Clone, Copy, PartialEq)]
pub enum Inbound {
    /// Whatever conntrack takes for a reply (the masquerade's own filtering).
    Replies,
    /// Only replies from coturn's TURN port ([`STUN_PRIMARY`], conntrack state established);
    /// every other packet from n1 towards n0 is dropped and counted ([`Topology::inbound_dropped`]).
    OnlyTurnServer,
    /// Only TCP to coturn's TURN port ([`STUN_PRIMARY`]) leaves: every other packet from n0
    /// towards n1, UDP to coturn included, is dropped and counted ([`Topology::outbound_dropped`]);
    /// from n1 towards n0 only established TCP from that port passes, every other packet is
    /// dropped and counted ([`Topology::inbound_dropped`]).
    OnlyTcpToTurnServer,
}

/// The three namespaces, coturn, and their removal.
pub struct Topology {
    /// Namespace name prefix (unique per test and process).
    prefix: String,
    /// Namespaces created so far (removed on drop).
    created: Vec<String>,
    /// coturn, killed on drop.
    coturn: Option<Child>,
}

impl Topology {
    /// The `/run/netns` path of namespace `which` (for `setns`, or `ip netns exec` by name).
    pub fn ns_path(&self, which: &str) -> String {
        format!("/run/netns/{}", self.ns(which))
    }

    /// The name of namespace `which` (`c`, `n` or `p`).
    pub fn ns(&self, which: &str) -> String {
        format!("{}{which}", self.prefix)
    }

    /// Builds the topology, or says why it cannot (then the test skips).
    pub fn build(nat: Nat, peer: bool, turn: bool) -> Result<Topology, String> {
        Self::build_with(nat, peer, turn, Inbound::Replies)
    }

    /// [`Topology::build`] with the NAT letting in what `inbound` says.
    pub fn build_with(
        nat: Nat,
        peer: bool,
        turn: bool,
        inbound: Inbound,
    ) -> Result<Topology, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        if Command::new("turnserver")
            .arg("--version")
            .output()
            .is_err()
        {
            return Err("coturn (turnserver) not installed".into());
        }
        let prefix = format!(
            "xccnat{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut topo = Topology {
            prefix,
            created: Vec::new(),
            coturn: None,
        };
        for which in ["c", "n", "p"] {
            let name = topo.ns(which);
            run("ip", &["netns", "add", &name])?;
            topo.created.push(name);
        }
        let (c, n, p) = (topo.ns("c"), topo.ns("n"), topo.ns("p"));
        let peer_addr = format!("{PEER}/24");
        let mut steps: Vec<Vec<&str>> = vec![
            vec![
                "-n", &c, "link", "add", "c0", "type", "veth", "peer", "name", "n0", "netns", &n,
            ],
            vec![
                "-n", &n, "link", "add", "n1", "type", "veth", "peer", "name", "p0", "netns", &p,
            ],
            vec!["-n", &c, "addr", "add", "198.51.100.2/24", "dev", "c0"],
            vec!["-n", &n, "addr", "add", "198.51.100.1/24", "dev", "n0"],
            vec!["-n", &n, "addr", "add", "203.0.113.1/24", "dev", "n1"],
            vec!["-n", &p, "addr", "add", "203.0.113.10/24", "dev", "p0"],
            vec!["-n", &p, "addr", "add", "203.0.113.11/24", "dev", "p0"],
        ];
        if peer {
            steps.push(vec!["-n", &p, "addr", "add", &peer_addr, "dev", "p0"]);
            steps.push(vec![
                "-n",
                &p,
                "addr",
                "add",
                "203.0.113.30/24",
                "dev",
                "p0",
            ]);
        }
        for (ns, dev) in [(&c, "c0"), (&c, "lo"), (&n, "n0"), (&n, "n1"), (&n, "lo")] {
            steps.push(vec!["-n", ns, "link", "set", dev, "up"]);
        }
        steps.push(vec!["-n", &p, "link", "set", "p0", "up"]);
        steps.push(vec!["-n", &p, "link", "set", "lo", "up"]);
        steps.push(vec![
            "-n",
            &c,
            "route",
            "add",
            "default",
            "via",
            "198.51.100.1",
        ]);
        for step in steps {
            run("ip", &step)?;
        }
        run(
            "ip",
            &[
                "netns",
                "exec",
                &n,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        let rule = match nat {
            Nat::PortRestrictedCone => "masquerade",
            Nat::Symmetric => "masquerade random",
        };
        let filter = match inbound {
            Inbound::Replies => String::new(),
            Inbound::OnlyTurnServer => {
                let (ip, port) = STUN_PRIMARY.split_once(':').expect("literal");
                format!(
                    " chain inbound {{\n  type filter hook forward priority filter; policy accept;\n  \
                     iifname \"n1\" oifname \"n0\" ip saddr {ip} udp sport {port} ct state established \
                     accept\n  iifname \"n1\" oifname \"n0\" counter drop\n }}\n"
                )
            }
            Inbound::OnlyTcpToTurnServer => {
                let (ip, port) = STUN_PRIMARY.split_once(':').expect("literal");
                format!(
                    " chain inbound {{\n  type filter hook forward priority filter; policy accept;\n  \
                     iifname \"n1\" oifname \"n0\" ip saddr {ip} tcp sport {port} ct state established \
                     accept\n  iifname \"n1\" oifname \"n0\" counter drop\n }}\n \
                     chain outbound {{\n  type filter hook forward priority filter; policy accept;\n  \
                     iifname \"n0\" oifname \"n1\" ip daddr {ip} tcp dport {port} accept\n  \
                     iifname \"n0\" oifname \"n1\" counter drop\n }}\n"
                )
            }
        };
        let ruleset = format!(
            "table ip xccnat {{\n chain post {{\n  type nat hook postrouting priority srcnat;\n  \
             oifname \"n1\" {rule}\n }}\n{filter}}}\n"
        );
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &n, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        nft.stdin
            .take()
            .ok_or("nft stdin")?
            .write_all(ruleset.as_bytes())
            .map_err(|e| format!("nft stdin: {e}"))?;
        let status = nft.wait().map_err(|e| format!("nft: {e}"))?;
        if !status.success() {
            return Err(format!("nft -f failed: {status}"));
        }
        let pidfile = format!("/tmp/{}.coturn.pid", topo.prefix);
        let mode: &[&str] = if turn {
            &[
                "--lt-cred-mech",
                "--user",
                "xcc:secret",
                "--realm",
                "xcc.test",
            ]
        } else {
            &["--stun-only"]
        };
        let args = [
            "netns",
            "exec",
            &p,
            "turnserver",
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
        ];
        let listen = [
            "-L",
            "203.0.113.10",
            "-L",
            "203.0.113.11",
            "--listening-port",
            "3478",
        ];
        let (min_port, max_port) = (
            RELAY_PORTS.start().to_string(),
            RELAY_PORTS.end().to_string(),
        );
        let ports = ["--min-port", &min_port, "--max-port", &max_port];
        let coturn = Command::new("ip")
            .args(args)
            .args(listen)
            .args(mode)
            .args(ports)
            .args(["--pidfile", &pidfile, "--log-file", "stdout"])
            .stdout(File::create(topo.coturn_log_path()).map_err(|e| format!("coturn log: {e}"))?)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("turnserver: {e}"))?;
        topo.coturn = Some(coturn);
        topo.wait_for_coturn()?;
        Ok(topo)
    }

    /// coturn's log (kept after a failed test, removed otherwise).
    pub fn coturn_log_path(&self) -> String {
        format!("/tmp/{}.coturn.log", self.prefix)
    }

    /// The last `lines` lines of coturn's log, for failure messages.
    pub fn coturn_log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.coturn_log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Packets from n1 towards n0 that the filter of [`Inbound::OnlyTurnServer`] or
    /// [`Inbound::OnlyTcpToTurnServer`] dropped so far.
    pub fn inbound_dropped(&self) -> Result<u64, String> {
        self.dropped_in("inbound")
    }

    /// Packets from n0 towards n1 that [`Inbound::OnlyTcpToTurnServer`]'s filter dropped so far.
    pub fn outbound_dropped(&self) -> Result<u64, String> {
        self.dropped_in("outbound")
    }

    /// The drop counter of the NAT's filter chain `chain`.
    fn dropped_in(&self, chain: &str) -> Result<u64, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns("n"), "nft", "list", "chain"])
            .args(["ip", "xccnat", chain])
            .output()
            .map_err(|e| format!("nft: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("counter packets ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                format!(
                    "no drop counter in the {chain} chain: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    }

    /// The NAT's public port for UDP from [`PRIVATE`]`:port` to coturn ([`STUN_PRIMARY`]): the
    /// reply direction of the NAT namespace's conntrack entry; `None` while it has none.
    pub fn nat_mapping(&self, port: u16) -> Option<u16> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("n"),
                "cat",
                "/proc/net/nf_conntrack",
            ])
            .output()
            .ok()?;
        let (ip, server_port) = STUN_PRIMARY.split_once(':').expect("literal");
        let original = format!("src={PRIVATE} dst={ip} sport={port} dport={server_port} ");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains(" udp ") && l.contains(&original))?;
        // The reply tuple comes second: its `dport=` is the mapped port.
        line.split_whitespace()
            .filter_map(|f| f.strip_prefix("dport="))
            .nth(1)?
            .parse()
            .ok()
    }

    /// Established TCP connections from [`PRIVATE`] to coturn's TURN port ([`STUN_PRIMARY`]) in
    /// the NAT namespace's conntrack table.
    pub fn turn_tcp_connections(&self) -> usize {
        let Ok(out) = Command::new("ip")
            .args(["netns", "exec", &self.ns("n")])
            .args(["cat", "/proc/net/nf_conntrack"])
            .output()
        else {
            return 0;
        };
        let (ip, port) = STUN_PRIMARY.split_once(':').expect("literal");
        let (src, dst) = (format!("src={PRIVATE} "), format!("dst={ip} "));
        let dport = format!("dport={port} ");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                l.contains(" tcp ")
                    && l.contains(" ESTABLISHED ")
                    && l.contains(&src)
                    && l.contains(&dst)
                    && l.contains(&dport)
            })
            .count()
    }

    /// Waits until coturn answers on its primary and alternate addresses, asking from inside the
    /// public namespace (bounded by [`DEADLINE`]).
    pub fn wait_for_coturn(&self) -> Result<(), String> {
        self.inside("p", || {
            let sock = UdpSocket::bind(("203.0.113.10", 0)).map_err(|e| format!("bind: {e}"))?;
            let start = Instant::now();
            let mut buf = [0u8; 1500];
            for server in [STUN_PRIMARY, "203.0.113.11:3479"] {
                let server: SocketAddr = server.parse().expect("literal");
                loop {
                    if start.elapsed() > DEADLINE {
                        return Err(format!("coturn did not answer on {server}"));
                    }
                    let mut req = [0u8; 20];
                    let id = stun::TransactionId([start.elapsed().subsec_nanos() as u8; 12]);
                    let len = stun::Writer::new(&mut req, stun::BINDING_REQUEST, id)
                        .expect("20-byte buffer fits a header")
                        .finish();
                    sock.send_to(&req[..len], server)
                        .map_err(|e| format!("send: {e}"))?;
                    let until = Instant::now() + Duration::from_millis(100);
                    if let Some((n, from)) = recv_until(&sock, &mut buf, until)
                        && from == server
                        && stun::Message::parse(&buf[..n]).is_ok()
                    {
                        break;
                    }
                }
            }
            Ok(())
        })
    }

    /// Runs `f` on a thread inside namespace `which` (`c` or `p`).
    pub fn inside<T: Send + 'static>(
        &self,
        which: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let path = format!("/run/netns/{}", self.ns(which));
        std::thread::spawn(move || {
            let file = File::open(&path).expect("namespace created by this test");
            // SAFETY: setns only changes this thread's network namespace; the fd is open.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(mut child) = self.coturn.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(format!("/tmp/{}.coturn.pid", self.prefix));
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(self.coturn_log_path());
        }
        for name in self.created.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

pub fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Receives into `buf` until `until`; `None` on timeout.
pub fn recv_until(sock: &UdpSocket, buf: &mut [u8], until: Instant) -> Option<(usize, SocketAddr)> {
    let wait = until
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(1), Duration::from_millis(200));
    sock.set_read_timeout(Some(wait)).expect("set timeout");
    match sock.recv_from(buf) {
        Ok(r) => Some(r),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        // ICMP port unreachable surfaces as ECONNREFUSED on Linux: treat as silence.
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => None,
        Err(e) => panic!("recv: {e}"),
    }
}

/// Enters namespace `path` on the current thread.
pub fn enter(path: &str) {
    let file = File::open(path).expect("namespace created by this test");
    // SAFETY: setns only changes this thread's network namespace; the fd is open for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}
