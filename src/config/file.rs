//! The outside format: what ops write in `gateway.toml`, exactly as written.
//!
//! Every struct rejects unknown keys, and every value that lowering may still refuse is
//! `Spanned`, so that its error can point at the line it came from. Nothing here is
//! interpreted; `super::lower` turns it into the validated internal `Config`.
//!
//! A secret may be written inline (`secret`) or as a path to a file holding it
//! (`secret_file`), never both; the `*_file` keys are read by `super::lower`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub server: S<Server>,
    pub admin: Option<Admin>,
    pub ext_authz: Option<ExtAuthz>,
    pub log: Option<Log>,
    pub tracing: Option<S<Tracing>>,
    #[serde(default)]
    pub upstream: BTreeMap<S<String>, S<Upstream>>,
    #[serde(default)]
    pub route: Vec<S<Route>>,
    pub headers: Option<Headers>,
    pub security_headers: Option<SecurityHeaders>,
    pub session: Option<S<Session>>,
    #[serde(default)]
    pub idp: Vec<S<Idp>>,
    #[serde(default)]
    pub bearer: Vec<S<Bearer>>,
    #[serde(default)]
    pub api_key: Vec<S<ApiKey>>,
    #[serde(default)]
    pub rate_limit: Vec<S<RateLimit>>,
    pub rate_limit_store: Option<S<RateLimitStore>>,
    pub redis: Option<S<Redis>>,
    pub auth_failure_limit: Option<S<AuthFailureLimit>>,
    pub reserved_limit: Option<S<ReservedLimit>>,
    pub dev_idp: Option<S<DevIdp>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevIdp {
    pub listen: S<String>,
    pub users: S<Vec<S<DevUser>>>,
    pub access_token_ttl: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevUser {
    pub name: S<String>,
    pub email: Option<S<String>>,
    pub groups: Option<Vec<S<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub store: Option<S<String>>,
    pub redis_url: Option<S<String>>,
    pub redis_url_file: Option<S<String>>,
    pub cookie_name: Option<S<String>>,
    pub secret: Option<S<String>>,
    pub secret_file: Option<S<String>>,
    /// The secret before the last rotation: sessions sealed with it still open.
    pub secret_previous: Option<S<String>>,
    pub secret_previous_file: Option<S<String>>,
    pub max_lifetime: Option<S<String>>,
    pub idle_timeout: Option<S<String>>,
    pub same_site: Option<S<String>>,
    pub fallback: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub max_sessions: Option<S<i64>>,
    pub refresh_before: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Idp {
    pub name: S<String>,
    pub issuer: S<String>,
    pub client_id: S<String>,
    pub client_secret: Option<S<String>>,
    pub client_secret_file: Option<S<String>>,
    pub client_auth: Option<S<String>>,
    pub client_key_file: Option<S<String>>,
    pub client_key_id: Option<S<String>>,
    pub client_key_alg: Option<S<String>>,
    pub tls_client_cert_file: Option<S<String>>,
    pub tls_client_key_file: Option<S<String>>,
    pub tls_ca_file: Option<S<String>>,
    pub scopes: Option<S<Vec<S<String>>>>,
    pub subject_claim: Option<S<String>>,
    pub email_claim: Option<S<String>>,
    pub username_claim: Option<S<String>>,
    pub groups_claim: Option<S<String>>,
    pub email_verified: Option<S<String>>,
    #[serde(default)]
    pub extra_auth_params: BTreeMap<S<String>, S<String>>,
    pub algorithms: Option<S<Vec<S<String>>>>,
    pub leeway: Option<S<String>>,
    pub post_logout_redirect_uri: Option<S<String>>,
    pub userinfo: Option<S<String>>,
    pub userinfo_on_error: Option<S<String>>,
    pub par: Option<S<bool>>,
    pub groups_source: Option<S<String>>,
    pub graph_url: Option<S<String>>,
    pub display_name: Option<S<String>>,
    pub logo_url: Option<S<String>>,
    pub idp_domains: Option<S<Vec<S<String>>>>,
}

/// A route's `idp`: one provider's name, or the list a sign-in page offers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum IdpNames {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub name: S<String>,
    pub key: S<String>,
    pub limit: S<String>,
    pub burst: Option<S<i64>>,
    pub ipv6_prefix: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitStore {
    pub kind: Option<S<String>>,
    pub redis_url: Option<S<String>>,
    pub redis_url_file: Option<S<String>>,
    pub on_error: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub response_headers: Option<bool>,
    pub max_keys: Option<S<i64>>,
}

/// The Redis of both stores: a URL, or Sentinels and a master name; TLS files; credentials.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    pub url: Option<S<String>>,
    pub url_file: Option<S<String>>,
    pub sentinels: Option<S<Vec<S<String>>>>,
    pub master_name: Option<S<String>>,
    pub cluster: Option<S<Vec<S<String>>>>,
    pub db: Option<S<i64>>,
    pub tls: Option<S<bool>>,
    pub username: Option<S<String>>,
    pub password: Option<S<String>>,
    pub password_file: Option<S<String>>,
    pub sentinel_password: Option<S<String>>,
    pub sentinel_password_file: Option<S<String>>,
    pub ca_file: Option<S<String>>,
    pub cert_file: Option<S<String>>,
    pub key_file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFailureLimit {
    pub enabled: Option<bool>,
    pub max_failures: Option<S<i64>>,
    pub window: Option<S<String>>,
    pub cooldown: Option<S<String>>,
    pub ipv6_prefix: Option<S<i64>>,
    pub max_clients: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservedLimit {
    pub limit: Option<S<String>>,
    pub burst: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Option<S<Vec<S<String>>>>,
    pub tls: Option<S<Tls>>,
    pub public_url: Option<S<String>>,
    pub threads: Option<S<i64>>,
    pub trusted_proxies: Option<Vec<S<String>>>,
    pub allowed_hosts: Option<Vec<S<String>>>,
    pub reserved_prefix: Option<S<String>>,
    pub shutdown_timeout: Option<S<String>>,
    pub h2c: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub listen: S<Vec<S<String>>>,
    pub cert: S<String>,
    pub key: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: Option<S<String>>,
    /// The bearer token of the session admin API (`Authorization: Bearer ...`).
    pub token: Option<S<String>>,
    pub token_file: Option<S<String>>,
    /// Paths served without the token.
    pub open: Option<S<Vec<S<String>>>>,
}

/// `[ext_authz]`: Envoy's ext_authz over gRPC (the HTTP mode needs no section).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthz {
    pub grpc_listen: Option<S<String>>,
    pub grpc_tls: Option<S<GrpcTls>>,
}

/// `[tracing]`: OpenTelemetry traces over OTLP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    pub otlp_endpoint: Option<S<String>>,
    pub protocol: Option<S<String>>,
    pub sampling_ratio: Option<S<f64>>,
    pub service_name: Option<S<String>>,
    #[serde(default)]
    pub resource_attributes: BTreeMap<S<String>, S<String>>,
    pub batch_delay: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcTls {
    pub cert: S<String>,
    pub key: S<String>,
    pub client_ca: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: Option<S<String>>,
    pub level: Option<S<String>>,
    pub audit: Option<bool>,
    pub access_log: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub servers: S<Vec<S<String>>>,
    pub tls: Option<bool>,
    pub sni: Option<S<String>>,
    pub ca: Option<S<String>>,
    pub client_cert: Option<S<String>>,
    pub client_key: Option<S<String>>,
    pub connect_timeout: Option<S<String>>,
    pub read_timeout: Option<S<String>>,
    pub write_timeout: Option<S<String>>,
    pub health_check_interval: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: S<String>,
    pub host: Option<S<String>>,
    pub path: S<String>,
    pub upstream: S<String>,
    pub auth: S<Vec<S<String>>>,
    pub cors: Option<S<Cors>>,
    pub security_headers: Option<bool>,
    pub path_checks: Option<PathChecks>,
    pub idp: Option<S<IdpNames>>,
    pub domain_hint: Option<S<String>>,
    pub policy: Option<S<String>>,
    pub rate_limit: Option<S<Vec<S<String>>>>,
    pub pass_access_token: Option<bool>,
    pub require_dpop: Option<S<bool>>,
    pub dpop_nonce: Option<S<bool>>,
    pub acr_values: Option<S<Vec<S<String>>>>,
    pub max_auth_age: Option<S<String>>,
    pub underscores_in_headers: Option<bool>,
    pub request_overrides: Option<S<Vec<S<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bearer {
    pub issuer: S<String>,
    pub audiences: S<Vec<S<String>>>,
    pub jwks_uri: Option<S<String>>,
    pub algorithms: Option<S<Vec<S<String>>>>,
    pub leeway: Option<S<String>>,
    pub token_type: Option<S<String>>,
    pub subject_claim: Option<S<String>>,
    pub email_claim: Option<S<String>>,
    pub username_claim: Option<S<String>>,
    pub groups_claim: Option<S<String>>,
    pub email_verified: Option<S<String>>,
    pub introspection_endpoint: Option<S<String>>,
    pub introspection_client_id: Option<S<String>>,
    pub introspection_client_secret: Option<S<String>>,
    pub introspection_client_secret_file: Option<S<String>>,
    pub unknown_kid_refetch_interval: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub name: S<String>,
    pub hash: Option<S<String>>,
    pub hash_file: Option<S<String>>,
    pub subject: S<String>,
    pub groups: Option<Vec<S<String>>>,
    pub expires: Option<S<String>>,
}

/// Opt-outs of the strict path checks, for legacy apps that really use such paths.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathChecks {
    pub allow_encoded_slash: Option<bool>,
    pub allow_backslash: Option<bool>,
    pub allow_semicolon: Option<bool>,
    pub allow_double_encoding: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    pub allowed_origins: S<Vec<S<String>>>,
    pub allowed_methods: Option<Vec<S<String>>>,
    pub allowed_headers: Option<Vec<S<String>>>,
    pub expose_headers: Option<Vec<S<String>>>,
    pub allow_credentials: Option<bool>,
    pub max_age: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    pub assertion: Option<bool>,
    pub qualify_user: Option<bool>,
    pub assertion_key: Option<S<String>>,
    pub assertion_ttl: Option<S<String>>,
    #[serde(default)]
    pub claims: BTreeMap<S<String>, S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeaders {
    pub hsts: Option<S<String>>,
    pub content_type_options: Option<bool>,
    pub frame_options: Option<S<String>>,
    pub referrer_policy: Option<S<String>>,
    pub content_security_policy: Option<S<String>>,
}
