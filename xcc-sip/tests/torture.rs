//! RFC 4475 torture messages and real-world PBX/SBC messages against XCC's parser.
//!
//! Fixtures live in `tests/messages/{valid,invalid}/*.sip` as exact wire bytes (CRLF).

use std::fs;
use std::path::PathBuf;

use xcc_sip::{Malformed, Message, Method};

fn fixtures(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/messages")
        .join(kind);
    let mut out: Vec<_> = fs::read_dir(&dir)
        .expect("fixture directory exists")
        .map(|e| {
            let p = e.expect("readable entry").path();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).expect("readable fixture"))
        })
        .collect();
    out.sort();
    out
}

fn parse(name: &str) -> Message {
    let (_, bytes) = fixtures("valid")
        .into_iter()
        .find(|(n, _)| n == name)
        .expect("fixture present");
    Message::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

#[test]
fn every_valid_message_parses() {
    let all = fixtures("valid");
    assert!(all.len() >= 17, "fixture set incomplete: {}", all.len());
    for (name, bytes) in all {
        let msg = Message::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        // Round trip: what we serialise parses again to the same message.
        let again =
            Message::parse(&msg.to_bytes()).unwrap_or_else(|e| panic!("{name} re-parse: {e:?}"));
        assert_eq!(msg, again, "{name} round trip");
    }
}

#[test]
fn every_invalid_message_is_rejected_with_the_right_disposition() {
    // None = drop silently (responses, or no legible top Via); Some(code) = answer.
    let expected: &[(&str, Option<u16>)] = &[
        ("badaspec", Some(400)),
        ("baddn", Some(400)),
        ("badinv01", None),
        ("badvers", Some(505)),
        ("bigcode", None),
        ("clerr", Some(400)),
        ("escruri", Some(400)),
        ("ltgtruri", Some(400)),
        ("lwsruri", Some(400)),
        ("lwsstart", Some(400)),
        ("mismatch01", Some(400)),
        ("mismatch02", Some(400)),
        ("ncl", Some(400)),
        ("quotbal", Some(400)),
        ("regbadct", Some(400)),
        ("scalar02", Some(400)),
        ("scalarlg", None),
        ("trws", Some(400)),
    ];
    let all = fixtures("invalid");
    assert_eq!(all.len(), expected.len());
    for (name, bytes) in all {
        let want = expected
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no expectation for {name}"))
            .1;
        let err = Message::parse(&bytes).expect_err(&name);
        assert_eq!(err.answer_status(), want, "{name}: {err:?}");
    }
}

#[test]
fn wsinv_folding_compact_forms_and_lws() {
    let Message::Request(r) = parse("wsinv") else {
        panic!("request")
    };
    let h = &r.headers;
    assert_eq!(r.uri, "sip:vivekg@chair-dnrc.example.com;unknownparam");
    assert_eq!(h.via.len(), 3);
    assert_eq!(h.via[0].branch(), Some("390skdjuw"));
    assert_eq!(h.via[1].transport, "TCP");
    assert_eq!(h.via[2].branch(), Some("z9hG4bK30239"));
    assert_eq!(h.to.tag(), Some("1918181833n"));
    assert_eq!(h.from.tag(), Some("98asjd8"));
    assert_eq!(h.max_forwards, Some(68));
    assert_eq!((h.cseq.seq, h.cseq.method.as_str()), (9, "INVITE"));
    assert_eq!(h.contact.len(), 1);
    assert_eq!(h.route.len(), 1);
    assert_eq!(h.other("Subject"), Some(""));
    assert_eq!(
        h.other("NewFangledHeader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(r.body.len(), 150);
}

#[test]
fn dblreq_ignores_trailing_octets() {
    let Message::Request(r) = parse("dblreq") else {
        panic!("request")
    };
    assert_eq!(r.method, Method::Register);
    assert!(r.body.is_empty());
}

#[test]
fn escaped_uris_are_kept_verbatim() {
    let Message::Request(r) = parse("esc01") else {
        panic!("request")
    };
    assert_eq!(r.uri, "sip:sips%3Auser%40example.com@example.net");
    assert!(
        String::from_utf8(r.to_bytes())
            .unwrap()
            .starts_with("INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0\r\n")
    );
    let Message::Request(r) = parse("esc02") else {
        panic!("request")
    };
    assert_eq!(r.method, Method::Other("RE%47IST%45R".into()));
    assert_eq!(r.headers.contact.len(), 2, "C%6Fntact is not Contact");
}

#[test]
fn real_world_pbx_messages() {
    let Message::Request(r) = parse("rw_asterisk_invite") else {
        panic!("request")
    };
    assert_eq!(r.headers.top_via().unwrap().rport(), Some(None));
    assert!(
        std::str::from_utf8(&r.body)
            .unwrap()
            .contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80")
    );
    let Message::Response(r) = parse("rw_407_folded") else {
        panic!("response")
    };
    assert_eq!(r.status, 407);
    assert_eq!(
        r.headers.other("Proxy-Authenticate"),
        Some(
            r#"Digest algorithm=MD5, realm="asterisk", nonce="4b2a9f8e", qop="auth", opaque="5ccc069c403ebaf9f0171e9517f40e41""#
        )
    );
    let Message::Request(r) = parse("rw_compact_bye") else {
        panic!("request")
    };
    assert_eq!(r.headers.call_id, "6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
    assert_eq!(r.headers.to.tag(), Some("0a6c2f4e"));
    let Message::Response(r) = parse("rw_cisco_183") else {
        panic!("response")
    };
    assert_eq!(r.headers.record_route.len(), 2);
    assert_eq!(r.body.len(), r.content_length());
}

#[test]
fn malformed_reasons_are_specific() {
    let (_, b) = fixtures("invalid")
        .into_iter()
        .find(|(n, _)| n == "escruri")
        .unwrap();
    assert_eq!(
        Message::parse(&b).unwrap_err().reason,
        Malformed::RequestUri
    );
    let (_, b) = fixtures("invalid")
        .into_iter()
        .find(|(n, _)| n == "clerr")
        .unwrap();
    assert_eq!(Message::parse(&b).unwrap_err().reason, Malformed::Truncated);
}

/// Found by the `parse_message` fuzz target: a folded value whose first line is empty must not
/// keep a leading space (it broke the serialise/re-parse round trip).
#[test]
fn folded_value_with_empty_first_line_has_no_leading_space() {
    let raw = b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nX-Thing:\r\n   folded value\r\nContent-Length: 0\r\n\r\n";
    let msg = Message::parse(raw).unwrap();
    assert_eq!(msg.headers().other("X-Thing"), Some("folded value"));
    assert_eq!(Message::parse(&msg.to_bytes()).unwrap(), msg);
}
