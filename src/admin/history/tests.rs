use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::metrics::{self, BackendLabel, BackendStatus, BackendTransport, Metrics, Name};

fn backend(id: &str) -> Name {
    Name(id.into())
}

fn count_request(m: &Metrics, id: &str, status: u16) {
    m.requests
        .get_or_create(&BackendStatus {
            backend: backend(id),
            status,
        })
        .inc();
}

#[test]
fn totals_sum_the_registry_as_a_scrape_shows_it() {
    let m = Metrics::default();
    let mut registry = Registry::default();
    m.register(&mut registry);
    for (id, status, n) in [
        ("a:1", 200, 3),
        ("b:1", 200, 2),
        ("b:1", 502, 1),
        ("none", 503, 2),
    ] {
        for _ in 0..n {
            count_request(&m, id, status);
        }
    }
    for transport in ["streamable", "legacy"] {
        m.sessions_created
            .get_or_create(&BackendTransport {
                backend: backend("a:1"),
                transport,
            })
            .inc();
    }
    m.sessions_orphaned
        .get_or_create(&BackendLabel {
            backend: backend("gone:1"),
        })
        .inc();
    m.invalid_tokens
        .get_or_create(&metrics::Reason {
            reason: "malformed",
        })
        .inc_by(4);
    m.active_streams
        .get_or_create(&BackendLabel {
            backend: backend("a:1"),
        })
        .set(2);
    assert_eq!(
        Totals::read(&registry),
        Totals {
            requests: 8,
            errors: 3,
            sessions_created: 2,
            sessions_orphaned: 1,
            invalid_tokens: 4,
            streams: 2,
        }
    );
}

#[test]
fn odd_lines_are_skipped_not_trusted() {
    let text = "# HELP x\ntether_requests_total{status=\"200\" 5\ntether_requests_total{backend=\"a\",status=\"500\"} nope\n\
                tether_requests_total\ntether_sessions_created_total 7\ntether_active_streams -3\n# EOF\n";
    let t = Totals::parse(text);
    assert_eq!(t.requests, 0);
    assert_eq!(t.sessions_created, 7);
    assert_eq!(t.streams, 0);
}

#[test]
fn the_ring_keeps_the_last_window_and_rates_are_per_second() {
    let history = History::default();
    let start = Instant::now();
    let total = history.capacity + 10;
    for i in 0..total {
        let totals = Totals {
            requests: 10 * i as u64,
            streams: i as u64 % 3,
            ..Totals::default()
        };
        history.record(start + INTERVAL * i as u32, totals);
    }
    assert_eq!(history.len(), history.capacity);
    let now = start + INTERVAL * (total - 1) as u32;
    let current = Totals {
        requests: 10 * (total - 1) as u64 + 5,
        ..Totals::default()
    };
    let points = history.points(now, current);
    // capacity - 1 pairs, and the live point.
    assert_eq!(points.len(), history.capacity);
    // 10 requests per 5 s sample.
    assert_eq!(points[0]["requests"], 2.0);
    assert_eq!(points[0]["seconds_ago"], (WINDOW - INTERVAL).as_secs());
    // The live point: 5 requests since the last sample, taken over at least a second.
    let live = points.last().unwrap();
    assert_eq!(live["requests"], 5.0);
    assert_eq!(live["seconds_ago"], 0);
    // A counter that went down (never, for a counter; a reset) is no negative rate.
    assert_eq!(
        history.points(now, Totals::default()).last().unwrap()["requests"],
        0.0
    );
}

#[tokio::test(start_paused = true)]
async fn the_sampler_samples_every_interval() {
    let m = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    m.register(&mut registry);
    let shared = Arc::new((History::default(), registry));
    // As `Admin::new` does.
    shared.0.record(Instant::now(), Totals::read(&shared.1));
    let (stop, rx) = watch::channel(false);
    let task = {
        let shared = shared.clone();
        tokio::spawn(async move { sample(&shared.0, &shared.1, rx).await })
    };
    tokio::task::yield_now().await;
    assert_eq!(shared.0.len(), 1, "no second sample at once");
    for _ in 0..10 {
        count_request(&m, "a:1", 200);
    }
    tokio::time::sleep(INTERVAL).await;
    tokio::task::yield_now().await;
    assert_eq!(shared.0.len(), 2);
    let points = shared.0.points(Instant::now(), Totals::read(&shared.1));
    assert_eq!(points[0]["requests"], 2.0, "{points:?}");
    tokio::time::sleep(INTERVAL * 400).await;
    assert_eq!(shared.0.len(), shared.0.capacity, "the ring stays bounded");
    stop.send(true).unwrap();
    task.await.unwrap();
}
