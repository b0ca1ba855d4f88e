//! The one cache kas keeps answers in: entries live for a fixed time, and
//! whoever owns a cache drops entries when what they depend on changes.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value, if it is younger than the cache's TTL.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock();
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, value)| value.clone())
    }

    /// Stores a value (and forgets expired ones, so the cache stays small).
    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock();
        entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
        entries.insert(key, (Instant::now(), value));
    }

    pub fn remove(&self, key: &K) {
        self.entries.lock().remove(key);
    }

    /// Keeps only the entries for which `keep` holds.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.entries.lock().retain(|key, (_, value)| keep(key, value));
    }

    pub fn clear(&self) {
        self.entries.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_for_the_ttl_and_can_be_dropped() {
        let cache = TtlCache::new(Duration::from_secs(3600));
        cache.insert(1, "a");
        cache.insert(2, "b");
        cache.insert(3, "c");
        assert_eq!(cache.get(&1), Some("a"));
        cache.remove(&1);
        assert_eq!(cache.get(&1), None);
        cache.retain(|key, _| *key != 2);
        assert_eq!((cache.get(&2), cache.get(&3)), (None, Some("c")));
        cache.clear();
        assert_eq!(cache.get(&3), None);

        let expired = TtlCache::new(Duration::ZERO);
        expired.insert(1, "a");
        assert_eq!(expired.get(&1), None, "older than a zero TTL");
    }
}
