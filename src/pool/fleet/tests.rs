use super::*;
use crate::pool::Health;

fn entry(authority: &str) -> Entry {
    Entry {
        scheme: Scheme::HTTP,
        authority: authority.parse().unwrap(),
        drain: false,
        protocol: crate::pool::Protocol::Http1,
    }
}

fn fleet() -> Fleet {
    let health = HealthSettings {
        check: health::Check::None,
        ..HealthSettings::default()
    };
    let f = Fleet::new(
        Arc::new(Metrics::default()),
        health.clone(),
        crate::tls::backend::BackendTls::shared_default(),
    );
    f.configure(
        Balance::RoundRobin,
        DrainSettings {
            idle: Duration::from_secs(30),
            timeout: Duration::from_secs(600),
        },
        health,
    );
    f
}

fn ids(f: &Fleet) -> Vec<String> {
    f.pool()
        .backends()
        .iter()
        .map(|b| b.id.to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_leaves_drains_then_goes_when_idle() {
    let f = fleet();
    f.set_source("dns://x:1", vec![entry("10.0.0.1:1"), entry("10.0.0.2:1")]);
    let kept = f.pool().get(b"10.0.0.2:1").unwrap().clone();
    let _busy = kept.track();
    f.set_source("dns://x:1", vec![entry("10.0.0.1:1")]);
    // Still known (its sessions keep working), but takes no new session.
    assert_eq!(ids(&f), ["10.0.0.1:1", "10.0.0.2:1"]);
    assert_eq!(kept.state(), State::Draining);
    for _ in 0..4 {
        assert_eq!(&*f.pool().pick(&[]).unwrap().backend.id, "10.0.0.1:1");
    }
    let t = Instant::now();
    f.tick(t + Duration::from_secs(60));
    assert_eq!(ids(&f).len(), 2, "busy: not removed");
    drop(_busy);
    f.tick(t + Duration::from_secs(61));
    f.tick(t + Duration::from_secs(90));
    assert_eq!(ids(&f).len(), 2, "quiet for 29 s only");
    f.tick(t + Duration::from_secs(91));
    assert_eq!(ids(&f), ["10.0.0.1:1"]);
}

#[tokio::test(start_paused = true)]
async fn drain_timeout_and_down_remove_a_busy_backend() {
    let f = fleet();
    f.set_source("s", vec![entry("a:1"), entry("b:1")]);
    let a = f.pool().get(b"a:1").unwrap().clone();
    let b = f.pool().get(b"b:1").unwrap().clone();
    let (_ga, _gb) = (a.track(), b.track());
    f.set_source("s", vec![entry("c:1")]);
    let t = Instant::now();
    b.set_health(Health::Down);
    f.tick(t + Duration::from_secs(1));
    assert_eq!(ids(&f), ["a:1", "c:1"], "down: removed at once");
    f.tick(t + Duration::from_secs(599));
    assert_eq!(ids(&f), ["a:1", "c:1"]);
    f.tick(t + Duration::from_secs(601));
    assert_eq!(ids(&f), ["c:1"], "drain.timeout");
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_comes_back_keeps_its_counters_and_state() {
    let f = fleet();
    f.set_source("s", vec![entry("a:1"), entry("b:1")]);
    let a = f.pool().get(b"a:1").unwrap().clone();
    a.session_created();
    f.set_source("s", vec![entry("b:1")]);
    let t = Instant::now();
    f.tick(t + Duration::from_secs(1));
    f.tick(t + Duration::from_secs(40));
    assert_eq!(ids(&f), ["b:1"]);
    f.set_source("s", vec![entry("a:1"), entry("b:1")]);
    let back = f.pool().get(b"a:1").unwrap().clone();
    assert!(Arc::ptr_eq(&a, &back));
    assert_eq!(back.sessions_created(), 1);
    assert_eq!(back.state(), State::Active);
}

#[tokio::test(start_paused = true)]
async fn sources_merge_and_admin_and_config_drains_hold() {
    let f = fleet();
    f.set_source(
        STATIC,
        vec![
            Entry {
                drain: true,
                ..entry("a:1")
            },
            entry("b:1"),
        ],
    );
    f.set_source("file:x", vec![entry("b:1"), entry("c:1")]);
    assert_eq!(ids(&f), ["a:1", "b:1", "c:1"]);
    assert_eq!(f.pool().get(b"a:1").unwrap().state(), State::Draining);
    assert!(f.set_admin_drain("c:1", true));
    assert!(!f.set_admin_drain("zz:1", true));
    for _ in 0..4 {
        assert_eq!(&*f.pool().pick(&[]).unwrap().backend.id, "b:1");
    }
    // Dropping one source keeps what another still names.
    f.retain_sources(&[STATIC.to_string()]);
    assert_eq!(f.pool().get(b"b:1").unwrap().state(), State::Active);
    assert_eq!(f.pool().get(b"c:1").unwrap().state(), State::Draining);
    assert!(f.set_admin_drain("c:1", false));
    // Still gone from its source: draining.
    assert_eq!(f.pool().get(b"c:1").unwrap().state(), State::Draining);
}

#[tokio::test(start_paused = true)]
async fn backends_forgotten_past_the_retired_bound_lose_their_metric_series() {
    let metrics = Arc::new(Metrics::default());
    let health = HealthSettings {
        check: health::Check::None,
        ..HealthSettings::default()
    };
    let f = Fleet::new(
        metrics.clone(),
        health.clone(),
        crate::tls::backend::BackendTls::shared_default(),
    );
    f.configure(Balance::RoundRobin, DrainSettings::default(), health);
    let entries: Vec<Entry> = (0..=RETIRED).map(|i| entry(&format!("e{i}:1"))).collect();
    f.set_source("s", entries);
    let series = |id: &str| {
        let label = Metrics::backend(&Arc::from(id));
        metrics.sessions_orphaned.get_or_create(&label).inc();
    };
    series("e0:1");
    series(&format!("e{RETIRED}:1"));
    f.set_source("s", Vec::new());
    let t = Instant::now();
    f.tick(t + Duration::from_secs(1));
    f.tick(t + Duration::from_secs(40));
    assert!(f.pool().backends().is_empty());
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    // Removed last-to-first: the first one retired is the one forgotten.
    assert!(
        !text.contains(&format!("backend=\"e{RETIRED}:1\"")),
        "{text}"
    );
    assert!(text.contains("backend=\"e0:1\""));
}

#[tokio::test]
async fn a_changed_protocol_keeps_the_backend_and_closes_its_idle_connections() {
    use crate::pool::Protocol;
    let f = fleet();
    let h2 = |a: &str| Entry {
        protocol: Protocol::H2,
        ..entry(a)
    };
    f.set_source(STATIC, vec![h2("a:1")]);
    let before = f.pool().backends()[0].clone();
    assert_eq!(before.protocol(), Protocol::H2);
    let (ours, _theirs) = tokio::io::duplex(64);
    before.idle.lock().unwrap().push(crate::pool::IdleConn {
        stream: crate::transport::Stream::Memory(ours),
        since: Instant::now(),
        expires: Instant::now() + Duration::from_secs(60),
    });
    f.set_source(STATIC, vec![entry("a:1")]);
    let after = f.pool().backends()[0].clone();
    assert!(Arc::ptr_eq(&before, &after), "same backend, same identity");
    assert_eq!(after.protocol(), Protocol::Http1);
    assert!(
        after.idle.lock().unwrap().is_empty(),
        "idle h2 pipes closed"
    );
    // Unchanged: idle connections stay.
    let (ours, _theirs) = tokio::io::duplex(64);
    after.idle.lock().unwrap().push(crate::pool::IdleConn {
        stream: crate::transport::Stream::Memory(ours),
        since: Instant::now(),
        expires: Instant::now() + Duration::from_secs(60),
    });
    f.set_source(STATIC, vec![entry("a:1")]);
    assert_eq!(after.idle.lock().unwrap().len(), 1);
}
