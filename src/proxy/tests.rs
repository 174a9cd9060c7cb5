//! The proxy's session rules over in-memory I/O: two backends, each reached
//! over a pipe checked in as its idle connection, and clients over pipes
//! served by the connection loop. What a client sees and what each backend
//! reads, byte for byte; no socket.

use std::sync::Arc;

use tokio::io::{AsyncWriteExt as _, DuplexStream};

use crate::metrics::Metrics;
use crate::testing::{backend_pipe_at, memory_client, memory_proxy_with, pending, read_until};

const BACKENDS: [&str; 2] = ["http://127.0.0.1:9", "http://127.0.0.2:9"];
const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
const RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;

/// Runs a test's steps, bounded: a step that waits for what never comes
/// (a request that never reaches a backend) fails the test, not hangs it.
async fn bounded(steps: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(std::time::Duration::from_secs(20), steps)
        .await
        .expect("every step came within 20 s");
}

fn post(session: Option<&str>, body: &str) -> String {
    let session = session
        .map(|s| format!("mcp-session-id: {s}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /mcp HTTP/1.1\r\nHost: lb\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\n{session}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The backend that reads `needle` first, of the two, and what it read.
async fn first_to_read(pipes: &mut [DuplexStream; 2], needle: &str) -> (usize, String) {
    let [a, b] = pipes;
    tokio::select! {
        seen = read_until(a, needle) => (0, seen),
        seen = read_until(b, needle) => (1, seen),
    }
}

fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
}

struct Fleet {
    metrics: Arc<Metrics>,
    proxy: Arc<crate::proxy::Proxy>,
    settings: Arc<crate::downstream::ConnSettings>,
    pipes: [DuplexStream; 2],
}

fn fleet() -> Fleet {
    let metrics = Arc::new(Metrics::default());
    let (proxy, settings) = memory_proxy_with(&metrics, "", &BACKENDS);
    let pipes = [0, 1].map(|i| backend_pipe_at(&proxy, i, 64 << 10));
    Fleet {
        metrics,
        proxy,
        settings,
        pipes,
    }
}

impl Fleet {
    fn client(&self) -> DuplexStream {
        memory_client(&self.proxy, &self.metrics, &self.settings)
    }

    /// Begins a session: `initialize` through the proxy, answered with the
    /// backend's id `raw`. The backend that got it, and the client's token.
    async fn begin(&mut self, c: &mut DuplexStream, raw: &str) -> (usize, String) {
        c.write_all(post(None, INIT).as_bytes()).await.unwrap();
        let (owner, seen) = first_to_read(&mut self.pipes, "\"initialize\"").await;
        assert!(field(&seen, "mcp-session-id").is_none(), "{seen}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: {raw}\r\n\
             content-length: {}\r\n\r\n{RESULT}",
            RESULT.len()
        );
        self.pipes[owner]
            .write_all(answer.as_bytes())
            .await
            .unwrap();
        let got = read_until(c, RESULT).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        let token = field(&got, "mcp-session-id")
            .expect("a session id")
            .to_string();
        (owner, token)
    }
}

#[tokio::test]
async fn a_session_stays_on_its_backend_and_its_id_is_sealed_both_ways() {
    bounded(async {
        let mut f = fleet();
        let mut c = f.client();
        let (owner, token) = f.begin(&mut c, "raw-1").await;
        // The client never sees the backend's id, only a token that hides it.
        assert_ne!(token, "raw-1");
        assert!(!token.contains("raw-1"), "{token}");
        for _ in 0..3 {
            c.write_all(post(Some(&token), CALL).as_bytes())
                .await
                .unwrap();
            let seen = read_until(&mut f.pipes[owner], CALL).await;
            // The owner gets its own id back, never the token.
            assert_eq!(field(&seen, "mcp-session-id"), Some("raw-1"), "{seen}");
            assert!(!seen.contains(&token), "{seen}");
            f.pipes[owner]
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .await
                .unwrap();
            let got = read_until(&mut c, "\r\n\r\n{}").await;
            assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        }
        // The other backend read nothing of it.
        assert_eq!(pending(&mut f.pipes[1 - owner]), b"");
    })
    .await;
}

#[tokio::test]
async fn a_raw_or_forged_session_id_gets_the_404_and_reaches_no_backend() {
    bounded(async {
        let mut f = fleet();
        let mut c = f.client();
        let (owner, token) = f.begin(&mut c, "raw-1").await;
        // The raw id (a client that learned it elsewhere), a forged token, and
        // the real token with one byte changed.
        let mut altered = token.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        for bad in [
            "raw-1",
            "t2.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &altered,
        ] {
            c.write_all(post(Some(bad), CALL).as_bytes()).await.unwrap();
            let got = read_until(&mut c, "Session not found").await;
            assert!(got.starts_with("HTTP/1.1 404 "), "{bad}: {got}");
            assert!(got.contains(r#""code":-32001"#), "{bad}: {got}");
            assert!(got.contains(r#""id":7"#), "{bad}: {got}");
        }
        assert_eq!(pending(&mut f.pipes[owner]), b"");
        assert_eq!(pending(&mut f.pipes[1 - owner]), b"");
    })
    .await;
}

#[tokio::test]
async fn a_legacy_endpoint_is_sealed_and_its_posts_reach_the_stream_s_backend() {
    bounded(async {
        let mut f = fleet();
        let mut stream = f.client();
        stream
            .write_all(b"GET /sse HTTP/1.1\r\nHost: lb\r\nAccept: text/event-stream\r\n\r\n")
            .await
            .unwrap();
        let (owner, _) = first_to_read(&mut f.pipes, "\r\n\r\n").await;
        f.pipes[owner]
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n\
                  event: endpoint\ndata: /messages?sessionId=abc\n\n",
            )
            .await
            .unwrap();
        let first = read_until(&mut stream, "\n\n\r\n").await;
        let endpoint = first
            .split("data: ")
            .nth(1)
            .and_then(|rest| rest.split('\n').next())
            .expect("an endpoint event");
        let token = endpoint
            .strip_prefix("/messages?sessionId=")
            .expect("the same path");
        assert_ne!(token, "abc");
        assert!(!token.contains("abc"), "{token}");
        // The stream holds the owner's pipe: its POSTs take another connection,
        // and must reach that backend.
        let mut second = backend_pipe_at(&f.proxy, owner, 64 << 10);
        let mut c = f.client();
        c.write_all(post_to(endpoint, CALL).as_bytes())
            .await
            .unwrap();
        let seen = read_until(&mut second, CALL).await;
        assert!(
            seen.starts_with("POST /messages?sessionId=abc HTTP/1.1\r\n"),
            "{seen}"
        );
        second
            .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let got = read_until(&mut c, "\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 202 "), "{got}");
        assert_eq!(pending(&mut f.pipes[1 - owner]), b"");
    })
    .await;
}

fn post_to(target: &str, body: &str) -> String {
    format!(
        "POST {target} HTTP/1.1\r\nHost: lb\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_delete_reaches_the_owner_with_its_id_and_is_counted() {
    bounded(async {
        let mut f = fleet();
        let mut c = f.client();
        let (owner, token) = f.begin(&mut c, "raw-9").await;
        c.write_all(
            format!("DELETE /mcp HTTP/1.1\r\nHost: lb\r\nmcp-session-id: {token}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let seen = read_until(&mut f.pipes[owner], "\r\n\r\n").await;
        assert!(seen.starts_with("DELETE /mcp HTTP/1.1\r\n"), "{seen}");
        assert_eq!(field(&seen, "mcp-session-id"), Some("raw-9"), "{seen}");
        f.pipes[owner]
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let got = read_until(&mut c, "\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
        let deleted = f
            .metrics
            .sessions_deleted
            .get_or_create(&Metrics::backend(
                &f.proxy.pools()[0].fleet.pool().backends()[owner].id,
            ))
            .get();
        assert_eq!(deleted, 1);
    })
    .await;
}
