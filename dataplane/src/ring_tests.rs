//! Tests of [`super::Ring`]: the pinned fixture mapping, consistent-hashing properties over
//! 10,000 generated keys, bounded loads, and edge cases.

use super::*;
use std::collections::HashSet;

const KEYS: usize = 10_000;
const FIXTURE: &str = "tests/fixtures/ring-5-nodes.txt";

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i}")).collect()
}

fn ring_of(names: &[String]) -> Ring {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    Ring::new(&refs, DEFAULT_VNODES)
}

fn key(i: usize) -> String {
    format!("session-{i}")
}

/// The node name each key maps to.
fn mapping(names: &[String]) -> Vec<String> {
    let ring = ring_of(names);
    (0..KEYS)
        .map(|i| names[ring.primary(key(i).as_bytes()).unwrap()].clone())
        .collect()
}

fn fixture_text() -> String {
    let ring = ring_of(&names(5));
    let mut out = String::new();
    for i in 0..1000 {
        let k = key(i);
        out.push_str(&format!("{k}\t{}\n", ring.primary(k.as_bytes()).unwrap()));
    }
    out
}

/// Any change of the hash or the ring layout shows here as a diff of the fixture. To
/// regenerate deliberately: `RING_FIXTURE_WRITE=1 cargo test -p dataplane --lib ring`.
#[test]
fn fixture_mapping_is_pinned() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let got = fixture_text();
    if std::env::var_os("RING_FIXTURE_WRITE").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(want.lines().count(), 1000);
    for (n, (w, g)) in want.lines().zip(got.lines()).enumerate() {
        assert_eq!(w, g, "fixture line {}", n + 1);
    }
}

/// Pins the hash definition to XXH64 (seed 0) by the published xxHash test vectors: the empty
/// input, the tail paths (1 and 3 bytes; 16 bytes = two words), and inputs of 39 and 46 bytes,
/// which go through the 32-byte stripe loop, its merge and every tail step.
#[test]
fn hash_is_xxh64_seed_0() {
    assert_eq!(hash(b""), 0xef46_db37_51d8_e999);
    assert_eq!(hash(b"a"), 0xd24e_c4f1_a98c_6e5b);
    assert_eq!(hash(b"abc"), 0x44bc_2cf5_ad77_0999);
    assert_eq!(hash(b"asdf"), 0x4158_72f5_99ce_a71e);
    assert_eq!(hash(b"Call me Ishmael."), 0x6d04_390f_c9d6_1a90);
    assert_eq!(
        hash(b"Nobody inspects the spammish repetition"),
        0xfbce_a83c_8a37_8bf1
    );
    assert_eq!(
        hash(b"Some years ago--never mind how long precisely-"),
        0x8f26_f2b9_86af_dc52
    );
}

/// The first-level index only narrows the search: every lookup lands where a plain binary
/// search over all points (wrapping) would, for rings from 1 point up.
#[test]
fn index_agrees_with_a_full_binary_search() {
    for (n, vnodes) in [
        (1, 1),
        (1, 2),
        (2, 1),
        (3, 3),
        (5, 160),
        (10, 160),
        (300, 7),
    ] {
        let ring = Ring::new(
            &names(n).iter().map(String::as_str).collect::<Vec<_>>(),
            vnodes,
        );
        assert!(ring.hashes.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(ring.index.len(), (1 << (64 - ring.shift)) + 1);
        let mut probes: Vec<Vec<u8>> = (0..2000).map(|i| key(i).into_bytes()).collect();
        probes.push(Vec::new());
        for k in &probes {
            let h = hash(k);
            let full = ring.hashes.partition_point(|&p| p < h);
            let want = if full == ring.hashes.len() { 0 } else { full };
            assert_eq!(ring.start(k), want, "n={n} vnodes={vnodes}");
            assert_eq!(ring.primary(k), Some(ring.owners[want] as usize));
        }
        // Exact point hashes, their neighbours, and the ends of the hash space.
        let mut hs: Vec<u64> = vec![0, 1, u64::MAX - 1, u64::MAX];
        for &p in ring.hashes.iter() {
            hs.extend([p.wrapping_sub(1), p, p.wrapping_add(1)]);
        }
        for h in hs {
            let full = ring.hashes.partition_point(|&p| p < h);
            let want = if full == ring.hashes.len() { 0 } else { full };
            assert_eq!(ring.start_at(h), want, "n={n} vnodes={vnodes} h={h:#x}");
        }
    }
}

fn check_removal(n: usize) {
    let all = names(n);
    let before = mapping(&all);
    let mut worst: f64 = 0.0;
    for removed in 0..n {
        let rest: Vec<String> = all
            .iter()
            .filter(|s| **s != all[removed])
            .cloned()
            .collect();
        let after = mapping(&rest);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(*b, all[removed], "a key moved off a node that stayed");
                moved += 1;
            }
        }
        let frac = moved as f64 / KEYS as f64;
        println!(
            "N={n} remove {}: moved {frac:.4} (1/N = {:.4})",
            all[removed],
            1.0 / n as f64
        );
        assert!(frac <= 1.5 / n as f64, "N={n}: moved {frac}");
        worst = worst.max(frac);
    }
    println!("N={n} remove: worst moved fraction {worst:.4}");
}

#[test]
fn removing_a_node_moves_only_its_keys() {
    check_removal(5);
    check_removal(10);
}

fn check_addition(n: usize) {
    let all = names(n);
    let before = mapping(&all);
    let mut more = all.clone();
    more.push(format!("n{n}"));
    let after = mapping(&more);
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            assert_eq!(*a, more[n], "a key moved to an old node");
            moved += 1;
        }
    }
    let frac = moved as f64 / KEYS as f64;
    println!(
        "N={n} add n{n}: moved {frac:.4} (1/(N+1) = {:.4})",
        1.0 / (n + 1) as f64
    );
    assert!(frac <= 1.5 / (n + 1) as f64, "N={n}: moved {frac}");
}

#[test]
fn adding_a_node_moves_only_keys_to_it() {
    check_addition(5);
    check_addition(10);
}

#[test]
fn pick_bounded_never_exceeds_the_cap() {
    for n in [5, 10] {
        let ring = ring_of(&names(n));
        let mut loads = vec![0u32; n];
        for i in 0..KEYS {
            let node = ring
                .pick_bounded(key(i).as_bytes(), &loads, DEFAULT_LOAD_FACTOR)
                .unwrap();
            loads[node] += 1;
            let cap = (DEFAULT_LOAD_FACTOR * (i + 1) as f64 / n as f64).ceil() as u32;
            assert!(
                loads.iter().all(|&l| l <= cap),
                "n={n} key {i}: {loads:?} cap {cap}"
            );
        }
        println!("n={n}: bounded loads {loads:?}");
    }
}

#[test]
fn pick_bounded_prefers_the_primary_when_unloaded() {
    let ring = ring_of(&names(5));
    for i in 0..100 {
        let k = key(i);
        let p = ring.primary(k.as_bytes());
        assert_eq!(ring.pick_bounded(k.as_bytes(), &[0; 5], 1.25), p);
        // Shorter `loads` count as zeros; a factor below 1 is taken as 1.
        assert_eq!(ring.pick_bounded(k.as_bytes(), &[], 0.5), p);
    }
}

#[test]
fn pick_bounded_skips_a_full_primary() {
    let ring = ring_of(&names(5));
    let k = b"session-42";
    let mut order = ring.candidates(k);
    let first = order.next().unwrap();
    let second = order.next().unwrap();
    let mut loads = [0u32; 5];
    loads[first] = 10; // cap = ceil(1.25 * 11 / 5) = 3
    assert_eq!(ring.pick_bounded(k, &loads, 1.25), Some(second));
}

#[test]
fn candidates_yield_every_node_once_starting_at_primary() {
    for n in [1, 5, 10, 300] {
        let ring = ring_of(&names(n));
        for i in 0..if n > 100 { 20 } else { 1000 } {
            let k = key(i);
            let got: Vec<usize> = ring.candidates(k.as_bytes()).collect();
            assert_eq!(got.len(), n);
            assert_eq!(got.iter().copied().collect::<HashSet<_>>().len(), n);
            assert_eq!(Some(got[0]), ring.primary(k.as_bytes()));
        }
    }
}

#[test]
fn empty_ring() {
    let ring = Ring::new(&[], DEFAULT_VNODES);
    assert!(ring.is_empty());
    assert_eq!(ring.len(), 0);
    assert_eq!(ring.primary(b"k"), None);
    assert_eq!(ring.candidates(b"k").next(), None);
    assert_eq!(ring.pick_bounded(b"k", &[], 1.25), None);
}

#[test]
fn one_node() {
    let ring = Ring::new(&["10.0.0.7:3000"], DEFAULT_VNODES);
    assert_eq!(ring.len(), 1);
    assert!(!ring.is_empty());
    for i in 0..100 {
        let k = key(i);
        assert_eq!(ring.primary(k.as_bytes()), Some(0));
        assert_eq!(ring.candidates(k.as_bytes()).collect::<Vec<_>>(), [0]);
        assert_eq!(ring.pick_bounded(k.as_bytes(), &[1000], 1.25), Some(0));
    }
    // vnodes = 0 is taken as 1.
    assert_eq!(Ring::new(&["a"], 0).primary(b"k"), Some(0));
}

#[test]
fn duplicates_are_deduplicated_first_index_wins() {
    let dup = Ring::new(&["a", "b", "a", "c", "b"], DEFAULT_VNODES);
    let plain = Ring::new(&["a", "b", "c"], DEFAULT_VNODES);
    assert_eq!(dup.len(), 3);
    // Index 3 ("c") in `dup` is index 2 in `plain`; indices 2 and 4 never come back.
    let remap = |i: usize| if i == 3 { 2 } else { i };
    for i in 0..1000 {
        let k = key(i);
        let got: Vec<usize> = dup.candidates(k.as_bytes()).map(remap).collect();
        let want: Vec<usize> = plain.candidates(k.as_bytes()).collect();
        assert_eq!(got, want);
        assert_eq!(
            dup.primary(k.as_bytes()).map(remap),
            plain.primary(k.as_bytes())
        );
    }
}
