//! Logout CSRF: another site must not be able to end a person's sessions. A GET of
//! `/_gatehouse/logout` (a link, an image, a top-level navigation that carries the
//! `SameSite=Lax` cookie) only shows a confirmation page; the session ends on a POST that
//! proves it comes from the gateway's own origin: `Sec-Fetch-Site: same-origin`, an `Origin`
//! equal to `server.public_url`, or the confirmation form's token bound to the session.

mod common;

use common::browser::{form, Browser};
use common::login::{login_config, provider_for};
use common::*;

/// A logged-in browser: its session cookie (`gatehouse=...`).
async fn logged_in(gw: &Gateway, user: &str) -> String {
    let browser = Browser::new();
    let (page, visited) = browser.login(&gw.url("/start"), user).await;
    assert_eq!(page.status, 200, "{visited:?} {}\n{}", page.body, gw.log());
    browser
        .cookie_header(&gw.url("/"))
        .split("; ")
        .find(|c| c.starts_with("gatehouse="))
        .expect("a session cookie")
        .to_string()
}

/// Whether the session behind `cookie` still lets a script through as `user`.
fn still_works(gw: &Gateway, cookie: &str, user: &str) -> bool {
    let r = gw.get(
        "/still-here",
        &format!("Cookie: {cookie}\r\nAccept: application/json\r\n"),
    );
    r.status == 200 && r.echoed().header("x-auth-request-user") == Some(user)
}

fn post_logout(gw: &Gateway, query: &str, cookie: &str, headers: &str, body: &str) -> Response {
    gw.raw(&format!(
        "POST /_gatehouse/logout{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n{headers}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

fn clears_cookie(r: &Response) -> bool {
    r.headers
        .get("set-cookie")
        .is_some_and(|v| v.iter().any(|c| c.starts_with("gatehouse=;")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_site_cannot_log_anyone_out() {
    let port = free_port();
    let idp = provider_for(&[port], 600);
    let app = TestServer::echo("app").await;
    let gw = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        &format!(
            "{}\n[reserved_limit]\nlimit = \"1000/minute\"\n",
            login_config(&idp, &app, "")
        ),
        port,
    );
    // alice in two browsers: "everywhere" would end both.
    let first = logged_in(&gw, "alice").await;
    let second = logged_in(&gw, "alice").await;
    assert!(still_works(&gw, &first, "alice") && still_works(&gw, &second, "alice"));
    let public = gw.url("");

    // A link on another site: a top-level navigation, which carries the Lax cookie.
    for headers in [
        "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Dest: document\r\n",
        "Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: navigate\r\n",
        "",
    ] {
        let r = gw.get(
            "/_gatehouse/logout?everywhere=1",
            &format!("Cookie: {first}\r\nAccept: text/html\r\n{headers}"),
        );
        assert_eq!(r.status, 200, "{headers:?}: {}", r.body);
        assert!(!clears_cookie(&r), "{headers:?}: {:?}", r.headers);
        assert!(r.body.contains("method=\"post\""), "{}", r.body);
        // An image or a script asking for it: nothing happens either.
        let r = gw.get(
            "/_gatehouse/logout?everywhere=1",
            &format!("Cookie: {first}\r\nAccept: */*\r\n{headers}"),
        );
        assert!(!clears_cookie(&r), "{headers:?}: {:?}", r.headers);
    }
    assert!(
        still_works(&gw, &first, "alice") && still_works(&gw, &second, "alice"),
        "a GET ended a session"
    );

    // A form on another site (or a same-site sibling origin) posting to the logout.
    let other_port = free_port();
    for headers in [
        "Origin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\n".to_string(),
        "Origin: http://evil.example\r\n".to_string(),
        format!("Origin: http://127.0.0.1:{other_port}\r\nSec-Fetch-Site: same-site\r\n"),
        format!("Origin: http://127.0.0.1:{other_port}\r\n"),
        format!("Origin: https://127.0.0.1:{port}\r\n"),
        "Origin: null\r\n".to_string(),
        "Sec-Fetch-Site: cross-site\r\n".to_string(),
        "Sec-Fetch-Site: same-site\r\n".to_string(),
        // The fetch metadata wins over a copied Origin.
        format!("Origin: {public}\r\nSec-Fetch-Site: cross-site\r\n"),
        // Neither header and no token: no proof of origin.
        String::new(),
    ] {
        for body in ["", "csrf=forged", "everywhere=1"] {
            let r = post_logout(&gw, "?everywhere=1", &first, &headers, body);
            assert_eq!(r.status, 403, "{headers:?} {body:?}: {}", r.body);
            assert!(!clears_cookie(&r), "{headers:?}: {:?}", r.headers);
        }
    }
    // Someone else's token does not fit this session.
    let other_token = confirmation_token(&gw, &second);
    let r = post_logout(
        &gw,
        "?everywhere=1",
        &first,
        "",
        &format!("csrf={other_token}"),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        still_works(&gw, &first, "alice") && still_works(&gw, &second, "alice"),
        "a cross-site POST ended a session\n{}",
        gw.log()
    );
    assert!(gw.log().contains("logout_cross_origin"), "{}", gw.log());
}

/// The token of the confirmation page a GET shows to the browser holding `cookie`.
fn confirmation_token(gw: &Gateway, cookie: &str) -> String {
    let page = gw.get(
        "/_gatehouse/logout",
        &format!("Cookie: {cookie}\r\nAccept: text/html\r\n"),
    );
    let page = common::browser::Page {
        url: gw.url("/_gatehouse/logout"),
        status: page.status,
        headers: Default::default(),
        body: page.body,
    };
    let (_, fields) = form(&page).unwrap_or_else(|| panic!("no form: {}", page.body));
    fields
        .into_iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no token: {}", page.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_own_origin_logs_out() {
    let port = free_port();
    let idp = provider_for(&[port], 600);
    let app = TestServer::echo("app").await;
    let gw = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        &login_config(&idp, &app, ""),
        port,
    );
    let public = gw.url("");

    // The confirmation form, posted back with its token (no fetch metadata: an old browser).
    let cookie = logged_in(&gw, "alice").await;
    let page = gw.get(
        "/_gatehouse/logout",
        &format!("Cookie: {cookie}\r\nAccept: text/html\r\n"),
    );
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Request id") || page.body.contains("Sign out"));
    assert!(page
        .header("content-security-policy")
        .is_some_and(|c| c.contains(&format!("form-action 'self' {}", idp.issuer))));
    let token = confirmation_token(&gw, &cookie);
    let r = post_logout(&gw, "", &cookie, "", &format!("csrf={token}"));
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.header("location").unwrap().starts_with(&idp.issuer));
    assert!(clears_cookie(&r));
    assert!(!still_works(&gw, &cookie, "alice"));

    // A browser's own form (fetch metadata), and a script of the app (Origin): both end it.
    for headers in [
        "Sec-Fetch-Site: same-origin\r\nOrigin: PUBLIC\r\n",
        "Sec-Fetch-Site: same-origin\r\n",
        "Origin: PUBLIC\r\n",
    ] {
        let cookie = logged_in(&gw, "bob").await;
        let headers = headers.replace("PUBLIC", &public);
        let r = post_logout(&gw, "", &cookie, &headers, "");
        assert_eq!(r.status, 303, "{headers:?}: {}", r.body);
        assert!(!still_works(&gw, &cookie, "bob"), "{headers:?}");
    }

    // everywhere=1 from the app's own origin ends every session of the person.
    let first = logged_in(&gw, "alice").await;
    let second = logged_in(&gw, "alice").await;
    let r = post_logout(
        &gw,
        "?everywhere=1",
        &first,
        &format!("Origin: {public}\r\nAccept: application/json\r\n"),
        "",
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(!still_works(&gw, &first, "alice") && !still_works(&gw, &second, "alice"));

    // Without a session there is nothing to end: a same-origin POST says so and clears the
    // cookie; a GET shows the signed-out page.
    let r = post_logout(
        &gw,
        "",
        "gatehouse=gone",
        &format!("Origin: {public}\r\nAccept: application/json\r\n"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("logged_out"));
    let r = gw.get("/_gatehouse/logout", "Accept: text/html\r\n");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Signed out"), "{}", r.body);
}
