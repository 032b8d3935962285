//! `gatehouse demo`: the gateway, the whoami upstream and the development OIDC provider in
//! one process; a person opens the URL, picks a user at the provider and sees the identity
//! headers and the policy at work. `gatehouse run` refuses the development provider.

mod common;

use common::browser::{form, Browser};
use common::*;

/// The demo process, stopped when the test ends, also when it fails.
struct Stopped(std::process::Child);

impl Stopped {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.stop();
    }
}

fn demo_config(port: u16, admin: u16, upstream: u16, idp: u16) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{upstream}"))
        .replace("127.0.0.1:8082", &format!("127.0.0.1:{idp}"))
        .replace(
            "policies/demo.toml",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies/demo.toml"),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_logs_people_in_with_its_development_provider() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin, upstream, idp) = (free_port(), free_port(), free_port(), free_port());
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, demo_config(port, admin, upstream, idp)).unwrap();
    let log_path = dir.path().join("demo.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Stopped(
        std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["demo", "-c"])
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let printed = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let base = format!("http://127.0.0.1:{port}");
    let browser = Browser::new();
    // Wait until the demo is ready (its provider discovered), then navigate: a redirect.
    let mut first = None;
    for _ in 0..200 {
        let ready = raw_request(
            admin,
            b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .is_some_and(|r| r.status == 200);
        if ready {
            let p = browser.get(&format!("{base}/users/alice/profile")).await;
            assert_eq!(p.status, 302, "{}", p.body);
            first = Some(p);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let first = first
        .unwrap_or_else(|| panic!("the demo did not redirect to its provider:\n{}", printed()));
    let picker = browser.get(&first.location().unwrap()).await;
    assert_eq!(picker.status, 200, "{}", picker.body);
    assert!(picker.body.contains("value=\"alice\"") && picker.body.contains("value=\"bob\""));
    let (action, mut fields) = form(&picker).unwrap();
    fields.push(("user".into(), "alice".into()));
    let back = browser.post_form(&action, &fields).await;
    assert_eq!(back.status, 302);
    let (page, visited) = browser.follow(&back.location().unwrap()).await;
    assert_eq!(page.status, 200, "{visited:?} {}\n{}", page.body, printed());
    assert_eq!(page.url, format!("{base}/users/alice/profile"));
    assert!(
        page.body.contains("x-auth-request-user") && page.body.contains("alice"),
        "{}",
        page.body
    );
    assert!(page.body.contains("admins,staff"));
    assert!(page.body.contains("x-gatehouse-assertion"));
    // The policy at work: alice is an admin and may not read bob's profile.
    assert_eq!(browser.get(&format!("{base}/admin/")).await.status, 200);
    assert_eq!(
        browser
            .get(&format!("{base}/users/bob/profile"))
            .await
            .status,
        403
    );
    // The assertion's keys are published.
    let jwks = browser.fetch(&format!("{base}/_gatehouse/jwks.json")).await;
    assert_eq!(jwks.json()["keys"][0]["alg"], "ES256");
    // Logging out goes through the provider's end-session back to the app.
    let out = browser.get(&format!("{base}/_gatehouse/logout")).await;
    assert_eq!(out.status, 302);
    let (_, visited) = browser.follow(&out.location().unwrap()).await;
    assert!(
        visited
            .iter()
            .any(|u| u.contains(&format!("127.0.0.1:{idp}/end_session"))),
        "{visited:?}"
    );

    child.stop();
    let printed = printed();
    assert!(
        printed.contains(&format!("http://127.0.0.1:{port}/")),
        "the demo prints its URL:\n{printed}"
    );
    assert!(printed.contains("development OIDC provider"), "{printed}");
}

#[test]
fn run_refuses_the_development_provider() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        demo_config(free_port(), free_port(), free_port(), free_port()),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "-c"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[dev_idp]") && err.contains("gatehouse demo"),
        "{err}"
    );
}
