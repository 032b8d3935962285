//! Server-side sessions for browser login: the cookie holds only a 256-bit random id; the store keys sessions by the id's SHA-256, keeps
//! tokens encrypted (AES-256-GCM, key derived from `session.secret`), indexes sessions by
//! subject and IdP session id so logout-everywhere never scans, and expires everything by TTL.

pub mod fallback;
pub mod memory;
pub mod redis_store;

use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A new session id: 256 bits from the OS CSPRNG, hex for the cookie.
pub fn new_session_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// What the store is keyed by: the id's SHA-256, so a store dump holds no usable cookie.
pub fn store_key(session_id: &str) -> String {
    hex::encode(Sha256::digest(session_id.as_bytes()))
}

/// One logged-in browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub subject: String,
    pub email: Option<String>,
    pub username: Option<String>,
    pub groups: Vec<String>,
    pub idp: String,
    /// The IdP's session id (`sid`), for back-channel logout.
    pub sid: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    pub expires_at: u64,
    pub auth_time: Option<u64>,
    pub acr: Option<String>,
    pub amr: Vec<String>,
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Tokens, encrypted with [`TokenCipher`].
    pub id_token: Option<Vec<u8>>,
    pub access_token: Option<Vec<u8>>,
    pub refresh_token: Option<Vec<u8>>,
    pub access_expires_at: Option<u64>,
    /// When to refresh the access token (Unix seconds), ahead of its expiry.
    #[serde(default)]
    pub refresh_at: Option<u64>,
    /// When the idle timeout was last pushed back (Unix seconds).
    #[serde(default)]
    pub touched_at: u64,
    /// The identity this session stands for, built on first use (not stored).
    #[serde(skip)]
    pub identity: std::sync::OnceLock<Arc<crate::authn::Identity>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("stored session is corrupt: {0}")]
    Corrupt(String),
}

/// Where sessions live. Every method is bounded in time by the implementation.
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn get(&self, session_id: &str) -> Result<Option<Arc<Session>>, StoreError>;
    /// Stores (or replaces) a session that lives `ttl` more (idle timeout, capped by the
    /// absolute lifetime by the caller).
    async fn put(
        &self,
        session_id: &str,
        session: &Session,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    async fn delete(&self, session_id: &str) -> Result<(), StoreError>;
    /// Ends every session of a subject (logout everywhere); returns how many ended.
    async fn delete_by_subject(&self, subject: &str) -> Result<usize, StoreError>;
    /// Ends the sessions of one IdP session (back-channel logout by `sid`).
    async fn delete_by_sid(&self, sid: &str) -> Result<usize, StoreError>;
    async fn count(&self) -> Result<usize, StoreError>;
    /// A short-lived value read at most once (a login in progress): `take_once` returns it
    /// and removes it in one step, so a replayed `state` finds nothing.
    async fn put_once(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    async fn take_once(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// A lock shared by every instance of the store, held at most `ttl`; true when this
    /// caller got it (token refresh single-flight).
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, StoreError>;
    async fn unlock(&self, name: &str) -> Result<(), StoreError>;
    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
    /// "memory", "redis", or "redis (memory fallback active)".
    fn label(&self) -> String;
}

/// AES-256-GCM for tokens at rest; the key is derived from `session.secret` with HKDF, so
/// instances that share the secret read each other's sessions.
#[derive(Clone)]
pub struct TokenCipher {
    cipher: Aes256Gcm,
}

impl TokenCipher {
    pub fn new(secret: &[u8]) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"gatehouse session tokens v1"), secret);
        let mut key = [0u8; 32];
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(b"aes-256-gcm", &mut key);
        TokenCipher {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// nonce (12 bytes) || ciphertext+tag
    pub fn seal(&self, plaintext: &str) -> Vec<u8> {
        let nonce_bytes: [u8; 12] = rand::random();
        let nonce = Nonce::from_slice(&nonce_bytes);
        let mut out = nonce_bytes.to_vec();
        // Encryption with a fresh nonce and an in-memory buffer does not fail.
        if let Ok(ct) = self.cipher.encrypt(nonce, plaintext.as_bytes()) {
            out.extend_from_slice(&ct);
        }
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Option<String> {
        if sealed.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(12);
        let plain = self.cipher.decrypt(Nonce::from_slice(nonce), ct).ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_tampering_is_detected() {
        let c = TokenCipher::new(b"a long enough shared secret for tests");
        let sealed = c.seal("eyJhbGciOi.token");
        assert_eq!(c.open(&sealed).as_deref(), Some("eyJhbGciOi.token"));
        assert_ne!(c.seal("x"), c.seal("x"), "fresh nonce every time");
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(c.open(&bad), None);
        let other = TokenCipher::new(b"another secret");
        assert_eq!(other.open(&sealed), None);
        assert!(!String::from_utf8_lossy(&sealed).contains("eyJ"));
    }

    #[test]
    fn ids_are_256_bit_and_stored_hashed() {
        let id = new_session_id();
        assert_eq!(id.len(), 64);
        assert_ne!(id, new_session_id());
        assert_ne!(store_key(&id), id);
        assert_eq!(store_key(&id).len(), 64);
    }
}
