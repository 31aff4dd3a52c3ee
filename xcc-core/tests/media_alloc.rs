//! The packet path allocates nothing: thousands of packets through a running engine in steady
//! state, with a counting global allocator. Alone in its test binary so no other test allocates
//! during the measured window.

mod media_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use media_support::*;
use xcc_core::ids::LegSide;
use xcc_core::srtp::SrtpSuite;

/// Counts every allocation in the process.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_forwarding_allocates_nothing() {
    let (engine, _events) = engine(27000, 27049, |c| c.workers = 1);
    let ctl = engine.control();
    let call = ctl.allocate().unwrap();
    let (client, pbx) = (Phone::new(), Phone::new());
    let mut sp = SrtpPhone::new(SrtpSuite::AesCm128HmacSha1_80);
    ctl.configure_leg(
        call.call,
        LegSide::Client,
        leg_to(&client, Some(sp.keys.clone())),
    )
    .unwrap();
    ctl.configure_leg(call.call, LegSide::Pbx, leg_to(&pbx, None))
        .unwrap();
    let [c, p] = call.ports;
    let (c_rtp, p_rtp) = (local(c.rtp), local(p.rtp));

    let mut up = [0u8; 256];
    let mut down = [0u8; 256];
    let mut rx = [0u8; 2048];
    let mut round = |seq: u16| {
        // Buffers are reused; the phone's in-place SRTP does not allocate either.
        up[..172].copy_from_slice(&rtp_packet_fixed(seq, 0xc1));
        let n = sp.tx.protect_rtp(&mut up, 172).unwrap();
        client.rtp.send_to(&up[..n], c_rtp).unwrap();
        let (got, _) = pbx.rtp.recv_from(&mut rx).unwrap();
        assert_eq!(got, 172);
        down[..172].copy_from_slice(&rtp_packet_fixed(seq, 0xb2));
        pbx.rtp.send_to(&down[..172], p_rtp).unwrap();
        let (got, _) = client.rtp.recv_from(&mut rx).unwrap();
        assert_eq!(got, 182);
    };
    // Warm-up: latching (events), first-use initialisation anywhere in std.
    for seq in 1..=200 {
        round(seq);
    }
    let before = ALLOCS.load(Ordering::SeqCst);
    for seq in 201..=5200 {
        round(seq);
    }
    let allocated = ALLOCS.load(Ordering::SeqCst) - before;
    assert_eq!(allocated, 0, "allocations while forwarding 10,000 packets");
    // The forwarding really happened through the engine's SRTP leg (snapshots lag one tick).
    wait_for(std::time::Duration::from_secs(5), || {
        let c = ctl.snapshot(call.call).unwrap().legs[0].counters;
        (c.packets_in == 5200 && c.packets_out == 5200).then_some(())
    });
    engine.shutdown();
}

/// `rtp_packet` without the heap.
fn rtp_packet_fixed(seq: u16, ssrc: u32) -> [u8; 172] {
    let mut p = [0u8; 172];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    for (i, b) in p[12..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}
