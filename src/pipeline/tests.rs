//! The pipeline without Pingora: request facts in, decisions out, for every authentication
//! method, policy outcome, rate-limit outcome and kind of answer.

use super::testing::{headers, Decision, Harness, API_KEY};
use super::{Body, Endpoint, Verdict};

/// A decision in one line: `allow <route> <path> <method>:<subject>`, `<status> <refusal>`
/// or `endpoint <name>`.
fn summary(h: &Harness, d: &Decision) -> String {
    let j = &d.judged;
    match &d.verdict {
        Verdict::Allow => format!(
            "allow {} {} {}",
            j.route.map_or("-", |i| h.rt.config.routes[i].name.as_str()),
            j.path,
            j.identity.as_ref().map_or("-".to_string(), |i| format!(
                "{}:{}",
                i.method.as_str(),
                i.subject
            )),
        ),
        Verdict::Answer(a) => format!("{} {}", a.status.as_u16(), a.refusal.unwrap_or("-")),
        Verdict::Endpoint(e) => format!("endpoint {e:?}"),
    }
}

fn answer(d: &Decision) -> &super::Answer {
    match &d.verdict {
        Verdict::Answer(a) => a,
        other => panic!("not an answer: {other:?}"),
    }
}

fn header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
    answer(d)
        .headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

/// What a row is about, method, target, headers, and the decision it gets.
type Row<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn request_facts_decide_as_the_table_says() {
    let h = Harness::start("").await;
    let staff = format!("Bearer {}", h.token("alice", &["staff"]));
    let outsider = format!("Bearer {}", h.token("mallory", &[]));
    let cookie = h.session("bob").await;
    let html = ("accept", "text/html");
    let preflight = |origin| [("origin", origin), ("access-control-request-method", "GET")];
    let table: &[Row] = &[
        // every authentication method
        ("none", "GET", "/open/a/../x", &[], "allow open /open/x -"),
        (
            "bearer",
            "GET",
            "/api/items",
            &[("authorization", &staff)],
            "allow api /api/items bearer:alice",
        ),
        (
            "API key",
            "GET",
            "/keys/x",
            &[("x-api-key", API_KEY)],
            "allow keys /keys/x api_key:svc-ci",
        ),
        (
            "session",
            "GET",
            "/app/home",
            &[("cookie", &cookie)],
            "allow app /app/home session:bob",
        ),
        // policy outcomes: allow (above), deny, report-only
        (
            "denied",
            "DELETE",
            "/api/items",
            &[("authorization", &staff)],
            "403 policy_denied",
        ),
        (
            "report-only",
            "GET",
            "/audit/x",
            &[("authorization", &outsider)],
            "allow audit /audit/x bearer:mallory",
        ),
        // rate limits: one a day for this client
        (
            "first",
            "GET",
            "/limited/x",
            &[],
            "allow limited /limited/x -",
        ),
        ("second", "GET", "/limited/x", &[], "429 rate_limited"),
        // every kind of answer
        ("no route", "GET", "/nowhere", &[], "404 no_route"),
        ("bad path", "GET", "/open/a%2fb", &[], "400 encoded_slash"),
        ("bad method", "get", "/open/x", &[], "400 bad_method"),
        (
            "foreign host",
            "GET",
            "/open/x",
            &[("host", "evil.test")],
            "421 host_not_allowed",
        ),
        (
            "no credential",
            "GET",
            "/api/items",
            &[],
            "401 missing_credentials",
        ),
        ("login", "GET", "/app/home", &[html], "302 login_redirect"),
        (
            "preflight",
            "OPTIONS",
            "/api/items",
            &preflight("https://spa.test"),
            "204 -",
        ),
        (
            "foreign preflight",
            "OPTIONS",
            "/api/items",
            &preflight("https://evil.test"),
            "403 cors_preflight_refused",
        ),
        (
            "userinfo",
            "GET",
            "/_gatehouse/userinfo",
            &[],
            "endpoint Userinfo",
        ),
        (
            "resource metadata",
            "GET",
            "/.well-known/oauth-protected-resource/api",
            &[],
            "200 -",
        ),
        (
            "no metadata of a session route",
            "GET",
            "/.well-known/oauth-protected-resource/app/x",
            &[],
            "404 no_resource_metadata",
        ),
        (
            "forward-auth",
            "GET",
            "/_gatehouse/auth",
            &[],
            "endpoint ForwardAuth",
        ),
        ("reserved", "GET", "/_gatehouse", &[], "404 reserved_path"),
    ];
    for (what, method, target, pairs, expected) in table {
        let d = h.proxy(method, target, &headers(pairs)).await;
        assert_eq!(summary(&h, &d), *expected, "{what}: {method} {target}");
    }
}

#[tokio::test]
async fn answers_carry_what_clients_rely_on() {
    let h = Harness::start("").await;
    let d = h.proxy("GET", "/api/items", &headers(&[])).await;
    // public_url names the resource: its origin is the request's.
    assert_eq!(
        header(&d, "www-authenticate"),
        Some("Bearer realm=\"gatehouse\", resource_metadata=\"http://gw.test/.well-known/oauth-protected-resource/api\"")
    );
    assert_eq!(answer(&d).body, Body::Error { html: false });
    assert!(
        answer(&d).close,
        "a refused request's connection is not reused"
    );

    let d = h
        .proxy(
            "GET",
            "/api/items",
            &headers(&[("authorization", "Bearer not-a-jwt")]),
        )
        .await;
    assert_eq!(summary(&h, &d), "401 malformed_token");
    assert!(header(&d, "www-authenticate").is_some_and(|c| c.contains("invalid_token")));
    let d = h
        .proxy(
            "GET",
            "/api/items",
            &headers(&[("authorization", "Bearer a b")]),
        )
        .await;
    assert_eq!(summary(&h, &d), "400 malformed_token");
    assert!(header(&d, "www-authenticate").is_some_and(|c| c.contains("invalid_request")));

    let outsider = format!("Bearer {}", h.token("mallory", &[]));
    let d = h
        .proxy(
            "GET",
            "/api/items",
            &headers(&[("authorization", &outsider)]),
        )
        .await;
    assert_eq!(summary(&h, &d), "403 policy_denied");
    assert!(
        header(&d, "www-authenticate").is_some_and(|c| c.contains("insufficient_scope")
            && c.ends_with(
                "resource_metadata=\"http://gw.test/.well-known/oauth-protected-resource/api\""
            ))
    );
    // A session route answers scripts with a Bearer challenge, but it is no OAuth resource.
    let d = h.proxy("GET", "/app/home", &headers(&[])).await;
    assert_eq!(
        header(&d, "www-authenticate"),
        Some("Bearer realm=\"gatehouse\"")
    );

    let d = h
        .proxy(
            "GET",
            "/app/home?tab=2",
            &headers(&[("accept", "text/html")]),
        )
        .await;
    let location = header(&d, "location").expect("a redirect");
    assert!(location.contains("/authorize?"), "{location}");
    assert!(header(&d, "set-cookie").is_some_and(|c| c.starts_with("gatehouse_login=")));

    // Browsers get HTML error pages, scripts JSON; a 404 names no route.
    let d = h
        .proxy("GET", "/nowhere", &headers(&[("accept", "text/html")]))
        .await;
    assert_eq!(answer(&d).body, Body::Error { html: true });

    h.proxy("GET", "/limited/x", &headers(&[])).await;
    let d = h.proxy("GET", "/limited/x", &headers(&[])).await;
    assert!(header(&d, "retry-after").is_some());
    assert_eq!(
        header(&d, "ratelimit-policy"),
        Some("\"one-a-day\";q=1;w=86400")
    );
}

#[tokio::test]
async fn hygiene_names_what_the_upstream_must_not_see() {
    let h = Harness::start("").await;
    let forged = headers(&[
        ("x-auth-request-user", "admin"),
        ("x_auth_request_groups", "admins"),
        ("x-other", "kept"),
    ]);
    let d = h.proxy("GET", "/open/x", &forged).await;
    assert!(matches!(d.verdict, Verdict::Allow));
    let mut removed: Vec<&str> = d.judged.remove_headers.iter().map(|n| n.as_str()).collect();
    removed.sort();
    assert_eq!(removed, ["x-auth-request-user", "x_auth_request_groups"]);
    // The route's own rewrite of a path that was not normal.
    let d = h.proxy("GET", "/open/./x?q=1", &headers(&[])).await;
    assert_eq!(
        d.judged.rewrite.map(|u| u.to_string()).as_deref(),
        Some("/open/x?q=1")
    );
}

#[tokio::test]
async fn repeated_bad_credentials_lock_the_client_out() {
    let h = Harness::start("").await;
    // Through the trusted peer, from one client.
    let client = [
        ("x-forwarded-for", "198.51.100.7"),
        ("authorization", "Bearer x"),
    ];
    // `max_failures = 3` in a window: the fourth failure locks the client out.
    for _ in 0..4 {
        let d = h.proxy("GET", "/api/items", &headers(&client)).await;
        assert_eq!(summary(&h, &d), "401 malformed_token");
    }
    let d = h.proxy("GET", "/api/items", &headers(&client)).await;
    assert_eq!(summary(&h, &d), "429 auth_lockout");
    assert!(header(&d, "retry-after").is_some());
    // Another client is not locked out.
    let d = h
        .proxy(
            "GET",
            "/api/items",
            &headers(&[("x-forwarded-for", "198.51.100.8")]),
        )
        .await;
    assert_eq!(summary(&h, &d), "401 missing_credentials");
}

#[tokio::test]
async fn a_rate_limit_store_that_is_down_fails_as_configured() {
    // Nothing listens on port 1 of loopback: every lookup fails at once.
    let store = |on_error| {
        format!("[rate_limit_store]\nkind = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"\non_error = \"{on_error}\"\n")
    };
    let h = Harness::start(&store("fail_open")).await;
    let d = h.proxy("GET", "/limited/x", &headers(&[])).await;
    assert_eq!(summary(&h, &d), "allow limited /limited/x -");
    let h = Harness::start(&store("fail_closed")).await;
    let d = h.proxy("GET", "/limited/x", &headers(&[])).await;
    assert_eq!(summary(&h, &d), "503 rate_limit_store_unavailable");
    assert_eq!(header(&d, "retry-after"), Some("1"));
}

#[tokio::test]
async fn endpoints_under_the_prefix_are_named() {
    let h = Harness::start("").await;
    for (path, endpoint) in [
        ("/_gatehouse/login", Endpoint::Login),
        ("/_gatehouse/callback", Endpoint::Callback),
        ("/_gatehouse/logout", Endpoint::Logout),
        (
            "/_gatehouse/backchannel-logout",
            Endpoint::BackchannelLogout,
        ),
        ("/_gatehouse/jwks.json", Endpoint::Jwks),
        ("/_gatehouse/./userinfo", Endpoint::Userinfo),
        ("/_gatehouse/other", Endpoint::Unknown),
    ] {
        let d = h.proxy("GET", path, &headers(&[])).await;
        assert!(
            matches!(d.verdict, Verdict::Endpoint(e) if e == endpoint),
            "{path}: {d:?}"
        );
    }
}
