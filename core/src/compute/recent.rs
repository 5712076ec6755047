//! A small cache of the most recently used entries (compiled shaders, compiled wasm
//! kernels): a handful of entries, found by a linear scan, the least recently used evicted.

use std::collections::VecDeque;

/// At most `capacity` entries, most recently used last.
#[derive(Debug)]
pub struct Recent<K, V> {
    capacity: usize,
    entries: VecDeque<(K, V)>,
}

impl<K: PartialEq, V: Clone> Recent<K, V> {
    /// An empty cache that keeps `capacity` entries (at least one).
    pub const fn new(capacity: usize) -> Self {
        Recent {
            capacity,
            entries: VecDeque::new(),
        }
    }

    /// The entry for `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        let at = self.entries.iter().position(|(k, _)| k == key)?;
        let hit = self.entries.remove(at)?;
        let value = hit.1.clone();
        self.entries.push_back(hit);
        Some(value)
    }

    /// Adds an entry, evicting the least recently used one when full.
    pub fn insert(&mut self, key: K, value: V) {
        self.remove(&key);
        if self.entries.len() >= self.capacity.max(1) {
            self.entries.pop_front();
        }
        self.entries.push_back((key, value));
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) {
        self.entries.retain(|(k, _)| k != key);
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let mut r = Recent::new(2);
        r.insert(1, "a");
        r.insert(2, "b");
        assert_eq!(r.get(&1), Some("a")); // 2 is now the oldest
        r.insert(3, "c");
        assert_eq!(r.get(&2), None);
        assert_eq!((r.get(&1), r.get(&3)), (Some("a"), Some("c")));
        r.insert(3, "d");
        assert_eq!(r.get(&3), Some("d"));
        r.remove(&1);
        assert_eq!(r.get(&1), None);
    }
}
