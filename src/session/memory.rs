//! The one-instance session store: a bounded moka cache with a TTL per session, and indexes
//! by subject and IdP session id for logout-everywhere.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::future::Cache;

use super::{store_key, Session, SessionStore, StoreError};

#[derive(Clone)]
struct Entry {
    session: Arc<Session>,
    ttl: Duration,
}

struct EntryExpiry;

impl moka::Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _k: &String, v: &Entry, _now: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
    fn expire_after_update(
        &self,
        _k: &String,
        v: &Entry,
        _now: Instant,
        _d: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

pub struct MemoryStore {
    sessions: Cache<String, Entry>,
    once: Cache<String, Arc<Vec<u8>>>,
    locks: Mutex<HashMap<String, Instant>>,
    by_subject: Mutex<HashMap<String, HashSet<String>>>,
    by_sid: Mutex<HashMap<String, HashSet<String>>>,
}

impl MemoryStore {
    pub fn new(max_sessions: u64) -> Self {
        MemoryStore {
            sessions: Cache::builder()
                .max_capacity(max_sessions)
                .expire_after(EntryExpiry)
                .build(),
            // Logins in progress: bounded in number and in time (10 minutes at most).
            once: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            locks: Mutex::new(HashMap::new()),
            by_subject: Mutex::new(HashMap::new()),
            by_sid: Mutex::new(HashMap::new()),
        }
    }

    fn index(map: &Mutex<HashMap<String, HashSet<String>>>, name: &str, key: &str) {
        map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .insert(key.to_string());
    }

    async fn delete_indexed(
        &self,
        map: &Mutex<HashMap<String, HashSet<String>>>,
        name: &str,
    ) -> usize {
        let keys = map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .unwrap_or_default();
        let mut ended = 0;
        for key in keys {
            if self.sessions.remove(&key).await.is_some() {
                ended += 1;
            }
        }
        ended
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, session_id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        Ok(self
            .sessions
            .get(&store_key(session_id))
            .await
            .map(|e| e.session))
    }

    async fn put(
        &self,
        session_id: &str,
        session: &Session,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = store_key(session_id);
        Self::index(&self.by_subject, &session.subject, &key);
        if let Some(sid) = &session.sid {
            Self::index(&self.by_sid, sid, &key);
        }
        self.sessions
            .insert(
                key,
                Entry {
                    session: Arc::new(session.clone()),
                    ttl,
                },
            )
            .await;
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), StoreError> {
        self.sessions.invalidate(&store_key(session_id)).await;
        Ok(())
    }

    async fn delete_by_subject(&self, subject: &str) -> Result<usize, StoreError> {
        Ok(self.delete_indexed(&self.by_subject, subject).await)
    }

    async fn delete_by_sid(&self, sid: &str) -> Result<usize, StoreError> {
        Ok(self.delete_indexed(&self.by_sid, sid).await)
    }

    async fn count(&self) -> Result<usize, StoreError> {
        self.sessions.run_pending_tasks().await;
        Ok(self.sessions.entry_count() as usize)
    }

    async fn put_once(&self, key: &str, value: &[u8], _ttl: Duration) -> Result<(), StoreError> {
        self.once
            .insert(key.to_string(), Arc::new(value.to_vec()))
            .await;
        Ok(())
    }

    async fn take_once(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.once.remove(key).await.map(|v| (*v).clone()))
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
