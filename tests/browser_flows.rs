//! Every flow the README promises a person, in a real browser: Chromium, driven by
//! playwright-core (`tests/idp/browser-flows.mjs`), against the real gateway, the real OpenID
//! provider (oidc-provider) and Debian's nginx. The demo's own flow is in tests/demo.rs.

mod common;

use std::time::Duration;

use common::login::{login_config, provider_for, provider_with_client};
use common::*;
use common::{chromium, front};
use serde_json::json;

/// One person's day: logs in through the provider's forms, shrugs off another site's
/// attempts to log them out, is sent back to the provider by a route that wants a fresh
/// login (`max_auth_age`) and returns satisfied, then signs out through the gateway's
/// confirmation and the provider's own end-session page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_logs_in_steps_up_and_logs_out() {
    let port = free_port();
    // `auth_time` in every ID token, so the step-up below can compare the two logins.
    let idp = provider_with_client(&[port], 600, serde_json::json!({"require_auth_time": true}));
    let app = TestServer::echo("app").await;
    let config = format!(
        "{}\n[[route]]\nname = \"fresh\"\npath = \"/fresh/\"\nupstream = \"app\"\nauth = [\"session\"]\nmax_auth_age = \"3s\"\n",
        login_config(&idp, &app, "")
    );
    let gw = Gateway::start_on(tempfile::tempdir().unwrap(), &config, port);
    let base = gw.url("");
    let flow = chromium::run(
        "login",
        &json!({
            "base": base,
            "user": "alice",
            "path": "/reports/q3?view=full",
            "csrf": true,
            "stepUp": {"path": "/fresh/start", "waitMs": 4200},
            "logout": true,
        }),
        Duration::from_secs(150),
        || format!("{}\n{}", gw.log(), idp.output()),
    )
    .await;

    // Login: the protected page sends the browser to the provider and back to that page.
    assert!(flow.url("provider-login").starts_with(&idp.issuer));
    assert_eq!(flow.url("landed"), gw.url("/reports/q3?view=full"));
    assert_eq!(
        flow.echoed("landed", "x-auth-request-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        flow.echoed("landed", "x-auth-request-groups").as_deref(),
        Some("admins,staff")
    );
    // The provider's cookies (same host) pass; the gateway's own never reach the app.
    let cookies = flow.echoed("landed", "cookie").unwrap_or_default();
    assert!(!cookies.contains("gatehouse"), "{cookies}");
    let session = flow.step("landed")["cookies"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "gatehouse"))
        .expect("the browser holds the session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Lax");
    assert_eq!(session["path"], "/");
    let info: serde_json::Value = serde_json::from_str(flow.text("userinfo")).unwrap();
    assert_eq!(info["sub"], "alice");
    let first_auth = info["auth_time"].as_u64().expect("auth_time");

    // Another site links to the logout (the Lax cookie goes along): only the question.
    assert_eq!(flow.status("csrf-link"), 200);
    assert!(
        flow.text("csrf-link").contains("Sign out?"),
        "{}",
        flow.output
    );
    assert!(flow.text("csrf-link").contains("every browser"));
    assert_eq!(
        flow.status("csrf-link-after"),
        200,
        "a link logged alice out"
    );
    // ... and submits a form to it: refused.
    assert_eq!(flow.status("csrf-post"), 403, "{}", flow.output);
    assert_eq!(
        flow.status("csrf-post-after"),
        200,
        "a cross-site form logged alice out"
    );

    // Step-up: the route wants a login at most 3 s old; the provider asks again.
    let to_provider = flow.visited("step-up-provider");
    assert!(
        to_provider
            .iter()
            .any(|v| v.contains(&format!("{}/auth?", idp.issuer)) && v.contains("max_age=3")),
        "{to_provider:?}"
    );
    assert!(flow.url("step-up-provider").starts_with(&idp.issuer));
    assert_eq!(flow.url("step-up-landed"), gw.url("/fresh/start"));
    assert_eq!(
        flow.echoed("step-up-landed", "x-auth-request-user")
            .as_deref(),
        Some("alice")
    );
    let info: serde_json::Value = serde_json::from_str(flow.text("step-up-userinfo")).unwrap();
    assert!(
        info["auth_time"].as_u64().unwrap() > first_auth,
        "the provider authenticated alice again: {info}"
    );

    // Sign-out: the gateway asks, the POST goes on to the provider's end-session page,
    // confirming it there comes back to the app, which finds no session (at either end).
    assert_eq!(flow.url("logout-confirm"), gw.url("/_gatehouse/logout"));
    assert!(flow.text("logout-confirm").contains("alice"));
    let posted = flow.visited("provider-logout");
    assert!(
        posted
            .first()
            .is_some_and(|v| v.starts_with(&format!("POST 303 {}", gw.url("/_gatehouse/logout")))),
        "{posted:?}"
    );
    assert!(flow.url("provider-logout").starts_with(&idp.issuer));
    assert!(
        flow.text("provider-logout").contains("sign-out"),
        "{}",
        flow.text("provider-logout")
    );
    let back = flow.visited("signed-out");
    assert!(
        back.iter()
            .any(|v| v.contains(&format!("GET 302 {}/", base))),
        "{back:?}"
    );
    assert!(flow.url("signed-out").starts_with(&idp.issuer));
    assert_eq!(flow.status("after-logout"), 401);
    assert!(!flow.cookies.iter().any(|c| c["name"] == "gatehouse"));
    assert_eq!(flow.csp_violations(), Vec::<String>::new());
}

/// The same person behind nginx (the recipe of docs/forward-auth.md): nginx asks the gateway
/// about every request, the login and the sign-out go through nginx to the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_logs_in_through_nginx_forward_auth() {
    let (nginx_port, gw_port) = (free_port(), free_port());
    let idp = provider_for(&[nginx_port], 600);
    let app = TestServer::echo("app").await;
    let config = format!(
        r#"{}
[[idp]]
name = "test"
issuer = "{}"
client_id = "gatehouse"
client_secret = "gatehouse-test-secret"
scopes = ["openid", "profile", "email", "groups"]

[headers]
assertion = true

{}
[[route]]
name = "app"
path = "/"
upstream = "app"
auth = ["session"]
"#,
        base_config(&format!(
            "public_url = \"http://127.0.0.1:{nginx_port}\"\ntrusted_proxies = [\"127.0.0.1/32\"]\nallowed_hosts = [\"127.0.0.1\"]"
        )),
        idp.issuer,
        upstream_block("app", &[app.addr], ""),
    );
    let gw = Gateway::start_on(tempfile::tempdir().unwrap(), &config, gw_port);
    let nginx = front::start_nginx(nginx_port, gw_port, app.addr.port());
    let flow = chromium::run(
        "login",
        &json!({"base": nginx.url(""), "user": "bob", "path": "/dashboard?tab=2", "logout": true}),
        Duration::from_secs(120),
        || format!("{}\n{}\n{}", gw.log(), nginx.log(), idp.output()),
    )
    .await;

    // nginx's 401 page turned into the login redirect, through the gateway to the provider.
    let to_login = flow.visited("provider-login");
    assert!(
        to_login
            .first()
            .is_some_and(|v| v.starts_with(&format!("GET 302 {}", nginx.url("/dashboard?tab=2")))),
        "{to_login:?}"
    );
    assert!(to_login
        .iter()
        .any(|v| v.contains(&nginx.url("/_gatehouse/login?rd="))));
    assert_eq!(flow.url("landed"), nginx.url("/dashboard?tab=2"));
    assert_eq!(
        flow.echoed("landed", "x-auth-request-user").as_deref(),
        Some("bob")
    );
    assert_eq!(
        flow.echoed("landed", "x-auth-request-groups").as_deref(),
        Some("staff")
    );
    assert_eq!(
        flow.echoed("landed", "x-auth-request-email").as_deref(),
        Some("bob@example.com")
    );
    assert!(flow
        .echoed("landed", "x-gatehouse-assertion")
        .is_some_and(|a| a.split('.').count() == 3));
    // Sign-out through nginx: the gateway's confirmation, the provider's page, and back.
    assert_eq!(flow.url("logout-confirm"), nginx.url("/_gatehouse/logout"));
    assert!(flow.url("provider-logout").starts_with(&idp.issuer));
    assert!(flow.url("signed-out").starts_with(&idp.issuer));
    assert_eq!(
        flow.status("after-logout"),
        302,
        "nginx's login redirect again"
    );
    assert_eq!(flow.csp_violations(), Vec::<String>::new());
}
