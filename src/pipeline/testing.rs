//! A gateway's runtime for tests of the pipeline and its fronts, without Pingora: a real
//! config and `Runtime`, an OpenID provider stand-in on loopback (discovery and JWKS only:
//! nothing else of it is reached), a signing key for bearer tokens, sessions in the memory
//! store.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, HeaderName, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Front, Judged, Pipeline, RequestFacts, Verdict};
use crate::config::Config;
use crate::gateway::Runtime;
use crate::metrics::Metrics;

/// The peer of every test request unless a test says otherwise: a trusted proxy.
pub(crate) const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

pub(crate) const API_KEY: &str = "ci-key-0123456789abcdef";

const POLICY: &str = r#"
[roles]
reader = ["api:read"]
[[binding]]
role = "reader"
groups = ["staff"]
[[rule]]
name = "read"
paths = ["/api/**"]
methods = ["GET", "OPTIONS"]
require = "api:read"
"#;

const REPORT_ONLY: &str = r#"
mode = "report-only"
[[rule]]
name = "nobody"
paths = ["/audit/**"]
deny = true
"#;

/// Both halves of a decision, for tests to look at.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) judged: Judged,
    pub(crate) verdict: Verdict,
}

pub(crate) struct Harness {
    pub(crate) rt: Runtime,
    pub(crate) metrics: Arc<Metrics>,
    key: jsonwebtoken::EncodingKey,
    issuer: String,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A runtime of the test config; `extra` is appended to it (e.g. another
    /// `[rate_limit_store]`).
    pub(crate) async fn start(extra: &str) -> Harness {
        let rsa = openssl::rsa::Rsa::generate(2048).expect("an RSA key");
        let jwks = serde_json::json!({"keys": [{
            "kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
            "e": URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
        }]});
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&rsa.private_key_to_pem().expect("pem"))
            .expect("a signing key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let issuer = format!("http://{}", listener.local_addr().expect("bound"));
        let discovery = serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        tokio::spawn(serve_provider(
            listener,
            discovery.to_string(),
            jwks.to_string(),
        ));

        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("policy.toml"), POLICY).expect("policy written");
        std::fs::write(dir.path().join("report.toml"), REPORT_ONLY).expect("policy written");
        let text = format!(
            r#"
[server]
listen = ["127.0.0.1:1"]
public_url = "http://gw.test"
allowed_hosts = ["gw.test"]
trusted_proxies = ["10.0.0.0/8"]
[auth_failure_limit]
max_failures = 3
[upstream.app]
servers = ["127.0.0.1:1"]
[[bearer]]
issuer = "{issuer}"
audiences = ["api"]
jwks_uri = "{issuer}/jwks"
[[idp]]
name = "corp"
issuer = "{issuer}"
client_id = "gatehouse"
client_secret = "a-test-secret"
[[api_key]]
name = "ci"
hash = "{hash}"
subject = "svc-ci"
[[rate_limit]]
name = "one-a-day"
key = "client_ip"
limit = "1/day"
[[route]]
name = "open"
path = "/open"
upstream = "app"
auth = ["none"]
[[route]]
name = "api"
path = "/api"
upstream = "app"
auth = ["bearer"]
policy = "policy.toml"
cors = {{ allowed_origins = ["https://spa.test"], allowed_methods = ["GET"] }}
[[route]]
name = "keys"
path = "/keys"
upstream = "app"
auth = ["api_key"]
[[route]]
name = "app"
path = "/app"
upstream = "app"
auth = ["session"]
idp = "corp"
[[route]]
name = "audit"
path = "/audit"
upstream = "app"
auth = ["bearer"]
policy = "report.toml"
[[route]]
name = "limited"
path = "/limited"
upstream = "app"
auth = ["none"]
rate_limit = ["one-a-day"]
{extra}
"#,
            hash = crate::authn::api_key::hash_key(API_KEY),
        );
        let config = Config::from_str(&dir.path().join("gateway.toml"), &text, &|_| None)
            .unwrap_or_else(|e| panic!("test config: {e}"));
        let metrics = Arc::new(Metrics::new());
        let rt = Runtime::build(config, None, &metrics)
            .await
            .expect("a runtime");
        Harness {
            rt,
            metrics,
            key,
            issuer,
            _dir: dir,
        }
    }

    pub(crate) fn pipeline(&self) -> Pipeline<'_> {
        Pipeline {
            rt: &self.rt,
            metrics: &self.metrics,
        }
    }

    /// The pipeline's decision about `facts`.
    pub(crate) async fn decide(&self, facts: &RequestFacts<'_>) -> Decision {
        let mut judged = Judged::default();
        let verdict = self.pipeline().decide(facts, &mut judged).await;
        Decision { judged, verdict }
    }

    /// A bearer token of the test issuer for `sub`, in `groups`.
    pub(crate) fn token(&self, sub: &str, groups: &[&str]) -> String {
        let exp = crate::authn::bearer::unix_now() + 600;
        let claims = serde_json::json!({
            "iss": self.issuer, "aud": "api", "sub": sub, "exp": exp, "groups": groups,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("a signed token")
    }

    /// The `Cookie` value of a live session of `sub` at the test provider.
    pub(crate) async fn session(&self, sub: &str) -> String {
        let login = self.rt.login.as_ref().expect("the config has an idp");
        let claims = serde_json::json!({"iss": self.issuer, "sub": sub, "groups": ["staff"]});
        login.store_test_session("corp", &claims).await
    }

    /// The pipeline's decision about a request to the proxy from `PEER`.
    pub(crate) async fn proxy(&self, method: &str, target: &str, headers: &HeaderMap) -> Decision {
        let method = Method::from_bytes(method.as_bytes()).expect("a method token");
        let facts = RequestFacts {
            front: Front::Proxy,
            method: &method,
            target: target.as_bytes(),
            authority: headers.get("host").and_then(|h| h.to_str().ok()),
            query: target.split_once('?').map(|(_, q)| q),
            headers,
            peer: Some(PEER),
            tls: false,
            request_id: None,
        };
        self.decide(&facts).await
    }
}

/// Headers from name-value pairs (a `host` of `gw.test` unless one is given).
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(http::header::HOST, "gw.test".parse().expect("a value"));
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        if name == http::header::HOST {
            map.remove(&name);
        }
        map.append(name, value.parse().expect("a header value"));
    }
    map
}

/// The provider's discovery document and JWKS, to whoever asks (at most 200 connections,
/// each one request).
async fn serve_provider(listener: tokio::net::TcpListener, discovery: String, jwks: String) {
    for _ in 0..200 {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let (discovery, jwks) = (discovery.clone(), jwks.clone());
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let line = String::from_utf8_lossy(&request);
            let path = line.split(' ').nth(1).unwrap_or("");
            let (status, body) = match path {
                "/.well-known/openid-configuration" => ("200 OK", discovery),
                "/jwks" => ("200 OK", jwks),
                _ => ("404 Not Found", String::new()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
