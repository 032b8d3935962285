//! The shared session store: sessions as JSON under `gatehouse:s:<sha256(id)>` with a TTL,
//! indexes by subject and IdP session id as sets (so logout-everywhere is a set lookup,
//! never a scan of the keyspace); any instance sharing the Redis sees every session.

use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{store_key, Session, SessionStore, StoreError};
use crate::redis_conn::LazyRedis;

pub struct RedisSessionStore {
    redis: LazyRedis,
    /// Index sets outlive every session they name.
    index_ttl: Duration,
}

fn session_key(session_id: &str) -> String {
    format!("gatehouse:s:{}", store_key(session_id))
}

fn index_key(kind: &str, name: &str) -> String {
    format!(
        "gatehouse:{kind}:{}",
        hex::encode(Sha256::digest(name.as_bytes()))
    )
}

impl RedisSessionStore {
    pub fn new(url: &str, timeout: Duration, max_lifetime: Duration) -> Result<Self, String> {
        Ok(RedisSessionStore {
            redis: LazyRedis::new(url, timeout)?,
            index_ttl: max_lifetime + Duration::from_secs(60),
        })
    }

    async fn delete_indexed(&self, index: String) -> Result<usize, StoreError> {
        let members: Vec<String> = self
            .redis
            .run(|mut c| {
                let index = index.clone();
                async move { redis::cmd("SMEMBERS").arg(index).query_async(&mut c).await }
            })
            .await
            .map_err(StoreError::Unavailable)?;
        if members.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = members.iter().map(|m| format!("gatehouse:s:{m}")).collect();
        let ended: usize = self
            .redis
            .run(|mut c| {
                let (keys, index) = (keys.clone(), index.clone());
                async move {
                    let mut pipe = redis::pipe();
                    pipe.cmd("DEL").arg(&keys).cmd("DEL").arg(&index).ignore();
                    let (n,): (usize,) = pipe.query_async(&mut c).await?;
                    Ok(n)
                }
            })
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(ended)
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn get(&self, session_id: &str) -> Result<Option<Session>, StoreError> {
        let key = session_key(session_id);
        let json: Option<String> = self
            .redis
            .run(|mut c| {
                let key = key.clone();
                async move { redis::cmd("GET").arg(key).query_async(&mut c).await }
            })
            .await
            .map_err(StoreError::Unavailable)?;
        match json {
            None => Ok(None),
            Some(j) => serde_json::from_str(&j)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
        }
    }

    async fn put(
        &self,
        session_id: &str,
        session: &Session,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(session).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let member = store_key(session_id);
        let key = format!("gatehouse:s:{member}");
        let subject_index = index_key("su", &session.subject);
        let sid_index = session.sid.as_ref().map(|sid| index_key("sid", sid));
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let index_ms = self.index_ttl.as_millis() as u64;
        self.redis
            .run(|mut c| {
                let (key, json, member) = (key.clone(), json.clone(), member.clone());
                let (subject_index, sid_index) = (subject_index.clone(), sid_index.clone());
                async move {
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    pipe.cmd("SET")
                        .arg(&key)
                        .arg(json)
                        .arg("PX")
                        .arg(ttl_ms)
                        .ignore();
                    pipe.cmd("SADD").arg(&subject_index).arg(&member).ignore();
                    pipe.cmd("PEXPIRE")
                        .arg(&subject_index)
                        .arg(index_ms)
                        .ignore();
                    if let Some(sid_index) = &sid_index {
                        pipe.cmd("SADD").arg(sid_index).arg(&member).ignore();
                        pipe.cmd("PEXPIRE").arg(sid_index).arg(index_ms).ignore();
                    }
                    pipe.query_async::<()>(&mut c).await
                }
            })
            .await
            .map_err(StoreError::Unavailable)
    }

    async fn delete(&self, session_id: &str) -> Result<(), StoreError> {
        let key = session_key(session_id);
        self.redis
            .run(|mut c| {
                let key = key.clone();
                async move { redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await }
            })
            .await
            .map_err(StoreError::Unavailable)
    }

    async fn delete_by_subject(&self, subject: &str) -> Result<usize, StoreError> {
        self.delete_indexed(index_key("su", subject)).await
    }

    async fn delete_by_sid(&self, sid: &str) -> Result<usize, StoreError> {
        self.delete_indexed(index_key("sid", sid)).await
    }

    /// Not counted in Redis (that would mean scanning the keyspace).
    async fn count(&self) -> Result<usize, StoreError> {
        Err(StoreError::Unavailable(
            "not counted in the Redis store".into(),
        ))
    }
}
