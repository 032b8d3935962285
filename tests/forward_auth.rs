//! Forward-auth: nginx (Debian's package) with `auth_request` and Caddy with
//! `forward_auth`, each running the recipe of docs/forward-auth.md as printed there, in front
//! of an upstream. The gateway judges the request the proxy asks about (from
//! `X-Forwarded-Method/-Uri/-Host`): 2xx with identity headers that the proxy passes on,
//! 401 (nginx turns it into the login redirect), 403 from the policy. Hostile clients send
//! identity headers in every spelling and a forged `X-Forwarded-For`.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::browser::Browser;
use common::front::{request_from, start_caddy, start_ingress_nginx, start_nginx, Front};
use common::login::provider_for;
use common::*;
use sha2::{Digest, Sha256};

fn key_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_asks_the_gateway() {
    let (nginx_port, gw_port) = (free_port(), free_port());
    let idp = provider_for(&[nginx_port], 600);
    let app = TestServer::echo("legacy").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        r#"default = "allow"
[roles]
admin = ["app:*"]
[[binding]]
role = "admin"
groups = ["admins"]
[[rule]]
name = "admin area"
paths = ["/admin/**"]
require = "app:admin"
"#,
    )
    .unwrap();
    let config = format!(
        r#"{}
[[idp]]
name = "test"
issuer = "{}"
client_id = "gatehouse"
client_secret = "gatehouse-test-secret"
scopes = ["openid", "profile", "email", "groups"]

[[api_key]]
name = "ops"
hash = "{}"
subject = "svc-ops"
groups = ["admins"]

[[api_key]]
name = "reporting"
hash = "{}"
subject = "svc-reporting"
groups = ["staff"]

[headers]
assertion = true

{}
[[route]]
name = "legacy"
path = "/"
upstream = "legacy"
auth = ["session", "api_key"]
policy = "policy.toml"
"#,
        base_config(&format!(
            "public_url = \"http://127.0.0.1:{nginx_port}\"\ntrusted_proxies = [\"127.0.0.1/32\"]\nallowed_hosts = [\"127.0.0.1\"]"
        )),
        idp.issuer,
        key_hash("ops-key-0123456789"),
        key_hash("reporting-key-0123456789"),
        upstream_block("legacy", &[app.addr], ""),
    );
    let gw = Gateway::start_on(dir, &config, gw_port);
    let nginx = start_nginx(nginx_port, gw_port, app.addr.port());
    let gw_log = || format!("{}\n{}", gw.log(), nginx.log());
    let through = |path: &str, headers: &str| {
        raw_request(
            nginx_port,
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap_or_else(|| panic!("nginx did not answer\n{}", gw_log()))
    };

    // No credential: the gateway says 401, nginx turns it into the login redirect.
    let r = through("/reports", "Accept: text/html\r\n");
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(
        r.header("location")
            .map(|l| l.ends_with("/_gatehouse/login?rd=/reports")),
        Some(true)
    );
    let hits_before = app.hit_count();
    // A forged identity header from the client is overwritten by nginx with the gateway's.
    let ok = through(
        "/reports",
        "X-Api-Key: reporting-key-0123456789\r\nX-Auth-Request-User: root\r\n",
    );
    assert_eq!(ok.status, 200, "{}\n{}", ok.body, gw_log());
    assert_eq!(
        ok.echoed().header("x-auth-request-user"),
        Some("svc-reporting")
    );
    assert_eq!(ok.echoed().header("x-auth-request-groups"), Some("staff"));
    assert!(ok
        .echoed()
        .header("x-gatehouse-assertion")
        .is_some_and(|a| a.split('.').count() == 3));
    // The policy judges the forwarded path: staff may not enter /admin, admins may.
    let denied = through("/admin/users", "X-Api-Key: reporting-key-0123456789\r\n");
    assert_eq!(denied.status, 403, "{}", denied.body);
    let admin = through("/admin/users", "X-Api-Key: ops-key-0123456789\r\n");
    assert_eq!(admin.status, 200);
    assert_eq!(
        admin.echoed().header("x-auth-request-user"),
        Some("svc-ops")
    );
    let wrong = through("/reports", "X-Api-Key: wrong-key-0123456789\r\n");
    assert_eq!(
        wrong.status, 302,
        "a bad key is a 401 for nginx (then the login redirect)"
    );
    assert_eq!(
        app.hit_count(),
        hits_before + 2,
        "refused requests never reach the upstream"
    );

    // A browser session through nginx: login at the provider, the callback through nginx,
    // then every request checked by auth_request with the session cookie.
    let browser = Browser::new();
    let (page, visited) = browser
        .login(&format!("http://127.0.0.1:{nginx_port}/dashboard"), "alice")
        .await;
    assert_eq!(page.status, 200, "{visited:?} {}\n{}", page.body, gw.log());
    assert_eq!(
        page.echoed_header("x-auth-request-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        page.echoed_header("x-auth-request-groups").as_deref(),
        Some("admins,staff")
    );

    // Traefik and Caddy pass the answer to the client: with ?redirect=true a browser
    // navigation gets the login redirect itself, a script still gets 401.
    let nav = gw.get(
        "/_gatehouse/auth?redirect=true",
        "X-Forwarded-Method: GET\r\nX-Forwarded-Uri: /reports?q=1\r\nX-Forwarded-Host: 127.0.0.1\r\nAccept: text/html\r\n",
    );
    assert_eq!(nav.status, 302, "{}", nav.body);
    assert!(nav.header("location").unwrap().starts_with(&idp.issuer));
    let script = gw.get(
        "/_gatehouse/auth?redirect=true",
        "X-Forwarded-Method: GET\r\nX-Forwarded-Uri: /reports\r\nX-Forwarded-Host: 127.0.0.1\r\nAccept: application/json\r\n",
    );
    assert_eq!(script.status, 401);

    // Forward-auth from a peer that is not a trusted proxy is refused.
    let other_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        gw.path().join("policy.toml"),
        other_dir.path().join("policy.toml"),
    )
    .unwrap();
    let untrusted = Gateway::start_in(
        other_dir,
        &config.replace(
            "trusted_proxies = [\"127.0.0.1/32\"]",
            "trusted_proxies = [\"10.0.0.0/8\"]",
        ),
    );
    let direct = untrusted.get(
        "/_gatehouse/auth",
        "X-Forwarded-Uri: /reports\r\nX-Api-Key: ops-key-0123456789\r\n",
    );
    assert_eq!(direct.status, 403, "{}", direct.body);
    assert!(untrusted.log().contains("not in server.trusted_proxies"));
    drop(nginx);
}

/// The gateway behind a forward-auth proxy on `front_port`: API keys, a claim-mapped header,
/// the assertion, and a policy that judges the client's address.
fn hostile_gateway(front_port: u16, app: &TestServer) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        r#"default = "allow"
[[rule]]
name = "office network"
paths = ["/office/**"]
when = 'ip_in_cidr(request.client_ip, "10.0.0.0/8")'
allow = true
[[rule]]
name = "office closed to others"
paths = ["/office/**"]
deny = true
[[rule]]
name = "the second loopback address"
paths = ["/from-two/**"]
when = 'request.client_ip == "127.0.0.2"'
allow = true
[[rule]]
name = "nobody else"
paths = ["/from-two/**"]
deny = true
"#,
    )
    .unwrap();
    let config = format!(
        r#"{}
[[api_key]]
name = "reporting"
hash = "{}"
subject = "svc-reporting"
groups = ["staff"]

[headers]
assertion = true
claims = {{ "X-Auth-Request-Department" = "department" }}

{}
[[route]]
name = "legacy"
path = "/"
upstream = "legacy"
auth = ["api_key"]
policy = "policy.toml"
"#,
        base_config(&format!(
            "public_url = \"http://127.0.0.1:{front_port}\"\ntrusted_proxies = [\"127.0.0.1/32\"]\nallowed_hosts = [\"127.0.0.1\"]"
        )),
        key_hash("reporting-key-0123456789"),
        upstream_block("legacy", &[app.addr], ""),
    );
    Gateway::start_in(dir, &config)
}

/// Every spelling of every identity name an app could read, and forged client addresses.
const FORGED: &str = "X-Auth-Request-User: mallory\r\nx-auth-request-user: mallory\r\n\
X-AUTH-REQUEST-EMAIL: mallory@evil.example\r\nX-Auth-Request-Preferred-Username: mallory\r\n\
X-Auth-Request-Groups: admins\r\nX-Auth-Request-Department: finance\r\n\
X-Auth-Request-Access-Token: forged\r\nX_Auth_Request_User: mallory\r\n\
X-Auth-Request_Groups: admins\r\nX.Auth.Request.User: mallory\r\nX~Auth~Request~Groups: admins\r\n\
X+Auth+Request+Groups: admins\r\nX|Auth|Request|User: mallory\r\nX-Auth!Request-Email: m@evil.example\r\n\
x_auth_request_email: mallory@evil.example\r\nX-Gatehouse-Assertion: forged\r\n\
X_Gatehouse_Assertion: forged\r\nX-Forwarded-For: 10.9.9.9\r\nX-Real-IP: 10.9.9.9\r\n\
Forwarded: for=10.9.9.9\r\n";

/// A header name as CGI, PHP and WSGI read it: lower case, every separator a dash.
fn as_apps_read_it(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Through `front` from 127.0.0.2, with every forgery: the app sees exactly the gateway's
/// identity, and the gateway judged the client's real address.
async fn nothing_forged_passes(front: &Front, gw: &Gateway, app: &TestServer) {
    let two = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let context = || format!("{}\n{}", gw.log(), front.log());
    let send = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: reporting-key-0123456789\r\n{FORGED}Connection: close\r\n\r\n"
        )
    };
    let ok = request_from(two, front.port, &send("/from-two/page"))
        .await
        .unwrap_or_else(|| panic!("no answer\n{}", context()));
    assert_eq!(
        ok.status,
        200,
        "the gateway did not judge 127.0.0.2: {}\n{}",
        ok.body,
        context()
    );
    let echoed = ok.echoed();
    let mut identity: Vec<(String, &str)> = echoed
        .headers
        .iter()
        .map(|(k, v)| (as_apps_read_it(k), v.as_str()))
        .filter(|(k, _)| k.starts_with("x-auth-request-") || k.starts_with("x-gatehouse-"))
        .collect();
    identity.sort();
    let names: Vec<&str> = identity.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "x-auth-request-groups",
            "x-auth-request-user",
            "x-gatehouse-assertion"
        ],
        "{:?}",
        echoed.headers
    );
    assert_eq!(identity[0].1, "staff");
    assert_eq!(identity[1].1, "svc-reporting");
    assert_eq!(identity[2].1.split('.').count(), 3, "{}", identity[2].1);
    // A forged address would open the office network's area: the real one does not.
    let hits = app.hit_count();
    let office = request_from(two, front.port, &send("/office/page"))
        .await
        .unwrap_or_else(|| panic!("no answer\n{}", context()));
    assert_eq!(office.status, 403, "{}\n{}", office.body, context());
    assert_eq!(app.hit_count(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_recipe_lets_no_forged_identity_or_address_through() {
    let port = free_port();
    let app = TestServer::echo("legacy").await;
    let gw = hostile_gateway(port, &app);
    let nginx = start_nginx(port, gw.port, app.addr.port());
    nothing_forged_passes(&nginx, &gw, &app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_recipe_lets_no_forged_identity_or_address_through() {
    let port = free_port();
    let app = TestServer::echo("legacy").await;
    let gw = hostile_gateway(port, &app);
    let caddy = start_caddy(port, gw.port, app.addr.port());
    nothing_forged_passes(&caddy, &gw, &app).await;
}

/// ingress-nginx passes the client's headers on to the auth request: a client's
/// `X-Forwarded-Uri` naming an allowed path must not decide what is judged, and nothing
/// forged reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_nginx_annotations_let_no_forged_identity_path_or_address_through() {
    let port = free_port();
    let app = TestServer::echo("legacy").await;
    let gw = hostile_gateway(port, &app);
    let ingress = start_ingress_nginx(port, gw.port, app.addr.port());
    nothing_forged_passes(&ingress, &gw, &app).await;

    let two = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let hits = app.hit_count();
    for forged in [
        "X-Forwarded-Uri: /from-two/page\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Host: 127.0.0.1\r\n",
        "X-Forwarded-Uri: /from-two/page\r\nX-Original-Method: GET\r\n",
    ] {
        let sent = format!(
            "GET /office/page HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: reporting-key-0123456789\r\n{forged}Connection: close\r\n\r\n"
        );
        let r = request_from(two, ingress.port, &sent)
            .await
            .unwrap_or_else(|| panic!("no answer\n{}", gw.log()));
        assert_eq!(r.status, 403, "{}\n{}", r.body, gw.log());
    }
    // An absolute-form request line routes by its own host while X-Original-URL carries the
    // Host header's: the two must agree.
    let sent = "GET http://127.0.0.1/from-two/page HTTP/1.1\r\nHost: other.example\r\nX-Api-Key: reporting-key-0123456789\r\nConnection: close\r\n\r\n";
    let r = request_from(two, ingress.port, sent)
        .await
        .unwrap_or_else(|| panic!("no answer\n{}", gw.log()));
    assert_eq!(r.status, 403, "{}\n{}", r.body, gw.log());
    assert_eq!(app.hit_count(), hits, "the app was reached");
}

/// A question that does not name the request it asks about is refused, not judged as `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_without_its_request_is_refused() {
    let app = TestServer::echo("legacy").await;
    let gw = hostile_gateway(free_port(), &app);
    for (query, headers) in [
        ("", "X-Forwarded-Method: GET\r\n"),
        ("", "X-Forwarded-Uri: /page\r\n"),
        (
            "",
            "X-Forwarded-Uri: http://127.0.0.1/page\r\nX-Forwarded-Method: GET\r\n",
        ),
        (
            "?headers=x-original&host=127.0.0.1",
            "X-Forwarded-Uri: /page\r\nX-Forwarded-Method: GET\r\nX-Original-Method: GET\r\n",
        ),
        (
            "?headers=x-original&host=127.0.0.1",
            "X-Original-URL: /page\r\nX-Original-Method: GET\r\n",
        ),
        (
            "?headers=x-original&host=127.0.0.1",
            "X-Original-URL: http://127.0.0.1/page\r\n",
        ),
        // The host nginx routed by is not the one the client's Host header named, or unsaid.
        (
            "?headers=x-original&host=other.example",
            "X-Original-URL: http://127.0.0.1/page\r\nX-Original-Method: GET\r\n",
        ),
        (
            "?headers=x-original",
            "X-Original-URL: http://127.0.0.1/page\r\nX-Original-Method: GET\r\n",
        ),
        // A misspelt mode, and ingress-nginx asking without the mode: no X-Forwarded-* read.
        (
            "?headers=X-Original",
            "X-Forwarded-Uri: /page\r\nX-Forwarded-Method: GET\r\n",
        ),
        (
            "",
            "X-Forwarded-Uri: /page\r\nX-Forwarded-Method: GET\r\nX-Sent-From: nginx-ingress-controller\r\n",
        ),
    ] {
        let r = gw.get(
            &format!("/_gatehouse/auth{query}"),
            &format!("{headers}X-Api-Key: reporting-key-0123456789\r\n"),
        );
        assert_eq!(r.status, 403, "{query} {headers}: {}", r.body);
    }
    let ok = gw.get(
        "/_gatehouse/auth?headers=x-original&host=127.0.0.1",
        "X-Original-URL: http://127.0.0.1/page\r\nX-Original-Method: GET\r\nX-Api-Key: reporting-key-0123456789\r\n",
    );
    assert_eq!(ok.status, 200, "{}\n{}", ok.body, gw.log());
    assert_eq!(ok.header("x-auth-request-user"), Some("svc-reporting"));
}
