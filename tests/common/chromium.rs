//! A real browser: runs a scenario of `tests/idp/browser-flows.mjs` (Chromium driven by
//! playwright-core, installed by `scripts/setup.sh`) and returns what each step showed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What the browser saw: one step per page (see browser-flows.mjs).
pub struct Flow {
    pub steps: Vec<Value>,
    pub cookies: Vec<Value>,
    /// Everything the script printed, for failure messages.
    pub output: String,
}

impl Flow {
    pub fn step(&self, name: &str) -> &Value {
        self.steps
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name}:\n{}", self.output))
    }

    /// The step's page text.
    pub fn text(&self, name: &str) -> &str {
        self.step(name)["text"].as_str().unwrap_or("")
    }

    pub fn status(&self, name: &str) -> u64 {
        self.step(name)["status"].as_u64().unwrap_or(0)
    }

    pub fn url(&self, name: &str) -> &str {
        self.step(name)["url"].as_str().unwrap_or("")
    }

    /// The navigations (`METHOD STATUS URL`) that led to the step.
    pub fn visited(&self, name: &str) -> Vec<&str> {
        self.step(name)["visited"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// The step's page as JSON (the echo upstream's answer).
    pub fn json(&self, name: &str) -> Value {
        serde_json::from_str(self.text(name))
            .unwrap_or_else(|_| panic!("step {name} is not JSON:\n{}", self.output))
    }

    /// Header `name` as the echo upstream received it on the step's page.
    pub fn echoed(&self, step: &str, name: &str) -> Option<String> {
        self.json(step)["headers"]
            .as_array()?
            .iter()
            .find(|h| h[0] == name)
            .and_then(|h| h[1].as_str().map(str::to_string))
    }

    /// Content-Security-Policy reports and the like from every step's console.
    pub fn csp_violations(&self) -> Vec<String> {
        self.steps
            .iter()
            .flat_map(|s| s["console"].as_array().cloned().unwrap_or_default())
            .filter_map(|l| l.as_str().map(str::to_string))
            .filter(|l| l.contains("Content Security Policy") || l.contains("violates"))
            .collect()
    }
}

/// Runs `scenario` with `options`; panics (with the script's output and `context()`) when
/// the browser could not finish it within `limit`.
pub async fn run(
    scenario: &str,
    options: &Value,
    limit: Duration,
    context: impl Fn() -> String,
) -> Flow {
    let mut child = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/idp/browser-flows.mjs"
        ))
        .arg(scenario)
        .arg(options.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (scripts/setup.sh installs it, playwright-core and chromium)");
    // Read both pipes while the browser runs, so a long page text cannot block it.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let output = format!("{out}\n{err}");
    let Some(status) = status else {
        panic!(
            "the browser did not finish {scenario} in {limit:?}:\n{output}\n{}",
            context()
        );
    };
    let result: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    assert!(
        status.success() && result.is_object(),
        "browser scenario {scenario} failed:\n{}\n{err}\n{}",
        serde_json::to_string_pretty(&result).unwrap_or(out.clone()),
        context()
    );
    Flow {
        steps: result["steps"].as_array().cloned().unwrap_or_default(),
        cookies: result["cookies"].as_array().cloned().unwrap_or_default(),
        output,
    }
}
