//! Streamable HTTP with sessions (2025-03-26 .. 2025-11-25): `initialize`,
//! `Mcp-Session-Id` on every later request, 404 for a session the server
//! does not know, `MCP-Protocol-Version` after initialize, `Origin` 403.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use url::Url;

use super::client::{clip, Answer, Client, ClientError};
use super::modern::ACCEPT;
use super::polling::{resumed, Resume};
use super::progress::Progress;
use super::{forge_like, step_all, Check, Options, Verdict};

/// The newest revision reached through `initialize`: what doctor asks for.
pub const ASKED: &str = "2025-11-25";
/// Revisions reached through `initialize`, oldest first.
pub const HANDSHAKE: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// A version no server supports, for the negotiation check.
pub const BOGUS: &str = "2000-01-01";

/// What `initialize` at the URL found.
#[derive(Debug, Clone)]
pub enum Probe {
    /// Sessions: the server issued an `Mcp-Session-Id`.
    Stateful(Opened),
    /// Served without sessions (any replica can answer anything).
    Stateless(Opened),
    NotServed(String),
}

/// A session (or a stateless exchange) that `initialize` opened.
#[derive(Debug, Clone)]
pub struct Opened {
    pub session: Option<String>,
    /// The version the server chose (`InitializeResult.protocolVersion`).
    pub version: String,
    /// How long after the request the first SSE item of the answer came
    /// (`None`: a JSON answer).
    pub first_event: Option<Duration>,
}

/// Why a request of a session did not work: its status (if any) and a line.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: Option<u16>,
    pub what: String,
}

impl Failure {
    fn key(&self) -> String {
        self.status
            .map_or_else(|| "no answer".to_string(), |s| s.to_string())
    }
}

impl Probe {
    pub fn opened(&self) -> Option<&Opened> {
        match self {
            Probe::Stateful(o) | Probe::Stateless(o) => Some(o),
            Probe::NotServed(_) => None,
        }
    }

    pub fn check(&self) -> Check {
        match self {
            Probe::Stateful(o) | Probe::Stateless(o) => {
                let kind = if o.session.is_some() {
                    "sessions (Mcp-Session-Id issued)"
                } else {
                    "stateless (no Mcp-Session-Id)"
                };
                let answer = if o.first_event.is_some() {
                    "SSE"
                } else {
                    "JSON"
                };
                Check::new(
                    "era.streamable",
                    Verdict::Pass,
                    format!("initialize: {kind}, version {}, answered as {answer}", o.version),
                )
                .with(json!({"sessions": o.session.is_some(), "version": o.version, "sse": o.first_event.is_some()}))
            }
            Probe::NotServed(saw) => Check::new(
                "era.streamable",
                Verdict::NotApplicable,
                format!("not served ({saw})"),
            ),
        }
    }
}

fn initialize_body() -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": ASKED, "capabilities": {},
        "clientInfo": {"name": "tether-doctor", "version": env!("CARGO_PKG_VERSION")}}})
    .to_string()
    .into_bytes()
}

/// POSTs `initialize` (with `extra` headers) and reads its result.
async fn initialize(client: &Client, url: &Url, extra: &[(&str, &str)]) -> Result<Opened, Failure> {
    let mut headers = vec![("accept", ACCEPT), ("content-type", "application/json")];
    headers.extend_from_slice(extra);
    let answer = client
        .send(Method::POST, url, &headers, Some(initialize_body()))
        .await
        .map_err(|e| Failure {
            status: None,
            what: format!("initialize: {e}"),
        })?;
    let session = answer.header("mcp-session-id").map(str::to_string);
    if let Some(id) = &session {
        // Noted before the body is read: an id whose answer then fails is open all the same.
        client.issued(url, id, ASKED);
    }
    let resume = Resume {
        client,
        url,
        session: session.as_deref(),
        version: ASKED,
    };
    let message = reply(answer, &json!(0), "initialize", resume).await?;
    // Shown in the report and sent back in a header: clipped like all a server says.
    let version = clip(
        message
            .0
            .pointer("/result/protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    if let Some(id) = &session {
        client.issued(url, id, &version);
    }
    Ok(Opened {
        session,
        version,
        first_event: message.1,
    })
}

/// The JSON-RPC result of a request; any non-2xx status, error or silence
/// is a [`Failure`]. An SSE answer closed early after an event id or
/// `retry` is resumed through `resume`.
async fn reply(
    answer: Answer,
    id: &Value,
    what: &str,
    resume: Resume<'_>,
) -> Result<(Value, Option<Duration>), Failure> {
    let status = answer.status.as_u16();
    if !answer.status.is_success() {
        let body = answer.text().await.unwrap_or_default();
        return Err(Failure {
            status: Some(status),
            what: format!("{what} answered {status} {}", clip(&body)),
        });
    }
    let got = match answer.jsonrpc(id).await {
        Err(ClientError::Polled { last_id, retry, .. }) => {
            resumed(resume, id, last_id, retry).await
        }
        got => got,
    };
    let (message, first) = got.map_err(|e| Failure {
        status: Some(status),
        what: format!("{what}: {status}, then {e}"),
    })?;
    if let Some(err) = message.get("error") {
        return Err(Failure {
            status: Some(status),
            what: format!(
                "{what} answered {status} with error {}",
                clip(&err.to_string())
            ),
        });
    }
    Ok((message, first))
}

pub async fn probe(client: &Client, url: &Url) -> Probe {
    match initialize(client, url, &[]).await {
        Ok(opened) => {
            if let Some(session) = &opened.session {
                let _ = notify_initialized(client, url, session, &opened.version).await;
                delete(client, url, session, &opened.version).await;
                Probe::Stateful(opened)
            } else {
                Probe::Stateless(opened)
            }
        }
        Err(f) => Probe::NotServed(f.what),
    }
}

fn session_headers<'a>(session: Option<&'a str>, version: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("accept", ACCEPT), ("content-type", "application/json")];
    if let Some(session) = session {
        h.push(("mcp-session-id", session));
    }
    if !version.is_empty() {
        h.push(("mcp-protocol-version", version));
    }
    h
}

async fn notify_initialized(
    client: &Client,
    url: &Url,
    session: &str,
    version: &str,
) -> Result<(), Failure> {
    let body = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let answer = client
        .send(
            Method::POST,
            url,
            &session_headers(Some(session), version),
            Some(body.to_string().into_bytes()),
        )
        .await
        .map_err(|e| Failure {
            status: None,
            what: format!("notifications/initialized: {e}"),
        })?;
    let status = answer.status.as_u16();
    if answer.status.is_success() {
        return Ok(());
    }
    let text = answer.text().await.unwrap_or_default();
    Err(Failure {
        status: Some(status),
        what: format!(
            "notifications/initialized answered {status} {}",
            clip(&text)
        ),
    })
}

/// One `ping` in a session (every server answers ping), with `version` in the header.
pub async fn ping(
    client: &Client,
    url: &Url,
    session: Option<&str>,
    version: &str,
    id: u64,
) -> Result<(), Failure> {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "ping"});
    let answer = client
        .send(
            Method::POST,
            url,
            &session_headers(session, version),
            Some(body.to_string().into_bytes()),
        )
        .await
        .map_err(|e| Failure {
            status: None,
            what: format!("ping: {e}"),
        })?;
    let resume = Resume {
        client,
        url,
        session,
        version,
    };
    reply(answer, &json!(id), "ping", resume).await.map(|_| ())
}

/// Ends a session, best effort. A 2xx ends it and a 405 says the server
/// ends none; after anything else (a 404 from a replica that is not its
/// owner, no answer) it stays for [`delete_all`] to try again.
pub async fn delete(client: &Client, url: &Url, session: &str, version: &str) {
    let answer = client
        .send(
            Method::DELETE,
            url,
            &session_headers(Some(session), version),
            None,
        )
        .await;
    if let Ok(answer) = answer {
        if answer.status.is_success() || answer.status == http::StatusCode::METHOD_NOT_ALLOWED {
            client.ended(url, session);
        }
    }
}

/// The run's last step: a DELETE, all at once, for every session issued
/// and not yet ended, whichever check opened it and however it ended
/// (failed sessions stay open on their owner otherwise). Bounded: the
/// sessions still open after two timeouts are left to the server's expiry.
pub async fn delete_all(client: &Arc<Client>) {
    let mut ending = JoinSet::new();
    for s in client.sessions().into_iter().filter(|s| !s.ended) {
        let client = client.clone();
        ending.spawn(async move { delete(&client, &s.url, &s.id, &s.version).await });
    }
    let bound = client.timeout.saturating_mul(2);
    let _ =
        tokio::time::timeout(bound, async { while ending.join_next().await.is_some() {} }).await;
}

/// Opens a session: `initialize`, then `notifications/initialized` in it.
pub async fn open(client: &Client, url: &Url) -> Result<Opened, Failure> {
    let opened = initialize(client, url, &[]).await?;
    let Some(session) = &opened.session else {
        return Err(Failure {
            status: None,
            what: "initialize issued no Mcp-Session-Id this time".into(),
        });
    };
    notify_initialized(client, url, session, &opened.version).await?;
    Ok(opened)
}

/// N sessions opened at once; once all are open, every session takes each
/// step (`notifications/initialized`, then M pings) at once, in a fresh
/// random order ([`step_all`]: sessions in lockstep through a round robin can
/// land on their own replica by luck).
pub async fn stickiness(
    client: &Arc<Client>,
    o: &Options,
    probe: &Probe,
    progress: &Arc<Progress>,
) -> Check {
    const ID: &str = "stickiness.streamable";
    match probe {
        Probe::Stateful(_) => {}
        Probe::Stateless(_) => {
            return Check::new(
                ID,
                Verdict::NotApplicable,
                "stateless server: no session to keep together",
            )
        }
        Probe::NotServed(_) => return Check::new(ID, Verdict::NotApplicable, "no Streamable HTTP"),
    }
    let _step = progress.begin(format!(
        "stickiness: {} sessions x {} calls",
        o.sessions, o.calls
    ));
    let url = Arc::new(o.url.clone());
    let (live, mut failures) = step_all(
        vec![(); o.sessions],
        each(client, &url, |client, url, ()| async move {
            initialize(&client, &url, &[]).await
        }),
    )
    .await;
    let (mut live, failed) = step_all(
        live,
        each(client, &url, |client, url, opened: Opened| async move {
            let session = opened.session.clone().unwrap_or_default();
            notify_initialized(&client, &url, &session, &opened.version).await?;
            Ok(opened)
        }),
    )
    .await;
    failures.extend(failed);
    for id in 1..=o.calls as u64 {
        let (next, failed) = step_all(
            live,
            each(
                client,
                &url,
                move |client, url, opened: Opened| async move {
                    let session = opened.session.clone().unwrap_or_default();
                    match ping(&client, &url, Some(&session), &opened.version, id).await {
                        Ok(()) => Ok(opened),
                        Err(f) => Err(Failure {
                            what: format!("call {id}: {}", f.what),
                            ..f
                        }),
                    }
                },
            ),
        )
        .await;
        live = next;
        failures.extend(failed);
    }
    // The sessions, live and failed, are ended by the run's last step (delete_all).
    drop(live);
    sticky_verdict(ID, o.sessions, o.calls, &failures)
}

/// `f` for each item, given the client and URL it needs (a task owns its parts).
pub fn each<T, F, Fut>(client: &Arc<Client>, url: &Arc<Url>, f: F) -> impl Fn(T) -> Fut
where
    F: Fn(Arc<Client>, Arc<Url>, T) -> Fut,
{
    let (client, url) = (client.clone(), url.clone());
    move |item| f(client.clone(), url.clone(), item)
}

/// The stickiness verdict from the failed sessions (shared with legacy SSE).
pub fn sticky_verdict(
    id: &'static str,
    sessions: usize,
    calls: usize,
    failures: &[Failure],
) -> Check {
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for f in failures {
        *by_status.entry(f.key()).or_default() += 1;
    }
    let data = json!({"sessions": sessions, "calls": calls, "failed": failures.len(), "failures": by_status});
    let Some(first) = failures.first() else {
        return Check::new(
            id,
            Verdict::Pass,
            format!("{sessions} sessions x {calls} calls, every answer in its session"),
        )
        .with(data);
    };
    let counts: Vec<String> = by_status.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    Check::new(
        id,
        Verdict::Fail,
        format!(
            "not sticky: {} of {sessions} sessions failed ({}); e.g. {}",
            failures.len(),
            counts.join(", "),
            first.what
        ),
    )
    .with(data)
}

/// A forged id of the shape the server issues: the spec wants 404 (a client
/// re-initializes on 404 only); 400 or 5xx leave clients stuck.
pub async fn unknown_session(client: &Client, url: &Url, probe: &Probe) -> Check {
    const ID: &str = "unknown_session.streamable";
    let Probe::Stateful(opened) = probe else {
        return Check::new(ID, Verdict::NotApplicable, "no sessions");
    };
    let forged = forge_like(opened.session.as_deref().unwrap_or_default());
    let headers = session_headers(Some(&forged), &opened.version);
    let (status, saw) = match super::forged_ping(client, ID, url, &headers).await {
        Ok(answer) => answer,
        Err(check) => return check,
    };
    let verdict = if status == 404 {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let saw = match status {
        404 => saw,
        400 => format!("{saw} (the spec wants 404: clients re-initialize on 404 only)"),
        200..=299 => format!("{saw} (a session nobody opened was served)"),
        _ => format!("{saw} (the spec wants 404)"),
    };
    Check::new(ID, verdict, saw).with(json!({"status": status}))
}

/// `initialize` from a foreign `Origin`: 2025-11-25 wants 403 (DNS rebinding).
/// A warning otherwise: clients keep working, browsers on other sites may too.
pub async fn origin(client: &Client, url: &Url, probe: &Probe) -> Check {
    const ID: &str = "origin";
    const FOREIGN: &str = "http://doctor.invalid";
    if probe.opened().is_none() {
        return Check::new(ID, Verdict::NotApplicable, "no Streamable HTTP");
    }
    match initialize(client, url, &[("origin", FOREIGN)]).await {
        Ok(opened) => {
            if let Some(session) = &opened.session {
                delete(client, url, session, &opened.version).await;
            }
            Check::new(
                ID,
                Verdict::Warn,
                format!("initialize with Origin: {FOREIGN} was served (the spec wants 403)"),
            )
            .with(json!({"status": 200}))
        }
        Err(Failure {
            status: Some(403), ..
        }) => Check::new(ID, Verdict::Pass, format!("Origin: {FOREIGN} got 403"))
            .with(json!({"status": 403})),
        Err(f) => Check::new(
            ID,
            Verdict::Warn,
            format!("Origin: {FOREIGN}: {} (the spec wants 403)", f.what),
        )
        .with(json!({"status": f.status})),
    }
}

/// The negotiated version is a known one and is accepted in the header; an
/// unsupported header value gets 400. A server that accepts any value is a
/// warning: its clients still work, they send what was negotiated.
pub async fn protocol_version(client: &Client, url: &Url, probe: &Probe) -> Check {
    const ID: &str = "protocol_version";
    let Some(first) = probe.opened().cloned() else {
        return Check::new(ID, Verdict::NotApplicable, "no Streamable HTTP");
    };
    let opened = if first.session.is_some() {
        match open(client, url).await {
            Ok(o) => o,
            Err(f) if f.status == Some(404) => return lost(ID, &f),
            Err(f) => return Check::new(ID, Verdict::Fail, format!("a new session: {}", f.what)),
        }
    } else {
        first
    };
    let session = opened.session.as_deref();
    let good = ping(client, url, session, &opened.version, 1).await;
    if let Err(f) = &good {
        if f.status == Some(404) && session.is_some() {
            return lost(ID, f);
        }
    }
    let bogus = ping(client, url, session, BOGUS, 2).await;
    if let Some(s) = session {
        delete(client, url, s, &opened.version).await;
    }
    version_verdict(ID, &opened.version, good, bogus)
}

/// The session was lost (404) before the header could be judged: that is
/// the stickiness check's finding, not this one's.
fn lost(id: &'static str, f: &Failure) -> Check {
    Check::new(
        id,
        Verdict::NotApplicable,
        format!("its session was lost first ({}): see stickiness", f.what),
    )
}

pub fn version_verdict(
    id: &'static str,
    version: &str,
    good: Result<(), Failure>,
    bogus: Result<(), Failure>,
) -> Check {
    let known = HANDSHAKE.contains(&version);
    let bogus_status = match &bogus {
        Ok(()) => Some(200),
        Err(f) => f.status,
    };
    let data = json!({"negotiated": version, "asked": ASKED, "bogus_status": bogus_status});
    if let Err(f) = good {
        return Check::new(
            id,
            Verdict::Fail,
            format!("negotiated {version:?}, yet a call with it: {}", f.what),
        )
        .with(data);
    }
    let header_era = version >= "2025-06-18";
    let (verdict, saw) = match (&bogus, known) {
        (_, false) => (Verdict::Warn, format!("asked {ASKED}, the server chose {version:?}, no revision known")),
        (Err(Failure { status: Some(400), .. }), true) => {
            (Verdict::Pass, format!("negotiated {version}; MCP-Protocol-Version: {BOGUS} got 400"))
        }
        (_, true) if !header_era => {
            (Verdict::Pass, format!("negotiated {version} (before the MCP-Protocol-Version header)"))
        }
        (Ok(()), true) => {
            (Verdict::Warn, format!("negotiated {version}; MCP-Protocol-Version: {BOGUS} was served (the spec wants 400)"))
        }
        (Err(f), true) => {
            (Verdict::Warn, format!("negotiated {version}; MCP-Protocol-Version: {BOGUS}: {} (the spec wants 400)", f.what))
        }
    };
    Check::new(id, verdict, saw).with(data)
}
