//! The shared session store: sessions in their packed binary form under `gatehouse:s:<sha256(id)>` with a TTL,
//! indexes by (issuer, subject) and (issuer, IdP session id) as sets (so logout-everywhere is
//! a set lookup, never a scan of the keyspace); any instance sharing the Redis sees every
//! session.
//!
//! Cluster-safe: no script or pipeline names keys of two slots (a request knows only its
//! cookie's id, so a session cannot share its user's slot). Writes that span keys are
//! ordered instead of atomic: an index is written before its session and cleared after it,
//! so a failure between the two leaves an index naming an ended session (skipped when read),
//! never a live session no index ends; a login checks its index entries after storing its
//! session (a revocation that read the index in between removed them: the session is
//! deleted), and a revocation deletes its sessions again after clearing their entries.
//! Multi-key reads and deletes (MGET, DEL) the cluster
//! client splits by slot. docs/redis.md has the key layout.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{store_key, Issuer, Session, SessionStore, StoreError, Stored};
use crate::redis_conn::{LazyRedis, RedisTarget};

pub struct RedisSessionStore {
    redis: LazyRedis,
    /// Index sets outlive every session they name.
    index_ttl: Duration,
}

/// Every live session's key, scored by when its TTL ends: `count` without a scan.
const ACTIVE: &str = "gatehouse:active";

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn session_key(session_id: &str) -> String {
    member_key(&store_key(session_id))
}

/// The key of the session an index member (its store key) names.
fn member_key(member: &str) -> String {
    format!("gatehouse:s:{member}")
}

/// Whether `text` is a store key as this store writes them (64 lower-case hex digits): what
/// an admin names a session by, checked before it reaches a Redis key.
fn is_store_key(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What a session index is by: an issuer's subject, or its IdP session id.
#[derive(Clone, Copy)]
enum Indexed {
    Subject,
    Sid,
}

/// The set of sessions of one issuer's subject or IdP session id.
fn index_key(by: Indexed, issuer: &str, name: &str) -> String {
    let kind = match by {
        Indexed::Subject => "isu",
        Indexed::Sid => "isid",
    };
    let mut hash = Sha256::new();
    hash.update((issuer.len() as u64).to_be_bytes());
    hash.update(issuer.as_bytes());
    hash.update(name.as_bytes());
    format!("gatehouse:{kind}:{}", hex::encode(hash.finalize()))
}

/// Where sessions stored before sessions named their issuer (format 3) are indexed: by the
/// name alone. They leave it as they end, at most `max_lifetime` after the upgrade.
fn legacy_index_key(by: Indexed, name: &str) -> String {
    let kind = match by {
        Indexed::Subject => "su",
        Indexed::Sid => "sid",
    };
    format!(
        "gatehouse:{kind}:{}",
        hex::encode(Sha256::digest(name.as_bytes()))
    )
}

/// The index a session is found in under `by`.
fn session_index_key(by: Indexed, session: &Session, name: &str) -> String {
    match session.issuer() {
        Some(issuer) => index_key(by, issuer, name),
        None => legacy_index_key(by, name),
    }
}

impl RedisSessionStore {
    pub fn new(
        target: &RedisTarget,
        timeout: Duration,
        max_lifetime: Duration,
    ) -> Result<Self, String> {
        Ok(RedisSessionStore {
            redis: LazyRedis::new(target, timeout)?,
            index_ttl: max_lifetime + Duration::from_secs(60),
        })
    }

    /// Ends a session by its store key (the id's SHA-256): what a missed logout keeps.
    pub async fn delete_stored(&self, member: &str) -> Result<(), StoreError> {
        let member = member.to_string();
        self.redis
            .run(|mut c| {
                let member = member.clone();
                async move {
                    redis::cmd("DEL")
                        .arg(member_key(&member))
                        .query_async::<()>(&mut c)
                        .await?;
                    redis::cmd("ZREM")
                        .arg(ACTIVE)
                        .arg(&member)
                        .query_async::<()>(&mut c)
                        .await
                }
            })
            .await
            .map_err(StoreError::Unavailable)
    }

    /// Ends the sessions one issuer's subject or IdP session id names, within one timeout.
    async fn delete_named(
        &self,
        by: Indexed,
        issuer: Issuer<'_>,
        name: &str,
    ) -> Result<usize, StoreError> {
        self.redis
            .within(self.delete_named_unbounded(by, issuer, name))
            .await
            .map_err(StoreError::Unavailable)
    }

    async fn delete_named_unbounded(
        &self,
        by: Indexed,
        issuer: Issuer<'_>,
        name: &str,
    ) -> Result<usize, String> {
        let index = index_key(by, issuer.url, name);
        let legacy = legacy_index_key(by, name);
        let (members, legacy_members): (Vec<String>, Vec<String>) = self
            .redis
            .run(|mut c| {
                let (index, legacy) = (index.clone(), legacy.clone());
                async move { both_members(&mut c, &index, &legacy).await }
            })
            .await?;
        // A session without an issuer is this issuer's when its IdP is; one that is gone
        // (expired) leaves the index.
        let mut unindexed = Vec::new();
        let mut ended = members.clone();
        if !legacy_members.is_empty() {
            let keys: Vec<String> = legacy_members
                .iter()
                .map(|m| format!("gatehouse:s:{m}"))
                .collect();
            let values: Vec<Option<Vec<u8>>> = self
                .redis
                .run(|mut c| {
                    let keys = keys.clone();
                    async move { redis::cmd("MGET").arg(keys).query_async(&mut c).await }
                })
                .await?;
            for (member, value) in legacy_members.into_iter().zip(values) {
                match value.as_deref().and_then(Session::from_bytes) {
                    None => unindexed.push(member),
                    Some(s) if issuer.issued(&s) && named(by, &s, name) => {
                        ended.push(member.clone());
                        unindexed.push(member);
                    }
                    Some(_) => {}
                }
            }
        }
        if ended.is_empty() && unindexed.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = ended.iter().map(|m| format!("gatehouse:s:{m}")).collect();
        self.redis
            .run(|mut c| {
                let (keys, ended, members) = (keys.clone(), ended.clone(), members.clone());
                let (index, legacy, unindexed) = (index.clone(), legacy.clone(), unindexed.clone());
                async move {
                    // Sessions first, their index entries after: see the module's note.
                    let mut n = 0;
                    if !keys.is_empty() {
                        n = redis::cmd("DEL").arg(&keys).query_async(&mut c).await?;
                        redis::cmd("ZREM")
                            .arg(ACTIVE)
                            .arg(&ended)
                            .query_async::<()>(&mut c)
                            .await?;
                    }
                    // Only what was read leaves the indexes: a session indexed meanwhile stays.
                    if !members.is_empty() {
                        redis::cmd("SREM")
                            .arg(&index)
                            .arg(&members)
                            .query_async::<()>(&mut c)
                            .await?;
                    }
                    if !unindexed.is_empty() {
                        redis::cmd("SREM")
                            .arg(&legacy)
                            .arg(&unindexed)
                            .query_async::<()>(&mut c)
                            .await?;
                    }
                    // A login that indexed its session before this read and stored it after
                    // the first DEL: ended now (the login's own check catches the other order).
                    if !keys.is_empty() {
                        redis::cmd("DEL")
                            .arg(&keys)
                            .query_async::<()>(&mut c)
                            .await?;
                    }
                    Ok(n)
                }
            })
            .await
    }
}

impl RedisSessionStore {
    /// The live sessions of one issuer's subject: the members of its index (and of the
    /// name-only index of sessions stored before they named their issuer), read in one MGET.
    async fn list_named_unbounded(
        &self,
        issuer: Issuer<'_>,
        subject: &str,
    ) -> Result<Vec<Stored>, String> {
        let index = index_key(Indexed::Subject, issuer.url, subject);
        let legacy = legacy_index_key(Indexed::Subject, subject);
        let (mut members, legacy_members): (Vec<String>, Vec<String>) = self
            .redis
            .run(|mut c| {
                let (index, legacy) = (index.clone(), legacy.clone());
                async move { both_members(&mut c, &index, &legacy).await }
            })
            .await?;
        members.extend(legacy_members);
        members.retain(|m| is_store_key(m));
        members.sort_unstable();
        members.dedup();
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = members.iter().map(|m| member_key(m)).collect();
        let values: Vec<Option<Vec<u8>>> = self
            .redis
            .run(|mut c| {
                let keys = keys.clone();
                async move { redis::cmd("MGET").arg(keys).query_async(&mut c).await }
            })
            .await?;
        // An index may still name a session that ended (it expires with its own TTL).
        Ok(members
            .into_iter()
            .zip(values)
            .filter_map(|(member, value)| {
                let session = Session::from_bytes(value.as_deref()?)?;
                (session.subject() == subject && issuer.issued(&session)).then(|| Stored {
                    id_hash: member,
                    session: Arc::new(session),
                })
            })
            .collect())
    }

    /// Ends the session stored under `member` (its store key); whether there was one.
    async fn delete_member(&self, member: &str) -> Result<bool, StoreError> {
        if !is_store_key(member) {
            return Ok(false);
        }
        let member = member.to_string();
        self.redis
            .run(|mut c| {
                let member = member.clone();
                async move {
                    let deleted: usize = redis::cmd("DEL")
                        .arg(member_key(&member))
                        .query_async(&mut c)
                        .await?;
                    redis::cmd("ZREM")
                        .arg(ACTIVE)
                        .arg(&member)
                        .query_async::<()>(&mut c)
                        .await?;
                    Ok(deleted == 1)
                }
            })
            .await
            .map_err(StoreError::Unavailable)
    }
}

/// The members of an index and of its legacy twin: two keys, so two slots, so two commands.
async fn both_members(
    c: &mut impl redis::aio::ConnectionLike,
    index: &str,
    legacy: &str,
) -> redis::RedisResult<(Vec<String>, Vec<String>)> {
    let members = redis::cmd("SMEMBERS").arg(index).query_async(c).await?;
    let legacy = redis::cmd("SMEMBERS").arg(legacy).query_async(c).await?;
    Ok((members, legacy))
}

/// Whether the session is the one `name` names under `by`.
fn named(by: Indexed, session: &Session, name: &str) -> bool {
    match by {
        Indexed::Subject => session.subject() == name,
        Indexed::Sid => session.sid() == Some(name),
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn get(&self, session_id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        let key = session_key(session_id);
        let get = self.redis.run(|mut c| {
            let key = key.clone();
            async move { redis::cmd("GET").arg(key).query_async(&mut c).await }
        });
        let data: Option<Vec<u8>> = crate::otel::redis("GET", get)
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
        let subject_index = session_index_key(Indexed::Subject, session, session.subject());
        let sid_index = session
            .sid()
            .map(|sid| session_index_key(Indexed::Sid, session, sid));
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let index_ms = self.index_ttl.as_millis() as u64;
        self.redis
            .run(|mut c| {
                let (key, data, member) = (key.clone(), data.clone(), member.clone());
                let (subject_index, sid_index) = (subject_index.clone(), sid_index.clone());
                async move {
                    // The indexes before the session: see the module's note.
                    for index in std::iter::once(&subject_index).chain(&sid_index) {
                        // One key, so one slot: MULTI keeps the set from living without a TTL.
                        let mut pipe = redis::pipe();
                        pipe.atomic();
                        pipe.cmd("SADD").arg(index).arg(&member).ignore();
                        pipe.cmd("PEXPIRE").arg(index).arg(index_ms).ignore();
                        pipe.query_async::<()>(&mut c).await?;
                    }
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(data)
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async::<()>(&mut c)
                        .await?;
                    // A revocation that read the index between the two writes removed the
                    // entry but found no session to end: this session then ends here.
                    for index in std::iter::once(&subject_index).chain(&sid_index) {
                        let still: bool = redis::cmd("SISMEMBER")
                            .arg(index)
                            .arg(&member)
                            .query_async(&mut c)
                            .await?;
                        if !still {
                            return redis::cmd("DEL").arg(&key).query_async::<()>(&mut c).await;
                        }
                    }
                    redis::cmd("ZADD")
                        .arg(ACTIVE)
                        .arg(unix_ms() + ttl_ms)
                        .arg(&member)
                        .query_async::<()>(&mut c)
                        .await
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
                    // Only while it exists (XX): a logout on another instance is never undone
                    // by a request in flight here.
                    let replaced: Option<String> = redis::cmd("SET")
                        .arg(&key)
                        .arg(data)
                        .arg("PX")
                        .arg(ttl_ms)
                        .arg("XX")
                        .query_async(&mut c)
                        .await?;
                    if replaced.is_none() {
                        return Ok(false);
                    }
                    // XX again: a logout between the two commands (its ZREM) stays done.
                    redis::cmd("ZADD")
                        .arg(ACTIVE)
                        .arg("XX")
                        .arg(unix_ms() + ttl_ms)
                        .arg(&member)
                        .query_async::<()>(&mut c)
                        .await?;
                    Ok(true)
                }
            })
            .await
            .map_err(StoreError::Unavailable)
    }

    async fn delete(&self, session_id: &str) -> Result<(), StoreError> {
        self.delete_stored(&store_key(session_id)).await
    }

    async fn delete_by_subject(
        &self,
        issuer: Issuer<'_>,
        subject: &str,
    ) -> Result<usize, StoreError> {
        self.delete_named(Indexed::Subject, issuer, subject).await
    }

    async fn delete_by_sid(&self, issuer: Issuer<'_>, sid: &str) -> Result<usize, StoreError> {
        self.delete_named(Indexed::Sid, issuer, sid).await
    }

    async fn list_by_subject(
        &self,
        issuer: Issuer<'_>,
        subject: &str,
    ) -> Result<Vec<Stored>, StoreError> {
        self.redis
            .within(self.list_named_unbounded(issuer, subject))
            .await
            .map_err(StoreError::Unavailable)
    }

    async fn delete_by_hash(&self, id_hash: &str) -> Result<bool, StoreError> {
        self.delete_member(id_hash).await
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
        self.redis
            .set_once(&key, ttl)
            .await
            .map_err(StoreError::Unavailable)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Names, TokenCipher};

    /// A real redis-server on a free loopback port, killed on drop.
    struct Server(std::process::Child, u16);

    impl Server {
        fn start() -> Option<Server> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .ok()?;
            let server = Server(child, port);
            for _ in 0..200 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(server);
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            None
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn sessions_stored_before_they_named_their_issuer_end_by_their_idps_issuer() {
        let server = Server::start().expect("redis-server (scripts/setup.sh installs it)");
        let url = format!("redis://127.0.0.1:{}/0", server.1);
        let target = RedisTarget::from_url(&url).unwrap();
        let store =
            RedisSessionStore::new(&target, Duration::from_secs(2), Duration::from_secs(3600))
                .unwrap();
        let cipher = TokenCipher::new(b"a secret for the redis store tests");
        let names = |idp, issuer, sid| Names {
            idp,
            issuer,
            subject: "alice",
            sid: Some(sid),
            acr: None,
        };
        let hour = Duration::from_secs(3600);
        // Stored by an earlier build (format 3, indexed by the name alone), and a partner's
        // alice stored now.
        let old = Session::without_issuer(
            names("corp", "", "s1"),
            &Default::default(),
            &cipher,
            Default::default(),
        );
        store.put("old", &old, hour).await.unwrap();
        let partner = Session::new(
            names("partner", "https://partner.example", "s1"),
            &Default::default(),
            &cipher,
            Default::default(),
        );
        store.put("new", &partner, hour).await.unwrap();
        let (corp_idps, partner_idps) = (["corp".to_string()], ["partner".to_string()]);
        let corp = Issuer {
            url: "https://corp.example",
            idps: &corp_idps,
        };
        let partner = Issuer {
            url: "https://partner.example",
            idps: &partner_idps,
        };
        assert_eq!(store.delete_by_subject(partner, "alice").await.unwrap(), 1);
        assert_eq!(store.delete_by_sid(partner, "s1").await.unwrap(), 0);
        let kept = store.get("old").await.unwrap().expect("corp's alice stays");
        assert_eq!(kept.issuer(), None);
        assert_eq!(store.delete_by_sid(corp, "s1").await.unwrap(), 1);
        assert!(store.get("old").await.unwrap().is_none());
        // No session is left, nor the IdP-session indexes that named them (an index by
        // subject that still names an ended session expires with its TTL, or is cleaned when
        // read).
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("gatehouse:*")
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(
            keys.iter().all(|k| k.starts_with("gatehouse:su:")),
            "{keys:?}"
        );
        assert_eq!(store.delete_by_subject(corp, "alice").await.unwrap(), 0);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("gatehouse:*")
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(keys.is_empty(), "{keys:?}");
        let live: usize = redis::cmd("ZCARD")
            .arg(ACTIVE)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(live, 0);
    }
}
