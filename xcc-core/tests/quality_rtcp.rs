//! RTCP: the reader agrees with the rtcp crate (webrtc-rs) on SR/RR contents, refuses malformed
//! input with a typed error and never panics, and an SR/RR exchange over a virtual clock gives
//! back the round-trip time the test set up.

mod quality_common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quality_common::rng;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use rtcp::goodbye::Goodbye;
use rtcp::packet::Packet;
use rtcp::receiver_report::ReceiverReport;
use rtcp::reception_report::ReceptionReport;
use rtcp::sender_report::SenderReport;
use rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use webrtc_util::Marshal;
use xcc_core::quality::ntp::{self, NtpTime};
use xcc_core::quality::rtcp::{ReportBlock, RtcpCompound, RtcpPacket};
use xcc_core::quality::{LegMonitor, MonitorConfig, QualityError};

fn random_report(rng: &mut ChaCha8Rng) -> ReceptionReport {
    ReceptionReport {
        ssrc: rng.random(),
        fraction_lost: rng.random(),
        total_lost: rng.random::<u32>() & 0xff_ffff,
        last_sequence_number: rng.random(),
        jitter: rng.random(),
        last_sender_report: rng.random(),
        delay: rng.random(),
    }
}

fn sdes(ssrc: u32) -> SourceDescription {
    SourceDescription {
        chunks: vec![SourceDescriptionChunk {
            source: ssrc,
            items: vec![SourceDescriptionItem {
                sdes_type: SdesType::SdesCname,
                text: Bytes::from_static(b"xcc@satellite"),
            }],
        }],
    }
}

/// A random valid compound: SR or RR with 0-3 blocks, SDES, sometimes a BYE.
fn random_compound(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let ssrc = rng.random();
    let reports = (0..rng.random_range(0..=3))
        .map(|_| random_report(rng))
        .collect();
    let mut out = Vec::new();
    if rng.random_bool(0.5) {
        let sr = SenderReport {
            ssrc,
            ntp_time: rng.random(),
            rtp_time: rng.random(),
            packet_count: rng.random(),
            octet_count: rng.random(),
            reports,
            profile_extensions: Bytes::new(),
        };
        out.extend_from_slice(&sr.marshal().unwrap());
    } else {
        let rr = ReceiverReport {
            ssrc,
            reports,
            profile_extensions: Bytes::new(),
        };
        out.extend_from_slice(&rr.marshal().unwrap());
    }
    out.extend_from_slice(&sdes(ssrc).marshal().unwrap());
    if rng.random_bool(0.3) {
        let bye = Goodbye {
            sources: vec![ssrc],
            reason: Bytes::from_static(b"bye"),
        };
        out.extend_from_slice(&bye.marshal().unwrap());
    }
    out
}

fn same_block(ours: &ReportBlock, theirs: &ReceptionReport) -> bool {
    ours.ssrc == theirs.ssrc
        && ours.fraction_lost == theirs.fraction_lost
        && (ours.cumulative_lost as u32) & 0xff_ffff == theirs.total_lost
        && ours.extended_highest_seq == theirs.last_sequence_number
        && ours.jitter == theirs.jitter
        && ours.lsr == theirs.last_sender_report
        && ours.dlsr == theirs.delay
}

/// Every SR/RR our reader decodes matches what the rtcp crate decodes from the same bytes;
/// `None` when either side refused the bytes (nothing to compare).
fn compare_with_oracle(bytes: &[u8]) -> Option<bool> {
    let ours = RtcpCompound::parse(bytes).ok()?;
    let theirs = rtcp::packet::unmarshal(&mut Bytes::copy_from_slice(bytes)).ok()?;
    Some(same_packets(ours, &theirs))
}

fn agrees_with_oracle(bytes: &[u8]) -> bool {
    compare_with_oracle(bytes).unwrap_or(true)
}

fn same_packets(ours: RtcpCompound<'_>, theirs: &[Box<dyn Packet + Send + Sync>]) -> bool {
    let mut theirs = theirs.iter();
    for packet in ours.packets() {
        let Some(t) = theirs.next() else {
            return false;
        };
        let ok = match packet {
            RtcpPacket::SenderReport(sr) => {
                t.as_any().downcast_ref::<SenderReport>().is_some_and(|t| {
                    sr.info.ssrc == t.ssrc
                        && sr.info.ntp.0 == t.ntp_time
                        && sr.info.rtp_timestamp == t.rtp_time
                        && sr.info.packet_count == t.packet_count
                        && sr.info.octet_count == t.octet_count
                        && sr.blocks.clone().count() == t.reports.len()
                        && sr.blocks.zip(&t.reports).all(|(o, t)| same_block(&o, t))
                })
            }
            RtcpPacket::ReceiverReport(rr) => t
                .as_any()
                .downcast_ref::<ReceiverReport>()
                .is_some_and(|t| {
                    rr.ssrc == t.ssrc
                        && rr.blocks.clone().count() == t.reports.len()
                        && rr.blocks.zip(&t.reports).all(|(o, t)| same_block(&o, t))
                }),
            // The crate maps types it does not know to `Unsupported` (0).
            RtcpPacket::Other { packet_type, .. } => {
                let theirs = t.header().packet_type as u8;
                theirs == packet_type || theirs == 0
            }
        };
        if !ok {
            return false;
        }
    }
    true
}

#[test]
fn valid_compounds_decode_like_the_rtcp_crate() {
    let mut rng = rng(20);
    for _ in 0..2000 {
        let bytes = random_compound(&mut rng);
        let ours = RtcpCompound::parse(&bytes).expect("valid compound accepted");
        assert!(ours.packets().count() >= 2);
        assert!(agrees_with_oracle(&bytes), "{bytes:02x?}");
    }
}

#[test]
fn garbage_of_every_length_is_refused_without_panic() {
    let mut rng = rng(21);
    let mut accepted = 0;
    for len in 0..=100usize {
        for variant in 0..50 {
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            if len > 0 && variant % 2 == 1 {
                bytes[0] = 0x80 | (bytes[0] & 0x3f); // get past the version check
            }
            if len > 1 && variant % 5 == 0 {
                bytes[1] = rng.random_range(200..=201); // and look like SR/RR
            }
            // Accepted garbage must still be walkable to the end without panicking.
            if let Ok(c) = RtcpCompound::parse(&bytes) {
                accepted += 1;
                let _ = c.report_blocks().count();
                let _ = c.sender_infos().count();
            }
            if len < 4 {
                assert_eq!(
                    RtcpCompound::parse(&bytes).unwrap_err(),
                    QualityError::TooShort { len, needed: 4 }
                );
            }
        }
    }
    // Random bytes almost never frame correctly.
    assert!(accepted < 100, "{accepted} garbage inputs accepted");
}

#[test]
fn every_truncation_off_a_packet_boundary_is_refused() {
    let mut rng = rng(22);
    for _ in 0..200 {
        let bytes = random_compound(&mut rng);
        let mut boundaries = vec![0usize];
        let mut at = 0;
        while at < bytes.len() {
            at += (usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])) + 1) * 4;
            boundaries.push(at);
        }
        for cut in 0..bytes.len() {
            let r = RtcpCompound::parse(&bytes[..cut]);
            if cut > 0 && boundaries.contains(&cut) {
                assert!(r.is_ok(), "cut at boundary {cut}");
            } else {
                assert!(r.is_err(), "cut at {cut} of {}", bytes.len());
            }
        }
    }
}

#[test]
fn wrong_length_fields_are_refused() {
    let mut rng = rng(23);
    let rr = ReceiverReport {
        ssrc: 1,
        reports: vec![random_report(&mut rng), random_report(&mut rng)],
        profile_extensions: Bytes::new(),
    };
    let good = rr.marshal().unwrap().to_vec();
    assert!(RtcpCompound::parse(&good).is_ok());

    let mut longer = good.clone();
    longer[3] += 1; // one word more than the datagram holds
    assert!(matches!(
        RtcpCompound::parse(&longer),
        Err(QualityError::LengthOverrun { offset: 0, .. })
    ));

    let mut shorter = good.clone();
    shorter[3] -= 6; // RC says 2 blocks, length leaves room for one
    assert!(RtcpCompound::parse(&shorter).is_err());

    let mut more_blocks = good.clone();
    more_blocks[0] = 0x80 | 3;
    assert!(matches!(
        RtcpCompound::parse(&more_blocks),
        Err(QualityError::ReportCountOverrun { count: 3, .. })
    ));

    let mut sr_too_short = good;
    sr_too_short[1] = 200; // an SR needs 28 bytes before its blocks: 8 + 48 < 28 + 48
    assert!(RtcpCompound::parse(&sr_too_short).is_err());
}

#[test]
fn seeded_mutations_never_panic_and_never_disagree_with_the_oracle() {
    let mut rng = rng(24);
    let mut monitor = LegMonitor::new(MonitorConfig::default(), Instant::now());
    let mut refused = 0u64;
    let mut compared = 0u32;
    for i in 0..20_000u32 {
        let mut bytes = random_compound(&mut rng);
        for _ in 0..rng.random_range(1..=4) {
            match rng.random_range(0..4) {
                0 => {
                    let k = rng.random_range(0..bytes.len());
                    bytes[k] ^= 1 << rng.random_range(0..8);
                }
                1 => {
                    let k = rng.random_range(0..bytes.len());
                    bytes[k] = rng.random();
                }
                2 => {
                    let k = rng.random_range(0..=bytes.len());
                    bytes.truncate(k);
                }
                _ => {
                    let extra = rng.random_range(1..=8);
                    bytes.extend((0..extra).map(|_| rng.random::<u8>()));
                }
            }
            if bytes.is_empty() {
                break;
            }
        }
        if let Some(same) = compare_with_oracle(&bytes) {
            assert!(same, "mutation {i}: {bytes:02x?}");
            compared += 1;
        }
        if monitor.handle_rtcp(Instant::now(), &bytes).is_err() {
            refused += 1;
        }
    }
    let summary = monitor.summary(Instant::now());
    assert_eq!(summary.rtcp_malformed, refused);
    assert_eq!(summary.rtcp_received + summary.rtcp_malformed, 20_000);
    assert!(refused > 5_000, "mutations mostly break framing: {refused}");
    assert!(
        compared > 2_000,
        "the oracle compared only {compared} mutants"
    );
}

/// Builds the SR XCC sends on a leg at wall-clock `wall`.
fn sr_at(ssrc: u32, wall: SystemTime) -> (Vec<u8>, NtpTime) {
    let ntp_time = NtpTime::from_system_time(wall);
    let sr = SenderReport {
        ssrc,
        ntp_time: ntp_time.0,
        rtp_time: 0,
        packet_count: 100,
        octet_count: 16_000,
        reports: vec![],
        profile_extensions: Bytes::new(),
    };
    let mut out = sr.marshal().unwrap().to_vec();
    out.extend_from_slice(&sdes(ssrc).marshal().unwrap());
    (out, ntp_time)
}

/// The peer's RR about `ssrc`, echoing `lsr` after holding the SR for `hold`.
fn rr_echo(peer: u32, ssrc: u32, lsr: u32, hold: Duration, fraction_lost: u8) -> Vec<u8> {
    let rr = ReceiverReport {
        ssrc: peer,
        reports: vec![ReceptionReport {
            ssrc,
            fraction_lost,
            total_lost: 12,
            last_sequence_number: 70_000,
            jitter: 160, // 20 ms at 8 kHz
            last_sender_report: lsr,
            delay: ntp::duration_to_compact(hold),
        }],
        profile_extensions: Bytes::new(),
    };
    let mut out = rr.marshal().unwrap().to_vec();
    out.extend_from_slice(&sdes(peer).marshal().unwrap());
    out
}

#[test]
fn sr_rr_exchange_gives_the_configured_round_trip() {
    let one_way = Duration::from_millis(37);
    let hold = Duration::from_millis(1234);
    let t0 = Instant::now();
    let wall0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut m = LegMonitor::new(MonitorConfig::default(), t0);

    let (sr, ntp_time) = sr_at(0xc0ffee, wall0);
    m.handle_rtcp_sent(t0, &sr).unwrap();
    let arrival = t0 + one_way + hold + one_way;
    let rr = rr_echo(0x9999, 0xc0ffee, ntp_time.compact(), hold, 26);
    m.handle_rtcp(arrival, &rr).unwrap();
    m.handle_timeout(arrival + Duration::from_secs(1));

    let s = m.snapshot();
    let rtt = s.rtt_ms.expect("rtt measured");
    // DLSR is quantised to 1/65536 s (15.3 us).
    assert!((rtt - 74.0).abs() < 0.02, "rtt {rtt} ms");
    assert!((s.one_way_delay_ms.unwrap() - 37.0).abs() < 0.01);
    let peer = s.peer.expect("peer view");
    assert!((peer.fraction_lost_percent - 26.0 * 100.0 / 256.0).abs() < 1e-9);
    assert_eq!(peer.cumulative_lost, 12);
    assert!(s.mos.is_some(), "an RTT makes a MOS");

    // The RFC 3550 formula on wall-clock NTP values agrees.
    let a = NtpTime::from_system_time(wall0 + 2 * one_way + hold).compact();
    let by_ntp = ntp::rtt_from_compact(a, ntp_time.compact(), ntp::duration_to_compact(hold));
    let by_ntp = by_ntp.unwrap().as_secs_f64() * 1000.0;
    assert!((by_ntp - 74.0).abs() < 0.05, "{by_ntp}");
}

#[test]
fn report_about_an_unknown_sr_gives_no_rtt() {
    let t0 = Instant::now();
    let mut m = LegMonitor::new(MonitorConfig::default(), t0);
    let (sr, ntp_time) = sr_at(1, SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 31));
    m.handle_rtcp_sent(t0, &sr).unwrap();
    // LSR of some other SR (XCC never sent it), and an RR that has seen no SR at all.
    let other = rr_echo(2, 1, ntp_time.compact() ^ 0x10, Duration::ZERO, 0);
    m.handle_rtcp(t0 + Duration::from_millis(50), &other)
        .unwrap();
    let none = rr_echo(2, 1, 0, Duration::ZERO, 0);
    m.handle_rtcp(t0 + Duration::from_millis(60), &none)
        .unwrap();
    m.handle_timeout(t0 + Duration::from_secs(2));
    let s = m.snapshot();
    assert_eq!(s.rtt_ms, None);
    assert_eq!(s.mos, None, "no RTT, no MOS: the model is not fed a guess");
    assert!(s.peer.is_some());
}

#[test]
fn dlsr_longer_than_the_elapsed_time_gives_no_rtt() {
    let t0 = Instant::now();
    let mut m = LegMonitor::new(MonitorConfig::default(), t0);
    let (sr, ntp_time) = sr_at(1, SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 31));
    m.handle_rtcp_sent(t0, &sr).unwrap();
    let rr = rr_echo(2, 1, ntp_time.compact(), Duration::from_secs(5), 0);
    m.handle_rtcp(t0 + Duration::from_secs(1), &rr).unwrap();
    m.handle_timeout(t0 + Duration::from_secs(2));
    assert_eq!(m.snapshot().rtt_ms, None);
}

#[test]
fn xcc_report_block_parses_in_the_rtcp_crate() {
    let t0 = Instant::now();
    let mut m = LegMonitor::new(MonitorConfig::default(), t0);
    let sender = quality_common::Sender::pcmu(0x5150, 65_530);
    let mut rng = rng(25);
    let imp = quality_common::Impairment {
        loss: 0.1,
        ..Default::default()
    };
    let (deliveries, _) = sender.run(t0, 500, imp, &mut rng);
    for d in &deliveries {
        m.handle_rtp(d.at, d.pkt);
    }
    // The peer sent an SR 300 ms before XCC reports.
    let (peer_sr, peer_ntp) = sr_at(0x5150, UNIX_EPOCH + Duration::from_secs(1_900_000_000));
    let sr_arrival = t0 + Duration::from_secs(10);
    m.handle_rtcp(sr_arrival, &peer_sr).unwrap();
    let block = m
        .report_block(sr_arrival + Duration::from_millis(300))
        .unwrap();

    let mut wire = vec![0x81, 201, 0, 7, 0, 0, 0, 42];
    let mut b = [0u8; 24];
    block.write(&mut b);
    wire.extend_from_slice(&b);
    let parsed = rtcp::packet::unmarshal(&mut Bytes::from(wire)).unwrap();
    let rr = parsed[0].as_any().downcast_ref::<ReceiverReport>().unwrap();
    let r = &rr.reports[0];
    assert_eq!(r.ssrc, 0x5150);
    assert_eq!(r.last_sender_report, peer_ntp.compact());
    assert_eq!(
        r.delay,
        ntp::duration_to_compact(Duration::from_millis(300))
    );
    assert_eq!(r.total_lost as i64, m.receive().lost());
    assert!(r.last_sequence_number > 65_535, "extended past the wrap");
    let fraction = f64::from(r.fraction_lost) / 256.0;
    assert!((fraction - 0.1).abs() < 0.04, "{fraction}");
}

#[test]
fn xcc_written_compounds_parse_in_the_rtcp_crate() {
    use xcc_core::quality::rtcp::{
        SenderInfo, write_receiver_report, write_sdes_cname, write_sender_report,
    };
    let mut rng = rng(26);
    for k in 0..500 {
        let block = ReportBlock {
            reporter: 0,
            ssrc: rng.random(),
            fraction_lost: rng.random(),
            cumulative_lost: rng.random_range(-0x80_0000..0x80_0000),
            extended_highest_seq: rng.random(),
            jitter: rng.random(),
            lsr: rng.random(),
            dlsr: rng.random(),
        };
        let ssrc: u32 = rng.random();
        let cname_len = rng.random_range(1..=40);
        let cname: Vec<u8> = (0..cname_len)
            .map(|_| rng.random_range(b'a'..=b'z'))
            .collect();
        let mut buf = [0u8; 256];
        let with_block = (k % 3 != 0).then_some(&block);
        let info = SenderInfo {
            ssrc,
            ntp: NtpTime(rng.random()),
            rtp_timestamp: rng.random(),
            packet_count: rng.random(),
            octet_count: rng.random(),
        };
        let mut n = if k % 2 == 0 {
            write_sender_report(&mut buf, &info, with_block).unwrap()
        } else {
            write_receiver_report(&mut buf, ssrc, with_block).unwrap()
        };
        n += write_sdes_cname(&mut buf[n..], ssrc, &cname).unwrap();

        let bytes = &buf[..n];
        assert_eq!(compare_with_oracle(bytes), Some(true), "{bytes:02x?}");
        let theirs = rtcp::packet::unmarshal(&mut Bytes::copy_from_slice(bytes)).unwrap();
        let reports = if k % 2 == 0 {
            let sr = theirs[0].as_any().downcast_ref::<SenderReport>().unwrap();
            assert_eq!((sr.ssrc, sr.ntp_time), (ssrc, info.ntp.0));
            sr.reports.clone()
        } else {
            let rr = theirs[0].as_any().downcast_ref::<ReceiverReport>().unwrap();
            assert_eq!(rr.ssrc, ssrc);
            rr.reports.clone()
        };
        assert_eq!(reports.len(), usize::from(with_block.is_some()));
        if let Some(r) = reports.first() {
            assert!(same_block(&block, r));
        }
        let sdes = theirs[1]
            .as_any()
            .downcast_ref::<SourceDescription>()
            .unwrap();
        assert_eq!(sdes.chunks[0].source, ssrc);
        assert_eq!(sdes.chunks[0].items[0].sdes_type, SdesType::SdesCname);
        assert_eq!(&sdes.chunks[0].items[0].text[..], &cname[..]);
    }
}
