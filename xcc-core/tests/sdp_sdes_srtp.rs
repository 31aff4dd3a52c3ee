//! The SDES offer/answer ends in working SRTP: keys and policies that travel through SDP text
//! protect and unprotect media between the two ends.

mod sdp_corpus;

use xcc_core::media::LegPorts;
use xcc_core::sdes::{self, CryptoAttribute};
use xcc_core::sdp::{AudioRewrite, MediaTransport, SessionDescription};
use xcc_core::srtp::{SrtpContext, SrtpSuite};

/// A 12-byte RTP header (PT 0, seq 1, ts 160, SSRC 0x11223344) and 160 bytes of payload.
fn rtp_packet() -> Vec<u8> {
    let mut packet = vec![0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0x11, 0x22, 0x33, 0x44];
    packet.extend((0..160u8).map(|b| b.wrapping_mul(7)));
    packet
}

/// `sender` protects, `receiver` must recover the exact packet.
fn media_flows(sender: &CryptoAttribute, receiver: &CryptoAttribute) {
    let plain = rtp_packet();
    let mut buf = plain.clone();
    buf.resize(plain.len() + 64, 0);
    let mut tx = SrtpContext::new(&sender.key, sender.srtp_policy());
    let mut rx = SrtpContext::new(&receiver.key, receiver.srtp_policy());
    let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
    assert_ne!(
        &buf[12..plain.len()],
        &plain[12..],
        "payload must be encrypted"
    );
    let len = rx.unprotect_rtp(&mut buf, len).unwrap();
    assert_eq!(&buf[..len], &plain[..]);
}

#[test]
fn answered_key_in_sdp_decrypts_what_xcc_sends() {
    for suite in SrtpSuite::ALL {
        // The phone offers; XCC answers through SDP text; the phone reads XCC's key from the text.
        let offered = sdes::offer(&[suite]);
        let (chosen, ours) = sdes::answer(&offered).unwrap();
        let mut sdp = SessionDescription::parse(sdp_corpus::ASTERISK_RTP_OFFER).unwrap();
        sdp.rewrite_audio(&AudioRewrite {
            address: "203.0.113.7".parse().unwrap(),
            ports: LegPorts {
                rtp: 30000,
                rtcp: 30001,
            },
            transport: MediaTransport::RtpSavp,
            rtcp_mux: false,
            crypto: vec![ours.clone()],
            direction: None,
            rtcp_address: None,
        })
        .unwrap();
        let received = SessionDescription::parse(&sdp.to_string())
            .unwrap()
            .audio()
            .unwrap();
        let [xcc_key_at_phone] = received.cryptos.as_slice() else {
            panic!("one a=crypto expected")
        };
        sdes::accept_answer(&offered, xcc_key_at_phone).unwrap();
        // XCC -> phone with XCC's key; phone -> XCC with the phone's offered key.
        media_flows(&ours, xcc_key_at_phone);
        media_flows(&offered[0], &chosen);
    }
}

#[test]
fn wrong_key_does_not_decrypt() {
    let a = CryptoAttribute::generate(1, SrtpSuite::AesCm128HmacSha1_80);
    let b = CryptoAttribute::generate(1, SrtpSuite::AesCm128HmacSha1_80);
    let plain = rtp_packet();
    let mut buf = plain.clone();
    buf.resize(plain.len() + 64, 0);
    let len = SrtpContext::new(&a.key, a.srtp_policy())
        .protect_rtp(&mut buf, plain.len())
        .unwrap();
    assert!(
        SrtpContext::new(&b.key, b.srtp_policy())
            .unprotect_rtp(&mut buf, len)
            .is_err()
    );
}
