//! The one cache kas keeps answers in: entries live for a fixed time, and
//! whoever owns a cache drops entries when what they depend on changes.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (Instant, V)>>,
    /// Bumped by every removal, so that a value computed before one is not
    /// stored after it (see [`TtlCache::insert_unless_changed`]).
    generation: AtomicU64,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
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

    /// Where the cache is now: take it before computing a value that
    /// [`insert_unless_changed`](Self::insert_unless_changed) will store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Stores a value computed since `generation`, unless something was
    /// removed in the meantime (the value may be stale then). Returns
    /// whether it was stored.
    pub fn insert_unless_changed(&self, key: K, value: V, generation: u64) -> bool {
        let mut entries = self.entries.lock();
        if self.generation.load(Ordering::SeqCst) != generation {
            return false;
        }
        entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
        entries.insert(key, (Instant::now(), value));
        true
    }

    pub fn remove(&self, key: &K) {
        let mut entries = self.entries.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.remove(key);
    }

    /// Keeps only the entries for which `keep` holds.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        let mut entries = self.entries.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.retain(|key, (_, value)| keep(key, value));
    }

    pub fn clear(&self) {
        let mut entries = self.entries.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
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

        // A value computed before a removal is not stored after it.
        let since = cache.generation();
        cache.clear();
        assert!(!cache.insert_unless_changed(4, "stale", since));
        assert_eq!(cache.get(&4), None);
        assert!(cache.insert_unless_changed(4, "fresh", cache.generation()));
        assert_eq!(cache.get(&4), Some("fresh"));

        let expired = TtlCache::new(Duration::ZERO);
        expired.insert(1, "a");
        assert_eq!(expired.get(&1), None, "older than a zero TTL");
    }
}
