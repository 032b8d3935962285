//! The development OpenID provider of `gatehouse demo`: discovery, an authorization endpoint
//! with a user picker (the users and groups of `[dev_idp]`), the token endpoint (code with
//! PKCE S256, refresh), the JWKS and end-session. Loopback only, for trying the login flow
//! offline; `gatehouse run` refuses a config that has it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::Response;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::authn::bearer::unix_now;
use crate::config::{Config, DevIdpConfig, DevUser};

struct Grant {
    user: String,
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    sid: String,
    issued: Instant,
}

pub struct DevIdp {
    issuer: String,
    users: Vec<DevUser>,
    /// client_id → secret (None: public client), from the `[[idp]]`s that point here.
    clients: HashMap<String, Option<String>>,
    callback: String,
    /// The Content-Security-Policy of its HTML pages.
    csp: String,
    public_url: String,
    access_ttl: Duration,
    key: EncodingKey,
    kid: String,
    jwk: Value,
    codes: Mutex<HashMap<String, Grant>>,
    refresh_tokens: Mutex<HashMap<String, (String, String, String)>>,
}

fn random(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn reply(
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    extra: &[(&str, String)],
) -> Response<Vec<u8>> {
    let mut b = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store");
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    b.body(body).unwrap_or_default()
}

fn json_reply(status: u16, value: Value) -> Response<Vec<u8>> {
    reply(
        status,
        "application/json",
        value.to_string().into_bytes(),
        &[],
    )
}

fn redirect(location: &str) -> Response<Vec<u8>> {
    reply(
        302,
        "text/plain",
        Vec::new(),
        &[("location", location.to_string())],
    )
}

/// The CSP of the provider's pages. `form-action` names the gateway too: Chromium applies it
/// to the redirect that follows the user picker's POST (to the gateway's callback).
fn page_csp(callback: &str) -> String {
    let gateway = url::Url::parse(callback)
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null");
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'{}; frame-ancestors 'none'; base-uri 'none'",
        gateway.map(|o| format!(" {o}")).unwrap_or_default()
    )
}

impl DevIdp {
    pub fn new(dev: &DevIdpConfig, config: &Config) -> Result<DevIdp, String> {
        let issuer = format!("http://{}", dev.listen);
        let clients: HashMap<String, Option<String>> = config
            .idps
            .iter()
            .filter(|i| i.issuer == issuer)
            .map(|i| (i.client_id.clone(), i.client_secret.clone()))
            .collect();
        let public_url = config.server.public_url.clone().unwrap_or_default();
        let ec = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
            .and_then(|g| EcKey::generate(&g))
            .map_err(|e| e.to_string())?;
        let (mut x, mut y) = (
            BigNum::new().map_err(|e| e.to_string())?,
            BigNum::new().map_err(|e| e.to_string())?,
        );
        let mut ctx = BigNumContext::new().map_err(|e| e.to_string())?;
        ec.public_key()
            .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
            .map_err(|e| e.to_string())?;
        let enc = |n: &BigNum| {
            n.to_vec_padded(32)
                .map(|b| URL_SAFE_NO_PAD.encode(b))
                .map_err(|e| e.to_string())
        };
        let kid = format!("dev-{}", random(6));
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": enc(&x)?, "y": enc(&y)?, "kid": kid, "use": "sig", "alg": "ES256"});
        let pem = PKey::from_ec_key(ec)
            .and_then(|k| k.private_key_to_pem_pkcs8())
            .map_err(|e| e.to_string())?;
        let callback = format!("{public_url}{}/callback", config.server.reserved_prefix);
        Ok(DevIdp {
            csp: page_csp(&callback),
            callback,
            public_url,
            issuer,
            users: dev.users.clone(),
            clients,
            access_ttl: dev.access_token_ttl,
            key: EncodingKey::from_ec_pem(&pem).map_err(|e| e.to_string())?,
            kid,
            jwk,
            codes: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
        })
    }

    fn page(&self, title: &str, body: &str) -> Response<Vec<u8>> {
        let html = crate::respond::styled_page(
            "",
            "gatehouse demo &middot; development provider",
            title,
            body,
        );
        reply(
            200,
            "text/html; charset=utf-8",
            html.into_bytes(),
            &[("content-security-policy", self.csp.clone())],
        )
    }

    fn discovery(&self) -> Value {
        let i = &self.issuer;
        json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "jwks_uri": format!("{i}/jwks"),
            "end_session_endpoint": format!("{i}/end_session"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "authorization_response_iss_parameter_supported": true,
        })
    }

    /// The authorization request, checked; its parameters for the user picker.
    fn check_authorize(&self, params: &HashMap<String, String>) -> Result<(), String> {
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
        if get("response_type") != "code" {
            return Err("response_type must be code".into());
        }
        if !self.clients.contains_key(get("client_id")) {
            return Err(format!("unknown client_id {:?}", get("client_id")));
        }
        if get("redirect_uri") != self.callback {
            return Err("redirect_uri is not the gateway's callback".into());
        }
        if get("code_challenge_method") != "S256" || get("code_challenge").len() != 43 {
            return Err("PKCE with S256 is required".into());
        }
        if get("state").is_empty() {
            return Err("state is required".into());
        }
        Ok(())
    }

    fn picker(&self, params: &HashMap<String, String>) -> Response<Vec<u8>> {
        let hidden: String = params
            .iter()
            .map(|(k, v)| {
                format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                    escape(k),
                    escape(v)
                )
            })
            .collect();
        let buttons: String = self
            .users
            .iter()
            .map(|u| {
                let groups = if u.groups.is_empty() { "no groups".to_string() } else { u.groups.join(", ") };
                format!(
                    "<li><button type=\"submit\" name=\"user\" value=\"{n}\">{n}</button> <small>{g}</small></li>",
                    n = escape(&u.name),
                    g = escape(&groups)
                )
            })
            .collect();
        self.page(
            "Sign in &middot; gatehouse demo",
            &format!(
                "<h1>Sign in</h1><p>This is the development provider built into <code>gatehouse demo</code>. Pick who you are:</p>\
                 <form method=\"post\" action=\"/authorize\">{hidden}<ul class=\"choices\">{buttons}</ul></form>"
            ),
        )
    }

    fn issue_code(&self, params: &HashMap<String, String>) -> Response<Vec<u8>> {
        if let Err(e) = self.check_authorize(params) {
            return self.page(
                "Bad request",
                &format!("<h1>Bad request</h1><p>{}</p>", escape(&e)),
            );
        }
        let get = |k: &str| params.get(k).cloned().unwrap_or_default();
        let user = get("user");
        if !self.users.iter().any(|u| u.name == user) {
            return self.picker(params);
        }
        let code = random(32);
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, g| g.issued.elapsed() < Duration::from_secs(60));
        codes.insert(
            code.clone(),
            Grant {
                user,
                client_id: get("client_id"),
                redirect_uri: get("redirect_uri"),
                challenge: get("code_challenge"),
                nonce: params.get("nonce").cloned(),
                sid: random(12),
                issued: Instant::now(),
            },
        );
        let mut url = match url::Url::parse(&get("redirect_uri")) {
            Ok(u) => u,
            Err(_) => return self.page("Bad request", "<h1>Bad redirect_uri</h1>"),
        };
        url.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", &get("state"))
            .append_pair("iss", &self.issuer);
        redirect(url.as_str())
    }

    fn client_ok(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
    ) -> Option<String> {
        let (id, secret) = match authorization.and_then(|a| a.strip_prefix("Basic ")) {
            Some(b) => {
                let decoded = String::from_utf8(STANDARD.decode(b).ok()?).ok()?;
                let (id, secret) = decoded.split_once(':')?;
                let dec = |s: &str| {
                    url::form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                };
                (dec(id)?, Some(dec(secret)?))
            }
            None => (
                form.get("client_id")?.clone(),
                form.get("client_secret").cloned(),
            ),
        };
        let expected = self.clients.get(&id)?;
        let ok = match (expected, secret) {
            (None, _) => true,
            (Some(e), Some(s)) => bool::from(e.as_bytes().ct_eq(s.as_bytes())),
            (Some(_), None) => false,
        };
        ok.then_some(id)
    }

    fn tokens(&self, user: &str, client_id: &str, nonce: Option<&str>, sid: &str) -> Value {
        let u = self.users.iter().find(|u| u.name == user);
        let t = unix_now();
        let mut claims = json!({
            "iss": self.issuer, "aud": client_id, "sub": user, "iat": t, "exp": t + 300,
            "auth_time": t, "sid": sid, "acr": "dev", "amr": ["pwd"],
            "preferred_username": user,
            "name": user,
            "email": u.and_then(|u| u.email.clone()).unwrap_or_else(|| format!("{user}@demo.invalid")),
            // The demo's users and their addresses come from its config: vouched for.
            "email_verified": true,
            "groups": u.map(|u| u.groups.clone()).unwrap_or_default(),
        });
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let id_token = jsonwebtoken::encode(&header, &claims, &self.key).unwrap_or_default();
        let refresh = random(32);
        self.refresh_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                refresh.clone(),
                (user.to_string(), client_id.to_string(), sid.to_string()),
            );
        json!({
            "access_token": random(32),
            "token_type": "Bearer",
            "expires_in": self.access_ttl.as_secs(),
            "refresh_token": refresh,
            "id_token": id_token,
        })
    }

    fn token(
        &self,
        authorization: Option<&str>,
        form: HashMap<String, String>,
    ) -> Response<Vec<u8>> {
        let error = |code: &str| json_reply(400, json!({"error": code}));
        let Some(client_id) = self.client_ok(authorization, &form) else {
            return json_reply(401, json!({"error": "invalid_client"}));
        };
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        match get("grant_type") {
            "authorization_code" => {
                let grant = self
                    .codes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(get("code"));
                let Some(g) = grant.filter(|g| g.issued.elapsed() < Duration::from_secs(60)) else {
                    return error("invalid_grant");
                };
                let challenge =
                    URL_SAFE_NO_PAD.encode(Sha256::digest(get("code_verifier").as_bytes()));
                if g.client_id != client_id
                    || g.redirect_uri != get("redirect_uri")
                    || !bool::from(challenge.as_bytes().ct_eq(g.challenge.as_bytes()))
                {
                    return error("invalid_grant");
                }
                json_reply(
                    200,
                    self.tokens(&g.user, &client_id, g.nonce.as_deref(), &g.sid),
                )
            }
            "refresh_token" => {
                let old = self
                    .refresh_tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(get("refresh_token"));
                match old {
                    Some((user, client, sid)) if client == client_id => {
                        json_reply(200, self.tokens(&user, &client_id, None, &sid))
                    }
                    _ => error("invalid_grant"),
                }
            }
            _ => error("unsupported_grant_type"),
        }
    }

    fn end_session(&self, params: &HashMap<String, String>) -> Response<Vec<u8>> {
        match params.get("post_logout_redirect_uri") {
            Some(uri) if uri.starts_with(&format!("{}/", self.public_url)) => redirect(uri),
            _ => self.page(
                "Signed out",
                "<h1>Signed out</h1><p>You are signed out of the development provider.</p>",
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for DevIdp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let query: HashMap<String, String> =
            url::form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let authorization = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let form = if method == http::Method::POST {
            let mut body = Vec::new();
            while let Ok(Some(chunk)) = session.read_request_body().await {
                if body.len() + chunk.len() > 64 * 1024 {
                    return json_reply(413, json!({"error": "too_large"}));
                }
                body.extend_from_slice(&chunk);
            }
            url::form_urlencoded::parse(&body).into_owned().collect()
        } else {
            HashMap::new()
        };
        match (method.as_str(), path.as_str()) {
            ("GET", "/.well-known/openid-configuration") => json_reply(200, self.discovery()),
            ("GET", "/jwks") => json_reply(200, json!({"keys": [self.jwk.clone()]})),
            ("GET", "/authorize") => match self.check_authorize(&query) {
                Ok(()) => self.picker(&query),
                Err(e) => self.page(
                    "Bad request",
                    &format!("<h1>Bad request</h1><p>{}</p>", escape(&e)),
                ),
            },
            ("POST", "/authorize") => self.issue_code(&form),
            ("POST", "/token") => self.token(authorization.as_deref(), form),
            ("GET", "/end_session") => self.end_session(&query),
            _ => json_reply(404, json!({"error": "not_found"})),
        }
    }
}
