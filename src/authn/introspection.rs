//! Opaque (non-JWT) bearer tokens, checked with the issuer's RFC 7662 introspection
//! endpoint. Active answers are cached until the token's `exp` (at most 5 minutes),
//! inactive ones briefly; an endpoint that cannot answer means refusal (fail closed).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moka::sync::Cache;
use serde_json::{Map, Value};

use super::bearer::{check_claims, identity_from_claims};
use super::jwks::KeyStore;
use super::{fetch, AuthFailure, Identity};
use crate::config::{BearerConfig, IntrospectionConfig};
use crate::identity::AuthMethod;

const POSITIVE_MAX: Duration = Duration::from_secs(300);
const NEGATIVE_TTL: Duration = Duration::from_secs(30);

#[derive(Clone)]
enum Answer {
    Active(Arc<Identity>, u64),
    Inactive(u64),
}

struct AnswerExpiry;

impl moka::Expiry<[u8; 32], Answer> for AnswerExpiry {
    fn expire_after_create(
        &self,
        _k: &[u8; 32],
        v: &Answer,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        let until = match v {
            Answer::Active(_, until) | Answer::Inactive(until) => *until,
        };
        Some(Duration::from_secs(until.saturating_sub(now())))
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub struct Introspector {
    /// (issuer config, endpoint) for each issuer that introspects, in config order.
    endpoints: Vec<(BearerConfig, IntrospectionConfig)>,
    cache: Cache<[u8; 32], Answer>,
    client: reqwest::Client,
}

impl Introspector {
    pub fn new(issuers: &[Arc<KeyStore>]) -> Option<Self> {
        let endpoints: Vec<_> = issuers
            .iter()
            .filter_map(|s| {
                s.config
                    .introspection
                    .clone()
                    .map(|i| (s.config.clone(), i))
            })
            .collect();
        (!endpoints.is_empty()).then(|| Introspector {
            endpoints,
            cache: Cache::builder()
                .max_capacity(100_000)
                .expire_after(AnswerExpiry)
                .build(),
            client: fetch::client(),
        })
    }

    /// Asks each introspecting issuer in turn; the first that calls the token active wins.
    pub async fn introspect(
        &self,
        token: &str,
        hash: [u8; 32],
    ) -> Result<Arc<Identity>, AuthFailure> {
        match self.cache.get(&hash) {
            Some(Answer::Active(identity, until)) if until > now() => return Ok(identity),
            Some(Answer::Inactive(until)) if until > now() => {
                return Err(AuthFailure::Invalid("introspection_inactive"))
            }
            _ => {}
        }
        let mut unavailable = false;
        for (config, endpoint) in &self.endpoints {
            let asked = self.ask(token, config, endpoint);
            match crate::otel::outbound("introspection", &endpoint.endpoint, asked).await {
                Ok(Some(identity)) => {
                    let until = identity
                        .expires_at
                        .unwrap_or(u64::MAX)
                        .min(now() + POSITIVE_MAX.as_secs());
                    let identity = Arc::new(identity);
                    self.cache
                        .insert(hash, Answer::Active(identity.clone(), until));
                    return Ok(identity);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(issuer = %config.issuer, error = %e, "token introspection failed");
                    unavailable = true;
                }
            }
        }
        if unavailable {
            return Err(AuthFailure::Unavailable("introspection_error"));
        }
        self.cache
            .insert(hash, Answer::Inactive(now() + NEGATIVE_TTL.as_secs()));
        Err(AuthFailure::Invalid("introspection_inactive"))
    }

    /// Some(identity) for an active token meant for us, None for inactive or foreign.
    async fn ask(
        &self,
        token: &str,
        config: &BearerConfig,
        endpoint: &IntrospectionConfig,
    ) -> Result<Option<Identity>, String> {
        let resp = self
            .client
            .post(&endpoint.endpoint)
            .basic_auth(&endpoint.client_id, Some(&endpoint.client_secret))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| {
                let url = fetch::loggable(&endpoint.endpoint);
                format!("POST {url}: {}", fetch::without_url(&e))
            })?;
        let body = fetch::read_json(resp, &endpoint.endpoint).await?.body;
        let Value::Object(claims) = body else {
            return Err("introspection answer is not a JSON object".into());
        };
        Ok(active_identity(claims, config))
    }
}

/// The identity of an active introspection answer that fits this issuer and audience.
fn active_identity(claims: Map<String, Value>, config: &BearerConfig) -> Option<Identity> {
    if claims.get("active") != Some(&Value::Bool(true)) {
        return None;
    }
    if let Some(iss) = claims.get("iss") {
        if iss.as_str() != Some(config.issuer.as_str()) {
            return None;
        }
    }
    // Introspection answers may omit exp and aud; when present they must hold.
    let mut checked = claims.clone();
    checked
        .entry("exp")
        .or_insert(Value::from(now() + POSITIVE_MAX.as_secs()));
    if !checked.contains_key("aud") {
        checked.insert(
            "aud".into(),
            Value::from(config.audiences.first().cloned().unwrap_or_default()),
        );
    }
    check_claims(&checked, config, now()).ok()?;
    identity_from_claims(claims, config, AuthMethod::Bearer).ok()
}
