//! Stream framing is independent of how TCP chops the bytes: every valid fixture, concatenated
//! with keepalives in between and delivered in random-sized reads, frames into exactly the
//! messages a datagram parse gives.

use std::fs;
use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xcc_sip::Message;
use xcc_sip::framing::{Frame, StreamFramer};

/// Valid fixtures whose Content-Length covers the whole body (stream framing needs it).
fn stream_fixtures() -> Vec<(Vec<u8>, Message)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/messages/valid");
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("fixtures") {
        let bytes = fs::read(e.expect("entry").path()).expect("fixture");
        let msg = Message::parse(&bytes).expect("valid fixture");
        // Re-serialise: exact Content-Length, no trailing octets (dblreq has some).
        let wire = msg.to_bytes();
        out.push((wire, msg));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn random_read_sizes_frame_identically() {
    let fixtures = stream_fixtures();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    for round in 0..50 {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..20 {
            let (wire, msg) = &fixtures[rng.random_range(0..fixtures.len())];
            if rng.random_bool(0.2) {
                stream.extend_from_slice(b"\r\n\r\n");
                expected.push(None);
            }
            stream.extend_from_slice(wire);
            expected.push(Some(msg.clone()));
        }
        let mut framer = StreamFramer::default();
        let mut got = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let n = rng.random_range(1..=1500).min(stream.len() - at);
            framer.push(&stream[at..at + n]);
            at += n;
            while let Some(f) = framer.poll_frame().expect("no framing error") {
                got.push(match f {
                    Frame::Message(m) => Some(*m),
                    Frame::Ping => None,
                    Frame::Malformed(e) => panic!("round {round}: {e:?}"),
                });
            }
        }
        assert_eq!(framer.pending(), 0);
        assert_eq!(got, expected, "round {round}");
    }
}
