//! Per-packet cost of relaying a client leg through XCC's own TURN allocation, in process: what
//! the worker adds to every packet of a relayed leg (`ClientRelay::unwrap` / `ClientRelay::wrap`,
//! which call the sans-IO [`TurnClient`] below), on a 182-byte SRTP packet (172-byte RTP + 10-byte
//! HMAC-SHA1-80 tag), no sockets.
//!
//! - unwrap: `TurnClient::handle_datagram` on a Data indication (36 bytes of header and
//!   XOR-PEER-ADDRESS + DATA, 2 of padding) or a ChannelData frame (4 bytes of header), then the
//!   payload's move that `ClientRelay::unwrap` does to the buffer start (here into a second
//!   buffer, so the input stays intact between iterations: the same 182-byte copy).
//! - wrap: `TurnClient::wrap_send` of the payload as a Send indication (no channel bound yet) or
//!   as ChannelData (after the latch bound one).
//!
//! References in the same run: a plain 182-byte copy (the least any relay must do to move the
//! payload), and the SRTP transform every packet of the leg pays anyway (`SrtpContext::
//! unprotect_rtp` on the same 182-byte packet, a fresh sequence number every call).
//!
//! Run: `cargo bench --bench turn_relay -- --warm-up-time 1 --measurement-time 3`

mod support;

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use support::{RTP_LEN, rtp, unprotect_only};
use xcc_core::nat::Retransmission;
use xcc_core::nat::stun::{Message, TransactionId, Writer, attr};
use xcc_core::nat::turn::{TurnClient, TurnConfig, TurnInput, TurnTransport};
use xcc_core::srtp::{KeyingMaterial, SrtpContext, SrtpPolicy, SrtpSuite};

/// The RTP packet ([`RTP_LEN`]: header + 20 ms of G.711) as SRTP with AES_CM_128_HMAC_SHA1_80.
const SRTP_LEN: usize = RTP_LEN + 10;

/// Data indication: message type 0x0017 (RFC 8656 §11.6).
const DATA_INDICATION: u16 = 0x0017;
/// Allocate success response (RFC 8656 §7).
const ALLOCATE_SUCCESS: u16 = 0x0103;
/// ChannelBind success response (RFC 8656 §11).
const CHANNEL_BIND_SUCCESS: u16 = 0x0109;

fn server() -> SocketAddr {
    "127.0.0.1:3478".parse().expect("literal")
}

fn relayed() -> SocketAddr {
    "127.0.0.1:50000".parse().expect("literal")
}

/// The phone, latched: ChannelData once its channel is bound.
fn phone() -> SocketAddr {
    "192.0.2.10:5000".parse().expect("literal")
}

/// A peer without a channel: Send indications.
fn unbound_peer() -> SocketAddr {
    "192.0.2.11:5000".parse().expect("literal")
}

/// Answers the request `client` has in flight with a success of type `msg_type` whose attributes
/// `attrs` writes, the way a server without credentials would.
fn answer(
    client: &mut TurnClient,
    now: Instant,
    rng: &mut StdRng,
    msg_type: u16,
    attrs: impl FnOnce(&mut Writer<'_>),
) {
    client.handle_timeout(now, rng);
    let (to, request) = client.poll_transmit().expect("a request in flight");
    let id = Message::parse(request)
        .expect("valid request")
        .transaction_id();
    let mut buf = [0u8; 512];
    let mut w = Writer::new(&mut buf, msg_type, id).expect("room");
    attrs(&mut w);
    let n = w.finish();
    let got = client.handle_datagram(now, to, &buf[..n], rng);
    assert_eq!(got, TurnInput::Consumed, "the answer was taken");
}

/// A client with its allocation made and a channel bound to [`phone`].
fn allocated_client(now: Instant) -> TurnClient {
    let mut rng = StdRng::seed_from_u64(7);
    let config = TurnConfig {
        server: server(),
        transport: TurnTransport::Udp,
        username: "xcc".into(),
        password: "secret".into(),
        lifetime: Duration::from_secs(600),
        retransmission: Retransmission::FAILOVER,
    };
    let mut client = TurnClient::new(config, now);
    answer(&mut client, now, &mut rng, ALLOCATE_SUCCESS, |w| {
        w.xor_address(attr::XOR_RELAYED_ADDRESS, relayed())
            .expect("room");
        w.attribute(attr::LIFETIME, &600u32.to_be_bytes())
            .expect("room");
    });
    assert_eq!(client.relayed(), Some(relayed()));
    let number = client.bind_channel(now, phone()).expect("a free channel");
    answer(&mut client, now, &mut rng, CHANNEL_BIND_SUCCESS, |_| {});
    assert_eq!(number, 0x4000);
    client
}

/// A 182-byte SRTP packet (its content does not matter to TURN).
fn srtp_packet() -> [u8; SRTP_LEN] {
    let keys = KeyingMaterial::generate(SrtpSuite::AesCm128HmacSha1_80);
    let mut ctx = SrtpContext::new(&keys, SrtpPolicy::default());
    let mut buf = [0u8; 256];
    buf[..RTP_LEN].copy_from_slice(&rtp(1));
    let n = ctx
        .protect_rtp(&mut buf, RTP_LEN)
        .expect("room for the tag");
    assert_eq!(n, SRTP_LEN);
    let mut p = [0u8; SRTP_LEN];
    p.copy_from_slice(&buf[..SRTP_LEN]);
    p
}

fn relay_182(c: &mut Criterion) {
    let mut g = c.benchmark_group("turn_relay_182B");
    let now = Instant::now();
    let payload = srtp_packet();
    let mut rng = StdRng::seed_from_u64(9);

    // What the server sends for the phone's packet: a Data indication, or ChannelData.
    let mut indication = [0u8; 512];
    let mut w =
        Writer::new(&mut indication, DATA_INDICATION, TransactionId([9; 12])).expect("room");
    w.xor_address(attr::XOR_PEER_ADDRESS, phone())
        .expect("room");
    w.attribute(attr::DATA, &payload).expect("room");
    let indication_len = w.finish();
    let mut channel_data = [0u8; 4 + SRTP_LEN];
    channel_data[..2].copy_from_slice(&0x4000u16.to_be_bytes());
    channel_data[2..4].copy_from_slice(&(SRTP_LEN as u16).to_be_bytes());
    channel_data[4..].copy_from_slice(&payload);

    let mut client = allocated_client(now);
    let mut out = [0u8; 2048];
    // Parsed once: the worker has them as `SocketAddr`s.
    let (server, phone, unbound_peer) = (server(), phone(), unbound_peer());

    g.bench_function("reference_copy", |b| {
        b.iter(|| {
            out[..SRTP_LEN].copy_from_slice(black_box(&payload));
            black_box(&out);
        })
    });

    // Reference: the SRTP transform alone, every packet with a fresh sequence number (a repeated
    // one would take the cheap replay-refusal path).
    let keys = KeyingMaterial::generate(SrtpSuite::AesCm128HmacSha1_80);
    g.bench_function("reference_unprotect", |b| {
        b.iter_custom(|iters| unprotect_only(&keys, iters))
    });

    g.bench_function("unwrap_data_indication", |b| {
        b.iter(|| {
            let input = black_box(&indication[..indication_len]);
            match client.handle_datagram(now, server, input, &mut rng) {
                TurnInput::Data { peer, payload } => {
                    out[..payload.len()].copy_from_slice(payload);
                    black_box((peer, &out));
                }
                other => panic!("not media: {other:?}"),
            }
        })
    });

    g.bench_function("unwrap_channel_data", |b| {
        b.iter(|| {
            let input = black_box(&channel_data[..]);
            match client.handle_datagram(now, server, input, &mut rng) {
                TurnInput::Data { peer, payload } => {
                    out[..payload.len()].copy_from_slice(payload);
                    black_box((peer, &out));
                }
                other => panic!("not media: {other:?}"),
            }
        })
    });

    g.bench_function("wrap_send_indication", |b| {
        b.iter(|| {
            let n = client
                .wrap_send(unbound_peer, black_box(&payload), &mut out)
                .expect("room");
            black_box(&out[..n]);
        })
    });

    g.bench_function("wrap_channel_data", |b| {
        b.iter(|| {
            let n = client
                .wrap_send(phone, black_box(&payload), &mut out)
                .expect("room");
            black_box(&out[..n]);
        })
    });
    g.finish();

    // The framing measured above is the one the worker sends.
    let n = client.wrap_send(phone, &payload, &mut out).expect("room");
    assert_eq!(n, 4 + SRTP_LEN, "ChannelData");
    let n = client
        .wrap_send(unbound_peer, &payload, &mut out)
        .expect("room");
    assert_eq!(
        n, indication_len,
        "Send indication, same size as a Data one"
    );
}

criterion_group!(benches, relay_182);
criterion_main!(benches);
