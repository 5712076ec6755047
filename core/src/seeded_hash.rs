//! Hash maps for keys that come from peers: foldhash (fast), seeded once per process from the
//! system's random source.
//!
//! foldhash's own `RandomState` derives its seed from addresses (and, natively, the clock).
//! In the browser's wasm there is no address randomization and no clock at that point, so
//! every browser node would hash with the same seed, and a peer could compute keys that all
//! collide. The random source here is `crypto.getRandomValues` in the browser (through
//! `getrandom`) and the OS natively.
//!
//! `vendor/yrs` carries the same hasher (`yrs::RandomSeeded`) for its own maps. The core does
//! not use that one: it is our patch's API, not yrs's, and the core must keep building when
//! the patched copy is dropped for an upstream release.

use std::{hash::BuildHasher, sync::OnceLock};

use foldhash::{
    fast::{FoldHasher, SeedableRandomState},
    SharedSeed,
};

/// A `HashMap` hashing with [`RandomSeeded`].
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, RandomSeeded>;
/// A `HashSet` hashing with [`RandomSeeded`].
pub(crate) type HashSet<K> = std::collections::HashSet<K, RandomSeeded>;

/// foldhash with a random shared seed (one per process) and a random per-map seed.
#[derive(Clone, Debug)]
pub(crate) struct RandomSeeded(SeedableRandomState);

impl Default for RandomSeeded {
    fn default() -> Self {
        static SHARED: OnceLock<SharedSeed> = OnceLock::new();
        let shared = SHARED.get_or_init(|| SharedSeed::from_u64(rand::random()));
        RandomSeeded(SeedableRandomState::with_seed(rand::random(), shared))
    }
}

impl BuildHasher for RandomSeeded {
    type Hasher = FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_get_different_seeds() {
        let (a, b) = (RandomSeeded::default(), RandomSeeded::default());
        assert_ne!(a.hash_one("key"), b.hash_one("key"));
        assert_eq!(a.hash_one("key"), a.hash_one("key"));
        let mut set: HashSet<&str> = HashSet::default();
        assert!(set.insert("a") && !set.insert("a"));
    }
}
