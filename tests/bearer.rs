//! Bearer tokens and API keys end to end: the real gateway, a real JWKS served over HTTP by a
//! test server, tokens minted here, an echo upstream that shows what arrived.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::keys::*;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

const AUD: &str = "api://gatehouse-test";

/// The identity provider side of a test: a JWKS (and introspection) endpoint whose keys,
/// availability and answers the test controls.
struct Idp {
    server: TestServer,
    keys: Arc<Mutex<Value>>,
    down: Arc<AtomicBool>,
    jwks_fetches: Arc<AtomicUsize>,
    introspections: Arc<AtomicUsize>,
}

impl Idp {
    async fn start(keys: Value) -> Idp {
        let shared = Arc::new(Mutex::new(keys));
        let down = Arc::new(AtomicBool::new(false));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let introspections = Arc::new(AtomicUsize::new(0));
        let port = free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        let handler: Handler = {
            let (shared, down, fetches, intro) = (
                shared.clone(),
                down.clone(),
                jwks_fetches.clone(),
                introspections.clone(),
            );
            Arc::new(move |req: &Request| {
                if down.load(Ordering::SeqCst) {
                    return Reply::json(503, &json!({"error": "down"}));
                }
                match req.target.as_str() {
                    "/jwks" => {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let mut r = Reply::json(200, &shared.lock().unwrap());
                        r.headers
                            .push(("cache-control".into(), "public, max-age=600".into()));
                        r
                    }
                    "/.well-known/openid-configuration" => Reply::json(
                        200,
                        &json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}),
                    ),
                    "/introspect" => {
                        intro.fetch_add(1, Ordering::SeqCst);
                        let authorized = req.header("authorization")
                            == Some("Basic Z2F0ZWhvdXNlOmludHJvLXNlY3JldA==");
                        let token = req
                            .body
                            .split('&')
                            .find_map(|p| p.strip_prefix("token="))
                            .unwrap_or("");
                        match (authorized, token) {
                            (false, _) => Reply::json(401, &json!({"error": "invalid_client"})),
                            (_, "opaque-good") => Reply::json(
                                200,
                                &json!({
                                    "active": true, "sub": "svc-opaque", "aud": AUD, "iss": issuer,
                                    "exp": now() + 600, "scope": "read write", "realm_access": {"roles": ["opaque-role"]}
                                }),
                            ),
                            (_, "opaque-error") => Reply::json(500, &json!({})),
                            _ => Reply::json(200, &json!({"active": false})),
                        }
                    }
                    _ => Reply::json(404, &json!({})),
                }
            })
        };
        let server = TestServer::start_on(port, handler).await;
        Idp {
            server,
            keys: shared,
            down,
            jwks_fetches,
            introspections,
        }
    }

    fn issuer(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    fn set_keys(&self, keys: Value) {
        *self.keys.lock().unwrap() = keys;
    }

    fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    fn claims(&self, sub: &str) -> Value {
        json!({
            "iss": self.issuer(), "aud": AUD, "sub": sub, "exp": now() + 600, "iat": now(),
            "email": format!("{sub}@example.com"), "email_verified": true, "preferred_username": sub,
            "realm_access": {"roles": ["staff", "sales"]}, "department": "sales",
        })
    }
}

fn config(idp: &Idp, upstream: &TestServer, bearer_extra: &str) -> String {
    format!(
        r#"{base}{up}
[[bearer]]
issuer = "{issuer}"
audiences = ["{AUD}", "other-api"]
jwks_uri = "{issuer}/jwks"
algorithms = ["RS256", "PS256", "ES256", "ES384", "EdDSA"]
groups_claim = "realm_access.roles"
introspection_endpoint = "{issuer}/introspect"
introspection_client_id = "gatehouse"
introspection_client_secret = "intro-secret"
{bearer_extra}

[[api_key]]
name = "nightly"
hash = "{hash}"
subject = "svc-nightly"
groups = ["batch"]

[[api_key]]
name = "retired"
hash = "{retired}"
subject = "svc-retired"
expires = "2020-01-01"

[auth_failure_limit]
max_failures = 1000

[headers]
claims = {{ "X-Auth-Request-Department" = "department" }}

[[route]]
name = "api"
path = "/api"
upstream = "app"
auth = ["bearer"]

[[route]]
name = "pass"
path = "/pass"
upstream = "app"
auth = ["bearer"]
pass_access_token = true

[[route]]
name = "keys"
path = "/keys"
upstream = "app"
auth = ["api_key"]

[[route]]
name = "either"
path = "/either"
upstream = "app"
auth = ["bearer", "api_key"]

[[route]]
name = "public"
path = "/public"
upstream = "app"
auth = ["none"]
"#,
        base = base_config(""),
        up = upstream_block("app", &[upstream.addr], ""),
        issuer = idp.issuer(),
        hash = gatehouse::authn::api_key::hash_key("nightly-key-1"),
        retired = gatehouse::authn::api_key::hash_key("retired-key"),
    )
}

fn bearer(gw: &Gateway, path: &str, token: &str) -> Response {
    gw.get(path, &format!("Authorization: Bearer {token}\r\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_of_every_algorithm_are_accepted_with_identity_headers() {
    let keys = [
        TestKey::rsa("rsa", Algorithm::RS256),
        TestKey::rsa("rsa-pss", Algorithm::PS256),
        TestKey::ec("p256", Algorithm::ES256),
        TestKey::ec("p384", Algorithm::ES384),
        TestKey::ed25519("ed"),
    ];
    let idp = Idp::start(jwks(&keys.iter().collect::<Vec<_>>())).await;
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&config(&idp, &app, ""));
    for key in &keys {
        let token = key.sign(&idp.claims(&format!("user-{}", key.kid)));
        let r = bearer(&gw, "/api/orders", &token);
        assert_eq!(
            r.status,
            200,
            "{:?} {}: {r:?}\n{}",
            key.alg,
            key.kid,
            gw.log()
        );
        let e = r.echoed();
        assert_eq!(
            e.header("x-auth-request-user"),
            Some(format!("user-{}", key.kid).as_str())
        );
        assert_eq!(
            e.header("x-auth-request-email"),
            Some(format!("user-{}@example.com", key.kid).as_str())
        );
        assert_eq!(
            e.header("x-auth-request-preferred-username"),
            Some(format!("user-{}", key.kid).as_str())
        );
        assert_eq!(e.header("x-auth-request-groups"), Some("staff,sales"));
        assert_eq!(e.header("x-auth-request-department"), Some("sales"));
        assert_eq!(
            e.header("authorization"),
            None,
            "the token stays with the gateway"
        );
    }
    // pass_access_token forwards it; a repeated token is served from the cache.
    let token = keys[0].sign(&idp.claims("carol"));
    for _ in 0..3 {
        let e = bearer(&gw, "/pass", &token).echoed();
        assert_eq!(
            e.header("authorization"),
            Some(format!("Bearer {token}").as_str())
        );
    }
    let metrics = gw.admin("/metrics").body;
    assert!(
        metrics.contains("gatehouse_token_cache_total{result=\"hit\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("gatehouse_auth_decisions_total{decision=\"allow\",method=\"bearer\",reason=\"authenticated\",route=\"api\"} 5"), "{metrics}");
    // Forged identity headers lose to the token's.
    let e = gw
        .get(
            "/api",
            &format!("Authorization: Bearer {token}\r\nX-Auth-Request-User: admin\r\n"),
        )
        .echoed();
    assert_eq!(e.all("x-auth-request-user"), vec!["carol"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_are_refused_and_never_reach_the_upstream() {
    let rsa = TestKey::rsa("rsa", Algorithm::RS256);
    let ec = TestKey::ec("p256", Algorithm::ES256);
    let attacker = TestKey::rsa("rsa", Algorithm::RS256); // same kid, different key
    let attacker_ec = TestKey::ec("p256", Algorithm::ES256);
    let idp = Idp::start(jwks(&[&rsa, &ec])).await;
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&config(&idp, &app, ""));
    let good = idp.claims("mallory");
    let with = |changes: Value| {
        let mut c = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let valid = rsa.sign(&good);
    let (vh, vp, vs) = {
        let mut p = valid.split('.');
        (
            p.next().unwrap().to_string(),
            p.next().unwrap().to_string(),
            p.next().unwrap().to_string(),
        )
    };
    let hs256 = {
        let input = format!(
            "{}.{}",
            b64(json!({"alg": "HS256", "kid": "rsa"}).to_string().as_bytes()),
            vp
        );
        let key = jsonwebtoken::EncodingKey::from_secret(&rsa.public_pem);
        format!(
            "{input}.{}",
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap()
        )
    };
    let edited_payload = format!(
        "{vh}.{}.{vs}",
        b64(with(json!({"sub": "admin"})).to_string().as_bytes())
    );
    let attacker_jwk = attacker.jwk.clone();
    let zero_sig = b64(&[0u8; 64]);
    let max_sig = b64(&[0xffu8; 64]);
    let huge = rsa.sign(&with(json!({"padding": "x".repeat(17 * 1024)})));
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "alg none",
            unsigned(&json!({"alg": "none"}), &good, ""),
            401,
        ),
        (
            "alg none with signature",
            unsigned(&json!({"alg": "none", "kid": "rsa"}), &good, "c2ln"),
            401,
        ),
        (
            "alg None",
            unsigned(&json!({"alg": "None", "kid": "rsa"}), &good, "c2ln"),
            401,
        ),
        (
            "alg NONE",
            unsigned(&json!({"alg": "NONE", "kid": "rsa"}), &good, "c2ln"),
            401,
        ),
        (
            "alg nOnE",
            unsigned(&json!({"alg": "nOnE", "kid": "rsa"}), &good, "c2ln"),
            401,
        ),
        ("HS256 with the RSA public key", hs256, 401),
        (
            "expired",
            rsa.sign(&with(json!({"exp": now() - 3600}))),
            401,
        ),
        (
            "not yet valid",
            rsa.sign(&with(json!({"nbf": now() + 3600}))),
            401,
        ),
        (
            "issued in the future",
            rsa.sign(&with(json!({"iat": now() + 3600}))),
            401,
        ),
        (
            "wrong issuer",
            rsa.sign(&with(json!({"iss": "http://evil.example"}))),
            401,
        ),
        (
            "issuer with trailing slash",
            rsa.sign(&with(json!({"iss": format!("{}/", idp.issuer())}))),
            401,
        ),
        (
            "wrong audience",
            rsa.sign(&with(json!({"aud": "another-api"}))),
            401,
        ),
        (
            "missing audience",
            rsa.sign(&with(json!({"aud": null}))),
            401,
        ),
        ("missing exp", rsa.sign(&with(json!({"exp": null}))), 401),
        (
            "string exp",
            rsa.sign(&with(json!({"exp": (now() + 600).to_string()}))),
            401,
        ),
        ("missing sub", rsa.sign(&with(json!({"sub": null}))), 401),
        ("payload edited after signing", edited_payload, 401),
        (
            "truncated signature",
            valid[..valid.len() - 10].to_string(),
            401,
        ),
        ("empty signature", format!("{vh}.{vp}."), 401),
        (
            "unknown kid",
            TestKey::rsa("nobody", Algorithm::RS256).sign(&good),
            401,
        ),
        ("known kid, other key", attacker.sign(&good), 401),
        (
            "jwk header injection",
            attacker.sign_with_header(
                &json!({"alg": "RS256", "kid": "injected", "jwk": attacker_jwk}),
                &good,
            ),
            401,
        ),
        (
            "jwk header with known kid",
            attacker.sign_with_header(
                &json!({"alg": "RS256", "kid": "rsa", "jwk": attacker.jwk}),
                &good,
            ),
            401,
        ),
        (
            "jku header injection",
            attacker.sign_with_header(
                &json!({"alg": "RS256", "kid": "jku-key", "jku": format!("{}/jwks", app.url(""))}),
                &good,
            ),
            401,
        ),
        (
            "x5c header injection",
            attacker.sign_with_header(
                &json!({"alg": "RS256", "kid": "x5c-key", "x5c": ["MIIB"]}),
                &good,
            ),
            401,
        ),
        (
            "RS256 header naming the EC key",
            attacker.sign_with_header(&json!({"alg": "RS256", "kid": "p256"}), &good),
            401,
        ),
        (
            "ES256 all-zero signature",
            unsigned(&json!({"alg": "ES256", "kid": "p256"}), &good, &zero_sig),
            401,
        ),
        (
            "ES256 out-of-range signature",
            unsigned(&json!({"alg": "ES256", "kid": "p256"}), &good, &max_sig),
            401,
        ),
        (
            "ES256 signed by another EC key",
            attacker_ec.sign(&good),
            401,
        ),
        (
            "unknown crit",
            rsa.sign_with_header(
                &json!({"alg": "RS256", "kid": "rsa", "crit": ["exp-ext"], "exp-ext": 1}),
                &good,
            ),
            401,
        ),
        ("oversized", huge, 401),
        ("two segments", format!("{vh}.{vp}"), 401),
        ("four segments", format!("{valid}.x"), 401),
        ("not base64 header", format!("%%%.{vp}.{vs}"), 400),
        (
            "header not JSON",
            format!("{}.{vp}.{vs}", b64(b"not json")),
            401,
        ),
        (
            "RS512 not in the allowlist",
            rsa.sign_with_header(&json!({"alg": "RS512", "kid": "rsa"}), &good),
            401,
        ),
    ];
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for (name, token, status) in &cases {
        let r = bearer(&gw, "/api/x", token);
        if r.status != *status {
            failures.push(format!("{name}: {} {}", r.status, r.body));
            continue;
        }
        if *status == 401 {
            let challenge = r.header("www-authenticate").unwrap_or_default();
            if !challenge.contains("error=\"invalid_token\"") {
                failures.push(format!("{name}: challenge {challenge:?}"));
            }
            if r.body.contains("expired") || r.body.contains("signature") {
                failures.push(format!("{name}: the body says too much: {}", r.body));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(app.hit_count(), 0, "a refused token reached the upstream");
    let metrics = gw.admin("/metrics").body;
    for reason in [
        "alg_not_allowed",
        "expired",
        "not_yet_valid",
        "bad_signature",
        "unknown_kid",
        "wrong_audience",
        "unknown_issuer",
        "unknown_crit",
        "key_mismatch",
        "token_too_large",
        "invalid_claims",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "no {reason} in\n{metrics}"
        );
    }
    // A malformed Authorization header is a 400 invalid_request.
    let r = gw.get("/api", "Authorization: Bearer a b\r\n");
    assert_eq!(r.status, 400);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"invalid_request\""));
    // No credentials: 401 with a bare challenge, JSON even for a browser.
    let r = gw.get("/api", "Accept: text/html\r\n");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"gatehouse\", resource_metadata=\"http://127.0.0.1/.well-known/oauth-protected-resource/api\"")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(!gw.log().contains(&valid), "a token was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_needs_one_refetch_and_junk_kids_share_one() {
    let old = TestKey::rsa("2026-old", Algorithm::RS256);
    let idp = Idp::start(jwks(&[&old])).await;
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&config(&idp, &app, "unknown_kid_refetch_interval = \"1s\""));
    let started = idp.fetches();
    assert_eq!(started, 1, "one fetch at start-up");
    let cached = old.sign(&idp.claims("ann"));
    assert_eq!(bearer(&gw, "/api", &cached).status, 200);

    // The IdP rotates: the new kid is accepted after exactly one refetch, and the old key,
    // no longer published, takes its cached tokens with it.
    let new = TestKey::rsa("2026-new", Algorithm::RS256);
    idp.set_keys(jwks(&[&new]));
    assert_eq!(
        bearer(&gw, "/api", &new.sign(&idp.claims("bob"))).status,
        200
    );
    assert_eq!(idp.fetches(), started + 1);
    assert_eq!(
        bearer(&gw, "/api", &cached).status,
        401,
        "cached token of a withdrawn key"
    );

    // 100 concurrent requests with an unknown kid, once a refetch is allowed again: all of
    // them wait for one shared fetch.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let before_burst = idp.fetches();
    let junk = TestKey::rsa("junk", Algorithm::RS256).sign(&idp.claims("eve"));
    let port = gw.port;
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let junk = junk.clone();
            std::thread::spawn(move || {
                raw_request(port, format!("GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {junk}\r\nConnection: close\r\n\r\n").as_bytes())
                    .map(|r| r.status)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Some(401));
    }
    assert_eq!(
        idp.fetches(),
        before_burst + 1,
        "one fetch for 100 concurrent unknown-kid requests"
    );
    // And the next burst right after is rate-limited: no fetch at all.
    assert_eq!(bearer(&gw, "/api", &junk).status, 401);
    assert_eq!(idp.fetches(), before_burst + 1);
    let metrics = gw.admin("/metrics").body;
    let success = format!(
        "gatehouse_jwks_refresh_total{{issuer=\"{}\",result=\"success\"}}",
        idp.issuer()
    );
    assert!(metrics.contains(&success), "{metrics}");
}

/// A token without a `kid` is checked with the issuer's only key fit for its algorithm. Once
/// the IdP withdraws that key, the cached token must go with it, as a kid's token does.
#[tokio::test(flavor = "multi_thread")]
async fn a_cached_token_without_kid_goes_with_its_withdrawn_key() {
    let old = TestKey::rsa("unused", Algorithm::RS256);
    let mut kidless = old.jwk.clone();
    kidless.as_object_mut().unwrap().remove("kid");
    let idp = Idp::start(json!({ "keys": [kidless] })).await;
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&config(&idp, &app, "unknown_kid_refetch_interval = \"1s\""));
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let cached = old.sign_with_header(&header, &idp.claims("ann"));
    assert_eq!(bearer(&gw, "/api", &cached).status, 200);
    assert_eq!(
        bearer(&gw, "/api", &cached).status,
        200,
        "served from the cache"
    );

    // The IdP rotates to a new key; a token of the new key makes the gateway refetch.
    let new = TestKey::rsa("2026-new", Algorithm::RS256);
    idp.set_keys(jwks(&[&new]));
    let fetches = idp.fetches();
    assert_eq!(
        bearer(&gw, "/api", &new.sign(&idp.claims("bob"))).status,
        200
    );
    assert_eq!(idp.fetches(), fetches + 1, "the new kid was fetched");
    let before = app.hit_count();
    assert_eq!(
        bearer(&gw, "/api", &cached).status,
        401,
        "cached kid-less token of a withdrawn key"
    );
    assert_eq!(app.hit_count(), before, "the upstream saw nothing of it");
}

#[test]
fn apikey_hash_reads_stdin() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["apikey", "hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_keys_keep_working_while_the_idp_is_down() {
    let key = TestKey::ec("p256", Algorithm::ES256);
    let idp = Idp::start(jwks(&[&key])).await;
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&config(&idp, &app, ""));
    idp.down.store(true, Ordering::SeqCst);
    idp.server.stop();
    // New (uncached) tokens signed by a known key still validate.
    for user in ["a", "b", "c"] {
        assert_eq!(
            bearer(&gw, "/api", &key.sign(&idp.claims(user))).status,
            200
        );
    }
    let ready = gw.admin("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_issuer_has_keys_and_discovery_must_match() {
    let key = TestKey::rsa("k", Algorithm::RS256);
    let idp = Idp::start(jwks(&[&key])).await;
    idp.down.store(true, Ordering::SeqCst);
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&config(&idp, &app, "unknown_kid_refetch_interval = \"1s\""));
    let ready = gw.admin("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    let token = key.sign(&idp.claims("x"));
    let r = bearer(&gw, "/api", &token);
    assert_eq!(r.status, 503, "no keys yet: fail closed, retry later");
    assert_eq!(r.header("retry-after"), Some("5"));
    // The IdP comes back: the next lookup after the refetch interval fetches the keys.
    idp.down.store(false, Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(bearer(&gw, "/api", &token).status, 200);
    assert_eq!(gw.admin("/readyz").status, 200);

    // Discovery: jwks_uri from the provider's document, which must name the issuer exactly.
    let discovered = Gateway::start(
        &config(&idp, &app, "").replace(&format!("jwks_uri = \"{}/jwks\"\n", idp.issuer()), ""),
    );
    assert_eq!(discovered.admin("/readyz").status, 200);
    assert_eq!(
        bearer(&discovered, "/api", &key.sign(&idp.claims("y"))).status,
        200
    );
    let wrong = config(&idp, &app, "")
        .replace(&format!("jwks_uri = \"{}/jwks\"\n", idp.issuer()), "")
        .replace(
            &format!("issuer = \"{}\"", idp.issuer()),
            &format!("issuer = \"{}/\"", idp.issuer()),
        );
    let mismatched = Gateway::start(&wrong);
    assert_eq!(mismatched.admin("/readyz").status, 503);
    assert!(
        mismatched.log().contains("discovery"),
        "{}",
        mismatched.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_introspected_and_cached() {
    let key = TestKey::rsa("k", Algorithm::RS256);
    let idp = Idp::start(jwks(&[&key])).await;
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&config(&idp, &app, ""));
    for _ in 0..3 {
        let e = bearer(&gw, "/api", "opaque-good").echoed();
        assert_eq!(e.header("x-auth-request-user"), Some("svc-opaque"));
        assert_eq!(e.header("x-auth-request-groups"), Some("opaque-role"));
    }
    assert_eq!(
        idp.introspections.load(Ordering::SeqCst),
        1,
        "active answers are cached"
    );
    assert_eq!(bearer(&gw, "/api", "opaque-inactive").status, 401);
    assert_eq!(bearer(&gw, "/api", "opaque-inactive").status, 401);
    assert_eq!(
        idp.introspections.load(Ordering::SeqCst),
        2,
        "negative answers are cached briefly"
    );
    let r = bearer(&gw, "/api", "opaque-error");
    assert_eq!(r.status, 503, "introspection errors fail closed");
    assert_eq!(app.hit_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_right_wrong_and_expired() {
    let key = TestKey::rsa("k", Algorithm::RS256);
    let idp = Idp::start(jwks(&[&key])).await;
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&config(&idp, &app, ""));
    let e = gw
        .get("/keys/export", "X-Api-Key: nightly-key-1\r\n")
        .echoed();
    assert_eq!(e.header("x-auth-request-user"), Some("svc-nightly"));
    assert_eq!(e.header("x-auth-request-groups"), Some("batch"));
    assert_eq!(
        e.header("x-api-key"),
        None,
        "the key stays with the gateway"
    );
    let e = gw
        .get("/keys/export", "Authorization: ApiKey nightly-key-1\r\n")
        .echoed();
    assert_eq!(e.header("authorization"), None);
    for (header, status) in [
        ("X-Api-Key: nightly-key-2\r\n", 401),
        ("X-Api-Key: NIGHTLY-KEY-1\r\n", 401),
        ("X-Api-Key: retired-key\r\n", 401),
        ("", 401),
        ("X-Api-Key: a\r\nX-Api-Key: b\r\n", 400),
    ] {
        let r = gw.get("/keys", header);
        assert_eq!(r.status, status, "{header:?}");
        if status == 401 {
            assert_eq!(
                r.header("www-authenticate"),
                Some("ApiKey realm=\"gatehouse\"")
            );
        }
    }
    // A route with both methods takes whichever credential is present.
    assert_eq!(
        gw.get("/either", "X-Api-Key: nightly-key-1\r\n").status,
        200
    );
    assert_eq!(
        bearer(&gw, "/either", &key.sign(&idp.claims("z"))).status,
        200
    );
    // A public route ignores credentials and passes them on untouched.
    let e = gw.get("/public", "X-Api-Key: whatever\r\n").echoed();
    assert_eq!(e.header("x-api-key"), Some("whatever"));
    let metrics = gw.admin("/metrics").body;
    assert!(metrics.contains("reason=\"expired_api_key\""), "{metrics}");
    assert!(metrics.contains("reason=\"unknown_api_key\""), "{metrics}");
    assert!(!gw.log().contains("nightly-key-1"), "an API key was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_inspect_says_why() {
    let key = TestKey::rsa("k", Algorithm::RS256);
    let idp = Idp::start(jwks(&[&key])).await;
    let app = EchoServer::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        config(&idp, &app, "")
            .replace("{port}", "1")
            .replace("{admin}", "2"),
    )
    .unwrap();
    let inspect = |token: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["token", "inspect", token, "-c"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = inspect(&key.sign(&idp.claims("dana")));
    assert!(ok, "{out}");
    assert!(out.contains("accepted: subject \"dana\""), "{out}");
    let mut expired = idp.claims("dana");
    expired["exp"] = json!(now() - 3600);
    let (ok, out) = inspect(&key.sign(&expired));
    assert!(!ok);
    assert!(out.contains("refused: expired"), "{out}");
    assert!(out.contains("\"sub\": \"dana\""), "claims are shown: {out}");
    let mut foreign = idp.claims("dana");
    foreign["aud"] = json!("someone-else");
    let (_, out) = inspect(&key.sign(&foreign));
    assert!(out.contains("refused: wrong_audience"), "{out}");
}
