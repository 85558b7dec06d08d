//! Affinity ring lookups (`dataplane::ring`): `primary` and `pick_bounded` on a 10-node ring
//! with the default 160 points per node, plus a walk of the full failover order.
//!
//! Before timing, a counting global allocator checks that a lookup allocates 0 bytes.

// The counting allocator below must implement `GlobalAlloc`, an unsafe trait; the workspace
// denies `unsafe_code`, so this one bench file allows it. Each unsafe block forwards to the
// system allocator unchanged and carries its own SAFETY note.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::Criterion;
use dataplane::ring::{Ring, DEFAULT_LOAD_FACTOR, DEFAULT_VNODES};

/// The system allocator, counting allocations and bytes.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract; forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` via `alloc`/`realloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract; `ptr` is from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `(allocations, bytes)` so far.
fn counted() -> (u64, u64) {
    (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

fn bench_ring(c: &mut Criterion) {
    let names: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}:3000")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let ring = Ring::new(&refs, DEFAULT_VNODES);
    // Session-id-like keys (36 bytes, as a UUID), cycled through so lookups do not repeat.
    let keys: Vec<String> = (0..1024)
        .map(|i: u32| {
            format!(
                "{:08x}-5f0e-4c1a-9d2b-{:012x}",
                i.wrapping_mul(2_654_435_761),
                i
            )
        })
        .collect();
    // Loads as after 1,000 sessions, uneven so `pick_bounded` sometimes skips the primary.
    let mut loads = vec![0u32; 10];
    for k in keys.iter().take(1000) {
        let i = ring.primary(k.as_bytes()).expect("node");
        loads[i] += 1;
    }
    loads[ring.primary(keys[0].as_bytes()).expect("node")] += 200;

    // Allocation check outside timing: a lookup allocates 0 bytes.
    let before = counted();
    let mut sink = 0usize;
    for k in &keys {
        let k = k.as_bytes();
        sink += ring.primary(k).unwrap_or(0);
        sink += ring
            .pick_bounded(k, &loads, DEFAULT_LOAD_FACTOR)
            .unwrap_or(0);
        sink += ring.candidates(k).sum::<usize>();
    }
    black_box(sink);
    let after = counted();
    let (allocs, bytes) = (after.0 - before.0, after.1 - before.1);
    println!(
        "ring_lookup: {} lookups x (primary + pick_bounded + candidates): {allocs} allocations, \
         {bytes} bytes",
        keys.len()
    );
    assert_eq!((allocs, bytes), (0, 0), "a ring lookup allocated");

    let mut group = c.benchmark_group("ring_lookup");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    let mut i = 0usize;
    let mut next = || {
        i = (i + 1) & 1023;
        keys[i].as_bytes()
    };
    group.bench_function("primary_10_nodes", |b| {
        b.iter(|| ring.primary(black_box(next())))
    });
    group.bench_function("pick_bounded_10_nodes", |b| {
        b.iter(|| ring.pick_bounded(black_box(next()), black_box(&loads), DEFAULT_LOAD_FACTOR))
    });
    group.bench_function("candidates_all_10_nodes", |b| {
        b.iter(|| ring.candidates(black_box(next())).sum::<usize>())
    });
    group.finish();
}

// Written out instead of `criterion_group!`, whose generated `pub fn` has no docs.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_ring(&mut c);
    c.final_summary();
}
