//! The async UDP shell over real loopback sockets: an OPTIONS round trip between two drivers,
//! and DSCP CS3 on the bound socket.

use std::time::Duration;

use tokio::sync::mpsc;
use xcc_sip::driver::{Command, DSCP_CS3, bind_udp, run_udp};
use xcc_sip::endpoint::{Endpoint, EndpointEvent};
use xcc_sip::transaction::Timers;
use xcc_sip::{Message, Response};

#[tokio::test]
async fn options_round_trip_over_loopback() {
    let sa = bind_udp("127.0.0.1:0".parse().unwrap(), DSCP_CS3).unwrap();
    let sb = bind_udp("127.0.0.1:0".parse().unwrap(), DSCP_CS3).unwrap();
    assert_eq!(
        socket2::SockRef::from(&sa).tos_v4().unwrap(),
        u32::from(DSCP_CS3) << 2
    );
    let (a_addr, b_addr) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());

    let (a_cmd, a_cmd_rx) = mpsc::channel(16);
    let (a_ev_tx, mut a_ev) = mpsc::channel(16);
    let (b_cmd, b_cmd_rx) = mpsc::channel(16);
    let (b_ev_tx, mut b_ev) = mpsc::channel(16);
    let a = tokio::spawn(run_udp(
        sa,
        Endpoint::new(Timers::default()),
        a_cmd_rx,
        a_ev_tx,
    ));
    let b = tokio::spawn(run_udp(
        sb,
        Endpoint::new(Timers::default()),
        b_cmd_rx,
        b_ev_tx,
    ));

    let raw = format!(
        "OPTIONS sip:b@{b_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {a_addr};rport;branch=z9hG4bKdrv1\r\nMax-Forwards: 70\r\nFrom: <sip:a@{a_addr}>;tag=a\r\nTo: <sip:b@{b_addr}>\r\nCall-ID: drv\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let Message::Request(req) = Message::parse(raw.as_bytes()).unwrap() else {
        panic!()
    };
    a_cmd
        .send(Command::SendRequest {
            request: Box::new(req),
            dest: b_addr,
        })
        .await
        .unwrap();

    let deadline = Duration::from_secs(5);
    let ev = tokio::time::timeout(deadline, b_ev.recv())
        .await
        .unwrap()
        .unwrap();
    let EndpointEvent::Request {
        key,
        request,
        source,
    } = ev
    else {
        panic!("{ev:?}")
    };
    assert_eq!(source.addr, a_addr);
    assert_eq!(request.headers.via[0].rport(), Some(Some(a_addr.port())));
    let ok = Response::for_request(&request, 200, "OK", Some("b"));
    b_cmd
        .send(Command::SendResponse {
            key,
            response: Box::new(ok),
        })
        .await
        .unwrap();
    let ev = tokio::time::timeout(deadline, a_ev.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ev, EndpointEvent::Response { response, .. } if response.status == 200));

    drop((a_cmd, b_cmd));
    let (ea, eb) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    // Timer K / J are still holding the transactions: nothing was dropped early.
    assert_eq!((ea.len(), eb.len()), (1, 1));
}
