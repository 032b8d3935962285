//! Browser login end to end with a real OpenID provider (oidc-provider): a person's path
//! through an HTTP client that keeps cookies (protected page → IdP → login form → consent →
//! back to the page asked for), refresh with a 5-second access token, RP-initiated logout,
//! and back-channel logout sent by the provider.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::login::{login_config, metric, provider_for};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_works_with_refreshed_tokens_and_logs_out() {
    let port = free_port();
    let idp = provider_for(&[port], 5);
    let app = TestServer::echo("app").await;
    let gw = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        &login_config(&idp, &app, "secret = \"0123456789abcdef0123456789abcdef\""),
        port,
    );
    let browser = Browser::new();

    // A script without a session gets 401 JSON, never a redirect.
    let xhr = browser.fetch(&gw.url("/dash")).await;
    assert_eq!(xhr.status, 401, "{}", xhr.body);
    assert!(xhr.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(xhr.json()["error"], "unauthorized");

    // A navigation goes to the IdP with PKCE S256, state and nonce.
    let first = browser.get(&gw.url("/dash?tab=2")).await;
    assert_eq!(first.status, 302, "{}", first.body);
    let to_idp = url::Url::parse(&first.location().unwrap()).unwrap();
    assert!(to_idp.as_str().starts_with(&idp.issuer), "{to_idp}");
    let q: std::collections::HashMap<_, _> = to_idp.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "gatehouse");
    assert_eq!(q["redirect_uri"], gw.url("/_gatehouse/callback"));
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43 && q["code_challenge"].len() == 43);
    assert!(first
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("gatehouse_login=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Lax")));

    // Through the provider's login and consent forms, back to the page asked for.
    let (page, visited) = browser.login(&gw.url("/dash?tab=2"), "alice").await;
    assert_eq!(
        page.status,
        200,
        "visited {visited:?}\n{}\n{}",
        page.body,
        gw.log()
    );
    assert_eq!(page.url, gw.url("/dash?tab=2"), "visited {visited:?}");
    assert!(visited
        .iter()
        .any(|u| u.starts_with(&gw.url("/_gatehouse/callback?"))));
    assert_eq!(
        page.echoed_header("x-auth-request-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        page.echoed_header("x-auth-request-email").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        page.echoed_header("x-auth-request-groups").as_deref(),
        Some("admins,staff")
    );
    let first_token = page
        .echoed_header("authorization")
        .expect("access token passed on");
    assert!(first_token.starts_with("Bearer "));
    // The gateway's cookies stay with the gateway.
    let cookie_upstream = page.echoed_header("cookie").unwrap_or_default();
    assert!(!cookie_upstream.contains("gatehouse"), "{cookie_upstream}");
    assert_eq!(
        metric(
            &gw,
            "gatehouse_logins_total{idp=\"test\",result=\"success\"}"
        ),
        1.0
    );

    // userinfo for SPAs.
    let info = browser.fetch(&gw.url("/_gatehouse/userinfo")).await;
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["sub"], "alice");
    assert_eq!(info.json()["groups"], json!(["admins", "staff"]));

    // The access token lives 5 s: it is refreshed before it expires, once per session even
    // when many requests need it at the same moment.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (client, url) = (browser.client.clone(), gw.url("/after-refresh"));
        handles.push(tokio::spawn(async move {
            let r = client
                .get(url)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    for h in handles {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, 200, "{body}\n{}", gw.log());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let auth = v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == "authorization")
            .unwrap()[1]
            .clone();
        tokens.insert(auth.as_str().unwrap().to_string());
    }
    assert_eq!(
        tokens.len(),
        1,
        "every concurrent request saw the same refreshed token"
    );
    assert!(!tokens.contains(&first_token), "the token was refreshed");
    assert_eq!(
        metric(
            &gw,
            "gatehouse_token_refresh_total{idp=\"test\",result=\"success\"}"
        ),
        1.0
    );

    // A second round of expiry: refreshed again with the rotated refresh token.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let again = browser.fetch(&gw.url("/again")).await;
    assert_eq!(again.status, 200, "{}\n{}", again.body, gw.log());
    assert_eq!(
        metric(
            &gw,
            "gatehouse_token_refresh_total{idp=\"test\",result=\"success\"}"
        ),
        2.0
    );

    // The supervisor counts live sessions every 5 s (9 s have passed since the login).
    assert_eq!(metric(&gw, "gatehouse_sessions_active"), 1.0);

    // Logout: the session ends, the cookie is cleared, and the browser goes to the IdP's
    // end-session endpoint with id_token_hint; after confirming it comes back to the app.
    let cookie_before = browser.cookie_header(&gw.url("/"));
    let logout = browser.logout(&gw.url("/_gatehouse/logout")).await;
    assert_eq!(logout.status, 303, "{}", logout.body);
    let end = url::Url::parse(&logout.location().unwrap()).unwrap();
    assert!(end.as_str().starts_with(&idp.issuer), "{end}");
    let eq: std::collections::HashMap<_, _> = end.query_pairs().into_owned().collect();
    assert!(eq.contains_key("id_token_hint"));
    assert_eq!(eq["post_logout_redirect_uri"], gw.url("/"));
    assert!(logout
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("gatehouse=;") && c.contains("Max-Age=0")));
    let (confirm, _) = browser.follow(end.as_str()).await;
    let (back, visited) = browser.confirm_logout(&confirm).await;
    assert!(
        visited.iter().any(|u| u == &gw.url("/")),
        "{visited:?} {}",
        back.body
    );
    // The old cookie is worth nothing now.
    let replay = gw.get(
        "/dash",
        &format!("Cookie: {cookie_before}\r\nAccept: application/json\r\n"),
    );
    assert_eq!(replay.status, 401, "{}", replay.body);
    let log = gw.log();
    assert!(
        log.contains("\"login\"") || log.contains(" login"),
        "audit line for login"
    );
    for secret in [
        first_token.trim_start_matches("Bearer "),
        "gatehouse-test-secret",
    ] {
        assert!(!log.contains(secret), "a secret leaked into the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_ends_sessions_by_back_channel_logout() {
    let port = free_port();
    let idp = provider_for(&[port], 600);
    let app = TestServer::echo("app").await;
    let gw = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        &login_config(&idp, &app, ""),
        port,
    );
    let browser = Browser::new();
    let (page, _) = browser.login(&gw.url("/"), "bob").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.echoed_header("x-auth-request-user").as_deref(),
        Some("bob")
    );
    let gateway_cookie = browser.cookie_header(&gw.url("/"));

    // The person signs out at the IdP itself (not through the gateway): the provider calls
    // the gateway's back-channel endpoint with a logout token naming the IdP session.
    let (confirm, _) = browser.follow(&format!("{}/session/end", idp.issuer)).await;
    let (_, _) = browser.confirm_logout(&confirm).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = gw.get(
            "/",
            &format!("Cookie: {gateway_cookie}\r\nAccept: application/json\r\n"),
        );
        if r.status == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "session still alive: {}\n{}\n{}",
            r.status,
            gw.log(),
            idp.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&gw, "gatehouse_logouts_total{kind=\"backchannel\"}"),
        1.0
    );
    // A forged logout token is refused with 400.
    let forged = gw.raw(&format!(
        "POST /_gatehouse/backchannel-logout HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\nlogout_token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ.",
        "logout_token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ.".len()
    ));
    assert_eq!(forged.status, 400, "{}", forged.body);
}
