//! The in-process store: TATs in 64 mutex-guarded shards, so worker threads rarely meet on
//! one lock; bounded in keys: a full shard forgets its oldest key in O(1) (a flood of new
//! keys costs no scan), and idle keys (a TAT in the past) are swept regularly.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Instant;

use super::gcra::{check, Decision, Rate};

const SHARDS: usize = 64;

/// The maps' keys are already SipHash values under a random key.
type Tats = HashMap<u64, u64, crate::random_keys::RandomKeyed>;

#[derive(Default)]
struct Shard {
    tats: Tats,
    /// Every key of `tats` once, oldest first.
    order: VecDeque<u64>,
}

pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    max_per_shard: usize,
    epoch: Instant,
}

impl MemoryStore {
    pub fn new(max_keys: usize) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            max_per_shard: (max_keys / SHARDS).max(16),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Checks and counts one request for `key` (already namespaced by limit).
    pub fn check(&self, key: &[u8], rate: Rate) -> Decision {
        let hash = self.hasher.hash_one(key);
        let now = self.now();
        // Bits the maps use for neither bucket (low) nor tag (top) pick the shard.
        let shard = &self.shards[((hash >> 32) as usize) % SHARDS];
        // A poisoned shard only means another thread panicked mid-update; the map is fine.
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let shard = &mut *shard;
        let known = shard.tats.get_mut(&hash);
        let (decision, tat) = check(known.as_deref().copied(), now, rate);
        if decision.allowed {
            if let Some(t) = known {
                *t = tat;
            } else {
                if shard.tats.len() >= self.max_per_shard {
                    // Full: forget the oldest key rather than grow (or scan) without bound.
                    if let Some(victim) = shard.order.pop_front() {
                        shard.tats.remove(&victim);
                    }
                }
                shard.tats.insert(hash, tat);
                shard.order.push_back(hash);
            }
        }
        decision
    }

    /// Drops keys whose TAT is past: they would start fresh anyway.
    pub fn sweep(&self) {
        let now = self.now();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let Shard { tats, order } = &mut *shard;
            tats.retain(|_, t| *t > now);
            order.retain(|k| tats.contains_key(k));
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).tats.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_are_independent_and_bounded() {
        let store = MemoryStore::new(16 * SHARDS);
        let rate = Rate::new(2, Duration::from_secs(60), 2);
        assert!(store.check(b"a", rate).allowed);
        assert!(store.check(b"a", rate).allowed);
        assert!(!store.check(b"a", rate).allowed);
        assert!(store.check(b"b", rate).allowed);
        for i in 0..100_000u32 {
            store.check(&i.to_le_bytes(), rate);
        }
        assert!(store.len() <= 16 * SHARDS);
        for shard in &store.shards {
            let s = shard.lock().unwrap();
            assert_eq!(
                s.order.len(),
                s.tats.len(),
                "the queue holds every key once"
            );
        }
        store.sweep();
        for shard in &store.shards {
            let s = shard.lock().unwrap();
            assert_eq!(s.order.len(), s.tats.len());
        }
    }
}
