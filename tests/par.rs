//! Pushed authorization requests (RFC 9126) against the real oidc-provider: a provider that
//! requires them (its discovery says so) gets them without any setting, `par = true` pushes
//! to one that does not require them, and the browser's trip to the provider carries only
//! `client_id` and the `request_uri`, never the state, nonce or PKCE challenge.

mod common;

use common::browser::Browser;
use common::login::{client_for, login_config, metric, provider_configured};
use common::*;
use serde_json::json;

const SECRET: &str = "secret = \"0123456789abcdef0123456789abcdef\"";

fn gateway(port: u16, idp: &common::idp::OidcProvider, app: &TestServer, extra: &str) -> Gateway {
    let config = login_config(idp, app, SECRET).replace(
        "extra_auth_params = { prompt = \"consent\" }",
        &format!("extra_auth_params = {{ prompt = \"consent\" }}\n{extra}"),
    );
    Gateway::start_on(tempfile::tempdir().unwrap(), &config, port)
}

/// A login through `gw`: the parameters of the browser's trip to the provider, then the page.
async fn pushed_login(gw: &Gateway, issuer: &str) {
    let browser = Browser::new();
    let first = browser.get(&gw.url("/dash")).await;
    assert_eq!(first.status, 302, "{}\n{}", first.body, gw.log());
    let to_idp = url::Url::parse(&first.location().unwrap()).unwrap();
    assert!(to_idp.as_str().starts_with(issuer), "{to_idp}");
    let mut names: Vec<String> = to_idp.query_pairs().map(|(k, _)| k.into_owned()).collect();
    names.sort();
    assert_eq!(names, ["client_id", "request_uri"], "{to_idp}");
    let (page, visited) = browser.login(&gw.url("/dash"), "alice").await;
    assert_eq!(page.status, 200, "{visited:?}\n{}\n{}", page.body, gw.log());
    assert_eq!(
        page.echoed_header("x-auth-request-user").as_deref(),
        Some("alice")
    );
    assert!(
        metric(
            gw,
            "gatehouse_logins_total{idp=\"test\",result=\"success\"}"
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_requires_par_gets_pushed_requests_unasked() {
    let port = free_port();
    let idp = provider_configured(
        client_for(&[port], json!({})),
        json!({ "accessTokenTTL": 600, "requirePar": true }),
    );
    let app = TestServer::echo("app").await;
    let gw = gateway(port, &idp, &app, "");
    pushed_login(&gw, &idp.issuer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn par_true_pushes_to_a_provider_that_does_not_require_it() {
    let port = free_port();
    let idp = provider_configured(
        client_for(
            &[port],
            json!({ "token_endpoint_auth_method": "client_secret_post" }),
        ),
        json!({ "accessTokenTTL": 600 }),
    );
    let app = TestServer::echo("app").await;
    let gw = gateway(
        port,
        &idp,
        &app,
        "par = true\nclient_auth = \"client_secret_post\"",
    );
    pushed_login(&gw, &idp.issuer).await;
}

/// `par = true` with a provider that has no PAR endpoint: discovery fails and says why, and
/// no login starts without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn par_true_without_an_endpoint_starts_no_login() {
    let stub = common::stub_idp::start("stub-key", json!({}), |_: &Request| {
        Reply::json(500, &json!({}))
    })
    .await;
    let app = TestServer::echo("app").await;
    let gw = Gateway::start(&format!(
        "{}\n[session]\n{SECRET}\n\n[[idp]]\nname = \"stub\"\nissuer = \"{}\"\nclient_id = \"gh\"\nclient_secret = \"s\"\npar = true\n\n{}\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\nauth = [\"session\"]\n",
        base_config("public_url = \"http://127.0.0.1:{port}\"\nallowed_hosts = [\"127.0.0.1\"]"),
        stub.issuer,
        upstream_block("app", &[app.addr], ""),
    ));
    let r = gw.get("/_gatehouse/login?rd=/", "Accept: text/html\r\n");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        gw.log()
            .contains("no pushed_authorization_request_endpoint"),
        "{}",
        gw.log()
    );
}
