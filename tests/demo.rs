//! `gatehouse demo`: the gateway, the whoami upstream and the development OIDC provider in
//! one process; a person opens the URL in a real browser, picks a user at the provider and
//! sees the identity headers and the policy at work. `gatehouse run` refuses the development
//! provider.

mod common;

use common::chromium;
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

/// `gatehouse demo` on free ports: the process (stopped on drop), its URL and log.
struct Demo {
    process: Stopped,
    base: String,
    admin: u16,
    idp: u16,
    log_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// Starts the demo and waits until it is ready (its provider discovered).
    async fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin, upstream, idp) = (free_port(), free_port(), free_port(), free_port());
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, demo_config(port, admin, upstream, idp)).unwrap();
        let log_path = dir.path().join("demo.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let process = Stopped(
            std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
                .args(["demo", "-c"])
                .arg(&path)
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let demo = Demo {
            process,
            base: format!("http://127.0.0.1:{port}"),
            admin,
            idp,
            log_path,
            _dir: dir,
        };
        for _ in 0..300 {
            let ready = raw_request(
                demo.admin,
                b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .is_some_and(|r| r.status == 200);
            if ready {
                return demo;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the demo did not become ready:\n{}", demo.printed());
    }

    fn printed(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// A person tries the demo in Chromium: opens the printed URL, picks bob at the development
/// provider, sees whoami with his identity headers and the 403 page on the admin area, signs
/// out, picks alice, enters the admin area, signs out. Screenshots of the pages go to
/// `$GATEHOUSE_SCREENSHOTS` when set (docs/screenshots/ holds the committed ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_tries_the_demo_in_chromium() {
    let mut demo = Demo::start().await;
    let shots = tempfile::tempdir().unwrap();
    let shot_dir = std::env::var("GATEHOUSE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| shots.path().to_path_buf());
    let idp = format!("http://127.0.0.1:{}", demo.idp);
    let base = demo.base.clone();
    let flow = chromium::run(
        "demo",
        &serde_json::json!({"base": base, "shots": shot_dir}),
        std::time::Duration::from_secs(120),
        || demo.printed(),
    )
    .await;
    let printed = demo.printed();

    // The URL leads to the provider's user picker.
    assert_eq!(flow.status("picker"), 200);
    assert!(flow.url("picker").starts_with(&format!("{idp}/authorize?")));
    for user in ["alice", "bob", "carol"] {
        assert!(flow.text("picker").contains(user), "{}", flow.output);
    }
    // bob lands on whoami, with his identity as the upstream received it.
    assert_eq!(flow.url("bob"), format!("{base}/"), "{}", flow.output);
    let whoami = flow.text("bob");
    for row in [
        "x-auth-request-user\tbob",
        "x-auth-request-groups\tstaff",
        "x-auth-request-email\tbob@demo.invalid",
    ] {
        assert!(whoami.contains(row), "{row}: {whoami}");
    }
    assert!(whoami.contains("x-gatehouse-assertion\teyJ"), "{whoami}");
    assert!(
        !whoami.contains("cookie\t"),
        "the session cookie reached the upstream"
    );
    // The admin area is alice's: bob gets the gateway's 403 page, generic and styled.
    assert_eq!(flow.status("bob-admin"), 403);
    assert_eq!(flow.step("bob-admin")["title"], "403 Forbidden");
    let forbidden = flow.text("bob-admin");
    assert!(forbidden.contains("Request id"), "{forbidden}");
    for internal in ["admin area", "demo:admin", "policy", "bob"] {
        assert!(!forbidden.contains(internal), "{internal} in {forbidden}");
    }
    // Signing out: the gateway asks, the POST ends the session at the gateway and at the
    // provider, and the app sends the browser back to the picker.
    assert_eq!(
        flow.url("logout-confirm"),
        format!("{base}/_gatehouse/logout")
    );
    assert!(flow.text("logout-confirm").contains("Sign out?"));
    assert!(flow.text("logout-confirm").contains("bob"));
    let out = flow.visited("bob-signed-out");
    assert!(
        out.first()
            .is_some_and(|v| v.starts_with(&format!("POST 303 {base}/_gatehouse/logout"))),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|v| v.contains(&format!("{idp}/end_session"))),
        "{out:?}"
    );
    assert!(flow
        .url("bob-signed-out")
        .starts_with(&format!("{idp}/authorize?")));
    // alice: an admin.
    assert!(flow.text("alice").contains("x-auth-request-user\talice"));
    assert!(flow
        .text("alice")
        .contains("x-auth-request-groups\tadmins,staff"));
    assert_eq!(flow.status("alice-admin"), 200);
    assert!(flow.text("alice-admin").contains("GET /admin/settings"));
    assert!(flow
        .text("alice-admin")
        .contains("x-auth-request-user\talice"));
    assert!(flow
        .url("alice-signed-out")
        .starts_with(&format!("{idp}/authorize?")));
    assert_eq!(flow.status("after-logout"), 401, "{}", flow.output);
    // Every form and redirect passed the pages' own Content-Security-Policy.
    assert_eq!(flow.csp_violations(), Vec::<String>::new());
    for shot in ["login", "whoami", "forbidden", "logout"] {
        let png = std::fs::read(shot_dir.join(format!("{shot}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{shot}.png");
    }
    // The assertion's keys are published.
    let jwks = reqwest::get(format!("{base}/_gatehouse/jwks.json"))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");

    demo.process.stop();
    assert!(
        printed.contains(&format!("open        {base}/")),
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
