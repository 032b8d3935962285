//! Authentication: who is calling. Each method turns a credential into an [`Identity`] or
//! a precise [`AuthFailure`]; the precise reason goes to logs and metrics, the client only
//! learns the RFC 6750 error class.

pub mod api_key;
pub mod bearer;
pub(crate) mod fetch;
pub mod introspection;
pub mod jwks;
pub mod signature;

use std::sync::Arc;

use pingora::http::RequestHeader;
use serde_json::{Map, Value};

use crate::config::{AuthMethod, Config};
use crate::metrics::Metrics;

pub use bearer::BearerAuth;

/// Who made a request, as established by one authentication method.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub method: AuthMethod,
    pub subject: String,
    pub email: Option<String>,
    pub username: Option<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    /// The token issuer, or the API key's name.
    pub issuer: Option<String>,
    /// Several issuers are configured: the subject goes upstream as `<issuer>#<subject>`
    /// (Kubernetes' form; an issuer URL has no `#`), with the issuer beside it, so equal
    /// subjects of two issuers stay two people. Never set for API keys.
    pub qualified: bool,
    /// Every claim of the token (empty for API keys); policies read them.
    pub claims: Map<String, Value>,
    /// Unix seconds.
    pub expires_at: Option<u64>,
    /// The fixed identity headers, built on first use and reused while the identity is
    /// cached (a repeated token costs no header formatting).
    pub header_values: std::sync::OnceLock<Vec<(http::HeaderName, http::HeaderValue)>>,
}

impl Identity {
    /// The issuer that vouched for the subject, when it is a token's (not an API key's name).
    pub fn token_issuer(&self) -> Option<&str> {
        match self.method {
            AuthMethod::ApiKey => None,
            _ => self.issuer.as_deref(),
        }
    }

    /// Who the upstream is told this is (`X-Auth-Request-User`, the assertion's `sub`).
    pub fn user(&self) -> std::borrow::Cow<'_, str> {
        match self.token_issuer().filter(|_| self.qualified) {
            Some(issuer) => format!("{issuer}#{}", self.subject).into(),
            None => self.subject.as_str().into(),
        }
    }

    /// `X-Auth-Request-User`, `-Email`, `-Preferred-Username`, `-Groups` (spec §3), and
    /// `-Issuer` when the user is qualified; a value that cannot be a header value is left out.
    pub fn header_values(&self) -> &[(http::HeaderName, http::HeaderValue)] {
        use http::HeaderName;
        const USER: HeaderName = HeaderName::from_static("x-auth-request-user");
        const EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
        const USERNAME: HeaderName = HeaderName::from_static("x-auth-request-preferred-username");
        const GROUPS: HeaderName = HeaderName::from_static("x-auth-request-groups");
        const ISSUER: HeaderName = HeaderName::from_static("x-auth-request-issuer");
        self.header_values.get_or_init(|| {
            let groups = (!self.groups.is_empty()).then(|| self.groups.join(","));
            let issuer = self.token_issuer().filter(|_| self.qualified);
            [
                (USER, Some(self.user().as_ref())),
                (EMAIL, self.email.as_deref()),
                (USERNAME, self.username.as_deref()),
                (GROUPS, groups.as_deref()),
                (ISSUER, issuer),
            ]
            .into_iter()
            .filter_map(|(name, value)| Some((name, http::HeaderValue::from_str(value?).ok()?)))
            .collect()
        })
    }
}

/// Why a request is not authenticated. `reason` is a short, bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential for any of the route's methods: 401 without an error code.
    Missing,
    /// The credential is not even well-formed: 400 `invalid_request`.
    Malformed(&'static str),
    /// Refused: 401 `invalid_token`.
    Invalid(&'static str),
    /// Cannot be checked right now (keys or introspection unreachable): 503, fail closed.
    Unavailable(&'static str),
}

impl AuthFailure {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing_credentials",
            AuthFailure::Malformed(r) | AuthFailure::Invalid(r) | AuthFailure::Unavailable(r) => r,
        }
    }
}

/// A credential as presented, before it is checked.
enum Credential<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
}

/// The largest credential looked at; anything longer is refused unread.
pub const MAX_CREDENTIAL_LEN: usize = 16 * 1024;

/// Everything needed to authenticate requests under one config.
pub struct Authenticator {
    pub bearer: Arc<BearerAuth>,
    pub api_keys: api_key::ApiKeys,
}

impl Authenticator {
    /// Builds the authenticator; key stores of issuers whose config did not change are
    /// carried over from `previous` (with their keys and cached tokens).
    pub async fn build(
        config: &Config,
        previous: Option<&Authenticator>,
        metrics: &Arc<Metrics>,
    ) -> Authenticator {
        let bearer = match previous {
            Some(p) if p.bearer.same_config(&config.bearer) => p.bearer.clone(),
            _ => Arc::new(BearerAuth::new(config.bearer.clone(), metrics.clone()).await),
        };
        Authenticator {
            bearer,
            api_keys: api_key::ApiKeys::new(&config.api_keys),
        }
    }

    /// Authenticates with the first of `methods` whose credential the request carries.
    pub async fn authenticate(
        &self,
        methods: &[AuthMethod],
        req: &RequestHeader,
    ) -> Result<(AuthMethod, Arc<Identity>), (AuthMethod, AuthFailure)> {
        let first = methods.first().copied().unwrap_or(AuthMethod::None);
        let credential = match find_credential(methods, req) {
            Ok(Some(c)) => c,
            Ok(None) => return Err((first, AuthFailure::Missing)),
            Err((method, failure)) => return Err((method, failure)),
        };
        match credential {
            Credential::Bearer(token) => self
                .bearer
                .authenticate(token)
                .await
                .map(|i| (AuthMethod::Bearer, i))
                .map_err(|f| (AuthMethod::Bearer, f)),
            Credential::ApiKey(key) => self
                .api_keys
                .authenticate(key)
                .map(|i| (AuthMethod::ApiKey, i))
                .map_err(|f| (AuthMethod::ApiKey, f)),
        }
    }

    /// Ready when every issuer has keys (spec: `/readyz`).
    pub fn readiness(&self) -> Vec<(String, bool)> {
        self.bearer.readiness()
    }
}

/// The credential of the first method in `methods` that the request carries.
fn find_credential<'a>(
    methods: &[AuthMethod],
    req: &'a RequestHeader,
) -> Result<Option<Credential<'a>>, (AuthMethod, AuthFailure)> {
    let mut authorizations = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let authorization = authorizations.next();
    let repeated = authorizations.next().is_some();
    let api_key_header = {
        let mut values = req.headers.get_all("x-api-key").iter();
        let first = values.next();
        (first, values.next().is_some())
    };
    for &method in methods {
        match method {
            AuthMethod::Bearer => {
                let Some(value) = authorization else { continue };
                let Some(token) = scheme_value(value.as_bytes(), "bearer") else {
                    continue;
                };
                if repeated {
                    return Err((method, AuthFailure::Malformed("repeated_authorization")));
                }
                return check_token_syntax(token)
                    .map(|t| Some(Credential::Bearer(t)))
                    .map_err(|f| (method, f));
            }
            AuthMethod::ApiKey => {
                let value = match (api_key_header, authorization) {
                    ((Some(_), true), _) => {
                        return Err((method, AuthFailure::Malformed("repeated_api_key")))
                    }
                    ((Some(v), false), _) => Some(v.as_bytes()),
                    ((None, _), Some(a)) => scheme_value(a.as_bytes(), "apikey"),
                    _ => None,
                };
                let Some(key) = value else { continue };
                if repeated {
                    return Err((method, AuthFailure::Malformed("repeated_authorization")));
                }
                let key = std::str::from_utf8(key)
                    .ok()
                    .filter(|k| {
                        !k.is_empty() && k.len() <= 512 && k.bytes().all(|b| b.is_ascii_graphic())
                    })
                    .ok_or((method, AuthFailure::Malformed("malformed_api_key")))?;
                return Ok(Some(Credential::ApiKey(key)));
            }
            AuthMethod::None | AuthMethod::Session => {}
        }
    }
    Ok(None)
}

/// The value after `scheme ` in an Authorization header (scheme case-insensitive).
fn scheme_value<'a>(header: &'a [u8], scheme: &str) -> Option<&'a [u8]> {
    let n = scheme.len();
    if header.len() > n && header[..n].eq_ignore_ascii_case(scheme.as_bytes()) && header[n] == b' '
    {
        Some(header[n + 1..].trim_ascii())
    } else if header.eq_ignore_ascii_case(scheme.as_bytes()) {
        Some(&[])
    } else {
        None
    }
}

/// RFC 6750 b64token syntax, and a size cap.
fn check_token_syntax(token: &[u8]) -> Result<&str, AuthFailure> {
    if token.is_empty() {
        return Err(AuthFailure::Malformed("empty_token"));
    }
    if token.len() > MAX_CREDENTIAL_LEN {
        return Err(AuthFailure::Invalid("token_too_large"));
    }
    let body_end = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let valid = token[..body_end].iter().all(|&b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
    });
    if !valid || body_end == 0 {
        return Err(AuthFailure::Malformed("malformed_token"));
    }
    std::str::from_utf8(token).map_err(|_| AuthFailure::Malformed("malformed_token"))
}

/// A claim by dotted path (`realm_access.roles`); a literal key with dots wins.
pub fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// A list claim: an array of strings, or one string split on spaces or commas.
pub fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => s
            .split([' ', ','])
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn found(
        methods: &[AuthMethod],
        headers: &[(&str, &str)],
    ) -> Result<Option<(bool, String)>, AuthFailure> {
        let r = req(headers);
        find_credential(methods, &r)
            .map(|c| {
                c.map(|c| match c {
                    Credential::Bearer(t) => (true, t.to_string()),
                    Credential::ApiKey(k) => (false, k.to_string()),
                })
            })
            .map_err(|(_, f)| f)
    }

    #[test]
    fn credentials_by_route_methods() {
        use AuthMethod::{ApiKey, Bearer};
        assert_eq!(
            found(&[Bearer], &[("Authorization", "Bearer abc.def.ghi")]),
            Ok(Some((true, "abc.def.ghi".into())))
        );
        assert_eq!(
            found(&[Bearer], &[("Authorization", "bearer abc")]),
            Ok(Some((true, "abc".into())))
        );
        assert_eq!(
            found(&[Bearer], &[("Authorization", "Basic dXNlcjpwYXNz")]),
            Ok(None)
        );
        assert_eq!(found(&[Bearer], &[]), Ok(None));
        assert_eq!(
            found(&[Bearer], &[("Authorization", "Bearer")]),
            Err(AuthFailure::Malformed("empty_token"))
        );
        assert_eq!(
            found(&[Bearer], &[("Authorization", "Bearer a b")]),
            Err(AuthFailure::Malformed("malformed_token"))
        );
        assert_eq!(
            found(&[Bearer], &[("Authorization", "Bearer ===")]),
            Err(AuthFailure::Malformed("malformed_token"))
        );
        assert_eq!(
            found(
                &[Bearer],
                &[("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
            ),
            Err(AuthFailure::Malformed("repeated_authorization"))
        );
        assert_eq!(
            found(&[ApiKey], &[("X-Api-Key", "k1")]),
            Ok(Some((false, "k1".into())))
        );
        assert_eq!(
            found(&[ApiKey], &[("Authorization", "ApiKey k2")]),
            Ok(Some((false, "k2".into())))
        );
        assert_eq!(found(&[ApiKey], &[("Authorization", "Bearer t")]), Ok(None));
        assert_eq!(
            found(&[Bearer, ApiKey], &[("X-Api-Key", "k1")]),
            Ok(Some((false, "k1".into())))
        );
        assert_eq!(
            found(&[ApiKey], &[("X-Api-Key", "a"), ("X-Api-Key", "b")]),
            Err(AuthFailure::Malformed("repeated_api_key"))
        );
        let big = format!("Bearer {}", "a".repeat(MAX_CREDENTIAL_LEN + 1));
        assert_eq!(
            found(&[Bearer], &[("Authorization", big.as_str())]),
            Err(AuthFailure::Invalid("token_too_large"))
        );
    }

    #[test]
    fn with_several_issuers_the_user_names_its_issuer() {
        let mut identity = Identity {
            method: AuthMethod::Bearer,
            subject: "alice".into(),
            email: None,
            username: None,
            groups: vec!["staff".into()],
            scopes: Vec::new(),
            issuer: Some("https://corp.example/realms/x".into()),
            qualified: false,
            claims: Map::new(),
            expires_at: None,
            header_values: Default::default(),
        };
        let headers = |i: &Identity| -> Vec<(String, String)> {
            i.header_values()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                .collect()
        };
        let one_issuer = headers(&identity);
        assert_eq!(identity.user(), "alice");
        assert_eq!(
            one_issuer,
            vec![
                ("x-auth-request-user".into(), "alice".into()),
                ("x-auth-request-groups".into(), "staff".into())
            ]
        );
        identity.qualified = true;
        identity.header_values = Default::default();
        assert_eq!(identity.user(), "https://corp.example/realms/x#alice");
        assert_eq!(
            headers(&identity),
            vec![
                (
                    "x-auth-request-user".into(),
                    "https://corp.example/realms/x#alice".into()
                ),
                ("x-auth-request-groups".into(), "staff".into()),
                (
                    "x-auth-request-issuer".into(),
                    "https://corp.example/realms/x".into()
                ),
            ]
        );
        // An API key's "issuer" is its name: never shown as an issuer.
        identity.method = AuthMethod::ApiKey;
        identity.header_values = Default::default();
        assert_eq!(identity.user(), "alice");
        assert_eq!(identity.token_issuer(), None);
        assert_eq!(headers(&identity).len(), 2);
    }

    #[test]
    fn nested_claims() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"realm_access":{"roles":["a","b"]},"scope":"read write","a.b":"literal"}"#,
        )
        .unwrap();
        assert_eq!(
            string_list(claim_at(&claims, "realm_access.roles")),
            vec!["a", "b"]
        );
        assert_eq!(
            string_list(claim_at(&claims, "scope")),
            vec!["read", "write"]
        );
        assert_eq!(claim_at(&claims, "a.b"), Some(&Value::from("literal")));
        assert_eq!(claim_at(&claims, "realm_access.missing"), None);
    }
}
