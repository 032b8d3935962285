//! Makes the signing key and the tokens of the load benchmark's bearer cases.
//! - `bench_tokens DIR ISSUER N` writes `jwks.json`, `key.pem` (for `bench_login`) and
//!   `tokens.txt` (N RS256 tokens for ISSUER, one per line) into DIR.
//! - `bench_tokens DIR ISSUER N --unique FROM` appends N more tokens to `DIR/unique.txt`,
//!   signed with `DIR/key.pem`, for subjects `u-FROM` to `u-(FROM+N-1)`: tokens no target has
//!   seen, for the bearer-unique case. Signed by OpenSSL on every core (about 0.3 ms each).
//!
//! `cargo run --release --example bench_tokens -- DIR ISSUER N [--unique FROM]`

use std::io::Write;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use serde_json::json;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RS256 tokens for subjects `{prefix}{from}..`, one per line, signed on every core.
fn tokens(
    key: &PKey<Private>,
    kid: &str,
    issuer: &str,
    prefix: &str,
    from: usize,
    n: usize,
) -> Vec<String> {
    let header = b64(json!({"alg": "RS256", "typ": "JWT", "kid": kid})
        .to_string()
        .as_bytes());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 86_400;
    let one = |i: usize| {
        let claims = json!({"iss": issuer, "aud": "bench-api", "sub": format!("{prefix}{i}"), "exp": exp,
            "email": format!("{prefix}{i}@example.com"), "email_verified": true, "groups": ["staff"]});
        let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
        let mut signer = Signer::new(MessageDigest::sha256(), key).expect("signer");
        let signature = signer.sign_oneshot_to_vec(input.as_bytes()).expect("sign");
        format!("{input}.{}", b64(&signature))
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = n.div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                s.spawn(move || {
                    (start..(start + chunk).min(n))
                        .map(|i| one(from + i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("signer thread"))
            .collect()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bench_tokens DIR ISSUER N [--unique FROM]");
        std::process::exit(2);
    }
    let dir = std::path::Path::new(&args[1]);
    let issuer = &args[2];
    let n: usize = args[3].parse().expect("N");
    let kid_of =
        |jwks: &serde_json::Value| jwks["keys"][0]["kid"].as_str().expect("kid").to_string();
    if args.get(4).is_some_and(|a| a == "--unique") {
        let from: usize = args
            .get(5)
            .and_then(|a| a.parse().ok())
            .expect("--unique FROM");
        let key = PKey::private_key_from_pem(&std::fs::read(dir.join("key.pem")).expect("key.pem"))
            .expect("key");
        let jwks: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("jwks.json")).expect("jwks.json"))
                .expect("jwks");
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("unique.txt"))
            .expect("unique.txt");
        let mut text = tokens(&key, &kid_of(&jwks), issuer, "u-", from, n).join("\n");
        text.push('\n');
        out.write_all(text.as_bytes()).expect("write unique.txt");
        return;
    }
    let rsa = openssl::rsa::Rsa::generate(2048).expect("RSA key");
    // A key id as long as Keycloak's (43 characters), so ID tokens have a realistic size.
    let kid = b64(&rand::random::<[u8; 32]>());
    let jwks = json!({"keys": [{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())}]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).expect("write jwks");
    let pem = rsa.private_key_to_pem().expect("pem");
    std::fs::write(dir.join("key.pem"), &pem).expect("write key");
    // The public key alone, for a peer that reads keys from a file.
    std::fs::write(
        dir.join("public.pem"),
        rsa.public_key_to_pem().expect("pem"),
    )
    .expect("write public key");
    let key = PKey::from_rsa(rsa).expect("key");
    let tokens = tokens(&key, &kid, issuer, "user-", 0, n);
    std::fs::write(dir.join("tokens.txt"), tokens.join("\n") + "\n").expect("write tokens");
}
