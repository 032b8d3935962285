//! A real browser logs in: Chromium, driven by playwright-core, opens a protected page of
//! the gateway, logs in through the real provider's form, and sees the upstream's page with
//! the identity the gateway forwarded.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::login::{login_config, provider_for};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_logs_in_through_the_provider() {
    let port = free_port();
    let idp = provider_for(&[port], 600);
    let app = TestServer::echo("app").await;
    let gw = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        &login_config(&idp, &app, ""),
        port,
    );
    let mut child = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/idp/browser-login.mjs"
        ))
        .arg(gw.url("/reports/q3?view=full"))
        .arg("alice")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (scripts/setup.sh installs it, playwright-core and chromium)");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the browser did not finish in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        status.success(),
        "browser script failed:\n{err}\n{out}\n{}",
        gw.log()
    );
    let result: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(result["url"], gw.url("/reports/q3?view=full"), "{result}");
    let body = result["body"].as_str().unwrap();
    let page: serde_json::Value = serde_json::from_str(body).expect(body);
    let header = |name: &str| {
        page["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
    };
    assert_eq!(header("x-auth-request-user").as_deref(), Some("alice"));
    assert_eq!(
        header("x-auth-request-groups").as_deref(),
        Some("admins,staff")
    );
    let session = result["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "gatehouse")
        .cloned();
    let session = session.expect("the browser holds the session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Lax");
    assert_eq!(session["path"], "/");
}
