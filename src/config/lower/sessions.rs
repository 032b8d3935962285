//! `[session]` and `[[idp]]`: browser sessions, their store, and the OpenID providers people log
//! in with.

use super::redis_section::RedisSettings;
use super::*;

impl Lowerer<'_> {
    pub(super) fn session(
        &mut self,
        s: Option<&S<file::Session>>,
        redis: &RedisSettings,
    ) -> SessionConfig {
        let none = file::Session {
            store: None,
            redis_url: None,
            redis_url_file: None,
            cookie_name: None,
            secret: None,
            secret_file: None,
            secret_previous: None,
            secret_previous_file: None,
            max_lifetime: None,
            idle_timeout: None,
            same_site: None,
            fallback: None,
            timeout: None,
            max_sessions: None,
            refresh_before: None,
        };
        let span = s.map_or(0..0, S::span);
        let c = s.map_or(&none, S::get_ref);
        let redis_url = self.secret(c.redis_url.as_ref(), c.redis_url_file.as_ref(), "redis_url");
        let store = self.session_store(c.store.as_ref(), redis_url, redis);
        let cookie_name = match &c.cookie_name {
            None => "gatehouse".to_string(),
            Some(v) => {
                let text = self.string(v).unwrap_or_default();
                let ok = !text.is_empty()
                    && text.len() <= 64
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                    && !text.starts_with("__");
                if !ok {
                    self.r.error(
                        v.span(),
                        format!("cookie_name {text:?} may hold only letters, digits, '-', '_' and '.' (the __Host- prefix is added on TLS)"),
                    );
                }
                text
            }
        };
        let secret = match self.secret(c.secret.as_ref(), c.secret_file.as_ref(), "secret") {
            None => {
                if matches!(store, StoreKind::Redis { .. }) {
                    self.r.error(
                        span.clone(),
                        "session.secret is required with the redis store: every instance must derive the same token encryption key",
                    );
                }
                None
            }
            Some((text, at)) => Some(self.session_secret(text, at, "session.secret")),
        };
        let secret_previous = match self.secret(
            c.secret_previous.as_ref(),
            c.secret_previous_file.as_ref(),
            "secret_previous",
        ) {
            None => None,
            Some((_, at)) if secret.is_none() => {
                self.r.error(
                    at,
                    "session.secret_previous is the secret before a rotation: set the new one in session.secret",
                );
                None
            }
            Some((text, at)) => Some(self.session_secret(text, at, "session.secret_previous")),
        };
        let max_lifetime = self.duration(c.max_lifetime.as_ref(), Duration::from_secs(8 * 3600));
        let idle_timeout = self.duration(c.idle_timeout.as_ref(), Duration::from_secs(3600));
        for (v, d) in [
            (&c.max_lifetime, max_lifetime),
            (&c.idle_timeout, idle_timeout),
        ] {
            if let Some(v) = v {
                if d < Duration::from_secs(60) {
                    self.r.error(v.span(), "must be at least 1m");
                }
            }
        }
        if idle_timeout > max_lifetime {
            if let Some(v) = &c.idle_timeout {
                self.r
                    .error(v.span(), "idle_timeout cannot exceed max_lifetime");
            }
        }
        let same_site = match c.same_site.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "lax")) => SameSite::Lax,
            Some((_, "strict")) => SameSite::Strict,
            Some((v, other)) => {
                self.r.error(
                    v.span(),
                    format!("session.same_site must be \"lax\" or \"strict\", not {other:?} (\"none\" would send the session cookie with cross-site requests)"),
                );
                SameSite::Lax
            }
        };
        let fallback_memory = match c.fallback.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "none")) => false,
            Some((_, "memory")) => true,
            Some((v, other)) => {
                self.r.error(
                    v.span(),
                    format!("session.fallback must be \"none\" or \"memory\", not {other:?}"),
                );
                false
            }
        };
        let timeout = self.duration(c.timeout.as_ref(), Duration::from_millis(500));
        let refresh_before = self.duration(c.refresh_before.as_ref(), Duration::from_secs(60));
        let max_sessions = self.positive(c.max_sessions.as_ref(), 1_000_000, "max_sessions");
        SessionConfig {
            store,
            cookie_name,
            secret,
            secret_previous,
            max_lifetime,
            idle_timeout,
            same_site,
            fallback_memory,
            timeout,
            max_sessions,
            refresh_before,
        }
    }

    fn session_secret(&mut self, text: String, at: std::ops::Range<usize>, key: &str) -> Vec<u8> {
        if text.len() < 32 {
            self.r.error(
                at,
                format!("{key} must be at least 32 characters (e.g. `openssl rand -hex 32`)"),
            );
        }
        text.into_bytes()
    }

    /// `store = "memory" | "redis"` with its `redis_url` (or `redis_url_file`), else `[redis]`.
    fn session_store(
        &mut self,
        store: Option<&S<String>>,
        redis_url: Option<(String, std::ops::Range<usize>)>,
        redis: &RedisSettings,
    ) -> StoreKind {
        match store.map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "memory")) => {
                if let Some((_, at)) = redis_url {
                    self.r
                        .error(at, "session.redis_url is only used with store = \"redis\"");
                }
                StoreKind::Memory
            }
            Some((v, "redis")) => {
                if redis_url.is_none() && !redis.given {
                    self.r.error(
                        v.span(),
                        "session store \"redis\" needs session.redis_url or a [redis] table",
                    );
                }
                self.store_redis(redis_url, redis)
                    .map_or(StoreKind::Memory, |t| StoreKind::Redis(Box::new(t)))
            }
            Some((v, other)) => {
                self.r.error(
                    v.span(),
                    format!("session.store must be \"memory\" or \"redis\", not {other:?}"),
                );
                StoreKind::Memory
            }
        }
    }

    pub(super) fn idps(&mut self, list: &[S<file::Idp>]) -> Vec<IdpConfig> {
        let mut out: Vec<IdpConfig> = Vec::new();
        for i in list {
            let c = i.get_ref();
            let name = c.name.get_ref().clone();
            if !valid_name(&name) {
                self.r.error(
                    c.name.span(),
                    format!("idp name {name:?} may hold only letters, digits, '-' and '_'"),
                );
            }
            if out.iter().any(|o| o.name == name) {
                self.r.error(
                    c.name.span(),
                    format!("an idp named {name:?} is defined twice"),
                );
            }
            let issuer = self.secure_url(&c.issuer, "issuer");
            let client_id = self.string(&c.client_id).unwrap_or_default();
            if client_id.is_empty() {
                self.r
                    .error(c.client_id.span(), "client_id must not be empty");
            }
            let client_secret = self
                .secret(
                    c.client_secret.as_ref(),
                    c.client_secret_file.as_ref(),
                    "client_secret",
                )
                .map(|(text, _)| text);
            let client_auth = match (&c.client_auth, &client_secret) {
                (None, Some(_)) => ClientAuth::Basic,
                (None, None) => ClientAuth::None,
                (Some(v), secret) => match (v.get_ref().as_str(), secret) {
                    ("client_secret_basic", Some(_)) => ClientAuth::Basic,
                    ("client_secret_post", Some(_)) => ClientAuth::Post,
                    ("none", None) => ClientAuth::None,
                    ("private_key_jwt", None) => ClientAuth::PrivateKeyJwt,
                    ("tls_client_auth", None) => ClientAuth::TlsClientAuth,
                    ("tls_client_auth", Some(_)) => {
                        self.r.error(
                            v.span(),
                            "client_auth \"tls_client_auth\" presents tls_client_cert_file; remove client_secret",
                        );
                        ClientAuth::TlsClientAuth
                    }
                    ("private_key_jwt", Some(_)) => {
                        self.r.error(
                            v.span(),
                            "client_auth \"private_key_jwt\" signs with client_key_file; remove client_secret",
                        );
                        ClientAuth::PrivateKeyJwt
                    }
                    ("client_secret_basic" | "client_secret_post", None) => {
                        self.r
                            .error(v.span(), "this client_auth needs client_secret");
                        ClientAuth::None
                    }
                    ("none", Some(_)) => {
                        self.r.error(
                            v.span(),
                            "client_auth \"none\" is for public clients; remove client_secret",
                        );
                        ClientAuth::None
                    }
                    (other, _) => {
                        self.r.error(
                            v.span(),
                            format!("client_auth must be \"client_secret_basic\", \"client_secret_post\", \"private_key_jwt\", \"tls_client_auth\" or \"none\", not {other:?}"),
                        );
                        ClientAuth::None
                    }
                },
            };
            let client_key = self.client_key(c, client_auth);
            let tls = self.idp_tls(c, client_auth);
            let scopes: Vec<String> = match &c.scopes {
                None => ["openid", "profile", "email"].map(String::from).to_vec(),
                Some(list) => {
                    let scopes: Vec<String> = list
                        .get_ref()
                        .iter()
                        .filter_map(|s| self.string(s))
                        .collect();
                    if !scopes.iter().any(|s| s == "openid") {
                        self.r.error(list.span(), "scopes must include \"openid\"");
                    }
                    if let Some(bad) = scopes.iter().find(|s| {
                        s.is_empty()
                            || !s
                                .bytes()
                                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
                    }) {
                        self.r.error(list.span(), format!("invalid scope {bad:?}"));
                    }
                    scopes
                }
            };
            let claims = self.claim_names(
                [
                    &c.subject_claim,
                    &c.email_claim,
                    &c.username_claim,
                    &c.groups_claim,
                ],
                c.email_verified.as_ref(),
            );
            const RESERVED_PARAMS: [&str; 10] = [
                "response_type",
                "client_id",
                "redirect_uri",
                "scope",
                "state",
                "nonce",
                "code_challenge",
                "code_challenge_method",
                "response_mode",
                "request",
            ];
            let mut extra_auth_params = Vec::new();
            for (k, v) in &c.extra_auth_params {
                if RESERVED_PARAMS.contains(&k.get_ref().as_str()) {
                    self.r.error(
                        k.span(),
                        format!(
                            "extra_auth_params cannot set {:?}: the gateway sets it",
                            k.get_ref()
                        ),
                    );
                    continue;
                }
                if let Some(value) = self.string(v) {
                    extra_auth_params.push((k.get_ref().clone(), value));
                }
            }
            let algorithms = self.algorithms(
                c.algorithms.as_ref(),
                &[
                    jsonwebtoken::Algorithm::RS256,
                    jsonwebtoken::Algorithm::PS256,
                    jsonwebtoken::Algorithm::ES256,
                    jsonwebtoken::Algorithm::EdDSA,
                ],
            );
            let leeway = self.leeway(c.leeway.as_ref());
            let post_logout_redirect_uri = c.post_logout_redirect_uri.as_ref().and_then(|v| {
                let text = self.string(v)?;
                if url::Url::parse(&text)
                    .ok()
                    .is_none_or(|u| !matches!(u.scheme(), "http" | "https"))
                {
                    self.r.error(
                        v.span(),
                        format!(
                            "post_logout_redirect_uri {text:?} must be an absolute http(s) URL"
                        ),
                    );
                    return None;
                }
                Some(text)
            });
            let userinfo = match c.userinfo.as_ref() {
                None => Userinfo::Auto,
                Some(v) => {
                    match v.get_ref().as_str() {
                        "auto" => Userinfo::Auto,
                        "always" => Userinfo::Always,
                        "never" => Userinfo::Never,
                        other => {
                            self.r.error(
                            v.span(),
                            format!("userinfo must be \"auto\", \"always\" or \"never\", not {other:?}"),
                        );
                            Userinfo::Auto
                        }
                    }
                }
            };
            let userinfo_on_error = match c.userinfo_on_error.as_ref() {
                None => UserinfoOnError::Fail,
                Some(v) => {
                    match v.get_ref().as_str() {
                        "fail" => UserinfoOnError::Fail,
                        "continue" => UserinfoOnError::Continue,
                        other => {
                            self.r.error(
                            v.span(),
                            format!("userinfo_on_error must be \"fail\" or \"continue\", not {other:?}"),
                        );
                            UserinfoOnError::Fail
                        }
                    }
                }
            };
            if let (Some(v), Userinfo::Never) = (c.userinfo_on_error.as_ref(), userinfo) {
                self.r.error(
                    v.span(),
                    "userinfo_on_error has no effect with userinfo = \"never\"; remove one",
                );
            }
            let graph = self.graph(c);
            let display_name = match &c.display_name {
                None => name.clone(),
                Some(v) => {
                    let text = self.string(v).unwrap_or_default();
                    if text.trim().is_empty() || text.chars().count() > 100 {
                        self.r
                            .error(v.span(), "display_name must hold 1 to 100 characters");
                    }
                    text
                }
            };
            let logo_url = c.logo_url.as_ref().and_then(|v| {
                let text = self.string(v)?;
                let ok = url::Url::parse(&text).ok().is_some_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some()
                        && u.username().is_empty()
                        && u.password().is_none()
                });
                if !ok {
                    self.r.error(
                        v.span(),
                        format!("logo_url {text:?} must be an absolute http(s) URL"),
                    );
                    return None;
                }
                Some(text)
            });
            let mut domains: Vec<String> = Vec::new();
            for d in c.idp_domains.iter().flat_map(|l| l.get_ref().iter()) {
                let Some(text) = self.string(d) else { continue };
                let text = text.to_ascii_lowercase();
                if !valid_host(&text) || text.parse::<std::net::IpAddr>().is_ok() {
                    self.r.error(
                        d.span(),
                        format!("idp_domains entry {text:?} must be an email domain such as \"example.com\""),
                    );
                    continue;
                }
                let other = out.iter().find(|o| o.domains.contains(&text));
                if let Some(other) = other {
                    self.r.error(
                        d.span(),
                        format!(
                            "email domain {text:?} is already in idp {:?}'s idp_domains",
                            other.name
                        ),
                    );
                }
                if domains.contains(&text) {
                    self.r
                        .error(d.span(), format!("email domain {text:?} is listed twice"));
                }
                domains.push(text);
            }
            let Some(issuer) = issuer else { continue };
            out.push(IdpConfig {
                name,
                issuer,
                client_id,
                client_secret,
                client_auth,
                client_key,
                tls,
                scopes,
                claims,
                extra_auth_params,
                algorithms,
                leeway,
                post_logout_redirect_uri,
                qualify_subject: false,
                userinfo,
                userinfo_on_error,
                par: c.par.as_ref().is_some_and(|p| *p.get_ref()),
                graph,
                display_name,
                logo_url,
                domains,
            });
        }
        out
    }
    /// The `private_key_jwt` signing key: a PEM RSA (2048 bits or more) or P-256 private key,
    /// signing with `client_key_alg` (RS256 or PS256 for RSA, ES256 for P-256; by default
    /// RS256 or ES256).
    fn client_key(&mut self, c: &file::Idp, auth: ClientAuth) -> Option<ClientKey> {
        use jsonwebtoken::Algorithm;
        let Some(file) = c.client_key_file.as_ref() else {
            if auth == ClientAuth::PrivateKeyJwt {
                if let Some(v) = &c.client_auth {
                    self.r.error(
                        v.span(),
                        "client_auth \"private_key_jwt\" needs client_key_file (a PEM private key)",
                    );
                }
            }
            for v in [&c.client_key_id, &c.client_key_alg].into_iter().flatten() {
                self.r.error(
                    v.span(),
                    "this needs client_key_file and client_auth = \"private_key_jwt\"",
                );
            }
            return None;
        };
        if auth != ClientAuth::PrivateKeyJwt {
            self.r.error(
                file.span(),
                "client_key_file is for client_auth = \"private_key_jwt\"",
            );
            return None;
        }
        let path = self.readable_file(file, "client key")?;
        let pem = std::fs::read(&path).unwrap_or_default();
        let key = match pingora::tls::pkey::PKey::private_key_from_pem(&pem) {
            Ok(key) => key,
            Err(_) => {
                self.r.error(
                    file.span(),
                    format!("client key {} is not a PEM private key", path.display()),
                );
                return None;
            }
        };
        let rsa = key.rsa().ok().filter(|r| r.size() >= 256);
        let p256 = key.ec_key().ok().and_then(|e| e.group().curve_name())
            == Some(pingora::tls::nid::Nid::X9_62_PRIME256V1);
        let allowed: &[Algorithm] = if rsa.is_some() {
            &[Algorithm::RS256, Algorithm::PS256]
        } else if p256 {
            &[Algorithm::ES256]
        } else {
            self.r.error(
                file.span(),
                format!(
                    "client key {} must be an RSA key of 2048 bits or more, or a P-256 key",
                    path.display()
                ),
            );
            return None;
        };
        let alg = match &c.client_key_alg {
            None => allowed[0],
            Some(v) => match v.get_ref().as_str() {
                "RS256" => Algorithm::RS256,
                "PS256" => Algorithm::PS256,
                "ES256" => Algorithm::ES256,
                other => {
                    self.r.error(
                        v.span(),
                        format!("client_key_alg must be \"RS256\", \"PS256\" or \"ES256\", not {other:?}"),
                    );
                    return None;
                }
            },
        };
        if !allowed.contains(&alg) {
            if let Some(v) = &c.client_key_alg {
                self.r.error(
                    v.span(),
                    format!("{alg:?} does not fit the key in {}", path.display()),
                );
            }
            return None;
        }
        let kid = c.client_key_id.as_ref().and_then(|v| self.string(v));
        Some(ClientKey {
            path,
            pem,
            alg,
            kid,
        })
    }
    /// The IdP's own CA (`tls_ca_file`) and the `tls_client_auth` certificate and key: each
    /// file read and parsed now, the key checked against the certificate.
    fn idp_tls(&mut self, c: &file::Idp, auth: ClientAuth) -> IdpTls {
        use pingora::tls::pkey::PKey;
        use pingora::tls::x509::X509;
        let ca_pem = c.tls_ca_file.as_ref().and_then(|v| {
            let path = self.pem_cert(v, "IdP CA")?;
            std::fs::read(path).ok()
        });
        let client = match (&c.tls_client_cert_file, &c.tls_client_key_file) {
            (None, None) => {
                if auth == ClientAuth::TlsClientAuth {
                    if let Some(v) = &c.client_auth {
                        self.r.error(
                            v.span(),
                            "client_auth \"tls_client_auth\" needs tls_client_cert_file and tls_client_key_file",
                        );
                    }
                }
                None
            }
            (Some(cert), Some(key)) => {
                if auth != ClientAuth::TlsClientAuth {
                    self.r.error(
                        cert.span(),
                        "tls_client_cert_file is for client_auth = \"tls_client_auth\"",
                    );
                    None
                } else {
                    let cert_path = self.pem_cert(cert, "client certificate");
                    let key_path = self.readable_file(key, "client certificate key");
                    let pair = cert_path.zip(key_path).and_then(|(cp, kp)| {
                        let cert_pem = std::fs::read(&cp).ok()?;
                        let key_pem = std::fs::read(&kp).ok()?;
                        let certificate = X509::from_pem(&cert_pem).ok()?;
                        let Ok(private) = PKey::private_key_from_pem(&key_pem) else {
                            self.r.error(
                                key.span(),
                                format!("{} is not a PEM private key", kp.display()),
                            );
                            return None;
                        };
                        let matches = certificate
                            .public_key()
                            .is_ok_and(|public| public.public_eq(&private));
                        if !matches {
                            self.r.error(
                                key.span(),
                                format!("{} is not the key of {}", kp.display(), cp.display()),
                            );
                            return None;
                        }
                        // native-tls takes the key as PKCS#8 only.
                        let pkcs8 = private.private_key_to_pem_pkcs8().ok()?;
                        Some((cert_pem, pkcs8))
                    });
                    pair
                }
            }
            (Some(v), None) | (None, Some(v)) => {
                self.r.error(
                    v.span(),
                    "tls_client_cert_file and tls_client_key_file go together",
                );
                None
            }
        };
        IdpTls { ca_pem, client }
    }
    /// `groups_source = "token" | "graph"` and Graph's URL (`graph_url`, for a national cloud
    /// or a test): https, or http on loopback.
    fn graph(&mut self, c: &file::Idp) -> Option<String> {
        let graph = match c.groups_source.as_ref() {
            None => false,
            Some(v) => match v.get_ref().as_str() {
                "token" => false,
                "graph" => true,
                other => {
                    self.r.error(
                        v.span(),
                        format!("groups_source must be \"token\" or \"graph\", not {other:?}"),
                    );
                    false
                }
            },
        };
        let Some(v) = c.graph_url.as_ref() else {
            return graph.then(|| "https://graph.microsoft.com".to_string());
        };
        if !graph {
            self.r
                .error(v.span(), "graph_url is for groups_source = \"graph\"");
            return None;
        }
        let text = self.string(v)?;
        if let Err(e) = check_secure_url(&text) {
            self.r.error(v.span(), format!("graph_url {text:?} {e}"));
            return None;
        }
        Some(text)
    }
}
