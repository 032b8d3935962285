//! An OpenID provider stand-in for what a real provider will not do on purpose (name another
//! provider's subjects, leave out `auth_time`, answer errors): discovery and a JWKS are
//! served as a provider would, the token endpoint answers what the test decides.

use serde_json::{json, Value};

use super::keys::{jwks, TestKey};
use super::{free_port, Handler, Reply, Request, TestServer};

pub struct StubIdp {
    pub server: TestServer,
    pub issuer: String,
    /// Signs the ID and logout tokens the test hands out.
    pub key: TestKey,
}

/// Serves discovery (plus `extra` metadata) and the JWKS of an RS256 key `kid`; `token`
/// answers the token endpoint.
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
    });
    if let (Some(d), Some(extra)) = (discovery.as_object_mut(), extra.as_object()) {
        d.extend(extra.clone());
    }
    let keys = jwks(&[&key]);
    let handler: Handler =
        std::sync::Arc::new(move |req: &Request| match req.target.split('?').next() {
            Some("/.well-known/openid-configuration") => Reply::json(200, &discovery),
            Some("/jwks") => Reply::json(200, &keys),
            Some("/token") => token(req),
            _ => Reply::json(404, &json!({})),
        });
    StubIdp {
        server: TestServer::start_on(port, handler).await,
        issuer,
        key,
    }
}
