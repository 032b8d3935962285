//! The effective config as JSON for `/config`: what the gateway really runs with, defaults
//! filled in, secrets never shown.

use serde_json::{json, Value};

use super::*;

fn secs(d: Duration) -> String {
    if d.subsec_millis() != 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

fn limit_json(l: &RateLimitConfig) -> Value {
    json!({
        "name": l.name,
        "key": match &l.key {
            LimitKey::ClientIp => "client_ip".to_string(),
            LimitKey::Subject => "subject".to_string(),
            LimitKey::ApiKey => "api_key".to_string(),
            LimitKey::Route => "route".to_string(),
            LimitKey::Header(h) => format!("header:{h}"),
        },
        "limit": format!("{}/{}s", l.count, l.period.as_secs()),
        "burst": l.burst,
        "ipv6_prefix": l.ipv6_prefix,
    })
}

/// `redis://user:secret@host` → `redis://user:REDACTED@host`.
fn redact_url_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Config {
    pub fn redacted_json(&self) -> Value {
        let s = &self.server;
        let upstreams: serde_json::Map<String, Value> = self
            .upstreams
            .iter()
            .map(|(name, u)| {
                (
                    name.clone(),
                    json!({
                        "servers": u.servers.iter().map(|s| format!("{}:{}", s.host, s.port)).collect::<Vec<_>>(),
                        "tls": u.tls,
                        "sni": u.sni,
                        "ca": u.ca,
                        "client_cert": u.client_cert.as_ref().map(|(c, _)| c),
                        "client_key": u.client_cert.as_ref().map(|_| "<redacted>"),
                        "connect_timeout": secs(u.connect_timeout),
                        "read_timeout": secs(u.read_timeout),
                        "write_timeout": secs(u.write_timeout),
                        "health_check_interval": secs(u.health_check_interval),
                    }),
                )
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "host": r.host,
                    "path": r.path,
                    "upstream": r.upstream,
                    "auth": r.auth.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                    "pass_access_token": r.pass_access_token,
                    "idp": r.idp.map(|i| self.idps[i].name.clone()),
                    "acr_values": r.acr_values,
                    "max_auth_age": r.max_auth_age.map(secs),
                    "policy": r.policy.as_ref().map(|p| p.source.display().to_string()),
                    "rate_limit": r.rate_limits.iter().map(|&i| self.rate_limits[i].name.clone()).collect::<Vec<_>>(),
                    "cors": r.cors.as_ref().map(|c| json!({
                        "allowed_origins": c.allowed_origins,
                        "allowed_methods": c.allowed_methods,
                        "allowed_headers": c.allowed_headers,
                        "expose_headers": c.expose_headers,
                        "allow_credentials": c.allow_credentials,
                        "max_age": secs(c.max_age),
                    })),
                    "security_headers": r.security_headers,
                    "path_checks": {
                        "allow_encoded_slash": r.path_checks.allow_encoded_slash,
                        "allow_backslash": r.path_checks.allow_backslash,
                        "allow_semicolon": r.path_checks.allow_semicolon,
                        "allow_double_encoding": r.path_checks.allow_double_encoding,
                    },
                })
            })
            .collect();
        json!({
            "source": self.source,
            "server": {
                "listen": s.listen,
                "tls": s.tls.as_ref().map(|t| json!({"listen": t.listen, "cert": t.cert, "key": "<redacted>"})),
                "public_url": s.public_url,
                "threads": s.threads,
                "trusted_proxies": s.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "allowed_hosts": s.allowed_hosts,
                "reserved_prefix": s.reserved_prefix,
                "shutdown_timeout": secs(s.shutdown_timeout),
                "h2c": s.h2c,
            },
            "admin": {"listen": self.admin.listen},
            "log": {
                "format": match self.log.format { LogFormat::Json => "json", LogFormat::Pretty => "pretty" },
                "level": self.log.level,
                "audit": self.log.audit,
                "access_log": self.log.access_log,
            },
            "upstream": upstreams,
            "route": routes,
            "session": {
                "store": match &self.session.store {
                    StoreKind::Memory => "memory".to_string(),
                    StoreKind::Redis { .. } => "redis".to_string(),
                },
                "redis_url": match &self.session.store {
                    StoreKind::Redis { url } => Some(redact_url_password(url)),
                    StoreKind::Memory => None,
                },
                "cookie_name": self.session.cookie_name,
                "secret": if self.session.secret.is_some() { "<redacted>" } else { "<generated at start>" },
                "max_lifetime": secs(self.session.max_lifetime),
                "idle_timeout": secs(self.session.idle_timeout),
                "same_site": match self.session.same_site { SameSite::Lax => "lax", SameSite::Strict => "strict" },
                "fallback": if self.session.fallback_memory { "memory" } else { "none" },
                "timeout": secs(self.session.timeout),
                "max_sessions": self.session.max_sessions,
                "refresh_before": secs(self.session.refresh_before),
            },
            "idp": self.idps.iter().map(|i| json!({
                "name": i.name,
                "issuer": i.issuer,
                "client_id": i.client_id,
                "client_secret": i.client_secret.as_ref().map(|_| "<redacted>"),
                "client_auth": match i.client_auth {
                    ClientAuth::Basic => "client_secret_basic",
                    ClientAuth::Post => "client_secret_post",
                    ClientAuth::None => "none",
                },
                "scopes": i.scopes,
                "subject_claim": i.claims.subject,
                "email_claim": i.claims.email,
                "username_claim": i.claims.username,
                "groups_claim": i.claims.groups,
                "extra_auth_params": i.extra_auth_params.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "algorithms": i.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
                "leeway": secs(i.leeway),
                "post_logout_redirect_uri": i.post_logout_redirect_uri,
            })).collect::<Vec<_>>(),
            "headers": {
                "assertion": self.headers.assertion,
                "assertion_key": self.headers.assertion_key,
                "assertion_ttl": secs(self.headers.assertion_ttl),
                "qualify_user": self.headers.qualify_user,
                "claims": self.headers.claims.iter().map(|(h, c)| (h.to_string(), Value::from(c.clone()))).collect::<serde_json::Map<_, _>>(),
            },
            "bearer": self.bearer.iter().map(|b| json!({
                "issuer": b.issuer,
                "audiences": b.audiences,
                "jwks_uri": b.jwks_uri,
                "algorithms": b.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
                "leeway": secs(b.leeway),
                "token_type": b.token_type,
                "subject_claim": b.claims.subject,
                "email_claim": b.claims.email,
                "username_claim": b.claims.username,
                "groups_claim": b.claims.groups,
                "introspection_endpoint": b.introspection.as_ref().map(|i| &i.endpoint),
                "introspection_client_id": b.introspection.as_ref().map(|i| &i.client_id),
                "introspection_client_secret": b.introspection.as_ref().map(|_| "<redacted>"),
                "unknown_kid_refetch_interval": secs(b.unknown_kid_refetch_interval),
            })).collect::<Vec<_>>(),
            "api_key": self.api_keys.iter().map(|k| json!({
                "name": k.name,
                "hash": "<redacted>",
                "subject": k.subject,
                "groups": k.groups,
                "expires": k.expires.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            })).collect::<Vec<_>>(),
            "rate_limit": self.rate_limits.iter().map(limit_json).collect::<Vec<_>>(),
            "rate_limit_store": {
                "kind": match &self.rate_limit_store.kind {
                    StoreKind::Memory => "memory".to_string(),
                    StoreKind::Redis { .. } => "redis".to_string(),
                },
                "redis_url": match &self.rate_limit_store.kind {
                    StoreKind::Redis { url } => Some(redact_url_password(url)),
                    StoreKind::Memory => None,
                },
                "on_error": if self.rate_limit_store.fail_open { "fail_open" } else { "fail_closed" },
                "timeout": secs(self.rate_limit_store.timeout),
                "response_headers": self.rate_limit_store.response_headers,
                "max_keys": self.rate_limit_store.max_keys,
            },
            "auth_failure_limit": {
                "enabled": self.auth_failure_limit.enabled,
                "max_failures": self.auth_failure_limit.max_failures,
                "window": secs(self.auth_failure_limit.window),
                "cooldown": secs(self.auth_failure_limit.cooldown),
            },
            "reserved_limit": limit_json(&self.reserved_limit),
            "security_headers": {
                "hsts": self.security_headers.hsts,
                "content_type_options": self.security_headers.content_type_options,
                "frame_options": self.security_headers.frame_options,
                "referrer_policy": self.security_headers.referrer_policy,
                "content_security_policy": self.security_headers.content_security_policy,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url_password("redis://gh:s3cret@10.0.0.5:6379/1"),
            "redis://gh:REDACTED@10.0.0.5:6379/1"
        );
        assert_eq!(
            redact_url_password("redis://10.0.0.5:6379/1"),
            "redis://10.0.0.5:6379/1"
        );
    }
}
