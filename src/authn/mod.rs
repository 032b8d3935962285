//! Authentication: who is calling. Each method turns a credential into an [`Identity`] or
//! a precise [`AuthFailure`]; the precise reason goes to logs and metrics, the client only
//! learns the RFC 6750 error class.

pub mod api_key;
pub mod bearer;
pub mod dpop;
pub(crate) mod fetch;
pub mod introspection;
pub mod jwks;
pub mod signature;
pub mod token_cache;

use std::sync::Arc;

use http::HeaderMap;

use crate::config::Config;
use crate::identity::{claim_at, string_list, AuthMethod, Identity};
use crate::metrics::Metrics;

pub use bearer::BearerAuth;

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
    /// `dpop`: it came under the `DPoP` scheme (RFC 9449), not `Bearer`.
    Bearer {
        token: &'a str,
        dpop: bool,
    },
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

    /// Authenticates with the first of `methods` whose credential the request carries; the
    /// `bool` says a bearer token came under the `DPoP` scheme.
    pub async fn authenticate(
        &self,
        methods: &[AuthMethod],
        headers: &HeaderMap,
    ) -> Result<(AuthMethod, Arc<Identity>, bool), (AuthMethod, AuthFailure)> {
        let first = methods.first().copied().unwrap_or(AuthMethod::None);
        let credential = match find_credential(methods, headers) {
            Ok(Some(c)) => c,
            Ok(None) => return Err((first, AuthFailure::Missing)),
            Err((method, failure)) => return Err((method, failure)),
        };
        match credential {
            Credential::Bearer { token, dpop } => self
                .bearer
                .authenticate(token)
                .await
                .map(|i| (AuthMethod::Bearer, i, dpop))
                .map_err(|f| (AuthMethod::Bearer, f)),
            Credential::ApiKey(key) => self
                .api_keys
                .authenticate(key)
                .map(|i| (AuthMethod::ApiKey, i, false))
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
    headers: &'a HeaderMap,
) -> Result<Option<Credential<'a>>, (AuthMethod, AuthFailure)> {
    let mut authorizations = headers.get_all(http::header::AUTHORIZATION).iter();
    let authorization = authorizations.next();
    let repeated = authorizations.next().is_some();
    let api_key_header = {
        let mut values = headers.get_all("x-api-key").iter();
        let first = values.next();
        (first, values.next().is_some())
    };
    for &method in methods {
        match method {
            AuthMethod::Bearer => {
                let Some(value) = authorization else { continue };
                // RFC 9449 §7.1: a DPoP-bound token comes under its own scheme.
                let (token, dpop) = match scheme_value(value.as_bytes(), "bearer") {
                    Some(token) => (token, false),
                    None => match scheme_value(value.as_bytes(), "dpop") {
                        Some(token) => (token, true),
                        None => continue,
                    },
                };
                if repeated {
                    return Err((method, AuthFailure::Malformed("repeated_authorization")));
                }
                // Its syntax is checked by the bearer check, after the cache: a cached token
                // is the very string that passed, and tokens are long.
                return token_text(token)
                    .map(|token| Some(Credential::Bearer { token, dpop }))
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
pub(crate) fn scheme_value<'a>(header: &'a [u8], scheme: &str) -> Option<&'a [u8]> {
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

/// A byte of RFC 6750's b64token before its trailing `=`s.
fn is_b64token_byte(b: u8) -> bool {
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    letter
        | digit
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

/// A bearer token as text, within the size cap.
fn token_text(token: &[u8]) -> Result<&str, AuthFailure> {
    if token.is_empty() {
        return Err(AuthFailure::Malformed("empty_token"));
    }
    if token.len() > MAX_CREDENTIAL_LEN {
        return Err(AuthFailure::Invalid("token_too_large"));
    }
    std::str::from_utf8(token).map_err(|_| AuthFailure::Malformed("malformed_token"))
}

/// RFC 6750 b64token syntax, and a size cap.
fn check_token_syntax(token: &[u8]) -> Result<&str, AuthFailure> {
    let text = token_text(token)?;
    let body_end = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    // Whole chunks without an early exit, so the compiler checks 16 bytes at a time: a
    // first-seen token is checked before its signature, and byte by byte the check cost
    // about 12,500 instructions more for a 645-byte token (callgrind).
    let valid = token[..body_end]
        .chunks(64)
        .all(|chunk| chunk.iter().fold(true, |ok, &b| ok & is_b64token_byte(b)));
    if !valid || body_end == 0 {
        return Err(AuthFailure::Malformed("malformed_token"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64token_bytes_are_exactly_rfc_6750s() {
        for b in 0..=255u8 {
            let expected =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_b64token_byte(b), expected, "byte {b:#04x}");
        }
    }

    fn req(headers: &[(&str, &str)]) -> HeaderMap {
        let mut r = HeaderMap::new();
        for (k, v) in headers {
            let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap();
            r.append(name, v.parse().unwrap());
        }
        r
    }

    #[test]
    fn a_bad_byte_anywhere_in_a_long_token_is_refused() {
        let good: Vec<u8> = (0..200).map(|i| b"aZ09-._~+/"[i % 10]).collect();
        assert!(check_token_syntax(&good).is_ok());
        for at in 0..good.len() {
            for bad in [b'!', b'=', b' ', b'"', b':', b'@', 0x7f, 0x80] {
                let mut token = good.clone();
                token[at] = bad;
                // A trailing `=` is padding, the one place it belongs.
                let padding = bad == b'=' && at == good.len() - 1;
                assert_eq!(
                    check_token_syntax(&token).is_ok(),
                    padding,
                    "{bad:#04x} at {at}"
                );
            }
        }
        let mut padded = good.clone();
        padded.extend_from_slice(b"==");
        assert!(check_token_syntax(&padded).is_ok());
    }

    /// The credential found, with a bearer token's syntax checked as the bearer check does
    /// on a cache miss.
    fn found(
        methods: &[AuthMethod],
        headers: &[(&str, &str)],
    ) -> Result<Option<(bool, String)>, AuthFailure> {
        let r = req(headers);
        match find_credential(methods, &r).map_err(|(_, f)| f)? {
            Some(Credential::Bearer { token: t, .. }) => {
                check_token_syntax(t.as_bytes())?;
                Ok(Some((true, t.to_string())))
            }
            Some(Credential::ApiKey(k)) => Ok(Some((false, k.to_string()))),
            None => Ok(None),
        }
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
}
