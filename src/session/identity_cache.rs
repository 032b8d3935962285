//! Identities built from sessions' ID tokens, cached by the stored version of the session.

use std::sync::Arc;

use super::Session;
use crate::identity::Identity;

/// Identities built from sessions' ID tokens, by [`Session::version`]: shared by every copy
/// of a session (with Redis, every request reads a new copy) and bounded in memory, so
/// 100,000 sessions that are all in use do not keep 100,000 parsed claim sets.
///
/// Sharded maps with CLOCK eviction (an identity used since the hand last passed it gets
/// another round) rather than a cache crate: a lookup is one uncontended lock and a hash,
/// on every request of a session route.
pub struct IdentityCache {
    shards: Box<[std::sync::Mutex<IdentityShard>]>,
    /// The estimated bytes one shard may hold.
    budget: u64,
}

const IDENTITY_SHARDS: usize = 8;

#[derive(Default)]
struct IdentityShard {
    map: std::collections::HashMap<[u8; 12], CachedIdentity, crate::random_keys::RandomKeyed>,
    /// Every key of `map`, in the order the clock hand visits them.
    clock: std::collections::VecDeque<[u8; 12]>,
    bytes: u64,
}

struct CachedIdentity {
    identity: Arc<Identity>,
    weight: u64,
    used: bool,
}

impl IdentityCache {
    /// At most about `max_bytes` of identities, by their estimated size.
    pub fn new(max_bytes: u64) -> Self {
        IdentityCache {
            shards: (0..IDENTITY_SHARDS).map(|_| Default::default()).collect(),
            budget: max_bytes / IDENTITY_SHARDS as u64,
        }
    }

    fn shard(&self, version: &[u8; 12]) -> std::sync::MutexGuard<'_, IdentityShard> {
        // The version is a random nonce: any of its bytes spreads the shards evenly.
        let shard = &self.shards[usize::from(version[0]) % IDENTITY_SHARDS];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, session: &Session) -> Option<Arc<Identity>> {
        let version = session.version();
        let mut shard = self.shard(&version);
        let cached = shard.map.get_mut(&version)?;
        cached.used = true;
        Some(cached.identity.clone())
    }

    pub fn insert(&self, session: &Session, identity: Identity) -> Arc<Identity> {
        let identity = Arc::new(identity);
        let version = session.version();
        let weight = u64::from(crate::authn::bearer::estimated_size(&identity));
        let mut guard = self.shard(&version);
        let shard = &mut *guard;
        let entry = CachedIdentity {
            identity: identity.clone(),
            weight,
            used: false,
        };
        match shard.map.insert(version, entry) {
            Some(old) => shard.bytes -= old.weight,
            None => shard.clock.push_back(version),
        }
        shard.bytes += weight;
        // Each key is passed at most twice: once to clear its use, once to evict it.
        let mut passes = 2 * shard.clock.len();
        while shard.bytes > self.budget && passes > 0 {
            passes -= 1;
            let Some(key) = shard.clock.pop_front() else {
                break;
            };
            match shard.map.get_mut(&key) {
                Some(cached) if cached.used => {
                    cached.used = false;
                    shard.clock.push_back(key);
                }
                Some(_) => {
                    if let Some(evicted) = shard.map.remove(&key) {
                        shard.bytes -= evicted.weight;
                    }
                }
                None => {}
            }
        }
        identity
    }

    /// The estimated bytes held now.
    pub fn bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::names;
    use crate::session::{Times, TokenCipher, Tokens};

    fn session_identity(
        subject: &str,
        claims: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Identity {
        Identity {
            method: crate::identity::AuthMethod::Session,
            subject: subject.into(),
            email: None,
            username: None,
            groups: Vec::new(),
            scopes: Vec::new(),
            issuer: None,
            qualified: false,
            claims: claims.cloned().unwrap_or_default(),
            expires_at: None,
            header_values: Default::default(),
        }
    }

    #[test]
    fn identities_are_cached_per_version_within_their_bound() {
        let c = TokenCipher::new(b"a long enough shared secret for tests");
        let claims = serde_json::json!({"name": "x".repeat(200)});
        let identity = |subject: &str| session_identity(subject, claims.as_object());
        let cache = IdentityCache::new(64 * 1024);
        let s = Session::new(names(), &Tokens::default(), &c, Times::starting(1, 2));
        assert!(cache.get(&s).is_none());
        cache.insert(&s, identity("alice"));
        assert_eq!(
            cache.get(&s.clone()).map(|i| i.subject.clone()).as_deref(),
            Some("alice")
        );
        let refreshed = s.with_tokens(&Tokens::default(), &c);
        assert!(cache.get(&refreshed).is_none(), "new tokens: built anew");
        for i in 0..1000 {
            let other = Session::new(names(), &Tokens::default(), &c, Times::starting(1, 2));
            cache.insert(&other, identity(&format!("user-{i}")));
        }
        assert!(cache.bytes() <= 64 * 1024, "{} bytes", cache.bytes());
        assert!(cache.bytes() > 32 * 1024, "{} bytes: filled", cache.bytes());
    }

    #[test]
    fn identities_in_use_outlive_unused_ones() {
        let c = TokenCipher::new(b"a long enough shared secret for tests");
        let identity = |subject: &str| session_identity(subject, None);
        let session = || Session::new(names(), &Tokens::default(), &c, Times::starting(1, 2));
        let one = crate::authn::bearer::estimated_size(&identity("user-0")) as u64;
        // Room for about four identities in each shard.
        let cache = IdentityCache::new(one * 4 * IDENTITY_SHARDS as u64);
        let busy = session();
        cache.insert(&busy, identity("busy"));
        for i in 0..200 {
            assert!(
                cache.get(&busy).is_some(),
                "a session in use keeps its identity ({i})"
            );
            cache.insert(&session(), identity(&format!("user-{i}")));
        }
    }
}
