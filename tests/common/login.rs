//! Shared set-up of the login tests: the real provider with a client for gateways on given
//! ports, the gateway config for a session route, and reading a metric.

use serde_json::json;

use super::idp::OidcProvider;
use super::{base_config, upstream_block, Gateway, Response, TestServer};

/// The provider with one confidential client whose URLs point at a gateway on `port`.
pub fn provider_for(ports: &[u16], access_ttl: u64) -> OidcProvider {
    provider_with_client(ports, access_ttl, json!({}))
}

/// [`provider_for`] with more client metadata (e.g. `require_auth_time`).
pub fn provider_with_client(
    ports: &[u16],
    access_ttl: u64,
    extra: serde_json::Value,
) -> OidcProvider {
    provider_configured(
        client_for(ports, extra),
        json!({ "accessTokenTTL": access_ttl }),
    )
}

/// The confidential client of a gateway on `ports`, with `extra` metadata.
pub fn client_for(ports: &[u16], extra: serde_json::Value) -> serde_json::Value {
    let url = |p: &u16, path: &str| format!("http://127.0.0.1:{p}{path}");
    let mut client = json!({
            "client_id": "gatehouse",
            "client_secret": "gatehouse-test-secret",
            "redirect_uris": ports.iter().map(|p| url(p, "/_gatehouse/callback")).collect::<Vec<_>>(),
            "post_logout_redirect_uris": ports.iter().map(|p| url(p, "/")).collect::<Vec<_>>(),
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
            "backchannel_logout_uri": url(&ports[0], "/_gatehouse/backchannel-logout"),
            "backchannel_logout_session_required": true
    });
    if let (Some(client), Some(extra)) = (client.as_object_mut(), extra.as_object()) {
        client.extend(extra.clone());
    }
    client
}

/// The provider with `client` and more provider settings (see tests/idp/provider.mjs).
pub fn provider_configured(client: serde_json::Value, settings: serde_json::Value) -> OidcProvider {
    let mut config = json!({ "clients": [client] });
    if let (Some(config), Some(settings)) = (config.as_object_mut(), settings.as_object()) {
        config.extend(settings.clone());
    }
    OidcProvider::start(config)
}

pub fn login_config(idp: &OidcProvider, upstream: &TestServer, session: &str) -> String {
    format!(
        r#"{}
[session]
{session}

[[idp]]
name = "test"
issuer = "{}"
client_id = "gatehouse"
client_secret = "gatehouse-test-secret"
scopes = ["openid", "profile", "email", "groups", "offline_access"]
extra_auth_params = {{ prompt = "consent" }}

{}
[[route]]
name = "app"
path = "/"
upstream = "app"
auth = ["session"]
pass_access_token = true
"#,
        base_config("public_url = \"http://127.0.0.1:{port}\"\nallowed_hosts = [\"127.0.0.1\"]"),
        idp.issuer,
        upstream_block("app", &[upstream.addr], ""),
    )
}

pub fn metric(gw: &Gateway, line_start: &str) -> f64 {
    gw.admin("/metrics")
        .body
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Logs out as the app's own scripts do: a POST from the public origin (logout refuses
/// other origins, and a GET only asks for confirmation).
pub fn logout(gw: &Gateway, cookie: &str, query: &str) -> Response {
    gw.raw(&format!(
        "POST /_gatehouse/logout{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nOrigin: {}\r\nAccept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        gw.url("")
    ))
}
