//! Parsing what real softphones and PBXs send: every sample yields the audio stream XCC relays.

mod sdp_corpus;

use std::net::{IpAddr, SocketAddr};

use sdp_corpus::*;
use xcc_core::Error;
use xcc_core::media::Direction;
use xcc_core::sdp::{MediaTransport, SessionDescription};
use xcc_core::srtp::SrtpSuite;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn every_sample_parses_with_lf_and_crlf_and_prints_crlf() {
    for sample in ALL {
        let lf = SessionDescription::parse(sample).unwrap();
        let crlf_parsed = SessionDescription::parse(&crlf(sample)).unwrap();
        assert_eq!(lf, crlf_parsed);
        assert_eq!(
            lf.to_string(),
            crlf(sample),
            "unchanged SDP must print byte for byte"
        );
        assert_strictly_valid(&lf.to_string());
    }
}

#[test]
fn asterisk_rtp_offer_with_telephone_event() {
    let audio = SessionDescription::parse(ASTERISK_RTP_OFFER)
        .unwrap()
        .audio()
        .unwrap();
    assert_eq!(audio.connection, Some(ip("10.20.0.5")));
    assert_eq!(audio.port, 17520);
    assert_eq!(audio.transport, MediaTransport::RtpAvp);
    assert!(!audio.transport.is_secure());
    assert_eq!(audio.payload_types, [0, 8, 9, 101]);
    assert_eq!(audio.direction, Direction::SendRecv);
    assert_eq!((audio.rtcp, audio.rtcp_mux), (None, false));
    assert!(audio.cryptos.is_empty());
}

#[test]
fn freeswitch_unknown_suite_skipped_and_rtcp_with_address() {
    let audio = SessionDescription::parse(FREESWITCH_SRTP_OFFER)
        .unwrap()
        .audio()
        .unwrap();
    assert_eq!(audio.transport, MediaTransport::RtpSavp);
    assert!(audio.transport.is_secure());
    let tags: Vec<_> = audio.cryptos.iter().map(|c| (c.tag, c.suite)).collect();
    assert_eq!(
        tags,
        [
            (2, SrtpSuite::AesCm256HmacSha1_80),
            (3, SrtpSuite::AesCm128HmacSha1_80),
            (4, SrtpSuite::AesCm128HmacSha1_32)
        ]
    );
    assert_eq!(audio.rtcp, Some(SocketAddr::new(ip("192.0.2.10"), 24681)));
    assert_eq!(audio.payload_types, [102, 0, 8, 101, 13]);
    let (chosen, ours) = xcc_core::sdes::answer(&audio.cryptos).unwrap();
    assert_eq!(
        (chosen.tag, ours.tag, ours.suite),
        (2, 2, SrtpSuite::AesCm256HmacSha1_80)
    );
}

#[test]
fn cisco_cucm_session_level_connection() {
    let audio = SessionDescription::parse(CISCO_CUCM_OFFER)
        .unwrap()
        .audio()
        .unwrap();
    assert_eq!(audio.connection, Some(ip("198.51.100.30")));
    assert_eq!(audio.port, 16384);
    assert_eq!(audio.payload_types, [0, 8, 101]);
}

#[test]
fn old_style_hold_has_no_connection_and_is_sendonly() {
    let audio = SessionDescription::parse(CISCO_OLD_STYLE_HOLD)
        .unwrap()
        .audio()
        .unwrap();
    assert_eq!(audio.connection, None);
    assert_eq!(audio.port, 16384);
    assert_eq!(audio.direction, Direction::SendOnly);
    let recvonly = CISCO_OLD_STYLE_HOLD.replace("a=ptime:20\n", "a=ptime:20\na=recvonly\n");
    let audio = SessionDescription::parse(&recvonly)
        .unwrap()
        .audio()
        .unwrap();
    assert_eq!(audio.direction, Direction::Inactive);
}

#[test]
fn zoiper_srtp_with_ice_and_rtcp_mux() {
    let sdp = SessionDescription::parse(&crlf(ZOIPER_SRTP_OFFER)).unwrap();
    let audio = sdp.audio().unwrap();
    assert_eq!(audio.connection, Some(ip("192.168.1.23")));
    assert_eq!(audio.port, 52146);
    assert!(audio.rtcp_mux);
    assert_eq!(audio.cryptos.len(), 2);
    assert_eq!(audio.payload_types, [106, 9, 98, 101, 0, 8, 3]);
    let origin = sdp.origin().unwrap();
    assert_eq!((origin.session_id, origin.version), (1718216600123, 1));
}

#[test]
fn linphone_ipv6_rtcp_without_address_uses_connection() {
    let audio = SessionDescription::parse(LINPHONE_IPV6_OFFER)
        .unwrap()
        .audio()
        .unwrap();
    assert_eq!(audio.connection, Some(ip("2001:db8::10")));
    assert_eq!(audio.rtcp, Some(SocketAddr::new(ip("2001:db8::10"), 7079)));
    assert_eq!(audio.port, 7078);
    assert_eq!(audio.cryptos.len(), 2);
}

#[test]
fn bria_media_level_connection_only() {
    let audio = SessionDescription::parse(BRIA_AUDIO_VIDEO_OFFER)
        .unwrap()
        .audio()
        .unwrap();
    assert_eq!(audio.connection, Some(ip("10.1.2.3")));
    assert_eq!(audio.port, 63520);
    assert_eq!(audio.payload_types, [9, 8, 0, 101]);
}

#[test]
fn polycom_session_level_sendonly_and_lifetimes() {
    let audio = SessionDescription::parse(POLYCOM_HOLD_SRTP)
        .unwrap()
        .audio()
        .unwrap();
    assert_eq!(audio.direction, Direction::SendOnly);
    assert!(audio.cryptos.iter().all(|c| c.lifetime == Some(1 << 48)));
}

#[test]
fn media_level_direction_overrides_session_level() {
    for (attribute, expected) in [
        ("a=recvonly", Direction::RecvOnly),
        ("a=inactive", Direction::Inactive),
        ("a=sendrecv", Direction::SendRecv),
    ] {
        let text =
            POLYCOM_HOLD_SRTP.replace("a=rtpmap:9 G722", &format!("{attribute}\na=rtpmap:9 G722"));
        let audio = SessionDescription::parse(&text).unwrap().audio().unwrap();
        assert_eq!(audio.direction, expected, "{attribute}");
    }
}

#[test]
fn first_audio_section_is_chosen_after_video() {
    let text = "v=0\no=- 1 1 IN IP4 10.0.0.9\ns=-\nc=IN IP4 10.0.0.9\nt=0 0\n\
                m=video 5000 RTP/AVP 96\nm=audio 4000 RTP/AVP 0\nm=audio 6000 RTP/AVP 8\n";
    let audio = SessionDescription::parse(text).unwrap().audio().unwrap();
    assert_eq!(
        (audio.port, audio.payload_types.as_slice()),
        (4000, &[0u8][..])
    );
}

#[test]
fn no_audio_section_is_typed_error() {
    let text =
        "v=0\no=- 1 1 IN IP4 10.0.0.9\ns=-\nc=IN IP4 10.0.0.9\nt=0 0\nm=video 5000 RTP/AVP 96\n";
    assert!(matches!(
        SessionDescription::parse(text).unwrap().audio(),
        Err(Error::SdpNoAudio)
    ));
}

#[test]
fn malformed_sdp_reports_the_line() {
    let cases: [(&str, usize); 8] = [
        ("", 0),
        ("o=- 1 1 IN IP4 10.0.0.1\n", 1),
        ("v=1\n", 1),
        ("v=0\no=- 1 1 IN IP4\n", 2),
        ("v=0\no=- 1 1 IN IP4 10.0.0.1\nc=IN IP4\n", 3),
        ("v=0\no=- 1 1 IN IP4 10.0.0.1\nm=audio 70000 RTP/AVP 0\n", 3),
        ("v=0\no=- 1 1 IN IP4 10.0.0.1\n\nnonsense\n", 4),
        ("v=0\ns=-\n", 0),
    ];
    for (text, line) in cases {
        match SessionDescription::parse(text) {
            Err(Error::SdpParse { line: got, .. }) => assert_eq!(got, line, "{text:?}"),
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn audio_without_any_connection_is_refused_unless_rejected() {
    let text = "v=0\no=- 1 1 IN IP4 10.0.0.9\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0\n";
    let err = SessionDescription::parse(text)
        .unwrap()
        .audio()
        .unwrap_err();
    assert!(matches!(err, Error::SdpParse { line: 5, .. }), "{err:?}");
    let rejected = text.replace("4000", "0");
    let audio = SessionDescription::parse(&rejected)
        .unwrap()
        .audio()
        .unwrap();
    assert_eq!((audio.port, audio.connection), (0, None));
}

#[test]
fn hostname_connection_is_refused_by_audio() {
    let text = CISCO_CUCM_OFFER.replace("c=IN IP4 198.51.100.30", "c=IN IP4 pbx.example.com");
    let err = SessionDescription::parse(&text)
        .unwrap()
        .audio()
        .unwrap_err();
    assert!(matches!(err, Error::SdpParse { line: 4, .. }), "{err:?}");
}

#[test]
fn debug_redacts_keys() {
    let sdp = SessionDescription::parse(ZOIPER_SRTP_OFFER).unwrap();
    let debug = format!("{sdp:?}");
    assert!(!debug.contains("qa0x01D1"), "{debug}");
    assert!(debug.contains("a=crypto:<redacted>"), "{debug}");
    assert!(debug.contains("a=rtpmap:106 opus/48000/2"), "{debug}");
    let audio = format!("{:?}", sdp.audio().unwrap());
    assert!(audio.contains("AesCm128HmacSha1_80"), "{audio}");
    assert!(
        !audio.contains("qa0x01D1") && !audio.contains("169, 173"),
        "{audio}"
    );
}

#[test]
fn malformed_or_held_rtcp_attribute_is_ignored() {
    for rtcp in [
        "a=rtcp:notaport",
        "a=rtcp:7079 IN IP4",
        "a=rtcp:7079 IN IP4 0.0.0.0",
    ] {
        let text = LINPHONE_IPV6_OFFER.replacen("a=rtcp:7079", rtcp, 1);
        let audio = SessionDescription::parse(&text).unwrap().audio().unwrap();
        assert_eq!(audio.rtcp, None, "{rtcp}");
        assert_eq!(audio.port, 7078);
    }
    let text = CISCO_OLD_STYLE_HOLD.replace("a=ptime:20", "a=rtcp:16385");
    let audio = SessionDescription::parse(&text).unwrap().audio().unwrap();
    assert_eq!(audio.rtcp, None);
}

#[test]
fn trailing_blanks_after_flag_attributes_are_tolerated() {
    let text = ZOIPER_SRTP_OFFER
        .replace("a=sendrecv\n", "a=recvonly \n")
        .replace("a=rtcp-mux\n", "a=rtcp-mux\t\n");
    let sdp = SessionDescription::parse(&text).unwrap();
    let audio = sdp.audio().unwrap();
    assert_eq!(audio.direction, Direction::RecvOnly);
    assert!(audio.rtcp_mux);
    assert!(
        sdp.to_string().contains("a=recvonly \r\n"),
        "kept byte for byte"
    );
}

#[test]
fn audio_clock_rates_come_from_rtpmap_of_the_audio_section_only() {
    let rates = SessionDescription::parse(FREESWITCH_SRTP_OFFER)
        .unwrap()
        .audio_clock_rates();
    assert_eq!(
        rates,
        vec![(102, 48000), (0, 8000), (8, 8000), (101, 8000), (13, 8000)]
    );
    // The video section's H264/90000 maps are not audio.
    let bria = SessionDescription::parse(BRIA_AUDIO_VIDEO_OFFER).unwrap();
    assert_eq!(bria.audio_clock_rates(), vec![(101, 8000)]);
    assert_eq!(bria.audio().unwrap().clock_rates, vec![(101, 8000)]);
}

#[test]
fn malformed_rtpmap_lines_are_skipped() {
    let sdp = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n\
               m=audio 4000 RTP/AVP 96 97 98 99 100\n\
               a=rtpmap:96 opus/48000/2\na=rtpmap:97 opus\na=rtpmap:200 x/8000\n\
               a=rtpmap:98 x/0\na=rtpmap:99 x/abc\na=rtpmap:100\na=rtpmap:\n";
    let rates = SessionDescription::parse(sdp).unwrap().audio_clock_rates();
    assert_eq!(rates, vec![(96, 48000)]);
}

#[test]
fn ipv6_unspecified_connection_is_old_style_hold() {
    let text = LINPHONE_IPV6_OFFER.replace("c=IN IP6 2001:db8::10", "c=IN IP6 ::");
    let audio = SessionDescription::parse(&text).unwrap().audio().unwrap();
    assert_eq!(audio.connection, None);
    assert_eq!(audio.direction, Direction::SendOnly);
    assert_eq!(
        audio.rtcp, None,
        "a=rtcp without address follows the held connection"
    );
}
