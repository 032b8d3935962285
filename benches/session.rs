//! The session step's parts: finding a session among 100,000 in the memory store, a login
//! into a store full of 100,000, its cached identity, reading an identity again from the sealed ID token (a cache miss), and
//! the stored form a Redis store writes and reads.

use std::hint::black_box;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::config::{AuthMethod, BearerConfig, ClaimNames, EmailVerified};
use gatehouse::session::memory::MemoryStore;
use gatehouse::session::{
    new_session_id, IdentityCache, Names, Session, SessionStore, Times, TokenCipher, Tokens,
};
use serde_json::json;

/// A Keycloak-sized ID token (about 1,200 characters) for user `i`.
fn id_token(i: usize) -> String {
    let claims = json!({
        "exp": 1_700_003_600u64, "iat": 1_700_000_000u64, "auth_time": 1_700_000_000u64,
        "jti": format!("{i:08x}-5c1e-4b8a-9f3d-0c2b7e1a9d44"), "iss": "https://login.example.com/realms/corp",
        "aud": "gatehouse", "sub": format!("{i:08x}-8f2a-4c7e-9d61-2f4b8f0a1c55"), "typ": "ID",
        "azp": "gatehouse", "nonce": "q8Zr1o2VQ7mZp3xYc1bK0sT9uW4aE6hJk2LmN5pQ7rS", "sid": format!("{i:08x}-2d4f-4e1a-b3c5-7f9e1d2c3b4a"),
        "at_hash": "Xk3vQ9mZp2LrT8wYb1NcGd", "acr": "1", "email_verified": true,
        "name": format!("User {i}"), "preferred_username": format!("user-{i}"),
        "given_name": "User", "family_name": format!("{i}"),
        "email": format!("user-{i}@example.com"), "groups": ["staff", "sales"],
    });
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "k5QyWm7Zt2Xr9Vb4Nc8Ld1Pf6Hg3Js0Ka"});
    let signature: Vec<u8> = (0..256).map(|b| (b * 7 + i) as u8).collect();
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cipher = TokenCipher::new(b"a session secret for the benchmarks");
    let store = MemoryStore::new(1_000_000);
    let session = |i: usize| {
        let tokens = Tokens {
            id_token: Some(id_token(i)),
            access_token: None,
            refresh_token: Some(URL_SAFE_NO_PAD.encode([i as u8; 48])),
        };
        let (subject, sid) = (format!("user-{i}"), format!("sid-{i}"));
        let names = Names {
            idp: "corp",
            issuer: "https://login.example.com/realms/corp",
            subject: &subject,
            sid: Some(&sid),
            acr: Some("1"),
        };
        Session::new(
            names,
            &tokens,
            &cipher,
            Times::starting(1_700_000_000, u64::MAX / 2),
        )
    };
    // `cargo bench` passes `--bench`; under `cargo test` the bench only has to run once.
    let count = if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        1_000
    };
    let ids: Vec<String> = (0..count).map(|_| new_session_id()).collect();
    runtime.block_on(async {
        for (i, id) in ids.iter().enumerate() {
            store
                .put(id, &session(i), Duration::from_secs(3600))
                .await
                .unwrap();
        }
    });
    c.bench_function("session/block_on_baseline", |b| {
        b.iter(|| runtime.block_on(async { black_box(1) }))
    });
    let mut i = 0usize;
    c.bench_function("session/memory_store_get_of_100k", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            runtime.block_on(store.get(black_box(&ids[i])))
        })
    });

    // A login into a full store: the new session takes the place of one that ends first.
    let full = MemoryStore::new(count as u64);
    let stored: Vec<Session> = (0..count).map(session).collect();
    runtime.block_on(async {
        for (id, s) in ids.iter().zip(&stored) {
            full.put(id, s, Duration::from_secs(3600)).await.unwrap();
        }
    });
    let mut n = 0usize;
    c.bench_function("session/memory_store_login_into_full_store", |b| {
        b.iter(|| {
            n += 1;
            let id = format!("{n:064x}");
            runtime.block_on(full.put(&id, &stored[n % count], Duration::from_secs(3600)))
        })
    });
    drop(full);

    let bearer = BearerConfig {
        issuer: "https://login.example.com/realms/corp".into(),
        audiences: vec!["gatehouse".into()],
        jwks_uri: None,
        algorithms: Vec::new(),
        leeway: Duration::from_secs(60),
        token_type: None,
        claims: ClaimNames {
            subject: "sub".into(),
            email: "email".into(),
            username: "preferred_username".into(),
            groups: "groups".into(),
            email_verified: EmailVerified::Required,
        },
        introspection: None,
        unknown_kid_refetch_interval: Duration::from_secs(60),
        qualify_subject: false,
    };
    let one = session(1);
    let read_identity = |s: &Session| {
        let claims = s.id_token_claims(&cipher).unwrap();
        gatehouse::authn::bearer::identity_from_claims(
            serde_json::from_slice(&claims).unwrap(),
            &bearer,
            AuthMethod::Session,
        )
        .unwrap()
    };
    c.bench_function("session/identity_from_sealed_id_token", |b| {
        b.iter(|| read_identity(black_box(&one)))
    });
    let identities = IdentityCache::new(16 * 1024 * 1024);
    identities.insert(&one, read_identity(&one));
    c.bench_function("session/identity_cache_hit", |b| {
        b.iter(|| identities.get(black_box(&one)))
    });
    let bytes = one.to_bytes();
    c.bench_function("session/stored_form_write_and_read", |b| {
        b.iter(|| Session::from_bytes(&black_box(&one).to_bytes()))
    });
    c.bench_function("session/new_with_tokens_sealed", |b| {
        let tokens = one.tokens(&cipher).unwrap();
        b.iter(|| one.with_tokens(black_box(&tokens), &cipher))
    });
    black_box(bytes);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
