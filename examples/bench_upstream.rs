//! The upstream of the load benchmark: answers every request with a tiny 200, keep-alive,
//! and serves a JWKS file at `/jwks` for the bearer cases. For the session case it is also
//! a minimal OpenID provider: discovery, and a token endpoint whose `code` is the ID token
//! itself (minted by `bench_login`, which knows the nonce), with a random opaque refresh
//! token (64 characters, as Okta or Auth0 issue them).
//! `cargo run --release --example bench_upstream -- LISTEN [JWKS_FILE]`

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    jwks: std::sync::Arc<Vec<u8>>,
    issuer: std::sync::Arc<String>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = &buf[..end];
            let length = std::str::from_utf8(head)
                .ok()
                .and_then(|h| {
                    h.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                })
                .unwrap_or(0);
            if buf.len() < end + 4 + length {
                break;
            }
            let body = &buf[end + 4..end + 4 + length];
            let json = |value: String| {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{value}",
                    value.len()
                )
                .into_bytes()
            };
            let response: Vec<u8> = if head.starts_with(b"GET /.well-known/openid-configuration ") {
                json(format!(
                    r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/authorize","token_endpoint":"{issuer}/token","jwks_uri":"{issuer}/jwks","code_challenge_methods_supported":["S256"],"response_types_supported":["code"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256","ES256"]}}"#,
                    issuer = issuer.as_str()
                ))
            } else if head.starts_with(b"POST /token ") {
                let code = url::form_urlencoded::parse(body)
                    .find(|(k, _)| k == "code")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let refresh: [u8; 32] = rand::random();
                json(format!(
                    r#"{{"access_token":"bench-access","token_type":"Bearer","expires_in":86400,"id_token":"{code}","refresh_token":"{}"}}"#,
                    hex::encode(refresh)
                ))
            } else if head.starts_with(b"GET /jwks ") {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=3600\r\ncontent-length: {}\r\n\r\n",
                    jwks.len()
                )
                .into_bytes();
                r.extend_from_slice(&jwks);
                r
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\n"
                    .to_vec()
            };
            buf.drain(..end + 4 + length);
            stream.write_all(&response).await?;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    let jwks = args
        .get(2)
        .map(|p| std::fs::read(p).expect("JWKS file"))
        .unwrap_or_else(|| b"{\"keys\":[]}".to_vec());
    let jwks = std::sync::Arc::new(jwks);
    let issuer = std::sync::Arc::new(format!("http://{listen}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream, jwks.clone(), issuer.clone()));
        }
    });
}
