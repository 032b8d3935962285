//! The key store of one issuer: its JWKS, fetched at start, refreshed in the background,
//! kept when a refresh fails (an IdP outage must not stop validation with known keys), and
//! refetched once (single-flight, rate-limited) when a token names a key we do not know.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::Algorithm;

use super::fetch;
pub use super::signature::KeyFamily;
use super::signature::PublicKey;
use crate::config::BearerConfig;
use crate::metrics::Metrics;

pub struct VerifyKey {
    pub kid: Option<String>,
    pub family: KeyFamily,
    /// The JWK's own `alg`, when it pins one.
    pub alg: Option<Algorithm>,
    /// Parsed once here, so a first-seen token costs one native verify.
    pub key: PublicKey,
}

#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    all: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The key a token's header names; without a `kid`, the only key fit for `alg`.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None => {
                let mut fit = self.all.iter().filter(|k| k.family.allows(alg));
                match (fit.next(), fit.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None,
                }
            }
        }
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// Whether `key` is one of this set's keys: the very key, not an equal one. A refresh
    /// builds new keys, so a token checked without a `kid` is checked again after one.
    pub fn holds(&self, key: &Arc<VerifyKey>) -> bool {
        self.all.iter().any(|k| Arc::ptr_eq(k, key))
    }
}

/// Builds the usable keys of a JWKS; symmetric, encryption-only and malformed keys are
/// skipped (never HMAC with a public key).
pub fn key_set_from_jwks(set: &JwkSet) -> (KeySet, usize) {
    let mut keys = KeySet::default();
    let mut skipped = 0;
    for jwk in &set.keys {
        match verify_key(jwk) {
            Some(k) => {
                let k = Arc::new(k);
                if let Some(kid) = &k.kid {
                    keys.by_kid.insert(kid.clone(), k.clone());
                }
                keys.all.push(k);
            }
            None => skipped += 1,
        }
    }
    (keys, skipped)
}

fn verify_key(jwk: &Jwk) -> Option<VerifyKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        Some(a) => Some(a.to_string().parse::<Algorithm>().ok()?),
        None => None,
    };
    let key = match PublicKey::from_jwk(jwk) {
        Ok(k) => k,
        Err(e) => {
            tracing::debug!(kid = ?jwk.common.key_id, error = %e, "JWKS key skipped");
            return None;
        }
    };
    let family = key.family();
    if alg.is_some_and(|a| !family.allows(a)) {
        return None;
    }
    Some(VerifyKey {
        kid: jwk.common.key_id.clone(),
        family,
        alg,
        key,
    })
}

const MIN_REFRESH: Duration = Duration::from_secs(300);
const MAX_REFRESH: Duration = Duration::from_secs(86_400);
const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The keys of one `[[bearer]]` issuer.
pub struct KeyStore {
    pub config: BearerConfig,
    keys: ArcSwap<KeySet>,
    jwks_uri: ArcSwapOption<String>,
    next_refresh: ArcSwap<Instant>,
    /// Held while any fetch runs: concurrent unknown-kid lookups share one fetch.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    fetch_count: AtomicU64,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl KeyStore {
    pub fn new(config: BearerConfig, metrics: Arc<Metrics>) -> Self {
        KeyStore::with_client(config, metrics, fetch::client())
    }

    /// A key store that fetches through `client` (an IdP's own TLS settings).
    pub fn with_client(
        config: BearerConfig,
        metrics: Arc<Metrics>,
        client: reqwest::Client,
    ) -> Self {
        KeyStore {
            jwks_uri: ArcSwapOption::from(config.jwks_uri.clone().map(Arc::new)),
            config,
            keys: ArcSwap::from_pointee(KeySet::default()),
            next_refresh: ArcSwap::from_pointee(Instant::now()),
            fetching: tokio::sync::Mutex::new(None),
            fetch_count: AtomicU64::new(0),
            client,
            metrics,
        }
    }

    pub fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }

    pub fn has_keys(&self) -> bool {
        !self.keys.load().is_empty()
    }

    /// How many times the JWKS was requested (for tests and troubleshooting).
    pub fn fetch_count(&self) -> u64 {
        self.fetch_count.load(Ordering::Relaxed)
    }

    /// Replaces the keys with those of `set` (for tests and benchmarks).
    pub fn install(&self, set: &JwkSet) -> usize {
        let (keys, _) = key_set_from_jwks(set);
        let count = keys.len();
        self.keys.store(Arc::new(keys));
        count
    }

    /// Sets the key set's URL (known from the caller's own discovery).
    pub fn set_jwks_uri(&self, uri: String) {
        self.jwks_uri.store(Some(Arc::new(uri)));
    }

    pub fn refresh_due(&self) -> bool {
        Instant::now() >= **self.next_refresh.load()
    }

    /// Periodic refresh; on failure the current keys stay in force.
    pub async fn refresh(&self) {
        let _one = self.fetching.lock().await;
        self.fetch_and_swap().await;
    }

    /// For a `kid` we do not know: one refetch shared by every request waiting for it, and
    /// at most one per `unknown_kid_refetch_interval`, so junk kids cannot hammer the IdP.
    pub async fn refetch_for_unknown_kid(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Option<Arc<VerifyKey>> {
        let mut last = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(k) = self.keys.load().find(kid, alg) {
            return Some(k);
        }
        let allowed = last.is_none_or(|t| t.elapsed() >= self.config.unknown_kid_refetch_interval);
        if !allowed {
            return None;
        }
        *last = Some(Instant::now());
        self.fetch_and_swap().await;
        self.keys.load().find(kid, alg)
    }

    async fn fetch_and_swap(&self) {
        self.fetch_count.fetch_add(1, Ordering::Relaxed);
        match self.fetch().await {
            Ok((keys, max_age)) => {
                let count = keys.len();
                self.keys.store(Arc::new(keys));
                let next = max_age
                    .unwrap_or(DEFAULT_REFRESH)
                    .clamp(MIN_REFRESH, MAX_REFRESH);
                self.next_refresh.store(Arc::new(Instant::now() + next));
                self.count("success");
                tracing::info!(issuer = %self.config.issuer, keys = count, next_refresh_s = next.as_secs(), "JWKS refreshed");
            }
            Err(e) => {
                self.next_refresh
                    .store(Arc::new(Instant::now() + RETRY_AFTER_FAILURE));
                self.count("failure");
                tracing::warn!(issuer = %self.config.issuer, error = %e, keys_kept = self.keys.load().len(), "JWKS refresh failed; keeping the last good keys");
            }
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .jwks_refresh_total
            .with_label_values(&[self.config.issuer.as_str(), result])
            .inc();
    }

    async fn fetch(&self) -> Result<(KeySet, Option<Duration>), String> {
        let uri = match self.jwks_uri.load_full() {
            Some(u) => u,
            None => {
                let u = Arc::new(self.discover().await?);
                self.jwks_uri.store(Some(u.clone()));
                u
            }
        };
        let fetched =
            crate::otel::outbound("jwks_fetch", &uri, fetch::get_json(&self.client, &uri)).await?;
        let shown = fetch::loggable(&uri);
        let set: JwkSet = serde_json::from_value(fetched.body)
            .map_err(|e| format!("{shown}: not a JWKS: {e}"))?;
        let (keys, skipped) = key_set_from_jwks(&set);
        if skipped > 0 {
            tracing::debug!(issuer = %self.config.issuer, skipped, "JWKS keys skipped (unsupported type or use)");
        }
        if keys.is_empty() {
            return Err(format!("{shown}: no usable signing key"));
        }
        Ok((keys, fetched.max_age))
    }

    /// OIDC discovery: the document must name exactly the configured issuer.
    async fn discover(&self) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let doc =
            crate::otel::outbound("oidc_discovery", &url, fetch::get_json(&self.client, &url))
                .await?
                .body;
        let issuer = doc
            .get("issuer")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if issuer != self.config.issuer {
            return Err(format!(
                "discovery at {url} names issuer {issuer:?}, not the configured {:?}",
                self.config.issuer
            ));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("discovery at {url} has no jwks_uri"))?;
        crate::config::check_secure_url(jwks_uri)
            .map_err(|e| format!("jwks_uri {jwks_uri:?} {e}"))?;
        Ok(jwks_uri.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_fit_algorithms() {
        assert!(KeyFamily::Rsa.allows(Algorithm::PS384));
        assert!(!KeyFamily::Rsa.allows(Algorithm::ES256));
        assert!(!KeyFamily::Rsa.allows(Algorithm::HS256));
        assert!(KeyFamily::P256.allows(Algorithm::ES256));
        assert!(!KeyFamily::P256.allows(Algorithm::ES384));
        assert!(KeyFamily::Ed25519.allows(Algorithm::EdDSA));
    }

    #[test]
    fn symmetric_and_encryption_keys_are_skipped() {
        let set: JwkSet = serde_json::from_str(
            r#"{"keys":[
                {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
                {"kty":"RSA","use":"enc","kid":"enc","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},
                {"kty":"RSA","kid":"hs-pinned","alg":"HS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},
                {"kty":"RSA","kid":"good","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}
            ]}"#,
        )
        .unwrap();
        let (keys, skipped) = key_set_from_jwks(&set);
        assert_eq!(skipped, 3);
        assert!(keys.contains_kid("good"));
        assert!(keys.find(None, Algorithm::RS256).is_some());
        assert!(keys.find(None, Algorithm::ES256).is_none());
    }
}
