//! Who made a request: the [`Identity`] an authentication method establishes, and the
//! [`AuthMethod`]s a route accepts. A leaf: config, authentication, authorization, sessions
//! and metrics all speak of these, and it speaks of none of them.

use serde_json::{Map, Value};

/// How a request is authenticated (a route's `auth` list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    None,
    Session,
    Bearer,
    ApiKey,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Session => "session",
            AuthMethod::Bearer => "bearer",
            AuthMethod::ApiKey => "api_key",
        }
    }
}

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

/// A claim by dotted path (`realm_access.roles`); a literal key with dots wins.
pub fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    // A name without a dot was the whole lookup.
    if !path.contains('.') {
        return None;
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
        assert_eq!(claim_at(&claims, "absent"), None);
        assert_eq!(
            claim_at(&claims, "realm_access"),
            claims.get("realm_access")
        );
    }
}
