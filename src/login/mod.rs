//! Browser login: the OIDC authorization code flow with PKCE, `state` and `nonce`; the
//! server-side session it creates; refresh, step-up and logout.
//!
//! A login in progress is stored server-side under its `state` (single-use, 10 minutes)
//! and bound to the browser that started it by a short-lived cookie holding a random value
//! whose hash the state records. One binding cookie serves every tab of that browser, so
//! several logins can run at once without piling up cookies.
//!
//! [`flow`] starts a login, [`callback`] finishes it, [`in_use`] keeps a session alive and
//! reads its identity, [`logout`] ends sessions; [`cookies`] names what the browser holds.

mod admin;
pub mod assertion;
mod callback;
mod cookies;
pub mod csrf;
mod flow;
mod graph;
mod in_use;
mod logout;
pub mod oidc;
mod openid;
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
use crate::config::{
    Config, IdpConfig, RouteConfig, SameSite, SessionConfig, StoreKind, Userinfo, UserinfoOnError,
};
use crate::identity::{claim_at, string_list, AuthMethod, Identity};
use crate::metrics::Metrics;
use crate::session::fallback::FallbackStore;
use crate::session::memory::MemoryStore;
use crate::session::redis_store::RedisSessionStore;
use crate::session::{self, Issuer, Session, SessionStore, StoreError, Times, TokenCipher};
pub use admin::SessionSummary;
#[cfg(any(test, feature = "fuzzing"))]
pub use cookies::cookie_value_by_the_crate;
pub use cookies::{cookie_value, Cookies};
use oidc::{unix_now, Provider};

/// How long a login may take between the redirect to the IdP and the callback.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);

/// How long the sign-in page remembers the provider last chosen.
pub const CHOICE_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

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

/// A random URL-safe token of `bytes` bytes from the OS CSPRNG.
fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

pub(crate) fn sha256_hex(text: &str) -> String {
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

/// `login_hint` and `domain_hint` (OIDC Core §3.1.2.1; Entra ID's `domain_hint`) from the
/// request that started a login: passed on to the IdP, and matched against `idp_domains`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Hints {
    pub login_hint: Option<String>,
    pub domain_hint: Option<String>,
}

impl Hints {
    /// The hints of a query string; a hint too long or holding control characters is dropped.
    pub fn from_query(query: Option<&str>) -> Hints {
        let mut hints = Hints::default();
        let Some(query) = query else { return hints };
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "login_hint" => &mut hints.login_hint,
                "domain_hint" => &mut hints.domain_hint,
                _ => continue,
            };
            let usable = !v.is_empty() && v.len() <= 256 && !v.chars().any(char::is_control);
            if slot.is_none() && usable {
                *slot = Some(v.into_owned());
            }
        }
        hints
    }

    /// The email domain the hints name (lowercase): `domain_hint`, else the part of
    /// `login_hint` after its last `@`.
    pub fn domain(&self) -> Option<String> {
        let domain = match (&self.domain_hint, &self.login_hint) {
            (Some(d), _) => d.as_str(),
            (None, Some(l)) => l.rsplit_once('@')?.1,
            (None, None) => return None,
        };
        (!domain.is_empty()).then(|| domain.trim_end_matches('.').to_ascii_lowercase())
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
        // The store carries over when only the secrets changed (a rotation logs nobody out),
        // and the token key too when they did not.
        let reusable = previous.filter(|p| p.session.same_but_secrets(&config.session));
        let store: Arc<dyn SessionStore> = match reusable {
            Some(p) => p.store.clone(),
            None => match &config.session.store {
                StoreKind::Memory => Arc::new(MemoryStore::new(config.session.max_sessions)),
                StoreKind::Redis(target) => {
                    let redis = RedisSessionStore::new(
                        target,
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
            },
        };
        let same_secrets = reusable.is_some_and(|p| {
            p.session.secret == config.session.secret
                && p.session.secret_previous == config.session.secret_previous
        });
        let cipher = match (reusable, same_secrets) {
            (Some(p), true) => p.cipher.clone(),
            _ => {
                let secret = config.session.secret.clone().unwrap_or_else(|| {
                    let random: [u8; 32] = rand::random();
                    random.to_vec()
                });
                TokenCipher::rotated(&secret, config.session.secret_previous.as_deref())
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

    /// Among the providers at `candidates` (indices into `providers`), the one whose
    /// `idp_domains` hold the hints' email domain.
    pub fn provider_for_hints(
        &self,
        candidates: &[usize],
        hints: &Hints,
    ) -> Option<&Arc<Provider>> {
        let domain = hints.domain()?;
        candidates
            .iter()
            .filter_map(|i| self.providers.get(*i))
            .find(|p| p.config.domains.contains(&domain))
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
            require_dpop: false,
            dpop_nonce: false,
            rate_limits: Vec::new(),
            policy: None,
            idps: vec![0],
            domain_hint: None,
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

#[cfg(test)]
mod hints {
    use super::Hints;

    #[test]
    fn hints_come_from_the_query_and_name_a_domain() {
        let h = Hints::from_query(Some(
            "rd=/&login_hint=Bob%40Partners.Example&login_hint=x@y",
        ));
        assert_eq!(h.login_hint.as_deref(), Some("Bob@Partners.Example"));
        assert_eq!(h.domain().as_deref(), Some("partners.example"));
        let d = Hints::from_query(Some("domain_hint=corp.example.&login_hint=a@b.example"));
        assert_eq!(d.domain().as_deref(), Some("corp.example"));
        // Not an email, too long, or with control characters: no domain, or no hint.
        assert_eq!(Hints::from_query(Some("login_hint=bob")).domain(), None);
        assert_eq!(Hints::from_query(Some("login_hint=bob@")).domain(), None);
        let long = format!("login_hint={}", "a".repeat(300));
        assert_eq!(Hints::from_query(Some(&long)), Hints::default());
        assert_eq!(
            Hints::from_query(Some("login_hint=a%0A@b.example")),
            Hints::default()
        );
        assert_eq!(Hints::from_query(None), Hints::default());
    }
}
