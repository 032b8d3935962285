//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, never in a release
//! build): the parsers that read what clients, stores and files send, each with the
//! properties that must hold for any input.

use std::net::IpAddr;
use std::path::Path;

use http::{HeaderMap, HeaderValue};

use crate::config::{Config, SessionConfig};
use crate::normalize::{normalize_target, NormalizeOptions};

/// Request-target normalization: never panics; accepted output is a fixed point whose
/// judged path holds no dot segment, `;` or encoded separator.
pub fn normalize(data: &[u8]) {
    let Some((&flags, raw)) = data.split_first() else {
        return;
    };
    let opts = NormalizeOptions {
        allow_encoded_slash: flags & 1 != 0,
        allow_backslash: flags & 2 != 0,
        allow_semicolon: flags & 4 != 0,
        allow_double_encoding: flags & 8 != 0,
    };
    let Ok(target) = normalize_target(raw, opts) else {
        return;
    };
    let again = normalize_target(target.to_request_target().as_bytes(), opts);
    assert_eq!(again.as_ref(), Ok(&target), "not a fixed point");
    let path = &target.path;
    assert!(path.starts_with('/'));
    assert!(
        !path.split('/').any(|s| s == "." || s == ".."),
        "dot segment in {path}"
    );
    assert!(!path.contains(';'), "parameter in judged path {path}");
    let lower = path.to_ascii_lowercase();
    assert!(!lower.contains("%2f") && !lower.contains("%5c"), "{path}");
    if opts == NormalizeOptions::default() {
        assert!(target.upstream.is_none());
    }
}

/// Cookie headers: finding the session cookie and stripping the gateway's cookies before
/// the upstream sees them (the other cookies stay).
pub fn cookies(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(http::header::COOKIE, v);
        }
    }
    let config = SessionConfig::memory_for_tests();
    let jar = crate::login::Cookies::new(&config, data.first() == Some(&b'S'));
    for name in [&jar.session, &jar.binding] {
        assert_eq!(
            crate::login::cookie_value(&headers, name),
            crate::login::cookie_value_by_the_crate(&headers, name),
            "the reader and the cookie crate disagree"
        );
    }
    let others_before = other_cookies(&headers, &jar);
    crate::pipeline::upstream::strip_gateway_cookies(&mut headers, &jar);
    assert_eq!(crate::login::cookie_value(&headers, &jar.session), None);
    assert_eq!(crate::login::cookie_value(&headers, &jar.binding), None);
    assert_eq!(
        other_cookies(&headers, &jar),
        others_before,
        "lost a cookie"
    );
}

fn other_cookies(headers: &HeaderMap, jar: &crate::login::Cookies) -> Vec<Vec<u8>> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .map(|p| p.trim_ascii())
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split(|&b| b == b'=').next().unwrap_or_default();
            !jar.is_ours(name.trim_ascii())
        })
        .map(<[u8]>::to_vec)
        .collect()
}

/// `X-Forwarded-For` and `Host`: the client address is the peer or an address the header
/// names; a host is lower case, without port or anything a URL could hide.
pub fn forwarded(data: &[u8]) {
    let Some((&who, rest)) = data.split_first() else {
        return;
    };
    let peer: IpAddr = if who & 1 == 0 {
        IpAddr::from([10, 0, 0, who])
    } else {
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(who)])
    };
    let trusted: Vec<ipnet::IpNet> = ["10.0.0.0/8", "2001:db8::/32"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", v);
        }
    }
    let client = crate::forwarded::client_ip(peer, &headers, &trusted);
    let text = String::from_utf8_lossy(rest);
    assert!(
        client == peer || crate::forwarded::is_trusted(client, &trusted) || !text.is_empty(),
        "client {client} from nowhere"
    );
    let mut out = HeaderMap::new();
    crate::forwarded::set_forwarding_headers(
        &mut out,
        &crate::forwarded::Forwarding {
            peer,
            peer_trusted: crate::forwarded::is_trusted(peer, &trusted),
            client_ip: client,
            scheme: "http",
            host: "h",
            request_id: "r",
        },
    );
    if let Ok(host) = std::str::from_utf8(rest) {
        if let Some(h) = crate::pipeline::host_without_port(host) {
            assert!(!h.contains(['@', '/', ' ', '?', '#', '\\']), "{h}");
            assert_eq!(h, h.to_ascii_lowercase());
        }
    }
}

/// A bearer token through every pure check of the bearer path, against a fixed JWKS; and,
/// with a leading `{`, a JWKS document as an issuer could serve it.
pub fn jwt(data: &[u8]) {
    use std::sync::OnceLock;
    static BEARER: OnceLock<crate::authn::BearerAuth> = OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.starts_with('{') {
        if let Ok(set) = serde_json::from_str::<jsonwebtoken::jwk::JwkSet>(text) {
            let _ = crate::authn::jwks::key_set_from_jwks(&set);
        }
        return;
    }
    let bearer = BEARER.get_or_init(|| {
        let config = Config::from_str(Path::new("fuzz.toml"), FUZZ_CONFIG, &|_| None)
            .expect("the fuzz config is valid");
        let auth = crate::authn::BearerAuth::without_keys(
            config.bearer.clone(),
            std::sync::Arc::new(crate::metrics::Metrics::new()),
        );
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(&fresh_jwks()).expect("the fuzz JWKS is valid");
        for store in &auth.issuers {
            store.install(&set);
        }
        auth
    });
    let Ok(parsed) = crate::authn::bearer::parse(text) else {
        return;
    };
    let Ok(checked) = bearer.check_header(&parsed) else {
        return;
    };
    let store = &bearer.issuers[checked.issuer];
    if let Some(key) = store.keys().find(checked.kid, checked.alg) {
        let now = crate::authn::bearer::unix_now();
        assert!(
            bearer.verify(&parsed, &checked, &key, now).is_err(),
            "a token verified against a key nobody holds"
        );
    }
    let config = &store.config;
    if crate::authn::bearer::check_claims(&parsed.claims, config, 1_700_000_000).is_ok() {
        let method = crate::identity::AuthMethod::Bearer;
        let _ = crate::authn::bearer::identity_from_claims(parsed.claims.clone(), config, method);
    }
}

const FUZZ_CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:1"]
[[bearer]]
issuer = "https://issuer.example"
audiences = ["api"]
jwks_uri = "https://issuer.example/jwks"
algorithms = ["RS256", "ES256", "PS256", "EdDSA"]
[upstream.app]
servers = ["127.0.0.1:2"]
[[route]]
name = "api"
path = "/"
upstream = "app"
auth = ["bearer"]
"#;

/// Public keys made for this run whose private halves are thrown away: nothing may verify.
fn fresh_jwks() -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let rsa = openssl::rsa::Rsa::generate(2048).expect("RSA key");
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    let ec = EcKey::generate(&group).expect("EC key");
    let (mut x, mut y) = (BigNum::new().expect("bn"), BigNum::new().expect("bn"));
    let mut ctx = BigNumContext::new().expect("bn ctx");
    ec.public_key()
        .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
        .expect("coordinates");
    let ed = openssl::pkey::PKey::generate_ed25519().expect("Ed25519 key");
    let ed_public = ed.raw_public_key().expect("raw key");
    serde_json::json!({"keys": [
        {"kty": "RSA", "kid": "r1", "use": "sig", "e": b64(&rsa.e().to_vec()), "n": b64(&rsa.n().to_vec())},
        {"kty": "EC", "kid": "e1", "use": "sig", "crv": "P-256",
         "x": b64(&x.to_vec_padded(32).expect("x")), "y": b64(&y.to_vec_padded(32).expect("y"))},
        {"kty": "OKP", "kid": "o1", "use": "sig", "crv": "Ed25519", "x": b64(&ed_public)},
    ]})
    .to_string()
}

/// `gateway.toml` text: never panics, every diagnostic points into the text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "SET").then(|| "value".to_string());
    if let Err(e) = Config::from_str(Path::new("/nonexistent/gateway.toml"), text, &env) {
        let lines = text.lines().count() + 1;
        for d in &e.0 {
            assert!(d.line <= lines, "diagnostic past the end: {d:?}");
        }
    }
}

/// A policy file: never panics; a policy that loads decides any request.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = crate::authz::Policy::from_str(Path::new("policy.toml"), text) else {
        return;
    };
    let headers = HeaderMap::new();
    for (method, path) in [
        (http::Method::GET, "/"),
        (http::Method::DELETE, "/admin/x"),
        (http::Method::POST, "/users/alice/profile"),
    ] {
        let _ = policy.decide(
            &crate::authz::PolicyRequest {
                method: &method,
                path,
                host: "h",
                query: "",
                headers: &headers,
                client_ip: None,
                now: None,
            },
            None,
        );
    }
}

/// A stored session as Redis hands it back, and the token codec behind its seal. With a
/// leading 0xFF the rest is a session's names and tokens (0-separated): sealed, stored, read
/// back and opened, everything must come back exactly.
pub fn session(data: &[u8]) {
    let cipher = crate::session::TokenCipher::new(b"a fuzzing secret, not a real one");
    if let Some((&0xFF, rest)) = data.split_first() {
        return session_round_trip(rest, &cipher);
    }
    if let Some(s) = crate::session::Session::from_bytes(data) {
        let _ = (
            s.times(),
            s.idp(),
            s.subject(),
            s.sid(),
            s.acr(),
            s.version(),
        );
        assert!(
            s.tokens(&cipher).is_none(),
            "tokens opened without their key"
        );
        let again = crate::session::Session::from_bytes(&s.to_bytes());
        assert!(again.is_some(), "a stored session must read back");
    }
    crate::session::fuzz_token_codec(data, "https://idp.example", "alice", Some("sid-1"));
}

fn session_round_trip(data: &[u8], cipher: &crate::session::TokenCipher) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut fields = text.split('\0');
    let mut next = || fields.next().filter(|f| !f.is_empty());
    let (Some(idp), Some(issuer), Some(subject)) = (next(), next(), next()) else {
        return;
    };
    let (sid, acr) = (next(), next());
    let tokens = crate::session::Tokens {
        id_token: next().map(str::to_string),
        access_token: next().map(str::to_string),
        refresh_token: next().map(str::to_string),
    };
    let names = crate::session::Names {
        idp,
        issuer,
        subject,
        sid,
        acr,
    };
    let times = crate::session::Times::starting(1_700_000_000, 1_700_086_400);
    let stored = crate::session::Session::new(names, &tokens, cipher, times).to_bytes();
    let back = crate::session::Session::from_bytes(&stored).expect("a written session reads");
    assert_eq!(
        (
            back.idp(),
            back.issuer(),
            back.subject(),
            back.sid(),
            back.acr()
        ),
        (idp, Some(issuer), subject, sid, acr)
    );
    assert_eq!(back.times(), times);
    assert_eq!(back.tokens(cipher).as_ref(), Some(&tokens));
}
