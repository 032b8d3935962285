//! The shared session store: sessions in their packed binary form under `gatehouse:s:<sha256(id)>` with a TTL,
//! indexes by subject and IdP session id as sets (so logout-everywhere is a set lookup,
//! never a scan of the keyspace); any instance sharing the Redis sees every session.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{store_key, Session, SessionStore, StoreError};
use crate::redis_conn::LazyRedis;

pub struct RedisSessionStore {
    redis: LazyRedis,
    /// Index sets outlive every session they name.
    index_ttl: Duration,
    /// [`UPDATE`], its digest computed once.
    update: redis::Script,
}

/// Replaces a session only while it exists (SET XX) and moves its end in the live set, in
/// one step: a logout on another instance is never undone by a request in flight here.
const UPDATE: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'XX') then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
  return 1
end
return 0
"#;

/// Every live session's key, scored by when its TTL ends: `count` without a scan.
const ACTIVE: &str = "gatehouse:active";

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
            update: redis::Script::new(UPDATE),
        })
    }

    /// Both round trips within one timeout.
    async fn delete_indexed(&self, index: String) -> Result<usize, StoreError> {
        self.redis
            .within(self.delete_indexed_unbounded(index))
            .await
            .map_err(StoreError::Unavailable)
    }

    async fn delete_indexed_unbounded(&self, index: String) -> Result<usize, String> {
        let members: Vec<String> = self
            .redis
            .run(|mut c| {
                let index = index.clone();
                async move { redis::cmd("SMEMBERS").arg(index).query_async(&mut c).await }
            })
            .await?;
        if members.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = members.iter().map(|m| format!("gatehouse:s:{m}")).collect();
        let ended: usize = self
            .redis
            .run(|mut c| {
                let (keys, index, members) = (keys.clone(), index.clone(), members.clone());
                async move {
                    let mut pipe = redis::pipe();
                    pipe.cmd("DEL").arg(&keys).cmd("DEL").arg(&index).ignore();
                    pipe.cmd("ZREM").arg(ACTIVE).arg(&members).ignore();
                    let (n,): (usize,) = pipe.query_async(&mut c).await?;
                    Ok(n)
                }
            })
            .await?;
        Ok(ended)
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn get(&self, session_id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        let key = session_key(session_id);
        let data: Option<Vec<u8>> = self
            .redis
            .run(|mut c| {
                let key = key.clone();
                async move { redis::cmd("GET").arg(key).query_async(&mut c).await }
            })
            .await
            .map_err(StoreError::Unavailable)?;
        // Something this version cannot read (an older format) is no session: its
        // browser logs in again.
        Ok(data.and_then(|d| Session::from_bytes(&d)).map(Arc::new))
    }

    async fn put(
        &self,
        session_id: &str,
        session: &Session,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let data = session.to_bytes();
        let member = store_key(session_id);
        let key = format!("gatehouse:s:{member}");
        let subject_index = index_key("su", session.subject());
        let sid_index = session.sid().map(|sid| index_key("sid", sid));
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let index_ms = self.index_ttl.as_millis() as u64;
        self.redis
            .run(|mut c| {
                let (key, data, member) = (key.clone(), data.clone(), member.clone());
                let (subject_index, sid_index) = (subject_index.clone(), sid_index.clone());
                async move {
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    pipe.cmd("SET")
                        .arg(&key)
                        .arg(data)
                        .arg("PX")
                        .arg(ttl_ms)
                        .ignore();
                    pipe.cmd("ZADD")
                        .arg(ACTIVE)
                        .arg(unix_ms() + ttl_ms)
                        .arg(&member)
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

    async fn update(
        &self,
        session_id: &str,
        session: &Session,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let data = session.to_bytes();
        let member = store_key(session_id);
        let key = format!("gatehouse:s:{member}");
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.redis
            .run(|mut c| {
                let (key, data, member) = (key.clone(), data.clone(), member.clone());
                async move {
                    let replaced: i64 = self
                        .update
                        .key(&key)
                        .key(ACTIVE)
                        .arg(data)
                        .arg(ttl_ms)
                        .arg(unix_ms() + ttl_ms)
                        .arg(&member)
                        .invoke_async(&mut c)
                        .await?;
                    Ok(replaced == 1)
                }
            })
            .await
            .map_err(StoreError::Unavailable)
    }

    async fn delete(&self, session_id: &str) -> Result<(), StoreError> {
        let member = store_key(session_id);
        self.redis
            .run(|mut c| {
                let member = member.clone();
                async move {
                    let mut pipe = redis::pipe();
                    pipe.cmd("DEL")
                        .arg(format!("gatehouse:s:{member}"))
                        .ignore();
                    pipe.cmd("ZREM").arg(ACTIVE).arg(&member).ignore();
                    pipe.query_async::<()>(&mut c).await
                }
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

    /// Live sessions of every instance: expired members are trimmed from the score index.
    async fn count(&self) -> Result<usize, StoreError> {
        self.redis
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(ACTIVE)
                    .arg("-inf")
                    .arg(unix_ms())
                    .ignore();
                pipe.cmd("ZCARD").arg(ACTIVE);
                let (n,): (usize,) = pipe.query_async(&mut c).await?;
                Ok(n)
            })
            .await
            .map_err(StoreError::Unavailable)
    }

    async fn put_once(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let key = format!("gatehouse:once:{key}");
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.redis
            .run(|mut c| {
                let (key, value) = (key.clone(), value.to_vec());
                async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async::<()>(&mut c)
                        .await
                }
            })
            .await
            .map_err(StoreError::Unavailable)
    }

    async fn take_once(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = format!("gatehouse:once:{key}");
        self.redis
            .run(|mut c| {
                let key = key.clone();
                async move { redis::cmd("GETDEL").arg(key).query_async(&mut c).await }
            })
            .await
            .map_err(StoreError::Unavailable)
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = format!("gatehouse:lock:{name}");
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let set: Option<String> = self
            .redis
            .run(|mut c| {
                let key = key.clone();
                async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async(&mut c)
                        .await
                }
            })
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(set.is_some())
    }

    async fn unlock(&self, name: &str) -> Result<(), StoreError> {
        let key = format!("gatehouse:lock:{name}");
        self.redis
            .run(|mut c| {
                let key = key.clone();
                async move { redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await }
            })
            .await
            .map_err(StoreError::Unavailable)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.redis
            .run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
            .map_err(StoreError::Unavailable)
    }

    fn label(&self) -> String {
        "redis".to_string()
    }
}
