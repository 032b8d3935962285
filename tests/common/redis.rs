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
