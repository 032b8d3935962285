//! Bearer tokens from a real OpenID provider (oidc-provider, client credentials with a
//! resource indicator, JWT access tokens): accepted from the trusted issuer, refused from a
//! second provider and for another audience.

mod common;

use common::idp::OidcProvider;
use common::*;
use serde_json::json;

const API: &str = "urn:gatehouse:test-api";

fn provider() -> OidcProvider {
    OidcProvider::start(json!({
        "clients": [{
            "client_id": "svc", "client_secret": "svc-secret",
            "grant_types": ["client_credentials"], "redirect_uris": [], "response_types": [],
            "token_endpoint_auth_method": "client_secret_basic"
        }],
        "resources": {
            API: { "scope": "api:read api:write", "audience": API },
            "urn:other-api": { "scope": "other:read", "audience": "urn:other-api" }
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_from_the_trusted_provider_only() {
    let trusted = provider();
    let stranger = provider();
    let app = EchoServer::echo("app").await;
    let config = format!(
        r#"{}{}
[[bearer]]
issuer = "{}"
audiences = ["{API}"]
algorithms = ["RS256", "ES256"]
token_type = "at+jwt"

[[route]]
name = "api"
path = "/api"
upstream = "app"
auth = ["bearer"]
"#,
        base_config(""),
        upstream_block("app", &[app.addr], ""),
        trusted.issuer
    );
    let gw = Gateway::start(&config);
    assert_eq!(
        gw.admin("/readyz").status,
        200,
        "JWKS discovered and fetched:\n{}",
        gw.log()
    );

    let token = trusted
        .client_credentials_token("svc", "svc-secret", API, Some("api:read"))
        .await;
    let r = gw.get("/api/orders", &format!("Authorization: Bearer {token}\r\n"));
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.log());
    let e = r.echoed();
    assert_eq!(e.header("x-auth-request-user"), Some("svc"));
    assert_eq!(e.header("authorization"), None);

    let foreign = stranger
        .client_credentials_token("svc", "svc-secret", API, Some("api:read"))
        .await;
    let r = gw.get(
        "/api/orders",
        &format!("Authorization: Bearer {foreign}\r\n"),
    );
    assert_eq!(r.status, 401, "a token of another provider instance");
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));

    let other_audience = trusted
        .client_credentials_token("svc", "svc-secret", "urn:other-api", None)
        .await;
    let r = gw.get(
        "/api/orders",
        &format!("Authorization: Bearer {other_audience}\r\n"),
    );
    assert_eq!(r.status, 401, "a token for another API");

    let metrics = gw.admin("/metrics").body;
    assert!(metrics.contains("reason=\"unknown_issuer\""), "{metrics}");
    assert!(metrics.contains("reason=\"wrong_audience\""), "{metrics}");
    assert_eq!(app.hit_count(), 1);
}
