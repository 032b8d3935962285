//! The one-instance session store: a bounded moka cache with a TTL per session (keyed by the
//! SHA-256 of the id, 32 bytes), and indexes by subject and IdP session id for
//! logout-everywhere, cleaned as sessions end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

use super::{Session, SessionStore, StoreError};

type Key = [u8; 32];

#[derive(Clone)]
struct Entry {
    session: Arc<Session>,
    ttl: Duration,
}

struct EntryExpiry;

impl moka::Expiry<Key, Entry> for EntryExpiry {
    fn expire_after_create(&self, _k: &Key, v: &Entry, _now: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
    fn expire_after_update(
        &self,
        _k: &Key,
        v: &Entry,
        _now: Instant,
        _d: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// Name → the sessions under it (a short list: a person has few sessions at once).
type Index = Arc<Mutex<HashMap<Box<str>, Vec<Key>>>>;

pub struct MemoryStore {
    sessions: Cache<Key, Entry>,
    once: Cache<String, Arc<Vec<u8>>>,
    locks: Mutex<HashMap<String, Instant>>,
    by_subject: Index,
    by_sid: Index,
}

fn key(session_id: &str) -> Key {
    Sha256::digest(session_id.as_bytes()).into()
}

fn lock(index: &Index) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Vec<Key>>> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

fn unindex(index: &Index, name: &str, key: &Key) {
    let mut map = lock(index);
    if let Some(set) = map.get_mut(name) {
        set.retain(|k| k != key);
        if set.is_empty() {
            map.remove(name);
        }
    }
}

impl MemoryStore {
    pub fn new(max_sessions: u64) -> Self {
        let by_subject: Index = Arc::default();
        let by_sid: Index = Arc::default();
        let (subjects, sids) = (by_subject.clone(), by_sid.clone());
        MemoryStore {
            sessions: Cache::builder()
                .max_capacity(max_sessions)
                .expire_after(EntryExpiry)
                // An ended session leaves the indexes too (a replaced one stays).
                .eviction_listener(move |k: Arc<Key>, v: Entry, cause| {
                    if cause != RemovalCause::Replaced {
                        unindex(&subjects, &v.session.subject, &k);
                        if let Some(sid) = &v.session.sid {
                            unindex(&sids, sid, &k);
                        }
                    }
                })
                .build(),
            // Logins in progress: bounded in number and in time (10 minutes at most).
            once: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            locks: Mutex::new(HashMap::new()),
            by_subject,
            by_sid,
        }
    }

    fn delete_indexed(&self, index: &Index, name: &str) -> usize {
        let keys = lock(index).remove(name).unwrap_or_default();
        keys.iter()
            .filter(|k| self.sessions.remove(*k).is_some())
            .count()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, session_id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        Ok(self.sessions.get(&key(session_id)).map(|e| e.session))
    }

    async fn put(
        &self,
        session_id: &str,
        session: &Session,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let k = key(session_id);
        let add = |index: &Index, name: &str| {
            let mut map = lock(index);
            let keys = map.entry(name.into()).or_default();
            if !keys.contains(&k) {
                keys.push(k);
            }
        };
        add(&self.by_subject, &session.subject);
        if let Some(sid) = &session.sid {
            add(&self.by_sid, sid);
        }
        self.sessions.insert(
            k,
            Entry {
                session: Arc::new(session.clone()),
                ttl,
            },
        );
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), StoreError> {
        self.sessions.invalidate(&key(session_id));
        Ok(())
    }

    async fn delete_by_subject(&self, subject: &str) -> Result<usize, StoreError> {
        Ok(self.delete_indexed(&self.by_subject, subject))
    }

    async fn delete_by_sid(&self, sid: &str) -> Result<usize, StoreError> {
        Ok(self.delete_indexed(&self.by_sid, sid))
    }

    async fn count(&self) -> Result<usize, StoreError> {
        self.sessions.run_pending_tasks();
        Ok(self.sessions.entry_count() as usize)
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

    fn session(subject: &str, sid: &str) -> Session {
        Session {
            subject: subject.into(),
            email: None,
            username: None,
            groups: Vec::new(),
            idp: "idp".into(),
            sid: Some(sid.into()),
            created_at: 0,
            expires_at: 0,
            auth_time: None,
            acr: None,
            amr: Vec::new(),
            claims: Default::default(),
            id_token: None,
            access_token: None,
            refresh_token: None,
            access_expires_at: None,
            refresh_at: None,
            touched_at: 0,
            identity: Default::default(),
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
        // Expiry is noticed by the cache's timer wheel (about a second); poll, bounded.
        for _ in 0..50 {
            store.sessions.run_pending_tasks();
            if lock(&store.by_subject).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            lock(&store.by_subject).is_empty(),
            "deleted and expired sessions are unindexed"
        );
        assert!(lock(&store.by_sid).is_empty());
    }
}
