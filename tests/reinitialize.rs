//! `failover = "reinitialize"`: a session whose owner is gone is begun again
//! on another backend with the client's own `initialize`, and the request
//! goes there; what cannot be replayed safely still gets the spec's 404.

mod support;

use http::Method;
use mcp_tether::affinity::{Sealer, SessionKey, TokenKind};
use mcp_tether::Running;
use mcp_tether_testkit::RawResponse;
use serde_json::{json, Value};
use support::*;

const FAILOVER: &str = "failover = \"reinitialize\"";

async fn post(url: &str, session: &str, body: Value) -> RawResponse {
    send_raw(
        Method::POST,
        url,
        &[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-session-id", session),
            ("mcp-protocol-version", "2025-06-18"),
            ("authorization", "Bearer client-credential"),
            ("x-forwarded-for", "203.0.113.7"),
            ("accept-encoding", "gzip"),
        ],
        body.to_string(),
    )
    .await
    .expect("response")
}

fn whoami(id: u64) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"whoami","arguments":{}}})
}

/// The text of a `tools/call` result, from a JSON or an SSE answer.
fn tool_text(resp: &RawResponse) -> String {
    let text = resp.text();
    let json = match text.find("data: ") {
        Some(at) => text[at + 6..]
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        None => text,
    };
    let v: Value = serde_json::from_str(&json).unwrap_or_else(|_| panic!("json: {json}"));
    v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no tool text: {v}"))
        .to_string()
}

fn initializes(r: &Replica) -> Vec<mcp_tether_testkit::SeenRequest> {
    r.requests()
        .into_iter()
        .filter(|q| String::from_utf8_lossy(&q.body).contains("\"initialize\""))
        .collect()
}

fn failovers(m: &str, outcome: &str) -> f64 {
    sample(
        m,
        &format!("tether_session_failovers_total{{pool=\"default\",outcome=\"{outcome}\"}}"),
    )
}

/// Four sessions, then `replicas[0]` killed: the client of one of its
/// sessions, and every (client, owner).
async fn killed_session(
    t: &Running,
    replicas: &[Replica],
) -> (StreamableClient, Vec<(StreamableClient, String)>) {
    let mut clients = sessions(t, 4).await;
    let victim = &replicas[0];
    let at = clients
        .iter()
        .position(|(_, owner)| owner == victim.name())
        .expect("a session on the victim");
    victim.kill();
    let (c, _) = clients.remove(at);
    (c, clients)
}

/// `n` sessions: (client, owner).
async fn sessions(t: &Running, n: usize) -> Vec<(StreamableClient, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let c = StreamableClient::connect(&mcp_url(t)).await.unwrap();
        let owner = sticky_owner(&c, 1).await;
        out.push((c, owner));
    }
    out
}

#[tokio::test]
async fn a_session_of_a_killed_owner_goes_on_on_another_backend() {
    let replicas = replicas(3).await;
    let t = tether_with(&replicas, &SessionKey::generate(), FAILOVER).await;
    let clients = sessions(&t, 6).await;
    let victim = &replicas[0];
    victim.kill();
    let before: usize = replicas[1..].iter().map(|r| initializes(r).len()).sum();
    let mut moved = 0;
    for (i, (c, owner)) in clients.iter().enumerate() {
        let old = c.session_id().unwrap();
        let resp = post(&mcp_url(&t), old, whoami(100 + i as u64)).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let now = tool_text(&resp);
        let token = resp.headers["mcp-session-id"].to_str().unwrap().to_string();
        if owner != victim.name() {
            assert_eq!(&now, owner, "a survivor's session moved");
            assert_eq!(token, old, "a survivor's session got a new token");
            continue;
        }
        moved += 1;
        assert_ne!(now, victim.name());
        assert_ne!(token, old, "the moved session's new token goes back");
        // The new token reaches the new session; so does the old one, through
        // the instance that moved it, without another initialize.
        for session in [&token, &old.to_string()] {
            let again = post(&mcp_url(&t), session, whoami(200 + i as u64)).await;
            assert_eq!((again.status, tool_text(&again)), (200, now.clone()));
            assert_eq!(again.headers["mcp-session-id"], token.as_str());
        }
    }
    assert!(moved >= 1, "no session was on the victim");
    // One initialize (the client's own params and credentials) and one
    // notifications/initialized per moved session, on the survivors.
    // (The clients' own initialize carried no credentials; the replays do.)
    let inits: Vec<_> = replicas[1..].iter().flat_map(initializes).collect();
    assert_eq!(
        inits.len() - before,
        moved,
        "one initialize per moved session"
    );
    let replays: Vec<_> = inits
        .iter()
        .filter(|q| q.headers.contains_key("authorization"))
        .collect();
    assert_eq!(replays.len(), moved);
    for q in replays {
        let body: Value = serde_json::from_slice(&q.body).unwrap();
        assert_eq!(
            body["params"]["clientInfo"]["name"], "tether-testkit",
            "{body}"
        );
        assert_eq!(q.headers["authorization"], "Bearer client-credential");
        // The forwarding chain goes on; the client's own encoding wishes do not.
        assert_eq!(q.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
        assert_eq!(q.headers["accept-encoding"], "identity");
        assert!(q.headers.get("mcp-session-id").is_none());
    }
    let initialized = replicas[1..]
        .iter()
        .flat_map(|r| r.requests())
        .filter(|q| String::from_utf8_lossy(&q.body).contains("notifications/initialized"))
        .filter(|q| q.headers.contains_key("authorization"))
        .count();
    assert_eq!(
        initialized, moved,
        "one notifications/initialized per moved session"
    );
    let m = metrics(&t).await;
    assert_eq!(failovers(&m, "reinitialized"), moved as f64, "{m}");
    // Each request sent on a moved session with the old token, the first included.
    assert_eq!(failovers(&m, "moved"), 2.0 * moved as f64, "{m}");
    let victim_id = victim.url().trim_start_matches("http://").to_string();
    let orphaned = format!("tether_sessions_orphaned_total{{backend=\"{victim_id}\"}}");
    assert_eq!(sample(&m, &orphaned), 0.0, "a moved session is no orphan");
}

#[tokio::test]
async fn what_cannot_be_replayed_still_gets_the_404() {
    let replicas = replicas(2).await;
    let key = SessionKey::generate();
    let t = tether_with(&replicas, &key, FAILOVER).await;
    let (c, _) = killed_session(&t, &replicas).await;
    let old = c.session_id().unwrap();
    // A client's response to a server's request: the new session never asked.
    let response = json!({"jsonrpc":"2.0","id":7,"result":{}});
    assert_eq!(post(&mcp_url(&t), old, response).await.status, 404);
    // A GET that resumes an old stream.
    let resume = send_raw(
        Method::GET,
        &mcp_url(&t),
        &[
            ("accept", "text/event-stream"),
            ("mcp-session-id", old),
            ("last-event-id", "3"),
        ],
        String::new(),
    )
    .await
    .unwrap();
    assert_eq!(resume.status, 404);
    // A session sealed without the client's params (begun before the opt-in).
    let victim_id = replicas[0].url().trim_start_matches("http://").to_string();
    let plain = Sealer::new(&key)
        .seal(TokenKind::Streamable, &victim_id, "srv-1", None)
        .unwrap();
    assert_eq!(post(&mcp_url(&t), &plain, whoami(1)).await.status, 404);
    let m = metrics(&t).await;
    assert_eq!(failovers(&m, "not_replayable"), 2.0, "{m}");
    assert_eq!(failovers(&m, "no_init"), 1.0, "{m}");
    assert_eq!(failovers(&m, "reinitialized"), 0.0, "{m}");
    // The replays are the initializes that carry the client's credential.
    let replays = initializes(&replicas[1])
        .iter()
        .filter(|q| q.headers.contains_key("authorization"))
        .count();
    assert_eq!(replays, 0, "no initialize was replayed");
}

#[tokio::test]
async fn a_fresh_event_stream_of_a_killed_owner_opens_on_the_new_session() {
    let replicas = replicas(2).await;
    let t = tether_with(&replicas, &SessionKey::generate(), FAILOVER).await;
    let (c, _) = killed_session(&t, &replicas).await;
    let old = c.session_id().unwrap().to_string();
    let stream = within(
        "GET stream",
        StreamableClient::resume(&mcp_url(&t), &old)
            .unwrap()
            .get_stream(),
    )
    .await
    .expect("the stream opens on the new session");
    assert_eq!(stream.status(), 200);
    let token = stream.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(token, old);
    // The client's next call (with the old token: it did not adopt the new
    // one from a GET) reaches that same new session.
    let resp = post(&mcp_url(&t), &old, whoami(9)).await;
    assert_eq!(
        (resp.status, tool_text(&resp)),
        (200, replicas[1].name().to_string())
    );
    assert_eq!(resp.headers["mcp-session-id"], token.as_str());
    assert_eq!(failovers(&metrics(&t).await, "reinitialized"), 1.0);
}

#[tokio::test]
async fn without_the_opt_in_the_owner_gone_is_the_404() {
    let replicas = replicas(2).await;
    let t = tether(&replicas).await;
    let (c, _) = killed_session(&t, &replicas).await;
    let resp = post(&mcp_url(&t), c.session_id().unwrap(), whoami(1)).await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    let m = metrics(&t).await;
    assert!(!m.contains("tether_session_failovers_total{"), "{m}");
}

#[tokio::test]
async fn requests_that_arrive_together_make_one_new_session() {
    let replicas = replicas(2).await;
    let t = tether_with(&replicas, &SessionKey::generate(), FAILOVER).await;
    let (c, _) = killed_session(&t, &replicas).await;
    let before = initializes(&replicas[1]).len();
    let old = c.session_id().unwrap().to_string();
    let url = mcp_url(&t);
    let answers = futures_join(
        (0..6)
            .map(|i| {
                let (url, old) = (url.clone(), old.clone());
                tokio::spawn(async move { post(&url, &old, whoami(300 + i)).await })
            })
            .collect(),
    )
    .await;
    let tokens: std::collections::HashSet<String> = answers
        .iter()
        .map(|r| {
            assert_eq!(
                (r.status, tool_text(r)),
                (200, replicas[1].name().to_string())
            );
            r.headers["mcp-session-id"].to_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(tokens.len(), 1, "one new session for all of them");
    assert_eq!(initializes(&replicas[1]).len() - before, 1);
    let m = metrics(&t).await;
    assert_eq!(failovers(&m, "reinitialized"), 1.0, "{m}");
    assert_eq!(failovers(&m, "moved"), 6.0, "{m}");
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<RawResponse>>) -> Vec<RawResponse> {
    let mut out = Vec::new();
    for h in handles {
        out.push(within("a concurrent request", h).await.expect("task"));
    }
    out
}

/// A POST as `user` (the `x-user` header the binding reads).
async fn post_as(url: &str, session: &str, user: &str, body: Value) -> RawResponse {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2025-06-18"),
        ("x-user", user),
    ];
    if !session.is_empty() {
        headers.push(("mcp-session-id", session));
    }
    send_raw(Method::POST, url, &headers, body.to_string())
        .await
        .expect("response")
}

#[tokio::test]
async fn a_moved_session_stays_bound_to_its_caller() {
    let replicas = replicas(2).await;
    let extra = format!("{FAILOVER}\n[sessions]\nbind = \"header:x-user\"\n");
    let t = tether_with(&replicas, &SessionKey::generate(), &extra).await;
    // alice's sessions, until one is on the victim.
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"alice-app","version":"1"}}});
    let victim = &replicas[0];
    let mut on_victim = None;
    for _ in 0..8 {
        let r = post_as(&mcp_url(&t), "", "alice", init.clone()).await;
        let token = r.headers["mcp-session-id"].to_str().unwrap().to_string();
        let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        assert_eq!(
            post_as(&mcp_url(&t), &token, "alice", note).await.status,
            202
        );
        if tool_text(&post_as(&mcp_url(&t), &token, "alice", whoami(1)).await) == victim.name() {
            on_victim = Some(token);
            break;
        }
    }
    let old = on_victim.expect("a session on the victim");
    victim.kill();
    // bob cannot move it, nor use it once alice did.
    assert_eq!(
        post_as(&mcp_url(&t), &old, "bob", whoami(2)).await.status,
        404
    );
    let moved = post_as(&mcp_url(&t), &old, "alice", whoami(3)).await;
    assert_eq!(
        (moved.status, tool_text(&moved)),
        (200, replicas[1].name().to_string())
    );
    let new = moved.headers["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    for token in [&old, &new] {
        assert_eq!(
            post_as(&mcp_url(&t), token, "bob", whoami(4)).await.status,
            404
        );
    }
    let m = metrics(&t).await;
    let rejected = sample(
        &m,
        "tether_session_binding_rejections_total{reason=\"mismatch\"}",
    );
    assert_eq!(rejected, 3.0, "{m}");
    assert_eq!(failovers(&m, "reinitialized"), 1.0, "{m}");
}
