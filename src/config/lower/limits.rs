//! `[rate_limit.*]`, `[rate_limit_store]`, `[auth_failure_limit]` and the reserved endpoints'
//! limit.

use super::redis_section::RedisSettings;
use super::*;

impl Lowerer<'_> {
    /// `"N/second"`, `"N/minute"`, `"N/hour"`, `"N/day"`.
    pub(super) fn limit(&mut self, v: &S<String>) -> Option<(u64, Duration)> {
        let text = self.string(v)?;
        let parsed = text.split_once('/').and_then(|(n, unit)| {
            let n: u64 = n.trim().parse().ok().filter(|n| *n >= 1)?;
            let period = match unit.trim() {
                "second" | "s" => Duration::from_secs(1),
                "minute" | "m" => Duration::from_secs(60),
                "hour" | "h" => Duration::from_secs(3600),
                "day" | "d" => Duration::from_secs(86_400),
                _ => return None,
            };
            Some((n, period))
        });
        if parsed.is_none() {
            self.r.error(
                v.span(),
                format!(
                    "limit {text:?} must look like \"50/hour\" (per second, minute, hour or day)"
                ),
            );
        }
        parsed
    }

    pub(super) fn rate_limit(&mut self, l: &S<file::RateLimit>) -> Option<RateLimitConfig> {
        let c = l.get_ref();
        let name = c.name.get_ref().clone();
        if !valid_name(&name) {
            self.r.error(
                c.name.span(),
                format!("rate limit name {name:?} may hold only letters, digits, '-' and '_'"),
            );
        }
        let key_text = c.key.get_ref().as_str();
        let key = match key_text {
            "client_ip" => LimitKey::ClientIp,
            "subject" => LimitKey::Subject,
            "api_key" => LimitKey::ApiKey,
            "route" => LimitKey::Route,
            other => match other
                .strip_prefix("header:")
                .map(|h| HeaderName::from_bytes(h.as_bytes()))
            {
                Some(Ok(h)) => LimitKey::Header(h),
                _ => {
                    self.r.error(
                        c.key.span(),
                        format!("rate limit key {other:?} must be client_ip, subject, api_key, route or header:NAME"),
                    );
                    return None;
                }
            },
        };
        let (count, period) = self.limit(&c.limit)?;
        let burst = self.positive(c.burst.as_ref(), count, "burst");
        let ipv6_prefix = self.ipv6_prefix(c.ipv6_prefix.as_ref());
        Some(RateLimitConfig {
            name,
            key,
            count,
            period,
            burst,
            ipv6_prefix,
        })
    }

    pub(super) fn route_rate_limits(
        &mut self,
        routes: &[S<file::Route>],
        lowered: &mut [RouteConfig],
        limits: &[RateLimitConfig],
    ) {
        for (route, out) in routes.iter().zip(lowered.iter_mut()) {
            let Some(names) = &route.get_ref().rate_limit else {
                continue;
            };
            for n in names.get_ref() {
                match limits.iter().position(|l| l.name == *n.get_ref()) {
                    Some(i) if !out.rate_limits.contains(&i) => out.rate_limits.push(i),
                    Some(_) => {}
                    None => self.r.error(
                        n.span(),
                        format!(
                            "route {:?} names unknown rate limit {:?}",
                            out.name,
                            n.get_ref()
                        ),
                    ),
                }
            }
        }
    }

    pub(super) fn rate_limit_store(
        &mut self,
        s: Option<&S<file::RateLimitStore>>,
        redis: &RedisSettings,
    ) -> RateLimitStoreConfig {
        let c = s.map(|s| s.get_ref());
        let redis_url = c.and_then(|c| {
            self.secret(c.redis_url.as_ref(), c.redis_url_file.as_ref(), "redis_url")
        });
        let kind = match c.and_then(|c| c.kind.as_ref()) {
            None => StoreKind::Memory,
            Some(k) => {
                match k.get_ref().as_str() {
                    "memory" => StoreKind::Memory,
                    "redis" => {
                        if redis_url.is_none() && !redis.given {
                            self.r.error(
                                k.span(),
                                "a redis rate_limit_store needs redis_url or a [redis] table",
                            );
                        }
                        self.store_redis(redis_url, redis)
                            .map_or(StoreKind::Memory, |t| StoreKind::Redis(Box::new(t)))
                    }
                    other => {
                        self.r.error(k.span(), format!("rate_limit_store kind must be \"memory\" or \"redis\", not {other:?}"));
                        StoreKind::Memory
                    }
                }
            }
        };
        let fail_open = match c.and_then(|c| c.on_error.as_ref()) {
            None => true,
            Some(v) => match v.get_ref().as_str() {
                "fail_open" => true,
                "fail_closed" => false,
                other => {
                    self.r.error(
                        v.span(),
                        format!("on_error must be \"fail_open\" or \"fail_closed\", not {other:?}"),
                    );
                    true
                }
            },
        };
        RateLimitStoreConfig {
            kind,
            fail_open,
            timeout: self.duration(
                c.and_then(|c| c.timeout.as_ref()),
                Duration::from_millis(100),
            ),
            response_headers: c.and_then(|c| c.response_headers).unwrap_or(false),
            max_keys: self.positive(c.and_then(|c| c.max_keys.as_ref()), 1_000_000, "max_keys")
                as usize,
        }
    }

    pub(super) fn auth_failure_limit(
        &mut self,
        a: Option<&S<file::AuthFailureLimit>>,
    ) -> AuthFailureLimitConfig {
        let c = a.map(|a| a.get_ref());
        AuthFailureLimitConfig {
            enabled: c.and_then(|c| c.enabled).unwrap_or(true),
            max_failures: self.positive(
                c.and_then(|c| c.max_failures.as_ref()),
                100,
                "max_failures",
            ),
            window: self.duration(c.and_then(|c| c.window.as_ref()), Duration::from_secs(60)),
            cooldown: self.duration(
                c.and_then(|c| c.cooldown.as_ref()),
                Duration::from_secs(300),
            ),
            ipv6_prefix: self.ipv6_prefix(c.and_then(|c| c.ipv6_prefix.as_ref())),
            max_clients: self.positive(
                c.and_then(|c| c.max_clients.as_ref()),
                100_000,
                "max_clients",
            ) as usize,
        }
    }

    /// How many leading bits of an IPv6 client address count: 64 by default, since one
    /// host commonly holds a whole /64 and could rotate through it.
    pub(super) fn ipv6_prefix(&mut self, v: Option<&S<i64>>) -> u8 {
        match v {
            None => 64,
            Some(p) if (1..=128).contains(p.get_ref()) => *p.get_ref() as u8,
            Some(p) => {
                self.r
                    .error(p.span(), "ipv6_prefix must be between 1 and 128");
                64
            }
        }
    }

    pub(super) fn reserved_limit(&mut self, r: Option<&S<file::ReservedLimit>>) -> RateLimitConfig {
        let c = r.map(|r| r.get_ref());
        let (count, period) = c
            .and_then(|c| c.limit.as_ref())
            .and_then(|l| self.limit(l))
            .unwrap_or((30, Duration::from_secs(60)));
        RateLimitConfig {
            name: "gatehouse-endpoints".into(),
            key: LimitKey::ClientIp,
            count,
            period,
            burst: self.positive(c.and_then(|c| c.burst.as_ref()), count, "burst"),
            ipv6_prefix: 64,
        }
    }
}
