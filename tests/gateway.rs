//! The core gateway end to end: the real binary in front of real upstream servers, asserting
//! on what crossed the wire on both sides.

mod common;

use common::paths::PATH_CASES;
use common::*;

fn one_route_config(upstream: &str, server_extra: &str, route_extra: &str) -> String {
    format!(
        "{}{upstream}\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\nauth = [\"none\"]\n{route_extra}\n",
        base_config(server_extra)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_longest_prefix() {
    let web = EchoServer::echo("web").await;
    let api = EchoServer::echo("api").await;
    let admin = EchoServer::echo("admin-host").await;
    let config = format!(
        "{}{}{}{}
[[route]]
name = \"web\"
path = \"/\"
upstream = \"web\"
auth = [\"none\"]

[[route]]
name = \"api\"
path = \"/api/\"
upstream = \"api\"
auth = [\"none\"]

[[route]]
name = \"admin-host\"
host = \"admin.example.com\"
path = \"/\"
upstream = \"adminup\"
auth = [\"none\"]
",
        base_config(""),
        upstream_block("web", &[web.addr], ""),
        upstream_block("api", &[api.addr], ""),
        upstream_block("adminup", &[admin.addr], ""),
    );
    let gw = Gateway::start(&config);
    assert_eq!(gw.get("/", "").echoed().server, "web");
    assert_eq!(gw.get("/apix", "").echoed().server, "web");
    assert_eq!(gw.get("/api", "").echoed().server, "api");
    let e = gw.get("/api/v1/users?id=7", "").echoed();
    assert_eq!(
        (e.server.as_str(), e.target.as_str()),
        ("api", "/api/v1/users?id=7")
    );
    let host = |h: &str, path: &str| {
        gw.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"
        ))
    };
    assert_eq!(
        host("admin.example.com", "/api/x").echoed().server,
        "admin-host"
    );
    assert_eq!(
        host("ADMIN.example.com:8443", "/").echoed().server,
        "admin-host"
    );
    assert_eq!(host("other.example.com", "/api/x").echoed().server, "api");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_a_generic_404_with_request_id() {
    let api = EchoServer::echo("api").await;
    let config = format!(
        "{}{}[[route]]\nname = \"api\"\npath = \"/api\"\nupstream = \"api\"\nauth = [\"none\"]\n",
        base_config(""),
        upstream_block("api", &[api.addr], "")
    );
    let gw = Gateway::start(&config);
    let r = gw.get("/nothing/here", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let id = r.header("x-request-id").expect("request id").to_string();
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["request_id"], id.as_str());

    let html = gw.get("/nothing", "Accept: text/html,application/xhtml+xml\r\n");
    assert_eq!(html.status, 404);
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(html.header("content-security-policy").is_some());
    assert!(html.body.contains(html.header("x-request-id").unwrap()));
    assert!(html.body.contains("404 Not Found"));
    assert_eq!(api.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_prefix_is_never_proxied() {
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&one_route_config(
        &upstream_block("app", &[app.addr], ""),
        "",
        "",
    ));
    for path in [
        "/_gatehouse/anything",
        "/_gatehouse",
        "/x/../_gatehouse/login",
        "/%5fgatehouse/userinfo",
    ] {
        assert_eq!(gw.get(path, "").status, 404, "{path}");
    }
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_failover_when_a_server_dies() {
    let a = EchoServer::echo("a").await;
    let b = EchoServer::echo("b").await;
    let gw = Gateway::start(&one_route_config(
        &upstream_block("app", &[a.addr, b.addr], ""),
        "",
        "",
    ));
    let mut seen = std::collections::HashMap::new();
    for _ in 0..10 {
        *seen.entry(gw.get("/", "").echoed().server).or_insert(0) += 1;
    }
    assert_eq!(seen.get("a"), Some(&5), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&5), "{seen:?}");

    // Killed (its connections closed too): every request still succeeds, at once (connect
    // failure → retry on a) and after the health check has marked b down.
    b.kill().await;
    for i in 0..10 {
        let r = gw.get("/", "");
        assert_eq!(r.status, 200, "request {i} after b died: {r:?}");
        assert_eq!(r.echoed().server, "a");
    }
    let metrics = gw.admin("/metrics").body;
    assert!(
        metrics
            .contains("gatehouse_upstream_errors_total{kind=\"connect_refused\",upstream=\"app\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let slow = EchoServer::echo("slow").await;
    let config = format!(
        "{}{}{}
[[route]]
name = \"dead\"
path = \"/dead\"
upstream = \"dead\"
auth = [\"none\"]

[[route]]
name = \"slow\"
path = \"/slow\"
upstream = \"slow\"
auth = [\"none\"]
",
        base_config(""),
        upstream_block("dead", &[dead], ""),
        upstream_block("slow", &[slow.addr], "read_timeout = \"1s\""),
    );
    let gw = Gateway::start(&config);
    let r = gw.get("/dead/x", "");
    assert_eq!(r.status, 502, "{r:?}");
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["error"], "bad_gateway");
    assert!(
        !r.body.contains("127.0.0.1"),
        "no internals in the body: {}",
        r.body
    );
    let r = gw.get("/slow", "");
    assert_eq!(r.status, 504, "{r:?}");
    let metrics = gw.admin("/metrics").body;
    assert!(
        metrics.contains("gatehouse_upstream_errors_total{kind=\"timeout\",upstream=\"slow\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_requests_total{route=\"dead\",status=\"502\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_requests_total{route=\"slow\",status=\"504\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_never_reach_the_upstream() {
    let app = EchoServer::echo("app").await;
    let mut config = one_route_config(&upstream_block("app", &[app.addr], ""), "", "");
    config.push_str("\n[headers]\nclaims = { \"X-Department\" = \"department\" }\n");
    let gw = Gateway::start(&config);
    let e = gw
        .get(
            "/",
            "X-Auth-Request-User: admin\r\nx-auth-request-email: boss@example.com\r\nX-AUTH-REQUEST-GROUPS: admins\r\nX-Auth-Request-Preferred-Username: root\r\nX-Gatehouse-Assertion: forged.jwt.value\r\nX-Department: finance\r\nX-Auth-Request-User: twice\r\nX-Harmless: kept\r\n",
        )
        .echoed();
    for (name, _) in &e.headers {
        assert!(
            !name.starts_with("x-auth-request-"),
            "{name} reached the upstream"
        );
        assert!(
            !name.starts_with("x-gatehouse-"),
            "{name} reached the upstream"
        );
        assert_ne!(name, "x-department");
    }
    assert_eq!(e.header("x-harmless"), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_replaced_unless_the_peer_is_trusted() {
    let app = EchoServer::echo("app").await;
    let forged = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Request-Id: chosen-by-client\r\n";

    let untrusted = Gateway::start(&one_route_config(
        &upstream_block("app", &[app.addr], ""),
        "",
        "",
    ));
    let e = untrusted.get("/", forged).echoed();
    assert_eq!(e.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(e.header("x-forwarded-proto"), Some("http"));
    assert_eq!(e.header("x-forwarded-host"), Some("127.0.0.1"));
    assert_eq!(e.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(e.header("forwarded"), None);
    let id = e.header("x-request-id").unwrap();
    assert_ne!(id, "chosen-by-client");
    assert_eq!(id.len(), 32);

    let trusted = Gateway::start(&one_route_config(
        &upstream_block("app", &[app.addr], ""),
        "trusted_proxies = [\"127.0.0.0/8\"]",
        "",
    ));
    let e = trusted.get("/", forged).echoed();
    assert_eq!(e.header("x-forwarded-for"), Some("6.6.6.6, 127.0.0.1"));
    assert_eq!(e.header("x-forwarded-proto"), Some("https"));
    assert_eq!(e.header("x-forwarded-host"), Some("evil.example"));
    assert_eq!(e.header("x-real-ip"), Some("6.6.6.6"));
    assert_eq!(e.header("x-request-id"), Some("chosen-by-client"));
    let r = trusted.get("/", "X-Request-Id: chosen-by-client\r\n");
    assert_eq!(r.header("x-request-id"), Some("chosen-by-client"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_confusion_is_normalized_or_refused() {
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&one_route_config(
        &upstream_block("app", &[app.addr], ""),
        "",
        "",
    ));
    for (target, status, upstream_path) in PATH_CASES {
        let r = gw.raw(&format!(
            "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(r.status, *status, "{target}: {r:?}");
        if *status == 200 {
            assert_eq!(r.echoed().target, *upstream_path, "{target}");
        } else {
            assert!(r.header("x-request-id").is_some(), "{target}");
        }
    }
    let hits = app.hits.load(std::sync::atomic::Ordering::SeqCst);
    let proxied = PATH_CASES.iter().filter(|c| c.1 == 200).count();
    assert_eq!(hits, proxied, "a refused path reached the upstream");
    let metrics = gw.admin("/metrics").body;
    assert!(
        metrics.contains("gatehouse_rejected_requests_total{reason=\"encoded_slash\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_authority_decides_the_host() {
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&one_route_config(
        &upstream_block("app", &[app.addr], ""),
        "allowed_hosts = [\"127.0.0.1\"]",
        "",
    ));
    // A target authority that disagrees with the Host header is ambiguous: Pingora refuses
    // it outright, so a client cannot pass the host check with one and reach another.
    for (target, host) in [
        ("http://evil.example/", "127.0.0.1"),
        ("http://127.0.0.1/x", "evil.example"),
    ] {
        let r = gw.raw(&format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(r.status, 400, "{target} with Host {host}: {r:?}");
    }
    // Agreeing ones are served; the authority decides the host check.
    let e =
        gw.raw("GET http://127.0.0.1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(e.echoed().target, "/x");
    let r = gw.raw(
        "GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 421);
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_opt_out_allows_encoded_slash_on_that_route_only() {
    let app = EchoServer::echo("app").await;
    let config = format!(
        "{}{}
[[route]]
name = \"files\"
path = \"/files\"
upstream = \"app\"
auth = [\"none\"]
path_checks = {{ allow_encoded_slash = true }}

[[route]]
name = \"root\"
path = \"/\"
upstream = \"app\"
auth = [\"none\"]
",
        base_config(""),
        upstream_block("app", &[app.addr], "")
    );
    let gw = Gateway::start(&config);
    assert_eq!(
        gw.get("/files/a%2fb.txt", "").echoed().target,
        "/files/a%2Fb.txt"
    );
    assert_eq!(gw.get("/other/a%2fb.txt", "").status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_outside_allowed_hosts_are_refused() {
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&one_route_config(
        &upstream_block("app", &[app.addr], ""),
        "allowed_hosts = [\"app.example.com\"]",
        "",
    ));
    let req = |host: &str| {
        gw.raw(&format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ))
    };
    assert_eq!(req("app.example.com").status, 200);
    assert_eq!(req("APP.example.com:8080").status, 200);
    assert_eq!(req("evil.example.com").status, 421);
    assert_eq!(req("app.example.com.evil.com").status, 421);
    assert_eq!(req("app.example.com@evil.com").status, 400);
    let r = gw.raw("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 400, "no Host at all: {r:?}");
    assert_eq!(app.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered_by_the_gateway() {
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&one_route_config(
        &upstream_block("app", &[app.addr], ""),
        "",
        "cors = { allowed_origins = [\"https://app.example.com\"], allowed_methods = [\"GET\", \"PUT\"], allowed_headers = [\"content-type\"], allow_credentials = true, max_age = \"5m\" }",
    ));
    let preflight = |origin: &str, method: &str| {
        gw.raw(&format!(
            "OPTIONS /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: {method}\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n"
        ))
    };
    let ok = preflight("https://app.example.com", "PUT");
    assert_eq!(ok.status, 204, "{ok:?}");
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(ok.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(
        ok.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(ok.header("access-control-max-age"), Some("300"));
    assert_eq!(preflight("https://evil.example.com", "PUT").status, 403);
    assert_eq!(preflight("https://app.example.com", "DELETE").status, 403);
    assert_eq!(
        app.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "preflights are not proxied"
    );

    let actual = gw.get("/api/x", "Origin: https://app.example.com\r\n");
    assert_eq!(actual.status, 200);
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let foreign = gw.get("/api/x", "Origin: https://evil.example.com\r\n");
    assert_eq!(foreign.header("access-control-allow-origin"), None);
}

/// Behind a load balancer that terminates TLS (a trusted proxy saying
/// `X-Forwarded-Proto: https`), browsers still get HSTS, on proxied answers and on the
/// gateway's own; a client that is not a trusted proxy cannot ask for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_behind_a_trusted_tls_terminating_proxy() {
    let app = EchoServer::echo("app").await;
    let https = "X-Forwarded-Proto: https\r\n";
    let hsts = |r: &Response| r.header("strict-transport-security").map(str::to_string);
    let expected = Some("max-age=31536000; includeSubDomains".to_string());

    let direct = Gateway::start(&one_route_config(
        &upstream_block("app", &[app.addr], ""),
        "",
        "",
    ));
    assert_eq!(
        hsts(&direct.get("/", https)),
        None,
        "an untrusted peer's word"
    );

    let behind = Gateway::start(&one_route_config(
        &upstream_block("app", &[app.addr], ""),
        "trusted_proxies = [\"127.0.0.0/8\"]",
        "",
    ));
    assert_eq!(hsts(&behind.get("/", https)), expected, "proxied answer");
    assert_eq!(
        hsts(&behind.get("/", "X-Forwarded-Proto: HTTPS, http\r\n")),
        expected,
        "the client-side value is the first"
    );
    let own = behind.get("/%2e%2e%2f", https);
    assert_eq!(own.status, 400);
    assert_eq!(hsts(&own), expected, "the gateway's own answer");
    assert_eq!(hsts(&behind.get("/", "X-Forwarded-Proto: http\r\n")), None);
    assert_eq!(hsts(&behind.get("/", "")), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_request_id_and_security_headers() {
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&one_route_config(
        &upstream_block("app", &[app.addr], ""),
        "",
        "",
    ));
    let r = gw.get("/", "");
    let e = r.echoed();
    assert_eq!(r.header("x-request-id"), e.header("x-request-id"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        r.header("referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    assert_eq!(
        r.header("strict-transport-security"),
        None,
        "no HSTS on plain http"
    );
    assert_eq!(r.header("x-upstream"), Some("app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_gateway() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    // A WebSocket upstream that speaks first, right after its 101: the early-data case.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let _ = ws.send(Message::text("hello from upstream")).await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    let gw = Gateway::start(&one_route_config(
        &upstream_block("app", &[ws_addr], ""),
        "",
        "",
    ));
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", gw.port))
        .await
        .expect("websocket through the gateway");
    assert_eq!(resp.status(), 101);
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .unwrap();
    assert_eq!(
        first.unwrap().unwrap(),
        Message::text("hello from upstream")
    );
    for i in 0..5 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let echo = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .unwrap();
        assert_eq!(echo.unwrap().unwrap(), Message::text(format!("ping {i}")));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_http1_and_http2_with_the_dev_certificate() {
    let app = EchoServer::echo("app").await;
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
    let tls_port = free_port();
    let config = one_route_config(
        &upstream_block("app", &[app.addr], ""),
        &format!("[server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\ncert = \"certs/server.crt\"\nkey = \"certs/server.key\"\n"),
        "",
    );
    let gw = Gateway::start_in(dir, &config);
    let ca = std::fs::read(certs.join("ca.crt")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let url = format!("https://localhost:{tls_port}/hello");
    let r = client.get(&url).send().await.expect("https request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN should pick h2");
    assert!(r.headers().get("strict-transport-security").is_some());
    let e = Echoed::parse(&r.text().await.unwrap());
    assert_eq!(e.target, "/hello");
    assert_eq!(e.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        e.header("host"),
        Some(format!("localhost:{tls_port}").as_str())
    );

    let h1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_a_valid_config_and_keeps_the_old_one_on_error() {
    let a = EchoServer::echo("a").await;
    let b = EchoServer::echo("b").await;
    let first = one_route_config(&upstream_block("app", &[a.addr], ""), "", "");
    let gw = Gateway::start(&first);
    assert_eq!(gw.get("/", "").echoed().server, "a");

    gw.write_config(&one_route_config(
        &upstream_block("app", &[b.addr], ""),
        "",
        "",
    ));
    gw.signal("HUP");
    let mut swapped = false;
    for _ in 0..100 {
        if gw.get("/", "").echoed().server == "b" {
            swapped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(swapped, "valid config was not applied:\n{}", gw.log());

    gw.write_config("[server]\nlisten = [\"127.0.0.1:{port}\"]\nbogus_key = 1\n");
    gw.signal("HUP");
    let mut counted = false;
    for _ in 0..100 {
        if gw
            .admin("/metrics")
            .body
            .contains("gatehouse_config_reloads_total{result=\"failure\"} 1")
        {
            counted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(counted, "failed reload not counted:\n{}", gw.log());
    for _ in 0..5 {
        assert_eq!(
            gw.get("/", "").echoed().server,
            "b",
            "old config must keep serving"
        );
    }
    let metrics = gw.admin("/metrics").body;
    assert!(metrics.contains("gatehouse_config_reloads_total{result=\"success\"} 1"));
    assert!(
        gw.log().contains("bogus_key"),
        "the refusal is logged with its reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_metrics_health_ready_and_redacted_config() {
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&one_route_config(
        &upstream_block("app", &[app.addr], ""),
        "",
        "",
    ));
    for _ in 0..3 {
        gw.get("/x", "");
    }
    gw.get("/%2f", "");
    assert_eq!(gw.admin("/healthz").status, 200);
    let ready = gw.admin("/readyz");
    assert_eq!(ready.status, 200);
    let ready: serde_json::Value = serde_json::from_str(&ready.body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["checks"]["upstreams"]["app"]["servers"], 1);

    // The supervisor publishes upstream health after its first round of checks.
    let mut metrics = gw.admin("/metrics");
    for _ in 0..100 {
        if metrics
            .body
            .contains("gatehouse_upstream_healthy_servers{upstream=\"app\"} 1")
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        metrics = gw.admin("/metrics");
    }
    assert_eq!(metrics.status, 200);
    let samples = parse_prometheus(&metrics.body);
    let get = |name: &str| samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(
        get("gatehouse_requests_total{route=\"app\",status=\"200\"}"),
        Some(3.0)
    );
    assert_eq!(
        get("gatehouse_request_duration_seconds_count{route=\"app\"}"),
        Some(3.0)
    );
    assert_eq!(
        get("gatehouse_rejected_requests_total{reason=\"encoded_slash\"}"),
        Some(1.0)
    );
    assert_eq!(
        get(&format!(
            "gatehouse_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        Some(1.0)
    );
    assert_eq!(
        get("gatehouse_config_reloads_total{result=\"failure\"}"),
        Some(0.0)
    );
    assert_eq!(
        get("gatehouse_upstream_healthy_servers{upstream=\"app\"}"),
        Some(1.0)
    );

    let config = gw.admin("/config");
    assert_eq!(config.status, 200);
    let config: serde_json::Value = serde_json::from_str(&config.body).unwrap();
    assert_eq!(config["route"][0]["name"], "app");
    assert_eq!(config["server"]["reserved_prefix"], "/_gatehouse");
    assert_eq!(gw.admin("/nope").status, 404);
    // The admin endpoints are not reachable through the public listener.
    assert_ne!(gw.get("/metrics", "").body, metrics.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish() {
    let app = EchoServer::echo("app").await;
    let mut config = one_route_config(&upstream_block("app", &[app.addr], ""), "", "");
    config = config.replace("shutdown_timeout = \"2s\"", "shutdown_timeout = \"10s\"");
    let gw = Gateway::start(&config);
    let port = gw.port;
    let in_flight = std::thread::spawn(move || {
        raw_request(
            port,
            b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
    });
    // wait until the upstream has the request, then ask the gateway to stop
    for _ in 0..100 {
        if app.hits.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    gw.signal("TERM");
    let r = in_flight.join().unwrap().expect("an answer");
    assert_eq!(
        r.status, 200,
        "the in-flight request completes during the drain"
    );
}

/// `name{labels} value` lines of the Prometheus text format.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_the_server_and_presents_a_client_certificate() {
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
    // A real TLS server that demands a client certificate signed by the dev CA.
    let port = free_port();
    let mut server = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-Verify",
            "1",
            "-verify_return_error",
            "-accept",
        ])
        .arg(port.to_string())
        .arg("-cert")
        .arg(certs.join("server.crt"))
        .arg("-key")
        .arg(certs.join("server.key"))
        .arg("-CAfile")
        .arg(certs.join("ca.crt"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let tls = "tls = true\nsni = \"localhost\"\nca = \"certs/ca.crt\"";
    let config = format!(
        "{}{}{}{}
[[route]]
name = \"mtls\"
path = \"/mtls\"
upstream = \"mtls\"
auth = [\"none\"]

[[route]]
name = \"nocert\"
path = \"/nocert\"
upstream = \"nocert\"
auth = [\"none\"]

[[route]]
name = \"wrongname\"
path = \"/wrongname\"
upstream = \"wrongname\"
auth = [\"none\"]
",
        base_config(""),
        upstream_block("mtls", &[addr], &format!("{tls}\nclient_cert = \"certs/client.crt\"\nclient_key = \"certs/client.key\"")),
        upstream_block("nocert", &[addr], tls),
        upstream_block(
            "wrongname",
            &[addr],
            "tls = true\nsni = \"not-the-server.example\"\nca = \"certs/ca.crt\"\nclient_cert = \"certs/client.crt\"\nclient_key = \"certs/client.key\""
        ),
    );
    let gw = Gateway::start_in(dir, &config);
    let ok = gw.get("/mtls", "");
    assert_eq!(ok.status, 200, "{ok:?}\n{}", gw.log());
    assert_eq!(
        gw.get("/nocert", "").status,
        502,
        "no client certificate, no answer"
    );
    assert_eq!(
        gw.get("/wrongname", "").status,
        502,
        "a certificate for another name is refused"
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_on_the_plain_listener_when_enabled() {
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&one_route_config(
        &upstream_block("app", &[app.addr], ""),
        "h2c = true",
        "",
    ));
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client
        .get(gw.url("/h2/x"))
        .send()
        .await
        .expect("h2c request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let e = Echoed::parse(&r.text().await.unwrap());
    assert_eq!(e.target, "/h2/x");
    assert_eq!(
        e.header("host"),
        Some(format!("127.0.0.1:{}", gw.port).as_str())
    );
    // HTTP/1.1 still works on the same listener.
    assert_eq!(gw.get("/", "").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_upgrade_hands_the_listeners_to_a_new_process() {
    let app = EchoServer::echo("app").await;
    let mut old = Gateway::start(&one_route_config(
        &upstream_block("app", &[app.addr], ""),
        "",
        "",
    ));
    assert_eq!(old.get("/", "").status, 200);
    let log = std::fs::File::create(old.path().join("new.log")).unwrap();
    let mut new = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "--upgrade", "-c"])
        .arg(&old.config_path)
        .arg("--upgrade-sock")
        .arg(old.path().join("upgrade.sock"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // The new process waits on the upgrade socket; the old one sends its sockets on SIGQUIT.
    std::thread::sleep(std::time::Duration::from_millis(500));
    old.signal("QUIT");
    let mut served_by_new = false;
    for _ in 0..100 {
        if let Some(r) = raw_request(
            old.port,
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        ) {
            assert_eq!(r.status, 200);
        }
        if let Ok(Some(_)) = old.child_exited() {
            served_by_new = raw_request(
                old.port,
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )
            .is_some_and(|r| r.status == 200);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = new.kill();
    let _ = new.wait();
    let new_log = std::fs::read_to_string(old.path().join("new.log")).unwrap_or_default();
    assert!(
        served_by_new,
        "the new process did not take over:\nold:\n{}\nnew:\n{new_log}",
        old.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_names_are_resolved_by_the_gateway() {
    let app = EchoServer::echo("named").await;
    let upstream = format!(
        "[upstream.app]\nservers = [\"localhost:{}\"]\nhealth_check_interval = \"1s\"\n",
        app.addr.port()
    );
    let gw = Gateway::start(&one_route_config(&upstream, "", ""));
    for _ in 0..4 {
        // localhost may also resolve to ::1, where nothing listens: a retry covers it.
        assert_eq!(gw.get("/", "").echoed().server, "named");
    }
}
