//! Lowering: the outside format ([`super::file`]) checked and turned into [`super::Config`].
//!
//! One [`Lowerer`] walks the parsed file, reporting every problem with its place; each
//! section of the file is lowered in its own module, and the value checks they share
//! (durations, addresses, files, URLs) are here.

mod auth;
mod headers;
mod limits;
mod redis_section;
mod routes;
mod secrets;
mod server;
mod sessions;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;

use super::file::{self, S};
use super::values::{interpolate_env, parse_duration};
use super::*;
use crate::diag::{ConfigError, Reporter};

struct Lowerer<'a> {
    r: Reporter<'a>,
    /// Policy files already loaded: routes sharing one file share one compiled policy.
    policies: HashMap<PathBuf, std::sync::Arc<crate::authz::Policy>>,
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: PathBuf,
}

pub fn lower(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut l = Lowerer {
        r: Reporter::new(path, text),
        policies: HashMap::new(),
        env,
        base_dir: path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let parsed: file::File = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            l.r.error(span, e.message().trim().to_string());
            return Err(ConfigError(l.r.diagnostics));
        }
    };
    let config = l.config(parsed);
    l.r.into_result(config)
}

impl Lowerer<'_> {
    fn config(&mut self, f: file::File) -> Config {
        let server = self.server(&f.server);
        let admin = self.admin(f.admin.as_ref());
        let ext_authz = self.ext_authz(f.ext_authz.as_ref(), &server, &admin);
        let log = self.log(f.log.as_ref());
        let tracing = self.tracing(f.tracing.as_ref());
        let mut upstreams = BTreeMap::new();
        for (name, up) in &f.upstream {
            if let Some(u) = self.upstream(name, up) {
                upstreams.insert(u.name.clone(), u);
            }
        }
        let mut bearer: Vec<BearerConfig> =
            f.bearer.iter().filter_map(|b| self.bearer(b)).collect();
        let api_keys: Vec<ApiKeyConfig> =
            f.api_key.iter().filter_map(|k| self.api_key(k)).collect();
        let redis = self.redis(f.redis.as_ref());
        let session = self.session(f.session.as_ref(), &redis);
        let dev_idp = f.dev_idp.as_ref().map(|d| self.dev_idp(d));
        let mut idps = self.idps(&f.idp);
        let available = Available {
            bearer: !f.bearer.is_empty(),
            api_key: !f.api_key.is_empty(),
            session: !f.idp.is_empty(),
        };
        let rate_limits: Vec<RateLimitConfig> = f
            .rate_limit
            .iter()
            .filter_map(|l| self.rate_limit(l))
            .collect();
        let mut routes = self.routes(&f.route, &upstreams, available, &idps);
        if routes.iter().any(|r| r.auth.contains(&AuthMethod::Session))
            && server.public_url.is_none()
        {
            self.r.error(
                f.server.span(),
                "browser login (auth = [\"session\"]) needs server.public_url: the redirect URI and cookie flags derive from it",
            );
        }
        self.route_rate_limits(&f.route, &mut routes, &rate_limits);
        let rate_limit_store = self.rate_limit_store(f.rate_limit_store.as_ref(), &redis);
        let auth_failure_limit = self.auth_failure_limit(f.auth_failure_limit.as_ref());
        let reserved_limit = self.reserved_limit(f.reserved_limit.as_ref());
        let mut headers = self.headers(f.headers.as_ref());
        // Equal subjects of two issuers are two people: once there are two, say whose.
        let issuers: std::collections::BTreeSet<&str> = bearer
            .iter()
            .map(|b| b.issuer.as_str())
            .chain(idps.iter().map(|i| i.issuer.as_str()))
            .collect();
        let qualify = f
            .headers
            .as_ref()
            .and_then(|h| h.qualify_user)
            .unwrap_or(issuers.len() > 1);
        headers.qualify_user = qualify;
        for b in &mut bearer {
            b.qualify_subject = qualify;
        }
        for i in &mut idps {
            i.qualify_subject = qualify;
        }
        let security_headers = self.security_headers(f.security_headers.as_ref());
        Config {
            source: self.r.file().to_path_buf(),
            server,
            admin,
            ext_authz,
            log,
            tracing,
            upstreams,
            routes,
            headers,
            security_headers,
            bearer,
            api_keys,
            rate_limits,
            rate_limit_store,
            auth_failure_limit,
            reserved_limit,
            session,
            idps,
            dev_idp,
        }
    }

    fn positive(&mut self, v: Option<&S<i64>>, default: u64, what: &str) -> u64 {
        match v {
            None => default,
            Some(n) if *n.get_ref() >= 1 => *n.get_ref() as u64,
            Some(n) => {
                self.r.error(n.span(), format!("{what} must be at least 1"));
                default
            }
        }
    }

    /// An `https` URL, or `http` to a loopback host (tests, the demo).
    fn secure_url(&mut self, v: &S<String>, what: &str) -> Option<String> {
        let text = self.string(v)?;
        match check_secure_url(&text) {
            Ok(()) => Some(text),
            Err(e) => {
                self.r.error(v.span(), format!("{what} {text:?} {e}"));
                None
            }
        }
    }

    /// A string value with `${ENV}` references replaced.
    fn string(&mut self, v: &S<String>) -> Option<String> {
        match interpolate_env(v.get_ref(), self.env) {
            Ok(s) => Some(s),
            Err(e) => {
                self.r.error(v.span(), e);
                None
            }
        }
    }

    fn duration(&mut self, v: Option<&S<String>>, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        let Some(text) = self.string(v) else {
            return default;
        };
        match parse_duration(&text) {
            Ok(d) => d,
            Err(e) => {
                self.r.error(v.span(), e);
                default
            }
        }
    }

    fn listen_addr(&mut self, v: &S<String>) -> Option<SocketAddr> {
        let text = self.string(v)?;
        let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
            // `localhost:PORT` is common in examples; it means the IPv4 loopback.
            let port = text.strip_prefix("localhost:")?.parse::<u16>().ok()?;
            Some(SocketAddr::from(([127, 0, 0, 1], port)))
        });
        if parsed.is_none() {
            self.r.error(
                v.span(),
                format!("invalid listen address {text:?}: expected IP:PORT, e.g. \"0.0.0.0:8080\" or \"[::]:8080\""),
            );
        }
        parsed
    }

    /// A file path, relative to the config's folder, that must be readable now.
    fn readable_file(&mut self, v: &S<String>, what: &str) -> Option<PathBuf> {
        let text = self.string(v)?;
        let path = self.base_dir.join(&text);
        match std::fs::read(&path) {
            Ok(_) => Some(path),
            Err(e) => {
                self.r.error(
                    v.span(),
                    format!("cannot read {what} {}: {e}", path.display()),
                );
                None
            }
        }
    }

    fn pem_cert(&mut self, v: &S<String>, what: &str) -> Option<PathBuf> {
        let path = self.readable_file(v, what)?;
        let pem = std::fs::read(&path).unwrap_or_default();
        if let Err(e) = pingora::tls::x509::X509::stack_from_pem(&pem).and_then(|certs| {
            if certs.is_empty() {
                // stack_from_pem accepts an empty file; a certificate file must hold one.
                pingora::tls::x509::X509::from_pem(&pem).map(|_| ())
            } else {
                Ok(())
            }
        }) {
            self.r.error(
                v.span(),
                format!(
                    "{what} {} is not a PEM certificate: {}",
                    path.display(),
                    first_ssl_reason(&e)
                ),
            );
            return None;
        }
        Some(path)
    }

    fn pem_key(&mut self, v: &S<String>, what: &str) -> Option<PathBuf> {
        let path = self.readable_file(v, what)?;
        let pem = std::fs::read(&path).unwrap_or_default();
        if let Err(e) = pingora::tls::pkey::PKey::private_key_from_pem(&pem) {
            self.r.error(
                v.span(),
                format!(
                    "{what} {} is not a PEM private key: {}",
                    path.display(),
                    first_ssl_reason(&e)
                ),
            );
            return None;
        }
        Some(path)
    }
}

/// Which authentication methods the config can serve.
#[derive(Clone, Copy)]
struct Available {
    bearer: bool,
    api_key: bool,
    session: bool,
}

/// Issuers, key sets and token endpoints must be `https`, except on loopback.
pub fn check_secure_url(text: &str) -> Result<(), &'static str> {
    let url = reqwest::Url::parse(text).map_err(|_| "is not an absolute URL")?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err("must use https (plain http is only accepted on loopback)")
            }
        }
        _ => Err("must be an https URL"),
    }
}

fn first_ssl_reason(e: &pingora::tls::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_string))
        .unwrap_or_else(|| "no PEM data found".to_string())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_plain_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')
}

/// A DNS name or IP literal, no port; `*.example.com` is not supported (exact hosts only).
pub fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn valid_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https") || rest.contains('/') || rest.is_empty() {
        return false;
    }
    let host = match rest.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') || rest.starts_with('[') => {
            if port.parse::<u16>().is_err() {
                return rest.starts_with('[') && rest.ends_with(']') && valid_host(rest);
            }
            h
        }
        _ => rest,
    };
    valid_host(&host.to_ascii_lowercase())
}

/// `HOST:PORT`, `[V6]:PORT`; names are kept for asynchronous resolution.
fn parse_server_addr(text: &str) -> Option<ServerAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(ServerAddr {
            host: addr.ip().to_string(),
            port: addr.port(),
        });
    }
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = host.to_ascii_lowercase();
    (valid_host(&host) && !host.contains(':')).then_some(ServerAddr { host, port })
}

/// The canonical form of a route prefix, or None when it is not already a normalized path.
fn route_prefix(path: &str) -> Option<String> {
    if path == "/" {
        return Some("/".into());
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let ok = trimmed.starts_with('/')
        && trimmed[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && !seg.contains(['%', '\\', ';', '?', '#'])
                && seg.chars().all(|c| c.is_ascii_graphic())
        });
    ok.then(|| trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert_eq!(
            parse_server_addr("10.0.0.1:80"),
            Some(ServerAddr {
                host: "10.0.0.1".into(),
                port: 80
            })
        );
        assert_eq!(
            parse_server_addr("[::1]:8080"),
            Some(ServerAddr {
                host: "::1".into(),
                port: 8080
            })
        );
        assert_eq!(
            parse_server_addr("App.internal:443"),
            Some(ServerAddr {
                host: "app.internal".into(),
                port: 443
            })
        );
        for bad in ["app", "app:0", "app:x", ":80", "http://app:80", "a b:80"] {
            assert_eq!(parse_server_addr(bad), None, "{bad}");
        }
    }

    #[test]
    fn route_prefixes() {
        assert_eq!(route_prefix("/"), Some("/".into()));
        assert_eq!(route_prefix("/api/"), Some("/api".into()));
        assert_eq!(route_prefix("/api"), Some("/api".into()));
        for bad in ["", "api", "//", "/a//b", "/a/../b", "/a/%2e", "/a b"] {
            assert_eq!(route_prefix(bad), None, "{bad}");
        }
    }

    #[test]
    fn origins() {
        assert!(valid_origin("https://app.example.com"));
        assert!(valid_origin("http://localhost:3000"));
        assert!(!valid_origin("https://app.example.com/"));
        assert!(!valid_origin("ftp://x"));
        assert!(!valid_origin("app.example.com"));
    }
}
