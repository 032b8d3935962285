//! Test harness: real upstream servers on ephemeral loopback ports, the real `gatehouse`
//! binary started with a config written by the test, and a raw HTTP client that sends bytes
//! exactly as written (path-confusion tests need targets no URL library would produce).
#![allow(dead_code)]

pub mod browser;
pub mod chromium;
pub mod front;
pub mod idp;
pub mod keys;
pub mod login;
pub mod paths;
pub mod redis;
pub mod stub_idp;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback port free now and never handed out before in this test process: the kernel
/// gives a just-released port out again, and tests running side by side (a gateway, the
/// provider another test starts) would otherwise be handed the same one before either binds.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no loopback port left that this test process has not used");
}

/// A request as a test server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a test server answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A real HTTP/1.1 server on an ephemeral loopback port, answering with `handler`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    /// Connections being served now.
    open: Arc<AtomicUsize>,
    /// Dropping the sender ends every open connection too, like a dead server.
    stop: std::sync::Mutex<Option<tokio::sync::watch::Sender<()>>>,
}

impl TestServer {
    pub async fn start(handler: Handler) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test server");
        Self::serve(listener, handler)
    }

    pub async fn start_on(port: u16, handler: Handler) -> TestServer {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind test server");
        Self::serve(listener, handler)
    }

    fn serve(listener: tokio::net::TcpListener, handler: Handler) -> TestServer {
        let addr = listener.local_addr().expect("test server addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
        let open = Arc::new(AtomicUsize::new(0));
        let connections = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (handler, counter) = (handler.clone(), counter.clone());
                let mut stop = stop_rx.clone();
                let serving = OpenConnection::new(&connections);
                tokio::spawn(async move {
                    let _serving = serving;
                    tokio::select! {
                        _ = serve_connection(stream, &handler, &counter) => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        });
        TestServer {
            addr,
            hits,
            task,
            open,
            stop: std::sync::Mutex::new(Some(stop_tx)),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hit_count(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection.
    pub fn stop(&self) {
        self.task.abort();
        if let Ok(mut stop) = self.stop.lock() {
            stop.take();
        }
    }
}

impl TestServer {
    /// Stops the server and waits (5 s at most) until it is gone: its port refuses
    /// connections and every connection it had is closed, so no request can still reach it.
    pub async fn kill(&self) {
        self.stop();
        for _ in 0..500 {
            let refused = tokio::net::TcpStream::connect(self.addr).await.is_err();
            if refused && self.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("test server {} did not stop", self.addr);
    }
}

/// Counts a connection as open for as long as it lives (its task may be cancelled).
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        OpenConnection(open.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An upstream that answers every request with JSON describing what it received:
/// `{"server", "method", "target", "headers": [[name, value], ...], "body"}`.
/// `GET /slow` waits 3 s before answering (for read timeouts).
pub type EchoServer = TestServer;

pub fn echo_handler(id: &str) -> Handler {
    let id = id.to_string();
    Arc::new(move |req: &Request| {
        let json = serde_json::json!({
            "server": id,
            "method": req.method,
            "target": req.target,
            "headers": req.headers,
            "body": req.body,
        });
        let mut reply = Reply::json(200, &json);
        reply.headers.push(("x-upstream".into(), id.clone()));
        if req.target.starts_with("/slow") {
            reply.delay = Duration::from_secs(3);
        }
        reply
    })
}

impl TestServer {
    /// An echo upstream (see [`echo_handler`]).
    pub async fn echo(id: &str) -> TestServer {
        TestServer::start(echo_handler(id)).await
    }
}

async fn serve_connection(
    mut stream: tokio::net::TcpStream,
    handler: &Handler,
    hits: &AtomicUsize,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let mut parts = request_line.splitn(3, ' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let content_length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + content_length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + content_length]).into_owned();
        buf.drain(..head_end + content_length);
        hits.fetch_add(1, Ordering::SeqCst);
        let close = headers
            .iter()
            .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"));
        let request = Request {
            method,
            target,
            headers,
            body,
        };
        let reply = handler(&request);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let mut resp = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        if close {
            resp.push_str("connection: close\r\n");
        }
        resp.push_str("\r\n");
        resp.push_str(&reply.body);
        stream.write_all(resp.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the echo server reported.
#[derive(Debug)]
pub struct Echoed {
    pub server: String,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Echoed {
    pub fn parse(body: &str) -> Echoed {
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("echo JSON ({e}): {body}"));
        Echoed {
            server: v["server"].as_str().unwrap_or_default().to_string(),
            method: v["method"].as_str().unwrap_or_default().to_string(),
            target: v["target"].as_str().unwrap_or_default().to_string(),
            headers: v["headers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            (
                                p[0].as_str().unwrap_or_default().to_string(),
                                p[1].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A running `gatehouse run` process; killed on drop.
pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Gateway {
    /// `config` may use `{port}` and `{admin}` placeholders for the listener ports.
    pub fn start(config: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, config)
    }

    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Gateway {
        Self::start_on(dir, config, free_port())
    }

    /// On a port chosen beforehand (when the config must name its own URL).
    pub fn start_on(dir: tempfile::TempDir, config: &str, port: u16) -> Gateway {
        let admin_port = free_port();
        let text = config
            .replace("{port}", &port.to_string())
            .replace("{admin}", &admin_port.to_string());
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, text).expect("write config");
        let log_path = dir.path().join("gatehouse.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["run", "-c"])
            .arg(&config_path)
            .arg("--upgrade-sock")
            .arg(dir.path().join("upgrade.sock"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start gatehouse");
        let mut gw = Gateway {
            child,
            port,
            admin_port,
            dir,
            config_path,
            log_path,
        };
        gw.wait_ready();
        gw
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gatehouse exited early with {status}:\n{}", self.log());
            }
            let admin_up = raw_request(
                self.admin_port,
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .is_some_and(|r| r.status == 200);
            if admin_up && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gatehouse did not become ready:\n{}", self.log());
    }

    /// The exit status once the process has ended.
    pub fn child_exited(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends a raw request to the public listener.
    pub fn raw(&self, request: &str) -> Response {
        raw_request(self.port, request.as_bytes())
            .unwrap_or_else(|| panic!("no answer to {request:?}\n{}", self.log()))
    }

    /// `GET path` with `Host: 127.0.0.1` and any extra header lines.
    pub fn get(&self, path: &str, extra_headers: &str) -> Response {
        self.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra_headers}Connection: close\r\n\r\n"
        ))
    }

    pub fn admin(&self, path: &str) -> Response {
        raw_request(
            self.admin_port,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .expect("admin answers")
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn write_config(&self, config: &str) {
        let text = config
            .replace("{port}", &self.port.to_string())
            .replace("{admin}", &self.admin_port.to_string());
        std::fs::write(&self.config_path, text).expect("rewrite config");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, Vec<String>>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    pub fn echoed(&self) -> Echoed {
        assert_eq!(self.status, 200, "expected a proxied answer, got {self:?}");
        Echoed::parse(&self.body)
    }
}

/// Writes `request` as is and reads the answer to the end (the request should say
/// `Connection: close`). None when nothing came back within 10 s.
pub fn raw_request(port: u16, request: &[u8]) -> Option<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(request).ok()?;
    let mut data = Vec::new();
    let _ = stream.read_to_end(&mut data);
    parse_response(&data)
}

pub fn parse_response(data: &[u8]) -> Option<Response> {
    let head_end = find(data, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&data[..head_end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(':') {
            headers
                .entry(k.trim().to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    let raw_body = &data[head_end..];
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.iter().any(|v| v.eq_ignore_ascii_case("chunked")));
    let body = if chunked {
        dechunk(raw_body)
    } else {
        raw_body.to_vec()
    };
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = find(data, b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 || data.len() < line_end + 2 + size {
            break;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[(line_end + 4 + size).min(data.len())..];
    }
    out
}

/// `[upstream.NAME]` with the given servers.
pub fn upstream_block(name: &str, servers: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[upstream.{name}]\nservers = [{}]\nhealth_check_interval = \"1s\"\n{extra}\n",
        list.join(", ")
    )
}

/// The `[server]`, `[admin]` and `[log]` sections every test config starts with.
pub fn base_config(server_extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{{port}}\"]\nthreads = 1\nshutdown_timeout = \"2s\"\n{server_extra}\n\n[admin]\nlisten = \"127.0.0.1:{{admin}}\"\n\n[log]\nlevel = \"info\"\n\n"
    )
}

/// Runs a future on a fresh tokio runtime from a sync test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A gateway config for config-error tests: one session route and one IdP, `corp`, whose
/// table ends with `idp_lines` (the setting under test; a client secret if it wants one).
pub fn idp_config_text(idp_lines: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\npublic_url = \"https://app.example.com\"\n\n[session]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\n[[idp]]\nname = \"corp\"\nissuer = \"https://login.example.com\"\nclient_id = \"gh\"\n{idp_lines}\n\n[upstream.app]\nservers = [\"127.0.0.1:8000\"]\n\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\nauth = [\"session\"]\n"
    )
}

/// `gatehouse check` refuses `text` (written to `dir`/gateway.toml, so relative paths in it
/// are `dir`'s) with `message`, at the line of one of `setting`'s lines.
pub fn assert_refused_at(dir: &Path, text: &str, setting: &str, message: &str) {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{setting}: accepted");
    let on_its_line = setting.lines().any(|l| {
        text.lines()
            .position(|t| t == l)
            .is_some_and(|i| stderr.contains(&format!("gateway.toml:{}:", i + 1)))
    });
    assert!(
        on_its_line && stderr.contains(message),
        "{setting}: {stderr}"
    );
}
