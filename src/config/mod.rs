//! `gateway.toml` → one validated internal [`Config`].
//!
//! Loading happens in two steps, as in River: [`file`] is the outside format, parsed by
//! serde with unknown keys refused; [`lower`] checks every value against the rest and
//! builds the internal structs the proxy uses. Every problem is reported with its
//! `file:line:col`, all at once, and a config with any problem is refused whole.

mod file;
mod lower;
mod show;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;

pub use crate::diag::{ConfigError, Diagnostic};
pub use crate::identity::AuthMethod;
pub use lower::{check_secure_url, valid_host};
pub use values::parse_duration;

use crate::normalize::NormalizeOptions;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from; policy and certificate paths are relative to its folder.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub ext_authz: ExtAuthzConfig,
    pub log: LogConfig,
    pub tracing: TracingConfig,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// In file order; the route table decides precedence.
    pub routes: Vec<RouteConfig>,
    pub headers: HeadersConfig,
    pub security_headers: SecurityHeadersConfig,
    /// Trusted JWT issuers, in file order.
    pub bearer: Vec<BearerConfig>,
    pub api_keys: Vec<ApiKeyConfig>,
    /// `[[rate_limit]]` in file order; routes refer to them by index.
    pub rate_limits: Vec<RateLimitConfig>,
    pub rate_limit_store: RateLimitStoreConfig,
    pub auth_failure_limit: AuthFailureLimitConfig,
    /// Per client IP, on the gateway's own endpoints (login, callback, ...).
    pub reserved_limit: RateLimitConfig,
    pub session: SessionConfig,
    /// OIDC providers for browser login, in file order; routes refer to them by index.
    pub idps: Vec<IdpConfig>,
    /// The development provider of `gatehouse demo` (refused by `gatehouse run`).
    pub dev_idp: Option<DevIdpConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DevIdpConfig {
    pub listen: SocketAddr,
    pub users: Vec<DevUser>,
    pub access_token_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DevUser {
    pub name: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
}

/// `[session]`: where browser sessions live and how long.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    pub store: StoreKind,
    /// Without the `__Host-` prefix, which is added on TLS.
    pub cookie_name: String,
    /// Keys token encryption at rest; None: a random secret for this process (memory only).
    pub secret: Option<Vec<u8>>,
    /// The secret before the last rotation: tokens sealed with it still open, and are
    /// sealed again with `secret` when the session is next written.
    pub secret_previous: Option<Vec<u8>>,
    pub max_lifetime: Duration,
    pub idle_timeout: Duration,
    pub same_site: SameSite,
    /// Keep logins working from memory while Redis is down (`fallback = "memory"`).
    pub fallback_memory: bool,
    pub timeout: Duration,
    pub max_sessions: u64,
    /// Refresh access tokens this long before they expire (capped at a fifth of their life).
    pub refresh_before: Duration,
}

impl SessionConfig {
    /// Equal but for the secrets: a reload that only rotates them keeps the store (and the
    /// sessions of the memory store).
    pub fn same_but_secrets(&self, other: &SessionConfig) -> bool {
        let without = |c: &SessionConfig| SessionConfig {
            secret: None,
            secret_previous: None,
            ..c.clone()
        };
        without(self) == without(other)
    }

    /// A memory store and the `gatehouse` cookie name: the cookie tests and fuzz target.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn memory_for_tests() -> SessionConfig {
        SessionConfig {
            store: StoreKind::Memory,
            cookie_name: "gatehouse".into(),
            secret: None,
            secret_previous: None,
            max_lifetime: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(600),
            same_site: SameSite::Lax,
            fallback_memory: false,
            timeout: Duration::from_millis(500),
            max_sessions: 10,
            refresh_before: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`
    Basic,
    /// `client_secret_post`
    Post,
    /// A public client: PKCE only.
    None,
    /// `private_key_jwt` (RFC 7523): a short-lived JWT signed with [`IdpConfig::client_key`].
    PrivateKeyJwt,
    /// `tls_client_auth` (RFC 8705): the client certificate of [`IdpConfig::tls`] on the
    /// connection.
    TlsClientAuth,
}

/// TLS towards an IdP: a CA of its own for its certificate, and the client certificate
/// presented on every connection to it (`tls_client_auth`). PEM as read at load.
#[derive(Clone, PartialEq, Default)]
pub struct IdpTls {
    pub ca_pem: Option<Vec<u8>>,
    /// Certificate chain, then the PKCS#8 private key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for IdpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

/// The key a client signs its `private_key_jwt` assertions with.
#[derive(Clone, PartialEq)]
pub struct ClientKey {
    pub path: PathBuf,
    /// The PEM as read at load (a parsed key is no `PartialEq`; the provider parses it).
    pub pem: Vec<u8>,
    pub alg: jsonwebtoken::Algorithm,
    pub kid: Option<String>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("path", &self.path)
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// One `[[idp]]`: an OpenID provider for browser login.
#[derive(Debug, Clone, PartialEq)]
pub struct IdpConfig {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_auth: ClientAuth,
    /// With [`ClientAuth::PrivateKeyJwt`].
    pub client_key: Option<ClientKey>,
    pub tls: IdpTls,
    pub scopes: Vec<String>,
    pub claims: ClaimNames,
    pub extra_auth_params: Vec<(String, String)>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub leeway: Duration,
    pub post_logout_redirect_uri: Option<String>,
    /// Identities from it go upstream as `<issuer>#<subject>` ([`HeadersConfig::qualify_user`]).
    pub qualify_subject: bool,
    pub userinfo: Userinfo,
    pub userinfo_on_error: UserinfoOnError,
    /// RFC 9126: authorization requests pushed to the provider first (also when its
    /// discovery says it requires them).
    pub par: bool,
    /// `groups_source = "graph"`: Microsoft Graph's base URL, asked for the groups of a user
    /// whose Entra ID token had no room for them.
    pub graph: Option<String>,
    /// The sign-in page's label for this provider (by default its name).
    pub display_name: String,
    /// An image beside the label on the sign-in page (absolute http(s) URL).
    pub logo_url: Option<String>,
    /// Email domains (lowercase) whose `login_hint` goes straight to this provider.
    pub domains: Vec<String>,
}

/// When a login asks the IdP's userinfo endpoint for claims (OIDC Core §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Userinfo {
    /// When the ID token lacks the groups or the email claim this IdP's config reads.
    Auto,
    Always,
    Never,
}

/// What a login does when the userinfo endpoint cannot answer (or answers wrongly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserinfoOnError {
    /// The login fails (502): nobody is let in with fewer claims than the config asked for.
    Fail,
    /// The login goes on with the ID token's claims alone (logged and counted).
    Continue,
}

/// What a limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    ClientIp,
    Subject,
    ApiKey,
    Header(HeaderName),
    Route,
}

/// `count` requests per `period`, with bursts of up to `burst` at once (GCRA).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub name: String,
    pub key: LimitKey,
    pub count: u64,
    pub period: Duration,
    pub burst: u64,
    /// IPv6 clients are counted by this prefix (128: each address on its own).
    pub ipv6_prefix: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreKind {
    Memory,
    /// Where the store's Redis is: its own `redis_url`, else `[redis]`.
    Redis(Box<crate::redis_conn::RedisTarget>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitStoreConfig {
    pub kind: StoreKind,
    /// When the store cannot answer: let requests through (true) or refuse them.
    pub fail_open: bool,
    pub timeout: Duration,
    /// Send `RateLimit` on allowed responses too (429s always carry it).
    pub response_headers: bool,
    pub max_keys: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthFailureLimitConfig {
    pub enabled: bool,
    pub max_failures: u64,
    pub window: Duration,
    pub cooldown: Duration,
    /// IPv6 clients are counted by this prefix (128: each address on its own).
    pub ipv6_prefix: u8,
    /// Clients remembered at most; the oldest that is not locked out goes first.
    pub max_clients: usize,
}

/// One trusted JWT issuer (`[[bearer]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct BearerConfig {
    /// Exactly as the tokens' `iss` must say it.
    pub issuer: String,
    pub audiences: Vec<String>,
    /// None: discovered from `issuer` + `/.well-known/openid-configuration`.
    pub jwks_uri: Option<String>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub leeway: Duration,
    /// Required `typ` header (e.g. `at+jwt`, RFC 9068); compared case-insensitively,
    /// with or without the `application/` prefix.
    pub token_type: Option<String>,
    pub claims: ClaimNames,
    pub introspection: Option<IntrospectionConfig>,
    pub unknown_kid_refetch_interval: Duration,
    /// Identities from it go upstream as `<issuer>#<subject>` ([`HeadersConfig::qualify_user`]).
    pub qualify_subject: bool,
}

/// Where the identity is found in a token's claims (dotted paths reach nested claims), and
/// how far its email is believed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimNames {
    pub subject: String,
    pub email: String,
    pub username: String,
    pub groups: String,
    pub email_verified: EmailVerified,
}

/// When the email claim is part of the identity, by the token's `email_verified`. An email
/// left out is in no header, assertion, binding, condition or userinfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailVerified {
    /// Only with `email_verified: true` (the default: a missing claim proves nothing).
    Required,
    /// Unless `email_verified` is there and not true (providers that never send it).
    IfPresent,
    /// Always, even when the provider says it did not verify it.
    Ignore,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IntrospectionConfig {
    pub endpoint: String,
    pub client_id: String,
    pub client_secret: String,
}

/// One accepted API key (`[[api_key]]`); only its SHA-256 is known.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyConfig {
    pub name: String,
    pub hash: [u8; 32],
    pub subject: String,
    pub groups: Vec<String>,
    pub expires: Option<std::time::SystemTime>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub tls: Option<TlsListenerConfig>,
    pub public_url: Option<String>,
    pub threads: usize,
    pub trusted_proxies: Vec<IpNet>,
    /// Lower-case host names without port; empty means any host.
    pub allowed_hosts: Vec<String>,
    pub reserved_prefix: String,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// Accept HTTP/2 over cleartext (prior knowledge) on the plain listeners.
    pub h2c: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsListenerConfig {
    pub listen: Vec<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The session admin API's bearer token; without one the API is off (404).
    pub token: Option<String>,
    /// Paths answered without the token when one is set (`/healthz`, `/readyz`, `/metrics`
    /// by default): what probes and Prometheus scrape.
    pub open: Vec<String>,
}

/// `[ext_authz]`: the gRPC listener Envoy's ext_authz filter asks (`Authorization/Check`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtAuthzConfig {
    /// HTTP/2, plaintext unless `grpc_tls`; answers only peers in `server.trusted_proxies`.
    pub grpc_listen: Option<SocketAddr>,
    pub grpc_tls: Option<GrpcTlsConfig>,
}

/// `[ext_authz.grpc_tls]`: TLS of the Check listener, and (with `client_ca`) the CA whose
/// client certificate Envoy must present.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// `[tracing]`: OpenTelemetry traces, exported over OTLP/HTTP; off without an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Where spans go: OTLP/HTTP's full URL (`.../v1/traces`), or the gRPC collector's
    /// base URL.
    pub otlp_endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    /// Of new traces (no sampled parent); a client's `traceparent` decides for its own.
    pub sampling_ratio: f64,
    pub service_name: String,
    pub resource_attributes: BTreeMap<String, String>,
    /// How long the exporter waits for more spans before it sends a batch.
    pub batch_delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`: POST of the protobuf to the endpoint.
    HttpProtobuf,
    /// `grpc`: `TraceService/Export` over HTTP/2 (cleartext, prior knowledge).
    Grpc,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            protocol: OtlpProtocol::HttpProtobuf,
            sampling_ratio: 1.0,
            service_name: "gatehouse".to_string(),
            resource_attributes: BTreeMap::new(),
            batch_delay: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub audit: bool,
    pub access_log: bool,
}

/// `host:port` as written; names are resolved asynchronously at run time, never here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub servers: Vec<ServerAddr>,
    pub tls: bool,
    pub sni: String,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub health_check_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    /// Lower-case, without port.
    pub host: Option<String>,
    /// Without a trailing slash, except the root `/`; matches whole segments.
    pub path: String,
    pub upstream: String,
    pub auth: Vec<AuthMethod>,
    pub cors: Option<CorsConfig>,
    pub security_headers: bool,
    pub path_checks: NormalizeOptions,
    /// Forward the client's bearer token upstream in `Authorization` (stripped otherwise).
    pub pass_access_token: bool,
    /// Bearer tokens must be DPoP-bound (RFC 9449), each request with its proof.
    pub require_dpop: bool,
    /// RFC 9449 §9: DPoP proofs on this route carry a nonce the gateway handed out.
    pub dpop_nonce: bool,
    /// Indices into `Config::rate_limits`; every one must allow the request.
    pub rate_limits: Vec<usize>,
    /// The authorization policy (`policy = "policies/x.toml"`), compiled.
    pub policy: Option<std::sync::Arc<crate::authz::Policy>>,
    /// Indices into `Config::idps` for session routes: the provider, or (several) those a
    /// sign-in page offers; a session from any of them is accepted.
    pub idps: Vec<usize>,
    /// The email domain of this route's users (lowercase), when the request names none:
    /// sent as `domain_hint` and matched against `idp_domains`.
    pub domain_hint: Option<String>,
    /// Step-up: the session's `acr` must be one of these (sent as `acr_values` on login).
    pub acr_values: Vec<String>,
    /// Step-up: the login (`auth_time`) must be at most this old (sent as `max_age`).
    pub max_auth_age: Option<Duration>,
    /// Let client headers with `_` in their names through (protected names never pass).
    pub underscores_in_headers: bool,
    /// Method and path overrides the upstream may receive; the policy judges their values.
    pub overrides: Vec<crate::headers::Override>,
}

impl RouteConfig {
    /// A plain route for unit tests.
    #[cfg(test)]
    pub(crate) fn example(name: &str, path: &str) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            host: None,
            path: path.into(),
            upstream: "u".into(),
            auth: vec![AuthMethod::None],
            cors: None,
            security_headers: true,
            path_checks: Default::default(),
            pass_access_token: false,
            require_dpop: false,
            dpop_nonce: false,
            rate_limits: Vec::new(),
            policy: None,
            idps: Vec::new(),
            domain_hint: None,
            acr_values: Vec::new(),
            max_auth_age: None,
            underscores_in_headers: false,
            overrides: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CorsConfig {
    /// Exact origins (`scheme://host[:port]`), or `*` for any origin without credentials.
    pub allowed_origins: Vec<String>,
    pub allowed_methods: String,
    pub allowed_headers: Option<String>,
    pub expose_headers: Option<String>,
    pub allow_credentials: bool,
    pub max_age: Duration,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeadersConfig {
    pub assertion: bool,
    /// PEM P-256 private key shared by instances; None: generated at start.
    pub assertion_key: Option<PathBuf>,
    pub assertion_ttl: Duration,
    /// Extra identity headers filled from claims; stripped from clients like the fixed ones.
    pub claims: Vec<(HeaderName, String)>,
    /// `X-Auth-Request-User` (and the assertion's `sub`) as `<issuer>#<subject>`, with
    /// `X-Auth-Request-Issuer`: equal subjects of two issuers are two people. Default: when
    /// `[[idp]]` and `[[bearer]]` name more than one issuer.
    pub qualify_user: bool,
    /// Whether `qualify_user` was set in the file (`false` with several issuers is warned of).
    pub qualify_user_set: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecurityHeadersConfig {
    pub hsts: Option<String>,
    pub content_type_options: bool,
    pub frame_options: Option<String>,
    pub referrer_policy: Option<String>,
    pub content_security_policy: String,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(vec![Diagnostic {
                file: path.to_path_buf(),
                line: 0,
                col: 0,
                message: format!("cannot read config: {e}"),
            }])
        })?;
        Self::from_str(path, &text, &|name| std::env::var(name).ok())
    }

    /// Validates config text as if it were read from `path` (for tests and `check`).
    pub fn from_str(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        lower::lower(path, text, env)
    }

    /// The distinct token issuers of `[[idp]]` and `[[bearer]]`.
    pub fn issuers(&self) -> Vec<&str> {
        let mut issuers: Vec<&str> = (self.bearer.iter().map(|b| b.issuer.as_str()))
            .chain(self.idps.iter().map(|i| i.issuer.as_str()))
            .collect();
        issuers.sort_unstable();
        issuers.dedup();
        issuers
    }

    /// What `gatehouse check` warns about: valid, but probably not what was meant.
    pub fn warnings(&self) -> Vec<Diagnostic> {
        let issuers = self.issuers();
        if issuers.len() < 2 {
            return Vec::new();
        }
        let mut warnings = Vec::new();
        if self.headers.qualify_user_set && !self.headers.qualify_user {
            warnings.push(Diagnostic {
                file: self.source.clone(),
                line: 0,
                col: 0,
                message: format!(
                    "warning: [headers] qualify_user = false with {} issuers: the upstream cannot tell their equal subjects apart",
                    issuers.len()
                ),
            });
        }
        let mut seen = Vec::new();
        for policy in self.routes.iter().filter_map(|r| r.policy.as_ref()) {
            if seen.contains(&&policy.source) {
                continue;
            }
            seen.push(&policy.source);
            for (line, col, role) in policy.subject_bindings_without_issuers() {
                warnings.push(Diagnostic {
                    file: policy.source.clone(),
                    line,
                    col,
                    message: format!(
                        "warning: binding gives role {role:?} by subject without naming `issuers`; with {} issuers configured, another issuer's equal `sub` gets it too",
                        issuers.len()
                    ),
                });
            }
        }
        warnings
    }

    /// Everything that only takes effect when the process restarts (listeners, threads).
    pub fn restart_only_differences(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.server.listen != new.server.listen {
            changed.push("server.listen");
        }
        if self.server.tls != new.server.tls {
            changed.push("server.tls");
        }
        if self.server.threads != new.server.threads {
            changed.push("server.threads");
        }
        if self.server.h2c != new.server.h2c {
            changed.push("server.h2c");
        }
        if self.admin.listen != new.admin.listen {
            changed.push("admin.listen");
        }
        if self.ext_authz != new.ext_authz {
            changed.push("ext_authz");
        }
        if self.tracing != new.tracing {
            changed.push("tracing");
        }
        if self.log.format != new.log.format || self.log.level != new.log.level {
            changed.push("log");
        }
        changed
    }
}
