//! `X-Gatehouse-Assertion`: a short-lived ES256 JWT the gateway signs for each request's
//! identity (`iss` = public_url, `aud` = route, `sub`, `email`, `groups`, `iat`, `exp`, and
//! `subject_issuer` when several issuers are configured), so an upstream can verify who it
//! serves against `/_gatehouse/jwks.json` instead of trusting plain headers. The key comes
//! from `headers.assertion_key` (shared by instances) or is generated at start. Assertions
//! are reused per identity and route for half their life.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::HeadersConfig;
use crate::identity::Identity;

pub struct AssertionSigner {
    key: EcKey<Private>,
    /// The JWS header, base64url: it names the key and never changes.
    header: String,
    jwk: Value,
    issuer: String,
    ttl: Duration,
    /// Signed assertions by identity and route, with their `exp`.
    cache: moka::sync::Cache<String, (HeaderValue, u64)>,
    /// The config it was built from, so a reload keeps the key when nothing changed.
    pub source: (Option<std::path::PathBuf>, Duration, String),
}

impl AssertionSigner {
    pub fn new(config: &HeadersConfig, issuer: &str) -> Result<AssertionSigner, String> {
        let ec = match &config.assertion_key {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("assertion key {}: {e}", path.display()))?;
                PKey::private_key_from_pem(&pem)
                    .and_then(|k| k.ec_key())
                    .map_err(|e| format!("assertion key {}: {e}", path.display()))?
            }
            None => EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
                .and_then(|g| EcKey::generate(&g))
                .map_err(|e| format!("cannot generate the assertion key: {e}"))?,
        };
        let group = ec.group();
        let mut x = openssl::bn::BigNum::new().map_err(|e| e.to_string())?;
        let mut y = openssl::bn::BigNum::new().map_err(|e| e.to_string())?;
        let mut ctx = BigNumContext::new().map_err(|e| e.to_string())?;
        ec.public_key()
            .affine_coordinates(group, &mut x, &mut y, &mut ctx)
            .map_err(|e| e.to_string())?;
        let coord = |n: &openssl::bn::BigNum| -> Result<String, String> {
            n.to_vec_padded(32)
                .map(|b| URL_SAFE_NO_PAD.encode(b))
                .map_err(|e| e.to_string())
        };
        let (x, y) = (coord(&x)?, coord(&y)?);
        // RFC 7638 thumbprint as the key id: stable for a shared key file.
        let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint.as_bytes()));
        let header = json!({"typ": "JWT", "alg": "ES256", "kid": kid});
        Ok(AssertionSigner {
            key: ec,
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
            jwk: json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256"}),
            issuer: issuer.to_string(),
            ttl: config.assertion_ttl,
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.assertion_ttl / 2)
                .build(),
            source: (
                config.assertion_key.clone(),
                config.assertion_ttl,
                issuer.to_string(),
            ),
        })
    }

    /// The JWKS served at `/_gatehouse/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk.clone()] })
    }

    /// The assertion for `identity` on `route` (from the cache while it has half its life).
    pub fn assertion(&self, identity: &Identity, route: &str) -> Option<HeaderValue> {
        let user = identity.user();
        let cache_key = format!(
            "{route}\0{user}\0{}\0{}\0{}",
            identity.email.as_deref().unwrap_or(""),
            identity.groups.join(","),
            identity.issuer.as_deref().unwrap_or("")
        );
        if let Some((value, _)) = self.cache.get(&cache_key) {
            return Some(value);
        }
        let now = crate::login::oidc::unix_now();
        let exp = now + self.ttl.as_secs();
        let mut claims = json!({
            "iss": self.issuer,
            "aud": route,
            "sub": user,
            "email": identity.email,
            "preferred_username": identity.username,
            "groups": identity.groups,
            "auth_method": identity.method.as_str(),
            "iat": now,
            "exp": exp,
        });
        // With several issuers, whose subject `sub` qualifies (the gateway is `iss`).
        if let Some(issuer) = identity.token_issuer().filter(|_| identity.qualified) {
            claims["subject_issuer"] = Value::from(issuer);
        }
        let mut token = self.header.clone();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut token);
        let signature = crate::authn::signature::sign_es256(&self.key, token.as_bytes())?;
        token.push('.');
        token.push_str(&signature);
        let value = HeaderValue::from_str(&token).ok()?;
        self.cache.insert(cache_key, (value.clone(), exp));
        Some(value)
    }
}

pub type SharedSigner = Arc<AssertionSigner>;
