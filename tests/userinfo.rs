//! Claims from the IdP's userinfo endpoint (OIDC Core §5.3): the real oidc-provider,
//! configured so that a code flow's ID token carries no scope claims (groups and email come
//! only from userinfo), and a stand-in provider for what a real one will not answer (another
//! subject, a signed or oversized answer, an error).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::browser::Browser;
use common::keys::now;
use common::login::{client_for, login_config, metric, provider_configured};
use common::stub_idp::{log_in, session_cookie};
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "secret = \"0123456789abcdef0123456789abcdef\"";

/// A gateway on `port` in front of `app`, its IdP asking userinfo as `userinfo` says.
fn gateway(
    port: u16,
    idp: &common::idp::OidcProvider,
    app: &TestServer,
    userinfo: &str,
) -> Gateway {
    let config = login_config(idp, app, SECRET).replace(
        "extra_auth_params = { prompt = \"consent\" }",
        &format!("extra_auth_params = {{ prompt = \"consent\" }}\n{userinfo}"),
    );
    Gateway::start_on(tempfile::tempdir().unwrap(), &config, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_only_in_userinfo_reach_the_app_and_follow_refreshes() {
    let port = free_port();
    let idp = provider_configured(
        client_for(&[port], json!({})),
        json!({ "accessTokenTTL": 5, "conformIdTokenClaims": true }),
    );
    let app = TestServer::echo("app").await;
    // auto (the default): the ID token lacks the groups and email claims.
    let gw = gateway(port, &idp, &app, "");
    let browser = Browser::new();
    let (page, visited) = browser.login(&gw.url("/dash"), "alice").await;
    assert_eq!(page.status, 200, "{visited:?}\n{}\n{}", page.body, gw.log());
    assert_eq!(
        page.echoed_header("x-auth-request-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        page.echoed_header("x-auth-request-groups").as_deref(),
        Some("admins,staff")
    );
    assert_eq!(
        page.echoed_header("x-auth-request-email").as_deref(),
        Some("alice@example.com")
    );
    let ok = "gatehouse_userinfo_requests_total{idp=\"test\",result=\"success\"}";
    assert_eq!(metric(&gw, ok), 1.0);
    // The access token lives 5 s: the refresh asks userinfo again, and the claims stay.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let after = browser.fetch(&gw.url("/after-refresh")).await;
    assert_eq!(after.status, 200, "{}\n{}", after.body, gw.log());
    let echoed: Value = after.json();
    let groups = echoed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-auth-request-groups")
        .map(|h| h[1].clone());
    assert_eq!(groups, Some(json!("admins,staff")));
    assert_eq!(
        metric(
            &gw,
            "gatehouse_token_refresh_total{idp=\"test\",result=\"success\"}"
        ),
        1.0
    );
    assert_eq!(metric(&gw, ok), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_never_leaves_the_id_tokens_claims_alone() {
    let port = free_port();
    let idp = provider_configured(
        client_for(&[port], json!({})),
        json!({ "accessTokenTTL": 600, "conformIdTokenClaims": true }),
    );
    let app = TestServer::echo("app").await;
    let gw = gateway(port, &idp, &app, "userinfo = \"never\"");
    let (page, _) = Browser::new().login(&gw.url("/dash"), "alice").await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, gw.log());
    assert_eq!(
        page.echoed_header("x-auth-request-user").as_deref(),
        Some("alice")
    );
    assert_eq!(page.echoed_header("x-auth-request-groups"), None);
    assert_eq!(page.echoed_header("x-auth-request-email"), None);
    assert!(!gw
        .admin("/metrics")
        .body
        .contains("gatehouse_userinfo_requests_total{"));
}

/// What the stand-in's userinfo endpoint answers.
#[derive(Clone)]
enum Answer {
    Json(Value),
    Raw(u16, &'static str, String),
}

struct Stub {
    _server: TestServer,
    issuer: String,
    userinfo: Arc<Mutex<Answer>>,
    nonce: Arc<Mutex<String>>,
}

async fn stub() -> Stub {
    let userinfo = Arc::new(Mutex::new(Answer::Json(json!({}))));
    let nonce = Arc::new(Mutex::new(String::new()));
    let issuer_cell = Arc::new(Mutex::new(String::new()));
    let key_cell: Arc<Mutex<Option<common::keys::TestKey>>> = Arc::new(Mutex::new(None));
    let (answer, n, iss, k) = (
        userinfo.clone(),
        nonce.clone(),
        issuer_cell.clone(),
        key_cell.clone(),
    );
    let idp = common::stub_idp::start("stub-key", json!({"userinfo_endpoint": "{issuer}/userinfo"}), move |req: &Request| {
        if req.target.starts_with("/userinfo") {
            if req.header("authorization") != Some("Bearer at-1") {
                return Reply::json(401, &json!({"error": "invalid_token"}));
            }
            return match answer.lock().unwrap().clone() {
                Answer::Json(v) => Reply::json(200, &v),
                Answer::Raw(status, content_type, body) => Reply {
                    status,
                    headers: vec![("content-type".into(), content_type.into())],
                    body,
                    delay: Duration::ZERO,
                },
            };
        }
        let t = now();
        let claims = json!({
            "iss": *iss.lock().unwrap(), "aud": "gatehouse", "sub": "carol", "iat": t, "exp": t + 300,
            "nonce": *n.lock().unwrap(),
        });
        let token = k.lock().unwrap().as_ref().unwrap().sign(&claims);
        Reply::json(200, &json!({"access_token": "at-1", "token_type": "Bearer", "expires_in": 300, "id_token": token}))
    })
    .await;
    *issuer_cell.lock().unwrap() = idp.issuer.clone();
    *key_cell.lock().unwrap() = Some(idp.key.clone());
    Stub {
        _server: idp.server,
        issuer: idp.issuer,
        userinfo,
        nonce,
    }
}

fn stub_gateway(stub: &Stub, app: &TestServer, userinfo: &str) -> Gateway {
    Gateway::start(&format!(
        r#"{}
[session]
{SECRET}

[[idp]]
name = "stub"
issuer = "{}"
client_id = "gatehouse"
client_secret = "stub-secret"
{userinfo}

{}
[[route]]
name = "app"
path = "/"
upstream = "app"
auth = ["session"]
"#,
        base_config("public_url = \"http://127.0.0.1:{port}\"\nallowed_hosts = [\"127.0.0.1\"]"),
        stub.issuer,
        upstream_block("app", &[app.addr], ""),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_failing_userinfo_answer_ends_the_login_or_is_left_out() {
    let stub = stub().await;
    let app = TestServer::echo("app").await;
    let gw = stub_gateway(&stub, &app, "userinfo = \"always\"");
    let cases = [
        (
            "subject_mismatch",
            Answer::Json(json!({"sub": "mallory", "groups": ["admins"]})),
        ),
        (
            "subject_mismatch",
            Answer::Json(json!({"groups": ["admins"]})),
        ),
        (
            "not_json",
            Answer::Raw(200, "application/jwt", "eyJhbGciOiJub25lIn0.e30.".into()),
        ),
        (
            "not_json",
            Answer::Raw(200, "application/json", "[\"carol\"]".into()),
        ),
        (
            "error_status",
            Answer::Raw(500, "application/json", "{}".into()),
        ),
        (
            "too_large",
            Answer::Json(json!({"sub": "carol", "groups": vec!["g".repeat(100); 1000]})),
        ),
    ];
    for (reason, answer) in cases {
        *stub.userinfo.lock().unwrap() = answer;
        let r = log_in(&gw, &stub.nonce);
        assert_eq!(r.status, 502, "{reason}: {}\n{}", r.body, gw.log());
        assert!(session_cookie(&r).is_none(), "{reason}: a session was made");
        let line = format!("gatehouse_userinfo_requests_total{{idp=\"stub\",result=\"{reason}\"}}");
        assert!(metric(&gw, &line) >= 1.0, "{line}");
    }
    assert!(gw.log().contains("userinfo_failed"), "{}", gw.log());

    // A good answer: its claims join the ID token's, whose own claims win.
    *stub.userinfo.lock().unwrap() = Answer::Json(
        json!({"sub": "carol", "groups": ["auditors"], "email": "carol@example.com", "email_verified": true, "iss": "https://elsewhere"}),
    );
    let r = log_in(&gw, &stub.nonce);
    assert_eq!(r.status, 302, "{}\n{}", r.body, gw.log());
    let cookie = session_cookie(&r).expect("a session");
    let page = gw.get(
        "/whoami",
        &format!("Cookie: {cookie}\r\nAccept: application/json\r\n"),
    );
    assert_eq!(page.status, 200, "{}", page.body);
    let seen = page.echoed();
    let header = |name: &str| {
        seen.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("x-auth-request-groups").as_deref(), Some("auditors"));
    assert_eq!(
        header("x-auth-request-email").as_deref(),
        Some("carol@example.com")
    );

    // userinfo_on_error = "continue": the login goes on without the extra claims.
    let lenient = stub_gateway(
        &stub,
        &app,
        "userinfo = \"always\"\nuserinfo_on_error = \"continue\"",
    );
    *stub.userinfo.lock().unwrap() = Answer::Raw(503, "application/json", "{}".into());
    let r = log_in(&lenient, &stub.nonce);
    assert_eq!(r.status, 302, "{}\n{}", r.body, lenient.log());
    let cookie = session_cookie(&r).expect("a session");
    let page = lenient.get(
        "/whoami",
        &format!("Cookie: {cookie}\r\nAccept: application/json\r\n"),
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page
        .echoed()
        .headers
        .iter()
        .all(|(k, _)| k != "x-auth-request-groups"));
    assert!(lenient
        .log()
        .contains("userinfo failed; the session goes on"));
}

#[test]
fn userinfo_settings_are_checked_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    for (setting, message) in [
        (
            "userinfo = \"sometimes\"",
            "userinfo must be \"auto\", \"always\" or \"never\"",
        ),
        (
            "userinfo_on_error = \"ignore\"",
            "userinfo_on_error must be \"fail\" or \"continue\"",
        ),
        (
            "userinfo = \"never\"\nuserinfo_on_error = \"continue\"",
            "userinfo_on_error has no effect",
        ),
    ] {
        let text = idp_config_text(&format!("client_secret = \"s\"\n{setting}"));
        assert_refused_at(dir.path(), &text, setting, message);
    }
}
