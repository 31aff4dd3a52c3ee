//! Session descriptions shaped like what real softphones and PBXs send, shared by the SDP tests.
//! Written by hand for XCC (addresses from the documentation ranges, keys from a seeded RNG).
#![allow(dead_code)]

/// Asterisk (chan_pjsip) offering plain RTP from the PBX side.
pub const ASTERISK_RTP_OFFER: &str = "v=0
o=- 1718216521 1718216521 IN IP4 10.20.0.5
s=Asterisk
c=IN IP4 10.20.0.5
t=0 0
m=audio 17520 RTP/AVP 0 8 9 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:9 G722/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv
";

/// FreeSWITCH offering SRTP with a suite XCC does not know, a 256-bit key and an explicit a=rtcp.
pub const FREESWITCH_SRTP_OFFER: &str = "v=0
o=FreeSWITCH 1718190000 1718190001 IN IP4 192.0.2.10
s=FreeSWITCH
c=IN IP4 192.0.2.10
t=0 0
m=audio 24680 RTP/SAVP 102 0 8 101 13
a=rtpmap:102 opus/48000/2
a=fmtp:102 useinbandfec=1; maxplaybackrate=16000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=rtpmap:13 CN/8000
a=ptime:20
a=crypto:1 AEAD_AES_256_GCM_8 inline:dLyMw8O8t81ehMyFYZKdGFS4TH7mzS9XKc8H4g==
a=crypto:2 AES_256_CM_HMAC_SHA1_80 inline:HBNZlktqBuC5jFnh9UEHZoNc3400WW+nCagUZxUT40iUOK/QYMXbmOceydw31g==
a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:F+mOdENMaNIz7WvFC1eG6W1nVyyJghzkmL/FuLYT
a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:/GkYexB8Qgau4FAS4Igh+ufFddUkTIUnFRqv4K3E
a=rtcp:24681 IN IP4 192.0.2.10
";

/// Cisco CUCM offering plain RTP with bandwidth lines at session and media level.
pub const CISCO_CUCM_OFFER: &str = "v=0
o=CiscoSystemsCCM-SIP 2000 1 IN IP4 198.51.100.20
s=SIP Call
c=IN IP4 198.51.100.30
b=TIAS:64000
b=AS:64
t=0 0
m=audio 16384 RTP/AVP 0 8 101
b=TIAS:64000
a=ptime:20
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
";

/// A Cisco gateway putting the call on hold the RFC 2543 way: c=0.0.0.0, no direction attribute.
pub const CISCO_OLD_STYLE_HOLD: &str = "v=0
o=CiscoSystemsSIP-GW-UserAgent 4321 1235 IN IP4 198.51.100.20
s=SIP Call
c=IN IP4 0.0.0.0
t=0 0
m=audio 16384 RTP/AVP 0 101 19
c=IN IP4 0.0.0.0
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=rtpmap:19 CN/8000
a=ptime:20
";

/// Zoiper offering SRTP with ICE candidates and rtcp-mux (sent with CRLF by the tests).
pub const ZOIPER_SRTP_OFFER: &str = "v=0
o=Z 1718216600123 1 IN IP4 192.168.1.23
s=Z
c=IN IP4 192.168.1.23
t=0 0
m=audio 52146 RTP/SAVP 106 9 98 101 0 8 3
a=ice-ufrag:7c6f21a2
a=ice-pwd:d4d7a3b0e0c8cdf1a96d2b1b1b5d9b0e
a=candidate:1 1 UDP 659136 192.168.1.23 52146 typ host
a=candidate:1 2 UDP 659134 192.168.1.23 52147 typ host
a=candidate:2 1 UDP 659135 203.0.113.45 41022 typ srflx raddr 192.168.1.23 rport 52146
a=rtpmap:106 opus/48000/2
a=fmtp:106 sprop-maxcapturerate=16000; minptime=20; useinbandfec=1
a=rtpmap:98 telephone-event/48000
a=fmtp:98 0-16
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=sendrecv
a=rtcp-mux
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:qa0x01D1gDO+rSI1fDc3PSVeeKjQWCcVbkLSfTEV
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:Yg5QAXEDZmZ93vUcqPwF/7ZAWbG3eeqGPtfnou/0
";

/// Linphone over IPv6: session-level ICE credentials, a=rtcp without address, audio + video.
pub const LINPHONE_IPV6_OFFER: &str = "v=0
o=alice 3150 2911 IN IP6 2001:db8::10
s=Talk
c=IN IP6 2001:db8::10
t=0 0
a=ice-pwd:31ec21eb38b2ec6d36e8dc7b
a=ice-ufrag:0b2c7d2e
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
m=audio 7078 RTP/SAVP 96 97 0 8 101
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:101 telephone-event/8000
a=rtcp:7079
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:i+ArmNqcOkcPwrFB6JcVBqN+26qyVfk3fqn1xnwM
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:fW7CIYJ2GsolLo/ijY0vQXgEEENnfe263wU6qbdx
a=candidate:1 1 UDP 2130706431 2001:db8::10 7078 typ host
a=candidate:1 2 UDP 2130706430 2001:db8::10 7079 typ host
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
m=video 9078 RTP/SAVP 96
a=rtpmap:96 VP8/90000
a=rtcp:9079
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QA0zXXbm29ZR4lGC9OMXE4PYA3VdkjtFoCyBTSVm
a=rtcp-fb:* nack pli
";

/// Bria offering plain RTP audio and H.264 video, media-level c= only.
pub const BRIA_AUDIO_VIDEO_OFFER: &str = "v=0
o=- 1718216700 2 IN IP4 10.1.2.3
s=Bria 6 release 6.5.1
b=AS:2064
t=0 0
m=audio 63520 RTP/AVP 9 8 0 101
c=IN IP4 10.1.2.3
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
m=video 56434 RTP/AVP 97 123
c=IN IP4 10.1.2.3
b=TIAS:2000000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42E01F;packetization-mode=1
a=rtpmap:123 H264/90000
a=sendrecv
a=rtcp-fb:* nack pli
";

/// A Polycom phone holding the call with a session-level a=sendonly and SRTP lifetimes.
pub const POLYCOM_HOLD_SRTP: &str = "v=0
o=- 1718216800 1718216801 IN IP4 172.16.0.50
s=Polycom IP Phone
c=IN IP4 172.16.0.50
t=0 0
a=sendonly
m=audio 2222 RTP/SAVP 9 102 0 8 127
a=rtpmap:9 G722/8000
a=rtpmap:102 G7221/16000
a=fmtp:102 bitrate=32000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:127 telephone-event/8000
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:F+mOdENMaNIz7WvFC1eG6W1nVyyJghzkmL/FuLYT|2^48
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:/GkYexB8Qgau4FAS4Igh+ufFddUkTIUnFRqv4K3E|2^48
";

/// Every sample, for tests that run over all of them.
pub const ALL: [&str; 8] = [
    ASTERISK_RTP_OFFER,
    FREESWITCH_SRTP_OFFER,
    CISCO_CUCM_OFFER,
    CISCO_OLD_STYLE_HOLD,
    ZOIPER_SRTP_OFFER,
    LINPHONE_IPV6_OFFER,
    BRIA_AUDIO_VIDEO_OFFER,
    POLYCOM_HOLD_SRTP,
];

/// The same text with CRLF line endings, as it arrives in a SIP body.
pub fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

/// Asserts an independent, strict SDP parser (webrtc-rs `sdp`, which enforces RFC 8866 line
/// order and required lines) accepts `text` and writes it back identically.
pub fn assert_strictly_valid(text: &str) {
    assert!(text.ends_with("\r\n"), "no final CRLF:\n{text}");
    assert!(
        !text.replace("\r\n", "").contains(['\r', '\n']),
        "stray line ending:\n{text}"
    );
    let mut reader = std::io::Cursor::new(text.as_bytes());
    let parsed = sdp::SessionDescription::unmarshal(&mut reader)
        .unwrap_or_else(|e| panic!("strict parser refused: {e}\n{text}"));
    assert_eq!(
        parsed.marshal(),
        text,
        "strict parser re-serialised differently"
    );
}
