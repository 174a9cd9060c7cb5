//! `tether doctor URL`: probes any MCP endpoint, whatever is in front of
//! it, as a real client would, and judges what it sees: which eras and
//! transports it serves, whether sessions stick, what an unknown session id
//! gets, how SSE fares through the path, `Origin` and `MCP-Protocol-Version`.
//!
//! Doctor is a client. It relies on the MCP specification only, never on
//! Tether's token format, and it never imports the request path (`proxy`,
//! `forward`, `conn`): it must judge Tether from the outside, as it judges
//! HAProxy or a bare server. Layout: [`client`] (HTTP/1.1 and TLS, every step
//! bounded), [`sse`] (the event-stream parser), [`modern`], [`streamable`]
//! and [`legacy`] (the checks of each era), [`polling`] (resuming an SSE
//! answer closed early), [`hold`] (idle streams and keep-alives),
//! [`report`] (table and JSON), [`progress`] (the stderr line).
//! The verdicts and what each means: `docs/doctor.md`.

mod client;
mod hold;
mod legacy;
mod modern;
#[cfg(test)]
mod net_tests;
mod polling;
mod progress;
mod report;
pub mod sse;
mod streamable;
#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use url::Url;

use crate::cli::DoctorArgs;
use client::Client;
use progress::Progress;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "pass")]
    Pass,
    /// Worth knowing, but clients keep working: does not fail the run.
    #[serde(rename = "warn")]
    Warn,
    #[serde(rename = "fail")]
    Fail,
    /// The check does not apply (e.g. legacy checks with no SSE endpoint).
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
            Verdict::NotApplicable => "n/a",
        }
    }
}

/// One check's verdict with what it saw.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name, e.g. `stickiness.streamable`.
    pub id: &'static str,
    pub verdict: Verdict,
    /// What it saw, in a line: counts, statuses, times.
    pub saw: String,
    /// The same, for machines (counts, statuses, milliseconds).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Check {
    pub fn new(id: &'static str, verdict: Verdict, saw: impl Into<String>) -> Check {
        Check {
            id,
            verdict,
            saw: saw.into(),
            data: serde_json::Value::Null,
        }
    }

    pub fn with(mut self, data: serde_json::Value) -> Check {
        self.data = data;
        self
    }
}

/// The exit status for a set of verdicts: 1 if any check failed, else 0
/// (warnings and checks that do not apply never fail a run).
pub fn exit_code(checks: &[Check]) -> u8 {
    u8::from(checks.iter().any(|c| c.verdict == Verdict::Fail))
}

/// What the run was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: Url,
    pub sessions: usize,
    pub calls: usize,
    pub hold: Duration,
    pub sse_paths: Vec<String>,
    pub timeout: Duration,
}

/// The report of a run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub url: String,
    pub exit: u8,
    pub elapsed_ms: u128,
    pub checks: Vec<Check>,
}

/// `tether doctor`: runs the checks and prints the report; 2 on a usage
/// error or an endpoint that cannot be reached at all.
pub fn main(args: DoctorArgs) -> ExitCode {
    let (options, client) = match prepare(&args) {
        Ok(ready) => ready,
        Err(e) => {
            eprintln!("tether doctor: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether doctor: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let progress = Arc::new(Progress::stderr());
    let outcome = runtime.block_on(run(options, Arc::new(client), progress.clone()));
    progress.finish();
    match outcome {
        Ok(report) => {
            let out = if args.json {
                report::json(&report)
            } else {
                report::table(&report)
            };
            println!("{out}");
            ExitCode::from(report.exit)
        }
        Err(e) => {
            eprintln!("tether doctor: {e}");
            ExitCode::from(2)
        }
    }
}

fn prepare(args: &DoctorArgs) -> Result<(Options, Client), String> {
    let url = Url::parse(&args.url).map_err(|e| format!("{}: {e}", args.url))?;
    let headers = args
        .headers
        .iter()
        .map(|h| client::parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    for path in &args.sse_paths {
        if !path.starts_with('/') {
            return Err(format!("--sse-path {path:?}: a path begins with /"));
        }
    }
    if args.timeout.is_zero() {
        return Err("--timeout must be more than 0".into());
    }
    let client = Client::new(&url, headers, args.timeout)?;
    let options = Options {
        url,
        sessions: args.sessions as usize,
        calls: args.calls as usize,
        hold: args.hold,
        sse_paths: args.sse_paths.clone(),
        timeout: args.timeout,
    };
    Ok((options, client))
}

/// The checks in the order the report shows them (`mcp` only when no era answered).
const ORDER: [&str; 13] = [
    "era.modern",
    "era.streamable",
    "era.legacy",
    "mcp",
    "stickiness.streamable",
    "stickiness.legacy",
    "unknown_session.streamable",
    "unknown_session.legacy",
    "sse.first_event",
    "sse.keepalive",
    "sse.hold",
    "origin",
    "protocol_version",
];

/// The longest a whole run may take: the backstop that makes "the run
/// ends" true by construction, whatever a server does. Every network wait
/// is bounded by the timeout already; this adds up the longest chain of
/// them the checks make, one after another, and doubles it. One request may
/// wait up to four times (connection, TLS handshake, response head, body);
/// a legacy message also waits for its answer on the stream.
pub fn run_limit(o: &Options) -> Duration {
    let t = o.timeout;
    let calls = u32::try_from(o.calls).unwrap_or(u32::MAX);
    let request = t.saturating_mul(4);
    let legacy_message = request.saturating_add(t);
    let candidates = u32::try_from(legacy::candidates(o).len()).unwrap_or(u32::MAX);
    let discover = request;
    let eras = request
        .saturating_mul(3)
        .max(legacy_message.saturating_mul(candidates));
    let then = [
        // initialize, notify, the calls.
        request.saturating_mul(calls.saturating_add(2)),
        // connect (a GET, then its endpoint event), initialize, notify, the calls.
        legacy_message.saturating_mul(calls.saturating_add(3)),
        // a new session, two pings, a DELETE.
        request.saturating_mul(5),
        // two sessions opened and checked around the hold, with resumptions' last GET.
        o.hold.saturating_add(legacy_message.saturating_mul(8)),
    ]
    .into_iter()
    .max()
    .unwrap_or_default();
    discover
        .saturating_add(eras)
        .saturating_add(then)
        .saturating_mul(2)
}

/// The checks as they finish: the backstop reports what is here.
#[derive(Default)]
struct Board(std::sync::Mutex<Vec<Check>>);

impl Board {
    fn put(&self, checks: impl IntoIterator<Item = Check>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(checks);
    }

    /// The checks in report order; with `unfinished`, each check that did
    /// not finish is there as failed, saying so.
    fn take(&self, unfinished: Option<&str>) -> Vec<Check> {
        let mut done = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(why) = unfinished {
            for id in ORDER {
                if id != "mcp" && !done.iter().any(|c| c.id == id) {
                    done.push(Check::new(
                        id,
                        Verdict::Fail,
                        format!("did not finish: {why}"),
                    ));
                }
            }
        }
        let rank = |c: &Check| {
            ORDER
                .iter()
                .position(|id| *id == c.id)
                .unwrap_or(ORDER.len())
        };
        done.sort_by_key(rank);
        done
    }
}

/// Runs every check. `Err` only when the endpoint cannot be reached at all.
pub async fn run(
    o: Options,
    client: Arc<Client>,
    progress: Arc<Progress>,
) -> Result<Report, String> {
    let limit = run_limit(&o);
    run_within(o, client, progress, limit).await
}

/// [`run`] with the backstop given. When it passes first, the checks not
/// finished fail (exit 1) and the report is still printed. Either way the
/// run ends every session it was issued ([`streamable::delete_all`]).
pub async fn run_within(
    o: Options,
    client: Arc<Client>,
    progress: Arc<Progress>,
    limit: Duration,
) -> Result<Report, String> {
    let started = Instant::now();
    let board = Board::default();
    let finished = tokio::time::timeout(limit, checks(&o, client.clone(), progress, &board)).await;
    let unfinished = format!(
        "the run's bound ({} s, from --timeout, --calls and --hold) passed first",
        limit.as_secs()
    );
    let checks = match finished {
        Ok(Ok(())) => board.take(None),
        Ok(Err(unreachable)) => {
            streamable::delete_all(&client).await;
            return Err(unreachable);
        }
        Err(_) => board.take(Some(&unfinished)),
    };
    streamable::delete_all(&client).await;
    Ok(Report {
        url: o.url.to_string(),
        exit: exit_code(&checks),
        elapsed_ms: started.elapsed().as_millis(),
        checks,
    })
}

async fn checks(
    o: &Options,
    client: Arc<Client>,
    progress: Arc<Progress>,
    board: &Board,
) -> Result<(), String> {
    let step = progress.begin("finding eras and transports");
    let modern = modern::probe(&client, &o.url).await;
    if let Err(e) = &modern {
        if e.is_unreachable() {
            return Err(format!("{}: {e}", o.url));
        }
    }
    board.put([modern::verdict(&modern)]);
    let (streamable, legacy) = tokio::join!(
        streamable::probe(&client, &o.url),
        legacy::probe(&client, o)
    );
    // Decided once both are in: the probes ran at once.
    let legacy = legacy.settle(&streamable);
    drop(step);

    let eras = [streamable.check(), legacy.check()];
    let none = modern::verdict(&modern).verdict == Verdict::NotApplicable
        && eras.iter().all(|c| c.verdict == Verdict::NotApplicable);
    board.put(eras);
    if none {
        board.put([Check::new(
            "mcp",
            Verdict::Fail,
            "no MCP transport answered at this URL (see the checks above)",
        )]);
    }
    let put = |check: Check| board.put([check]);
    tokio::join!(
        async { put(streamable::stickiness(&client, o, &streamable, &progress).await) },
        async { put(streamable::unknown_session(&client, &o.url, &streamable).await) },
        async { put(streamable::origin(&client, &o.url, &streamable).await) },
        async { put(streamable::protocol_version(&client, &o.url, &streamable).await) },
        async { put(legacy::stickiness(&client, o, &legacy, &progress).await) },
        async { put(legacy::unknown_session(&client, &legacy).await) },
        async { board.put(hold::run(&client, o, &streamable, &legacy, &progress).await) },
    );
    Ok(())
}

/// One step of every live session at once, the sessions taken in a fresh
/// random order: a round robin then sends each session's request to a
/// replica picked by chance. Taken in the same order every step (all opened,
/// then all notified, then all calling), sessions move through a round robin
/// in lockstep and may each come back to their own replica by luck.
/// Returns the sessions that got through and why the others did not.
pub async fn step_all<T, U, F, Fut>(mut live: Vec<T>, step: F) -> (Vec<U>, Vec<streamable::Failure>)
where
    U: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<U, streamable::Failure>> + Send + 'static,
{
    use rand::seq::SliceRandom;
    live.shuffle(&mut rand::thread_rng());
    let mut tasks = tokio::task::JoinSet::new();
    for item in live {
        tasks.spawn(step(item));
    }
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(item)) => ok.push(item),
            Ok(Err(f)) => failed.push(f),
            Err(e) => failed.push(streamable::Failure {
                status: None,
                what: e.to_string(),
            }),
        }
    }
    (ok, failed)
}

/// A random id shaped like `real`: each hex digit, letter or digit replaced
/// by a random one of its kind, everything else kept. A server (or a
/// balancer) that checks an id's shape before looking it up still looks it
/// up, so what it answers is what an unknown session gets.
/// What a `ping` POST with a forged session reference got (`headers` or
/// `url` carry it): its status and a line saying so, or the failed check.
pub async fn forged_ping(
    client: &Client,
    id: &'static str,
    url: &Url,
    headers: &[(&str, &str)],
) -> Result<(u16, String), Check> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let answer = client
        .send(
            http::Method::POST,
            url,
            headers,
            Some(body.to_string().into_bytes()),
        )
        .await
        .map_err(|e| {
            Check::new(
                id,
                Verdict::Fail,
                format!("a forged session id got no answer: {e}"),
            )
        })?;
    let status = answer.status.as_u16();
    let text = answer.text().await.unwrap_or_default();
    Ok((
        status,
        format!("a forged session id got {status} {}", client::clip(&text)),
    ))
}

pub fn forge_like(real: &str) -> String {
    use rand::Rng;
    const HEX: &[u8] = b"0123456789abcdef";
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let all_hex = real.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let mut rng = rand::thread_rng();
    let forged: String = real
        .chars()
        .map(|c| {
            let pool = if all_hex && c.is_ascii_hexdigit() {
                HEX
            } else if c.is_ascii_alphanumeric() {
                ALNUM
            } else {
                return c;
            };
            char::from(pool[rng.gen_range(0..pool.len())])
        })
        .collect();
    if forged == real || forged.is_empty() {
        // Too short or too regular to forge by shape: any unknown id will do.
        return format!("doctor-{:032x}", rng.gen::<u128>());
    }
    forged
}
