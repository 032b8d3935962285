//! A real Redis for tests: `redis-server` started on a free loopback port, no persistence
//! unless asked; it can be killed, paused and started again on the same port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// Where a persistent server keeps its append-only file.
    dir: Option<tempfile::TempDir>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            port: super::free_port(),
            child: None,
            dir: None,
        };
        r.restart();
        r
    }

    /// A server that writes every change to an append-only file before answering: killed
    /// and started again, it comes back with its data, as a Redis with persistence (or a
    /// replica that takes over) does after an outage.
    pub fn start_persistent() -> Redis {
        let mut r = Redis {
            port: super::free_port(),
            child: None,
            dir: Some(tempfile::tempdir().expect("redis data dir")),
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new("redis-server");
        command.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"]);
        command.args(["--save", ""]);
        match &self.dir {
            Some(dir) => command.arg("--dir").arg(dir.path()).args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/setup.sh to install it)");
        self.child = Some(child);
        for _ in 0..200 {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// Stops the process where it stands (SIGSTOP, by its own PID): connections open and
    /// connects complete, nothing is answered, and the data stays, as in a partition.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("redis running");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Kills the server (by its own PID) and waits for it to go.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `redis-server` (or Sentinel) started with the arguments a test chooses (TLS, a Unix
/// socket, a replica), ready once `redis-cli` with `probe` answers PING; killed by its own PID.
pub struct Server {
    pub port: u16,
    child: Option<Child>,
    probe: Vec<String>,
    /// Its working folder: where a primary writes the snapshot a replica syncs from.
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn spawn(args: &[String], port: u16, probe: &[String]) -> Server {
        let dir = tempfile::tempdir().expect("redis dir");
        let child = Command::new("redis-server")
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/setup.sh to install it)");
        let server = Server {
            port,
            child: Some(child),
            probe: probe.to_vec(),
            _dir: dir,
        };
        for _ in 0..200 {
            if server.cli(&["PING"]).trim() == "PONG" {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server {args:?} did not start");
    }

    /// A plain server on a free loopback port, no persistence, with more arguments.
    pub fn plain(extra: &[&str]) -> Server {
        let port = super::free_port();
        let mut args = strings(&["--port", &port.to_string(), "--bind", "127.0.0.1"]);
        args.extend(strings(&["--save", "", "--appendonly", "no"]));
        args.extend(strings(extra));
        Server::spawn(&args, port, &strings(&["-p", &port.to_string()]))
    }

    /// `redis-cli` with this server's connection arguments; its output (errors included).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(&self.probe)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the process (SIGKILL, by its own PID) and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A test CA with a server certificate for 127.0.0.1 and localhost and a client
/// certificate, and a second CA that signed neither, made with the `openssl` CLI.
pub struct TestPki {
    pub dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("pki dir");
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .stdin(Stdio::null())
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=gatehouse test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for name in ["server", "client"] {
            run(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        TestPki { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// A TLS-only redis-server on a free loopback port; `clients`: "yes" asks for a client
    /// certificate, "no" does not.
    pub fn server(&self, clients: &str, extra: &[&str]) -> Server {
        let port = super::free_port();
        let mut args = strings(&["--port", "0", "--tls-port", &port.to_string()]);
        args.extend(strings(&[
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]));
        args.extend([
            "--tls-cert-file".into(),
            self.path("server.pem"),
            "--tls-key-file".into(),
            self.path("server.key"),
            "--tls-ca-cert-file".into(),
            self.path("ca.pem"),
            "--tls-auth-clients".into(),
            clients.into(),
        ]);
        args.extend(strings(extra));
        let probe = vec![
            "-p".into(),
            port.to_string(),
            "--tls".into(),
            "--cacert".into(),
            self.path("ca.pem"),
            "--cert".into(),
            self.path("client.pem"),
            "--key".into(),
            self.path("client.key"),
        ];
        Server::spawn(&args, port, &probe)
    }
}

/// A primary, its replica and three Sentinels (quorum 2) watching them as `mymaster`, all on
/// free loopback ports. A Sentinel calls the primary down after 1 s without an answer.
pub struct SentinelSet {
    pub primary: Server,
    pub replica: Server,
    pub sentinels: Vec<Server>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        SentinelSet::with_passwords(None)
    }

    /// With `Some((data, sentinel))`: the primary and replica require `data`, the Sentinels
    /// `sentinel` (of each other too).
    pub fn with_passwords(passwords: Option<(&str, &str)>) -> SentinelSet {
        SentinelSet::with(passwords, None)
    }

    /// [`SentinelSet::with_passwords`], every node (Sentinels too) on TLS only with `tls`'s
    /// server certificate when given.
    pub fn with(passwords: Option<(&str, &str)>, tls: Option<&TestPki>) -> SentinelSet {
        let tls_probe = |probe: &mut Vec<String>| {
            if let Some(pki) = tls {
                probe.extend(["--tls".to_string(), "--cacert".into(), pki.path("ca.pem")]);
            }
        };
        let mut extra = Vec::new();
        if let Some((data, _)) = passwords {
            extra.extend(["--requirepass", data, "--masterauth", data]);
        }
        let data_node = |more: &[&str]| {
            let port = super::free_port();
            let mut args = match tls {
                None => strings(&["--port", &port.to_string()]),
                Some(pki) => {
                    let mut a = strings(&["--port", "0", "--tls-port", &port.to_string()]);
                    a.extend(strings(&[
                        "--tls-replication",
                        "yes",
                        "--tls-auth-clients",
                        "no",
                    ]));
                    for (key, file) in [
                        ("cert", "server.pem"),
                        ("key", "server.key"),
                        ("ca-cert", "ca.pem"),
                    ] {
                        a.extend([format!("--tls-{key}-file"), pki.path(file)]);
                    }
                    a
                }
            };
            args.extend(strings(&[
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]));
            args.extend(strings(&extra));
            args.extend(strings(more));
            let mut probe = strings(&["-p", &port.to_string()]);
            tls_probe(&mut probe);
            if let Some((data, _)) = passwords {
                probe.extend(strings(&["--no-auth-warning", "-a", data]));
            }
            Server::spawn(&args, port, &probe)
        };
        let primary = data_node(&[]);
        let replica = data_node(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
        wait_for("the replica to sync", 20, || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let dir = tempfile::tempdir().expect("sentinel dir");
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = super::free_port();
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            let listen = match tls {
                None => format!("port {port}\n"),
                Some(pki) => format!(
                    "port 0\ntls-port {port}\ntls-replication yes\ntls-auth-clients no\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n",
                    pki.path("server.pem"),
                    pki.path("server.key"),
                    pki.path("ca.pem")
                ),
            };
            let mut text = format!(
                "{listen}bind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 2\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 10000\nsentinel parallel-syncs mymaster 1\n",
                dir.path().display(),
                primary.port
            );
            let mut probe = strings(&["-p", &port.to_string()]);
            tls_probe(&mut probe);
            if let Some((data, sentinel)) = passwords {
                text.push_str(&format!(
                    "sentinel auth-pass mymaster {data}\nrequirepass {sentinel}\nsentinel sentinel-pass {sentinel}\n"
                ));
                probe.extend(strings(&["--no-auth-warning", "-a", sentinel]));
            }
            std::fs::write(&conf, text).unwrap();
            let args = vec![conf.display().to_string(), "--sentinel".to_string()];
            sentinels.push(Server::spawn(&args, port, &probe));
        }
        // Each Sentinel has found the replica and the other two (hello messages, every 2 s).
        for s in &sentinels {
            wait_for("the Sentinels to find each other", 30, || {
                let replicas = s.cli(&["SENTINEL", "REPLICAS", "mymaster"]);
                let others = s.cli(&["SENTINEL", "SENTINELS", "mymaster"]);
                replicas.contains(&replica.port.to_string()) && sentinels_named(&others) == 2
            });
        }
        SentinelSet {
            primary,
            replica,
            sentinels,
            _dir: dir,
        }
    }

    /// `redis+sentinel://` naming the three Sentinels and the master.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/mymaster/0", hosts.join(","))
    }

    /// The master's port as the first Sentinel reports it.
    pub fn master_port(&self) -> Option<u16> {
        let out = self.sentinels[0].cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]);
        out.lines().nth(1)?.trim().parse().ok()
    }
}

/// How many Sentinels `SENTINEL SENTINELS` listed (one `runid` field each).
fn sentinels_named(out: &str) -> usize {
    out.lines().filter(|l| l.trim() == "runid").count()
}

/// Polls `done` every 100 ms for at most `secs` seconds.
pub fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
