//! One complete call through the sans-IO B2BUA (`xcc_sip::b2bua`) with a fake media plane:
//! server INVITE -> 100 + INVITE to the PBX -> 200 -> ACK + 200 to the server -> ACK -> BYE ->
//! 200 + BYE to the PBX -> 200, then 40 s of virtual time so every transaction timer fires and
//! the tables empty again. 11 SIP messages cross the B2BUA per call (5 in, 6 out).
//!
//! The scripted peers (tests/b2bua_common) parse what XCC sends and build their answers, so
//! their work is inside the measurement. Reference from the same run: parsing and serialising
//! the 11 messages of one call (`Message::parse` + `to_bytes`), the least any SIP stack does.
//! `held_1000` repeats the call while 1000 answered calls sit in the B2BUA.
//!
//! `cargo bench -p xcc-sip --bench b2bua_call`

#[path = "../tests/b2bua_common/mod.rs"]
mod harness;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use harness::*;
use xcc_sip::b2bua::Side;
use xcc_sip::{Message, Method};

/// Messages crossing the B2BUA in one call.
const MESSAGES: u64 = 11;

fn one_call(h: &mut Harness, n: u64) {
    let (mut server, _) = established(h, &format!("bench-{n}"));
    let via = h.via(Side::Server);
    h.send(
        Side::Server,
        &server.new_request(Method::Bye, via, Bytes::new()),
    );
    let bye = h.request(Side::Pbx, Method::Bye);
    h.reply(Side::Pbx, &bye, 200, None, None);
    h.clear();
    h.advance(Duration::from_secs(40));
    h.take_events();
}

fn bench(c: &mut Criterion) {
    // The reference messages: one call, recorded.
    let mut h = Harness::default();
    h.record = true;
    one_call(&mut h, 0);
    let wire: Vec<Vec<u8>> = std::mem::take(&mut h.wire);
    assert_eq!(
        wire.len() as u64,
        MESSAGES,
        "the call's message count changed"
    );
    h.check_clean();

    let mut g = c.benchmark_group("b2bua_call");
    g.throughput(Throughput::Elements(MESSAGES));
    g.bench_function("reference_parse_and_serialise_11", |b| {
        b.iter(|| {
            for m in &wire {
                let msg = Message::parse(black_box(m)).expect("recorded messages parse");
                black_box(msg.to_bytes());
            }
        });
    });
    for held in [0usize, 1000] {
        let mut h = Harness::default();
        for i in 0..held {
            established(&mut h, &format!("held-{i}"));
        }
        h.advance(Duration::from_secs(40));
        h.take_events();
        let mut n = 0u64;
        g.bench_function(format!("setup_teardown_held_{held}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    n += 1;
                    one_call(&mut h, n);
                }
                start.elapsed()
            });
        });
        assert_eq!(h.b2bua.calls(), held, "bench calls leaked");
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
