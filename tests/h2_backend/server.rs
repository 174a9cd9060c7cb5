//! The fake backend: a small MCP-shaped HTTP/2 server (the `h2` crate),
//! over h2c or TLS, that records what it saw and misbehaves on request.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::Reason;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Barrier, Notify};

use super::support::pki::Ca;
use super::support::within;

/// The size of the `big` answer.
pub const BIG: usize = 16 << 20;

/// A request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub version: http::Version,
    pub authority: String,
    pub session: Option<String>,
    /// The JSON-RPC method, and the tool's name for `tools/call`.
    pub method: String,
    pub tool: String,
    pub connection_fields: bool,
}

/// A small MCP-shaped h2 server: `initialize` opens session `s-1`, tools
/// answer by name (`echo`, `stream`, `refuse`, `refuse_always`, `fail`,
/// `wait`, `goaway`, `drain`).
pub struct Backend {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    /// The reason of each reset the backend observed on a `stream` answer.
    pub resets: tokio::sync::Mutex<mpsc::UnboundedReceiver<Reason>>,
    /// Lets a `stream` answer send its second event.
    pub go: Arc<Notify>,
    pub handler: Arc<Handler>,
}

pub struct Handler {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub resets: mpsc::UnboundedSender<Reason>,
    pub go: Arc<Notify>,
    pub refused: AtomicBool,
    pub barrier: Barrier,
    /// `pair` calls wait for each other, two by two.
    pub pair: Barrier,
    /// Told by the `goaway` tool: its connection sends GOAWAY.
    pub goaway: Notify,
    /// Told once the connection's GOAWAY is pending: the `h2` crate writes
    /// a pending GOAWAY before any stream's frames, so before anything the
    /// handler sends after this.
    pub goaway_pending: Notify,
    /// Told by the `drain` tool: the listener closes (new connections are
    /// refused); then `listener_closed`.
    pub stop_listening: Notify,
    pub listener_closed: Notify,
    /// Connections that ended.
    pub ended: AtomicUsize,
    /// The `big` answer was all sent.
    pub big_done: AtomicUsize,
    /// Bytes of the `big` answer sent so far.
    pub big_sent: AtomicUsize,
}

impl Backend {
    /// h2c with prior knowledge.
    pub async fn plain() -> Backend {
        Backend::start(None, None).await
    }

    /// h2c, with at most `streams` open at once (SETTINGS).
    pub async fn limited(streams: u32) -> Backend {
        Backend::start(None, Some(streams)).await
    }

    /// Over TLS for `localhost`, ALPN `alpn`.
    pub async fn tls(ca: &Ca, alpn: &[&[u8]]) -> Backend {
        let leaf = ca.issue("backend", &["localhost"]);
        let key = {
            use rustls::pki_types::pem::PemObject as _;
            rustls::pki_types::PrivateKeyDer::from_pem_file(&leaf.key).unwrap()
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der.clone()], key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Backend::start(
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
            None,
        )
        .await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>, streams: Option<u32>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let go = Arc::new(Notify::new());
        let handler = Arc::new(Handler {
            seen: seen.clone(),
            resets: tx,
            go: go.clone(),
            refused: AtomicBool::new(false),
            barrier: Barrier::new(8),
            pair: Barrier::new(2),
            goaway: Notify::new(),
            goaway_pending: Notify::new(),
            stop_listening: Notify::new(),
            listener_closed: Notify::new(),
            ended: AtomicUsize::new(0),
            big_done: AtomicUsize::new(0),
            big_sent: AtomicUsize::new(0),
        });
        let kept = handler.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let secure = tls.is_some();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = handler.stop_listening.notified() => {
                        drop(listener);
                        handler.listener_closed.notify_one();
                        return;
                    }
                };
                let Ok((tcp, _)) = accepted else {
                    return;
                };
                count.fetch_add(1, Ordering::Relaxed);
                let handler = handler.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve(tcp, handler, streams).await,
                        Some(tls) => {
                            let Ok(stream) = tls.accept(tcp).await else {
                                return;
                            };
                            serve(stream, handler, streams).await
                        }
                    }
                });
            }
        });
        let url = match secure {
            true => format!("https://localhost:{port}"),
            false => format!("http://127.0.0.1:{port}"),
        };
        Backend {
            url,
            seen,
            connections,
            resets: tokio::sync::Mutex::new(rx),
            go,
            handler: kept,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn ended(&self) -> usize {
        self.handler.ended.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub async fn next_reset(&self) -> Reason {
        let mut rx = self.resets.lock().await;
        within("the backend sees the stream reset", rx.recv())
            .await
            .expect("a reset")
    }
}

async fn serve<T>(io: T, handler: Arc<Handler>, streams: Option<u32>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = h2::server::Builder::new();
    if let Some(n) = streams {
        builder.max_concurrent_streams(n);
    }
    let Ok(mut conn) = builder.handshake::<_, Bytes>(io).await else {
        return;
    };
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((request, respond))) => {
                    tokio::spawn(handle(request, respond, handler.clone()));
                }
                _ => break,
            },
            () = handler.goaway.notified() => {
                conn.graceful_shutdown();
                handler.goaway_pending.notify_one();
            }
        }
    }
    handler.ended.fetch_add(1, Ordering::Relaxed);
}

async fn handle(
    request: http::Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    handler: Arc<Handler>,
) {
    let (parts, mut body) = request.into_parts();
    let mut bytes = Vec::new();
    while let Some(Ok(d)) = body.data().await {
        let _ = body.flow_control().release_capacity(d.len());
        bytes.extend_from_slice(&d);
    }
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let method = json["method"].as_str().unwrap_or("").to_string();
    let tool = json["params"]["name"]
        .as_str()
        .or(json["params"]["clientInfo"]["name"].as_str())
        .unwrap_or("")
        .to_string();
    let session = parts
        .headers
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    let connection_fields = ["connection", "keep-alive", "transfer-encoding", "host"]
        .iter()
        .any(|f| parts.headers.contains_key(*f));
    handler.seen.lock().unwrap().push(Seen {
        version: parts.version,
        authority: parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        session: session.clone(),
        method: method.clone(),
        tool: tool.clone(),
        connection_fields,
    });
    let id = json["id"].clone();
    let result = |text: String| {
        serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}]}})
            .to_string()
    };
    match (method.as_str(), tool.as_str()) {
        ("initialize", name) => {
            if name == "wait" {
                handler.barrier.wait().await;
            }
            let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "serverInfo": {"name": "h2-backend", "version": "1"}}})
            .to_string();
            json_answer(respond, &body, Some("s-1"));
        }
        ("notifications/initialized", _) => {
            let r = http::Response::builder().status(202).body(()).unwrap();
            let _ = respond.send_response(r, true);
        }
        ("tools/call", "refuse") if !handler.refused.swap(true, Ordering::Relaxed) => {
            respond.send_reset(Reason::REFUSED_STREAM);
        }
        ("tools/call", "refuse_always") => respond.send_reset(Reason::REFUSED_STREAM),
        ("tools/call", "fail") => respond.send_reset(Reason::INTERNAL_ERROR),
        ("tools/call", "big") => {
            let r = http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(())
                .unwrap();
            let Ok(mut send) = respond.send_response(r, false) else {
                return;
            };
            // Only as fast as the stream's window opens.
            let mut left: usize = BIG;
            while left > 0 {
                send.reserve_capacity(left.min(1 << 20));
                let Some(Ok(n)) = std::future::poll_fn(|cx| send.poll_capacity(cx)).await else {
                    return;
                };
                let n = n.min(left);
                if send.send_data(Bytes::from(vec![b' '; n]), false).is_err() {
                    return;
                }
                left -= n;
                handler.big_sent.fetch_add(n, Ordering::Relaxed);
            }
            let _ = send.send_data(Bytes::new(), true);
            handler.big_done.fetch_add(1, Ordering::Relaxed);
        }
        ("tools/call", "pair") => {
            handler.pair.wait().await;
            json_answer(respond, &result("paired".into()), None);
        }
        ("tools/call", "drain") => {
            // A backend shutting down gracefully: it stops listening, then
            // tells its connection to go away, then answers (so the GOAWAY
            // is on the wire before this answer).
            handler.stop_listening.notify_one();
            handler.listener_closed.notified().await;
            handler.goaway.notify_one();
            handler.goaway_pending.notified().await;
            json_answer(respond, &result("draining".into()), None);
        }
        ("tools/call", "goaway") => {
            json_answer(respond, &result("going away".into()), None);
            handler.goaway.notify_one();
        }
        ("tools/call", "stream") => {
            let r = http::Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(())
                .unwrap();
            let mut send = respond.send_response(r, false).unwrap();
            let progress = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"first"}}"#;
            let _ = send.send_data(
                Bytes::from(format!("event: message\ndata: {progress}\n\n")),
                false,
            );
            tokio::select! {
                () = handler.go.notified() => {
                    let last = format!("event: message\ndata: {}\n\n", result("second".into()));
                    let _ = send.send_data(Bytes::from(last), true);
                }
                reason = std::future::poll_fn(|cx| send.poll_reset(cx)) => {
                    if let Ok(reason) = reason {
                        let _ = handler.resets.send(reason);
                    }
                }
            }
        }
        (_, _) => {
            let text = format!("{tool} in {}", session.unwrap_or_default());
            json_answer(respond, &result(text), None);
        }
    }
}

fn json_answer(mut respond: SendResponse<Bytes>, body: &str, session: Option<&str>) {
    let mut r = http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("content-length", body.len());
    if let Some(s) = session {
        r = r.header("mcp-session-id", s);
    }
    let Ok(mut send) = respond.send_response(r.body(()).unwrap(), false) else {
        return;
    };
    let _ = send.send_data(Bytes::from(body.to_owned()), true);
}
