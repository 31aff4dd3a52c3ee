//! The per-packet update never allocates, and neither do RTCP reading, RTT matching, report
//! blocks or the periodic evaluation once the monitor is built: a counting global allocator
//! watches 100k impaired RTP packets with RTCP and timers interleaved.
//!
//! One test in this binary only, so no other test thread allocates while counting.

mod quality_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use quality_common::*;
use xcc_core::quality::rtcp::ReportBlock;
use xcc_core::quality::{LegMonitor, MonitorConfig};

/// Counts every allocation and reallocation made through it.
struct Counting;

thread_local! {
    // Per thread: the monitor runs on the test thread; libtest's own threads must not count.
    // Const-initialised and without a destructor, so touching it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn monitor_does_not_allocate_after_construction() {
    let t0 = Instant::now();
    let mut rng = rng(40);
    let imp = Impairment {
        loss: 0.05,
        duplicate: 0.01,
        swap: 0.01,
        max_jitter: Duration::from_millis(60),
        ..Impairment::default()
    };
    let (deliveries, _) = Sender::pcmu(0x42, 65_000).run(t0, 100_000, imp, &mut rng);
    let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 1];
    let block = ReportBlock {
        ssrc: 0xabcd,
        lsr: 0x1234_5678,
        dlsr: 0x0000_8000,
        fraction_lost: 20,
        ..ReportBlock::default()
    };
    let mut b = [0u8; 24];
    block.write(&mut b);
    rr.extend_from_slice(&b);
    let sr = [
        0x80, 200, 0, 6, 0, 0, 0xab, 0xcd, 0xde, 0xad, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0,
    ];
    let mut m = LegMonitor::new(MonitorConfig::default(), t0);

    let before = ALLOCATIONS.with(Cell::get);
    let mut events = 0usize;
    for (i, d) in deliveries.iter().enumerate() {
        while m.poll_timeout() <= d.at {
            let at = m.poll_timeout();
            m.handle_timeout(at);
            while m.poll_event().is_some() {
                events += 1;
            }
        }
        m.handle_rtp(d.at, d.pkt);
        if i % 250 == 0 {
            m.handle_rtcp_sent(d.at, &sr).unwrap();
            m.handle_rtcp(d.at + Duration::from_millis(600), &rr)
                .unwrap();
            let _ = m.report_block(d.at);
            let _ = m.snapshot();
        }
    }
    let after = ALLOCATIONS.with(Cell::get);

    assert_eq!(
        after - before,
        0,
        "allocations on the packet and report path"
    );
    // The run did exercise the whole monitor: loss, jitter, RTT and events.
    let s = m.snapshot();
    assert!(s.lost > 0 && s.duplicates > 0 && s.reordered > 0);
    assert!(s.jitter_ms.unwrap() > 5.0);
    assert!(s.rtt_ms.is_some());
    assert!(events > 0);
}
