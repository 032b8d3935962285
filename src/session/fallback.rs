//! `session.fallback = "memory"`: a Redis store that keeps logins working from this
//! instance's memory while Redis cannot answer. Every switch is logged, counted in
//! `gatehouse_session_store_degraded`, and shown by `/readyz`; nothing happens silently.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::memory::MemoryStore;
use super::{Session, SessionStore, StoreError};
use crate::metrics::Metrics;

pub struct FallbackStore {
    primary: Box<dyn SessionStore>,
    memory: MemoryStore,
    degraded: AtomicBool,
    metrics: Arc<Metrics>,
}

impl FallbackStore {
    pub fn new(primary: Box<dyn SessionStore>, max_sessions: u64, metrics: Arc<Metrics>) -> Self {
        FallbackStore {
            primary,
            memory: MemoryStore::new(max_sessions),
            degraded: AtomicBool::new(false),
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
}

#[async_trait]
impl SessionStore for FallbackStore {
    async fn get(&self, id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        match self.primary.get(id).await {
            Ok(Some(s)) => {
                self.mark(None);
                Ok(Some(s))
            }
            // A session made during an outage lives on in memory until it ends.
            Ok(None) => {
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
        if self.degraded() && self.memory.get(id).await?.is_some() {
            return self.memory.update(id, session, ttl).await;
        }
        self.with(
            self.primary.update(id, session, ttl),
            self.memory.update(id, session, ttl),
        )
        .await
    }

    async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.memory.delete(id).await?;
        self.with(self.primary.delete(id), async { Ok(()) }).await
    }

    async fn delete_by_subject(&self, subject: &str) -> Result<usize, StoreError> {
        let local = self.memory.delete_by_subject(subject).await?;
        let shared = self
            .with(self.primary.delete_by_subject(subject), async { Ok(0) })
            .await?;
        Ok(local + shared)
    }

    async fn delete_by_sid(&self, sid: &str) -> Result<usize, StoreError> {
        let local = self.memory.delete_by_sid(sid).await?;
        let shared = self
            .with(self.primary.delete_by_sid(sid), async { Ok(0) })
            .await?;
        Ok(local + shared)
    }

    async fn count(&self) -> Result<usize, StoreError> {
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
        let result = self.primary.ping().await;
        self.mark(result.as_ref().err());
        // Degraded but serving: the instance stays ready, /readyz says why.
        Ok(())
    }

    fn label(&self) -> String {
        if self.degraded() {
            "redis (memory fallback active)".to_string()
        } else {
            "redis (memory fallback)".to_string()
        }
    }
}
