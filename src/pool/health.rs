//! Health checks: one task per backend probes it every `interval`; the
//! request path reports failed calls (passive checks). What they conclude is
//! the backend's `Health`: `unhealthy` takes no new sessions (its sessions
//! are still forwarded), `down` sends its sessions the 404.
//!
//! The MCP probe speaks the server's own protocol: `server/discover` for a
//! 2026-07-28 server; else `initialize`, then a `DELETE` of the session it
//! opened; else (a legacy HTTP+SSE server) a GET of the stream until its
//! `endpoint` event. The kind that answered is remembered and tried first.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::backend::{Backend, Health};
use crate::http1::head::{FieldKind, ResponseHead};
use crate::metrics::{self, Metrics};
use crate::tls::backend::Shared as BackendTls;
use crate::transport::Stream;

/// What a probe sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// `server/discover`, else `initialize` + `DELETE`, else the legacy stream's `endpoint` event.
    #[default]
    Mcp,
    /// `GET path`: a 2xx or 3xx answer is healthy.
    Http,
    /// A TCP connection is healthy.
    Tcp,
    /// No probes; passive checks only (a backend they mark unhealthy is tried
    /// again after a backoff).
    None,
}

/// `[health]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthSettings {
    pub check: Check,
    pub path: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failures that make a healthy backend unhealthy.
    pub fall: u32,
    /// Consecutive successes that make it healthy again.
    pub rise: u32,
    /// Failing for this long makes it down.
    #[serde(with = "humantime_serde")]
    pub down_after: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            check: Check::Mcp,
            path: "/mcp".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            down_after: Duration::from_secs(30),
        }
    }
}

/// How a probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Refused,
    Timeout,
    Failed,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Timeout => "timeout",
            Failure::Failed => "failed",
        }
    }
}

/// Starts the checks of `backend`; they stop when the handle is aborted.
pub fn spawn(
    backend: Arc<Backend>,
    settings: Arc<ArcSwap<HealthSettings>>,
    tls: BackendTls,
    metrics: Arc<Metrics>,
) -> AbortHandle {
    tokio::spawn(run(backend, settings, tls, metrics)).abort_handle()
}

async fn run(
    backend: Arc<Backend>,
    settings: Arc<ArcSwap<HealthSettings>>,
    tls: BackendTls,
    metrics: Arc<Metrics>,
) {
    let mut kind = Kind::Discover;
    let mut run = Run::default();
    let mut backoff = None::<Duration>;
    loop {
        let s = settings.load_full();
        if s.check == Check::None {
            // Passive checks only: an unhealthy backend gets another chance
            // after a backoff that doubles while it keeps failing.
            let wait = backoff.unwrap_or(s.interval);
            tokio::time::sleep(wait).await;
            if backend.health() != Health::Healthy {
                backend.call_succeeded();
                set(&backend, Health::Healthy, &metrics, "passive backoff over");
                backoff = Some((wait * 2).min(Duration::from_secs(60)));
            } else {
                backoff = None;
            }
            continue;
        }
        let started = Instant::now();
        let result =
            match tokio::time::timeout(s.timeout, probe(&backend, &s, &tls, &mut kind)).await {
                Ok(result) => result,
                Err(_) => Err(Failure::Timeout),
            };
        let label = match result {
            Ok(()) => "ok",
            Err(f) => f.as_str(),
        };
        metrics
            .health_checks
            .get_or_create(&metrics::BackendKind {
                backend: metrics::Name(backend.id.clone()),
                kind: label,
            })
            .inc();
        if result.is_ok() {
            // The probes vouch for it: a run of failed calls starts again.
            backend.call_succeeded();
        }
        if let Some((to, why)) = run.next(backend.health(), result, &s, started) {
            set(&backend, to, &metrics, why);
        }
        tokio::time::sleep_until(started + s.interval).await;
    }
}

/// A run of probe results and what it concludes.
#[derive(Debug, Default)]
struct Run {
    oks: u32,
    fails: u32,
    refused: u32,
    /// Since when every probe went unanswered (timed out or refused). A
    /// backend that answers, even wrongly, is alive: never `down` for that.
    silent_since: Option<Instant>,
    /// The health this run last saw (a passive check may have changed it).
    seen: Option<Health>,
}

impl Run {
    fn next(
        &mut self,
        health: Health,
        result: Result<(), Failure>,
        s: &HealthSettings,
        now: Instant,
    ) -> Option<(Health, &'static str)> {
        if self.seen != Some(health) {
            // Changed by someone else: count from here.
            self.oks = 0;
            self.seen = Some(health);
        }
        let to = match result {
            Ok(()) => {
                self.fails = 0;
                self.refused = 0;
                self.silent_since = None;
                self.oks += 1;
                (health != Health::Healthy && self.oks >= s.rise)
                    .then_some((Health::Healthy, "probes succeeded"))
            }
            Err(failure) => {
                self.oks = 0;
                self.fails += 1;
                self.refused = if failure == Failure::Refused {
                    self.refused + 1
                } else {
                    0
                };
                let silent = match failure {
                    Failure::Failed => {
                        self.silent_since = None;
                        false
                    }
                    Failure::Refused | Failure::Timeout => {
                        let since = *self.silent_since.get_or_insert(now);
                        now.duration_since(since) >= s.down_after
                    }
                };
                if health != Health::Down && (self.refused >= s.fall || silent) {
                    Some((Health::Down, "probes unanswered"))
                } else if health == Health::Healthy && self.fails >= s.fall {
                    Some((Health::Unhealthy, "probes failing"))
                } else {
                    None
                }
            }
        };
        if let Some((h, _)) = to {
            self.seen = Some(h);
        }
        to
    }
}

/// A failed call on the request path (refused, timed out, 5xx): `fall` in a
/// row make a healthy backend unhealthy before the next probe.
pub fn passive_failure(backend: &Backend, settings: &HealthSettings, metrics: &Metrics) {
    let fails = backend.call_failed();
    // Only from healthy (atomically: a probe may be setting `down` meanwhile).
    if fails >= settings.fall && backend.healthy_to_unhealthy() {
        transition(backend, Health::Unhealthy, metrics, "calls failing");
    }
}

fn set(backend: &Backend, to: Health, metrics: &Metrics, why: &'static str) {
    if backend.set_health(to) != to {
        transition(backend, to, metrics, why);
    }
}

/// Counts and logs a change of health.
fn transition(backend: &Backend, to: Health, metrics: &Metrics, why: &'static str) {
    let name = match to {
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
        Health::Down => "down",
    };
    metrics
        .health_transitions
        .get_or_create(&metrics::BackendState {
            backend: metrics::Name(backend.id.clone()),
            state: name,
        })
        .inc();
    match to {
        Health::Healthy => tracing::info!(backend = %backend.id, why, "backend healthy"),
        _ => tracing::warn!(backend = %backend.id, health = name, why, "backend not healthy"),
    }
}

/// Which MCP probe a backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Discover,
    Initialize,
    LegacyStream,
}

async fn probe(
    backend: &Backend,
    s: &HealthSettings,
    tls: &BackendTls,
    kind: &mut Kind,
) -> Result<(), Failure> {
    let to = To {
        backend,
        tls: (backend.scheme == http::uri::Scheme::HTTPS).then(|| tls.load_full()),
        shared: tls,
        timeout: s.timeout,
    };
    let host = backend.authority.as_str();
    match s.check {
        Check::None => Ok(()),
        // A TCP check of an https:// backend stops at the connection.
        Check::Tcp => connect(host).await.map(drop),
        Check::Http => {
            let request = format!(
                "GET {} HTTP/1.1\r\nhost: {host}\r\nuser-agent: tether-health\r\nconnection: close\r\n\r\n",
                s.path
            );
            let answer = exchange(&to, request.as_bytes(), None).await?;
            match answer.status {
                200..=399 => Ok(()),
                _ => Err(Failure::Failed),
            }
        }
        Check::Mcp => {
            let order = match kind {
                Kind::Discover => [Kind::Discover, Kind::Initialize, Kind::LegacyStream],
                Kind::Initialize => [Kind::Initialize, Kind::Discover, Kind::LegacyStream],
                Kind::LegacyStream => [Kind::LegacyStream, Kind::Discover, Kind::Initialize],
            };
            let mut last = Failure::Failed;
            for k in order {
                match mcp_probe(&to, &s.path, k).await {
                    Ok(()) => {
                        *kind = k;
                        return Ok(());
                    }
                    // Nothing listens (or it hangs): no other kind will do better.
                    Err(f @ (Failure::Refused | Failure::Timeout)) => return Err(f),
                    Err(f) => last = f,
                }
            }
            Err(last)
        }
    }
}

const DISCOVER: &str = r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}"#;
const INITIALIZE: &str = concat!(
    r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","#,
    r#""capabilities":{},"clientInfo":{"name":"tether-health","version":"1"}}}"#
);

async fn mcp_probe(to: &To<'_>, path: &str, kind: Kind) -> Result<(), Failure> {
    let host = to.backend.authority.as_str();
    let post = |body: &str, extra: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: tether-health\r\n\
             content-type: application/json\r\naccept: application/json, text/event-stream\r\n\
             {extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match kind {
        Kind::Discover => {
            let request = post(
                DISCOVER,
                "mcp-protocol-version: 2026-07-28\r\nmcp-method: server/discover\r\n",
            );
            let answer = exchange(to, request.as_bytes(), Some(b"\"result\"")).await?;
            answer.ok_with(b"\"result\"")
        }
        Kind::Initialize => {
            let request = post(INITIALIZE, "");
            let answer = exchange(to, request.as_bytes(), Some(b"\"result\"")).await?;
            answer.ok_with(b"\"result\"")?;
            if let Some(id) = answer.session_id {
                // Close the session the probe opened; its answer does not matter.
                let delete = format!(
                    "DELETE {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: tether-health\r\n\
                     mcp-session-id: {id}\r\nmcp-protocol-version: 2025-06-18\r\nconnection: close\r\n\r\n"
                );
                let _ = exchange(to, delete.as_bytes(), None).await;
            }
            Ok(())
        }
        Kind::LegacyStream => {
            let request = format!(
                "GET {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: tether-health\r\n\
                 accept: text/event-stream\r\nconnection: close\r\n\r\n"
            );
            let answer = exchange(to, request.as_bytes(), Some(b"event: endpoint")).await?;
            answer.ok_with(b"event: endpoint")
        }
    }
}

/// Where a probe goes: the backend, and TLS for an `https://` one.
struct To<'a> {
    backend: &'a Backend,
    tls: Option<Arc<crate::tls::backend::BackendTls>>,
    /// For an `h2` backend, whose probe opens an HTTP/2 connection of its own.
    shared: &'a BackendTls,
    timeout: Duration,
}

async fn connect(host: &str) -> Result<TcpStream, Failure> {
    TcpStream::connect(host).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Failure::Refused,
        _ => Failure::Failed,
    })
}

/// A probe's answer: status, session id, and the body (or its start).
struct Answer {
    status: u16,
    session_id: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn ok_with(&self, marker: &[u8]) -> Result<(), Failure> {
        let found = self.body.windows(marker.len()).any(|w| w == marker);
        match (self.status, found) {
            (200, true) => Ok(()),
            _ => Err(Failure::Failed),
        }
    }
}

/// Most bytes a probe reads.
const MAX_ANSWER: usize = 64 * 1024;

/// Sends `request` on a new connection and reads the answer: the whole
/// body, or until `marker` shows in it (an event stream does not end).
async fn exchange(to: &To<'_>, request: &[u8], marker: Option<&[u8]>) -> Result<Answer, Failure> {
    let host = to.backend.authority.as_str();
    if to.backend.protocol() == super::Protocol::H2 {
        let target = crate::h2up::Target {
            scheme: to.backend.scheme.clone(),
            authority: to.backend.authority.clone(),
            tls: to.shared.clone(),
            connect_timeout: to.timeout,
        };
        let stream = crate::h2up::once(&target).await.map_err(|e| {
            tracing::debug!(backend = %to.backend.id, error = %e.detail, "health probe: no HTTP/2 connection");
            match e.failure {
                crate::error::UpstreamFailure::Refused => Failure::Refused,
                _ => Failure::Failed,
            }
        })?;
        return answer(stream, request, marker).await;
    }
    let tcp = connect(host).await?;
    let stream = match &to.tls {
        None => Stream::Tcp(tcp),
        Some(tls) => match tls.connect(to.backend.authority.host(), tcp).await {
            Ok(s) => Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s))),
            Err(e) => {
                tracing::debug!(backend = %to.backend.id, error = %e, "health probe: TLS failed");
                return Err(Failure::Failed);
            }
        },
    };
    answer(stream, request, marker).await
}

/// Sends `request` on `stream` and reads the answer (as `exchange`).
async fn answer(
    mut stream: Stream,
    request: &[u8],
    marker: Option<&[u8]>,
) -> Result<Answer, Failure> {
    stream
        .send_all(request)
        .await
        .map_err(|_| Failure::Failed)?;
    let mut buf = Vec::with_capacity(4096);
    let head = loop {
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(|_| Failure::Failed)?
            == 0
        {
            return Err(Failure::Failed);
        }
        match ResponseHead::parse(&buf, MAX_ANSWER, false) {
            Ok(Some(head)) if head.status >= 200 => break head,
            Ok(Some(_)) => return Err(Failure::Failed),
            Ok(None) => {}
            Err(_) => return Err(Failure::Failed),
        }
    };
    let session_id = head
        .fields
        .get(&buf, FieldKind::SessionId)
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|v| crate::affinity::is_session_id(v.as_bytes()))
        .map(str::to_owned);
    let raw = buf.split_off(head.len);
    let seen = |body: &[u8]| marker.is_some_and(|m| body.windows(m.len()).any(|w| w == m));
    let body = crate::http1::answer::read(&mut stream, &head, raw, MAX_ANSWER, seen)
        .await
        .map_err(|_| Failure::Failed)?;
    Ok(Answer {
        status: head.status,
        session_id,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HealthSettings {
        HealthSettings {
            fall: 3,
            rise: 2,
            down_after: Duration::from_secs(10),
            ..HealthSettings::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fall_failures_make_unhealthy_rise_successes_healthy() {
        let s = settings();
        let mut run = Run::default();
        let t = Instant::now();
        let mut h = Health::Healthy;
        let mut step = |h: &mut Health, r, at| {
            if let Some((to, _)) = run.next(*h, r, &s, t + Duration::from_secs(at)) {
                *h = to;
            }
            *h
        };
        assert_eq!(step(&mut h, Err(Failure::Timeout), 0), Health::Healthy);
        assert_eq!(step(&mut h, Err(Failure::Timeout), 1), Health::Healthy);
        assert_eq!(step(&mut h, Err(Failure::Timeout), 2), Health::Unhealthy);
        assert_eq!(step(&mut h, Ok(()), 3), Health::Unhealthy);
        assert_eq!(step(&mut h, Err(Failure::Failed), 4), Health::Unhealthy);
        assert_eq!(step(&mut h, Ok(()), 5), Health::Unhealthy);
        assert_eq!(step(&mut h, Ok(()), 6), Health::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_for_down_after_or_refused_fall_times_is_down() {
        let s = settings();
        let t = Instant::now();
        let mut run = Run::default();
        let mut h = Health::Healthy;
        for at in 0..10 {
            if let Some((to, _)) =
                run.next(h, Err(Failure::Timeout), &s, t + Duration::from_secs(at))
            {
                h = to;
            }
            assert_eq!(
                h,
                if at >= 2 {
                    Health::Unhealthy
                } else {
                    Health::Healthy
                }
            );
        }
        assert_eq!(
            run.next(h, Err(Failure::Timeout), &s, t + Duration::from_secs(10))
                .map(|x| x.0),
            Some(Health::Down)
        );
        let mut run = Run::default();
        let mut h = Health::Healthy;
        for _ in 0..3 {
            if let Some((to, _)) = run.next(h, Err(Failure::Refused), &s, t) {
                h = to;
            }
        }
        assert_eq!(h, Health::Down);
    }

    #[tokio::test(start_paused = true)]
    async fn with_passive_checks_only_even_a_down_backend_is_tried_again() {
        // Found in review: a backend down when a reload set `check = "none"`
        // stayed down for good.
        let backend = Arc::new(Backend::new(
            http::uri::Scheme::HTTP,
            "h:1".parse().unwrap(),
        ));
        backend.set_health(Health::Down);
        let s = HealthSettings {
            check: Check::None,
            interval: Duration::from_secs(1),
            ..settings()
        };
        let task = spawn(
            backend.clone(),
            Arc::new(ArcSwap::from_pointee(s)),
            crate::tls::backend::BackendTls::shared_default(),
            Arc::new(Metrics::default()),
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(backend.health(), Health::Healthy);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_answers_wrongly_is_never_down() {
        // A wrong probe path: answered 404 for ever. Unhealthy, never down,
        // so panic mode keeps serving its sessions.
        let s = settings();
        let t = Instant::now();
        let mut run = Run::default();
        let mut h = Health::Healthy;
        for at in 0..100 {
            if let Some((to, _)) =
                run.next(h, Err(Failure::Failed), &s, t + Duration::from_secs(at))
            {
                h = to;
            }
        }
        assert_eq!(h, Health::Unhealthy);
    }

    #[tokio::test(start_paused = true)]
    async fn a_passive_mark_needs_rise_fresh_successes() {
        let s = settings();
        let t = Instant::now();
        let mut run = Run::default();
        assert_eq!(run.next(Health::Healthy, Ok(()), &s, t), None);
        assert_eq!(run.next(Health::Healthy, Ok(()), &s, t), None);
        // A passive check marked it unhealthy meanwhile.
        assert_eq!(run.next(Health::Unhealthy, Ok(()), &s, t), None);
        assert_eq!(
            run.next(Health::Unhealthy, Ok(()), &s, t).map(|x| x.0),
            Some(Health::Healthy)
        );
    }
}
