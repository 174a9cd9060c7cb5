//! A session table in a store (`[sessions] store`): the client sees the
//! server's own ids, untouched; routing, 404s and binding are the token
//! path's. `memory` in process, and a real `redis-server` shared by two
//! Tether instances (down: 503, never 404; back: served again).

mod support;

use http::Method;
use mcp_tether::affinity::SessionKey;
use serde_json::{json, Value};
use support::redis::RedisServer;
use support::*;

const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");
const JSON: (&str, &str) = ("content-type", "application/json");

fn whoami(id: u32) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}}})
    .to_string()
}

/// A `whoami` in the session `id` through `t`: (status, body, Retry-After).
async fn call(t: &mcp_tether::Running, id: &str) -> (u16, Value, Option<String>) {
    let headers = [ACCEPT, JSON, ("mcp-session-id", id)];
    let resp = send_raw(Method::POST, &mcp_url(t), &headers, whoami(5))
        .await
        .unwrap();
    let retry = resp
        .headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, body, retry)
}

fn initialize(id: u32) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}})
    .to_string()
}

/// A session begun through `t` by `user` (the `x-user` identity header): its id.
async fn begin_as(t: &mcp_tether::Running, user: &str) -> String {
    let headers = [ACCEPT, JSON, ("x-user", user)];
    let resp = send_raw(Method::POST, &mcp_url(t), &headers, initialize(1))
        .await
        .unwrap();
    resp.headers["mcp-session-id"].to_str().unwrap().to_owned()
}

fn seen(replicas: &[Replica]) -> usize {
    replicas.iter().map(Replica::request_count).sum()
}

/// The ids each replica was sent in `Mcp-Session-Id`.
fn ids_seen(replicas: &[Replica]) -> Vec<String> {
    replicas
        .iter()
        .flat_map(Replica::requests)
        .filter_map(|r| Some(r.headers.get("mcp-session-id")?.to_str().ok()?.to_owned()))
        .collect()
}

#[tokio::test]
async fn a_memory_store_keeps_ids_untouched_and_routes_as_tokens_do() {
    let replicas = replicas(3).await;
    let t = tether_with(
        &replicas,
        &SessionKey::generate(),
        "[sessions]\nstore = \"memory\"\n",
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(StreamableClient::connect(&mcp_url(&t)).await.unwrap());
    }
    let mut owners = std::collections::BTreeSet::new();
    for c in &clients {
        let id = c.session_id().unwrap();
        assert!(
            !id.starts_with("t2.") && id.len() == 32,
            "not the server's id: {id}"
        );
        let first = c.whoami().await.unwrap();
        assert_eq!(c.whoami().await.unwrap(), first, "moved");
        assert_eq!(c.last_session_header().as_deref(), Some(id));
        owners.insert(first);
    }
    assert!(owners.len() >= 2, "all on {owners:?}");
    // The replicas saw exactly the ids the clients hold.
    let held: Vec<&str> = clients.iter().map(|c| c.session_id().unwrap()).collect();
    assert!(ids_seen(&replicas)
        .iter()
        .all(|id| held.contains(&id.as_str())));

    // An id the store does not know: 404, no backend.
    let before = seen(&replicas);
    let (status, body, _) = call(&t, "0123456789abcdef0123456789abcdef").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!(-32001))
    );
    assert_eq!(seen(&replicas), before);

    // A DELETE the owner accepts forgets the id.
    let gone = clients.pop().unwrap();
    let id = gone.session_id().unwrap().to_owned();
    assert_eq!(gone.delete().await.unwrap(), 200);
    let before = seen(&replicas);
    assert_eq!(call(&t, &id).await.0, 404);
    assert_eq!(seen(&replicas), before, "a forgotten id reached a backend");

    // The owner gone: 404, counted as orphaned.
    let c = &clients[0];
    let owner = c.whoami().await.unwrap();
    replicas.iter().find(|r| r.name() == owner).unwrap().kill();
    let (status, body, _) = call(&t, c.session_id().unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!(-32001))
    );
    let m = metrics(&t).await;
    assert!(m.contains("tether_sessions_orphaned_total{"), "{m}");
    assert_eq!(
        sample(&m, "tether_invalid_tokens_total{reason=\"not_stored\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "tether_session_store_operations_total{op=\"remove\",outcome=\"ok\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_legacy_endpoint_keeps_the_servers_id_and_its_posts_reach_the_owner() {
    let replicas = replicas(2).await;
    let t = tether_with(
        &replicas,
        &SessionKey::generate(),
        "[sessions]\nstore = \"memory\"\n",
    )
    .await;
    let mut c = LegacyClient::connect(&sse_url(&t)).await.unwrap();
    let endpoint = c.endpoint().to_owned();
    let id = endpoint.split("sessionId=").nth(1).unwrap().to_owned();
    assert!(!id.starts_with("t2.") && id.len() == 32, "{endpoint}");
    let first = c.whoami().await.unwrap();
    for _ in 0..3 {
        assert_eq!(c.whoami().await.unwrap(), first);
    }
    // A made-up id in the legacy slot: 404, no backend.
    let before = seen(&replicas);
    let resp = send_raw(
        Method::POST,
        &format!(
            "{}/messages?sessionId=ffffffffffffffffffffffffffffffff",
            base(&t)
        ),
        &[JSON],
        whoami(1),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(seen(&replicas), before);
    // A legacy id is not a Streamable one.
    assert_eq!(call(&t, &id).await.0, 404);
}

#[tokio::test]
async fn bound_sessions_in_a_store_are_their_callers_only() {
    let replicas = replicas(1).await;
    let extra = "[sessions]\nstore = \"memory\"\nbind = \"header:x-user\"\n";
    let t = tether_with(&replicas, &SessionKey::generate(), extra).await;
    let id = begin_as(&t, "alice").await;
    assert!(!id.starts_with("t2."));
    let send = |user: &'static str| {
        let (url, id) = (mcp_url(&t), id.clone());
        async move {
            let headers = [
                ACCEPT,
                JSON,
                ("mcp-session-id", id.as_str()),
                ("x-user", user),
            ];
            send_raw(Method::POST, &url, &headers, whoami(2))
                .await
                .unwrap()
                .status
        }
    };
    assert_eq!(send("alice").await, 200);
    let before = seen(&replicas);
    assert_eq!(send("bob").await, 404);
    assert_eq!(seen(&replicas), before);
}

async fn redis_tether(
    redis: &RedisServer,
    key: &SessionKey,
    replicas: &[Replica],
) -> mcp_tether::Running {
    let extra = format!(
        "[sessions]\nstore = \"{}\"\nstore_timeout = \"300ms\"\nttl = \"1h\"\n",
        redis.url()
    );
    tether_with(replicas, key, &extra).await
}

#[tokio::test]
async fn two_instances_share_sessions_in_redis_and_a_redis_outage_is_503_not_404() {
    if !support::redis::available() {
        eprintln!("SKIPPED: no redis-server here (CI installs Debian's)");
        return;
    }
    let mut redis = RedisServer::start();
    let replicas = replicas(3).await;
    let key = SessionKey::generate();
    let a = redis_tether(&redis, &key, &replicas).await;
    let b = redis_tether(&redis, &key, &replicas).await;
    let c = StreamableClient::connect(&mcp_url(&a)).await.unwrap();
    let id = c.session_id().unwrap().to_owned();
    assert!(!id.starts_with("t2."), "{id}");
    let owner = c.whoami().await.unwrap();
    for t in [&a, &b] {
        let (status, body, _) = call(t, &id).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.to_string().contains(&owner), "{body}");
    }
    // Redis holds the id with its TTL, renewed by each lookup.
    let key = format!("tether:s:{id}");
    let ttl = |redis: &RedisServer| -> i64 {
        redis.command(&["TTL", &key]).unwrap()[1..].parse().unwrap()
    };
    assert_eq!(
        redis.command(&["EXPIRE", &key, "100"]).as_deref(),
        Some(":1")
    );
    assert!(ttl(&redis) <= 100);
    assert_eq!(call(&a, &id).await.0, 200);
    assert!(
        (3500..=3600).contains(&ttl(&redis)),
        "the lookup did not renew the TTL"
    );

    // Redis down: 503 with Retry-After and a JSON-RPC body, never 404; no backend.
    redis.stop();
    let before = seen(&replicas);
    for t in [&a, &b] {
        let (status, body, retry) = call(t, &id).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], -32603);
        assert_eq!(body["id"], 5);
    }
    assert_eq!(seen(&replicas), before);
    // Redis back (its data kept): the same session is served again by both.
    redis.restart();
    for t in [&a, &b] {
        eventually("Tether to reach Redis again", || async {
            call(t, &id).await.0 == 200
        })
        .await;
    }
    let m = metrics(&a).await;
    assert!(
        sample(
            &m,
            "tether_session_store_operations_total{op=\"get\",outcome=\"error\"}"
        ) >= 1.0
    );
    assert!(
        sample(
            &m,
            "tether_rejected_requests_total{reason=\"store_unavailable\"}"
        ) >= 1.0
    );
    // A DELETE through B removes the entry for A too.
    let resp = send_raw(
        Method::DELETE,
        &mcp_url(&b),
        &[("mcp-session-id", id.as_str())],
        "",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        redis
            .command(&["EXISTS", &format!("tether:s:{id}")])
            .as_deref(),
        Some(":0")
    );
    assert_eq!(call(&a, &id).await.0, 404);
}

/// `[sessions]` naming a Redis where nothing listens.
fn unreachable_store() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("[sessions]\nstore = \"redis://127.0.0.1:{port}\"\nstore_timeout = \"200ms\"\n")
}

#[tokio::test]
async fn a_new_session_that_cannot_be_recorded_gets_503() {
    let replicas = replicas(1).await;
    let t = tether_with(&replicas, &SessionKey::generate(), &unreachable_store()).await;
    let resp = send_raw(Method::POST, &mcp_url(&t), &[ACCEPT, JSON], initialize(3))
        .await
        .unwrap();
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.headers.get("mcp-session-id").is_none());
    // The session the server made for it is ended, not left to time out.
    eventually("a DELETE for the unrecorded session", || async {
        replicas[0]
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.headers.contains_key("mcp-session-id"))
    })
    .await;
    assert_eq!(replicas[0].live_sessions(), 0);
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(
        (body["error"]["code"].clone(), body["id"].clone()),
        (json!(-32603), json!(3))
    );
}

/// A legacy backend whose endpoint's id needs percent-encoding (`ab+cd`).
async fn encoded_legacy_backend() -> mcp_tether_testkit::raw::RawBackend {
    use mcp_tether_testkit::raw::{After, RawBackend};
    RawBackend::start(|req: &str| {
        if req.starts_with("GET /sse") {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
            let event = "event: endpoint\r\ndata: /messages?sessionId=ab%2Bcd\r\n\r\n";
            (format!("{head}{event}").into_bytes(), After::Hang)
        } else {
            let answer = "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
            (answer.as_bytes().to_vec(), After::KeepOpen)
        }
    })
    .await
}

/// Opens `/sse` through `t` on a raw connection; what came up to the end
/// of the endpoint event's data line.
async fn open_sse(t: &mcp_tether::Running) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    s.write_all(b"GET /sse HTTP/1.1\r\nHost: lb\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    // The endpoint event as the server wrote it (a rewrite would never end it so).
    mcp_tether_testkit::raw::read_until(&mut s, &mut got, "sessionId=ab%2Bcd\r\n").await;
    (s, String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn a_legacy_id_is_kept_as_the_url_carries_it() {
    let backend = encoded_legacy_backend().await;
    let t = tether_urls(vec![backend.url()], "[sessions]\nstore = \"memory\"\n").await;
    let (_stream, got) = open_sse(&t).await;
    assert!(got.contains("data: /messages?sessionId=ab%2Bcd"), "{got}");
    let resp = send_raw(
        Method::POST,
        &format!("{}/messages?sessionId=ab%2Bcd", base(&t)),
        &[JSON],
        whoami(1),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 202, "{}", resp.text());
    assert!(backend
        .seen()
        .iter()
        .any(|r| r.starts_with("POST /messages?sessionId=ab%2Bcd ")));
}

#[tokio::test]
async fn an_endpoint_whose_session_cannot_be_recorded_never_reaches_the_client() {
    let replicas = replicas(1).await;
    let t = tether_with(&replicas, &SessionKey::generate(), &unreachable_store()).await;
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    s.write_all(b"GET /sse HTTP/1.1\r\nHost: lb\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let got = mcp_tether_testkit::raw::read_to_close(&mut s).await;
    assert!(
        !got.contains("endpoint"),
        "an unrecorded session was handed out: {got}"
    );
    let m = metrics(&t).await;
    assert_eq!(
        sample(
            &m,
            "tether_session_store_operations_total{op=\"put\",outcome=\"error\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_reload_that_changes_the_ttl_keeps_the_sessions() {
    let replicas = replicas(1).await;
    let dir = std::env::temp_dir().join(format!("tether-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("tether.toml");
    let write = |ttl: &str| {
        let toml = format!(
            "{}[sessions]\nstore = \"memory\"\nttl = \"{ttl}\"\n",
            test_toml("")
        );
        std::fs::write(&conf, toml).unwrap();
    };
    write("1h");
    let t = start_from_file(&conf, replicas.iter().map(Replica::url).collect()).await;
    let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    write("2h");
    t.control.reload().unwrap();
    let served = c.whoami().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(served.unwrap(), "replica-1", "the reload lost the table");
}

#[tokio::test]
async fn a_modern_request_never_carries_a_stored_id_to_a_backend() {
    let replicas = replicas(1).await;
    let extra = "[sessions]\nstore = \"memory\"\nbind = \"header:x-user\"\n";
    let t = tether_with(&replicas, &SessionKey::generate(), extra).await;
    let id = begin_as(&t, "alice").await;
    // Bob names the 2026-07-28 revision, which has no sessions: the id is
    // dropped on the way, so alice's session is not his.
    let modern = [
        ACCEPT,
        JSON,
        ("mcp-session-id", id.as_str()),
        ("x-user", "bob"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "whoami"),
    ];
    let before = replicas[0].request_count();
    send_raw(Method::POST, &mcp_url(&t), &modern, whoami(4))
        .await
        .unwrap();
    let sent = &replicas[0].requests()[before..];
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].headers.get("mcp-session-id").is_none(),
        "{:?}",
        sent[0].headers
    );
}

#[tokio::test]
async fn a_rediss_store_is_verified_against_its_ca() {
    if !support::redis::available() {
        eprintln!("SKIPPED: no redis-server here (CI installs Debian's)");
        return;
    }
    let ca = support::pki::Ca::new("redis");
    let leaf = ca.issue("redis", &["127.0.0.1"]);
    let redis = RedisServer::start_tls(&leaf.cert, &leaf.key);
    let replicas = replicas(2).await;
    let key = SessionKey::generate();
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let extra = format!(
        "[sessions]\nstore = \"{url}\"\nstore_ca = \"{}\"\n",
        ca.pem_path().display()
    );
    let a = tether_with(&replicas, &key, &extra).await;
    let b = tether_with(&replicas, &key, &extra).await;
    let c = StreamableClient::connect(&mcp_url(&a)).await.unwrap();
    let id = c.session_id().unwrap().to_owned();
    assert!(!id.starts_with("t2."));
    let (status, body, _) = call(&b, &id).await;
    assert_eq!(status, 200, "the other instance found it over TLS: {body}");
    // Verified, not merely encrypted: the system's roots do not know this CA.
    let untrusting =
        tether_with(&replicas, &key, &format!("[sessions]\nstore = \"{url}\"\n")).await;
    assert_eq!(call(&untrusting, &id).await.0, 503);
}
