//! Forward-auth: nginx (Debian's package) with `auth_request` pointed at
//! `/_gatehouse/auth` in front of an upstream. The gateway judges the request nginx asks
//! about (from `X-Forwarded-Method/-Uri/-Host`): 2xx with identity headers that nginx
//! passes on, 401 (nginx turns it into the login redirect), 403 from the policy.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::login::provider_for;
use common::*;
use sha2::{Digest, Sha256};

struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

fn start_nginx(port: u16, gateway: u16, app: u16) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 128; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      auth_request /_gatehouse_check;
      auth_request_set $gh_user $upstream_http_x_auth_request_user;
      auth_request_set $gh_groups $upstream_http_x_auth_request_groups;
      auth_request_set $gh_assertion $upstream_http_x_gatehouse_assertion;
      proxy_set_header X-Auth-Request-User $gh_user;
      proxy_set_header X-Auth-Request-Groups $gh_groups;
      proxy_set_header X-Gatehouse-Assertion $gh_assertion;
      error_page 401 = @login;
      proxy_pass http://127.0.0.1:{app};
    }}
    location = /_gatehouse_check {{
      internal;
      proxy_pass http://127.0.0.1:{gateway}/_gatehouse/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Method $request_method;
      proxy_set_header X-Forwarded-Uri $request_uri;
      proxy_set_header X-Forwarded-Host $host;
    }}
    location /_gatehouse/ {{
      proxy_pass http://127.0.0.1:{gateway};
      proxy_set_header Host $host;
    }}
    location @login {{
      return 302 /_gatehouse/login?rd=$request_uri;
    }}
  }}
}}
"#
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx { child, _dir: dir }
}

fn key_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_asks_the_gateway() {
    let (nginx_port, gw_port) = (free_port(), free_port());
    let idp = provider_for(&[nginx_port], 600);
    let app = TestServer::echo("legacy").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        r#"default = "allow"
[roles]
admin = ["app:*"]
[[binding]]
role = "admin"
groups = ["admins"]
[[rule]]
name = "admin area"
paths = ["/admin/**"]
require = "app:admin"
"#,
    )
    .unwrap();
    let config = format!(
        r#"{}
[[idp]]
name = "test"
issuer = "{}"
client_id = "gatehouse"
client_secret = "gatehouse-test-secret"
scopes = ["openid", "profile", "email", "groups"]

[[api_key]]
name = "ops"
hash = "{}"
subject = "svc-ops"
groups = ["admins"]

[[api_key]]
name = "reporting"
hash = "{}"
subject = "svc-reporting"
groups = ["staff"]

[headers]
assertion = true

{}
[[route]]
name = "legacy"
path = "/"
upstream = "legacy"
auth = ["session", "api_key"]
policy = "policy.toml"
"#,
        base_config(&format!(
            "public_url = \"http://127.0.0.1:{nginx_port}\"\ntrusted_proxies = [\"127.0.0.1/32\"]\nallowed_hosts = [\"127.0.0.1\"]"
        )),
        idp.issuer,
        key_hash("ops-key-0123456789"),
        key_hash("reporting-key-0123456789"),
        upstream_block("legacy", &[app.addr], ""),
    );
    let gw = Gateway::start_on(dir, &config, gw_port);
    let nginx = start_nginx(nginx_port, gw_port, app.addr.port());
    let through = |path: &str, headers: &str| {
        raw_request(
            nginx_port,
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap_or_else(|| panic!("nginx did not answer\n{}", gw.log()))
    };

    // No credential: the gateway says 401, nginx turns it into the login redirect.
    let r = through("/reports", "Accept: text/html\r\n");
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(
        r.header("location")
            .map(|l| l.ends_with("/_gatehouse/login?rd=/reports")),
        Some(true)
    );
    let hits_before = app.hit_count();
    // A forged identity header from the client is overwritten by nginx with the gateway's.
    let ok = through(
        "/reports",
        "X-Api-Key: reporting-key-0123456789\r\nX-Auth-Request-User: root\r\n",
    );
    assert_eq!(ok.status, 200, "{}\n{}", ok.body, gw.log());
    assert_eq!(
        ok.echoed().header("x-auth-request-user"),
        Some("svc-reporting")
    );
    assert_eq!(ok.echoed().header("x-auth-request-groups"), Some("staff"));
    assert!(ok
        .echoed()
        .header("x-gatehouse-assertion")
        .is_some_and(|a| a.split('.').count() == 3));
    // The policy judges the forwarded path: staff may not enter /admin, admins may.
    let denied = through("/admin/users", "X-Api-Key: reporting-key-0123456789\r\n");
    assert_eq!(denied.status, 403, "{}", denied.body);
    let admin = through("/admin/users", "X-Api-Key: ops-key-0123456789\r\n");
    assert_eq!(admin.status, 200);
    assert_eq!(
        admin.echoed().header("x-auth-request-user"),
        Some("svc-ops")
    );
    let wrong = through("/reports", "X-Api-Key: wrong-key-0123456789\r\n");
    assert_eq!(
        wrong.status, 302,
        "a bad key is a 401 for nginx (then the login redirect)"
    );
    assert_eq!(
        app.hit_count(),
        hits_before + 2,
        "refused requests never reach the upstream"
    );

    // A browser session through nginx: login at the provider, the callback through nginx,
    // then every request checked by auth_request with the session cookie.
    let browser = Browser::new();
    let (page, visited) = browser
        .login(&format!("http://127.0.0.1:{nginx_port}/dashboard"), "alice")
        .await;
    assert_eq!(page.status, 200, "{visited:?} {}\n{}", page.body, gw.log());
    assert_eq!(
        page.echoed_header("x-auth-request-user").as_deref(),
        Some("alice")
    );
    assert_eq!(
        page.echoed_header("x-auth-request-groups").as_deref(),
        Some("admins,staff")
    );

    // Traefik and Caddy pass the answer to the client: with ?redirect=true a browser
    // navigation gets the login redirect itself, a script still gets 401.
    let nav = gw.get(
        "/_gatehouse/auth?redirect=true",
        "X-Forwarded-Method: GET\r\nX-Forwarded-Uri: /reports?q=1\r\nX-Forwarded-Host: 127.0.0.1\r\nAccept: text/html\r\n",
    );
    assert_eq!(nav.status, 302, "{}", nav.body);
    assert!(nav.header("location").unwrap().starts_with(&idp.issuer));
    let script = gw.get(
        "/_gatehouse/auth?redirect=true",
        "X-Forwarded-Method: GET\r\nX-Forwarded-Uri: /reports\r\nX-Forwarded-Host: 127.0.0.1\r\nAccept: application/json\r\n",
    );
    assert_eq!(script.status, 401);

    // Forward-auth from a peer that is not a trusted proxy is refused.
    let other_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        gw.path().join("policy.toml"),
        other_dir.path().join("policy.toml"),
    )
    .unwrap();
    let untrusted = Gateway::start_in(
        other_dir,
        &config.replace(
            "trusted_proxies = [\"127.0.0.1/32\"]",
            "trusted_proxies = [\"10.0.0.0/8\"]",
        ),
    );
    let direct = untrusted.get(
        "/_gatehouse/auth",
        "X-Forwarded-Uri: /reports\r\nX-Api-Key: ops-key-0123456789\r\n",
    );
    assert_eq!(direct.status, 403, "{}", direct.body);
    assert!(untrusted.log().contains("not in server.trusted_proxies"));
    drop(nginx);
}
