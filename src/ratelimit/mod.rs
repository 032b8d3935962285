//! Rate limiting: GCRA limits per client IP, subject, API key, header or route, in memory or
//! shared through Redis; and a lockout of client IPs that keep presenting bad credentials.

pub mod gcra;
pub mod memory;
pub mod redis_store;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};

use crate::authn::Identity;
use crate::config::{
    AuthFailureLimitConfig, AuthMethod, LimitKey, RateLimitConfig, RateLimitStoreConfig, StoreKind,
};
use gcra::{Decision, Rate};

/// What the request is counted by, for one limit; None when the limit does not apply
/// (a subject limit on an anonymous request, an API-key limit on a bearer token).
pub fn limit_key(
    limit: &RateLimitConfig,
    route: &str,
    client_ip: Option<IpAddr>,
    identity: Option<&Identity>,
    req: &RequestHeader,
) -> Option<String> {
    match &limit.key {
        LimitKey::ClientIp => client_ip.map(|ip| masked(ip, limit.ipv6_prefix).to_string()),
        // As the upstream knows the person: two issuers' equal subjects count apart.
        LimitKey::Subject => identity.map(|i| i.user().into_owned()),
        LimitKey::ApiKey => identity
            .filter(|i| i.method == AuthMethod::ApiKey)
            .and_then(|i| i.issuer.clone()),
        LimitKey::Header(name) => Some(
            req.headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default(),
        ),
        LimitKey::Route => Some(route.to_string()),
    }
}

/// An IPv6 address reduced to its prefix (clients often hold a whole /64).
fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if prefix < 128 => {
            let bits = u128::from(v6) & (!0u128).checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(bits.into())
        }
        other => other,
    }
}

/// The store every limit of one config is counted in.
pub enum Store {
    Memory(memory::MemoryStore),
    Redis(redis_store::RedisStore),
}

/// A failed store lookup, resolved by `on_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Decided(Decision),
    StoreError,
}

pub struct RateLimiter {
    pub config: RateLimitStoreConfig,
    store: Store,
}

impl RateLimiter {
    pub fn new(config: &RateLimitStoreConfig) -> Result<Self, String> {
        let store = match &config.kind {
            StoreKind::Memory => Store::Memory(memory::MemoryStore::new(config.max_keys)),
            StoreKind::Redis { url } => {
                Store::Redis(redis_store::RedisStore::new(url, config.timeout)?)
            }
        };
        Ok(RateLimiter {
            config: config.clone(),
            store,
        })
    }

    /// Checks and counts one request against one limit.
    pub async fn check(&self, limit: &RateLimitConfig, key: &str) -> Outcome {
        let rate = Rate::new(limit.count, limit.period, limit.burst);
        match &self.store {
            Store::Memory(m) => {
                let mut buf = Vec::with_capacity(limit.name.len() + key.len() + 1);
                buf.extend_from_slice(limit.name.as_bytes());
                buf.push(0);
                buf.extend_from_slice(key.as_bytes());
                Outcome::Decided(m.check(&buf, rate))
            }
            Store::Redis(r) => match r.check(&redis_key(&limit.name, key), rate).await {
                Ok(d) => Outcome::Decided(d),
                Err(e) => {
                    tracing::warn!(limit = %limit.name, error = %e, "rate-limit store error");
                    Outcome::StoreError
                }
            },
        }
    }

    /// Whether the store can answer now (the memory store always can).
    pub async fn reachable(&self) -> bool {
        match &self.store {
            Store::Memory(_) => true,
            Store::Redis(r) => r.ping().await,
        }
    }

    pub fn sweep(&self) {
        if let Store::Memory(m) = &self.store {
            m.sweep();
        }
    }

    pub fn memory_keys(&self) -> Option<usize> {
        match &self.store {
            Store::Memory(m) => Some(m.len()),
            Store::Redis(_) => None,
        }
    }

    pub fn store_label(&self) -> &'static str {
        match self.store {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }
}

/// Namespaced and hashed: client data never becomes a Redis key as it is.
pub fn redis_key(limit: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(limit.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    format!("gatehouse:rl:{}", hex::encode(&h.finalize()[..16]))
}

/// `RateLimit-Policy` and `RateLimit` values (IETF httpapi rate-limit headers draft).
pub fn policy_item(limit: &RateLimitConfig) -> String {
    format!(
        "\"{}\";q={};w={}",
        limit.name,
        limit.count,
        limit.period.as_secs()
    )
}

pub fn state_item(limit: &RateLimitConfig, d: &Decision) -> String {
    format!(
        "\"{}\";r={};t={}",
        limit.name,
        d.remaining,
        ceil_secs(d.reset_after)
    )
}

pub fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

/// Client IPs that keep failing authentication are refused for a cool-down, whatever they
/// send, so guessing keys or tokens gets nowhere (and learns nothing about near misses).
pub struct AuthFailures {
    config: AuthFailureLimitConfig,
    rate: Rate,
    epoch: Instant,
    state: Mutex<HashMap<IpAddr, (u64, Option<Instant>)>>,
}

impl AuthFailures {
    pub fn new(config: &AuthFailureLimitConfig) -> Self {
        AuthFailures {
            rate: Rate::new(config.max_failures, config.window, config.max_failures),
            config: config.clone(),
            epoch: Instant::now(),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds left of this IP's cool-down, if it is locked out.
    pub fn locked(&self, ip: IpAddr) -> Option<u64> {
        if !self.config.enabled {
            return None;
        }
        let map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let until = map.get(&ip)?.1?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(left.as_secs().max(1))
    }

    /// Counts a failed authentication; true when it starts a lockout.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        if !self.config.enabled {
            return false;
        }
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            let instant = Instant::now();
            map.retain(|_, (tat, until)| *tat > now || until.is_some_and(|u| u > instant));
        }
        let entry = map.entry(ip).or_insert((0, None));
        let (decision, tat) = gcra::check(Some(entry.0).filter(|t| *t > 0), now, self.rate);
        entry.0 = tat;
        if !decision.allowed && entry.1.is_none_or(|u| u <= Instant::now()) {
            entry.1 = Some(Instant::now() + self.config.cooldown);
            return true;
        }
        false
    }

    pub fn cooldown(&self) -> Duration {
        self.config.cooldown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_aggregation() {
        let ip: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(masked(ip, 64), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(masked(ip, 128), ip);
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(masked(v4, 64), v4);
    }

    #[test]
    fn lockout_after_too_many_failures() {
        let f = AuthFailures::new(&AuthFailureLimitConfig {
            enabled: true,
            max_failures: 3,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(300),
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!f.record_failure(ip));
        assert!(!f.record_failure(ip));
        assert!(!f.record_failure(ip));
        assert!(f.locked(ip).is_none());
        assert!(f.record_failure(ip), "the fourth failure locks out");
        assert!(f.locked(ip).is_some_and(|s| s > 290));
        assert!(f.locked("192.0.2.2".parse().unwrap()).is_none());
    }

    #[test]
    fn redis_keys_are_hashed() {
        let k = redis_key("per-ip", "198.51.100.1");
        assert!(k.starts_with("gatehouse:rl:"));
        assert!(!k.contains("198.51"));
        assert_eq!(k.len(), "gatehouse:rl:".len() + 32);
    }
}
