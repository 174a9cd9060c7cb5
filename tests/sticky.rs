//! Sessions stay on their owner, for both transports, while new ones spread.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use http::Method;
use mcp_tether::affinity::token::PREFIX;
use serde_json::json;
use support::*;

#[tokio::test]
async fn streamable_sessions_stick_and_spread_over_three_replicas() {
    let replicas = replicas(3).await;
    let t = tether(&replicas).await;
    let mut owners = BTreeMap::new();
    let mut clients = Vec::new();
    for _ in 0..9 {
        clients.push(
            StreamableClient::connect(&mcp_url(&t))
                .await
                .expect("initialize"),
        );
    }
    // Interleave calls across sessions so stickiness is not an accident of order.
    for round in 0..4 {
        for (i, c) in clients.iter().enumerate() {
            let who = c.whoami().await.expect("whoami");
            let first = owners.entry(i).or_insert_with(|| who.clone());
            assert_eq!(*first, who, "session {i} moved in round {round}");
            // The client sees its token, never the server's id and never a new token.
            assert_eq!(c.last_session_header().as_deref(), c.session_id());
        }
    }
    let spread: BTreeSet<_> = owners.values().collect();
    assert_eq!(spread.len(), 3, "sessions did not spread: {owners:?}");
    for c in &clients {
        assert!(c.session_id().unwrap().starts_with(PREFIX));
    }
    // Every replica saw only the upstream ids it issued, never a token.
    for r in &replicas {
        for req in r.requests() {
            if let Some(id) = req.headers.get("mcp-session-id") {
                assert!(
                    !id.to_str().unwrap().starts_with(PREFIX),
                    "token leaked upstream"
                );
            }
        }
    }
    let m = metrics(&t).await;
    let created: f64 = replicas
        .iter()
        .map(|r| {
            let id = r.url().trim_start_matches("http://").to_string();
            sample(
                &m,
                &format!(
                    "tether_sessions_created_total{{backend=\"{id}\",transport=\"streamable\"}}"
                ),
            )
        })
        .sum();
    assert_eq!(created, 9.0, "{m}");
}

#[tokio::test]
async fn legacy_sessions_stick_and_spread_with_both_param_styles() {
    for (param, path) in [("sessionId", "/messages"), ("session_id", "/messages/")] {
        let mut replicas = Vec::new();
        for i in 1..=3 {
            replicas.push(
                Replica::builder(&format!("replica-{i}"))
                    .legacy_param(param)
                    .legacy_messages_path(path)
                    .spawn()
                    .await
                    .unwrap(),
            );
        }
        let t = tether(&replicas).await;
        let mut clients = Vec::new();
        for _ in 0..6 {
            clients.push(LegacyClient::connect(&sse_url(&t)).await.expect("sse"));
        }
        let mut owners = BTreeSet::new();
        for c in clients.iter_mut() {
            let endpoint = c.endpoint().to_string();
            assert!(
                endpoint.starts_with(&format!("{path}?{param}={PREFIX}")),
                "{endpoint}"
            );
            let first = c.whoami().await.expect("whoami");
            for _ in 0..3 {
                assert_eq!(c.whoami().await.expect("whoami"), first);
            }
            owners.insert(first);
        }
        assert!(owners.len() >= 2, "{param}: all on {owners:?}");
        let m = metrics(&t).await;
        assert!(m.contains("transport=\"legacy\""), "{m}");
        assert!(sample(&m, "tether_sse_first_events_total{result=\"rewritten\"}") >= 6.0);
    }
}

#[tokio::test]
async fn absolute_endpoint_naming_the_backend_becomes_relative() {
    let r = Replica::builder("abs")
        .absolute_endpoint(true)
        .spawn()
        .await
        .unwrap();
    let t = tether(std::slice::from_ref(&r)).await;
    let mut c = LegacyClient::connect(&sse_url(&t)).await.expect("sse");
    assert!(
        c.endpoint().starts_with("/messages?sessionId=t2."),
        "{}",
        c.endpoint()
    );
    assert!(c.post_url().starts_with(&base(&t)));
    assert_eq!(c.whoami().await.unwrap(), "abs");
}

#[tokio::test]
async fn endpoint_event_is_rewritten_however_it_is_chunked() {
    for eol in ["\n", "\r\n", "\r"] {
        for chunk in [1, 2, 3, 5, 7, 11, 64] {
            let r = Replica::builder("chunky")
                .endpoint_chunk_size(Some(chunk))
                .line_ending(eol)
                .spawn()
                .await
                .unwrap();
            let t = tether(std::slice::from_ref(&r)).await;
            let mut c = within("legacy connect", LegacyClient::connect(&sse_url(&t)))
                .await
                .unwrap_or_else(|e| panic!("eol {eol:?} chunk {chunk}: {e}"));
            assert!(
                c.endpoint().contains("sessionId=t2."),
                "eol {eol:?} chunk {chunk}"
            );
            assert_eq!(c.whoami().await.unwrap(), "chunky");
        }
    }
}

#[tokio::test]
async fn stateless_traffic_is_balanced_per_request() {
    let mut replicas = Vec::new();
    for i in 1..=3 {
        replicas.push(
            Replica::builder(&format!("s{i}"))
                .stateless()
                .spawn()
                .await
                .unwrap(),
        );
    }
    let t = tether(&replicas).await;
    let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    assert_eq!(c.session_id(), None);
    let mut seen = BTreeSet::new();
    for _ in 0..9 {
        seen.insert(c.whoami().await.unwrap());
    }
    assert_eq!(seen.len(), 3, "stateless calls not spread: {seen:?}");
}

#[tokio::test]
async fn batches_and_sse_answers_pass_through() {
    let r = Replica::builder("b")
        .sse_responses(true)
        .spawn()
        .await
        .unwrap();
    let t = tether(std::slice::from_ref(&r)).await;
    let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    assert_eq!(c.whoami().await.unwrap(), "b");
    let token = c.session_id().unwrap().to_string();
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"ping"},
        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}
    ]);
    let r2 = Replica::builder("json").spawn().await.unwrap();
    let t2 = tether(std::slice::from_ref(&r2)).await;
    let c2 = StreamableClient::connect(&mcp_url(&t2)).await.unwrap();
    let resp = send_raw(
        Method::POST,
        &mcp_url(&t2),
        &[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-session-id", c2.session_id().unwrap()),
        ],
        batch.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body.as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(resp.headers["mcp-session-id"], c2.session_id().unwrap());
    assert!(token.starts_with(PREFIX));
}

#[tokio::test]
async fn delete_ends_the_session_on_its_owner() {
    let replicas = replicas(2).await;
    let t = tether(&replicas).await;
    let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    let owner = sticky_owner(&c, 2).await;
    let r = replicas.iter().find(|r| r.name() == owner).unwrap();
    assert_eq!(r.live_sessions(), 1);
    assert_eq!(c.delete().await.unwrap(), 200);
    assert_eq!(r.live_sessions(), 0);
    let err = c.whoami().await.unwrap_err();
    assert_eq!(err.status, Some(404), "{err}");
    let m = metrics(&t).await;
    assert!(m.contains("tether_sessions_deleted_total{backend="), "{m}");
}

#[tokio::test]
async fn standalone_get_stream_reaches_the_owner() {
    let replicas = replicas(3).await;
    let t = tether(&replicas).await;
    let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    let owner = sticky_owner(&c, 1).await;
    let mut stream = c.get_stream().await.unwrap();
    assert_eq!(stream.status(), 200);
    let first = within("priming event", stream.next_event()).await.unwrap();
    assert!(first.is_some());
    let r = replicas.iter().find(|r| r.name() == owner).unwrap();
    let gets = r.requests().iter().filter(|q| q.method == "GET").count();
    assert_eq!(gets, 1);
    let m = metrics(&t).await;
    let id = r.url().trim_start_matches("http://").to_string();
    assert_eq!(
        sample(&m, &format!("tether_active_streams{{backend=\"{id}\"}}")),
        1.0,
        "{m}"
    );
    // The stream was not rewritten: a Streamable GET carries its session.
    assert_eq!(
        sample(&m, "tether_sse_first_events_total{result=\"rewritten\"}"),
        0.0
    );
}
