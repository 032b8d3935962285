//! Rate limiting: GCRA limits per client IP, subject, API key, header or route, in memory or
//! shared through Redis; and a lockout of client IPs that keep presenting bad credentials.

pub mod gcra;
pub mod lockout;
pub mod memory;
pub mod redis_store;

use std::net::IpAddr;

use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::{LimitKey, RateLimitConfig, RateLimitStoreConfig, StoreKind};
use crate::identity::{AuthMethod, Identity};
use gcra::{Decision, Rate};
pub use lockout::AuthFailures;

/// What the request is counted by, for one limit; None when the limit does not apply
/// (a subject limit on an anonymous request, an API-key limit on a bearer token).
pub fn limit_key(
    limit: &RateLimitConfig,
    route: &str,
    client_ip: Option<IpAddr>,
    identity: Option<&Identity>,
    headers: &HeaderMap,
) -> Option<String> {
    match &limit.key {
        LimitKey::ClientIp => {
            client_ip.map(|ip| crate::forwarded::ip_text(client_key(ip, limit.ipv6_prefix)))
        }
        // As the upstream knows the person: two issuers' equal subjects count apart.
        LimitKey::Subject => identity.map(|i| i.user().into_owned()),
        LimitKey::ApiKey => identity
            .filter(|i| i.method == AuthMethod::ApiKey)
            .and_then(|i| i.issuer.clone()),
        LimitKey::Header(name) => Some(
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default(),
        ),
        LimitKey::Route => Some(route.to_string()),
    }
}

/// What a client is counted by: its address, an IPv6 one reduced to its prefix (a host
/// often holds a whole /64); an IPv4-mapped one (dual-stack socket) as the IPv4 address.
pub fn client_key(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip.to_canonical() {
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
            StoreKind::Redis(target) => {
                Store::Redis(redis_store::RedisStore::new(target, config.timeout)?)
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
            // Boxed: the Redis round trip's future is large, and every request (whatever
            // its store) would carry its size through the pipeline's futures.
            Store::Redis(r) => match Box::pin(r.check(&redis_key(&limit.name, key), rate)).await {
                Ok(d) => Outcome::Decided(d),
                Err(e) => {
                    tracing::warn!(limit = %limit.name, error = %e, "rate-limit store error");
                    Outcome::StoreError
                }
            },
        }
    }

    /// With a Redis store: whether `key` is new to every instance (see
    /// [`redis_store::RedisStore::remember_once`]). None with the memory store.
    pub async fn remember_once(
        &self,
        key: &str,
        ttl: std::time::Duration,
    ) -> Option<Result<bool, String>> {
        match &self.store {
            Store::Memory(_) => None,
            Store::Redis(r) => Some(Box::pin(r.remember_once(key, ttl)).await),
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
    let mut out = String::new();
    push_policy_item(&mut out, limit);
    out
}

pub fn state_item(limit: &RateLimitConfig, d: &Decision) -> String {
    let mut out = String::new();
    push_state_item(&mut out, limit, d);
    out
}

/// `"name";q=COUNT;w=SECONDS` (draft-ietf-httpapi-ratelimit-headers), appended to `out`.
pub fn push_policy_item(out: &mut String, limit: &RateLimitConfig) {
    push_item(
        out,
        &limit.name,
        ";q=",
        limit.count,
        ";w=",
        limit.period.as_secs(),
    );
}

/// `"name";r=REMAINING;t=SECONDS`, appended to `out`.
pub fn push_state_item(out: &mut String, limit: &RateLimitConfig, d: &Decision) {
    push_item(
        out,
        &limit.name,
        ";r=",
        d.remaining,
        ";t=",
        ceil_secs(d.reset_after),
    );
}

/// One list item, after a `, ` when `out` has one already; numbers written without the
/// formatting machinery, as these headers go out with every limited request.
fn push_item(out: &mut String, name: &str, first: &str, a: u64, second: &str, b: u64) {
    if !out.is_empty() {
        out.push_str(", ");
    }
    out.push('"');
    out.push_str(name);
    out.push('"');
    out.push_str(first);
    push_u64(out, a);
    out.push_str(second);
    push_u64(out, b);
}

fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: one copy, not one push per character.
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or_default());
}

pub fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_format_writes_them() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        let mut out = String::new();
        push_item(&mut out, "a", ";q=", 5, ";w=", 60);
        push_item(&mut out, "b", ";r=", 0, ";t=", 1);
        assert_eq!(out, "\"a\";q=5;w=60, \"b\";r=0;t=1");
    }

    #[test]
    fn ipv6_aggregation() {
        let ip: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(
            client_key(ip, 64),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_key(ip, 128), ip);
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(client_key(v4, 64), v4);
        // Dual-stack sockets show IPv4 clients as ::ffff:a.b.c.d, whose /64 is everyone's.
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(client_key(mapped, 64), v4);
        assert_ne!(
            client_key("::ffff:203.0.113.8".parse().unwrap(), 64),
            client_key(mapped, 64)
        );
    }

    #[test]
    fn redis_keys_are_hashed() {
        let k = redis_key("per-ip", "198.51.100.1");
        assert!(k.starts_with("gatehouse:rl:"));
        assert!(!k.contains("198.51"));
        assert_eq!(k.len(), "gatehouse:rl:".len() + 32);
    }
}
