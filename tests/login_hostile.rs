//! Login against a provider that misbehaves (an in-test stub: a real provider will not send
//! these): wrong nonce, audience, issuer or azp; expired, badly signed or unsigned ID tokens;
//! a replayed state; a callback without the browser-binding cookie; IdP errors; and open-
//! redirect attempts through `rd`. Every refusal ends with no session and a counted reason.

mod common;

use std::sync::{Arc, Mutex};

use common::keys::{now, unsigned, TestKey};
use common::login::metric;
use common::stub_idp::{callback, start_login as start};
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

/// What the stub's token endpoint answers next.
#[derive(Clone)]
enum TokenAnswer {
    IdToken(String),
    Error(u16),
    /// Status, content type, body: as a lax provider writes its answer.
    Raw(u16, &'static str, String),
}

struct Stub {
    _server: TestServer,
    issuer: String,
    next: Arc<Mutex<TokenAnswer>>,
    key: TestKey,
    token_requests: Arc<Mutex<Vec<Request>>>,
}

async fn stub() -> Stub {
    let next = Arc::new(Mutex::new(TokenAnswer::Error(500)));
    let token_requests = Arc::new(Mutex::new(Vec::new()));
    let (answer, seen) = (next.clone(), token_requests.clone());
    let extra = json!({"authorization_response_iss_parameter_supported": true});
    let idp = common::stub_idp::start("stub-key", extra, move |req: &Request| {
        seen.lock().unwrap().push(req.clone());
        match answer.lock().unwrap().clone() {
            TokenAnswer::IdToken(t) => Reply::json(
                200,
                &json!({"access_token": "at-1", "token_type": "Bearer", "expires_in": 300, "id_token": t}),
            ),
            TokenAnswer::Error(status) => Reply::json(status, &json!({"error": "invalid_grant"})),
            TokenAnswer::Raw(status, content_type, body) => Reply {
                status,
                headers: vec![("content-type".into(), content_type.into())],
                body,
                delay: std::time::Duration::ZERO,
            },
        }
    })
    .await;
    Stub {
        _server: idp.server,
        issuer: idp.issuer,
        next,
        key: idp.key,
        token_requests,
    }
}

fn config(stub: &Stub, app: &TestServer) -> String {
    format!(
        r#"{}
[[idp]]
name = "stub"
issuer = "{}"
client_id = "gatehouse"
client_secret = "stub-secret"

{}
[[route]]
name = "app"
path = "/"
upstream = "app"
auth = ["session"]

[reserved_limit]
limit = "1000/second"
"#,
        base_config("public_url = \"http://127.0.0.1:{port}\"\nallowed_hosts = [\"127.0.0.1\", \"app.example.com\"]"),
        stub.issuer,
        upstream_block("app", &[app.addr], ""),
    )
}

fn claims(stub: &Stub, nonce: &str) -> Value {
    let t = now();
    json!({
        "iss": stub.issuer, "aud": "gatehouse", "sub": "mallory-target", "iat": t, "exp": t + 300,
        "nonce": nonce, "email": "t@example.com", "groups": ["staff"],
    })
}

fn refused(r: &Response) -> bool {
    let session_cookie = r
        .headers
        .get("set-cookie")
        .is_some_and(|v| v.iter().any(|c| c.starts_with("gatehouse=")));
    r.status >= 400 && !session_cookie && !r.body.contains("token") && r.body.contains("Request id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_providers_never_produce_a_session() {
    let stub = stub().await;
    let app = TestServer::echo("app").await;
    let gw = Gateway::start(&config(&stub, &app));
    let iss_param: String = url::form_urlencoded::byte_serialize(stub.issuer.as_bytes()).collect();
    let other = TestKey::rsa("stub-key", Algorithm::RS256); // same kid, other key

    // The honest answer works, so the refusals below are about what they change.
    let s = start(&gw, "/reports?x=1");
    *stub.next.lock().unwrap() = TokenAnswer::IdToken(stub.key.sign(&claims(&stub, &s.nonce)));
    let ok = callback(
        &gw,
        &format!("code=c1&state={}&iss={iss_param}", s.state),
        Some(&s.binding),
    );
    assert_eq!(ok.status, 302, "{}\n{}", ok.body, gw.log());
    assert_eq!(ok.header("location"), Some("/reports?x=1"));
    assert!(ok.headers["set-cookie"]
        .iter()
        .any(|c| c.starts_with("gatehouse=") && c.contains("HttpOnly")));
    // The code was redeemed with the PKCE verifier and the client's credentials.
    let token_request = stub.token_requests.lock().unwrap().last().cloned().unwrap();
    assert!(token_request.body.contains("code_verifier="));
    assert!(token_request.body.contains("grant_type=authorization_code"));
    assert!(token_request
        .header("authorization")
        .is_some_and(|a| a.starts_with("Basic ")));

    // A replayed state (the one just used) is unknown.
    let replay = callback(
        &gw,
        &format!("code=c1&state={}&iss={iss_param}", s.state),
        Some(&s.binding),
    );
    assert!(refused(&replay), "{} {}", replay.status, replay.body);

    type Mutate = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, &str, Mutate)> = vec![
        (
            "wrong nonce",
            "wrong_nonce",
            Box::new(|c| c["nonce"] = json!("attacker-nonce")),
        ),
        (
            "no nonce",
            "wrong_nonce",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("nonce");
            }),
        ),
        (
            "wrong aud",
            "wrong_audience",
            Box::new(|c| c["aud"] = json!("another-client")),
        ),
        (
            "wrong iss",
            "unknown_issuer",
            Box::new(|c| c["iss"] = json!("http://127.0.0.1:1")),
        ),
        (
            "expired",
            "expired",
            Box::new(|c| {
                c["exp"] = json!(now() - 3600);
                c["iat"] = json!(now() - 7200);
            }),
        ),
        (
            "no iat",
            "missing_iat",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
        ),
        (
            "foreign azp",
            "wrong_azp",
            Box::new(|c| c["azp"] = json!("another-client")),
        ),
        (
            "several aud, no azp",
            "missing_azp",
            Box::new(|c| c["aud"] = json!(["gatehouse", "another"])),
        ),
    ];
    for (what, reason, mutate) in &cases {
        let s = start(&gw, "/");
        let mut c = claims(&stub, &s.nonce);
        mutate(&mut c);
        *stub.next.lock().unwrap() = TokenAnswer::IdToken(stub.key.sign(&c));
        let r = callback(
            &gw,
            &format!("code=c&state={}&iss={iss_param}", s.state),
            Some(&s.binding),
        );
        assert!(refused(&r), "{what}: {} {}", r.status, r.body);
        assert!(
            metric(
                &gw,
                &format!("gatehouse_logins_total{{idp=\"stub\",result=\"{reason}\"}}")
            ) >= 1.0,
            "{what}: no {reason} count\n{}",
            gw.admin("/metrics").body
        );
    }

    // Signatures: another key under the same kid, none, HMAC with the public key.
    type Forge = Box<dyn Fn(&Value) -> String>;
    let forgeries: Vec<(&str, Forge)> = vec![
        ("bad_signature", Box::new(move |c| other.sign(c))),
        (
            "bad_signature",
            Box::new(|c| unsigned(&json!({"alg": "none", "kid": "stub-key"}), c, "")),
        ),
        (
            "alg_not_allowed",
            Box::new(|c| unsigned(&json!({"alg": "HS256", "kid": "stub-key"}), c, "c2ln")),
        ),
    ];
    for (reason, forge) in &forgeries {
        let s = start(&gw, "/");
        *stub.next.lock().unwrap() = TokenAnswer::IdToken(forge(&claims(&stub, &s.nonce)));
        let r = callback(
            &gw,
            &format!("code=c&state={}&iss={iss_param}", s.state),
            Some(&s.binding),
        );
        assert!(refused(&r), "{reason}: {} {}", r.status, r.body);
        assert!(
            metric(
                &gw,
                &format!("gatehouse_logins_total{{idp=\"stub\",result=\"{reason}\"}}")
            ) >= 1.0,
            "{reason}"
        );
    }

    // The browser that finishes must be the one that started.
    let s = start(&gw, "/");
    *stub.next.lock().unwrap() = TokenAnswer::IdToken(stub.key.sign(&claims(&stub, &s.nonce)));
    let r = callback(
        &gw,
        &format!("code=c&state={}&iss={iss_param}", s.state),
        None,
    );
    assert!(refused(&r), "no binding cookie: {} {}", r.status, r.body);
    let s = start(&gw, "/");
    let r = callback(
        &gw,
        &format!("code=c&state={}&iss={iss_param}", s.state),
        Some("gatehouse_login=someone-elses-binding-value-0123456789"),
    );
    assert!(
        refused(&r),
        "foreign binding cookie: {} {}",
        r.status,
        r.body
    );
    assert!(
        metric(
            &gw,
            "gatehouse_logins_total{idp=\"stub\",result=\"browser_mismatch\"}"
        ) >= 2.0
    );

    // IdP errors, a missing code, a mix-up (foreign iss), a failing token endpoint.
    let s = start(&gw, "/");
    let r = callback(
        &gw,
        &format!("error=access_denied&state={}&iss={iss_param}", s.state),
        Some(&s.binding),
    );
    assert!(refused(&r));
    assert_eq!(
        metric(
            &gw,
            "gatehouse_logins_total{idp=\"stub\",result=\"access_denied\"}"
        ),
        1.0
    );
    let s = start(&gw, "/");
    let r = callback(
        &gw,
        &format!("state={}&iss={iss_param}", s.state),
        Some(&s.binding),
    );
    assert!(refused(&r));
    let s = start(&gw, "/");
    let r = callback(
        &gw,
        &format!("code=c&state={}&iss=http%3A%2F%2Fevil.example", s.state),
        Some(&s.binding),
    );
    assert!(refused(&r));
    assert_eq!(
        metric(
            &gw,
            "gatehouse_logins_total{idp=\"stub\",result=\"wrong_iss\"}"
        ),
        1.0
    );
    let s = start(&gw, "/");
    let r = callback(&gw, &format!("code=c&state={}", s.state), Some(&s.binding));
    assert!(refused(&r), "iss announced but missing");
    let s = start(&gw, "/");
    *stub.next.lock().unwrap() = TokenAnswer::Error(500);
    let r = callback(
        &gw,
        &format!("code=c&state={}&iss={iss_param}", s.state),
        Some(&s.binding),
    );
    assert!(refused(&r));
    assert_eq!(r.status, 502);
    let r = callback(&gw, "code=c", None);
    assert!(refused(&r) && r.status == 400);
    let log = gw.log();
    assert!(log.contains("login failed"), "{log}");
    assert!(!log.contains("stub-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_targets_never_leave_the_allowed_hosts() {
    let stub = stub().await;
    let app = TestServer::echo("app").await;
    let gw = Gateway::start(&config(&stub, &app));
    let iss_param: String = url::form_urlencoded::byte_serialize(stub.issuer.as_bytes()).collect();
    let finish = |rd: &str| {
        let s = start(&gw, rd);
        *stub.next.lock().unwrap() = TokenAnswer::IdToken(stub.key.sign(&claims(&stub, &s.nonce)));
        let r = callback(
            &gw,
            &format!("code=c&state={}&iss={iss_param}", s.state),
            Some(&s.binding),
        );
        assert_eq!(r.status, 302, "{rd}: {}", r.body);
        r.header("location").unwrap().to_string()
    };
    for evil in [
        "https://evil.example/",
        "http://evil.example",
        "//evil.example/path",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https:evil.example",
        "https://app.example.com@evil.example/",
        "https://evil.example\\@app.example.com/",
        "https://app.example.com.evil.example/",
        "javascript:alert(document.cookie)",
        "data:text/html,<script>alert(1)</script>",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "\t//evil.example",
        " https://evil.example",
        "ftp://app.example.com/",
        "evil.example",
    ] {
        assert_eq!(finish(evil), "/", "rd = {evil:?}");
    }
    assert_eq!(
        finish("/reports/2026?q=a%20b#part"),
        "/reports/2026?q=a%20b#part"
    );
    assert_eq!(
        finish("https://app.example.com/x"),
        "https://app.example.com/x"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_sends_the_browser_back_for_a_stronger_login() {
    let stub = stub().await;
    let app = TestServer::echo("app").await;
    let config = config(&stub, &app).replace(
        "[reserved_limit]",
        "[[route]]\nname = \"admin\"\npath = \"/admin/\"\nupstream = \"app\"\nauth = [\"session\"]\nacr_values = [\"gold\"]\nmax_auth_age = \"10m\"\n\n[reserved_limit]",
    );
    let gw = Gateway::start(&config);
    let iss_param: String = url::form_urlencoded::byte_serialize(stub.issuer.as_bytes()).collect();
    // An ordinary login (acr "silver").
    let s = start(&gw, "/");
    let mut c = claims(&stub, &s.nonce);
    c["acr"] = json!("silver");
    c["auth_time"] = json!(now());
    *stub.next.lock().unwrap() = TokenAnswer::IdToken(stub.key.sign(&c));
    let r = callback(
        &gw,
        &format!("code=c&state={}&iss={iss_param}", s.state),
        Some(&s.binding),
    );
    assert_eq!(r.status, 302, "{}", r.body);
    let session = r.headers["set-cookie"]
        .iter()
        .find(|c| c.starts_with("gatehouse="))
        .unwrap();
    let session = session.split(';').next().unwrap().to_string();
    let cookies = format!("Cookie: {session}; {}\r\n", s.binding);
    assert_eq!(
        gw.get("/home", &format!("{cookies}Accept: application/json\r\n"))
            .status,
        200
    );

    // The admin area wants acr "gold": a script is told so, a navigation goes to the IdP
    // asking for it.
    let xhr = gw.get(
        "/admin/users",
        &format!("{cookies}Accept: application/json\r\n"),
    );
    assert_eq!(xhr.status, 401);
    assert!(xhr
        .header("www-authenticate")
        .unwrap()
        .contains("insufficient_user_authentication"));
    let nav = gw.get("/admin/users", &format!("{cookies}Accept: text/html\r\n"));
    assert_eq!(nav.status, 302, "{}", nav.body);
    let to = url::Url::parse(nav.header("location").unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(q["acr_values"], "gold");
    assert_eq!(q["max_age"], "600");

    // The IdP answers with "silver" again: refused. With "gold": the admin area opens.
    let mut weak = claims(&stub, &q["nonce"]);
    weak["acr"] = json!("silver");
    *stub.next.lock().unwrap() = TokenAnswer::IdToken(stub.key.sign(&weak));
    let r = callback(
        &gw,
        &format!("code=c&state={}&iss={iss_param}", q["state"]),
        Some(&s.binding),
    );
    assert!(refused(&r), "{} {}", r.status, r.body);
    assert_eq!(
        metric(
            &gw,
            "gatehouse_logins_total{idp=\"stub\",result=\"acr_not_satisfied\"}"
        ),
        1.0
    );
    let nav = gw.get("/admin/users", &format!("{cookies}Accept: text/html\r\n"));
    let to = url::Url::parse(nav.header("location").unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    let mut strong = claims(&stub, &q["nonce"]);
    strong["acr"] = json!("gold");
    strong["auth_time"] = json!(now());
    *stub.next.lock().unwrap() = TokenAnswer::IdToken(stub.key.sign(&strong));
    let r = callback(
        &gw,
        &format!("code=c&state={}&iss={iss_param}", q["state"]),
        Some(&s.binding),
    );
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(r.header("location"), Some("/admin/users"));
    let stronger = r.headers["set-cookie"]
        .iter()
        .find(|c| c.starts_with("gatehouse="))
        .unwrap();
    let stronger = stronger.split(';').next().unwrap().to_string();
    assert_ne!(stronger, session, "a new session id after the new login");
    let admin = gw.get(
        "/admin/users",
        &format!("Cookie: {stronger}\r\nAccept: application/json\r\n"),
    );
    assert_eq!(admin.status, 200, "{}", admin.body);
    // Policies see the login's acr.
    assert_eq!(
        admin.echoed().header("x-auth-request-user"),
        Some("mallory-target")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_and_post_clients_authenticate_as_configured() {
    let stub = stub().await;
    let app = TestServer::echo("app").await;
    let iss_param: String = url::form_urlencoded::byte_serialize(stub.issuer.as_bytes()).collect();
    for (variant, config) in [
        (
            "public",
            config(&stub, &app).replace("client_secret = \"stub-secret\"\n", ""),
        ),
        (
            "post",
            config(&stub, &app).replace(
                "client_secret = \"stub-secret\"\n",
                "client_secret = \"stub-secret\"\nclient_auth = \"client_secret_post\"\n",
            ),
        ),
    ] {
        let gw = Gateway::start(&config);
        let s = start(&gw, "/");
        *stub.next.lock().unwrap() = TokenAnswer::IdToken(stub.key.sign(&claims(&stub, &s.nonce)));
        let r = callback(
            &gw,
            &format!("code=c&state={}&iss={iss_param}", s.state),
            Some(&s.binding),
        );
        assert_eq!(r.status, 302, "{variant}: {}", r.body);
        let req = stub.token_requests.lock().unwrap().last().cloned().unwrap();
        assert!(
            req.header("authorization").is_none(),
            "{variant}: no Basic auth"
        );
        assert!(
            req.body.contains("client_id=gatehouse"),
            "{variant}: {}",
            req.body
        );
        assert!(
            req.body.contains("code_verifier="),
            "{variant}: PKCE always"
        );
        assert_eq!(
            req.body.contains("client_secret=stub-secret"),
            variant == "post",
            "{variant}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_auth_age_needs_the_providers_auth_time() {
    let stub = stub().await;
    let app = TestServer::echo("app").await;
    let config = config(&stub, &app).replace(
        "[reserved_limit]",
        "[[route]]\nname = \"admin\"\npath = \"/admin/\"\nupstream = \"app\"\nauth = [\"session\"]\nmax_auth_age = \"5m\"\n\n[reserved_limit]",
    );
    let gw = Gateway::start(&config);
    let iss_param: String = url::form_urlencoded::byte_serialize(stub.issuer.as_bytes()).collect();
    let session_of = |r: &Response| {
        r.headers["set-cookie"]
            .iter()
            .find(|c| c.starts_with("gatehouse="))
            .and_then(|c| c.split(';').next())
            .map(str::to_string)
    };
    // An ordinary login whose ID token does not say when the person authenticated (the
    // provider may have reused a session of last week).
    let s = start(&gw, "/");
    *stub.next.lock().unwrap() = TokenAnswer::IdToken(stub.key.sign(&claims(&stub, &s.nonce)));
    let r = callback(
        &gw,
        &format!("code=c&state={}&iss={iss_param}", s.state),
        Some(&s.binding),
    );
    assert_eq!(r.status, 302, "{}", r.body);
    let session = session_of(&r).unwrap();
    let cookies = format!("Cookie: {session}; {}\r\n", s.binding);

    // The admin area wants a login of the last 5 minutes: an unknown time is not recent.
    let xhr = gw.get(
        "/admin/x",
        &format!("{cookies}Accept: application/json\r\n"),
    );
    assert_eq!(xhr.status, 401, "{}", xhr.body);
    assert_eq!(app.hit_count(), 0);
    let step_up = |gw: &Gateway| {
        let nav = gw.get("/admin/x", &format!("{cookies}Accept: text/html\r\n"));
        assert_eq!(nav.status, 302, "{}", nav.body);
        let to = url::Url::parse(nav.header("location").unwrap()).unwrap();
        let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
        assert_eq!(q["max_age"], "300");
        q
    };

    // Asked with max_age, the provider must say auth_time (OIDC Core §2): without it, or
    // with one too old, no session.
    for auth_time in [None, Some(now() - 3600)] {
        let q = step_up(&gw);
        let mut c = claims(&stub, &q["nonce"]);
        if let Some(t) = auth_time {
            c["auth_time"] = json!(t);
        }
        *stub.next.lock().unwrap() = TokenAnswer::IdToken(stub.key.sign(&c));
        let r = callback(
            &gw,
            &format!("code=c&state={}&iss={iss_param}", q["state"]),
            Some(&s.binding),
        );
        assert!(
            refused(&r),
            "auth_time {auth_time:?}: {} {}",
            r.status,
            r.body
        );
    }
    assert_eq!(
        metric(
            &gw,
            "gatehouse_logins_total{idp=\"stub\",result=\"missing_auth_time\"}"
        ),
        1.0
    );
    assert_eq!(app.hit_count(), 0);

    // A fresh authentication opens the admin area.
    let q = step_up(&gw);
    let mut c = claims(&stub, &q["nonce"]);
    c["auth_time"] = json!(now());
    *stub.next.lock().unwrap() = TokenAnswer::IdToken(stub.key.sign(&c));
    let r = callback(
        &gw,
        &format!("code=c&state={}&iss={iss_param}", q["state"]),
        Some(&s.binding),
    );
    assert_eq!(r.status, 302, "{}", r.body);
    let fresh = session_of(&r).unwrap();
    let admin = gw.get(
        "/admin/x",
        &format!("Cookie: {fresh}\r\nAccept: application/json\r\n"),
    );
    assert_eq!(admin.status, 200, "{}", admin.body);
}

/// Token answers as providers write them beyond RFC 6749 §5.1, which gatehouse always took:
/// 201, a text content type, no `token_type`, `scope` as a list, `expires_in` as a string.
/// An answer that is not JSON is refused with its status in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lax_token_answers_still_log_in_and_broken_ones_do_not() {
    let stub = stub().await;
    let app = TestServer::echo("app").await;
    let gw = Gateway::start(&config(&stub, &app));
    let iss_param: String = url::form_urlencoded::byte_serialize(stub.issuer.as_bytes()).collect();
    let s = start(&gw, "/lax");
    let answer = json!({
        "access_token": "at", "expires_in": "300", "scope": ["openid", "email"],
        "id_token": stub.key.sign(&claims(&stub, &s.nonce)),
    });
    *stub.next.lock().unwrap() = TokenAnswer::Raw(201, "text/plain", answer.to_string());
    let r = callback(
        &gw,
        &format!("code=c&state={}&iss={iss_param}", s.state),
        Some(&s.binding),
    );
    assert_eq!(r.status, 302, "{}\n{}", r.body, gw.log());
    assert_eq!(r.header("location"), Some("/lax"));

    let s = start(&gw, "/");
    *stub.next.lock().unwrap() =
        TokenAnswer::Raw(200, "text/html", "<html>maintenance</html>".to_string());
    let r = callback(
        &gw,
        &format!("code=c&state={}&iss={iss_param}", s.state),
        Some(&s.binding),
    );
    assert!(refused(&r) && r.status == 502, "{} {}", r.status, r.body);
    assert!(
        gw.log().contains("answered 200 OK without JSON"),
        "{}",
        gw.log()
    );
    assert!(
        metric(
            &gw,
            "gatehouse_logins_total{idp=\"stub\",result=\"token_endpoint_error\"}"
        ) >= 1.0
    );
}
