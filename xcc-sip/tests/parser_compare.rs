//! Measures the candidate parsers against the same fixture set and prints the table recorded in
//! `docs/sip.md` (`cargo test -p xcc-sip --test parser_compare -- --nocapture`).
//!
//! "Pass" means: a valid fixture parses *and* its Via, From, To, Call-ID, CSeq (and Content-Length
//! against the body) are legible through the crate's typed API, since a B2BUA needs all of them;
//! an invalid fixture is rejected at one of those steps.

use std::fs;
use std::path::PathBuf;

use bytes::Bytes;
use ezk_sip_types::Name;
use ezk_sip_types::header::typed::{CSeq, CallID, ContentLength, FromTo, Via};
use ezk_sip_types::msg::{Line, MessageLine, PullParser};
use ezk_sip_types::parse::Parse;
use rsip::prelude::{HeadersExt, ToTypedHeader};

fn fixtures() -> Vec<(String, bool, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/messages");
    let mut out = Vec::new();
    for (kind, valid) in [("valid", true), ("invalid", false)] {
        for e in fs::read_dir(root.join(kind)).expect("fixture dir") {
            let p = e.expect("entry").path();
            let name = p.file_stem().expect("named").to_string_lossy().into_owned();
            out.push((name, valid, fs::read(&p).expect("fixture")));
        }
    }
    out.sort();
    out
}

fn ezk_accepts(bytes: &[u8]) -> bool {
    let src = Bytes::copy_from_slice(bytes);
    let mut p = PullParser::new(&src, 0);
    let Some(Ok(first)) = p.next() else {
        return false;
    };
    let Ok(first) = std::str::from_utf8(first) else {
        return false;
    };
    let Ok((rest, line)) = MessageLine::parse(&src)(first) else {
        return false;
    };
    if !rest.is_empty() {
        return false;
    }
    let mut headers = ezk_sip_types::Headers::new();
    for l in p.by_ref() {
        let Ok(l) = l else { return false };
        let Ok(s) = std::str::from_utf8(l) else {
            return false;
        };
        let Ok((_, line)) = Line::parse(&src, s) else {
            return false;
        };
        headers.insert(line.name, line.value);
    }
    let body = &src[p.head_end()..];
    let typed = headers.get_named::<Vec<Via>>().is_ok_and(|v| !v.is_empty())
        && headers.get::<FromTo>(Name::FROM).is_ok()
        && headers.get::<FromTo>(Name::TO).is_ok()
        && headers.get_named::<CallID>().is_ok();
    let Ok(cseq) = headers.get_named::<CSeq>() else {
        return false;
    };
    if let Some(m) = line.request_method()
        && *m != cseq.method
    {
        return false;
    }
    let len_ok = match headers.try_get_named::<ContentLength>() {
        None => true,
        Some(Ok(ContentLength(n))) => body.len() >= n,
        Some(Err(_)) => false,
    };
    typed && len_ok
}

fn rsip_accepts(bytes: &[u8]) -> bool {
    let Ok(msg) = rsip::SipMessage::try_from(bytes) else {
        return false;
    };
    let typed = msg.via_header().is_ok_and(|v| v.typed().is_ok())
        && msg.from_header().is_ok_and(|v| v.typed().is_ok())
        && msg.to_header().is_ok_and(|v| v.typed().is_ok())
        && msg.call_id_header().is_ok();
    let Ok(Ok(cseq)) = msg.cseq_header().map(|c| c.typed()) else {
        return false;
    };
    if let rsip::SipMessage::Request(r) = &msg
        && r.method != cseq.method
    {
        return false;
    }
    typed
}

/// One candidate parser's verdict on a fixture.
type Accepts = fn(&[u8]) -> bool;

fn xcc_accepts(bytes: &[u8]) -> bool {
    xcc_sip::Message::parse(bytes).is_ok()
}

#[test]
fn parser_comparison_table() {
    let all = fixtures();
    let parsers: [(&str, Accepts); 3] = [
        ("xcc-sip", xcc_accepts),
        ("ezk-sip-types 0.6.5", ezk_accepts),
        ("rsip 0.4.0", rsip_accepts),
    ];
    println!(
        "| fixture | expected | {} |",
        parsers.map(|p| p.0).join(" | ")
    );
    println!("|---|---|{}", "---|".repeat(parsers.len()));
    let mut score = [0usize; 3];
    for (name, valid, bytes) in &all {
        let row: Vec<&str> = parsers
            .iter()
            .enumerate()
            .map(|(i, (_, f))| {
                // A panic inside a third-party parser counts as a failure, not a test abort.
                let ok = std::panic::catch_unwind(|| f(bytes)).map(|acc| acc == *valid);
                match ok {
                    Ok(true) => {
                        score[i] += 1;
                        "pass"
                    }
                    Ok(false) => "fail",
                    Err(_) => "PANIC",
                }
            })
            .collect();
        let exp = if *valid { "accept" } else { "reject" };
        println!("| {name} | {exp} | {} |", row.join(" | "));
    }
    println!(
        "| **total** | {} | {} |",
        all.len(),
        score.map(|s| format!("{s}/{}", all.len())).join(" | ")
    );
    assert_eq!(score[0], all.len(), "xcc-sip must pass the whole set");
}
