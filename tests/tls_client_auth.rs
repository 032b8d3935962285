//! `client_auth = "tls_client_auth"` (RFC 8705): the real oidc-provider served over https
//! with a test CA, asking every connection for a client certificate; the gateway's client
//! is registered with no secret, only that method and the certificate's subject. A login
//! succeeds with the gateway's certificate and key; with a certificate of another CA the
//! code exchange is refused and no session is made.

mod common;

use common::browser::Browser;
use common::login::{client_for, login_config, metric, provider_configured};
use common::redis::TestPki;
use common::*;
use serde_json::json;

const SECRET: &str = "secret = \"0123456789abcdef0123456789abcdef\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_certificate_authenticates_the_code_exchange() {
    let pki = TestPki::new();
    let port = free_port();
    let mut client = client_for(
        &[port],
        json!({
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": "CN=client",
        }),
    );
    client.as_object_mut().unwrap().remove("client_secret");
    let idp = provider_configured(
        client,
        json!({
            "accessTokenTTL": 600,
            "tls": {"key": pki.path("server.key"), "cert": pki.path("server.pem"), "ca": pki.path("ca.pem")},
        }),
    );
    assert!(idp.issuer.starts_with("https://"), "{}", idp.issuer);
    let app = TestServer::echo("app").await;
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    let with_certificate = |cert: &str, key: &str| {
        login_config(&idp, &app, SECRET).replace(
            "client_secret = \"gatehouse-test-secret\"",
            &format!(
                "client_auth = \"tls_client_auth\"\ntls_client_cert_file = \"{}\"\ntls_client_key_file = \"{}\"\ntls_ca_file = \"{}\"",
                pki.path(cert),
                pki.path(key),
                pki.path("ca.pem")
            ),
        )
    };

    let gw = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        &with_certificate("client.pem", "client.key"),
        port,
    );
    let (page, visited) = Browser::trusting(&ca)
        .login(&gw.url("/dash"), "alice")
        .await;
    assert_eq!(
        page.status,
        200,
        "{visited:?}\n{}\n{}\n{}",
        page.body,
        gw.log(),
        idp.output()
    );
    assert_eq!(
        page.echoed_header("x-auth-request-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        metric(
            &gw,
            "gatehouse_logins_total{idp=\"test\",result=\"success\"}"
        ),
        1.0
    );
    drop(gw);

    // The server's own certificate (same CA, another subject) is not the client's.
    let gw = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        &with_certificate("server.pem", "server.key"),
        port,
    );
    let (page, visited) = Browser::trusting(&ca)
        .login(&gw.url("/dash"), "alice")
        .await;
    assert_eq!(page.status, 502, "{visited:?}\n{}\n{}", page.body, gw.log());
    assert!(page
        .set_cookies()
        .iter()
        .all(|c| !c.starts_with("gatehouse=")));
    assert_eq!(
        metric(
            &gw,
            "gatehouse_logins_total{idp=\"test\",result=\"success\"}"
        ),
        0.0
    );
}

#[test]
fn tls_client_auth_settings_are_checked_with_their_line() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    for (setting, message) in [
        ("client_auth = \"tls_client_auth\"".to_string(), "needs tls_client_cert_file"),
        (
            format!("client_auth = \"tls_client_auth\"\ntls_client_cert_file = \"{}\"", pki.path("client.pem")),
            "go together",
        ),
        (
            format!(
                "client_auth = \"tls_client_auth\"\ntls_client_cert_file = \"{}\"\ntls_client_key_file = \"{}\"",
                pki.path("client.pem"),
                pki.path("server.key")
            ),
            "is not the key of",
        ),
    ] {
        let text = idp_config_text(&setting);
        assert_refused_at(dir.path(), &text, &setting, message);
    }
}
