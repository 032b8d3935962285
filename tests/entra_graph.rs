//! Entra ID's groups overage: an ID token that says the user's groups did not fit
//! (`_claim_names.groups`) makes a gateway with `groups_source = "graph"` ask Microsoft
//! Graph for the transitive membership. Graph cannot be reached here: an in-test stand-in
//! pages (`@odata.nextLink`) and throttles (429 + `Retry-After`) as Graph does, and fails.

mod common;

use std::sync::{Arc, Mutex};

use common::keys::now;
use common::login::metric;
use common::stub_idp::{log_in, session_cookie};
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "secret = \"0123456789abcdef0123456789abcdef\"";

/// How the stand-in's Graph behaves.
#[derive(Clone, Copy, PartialEq)]
enum Graph {
    /// Three pages (999, 999, 5 groups); the second answers 429 once first.
    Pages,
    Fails,
    /// The first page links to another origin.
    LinksAway,
}

struct Stub {
    _server: TestServer,
    issuer: String,
    graph: Arc<Mutex<Graph>>,
    /// The ID token says the groups did not fit.
    overage: Arc<Mutex<bool>>,
    nonce: Arc<Mutex<String>>,
    graph_requests: Arc<Mutex<Vec<Request>>>,
}

fn group_page(from: usize, count: usize, next: Option<String>) -> Value {
    let value: Vec<Value> = (from..from + count)
        .map(|i| json!({"@odata.type": "#microsoft.graph.group", "id": format!("g-{i:05}")}))
        .collect();
    let mut page = json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects", "value": value});
    if let Some(next) = next {
        page["@odata.nextLink"] = Value::from(next);
    }
    page
}

async fn stub() -> Stub {
    let graph = Arc::new(Mutex::new(Graph::Pages));
    let overage = Arc::new(Mutex::new(true));
    let nonce = Arc::new(Mutex::new(String::new()));
    let graph_requests = Arc::new(Mutex::new(Vec::new()));
    let cells = Arc::new(Mutex::new((String::new(), None::<common::keys::TestKey>)));
    let throttled = Arc::new(Mutex::new(false));
    let (g, o, n, seen, c) = (
        graph.clone(),
        overage.clone(),
        nonce.clone(),
        graph_requests.clone(),
        cells.clone(),
    );
    let idp = common::stub_idp::start("stub-key", json!({}), move |req: &Request| {
        let (issuer, key) = c.lock().unwrap().clone();
        if req.target.starts_with("/v1.0/") {
            seen.lock().unwrap().push(req.clone());
            if req.header("authorization") != Some("Bearer at-graph") {
                return Reply::json(401, &json!({"error": {"code": "InvalidAuthenticationToken"}}));
            }
            let link = |page: u32| format!("{issuer}/v1.0/me/transitiveMemberOf/microsoft.graph.group?$select=id&$top=999&$skiptoken=p{page}");
            return match (*g.lock().unwrap(), req.target.split("$skiptoken=").nth(1)) {
                (Graph::Fails, _) => Reply::json(500, &json!({"error": {"code": "generalException"}})),
                (Graph::LinksAway, _) => Reply::json(200, &group_page(0, 3, Some("https://evil.example/v1.0/me/x".into()))),
                (Graph::Pages, None) => Reply::json(200, &group_page(0, 999, Some(link(2)))),
                (Graph::Pages, Some("p2")) => {
                    let mut t = throttled.lock().unwrap();
                    if !*t {
                        *t = true;
                        let mut r = Reply::json(429, &json!({"error": {"code": "TooManyRequests"}}));
                        r.headers.push(("retry-after".into(), "1".into()));
                        return r;
                    }
                    Reply::json(200, &group_page(999, 999, Some(link(3))))
                }
                (Graph::Pages, Some(_)) => Reply::json(200, &group_page(1998, 5, None)),
            };
        }
        let t = now();
        let mut claims = json!({
            "iss": issuer, "aud": "gatehouse", "sub": "dana", "iat": t, "exp": t + 300,
            "nonce": *n.lock().unwrap(), "groups": ["in-token"],
        });
        if *o.lock().unwrap() {
            claims.as_object_mut().unwrap().remove("groups");
            claims["_claim_names"] = json!({"groups": "src1"});
            claims["_claim_sources"] = json!({"src1": {"endpoint": "https://graph.windows.net/tenant/users/dana/getMemberObjects"}});
        }
        let token = key.as_ref().unwrap().sign(&claims);
        Reply::json(200, &json!({"access_token": "at-graph", "token_type": "Bearer", "expires_in": 300, "id_token": token}))
    })
    .await;
    *cells.lock().unwrap() = (idp.issuer.clone(), Some(idp.key.clone()));
    Stub {
        _server: idp.server,
        issuer: idp.issuer,
        graph,
        overage,
        nonce,
        graph_requests,
    }
}

fn gateway(stub: &Stub, app: &TestServer) -> Gateway {
    Gateway::start(&format!(
        r#"{}
[session]
{SECRET}

[[idp]]
name = "entra"
issuer = "{issuer}"
client_id = "gatehouse"
client_secret = "stub-secret"
scopes = ["openid", "profile", "offline_access", "GroupMember.Read.All"]
groups_source = "graph"
graph_url = "{issuer}"

{}
[[route]]
name = "app"
path = "/"
upstream = "app"
auth = ["session"]
"#,
        base_config("public_url = \"http://127.0.0.1:{port}\"\nallowed_hosts = [\"127.0.0.1\"]"),
        upstream_block("app", &[app.addr], ""),
        issuer = stub.issuer,
    ))
}

/// The groups the app received for the session in `cookie`.
fn groups_upstream(gw: &Gateway, cookie: &str) -> Vec<String> {
    let page = gw.get(
        "/whoami",
        &format!("Cookie: {cookie}\r\nAccept: application/json\r\n"),
    );
    let seen = page.echoed();
    seen.headers
        .iter()
        .find(|(k, _)| k == "x-auth-request-groups")
        .map(|(_, v)| v.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overage_token_gets_every_page_of_groups_from_graph() {
    let stub = stub().await;
    let app = TestServer::echo("app").await;
    let gw = gateway(&stub, &app);

    let r = log_in(&gw, &stub.nonce);
    assert_eq!(r.status, 302, "{}\n{}", r.body, gw.log());
    let groups = groups_upstream(&gw, &session_cookie(&r).expect("a session"));
    assert_eq!(
        groups.len(),
        2003,
        "every page, the throttled one after its Retry-After"
    );
    assert_eq!(groups.first().map(String::as_str), Some("g-00000"));
    assert_eq!(groups.last().map(String::as_str), Some("g-02002"));
    let asked = stub.graph_requests.lock().unwrap().clone();
    assert_eq!(asked.len(), 4, "three pages and one retry");
    assert!(asked[0]
        .target
        .starts_with("/v1.0/me/transitiveMemberOf/microsoft.graph.group?"));

    // A token with room for its groups: Graph is not asked.
    *stub.overage.lock().unwrap() = false;
    let r = log_in(&gw, &stub.nonce);
    assert_eq!(
        groups_upstream(&gw, &session_cookie(&r).unwrap()),
        ["in-token"]
    );
    assert_eq!(stub.graph_requests.lock().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_failing_or_linking_elsewhere_makes_no_session() {
    let stub = stub().await;
    let app = TestServer::echo("app").await;
    let gw = gateway(&stub, &app);
    for mode in [Graph::Fails, Graph::LinksAway] {
        *stub.graph.lock().unwrap() = mode;
        let r = log_in(&gw, &stub.nonce);
        assert_eq!(r.status, 502, "{}\n{}", r.body, gw.log());
        assert!(session_cookie(&r).is_none());
    }
    // The link elsewhere was never followed (the token stays with Graph).
    assert!(stub
        .graph_requests
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.target.starts_with("/v1.0/")));
    assert!(
        gw.log().contains("Microsoft Graph groups failed"),
        "{}",
        gw.log()
    );
    assert_eq!(
        metric(
            &gw,
            "gatehouse_userinfo_requests_total{idp=\"entra\",result=\"graph_failed\"}"
        ),
        2.0
    );
}

#[test]
fn graph_settings_are_checked_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    for (setting, message) in [
        (
            "groups_source = \"directory\"",
            "groups_source must be \"token\" or \"graph\"",
        ),
        (
            "graph_url = \"https://graph.microsoft.us\"",
            "graph_url is for groups_source",
        ),
        (
            "groups_source = \"graph\"\ngraph_url = \"http://graph.example\"",
            "graph_url",
        ),
    ] {
        let text = idp_config_text(&format!("client_secret = \"s\"\n{setting}"));
        assert_refused_at(dir.path(), &text, setting, message);
    }
}
