//! Issue 6 end to end: call quality, VoIP-ready alerts, call records, the Prometheus endpoint and
//! log hygiene, all through a real xccd. A test "phone" injects loss, duplication, reordering,
//! jitter and delayed RTCP replies, and the figures XCC reports are checked against what was
//! injected. Ports: obs range 23000-23499 (40 per test).

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xcc_grpc::pb;

mod common;
use common::call::{TestCall, receiver_report, rtp, sender_report, sr_compact_ntp};
use common::{Daemon, DaemonConfig};

/// PBX stream SSRC and client stream SSRC.
const PBX_SSRC: u32 = 0x5b5b_0001;
const CLIENT_SSRC: u32 = 0xc1c1_0002;

/// Config for test number `n`: a 20-port pool at 23000 + 40 n; phones use +20.. +27.
fn config(name: &str, n: u16) -> DaemonConfig {
    DaemonConfig::new(name, 23000 + 40 * n, 20)
}

fn phone_ports(n: u16) -> (u16, u16) {
    (23000 + 40 * n + 20, 23000 + 40 * n + 24)
}

async fn calls(d: &Daemon) -> pb::calls_client::CallsClient<tonic::transport::Channel> {
    pb::calls_client::CallsClient::new(d.channel().await)
}

/// Polls GetCall (bounded) until `pred` holds for the published snapshot.
async fn wait_call(
    d: &Daemon,
    call: u64,
    what: &str,
    within: Duration,
    pred: impl Fn(&pb::Call) -> bool,
) -> pb::Call {
    let mut c = calls(d).await;
    let deadline = Instant::now() + within;
    loop {
        let got = c
            .get_call(pb::GetCallRequest { call_id: call })
            .await
            .unwrap()
            .into_inner();
        if pred(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never showed: {got:#?}\nlog:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pbx_quality(c: &pb::Call) -> pb::LegQuality {
    c.pbx
        .as_ref()
        .and_then(|l| l.quality.clone())
        .unwrap_or_default()
}

fn client_quality(c: &pb::Call) -> pb::LegQuality {
    c.client
        .as_ref()
        .and_then(|l| l.quality.clone())
        .unwrap_or_default()
}

fn counters(leg: &Option<pb::Leg>) -> pb::LegCounters {
    leg.as_ref().and_then(|l| l.counters).unwrap_or_default()
}

/// Sends `packets` from `sock` to `to`, each at its offset from the start (absolute schedule, so
/// a late wake-up does not shift every later packet). Runs on a blocking thread.
async fn send_schedule(sock: &UdpSocket, to: SocketAddr, packets: Vec<(Duration, Vec<u8>)>) {
    let sock = sock.try_clone().unwrap();
    tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        for (at, p) in packets {
            let due = t0 + at;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            sock.send_to(&p, to).unwrap();
        }
    })
    .await
    .unwrap();
}

/// The next event on `events` matching `pred`, within `within`.
async fn next_event(
    events: &mut tonic::Streaming<pb::Event>,
    within: Duration,
    what: &str,
    mut pred: impl FnMut(&pb::Event) -> bool,
) -> pb::Event {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, events.message())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {within:?}"))
            .unwrap()
            .expect("feed open");
        if pred(&e) {
            return e;
        }
    }
}

async fn watch(d: &Daemon) -> tonic::Streaming<pb::Event> {
    calls(d)
        .await
        .watch_events(pb::WatchEventsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// A well-paced stream (20 ms, PCMU) of `n` packets from `first_seq`, RTP timestamps consistent.
fn paced(first_seq: u16, n: u16, ssrc: u32) -> Vec<(Duration, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let seq = first_seq.wrapping_add(i);
            (
                Duration::from_millis(20 * u64::from(i)),
                rtp(seq, u32::from(seq) * 160, ssrc),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_loss_duplicates_and_reordering_show_on_the_call_view() {
    let d = Daemon::start_config(&config("q-loss", 0));
    let (cp, pp) = phone_ports(0);
    let call = TestCall::start(d.channel().await, "q-loss", cp, pp).await;

    // 200 packets, 5 ms apart with 5 ms of RTP time each (so nothing looks like jitter):
    // every 20th (i % 20 == 10) dropped, 8 duplicated, 5 adjacent pairs swapped.
    let (n, first) = (200u16, 1000u16);
    let dropped = |i: u16| i % 20 == 10;
    let duplicated = |i: u16| i % 25 == 3;
    let swapped = |i: u16| i % 40 == 35;
    let mut order: Vec<u16> = Vec::new();
    let mut i = 0;
    while i < n {
        if swapped(i) {
            order.extend([i + 1, i]);
            i += 2;
        } else {
            order.push(i);
            i += 1;
        }
    }
    let mut sched = Vec::new();
    let mut sent = 0u64;
    for (k, &i) in order.iter().enumerate() {
        if dropped(i) {
            continue;
        }
        let seq = first + i;
        let p = rtp(seq, u32::from(i) * 40, PBX_SSRC);
        let at = Duration::from_millis(5 * k as u64);
        if duplicated(i) {
            sched.push((at, p.clone()));
            sent += 1;
        }
        sched.push((at, p));
        sent += 1;
    }
    let lost = (0..n).filter(|&i| dropped(i)).count() as i64;
    let dups = (0..n).filter(|&i| duplicated(i)).count() as u64;
    let reorders = (0..n).filter(|&i| swapped(i)).count() as u64;
    assert_eq!((lost, dups, reorders, sent), (10, 8, 5, 198));
    send_schedule(&call.pbx.rtp, call.pbx_target, sched).await;

    let got = wait_call(
        &d,
        call.id,
        "all packets counted",
        Duration::from_secs(10),
        |c| counters(&c.pbx).packets_in == sent && pbx_quality(c).duplicates == dups,
    )
    .await;
    let q = pbx_quality(&got);
    // RFC 3550 A.1: the first packet only validates the source; counting starts at the second.
    assert_eq!(q.expected, u64::from(n) - 1, "{q:#?}");
    assert_eq!(q.lost, lost, "{q:#?}");
    assert_eq!(q.received, q.expected - lost as u64, "{q:#?}");
    assert_eq!(q.duplicates, dups, "{q:#?}");
    assert_eq!(q.reordered, reorders, "{q:#?}");
    let want = 100.0 * lost as f64 / q.expected as f64;
    assert!((q.loss_percent - want).abs() < 0.01, "{q:#?} want {want}");
    // No RTCP exchanged: no RTT, hence no MOS (never a guessed delay).
    assert_eq!((q.rtt_ms, q.mos), (None, None), "{q:#?}");
    // The client leg received nothing.
    assert_eq!(client_quality(&got).received, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_jitter_is_measured_and_crossing_the_limit_raises_alerts_both_ways() {
    // One second of debounce instead of five keeps the test short; the logic is the same.
    let d = Daemon::start_config(&DaemonConfig {
        sections: "[media.quality.voip_ready]\nmin_duration = { secs = 1, nanos = 0 }\n".into(),
        ..config("q-jitter", 1)
    });
    let (cp, pp) = phone_ports(1);
    let mut events = watch(&d).await;
    let call = TestCall::start(d.channel().await, "q-jitter", cp, pp).await;

    // Bursty delivery: packets k = 4m..4m+3 of a 20 ms stream all leave at the time of 4m+3, so
    // their transit differences are -20, -20, -20 (inside a burst) and +60 ms (between bursts):
    // the A.8 estimator settles around the mean |D| = 30 ms, over the 20 ms limit.
    let bursts: Vec<(Duration, Vec<u8>)> = paced(1, 160, PBX_SSRC)
        .into_iter()
        .enumerate()
        .map(|(k, (_, p))| {
            let burst_end = (k / 4) * 4 + 3;
            (Duration::from_millis(20 * burst_end as u64), p)
        })
        .collect();
    let sender = {
        let sock = call.pbx.rtp.try_clone().unwrap();
        let to = call.pbx_target;
        tokio::spawn(async move { send_schedule(&sock, to, bursts).await })
    };
    let crossed = next_event(
        &mut events,
        Duration::from_secs(15),
        "jitter crossing",
        |e| {
            matches!(&e.kind, Some(pb::event::Kind::Quality(a))
            if a.limit == pb::VoipLimit::Jitter as i32
            && a.kind == pb::quality_alert::Kind::Crossed as i32)
        },
    )
    .await;
    assert_eq!(crossed.call_id, call.id);
    let Some(pb::event::Kind::Quality(alert)) = crossed.kind else {
        unreachable!()
    };
    assert_eq!(alert.side, pb::Side::Pbx as i32);
    assert_eq!(alert.threshold, 20.0);
    assert!(alert.value > 20.0, "{alert:?}");
    let during = wait_call(&d, call.id, "jitter", Duration::from_secs(5), |c| {
        pbx_quality(c).jitter_ms.is_some()
    })
    .await;
    let q = pbx_quality(&during);
    let j = q.jitter_ms.unwrap();
    eprintln!("measured jitter {j:.2} ms (injected bursts: mean |D| 30 ms)");
    assert!((24.0..=36.0).contains(&j), "jitter {j} ms, injected ~30 ms");
    assert!(!q.voip_ready, "{q:#?}");
    assert!(
        q.broken_now.contains(&(pb::VoipLimit::Jitter as i32)),
        "{q:#?}"
    );
    sender.await.unwrap();

    // Then an evenly paced stream: jitter decays under 18 ms (limit less the 10 % margin).
    let calm: Vec<_> = paced(161, 200, PBX_SSRC);
    let sender = {
        let sock = call.pbx.rtp.try_clone().unwrap();
        let to = call.pbx_target;
        tokio::spawn(async move { send_schedule(&sock, to, calm).await })
    };
    let recovered = next_event(
        &mut events,
        Duration::from_secs(15),
        "jitter recovery",
        |e| {
            matches!(&e.kind, Some(pb::event::Kind::Quality(a))
            if a.limit == pb::VoipLimit::Jitter as i32
            && a.kind == pb::quality_alert::Kind::Recovered as i32)
        },
    )
    .await;
    let Some(pb::event::Kind::Quality(alert)) = recovered.kind else {
        unreachable!()
    };
    assert_eq!(alert.side, pb::Side::Pbx as i32);
    assert!(alert.value <= 18.0, "{alert:?}");
    assert!(alert.broken_ms >= 1000, "{alert:?}");
    sender.await.unwrap();
    let after = wait_call(&d, call.id, "recovered view", Duration::from_secs(5), |c| {
        pbx_quality(c).voip_ready
    })
    .await;
    let q = pbx_quality(&after);
    assert!(q.jitter_ms.unwrap() < 18.0, "{q:#?}");
    assert!(
        q.broken_ever.contains(&(pb::VoipLimit::Jitter as i32)),
        "{q:#?}"
    );
    assert!(q.broken_now.is_empty(), "{q:#?}");
    // The crossing was logged too.
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("media quality") && l.contains("LimitCrossed")),
        "no log line for the crossing"
    );

    // The call record says which limit was broken and for how long.
    calls(&d)
        .await
        .hang_up(pb::HangUpRequest { call_id: call.id })
        .await
        .unwrap();
    let e = next_event(&mut events, Duration::from_secs(10), "call record", |e| {
        matches!(e.kind, Some(pb::event::Kind::Record(_)))
    })
    .await;
    let Some(pb::event::Kind::Record(r)) = e.kind else {
        unreachable!()
    };
    let breaches = r.pbx.unwrap().breaches;
    assert_eq!(breaches.len(), 1, "{breaches:?}");
    let b = &breaches[0];
    assert_eq!(b.limit, pb::VoipLimit::Jitter as i32);
    assert_eq!(b.episodes, 1, "{b:?}");
    assert_eq!(b.broken_ms, alert.broken_ms, "{b:?}");
    assert!(b.worst > 24.0, "{b:?}");
    assert!(r.client.unwrap().breaches.is_empty());
}

/// Reads datagrams on `sock` (bounded) until `f` accepts one.
fn recv_until<T>(sock: &UdpSocket, within: Duration, mut f: impl FnMut(&[u8]) -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1500];
    loop {
        assert!(
            Instant::now() < deadline,
            "nothing acceptable within {within:?}"
        );
        if let Ok(len) = sock.recv(&mut buf)
            && let Some(t) = f(&buf[..len])
        {
            return t;
        }
    }
}

/// DLSR units (1/65536 s) for `d`.
fn dlsr(d: Duration) -> u32 {
    (d.as_secs_f64() * 65536.0) as u32
}

fn ntp_now() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let secs = since.as_secs() + 2_208_988_800;
    (secs << 32) | ((u64::from(since.subsec_nanos()) << 32) / 1_000_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sr_and_delayed_rr_through_xccd_give_the_set_up_rtt_on_both_legs() {
    let d = Daemon::start_config(&config("q-rtt", 2));
    let (cp, pp) = phone_ports(2);
    let call = TestCall::start(d.channel().await, "q-rtt", cp, pp).await;
    // Each peer holds the SR HOLD before replying and claims DLSR: XCC must see HOLD - DLSR.
    const HOLD: Duration = Duration::from_millis(120);
    const CLAIMED: Duration = Duration::from_millis(40);
    let want_ms = (HOLD - CLAIMED).as_secs_f64() * 1000.0;

    // Media both ways first, so both legs carry RTP (MOS needs a receive stream too).
    let mut client_tx = call.client_tx();
    let client_media: Vec<_> = paced(1, 20, CLIENT_SSRC)
        .into_iter()
        .map(|(at, p)| (at, client_tx.encrypt_rtp(&p).unwrap().to_vec()))
        .collect();
    let (a, b) = tokio::join!(
        send_schedule(&call.client.rtp, call.client_target, client_media),
        send_schedule(&call.pbx.rtp, call.pbx_target, paced(1, 20, PBX_SSRC)),
    );
    let ((), ()) = (a, b);

    // PBX leg: the client's SR (SRTCP) reaches the PBX in plain; the PBX answers late.
    let sr = sender_report(CLIENT_SSRC, ntp_now(), 3200, 20, 3200);
    let protected = client_tx.encrypt_rtcp(&sr).unwrap();
    call.client
        .rtcp
        .send_to(&protected, call.client_rtcp_target())
        .unwrap();
    let (ssrc, lsr) = recv_until(&call.pbx.rtcp, Duration::from_secs(5), sr_compact_ntp);
    assert_eq!(ssrc, CLIENT_SSRC);
    std::thread::sleep(HOLD);
    let rr = receiver_report(PBX_SSRC, ssrc, lsr, dlsr(CLAIMED));
    call.pbx.rtcp.send_to(&rr, call.pbx_rtcp_target()).unwrap();

    // Client leg: the PBX's SR reaches the client as SRTCP; the client answers late.
    let sr = sender_report(PBX_SSRC, ntp_now(), 3200, 20, 3200);
    call.pbx.rtcp.send_to(&sr, call.pbx_rtcp_target()).unwrap();
    let mut client_rx = call.client_rx();
    let (ssrc, lsr) = recv_until(&call.client.rtcp, Duration::from_secs(5), |p| {
        client_rx
            .decrypt_rtcp(p)
            .ok()
            .and_then(|plain| sr_compact_ntp(&plain))
    });
    assert_eq!(ssrc, PBX_SSRC);
    std::thread::sleep(HOLD);
    let rr = receiver_report(CLIENT_SSRC, ssrc, lsr, dlsr(CLAIMED));
    let protected = client_tx.encrypt_rtcp(&rr).unwrap();
    call.client
        .rtcp
        .send_to(&protected, call.client_rtcp_target())
        .unwrap();

    let got = wait_call(
        &d,
        call.id,
        "RTT on both legs",
        Duration::from_secs(10),
        |c| pbx_quality(c).rtt_ms.is_some() && client_quality(c).rtt_ms.is_some(),
    )
    .await;
    for (side, q) in [("pbx", pbx_quality(&got)), ("client", client_quality(&got))] {
        let rtt = q.rtt_ms.unwrap();
        eprintln!("{side} leg RTT {rtt:.2} ms (set up {want_ms} ms)");
        // Lower bound: the hold is a minimum and DLSR is truncated to 1/65536 s. Upper bound:
        // the test's own oversleep and loopback scheduling on a loaded machine.
        assert!(
            (want_ms - 0.1..=want_ms + 40.0).contains(&rtt),
            "{side} RTT {rtt} ms, set up {want_ms} ms"
        );
        assert_eq!(q.one_way_delay_ms, Some(rtt / 2.0), "{side}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rtcp_is_counted_not_fatal() {
    let d = Daemon::start_config(&config("q-badrtcp", 3));
    let (cp, pp) = phone_ports(3);
    let call = TestCall::start(d.channel().await, "q-badrtcp", cp, pp).await;
    let to = call.pbx_rtcp_target();
    // RTCP-looking (version 2, PT 200-204, 8+ bytes) passes the relay's header check but fails
    // the full parse: counted as rtcp_malformed and still forwarded (the peer may be laxer).
    // Two shapes: a compound whose second packet overruns, and a header whose length does.
    let mut overrun = vec![0x80, 201, 0, 1, 0, 0, 0, 7];
    overrun.extend_from_slice(&[0x81, 202, 0, 9, 0, 0, 0, 7]);
    let long_header = vec![0x80, 200, 0, 9, 0, 0, 0, 1];
    let bad = [&overrun, &overrun, &overrun, &long_header, &long_header];
    // Not RTP/RTCP at all (version 0; two bytes): RFC 7983 demultiplexing drops them as stray.
    let junk: [&[u8]; 2] = [&[0x00, 200, 0, 1, 0, 0, 0, 1], &[0x80, 200]];
    for b in bad {
        call.pbx.rtcp.send_to(b, to).unwrap();
    }
    for j in junk {
        call.pbx.rtcp.send_to(j, to).unwrap();
    }
    // A valid SR after all that still crosses to the client.
    call.pbx
        .rtcp
        .send_to(&sender_report(PBX_SSRC, ntp_now(), 0, 0, 0), to)
        .unwrap();
    let mut rx = call.client_rx();
    let mut forwarded_bad = 0;
    let (ssrc, _) = recv_until(&call.client.rtcp, Duration::from_secs(5), |p| {
        let plain = rx.decrypt_rtcp(p).ok()?;
        let sr = sr_compact_ntp(&plain);
        if sr.is_none() {
            forwarded_bad += 1;
        }
        sr
    });
    assert_eq!(ssrc, PBX_SSRC);
    assert_eq!(
        forwarded_bad, 5,
        "unparseable but authentic RTCP is forwarded"
    );
    let got = wait_call(
        &d,
        call.id,
        "malformed counted",
        Duration::from_secs(5),
        |c| counters(&c.pbx).rtcp_in == 6,
    )
    .await;
    let c = counters(&got.pbx);
    assert_eq!(c.rtcp_malformed, 5, "{c:?}");
    assert_eq!(c.drop_stray, 2, "{c:?}");
    assert_eq!(counters(&got.client).rtcp_out, 6, "{c:?}");
    // The call and the daemon carry on: media still flows PBX -> client.
    send_schedule(&call.pbx.rtp, call.pbx_target, paced(1, 5, PBX_SSRC)).await;
    recv_until(&call.client.rtp, Duration::from_secs(5), |p| {
        rx.decrypt_rtp(p).ok().map(|_| ())
    });
    wait_call(
        &d,
        call.id,
        "media after junk",
        Duration::from_secs(5),
        |c| counters(&c.pbx).packets_in == 6 + 5,
    )
    .await;
}

/// One sample of a scrape, as parsed by Prometheus' own Python client.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// Parses `text` with `prometheus_client.parser` (Debian's python3-prometheus-client, in
/// .ci/run). `None` (after `skip`) when the parser is not installed.
fn parse_exposition(text: &str) -> Option<Vec<Sample>> {
    const SCRIPT: &str = "import sys, json\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = []\n\
        for fam in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   assert fam.type in ('counter', 'gauge', 'histogram'), fam.type\n\
        \x20   for s in fam.samples:\n\
        \x20       out.append({'name': s.name, 'labels': s.labels, 'value': s.value})\n\
        print(json.dumps(out))\n";
    let python = "/usr/bin/python3";
    let probe = Command::new(python)
        .args(["-c", "import prometheus_client.parser"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        common::skip("needs /usr/bin/python3 with python3-prometheus-client");
        return None;
    }
    let mut child = Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition does not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// `GET /metrics` over a plain TCP HTTP/1.1 exchange; the body after the status check.
fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {name}{labels:?} in {samples:#?}"))
        .value
}

/// Scrapes (bounded) until `pred` holds on the parsed samples.
async fn scrape_until(
    addr: SocketAddr,
    what: &str,
    pred: impl Fn(&[Sample]) -> bool,
) -> Option<Vec<Sample>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = tokio::task::spawn_blocking(move || scrape(addr))
            .await
            .unwrap();
        let samples = parse_exposition(&text)?;
        if pred(&samples) {
            return Some(samples);
        }
        assert!(Instant::now() < deadline, "{what} never showed:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_parses_and_matches_the_traffic_sent() {
    let metrics: SocketAddr = "127.0.0.1:23199".parse().unwrap();
    let d = Daemon::start_config(&DaemonConfig {
        metrics_listen: metrics.to_string(),
        ..config("q-metrics", 4)
    });
    d.wait_log("metrics endpoint listening", Duration::from_secs(10));
    let idle = scrape_until(metrics, "idle figures", |_| true).await;
    let Some(idle) = idle else { return };
    assert_eq!(value(&idle, "xcc_calls_active", &[]), 0.0);
    assert_eq!(value(&idle, "xcc_ports", &[("state", "free")]), 20.0);

    let (cp, pp) = phone_ports(4);
    let call = TestCall::start(d.channel().await, "q-metrics", cp, pp).await;
    // 50 RTP from the PBX with 2 gaps, 30 SRTP from the client, 3 unparseable RTCP datagrams.
    let pbx_media: Vec<_> = paced(1, 52, PBX_SSRC)
        .into_iter()
        .filter(|(_, p)| ![10u16, 20].contains(&u16::from_be_bytes([p[2], p[3]])))
        .collect();
    assert_eq!(pbx_media.len(), 50);
    let mut tx = call.client_tx();
    let client_media: Vec<_> = paced(1, 30, CLIENT_SSRC)
        .into_iter()
        .map(|(at, p)| (at, tx.encrypt_rtp(&p).unwrap().to_vec()))
        .collect();
    let client_bytes: u64 = client_media.iter().map(|(_, p)| p.len() as u64).sum();
    let (a, b) = tokio::join!(
        send_schedule(&call.pbx.rtp, call.pbx_target, pbx_media),
        send_schedule(&call.client.rtp, call.client_target, client_media),
    );
    let ((), ()) = (a, b);
    for _ in 0..3 {
        call.pbx
            .rtcp
            .send_to(&[0x80, 200, 0, 9, 0, 0, 0, 1], call.pbx_rtcp_target())
            .unwrap();
    }
    let pbx_bytes = 50 * rtp(0, 0, 0).len() as u64;
    let during = scrape_until(metrics, "call traffic", |s| {
        value(s, "xcc_media_packets_total", &[("direction", "in")]) == 83.0
            && value(s, "xcc_rtcp_malformed_total", &[]) == 3.0
    })
    .await
    .unwrap();
    assert_eq!(value(&during, "xcc_calls_active", &[]), 1.0);
    assert_eq!(value(&during, "xcc_ports", &[("state", "used")]), 4.0);
    assert_eq!(value(&during, "xcc_ports", &[("state", "free")]), 16.0);
    assert_eq!(
        value(&during, "xcc_media_bytes_total", &[("direction", "in")]),
        (pbx_bytes + client_bytes + 3 * 8) as f64
    );
    assert_eq!(
        value(&during, "xcc_media_packets_total", &[("direction", "out")]),
        83.0,
        "every packet forwarded (unparseable RTCP too)"
    );
    assert_eq!(
        value(&during, "xcc_rtcp_packets_total", &[("direction", "in")]),
        3.0
    );
    assert_eq!(value(&during, "xcc_srtp_auth_failures_total", &[]), 0.0);
    assert_eq!(value(&during, "xcc_worker_calls", &[]), 1.0);

    calls(&d)
        .await
        .hang_up(pb::HangUpRequest { call_id: call.id })
        .await
        .unwrap();
    let after = scrape_until(metrics, "the ended call", |s| {
        value(s, "xcc_calls_active", &[]) == 0.0
            && value(s, "xcc_calls_ended_total", &[]) == 1.0
            && value(s, "xcc_leg_loss_ratio_count", &[("side", "pbx")]) == 1.0
    })
    .await
    .unwrap();
    assert_eq!(
        value(&after, "xcc_media_packets_total", &[("direction", "in")]),
        83.0,
        "totals survive the call's end"
    );
    assert_eq!(
        value(&after, "xcc_ports", &[("state", "quarantined")])
            + value(&after, "xcc_ports", &[("state", "free")]),
        20.0
    );
    // PBX leg: 2 lost of 51 expected (A.1 probation) = 3.9 %, in the (0.03, 0.05] bucket only.
    let sum = value(&after, "xcc_leg_loss_ratio_sum", &[("side", "pbx")]);
    assert!((sum - 2.0 / 51.0).abs() < 1e-9, "loss sum {sum}");
    // No RTT on either leg: both counted as without MOS, none in the MOS histogram.
    assert_eq!(
        value(&after, "xcc_leg_without_mos_total", &[("side", "pbx")]),
        1.0
    );
    assert_eq!(value(&after, "xcc_leg_mos_count", &[("side", "pbx")]), 0.0);
}

/// The JSON object a `xcc::cdr` log line ends in.
fn cdr_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| l.contains("xcc::cdr"))
        .map(|l| {
            // The span (`call{id=N}`) precedes the target; the object follows it.
            let (_, json) = l
                .split_once("xcc::cdr: ")
                .expect("JSON object on the cdr line");
            serde_json::from_str(json).unwrap_or_else(|e| panic!("cdr line is not JSON ({e}): {l}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_record_is_on_the_feed_and_in_the_log_as_json_with_the_counters() {
    let d = Daemon::start_config(&config("q-record", 5));
    let (cp, pp) = phone_ports(5);
    let mut events = watch(&d).await;
    let call = TestCall::start(d.channel().await, "q-record", cp, pp).await;
    // 40 PBX packets with 4 dropped, 25 client packets.
    let pbx_media: Vec<_> = paced(1, 44, PBX_SSRC)
        .into_iter()
        .filter(|(_, p)| u16::from_be_bytes([p[2], p[3]]) % 10 != 5)
        .collect();
    assert_eq!(pbx_media.len(), 40);
    let mut tx = call.client_tx();
    let client_media: Vec<_> = paced(1, 25, CLIENT_SSRC)
        .into_iter()
        .map(|(at, p)| (at, tx.encrypt_rtp(&p).unwrap().to_vec()))
        .collect();
    let (a, b) = tokio::join!(
        send_schedule(&call.pbx.rtp, call.pbx_target, pbx_media),
        send_schedule(&call.client.rtp, call.client_target, client_media),
    );
    let ((), ()) = (a, b);
    wait_call(
        &d,
        call.id,
        "traffic counted",
        Duration::from_secs(10),
        |c| counters(&c.pbx).packets_in == 40 && counters(&c.client).packets_in == 25,
    )
    .await;
    calls(&d)
        .await
        .hang_up(pb::HangUpRequest { call_id: call.id })
        .await
        .unwrap();

    let e = next_event(&mut events, Duration::from_secs(10), "call record", |e| {
        matches!(e.kind, Some(pb::event::Kind::Record(_)))
    })
    .await;
    assert_eq!(e.call_id, call.id);
    let Some(pb::event::Kind::Record(r)) = e.kind else {
        unreachable!()
    };
    assert_eq!(r.call_id, call.id);
    assert_eq!(r.reason, pb::call_ended::Reason::Released as i32);
    assert!(
        r.start_unix_ms > 0 && r.answer_unix_ms >= r.start_unix_ms,
        "{r:?}"
    );
    assert!(r.end_unix_ms >= r.answer_unix_ms, "{r:?}");
    assert_eq!(r.duration_ms, r.end_unix_ms - r.start_unix_ms);
    assert_eq!(r.talk_ms, r.end_unix_ms - r.answer_unix_ms);
    let pbx = r.pbx.clone().unwrap();
    let client = r.client.clone().unwrap();
    assert_eq!(pbx.side, pb::Side::Pbx as i32);
    assert_eq!(pbx.counters.unwrap().packets_in, 40);
    assert_eq!(client.counters.unwrap().packets_in, 25);
    assert_eq!(
        pbx.counters.unwrap().packets_out,
        25,
        "client media sent to the PBX"
    );
    let pq = pbx.quality.unwrap();
    assert_eq!((pq.expected, pq.lost), (43, 4), "{pq:?}");
    assert!(
        pbx.breaches.is_empty(),
        "4 losses in 44 packets is under 5 s of breach"
    );

    d.wait_log("xcc::cdr", Duration::from_secs(5));
    let lines = cdr_lines(&d.log());
    assert_eq!(lines.len(), 1, "one record per call");
    let j = &lines[0];
    assert_eq!(j["call_id"], call.id);
    assert_eq!(j["reason"], "released");
    assert_eq!(j["duration_ms"], r.duration_ms);
    assert_eq!(j["pbx"]["counters"]["packets_in"], 40);
    assert_eq!(j["client"]["counters"]["packets_in"], 25);
    assert_eq!(j["pbx"]["quality"]["lost"], 4);
    assert_eq!(j["pbx"]["quality"]["expected"], 43);
    assert_eq!(j["pbx"]["quality"]["rtt_ms"], serde_json::Value::Null);
    assert_eq!(j["mos"], serde_json::Value::Null, "no RTT, no MOS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_to_a_file_has_no_colours_and_call_lines_carry_the_call_span() {
    // The harness sends xccd's stderr to a file: not a terminal.
    let d = Daemon::start_config(&config("q-ansi", 6));
    let (cp, pp) = phone_ports(6);
    let call = TestCall::start(d.channel().await, "q-ansi", cp, pp).await;
    calls(&d)
        .await
        .hang_up(pb::HangUpRequest { call_id: call.id })
        .await
        .unwrap();
    d.wait_log("xcc::cdr", Duration::from_secs(10));
    let log = d.log();
    assert!(log.lines().count() > 5, "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape sequences in a non-terminal log:\n{log:?}"
    );
    let span = format!("call{{id={}}}", call.id);
    let cdr = log.lines().find(|l| l.contains("xcc::cdr")).unwrap();
    assert!(cdr.contains(&span), "cdr line outside the call span: {cdr}");
    assert!(
        log.lines().filter(|l| l.contains(&span)).count() >= 2,
        "control-plane lines about the call carry its span:\n{log}"
    );
}

async fn xccctl(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_xccctl"))
        .arg("--addr")
        .arg(&d.endpoint)
        .arg("--json")
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "xccctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_changes_live_and_junk_is_refused_and_xccctl_shows_quality() {
    let d = Daemon::start_config(&DaemonConfig {
        log_level: "info".into(),
        ..config("q-level", 7)
    });
    let mut sat = pb::satellite_client::SatelliteClient::new(d.channel().await);
    let mut events = watch(&d).await;
    let err = sat
        .set_log_level(pb::SetLogLevelRequest {
            level: "inf".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("\"inf\""), "{err:?}");

    // At warn, a call's info lines (its record among them) are not written.
    let v = xccctl(&d, &["log-level", "warn"]).await;
    assert_eq!(v["log_level"], "warn");
    let (cp, pp) = phone_ports(7);
    let quiet = TestCall::start(d.channel().await, "q-level-1", cp, pp).await;
    send_schedule(&quiet.pbx.rtp, quiet.pbx_target, paced(1, 10, PBX_SSRC)).await;
    wait_call(&d, quiet.id, "media", Duration::from_secs(10), |c| {
        pbx_quality(c).received == 9
    })
    .await;
    // xccctl shows the leg's quality.
    let shown = xccctl(&d, &["call", &quiet.id.to_string()]).await;
    assert_eq!(shown["pbx"]["quality"]["received"], 9, "{shown}");
    assert_eq!(shown["pbx"]["quality"]["rtt_ms"], serde_json::Value::Null);
    calls(&d)
        .await
        .hang_up(pb::HangUpRequest { call_id: quiet.id })
        .await
        .unwrap();
    // The record is logged before it is published: once on the feed, its line was filtered.
    next_event(&mut events, Duration::from_secs(10), "quiet record", |e| {
        e.call_id == quiet.id && matches!(e.kind, Some(pb::event::Kind::Record(_)))
    })
    .await;
    // Back to info: the next call's record is written.
    sat.set_log_level(pb::SetLogLevelRequest {
        level: "info".into(),
    })
    .await
    .unwrap();
    let loud = TestCall::start(d.channel().await, "q-level-2", cp + 2, pp + 2).await;
    calls(&d)
        .await
        .hang_up(pb::HangUpRequest { call_id: loud.id })
        .await
        .unwrap();
    d.wait_log(
        &format!("call{{id={}}}: xcc::cdr", loud.id),
        Duration::from_secs(10),
    );
    let records: Vec<u64> = cdr_lines(&d.log())
        .iter()
        .filter_map(|j| j["call_id"].as_u64())
        .collect();
    assert_eq!(
        records,
        vec![loud.id],
        "the call at warn left no record line"
    );
}

#[test]
fn colours_only_when_stderr_is_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        common::skip("needs script(1) (bsdutils) for a pseudo-terminal");
        return;
    }
    // xccd logs its start, then fails to bind a control port the test holds (exit 69): a short,
    // deterministic run with an INFO and an ERROR line.
    let held = std::net::TcpListener::bind("127.0.0.1:23450").unwrap();
    let dir = std::env::temp_dir().join(format!("xcc-obs-tty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("xcc.toml");
    std::fs::write(
        &cfg,
        "[media]\nbind_address = \"127.0.0.1\"\nport_min = 23420\nport_max = 23439\n\
         [control]\nlisten = \"127.0.0.1:23450\"\n[metrics]\nlisten = \"\"\n",
    )
    .unwrap();
    let xccd = format!("{} -c {}", env!("CARGO_BIN_EXE_xccd"), cfg.display());
    let on_tty = Command::new("script")
        .args(["-qefc", &xccd, "/dev/null"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let piped = Command::new(env!("CARGO_BIN_EXE_xccd"))
        .args(["-c", cfg.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
    let tty = String::from_utf8_lossy(&on_tty.stdout);
    let pipe = String::from_utf8_lossy(&piped.stderr);
    assert_eq!(on_tty.status.code(), Some(69), "{tty}");
    assert_eq!(piped.status.code(), Some(69), "{pipe}");
    assert!(tty.contains("cannot bind control"), "{tty}");
    assert!(tty.contains('\u{1b}'), "a terminal gets colours: {tty:?}");
    assert!(
        pipe.contains("cannot bind control") && pipe.contains("INFO"),
        "{pipe}"
    );
    assert!(!pipe.contains('\u{1b}'), "a pipe gets none: {pipe:?}");
}
