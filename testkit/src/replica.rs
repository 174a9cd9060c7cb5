//! A fake MCP replica: the builder, the handle tests hold, the shared state, and the accept loop.
//!
//! One replica serves Streamable HTTP at `/mcp` and legacy HTTP+SSE at `/sse` + the messages
//! path from the same listener. Request handling lives in `service.rs`; this file owns lifetimes:
//! every task a replica starts is tracked so that [`Replica::kill`] ends all of them at once.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};

use crate::service;

/// One request as the replica received it, recorded before it was answered.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// How a replica behaves; fixed at spawn time.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) stateful: bool,
    pub(crate) sse_responses: bool,
    pub(crate) legacy_param: String,
    pub(crate) legacy_messages_path: String,
    pub(crate) absolute_endpoint: bool,
    pub(crate) endpoint_chunk_size: Option<usize>,
    pub(crate) line_ending: &'static str,
    pub(crate) hello_comment: bool,
}

// === impl ReplicaBuilder ===

/// Builds a [`Replica`]; see each option for the server behaviour it imitates.
#[derive(Clone, Debug)]
pub struct ReplicaBuilder {
    name: String,
    config: Config,
}

impl ReplicaBuilder {
    /// Streamable HTTP without sessions (default: stateful). GET and DELETE on `/mcp` answer 405.
    pub fn stateless(mut self) -> Self {
        self.config.stateful = false;
        self
    }

    /// Answer POSTs with `text/event-stream` (one `event: message` per response, then end)
    /// instead of `application/json`.
    pub fn sse_responses(mut self, on: bool) -> Self {
        self.config.sse_responses = on;
        self
    }

    /// Query parameter of the legacy endpoint URL: `sessionId` (default, TypeScript SDK) or
    /// `session_id` (Python SDK).
    pub fn legacy_param(mut self, name: &str) -> Self {
        self.config.legacy_param = name.to_owned();
        self
    }

    /// Legacy messages path, default `/messages`; the Python SDK uses `/messages/`. POSTs are
    /// accepted with or without the trailing slash either way.
    pub fn legacy_messages_path(mut self, path: &str) -> Self {
        self.config.legacy_messages_path = path.to_owned();
        self
    }

    /// Send the endpoint event as an absolute URL naming this replica
    /// (`http://127.0.0.1:PORT/messages?sessionId=...`) instead of a relative one.
    pub fn absolute_endpoint(mut self, on: bool) -> Self {
        self.config.absolute_endpoint = on;
        self
    }

    /// Write the first legacy SSE event (comment + endpoint event) as body frames of `n` bytes,
    /// yielding between frames so each one is flushed on its own. `Some(0)` counts as 1.
    pub fn endpoint_chunk_size(mut self, n: Option<usize>) -> Self {
        self.config.endpoint_chunk_size = n.map(|n| n.max(1));
        self
    }

    /// Line end of the first legacy SSE event: `"\n"` (default), `"\r\n"` or `"\r"`.
    pub fn line_ending(mut self, le: &'static str) -> Self {
        self.config.line_ending = le;
        self
    }

    /// Whether the legacy stream opens with a `: hello` comment line (default: true).
    pub fn hello_comment(mut self, on: bool) -> Self {
        self.config.hello_comment = on;
        self
    }

    /// Bind `127.0.0.1:0` and start serving.
    pub async fn spawn(self) -> std::io::Result<Replica> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: self.name,
            addr,
            config: self.config,
            state: Mutex::new(State::default()),
            delay: Mutex::new(Duration::ZERO),
            fail: AtomicU16::new(0),
            seen: watch::Sender::new(0),
            disconnects: watch::Sender::new(0),
            killed: AtomicBool::new(false),
            listener: Mutex::new(Some(listener)),
            tasks: Mutex::new(JoinSet::new()),
        });
        let accept = tokio::spawn(accept_loop(shared.clone())).abort_handle();
        Ok(Replica { shared, accept })
    }
}

// === impl Replica ===

/// A running fake MCP server on `127.0.0.1`. Dropping it kills it.
#[derive(Debug)]
pub struct Replica {
    shared: Arc<Shared>,
    accept: AbortHandle,
}

impl Replica {
    pub fn builder(name: &str) -> ReplicaBuilder {
        ReplicaBuilder {
            name: name.to_owned(),
            config: Config {
                stateful: true,
                sse_responses: false,
                legacy_param: "sessionId".to_owned(),
                legacy_messages_path: "/messages".to_owned(),
                absolute_endpoint: false,
                endpoint_chunk_size: None,
                line_ending: "\n",
                hello_comment: true,
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`, without a path.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Stop listening and abort every open connection and stream. The listening socket is closed
    /// before this returns, so a later connect is refused; connection tasks end as soon as the
    /// runtime gets to them. Streams ended this way do not count as disconnects.
    pub fn kill(&self) {
        let shared = &self.shared;
        shared.killed.store(true, Ordering::SeqCst);
        drop(lock(&shared.listener).take());
        self.accept.abort();
        // Take everything out under the locks, drop it after: dropping may run guards that lock.
        let tasks = std::mem::take(&mut *lock(&shared.tasks));
        let state = std::mem::take(&mut *lock(&shared.state));
        drop(tasks); // a dropped JoinSet aborts its tasks
        drop(state);
    }

    /// Delay before answering each request, on every route (zero: none).
    pub fn set_delay(&self, d: Duration) {
        *lock(&self.shared.delay) = d;
    }

    /// Answer every request with this status and a small text body (`None`: behave normally).
    pub fn set_fail(&self, status: Option<u16>) {
        self.shared
            .fail
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared.state).requests.clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.state).requests.len()
    }

    /// Resolves once at least `n` requests have been received (recorded, maybe not answered).
    pub async fn wait_requests(&self, n: usize) {
        let mut rx = self.shared.seen.subscribe();
        // The sender lives in `shared`, which we hold, so this cannot fail.
        let _ = rx.wait_for(|seen| *seen >= n).await;
    }

    /// Stateful Streamable HTTP sessions plus legacy SSE sessions currently known.
    pub fn live_sessions(&self) -> usize {
        let state = lock(&self.shared.state);
        state.sessions.len() + state.legacy.len()
    }

    /// Requests whose client went away before the response finished: held SSE streams dropped,
    /// slow answers (delay, `sleep` tool) abandoned.
    pub fn disconnects(&self) -> usize {
        *self.shared.disconnects.borrow()
    }

    /// Resolves once `disconnects() >= n`.
    pub async fn wait_disconnects(&self, n: usize) {
        let mut rx = self.shared.disconnects.subscribe();
        let _ = rx.wait_for(|count| *count >= n).await;
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

// === impl Shared ===

/// A Streamable HTTP session: only the senders of its open standalone GET streams, so that
/// DELETE ends them.
#[derive(Debug, Default)]
pub(crate) struct StreamableSession {
    pub(crate) streams: Vec<mpsc::UnboundedSender<Bytes>>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) requests: Vec<SeenRequest>,
    pub(crate) sessions: HashMap<String, StreamableSession>,
    /// Legacy session id -> the sender of its open GET stream.
    pub(crate) legacy: HashMap<String, mpsc::UnboundedSender<Bytes>>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) config: Config,
    pub(crate) state: Mutex<State>,
    delay: Mutex<Duration>,
    fail: AtomicU16,
    seen: watch::Sender<usize>,
    disconnects: watch::Sender<usize>,
    killed: AtomicBool,
    listener: Mutex<Option<TcpListener>>,
    tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(crate) fn delay(&self) -> Duration {
        *lock(&self.delay)
    }

    pub(crate) fn fail(&self) -> Option<u16> {
        match self.fail.load(Ordering::SeqCst) {
            0 => None,
            status => Some(status),
        }
    }

    pub(crate) fn record(&self, request: SeenRequest) {
        let count = {
            let mut state = self.state();
            state.requests.push(request);
            state.requests.len()
        };
        self.seen.send_replace(count);
    }

    /// Spawn a task that `kill` aborts. Does nothing once killed.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = lock(&self.tasks);
        if self.killed.load(Ordering::SeqCst) {
            return;
        }
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }
}

/// 32 random lowercase hex characters (128 bits from the thread RNG).
pub(crate) fn new_session_id() -> String {
    format!("{:032x}", rand::thread_rng().gen::<u128>())
}

/// Poisoning only means another thread panicked mid-update; these maps stay usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl DisconnectGuard ===

/// Armed while a response is unfinished. Dropped armed means the client went away: count a
/// disconnect (unless the replica was killed). A legacy stream's guard also forgets its session.
#[derive(Debug)]
pub(crate) struct DisconnectGuard {
    shared: Arc<Shared>,
    armed: bool,
    legacy_session: Option<String>,
}

impl DisconnectGuard {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            armed: true,
            legacy_session: None,
        }
    }

    pub(crate) fn with_legacy_session(mut self, id: Option<String>) -> Self {
        self.legacy_session = id;
        self
    }

    /// The response finished normally.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if let Some(id) = self.legacy_session.take() {
            let sender = self.shared.state().legacy.remove(&id);
            drop(sender);
        }
        if self.armed && !self.shared.killed.load(Ordering::SeqCst) {
            tracing::debug!(replica = %self.shared.name, "client went away mid-response");
            self.shared.disconnects.send_modify(|count| *count += 1);
        }
    }
}

// === accept loop ===

async fn accept_loop(shared: Arc<Shared>) {
    loop {
        // Borrow the listener only for one poll so `kill` can take and close it synchronously.
        let accepted = poll_fn(|cx| match lock(&shared.listener).as_ref() {
            Some(listener) => listener.poll_accept(cx).map(Some),
            None => Poll::Ready(None),
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, _peer))) => shared.spawn(serve_connection(shared.clone(), stream)),
            Some(Err(error)) => {
                // Typically EMFILE or a reset before accept; back off instead of spinning.
                tracing::debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "set_nodelay failed");
    }
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(service::handle(shared, request).await) }
    });
    if let Err(error) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, "replica connection ended with an error");
    }
}
