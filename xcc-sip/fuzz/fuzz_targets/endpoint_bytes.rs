//! Datagrams into the transaction layer with a moving clock: no panic, every transmit parses.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use xcc_sip::endpoint::{Endpoint, Peer};
use xcc_sip::transaction::Timers;
use xcc_sip::transport::Transport;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut ep = Endpoint::new(Timers::default());
    let peer = Peer {
        addr: "127.0.0.1:5060".parse().expect("literal"),
        transport: Transport::Udp,
    };
    for (i, datagram) in data.split(|&b| b == 0xff).enumerate() {
        let now = start + Duration::from_millis(500 * i as u64);
        ep.handle_bytes(now, peer, datagram);
        ep.handle_timeout(now);
        while let Some(t) = ep.poll_transmit() {
            xcc_sip::Message::parse(&t.bytes).ok();
        }
        while ep.poll_event().is_some() {}
    }
});
