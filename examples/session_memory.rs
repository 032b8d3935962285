//! How much memory live sessions take in the memory store: N sessions shaped like real ones,
//! stored the way a login stores them, and the process RSS before and after. Each session has
//! its own Keycloak-sized RS256 ID token (a 90-byte header; 20 claims, ~620 bytes of JSON
//! with random ids, nonce and hashes; a 256-byte signature: ~1,200 characters) and an opaque
//! 64-character refresh token, and where its login came from (an IPv4 address and one of a few
//! real browsers' user agents, as the session admin API lists them).
//! `cargo run --release --example session_memory -- [N] [--with-access-token] [--bare] [--no-client]`
//! (the access token, ~1,000 characters, is kept only when a session route sets
//! `pass_access_token`; `--bare` stores no tokens at all, to see the cost of a session itself;
//! `--no-client` keeps no login client, as sessions were stored before the admin API).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gatehouse::session::memory::MemoryStore;
use gatehouse::session::{
    new_session_id, LoginClient, Names, Session, SessionStore, Times, TokenCipher, Tokens,
};
use serde_json::json;
use support::{random, uuid};

#[path = "support/mod.rs"]
mod support;

#[global_allocator]
static GLOBAL: gatehouse_alloc::MiMalloc = gatehouse_alloc::MiMalloc;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A signed-looking JWS: `header.claims.signature` with a random 256-byte signature.
fn jws(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(random(256))
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let with_access = std::env::args().any(|a| a == "--with-access-token");
    let bare = std::env::args().any(|a| a == "--bare");
    let no_client = std::env::args().any(|a| a == "--no-client");
    // User agents of the browsers most logins come from, each with its own version numbers.
    let agents = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{v} Safari/605.1.15",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{v} Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Mobile Safari/537.36",
    ];
    let mut agent_chars = 0;
    let mut packed_bytes = 0;
    // `--used`: every session has served a request, so its identity is built and cached.
    let used = std::env::args().any(|a| a == "--used");
    // `--unbounded`: with `--used`, no bound on the identity cache (to check its estimates).
    let unbounded = std::env::args().any(|a| a == "--unbounded");
    let identities = gatehouse::session::IdentityCache::new(if unbounded {
        u64::MAX
    } else {
        gatehouse::login::IDENTITY_CACHE_BYTES
    });
    let bearer = gatehouse::config::BearerConfig {
        issuer: "https://login.example.com/realms/corp".into(),
        audiences: vec!["gatehouse".into()],
        jwks_uri: None,
        algorithms: Vec::new(),
        leeway: Duration::from_secs(60),
        token_type: None,
        claims: gatehouse::config::ClaimNames {
            subject: "sub".into(),
            email: "email".into(),
            username: "preferred_username".into(),
            groups: "groups".into(),
            email_verified: gatehouse::config::EmailVerified::Required,
        },
        introspection: None,
        unknown_kid_refetch_interval: Duration::from_secs(60),
        qualify_subject: false,
    };
    let cipher = TokenCipher::new(b"a session secret for the memory measurement");
    let store = MemoryStore::new(1_000_000);
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": URL_SAFE_NO_PAD.encode(random(32))});
    let issuer = "https://login.example.com/realms/corp";
    let mut token_chars = 0;
    let mut build_time = Duration::ZERO;
    let before = rss_kib();
    for i in 0..n {
        let id_claims = support::keycloak_id_claims(
            i,
            issuer,
            "gatehouse",
            &support::random_b64(32),
            1_700_000_000,
        );
        let (subject, sid) = (
            id_claims["sub"].as_str().unwrap_or_default().to_string(),
            id_claims["sid"].as_str().unwrap_or_default().to_string(),
        );
        let id_token = jws(&header, &id_claims);
        token_chars = id_token.len();
        let access_token = with_access.then(|| {
            let claims = json!({
                "exp": 1_700_000_300u64, "iat": 1_700_000_000u64, "jti": uuid(), "iss": issuer,
                "aud": "account", "sub": subject, "typ": "Bearer", "azp": "gatehouse", "sid": sid,
                "scope": "openid email profile", "email": format!("user-{i}@example.com"), "email_verified": true,
                "realm_access": {"roles": ["offline_access", "uma_authorization", "staff"]},
                "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
            });
            jws(&header, &claims)
        });
        let tokens = if bare {
            Tokens::default()
        } else {
            Tokens {
                id_token: Some(id_token),
                access_token,
                refresh_token: Some(URL_SAFE_NO_PAD.encode(random(48))),
            }
        };
        let names = Names {
            idp: "corp",
            issuer: "https://login.example.com/realms/corp",
            subject: &subject,
            sid: Some(&sid),
            acr: Some("1"),
        };
        let times = Times {
            auth_time: Some(1_700_000_000),
            access_expires_at: Some(1_700_000_300),
            refresh_at: Some(1_700_000_240),
            ..Times::starting(1_700_000_000, 1_700_028_800)
        };
        let client = if no_client {
            LoginClient::default()
        } else {
            let agent = agents[i % agents.len()].replace("{v}", &(100 + i % 30).to_string());
            agent_chars += agent.len();
            let ip: [u8; 4] = rand::random();
            LoginClient::new(Some(ip.into()), Some(&agent))
        };
        let session = Session::from_login(names, &tokens, &client, &cipher, times);
        packed_bytes += session.to_bytes().len();
        if used {
            // As a request does: open the tokens, read the ID token's claims.
            let started = std::time::Instant::now();
            let claims = session.id_token_claims(&cipher).expect("tokens open");
            let identity = gatehouse::authn::bearer::identity_from_claims(
                serde_json::from_slice(&claims).expect("claims"),
                &bearer,
                gatehouse::config::AuthMethod::Session,
            )
            .expect("identity");
            build_time += started.elapsed();
            identity.header_values();
            identities.insert(&session, identity);
        }
        store
            .put(&new_session_id(), &session, Duration::from_secs(3600))
            .await
            .expect("memory store");
    }
    let live = store.count().await.unwrap_or(0);
    let identity_bytes = identities.bytes();
    let after = rss_kib();
    println!(
        "{live} live sessions{} in the memory store ({token_chars}-character ID tokens{}): process RSS {:.1} MB -> {:.1} MB (+{:.1} MB, {:.0} bytes per session)",
        if with_access { " with access tokens" } else { "" },
        if bare { " not kept" } else { "" },
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / live.max(1) as f64,
    );
    println!(
        "a session packs into {:.0} bytes on average",
        packed_bytes as f64 / n.max(1) as f64
    );
    if !no_client {
        println!(
            "with the login's client: an IPv4 address and a {:.0}-character user agent on average",
            agent_chars as f64 / live.max(1) as f64
        );
    }
    if used {
        println!(
            "identities of sessions in use: {:.1} MB by estimate; reading one from its session: {:.1} us",
            identity_bytes as f64 / 1e6,
            build_time.as_secs_f64() * 1e6 / live.max(1) as f64
        );
    }
}
