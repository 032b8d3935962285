//! Envoy's HTTP ext_authz against the real gateway. Envoy cannot run here, so the test plays
//! it exactly as `deploy/envoy/envoy-http-ext-authz.yaml` configures it: from a trusted
//! address it asks `/_gatehouse/ext-authz` + the original path and query, with the original
//! method, `Host`, and the headers its `allowed_headers` lets through, plus the
//! `X-Forwarded-For` / `-Proto` it sets itself. On 200 it copies the answer's headers that
//! `allowed_upstream_headers` names onto the request and removes those listed in
//! `x-envoy-auth-headers-to-remove`; what the app would receive is asserted on. Any other
//! answer is what the client gets.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use common::keys::*;
use common::paths::PATH_CASES;
use common::*;
use serde_json::{json, Value};

const AUD: &str = "api://ext-authz-test";
const ENVOY_YAML: &str = include_str!("../deploy/envoy/envoy-http-ext-authz.yaml");
const ISTIO_MESH: &str = include_str!("../deploy/istio/mesh-config.yaml");

/// `allowed_headers` of the shipped Envoy config (besides the ones Envoy always sends).
const ALLOWED_EXACT: &[&str] = &[
    "cookie",
    "x-api-key",
    "accept",
    "x-requested-with",
    "origin",
    "access-control-request-method",
    "access-control-request-headers",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-override-url",
];
const ALLOWED_PREFIXES: &[&str] = &["x-auth-request-", "x-gatehouse-"];
/// `allowed_upstream_headers`: (prefix?, name).
const UPSTREAM_EXACT: &[&str] = &["x-gatehouse-assertion", "authorization", "cookie"];
const UPSTREAM_PREFIX: &str = "x-auth-request-";

/// What Envoy sends gatehouse of a client header (the yaml's `allowed_headers`, with its
/// `safe_regex` for odd names: any character other than a-z, 0-9 and `-`).
fn envoy_asks_with(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "authorization" | "content-length")
        || ALLOWED_EXACT.contains(&name.as_str())
        || ALLOWED_PREFIXES.iter().any(|p| name.starts_with(p))
        || name
            .bytes()
            .any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
}

fn envoy_sets_upstream(name: &str) -> bool {
    UPSTREAM_EXACT.contains(&name) || name.starts_with(UPSTREAM_PREFIX)
}

#[test]
fn the_test_plays_the_shipped_envoy_config() {
    for name in ALLOWED_EXACT.iter().chain(UPSTREAM_EXACT) {
        assert!(ENVOY_YAML.contains(&format!("- exact: {name}\n")), "{name}");
    }
    for prefix in ALLOWED_PREFIXES {
        assert!(
            ENVOY_YAML.contains(&format!("- prefix: {prefix}\n")),
            "{prefix}"
        );
    }
    assert!(ENVOY_YAML.contains(r#"- safe_regex: { regex: "[a-z0-9-]*[^a-z0-9:-].*" }"#));
    assert!(ENVOY_YAML.contains("path_prefix: /_gatehouse/ext-authz\n"));
    assert!(ENVOY_YAML.contains("headers_with_underscores_action: REJECT_REQUEST"));
    // Istio's provider says the same in its own words (`prefix*` for a prefix).
    let istio_list = |key: &str| -> Vec<String> {
        let after = ISTIO_MESH.split_once(&format!("{key}:\n")).expect(key).1;
        after
            .lines()
            .take_while(|l| l.trim_start().starts_with('-'))
            .map(|l| l.trim().trim_start_matches("- ").to_string())
            .collect()
    };
    let mut expected: Vec<String> = ALLOWED_EXACT.iter().map(|s| s.to_string()).collect();
    expected.extend(ALLOWED_PREFIXES.iter().map(|p| format!("{p}*")));
    assert_eq!(istio_list("includeRequestHeadersInCheck"), expected);
    let mut upstream = vec![format!("{UPSTREAM_PREFIX}*")];
    upstream.extend(UPSTREAM_EXACT.iter().map(|s| s.to_string()));
    assert_eq!(istio_list("headersToUpstreamOnAllow"), upstream);
    assert!(ISTIO_MESH.contains("pathPrefix: /_gatehouse/ext-authz\n"));
}

/// An id token the stub provider hands out next.
type NextToken = Arc<Mutex<Option<String>>>;

struct Setup {
    gw: Gateway,
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
        let config = format!(
            r#"{base}{up}
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
            _app: app,
            idp,
            next_token,
        }
    }

    /// Envoy's question about `method target` from the client at `client_ip` with the
    /// client's `headers` (`Host` is `app.test` unless one is given).
    fn ask_from(
        &self,
        client_ip: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        let host = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map_or("app.test", |(_, v)| *v);
        let mut request = format!(
            "{method} /_gatehouse/ext-authz{target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n"
        );
        for (name, value) in headers {
            if envoy_asks_with(name) && !name.eq_ignore_ascii_case("x-forwarded-for") {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        // use_remote_address: the client's own X-Forwarded-For gets the real address appended.
        let forged = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"));
        match forged {
            Some((_, v)) => request.push_str(&format!("x-forwarded-for: {v}, {client_ip}\r\n")),
            None => request.push_str(&format!("x-forwarded-for: {client_ip}\r\n")),
        }
        request.push_str("x-forwarded-proto: http\r\nConnection: close\r\n\r\n");
        self.gw.raw(&request)
    }

    fn ask(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        self.ask_from("203.0.113.7", "GET", target, headers)
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
        let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
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

/// The request the app gets from Envoy after a 200: the client's headers, those the answer
/// names in `allowed_upstream_headers` replacing theirs, those listed in
/// `x-envoy-auth-headers-to-remove` removed.
fn upstream_view(client: &[(&str, &str)], answer: &Response) -> Vec<(String, String)> {
    assert_eq!(answer.status, 200, "an allowed request: {answer:?}");
    let mut headers: Vec<(String, String)> = client
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect();
    for (name, values) in &answer.headers {
        if envoy_sets_upstream(name) {
            headers.retain(|(n, _)| n != name);
            for v in values {
                headers.push((name.clone(), v.clone()));
            }
        }
    }
    let remove: Vec<String> = answer
        .header("x-envoy-auth-headers-to-remove")
        .unwrap_or("")
        .split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    headers.retain(|(n, _)| !remove.contains(n));
    headers
}

fn value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn json_body(r: &Response) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("JSON ({e}): {r:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_requests_carry_the_identity_for_every_method() {
    let s = Setup::start().await;

    // A bearer token: consumed (removed), the identity and the assertion set.
    let bearer = format!("Bearer {}", s.token("alice", &["staff"]));
    let client = [("authorization", bearer.as_str()), ("accept", "*/*")];
    let r = s.ask("/api/orders?page=2", &client);
    let up = upstream_view(&client, &r);
    assert_eq!(value(&up, "x-auth-request-user"), Some("alice"));
    assert_eq!(value(&up, "x-auth-request-groups"), Some("staff"));
    assert_eq!(value(&up, "x-auth-request-department"), Some("sales"));
    assert!(value(&up, "x-gatehouse-assertion").is_some_and(|a| a.split('.').count() == 3));
    assert_eq!(
        value(&up, "authorization"),
        None,
        "the token stays with gatehouse"
    );
    assert_eq!(value(&up, "accept"), Some("*/*"));
    assert_eq!(r.body, "", "an allow has no body");

    // An API key: consumed too.
    let client = [("x-api-key", "ci-key-0123456789")];
    let up = upstream_view(&client, &s.ask("/keys/deploy", &client));
    assert_eq!(value(&up, "x-auth-request-user"), Some("svc-ci"));
    assert_eq!(value(&up, "x-api-key"), None);

    // A browser session: the app keeps its own cookies, never gatehouse's.
    let session = s.session("bob");
    let cookie = format!("theme=dark; {session}");
    let client = [("cookie", cookie.as_str()), ("accept", "text/html")];
    let r = s.ask("/app/home", &client);
    let up = upstream_view(&client, &r);
    assert_eq!(value(&up, "x-auth-request-user"), Some("bob"));
    assert_eq!(value(&up, "cookie"), Some("theme=dark"));

    // Metrics and audit lines are the proxy's, the audit line names the front.
    let log = s.gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("auth decision") && l.contains("ext_authz") && l.contains("bob")),
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_reach_the_client_with_their_status_and_headers() {
    let s = Setup::start().await;
    // No credential: 401 with the RFC 6750 challenge naming the route's metadata.
    let r = s.ask("/api/orders", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"gatehouse\", resource_metadata=\"http://app.test/.well-known/oauth-protected-resource/api\"")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = json_body(&r);
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(body["request_id"], r.header("x-request-id").unwrap());
    // A malformed one: 400; a bad one: 401 invalid_token.
    let r = s.ask("/api/orders", &[("authorization", "Bearer a b")]);
    assert_eq!(r.status, 400);
    let r = s.ask("/api/orders", &[("authorization", "Bearer x.y.z")]);
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    // The policy says no: 403.
    let bearer = format!("Bearer {}", s.token("alice", &["staff"]));
    let r = s.ask("/admin/users", &[("authorization", &bearer)]);
    assert_eq!(r.status, 403);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_scope"));
    let admin = format!("Bearer {}", s.token("root", &["admins"]));
    assert_eq!(
        s.ask("/admin/users", &[("authorization", &admin)]).status,
        200
    );
    // No route, a host gatehouse does not serve.
    assert_eq!(s.ask("/nowhere", &[]).status, 404);
    assert_eq!(s.ask("/public/x", &[("host", "evil.test")]).status, 421);
    // A browser navigation without a session: 302 to the provider, with the binding cookie.
    let r = s.ask("/app/home?tab=1", &[("accept", "text/html")]);
    assert_eq!(r.status, 302, "{r:?}");
    let location = r.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{}/authorize?", s.idp.issuer)),
        "{location}"
    );
    assert!(r.headers["set-cookie"]
        .iter()
        .any(|c| c.starts_with("gatehouse_login=")));
    // A script without one: 401, never a redirect; an HTML error page for a browser.
    let r = s.ask("/app/home", &[("accept", "application/json")]);
    assert_eq!(r.status, 401);
    let r = s.ask("/nowhere", &[("accept", "text/html")]);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_count_the_client_envoy_names() {
    let s = Setup::start().await;
    let first = s.ask_from("198.51.100.1", "GET", "/limited/x", &[]);
    assert_eq!(first.status, 200);
    let second = s.ask_from("198.51.100.1", "GET", "/limited/x", &[]);
    assert_eq!(second.status, 429);
    assert!(second.header("retry-after").is_some());
    assert!(second.header("ratelimit-policy").is_some());
    // A client forging X-Forwarded-For is still counted by the address Envoy appended.
    let forged = s.ask_from(
        "198.51.100.1",
        "GET",
        "/limited/x",
        &[("x-forwarded-for", "192.0.2.99")],
    );
    assert_eq!(forged.status, 429);
    let other = s.ask_from("198.51.100.2", "GET", "/limited/x", &[]);
    assert_eq!(other.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_never_reach_the_upstream() {
    let s = Setup::start().await;
    let client = [
        ("x-api-key", "ci-key-0123456789"),
        ("X-Auth-Request-User", "mallory"),
        ("X-Auth-Request-Email", "mallory@evil.test"),
        ("X-Auth-Request-Groups", "admins"),
        ("X-Auth-Request-Department", "finance"),
        ("X-Auth-Request-Tenant", "other"),
        ("X.Auth.Request.Preferred.Username", "root"),
        ("x-auth-request-access-token", "stolen"),
        ("X-Gatehouse-Assertion", "forged.jwt.value"),
        ("X-HTTP-Method-Override", "DELETE"),
    ];
    let r = s.ask("/keys/deploy", &client);
    let up = upstream_view(&client, &r);
    assert_eq!(value(&up, "x-auth-request-user"), Some("svc-ci"));
    let forged: Vec<&(String, String)> = up
        .iter()
        .filter(|(n, v)| {
            n.contains("auth") && n.contains("request") && n != "x-auth-request-user"
                || n == "x-http-method-override"
                || (n == "x-gatehouse-assertion" && v == "forged.jwt.value")
        })
        .collect();
    let assertion_is_gatehouses = value(&up, "x-gatehouse-assertion")
        .is_some_and(|a| a != "forged.jwt.value" && a.split('.').count() == 3);
    assert!(assertion_is_gatehouses, "{up:?}");
    assert!(
        forged.iter().all(|(n, _)| n == "x-gatehouse-assertion"),
        "forged headers left: {forged:?}"
    );
    // A name gatehouse never saw (an Envoy whose allowed_headers lets none through) goes
    // too: every identity name gatehouse did not set is in the list.
    let remove = r.header("x-envoy-auth-headers-to-remove").unwrap();
    for name in [
        "x-auth-request-email",
        "x-auth-request-preferred-username",
        "x-auth-request-groups",
        "x-auth-request-department",
    ] {
        assert!(remove.split(", ").any(|n| n == name), "{name}: {remove}");
    }
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
        // Envoy's path always starts with "/".
        if !target.starts_with('/') {
            continue;
        }
        let target = target.replacen("/public", "/keys", 1);
        let proxied = s.gw.raw(&format!(
            "GET {target} HTTP/1.1\r\nHost: app.test\r\nX-Api-Key: ci-key-0123456789\r\nConnection: close\r\n\r\n"
        ));
        let asked = s.ask(&target, &key);
        // The proxy forwards the judged target; Envoy forwards its own, so gatehouse allows
        // only a target that is already normal (400 otherwise) and otherwise agrees.
        let expected = match proxied.status {
            200 if proxied.echoed().target != target => 400,
            status => status,
        };
        assert_eq!(
            asked.status, expected,
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
        let r = s.ask(target, &key);
        assert!(r.status == 404 || r.status == 400, "{target}: {r:?}");
    }
    // Only the prefix Envoy writes asks a question; another spelling of it never allows.
    for raw in [
        "/_gatehouse/ext%2Dauthz/keys/x",
        "/_gatehouse/ext%2dauthz",
        "/_gatehouse/ext-authz?x=/keys/x",
        "/_gatehouse/./ext-authz/keys/x",
        "/_gatehouse/ext-authzz/keys/x",
    ] {
        let r = s.gw.raw(&format!(
            "GET {raw} HTTP/1.1\r\nHost: app.test\r\nX-Api-Key: ci-key-0123456789\r\nConnection: close\r\n\r\n"
        ));
        assert!(r.status == 404 || r.status == 400, "{raw}: {r:?}");
        assert_eq!(r.header("x-auth-request-user"), None, "{raw}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_trusted_proxies_are_answered() {
    let s = Setup::start().await;
    let stranger = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let r = front::request_from(
        stranger,
        s.gw.port,
        "GET /_gatehouse/ext-authz/keys/x HTTP/1.1\r\nHost: app.test\r\nX-Api-Key: ci-key-0123456789\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-auth-request-user"), None);
    assert_eq!(r.header("x-envoy-auth-headers-to-remove"), None);
    // The same question from Envoy's address is answered.
    let trusted = s.ask("/keys/x", &[("x-api-key", "ci-key-0123456789")]);
    assert_eq!(trusted.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_keeps_its_connection_across_refusals() {
    let s = Setup::start().await;
    let question = |target: &str, extra: &str| {
        format!("GET /_gatehouse/ext-authz{target} HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\nx-forwarded-for: 203.0.113.5\r\n{extra}\r\n")
    };
    // Three questions, one after another on one connection (Envoy does not pipeline):
    // refused, refused, allowed.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", s.gw.port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut statuses = Vec::new();
    for request in [
        question("/api/x", ""),
        question("/nowhere", ""),
        question("/keys/x", "X-Api-Key: ci-key-0123456789\r\n"),
    ] {
        std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
        let mut data = Vec::new();
        let mut chunk = [0u8; 4096];
        // Until the whole answer (its Content-Length) is in; at most 10 s per read.
        while parse_response(&data).is_none_or(|r| {
            r.header("content-length")
                .and_then(|l| l.parse::<usize>().ok())
                .is_some_and(|l| r.body.len() < l)
        }) {
            let n = std::io::Read::read(&mut stream, &mut chunk).unwrap_or(0);
            if n == 0 {
                break;
            }
            data.extend_from_slice(&chunk[..n]);
        }
        statuses.push(parse_response(&data).map_or(0, |r| r.status));
    }
    assert_eq!(statuses, [401, 404, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_method_and_preflights_are_judged() {
    let s = Setup::start().await;
    let key = [("x-api-key", "ci-key-0123456789")];
    for method in ["POST", "PUT", "DELETE", "HEAD"] {
        let r = s.ask_from("203.0.113.9", method, "/keys/x", &key);
        assert_eq!(r.status, 200, "{method}");
    }
    assert_eq!(
        s.ask_from("203.0.113.9", "delete", "/keys/x", &key).status,
        400
    );
    // A CORS preflight is answered as the proxy answers it, before authentication; Envoy
    // passes the 204 and its Access-Control-* headers on.
    let preflight = |origin| {
        s.ask_from(
            "203.0.113.9",
            "OPTIONS",
            "/api/items",
            &[("origin", origin), ("access-control-request-method", "GET")],
        )
    };
    let ok = preflight("https://spa.test");
    assert_eq!(ok.status, 204, "{ok:?}");
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://spa.test")
    );
    assert_eq!(preflight("https://evil.test").status, 403);
}
