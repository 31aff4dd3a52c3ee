//! Rewriting SDP so media flows through XCC: full expected outputs, strict-parser validity, and
//! byte-for-byte preservation of every line XCC does not own.

mod sdp_corpus;

use std::net::IpAddr;

use sdp_corpus::*;
use xcc_core::media::{Direction, LegPorts};
use xcc_core::nat::candidate::IceAnswerLines;
use xcc_core::sdes::CryptoAttribute;
use xcc_core::sdp::{AudioRewrite, MediaTransport, SessionDescription};
use xcc_core::srtp::{KeyingMaterial, SrtpSuite};

/// A fixed key so expected outputs are literal: key bytes 0..16, salt 16..30.
fn fixed_crypto() -> CryptoAttribute {
    let bytes: Vec<u8> = (0..30).collect();
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    CryptoAttribute {
        key: KeyingMaterial::new(suite, &bytes[..16], &bytes[16..]).unwrap(),
        ..CryptoAttribute::generate(1, suite)
    }
}

fn rewrite(text: &str, rw: &AudioRewrite) -> String {
    let mut sdp = SessionDescription::parse(text).unwrap();
    sdp.rewrite_audio(rw).unwrap();
    sdp.to_string()
}

fn client_leg(address: &str) -> AudioRewrite {
    AudioRewrite {
        address: address.parse().unwrap(),
        ports: LegPorts {
            rtp: 30000,
            rtcp: 30001,
        },
        transport: MediaTransport::RtpSavp,
        rtcp_mux: false,
        crypto: vec![fixed_crypto()],
        direction: None,
        rtcp_address: None,
    }
}

fn pbx_leg() -> AudioRewrite {
    AudioRewrite {
        address: "10.0.0.1".parse().unwrap(),
        ports: LegPorts {
            rtp: 30002,
            rtcp: 30003,
        },
        transport: MediaTransport::RtpAvp,
        rtcp_mux: false,
        crypto: Vec::new(),
        direction: None,
        rtcp_address: None,
    }
}

#[test]
fn asterisk_rtp_offer_rewritten_to_srtp_for_the_client() {
    let rw = client_leg("203.0.113.7");
    let mut sdp = SessionDescription::parse(&crlf(ASTERISK_RTP_OFFER)).unwrap();
    sdp.rewrite_audio(&rw).unwrap();
    sdp.set_origin(42, 1, rw.address);
    let expected = "v=0\r\n\
        o=- 42 1 IN IP4 203.0.113.7\r\n\
        s=Asterisk\r\n\
        c=IN IP4 203.0.113.7\r\n\
        t=0 0\r\n\
        m=audio 30000 RTP/SAVP 0 8 9 101\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:9 G722/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n\
        a=ptime:20\r\n\
        a=maxptime:150\r\n\
        a=sendrecv\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\r\n";
    assert_eq!(sdp.to_string(), expected);
    assert_strictly_valid(expected);
    let audio = SessionDescription::parse(expected)
        .unwrap()
        .audio()
        .unwrap();
    assert_eq!(audio.cryptos, [fixed_crypto()]);
    assert_eq!(audio.connection, Some(rw.address));
}

#[test]
fn zoiper_srtp_offer_rewritten_to_rtp_for_the_pbx() {
    let rw = pbx_leg();
    let mut sdp = SessionDescription::parse(&crlf(ZOIPER_SRTP_OFFER)).unwrap();
    sdp.rewrite_audio(&rw).unwrap();
    sdp.set_origin(7, 1, rw.address);
    let expected = "v=0\r\n\
        o=- 7 1 IN IP4 10.0.0.1\r\n\
        s=Z\r\n\
        c=IN IP4 10.0.0.1\r\n\
        t=0 0\r\n\
        m=audio 30002 RTP/AVP 106 9 98 101 0 8 3\r\n\
        a=rtpmap:106 opus/48000/2\r\n\
        a=fmtp:106 sprop-maxcapturerate=16000; minptime=20; useinbandfec=1\r\n\
        a=rtpmap:98 telephone-event/48000\r\n\
        a=fmtp:98 0-16\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n\
        a=sendrecv\r\n";
    assert_eq!(sdp.to_string(), expected);
    assert_strictly_valid(expected);
}

#[test]
fn linphone_ipv6_with_video_declined_mux_and_hold() {
    let rw = AudioRewrite {
        address: "2001:db8::1".parse().unwrap(),
        rtcp_mux: true,
        direction: Some(Direction::SendOnly),
        ..client_leg("2001:db8::1")
    };
    let out = rewrite(LINPHONE_IPV6_OFFER, &rw);
    let expected = "v=0\r\n\
        o=alice 3150 2911 IN IP6 2001:db8::1\r\n\
        s=Talk\r\n\
        c=IN IP6 2001:db8::1\r\n\
        t=0 0\r\n\
        a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n\
        m=audio 30000 RTP/SAVP 96 97 0 8 101\r\n\
        a=rtpmap:96 opus/48000/2\r\n\
        a=fmtp:96 useinbandfec=1\r\n\
        a=rtpmap:97 speex/16000\r\n\
        a=fmtp:97 vbr=on\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=rtcp:30001 IN IP6 2001:db8::1\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\r\n\
        a=rtcp-fb:* trr-int 1000\r\n\
        a=rtcp-fb:* ccm tmmbr\r\n\
        a=rtcp-mux\r\n\
        a=sendonly\r\n\
        m=video 0 RTP/SAVP 96\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        a=rtcp-fb:* nack pli\r\n";
    assert_eq!(out, expected);
    assert_strictly_valid(&out);
}

#[test]
fn media_level_connections_all_carry_xcc_address() {
    let out = rewrite(BRIA_AUDIO_VIDEO_OFFER, &pbx_leg());
    let expected = "v=0\r\n\
        o=- 1718216700 2 IN IP4 10.0.0.1\r\n\
        s=Bria 6 release 6.5.1\r\n\
        b=AS:2064\r\n\
        t=0 0\r\n\
        m=audio 30002 RTP/AVP 9 8 0 101\r\n\
        c=IN IP4 10.0.0.1\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\n\
        a=sendrecv\r\n\
        m=video 0 RTP/AVP 97 123\r\n\
        c=IN IP4 10.0.0.1\r\n\
        b=TIAS:2000000\r\n\
        a=rtpmap:97 H264/90000\r\n\
        a=fmtp:97 profile-level-id=42E01F;packetization-mode=1\r\n\
        a=rtpmap:123 H264/90000\r\n\
        a=sendrecv\r\n\
        a=rtcp-fb:* nack pli\r\n";
    assert_eq!(out, expected);
    assert_strictly_valid(&out);
}

#[test]
fn old_style_hold_keeps_its_meaning_as_sendonly() {
    let out = rewrite(CISCO_OLD_STYLE_HOLD, &pbx_leg());
    let expected = "v=0\r\n\
        o=CiscoSystemsSIP-GW-UserAgent 4321 1235 IN IP4 10.0.0.1\r\n\
        s=SIP Call\r\n\
        c=IN IP4 10.0.0.1\r\n\
        t=0 0\r\n\
        m=audio 30002 RTP/AVP 0 101 19\r\n\
        c=IN IP4 10.0.0.1\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n\
        a=rtpmap:19 CN/8000\r\n\
        a=ptime:20\r\n\
        a=sendonly\r\n";
    assert_eq!(out, expected);
    let audio = SessionDescription::parse(&out).unwrap().audio().unwrap();
    assert_eq!(audio.direction, Direction::SendOnly);
}

#[test]
fn direction_replaced_in_place_and_old_style_hold_gets_xcc_address() {
    let rw = AudioRewrite {
        direction: Some(Direction::SendOnly),
        ..pbx_leg()
    };
    let out = rewrite(CISCO_OLD_STYLE_HOLD, &rw);
    assert!(!out.contains("0.0.0.0"), "{out}");
    assert!(out.ends_with("a=ptime:20\r\na=sendonly\r\n"), "{out}");
    assert_strictly_valid(&out);

    let text = ASTERISK_RTP_OFFER.replace("a=sendrecv", "a=recvonly");
    let rw = AudioRewrite {
        direction: Some(Direction::Inactive),
        ..pbx_leg()
    };
    let out = rewrite(&text, &rw);
    assert!(out.ends_with("a=maxptime:150\r\na=inactive\r\n"), "{out}");
    assert!(!out.contains("recvonly"), "{out}");
}

#[test]
fn crypto_lines_replaced_where_the_first_one_was() {
    let rw = AudioRewrite {
        crypto: vec![
            fixed_crypto(),
            CryptoAttribute {
                tag: 2,
                ..fixed_crypto()
            },
        ],
        ..client_leg("203.0.113.7")
    };
    let out = rewrite(FREESWITCH_SRTP_OFFER, &rw);
    let tail = "a=ptime:20\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\r\n\
        a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\r\n\
        a=rtcp:30001 IN IP4 203.0.113.7\r\n";
    assert!(out.ends_with(tail), "{out}");
    assert_eq!(out.matches("a=crypto:").count(), 2);
    assert_strictly_valid(&out);
}

#[test]
fn missing_connection_is_inserted_after_information_line() {
    let text =
        "v=0\no=- 1 1 IN IP4 10.0.0.9\ns=-\nt=0 0\nm=audio 0 RTP/AVP 0\ni=voice\na=ptime:20\n";
    let out = rewrite(text, &pbx_leg());
    let expected = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 30002 RTP/AVP 0\r\ni=voice\r\nc=IN IP4 10.0.0.1\r\na=ptime:20\r\n";
    assert_eq!(out, expected);
    assert_strictly_valid(&out);
}

#[test]
fn rewrite_is_idempotent_and_keeps_untouched_lines() {
    for sample in ALL {
        let rw = client_leg("203.0.113.7");
        let once = rewrite(sample, &rw);
        let twice = rewrite(&once, &rw);
        assert_eq!(once, twice, "{sample}");
        assert_strictly_valid(&once);
        let audio = SessionDescription::parse(&once).unwrap().audio().unwrap();
        assert_eq!(audio.port, 30000);
        assert_eq!(audio.connection, Some(IpAddr::from([203, 0, 113, 7])));
        assert_eq!(audio.cryptos, [fixed_crypto()]);
        // Codec lines pass through untouched.
        for line in sample
            .lines()
            .filter(|l| l.starts_with("a=rtpmap") || l.starts_with("a=fmtp"))
        {
            assert!(once.contains(&format!("{line}\r\n")), "{line} lost");
        }
        for stripped in ["a=candidate", "a=ice-", "a=fingerprint", "a=setup"] {
            assert!(!once.contains(stripped), "{stripped} kept:\n{once}");
        }
        // No address of the sender survives (topology hiding).
        let sender = SessionDescription::parse(sample)
            .unwrap()
            .origin()
            .unwrap()
            .address;
        assert!(
            !once.contains(&format!(" {sender}\r\n")),
            "{sender} leaked:\n{once}"
        );
    }
}

#[test]
fn dtls_and_ice_lite_attributes_are_stripped() {
    let text = ASTERISK_RTP_OFFER.replace(
        "t=0 0\n",
        "t=0 0\na=ice-lite\na=fingerprint:sha-256 AB:CD\n",
    ) + "a=setup:actpass\na=end-of-candidates\na=ice-options:trickle\n";
    let out = rewrite(&text, &pbx_leg());
    assert_eq!(out, rewrite(ASTERISK_RTP_OFFER, &pbx_leg()));
}

#[test]
fn no_audio_section_cannot_be_rewritten() {
    let text =
        "v=0\no=- 1 1 IN IP4 10.0.0.9\ns=-\nc=IN IP4 10.0.0.9\nt=0 0\nm=video 5000 RTP/AVP 96\n";
    let mut sdp = SessionDescription::parse(text).unwrap();
    assert!(matches!(
        sdp.rewrite_audio(&pbx_leg()),
        Err(xcc_core::Error::SdpNoAudio)
    ));
    assert_eq!(
        sdp.to_string(),
        crlf(text),
        "a failed rewrite leaves the SDP untouched"
    );
}

#[test]
fn set_origin_bumps_version_and_reads_back() {
    let mut sdp = SessionDescription::parse(ASTERISK_RTP_OFFER).unwrap();
    sdp.set_origin(99, 3, "2001:db8::7".parse().unwrap());
    let origin = sdp.origin().unwrap();
    assert_eq!(
        (origin.username.as_str(), origin.session_id, origin.version),
        ("-", 99, 3)
    );
    assert_eq!(origin.address, "2001:db8::7");
    assert!(
        sdp.to_string()
            .contains("\r\no=- 99 3 IN IP6 2001:db8::7\r\n")
    );
}

#[test]
fn ice_lines_replace_the_peers_at_session_level_and_in_the_audio_section_only() {
    let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\na=ice-ufrag:Peer\r\nc=IN IP4 192.0.2.5\r\n\
                t=0 0\r\nm=audio 5004 RTP/SAVP 0\r\na=ice-pwd:peerpasswordpeerpassword\r\n\
                a=candidate:1 1 UDP 2130706431 192.0.2.5 5004 typ host\r\na=sendrecv\r\n\
                m=video 5006 RTP/SAVP 96\r\na=rtpmap:96 VP8/90000\r\n";
    let mut sdp = SessionDescription::parse(text).unwrap();
    let peer: Vec<String> = sdp.audio_attribute_lines().map(str::to_owned).collect();
    assert_eq!(
        peer,
        [
            "a=ice-ufrag:Peer",
            "a=ice-pwd:peerpasswordpeerpassword",
            "a=candidate:1 1 UDP 2130706431 192.0.2.5 5004 typ host",
            "a=sendrecv",
        ],
        "session level first, then the audio section's; video is not read"
    );
    sdp.rewrite_audio(&client_leg("203.0.113.7")).unwrap();
    let lines = IceAnswerLines {
        session: vec!["a=ice-lite".into()],
        media: vec!["a=ice-ufrag:Xcc1".into(), "a=ice-pwd:P".into()],
    };
    sdp.add_ice_lines(&lines).unwrap();
    let out = sdp.to_string();
    assert!(
        !out.contains("Peer") && !out.contains("peerpassword"),
        "{out}"
    );
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {out}"))
    };
    assert!(at("a=ice-lite\r\n") < at("m=audio"));
    assert!(at("m=audio") < at("a=ice-ufrag:Xcc1\r\na=ice-pwd:P\r\n"));
    assert!(
        at("a=ice-pwd:P\r\n") < at("m=video"),
        "not in the declined video section"
    );
    SessionDescription::parse(&out).expect("still valid SDP");
}

#[test]
fn turn_relayed_client_leg_names_its_rtcp_allocation_in_every_sample() {
    // XCC's client leg relayed through TURN: RTP and RTCP allocations differ in IP and port.
    let rw = AudioRewrite {
        ports: LegPorts {
            rtp: 49152,
            rtcp: 49153,
        },
        rtcp_address: Some("192.0.2.81:50000".parse().unwrap()),
        ..client_leg("192.0.2.80")
    };
    for sample in ALL {
        let out = rewrite(sample, &rw);
        assert_strictly_valid(&out);
        let audio = SessionDescription::parse(&out).unwrap().audio().unwrap();
        assert_eq!(audio.connection, Some(IpAddr::from([192, 0, 2, 80])));
        assert_eq!(audio.port, 49152);
        assert_eq!(audio.rtcp, rw.rtcp_address, "{out}");
        assert_eq!(
            out.matches("a=rtcp:").count(),
            1,
            "one a=rtcp, declined sections lose theirs: {out}"
        );
        assert_eq!(rewrite(&out, &rw), out, "idempotent");
    }
}
