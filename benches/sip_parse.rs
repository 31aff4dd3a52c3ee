//! SIP parse cost: XCC's own parser beside ezk-sip-types 0.6.5 and rsip 0.4.0 on the same real
//! messages. Each side does what a B2BUA needs: frame the message and type Via, From, To,
//! Call-ID and CSeq (XCC's parser does all of it in `Message::parse`).
//!
//! `cargo bench --bench sip_parse`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use ezk_sip_types::Name;
use ezk_sip_types::header::typed::{CSeq, CallID, FromTo, Via};
use ezk_sip_types::msg::{Line, MessageLine, PullParser};
use ezk_sip_types::parse::Parse;
use rsip::prelude::{HeadersExt, ToTypedHeader};

const INVITE: &[u8] = include_bytes!("../xcc-sip/tests/messages/valid/rw_asterisk_invite.sip");
const OK_200: &[u8] = include_bytes!("../xcc-sip/tests/messages/valid/rw_asterisk_200ok.sip");

fn ezk(bytes: &[u8]) -> bool {
    let src = Bytes::copy_from_slice(bytes);
    let mut p = PullParser::new(&src, 0);
    let Some(Ok(first)) = p.next() else {
        return false;
    };
    let Ok(first) = std::str::from_utf8(first) else {
        return false;
    };
    if MessageLine::parse(&src)(first).is_err() {
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
    black_box(&src[p.head_end()..]);
    headers.get_named::<Vec<Via>>().is_ok()
        && headers.get::<FromTo>(Name::FROM).is_ok()
        && headers.get::<FromTo>(Name::TO).is_ok()
        && headers.get_named::<CallID>().is_ok()
        && headers.get_named::<CSeq>().is_ok()
}

fn rsip(bytes: &[u8]) -> bool {
    let Ok(msg) = rsip::SipMessage::try_from(bytes) else {
        return false;
    };
    msg.via_header().is_ok_and(|v| v.typed().is_ok())
        && msg.from_header().is_ok_and(|v| v.typed().is_ok())
        && msg.to_header().is_ok_and(|v| v.typed().is_ok())
        && msg.call_id_header().is_ok()
        && msg.cseq_header().is_ok_and(|v| v.typed().is_ok())
}

fn bench(c: &mut Criterion) {
    assert!(xcc_sip::Message::parse(INVITE).is_ok() && ezk(INVITE) && rsip(INVITE));
    assert!(xcc_sip::Message::parse(OK_200).is_ok() && ezk(OK_200) && rsip(OK_200));
    for (name, msg) in [("invite_sdes", INVITE), ("200ok_sdes", OK_200)] {
        let mut g = c.benchmark_group(format!("sip_parse/{name}"));
        g.bench_function("xcc-sip", |b| {
            b.iter(|| xcc_sip::Message::parse(black_box(msg)).is_ok())
        });
        g.bench_function("ezk-sip-types", |b| b.iter(|| ezk(black_box(msg))));
        g.bench_function("rsip", |b| b.iter(|| rsip(black_box(msg))));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
