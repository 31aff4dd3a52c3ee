//! Shared by the allocation tests of the packet path (`media_alloc.rs`, `media_turn_alloc.rs`):
//! a counting allocator and packet builders that do not touch the heap. Each binary installs
//! the allocator itself (`#[global_allocator] static GLOBAL: Counting = Counting;`), so it never
//! reaches a test binary that does not include this module and ask for it.
//!
//! With `TRACE` set (a test sets it from `XCC_ALLOC_BACKTRACE` for its measured window), every
//! allocation prints the allocating thread's backtrace.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counts every allocation in the process.
pub struct Counting;

/// Allocations (and reallocations) since the process started.
pub static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Inside the measured window with `XCC_ALLOC_BACKTRACE` set: print where each allocation is.
pub static TRACE: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set while this thread prints a backtrace (which allocates itself).
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

/// Prints the allocating thread's backtrace, once per allocation, without recursing.
fn trace_allocation(size: usize) {
    if !TRACE.load(Ordering::Relaxed) || IN_TRACE.with(Cell::get) {
        return;
    }
    IN_TRACE.with(|t| t.set(true));
    let thread = std::thread::current();
    eprintln!(
        "allocation of {size} bytes on thread {:?}:\n{}",
        thread.name(),
        std::backtrace::Backtrace::force_capture()
    );
    IN_TRACE.with(|t| t.set(false));
}

// SAFETY: delegates to the system allocator unchanged; only counts (and, on request, prints).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        trace_allocation(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        trace_allocation(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// A sender report without blocks, without the heap.
pub fn sender_report_fixed(ssrc: u32, ntp_lsw: u32) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[..4].copy_from_slice(&[0x80, 200, 0, 6]);
    p[4..8].copy_from_slice(&ssrc.to_be_bytes());
    p[8..12].copy_from_slice(&1u32.to_be_bytes());
    p[12..16].copy_from_slice(&ntp_lsw.to_be_bytes());
    p
}

/// A receiver report about `about` whose LSR echoes the latest SR, without the heap.
pub fn receiver_report_fixed(reporter: u32, about: u32) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[..4].copy_from_slice(&[0x81, 201, 0, 7]);
    p[4..8].copy_from_slice(&reporter.to_be_bytes());
    p[8..12].copy_from_slice(&about.to_be_bytes());
    // Compact NTP of `sender_report_fixed`'s timestamp (seconds 1, fraction < 2^16).
    p[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    p
}

/// `rtp_packet` without the heap.
pub fn rtp_packet_fixed(seq: u16, ssrc: u32) -> [u8; 172] {
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
