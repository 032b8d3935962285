//! Rate limits end to end: the real gateway in front of an echo upstream, limits in memory
//! and in a real Redis (started here on a free port, killed and restarted mid-test).

mod common;

use common::redis::Redis;
use common::*;

fn config(
    server_extra: &str,
    limits: &str,
    store: &str,
    route_limits: &str,
    app: &TestServer,
) -> String {
    format!(
        r#"{}{}
{limits}
{store}

[[api_key]]
name = "tenant-a"
hash = "{hash}"
subject = "svc-a"

[[route]]
name = "limited"
path = "/"
upstream = "app"
auth = ["none"]
rate_limit = [{route_limits}]

[[route]]
name = "keys"
path = "/keys"
upstream = "app"
auth = ["api_key"]
"#,
        base_config(server_extra),
        upstream_block("app", &[app.addr], ""),
        hash = gatehouse::authn::api_key::hash_key("key-a"),
    )
}

fn statuses(gw: &Gateway, n: usize, headers: &str) -> Vec<u16> {
    (0..n).map(|_| gw.get("/x", headers).status).collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_limit_lets_exactly_the_limit_through() {
    let app = EchoServer::echo("app").await;
    let limits = "[[rate_limit]]\nname = \"per-ip\"\nkey = \"client_ip\"\nlimit = \"5/minute\"\n\n[[rate_limit]]\nname = \"fast\"\nkey = \"header:X-Tenant\"\nlimit = \"2/second\"";
    let gw = Gateway::start(&config("", limits, "", "\"per-ip\"", &app));
    let got = statuses(&gw, 12, "");
    assert_eq!(count(&got, 200), 5, "{got:?}");
    assert_eq!(count(&got, 429), 7, "{got:?}");
    let r = gw.get("/x", "");
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=12).contains(&retry),
        "one cell comes back every 12 s: {retry}"
    );
    assert_eq!(r.header("ratelimit-policy"), Some("\"per-ip\";q=5;w=60"));
    assert!(
        r.header("ratelimit")
            .unwrap()
            .starts_with("\"per-ip\";r=0;t="),
        "{r:?}"
    );
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["error"], "too_many_requests");
    assert_eq!(
        app.hit_count(),
        5,
        "refused requests never reach the upstream"
    );
    let metrics = gw.admin("/metrics").body;
    assert!(
        metrics.contains("gatehouse_rate_limited_total{limit=\"per-ip\",route=\"limited\"} 8"),
        "{metrics}"
    );
    assert!(metrics.contains("decision=\"rate_limited\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refill_after_the_interval_and_several_limits_at_once() {
    let app = EchoServer::echo("app").await;
    let limits = "[[rate_limit]]\nname = \"per-tenant\"\nkey = \"header:X-Tenant\"\nlimit = \"2/second\"\n\n[[rate_limit]]\nname = \"whole-route\"\nkey = \"route\"\nlimit = \"5/minute\"";
    let store = "[rate_limit_store]\nresponse_headers = true";
    let gw = Gateway::start(&config(
        "",
        limits,
        store,
        "\"per-tenant\", \"whole-route\"",
        &app,
    ));
    let a = statuses(&gw, 3, "X-Tenant: a\r\n");
    assert_eq!(a, vec![200, 200, 429], "2/second per tenant");
    let ok = gw.get("/x", "X-Tenant: b\r\n");
    assert_eq!(ok.status, 200);
    let policy = ok.header("ratelimit-policy").unwrap();
    assert!(
        policy.contains("\"per-tenant\";q=2;w=1") && policy.contains("\"whole-route\";q=5;w=60"),
        "{policy}"
    );
    // The refused request stopped at the first limit: the route-wide one counted 3, not 4.
    assert!(
        ok.header("ratelimit")
            .unwrap()
            .contains("\"whole-route\";r=2;"),
        "{ok:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Tenant a has refilled...
    assert_eq!(statuses(&gw, 1, "X-Tenant: a\r\n"), vec![200]);
    // ...and the route-wide limit (5/minute) has one request left for anybody.
    let others: Vec<u16> = ["c", "d", "e"]
        .iter()
        .map(|t| gw.get("/x", &format!("X-Tenant: {t}\r\n")).status)
        .collect();
    assert_eq!(others, vec![200, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_comes_from_the_socket_unless_a_trusted_proxy_says_otherwise() {
    let app = EchoServer::echo("app").await;
    let limits = "[[rate_limit]]\nname = \"per-ip\"\nkey = \"client_ip\"\nlimit = \"2/minute\"";
    let untrusted = Gateway::start(&config("", limits, "", "\"per-ip\"", &app));
    // Forged X-Forwarded-For from an untrusted peer changes nothing: all are 127.0.0.1.
    let forged: Vec<u16> = (1..=4)
        .map(|i| {
            untrusted
                .get("/x", &format!("X-Forwarded-For: 198.51.100.{i}\r\n"))
                .status
        })
        .collect();
    assert_eq!(forged, vec![200, 200, 429, 429]);

    let trusted = Gateway::start(&config(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        limits,
        "",
        "\"per-ip\"",
        &app,
    ));
    for client in ["198.51.100.1", "198.51.100.2"] {
        let got: Vec<u16> = (0..3)
            .map(|_| {
                trusted
                    .get("/x", &format!("X-Forwarded-For: 6.6.6.6, {client}\r\n"))
                    .status
            })
            .collect();
        assert_eq!(got, vec![200, 200, 429], "{client} has a budget of its own");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_locks_the_client_out() {
    let app = EchoServer::echo("app").await;
    let lockout = "[auth_failure_limit]\nmax_failures = 3\nwindow = \"1m\"\ncooldown = \"1m\"";
    let gw = Gateway::start(&config(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        "",
        lockout,
        "",
        &app,
    ));
    let from = |ip: &str, key: &str| {
        gw.get(
            "/keys/x",
            &format!("X-Forwarded-For: {ip}\r\nX-Api-Key: {key}\r\n"),
        )
    };
    assert_eq!(from("203.0.113.5", "key-a").status, 200);
    for guess in ["key-b", "key-c", "key-d", "key-e"] {
        assert_eq!(from("203.0.113.5", guess).status, 401);
    }
    // Locked out now: even the right key gets 429, with no hint about the guesses.
    let r = from("203.0.113.5", "key-a");
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() > 30);
    assert!(!r.body.contains("key"), "{}", r.body);
    // Another client is not affected.
    assert_eq!(from("203.0.113.6", "key-a").status, 200);
    let metrics = gw.admin("/metrics").body;
    assert!(
        metrics.contains("gatehouse_auth_lockouts_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_endpoints_are_limited_per_client() {
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&config(
        "",
        "",
        "[reserved_limit]\nlimit = \"3/minute\"",
        "",
        &app,
    ));
    let got: Vec<u16> = (0..5)
        .map(|_| gw.get("/_gatehouse/login", "").status)
        .collect();
    assert_eq!(got, vec![404, 404, 404, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_budget_in_redis() {
    let redis = Redis::start();
    let app = EchoServer::echo("app").await;
    let limits = "[[rate_limit]]\nname = \"per-ip\"\nkey = \"client_ip\"\nlimit = \"6/minute\"";
    let store = format!(
        "[rate_limit_store]\nkind = \"redis\"\nredis_url = \"{}\"",
        redis.url()
    );
    let a = Gateway::start(&config("", limits, &store, "\"per-ip\"", &app));
    let b = Gateway::start(&config("", limits, &store, "\"per-ip\"", &app));
    let mut got = statuses(&a, 3, "");
    got.extend(statuses(&b, 3, ""));
    assert_eq!(got, vec![200; 6]);
    assert_eq!(a.get("/x", "").status, 429);
    assert_eq!(b.get("/x", "").status, 429);
    assert_eq!(app.hit_count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_open_or_closed_as_configured_and_recovers() {
    let mut redis = Redis::start();
    let app = EchoServer::echo("app").await;
    let limits = "[[rate_limit]]\nname = \"per-ip\"\nkey = \"client_ip\"\nlimit = \"3/minute\"";
    let store = |on_error: &str| {
        format!(
            "[rate_limit_store]\nkind = \"redis\"\nredis_url = \"{}\"\ntimeout = \"200ms\"\non_error = \"{on_error}\"",
            redis.url()
        )
    };
    let open = Gateway::start(&config("", limits, &store("fail_open"), "\"per-ip\"", &app));
    let closed = Gateway::start(&config(
        "",
        limits,
        &store("fail_closed"),
        "\"per-ip\"",
        &app,
    ));
    assert_eq!(open.get("/x", "").status, 200);
    assert_eq!(closed.get("/x", "").status, 200);

    redis.stop();
    let open_got = statuses(&open, 5, "");
    assert_eq!(
        open_got,
        vec![200; 5],
        "fail_open: the limit is not enforced while Redis is down"
    );
    let r = closed.get("/x", "");
    assert_eq!(r.status, 503, "fail_closed: {r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    let metrics = open.admin("/metrics").body;
    assert!(
        metrics.contains("gatehouse_rate_limit_store_errors_total{store=\"redis\"}"),
        "{metrics}"
    );
    // Readiness: the fail_closed instance cannot serve without Redis; the fail_open one can.
    let ready = closed.admin("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    let ready = open.admin("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(
        ready.body.contains("\"reachable\": false"),
        "{}",
        ready.body
    );

    redis.restart();
    // Back: the budget is counted again (a fresh Redis: three requests, then 429).
    let mut recovered = Vec::new();
    for _ in 0..40 {
        let s = closed.get("/x", "").status;
        recovered.push(s);
        if s == 429 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        recovered.last(),
        Some(&429),
        "limits apply again after Redis returns: {recovered:?}"
    );
    assert!(recovered.contains(&200), "{recovered:?}");
    // Both gateways count in the same Redis under the same limit and client: the budget the
    // closed one used up applies to the open one as well, now that Redis is back.
    assert_eq!(
        open.get("/x", "").status,
        429,
        "the shared budget is enforced on the open gateway again"
    );
    assert_eq!(closed.admin("/readyz").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_by_api_key_and_subject_follow_the_identity() {
    let app = EchoServer::echo("app").await;
    let config = format!(
        r#"{}{}
[[rate_limit]]
name = "per-key"
key = "api_key"
limit = "2/minute"

[[rate_limit]]
name = "per-subject"
key = "subject"
limit = "3/minute"

[[api_key]]
name = "tenant-a"
hash = "{a}"
subject = "svc-shared"

[[api_key]]
name = "tenant-b"
hash = "{b}"
subject = "svc-shared"

[[route]]
name = "keys"
path = "/"
upstream = "app"
auth = ["api_key"]
rate_limit = ["per-key", "per-subject"]
"#,
        base_config(""),
        upstream_block("app", &[app.addr], ""),
        a = gatehouse::authn::api_key::hash_key("key-a"),
        b = gatehouse::authn::api_key::hash_key("key-b"),
    );
    let gw = Gateway::start(&config);
    let a = statuses(&gw, 3, "X-Api-Key: key-a\r\n");
    assert_eq!(a, vec![200, 200, 429], "2 per key");
    // key b has a budget of its own, but both keys are the same subject (3 per subject).
    let b = statuses(&gw, 2, "X-Api-Key: key-b\r\n");
    assert_eq!(b, vec![200, 429], "the subject's third and last request");
    let config_json: serde_json::Value = serde_json::from_str(&gw.admin("/config").body).unwrap();
    assert_eq!(
        config_json["route"][0]["rate_limit"],
        serde_json::json!(["per-key", "per-subject"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_bearer_tokens_lock_the_client_out_too() {
    let app = EchoServer::echo("app").await;
    let config = format!(
        r#"{}{}
[[bearer]]
issuer = "http://127.0.0.1:1"
audiences = ["api"]
jwks_uri = "http://127.0.0.1:1/jwks"

[auth_failure_limit]
max_failures = 3
cooldown = "1m"

[[route]]
name = "api"
path = "/"
upstream = "app"
auth = ["bearer"]
"#,
        base_config(""),
        upstream_block("app", &[app.addr], ""),
    );
    let gw = Gateway::start(&config);
    let got: Vec<u16> = (0..6)
        .map(|i| {
            gw.get("/x", &format!("Authorization: Bearer not.a.jwt{i}\r\n"))
                .status
        })
        .collect();
    assert_eq!(got, vec![401, 401, 401, 401, 429, 429]);
    let r = gw.get("/x", "");
    assert_eq!(r.status, 429, "locked out whatever it sends");
    assert_eq!(app.hit_count(), 0);
}
