//! Validated tokens by their text, bounded by estimated bytes. A repeated token's request
//! reads it under a shared lock with one hash of the token; a never-seen token's insert
//! takes one shard's lock and evicts by CLOCK (an entry used since the hand last passed it
//! gets another round), with no background housekeeping. Entries are not dropped when
//! their token expires: the reader checks `exp` and removes them, and the byte bound keeps
//! the rest in check.
//!
//! A full shard admits a new token only on its second sighting (TinyLFU's "doorkeeper"): the
//! first insert of a token that would need room only notes its hash. A stream of tokens that
//! are each used once (many clients, or one that mints a token per call) then costs neither an
//! entry's allocation nor an eviction, and cannot push out the tokens that are being reused.
//! What a token used again pays for it is one more signature check, on its second request;
//! if other turned-away tokens take its slot before it comes back, one check per request until
//! it gets in (see `DOORKEEPER_SLOTS`).

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

const SHARDS: usize = 16;
/// Slots of the doorkeeper: 512 KiB. A slot is overwritten by the next turned-away token that
/// lands on it, so a token's second request is admitted if it comes before about 65,536
/// other turned-away tokens (about 6 s at 10,000 new tokens a second); a token reused more
/// slowly than that is checked again, at the rate its client sends it.
const DOORKEEPER_SLOTS: usize = 1 << 16;

pub struct TokenCache<V> {
    shards: Box<[RwLock<Shard<V>>]>,
    /// Seeded per process; only validated tokens are inserted, so nobody can flood a bucket,
    /// and SipHash over a whole token would cost thousands of instructions per request.
    hasher: foldhash::fast::RandomState,
    /// The estimated bytes one shard may hold.
    budget: u64,
    /// The hash of the last first-seen token that found its shard full, by the hash's low bits.
    doorkeeper: Box<[AtomicU64]>,
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
            doorkeeper: (0..DOORKEEPER_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard<V>> {
        // Middle bits: hashbrown takes its buckets from the low bits and each entry's tag
        // from the top seven, so a shard chosen by either would leave its table fewer.
        &self.shards[(hash >> 32) as usize % SHARDS]
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

    /// Stores `value()` under `key` unless the shard is full and `key` was not offered
    /// before (see the module's note); `value` is called only if it is stored. Whether it was.
    pub fn insert(&self, key: &str, weight: u64, value: impl FnOnce() -> V) -> bool {
        let hash = self.hasher.hash_one(key);
        let mut guard = self.write(hash);
        let shard = &mut *guard;
        match shard
            .table
            .find_mut(hash, |s| s.hash == hash && *s.key == *key)
        {
            Some(slot) => {
                // The value first: a panic in it leaves the slot and the count as they were.
                let value = value();
                shard.bytes = shard.bytes - slot.weight + weight;
                slot.value = value;
                slot.weight = weight;
            }
            None => {
                // A token admitted to a full shard has shown it is reused: like an entry read
                // since the hand passed, it gets a round, and is not the hand's next victim.
                let full = shard.bytes.saturating_add(weight) > self.budget;
                if full && !self.seen_before(hash) {
                    return false;
                }
                let key: Arc<str> = Arc::from(key);
                shard.clock.push_back((hash, key.clone()));
                shard.table.insert_unique(
                    hash,
                    Slot {
                        key,
                        hash,
                        value: value(),
                        weight,
                        used: AtomicBool::new(full),
                    },
                    |s| s.hash,
                );
                shard.bytes += weight;
            }
        }
        shard.evict(self.budget);
        true
    }

    /// Whether the doorkeeper holds `hash` (and forgets it if so); notes it if not. Two
    /// tokens with the same 64-bit hash only mean that the second is admitted early.
    fn seen_before(&self, hash: u64) -> bool {
        let slot = &self.doorkeeper[(hash as usize) % DOORKEEPER_SLOTS];
        // Zero marks an empty slot, so a token whose hash is zero is never held back.
        if hash == 0 || slot.load(Ordering::Relaxed) == hash {
            slot.store(0, Ordering::Relaxed);
            return true;
        }
        slot.store(hash, Ordering::Relaxed);
        false
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
        cache.insert("a", 10, || 1);
        cache.insert("b", 10, || 2);
        assert_eq!(cache.get("a"), Some(1));
        assert_eq!(cache.get("b"), Some(2));
        cache.insert("a", 30, || 3);
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
        cache.insert("hot", 100, || usize::MAX);
        for i in 0..5_000 {
            // Offered twice, as a reused token is: a full shard admits it the second time.
            cache.insert(&key(i), 100, || i);
            cache.insert(&key(i), 100, || i);
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
            cache.insert(&k, 10, || round);
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
        for _ in 0..2 {
            cache.insert("huge", 10_000, || 1);
            assert_eq!(cache.get("huge"), None);
            assert_eq!(cache.bytes(), 0);
        }
    }

    #[test]
    fn a_full_cache_admits_a_new_token_on_its_second_sighting() {
        // 16 shards of 1,000 bytes, entries of 100: the first ~160 keys fit.
        let cache = TokenCache::new(16_000);
        let stored: Vec<bool> = (0..2_000)
            .map(|i| cache.insert(&key(i), 100, || i))
            .collect();
        let kept = stored.iter().filter(|s| **s).count();
        assert_eq!(kept, cache.len(), "every stored key is still there");
        assert!((100..=160).contains(&kept), "{kept} stored");
        // The keys seen once after the cache filled displaced none of those before them.
        for (i, s) in stored.iter().enumerate() {
            assert_eq!(cache.get(&key(i)).is_some(), *s, "key {i}");
        }
        // A new key: noted the first time, stored the second, evicting an unused entry.
        let new = key(9_999);
        assert!(!cache.insert(&new, 100, || 9_999));
        assert_eq!(cache.get(&new), None);
        let mut called = false;
        assert!(cache.insert(&new, 100, || {
            called = true;
            9_999
        }));
        assert!(called);
        assert_eq!(cache.get(&new), Some(9_999));
        assert_eq!(cache.len(), kept, "one entry made room for it");
        assert!(cache.bytes() <= 16_000);
        // Refused keys never build their value.
        assert!(!cache.insert(&key(10_000), 100, || unreachable!("not stored")));
    }
}
