//! The one-instance session store: sessions in sharded hash maps keyed by the SHA-256 of the
//! id (32 bytes), each with its expiry, swept regularly; indexes by subject and IdP session
//! id for logout-everywhere, cleaned as sessions end. Plain maps rather than a cache crate:
//! with 100,000 sessions the per-entry bookkeeping is what decides the memory. A full store
//! makes room by sampling, as Redis evicts: a login never scans the store.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

use super::{Issuer, Session, SessionStore, StoreError, Stored};

type Key = [u8; 32];

struct Slot {
    session: Arc<Session>,
    /// Milliseconds after the store's start (half the size of an `Instant`).
    expires: u64,
    /// Where the key sits in its shard's `keys`.
    at: u32,
}

/// One shard's sessions, and their keys side by side so that one can be drawn at random.
#[derive(Default)]
struct Sessions {
    map: HashMap<Key, Slot, crate::random_keys::RandomKeyed>,
    keys: Vec<Key>,
}

impl Sessions {
    fn insert(&mut self, key: Key, session: Arc<Session>, expires: u64) -> Option<Arc<Session>> {
        if let Some(slot) = self.map.get_mut(&key) {
            slot.expires = expires;
            return Some(std::mem::replace(&mut slot.session, session));
        }
        let at = self.keys.len() as u32;
        self.keys.push(key);
        self.map.insert(
            key,
            Slot {
                session,
                expires,
                at,
            },
        );
        None
    }

    fn remove(&mut self, key: &Key) -> Option<Slot> {
        let slot = self.map.remove(key)?;
        let at = slot.at as usize;
        self.keys.swap_remove(at);
        // The last key took the removed one's place.
        if let Some(moved) = self.keys.get(at) {
            if let Some(s) = self.map.get_mut(moved) {
                s.at = at as u32;
            }
        }
        Some(slot)
    }

    /// A session drawn at random, with its expiry.
    fn sample(&self) -> Option<(Key, u64)> {
        if self.keys.is_empty() {
            return None;
        }
        let key = self.keys[rand::random::<usize>() % self.keys.len()];
        Some((key, self.map.get(&key)?.expires))
    }

    /// The session closest to its end.
    fn closest_to_end(&self) -> Option<(Key, u64)> {
        self.map
            .iter()
            .min_by_key(|(_, slot)| slot.expires)
            .map(|(k, slot)| (*k, slot.expires))
    }
}

type Shard = RwLock<Sessions>;

const SHARDS: usize = 16;

/// Logins in progress kept at most.
const PENDING_LOGINS: u64 = 100_000;
/// How many sessions a full store draws to pick the one to drop (Redis draws 5 by default).
const EVICTION_SAMPLES: usize = 16;
/// A store this small is searched whole: it costs no more than drawing.
const SEARCHED_WHOLE: usize = 4 * EVICTION_SAMPLES;

/// The sessions under one name: nearly always one, kept inline.
enum Keys {
    One(Key),
    Many(Vec<Key>),
}

impl Keys {
    fn as_slice(&self) -> &[Key] {
        match self {
            Keys::One(k) => std::slice::from_ref(k),
            Keys::Many(v) => v,
        }
    }
}

/// Sessions by the keyed hash of a name (subject or IdP session id). Two names that share a
/// hash only share a list: sessions are checked by name before they end.
#[derive(Default)]
struct Index {
    map: Mutex<HashMap<u64, Keys>>,
    hasher: RandomState,
}

impl Index {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Keys>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, name: &str, key: Key) {
        let h = self.hasher.hash_one(name);
        let mut map = self.lock();
        match map.get_mut(&h) {
            None => {
                map.insert(h, Keys::One(key));
            }
            Some(keys) if keys.as_slice().contains(&key) => {}
            Some(Keys::One(first)) => {
                let first = *first;
                map.insert(h, Keys::Many(vec![first, key]));
            }
            Some(Keys::Many(list)) => list.push(key),
        }
    }

    fn remove(&self, name: &str, key: &Key) {
        let h = self.hasher.hash_one(name);
        let mut map = self.lock();
        let emptied = match map.get_mut(&h) {
            Some(Keys::One(k)) => k == key,
            Some(Keys::Many(list)) => {
                list.retain(|k| k != key);
                list.is_empty()
            }
            None => false,
        };
        if emptied {
            map.remove(&h);
        }
    }

    fn candidates(&self, name: &str) -> Vec<Key> {
        let h = self.hasher.hash_one(name);
        self.lock()
            .get(&h)
            .map(|keys| keys.as_slice().to_vec())
            .unwrap_or_default()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

pub struct MemoryStore {
    shards: Box<[Shard]>,
    len: AtomicUsize,
    max_sessions: usize,
    /// Sessions dropped to make room, and when that was last logged (slot milliseconds).
    evicted: AtomicU64,
    evictions_logged_at: AtomicU64,
    once: Cache<String, Arc<Vec<u8>>>,
    locks: Mutex<HashMap<String, Instant>>,
    /// What slot expiries count from.
    epoch: Instant,
    by_subject: Index,
    by_sid: Index,
}

/// The digest a session is kept under. The gateway's ids are 64 hex digits: their 32 bytes
/// fit one SHA-256 block where the hex takes two, on every request. (Redis keeps the digest
/// of the hex, its stored format.)
fn key(session_id: &str) -> Key {
    match <&[u8; 64]>::try_from(session_id.as_bytes()) {
        Ok(id) => RECENT_KEYS.with(|recent| recent.borrow_mut().key(id)),
        Err(_) => Sha256::digest(session_id.as_bytes()).into(),
    }
}

fn digest(id: &[u8; 64]) -> Key {
    match id_bytes(id) {
        Some(raw) => Sha256::digest(raw).into(),
        None => Sha256::digest(id).into(),
    }
}

/// How many ids each worker thread remembers the digests of.
const RECENT: usize = 4;

thread_local! {
    /// The digests of the last few session ids this thread looked up: a browser's requests
    /// come one after another on one connection, so most lookups skip the SHA-256. Holding
    /// four ids per thread keeps the store's promise: no more ids than the thread's recent
    /// request buffers held anyway, never the store's many.
    static RECENT_KEYS: std::cell::RefCell<RecentKeys> =
        const { std::cell::RefCell::new(RecentKeys::new()) };
}

struct RecentKeys {
    ids: [[u8; 64]; RECENT],
    keys: [Key; RECENT],
    filled: usize,
    /// The slot the next new id takes (oldest first).
    next: usize,
}

impl RecentKeys {
    const fn new() -> Self {
        RecentKeys {
            ids: [[0; 64]; RECENT],
            keys: [[0; 32]; RECENT],
            filled: 0,
            next: 0,
        }
    }

    /// Compared as the client sent it (hex), so a hit decodes nothing.
    fn key(&mut self, id: &[u8; 64]) -> Key {
        if let Some(i) = self.ids[..self.filled].iter().position(|known| known == id) {
            return self.keys[i];
        }
        let key = digest(id);
        self.ids[self.next] = *id;
        self.keys[self.next] = key;
        self.next = (self.next + 1) % RECENT;
        self.filled = (self.filled + 1).min(RECENT);
        key
    }
}

/// The 32 bytes of a gateway-made id: exactly 64 lower-case hex digits (`ABC…` must not
/// name the session `abc…` names), read in one pass.
fn id_bytes(hex: &[u8]) -> Option<[u8; 32]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let pairs = hex.as_chunks::<2>();
    if hex.len() != 64 || !pairs.1.is_empty() {
        return None;
    }
    let mut raw = [0u8; 32];
    for (byte, &[high, low]) in raw.iter_mut().zip(pairs.0) {
        *byte = digit(high)? << 4 | digit(low)?;
    }
    Some(raw)
}

impl MemoryStore {
    pub fn new(max_sessions: u64) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            len: AtomicUsize::new(0),
            max_sessions: usize::try_from(max_sessions).unwrap_or(usize::MAX).max(1),
            evicted: AtomicU64::new(0),
            evictions_logged_at: AtomicU64::new(0),
            // Logins in progress: bounded in number and in time (10 minutes at most). LRU
            // admits every new entry (TinyLFU would refuse a real login's state during a
            // flood of login starts, each as rare as its victim).
            once: Cache::builder()
                .max_capacity(PENDING_LOGINS)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_live(Duration::from_secs(600))
                .build(),
            locks: Mutex::new(HashMap::new()),
            by_subject: Index::default(),
            by_sid: Index::default(),
            epoch: Instant::now(),
        }
    }

    /// Now, in the unit of slot expiries.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn shard(&self, key: &Key) -> &Shard {
        &self.shards[key[0] as usize % SHARDS]
    }

    fn write(shard: &Shard) -> std::sync::RwLockWriteGuard<'_, Sessions> {
        shard.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(shard: &Shard) -> std::sync::RwLockReadGuard<'_, Sessions> {
        shard.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a session out of the map and the indexes.
    fn forget(&self, key: &Key, slot: Slot) {
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.by_subject.remove(slot.session.subject(), key);
        if let Some(sid) = slot.session.sid() {
            self.by_sid.remove(sid, key);
        }
    }

    fn remove(&self, key: &Key) -> bool {
        self.remove_if(key, |_| true)
    }

    fn remove_if(&self, key: &Key, ends: impl Fn(&Session) -> bool) -> bool {
        let removed = {
            let mut sessions = Self::write(self.shard(key));
            match sessions.map.get(key) {
                Some(slot) if ends(&slot.session) => sessions.remove(key),
                _ => None,
            }
        };
        match removed {
            Some(slot) => {
                self.forget(key, slot);
                true
            }
            None => false,
        }
    }

    /// Drops every expired session (the supervisor calls it through `count`). Shards are
    /// scanned under their read lock; the write lock is taken only when something expired.
    pub fn sweep(&self) {
        let now = self.now();
        for shard in self.shards.iter() {
            let keys: Vec<Key> = Self::read(shard)
                .map
                .iter()
                .filter(|(_, slot)| slot.expires <= now)
                .map(|(k, _)| *k)
                .collect();
            if keys.is_empty() {
                continue;
            }
            let expired: Vec<(Key, Slot)> = {
                let mut sessions = Self::write(shard);
                let mut expired = Vec::with_capacity(keys.len());
                for k in keys {
                    // Refreshed since the scan: it stays.
                    if sessions.map.get(&k).is_some_and(|slot| slot.expires <= now) {
                        if let Some(slot) = sessions.remove(&k) {
                            expired.push((k, slot));
                        }
                    }
                }
                expired
            };
            for (k, slot) in expired {
                self.forget(&k, slot);
            }
        }
    }

    /// At capacity: of [`EVICTION_SAMPLES`] sessions drawn at random, the one closest to its
    /// end goes (an expired one first, as it is the closest); a few microseconds whatever the
    /// store holds, where finding the true closest scanned every session on every login.
    fn make_room(&self) {
        let len = self.len.load(Ordering::Relaxed);
        if len < self.max_sessions {
            return;
        }
        let victim = if len <= SEARCHED_WHOLE {
            self.shards
                .iter()
                .filter_map(|shard| Self::read(shard).closest_to_end())
                .min_by_key(|(_, expires)| *expires)
        } else {
            (0..EVICTION_SAMPLES)
                .filter_map(|_| self.draw())
                .min_by_key(|(_, expires)| *expires)
        };
        if let Some((k, _)) = victim {
            if self.remove(&k) {
                self.log_eviction();
            }
        }
    }

    /// A session drawn at random: from a random shard, or the next one that holds any.
    fn draw(&self) -> Option<(Key, u64)> {
        let first = rand::random::<usize>() % SHARDS;
        (0..SHARDS).find_map(|i| Self::read(&self.shards[(first + i) % SHARDS]).sample())
    }

    /// One warning every ten seconds at most, with the count: a login flood against a full
    /// store must not become a log flood too.
    fn log_eviction(&self) {
        let evicted = self.evicted.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.now();
        let last = self.evictions_logged_at.load(Ordering::Relaxed);
        if (evicted == 1 || now.saturating_sub(last) >= 10_000)
            && self
                .evictions_logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                max_sessions = self.max_sessions,
                evicted_total = evicted,
                "session store full; sessions closest to their end are dropped to make room"
            );
        }
    }

    fn delete_indexed(
        &self,
        index: &Index,
        name: &str,
        named: impl Fn(&Session) -> bool + Copy,
    ) -> usize {
        let keys = index.candidates(name);
        keys.iter().filter(|k| self.remove_if(k, named)).count()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, session_id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        let k = key(session_id);
        let sessions = Self::read(self.shard(&k));
        Ok(sessions
            .map
            .get(&k)
            .filter(|slot| slot.expires > self.now())
            .map(|slot| slot.session.clone()))
    }

    async fn put(
        &self,
        session_id: &str,
        session: &Session,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let k = key(session_id);
        let shard = self.shard(&k);
        // Replacing a session (idle push-back, refresh) takes no room from the others.
        let replacing = Self::read(shard).map.contains_key(&k);
        if !replacing {
            self.make_room();
        }
        self.by_subject.add(session.subject(), k);
        if let Some(sid) = session.sid() {
            self.by_sid.add(sid, k);
        }
        let expires = self.now().saturating_add(ttl.as_millis() as u64);
        let replaced = Self::write(shard).insert(k, Arc::new(session.clone()), expires);
        match replaced {
            // A replaced session under other names leaves those indexes.
            Some(old) => {
                if old.subject() != session.subject() {
                    self.by_subject.remove(old.subject(), &k);
                }
                if let Some(sid) = old.sid().filter(|s| session.sid() != Some(*s)) {
                    self.by_sid.remove(sid, &k);
                }
            }
            None => {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn update(
        &self,
        session_id: &str,
        session: &Session,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let k = key(session_id);
        let expires = self.now().saturating_add(ttl.as_millis() as u64);
        // Some(replaced?), or None when the names differ (never from a touch or refresh).
        let outcome = {
            let mut sessions = Self::write(self.shard(&k));
            match sessions.map.get_mut(&k) {
                // The same names: the indexes stand.
                Some(slot)
                    if slot.session.subject() == session.subject()
                        && slot.session.issuer() == session.issuer()
                        && slot.session.sid() == session.sid() =>
                {
                    slot.session = Arc::new(session.clone());
                    slot.expires = expires;
                    Some(true)
                }
                Some(_) => None,
                None => Some(false),
            }
        };
        match outcome {
            Some(replaced) => Ok(replaced),
            None => self.put(session_id, session, ttl).await.map(|()| true),
        }
    }

    async fn delete(&self, session_id: &str) -> Result<(), StoreError> {
        self.remove(&key(session_id));
        Ok(())
    }

    async fn delete_by_subject(
        &self,
        issuer: Issuer<'_>,
        subject: &str,
    ) -> Result<usize, StoreError> {
        // Indexed by the subject alone: another issuer's equal subject shares the list and
        // is told apart here.
        Ok(self.delete_indexed(&self.by_subject, subject, |s| {
            s.subject() == subject && issuer.issued(s)
        }))
    }

    async fn delete_by_sid(&self, issuer: Issuer<'_>, sid: &str) -> Result<usize, StoreError> {
        Ok(self.delete_indexed(&self.by_sid, sid, |s| {
            s.sid() == Some(sid) && issuer.issued(s)
        }))
    }

    async fn list_by_subject(
        &self,
        issuer: Issuer<'_>,
        subject: &str,
    ) -> Result<Vec<Stored>, StoreError> {
        let now = self.now();
        Ok(self
            .by_subject
            .candidates(subject)
            .into_iter()
            .filter_map(|k| {
                let sessions = Self::read(self.shard(&k));
                let slot = sessions.map.get(&k).filter(|slot| {
                    slot.expires > now
                        && slot.session.subject() == subject
                        && issuer.issued(&slot.session)
                })?;
                Some(Stored {
                    id_hash: hex::encode(k),
                    session: slot.session.clone(),
                })
            })
            .collect())
    }

    /// The hash is this store's key: the SHA-256 of the id's 32 bytes (not of its hex, as
    /// Redis keys it), so it names a session of this store only.
    async fn delete_by_hash(&self, id_hash: &str) -> Result<bool, StoreError> {
        Ok(id_bytes(id_hash.as_bytes()).is_some_and(|k| self.remove(&k)))
    }

    async fn count(&self) -> Result<usize, StoreError> {
        self.sweep();
        Ok(self.len.load(Ordering::Relaxed))
    }

    async fn put_once(&self, key: &str, value: &[u8], _ttl: Duration) -> Result<(), StoreError> {
        self.once.insert(key.to_string(), Arc::new(value.to_vec()));
        Ok(())
    }

    async fn take_once(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.once.remove(key).map(|v| (*v).clone()))
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        locks.retain(|_, until| *until > now);
        if locks.contains_key(name) {
            return Ok(false);
        }
        locks.insert(name.to_string(), now + ttl);
        Ok(true)
    }

    async fn unlock(&self, name: &str) -> Result<(), StoreError> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn label(&self) -> String {
        "memory".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_digests_are_the_digests() {
        let mut recent = RecentKeys::new();
        // More ids than it remembers, each asked twice, in an order that evicts; gateway ids
        // and 64 bytes of something else.
        let mut ids: Vec<[u8; 64]> = (0..RECENT + 3)
            .map(|_| {
                crate::session::new_session_id()
                    .as_bytes()
                    .try_into()
                    .unwrap()
            })
            .collect();
        ids.push([b'A'; 64]);
        ids.push([0; 64]);
        for round in 0..2 {
            for id in ids.iter().chain(ids.iter().rev()) {
                let expected: Key = match id_bytes(id) {
                    Some(raw) => Sha256::digest(raw).into(),
                    None => Sha256::digest(id).into(),
                };
                assert_eq!(recent.key(id), expected, "round {round}");
                let text = std::str::from_utf8(id).unwrap_or_default();
                if !text.is_empty() {
                    assert_eq!(key(text), expected);
                }
            }
        }
        // The all-zero id is not mistaken for an empty slot.
        assert_eq!(
            RecentKeys::new().key(&[0; 64]),
            <Key>::from(Sha256::digest([0u8; 64]))
        );
    }

    #[test]
    fn a_session_id_names_one_session_only() {
        let id = crate::session::new_session_id();
        assert_eq!(key(&id), key(&id.clone()));
        assert_ne!(key(&id), key(&id.to_ascii_uppercase()));
        assert_ne!(key(&id), key(&format!("{id} ")));
        assert_ne!(key("b"), key("c"));
        let raw = id_bytes(id.as_bytes()).expect("a made id");
        assert_eq!(hex::encode(raw), id);
        for other in [
            &id[1..],
            &id.to_ascii_uppercase(),
            &format!("{id}0"),
            "",
            "zz",
        ] {
            assert_eq!(id_bytes(other.as_bytes()), None, "{other}");
        }
    }

    const ISSUER: &str = "https://idp.example";

    fn session(subject: &str, sid: &str) -> Session {
        issued_session(ISSUER, subject, sid)
    }

    fn issued_session(issuer: &str, subject: &str, sid: &str) -> Session {
        let names = super::super::Names {
            idp: "idp",
            issuer,
            subject,
            sid: Some(sid),
            acr: None,
        };
        let cipher = super::super::TokenCipher::new(b"a secret for the memory store tests");
        Session::new(names, &Default::default(), &cipher, Default::default())
    }

    fn issuer(url: &str) -> Issuer<'_> {
        Issuer { url, idps: &[] }
    }

    /// Every shard's key list and slots agree.
    fn assert_consistent(store: &MemoryStore) {
        for shard in store.shards.iter() {
            let sessions = MemoryStore::read(shard);
            assert_eq!(sessions.keys.len(), sessions.map.len());
            for (i, k) in sessions.keys.iter().enumerate() {
                assert_eq!(sessions.map[k].at as usize, i);
            }
        }
    }

    #[tokio::test]
    async fn ended_sessions_leave_the_indexes() {
        let store = MemoryStore::new(100);
        store
            .put("a", &session("alice", "s1"), Duration::from_secs(60))
            .await
            .unwrap();
        store
            .put("b", &session("alice", "s2"), Duration::from_millis(1))
            .await
            .unwrap();
        store.delete("a").await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(store.get("b").await.unwrap().is_none(), "expired");
        assert_eq!(store.count().await.unwrap(), 0);
        assert!(
            store.by_subject.is_empty(),
            "deleted and expired sessions are unindexed"
        );
        assert!(store.by_sid.is_empty());
    }

    #[tokio::test]
    async fn a_shared_index_entry_ends_only_the_named_sessions() {
        let store = MemoryStore::new(100);
        let hour = Duration::from_secs(3600);
        store.put("a", &session("alice", "s1"), hour).await.unwrap();
        store.put("b", &session("bob", "s2"), hour).await.unwrap();
        // As if "bob" hashed like "alice": his session sits in her list too.
        store.by_subject.add("alice", key("b"));
        store.by_sid.add("s1", key("b"));
        assert_eq!(
            store
                .delete_by_subject(issuer(ISSUER), "alice")
                .await
                .unwrap(),
            1
        );
        assert!(
            store.get("b").await.unwrap().is_some(),
            "bob's session stays"
        );
        store.put("a", &session("alice", "s1"), hour).await.unwrap();
        assert_eq!(store.delete_by_sid(issuer(ISSUER), "s1").await.unwrap(), 1);
        assert!(store.get("b").await.unwrap().is_some());
        assert_eq!(
            store
                .delete_by_subject(issuer(ISSUER), "bob")
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_flood_of_login_starts_never_refuses_the_newest() {
        let store = MemoryStore::new(10);
        let ttl = Duration::from_secs(600);
        let capacity = PENDING_LOGINS as usize;
        for i in 0..capacity + capacity / 2 {
            store
                .put_once(&format!("flood-{i}"), b"x", ttl)
                .await
                .unwrap();
        }
        // A person starts a login while the flood goes on, and comes back from the IdP.
        store.put_once("person", b"state", ttl).await.unwrap();
        for i in 0..1000 {
            store
                .put_once(&format!("more-{i}"), b"x", ttl)
                .await
                .unwrap();
        }
        store.once.run_pending_tasks();
        assert_eq!(
            store.take_once("person").await.unwrap().as_deref(),
            Some(&b"state"[..])
        );
        assert!(store.once.entry_count() <= PENDING_LOGINS);
    }

    #[tokio::test]
    async fn bounded_and_replacements_keep_the_indexes_right() {
        let store = MemoryStore::new(2);
        let hour = Duration::from_secs(3600);
        store.put("a", &session("alice", "s1"), hour).await.unwrap();
        store.put("a", &session("bob", "s1"), hour).await.unwrap();
        assert_eq!(
            store
                .delete_by_subject(issuer(ISSUER), "alice")
                .await
                .unwrap(),
            0
        );
        store
            .put("b", &session("carol", "s2"), Duration::from_secs(60))
            .await
            .unwrap();
        // Full: putting an existing session again (a refresh) ends no other one.
        store.put("a", &session("bob", "s1"), hour).await.unwrap();
        assert!(store.get("b").await.unwrap().is_some());
        store.put("c", &session("dave", "s3"), hour).await.unwrap();
        assert_eq!(store.count().await.unwrap(), 2, "at most max_sessions");
        assert!(
            store.get("b").await.unwrap().is_none(),
            "the one closest to its end went"
        );
        assert_eq!(store.delete_by_sid(issuer(ISSUER), "s1").await.unwrap(), 1);
        assert_eq!(store.count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn one_issuers_subject_is_not_anothers() {
        let store = MemoryStore::new(100);
        let hour = Duration::from_secs(3600);
        let partner = "https://partner.example";
        store.put("a", &session("alice", "s1"), hour).await.unwrap();
        store
            .put("b", &issued_session(partner, "alice", "s1"), hour)
            .await
            .unwrap();
        assert_eq!(
            store
                .delete_by_subject(issuer(partner), "alice")
                .await
                .unwrap(),
            1
        );
        assert!(store.get("a").await.unwrap().is_some(), "the other alice");
        store
            .put("b", &issued_session(partner, "alice", "s1"), hour)
            .await
            .unwrap();
        assert_eq!(store.delete_by_sid(issuer(partner), "s1").await.unwrap(), 1);
        assert!(store.get("a").await.unwrap().is_some());
        assert_eq!(store.delete_by_sid(issuer(ISSUER), "s1").await.unwrap(), 1);
        assert_eq!(store.count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn sessions_are_listed_and_ended_by_their_hash_never_their_id() {
        let store = MemoryStore::new(100);
        let hour = Duration::from_secs(3600);
        let (a, b) = (
            crate::session::new_session_id(),
            crate::session::new_session_id(),
        );
        store.put(&a, &session("alice", "s1"), hour).await.unwrap();
        store.put(&b, &session("alice", "s2"), hour).await.unwrap();
        store
            .put(
                "c",
                &issued_session("https://partner.example", "alice", "s3"),
                hour,
            )
            .await
            .unwrap();
        store.put("d", &session("bob", "s4"), hour).await.unwrap();
        let listed = store
            .list_by_subject(issuer(ISSUER), "alice")
            .await
            .unwrap();
        let mut hashes: Vec<&str> = listed.iter().map(|s| s.id_hash.as_str()).collect();
        hashes.sort();
        let mut expected = [hex::encode(key(&a)), hex::encode(key(&b))];
        expected.sort();
        assert_eq!(hashes, expected, "this issuer's alice only");
        assert!(!hashes.contains(&a.as_str()) && !hashes.contains(&b.as_str()));
        // Neither the id itself nor a hash in capitals names a session.
        assert!(!store.delete_by_hash(&a).await.unwrap());
        assert!(!store
            .delete_by_hash(&expected[0].to_ascii_uppercase())
            .await
            .unwrap());
        assert!(store.delete_by_hash(&expected[0]).await.unwrap());
        assert!(!store.delete_by_hash(&expected[0]).await.unwrap(), "once");
        assert_eq!(
            store
                .list_by_subject(issuer(ISSUER), "alice")
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(store.count().await.unwrap(), 3);
        assert_consistent(&store);
    }

    #[tokio::test]
    async fn a_full_store_drops_sessions_near_their_end_without_scanning() {
        let store = MemoryStore::new(1000);
        let (soon, later) = (Duration::from_secs(60), Duration::from_secs(3600));
        for i in 0..1000 {
            let ttl = if i % 2 == 0 { soon } else { later };
            store
                .put(&format!("old-{i}"), &session("someone", "s"), ttl)
                .await
                .unwrap();
        }
        for i in 0..100 {
            store
                .put(&format!("new-{i}"), &session("newcomer", "s"), later)
                .await
                .unwrap();
        }
        assert_eq!(store.count().await.unwrap(), 1000, "at most max_sessions");
        let mut kept_later = 0;
        for i in (1..1000).step_by(2) {
            kept_later += usize::from(store.get(&format!("old-{i}")).await.unwrap().is_some());
        }
        // Of 16 drawn, the closest to its end goes: a long-lived session only when all 16
        // drawn were long-lived (about 1 in 20,000 for each of the 100 drops).
        assert!(kept_later >= 498, "{kept_later} of 500 long-lived kept");
        for i in 0..100 {
            assert!(store.get(&format!("new-{i}")).await.unwrap().is_some());
        }
        assert_consistent(&store);
        for i in 0..1000 {
            store.delete(&format!("old-{i}")).await.unwrap();
        }
        assert_eq!(store.count().await.unwrap(), 100);
        assert_consistent(&store);
    }
}
