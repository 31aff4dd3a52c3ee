//! Bad input never panics: thousands of seeded random mutations of real-world SDP go through
//! parse, audio, rewrite and print; whatever parses and rewrites must re-parse.

mod sdp_corpus;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xcc_core::media::{Direction, LegPorts};
use xcc_core::sdes::{self, CryptoAttribute};
use xcc_core::sdp::{AudioRewrite, MediaTransport, SessionDescription};
use xcc_core::srtp::SrtpSuite;

/// Fragments that steer mutations towards the parser's decision points.
const FRAGMENTS: [&str; 24] = [
    "=",
    " ",
    "\n",
    "\r",
    "\r\n",
    ":",
    "/",
    "|",
    ";",
    "^",
    "0",
    "9",
    "m=",
    "c=",
    "a=",
    "IP6",
    "0.0.0.0",
    "::",
    "2^",
    "inline:",
    "65536",
    "99999999999999999999",
    "é",
    "\u{0}",
];

fn mutate(rng: &mut ChaCha8Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = bytes.len();
        let at = rng.random_range(0..=len);
        match rng.random_range(0..6) {
            0 if len > 0 => {
                let end = (at + rng.random_range(1..=16)).min(len);
                bytes.drain(at.min(end)..end);
            }
            1 => {
                let fragment = FRAGMENTS[rng.random_range(0..FRAGMENTS.len())];
                bytes.splice(at..at, fragment.bytes());
            }
            2 if at < len => bytes[at] = rng.random(),
            3 => bytes.truncate(at),
            4 if len > 0 => {
                // Duplicate a run of bytes (often a whole line) somewhere else.
                let start = rng.random_range(0..len);
                let end = (start + rng.random_range(1..=64)).min(len);
                let run = bytes[start..end].to_vec();
                bytes.splice(at..at, run);
            }
            _ => bytes.insert(at.min(len), rng.random_range(0x20..0x7f)),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn rewrites() -> [AudioRewrite; 2] {
    [
        AudioRewrite {
            address: "203.0.113.7".parse().unwrap(),
            ports: LegPorts {
                rtp: 30000,
                rtcp: 30001,
            },
            transport: MediaTransport::RtpSavp,
            rtcp_mux: true,
            crypto: vec![CryptoAttribute::generate(1, SrtpSuite::AesCm128HmacSha1_80)],
            direction: Some(Direction::SendOnly),
            rtcp_address: None,
        },
        AudioRewrite {
            address: "2001:db8::1".parse().unwrap(),
            ports: LegPorts {
                rtp: 30002,
                rtcp: 30003,
            },
            transport: MediaTransport::RtpAvp,
            rtcp_mux: false,
            crypto: Vec::new(),
            direction: None,
            rtcp_address: None,
        },
    ]
}

#[test]
fn seeded_mutations_never_panic_and_rewrites_reparse() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5d9_4568);
    let rewrites = rewrites();
    let mut parsed = 0;
    let mut rewritten = 0;
    for iteration in 0..6000 {
        let sample = sdp_corpus::ALL[iteration % sdp_corpus::ALL.len()];
        let sample = if iteration % 2 == 0 {
            sdp_corpus::crlf(sample)
        } else {
            sample.to_owned()
        };
        let text = mutate(&mut rng, &sample);
        let Ok(mut sdp) = SessionDescription::parse(&text) else {
            continue;
        };
        parsed += 1;
        if let Ok(audio) = sdp.audio() {
            let _ = sdes::answer(&audio.cryptos);
        }
        let _ = sdp.origin();
        let _ = format!("{sdp:?}");
        let rw = &rewrites[iteration % 2];
        if sdp.rewrite_audio(rw).is_err() {
            continue;
        }
        rewritten += 1;
        let out = sdp.to_string();
        let again = SessionDescription::parse(&out)
            .unwrap_or_else(|e| panic!("rewritten SDP does not re-parse ({e}):\n{out}"));
        let audio = again
            .audio()
            .unwrap_or_else(|e| panic!("rewritten audio unreadable ({e}):\n{out}"));
        assert_eq!(audio.port, rw.ports.rtp, "{out}");
        assert_eq!(audio.connection, Some(rw.address), "{out}");
        assert_eq!(audio.cryptos, rw.crypto, "{out}");
    }
    // The mutations must leave enough valid input to exercise the rewrite, not only the parser.
    assert!(parsed > 1000, "only {parsed} mutated SDPs parsed");
    assert!(rewritten > 1000, "only {rewritten} mutated SDPs rewritten");
}

#[test]
fn seeded_mutations_of_crypto_values_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(4568);
    let mut valid = 0;
    for iteration in 0..6000 {
        let suite = SrtpSuite::ALL[iteration % SrtpSuite::ALL.len()];
        let mut attribute = CryptoAttribute::generate(1, suite);
        attribute.lifetime = Some(1 << 31);
        let text = mutate(&mut rng, &attribute.to_string());
        if let Ok(parsed) = CryptoAttribute::parse(&text) {
            valid += 1;
            assert_eq!(
                CryptoAttribute::parse(&parsed.to_string()).unwrap(),
                parsed,
                "{text}"
            );
        }
    }
    assert!(valid > 20, "only {valid} mutated attributes parsed");
}
