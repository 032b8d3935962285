//! `session.fallback = "memory"`: a Redis store that keeps logins working from this
//! instance's memory while Redis cannot answer. Every switch is logged, counted in
//! `gatehouse_session_store_degraded`, and shown by `/readyz`; nothing happens silently.
//!
//! A logout Redis cannot take (logout, logout everywhere, back-channel logout) is kept here
//! and applied as soon as Redis answers again, before anything else is asked of it; until
//! then every session Redis returns is checked against it. Nothing a person logged out of
//! comes back with Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::memory::MemoryStore;
use super::redis_store::RedisSessionStore;
use super::{store_key, Issuer, Session, SessionStore, StoreError, Stored};
use crate::metrics::Metrics;

/// How many logouts may wait for Redis; past it a logout answers 503 rather than claim an
/// end it cannot guarantee.
const MAX_MISSED: usize = 100_000;

pub struct FallbackStore {
    primary: RedisSessionStore,
    memory: MemoryStore,
    degraded: AtomicBool,
    missed: Mutex<Missed>,
    /// Whether `missed` holds anything: read on every call, locked only when it does.
    missing: AtomicBool,
    /// One replay at a time.
    settling: tokio::sync::Mutex<()>,
    /// No session outlives it, so no missed logout matters longer.
    max_lifetime: Duration,
    metrics: Arc<Metrics>,
}

/// Logouts Redis has not taken yet, with when they happened.
#[derive(Default)]
struct Missed {
    /// By store key (the id's SHA-256, as Redis keys sessions).
    sessions: HashMap<String, Instant>,
    named: Vec<(MissedName, Instant)>,
}

/// Every session of an issuer's subject, or of one of its IdP sessions.
#[derive(Clone, PartialEq, Eq)]
struct MissedName {
    by_sid: bool,
    issuer: String,
    idps: Vec<String>,
    name: String,
}

impl MissedName {
    fn new(by_sid: bool, issuer: Issuer<'_>, name: &str) -> MissedName {
        MissedName {
            by_sid,
            issuer: issuer.url.to_string(),
            idps: issuer.idps.to_vec(),
            name: name.to_string(),
        }
    }

    fn issuer(&self) -> Issuer<'_> {
        Issuer {
            url: &self.issuer,
            idps: &self.idps,
        }
    }

    fn ends(&self, s: &Session) -> bool {
        let named = match self.by_sid {
            true => s.sid() == Some(self.name.as_str()),
            false => s.subject() == self.name,
        };
        named && self.issuer().issued(s)
    }
}

impl Missed {
    fn len(&self) -> usize {
        self.sessions.len() + self.named.len()
    }

    /// Forgets what no session can outlive any more.
    fn prune(&mut self, max_lifetime: Duration) {
        self.sessions.retain(|_, at| at.elapsed() < max_lifetime);
        self.named.retain(|(_, at)| at.elapsed() < max_lifetime);
    }
}

impl FallbackStore {
    pub fn new(
        primary: RedisSessionStore,
        max_sessions: u64,
        max_lifetime: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        FallbackStore {
            primary,
            memory: MemoryStore::new(max_sessions),
            degraded: AtomicBool::new(false),
            missed: Mutex::new(Missed::default()),
            missing: AtomicBool::new(false),
            settling: tokio::sync::Mutex::new(()),
            max_lifetime,
            metrics,
        }
    }

    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    fn mark(&self, error: Option<&StoreError>) {
        let now_degraded = error.is_some();
        if self.degraded.swap(now_degraded, Ordering::Relaxed) != now_degraded {
            self.metrics
                .session_store_degraded
                .set(i64::from(now_degraded));
            match error {
                Some(e) => {
                    tracing::warn!(error = %e, "session store: Redis unreachable; logins now kept in this instance's memory (session.fallback = \"memory\"), other instances will not see them")
                }
                None => {
                    tracing::info!("session store: Redis reachable again; new sessions go to Redis")
                }
            }
        }
    }

    /// Runs `op` on Redis; on an outage, on memory.
    async fn with<T, F, G>(&self, redis: F, memory: G) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
        G: std::future::Future<Output = Result<T, StoreError>>,
    {
        match redis.await {
            Err(e @ StoreError::Unavailable(_)) => {
                self.mark(Some(&e));
                memory.await
            }
            other => {
                self.mark(None);
                other
            }
        }
    }

    fn missed(&self) -> std::sync::MutexGuard<'_, Missed> {
        self.missed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a logout Redis did not take; an error when too many already wait.
    fn remember(&self, add: impl FnOnce(&mut Missed)) -> Result<(), StoreError> {
        let mut missed = self.missed();
        missed.prune(self.max_lifetime);
        if missed.len() >= MAX_MISSED {
            return Err(StoreError::Unavailable(
                "too many logouts wait for Redis".to_string(),
            ));
        }
        add(&mut missed);
        self.missing.store(true, Ordering::Relaxed);
        tracing::warn!(
            waiting = missed.len(),
            "session store: Redis unreachable; a logout is kept here and applied when Redis answers again"
        );
        Ok(())
    }

    /// Whether a session Redis returned ended while Redis could not be told.
    fn ended_meanwhile(&self, id: &str, s: &Session) -> bool {
        if !self.missing.load(Ordering::Relaxed) {
            return false;
        }
        let missed = self.missed();
        missed.sessions.contains_key(&store_key(id))
            || missed.named.iter().any(|(name, _)| name.ends(s))
    }

    /// Applies the logouts Redis missed, each forgotten once Redis has taken it; stops at the
    /// first Redis cannot take (still down).
    async fn settle(&self) {
        if !self.missing.load(Ordering::Relaxed) {
            return;
        }
        let Ok(_one) = self.settling.try_lock() else {
            return;
        };
        let (sessions, named): (Vec<String>, Vec<MissedName>) = {
            let mut missed = self.missed();
            missed.prune(self.max_lifetime);
            (
                missed.sessions.keys().cloned().collect(),
                missed.named.iter().map(|(n, _)| n.clone()).collect(),
            )
        };
        for key in sessions {
            if self.primary.delete_stored(&key).await.is_err() {
                return;
            }
            self.missed().sessions.remove(&key);
        }
        for name in named {
            let done = match name.by_sid {
                true => self.primary.delete_by_sid(name.issuer(), &name.name).await,
                false => {
                    self.primary
                        .delete_by_subject(name.issuer(), &name.name)
                        .await
                }
            };
            if done.is_err() {
                return;
            }
            self.missed().named.retain(|(n, _)| *n != name);
        }
        let missed = self.missed();
        if missed.len() == 0 {
            self.missing.store(false, Ordering::Relaxed);
            tracing::info!("session store: the logouts Redis missed are applied");
        }
    }
}

#[async_trait]
impl SessionStore for FallbackStore {
    async fn get(&self, id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        self.settle().await;
        match self.primary.get(id).await {
            Ok(Some(s)) if !self.ended_meanwhile(id, &s) => {
                self.mark(None);
                Ok(Some(s))
            }
            // A session made during an outage lives on in memory until it ends.
            Ok(_) => {
                self.mark(None);
                self.memory.get(id).await
            }
            Err(e @ StoreError::Unavailable(_)) => {
                self.mark(Some(&e));
                self.memory.get(id).await
            }
        }
    }

    async fn put(&self, id: &str, session: &Session, ttl: Duration) -> Result<(), StoreError> {
        // A logout missed before this login must not end it when replayed after.
        self.settle().await;
        if self.degraded() && self.memory.get(id).await?.is_some() {
            return self.memory.put(id, session, ttl).await;
        }
        self.with(
            self.primary.put(id, session, ttl),
            self.memory.put(id, session, ttl),
        )
        .await
    }

    async fn update(&self, id: &str, session: &Session, ttl: Duration) -> Result<bool, StoreError> {
        self.settle().await;
        if self.degraded() && self.memory.get(id).await?.is_some() {
            return self.memory.update(id, session, ttl).await;
        }
        if self.ended_meanwhile(id, session) {
            return Ok(false);
        }
        self.with(
            self.primary.update(id, session, ttl),
            self.memory.update(id, session, ttl),
        )
        .await
    }

    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.memory.delete(id).await?;
        match self.primary.delete(id).await {
            Err(e @ StoreError::Unavailable(_)) => {
                self.mark(Some(&e));
                let key = store_key(id);
                self.remember(|m| {
                    m.sessions.insert(key, Instant::now());
                })
            }
            other => {
                self.mark(None);
                other
            }
        }
    }

    async fn delete_by_subject(
        &self,
        issuer: Issuer<'_>,
        subject: &str,
    ) -> Result<usize, StoreError> {
        let local = self.memory.delete_by_subject(issuer, subject).await?;
        match self.primary.delete_by_subject(issuer, subject).await {
            Err(e @ StoreError::Unavailable(_)) => {
                self.mark(Some(&e));
                let name = MissedName::new(false, issuer, subject);
                self.remember(|m| m.named.push((name, Instant::now())))?;
                Ok(local)
            }
            other => {
                self.mark(None);
                Ok(local + other?)
            }
        }
    }

    async fn delete_by_sid(&self, issuer: Issuer<'_>, sid: &str) -> Result<usize, StoreError> {
        let local = self.memory.delete_by_sid(issuer, sid).await?;
        match self.primary.delete_by_sid(issuer, sid).await {
            Err(e @ StoreError::Unavailable(_)) => {
                self.mark(Some(&e));
                let name = MissedName::new(true, issuer, sid);
                self.remember(|m| m.named.push((name, Instant::now())))?;
                Ok(local)
            }
            other => {
                self.mark(None);
                Ok(local + other?)
            }
        }
    }

    /// This instance's sessions kept during an outage, and Redis's (none while it is down:
    /// `label` then says so).
    async fn list_by_subject(
        &self,
        issuer: Issuer<'_>,
        subject: &str,
    ) -> Result<Vec<Stored>, StoreError> {
        self.settle().await;
        let mut listed = self.memory.list_by_subject(issuer, subject).await?;
        let shared = self
            .with(self.primary.list_by_subject(issuer, subject), async {
                Ok(Vec::new())
            })
            .await?;
        listed.extend(shared);
        Ok(listed)
    }

    /// A hash names a memory session or a Redis one (their keys differ); one Redis cannot
    /// take now is refused here at once and ended there when it answers again.
    async fn delete_by_hash(&self, id_hash: &str) -> Result<bool, StoreError> {
        let local = self.memory.delete_by_hash(id_hash).await?;
        match self.primary.delete_by_hash(id_hash).await {
            Err(e @ StoreError::Unavailable(_)) => {
                self.mark(Some(&e));
                let key = id_hash.to_string();
                self.remember(|m| {
                    m.sessions.insert(key, Instant::now());
                })?;
                Ok(true)
            }
            other => {
                self.mark(None);
                Ok(local | other?)
            }
        }
    }

    async fn count(&self) -> Result<usize, StoreError> {
        // The supervisor counts every few seconds: missed logouts reach Redis without traffic.
        self.settle().await;
        let local = self.memory.count().await?;
        let shared = self.with(self.primary.count(), async { Ok(0) }).await?;
        Ok(local + shared)
    }

    async fn put_once(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.with(
            self.primary.put_once(key, value, ttl),
            self.memory.put_once(key, value, ttl),
        )
        .await
    }

    async fn take_once(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.memory.take_once(key).await? {
            return Ok(Some(v));
        }
        self.with(self.primary.take_once(key), async { Ok(None) })
            .await
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.with(
            self.primary.try_lock(name, ttl),
            self.memory.try_lock(name, ttl),
        )
        .await
    }

    async fn unlock(&self, name: &str) -> Result<(), StoreError> {
        self.memory.unlock(name).await?;
        self.with(self.primary.unlock(name), async { Ok(()) }).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.settle().await;
        let result = self.primary.ping().await;
        self.mark(result.as_ref().err());
        // Degraded but serving: the instance stays ready, /readyz says why.
        Ok(())
    }

    fn degraded(&self) -> bool {
        FallbackStore::degraded(self)
    }

    fn label(&self) -> String {
        if self.degraded() {
            "redis (memory fallback active)".to_string()
        } else {
            "redis (memory fallback)".to_string()
        }
    }
}
