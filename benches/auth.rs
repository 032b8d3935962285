//! Hot functions of authentication: a repeated (cached) bearer token, first-time RS256 and
//! ES256 validation next to the bare signature check they are built on, the verify that
//! `openssl speed` times (a prepared context, a digest given) in the OpenSSL gatehouse links,
//! the RustCrypto check used before, and an API key.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::authn::api_key::{hash_key, ApiKeys};
use gatehouse::authn::bearer::{parse, BearerAuth};
use gatehouse::authn::signature::PublicKey;
use gatehouse::config::{ApiKeyConfig, BearerConfig, ClaimNames, EmailVerified};
use gatehouse::metrics::Metrics;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::md::Md;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::Signer;
use serde_json::json;

const ISSUER: &str = "https://idp.example.com";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> serde_json::Value {
    json!({
        "iss": ISSUER, "aud": "api", "sub": "user-1", "exp": now() + 3600, "iat": now(),
        "email": "user-1@example.com", "email_verified": true, "preferred_username": "user1",
        "groups": ["staff", "sales"], "scope": "read write",
    })
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims(), key).unwrap()
}

fn config() -> BearerConfig {
    BearerConfig {
        issuer: ISSUER.into(),
        audiences: vec!["api".into()],
        jwks_uri: Some(format!("{ISSUER}/jwks")),
        algorithms: vec![Algorithm::RS256, Algorithm::ES256],
        leeway: Duration::from_secs(30),
        token_type: None,
        claims: ClaimNames {
            subject: "sub".into(),
            email: "email".into(),
            username: "preferred_username".into(),
            groups: "groups".into(),
            email_verified: EmailVerified::Required,
        },
        introspection: None,
        unknown_kid_refetch_interval: Duration::from_secs(10),
        qualify_subject: false,
    }
}

fn bench(c: &mut Criterion) {
    let rsa = Rsa::generate(2048).unwrap();
    let rsa_jwk = json!({"kty": "RSA", "kid": "rsa", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())});
    let rsa_enc = EncodingKey::from_rsa_pem(&rsa.private_key_to_pem().unwrap()).unwrap();
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let ec = EcKey::generate(&group).unwrap();
    let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
    ec.public_key()
        .affine_coordinates(&group, &mut x, &mut y, &mut BigNumContext::new().unwrap())
        .unwrap();
    let ec_jwk = json!({"kty": "EC", "kid": "ec", "crv": "P-256",
        "x": b64(&x.to_vec_padded(32).unwrap()), "y": b64(&y.to_vec_padded(32).unwrap())});
    let ec_priv = PKey::from_ec_key(ec).unwrap();
    let ec_enc = EncodingKey::from_ec_pem(&ec_priv.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let rsa_priv = PKey::from_rsa(rsa.clone()).unwrap();

    let auth = BearerAuth::without_keys(vec![config()], Arc::new(Metrics::new()));
    let set: JwkSet =
        serde_json::from_value(json!({"keys": [rsa_jwk.clone(), ec_jwk.clone()]})).unwrap();
    assert_eq!(auth.issuers[0].install(&set), 2);
    let rs_token = sign(Algorithm::RS256, "rsa", &rsa_enc);
    let es_token = sign(Algorithm::ES256, "ec", &ec_enc);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(auth.authenticate(&rs_token))
        .expect("valid token");
    c.bench_function("bearer/cached_token", |b| {
        b.iter(|| auth.cached(black_box(&rs_token)).expect("cached"))
    });

    // Validation as `authenticate` does it for a token it has not seen, without the cache.
    let first_time = |token: &str| {
        let parsed = parse(token).unwrap();
        let checked = auth.check_header(&parsed).unwrap();
        let key = auth.issuers[checked.issuer]
            .keys()
            .find(checked.kid, checked.alg)
            .unwrap();
        auth.check_signature(&parsed, &checked, &key).unwrap();
        let issuer = checked.issuer;
        auth.identity(parsed.claims, issuer, now()).unwrap()
    };
    c.bench_function("bearer/uncached_rs256", |b| {
        b.iter(|| first_time(black_box(&rs_token)))
    });
    c.bench_function("bearer/uncached_es256", |b| {
        b.iter(|| first_time(black_box(&es_token)))
    });

    // What a request with a never-seen token costs in `authenticate`: the cache miss, the
    // validation, the cache insert. Each token once; a fresh cache (outside the timing)
    // when the pool is used up.
    let pool: Vec<String> = (0..3000)
        .map(|i| {
            let mut c = claims();
            c["sub"] = format!("user-{i}").into();
            let input = format!(
                "{}.{}",
                b64(json!({"alg": "RS256", "typ": "JWT", "kid": "rsa"})
                    .to_string()
                    .as_bytes()),
                b64(c.to_string().as_bytes())
            );
            let mut signer = Signer::new(MessageDigest::sha256(), &rsa_priv).unwrap();
            let sig = signer.sign_oneshot_to_vec(input.as_bytes()).unwrap();
            format!("{input}.{}", b64(&sig))
        })
        .collect();
    c.bench_function("bearer/first_seen_rs256", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let fresh = BearerAuth::without_keys(vec![config()], Arc::new(Metrics::new()));
                fresh.issuers[0].install(&set);
                let n = left.min(pool.len());
                let start = Instant::now();
                for token in &pool[..n] {
                    runtime
                        .block_on(fresh.authenticate(black_box(token)))
                        .unwrap();
                }
                spent += start.elapsed();
                left -= n;
            }
            spent
        })
    });

    // The signature alone, as gatehouse checks it: hash and native verify.
    let native = |token: &str, jwk: &serde_json::Value, alg: Algorithm| {
        let key = PublicKey::from_jwk(&serde_json::from_value(jwk.clone()).unwrap()).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        assert!(key.verify(alg, input.as_bytes(), sig));
        move |input: &str, sig: &str| assert!(key.verify(alg, input.as_bytes(), sig))
    };
    let (rs_input, rs_sig) = rs_token.rsplit_once('.').unwrap();
    let (es_input, es_sig) = es_token.rsplit_once('.').unwrap();
    let rs_native = native(&rs_token, &rsa_jwk, Algorithm::RS256);
    let es_native = native(&es_token, &ec_jwk, Algorithm::ES256);
    c.bench_function("bare_signature/rs256", |b| {
        b.iter(|| rs_native(black_box(rs_input), black_box(rs_sig)))
    });
    c.bench_function("bare_signature/es256", |b| {
        b.iter(|| es_native(black_box(es_input), black_box(es_sig)))
    });

    // What `openssl speed rsa2048` / `ecdsap256` time: a verify context made once, the
    // digest given; here in the OpenSSL gatehouse links (vendored by Pingora).
    let speed =
        |pkey: &PKey<openssl::pkey::Public>, md: Option<&openssl::md::MdRef>, sig: Vec<u8>| {
            let mut ctx = PkeyCtx::new(pkey).unwrap();
            ctx.verify_init().unwrap();
            if let Some(md) = md {
                ctx.set_rsa_padding(Padding::PKCS1).unwrap();
                ctx.set_signature_md(md).unwrap();
            }
            let digest = openssl::sha::sha256(b"what openssl speed signs");
            move || assert!(ctx.verify(black_box(&digest), &sig).unwrap())
        };
    let rsa_pub = PKey::from_rsa(
        Rsa::from_public_components(rsa.n().to_owned().unwrap(), rsa.e().to_owned().unwrap())
            .unwrap(),
    )
    .unwrap();
    let digest = openssl::sha::sha256(b"what openssl speed signs");
    let rsa_sig = {
        let mut ctx = PkeyCtx::new(&rsa_priv).unwrap();
        ctx.sign_init().unwrap();
        ctx.set_rsa_padding(Padding::PKCS1).unwrap();
        ctx.set_signature_md(Md::sha256()).unwrap();
        let mut sig = Vec::new();
        ctx.sign_to_vec(&digest, &mut sig).unwrap();
        sig
    };
    let ec_pub = PKey::from_ec_key(
        EcKey::from_public_key(&group, ec_priv.ec_key().unwrap().public_key()).unwrap(),
    )
    .unwrap();
    let ec_sig = EcdsaSig::sign(&digest, &ec_priv.ec_key().unwrap())
        .unwrap()
        .to_der()
        .unwrap();
    let mut rsa_speed = speed(&rsa_pub, Some(Md::sha256()), rsa_sig);
    let mut ec_speed = speed(&ec_pub, None, ec_sig);
    c.bench_function("openssl_speed_verify/rsa2048", |b| b.iter(&mut rsa_speed));
    c.bench_function("openssl_speed_verify/ecdsap256", |b| b.iter(&mut ec_speed));

    // The RustCrypto check jsonwebtoken does, which gatehouse used before.
    let rustcrypto = |token: &str, key: &DecodingKey, alg: Algorithm| {
        let (input, sig) = token.rsplit_once('.').unwrap();
        assert!(jsonwebtoken::crypto::verify(sig, input.as_bytes(), key, alg).unwrap());
    };
    let rsa_dec = DecodingKey::from_jwk(&serde_json::from_value(rsa_jwk).unwrap()).unwrap();
    let ec_dec = DecodingKey::from_jwk(&serde_json::from_value(ec_jwk).unwrap()).unwrap();
    c.bench_function("rustcrypto_signature/rs256", |b| {
        b.iter(|| rustcrypto(black_box(&rs_token), &rsa_dec, Algorithm::RS256))
    });
    c.bench_function("rustcrypto_signature/es256", |b| {
        b.iter(|| rustcrypto(black_box(&es_token), &ec_dec, Algorithm::ES256))
    });

    let keys: Vec<ApiKeyConfig> = (0..10)
        .map(|i| ApiKeyConfig {
            name: format!("k{i}"),
            hash: hex::decode(&hash_key(&format!("key-{i}"))[7..])
                .unwrap()
                .try_into()
                .unwrap(),
            subject: format!("svc-{i}"),
            groups: vec!["batch".into()],
            expires: None,
        })
        .collect();
    let api_keys = ApiKeys::new(&keys);
    c.bench_function("api_key/10_keys", |b| {
        b.iter(|| api_keys.authenticate(black_box("key-7")).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
