//! An outside suite of hostile requests: forged header spellings, request overrides,
//! method case, twice-encoded paths, `;` tricks on an opted-in route, smuggling,
//! pipelining, upgrades and dropped upstream connections. Every test asserts on what the
//! upstream received: nothing forged, smuggled or unjudged may arrive there.
//!
//! The upstream here is a strict recording server (`Recorder`): it parses HTTP/1.1 with
//! `httparse`, frames bodies by `Content-Length` or chunked coding exactly, and keeps every
//! request it saw, so a smuggled request shows up as a request of its own.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::keys::*;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request as the recording upstream parsed it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    /// Names as sent (lower-cased here), with their values.
    headers: Vec<(String, String)>,
    #[allow(dead_code)]
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Answer every request, keep connections alive.
    Normal,
    /// Close a kept-alive connection when its second request arrives (a server that went
    /// away while the gateway pooled the connection).
    DropSecond,
    /// Agree to any `Upgrade` with 101 and go on reading HTTP/1.1 requests on the
    /// connection, as an h2c-capable server would read HTTP/2 ones: whatever crosses the
    /// tunnel reaches the app unjudged.
    AcceptUpgrades,
}

struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start(mode: Mode) -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &record, mode).await;
                });
            }
        });
        Recorder { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn targets(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.target).collect()
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// Reads one request (head and exactly framed body) from `buf`/`stream`.
async fn read_request(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Option<Result<Seen, String>> {
    let (head_len, method, target, headers) = loop {
        let mut parsed = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut parsed);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (
                    n,
                    req.method.unwrap_or_default().to_string(),
                    req.path.unwrap_or_default().to_string(),
                    headers,
                );
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Some(Err(format!("unparsable request head: {e}"))),
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    buf.drain(..head_len);
    let te: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "transfer-encoding")
        .map(|(_, v)| v.as_str())
        .collect();
    let cl: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    if !te.is_empty() && !cl.is_empty() {
        return Some(Err("both Transfer-Encoding and Content-Length".into()));
    }
    let mut body = Vec::new();
    if !te.is_empty() {
        if te != ["chunked"] {
            return Some(Err(format!("transfer-encoding {te:?}")));
        }
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
                return Some(Err(format!("chunk size {size_text:?}")));
            };
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            if &buf[size..size + 2] != b"\r\n" {
                return Some(Err("chunk without CRLF".into()));
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(cl) = cl.first() {
        if cl.len() != 1 {
            return Some(Err(format!("content-length {cl:?}")));
        }
        let Ok(n) = cl.parse::<usize>() else {
            return Some(Err(format!("content-length {cl:?}")));
        };
        while buf.len() < n {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        }
        body = buf.drain(..n).collect();
    }
    Some(Ok(Seen {
        method,
        target,
        headers,
        body,
    }))
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    record: &Mutex<Vec<Seen>>,
    mode: Mode,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut served = 0;
    loop {
        let seen = match read_request(&mut stream, &mut buf).await {
            None => return Ok(()),
            Some(Err(e)) => {
                // A framing the strict server refuses is recorded too: it must never happen.
                record.lock().unwrap().push(Seen {
                    method: "INVALID".into(),
                    target: e,
                    headers: Vec::new(),
                    body: Vec::new(),
                });
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 400 Bad\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                return Ok(());
            }
            Some(Ok(seen)) => seen,
        };
        served += 1;
        if mode == Mode::DropSecond && served == 2 {
            // The pooled connection is dead: this request never reached the app.
            return Ok(());
        }
        record.lock().unwrap().push(seen.clone());
        if mode == Mode::AcceptUpgrades && seen.header("upgrade").is_some() {
            let upgrade = seen.header("upgrade").unwrap_or_default().to_string();
            let head = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: {upgrade}\r\nconnection: upgrade\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            continue;
        }
        let body = json!({"method": seen.method, "target": seen.target}).to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(resp.as_bytes()).await?;
    }
}

const POLICY: &str = r#"
default = "allow"

[[rule]]
name = "admin area"
paths = ["/admin/**", "/secure/admin/**", "/ovr/admin/**", "/uscore/admin/**"]
deny = true

[[rule]]
name = "no deletes"
paths = ["/customers/**", "/ovr/customers/**"]
methods = ["DELETE"]
deny = true

[[rule]]
name = "no batches"
paths = ["/odata/$batch", "/odata/@x", "/odata/!x"]
deny = true

[[rule]]
name = "legacy admin"
paths = ["/legacy/admin/**", "/legacy/admin"]
deny = true
"#;

struct Setup {
    gw: Gateway,
    app: Recorder,
    _jwks: TestServer,
    key: TestKey,
    issuer: String,
}

impl Setup {
    fn token(&self, sub: &str) -> String {
        self.key.sign(&json!({
            "iss": self.issuer, "aud": "api", "sub": sub, "exp": now() + 600,
            "email": format!("{sub}@example.com"), "email_verified": true, "groups": ["staff"],
            "department": "sales",
        }))
    }

    /// Sends raw bytes, reads to the end (the gateway closes or `Connection: close`).
    fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.gw.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        let mut data = Vec::new();
        let _ = stream.read_to_end(&mut data);
        data
    }

    fn statuses(&self, bytes: &[u8]) -> Vec<u16> {
        let data = self.raw(bytes);
        let text = String::from_utf8_lossy(&data);
        text.match_indices("HTTP/1.1 ")
            .filter_map(|(i, _)| text[i + 9..].get(..3)?.parse().ok())
            .collect()
    }

    fn get(&self, path: &str, extra: &str) -> Response {
        self.gw.get(path, extra)
    }
}

async fn setup_with(mode: Mode) -> Setup {
    setup_on(mode, "").await
}

async fn setup_on(mode: Mode, server_extra: &str) -> Setup {
    let key = TestKey::rsa("k1", Algorithm::RS256);
    let body = jwks(&[&key]);
    let jwks_server =
        TestServer::start(Arc::new(move |_req: &Request| Reply::json(200, &body))).await;
    let issuer = format!("http://{}", jwks_server.addr);
    let app = Recorder::start(mode).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let config = format!(
        r#"{}{}
[headers]
assertion = true
claims = {{ "X-Department" = "department" }}

[[bearer]]
issuer = "{issuer}"
audiences = ["api"]
jwks_uri = "{issuer}/jwks"

[[route]]
name = "open"
path = "/"
upstream = "app"
auth = ["none"]
policy = "policy.toml"

[[route]]
name = "secure"
path = "/secure"
upstream = "app"
auth = ["bearer"]
policy = "policy.toml"

[[route]]
name = "legacy"
path = "/legacy"
upstream = "app"
auth = ["none"]
policy = "policy.toml"
path_checks = {{ allow_semicolon = true, allow_encoded_slash = true, allow_backslash = true }}

[[route]]
name = "ovr"
path = "/ovr"
upstream = "app"
auth = ["none"]
policy = "policy.toml"
request_overrides = ["X-HTTP-Method-Override", "X-Original-URL"]

[[route]]
name = "uscore"
path = "/uscore"
upstream = "app"
auth = ["none"]
policy = "policy.toml"
underscores_in_headers = true
"#,
        base_config(server_extra),
        upstream_block("app", &[app.addr], "")
    );
    let gw = Gateway::start_in(dir, &config);
    Setup {
        gw,
        app,
        _jwks: jwks_server,
        key,
        issuer,
    }
}

async fn setup() -> Setup {
    setup_with(Mode::Normal).await
}

/// Every spelling of a protected name an upstream framework could read as the real one.
const FORGED: &str = "X_Auth_Request_User: mallory\r\n\
X-Auth-Request_Groups: admins\r\n\
X_AUTH_REQUEST_EMAIL: mallory@evil.example\r\n\
x_auth_request_preferred_username: root\r\n\
X_Gatehouse_Assertion: forged\r\n\
X-Gatehouse_Assertion: forged\r\n\
X_Department: it\r\n\
X.Auth.Request.User: mallory\r\n\
X-Auth-Request.User: mallory\r\n\
X_Forwarded_For: 10.0.0.1\r\n\
X_Real_IP: 10.0.0.1\r\n\
X_Request_Id: forged\r\n\
X-Auth-Request-User: mallory\r\n\
X-Department: it\r\n";

fn forged_names_left(seen: &Seen) -> Vec<String> {
    let canonical = |name: &str| -> String {
        name.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    b.to_ascii_lowercase() as char
                } else {
                    '-'
                }
            })
            .collect()
    };
    seen.headers
        .iter()
        .filter(|(name, value)| {
            let c = canonical(name);
            let protected = c.starts_with("x-auth-request-")
                || c.starts_with("x-gatehouse-")
                || c == "x-department"
                || c == "x-forwarded-for"
                || c == "x-real-ip"
                || c == "x-request-id";
            // The gateway's own values are fine; the client's are not.
            protected
                && (name.as_str() != c
                    || value.contains("mallory")
                    || value == "forged"
                    || value == "it"
                    || value == "admins"
                    || value.contains("10.0.0.1"))
        })
        .map(|(n, v)| format!("{n}: {v}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_in_other_spellings_never_reach_the_upstream() {
    let s = setup().await;
    // An open route, and an authenticated one whose real identity headers are set.
    let r = s.get("/public/a", FORGED);
    assert_eq!(r.status, 200, "{r:?}");
    let token = s.token("alice");
    let r = s.get(
        "/secure/x",
        &format!("{FORGED}Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    // A route that lets underscore names through still drops protected names in them.
    let r = s.get("/uscore/x", &format!("{FORGED}X_Custom_Thing: kept\r\n"));
    assert_eq!(r.status, 200, "{r:?}");
    let seen = s.app.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for request in &seen {
        let left = forged_names_left(request);
        assert!(
            left.is_empty(),
            "{}: forged headers arrived: {left:?}",
            request.target
        );
    }
    // The authenticated request carries the gateway's identity, and only that.
    let secure = &seen[1];
    assert_eq!(secure.all("x-auth-request-user"), ["alice"]);
    assert_eq!(secure.all("x-department"), ["sales"]);
    assert_eq!(secure.all("x-auth-request-email"), ["alice@example.com"]);
    // Underscore names are dropped like nginx does, unless the route opts in.
    assert_eq!(seen[0].header("x_custom_thing"), None);
    assert_eq!(seen[2].header("x_custom_thing"), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_and_odd_header_names_are_dropped_by_default() {
    let s = setup().await;
    let r = s.get(
        "/public/a",
        "X_Custom: 1\r\nX.Dotted: 2\r\nX-Normal: 3\r\nX-Forwarded-Prefix: /admin\r\nTrue-Client-IP: 10.9.9.9\r\nX-Client-IP: 10.9.9.9\r\nX-Forwarded-Port: 1\r\nX-Forwarded-Server: evil\r\nCF-Connecting-IP: 10.9.9.9\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = &s.app.seen()[0];
    assert_eq!(seen.header("x_custom"), None, "{seen:?}");
    assert_eq!(seen.header("x.dotted"), None, "{seen:?}");
    assert_eq!(seen.header("x-normal"), Some("3"));
    // Forwarding and client-address headers come only from trusted proxies.
    for name in [
        "x-forwarded-prefix",
        "true-client-ip",
        "x-client-ip",
        "x-forwarded-port",
        "x-forwarded-server",
        "cf-connecting-ip",
    ] {
        assert_eq!(seen.header(name), None, "{name}: {seen:?}");
    }
    // Operators see how many were dropped (counted when the request is logged).
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = s.gw.admin("/metrics").body;
        if metrics.contains("gatehouse_dropped_request_headers_total 8") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        metrics.contains("gatehouse_dropped_request_headers_total 8"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_override_headers_are_stripped_unless_a_route_opts_in() {
    let s = setup().await;
    let overrides = "X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\nX-Original-URL: /admin/x\r\nX-Rewrite-URL: /admin/x\r\nX-Original-URI: /admin/x\r\nX-Original-Method: DELETE\r\nX_HTTP_Method_Override: DELETE\r\n";
    let r = s.gw.raw(&format!(
        "POST /customers/7 HTTP/1.1\r\nHost: 127.0.0.1\r\n{overrides}Content-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(r.status, 200, "{r:?}");
    let seen = &s.app.seen()[0];
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
        "x-original-method",
        "x_http_method_override",
    ] {
        assert_eq!(
            seen.header(name),
            None,
            "{name} reached the upstream: {seen:?}"
        );
    }
    s.app.clear();
    // `_method` in the query of a POST is an override too (Symfony, Laravel read it).
    let r = s.gw.raw(
        "POST /customers/7?_method=DELETE HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(s.app.seen().is_empty());

    // The route that opts in passes the header, and the policy judges what it says.
    let r = s.gw.raw(
        "POST /ovr/customers/7 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 403, "the overridden method is judged: {r:?}");
    let r = s.gw.raw(
        "POST /ovr/customers/7 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-HTTP-Method-Override: delete\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 400, "an override in another case: {r:?}");
    let r = s.gw.raw(
        "POST /ovr/customers/7 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-HTTP-Method-Override: PATCH\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = s.get("/ovr/public", "X-Original-URL: /ovr/admin/x\r\n");
    assert_eq!(r.status, 403, "the overridden path is judged: {r:?}");
    let r = s.get("/ovr/public", "X-Original-URL: /ovr/public/../admin/x\r\n");
    assert_eq!(r.status, 403, "the overridden path is normalized: {r:?}");
    let r = s.get("/ovr/public", "X-Original-URL: /elsewhere\r\n");
    assert_eq!(r.status, 400, "an override may not leave the route: {r:?}");
    let r = s.get("/ovr/public", "X-Original-URL: /ovr/./docs//a\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let seen = s.app.seen();
    let passed: Vec<_> = seen
        .iter()
        .map(|s| {
            (
                s.target.as_str(),
                s.header("x-http-method-override"),
                s.header("x-original-url"),
            )
        })
        .collect();
    assert_eq!(
        passed,
        [
            ("/ovr/customers/7", Some("PATCH"), None),
            ("/ovr/public", None, Some("/ovr/docs/a")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_in_another_case_are_refused() {
    let s = setup().await;
    for method in ["delete", "Delete", "dELETE", "get", "Post", "pUT"] {
        let r = s.gw.raw(&format!(
            "{method} /customers/7 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(r.status, 400, "{method}: {r:?}");
    }
    let r =
        s.gw.raw("DELETE /customers/7 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 403);
    assert!(s.app.seen().is_empty(), "{:?}", s.app.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_encoded_paths_never_reach_the_upstream() {
    let s = setup().await;
    for path in [
        "/public/%25%32%65%25%32%65/admin/x",
        "/public/%25%32%45%25%32%45/admin/x",
        "/public/%25%32e%25%32e/admin/x",
        "/public/%252e%252e/admin/x",
        "/public/%25%32%66admin/x",
        "/public/%2525%32%65/admin",
        "/public/%25252e%25252e/admin/x",
        "/public/%u002e%u002e/admin/x",
        "/public/%EF%BC%8E%EF%BC%8E/admin/x",
        "/public/%E2%80%A5/admin/x",
        "/public%EF%BC%8Fadmin/x",
    ] {
        let r = s.get(path, "");
        assert_eq!(r.status, 400, "{path}: {r:?}");
    }
    assert!(s.app.seen().is_empty(), "{:?}", s.app.targets());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semicolon_tricks_on_an_opted_in_route_are_judged_like_tomcat_reads_them() {
    let s = setup().await;
    for path in [
        "/legacy/public/..;/admin/x",
        "/legacy/public/..;jsessionid=1/admin/x",
        "/legacy/admin;/x",
        "/legacy/admin;jsessionid=abc/x",
        "/legacy/admin;a=1;b=2",
        "/legacy/./admin;x/",
        "/legacy/public/.;/../admin/x",
        "/legacy\\admin/x",
        "/legacy/public\\..\\admin/x",
        "/legacy/admin%5Cx",
        "/legacy/admin%2Fx",
        "/legacy/public%2F..%2Fadmin/x",
        "/legacy/public/%2E%2E%5Cadmin",
        "/legacy/;/admin/x",
    ] {
        let r = s.get(path, "");
        assert!(
            r.status == 403 || r.status == 400,
            "{path} got through: {r:?}"
        );
    }
    assert!(s.app.seen().is_empty(), "{:?}", s.app.targets());
    // Parameters stay with their segment; an encoded `;` never becomes a live one.
    for (path, want) in [
        ("/legacy/docs;v=1/a", "/legacy/docs;v=1/a"),
        ("/legacy/docs%3Bv=1/a", "/legacy/docs%3Bv=1/a"),
        ("/legacy/docs%3bv%3d1/a", "/legacy/docs%3Bv=1/a"),
        ("/legacy/a/..;x/b", "/legacy/b"),
    ] {
        let r = s.get(path, "");
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(s.app.targets().last().map(String::as_str), Some(want));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_sub_delimiters_have_one_canonical_form() {
    let s = setup().await;
    for path in [
        "/odata/%24batch",
        "/odata/%40x",
        "/odata/%21x",
        "/odata/$batch",
    ] {
        let r = s.get(path, "");
        assert_eq!(r.status, 403, "{path}: {r:?}");
    }
    let r = s.get("/odata/%24metadata%28x%29%2C%3D%2B%2A%27%3A%26", "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s.app.targets(), ["/odata/$metadata(x),=+*':&"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_retry_carries_the_judged_target_and_identity() {
    let s = setup_with(Mode::DropSecond).await;
    let token = s.token("alice");
    let auth = format!("Authorization: Bearer {token}\r\n");
    // One request to warm the pool; the next one meets the dead pooled connection, and
    // Pingora retries it on a new one with a fresh copy of the client's header.
    for (i, path) in [
        "/secure/warm",
        "/secure/public/../docs/./a",
        "/secure/docs//b?x=1",
    ]
    .into_iter()
    .enumerate()
    {
        let mut stream = TcpStream::connect(("127.0.0.1", s.gw.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{FORGED}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut data = Vec::new();
        let _ = stream.read_to_end(&mut data);
        let r = parse_response(&data).expect("an answer");
        assert_eq!(r.status, 200, "request {i} {path}: {r:?}\n{}", s.gw.log());
    }
    let seen = s.app.seen();
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(
        targets,
        ["/secure/warm", "/secure/docs/a", "/secure/docs/b?x=1"],
        "{}",
        s.gw.log()
    );
    for request in &seen {
        assert_eq!(request.all("x-auth-request-user"), ["alice"], "{request:?}");
        assert_eq!(request.all("x-gatehouse-assertion").len(), 1);
        assert!(forged_names_left(request).is_empty(), "{request:?}");
        assert_eq!(request.header("authorization"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_and_kept_alive_requests_are_each_judged() {
    let s = setup().await;
    // Pipelined in one write: Pingora answers the first and closes the connection; the
    // rest are never served (the client retries them on a new connection, judged there).
    let statuses = s.statuses(
        b"GET /public/a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\
GET /admin/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX_Auth_Request_User: mallory\r\n\r\n\
GET /public/b HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(statuses.first(), Some(&200), "{statuses:?}");
    assert!(!statuses.iter().skip(1).any(|&s| s == 200), "{statuses:?}");
    // One request after another on a kept-alive connection: each is judged on its own.
    let mut stream = TcpStream::connect(("127.0.0.1", s.gw.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answers = Vec::new();
    for request in [
        "GET /public/c HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "GET /admin/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX_Auth_Request_User: mallory\r\n\r\n",
    ] {
        stream.write_all(request.as_bytes()).unwrap();
        let mut data = Vec::new();
        let mut chunk = [0u8; 4096];
        while parse_response(&data).is_none_or(|r| {
            r.header("content-length")
                .and_then(|l| l.parse::<usize>().ok())
                .is_some_and(|l| r.body.len() < l)
        }) {
            let n = stream.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                break;
            }
            data.extend_from_slice(&chunk[..n]);
        }
        answers.push(parse_response(&data).map_or(0, |r| r.status));
    }
    assert_eq!(answers, [200, 403]);
    let targets = s.app.targets();
    assert_eq!(targets, ["/public/a", "/public/c"], "{targets:?}");
    for request in s.app.seen() {
        assert!(forged_names_left(&request).is_empty(), "{request:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_requests_never_reach_the_upstream() {
    let s = setup().await;
    let smuggled = "GET /admin/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let cases: Vec<String> = vec![
        // CL.TE and TE.CL
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}", 5 + smuggled.len()),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len()),
        // TE spellings
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding:  chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer_Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /public HTTP/1.0\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        // Content-Length spellings
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4, 5\r\n\r\nabcd{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: +4\r\n\r\nabcd{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0x4\r\n\r\nabcd{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\nabcd{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nContent_Length: 4\r\n\r\nabcd{smuggled}"),
        // chunk trickery
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=\"x\r\nabcd\r\n0\r\n\r\n{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n4\nabcd\n0\n\n{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff1\r\nabcd\r\n0\r\n\r\n{smuggled}"),
        // bare LF and other line trickery
        format!("GET /public HTTP/1.1\nHost: 127.0.0.1\n\n{smuggled}"),
        format!("GET /public HTTP/1.1\r\nHost: 127.0.0.1\r\nX: a\rGET /admin/x HTTP/1.1\r\n\r\n"),
        format!("GET /public HTTP/1.1\r\n Host: 127.0.0.1\r\n\r\n{smuggled}"),
        format!("GET /public HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil\r\n\r\n{smuggled}"),
        format!("GET http://127.0.0.1/public HTTP/1.1\r\nHost: evil.example\r\n\r\n{smuggled}"),
        format!("GET /public HTTP/1.1 x\r\nHost: 127.0.0.1\r\n\r\n{smuggled}"),
        format!("GET  /public HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n{smuggled}"),
        format!("GET /public\0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n{smuggled}"),
    ];
    for case in &cases {
        s.app.clear();
        let answer = s.raw(case.as_bytes());
        let seen = s.app.seen();
        let bad: Vec<&Seen> = seen
            .iter()
            .filter(|r| r.target.contains("admin") || r.method == "INVALID")
            .collect();
        assert!(
            bad.is_empty(),
            "{case:?}\nreached the upstream: {bad:?}\nanswer: {}",
            String::from_utf8_lossy(&answer)
        );
        // Whatever was answered for the smuggled request was judged (403), never proxied.
        let text = String::from_utf8_lossy(&answer);
        assert!(!text.contains("\"target\":\"/admin"), "{case:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_other_than_websocket_never_open_a_tunnel() {
    let s = setup_with(Mode::AcceptUpgrades).await;
    for upgrade in ["h2c", "H2C", "websocket2", "TLS/1.2", "h2c, websocket"] {
        s.app.clear();
        let answer = s.raw(
            format!("GET /public HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: {upgrade}\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let text = String::from_utf8_lossy(&answer);
        assert!(!text.starts_with("HTTP/1.1 101"), "{upgrade}: {text}");
        let seen = s.app.seen();
        assert!(
            !seen.iter().any(|r| r.target.contains("admin")),
            "{upgrade}: the tunnel carried an unjudged request: {seen:?}"
        );
        assert!(
            seen.iter()
                .all(|r| r.header("upgrade").is_none() && r.header("http2-settings").is_none()),
            "{upgrade}: {seen:?}"
        );
    }
    // A WebSocket upgrade still passes (the route's auth and policy judged it).
    s.app.clear();
    let answer = s.raw(b"GET /public/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_header_cannot_remove_the_gateways_headers() {
    let s = setup().await;
    let token = s.token("alice");
    // Headers a client names in `Connection` are its own hop's: they go before the gateway
    // adds its own, never after.
    let r = s.get(
        "/secure/x",
        &format!("Authorization: Bearer {token}\r\nConnection: keep-alive, X-Auth-Request-User, X-Gatehouse-Assertion, X-Real-IP, X-Request-Id, X-Department\r\n"),
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", s.gw.log());
    let seen = &s.app.seen()[0];
    assert_eq!(seen.all("x-auth-request-user"), ["alice"], "{seen:?}");
    assert_eq!(seen.all("x-gatehouse-assertion").len(), 1, "{seen:?}");
    assert_eq!(seen.all("x-department"), ["sales"], "{seen:?}");
    assert_eq!(seen.all("x-real-ip"), ["127.0.0.1"], "{seen:?}");
    assert_eq!(seen.all("x-request-id").len(), 1, "{seen:?}");
    assert!(
        seen.all("connection").iter().all(|v| !v.contains("x-")),
        "{seen:?}"
    );
    // Naming the forwarding headers or Host is refused outright.
    for name in ["X-Forwarded-For", "Host", "X-Forwarded-Host"] {
        let r = s.get("/public", &format!("Connection: close, {name}\r\n"));
        assert_eq!(r.status, 400, "{name}: {r:?}");
    }
    assert_eq!(s.app.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_get_the_same_hygiene() {
    let s = setup_on(Mode::Normal, "h2c = true").await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let token = s.token("alice");
    let mut request = client
        .get(s.gw.url("/secure/./docs/%2e%2e/x"))
        .header("authorization", format!("Bearer {token}"));
    for (name, value) in [
        ("x_auth_request_user", "mallory"),
        ("x-auth-request-groups", "admins"),
        ("x_gatehouse_assertion", "forged"),
        ("x-http-method-override", "DELETE"),
        ("x-original-url", "/secure/admin/x"),
        ("true-client-ip", "10.0.0.1"),
    ] {
        request = request.header(name, value);
    }
    let r = request.send().await.expect("h2c request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let seen = &s.app.seen()[0];
    assert_eq!(seen.target, "/secure/x");
    assert!(forged_names_left(seen).is_empty(), "{seen:?}");
    assert_eq!(seen.all("x-auth-request-user"), ["alice"]);
    for name in ["x-http-method-override", "x-original-url", "true-client-ip"] {
        assert_eq!(seen.header(name), None, "{name}: {seen:?}");
    }
    // A lower-case method and a twice-encoded path are refused over HTTP/2 too.
    let r = client
        .request(
            reqwest::Method::from_bytes(b"delete").unwrap(),
            s.gw.url("/customers/7"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .get(s.gw.url("/public/%25%32%65%25%32%65/admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(s.app.seen().len(), 1);
}
