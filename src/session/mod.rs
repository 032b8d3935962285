//! Server-side sessions for browser login: the cookie holds only a 256-bit random id; the store keys sessions by the id's SHA-256, keeps
//! tokens encrypted (AES-256-GCM, key derived from `session.secret`), indexes sessions by
//! (issuer, subject) and (issuer, IdP session id) so logout-everywhere never scans, and
//! expires everything by TTL.

pub mod fallback;
pub mod memory;
pub mod redis_store;

use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::identity::Identity;

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

    /// `flags | created_at | expires_at | touched_at | auth_time? | access_expires_at? |
    /// refresh_at?` as LEB128 varints, every time after the first as its zigzag difference
    /// from `created_at`; a flag bit says which optional times follow. About 18 bytes, where
    /// six fixed u64 took 48.
    fn write(&self, out: &mut Vec<u8>) {
        let optional = [self.auth_time, self.access_expires_at, self.refresh_at];
        let flags = optional
            .iter()
            .enumerate()
            .fold(0u8, |f, (i, t)| f | (u8::from(t.is_some()) << i));
        out.push(flags);
        put_varint(out, self.created_at);
        let since = |t: u64| {
            let d = t.wrapping_sub(self.created_at) as i64;
            ((d << 1) ^ (d >> 63)) as u64
        };
        put_varint(out, since(self.expires_at));
        put_varint(out, since(self.touched_at));
        for t in optional.into_iter().flatten() {
            put_varint(out, since(t));
        }
    }

    /// The times at the start of `packed`, and how many bytes they took.
    fn read(packed: &[u8]) -> Option<(Times, usize)> {
        let (&flags, _) = packed.split_first()?;
        if flags > 0b111 {
            return None;
        }
        let mut at = 1;
        let created_at = take_varint(packed, &mut at)?;
        let mut since = || -> Option<u64> {
            let z = take_varint(packed, &mut at)?;
            let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
            Some(created_at.wrapping_add(d as u64))
        };
        let expires_at = since()?;
        let touched_at = since()?;
        let mut optional = [None; 3];
        for (i, slot) in optional.iter_mut().enumerate() {
            if flags & (1 << i) != 0 {
                *slot = Some(since()?);
            }
        }
        let [auth_time, access_expires_at, refresh_at] = optional;
        let times = Times {
            created_at,
            expires_at,
            touched_at,
            auth_time,
            access_expires_at,
            refresh_at,
        };
        Some((times, at))
    }

    /// The fixed layout of stored format 2: six u64, little-endian, 0 for none.
    fn read_format_2(packed: &[u8]) -> Option<Times> {
        let time = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                packed.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let optional = |i: usize| time(i).map(|t| (t != 0).then_some(t));
        Some(Times {
            created_at: time(0)?,
            expires_at: time(1)?,
            touched_at: time(2)?,
            auth_time: optional(3)?,
            access_expires_at: optional(4)?,
            refresh_at: optional(5)?,
        })
    }
}

/// The top bit of a packed session's first byte: its names include the issuer (every session
/// since stored format 4; those of format 3 and 2 were written without it).
const NAMES_ISSUER: u8 = 0x80;

/// The times behind a byte of their length (and [`NAMES_ISSUER`]), so the names are found
/// without decoding them.
fn put_times(out: &mut Vec<u8>, times: Times, names_issuer: bool) {
    let at = out.len();
    out.push(0);
    times.write(out);
    // Six varints and a flag byte: at most 61 bytes.
    out[at] = (out.len() - at - 1) as u8 | if names_issuer { NAMES_ISSUER } else { 0 };
}

/// Where a packed session's names start, and whether they include the issuer.
fn names_start(packed: &[u8]) -> Option<(usize, bool)> {
    let first = *packed.first()?;
    let start = 1 + usize::from(first & !NAMES_ISSUER);
    (start <= packed.len()).then_some((start, first & NAMES_ISSUER != 0))
}

/// Where a packed session's parts are.
#[derive(Clone, Copy)]
struct Layout<'a> {
    idp: &'a str,
    issuer: Option<&'a str>,
    subject: &'a str,
    sid: Option<&'a str>,
    acr: Option<&'a str>,
    /// Where the sealed tokens start.
    sealed: usize,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
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

/// Writes an optional field behind a u32 of its length + 1 (0: absent); the names of a
/// session and its bundled tokens are laid out this way.
fn put_field(out: &mut Vec<u8>, field: Option<&[u8]>) {
    let len = field.map_or(0, |f| f.len() as u32 + 1);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(field.unwrap_or_default());
}

/// The field at `*at` (advancing past it); `None` inside for an absent one.
fn take_field<'a>(data: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = u32::from_le_bytes(data.get(*at..*at + 4)?.try_into().ok()?) as usize;
    *at += 4;
    if len == 0 {
        return Some(None);
    }
    let field = data.get(*at..*at + len - 1)?;
    *at += len - 1;
    Some(Some(field))
}

fn put_name(out: &mut Vec<u8>, name: Option<&str>) {
    put_field(out, name.map(str::as_bytes));
}

fn take_name<'a>(packed: &'a [u8], at: &mut usize) -> Option<Option<&'a str>> {
    take_field(packed, at)?
        .map(std::str::from_utf8)
        .transpose()
        .ok()
}

impl Session {
    pub fn new(names: Names<'_>, tokens: &Tokens, cipher: &TokenCipher, times: Times) -> Session {
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
        let sealed = cipher.seal(&bundle(tokens, &dictionary), &packed[names_start..]);
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
        Self::read_layout(&self.packed).unwrap_or(Layout {
            idp: "",
            issuer: None,
            subject: "",
            sid: None,
            acr: None,
            sealed: self.packed.len(),
        })
    }

    fn read_layout(packed: &[u8]) -> Option<Layout<'_>> {
        let (mut at, names_issuer) = names_start(packed)?;
        let idp = take_name(packed, &mut at)??;
        let issuer = match names_issuer {
            true => Some(take_name(packed, &mut at)??),
            false => None,
        };
        let subject = take_name(packed, &mut at)??;
        let sid = take_name(packed, &mut at)?;
        let acr = take_name(packed, &mut at)?;
        Some(Layout {
            idp,
            issuer,
            subject,
            sid,
            acr,
            sealed: at,
        })
    }

    pub fn idp(&self) -> &str {
        self.layout().idp
    }

    /// The issuer that vouched for the subject; `None` for a session stored before sessions
    /// named it (format 3 and 2), whose issuer is its IdP's.
    pub fn issuer(&self) -> Option<&str> {
        self.layout().issuer
    }

    pub fn subject(&self) -> &str {
        self.layout().subject
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

    /// The same session with other tokens (after a refresh): its identity is built anew.
    pub fn with_tokens(&self, tokens: &Tokens, cipher: &TokenCipher) -> Session {
        let (names_start, start) = (self.names_start(), self.layout().sealed);
        let mut packed = Vec::with_capacity(start + tokens.len() + 64);
        packed.extend_from_slice(&self.packed[..start]);
        let sealed = cipher.seal(
            &bundle(tokens, &self.token_dictionary()),
            &packed[names_start..start],
        );
        packed.extend_from_slice(&sealed);
        Session {
            packed: packed.into_boxed_slice(),
        }
    }

    /// Which tokens this is: the nonce they were sealed under, new with every login and
    /// refresh, never chosen by a client.
    pub fn version(&self) -> [u8; 12] {
        let start = self.layout().sealed;
        let mut version = [0u8; 12];
        if let Some(nonce) = self.packed.get(start..start + 12) {
            version.copy_from_slice(nonce);
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
        let layout = Self::read_layout(&packed)?;
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
    map: std::collections::HashMap<[u8; 12], CachedIdentity>,
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

/// The version of [`Session::to_bytes`]: 4 since sessions name their issuer.
const FORMAT: u8 = 4;

impl Tokens {
    /// ID, access and refresh token, in the order a bundle keeps them.
    fn each(&self) -> [&Option<String>; 3] {
        [&self.id_token, &self.access_token, &self.refresh_token]
    }

    fn len(&self) -> usize {
        self.each()
            .iter()
            .map(|t| t.as_ref().map_or(0, String::len))
            .sum()
    }
}

const ID_TOKEN: usize = 0;
const ACCESS_TOKEN: usize = 1;

/// The three tokens, each compacted ([`compact_token`]), as [`put_field`]s.
fn bundle(tokens: &Tokens, dictionary: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tokens.len() + 12);
    for token in tokens.each() {
        let compact = token.as_deref().map(|t| compact_token(t, dictionary));
        put_field(&mut out, compact.as_deref());
    }
    out
}

/// Token `index` ([`Tokens::each`] order) of a bundle, still compact; `Some(None)` when the
/// session has none.
fn bundle_entry(data: &[u8], index: usize) -> Option<Option<&[u8]>> {
    let mut at = 0;
    for _ in 0..index {
        take_field(data, &mut at)?;
    }
    take_field(data, &mut at)
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
        let payload = Payload {
            msg: ct,
            aad: bound,
        };
        self.cipher.decrypt(Nonce::from_slice(nonce), payload).ok()
    }
}

/// A JWS whose base64url parts re-encode to exactly the same text is kept as its decoded
/// parts: `3 | len(header) u16 | len(deflated) u16 | deflate(header ++ payload) | signature`,
/// deflated against the session's [`token_dictionary`] (a token repeats its subject and IdP
/// session id), or `1 | len(header) u16 | header |
/// len(payload) u16 | payload | signature` when deflating does not help. Other base64url
/// text (many opaque refresh tokens) is kept decoded, `4 | bytes`, a quarter smaller;
/// anything else is `0 | text`. An ID token shrinks to about half its text. Tag 2 (claims alone deflated with
/// [`CLAIMS_DICTIONARY`]) was written by earlier builds and is still read.
fn compact_token(token: &str, dictionary: &[u8]) -> Vec<u8> {
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
            let (header, payload, signature) = (&decoded[0], &decoded[1], &decoded[2]);
            let mut out = Vec::with_capacity(token.len() * 3 / 4 + 8);
            let joined = [header.as_slice(), payload].concat();
            match deflate(&joined, dictionary) {
                Some(smaller)
                    if smaller.len() < joined.len() && smaller.len() <= u16::MAX as usize =>
                {
                    out.push(3);
                    out.extend_from_slice(&(header.len() as u16).to_be_bytes());
                    out.extend_from_slice(&(smaller.len() as u16).to_be_bytes());
                    out.extend_from_slice(&smaller);
                }
                _ => {
                    out.push(1);
                    for d in [header, payload] {
                        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
                        out.extend_from_slice(d);
                    }
                }
            }
            out.extend_from_slice(signature);
            return out;
        }
    }
    if let Some(decoded) = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .filter(|d| !d.is_empty() && URL_SAFE_NO_PAD.encode(d) == token)
    {
        let mut out = Vec::with_capacity(decoded.len() + 1);
        out.push(4);
        out.extend_from_slice(&decoded);
        return out;
    }
    let mut out = Vec::with_capacity(token.len() + 1);
    out.push(0);
    out.extend_from_slice(token.as_bytes());
    out
}

/// What ID-token claims usually look like (Keycloak, Entra ID, Okta, Auth0, Google, Dex):
/// a preset dictionary lets the first occurrence of each name compress too, which is most
/// of a 600-byte payload. Part of the stored format (tag 2): never change it.
const CLAIMS_DICTIONARY: &[u8] = br#"{"ver":"2.0","tid":"","oid":"","upn":"","unique_name":"","hd":"","picture":"https://","locale":"en","session_state":"","c_hash":"","s_hash":"","amr":["pwd","mfa","otp"],"realm_access":{"roles":["offline_access","uma_authorization","default-roles-"]},"resource_access":{"roles":[""]},"scope":"openid profile email","email_verified":false,"exp":17,"iat":17,"auth_time":17,"jti":"","iss":"https://","/realms/","aud":"","sub":"","typ":"ID","azp":"","nonce":"","sid":"","at_hash":"","acr":"1","email_verified":true,"name":"","preferred_username":"","given_name":"","family_name":"","email":"@","groups":[""#;

/// Words of JWS headers; tag 3 deflates against them, then [`CLAIMS_DICTIONARY`], then the
/// session's own names ([`token_dictionary`]). Part of the stored format: never change it,
/// add a tag.
const JWS_HEADER_WORDS: &[u8] = br#"{"typ":"at+jwt","x5t#S256":"","x5t":"","alg":"ES256","alg":"PS256","alg":"EdDSA","typ" : "JWT","kid" : "","alg":"RS256","typ":"JWT","kid":""#;

/// What a session's tokens are deflated against (tag 3): header and claim words, then its
/// issuer (sessions since format 4: what it costs to store, it saves in the ID token's
/// `iss`), subject and IdP session id, nearest to the data as the likeliest words.
fn token_dictionary(issuer: Option<&str>, subject: &str, sid: Option<&str>) -> Vec<u8> {
    [
        JWS_HEADER_WORDS,
        CLAIMS_DICTIONARY,
        issuer.unwrap_or_default().as_bytes(),
        subject.as_bytes(),
        sid.unwrap_or_default().as_bytes(),
    ]
    .concat()
}

fn deflate(data: &[u8], dictionary: &[u8]) -> Option<Vec<u8>> {
    let mut compress = flate2::Compress::new(flate2::Compression::best(), false);
    compress.set_dictionary(dictionary).ok()?;
    let mut out = Vec::with_capacity(data.len() + 64);
    match compress
        .compress_vec(data, &mut out, flate2::FlushCompress::Finish)
        .ok()?
    {
        flate2::Status::StreamEnd => Some(out),
        _ => None,
    }
}

/// Inflates at most 128 KiB (what two u16 lengths allowed before deflating). The inflater
/// (tens of kilobytes of state) is kept per thread and reset between uses.
fn inflate(data: &[u8], dictionary: &[u8]) -> Option<Vec<u8>> {
    thread_local! {
        static INFLATER: std::cell::RefCell<flate2::Decompress> =
            std::cell::RefCell::new(flate2::Decompress::new(false));
    }
    INFLATER.with(|cell| {
        let mut decompress = cell.try_borrow_mut().ok()?;
        decompress.reset(false);
        inflate_with(&mut decompress, data, dictionary)
    })
}

fn inflate_with(
    decompress: &mut flate2::Decompress,
    data: &[u8],
    dictionary: &[u8],
) -> Option<Vec<u8>> {
    const LIMIT: usize = 2 * (u16::MAX as usize + 1);
    decompress.set_dictionary(dictionary).ok()?;
    let mut out = Vec::with_capacity((data.len() * 3).max(256));
    loop {
        let read = decompress.total_in() as usize;
        let status = decompress
            .decompress_vec(&data[read..], &mut out, flate2::FlushDecompress::Finish)
            .ok()?;
        if status == flate2::Status::StreamEnd {
            return Some(out);
        }
        if out.len() < out.capacity() || out.capacity() >= LIMIT {
            return None;
        }
        out.reserve((out.capacity() * 2).clamp(256, LIMIT) - out.len());
    }
}

/// A compact token read back ([`compact_token`]): its text, or its header and payload
/// (decoded) and signature.
enum Compact<'a> {
    Text(std::borrow::Cow<'a, [u8]>),
    Jws(
        std::borrow::Cow<'a, [u8]>,
        std::borrow::Cow<'a, [u8]>,
        &'a [u8],
    ),
}

impl<'a> Compact<'a> {
    fn read(data: &'a [u8], dictionary: &[u8]) -> Option<Compact<'a>> {
        use std::borrow::Cow;
        let (&tag, rest) = data.split_first()?;
        let len = |rest: &'a [u8]| -> Option<(usize, &'a [u8])> {
            Some((
                u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize,
                rest.get(2..)?,
            ))
        };
        let part = |rest: &'a [u8]| -> Option<(&'a [u8], &'a [u8])> {
            let (n, rest) = len(rest)?;
            Some((rest.get(..n)?, rest.get(n..)?))
        };
        match tag {
            0 => Some(Compact::Text(Cow::Borrowed(rest))),
            4 => {
                use base64::engine::general_purpose::URL_SAFE_NO_PAD;
                use base64::Engine;
                Some(Compact::Text(Cow::Owned(
                    URL_SAFE_NO_PAD.encode(rest).into_bytes(),
                )))
            }
            1 => {
                let (header, rest) = part(rest)?;
                let (payload, signature) = part(rest)?;
                Some(Compact::Jws(
                    Cow::Borrowed(header),
                    Cow::Borrowed(payload),
                    signature,
                ))
            }
            2 => {
                let (header, rest) = part(rest)?;
                let (payload, signature) = part(rest)?;
                let payload = inflate(payload, CLAIMS_DICTIONARY)?;
                Some(Compact::Jws(
                    Cow::Borrowed(header),
                    Cow::Owned(payload),
                    signature,
                ))
            }
            3 => {
                let (header_len, rest) = len(rest)?;
                let (deflated, signature) = part(rest)?;
                let mut joined = inflate(deflated, dictionary)?;
                if header_len > joined.len() {
                    return None;
                }
                let payload = joined.split_off(header_len);
                Some(Compact::Jws(
                    Cow::Owned(joined),
                    Cow::Owned(payload),
                    signature,
                ))
            }
            _ => None,
        }
    }
}

/// The decoded payload of a compact token (a JWS's claims); `None` for anything else.
fn token_payload(data: &[u8], dictionary: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    match Compact::read(data, dictionary)? {
        Compact::Text(text) => {
            let payload = std::str::from_utf8(&text).ok()?.split('.').nth(1)?;
            URL_SAFE_NO_PAD.decode(payload).ok()
        }
        Compact::Jws(_, payload, _) => Some(payload.into_owned()),
    }
}

fn expand_token(data: &[u8], dictionary: &[u8]) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    match Compact::read(data, dictionary)? {
        Compact::Text(text) => String::from_utf8(text.into_owned()).ok(),
        Compact::Jws(header, payload, signature) => Some(format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(signature)
        )),
    }
}

/// The codec behind the seal, for the fuzz targets: reads every entry of a bundle as the
/// session would, and checks that any token text compacts and comes back exactly.
#[cfg(feature = "fuzzing")]
pub fn fuzz_token_codec(data: &[u8], issuer: &str, subject: &str, sid: Option<&str>) {
    let dictionary = token_dictionary(Some(issuer), subject, sid);
    for index in 0..3 {
        if let Some(Some(entry)) = bundle_entry(data, index) {
            let _ = expand_token(entry, &dictionary);
            let _ = token_payload(entry, &dictionary);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let compact = compact_token(text, &dictionary);
        assert_eq!(
            expand_token(&compact, &dictionary).as_deref(),
            Some(text),
            "a token must come back exactly"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names<'static> {
        Names {
            idp: "corp",
            issuer: "https://login.example.com",
            subject: "alice",
            sid: Some("idp-session"),
            acr: None,
        }
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
    fn tokens_are_stored_compactly_and_come_back_exactly() {
        use base64::Engine;
        let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let claims = r#"{"iss":"https://login.example.com/realms/corp","aud":"gatehouse","sub":"4b0c3bd4-8f2a-4c7e-9d61-2f4b8f0a1c55","email":"alice@example.com","preferred_username":"alice","groups":["staff","sales"],"nonce":"q8Zr1o2VQ7mZp3xYc1bK0sT9uW4aE6hJ"}"#;
        let jws = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"RS256","kid":"k1"}"#),
            b64(claims),
            b64(&"s".repeat(256))
        );
        let dictionary = token_dictionary(
            Some("https://login.example.com/realms/corp"),
            "4b0c3bd4-8f2a-4c7e-9d61-2f4b8f0a1c55",
            None,
        );
        let compact = compact_token(&jws, &dictionary);
        assert_eq!(
            expand_token(&compact, &dictionary).as_deref(),
            Some(jws.as_str())
        );
        assert_eq!(compact[0], 3, "header and claims are deflated");
        assert!(
            compact.len() < jws.len() * 2 / 3,
            "{} of {}",
            compact.len(),
            jws.len()
        );
        assert!(
            compact.len() < compact_token(&jws, &token_dictionary(None, "", None)).len(),
            "the subject of the session compresses the token"
        );
        assert_ne!(
            expand_token(&compact, &token_dictionary(None, "another-subject", None)).as_deref(),
            Some(jws.as_str()),
            "read only beside its own names"
        );
        // Tag 2, as earlier builds wrote it: the claims alone deflated.
        let (header, payload) = (br#"{"alg":"RS256","kid":"k1"}"#, claims.as_bytes());
        let mut legacy = vec![2];
        let deflated = deflate(payload, CLAIMS_DICTIONARY).expect("deflates");
        for d in [&header[..], &deflated] {
            legacy.extend_from_slice(&(d.len() as u16).to_be_bytes());
            legacy.extend_from_slice(d);
        }
        legacy.extend_from_slice("s".repeat(256).as_bytes());
        assert_eq!(
            expand_token(&legacy, &dictionary).as_deref(),
            Some(jws.as_str())
        );
        assert_eq!(token_payload(&legacy, b"").as_deref(), Some(payload));
        let opaque = "0f3c9a7be41d5c2e8a6b9d0c1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f";
        assert_eq!(
            compact_token(opaque, b"")[0],
            4,
            "base64url text is kept decoded"
        );
        assert_eq!(compact_token(opaque, b"").len(), 1 + 48);
        for other in [
            opaque,
            "YQ",
            "YR",
            "opaque-refresh-token",
            "a.b",
            "e30.e30.e30=",
            "not base64!.x.y",
            "",
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsIm5vbmNlIjoieCJ9.c2lnbmF0dXJlLWJ5dGVz",
        ] {
            let compact = compact_token(other, &dictionary);
            assert_eq!(expand_token(&compact, &dictionary).as_deref(), Some(other));
        }
        let c = TokenCipher::new(b"a long enough shared secret for tests");
        let tokens = Tokens {
            id_token: Some(jws.clone()),
            access_token: None,
            refresh_token: Some("opaque-refresh-token".into()),
        };
        let s = Session::new(names(), &tokens, &c, Times::starting(1, 2));
        assert_eq!(s.tokens(&c), Some(tokens.clone()));
        assert_eq!(s.id_token_claims(&c).as_deref(), Some(claims.as_bytes()));
        assert_eq!(s.access_token(&c), None);
        let fresh = Tokens {
            access_token: Some("new-access".into()),
            ..tokens
        };
        let refreshed = s.with_tokens(&fresh, &c);
        assert_eq!(refreshed.tokens(&c), Some(fresh));
        assert_eq!(refreshed.access_token(&c).as_deref(), Some("new-access"));
        assert_ne!(refreshed.version(), s.version(), "new tokens, new version");
        assert_eq!(
            (
                refreshed.idp(),
                refreshed.subject(),
                refreshed.sid(),
                refreshed.acr()
            ),
            ("corp", "alice", Some("idp-session"), None)
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

    #[test]
    fn times_round_trip_compactly_whatever_their_values() {
        for times in [
            Times::starting(1_700_000_000, 1_700_028_800),
            Times {
                auth_time: Some(1),
                access_expires_at: Some(u64::MAX),
                refresh_at: Some(0),
                ..Times::starting(u64::MAX - 5, 3)
            },
            Times {
                refresh_at: Some(1_700_000_240),
                ..Times::starting(0, 0)
            },
        ] {
            let mut out = Vec::new();
            times.write(&mut out);
            assert_eq!(Times::read(&out), Some((times, out.len())));
        }
        let mut out = Vec::new();
        Times {
            auth_time: Some(1_699_990_000),
            access_expires_at: Some(1_700_000_300),
            refresh_at: Some(1_700_000_240),
            ..Times::starting(1_700_000_000, 1_700_028_800)
        }
        .write(&mut out);
        assert!(out.len() <= 18, "{} bytes", out.len());
        assert_eq!(Times::read(&[0b1000, 0]), None, "unknown flags");
        assert_eq!(Times::read(&[0, 0x80]), None, "a cut varint");
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

    #[test]
    fn ids_are_256_bit_and_stored_hashed() {
        let id = new_session_id();
        assert_eq!(id.len(), 64);
        assert_ne!(id, new_session_id());
        assert_ne!(store_key(&id), id);
        assert_eq!(store_key(&id).len(), 64);
    }
}
