//! The affinity ring for issue 4: consistent hashing with bounded loads, sans-IO.
//!
//! In the request path (DESIGN.md §4) this sits in step 7, `affinity`: for a (session or
//! affinity key, upstream) pair, [`Ring::pick_bounded`] gives the replica a new session starts
//! on (the choice is then recorded in the session, §6), and [`Ring::candidates`] gives the
//! failover order when that replica is lost. The same ring type also serves the hub-replica
//! ownership of session ids (`cluster`). `hub::Hub::pick_replica` uses it for upstream replicas.
//!
//! Modelled on `pingora-ketama`: the ring is built once, its points sorted by hash, a lookup
//! finds the first point at or after the key's hash (wrapping), and failover walks clockwise
//! to the next distinct node. Lookups never allocate.
//!
//! # Layout
//!
//! The points are two parallel boxed slices: the sorted point hashes (`u64`, the only thing a
//! lookup searches) and the node index of each point (`u32`, the only thing the failover walk
//! reads). A first-level index by the top `bits` of the hash (about one bucket per point, at
//! most 2^16 buckets) gives the range of points in the key's bucket, so the binary search runs
//! over a point or two instead of the whole ring.
//!
//! # Hash
//!
//! [`hash`] is XXH64 with seed 0 (the published xxHash 64-bit algorithm, implemented here: it
//! reads the key 8 bytes at a time, little-endian, with a multiply/rotate round per word and
//! its own avalanche finalizer). It replaced byte-at-a-time FNV-1a 64 + `fmix64`, which cost
//! about 40 ns of a lookup on a 36-byte session id; **that change moved every key**, and the
//! fixture diff of that commit shows it. It also moved hub-replica session ownership: replicas
//! running different hashes disagree on owners until all run the same one. The algorithm is
//! fixed and implemented here, so the mapping cannot change with a dependency upgrade;
//! `tests/fixtures/ring-5-nodes.txt` pins it, so any change of the hash or the ring order is a
//! visible diff of that file. Vnode `j` of node `name` sits at the hash of `name`'s bytes
//! followed by `j` as 4 little-endian bytes.
//! Points with equal hashes are ordered by node index.
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

const P1: u64 = 0x9e37_79b1_85eb_ca87;
const P2: u64 = 0xc2b2_ae3d_27d4_eb4f;
const P3: u64 = 0x1656_67b1_9e37_79f9;
const P4: u64 = 0x85eb_ca77_c2b2_ae63;
const P5: u64 = 0x27d4_eb2f_1656_67c5;

/// Nodes below this index are tracked in the candidate walk's inline bit set; others by
/// scanning back over the points already walked.
const INLINE_SEEN: usize = 256;

/// Most bits of the first-level index (2^16 buckets, 256 KiB of `u32`).
const MAX_INDEX_BITS: u32 = 16;

fn round(acc: u64, word: u64) -> u64 {
    acc.wrapping_add(word.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn merge_round(acc: u64, v: u64) -> u64 {
    (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
}

/// XXH64 of `bytes` with seed 0.
fn xxh64(bytes: &[u8]) -> u64 {
    let mut rest = bytes;
    let mut h = if bytes.len() < 32 {
        P5
    } else {
        let mut v = [P1.wrapping_add(P2), P2, 0, P1.wrapping_neg()];
        while let Some((stripe, tail)) = rest.split_first_chunk::<32>() {
            for (lane, acc) in v.iter_mut().enumerate() {
                let mut word = [0u8; 8];
                word.copy_from_slice(&stripe[lane * 8..lane * 8 + 8]);
                *acc = round(*acc, u64::from_le_bytes(word));
            }
            rest = tail;
        }
        let h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        v.iter().fold(h, |h, &acc| merge_round(h, acc))
    };
    h = h.wrapping_add(bytes.len() as u64);
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        h ^= round(0, u64::from_le_bytes(*word));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = tail;
    }
    if let Some((word, tail)) = rest.split_first_chunk::<4>() {
        h ^= u64::from(u32::from_le_bytes(*word)).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = tail;
    }
    for &b in rest {
        h ^= u64::from(b).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// The ring's hash of a key: XXH64, seed 0 (see the module doc). Stable by definition;
/// changing it changes every mapping.
pub fn hash(bytes: &[u8]) -> u64 {
    xxh64(bytes)
}

/// A consistent-hash ring over a fixed set of nodes, built once and read-only afterwards.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Point hashes, sorted (ties in node order).
    hashes: Box<[u64]>,
    /// Node index of each point, parallel to `hashes`.
    owners: Box<[u32]>,
    /// `index[b]..index[b + 1]`: the points whose hash has top bits `b` (`64 - shift` bits).
    index: Box<[u32]>,
    /// `64 - bits` of the first-level index (`bits` at least 1).
    shift: u32,
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
        // Point positions are stored as `u32` in the index: cap the ring at `u32::MAX` points.
        let per_node = usize::try_from(vnodes).unwrap_or(usize::MAX);
        let total = distinct
            .len()
            .saturating_mul(per_node)
            .min(u32::MAX as usize);
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(total);
        let mut buf = Vec::new();
        'fill: for &idx in &distinct {
            buf.clear();
            buf.extend_from_slice(nodes[idx as usize].as_bytes());
            let name_len = buf.len();
            for j in 0..vnodes {
                if points.len() == total {
                    break 'fill;
                }
                buf.truncate(name_len);
                buf.extend_from_slice(&j.to_le_bytes());
                points.push((hash(&buf), idx));
            }
        }
        points.sort_unstable();
        let (hashes, owners): (Vec<u64>, Vec<u32>) = points.into_iter().unzip();

        // About one bucket per point: bits = ceil(log2(points)), within 1..=MAX_INDEX_BITS.
        let bits = hashes
            .len()
            .next_power_of_two()
            .trailing_zeros()
            .clamp(1, MAX_INDEX_BITS);
        let shift = 64 - bits;
        let mut index = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0usize;
        for bucket in 0..=(1u64 << bits) {
            while at < hashes.len() && hashes[at] >> shift < bucket {
                at += 1;
            }
            // `at <= total <= u32::MAX` (capped above).
            index.push(u32::try_from(at).unwrap_or(u32::MAX));
        }
        Ring {
            hashes: hashes.into_boxed_slice(),
            owners: owners.into_boxed_slice(),
            index: index.into_boxed_slice(),
            shift,
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

    /// Position of the first point at or after the key's hash (wrapping). The ring must have
    /// points.
    fn start(&self, key: &[u8]) -> usize {
        self.start_at(hash(key))
    }

    /// Position of the first point at or after `h` (wrapping). The ring must have points.
    fn start_at(&self, h: u64) -> usize {
        // `h >> shift < 2^bits`, and `index` has `2^bits + 1` entries.
        let b = (h >> self.shift) as usize;
        let (lo, hi) = match self.index.get(b..b + 2) {
            Some(&[lo, hi]) => (lo as usize, hi as usize),
            _ => (0, self.hashes.len()),
        };
        // Points before `lo` are in lower buckets (< h), points from `hi` in higher ones (> h).
        let i = match self.hashes.get(lo..hi) {
            Some(bucket) => lo + bucket.partition_point(|&p| p < h),
            None => self.hashes.partition_point(|&p| p < h),
        };
        if i == self.hashes.len() {
            0
        } else {
            i
        }
    }

    /// First choice for a key (e.g. a session id); `None` on an empty ring. Allocation-free.
    pub fn primary(&self, key: &[u8]) -> Option<usize> {
        if self.owners.is_empty() {
            return None;
        }
        self.owners.get(self.start(key)).map(|&n| n as usize)
    }

    /// Distinct nodes in ring order starting at the key's point: the failover order, each node
    /// exactly once. Allocation-free.
    pub fn candidates<'a>(&'a self, key: &[u8]) -> impl Iterator<Item = usize> + 'a {
        let start = if self.owners.is_empty() {
            0
        } else {
            self.start(key)
        };
        Candidates {
            owners: &self.owners,
            start,
            pos: start,
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
    /// The ring's point owners, in ring order.
    owners: &'a [u32],
    /// Position of the key's point.
    start: usize,
    /// Position of the next point to walk (`start + walked`, wrapped).
    pos: usize,
    /// Points walked so far from `start`.
    walked: usize,
    /// Distinct nodes not yet yielded.
    left: usize,
    /// Bit set of yielded nodes with index below [`INLINE_SEEN`].
    seen: [u64; INLINE_SEEN / 64],
}

impl Candidates<'_> {
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
            let n = self.owners.len();
            !(0..self.walked).any(|s| self.owners[(self.start + s) % n] == node)
        }
    }
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.left > 0 && self.walked < self.owners.len() {
            let node = self.owners[self.pos];
            let fresh = self.first_visit(node);
            self.walked += 1;
            self.pos += 1;
            if self.pos == self.owners.len() {
                self.pos = 0;
            }
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
