use super::*;

fn route(f: impl FnOnce(&mut RouteConfig)) -> RouteConfig {
    let mut r = RouteConfig::catch_all("main".into());
    f(&mut r);
    r
}

fn routes(list: &[RouteConfig]) -> Routes {
    Routes::new(list, &["main", "reports"], &Metrics::default())
}

fn input<'a>(path: &'a str, method: Option<&'a str>, name: Option<&'a str>) -> Input<'a> {
    Input {
        path: path.as_bytes(),
        host: Some(b"mcp.example.com:8443"),
        method: method.map(str::as_bytes),
        name: name.map(str::as_bytes),
    }
}

#[test]
fn the_first_matching_route_wins_and_the_fallback_takes_the_rest() {
    let table = routes(&[
        route(|r| {
            r.method = Some("tools/call".into());
            r.name = Some("report_*".into());
            r.pool = "reports".into();
        }),
        RouteConfig::catch_all("main".into()),
    ]);
    let pool = |i: Input| table.choose(&i).map(|r| r.pool);
    assert_eq!(
        pool(input("/mcp", Some("tools/call"), Some("report_q3"))),
        Some(1)
    );
    assert_eq!(
        pool(input("/mcp", Some("tools/call"), Some("report_"))),
        Some(1)
    );
    assert_eq!(
        pool(input("/mcp", Some("tools/call"), Some("weekly_report"))),
        Some(0)
    );
    assert_eq!(
        pool(input("/mcp", Some("tools/list"), Some("report_q3"))),
        Some(0)
    );
    assert_eq!(pool(input("/mcp", None, Some("report_q3"))), Some(0));
    assert_eq!(pool(input("/mcp", Some("tools/call"), None)), Some(0));
    assert!(table.choose(&input("/mcp", None, None)).is_some());
}

#[test]
fn without_a_fallback_an_unmatched_request_has_no_route() {
    let table = routes(&[route(|r| r.path_prefix = Some("/reports/".into()))]);
    assert!(table.choose(&input("/reports/mcp", None, None)).is_some());
    assert!(table.choose(&input("/mcp", None, None)).is_none());
    assert!(table.choose(&input("/reports", None, None)).is_none());
}

#[test]
fn hosts_match_without_case_or_port_and_by_suffix() {
    for (pattern, host, expected) in [
        ("mcp.example.com", "MCP.example.com:8443", true),
        ("mcp.example.com", "mcp.example.com.", true),
        ("mcp.example.com:8443", "mcp.example.com:8443", true),
        ("mcp.example.com:9000", "mcp.example.com:8443", false),
        ("*.example.com", "a.b.example.com", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", "badexample.com", false),
        ("[::1]", "[::1]:80", true),
        ("other.com", "mcp.example.com", false),
    ] {
        assert_eq!(
            host_matches(pattern.as_bytes(), host.as_bytes()),
            expected,
            "{pattern} vs {host}"
        );
    }
}

#[test]
fn globs() {
    for (pattern, text, expected) in [
        ("report_*", "report_q3", true),
        ("*", "", true),
        ("", "", true),
        ("", "a", false),
        ("a*b*c", "aXbYc", true),
        ("a*b*c", "aXbY", false),
        ("*_admin", "x_admin", true),
        ("*_admin", "x_admins", false),
        ("exact", "exact", true),
        ("exact", "Exact", false),
        ("a**b", "ab", true),
    ] {
        assert_eq!(
            glob(pattern.as_bytes(), text.as_bytes()),
            expected,
            "{pattern} vs {text}"
        );
    }
}

#[test]
fn a_route_naming_an_unknown_pool_is_skipped() {
    let table = routes(&[route(|r| r.pool = "gone".into())]);
    assert!(table.is_empty());
}

#[test]
fn cookies_and_headers_are_found_as_servers_find_them() {
    let head = "GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1; tether=t1.abc ;b=2\r\nCookie: tether=second\r\nX-Tenant:  acme \r\n\r\n";
    let parsed = crate::http1::head::RequestHead::parse(head.as_bytes(), 1 << 16)
        .unwrap()
        .unwrap();
    let buf = head.as_bytes();
    assert_eq!(cookie(buf, &parsed.fields, b"tether"), Some(&b"t1.abc"[..]));
    assert_eq!(cookie(buf, &parsed.fields, b"b"), Some(&b"2"[..]));
    assert_eq!(cookie(buf, &parsed.fields, b"teth"), None);
    assert_eq!(header(buf, &parsed.fields, b"x-tenant"), Some(&b"acme"[..]));
    assert_eq!(header(buf, &parsed.fields, b"authorization"), None);
}
