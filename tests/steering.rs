//! Opt-in steering within a pool, any era: soft affinity (consistent hashing
//! with bounded loads on a header, the credential or a cookie) and cookie
//! stickiness (a sealed cookie naming the backend). Neither pins: a backend
//! that cannot take a request is not chosen, and the request goes elsewhere.

mod support;

use mcp_tether_testkit::raw::{echo_target, exchange, RawBackend};
use support::*;

async fn three() -> Vec<RawBackend> {
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(RawBackend::start(echo_target).await);
    }
    out
}

async fn tether_routes(backends: &[RawBackend], route: &str) -> mcp_tether::Running {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.url()))
        .collect();
    let extra = format!(
        "[pools.main]\nbackends = [{}]\n[[routes]]\npool = \"main\"\n{route}\n",
        list.join(", ")
    );
    // No backend flags: the file's pool.
    tether_urls(Vec::new(), &extra).await
}

/// Sends a GET with `fields`; the index of the backend that got it, and the answer.
async fn send(t: &mcp_tether::Running, backends: &[RawBackend], fields: &str) -> (usize, String) {
    let before: Vec<usize> = backends.iter().map(|b| b.seen().len()).collect();
    let req = format!("GET /mcp HTTP/1.1\r\nHost: lb\r\n{fields}Connection: close\r\n\r\n");
    let answer = exchange(t.proxy_addr, req.as_bytes()).await;
    let i = (0..backends.len())
        .find(|&i| backends[i].seen().len() > before[i])
        .unwrap_or_else(|| panic!("no backend got it: {answer}"));
    (i, answer)
}

#[tokio::test]
async fn a_tenant_header_keeps_its_replica_and_tenants_spread() {
    let backends = three().await;
    let t = tether_routes(&backends, "soft_affinity = \"header:X-Tenant\"").await;
    let mut homes = std::collections::BTreeSet::new();
    // 48 tenants: with a third of the ring each, all missing one backend is
    // a chance of about 3 * (2/3)^48 (12 left it at a few percent: a flaky test).
    for tenant in 0..48 {
        let fields = format!("X-Tenant: tenant-{tenant}\r\n");
        let (home, _) = send(&t, &backends, &fields).await;
        for _ in 0..2 {
            assert_eq!(
                send(&t, &backends, &fields).await.0,
                home,
                "tenant-{tenant} moved"
            );
        }
        homes.insert(home);
    }
    assert_eq!(homes.len(), 3, "48 tenants on {homes:?}");
    // No key: the ordinary rotation.
    let spread: std::collections::BTreeSet<_> = {
        let mut s = std::collections::BTreeSet::new();
        for _ in 0..3 {
            s.insert(send(&t, &backends, "").await.0);
        }
        s
    };
    assert_eq!(spread.len(), 3);
}

#[tokio::test]
async fn a_sticky_cookie_names_the_backend_until_it_drains() {
    let backends = three().await;
    let t = tether_routes(&backends, "sticky_cookie = \"tether_be\"").await;
    let (home, answer) = send(&t, &backends, "").await;
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no cookie: {answer}"))
        .to_owned();
    assert!(
        cookie.starts_with("tether_be=t2.") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let value = cookie.split(';').next().unwrap().to_owned();
    for _ in 0..5 {
        let (i, answer) = send(&t, &backends, &format!("Cookie: a=b; {value}\r\n")).await;
        assert_eq!(i, home);
        assert!(!answer.contains("set-cookie"), "the cookie stays: {answer}");
    }
    // A forged cookie is no cookie: an ordinary pick, and a new cookie.
    let (_, answer) = send(&t, &backends, "Cookie: tether_be=t1.forged\r\n").await;
    assert!(answer.contains("set-cookie: tether_be=t2."), "{answer}");
    // Its backend drained: the next one, with a new cookie.
    let admin = t.admin_addr.unwrap();
    let id = backends[home].addr.to_string();
    let resp = send_raw(
        http::Method::POST,
        &format!("http://{admin}/backends/{id}/drain"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    let (i, answer) = send(&t, &backends, &format!("Cookie: {value}\r\n")).await;
    assert_ne!(i, home);
    assert!(answer.contains("set-cookie: tether_be=t2."), "{answer}");
}
