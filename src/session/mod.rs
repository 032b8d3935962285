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
    /// The ID token's other claims as compact JSON text (a parsed map costs several times
    /// the memory; it is parsed once, when the session's identity is built).
    pub claims: String,
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
        self.seal_bytes(plaintext.as_bytes())
    }

    fn seal_bytes(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; 12] = rand::random();
        let nonce = Nonce::from_slice(&nonce_bytes);
        let mut out = nonce_bytes.to_vec();
        // Encryption with a fresh nonce and an in-memory buffer does not fail.
        if let Ok(ct) = self.cipher.encrypt(nonce, plaintext) {
            out.extend_from_slice(&ct);
        }
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Option<String> {
        String::from_utf8(self.open_bytes(sealed)?).ok()
    }

    fn open_bytes(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(12);
        self.cipher.decrypt(Nonce::from_slice(nonce), ct).ok()
    }

    /// Seals a token; a compact JWS is kept as its decoded parts (a quarter smaller than
    /// its base64 text, which matters with 100,000 sessions in memory).
    pub fn seal_token(&self, token: &str) -> Vec<u8> {
        self.seal_bytes(&compact_token(token))
    }

    pub fn open_token(&self, sealed: &[u8]) -> Option<String> {
        expand_token(&self.open_bytes(sealed)?)
    }
}

/// `1 | len(header) u16 | header | len(payload) u16 | payload | signature` for a JWS whose
/// base64url parts re-encode to exactly the same text; `0 | text` for anything else.
fn compact_token(token: &str) -> Vec<u8> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() == 3 {
        let decoded: Vec<Vec<u8>> = parts
            .iter()
            .filter_map(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .filter(|d| d.len() <= u16::MAX as usize)
            .collect();
        let exact = decoded.len() == 3
            && decoded
                .iter()
                .zip(&parts)
                .all(|(d, p)| URL_SAFE_NO_PAD.encode(d) == *p);
        if exact {
            let mut out = Vec::with_capacity(token.len() * 3 / 4 + 8);
            out.push(1);
            for d in &decoded[..2] {
                out.extend_from_slice(&(d.len() as u16).to_be_bytes());
                out.extend_from_slice(d);
            }
            out.extend_from_slice(&decoded[2]);
            return out;
        }
    }
    let mut out = Vec::with_capacity(token.len() + 1);
    out.push(0);
    out.extend_from_slice(token.as_bytes());
    out
}

fn expand_token(data: &[u8]) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    match data.split_first()? {
        (0, text) => String::from_utf8(text.to_vec()).ok(),
        (1, mut rest) => {
            let mut parts = Vec::with_capacity(3);
            for _ in 0..2 {
                let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
                let part = rest.get(2..2 + len)?;
                parts.push(URL_SAFE_NO_PAD.encode(part));
                rest = &rest[2 + len..];
            }
            parts.push(URL_SAFE_NO_PAD.encode(rest));
            Some(parts.join("."))
        }
        _ => None,
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
    fn tokens_are_stored_compactly_and_come_back_exactly() {
        let c = TokenCipher::new(b"a long enough shared secret for tests");
        let jws = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsIm5vbmNlIjoieCJ9.c2lnbmF0dXJlLWJ5dGVz";
        let sealed = c.seal_token(jws);
        assert_eq!(c.open_token(&sealed).as_deref(), Some(jws));
        assert!(sealed.len() < jws.len() + 28);
        for other in [
            "opaque-refresh-token",
            "a.b",
            "e30.e30.e30=",
            "not base64!.x.y",
            "",
        ] {
            assert_eq!(c.open_token(&c.seal_token(other)).as_deref(), Some(other));
        }
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
