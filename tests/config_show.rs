//! `gatehouse config show`: the effective config, offline, with defaults filled in and no
//! secret in it; the same document the admin listener serves at `/config`.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use common::*;

const SESSION_SECRET: &str = "session-secret-in-a-file-0123456789abcdef";
const CLIENT_SECRET: &str = "client-secret-inline-7f3a9c";
const INTROSPECTION_SECRET: &str = "introspection-secret-5b1e";
const REDIS_PASSWORD: &str = "redis-password-c0ffee";

/// Runs `gatehouse config show -c path`: (success, stdout, stderr).
fn show(path: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["config", "show", "-c"])
        .arg(path)
        .output()
        .expect("run gatehouse");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shows_defaults_and_no_secret_without_touching_the_network() {
    // The provider's and the issuer's address: nothing may connect to it.
    let idp = TcpListener::bind("127.0.0.1:0").unwrap();
    idp.set_nonblocking(true).unwrap();
    let issuer = format!("http://{}", idp.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("session.secret"),
        format!("{SESSION_SECRET}\n"),
    )
    .unwrap();
    let config = format!(
        r#"[server]
listen = ["127.0.0.1:18080"]
public_url = "https://app.example.com"

[session]
store = "redis"
redis_url = "redis://gatehouse:{REDIS_PASSWORD}@127.0.0.1:6379/0"
secret_file = "session.secret"

[[idp]]
name = "corp"
issuer = "{issuer}"
client_id = "gatehouse"
client_secret = "{CLIENT_SECRET}"

[[bearer]]
issuer = "{issuer}"
audiences = ["api"]
introspection_endpoint = "{issuer}/introspect"
introspection_client_id = "gatehouse"
introspection_client_secret = "{INTROSPECTION_SECRET}"

[upstream.app]
servers = ["127.0.0.1:18081"]

[[route]]
name = "app"
path = "/"
upstream = "app"
auth = ["session"]
"#
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();

    let (ok, stdout, stderr) = show(&path);
    assert!(ok, "{stderr}");
    for secret in [
        SESSION_SECRET,
        CLIENT_SECRET,
        INTROSPECTION_SECRET,
        REDIS_PASSWORD,
    ] {
        assert!(!stdout.contains(secret), "{secret} shown:\n{stdout}");
        assert!(!stderr.contains(secret), "{secret} in stderr:\n{stderr}");
    }
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["session"]["secret"], "<redacted>");
    assert_eq!(v["session"]["secret_previous"], serde_json::Value::Null);
    assert_eq!(
        v["session"]["redis_url"],
        "redis://REDACTED:REDACTED@127.0.0.1:6379/0"
    );
    assert_eq!(v["idp"][0]["client_secret"], "<redacted>");
    assert_eq!(v["bearer"][0]["introspection_client_secret"], "<redacted>");
    // Defaults the file left out.
    assert_eq!(v["session"]["max_lifetime"], "28800s");
    assert_eq!(v["session"]["idle_timeout"], "3600s");
    assert_eq!(v["session"]["cookie_name"], "gatehouse");
    assert_eq!(v["server"]["reserved_prefix"], "/_gatehouse");
    assert_eq!(v["rate_limit_store"]["kind"], "memory");
    assert_eq!(v["rate_limit_store"]["timeout"], "100ms");
    assert_eq!(v["auth_failure_limit"]["enabled"], true);
    assert_eq!(v["upstream"]["app"]["connect_timeout"], "5s");
    assert_eq!(
        v["idp"][0]["scopes"],
        serde_json::json!(["openid", "profile", "email"])
    );
    // Offline: no discovery, no key fetch, no Redis.
    assert!(
        matches!(idp.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "config show connected to the provider"
    );
}

#[test]
fn an_invalid_config_is_refused_with_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = [\"127.0.0.1:18080\"]\n\n[session]\nsecret_file = \"missing\"\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = show(&path);
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("gateway.toml:5:15: cannot read secret_file"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_what_the_admin_listener_serves_at_config() {
    let app = TestServer::echo("app").await;
    let config = format!(
        "{}{}\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\nauth = [\"none\"]\n\n[[rate_limit]]\nname = \"per-ip\"\nkey = \"client_ip\"\nlimit = \"50/hour\"\n",
        base_config(""),
        upstream_block("app", &[app.addr], ""),
    );
    let gw = Gateway::start(&config);
    let served: serde_json::Value = serde_json::from_str(&gw.admin("/config").body).unwrap();
    let (ok, stdout, stderr) = show(&gw.config_path);
    assert!(ok, "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown, served);
}
