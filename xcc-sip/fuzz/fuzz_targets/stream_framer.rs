//! Any byte stream cut at fuzzer-chosen points: the framer never panics and never buffers more
//! than its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xcc_sip::framing::StreamFramer;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut).max(1);
    let mut framer = StreamFramer::new(4096);
    for chunk in rest.chunks(step) {
        framer.push(chunk);
        loop {
            match framer.poll_frame() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
