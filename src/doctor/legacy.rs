//! Legacy HTTP+SSE (2024-11-05): `GET` an SSE stream, whose first event
//! (`endpoint`) names the URL to POST to; every POST is answered `202` and
//! its JSON-RPC response arrives on the stream. Only the replica holding the
//! stream can answer, and the session id lives only inside that event's body,
//! where a header-based balancer cannot see it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};
use url::Url;

use super::client::{clip, response_to, Client, Next, Stream};
use super::progress::Progress;
use super::sse::Item;
use super::streamable::{each, sticky_verdict, Failure, ASKED};
use super::{forge_like, step_all, Check, Options, Verdict};

/// What the legacy probe found.
pub enum Probe {
    Found {
        sse_url: Url,
        endpoint: Url,
        /// From the GET to its `endpoint` event.
        first_event: Duration,
    },
    /// A stream opened, and no `endpoint` event came (a buffering path, or no MCP).
    Silent {
        sse_url: Url,
        saw: String,
        /// At the URL itself, where a Streamable HTTP server may answer a GET
        /// with its own stream: judged by [`Probe::settle`].
        at_url: bool,
    },
    NotFound(String),
}

impl Probe {
    /// Once the Streamable probe is in: a silent stream at the URL itself
    /// of a server that speaks Streamable HTTP there is that server's own
    /// GET stream (the spec lets it answer a GET with one; the Python SDK's
    /// stateless mode does), not a legacy endpoint held back by a buffer.
    /// Only `/sse` and the `--sse-path`s are judged silent then.
    pub fn settle(self, streamable: &super::streamable::Probe) -> Probe {
        match self {
            Probe::Silent {
                sse_url,
                at_url: true,
                ..
            } if streamable.opened().is_some() => Probe::NotFound(format!(
                "GET {}: an event stream without an endpoint event, the Streamable HTTP server's own GET stream",
                sse_url.path()
            )),
            other => other,
        }
    }

    pub fn sse_url(&self) -> Option<&Url> {
        match self {
            Probe::Found { sse_url, .. } => Some(sse_url),
            _ => None,
        }
    }

    pub fn check(&self) -> Check {
        const ID: &str = "era.legacy";
        match self {
            Probe::Found {
                sse_url,
                endpoint,
                first_event,
            } => Check::new(
                ID,
                Verdict::Pass,
                format!(
                    "GET {}: endpoint event after {} ms ({})",
                    sse_url.path(),
                    first_event.as_millis(),
                    endpoint.path()
                ),
            )
            .with(json!({"path": sse_url.path(), "first_event_ms": first_event.as_millis()})),
            Probe::Silent { sse_url, saw, .. } => {
                Check::new(ID, Verdict::Fail, format!("GET {}: {saw}", sse_url.path()))
                    .with(json!({"path": sse_url.path()}))
            }
            Probe::NotFound(saw) => Check::new(
                ID,
                Verdict::NotApplicable,
                format!("no SSE endpoint ({saw})"),
            ),
        }
    }
}

/// An open legacy session: its stream and the URL its messages go to.
pub struct Session {
    pub stream: Stream,
    pub endpoint: Url,
    pub first_event: Duration,
}

/// Why opening a stream failed: not a legacy endpoint at all, an event
/// stream that sent no `endpoint` event, or one whose endpoint is unusable.
enum OpenError {
    NotLegacy(String),
    NoEndpoint(Failure),
    Broken(Failure),
}

impl OpenError {
    fn failure(self) -> Failure {
        match self {
            OpenError::NotLegacy(what) => Failure {
                status: None,
                what: format!("GET: {what}"),
            },
            OpenError::NoEndpoint(f) | OpenError::Broken(f) => f,
        }
    }
}

/// Opens the stream at `sse_url` and reads its `endpoint` event.
async fn connect(client: &Client, sse_url: &Url) -> Result<Session, OpenError> {
    let answer = client
        .send(
            Method::GET,
            sse_url,
            &[("accept", "text/event-stream")],
            None,
        )
        .await
        .map_err(|e| OpenError::NotLegacy(e.to_string()))?;
    let status = answer.status.as_u16();
    if !answer.status.is_success() || !answer.is_sse() {
        return Err(OpenError::NotLegacy(format!("{status}")));
    }
    let mut stream = answer.into_stream();
    let deadline = Instant::now() + client.timeout;
    loop {
        match stream.next(deadline).await {
            Next::Item(at, Item::Event(event)) if event.event == "endpoint" => {
                let first_event = at.saturating_duration_since(stream.started());
                let endpoint = resolve(sse_url, &event.data).map_err(OpenError::Broken)?;
                return Ok(Session { stream, endpoint, first_event });
            }
            Next::Item(..) => {}
            Next::Idle => {
                return Err(OpenError::NoEndpoint(Failure {
                    status: Some(status),
                    what: format!(
                        "{status} text/event-stream, then no endpoint event within {:?} (a buffering proxy?)",
                        client.timeout
                    ),
                }))
            }
            Next::Closed(why) => {
                return Err(OpenError::NoEndpoint(Failure {
                    status: Some(status),
                    what: format!("{status} text/event-stream, closed before an endpoint event: {why}"),
                }))
            }
        }
    }
}

/// The endpoint URI resolved against the stream's URL, as clients do; they
/// refuse one on another origin, so doctor does too.
fn resolve(sse_url: &Url, data: &str) -> Result<Url, Failure> {
    let endpoint = sse_url.join(data.trim()).map_err(|e| Failure {
        status: None,
        what: format!("endpoint event {:?}: {e}", clip(data)),
    })?;
    if endpoint.origin() != sse_url.origin() {
        return Err(Failure {
            status: None,
            what: format!("endpoint {endpoint} is on another origin (clients refuse it)"),
        });
    }
    Ok(endpoint)
}

/// The URLs tried for a legacy stream: the given one, `/sse`, then `--sse-path`s.
pub fn candidates(o: &Options) -> Vec<Url> {
    let mut out = vec![o.url.clone()];
    for path in std::iter::once("/sse").chain(o.sse_paths.iter().map(String::as_str)) {
        if let Ok(url) = o.url.join(path) {
            if !out.contains(&url) {
                out.push(url);
            }
        }
    }
    out
}

/// Tries each candidate in turn. A silent stream at the URL itself does not
/// end the search (it may be a Streamable server's own GET stream, see
/// [`Probe::settle`]); one at `/sse` or a `--sse-path` does.
pub async fn probe(client: &Client, o: &Options) -> Probe {
    let mut saw = Vec::new();
    let mut silent_at_url = None;
    for sse_url in candidates(o) {
        let at_url = sse_url == o.url;
        match connect(client, &sse_url).await {
            Ok(session) => {
                return Probe::Found {
                    sse_url,
                    endpoint: session.endpoint,
                    first_event: session.first_event,
                }
            }
            Err(OpenError::NoEndpoint(f)) if at_url => {
                saw.push(format!("GET {}: {}", sse_url.path(), f.what));
                silent_at_url = Some(Probe::Silent {
                    sse_url,
                    saw: f.what,
                    at_url,
                });
            }
            Err(OpenError::NoEndpoint(f) | OpenError::Broken(f)) => {
                return Probe::Silent {
                    sse_url,
                    saw: f.what,
                    at_url,
                }
            }
            Err(OpenError::NotLegacy(what)) => saw.push(format!("GET {}: {what}", sse_url.path())),
        }
    }
    silent_at_url.unwrap_or_else(|| Probe::NotFound(saw.join(", ")))
}

/// POSTs one message to the session's endpoint; a request (with `id`) must
/// then be answered on the session's own stream within the timeout.
pub async fn exchange(client: &Client, s: &mut Session, body: Value) -> Result<(), Failure> {
    let method = body
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("message")
        .to_string();
    let answer = client
        .send(
            Method::POST,
            &s.endpoint,
            &[("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
        .await
        .map_err(|e| Failure {
            status: None,
            what: format!("{method}: {e}"),
        })?;
    let status = answer.status.as_u16();
    if !answer.status.is_success() {
        let text = answer.text().await.unwrap_or_default();
        return Err(Failure {
            status: Some(status),
            what: format!("{method} answered {status} {}", clip(&text)),
        });
    }
    drop(answer);
    let Some(id) = body.get("id") else {
        return Ok(());
    };
    let deadline = Instant::now() + client.timeout;
    loop {
        match s.stream.next(deadline).await {
            Next::Item(_, Item::Event(event)) => {
                if let Some(message) = response_to(&event.data, id) {
                    return match message.get("error") {
                        None => Ok(()),
                        Some(err) => Err(Failure {
                            status: Some(status),
                            what: format!("{method}: error {}", clip(&err.to_string())),
                        }),
                    };
                }
            }
            Next::Item(..) => {}
            Next::Idle => {
                return Err(Failure {
                    status: None,
                    what: format!(
                        "{method}: {status}, then no answer on its stream within {:?}",
                        client.timeout
                    ),
                })
            }
            Next::Closed(why) => {
                return Err(Failure {
                    status: None,
                    what: format!("{method}: the stream ended first: {why}"),
                })
            }
        }
    }
}

fn initialize_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": ASKED, "capabilities": {},
        "clientInfo": {"name": "tether-doctor", "version": env!("CARGO_PKG_VERSION")}}})
}

/// Opens a stream at `sse_url`, then its session (`initialize`,
/// `notifications/initialized`): `Err` if there is no stream, the inner
/// `Err` if the stream is open and its session failed (e.g. not sticky).
pub async fn open(
    client: &Client,
    sse_url: &Url,
) -> Result<(Session, Result<(), Failure>), Failure> {
    let mut s = connect(client, sse_url).await.map_err(|e| match e {
        OpenError::NotLegacy(what) => Failure {
            status: None,
            what: format!("GET {}: {what}", sse_url.path()),
        },
        other => other.failure(),
    })?;
    let mut handshake = exchange(client, &mut s, initialize_body()).await;
    if handshake.is_ok() {
        handshake = exchange(
            client,
            &mut s,
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
    }
    Ok((s, handshake))
}

/// N streams opened at once; once all are open, each session initializes and
/// makes M calls, every answer awaited on its own stream.
pub async fn stickiness(
    client: &Arc<Client>,
    o: &Options,
    probe: &Probe,
    progress: &Arc<Progress>,
) -> Check {
    const ID: &str = "stickiness.legacy";
    let Some(sse_url) = probe.sse_url() else {
        return Check::new(ID, Verdict::NotApplicable, "no legacy SSE endpoint");
    };
    let _step = progress.begin(format!(
        "legacy stickiness: {} streams x {} calls",
        o.sessions, o.calls
    ));
    let url = Arc::new(sse_url.clone());
    let (live, mut failures) = step_all(
        vec![(); o.sessions],
        each(client, &url, |client, url, ()| async move {
            connect(&client, &url).await.map_err(OpenError::failure)
        }),
    )
    .await;
    let (mut live, failed) = step_all(
        live,
        each(client, &url, |client, _, mut s: Session| async move {
            exchange(&client, &mut s, initialize_body()).await?;
            Ok(s)
        }),
    )
    .await;
    failures.extend(failed);
    let mut steps: Vec<Value> =
        vec![json!({"jsonrpc": "2.0", "method": "notifications/initialized"})];
    steps.extend(
        (1..=o.calls as u64).map(|id| json!({"jsonrpc": "2.0", "id": id, "method": "ping"})),
    );
    for body in steps {
        let (next, failed) = step_all(
            live,
            each(client, &url, move |client, _, mut s: Session| {
                let body = body.clone();
                async move {
                    let call = body
                        .get("id")
                        .map(|id| format!("call {id}: "))
                        .unwrap_or_default();
                    exchange(&client, &mut s, body).await.map_err(|f| Failure {
                        what: format!("{call}{}", f.what),
                        ..f
                    })?;
                    Ok(s)
                }
            }),
        )
        .await;
        live = next;
        failures.extend(failed);
    }
    sticky_verdict(ID, o.sessions, o.calls, &failures)
}

/// The endpoint with its session id forged: each query value that looks
/// like an id (8 characters or more), else the last path segment.
pub fn forge_endpoint(endpoint: &Url) -> Url {
    let mut forged = endpoint.clone();
    let pairs: Vec<(String, String)> = endpoint.query_pairs().into_owned().collect();
    if pairs.iter().any(|(_, v)| v.len() >= 8) {
        let mut q = forged.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            let v = if v.len() >= 8 {
                forge_like(v)
            } else {
                v.clone()
            };
            q.append_pair(k, &v);
        }
    } else if let Some(last) = endpoint.path_segments().and_then(|mut s| s.next_back()) {
        let path = endpoint.path();
        let new = format!("{}{}", &path[..path.len() - last.len()], forge_like(last));
        forged.set_path(&new);
    }
    forged
}

/// A POST with a forged session id. The 2024-11-05 revision names no
/// status; 404 is what its SDKs send and what tells a client the session is
/// gone, so another 4xx is a warning, and a 2xx or a 5xx fails.
pub async fn unknown_session(client: &Client, probe: &Probe) -> Check {
    const ID: &str = "unknown_session.legacy";
    let Probe::Found { endpoint, .. } = probe else {
        return Check::new(ID, Verdict::NotApplicable, "no legacy SSE endpoint");
    };
    let forged = forge_endpoint(endpoint);
    let headers = [("content-type", "application/json")];
    let (status, saw) = match super::forged_ping(client, ID, &forged, &headers).await {
        Ok(answer) => answer,
        Err(check) => return check,
    };
    let verdict = match status {
        404 => Verdict::Pass,
        400..=499 => Verdict::Warn,
        _ => Verdict::Fail,
    };
    Check::new(ID, verdict, saw).with(json!({"status": status}))
}
