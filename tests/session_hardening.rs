//! Sessions and their stores under attack and outage (issue 13, items 9, 14, 15, 17): a
//! Redis that never answers must not make requests queue; a logout during a Redis outage
//! must not come undone when Redis returns; two issuers' equal `sub`s are two people.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::keys::{now, TestKey};
use common::login::provider_for;
use common::redis::Redis;
use common::*;
use gatehouse::metrics::Metrics;
use gatehouse::session::fallback::FallbackStore;
use gatehouse::session::redis_store::RedisSessionStore;
use gatehouse::session::{
    new_session_id, store_key, Issuer, Names, Session, SessionStore, Times, TokenCipher, Tokens,
};
use serde_json::json;

/// A loopback address that accepts TCP connections (the kernel completes the handshake)
/// and never answers: a Redis behind a firewall that drops packets, or a hung one.
struct BlackHole {
    listener: TcpListener,
}

impl BlackHole {
    fn new() -> BlackHole {
        BlackHole {
            listener: TcpListener::bind("127.0.0.1:0").expect("bind"),
        }
    }

    fn url(&self) -> String {
        format!(
            "redis://{}/0",
            self.listener.local_addr().expect("local addr")
        )
    }
}

/// Sends `count` requests at once; each answer's status and how long it took.
fn concurrent(port: u16, count: usize, request: &str) -> Vec<(u16, Duration)> {
    let threads: Vec<_> = (0..count)
        .map(|_| {
            let request = request.to_string();
            std::thread::spawn(move || {
                let started = Instant::now();
                let status = (|| -> Option<u16> {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
                    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
                    s.write_all(request.as_bytes()).ok()?;
                    let mut data = Vec::new();
                    let _ = s.read_to_end(&mut data);
                    parse_response(&data).map(|r| r.status)
                })();
                (status.unwrap_or(0), started.elapsed())
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("request thread"))
        .collect()
}

/// A session route whose IdP is never reached (no login happens here: the requests carry
/// a well-formed session cookie, so the store is asked).
fn session_config(app: &TestServer, session: &str) -> String {
    format!(
        r#"{}
[session]
{session}
secret = "a-session-secret-for-the-hardening-tests-0123"

[[idp]]
name = "corp"
issuer = "http://127.0.0.1:1"
client_id = "gatehouse"

{}
[[route]]
name = "app"
path = "/"
upstream = "app"
auth = ["session"]

[reserved_limit]
limit = "10000/second"
"#,
        base_config("public_url = \"http://127.0.0.1:{port}\"\nallowed_hosts = [\"127.0.0.1\"]"),
        upstream_block("app", &[app.addr], ""),
    )
}

const TIMEOUT_MS: u64 = 200;
/// What one request may take with a Redis that never answers: the store's timeout, and
/// room for a busy two-core machine; far below a queue of 30 connects one after another.
const BOUND: Duration = Duration::from_millis(TIMEOUT_MS * 5);

fn assert_bounded(what: &str, got: &[(u16, Duration)], status: u16, log: &str) {
    let slowest = got.iter().map(|(_, took)| *took).max().unwrap_or_default();
    eprintln!("{what}: {} requests, slowest {slowest:?}", got.len());
    for (s, took) in got {
        assert!(
            *s == status && *took <= BOUND,
            "{what}: every request answers {status} within {BOUND:?}: {got:?}\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_redis_never_makes_requests_queue() {
    let hole = BlackHole::new();
    let app = TestServer::echo("app").await;
    let cookie = format!("gatehouse={}", "ab".repeat(32));
    let request = format!(
        "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );

    // The session store: 503 (no fallback), every request within the bound, again and again.
    let store = format!(
        "store = \"redis\"\nredis_url = \"{}\"\ntimeout = \"{TIMEOUT_MS}ms\"",
        hole.url()
    );
    let gw = Gateway::start(&session_config(&app, &store));
    for round in 0..2 {
        let got = concurrent(gw.port, 30, &request);
        assert_bounded(
            &format!("session store, round {round}"),
            &got,
            503,
            &gw.log(),
        );
    }
    drop(gw);

    // With the memory fallback, the same requests are answered from memory: no session
    // there, so 401, and as quickly.
    let gw = Gateway::start(&session_config(
        &app,
        &format!("{store}\nfallback = \"memory\""),
    ));
    for round in 0..2 {
        let got = concurrent(gw.port, 30, &request);
        assert_bounded(&format!("fallback, round {round}"), &got, 401, &gw.log());
    }
    drop(gw);

    // The rate-limit store: fail_open lets requests pass, fail_closed refuses them; both
    // answer within the bound.
    for (on_error, status) in [("fail_open", 200), ("fail_closed", 503)] {
        let config = format!(
            r#"{}
[[rate_limit]]
name = "per-ip"
key = "client_ip"
limit = "10000/second"

[rate_limit_store]
kind = "redis"
redis_url = "{}"
timeout = "{TIMEOUT_MS}ms"
on_error = "{on_error}"

{}
[[route]]
name = "open"
path = "/"
upstream = "app"
auth = ["none"]
rate_limit = ["per-ip"]
"#,
            base_config(""),
            hole.url(),
            upstream_block("app", &[app.addr], ""),
        );
        let gw = Gateway::start(&config);
        let plain = "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        for round in 0..2 {
            let got = concurrent(gw.port, 30, plain);
            assert_bounded(
                &format!("rate limit {on_error}, round {round}"),
                &got,
                status,
                &gw.log(),
            );
        }
    }
}

/// A provider that signs whatever the test tells it to: a real provider does not hand out
/// another provider's subjects on purpose, but a hostile or careless one (a partner's IdP,
/// a social login) can name any `sub` and any `sid` it likes.
struct Stub {
    _server: TestServer,
    issuer: String,
    key: TestKey,
    next_id_token: Arc<Mutex<Option<String>>>,
}

async fn stub() -> Stub {
    let next_id_token = Arc::new(Mutex::new(None::<String>));
    let next = next_id_token.clone();
    let idp = common::stub_idp::start("partner-key", json!({}), move |_: &Request| {
        match next.lock().unwrap().take() {
            Some(id_token) => Reply::json(
                200,
                &json!({"access_token": "partner-at", "token_type": "Bearer", "expires_in": 600, "id_token": id_token}),
            ),
            None => Reply::json(400, &json!({"error": "invalid_grant"})),
        }
    })
    .await;
    Stub {
        _server: idp.server,
        issuer: idp.issuer,
        key: idp.key,
        next_id_token,
    }
}

impl Stub {
    /// Logs a browser in at the gateway through this provider as `sub` with IdP session
    /// `sid`; the gateway's session cookie (`name=value`).
    fn login(&self, gw: &Gateway, sub: &str, sid: &str) -> String {
        let r = gw.get(
            "/_gatehouse/login?idp=partner&rd=/",
            "Accept: text/html\r\n",
        );
        assert_eq!(r.status, 302, "{}\n{}", r.body, gw.log());
        let to = url::Url::parse(r.header("location").unwrap()).unwrap();
        let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
        let binding = cookie_pair(&r, "gatehouse_login=");
        let t = now();
        *self.next_id_token.lock().unwrap() = Some(self.key.sign(&json!({
            "iss": self.issuer, "aud": "gatehouse", "sub": sub, "sid": sid, "iat": t, "exp": t + 600,
            "nonce": q["nonce"], "email": "alice@partner.example", "groups": ["admins"],
        })));
        let r = gw.get(
            &format!("/_gatehouse/callback?code=c&state={}", q["state"]),
            &format!("Accept: text/html\r\nCookie: {binding}\r\n"),
        );
        assert_eq!(r.status, 302, "{}\n{}", r.body, gw.log());
        cookie_pair(&r, "gatehouse=")
    }

    /// An access token for the gateway's `[[bearer]]` audience.
    fn access_token(&self, sub: &str) -> String {
        let t = now();
        self.key.sign(&json!({
            "iss": self.issuer, "aud": "partner-api", "sub": sub, "iat": t, "exp": t + 600,
        }))
    }

    /// A back-channel logout token from this provider naming `sub` and/or `sid`.
    fn logout_token(&self, sub: Option<&str>, sid: Option<&str>) -> String {
        let mut claims = json!({
            "iss": self.issuer, "aud": "gatehouse", "iat": now(), "exp": now() + 120,
            "jti": format!("jti-{}", rand_suffix()),
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        });
        if let Some(sub) = sub {
            claims["sub"] = json!(sub);
        }
        if let Some(sid) = sid {
            claims["sid"] = json!(sid);
        }
        let header = json!({"alg": "RS256", "kid": self.key.kid, "typ": "logout+jwt"});
        self.key.sign_with_header(&header, &claims)
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// `name=value` of the cookie a response sets whose text starts with `prefix`.
fn cookie_pair(r: &Response, prefix: &str) -> String {
    r.headers["set-cookie"]
        .iter()
        .find(|c| c.starts_with(prefix))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no {prefix} cookie in {:?}", r.headers))
        .to_string()
}

fn backchannel(gw: &Gateway, token: &str) -> Response {
    let body = format!("logout_token={token}");
    gw.raw(&format!(
        "POST /_gatehouse/backchannel-logout HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// A same-origin logout form post (what the gateway's own logout button sends).
fn logout(gw: &Gateway, cookie: &str, everywhere: bool) -> Response {
    let query = if everywhere { "?everywhere=1" } else { "" };
    gw.raw(&format!(
        "POST /_gatehouse/logout{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\nSec-Fetch-Site: same-origin\r\nCookie: {cookie}\r\nAccept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        port = gw.port
    ))
}

/// The status of a script's request with `cookie`.
fn status_with(gw: &Gateway, path: &str, cookie: &str) -> u16 {
    gw.get(
        path,
        &format!("Cookie: {cookie}\r\nAccept: application/json\r\n"),
    )
    .status
}

/// Two providers for one gateway: `corp`, the real oidc-provider, and `partner`, a provider
/// that names the same `sub` ("alice") for someone else. Same subject, two people.
async fn two_issuers_one_subject(session_store: &str) {
    let port = free_port();
    let corp = provider_for(&[port], 600);
    let partner = stub().await;
    let app = TestServer::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!(
            r#"[roles]
admin = ["app:admin"]

[[binding]]
role = "admin"
subjects = ["alice"]
issuers = ["{}"]

[[rule]]
name = "admins only"
paths = ["/admin/**"]
require = "app:admin"
"#,
            corp.issuer
        ),
    )
    .unwrap();
    let config = format!(
        r#"{}
[session]
{session_store}
secret = "a-session-secret-for-the-hardening-tests-0123"

[[idp]]
name = "corp"
issuer = "{}"
client_id = "gatehouse"
client_secret = "gatehouse-test-secret"
scopes = ["openid", "profile", "email", "groups"]

[[idp]]
name = "partner"
issuer = "{}"
client_id = "gatehouse"
client_secret = "partner-secret"

[[bearer]]
issuer = "{}"
audiences = ["partner-api"]

[headers]
claims = {{ "X-Idp-Sid" = "sid" }}
assertion = true

{}
[[route]]
name = "admin"
path = "/admin/"
upstream = "app"
auth = ["session", "bearer"]
idp = "corp"
policy = "policy.toml"

[[route]]
name = "partner"
path = "/partner/"
upstream = "app"
auth = ["session", "bearer"]
idp = "partner"

[[route]]
name = "app"
path = "/"
upstream = "app"
auth = ["session"]
idp = "corp"

[reserved_limit]
limit = "10000/second"
"#,
        base_config("public_url = \"http://127.0.0.1:{port}\"\nallowed_hosts = [\"127.0.0.1\"]"),
        corp.issuer,
        partner.issuer,
        partner.issuer,
        upstream_block("app", &[app.addr], ""),
    );
    let gw = Gateway::start_on(dir, &config, port);

    // alice at corp, through the real provider's pages.
    let browser = Browser::new();
    let (page, visited) = browser.login(&gw.url("/whoami"), "alice").await;
    assert_eq!(page.status, 200, "{visited:?} {}\n{}", page.body, gw.log());
    let corp_alice = browser.cookie_header(&gw.url("/"));
    // Two issuers are configured: the upstream is told which one vouches for the person.
    let corp_user = format!("{}#alice", corp.issuer);
    assert_eq!(
        page.echoed_header("x-auth-request-user").as_deref(),
        Some(corp_user.as_str())
    );
    assert_eq!(
        page.echoed_header("x-auth-request-issuer").as_deref(),
        Some(corp.issuer.as_str())
    );
    let corp_sid = page.echoed_header("x-idp-sid").expect("corp's sid");
    // The signed assertion says the same: `sub` qualified, and whose it is.
    let assertion = page
        .echoed_header("x-gatehouse-assertion")
        .expect("assertion");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            assertion.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], corp_user.as_str(), "{claims}");
    assert_eq!(claims["subject_issuer"], corp.issuer.as_str(), "{claims}");

    // "alice" at partner: another person with the same subject, by session and by token.
    let partner_alice = partner.login(&gw, "alice", "partner-sid-1");
    let partner_user = format!("{}#alice", partner.issuer);
    let bearer = format!(
        "Authorization: Bearer {}\r\n",
        partner.access_token("alice")
    );
    for credential in [format!("Cookie: {partner_alice}\r\n"), bearer.clone()] {
        let r = gw.get(
            "/partner/whoami",
            &format!("{credential}Accept: application/json\r\n"),
        );
        assert_eq!(
            r.echoed().header("x-auth-request-user"),
            Some(partner_user.as_str())
        );
        assert_eq!(
            r.echoed().header("x-auth-request-issuer"),
            Some(partner.issuer.as_str())
        );
    }

    // The binding names corp's alice: partner's alice does not get her rights.
    assert_eq!(status_with(&gw, "/admin/users", &corp_alice), 200);
    let r = gw.get(
        "/admin/users",
        &format!("{bearer}Accept: application/json\r\n"),
    );
    assert_eq!(r.status, 403, "{}", r.body);

    // partner ends its alice's sessions by subject: corp's alice stays logged in.
    let r = backchannel(&gw, &partner.logout_token(Some("alice"), None));
    assert_eq!(r.status, 200, "{}\n{}", r.body, gw.log());
    assert_eq!(status_with(&gw, "/partner/x", &partner_alice), 401);
    assert_eq!(
        status_with(&gw, "/x", &corp_alice),
        200,
        "a back-channel logout from partner ended corp's session\n{}",
        gw.log()
    );

    // partner names corp's IdP session id: still nothing of corp's ends.
    let partner_alice = partner.login(&gw, "alice", "partner-sid-2");
    let r = backchannel(&gw, &partner.logout_token(None, Some(&corp_sid)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status_with(&gw, "/x", &corp_alice), 200);
    assert_eq!(status_with(&gw, "/partner/x", &partner_alice), 200);

    // partner's alice logs out everywhere: everywhere is partner's alice's, not corp's.
    let r = logout(&gw, &partner_alice, true);
    assert!(r.status < 400, "{} {}", r.status, r.body);
    assert_eq!(status_with(&gw, "/partner/x", &partner_alice), 401);
    assert_eq!(status_with(&gw, "/x", &corp_alice), 200);

    // corp's own back-channel logout (the person signs out at corp) still ends hers.
    let (confirm, _) = browser
        .follow(&format!("{}/session/end", corp.issuer))
        .await;
    browser.confirm_logout(&confirm).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_with(&gw, "/x", &corp_alice) != 401 {
        assert!(
            Instant::now() < deadline,
            "corp's back-channel logout did not end the session\n{}\n{}",
            gw.log(),
            corp.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_issuers_same_subject_are_two_people_memory_store() {
    two_issuers_one_subject("store = \"memory\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_issuers_same_subject_are_two_people_redis_store() {
    let redis = Redis::start();
    two_issuers_one_subject(&format!(
        "store = \"redis\"\nredis_url = \"{}\"",
        redis.url()
    ))
    .await;
}

fn stored_session(subject: &str, sid: &str, cipher: &TokenCipher) -> Session {
    let names = Names {
        idp: "corp",
        issuer: "https://login.example.com/realms/corp",
        subject,
        sid: Some(sid),
        acr: None,
    };
    Session::new(
        names,
        &Tokens::default(),
        cipher,
        Times::starting(1, u64::MAX),
    )
}

/// Whether Redis itself still holds the session (another instance would find it).
async fn in_redis(redis: &Redis, id: &str) -> bool {
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let n: i64 = ::redis::cmd("EXISTS")
        .arg(format!("gatehouse:s:{}", store_key(id)))
        .query_async(&mut conn)
        .await
        .unwrap();
    n == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_ends_during_a_redis_outage_stays_ended_when_redis_returns() {
    let mut redis = Redis::start_persistent();
    let primary = RedisSessionStore::new(
        &gatehouse::redis_conn::RedisTarget::from_url(&redis.url()).unwrap(),
        Duration::from_millis(200),
        Duration::from_secs(3600),
    )
    .unwrap();
    let store = FallbackStore::new(
        primary,
        1000,
        Duration::from_secs(3600),
        Arc::new(Metrics::new()),
    );
    let corp = Issuer {
        url: "https://login.example.com/realms/corp",
        idps: &[],
    };
    let cipher = TokenCipher::new(b"a secret for the outage tests");
    let hour = Duration::from_secs(3600);
    let ids: Vec<String> = (0..5).map(|_| new_session_id()).collect();
    let [alice_1, alice_2, bob, carol, dave] = [0, 1, 2, 3, 4].map(|i| ids[i].as_str());
    for (id, subject, sid) in [
        (alice_1, "alice", "sid-a1"),
        (alice_2, "alice", "sid-a2"),
        (bob, "bob", "sid-b"),
        (carol, "carol", "sid-c"),
        (dave, "dave", "sid-d"),
    ] {
        store
            .put(id, &stored_session(subject, sid, &cipher), hour)
            .await
            .unwrap();
    }

    // Redis goes down (killed; its append-only file keeps the sessions). carol logs out,
    // bob's IdP session ends by back-channel, alice logs out everywhere: each is accepted.
    redis.stop();
    store.delete(carol).await.unwrap();
    store.delete_by_sid(corp, "sid-b").await.unwrap();
    store.delete_by_subject(corp, "alice").await.unwrap();
    for id in [alice_1, alice_2, bob, carol] {
        assert!(store.get(id).await.unwrap().is_none());
    }

    // Redis is back with everything it had.
    redis.restart();
    for id in [alice_1, alice_2, bob, carol, dave] {
        assert!(in_redis(&redis, id).await, "the outage kept the data");
    }
    // Nothing that ended comes back; what did not end is there again.
    for (id, who) in [
        (alice_1, "alice"),
        (alice_2, "alice"),
        (bob, "bob"),
        (carol, "carol"),
    ] {
        assert!(
            store.get(id).await.unwrap().is_none(),
            "{who}'s ended session came back with Redis"
        );
    }
    assert!(store.get(dave).await.unwrap().is_some());
    // And the deletions reached Redis itself, for every other instance.
    store.ping().await.unwrap();
    for id in [alice_1, alice_2, bob, carol] {
        assert!(!in_redis(&redis, id).await);
    }
    assert!(in_redis(&redis, dave).await);
}

/// The gateway end to end: a person logs out while Redis is down (killed, data on disk),
/// then while it hangs (paused); the provider's back-channel logout arrives during the hang
/// too. Each answer is a success within the store's timeout, and none comes undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_during_a_redis_outage_hold_after_it() {
    let mut redis = Redis::start_persistent();
    let port = free_port();
    let idp = provider_for(&[port], 600);
    let app = TestServer::echo("app").await;
    let session = format!(
        "store = \"redis\"\nredis_url = \"{}\"\nfallback = \"memory\"\ntimeout = \"{TIMEOUT_MS}ms\"\nsecret = \"a-session-secret-for-the-hardening-tests-0123\"",
        redis.url()
    );
    let gw = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        &common::login::login_config(&idp, &app, &session),
        port,
    );
    let logged_in = |user: &'static str| {
        let gw = &gw;
        async move {
            let browser = Browser::new();
            let (page, visited) = browser.login(&gw.url("/x"), user).await;
            assert_eq!(page.status, 200, "{visited:?} {}\n{}", page.body, gw.log());
            let cookie = browser.cookie_header(&gw.url("/"));
            (browser, cookie)
        }
    };
    let (_, alice_1) = logged_in("alice").await;
    let (_, alice_2) = logged_in("alice").await;
    let (bob_browser, bob) = logged_in("bob").await;
    let (_, carol) = logged_in("carol").await;

    // Redis down: alice logs out of her first session.
    redis.stop();
    let started = Instant::now();
    let r = logout(&gw, &alice_1, false);
    assert!(r.status < 400, "{} {}\n{}", r.status, r.body, gw.log());
    assert!(started.elapsed() <= BOUND, "{:?}", started.elapsed());
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_with(&gw, "/x", &alice_2) != 200 {
        assert!(Instant::now() < deadline, "Redis not back\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status_with(&gw, "/x", &alice_1), 401, "{}", gw.log());

    // Redis hangs: alice logs in again (kept in memory) and logs out everywhere with that
    // session; bob signs out at the provider, which calls the back-channel endpoint.
    redis.pause();
    let (_, alice_3) = logged_in("alice").await;
    let started = Instant::now();
    let r = logout(&gw, &alice_3, true);
    assert!(r.status < 400, "{} {}\n{}", r.status, r.body, gw.log());
    assert!(started.elapsed() <= BOUND, "{:?}", started.elapsed());
    let (confirm, _) = bob_browser
        .follow(&format!("{}/session/end", idp.issuer))
        .await;
    bob_browser.confirm_logout(&confirm).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.log().contains("back-channel logout") {
        assert!(
            Instant::now() < deadline,
            "no back-channel logout\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.resume();
    // Once carol's session (which nobody ended) is served from Redis again, the others are
    // judged by Redis too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_with(&gw, "/x", &carol) != 200 {
        assert!(Instant::now() < deadline, "Redis not back\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (cookie, who) in [
        (&alice_2, "alice (everywhere)"),
        (&bob, "bob (back-channel)"),
    ] {
        assert_eq!(
            status_with(&gw, "/x", cookie),
            401,
            "{who}: the session came back after the hang\n{}",
            gw.log()
        );
    }
}

/// `gatehouse check` on a config with two issuers: a binding by subject that names no
/// issuer is warned of (with its place), and the config still passes.
#[test]
fn check_warns_of_subject_bindings_without_issuers_when_issuers_are_several() {
    let dir = tempfile::tempdir().unwrap();
    let policy = |issuers: &str| {
        format!("[roles]\nadmin = [\"app:admin\"]\n\n[[binding]]\nrole = \"admin\"\nsubjects = [\"alice\"]\n{issuers}\n[[rule]]\nname = \"admins\"\npaths = [\"/**\"]\nrequire = \"app:admin\"\n")
    };
    let config = |bearers: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:18080\"]\n\n{bearers}\n[upstream.app]\nservers = [\"127.0.0.1:18081\"]\n\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\nauth = [\"bearer\"]\npolicy = \"policy.toml\"\n"
        )
    };
    let bearer = |issuer: &str| {
        format!("[[bearer]]\nissuer = \"{issuer}\"\naudiences = [\"api\"]\njwks_uri = \"{issuer}/jwks\"\n")
    };
    let check = |config: &str, policy: &str| {
        std::fs::write(dir.path().join("gateway.toml"), config).unwrap();
        std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["check", "-c"])
            .arg(dir.path().join("gateway.toml"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (
            out.status.success(),
            text.replace(&format!("{}/", dir.path().display()), ""),
        )
    };
    let two = config(&(bearer("https://corp.example") + &bearer("https://partner.example")));
    let (ok, out) = check(&two, &policy(""));
    assert!(ok, "{out}");
    assert!(
        out.contains("policy.toml:4:1: warning: binding gives role \"admin\" by subject without naming `issuers`"),
        "{out}"
    );
    let (ok, out) = check(&two, &policy("issuers = [\"https://corp.example\"]\n"));
    assert!(ok && !out.contains("warning"), "{out}");
    let (ok, out) = check(&config(&bearer("https://corp.example")), &policy(""));
    assert!(ok && !out.contains("warning"), "one issuer: {out}");
    let bare = two.replace(
        "[upstream.app]",
        "[headers]\nqualify_user = false\n\n[upstream.app]",
    );
    let (ok, out) = check(&bare, &policy("issuers = [\"https://corp.example\"]\n"));
    assert!(ok, "{out}");
    assert!(
        out.contains("gateway.toml: warning: [headers] qualify_user = false with 2 issuers"),
        "{out}"
    );
}
