//! Forwarding cost: the in-process per-packet work, and one call through a running engine
//! against a bare recv/send UDP forwarder on 127.0.0.1 measured in the same run.
//!
//! In process: `Call::handle_receive` on a 172-byte RTP packet (demux, header parse, latch check,
//! SRTP unprotect or protect, destination choice), no sockets. Every timed SRTP->RTP packet
//! carries a fresh sequence number (a repeated one would take the cheap replay-refusal path):
//! packets are prepared in rings outside the timed section, with a fresh call per ring.
//!
//! Loopback: one packet in flight, phone A -> forwarder -> phone B, blocking sockets; the figure
//! is a one-way trip through the kernel twice plus the forwarder's work.
//!
//! Run: `cargo bench --bench forward -- --warm-up-time 1 --measurement-time 3`

mod support;

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use support::{RING, RTP_LEN, protected_ring, rtp, unprotect_only};
use xcc_core::ids::LegSide;
use xcc_core::leg::{LatchPolicy, LocalPort};
use xcc_core::media::{LegConfig, MediaConfig, MediaEngine, SrtpKeys};
use xcc_core::relay::call::{Call, CallTimers};
use xcc_core::srtp::{KeyingMaterial, SrtpContext, SrtpPolicy, SrtpSuite};

const TIMERS: CallTimers = CallTimers {
    media_timeout: Duration::from_secs(60),
    hold_timeout: Duration::from_secs(3600),
};
const POLICY: LatchPolicy = LatchPolicy {
    learning_window: Duration::from_secs(3),
};

fn client_addr() -> SocketAddr {
    "192.0.2.10:5000".parse().expect("literal")
}

fn pbx_addr() -> SocketAddr {
    "10.0.0.1:4000".parse().expect("literal")
}

fn keys() -> SrtpKeys {
    let s = SrtpSuite::AesCm128HmacSha1_80;
    SrtpKeys {
        inbound: KeyingMaterial::generate(s),
        outbound: KeyingMaterial::generate(s),
    }
}

/// A call with an SRTP client leg and a plain PBX leg, both configured.
fn call(keys: &SrtpKeys, now: Instant) -> Call {
    let mut call = Call::new(now, TIMERS, POLICY);
    let client = LegConfig {
        remote_rtp: Some(client_addr()),
        srtp: Some(keys.clone()),
        ..LegConfig::default()
    };
    call.configure(LegSide::Client, client, now);
    call.configure(
        LegSide::Pbx,
        LegConfig {
            remote_rtp: Some(pbx_addr()),
            ..LegConfig::default()
        },
        now,
    );
    call
}

fn in_process(c: &mut Criterion) {
    let mut g = c.benchmark_group("in_process_172B");
    let keys = keys();
    let now = Instant::now();

    g.bench_function("srtp_to_rtp", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(RING as u64) as usize;
                left -= n as u64;
                let mut ring = protected_ring(&keys.inbound, n);
                let mut call = call(&keys, now);
                let start = Instant::now();
                for (buf, len) in ring.iter_mut() {
                    let step = call.handle_receive(
                        now,
                        LegSide::Client,
                        LocalPort::Rtp,
                        client_addr(),
                        buf,
                        *len,
                    );
                    black_box(step);
                }
                total += start.elapsed();
            }
            total
        })
    });

    // Reference for the SRTP rows: the transform alone, same packets, same run.
    g.bench_function("reference_unprotect_only", |b| {
        b.iter_custom(|iters| unprotect_only(&keys.inbound, iters))
    });

    g.bench_function("rtp_to_srtp", |b| {
        let mut call = call(&keys, now);
        let mut seq = 0u16;
        let mut buf = [0u8; 256];
        let template = rtp(0);
        b.iter(|| {
            // A memcpy stands in for the kernel filling the receive buffer.
            seq = seq.wrapping_add(1);
            buf[..RTP_LEN].copy_from_slice(&template);
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            black_box(call.handle_receive(
                now,
                LegSide::Pbx,
                LocalPort::Rtp,
                pbx_addr(),
                &mut buf,
                RTP_LEN,
            ))
        })
    });

    g.bench_function("rtp_to_rtp", |b| {
        let mut call = Call::new(now, TIMERS, POLICY);
        call.configure(
            LegSide::Client,
            LegConfig {
                remote_rtp: Some(client_addr()),
                ..LegConfig::default()
            },
            now,
        );
        call.configure(
            LegSide::Pbx,
            LegConfig {
                remote_rtp: Some(pbx_addr()),
                ..LegConfig::default()
            },
            now,
        );
        let mut buf = [0u8; 256];
        let template = rtp(7);
        b.iter(|| {
            buf[..RTP_LEN].copy_from_slice(&template);
            black_box(call.handle_receive(
                now,
                LegSide::Pbx,
                LocalPort::Rtp,
                pbx_addr(),
                &mut buf,
                RTP_LEN,
            ))
        })
    });
    g.finish();
}

/// Phone sockets on 127.0.0.1 with a bounded read timeout.
fn phone() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("loopback bind");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s
}

/// One packet A -> forwarder at `via` -> B, blocking until B has it.
fn one_way(a: &UdpSocket, b: &UdpSocket, via: SocketAddr, pkt: &[u8], rx: &mut [u8]) {
    a.send_to(pkt, via).expect("send");
    let (n, _) = b.recv_from(rx).expect("forwarded within the timeout");
    assert_eq!(n, pkt.len());
}

fn loopback(c: &mut Criterion) {
    let mut g = c.benchmark_group("loopback_one_way_172B");
    let pkt = rtp(1);
    let mut rx = [0u8; 2048];

    // Reference: the simplest forwarder there is, a thread doing recv_from + send_to.
    {
        let (a, b) = (phone(), phone());
        let fwd = UdpSocket::bind("127.0.0.1:0").expect("bind");
        fwd.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let via = fwd.local_addr().expect("addr");
        let dest = b.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok((n, _)) = fwd.recv_from(&mut buf) {
                        let _ = fwd.send_to(&buf[..n], dest);
                    }
                }
            })
        };
        g.bench_function("bare_udp_forwarder", |bch| {
            bch.iter(|| one_way(&a, &b, via, &pkt, &mut rx))
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        t.join().expect("forwarder thread");
    }

    // XCC: one call through a running engine, RTP -> RTP and SRTP -> RTP.
    let cfg = MediaConfig {
        bind_address: "127.0.0.1".parse().expect("literal"),
        port_min: 47900,
        port_max: 47999,
        workers: 1,
        ..MediaConfig::default()
    };
    let (engine, _events) = MediaEngine::start(cfg).expect("engine");
    let ctl = engine.control();
    let (a, b) = (phone(), phone());
    let cfg = |s: &UdpSocket, srtp| LegConfig {
        remote_rtp: Some(s.local_addr().expect("addr")),
        srtp,
        ..LegConfig::default()
    };
    let plain = ctl.allocate().expect("ports");
    ctl.configure_leg(plain.call, LegSide::Client, cfg(&a, None))
        .expect("configure");
    ctl.configure_leg(plain.call, LegSide::Pbx, cfg(&b, None))
        .expect("configure");
    let via = SocketAddr::from(([127, 0, 0, 1], plain.ports[0].rtp));
    g.bench_function("xcc_engine_rtp_to_rtp", |bch| {
        bch.iter(|| one_way(&a, &b, via, &pkt, &mut rx))
    });

    let keys = keys();
    let (sa, sb) = (phone(), phone());
    let secure = ctl.allocate().expect("ports");
    ctl.configure_leg(secure.call, LegSide::Client, cfg(&sa, Some(keys.clone())))
        .expect("configure");
    ctl.configure_leg(secure.call, LegSide::Pbx, cfg(&sb, None))
        .expect("configure");
    let via = SocketAddr::from(([127, 0, 0, 1], secure.ports[0].rtp));
    let mut tx = SrtpContext::new(&keys.inbound, SrtpPolicy::default());
    let mut seq = 0u16;
    let mut buf = [0u8; 256];
    g.bench_function("xcc_engine_srtp_to_rtp", |bch| {
        bch.iter(|| {
            seq = seq.wrapping_add(1);
            buf[..RTP_LEN].copy_from_slice(&rtp(seq));
            let n = tx.protect_rtp(&mut buf, RTP_LEN).expect("room for the tag");
            sa.send_to(&buf[..n], via).expect("send");
            let (got, _) = sb.recv_from(&mut rx).expect("forwarded within the timeout");
            assert_eq!(got, RTP_LEN);
        })
    });
    g.finish();
    engine.shutdown();
}

criterion_group!(benches, in_process, loopback);
criterion_main!(benches);
