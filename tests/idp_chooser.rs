//! Several IdPs on one route (issue 16): the gateway's sign-in page, in Chromium and over
//! HTTP, against two real oidc-provider instances; `login_hint`/`domain_hint` and
//! `idp_domains`; the remembered choice; a session from one provider on a route that lists
//! only the other; the config errors.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::idp::OidcProvider;
use common::login::{client_for, provider_configured};
use common::*;
use serde_json::json;

/// Two providers, each with a client for a gateway on `port`.
fn two_providers(port: u16) -> (OidcProvider, OidcProvider) {
    let corp = provider_configured(client_for(&[port], json!({})), json!({}));
    let partners = provider_configured(client_for(&[port], json!({})), json!({}));
    (corp, partners)
}

/// `/` lists both providers; `/corp/` and `/partners/` one each.
fn config(corp: &OidcProvider, partners: &OidcProvider, app: &TestServer) -> String {
    format!(
        r#"{}
[session]

[[idp]]
name = "corp"
issuer = "{}"
client_id = "gatehouse"
client_secret = "gatehouse-test-secret"
scopes = ["openid", "profile", "email", "groups"]
display_name = "Corp staff"
idp_domains = ["corp.example"]

[[idp]]
name = "partners"
issuer = "{}"
client_id = "gatehouse"
client_secret = "gatehouse-test-secret"
scopes = ["openid", "profile", "email", "groups"]
display_name = "Partners <& guests>"
logo_url = "http://{}/logo.png"
idp_domains = ["partners.example"]

{}
[[route]]
name = "app"
path = "/"
upstream = "app"
auth = ["session"]
idp = ["corp", "partners"]

[[route]]
name = "corp"
path = "/corp/"
upstream = "app"
auth = ["session"]
idp = "corp"

[[route]]
name = "partners"
path = "/partners/"
upstream = "app"
auth = ["session"]
idp = ["partners"]

[[route]]
name = "fresh"
path = "/fresh/"
upstream = "app"
auth = ["session"]
idp = ["corp", "partners"]
max_auth_age = "1s"

[[route]]
name = "guests"
path = "/guests/"
upstream = "app"
auth = ["session"]
idp = ["corp", "partners"]
domain_hint = "Partners.example"
"#,
        base_config("public_url = \"http://127.0.0.1:{port}\"\nallowed_hosts = [\"127.0.0.1\"]"),
        corp.issuer,
        partners.issuer,
        app.addr,
        upstream_block("app", &[app.addr], ""),
    )
}

/// A person picks "partners" on the sign-in page with the keyboard, logs in there, lands on
/// the app as partners' bob; next time the page puts (and focuses) partners first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_chooses_a_provider_on_the_sign_in_page() {
    let port = free_port();
    let (corp, partners) = two_providers(port);
    let app = TestServer::echo("app").await;
    let gw = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        &config(&corp, &partners, &app),
        port,
    );
    let flow = common::chromium::run(
        "chooser",
        &json!({
            "base": gw.url(""),
            "path": "/reports?q=1",
            "user": "bob",
            "choose": "partners",
            "otherPath": "/corp/x",
        }),
        Duration::from_secs(150),
        || format!("{}\n{}\n{}", gw.log(), corp.output(), partners.output()),
    )
    .await;

    // The page: the gateway's own, at /_gatehouse/login, both names (escaped as text).
    assert!(
        flow.url("sign-in")
            .starts_with(&gw.url("/_gatehouse/login?rd=%2Freports%3Fq%3D1&route=app")),
        "{}",
        flow.url("sign-in")
    );
    assert_eq!(flow.status("sign-in"), 200);
    let text = flow.text("sign-in");
    assert!(text.contains("Sign in"), "{text}");
    assert!(text.contains("Corp staff"), "{text}");
    assert!(text.contains("Partners <& guests>"), "{text}");
    let first: serde_json::Value = serde_json::from_str(flow.text("sign-in-focus")).unwrap();
    assert_eq!(first["buttons"], json!(["corp", "partners"]));
    assert_eq!(
        first["logos"],
        json!([format!("http://{}/logo.png", app.addr)])
    );
    // Keyboard only: Tab reaches the buttons in order.
    let tabbed: Vec<Option<String>> = serde_json::from_str(flow.text("tabbed")).unwrap();
    assert_eq!(
        tabbed.last().cloned().flatten().as_deref(),
        Some("partners")
    );
    assert!(tabbed.contains(&Some("corp".to_string())), "{tabbed:?}");

    // The login happened at the second provider, and came back to the page asked for.
    assert!(flow.url("provider-login").starts_with(&partners.issuer));
    assert_eq!(flow.url("landed"), gw.url("/reports?q=1"));
    assert_eq!(
        flow.echoed("landed", "x-auth-request-user"),
        Some(format!("{}#bob", partners.issuer)),
        "two issuers: the subject is issuer-qualified"
    );
    let info: serde_json::Value = serde_json::from_str(flow.text("userinfo")).unwrap();
    assert_eq!(info["idp"], "partners");
    assert_eq!(info["iss"], partners.issuer);
    // A route for corp alone does not take partners' session.
    assert_eq!(flow.status("script-other"), 401);

    // The remembered choice: a Lax, HttpOnly cookie; partners first and focused, no redirect.
    let remembered = flow.step("landed")["cookies"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "gatehouse_idp"))
        .cloned()
        .expect("the choice is remembered");
    assert_eq!(remembered["sameSite"], "Lax");
    assert_eq!(remembered["httpOnly"], true);
    assert_eq!(flow.status("sign-in-again"), 200);
    assert!(flow
        .url("sign-in-again")
        .starts_with(&gw.url("/_gatehouse/login")));
    assert!(flow.text("sign-in-again").contains("Last used"));
    let again: serde_json::Value = serde_json::from_str(flow.text("sign-in-again-focus")).unwrap();
    assert_eq!(again["buttons"], json!(["partners", "corp"]));
    assert_eq!(again["active"], "partners");
    // Scripts still get the JSON 401.
    assert_eq!(flow.status("script"), 401);
    assert!(
        flow.text("script").starts_with('{'),
        "{}",
        flow.text("script")
    );
    assert_eq!(flow.csp_violations(), Vec::<String>::new());
}

/// A hint whose domain a provider claims skips the page and is passed on; the session from
/// one provider opens only routes that list it; the page keeps `rd` safe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_skip_the_page_and_sessions_stay_with_their_provider() {
    let port = free_port();
    let (corp, partners) = two_providers(port);
    let app = TestServer::echo("app").await;
    let gw = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        &config(&corp, &partners, &app),
        port,
    );
    let context = || format!("{}\n{}\n{}", gw.log(), corp.output(), partners.output());
    let browser = Browser::new();

    // No hint: to the sign-in page with the route and the return target.
    let page = browser.get(&gw.url("/docs?x=1")).await;
    assert_eq!(page.status, 302, "{}", context());
    let to_page = page.location().unwrap();
    assert_eq!(
        to_page,
        gw.url("/_gatehouse/login?rd=%2Fdocs%3Fx%3D1&route=app")
    );
    let chooser = browser.get(&to_page).await;
    assert_eq!(chooser.status, 200);
    assert!(chooser.body.contains("Partners &lt;&amp; guests&gt;"));
    assert!(chooser.body.contains("name=\"idp\" value=\"corp\""));
    assert!(chooser.body.contains("name=\"rd\" value=\"/docs?x=1\""));
    let csp = chooser.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains(&format!("img-src http://{}", app.addr)),
        "{csp}"
    );
    // A script: the 401 JSON, never the page.
    let script = browser.fetch(&gw.url("/docs")).await;
    assert_eq!(script.status, 401);
    assert!(script.body.starts_with('{'));
    // rd stays a path on this site.
    let evil = browser
        .get(&gw.url("/_gatehouse/login?rd=%2F%2Fevil.example&route=app"))
        .await;
    assert!(
        evil.body.contains("name=\"rd\" value=\"/\""),
        "{}",
        evil.body
    );
    // Hints are carried to the page's form.
    let hinted = browser
        .get(&gw.url("/_gatehouse/login?rd=/&route=app&login_hint=%22%3E%3Cx"))
        .await;
    assert_eq!(hinted.status, 200);
    assert!(hinted
        .body
        .contains("name=\"login_hint\" value=\"&quot;&gt;&lt;x\""));

    // domain_hint or login_hint naming a claimed domain: straight to that provider.
    let by_domain = browser.get(&gw.url("/?domain_hint=corp.example")).await;
    let location = by_domain.location().unwrap_or_default();
    assert!(
        location.starts_with(&format!("{}/auth?", corp.issuer))
            && location.contains("domain_hint=corp.example"),
        "{location}"
    );
    // A route's domain_hint does the same when the request names no domain.
    let by_route = browser.get(&gw.url("/guests/a")).await;
    let location = by_route.location().unwrap_or_default();
    assert!(
        location.starts_with(&format!("{}/auth?", partners.issuer))
            && location.contains("domain_hint=partners.example"),
        "{location}"
    );
    let overridden = browser
        .get(&gw.url("/guests/a?login_hint=ann@corp.example"))
        .await;
    assert!(overridden
        .location()
        .unwrap_or_default()
        .starts_with(&format!("{}/auth?", corp.issuer)));
    let unclaimed = browser
        .get(&gw.url("/?login_hint=eve@elsewhere.example"))
        .await;
    assert!(unclaimed
        .location()
        .unwrap_or_default()
        .contains("/_gatehouse/login?rd=%2F%3Flogin_hint%3Deve%40elsewhere.example&route=app&login_hint=eve%40elsewhere.example"));
    let (landed, visited) = browser
        .login(&gw.url("/start?login_hint=bob@Partners.example"), "bob")
        .await;
    assert!(
        visited[1].starts_with(&format!("{}/auth?", partners.issuer))
            && visited[1].contains("login_hint=bob%40Partners.example"),
        "{visited:?}"
    );
    assert!(
        !visited.iter().any(|v| v.contains("/_gatehouse/login")),
        "{visited:?}"
    );
    assert_eq!(landed.status, 200, "{}", context());
    assert_eq!(
        landed.echoed_header("x-auth-request-user"),
        Some(format!("{}#bob", partners.issuer))
    );

    // partners' session: fine on routes listing partners, not on corp's.
    let ok = browser.fetch(&gw.url("/partners/a")).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.echoed_header("x-auth-request-issuer").as_deref(),
        Some(partners.issuer.as_str())
    );
    let refused = browser.fetch(&gw.url("/corp/a")).await;
    assert_eq!(refused.status, 401);
    assert!(!refused.body.contains("bob"));
    let navigation = browser.get(&gw.url("/corp/a")).await;
    assert_eq!(navigation.status, 302);
    assert!(navigation
        .location()
        .unwrap_or_default()
        .starts_with(&format!("{}/auth?", corp.issuer)));

    // A step-up on a route with both goes back to the session's own provider, not the page.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let step_up = browser.get(&gw.url("/fresh/a")).await;
    assert_eq!(step_up.status, 302);
    let location = step_up.location().unwrap_or_default();
    assert!(
        location.starts_with(&format!("{}/auth?", partners.issuer))
            && location.contains("max_age=1"),
        "{location}"
    );

    // Choosing on the page remembers it; the provider it starts is the one chosen.
    let chosen = browser
        .get(&gw.url("/_gatehouse/login?rd=/&idp=corp"))
        .await;
    assert_eq!(chosen.status, 302);
    assert!(chosen
        .location()
        .unwrap_or_default()
        .starts_with(&format!("{}/auth?", corp.issuer)));
    assert!(
        chosen
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("gatehouse_idp=corp;") && c.contains("SameSite=Lax")),
        "{:?}",
        chosen.set_cookies()
    );
    let unknown = browser
        .get(&gw.url("/_gatehouse/login?rd=/&idp=nobody"))
        .await;
    assert_eq!(unknown.status, 404);
}

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn idp_lists_and_sign_in_settings_are_checked_with_their_line() {
    let idp = |name: &str, extra: &str| {
        format!("[[idp]]\nname = \"{name}\"\nissuer = \"https://{name}.example.com\"\nclient_id = \"gh\"\n{extra}\n")
    };
    let text_with = |idp_extra: &str, route_line: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\npublic_url = \"https://app.example.com\"\n\n[session]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\n{}\n{}\n[upstream.app]\nservers = [\"127.0.0.1:8000\"]\n\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\nauth = [\"session\"]\n{route_line}\n",
            idp("corp", "idp_domains = [\"corp.example\"]"),
            idp("partners", idp_extra),
        )
    };
    for (idp_extra, route_line, bad_line, message) in [
        (
            "",
            "idp = [\"corp\", \"nobody\"]",
            "idp = [\"corp\", \"nobody\"]",
            "names unknown idp \"nobody\"",
        ),
        (
            "",
            "idp = [\"corp\", \"corp\"]",
            "idp = [\"corp\", \"corp\"]",
            "lists idp \"corp\" twice",
        ),
        ("", "idp = []", "idp = []", "lists no idp"),
        (
            "",
            "idp = \"nobody\"",
            "idp = \"nobody\"",
            "names unknown idp \"nobody\"",
        ),
        (
            "logo_url = \"javascript:alert(1)\"",
            "idp = [\"corp\", \"partners\"]",
            "logo_url = \"javascript:alert(1)\"",
            "must be an absolute http(s) URL",
        ),
        (
            "display_name = \"\"",
            "idp = [\"corp\", \"partners\"]",
            "display_name = \"\"",
            "display_name must hold",
        ),
        (
            "idp_domains = [\"corp.example\"]",
            "idp = [\"corp\", \"partners\"]",
            "idp_domains = [\"corp.example\"]",
            "already in idp \"corp\"",
        ),
        (
            "",
            "idp = [\"corp\", \"partners\"]\ndomain_hint = \"a b\"",
            "domain_hint = \"a b\"",
            "must be an email domain",
        ),
        (
            "idp_domains = [\"not a domain\"]",
            "idp = [\"corp\", \"partners\"]",
            "idp_domains = [\"not a domain\"]",
            "must be an email domain",
        ),
    ] {
        let text = text_with(idp_extra, route_line);
        let (ok, stderr) = check(&text);
        let lines: Vec<&str> = text.lines().collect();
        let line = lines.iter().rposition(|l| *l == bad_line).unwrap() + 1;
        assert!(!ok, "{route_line} {idp_extra}");
        assert!(
            stderr.contains(&format!("gateway.toml:{line}:")) && stderr.contains(message),
            "{route_line} {idp_extra}: {stderr}"
        );
    }
    // The list and the single name both load.
    for route_line in ["idp = [\"corp\", \"partners\"]", "idp = \"partners\""] {
        let (ok, stderr) = check(&text_with(
            "display_name = \"Partners\"\nlogo_url = \"https://cdn.example/p.svg\"",
            route_line,
        ));
        assert!(ok, "{route_line}: {stderr}");
    }
}
