//! Shared harness for the media integration tests: an engine on 127.0.0.1 and UDP "phones".
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use xcc_core::media::{MediaConfig, MediaEngine, MediaEvent};

/// An engine bound to 127.0.0.1 on `port_min..=port_max`, two workers.
pub fn engine(
    port_min: u16,
    port_max: u16,
    tweak: impl FnOnce(&mut MediaConfig),
) -> (MediaEngine, crossbeam_channel::Receiver<MediaEvent>) {
    let mut cfg = MediaConfig {
        bind_address: "127.0.0.1".parse().unwrap(),
        port_min,
        port_max,
        workers: 2,
        quarantine_secs: 0,
        ..MediaConfig::default()
    };
    tweak(&mut cfg);
    MediaEngine::start(cfg).expect("engine starts")
}

/// A UDP endpoint on 127.0.0.1 with a bounded read timeout.
pub struct Phone {
    /// RTP socket.
    pub rtp: UdpSocket,
    /// RTCP socket.
    pub rtcp: UdpSocket,
}

impl Phone {
    pub fn new() -> Self {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&rtp, &rtcp] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        Self { rtp, rtcp }
    }

    pub fn rtp_addr(&self) -> SocketAddr {
        self.rtp.local_addr().unwrap()
    }

    pub fn rtcp_addr(&self) -> SocketAddr {
        self.rtcp.local_addr().unwrap()
    }
}

/// Receives one datagram within the socket's read timeout (hole-punching keepalives aside).
pub fn recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = sock
            .recv_from(&mut buf)
            .expect("datagram within the read timeout");
        if !is_punch_keepalive(&buf[..n]) {
            return (buf[..n].to_vec(), from);
        }
    }
}

/// Whether a datagram is waiting, without blocking (hole-punching keepalives aside).
pub fn pending(sock: &UdpSocket) -> bool {
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let got = loop {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if is_punch_keepalive(&buf[..n]) => continue,
            Ok(_) => break true,
            Err(_) => break false,
        }
    };
    sock.set_nonblocking(false).unwrap();
    got
}

/// A STUN Binding indication: the hole-punching keepalive XCC sends to a non-ICE client leg's
/// signalled address until it latches. A phone's RTP stack discards it (RFC 7983), and so do
/// these tests' phones; everything else (responses to ICE checks included) is kept.
pub fn is_punch_keepalive(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[..2] == [0x00, 0x11]
}

/// A 172-byte RTP packet (12-byte header + 160 bytes of G.711-sized payload).
pub fn rtp_packet(seq: u16, ssrc: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u16).map(|i| fill ^ (i as u8)));
    p
}

/// A 28-byte RTCP receiver report.
pub fn rtcp_packet(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x11; 20]);
    p
}

/// Polls `f` until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for the `Ended` event of `call` (other events are skipped).
pub fn await_ended(
    events: &crossbeam_channel::Receiver<MediaEvent>,
    call: xcc_core::ids::CallId,
    limit: Duration,
) -> MediaEvent {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(ev @ MediaEvent::Ended { call: c, .. }) if c == call => return ev,
            Ok(_) => continue,
            Err(e) => panic!("no Ended event for {call} within {limit:?}: {e}"),
        }
    }
}

/// An SRTP phone's two contexts and the keys XCC's leg must be configured with.
pub struct SrtpPhone {
    /// Protects what the phone sends (XCC's inbound key for the leg).
    pub tx: xcc_core::srtp::SrtpContext,
    /// Unprotects what XCC sends (XCC's outbound key for the leg).
    pub rx: xcc_core::srtp::SrtpContext,
    /// The keys for `LegConfig::srtp`.
    pub keys: xcc_core::media::SrtpKeys,
}

impl SrtpPhone {
    pub fn new(suite: xcc_core::srtp::SrtpSuite) -> Self {
        use xcc_core::srtp::{KeyingMaterial, SrtpContext, SrtpPolicy};
        let keys = xcc_core::media::SrtpKeys {
            inbound: KeyingMaterial::generate(suite),
            outbound: KeyingMaterial::generate(suite),
        };
        Self {
            tx: SrtpContext::new(&keys.inbound, SrtpPolicy::default()),
            rx: SrtpContext::new(&keys.outbound, SrtpPolicy::default()),
            keys,
        }
    }

    /// `plain` protected as SRTP (or SRTCP).
    pub fn protect(&mut self, plain: &[u8], rtcp: bool) -> Vec<u8> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + 64, 0);
        let n = if rtcp {
            self.tx.protect_rtcp(&mut buf, plain.len()).unwrap()
        } else {
            self.tx.protect_rtp(&mut buf, plain.len()).unwrap()
        };
        buf.truncate(n);
        buf
    }

    /// `wire` unprotected with XCC's key.
    pub fn unprotect(&mut self, wire: &[u8], rtcp: bool) -> Vec<u8> {
        let mut buf = wire.to_vec();
        let n = if rtcp {
            self.rx.unprotect_rtcp(&mut buf, wire.len()).unwrap()
        } else {
            self.rx.unprotect_rtp(&mut buf, wire.len()).unwrap()
        };
        buf.truncate(n);
        buf
    }
}

/// 127.0.0.1:`port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Leg configuration pointing at a phone's two sockets.
pub fn leg_to(p: &Phone, srtp: Option<xcc_core::media::SrtpKeys>) -> xcc_core::media::LegConfig {
    xcc_core::media::LegConfig {
        remote_rtp: Some(p.rtp_addr()),
        remote_rtcp: Some(p.rtcp_addr()),
        srtp,
        ..Default::default()
    }
}

/// Waits until every call in `calls` has raised `Ended`, in any order.
pub fn await_all_ended(
    events: &crossbeam_channel::Receiver<MediaEvent>,
    calls: &[xcc_core::ids::CallId],
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    let mut left: Vec<_> = calls.to_vec();
    while !left.is_empty() {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(MediaEvent::Ended { call, .. }) => left.retain(|c| *c != call),
            Ok(_) => {}
            Err(e) => panic!("calls {left:?} did not end within {limit:?}: {e}"),
        }
    }
}
