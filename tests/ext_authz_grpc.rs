//! Envoy's gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`) against the real
//! gateway. Envoy cannot run here, so the test plays it as
//! `deploy/envoy/envoy-grpc-ext-authz.yaml` configures it: a tonic client from a trusted
//! address sends `CheckRequest`s shaped as Envoy's (the request's method, host, path with
//! query, every header in lower case with the pseudo-headers and the `x-forwarded-for` /
//! `-proto` / `x-request-id` Envoy set, scheme, protocol; the client's address in
//! `attributes.source`). An `OkHttpResponse` is applied as Envoy applies it (its headers
//! set over the client's, `headers_to_remove` removed) and what the app would receive is
//! asserted on; a `DeniedHttpResponse` is what the client gets.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::keys::*;
use common::paths::PATH_CASES;
use common::*;
use envoy_types::pb::envoy::config::core::v3::{
    address, header_value_option::HeaderAppendAction, Address, HeaderValueOption, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use serde_json::{json, Value};
use tonic::transport::Channel;

const AUD: &str = "api://ext-authz-grpc-test";
const ENVOY_YAML: &str = include_str!("../deploy/envoy/envoy-grpc-ext-authz.yaml");

/// An id token the stub provider hands out next.
type NextToken = Arc<Mutex<Option<String>>>;

struct Setup {
    gw: Gateway,
    grpc_port: u16,
    _app: TestServer,
    idp: common::stub_idp::StubIdp,
    next_token: NextToken,
}

const POLICY: &str = r#"default = "allow"
[roles]
admin = ["app:admin"]
[[binding]]
role = "admin"
groups = ["admins"]
[[rule]]
name = "admin area"
paths = ["/admin/**"]
require = "app:admin"
"#;

/// What Envoy decides with gatehouse's answer.
#[derive(Debug)]
enum Envoy {
    /// Forwarded upstream with these headers; these response headers added for the client.
    Allowed {
        upstream: Vec<(String, String)>,
        response_headers: Vec<(String, String)>,
    },
    /// Answered to the client.
    Denied {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

impl Envoy {
    fn status(&self) -> u16 {
        match self {
            Envoy::Allowed { .. } => 200,
            Envoy::Denied { status, .. } => *status,
        }
    }

    fn upstream(&self) -> &[(String, String)] {
        match self {
            Envoy::Allowed { upstream, .. } => upstream,
            Envoy::Denied { .. } => panic!("an allowed request: {self:?}"),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        let list = match self {
            Envoy::Allowed { upstream, .. } => upstream,
            Envoy::Denied { headers, .. } => headers,
        };
        value(list, name)
    }

    fn all(&self, name: &str) -> Vec<&str> {
        match self {
            Envoy::Denied { headers, .. } => headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect(),
            Envoy::Allowed { .. } => Vec::new(),
        }
    }

    fn body(&self) -> &str {
        match self {
            Envoy::Denied { body, .. } => body,
            Envoy::Allowed { .. } => "",
        }
    }
}

fn value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Applies one `HeaderValueOption` as Envoy does (overwrite or append).
fn apply(headers: &mut Vec<(String, String)>, option: &HeaderValueOption) {
    let header = option.header.as_ref().expect("a header");
    #[allow(deprecated)]
    let append = match option.append {
        Some(append) => append.value,
        None => option.append_action == HeaderAppendAction::AppendIfExistsOrAdd as i32,
    };
    if !append {
        headers.retain(|(n, _)| *n != header.key);
    }
    headers.push((header.key.clone(), header.value.clone()));
}

/// What Envoy makes of gatehouse's answer about a request with `client` headers.
fn envoy_applies(client: &[(String, String)], response: CheckResponse) -> Envoy {
    let ok = response.status.as_ref().map(|s| s.code) == Some(0);
    match response.http_response {
        Some(HttpResponse::OkResponse(ok_response)) => {
            assert!(ok, "an OkHttpResponse comes with status OK");
            let mut upstream = client.to_vec();
            for option in &ok_response.headers {
                // What gatehouse sets replaces the client's copy: never appended to a forgery.
                assert_eq!(
                    option.append_action,
                    HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                    "{option:?}"
                );
                apply(&mut upstream, option);
            }
            upstream.retain(|(n, _)| !ok_response.headers_to_remove.contains(n));
            let mut response_headers = Vec::new();
            for option in &ok_response.response_headers_to_add {
                apply(&mut response_headers, option);
            }
            Envoy::Allowed {
                upstream,
                response_headers,
            }
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert!(!ok, "a DeniedHttpResponse never comes with status OK");
            let mut headers = Vec::new();
            for option in &denied.headers {
                apply(&mut headers, option);
            }
            Envoy::Denied {
                status: denied.status.map_or(403, |s| s.code as u16),
                headers,
                body: denied.body,
            }
        }
        other => panic!("neither allowed nor denied: {other:?}"),
    }
}

impl Setup {
    async fn start() -> Setup {
        let next_token: NextToken = Arc::new(Mutex::new(None));
        let next = next_token.clone();
        let idp = common::stub_idp::start("stub-key", json!({}), move |_: &Request| {
            match next.lock().unwrap().clone() {
                Some(t) => Reply::json(
                    200,
                    &json!({"access_token": "at-1", "token_type": "Bearer", "expires_in": 300, "id_token": t}),
                ),
                None => Reply::json(400, &json!({"error": "invalid_grant"})),
            }
        })
        .await;
        let app = TestServer::echo("app").await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
        let grpc_port = free_port();
        let config = format!(
            r#"{base}{up}
[ext_authz]
grpc_listen = "127.0.0.1:{grpc_port}"

[[idp]]
name = "stub"
issuer = "{issuer}"
client_id = "gatehouse"
client_secret = "stub-secret"

[[bearer]]
issuer = "{issuer}"
audiences = ["{AUD}"]
jwks_uri = "{issuer}/jwks"

[[api_key]]
name = "ci"
hash = "{hash}"
subject = "svc-ci"

[headers]
assertion = true
claims = {{ "X-Auth-Request-Department" = "department" }}

[reserved_limit]
limit = "1000/second"

[rate_limit_store]
response_headers = true

[[rate_limit]]
name = "one-a-minute"
key = "client_ip"
limit = "1/minute"

[[route]]
name = "api"
path = "/api"
upstream = "app"
auth = ["bearer"]
cors = {{ allowed_origins = ["https://spa.test"], allowed_methods = ["GET"] }}

[[route]]
name = "admin"
path = "/admin"
upstream = "app"
auth = ["bearer"]
policy = "policy.toml"

[[route]]
name = "keys"
path = "/keys"
upstream = "app"
auth = ["api_key"]

[[route]]
name = "app"
path = "/app"
upstream = "app"
auth = ["session"]

[[route]]
name = "limited"
path = "/limited"
upstream = "app"
auth = ["none"]
rate_limit = ["one-a-minute"]

[[route]]
name = "public"
path = "/public"
upstream = "app"
auth = ["none"]
"#,
            base = base_config(
                "public_url = \"http://app.test\"\nallowed_hosts = [\"app.test\"]\ntrusted_proxies = [\"127.0.0.1/32\"]"
            ),
            up = upstream_block("app", &[app.addr], ""),
            issuer = idp.issuer,
            hash = gatehouse::authn::api_key::hash_key("ci-key-0123456789"),
        );
        let gw = Gateway::start_in(dir, &config);
        Setup {
            gw,
            grpc_port,
            _app: app,
            idp,
            next_token,
        }
    }

    /// A gRPC client connecting from `local` (Envoy's address).
    async fn client_from(&self, local: IpAddr) -> Result<AuthorizationClient<Channel>, String> {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.grpc_port))
                .map_err(|e| e.to_string())?
                .local_address(Some(local))
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10));
        // The listener may still be starting: a few tries, 100 ms apart.
        let mut last = String::new();
        for _ in 0..50 {
            match endpoint.connect().await {
                Ok(channel) => return Ok(AuthorizationClient::new(channel)),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last)
    }

    async fn envoy(&self) -> AuthorizationClient<Channel> {
        self.client_from(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .await
            .expect("the gRPC listener answers")
    }

    /// Envoy's question about `method target` from the client at `client_ip` with the
    /// client's `headers` (lower case, as Envoy's map has them; `host` is `app.test` unless
    /// one is given); what Envoy then does.
    async fn ask_from(
        &self,
        client_ip: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Envoy {
        let response = self
            .envoy()
            .await
            .check(check_request(client_ip, method, target, headers))
            .await
            .unwrap_or_else(|e| panic!("Check failed: {e:?}\n{}", self.gw.log()))
            .into_inner();
        let client: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        envoy_applies(&client, response)
    }

    async fn ask(&self, target: &str, headers: &[(&str, &str)]) -> Envoy {
        self.ask_from("203.0.113.7", "GET", target, headers).await
    }

    fn token(&self, sub: &str, groups: &[&str]) -> String {
        self.idp.key.sign(&json!({
            "iss": self.idp.issuer, "aud": AUD, "sub": sub, "exp": now() + 600, "iat": now(),
            "groups": groups, "department": "sales",
        }))
    }

    /// A browser session: a login through gatehouse's own endpoints (Envoy routes
    /// `/_gatehouse/` to it), finished at the stub provider. The `Cookie` pair.
    fn session(&self, sub: &str) -> String {
        let r = self.gw.raw(
            "GET /_gatehouse/login?rd=%2Fapp HTTP/1.1\r\nHost: app.test\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 302, "{}", r.body);
        let to = url::Url::parse(r.header("location").unwrap()).unwrap();
        let q: HashMap<_, _> = to.query_pairs().into_owned().collect();
        let binding = r.headers["set-cookie"]
            .iter()
            .find(|c| c.starts_with("gatehouse_login="))
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_string();
        let t = now();
        let id_token = self.idp.key.sign(&json!({
            "iss": self.idp.issuer, "aud": "gatehouse", "sub": sub, "iat": t, "exp": t + 300,
            "nonce": q["nonce"], "groups": ["staff"],
        }));
        *self.next_token.lock().unwrap() = Some(id_token);
        let r = self.gw.raw(&format!(
            "GET /_gatehouse/callback?code=c1&state={} HTTP/1.1\r\nHost: app.test\r\nAccept: text/html\r\nCookie: {binding}\r\nConnection: close\r\n\r\n",
            q["state"]
        ));
        assert_eq!(r.status, 302, "{}", r.body);
        r.headers["set-cookie"]
            .iter()
            .find(|c| c.starts_with("gatehouse="))
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_string()
    }
}

/// A `CheckRequest` as Envoy's HTTP ext_authz filter builds it behind a listener with
/// `use_remote_address: true`: the client's headers plus the pseudo-headers, Envoy's
/// `x-forwarded-for` (the client's own entries, then the address it saw),
/// `x-forwarded-proto` and `x-request-id`; the client's address as the source.
fn check_request(
    client_ip: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> CheckRequest {
    let host = headers
        .iter()
        .find(|(n, _)| *n == "host")
        .map_or("app.test", |(_, v)| *v)
        .to_string();
    let mut map: HashMap<String, String> = headers
        .iter()
        .filter(|(n, _)| *n != "host" && *n != "x-forwarded-for")
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let xff = match headers.iter().find(|(n, _)| *n == "x-forwarded-for") {
        Some((_, forged)) => format!("{forged},{client_ip}"),
        None => client_ip.to_string(),
    };
    let request_id = "3f1b6c1e-8a0e-4f7e-9c55-0d2a6b1f4e21".to_string();
    for (name, value) in [
        (":authority", host.clone()),
        (":method", method.to_string()),
        (":path", target.to_string()),
        (":scheme", "http".to_string()),
        ("x-forwarded-for", xff),
        ("x-forwarded-proto", "http".to_string()),
        ("x-request-id", request_id.clone()),
        ("x-envoy-expected-rq-timeout-ms", "15000".to_string()),
    ] {
        map.insert(name.to_string(), value);
    }
    let socket = |ip: &str, port: u32| Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(
                envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                    port,
                ),
            ),
            ..Default::default()
        })),
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(socket(client_ip, 51234)),
                ..Default::default()
            }),
            destination: Some(Peer {
                address: Some(socket("10.0.0.5", 8080)),
                ..Default::default()
            }),
            request: Some(AttrRequest {
                time: None,
                http: Some(HttpRequest {
                    id: request_id,
                    method: method.to_string(),
                    headers: map,
                    path: target.to_string(),
                    host,
                    scheme: "http".to_string(),
                    size: 0,
                    protocol: "HTTP/1.1".to_string(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

fn json_body(r: &Envoy) -> Value {
    serde_json::from_str(r.body()).unwrap_or_else(|e| panic!("JSON ({e}): {r:?}"))
}

#[test]
fn the_shipped_envoy_config_uses_grpc_v3_and_fails_closed() {
    for needle in [
        "envoy_grpc: { cluster_name: gatehouse_ext_authz }",
        "transport_api_version: V3",
        "failure_mode_allow: false",
        "use_remote_address: true",
        "headers_with_underscores_action: REJECT_REQUEST",
        "path_with_escaped_slashes_action: REJECT_REQUEST",
        "normalize_path: true",
        "merge_slashes: true",
        "http2_protocol_options: {}",
        "port_value: 9191",
    ] {
        assert!(ENVOY_YAML.contains(needle), "{needle}");
    }
    // gatehouse sees every header (no allowed_headers): every forged spelling is listed.
    assert!(!ENVOY_YAML
        .lines()
        .any(|l| !l.trim_start().starts_with('#') && l.contains("allowed_headers")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_requests_carry_the_identity_for_every_method() {
    let s = Setup::start().await;

    // A bearer token: consumed (removed), the identity and the assertion set.
    let bearer = format!("Bearer {}", s.token("alice", &["staff"]));
    let r = s
        .ask(
            "/api/orders?page=2",
            &[("authorization", bearer.as_str()), ("accept", "*/*")],
        )
        .await;
    let up = r.upstream();
    assert_eq!(value(up, "x-auth-request-user"), Some("alice"));
    assert_eq!(value(up, "x-auth-request-groups"), Some("staff"));
    assert_eq!(value(up, "x-auth-request-department"), Some("sales"));
    assert!(value(up, "x-gatehouse-assertion").is_some_and(|a| a.split('.').count() == 3));
    assert_eq!(
        value(up, "authorization"),
        None,
        "the token stays with gatehouse"
    );
    assert_eq!(value(up, "accept"), Some("*/*"));

    // An API key: consumed too.
    let r = s
        .ask("/keys/deploy", &[("x-api-key", "ci-key-0123456789")])
        .await;
    assert_eq!(value(r.upstream(), "x-auth-request-user"), Some("svc-ci"));
    assert_eq!(value(r.upstream(), "x-api-key"), None);

    // A browser session: the app keeps its own cookies, never gatehouse's.
    let session = s.session("bob");
    let cookie = format!("theme=dark; {session}");
    let r = s
        .ask(
            "/app/home",
            &[("cookie", cookie.as_str()), ("accept", "text/html")],
        )
        .await;
    assert_eq!(value(r.upstream(), "x-auth-request-user"), Some("bob"));
    assert_eq!(value(r.upstream(), "cookie"), Some("theme=dark"));

    // Metrics and audit lines are the proxy's; the audit line names the front and the
    // client Envoy reported.
    let log = s.gw.log();
    assert!(
        log.lines().any(|l| l.contains("auth decision")
            && l.contains("ext_authz")
            && l.contains("bob")
            && l.contains("203.0.113.7")),
        "{log}"
    );
    let metrics = s.gw.admin("/metrics").body;
    assert!(
        metrics.contains("method=\"session\",reason=\"authenticated\",route=\"app\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_front_answers_total{front=\"ext_authz\",status=\"200\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_requests_total{route=\"keys\",status=\"200\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_reach_the_client_with_their_status_and_headers() {
    let s = Setup::start().await;
    // No credential: 401 with the RFC 6750 challenge naming the route's metadata.
    let r = s.ask("/api/orders", &[]).await;
    assert_eq!(r.status(), 401, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"gatehouse\", resource_metadata=\"http://app.test/.well-known/oauth-protected-resource/api\"")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let body = json_body(&r);
    assert_eq!(body["error"], "unauthorized");
    // Envoy's request id names the request in gatehouse's answer and logs.
    assert_eq!(body["request_id"], "3f1b6c1e-8a0e-4f7e-9c55-0d2a6b1f4e21");
    assert_eq!(r.header("x-request-id"), body["request_id"].as_str());
    // A malformed token: 400; a bad one: 401 invalid_token.
    let r = s
        .ask("/api/orders", &[("authorization", "Bearer a b")])
        .await;
    assert_eq!(r.status(), 400);
    let r = s
        .ask("/api/orders", &[("authorization", "Bearer x.y.z")])
        .await;
    assert_eq!(r.status(), 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    // The policy says no: 403.
    let bearer = format!("Bearer {}", s.token("alice", &["staff"]));
    let r = s.ask("/admin/users", &[("authorization", &bearer)]).await;
    assert_eq!(r.status(), 403);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
    let admin = format!("Bearer {}", s.token("root", &["admins"]));
    assert_eq!(
        s.ask("/admin/users", &[("authorization", &admin)])
            .await
            .status(),
        200
    );
    // No route; a host gatehouse does not serve.
    assert_eq!(s.ask("/nowhere", &[]).await.status(), 404);
    assert_eq!(
        s.ask("/public/x", &[("host", "evil.test")]).await.status(),
        421
    );
    // A browser navigation without a session: 302 to the provider, with the binding cookie.
    let r = s.ask("/app/home?tab=1", &[("accept", "text/html")]).await;
    assert_eq!(r.status(), 302, "{r:?}");
    let location = r.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{}/authorize?", s.idp.issuer)),
        "{location}"
    );
    assert!(r
        .all("set-cookie")
        .iter()
        .any(|c| c.starts_with("gatehouse_login=")));
    assert_eq!(r.body(), "");
    // A script without one: 401, never a redirect; an HTML error page for a browser.
    let r = s.ask("/app/home", &[("accept", "application/json")]).await;
    assert_eq!(r.status(), 401);
    let r = s.ask("/nowhere", &[("accept", "text/html")]).await;
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.body().contains("404"), "{r:?}");
    // A CORS preflight is answered as the proxy answers it, before authentication.
    let s = &s;
    let preflight = |origin: &'static str| {
        let headers = [("origin", origin), ("access-control-request-method", "GET")];
        async move {
            s.ask_from("203.0.113.9", "OPTIONS", "/api/items", &headers)
                .await
        }
    };
    let ok = preflight("https://spa.test").await;
    assert_eq!(ok.status(), 204, "{ok:?}");
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://spa.test")
    );
    assert_eq!(preflight("https://evil.test").await.status(), 403);
    // The original method is judged; one spelled oddly is refused.
    let key = [("x-api-key", "ci-key-0123456789")];
    for method in ["POST", "PUT", "DELETE", "HEAD"] {
        assert_eq!(
            s.ask_from("203.0.113.9", method, "/keys/x", &key)
                .await
                .status(),
            200,
            "{method}"
        );
    }
    assert_eq!(
        s.ask_from("203.0.113.9", "delete", "/keys/x", &key)
            .await
            .status(),
        400
    );
    let metrics = s.gw.admin("/metrics").body;
    for status in ["302", "401", "403", "404", "421"] {
        assert!(
            metrics.contains(&format!(
                "gatehouse_front_answers_total{{front=\"ext_authz\",status=\"{status}\"}}"
            )),
            "{status}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_count_the_client_envoy_names() {
    let s = Setup::start().await;
    let first = s.ask_from("198.51.100.1", "GET", "/limited/x", &[]).await;
    // Allowed: the client's response gets the limit's state.
    let Envoy::Allowed {
        response_headers, ..
    } = &first
    else {
        panic!("allowed: {first:?}")
    };
    assert!(
        value(response_headers, "ratelimit-policy").is_some_and(|p| p.contains("one-a-minute")),
        "{response_headers:?}"
    );
    assert!(value(response_headers, "ratelimit").is_some());
    let second = s.ask_from("198.51.100.1", "GET", "/limited/x", &[]).await;
    assert_eq!(second.status(), 429, "{second:?}");
    assert!(second.header("retry-after").is_some());
    assert!(second.header("ratelimit-policy").is_some());
    // A client forging X-Forwarded-For is still counted by the address Envoy reports.
    let forged = s
        .ask_from(
            "198.51.100.1",
            "GET",
            "/limited/x",
            &[("x-forwarded-for", "192.0.2.99")],
        )
        .await;
    assert_eq!(forged.status(), 429);
    let other = s.ask_from("198.51.100.2", "GET", "/limited/x", &[]).await;
    assert_eq!(other.status(), 200);
    let log = s.gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("gatehouse::access") && l.contains("198.51.100.2")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_never_reach_the_upstream() {
    let s = Setup::start().await;
    let client = [
        ("x-api-key", "ci-key-0123456789"),
        ("x-auth-request-user", "mallory"),
        ("x-auth-request-email", "mallory@evil.test"),
        ("x-auth-request-groups", "admins"),
        ("x-auth-request-department", "finance"),
        ("x-auth-request-tenant", "other"),
        ("x.auth.request.preferred.username", "root"),
        ("x_auth_request_email", "root@evil.test"),
        ("x-auth-request-access-token", "stolen"),
        ("x-gatehouse-assertion", "forged.jwt.value"),
        ("x-http-method-override", "DELETE"),
    ];
    let r = s.ask("/keys/deploy", &client).await;
    let up = r.upstream();
    assert_eq!(value(up, "x-auth-request-user"), Some("svc-ci"));
    let assertion_is_gatehouses = value(up, "x-gatehouse-assertion")
        .is_some_and(|a| a != "forged.jwt.value" && a.split('.').count() == 3);
    assert!(assertion_is_gatehouses, "{up:?}");
    let forged: Vec<&(String, String)> = up
        .iter()
        .filter(|(n, _)| {
            let folded = n.replace(['.', '_'], "-");
            (folded.starts_with("x-auth-request-") && n != "x-auth-request-user")
                || n == "x-http-method-override"
        })
        .collect();
    assert!(forged.is_empty(), "forged headers left: {forged:?}");
    assert_eq!(
        up.iter()
            .filter(|(n, _)| n == "x-auth-request-user")
            .count(),
        1,
        "{up:?}"
    );
    // An identity name the client did not send is removed all the same (an Envoy whose
    // allowed_headers hides some from gatehouse).
    let response = s
        .envoy()
        .await
        .check(check_request(
            "203.0.113.7",
            "GET",
            "/keys/deploy",
            &[("x-api-key", "ci-key-0123456789")],
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
        panic!("allowed: {response:?}")
    };
    for name in [
        "x-auth-request-email",
        "x-auth-request-preferred-username",
        "x-auth-request-groups",
        "x-auth-request-department",
        "x-api-key",
    ] {
        assert!(
            ok.headers_to_remove.iter().any(|n| n == name),
            "{name}: {:?}",
            ok.headers_to_remove
        );
    }
    // Pseudo-headers and Host are never asked to be removed (Envoy ignores them).
    assert!(ok
        .headers_to_remove
        .iter()
        .all(|n| !n.starts_with(':') && n != "host"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_are_judged_as_the_proxy_judges_them() {
    let s = Setup::start().await;
    let key = [("x-api-key", "ci-key-0123456789")];
    let mut compared = 0;
    let cases = PATH_CASES.iter().map(|(target, _, _)| *target).chain([
        "/keys/plain",
        "/keys/x?y=/../admin",
        "/keys/caf%C3%A9",
    ]);
    for target in cases {
        // Envoy's :path always starts with "/".
        if !target.starts_with('/') {
            continue;
        }
        let target = target.replacen("/public", "/keys", 1);
        let proxied = s.gw.raw(&format!(
            "GET {target} HTTP/1.1\r\nHost: app.test\r\nX-Api-Key: ci-key-0123456789\r\nConnection: close\r\n\r\n"
        ));
        let asked = s.ask(&target, &key).await;
        // The proxy forwards the judged target; Envoy forwards its own, so gatehouse allows
        // only a target that is already normal (400 otherwise) and otherwise agrees.
        let expected = match proxied.status {
            200 if proxied.echoed().target != target => 400,
            status => status,
        };
        assert_eq!(
            asked.status(),
            expected,
            "{target}: proxy {proxied:?}, ext_authz {asked:?}"
        );
        if expected == 200 {
            assert_eq!(
                asked.header("x-auth-request-user"),
                Some("svc-ci"),
                "{target}"
            );
        }
        compared += 1;
    }
    assert!(compared > 25);
    // The gateway's own paths are asked about by no one: Envoy routes them to gatehouse.
    for target in [
        "/_gatehouse/userinfo",
        "/_gatehouse/ext-authz/keys/x",
        "/.well-known/oauth-protected-resource/api",
        "/keys/../_gatehouse/login",
    ] {
        let r = s.ask(target, &key).await;
        assert!(r.status() == 404 || r.status() == 400, "{target}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_that_name_no_request_are_refused() {
    let s = Setup::start().await;
    let mut envoy = s.envoy().await;
    // No attributes at all: nothing to judge, never an allow.
    let r = envoy
        .check(CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let r = envoy_applies(&[], r);
    assert_eq!(r.status(), 400, "{r:?}");
    assert!(json_body(&r)["request_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty() && Some(id) == r.header("x-request-id")));
    // A header value Envoy could never have sent.
    let r = envoy
        .check(check_request(
            "203.0.113.7",
            "GET",
            "/public/x",
            &[("x-odd", "a\r\nx-auth-request-user: root")],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(envoy_applies(&[], r).status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_trusted_proxies_are_answered() {
    let s = Setup::start().await;
    let stranger = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut client = s.client_from(stranger).await.expect("connects");
    let refused = client
        .check(check_request(
            "203.0.113.7",
            "GET",
            "/keys/x",
            &[("x-api-key", "ci-key-0123456789")],
        ))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let log = s.gw.log();
    assert!(log.contains("not in server.trusted_proxies"), "{log}");
    // The same question from Envoy's address is answered.
    let trusted = s
        .ask("/keys/x", &[("x-api-key", "ci-key-0123456789")])
        .await;
    assert_eq!(trusted.status(), 200);
}

/// `gatehouse check` on the `[ext_authz]` section: every problem at its line.
#[test]
fn config_errors_name_their_line() {
    const GOOD: &str = "[server]\nlisten = [\"127.0.0.1:18080\"]\ntrusted_proxies = [\"10.0.0.0/8\"]\n\n[upstream.app]\nservers = [\"127.0.0.1:18081\"]\n\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\nauth = [\"none\"]\n";
    let cases = [
        (
            format!("{GOOD}\n[ext_authz]\ngrpc_listen = \"127.0.0.1:9191\"\n"),
            None,
        ),
        (
            format!("{GOOD}\n[ext_authz]\ngrpc_listen = \"9191\"\n"),
            Some("gateway.toml:15:15: invalid listen address \"9191\""),
        ),
        (
            format!("{GOOD}\n[ext_authz]\ngrpc_listen = \"127.0.0.1:18080\"\n"),
            Some("gateway.toml:15:15: ext_authz.grpc_listen 127.0.0.1:18080 is already a listener"),
        ),
        (
            format!("{GOOD}\n[ext_authz]\ngrpc_port = 9191\n"),
            Some("gateway.toml:15:1: unknown field `grpc_port`"),
        ),
        (
            format!("{GOOD}\n[ext_authz.grpc_tls]\ncert = \"a.crt\"\nkey = \"a.key\"\n"),
            Some("gateway.toml:14:1: ext_authz.grpc_tls needs ext_authz.grpc_listen"),
        ),
        (
            format!("{GOOD}\n[ext_authz]\ngrpc_listen = \"127.0.0.1:9191\"\n\n[ext_authz.grpc_tls]\ncert = \"missing.crt\"\nkey = \"missing.key\"\n"),
            Some("gateway.toml:18:8: cannot read TLS certificate missing.crt"),
        ),
        (
            format!("{}\n[ext_authz]\ngrpc_listen = \"127.0.0.1:9191\"\n", GOOD.replace("trusted_proxies = [\"10.0.0.0/8\"]\n", "")),
            Some("gateway.toml:14:15: ext_authz.grpc_listen answers only server.trusted_proxies, which is empty"),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let mut failures = Vec::new();
    for (text, expected) in cases {
        std::fs::write(&path, &text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .replace(&format!("{}/", dir.path().display()), "");
        let right = match expected {
            None => out.status.success(),
            Some(message) => !out.status.success() && said.contains(message),
        };
        if !right {
            failures.push(format!("{text}\nexpected {expected:?}, got:\n{said}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// A channel to the Check listener over TLS, as Envoy's cluster with an
/// `UpstreamTlsContext` opens it: the dev CA trusted, ALPN `h2`, and (`client_cert`) the
/// dev client certificate.
async fn tls_channel(
    port: u16,
    certs: &std::path::Path,
    client_cert: bool,
) -> Result<Channel, String> {
    use openssl::ssl::{SslConnector, SslFiletype, SslMethod};
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    builder
        .set_ca_file(certs.join("ca.crt"))
        .map_err(|e| e.to_string())?;
    if client_cert {
        builder
            .set_certificate_chain_file(certs.join("client.crt"))
            .and_then(|()| builder.set_private_key_file(certs.join("client.key"), SslFiletype::PEM))
            .map_err(|e| e.to_string())?;
    }
    builder
        .set_alpn_protos(b"\x02h2")
        .map_err(|e| e.to_string())?;
    let connector = builder.build();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://localhost:{port}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let connect = tower::service_fn(move |_: http::Uri| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let ssl = connector.configure()?.into_ssl("localhost")?;
            let mut stream = Box::pin(tokio_openssl::SslStream::new(ssl, tcp)?);
            stream.as_mut().connect().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    endpoint
        .connect_with_connector(connect)
        .await
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_speaks_tls_and_wants_envoys_client_certificate() {
    let app = TestServer::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let status = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/certs/gen-dev-certs.sh"
        ))
        .arg(&certs)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run the dev certificate script");
    assert!(status.success());
    let grpc_port = free_port();
    let config = format!(
        "{base}{up}\n[ext_authz]\ngrpc_listen = \"127.0.0.1:{grpc_port}\"\n\n[ext_authz.grpc_tls]\ncert = \"certs/server.crt\"\nkey = \"certs/server.key\"\nclient_ca = \"certs/ca.crt\"\n\n[[route]]\nname = \"public\"\npath = \"/public\"\nupstream = \"app\"\nauth = [\"none\"]\n",
        base = base_config("allowed_hosts = [\"app.test\"]\ntrusted_proxies = [\"127.0.0.1/32\"]"),
        up = upstream_block("app", &[app.addr], ""),
    );
    let gw = Gateway::start_in(dir, &config);
    let question = || check_request("203.0.113.7", "GET", "/public/x", &[]);
    // Envoy with its client certificate: answered over TLS. (The listener may still be
    // starting: a few tries, 100 ms apart.)
    let mut channel = Err(String::new());
    for _ in 0..50 {
        channel = tls_channel(grpc_port, &certs, true).await;
        if channel.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let channel = channel.unwrap_or_else(|e| panic!("TLS channel: {e}\n{}", gw.log()));
    let answer = AuthorizationClient::new(channel)
        .check(question())
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(envoy_applies(&[], answer).status(), 200);
    // Without a client certificate: the handshake fails, nothing is answered.
    let without = match tls_channel(grpc_port, &certs, false).await {
        Ok(channel) => AuthorizationClient::new(channel)
            .check(question())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    assert!(without.is_err(), "answered without a client certificate");
    // Plaintext HTTP/2 to the TLS listener: nothing either.
    let plaintext = async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .map_err(|e| e.to_string())?;
        AuthorizationClient::new(channel)
            .check(question())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert!(plaintext.await.is_err(), "answered in plaintext");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_upgrade_takes_the_listener_over() {
    let mut s = Setup::start().await;
    let key = [("x-api-key", "ci-key-0123456789")];
    assert_eq!(s.ask("/keys/x", &key).await.status(), 200);
    let log = std::fs::File::create(s.gw.path().join("new.log")).unwrap();
    let mut new = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "--upgrade", "-c"])
        .arg(&s.gw.config_path)
        .arg("--upgrade-sock")
        .arg(s.gw.path().join("upgrade.sock"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // The new process waits on the upgrade socket; the old one sends its sockets on SIGQUIT
    // and lets go of the gRPC listener when its shutdown begins.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.gw.signal("QUIT");
    let mut old_exited = false;
    for _ in 0..100 {
        if let Ok(Some(_)) = s.gw.child_exited() {
            old_exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Answered by the new process once the old one is gone (a few tries while it binds,
    // 100 ms apart).
    let mut status = 0;
    for _ in 0..50 {
        if let Ok(mut client) = s.client_from(IpAddr::V4(Ipv4Addr::LOCALHOST)).await {
            if let Ok(r) = client
                .check(check_request("203.0.113.7", "GET", "/keys/x", &key))
                .await
            {
                status = envoy_applies(&[], r.into_inner()).status();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still_running = new.try_wait().ok().flatten().is_none();
    let _ = new.kill();
    let _ = new.wait();
    let new_log = std::fs::read_to_string(s.gw.path().join("new.log")).unwrap_or_default();
    assert!(old_exited && still_running && status == 200, "old exited: {old_exited}, new running: {still_running}, status {status}\nold:\n{}\nnew:\n{new_log}", s.gw.log());
}
