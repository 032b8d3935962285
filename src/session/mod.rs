//! Server-side sessions for browser login: the cookie holds only a 256-bit random id; the store keys sessions by the id's SHA-256, keeps
//! tokens encrypted (AES-256-GCM, key derived from `session.secret`), indexes sessions by
//! (issuer, subject) and (issuer, IdP session id) so logout-everywhere never scans, and
//! expires everything by TTL.

mod codec;
pub mod fallback;
mod identity_cache;
pub mod memory;
pub mod redis_store;

use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use sha2::{Digest, Sha256};

#[cfg(feature = "fuzzing")]
pub use codec::fuzz_token_codec;
use codec::{
    bundle, bundle_entry, expand_token, names_start, put_client, put_field, put_name, put_times,
    read_client, read_layout, token_dictionary, token_payload, Layout, ACCESS_TOKEN, CLIENT,
    FORMAT, ID_TOKEN, MAX_USER_AGENT, USERINFO,
};
pub use identity_cache::IdentityCache;

/// A new session id: 256 bits from the OS CSPRNG, hex for the cookie.
pub fn new_session_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// What the store is keyed by: the id's SHA-256, so a store dump holds no usable cookie.
pub fn store_key(session_id: &str) -> String {
    hex::encode(Sha256::digest(session_id.as_bytes()))
}

/// A session's tokens in the clear, only ever for as long as one is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    pub id_token: Option<String>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
}

/// The names a session is found and shown by.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    pub idp: &'a str,
    /// Whose `subject` and `sid` these are: both are unique only within their issuer.
    pub issuer: &'a str,
    pub subject: &'a str,
    /// The IdP's session id (`sid`), for back-channel logout.
    pub sid: Option<&'a str>,
    pub acr: Option<&'a str>,
}

/// Where a login came from, for the session admin API: the client's address and user agent
/// at login. Kept sealed with the tokens (personal data, never in the clear in a store).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginClient {
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

impl LoginClient {
    /// The client of a login: its address (as the gateway judged it) and the first
    /// [`MAX_USER_AGENT`] bytes of its `User-Agent`, cut at a character.
    pub fn new(ip: Option<std::net::IpAddr>, user_agent: Option<&str>) -> LoginClient {
        let user_agent = user_agent.filter(|a| !a.is_empty()).map(|a| {
            let mut end = a.len().min(MAX_USER_AGENT);
            while !a.is_char_boundary(end) {
                end -= 1;
            }
            a[..end].to_string()
        });
        LoginClient { ip, user_agent }
    }
}

/// A session's times, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Times {
    pub created_at: u64,
    /// The absolute end (`max_lifetime`).
    pub expires_at: u64,
    /// When the idle timeout was last pushed back.
    pub touched_at: u64,
    pub auth_time: Option<u64>,
    pub access_expires_at: Option<u64>,
    /// When to refresh the access token, ahead of its expiry.
    pub refresh_at: Option<u64>,
}

impl Times {
    /// A session that starts `now` and ends at `expires_at` at the latest.
    pub fn starting(now: u64, expires_at: u64) -> Times {
        Times {
            created_at: now,
            expires_at,
            touched_at: now,
            ..Times::default()
        }
    }
}

/// One logged-in browser, packed so that 100,000 fit in little memory: the times, the
/// names ([`Names`]) and the tokens, sealed together under one nonce, share a single
/// allocation. The rest of the person (email, groups, other claims) is read from the ID
/// token when the session's identity is needed ([`IdentityCache`]), so nothing is kept twice.
#[derive(Clone)]
pub struct Session {
    /// `len(times) u8 | times | idp | issuer | subject | sid | acr | sealed tokens`; each name
    /// behind a u32 length (sid and acr: length + 1, 0 for none). The issuer is left out of
    /// sessions read from format 3 and 2 (the length byte's top bit says which).
    packed: Box<[u8]>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("idp", &self.idp())
            .field("issuer", &self.issuer())
            .field("subject", &self.subject())
            .field("sid", &self.sid())
            .field("times", &self.times())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn new(names: Names<'_>, tokens: &Tokens, cipher: &TokenCipher, times: Times) -> Session {
        Session::from_login(names, tokens, &LoginClient::default(), cipher, times)
    }

    /// A session that also keeps where its login came from, sealed with its tokens.
    pub fn from_login(
        names: Names<'_>,
        tokens: &Tokens,
        client: &LoginClient,
        cipher: &TokenCipher,
        times: Times,
    ) -> Session {
        let names_len = names.idp.len() + names.issuer.len() + names.subject.len();
        let mut packed = Vec::with_capacity(40 + names_len + 64 + tokens.len() * 3 / 4);
        put_times(&mut packed, times, true);
        let names_start = packed.len();
        put_name(&mut packed, Some(names.idp));
        put_name(&mut packed, Some(names.issuer));
        put_name(&mut packed, Some(names.subject));
        put_name(&mut packed, names.sid);
        put_name(&mut packed, names.acr);
        let dictionary = token_dictionary(Some(names.issuer), names.subject, names.sid);
        let mut bundled = bundle(tokens, &dictionary);
        let client = put_client(client);
        if !client.is_empty() {
            put_field(&mut bundled, Some(&client));
        }
        let sealed = cipher.seal(&bundled, &packed[names_start..]);
        packed.extend_from_slice(&sealed);
        Session {
            packed: packed.into_boxed_slice(),
        }
    }

    pub fn times(&self) -> Times {
        self.packed
            .get(1..self.names_start())
            .and_then(Times::read)
            .map_or_else(Times::default, |(t, _)| t)
    }

    pub fn set_times(&mut self, times: Times) {
        let rest = &self.packed[self.names_start()..];
        let mut packed = Vec::with_capacity(rest.len() + 32);
        put_times(&mut packed, times, self.issuer().is_some());
        packed.extend_from_slice(rest);
        self.packed = packed.into_boxed_slice();
    }

    /// Where the names start, after the times.
    fn names_start(&self) -> usize {
        names_start(&self.packed).map_or(self.packed.len(), |(start, _)| start)
    }

    /// A session is only ever built by [`Session::new`] or checked by
    /// [`Session::from_bytes`], so its layout reads.
    fn layout(&self) -> Layout<'_> {
        read_layout(&self.packed).unwrap_or(Layout {
            issuer: None,
            subject: "",
            sid: None,
            acr: None,
            sealed: self.packed.len(),
        })
    }

    pub fn idp(&self) -> &str {
        // The first name: read alone, as a route that names its IdP asks on every request.
        names_start(&self.packed)
            .and_then(|(mut at, _)| codec::take_name(&self.packed, &mut at)?)
            .unwrap_or_default()
    }

    /// The issuer that vouched for the subject; `None` for a session stored before sessions
    /// named it (format 3 and 2), whose issuer is its IdP's.
    pub fn issuer(&self) -> Option<&str> {
        self.layout().issuer
    }

    pub fn subject(&self) -> &str {
        // Read up to the subject only: every request of a session route checks it.
        let Some((mut at, names_issuer)) = names_start(&self.packed) else {
            return "";
        };
        let mut next = || codec::take_name(&self.packed, &mut at).flatten();
        let _idp = next();
        if names_issuer {
            let _issuer = next();
        }
        next().unwrap_or_default()
    }

    pub fn sid(&self) -> Option<&str> {
        self.layout().sid
    }

    pub fn acr(&self) -> Option<&str> {
        self.layout().acr
    }

    /// The tokens, decrypted; `None` when they cannot be (another secret, tampering).
    pub fn tokens(&self, cipher: &TokenCipher) -> Option<Tokens> {
        let bundle = self.open_bundle(cipher)?;
        let dictionary = self.token_dictionary();
        let token = |i| -> Option<Option<String>> {
            match bundle_entry(&bundle, i)? {
                Some(token) => expand_token(token, &dictionary).map(Some),
                None => Some(None),
            }
        };
        Some(Tokens {
            id_token: token(ID_TOKEN)?,
            access_token: token(ACCESS_TOKEN)?,
            refresh_token: token(2)?,
        })
    }

    /// The access token alone (a route that passes it on asks on every request).
    pub fn access_token(&self, cipher: &TokenCipher) -> Option<String> {
        let bundle = self.open_bundle(cipher)?;
        expand_token(
            bundle_entry(&bundle, ACCESS_TOKEN)??,
            &self.token_dictionary(),
        )
    }

    /// The ID token alone (`id_token_hint` at logout).
    pub fn id_token(&self, cipher: &TokenCipher) -> Option<String> {
        let bundle = self.open_bundle(cipher)?;
        expand_token(bundle_entry(&bundle, ID_TOKEN)??, &self.token_dictionary())
    }

    /// The ID token's claims (its JSON payload), read without rebuilding the token's text.
    pub fn id_token_claims(&self, cipher: &TokenCipher) -> Option<Vec<u8>> {
        let bundle = self.open_bundle(cipher)?;
        token_payload(bundle_entry(&bundle, ID_TOKEN)??, &self.token_dictionary())
    }

    /// Where the login came from: `None` when the tokens do not open; nothing known for a
    /// session stored before sessions kept it.
    pub fn login_client(&self, cipher: &TokenCipher) -> Option<LoginClient> {
        let bundle = self.open_bundle(cipher)?;
        Some(
            bundle_entry(&bundle, CLIENT)
                .flatten()
                .and_then(read_client)
                .unwrap_or_default(),
        )
    }

    /// What the session's tokens are deflated against ([`compact_token`]).
    fn token_dictionary(&self) -> Vec<u8> {
        let layout = self.layout();
        token_dictionary(layout.issuer, layout.subject, layout.sid)
    }

    /// The tokens open only beside the names they were sealed with: a changed issuer,
    /// subject, sid or acr in a store makes them unreadable, and so the session unusable.
    fn open_bundle(&self, cipher: &TokenCipher) -> Option<Vec<u8>> {
        let start = self.layout().sealed;
        cipher.open(
            &self.packed[start..],
            &self.packed[self.names_start()..start],
        )
    }

    /// The same session with other tokens (after a refresh): its identity is built anew; the
    /// login's client stays.
    pub fn with_tokens(&self, tokens: &Tokens, cipher: &TokenCipher) -> Session {
        let old = self.open_bundle(cipher);
        let userinfo = old
            .as_deref()
            .and_then(|b| bundle_entry(b, USERINFO).flatten());
        self.resealed(tokens, userinfo, old.as_deref(), cipher)
    }

    /// The same session with `userinfo` (the claims a login or refresh fetched from the
    /// userinfo endpoint, JSON) sealed beside its tokens; `None` drops what it had.
    pub fn with_userinfo(&self, userinfo: Option<&[u8]>, cipher: &TokenCipher) -> Session {
        let tokens = self.tokens(cipher).unwrap_or_default();
        let old = self.open_bundle(cipher);
        self.resealed(&tokens, userinfo, old.as_deref(), cipher)
    }

    /// The userinfo claims sealed in the session (JSON), if its login fetched any.
    pub fn userinfo_claims(&self, cipher: &TokenCipher) -> Option<Vec<u8>> {
        let bundle = self.open_bundle(cipher)?;
        bundle_entry(&bundle, USERINFO)
            .flatten()
            .map(<[u8]>::to_vec)
    }

    fn resealed(
        &self,
        tokens: &Tokens,
        userinfo: Option<&[u8]>,
        old: Option<&[u8]>,
        cipher: &TokenCipher,
    ) -> Session {
        let (names_start, start) = (self.names_start(), self.layout().sealed);
        let mut packed = Vec::with_capacity(start + tokens.len() + 64);
        packed.extend_from_slice(&self.packed[..start]);
        let mut bundled = bundle(tokens, &self.token_dictionary());
        let client = old.and_then(|b| bundle_entry(b, CLIENT).flatten());
        if client.is_some() || userinfo.is_some() {
            put_field(&mut bundled, client);
        }
        if userinfo.is_some() {
            put_field(&mut bundled, userinfo);
        }
        let sealed = cipher.seal(&bundled, &packed[names_start..start]);
        packed.extend_from_slice(&sealed);
        Session {
            packed: packed.into_boxed_slice(),
        }
    }

    /// Which tokens this is: the end of their seal's authentication tag, new with every
    /// login and refresh (each seal takes a fresh nonce), never chosen by a client. At the
    /// end of the packed session, so it is found without reading the names.
    pub fn version(&self) -> [u8; 12] {
        let mut version = [0u8; 12];
        if let Some(tail) = self
            .packed
            .len()
            .checked_sub(12)
            .map(|at| &self.packed[at..])
        {
            version.copy_from_slice(tail);
        }
        version
    }

    /// The stored form (Redis): a version byte, then the packed session. A session read from
    /// format 3 (no issuer) is written as format 3 again, byte for byte as the builds before
    /// this one wrote it, so they keep reading it during a rolling upgrade.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.packed.len());
        out.push(if self.issuer().is_some() { FORMAT } else { 3 });
        out.extend_from_slice(&self.packed);
        out
    }

    /// `None` for anything [`Session::to_bytes`] did not write. Formats 3 (no issuer) and 2
    /// (no issuer, fixed-size times), written by earlier builds, are read too.
    pub fn from_bytes(data: &[u8]) -> Option<Session> {
        let (packed, names_issuer): (Box<[u8]>, bool) = match data.split_first()? {
            (&FORMAT, packed) => (packed.into(), true),
            (3, packed) => (packed.into(), false),
            (2, old) => {
                let times = Times::read_format_2(old)?;
                let mut packed = Vec::with_capacity(old.len());
                put_times(&mut packed, times, false);
                packed.extend_from_slice(old.get(48..)?);
                (packed.into_boxed_slice(), false)
            }
            _ => return None,
        };
        let (start, has_issuer) = names_start(&packed)?;
        if has_issuer != names_issuer {
            return None;
        }
        let layout = read_layout(&packed)?;
        let times = packed.get(1..start)?;
        if Times::read(times)?.1 != times.len() {
            return None;
        }
        // At least a nonce and a tag: a cut value is no session.
        if packed.len() - layout.sealed < 12 + 16 {
            return None;
        }
        Some(Session { packed })
    }
}

#[cfg(test)]
impl Session {
    /// A session as the builds before format 4 made it: no issuer among its names.
    pub(crate) fn without_issuer(
        names: Names<'_>,
        tokens: &Tokens,
        cipher: &TokenCipher,
        times: Times,
    ) -> Session {
        let mut packed = Vec::new();
        put_times(&mut packed, times, false);
        let start = packed.len();
        put_name(&mut packed, Some(names.idp));
        put_name(&mut packed, Some(names.subject));
        put_name(&mut packed, names.sid);
        put_name(&mut packed, names.acr);
        let dictionary = token_dictionary(None, names.subject, names.sid);
        let sealed = cipher.seal(&bundle(tokens, &dictionary), &packed[start..]);
        packed.extend_from_slice(&sealed);
        Session {
            packed: packed.into_boxed_slice(),
        }
    }
}

/// A stored session as the session admin API names it: by the store's key (a SHA-256 of the
/// id, hex), never by the id a cookie holds.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id_hash: String,
    pub session: Arc<Session>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// Whose subject or IdP session id a logout names: both are unique only within their
/// issuer (OIDC Core §2), so two issuers' equal `sub`s are two people.
#[derive(Debug, Clone, Copy)]
pub struct Issuer<'a> {
    pub url: &'a str,
    /// The IdPs (`[[idp]] name`) with this issuer: a session stored before sessions named
    /// their issuer (format 3) is known by its IdP.
    pub idps: &'a [String],
}

impl Issuer<'_> {
    /// Whether this issuer vouched for the session.
    pub fn issued(&self, session: &Session) -> bool {
        match session.issuer() {
            Some(issuer) => issuer == self.url,
            None => self.idps.iter().any(|idp| idp == session.idp()),
        }
    }
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
    /// Replaces a session only while it still exists (idle push-back, refresh): false when
    /// it ended meanwhile, and then it stays ended (a logout is never undone by a request
    /// that was in flight).
    async fn update(
        &self,
        session_id: &str,
        session: &Session,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    async fn delete(&self, session_id: &str) -> Result<(), StoreError>;
    /// Ends every session of the issuer's subject (logout everywhere, back-channel logout by
    /// `sub`); returns how many ended.
    async fn delete_by_subject(
        &self,
        issuer: Issuer<'_>,
        subject: &str,
    ) -> Result<usize, StoreError>;
    /// Ends the sessions of one of the issuer's IdP sessions (back-channel logout by `sid`).
    async fn delete_by_sid(&self, issuer: Issuer<'_>, sid: &str) -> Result<usize, StoreError>;
    /// The live sessions of the issuer's subject (session admin API), through the same index
    /// as [`SessionStore::delete_by_subject`]: never a scan.
    async fn list_by_subject(
        &self,
        issuer: Issuer<'_>,
        subject: &str,
    ) -> Result<Vec<Stored>, StoreError>;
    /// Ends the session [`Stored::id_hash`] names; false when there is none.
    async fn delete_by_hash(&self, id_hash: &str) -> Result<bool, StoreError>;
    async fn count(&self) -> Result<usize, StoreError>;
    /// A short-lived value read at most once (a login in progress): `take_once` returns it
    /// and removes it in one step, so a replayed `state` finds nothing.
    async fn put_once(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    async fn take_once(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// A lock shared by every instance of the store, held at most `ttl`; true when this
    /// caller got it (token refresh single-flight; one use of a back-channel logout token).
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<bool, StoreError>;
    async fn unlock(&self, name: &str) -> Result<(), StoreError>;
    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Whether sessions are being kept where other instances cannot see them (the memory
    /// fallback during a Redis outage): a session not found may exist all the same.
    fn degraded(&self) -> bool {
        false
    }
    /// "memory", "redis", or "redis (memory fallback active)".
    fn label(&self) -> String;
}

/// AES-256-GCM for tokens at rest; the key is derived from `session.secret` with HKDF, so
/// instances that share the secret read each other's sessions. Tokens sealed with the
/// previous secret (`session.secret_previous`) still open, so rotating it logs nobody out;
/// sealing always uses the current one.
#[derive(Clone)]
pub struct TokenCipher {
    cipher: Aes256Gcm,
    previous: Option<Aes256Gcm>,
}

impl TokenCipher {
    pub fn new(secret: &[u8]) -> Self {
        TokenCipher {
            cipher: Self::key(secret),
            previous: None,
        }
    }

    /// The cipher of `secret` that also opens what `previous` sealed.
    pub fn rotated(secret: &[u8], previous: Option<&[u8]>) -> Self {
        TokenCipher {
            cipher: Self::key(secret),
            previous: previous.map(Self::key),
        }
    }

    fn key(secret: &[u8]) -> Aes256Gcm {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"gatehouse session tokens v1"), secret);
        let mut key = [0u8; 32];
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(b"aes-256-gcm", &mut key);
        Aes256Gcm::new(&key.into())
    }

    /// `nonce (12 bytes) || ciphertext+tag`, which opens only beside the same `bound` bytes
    /// (authenticated, not encrypted): a session's tokens with its names.
    fn seal(&self, plaintext: &[u8], bound: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; 12] = rand::random();
        let nonce = Nonce::from_slice(&nonce_bytes);
        let mut out = nonce_bytes.to_vec();
        let payload = Payload {
            msg: plaintext,
            aad: bound,
        };
        // Encryption with a fresh nonce and an in-memory buffer does not fail.
        if let Ok(ct) = self.cipher.encrypt(nonce, payload) {
            out.extend_from_slice(&ct);
        }
        out
    }

    /// `None` when the data was not sealed with this key beside `bound`, or was changed.
    fn open(&self, sealed: &[u8], bound: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(12);
        let nonce = Nonce::from_slice(nonce);
        let payload = || Payload {
            msg: ct,
            aad: bound,
        };
        match self.cipher.decrypt(nonce, payload()) {
            Ok(plain) => Some(plain),
            Err(_) => self.previous.as_ref()?.decrypt(nonce, payload()).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::codec::{inflate, CLAIMS_DICTIONARY};
    use super::*;

    /// The names of a session in the tests of the session modules.
    pub(super) fn names() -> Names<'static> {
        Names {
            idp: "corp",
            issuer: "https://login.example.com",
            subject: "alice",
            sid: Some("idp-session"),
            acr: None,
        }
    }

    #[test]
    fn a_rotated_secret_still_opens_what_the_previous_sealed_and_seals_anew() {
        let (old, new) = (
            b"the secret before the rotation, 32+".as_slice(),
            b"the secret after the rotation, 32+ chars".as_slice(),
        );
        let before = TokenCipher::new(old);
        let tokens = Tokens {
            id_token: Some("eyJhbGciOiJSUzI1NiJ9.e30.c2ln".into()),
            ..Tokens::default()
        };
        let s = Session::new(names(), &tokens, &before, Times::starting(1, 2));
        let rotated = TokenCipher::rotated(new, Some(old));
        assert_eq!(s.tokens(&rotated), Some(tokens.clone()));
        assert_eq!(
            s.tokens(&TokenCipher::new(new)),
            None,
            "without the previous"
        );
        // Written again (a refresh), the session is sealed with the new secret alone.
        let rewritten = s.with_tokens(&tokens, &rotated);
        assert_eq!(rewritten.tokens(&TokenCipher::new(new)), Some(tokens));
        assert_eq!(rewritten.tokens(&before), None);
    }

    #[test]
    fn tokens_round_trip_and_tampering_is_detected() {
        let c = TokenCipher::new(b"a long enough shared secret for tests");
        let sealed = c.seal(b"eyJhbGciOi.token", b"");
        assert_eq!(
            c.open(&sealed, b"").as_deref(),
            Some(&b"eyJhbGciOi.token"[..])
        );
        assert_ne!(
            c.seal(b"x", b""),
            c.seal(b"x", b""),
            "fresh nonce every time"
        );
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(c.open(&bad, b""), None);
        let other = TokenCipher::new(b"another secret");
        assert_eq!(other.open(&sealed, b""), None);
        assert!(!String::from_utf8_lossy(&sealed).contains("eyJ"));
        let tokens = Tokens {
            id_token: Some("eyJhbGciOiJSUzI1NiJ9.e30.c2ln".into()),
            ..Tokens::default()
        };
        let s = Session::new(names(), &tokens, &c, Times::starting(1, 2));
        assert_eq!(s.tokens(&c), Some(tokens));
        assert_eq!(s.tokens(&other), None, "another secret opens nothing");
        // A store that changes a session's names (here its acr) gets a session whose tokens
        // no longer open.
        let mut stored = Session::new(
            Names {
                acr: Some("bronze"),
                ..names()
            },
            &Tokens::default(),
            &c,
            Times::starting(1, 2),
        )
        .to_bytes();
        let at = stored.len() - 28 - 12 - 6;
        assert_eq!(&stored[at..at + 6], b"bronze");
        stored[at..at + 6].copy_from_slice(b"golden");
        let forged = Session::from_bytes(&stored).expect("well-formed");
        assert_eq!(forged.acr(), Some("golden"));
        assert_eq!(forged.tokens(&c), None, "names are bound to the tokens");
        assert!(
            inflate(&[], CLAIMS_DICTIONARY).is_none(),
            "an empty stream ends, with nothing"
        );
    }

    #[test]
    fn stored_form_round_trips_and_refuses_anything_else() {
        let c = TokenCipher::new(b"a long enough shared secret for tests");
        let times = Times {
            auth_time: Some(90),
            refresh_at: Some(150),
            ..Times::starting(100, 200)
        };
        let mut s = Session::new(
            Names {
                acr: Some("gold"),
                ..names()
            },
            &Tokens::default(),
            &c,
            Times::starting(100, 200),
        );
        s.set_times(times);
        let back = Session::from_bytes(&s.to_bytes()).expect("round trip");
        assert_eq!(back.to_bytes(), s.to_bytes());
        assert_eq!(back.times(), times);
        assert_eq!((times.touched_at, times.access_expires_at), (100, None));
        assert_eq!(back.acr(), Some("gold"));
        assert_eq!(back.tokens(&c), Some(Tokens::default()));
        let bytes = s.to_bytes();
        for bad in [
            &b"{\"subject\":\"alice\"}"[..],
            &[],
            &bytes[..20],
            &bytes[..60],
        ] {
            assert!(Session::from_bytes(bad).is_none());
        }
    }

    fn without_issuer(tokens: &Tokens, cipher: &TokenCipher, times: Times) -> Session {
        Session::without_issuer(names(), tokens, cipher, times)
    }

    #[test]
    fn sessions_name_their_issuer_and_format_3_sessions_are_still_read() {
        let c = TokenCipher::new(b"a long enough shared secret for tests");
        let tokens = Tokens {
            refresh_token: Some("opaque".into()),
            ..Tokens::default()
        };
        let times = Times::starting(100, 200);
        let s = Session::new(names(), &tokens, &c, times);
        let stored = s.to_bytes();
        assert_eq!(stored[0], 4);
        let back = Session::from_bytes(&stored).expect("format 4");
        assert_eq!(back.issuer(), Some("https://login.example.com"));
        assert_eq!((back.subject(), back.sid()), ("alice", Some("idp-session")));
        assert_eq!(back.tokens(&c), Some(tokens.clone()));
        // The issuer is sealed with the tokens like the other names.
        let mut forged = stored.clone();
        let at = forged
            .windows(5)
            .position(|w| w == b"login")
            .expect("issuer in the stored form");
        forged[at..at + 5].copy_from_slice(b"evil!");
        let forged = Session::from_bytes(&forged).expect("well-formed");
        assert_eq!(forged.tokens(&c), None);

        // What the builds before wrote: read, with no issuer, and written back unchanged.
        let old = without_issuer(&tokens, &c, times);
        let mut stored = vec![3];
        stored.extend_from_slice(&old.packed);
        let back = Session::from_bytes(&stored).expect("format 3");
        assert_eq!(back.issuer(), None);
        assert_eq!((back.idp(), back.subject()), ("corp", "alice"));
        assert_eq!(back.tokens(&c), Some(tokens));
        let mut touched = back.clone();
        touched.set_times(Times {
            touched_at: 150,
            ..times
        });
        assert_eq!(touched.issuer(), None);
        assert_eq!(touched.times().touched_at, 150);
        assert_eq!(back.to_bytes(), stored, "written as format 3 again");
        // A format byte that does not fit the names is no session.
        let mut mislabelled = stored.clone();
        mislabelled[0] = 4;
        assert!(Session::from_bytes(&mislabelled).is_none());
        let mut mislabelled = s.to_bytes();
        mislabelled[0] = 3;
        assert!(Session::from_bytes(&mislabelled).is_none());

        // An issuer's sessions: by issuer; a session without one, by its IdP.
        let idps = ["corp".to_string()];
        let corp = Issuer {
            url: "https://login.example.com",
            idps: &idps,
        };
        let other = Issuer {
            url: "https://partner.example",
            idps: &[],
        };
        assert!(corp.issued(&s) && !other.issued(&s));
        assert!(corp.issued(&back) && !other.issued(&back));
    }

    #[test]
    fn format_2_sessions_are_still_read() {
        let c = TokenCipher::new(b"a long enough shared secret for tests");
        let times = Times {
            auth_time: Some(90),
            ..Times::starting(100, 200)
        };
        let tokens = Tokens {
            refresh_token: Some("opaque".into()),
            ..Tokens::default()
        };
        let s = without_issuer(&tokens, &c, times);
        let mut old = vec![2];
        for t in [100u64, 200, 100, 90, 0, 0] {
            old.extend_from_slice(&t.to_le_bytes());
        }
        old.extend_from_slice(&s.packed[s.names_start()..]);
        let back = Session::from_bytes(&old).expect("format 2");
        assert_eq!(back.times(), times);
        assert_eq!(back.subject(), "alice");
        assert_eq!(back.tokens(&c), Some(tokens));
        assert_eq!(
            back.to_bytes(),
            s.to_bytes(),
            "written again in the format that needs no issuer (3)"
        );
    }

    #[test]
    fn the_login_client_is_sealed_compactly_and_survives_a_refresh() {
        let c = TokenCipher::new(b"a long enough shared secret for tests");
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
        let tokens = Tokens {
            refresh_token: Some("opaque".into()),
            ..Tokens::default()
        };
        let times = Times::starting(100, 200);
        let client = LoginClient::new(Some("203.0.113.7".parse().unwrap()), Some(chrome));
        let s = Session::from_login(names(), &tokens, &client, &c, times);
        let plain = Session::new(names(), &tokens, &c, times);
        // An IPv4 address and a 111-byte user agent cost under 40 bytes.
        let extra = s.to_bytes().len() - plain.to_bytes().len();
        assert!(extra < 40, "{extra} bytes");
        let back = Session::from_bytes(&s.to_bytes()).expect("round trip");
        assert_eq!(back.login_client(&c), Some(client.clone()));
        assert_eq!(
            back.tokens(&c),
            Some(tokens.clone()),
            "the tokens read as before"
        );
        assert!(
            !String::from_utf8_lossy(&s.to_bytes()).contains("Chrome"),
            "sealed"
        );
        assert_eq!(
            back.login_client(&TokenCipher::new(b"another secret")),
            None
        );
        // A refresh keeps it; a session without one (stored before) has none.
        let refreshed = back.with_tokens(&Tokens::default(), &c);
        assert_eq!(refreshed.login_client(&c), Some(client));
        assert_eq!(plain.login_client(&c), Some(LoginClient::default()));
        assert_eq!(
            plain.with_tokens(&tokens, &c).to_bytes().len(),
            plain.to_bytes().len(),
            "nothing added to a session without a client"
        );
        // IPv6, an agent deflating cannot shrink, a long one cut at a character, none at all.
        let odd = "\u{1F600}".repeat(100);
        for (ip, agent) in [
            (Some("2001:db8::1"), Some("x")),
            (None, Some(odd.as_str())),
            (Some("192.0.2.1"), None),
        ] {
            let client = LoginClient::new(ip.map(|i| i.parse().unwrap()), agent);
            let s = Session::from_login(names(), &tokens, &client, &c, times);
            let back = Session::from_bytes(&s.to_bytes()).unwrap();
            assert_eq!(back.login_client(&c), Some(client.clone()));
            if let Some(kept) = &client.user_agent {
                assert!(kept.len() <= MAX_USER_AGENT && agent.unwrap().starts_with(kept.as_str()));
            }
        }
        assert_eq!(LoginClient::new(None, Some("")), LoginClient::default());
        for bad in [
            &[][..],
            &[16],
            &[3, 1, 2, 3, 4],
            &[1, 1, 2],
            &[0, 1],
            &[4, 0xff],
        ] {
            assert_eq!(read_client(bad), None, "{bad:?}");
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
