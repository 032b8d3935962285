//! `[server]`, `[admin]`, `[log]`, `[tracing]` and `[dev_idp]`: listeners, TLS, trusted proxies,
//! logging and traces.

use super::*;

/// The shortest admin token taken: 32 characters (128 bits as hex).
const MIN_ADMIN_TOKEN: usize = 32;
/// What the admin listener serves without the token by default: probes and scrapes.
const ADMIN_OPEN_DEFAULT: [&str; 3] = ["/healthz", "/readyz", "/metrics"];
/// The paths `admin.open` may list; the session API is never among them.
const ADMIN_OPENABLE: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/config"];

impl Lowerer<'_> {
    pub(super) fn server(&mut self, s: &S<file::Server>) -> ServerConfig {
        let listen: Vec<SocketAddr> = match &s.get_ref().listen {
            Some(list) => list
                .get_ref()
                .iter()
                .filter_map(|a| self.listen_addr(a))
                .collect(),
            None => vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
        };
        let srv = s.get_ref();
        let tls = srv.tls.as_ref().map(|t| {
            let tt = t.get_ref();
            let listen = tt
                .listen
                .get_ref()
                .iter()
                .filter_map(|a| self.listen_addr(a))
                .collect::<Vec<_>>();
            if tt.listen.get_ref().is_empty() {
                self.r.error(
                    tt.listen.span(),
                    "server.tls.listen needs at least one address",
                );
            }
            let cert = self.pem_cert(&tt.cert, "TLS certificate");
            let key = self.pem_key(&tt.key, "TLS key");
            TlsListenerConfig {
                listen,
                cert: cert.unwrap_or_default(),
                key: key.unwrap_or_default(),
            }
        });
        if listen.is_empty() && tls.is_none() && srv.listen.is_some() {
            self.r.error(s.span(), "the server has no listen address");
        }
        let public_url = srv.public_url.as_ref().and_then(|u| {
            let text = self.string(u)?;
            let ok = (text.starts_with("https://") || text.starts_with("http://"))
                && text
                    .split("://")
                    .nth(1)
                    .is_some_and(|rest| !rest.is_empty());
            if !ok {
                self.r.error(
                    u.span(),
                    format!("public_url {text:?} must be an absolute http(s) URL"),
                );
                return None;
            }
            Some(text.trim_end_matches('/').to_string())
        });
        let threads = match &srv.threads {
            Some(t) if *t.get_ref() < 1 || *t.get_ref() > 1024 => {
                self.r
                    .error(t.span(), "server.threads must be between 1 and 1024");
                1
            }
            Some(t) => *t.get_ref() as usize,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let trusted_proxies = srv
            .trusted_proxies
            .iter()
            .flatten()
            .filter_map(|c| {
                let text = self.string(c)?;
                let parsed = text
                    .parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
                match parsed {
                    Ok(net) => Some(net.trunc()),
                    Err(_) => {
                        self.r.error(
                            c.span(),
                            format!("invalid CIDR {text:?} in trusted_proxies"),
                        );
                        None
                    }
                }
            })
            .collect();
        let allowed_hosts = srv
            .allowed_hosts
            .iter()
            .flatten()
            .filter_map(|h| {
                let text = self.string(h)?.to_ascii_lowercase();
                if !valid_host(&text) {
                    self.r.error(
                        h.span(),
                        format!(
                            "invalid host name {text:?} in allowed_hosts (no scheme, port or path)"
                        ),
                    );
                    return None;
                }
                Some(text)
            })
            .collect();
        let reserved_prefix = match &srv.reserved_prefix {
            Some(p) => {
                let text = self.string(p).unwrap_or_default();
                let ok = text.starts_with('/')
                    && text.len() > 1
                    && !text.ends_with('/')
                    && text[1..]
                        .split('/')
                        .all(|seg| !seg.is_empty() && seg.chars().all(is_plain_path_char));
                if !ok {
                    self.r.error(
                        p.span(),
                        format!("reserved_prefix {text:?} must look like \"/_gatehouse\""),
                    );
                }
                text
            }
            None => "/_gatehouse".to_string(),
        };
        let shutdown_timeout =
            self.duration(srv.shutdown_timeout.as_ref(), Duration::from_secs(30));
        ServerConfig {
            listen,
            tls,
            public_url,
            threads,
            trusted_proxies,
            allowed_hosts,
            reserved_prefix,
            shutdown_timeout,
            h2c: srv.h2c.unwrap_or(false),
        }
    }

    /// `[admin]`: its listener, the session admin API's token, and what stays open without it.
    pub(super) fn admin(&mut self, a: Option<&file::Admin>) -> AdminConfig {
        let default = SocketAddr::from(([127, 0, 0, 1], 9090));
        let listen = a
            .and_then(|a| a.listen.as_ref())
            .map_or(Some(default), |l| self.listen_addr(l))
            .unwrap_or(default);
        let token = a.and_then(|a| {
            let (token, span) = self.secret(a.token.as_ref(), a.token_file.as_ref(), "token")?;
            // A guessable token would open every session to whoever reaches the listener.
            if token.chars().count() < MIN_ADMIN_TOKEN {
                self.r.error(
                    span,
                    format!("admin.token must be at least {MIN_ADMIN_TOKEN} characters (e.g. `openssl rand -hex 32`)"),
                );
                return None;
            }
            Some(token)
        });
        let open = match a.and_then(|a| a.open.as_ref()) {
            None => ADMIN_OPEN_DEFAULT.iter().map(|p| p.to_string()).collect(),
            Some(list) => list
                .get_ref()
                .iter()
                .filter_map(|p| {
                    let path = self.string(p)?;
                    if ADMIN_OPENABLE.contains(&path.as_str()) {
                        Some(path)
                    } else {
                        self.r.error(
                            p.span(),
                            format!("admin.open may list {}, not {path:?} (the session API always needs the token)", ADMIN_OPENABLE.join(", ")),
                        );
                        None
                    }
                })
                .collect(),
        };
        AdminConfig {
            listen,
            token,
            open,
        }
    }

    /// `[ext_authz]`: Envoy asks over gRPC from a trusted proxy only, on an address of its own.
    pub(super) fn ext_authz(
        &mut self,
        e: Option<&file::ExtAuthz>,
        server: &ServerConfig,
        admin: &AdminConfig,
    ) -> ExtAuthzConfig {
        let tls = e.and_then(|e| e.grpc_tls.as_ref());
        let Some(listen) = e.and_then(|e| e.grpc_listen.as_ref()) else {
            if let Some(tls) = tls {
                self.r
                    .error(tls.span(), "ext_authz.grpc_tls needs ext_authz.grpc_listen");
            }
            return ExtAuthzConfig::default();
        };
        let grpc_tls = tls.map(|t| {
            let t = t.get_ref();
            GrpcTlsConfig {
                cert: self
                    .pem_cert(&t.cert, "TLS certificate")
                    .unwrap_or_default(),
                key: self.pem_key(&t.key, "TLS key").unwrap_or_default(),
                client_ca: t
                    .client_ca
                    .as_ref()
                    .and_then(|ca| self.pem_cert(ca, "client CA certificate")),
            }
        });
        let Some(addr) = self.listen_addr(listen) else {
            return ExtAuthzConfig::default();
        };
        if server.trusted_proxies.is_empty() {
            self.r.error(
                listen.span(),
                "ext_authz.grpc_listen answers only server.trusted_proxies, which is empty: add Envoy's address there",
            );
        }
        let taken = server
            .listen
            .iter()
            .chain(server.tls.iter().flat_map(|t| t.listen.iter()))
            .chain([&admin.listen])
            .any(|a| {
                a.port() == addr.port()
                    && (a.ip() == addr.ip()
                        || a.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            });
        if taken {
            self.r.error(
                listen.span(),
                format!("ext_authz.grpc_listen {addr} is already a listener of server.listen, server.tls or admin"),
            );
        }
        ExtAuthzConfig {
            grpc_listen: Some(addr),
            grpc_tls,
        }
    }

    /// `[tracing]`: off without `otlp_endpoint`; the other keys are checked either way.
    pub(super) fn tracing(&mut self, t: Option<&S<file::Tracing>>) -> TracingConfig {
        let mut out = TracingConfig::default();
        let Some(t) = t.map(|t| t.get_ref()) else {
            return out;
        };
        if let Some(p) = &t.protocol {
            match p.get_ref().as_str() {
                "http/protobuf" => {}
                "grpc" => out.protocol = OtlpProtocol::Grpc,
                other => self.r.error(
                    p.span(),
                    format!(
                        "tracing.protocol must be \"http/protobuf\" or \"grpc\", not {other:?}"
                    ),
                ),
            }
        }
        if let Some(r) = &t.sampling_ratio {
            let ratio = *r.get_ref();
            if (0.0..=1.0).contains(&ratio) {
                out.sampling_ratio = ratio;
            } else {
                self.r.error(
                    r.span(),
                    format!("tracing.sampling_ratio must be between 0 and 1, not {ratio}"),
                );
            }
        }
        if let Some(name) = &t.service_name {
            match self.string(name) {
                Some(n) if !n.trim().is_empty() => out.service_name = n,
                Some(_) => self.r.error(name.span(), "tracing.service_name is empty"),
                None => {}
            }
        }
        for (key, value) in &t.resource_attributes {
            if key.get_ref() == "service.name" {
                self.r.error(
                    key.span(),
                    "tracing.resource_attributes: set service.name with tracing.service_name",
                );
                continue;
            }
            if let Some(v) = self.string(value) {
                out.resource_attributes.insert(key.get_ref().clone(), v);
            }
        }
        out.batch_delay = self.duration(t.batch_delay.as_ref(), out.batch_delay);
        if out.batch_delay.is_zero() {
            if let Some(d) = &t.batch_delay {
                self.r
                    .error(d.span(), "tracing.batch_delay must be more than 0s");
            }
        }
        if let Some(e) = &t.otlp_endpoint {
            let protocol = out.protocol;
            out.otlp_endpoint = self
                .string(e)
                .and_then(|text| match otlp_url(&text, protocol) {
                    Ok(url) => Some(url),
                    Err(why) => {
                        self.r
                            .error(e.span(), format!("tracing.otlp_endpoint {text:?} {why}"));
                        None
                    }
                });
        }
        out
    }

    pub(super) fn log(&mut self, l: Option<&file::Log>) -> LogConfig {
        let format = match l.and_then(|l| l.format.as_ref()) {
            None => LogFormat::Json,
            Some(f) => match f.get_ref().as_str() {
                "json" => LogFormat::Json,
                "pretty" => LogFormat::Pretty,
                other => {
                    self.r.error(
                        f.span(),
                        format!("log.format must be \"json\" or \"pretty\", not {other:?}"),
                    );
                    LogFormat::Json
                }
            },
        };
        let level = match l.and_then(|l| l.level.as_ref()) {
            None => "info".to_string(),
            Some(v) => {
                let text = self.string(v).unwrap_or_default();
                if tracing_subscriber::EnvFilter::try_new(&text).is_err() {
                    self.r.error(
                        v.span(),
                        format!("invalid log.level {text:?} (e.g. \"info\", \"debug\", \"warn,gatehouse=debug\")"),
                    );
                }
                text
            }
        };
        LogConfig {
            format,
            level,
            audit: l.and_then(|l| l.audit).unwrap_or(true),
            access_log: l.and_then(|l| l.access_log).unwrap_or(true),
        }
    }

    pub(super) fn dev_idp(&mut self, d: &S<file::DevIdp>) -> DevIdpConfig {
        let c = d.get_ref();
        let listen = self
            .listen_addr(&c.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8082)));
        if !listen.ip().is_loopback() {
            self.r.error(
                c.listen.span(),
                "dev_idp.listen must be a loopback address: the development provider logs anyone in",
            );
        }
        if c.users.get_ref().is_empty() {
            self.r
                .error(c.users.span(), "dev_idp.users needs at least one user");
        }
        let users = c
            .users
            .get_ref()
            .iter()
            .filter_map(|u| {
                let u = u.get_ref();
                Some(DevUser {
                    name: self.string(&u.name)?,
                    email: u.email.as_ref().and_then(|e| self.string(e)),
                    groups: u
                        .groups
                        .iter()
                        .flatten()
                        .filter_map(|g| self.string(g))
                        .collect(),
                })
            })
            .collect();
        let access_token_ttl = self.duration(c.access_token_ttl.as_ref(), Duration::from_secs(300));
        DevIdpConfig {
            listen,
            users,
            access_token_ttl,
        }
    }
}

/// The URL spans are POSTed to: a collector's base URL gets OTLP/HTTP's `/v1/traces` (as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` does); a URL with a path is taken as it is. gRPC: the
/// collector's `http://` base URL (HTTP/2 without TLS).
fn otlp_url(text: &str, protocol: OtlpProtocol) -> Result<String, String> {
    let mut url = url::Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".to_string());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold credentials".to_string());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must have no query or fragment".to_string());
    }
    if protocol == OtlpProtocol::Grpc {
        if url.scheme() != "http" {
            return Err("must be an http:// URL with protocol \"grpc\" (gRPC over TLS is not supported yet: use \"http/protobuf\" with https://)".to_string());
        }
        if url.path() != "/" {
            return Err("must have no path with protocol \"grpc\"".to_string());
        }
        return Ok(url.to_string());
    }
    if url.path() == "/" {
        url.set_path("/v1/traces");
    }
    Ok(url.to_string())
}
