//! Whole runs against small scripted servers on 127.0.0.1: the backstop,
//! the sessions a run leaves behind, SSE polling on the held stream and
//! what a hostile server can put in the report.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::progress::Progress;
use super::*;

/// One request as the scripted server read it.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does: write these bytes and close, or write them and
/// keep the connection open (an endless stream, or no answer at all).
enum Reply {
    Close(Vec<u8>),
    Hang(Vec<u8>),
}

fn json(status: u16, extra: &str, body: &str) -> Reply {
    Reply::Close(
        format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn status(status: u16) -> Reply {
    Reply::Close(format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n").into_bytes())
}

/// An event stream whose body ends when the connection does.
fn sse(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}")
        .into_bytes()
}

async fn read_req(conn: &mut tokio::net::TcpStream) -> Option<Req> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let method = lines.next()?.split(' ').next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Req {
        method,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Serves `script` on 127.0.0.1 port 0 until the runtime ends; the URL of `/mcp`.
async fn serve(script: impl Fn(Req) -> Reply + Send + Sync + 'static) -> url::Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/mcp", listener.local_addr().unwrap())).unwrap();
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                let Some(req) = read_req(&mut conn).await else {
                    return;
                };
                match script(req) {
                    Reply::Close(bytes) => {
                        let _ = conn.write_all(&bytes).await;
                        let _ = conn.shutdown().await;
                    }
                    Reply::Hang(bytes) => {
                        let _ = conn.write_all(&bytes).await;
                        let mut sink = [0u8; 1024];
                        while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
                    }
                }
            });
        }
    });
    url
}

fn options(url: &url::Url, timeout: Duration, hold: Duration) -> (Options, Arc<Client>) {
    let o = Options {
        url: url.clone(),
        sessions: 3,
        calls: 1,
        hold,
        sse_paths: vec![],
        timeout,
    };
    let client = Client::new(url, vec![], timeout).unwrap();
    (o, Arc::new(client))
}

fn check<'a>(report: &'a Report, id: &str) -> &'a Check {
    report
        .checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no {id} in {report:?}"))
}

/// The sessions a script issued and the ones it was asked to DELETE.
#[derive(Default)]
struct Ledger {
    issued: Mutex<Vec<String>>,
    deleted: Mutex<Vec<String>>,
}

impl Ledger {
    fn issue(&self) -> String {
        let mut issued = self.issued.lock().unwrap();
        let id = format!("sess{:04}", issued.len());
        issued.push(id.clone());
        id
    }

    fn delete(&self, req: &Req) -> Reply {
        let id = req.header("mcp-session-id").unwrap_or_default();
        self.deleted.lock().unwrap().push(id.to_string());
        status(200)
    }

    fn left_open(&self) -> Vec<String> {
        let deleted = self.deleted.lock().unwrap();
        let issued = self.issued.lock().unwrap();
        issued
            .iter()
            .filter(|id| !deleted.contains(id))
            .cloned()
            .collect()
    }
}

const INIT_RESULT: &str = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"s","version":"1"}}}"#;

#[tokio::test]
async fn when_the_backstop_passes_first_the_unfinished_checks_fail_and_sessions_are_deleted() {
    let ledger = Arc::new(Ledger::default());
    let l = ledger.clone();
    let url = serve(move |req| match req.method.as_str() {
        "POST" if req.body.contains("\"initialize\"") => json(
            200,
            &format!("mcp-session-id: {}\r\n", l.issue()),
            INIT_RESULT,
        ),
        "POST" if req.body.contains("server/discover") => status(404),
        "DELETE" => l.delete(&req),
        "GET" => status(404),
        _ => Reply::Hang(vec![]), // notifications and pings: never answered
    })
    .await;
    let (o, client) = options(&url, Duration::from_secs(10), Duration::ZERO);
    let started = std::time::Instant::now();
    let report = run_within(
        o,
        client,
        Arc::new(Progress::quiet()),
        Duration::from_millis(800),
    )
    .await
    .expect("a report, not an error");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.exit, 1);
    assert_eq!(check(&report, "era.modern").verdict, Verdict::NotApplicable);
    let sticky = check(&report, "stickiness.streamable");
    assert_eq!(sticky.verdict, Verdict::Fail);
    assert!(sticky.saw.contains("did not finish"), "{}", sticky.saw);
    assert_eq!(report.checks.len(), ORDER.len() - 1, "{report:?}");
    assert!(!ledger.issued.lock().unwrap().is_empty());
    assert_eq!(ledger.left_open(), Vec::<String>::new());
}

#[tokio::test]
async fn every_session_issued_is_deleted_failed_or_not_and_the_report_escapes_what_servers_say() {
    let ledger = Arc::new(Ledger::default());
    let l = ledger.clone();
    let hostile = INIT_RESULT.replace("2025-11-25", "\\u001b[2J\\u009b31m2025-11-25\\r\\n");
    let url = serve(move |req| {
        let session = req.header("mcp-session-id").unwrap_or_default().to_string();
        match req.method.as_str() {
            "POST" if req.body.contains("\"initialize\"") => {
                let id = l.issue();
                // Every other initialize: the id is issued, the body is broken.
                let body = if id.ends_with(['1', '3', '5', '7', '9']) {
                    "{not json"
                } else {
                    &hostile
                };
                json(200, &format!("mcp-session-id: {id}\r\n"), body)
            }
            "POST" if req.body.contains("server/discover") => status(404),
            "POST" if req.body.contains("notifications/") => status(202),
            // Pings of one session in two get "Session not found", as through a round robin.
            "POST" if session.ends_with(['2', '6']) => status(404),
            "POST" => json(
                200,
                "",
                &format!(
                    r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#,
                    ping_id(&req.body)
                ),
            ),
            "DELETE" => l.delete(&req),
            _ => status(405),
        }
    })
    .await;
    let (o, client) = options(&url, Duration::from_secs(5), Duration::ZERO);
    let report = run(o, client, Arc::new(Progress::quiet())).await.unwrap();
    let issued = ledger.issued.lock().unwrap().len();
    // The probe, three stickiness sessions, origin and protocol_version (and retries of broken bodies).
    assert!(issued >= 5, "{issued} issued: {report:?}");
    assert_eq!(ledger.left_open(), Vec::<String>::new(), "{report:?}");
    assert_eq!(
        check(&report, "stickiness.streamable").verdict,
        Verdict::Fail
    );

    let era = check(&report, "era.streamable");
    assert!(
        era.saw.contains("\\x1b[2J\\u{9b}31m2025-11-25"),
        "{}",
        era.saw
    );
    let table = report::table(&report);
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n'),
        "{table:?}"
    );
    assert_eq!(table.lines().count(), report.checks.len() + 5, "{table}");
}

fn ping_id(body: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_get_stream_closed_after_a_priming_event_is_resumed_with_last_event_id() {
    let resumed_from = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = resumed_from.clone();
    let url = serve(move |req| {
        let has_session = req.header("mcp-session-id").is_some();
        match req.method.as_str() {
            "POST" if req.body.contains("\"initialize\"") => {
                json(200, "mcp-session-id: polled0001\r\n", INIT_RESULT)
            }
            "POST" if req.body.contains("server/discover") => status(404),
            "POST" if req.body.contains("notifications/") => status(202),
            "POST" if req.header("mcp-session-id") != Some("polled0001") => status(404),
            "POST" => json(
                200,
                "",
                &format!(
                    r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#,
                    ping_id(&req.body)
                ),
            ),
            "GET" if has_session => match req.header("last-event-id") {
                // SEP-1699: prime with an id and a retry, then close.
                None => Reply::Close(sse("id: prime-1\nretry: 20\ndata\n\n")),
                Some(id) => {
                    seen.lock().unwrap().push(id.to_string());
                    Reply::Hang(sse(": keepalive\n\n"))
                }
            },
            "DELETE" => status(200),
            _ => status(404),
        }
    })
    .await;
    let (o, client) = options(&url, Duration::from_secs(5), Duration::from_millis(700));
    let report = run(o, client, Arc::new(Progress::quiet())).await.unwrap();
    let hold = check(&report, "sse.hold");
    assert_eq!(hold.verdict, Verdict::Warn, "{}", hold.saw);
    assert!(
        hold.saw.contains("resumed 1 times with Last-Event-ID"),
        "{}",
        hold.saw
    );
    assert_eq!(hold.data["Streamable GET stream"], "resumed 1 times");
    assert_eq!(*resumed_from.lock().unwrap(), vec!["prime-1".to_string()]);
    assert_eq!(report.exit, 0, "{report:?}");
}

#[tokio::test]
async fn a_post_stream_closed_after_a_priming_event_is_resumed_for_its_response() {
    let resumed_from = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = resumed_from.clone();
    let url = serve(move |req| match req.method.as_str() {
        "POST" if req.body.contains("\"initialize\"") => {
            json(200, "mcp-session-id: polled0002\r\n", INIT_RESULT)
        }
        "POST" if req.body.contains("server/discover") => status(404),
        "POST" if req.body.contains("notifications/") => status(202),
        "POST" if req.header("mcp-session-id") != Some("polled0002") => status(404),
        // Every ping's answer stream: primed with an id that names the request, then closed.
        "POST" => Reply::Close(sse(&format!(
            "id: ping-{}\nretry: 10\ndata\n\n",
            ping_id(&req.body)
        ))),
        "GET" => match req.header("last-event-id") {
            Some(last) => {
                seen.lock().unwrap().push(last.to_string());
                let id = last.trim_start_matches("ping-");
                Reply::Close(sse(&format!(
                    "id: {last}-r\ndata: {{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{}}}}\n\n"
                )))
            }
            None => status(405),
        },
        "DELETE" => status(200),
        _ => status(404),
    })
    .await;
    let (o, client) = options(&url, Duration::from_secs(5), Duration::ZERO);
    let report = run(o, client, Arc::new(Progress::quiet())).await.unwrap();
    let sticky = check(&report, "stickiness.streamable");
    assert_eq!(sticky.verdict, Verdict::Pass, "{}", sticky.saw);
    // Three sessions x one call, then protocol_version's two pings.
    let seen = resumed_from.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|l| *l == "ping-1").count(),
        4,
        "{seen:?}"
    );
    assert!(seen.contains(&"ping-2".to_string()), "{seen:?}");
    assert_eq!(report.exit, 0, "{report:?}");
}
