//! DPoP-bound bearer tokens (RFC 9449) from the real oidc-provider (its DPoP feature binds a
//! client-credentials token to the client's key: `cnf.jkt`), presented with proofs made
//! here: a good one passes once; a replay, another key, another method or URL, a stale or
//! future `iat`, a missing or wrong `ath`, a forged signature, no proof, the `Bearer`
//! scheme for a bound token and `DPoP` for an unbound one are refused, and the app never
//! sees a refused request nor any proof. A route with `dpop_nonce` hands out server nonces
//! (§9) and takes proofs only with a current one; instances that share the session secret
//! and a Redis share nonces and proof ids, even with no session store.

mod common;

use common::idp::OidcProvider;
use common::keys::{b64, now, TestKey};
use common::login::metric;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const API: &str = "urn:gatehouse:test-api";

fn provider() -> OidcProvider {
    OidcProvider::start(json!({
        "clients": [{
            "client_id": "svc", "client_secret": "svc-secret",
            "grant_types": ["client_credentials"], "redirect_uris": [], "response_types": [],
            "token_endpoint_auth_method": "client_secret_basic"
        }],
        "resources": { API: { "scope": "api:read", "audience": API } }
    }))
}

/// The proof's public key as the header carries it.
fn public_jwk(key: &TestKey) -> Value {
    let j = &key.jwk;
    json!({"kty": j["kty"], "crv": j["crv"], "x": j["x"], "y": j["y"]})
}

/// A DPoP proof by `key` for `htm` `htu`, `iat` seconds from now, with `ath` of `token`.
fn proof(key: &TestKey, htm: &str, htu: &str, token: Option<&str>, iat_offset: i64) -> String {
    let mut claims = json!({
        "htm": htm, "htu": htu, "iat": (now() as i64 + iat_offset),
        "jti": b64(&rand_bytes()),
    });
    if let Some(token) = token {
        claims["ath"] = Value::from(b64(&Sha256::digest(token.as_bytes())));
    }
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(key)});
    key.sign_with_header(&header, &claims)
}

/// The same, with the server's `nonce`.
fn proof_with_nonce(key: &TestKey, htu: &str, token: &str, nonce: &str) -> String {
    let claims = json!({
        "htm": "GET", "htu": htu, "iat": now(), "jti": b64(&rand_bytes()),
        "ath": b64(&Sha256::digest(token.as_bytes())), "nonce": nonce,
    });
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(key)});
    key.sign_with_header(&header, &claims)
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    openssl::rand::rand_bytes(&mut b).unwrap();
    b
}

/// A DPoP-bound access token for `key` (the token endpoint checks a proof too).
async fn bound_token(idp: &OidcProvider, key: &TestKey) -> String {
    let token_url = format!("{}/token", idp.issuer);
    let resp = reqwest::Client::new()
        .post(&token_url)
        .basic_auth("svc", Some("svc-secret"))
        .header("DPoP", proof(key, "POST", &token_url, None, 0))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", API),
            ("scope", "api:read"),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

fn gateway(idp: &OidcProvider, app: &EchoServer) -> Gateway {
    Gateway::start(&format!(
        r#"{}{}
[[bearer]]
issuer = "{}"
audiences = ["{API}"]
algorithms = ["RS256", "ES256"]

[[route]]
name = "api"
path = "/api"
upstream = "app"
auth = ["bearer"]

[[route]]
name = "strict"
path = "/strict"
upstream = "app"
auth = ["bearer"]
require_dpop = true
"#,
        base_config(""),
        upstream_block("app", &[app.addr], ""),
        idp.issuer
    ))
}

/// `GET path` as a client of `http://127.0.0.1:<port>` sends it.
fn get(gw: &Gateway, path: &str, authorization: &str, proofs: &[&str]) -> Response {
    let proofs: String = proofs.iter().map(|p| format!("DPoP: {p}\r\n")).collect();
    gw.raw(&format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: {authorization}\r\n{proofs}Connection: close\r\n\r\n",
        gw.port
    ))
}

fn refused(r: &Response, error: &str) {
    assert_eq!(r.status, 401, "{r:?}");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("DPoP algs=\""), "{challenge}");
    assert!(
        challenge.contains(&format!("error=\"{error}\"")),
        "{challenge}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_tokens_need_a_fresh_proof_of_their_key_for_this_request() {
    let idp = provider();
    let app = EchoServer::echo("app").await;
    let gw = gateway(&idp, &app);
    let key = TestKey::ec("dpop", Algorithm::ES256);
    let token = bound_token(&idp, &key).await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", gw.port);
    let dpop = format!("DPoP {token}");

    // A good proof: the app sees the identity, neither the token nor the proof.
    let good = proof(&key, "GET", &url("/api/orders"), Some(&token), 0);
    let ok = get(&gw, "/api/orders?page=2", &dpop, &[&good]);
    assert_eq!(ok.status, 200, "{ok:?}\n{}", gw.log());
    let echoed = ok.echoed();
    assert_eq!(echoed.header("x-auth-request-user"), Some("svc"));
    assert_eq!(echoed.header("authorization"), None);
    assert_eq!(echoed.header("dpop"), None);
    let hits = app.hit_count();

    // The same proof again.
    refused(
        &get(&gw, "/api/orders?page=2", &dpop, &[&good]),
        "invalid_dpop_proof",
    );
    let other = TestKey::ec("other", Algorithm::ES256);
    let forged = {
        // The bound key's JWK, another key's signature.
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(&key)});
        let claims = json!({"htm": "GET", "htu": url("/api/orders"), "iat": now(), "jti": b64(&rand_bytes()),
            "ath": b64(&Sha256::digest(token.as_bytes()))});
        other.sign_with_header(&header, &claims)
    };
    for (what, p) in [
        (
            "another key",
            proof(&other, "GET", &url("/api/orders"), Some(&token), 0),
        ),
        (
            "another method",
            proof(&key, "POST", &url("/api/orders"), Some(&token), 0),
        ),
        (
            "another URL",
            proof(&key, "GET", &url("/api/admin"), Some(&token), 0),
        ),
        (
            "another host",
            proof(
                &key,
                "GET",
                "http://evil.example/api/orders",
                Some(&token),
                0,
            ),
        ),
        (
            "stale",
            proof(&key, "GET", &url("/api/orders"), Some(&token), -600),
        ),
        (
            "from the future",
            proof(&key, "GET", &url("/api/orders"), Some(&token), 600),
        ),
        ("no ath", proof(&key, "GET", &url("/api/orders"), None, 0)),
        (
            "another token's ath",
            proof(&key, "GET", &url("/api/orders"), Some("other-token"), 0),
        ),
        ("a forged signature", forged),
        ("not a JWT", "abc".to_string()),
    ] {
        let r = get(&gw, "/api/orders", &dpop, &[&p]);
        assert_eq!(r.status, 401, "{what}: {r:?}");
        refused(&r, "invalid_dpop_proof");
    }
    // No proof, two proofs.
    refused(&get(&gw, "/api/orders", &dpop, &[]), "invalid_dpop_proof");
    let p1 = proof(&key, "GET", &url("/api/orders"), Some(&token), 0);
    let p2 = proof(&key, "GET", &url("/api/orders"), Some(&token), 0);
    refused(
        &get(&gw, "/api/orders", &dpop, &[&p1, &p2]),
        "invalid_dpop_proof",
    );
    // A bound token under the Bearer scheme, with a good proof.
    let p = proof(&key, "GET", &url("/api/orders"), Some(&token), 0);
    refused(
        &get(&gw, "/api/orders", &format!("Bearer {token}"), &[&p]),
        "invalid_token",
    );
    assert_eq!(app.hit_count(), hits, "a refused request reached the app");

    // The strict route takes the bound token with its proof, and no unbound one.
    let p = proof(&key, "GET", &url("/strict/x"), Some(&token), 0);
    assert_eq!(get(&gw, "/strict/x", &dpop, &[&p]).status, 200);
    let unbound = idp
        .client_credentials_token("svc", "svc-secret", API, Some("api:read"))
        .await;
    assert_eq!(
        get(&gw, "/api/orders", &format!("Bearer {unbound}"), &[]).status,
        200
    );
    refused(
        &get(&gw, "/strict/x", &format!("Bearer {unbound}"), &[]),
        "invalid_token",
    );
    // An unbound token under the DPoP scheme.
    let p = proof(&key, "GET", &url("/api/orders"), Some(&unbound), 0);
    refused(
        &get(&gw, "/api/orders", &format!("DPoP {unbound}"), &[&p]),
        "invalid_token",
    );

    assert_eq!(
        metric(&gw, "gatehouse_dpop_proofs_total{result=\"valid\"}"),
        2.0
    );
    assert_eq!(
        metric(&gw, "gatehouse_dpop_proofs_total{result=\"replayed\"}"),
        1.0
    );
    assert_eq!(
        metric(&gw, "gatehouse_dpop_proofs_total{result=\"wrong_key\"}"),
        1.0
    );
    assert!(metric(&gw, "gatehouse_dpop_proofs_total{result=\"stale\"}") >= 2.0);
}

/// Two instances keyed by one session secret, with Redis only for rate limits, behind one
/// name (`Host: api.example`): a nonce from one is good at the other, a proof used at one is
/// a replay at the other, and a proof without a current nonce gets `use_dpop_nonce` with a
/// fresh `DPoP-Nonce`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_nonces_and_proof_ids_are_shared_by_instances() {
    let idp = provider();
    let app = EchoServer::echo("app").await;
    let redis = common::redis::Redis::start();
    let config = format!(
        r#"{}{}
[session]
secret = "an-instance-shared-secret-0123456789"

[rate_limit_store]
kind = "redis"
redis_url = "{}"

[[bearer]]
issuer = "{}"
audiences = ["{API}"]
algorithms = ["ES256", "RS256"]

[[route]]
name = "api"
path = "/api"
upstream = "app"
auth = ["bearer"]
dpop_nonce = true
"#,
        base_config("public_url = \"https://api.example\""),
        upstream_block("app", &[app.addr], ""),
        redis.url(),
        idp.issuer
    );
    let (a, b) = (Gateway::start(&config), Gateway::start(&config));
    let key = TestKey::ec("dpop", Algorithm::ES256);
    let token = bound_token(&idp, &key).await;
    let dpop = format!("DPoP {token}");
    let htu = "https://api.example/api/orders";
    let get = |gw: &Gateway, proof: &str| {
        gw.raw(&format!(
            "GET /api/orders HTTP/1.1\r\nHost: api.example\r\nAuthorization: {dpop}\r\nDPoP: {proof}\r\nConnection: close\r\n\r\n"
        ))
    };

    // No nonce: refused, with one to use.
    let first = get(&a, &proof(&key, "GET", htu, Some(&token), 0));
    refused(&first, "use_dpop_nonce");
    let nonce = first
        .header("dpop-nonce")
        .expect("a DPoP-Nonce")
        .to_string();
    assert_eq!(nonce.len(), 32, "{nonce}");
    assert_eq!(app.hit_count(), 0);

    // A's nonce at B; the same proof again at A is a replay.
    let good = proof_with_nonce(&key, htu, &token, &nonce);
    let ok = get(&b, &good);
    assert_eq!(ok.status, 200, "{ok:?}\n{}", b.log());
    assert_eq!(ok.echoed().header("dpop"), None);
    refused(&get(&a, &good), "invalid_dpop_proof");
    assert_eq!(
        metric(&a, "gatehouse_dpop_proofs_total{result=\"replayed\"}"),
        1.0
    );

    // A made-up nonce, and a nonce of another key (a gateway with its own secret).
    let forged = b64(&[7u8; 24]);
    let r = get(&a, &proof_with_nonce(&key, htu, &token, &forged));
    refused(&r, "use_dpop_nonce");
    assert!(r.header("dpop-nonce").is_some());
    let other =
        Gateway::start(&config.replace("an-instance-shared-secret", "another-secret-of-its-own-"));
    let foreign = get(&other, &proof(&key, "GET", htu, Some(&token), 0));
    let foreign = foreign
        .header("dpop-nonce")
        .expect("a DPoP-Nonce")
        .to_string();
    refused(
        &get(&a, &proof_with_nonce(&key, htu, &token, &foreign)),
        "use_dpop_nonce",
    );
    assert!(metric(&a, "gatehouse_dpop_proofs_total{result=\"stale_nonce\"}") >= 2.0);
    assert_eq!(
        metric(&a, "gatehouse_dpop_proofs_total{result=\"nonce_required\"}"),
        1.0
    );
    assert_eq!(app.hit_count(), 1, "a refused request reached the app");
}
