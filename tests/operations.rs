//! Operations through the admin API with the test kit's replicas: backend states, drain and
//! undrain, the admin token, `/config` redaction, readiness, the backends file, reload,
//! graceful shutdown. (The same with real SDK replicas, DNS, health and rolling restarts:
//! interop/python/test_operations.py.)

mod support;

use mcp_tether::affinity::SessionKey;
use mcp_tether::config::{parse_file, Config, Overrides};
use mcp_tether::{start, Running};
use serde_json::Value;
use support::*;

async fn admin(
    t: &Running,
    method: http::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let admin = t.admin_addr.expect("admin listener");
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let resp = send_raw(method, &format!("http://{admin}{path}"), &headers, "")
        .await
        .expect("admin answers");
    (resp.status, resp.text())
}

async fn backends(t: &Running) -> Vec<Value> {
    let (status, body) = admin(t, http::Method::GET, "/backends", None).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["backends"].as_array().unwrap().clone()
}

async fn state_of(t: &Running, id: &str) -> String {
    backends(t)
        .await
        .iter()
        .find(|b| b["address"] == id)
        .map(|b| b["state"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| "absent".into())
}

fn id(r: &Replica) -> String {
    r.url().trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn drain_takes_new_sessions_away_and_keeps_old_ones() {
    let reps = replicas(2).await;
    let t = tether_with(&reps, &SessionKey::generate(), "").await;
    let list = backends(&t).await;
    assert_eq!(list.len(), 2);
    for b in &list {
        assert_eq!(b["state"], "active");
        assert_eq!(b["source"], "static");
        for key in [
            "health",
            "outstanding",
            "streams",
            "sessions_created",
            "sessions_orphaned",
        ] {
            assert!(!b[key].is_null(), "{key} missing: {b}");
        }
    }
    // One session on each replica.
    let a = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    let b = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    let (wa, wb) = (a.whoami().await.unwrap(), b.whoami().await.unwrap());
    assert_ne!(wa, wb);
    let (drained, drained_id) = if wa == "replica-1" {
        (&a, id(&reps[0]))
    } else {
        (&b, id(&reps[0]))
    };

    let path = format!("/backends/{drained_id}/drain");
    let (status, body) = admin(&t, http::Method::POST, &path, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"state\":\"draining\""), "{body}");
    assert_eq!(state_of(&t, &drained_id).await, "draining");
    // Its session still works; new sessions all go to the other replica.
    assert_eq!(drained.whoami().await.unwrap(), "replica-1");
    for _ in 0..4 {
        let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
        assert_eq!(c.whoami().await.unwrap(), "replica-2");
    }
    let created: Vec<u64> = backends(&t)
        .await
        .iter()
        .map(|b| b["sessions_created"].as_u64().unwrap())
        .collect();
    assert_eq!(created.iter().sum::<u64>(), 6, "{created:?}");

    let (status, _) = admin(
        &t,
        http::Method::POST,
        &format!("/backends/{drained_id}/undrain"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(state_of(&t, &drained_id).await, "active");
    let (status, body) = admin(&t, http::Method::POST, "/backends/nope:1/drain", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = admin(&t, http::Method::POST, "/backends/x", None).await;
    assert_eq!(status, 404);

    let text = metrics(&t).await;
    let series = format!("tether_backend_state{{backend=\"{drained_id}\",state=\"active\"}}");
    assert_eq!(sample(&text, &series), 1.0, "{text}");
}

#[tokio::test]
async fn readiness_needs_an_active_backend() {
    let reps = replicas(1).await;
    let t = tether(&reps).await;
    assert_eq!(admin(&t, http::Method::GET, "/readyz", None).await.0, 200);
    assert_eq!(admin(&t, http::Method::GET, "/healthz", None).await.0, 200);
    let path = format!("/backends/{}/drain", id(&reps[0]));
    assert_eq!(admin(&t, http::Method::POST, &path, None).await.0, 200);
    let (status, body) = admin(&t, http::Method::GET, "/readyz", None).await;
    assert_eq!(
        (status, body.trim()),
        (503, "no backend takes new sessions")
    );
    // All drained: a new session has nowhere to go.
    let err = StreamableClient::connect(&mcp_url(&t)).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
}

#[tokio::test]
async fn the_admin_token_guards_posts_and_config_shows_no_secret() {
    let reps = replicas(1).await;
    let key = SessionKey::generate();
    let file = parse_file(
        "admin = { listen = \"127.0.0.1:0\", token = \"t0ken-xyz\" }\n[health]\ncheck = \"none\"\n",
        "test",
    )
    .unwrap();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        backends: reps.iter().map(Replica::url).collect(),
        ..Overrides::default()
    };
    let key_text = key.to_base64();
    let env = move |name: &str| (name == "TETHER_SESSION_KEY").then(|| key_text.clone());
    let t = start(Config::from_parts(file, overrides, &env).unwrap())
        .await
        .unwrap();
    let path = format!("/backends/{}/drain", id(&reps[0]));
    let (status, body) = admin(&t, http::Method::POST, &path, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        admin(&t, http::Method::POST, &path, Some("wrong")).await.0,
        401
    );
    assert_eq!(
        admin(&t, http::Method::POST, &path, Some("t0ken-xyz"))
            .await
            .0,
        200
    );
    // GETs need no token.
    let (status, body) = admin(&t, http::Method::GET, "/config", None).await;
    assert_eq!(status, 200);
    assert!(
        !body.contains("t0ken-xyz") && !body.contains(&key.to_base64()),
        "{body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["admin_token"], "<redacted>");
    assert!(
        v["session_key"]
            .as_str()
            .unwrap()
            .contains("TETHER_SESSION_KEY"),
        "{v}"
    );
    assert_eq!(v["pools"]["default"]["health"]["check"], "none");
    assert_eq!(v["timeouts"]["upstream_idle"], "4s");
    // Without a file there is nothing to reload.
    let (status, body) = admin(&t, http::Method::POST, "/reload", Some("t0ken-xyz")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("without --config"), "{body}");
}

#[tokio::test]
async fn a_configured_drain_holds_from_the_start() {
    let reps = replicas(2).await;
    let extra = format!(
        "backends = [{{ url = \"{}\", drain = true }}, \"{}\"]",
        reps[0].url(),
        reps[1].url()
    );
    let file = parse_file(&test_toml(&extra), "test").unwrap();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Overrides::default()
    };
    let t = start(Config::from_parts(file, overrides, &|_| None).unwrap())
        .await
        .unwrap();
    assert_eq!(state_of(&t, &id(&reps[0])).await, "draining");
    for _ in 0..3 {
        let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
        assert_eq!(c.whoami().await.unwrap(), "replica-2");
    }
}

#[tokio::test]
async fn a_backends_file_is_followed_and_reload_swaps_the_rest() {
    let reps = replicas(3).await;
    let dir = std::env::temp_dir().join(format!("tether-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("backends.txt");
    std::fs::write(&list, format!("# replicas\n{}\n", reps[0].url())).unwrap();
    let conf = dir.join("tether.toml");
    let toml = |extra: &str| {
        format!(
            "admin = \"127.0.0.1:0\"\n{extra}\n[discovery]\nfile = \"{}\"\ninterval = \"50ms\"\n[drain]\nidle = \"1s\"\n[health]\ncheck = \"none\"\n",
            list.display()
        )
    };
    std::fs::write(&conf, toml("")).unwrap();
    let t = start_from_file(&conf, Vec::new()).await;
    eventually("the file read", || async { backends(&t).await.len() == 1 }).await;
    let first = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    assert_eq!(first.whoami().await.unwrap(), "replica-1");
    assert!(backends(&t).await[0]["source"]
        .as_str()
        .unwrap()
        .starts_with("file:"));

    // replica-1 leaves the file, replica-2 joins: replica-1 drains, then goes once idle.
    std::fs::write(&list, format!("{}\n", reps[1].url())).unwrap();
    eventually("replica-1 draining", || async {
        state_of(&t, &id(&reps[0])).await == "draining"
    })
    .await;
    assert_eq!(
        first.whoami().await.unwrap(),
        "replica-1",
        "its session still works"
    );
    let second = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    assert_eq!(second.whoami().await.unwrap(), "replica-2");
    eventually("replica-1 removed", || async {
        state_of(&t, &id(&reps[0])).await == "absent"
    })
    .await;
    let err = first.whoami().await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    // A broken file keeps the last set.
    std::fs::write(&list, "ftp://nope\n").unwrap();
    eventually("the error counted", || async {
        sample(
            &metrics(&t).await,
            &format!(
                "tether_discovery_errors_total{{source=\"file:{}\"}}",
                list.display()
            ),
        ) >= 1.0
    })
    .await;
    assert_eq!(second.whoami().await.unwrap(), "replica-2");

    // Reload: a static backend added, a limit changed, a bad file refused.
    std::fs::write(
        &conf,
        toml(&format!(
            "backends = [\"{}\"]\n[limits]\nmax_request_body = 100\n",
            reps[2].url()
        )),
    )
    .unwrap();
    t.control.reload().unwrap();
    assert_eq!(state_of(&t, &id(&reps[2])).await, "active");
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{{\"x\":\"{}\"}}}}",
        "y".repeat(200)
    );
    let resp = send_raw(
        http::Method::POST,
        &mcp_url(&t),
        &[("content-type", "application/json")],
        big,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 413);
    assert_eq!(
        second.whoami().await.unwrap(),
        "replica-2",
        "the session outlived the reload"
    );
    std::fs::write(&conf, "listen = 5\n").unwrap();
    let err = t.control.reload().unwrap_err();
    assert!(err.to_string().contains("listen"), "{err}");
    assert_eq!(
        sample(
            &metrics(&t).await,
            "tether_reloads_total{outcome=\"rejected\"}"
        ),
        1.0
    );
    assert_eq!(
        state_of(&t, &id(&reps[2])).await,
        "active",
        "the old config stays"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_graceful_shutdown_ends_held_streams_cleanly_after_the_grace() {
    let reps = replicas(1).await;
    let t = tether_with(&reps, &SessionKey::generate(), "shutdown_grace = \"300ms\"").await;
    let mut legacy = LegacyClient::connect(&sse_url(&t)).await.unwrap();
    assert_eq!(legacy.whoami().await.unwrap(), "replica-1");
    let mut t = t;
    t.begin_shutdown();
    let (status, _) = admin(&t, http::Method::GET, "/readyz", None).await;
    assert_eq!(status, 503);
    // The stream ends (cleanly: the client sees the end of the body, not a cut)...
    let end = within("the stream to end", legacy.next_event()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
    // ...and then Tether is done.
    within("the shutdown to finish", t.finished()).await;
}

#[tokio::test]
async fn admin_actions_from_a_browser_page_are_refused() {
    let reps = replicas(1).await;
    let t = tether(&reps).await;
    let admin = t.admin_addr.unwrap();
    let path = format!("http://{admin}/backends/{}/drain", id(&reps[0]));
    for header in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let resp = send_raw(http::Method::POST, &path, &[header], "")
            .await
            .unwrap();
        assert_eq!(resp.status, 403, "{header:?}");
    }
    assert_eq!(state_of(&t, &id(&reps[0])).await, "active");
    let resp = send_raw(http::Method::POST, &path, &[("sec-fetch-site", "none")], "")
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "typed into the address bar: allowed");
}

/// Writes a request on a raw connection and reads until its answer's head is in.
async fn ask(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn the_connection_limit_holds_and_follows_reloads_both_ways() {
    use tokio::net::TcpStream;
    let reps = replicas(1).await;
    let dir = std::env::temp_dir().join(format!("tether-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("tether.toml");
    let write = |n: usize| {
        let text = format!(
            "admin = \"127.0.0.1:0\"\nbackends = [\"{}\"]\n[health]\ncheck = \"none\"\n[limits]\nmax_connections = {n}\n",
            reps[0].url()
        );
        std::fs::write(&conf, text).unwrap();
    };
    write(2);
    let t = start_from_file(&conf, Vec::new()).await;
    let mut a = TcpStream::connect(t.proxy_addr).await.unwrap();
    let mut b = TcpStream::connect(t.proxy_addr).await.unwrap();
    assert!(ask(&mut a).await.starts_with("HTTP/1.1"));
    assert!(ask(&mut b).await.starts_with("HTTP/1.1"));
    // A third waits in the backlog until one of the two closes.
    let mut c = TcpStream::connect(t.proxy_addr).await.unwrap();
    let third = tokio::spawn(async move {
        let head = ask(&mut c).await;
        (c, head)
    });
    eventually("the listener to wait", || async {
        sample(&metrics(&t).await, "tether_connection_limit_waits_total") >= 1.0
    })
    .await;
    assert!(!third.is_finished());
    drop(a);
    let (c, head) = within("the third served", third).await.unwrap();
    assert!(head.starts_with("HTTP/1.1"), "{head}");
    // Lowered below what is open, then raised to none: nothing breaks (this
    // panicked once: a semaphore's permits overflowed).
    write(1);
    t.control.reload().unwrap();
    drop((b, c));
    write(0);
    t.control.reload().unwrap();
    let mut many = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(t.proxy_addr).await.unwrap();
        assert!(ask(&mut s).await.starts_with("HTTP/1.1"));
        many.push(s);
    }
    assert_eq!(sample(&metrics(&t).await, "tether_max_connections"), 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_reload_adds_and_removes_pools_and_routes_and_sessions_follow_their_owner() {
    let reps = replicas(2).await;
    let dir = std::env::temp_dir().join(format!("tether-pools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("tether.toml");
    let base = format!(
        "admin = \"127.0.0.1:0\"\n[drain]\nidle = \"200ms\"\n[health]\ncheck = \"none\"\n[pools.main]\nbackends = [\"{}\"]\n",
        reps[0].url()
    );
    std::fs::write(&conf, &base).unwrap();
    let t = start_from_file(&conf, Vec::new()).await;
    let before = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    assert_eq!(before.whoami().await.unwrap(), "replica-1");
    // A second pool and a route to it for the legacy path... and for /mcp of a host.
    std::fs::write(
        &conf,
        format!(
            "{base}[pools.extra]\nbackends = [\"{}\"]\n[[routes]]\nhost = \"extra.test\"\npool = \"extra\"\n[[routes]]\npool = \"main\"\n",
            reps[1].url()
        ),
    )
    .unwrap();
    t.control.reload().unwrap();
    let (_, pools) = admin(&t, http::Method::GET, "/pools", None).await;
    let pools: Value = serde_json::from_str(&pools).unwrap();
    assert_eq!(pools["pools"].as_array().unwrap().len(), 2, "{pools}");
    let (_, routes) = admin(&t, http::Method::GET, "/routes", None).await;
    assert!(routes.contains("extra.test"), "{routes}");
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let on_extra = send_raw(
        http::Method::POST,
        &mcp_url(&t),
        &[
            ("host", "extra.test"),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ],
        init.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(on_extra.status, 200);
    assert_eq!(
        reps[1].live_sessions(),
        1,
        "the host's route chose the extra pool"
    );
    assert_eq!(before.whoami().await.unwrap(), "replica-1", "sessions stay");
    // The pool removed: its backend drains and leaves; /pools shows it until then.
    std::fs::write(&conf, &base).unwrap();
    t.control.reload().unwrap();
    assert_eq!(state_of(&t, &id(&reps[1])).await, "draining");
    eventually("the removed pool's backend gone", || async {
        state_of(&t, &id(&reps[1])).await == "absent"
    })
    .await;
    let (_, pools) = admin(&t, http::Method::GET, "/pools", None).await;
    let pools: Value = serde_json::from_str(&pools).unwrap();
    assert_eq!(pools["pools"].as_array().unwrap().len(), 1, "{pools}");
    assert_eq!(before.whoami().await.unwrap(), "replica-1");
    std::fs::remove_dir_all(&dir).unwrap();
}
