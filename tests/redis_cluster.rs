//! A Redis Cluster of three primaries, started and created here on loopback ports: two real
//! gateways on it (one given a single seed node in `[redis] cluster`, the other the
//! `redis+cluster://` URL) share logins, sessions spread over all three primaries, one rate
//! limit and the session admin API; then the slots of a live session and of the limit are
//! moved to another primary while both gateways run (`ASK` while the slot migrates, `MOVED`
//! after), and both keep working. They log in as an ACL user limited to `gatehouse:` keys.
//! A stopped primary costs only its own slots, each call no more than the store's timeout.
//! A bad cluster form is refused at its line.

mod common;

use std::process::Command;

use common::browser::Browser;
use common::login::{login_config, provider_for};
use common::redis::{wait_for, Server};
use common::*;
use sha2::{Digest, Sha256};

const SECRET: &str = "secret = \"shared-secret-of-both-gateways-0123456789\"";
/// What docs/redis.md grants the gateway's ACL user on a cluster.
const ACL_COMMANDS: &str = "+ping +select +get +set +del +getdel +mget +pexpire +sadd +srem +sismember +smembers +zadd +zrem +zcard +zremrangebyscore +multi +exec +evalsha +eval +script|load +time +cluster|slots +asking";
const TOKEN: &str = "admin-token-0123456789abcdef0123456789abcdef";

/// Three cluster-enabled primaries holding all 16384 slots between them.
struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    fn start() -> Cluster {
        let nodes: Vec<Server> = (0..3)
            .map(|_| {
                let bus = free_port().to_string();
                Server::plain(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes };
        wait_for("cluster_state:ok on every node", 30, || {
            cluster
                .nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
        // The gateway's own ACL user on every node (users are per node), with the commands
        // docs/redis.md lists for a cluster and nothing outside `gatehouse:`.
        for n in &cluster.nodes {
            let mut acl = vec![
                "ACL",
                "SETUSER",
                "gatehouse",
                "on",
                ">pw-cluster",
                "resetkeys",
            ];
            acl.extend(["~gatehouse:*", "resetchannels", "-@all"]);
            acl.extend(ACL_COMMANDS.split(' '));
            assert_eq!(n.cli(&acl).trim(), "OK");
        }
        cluster
    }

    fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    fn node(&self, port: u16) -> &Server {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("a node of the cluster")
    }

    fn id(&self, port: u16) -> String {
        self.node(port).cli(&["CLUSTER", "MYID"]).trim().to_string()
    }

    fn keyslot(&self, key: &str) -> u16 {
        let out = self.nodes[0].cli(&["CLUSTER", "KEYSLOT", key]);
        out.trim().parse().unwrap_or_else(|_| panic!("{out}"))
    }

    /// The port of the primary that serves `slot`, as that primary itself says.
    fn owner(&self, slot: u16) -> u16 {
        for n in &self.nodes {
            let nodes = n.cli(&["CLUSTER", "NODES"]);
            let Some(me) = nodes.lines().find(|l| l.contains("myself")) else {
                continue;
            };
            let serves = me.split(' ').skip(8).any(|range| {
                let range = range.split("->-").next().unwrap_or(range);
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
            });
            if serves {
                return n.port;
            }
        }
        panic!("no node serves slot {slot}");
    }

    /// The gateway's keys held by one node (SCAN on a cluster node sees its own slots only).
    fn keys_on(&self, port: u16, pattern: &str) -> Vec<String> {
        self.node(port)
            .cli(&["--scan", "--pattern", pattern])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Moves `slot` to the primary on `to` as `redis-cli --cluster reshard` does it, one step
    /// at a time: IMPORTING / MIGRATING, the keys MIGRATEd, then `during` runs (the source
    /// now answers ASK for the keys), then SETSLOT NODE on every node (MOVED from then on).
    fn move_slot(&self, slot: u16, to: u16, during: impl FnOnce()) {
        let from = self.owner(slot);
        assert_ne!(from, to);
        let (from_id, to_id, slot_text) = (self.id(from), self.id(to), slot.to_string());
        let ok = |out: String| assert!(out.trim() == "OK", "{out}");
        ok(self
            .node(to)
            .cli(&["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id]));
        ok(self
            .node(from)
            .cli(&["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id]));
        let keys = self
            .node(from)
            .cli(&["CLUSTER", "GETKEYSINSLOT", &slot_text, "1000"]);
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        assert!(!keys.is_empty(), "slot {slot} holds no key");
        let to_port = to.to_string();
        let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
        migrate.extend(&keys);
        ok(self.node(from).cli(&migrate));
        during();
        for port in [to, from] {
            ok(self
                .node(port)
                .cli(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]));
        }
        for n in self.nodes.iter().filter(|n| n.port != to && n.port != from) {
            ok(n.cli(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]));
        }
        assert_eq!(self.owner(slot), to);
    }
}

/// Both stores on the cluster, `[redis]` as given (or the stores' own `redis_url`s in
/// `store_url`), browser login on `/`, the admin API behind a token file, and `/limited`
/// allowed 4 requests a minute per client, refused (503) when Redis cannot answer.
fn config(
    idp: &common::idp::OidcProvider,
    app: &TestServer,
    redis: &str,
    store_url: &str,
) -> String {
    let session = format!("store = \"redis\"\n{SECRET}\n{store_url}");
    let mut c = login_config(idp, app, &session)
        .replace("[admin]\n", "[admin]\ntoken_file = \"admin.token\"\n");
    c.push_str(&format!(
        r#"
{redis}

[rate_limit_store]
kind = "redis"
on_error = "fail_closed"
timeout = "2s"
{store_url}

# Two dozen logins from one address in a few seconds.
[reserved_limit]
limit = "1000/minute"

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

fn start(config: &str, port: u16) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    Gateway::start_on(dir, config, port)
}

fn admin(gw: &Gateway, method: &str, path: &str) -> Response {
    raw_request(
        gw.admin_port,
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("admin answers")
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

/// Logs `user` in through the real provider; the session id.
async fn log_in(url: String, user: String) -> String {
    let browser = Browser::new();
    let (page, visited) = browser.login(&url, &user).await;
    assert_eq!(page.status, 200, "{user}: {visited:?} {}", page.body);
    let cookies = browser.cookie_header(&url);
    cookies
        .split("; ")
        .find_map(|c| c.strip_prefix("gatehouse="))
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"))
        .to_string()
}

/// The user the upstream was told of for a request with this session, or the status.
fn user_with(gw: &Gateway, id: &str) -> Result<String, u16> {
    let r = gw.get(
        "/app",
        &format!("Cookie: gatehouse={id}\r\nAccept: application/json\r\n"),
    );
    match r.status {
        200 => Ok(r
            .echoed()
            .header("x-auth-request-user")
            .unwrap_or_default()
            .to_string()),
        s => Err(s),
    }
}

fn session_key(id: &str) -> String {
    format!("gatehouse:s:{}", hex::encode(Sha256::digest(id.as_bytes())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_sessions_limits_and_admin_on_a_cluster_through_a_resharding() {
    let cluster = Cluster::start();
    let seeds = cluster.seeds();
    let (port_a, port_b) = (free_port(), free_port());
    let idp = provider_for(&[port_a, port_b], 600);
    let app = TestServer::echo("app").await;
    // A finds the cluster through one seed; B is given them all as a URL.
    let table = format!(
        "[redis]\ncluster = [\"{}\"]\nusername = \"gatehouse\"\npassword = \"pw-cluster\"",
        seeds[1]
    );
    let a = start(&config(&idp, &app, &table, ""), port_a);
    let url = format!(
        "redis_url = \"redis+cluster://gatehouse:pw-cluster@{}/\"",
        seeds.join(",")
    );
    let b = start(&config(&idp, &app, "", &url), port_b);

    // A login on A, its session used on B.
    let alice = log_in(a.url("/app"), "alice".into()).await;
    assert_eq!(
        user_with(&b, &alice),
        Ok("alice".to_string()),
        "{}",
        b.log()
    );

    // Many sessions, logged in four at a time through both, spread over all three primaries.
    let started = std::time::Instant::now();
    let mut ids = vec![alice.clone()];
    for batch in 0..6 {
        let logins: Vec<_> = (0..4)
            .map(|i| {
                let gw = if i % 2 == 0 { &a } else { &b };
                let user = format!("user{}", batch * 4 + i);
                tokio::spawn(log_in(gw.url("/app"), user))
            })
            .collect();
        for login in logins {
            ids.push(login.await.expect("login task"));
        }
    }
    let login_time = started.elapsed();
    let mut on_node = Vec::new();
    for port in cluster.nodes.iter().map(|n| n.port) {
        on_node.push(cluster.keys_on(port, "gatehouse:s:*").len());
    }
    assert_eq!(on_node.iter().sum::<usize>(), ids.len(), "{on_node:?}");
    assert!(
        on_node.iter().all(|n| *n > 0),
        "sessions per primary: {on_node:?}"
    );
    for (i, id) in ids.iter().enumerate().skip(1) {
        let gw = if i % 2 == 0 { &b } else { &a };
        assert_eq!(user_with(gw, id), Ok(format!("user{}", i - 1)));
    }
    let count = json(&admin(&b, "GET", "/sessions/count"));
    assert_eq!(count["sessions"], ids.len(), "{count}");
    eprintln!(
        "{} logins in {login_time:?}; sessions per primary {on_node:?}",
        ids.len() - 1
    );

    // One limit, counted by both instances: its key lives in one slot.
    assert_eq!(a.get("/limited", "").status, 200);
    assert_eq!(b.get("/limited", "").status, 200);
    assert_eq!(a.get("/limited", "").status, 200);
    // The limit's key as src/ratelimit names it: (limit, client) hashed.
    let limit_key = format!(
        "gatehouse:rl:{}",
        hex::encode(&Sha256::digest(b"per-ip\x00127.0.0.1")[..16])
    );
    let on: Vec<u16> = cluster
        .nodes
        .iter()
        .map(|n| n.port)
        .filter(|p| cluster.keys_on(*p, "gatehouse:rl:*").contains(&limit_key))
        .collect();
    assert_eq!(on.len(), 1, "{limit_key} on {on:?}");

    // The slots of alice's session and of the limit move to another primary while both
    // gateways run: during the move (ASK) and after it (MOVED) alice's session still works.
    let session_slot = cluster.keyslot(&session_key(&alice));
    let other = |slot: u16| {
        let owner = cluster.owner(slot);
        cluster
            .nodes
            .iter()
            .map(|n| n.port)
            .find(|p| *p != owner)
            .unwrap()
    };
    let (key, was_on) = (session_key(&alice), cluster.owner(session_slot));
    cluster.move_slot(session_slot, other(session_slot), || {
        let asked = cluster.node(was_on).cli(&["GET", &key]);
        assert!(asked.contains("ASK"), "{asked}");
        assert_eq!(
            user_with(&a, &alice),
            Ok("alice".to_string()),
            "{}",
            a.log()
        );
    });
    let moved = cluster.node(was_on).cli(&["GET", &key]);
    assert!(moved.contains("MOVED"), "{moved}");
    assert_eq!(
        user_with(&b, &alice),
        Ok("alice".to_string()),
        "{}",
        b.log()
    );
    assert_eq!(
        user_with(&a, &alice),
        Ok("alice".to_string()),
        "{}",
        a.log()
    );
    let limit_slot = cluster.keyslot(&limit_key);
    cluster.move_slot(limit_slot, other(limit_slot), || {});
    // The count moved with its key: the fourth request passes, the fifth does not.
    assert_eq!(b.get("/limited", "").status, 200, "{}", b.log());
    assert_eq!(a.get("/limited", "").status, 429, "{}", a.log());
    assert_eq!(b.get("/limited", "").status, 429);

    // The admin API on the cluster: alice listed through B, all her sessions ended through
    // A, and B refuses her cookie at once; the others stay.
    let path = format!(
        "/sessions?issuer={}&subject=alice",
        url::form_urlencoded::byte_serialize(idp.issuer.as_bytes()).collect::<String>()
    );
    let listed = json(&admin(&b, "GET", &path));
    let sessions = listed["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "{listed}");
    assert_eq!(
        sessions[0]["id_hash"],
        hex::encode(Sha256::digest(alice.as_bytes())).as_str()
    );
    let ended = admin(&a, "DELETE", "/sessions?subject=alice");
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert_eq!(json(&ended)["ended"], 1, "{}", ended.body);
    assert_eq!(user_with(&b, &alice), Err(401));
    assert_eq!(user_with(&a, &ids[1]), Ok("user0".to_string()));
    let count = json(&admin(&a, "GET", "/sessions/count"));
    assert_eq!(count["sessions"], ids.len() - 1, "{count}");
    // One session ended by its hash, wherever its slot is.
    let hash = hex::encode(Sha256::digest(ids[2].as_bytes()));
    let one = admin(&b, "DELETE", &format!("/sessions/{hash}"));
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(user_with(&a, &ids[2]), Err(401));

    for log in [a.log(), b.log()] {
        // No call failed, through the resharding included (a cross-slot pipeline, a denied
        // command or a redirection not followed would be logged here).
        for error in ["store unavailable", "store error", "CROSSSLOT", "NOPERM"] {
            assert!(!log.contains(error), "{error}: {log}");
        }
        assert!(!log.contains("pw-cluster"), "{log}");
    }
}

#[test]
fn a_bad_cluster_form_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    for (redis, says) in [
        (
            "[redis]\ncluster = [\"127.0.0.1:7000\"]\ndb = 1\n",
            "gateway.toml:14:6: a Redis Cluster has database 0 only",
        ),
        (
            "[redis]\nurl = \"redis+cluster://127.0.0.1:7000,127.0.0.1:7001/2\"\n",
            "gateway.toml:13:7: invalid url \"redis+cluster://127.0.0.1:7000,127.0.0.1:7001/2\": a Redis Cluster has database 0 only",
        ),
        (
            "[redis]\nurl = \"rediss+cluster://127.0.0.1:7000/\"\n",
            "gateway.toml:13:7: invalid url \"rediss+cluster://127.0.0.1:7000/\": TLS to a Redis Cluster is not supported",
        ),
        (
            "[redis]\ncluster = [\"127.0.0.1:7000\"]\ntls = true\n",
            "gateway.toml:14:7: TLS to a Redis Cluster is not supported",
        ),
        (
            "[redis]\ncluster = [\"127.0.0.1:70000\"]\n",
            "gateway.toml:13:12: cluster node address \"127.0.0.1:70000\"",
        ),
        (
            "[redis]\nurl = \"redis://127.0.0.1\"\ncluster = [\"127.0.0.1:7000\"]\n",
            "gateway.toml:14:11: [redis] takes one of url, sentinels or cluster",
        ),
    ] {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:18080\"]\n\n[upstream.app]\nservers = [\"127.0.0.1:18081\"]\n\n[rate_limit_store]\nkind = \"redis\"\n\n\n\n{redis}"
        );
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{redis}: {said}");
        assert!(said.contains(says), "{redis}: {said}");
    }
}

/// Sends `signal` (STOP or CONT) to one node, by its own PID.
fn signal(node: &Server, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(node.pid().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_primary_costs_only_its_own_slots_and_each_call_its_timeout() {
    let cluster = Cluster::start();
    let port = free_port();
    let idp = provider_for(&[port], 600);
    let app = TestServer::echo("app").await;
    let table = format!(
        "[redis]\ncluster = [\"{}\"]\nusername = \"gatehouse\"\npassword = \"pw-cluster\"",
        cluster.seeds().join("\", \"")
    );
    // The session store's default timeout: 500 ms per call, connect included.
    let gw = start(&config(&idp, &app, &table, ""), port);

    // One session on a primary that does not hold `gatehouse:active` (written on use), and
    // one on another primary.
    let active = cluster.owner(cluster.keyslot("gatehouse:active"));
    let (mut silent, mut other) = (None, None);
    for i in 0..30 {
        let id = log_in(gw.url("/app"), format!("user{i}")).await;
        let on = cluster.owner(cluster.keyslot(&session_key(&id)));
        match silent {
            None if on != active => silent = Some((id, on)),
            Some((_, s)) if on != s && other.is_none() => other = Some(id),
            _ => {}
        }
        if silent.is_some() && other.is_some() {
            break;
        }
    }
    let ((silent, node), other) = (silent.expect("a session"), other.expect("another"));

    signal(cluster.node(node), "STOP");
    let mut slowest = std::time::Duration::ZERO;
    for _ in 0..3 {
        let asked = std::time::Instant::now();
        assert_eq!(user_with(&gw, &silent), Err(503));
        slowest = slowest.max(asked.elapsed());
        assert!(user_with(&gw, &other).is_ok(), "{}", gw.log());
    }
    assert!(
        slowest < std::time::Duration::from_millis(1500),
        "{slowest:?}"
    );
    signal(cluster.node(node), "CONT");
    wait_for("the resumed primary's session", 10, || {
        user_with(&gw, &silent).is_ok()
    });
    eprintln!("a session on a stopped primary: 503 after at most {slowest:?}");
}
