//! Soft affinity: consistent hashing with bounded loads (Mirrokni, Thorup and
//! Zadimoghaddam, 2016; HAProxy's `hash-balance-factor`, Envoy's ring hash
//! with `hash_balance_factor`).
//!
//! A key (a tenant header, a credential's hash, a cookie) is hashed onto a
//! ring of backends, [`VNODES`] points each, and goes to the first backend
//! clockwise whose load is under `load_factor` times the mean: the same key
//! keeps landing on the same replica (its caches stay warm) until that
//! replica is busier than its share, when the next one on the ring takes the
//! overflow. Nothing is pinned: a backend that leaves moves only its keys.
//!
//! The hash is FNV-1a with a final mix: the same on every Tether replica and
//! every run, so replicas agree without talking.

use std::sync::Arc;

use super::Backend;

/// Points on the ring per backend: enough that each holds close to 1/n of it.
pub const VNODES: u64 = 160;

/// The ring of one pool's backends, sorted by point.
#[derive(Debug)]
pub struct Ring {
    points: Vec<(u64, usize)>,
}

impl Ring {
    pub fn new(backends: &[Arc<Backend>]) -> Ring {
        let mut points = Vec::with_capacity(backends.len() * VNODES as usize);
        for (i, b) in backends.iter().enumerate() {
            for v in 0..VNODES {
                let mut h = fnv(b.id.as_bytes());
                h = mix(h ^ v.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                points.push((h, i));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// Backend indices clockwise from `hash`, each once.
    pub fn walk(&self, hash: u64, n: usize) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|&(p, _)| p < hash);
        let mut seen = vec![false; n];
        (0..self.points.len())
            .map(move |k| self.points[(start + k) % self.points.len()].1)
            .filter(move |&i| !std::mem::replace(&mut seen[i], true))
    }
}

/// The hash of a key, as every Tether computes it.
pub fn hash_key(key: &[u8]) -> u64 {
    mix(fnv(key))
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: FNV's low bits are weak.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The most outstanding requests a backend may have and still take a key:
/// `load_factor` times the mean load once this request is counted, rounded up.
pub fn capacity(total: usize, n: usize, load_factor: f64) -> usize {
    let mean = (total + 1) as f64 / n.max(1) as f64;
    (load_factor * mean).ceil() as usize
}
