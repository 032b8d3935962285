//! Logs in to a running gateway through the load benchmark's stub provider (see
//! `bench_upstream`) and prints the session cookie (`name=value`) for the session case.
//! `cargo run --release --example bench_login -- DIR ISSUER GATEWAY_URL`
//! DIR holds `key.pem` from `bench_tokens`.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bench_login DIR ISSUER GATEWAY_URL");
        std::process::exit(2);
    }
    let (dir, issuer, gateway) = (std::path::Path::new(&args[1]), &args[2], &args[3]);
    let key = EncodingKey::from_rsa_pem(&std::fs::read(dir.join("key.pem")).expect("key.pem"))
        .expect("RSA key");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let start = client
        .get(format!("{gateway}/_gatehouse/login?rd=/session/"))
        .send()
        .await
        .expect("login start");
    let location = start.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let binding = start.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("cookie")
        .to_string();
    let url = url::Url::parse(&location).expect("authorization URL");
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .expect(name)
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({"iss": issuer, "aud": param("client_id"), "sub": "bench-user", "iat": now,
        "exp": now + 3600, "nonce": param("nonce"), "email": "bench@example.com", "groups": ["staff"]});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("bench".into());
    let id_token = jsonwebtoken::encode(&header, &claims, &key).expect("sign");
    let done = client
        .get(format!(
            "{gateway}/_gatehouse/callback?code={id_token}&state={}",
            param("state")
        ))
        .header("cookie", binding)
        .send()
        .await
        .expect("callback");
    let session = done
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("gatehouse="))
        .unwrap_or_else(|| panic!("no session cookie: {}", done.status()));
    println!("{}", session.split(';').next().unwrap_or_default());
}
