//! Browser login: the OIDC authorization code flow with PKCE, `state` and `nonce`; the
//! server-side session it creates; refresh, step-up and logout.
//!
//! A login in progress is stored server-side under its `state` (single-use, 10 minutes)
//! and bound to the browser that started it by a short-lived cookie holding a random value
//! whose hash the state records. One binding cookie serves every tab of that browser, so
//! several logins can run at once without piling up cookies.

pub mod assertion;
pub mod csrf;
pub mod oidc;
pub mod redirect;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::authn::AuthFailure;
use crate::config::{Config, IdpConfig, RouteConfig, SameSite, SessionConfig, StoreKind};
use crate::identity::{claim_at, string_list, AuthMethod, Identity};
use crate::metrics::Metrics;
use crate::session::fallback::FallbackStore;
use crate::session::memory::MemoryStore;
use crate::session::redis_store::RedisSessionStore;
use crate::session::{self, Issuer, Session, SessionStore, StoreError, Times, TokenCipher};
use oidc::{unix_now, Provider};

/// How long a login may take between the redirect to the IdP and the callback.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);

/// How long a used logout token's `jti` is kept at most (until the token's `exp` when sooner;
/// providers make them live a few minutes).
const LOGOUT_TOKEN_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// A login in progress, stored under the hash of its `state`.
#[derive(Debug, Serialize, Deserialize)]
struct LoginState {
    idp: String,
    /// SHA-256 of the browser-binding cookie value.
    binding: String,
    nonce: String,
    verifier: String,
    rd: String,
    acr_values: Vec<String>,
    max_age: Option<u64>,
}

/// Names and flags of the cookies the gateway sets.
#[derive(Debug, Clone)]
pub struct Cookies {
    pub session: String,
    pub binding: String,
    pub secure: bool,
    same_site: &'static str,
}

impl Cookies {
    pub(crate) fn new(config: &SessionConfig, secure: bool) -> Cookies {
        // `__Host-`: only from a secure origin, no Domain, Path=/ (cannot be planted by a
        // sibling subdomain).
        let prefix = if secure { "__Host-" } else { "" };
        Cookies {
            session: format!("{prefix}{}", config.cookie_name),
            binding: format!("{prefix}{}_login", config.cookie_name),
            secure,
            same_site: match config.same_site {
                SameSite::Lax => "Lax",
                SameSite::Strict => "Strict",
            },
        }
    }

    fn attributes(&self, same_site: &str, max_age: Option<u64>) -> String {
        let mut a = format!("; Path=/; HttpOnly; SameSite={same_site}");
        if self.secure {
            a.push_str("; Secure");
        }
        if let Some(age) = max_age {
            a.push_str(&format!("; Max-Age={age}"));
        }
        a
    }

    /// The session cookie: a session cookie in the browser's sense (no Max-Age); the
    /// server-side timeouts decide how long it is worth anything.
    pub fn set_session(&self, id: &str) -> String {
        format!(
            "{}={id}{}",
            self.session,
            self.attributes(self.same_site, None)
        )
    }

    pub fn clear_session(&self) -> String {
        format!(
            "{}={}",
            self.session,
            self.attributes(self.same_site, Some(0))
        )
    }

    /// Always Lax: the callback is a top-level navigation coming from the IdP's site.
    fn set_binding(&self, value: &str) -> String {
        format!(
            "{}={value}{}",
            self.binding,
            self.attributes("Lax", Some(LOGIN_TTL.as_secs()))
        )
    }

    /// Whether a cookie name (as the request's bytes) is one of the gateway's.
    pub fn is_ours(&self, name: &[u8]) -> bool {
        name == self.session.as_bytes() || name == self.binding.as_bytes()
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (the first one).
pub fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// A random URL-safe token of `bytes` bytes from the OS CSPRNG.
fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// How much memory identities of sessions in use may take by estimate (about 1,100 identities
/// of 20 claims; with the allocator's share about 5 MB of RSS, so 100,000 sessions stored and
/// used stay under 150 MB); a session whose identity was dropped has it read from its ID
/// token again (about 10 us).
pub const IDENTITY_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// ID-token claims that only mattered while the token was checked: left out of a session's
/// identity (policies see the person, not the token's bookkeeping).
const BOOKKEEPING_CLAIMS: [&str; 10] = [
    "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "s_hash", "jti", "azp",
];

/// Why a login callback failed: a bounded label for metrics, the detail for the log.
#[derive(Debug)]
pub struct LoginFailure {
    pub idp: String,
    pub reason: &'static str,
    pub detail: String,
    /// 400: the browser's request is wrong; 502: the IdP misbehaved; 503: store down.
    pub status: u16,
}

impl LoginFailure {
    fn new(idp: &str, reason: &'static str, status: u16, detail: impl Into<String>) -> Self {
        LoginFailure {
            idp: idp.to_string(),
            reason,
            detail: detail.into(),
            status,
        }
    }
}

/// The result of a finished login.
pub struct LoggedIn {
    pub session_id: String,
    pub return_to: String,
    pub subject: String,
    pub idp: String,
}

/// Everything browser login needs at run time; one per config, carried over on reload when
/// the session settings did not change (so sessions survive a reload).
pub struct Login {
    pub session: SessionConfig,
    pub store: Arc<dyn SessionStore>,
    cipher: TokenCipher,
    pub providers: Vec<Arc<Provider>>,
    /// Every provider's issuer with the names of the providers that use it.
    issuers: Vec<(String, Vec<String>)>,
    pub cookies: Cookies,
    pub redirect_uri: String,
    pub public_url: String,
    pub reserved_prefix: String,
    allowed_hosts: Vec<String>,
    /// Some route passes the access token upstream: only then is it kept in the session.
    keep_access_token: bool,
    /// Sessions' identities, built from their ID tokens when used.
    identities: session::IdentityCache,
    /// In-process single flight for refreshes, by session key.
    refreshing: moka::sync::Cache<String, Arc<tokio::sync::Mutex<()>>>,
    metrics: Arc<Metrics>,
}

impl Login {
    /// None when the config has no `[[idp]]`.
    pub async fn build(
        config: &Config,
        previous: Option<&Arc<Login>>,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Arc<Login>>, String> {
        if config.idps.is_empty() {
            return Ok(None);
        }
        let public_url = config.server.public_url.clone().unwrap_or_default();
        let secure = public_url.starts_with("https://");
        let reusable = previous.filter(|p| p.session == config.session);
        // The store and the token key carry over when the session settings did not change.
        let (store, cipher): (Arc<dyn SessionStore>, TokenCipher) = match reusable {
            Some(p) => (p.store.clone(), p.cipher.clone()),
            None => {
                let store: Arc<dyn SessionStore> = match &config.session.store {
                    StoreKind::Memory => Arc::new(MemoryStore::new(config.session.max_sessions)),
                    StoreKind::Redis { url } => {
                        let redis = RedisSessionStore::new(
                            url,
                            config.session.timeout,
                            config.session.max_lifetime,
                        )?;
                        if config.session.fallback_memory {
                            Arc::new(FallbackStore::new(
                                redis,
                                config.session.max_sessions,
                                config.session.max_lifetime,
                                metrics.clone(),
                            ))
                        } else {
                            Arc::new(redis)
                        }
                    }
                };
                let secret = config.session.secret.clone().unwrap_or_else(|| {
                    let random: [u8; 32] = rand::random();
                    random.to_vec()
                });
                (store, TokenCipher::new(&secret))
            }
        };
        let mut providers = Vec::new();
        for idp in &config.idps {
            let old = previous.and_then(|p| p.providers.iter().find(|o| o.config == *idp));
            let provider = match old {
                Some(o) => o.clone(),
                None => {
                    let p = Arc::new(Provider::new(idp.clone(), metrics.clone()));
                    // The demo's own provider starts with the server, after this: the
                    // supervisor discovers it a moment later.
                    let demo_provider = config
                        .dev_idp
                        .as_ref()
                        .is_some_and(|d| idp.issuer == format!("http://{}", d.listen));
                    if !demo_provider {
                        if let Err(e) = p.discover().await {
                            tracing::warn!(idp = %idp.name, error = %e, "OIDC discovery failed; browser login for this IdP is unavailable until it succeeds");
                        }
                    }
                    p
                }
            };
            providers.push(provider);
        }
        for idp in &config.idps {
            for result in ["success", "failure"] {
                metrics
                    .token_refresh_total
                    .with_label_values(&[&idp.name, result]);
            }
            metrics
                .logins_total
                .with_label_values(&[&idp.name, "success"]);
        }
        let mut issuers: Vec<(String, Vec<String>)> = Vec::new();
        for idp in &config.idps {
            match issuers.iter_mut().find(|(url, _)| *url == idp.issuer) {
                Some((_, names)) => names.push(idp.name.clone()),
                None => issuers.push((idp.issuer.clone(), vec![idp.name.clone()])),
            }
        }
        Ok(Some(Arc::new(Login {
            issuers,
            keep_access_token: config
                .routes
                .iter()
                .any(|r| r.pass_access_token && r.auth.contains(&AuthMethod::Session)),
            cookies: Cookies::new(&config.session, secure),
            redirect_uri: format!("{public_url}{}/callback", config.server.reserved_prefix),
            reserved_prefix: config.server.reserved_prefix.clone(),
            allowed_hosts: config.server.allowed_hosts.clone(),
            public_url,
            session: config.session.clone(),
            store,
            cipher,
            providers,
            identities: session::IdentityCache::new(IDENTITY_CACHE_BYTES),
            // A gate must be admitted to be shared: LRU takes every new one (TinyLFU may not).
            refreshing: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(60))
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
            metrics: metrics.clone(),
        })))
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.config.name == name)
    }

    /// An issuer, with the providers that use it.
    fn issuer<'a>(&'a self, url: &'a str) -> Issuer<'a> {
        let idps = self
            .issuers
            .iter()
            .find(|(u, _)| u == url)
            .map_or(&[][..], |(_, names)| names.as_slice());
        Issuer { url, idps }
    }

    /// Who vouched for a session: the issuer it names, or (stored before sessions named it)
    /// its provider's.
    fn session_issuer<'a>(&'a self, s: &'a Session) -> Issuer<'a> {
        let url = s
            .issuer()
            .or_else(|| self.provider(s.idp()).map(|p| p.config.issuer.as_str()))
            .unwrap_or("");
        self.issuer(url)
    }

    /// Where a login may return to: see [`redirect::safe_return_target`].
    pub fn return_target(&self, rd: Option<&str>) -> String {
        redirect::safe_return_target(rd, &self.allowed_hosts)
    }

    /// Starts a login: the IdP URL to redirect to, and the binding cookie to set (when the
    /// browser has none yet).
    pub async fn start(
        &self,
        provider: &Provider,
        rd: &str,
        binding_cookie: Option<&str>,
        route: Option<&RouteConfig>,
    ) -> Result<(String, Option<String>), LoginFailure> {
        let idp = &provider.config.name;
        let metadata = provider.ensure_discovered().await.ok_or_else(|| {
            LoginFailure::new(
                idp,
                "idp_unavailable",
                503,
                "the provider is not discovered",
            )
        })?;
        let valid_binding = binding_cookie.filter(|b| {
            (32..=64).contains(&b.len())
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        });
        let (binding, set_cookie) = match valid_binding {
            Some(b) => (b.to_string(), None),
            None => {
                let b = random_token(32);
                let cookie = self.cookies.set_binding(&b);
                (b, Some(cookie))
            }
        };
        let state = random_token(32);
        let nonce = random_token(32);
        let verifier = random_token(48);
        let acr_values = route.map(|r| r.acr_values.clone()).unwrap_or_default();
        let max_age = route.and_then(|r| r.max_auth_age);
        let login = LoginState {
            idp: idp.clone(),
            binding: sha256_hex(&binding),
            nonce: nonce.clone(),
            verifier: verifier.clone(),
            rd: rd.to_string(),
            acr_values: acr_values.clone(),
            max_age: max_age.map(|a| a.as_secs()),
        };
        let json = serde_json::to_vec(&login).unwrap_or_default();
        self.store
            .put_once(&format!("login:{}", sha256_hex(&state)), &json, LOGIN_TTL)
            .await
            .map_err(|e| self.store_failure(idp, e))?;
        let url = provider.authorization_url(
            &metadata,
            &self.redirect_uri,
            &state,
            &nonce,
            &verifier,
            &acr_values,
            max_age,
        );
        Ok((url, set_cookie))
    }

    fn store_failure(&self, idp: &str, e: StoreError) -> LoginFailure {
        self.metrics.session_store_errors_total.inc();
        LoginFailure::new(idp, "session_store_unavailable", 503, e.to_string())
    }

    /// The callback: checks the authorization response, redeems the code, validates the ID
    /// token and creates a fresh session (a new id: no fixation).
    pub async fn finish(
        &self,
        query: &str,
        binding_cookie: Option<&str>,
    ) -> Result<LoggedIn, LoginFailure> {
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let param = |name: &str| {
            let mut values = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
            match (values.next(), values.next()) {
                (Some(v), None) => Some(v.as_str()),
                _ => None,
            }
        };
        let state = param("state")
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| {
                LoginFailure::new(
                    "-",
                    "missing_state",
                    400,
                    "callback without a (single) state",
                )
            })?;
        let stored = self
            .store
            .take_once(&format!("login:{}", sha256_hex(state)))
            .await
            .map_err(|e| self.store_failure("-", e))?
            .ok_or_else(|| {
                LoginFailure::new(
                    "-",
                    "unknown_state",
                    400,
                    "state unknown, expired or already used",
                )
            })?;
        let login: LoginState = serde_json::from_slice(&stored).map_err(|e| {
            LoginFailure::new(
                "-",
                "unknown_state",
                400,
                format!("stored login unreadable: {e}"),
            )
        })?;
        let idp = login.idp.as_str();
        let provider = self.provider(idp).ok_or_else(|| {
            LoginFailure::new(
                "-",
                "unknown_idp",
                400,
                format!("login started for idp {idp:?}, which is no longer configured"),
            )
        })?;
        let binding = binding_cookie.map(sha256_hex).unwrap_or_default();
        if !bool::from(binding.as_bytes().ct_eq(login.binding.as_bytes())) {
            return Err(LoginFailure::new(
                idp,
                "browser_mismatch",
                400,
                "the callback came without the cookie of the browser that started the login",
            ));
        }
        if let Some(error) = param("error") {
            let label = match error {
                "access_denied" => "access_denied",
                "login_required" | "interaction_required" | "consent_required" => "login_required",
                _ => "idp_error",
            };
            return Err(LoginFailure::new(
                idp,
                label,
                400,
                format!("the IdP answered error={error:?}"),
            ));
        }
        let metadata = provider
            .metadata()
            .ok_or_else(|| LoginFailure::new(idp, "idp_unavailable", 503, "not discovered"))?;
        // RFC 9207: a mix-up attack shows as a foreign `iss`.
        match param("iss") {
            Some(iss) if iss != provider.config.issuer => {
                return Err(LoginFailure::new(
                    idp,
                    "wrong_iss",
                    400,
                    format!("authorization response iss {iss:?}"),
                ))
            }
            None if metadata.iss_parameter_supported => {
                return Err(LoginFailure::new(
                    idp,
                    "missing_iss",
                    400,
                    "the IdP announces iss in authorization responses but sent none",
                ))
            }
            _ => {}
        }
        let code = param("code")
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or_else(|| {
                LoginFailure::new(idp, "missing_code", 400, "callback without a code")
            })?;
        let tokens = provider
            .exchange_code(&metadata, code, &self.redirect_uri, &login.verifier)
            .await
            .map_err(|e| LoginFailure::new(idp, e.label, 502, e.detail))?;
        let id_token = tokens.id_token.as_deref().ok_or_else(|| {
            LoginFailure::new(
                idp,
                "missing_id_token",
                502,
                "the token endpoint sent no id_token",
            )
        })?;
        let identity = provider
            .validate_id_token(id_token, Some(&login.nonce))
            .await
            .map_err(|f| {
                LoginFailure::new(
                    idp,
                    f.reason(),
                    502,
                    format!("ID token refused: {}", f.reason()),
                )
            })?;
        let claims = &identity.claims;
        let acr = claims
            .get("acr")
            .and_then(Value::as_str)
            .map(str::to_string);
        if !login.acr_values.is_empty()
            && !acr.as_ref().is_some_and(|a| login.acr_values.contains(a))
        {
            return Err(LoginFailure::new(
                idp,
                "acr_not_satisfied",
                403,
                format!(
                    "asked for acr {:?}, the IdP returned {acr:?}",
                    login.acr_values
                ),
            ));
        }
        let auth_time = claims
            .get("auth_time")
            .and_then(Value::as_f64)
            .map(|t| t as u64);
        if let Some(max_age) = login.max_age {
            // OIDC Core §2: asked with max_age, the provider must say when the person
            // authenticated; without it the login proves nothing about its age.
            let at = auth_time.ok_or_else(|| {
                LoginFailure::new(
                    idp,
                    "missing_auth_time",
                    502,
                    "max_age was sent and the ID token has no auth_time",
                )
            })?;
            let leeway = provider.config.leeway.as_secs();
            if unix_now().saturating_sub(at) > max_age + leeway {
                return Err(LoginFailure::new(
                    idp,
                    "auth_too_old",
                    403,
                    "auth_time older than the max_age asked for",
                ));
            }
        }
        let now = unix_now();
        let names = session::Names {
            idp,
            issuer: &provider.config.issuer,
            subject: &identity.subject,
            sid: claims.get("sid").and_then(Value::as_str),
            acr: acr.as_deref(),
        };
        let kept = self.kept_tokens(session::Tokens::default(), &tokens);
        let mut times = Times::starting(now, now + self.session.max_lifetime.as_secs());
        // Unknown stays unknown (never "now"): max_auth_age then asks the IdP again. 0 is
        // how a session stores "none": an IdP's auth_time of 0 counts as 1, long ago.
        times.auth_time = auth_time.map(|t| t.max(1));
        self.set_token_times(&mut times, &kept, &tokens, now);
        let session = Session::new(names, &kept, &self.cipher, times);
        let session_id = session::new_session_id();
        self.store
            .put(&session_id, &session, self.ttl(&session, now))
            .await
            .map_err(|e| self.store_failure(idp, e))?;
        Ok(LoggedIn {
            session_id,
            return_to: login.rd,
            subject: identity.subject,
            idp: idp.to_string(),
        })
    }

    /// What a session keeps of a token response, over what it kept before: the access token
    /// only when a route passes it on; a refresh without a new ID or refresh token keeps the old.
    fn kept_tokens(&self, before: session::Tokens, tokens: &oidc::Tokens) -> session::Tokens {
        session::Tokens {
            id_token: tokens.id_token.clone().or(before.id_token),
            access_token: tokens
                .access_token
                .clone()
                .filter(|_| self.keep_access_token),
            refresh_token: tokens.refresh_token.clone().or(before.refresh_token),
        }
    }

    fn set_token_times(
        &self,
        times: &mut Times,
        kept: &session::Tokens,
        tokens: &oidc::Tokens,
        now: u64,
    ) {
        times.access_expires_at = tokens.expires_in.map(|s| now.saturating_add(s));
        // Ahead of expiry by `refresh_before`, but never more than a fifth of the lifetime.
        times.refresh_at = match (tokens.expires_in, &kept.refresh_token) {
            (Some(life), Some(_)) => {
                let ahead = self.session.refresh_before.as_secs().min(life / 5);
                Some(now.saturating_add(life - ahead))
            }
            _ => None,
        };
    }

    /// How long the store keeps a session from now: the idle timeout, cut at the absolute end.
    fn ttl(&self, session: &Session, now: u64) -> Duration {
        let left = session.times().expires_at.saturating_sub(now);
        Duration::from_secs(left.min(self.session.idle_timeout.as_secs()).max(1))
    }

    /// The session behind a cookie value, kept alive and refreshed as needed; `None` when
    /// there is none (unknown, expired, ended by a failed refresh).
    pub async fn lookup(&self, id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some(mut s) = self.store.get(id).await? else {
            return Ok(None);
        };
        let now = unix_now();
        let times = s.times();
        if times.expires_at <= now {
            self.store.delete(id).await?;
            return Ok(None);
        }
        if times.refresh_at.is_some_and(|at| now >= at) {
            match Box::pin(self.refresh(id, s.clone(), now)).await? {
                Some(fresh) => s = fresh,
                None => return Ok(None),
            }
        } else if now.saturating_sub(times.touched_at)
            >= (self.session.idle_timeout.as_secs() / 10).max(1)
        {
            // Push the idle timeout back, at most every tenth of it.
            let mut touched = (*s).clone();
            touched.set_times(Times {
                touched_at: now,
                ..times
            });
            if !self
                .store
                .update(id, &touched, self.ttl(&touched, now))
                .await?
            {
                return Ok(None);
            }
        }
        Ok(Some(s))
    }

    /// Refreshes once per session however many requests need it: in-process waiters share
    /// one refresh, and with Redis a short lock keeps other instances from refreshing too.
    async fn refresh(
        &self,
        id: &str,
        current: Arc<Session>,
        now: u64,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        let key = session::store_key(id);
        let gate = self
            .refreshing
            .get_with(key.clone(), || Arc::new(tokio::sync::Mutex::new(())));
        let _one = gate.lock().await;
        // Someone may have refreshed while this request waited.
        let Some(latest) = self.store.get(id).await? else {
            return Ok(None);
        };
        if latest.times().refresh_at.is_none_or(|at| now < at) {
            return Ok(Some(latest));
        }
        let lock = format!("refresh:{key}");
        if !self.store.try_lock(&lock, Duration::from_secs(10)).await? {
            // Another instance is refreshing: wait for its result (bounded).
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                match self.store.get(id).await? {
                    None => return Ok(None),
                    Some(s) if s.times().refresh_at.is_none_or(|at| unix_now() < at) => {
                        return Ok(Some(s))
                    }
                    Some(_) => {}
                }
            }
            let still_valid = current
                .times()
                .access_expires_at
                .is_some_and(|e| e > unix_now());
            return Ok(still_valid.then_some(current));
        }
        let result = self.refresh_locked(id, &latest).await;
        let _ = self.store.unlock(&lock).await;
        result
    }

    async fn refresh_locked(
        &self,
        id: &str,
        latest: &Session,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        let idp = latest.idp();
        let count = |result: &str| {
            self.metrics
                .token_refresh_total
                .with_label_values(&[idp, result])
                .inc()
        };
        let provider = self.provider(idp);
        let metadata = match provider {
            Some(p) => p.ensure_discovered().await,
            None => None,
        };
        let before = latest.tokens(&self.cipher).unwrap_or_default();
        let (Some(provider), Some(metadata), Some(refresh_token)) =
            (provider, metadata, before.refresh_token.clone())
        else {
            count("failure");
            tracing::warn!(target: "gatehouse::audit", idp, subject = %latest.subject(), reason = "refresh_unavailable", "token refresh failed; session ended");
            self.store.delete(id).await?;
            return Ok(None);
        };
        let now = unix_now();
        match provider.refresh(&metadata, &refresh_token).await {
            Ok(tokens) => {
                if let Some(id_token) = &tokens.id_token {
                    match provider.validate_id_token(id_token, None).await {
                        Ok(identity) if identity.subject == latest.subject() => {}
                        Ok(_) | Err(_) => {
                            count("failure");
                            tracing::warn!(target: "gatehouse::audit", idp, subject = %latest.subject(), reason = "refreshed_id_token_invalid", "token refresh failed; session ended");
                            self.store.delete(id).await?;
                            return Ok(None);
                        }
                    }
                }
                let kept = self.kept_tokens(before, &tokens);
                let mut fresh = latest.with_tokens(&kept, &self.cipher);
                let mut times = latest.times();
                self.set_token_times(&mut times, &kept, &tokens, now);
                times.touched_at = now;
                fresh.set_times(times);
                if !self.store.update(id, &fresh, self.ttl(&fresh, now)).await? {
                    // Logged out while the IdP was asked: it stays logged out.
                    return Ok(None);
                }
                count("success");
                tracing::debug!(idp, subject = %latest.subject(), "access token refreshed");
                Ok(Some(Arc::new(fresh)))
            }
            Err(e) => {
                count("failure");
                let still_valid = latest.times().access_expires_at.is_some_and(|e| e > now);
                if e.label != "invalid_grant" && still_valid {
                    // The IdP is unreachable: keep serving until the access token expires.
                    tracing::warn!(idp, subject = %latest.subject(), error = %e.detail, "token refresh failed; retrying on a later request");
                    return Ok(Some(Arc::new(latest.clone())));
                }
                tracing::warn!(target: "gatehouse::audit", idp, subject = %latest.subject(), reason = e.label, error = %e.detail, "token refresh failed; session ended");
                self.store.delete(id).await?;
                Ok(None)
            }
        }
    }

    /// The identity a session stands for, read from its ID token once per stored version;
    /// `None` when the tokens cannot be opened (another `session.secret`) or read.
    pub fn identity(&self, s: &Session) -> Option<Arc<Identity>> {
        if let Some(identity) = self.identities.get(s).filter(|i| i.subject == s.subject()) {
            return Some(identity);
        }
        let provider = self.provider(s.idp())?;
        // An IdP name now configured with another issuer does not vouch for the old one's people.
        if s.issuer().is_some_and(|i| i != provider.config.issuer) {
            return None;
        }
        let claims = s.id_token_claims(&self.cipher)?;
        let mut identity = provider.session_identity(&claims)?;
        if identity.subject != s.subject() {
            return None;
        }
        let claims = &mut identity.claims;
        for name in BOOKKEEPING_CLAIMS {
            claims.remove(name);
        }
        claims.insert("idp".into(), Value::from(s.idp()));
        // What login decided on (and step-up checks) is what policies see too, whatever a
        // refreshed token says.
        for (name, value) in [
            ("sid", s.sid().map(Value::from)),
            ("acr", s.acr().map(Value::from)),
            ("auth_time", s.times().auth_time.map(Value::from)),
        ] {
            claims.remove(name);
            if let Some(v) = value {
                claims.insert(name.to_string(), v);
            }
        }
        identity.scopes.clear();
        identity.expires_at = Some(s.times().expires_at);
        Some(self.identities.insert(s, identity))
    }

    /// Whether a session meets the route's step-up demands (`acr_values`, `max_auth_age`).
    pub fn satisfies(&self, s: &Session, route: &RouteConfig) -> bool {
        if !route.acr_values.is_empty()
            && !s
                .acr()
                .is_some_and(|a| route.acr_values.iter().any(|v| v == a))
        {
            return false;
        }
        if let Some(max) = route.max_auth_age {
            // A login whose time the IdP never said is of unknown age: not recent enough.
            let Some(at) = s.times().auth_time else {
                return false;
            };
            if unix_now().saturating_sub(at) > max.as_secs() {
                return false;
            }
        }
        true
    }

    /// The decrypted access token of a session (for `pass_access_token`).
    pub fn access_token(&self, s: &Session) -> Option<String> {
        s.access_token(&self.cipher)
    }

    /// Ends a session; with `everywhere`, every session of its subject. Returns where to
    /// send the browser: the IdP's end-session endpoint when it has one.
    pub async fn logout(
        &self,
        id: Option<&str>,
        everywhere: bool,
    ) -> Result<Option<String>, StoreError> {
        let Some(id) = id else { return Ok(None) };
        let Some(s) = self.store.get(id).await? else {
            // Unreadable during a Redis outage, the session may still be there: it ends with
            // Redis (the store keeps the deletion); but whose sessions "everywhere" means is
            // unknown, and claiming it would be false.
            if everywhere && self.store.degraded() {
                return Err(StoreError::Unavailable(
                    "the session to log out everywhere cannot be read during the outage"
                        .to_string(),
                ));
            }
            self.store.delete(id).await?;
            return Ok(None);
        };
        if everywhere {
            let ended = self
                .store
                .delete_by_subject(self.session_issuer(&s), s.subject())
                .await?;
            // This session, whatever the index says (one of an IdP no longer configured).
            self.store.delete(id).await?;
            self.metrics
                .logouts_total
                .with_label_values(&["everywhere"])
                .inc_by(ended as u64);
        } else {
            self.store.delete(id).await?;
            self.metrics.logouts_total.with_label_values(&["rp"]).inc();
        }
        tracing::info!(target: "gatehouse::audit", idp = %s.idp(), subject = %s.subject(), everywhere, "logout");
        let Some(provider) = self.provider(s.idp()) else {
            return Ok(None);
        };
        let Some(end_session) = provider
            .metadata()
            .and_then(|m| m.end_session_endpoint.clone())
        else {
            return Ok(None);
        };
        let Ok(mut url) = url::Url::parse(&end_session) else {
            return Ok(None);
        };
        let post_logout = provider
            .config
            .post_logout_redirect_uri
            .clone()
            .unwrap_or_else(|| format!("{}/", self.public_url));
        {
            let mut q = url.query_pairs_mut();
            if let Some(hint) = s.id_token(&self.cipher) {
                q.append_pair("id_token_hint", &hint);
            }
            q.append_pair("client_id", &provider.config.client_id);
            q.append_pair("post_logout_redirect_uri", &post_logout);
        }
        Ok(Some(url.to_string()))
    }

    /// A back-channel logout request's `logout_token`: validated against the IdP that issued
    /// it; the sessions it names end on every instance sharing the store.
    pub async fn backchannel_logout(&self, logout_token: &str) -> Result<usize, AuthFailure> {
        let parsed = crate::authn::bearer::parse(logout_token)?;
        let iss = parsed
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or("");
        let provider = self
            .providers
            .iter()
            .find(|p| p.config.issuer == iss)
            .ok_or(AuthFailure::Invalid("unknown_issuer"))?;
        let token = provider.validate_logout_token(logout_token).await?;
        // One use on every instance sharing the store: the first to take the token's jti
        // (SET NX in Redis) acts on it, until the token expires.
        let used = format!(
            "logout-jti:{}",
            sha256_hex(&format!("{}\0{}", provider.config.issuer, token.jti))
        );
        let left = token
            .expires_at
            .saturating_add(provider.config.leeway.as_secs())
            .saturating_sub(unix_now());
        let remember = Duration::from_secs(left.clamp(1, LOGOUT_TOKEN_MEMORY.as_secs()));
        let unavailable = AuthFailure::Unavailable("session_store_unavailable");
        if !self
            .store
            .try_lock(&used, remember)
            .await
            .map_err(|_| unavailable)?
        {
            return Err(AuthFailure::Invalid("replayed_logout_token"));
        }
        let (sid, sub) = (token.sid, token.sub);
        // Only this issuer's: another issuer's equal `sub` or `sid` is someone else's.
        let issuer = self.issuer(&provider.config.issuer);
        let result = match (&sid, &sub) {
            (Some(sid), _) => self.store.delete_by_sid(issuer, sid).await,
            (None, Some(sub)) => self.store.delete_by_subject(issuer, sub).await,
            (None, None) => Ok(0),
        };
        let Ok(ended) = result else {
            // Nothing ended: the IdP's retry of this token must not count as a replay.
            let _ = self.store.unlock(&used).await;
            return Err(unavailable);
        };
        self.metrics
            .logouts_total
            .with_label_values(&["backchannel"])
            .inc_by(ended as u64);
        tracing::info!(target: "gatehouse::audit", idp = %provider.config.name, sid = sid.as_deref().unwrap_or(""), subject = sub.as_deref().unwrap_or(""), ended, "back-channel logout");
        Ok(ended)
    }

    pub fn idp_config(&self, index: usize) -> Option<&IdpConfig> {
        self.providers.get(index).map(|p| &p.config)
    }

    /// `/_gatehouse/userinfo`: what an SPA may know about its user.
    pub fn userinfo(&self, s: &Session, identity: &Identity) -> Value {
        serde_json::json!({
            "sub": identity.subject,
            "iss": identity.issuer,
            "email": identity.email,
            "preferred_username": identity.username,
            "groups": identity.groups,
            "idp": s.idp(),
            "acr": s.acr(),
            "amr": string_list(identity.claims.get("amr")),
            "auth_time": s.times().auth_time,
            "expires_at": s.times().expires_at,
            "name": claim_at(&identity.claims, "name"),
        })
    }
}

#[cfg(test)]
impl Login {
    /// Stores a live session at `idp` whose ID token carries `claims` (unsigned: a session's
    /// token was checked when it was stored); the `Cookie` value that names it.
    pub(crate) async fn store_test_session(&self, idp: &str, claims: &Value) -> String {
        let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let id_token = format!(
            "{}.{}.c2ln",
            encode(&serde_json::json!({"alg": "RS256"})),
            encode(claims)
        );
        let provider = self.provider(idp).expect("a configured idp");
        let now = unix_now();
        let names = session::Names {
            idp,
            issuer: &provider.config.issuer,
            subject: claims["sub"].as_str().unwrap_or_default(),
            sid: None,
            acr: claims["acr"].as_str(),
        };
        let tokens = session::Tokens {
            id_token: Some(id_token),
            ..Default::default()
        };
        let times = Times {
            auth_time: Some(now),
            ..Times::starting(now, now + 3600)
        };
        let s = Session::new(names, &tokens, &self.cipher, times);
        let id = session::new_session_id();
        self.store
            .put(&id, &s, Duration::from_secs(3600))
            .await
            .expect("the memory store takes it");
        format!("{}={id}", self.cookies.session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_config() -> SessionConfig {
        SessionConfig {
            store: StoreKind::Memory,
            cookie_name: "gatehouse".into(),
            secret: None,
            max_lifetime: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(600),
            same_site: SameSite::Lax,
            fallback_memory: false,
            timeout: Duration::from_millis(500),
            max_sessions: 10,
            refresh_before: Duration::from_secs(60),
        }
    }

    #[test]
    fn cookies_are_host_only_and_secure_on_tls() {
        let tls = Cookies::new(&session_config(), true);
        let set = tls.set_session("abc");
        assert!(set.starts_with("__Host-gatehouse=abc; Path=/; HttpOnly; SameSite=Lax; Secure"));
        assert!(!set.contains("Domain") && !set.contains("Max-Age"));
        assert!(tls
            .set_binding("b")
            .starts_with("__Host-gatehouse_login=b;"));
        assert!(tls.set_binding("b").contains("Max-Age=600"));
        assert!(tls.clear_session().contains("Max-Age=0"));
        let plain = Cookies::new(&session_config(), false);
        assert!(plain.set_session("abc").starts_with("gatehouse=abc;"));
        assert!(!plain.set_session("abc").contains("Secure"));
        assert!(plain.is_ours(b"gatehouse") && plain.is_ours(b"gatehouse_login"));
        assert!(!plain.is_ours(b"gatehouse2"));
    }

    #[test]
    fn cookie_values_are_found_among_others() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; gatehouse=xyz".parse().unwrap());
        h.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie_value(&h, "gatehouse"), Some("xyz"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "gate"), None);
    }
}

#[cfg(test)]
mod timeouts {
    use super::*;

    /// A Login on the memory store whose provider is never reached.
    async fn login() -> Arc<Login> {
        let text = r#"
[server]
listen = ["127.0.0.1:1"]
public_url = "http://127.0.0.1:1"
[session]
max_lifetime = "2h"
idle_timeout = "10m"
[[idp]]
name = "corp"
issuer = "http://127.0.0.1:1"
client_id = "gatehouse"
[upstream.app]
servers = ["127.0.0.1:2"]
[[route]]
name = "web"
path = "/"
upstream = "app"
auth = ["session"]
"#;
        let config = Config::from_str(std::path::Path::new("gateway.toml"), text, &|_| None)
            .expect("config");
        Login::build(&config, None, &Arc::new(Metrics::new()))
            .await
            .expect("login")
            .expect("an idp")
    }

    fn session(now: u64) -> Session {
        session_with_acr(now, None)
    }

    fn session_with_acr(now: u64, acr: Option<&str>) -> Session {
        let names = session::Names {
            idp: "corp",
            issuer: "http://127.0.0.1:1",
            subject: "alice",
            sid: None,
            acr,
        };
        let cipher = TokenCipher::new(b"a secret for the session timeout tests");
        let times = Times {
            auth_time: Some(now),
            ..Times::starting(now, now + 7200)
        };
        Session::new(names, &Default::default(), &cipher, times)
    }

    #[tokio::test]
    async fn absolute_lifetime_and_idle_push_back() {
        let login = login().await;
        let now = unix_now();
        // Past its absolute end: gone, and deleted.
        let id = session::new_session_id();
        let mut old = session(now - 8000);
        old.set_times(Times {
            expires_at: now - 1,
            ..old.times()
        });
        login
            .store
            .put(&id, &old, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(login.lookup(&id).await.unwrap().is_none());
        assert!(login.store.get(&id).await.unwrap().is_none());
        // Used after more than a tenth of the idle timeout: pushed back (touched now).
        let id = session::new_session_id();
        login
            .store
            .put(&id, &session(now - 120), Duration::from_secs(600))
            .await
            .unwrap();
        assert!(login.lookup(&id).await.unwrap().is_some());
        assert!(
            login
                .store
                .get(&id)
                .await
                .unwrap()
                .unwrap()
                .times()
                .touched_at
                >= now
        );
        // The store keeps it for the idle timeout, cut at the absolute end.
        let s = session(now);
        assert_eq!(login.ttl(&s, now), Duration::from_secs(600));
        let mut ending = session(now);
        ending.set_times(Times {
            expires_at: now + 30,
            ..ending.times()
        });
        assert_eq!(login.ttl(&ending, now), Duration::from_secs(30));
        // Malformed ids never reach the store.
        assert!(login.lookup("not-hex").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn step_up_demands() {
        let login = login().await;
        let now = unix_now();
        let mut route = crate::config::RouteConfig {
            name: "admin".into(),
            host: None,
            path: "/admin".into(),
            upstream: "app".into(),
            auth: vec![AuthMethod::Session],
            cors: None,
            security_headers: true,
            path_checks: Default::default(),
            pass_access_token: false,
            rate_limits: Vec::new(),
            policy: None,
            idp: Some(0),
            acr_values: vec!["gold".into()],
            max_auth_age: Some(Duration::from_secs(300)),
            underscores_in_headers: false,
            overrides: Vec::new(),
        };
        assert!(!login.satisfies(&session_with_acr(now - 60, Some("silver")), &route));
        let mut s = session_with_acr(now - 60, Some("gold"));
        assert!(login.satisfies(&s, &route));
        s.set_times(Times {
            auth_time: Some(now - 600),
            ..s.times()
        });
        assert!(
            !login.satisfies(&s, &route),
            "login older than max_auth_age"
        );
        s.set_times(Times {
            auth_time: None,
            ..s.times()
        });
        assert!(
            !login.satisfies(&s, &route),
            "a login of unknown age is not recent"
        );
        route.max_auth_age = None;
        assert!(login.satisfies(&s, &route));
    }
}
