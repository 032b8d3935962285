//! The `openidconnect` crate as the login flow uses it: the provider's metadata (with the
//! fields gatehouse reads beyond OpenID Connect Discovery), the client that builds the
//! authorization request and calls the token endpoint (code and refresh grants), and the
//! adapter that sends the crate's requests through the IdP's own reqwest client (its CA and
//! client certificate, a capped answer).
//!
//! The ID token in a token answer is kept as its compact text: it is validated by the bearer
//! key store ([`crate::authn::bearer`]), which refetches for an unknown `kid`, pins the key
//! family, and names each refusal (see `docs/architecture.md`).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreClaimName, CoreClaimType, CoreClientAuthMethod,
    CoreErrorResponseType, CoreGenderClaim, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreSubjectIdentifierType, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessToken, AdditionalProviderMetadata, AuthenticationContextClass, AuthenticationFlow,
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EmptyAdditionalClaims, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IdToken, LoginHint, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardErrorResponse,
};
use serde::{Deserialize, Serialize};

use super::oidc::{TokenError, Tokens};
use crate::authn::fetch;

/// Discovery fields gatehouse reads that OpenID Connect Discovery 1.0 does not define.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct MoreMetadata {
    /// RP-Initiated Logout 1.0.
    pub end_session_endpoint: Option<String>,
    /// RFC 9126 §5.
    pub pushed_authorization_request_endpoint: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    pub require_pushed_authorization_requests: bool,
    /// RFC 9207 §3.
    #[serde(default, deserialize_with = "flag")]
    pub authorization_response_iss_parameter_supported: bool,
    /// RFC 8414 §2 (a lone string read as a list of one; other members ignored).
    #[serde(default, deserialize_with = "names")]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

impl AdditionalProviderMetadata for MoreMetadata {}

/// A list of names, or one name; members that are not strings are left out.
fn names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(list) => Some(
            list.into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        serde_json::Value::String(s) => Some(vec![s]),
        _ => None,
    })
}

/// `true`, or `"true"` as some providers write it; anything else is false.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    })
}

/// The discovery members gatehouse reads, and those the crate requires (OpenID Connect
/// Discovery 1.0 §3). The others are dropped before the crate reads the document, so a
/// provider that gets one of them wrong (an empty `op_policy_uri`, `"true"` for a boolean, an
/// odd language tag) still has working logins.
const READ: [&str; 13] = [
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
    "jwks_uri",
    "response_types_supported",
    "subject_types_supported",
    "id_token_signing_alg_values_supported",
    "end_session_endpoint",
    "pushed_authorization_request_endpoint",
    "require_pushed_authorization_requests",
    "authorization_response_iss_parameter_supported",
    "code_challenge_methods_supported",
];

/// The discovery document read by the crate; the error names the member at fault.
pub fn read_metadata(mut doc: serde_json::Value) -> Result<ProviderMetadata, String> {
    if let Some(members) = doc.as_object_mut() {
        members.retain(|name, _| READ.contains(&name.as_str()));
    }
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let at = e.path().to_string();
        let e = e.into_inner();
        if at == "." {
            e.to_string()
        } else {
            format!("{at}: {e}")
        }
    })
}

/// A discovery document, read by the crate.
pub type ProviderMetadata = openidconnect::ProviderMetadata<
    MoreMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// A token answer (RFC 6749 §5.1), the type the crate reads the token endpoint's JSON
/// into. Its own `StandardTokenResponse` would do, but for two things real providers send:
/// `expires_in` as a string (Azure AD v1, ADFS), which it refuses, and an ID token, which it
/// would parse into its claim types before any signature check; here the ID token is kept
/// as text for the key store.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TokenAnswer {
    /// Empty when the answer has none (read as no access token).
    #[serde(default = "no_access_token", deserialize_with = "access_token")]
    access_token: AccessToken,
    /// Any case (`Bearer`, `DPoP`): RFC 6749 §5.1 says it is case-insensitive. Some
    /// providers leave it out; that is read as Bearer.
    #[serde(default = "bearer", deserialize_with = "token_type")]
    token_type: CoreTokenType,
    #[serde(default, deserialize_with = "seconds")]
    expires_in: Option<u64>,
    #[serde(default, deserialize_with = "refresh_token")]
    refresh_token: Option<RefreshToken>,
    /// Nothing reads it: a list or anything else is no scope rather than a failed login.
    #[serde(rename = "scope", default, deserialize_with = "scopes")]
    scopes: Option<Vec<Scope>>,
    #[serde(default, deserialize_with = "text")]
    id_token: Option<String>,
}

/// A string member, or nothing (null, a number, an object).
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

fn access_token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AccessToken, D::Error> {
    Ok(AccessToken::new(text(d)?.unwrap_or_default()))
}

fn no_access_token() -> AccessToken {
    AccessToken::new(String::new())
}

fn refresh_token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<RefreshToken>, D::Error> {
    Ok(text(d)?.filter(|t| !t.is_empty()).map(RefreshToken::new))
}

fn bearer() -> CoreTokenType {
    CoreTokenType::Bearer
}

fn token_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CoreTokenType, D::Error> {
    let text = text(d)?.unwrap_or_default();
    Ok(match text.to_ascii_lowercase().as_str() {
        "bearer" => CoreTokenType::Bearer,
        "mac" => CoreTokenType::Mac,
        _ => CoreTokenType::Extension(text),
    })
}

/// A number of seconds, or its decimal text; anything else is no lifetime.
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn scopes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<Scope>>, D::Error> {
    Ok(text(d)?.map(|t| {
        t.split_ascii_whitespace()
            .map(|s| Scope::new(s.to_string()))
            .collect()
    }))
}

impl OAuth2TokenResponse for TokenAnswer {
    type TokenType = CoreTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &CoreTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scopes.as_ref()
    }
}

impl
    openidconnect::TokenResponse<
        EmptyAdditionalClaims,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    > for TokenAnswer
{
    /// Never the crate's typed view: the text goes to the key store.
    fn id_token(
        &self,
    ) -> Option<
        &IdToken<
            EmptyAdditionalClaims,
            CoreGenderClaim,
            CoreJweContentEncryptionAlgorithm,
            CoreJwsSigningAlgorithm,
        >,
    > {
        None
    }
}

/// The client the crate builds from the metadata: an authorization endpoint, maybe a token
/// endpoint (discovery insists on one for the code flow).
pub type OidcClient = openidconnect::Client<
    EmptyAdditionalClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenAnswer,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The client for `metadata`, authenticating at the token endpoint with HTTP Basic
/// (`basic`) or in the form: the client id, and `secret` when there is one. A
/// `private_key_jwt` assertion is added per request ([`token_request`]).
pub fn client(
    metadata: ProviderMetadata,
    client_id: &str,
    secret: Option<&str>,
    basic: bool,
) -> OidcClient {
    let auth_type = if basic {
        openidconnect::AuthType::BasicAuth
    } else {
        openidconnect::AuthType::RequestBody
    };
    OidcClient::from_provider_metadata(
        metadata,
        ClientId::new(client_id.to_string()),
        secret.map(|s| ClientSecret::new(s.to_string())),
    )
    .set_auth_type(auth_type)
    // The configured scopes include "openid" (checked at load), in the configured order.
    .disable_openid_scope()
}

/// What an authorization request carries besides the client's own parameters.
pub struct AuthorizationParams<'a> {
    pub redirect_uri: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
    pub code_verifier: &'a str,
    pub scopes: &'a [String],
    pub acr_values: &'a [String],
    pub max_age: Option<Duration>,
    /// The IdP's configured parameters, then the browser's hints the config does not set.
    pub extra: Vec<(&'a str, &'a str)>,
    pub login_hint: Option<&'a str>,
}

/// The authorization request URL (code flow, PKCE S256, `state`, `nonce`).
pub fn authorization_url(client: &OidcClient, p: AuthorizationParams) -> Result<url::Url, String> {
    let redirect = RedirectUrl::new(p.redirect_uri.to_string())
        .map_err(|_| "the redirect URI is not a URL".to_string())?;
    let (state, nonce) = (p.state.to_string(), p.nonce.to_string());
    // RFC 7636 §4.1 (the crate asserts it): 43 to 128 characters.
    if !(43..=128).contains(&p.code_verifier.len()) {
        return Err("the PKCE verifier is not 43 to 128 characters".to_string());
    }
    let verifier = PkceCodeVerifier::new(p.code_verifier.to_string());
    let mut request = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            move || CsrfToken::new(state),
            move || Nonce::new(nonce),
        )
        .set_redirect_uri(Cow::Owned(redirect))
        .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(&verifier))
        .add_scopes(p.scopes.iter().map(|s| Scope::new(s.clone())));
    for acr in p.acr_values {
        request = request.add_auth_context_value(AuthenticationContextClass::new(acr.clone()));
    }
    if let Some(age) = p.max_age {
        request = request.set_max_age(age);
    }
    if let Some(hint) = p.login_hint {
        request = request.set_login_hint(LoginHint::new(hint.to_string()));
    }
    for (name, value) in p.extra {
        request = request.add_extra_param(name, value);
    }
    Ok(request.url().0)
}

/// A token-endpoint grant.
pub enum Grant<'a> {
    Code {
        code: &'a str,
        redirect_uri: &'a str,
        code_verifier: &'a str,
    },
    Refresh(&'a str),
}

/// Why the adapter could not get an answer: bounded labels for metrics, the detail for logs.
#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Unreadable(String),
}

/// The most of a token-endpoint (or PAR) answer read: tokens, and an ID token with many
/// claims.
pub const TOKEN_ANSWER_MAX: usize = 256 * 1024;

/// The crate's request, sent with the IdP's client; the answer read up to
/// [`TOKEN_ANSWER_MAX`] bytes.
async fn send(
    client: &reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError::Unreachable(fetch::without_url(&e)))?;
    let status = response.status();
    let mut headers = response.headers().clone();
    let body = fetch::read_capped(response, TOKEN_ANSWER_MAX)
        .await
        .map_err(|e| match e {
            fetch::ReadError::TooLarge(_) => HttpError::Unreadable(e.to_string()),
            fetch::ReadError::Failed(detail) => HttpError::Unreachable(detail),
        })?;
    // What the crate would refuse but providers send and gatehouse always took: any 2xx as
    // success, and JSON under another content type. An answer that is not JSON at all is
    // refused here, with its status (the crate's error would not say it).
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return Err(HttpError::Unreadable(format!(
            "answered {status} without JSON"
        )));
    }
    headers.remove(http::header::CONTENT_TYPE);
    let mut answer = openidconnect::HttpResponse::new(body);
    *answer.status_mut() = if status.is_success() {
        http::StatusCode::OK
    } else {
        status
    };
    *answer.headers_mut() = headers;
    Ok(answer)
}

/// The crate's HTTP client: the IdP's reqwest client. The trait names its future's type,
/// hence the box; owning the client (a reference count) keeps the future `Send` for every
/// borrow, as Pingora's handlers need.
struct Adapter(reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for Adapter {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(send(&self.0, request))
    }
}

/// A grant at the token endpoint; `assertion` is a `private_key_jwt` client assertion.
pub async fn token_request(
    oidc: &OidcClient,
    http: &reqwest::Client,
    grant: Grant<'_>,
    assertion: Option<String>,
) -> Result<Tokens, TokenError> {
    // A clone of the client is a reference count.
    let adapter = Adapter(http.clone());
    let unset = |_| TokenError {
        label: "token_endpoint_error",
        detail: "discovery named no token_endpoint".to_string(),
    };
    let assertion_params = |assertion: Option<String>| {
        assertion.into_iter().flat_map(|a| {
            [
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
                ),
                ("client_assertion", a),
            ]
        })
    };
    let answer = match grant {
        Grant::Code {
            code,
            redirect_uri,
            code_verifier,
        } => {
            let redirect = RedirectUrl::new(redirect_uri.to_string()).map_err(|_| TokenError {
                label: "token_endpoint_error",
                detail: "the redirect URI is not a URL".to_string(),
            })?;
            let mut request = oidc
                .exchange_code(AuthorizationCode::new(code.to_string()))
                .map_err(unset)?
                .set_pkce_verifier(PkceCodeVerifier::new(code_verifier.to_string()))
                .set_redirect_uri(Cow::Owned(redirect));
            for (name, value) in assertion_params(assertion) {
                request = request.add_extra_param(name, value);
            }
            request.request_async(&adapter).await
        }
        Grant::Refresh(token) => {
            let token = RefreshToken::new(token.to_string());
            let mut request = oidc.exchange_refresh_token(&token).map_err(unset)?;
            for (name, value) in assertion_params(assertion) {
                request = request.add_extra_param(name, value);
            }
            request.request_async(&adapter).await
        }
    }
    .map_err(token_error)?;
    let token_type = answer.token_type().as_ref();
    if !token_type.eq_ignore_ascii_case("bearer") && !token_type.eq_ignore_ascii_case("dpop") {
        return Err(TokenError {
            label: "token_endpoint_error",
            detail: format!("unexpected token_type {token_type:?}"),
        });
    }
    Ok(Tokens {
        access_token: Some(answer.access_token().secret().clone()).filter(|t| !t.is_empty()),
        refresh_token: answer.refresh_token().map(|t| t.secret().clone()),
        expires_in: answer.expires_in().map(|d| d.as_secs()),
        id_token: answer.id_token,
    })
}

fn token_error(
    e: RequestTokenError<HttpError, StandardErrorResponse<CoreErrorResponseType>>,
) -> TokenError {
    match e {
        RequestTokenError::ServerResponse(answer) => TokenError {
            label: match answer.error() {
                CoreErrorResponseType::InvalidGrant => "invalid_grant",
                _ => "token_endpoint_error",
            },
            detail: format!(
                "token endpoint answered error={:?}",
                answer.error().as_ref()
            ),
        },
        RequestTokenError::Request(HttpError::Unreachable(detail)) => TokenError {
            label: "token_endpoint_unreachable",
            detail,
        },
        RequestTokenError::Request(HttpError::Unreadable(detail)) => TokenError {
            label: "token_endpoint_error",
            detail,
        },
        RequestTokenError::Parse(e, _) => TokenError {
            label: "token_endpoint_error",
            detail: format!("token endpoint answer unreadable at {}", e.path()),
        },
        RequestTokenError::Other(detail) => TokenError {
            label: "token_endpoint_error",
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(extra: serde_json::Value) -> ProviderMetadata {
        let mut doc = serde_json::json!({
            "issuer": "https://idp.example",
            "authorization_endpoint": "https://idp.example/authorize?p=B2C_1_signin",
            "token_endpoint": "https://idp.example/token",
            "jwks_uri": "https://idp.example/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256K"],
        });
        if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        serde_json::from_value(doc).expect("metadata")
    }

    #[test]
    fn the_authorization_request_carries_every_parameter_once() {
        let client = client(metadata(serde_json::json!({})), "gh", Some("s"), true);
        let scopes = ["openid".to_string(), "email".to_string()];
        let url = authorization_url(
            &client,
            AuthorizationParams {
                redirect_uri: "https://app.example/_gatehouse/callback",
                state: "st",
                nonce: "no",
                code_verifier: "verifier-verifier-verifier-verifier-verifier-123",
                scopes: &scopes,
                acr_values: &["mfa".to_string(), "hwk".to_string()],
                max_age: Some(Duration::from_secs(300)),
                extra: vec![("prompt", "login"), ("domain_hint", "example.com")],
                login_hint: Some("a@example.com"),
            },
        )
        .expect("a URL");
        assert!(url
            .as_str()
            .starts_with("https://idp.example/authorize?p=B2C_1_signin&"));
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let one = |name: &str| {
            let values: Vec<&str> = pairs
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(values.len(), 1, "{name} in {url}");
            values[0].to_string()
        };
        assert_eq!(one("response_type"), "code");
        assert_eq!(one("client_id"), "gh");
        assert_eq!(
            one("redirect_uri"),
            "https://app.example/_gatehouse/callback"
        );
        assert_eq!(one("scope"), "openid email");
        assert_eq!(one("state"), "st");
        assert_eq!(one("nonce"), "no");
        assert_eq!(one("code_challenge_method"), "S256");
        // RFC 7636 §4.2: BASE64URL(SHA256(verifier)), computed here independently.
        let digest = openssl::sha::sha256(b"verifier-verifier-verifier-verifier-verifier-123");
        use base64::Engine;
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
        assert_eq!(one("code_challenge"), challenge);
        assert_eq!(one("acr_values"), "mfa hwk");
        assert_eq!(one("max_age"), "300");
        assert_eq!(one("login_hint"), "a@example.com");
        assert_eq!(one("prompt"), "login");
        assert_eq!(one("domain_hint"), "example.com");
        assert_eq!(one("p"), "B2C_1_signin");
        assert!(!pairs.iter().any(|(k, _)| k == "client_secret"));
    }

    #[test]
    fn token_answers_as_providers_send_them() {
        let answer: TokenAnswer = serde_json::from_value(serde_json::json!({
            "access_token": "at", "token_type": "DPoP", "expires_in": "3599",
            "scope": "openid  email", "id_token": "a.b.c", "refresh_token": "rt",
        }))
        .expect("an answer");
        assert_eq!(answer.expires_in(), Some(Duration::from_secs(3599)));
        assert_eq!(answer.token_type().as_ref(), "DPoP");
        assert_eq!(answer.scopes().map(Vec::len), Some(2));
        assert_eq!(answer.id_token.as_deref(), Some("a.b.c"));
        assert_eq!(
            answer.refresh_token().map(|t| t.secret().as_str()),
            Some("rt")
        );
        let bearer: TokenAnswer = serde_json::from_value(
            serde_json::json!({"access_token": "at", "token_type": "Bearer", "expires_in": 60}),
        )
        .expect("an answer");
        assert_eq!(bearer.token_type(), &CoreTokenType::Bearer);
        assert_eq!(bearer.expires_in(), Some(Duration::from_secs(60)));
        assert!(bearer.id_token.is_none() && bearer.refresh_token().is_none());
        // Beyond RFC 6749 §5.1, as providers send them: no token_type (Bearer), no or a
        // null access token (none), scope as a list and a refresh token that is a number
        // (neither).
        let lax: TokenAnswer = serde_json::from_value(serde_json::json!({
            "access_token": null, "scope": ["a"], "refresh_token": 7, "id_token": "x.y.z",
        }))
        .expect("an answer");
        assert_eq!(lax.token_type(), &CoreTokenType::Bearer);
        assert!(lax.access_token().secret().is_empty());
        assert!(lax.scopes().is_none() && lax.refresh_token().is_none());
        assert_eq!(lax.id_token.as_deref(), Some("x.y.z"));
    }

    #[test]
    fn metadata_reads_the_extra_fields_and_refuses_what_is_not_metadata() {
        let m = metadata(serde_json::json!({
            "end_session_endpoint": "https://idp.example/logout",
            "pushed_authorization_request_endpoint": "https://idp.example/par",
            "require_pushed_authorization_requests": true,
            "authorization_response_iss_parameter_supported": true,
            "code_challenge_methods_supported": ["S256"],
        }));
        let more = m.additional_metadata();
        assert_eq!(
            more.end_session_endpoint.as_deref(),
            Some("https://idp.example/logout")
        );
        assert!(more.require_pushed_authorization_requests);
        assert!(more.authorization_response_iss_parameter_supported);
        let plain = metadata(serde_json::json!({}));
        assert!(
            !plain
                .additional_metadata()
                .require_pushed_authorization_requests
        );
        // As providers write them: string booleans, members gatehouse never reads gone wrong.
        let mut doc = serde_json::to_value(metadata(serde_json::json!({}))).expect("json");
        let extra = serde_json::json!({
            "require_pushed_authorization_requests": "true",
            "authorization_response_iss_parameter_supported": "false",
            "claims_parameter_supported": "true",
            "token_endpoint_auth_methods_supported": [{"odd": 1}],
            "op_policy_uri": "",
            "service_documentation": "not a url",
            "ui_locales_supported": [1, 2],
        });
        if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        let read = read_metadata(doc).expect("read");
        assert!(
            read.additional_metadata()
                .require_pushed_authorization_requests
        );
        assert!(
            !read
                .additional_metadata()
                .authorization_response_iss_parameter_supported
        );
        // A document without the fields Discovery §3 requires is refused, by name.
        let e = read_metadata(serde_json::json!({
            "issuer": "https://idp.example",
            "authorization_endpoint": "https://idp.example/authorize",
            "jwks_uri": "https://idp.example/jwks",
        }))
        .expect_err("not metadata");
        assert!(e.contains("response_types_supported"), "{e}");
    }
}
