//! The status page on the admin listener: `/` and its assets with their
//! security headers, `GET /status` as the page reads it (every backend, its
//! state after a drain, the counters and the rate history), and the rule for
//! admin actions from a browser. (The page itself, in a real headless
//! Chromium: interop/python/test_status_page.py.)

mod support;

use mcp_tether::affinity::SessionKey;
use mcp_tether::config::{parse_file, Config, Overrides};
use mcp_tether::{start, Running};
use serde_json::Value;
use support::*;

async fn get(t: &Running, path: &str) -> mcp_tether_testkit::RawResponse {
    let admin = t.admin_addr.expect("admin listener");
    send_raw(http::Method::GET, &format!("http://{admin}{path}"), &[], "")
        .await
        .expect("admin answers")
}

async fn status(t: &Running) -> Value {
    let resp = get(t, "/status").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(header(&resp, "cache-control"), "no-store");
    serde_json::from_str(&resp.text()).expect("JSON")
}

fn header(resp: &mcp_tether_testkit::RawResponse, name: &str) -> String {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn id(r: &Replica) -> String {
    r.url().trim_start_matches("http://").to_owned()
}

/// Every backend `/status` lists, by address, with its state.
fn states(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<_> = v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["backends"].as_array().unwrap().iter())
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_owned(),
                b["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The values of `attr="..."` in `html`.
fn attributes<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!("{attr}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

#[tokio::test]
async fn the_page_and_its_assets_come_from_the_binary_with_strict_headers() {
    let reps = replicas(1).await;
    let t = tether(&reps).await;
    let page = get(&t, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let html = page.text();
    assert!(html.contains("<title>Tether status</title>"), "{html}");
    let mut assets: Vec<&str> = attributes(&html, "src");
    assets.extend(attributes(&html, "href"));
    assert!(assets.len() >= 3, "{assets:?}");
    for asset in &assets {
        // Same origin only: a path, never `//host` or a scheme.
        assert!(
            asset.starts_with('/') && !asset.starts_with("//"),
            "{asset}"
        );
    }
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/page.js", "text/javascript; charset=utf-8"),
        ("/page.css", "text/css; charset=utf-8"),
        ("/icon.svg", "image/svg+xml; charset=utf-8"),
    ] {
        assert!(
            path == "/" || assets.contains(&path),
            "{path} not referenced"
        );
        let resp = get(&t, path).await;
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(header(&resp, "content-type"), content_type, "{path}");
        assert_eq!(header(&resp, "cache-control"), "no-store", "{path}");
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        assert_eq!(header(&resp, "x-frame-options"), "DENY");
        let csp = header(&resp, "content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("http"),
            "{csp}"
        );
        assert!(header(&resp, "access-control-allow-origin").is_empty());
    }
    // No inline script or style for the CSP to have to allow.
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "{html}"
    );
    let script = get(&t, "/page.js").await.text();
    assert!(
        script.contains("fetch(\"/status\""),
        "the page polls /status"
    );
    for html_sink in [
        ".innerHTML",
        ".outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(
            !script.contains(html_sink),
            "DOM built from text only: {html_sink}"
        );
    }

    // HEAD: the same head, no body.
    let admin = t.admin_addr.unwrap();
    let head = send_raw(http::Method::HEAD, &format!("http://{admin}/"), &[], "")
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(header(&head, "x-frame-options"), "DENY");
    // No CORS preflight is ever granted, and a POST to the page is no action.
    for method in [http::Method::OPTIONS, http::Method::POST] {
        let resp = send_raw(
            method.clone(),
            &format!("http://{admin}/status"),
            &[("origin", "https://evil.example")],
            "",
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 405, "{method}");
        assert!(header(&resp, "access-control-allow-origin").is_empty());
    }
}

#[tokio::test]
async fn status_lists_every_backend_and_follows_a_drain() {
    let reps = replicas(3).await;
    let t = tether(&reps).await;
    let v = status(&t).await;
    let mut want: Vec<_> = reps.iter().map(|r| (id(r), "active".to_owned())).collect();
    want.sort();
    assert_eq!(states(&v), want);
    assert_eq!(v["ready"], true);
    assert_eq!(v["actions_need_token"], false);
    assert_eq!(v["totals"]["backends"], 3);
    assert_eq!(v["totals"]["states"]["active"], 3);
    assert_eq!(v["pools"][0]["name"], "default");

    let admin = t.admin_addr.unwrap();
    let drained = id(&reps[1]);
    let resp = send_raw(
        http::Method::POST,
        &format!("http://{admin}/backends/{drained}/drain"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = status(&t).await;
    for (address, state) in states(&v) {
        let expect = if address == drained {
            "draining"
        } else {
            "active"
        };
        assert_eq!(state, expect, "{address}");
    }
    assert_eq!(v["totals"]["states"]["draining"], 1);
    let b = v["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == drained.as_str())
        .unwrap();
    assert_eq!(b["drain"]["admin"], true);
}

#[tokio::test]
async fn the_history_has_samples_and_rates_from_the_counters() {
    let reps = replicas(2).await;
    let t = tether(&reps).await;
    let v = status(&t).await;
    assert_eq!(v["history"]["interval_seconds"], 5);
    assert_eq!(v["history"]["window_seconds"], 900);
    assert!(
        v["history"]["samples"].as_u64().unwrap() >= 1,
        "a sample at start"
    );
    let before = v["counters"]["requests"].as_u64().unwrap();

    let n = 4;
    let mut clients = Vec::new();
    for _ in 0..n {
        let c = StreamableClient::connect(&mcp_url(&t)).await.unwrap();
        c.whoami().await.unwrap();
        clients.push(c);
    }
    let v = status(&t).await;
    assert_eq!(v["counters"]["sessions_created"], n);
    assert_eq!(v["totals"]["sessions_created"], n);
    let per_backend: u64 = v["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["sessions_created"].as_u64().unwrap())
        .sum();
    assert_eq!(per_backend, n);
    // initialize, initialized, tools/call for each.
    let requests = v["counters"]["requests"].as_u64().unwrap();
    assert!(requests >= before + 3 * n, "{requests} after {before}");
    // The live point: rates since the last sample (over at least a second).
    let points = v["history"]["points"].as_array().unwrap();
    let live = points.last().expect("a point");
    assert_eq!(live["seconds_ago"], 0);
    assert!(live["sessions_created"].as_f64().unwrap() > 0.0, "{live}");
    assert!(live["requests"].as_f64().unwrap() > 0.0, "{live}");
    assert_eq!(live["errors"], 0.0, "{live}");

    // A forged session reference shows as an invalid token.
    let resp = send_raw(
        http::Method::POST,
        &mcp_url(&t),
        &[
            ("mcp-session-id", "t1.forged"),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 404);
    let v = status(&t).await;
    assert_eq!(v["counters"]["invalid_tokens"], 1);
}

/// Tether in front of `reps` with `admin.token` set.
async fn with_token(reps: &[Replica], token: &str) -> Running {
    with_admin(reps, &format!("token = \"{token}\"")).await
}

/// Tether in front of `reps` with these `[admin]` keys besides `listen`.
async fn with_admin(reps: &[Replica], keys: &str) -> Running {
    let toml =
        format!("admin = {{ listen = \"127.0.0.1:0\", {keys} }}\n[health]\ncheck = \"none\"\n");
    let file = parse_file(&toml, "test").unwrap();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        backends: reps.iter().map(Replica::url).collect(),
        ..Overrides::default()
    };
    let key = SessionKey::generate().to_base64();
    let env = move |name: &str| (name == "TETHER_SESSION_KEY").then(|| key.clone());
    start(Config::from_parts(file, overrides, &env).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_status_page_may_act_with_the_token_and_only_from_its_own_origin() {
    let reps = replicas(1).await;
    let t = with_token(&reps, "t0ken-xyz").await;
    assert_eq!(status(&t).await["actions_need_token"], true);
    let admin = t.admin_addr.unwrap();
    let url = format!("http://{admin}/backends/{}/drain", id(&reps[0]));
    let own = format!("http://{admin}");
    let post = |headers: Vec<(&'static str, String)>| {
        let url = url.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send_raw(http::Method::POST, &url, &h, "")
                .await
                .unwrap()
                .status
        }
    };
    let right = ("authorization", "Bearer t0ken-xyz".to_owned());
    let wrong = ("authorization", "Bearer nope".to_owned());
    // Another site's page, right token: 403.
    let evil = ("origin", "http://evil.example".to_owned());
    assert_eq!(post(vec![evil.clone(), right.clone()]).await, 403);
    let cross = ("sec-fetch-site", "cross-site".to_owned());
    assert_eq!(post(vec![cross, right.clone()]).await, 403);
    // The page itself, wrong token: 401.
    let same = ("sec-fetch-site", "same-origin".to_owned());
    let origin = ("origin", own.clone());
    assert_eq!(post(vec![same.clone(), origin.clone(), wrong]).await, 401);
    assert_eq!(post(vec![same.clone(), origin.clone()]).await, 401);
    assert_eq!(states(&status(&t).await)[0].1, "active");
    // The page itself, right token: 200.
    assert_eq!(post(vec![same, origin, right.clone()]).await, 200);
    assert_eq!(states(&status(&t).await)[0].1, "draining");
    // An Origin alone (a browser without Sec-Fetch-Site) of this listener: 200 too.
    let undrain = url.replace("/drain", "/undrain");
    let resp = send_raw(
        http::Method::POST,
        &undrain,
        &[
            ("origin", own.as_str()),
            ("authorization", "Bearer t0ken-xyz"),
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(states(&status(&t).await)[0].1, "active");
}

#[tokio::test]
async fn without_a_token_the_page_is_read_only() {
    let reps = replicas(1).await;
    let t = tether(&reps).await;
    let admin = t.admin_addr.unwrap();
    let url = format!("http://{admin}/backends/{}/drain", id(&reps[0]));
    let own = format!("http://{admin}");
    let resp = send_raw(
        http::Method::POST,
        &url,
        &[("sec-fetch-site", "same-origin"), ("origin", own.as_str())],
        "",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert!(resp.text().contains("admin.token"), "{}", resp.text());
    assert_eq!(states(&status(&t).await)[0].1, "active");
}

/// A request to the admin listener with its own `Host` and other headers.
async fn ask(
    t: &Running,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> mcp_tether_testkit::RawResponse {
    let admin = t.admin_addr.unwrap();
    send_raw(method, &format!("http://{admin}{path}"), headers, "")
        .await
        .expect("admin answers")
}

#[tokio::test]
async fn a_browser_is_answered_only_at_an_address_or_a_listed_name() {
    let reps = replicas(1).await;
    let t = with_admin(
        &reps,
        "token = \"t0ken-xyz\", allowed_hosts = [\"Tether-Admin.test\"]",
    )
    .await;
    let port = t.admin_addr.unwrap().port();
    let backend = id(&reps[0]);
    let drain = format!("/backends/{backend}/drain");
    let bearer = ("authorization", "Bearer t0ken-xyz");

    // A hostile name rebound to the admin address, as a browser sends it.
    let evil = format!("evil.example:{port}");
    let evil_origin = format!("http://{evil}");
    for path in [
        "/",
        "/status",
        "/config",
        "/backends",
        "/metrics",
        "/healthz",
    ] {
        for browser in [
            ("sec-fetch-site", "none"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
            ("origin", evil_origin.as_str()),
            // What a browser sends to a plain-http name: no fetch metadata.
            ("accept-language", "en-US,en;q=0.9"),
            ("upgrade-insecure-requests", "1"),
            ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/148.0"),
        ] {
            let resp = ask(&t, http::Method::GET, path, &[("host", &evil), browser]).await;
            assert_eq!(resp.status, 403, "{path} {browser:?}: {}", resp.text());
            assert_eq!(header(&resp, "content-type"), "application/json");
            let body: Value = serde_json::from_str(&resp.text()).expect("JSON");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("admin.allowed_hosts"),
                "{body}"
            );
            assert_eq!(body["host"], evil.as_str());
            assert!(
                !resp.text().contains(&backend),
                "nothing of the state leaks"
            );
        }
        // The same name without a browser's headers (a scrape by a DNS name): answered.
        let scraper = [("host", evil.as_str()), ("user-agent", "Prometheus/2.53.0")];
        let resp = ask(&t, http::Method::GET, path, &scraper).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    }
    // The rebound page's own POST, with the token the operator typed into it: refused.
    let same_evil = [
        ("host", evil.as_str()),
        ("origin", evil_origin.as_str()),
        ("sec-fetch-site", "same-origin"),
        bearer,
    ];
    let resp = ask(&t, http::Method::POST, &drain, &same_evil).await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(states(&status(&t).await)[0].1, "active");

    // IP literals and localhost, with a browser's headers: answered.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("localhost:{port}"),
        "localhost".to_owned(),
    ] {
        let resp = ask(
            &t,
            http::Method::GET,
            "/status",
            &[("host", &host), ("sec-fetch-mode", "cors")],
        )
        .await;
        assert_eq!(resp.status, 200, "{host}: {}", resp.text());
    }

    // The listed name (any case, any port), its page's POST with the token: taken.
    let listed = format!("tether-admin.TEST:{port}");
    let listed_origin = format!("http://{listed}");
    let page = [
        ("host", listed.as_str()),
        ("origin", listed_origin.as_str()),
        ("sec-fetch-site", "same-origin"),
        bearer,
    ];
    let resp = ask(&t, http::Method::GET, "/status", &page[..3]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = ask(&t, http::Method::POST, &drain, &page).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(states(&status(&t).await)[0].1, "draining");

    // Behind a TLS ingress: `Origin: https://<Host>` is the page itself too.
    let undrain = format!("/backends/{backend}/undrain");
    let tls_page = [
        ("host", "tether-admin.test"),
        ("origin", "https://tether-admin.test"),
        ("sec-fetch-site", "same-origin"),
        bearer,
    ];
    let resp = ask(&t, http::Method::POST, &undrain, &tls_page).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(states(&status(&t).await)[0].1, "active");
    // ...but an https page of another host is still another site.
    let other = [
        ("host", "tether-admin.test"),
        ("origin", "https://evil.example"),
        bearer,
    ];
    let resp = ask(&t, http::Method::POST, &drain, &other).await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(states(&status(&t).await)[0].1, "active");
}

#[tokio::test]
async fn admin_allowed_hosts_follows_a_reload() {
    let reps = replicas(1).await;
    let dir = std::env::temp_dir().join(format!("tether-hosts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("tether.toml");
    let toml = |hosts: &str| {
        format!("[admin]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [{hosts}]\n[health]\ncheck = \"none\"\n")
    };
    std::fs::write(&conf, toml("")).unwrap();
    let t = start_from_file(&conf, reps.iter().map(Replica::url).collect()).await;
    let browser = [("host", "late.example"), ("accept-language", "en")];
    let resp = ask(&t, http::Method::GET, "/status", &browser).await;
    assert_eq!(resp.status, 403, "{}", resp.text());

    std::fs::write(&conf, toml("\"late.example\"")).unwrap();
    let resp = ask(&t, http::Method::POST, "/reload", &[]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = ask(&t, http::Method::GET, "/status", &browser).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let config: Value =
        serde_json::from_str(&ask(&t, http::Method::GET, "/config", &[]).await.text()).unwrap();
    assert_eq!(
        config["admin_allowed_hosts"],
        serde_json::json!(["late.example"])
    );
    std::fs::remove_dir_all(&dir).ok();
}
