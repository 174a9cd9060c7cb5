//! The verdict logic without a network: exit codes, stickiness, version
//! negotiation, hold and keep-alive judgements, forged ids, the report.

use std::time::Duration;

use super::hold::{first_event_verdict, hold_verdict, keepalive_verdict, worse, Held, Outcome};
use super::streamable::{sticky_verdict, version_verdict, Failure};
use super::*;

fn fail(status: Option<u16>) -> Failure {
    Failure {
        status,
        what: format!("answered {status:?}"),
    }
}

#[test]
fn only_a_failed_check_fails_the_run() {
    let mk = |v| Check::new("x", v, "");
    assert_eq!(exit_code(&[]), 0);
    assert_eq!(
        exit_code(&[
            mk(Verdict::Pass),
            mk(Verdict::Warn),
            mk(Verdict::NotApplicable)
        ]),
        0
    );
    assert_eq!(exit_code(&[mk(Verdict::Pass), mk(Verdict::Fail)]), 1);
    assert_eq!(worse(Verdict::Warn, Verdict::Fail), Verdict::Fail);
    assert_eq!(worse(Verdict::Pass, Verdict::NotApplicable), Verdict::Pass);
}

#[test]
fn stickiness_counts_failed_sessions_by_status() {
    let ok = sticky_verdict("s", 12, 3, &[]);
    assert_eq!(ok.verdict, Verdict::Pass);
    assert_eq!(ok.data["failed"], 0);
    let bad = sticky_verdict("s", 12, 3, &[fail(Some(404)), fail(Some(404)), fail(None)]);
    assert_eq!(bad.verdict, Verdict::Fail);
    assert_eq!(bad.data["failed"], 3);
    assert_eq!(bad.data["failures"]["404"], 2);
    assert_eq!(bad.data["failures"]["no answer"], 1);
    assert!(bad.saw.contains("3 of 12 sessions failed"), "{}", bad.saw);
}

#[test]
fn version_negotiation_verdicts() {
    let v = |version, good, bogus| version_verdict("v", version, good, bogus).verdict;
    assert_eq!(v("2025-11-25", Ok(()), Err(fail(Some(400)))), Verdict::Pass);
    assert_eq!(v("2025-11-25", Ok(()), Ok(())), Verdict::Warn);
    assert_eq!(
        v("2025-11-25", Err(fail(Some(400))), Err(fail(Some(400)))),
        Verdict::Fail
    );
    assert_eq!(v("2025-03-26", Ok(()), Ok(())), Verdict::Pass);
    assert_eq!(v("1.0", Ok(()), Err(fail(Some(400)))), Verdict::Warn);
    assert_eq!(v("", Ok(()), Ok(())), Verdict::Warn);
}

#[test]
fn a_cut_stream_fails_the_hold_and_bursts_warn() {
    let hold = Duration::from_secs(3);
    let held = |outcome, keepalives: &[u64]| Held {
        kind: "legacy SSE stream",
        outcome,
        keepalives: keepalives
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
    };
    assert_eq!(hold_verdict(hold, &[]).verdict, Verdict::NotApplicable);
    assert_eq!(
        hold_verdict(hold, &[held(Outcome::Survived, &[])]).verdict,
        Verdict::Pass
    );
    let cut = hold_verdict(
        hold,
        &[
            held(Outcome::Survived, &[]),
            held(Outcome::Cut(Duration::from_secs(1), "closed".into()), &[]),
        ],
    );
    assert_eq!(cut.verdict, Verdict::Fail);
    assert!(cut.saw.contains("cut after 1.0 s"), "{}", cut.saw);
    assert_eq!(
        hold_verdict(hold, &[held(Outcome::Unavailable("405".into()), &[])]).verdict,
        Verdict::NotApplicable
    );
    assert_eq!(
        hold_verdict(hold, &[held(Outcome::Broken("404".into()), &[])]).verdict,
        Verdict::Fail
    );

    assert_eq!(
        keepalive_verdict(hold, &[held(Outcome::Survived, &[])]).verdict,
        Verdict::NotApplicable
    );
    assert_eq!(
        keepalive_verdict(hold, &[held(Outcome::Survived, &[1000, 2000])]).verdict,
        Verdict::Pass
    );
    assert_eq!(
        keepalive_verdict(hold, &[held(Outcome::Survived, &[2900, 2910, 2920])]).verdict,
        Verdict::Warn
    );
}

#[test]
fn first_event_is_slow_past_a_second() {
    assert_eq!(first_event_verdict(&[]).verdict, Verdict::NotApplicable);
    assert_eq!(
        first_event_verdict(&[("a", Duration::from_millis(5))]).verdict,
        Verdict::Pass
    );
    let slow = first_event_verdict(&[
        ("a", Duration::from_millis(5)),
        ("b", Duration::from_millis(1500)),
    ]);
    assert_eq!(slow.verdict, Verdict::Warn);
}

#[test]
fn forged_ids_keep_the_shape_and_differ() {
    for real in [
        "0123456789abcdef0123456789abcdef",
        "3f2a-11ee-b",
        "t1.AbC_dEf-123xyz",
        "x",
        "",
    ] {
        let forged = forge_like(real);
        assert_ne!(forged, real);
        if real.len() > 4 {
            assert_eq!(forged.len(), real.len(), "{real} -> {forged}");
            let kinds = |s: &str| {
                s.chars()
                    .map(|c| c.is_ascii_alphanumeric())
                    .collect::<Vec<_>>()
            };
            assert_eq!(kinds(&forged), kinds(real));
        }
    }
    let hex = forge_like("0123456789abcdef0123456789abcdef");
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{hex}");
    let url = url::Url::parse("http://h/messages/?session_id=0123456789abcdef0123456789abcdef&x=1")
        .unwrap();
    let forged = legacy::forge_endpoint(&url);
    assert_eq!(forged.path(), "/messages/");
    assert_ne!(forged, url);
    assert!(forged.query().unwrap().ends_with("&x=1"));
    let path = url::Url::parse("http://h/message/abcdef0123456789").unwrap();
    let forged = legacy::forge_endpoint(&path);
    assert!(forged.path().starts_with("/message/") && forged.path() != path.path());
}

#[test]
fn bad_headers_and_urls_are_usage_errors() {
    assert!(client::parse_header("Authorization: Bearer x").is_ok());
    assert!(client::parse_header("no colon").is_err());
    assert!(client::parse_header("bad name: x").is_err());
    assert!(client::parse_header("X: \u{7f}").is_err());
    let args = |url: &str| DoctorArgs {
        url: url.into(),
        sessions: 1,
        calls: 1,
        hold: Duration::ZERO,
        sse_paths: vec![],
        headers: vec![],
        json: true,
        timeout: Duration::from_secs(1),
    };
    assert!(prepare(&args("ftp://h/x")).is_err());
    assert!(prepare(&args("not a url")).is_err());
    assert!(prepare(&args("http://127.0.0.1:1/mcp")).is_ok());
    let mut bad = args("http://h/mcp");
    bad.sse_paths = vec!["sse".into()];
    assert!(prepare(&bad).is_err());
}

#[test]
fn the_report_lists_every_check_in_both_forms() {
    let report = Report {
        url: "http://h/mcp".into(),
        exit: 1,
        elapsed_ms: 1500,
        checks: vec![
            Check::new("era.modern", Verdict::Pass, "versions 2026-07-28"),
            Check::new("stickiness.streamable", Verdict::Fail, "not sticky")
                .with(serde_json::json!({"failed": 8})),
            Check::new("sse.keepalive", Verdict::NotApplicable, "none"),
        ],
    };
    let parsed: serde_json::Value = serde_json::from_str(&report::json(&report)).unwrap();
    assert_eq!(parsed["exit"], 1);
    assert_eq!(parsed["checks"][1]["verdict"], "fail");
    assert_eq!(parsed["checks"][1]["data"]["failed"], 8);
    assert_eq!(parsed["checks"][2]["verdict"], "n/a");
    let table = report::table(&report);
    assert!(
        table.contains("stickiness.streamable  fail     not sticky"),
        "{table}"
    );
    assert!(
        table.ends_with("1 passed, 1 failed, 0 warnings, 1 not applicable: exit 1"),
        "{table}"
    );
}

#[test]
fn what_a_server_says_is_shown_with_its_control_characters_escaped() {
    let hostile = "\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m\rforged line\nnext";
    let clipped = client::clip(hostile);
    assert!(!clipped.chars().any(char::is_control), "{clipped:?}");
    assert!(
        clipped.starts_with("\\x1b]0;owned\\x07\\x1b[2J\\u{9b}31m\\x0dforged line\\x0anext"),
        "{clipped}"
    );
    assert_eq!(client::clip("  plain été text  "), "plain été text");
    let long = client::clip(&"\u{1b}".repeat(1000));
    assert!(long.len() < 1000 && long.ends_with("..."), "{long}");
    // The table escapes a check's line even if it quoted a server unclipped.
    let report = Report {
        url: "http://h/mcp".into(),
        exit: 0,
        elapsed_ms: 1,
        checks: vec![Check::new("origin", Verdict::Warn, hostile)],
    };
    let table = report::table(&report);
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n'),
        "{table:?}"
    );
    assert_eq!(table.lines().count(), 6, "{table}");
}

#[test]
fn keepalives_are_counted_in_constant_space() {
    let mut k = hold::Keepalives::default();
    for ms in 0..1_000_000u64 {
        k.record(Duration::from_micros(ms * 20));
    }
    assert_eq!(k.count, 1_000_000);
    assert_eq!(k.first, Some(Duration::ZERO));
    assert_eq!(k.min_gap, Some(Duration::from_micros(20)));
    assert!(k.burst());
    let spaced: hold::Keepalives = [1000, 2000, 3500]
        .into_iter()
        .map(Duration::from_millis)
        .collect();
    assert_eq!(
        (spaced.count, spaced.min_gap),
        (3, Some(Duration::from_secs(1)))
    );
    assert!(!spaced.burst());
}

#[test]
fn a_silent_stream_at_the_url_of_a_streamable_server_is_its_own_get_stream() {
    let url = url::Url::parse("http://h/mcp").unwrap();
    let sse = url::Url::parse("http://h/sse").unwrap();
    let silent = |sse_url: &url::Url, at_url| legacy::Probe::Silent {
        sse_url: sse_url.clone(),
        saw: "200 text/event-stream, then no endpoint event".into(),
        at_url,
    };
    let served = streamable::Probe::Stateless(streamable::Opened {
        session: None,
        version: "2025-11-25".into(),
        first_event: None,
    });
    let not_served = streamable::Probe::NotServed("404".into());
    let own = silent(&url, true).settle(&served).check();
    assert_eq!(own.verdict, Verdict::NotApplicable, "{}", own.saw);
    assert!(own.saw.contains("own GET stream"), "{}", own.saw);
    // Without Streamable HTTP there, or at /sse, a silent stream is still a buffering path.
    assert_eq!(
        silent(&url, true).settle(&not_served).check().verdict,
        Verdict::Fail
    );
    assert_eq!(
        silent(&sse, false).settle(&served).check().verdict,
        Verdict::Fail
    );
}

#[test]
fn the_backstop_covers_every_wait_of_the_longest_chain() {
    let o = |calls, hold, timeout| Options {
        url: url::Url::parse("http://h/mcp").unwrap(),
        sessions: 12,
        calls,
        hold: Duration::from_secs(hold),
        sse_paths: vec![],
        timeout: Duration::from_secs(timeout),
    };
    // At the defaults the serial chain is about 38 timeouts and the hold.
    let defaults = run_limit(&o(3, 70, 10));
    assert!(
        defaults >= Duration::from_secs(70 + 38 * 10),
        "{defaults:?}"
    );
    // It grows with the calls, and never overflows.
    assert!(run_limit(&o(1000, 70, 10)) > run_limit(&o(3, 70, 10)) + Duration::from_secs(997 * 40));
    let _ = run_limit(&o(usize::MAX, u64::MAX / 4, u64::MAX / 4));
}
