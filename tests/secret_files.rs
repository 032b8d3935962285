//! Secrets kept in files (`*_file`) and a session-secret rotation, with the real binary and the
//! real provider: a login made under secret A still works after the config moves to secret B
//! with `secret_previous` = A, and stops working once `secret_previous` is gone.

mod common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::login::{login_config, metric, provider_for};
use common::*;

const SECRET_A: &str = "rotation-secret-a-0123456789abcdef01234";
const SECRET_B: &str = "rotation-secret-b-0123456789abcdef01234";

/// The login test config with every secret in a file beside it.
fn config(idp: &common::idp::OidcProvider, app: &TestServer, session: &str) -> String {
    let text = login_config(idp, app, session);
    let inline = "client_secret = \"gatehouse-test-secret\"";
    assert!(text.contains(inline));
    text.replace(inline, "client_secret_file = \"client_secret\"")
}

/// Rewrites the config, sends SIGHUP and waits until the reload counts as the `n`th success.
async fn reload(gw: &Gateway, config: &str, n: f64) {
    gw.write_config(config);
    gw.signal("HUP");
    let success = "gatehouse_config_reloads_total{result=\"success\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(gw, success) < n {
        assert!(
            Instant::now() < deadline,
            "reload {n} not applied:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn visit(gw: &Gateway, cookie: &str) -> Response {
    gw.get(
        "/app",
        &format!("Cookie: {cookie}\r\nAccept: application/json\r\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_session_secret_with_secret_previous_logs_nobody_out() {
    let port = free_port();
    let idp = provider_for(&[port], 600);
    let app = TestServer::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    // As Kubernetes and systemd write them: one value, one trailing newline.
    for (name, value) in [
        ("client_secret", "gatehouse-test-secret"),
        ("secret_a", SECRET_A),
        ("secret_b", SECRET_B),
    ] {
        std::fs::write(dir.path().join(name), format!("{value}\n")).unwrap();
    }
    let gw = Gateway::start_on(dir, &config(&idp, &app, "secret_file = \"secret_a\""), port);

    // A login under secret A; the client secret from its file is what the provider accepted.
    let alice = Browser::new();
    let (page, visited) = alice.login(&gw.url("/app"), "alice").await;
    assert_eq!(page.status, 200, "{visited:?} {}\n{}", page.body, gw.log());
    let cookie_a = alice.cookie_header(&gw.url("/"));
    assert_eq!(visit(&gw, &cookie_a).status, 200);

    // Rotated: B seals, A still opens. The tokens decrypt (the access token goes upstream).
    reload(
        &gw,
        &config(
            &idp,
            &app,
            "secret_file = \"secret_b\"\nsecret_previous_file = \"secret_a\"",
        ),
        1.0,
    )
    .await;
    let after = visit(&gw, &cookie_a);
    assert_eq!(after.status, 200, "{}\n{}", after.body, gw.log());
    let echoed = after.echoed();
    assert_eq!(echoed.header("x-auth-request-user"), Some("alice"));
    assert!(echoed
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer ")));

    // A login after the rotation is sealed with B.
    let bob = Browser::new();
    let (page, _) = bob.login(&gw.url("/app"), "bob").await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, gw.log());
    let cookie_b = bob.cookie_header(&gw.url("/"));

    // Without secret_previous, the session sealed with A is no session; B's still is (the
    // store kept both: what ended A's is the key alone).
    reload(&gw, &config(&idp, &app, "secret_file = \"secret_b\""), 2.0).await;
    let refused = visit(&gw, &cookie_a);
    assert_eq!(refused.status, 401, "{}", refused.body);
    let kept = visit(&gw, &cookie_b);
    assert_eq!(kept.status, 200, "{}\n{}", kept.body, gw.log());
    assert_eq!(kept.echoed().header("x-auth-request-user"), Some("bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_secret_file_refuses_the_reload_and_the_old_config_keeps_serving() {
    let port = free_port();
    let idp = provider_for(&[port], 600);
    let app = TestServer::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client_secret"), "gatehouse-test-secret\n").unwrap();
    std::fs::write(dir.path().join("secret_a"), format!("{SECRET_A}\n")).unwrap();
    let gw = Gateway::start_on(dir, &config(&idp, &app, "secret_file = \"secret_a\""), port);
    let browser = Browser::new();
    let (page, _) = browser.login(&gw.url("/app"), "alice").await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, gw.log());
    let cookie = browser.cookie_header(&gw.url("/"));

    gw.write_config(&config(&idp, &app, "secret_file = \"no-such-file\""));
    gw.signal("HUP");
    let failure = "gatehouse_config_reloads_total{result=\"failure\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&gw, failure) < 1.0 {
        assert!(Instant::now() < deadline, "not refused:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The refusal names the key's line; the running config is untouched.
    let line = config(&idp, &app, "secret_file = \"no-such-file\"")
        .lines()
        .position(|l| l.starts_with("secret_file"))
        .map(|i| i + 1)
        .unwrap();
    assert!(
        gw.log()
            .contains(&format!("gateway.toml:{line}:15: cannot read secret_file ")),
        "{}",
        gw.log()
    );
    assert_eq!(visit(&gw, &cookie).status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_refreshed_after_the_rotation_is_sealed_with_the_new_secret() {
    let port = free_port();
    // Access tokens live 5 s: the session refreshes them a second before they expire.
    let idp = provider_for(&[port], 5);
    let app = TestServer::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client_secret"), "gatehouse-test-secret\n").unwrap();
    std::fs::write(dir.path().join("secret_a"), format!("{SECRET_A}\n")).unwrap();
    std::fs::write(dir.path().join("secret_b"), format!("{SECRET_B}\n")).unwrap();
    let gw = Gateway::start_on(dir, &config(&idp, &app, "secret_file = \"secret_a\""), port);
    let browser = Browser::new();
    let (page, _) = browser.login(&gw.url("/app"), "alice").await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, gw.log());
    let cookie = browser.cookie_header(&gw.url("/"));

    reload(
        &gw,
        &config(
            &idp,
            &app,
            "secret_file = \"secret_b\"\nsecret_previous_file = \"secret_a\"",
        ),
        1.0,
    )
    .await;
    // Used until its access token is refreshed: the refreshed tokens are sealed with B.
    let refreshed = "gatehouse_token_refresh_total{idp=\"test\",result=\"success\"}";
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&gw, refreshed) < 1.0 {
        assert!(Instant::now() < deadline, "no refresh:\n{}", gw.log());
        let r = visit(&gw, &cookie);
        assert_eq!(r.status, 200, "{}\n{}", r.body, gw.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // So it outlives the previous secret.
    reload(&gw, &config(&idp, &app, "secret_file = \"secret_b\""), 2.0).await;
    let after = visit(&gw, &cookie);
    assert_eq!(after.status, 200, "{}\n{}", after.body, gw.log());
    assert_eq!(after.echoed().header("x-auth-request-user"), Some("alice"));
}
