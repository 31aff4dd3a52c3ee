//! One gRPC-created call with two "phones" on explicit loopback ports: an SDES-SRTP client
//! (AES_CM_128_HMAC_SHA1_80) and a plain-RTP PBX, each with an RTP and an RTCP socket, plus the
//! packet builders tests need to inject traffic (RTP, SR, RR).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use base64::Engine;
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;
use xcc_grpc::pb;

/// The suite the client offers.
pub const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";

/// A phone's two sockets.
pub struct Phone {
    /// RTP socket (even port).
    pub rtp: UdpSocket,
    /// RTCP socket (RTP + 1).
    pub rtcp: UdpSocket,
}

impl Phone {
    /// Binds 127.0.0.1:`rtp_port` and `rtp_port + 1`.
    pub fn bind(rtp_port: u16) -> Phone {
        let bind = |p: u16| {
            let s = UdpSocket::bind(("127.0.0.1", p)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            s
        };
        Phone {
            rtp: bind(rtp_port),
            rtcp: bind(rtp_port + 1),
        }
    }

    /// The RTP port.
    pub fn port(&self) -> u16 {
        self.rtp.local_addr().unwrap().port()
    }
}

/// A call set up through `Sessions` (client offers, PBX answers).
pub struct TestCall {
    /// XCC's call id.
    pub id: u64,
    /// The softphone (SRTP).
    pub client: Phone,
    /// The PBX (plain RTP).
    pub pbx: Phone,
    /// XCC's client-leg RTP address (RTCP is + 1).
    pub client_target: SocketAddr,
    /// XCC's PBX-leg RTP address.
    pub pbx_target: SocketAddr,
    /// The client's key+salt (it encrypts with it).
    pub client_key: Vec<u8>,
    /// XCC's key+salt on the client leg (the client decrypts with it).
    pub xcc_key: Vec<u8>,
}

impl TestCall {
    /// Creates and answers a call; the phones bind `client_port`/`+1` and `pbx_port`/`+1`.
    pub async fn start(
        channel: tonic::transport::Channel,
        key: &str,
        client_port: u16,
        pbx_port: u16,
    ) -> TestCall {
        let mut sessions = pb::sessions_client::SessionsClient::new(channel);
        let client = Phone::bind(client_port);
        let pbx = Phone::bind(pbx_port);
        let client_key: [u8; 30] = rand::random();
        let crypto = format!(
            "a=crypto:1 {SUITE} inline:{}",
            base64::engine::general_purpose::STANDARD.encode(client_key)
        );
        let offer = sdp(client.port(), "RTP/SAVP", &[&crypto]);
        let s = sessions
            .create_session(pb::CreateSessionRequest {
                idempotency_key: key.into(),
                offer_from: pb::Side::Client as i32,
                sdp: offer,
            })
            .await
            .unwrap()
            .into_inner();
        let pbx_target = media_target(&s.sdp);
        let a = sessions
            .answer_session(pb::AnswerSessionRequest {
                session_id: s.session_id,
                sdp: sdp(pbx.port(), "RTP/AVP", &[]),
            })
            .await
            .unwrap()
            .into_inner();
        TestCall {
            id: a.session_id,
            client,
            pbx,
            client_target: media_target(&a.sdp),
            pbx_target,
            client_key: client_key.to_vec(),
            xcc_key: crypto_key(&a.sdp),
            // keep field order readable
        }
    }

    /// XCC's client-leg RTCP address.
    pub fn client_rtcp_target(&self) -> SocketAddr {
        SocketAddr::new(self.client_target.ip(), self.client_target.port() + 1)
    }

    /// XCC's PBX-leg RTCP address.
    pub fn pbx_rtcp_target(&self) -> SocketAddr {
        SocketAddr::new(self.pbx_target.ip(), self.pbx_target.port() + 1)
    }

    /// The context the client encrypts with.
    pub fn client_tx(&self) -> Context {
        srtp_context(&self.client_key)
    }

    /// The context the client decrypts XCC's packets with.
    pub fn client_rx(&self) -> Context {
        srtp_context(&self.xcc_key)
    }
}

/// An SRTP context for AES_CM_128_HMAC_SHA1_80 key+salt.
pub fn srtp_context(key_salt: &[u8]) -> Context {
    Context::new(
        &key_salt[..16],
        &key_salt[16..30],
        ProtectionProfile::Aes128CmHmacSha1_80,
        None,
        None,
    )
    .unwrap()
}

/// A PCMU/8000 audio SDP from 127.0.0.1.
pub fn sdp(port: u16, transport: &str, extra: &[&str]) -> String {
    let mut lines = vec![
        "v=0".to_owned(),
        "o=- 4242 1 IN IP4 127.0.0.1".into(),
        "s=-".into(),
        "c=IN IP4 127.0.0.1".into(),
        "t=0 0".into(),
        format!("m=audio {port} {transport} 0"),
        "a=rtpmap:0 PCMU/8000".into(),
    ];
    lines.extend(extra.iter().map(|s| s.to_string()));
    lines.push("a=sendrecv".into());
    lines.join("\r\n") + "\r\n"
}

/// Where an SDP says its audio goes: the c= address and the m=audio port.
pub fn media_target(sdp: &str) -> SocketAddr {
    let mut ip: Option<std::net::IpAddr> = None;
    let mut port = None;
    for line in sdp.lines() {
        if let Some(rest) = line
            .strip_prefix("c=IN IP4 ")
            .or_else(|| line.strip_prefix("c=IN IP6 "))
        {
            ip = Some(rest.trim().parse().unwrap());
        }
        if let Some(rest) = line.strip_prefix("m=audio ") {
            port = Some(rest.split(' ').next().unwrap().parse::<u16>().unwrap());
        }
    }
    SocketAddr::new(ip.expect("c= line"), port.expect("m=audio line"))
}

/// Where an SDP says its RTCP goes when it says so: `a=rtcp:PORT IN IP4 ADDR` (RFC 3605).
/// `None` without an `a=rtcp` line; panics on one that names no address.
pub fn rtcp_target(sdp: &str) -> Option<SocketAddr> {
    let line = sdp.lines().find_map(|l| l.strip_prefix("a=rtcp:"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.as_slice() {
        [port, "IN", "IP4" | "IP6", ip] => Some(SocketAddr::new(
            ip.parse().expect("a=rtcp address"),
            port.parse().expect("a=rtcp port"),
        )),
        _ => panic!("a=rtcp:{line} names no address (PORT IN IP4 ADDR expected)"),
    }
}

/// The key+salt of the SDP's `a=crypto` line for [`SUITE`].
pub fn crypto_key(sdp: &str) -> Vec<u8> {
    let inline = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .find(|l| l.contains(SUITE))
        .and_then(|l| l.split("inline:").nth(1))
        .expect("a=crypto line");
    let b64 = inline.split(['|', ' ']).next().unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// An RTP packet, PT 0 (PCMU), timestamp `ts`, 160 bytes of payload.
pub fn rtp(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

/// An RTCP SR without report blocks; `ntp` is the 64-bit NTP timestamp.
pub fn sender_report(ssrc: u32, ntp: u64, rtp_ts: u32, packets: u32, octets: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&ntp.to_be_bytes());
    p.extend_from_slice(&rtp_ts.to_be_bytes());
    p.extend_from_slice(&packets.to_be_bytes());
    p.extend_from_slice(&octets.to_be_bytes());
    p
}

/// An RTCP RR with one report block about `source`, echoing `lsr` with `dlsr` (1/65536 s).
pub fn receiver_report(ssrc: u32, source: u32, lsr: u32, dlsr: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&source.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes()); // fraction lost, cumulative lost
    p.extend_from_slice(&0u32.to_be_bytes()); // extended highest sequence
    p.extend_from_slice(&0u32.to_be_bytes()); // jitter
    p.extend_from_slice(&lsr.to_be_bytes());
    p.extend_from_slice(&dlsr.to_be_bytes());
    p
}

/// The compact NTP (middle 32 bits) of the SR in `rtcp`, if it starts with one.
pub fn sr_compact_ntp(rtcp: &[u8]) -> Option<(u32, u32)> {
    if rtcp.len() < 28 || rtcp[1] != 200 {
        return None;
    }
    let ssrc = u32::from_be_bytes(rtcp[4..8].try_into().unwrap());
    let compact = u32::from_be_bytes(rtcp[10..14].try_into().unwrap());
    Some((ssrc, compact))
}

/// A 172-byte PCMU RTP packet whose payload is `fill`, timestamps 160 apart: easy to recognise
/// after a relay, one byte tells the streams apart.
pub fn rtp_filled(seq: u16, ssrc: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[fill; 160]);
    p
}
