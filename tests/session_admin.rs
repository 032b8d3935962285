//! The session admin API on the admin listener, and `gatehouse sessions`, against real
//! gateway processes, the real oidc-provider and a real Redis: a session made through one
//! instance is listed and ended through another, and the first refuses its cookie at once;
//! the memory store does the same on one instance; without the admin token nothing is
//! answered but 401 (nor ended), and bad `[admin]` settings are refused at their line.

mod common;

use std::process::Command;

use common::browser::Browser;
use common::login::{login_config, metric, provider_for};
use common::redis::Redis;
use common::*;
use sha2::{Digest, Sha256};

const SECRET: &str = "secret = \"shared-secret-of-both-gateways-0123456789\"";
const TOKEN: &str = "admin-token-0123456789abcdef0123456789abcdef";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

/// The login config with the admin token read from `admin.token` beside it.
fn with_token(config: &str) -> String {
    config.replace("[admin]\n", "[admin]\ntoken_file = \"admin.token\"\n")
}

/// A gateway whose folder holds the admin token file.
fn start(config: &str, port: u16) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    Gateway::start_on(dir, config, port)
}

/// One request to the admin listener, with `Authorization` when given.
fn admin(gw: &Gateway, method: &str, path: &str, authorization: Option<&str>) -> Response {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    raw_request(
        gw.admin_port,
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("admin answers")
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

/// The session id a browser holds for the gateway.
fn session_id(browser: &Browser, gw: &Gateway) -> String {
    let cookies = browser.cookie_header(&gw.url("/"));
    cookies
        .split("; ")
        .find_map(|c| c.strip_prefix("gatehouse="))
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"))
        .to_string()
}

/// What the upstream sees of a request with this session: 200, or 401 once it ended.
fn status_with(gw: &Gateway, id: &str) -> u16 {
    gw.get(
        "/app",
        &format!("Cookie: gatehouse={id}\r\nAccept: application/json\r\n"),
    )
    .status
}

async fn log_in(gw: &Gateway, user: &str, agent: &str) -> (Browser, String) {
    let browser = Browser::with_user_agent(Some(agent));
    let (page, visited) = browser.login(&gw.url("/app"), user).await;
    assert_eq!(page.status, 200, "{visited:?} {}\n{}", page.body, gw.log());
    let id = session_id(&browser, gw);
    (browser, id)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_on_one_instance_is_listed_and_ended_through_another() {
    let redis = Redis::start();
    let (port_a, port_b) = (free_port(), free_port());
    let idp = provider_for(&[port_a, port_b], 600);
    let app = TestServer::echo("app").await;
    let session = format!(
        "store = \"redis\"\nredis_url = \"{}\"\n{SECRET}",
        redis.url()
    );
    let config = with_token(&login_config(&idp, &app, &session));
    let a = start(&config, port_a);
    let b = start(&config, port_b);

    let started = now();
    let (_firefox, first) = log_in(&a, "alice", FIREFOX).await;
    let (_chrome, second) = log_in(&a, "alice", CHROME).await;
    let (_bob, bobs) = log_in(&b, "bob", FIREFOX).await;

    // Listed from B, by issuer and subject: hashes, never the ids, with where each came from.
    let path = format!(
        "/sessions?issuer={}&subject=alice",
        url::form_urlencoded::byte_serialize(idp.issuer.as_bytes()).collect::<String>()
    );
    let listed = admin(&b, "GET", &path, Some(&bearer()));
    assert_eq!(listed.status, 200, "{}", listed.body);
    for id in [&first, &second, &bobs] {
        assert!(
            !listed.body.contains(id.as_str()),
            "an id in {}",
            listed.body
        );
    }
    let body = json(&listed);
    assert_eq!(body["subject"], "alice");
    assert_eq!(body["issuer"], idp.issuer.as_str());
    let sessions = body["sessions"].as_array().expect("sessions").clone();
    assert_eq!(sessions.len(), 2, "{body}");
    let hash = |id: &str| hex::encode(Sha256::digest(id.as_bytes()));
    let find = |id: &str| {
        sessions
            .iter()
            .find(|s| s["id_hash"] == hash(id).as_str())
            .unwrap_or_else(|| panic!("{} not in {body}", hash(id)))
            .clone()
    };
    for (id, agent) in [(&first, FIREFOX), (&second, CHROME)] {
        let s = find(id);
        assert_eq!(s["idp"], "test");
        assert_eq!(s["subject"], "alice");
        assert_eq!(s["client_ip"], "127.0.0.1");
        assert_eq!(s["user_agent"], agent);
        let created = s["created_at"].as_u64().unwrap();
        assert!(
            (started.saturating_sub(5)..=now() + 5).contains(&created),
            "{s}"
        );
        assert!(s["last_seen"].as_u64().unwrap() >= created);
        assert!(s["expires_at"].as_u64().unwrap() > now());
    }
    // The only issuer may be left out.
    let short = json(&admin(
        &b,
        "GET",
        "/sessions?subject=alice",
        Some(&bearer()),
    ));
    assert_eq!(short["sessions"].as_array().map(Vec::len), Some(2));
    // Counted: all of them, or one person's.
    let all = json(&admin(&b, "GET", "/sessions/count", Some(&bearer())));
    assert_eq!(all["sessions"], 3, "{all}");
    let alices = json(&admin(
        &a,
        "GET",
        "/sessions/count?subject=alice",
        Some(&bearer()),
    ));
    assert_eq!(alices["sessions"], 2, "{alices}");

    // One session ended through B: A refuses its cookie at once, the other stays.
    assert_eq!(status_with(&a, &first), 200);
    let ended = admin(
        &b,
        "DELETE",
        &format!("/sessions/{}", hash(&first)),
        Some(&bearer()),
    );
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert_eq!(json(&ended)["ended"], 1);
    assert_eq!(
        status_with(&a, &first),
        401,
        "A still takes an ended session"
    );
    assert_eq!(status_with(&b, &first), 401);
    assert_eq!(status_with(&a, &second), 200);
    let again = admin(
        &b,
        "DELETE",
        &format!("/sessions/{}", hash(&first)),
        Some(&bearer()),
    );
    assert_eq!(again.status, 404, "{}", again.body);
    // The id itself names nothing: only its hash does.
    let by_id = admin(
        &b,
        "DELETE",
        &format!("/sessions/{second}"),
        Some(&bearer()),
    );
    assert_eq!(by_id.status, 404, "{}", by_id.body);
    assert_eq!(status_with(&a, &second), 200);

    // All of alice's sessions ended through A: B refuses them, bob's stays.
    let ended = admin(&a, "DELETE", "/sessions?subject=alice", Some(&bearer()));
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert_eq!(json(&ended)["ended"], 1);
    assert_eq!(status_with(&b, &second), 401);
    assert_eq!(status_with(&a, &second), 401);
    assert_eq!(status_with(&a, &bobs), 200);
    let left = json(&admin(
        &a,
        "GET",
        "/sessions?subject=alice",
        Some(&bearer()),
    ));
    assert_eq!(left["sessions"].as_array().map(Vec::len), Some(0));

    // Counted and audited where they were ended; the token is in no log.
    assert_eq!(
        metric(
            &b,
            "gatehouse_admin_session_revocations_total{scope=\"session\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &a,
            "gatehouse_admin_session_revocations_total{scope=\"user\"}"
        ),
        1.0
    );
    let (log_a, log_b) = (a.log(), b.log());
    assert!(
        log_b.contains("admin ended sessions") && log_b.contains(&hash(&first)),
        "{log_b}"
    );
    assert!(
        log_a.contains("admin ended sessions") && log_a.contains("\"subject\":\"alice\""),
        "{log_a}"
    );
    for log in [&log_a, &log_b] {
        assert!(!log.contains(TOKEN));
        assert!(!log.contains(&first) && !log.contains(&second));
    }
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_lists_and_ends_sessions_and_the_cli_drives_it() {
    let port = free_port();
    let idp = provider_for(&[port], 600);
    let app = TestServer::echo("app").await;
    let gw = start(&with_token(&login_config(&idp, &app, SECRET)), port);
    let (_one, first) = log_in(&gw, "alice", FIREFOX).await;
    let (_two, second) = log_in(&gw, "alice", CHROME).await;

    let listed = admin(&gw, "GET", "/sessions?subject=alice", Some(&bearer()));
    assert_eq!(listed.status, 200, "{}", listed.body);
    let body = json(&listed);
    assert_eq!(body["store"], "memory");
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{body}");
    assert!(!listed.body.contains(&first) && !listed.body.contains(&second));
    // Told apart by where they came from (both may have started in the same second).
    let by_agent = |agent: &str| {
        sessions
            .iter()
            .find(|s| s["user_agent"] == agent)
            .and_then(|s| s["id_hash"].as_str())
            .unwrap_or_else(|| panic!("no {agent} in {body}"))
            .to_string()
    };
    let (newest, oldest) = (by_agent(CHROME), by_agent(FIREFOX));

    // The CLI, against the running gateway.
    let token_file = gw.path().join("admin.token");
    let admin_url = format!("http://127.0.0.1:{}", gw.admin_port);
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("sessions")
            .args(args)
            .args(["--admin", &admin_url, "--token-file"])
            .arg(&token_file)
            .output()
            .expect("run gatehouse sessions");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = cli(&["list", "--subject", "alice"]);
    assert!(ok, "{err}");
    assert!(out.contains("2 session(s) of alice"), "{out}");
    assert!(out.contains(&newest) && out.contains(&oldest), "{out}");
    assert!(
        out.contains("ip=127.0.0.1") && out.contains("Firefox/128.0"),
        "{out}"
    );
    let (ok, out, err) = cli(&["list", "--subject", "alice", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["sessions"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let (ok, out, err) = cli(&["count"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "2");
    let (ok, out, err) = cli(&["revoke", "--id-hash", &oldest]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "ended 1 session(s)");
    assert_eq!(status_with(&gw, &first), 401, "ended by its hash");
    assert_eq!(status_with(&gw, &second), 200);
    let (ok, _, err) = cli(&["revoke", "--id-hash", &oldest]);
    assert!(!ok && err.contains("404 no_such_session"), "{err}");
    let (ok, _, err) = cli(&["revoke", "--all"]);
    assert!(
        !ok && err.contains("--subject"),
        "--all needs a subject: {err}"
    );
    let (ok, out, err) = cli(&[
        "revoke",
        "--all",
        "--subject",
        "alice",
        "--issuer",
        &idp.issuer,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "ended 1 session(s)");
    assert_eq!(status_with(&gw, &second), 401);
    let (ok, out, _) = cli(&["count", "--subject", "alice"]);
    assert!(ok);
    assert_eq!(out.trim(), "0");

    // A wrong token: the CLI says so and exits 1.
    std::fs::write(
        gw.path().join("wrong.token"),
        "not-the-admin-token-0123456789abcdef\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["sessions", "count", "--admin", &admin_url, "--token-file"])
        .arg(gw.path().join("wrong.token"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the token (401)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_nothing_is_answered_nor_ended() {
    let port = free_port();
    let idp = provider_for(&[port], 600);
    let app = TestServer::echo("app").await;
    let gw = start(&with_token(&login_config(&idp, &app, SECRET)), port);
    let (_browser, id) = log_in(&gw, "alice", FIREFOX).await;
    let hash = json(&admin(
        &gw,
        "GET",
        "/sessions?subject=alice",
        Some(&bearer()),
    ))["sessions"][0]["id_hash"]
        .as_str()
        .unwrap()
        .to_string();

    let wrong = [
        None,
        Some("Bearer ".to_string()),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
        Some(format!("Bearer {}", TOKEN.to_ascii_uppercase())),
    ];
    let asked = [
        ("GET", "/sessions?subject=alice".to_string()),
        ("GET", "/sessions/count".to_string()),
        ("DELETE", format!("/sessions/{hash}")),
        ("DELETE", "/sessions?subject=alice".to_string()),
        ("GET", "/config".to_string()),
        ("GET", "/no-such-path".to_string()),
        ("POST", "/sessions".to_string()),
    ];
    let mut first: Option<(String, Option<String>)> = None;
    for authorization in &wrong {
        for (method, path) in &asked {
            let r = admin(&gw, method, path, authorization.as_deref());
            assert_eq!(
                r.status, 401,
                "{method} {path} with {authorization:?}: {}",
                r.body
            );
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer realm=\"gatehouse-admin\"")
            );
            // The same answer whatever was asked: nothing tells what exists.
            let seen = (
                r.body.clone(),
                r.header("content-length").map(str::to_string),
            );
            match &first {
                None => first = Some(seen),
                Some(f) => assert_eq!(*f, seen, "{method} {path}"),
            }
            assert!(!r.body.contains("alice") && !r.body.contains(&hash));
        }
    }
    // Nothing was ended: the session still reaches the upstream.
    assert_eq!(status_with(&gw, &id), 200);
    assert_eq!(
        metric(&gw, "gatehouse_admin_unauthorized_total"),
        (wrong.len() * asked.len()) as f64
    );
    // The probes and the scrape need no token; the token works in any case of `Bearer`.
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(admin(&gw, "GET", open, None).status, 200, "{open}");
    }
    let r = admin(&gw, "GET", "/config", Some(&format!("bearer {TOKEN}")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !r.body.contains(TOKEN),
        "the token is redacted from /config"
    );
    assert!(r.body.contains("\"token\": \"<redacted>\""), "{}", r.body);
    assert!(!gw.log().contains(TOKEN));
    // Bad requests with the token get plain answers.
    assert_eq!(admin(&gw, "GET", "/sessions", Some(&bearer())).status, 400);
    assert_eq!(
        admin(&gw, "DELETE", "/sessions/not-a-hash", Some(&bearer())).status,
        400
    );
    assert_eq!(admin(&gw, "PUT", "/sessions", Some(&bearer())).status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_session_api_is_off_and_open_is_configurable() {
    let port = free_port();
    let idp = provider_for(&[port], 600);
    let app = TestServer::echo("app").await;
    let plain = login_config(&idp, &app, SECRET);
    let gw = start(&plain, port);
    for auth in [None, Some(bearer())] {
        let r = admin(&gw, "GET", "/sessions?subject=alice", auth.as_deref());
        assert_eq!(r.status, 404, "{}", r.body);
        assert_eq!(
            admin(&gw, "DELETE", "/sessions?subject=alice", auth.as_deref()).status,
            404
        );
    }
    // As before the API: the rest of the listener answers without a token.
    assert_eq!(admin(&gw, "GET", "/config", None).status, 200);
    drop(gw);

    // Only /healthz open: the scrape needs the token too.
    let port = free_port();
    let config = with_token(&login_config(&idp, &app, SECRET))
        .replace("[admin]\n", "[admin]\nopen = [\"/healthz\"]\n");
    let gw = start(&config, port);
    assert_eq!(admin(&gw, "GET", "/healthz", None).status, 200);
    assert_eq!(admin(&gw, "GET", "/metrics", None).status, 401);
    assert_eq!(admin(&gw, "GET", "/readyz", None).status, 401);
    assert_eq!(admin(&gw, "GET", "/metrics", Some(&bearer())).status, 200);
}

#[test]
fn bad_admin_settings_are_refused_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("short.token"), "too-short\n").unwrap();
    std::fs::write(dir.path().join("good.token"), format!("{TOKEN}\n")).unwrap();
    let check = |admin: &str| {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[admin]\n{admin}\n\n[upstream.app]\nservers = [\"127.0.0.1:9\"]\n\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\nauth = [\"none\"]\n"
        );
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).replace(&format!("{}/", dir.path().display()), ""),
        )
    };
    for (admin, expected) in [
        (
            "listen = \"127.0.0.1:9090\"\ntoken_file = \"missing.token\"",
            "gateway.toml:6:14: cannot read token_file missing.token:",
        ),
        (
            "token_file = \"short.token\"",
            "gateway.toml:5:14: admin.token must be at least 32 characters",
        ),
        (
            "token = \"inline-token-0123456789abcdef0123456789\"\ntoken_file = \"good.token\"",
            "gateway.toml:6:14: set token or token_file, not both",
        ),
        (
            "token_file = \"good.token\"\nopen = [\"/healthz\", \"/sessions\"]",
            "gateway.toml:6:21: admin.open may list /healthz, /readyz, /metrics, /config, not \"/sessions\"",
        ),
    ] {
        let (ok, err) = check(admin);
        assert!(!ok, "{admin}");
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
        assert!(!err.contains("too-short"), "a secret in an error: {err}");
    }
    let (ok, err) = check("token_file = \"good.token\"\nopen = [\"/healthz\", \"/config\"]");
    assert!(ok, "{err}");
}
