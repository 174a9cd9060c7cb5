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

/// How one idle stream fared.
#[derive(Debug, Clone)]
pub struct Held {
    pub kind: &'static str,
    pub outcome: Outcome,
    /// When each keep-alive comment came, from the start of the hold.
    pub keepalives: Vec<Duration>,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// Open for the whole hold, and working after it.
    Survived,
    /// Open for the whole hold; whether it works after could not be tried (why).
    Open(String),
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
                keepalives: vec![],
            })
        }
    };
    let (cut, keepalives) = idle(&mut session.stream, hold, progress).await;
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
            keepalives: vec![],
        })
    };
    let opened = match streamable::open(client, &o.url).await {
        Ok(opened) => opened,
        Err(f) => return unavailable(format!("a session: {}", f.what)),
    };
    let session = opened.session.clone().unwrap_or_default();
    let headers = [
        ("accept", "text/event-stream"),
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", opened.version.as_str()),
    ];
    let answer = match client.send(Method::GET, &o.url, &headers, None).await {
        Ok(a) => a,
        Err(e) => return unavailable(format!("GET: {e}")),
    };
    if !answer.status.is_success() || !answer.is_sse() {
        let status = answer.status.as_u16();
        streamable::delete(client, &o.url, &session, &opened.version).await;
        return unavailable(format!("GET answered {status}"));
    }
    let mut stream = answer.into_stream();
    let (cut, keepalives) = idle(&mut stream, o.hold, progress).await;
    let outcome = match cut {
        Some((after, why)) => Outcome::Cut(after, why),
        None => match streamable::ping(client, &o.url, Some(&session), &opened.version, 99).await {
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

/// Reads `stream` for `hold` without sending anything: when it was cut (if
/// it was) and when keep-alive comments came.
async fn idle(
    stream: &mut Stream,
    hold: Duration,
    progress: &Progress,
) -> (Option<(Duration, String)>, Vec<Duration>) {
    let start = Instant::now();
    let end = start + hold;
    let mut keepalives = Vec::new();
    loop {
        let now = Instant::now();
        if now >= end {
            return (None, keepalives);
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
                keepalives.push(at.saturating_duration_since(start))
            }
            Next::Item(_, Item::Event(_)) => {}
            Next::Closed(why) => return (Some((start.elapsed(), why)), keepalives),
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
    for h in held.iter().filter(|h| !h.keepalives.is_empty()) {
        let first = h.keepalives[0];
        let gaps: Vec<Duration> = h
            .keepalives
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .collect();
        let burst = gaps.iter().any(|g| *g < BURST);
        let v = if burst { Verdict::Warn } else { Verdict::Pass };
        verdict = worse(verdict, v);
        let mut line = format!(
            "{}: {} in {:.0} s, first after {:.1} s",
            h.kind,
            h.keepalives.len(),
            hold.as_secs_f64(),
            first.as_secs_f64()
        );
        if burst {
            line.push_str(", some together (held and released by a buffer?)");
        }
        lines.push(line);
        data.insert(
            h.kind.to_string(),
            json!({"count": h.keepalives.len(), "first_ms": first.as_millis(), "burst": burst}),
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
