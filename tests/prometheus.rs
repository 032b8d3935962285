//! The observability assets: alert rules and scrape config pass `promtool`, the Grafana
//! dashboard is valid JSON over gatehouse metrics, and a real Prometheus scrapes a running
//! gateway and sees `gatehouse_` series arrive.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn alert_rules_and_scrape_config_pass_promtool() {
    for (what, file) in [
        ("rules", "deploy/prometheus/alerts.yml"),
        ("config", "deploy/prometheus/prometheus.yml"),
    ] {
        let out = Command::new("promtool")
            .args(["check", what])
            .arg(format!("{ROOT}/{file}"))
            .output()
            .expect("promtool (scripts/setup.sh installs prometheus)");
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn grafana_dashboard_queries_gatehouse_metrics() {
    let text = std::fs::read_to_string(format!("{ROOT}/deploy/grafana/gatehouse.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let exprs: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 10);
    for metric in [
        "gatehouse_requests_total",
        "gatehouse_request_duration_seconds_bucket",
        "gatehouse_auth_decisions_total",
        "gatehouse_rate_limited_total",
        "gatehouse_jwks_refresh_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "no panel uses {metric}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_gateway() {
    let app = EchoServer::echo("app").await;
    let gw = Gateway::start(&format!(
        "{}{}[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\nauth = [\"none\"]\n",
        base_config(""),
        upstream_block("app", &[app.addr], "")
    ));
    for _ in 0..3 {
        assert_eq!(gw.get("/", "").status, 200);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::copy(
        format!("{ROOT}/deploy/prometheus/alerts.yml"),
        dir.path().join("alerts.yml"),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\nscrape_configs:\n  - job_name: gatehouse\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n",
            gw.admin_port
        ),
    )
    .unwrap();
    let port = free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (scripts/setup.sh installs it)");
    let client = reqwest::Client::new();
    let query = |q: &'static str| {
        let client = client.clone();
        async move {
            let url = format!("http://127.0.0.1:{port}/api/v1/query");
            let resp = client.get(url).query(&[("query", q)]).send().await.ok()?;
            let body: serde_json::Value = resp.json().await.ok()?;
            let results = body["data"]["result"].as_array()?.clone();
            (!results.is_empty()).then_some(results)
        }
    };
    let mut found = None;
    for _ in 0..120 {
        if let Some(r) = query("gatehouse_requests_total{route=\"app\",status=\"200\"}").await {
            found = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let requests = found.expect("Prometheus never saw gatehouse_requests_total");
    assert_eq!(requests[0]["value"][1], "3");
    assert!(query("gatehouse_build_info").await.is_some());
    let up = query("up{job=\"gatehouse\"}").await.expect("up series");
    assert_eq!(up[0]["value"][1], "1");
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}
