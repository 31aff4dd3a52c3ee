//! A test-owned SDES-SRTP "phone" on XCC's client leg: a UDP socket with a known key, and the
//! SDP helpers to find where media goes and which key XCC chose.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use base64::Engine;

use super::call::srtp_context;

/// The suite the phone speaks.
pub const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";

/// The (tag, key+salt) of the `a=crypto` line for [`SUITE`].
pub fn crypto_of(sdp: &str) -> (u32, Vec<u8>) {
    for line in sdp.lines() {
        let Some(rest) = line.strip_prefix("a=crypto:") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let tag: u32 = parts.next().unwrap().parse().unwrap();
        if parts.next() != Some(SUITE) {
            continue;
        }
        let inline = parts.next().unwrap().strip_prefix("inline:").unwrap();
        return (tag, decode_key(inline));
    }
    panic!("no a=crypto {SUITE} in:\n{sdp}");
}

/// key||salt from an `inline:` value (lifetime/MKI parameters ignored).
pub fn decode_key(inline: &str) -> Vec<u8> {
    let b64 = inline.split('|').next().unwrap().trim();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// base64 of a key||salt, for `inline:`.
pub fn encode_key(key: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// An RTP packet, PCMA (8), 20 ms timestamps.
pub fn rtp_packet(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 8];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// The phone: its socket and its own key.
pub struct Phone {
    /// Bound to an explicit loopback port in the test's range.
    pub socket: UdpSocket,
    /// The phone's key||salt (it encrypts with it).
    pub key: [u8; 30],
}

/// What the phone heard during [`Phone::talk`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Heard {
    /// SRTP packets that authenticated with XCC's key.
    pub packets: u32,
    /// Of those, how many carried the phone's own payload back (an echo at the far end).
    pub echoes: u32,
    /// Of those, how many carried other audio (the far end's own).
    pub far_audio: u32,
    /// Packets that did not authenticate.
    pub bad: u32,
    /// Media packets (authenticated or not) from an address other than the one the phone sends
    /// to: XCC answers from where it is reached (symmetric RTP), so these are strays.
    pub elsewhere: u32,
    /// XCC's hole-punching STUN probes, sent until the leg latches; a phone's RTP stack sets
    /// them aside (RFC 7983), and so does this one.
    pub stun: u32,
}

impl Phone {
    /// A phone on `addr` with a random key.
    pub fn bind(addr: SocketAddr) -> Phone {
        let socket = UdpSocket::bind(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        Phone {
            socket,
            key: rand::random(),
        }
    }

    /// The port, for the SDP.
    pub fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    /// Sends 20 ms SRTP packets of a fixed payload to `target` and decrypts what comes back with
    /// `xcc_key`, until `enough` says so or `within` passes.
    pub fn talk(
        &self,
        target: SocketAddr,
        xcc_key: &[u8],
        within: Duration,
        enough: impl Fn(&Heard) -> bool,
    ) -> Heard {
        self.talk_from(1, target, xcc_key, within, enough)
    }

    /// [`Phone::talk`] starting at sequence number `first_seq`: a second talk on the same call
    /// continues above the first, as a real phone would (XCC's SRTP receiver refuses replays).
    pub fn talk_from(
        &self,
        first_seq: u16,
        target: SocketAddr,
        xcc_key: &[u8],
        within: Duration,
        enough: impl Fn(&Heard) -> bool,
    ) -> Heard {
        let payload = [0x5au8; 160];
        let mut tx = srtp_context(&self.key);
        let mut rx = srtp_context(xcc_key);
        let mut heard = Heard::default();
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + within;
        let mut seq = first_seq;
        while Instant::now() < deadline && !enough(&heard) {
            let srtp = tx.encrypt_rtp(&rtp_packet(seq, 0x5151, &payload)).unwrap();
            let _ = self.socket.send_to(&srtp, target);
            seq = seq.wrapping_add(1);
            while let Ok((len, from)) = self.socket.recv_from(&mut buf) {
                if xcc_core::nat::stun::is_stun(&buf[..len]) {
                    heard.stun += 1;
                    continue;
                }
                if from != target {
                    heard.elsewhere += 1;
                }
                match rx.decrypt_rtp(&buf[..len]) {
                    Ok(plain) if plain.len() > 12 => {
                        heard.packets += 1;
                        if plain[12..] == payload[..] {
                            heard.echoes += 1;
                        } else {
                            heard.far_audio += 1;
                        }
                    }
                    _ => heard.bad += 1,
                }
                if enough(&heard) {
                    break;
                }
            }
        }
        heard
    }
}
