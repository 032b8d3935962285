//! Lowering: the outside format ([`super::file`]) checked and turned into [`super::Config`].

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;

use super::file::{self, S};
use super::values::{interpolate_env, parse_duration};
use super::*;
use crate::diag::{ConfigError, Reporter};

struct Lowerer<'a> {
    r: Reporter<'a>,
    /// Policy files already loaded: routes sharing one file share one compiled policy.
    policies: HashMap<PathBuf, std::sync::Arc<crate::authz::Policy>>,
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: PathBuf,
}

pub fn lower(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut l = Lowerer {
        r: Reporter::new(path, text),
        policies: HashMap::new(),
        env,
        base_dir: path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let parsed: file::File = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            l.r.error(span, e.message().trim().to_string());
            return Err(ConfigError(l.r.diagnostics));
        }
    };
    let config = l.config(parsed);
    l.r.into_result(config)
}

impl Lowerer<'_> {
    fn config(&mut self, f: file::File) -> Config {
        let server = self.server(&f.server);
        let admin = self.admin(f.admin.as_ref());
        let log = self.log(f.log.as_ref());
        let mut upstreams = BTreeMap::new();
        for (name, up) in &f.upstream {
            if let Some(u) = self.upstream(name, up) {
                upstreams.insert(u.name.clone(), u);
            }
        }
        let mut bearer: Vec<BearerConfig> =
            f.bearer.iter().filter_map(|b| self.bearer(b)).collect();
        let api_keys: Vec<ApiKeyConfig> =
            f.api_key.iter().filter_map(|k| self.api_key(k)).collect();
        let session = self.session(f.session.as_ref());
        let dev_idp = f.dev_idp.as_ref().map(|d| self.dev_idp(d));
        let mut idps = self.idps(&f.idp);
        let available = Available {
            bearer: !f.bearer.is_empty(),
            api_key: !f.api_key.is_empty(),
            session: !f.idp.is_empty(),
        };
        let rate_limits: Vec<RateLimitConfig> = f
            .rate_limit
            .iter()
            .filter_map(|l| self.rate_limit(l))
            .collect();
        let mut routes = self.routes(&f.route, &upstreams, available, &idps);
        if routes.iter().any(|r| r.auth.contains(&AuthMethod::Session))
            && server.public_url.is_none()
        {
            self.r.error(
                f.server.span(),
                "browser login (auth = [\"session\"]) needs server.public_url: the redirect URI and cookie flags derive from it",
            );
        }
        self.route_rate_limits(&f.route, &mut routes, &rate_limits);
        let rate_limit_store = self.rate_limit_store(f.rate_limit_store.as_ref());
        let auth_failure_limit = self.auth_failure_limit(f.auth_failure_limit.as_ref());
        let reserved_limit = self.reserved_limit(f.reserved_limit.as_ref());
        let mut headers = self.headers(f.headers.as_ref());
        // Equal subjects of two issuers are two people: once there are two, say whose.
        let issuers: std::collections::BTreeSet<&str> = bearer
            .iter()
            .map(|b| b.issuer.as_str())
            .chain(idps.iter().map(|i| i.issuer.as_str()))
            .collect();
        let qualify = f
            .headers
            .as_ref()
            .and_then(|h| h.qualify_user)
            .unwrap_or(issuers.len() > 1);
        headers.qualify_user = qualify;
        for b in &mut bearer {
            b.qualify_subject = qualify;
        }
        for i in &mut idps {
            i.qualify_subject = qualify;
        }
        let security_headers = self.security_headers(f.security_headers.as_ref());
        Config {
            source: self.r.file().to_path_buf(),
            server,
            admin,
            log,
            upstreams,
            routes,
            headers,
            security_headers,
            bearer,
            api_keys,
            rate_limits,
            rate_limit_store,
            auth_failure_limit,
            reserved_limit,
            session,
            idps,
            dev_idp,
        }
    }

    fn dev_idp(&mut self, d: &S<file::DevIdp>) -> DevIdpConfig {
        let c = d.get_ref();
        let listen = self
            .listen_addr(&c.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8082)));
        if !listen.ip().is_loopback() {
            self.r.error(
                c.listen.span(),
                "dev_idp.listen must be a loopback address: the development provider logs anyone in",
            );
        }
        if c.users.get_ref().is_empty() {
            self.r
                .error(c.users.span(), "dev_idp.users needs at least one user");
        }
        let users = c
            .users
            .get_ref()
            .iter()
            .filter_map(|u| {
                let u = u.get_ref();
                Some(DevUser {
                    name: self.string(&u.name)?,
                    email: u.email.as_ref().and_then(|e| self.string(e)),
                    groups: u
                        .groups
                        .iter()
                        .flatten()
                        .filter_map(|g| self.string(g))
                        .collect(),
                })
            })
            .collect();
        let access_token_ttl = self.duration(c.access_token_ttl.as_ref(), Duration::from_secs(300));
        DevIdpConfig {
            listen,
            users,
            access_token_ttl,
        }
    }

    fn positive(&mut self, v: Option<&S<i64>>, default: u64, what: &str) -> u64 {
        match v {
            None => default,
            Some(n) if *n.get_ref() >= 1 => *n.get_ref() as u64,
            Some(n) => {
                self.r.error(n.span(), format!("{what} must be at least 1"));
                default
            }
        }
    }

    /// `"N/second"`, `"N/minute"`, `"N/hour"`, `"N/day"`.
    fn limit(&mut self, v: &S<String>) -> Option<(u64, Duration)> {
        let text = self.string(v)?;
        let parsed = text.split_once('/').and_then(|(n, unit)| {
            let n: u64 = n.trim().parse().ok().filter(|n| *n >= 1)?;
            let period = match unit.trim() {
                "second" | "s" => Duration::from_secs(1),
                "minute" | "m" => Duration::from_secs(60),
                "hour" | "h" => Duration::from_secs(3600),
                "day" | "d" => Duration::from_secs(86_400),
                _ => return None,
            };
            Some((n, period))
        });
        if parsed.is_none() {
            self.r.error(
                v.span(),
                format!(
                    "limit {text:?} must look like \"50/hour\" (per second, minute, hour or day)"
                ),
            );
        }
        parsed
    }

    fn rate_limit(&mut self, l: &S<file::RateLimit>) -> Option<RateLimitConfig> {
        let c = l.get_ref();
        let name = c.name.get_ref().clone();
        if !valid_name(&name) {
            self.r.error(
                c.name.span(),
                format!("rate limit name {name:?} may hold only letters, digits, '-' and '_'"),
            );
        }
        let key_text = c.key.get_ref().as_str();
        let key = match key_text {
            "client_ip" => LimitKey::ClientIp,
            "subject" => LimitKey::Subject,
            "api_key" => LimitKey::ApiKey,
            "route" => LimitKey::Route,
            other => match other
                .strip_prefix("header:")
                .map(|h| HeaderName::from_bytes(h.as_bytes()))
            {
                Some(Ok(h)) => LimitKey::Header(h),
                _ => {
                    self.r.error(
                        c.key.span(),
                        format!("rate limit key {other:?} must be client_ip, subject, api_key, route or header:NAME"),
                    );
                    return None;
                }
            },
        };
        let (count, period) = self.limit(&c.limit)?;
        let burst = self.positive(c.burst.as_ref(), count, "burst");
        let ipv6_prefix = self.ipv6_prefix(c.ipv6_prefix.as_ref());
        Some(RateLimitConfig {
            name,
            key,
            count,
            period,
            burst,
            ipv6_prefix,
        })
    }

    fn route_rate_limits(
        &mut self,
        routes: &[S<file::Route>],
        lowered: &mut [RouteConfig],
        limits: &[RateLimitConfig],
    ) {
        for (route, out) in routes.iter().zip(lowered.iter_mut()) {
            let Some(names) = &route.get_ref().rate_limit else {
                continue;
            };
            for n in names.get_ref() {
                match limits.iter().position(|l| l.name == *n.get_ref()) {
                    Some(i) if !out.rate_limits.contains(&i) => out.rate_limits.push(i),
                    Some(_) => {}
                    None => self.r.error(
                        n.span(),
                        format!(
                            "route {:?} names unknown rate limit {:?}",
                            out.name,
                            n.get_ref()
                        ),
                    ),
                }
            }
        }
    }

    fn rate_limit_store(&mut self, s: Option<&S<file::RateLimitStore>>) -> RateLimitStoreConfig {
        let c = s.map(|s| s.get_ref());
        let kind = match c.and_then(|c| c.kind.as_ref()) {
            None => StoreKind::Memory,
            Some(k) => {
                match k.get_ref().as_str() {
                    "memory" => StoreKind::Memory,
                    "redis" => match c.and_then(|c| c.redis_url.as_ref()) {
                        Some(url) => {
                            let text = self.string(url).unwrap_or_default();
                            if redis::Client::open(text.as_str()).is_err() {
                                self.r.error(
                                    url.span(),
                                    format!(
                                        "invalid redis_url {:?}",
                                        super::show::redact_url(&text)
                                    ),
                                );
                            }
                            StoreKind::Redis { url: text }
                        }
                        None => {
                            self.r
                                .error(k.span(), "a redis rate_limit_store needs redis_url");
                            StoreKind::Memory
                        }
                    },
                    other => {
                        self.r.error(k.span(), format!("rate_limit_store kind must be \"memory\" or \"redis\", not {other:?}"));
                        StoreKind::Memory
                    }
                }
            }
        };
        let fail_open = match c.and_then(|c| c.on_error.as_ref()) {
            None => true,
            Some(v) => match v.get_ref().as_str() {
                "fail_open" => true,
                "fail_closed" => false,
                other => {
                    self.r.error(
                        v.span(),
                        format!("on_error must be \"fail_open\" or \"fail_closed\", not {other:?}"),
                    );
                    true
                }
            },
        };
        RateLimitStoreConfig {
            kind,
            fail_open,
            timeout: self.duration(
                c.and_then(|c| c.timeout.as_ref()),
                Duration::from_millis(100),
            ),
            response_headers: c.and_then(|c| c.response_headers).unwrap_or(false),
            max_keys: self.positive(c.and_then(|c| c.max_keys.as_ref()), 1_000_000, "max_keys")
                as usize,
        }
    }

    fn auth_failure_limit(
        &mut self,
        a: Option<&S<file::AuthFailureLimit>>,
    ) -> AuthFailureLimitConfig {
        let c = a.map(|a| a.get_ref());
        AuthFailureLimitConfig {
            enabled: c.and_then(|c| c.enabled).unwrap_or(true),
            max_failures: self.positive(
                c.and_then(|c| c.max_failures.as_ref()),
                100,
                "max_failures",
            ),
            window: self.duration(c.and_then(|c| c.window.as_ref()), Duration::from_secs(60)),
            cooldown: self.duration(
                c.and_then(|c| c.cooldown.as_ref()),
                Duration::from_secs(300),
            ),
            ipv6_prefix: self.ipv6_prefix(c.and_then(|c| c.ipv6_prefix.as_ref())),
            max_clients: self.positive(
                c.and_then(|c| c.max_clients.as_ref()),
                100_000,
                "max_clients",
            ) as usize,
        }
    }

    /// How many leading bits of an IPv6 client address count: 64 by default, since one
    /// host commonly holds a whole /64 and could rotate through it.
    fn ipv6_prefix(&mut self, v: Option<&S<i64>>) -> u8 {
        match v {
            None => 64,
            Some(p) if (1..=128).contains(p.get_ref()) => *p.get_ref() as u8,
            Some(p) => {
                self.r
                    .error(p.span(), "ipv6_prefix must be between 1 and 128");
                64
            }
        }
    }

    fn reserved_limit(&mut self, r: Option<&S<file::ReservedLimit>>) -> RateLimitConfig {
        let c = r.map(|r| r.get_ref());
        let (count, period) = c
            .and_then(|c| c.limit.as_ref())
            .and_then(|l| self.limit(l))
            .unwrap_or((30, Duration::from_secs(60)));
        RateLimitConfig {
            name: "gatehouse-endpoints".into(),
            key: LimitKey::ClientIp,
            count,
            period,
            burst: self.positive(c.and_then(|c| c.burst.as_ref()), count, "burst"),
            ipv6_prefix: 64,
        }
    }

    /// A route's policy file, relative to the config; its own problems carry its own path.
    fn policy(&mut self, v: &S<String>) -> Option<std::sync::Arc<crate::authz::Policy>> {
        let text = self.string(v)?;
        let path = self.base_dir.join(&text);
        if let Some(p) = self.policies.get(&path) {
            return Some(p.clone());
        }
        if !path.is_file() {
            self.r.error(
                v.span(),
                format!("cannot read policy file {}", path.display()),
            );
            return None;
        }
        match crate::authz::Policy::load(&path) {
            Ok(p) => {
                let p = std::sync::Arc::new(p);
                self.policies.insert(path, p.clone());
                Some(p)
            }
            Err(e) => {
                self.r.error(
                    v.span(),
                    format!("policy {} is invalid (see below)", path.display()),
                );
                self.r.diagnostics.extend(e.0);
                None
            }
        }
    }

    /// An `https` URL, or `http` to a loopback host (tests, the demo).
    fn secure_url(&mut self, v: &S<String>, what: &str) -> Option<String> {
        let text = self.string(v)?;
        match check_secure_url(&text) {
            Ok(()) => Some(text),
            Err(e) => {
                self.r.error(v.span(), format!("{what} {text:?} {e}"));
                None
            }
        }
    }

    fn bearer(&mut self, b: &S<file::Bearer>) -> Option<BearerConfig> {
        let c = b.get_ref();
        let issuer = self.secure_url(&c.issuer, "issuer")?;
        let audiences: Vec<String> = c
            .audiences
            .get_ref()
            .iter()
            .filter_map(|a| self.string(a))
            .collect();
        if c.audiences.get_ref().is_empty() {
            self.r.error(
                c.audiences.span(),
                "audiences must name at least one audience: a token for another API must not be accepted",
            );
        }
        let jwks_uri = c
            .jwks_uri
            .as_ref()
            .and_then(|u| self.secure_url(u, "jwks_uri"));
        let algorithms = self.algorithms(c.algorithms.as_ref(), &[jsonwebtoken::Algorithm::RS256]);
        let leeway = self.leeway(c.leeway.as_ref());
        let claims = self.claim_names(
            [
                &c.subject_claim,
                &c.email_claim,
                &c.username_claim,
                &c.groups_claim,
            ],
            c.email_verified.as_ref(),
        );
        let introspection = match (
            &c.introspection_endpoint,
            &c.introspection_client_id,
            &c.introspection_client_secret,
        ) {
            (None, None, None) => None,
            (Some(e), Some(id), Some(secret)) => {
                let endpoint = self.secure_url(e, "introspection_endpoint");
                let client_id = self.string(id);
                let client_secret = self.string(secret);
                match (endpoint, client_id, client_secret) {
                    (Some(endpoint), Some(client_id), Some(client_secret)) => {
                        Some(IntrospectionConfig {
                            endpoint,
                            client_id,
                            client_secret,
                        })
                    }
                    _ => None,
                }
            }
            _ => {
                self.r.error(
                    b.span(),
                    "introspection_endpoint, introspection_client_id and introspection_client_secret go together",
                );
                None
            }
        };
        let unknown_kid_refetch_interval = self.duration(
            c.unknown_kid_refetch_interval.as_ref(),
            Duration::from_secs(10),
        );
        let token_type = c.token_type.as_ref().and_then(|t| self.string(t));
        Some(BearerConfig {
            issuer,
            audiences,
            jwks_uri,
            algorithms,
            leeway,
            token_type,
            claims,
            introspection,
            unknown_kid_refetch_interval,
            qualify_subject: false,
        })
    }

    fn algorithms(
        &mut self,
        list: Option<&S<Vec<S<String>>>>,
        default: &[jsonwebtoken::Algorithm],
    ) -> Vec<jsonwebtoken::Algorithm> {
        let Some(list) = list else {
            return default.to_vec();
        };
        if list.get_ref().is_empty() {
            self.r.error(list.span(), "algorithms must not be empty");
        }
        list.get_ref()
            .iter()
            .filter_map(|a| {
                let text = a.get_ref().as_str();
                let alg = match text {
                    "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256"
                    | "ES384" | "EdDSA" => text.parse::<jsonwebtoken::Algorithm>().ok(),
                    _ => None,
                };
                if alg.is_none() {
                    self.r.error(
                        a.span(),
                        format!("algorithm {text:?} is not allowed (use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA; HMAC and none never are)"),
                    );
                }
                alg
            })
            .collect()
    }

    fn session(&mut self, s: Option<&S<file::Session>>) -> SessionConfig {
        let none = file::Session {
            store: None,
            redis_url: None,
            cookie_name: None,
            secret: None,
            max_lifetime: None,
            idle_timeout: None,
            same_site: None,
            fallback: None,
            timeout: None,
            max_sessions: None,
            refresh_before: None,
        };
        let span = s.map_or(0..0, S::span);
        let c = s.map_or(&none, S::get_ref);
        let redis_url = c.redis_url.as_ref().and_then(|u| self.string(u));
        let store = match c.store.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "memory")) => StoreKind::Memory,
            Some((v, "redis")) => match redis_url.clone() {
                Some(url) => StoreKind::Redis { url },
                None => {
                    self.r
                        .error(v.span(), "session store \"redis\" needs session.redis_url");
                    StoreKind::Memory
                }
            },
            Some((v, other)) => {
                self.r.error(
                    v.span(),
                    format!("session.store must be \"memory\" or \"redis\", not {other:?}"),
                );
                StoreKind::Memory
            }
        };
        if let (Some(u), StoreKind::Memory) = (&c.redis_url, &store) {
            self.r.error(
                u.span(),
                "session.redis_url is only used with store = \"redis\"",
            );
        }
        if let Some(url) = &redis_url {
            if redis::Client::open(url.as_str()).is_err() {
                if let Some(u) = &c.redis_url {
                    self.r.error(
                        u.span(),
                        format!("invalid redis_url {:?}", super::show::redact_url(url)),
                    );
                }
            }
        }
        let cookie_name = match &c.cookie_name {
            None => "gatehouse".to_string(),
            Some(v) => {
                let text = self.string(v).unwrap_or_default();
                let ok = !text.is_empty()
                    && text.len() <= 64
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                    && !text.starts_with("__");
                if !ok {
                    self.r.error(
                        v.span(),
                        format!("cookie_name {text:?} may hold only letters, digits, '-', '_' and '.' (the __Host- prefix is added on TLS)"),
                    );
                }
                text
            }
        };
        let secret = match &c.secret {
            None => {
                if matches!(store, StoreKind::Redis { .. }) {
                    self.r.error(
                        span.clone(),
                        "session.secret is required with the redis store: every instance must derive the same token encryption key",
                    );
                }
                None
            }
            Some(v) => {
                let text = self.string(v).unwrap_or_default();
                if text.len() < 32 {
                    self.r.error(
                        v.span(),
                        "session.secret must be at least 32 characters (e.g. `openssl rand -hex 32`)",
                    );
                }
                Some(text.into_bytes())
            }
        };
        let max_lifetime = self.duration(c.max_lifetime.as_ref(), Duration::from_secs(8 * 3600));
        let idle_timeout = self.duration(c.idle_timeout.as_ref(), Duration::from_secs(3600));
        for (v, d) in [
            (&c.max_lifetime, max_lifetime),
            (&c.idle_timeout, idle_timeout),
        ] {
            if let Some(v) = v {
                if d < Duration::from_secs(60) {
                    self.r.error(v.span(), "must be at least 1m");
                }
            }
        }
        if idle_timeout > max_lifetime {
            if let Some(v) = &c.idle_timeout {
                self.r
                    .error(v.span(), "idle_timeout cannot exceed max_lifetime");
            }
        }
        let same_site = match c.same_site.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "lax")) => SameSite::Lax,
            Some((_, "strict")) => SameSite::Strict,
            Some((v, other)) => {
                self.r.error(
                    v.span(),
                    format!("session.same_site must be \"lax\" or \"strict\", not {other:?} (\"none\" would send the session cookie with cross-site requests)"),
                );
                SameSite::Lax
            }
        };
        let fallback_memory = match c.fallback.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "none")) => false,
            Some((_, "memory")) => true,
            Some((v, other)) => {
                self.r.error(
                    v.span(),
                    format!("session.fallback must be \"none\" or \"memory\", not {other:?}"),
                );
                false
            }
        };
        let timeout = self.duration(c.timeout.as_ref(), Duration::from_millis(500));
        let refresh_before = self.duration(c.refresh_before.as_ref(), Duration::from_secs(60));
        let max_sessions = self.positive(c.max_sessions.as_ref(), 1_000_000, "max_sessions");
        SessionConfig {
            store,
            cookie_name,
            secret,
            max_lifetime,
            idle_timeout,
            same_site,
            fallback_memory,
            timeout,
            max_sessions,
            refresh_before,
        }
    }

    fn idps(&mut self, list: &[S<file::Idp>]) -> Vec<IdpConfig> {
        let mut out: Vec<IdpConfig> = Vec::new();
        for i in list {
            let c = i.get_ref();
            let name = c.name.get_ref().clone();
            if !valid_name(&name) {
                self.r.error(
                    c.name.span(),
                    format!("idp name {name:?} may hold only letters, digits, '-' and '_'"),
                );
            }
            if out.iter().any(|o| o.name == name) {
                self.r.error(
                    c.name.span(),
                    format!("an idp named {name:?} is defined twice"),
                );
            }
            let issuer = self.secure_url(&c.issuer, "issuer");
            let client_id = self.string(&c.client_id).unwrap_or_default();
            if client_id.is_empty() {
                self.r
                    .error(c.client_id.span(), "client_id must not be empty");
            }
            let client_secret = c.client_secret.as_ref().and_then(|v| self.string(v));
            let client_auth = match (&c.client_auth, &client_secret) {
                (None, Some(_)) => ClientAuth::Basic,
                (None, None) => ClientAuth::None,
                (Some(v), secret) => match (v.get_ref().as_str(), secret) {
                    ("client_secret_basic", Some(_)) => ClientAuth::Basic,
                    ("client_secret_post", Some(_)) => ClientAuth::Post,
                    ("none", None) => ClientAuth::None,
                    ("client_secret_basic" | "client_secret_post", None) => {
                        self.r
                            .error(v.span(), "this client_auth needs client_secret");
                        ClientAuth::None
                    }
                    ("none", Some(_)) => {
                        self.r.error(
                            v.span(),
                            "client_auth \"none\" is for public clients; remove client_secret",
                        );
                        ClientAuth::None
                    }
                    (other, _) => {
                        self.r.error(
                            v.span(),
                            format!("client_auth must be \"client_secret_basic\", \"client_secret_post\" or \"none\", not {other:?}"),
                        );
                        ClientAuth::None
                    }
                },
            };
            let scopes: Vec<String> = match &c.scopes {
                None => ["openid", "profile", "email"].map(String::from).to_vec(),
                Some(list) => {
                    let scopes: Vec<String> = list
                        .get_ref()
                        .iter()
                        .filter_map(|s| self.string(s))
                        .collect();
                    if !scopes.iter().any(|s| s == "openid") {
                        self.r.error(list.span(), "scopes must include \"openid\"");
                    }
                    if let Some(bad) = scopes.iter().find(|s| {
                        s.is_empty()
                            || !s
                                .bytes()
                                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
                    }) {
                        self.r.error(list.span(), format!("invalid scope {bad:?}"));
                    }
                    scopes
                }
            };
            let claims = self.claim_names(
                [
                    &c.subject_claim,
                    &c.email_claim,
                    &c.username_claim,
                    &c.groups_claim,
                ],
                c.email_verified.as_ref(),
            );
            const RESERVED_PARAMS: [&str; 10] = [
                "response_type",
                "client_id",
                "redirect_uri",
                "scope",
                "state",
                "nonce",
                "code_challenge",
                "code_challenge_method",
                "response_mode",
                "request",
            ];
            let mut extra_auth_params = Vec::new();
            for (k, v) in &c.extra_auth_params {
                if RESERVED_PARAMS.contains(&k.get_ref().as_str()) {
                    self.r.error(
                        k.span(),
                        format!(
                            "extra_auth_params cannot set {:?}: the gateway sets it",
                            k.get_ref()
                        ),
                    );
                    continue;
                }
                if let Some(value) = self.string(v) {
                    extra_auth_params.push((k.get_ref().clone(), value));
                }
            }
            let algorithms = self.algorithms(
                c.algorithms.as_ref(),
                &[
                    jsonwebtoken::Algorithm::RS256,
                    jsonwebtoken::Algorithm::PS256,
                    jsonwebtoken::Algorithm::ES256,
                    jsonwebtoken::Algorithm::EdDSA,
                ],
            );
            let leeway = self.leeway(c.leeway.as_ref());
            let post_logout_redirect_uri = c.post_logout_redirect_uri.as_ref().and_then(|v| {
                let text = self.string(v)?;
                if url::Url::parse(&text)
                    .ok()
                    .is_none_or(|u| !matches!(u.scheme(), "http" | "https"))
                {
                    self.r.error(
                        v.span(),
                        format!(
                            "post_logout_redirect_uri {text:?} must be an absolute http(s) URL"
                        ),
                    );
                    return None;
                }
                Some(text)
            });
            let Some(issuer) = issuer else { continue };
            out.push(IdpConfig {
                name,
                issuer,
                client_id,
                client_secret,
                client_auth,
                scopes,
                claims,
                extra_auth_params,
                algorithms,
                leeway,
                post_logout_redirect_uri,
                qualify_subject: false,
            });
        }
        out
    }

    /// Clock leeway for token times: 30 s by default, at most 5 minutes.
    fn leeway(&mut self, v: Option<&S<String>>) -> Duration {
        let leeway = self.duration(v, Duration::from_secs(30));
        if let (Some(l), true) = (v, leeway > Duration::from_secs(300)) {
            self.r.error(
                l.span(),
                "leeway above 5m is refused: it would accept expired tokens",
            );
        }
        leeway
    }

    /// Where identity claims are found: subject, email, username, groups (defaults: `sub`,
    /// `email`, `preferred_username`, `groups`); and when the email counts (`email_verified`).
    fn claim_names(
        &mut self,
        names: [&Option<S<String>>; 4],
        email_verified: Option<&S<String>>,
    ) -> ClaimNames {
        let defaults = ["sub", "email", "preferred_username", "groups"];
        let [subject, email, username, groups] = std::array::from_fn(|i| {
            names[i]
                .as_ref()
                .and_then(|v| self.string(v))
                .unwrap_or_else(|| defaults[i].to_string())
        });
        let email_verified = match email_verified.map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "required")) => EmailVerified::Required,
            Some((_, "if_present")) => EmailVerified::IfPresent,
            Some((_, "ignore")) => EmailVerified::Ignore,
            Some((v, other)) => {
                self.r.error(
                    v.span(),
                    format!("email_verified must be \"required\", \"if_present\" or \"ignore\", not {other:?}"),
                );
                EmailVerified::Required
            }
        };
        ClaimNames {
            subject,
            email,
            username,
            groups,
            email_verified,
        }
    }

    fn api_key(&mut self, k: &S<file::ApiKey>) -> Option<ApiKeyConfig> {
        let c = k.get_ref();
        let hash_text = self.string(&c.hash)?;
        let hash = hash_text
            .strip_prefix("sha256:")
            .and_then(|h| hex::decode(h).ok())
            .and_then(|h| <[u8; 32]>::try_from(h).ok());
        let Some(hash) = hash else {
            self.r.error(
                c.hash.span(),
                "api_key hash must be \"sha256:\" and 64 hex digits, as printed by `gatehouse apikey hash`",
            );
            return None;
        };
        let expires = match &c.expires {
            None => None,
            Some(e) => {
                let text = self.string(e)?;
                let parsed = humantime::parse_rfc3339_weak(&text)
                    .or_else(|_| humantime::parse_rfc3339_weak(&format!("{text} 00:00:00")));
                match parsed {
                    Ok(t) => Some(t),
                    Err(_) => {
                        self.r.error(
                            e.span(),
                            format!("expires {text:?} must be a date (2026-12-31) or an RFC 3339 time (UTC)"),
                        );
                        return None;
                    }
                }
            }
        };
        Some(ApiKeyConfig {
            name: self.string(&c.name)?,
            hash,
            subject: self.string(&c.subject)?,
            groups: c
                .groups
                .iter()
                .flatten()
                .filter_map(|g| self.string(g))
                .collect(),
            expires,
        })
    }

    /// A string value with `${ENV}` references replaced.
    fn string(&mut self, v: &S<String>) -> Option<String> {
        match interpolate_env(v.get_ref(), self.env) {
            Ok(s) => Some(s),
            Err(e) => {
                self.r.error(v.span(), e);
                None
            }
        }
    }

    fn duration(&mut self, v: Option<&S<String>>, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        let Some(text) = self.string(v) else {
            return default;
        };
        match parse_duration(&text) {
            Ok(d) => d,
            Err(e) => {
                self.r.error(v.span(), e);
                default
            }
        }
    }

    fn listen_addr(&mut self, v: &S<String>) -> Option<SocketAddr> {
        let text = self.string(v)?;
        let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
            // `localhost:PORT` is common in examples; it means the IPv4 loopback.
            let port = text.strip_prefix("localhost:")?.parse::<u16>().ok()?;
            Some(SocketAddr::from(([127, 0, 0, 1], port)))
        });
        if parsed.is_none() {
            self.r.error(
                v.span(),
                format!("invalid listen address {text:?}: expected IP:PORT, e.g. \"0.0.0.0:8080\" or \"[::]:8080\""),
            );
        }
        parsed
    }

    /// A file path, relative to the config's folder, that must be readable now.
    fn readable_file(&mut self, v: &S<String>, what: &str) -> Option<PathBuf> {
        let text = self.string(v)?;
        let path = self.base_dir.join(&text);
        match std::fs::read(&path) {
            Ok(_) => Some(path),
            Err(e) => {
                self.r.error(
                    v.span(),
                    format!("cannot read {what} {}: {e}", path.display()),
                );
                None
            }
        }
    }

    fn pem_cert(&mut self, v: &S<String>, what: &str) -> Option<PathBuf> {
        let path = self.readable_file(v, what)?;
        let pem = std::fs::read(&path).unwrap_or_default();
        if let Err(e) = pingora::tls::x509::X509::stack_from_pem(&pem).and_then(|certs| {
            if certs.is_empty() {
                // stack_from_pem accepts an empty file; a certificate file must hold one.
                pingora::tls::x509::X509::from_pem(&pem).map(|_| ())
            } else {
                Ok(())
            }
        }) {
            self.r.error(
                v.span(),
                format!(
                    "{what} {} is not a PEM certificate: {}",
                    path.display(),
                    first_ssl_reason(&e)
                ),
            );
            return None;
        }
        Some(path)
    }

    fn pem_key(&mut self, v: &S<String>, what: &str) -> Option<PathBuf> {
        let path = self.readable_file(v, what)?;
        let pem = std::fs::read(&path).unwrap_or_default();
        if let Err(e) = pingora::tls::pkey::PKey::private_key_from_pem(&pem) {
            self.r.error(
                v.span(),
                format!(
                    "{what} {} is not a PEM private key: {}",
                    path.display(),
                    first_ssl_reason(&e)
                ),
            );
            return None;
        }
        Some(path)
    }

    fn server(&mut self, s: &S<file::Server>) -> ServerConfig {
        let listen: Vec<SocketAddr> = match &s.get_ref().listen {
            Some(list) => list
                .get_ref()
                .iter()
                .filter_map(|a| self.listen_addr(a))
                .collect(),
            None => vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
        };
        let srv = s.get_ref();
        let tls = srv.tls.as_ref().map(|t| {
            let tt = t.get_ref();
            let listen = tt
                .listen
                .get_ref()
                .iter()
                .filter_map(|a| self.listen_addr(a))
                .collect::<Vec<_>>();
            if tt.listen.get_ref().is_empty() {
                self.r.error(
                    tt.listen.span(),
                    "server.tls.listen needs at least one address",
                );
            }
            let cert = self.pem_cert(&tt.cert, "TLS certificate");
            let key = self.pem_key(&tt.key, "TLS key");
            TlsListenerConfig {
                listen,
                cert: cert.unwrap_or_default(),
                key: key.unwrap_or_default(),
            }
        });
        if listen.is_empty() && tls.is_none() && srv.listen.is_some() {
            self.r.error(s.span(), "the server has no listen address");
        }
        let public_url = srv.public_url.as_ref().and_then(|u| {
            let text = self.string(u)?;
            let ok = (text.starts_with("https://") || text.starts_with("http://"))
                && text
                    .split("://")
                    .nth(1)
                    .is_some_and(|rest| !rest.is_empty());
            if !ok {
                self.r.error(
                    u.span(),
                    format!("public_url {text:?} must be an absolute http(s) URL"),
                );
                return None;
            }
            Some(text.trim_end_matches('/').to_string())
        });
        let threads = match &srv.threads {
            Some(t) if *t.get_ref() < 1 || *t.get_ref() > 1024 => {
                self.r
                    .error(t.span(), "server.threads must be between 1 and 1024");
                1
            }
            Some(t) => *t.get_ref() as usize,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let trusted_proxies = srv
            .trusted_proxies
            .iter()
            .flatten()
            .filter_map(|c| {
                let text = self.string(c)?;
                let parsed = text
                    .parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
                match parsed {
                    Ok(net) => Some(net.trunc()),
                    Err(_) => {
                        self.r.error(
                            c.span(),
                            format!("invalid CIDR {text:?} in trusted_proxies"),
                        );
                        None
                    }
                }
            })
            .collect();
        let allowed_hosts = srv
            .allowed_hosts
            .iter()
            .flatten()
            .filter_map(|h| {
                let text = self.string(h)?.to_ascii_lowercase();
                if !valid_host(&text) {
                    self.r.error(
                        h.span(),
                        format!(
                            "invalid host name {text:?} in allowed_hosts (no scheme, port or path)"
                        ),
                    );
                    return None;
                }
                Some(text)
            })
            .collect();
        let reserved_prefix = match &srv.reserved_prefix {
            Some(p) => {
                let text = self.string(p).unwrap_or_default();
                let ok = text.starts_with('/')
                    && text.len() > 1
                    && !text.ends_with('/')
                    && text[1..]
                        .split('/')
                        .all(|seg| !seg.is_empty() && seg.chars().all(is_plain_path_char));
                if !ok {
                    self.r.error(
                        p.span(),
                        format!("reserved_prefix {text:?} must look like \"/_gatehouse\""),
                    );
                }
                text
            }
            None => "/_gatehouse".to_string(),
        };
        let shutdown_timeout =
            self.duration(srv.shutdown_timeout.as_ref(), Duration::from_secs(30));
        ServerConfig {
            listen,
            tls,
            public_url,
            threads,
            trusted_proxies,
            allowed_hosts,
            reserved_prefix,
            shutdown_timeout,
            h2c: srv.h2c.unwrap_or(false),
        }
    }

    fn admin(&mut self, a: Option<&file::Admin>) -> AdminConfig {
        let default = SocketAddr::from(([127, 0, 0, 1], 9090));
        let listen = a
            .and_then(|a| a.listen.as_ref())
            .map_or(Some(default), |l| self.listen_addr(l))
            .unwrap_or(default);
        AdminConfig { listen }
    }

    fn log(&mut self, l: Option<&file::Log>) -> LogConfig {
        let format = match l.and_then(|l| l.format.as_ref()) {
            None => LogFormat::Json,
            Some(f) => match f.get_ref().as_str() {
                "json" => LogFormat::Json,
                "pretty" => LogFormat::Pretty,
                other => {
                    self.r.error(
                        f.span(),
                        format!("log.format must be \"json\" or \"pretty\", not {other:?}"),
                    );
                    LogFormat::Json
                }
            },
        };
        let level = match l.and_then(|l| l.level.as_ref()) {
            None => "info".to_string(),
            Some(v) => {
                let text = self.string(v).unwrap_or_default();
                if tracing_subscriber::EnvFilter::try_new(&text).is_err() {
                    self.r.error(
                        v.span(),
                        format!("invalid log.level {text:?} (e.g. \"info\", \"debug\", \"warn,gatehouse=debug\")"),
                    );
                }
                text
            }
        };
        LogConfig {
            format,
            level,
            audit: l.and_then(|l| l.audit).unwrap_or(true),
            access_log: l.and_then(|l| l.access_log).unwrap_or(true),
        }
    }

    fn upstream(&mut self, name: &S<String>, up: &S<file::Upstream>) -> Option<UpstreamConfig> {
        if !valid_name(name.get_ref()) {
            self.r.error(
                name.span(),
                format!(
                    "upstream name {:?} may hold only letters, digits, '-' and '_'",
                    name.get_ref()
                ),
            );
        }
        let u = up.get_ref();
        if u.servers.get_ref().is_empty() {
            self.r.error(
                u.servers.span(),
                format!("upstream {:?} needs at least one server", name.get_ref()),
            );
        }
        let servers: Vec<ServerAddr> = u
            .servers
            .get_ref()
            .iter()
            .filter_map(|s| {
                let text = self.string(s)?;
                let parsed = parse_server_addr(&text);
                if parsed.is_none() {
                    self.r.error(
                        s.span(),
                        format!("invalid upstream server {text:?}: expected HOST:PORT"),
                    );
                }
                parsed
            })
            .collect();
        let tls = u.tls.unwrap_or(false);
        let sni = match &u.sni {
            Some(s) => self.string(s).unwrap_or_default(),
            None => servers.first().map(|s| s.host.clone()).unwrap_or_default(),
        };
        if !tls {
            for (key, v) in [
                ("sni", &u.sni),
                ("ca", &u.ca),
                ("client_cert", &u.client_cert),
                ("client_key", &u.client_key),
            ] {
                if let Some(v) = v {
                    self.r
                        .error(v.span(), format!("upstream {key} needs `tls = true`"));
                }
            }
        }
        let ca = u.ca.as_ref().and_then(|c| self.pem_cert(c, "upstream CA"));
        let client_cert = match (&u.client_cert, &u.client_key) {
            (Some(c), Some(k)) => {
                let cert = self.pem_cert(c, "upstream client certificate");
                let key = self.pem_key(k, "upstream client key");
                cert.zip(key)
            }
            (Some(v), None) | (None, Some(v)) => {
                self.r
                    .error(v.span(), "client_cert and client_key go together");
                None
            }
            (None, None) => None,
        };
        let connect_timeout = self.duration(u.connect_timeout.as_ref(), Duration::from_secs(5));
        let read_timeout = self.duration(u.read_timeout.as_ref(), Duration::from_secs(60));
        let write_timeout = self.duration(u.write_timeout.as_ref(), Duration::from_secs(60));
        let health_check_interval =
            self.duration(u.health_check_interval.as_ref(), Duration::from_secs(5));
        for (v, d) in [
            (&u.connect_timeout, connect_timeout),
            (&u.read_timeout, read_timeout),
            (&u.write_timeout, write_timeout),
            (&u.health_check_interval, health_check_interval),
        ] {
            if let Some(v) = v {
                if d.is_zero() {
                    self.r.error(v.span(), "must be longer than zero");
                }
            }
        }
        Some(UpstreamConfig {
            name: name.get_ref().clone(),
            servers,
            tls,
            sni,
            ca,
            client_cert,
            connect_timeout,
            read_timeout,
            write_timeout,
            health_check_interval,
        })
    }

    fn routes(
        &mut self,
        routes: &[S<file::Route>],
        upstreams: &BTreeMap<String, UpstreamConfig>,
        available: Available,
        idps: &[IdpConfig],
    ) -> Vec<RouteConfig> {
        let mut names: HashMap<String, ()> = HashMap::new();
        let mut places: HashMap<(Option<String>, String), String> = HashMap::new();
        let mut out = Vec::new();
        for r in routes {
            let route = r.get_ref();
            let name = route.name.get_ref().clone();
            if !valid_name(&name) {
                self.r.error(
                    route.name.span(),
                    format!("route name {name:?} may hold only letters, digits, '-' and '_'"),
                );
            }
            if names.insert(name.clone(), ()).is_some() {
                self.r.error(
                    route.name.span(),
                    format!("a route named {name:?} is defined twice"),
                );
            }
            let host = route.host.as_ref().and_then(|h| {
                let text = self.string(h)?.to_ascii_lowercase();
                if !valid_host(&text) {
                    self.r.error(
                        h.span(),
                        format!("invalid route host {text:?} (a host name, without scheme, port or path)"),
                    );
                    return None;
                }
                Some(text)
            });
            let path = self.string(&route.path).unwrap_or_default();
            let prefix = route_prefix(&path);
            if prefix.is_none() {
                self.r.error(
                    route.path.span(),
                    format!("route path {path:?} must be an absolute, normalized path prefix such as \"/\" or \"/api/\""),
                );
            }
            let prefix = prefix.unwrap_or_default();
            if let Some(other) = places.insert((host.clone(), prefix.clone()), name.clone()) {
                self.r.error(
                    route.path.span(),
                    format!(
                        "route {name:?} overlaps route {other:?}: both match host {} and path {prefix:?}",
                        host.as_deref().unwrap_or("(any)")
                    ),
                );
            }
            let upstream = route.upstream.get_ref().clone();
            if !upstreams.contains_key(&upstream) {
                let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                self.r.error(
                    route.upstream.span(),
                    format!(
                        "route {name:?} names unknown upstream {upstream:?} (defined: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            let auth = self.auth(&route.auth, available);
            let pass_access_token = route.pass_access_token.unwrap_or(false);
            if pass_access_token
                && !auth.contains(&AuthMethod::Bearer)
                && !auth.contains(&AuthMethod::Session)
            {
                self.r.error(
                    route.auth.span(),
                    format!(
                        "route {name:?} sets pass_access_token but accepts neither bearer tokens nor sessions"
                    ),
                );
            }
            let session = auth.contains(&AuthMethod::Session);
            let idp = match (&route.idp, session) {
                (Some(v), true) => {
                    let found = idps.iter().position(|i| i.name == *v.get_ref());
                    if found.is_none() {
                        self.r.error(
                            v.span(),
                            format!("route {name:?} names unknown idp {:?}", v.get_ref()),
                        );
                    }
                    found
                }
                (None, true) if idps.len() == 1 => Some(0),
                (None, true) => {
                    if idps.len() > 1 {
                        self.r.error(
                            route.auth.span(),
                            format!("route {name:?} uses session login and several [[idp]] exist: name one with `idp`"),
                        );
                    }
                    None
                }
                (Some(v), false) => {
                    self.r.error(
                        v.span(),
                        "`idp` is only used on routes with auth = [\"session\"]",
                    );
                    None
                }
                (None, false) => None,
            };
            let acr_values: Vec<String> = route
                .acr_values
                .iter()
                .flat_map(|l| l.get_ref().iter())
                .filter_map(|v| self.string(v))
                .collect();
            let max_auth_age = route
                .max_auth_age
                .as_ref()
                .map(|v| self.duration(Some(v), Duration::ZERO));
            for (key, span) in [
                ("acr_values", route.acr_values.as_ref().map(S::span)),
                ("max_auth_age", route.max_auth_age.as_ref().map(S::span)),
            ] {
                if let (Some(span), false) = (span, session) {
                    self.r.error(
                        span,
                        format!(
                            "`{key}` (step-up) is only used on routes with auth = [\"session\"]"
                        ),
                    );
                }
            }
            if let Some(list) = &route.acr_values {
                if list.get_ref().is_empty() {
                    self.r.error(
                        list.span(),
                        "acr_values must not be empty (leave it out instead)",
                    );
                }
            }
            let policy = route.policy.as_ref().and_then(|p| self.policy(p));
            let cors = route.cors.as_ref().map(|c| self.cors(c));
            let checks = route.path_checks.as_ref();
            let path_checks = NormalizeOptions {
                allow_encoded_slash: checks.and_then(|c| c.allow_encoded_slash).unwrap_or(false),
                allow_backslash: checks.and_then(|c| c.allow_backslash).unwrap_or(false),
                allow_semicolon: checks.and_then(|c| c.allow_semicolon).unwrap_or(false),
                allow_double_encoding: checks
                    .and_then(|c| c.allow_double_encoding)
                    .unwrap_or(false),
            };
            let overrides = self.overrides(route.request_overrides.as_ref());
            out.push(RouteConfig {
                underscores_in_headers: route.underscores_in_headers.unwrap_or(false),
                overrides,
                name,
                host,
                path: prefix,
                upstream,
                auth,
                cors,
                security_headers: route.security_headers.unwrap_or(true),
                path_checks,
                pass_access_token,
                rate_limits: Vec::new(),
                policy,
                idp,
                acr_values,
                max_auth_age,
            });
        }
        out
    }

    /// `request_overrides`: only overrides the gateway knows how to judge.
    fn overrides(&mut self, list: Option<&S<Vec<S<String>>>>) -> Vec<crate::headers::Override> {
        use crate::headers::{Override, METHOD_OVERRIDES, METHOD_PARAMETER, PATH_OVERRIDES};
        let mut out: Vec<Override> = Vec::new();
        for name in list.iter().flat_map(|l| l.get_ref().iter()) {
            match Override::parse(name.get_ref()) {
                Some(o) if out.contains(&o) => self
                    .r
                    .error(name.span(), format!("{:?} is listed twice", name.get_ref())),
                Some(o) => out.push(o),
                None => self.r.error(
                    name.span(),
                    format!(
                        "unknown request override {:?}; known: {}, {}, {METHOD_PARAMETER}",
                        name.get_ref(),
                        METHOD_OVERRIDES.join(", "),
                        PATH_OVERRIDES.join(", ")
                    ),
                ),
            }
        }
        out
    }

    fn auth(&mut self, auth: &S<Vec<S<String>>>, available: Available) -> Vec<AuthMethod> {
        if auth.get_ref().is_empty() {
            self.r.error(
                auth.span(),
                "route auth must name at least one method; write [\"none\"] for a public route",
            );
        }
        let mut methods = Vec::new();
        for m in auth.get_ref() {
            match m.get_ref().as_str() {
                "none" => methods.push(AuthMethod::None),
                "bearer" if available.bearer => methods.push(AuthMethod::Bearer),
                "api_key" if available.api_key => methods.push(AuthMethod::ApiKey),
                "bearer" => self.r.error(
                    m.span(),
                    "auth method \"bearer\" needs at least one [[bearer]] issuer",
                ),
                "api_key" => self.r.error(
                    m.span(),
                    "auth method \"api_key\" needs at least one [[api_key]]",
                ),
                "session" if available.session => methods.push(AuthMethod::Session),
                "session" => self.r.error(
                    m.span(),
                    "auth method \"session\" needs at least one [[idp]] for browser login",
                ),
                other => self.r.error(
                    m.span(),
                    format!(
                        "unknown auth method {other:?} (expected session, bearer, api_key or none)"
                    ),
                ),
            }
        }
        if methods.contains(&AuthMethod::None) && auth.get_ref().len() > 1 {
            self.r.error(
                auth.span(),
                "auth \"none\" cannot be combined with other methods",
            );
        }
        methods
    }

    fn cors(&mut self, c: &S<file::Cors>) -> CorsConfig {
        let cors = c.get_ref();
        let allow_credentials = cors.allow_credentials.unwrap_or(false);
        let mut allowed_origins = Vec::new();
        for o in cors.allowed_origins.get_ref() {
            let Some(text) = self.string(o) else { continue };
            if text == "*" {
                if allow_credentials {
                    self.r.error(
                        o.span(),
                        "a wildcard origin cannot be combined with allow_credentials",
                    );
                }
            } else if !valid_origin(&text) {
                self.r.error(
                    o.span(),
                    format!(
                        "invalid CORS origin {text:?}: expected scheme://host[:port] with no path"
                    ),
                );
                continue;
            }
            allowed_origins.push(text.to_ascii_lowercase());
        }
        if cors.allowed_origins.get_ref().is_empty() {
            self.r
                .error(cors.allowed_origins.span(), "allowed_origins is empty");
        }
        let token_list = |l: &mut Self, list: &Option<Vec<S<String>>>, what: &str| {
            list.as_ref().map(|items| {
                items
                    .iter()
                    .filter_map(|i| {
                        let v = l.string(i)?;
                        if HeaderName::from_bytes(v.as_bytes()).is_err() && v != "*" {
                            l.r.error(i.span(), format!("invalid {what} {v:?}"));
                            return None;
                        }
                        Some(v)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        };
        let allowed_methods = token_list(self, &cors.allowed_methods, "method")
            .unwrap_or_else(|| "GET, HEAD, POST".to_string());
        let allowed_headers = token_list(self, &cors.allowed_headers, "header name");
        let expose_headers = token_list(self, &cors.expose_headers, "header name");
        let max_age = self.duration(cors.max_age.as_ref(), Duration::from_secs(600));
        CorsConfig {
            allowed_origins,
            allowed_methods,
            allowed_headers,
            expose_headers,
            allow_credentials,
            max_age,
        }
    }

    fn headers(&mut self, h: Option<&file::Headers>) -> HeadersConfig {
        let Some(h) = h else {
            return HeadersConfig {
                assertion_ttl: Duration::from_secs(60),
                ..HeadersConfig::default()
            };
        };
        let assertion_key = h.assertion_key.as_ref().and_then(|k| {
            let path = self.readable_file(k, "assertion key")?;
            let pem = std::fs::read(&path).unwrap_or_default();
            let p256 = pingora::tls::pkey::PKey::private_key_from_pem(&pem)
                .ok()
                .and_then(|key| key.ec_key().ok())
                .and_then(|ec| ec.group().curve_name())
                == Some(pingora::tls::nid::Nid::X9_62_PRIME256V1);
            if !p256 {
                self.r.error(
                    k.span(),
                    format!(
                        "assertion key {} must be a PEM P-256 (ES256) private key",
                        path.display()
                    ),
                );
                return None;
            }
            Some(path)
        });
        let assertion_ttl = self.duration(h.assertion_ttl.as_ref(), Duration::from_secs(60));
        if let Some(v) = &h.assertion_ttl {
            if assertion_ttl < Duration::from_secs(10) || assertion_ttl > Duration::from_secs(600) {
                self.r
                    .error(v.span(), "assertion_ttl must be between 10s and 10m");
            }
        }
        let mut claims = Vec::new();
        for (name, claim) in &h.claims {
            match HeaderName::from_bytes(name.get_ref().as_bytes()) {
                Ok(header) => {
                    if crate::headers::is_reserved_hop_header(&header) {
                        self.r.error(
                            name.span(),
                            format!("{:?} cannot carry a claim", name.get_ref()),
                        );
                    }
                    claims.push((header, claim.get_ref().clone()));
                }
                Err(_) => self.r.error(
                    name.span(),
                    format!("invalid header name {:?}", name.get_ref()),
                ),
            }
        }
        HeadersConfig {
            assertion: h.assertion.unwrap_or(false),
            assertion_key,
            assertion_ttl,
            claims,
            qualify_user: false,
            qualify_user_set: h.qualify_user.is_some(),
        }
    }

    fn security_headers(&mut self, s: Option<&file::SecurityHeaders>) -> SecurityHeadersConfig {
        let mut opt = |v: Option<&S<String>>, default: &str| -> Option<String> {
            match v {
                None => Some(default.to_string()),
                Some(v) => {
                    let text = self.string(v)?;
                    if text.is_empty() {
                        return None; // "" switches the header off
                    }
                    if http::HeaderValue::from_str(&text).is_err() {
                        self.r.error(v.span(), "not a valid header value");
                        return None;
                    }
                    Some(text)
                }
            }
        };
        SecurityHeadersConfig {
            hsts: opt(s.and_then(|s| s.hsts.as_ref()), "max-age=31536000; includeSubDomains"),
            frame_options: opt(s.and_then(|s| s.frame_options.as_ref()), "DENY"),
            referrer_policy: opt(
                s.and_then(|s| s.referrer_policy.as_ref()),
                "strict-origin-when-cross-origin",
            ),
            content_security_policy: opt(
                s.and_then(|s| s.content_security_policy.as_ref()),
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            )
            .unwrap_or_else(|| "default-src 'none'".to_string()),
            content_type_options: s.and_then(|s| s.content_type_options).unwrap_or(true),
        }
    }
}

/// Which authentication methods the config can serve.
#[derive(Clone, Copy)]
struct Available {
    bearer: bool,
    api_key: bool,
    session: bool,
}

/// Issuers, key sets and token endpoints must be `https`, except on loopback.
pub fn check_secure_url(text: &str) -> Result<(), &'static str> {
    let url = reqwest::Url::parse(text).map_err(|_| "is not an absolute URL")?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err("must use https (plain http is only accepted on loopback)")
            }
        }
        _ => Err("must be an https URL"),
    }
}

fn first_ssl_reason(e: &pingora::tls::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_string))
        .unwrap_or_else(|| "no PEM data found".to_string())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_plain_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')
}

/// A DNS name or IP literal, no port; `*.example.com` is not supported (exact hosts only).
pub fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn valid_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https") || rest.contains('/') || rest.is_empty() {
        return false;
    }
    let host = match rest.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') || rest.starts_with('[') => {
            if port.parse::<u16>().is_err() {
                return rest.starts_with('[') && rest.ends_with(']') && valid_host(rest);
            }
            h
        }
        _ => rest,
    };
    valid_host(&host.to_ascii_lowercase())
}

/// `HOST:PORT`, `[V6]:PORT`; names are kept for asynchronous resolution.
fn parse_server_addr(text: &str) -> Option<ServerAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(ServerAddr {
            host: addr.ip().to_string(),
            port: addr.port(),
        });
    }
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = host.to_ascii_lowercase();
    (valid_host(&host) && !host.contains(':')).then_some(ServerAddr { host, port })
}

/// The canonical form of a route prefix, or None when it is not already a normalized path.
fn route_prefix(path: &str) -> Option<String> {
    if path == "/" {
        return Some("/".into());
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let ok = trimmed.starts_with('/')
        && trimmed[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && !seg.contains(['%', '\\', ';', '?', '#'])
                && seg.chars().all(|c| c.is_ascii_graphic())
        });
    ok.then(|| trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert_eq!(
            parse_server_addr("10.0.0.1:80"),
            Some(ServerAddr {
                host: "10.0.0.1".into(),
                port: 80
            })
        );
        assert_eq!(
            parse_server_addr("[::1]:8080"),
            Some(ServerAddr {
                host: "::1".into(),
                port: 8080
            })
        );
        assert_eq!(
            parse_server_addr("App.internal:443"),
            Some(ServerAddr {
                host: "app.internal".into(),
                port: 443
            })
        );
        for bad in ["app", "app:0", "app:x", ":80", "http://app:80", "a b:80"] {
            assert_eq!(parse_server_addr(bad), None, "{bad}");
        }
    }

    #[test]
    fn route_prefixes() {
        assert_eq!(route_prefix("/"), Some("/".into()));
        assert_eq!(route_prefix("/api/"), Some("/api".into()));
        assert_eq!(route_prefix("/api"), Some("/api".into()));
        for bad in ["", "api", "//", "/a//b", "/a/../b", "/a/%2e", "/a b"] {
            assert_eq!(route_prefix(bad), None, "{bad}");
        }
    }

    #[test]
    fn origins() {
        assert!(valid_origin("https://app.example.com"));
        assert!(valid_origin("http://localhost:3000"));
        assert!(!valid_origin("https://app.example.com/"));
        assert!(!valid_origin("ftp://x"));
        assert!(!valid_origin("app.example.com"));
    }
}
