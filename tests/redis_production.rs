//! Redis the way production runs it, with real servers started here on loopback: TLS with a
//! test CA (and a client certificate), an ACL user limited to the gateway's key prefix, a
//! Unix socket, and Sentinels (on TLS, with passwords of their own) watching a primary killed
//! mid-test, or demoted by a planned failover. Each time the real gateway
//! logs people in, keeps their sessions and counts a shared rate limit in that Redis.

mod common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::login::{login_config, provider_for};
use common::redis::{strings, wait_for, SentinelSet, Server, TestPki};
use common::*;

const SECRET: &str = "secret = \"shared-secret-of-both-gateways-0123456789\"";

/// Both stores in Redis (`[redis]` as given, or the stores' own `redis_url`s in `stores`),
/// browser login on `/`, and `/limited` allowed 4 requests a minute per client, refused (503)
/// when Redis cannot answer.
fn config(
    idp: &common::idp::OidcProvider,
    app: &TestServer,
    redis: &str,
    store_url: &str,
) -> String {
    let session = format!("store = \"redis\"\n{SECRET}\n{store_url}");
    let mut c = login_config(idp, app, &session);
    c.push_str(&format!(
        r#"
{redis}

[rate_limit_store]
kind = "redis"
on_error = "fail_closed"
timeout = "1s"
{store_url}

[[rate_limit]]
name = "per-ip"
key = "client_ip"
limit = "4/minute"

[[route]]
name = "limited"
path = "/limited"
upstream = "app"
auth = ["none"]
rate_limit = ["per-ip"]
"#
    ));
    c
}

struct Setup {
    idp: common::idp::OidcProvider,
    app: TestServer,
    port: u16,
}

async fn setup() -> Setup {
    let port = free_port();
    Setup {
        idp: provider_for(&[port], 600),
        app: TestServer::echo("app").await,
        port,
    }
}

impl Setup {
    fn gateway(&self, redis: &str, store_url: &str) -> Gateway {
        let config = config(&self.idp, &self.app, redis, store_url);
        Gateway::start_on(tempfile::tempdir().unwrap(), &config, self.port)
    }
}

fn json_cookie(cookie: &str) -> String {
    format!("Cookie: {cookie}\r\nAccept: application/json\r\n")
}

/// Logs `user` in, then uses the session once more; the session cookie.
async fn logs_in(gw: &Gateway, user: &str) -> String {
    let browser = Browser::new();
    let (page, visited) = browser.login(&gw.url("/app"), user).await;
    assert_eq!(page.status, 200, "{visited:?} {}\n{}", page.body, gw.log());
    let cookie = browser.cookie_header(&gw.url("/"));
    let again = gw.get("/app", &json_cookie(&cookie));
    assert_eq!(again.status, 200, "{}\n{}", again.body, gw.log());
    assert_eq!(again.echoed().header("x-auth-request-user"), Some(user));
    cookie
}

fn limited(gw: &Gateway, n: usize) -> Vec<u16> {
    (0..n).map(|_| gw.get("/limited", "").status).collect()
}

/// The gateway's keys in `server` (through `redis-cli` with `auth` options).
fn keys(server: &Server, auth: &[&str]) -> Vec<String> {
    let mut args = auth.to_vec();
    args.extend(["--scan", "--pattern", "gatehouse:*"]);
    server.cli(&args).lines().map(str::to_string).collect()
}

fn has_session_and_limit(keys: &[String]) -> bool {
    keys.iter().any(|k| k.starts_with("gatehouse:s:"))
        && keys.iter().any(|k| k.starts_with("gatehouse:rl:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_test_ca_carries_logins_sessions_and_limits() {
    let pki = TestPki::new();
    let s = setup().await;
    let server = pki.server("no", &[]);
    let redis = format!(
        "[redis]\nurl = \"rediss://127.0.0.1:{}/0\"\nca_file = \"{}\"",
        server.port,
        pki.path("ca.pem")
    );
    let gw = s.gateway(&redis, "");
    logs_in(&gw, "alice").await;
    assert_eq!(limited(&gw, 5), vec![200, 200, 200, 200, 429]);
    assert!(
        has_session_and_limit(&keys(&server, &[])),
        "{:?}",
        keys(&server, &[])
    );
    drop(gw);

    // A CA that did not sign the server's certificate: refused, and the log says why.
    let redis = format!(
        "[redis]\nurl = \"rediss://127.0.0.1:{}/0\"\nca_file = \"{}\"",
        server.port,
        pki.path("other-ca.pem")
    );
    let gw = s.gateway(&redis, "");
    assert_eq!(limited(&gw, 2), vec![503, 503]);
    assert_eq!(gw.admin("/readyz").status, 503);
    let log = gw.log();
    assert!(
        log.contains("the server's certificate was refused"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let pki = TestPki::new();
    let s = setup().await;
    let server = pki.server("yes", &[]);
    let base = format!(
        "[redis]\nurl = \"rediss://localhost:{}/0\"\nca_file = \"{}\"",
        server.port,
        pki.path("ca.pem")
    );
    // Without a client certificate the server ends the handshake.
    let gw = s.gateway(&base, "");
    assert_eq!(limited(&gw, 1), vec![503]);
    drop(gw);
    let redis = format!(
        "{base}\ncert_file = \"{}\"\nkey_file = \"{}\"",
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let gw = s.gateway(&redis, "");
    logs_in(&gw, "alice").await;
    assert_eq!(limited(&gw, 5), vec![200, 200, 200, 200, 429]);
    assert!(has_session_and_limit(&keys(&server, &[])));
}

/// The commands the gateway sends (sessions, login states, the refresh lock, rate limits),
/// and nothing else: what `docs/redis.md` tells operators to grant.
const ACL_COMMANDS: &str = "+ping +select +get +set +del +getdel +mget +pexpire +sadd +srem +sismember +smembers +zadd +zrem +zcard +zremrangebyscore +multi +exec +evalsha +eval +script|load +time";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_limited_to_the_gateways_prefix_is_enough() {
    let s = setup().await;
    let server = Server::plain(&[]);
    let admin = ["--no-auth-warning", "--user", "admin", "--pass", "admin-pw"];
    let setuser = |user: &str, pattern: &str| {
        let mut args = vec!["ACL", "SETUSER", user, "on"];
        let pass = format!(">{user}-pw");
        args.extend([
            pass.as_str(),
            "resetkeys",
            pattern,
            "resetchannels",
            "-@all",
        ]);
        args.extend(ACL_COMMANDS.split(' '));
        server.cli(&args)
    };
    assert_eq!(
        server
            .cli(&[
                "ACL",
                "SETUSER",
                "admin",
                "on",
                ">admin-pw",
                "~*",
                "&*",
                "+@all"
            ])
            .trim(),
        "OK"
    );
    assert_eq!(setuser("gatehouse", "~gatehouse:*").trim(), "OK");
    assert_eq!(setuser("outsider", "~other:*").trim(), "OK");
    // Nobody gets in without a user.
    let mut off = admin.to_vec();
    off.extend(["ACL", "SETUSER", "default", "off"]);
    assert_eq!(server.cli(&off).trim(), "OK");

    let url = |user: &str| {
        format!(
            "[redis]\nurl = \"redis://{user}:{user}-pw@127.0.0.1:{}/0\"",
            server.port
        )
    };
    let gw = s.gateway(&url("gatehouse"), "");
    logs_in(&gw, "alice").await;
    assert_eq!(limited(&gw, 5), vec![200, 200, 200, 200, 429]);
    let k = keys(&server, &admin);
    assert!(has_session_and_limit(&k), "{k:?}");
    assert!(k.iter().all(|k| k.starts_with("gatehouse:")), "{k:?}");
    let log = gw.log();
    assert!(!log.contains("NOPERM"), "{log}");
    // Sessions, login states and limits went through one connection.
    let mut list = admin.to_vec();
    list.extend(["CLIENT", "LIST"]);
    let clients = server.cli(&list);
    let ours = clients
        .lines()
        .filter(|l| l.contains(" user=gatehouse "))
        .count();
    assert_eq!(ours, 1, "{clients}");
    drop(gw);

    // A user without the prefix: refused, the client gets a 503, the log says NOPERM.
    let gw = s.gateway(&url("outsider"), "");
    assert_eq!(limited(&gw, 2), vec![503, 503]);
    // A browser sent to log in: its login state cannot be stored.
    let login = gw.get("/app", "Accept: text/html\r\n");
    assert_eq!(login.status, 503, "{}", login.body);
    let log = gw.log();
    assert!(log.contains("NOPERM"), "{log}");
    // A wrong password: the same, with the reason.
    drop(gw);
    let wrong = format!(
        "[redis]\nurl = \"redis://gatehouse:not-the-pw@127.0.0.1:{}/0\"",
        server.port
    );
    let gw = s.gateway(&wrong, "");
    assert_eq!(limited(&gw, 1), vec![503]);
    assert!(
        gw.log().contains("Password authentication failed"),
        "{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_in_both_url_forms() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock").display().to_string();
    let args = strings(&[
        "--port",
        "0",
        "--unixsocket",
        &socket,
        "--unixsocketperm",
        "700",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    let server = Server::spawn(&args, 0, &strings(&["-s", &socket]));
    // Sessions through `redis+unix://`, limits through `unix://` (the stores' own URLs).
    let config = config(&s.idp, &s.app, "", "")
        .replace(
            "store = \"redis\"\n",
            &format!("store = \"redis\"\nredis_url = \"redis+unix://{socket}\"\n"),
        )
        .replace(
            "kind = \"redis\"\n",
            &format!("kind = \"redis\"\nredis_url = \"unix://{socket}?db=0\"\n"),
        );
    let gw = Gateway::start_on(tempfile::tempdir().unwrap(), &config, s.port);
    logs_in(&gw, "alice").await;
    assert_eq!(limited(&gw, 5), vec![200, 200, 200, 200, 429]);
    assert!(has_session_and_limit(&keys(&server, &[])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_keeps_logins_sessions_and_limits() {
    let s = setup().await;
    let mut set = SentinelSet::start();
    let nodes: Vec<String> = set
        .sentinels
        .iter()
        .map(|n| format!("\"127.0.0.1:{}\"", n.port))
        .collect();
    // Sessions through the `[redis]` table, limits through the URL form.
    let redis = format!(
        "[redis]\nsentinels = [{}]\nmaster_name = \"mymaster\"",
        nodes.join(", ")
    );
    let config = config(&s.idp, &s.app, &redis, "").replace(
        "kind = \"redis\"\n",
        &format!("kind = \"redis\"\nredis_url = \"{}\"\n", set.url()),
    );
    let gw = Gateway::start_on(tempfile::tempdir().unwrap(), &config, s.port);
    let cookie = logs_in(&gw, "alice").await;
    assert_eq!(limited(&gw, 2), vec![200, 200]);
    assert!(has_session_and_limit(&keys(&set.primary, &[])));

    // Every write so far is on the replica (WAIT: one replica acknowledged them); what a
    // primary acknowledged but had not yet sent when it died would be lost.
    assert_eq!(set.primary.cli(&["WAIT", "1", "2000"]).trim(), "1");
    let (old, replica) = (set.primary.port, set.replica.port);
    let killed = Instant::now();
    set.primary.kill();

    // Sessions come back once the Sentinels promote the replica.
    let mut answers = Vec::new();
    let back = loop {
        let r = gw.get("/app", &json_cookie(&cookie));
        answers.push(r.status);
        if r.status == 200 {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no failover within 30 s: {answers:?}\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The replica was promoted (a Sentinel may learn of it a moment after the one that
    // answered the gateway).
    wait_for("the first Sentinel to name the replica", 10, || {
        set.master_port() == Some(replica)
    });
    assert_ne!(Some(old), set.master_port());
    eprintln!(
        "failover: the session answered again {:.1} s after the primary was killed ({} answers before: {:?})",
        back.as_secs_f64(),
        answers.len() - 1,
        answers[..answers.len() - 1]
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(back < Duration::from_secs(15), "{back:?}");
    // Nothing was lost: alice's session (above), and the two requests counted before.
    assert_eq!(limited(&gw, 3), vec![200, 200, 429]);
    // New logins and their sessions work on the new master.
    logs_in(&gw, "bob").await;
    assert!(has_session_and_limit(&keys(&set.replica, &[])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_failover_moves_the_gateway_to_the_new_master() {
    let s = setup().await;
    let set = SentinelSet::start();
    let gw = s.gateway(&format!("[redis]\nurl = \"{}\"", set.url()), "");
    let cookie = logs_in(&gw, "alice").await;
    assert_eq!(limited(&gw, 2), vec![200, 200]);

    // `SENTINEL FAILOVER`: the primary is demoted to a replica, alive, with the gateway's
    // connection still open to it; the next write there answers READONLY.
    assert_eq!(
        set.sentinels[0]
            .cli(&["SENTINEL", "FAILOVER", "mymaster"])
            .trim(),
        "OK"
    );
    wait_for("the old primary to be a replica", 20, || {
        set.primary.cli(&["ROLE"]).starts_with("slave")
    });
    wait_for("the replica to be the master", 20, || {
        set.replica.cli(&["ROLE"]).starts_with("master")
    });
    // The counted requests moved with the data; the gateway writes to the new master.
    assert_eq!(limited(&gw, 3), vec![200, 200, 429], "{}", gw.log());
    let again = gw.get("/app", &json_cookie(&cookie));
    assert_eq!(again.status, 200, "{}", again.body);
    logs_in(&gw, "bob").await;
    let k = keys(&set.replica, &[]);
    assert!(has_session_and_limit(&k), "{k:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_and_data_nodes_with_passwords_of_their_own() {
    let s = setup().await;
    let set = SentinelSet::with_passwords(Some(("data-pw", "sentinel-pw")));
    let nodes: Vec<String> = set
        .sentinels
        .iter()
        .map(|n| format!("\"127.0.0.1:{}\"", n.port))
        .collect();
    let redis = |sentinel_pw: &str| {
        format!(
            "[redis]\nsentinels = [{}]\nmaster_name = \"mymaster\"\npassword = \"data-pw\"\nsentinel_password = \"{sentinel_pw}\"",
            nodes.join(", ")
        )
    };
    let gw = s.gateway(&redis("sentinel-pw"), "");
    logs_in(&gw, "alice").await;
    assert_eq!(limited(&gw, 5), vec![200, 200, 200, 200, 429]);
    let auth = ["--no-auth-warning", "-a", "data-pw"];
    assert!(has_session_and_limit(&keys(&set.primary, &auth)));
    drop(gw);
    // The Sentinels refuse a wrong password: nothing is served without the store.
    let gw = s.gateway(&redis("wrong"), "");
    assert_eq!(limited(&gw, 1), vec![503]);
    let log = gw.log();
    assert!(
        log.contains("no Redis master \\\"mymaster\\\" through the Sentinels"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_and_data_nodes_over_tls() {
    let pki = TestPki::new();
    let s = setup().await;
    let mut set = SentinelSet::with(None, Some(&pki));
    let redis = format!(
        "[redis]\nurl = \"{}\"\nca_file = \"{}\"",
        set.url().replace("redis+sentinel", "rediss+sentinel"),
        pki.path("ca.pem")
    );
    let gw = s.gateway(&redis, "");
    let cookie = logs_in(&gw, "alice").await;
    assert_eq!(limited(&gw, 2), vec![200, 200]);
    assert_eq!(set.primary.cli(&["WAIT", "1", "2000"]).trim(), "1");
    set.primary.kill();
    let killed = Instant::now();
    while gw.get("/app", &json_cookie(&cookie)).status != 200 {
        assert!(killed.elapsed() < Duration::from_secs(30), "{}", gw.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("failover over TLS: {:.1} s", killed.elapsed().as_secs_f64());
    assert_eq!(limited(&gw, 3), vec![200, 200, 429]);
}
