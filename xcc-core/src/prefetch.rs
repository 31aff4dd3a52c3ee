//! Cache prefetch hints for per-call state on the forwarding path.
//!
//! Why: with hundreds of calls a packet finds its call's state cold (each leg hears from its peer
//! every 20 ms, and in between the worker and the kernel touch everything else), so the first
//! load of every per-call field waits for memory; perf put most of the media worker's user time
//! on such loads. The worker knows which call a socket belongs to before it asks the kernel for
//! the datagram, so it hints the lines that packet will touch and the misses overlap the
//! `recvfrom` instead of following it. A hint never faults and changes no result.

/// Cache line size assumed for the hints (x86-64 and most ARM cores).
const LINE: usize = 64;

/// At most this many lines are hinted per value: a guard against hinting a large structure.
const MAX_LINES: usize = 24;

/// Hints every cache line of `value` (at most [`MAX_LINES`]) into the nearest cache.
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    prefetch_prefix(value, std::mem::size_of::<T>());
}

/// Hints the lines of the first `bytes` bytes of `value` (at most its size and [`MAX_LINES`]):
/// for a structure whose packet path uses only its start, such as an expanded AES key whose
/// software fallback schedule follows the one AES-NI uses.
#[inline]
pub(crate) fn prefetch_prefix<T>(value: &T, bytes: usize) {
    let start = (value as *const T).cast::<u8>();
    let len = bytes.min(std::mem::size_of::<T>()).min(MAX_LINES * LINE);
    let mut offset = 0;
    while offset < len {
        // wrapping_add: the pointer is only a hint, never dereferenced.
        line(start.wrapping_add(offset));
        offset += LINE;
    }
    if len > 0 {
        // The last byte may sit on one more line when `value` does not start on a line boundary.
        line(start.wrapping_add(len - 1));
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn line(p: *const u8) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: PREFETCHT0 is a hint: it never faults, whatever the address, and reads nothing the
    // program can observe. SSE is part of the x86-64 baseline.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn line(_p: *const u8) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hinting_leaves_the_value_unchanged_whatever_its_size() {
        let small = 7u8;
        let big = [3u64; 1024]; // larger than MAX_LINES lines
        let empty = ();
        prefetch(&small);
        prefetch(&big);
        prefetch(&empty);
        assert_eq!(small, 7);
        assert!(big.iter().all(|&v| v == 3));
    }
}
