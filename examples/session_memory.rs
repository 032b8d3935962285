//! How much memory live sessions take in the memory store: N sessions shaped like real ones
//! (a Keycloak-sized RS256 ID token and a refresh token, encrypted; a dozen claims; groups),
//! stored the way a login stores them, and the process RSS before and after.
//! `cargo run --release --example session_memory -- [N] [--with-access-token] [--bare]`
//! (the access token is kept only when a session route sets `pass_access_token`; `--bare`
//! stores no tokens at all, to see the cost of a session itself).

use std::time::Duration;

use gatehouse::session::memory::MemoryStore;
use gatehouse::session::{new_session_id, Session, SessionStore, TokenCipher};
use serde_json::json;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let with_access = std::env::args().any(|a| a == "--with-access-token");
    let bare = std::env::args().any(|a| a == "--bare");
    let b64 = |len: usize| {
        use base64::Engine;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    // A JWS: header, a ~430-byte payload, a 256-byte RS256 signature (~900 characters).
    let jws = |payload: usize| format!("{}.{}.{}", b64(60), b64(payload), b64(256));
    let names = gatehouse::config::ClaimNames {
        subject: "sub".into(),
        email: "email".into(),
        username: "preferred_username".into(),
        groups: "groups".into(),
    };
    let cipher = TokenCipher::new(b"a session secret for the memory measurement");
    let store = MemoryStore::new(1_000_000);
    let id_token = jws(430);
    let access_token = jws(500);
    let refresh_token = b64(48);
    let before = rss_kib();
    for i in 0..n {
        let claims = json!({
            "iss": "https://login.example.com/realms/corp", "aud": "gatehouse", "sub": format!("user-{i}"),
            "iat": 1_700_000_000u64, "exp": 1_700_003_600u64, "auth_time": 1_700_000_000u64,
            "sid": format!("sid-{i:08}"), "email": format!("user-{i}@example.com"),
            "preferred_username": format!("user-{i}"), "name": format!("User {i}"),
            "groups": ["staff", "sales"], "acr": "1", "amr": ["pwd"],
        });
        let session = Session {
            subject: format!("user-{i}"),
            email: Some(format!("user-{i}@example.com")),
            username: Some(format!("user-{i}")),
            groups: vec!["staff".into(), "sales".into()],
            idp: "corp".into(),
            sid: Some(format!("sid-{i:08}")),
            created_at: 1_700_000_000,
            expires_at: 1_700_028_800,
            auth_time: Some(1_700_000_000),
            acr: Some("1".into()),
            amr: vec!["pwd".into()],
            claims: gatehouse::login::stored_claims(
                claims.as_object().cloned().unwrap_or_default(),
                &names,
            ),
            id_token: (!bare).then(|| cipher.seal_token(&id_token)),
            access_token: with_access.then(|| cipher.seal_token(&access_token)),
            refresh_token: (!bare).then(|| cipher.seal_token(&refresh_token)),
            access_expires_at: Some(1_700_003_600),
            refresh_at: Some(1_700_003_540),
            touched_at: 1_700_000_000,
            identity: Default::default(),
        };
        store
            .put(&new_session_id(), &session, Duration::from_secs(3600))
            .await
            .expect("memory store");
    }
    let live = store.count().await.unwrap_or(0);
    let after = rss_kib();
    println!(
        "{live} live sessions{} in the memory store: RSS {:.1} MB -> {:.1} MB (+{:.1} MB, {:.0} bytes per session)",
        if with_access { " (with access tokens)" } else { "" },
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / live.max(1) as f64,
    );
}
