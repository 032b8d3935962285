//! Logs in to a running gateway through the load benchmark's stub provider (see
//! `bench_upstream`), which hands back the authorization code as the ID token.
//! DIR holds `key.pem` and `jwks.json` from `bench_tokens`.
//! - `bench_login DIR ISSUER GATEWAY_URL` logs in once and prints the session cookie
//!   (`name=value`) for the session case.
//! - `bench_login DIR ISSUER GATEWAY_URL N` logs in N browsers, each with its own
//!   Keycloak-shaped RS256 ID token (20 claims with random ids, about 1,200 characters, as in
//!   `session_memory`) and its own refresh token, and writes their cookies to
//!   `DIR/cookies.txt`: the gateway then holds N live sessions in its store.
//! - `bench_login DIR ISSUER GATEWAY_URL --use` sends one request with each cookie of
//!   `DIR/cookies.txt`, so every session's identity is built once.

use std::sync::Arc;

#[path = "support/mod.rs"]
mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::stream::{self, StreamExt};
use serde_json::json;

/// Logins (or requests) in flight at once.
const CONCURRENCY: usize = 16;

struct Provider {
    issuer: String,
    gateway: String,
    kid: String,
    key: openssl::pkey::PKey<openssl::pkey::Private>,
    client: reqwest::Client,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

impl Provider {
    fn sign(&self, claims: &serde_json::Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &self.key)
                .expect("signer");
        signer.update(input.as_bytes()).expect("sign");
        let signature = signer.sign_to_vec().expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// One browser's login; `None` when the gateway did not hand out a session.
    async fn login(&self, i: usize, realistic: bool) -> Option<String> {
        let start = self
            .client
            .get(format!("{}/_gatehouse/login?rd=/session/", self.gateway))
            .send()
            .await
            .ok()?;
        let location = start.headers().get("location")?.to_str().ok()?.to_string();
        let binding = start
            .headers()
            .get("set-cookie")?
            .to_str()
            .ok()?
            .split(';')
            .next()?
            .to_string();
        let url = url::Url::parse(&location).ok()?;
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let (client_id, nonce, state) = (param("client_id")?, param("nonce")?, param("state")?);
        let now = unix_now();
        let claims = if realistic {
            support::keycloak_id_claims(i, &self.issuer, &client_id, &nonce, now)
        } else {
            json!({"iss": self.issuer, "aud": client_id, "sub": "bench-user", "iat": now,
                "exp": now + 3600, "nonce": nonce, "email": "bench@example.com", "email_verified": true, "groups": ["staff"]})
        };
        // The stub provider answers the code exchange with the code as the ID token.
        let done = self
            .client
            .get(format!("{}/_gatehouse/callback", self.gateway))
            .query(&[("code", self.sign(&claims)), ("state", state)])
            .header("cookie", binding)
            .send()
            .await
            .ok()?;
        let cookie = done
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("gatehouse="))?;
        Some(cookie.split(';').next()?.to_string())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bench_login DIR ISSUER GATEWAY_URL [N | --use]");
        std::process::exit(2);
    }
    let dir = std::path::Path::new(&args[1]);
    let key = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(dir.join("key.pem")).expect("key.pem"),
    )
    .expect("RSA key");
    let jwks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("jwks.json")).expect("jwks.json"))
            .expect("jwks.json");
    let provider = Arc::new(Provider {
        issuer: args[2].clone(),
        gateway: args[3].clone(),
        kid: jwks["keys"][0]["kid"].as_str().expect("kid").to_string(),
        key,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    });
    let cookies_file = dir.join("cookies.txt");
    match args.get(4).map(String::as_str) {
        None => {
            let cookie = provider.login(0, false).await.expect("no session cookie");
            println!("{cookie}");
        }
        Some("--use") => {
            let text = std::fs::read_to_string(&cookies_file).expect("cookies.txt");
            let started = std::time::Instant::now();
            let ok = stream::iter(text.lines().map(str::to_string))
                .map(|cookie| {
                    let p = provider.clone();
                    async move {
                        p.client
                            .get(format!("{}/session/used", p.gateway))
                            .header("cookie", cookie)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success())
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .filter(|ok| std::future::ready(*ok))
                .count()
                .await;
            eprintln!(
                "bench_login: {ok} sessions used once in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Some(n) => {
            let n: usize = n.parse().expect("N");
            let started = std::time::Instant::now();
            let cookies: Vec<String> = stream::iter(0..n)
                .map(|i| {
                    let p = provider.clone();
                    async move { p.login(i, true).await }
                })
                .buffer_unordered(CONCURRENCY)
                .filter_map(std::future::ready)
                .collect()
                .await;
            std::fs::write(&cookies_file, cookies.join("\n") + "\n").expect("cookies.txt");
            eprintln!(
                "bench_login: {} of {n} logins in {:.1} s",
                cookies.len(),
                started.elapsed().as_secs_f64()
            );
            if cookies.len() != n {
                std::process::exit(1);
            }
        }
    }
}
