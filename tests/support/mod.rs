//! Shared set-up for the integration tests: replicas from the test kit, and
//! Tether started in-process on port 0 in front of them.

#![allow(dead_code, unused_imports)] // each test binary uses a different part

pub mod pki;
pub mod redis;

use std::time::Duration;

use mcp_tether::affinity::SessionKey;
use mcp_tether::config::{parse_file, Config, Overrides};
use mcp_tether::{start, Running};
pub use mcp_tether_testkit::{send_raw, ClientError, LegacyClient, Replica, StreamableClient};

/// The test config: an admin listener, and no active health probes unless
/// `extra` has a `[health]` table (probes would be extra connections and
/// requests that tests counting a backend's traffic do not expect).
pub fn test_toml(extra: &str) -> String {
    let health = match extra.contains("[health]") {
        true => "",
        false => "[health]\ncheck = \"none\"\n",
    };
    format!("admin = \"127.0.0.1:0\"\n{extra}\n{health}")
}

/// Starts `n` default replicas named `replica-1..n`.
pub async fn replicas(n: usize) -> Vec<Replica> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.push(
            Replica::builder(&format!("replica-{i}"))
                .spawn()
                .await
                .expect("replica"),
        );
    }
    out
}

/// Tether in front of `replicas`, with `extra` TOML (limits, timeouts...) and `key`.
pub async fn tether_with(replicas: &[Replica], key: &SessionKey, extra: &str) -> Running {
    let file = parse_file(&test_toml(extra), "test").expect("test config");
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        backends: replicas.iter().map(Replica::url).collect(),
        ..Overrides::default()
    };
    let key_text = key.to_base64();
    let env = move |name: &str| (name == "TETHER_SESSION_KEY").then(|| key_text.clone());
    let config = Config::from_parts(file, overrides, &env).expect("config");
    start(config).await.expect("tether starts")
}

pub async fn tether(replicas: &[Replica]) -> Running {
    tether_with(replicas, &SessionKey::generate(), "").await
}

pub fn base(t: &Running) -> String {
    format!("http://{}", t.proxy_addr)
}

pub fn mcp_url(t: &Running) -> String {
    format!("{}/mcp", base(t))
}

pub fn sse_url(t: &Running) -> String {
    format!("{}/sse", base(t))
}

/// The admin `/metrics` text.
pub async fn metrics(t: &Running) -> String {
    let admin = t.admin_addr.expect("admin listener");
    let resp = send_raw(
        http::Method::GET,
        &format!("http://{admin}/metrics"),
        &[],
        "",
    )
    .await
    .expect("metrics");
    assert_eq!(resp.status, 200);
    resp.text()
}

/// The value of one sample line (`name{labels}`) in the metrics text, 0 if
/// that series has not been made yet. The metric itself must exist (its
/// `# TYPE` line): a renamed metric fails here instead of reading as 0.
pub fn sample(text: &str, series: &str) -> f64 {
    let name = series.split('{').next().unwrap_or(series);
    let family = name.strip_suffix("_total").unwrap_or(name);
    assert!(
        text.contains(&format!("# TYPE {family} ")),
        "no metric {family} in:\n{text}"
    );
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Fails the test instead of hanging it.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Which replica answers `whoami` for a session, asserting it is the same `n` times.
pub async fn sticky_owner(client: &StreamableClient, n: usize) -> String {
    let first = client.whoami().await.expect("whoami");
    for _ in 1..n {
        assert_eq!(
            client.whoami().await.expect("whoami"),
            first,
            "session moved"
        );
    }
    first
}

/// Tether in front of arbitrary backend URLs (raw fake backends), with `extra` TOML.
pub async fn tether_urls(urls: Vec<String>, extra: &str) -> Running {
    let file = parse_file(&test_toml(extra), "test").expect("test config");
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        backends: urls,
        ..Overrides::default()
    };
    let config = Config::from_parts(file, overrides, &|_| None).expect("config");
    start(config).await.expect("tether starts")
}

/// Tether from a config file (listening on port 0), which reloads read
/// again; `backends`, when not empty, replace the file's (as flags do).
pub async fn start_from_file(conf: &std::path::Path, backends: Vec<String>) -> Running {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        backends,
        ..Overrides::default()
    };
    let config = Config::load(Some(conf), overrides.clone(), &|_| None).unwrap();
    let source = mcp_tether::control::ReloadSource {
        path: conf.to_owned(),
        overrides,
        env: Box::new(|_| None),
    };
    mcp_tether::start_with(config, Some(source)).await.unwrap()
}

/// Polls `check` every 20 ms until it holds (a state change the test waits for).
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}
