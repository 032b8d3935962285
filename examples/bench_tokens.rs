//! Makes the signing key of the load benchmark's bearer cases: writes `jwks.json`,
//! `key.pem` (for `bench_login`) and `tokens.txt` (N RS256 tokens for ISSUER, one per line)
//! into DIR.
//! `cargo run --release --example bench_tokens -- DIR ISSUER N`

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bench_tokens DIR ISSUER N");
        std::process::exit(2);
    }
    let dir = std::path::Path::new(&args[1]);
    let issuer = &args[2];
    let n: usize = args[3].parse().expect("N");
    let rsa = openssl::rsa::Rsa::generate(2048).expect("RSA key");
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    // A key id as long as Keycloak's (43 characters), so ID tokens have a realistic size.
    let kid = b64(&rand::random::<[u8; 32]>());
    let jwks = json!({"keys": [{"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())}]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).expect("write jwks");
    let pem = rsa.private_key_to_pem().expect("pem");
    std::fs::write(dir.join("key.pem"), &pem).expect("write key");
    let key = EncodingKey::from_rsa_pem(&pem).expect("key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 86_400;
    let tokens: Vec<String> = (0..n)
        .map(|i| {
            let claims = json!({"iss": issuer, "aud": "bench-api", "sub": format!("user-{i}"), "exp": exp,
                "email": format!("user-{i}@example.com"), "email_verified": true, "groups": ["staff"]});
            jsonwebtoken::encode(&header, &claims, &key).expect("sign")
        })
        .collect();
    std::fs::write(dir.join("tokens.txt"), tokens.join("\n") + "\n").expect("write tokens");
}
