//! Sessions and their stores under attack and outage (issue 13, items 9, 14, 15, 17): a
//! Redis that never answers must not make requests queue; a logout during a Redis outage
//! must not come undone when Redis returns; two issuers' equal `sub`s are two people.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;

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
