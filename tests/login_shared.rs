//! Two gateway processes sharing one real Redis: log in on A, use B; log out on B, A refuses
//! the old cookie. Redis down: session routes answer 503 and `/readyz` says not ready (no
//! silent downgrade); with `fallback = "memory"` logins keep working and say so.

mod common;

use common::browser::Browser;
use common::login::{login_config, logout, metric, provider_for};
use common::redis::Redis;
use common::*;

const SECRET: &str = "secret = \"shared-secret-of-both-gateways-0123456789\"";

/// One provider, one upstream, a real Redis and two gateway processes sharing it.
struct Shared {
    redis: Redis,
    idp: common::idp::OidcProvider,
    app: TestServer,
    a: Gateway,
    b: Gateway,
}

async fn two_gateways(access_ttl: u64) -> Shared {
    let redis = Redis::start();
    let (port_a, port_b) = (free_port(), free_port());
    let idp = provider_for(&[port_a, port_b], access_ttl);
    let app = TestServer::echo("app").await;
    let session = format!(
        "store = \"redis\"\nredis_url = \"{}\"\n{SECRET}",
        redis.url()
    );
    let config = login_config(&idp, &app, &session);
    let a = Gateway::start_on(tempfile::tempdir().unwrap(), &config, port_a);
    let b = Gateway::start_on(tempfile::tempdir().unwrap(), &config, port_b);
    Shared {
        redis,
        idp,
        app,
        a,
        b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_shared_and_revoked_across_instances() {
    let Shared {
        mut redis,
        idp: _idp,
        app: _app,
        a,
        b,
    } = two_gateways(600).await;

    let browser = Browser::new();
    let (page, visited) = browser.login(&a.url("/from-a"), "alice").await;
    assert_eq!(page.status, 200, "{visited:?} {}\n{}", page.body, a.log());
    let cookie = browser.cookie_header(&a.url("/"));
    assert!(cookie.contains("gatehouse="));

    // The same cookie on the other instance: the session is in Redis, tokens decrypt there.
    let on_b = b.get(
        "/from-b",
        &format!("Cookie: {cookie}\r\nAccept: application/json\r\n"),
    );
    assert_eq!(on_b.status, 200, "{}\n{}", on_b.body, b.log());
    assert_eq!(on_b.echoed().header("x-auth-request-user"), Some("alice"));
    assert!(on_b
        .echoed()
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer ")));

    // Log out on B: A refuses the old cookie at once.
    let out = logout(&b, &cookie, "");
    assert_eq!(out.status, 303, "{}", out.body);
    let on_a = a.get(
        "/from-a",
        &format!("Cookie: {cookie}\r\nAccept: application/json\r\n"),
    );
    assert_eq!(on_a.status, 401, "{}", on_a.body);

    // A second login, then Redis goes away: a clear 503 and an unready instance.
    let browser = Browser::new();
    let (page, _) = browser.login(&a.url("/again"), "bob").await;
    assert_eq!(page.status, 200);
    let cookie = browser.cookie_header(&a.url("/"));
    redis.stop();
    let down = a.get(
        "/again",
        &format!("Cookie: {cookie}\r\nAccept: application/json\r\n"),
    );
    assert_eq!(down.status, 503, "{}", down.body);
    let ready = a.admin("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("\"session_store\""), "{}", ready.body);
    // Redis back (empty: it keeps nothing on disk): the instance is ready again and the
    // lost session simply means a new login.
    redis.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while a.admin("/readyz").status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready again: {}",
            a.admin("/readyz").body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = a.get(
        "/again",
        &format!("Cookie: {cookie}\r\nAccept: application/json\r\n"),
    );
    assert_eq!(after.status, 401, "{}", after.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_fallback_keeps_logins_working_while_redis_is_down() {
    let mut redis = Redis::start();
    let port = free_port();
    let idp = provider_for(&[port], 600);
    let app = TestServer::echo("app").await;
    let session = format!(
        "store = \"redis\"\nredis_url = \"{}\"\nfallback = \"memory\"\ntimeout = \"200ms\"\n{SECRET}",
        redis.url()
    );
    let gw = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        &login_config(&idp, &app, &session),
        port,
    );
    redis.stop();
    let browser = Browser::new();
    let (page, visited) = browser.login(&gw.url("/x"), "alice").await;
    assert_eq!(page.status, 200, "{visited:?} {}\n{}", page.body, gw.log());
    assert_eq!(
        page.echoed_header("x-auth-request-user").as_deref(),
        Some("alice")
    );
    let ready = gw.admin("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(
        ready.body.contains("memory fallback active"),
        "{}",
        ready.body
    );
    assert_eq!(metric(&gw, "gatehouse_session_store_degraded"), 1.0);
    assert!(gw
        .log()
        .contains("Redis unreachable; logins now kept in this instance's memory"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_per_session_across_instances() {
    let Shared {
        redis: _redis,
        idp: _idp,
        app: _app,
        a,
        b,
    } = two_gateways(5).await;
    let browser = Browser::new();
    let (page, _) = browser.login(&a.url("/"), "alice").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let cookie = browser.cookie_header(&a.url("/"));
    // Past the refresh point: requests on both instances at once share one refresh (a
    // short Redis lock; the other instance waits for the refreshed session).
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    let mut handles = Vec::new();
    for i in 0..8 {
        let url = if i % 2 == 0 { a.url("/x") } else { b.url("/x") };
        let cookie = cookie.clone();
        handles.push(tokio::spawn(async move {
            reqwest::Client::new()
                .get(url)
                .header("cookie", cookie)
                .header("accept", "application/json")
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), 200, "{}\n{}", a.log(), b.log());
    }
    let line = "gatehouse_token_refresh_total{idp=\"test\",result=\"success\"}";
    assert_eq!(metric(&a, line) + metric(&b, line), 1.0);
    let failures = "gatehouse_token_refresh_total{idp=\"test\",result=\"failure\"}";
    assert_eq!(metric(&a, failures) + metric(&b, failures), 0.0);
}
