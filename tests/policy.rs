//! Authorization end to end: a bearer route with a policy in front of an echo upstream;
//! denied requests never arrive, path tricks never reach `/admin`, report-only lets a
//! would-be denial pass and counts it, and a broken policy on SIGHUP keeps the old one.

mod common;

use std::sync::Arc;

use common::keys::*;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;

const POLICY: &str = include_str!("../policies/crm.toml");

struct Setup {
    gw: Gateway,
    app: TestServer,
    _jwks: TestServer,
    key: TestKey,
    issuer: String,
}

impl Setup {
    fn token(&self, sub: &str, groups: &[&str]) -> String {
        self.key.sign(&json!({
            "iss": self.issuer, "aud": "crm-api", "sub": sub, "exp": now() + 600,
            "email": format!("{sub}@example.com"), "email_verified": true, "groups": groups,
        }))
    }

    fn get(&self, path: &str, token: &str) -> Response {
        self.gw
            .get(path, &format!("Authorization: Bearer {token}\r\n"))
    }
}

async fn setup(policy: &str) -> Setup {
    let key = TestKey::rsa("k1", Algorithm::RS256);
    let body = jwks(&[&key]);
    let jwks_server =
        TestServer::start(Arc::new(move |_req: &Request| Reply::json(200, &body))).await;
    let issuer = format!("http://{}", jwks_server.addr);
    let app = EchoServer::echo("app").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/crm.toml"), policy).unwrap();
    let config = format!(
        r#"{}{}
[[bearer]]
issuer = "{issuer}"
audiences = ["crm-api"]
jwks_uri = "{issuer}/jwks"

[[route]]
name = "crm"
path = "/"
upstream = "app"
auth = ["bearer"]
policy = "policies/crm.toml"
"#,
        base_config(""),
        upstream_block("app", &[app.addr], ""),
    );
    let gw = Gateway::start_in(dir, &config);
    Setup {
        gw,
        app,
        _jwks: jwks_server,
        key,
        issuer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_requests_arrive_and_denied_ones_never_do() {
    let s = setup(POLICY).await;
    let bob = s.token("bob", &["sales"]);
    let admin = s.token("root", &["crm-admins"]);
    let e = s.get("/customers/7", &bob).echoed();
    assert_eq!(e.target, "/customers/7");
    assert_eq!(s.get("/admin/users", &admin).status, 200);
    let denied = s.get("/admin/users", &bob);
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.header("www-authenticate"),
        Some("Bearer realm=\"gatehouse\", error=\"insufficient_scope\", resource_metadata=\"http://127.0.0.1/.well-known/oauth-protected-resource\"")
    );
    let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(body["error"], "forbidden");
    assert_eq!(
        s.app.hit_count(),
        2,
        "the denied request never reached the upstream"
    );
    let metrics = s.gw.admin("/metrics").body;
    assert!(
        metrics.contains("decision=\"deny\",method=\"bearer\",reason=\"admin area\",route=\"crm\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("decision=\"allow\",method=\"bearer\",reason=\"read\",route=\"crm\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_never_reach_admin() {
    let s = setup(POLICY).await;
    let bob = s.token("bob", &["sales"]);
    for trick in [
        "/public/../admin/users",
        "/public/%2e%2e/admin/users",
        "/public/.%2E/admin/users",
        "//admin/users",
        "/%61dmin/users",
        "/admin;x=1/users",
        "/public%2f..%2fadmin/users",
        "/public/%252e%252e/admin/users",
        "/public/..\\admin/users",
        "/admin%00/users",
        "http://127.0.0.1/public/../admin/users",
    ] {
        let r = s.gw.raw(&format!(
            "GET {trick} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bob}\r\nConnection: close\r\n\r\n"
        ));
        assert!(r.status == 403 || r.status == 400, "{trick}: {r:?}");
    }
    assert_eq!(s.app.hit_count(), 0, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_only_lets_a_would_be_denial_through_and_counts_it() {
    let s = setup(&POLICY.replace("mode = \"enforce\"", "mode = \"report-only\"")).await;
    let bob = s.token("bob", &["sales"]);
    let e = s.get("/admin/users", &bob).echoed();
    assert_eq!(e.target, "/admin/users");
    let metrics = s.gw.admin("/metrics").body;
    assert!(
        metrics.contains("decision=\"deny_report_only\",method=\"bearer\",reason=\"admin area\""),
        "{metrics}"
    );
    assert!(
        s.gw.log().contains("deny_report_only"),
        "the would-be denial is in the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_on_sighup_keeps_the_old_decisions() {
    let s = setup(POLICY).await;
    let bob = s.token("bob", &["sales"]);
    assert_eq!(s.get("/admin/users", &bob).status, 403);
    let policy_path = s.gw.path().join("policies/crm.toml");
    std::fs::write(
        &policy_path,
        POLICY.replace(
            "require = \"crm:admin\"",
            "allow = true\nwhen = 'claims.sub =='",
        ),
    )
    .unwrap();
    s.gw.signal("HUP");
    let mut counted = false;
    for _ in 0..100 {
        if s.gw
            .admin("/metrics")
            .body
            .contains("gatehouse_config_reloads_total{result=\"failure\"} 1")
        {
            counted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(counted, "{}", s.gw.log());
    assert!(
        s.gw.log().contains("crm.toml:"),
        "the policy error names the file and line:\n{}",
        s.gw.log()
    );
    assert_eq!(
        s.get("/admin/users", &bob).status,
        403,
        "the old policy still decides"
    );
    // A valid change is applied.
    std::fs::write(
        &policy_path,
        POLICY.replace("require = \"crm:admin\"", "allow = true"),
    )
    .unwrap();
    s.gw.signal("HUP");
    let mut applied = false;
    for _ in 0..100 {
        if s.get("/admin/users", &bob).status == 200 {
            applied = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(applied, "{}", s.gw.log());
}

#[test]
fn policy_tooling_and_check() {
    let root = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .current_dir(root)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = run(&["policy", "test", "-c", "gateway.toml"]);
    assert!(ok, "{out}");
    assert!(out.contains("policy tests: 6 passed, 0 failed"), "{out}");
    let (ok, out) = run(&[
        "policy",
        "explain",
        "-c",
        "gateway.toml",
        "--route",
        "whoami",
        "--path",
        "/users/alice/x",
        "--claims",
        "{\"sub\":\"bob\"}",
    ]);
    assert!(!ok);
    assert!(
        out.contains("rule \"own profile\": `when` is false"),
        "{out}"
    );
    assert!(
        out.contains("decision: deny by rule \"other profiles\""),
        "{out}"
    );

    // A failing [[test]] makes `policy test` exit 1; a broken policy fails `check` with its line.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    let config = "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstream.app]\nservers = [\"127.0.0.1:2\"]\n[[route]]\nname = \"r\"\npath = \"/\"\nupstream = \"app\"\nauth = [\"none\"]\npolicy = \"policies/p.toml\"\n";
    std::fs::write(dir.path().join("gateway.toml"), config).unwrap();
    let cfg = dir.path().join("gateway.toml");
    let cfg = cfg.to_str().unwrap();
    std::fs::write(dir.path().join("policies/p.toml"), "[[rule]]\nname = \"all\"\npaths = [\"/**\"]\nallow = true\n[[test]]\nname = \"wrong\"\nrequest = { method = \"GET\", path = \"/\" }\nexpect = \"deny\"\n").unwrap();
    let (ok, out) = run(&["policy", "test", "-c", cfg]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  wrong"), "{out}");
    std::fs::write(
        dir.path().join("policies/p.toml"),
        "[[rule]]\nname = \"all\"\npaths = [\"/**\"]\nwhen = 'nope.x'\nallow = true\n",
    )
    .unwrap();
    let (ok, out) = run(&["check", "-c", cfg]);
    assert!(!ok);
    assert!(
        out.contains("policies/p.toml:4:8: condition: unknown variable `nope`"),
        "{out}"
    );
    assert!(out.contains("gateway.toml:10:10: policy"), "{out}");
}
