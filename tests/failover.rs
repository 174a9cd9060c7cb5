//! When the owner is gone the session is gone: the spec's 404, never a silent
//! hand-off. Tokens that do not open get the same 404 without backend contact.

mod support;

use http::Method;
use mcp_tether::affinity::{Sealer, SessionKey, TokenKind};
use serde_json::{json, Value};
use support::*;

const SESSION_NOT_FOUND: i64 = -32001;

fn call_body(id: Value) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"whoami","arguments":{}}})
        .to_string()
}

async fn post(url: &str, session: &str, id: Value) -> mcp_tether_testkit::RawResponse {
    send_raw(
        Method::POST,
        url,
        &[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-session-id", session),
            ("mcp-protocol-version", "2025-06-18"),
        ],
        call_body(id),
    )
    .await
    .expect("response")
}

fn assert_session_not_found(resp: &mcp_tether_testkit::RawResponse, id: Value) {
    assert_eq!(resp.status, 404, "{}", resp.text());
    assert_eq!(resp.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&resp.body).expect("json body");
    assert_eq!(
        body,
        json!({"jsonrpc":"2.0","error":{"code":SESSION_NOT_FOUND,"message":"Session not found"},"id":id})
    );
}

#[tokio::test]
async fn killed_owner_means_404_for_its_sessions_only() {
    let replicas = replicas(3).await;
    let t = tether(&replicas).await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
        let owner = sticky_owner(&c, 1).await;
        clients.push((c, owner));
    }
    let victim = &replicas[0];
    victim.kill();
    let mut orphaned = 0;
    for (c, owner) in &clients {
        if owner == victim.name() {
            let resp = post(&mcp_url(&t), c.session_id().unwrap(), json!(41)).await;
            assert_session_not_found(&resp, json!(41));
            orphaned += 1;
        } else {
            assert_eq!(&sticky_owner(c, 3).await, owner, "survivor moved");
        }
    }
    assert_eq!(orphaned, 2, "expected 2 of 6 sessions on the victim");
    // Nothing of the orphaned sessions reached a survivor.
    for r in &replicas[1..] {
        let not_found = r
            .requests()
            .iter()
            .filter(|q| q.body.windows(2).any(|w| w == b"41"))
            .count();
        assert_eq!(
            not_found,
            0,
            "an orphaned request was handed to {}",
            r.name()
        );
    }
    let m = metrics(&t).await;
    let victim_id = victim.url().trim_start_matches("http://").to_string();
    assert_eq!(
        sample(
            &m,
            &format!("tether_sessions_orphaned_total{{backend=\"{victim_id}\"}}")
        ),
        2.0,
        "{m}"
    );
    // New sessions avoid the dead replica: its refusal is retried elsewhere.
    for _ in 0..6 {
        let c = StreamableClient::connect(&mcp_url(&t))
            .await
            .expect("new session");
        assert_ne!(c.whoami().await.unwrap(), victim.name());
    }
    // The two orphaned calls were refused; the new sessions that picked the
    // dead replica first were refused too, and retried elsewhere.
    let refused =
        format!("tether_upstream_errors_total{{backend=\"{victim_id}\",kind=\"refused\"}}");
    assert!(sample(&metrics(&t).await, &refused) >= 2.0);
}

#[tokio::test]
async fn owner_removed_from_pool_means_404() {
    // Tether B knows only replica-2: a session of replica-1 sealed with the
    // shared key has an owner B no longer has.
    let replicas = replicas(2).await;
    let key = SessionKey::generate();
    let a = tether_with(&replicas, &key, "").await;
    let b = tether_with(&replicas[1..], &key, "").await;
    loop {
        let c = StreamableClient::connect(&mcp_url(&a)).await.unwrap();
        if sticky_owner(&c, 1).await == "replica-1" {
            let resp = post(&mcp_url(&b), c.session_id().unwrap(), json!("x")).await;
            assert_session_not_found(&resp, json!("x"));
            break;
        }
    }
    assert_eq!(replicas[1].request_count(), 0, "the request went elsewhere");
}

#[tokio::test]
async fn forged_and_foreign_tokens_get_404_without_backend_contact() {
    let replicas = replicas(2).await;
    let t = tether(&replicas).await;
    let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
    let real = c.session_id().unwrap().to_string();
    let before: usize = replicas.iter().map(|r| r.request_count()).sum();

    let mut flipped = real.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let foreign = Sealer::new(&SessionKey::generate())
        .seal(TokenKind::Streamable, "127.0.0.1:1", "x", None)
        .unwrap();
    let cases = [
        String::from_utf8(flipped).unwrap(),
        real[..real.len() - 5].to_string(),
        foreign,
        "0123456789abcdef0123456789abcdef".to_string(),
        "t1.".to_string(),
    ];
    for (i, token) in cases.iter().enumerate() {
        let resp = post(&mcp_url(&t), token, json!(i)).await;
        assert_session_not_found(&resp, json!(i));
    }
    // A legacy POST with a bad token, and a Streamable token in the legacy slot.
    for query in ["sessionId=t1.AAAA", &format!("sessionId={real}")] {
        let resp = send_raw(
            Method::POST,
            &format!("{}/messages?{query}", base(&t)),
            &[],
            call_body(json!(9)),
        )
        .await
        .unwrap();
        assert_session_not_found(&resp, json!(9));
    }
    let after: usize = replicas.iter().map(|r| r.request_count()).sum();
    assert_eq!(before, after, "a backend was contacted");
    let m = metrics(&t).await;
    let invalid: f64 = ["format", "forged", "unknown_key", "wrong_transport"]
        .iter()
        .map(|r| {
            sample(
                &m,
                &format!("tether_invalid_tokens_total{{reason=\"{r}\"}}"),
            )
        })
        .sum();
    assert_eq!(invalid, 7.0, "{m}");
}

#[tokio::test]
async fn legacy_session_of_a_killed_owner_gets_404() {
    let replicas = replicas(2).await;
    let t = tether(&replicas).await;
    let mut c = LegacyClient::connect(&sse_url(&t)).await.unwrap();
    let owner = c.whoami().await.unwrap();
    replicas.iter().find(|r| r.name() == owner).unwrap().kill();
    let err = c.whoami().await.unwrap_err();
    assert_eq!(err.status, Some(404), "{err}");
}

#[tokio::test]
async fn all_backends_down_is_a_502_with_a_jsonrpc_body() {
    let replicas = replicas(2).await;
    let t = tether(&replicas).await;
    for r in &replicas {
        r.kill();
    }
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let resp = send_raw(
        Method::POST,
        &mcp_url(&t),
        &[("content-type", "application/json")],
        init.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 502, "{}", resp.text());
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["id"], 1);
    assert_eq!(body["error"]["code"], -32603);
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_requests_total{backend=\"none\",status=\"502\"}"),
        1.0,
        "{m}"
    );
}
