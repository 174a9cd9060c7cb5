//! The `tether` binary: keygen, config errors (exit 2, one line), startup, demo,
//! doctor's usage errors.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tether");

#[test]
fn keygen_prints_a_usable_key() {
    let out = Command::new(BIN).arg("keygen").output().unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap();
    assert!(
        mcp_tether::affinity::SessionKey::from_base64(key.trim()).is_ok(),
        "{key}"
    );
}

fn config_error(args: &[&str], env_key: Option<&str>) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("TETHER_SESSION_KEY");
    if let Some(k) = env_key {
        cmd.env("TETHER_SESSION_KEY", k);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    err
}

#[test]
fn bad_config_exits_2_with_one_line_naming_the_key() {
    assert!(config_error(&["--listen", "127.0.0.1:0"], None).contains("backends"));
    assert!(config_error(&["--backend", "ftp://x:1"], None).contains("backends[0]"));
    assert!(config_error(&["--backend", "http://h:1"], Some("nope")).contains("TETHER_SESSION_KEY"));
    let dir = std::env::temp_dir().join(format!("tether-cli-{}.toml", std::process::id()));
    std::fs::write(
        &dir,
        "backends = [\"http://h:1\"]\n[timeouts]\nidle = \"5s\"\n",
    )
    .unwrap();
    let err = config_error(&["--config", dir.to_str().unwrap()], None);
    assert!(
        err.contains(":3: idle") && err.contains("unknown field"),
        "{err}"
    );
    std::fs::remove_file(&dir).unwrap();
}

#[test]
fn starts_with_flags_only_and_warns_about_a_random_key() {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "http://127.0.0.1:9",
            "--admin",
            "127.0.0.1:0",
        ])
        .env_remove("TETHER_SESSION_KEY")
        .env("TETHER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("tether: proxy listening on 127.0.0.1:"),
        "{line}"
    );
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no session key configured"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes in piped logs");
}

#[test]
fn demo_tour_shows_sticky_sessions() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--once",
        ])
        .env("TETHER_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("every one stayed on its replica"), "{text}");
    assert!(text.contains("spread over 3 replicas"), "{text}");
    assert_eq!(text.matches("streamable session t2.").count(), 3, "{text}");
    assert_eq!(text.matches("legacy     session t2.").count(), 2, "{text}");
}

/// Out of descriptors, the accept loop backs off, counts every failure and
/// logs once (not every 50 ms), and serves again when descriptors free up.
#[test]
fn out_of_descriptors_the_accept_loop_logs_once_counts_and_recovers() {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let mut child = Command::new("bash")
        .args(["-c", &format!("ulimit -n 48 && exec {BIN} --listen 127.0.0.1:0 --admin 127.0.0.1:0 --backend http://127.0.0.1:9 --threads 1")])
        .env("TETHER_LOG", "warn")
        .env_remove("TETHER_SESSION_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let addr_of = |line: &str| line.trim().rsplit(' ').next().unwrap().to_owned();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let proxy = addr_of(&line);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let admin = addr_of(&line);
    // Every stderr line, as it comes.
    let (tx, rx) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // More connections than descriptors: the listener's backlog holds the rest.
    let conns: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(&proxy).unwrap())
        .collect();
    let first = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(20)).ok())
        .find(|l| l.contains("accept failed"))
        .expect("a log line about the failing accepts");
    assert!(
        first.contains("accept failed") && first.contains("emfile"),
        "{first}"
    );
    // The condition lasts a second (twenty retries): no more lines meanwhile.
    let until = Instant::now() + Duration::from_secs(1);
    let mut more = Vec::new();
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if let Ok(line) = rx.recv_timeout(left) {
            more.push(line);
        }
    }
    assert!(
        more.iter().all(|l| !l.contains("accept failed")),
        "{more:?}"
    );
    drop(conns);
    // Descriptors are free again: the admin listener answers, and counted it all.
    let metrics = (0..200)
        .find_map(|_| {
            let mut s = TcpStream::connect(&admin).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            text.contains("tether_accept_errors_total").then_some(text)
        })
        .expect("metrics after recovery");
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tether_accept_errors_total{kind=\"emfile\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(failures >= 10.0, "{failures} failures counted:\n{metrics}");
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn check_prints_the_config_in_force_or_exits_2_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("tether-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "backends = [\"http://10.0.0.1:8000\", \"dns://mcp.default.svc.cluster.local:8000\"]\n\
         admin = { listen = \"0.0.0.0:9090\", token = \"hush\" }\n[health]\ncheck = \"tcp\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", good.to_str().unwrap()])
        .env_remove("TETHER_SESSION_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8(out.stdout).unwrap();
    for expect in [
        "listen = \"127.0.0.1:8080\"",
        "dns://mcp.default.svc.cluster.local:8000",
        "check = \"tcp\"",
        "admin_token = \"<redacted>\"",
        "upstream_idle = \"4s\"",
    ] {
        assert!(shown.contains(expect), "{expect} not in:\n{shown}");
    }
    assert!(!shown.contains("hush"), "{shown}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "backends = [\"http://h:1\"]\n[health]\nrise = 0\n").unwrap();
    let err = config_error(&["check", "--config", bad.to_str().unwrap()], None);
    assert!(err.contains("health.rise"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every config the deploy kit carries passes `tether check` (files it names are made up
/// in a scratch folder standing for `/etc/tether`).
#[test]
fn the_deploy_kit_configs_pass_check() {
    let root = env!("CARGO_MANIFEST_DIR");
    let etc = std::env::temp_dir().join(format!("tether-etc-{}", std::process::id()));
    std::fs::create_dir_all(&etc).unwrap();
    let key = mcp_tether::affinity::SessionKey::generate().to_base64();
    std::fs::write(etc.join("session.key"), key).unwrap();
    std::fs::write(etc.join("admin.token"), "t0k3n\n").unwrap();
    std::fs::write(etc.join("backends"), "http://10.0.0.1:8000\n").unwrap();
    for config in [
        "deploy/kubernetes/tether.toml",
        "deploy/systemd/tether.toml",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{config}")).unwrap();
        let local = etc.join("tether.toml");
        std::fs::write(&local, text.replace("/etc/tether", etc.to_str().unwrap())).unwrap();
        let out = Command::new(BIN)
            .args(["check", "--config", local.to_str().unwrap()])
            .env_remove("TETHER_SESSION_KEY")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{config}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The manifests mount the Kubernetes config under the name the Deployment reads.
    let manifest =
        std::fs::read_to_string(format!("{root}/deploy/kubernetes/tether.yaml")).unwrap();
    assert!(manifest.contains("/etc/tether/tether.toml") && manifest.contains("/readyz"));
    std::fs::remove_dir_all(&etc).unwrap();
}

/// `--log-format json`: one JSON object a line; with the access log on, a request's line names
/// its method, path (no query), status and a hash of the session, never the token.
#[test]
fn json_logs_and_the_access_log_line() {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;
    let conf = std::env::temp_dir().join(format!("tether-json-{}.toml", std::process::id()));
    std::fs::write(&conf, "[log]\naccess = true\n").unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--config",
            conf.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "http://127.0.0.1:9",
            "--log-format",
            "json",
        ])
        .env("TETHER_LOG", "info")
        .env_remove("TETHER_SESSION_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let proxy = line.trim().rsplit(' ').next().unwrap().to_owned();
    // A session reference that does not open: Tether's own 404, logged.
    let mut s = TcpStream::connect(&proxy).unwrap();
    s.write_all(
        b"GET /messages/?session_id=secret-token HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| l["target"] == "tether::access")
        .unwrap_or_else(|| panic!("no access line in {err}"));
    let fields = &access["fields"];
    assert_eq!(fields["method"], "GET");
    assert_eq!(fields["path"], "/messages/");
    assert_eq!(fields["status"], 404);
    assert_eq!(fields["session"].as_str().unwrap().len(), 8, "{access}");
    assert!(!err.contains("secret-token"), "{err}");
    std::fs::remove_file(&conf).unwrap();
}

#[test]
fn doctor_usage_errors_and_an_unreachable_url_exit_2_with_nothing_on_stdout() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let unreachable = format!("http://127.0.0.1:{closed}/mcp");
    for args in [
        vec!["doctor", "ftp://h/mcp"],
        vec!["doctor", "not a url"],
        vec!["doctor", "http://h/mcp", "--header", "no colon"],
        vec!["doctor", "http://h/mcp", "--sse-path", "sse"],
        vec!["doctor", "http://h/mcp", "--sessions", "0"],
        vec!["doctor", "http://h/mcp", "--hold", "soon"],
        vec!["doctor", &unreachable, "--timeout", "2s"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}

/// Runs `tether doctor` against `serve` (each accepted connection handed to
/// it on a thread) and returns its exit status, output and how long it took.
fn doctor_against(serve: fn(std::net::TcpStream)) -> (Option<i32>, String, std::time::Duration) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn));
        }
    });
    let started = std::time::Instant::now();
    let mut child = Command::new(BIN)
        .args(["doctor", &url, "--timeout", "1s", "--hold", "1s", "--json"])
        .args(["--sessions", "3", "--calls", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = started + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("doctor still running after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    (status.code(), out, started.elapsed())
}

#[test]
fn doctor_ends_against_a_server_that_never_answers_or_answers_garbage() {
    // Accepts, reads, never answers: every step costs one timeout, and the run ends.
    let (code, out, took) = doctor_against(|mut conn| {
        let mut buf = [0u8; 4096];
        while matches!(std::io::Read::read(&mut conn, &mut buf), Ok(n) if n > 0) {}
    });
    assert_eq!(code, Some(1), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mcp = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "mcp");
    assert_eq!(mcp.unwrap()["verdict"], "fail", "{out}");
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");

    // Not HTTP at all, or a head and an endless event-stream line: a report, no panic.
    for serve in [
        (|mut conn| {
            let _ = std::io::Write::write_all(&mut conn, b"\x00\xffHELLO\r\n\r\n");
        }) as fn(std::net::TcpStream),
        |mut conn| {
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nmcp-session-id: \xff\r\n\r\n";
            let _ = std::io::Write::write_all(&mut conn, head);
            let line = vec![b'x'; 64 * 1024];
            while std::io::Write::write_all(&mut conn, &line).is_ok() {}
        },
    ] {
        let (code, out, _) = doctor_against(serve);
        assert_eq!(code, Some(1), "{out}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&out).is_ok(),
            "{out}"
        );
    }
}
