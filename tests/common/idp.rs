//! A real OpenID provider for end-to-end tests: the npm package `oidc-provider`, run with
//! Node from `tests/idp/provider.mjs` (installed by `scripts/setup.sh`) on a loopback port.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub struct OidcProvider {
    pub issuer: String,
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl OidcProvider {
    /// Starts the provider with `config` (see provider.mjs) and waits until it listens; a
    /// start that fails (the port taken meanwhile, a slow machine) is tried again on
    /// another port, three times at most.
    pub fn start(config: Value) -> OidcProvider {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("idp.json");
        std::fs::write(&config_path, config.to_string()).expect("write idp config");
        let mut errors = Vec::new();
        for _ in 0..3 {
            let port = super::free_port();
            match Self::try_start(&config_path, port) {
                Ok((child, issuer)) => {
                    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
                    let mut child = child;
                    if let Some(e) = child.stderr.take() {
                        let sink = stderr.clone();
                        std::thread::spawn(move || {
                            for line in BufReader::new(e).lines().map_while(Result::ok) {
                                if let Ok(mut s) = sink.lock() {
                                    s.push_str(&line);
                                    s.push('\n');
                                }
                            }
                        });
                    }
                    return OidcProvider {
                        issuer,
                        port,
                        child,
                        _dir: dir,
                        stderr,
                    };
                }
                Err(e) => errors.push(e),
            }
        }
        panic!("oidc-provider did not start:\n{}", errors.join("\n---\n"));
    }

    fn try_start(config_path: &std::path::Path, port: u16) -> Result<(Child, String), String> {
        let mut child = Command::new("node")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/idp/provider.mjs"
            ))
            .args(["--port", &port.to_string(), "--config"])
            .arg(config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node (run scripts/setup.sh to install it and oidc-provider)");
        let stdout = child.stdout.take().expect("provider stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("READY ") {
                    let _ = tx.send(line);
                }
            }
        });
        // Bounded: up to 45 s for READY, or the process ends (it exits on a listen error).
        let deadline = std::time::Instant::now() + Duration::from_secs(45);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                return Ok((child, line.trim_start_matches("READY ").to_string()));
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        Err(format!("port {port}: {err}"))
    }

    /// What the provider wrote to stderr (its error events).
    pub fn output(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// A client-credentials access token for `resource` (client_secret_basic).
    pub async fn client_credentials_token(
        &self,
        client_id: &str,
        secret: &str,
        resource: &str,
        scope: Option<&str>,
    ) -> String {
        let client = reqwest::Client::new();
        let mut form = vec![("grant_type", "client_credentials"), ("resource", resource)];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let resp = client
            .post(format!("{}/token", self.issuer))
            .basic_auth(client_id, Some(secret))
            .form(&form)
            .send()
            .await
            .expect("token request");
        let status = resp.status();
        let body: Value = resp.json().await.expect("token response JSON");
        assert!(
            status.is_success(),
            "token endpoint answered {status}: {body}"
        );
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
