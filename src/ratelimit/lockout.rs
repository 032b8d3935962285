//! The auth-failure lockout: client IPs that keep failing authentication are refused for a
//! cool-down, whatever they send, so guessing keys or tokens gets nowhere (and learns
//! nothing about near misses).
//!
//! Bounded: at most `max_clients` addresses are remembered, in 16 shards, each evicting its
//! oldest entry in O(1) when full. A locked-out client gets a second chance at the front of
//! the queue (a few probes at most), so a flood of fresh addresses does not unlock it. IPv6
//! clients are counted by their `ipv6_prefix` (a /64 by default): one host holds a whole /64
//! and could otherwise rotate through it.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::client_key;
use super::gcra::{self, Rate};
use crate::config::AuthFailureLimitConfig;

const SHARDS: usize = 16;

/// How many entries an eviction looks at before it takes one even if it is locked out.
const EVICTION_PROBES: usize = 8;

/// One client's failures: GCRA's TAT, and the end of its lockout (0: none); nanoseconds
/// after the lockout's epoch.
#[derive(Clone, Copy)]
struct Failures {
    tat: u64,
    locked_until: u64,
}

#[derive(Default)]
struct Shard {
    clients: HashMap<IpAddr, Failures>,
    /// Every key of `clients` once, oldest first.
    order: VecDeque<IpAddr>,
}

impl Shard {
    /// Makes room for one more: drops the oldest entry that is not locked out (locked ones
    /// go to the back, at most `EVICTION_PROBES` looks). Returns the entries looked at.
    fn evict_one(&mut self, now: u64) -> usize {
        for probe in 1..=EVICTION_PROBES {
            let Some(key) = self.order.pop_front() else {
                return probe;
            };
            let locked = self.clients.get(&key).is_some_and(|f| f.locked_until > now);
            if locked && probe < EVICTION_PROBES {
                self.order.push_back(key);
            } else {
                self.clients.remove(&key);
                return probe;
            }
        }
        EVICTION_PROBES
    }
}

pub struct AuthFailures {
    config: AuthFailureLimitConfig,
    rate: Rate,
    epoch: Instant,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
}

impl AuthFailures {
    pub fn new(config: &AuthFailureLimitConfig) -> Self {
        AuthFailures {
            rate: Rate::new(config.max_failures, config.window, config.max_failures),
            config: config.clone(),
            epoch: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: (config.max_clients / SHARDS).max(1),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn shard(&self, key: &IpAddr) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        // A poisoned shard only means another thread panicked mid-update; the map is fine.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds left of this client's cool-down, if it is locked out.
    pub fn locked(&self, ip: IpAddr) -> Option<u64> {
        if !self.config.enabled {
            return None;
        }
        let key = client_key(ip, self.config.ipv6_prefix);
        let until = self.shard(&key).clients.get(&key)?.locked_until;
        let left = until.checked_sub(self.now()).filter(|l| *l > 0)?;
        Some(Duration::from_nanos(left).as_secs().max(1))
    }

    /// Counts a failed authentication; true when it starts a lockout.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        self.record(ip).0
    }

    /// [`Self::record_failure`], and how many entries it looked at (bounded: O(1)).
    fn record(&self, ip: IpAddr) -> (bool, usize) {
        if !self.config.enabled {
            return (false, 0);
        }
        let key = client_key(ip, self.config.ipv6_prefix);
        let now = self.now();
        let mut shard = self.shard(&key);
        let mut work = 1;
        if !shard.clients.contains_key(&key) {
            if shard.clients.len() >= self.per_shard {
                work += shard.evict_one(now);
            }
            shard.order.push_back(key);
        }
        let entry = shard.clients.entry(key).or_insert(Failures {
            tat: 0,
            locked_until: 0,
        });
        let (decision, tat) = gcra::check(Some(entry.tat), now, self.rate);
        entry.tat = tat;
        if !decision.allowed && entry.locked_until <= now {
            entry.locked_until = now.saturating_add(self.config.cooldown.as_nanos() as u64);
            return (true, work);
        }
        (false, work)
    }

    pub fn cooldown(&self) -> Duration {
        self.config.cooldown
    }

    /// Clients remembered now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clients.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_failures: u64, max_clients: usize) -> AuthFailureLimitConfig {
        AuthFailureLimitConfig {
            enabled: true,
            max_failures,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(300),
            ipv6_prefix: 64,
            max_clients,
        }
    }

    #[test]
    fn lockout_after_too_many_failures() {
        let f = AuthFailures::new(&config(3, 100_000));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!f.record_failure(ip));
        assert!(!f.record_failure(ip));
        assert!(!f.record_failure(ip));
        assert!(f.locked(ip).is_none());
        assert!(f.record_failure(ip), "the fourth failure locks out");
        assert!(f.locked(ip).is_some_and(|s| s > 290));
        assert!(f.locked("192.0.2.2".parse().unwrap()).is_none());
        // The same client through a dual-stack socket.
        assert!(f.locked("::ffff:192.0.2.1".parse().unwrap()).is_some());
    }

    #[test]
    fn ipv6_clients_are_locked_out_by_their_slash_64() {
        let f = AuthFailures::new(&config(2, 100_000));
        for i in 1..=3u16 {
            f.record_failure(IpAddr::V6([0x2001, 0xdb8, 1, 2, i, i, i, i].into()));
        }
        let elsewhere_in_64: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        assert!(
            f.locked(elsewhere_in_64).is_some(),
            "rotating inside the /64"
        );
        assert!(f.locked("2001:db8:1:3::1".parse().unwrap()).is_none());
        assert_eq!(f.len(), 1, "one entry for the /64");
        // Per address when configured so.
        let per_address = AuthFailures::new(&AuthFailureLimitConfig {
            ipv6_prefix: 128,
            ..config(2, 100_000)
        });
        for i in 1..=3u16 {
            per_address.record_failure(IpAddr::V6([0x2001, 0xdb8, 1, 2, 0, 0, 0, i].into()));
        }
        assert!(per_address
            .locked("2001:db8:1:2::9".parse().unwrap())
            .is_none());
    }

    #[test]
    fn memory_and_work_stay_bounded_past_the_capacity() {
        let capacity = 100_000;
        let f = AuthFailures::new(&config(3, capacity));
        // A locked-out client...
        let attacker: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..4 {
            f.record_failure(attacker);
        }
        assert!(f.locked(attacker).is_some());
        // ...then 250,000 other addresses fail once each.
        let mut most_work = 0;
        for i in 0..250_000u32 {
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            most_work = most_work.max(f.record(ip).1);
        }
        assert!(f.len() <= capacity, "{} entries", f.len());
        assert!(f.len() >= capacity - SHARDS * 2_000, "{} entries", f.len());
        assert!(
            most_work <= 1 + EVICTION_PROBES,
            "a failure looked at {most_work} entries"
        );
        for shard in f.shards.iter() {
            let s = shard.lock().unwrap();
            assert_eq!(
                s.order.len(),
                s.clients.len(),
                "the queue holds every key once"
            );
        }
        assert!(
            f.locked(attacker).is_some(),
            "a flood of fresh addresses does not unlock a client"
        );
    }

    #[test]
    fn disabled_counts_nothing() {
        let f = AuthFailures::new(&AuthFailureLimitConfig {
            enabled: false,
            ..config(1, 10)
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            assert!(!f.record_failure(ip));
        }
        assert!(f.locked(ip).is_none());
        assert!(f.is_empty());
    }
}
