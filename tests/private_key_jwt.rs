//! `client_auth = "private_key_jwt"` (RFC 7523) against the real oidc-provider, whose client
//! is registered with only that method and the public half of the gateway's key: a login
//! succeeds with RS256, PS256 and ES256 keys (the code exchange is authenticated by the
//! signed assertion alone), and the settings are checked at their line.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::browser::Browser;
use common::login::{client_for, login_config, metric, provider_configured};
use common::*;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use serde_json::{json, Value};

const SECRET: &str = "secret = \"0123456789abcdef0123456789abcdef\"";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A private key in PEM and the public JWK the provider registers for it.
fn key_pair(alg: &str) -> (Vec<u8>, Value) {
    let (key, jwk): (PKey<Private>, Value) = if alg == "ES256" {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = EcKey::generate(&group).unwrap();
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        let (mut x, mut y) = (
            openssl::bn::BigNum::new().unwrap(),
            openssl::bn::BigNum::new().unwrap(),
        );
        ec.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .unwrap();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&x.to_vec_padded(32).unwrap()), "y": b64(&y.to_vec_padded(32).unwrap())});
        (PKey::from_ec_key(ec).unwrap(), jwk)
    } else {
        let rsa = Rsa::generate(2048).unwrap();
        let jwk = json!({"kty": "RSA", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())});
        (PKey::from_rsa(rsa).unwrap(), jwk)
    };
    let mut jwk = jwk;
    jwk["kid"] = Value::from(format!("gh-{alg}"));
    (key.private_key_to_pem_pkcs8().unwrap(), jwk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_authenticate_with_a_signed_assertion_only() {
    for alg in ["RS256", "PS256", "ES256"] {
        let (pem, jwk) = key_pair(alg);
        let port = free_port();
        // The client has no secret: only the signed assertion can authenticate it.
        let mut client = client_for(
            &[port],
            json!({
                "token_endpoint_auth_method": "private_key_jwt",
                "token_endpoint_auth_signing_alg": alg,
                "jwks": {"keys": [jwk]},
            }),
        );
        client.as_object_mut().unwrap().remove("client_secret");
        let idp = provider_configured(client, json!({ "accessTokenTTL": 600 }));
        let app = TestServer::echo("app").await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.pem"), &pem).unwrap();
        let config = login_config(&idp, &app, SECRET).replace(
            "client_secret = \"gatehouse-test-secret\"",
            &format!(
                "client_auth = \"private_key_jwt\"\nclient_key_file = \"client.pem\"\nclient_key_id = \"gh-{alg}\"\nclient_key_alg = \"{alg}\""
            ),
        );
        let gw = Gateway::start_on(dir, &config, port);
        let (page, visited) = Browser::new().login(&gw.url("/dash"), "alice").await;
        assert_eq!(
            page.status,
            200,
            "{alg}: {visited:?}\n{}\n{}\n{}",
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
            1.0,
            "{alg}"
        );
    }
}

#[test]
fn client_key_settings_are_checked_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa_pem, _) = key_pair("RS256");
    std::fs::write(dir.path().join("rsa.pem"), &rsa_pem).unwrap();
    std::fs::write(dir.path().join("not-a-key.pem"), "hello").unwrap();
    for (setting, message) in [
        ("client_auth = \"private_key_jwt\"", "needs client_key_file"),
        ("client_auth = \"private_key_jwt\"\nclient_key_file = \"not-a-key.pem\"", "is not a PEM private key"),
        ("client_auth = \"private_key_jwt\"\nclient_key_file = \"missing.pem\"", "cannot read client key"),
        ("client_auth = \"private_key_jwt\"\nclient_key_file = \"rsa.pem\"\nclient_key_alg = \"ES256\"", "does not fit the key"),
        ("client_secret = \"s\"\nclient_key_file = \"rsa.pem\"", "client_key_file is for client_auth"),
    ] {
        let text = idp_config_text(setting);
        assert_refused_at(dir.path(), &text, setting, message);
    }
}
