//! Validated tokens by their text, bounded by estimated bytes. A repeated token's request
//! reads it under a shared lock with one hash of the token; a never-seen token's insert
//! takes one shard's lock and evicts by CLOCK (an entry used since the hand last passed it
//! gets another round), with no background housekeeping. Entries are not dropped when
//! their token expires: the reader checks `exp` and removes them, and the byte bound keeps
//! the rest in check.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

const SHARDS: usize = 16;

pub struct TokenCache<V> {
    shards: Box<[RwLock<Shard<V>>]>,
    /// Seeded per process; only validated tokens are inserted, so nobody can flood a bucket,
    /// and SipHash over a whole token would cost thousands of instructions per request.
    hasher: foldhash::fast::RandomState,
    /// The estimated bytes one shard may hold.
    budget: u64,
}

struct Shard<V> {
    table: HashTable<Slot<V>>,
    /// Every key of `table` (and a few removed ones) in the order the hand visits them.
    clock: VecDeque<(u64, Arc<str>)>,
    bytes: u64,
}

struct Slot<V> {
    key: Arc<str>,
    hash: u64,
    value: V,
    weight: u64,
    used: AtomicBool,
}

impl<V: Clone> TokenCache<V> {
    /// At most about `max_bytes` of entries, by the weights given to `insert`.
    pub fn new(max_bytes: u64) -> Self {
        TokenCache {
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        table: HashTable::new(),
                        clock: VecDeque::new(),
                        bytes: 0,
                    })
                })
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            budget: max_bytes / SHARDS as u64,
        }
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard<V>> {
        // The top bits: the table uses the low ones for buckets.
        &self.shards[(hash >> 60) as usize % SHARDS]
    }

    fn read(&self, hash: u64) -> RwLockReadGuard<'_, Shard<V>> {
        // A poisoned shard only means another thread panicked mid-update; entries are whole.
        self.shard(hash).read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, hash: u64) -> RwLockWriteGuard<'_, Shard<V>> {
        self.shard(hash).write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<V> {
        let hash = self.hasher.hash_one(key);
        let shard = self.read(hash);
        let slot = shard
            .table
            .find(hash, |s| s.hash == hash && *s.key == *key)?;
        if !slot.used.load(Ordering::Relaxed) {
            slot.used.store(true, Ordering::Relaxed);
        }
        Some(slot.value.clone())
    }

    pub fn insert(&self, key: Arc<str>, value: V, weight: u64) {
        let hash = self.hasher.hash_one(&*key);
        let mut guard = self.write(hash);
        let shard = &mut *guard;
        match shard
            .table
            .find_mut(hash, |s| s.hash == hash && *s.key == *key)
        {
            Some(slot) => {
                shard.bytes = shard.bytes - slot.weight + weight;
                slot.value = value;
                slot.weight = weight;
            }
            None => {
                shard.clock.push_back((hash, key.clone()));
                shard.table.insert_unique(
                    hash,
                    Slot {
                        key,
                        hash,
                        value,
                        weight,
                        used: AtomicBool::new(false),
                    },
                    |s| s.hash,
                );
                shard.bytes += weight;
            }
        }
        shard.evict(self.budget);
    }

    pub fn remove(&self, key: &str) {
        let hash = self.hasher.hash_one(key);
        let mut guard = self.write(hash);
        let shard = &mut *guard;
        if let Ok(entry) = shard
            .table
            .find_entry(hash, |s| s.hash == hash && *s.key == *key)
        {
            let (slot, _) = entry.remove();
            shard.bytes -= slot.weight;
        }
        // The hand skips keys that are gone; drop them once they outnumber the live ones.
        if shard.clock.len() > 2 * shard.table.len() + 64 {
            let Shard { table, clock, .. } = shard;
            clock.retain(|(h, k)| table.find(*h, |s| s.key == *k).is_some());
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).table.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The estimated bytes held now.
    pub fn bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }
}

impl<V> Shard<V> {
    fn evict(&mut self, budget: u64) {
        // Each key is passed at most twice: once to clear its use, once to evict it.
        let mut passes = 2 * self.clock.len();
        while self.bytes > budget && passes > 0 {
            passes -= 1;
            let Some((hash, key)) = self.clock.pop_front() else {
                break;
            };
            let Ok(entry) = self
                .table
                .find_entry(hash, |s| s.hash == hash && s.key == key)
            else {
                continue;
            };
            if entry.get().used.swap(false, Ordering::Relaxed) {
                self.clock.push_back((hash, key));
            } else {
                let (slot, _) = entry.remove();
                self.bytes -= slot.weight;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Arc<str> {
        format!("token-{i}").into()
    }

    #[test]
    fn finds_what_it_holds_and_forgets_what_is_removed() {
        let cache = TokenCache::new(1 << 20);
        assert_eq!(cache.get("a"), None);
        cache.insert("a".into(), 1, 10);
        cache.insert("b".into(), 2, 10);
        assert_eq!(cache.get("a"), Some(1));
        assert_eq!(cache.get("b"), Some(2));
        cache.insert("a".into(), 3, 30);
        assert_eq!(cache.get("a"), Some(3));
        assert_eq!((cache.len(), cache.bytes()), (2, 40));
        cache.remove("a");
        assert_eq!(cache.get("a"), None);
        assert_eq!((cache.len(), cache.bytes()), (1, 10));
        cache.remove("nothing");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn stays_within_its_bytes_and_keeps_what_is_used() {
        // 16 shards of 1,000 bytes, entries of 100: about 160 fit.
        let cache = TokenCache::new(16_000);
        cache.insert("hot".into(), usize::MAX, 100);
        for i in 0..5_000 {
            cache.insert(key(i), i, 100);
            // The hot token is read between every insert, so the hand always spares it.
            assert_eq!(cache.get("hot"), Some(usize::MAX), "after {i} inserts");
        }
        assert!(cache.bytes() <= 16_000, "{} bytes", cache.bytes());
        assert!(cache.len() >= 100, "only {} entries", cache.len());
        assert_eq!(cache.get(&key(4_999)), Some(4_999), "the newest stays");
        for shard in cache.shards.iter() {
            let s = shard.read().unwrap();
            assert_eq!(
                s.clock.len(),
                s.table.len(),
                "the hand visits every key once"
            );
        }
    }

    #[test]
    fn removed_keys_do_not_pile_up_in_the_clock() {
        let cache = TokenCache::new(1 << 30);
        for round in 0..10_000 {
            let k = key(round % 7);
            cache.insert(k.clone(), round, 10);
            cache.remove(&k);
        }
        assert!(cache.is_empty());
        for shard in cache.shards.iter() {
            assert!(shard.read().unwrap().clock.len() <= 64 + 1);
        }
    }

    #[test]
    fn an_entry_bigger_than_a_shard_does_not_stay() {
        let cache = TokenCache::new(1_600);
        cache.insert("huge".into(), 1, 10_000);
        assert_eq!(cache.get("huge"), None);
        assert_eq!(cache.bytes(), 0);
    }
}
