//! The affinity ring for issue 4: consistent hashing with bounded loads, sans-IO.
//!
//! In the request path (DESIGN.md §4) this sits in step 7, `affinity`: for a (session or
//! affinity key, upstream) pair, [`Ring::pick_bounded`] gives the replica a new session starts
//! on (the choice is then recorded in the session, §6), and [`Ring::candidates`] gives the
//! failover order when that replica is lost. The same ring type also serves the hub-replica
//! ownership of session ids. `hub::Hub::pick_replica` uses it for upstream replicas.
//!
//! Modelled on `pingora-ketama`: the ring is built once into a boxed slice of
//! `(point hash, node)` sorted by hash, a lookup is one binary search, failover walks clockwise
//! to the next distinct node. Lookups never allocate.
//!
//! # Hash
//!
//! [`hash`] is 64-bit FNV-1a over the bytes, followed by the MurmurHash3 `fmix64` finalizer
//! (FNV-1a alone mixes short, similar keys such as `session-17` poorly into the high bits, which
//! is what the ring order depends on). Both are fixed, published algorithms implemented here, so
//! the mapping cannot change with a dependency upgrade; `tests/fixtures/ring-5-nodes.txt` pins
//! it. Vnode `j` of node `name` sits at the hash of `name`'s bytes followed by `j` as 4
//! little-endian bytes. Points with equal hashes are ordered by node index.
//!
//! # Node indices and duplicates
//!
//! Node indices are positions in the `nodes` slice given to [`Ring::new`], so callers index
//! their own tables (and the `loads` of [`Ring::pick_bounded`]) with them. Duplicate names are
//! **deduplicated**: the first occurrence keeps its index, later ones get no points and are
//! never returned. [`Ring::len`] counts distinct nodes.

/// Points per node when the caller has no reason to choose otherwise (as in ketama).
pub const DEFAULT_VNODES: usize = 160;

/// Load factor `c` of bounded-load hashing when none is configured (DESIGN.md §6).
pub const DEFAULT_LOAD_FACTOR: f64 = 1.25;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Nodes below this index are tracked in the candidate walk's inline bit set; others by
/// scanning back over the points already walked.
const INLINE_SEEN: usize = 256;

fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// MurmurHash3's 64-bit finalizer.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The ring's hash of a key: FNV-1a 64 then `fmix64` (see the module doc). Stable by
/// definition; changing it changes every mapping.
pub fn hash(bytes: &[u8]) -> u64 {
    fmix64(fnv1a(FNV_OFFSET, bytes))
}

fn point_hash(name: &[u8], vnode: u32) -> u64 {
    fmix64(fnv1a(fnv1a(FNV_OFFSET, name), &vnode.to_le_bytes()))
}

/// A consistent-hash ring over a fixed set of nodes, built once and read-only afterwards.
#[derive(Debug, Clone)]
pub struct Ring {
    /// `(point hash, node index)`, sorted.
    points: Box<[(u64, u32)]>,
    /// Indices of the distinct nodes, in input order.
    nodes: Box<[u32]>,
}

impl Ring {
    /// Builds the ring. `nodes`: stable node names (e.g. `"10.0.0.7:3000"`); duplicates are
    /// deduplicated (module doc). `vnodes`: points per node ([`DEFAULT_VNODES`]); 0 is taken
    /// as 1.
    pub fn new(nodes: &[&str], vnodes: usize) -> Ring {
        let vnodes = u32::try_from(vnodes.max(1)).unwrap_or(u32::MAX);
        let mut distinct: Vec<u32> = Vec::with_capacity(nodes.len());
        for (i, name) in nodes.iter().enumerate() {
            let Ok(idx) = u32::try_from(i) else { break };
            if nodes[..i].contains(name) {
                continue;
            }
            distinct.push(idx);
        }
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(distinct.len() * vnodes as usize);
        for &idx in &distinct {
            let name = nodes[idx as usize].as_bytes();
            points.extend((0..vnodes).map(|j| (point_hash(name, j), idx)));
        }
        points.sort_unstable();
        Ring {
            points: points.into_boxed_slice(),
            nodes: distinct.into_boxed_slice(),
        }
    }

    /// Number of distinct nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the ring has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Position of the first point at or after the key's hash (wrapping).
    fn start(&self, key: &[u8]) -> usize {
        let h = hash(key);
        let i = self.points.partition_point(|&(p, _)| p < h);
        if i == self.points.len() {
            0
        } else {
            i
        }
    }

    /// First choice for a key (e.g. a session id); `None` on an empty ring. Allocation-free.
    pub fn primary(&self, key: &[u8]) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        Some(self.points[self.start(key)].1 as usize)
    }

    /// Distinct nodes in ring order starting at the key's point: the failover order, each node
    /// exactly once. Allocation-free.
    pub fn candidates<'a>(&'a self, key: &[u8]) -> impl Iterator<Item = usize> + 'a {
        let start = if self.points.is_empty() {
            0
        } else {
            self.start(key)
        };
        Candidates {
            ring: self,
            start,
            walked: 0,
            left: self.nodes.len(),
            seen: [0; INLINE_SEEN / 64],
        }
    }

    /// Bounded loads (Mirrokni, Thorup, Zadimoghaddam): the first candidate whose load is below
    /// `ceil(c * (total_load + 1) / n)`, `n` = [`Ring::len`], `total_load` = the sum of the
    /// distinct nodes' loads. `loads` is indexed like `nodes` in [`Ring::new`]; missing entries
    /// count as 0. `load_factor` below 1 (or NaN) is taken as 1, so the result is `Some` on
    /// any non-empty ring. Allocation-free.
    pub fn pick_bounded(&self, key: &[u8], loads: &[u32], load_factor: f64) -> Option<usize> {
        let load = |i: usize| loads.get(i).copied().unwrap_or(0);
        let c = if load_factor >= 1.0 { load_factor } else { 1.0 };
        let total: u64 = self
            .nodes
            .iter()
            .map(|&i| u64::from(load(i as usize)))
            .sum();
        let cap = (c * (total + 1) as f64 / self.nodes.len() as f64).ceil();
        self.candidates(key).find(|&i| f64::from(load(i)) < cap)
    }
}

/// Iterator of [`Ring::candidates`].
struct Candidates<'a> {
    ring: &'a Ring,
    start: usize,
    /// Points walked so far from `start`.
    walked: usize,
    /// Distinct nodes not yet yielded.
    left: usize,
    /// Bit set of yielded nodes with index below [`INLINE_SEEN`].
    seen: [u64; INLINE_SEEN / 64],
}

impl Candidates<'_> {
    fn point(&self, step: usize) -> u32 {
        let points = &self.ring.points;
        points[(self.start + step) % points.len()].1
    }

    /// Marks `node` as seen; false when it already was.
    fn first_visit(&mut self, node: u32) -> bool {
        let i = node as usize;
        if i < INLINE_SEEN {
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            let fresh = self.seen[word] & bit == 0;
            self.seen[word] |= bit;
            fresh
        } else {
            // Rare (rings of more than 256 nodes): scan the walked points, still no allocation.
            !(0..self.walked).any(|s| self.point(s) == node)
        }
    }
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.left > 0 && self.walked < self.ring.points.len() {
            let node = self.point(self.walked);
            let fresh = self.first_visit(node);
            self.walked += 1;
            if fresh {
                self.left -= 1;
                return Some(node as usize);
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Every distinct node has at least one point, so all `left` nodes will come.
        (self.left, Some(self.left))
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
