//! A real `redis-server` (Debian's) for the session-store tests, on a free
//! port, with its data in a scratch directory (an append-only file written
//! at once, so a restart keeps the entries), killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
    /// `--tls-*` arguments: TLS only, on `port`.
    tls: Vec<String>,
}

/// Whether the tests can run a Redis here. CI installs it and sets
/// `TETHER_REQUIRE_REDIS`, so there a missing one fails instead of skipping.
pub fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found || std::env::var_os("TETHER_REQUIRE_REDIS").is_none(),
        "TETHER_REQUIRE_REDIS is set but there is no redis-server"
    );
    found
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("tether-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            port,
            dir,
            child: None,
            tls: Vec::new(),
        };
        server.restart();
        server
    }

    /// TLS only (no plain port), with this certificate and key.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> RedisServer {
        let mut server = RedisServer::start();
        server.stop();
        server.tls = vec![
            "--tls-port".into(),
            server.port.to_string(),
            "--port".into(),
            "0".into(),
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port and data) and waits for PING.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.tls)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let ready = |s: &RedisServer| match s.tls.is_empty() {
            true => s.command(&["PING"]).as_deref() == Some("+PONG"),
            // Listening is as far as a plain client can tell.
            false => std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok(),
        };
        while !ready(self) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20)); // polling a process that starts
        }
    }

    /// Kills it (SIGKILL: no goodbye to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command over RESP; the first line of the reply.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
