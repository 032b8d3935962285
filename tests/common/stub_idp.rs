//! An OpenID provider stand-in for what a real provider will not do on purpose (name another
//! provider's subjects, leave out `auth_time`, answer errors): discovery and a JWKS are
//! served as a provider would, the token endpoint answers what the test decides.

use serde_json::{json, Value};

use super::keys::{jwks, TestKey};
use super::{free_port, Gateway, Handler, Reply, Request, Response, TestServer};

pub struct StubIdp {
    pub server: TestServer,
    pub issuer: String,
    /// Signs the ID and logout tokens the test hands out.
    pub key: TestKey,
}

/// Serves discovery (plus `extra` metadata) and the JWKS of an RS256 key `kid`; `token`
/// answers the token endpoint and `/userinfo` (by `req.target`).
pub async fn start(
    kid: &str,
    extra: Value,
    token: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> StubIdp {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let key = TestKey::rsa(kid, jsonwebtoken::Algorithm::RS256);
    let mut discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "code_challenge_methods_supported": ["S256"],
        // Required by OpenID Connect Discovery 1.0 §3.
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    // `{issuer}` in `extra` is the stub's own URL (e.g. its userinfo endpoint).
    let extra: Value = serde_json::from_str(&extra.to_string().replace("{issuer}", &issuer))
        .expect("extra metadata");
    if let (Some(d), Some(extra)) = (discovery.as_object_mut(), extra.as_object()) {
        d.extend(extra.clone());
    }
    let keys = jwks(&[&key]);
    let handler: Handler =
        std::sync::Arc::new(move |req: &Request| match req.target.split('?').next() {
            Some("/.well-known/openid-configuration") => Reply::json(200, &discovery),
            Some("/jwks") => Reply::json(200, &keys),
            Some("/token" | "/userinfo") => token(req),
            // Microsoft Graph, for the Entra ID tests.
            Some(p) if p.starts_with("/v1.0/") => token(req),
            _ => Reply::json(404, &json!({})),
        });
    StubIdp {
        server: TestServer::start_on(port, handler).await,
        issuer,
        key,
    }
}

/// A started login: its state, nonce and the browser-binding cookie.
pub struct Started {
    pub state: String,
    pub nonce: String,
    pub binding: String,
}

pub fn start_login(gw: &Gateway, rd: &str) -> Started {
    let rd: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let r = gw.get(
        &format!("/_gatehouse/login?rd={rd}"),
        "Accept: text/html\r\n",
    );
    assert_eq!(r.status, 302, "{}", r.body);
    let to = url::Url::parse(r.header("location").unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    let binding = r.headers["set-cookie"]
        .iter()
        .find(|c| c.starts_with("gatehouse_login="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    Started {
        state: q["state"].clone(),
        nonce: q["nonce"].clone(),
        binding,
    }
}

/// Calls the callback; returns the response.
pub fn callback(gw: &Gateway, query: &str, cookie: Option<&str>) -> Response {
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    gw.get(
        &format!("/_gatehouse/callback?{query}"),
        &format!("Accept: text/html\r\n{cookie}"),
    )
}

/// One login through a stand-in whose token endpoint signs with the nonce in `nonce`: the
/// callback's answer.
pub fn log_in(gw: &Gateway, nonce: &std::sync::Mutex<String>) -> Response {
    let started = start_login(gw, "/");
    *nonce.lock().unwrap() = started.nonce.clone();
    callback(
        gw,
        &format!("code=c-1&state={}", started.state),
        Some(&started.binding),
    )
}

/// The session cookie an answer sets, as a `Cookie` pair.
pub fn session_cookie(r: &Response) -> Option<String> {
    r.headers
        .get("set-cookie")?
        .iter()
        .find(|c| c.starts_with("gatehouse="))
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
}
