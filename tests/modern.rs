//! The 2026-07-28 revision on the wire, against raw backends that show exactly
//! what reached them: header validation (no backend contacted on a mismatch),
//! routes by header, host and path, the era rule for session ids, and task
//! affinity (ids sealed in JSON and SSE answers, restored in body and
//! `Mcp-Name` on the way in, the unknown-task error with no backend contacted).
//! The same features with real SDK peers: interop/python/test_modern.py.

mod support;

use mcp_tether_testkit::raw::{exchange, post, After, RawBackend};
use serde_json::{json, Value};
use support::*;

const MODERN: &str = "MCP-Protocol-Version: 2026-07-28\r\n";

fn call(name: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": name, "arguments": {},
                      "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                "io.modelcontextprotocol/clientCapabilities":
                                    {"extensions": {"io.modelcontextprotocol/tasks": {}}}}}})
    .to_string()
}

fn task_request(method: &str, task_id: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 2, "method": method, "params": {"taskId": task_id}}).to_string()
}

/// A request to Tether on its own connection; the whole answer.
async fn send(t: &mcp_tether::Running, body: &str, fields: &str) -> String {
    let fields = format!("{MODERN}{fields}Connection: close\r\n");
    exchange(t.proxy_addr, post("/mcp", body, &fields).as_bytes()).await
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The JSON body of an answer (the last `data:` of an event stream, or the
/// de-chunked body).
fn body(answer: &str) -> Value {
    let (head, rest) = answer.split_once("\r\n\r\n").expect("a head");
    let text = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        rest.to_owned()
    };
    match text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
    {
        Some(data) => serde_json::from_str(data).expect("event data is JSON"),
        None => serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    }
}

fn respond_json(value: Value) -> (Vec<u8>, After) {
    let body = value.to_string();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    (
        [head.into_bytes(), body.into_bytes()].concat(),
        After::KeepOpen,
    )
}

/// A server with tasks: `tools/call` creates task `srv-NAME` (as JSON, or as
/// an event stream when the tool is `sse`); `tasks/*` answer about the id
/// they were sent.
fn task_server(name: &'static str) -> impl Fn(&str) -> (Vec<u8>, After) + Send + Sync {
    move |request: &str| {
        let body = request.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let message: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let id = &message["id"];
        let result = match message["method"].as_str() {
            Some("tools/call") => json!({"taskId": format!("srv-{name}"), "status": "working",
                                         "resultType": "task", "ttlMs": 60000}),
            _ => json!({"taskId": message["params"]["taskId"], "status": "completed",
                        "resultType": "complete", "result": {"content": [{"type": "text", "text": name}]}}),
        };
        let answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
        if message["params"]["name"] == "sse" {
            let events = format!(
                ": keepalive\n\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progress\":1}}}}\n\nevent: message\ndata: {answer}\n\n"
            );
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
                events.len()
            );
            return (
                [head.into_bytes(), events.into_bytes()].concat(),
                After::KeepOpen,
            );
        }
        respond_json(answer)
    }
}

#[tokio::test]
async fn a_mismatch_is_answered_400_and_reaches_no_backend() {
    let backend = RawBackend::start(task_server("a")).await;
    let t = tether_urls(vec![backend.url()], "").await;
    for (fields, why) in [
        ("Mcp-Method: tools/call\r\nMcp-Name: other\r\n", "Mcp-Name"),
        ("Mcp-Method: tools/call\r\n", "Mcp-Name is missing"),
        (
            "Mcp-Method: tools/list\r\nMcp-Name: whoami\r\n",
            "Mcp-Method",
        ),
        (
            "Mcp-Method: tools/call\r\nMcp-Name: whoami\r\nMcp-Name: whoami\r\n",
            "twice",
        ),
        (
            "Mcp-Method: tools/call\r\nMcp-Name: =?base64?%%?=\r\n",
            "base64",
        ),
    ] {
        let answer = send(&t, &call("whoami"), fields).await;
        assert_eq!(status(&answer), 400, "{fields}: {answer}");
        let v = body(&answer);
        assert_eq!(v["error"]["code"], -32020, "{answer}");
        assert_eq!(v["id"], 1);
        assert!(
            v["error"]["data"]["detail"].as_str().unwrap().contains(why),
            "{answer}"
        );
    }
    assert!(backend.seen().is_empty(), "{:?}", backend.seen());
    // Matching, base64-encoded, with an unknown Mcp-Param-* and a session id
    // (no session in this revision): forwarded, all of it untouched.
    let fields = "Mcp-Method: tools/call\r\nMcp-Name: =?base64?d2hvYW1p?=\r\nMcp-Param-Region: eu\r\nMcp-Session-Id: raw-id\r\n";
    let answer = send(&t, &call("whoami"), fields).await;
    assert_eq!(status(&answer), 200, "{answer}");
    let seen = backend.seen().join("");
    assert!(seen.contains("Mcp-Param-Region: eu"), "{seen}");
    assert!(seen.contains("Mcp-Session-Id: raw-id"), "{seen}");
    assert!(seen.contains("Mcp-Name: =?base64?d2hvYW1p?="), "{seen}");
}

#[tokio::test]
async fn an_older_version_with_mcp_method_keeps_the_session_rules() {
    // Mcp-Method with an older version is not modern: the raw session id is
    // refused (404), it never reaches the backend past the token check.
    let backend = RawBackend::start(task_server("a")).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let fields = "MCP-Protocol-Version: 2025-11-25\r\nMcp-Method: tools/call\r\nMcp-Name: whoami\r\nMcp-Session-Id: raw-id\r\nConnection: close\r\n";
    let answer = exchange(
        t.proxy_addr,
        post("/mcp", &call("whoami"), fields).as_bytes(),
    )
    .await;
    assert_eq!(status(&answer), 404, "{answer}");
    assert!(backend.seen().is_empty());
}

#[tokio::test]
async fn a_task_lives_on_its_owner_and_its_id_is_sealed_both_ways() {
    let backends = [
        RawBackend::start(task_server("a")).await,
        RawBackend::start(task_server("b")).await,
        RawBackend::start(task_server("c")).await,
    ];
    let t = tether_urls(backends.iter().map(RawBackend::url).collect(), "").await;
    let calls = "Mcp-Method: tools/call\r\nMcp-Name: report\r\n";
    let counts = || backends.iter().map(|b| b.seen().len()).collect::<Vec<_>>();
    let mut owners = Vec::new();
    for _ in 0..3 {
        let at_start = counts();
        let created = body(&send(&t, &call("report"), calls).await);
        let token = created["result"]["taskId"].as_str().unwrap().to_owned();
        assert!(token.starts_with("t2."), "{created}");
        let before = counts();
        let owner = (0..3).find(|&i| before[i] > at_start[i]).unwrap();
        owners.push(owner);
        for method in ["tasks/get", "tasks/update", "tasks/cancel"] {
            // With and without the Mcp-Name the SEP asks for.
            for name in ["".to_owned(), format!("Mcp-Name: {token}\r\n")] {
                let fields = format!("Mcp-Method: {method}\r\n{name}");
                let answer = send(&t, &task_request(method, &token), &fields).await;
                assert_eq!(status(&answer), 200, "{answer}");
                assert_eq!(
                    body(&answer)["result"]["taskId"],
                    token.as_str(),
                    "echoed as the client knows it"
                );
                let seen = backends[owner].seen().last().cloned().unwrap();
                let (head, sent) = seen.split_once("\r\n\r\n").unwrap();
                let sent: Value = serde_json::from_str(sent).unwrap();
                assert!(
                    sent["params"]["taskId"]
                        .as_str()
                        .unwrap()
                        .starts_with("srv-"),
                    "{sent}"
                );
                assert!(!head.contains("t2."), "the server's id in Mcp-Name: {head}");
                if !name.is_empty() {
                    assert!(head.contains("Mcp-Name: srv-"), "{head}");
                }
            }
        }
        for (i, b) in backends.iter().enumerate() {
            let more = b.seen().len() - before[i];
            assert_eq!(more, if i == owner { 6 } else { 0 }, "backend {i}");
        }
    }
    owners.sort();
    assert_eq!(owners, [0, 1, 2], "new tasks spread over the backends");
    let m = metrics(&t).await;
    let created: f64 = backends
        .iter()
        .map(|b| {
            sample(
                &m,
                &format!("tether_tasks_created_total{{backend=\"{}\"}}", b.addr),
            )
        })
        .sum();
    assert_eq!(created, 3.0);
}

#[tokio::test]
async fn a_task_created_in_an_event_stream_is_sealed_and_the_rest_passes() {
    let backend = RawBackend::start(task_server("a")).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let answer = send(
        &t,
        &call("sse"),
        "Mcp-Method: tools/call\r\nMcp-Name: sse\r\n",
    )
    .await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(answer.contains(": keepalive\n\n"), "{answer}");
    assert!(answer.contains("notifications/progress"), "{answer}");
    assert!(!answer.contains("srv-a"), "{answer}");
    let token = body(&answer)["result"]["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = send(
        &t,
        &task_request("tasks/get", &token),
        "Mcp-Method: tasks/get\r\n",
    )
    .await;
    assert_eq!(body(&answer)["result"]["taskId"], token.as_str());
}

#[tokio::test]
async fn an_unknown_task_gets_the_seps_error_with_no_backend_contacted() {
    let backend = RawBackend::start(task_server("a")).await;
    let t = tether_urls(vec![backend.url()], "").await;
    let other = mcp_tether::affinity::Sealer::new(&mcp_tether::affinity::SessionKey::generate());
    let forged = other
        .seal(
            mcp_tether::affinity::TokenKind::Task,
            &backend.addr.to_string(),
            "srv-a",
            None,
        )
        .unwrap();
    let session = {
        // A session token is not a task token.
        let created = send(
            &t,
            &call("report"),
            "Mcp-Method: tools/call\r\nMcp-Name: report\r\n",
        )
        .await;
        assert_eq!(status(&created), 200);
        backend.seen().len()
    };
    for id in ["srv-a", forged.as_str(), "t1.AAAA"] {
        let answer = send(
            &t,
            &task_request("tasks/get", id),
            "Mcp-Method: tasks/get\r\n",
        )
        .await;
        assert_eq!(status(&answer), 400, "{answer}");
        let v = body(&answer);
        assert_eq!(v["error"]["code"], -32602, "{answer}");
        assert_eq!(v["id"], 2);
    }
    assert_eq!(backend.seen().len(), session, "no backend contacted");
    let m = metrics(&t).await;
    assert!(sample(&m, "tether_invalid_tokens_total{reason=\"unknown_key\"}") >= 1.0);
}

#[tokio::test]
async fn routes_pick_pools_by_header_host_and_path() {
    let main = RawBackend::start(task_server("main")).await;
    let reports = RawBackend::start(task_server("reports")).await;
    let admin = RawBackend::start(task_server("admin")).await;
    let extra = format!(
        "[pools.main]\nbackends = [\"{}\"]\n[pools.reports]\nbackends = [\"{}\"]\n[pools.admin]\nbackends = [\"{}\"]\n\
         [[routes]]\nmethod = \"tools/call\"\nname = \"report_*\"\npool = \"reports\"\n\
         [[routes]]\nhost = \"admin.example\"\npool = \"admin\"\n\
         [[routes]]\npath_prefix = \"/admin/\"\npool = \"admin\"\n\
         [[routes]]\npool = \"main\"\n",
        main.url(),
        reports.url(),
        admin.url()
    );
    // No backend flags: the file's pools.
    let t = tether_urls(Vec::new(), &extra).await;
    for name in ["report_q3", "report_", "other", "weekly_report"] {
        send(
            &t,
            &call(name),
            &format!("Mcp-Method: tools/call\r\nMcp-Name: {name}\r\n"),
        )
        .await;
    }
    assert_eq!(reports.seen().len(), 2);
    assert_eq!(main.seen().len(), 2);
    let on_host = "POST /mcp HTTP/1.1\r\nHost: Admin.Example:8443\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    exchange(t.proxy_addr, on_host.as_bytes()).await;
    let on_path =
        "POST /admin/mcp HTTP/1.1\r\nHost: lb\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    exchange(t.proxy_addr, on_path.as_bytes()).await;
    assert_eq!(admin.seen().len(), 2);
    // An older-era request whose headers name the routed tool: refused (the
    // spec's SHOULD for who routes on those headers).
    let old = "MCP-Protocol-Version: 2025-06-18\r\nMcp-Method: tools/call\r\nMcp-Name: report_x\r\nConnection: close\r\n";
    let answer = exchange(
        t.proxy_addr,
        post("/mcp", &call("report_x"), old).as_bytes(),
    )
    .await;
    assert_eq!(status(&answer), 400, "{answer}");
    assert_eq!(reports.seen().len(), 2);
    let m = metrics(&t).await;
    assert_eq!(
        sample(
            &m,
            "tether_route_requests_total{route=\"0\",pool=\"reports\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(&m, "tether_route_requests_total{route=\"3\",pool=\"main\"}"),
        2.0
    );
}

#[tokio::test]
async fn the_cache_serves_public_results_and_never_private_ones() {
    let backend = RawBackend::start(|request: &str| {
        let body = request.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let message: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let scope = match message["params"]["cursor"].as_str() {
            Some("private") => "private",
            _ => "public",
        };
        respond_json(json!({"jsonrpc": "2.0", "id": message["id"], "result":
            {"tools": [], "ttlMs": 60000, "cacheScope": scope, "resultType": "complete"}}))
    })
    .await;
    let t = tether_urls(vec![backend.url()], "[cache]\nenabled = true\n").await;
    let list = |id: u32, cursor: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {"cursor": cursor}})
            .to_string()
    };
    for id in 1..=3 {
        let answer = send(&t, &list(id, "public"), "Mcp-Method: tools/list\r\n").await;
        assert_eq!(status(&answer), 200, "{answer}");
        let v = body(&answer);
        assert_eq!(v["id"], id, "{answer}");
        assert!(v["result"]["ttlMs"].as_u64().unwrap() <= 60000);
    }
    assert_eq!(backend.seen().len(), 1, "two of three from the cache");
    for id in 1..=2 {
        send(&t, &list(id, "private"), "Mcp-Method: tools/list\r\n").await;
    }
    assert_eq!(backend.seen().len(), 3, "private results are never shared");
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_cache_lookups_total{result=\"hit\"}"),
        2.0
    );
    assert_eq!(
        sample(&m, "tether_cache_lookups_total{result=\"stored\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_listen_stream_lives_while_it_talks_and_keepalives_pass_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A server answering `subscriptions/listen` with its acknowledgement, then
    // a keep-alive comment every 100 ms for 1.5 s, then silence.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        mcp_tether_testkit::raw::read_request(&mut s, &mut buf).await;
        let ack = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/subscriptions/acknowledged\",\"params\":{}}\n\n";
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n";
        let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
        s.write_all(format!("{head}{}", chunk(ack)).as_bytes())
            .await
            .unwrap();
        for _ in 0..15 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if s.write_all(chunk(": keepalive\n\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
        let mut sink = [0u8; 64];
        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let t = tether_urls(
        vec![format!("http://{addr}")],
        "[timeouts]\nstream_idle = \"400ms\"\n",
    )
    .await;
    let listen = json!({"jsonrpc": "2.0", "id": 5, "method": "subscriptions/listen",
                        "params": {"notifications": {"toolsListChanged": true}}})
    .to_string();
    let mut s = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    let fields = format!("{MODERN}Mcp-Method: subscriptions/listen\r\n");
    s.write_all(post("/mcp", &listen, &fields).as_bytes())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    mcp_tether_testkit::raw::read_until(&mut s, &mut got, "acknowledged").await;
    // Each keep-alive arrives as it is sent (none held back), and the stream
    // outlives the idle timeout several times over while they come.
    let count = |got: &[u8]| got.windows(11).filter(|w| w == b": keepalive").count();
    within("15 keep-alives", async {
        while count(&got) < 15 {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(1400));
    // Then true silence: the stream ends, cleanly (the last chunk; the
    // connection may carry another request).
    mcp_tether_testkit::raw::read_until(&mut s, &mut got, "\r\n0\r\n\r\n").await;
    assert!(got.ends_with(b"\r\n0\r\n\r\n"));
}

#[tokio::test]
async fn no_raw_session_reference_reaches_a_backend_whatever_version_it_names() {
    let backend = RawBackend::start(task_server("a")).await;
    let t = tether_urls(vec![backend.url()], "").await;
    for request in [
        // The legacy transport has no modern form: its parameter is checked.
        post(
            "/messages?sessionId=RAW-LEGACY",
            &call("x"),
            &format!("{MODERN}Mcp-Method: tools/call\r\nMcp-Name: x\r\nConnection: close\r\n"),
        ),
        // GET and DELETE are of the older world whatever the version.
        format!("DELETE /mcp HTTP/1.1\r\nHost: lb\r\n{MODERN}Mcp-Session-Id: RAW-DEL\r\nConnection: close\r\n\r\n"),
        format!("GET /mcp HTTP/1.1\r\nHost: lb\r\n{MODERN}Mcp-Session-Id: RAW-GET\r\nConnection: close\r\n\r\n"),
    ] {
        let answer = exchange(t.proxy_addr, request.as_bytes()).await;
        assert_eq!(status(&answer), 404, "{answer}");
    }
    // Two versions: Tether and a server could read different ones.
    let answer = send(
        &t,
        &call("x"),
        "MCP-Protocol-Version: 2025-11-25\r\nMcp-Method: tools/call\r\nMcp-Name: x\r\n",
    )
    .await;
    assert_eq!(status(&answer), 400, "{answer}");
    assert!(backend.seen().is_empty(), "{:?}", backend.seen());
}

#[tokio::test]
async fn a_modern_answer_never_gets_a_session_token() {
    let backend = RawBackend::start(|_: &str| {
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#;
        let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: srv-session\r\ncontent-length: {}\r\n\r\n", body.len());
        ([head.into_bytes(), body.as_bytes().to_vec()].concat(), After::KeepOpen)
    })
    .await;
    let t = tether_urls(vec![backend.url()], "").await;
    let answer = send(&t, &call("x"), "Mcp-Method: tools/call\r\nMcp-Name: x\r\n").await;
    assert!(answer.contains("mcp-session-id: srv-session"), "{answer}");
    let m = metrics(&t).await;
    assert_eq!(
        sample(
            &m,
            &format!(
                "tether_sessions_created_total{{backend=\"{}\",transport=\"streamable\"}}",
                backend.addr
            )
        ),
        0.0
    );
}

#[tokio::test]
async fn a_task_request_reaches_its_owner_whatever_the_routes() {
    // Routes with no catch-all: a tasks/get matches none, and still goes to
    // the task's owner.
    let backend = RawBackend::start(task_server("a")).await;
    let extra = format!(
        "[pools.main]\nbackends = [\"{}\"]\n[[routes]]\nmethod = \"tools/call\"\npool = \"main\"\n",
        backend.url()
    );
    // No backend flags: the file's pools.
    let t = tether_urls(Vec::new(), &extra).await;
    let created = body(
        &send(
            &t,
            &call("report"),
            "Mcp-Method: tools/call\r\nMcp-Name: report\r\n",
        )
        .await,
    );
    let token = created["result"]["taskId"].as_str().unwrap().to_owned();
    let answer = send(
        &t,
        &task_request("tasks/get", &token),
        "Mcp-Method: tasks/get\r\n",
    )
    .await;
    assert_eq!(status(&answer), 200, "{answer}");
    let listed = send(
        &t,
        &json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}).to_string(),
        "Mcp-Method: tools/list\r\n",
    )
    .await;
    assert_eq!(status(&listed), 404, "no route: {listed}");
}
