//! Interop with the official Rust SDK: `rmcp` 3.9's Streamable HTTP client
//! (reqwest) through Tether to test-kit replicas, including failover.
//!
//! # What rmcp 3.9 does on a 404 for its session (read in `rmcp-3.9.0/src/`)
//!
//! It re-initializes by itself and retries the call, transparently:
//!
//! 1. `transport/common/reqwest/streamable_http_client.rs:272`: a POST answered
//!    404 while a session id was attached (line 229) becomes
//!    `StreamableHttpError::SessionExpired`. The status alone decides; the body
//!    is not read, so Tether's JSON-RPC -32001 body is for other clients.
//! 2. `transport/streamable_http_client.rs:1692`: `will_retry` is true for an
//!    ordinary (non-control) POST that got `SessionExpired` when
//!    `reinit_on_expired_session` is set (default `true`, line 2245) and the
//!    transport saw the original `initialize`; line 1718 queues it in
//!    `recovery_posts`.
//! 3. Line 1333: once the old session's POSTs are done, the worker calls
//!    `perform_reinitialization` (line 1059), which POSTs the saved
//!    `initialize` *without* a session id, takes the new `Mcp-Session-Id` and
//!    POSTs `notifications/initialized`. The worker then aborts the old
//!    streams, opens a new GET stream and (line 1384, `retrying_recovery`)
//!    re-sends each queued POST once, same JSON-RPC id, on the new session.
//!    The caller just gets the answer.
//!
//! Limits seen in that code: only POSTs trigger recovery (a 404 on the
//! standalone GET stream's reconnect, which the tap does see after a kill, is
//! a plain stream error, logged); control
//! messages (responses, `notifications/cancelled`) are not retried; the new
//! `InitializeResult` is not handed to the service (line 1049 doc), so
//! `peer_info()` still names the server of the first session.
//!
//! The tap below sits between rmcp and Tether and records every exchange, so
//! the tests see the bytes rmcp really sends (tokens) and gets (404s).

mod support;

use std::any::TypeId;
use std::collections::{BTreeMap, BTreeSet};

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::transport::{DynamicTransportError, StreamableHttpClientTransport};
use rmcp::{ServiceError, ServiceExt};
use serde_json::{json, Value};
use support::*;

type Client = RunningService<RoleClient, ClientConfig>;

/// An rmcp client, initialized. It asks for 2025-11-25, the newest revision
/// with sessions (rmcp's default `LATEST` is the sessionless 2026-07-28, and
/// the test kit echoes any requested version, where a real server would
/// answer with one it supports).
async fn connect(url: &str) -> Client {
    within(
        "rmcp initialize",
        info().serve(StreamableHttpClientTransport::from_uri(url)),
    )
    .await
    .expect("rmcp initialize")
}

fn info() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("tether-interop", "0.1.0"),
    )
    .with_protocol_version(ProtocolVersion::V_2025_11_25)
}

async fn whoami(client: &Client) -> String {
    let result = within(
        "rmcp whoami",
        client.call_tool(CallToolRequestParams::new("whoami")),
    )
    .await
    .expect("whoami");
    result.content[0].as_text().expect("text").text.clone()
}

/// The replica named in the `initialize` answer of the client's first session.
fn server_name(client: &Client) -> String {
    client
        .peer_info()
        .expect("initialized")
        .server_info
        .as_ref()
        .expect("serverInfo")
        .name
        .clone()
}

/// `whoami` `n` times; all answers must be the same replica.
async fn sticky(client: &Client, n: usize) -> String {
    let first = whoami(client).await;
    for _ in 1..n {
        assert_eq!(whoami(client).await, first, "session moved");
    }
    first
}

/// How many `initialize` requests a replica has received.
fn initializes(replica: &Replica) -> usize {
    replica
        .requests()
        .iter()
        .filter(|r| rpc_method(&r.body).as_deref() == Some("initialize"))
        .count()
}

/// Session ids a replica minted (from the `Mcp-Session-Id` it received).
fn server_ids(replica: &Replica) -> BTreeSet<String> {
    replica
        .requests()
        .iter()
        .filter_map(|r| r.headers.get("mcp-session-id"))
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn rpc_method(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("method").and_then(Value::as_str).map(str::to_owned)
}

fn orphaned(metrics: &str, replica: &Replica) -> f64 {
    let backend = replica.url().trim_start_matches("http://").to_owned();
    sample(
        metrics,
        &format!("tether_sessions_orphaned_total{{backend=\"{backend}\"}}"),
    )
}

#[tokio::test]
async fn rmcp_sessions_stick_to_one_replica_and_spread_over_the_pool() {
    let replicas = replicas(3).await;
    let t = tether(&replicas).await;
    let url = mcp_url(&t);

    let client = connect(&url).await;
    let owner = server_name(&client);
    assert!(replicas.iter().any(|r| r.name() == owner), "{owner}");
    let tools = within("list_tools", client.list_tools(None))
        .await
        .expect("list_tools");
    let names: BTreeSet<_> = tools.tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(
        names,
        ["echo", "sleep", "whoami"].map(String::from).into(),
        "{tools:?}"
    );
    assert_eq!(sticky(&client, 5).await, owner, "whoami vs serverInfo");
    let echoed = within(
        "echo",
        client.call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(json!({"k": "v"}).as_object().unwrap().clone()),
        ),
    )
    .await
    .expect("echo");
    assert_eq!(echoed.content[0].as_text().unwrap().text, r#"{"k":"v"}"#);

    // Concurrent clients: each stays on its replica, together they use the pool.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let url = url.clone();
        set.spawn(async move {
            let c = connect(&url).await;
            let first = server_name(&c);
            assert_eq!(sticky(&c, 4).await, first, "moved after initialize");
            (c, first)
        });
    }
    let mut per_replica = BTreeMap::<String, usize>::new();
    let mut clients = Vec::new();
    while let Some(joined) = within("clients", set.join_next()).await {
        let (c, owner) = joined.expect("client task");
        *per_replica.entry(owner).or_default() += 1;
        clients.push(c);
    }
    assert!(
        per_replica.len() >= 2,
        "all on one replica: {per_replica:?}"
    );
    // One initialize per session, nothing re-initialized along the way.
    let total: usize = replicas.iter().map(initializes).sum();
    assert_eq!(total, 7);
    for c in clients {
        within("close", c.cancel()).await.expect("close");
    }
    within("close", client.cancel()).await.expect("close");
}

#[tokio::test]
async fn rmcp_reinitializes_on_another_replica_when_its_owner_dies() {
    let replicas = replicas(3).await;
    let t = tether(&replicas).await;
    let tap = tap::Tap::start(&mcp_url(&t)).await;

    let client = connect(&tap.url).await;
    let owner = sticky(&client, 3).await;
    let victim = replicas.iter().find(|r| r.name() == owner).unwrap();
    let old_token = tap.log()[0]
        .returned
        .clone()
        .expect("token from initialize");

    // Bystanders on the other replicas (pool: least outstanding, then round robin).
    let mut bystanders = Vec::new();
    for _ in 0..12 {
        if bystanders.len() == 4 {
            break;
        }
        let c = connect(&mcp_url(&t)).await;
        let name = sticky(&c, 1).await;
        if name != owner {
            bystanders.push((c, name));
        } else {
            within("close", c.cancel()).await.expect("close");
        }
    }
    assert_eq!(bystanders.len(), 4, "new sessions keep landing on {owner}");
    let survivors: Vec<_> = replicas.iter().filter(|r| r.name() != owner).collect();
    let inits_before: usize = survivors.iter().map(|r| initializes(r)).sum();
    let before = tap.log().len();

    victim.kill();

    // The very next call succeeds, on another replica, with no help from us.
    let moved = whoami(&client).await;
    assert_ne!(moved, owner, "answered by the dead owner");
    assert!(survivors.iter().any(|r| r.name() == moved), "{moved}");
    assert_eq!(sticky(&client, 3).await, moved, "the new session moved");
    // rmcp keeps the first handshake's info (it does not surface the new one).
    assert_eq!(server_name(&client), owner);

    // What rmcp saw and did, in order: 404 for the old token, a fresh
    // initialize without a session, then the same call on the new token.
    let after: Vec<_> = tap.log()[before..].to_vec();
    let posts: Vec<_> = after.iter().filter(|e| e.method == "POST").collect();
    let first = posts[0];
    assert_eq!(first.rpc.as_deref(), Some("tools/call"), "{after:#?}");
    assert_eq!(first.sent.as_deref(), Some(old_token.as_str()));
    assert_eq!(first.status, Some(404), "{after:#?}");
    let body: Value = serde_json::from_str(first.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":first.id.clone().unwrap()})
    );
    let init = posts[1];
    assert_eq!(init.rpc.as_deref(), Some("initialize"), "{after:#?}");
    assert_eq!(init.sent, None, "re-initialize must not carry a session");
    assert_eq!(init.status, Some(200));
    let new_token = init.returned.clone().expect("new token");
    assert_ne!(new_token, old_token);
    assert_eq!(posts[2].rpc.as_deref(), Some("notifications/initialized"));
    let retry = posts[3];
    assert_eq!(retry.rpc.as_deref(), Some("tools/call"));
    assert_eq!(retry.id, first.id, "the same request, retried");
    assert_eq!(retry.sent.as_deref(), Some(new_token.as_str()));
    assert_eq!(retry.status, Some(200));
    // Every later POST uses the new token; the old one only ever got 404s
    // (the POST above, and any reconnect of the old GET stream).
    for e in &posts[2..] {
        assert_eq!(e.sent.as_deref(), Some(new_token.as_str()), "{e:?}");
    }

    // Exactly one new session on the survivors; the bystanders did not move
    // and did not re-initialize.
    for (c, name) in &bystanders {
        assert_eq!(&sticky(c, 2).await, name, "bystander moved");
    }
    let inits_after: usize = survivors.iter().map(|r| initializes(r)).sum();
    assert_eq!(inits_after, inits_before + 1);

    // Tether counted the orphaned requests against the dead owner (one per
    // old-token request: the POST, plus any GET reconnects that reached it).
    // The tap logs a request before forwarding it, so a log read after the
    // metrics holds every request Tether counted.
    let m = metrics(&t).await;
    let old_hits: Vec<_> = tap.log()[before..]
        .iter()
        .filter(|e| e.sent.as_deref() == Some(old_token.as_str()))
        .cloned()
        .collect();
    assert!(
        old_hits
            .iter()
            .all(|e| matches!(e.status, Some(404) | None)),
        "the old token got something else than 404: {old_hits:#?}"
    );
    let counted = orphaned(&m, victim);
    assert!(counted >= 1.0, "{m}");
    assert!(
        counted <= old_hits.len() as f64,
        "{counted} > {old_hits:#?}"
    );
    for r in &survivors {
        assert_eq!(orphaned(&m, r), 0.0, "{m}");
    }

    within("close", client.cancel()).await.expect("close");
    for (c, _) in bystanders {
        within("close", c.cancel()).await.expect("close");
    }
}

#[tokio::test]
async fn rmcp_only_ever_holds_the_sealed_token() {
    let replicas = replicas(2).await;
    let t = tether(&replicas).await;
    let tap = tap::Tap::start(&mcp_url(&t)).await;

    let client = connect(&tap.url).await;
    let owner = sticky(&client, 3).await;
    within("list_tools", client.list_tools(None))
        .await
        .expect("list_tools");
    within("close", client.cancel()).await.expect("close");
    let replica = replicas.iter().find(|r| r.name() == owner).unwrap();

    // What the replica minted and what rmcp got.
    let minted = server_ids(replica);
    assert_eq!(minted.len(), 1, "{minted:?}");
    let server_id = minted.into_iter().next().unwrap();
    let log = tap.log();
    let token = log[0]
        .returned
        .clone()
        .expect("token on the initialize answer");
    assert_eq!(log[0].rpc.as_deref(), Some("initialize"));
    assert_eq!(log[0].sent, None);
    assert_ne!(token, server_id);
    assert!(!token.contains(&server_id), "{token} leaks {server_id}");

    // rmcp sent the token back unchanged on every later request (POSTs, its
    // GET stream, the DELETE on close), and only ever saw that token back.
    let methods: BTreeSet<_> = log[1..].iter().map(|e| e.method.as_str()).collect();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{log:#?}"
    );
    for e in &log[1..] {
        assert_eq!(e.sent.as_deref(), Some(token.as_str()), "{e:?}");
        if let Some(returned) = &e.returned {
            assert_eq!(returned, &token, "{e:?}");
        }
        assert!(matches!(e.status, Some(200 | 202)), "{e:?}");
    }
    for e in &log {
        assert!(
            !e.returned.as_deref().unwrap_or("").contains(&server_id),
            "{e:?}"
        );
    }
    // And the replica only ever saw its own id, never the token.
    for r in replica.requests().iter().skip(1) {
        assert_eq!(r.headers["mcp-session-id"], server_id.as_str());
    }
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_invalid_tokens_total{reason=\"forged\"}"),
        0.0,
        "{m}"
    );
}

/// With `reinit_on_expired_session(false)` rmcp surfaces the 404 to the caller
/// as `SessionExpired` and stays on the dead session; a new client recovers.
/// (What protocol.md says the TypeScript and Python clients do by default.)
#[tokio::test]
async fn without_reinit_rmcp_reports_session_expired_and_a_new_client_recovers() {
    let replicas = replicas(3).await;
    let t = tether(&replicas).await;
    let config =
        StreamableHttpClientTransportConfig::with_uri(mcp_url(&t)).reinit_on_expired_session(false);
    let transport = StreamableHttpClientTransport::from_config(config);
    let is_expired = session_expired_of(&transport);
    let client = within("initialize", info().serve(transport))
        .await
        .expect("initialize");
    let owner = sticky(&client, 2).await;
    let victim = replicas.iter().find(|r| r.name() == owner).unwrap();
    victim.kill();

    for _ in 0..2 {
        let err = within(
            "call after kill",
            client.call_tool(CallToolRequestParams::new("whoami")),
        )
        .await
        .expect_err("the dead session answered");
        match &err {
            ServiceError::TransportSend(e) => assert!(is_expired(e), "{err:?}"),
            other => panic!("expected SessionExpired, got {other:?}"),
        }
        assert!(
            err.to_string().contains("Session expired (HTTP 404)"),
            "{err}"
        );
    }
    let m = metrics(&t).await;
    assert!(orphaned(&m, victim) >= 2.0, "{m}");
    within("close", client.cancel()).await.expect("close");

    let again = connect(&mcp_url(&t)).await;
    let moved = sticky(&again, 2).await;
    assert_ne!(moved, owner);
    within("close", again.cancel()).await.expect("close");
}

/// A predicate for "this transport error is rmcp's `SessionExpired`", typed by
/// the transport (the reqwest error type is not nameable from here).
fn session_expired_of<C: StreamableHttpClient>(
    _: &StreamableHttpClientTransport<C>,
) -> impl Fn(&DynamicTransportError) -> bool {
    |e| {
        e.transport_type_id == TypeId::of::<StreamableHttpClientTransport<C>>()
            && matches!(
                e.error.downcast_ref::<StreamableHttpError<C::Error>>(),
                Some(StreamableHttpError::SessionExpired)
            )
    }
}

/// A recording HTTP forwarder between rmcp and Tether: the only place the
/// headers rmcp really sends and receives can be seen (the SDK does not
/// expose its session id).
mod tap {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use serde_json::Value;
    use tokio::net::TcpListener;
    use tokio::task::JoinSet;

    type Body = BoxBody<Bytes, hyper::Error>;

    /// One request as rmcp sent it and the head of Tether's answer.
    #[derive(Clone, Debug)]
    pub struct Exchange {
        pub method: String,
        /// JSON-RPC `method` of the body, if any.
        pub rpc: Option<String>,
        /// JSON-RPC `id` of the body, if any.
        pub id: Option<Value>,
        /// `Mcp-Session-Id` rmcp sent.
        pub sent: Option<String>,
        pub status: Option<u16>,
        /// `Mcp-Session-Id` Tether answered with.
        pub returned: Option<String>,
        /// The body of a 404.
        pub body: Option<String>,
    }

    pub struct Tap {
        pub url: String,
        log: Arc<Mutex<Vec<Exchange>>>,
        _tasks: JoinSet<()>,
    }

    struct Upstream {
        base: String,
        path: String,
        client: Client<HttpConnector, Full<Bytes>>,
        log: Arc<Mutex<Vec<Exchange>>>,
    }

    impl Tap {
        /// Listens on 127.0.0.1:0 and forwards to `upstream` (an `http://host:port/path` URL).
        pub async fn start(upstream: &str) -> Tap {
            let uri: http::Uri = upstream.parse().unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr: SocketAddr = listener.local_addr().unwrap();
            let log = Arc::new(Mutex::new(Vec::new()));
            let up = Arc::new(Upstream {
                base: format!("http://{}", uri.authority().unwrap()),
                path: uri.path().to_owned(),
                client: Client::builder(TokioExecutor::new()).build_http(),
                log: log.clone(),
            });
            let mut tasks = JoinSet::new();
            tasks.spawn(async move {
                let mut conns = JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let up = up.clone();
                    conns.spawn(async move {
                        let svc = service_fn(move |req| forward(up.clone(), req));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                    while conns.try_join_next().is_some() {}
                }
            });
            Tap {
                url: format!("http://{addr}{}", uri.path()),
                log,
                _tasks: tasks,
            }
        }

        pub fn log(&self) -> Vec<Exchange> {
            self.log.lock().unwrap().clone()
        }
    }

    fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    fn full(bytes: impl Into<Bytes>) -> Body {
        Full::new(bytes.into())
            .map_err(|never: Infallible| match never {})
            .boxed()
    }

    async fn forward(
        up: Arc<Upstream>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let (mut parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return Ok(Response::new(full(""))),
        };
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        let at = {
            let mut log = up.log.lock().unwrap();
            log.push(Exchange {
                method: parts.method.to_string(),
                rpc: json
                    .as_ref()
                    .and_then(|v| v.get("method"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                id: json.as_ref().and_then(|v| v.get("id")).cloned(),
                sent: header(&parts.headers, "mcp-session-id"),
                status: None,
                returned: None,
                body: None,
            });
            log.len() - 1
        };
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        assert_eq!(parts.uri.path(), up.path, "rmcp used another path");
        parts.uri = format!("{}{}{query}", up.base, up.path).parse().unwrap();
        parts.headers.remove(http::header::HOST);
        let resp = match up
            .client
            .request(Request::from_parts(parts, Full::new(body)))
            .await
        {
            Ok(resp) => resp,
            Err(_) => {
                let mut r = Response::new(full("tap: upstream failed"));
                *r.status_mut() = StatusCode::BAD_GATEWAY;
                return Ok(r);
            }
        };
        let (parts, body) = resp.into_parts();
        let status = parts.status.as_u16();
        let record = |body: Option<&Bytes>| {
            let mut log = up.log.lock().unwrap();
            let e = &mut log[at];
            e.status = Some(status);
            e.returned = header(&parts.headers, "mcp-session-id");
            e.body = body.map(|b| String::from_utf8_lossy(b).into_owned());
        };
        if status == 404 {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            record(Some(&bytes));
            return Ok(Response::from_parts(parts, full(bytes)));
        }
        record(None);
        Ok(Response::from_parts(parts, body.boxed()))
    }
}

/// A rolling restart as rmcp lives it: its replica is drained (its session goes on there), then
/// stopped; the next call gets the 404 and rmcp re-initializes, on a replica still active.
#[tokio::test]
async fn rmcp_keeps_its_session_on_a_draining_replica_and_moves_when_it_stops() {
    let replicas = replicas(2).await;
    let t = tether(&replicas).await;
    let client = connect(&mcp_url(&t)).await;
    let owner = sticky(&client, 2).await;
    let victim = replicas.iter().find(|r| r.name() == owner).unwrap();
    let admin = t.admin_addr.unwrap();
    let drain = format!(
        "http://{admin}/backends/{}/drain",
        victim.url().trim_start_matches("http://")
    );
    let resp = send_raw(http::Method::POST, &drain, &[], "").await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        sticky(&client, 3).await,
        owner,
        "draining: its session stays"
    );
    victim.kill();
    let moved = whoami(&client).await;
    assert_ne!(moved, owner);
    assert_eq!(sticky(&client, 2).await, moved);
    within("close", client.cancel()).await.expect("close");
}
