//! One OpenID provider (`[[idp]]`) as the gateway's login flow sees it: discovery, the
//! authorization request, the token endpoint (code and refresh grants), and validation of
//! ID tokens and back-channel logout tokens against its JWKS. The key handling is the
//! bearer issuers' own ([`KeyStore`]): cached keys, one rate-limited refetch for an unknown
//! `kid`, the last good keys kept through an IdP outage, an algorithm allowlist.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::authn::bearer::{self, BearerAuth};
use crate::authn::fetch;
use crate::authn::AuthFailure;
use crate::config::{BearerConfig, ClientAuth, IdpConfig};
use crate::identity::{AuthMethod, Identity};
use crate::metrics::Metrics;

/// What discovery says about the provider.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub end_session_endpoint: Option<String>,
    /// RFC 9207: the provider puts `iss` in authorization responses.
    pub iss_parameter_supported: bool,
}

/// The tokens of a successful token-endpoint answer.
#[derive(Debug)]
pub struct Tokens {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    pub expires_in: Option<u64>,
}

/// Why a token-endpoint call failed: `label` is bounded (metrics), `detail` goes to logs.
#[derive(Debug)]
pub struct TokenError {
    pub label: &'static str,
    pub detail: String,
}

const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Discovery that failed is tried again this often (by the supervisor and by logins).
const REDISCOVER_AFTER: Duration = Duration::from_secs(2);

pub struct Provider {
    pub config: IdpConfig,
    metadata: ArcSwapOption<Metadata>,
    /// The provider's keys, checked with the bearer machinery (one issuer: this IdP,
    /// audience: our client id).
    keys: BearerAuth,
    client: reqwest::Client,
    discovering: tokio::sync::Mutex<Option<Instant>>,
}

/// What a valid back-channel logout token says.
#[derive(Debug)]
pub struct LogoutToken {
    pub sid: Option<String>,
    pub sub: Option<String>,
    /// Its unique id, by which a replay is recognised.
    pub jti: String,
    /// Its `exp`, Unix seconds: until then (and the leeway) it could be presented again.
    pub expires_at: u64,
}

pub use crate::authn::bearer::unix_now;

impl Provider {
    pub fn new(config: IdpConfig, metrics: Arc<Metrics>) -> Provider {
        let bearer_config = BearerConfig {
            issuer: config.issuer.clone(),
            audiences: vec![config.client_id.clone()],
            jwks_uri: None,
            algorithms: config.algorithms.clone(),
            leeway: config.leeway,
            token_type: None,
            claims: config.claims.clone(),
            introspection: None,
            unknown_kid_refetch_interval: Duration::from_secs(10),
            qualify_subject: config.qualify_subject,
        };
        Provider {
            keys: BearerAuth::without_keys(vec![bearer_config], metrics),
            config,
            metadata: ArcSwapOption::empty(),
            client: fetch::client(),
            discovering: tokio::sync::Mutex::new(None),
        }
    }

    pub fn metadata(&self) -> Option<Arc<Metadata>> {
        self.metadata.load_full()
    }

    /// Discovered and holding keys: logins can start and finish.
    pub fn ready(&self) -> bool {
        self.metadata.load().is_some() && self.keys.issuers[0].has_keys()
    }

    /// Discovery, then the JWKS. Failures leave the provider unready and are retried.
    pub async fn discover(&self) -> Result<(), String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let doc =
            crate::otel::outbound("oidc_discovery", &url, fetch::get_json(&self.client, &url))
                .await?
                .body;
        let text = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_string);
        let issuer = text("issuer").unwrap_or_default();
        if issuer != self.config.issuer {
            return Err(format!(
                "discovery at {url} names issuer {issuer:?}, not the configured {:?}",
                self.config.issuer
            ));
        }
        let endpoint = |name: &str| -> Result<String, String> {
            let value = text(name).ok_or_else(|| format!("discovery at {url} has no {name}"))?;
            crate::config::check_secure_url(&value).map_err(|e| format!("{name} {value:?} {e}"))?;
            Ok(value)
        };
        let authorization_endpoint = endpoint("authorization_endpoint")?;
        let token_endpoint = endpoint("token_endpoint")?;
        let jwks_uri = endpoint("jwks_uri")?;
        let end_session_endpoint = match text("end_session_endpoint") {
            Some(_) => Some(endpoint("end_session_endpoint")?),
            None => None,
        };
        if let Some(methods) = doc
            .get("code_challenge_methods_supported")
            .and_then(Value::as_array)
        {
            if !methods.iter().any(|m| m == "S256") {
                return Err(format!(
                    "{} does not support PKCE with S256; gatehouse always uses it",
                    self.config.issuer
                ));
            }
        }
        self.metadata.store(Some(Arc::new(Metadata {
            authorization_endpoint,
            token_endpoint,
            end_session_endpoint,
            iss_parameter_supported: doc
                .get("authorization_response_iss_parameter_supported")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })));
        let store = &self.keys.issuers[0];
        store.set_jwks_uri(jwks_uri);
        store.refresh().await;
        if store.has_keys() {
            Ok(())
        } else {
            Err(format!("no signing keys from {}", self.config.issuer))
        }
    }

    /// Discovery again when it never succeeded (at most every 10 s); keys on schedule.
    pub async fn maintain(&self) {
        if self.metadata.load().is_none() || !self.keys.issuers[0].has_keys() {
            self.ensure_discovered().await;
        } else if self.keys.issuers[0].refresh_due() {
            self.keys.issuers[0].refresh().await;
        }
    }

    /// The metadata, discovering now if it is missing (rate-limited).
    pub async fn ensure_discovered(&self) -> Option<Arc<Metadata>> {
        if let Some(m) = self.metadata.load_full() {
            if self.keys.issuers[0].has_keys() {
                return Some(m);
            }
        }
        let mut last = self.discovering.lock().await;
        if self.ready() {
            return self.metadata.load_full();
        }
        if last.is_some_and(|t| t.elapsed() < REDISCOVER_AFTER) {
            return None;
        }
        *last = Some(Instant::now());
        match self.discover().await {
            Ok(()) => {
                tracing::info!(idp = %self.config.name, issuer = %self.config.issuer, "OIDC provider discovered")
            }
            Err(e) => {
                tracing::warn!(idp = %self.config.name, error = %e, "OIDC discovery failed; browser login unavailable until it succeeds")
            }
        }
        self.metadata.load_full().filter(|_| self.ready())
    }

    /// The authorization request URL (code flow, PKCE S256, state, nonce).
    #[allow(clippy::too_many_arguments)]
    pub fn authorization_url(
        &self,
        metadata: &Metadata,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_verifier: &str,
        acr_values: &[String],
        max_age: Option<Duration>,
    ) -> String {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier.as_bytes()));
        let mut url = match url::Url::parse(&metadata.authorization_endpoint) {
            Ok(u) => u,
            Err(_) => return metadata.authorization_endpoint.clone(),
        };
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &self.config.scopes.join(" "))
                .append_pair("state", state)
                .append_pair("nonce", nonce)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            if !acr_values.is_empty() {
                q.append_pair("acr_values", &acr_values.join(" "));
            }
            if let Some(age) = max_age {
                q.append_pair("max_age", &age.as_secs().to_string());
            }
            for (k, v) in &self.config.extra_auth_params {
                q.append_pair(k, v);
            }
        }
        url.to_string()
    }

    /// Exchanges an authorization code (with the PKCE verifier).
    pub async fn exchange_code(
        &self,
        metadata: &Metadata,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<Tokens, TokenError> {
        self.token_request(
            metadata,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", code_verifier),
            ],
        )
        .await
    }

    pub async fn refresh(
        &self,
        metadata: &Metadata,
        refresh_token: &str,
    ) -> Result<Tokens, TokenError> {
        self.token_request(
            metadata,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// A token endpoint call, a client span of the login's trace when tracing is on.
    async fn token_request(
        &self,
        metadata: &Metadata,
        params: &[(&str, &str)],
    ) -> Result<Tokens, TokenError> {
        let call = self.token_call(metadata, params);
        crate::otel::outbound("token_endpoint", &metadata.token_endpoint, call).await
    }

    async fn token_call(
        &self,
        metadata: &Metadata,
        params: &[(&str, &str)],
    ) -> Result<Tokens, TokenError> {
        let mut form: Vec<(&str, &str)> = params.to_vec();
        let mut request = self.client.post(&metadata.token_endpoint);
        match (&self.config.client_auth, &self.config.client_secret) {
            (ClientAuth::Basic, Some(secret)) => {
                // RFC 6749 §2.3.1: both parts form-encoded before the Basic encoding.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                request = request.basic_auth(enc(&self.config.client_id), Some(enc(secret)));
            }
            (ClientAuth::Post, Some(secret)) => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", secret));
            }
            _ => form.push(("client_id", &self.config.client_id)),
        }
        let response = request
            .header(http::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError {
                label: "token_endpoint_unreachable",
                detail: fetch::without_url(&e),
            })?;
        let status = response.status();
        let body = read_body(response).await.map_err(|detail| TokenError {
            label: "token_endpoint_error",
            detail,
        })?;
        let json: Map<String, Value> = serde_json::from_slice(&body).map_err(|_| TokenError {
            label: "token_endpoint_error",
            detail: format!("token endpoint answered {status} without JSON"),
        })?;
        if !status.is_success() {
            let error = json.get("error").and_then(Value::as_str).unwrap_or("?");
            return Err(TokenError {
                label: if error == "invalid_grant" {
                    "invalid_grant"
                } else {
                    "token_endpoint_error"
                },
                detail: format!("token endpoint answered {status}: error={error:?}"),
            });
        }
        let text = |name: &str| json.get(name).and_then(Value::as_str).map(str::to_string);
        if let Some(t) = text("token_type") {
            if !t.eq_ignore_ascii_case("bearer") && !t.eq_ignore_ascii_case("dpop") {
                return Err(TokenError {
                    label: "token_endpoint_error",
                    detail: format!("unexpected token_type {t:?}"),
                });
            }
        }
        Ok(Tokens {
            access_token: text("access_token"),
            refresh_token: text("refresh_token"),
            id_token: text("id_token"),
            expires_in: json.get("expires_in").and_then(Value::as_u64),
        })
    }

    /// Signature, issuer, algorithm, audience, times; the claims once they all pass.
    async fn verified_claims(&self, token: &str) -> Result<Identity, AuthFailure> {
        let parsed = bearer::parse(token)?;
        let checked = self.keys.check_header(&parsed)?;
        let store = &self.keys.issuers[0];
        let key = match store.keys().find(checked.kid, checked.alg) {
            Some(k) => k,
            None => store
                .refetch_for_unknown_kid(checked.kid, checked.alg)
                .await
                .ok_or(AuthFailure::Invalid("unknown_kid"))?,
        };
        let mut identity = self.keys.verify(&parsed, &checked, &key, unix_now())?;
        identity.method = AuthMethod::Session;
        Ok(identity)
    }

    /// The identity in an ID token this gateway validated at login (kept in a session,
    /// sealed): read by this IdP's claim names; its signature and times are not checked again.
    pub fn session_identity(&self, id_token_claims: &[u8]) -> Option<Identity> {
        let claims: Map<String, Value> = serde_json::from_slice(id_token_claims).ok()?;
        let config = &self.keys.issuers[0].config;
        bearer::identity_from_claims(claims, config, AuthMethod::Session).ok()
    }

    /// OIDC Core §3.1.3.7: everything about an ID token from the code flow.
    pub async fn validate_id_token(
        &self,
        token: &str,
        expected_nonce: Option<&str>,
    ) -> Result<Identity, AuthFailure> {
        let identity = self.verified_claims(token).await?;
        let claims = &identity.claims;
        if claims.get("iat").and_then(Value::as_f64).is_none() {
            return Err(AuthFailure::Invalid("missing_iat"));
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        match claims.get("azp") {
            Some(Value::String(azp)) if *azp != self.config.client_id => {
                return Err(AuthFailure::Invalid("wrong_azp"))
            }
            None if audiences.len() > 1 => return Err(AuthFailure::Invalid("missing_azp")),
            Some(Value::String(_)) | None => {}
            Some(_) => return Err(AuthFailure::Invalid("wrong_azp")),
        }
        if let Some(expected) = expected_nonce {
            let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
            if !bool::from(nonce.as_bytes().ct_eq(expected.as_bytes())) {
                return Err(AuthFailure::Invalid("wrong_nonce"));
            }
        }
        Ok(identity)
    }

    /// OIDC Back-Channel Logout 1.0 §2.6: the `sid` and/or `sub` whose sessions end. Whether
    /// its `jti` was used before is the caller's check (shared by instances).
    pub async fn validate_logout_token(&self, token: &str) -> Result<LogoutToken, AuthFailure> {
        let parsed = bearer::parse(token)?;
        if let Some(typ) = parsed.header.get("typ").and_then(Value::as_str) {
            let typ = typ.strip_prefix("application/").unwrap_or(typ);
            if !typ.eq_ignore_ascii_case("logout+jwt") && !typ.eq_ignore_ascii_case("jwt") {
                return Err(AuthFailure::Invalid("wrong_type"));
            }
        }
        let claims = match self.verified_claims(token).await {
            Ok(identity) => identity.claims,
            // A logout token names a session, not necessarily a subject.
            Err(AuthFailure::Invalid("missing_subject")) => parsed.claims.clone(),
            Err(e) => return Err(e),
        };
        if claims.get("iat").and_then(Value::as_f64).is_none() {
            return Err(AuthFailure::Invalid("missing_iat"));
        }
        if claims.contains_key("nonce") {
            return Err(AuthFailure::Invalid("nonce_in_logout_token"));
        }
        let has_event = claims
            .get("events")
            .and_then(Value::as_object)
            .and_then(|e| e.get(BACKCHANNEL_EVENT))
            .is_some_and(Value::is_object);
        if !has_event {
            return Err(AuthFailure::Invalid("missing_logout_event"));
        }
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
        let (sid, sub) = (text("sid"), text("sub"));
        if sid.is_none() && sub.is_none() {
            return Err(AuthFailure::Invalid("missing_sid_and_sub"));
        }
        // Required (§2.4): without it a replay cannot be told from a new logout.
        let jti = text("jti")
            .filter(|j| !j.is_empty())
            .ok_or(AuthFailure::Invalid("missing_jti"))?;
        // `exp` is there and numeric: the signature check's claim checks demand it.
        let expires_at = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0) as u64;
        Ok(LogoutToken {
            sid,
            sub,
            jti,
            expires_at,
        })
    }
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    const MAX: usize = 256 * 1024;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| fetch::without_url(&e))? {
        if body.len() + chunk.len() > MAX {
            return Err("token endpoint answer too large".to_string());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
