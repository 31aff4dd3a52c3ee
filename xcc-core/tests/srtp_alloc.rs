//! The packet path never allocates: a counting global allocator watches 10k protect/unprotect
//! rounds of RTP and RTCP with AES-CM and GCM after the contexts are built.
//!
//! One test in this binary only, so no other test thread allocates while counting.

mod srtp_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use srtp_common::*;
use xcc_core::srtp::{SrtpContext, SrtpPolicy, SrtpSuite};

/// Counts every allocation and reallocation made through it.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn ten_thousand_packets_allocate_nothing() {
    // The counter sees allocations at all (else a zero below would prove nothing).
    let probe = ALLOCATIONS.load(Ordering::Relaxed);
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(ALLOCATIONS.load(Ordering::Relaxed) > probe);

    for suite in [
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AeadAes128Gcm,
        SrtpSuite::AesCm256HmacSha1_32,
    ] {
        let mut rng = rng(1);
        let km = keying(&mut rng, suite);
        // Everything that may allocate happens before counting: keys, contexts, packets, buffers.
        let (mut tx, mut rx) = (
            SrtpContext::new(&km, SrtpPolicy::default()),
            SrtpContext::new(&km, SrtpPolicy::default()),
        );
        let rtp: Vec<Vec<u8>> = (0..63)
            .map(|i| rtp_packet(&mut rng, 1 + (i % 3), 0))
            .collect();
        let rtcp: Vec<Vec<u8>> = (0..64)
            .map(|i| rtcp_packet(&mut rng, 1 + (i % 3)))
            .collect();
        let mut buf = vec![0u8; 2048];
        let mut accepted = 0usize;

        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for i in 0..10_000usize {
            let pkt = &rtp[i % rtp.len()];
            buf[..pkt.len()].copy_from_slice(pkt);
            // 63 packets over 3 SSRCs: packet i belongs to SSRC 1 + i % 3, whose own sequence
            // numbers run across a wrap.
            buf[2..4].copy_from_slice(&((65_000 + i / 3) as u16).to_be_bytes());
            let len = tx.protect_rtp(&mut buf, pkt.len()).unwrap();
            let len = rx.unprotect_rtp(&mut buf, len).unwrap();
            accepted += usize::from(len == pkt.len());

            let pkt = &rtcp[i % rtcp.len()];
            buf[..pkt.len()].copy_from_slice(pkt);
            let len = tx.protect_rtcp(&mut buf, pkt.len()).unwrap();
            let len = rx.unprotect_rtcp(&mut buf, len).unwrap();
            accepted += usize::from(len == pkt.len());

            // Refusals are on the packet path too.
            let _ = rx.unprotect_rtcp(&mut buf, 3);
        }
        let after = ALLOCATIONS.load(Ordering::Relaxed);
        assert_eq!(accepted, 20_000, "{suite:?}");
        assert_eq!(
            after - before,
            0,
            "{suite:?}: allocations on the packet path"
        );
    }
}
