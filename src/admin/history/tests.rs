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
        Totals::default().advance(&Reading::default(), &Reading::read(&registry)),
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
    let t = Totals::default().advance(&Reading::default(), &Reading::parse(text));
    assert_eq!(t.requests, 0);
    assert_eq!(t.sessions_created, 7);
    assert_eq!(t.streams, 0);
}

/// A reading of `requests` answered 200 by one backend and `streams` open.
fn reading(requests: u64, streams: u64) -> Reading {
    Reading::parse(&format!(
        "tether_requests_total{{backend=\"a:1\",status=\"200\"}} {requests}\n\
         tether_active_streams{{backend=\"a:1\"}} {streams}\n"
    ))
}

#[test]
fn the_ring_keeps_the_last_window_and_rates_are_per_second() {
    let history = History::default();
    let start = Instant::now();
    let total = history.capacity + 10;
    for i in 0..total {
        let at = start + INTERVAL * i as u32;
        history.record(at, reading(10 * i as u64, i as u64 % 3));
    }
    assert_eq!(history.len(), history.capacity);
    let now = start + INTERVAL * (total - 1) as u32;
    let current = history.current(&reading(10 * (total - 1) as u64 + 5, 0));
    assert_eq!(current.requests, 10 * (total - 1) as u64 + 5);
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
    assert_eq!(
        points[0]["streams"], 2,
        "open at the later sample, not a rate"
    );
}

#[test]
fn a_backend_forgotten_between_samples_takes_nothing_from_the_totals() {
    let m = Metrics::default();
    let mut registry = Registry::default();
    m.register(&mut registry);
    let history = History::default();
    let start = Instant::now();
    for _ in 0..100 {
        count_request(&m, "gone:1", 200);
    }
    for _ in 0..50 {
        count_request(&m, "kept:1", 200);
    }
    let orphaned = |id: &str| BackendLabel {
        backend: backend(id),
    };
    m.sessions_orphaned
        .get_or_create(&orphaned("gone:1"))
        .inc_by(7);
    m.sessions_created
        .get_or_create(&BackendTransport {
            backend: backend("gone:1"),
            transport: "streamable",
        })
        .inc_by(9);
    history.record(start, Reading::read(&registry));
    // Between two samples: the other backend is busy, then one is removed.
    for _ in 0..20 {
        count_request(&m, "kept:1", 200);
    }
    m.forget_backend(&"gone:1".into(), &[200]);
    let now = Reading::read(&registry);
    assert!(
        !format!("{now:?}").contains("gone:1"),
        "the registry forgot it: {now:?}"
    );
    let current = history.current(&now);
    assert_eq!(current.requests, 170, "never down: {current:?}");
    assert_eq!(current.sessions_orphaned, 7);
    assert_eq!(current.sessions_created, 9);
    history.record(start + INTERVAL, now);
    let points = history.points(start + INTERVAL, current);
    // 20 requests in 5 s: the removed backend's 100 do not cancel them.
    assert_eq!(points[0]["requests"], 4.0, "{points:?}");
    assert_eq!(points[0]["sessions_orphaned"], 0.0);
    // The backend comes back under the same labels, counting from zero.
    count_request(&m, "gone:1", 200);
    let back = history.current(&Reading::read(&registry));
    assert_eq!(back.requests, 171);
}

#[test]
fn a_series_that_went_down_counts_from_zero_again() {
    let history = History::default();
    let start = Instant::now();
    history.record(start, reading(100, 0));
    // The same labels, removed and created again between samples: 3 new.
    history.record(start + INTERVAL, reading(3, 0));
    let t = history.current(&reading(3, 0));
    assert_eq!(t.requests, 103);
    let points = history.points(start + INTERVAL, t);
    assert_eq!(points[0]["requests"], 0.6);
}

#[tokio::test(start_paused = true)]
async fn the_sampler_samples_every_interval() {
    let m = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    m.register(&mut registry);
    let shared = Arc::new((History::default(), registry));
    // As `Admin::new` does.
    shared.0.record(Instant::now(), Reading::read(&shared.1));
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
    let current = shared.0.current(&Reading::read(&shared.1));
    let points = shared.0.points(Instant::now(), current);
    assert_eq!(points[0]["requests"], 2.0, "{points:?}");
    tokio::time::sleep(INTERVAL * 400).await;
    assert_eq!(shared.0.len(), shared.0.capacity, "the ring stays bounded");
    stop.send(true).unwrap();
    task.await.unwrap();
}
