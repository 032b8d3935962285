//! `gatehouse check` and `gatehouse run` on bad configs: every problem is reported as
//! `file:line:col: message`, and the gateway refuses to start.

use std::path::Path;
use std::process::Command;

const GOOD: &str = r#"[server]
listen = ["127.0.0.1:18080"]

[upstream.app]
servers = ["127.0.0.1:18081"]

[[route]]
name = "app"
path = "/"
upstream = "app"
auth = ["none"]
"#;

fn check(dir: &Path, text: &str) -> (bool, String) {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("check")
        .arg("-c")
        .arg(&path)
        .env_remove("GATEHOUSE_TEST_SECRET")
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (
        out.status.success(),
        text.replace(&format!("{}/", dir.display()), ""),
    )
}

/// Replaces the first occurrence of `from` in the good config.
fn edit(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

#[test]
fn good_config_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = check(dir.path(), GOOD);
    assert!(ok, "{out}");
    assert!(out.contains("gateway.toml: ok"));
}

#[test]
fn errors_name_file_line_and_column() {
    let cases: &[(String, &str)] = &[
        (edit("[server]\n", "[server]\nlisten_on = 1\n"), "gateway.toml:2:1: unknown field `listen_on`"),
        (edit("auth = [\"none\"]", "auth = [\"none\"]\ntimeout = \"5s\""), "gateway.toml:12:1: unknown field `timeout`"),
        (
            edit("servers = [\"127.0.0.1:18081\"]", "servers = [\"127.0.0.1:18081\"]\nconnect_timeout = \"5 parsecs\""),
            "gateway.toml:6:19: duration \"5 parsecs\" has an unknown unit",
        ),
        (edit("upstream = \"app\"", "upstream = \"nope\""), "gateway.toml:10:12: route \"app\" names unknown upstream \"nope\" (defined: app)"),
        (
            format!("{GOOD}\n[[route]]\nname = \"again\"\npath = \"/\"\nupstream = \"app\"\nauth = [\"none\"]\n"),
            "gateway.toml:15:8: route \"again\" overlaps route \"app\"",
        ),
        (
            format!("{GOOD}\n[[route]]\nname = \"app\"\npath = \"/x\"\nupstream = \"app\"\nauth = [\"none\"]\n"),
            "gateway.toml:14:8: a route named \"app\" is defined twice",
        ),
        (edit("listen = [\"127.0.0.1:18080\"]", "listen = [\"localhost\"]"), "gateway.toml:2:11: invalid listen address \"localhost\""),
        (
            edit("[upstream.app]", "[server.tls]\nlisten = [\"127.0.0.1:18443\"]\ncert = \"missing.crt\"\nkey = \"missing.key\"\n\n[upstream.app]"),
            "gateway.toml:6:8: cannot read TLS certificate missing.crt",
        ),
        (edit("auth = [\"none\"]", "auth = [\"bearer\"]"), "gateway.toml:11:9: auth method \"bearer\" needs at least one [[bearer]] issuer"),
        (edit("auth = [\"none\"]", "auth = [\"magic\"]"), "gateway.toml:11:9: unknown auth method \"magic\""),
        (edit("auth = [\"none\"]", "auth = []"), "gateway.toml:11:8: route auth must name at least one method"),
        (edit("path = \"/\"", "path = \"/a/../b\""), "gateway.toml:9:8: route path \"/a/../b\" must be an absolute, normalized path prefix"),
        (edit("[server]\n", "[server]\nthreads = 0\n"), "gateway.toml:2:11: server.threads must be between 1 and 1024"),
        (edit("[server]\n", "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n"), "gateway.toml:2:20: invalid CIDR \"10.0.0.0/33\""),
        (edit("[server]\n", "[server]\npublic_url = \"${GATEHOUSE_TEST_SECRET}\"\n"), "gateway.toml:2:14: environment variable GATEHOUSE_TEST_SECRET is not set"),
        (format!("{GOOD}\n[session]\nstore = \"redis\"\n"), "gateway.toml:14:9: session store \"redis\" needs session.redis_url"),
        (format!("{GOOD}\n[session]\nsecret = \"short\"\n"), "gateway.toml:14:10: session.secret must be at least 32 characters"),
        (edit("auth = [\"none\"]", "auth = [\"session\"]"), "gateway.toml:11:9: auth method \"session\" needs at least one [[idp]]"),
        (format!("{GOOD}\n[[idp]]\nname = \"corp\"\nissuer = \"http://login.example.com\"\nclient_id = \"gh\"\n"), "gateway.toml:15:10: issuer \"http://login.example.com\" must use https"),
        (format!("{GOOD}\n[[idp]]\nname = \"corp\"\nissuer = \"https://login.example.com\"\nclient_id = \"gh\"\nscopes = [\"profile\"]\n"), "gateway.toml:17:10: scopes must include \"openid\""),
        (format!("{GOOD}\n[dev_idp]\nlisten = \"0.0.0.0:8082\"\nusers = [{{ name = \"a\" }}]\n"), "gateway.toml:14:10: dev_idp.listen must be a loopback address"),
        (edit("servers = [\"127.0.0.1:18081\"]", "servers = [\"app\"]"), "gateway.toml:5:12: invalid upstream server \"app\": expected HOST:PORT"),
        (edit("[server]\n", "[server]\nthreads = \"two\"\n"), "gateway.toml:2:11: invalid type: string \"two\", expected i64"),
        ("[server\nlisten = 1".to_string(), "gateway.toml:1:8: "),
        (
            edit("auth = [\"none\"]", "auth = [\"none\"]\nrequest_overrides = [\"X-HTTP-Method-Override\", \"X-Forwarded-Host\"]"),
            "gateway.toml:12:48: unknown request override \"X-Forwarded-Host\"; known: x-http-method-override",
        ),
        (
            edit("auth = [\"none\"]", "auth = [\"none\"]\ndpop_nonce = true"),
            "gateway.toml:12:14: route \"app\" sets dpop_nonce but does not accept bearer tokens",
        ),
        (
            edit("auth = [\"none\"]", "auth = [\"none\"]\nrequire_dpop = true"),
            "gateway.toml:12:16: route \"app\" sets require_dpop but does not accept bearer tokens",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (text, expected) in cases {
        let (ok, out) = check(dir.path(), text);
        if ok || !out.contains(expected) {
            failures.push(format!("expected {expected:?}, got:\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn all_problems_are_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = edit("upstream = \"app\"", "upstream = \"nope\"")
        .replace("auth = [\"none\"]", "auth = [\"session\"]");
    let (ok, out) = check(dir.path(), &text);
    assert!(!ok);
    assert!(out.contains("gateway.toml:10:12:"), "{out}");
    assert!(out.contains("gateway.toml:11:9:"), "{out}");
}

#[test]
fn run_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, edit("auth = [\"none\"]", "auth = [\"session\"]")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to start"), "{err}");
    assert!(err.contains("gateway.toml:11:9:"), "{err}");
}

#[test]
fn missing_file_is_reported() {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "-c", "/nonexistent/gateway.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("/nonexistent/gateway.toml: cannot read config"));
}

/// `gatehouse check` on a file of the repository, with the given environment.
fn check_repository_file(relative: &str, env: &[(&str, &str)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("check")
        .arg("-c")
        .arg(root.join(relative))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{relative}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn repository_configs_pass_check() {
    check_repository_file("gateway.toml", &[]);
}

#[test]
fn deploy_configs_pass_check() {
    check_repository_file(
        "deploy/config/gateway.toml",
        &[
            ("UPSTREAM_HOST", "app"),
            ("UPSTREAM_PORT", "8000"),
            ("OIDC_ISSUER", "https://login.example.com/realms/corp"),
            ("API_AUDIENCE", "crm-api"),
            ("REDIS_URL", "redis://redis:6379/0"),
            ("PUBLIC_URL", "https://app.example.com"),
            ("OIDC_CLIENT_ID", "gatehouse"),
            ("OIDC_CLIENT_SECRET", "a-client-secret"),
            (
                "GATEHOUSE_SESSION_SECRET",
                "0123456789abcdef0123456789abcdef",
            ),
        ],
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Every file the Kubernetes kustomization names is there.
    let kustomization =
        std::fs::read_to_string(root.join("deploy/kubernetes/kustomization.yaml")).unwrap();
    for line in kustomization.lines().map(str::trim) {
        if let Some(file) = line.strip_prefix("- ").filter(|f| f.ends_with(".yaml")) {
            assert!(root.join("deploy/kubernetes").join(file).exists(), "{file}");
        }
    }
}

#[test]
fn documentation_configs_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("docs/examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".toml") || name.ends_with("-policy.toml") {
            continue;
        }
        check_repository_file(
            &format!("docs/examples/{name}"),
            &[
                (
                    "GATEHOUSE_SESSION_SECRET",
                    "0123456789abcdef0123456789abcdef",
                ),
                ("OIDC_CLIENT_SECRET", "a-client-secret"),
            ],
        );
        checked += 1;
    }
    assert!(
        checked >= 7,
        "every IdP guide and the forward-auth example have a config"
    );
}
