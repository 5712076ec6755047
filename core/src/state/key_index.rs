//! The entry keys of a document's root map, indexed for the questions a flattened tree asks:
//! is this key a leaf, does anything lie below it, which leaves lie below it.
//!
//! Most writes touch flat keys, so the common questions are hash lookups: membership in
//! `keys`, and "anything below?" in `below_counts` (how many leaves lie under each ancestor
//! path). Only nested keys are also kept sorted, for the subtree scans that a write over an
//! object, or a read of one, needs. Keys are `Arc<str>` shared with yrs's own map, so a key
//! is allocated once however many places hold it.

use std::{collections::BTreeSet, ops::Bound, sync::Arc};

use foldhash::{HashMap, HashSet};

use super::document::KEY_SEPARATOR;

/// Entry keys present in a root map. Seeded hashing (foldhash's per-process seed) because
/// keys come from peers.
#[derive(Default)]
pub(crate) struct KeyIndex {
    keys: HashSet<Arc<str>>,
    /// For each proper ancestor of a key (`a` and `a␟b` for `a␟b␟c`): how many keys lie below.
    below_counts: HashMap<Box<str>, u32>,
    /// The keys that have a separator, sorted: a subtree is a range of it.
    nested: BTreeSet<Arc<str>>,
}

/// The proper ancestors of `key`, nearest the root first.
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    key.match_indices(KEY_SEPARATOR).map(|(cut, _)| &key[..cut])
}

impl KeyIndex {
    /// How many keys there are.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Every key, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.keys.iter()
    }

    /// Whether `key` is a leaf.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Whether any key lies strictly below `key`.
    pub(crate) fn has_below(&self, key: &str) -> bool {
        self.below_counts.contains_key(key)
    }

    /// Whether `key` is a leaf or has leaves below it.
    pub(crate) fn occupied(&self, key: &str) -> bool {
        self.contains(key) || self.has_below(key)
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

    /// Adds `key`; false when it was there already.
    pub(crate) fn insert(&mut self, key: Arc<str>) -> bool {
        if self.keys.contains(&key) {
            return false;
        }
        if key.contains(KEY_SEPARATOR) {
            for ancestor in ancestors(&key) {
                match self.below_counts.get_mut(ancestor) {
                    Some(count) => *count += 1,
                    None => {
                        self.below_counts.insert(ancestor.into(), 1);
                    }
                }
            }
            self.nested.insert(key.clone());
        }
        self.keys.insert(key)
    }

    /// Removes `key`, returning it; `None` when it was not there.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Arc<str>> {
        let key = self.keys.take(key)?;
        if self.nested.remove(&*key) {
            for ancestor in ancestors(&key) {
                if let Some(count) = self.below_counts.get_mut(ancestor) {
                    *count -= 1;
                    if *count == 0 {
                        self.below_counts.remove(ancestor);
                    }
                }
            }
        }
        Some(key)
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
                let k = key(segments);
                if *add {
                    prop_assert_eq!(index.insert(Arc::from(k.as_str())), model.insert(k.clone()));
                } else {
                    prop_assert_eq!(index.remove(&k).is_some(), model.remove(&k));
                }
                prop_assert_eq!(index.len(), model.len());
                for (_, probe) in &steps {
                    for end in 1..=probe.len() {
                        let p = key(&probe[..end]);
                        let below: Vec<String> = index.below(&p).map(|k| k.to_string()).collect();
                        let expected = model_below(&model, &p);
                        prop_assert_eq!(index.has_below(&p), !expected.is_empty());
                        prop_assert_eq!(below, expected);
                        prop_assert_eq!(index.contains(&p), model.contains(&p));
                    }
                }
            }
            // Everything removed leaves no count behind.
            for k in model {
                prop_assert!(index.remove(&k).is_some());
            }
            prop_assert!(index.below_counts.is_empty() && index.nested.is_empty());
        }
    }
}
