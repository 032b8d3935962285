//! One OpenID provider (`[[idp]]`) as the gateway's login flow sees it: discovery, the
//! authorization request, the token endpoint (code and refresh grants), and validation of
//! ID tokens and back-channel logout tokens against its JWKS. The key handling is the
//! bearer issuers' own ([`KeyStore`]): cached keys, one rate-limited refetch for an unknown
//! `kid`, the last good keys kept through an IdP outage, an algorithm allowlist.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::openid;
use crate::authn::bearer::{self, BearerAuth};
use crate::authn::fetch;
use crate::authn::AuthFailure;
use crate::config::{BearerConfig, ClientAuth, IdpConfig, Userinfo};
use crate::identity::{AuthMethod, Identity};
use crate::metrics::Metrics;

/// What discovery says about the provider.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub end_session_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    /// RFC 9126: where authorization requests are pushed, when they are.
    pub par_endpoint: Option<String>,
    /// RFC 9207: the provider puts `iss` in authorization responses.
    pub iss_parameter_supported: bool,
    /// The crate's client for this metadata: authorization requests and token grants.
    pub client: openid::OidcClient,
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
    /// The `private_key_jwt` key, parsed from the config's PEM.
    client_key: Option<openssl::pkey::PKey<openssl::pkey::Private>>,
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
        let client_key = config
            .client_key
            .as_ref()
            .and_then(|k| openssl::pkey::PKey::private_key_from_pem(&k.pem).ok());
        let client = fetch::idp_client(&config.tls).unwrap_or_else(|e| {
            // Checked at load; a failure here leaves the IdP's TLS to the system's roots.
            tracing::error!(idp = %config.name, error = %e, "cannot use the IdP's TLS settings");
            fetch::client()
        });
        Provider {
            client_key,
            keys: BearerAuth::one_issuer(bearer_config, metrics, client.clone()),
            config,
            metadata: ArcSwapOption::empty(),
            client,
            discovering: tokio::sync::Mutex::new(None),
        }
    }

    /// The HTTP client of this IdP (its CA and client certificate): Graph is asked with it.
    pub(super) fn http(&self) -> &reqwest::Client {
        &self.client
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
        let discovered = openid::read_metadata(doc)
            .map_err(|e| format!("discovery at {url} is not OpenID provider metadata: {e}"))?;
        let issuer = discovered.issuer().as_str();
        if issuer != self.config.issuer {
            return Err(format!(
                "discovery at {url} names issuer {issuer:?}, not the configured {:?}",
                self.config.issuer
            ));
        }
        let secure = |name: &str, value: &str| -> Result<String, String> {
            crate::config::check_secure_url(value).map_err(|e| format!("{name} {value:?} {e}"))?;
            Ok(value.to_string())
        };
        let more = discovered.additional_metadata().clone();
        let authorization_endpoint = secure(
            "authorization_endpoint",
            discovered.authorization_endpoint().as_str(),
        )?;
        let token_endpoint = match discovered.token_endpoint() {
            Some(t) => secure("token_endpoint", t.as_str())?,
            None => return Err(format!("discovery at {url} has no token_endpoint")),
        };
        let jwks_uri = secure("jwks_uri", discovered.jwks_uri().as_str())?;
        let end_session_endpoint = match &more.end_session_endpoint {
            Some(e) => Some(secure("end_session_endpoint", e)?),
            None => None,
        };
        let userinfo_endpoint = match discovered.userinfo_endpoint() {
            Some(u) => Some(secure("userinfo_endpoint", u.as_str())?),
            None if self.config.userinfo == Userinfo::Always => {
                return Err(format!(
                    "discovery at {url} has no userinfo_endpoint, and idp {:?} says userinfo = \"always\"",
                    self.config.name
                ));
            }
            None => None,
        };
        // RFC 9126: pushed when the config says so or the provider requires it.
        let par_required = more.require_pushed_authorization_requests;
        let par_endpoint = if self.config.par || par_required {
            let Some(endpoint) = &more.pushed_authorization_request_endpoint else {
                return Err(format!(
                    "discovery at {url} has no pushed_authorization_request_endpoint, and {}",
                    if par_required {
                        "it requires pushed authorization requests".to_string()
                    } else {
                        format!("idp {:?} says par = true", self.config.name)
                    }
                ));
            };
            Some(secure("pushed_authorization_request_endpoint", endpoint)?)
        } else {
            None
        };
        if let Some(methods) = &more.code_challenge_methods_supported {
            if !methods.iter().any(|m| m == "S256") {
                return Err(format!(
                    "{} does not support PKCE with S256; gatehouse always uses it",
                    self.config.issuer
                ));
            }
        }
        let secret = self.config.client_secret.as_deref().filter(|_| {
            matches!(
                self.config.client_auth,
                ClientAuth::Basic | ClientAuth::Post
            )
        });
        let client = openid::client(
            discovered,
            &self.config.client_id,
            secret,
            self.config.client_auth == ClientAuth::Basic,
        );
        self.metadata.store(Some(Arc::new(Metadata {
            authorization_endpoint,
            token_endpoint,
            end_session_endpoint,
            userinfo_endpoint,
            par_endpoint,
            iss_parameter_supported: more.authorization_response_iss_parameter_supported,
            client,
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

    /// Where to send the browser to log in: the authorization endpoint with the request's
    /// parameters (PKCE S256, `state`, `nonce`, the route's `acr_values` and `max_age`, the
    /// IdP's extra parameters), or, with pushed authorization requests (RFC 9126), with only
    /// `client_id` and the `request_uri` the provider gave for the parameters pushed to it
    /// (authenticated as at the token endpoint).
    #[allow(clippy::too_many_arguments)]
    pub async fn authorization_request(
        &self,
        metadata: &Metadata,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_verifier: &str,
        acr_values: &[String],
        max_age: Option<Duration>,
        hints: &super::Hints,
    ) -> Result<String, TokenError> {
        let configured = |name: &str| self.config.extra_auth_params.iter().any(|(k, _)| k == name);
        // The route's step-up (acr_values, max_age) wins over the IdP's extra parameters.
        let mut extra: Vec<(&str, &str)> = self
            .config
            .extra_auth_params
            .iter()
            .filter(|(k, _)| {
                !(k == "acr_values" && !acr_values.is_empty()
                    || k == "max_age" && max_age.is_some())
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // The browser's hints, unless the config sets the parameter itself.
        if let Some(hint) = hints
            .domain_hint
            .as_deref()
            .filter(|_| !configured("domain_hint"))
        {
            extra.push(("domain_hint", hint));
        }
        let url = openid::authorization_url(
            &metadata.client,
            openid::AuthorizationParams {
                redirect_uri,
                state,
                nonce,
                code_verifier,
                scopes: &self.config.scopes,
                acr_values,
                max_age,
                extra,
                login_hint: hints
                    .login_hint
                    .as_deref()
                    .filter(|_| !configured("login_hint")),
            },
        )
        .map_err(|detail| TokenError {
            label: "idp_unavailable",
            detail,
        })?;
        let Some(endpoint) = &metadata.par_endpoint else {
            return Ok(url.to_string());
        };
        // RFC 9126 §2: the parameters the crate added to the endpoint's own query, pushed;
        // the browser carries only their handle.
        let mut endpoint_url =
            url::Url::parse(&metadata.authorization_endpoint).map_err(|_| TokenError {
                label: "idp_unavailable",
                detail: "authorization_endpoint is not a URL".to_string(),
            })?;
        let own = endpoint_url.query_pairs().count();
        let pushed: Vec<(String, String)> = url
            .query_pairs()
            .skip(own)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let params: Vec<(&str, &str)> = pushed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let push = self.push_authorization_request(endpoint, &params);
        let request_uri = crate::otel::outbound("par_endpoint", endpoint, push).await?;
        endpoint_url.query_pairs_mut().extend_pairs([
            ("client_id", self.config.client_id.as_str()),
            ("request_uri", &request_uri),
        ]);
        Ok(endpoint_url.to_string())
    }

    /// RFC 9126 §2: the parameters pushed, the `request_uri` that stands for them.
    async fn push_authorization_request(
        &self,
        endpoint: &str,
        params: &[(&str, &str)],
    ) -> Result<String, TokenError> {
        let failed = |detail: String| TokenError {
            label: "par_failed",
            detail,
        };
        // RFC 9126 §2: the issuer is an audience every PAR endpoint accepts.
        let (request, mut form) =
            self.client_authenticated(self.client.post(endpoint), params, &self.config.issuer)?;
        // client_id is a parameter of the request pushed, whatever authenticates the client.
        if !form.iter().any(|(k, _)| *k == "client_id") {
            form.push(("client_id", Cow::Borrowed(self.config.client_id.as_str())));
        }
        let response = request
            .header(http::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| failed(fetch::without_url(&e)))?;
        let status = response.status();
        let body = read_body(response).await.map_err(failed)?;
        let json: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|_| failed(format!("PAR endpoint answered {status} without JSON")))?;
        if status != http::StatusCode::CREATED && status != http::StatusCode::OK {
            let error = json.get("error").and_then(Value::as_str).unwrap_or("?");
            return Err(failed(format!(
                "PAR endpoint answered {status}: error={error:?}"
            )));
        }
        json.get("request_uri")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty() && u.len() <= 2048)
            .map(str::to_string)
            .ok_or_else(|| failed("PAR answer without a request_uri".to_string()))
    }

    /// A request to the token or PAR endpoint, authenticated as `client_auth` says: Basic
    /// credentials on the request, `client_id` and the secret in the form, or a
    /// `private_key_jwt` assertion for `audience` (RFC 7523).
    fn client_authenticated<'a>(
        &'a self,
        mut request: reqwest::RequestBuilder,
        params: &[(&'a str, &'a str)],
        audience: &str,
    ) -> Result<(reqwest::RequestBuilder, Form<'a>), TokenError> {
        let mut form: Vec<(&str, Cow<str>)> = params
            .iter()
            .filter(|(k, _)| *k != "client_id")
            .map(|&(k, v)| (k, Cow::Borrowed(v)))
            .collect();
        let client_id = Cow::Borrowed(self.config.client_id.as_str());
        match (&self.config.client_auth, &self.config.client_secret) {
            (ClientAuth::Basic, Some(secret)) => {
                // RFC 6749 §2.3.1: both parts form-encoded before the Basic encoding.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                request = request.basic_auth(enc(&self.config.client_id), Some(enc(secret)));
            }
            (ClientAuth::Post, Some(secret)) => {
                form.push(("client_id", client_id));
                form.push(("client_secret", Cow::Borrowed(secret)));
            }
            (ClientAuth::PrivateKeyJwt, _) => {
                let assertion = self
                    .client_assertion(audience)
                    .ok_or_else(assertion_failed)?;
                form.push(("client_id", client_id));
                form.push((
                    "client_assertion_type",
                    Cow::Borrowed("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ));
                form.push(("client_assertion", Cow::Owned(assertion)));
            }
            // None (a public client) and tls_client_auth (the certificate on the connection,
            // RFC 8705 §2): the client names itself.
            _ => form.push(("client_id", client_id)),
        }
        Ok((request, form))
    }

    /// RFC 7523 §3: `iss` and `sub` the client, `aud` who will read it, a fresh `jti`, a
    /// one-minute `exp`; signed with the configured key.
    fn client_assertion(&self, audience: &str) -> Option<String> {
        let key = self.client_key.as_ref()?;
        let config = self.config.client_key.as_ref()?;
        let now = unix_now();
        let mut jti = [0u8; 16];
        openssl::rand::rand_bytes(&mut jti).ok()?;
        let mut header = serde_json::json!({"alg": format!("{:?}", config.alg), "typ": "JWT"});
        if let Some(kid) = &config.kid {
            header["kid"] = Value::from(kid.as_str());
        }
        let claims = serde_json::json!({
            "iss": self.config.client_id,
            "sub": self.config.client_id,
            "aud": audience,
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "iat": now,
            "exp": now + 60,
        });
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut token);
        let signature = crate::authn::signature::sign(key, config.alg, token.as_bytes())?;
        token.push('.');
        token.push_str(&signature);
        Some(token)
    }

    /// Exchanges an authorization code (with the PKCE verifier).
    pub async fn exchange_code(
        &self,
        metadata: &Metadata,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<Tokens, TokenError> {
        let grant = openid::Grant::Code {
            code,
            redirect_uri,
            code_verifier,
        };
        self.token_request(metadata, grant).await
    }

    pub async fn refresh(
        &self,
        metadata: &Metadata,
        refresh_token: &str,
    ) -> Result<Tokens, TokenError> {
        self.token_request(metadata, openid::Grant::Refresh(refresh_token))
            .await
    }

    /// A token endpoint call (by the crate, through this IdP's HTTP client), a client span of
    /// the login's trace when tracing is on.
    async fn token_request(
        &self,
        metadata: &Metadata,
        grant: openid::Grant<'_>,
    ) -> Result<Tokens, TokenError> {
        let assertion = match self.config.client_auth {
            ClientAuth::PrivateKeyJwt => Some(
                self.client_assertion(&metadata.token_endpoint)
                    .ok_or_else(assertion_failed)?,
            ),
            _ => None,
        };
        let call = openid::token_request(&metadata.client, &self.client, grant, assertion);
        crate::otel::outbound("token_endpoint", &metadata.token_endpoint, call).await
    }

    /// The claims of the userinfo endpoint (OIDC Core §5.3) for `subject`, asked with the
    /// access token: a JSON object of at most [`USERINFO_MAX`] bytes whose `sub` is the
    /// ID token's. The error is a bounded label (metrics) with the detail for the log.
    pub async fn userinfo(
        &self,
        metadata: &Metadata,
        access_token: Option<&str>,
        subject: &str,
    ) -> Result<Map<String, Value>, (&'static str, String)> {
        let endpoint = metadata.userinfo_endpoint.as_deref().ok_or((
            "no_endpoint",
            "the IdP names no userinfo_endpoint".to_string(),
        ))?;
        let token = access_token.ok_or((
            "no_access_token",
            "the token endpoint sent no access token".to_string(),
        ))?;
        let response = self
            .client
            .get(endpoint)
            .bearer_auth(token)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ("unreachable", fetch::without_url(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err((
                "error_status",
                format!("userinfo endpoint answered {status}"),
            ));
        }
        let json = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| {
                t.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        if !json {
            // A signed or encrypted answer (application/jwt) would need keys this IdP's
            // config does not name for it: refused rather than read unverified.
            return Err((
                "not_json",
                "userinfo answer is not application/json".to_string(),
            ));
        }
        let body = fetch::read_capped(response, USERINFO_MAX)
            .await
            .map_err(|e| match e {
                fetch::ReadError::TooLarge(_) => ("too_large", e.to_string()),
                fetch::ReadError::Failed(detail) => ("unreachable", detail),
            })?;
        let claims: Map<String, Value> = serde_json::from_slice(&body).map_err(|_| {
            (
                "not_json",
                "userinfo answer is not a JSON object".to_string(),
            )
        })?;
        // OIDC Core §5.3.2: a userinfo `sub` other than the ID token's is not this user's.
        match claims.get("sub").and_then(Value::as_str) {
            Some(sub) if sub == subject => Ok(claims),
            _ => Err((
                "subject_mismatch",
                "userinfo sub differs from the ID token's".to_string(),
            )),
        }
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
    /// Claims the login fetched from the userinfo endpoint fill in what the ID token lacks;
    /// the ID token's own claims win.
    pub fn session_identity(
        &self,
        id_token_claims: &[u8],
        userinfo: Option<&[u8]>,
    ) -> Option<Identity> {
        let mut claims: Map<String, Value> = serde_json::from_slice(id_token_claims).ok()?;
        if let Some(extra) =
            userinfo.and_then(|u| serde_json::from_slice::<Map<String, Value>>(u).ok())
        {
            for (name, value) in extra {
                claims.entry(name).or_insert(value);
            }
        }
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

fn assertion_failed() -> TokenError {
    TokenError {
        label: "client_assertion_failed",
        detail: "cannot sign the private_key_jwt assertion".to_string(),
    }
}

/// A form for the PAR endpoint: borrowed parameters, and a signed assertion.
type Form<'a> = Vec<(&'a str, Cow<'a, str>)>;

/// The most of a userinfo answer read: a user's claims with a few hundred groups fit.
pub const USERINFO_MAX: usize = 64 * 1024;

async fn read_body(response: reqwest::Response) -> Result<Vec<u8>, String> {
    fetch::read_capped(response, openid::TOKEN_ANSWER_MAX)
        .await
        .map_err(|e| e.to_string())
}
