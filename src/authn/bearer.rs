//! Bearer tokens: JWTs validated against the issuer's cached JWKS, opaque tokens through
//! RFC 7662 introspection, and a cache of validated tokens so a repeated token costs one
//! SHA-256 and one lookup.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::introspection::Introspector;
use super::jwks::{KeyStore, VerifyKey};
use super::{claim_at, string_list, AuthFailure, Identity};
use crate::config::{BearerConfig, EmailVerified};
use crate::identity::AuthMethod;
use crate::metrics::Metrics;

/// A validated token in the cache: valid until `exp`, and only while its key is published.
struct CachedToken {
    identity: Arc<Identity>,
    issuer: usize,
    key: PublishedAs,
    expires_at: u64,
}

/// How a cached token's key is looked for in the issuer's current keys.
enum PublishedAs {
    /// By the `kid` the token named.
    Kid(String),
    /// A token without a `kid` was checked with the issuer's only key fit for its algorithm:
    /// that very key must still be in the set.
    Key(Arc<VerifyKey>),
}

const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Every configured issuer, and what it takes to check their tokens.
pub struct BearerAuth {
    pub issuers: Vec<Arc<KeyStore>>,
    /// Keyed by the token itself: a hit is the very token that was validated (a digest as
    /// the key would cost a SHA-256 of every token on every request).
    cache: super::token_cache::TokenCache<Arc<CachedToken>>,
    introspector: Option<Introspector>,
    metrics: Arc<Metrics>,
}

/// The parts of a compact JWS, borrowed from the token.
pub struct Parsed<'a> {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    pub signing_input: &'a str,
    pub signature: &'a str,
}

/// Splits and decodes a compact JWS; no check of any value yet.
pub fn parse(token: &str) -> Result<Parsed<'_>, AuthFailure> {
    let malformed = AuthFailure::Invalid("malformed_token");
    let (signing_input, signature) = token.rsplit_once('.').ok_or(malformed)?;
    let (header_b64, payload_b64) = signing_input.split_once('.').ok_or(malformed)?;
    if payload_b64.contains('.') || header_b64.is_empty() || payload_b64.is_empty() {
        return Err(malformed);
    }
    if signature.is_empty() {
        return Err(AuthFailure::Invalid("bad_signature"));
    }
    let decode = |part: &str| -> Result<Map<String, Value>, AuthFailure> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| malformed)
    };
    Ok(Parsed {
        header: decode(header_b64)?,
        claims: decode(payload_b64)?,
        signing_input,
        signature,
    })
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A NumericDate claim (RFC 7519): a JSON number; fractions are allowed and truncated.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthFailure> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0 && f.is_finite())
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or(AuthFailure::Invalid("invalid_claims")),
        Some(_) => Err(AuthFailure::Invalid("invalid_claims")),
    }
}

/// Algorithms by their exact registered names; `none` in any casing is not among them.
fn algorithm(name: &str) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match name {
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        _ => return None,
    })
}

/// The verdict on a JWT whose signature is yet to be checked.
pub struct Checked<'a> {
    pub issuer: usize,
    pub alg: Algorithm,
    pub kid: Option<&'a str>,
}

impl BearerAuth {
    /// Builds the issuers and fetches their keys once; an unreachable IdP leaves the store
    /// empty (and `/readyz` unready) rather than failing.
    pub async fn new(configs: Vec<BearerConfig>, metrics: Arc<Metrics>) -> Self {
        let auth = Self::without_keys(configs, metrics);
        for store in &auth.issuers {
            store.refresh().await;
        }
        auth
    }

    /// The issuers with empty key stores (keys come from `refresh` or `install`).
    pub fn without_keys(configs: Vec<BearerConfig>, metrics: Arc<Metrics>) -> Self {
        let issuers = configs
            .into_iter()
            .map(|c| Arc::new(KeyStore::new(c, metrics.clone())))
            .collect();
        BearerAuth::with_stores(issuers, metrics)
    }

    /// One issuer whose keys are fetched through `client` (an IdP's own TLS settings).
    pub fn one_issuer(
        config: BearerConfig,
        metrics: Arc<Metrics>,
        client: reqwest::Client,
    ) -> Self {
        let store = Arc::new(KeyStore::with_client(config, metrics.clone(), client));
        BearerAuth::with_stores(vec![store], metrics)
    }

    fn with_stores(issuers: Vec<Arc<KeyStore>>, metrics: Arc<Metrics>) -> Self {
        let introspector = Introspector::new(&issuers);
        BearerAuth {
            cache: super::token_cache::TokenCache::new(CACHE_BYTES),
            issuers,
            introspector,
            metrics,
        }
    }

    pub fn same_config(&self, configs: &[BearerConfig]) -> bool {
        self.issuers.len() == configs.len()
            && self
                .issuers
                .iter()
                .zip(configs)
                .all(|(s, c)| s.config == *c)
    }

    pub fn readiness(&self) -> Vec<(String, bool)> {
        self.issuers
            .iter()
            .map(|s| (s.config.issuer.clone(), s.has_keys()))
            .collect()
    }

    /// The hot path for a repeated token: one cache lookup.
    pub fn cached(&self, token: &str) -> Option<Arc<Identity>> {
        if let Some(hit) = self.cache.get(token) {
            let keys = self.issuers[hit.issuer].keys();
            let key_still_published = match &hit.key {
                PublishedAs::Kid(kid) => keys.contains_kid(kid),
                PublishedAs::Key(key) => keys.holds(key),
            };
            if key_still_published && hit.expires_at > unix_now() {
                return Some(hit.identity.clone());
            }
            self.cache.remove(token);
        }
        None
    }

    /// Checks a bearer token (already syntax-checked and size-capped).
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Identity>, AuthFailure> {
        let hit = self.cached(token);
        if hit.is_none() {
            // A cached token is the very string that passed this check when it was stored.
            super::check_token_syntax(token.as_bytes())?;
        }
        let counter = match hit {
            Some(_) => &self.metrics.token_cache_hits,
            None => &self.metrics.token_cache_misses,
        };
        counter.inc();
        crate::otel::note_cache_hit(hit.is_some());
        if let Some(identity) = hit {
            return Ok(identity);
        }
        if token.bytes().filter(|&b| b == b'.').count() != 2 {
            return match &self.introspector {
                Some(i) => i.introspect(token, Sha256::digest(token).into()).await,
                None => Err(AuthFailure::Invalid("malformed_token")),
            };
        }
        let parsed = parse(token)?;
        let checked = self.check_header(&parsed)?;
        let store = &self.issuers[checked.issuer];
        let key = match store.keys().find(checked.kid, checked.alg) {
            Some(k) => k,
            None => {
                let had_keys = store.has_keys();
                match store
                    .refetch_for_unknown_kid(checked.kid, checked.alg)
                    .await
                {
                    Some(k) => k,
                    None if !had_keys && !store.has_keys() => {
                        return Err(AuthFailure::Unavailable("jwks_unavailable"))
                    }
                    None => return Err(AuthFailure::Invalid("unknown_kid")),
                }
            }
        };
        self.check_signature(&parsed, &checked, &key)?;
        let issuer = checked.issuer;
        let published = match checked.kid {
            Some(kid) => PublishedAs::Kid(kid.to_string()),
            None => PublishedAs::Key(key.clone()),
        };
        // The claims move into the identity: a first-seen token copies none of them.
        let identity = Arc::new(self.identity(parsed.claims, issuer, unix_now())?);
        let expires_at = identity.expires_at.unwrap_or(0);
        let weight = u64::from(estimated_size(&identity)) + token.len() as u64;
        self.cache.insert(token, weight, || {
            Arc::new(CachedToken {
                identity: identity.clone(),
                issuer,
                key: published,
                expires_at,
            })
        });
        Ok(identity)
    }

    /// Header and issuer checks that need no key: which issuer, which algorithm, which key id.
    pub fn check_header<'a>(&self, parsed: &'a Parsed<'_>) -> Result<Checked<'a>, AuthFailure> {
        let iss = parsed
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(AuthFailure::Invalid("unknown_issuer"))?;
        let issuer = self
            .issuers
            .iter()
            .position(|s| s.config.issuer == iss)
            .ok_or(AuthFailure::Invalid("unknown_issuer"))?;
        let config = &self.issuers[issuer].config;
        let alg = parsed
            .header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(algorithm)
            .filter(|a| config.algorithms.contains(a))
            .ok_or(AuthFailure::Invalid("alg_not_allowed"))?;
        // We understand no JWS extension, so any `crit` must be refused (RFC 7515 §4.1.11).
        if parsed.header.contains_key("crit") {
            return Err(AuthFailure::Invalid("unknown_crit"));
        }
        if let Some(required) = &config.token_type {
            let typ = parsed
                .header
                .get("typ")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let typ = typ.strip_prefix("application/").unwrap_or(typ);
            let required = required.strip_prefix("application/").unwrap_or(required);
            if !typ.eq_ignore_ascii_case(required) {
                return Err(AuthFailure::Invalid("wrong_type"));
            }
        }
        let kid = match parsed.header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(AuthFailure::Invalid("malformed_token")),
        };
        // `jwk`, `jku`, `x5u`, `x5c` in the header are never read: keys come from the JWKS only.
        Ok(Checked { issuer, alg, kid })
    }

    /// Signature and claims; `now` in Unix seconds.
    pub fn verify(
        &self,
        parsed: &Parsed<'_>,
        checked: &Checked<'_>,
        key: &VerifyKey,
        now: u64,
    ) -> Result<Identity, AuthFailure> {
        self.check_signature(parsed, checked, key)?;
        self.identity(parsed.claims.clone(), checked.issuer, now)
    }

    /// The key fits the token's algorithm (its family, and the `alg` it pins), and made
    /// this signature: one native verify.
    pub fn check_signature(
        &self,
        parsed: &Parsed<'_>,
        checked: &Checked<'_>,
        key: &VerifyKey,
    ) -> Result<(), AuthFailure> {
        if !key.family.allows(checked.alg) || key.alg.is_some_and(|a| a != checked.alg) {
            return Err(AuthFailure::Invalid("key_mismatch"));
        }
        let input = parsed.signing_input.as_bytes();
        if !key.key.verify(checked.alg, input, parsed.signature) {
            return Err(AuthFailure::Invalid("bad_signature"));
        }
        Ok(())
    }

    /// Time and audience checks of a signed token's claims by its issuer's rules, then the
    /// identity they describe.
    pub fn identity(
        &self,
        claims: Map<String, Value>,
        issuer: usize,
        now: u64,
    ) -> Result<Identity, AuthFailure> {
        let config = &self.issuers[issuer].config;
        check_claims(&claims, config, now)?;
        identity_from_claims(claims, config, AuthMethod::Bearer)
    }

    pub fn cached_tokens(&self) -> u64 {
        self.cache.len() as u64
    }
}

/// Time and audience checks (RFC 7519 §4.1) with the issuer's leeway.
pub fn check_claims(
    claims: &Map<String, Value>,
    config: &BearerConfig,
    now: u64,
) -> Result<(), AuthFailure> {
    let leeway = config.leeway.as_secs();
    let exp = numeric_date(claims, "exp")?.ok_or(AuthFailure::Invalid("invalid_claims"))?;
    if exp.saturating_add(leeway) <= now {
        return Err(AuthFailure::Invalid("expired"));
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if nbf > now.saturating_add(leeway) {
            return Err(AuthFailure::Invalid("not_yet_valid"));
        }
    }
    if let Some(iat) = numeric_date(claims, "iat")? {
        if iat > now.saturating_add(leeway) {
            return Err(AuthFailure::Invalid("issued_in_future"));
        }
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => config.audiences.iter().any(|c| c == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| config.audiences.iter().any(|c| c == a)),
        _ => false,
    };
    if !audience_ok {
        return Err(AuthFailure::Invalid("wrong_audience"));
    }
    Ok(())
}

/// The identity a token's claims describe, by the issuer's claim names. An email the
/// issuer did not vouch for (see [`EmailVerified`]) is left out, also from the claims.
pub fn identity_from_claims(
    mut claims: Map<String, Value>,
    config: &BearerConfig,
    method: AuthMethod,
) -> Result<Identity, AuthFailure> {
    let text = |claims: &Map<String, Value>, path: &str| {
        claim_at(claims, path)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let subject = text(&claims, &config.claims.subject)
        .filter(|s| !s.is_empty())
        .ok_or(AuthFailure::Invalid("missing_subject"))?;
    let mut scopes = string_list(claim_at(&claims, "scope"));
    scopes.extend(string_list(claim_at(&claims, "scp")));
    let email = if email_trusted(&claims, config.claims.email_verified) {
        text(&claims, &config.claims.email)
    } else {
        remove_claim_at(&mut claims, &config.claims.email);
        None
    };
    Ok(Identity {
        method,
        email,
        username: text(&claims, &config.claims.username),
        groups: string_list(claim_at(&claims, &config.claims.groups)),
        scopes,
        issuer: Some(config.issuer.clone()),
        qualified: config.qualify_subject,
        expires_at: numeric_date(&claims, "exp").ok().flatten(),
        header_values: Default::default(),
        subject,
        claims,
    })
}

/// Whether the token's email may stand for the person: `email_verified` is `true` (or
/// `"true"`, as some providers write it), or absent where the issuer never sends it.
fn email_trusted(claims: &Map<String, Value>, rule: EmailVerified) -> bool {
    let verified = match claims.get("email_verified") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => Some(s == "true"),
        Some(_) => Some(false),
    };
    match rule {
        EmailVerified::Required => verified == Some(true),
        EmailVerified::IfPresent => verified != Some(false),
        EmailVerified::Ignore => true,
    }
}

/// Removes a claim found by [`claim_at`]'s rules (a literal key first, then a dotted path).
fn remove_claim_at(claims: &mut Map<String, Value>, path: &str) {
    if claims.remove(path).is_some() {
        return;
    }
    let Some((parent, last)) = path.rsplit_once('.') else {
        return;
    };
    let mut current = claims;
    for part in parent.split('.') {
        match current.get_mut(part).and_then(Value::as_object_mut) {
            Some(next) => current = next,
            None => return,
        }
    }
    current.remove(last);
}

/// Roughly how many bytes an identity takes in memory (cache weights): the struct with its
/// header values, and per claim its share of a B-tree node besides its text. Checked against
/// RSS with `examples/session_memory --used`.
pub(crate) fn estimated_size(identity: &Identity) -> u32 {
    let text = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() + 16);
    let claims: usize = identity
        .claims
        .iter()
        .map(|(k, v)| 100 + k.len() + value_size(v))
        .sum();
    let groups: usize = identity.groups.iter().map(|g| g.len() + 40).sum();
    (700 + identity.subject.len()
        + text(&identity.email)
        + text(&identity.username)
        + groups
        + claims)
        .try_into()
        .unwrap_or(u32::MAX)
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 16,
        Value::Array(a) => a.iter().map(|v| 32 + value_size(v)).sum::<usize>() + 16,
        Value::Object(o) => {
            o.iter()
                .map(|(k, v)| 100 + k.len() + value_size(v))
                .sum::<usize>()
                + 16
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_are_exact() {
        assert_eq!(algorithm("RS256"), Some(Algorithm::RS256));
        for bad in [
            "none", "None", "NONE", "nOnE", "rs256", "HS256", "HS512", "",
        ] {
            assert_eq!(algorithm(bad), None, "{bad}");
        }
    }

    #[test]
    fn parse_rejects_malformed_segments() {
        for bad in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            ".b.c",
            "a..c",
            "!!.e30.sig",
            "e30.e30",
            "e30.e30.",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let p = parse("e30.eyJhIjoxfQ.c2ln").unwrap();
        assert_eq!(p.claims.get("a"), Some(&Value::from(1)));
    }

    #[test]
    fn unverified_emails_leave_the_identity() {
        let config = |rule| BearerConfig {
            issuer: "https://idp".into(),
            audiences: vec!["api".into()],
            jwks_uri: None,
            algorithms: Vec::new(),
            leeway: std::time::Duration::ZERO,
            token_type: None,
            claims: crate::config::ClaimNames {
                subject: "sub".into(),
                email: "profile.mail".into(),
                username: "preferred_username".into(),
                groups: "groups".into(),
                email_verified: rule,
            },
            introspection: None,
            unknown_kid_refetch_interval: std::time::Duration::ZERO,
            qualify_subject: false,
        };
        let identity = |verified: Option<Value>, rule| {
            let mut claims = serde_json::json!({"sub": "s", "profile": {"mail": "m@example.com"}});
            if let Some(v) = verified {
                claims["email_verified"] = v;
            }
            let Value::Object(claims) = claims else {
                unreachable!()
            };
            identity_from_claims(claims, &config(rule), AuthMethod::Bearer).unwrap()
        };
        use EmailVerified::*;
        let v = |j: Value| Some(j);
        for (verified, rule, trusted) in [
            (v(true.into()), Required, true),
            (v("true".into()), Required, true),
            (v(false.into()), Required, false),
            (v("True".into()), Required, false),
            (v(1.into()), Required, false),
            (None, Required, false),
            (v(Value::Null), Required, false),
            (None, IfPresent, true),
            (v(Value::Null), IfPresent, true),
            (v(true.into()), IfPresent, true),
            (v(false.into()), IfPresent, false),
            (v("false".into()), IfPresent, false),
            (v(false.into()), Ignore, true),
        ] {
            let what = format!("{verified:?} {rule:?}");
            let i = identity(verified, rule);
            assert_eq!(i.email.is_some(), trusted, "{what}");
            // Policies and claim headers cannot read it from the claims either.
            let in_claims = claim_at(&i.claims, "profile.mail").is_some();
            assert_eq!(in_claims, trusted, "{what}");
        }
    }

    #[test]
    fn numeric_dates() {
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"a": 10, "b": 10.7, "c": "10", "d": -1, "e": null}"#).unwrap();
        assert_eq!(numeric_date(&claims, "a"), Ok(Some(10)));
        assert_eq!(numeric_date(&claims, "b"), Ok(Some(10)));
        assert!(numeric_date(&claims, "c").is_err());
        assert!(numeric_date(&claims, "d").is_err());
        assert!(numeric_date(&claims, "e").is_err());
        assert_eq!(numeric_date(&claims, "missing"), Ok(None));
    }
}
