//! `[upstream.*]` and `[[route]]`: where requests go, which methods authenticate them, CORS and
//! request overrides.

use super::*;

impl Lowerer<'_> {
    pub(super) fn upstream(
        &mut self,
        name: &S<String>,
        up: &S<file::Upstream>,
    ) -> Option<UpstreamConfig> {
        if !valid_name(name.get_ref()) {
            self.r.error(
                name.span(),
                format!(
                    "upstream name {:?} may hold only letters, digits, '-' and '_'",
                    name.get_ref()
                ),
            );
        }
        let u = up.get_ref();
        if u.servers.get_ref().is_empty() {
            self.r.error(
                u.servers.span(),
                format!("upstream {:?} needs at least one server", name.get_ref()),
            );
        }
        let servers: Vec<ServerAddr> = u
            .servers
            .get_ref()
            .iter()
            .filter_map(|s| {
                let text = self.string(s)?;
                let parsed = parse_server_addr(&text);
                if parsed.is_none() {
                    self.r.error(
                        s.span(),
                        format!("invalid upstream server {text:?}: expected HOST:PORT"),
                    );
                }
                parsed
            })
            .collect();
        let tls = u.tls.unwrap_or(false);
        let sni = match &u.sni {
            Some(s) => self.string(s).unwrap_or_default(),
            None => servers.first().map(|s| s.host.clone()).unwrap_or_default(),
        };
        if !tls {
            for (key, v) in [
                ("sni", &u.sni),
                ("ca", &u.ca),
                ("client_cert", &u.client_cert),
                ("client_key", &u.client_key),
            ] {
                if let Some(v) = v {
                    self.r
                        .error(v.span(), format!("upstream {key} needs `tls = true`"));
                }
            }
        }
        let ca = u.ca.as_ref().and_then(|c| self.pem_cert(c, "upstream CA"));
        let client_cert = match (&u.client_cert, &u.client_key) {
            (Some(c), Some(k)) => {
                let cert = self.pem_cert(c, "upstream client certificate");
                let key = self.pem_key(k, "upstream client key");
                cert.zip(key)
            }
            (Some(v), None) | (None, Some(v)) => {
                self.r
                    .error(v.span(), "client_cert and client_key go together");
                None
            }
            (None, None) => None,
        };
        let connect_timeout = self.duration(u.connect_timeout.as_ref(), Duration::from_secs(5));
        let read_timeout = self.duration(u.read_timeout.as_ref(), Duration::from_secs(60));
        let write_timeout = self.duration(u.write_timeout.as_ref(), Duration::from_secs(60));
        let health_check_interval =
            self.duration(u.health_check_interval.as_ref(), Duration::from_secs(5));
        for (v, d) in [
            (&u.connect_timeout, connect_timeout),
            (&u.read_timeout, read_timeout),
            (&u.write_timeout, write_timeout),
            (&u.health_check_interval, health_check_interval),
        ] {
            if let Some(v) = v {
                if d.is_zero() {
                    self.r.error(v.span(), "must be longer than zero");
                }
            }
        }
        Some(UpstreamConfig {
            name: name.get_ref().clone(),
            servers,
            tls,
            sni,
            ca,
            client_cert,
            connect_timeout,
            read_timeout,
            write_timeout,
            health_check_interval,
        })
    }

    pub(super) fn routes(
        &mut self,
        routes: &[S<file::Route>],
        upstreams: &BTreeMap<String, UpstreamConfig>,
        available: Available,
        idps: &[IdpConfig],
    ) -> Vec<RouteConfig> {
        let mut names: HashMap<String, ()> = HashMap::new();
        let mut places: HashMap<(Option<String>, String), String> = HashMap::new();
        let mut out = Vec::new();
        for r in routes {
            let route = r.get_ref();
            let name = route.name.get_ref().clone();
            if !valid_name(&name) {
                self.r.error(
                    route.name.span(),
                    format!("route name {name:?} may hold only letters, digits, '-' and '_'"),
                );
            }
            if names.insert(name.clone(), ()).is_some() {
                self.r.error(
                    route.name.span(),
                    format!("a route named {name:?} is defined twice"),
                );
            }
            let host = route.host.as_ref().and_then(|h| {
                let text = self.string(h)?.to_ascii_lowercase();
                if !valid_host(&text) {
                    self.r.error(
                        h.span(),
                        format!("invalid route host {text:?} (a host name, without scheme, port or path)"),
                    );
                    return None;
                }
                Some(text)
            });
            let path = self.string(&route.path).unwrap_or_default();
            let prefix = route_prefix(&path);
            if prefix.is_none() {
                self.r.error(
                    route.path.span(),
                    format!("route path {path:?} must be an absolute, normalized path prefix such as \"/\" or \"/api/\""),
                );
            }
            let prefix = prefix.unwrap_or_default();
            if let Some(other) = places.insert((host.clone(), prefix.clone()), name.clone()) {
                self.r.error(
                    route.path.span(),
                    format!(
                        "route {name:?} overlaps route {other:?}: both match host {} and path {prefix:?}",
                        host.as_deref().unwrap_or("(any)")
                    ),
                );
            }
            let upstream = route.upstream.get_ref().clone();
            if !upstreams.contains_key(&upstream) {
                let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                self.r.error(
                    route.upstream.span(),
                    format!(
                        "route {name:?} names unknown upstream {upstream:?} (defined: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            let auth = self.auth(&route.auth, available);
            let require_dpop = route.require_dpop.as_ref().is_some_and(|v| *v.get_ref());
            let dpop_nonce = route.dpop_nonce.as_ref().is_some_and(|v| *v.get_ref());
            for (key, set) in [
                ("require_dpop", &route.require_dpop),
                ("dpop_nonce", &route.dpop_nonce),
            ] {
                if let Some(v) = set.as_ref().filter(|v| *v.get_ref()) {
                    if !auth.contains(&AuthMethod::Bearer) {
                        self.r.error(
                            v.span(),
                            format!("route {name:?} sets {key} but does not accept bearer tokens"),
                        );
                    }
                }
            }
            let pass_access_token = route.pass_access_token.unwrap_or(false);
            if pass_access_token
                && !auth.contains(&AuthMethod::Bearer)
                && !auth.contains(&AuthMethod::Session)
            {
                self.r.error(
                    route.auth.span(),
                    format!(
                        "route {name:?} sets pass_access_token but accepts neither bearer tokens nor sessions"
                    ),
                );
            }
            let session = auth.contains(&AuthMethod::Session);
            let idps = match (&route.idp, session) {
                (Some(v), true) => {
                    let listed: Vec<&String> = match v.get_ref() {
                        file::IdpNames::One(n) => vec![n],
                        file::IdpNames::Many(list) => list.iter().collect(),
                    };
                    if listed.is_empty() {
                        self.r.error(
                            v.span(),
                            format!("route {name:?} lists no idp: name one or more"),
                        );
                    }
                    let mut found = Vec::new();
                    for n in listed {
                        match idps.iter().position(|i| i.name == *n) {
                            Some(_) if found.iter().any(|f: &usize| idps[*f].name == *n) => {
                                self.r.error(
                                    v.span(),
                                    format!("route {name:?} lists idp {n:?} twice"),
                                );
                            }
                            Some(i) => found.push(i),
                            None => {
                                let known: Vec<&str> =
                                    idps.iter().map(|i| i.name.as_str()).collect();
                                self.r.error(
                                    v.span(),
                                    format!(
                                        "route {name:?} names unknown idp {n:?} (defined: {})",
                                        if known.is_empty() {
                                            "none".to_string()
                                        } else {
                                            known.join(", ")
                                        }
                                    ),
                                );
                            }
                        }
                    }
                    found
                }
                (None, true) if idps.len() == 1 => vec![0],
                (None, true) => {
                    if idps.len() > 1 {
                        self.r.error(
                            route.auth.span(),
                            format!("route {name:?} uses session login and several [[idp]] exist: name one with `idp` (or a list for a sign-in page)"),
                        );
                    }
                    Vec::new()
                }
                (Some(v), false) => {
                    self.r.error(
                        v.span(),
                        "`idp` is only used on routes with auth = [\"session\"]",
                    );
                    Vec::new()
                }
                (None, false) => Vec::new(),
            };
            let domain_hint = route.domain_hint.as_ref().and_then(|v| {
                let text = self.string(v)?.to_ascii_lowercase();
                if !session {
                    self.r.error(
                        v.span(),
                        "`domain_hint` is only used on routes with auth = [\"session\"]",
                    );
                } else if !valid_host(&text) || text.parse::<std::net::IpAddr>().is_ok() {
                    self.r.error(
                        v.span(),
                        format!(
                            "domain_hint {text:?} must be an email domain such as \"example.com\""
                        ),
                    );
                }
                Some(text)
            });
            let acr_values: Vec<String> = route
                .acr_values
                .iter()
                .flat_map(|l| l.get_ref().iter())
                .filter_map(|v| self.string(v))
                .collect();
            let max_auth_age = route
                .max_auth_age
                .as_ref()
                .map(|v| self.duration(Some(v), Duration::ZERO));
            for (key, span) in [
                ("acr_values", route.acr_values.as_ref().map(S::span)),
                ("max_auth_age", route.max_auth_age.as_ref().map(S::span)),
            ] {
                if let (Some(span), false) = (span, session) {
                    self.r.error(
                        span,
                        format!(
                            "`{key}` (step-up) is only used on routes with auth = [\"session\"]"
                        ),
                    );
                }
            }
            if let Some(list) = &route.acr_values {
                if list.get_ref().is_empty() {
                    self.r.error(
                        list.span(),
                        "acr_values must not be empty (leave it out instead)",
                    );
                }
            }
            let policy = route.policy.as_ref().and_then(|p| self.policy(p));
            let cors = route.cors.as_ref().map(|c| self.cors(c));
            let checks = route.path_checks.as_ref();
            let path_checks = NormalizeOptions {
                allow_encoded_slash: checks.and_then(|c| c.allow_encoded_slash).unwrap_or(false),
                allow_backslash: checks.and_then(|c| c.allow_backslash).unwrap_or(false),
                allow_semicolon: checks.and_then(|c| c.allow_semicolon).unwrap_or(false),
                allow_double_encoding: checks
                    .and_then(|c| c.allow_double_encoding)
                    .unwrap_or(false),
            };
            let overrides = self.overrides(route.request_overrides.as_ref());
            out.push(RouteConfig {
                underscores_in_headers: route.underscores_in_headers.unwrap_or(false),
                overrides,
                name,
                host,
                path: prefix,
                upstream,
                auth,
                cors,
                security_headers: route.security_headers.unwrap_or(true),
                path_checks,
                pass_access_token,
                require_dpop,
                dpop_nonce,
                rate_limits: Vec::new(),
                policy,
                idps,
                domain_hint,
                acr_values,
                max_auth_age,
            });
        }
        out
    }

    /// `request_overrides`: only overrides the gateway knows how to judge.
    pub(super) fn overrides(
        &mut self,
        list: Option<&S<Vec<S<String>>>>,
    ) -> Vec<crate::headers::Override> {
        use crate::headers::{Override, METHOD_OVERRIDES, METHOD_PARAMETER, PATH_OVERRIDES};
        let mut out: Vec<Override> = Vec::new();
        for name in list.iter().flat_map(|l| l.get_ref().iter()) {
            match Override::parse(name.get_ref()) {
                Some(o) if out.contains(&o) => self
                    .r
                    .error(name.span(), format!("{:?} is listed twice", name.get_ref())),
                Some(o) => out.push(o),
                None => self.r.error(
                    name.span(),
                    format!(
                        "unknown request override {:?}; known: {}, {}, {METHOD_PARAMETER}",
                        name.get_ref(),
                        METHOD_OVERRIDES.join(", "),
                        PATH_OVERRIDES.join(", ")
                    ),
                ),
            }
        }
        out
    }

    pub(super) fn auth(
        &mut self,
        auth: &S<Vec<S<String>>>,
        available: Available,
    ) -> Vec<AuthMethod> {
        if auth.get_ref().is_empty() {
            self.r.error(
                auth.span(),
                "route auth must name at least one method; write [\"none\"] for a public route",
            );
        }
        let mut methods = Vec::new();
        for m in auth.get_ref() {
            match m.get_ref().as_str() {
                "none" => methods.push(AuthMethod::None),
                "bearer" if available.bearer => methods.push(AuthMethod::Bearer),
                "api_key" if available.api_key => methods.push(AuthMethod::ApiKey),
                "bearer" => self.r.error(
                    m.span(),
                    "auth method \"bearer\" needs at least one [[bearer]] issuer",
                ),
                "api_key" => self.r.error(
                    m.span(),
                    "auth method \"api_key\" needs at least one [[api_key]]",
                ),
                "session" if available.session => methods.push(AuthMethod::Session),
                "session" => self.r.error(
                    m.span(),
                    "auth method \"session\" needs at least one [[idp]] for browser login",
                ),
                other => self.r.error(
                    m.span(),
                    format!(
                        "unknown auth method {other:?} (expected session, bearer, api_key or none)"
                    ),
                ),
            }
        }
        if methods.contains(&AuthMethod::None) && auth.get_ref().len() > 1 {
            self.r.error(
                auth.span(),
                "auth \"none\" cannot be combined with other methods",
            );
        }
        methods
    }

    pub(super) fn cors(&mut self, c: &S<file::Cors>) -> CorsConfig {
        let cors = c.get_ref();
        let allow_credentials = cors.allow_credentials.unwrap_or(false);
        let mut allowed_origins = Vec::new();
        for o in cors.allowed_origins.get_ref() {
            let Some(text) = self.string(o) else { continue };
            if text == "*" {
                if allow_credentials {
                    self.r.error(
                        o.span(),
                        "a wildcard origin cannot be combined with allow_credentials",
                    );
                }
            } else if !valid_origin(&text) {
                self.r.error(
                    o.span(),
                    format!(
                        "invalid CORS origin {text:?}: expected scheme://host[:port] with no path"
                    ),
                );
                continue;
            }
            allowed_origins.push(text.to_ascii_lowercase());
        }
        if cors.allowed_origins.get_ref().is_empty() {
            self.r
                .error(cors.allowed_origins.span(), "allowed_origins is empty");
        }
        let token_list = |l: &mut Self, list: &Option<Vec<S<String>>>, what: &str| {
            list.as_ref().map(|items| {
                items
                    .iter()
                    .filter_map(|i| {
                        let v = l.string(i)?;
                        if HeaderName::from_bytes(v.as_bytes()).is_err() && v != "*" {
                            l.r.error(i.span(), format!("invalid {what} {v:?}"));
                            return None;
                        }
                        Some(v)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        };
        let allowed_methods = token_list(self, &cors.allowed_methods, "method")
            .unwrap_or_else(|| "GET, HEAD, POST".to_string());
        let allowed_headers = token_list(self, &cors.allowed_headers, "header name");
        let expose_headers = token_list(self, &cors.expose_headers, "header name");
        let max_age = self.duration(cors.max_age.as_ref(), Duration::from_secs(600));
        CorsConfig {
            allowed_origins,
            allowed_methods,
            allowed_headers,
            expose_headers,
            allow_credentials,
            max_age,
        }
    }
}
