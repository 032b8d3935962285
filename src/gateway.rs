//! The state a running gateway swaps on reload: the validated config and everything compiled
//! from it. Requests take one snapshot at their start, so a reload never changes the rules
//! under a request in flight.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::HeaderName;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::authn::Authenticator;
use crate::config::{Config, ConfigError};
use crate::login::assertion::AssertionSigner;
use crate::login::Login;
use crate::metrics::{Metrics, RouteMetrics, NO_ROUTE};
use crate::ratelimit::{AuthFailures, RateLimiter};
use crate::respond::SecurityHeaders;
use crate::route::RouteTable;
use crate::upstream::UpstreamPool;

/// Everything compiled from one config.
pub struct Runtime {
    pub config: Arc<Config>,
    pub auth: Authenticator,
    pub routes: RouteTable,
    pub pools: HashMap<String, Arc<UpstreamPool>>,
    /// The header names no client may send (identity, claim-mapped), compiled once.
    pub header_rules: crate::hygiene::HeaderRules,
    /// Per-route request metrics, by route index; the last one is for unrouted requests.
    pub route_metrics: Vec<RouteMetrics>,
    pub security_headers: SecurityHeaders,
    pub limiter: Arc<RateLimiter>,
    pub auth_failures: Arc<AuthFailures>,
    /// Browser login and sessions, when the config has an `[[idp]]`.
    pub login: Option<Arc<Login>>,
    /// Signs `X-Gatehouse-Assertion` when `headers.assertion` is on.
    pub signer: Option<Arc<AssertionSigner>>,
    /// The DPoP server nonces of routes with `dpop_nonce` (RFC 9449 §9).
    pub dpop_nonces: Arc<crate::authn::dpop::NonceKey>,
}

impl Runtime {
    /// Compiles a config; pools whose upstream config did not change are carried over from
    /// `previous` with their health state.
    pub async fn build(
        config: Config,
        previous: Option<&Runtime>,
        metrics: &Arc<Metrics>,
    ) -> Result<Runtime, String> {
        let mut pools = HashMap::new();
        for (name, up) in &config.upstreams {
            let reused = previous
                .and_then(|p| p.pools.get(name))
                .filter(|p| p.config == *up)
                .cloned();
            let pool = match reused {
                Some(p) => p,
                None => Arc::new(
                    UpstreamPool::new(up.clone())
                        .await
                        .map_err(|e| format!("upstream {name}: {e}"))?,
                ),
            };
            pools.insert(name.clone(), pool);
        }
        let auth = Authenticator::build(&config, previous.map(|p| &p.auth), metrics).await;
        let route_metrics = config
            .routes
            .iter()
            .map(|r| r.name.as_str())
            .chain([NO_ROUTE])
            .map(|name| RouteMetrics::new(metrics, name))
            .collect();
        // Counters survive a reload unless their store or settings changed.
        let limiter = match previous {
            Some(p) if p.limiter.config == config.rate_limit_store => p.limiter.clone(),
            _ => Arc::new(RateLimiter::new(&config.rate_limit_store)?),
        };
        let auth_failures = match previous {
            Some(p) if p.config.auth_failure_limit == config.auth_failure_limit => {
                p.auth_failures.clone()
            }
            _ => Arc::new(AuthFailures::new(&config.auth_failure_limit)),
        };
        let login = Login::build(&config, previous.and_then(|p| p.login.as_ref()), metrics).await?;
        let signer = if config.headers.assertion {
            let issuer = config
                .server
                .public_url
                .clone()
                .unwrap_or_else(|| "gatehouse".to_string());
            let source = (
                config.headers.assertion_key.clone(),
                config.headers.assertion_ttl,
                issuer.clone(),
            );
            match previous
                .and_then(|p| p.signer.as_ref())
                .filter(|s| s.source == source)
            {
                Some(s) => Some(s.clone()),
                None => Some(Arc::new(AssertionSigner::new(&config.headers, &issuer)?)),
            }
        } else {
            None
        };
        // Keyed by the session secret; without one, the process's key survives reloads.
        let secret = config.session.secret.as_deref();
        let dpop_nonces = match previous {
            Some(p) if secret.is_none() && p.config.session.secret.is_none() => {
                p.dpop_nonces.clone()
            }
            _ => Arc::new(crate::authn::dpop::NonceKey::new(secret)),
        };
        Ok(Runtime {
            dpop_nonces,
            login,
            signer,
            limiter,
            auth_failures,
            security_headers: SecurityHeaders::new(&config.security_headers),
            route_metrics,
            auth,
            routes: RouteTable::new(&config.routes),
            header_rules: crate::hygiene::HeaderRules::new(
                &config
                    .headers
                    .claims
                    .iter()
                    .map(|(h, _)| h.clone())
                    .collect::<Vec<HeaderName>>(),
            ),
            pools,
            config: Arc::new(config),
        })
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("{0}")]
    Build(String),
}

pub struct Gateway {
    current: ArcSwap<Runtime>,
    pub metrics: Arc<Metrics>,
    in_flight: Arc<AtomicUsize>,
    config_path: PathBuf,
    reloading: tokio::sync::Mutex<()>,
}

impl Gateway {
    pub fn new(runtime: Runtime, metrics: Arc<Metrics>, config_path: PathBuf) -> Self {
        Gateway {
            current: ArcSwap::from_pointee(runtime),
            metrics,
            in_flight: Arc::new(AtomicUsize::new(0)),
            config_path,
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn request_started(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Re-reads the config file; the new config replaces the old only when it is valid.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = self.try_reload().await;
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics
            .config_reloads_total
            .with_label_values(&[label])
            .inc();
        match &result {
            Ok(()) => tracing::info!(config = %self.config_path.display(), "config reloaded"),
            Err(e) => tracing::error!(
                config = %self.config_path.display(),
                error = %e,
                "config reload refused; the previous config stays in force"
            ),
        }
        result
    }

    async fn try_reload(&self) -> Result<(), ReloadError> {
        let path = self.config_path.clone();
        let config = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| ReloadError::Build(e.to_string()))??;
        let old = self.snapshot();
        for key in old.config.restart_only_differences(&config) {
            tracing::warn!(
                key,
                "changed in config but only takes effect after a restart"
            );
        }
        let runtime = Runtime::build(config, Some(&old), &self.metrics)
            .await
            .map_err(ReloadError::Build)?;
        self.current.store(Arc::new(runtime));
        Ok(())
    }
}

/// Held by every request from its start to its access-log line.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Background duties: SIGHUP reloads, periodic upstream health checks and DNS refresh.
pub struct Supervisor {
    pub gateway: Arc<Gateway>,
}

const RESOLVE_EVERY: Duration = Duration::from_secs(30);

impl Supervisor {
    /// After SIGTERM the listeners are closed; waits for the requests in flight (bounded by
    /// `shutdown_timeout`), then ends the process instead of sitting out Pingora's fixed
    /// grace period.
    async fn drain(&self) {
        let limit = self.gateway.snapshot().config.server.shutdown_timeout;
        let deadline = Instant::now() + limit;
        tracing::info!(
            in_flight = self.gateway.in_flight(),
            "shutting down: draining requests in flight"
        );
        while self.gateway.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.gateway.in_flight();
        if left > 0 {
            tracing::warn!(
                left,
                "shutdown timeout reached; cutting the remaining requests"
            );
        } else {
            tracing::info!("all requests finished; exiting");
        }
        std::process::exit(0);
    }
}

#[async_trait]
impl BackgroundService for Supervisor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload is unavailable");
                None
            }
        };
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Servers count as healthy until a check says otherwise; the first check waits one
        // interval, so upstreams starting alongside the gateway (the demo's) are not marked
        // down by a check that ran before they listened.
        let mut last_check: HashMap<String, Instant> = self
            .gateway
            .snapshot()
            .pools
            .keys()
            .map(|name| (name.clone(), Instant::now()))
            .collect();
        let mut last_resolve = Instant::now();
        let mut last_sessions = Instant::now() - Duration::from_secs(60);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return self.drain().await,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let _ = self.gateway.reload().await;
                }
                _ = tick.tick() => {
                    let runtime = self.gateway.snapshot();
                    let resolve = last_resolve.elapsed() >= RESOLVE_EVERY;
                    if resolve {
                        last_resolve = Instant::now();
                    }
                    for (name, pool) in &runtime.pools {
                        let due = last_check
                            .get(name)
                            .is_none_or(|t| t.elapsed() >= pool.config.health_check_interval);
                        if due || resolve {
                            last_check.insert(name.clone(), Instant::now());
                            pool.refresh(resolve).await;
                            self.gateway
                                .metrics
                                .upstream_healthy_servers
                                .with_label_values(&[name])
                                .set(pool.healthy_count() as i64);
                        }
                    }
                    last_check.retain(|name, _| runtime.pools.contains_key(name));
                    if resolve {
                        runtime.limiter.sweep();
                        if let Some(keys) = runtime.limiter.memory_keys() {
                            self.gateway.metrics.rate_limit_keys.set(keys as i64);
                        }
                    }
                    for store in &runtime.auth.bearer.issuers {
                        if store.refresh_due() {
                            store.refresh().await;
                        }
                    }
                    if let Some(login) = &runtime.login {
                        for provider in &login.providers {
                            provider.maintain().await;
                        }
                        if last_sessions.elapsed() >= Duration::from_secs(5) {
                            last_sessions = Instant::now();
                            if let Ok(n) = login.store.count().await {
                                self.gateway.metrics.sessions_active.set(n as i64);
                            }
                        }
                    }
                }
            }
        }
    }
}
