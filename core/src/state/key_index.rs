//! The entry keys of a document's root map, indexed for the questions a flattened tree asks
//! that yrs's own map cannot answer: does anything lie below this key, which leaves lie below
//! it, and how many entries there are.
//!
//! Whether a key is a leaf is yrs's map's answer (`Map::contains_key`): keeping a second set
//! of every key cost a hash insert per write (rehashing 100k keys as it grew, ~10 % of a
//! local apply) and an allocation per key of a newcomer's document. Here only the count of
//! entries is kept for every key; "anything below?" is a hash lookup in `below_counts` (how
//! many leaves lie under each ancestor path), and only nested keys are kept sorted, for the
//! subtree scans that a write over an object, or a read of one, needs. Keys are `Arc<str>`
//! shared with yrs's own map, so a key is allocated once however many places hold it.
//!
//! The callers tell the index what changed, having asked yrs: [`KeyIndex::insert`] for a key
//! the map did not hold, [`KeyIndex::remove`] for one it held.
//!
//! Ancestors are counted under a 64-bit hash of their path, computed incrementally along the
//! key: memory and time stay linear in the key's length even for a peer's key of thousands of
//! segments (storing each ancestor's text would be quadratic). A collision (keyed by a
//! random seed, so not something a peer can aim for) can only make `has_below` say yes
//! wrongly; `below` then finds nothing, so reads fall back to the leaf and a write removes
//! nothing extra (at worst a removal is reported at the key rather than its emptied parent).

use std::{
    collections::BTreeSet,
    hash::{BuildHasher, Hasher},
    ops::Bound,
    sync::Arc,
};

use crate::seeded_hash::{HashMap, RandomSeeded};

use super::document::{nested, KEY_SEPARATOR};

/// The nested keys and the entry count of a root map. Randomly seeded hashing
/// ([`crate::seeded_hash`]) because keys come from peers.
#[derive(Default)]
pub(crate) struct KeyIndex {
    /// How many entries the map holds.
    len: usize,
    /// For each proper ancestor of a key (`a` and `a␟b` for `a␟b␟c`), under its path hash
    /// ([`KeyIndex::path_hashes`]): how many keys lie below.
    below_counts: HashMap<u64, u32>,
    /// The keys that have a separator, sorted: a subtree is a range of it.
    nested: BTreeSet<Arc<str>>,
    seed: RandomSeeded,
}

impl KeyIndex {
    /// The hash of every prefix of `key` that ends before a separator, and of `key` itself
    /// last: one pass over the key.
    fn path_hashes<'a>(&self, key: &'a str) -> impl Iterator<Item = u64> + 'a {
        let mut hasher = self.seed.build_hasher();
        key.split(KEY_SEPARATOR)
            .enumerate()
            .map(move |(i, segment)| {
                if i > 0 {
                    hasher.write_u8(0x1f);
                }
                hasher.write(segment.as_bytes());
                hasher.finish()
            })
    }

    /// The hashes of `key`'s proper ancestors.
    fn ancestor_hashes(&self, key: &str) -> Vec<u64> {
        let mut hashes: Vec<u64> = self.path_hashes(key).collect();
        hashes.pop();
        hashes
    }

    fn path_hash(&self, key: &str) -> u64 {
        self.path_hashes(key).last().unwrap_or_default()
    }
}

impl KeyIndex {
    /// How many entries the map holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether any key lies strictly below `key`.
    pub(crate) fn has_below(&self, key: &str) -> bool {
        !self.below_counts.is_empty() && self.below_counts.contains_key(&self.path_hash(key))
    }

    /// The keys strictly below `key`, sorted.
    pub(crate) fn below<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a Arc<str>> + 'a {
        let scan = self.has_below(key).then(|| {
            let prefix = format!("{key}{KEY_SEPARATOR}");
            self.nested
                .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                .take_while(move |k| k.starts_with(prefix.as_str()))
        });
        scan.into_iter().flatten()
    }

    /// Counts `key`, which the map did not hold until now. A flat key (most writes) costs a
    /// count; only a nested one is kept, sharing the caller's `Arc` (for a flat key not even
    /// its reference count is touched: an atomic add and drop per write showed in the profile).
    pub(crate) fn insert(&mut self, key: &Arc<str>) {
        if self.count(key) {
            self.nested.insert(key.clone());
        }
    }

    /// [`Self::insert`] for a key the caller holds no `Arc` of: a nested one is copied.
    pub(crate) fn insert_copied(&mut self, key: &str) {
        if self.count(key) {
            self.nested.insert(key.into());
        }
    }

    /// Counts a new entry and its ancestors; whether `key` is nested (to be kept).
    fn count(&mut self, key: &str) -> bool {
        self.len += 1;
        if !nested(key) {
            return false;
        }
        for ancestor in self.ancestor_hashes(key) {
            *self.below_counts.entry(ancestor).or_default() += 1;
        }
        true
    }

    /// Uncounts `key`, which the map held until now.
    pub(crate) fn remove(&mut self, key: &str) {
        self.len = self.len.saturating_sub(1);
        if self.nested.remove(key) {
            for ancestor in self.ancestor_hashes(key) {
                if let Some(count) = self.below_counts.get_mut(&ancestor) {
                    *count -= 1;
                    if *count == 0 {
                        self.below_counts.remove(&ancestor);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The reference: a sorted set and prefix scans over all of it.
    fn model_below(model: &BTreeSet<String>, key: &str) -> Vec<String> {
        let prefix = format!("{key}{KEY_SEPARATOR}");
        model
            .iter()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect()
    }

    fn key(segments: &[u8]) -> String {
        segments
            .iter()
            .map(|s| ((b'a' + s % 3) as char).to_string())
            .collect::<Vec<_>>()
            .join(&KEY_SEPARATOR.to_string())
    }

    proptest! {
        /// Any sequence of inserts and removes answers like a sorted set scanned in full.
        #[test]
        fn answers_like_a_sorted_set(
            steps in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 1..4)),
                1..60,
            )
        ) {
            let mut index = KeyIndex::default();
            let mut model = BTreeSet::new();
            for (add, segments) in &steps {
                // As the document calls it: what the map did not hold / held.
                let k = key(segments);
                if *add {
                    if model.insert(k.clone()) {
                        index.insert(&Arc::from(k.as_str()));
                    }
                } else if model.remove(&k) {
                    index.remove(&k);
                }
                prop_assert_eq!(index.len(), model.len());
                for (_, probe) in &steps {
                    for end in 1..=probe.len() {
                        let p = key(&probe[..end]);
                        let below: Vec<String> = index.below(&p).map(|k| k.to_string()).collect();
                        let expected = model_below(&model, &p);
                        prop_assert_eq!(index.has_below(&p), !expected.is_empty());
                        prop_assert_eq!(below, expected);
                    }
                }
            }
            // Everything removed leaves no count behind.
            for k in model {
                index.remove(&k);
            }
            prop_assert_eq!(index.len(), 0);
            prop_assert!(index.below_counts.is_empty() && index.nested.is_empty());
        }
    }

    /// A peer's key of 100k segments costs one count per segment, not a copy of every
    /// ancestor's text.
    #[test]
    fn a_deep_key_stays_linear() {
        let mut index = KeyIndex::default();
        let deep: String = vec!["s"; 100_000].join(&KEY_SEPARATOR.to_string());
        index.insert_copied(&deep);
        assert_eq!(index.below_counts.len(), 99_999);
        assert!(index.has_below("s") && index.has_below(&deep[..deep.len() - 2]));
        assert!(!index.has_below(&deep));
        assert_eq!(index.below("s").count(), 1);
        index.remove(&deep);
        assert!(index.below_counts.is_empty() && index.len() == 0);
    }
}
