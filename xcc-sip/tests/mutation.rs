//! No input panics the parser: seeded random mutations of every fixture.

use std::fs;
use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xcc_sip::Message;

const PER_FIXTURE: usize = 400;

#[test]
fn seeded_mutations_never_panic() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/messages");
    let mut seeds = Vec::new();
    for kind in ["valid", "invalid"] {
        for e in fs::read_dir(root.join(kind)).expect("fixture dir") {
            seeds.push(fs::read(e.expect("entry").path()).expect("fixture"));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_5eed);
    let interesting: &[&[u8]] = &[
        b"\r\n",
        b"\r\n\r\n",
        b" ",
        b"\t",
        b";",
        b",",
        b":",
        b"<",
        b">",
        b"\"",
        b"\\",
        b"%",
        b"@",
        b"=",
        b"/",
        b"\0",
        b"\xff",
        b"999999999999999999999",
        b"SIP/2.0",
        b"\r\n ",
    ];
    let mut parsed = 0usize;
    let total = seeds.len() * PER_FIXTURE;
    for i in 0..total {
        let mut m = seeds[i % seeds.len()].clone();
        for _ in 0..rng.random_range(1..=8) {
            if m.is_empty() {
                break;
            }
            let at = rng.random_range(0..m.len());
            match rng.random_range(0..5) {
                0 => m[at] ^= 1 << rng.random_range(0..8),
                1 => {
                    m.remove(at);
                }
                2 => {
                    let s = interesting[rng.random_range(0..interesting.len())];
                    m.splice(at..at, s.iter().copied());
                }
                3 => m.truncate(at),
                _ => m[at] = rng.random(),
            }
        }
        if let Ok(msg) = Message::parse(&m) {
            parsed += 1;
            // Whatever we accept we must also be able to serialise and re-read.
            let out = msg.to_bytes();
            if let Err(e) = Message::parse(&out) {
                panic!(
                    "{e:?}\n{}\n----\n{}",
                    String::from_utf8_lossy(&m),
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }
    // The mutations must exercise both the accepting and the rejecting paths.
    assert!(
        parsed > total / 20 && parsed < total,
        "parsed {parsed} of {total}"
    );
}

/// Inputs the fuzz targets once broke on (`fuzz/regressions/`) stay fixed.
#[test]
fn fuzz_regressions_round_trip() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut n = 0;
    for e in fs::read_dir(dir).expect("regressions dir") {
        let bytes = fs::read(e.expect("entry").path()).expect("regression input");
        if let Ok(msg) = Message::parse(&bytes) {
            assert_eq!(Message::parse(&msg.to_bytes()).expect("re-parses"), msg);
        }
        n += 1;
    }
    assert!(n >= 1);
}
