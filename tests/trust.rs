//! Trust: sessions bound to their caller, key rotation across instances and
//! reloads, `Origin` at the edge, per-caller limits.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::Method;
use mcp_tether::affinity::SessionKey;
use serde_json::{json, Value};
use support::*;

fn jwt(claims: Value) -> String {
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.c2ln", enc(&json!({"alg": "RS256"})), enc(&claims))
}

fn bearer(claims: Value) -> String {
    format!("Bearer {}", jwt(claims))
}

const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");
const JSON: (&str, &str) = ("content-type", "application/json");

fn initialize() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "trust-test", "version": "1"}}})
    .to_string()
}

fn whoami(id: u32) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}}})
    .to_string()
}

/// Begins a session with `headers` besides the usual ones; its token.
async fn begin(t: &mcp_tether::Running, headers: &[(&str, &str)]) -> String {
    let mut all = vec![ACCEPT, JSON];
    all.extend_from_slice(headers);
    let resp = send_raw(Method::POST, &mcp_url(t), &all, initialize())
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let token = resp.headers["mcp-session-id"].to_str().unwrap().to_owned();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let mut with = all.clone();
    with.push(("mcp-session-id", &token));
    let resp = send_raw(Method::POST, &mcp_url(t), &with, initialized.to_string())
        .await
        .unwrap();
    assert_eq!(resp.status, 202);
    token
}

/// A `whoami` call in the session `token`, with `headers`: (status, body).
async fn call(t: &mcp_tether::Running, token: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut all = vec![ACCEPT, JSON, ("mcp-session-id", token)];
    all.extend_from_slice(headers);
    let resp = send_raw(Method::POST, &mcp_url(t), &all, whoami(7))
        .await
        .unwrap();
    let body = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, body)
}

fn seen(replicas: &[Replica]) -> usize {
    replicas.iter().map(Replica::request_count).sum()
}

#[tokio::test]
async fn a_session_bound_to_a_jwt_subject_is_its_callers_only() {
    let replicas = replicas(2).await;
    let t = tether_with(
        &replicas,
        &SessionKey::generate(),
        "[sessions]\nbind = \"jwt:sub\"\n",
    )
    .await;
    let alice = bearer(json!({"sub": "alice", "iat": 1, "jti": "a"}));
    let token = begin(&t, &[("authorization", &alice)]).await;
    let (status, _) = call(&t, &token, &[("authorization", &alice)]).await;
    assert_eq!(status, 200);
    // A refreshed token with the same subject keeps the session.
    let refreshed = bearer(json!({"sub": "alice", "iat": 2, "jti": "b", "exp": 9}));
    let (status, _) = call(&t, &token, &[("authorization", &refreshed)]).await;
    assert_eq!(status, 200);

    let before = seen(&replicas);
    let bob = bearer(json!({"sub": "bob"}));
    for (headers, reason) in [
        (vec![("authorization", bob.as_str())], "mismatch"),
        (vec![], "missing"),
        (vec![("authorization", "Bearer not-a-jwt")], "missing"),
    ] {
        let (status, body) = call(&t, &token, &headers).await;
        assert_eq!(status, 404, "{reason}: {body}");
        assert_eq!(body["error"]["code"], -32001);
        assert_eq!(body["id"], 7);
    }
    assert_eq!(seen(&replicas), before, "a replica was contacted");
    let m = metrics(&t).await;
    let rejected = |r: &str| {
        sample(
            &m,
            &format!("tether_session_binding_rejections_total{{reason=\"{r}\"}}"),
        )
    };
    assert_eq!(
        (rejected("mismatch"), rejected("missing")),
        (1.0, 2.0),
        "{m}"
    );
    // Alice is still served after all that.
    assert_eq!(call(&t, &token, &[("authorization", &alice)]).await.0, 200);
    // A session begun by no one is bound to no one.
    let open = begin(&t, &[]).await;
    assert_eq!(call(&t, &open, &[("authorization", &bob)]).await.0, 200);
}

#[tokio::test]
async fn an_identity_header_binds_and_another_mode_matches_no_one() {
    let replicas = replicas(1).await;
    let key = SessionKey::generate();
    let t = tether_with(&replicas, &key, "[sessions]\nbind = \"header:x-user\"\n").await;
    let token = begin(&t, &[("x-user", "alice")]).await;
    assert_eq!(call(&t, &token, &[("x-user", "alice")]).await.0, 200);
    assert_eq!(call(&t, &token, &[("x-user", "bob")]).await.0, 404);
    // Another Tether with the same key but binding by another field: the
    // session's principal was a header's, so no value of this one matches.
    let other = tether_with(&replicas, &key, "[sessions]\nbind = \"header:x-tenant\"\n").await;
    assert_eq!(call(&other, &token, &[("x-tenant", "alice")]).await.0, 404);
    // With binding off nothing is checked: the token routes (binding is the
    // server's business again).
    let off = tether_with(&replicas, &key, "").await;
    assert_eq!(call(&off, &token, &[]).await.0, 200);
}

/// A directory removed when the test ends.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key_file(dir: &std::path::Path, keys: &[&SessionKey]) -> std::path::PathBuf {
    let path = dir.join("keys");
    let text: String = keys
        .iter()
        .map(|k| format!("{}\n", k.to_base64()))
        .collect();
    std::fs::write(&path, format!("# session keys: the first seals\n{text}")).unwrap();
    path
}

async fn opens(t: &mcp_tether::Running, key: &SessionKey) -> f64 {
    let m = metrics(t).await;
    sample(
        &m,
        &format!("tether_token_opens_total{{key=\"{}\"}}", key.id_hex()),
    )
}

#[tokio::test]
async fn keys_roll_over_two_instances_with_no_session_lost() {
    let replicas = replicas(2).await;
    let dir = std::env::temp_dir().join(format!("tether-trust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = Scratch(dir);
    let (k1, k2) = (SessionKey::generate(), SessionKey::generate());
    let keys = key_file(dir.path(), &[&k1]);
    let conf = dir.path().join("tether.toml");
    let toml = format!(
        "session_key_file = \"{}\"\n{}",
        keys.display(),
        test_toml("")
    );
    std::fs::write(&conf, toml).unwrap();
    let urls: Vec<String> = replicas.iter().map(Replica::url).collect();
    let a = start_from_file(&conf, urls.clone()).await;
    let b = start_from_file(&conf, urls).await;
    let old = StreamableClient::connect(&mcp_url(&a)).await.unwrap();
    let old_token = old.session_id().unwrap().to_owned();
    assert_eq!(call(&b, &old_token, &[]).await.0, 200);

    // 1: the new key second everywhere; 2: first everywhere.
    for step in [[&k1, &k2], [&k2, &k1]] {
        key_file(dir.path(), &step);
        a.control.reload().unwrap();
        b.control.reload().unwrap();
        for t in [&a, &b] {
            assert_eq!(call(t, &old_token, &[]).await.0, 200);
        }
    }
    let new = StreamableClient::connect(&mcp_url(&b)).await.unwrap();
    let new_token = new.session_id().unwrap().to_owned();
    assert_eq!(call(&a, &new_token, &[]).await.0, 200);
    let k2_opens = opens(&a, &k2).await;
    assert!(k2_opens >= 1.0, "the new key sealed the new session");
    let k1_opens = opens(&a, &k1).await;
    assert!(k1_opens >= 1.0);

    // 3: the old key dropped: its tokens are retired, the new ones live on.
    key_file(dir.path(), &[&k2]);
    a.control.reload().unwrap();
    b.control.reload().unwrap();
    for t in [&a, &b] {
        let (status, body) = call(t, &old_token, &[]).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (404, json!(-32001))
        );
        assert_eq!(call(t, &new_token, &[]).await.0, 200);
    }
    let m = metrics(&a).await;
    assert_eq!(
        sample(&m, "tether_invalid_tokens_total{reason=\"unknown_key\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(opens(&a, &k1).await, k1_opens, "nothing opens with k1 now");
    assert!(opens(&a, &k2).await > k2_opens);

    // A file with no key, or a bad one, is refused and the keys stay.
    std::fs::write(&keys, "# nothing\n").unwrap();
    let err = a.control.reload().unwrap_err();
    assert!(err.to_string().contains("no key"), "{err}");
    std::fs::write(&keys, format!("{}\nnot-a-key\n", k2.to_base64())).unwrap();
    let err = a.control.reload().unwrap_err();
    assert!(err.to_string().contains("key 2"), "{err}");
    assert_eq!(call(&a, &new_token, &[]).await.0, 200);
}

#[tokio::test]
async fn an_origin_not_allowed_gets_403_and_reaches_no_backend() {
    let replicas = replicas(1).await;
    let extra = "allowed_origins = [\"https://app.example.com\", \"http://localhost:6274\"]\n";
    let t = tether_with(&replicas, &SessionKey::generate(), extra).await;
    for origin in [
        "https://evil.example.com",
        "null",
        "https://app.example.com:8443",
    ] {
        let headers = [ACCEPT, JSON, ("origin", origin)];
        let resp = send_raw(Method::POST, &mcp_url(&t), &headers, initialize())
            .await
            .unwrap();
        assert_eq!(resp.status, 403, "{origin}");
        let body: Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(body["error"]["message"], "Origin not allowed");
        assert_eq!(body["id"], Value::Null, "a 403 for an Origin has no id");
    }
    assert_eq!(replicas[0].request_count(), 0);
    // Allowed, or no Origin at all (not a browser): served.
    begin(&t, &[("origin", "http://localhost:6274")]).await;
    begin(&t, &[]).await;
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_rejected_requests_total{reason=\"origin\"}"),
        3.0
    );
}

#[tokio::test]
async fn a_caller_over_its_rate_gets_429_while_others_are_served() {
    let replicas = replicas(1).await;
    let extra =
        "[sessions]\nbind = \"header:x-user\"\n[limits.per_caller]\nrate = 0.5\nburst = 3\n";
    let t = tether_with(&replicas, &SessionKey::generate(), extra).await;
    let token = begin(&t, &[("x-user", "alice")]).await; // 2 requests
    assert_eq!(call(&t, &token, &[("x-user", "alice")]).await.0, 200);
    let mut headers = vec![ACCEPT, JSON, ("mcp-session-id", token.as_str())];
    headers.push(("x-user", "alice"));
    let resp = send_raw(Method::POST, &mcp_url(&t), &headers, whoami(9))
        .await
        .unwrap();
    assert_eq!(resp.status, 429);
    let retry: u32 = resp.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(
        (body["error"]["code"].clone(), body["id"].clone()),
        (json!(-32000), json!(9))
    );
    // Bob is another caller; an unbound request is limited by address.
    let bob = begin(&t, &[("x-user", "bob")]).await;
    assert_eq!(call(&t, &bob, &[("x-user", "bob")]).await.0, 200);
    let m = metrics(&t).await;
    assert_eq!(
        sample(&m, "tether_rejected_requests_total{reason=\"caller_rate\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_caller_at_its_concurrency_limit_gets_429_until_one_ends() {
    use tokio::io::AsyncWriteExt;
    let replicas = replicas(1).await;
    let extra = "[limits.per_caller]\nconcurrent = 1\n";
    let t = tether_with(&replicas, &SessionKey::generate(), extra).await;
    let token = begin(&t, &[]).await;
    replicas[0].set_delay(std::time::Duration::from_secs(600));
    let seen_before = replicas[0].request_count();
    // A slow call in progress, on a connection the test will reset.
    let mut slow = tokio::net::TcpStream::connect(t.proxy_addr).await.unwrap();
    let body = whoami(1);
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: x\r\nAccept: application/json, text/event-stream\r\n\
         Content-Type: application/json\r\nMcp-Session-Id: {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(format!("{head}{body}").as_bytes())
        .await
        .unwrap();
    replicas[0].wait_requests(seen_before + 1).await;
    let (status, body) = call(&t, &token, &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        replicas[0].request_count(),
        seen_before + 1,
        "the refused one reached no one"
    );
    let m = metrics(&t).await;
    assert_eq!(
        sample(
            &m,
            "tether_rejected_requests_total{reason=\"caller_concurrency\"}"
        ),
        1.0
    );
    // A reset ends the slow call (in any era), and with it the count.
    replicas[0].set_delay(std::time::Duration::ZERO);
    socket2::SockRef::from(&slow)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(slow);
    eventually("the reset call to end", || async {
        call(&t, &token, &[]).await.0 == 200
    })
    .await;
}

/// A `whoami` POST from `source` (another loopback address is another client).
async fn call_from(
    t: &mcp_tether::Running,
    source: std::net::IpAddr,
    token: &str,
    authorization: &str,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    let mut s = socket.connect(t.proxy_addr).await.unwrap();
    let body = whoami(3);
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: x\r\nAccept: application/json, text/event-stream\r\n\
         Content-Type: application/json\r\nMcp-Session-Id: {token}\r\nAuthorization: {authorization}\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    answer[9..12].parse().unwrap()
}

#[tokio::test]
async fn a_forged_subject_elsewhere_cannot_spend_a_callers_budget() {
    let replicas = replicas(1).await;
    let extra = "[sessions]\nbind = \"jwt:sub\"\n[limits.per_caller]\nrate = 0.1\nburst = 4\n";
    let t = tether_with(&replicas, &SessionKey::generate(), extra).await;
    let alice = bearer(json!({"sub": "alice"}));
    let token = begin(&t, &[("authorization", &alice)]).await; // 2 of alice's 4
                                                               // Someone at another address with an unsigned token naming alice spends
                                                               // a budget of their own, not hers (the JWT is not verified).
    let elsewhere: std::net::IpAddr = [127, 0, 0, 2].into();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(call_from(&t, elsewhere, &token, &alice).await);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429]);
    let home: std::net::IpAddr = [127, 0, 0, 1].into();
    assert_eq!(
        call_from(&t, home, &token, &alice).await,
        200,
        "alice's own budget is hers"
    );
}

#[test]
fn bad_trust_settings_are_config_errors() {
    use mcp_tether::config::{parse_file, Config, Overrides};
    for (toml, key) in [
        ("[sessions]\nbind = \"cookie:x\"\n", "sessions.bind"),
        (
            "allowed_origins = [\"https://a.example/\"]\n",
            "allowed_origins",
        ),
        ("[limits.per_caller]\nrate = -1\n", "limits.per_caller.rate"),
        (
            "[limits.per_caller]\nburst = 5\n",
            "limits.per_caller.burst",
        ),
    ] {
        let file = parse_file(&format!("backends = [\"http://h:1\"]\n{toml}"), "t").unwrap();
        let err = Config::from_parts(file, Overrides::default(), &|_| None).unwrap_err();
        assert_eq!(err.key, key, "{toml}");
    }
    let k = SessionKey::generate().to_base64();
    let env = move |n: &str| (n == "TETHER_SESSION_KEY").then(|| format!("{k}, {k}"));
    let file = parse_file("backends = [\"http://h:1\"]\n", "t").unwrap();
    let err = Config::from_parts(file, Overrides::default(), &env).unwrap_err();
    assert!(err.problem.contains("repeats"), "{err}");
    // The default burst lets a session's handshake through at a low rate.
    let file = parse_file(
        "backends = [\"http://h:1\"]\n[limits.per_caller]\nrate = 1\n",
        "t",
    )
    .unwrap();
    let config = Config::from_parts(file, Overrides::default(), &|_| None).unwrap();
    assert_eq!(config.per_caller.burst, 5.0);
}
