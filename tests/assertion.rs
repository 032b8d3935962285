//! `X-Gatehouse-Assertion`: an ES256 JWT per request that the upstream can verify against
//! `/_gatehouse/jwks.json`; a configured key is shared by instances, a forged header from
//! the client never arrives.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};

fn config(app: &TestServer, key_line: &str) -> String {
    format!(
        r#"{}
[[api_key]]
name = "ops"
hash = "sha256:{}"
subject = "svc-ops"
groups = ["admins", "staff"]

[headers]
assertion = true
{key_line}

{}
[[route]]
name = "legacy"
path = "/"
upstream = "legacy"
auth = ["api_key"]
"#,
        base_config("public_url = \"https://gw.example.com\""),
        hex::encode(Sha256::digest(b"ops-key-0123456789")),
        upstream_block("legacy", &[app.addr], ""),
    )
}

fn verify(gw: &Gateway, token: &str) -> serde_json::Value {
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&gw.get("/_gatehouse/jwks.json", "").body).unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("the assertion's key is published");
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["legacy"]);
    v.set_issuer(&["https://gw.example.com"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .expect("the assertion verifies")
        .claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_can_verify_who_they_serve() {
    let app = TestServer::echo("legacy").await;
    let gw = Gateway::start(&config(&app, ""));
    let r = gw.get(
        "/x",
        "X-Api-Key: ops-key-0123456789\r\nX-Gatehouse-Assertion: forged.by.client\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r
        .echoed()
        .header("x-gatehouse-assertion")
        .unwrap()
        .to_string();
    assert_ne!(token, "forged.by.client");
    let claims = verify(&gw, &token);
    assert_eq!(claims["sub"], "svc-ops");
    assert_eq!(claims["groups"], serde_json::json!(["admins", "staff"]));
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 60);
    // Unauthenticated routes carry none, and a client's own never passes.
    assert_eq!(
        gw.get("/x", "X-Gatehouse-Assertion: forged\r\n").status,
        401
    );

    // A shared key file: two instances publish the same key and sign verifiably.
    let dir = tempfile::tempdir().unwrap();
    let key = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    let pem = openssl::pkey::PKey::from_ec_key(key)
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();
    std::fs::write(dir.path().join("assertion.pem"), pem).unwrap();
    let key_line = format!(
        "assertion_key = \"{}\"",
        dir.path().join("assertion.pem").display()
    );
    let a = Gateway::start(&config(&app, &key_line));
    let b = Gateway::start(&config(&app, &key_line));
    let ja = a.get("/_gatehouse/jwks.json", "").body;
    assert_eq!(ja, b.get("/_gatehouse/jwks.json", "").body);
    let from_b = b
        .get("/y", "X-Api-Key: ops-key-0123456789\r\n")
        .echoed()
        .header("x-gatehouse-assertion")
        .unwrap()
        .to_string();
    assert_eq!(verify(&a, &from_b)["sub"], "svc-ops");
}
