//! Any datagram: parse never panics, and what parses re-serialises to something that parses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = xcc_sip::Message::parse(data) {
        let again = xcc_sip::Message::parse(&msg.to_bytes()).expect("serialised form re-parses");
        assert_eq!(msg, again);
    }
});
