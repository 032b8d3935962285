//! Upstream pools: the servers of one `[upstream.NAME]`, resolved asynchronously,
//! round-robin load balanced and health-checked, and the peer options to reach them.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::tls::pkey::PKey;
use pingora::tls::x509::X509;
use pingora::utils::tls::CertKey;
use pingora::{Error, ErrorType, OrErr, Result};

use crate::config::{ServerAddr, UpstreamConfig};

/// Backends of one upstream, shared by every request routed to it.
pub struct UpstreamPool {
    pub config: UpstreamConfig,
    balancer: LoadBalancer<RoundRobin>,
    /// The servers that passed their last health check; requests take turns over them.
    /// Rebuilt after every check (only [`UpstreamPool::refresh`] runs them), so picking one
    /// costs no lock, hash or set per request.
    healthy: ArcSwap<Vec<SocketAddr>>,
    turn: AtomicUsize,
    ca: Option<Arc<Box<[X509]>>>,
    client_cert: Option<Arc<CertKey>>,
}

impl UpstreamPool {
    /// Builds the pool and resolves its servers once, so it can serve as soon as it exists.
    pub async fn new(config: UpstreamConfig) -> Result<Self> {
        let discovery = DnsDiscovery {
            servers: config.servers.clone(),
        };
        let mut balancer = LoadBalancer::from_backends(Backends::new(Box::new(discovery)));
        // A plain TCP connect: TLS problems (certificates, mTLS) show on the requests as 502
        // with their reason in the log, instead of silently emptying the pool.
        let mut check = TcpHealthCheck::new();
        // A black-holed server must not stall the health loop for the OS connect timeout.
        check.peer_template.options.connection_timeout = Some(config.connect_timeout);
        balancer.set_health_check(check);
        balancer.health_check_frequency = Some(config.health_check_interval);
        balancer.update_frequency = Some(std::time::Duration::from_secs(30));
        balancer.update().await?;
        let ca = match &config.ca {
            Some(path) => {
                let pem = std::fs::read(path).or_err(ErrorType::FileReadError, "upstream CA")?;
                let certs = X509::stack_from_pem(&pem)
                    .or_err(ErrorType::InvalidCert, "upstream CA is not PEM")?;
                Some(Arc::new(certs.into_boxed_slice()))
            }
            None => None,
        };
        let client_cert = match &config.client_cert {
            Some((cert, key)) => {
                let cert_pem =
                    std::fs::read(cert).or_err(ErrorType::FileReadError, "client cert")?;
                let key_pem = std::fs::read(key).or_err(ErrorType::FileReadError, "client key")?;
                let certs = X509::stack_from_pem(&cert_pem)
                    .or_err(ErrorType::InvalidCert, "client cert is not PEM")?;
                let key = PKey::private_key_from_pem(&key_pem)
                    .or_err(ErrorType::InvalidCert, "client key is not PEM")?;
                Some(Arc::new(CertKey::new(certs, key)))
            }
            None => None,
        };
        let pool = UpstreamPool {
            config,
            balancer,
            healthy: ArcSwap::from_pointee(Vec::new()),
            turn: AtomicUsize::new(0),
            ca,
            client_cert,
        };
        pool.healthy.store(Arc::new(pool.healthy_servers()));
        Ok(pool)
    }

    /// Picks a healthy server not in `avoid` (the ones that already failed this request),
    /// round-robin.
    pub fn select(&self, avoid: &[SocketAddr]) -> Option<SocketAddr> {
        let healthy = self.healthy.load();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        (0..healthy.len())
            .map(|i| healthy[start.wrapping_add(i) % healthy.len()])
            .find(|addr| !avoid.contains(addr))
    }

    fn healthy_servers(&self) -> Vec<SocketAddr> {
        let backends = self.balancer.backends();
        backends
            .get_backend()
            .iter()
            .filter(|b| backends.ready(b))
            .filter_map(|b| b.addr.as_inet().copied())
            .collect()
    }

    pub fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, self.config.tls, self.config.sni.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.config.connect_timeout);
        o.total_connection_timeout = Some(self.config.connect_timeout * 2);
        o.read_timeout = Some(self.config.read_timeout);
        o.write_timeout = Some(self.config.write_timeout);
        o.idle_timeout = Some(std::time::Duration::from_secs(60));
        if self.config.tls {
            o.verify_cert = true;
            o.verify_hostname = true;
            o.ca = self.ca.clone();
            peer.client_cert_key = self.client_cert.clone();
        }
        peer
    }

    /// Re-resolves names and probes every server; called periodically by the health task.
    pub async fn refresh(&self, resolve: bool) {
        if resolve {
            if let Err(e) = self.balancer.update().await {
                tracing::warn!(upstream = %self.config.name, error = %e, "resolving upstream servers failed; keeping the last set");
            }
        }
        self.balancer.backends().run_health_check(true).await;
        self.healthy.store(Arc::new(self.healthy_servers()));
    }

    pub fn healthy_count(&self) -> usize {
        self.healthy.load().len()
    }
}

/// Resolves `host:port` with tokio's resolver, never blocking a worker thread.
struct DnsDiscovery {
    servers: Vec<ServerAddr>,
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut backends = BTreeSet::new();
        let mut last_error = None;
        for server in &self.servers {
            let target = (server.host.as_str(), server.port);
            match tokio::net::lookup_host(target).await {
                Ok(addrs) => {
                    for addr in addrs {
                        backends.insert(Backend {
                            addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
                            weight: 1,
                            ext: http::Extensions::new(),
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(host = %server.host, error = %e, "cannot resolve upstream server");
                    last_error = Some(e);
                }
            }
        }
        if backends.is_empty() {
            if let Some(e) = last_error {
                return Error::e_because(
                    ErrorType::ConnectNoRoute,
                    "no upstream server resolved",
                    e,
                );
            }
        }
        Ok((backends, HashMap::new()))
    }
}
