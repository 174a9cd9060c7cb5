//! SSE through the path: how soon the first event comes, whether keep-alive
//! comments arrive as sent (a buffering proxy holds them and lets them out in
//! a burst, or never), and whether an idle stream survives `--hold` (the
//! classic 60 s proxy timeout cuts it). The streams held are a legacy SSE
//! stream and a Streamable session's standalone GET stream, whichever the
//! endpoint has; after the hold each must still work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;

use super::client::{Client, Next, Stream};
use super::progress::Progress;
use super::sse::Item;
use super::{legacy, streamable, Check, Options, Verdict};

/// A first event later than this is a warning.
pub const SLOW_FIRST_EVENT: Duration = Duration::from_secs(1);
/// Keep-alives closer than this after a longer wait were held and released together.
pub const BURST: Duration = Duration::from_millis(100);

/// The most resumptions of one held stream (SSE polling): a server that
/// closes at once every time costs this many requests, not a loop.
pub const MAX_RESUMES: u32 = 100;

/// How one idle stream fared.
#[derive(Debug, Clone)]
pub struct Held {
    pub kind: &'static str,
    pub outcome: Outcome,
    pub keepalives: Keepalives,
}

/// The keep-alive comments of a held stream, in constant space: a server
/// flooding `:` lines must not grow a list for as long as the hold lasts.
#[derive(Debug, Clone, Default)]
pub struct Keepalives {
    pub count: u64,
    /// When the first and the last came, from the start of the hold.
    pub first: Option<Duration>,
    pub last: Option<Duration>,
    /// The shortest time between two in a row.
    pub min_gap: Option<Duration>,
}

impl Keepalives {
    pub fn record(&mut self, at: Duration) {
        if let Some(last) = self.last {
            let gap = at.saturating_sub(last);
            self.min_gap = Some(self.min_gap.map_or(gap, |g| g.min(gap)));
        }
        self.first.get_or_insert(at);
        self.last = Some(at);
        self.count += 1;
    }

    /// Two came closer than [`BURST`]: held and released together.
    pub fn burst(&self) -> bool {
        self.min_gap.is_some_and(|g| g < BURST)
    }
}

impl FromIterator<Duration> for Keepalives {
    fn from_iter<I: IntoIterator<Item = Duration>>(times: I) -> Keepalives {
        let mut k = Keepalives::default();
        times.into_iter().for_each(|t| k.record(t));
        k
    }
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// Open for the whole hold, and working after it.
    Survived,
    /// Open for the whole hold; whether it works after could not be tried (why).
    Open(String),
    /// Closed by the other end after setting an event id or a `retry`, and
    /// resumed with `GET` and `Last-Event-ID` this many times (SSE polling,
    /// SEP-1699); working after the hold.
    Resumed(u32),
    /// Closed during the hold, after this long.
    Cut(Duration, String),
    /// Open for the hold, but broken after it.
    Broken(String),
    /// No such stream here (e.g. 405 for the GET stream).
    Unavailable(String),
}

pub async fn run(
    client: &Arc<Client>,
    o: &Options,
    s: &streamable::Probe,
    l: &legacy::Probe,
    progress: &Arc<Progress>,
) -> Vec<Check> {
    let first = first_event(s, l);
    if o.hold.is_zero() {
        return vec![
            first,
            Check::new(
                "sse.keepalive",
                Verdict::NotApplicable,
                "no window (--hold 0)",
            ),
            Check::new("sse.hold", Verdict::NotApplicable, "skipped (--hold 0)"),
        ];
    }
    let something = l.sse_url().is_some() || matches!(s, streamable::Probe::Stateful(_));
    let _step = something.then(|| progress.begin(format!("holding idle streams for {:?}", o.hold)));
    let (a, b) = tokio::join!(
        hold_legacy(client, o.hold, l, progress),
        hold_streamable(client, o, s, progress)
    );
    let held: Vec<Held> = [a, b].into_iter().flatten().collect();
    vec![
        first,
        keepalive_verdict(o.hold, &held),
        hold_verdict(o.hold, &held),
    ]
}

/// Time to the first event: the legacy `endpoint` event, the first item of
/// an SSE answer to `initialize`.
fn first_event(s: &streamable::Probe, l: &legacy::Probe) -> Check {
    const ID: &str = "sse.first_event";
    if let legacy::Probe::Silent { saw, .. } = l {
        return Check::new(ID, Verdict::Fail, format!("legacy stream: {saw}"));
    }
    let mut seen = Vec::new();
    if let legacy::Probe::Found { first_event, .. } = l {
        seen.push(("legacy endpoint event", *first_event));
    }
    if let Some(t) = s.opened().and_then(|o| o.first_event) {
        seen.push(("SSE answer to initialize", t));
    }
    first_event_verdict(&seen)
}

pub fn first_event_verdict(seen: &[(&str, Duration)]) -> Check {
    const ID: &str = "sse.first_event";
    if seen.is_empty() {
        return Check::new(
            ID,
            Verdict::NotApplicable,
            "no SSE answer seen (JSON answers only)",
        );
    }
    let text: Vec<String> = seen
        .iter()
        .map(|(what, t)| format!("{what} after {} ms", t.as_millis()))
        .collect();
    let data: serde_json::Map<String, serde_json::Value> = seen
        .iter()
        .map(|(what, t)| (what.to_string(), json!(t.as_millis())))
        .collect();
    let slow = seen.iter().any(|(_, t)| *t > SLOW_FIRST_EVENT);
    let verdict = if slow { Verdict::Warn } else { Verdict::Pass };
    Check::new(ID, verdict, text.join(", ")).with(serde_json::Value::Object(data))
}

async fn hold_legacy(
    client: &Client,
    hold: Duration,
    l: &legacy::Probe,
    progress: &Progress,
) -> Option<Held> {
    let sse_url = l.sse_url()?;
    let kind = "legacy SSE stream";
    let (mut session, handshake) = match legacy::open(client, sse_url).await {
        Ok(opened) => opened,
        Err(f) => {
            return Some(Held {
                kind,
                outcome: Outcome::Unavailable(f.what),
                keepalives: Keepalives::default(),
            })
        }
    };
    let start = Instant::now();
    let mut keepalives = Keepalives::default();
    let cut = idle(&mut session.stream, start, hold, progress, &mut keepalives).await;
    let outcome = match (cut, handshake) {
        (Some((after, why)), _) => Outcome::Cut(after, why),
        // Its session did not get through (not sticky): the stream itself is what is judged.
        (None, Err(f)) => Outcome::Open(format!(
            "its session failed before the hold ({}), so not tried after",
            f.what
        )),
        (None, Ok(())) => {
            match legacy::exchange(
                client,
                &mut session,
                json!({"jsonrpc": "2.0", "id": 99, "method": "ping"}),
            )
            .await
            {
                Ok(()) => Outcome::Survived,
                Err(f) => Outcome::Broken(f.what),
            }
        }
    };
    Some(Held {
        kind,
        outcome,
        keepalives,
    })
}

async fn hold_streamable(
    client: &Client,
    o: &Options,
    s: &streamable::Probe,
    progress: &Progress,
) -> Option<Held> {
    let streamable::Probe::Stateful(_) = s else {
        return None;
    };
    let kind = "Streamable GET stream";
    let unavailable = |what: String| {
        Some(Held {
            kind,
            outcome: Outcome::Unavailable(what),
            keepalives: Keepalives::default(),
        })
    };
    let opened = match streamable::open(client, &o.url).await {
        Ok(opened) => opened,
        Err(f) => return unavailable(format!("a session: {}", f.what)),
    };
    let session = opened.session.clone().unwrap_or_default();
    // Left open on any way out: the run's last step deletes every session issued.
    let mut stream = match get_stream(client, &o.url, &session, &opened.version, None).await {
        Ok(stream) => stream,
        Err(what) => return unavailable(what),
    };
    let start = Instant::now();
    let mut keepalives = Keepalives::default();
    let mut resumes = 0;
    let cut = loop {
        let Some((after, why)) = idle(&mut stream, start, o.hold, progress, &mut keepalives).await
        else {
            break None;
        };
        if !stream.resumable() || resumes >= MAX_RESUMES {
            break Some((after, why));
        }
        // SSE polling: wait what the stream asked (bounded), resume where it left off.
        let wait = stream.retry().unwrap_or_default().min(client.timeout);
        tokio::time::sleep(wait).await;
        let last = stream.last_id().map(str::to_string);
        match get_stream(client, &o.url, &session, &opened.version, last.as_deref()).await {
            Ok(next) => {
                stream = next;
                resumes += 1;
            }
            Err(what) => {
                break Some((
                    after,
                    format!("{why}, after setting an event id or retry; resuming: {what}"),
                ))
            }
        }
    };
    let outcome = match cut {
        Some((after, why)) => Outcome::Cut(after, why),
        None => match streamable::ping(client, &o.url, Some(&session), &opened.version, 99).await {
            Ok(()) if resumes > 0 => Outcome::Resumed(resumes),
            Ok(()) => Outcome::Survived,
            Err(f) => Outcome::Broken(format!("the session after the hold: {}", f.what)),
        },
    };
    drop(stream);
    streamable::delete(client, &o.url, &session, &opened.version).await;
    Some(Held {
        kind,
        outcome,
        keepalives,
    })
}

/// A session's standalone GET stream, resuming after `last_id` if given.
async fn get_stream(
    client: &Client,
    url: &url::Url,
    session: &str,
    version: &str,
    last_id: Option<&str>,
) -> Result<Stream, String> {
    let mut headers = vec![
        ("accept", "text/event-stream"),
        ("mcp-session-id", session),
        ("mcp-protocol-version", version),
    ];
    if let Some(id) = last_id {
        headers.push(("last-event-id", id));
    }
    let answer = client
        .send(Method::GET, url, &headers, None)
        .await
        .map_err(|e| format!("GET: {e}"))?;
    if !answer.status.is_success() || !answer.is_sse() {
        return Err(format!("GET answered {}", answer.status.as_u16()));
    }
    Ok(answer.into_stream())
}

/// Reads `stream` until `hold` after `start` without sending anything,
/// counting keep-alive comments: when it was cut, if it was.
async fn idle(
    stream: &mut Stream,
    start: Instant,
    hold: Duration,
    progress: &Progress,
    keepalives: &mut Keepalives,
) -> Option<(Duration, String)> {
    let end = start + hold;
    loop {
        let now = Instant::now();
        if now >= end {
            return None;
        }
        progress.note(&format!(
            "holding idle streams: {} s of {} s",
            now.duration_since(start).as_secs(),
            hold.as_secs()
        ));
        let tick = (now + Duration::from_secs(1)).min(end);
        match stream.next(tick).await {
            Next::Idle => {}
            Next::Item(at, Item::Comment(_)) => {
                keepalives.record(at.saturating_duration_since(start))
            }
            Next::Item(_, Item::Event(_)) => {}
            Next::Closed(why) => return Some((start.elapsed(), why)),
        }
    }
}

pub fn hold_verdict(hold: Duration, held: &[Held]) -> Check {
    const ID: &str = "sse.hold";
    let secs = hold.as_secs_f64();
    let mut lines = Vec::new();
    let mut verdict = Verdict::NotApplicable;
    let mut data = serde_json::Map::new();
    for h in held {
        let (v, line, state) = match &h.outcome {
            Outcome::Survived => (
                Verdict::Pass,
                format!("{} open for {secs:.0} s and working after", h.kind),
                "survived".to_string(),
            ),
            Outcome::Open(why) => (
                Verdict::Pass,
                format!("{} open for {secs:.0} s; {why}", h.kind),
                "survived".to_string(),
            ),
            Outcome::Resumed(n) => (
                Verdict::Warn,
                format!(
                    "{} closed by the server and resumed {n} times with Last-Event-ID over {secs:.0} s, \
                     working after (SSE polling: 2025-11-25 clients resume, older ones lose the stream)",
                    h.kind
                ),
                format!("resumed {n} times"),
            ),
            Outcome::Cut(after, why) => (
                Verdict::Fail,
                format!(
                    "{} cut after {:.1} s idle of {secs:.0} s ({why}): a proxy idle timeout?",
                    h.kind,
                    after.as_secs_f64()
                ),
                format!("cut after {} ms", after.as_millis()),
            ),
            Outcome::Broken(why) => (
                Verdict::Fail,
                format!("{} open for {secs:.0} s, then {why}", h.kind),
                "broken".into(),
            ),
            Outcome::Unavailable(why) => (
                Verdict::NotApplicable,
                format!("no {} ({why})", h.kind),
                "unavailable".into(),
            ),
        };
        verdict = worse(verdict, v);
        lines.push(line);
        data.insert(h.kind.to_string(), json!(state));
    }
    if lines.is_empty() {
        return Check::new(ID, Verdict::NotApplicable, "no stream to hold");
    }
    data.insert("hold_ms".into(), json!(hold.as_millis()));
    Check::new(ID, verdict, lines.join("; ")).with(serde_json::Value::Object(data))
}

pub fn keepalive_verdict(hold: Duration, held: &[Held]) -> Check {
    const ID: &str = "sse.keepalive";
    let mut lines = Vec::new();
    let mut verdict = Verdict::NotApplicable;
    let mut data = serde_json::Map::new();
    for h in held {
        let k = &h.keepalives;
        let Some(first) = k.first else { continue };
        let burst = k.burst();
        let v = if burst { Verdict::Warn } else { Verdict::Pass };
        verdict = worse(verdict, v);
        let mut line = format!(
            "{}: {} in {:.0} s, first after {:.1} s",
            h.kind,
            k.count,
            hold.as_secs_f64(),
            first.as_secs_f64()
        );
        if burst {
            line.push_str(", some together (held and released by a buffer?)");
        }
        lines.push(line);
        data.insert(
            h.kind.to_string(),
            json!({"count": k.count, "first_ms": first.as_millis(), "burst": burst}),
        );
    }
    if lines.is_empty() {
        return Check::new(
            ID,
            Verdict::NotApplicable,
            format!(
                "no keep-alive comment in {:.0} s (the server sends none, or the path holds them)",
                hold.as_secs_f64()
            ),
        );
    }
    Check::new(ID, verdict, lines.join("; ")).with(serde_json::Value::Object(data))
}

/// The worse of two verdicts: fail > warn > pass > n/a.
pub fn worse(a: Verdict, b: Verdict) -> Verdict {
    let rank = |v: Verdict| match v {
        Verdict::NotApplicable => 0,
        Verdict::Pass => 1,
        Verdict::Warn => 2,
        Verdict::Fail => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}
