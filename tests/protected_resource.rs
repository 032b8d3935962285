//! OAuth 2.0 Protected Resource Metadata (RFC 9728) end to end: the real gateway serves the
//! metadata of its bearer routes at `/.well-known/oauth-protected-resource[/<path>]`, names
//! it in every Bearer challenge as `resource_metadata`, and never lets the well-known path
//! reach an upstream. A client follows the challenge to the document the way RFC 9728 §5
//! says an MCP or OAuth client does.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use common::keys::*;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

const AUD: &str = "api://resource-test";
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// Two issuers (one key server), an echo upstream, and the gateway: `/api` and `/` take
/// bearer tokens, `/keys` API keys, `/public` nothing. 127.0.0.1 is a trusted proxy.
struct Setup {
    gw: Gateway,
    app: TestServer,
    _jwks: TestServer,
    key: TestKey,
    issuer: String,
}

impl Setup {
    async fn start() -> Setup {
        let key = TestKey::rsa("k1", Algorithm::RS256);
        let body = jwks(&[&key]);
        let jwks_server =
            TestServer::start(Arc::new(move |_req: &Request| Reply::json(200, &body))).await;
        let issuer = format!("http://{}", jwks_server.addr);
        let app = TestServer::echo("app").await;
        let config = format!(
            r#"{base}{up}
[[bearer]]
issuer = "{issuer}"
audiences = ["{AUD}"]
jwks_uri = "{issuer}/jwks"

[[bearer]]
issuer = "{issuer}/tenant-2"
audiences = ["{AUD}"]
jwks_uri = "{issuer}/jwks"

[[api_key]]
name = "ci"
hash = "{hash}"
subject = "svc-ci"

[[route]]
name = "api"
path = "/api"
upstream = "app"
auth = ["bearer"]

[[route]]
name = "keys"
path = "/keys"
upstream = "app"
auth = ["api_key"]

[[route]]
name = "public"
path = "/public"
upstream = "app"
auth = ["none"]

[[route]]
name = "site"
path = "/"
upstream = "app"
auth = ["bearer", "api_key"]
"#,
            base = base_config("trusted_proxies = [\"127.0.0.1/32\"]"),
            up = upstream_block("app", &[app.addr], ""),
            hash = gatehouse::authn::api_key::hash_key("ci-key"),
        );
        let gw = Gateway::start(&config);
        Setup {
            gw,
            app,
            _jwks: jwks_server,
            key,
            issuer,
        }
    }

    /// `method target` with the given `Host` and extra header lines.
    fn send(&self, method: &str, target: &str, host: &str, extra: &str) -> Response {
        self.gw.raw(&format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
        ))
    }

    fn get(&self, target: &str, host: &str) -> Response {
        self.send("GET", target, host, "")
    }

    fn token(&self) -> String {
        self.key.sign(&json!({
            "iss": self.issuer, "aud": AUD, "sub": "alice", "exp": now() + 600, "iat": now(),
        }))
    }
}

fn document(r: &Response) -> Value {
    assert_eq!(r.status, 200, "a metadata document: {r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("JSON ({e}): {}", r.body))
}

/// The `resource_metadata` URL of a `WWW-Authenticate` challenge.
fn resource_metadata(r: &Response) -> String {
    let challenge = r
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("a challenge: {r:?}"));
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    let value = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no resource_metadata in {challenge}"));
    value.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_names_the_resource_and_its_authorization_servers() {
    let s = Setup::start().await;
    let r = s.get(&format!("{WELL_KNOWN}/api"), "res.example:8080");
    let doc = document(&r);
    assert_eq!(
        doc,
        json!({
            "resource": "http://res.example:8080/api",
            "authorization_servers": [s.issuer, format!("{}/tenant-2", s.issuer)],
            "bearer_methods_supported": ["header"],
            "resource_name": "api",
        })
    );
    // Public and cross-origin readable, never cached as someone's answer.
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let head = s.send("HEAD", &format!("{WELL_KNOWN}/api"), "res.example:8080", "");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let preflight = s.send(
        "OPTIONS",
        &format!("{WELL_KNOWN}/api"),
        "res.example",
        "Origin: https://inspector.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: mcp-protocol-version\r\n",
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    let post = s.send(
        "POST",
        &format!("{WELL_KNOWN}/api"),
        "res.example",
        "Content-Length: 0\r\n",
    );
    assert_eq!(post.status, 405);
    assert_eq!(
        s.app.hit_count(),
        0,
        "the gateway answered every one itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_suffixed_form_names_the_resource_it_was_asked_about() {
    let s = Setup::start().await;
    // RFC 9728 §3.1: the resource's path follows the well-known path; §3.3: the document's
    // resource is the identifier the URL was made from.
    let doc = document(&s.get(&format!("{WELL_KNOWN}/api/v1/items"), "res.example"));
    assert_eq!(doc["resource"], "http://res.example/api/v1/items");
    assert_eq!(doc["resource_name"], "api");
    // The resource without a path (the root route takes bearer tokens): the origin alone.
    let doc = document(&s.get(WELL_KNOWN, "res.example"));
    assert_eq!(doc["resource"], "http://res.example");
    assert_eq!(doc["resource_name"], "site");
    let doc = document(&s.get(&format!("{WELL_KNOWN}/mcp"), "res.example"));
    assert_eq!(doc["resource"], "http://res.example/mcp");
    assert_eq!(s.app.hit_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bearer_challenge_names_the_metadata_and_the_document_matches() {
    let s = Setup::start().await;
    let host = "res.example:8080";
    let missing = s.get("/api/items", host);
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"gatehouse\", resource_metadata=\"http://res.example:8080/.well-known/oauth-protected-resource/api\"")
    );
    let invalid = s.send(
        "GET",
        "/api/items",
        host,
        "Authorization: Bearer not.a.token\r\n",
    );
    assert_eq!(invalid.status, 401);
    let challenge = invalid.header("www-authenticate").unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_eq!(
        resource_metadata(&invalid),
        "http://res.example:8080/.well-known/oauth-protected-resource/api"
    );
    let malformed = s.send("GET", "/api/items", host, "Authorization: Bearer a b\r\n");
    assert_eq!(malformed.status, 400);
    assert!(resource_metadata(&malformed).ends_with("/oauth-protected-resource/api"));

    // The client follows the challenge (RFC 9728 §5): the document's resource is the
    // route's URL, the one the client reached, and one of its authorization servers issued
    // a token the route accepts.
    let url = resource_metadata(&missing);
    let path = url.strip_prefix("http://res.example:8080").unwrap();
    let doc = document(&s.get(path, host));
    assert_eq!(doc["resource"], "http://res.example:8080/api");
    assert_eq!(doc["authorization_servers"][0], s.issuer.as_str());
    let token = s.token();
    let ok = s.send(
        "GET",
        "/api/items",
        host,
        &format!("Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(ok.echoed().target, "/api/items");

    // The root route's challenge points at the root form.
    let root = s.get("/anything", "res.example");
    assert_eq!(root.status, 401);
    let url = resource_metadata(&root);
    assert_eq!(
        url,
        "http://res.example/.well-known/oauth-protected-resource"
    );
    assert_eq!(
        document(&s.get(WELL_KNOWN, "res.example"))["resource"],
        "http://res.example"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_terminating_tls_makes_the_resource_https() {
    let s = Setup::start().await;
    // 127.0.0.1 is a trusted proxy: its X-Forwarded-Proto is believed.
    let r = s.send("GET", "/api", "res.example", "X-Forwarded-Proto: https\r\n");
    assert_eq!(
        resource_metadata(&r),
        "https://res.example/.well-known/oauth-protected-resource/api"
    );
    let doc = document(&s.send(
        "GET",
        WELL_KNOWN,
        "resource.example.com",
        "X-Forwarded-Proto: https\r\n",
    ));
    // The shape of RFC 9728 §3.2's example response.
    assert_eq!(doc["resource"], "https://resource.example.com");
    for (name, value) in doc.as_object().unwrap() {
        match name.as_str() {
            "resource" | "resource_name" => assert!(value.is_string(), "{name}"),
            "authorization_servers" | "bearer_methods_supported" => {
                let list = value.as_array().unwrap();
                assert!(
                    !list.is_empty() && list.iter().all(Value::is_string),
                    "{name}"
                );
            }
            other => panic!("{other} is not a metadata parameter gatehouse knows"),
        }
    }
    for server in doc["authorization_servers"].as_array().unwrap() {
        let server = server.as_str().unwrap();
        assert!(
            server.starts_with("http") && !server.contains('#') && !server.contains('?'),
            "an issuer identifier (RFC 8414): {server}"
        );
    }
    // Another client's X-Forwarded-Proto is not.
    let stranger = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let r = front::request_from(
        stranger,
        s.gw.port,
        "GET /api HTTP/1.1\r\nHost: res.example\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(
        resource_metadata(&r),
        "http://res.example/.well-known/oauth-protected-resource/api"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_without_bearer_tokens_advertise_nothing() {
    let s = Setup::start().await;
    let keys = s.get("/keys/x", "res.example");
    assert_eq!(keys.status, 401);
    assert_eq!(
        keys.header("www-authenticate"),
        Some("ApiKey realm=\"gatehouse\"")
    );
    for path in ["/keys", "/keys/x", "/public", "/public/x"] {
        let r = s.get(&format!("{WELL_KNOWN}{path}"), "res.example");
        assert_eq!(r.status, 404, "{path}: {r:?}");
    }
    assert_eq!(s.app.hit_count(), 0, "no well-known request was proxied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_well_known_path_is_no_way_around_authentication() {
    let s = Setup::start().await;
    for (target, status) in [
        // Normalized first: these are requests for /api and /keys, judged as such.
        ("/.well-known/oauth-protected-resource/../api/x", 401),
        ("/.well-known/oauth-protected-resource/%2e%2e/keys/x", 401),
        ("/.well-known/oauth-protected-resource/./../../api", 401),
        // Refused before anything is routed.
        ("/.well-known/oauth-protected-resource%2f..%2fpublic", 400),
        ("/.well-known/oauth-protected-resource/api%00", 400),
        ("/.well-known/oauth-protected-resource;x=1/api", 400),
    ] {
        let r = s.get(target, "res.example");
        assert_eq!(r.status, status, "{target}: {r:?}");
    }
    // Only the exact segment is the gateway's: a longer name is the root route's (bearer).
    let r = s.get("/.well-known/oauth-protected-resourcex", "res.example");
    assert_eq!(r.status, 401);
    assert_eq!(s.app.hit_count(), 0, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bearer_routes_the_app_keeps_its_well_known_path() {
    let app = TestServer::echo("app").await;
    let config = format!(
        "{}{}\n[[route]]\nname = \"open\"\npath = \"/\"\nupstream = \"app\"\nauth = [\"none\"]\n",
        base_config(""),
        upstream_block("app", &[app.addr], ""),
    );
    let gw = Gateway::start(&config);
    let r = gw.get(&format!("{WELL_KNOWN}/x"), "");
    assert_eq!(r.echoed().target, "/.well-known/oauth-protected-resource/x");
}
