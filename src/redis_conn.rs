//! The one Redis connection layer of the rate-limit and session stores: where Redis is
//! ([`RedisTarget`]: a TCP address, TLS with a CA of its own, a Unix socket, or a master named
//! by Sentinels), and one lazily opened, reconnecting connection to it ([`LazyRedis`]), shared
//! by every store of the process that names the same target.
//!
//! Every call waits at most `timeout` in all: for a connect another call has started, for
//! its own connect, and for the answer. A connect that times out or fails slowly makes calls
//! fail at once for [`RECONNECT_AFTER`] instead of each waiting out the timeout again, so a
//! Redis that drops packets costs one timeout per second, not one per request. One refused
//! at once (Redis restarting, a failover under way) is tried again by the next call.
//!
//! Connections are opened here (TCP, OpenSSL, Unix socket) and handed to the `redis` crate's
//! multiplexed connection: its own TLS (native-tls) takes no CA file or client certificate,
//! and its Sentinel client would open the master through that same TLS.
//!
//! A Redis Cluster is the crate's async cluster client ([`Conn::Cluster`]): it finds the
//! slots' nodes from the seeds, routes each command by its key's slot and follows `MOVED`
//! and `ASK`. It opens its node connections itself, so it is plain TCP only: TLS to a
//! cluster is refused when the config is read (see [`RedisTarget::from_url`]).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout_at, Instant};

/// How long calls fail at once after a slow failed connect, before one of them tries again.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// A failed connect that took this long is held back: the next would likely wait as long.
const SLOW_FAILURE: Duration = Duration::from_millis(100);

/// Where Redis is and how to log in to it, with the TLS material already read.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisTarget {
    /// As written (a `[redis]` Sentinel table spelled as a URL): shown, redacted, by
    /// `config show`.
    pub url: String,
    pub place: Place,
    /// `None`: plain TCP (or a Unix socket).
    pub tls: Option<TlsMaterial>,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Place {
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
    /// The master named `master`, as the first Sentinel that answers reports it.
    Sentinel {
        nodes: Vec<(String, u16)>,
        master: String,
        /// The Sentinels' own `requirepass` (they do not share the data nodes' users).
        password: Option<String>,
    },
    /// A Redis Cluster, found through any of these seed nodes (database 0, plain TCP).
    Cluster {
        nodes: Vec<(String, u16)>,
    },
}

/// Why a cluster cannot be reached over TLS (a config error, never a plain-TCP fallback).
pub const CLUSTER_TLS: &str = "TLS to a Redis Cluster is not supported: the redis crate's cluster client opens its node connections itself, and its TLS (native-tls or rustls, not built in) cannot take the OpenSSL CA and client certificate of [redis] ca_file, cert_file and key_file";

/// PEM as read from `ca_file`, `cert_file` and `key_file`. `ca: None`: the system's roots.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct TlsMaterial {
    pub ca: Option<Vec<u8>>,
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("place", &self.place)
            .field("tls", &self.tls.is_some())
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "REDACTED"))
            .finish()
    }
}

impl RedisTarget {
    /// `redis://[user:password@]host[:port][/db]`, `rediss://` (TLS), `redis+unix:///path`
    /// or `unix:///path` (`?db=N&user=U&pass=P`), and
    /// `redis+sentinel://[user:password@]host:port[,host:port...]/master[/db]` (`rediss+sentinel`:
    /// TLS to the Sentinels and the master). The `redis` crate reads all but the Sentinel
    /// form. `redis+cluster://[user:password@]host:port[,host:port...][/0]`: a Redis Cluster
    /// through those seed nodes.
    pub fn from_url(url: &str) -> Result<RedisTarget, String> {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        match scheme {
            "redis+cluster" | "valkey+cluster" => cluster_url(url),
            "rediss+cluster" | "valkeys+cluster" => Err(CLUSTER_TLS.to_string()),
            "redis+sentinel" | "rediss+sentinel" | "valkey+sentinel" | "valkeys+sentinel" => {
                sentinel_url(url, scheme.starts_with("rediss") || scheme.starts_with("valkeys"))
            }
            "redis" | "rediss" | "valkey" | "valkeys" | "redis+unix" | "valkey+unix" | "unix" => {
                let tls = matches!(scheme, "rediss" | "valkeys");
                let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
                if parsed.fragment().is_some() {
                    return Err(
                        "a URL fragment (#insecure) is not accepted: certificates are always checked; give the CA in [redis] ca_file".to_string(),
                    );
                }
                let known: &[&str] = if scheme.ends_with("unix") {
                    &["db", "user", "pass", "protocol"]
                } else {
                    &["protocol"]
                };
                if let Some((k, _)) = parsed.query_pairs().find(|(k, _)| !known.contains(&k.as_ref())) {
                    return Err(format!(
                        "unknown query parameter {k:?} (TLS files are [redis] ca_file, cert_file and key_file)"
                    ));
                }
                // The crate is built without its own TLS: it reads a rediss URL as redis.
                let plain = match scheme.strip_suffix('s') {
                    Some(s) if tls => format!("{s}{}", &url[scheme.len()..]),
                    _ => url.to_string(),
                };
                let info = plain.as_str().into_connection_info().map_err(|e| e.to_string())?;
                let place = match info.addr {
                    ConnectionAddr::Tcp(host, port) => Place::Tcp { host, port },
                    ConnectionAddr::Unix(path) => Place::Unix(path),
                    ConnectionAddr::TcpTls { .. } => return Err("unexpected TLS address".into()),
                };
                Ok(RedisTarget {
                    url: url.to_string(),
                    place,
                    tls: tls.then(TlsMaterial::default),
                    db: info.redis.db,
                    username: info.redis.username,
                    password: info.redis.password,
                })
            }
            _ => Err(
                "the scheme must be redis, rediss, redis+unix, unix, redis+sentinel, rediss+sentinel or redis+cluster"
                    .to_string(),
            ),
        }
    }
}

/// `host:port` of a Sentinel (IPv6 in brackets), 26379 when no port is given.
pub fn sentinel_address(text: &str) -> Result<(String, u16), String> {
    node_address(text, "sentinel", 26379)
}

/// `host:port` of a cluster seed node (IPv6 in brackets), 6379 when no port is given.
pub fn cluster_address(text: &str) -> Result<(String, u16), String> {
    node_address(text, "cluster node", 6379)
}

fn node_address(text: &str, what: &str, default_port: u16) -> Result<(String, u16), String> {
    let u = url::Url::parse(&format!("redis://{text}"))
        .map_err(|e| format!("{what} address {text:?}: {e}"))?;
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(format!("{what} address {text:?} has no host")),
    };
    if !u.username().is_empty() || u.password().is_some() || !matches!(u.path(), "" | "/") {
        return Err(format!("{what} address {text:?} must be host:port"));
    }
    Ok((host, u.port().unwrap_or(default_port)))
}

/// A URL's `user:password@` (percent escapes decoded as the crate does), its hosts and the
/// path after them.
type Authority<'a> = (Option<String>, Option<String>, &'a str, &'a str);

fn split_authority(url: &str) -> Result<Authority<'_>, String> {
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let info = format!("redis://{u}@h/")
                .into_connection_info()
                .map_err(|e| format!("the user or password: {e}"))?;
            (info.redis.username, info.redis.password)
        }
    };
    Ok((username, password, hosts, path))
}

fn cluster_url(url: &str) -> Result<RedisTarget, String> {
    let (username, password, hosts, path) = split_authority(url)?;
    let nodes = hosts
        .split(',')
        .map(cluster_address)
        .collect::<Result<Vec<_>, _>>()?;
    if path.contains(['?', '#']) {
        return Err("a cluster URL is redis+cluster://host:7000,host2:7001/".into());
    }
    match path {
        "" | "0" | "0/" => {}
        _ => {
            return Err(format!(
                "a Redis Cluster has database 0 only, not {path:?}: redis+cluster://host:7000,host2:7001/"
            ))
        }
    }
    Ok(RedisTarget {
        url: url.to_string(),
        place: Place::Cluster { nodes },
        tls: None,
        db: 0,
        username,
        password,
    })
}

fn sentinel_url(url: &str, tls: bool) -> Result<RedisTarget, String> {
    let (username, password, hosts, path) = split_authority(url)?;
    let nodes = hosts
        .split(',')
        .map(sentinel_address)
        .collect::<Result<Vec<_>, _>>()?;
    let mut parts = path.split('/');
    let master = parts.next().unwrap_or("").to_string();
    if master.is_empty() {
        return Err(
            "a Sentinel URL names its master: redis+sentinel://host:26379/mymaster/0".into(),
        );
    }
    let db = match parts.next() {
        None | Some("") => 0,
        Some(n) => n
            .parse()
            .map_err(|_| format!("invalid database number {n:?}"))?,
    };
    if parts.next().is_some() || path.contains(['?', '#']) {
        return Err("a Sentinel URL is redis+sentinel://host:26379,host2:26379/mymaster/0".into());
    }
    Ok(RedisTarget {
        url: url.to_string(),
        place: Place::Sentinel {
            nodes,
            master,
            password: None,
        },
        tls: tls.then(TlsMaterial::default),
        db,
        username,
        password,
    })
}

/// The OpenSSL client context for `tls`: only its CA (or the system's roots), its client
/// certificate if any, and the server's name (or IP) checked.
pub fn tls_connector(tls: &TlsMaterial) -> Result<SslConnector, String> {
    fn e(what: &'static str) -> impl Fn(openssl::error::ErrorStack) -> String {
        move |err| format!("{what}: {err}")
    }
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(e("TLS"))?;
    if let Some(ca) = &tls.ca {
        let certs = X509::stack_from_pem(ca).map_err(e("ca_file"))?;
        if certs.is_empty() {
            return Err("ca_file holds no PEM certificate".to_string());
        }
        let mut store = X509StoreBuilder::new().map_err(e("ca_file"))?;
        for c in certs {
            store.add_cert(c).map_err(e("ca_file"))?;
        }
        b.set_cert_store(store.build());
    }
    b.set_verify(SslVerifyMode::PEER);
    match (&tls.cert, &tls.key) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            let mut chain = X509::stack_from_pem(cert)
                .map_err(e("cert_file"))?
                .into_iter();
            let leaf = chain.next().ok_or("cert_file holds no PEM certificate")?;
            b.set_certificate(&leaf).map_err(e("cert_file"))?;
            for c in chain {
                b.add_extra_chain_cert(c).map_err(e("cert_file"))?;
            }
            let key = PKey::private_key_from_pem(key).map_err(e("key_file"))?;
            b.set_private_key(&key).map_err(e("key_file"))?;
            b.check_private_key()
                .map_err(|_| "key_file is not the key of cert_file".to_string())?;
        }
        _ => return Err("cert_file and key_file go together".to_string()),
    }
    Ok(b.build())
}

/// What every store naming one target shares: the connection and its state.
struct Shared {
    target: RedisTarget,
    tls: Option<SslConnector>,
    state: Mutex<State>,
    /// One connect at a time; the others wait for it (within their own timeout).
    connecting: tokio::sync::Mutex<()>,
}

/// The targets connected to now, so that the session and rate-limit stores (and the
/// stores a reload builds) share one connection per target.
static OPEN: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

pub struct LazyRedis {
    shared: Arc<Shared>,
    pub timeout: Duration,
}

#[derive(Default)]
struct State {
    /// The open connection, with a number that tells it from the one opened after it.
    connection: Option<(u64, Conn)>,
    opened: u64,
    /// Until when calls fail without trying (set by a failed connect), and why it failed.
    retry_at: Option<(Instant, String)>,
}

impl LazyRedis {
    pub fn new(target: &RedisTarget, timeout: Duration) -> Result<Self, String> {
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|w| w.strong_count() > 0);
        let found = open
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.target == *target);
        let shared = match found {
            Some(s) => s,
            None => {
                let tls = target.tls.as_ref().map(tls_connector).transpose()?;
                let s = Arc::new(Shared {
                    target: target.clone(),
                    tls,
                    state: Mutex::new(State::default()),
                    connecting: tokio::sync::Mutex::new(()),
                });
                open.push(Arc::downgrade(&s));
                s
            }
        };
        Ok(LazyRedis { shared, timeout })
    }

    /// `SET key 1 NX PX ttl`: true when the key was not there (it is now, for `ttl`). The
    /// session store's locks and the one use of a DPoP proof id are this.
    pub async fn set_once(&self, key: &str, ttl: Duration) -> Result<bool, String> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .run(|mut c| {
                let key = key.to_string();
                async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(set.is_some())
    }

    /// Runs one command (or pipeline) within the timeout, connect included. After a dropped
    /// connection (Redis restarted) or an answer that the server is no longer the master (a
    /// failover) it is tried once more on a new connection, to the master of now.
    pub async fn run<T, F>(&self, f: impl Fn(Conn) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let deadline = Instant::now() + self.timeout;
        let shared = &self.shared;
        let mut last = String::new();
        for _ in 0..2 {
            let (number, conn) = match timeout_at(deadline, shared.connection(self.timeout)).await {
                Ok(open) => open?,
                Err(_) => {
                    let why = "connecting to Redis timed out";
                    shared.hold_back_connects(why);
                    return Err(why.to_string());
                }
            };
            // A cluster's client keeps a connection per node and mends them itself: one
            // silent node must not cost the others theirs (nor a new slot map per call).
            let cluster = matches!(conn, Conn::Cluster(_));
            match timeout_at(deadline, f(conn)).await {
                Err(_) => {
                    if !cluster {
                        shared.drop_connection(number);
                    }
                    return Err("Redis did not answer in time".to_string());
                }
                Ok(Ok(v)) => return Ok(v),
                // A node that timed out is the cluster client's to mend (see above).
                Ok(Err(e)) if reconnect_after(&e) && !(cluster && e.is_timeout()) => {
                    shared.drop_connection(number);
                    last = format!("Redis: {e}");
                }
                Ok(Err(e)) => return Err(format!("Redis: {e}")),
            }
        }
        Err(last)
    }

    /// Runs several calls as one: all of them within one timeout.
    pub async fn within<T>(
        &self,
        calls: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        tokio::time::timeout(self.timeout, calls)
            .await
            .unwrap_or_else(|_| Err("Redis did not answer in time".to_string()))
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open connection; an error while connects are held back; `None`: connect now.
    fn open_connection(&self) -> Result<Option<(u64, Conn)>, String> {
        let state = self.state();
        if let Some(open) = &state.connection {
            return Ok(Some(open.clone()));
        }
        match &state.retry_at {
            Some((at, why)) if Instant::now() < *at => {
                Err(format!("Redis unreachable (retrying shortly): {why}"))
            }
            _ => Ok(None),
        }
    }

    /// The connection, opened on first use (and after one was dropped).
    async fn connection(&self, timeout: Duration) -> Result<(u64, Conn), String> {
        if let Some(open) = self.open_connection()? {
            return Ok(open);
        }
        let _one = self.connecting.lock().await;
        // Opened, or failed, while this call waited.
        if let Some(open) = self.open_connection()? {
            return Ok(open);
        }
        let started = Instant::now();
        match self.open(timeout).await {
            Ok(conn) => {
                let mut state = self.state();
                state.opened += 1;
                let open = (state.opened, conn);
                state.connection = Some(open.clone());
                state.retry_at = None;
                Ok(open)
            }
            Err(e) => {
                if started.elapsed() >= SLOW_FAILURE {
                    self.hold_back_connects(&e);
                }
                Err(e)
            }
        }
    }

    fn hold_back_connects(&self, why: &str) {
        let mut state = self.state();
        if state.connection.is_none() {
            state.retry_at = Some((Instant::now() + RECONNECT_AFTER, why.to_string()));
        }
    }

    /// Forgets a connection that failed or did not answer in time (a dead peer may never
    /// say so): the next call connects afresh.
    fn drop_connection(&self, number: u64) {
        let mut state = self.state();
        if state.connection.as_ref().is_some_and(|(n, _)| *n == number) {
            state.connection = None;
        }
    }

    fn login(&self) -> RedisConnectionInfo {
        let t = &self.target;
        RedisConnectionInfo {
            db: t.db,
            username: t.username.clone(),
            password: t.password.clone(),
            ..Default::default()
        }
    }

    async fn open(&self, timeout: Duration) -> Result<Conn, String> {
        let single = match &self.target.place {
            Place::Tcp { host, port } => self.open_node(host, *port, &self.login()).await,
            Place::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("connecting to Redis at {}: {e}", path.display()))?;
                handshake(stream, &self.login(), &path.display().to_string()).await
            }
            Place::Sentinel {
                nodes,
                master,
                password,
            } => self.open_master(nodes, master, password.clone()).await,
            Place::Cluster { nodes } => return self.open_cluster(nodes, timeout).await,
        };
        single.map(Conn::Single)
    }

    /// The crate's cluster client through the seed nodes: it reads the slot map from the
    /// first that answers and connects to each node as a command needs it.
    async fn open_cluster(
        &self,
        nodes: &[(String, u16)],
        timeout: Duration,
    ) -> Result<Conn, String> {
        if self.tls.is_some() {
            return Err(CLUSTER_TLS.to_string());
        }
        let seeds = nodes.iter().map(|(host, port)| ConnectionInfo {
            addr: ConnectionAddr::Tcp(host.clone(), *port),
            redis: self.login(),
        });
        // The client waits for every seed before it reads the slot map: half the budget
        // for that, so one silent seed still leaves time for the call that connects.
        let client = redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(timeout / 2)
            .response_timeout(timeout)
            // MOVED, ASK and TRYAGAIN (a slot mid-migration) are retried within the
            // caller's own deadline, briefly apart.
            .retries(8)
            .min_retry_wait(5)
            .max_retry_wait(200)
            .build()
            .map_err(|e| format!("Redis Cluster: {e}"))?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| format!("connecting to the Redis Cluster: {e}"))?;
        Ok(Conn::Cluster(conn))
    }

    /// A TCP connection (TLS when the target says so) to `host:port`, logged in.
    async fn open_node(
        &self,
        host: &str,
        port: u16,
        login: &RedisConnectionInfo,
    ) -> Result<MultiplexedConnection, String> {
        let at = format!("{host}:{port}");
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connecting to Redis at {at}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return handshake(tcp, login, &at).await;
        };
        let ssl = tls
            .configure()
            .and_then(|c| c.into_ssl(host))
            .map_err(|e| format!("TLS to Redis at {at}: {e}"))?;
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp)
            .map_err(|e| format!("TLS to Redis at {at}: {e}"))?;
        if let Err(e) = Pin::new(&mut stream).connect().await {
            let verify = stream.ssl().verify_result();
            let why = if verify != openssl::x509::X509VerifyResult::OK {
                format!(
                    "the server's certificate was refused: {}",
                    verify.error_string()
                )
            } else {
                e.to_string()
            };
            return Err(format!("TLS handshake with Redis at {at} failed: {why}"));
        }
        handshake(stream, login, &at).await
    }

    /// The master `master` as the Sentinels report it, tried in order, and only once it says
    /// it is a master: a Sentinel that has not yet seen a failover names the old one.
    async fn open_master(
        &self,
        nodes: &[(String, u16)],
        master: &str,
        sentinel_password: Option<String>,
    ) -> Result<MultiplexedConnection, String> {
        let sentinel_login = RedisConnectionInfo {
            password: sentinel_password,
            ..Default::default()
        };
        let mut failures = Vec::new();
        for (host, port) in nodes {
            let addr: Result<Option<(String, u16)>, String> = async {
                let mut s = self.open_node(host, *port, &sentinel_login).await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master)
                    .query_async(&mut s)
                    .await
                    .map_err(|e| format!("Sentinel {host}:{port}: {e}"))
            }
            .await;
            let (mhost, mport) = match addr {
                Ok(Some(a)) => a,
                Ok(None) => {
                    failures.push(format!("Sentinel {host}:{port} knows no master {master:?}"));
                    continue;
                }
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            let mut conn = match self.open_node(&mhost, mport, &self.login()).await {
                Ok(c) => c,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            let role: redis::RedisResult<redis::Value> =
                redis::cmd("ROLE").query_async(&mut conn).await;
            match role {
                Ok(redis::Value::Array(v)) if matches!(v.first(), Some(redis::Value::BulkString(b)) if b == b"master") => {
                    return Ok(conn)
                }
                Ok(_) => failures.push(format!("{mhost}:{mport} is not a master (yet)")),
                Err(e) => failures.push(format!("ROLE at {mhost}:{mport}: {e}")),
            }
        }
        Err(format!(
            "no Redis master {master:?} through the Sentinels: {}",
            failures.join("; ")
        ))
    }
}

/// One connection to the target, whatever it is: what the stores send commands on.
#[derive(Clone)]
pub enum Conn {
    /// A server, a Sentinel's master or a Unix socket.
    Single(MultiplexedConnection),
    /// Routed by key slot, following `MOVED` and `ASK`.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Whether `e` says the connection is gone or no longer to the master: a demoted master
/// answers READONLY, and one cut off from its replicas (`min-replicas-to-write`) NOREPLICAS.
fn reconnect_after(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(e.code(), Some("READONLY" | "NOREPLICAS" | "MASTERDOWN"))
}

/// The `redis` crate's connection over `stream`: AUTH (ACL user or password) and SELECT.
async fn handshake<C>(
    stream: C,
    login: &RedisConnectionInfo,
    at: &str,
) -> Result<MultiplexedConnection, String>
where
    C: Unpin + AsyncRead + AsyncWrite + Send + 'static,
{
    let config = redis::AsyncConnectionConfig::new();
    let (conn, driver) = MultiplexedConnection::new_with_config(login, stream, config)
        .await
        .map_err(|e| format!("logging in to Redis at {at}: {e}"))?;
    tokio::spawn(driver);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let t = RedisTarget::from_url("rediss://gatehouse:p%40ss@cache.internal:6380/2").unwrap();
        assert_eq!(
            t.place,
            Place::Tcp {
                host: "cache.internal".into(),
                port: 6380
            }
        );
        assert!(t.tls.is_some());
        assert_eq!(
            (t.db, t.username.as_deref(), t.password.as_deref()),
            (2, Some("gatehouse"), Some("p@ss"))
        );
        let t = RedisTarget::from_url("redis://127.0.0.1").unwrap();
        assert!(t.tls.is_none());
        assert_eq!(t.db, 0);
        let t = RedisTarget::from_url("redis+unix:///run/redis.sock?db=3&user=u&pass=p").unwrap();
        assert_eq!(t.place, Place::Unix("/run/redis.sock".into()));
        assert_eq!((t.db, t.username.as_deref()), (3, Some("u")));
        assert!(RedisTarget::from_url("unix:///run/redis.sock").is_ok());
        let t =
            RedisTarget::from_url("redis+sentinel://u:pw@10.0.0.1:26379,[::1],s3:26380/mymaster/1")
                .unwrap();
        assert_eq!(
            t.place,
            Place::Sentinel {
                nodes: vec![
                    ("10.0.0.1".into(), 26379),
                    ("::1".into(), 26379),
                    ("s3".into(), 26380)
                ],
                master: "mymaster".into(),
                password: None
            }
        );
        assert_eq!(
            (t.db, t.username.as_deref(), t.password.as_deref()),
            (1, Some("u"), Some("pw"))
        );
        assert!(RedisTarget::from_url("rediss+sentinel://s1/m")
            .unwrap()
            .tls
            .is_some());
        let t =
            RedisTarget::from_url("redis+cluster://u:p%40w@10.0.0.1:7000,[::1],n3:7002/").unwrap();
        assert_eq!(
            t.place,
            Place::Cluster {
                nodes: vec![
                    ("10.0.0.1".into(), 7000),
                    ("::1".into(), 6379),
                    ("n3".into(), 7002)
                ]
            }
        );
        assert_eq!(
            (
                t.db,
                t.username.as_deref(),
                t.password.as_deref(),
                t.tls.is_some()
            ),
            (0, Some("u"), Some("p@w"), false)
        );
        assert!(RedisTarget::from_url("valkey+cluster://n1:7000").is_ok());
        assert!(RedisTarget::from_url("redis+cluster://n1:7000/0").is_ok());
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, says) in [
            ("redix://h", "scheme"),
            ("rediss://h/#insecure", "certificates are always checked"),
            ("redis://h/0?ca_file=/x", "ca_file"),
            ("redis://h/zero", "database"),
            ("redis+sentinel://s1:26379", "names its master"),
            ("redis+sentinel://s1:99999/m", "sentinel address"),
            ("redis+sentinel://s1/m/x", "database"),
            ("redis+cluster://n1:7000/1", "database 0 only"),
            (
                "redis+cluster://n1:7000/?timeout=1",
                "redis+cluster://host:7000",
            ),
            ("redis+cluster://n1:7000,n2:x/", "cluster node address"),
            (
                "rediss+cluster://n1:7000/",
                "TLS to a Redis Cluster is not supported",
            ),
        ] {
            let e = RedisTarget::from_url(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn a_target_prints_no_password() {
        let t = RedisTarget::from_url("redis://u:hunter2@h/0").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn tls_material_is_checked() {
        let e = tls_connector(&TlsMaterial {
            ca: Some(b"not pem".to_vec()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("ca_file"), "{e}");
        let e = tls_connector(&TlsMaterial {
            cert: Some(b"x".to_vec()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("go together"), "{e}");
        assert!(tls_connector(&TlsMaterial::default()).is_ok());
    }
}
