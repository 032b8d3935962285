//! The proxy front, the forward-auth front and the ext_authz front decide alike: the same
//! request, read by the proxy from its request line, by forward-auth from a trusted proxy's
//! `X-Forwarded-*` headers, or by ext_authz from the original request Envoy passes on, gets
//! the same decision and the same identity headers; so does the `CheckRequest` Envoy sends
//! over gRPC. (Refusals before authentication differ by design: forward-auth says 403 to
//! whatever it cannot judge.)

use http::StatusCode;
use pingora::http::RequestHeader;

use super::{ext_authz_grpc, ext_authz_http, forward_auth, proxy};
use crate::pipeline::testing::{Decision, Harness, API_KEY, PEER};
use crate::pipeline::{upstream, Endpoint, Verdict};

fn request(method: &str, target: &str, pairs: &[(&str, &str)]) -> RequestHeader {
    let mut req = RequestHeader::build(method, target.as_bytes(), None).expect("a request");
    for (name, value) in pairs {
        req.append_header(name.to_string(), *value)
            .expect("a header");
    }
    req
}

/// What the pipeline decided, and the identity headers an allowed request carries on.
fn outcome(h: &Harness, d: &Decision) -> String {
    let j = &d.judged;
    let identity = upstream::identity_headers(&h.rt, j)
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ");
    match &d.verdict {
        Verdict::Allow => format!("allow route={:?} path={} {identity}", j.route, j.path),
        Verdict::Answer(a) => format!("{} {}", a.status.as_u16(), a.refusal.unwrap_or("-")),
        Verdict::Endpoint(e) => format!("endpoint {e:?}"),
    }
}

/// The decision about `method target` asked by a proxy at `/_gatehouse/auth`.
async fn forwarded(
    h: &Harness,
    method: &str,
    target: &str,
    pairs: &[(&str, &str)],
) -> (Decision, Option<String>) {
    let mut question = vec![
        ("Host", "gw.test"),
        ("X-Forwarded-Method", method),
        ("X-Forwarded-Uri", target),
        ("X-Forwarded-Host", "gw.test"),
    ];
    question.extend_from_slice(pairs);
    let mut req = request("GET", "/_gatehouse/auth?redirect=true", &question);
    let asked = h.decide(&proxy::facts(&req, Some(PEER))).await;
    assert!(matches!(
        asked.verdict,
        Verdict::Endpoint(Endpoint::ForwardAuth)
    ));
    for name in &asked.judged.remove_headers {
        req.remove_header(name);
    }
    let read = forward_auth::read(&asked.judged, Some(PEER), req.uri.query(), &req.headers)
        .expect("a trusted proxy's question");
    let facts = read.facts(&req.headers, Some(PEER), &asked.judged.request_id);
    let mut decision = h.decide(&facts).await;
    // What forward-auth answers an allowed request.
    let status = match &decision.verdict {
        Verdict::Allow => {
            let verdict = Verdict::Allow;
            let answer = forward_auth::answer(&h.rt, &mut decision.judged, verdict);
            assert_eq!(answer.status, StatusCode::OK);
            Some(
                answer
                    .named
                    .iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        }
        _ => None,
    };
    (decision, status)
}

/// The decision about `method target` asked by Envoy at `/_gatehouse/ext-authz`, and the
/// headers the answer sets when it allows (None when it does not).
async fn envoy_asks(
    h: &Harness,
    method: &str,
    target: &str,
    pairs: &[(&str, &str)],
) -> (Decision, Option<String>) {
    let mut with_host = vec![("Host", "gw.test")];
    with_host.extend_from_slice(pairs);
    let req = request(
        method,
        &format!("/_gatehouse/ext-authz{target}"),
        &with_host,
    );
    let asked = h.decide(&proxy::facts(&req, Some(PEER))).await;
    assert!(matches!(
        asked.verdict,
        Verdict::Endpoint(Endpoint::ExtAuthz)
    ));
    let facts = ext_authz_http::facts(
        &asked.judged,
        &req.method,
        req.raw_path(),
        &req.headers,
        Some(PEER),
        "/_gatehouse",
    )
    .expect("a trusted proxy's question");
    let mut decision = h.decide(&facts).await;
    let normal = decision.judged.rewrite.is_none();
    let verdict = match &decision.verdict {
        Verdict::Allow => Verdict::Allow,
        _ => return (decision, None),
    };
    let answer = ext_authz_http::answer(&h.rt, &mut decision.judged, verdict, &req.headers);
    if !normal {
        // Envoy forwards the target it holds: only a normal one is allowed.
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        return (decision, None);
    }
    assert_eq!(answer.status, StatusCode::OK);
    let named = answer
        .named
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    (decision, Some(named))
}

/// The decision about `method target` in Envoy's gRPC `CheckRequest` (lower-case headers,
/// the client Envoy saw as the source), and the headers the answer sets when it allows.
async fn envoy_checks(
    h: &Harness,
    method: &str,
    target: &str,
    pairs: &[(&str, &str)],
) -> (Decision, Option<String>) {
    use envoy_types::pb::envoy::config::core::v3::{address, Address, SocketAddress};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    let client = pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        .map_or("192.0.2.1", |(_, v)| *v);
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: client.to_string(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: method.to_string(),
                    host: "gw.test".to_string(),
                    path: target.to_string(),
                    headers: pairs
                        .iter()
                        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
                        .chain([(":authority".to_string(), "gw.test".to_string())])
                        .collect(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    };
    let asked = ext_authz_grpc::Asked::read(&check).expect("a request");
    let mut decision = h.decide(&asked.facts(Some(PEER))).await;
    if !matches!(decision.verdict, Verdict::Allow) {
        return (decision, None);
    }
    match ext_authz_http::decision(&h.rt, &mut decision.judged, Verdict::Allow, &asked.headers) {
        ext_authz_http::Decision::Allow(edits) => {
            let named = edits
                .set
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            (decision, Some(named))
        }
        ext_authz_http::Decision::Deny(answer) => {
            // Envoy forwards the target it holds: only a normal one is allowed.
            assert_eq!(answer.status, StatusCode::BAD_REQUEST);
            (decision, None)
        }
    }
}

/// Method, target and headers of a request.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

#[tokio::test]
async fn the_proxy_and_forward_auth_decide_alike() {
    let h = Harness::start("").await;
    let staff = format!("Bearer {}", h.token("alice", &["staff"]));
    let outsider = format!("Bearer {}", h.token("mallory", &[]));
    let cookie = h.session("bob").await;
    let cases: &[Case] = &[
        ("GET", "/open/a/../x?q=1", &[]),
        ("GET", "/api/items", &[("Authorization", &staff)]),
        ("DELETE", "/api/items", &[("Authorization", &staff)]),
        ("GET", "/api/items", &[("Authorization", &outsider)]),
        ("GET", "/api/items", &[]),
        (
            "GET",
            "/api/items",
            &[("Authorization", "Bearer not-a-jwt")],
        ),
        ("GET", "/keys/x", &[("X-Api-Key", API_KEY)]),
        ("GET", "/keys/x", &[("X-Api-Key", "wrong-key-0123456789")]),
        ("GET", "/app/home", &[("Cookie", &cookie)]),
        ("GET", "/app/home", &[("Accept", "text/html")]),
        ("POST", "/app/home", &[("Accept", "text/html")]),
        ("GET", "/audit/x", &[("Authorization", &outsider)]),
        (
            "GET",
            "/open/x",
            &[
                ("X-Auth-Request-User", "admin"),
                ("X_Auth_Request_User", "admin"),
            ],
        ),
    ];
    for (i, (method, target, pairs)) in cases.iter().enumerate() {
        // Each case from a client of its own (failed credentials count per client).
        let client = format!("198.51.100.{i}");
        let mut pairs = pairs.to_vec();
        pairs.push(("X-Forwarded-For", &client));
        let mut with_host = vec![("Host", "gw.test")];
        with_host.extend_from_slice(&pairs);
        let req = request(method, target, &with_host);
        let proxied = h.decide(&proxy::facts(&req, Some(PEER))).await;
        let (asked, answered_headers) = forwarded(&h, method, target, &pairs).await;
        let what = format!("{method} {target} {pairs:?}");
        assert_eq!(outcome(&h, &proxied), outcome(&h, &asked), "{what}");
        assert_eq!(proxied.judged.path, asked.judged.path, "{what}");
        if let Some(named) = answered_headers {
            // Forward-auth's 200 carries the identity headers the upstream would get.
            let expected = outcome(&h, &proxied);
            assert!(expected.ends_with(&named), "{what}: {expected} / {named}");
        }
        let (envoy, set) = envoy_asks(&h, method, target, &pairs).await;
        assert_eq!(
            outcome(&h, &proxied),
            outcome(&h, &envoy),
            "ext_authz {what}"
        );
        assert_eq!(proxied.judged.path, envoy.judged.path, "ext_authz {what}");
        if let Some(set) = set {
            // Envoy's 200 sets the identity headers the upstream would get.
            let expected = outcome(&h, &proxied);
            assert!(expected.ends_with(&set), "{what}: {expected} / {set}");
        }
        // From a client of its own too: three failures lock a client out.
        let grpc_client = format!("198.51.100.{}", 100 + i);
        let mut grpc_pairs = pairs.clone();
        if let Some(xff) = grpc_pairs.iter_mut().find(|(n, _)| *n == "X-Forwarded-For") {
            xff.1 = &grpc_client;
        }
        let (grpc, set) = envoy_checks(&h, method, target, &grpc_pairs).await;
        assert_eq!(
            outcome(&h, &proxied),
            outcome(&h, &grpc),
            "ext_authz gRPC {what}"
        );
        assert_eq!(grpc.judged.client_ip, grpc_client.parse().ok(), "{what}");
        if let Some(set) = set {
            let expected = outcome(&h, &proxied);
            assert!(expected.ends_with(&set), "gRPC {what}: {expected} / {set}");
        }
    }
}

#[tokio::test]
async fn forward_auth_answers_only_trusted_proxies() {
    let h = Harness::start("").await;
    let req = request(
        "GET",
        "/_gatehouse/auth",
        &[("Host", "gw.test"), ("X-Forwarded-Uri", "/open/x")],
    );
    let stranger = "203.0.113.9".parse().ok();
    let asked = h.decide(&proxy::facts(&req, stranger)).await;
    let refused = forward_auth::read(&asked.judged, stranger, req.uri.query(), &req.headers)
        .expect_err("an untrusted peer");
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.refusal, Some("forward_auth_untrusted"));
    // A target it cannot judge is a 403 too (nginx passes on only 2xx, 401 and 403).
    let (d, _) = forwarded(&h, "GET", "/nowhere", &[]).await;
    assert_eq!(outcome(&h, &d), "403 no_route");
    let (d, _) = forwarded(&h, "get", "/open/x", &[]).await;
    assert_eq!(outcome(&h, &d), "403 forward_auth_bad_target");
}
