//! `gatehouse demo`: the repo's `gateway.toml` in front of a built-in "whoami" upstream, all on
//! loopback, so one command shows what the gateway does to a request.

mod idp;
mod whoami;

use std::net::SocketAddr;
use std::path::Path;

use pingora::services::listening::Service;

use crate::config::Config;
use crate::server::{self, ExtraService, RunOptions};

/// The config the demo runs when no `gateway.toml` is at hand: the repo's own.
pub const BUILTIN_CONFIG: &str = include_str!("../../gateway.toml");

pub fn run(config_path: &Path) -> Result<(), String> {
    let (config, path) = if config_path.exists() {
        (
            Config::load(config_path).map_err(|e| e.to_string())?,
            config_path.to_path_buf(),
        )
    } else {
        // Relative paths in the built-in config (its policy) resolve in the source tree.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
        let env = |name: &str| std::env::var(name).ok();
        (
            Config::from_str(&path, BUILTIN_CONFIG, &env).map_err(|e| e.to_string())?,
            path,
        )
    };
    crate::telemetry::init(&config.log);
    let listen: Vec<SocketAddr> = config.server.listen.clone();
    if let Some(bad) = listen.iter().find(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "the demo binds loopback only, but the config listens on {bad}"
        ));
    }
    let mut extra: Vec<ExtraService> = Vec::new();
    let mut started = Vec::new();
    for up in config.upstreams.values() {
        for s in &up.servers {
            let Ok(ip) = s.host.parse::<std::net::IpAddr>() else {
                continue;
            };
            let addr = SocketAddr::new(ip, s.port);
            if ip.is_loopback() && !started.contains(&addr) {
                let mut service = Service::new(format!("demo whoami {addr}"), whoami::Whoami);
                service.add_tcp(&addr.to_string());
                service.threads = Some(1);
                extra.push(Box::new(service));
                started.push(addr);
            }
        }
    }
    let mut dev_idp = None;
    if let Some(dev) = &config.dev_idp {
        let provider = idp::DevIdp::new(dev, &config)?;
        let mut service = Service::new("demo OIDC provider".to_string(), provider);
        service.add_tcp(&dev.listen.to_string());
        service.threads = Some(1);
        extra.push(Box::new(service));
        dev_idp = Some(dev.listen);
    }
    let url = listen
        .first()
        .map(|a| format!("http://{a}/"))
        .unwrap_or_else(|| "(no plain listener configured)".to_string());
    println!("gatehouse demo");
    println!("  open        {url}");
    println!("  metrics     http://{}/metrics", config.admin.listen);
    println!(
        "  upstream    whoami on {}",
        started
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(addr) = dev_idp {
        println!("  login       development OIDC provider on http://{addr} (pick a user)");
    }
    println!("  stop        Ctrl-C");
    server::run(config, &path, RunOptions::default(), extra)
}
