use super::*;
use crate::pool::health::HealthSettings;
use crate::pool::Balance;

fn no_env(_: &str) -> Option<String> {
    None
}

fn with_backends(list: &[&str]) -> Overrides {
    Overrides {
        backends: list.iter().map(|s| s.to_string()).collect(),
        ..Overrides::default()
    }
}

#[test]
fn runs_with_no_file_and_only_backends() {
    let c = Config::from_parts(
        FileConfig::default(),
        with_backends(&["http://127.0.0.1:9001"]),
        &no_env,
    )
    .unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.admin, None);
    assert_eq!(c.pools[0].backends[0].authority.as_str(), "127.0.0.1:9001");
    assert_eq!(c.key_origin, KeyOrigin::Generated);
    assert_eq!(c.pools[0].balance, Balance::LeastOutstanding);
    assert!(c.preserve_host);
    assert_eq!(c.limits.max_request_body, 4 << 20);
    assert_eq!(c.timeouts.stream_idle, Some(Duration::from_secs(600)));
}

#[test]
fn flags_override_the_file() {
    let file = parse_file(
        r#"
listen = "127.0.0.1:7000"
admin = "127.0.0.1:7001"
backends = ["http://10.0.0.1:80", "http://10.0.0.2:80"]
balance = "round-robin"
preserve_host = false

[limits]
max_request_body = 1024

[timeouts]
stream_idle = "0s"
response = "90s"
"#,
        "t.toml",
    )
    .unwrap();
    let overrides = Overrides {
        listen: Some("127.0.0.1:7100".parse().unwrap()),
        backends: vec!["http://127.0.0.1:9001".into()],
        ..Overrides::default()
    };
    let c = Config::from_parts(file, overrides, &no_env).unwrap();
    assert_eq!(c.listen, "127.0.0.1:7100".parse().unwrap());
    assert_eq!(c.admin, Some("127.0.0.1:7001".parse().unwrap()));
    assert_eq!(c.pools[0].backends.len(), 1);
    assert_eq!(c.pools[0].balance, Balance::RoundRobin);
    assert!(!c.preserve_host);
    assert_eq!(c.limits.max_request_body, 1024);
    assert_eq!(c.timeouts.stream_idle, None);
    assert_eq!(c.timeouts.response, Duration::from_secs(90));
}

#[test]
fn file_errors_name_the_line_and_key() {
    let err = parse_file("listen = \"127.0.0.1:1\"\nlisten_typo = 1\n", "t.toml").unwrap_err();
    assert_eq!(err.key, "t.toml:2: listen_typo");
    assert!(err.problem.contains("unknown field"), "{err}");
    let err = parse_file("[timeouts]\nconnect = \"soon\"\n", "t.toml").unwrap_err();
    assert_eq!(err.key, "t.toml:2: connect");
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn bad_values_name_their_key() {
    let cases: [(&[&str], &str); 6] = [
        (&["http://127.0.0.1:"], "backends[0]"),
        (&[], "backends"),
        (&["127.0.0.1:9001"], "backends[0]"),
        (&["http://127.0.0.1:1", "ftp://x:443"], "backends[1]"),
        (&["http://127.0.0.1:1/mcp"], "backends[0]"),
        (&["http://u@h:1"], "backends[0]"),
    ];
    for (backends, key) in cases {
        let err = Config::from_parts(FileConfig::default(), with_backends(backends), &no_env)
            .unwrap_err();
        assert_eq!(err.key, key, "{backends:?}: {err}");
    }
    let file = parse_file("[limits]\nmax_header_bytes = 100\n", "t").unwrap();
    let err = Config::from_parts(file, with_backends(&["http://h:1"]), &no_env).unwrap_err();
    assert_eq!(err.key, "limits.max_header_bytes");
    let file = parse_file("[timeouts]\nconnect = \"0s\"\n", "t").unwrap();
    let err = Config::from_parts(file, with_backends(&["http://h:1"]), &no_env).unwrap_err();
    assert_eq!(err.key, "timeouts.connect");
}

#[test]
fn key_comes_from_file_then_env_then_is_generated() {
    let key = SessionKey::generate().to_base64();
    let env_key = key.clone();
    let env = move |name: &str| (name == KEY_ENV).then(|| env_key.clone());
    let c =
        Config::from_parts(FileConfig::default(), with_backends(&["http://h:1"]), &env).unwrap();
    assert_eq!(c.key_origin, KeyOrigin::Env);
    assert_eq!(c.keys[0].to_base64(), key);

    let dir = std::env::temp_dir().join(format!("tether-key-{}", std::process::id()));
    std::fs::write(&dir, format!("{}\n", SessionKey::generate().to_base64())).unwrap();
    let overrides = Overrides {
        session_key_file: Some(dir.clone()),
        ..with_backends(&["http://h:1"])
    };
    let c = Config::from_parts(FileConfig::default(), overrides, &env).unwrap();
    assert_eq!(c.key_origin, KeyOrigin::File);
    assert_ne!(c.keys[0].to_base64(), key);
    std::fs::remove_file(&dir).unwrap();

    let bad = |_: &str| Some("short".to_string());
    let err = Config::from_parts(FileConfig::default(), with_backends(&["http://h:1"]), &bad)
        .unwrap_err();
    assert_eq!(err.key, KEY_ENV);
    let missing = Overrides {
        session_key_file: Some("/nonexistent/tether.key".into()),
        ..with_backends(&["http://h:1"])
    };
    let err = Config::from_parts(FileConfig::default(), missing, &no_env).unwrap_err();
    assert_eq!(err.key, "session_key_file");
}

#[test]
fn threads_come_from_flag_then_env_then_file() {
    let file = || parse_file("threads = 4\n", "t").unwrap();
    let backends = || with_backends(&["http://h:1"]);
    let c = Config::from_parts(file(), backends(), &no_env).unwrap();
    assert_eq!(c.threads, Some(4));
    let env = |name: &str| (name == THREADS_ENV).then(|| "2".to_string());
    assert_eq!(
        Config::from_parts(file(), backends(), &env)
            .unwrap()
            .threads,
        Some(2)
    );
    let flag = Overrides {
        threads: Some(1),
        ..backends()
    };
    assert_eq!(
        Config::from_parts(file(), flag, &env).unwrap().threads,
        Some(1)
    );
    let zero = Overrides {
        threads: Some(0),
        ..backends()
    };
    assert_eq!(
        Config::from_parts(file(), zero, &no_env).unwrap_err().key,
        "threads"
    );
    let bad = |name: &str| (name == THREADS_ENV).then(|| "many".to_string());
    assert_eq!(
        Config::from_parts(file(), backends(), &bad)
            .unwrap_err()
            .key,
        THREADS_ENV
    );
    assert_eq!(
        Config::from_parts(FileConfig::default(), backends(), &no_env)
            .unwrap()
            .threads,
        None
    );
}

#[test]
fn the_environment_key_beats_the_files_key_file_and_the_flag_beats_both() {
    let dir = std::env::temp_dir().join(format!("tether-key-order-{}", std::process::id()));
    let file_key = SessionKey::generate();
    std::fs::write(&dir, file_key.to_base64()).unwrap();
    let env_key = SessionKey::generate().to_base64();
    let env_text = env_key.clone();
    let env = move |name: &str| (name == KEY_ENV).then(|| env_text.clone());
    let file = || parse_file(&format!("session_key_file = \"{}\"\n", dir.display()), "t").unwrap();
    let c = Config::from_parts(file(), with_backends(&["http://h:1"]), &env).unwrap();
    assert_eq!(
        (c.key_origin, c.keys[0].to_base64()),
        (KeyOrigin::Env, env_key)
    );
    let c = Config::from_parts(file(), with_backends(&["http://h:1"]), &no_env).unwrap();
    assert_eq!(
        (c.key_origin, c.keys[0].to_base64()),
        (KeyOrigin::File, file_key.to_base64())
    );
    let flag = Overrides {
        session_key_file: Some(dir.clone()),
        ..with_backends(&["http://h:1"])
    };
    let c = Config::from_parts(FileConfig::default(), flag, &env).unwrap();
    assert_eq!(c.key_origin, KeyOrigin::File);
    std::fs::remove_file(&dir).unwrap();
}

#[test]
fn operations_keys_parse_with_defaults_and_name_their_errors() {
    let c = Config::from_parts(
        FileConfig::default(),
        with_backends(&["http://h:1"]),
        &no_env,
    )
    .unwrap();
    assert_eq!(c.pools[0].health, HealthSettings::default());
    assert_eq!(c.pools[0].health.interval, Duration::from_secs(2));
    assert_eq!(c.drain.idle, Duration::from_secs(30));
    assert_eq!(c.drain.timeout, Duration::from_secs(600));
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.discovery.interval, Duration::from_secs(5));
    assert_eq!(c.limits.max_connections, 0);
    assert!(!c.log.access, "off unless asked for");

    let file = parse_file(
        r#"
backends = ["http://a:1", { url = "http://b:2", drain = true }, "dns://mcp.svc:8000", "srv://_mcp._tcp.svc"]
admin = { listen = "127.0.0.1:9090", token = "abc" }
shutdown_grace = "5s"
[discovery]
interval = "1s"
resolver = "10.0.0.10:53"
file = "/etc/tether/backends"
[health]
check = "http"
path = "/healthz"
fall = 5
[drain]
idle = "10s"
[limits]
max_connections = 1000
[log]
format = "json"
access = true
"#,
        "t",
    )
    .unwrap();
    let c = Config::from_parts(file, Overrides::default(), &no_env).unwrap();
    assert_eq!(c.pools[0].backends.len(), 2);
    assert!(c.pools[0].backends[1].drain && !c.pools[0].backends[0].drain);
    assert_eq!(c.pools[0].sources.len(), 3);
    assert_eq!(c.admin_token.as_deref(), Some("abc"));
    assert_eq!(c.admin, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(c.pools[0].health.check, crate::pool::health::Check::Http);
    assert_eq!((c.pools[0].health.fall, c.pools[0].health.rise), (5, 2));
    assert_eq!(c.drain.idle, Duration::from_secs(10));
    assert_eq!(c.limits.max_connections, 1000);
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.log.access);
    // The view hides the token and shows every source.
    let shown = c.to_toml();
    assert!(!shown.contains("abc\""), "{shown}");
    assert!(
        shown.contains("dns://mcp.svc:8000") && shown.contains("(drain)"),
        "{shown}"
    );

    // Only discovery, no static backend: fine.
    let file = parse_file("[discovery]\nfile = \"/x\"\n", "t").unwrap();
    assert!(Config::from_parts(file, Overrides::default(), &no_env).is_ok());

    let bad: [(&str, &str); 7] = [
        ("backends = [\"dns://name\"]", "backends[0]"),
        (
            "backends = [{ url = \"dns://n:1\", drain = true }]",
            "backends[0]",
        ),
        (
            "backends = [\"http://h:1\"]\n[health]\nfall = 0",
            "health.fall",
        ),
        (
            "backends = [\"http://h:1\"]\n[health]\npath = \"x\"",
            "health.path",
        ),
        (
            "backends = [\"http://h:1\"]\n[health]\ninterval = \"0s\"",
            "health.interval",
        ),
        (
            "backends = [\"http://h:1\"]\n[drain]\nidle = \"0s\"",
            "drain.idle",
        ),
        (
            "admin = { listen = \"127.0.0.1:1\", token = \"\" }\nbackends = [\"http://h:1\"]",
            "admin.token",
        ),
    ];
    for (text, key) in bad {
        let file = parse_file(text, "t").unwrap();
        let err = Config::from_parts(file, Overrides::default(), &no_env).unwrap_err();
        assert_eq!(err.key, key, "{text}: {err}");
    }
}

fn parsed(text: &str) -> Result<Config, ConfigError> {
    Config::from_parts(parse_file(text, "t.toml")?, Overrides::default(), &no_env)
}

#[test]
fn pools_and_routes_parse_as_the_issue_writes_them() {
    let c = parsed(
        r#"
[health]
fall = 7
[pools.main]
backends = ["http://10.0.0.1:3000", "dns://mcp.default.svc:3000"]
[pools.reports]
backends = ["http://10.0.0.9:3000"]
balance = "round-robin"
[pools.reports.health]
check = "tcp"

[[routes]]
method = "tools/call"
name = "report_*"
pool = "reports"

[[routes]]
pool = "main"
"#,
    )
    .unwrap();
    let names: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["main", "reports"]);
    let main = c.pool("main").unwrap();
    assert_eq!((main.backends.len(), main.sources.len()), (1, 1));
    assert_eq!(main.balance, Balance::LeastOutstanding);
    let reports = c.pool("reports").unwrap();
    assert_eq!(reports.balance, Balance::RoundRobin);
    // A pool's [health] keys over the top-level ones.
    assert_eq!(reports.health.check, crate::pool::health::Check::Tcp);
    assert_eq!((reports.health.fall, main.health.fall), (7, 7));
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[0].name.as_deref(), Some("report_*"));
    assert!(c.routes[0].validate && c.routes[1].validate);
    // The view shows both, and parses back as TOML.
    let toml = c.to_toml();
    assert!(toml.contains("[pools.reports]"), "{toml}");
    assert!(toml.parse::<toml::Table>().is_ok(), "{toml}");
}

#[test]
fn failover_is_set_at_the_top_and_per_pool() {
    let c = parsed(
        r#"
failover = "reinitialize"
backends = ["http://10.0.0.1:3000"]
[pools.stateful]
backends = ["http://10.0.0.9:3000"]
failover = "none"
[pools.other]
backends = ["http://10.0.0.10:3000"]
[[routes]]
pool = "default"
"#,
    )
    .unwrap();
    let of = |name| c.pool(name).unwrap().failover;
    assert_eq!(of(DEFAULT_POOL), Failover::Reinitialize);
    assert_eq!(of("stateful"), Failover::None);
    assert_eq!(of("other"), Failover::Reinitialize, "the top level's");
    assert!(c.to_toml().contains("failover = \"reinitialize\""));
    assert_eq!(
        parsed("backends = [\"http://h:1\"]\n").unwrap().pools[0].failover,
        Failover::None
    );
    let err = parsed("failover = \"retry\"\nbackends = [\"http://h:1\"]\n").unwrap_err();
    assert!(err.key.ends_with("failover"), "{err}");
    assert!(err.to_string().contains("reinitialize"), "{err}");
}

#[test]
fn backend_flags_alone_make_the_default_pool_with_a_catch_all_route() {
    let c = Config::from_parts(
        FileConfig::default(),
        with_backends(&["http://127.0.0.1:9001"]),
        &no_env,
    )
    .unwrap();
    assert_eq!(c.pools.len(), 1);
    assert_eq!(c.pools[0].name, DEFAULT_POOL);
    assert_eq!(c.routes, [RouteConfig::catch_all(DEFAULT_POOL.into())]);
    // Flags next to named pools: the default pool, and it is the fallback.
    let file = parse_file("[pools.b]\nbackends = [\"http://h:2\"]\n", "t").unwrap();
    let c = Config::from_parts(file, with_backends(&["http://h:1"]), &no_env).unwrap();
    assert_eq!(c.routes, [RouteConfig::catch_all(DEFAULT_POOL.into())]);
}

#[test]
fn pool_and_route_errors_name_their_key() {
    for (text, key) in [
        (
            "[pools.a]\nbackends = [\"http://h:1\"]\n[pools.b]\nbackends = [\"http://h:2\"]\n",
            "routes",
        ),
        (
            "[pools.a]\nbackends = [\"http://h:1\"]\n[[routes]]\npool = \"nope\"\n",
            "routes[0].pool",
        ),
        ("[pools.a]\nbackends = []\n", "pools.a.backends"),
        ("[pools.\"a b\"]\nbackends = [\"http://h:1\"]\n", "pools.a b"),
        (
            "backends = [\"http://h:1\"]\n[pools.default]\nbackends = [\"http://h:2\"]\n",
            "pools.default",
        ),
        (
            "[pools.a]\nbackends = [\"http://h:1\"]\n[[routes]]\npath_prefix = \"mcp\"\npool = \"a\"\n",
            "routes[0].path_prefix",
        ),
        (
            "[pools.a]\nbackends = [\"http://h:1\"]\n[[routes]]\nname = \"\"\npool = \"a\"\n",
            "routes[0].name",
        ),
        (
            "[pools.a]\nbackends = [\"ftp://h:1\"]\n",
            "pools.a.backends[0]",
        ),
        (
            "[pools.a]\nbackends = [\"http://h:1\"]\n[pools.a.health]\nfall = 0\n",
            "pools.a.health.fall",
        ),
        (
            "backends = [\"http://h:1\"]\n[pools.b]\nbackends = [\"http://H:1\"]\n",
            "pools.b.backends",
        ),
        (
            "backends = [\"http://h:1\"]\n[[routes]]\npool = \"default\"\nsoft_affinity = \"ip\"\n",
            "routes[0].soft_affinity",
        ),
        (
            "backends = [\"http://h:1\"]\n[[routes]]\npool = \"default\"\nload_factor = 2.0\n",
            "routes[0].load_factor",
        ),
        (
            "backends = [\"http://h:1\"]\n[[routes]]\npool = \"default\"\nsoft_affinity = \"authorization\"\nload_factor = 0.5\n",
            "routes[0].load_factor",
        ),
        (
            "backends = [\"http://h:1\"]\n[[routes]]\npool = \"default\"\nsticky_cookie = \"a;b\"\n",
            "routes[0].sticky_cookie",
        ),
    ] {
        let err = parsed(text).unwrap_err();
        assert_eq!(err.key, key, "{text}: {err}");
    }
}

#[test]
fn admin_allowed_hosts_are_names_kept_in_lower_case_and_shown() {
    let c = parsed(
        "backends = [\"http://h:1\"]\n[admin]\nlisten = \"127.0.0.1:9090\"\n\
         allowed_hosts = [\"Tether-Admin.Internal\", \"ops.example:8443\"]\n",
    )
    .unwrap();
    assert_eq!(
        c.admin_allowed_hosts,
        ["tether-admin.internal", "ops.example:8443"]
    );
    let view = serde_json::to_value(c.view()).unwrap();
    assert_eq!(
        view["admin_allowed_hosts"],
        serde_json::json!(["tether-admin.internal", "ops.example:8443"])
    );
    let none = parsed("backends = [\"http://h:1\"]\nadmin = \"127.0.0.1:9090\"\n").unwrap();
    assert!(none.admin_allowed_hosts.is_empty());
    assert!(serde_json::to_value(none.view()).unwrap()["admin_allowed_hosts"].is_null());
    for bad in [
        "http://ops.example",
        "ops.example/status",
        "*.example",
        "",
        "ops.example:http",
        "ops.example:70000",
        ".example",
    ] {
        let text = format!(
            "backends = [\"http://h:1\"]\n[admin]\nlisten = \"127.0.0.1:9090\"\nallowed_hosts = [\"{bad}\"]\n"
        );
        let err = parsed(&text).unwrap_err();
        assert_eq!(err.key, "admin.allowed_hosts", "{bad:?}: {err}");
    }
}

#[test]
fn protocol_reaches_backends_and_discovery_sources_and_the_view() {
    use crate::pool::discovery::Source;
    use crate::pool::Protocol;
    let c = parsed(
        r#"backends = ["http://a:1", { url = "https://b:443", protocol = "h2" },
                      { url = "dns://svc:80", protocol = "h2" }, "srv://_m._tcp.example.com"]
[pools.p]
backends = [{ url = "http://c:1", protocol = "http/1.1", drain = true }]
"#,
    )
    .unwrap();
    let d = c.pool(DEFAULT_POOL).unwrap();
    let protocols: Vec<_> = d.backends.iter().map(|b| b.protocol).collect();
    assert_eq!(protocols, [Protocol::Http1, Protocol::H2]);
    assert_eq!(d.backends[1].entry().protocol, Protocol::H2);
    assert!(matches!(
        d.sources[0],
        Source::Dns {
            protocol: Protocol::H2,
            ..
        }
    ));
    assert_eq!(d.sources[1].protocol(), Protocol::Http1);
    assert_eq!(
        d.listed(),
        [
            "http://a:1",
            "https://b:443 (h2)",
            "dns://svc:80 (h2)",
            "srv://_m._tcp.example.com"
        ]
    );
    let p = c.pool("p").unwrap();
    assert_eq!(p.backends[0].protocol, Protocol::Http1);
    assert_eq!(p.listed(), ["http://c:1 (drain)"]);
    // The identity does not depend on the protocol.
    assert_eq!(d.backends[1].authority.as_str(), "b:443");
    let err = parsed(r#"backends = [{ url = "http://a:1", protocol = "h2c" }]"#).unwrap_err();
    assert_eq!(err.key, "backends[0].protocol");
}
