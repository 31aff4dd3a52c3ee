//! The per-packet NAT paths never allocate: a counting global allocator watches ICE checks
//! (answered, refused, garbage), hole-punching rounds and STUN parsing after setup.
//!
//! Allocations are counted per thread, like `srtp_alloc` and `quality_alloc`: the cores run on
//! the test's own thread, and the harness's other threads may allocate on a loaded machine (a
//! process-wide count saw 4 allocations in 1 of 12 runs with both cores busy).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use xcc_core::nat::ice::{CheckLimits, CheckOutcome, IceCredentials, IceLite};
use xcc_core::nat::punch::{ProbeKind, PunchSchedule, Puncher};
use xcc_core::nat::stun;

/// Counts every allocation and reallocation made through it, per thread.
struct Counting;

thread_local! {
    /// Const-initialised and without a destructor: safe to touch from inside the allocator.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// Allocations made on the calling thread so far.
fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
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

/// A nominating check signed with `xcc`'s password, as the peer sends it.
fn check(xcc: &IceCredentials, peer: &IceCredentials, buf: &mut [u8]) -> usize {
    let mut w = stun::Writer::new(buf, stun::BINDING_REQUEST, stun::TransactionId([7; 12]))
        .expect("buffer fits a header");
    let username = format!("{}:{}", xcc.ufrag, peer.ufrag);
    w.attribute(stun::attr::USERNAME, username.as_bytes())
        .unwrap();
    w.attribute(stun::attr::ICE_CONTROLLING, &1u64.to_be_bytes())
        .unwrap();
    w.attribute(stun::attr::USE_CANDIDATE, &[]).unwrap();
    w.integrity(xcc.pwd.as_bytes()).unwrap();
    w.fingerprint().unwrap();
    w.finish()
}

#[test]
fn checks_and_punching_allocate_nothing() {
    // The counter sees allocations at all (else a zero below would prove nothing).
    let probe = allocations();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(allocations() > probe);

    // Everything that may allocate happens before counting.
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let xcc = IceCredentials::generate(&mut rng);
    let peer = IceCredentials::generate(&mut rng);
    let mut ice = IceLite::new(xcc.clone(), Some(&peer), CheckLimits::default());
    let mut good = [0u8; 256];
    let good_len = check(&xcc, &peer, &mut good);
    let good = &good[..good_len];
    let mut bad = good.to_vec();
    bad[30] ^= 1;
    let garbage: Vec<u8> = (0..300u32).map(|i| (i * 37 % 251) as u8).collect();
    let kind = ProbeKind::Ice {
        local: xcc.clone(),
        remote: peer.clone(),
        tie_breaker: 3,
        priority: 1,
    };
    let targets: Vec<SocketAddr> = (0..4u16)
        .map(|i| SocketAddr::from(([198, 51, 100, 20], 40000 + i)))
        .collect();
    let t0 = Instant::now();
    let mut puncher = Puncher::new(t0, &targets, kind, PunchSchedule::default());
    let mut out = [0u8; 256];

    let before = allocations();
    let mut answered = 0;
    let mut probes = 0;
    for i in 0..2_000u32 {
        let now = t0 + Duration::from_millis(u64::from(i) * 50);
        let from = SocketAddr::from(([198, 51, 100, 20], 40000 + (i % 40) as u16));
        if let CheckOutcome::Success { .. } = ice.handle_request(now, from, good, &mut out) {
            answered += 1;
        }
        ice.handle_request(now, from, &bad, &mut out);
        ice.handle_request(
            now,
            from,
            &garbage[..(i as usize % garbage.len())],
            &mut out,
        );
        let _ = stun::Message::parse(good).map(|m| m.verify_fingerprint());
        puncher.handle_timeout(now, &mut rng);
        while let Some((_, len)) = puncher.poll_transmit(&mut out) {
            probes += 1;
            puncher.handle_response(targets[0], &out[..len]);
        }
    }
    let after = allocations();
    assert_eq!(after - before, 0, "allocations on the per-packet path");
    assert!(answered > 1_000, "the loop exercised the success path");
    assert_eq!(probes, 4 * 50, "every punching round ran");
}
