//! The session stores (groundwork of the browser-login issue): the memory store, and the
//! Redis store against a real Redis shared by two store instances, as two gateways would.

mod common;

use std::time::Duration;

use common::redis::Redis;
use gatehouse::redis_conn::RedisTarget;
use gatehouse::session::memory::MemoryStore;
use gatehouse::session::redis_store::RedisSessionStore;
use gatehouse::session::{
    new_session_id, store_key, Issuer, Names, Session, SessionStore, StoreError, Times,
    TokenCipher, Tokens,
};

fn session(subject: &str, sid: &str, cipher: &TokenCipher) -> Session {
    let tokens = Tokens {
        id_token: Some("id.token.value".into()),
        access_token: Some("access-token-plaintext".into()),
        refresh_token: Some("refresh-token-plaintext".into()),
    };
    let names = Names {
        idp: "corp",
        issuer: "https://login.example.com/realms/corp",
        subject,
        sid: Some(sid),
        acr: None,
    };
    let times = Times {
        auth_time: Some(1),
        access_expires_at: Some(100),
        ..Times::starting(1, u64::MAX)
    };
    Session::new(names, &tokens, cipher, times)
}

async fn exercise(a: &dyn SessionStore, b: &dyn SessionStore) {
    let cipher = TokenCipher::new(b"shared secret of both instances");
    let (id1, id2, id3) = (new_session_id(), new_session_id(), new_session_id());
    let hour = Duration::from_secs(3600);
    a.put(&id1, &session("alice", "idp-sid-1", &cipher), hour)
        .await
        .unwrap();
    a.put(&id2, &session("alice", "idp-sid-2", &cipher), hour)
        .await
        .unwrap();
    a.put(&id3, &session("bob", "idp-sid-3", &cipher), hour)
        .await
        .unwrap();
    // Written on a, read on b.
    let got = b
        .get(&id1)
        .await
        .unwrap()
        .expect("session visible to the other instance");
    assert_eq!(got.subject(), "alice");
    assert_eq!(
        got.tokens(&cipher).and_then(|t| t.access_token).as_deref(),
        Some("access-token-plaintext")
    );
    assert!(b.get(&new_session_id()).await.unwrap().is_none());
    // A login state is read once, by any instance; a second read (replay) finds nothing.
    a.put_once("login:abc", b"state", hour).await.unwrap();
    assert_eq!(
        b.take_once("login:abc").await.unwrap().as_deref(),
        Some(&b"state"[..])
    );
    assert_eq!(a.take_once("login:abc").await.unwrap(), None);
    // The refresh lock is exclusive until released.
    assert!(a.try_lock("refresh:x", hour).await.unwrap());
    assert!(!b.try_lock("refresh:x", hour).await.unwrap());
    b.unlock("refresh:x").await.unwrap();
    assert!(a.try_lock("refresh:x", hour).await.unwrap());
    a.ping().await.unwrap();
    // Back-channel logout by IdP session id, logout everywhere by subject, plain logout.
    let corp = Issuer {
        url: "https://login.example.com/realms/corp",
        idps: &[],
    };
    assert_eq!(b.delete_by_sid(corp, "idp-sid-2").await.unwrap(), 1);
    assert!(a.get(&id2).await.unwrap().is_none());
    assert!(a.get(&id1).await.unwrap().is_some());
    assert_eq!(b.delete_by_subject(corp, "alice").await.unwrap(), 1);
    assert!(a.get(&id1).await.unwrap().is_none());
    // A touch or refresh replaces a live session, and never brings back an ended one.
    let mut touched = session("bob", "idp-sid-3", &cipher);
    touched.set_times(Times {
        touched_at: 50,
        ..touched.times()
    });
    assert!(b.update(&id3, &touched, hour).await.unwrap());
    assert_eq!(a.get(&id3).await.unwrap().unwrap().times().touched_at, 50);
    b.delete(&id3).await.unwrap();
    assert!(a.get(&id3).await.unwrap().is_none());
    assert!(
        !a.update(&id3, &touched, hour).await.unwrap(),
        "stays ended"
    );
    assert!(b.get(&id3).await.unwrap().is_none());
    // Sessions expire by themselves.
    let short = new_session_id();
    a.put(
        &short,
        &session("carol", "idp-sid-4", &cipher),
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert!(b.get(&short).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(b.get(&short).await.unwrap().is_none(), "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store() {
    let store = MemoryStore::new(10_000);
    exercise(&store, &store).await;
    assert!(
        store.count().await.unwrap() <= 1,
        "at most the expired session awaits eviction"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_shared_by_two_instances_with_tokens_encrypted_at_rest() {
    let mut redis = Redis::start();
    // Two spellings of one server: two targets, so two connections, as two instances have.
    let target = |url: &str| RedisTarget::from_url(url).unwrap();
    let a = RedisSessionStore::new(
        &target(&redis.url()),
        Duration::from_millis(500),
        Duration::from_secs(3600),
    )
    .unwrap();
    let b = RedisSessionStore::new(
        &target(&redis.url().replace("127.0.0.1", "localhost")),
        Duration::from_millis(500),
        Duration::from_secs(3600),
    )
    .unwrap();
    exercise(&a, &b).await;

    // At rest: no token and no session id in Redis.
    let cipher = TokenCipher::new(b"shared secret of both instances");
    let id = new_session_id();
    a.put(
        &id,
        &session("dave", "idp-sid-9", &cipher),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.iter().all(|k| !k.contains(&id)), "{keys:?}");
    for key in keys.iter().filter(|k| k.starts_with("gatehouse:s:")) {
        let value: Vec<u8> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&value);
        assert!(
            !text.contains("access-token-plaintext") && !text.contains("refresh-token"),
            "{text}"
        );
    }

    // A value this version cannot read (an older format) is no session, not an error.
    let stale = new_session_id();
    let _: () = redis::cmd("SET")
        .arg(format!("gatehouse:s:{}", store_key(&stale)))
        .arg(r#"{"subject":"erin","claims":"{}"}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(a.get(&stale).await.unwrap().is_none());

    // Redis down: a quick, clear error, never a hang.
    redis.stop();
    match a.get(&id).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    redis.restart();
    assert!(
        a.get(&id).await.unwrap().is_none(),
        "a fresh Redis has no sessions; the store reconnected"
    );
}
