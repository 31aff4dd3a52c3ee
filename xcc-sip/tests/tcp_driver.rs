//! The async TCP shell over real loopback connections: framing across reads, several messages
//! per write, CRLF keepalive pong, responses on the same connection, oversize close, and a
//! driver-to-driver round trip that opens a connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use xcc_sip::driver::{Command, DSCP_CS3, bind_tcp, run_tcp};
use xcc_sip::endpoint::{Endpoint, EndpointEvent};
use xcc_sip::transaction::Timers;
use xcc_sip::{Message, Response};

const WAIT: Duration = Duration::from_secs(5);

fn options(from: SocketAddr, to: SocketAddr, branch: &str) -> String {
    format!(
        "OPTIONS sip:b@{to} SIP/2.0\r\nVia: SIP/2.0/TCP {from};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:a@{from}>;tag=a\r\nTo: <sip:b@{to}>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

struct Side {
    addr: SocketAddr,
    cmd: mpsc::Sender<Command>,
    ev: mpsc::Receiver<EndpointEvent>,
}

fn start() -> Side {
    let l = bind_tcp("127.0.0.1:0".parse().unwrap(), DSCP_CS3).unwrap();
    let addr = l.local_addr().unwrap();
    let (cmd, cmd_rx) = mpsc::channel(16);
    let (ev_tx, ev) = mpsc::channel(16);
    tokio::spawn(run_tcp(l, Endpoint::new(Timers::default()), cmd_rx, ev_tx));
    Side { addr, cmd, ev }
}

async fn next_request(side: &mut Side) -> (xcc_sip::transaction::TransactionKey, xcc_sip::Request) {
    match tokio::time::timeout(WAIT, side.ev.recv())
        .await
        .unwrap()
        .unwrap()
    {
        EndpointEvent::Request { key, request, .. } => (key, *request),
        ev => panic!("{ev:?}"),
    }
}

#[tokio::test]
async fn raw_client_framing_keepalive_and_response_on_same_connection() {
    let mut b = start();
    let mut c = TcpStream::connect(b.addr).await.unwrap();
    let me = c.local_addr().unwrap();

    c.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(WAIT, c.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");

    let one = options(me, b.addr, "z9hG4bKt1");
    let two = options(me, b.addr, "z9hG4bKt2");
    c.write_all(&one.as_bytes()[..40]).await.unwrap();
    c.flush().await.unwrap();
    c.write_all(format!("{}{two}", &one[40..]).as_bytes())
        .await
        .unwrap();
    let (k1, r1) = next_request(&mut b).await;
    let (_, r2) = next_request(&mut b).await;
    assert_eq!(
        (r1.headers.call_id.as_str(), r2.headers.call_id.as_str()),
        ("z9hG4bKt1", "z9hG4bKt2")
    );

    let ok = Response::for_request(&r1, 200, "OK", Some("b"));
    b.cmd
        .send(Command::SendResponse {
            key: k1,
            response: Box::new(ok),
        })
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let Message::Response(r) = Message::parse(&got).unwrap() else {
        panic!()
    };
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn oversize_stream_is_closed() {
    let b = start();
    let mut c = TcpStream::connect(b.addr).await.unwrap();
    // Writes may fail once the server closes: only the close matters.
    let _ = c.write_all(&vec![b'A'; 200 * 1024]).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, c.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "expected close, got {n:?}");
}

#[tokio::test]
async fn driver_to_driver_round_trip_opens_a_connection() {
    let mut a = start();
    let mut b = start();
    let Message::Request(req) =
        Message::parse(options(a.addr, b.addr, "z9hG4bKdd").as_bytes()).unwrap()
    else {
        panic!()
    };
    a.cmd
        .send(Command::SendRequest {
            request: Box::new(req),
            dest: b.addr,
        })
        .await
        .unwrap();
    let (key, r) = next_request(&mut b).await;
    b.cmd
        .send(Command::SendResponse {
            key,
            response: Box::new(Response::for_request(&r, 200, "OK", Some("b"))),
        })
        .await
        .unwrap();
    let ev = tokio::time::timeout(WAIT, a.ev.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ev, EndpointEvent::Response { response, .. } if response.status == 200));
}

#[tokio::test]
async fn unreachable_peer_fails_fast_with_transport_error() {
    let mut a = start();
    // Bind then drop a listener: nothing listens on that loopback port any more.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let Message::Request(req) =
        Message::parse(options(a.addr, dead, "z9hG4bKdead").as_bytes()).unwrap()
    else {
        panic!()
    };
    a.cmd
        .send(Command::SendRequest {
            request: Box::new(req),
            dest: dead,
        })
        .await
        .unwrap();
    let ev = tokio::time::timeout(WAIT, a.ev.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ev, EndpointEvent::TransportError { .. }), "{ev:?}");
}
