//! Assembles a Pingora server from a validated config: the proxy service on the public
//! listeners, the admin service, and the supervisor; then runs it until SIGTERM.

use std::path::Path;
use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::Config;
use crate::front::ext_authz_grpc::GrpcListener;
use crate::front::proxy::GatehouseProxy;
use crate::gateway::{Gateway, Runtime, Supervisor};
use crate::metrics::Metrics;

/// Process-level switches from the command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Take the listening sockets over from a running instance (Pingora graceful upgrade).
    pub upgrade: bool,
    /// The Unix socket the sockets are handed over on.
    pub upgrade_sock: String,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            upgrade: false,
            upgrade_sock: "/tmp/gatehouse_upgrade.sock".to_string(),
        }
    }
}

/// Extra services a caller runs in the same process (the demo's upstream).
pub type ExtraService = Box<dyn pingora::services::ServiceWithDependents>;

/// Builds everything and blocks serving until the process is told to stop.
pub fn run(
    config: Config,
    config_path: &Path,
    options: RunOptions,
    extra: Vec<ExtraService>,
) -> Result<(), String> {
    // SIGHUP's default action ends the process; take it over before anything can send it.
    install_hangup_guard()?;
    let startup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let metrics = Arc::new(Metrics::new());
    crate::otel::init(&config.tracing)?;
    let server_config = config.server.clone();
    let admin_listen = config.admin.listen;
    let grpc_listen = config.ext_authz.grpc_listen;
    let grpc_tls = config.ext_authz.grpc_tls.clone();
    let runtime = startup.block_on(Runtime::build(config, None, &metrics))?;
    let gateway = Arc::new(Gateway::new(runtime, metrics, config_path.to_path_buf()));

    let conf = ServerConf {
        threads: server_config.threads,
        // Pingora lets in-flight requests run during its grace period and then drops them;
        // the supervisor ends the process as soon as they are done, so this is only a bound.
        grace_period_seconds: Some(server_config.shutdown_timeout.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: std::env::temp_dir()
            .join(format!("gatehouse-{}.pid", std::process::id()))
            .to_string_lossy()
            .into_owned(),
        upgrade_sock: options.upgrade_sock.clone(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade: options.upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let mut proxy = http_proxy_service_with_name(
        &server.configuration,
        GatehouseProxy {
            gateway: gateway.clone(),
        },
        "gatehouse",
    );
    if let Some(app) = proxy.app_logic_mut() {
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = server_config.h2c;
        app.server_options = Some(options);
    }
    for addr in &server_config.listen {
        proxy.add_tcp(&addr.to_string());
    }
    if let Some(tls) = &server_config.tls {
        let cert = tls.cert.to_string_lossy();
        let key = tls.key.to_string_lossy();
        for addr in &tls.listen {
            let mut settings = TlsSettings::intermediate(&cert, &key)
                .map_err(|e| format!("TLS listener {addr}: {e}"))?;
            settings.enable_h2();
            proxy.add_tls_with_settings(&addr.to_string(), None, settings);
        }
    }

    let mut admin = Service::new(
        "gatehouse admin".to_string(),
        AdminApp {
            gateway: gateway.clone(),
        },
    );
    admin.add_tcp(&admin_listen.to_string());
    admin.threads = Some(1);

    // Bound now, so that a taken address fails the start instead of a background task.
    let ext_authz_grpc = grpc_listen
        .map(|addr| GrpcListener::bind(gateway.clone(), addr, grpc_tls.as_ref(), options.upgrade))
        .transpose()?
        .map(|listener| background_service("gatehouse ext_authz gRPC", listener));

    let supervisor = background_service("gatehouse supervisor", Supervisor { gateway });

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(supervisor);
    if let Some(service) = ext_authz_grpc {
        server.add_service(service);
    }
    for service in extra {
        server.add_boxed_service(service);
    }
    drop(startup);
    tracing::info!(
        listen = ?server_config.listen,
        tls = ?server_config.tls.as_ref().map(|t| &t.listen),
        admin = %admin_listen,
        ext_authz_grpc = ?grpc_listen,
        ext_authz_grpc_tls = grpc_tls.is_some(),
        "gatehouse started"
    );
    server.run_forever()
}

fn install_hangup_guard() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map(drop)
    })
    .map_err(|e| format!("cannot handle SIGHUP: {e}"))
}
