//! The bare forwarder: the reference XCC's cost is compared to. Same kind of sockets (one
//! non-blocking UDP socket per port on loopback, one mio loop), no crypto, no call state: ports
//! `A + 2i` and `A + 2i + 1` are a pair, each latches on whoever last sent to it, and a datagram
//! received on one is sent from the other to its latched peer.
//!
//! It runs in a child process (`xcc-load forwarder --ports A-B`) so its CPU is measured from
//! `/proc` exactly like xccd's, and it can be pinned to the relay's core.

use std::io::{ErrorKind, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::error::LoadError;

/// Receive errors skipped per readiness event before giving up on a socket until its next one.
pub(super) const MAX_RECV_ERRORS: u32 = 16;

/// An inclusive range of ports with an even start and an even number of ports (whole pairs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port (even).
    pub first: u16,
    /// Last port (odd).
    pub last: u16,
}

impl PortRange {
    /// Parses `A-B`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?} is not A-B"))?;
        let first: u16 = a.trim().parse().map_err(|_| format!("bad port {a:?}"))?;
        let last: u16 = b.trim().parse().map_err(|_| format!("bad port {b:?}"))?;
        if first == 0
            || !first.is_multiple_of(2)
            || last < first
            || (last - first).is_multiple_of(2)
        {
            return Err(format!(
                "{text:?}: need an even first port and whole pairs (e.g. 40000-40199)"
            ));
        }
        Ok(Self { first, last })
    }

    /// Pairs in the range.
    pub fn pairs(self) -> u32 {
        // Whole pairs (checked by `parse`): last - first is odd.
        (u32::from(self.last) - u32::from(self.first)).div_ceil(2)
    }

    /// The two forwarder addresses of pair `i`.
    pub fn pair(self, i: u32) -> (SocketAddr, SocketAddr) {
        let port = u32::from(self.first) + 2 * i;
        let addr = |p: u32| SocketAddr::new(IpAddr::from([127, 0, 0, 1]), p as u16);
        (addr(port), addr(port + 1))
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The kernel's ephemeral port range as it reads it, for error messages.
fn ephemeral_range() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join("-"))
        .unwrap_or_else(|_| "32768-60999 by default".into())
}

/// Runs the forwarder until `max` has passed (the parent normally kills it first). Prints
/// `READY` on stdout once every port is bound.
pub fn serve(ports: PortRange, max: Duration) -> Result<(), LoadError> {
    // Die with the parent: a killed load run must not leave a forwarder behind.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let mut poll = Poll::new().map_err(LoadError::io("create poll"))?;
    let mut sockets = Vec::with_capacity(2 * ports.pairs() as usize);
    for i in 0..ports.pairs() {
        let (a, b) = ports.pair(i);
        for addr in [a, b] {
            let mut s = UdpSocket::bind(addr).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    // Seen: a socket xccd bound to port 0 landed inside 45000-46499.
                    LoadError::Usage {
                        reason: format!(
                            "{addr} of --bare-ports is taken by another socket; choose a range \
                             outside the kernel's ephemeral ports ({}), where any socket bound \
                             to port 0 may land",
                            ephemeral_range()
                        ),
                    }
                } else {
                    LoadError::io("bind forwarder port")(e)
                }
            })?;
            poll.registry()
                .register(&mut s, Token(sockets.len()), Interest::READABLE)
                .map_err(LoadError::io("register socket"))?;
            sockets.push(s);
        }
    }
    let mut peers: Vec<Option<SocketAddr>> = vec![None; sockets.len()];
    let mut stdout = std::io::stdout();
    writeln!(stdout, "READY").map_err(LoadError::io("write READY"))?;
    stdout.flush().map_err(LoadError::io("write READY"))?;

    let deadline = Instant::now() + max;
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100))) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(LoadError::io("poll")(e));
        }
        for event in events.iter() {
            let from = event.token().0;
            let to = from ^ 1;
            // Edge-triggered: drain until WouldBlock. Other errors (a pending ICMP report) are
            // one-shot; skip a bounded number of them so the socket is never left undrained.
            let mut errors = 0;
            loop {
                let (len, src) = match sockets[from].recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) if errors < MAX_RECV_ERRORS => {
                        errors += 1;
                        continue;
                    }
                    Err(_) => break,
                };
                peers[from] = Some(src);
                if let Some(dst) = peers[to] {
                    // A full send buffer drops the datagram, as a relay must.
                    let _ = sockets[to].send_to(&buf[..len], dst);
                }
            }
        }
    }
    Ok(())
}

/// A forwarder child process, killed on drop.
pub struct ForwarderChild {
    child: Child,
    /// Kept open: the child's READY line came through it.
    _stdout: ChildStdout,
}

impl ForwarderChild {
    /// Starts `xcc-load forwarder --ports A-B` (this same executable) and waits for READY.
    pub fn spawn(ports: PortRange, max: Duration) -> Result<Self, LoadError> {
        let exe = std::env::current_exe().map_err(LoadError::io("find own executable"))?;
        let mut child = Command::new(exe)
            .arg("forwarder")
            .arg("--ports")
            .arg(ports.to_string())
            .arg("--max-secs")
            .arg(max.as_secs().max(1).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(LoadError::io("spawn forwarder"))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LoadError::Forwarder {
                reason: "no stdout pipe".into(),
            });
        };
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        // Blocks until the child writes READY or exits (EOF); bind failures exit promptly.
        let ready =
            std::io::BufRead::read_line(&mut reader, &mut line).is_ok() && line.trim() == "READY";
        if !ready {
            let _ = child.kill();
            let status = child.wait().ok();
            return Err(LoadError::Forwarder {
                reason: format!("did not become ready on {ports} (exit {status:?})"),
            });
        }
        Ok(Self {
            child,
            _stdout: reader.into_inner(),
        })
    }

    /// The child's pid, for CPU measurement and pinning.
    pub fn pid(&self) -> super::cpu::Pid {
        super::cpu::Pid(self.child.id())
    }
}

impl Drop for ForwarderChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_named_with_the_ephemeral_range() {
        // A socket on a port the kernel picked, inside the pair the forwarder is given.
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let first = port & !1;
        let range = PortRange {
            first,
            last: first + 1,
        };
        let err = serve(range, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(err.contains("ephemeral"), "{err}");
    }

    #[test]
    fn port_range_needs_whole_pairs() {
        let r = PortRange::parse("40000-40003").unwrap();
        assert_eq!(r.pairs(), 2);
        assert_eq!(r.pair(1).1.port(), 40003);
        for bad in [
            "40001-40004",
            "40000-40002",
            "40000",
            "x-y",
            "40002-40001",
            "0-1",
        ] {
            assert!(PortRange::parse(bad).is_err(), "{bad}");
        }
    }
}
