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

fn email_verified(rule: EmailVerified) -> &'static str {
    match rule {
        EmailVerified::Required => "required",
        EmailVerified::IfPresent => "if_present",
        EmailVerified::Ignore => "ignore",
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

const REDACTED: &str = "<redacted>";

/// Query parameters that never carry a secret (a Redis database number, its protocol).
const PLAIN_QUERY_PARAMS: [&str; 2] = ["db", "protocol"];

/// A URL with everything that can hold a secret replaced: the userinfo (`redis://user:pw@`),
/// every query value but the plain ones (`redis+unix:///s?pass=..`, `?password=`, API keys)
/// and the fragment. One that does not parse is shown not at all.
pub(super) fn redact_url(url: &str) -> String {
    // A Sentinel or cluster URL names several hosts, which `url` does not parse: its
    // userinfo goes.
    if let Some((scheme, rest)) = url
        .split_once("://")
        .filter(|(s, _)| s.ends_with("+sentinel") || s.ends_with("+cluster"))
    {
        let rest = match rest.split_once('/').unwrap_or((rest, "")) {
            (authority, path) if authority.contains('@') => {
                let hosts = authority.rsplit_once('@').map_or("", |(_, h)| h);
                format!("REDACTED:REDACTED@{hosts}/{path}")
            }
            _ => rest.to_string(),
        };
        return format!("{scheme}://{rest}");
    }
    let Ok(mut u) = url::Url::parse(url) else {
        return REDACTED.to_string();
    };
    if !u.username().is_empty() {
        let _ = u.set_username("REDACTED");
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("REDACTED"));
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let shown = if PLAIN_QUERY_PARAMS.contains(&k.as_ref()) {
                    v.into_owned()
                } else {
                    "REDACTED".to_string()
                };
                (k.into_owned(), shown)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    if u.fragment().is_some() {
        u.set_fragment(Some("REDACTED"));
    }
    u.to_string()
}

/// The parts of a URL that [`redact_url`] hides and that may be secrets (a user name is
/// hidden in the URL, but as often as not it is also a cookie or client name).
fn url_secrets(url: &str, found: &mut Vec<String>) {
    if url.contains("+sentinel://") || url.contains("+cluster://") {
        if let Ok(t) = crate::redis_conn::RedisTarget::from_url(url) {
            found.extend(t.password);
        }
    } else if let Ok(u) = url::Url::parse(url) {
        found.extend(u.password().map(str::to_string));
        found.extend(u.query_pairs().map(|(_, v)| v.into_owned()));
    }
}

/// Every value of the config that is a secret, to be scrubbed wherever else it shows up.
fn secrets(c: &Config) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for kind in [&c.session.store, &c.rate_limit_store.kind] {
        if let StoreKind::Redis(t) = kind {
            url_secrets(&t.url, &mut found);
            found.extend(t.password.clone());
            if let crate::redis_conn::Place::Sentinel { password, .. } = &t.place {
                found.extend(password.clone());
            }
        }
    }
    for b in &c.bearer {
        url_secrets(&b.issuer, &mut found);
        if let Some(u) = &b.jwks_uri {
            url_secrets(u, &mut found);
        }
        if let Some(i) = &b.introspection {
            url_secrets(&i.endpoint, &mut found);
            found.push(i.client_secret.clone());
        }
    }
    for i in &c.idps {
        url_secrets(&i.issuer, &mut found);
        found.extend(i.client_secret.clone());
        found.extend(i.extra_auth_params.iter().map(|(_, v)| v.clone()));
    }
    for secret in [&c.session.secret, &c.session.secret_previous]
        .into_iter()
        .flatten()
    {
        found.push(String::from_utf8_lossy(secret).into_owned());
    }
    // Short values ("0", "consent") would blank out half the page and hide nothing.
    found.retain(|s| s.len() >= 8);
    found
}

/// Replaces every string that contains one of `secrets`.
fn scrub(value: &mut Value, secrets: &[String]) {
    match value {
        Value::String(s) if secrets.iter().any(|x| s.contains(x.as_str())) => {
            *s = REDACTED.to_string();
        }
        Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| scrub(v, secrets)),
        _ => {}
    }
}

impl Config {
    /// Secrets are replaced field by field, then anywhere else they appear.
    pub fn redacted_json(&self) -> Value {
        let mut shown = self.shown_json();
        scrub(&mut shown, &secrets(self));
        shown
    }

    fn shown_json(&self) -> Value {
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
                    "require_dpop": r.require_dpop,
                    "dpop_nonce": r.dpop_nonce,
                    "underscores_in_headers": r.underscores_in_headers,
                    "request_overrides": r.overrides.iter().map(|o| o.name()).collect::<Vec<_>>(),
                    "domain_hint": r.domain_hint,
                    "idp": match r.idps.as_slice() {
                        [] => Value::Null,
                        [one] => json!(self.idps[*one].name),
                        many => json!(many.iter().map(|i| &self.idps[*i].name).collect::<Vec<_>>()),
                    },
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
                "public_url": s.public_url.as_deref().map(redact_url),
                "threads": s.threads,
                "trusted_proxies": s.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "allowed_hosts": s.allowed_hosts,
                "reserved_prefix": s.reserved_prefix,
                "shutdown_timeout": secs(s.shutdown_timeout),
                "h2c": s.h2c,
            },
            "admin": {
                "listen": self.admin.listen,
                "token": self.admin.token.as_ref().map(|_| REDACTED),
                "open": self.admin.open,
            },
            "ext_authz": {
                "grpc_listen": self.ext_authz.grpc_listen,
                "grpc_tls": self.ext_authz.grpc_tls.as_ref().map(|t| json!({"cert": t.cert, "key": "<redacted>", "client_ca": t.client_ca})),
            },
            "log": {
                "format": match self.log.format { LogFormat::Json => "json", LogFormat::Pretty => "pretty" },
                "level": self.log.level,
                "audit": self.log.audit,
                "access_log": self.log.access_log,
            },
            "tracing": {
                "otlp_endpoint": self.tracing.otlp_endpoint.as_deref().map(redact_url),
                "protocol": match self.tracing.protocol { OtlpProtocol::HttpProtobuf => "http/protobuf", OtlpProtocol::Grpc => "grpc" },
                "sampling_ratio": self.tracing.sampling_ratio,
                "service_name": self.tracing.service_name,
                "resource_attributes": self.tracing.resource_attributes,
                "batch_delay": secs(self.tracing.batch_delay),
            },
            "upstream": upstreams,
            "route": routes,
            "session": {
                "store": match &self.session.store {
                    StoreKind::Memory => "memory".to_string(),
                    StoreKind::Redis(_) => "redis".to_string(),
                },
                "redis_url": match &self.session.store {
                    StoreKind::Redis(t) => Some(redact_url(&t.url)),
                    StoreKind::Memory => None,
                },
                "cookie_name": self.session.cookie_name,
                "secret": if self.session.secret.is_some() { "<redacted>" } else { "<generated at start>" },
                "secret_previous": self.session.secret_previous.as_ref().map(|_| REDACTED),
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
                "issuer": redact_url(&i.issuer),
                "client_id": i.client_id,
                "client_secret": i.client_secret.as_ref().map(|_| "<redacted>"),
                "client_auth": match i.client_auth {
                    ClientAuth::Basic => "client_secret_basic",
                    ClientAuth::Post => "client_secret_post",
                    ClientAuth::None => "none",
                    ClientAuth::PrivateKeyJwt => "private_key_jwt",
                    ClientAuth::TlsClientAuth => "tls_client_auth",
                },
                "tls_ca_file": i.tls.ca_pem.is_some(),
                "tls_client_cert_file": i.tls.client.is_some(),
                "client_key_file": i.client_key.as_ref().map(|k| k.path.display().to_string()),
                "client_key_id": i.client_key.as_ref().and_then(|k| k.kid.clone()),
                "client_key_alg": i.client_key.as_ref().map(|k| format!("{:?}", k.alg)),
                "scopes": i.scopes,
                "subject_claim": i.claims.subject,
                "email_claim": i.claims.email,
                "username_claim": i.claims.username,
                "groups_claim": i.claims.groups,
                "email_verified": email_verified(i.claims.email_verified),
                // Values may be secrets (a login_hint, a vendor's key): the names only.
                "extra_auth_params": i.extra_auth_params.iter().map(|(k, _)| (k.clone(), REDACTED)).collect::<std::collections::BTreeMap<_, _>>(),
                "algorithms": i.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
                "leeway": secs(i.leeway),
                "post_logout_redirect_uri": i.post_logout_redirect_uri.as_deref().map(redact_url),
                "userinfo": match i.userinfo {
                    Userinfo::Auto => "auto",
                    Userinfo::Always => "always",
                    Userinfo::Never => "never",
                },
                "par": i.par,
                "groups_source": if i.graph.is_some() { "graph" } else { "token" },
                "graph_url": i.graph,
                "display_name": i.display_name,
                "logo_url": i.logo_url.as_deref().map(redact_url),
                "idp_domains": i.domains,
                "userinfo_on_error": match i.userinfo_on_error {
                    UserinfoOnError::Fail => "fail",
                    UserinfoOnError::Continue => "continue",
                },
            })).collect::<Vec<_>>(),
            "headers": {
                "assertion": self.headers.assertion,
                "assertion_key": self.headers.assertion_key,
                "assertion_ttl": secs(self.headers.assertion_ttl),
                "qualify_user": self.headers.qualify_user,
                "claims": self.headers.claims.iter().map(|(h, c)| (h.to_string(), Value::from(c.clone()))).collect::<serde_json::Map<_, _>>(),
            },
            "bearer": self.bearer.iter().map(|b| json!({
                "issuer": redact_url(&b.issuer),
                "audiences": b.audiences,
                "jwks_uri": b.jwks_uri.as_deref().map(redact_url),
                "algorithms": b.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
                "leeway": secs(b.leeway),
                "token_type": b.token_type,
                "subject_claim": b.claims.subject,
                "email_claim": b.claims.email,
                "username_claim": b.claims.username,
                "groups_claim": b.claims.groups,
                "email_verified": email_verified(b.claims.email_verified),
                "introspection_endpoint": b.introspection.as_ref().map(|i| redact_url(&i.endpoint)),
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
                    StoreKind::Redis(_) => "redis".to_string(),
                },
                "redis_url": match &self.rate_limit_store.kind {
                    StoreKind::Redis(t) => Some(redact_url(&t.url)),
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
                "ipv6_prefix": self.auth_failure_limit.ipv6_prefix,
                "max_clients": self.auth_failure_limit.max_clients,
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
    fn urls_lose_everything_that_can_hold_a_secret() {
        for (url, shown) in [
            (
                "redis://gh:s3cret@10.0.0.5:6379/1",
                "redis://REDACTED:REDACTED@10.0.0.5:6379/1",
            ),
            ("redis://:s3cret@10.0.0.5/0", "redis://:REDACTED@10.0.0.5/0"),
            (
                "rediss://s3cret@cache.internal:6380",
                "rediss://REDACTED@cache.internal:6380",
            ),
            (
                "redis+unix:///run/redis.sock?db=2&pass=s3cret",
                "redis+unix:///run/redis.sock?db=2&pass=REDACTED",
            ),
            (
                "unix:///run/redis.sock?user=u&password=s3cret",
                "unix:///run/redis.sock?user=REDACTED&password=REDACTED",
            ),
            (
                "redis://10.0.0.5:6379/0?password=s3cret&protocol=resp3",
                "redis://10.0.0.5:6379/0?password=REDACTED&protocol=resp3",
            ),
            (
                "https://idp.example.com/jwks?api_key=s3cret#s3cret",
                "https://idp.example.com/jwks?api_key=REDACTED#REDACTED",
            ),
            ("redis://10.0.0.5:6379/1", "redis://10.0.0.5:6379/1"),
            ("not a url s3cret", "<redacted>"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("s3cret"));
        }
    }

    #[test]
    fn a_refused_redis_url_is_reported_without_its_password() {
        let text = "[server]\n[session]\nstore = \"redis\"\nredis_url = \"redix://ops:s3cretpw@cache:6379/0?pass=s3cretpw\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
        let err =
            Config::from_str(std::path::Path::new("g.toml"), text, &|_| None).expect_err("refused");
        let shown = err.to_string();
        assert!(shown.contains("invalid redis_url"), "{shown}");
        assert!(!shown.contains("s3cretpw"), "{shown}");
    }

    #[test]
    fn secrets_are_scrubbed_wherever_they_appear() {
        let mut v =
            serde_json::json!({"a": ["x", "has-the-long-secret-inside"], "b": {"c": "plain"}});
        scrub(&mut v, &["the-long-secret".to_string()]);
        assert_eq!(
            v,
            serde_json::json!({"a": ["x", "<redacted>"], "b": {"c": "plain"}})
        );
    }
}
