//! What Tether exposes, read from a live `/metrics` text and from
//! `docs/metrics.md`, and the checks of a PromQL expression against it.
//!
//! A metric is known by the sample names its `# TYPE` line allows (a counter
//! `tether_x` is queried as `tether_x_total`). Its labels are those of its
//! samples; a family with no sample yet (no TLS listener, no session store in
//! the test) falls back to the labels its docs row lists, and a docs row must
//! list what the samples show. Label values: those seen, and the lists in
//! the docs (`reason` (`format`, `forged`, ...)).

use std::collections::{BTreeMap, BTreeSet};

use super::promql;

/// Labels Prometheus adds to every scraped series.
pub const TARGET_LABELS: &[&str] = &["instance", "job"];
/// Prometheus's own series that rules may name, with their labels.
const PROMETHEUS_OWN: &[(&str, &[&str])] = &[("up", &["instance", "job"])];

#[derive(Debug, Default)]
struct Metric {
    /// Label name -> values seen in samples.
    seen: BTreeMap<String, BTreeSet<String>>,
    sampled: bool,
}

/// A docs row: label name -> the values it lists (empty: not a closed list).
type DocsRow = BTreeMap<String, BTreeSet<String>>;

#[derive(Debug, Default)]
pub struct Catalogue {
    /// By queryable sample name.
    metrics: BTreeMap<String, Metric>,
    /// By the name in the docs table's first column.
    docs: BTreeMap<String, DocsRow>,
}

impl Catalogue {
    pub fn new(exposition: &str, docs: &str) -> Catalogue {
        let mut c = Catalogue::default();
        for line in exposition.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (family, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total", "_created"],
                    "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
                    "summary" => &["", "_sum", "_count", "_created"],
                    "info" => &["_info"],
                    _ => &[""],
                };
                for s in suffixes {
                    c.metrics.entry(format!("{family}{s}")).or_default();
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                c.add_sample(line);
            }
        }
        for line in docs.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if let [_, name, _kind, labels, ..] = cells.as_slice() {
                if let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
                    c.docs.insert(name.to_owned(), docs_labels(labels));
                }
            }
        }
        c
    }

    fn add_sample(&mut self, line: &str) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let metric = self.metrics.entry(line[..name_end].to_owned()).or_default();
        metric.sampled = true;
        let Some(body) = line[name_end..].strip_prefix('{') else {
            return;
        };
        // Label values here are backend addresses, reasons, numbers: no `",` inside.
        let body = body.split("} ").next().unwrap_or("");
        for pair in body.split("\",").filter(|p| !p.is_empty()) {
            if let Some((label, value)) = pair.split_once("=\"") {
                let value = value.trim_end_matches('"');
                let values = metric.seen.entry(label.to_owned()).or_default();
                values.insert(value.to_owned());
            }
        }
    }

    /// Label names of `metric`, and whether they come from samples (else the docs).
    fn labels(&self, metric: &str) -> (BTreeSet<String>, bool) {
        match self.metrics.get(metric) {
            Some(m) if m.sampled => (m.seen.keys().cloned().collect(), true),
            _ => {
                let row = self.docs.get(metric);
                (
                    row.map(|r| r.keys().cloned().collect()).unwrap_or_default(),
                    false,
                )
            }
        }
    }

    /// Values `metric` can carry in `label`: those seen and those the docs list.
    fn values(&self, metric: &str, label: &str) -> BTreeSet<String> {
        let seen = self.metrics.get(metric).and_then(|m| m.seen.get(label));
        let listed = self.docs.get(metric).and_then(|r| r.get(label));
        seen.into_iter().chain(listed).flatten().cloned().collect()
    }

    /// Metrics with a `# TYPE` line but no sample in the exposition.
    pub fn unsampled<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let names = names.into_iter();
        let unsampled = names.filter(|n| self.metrics.get(*n).is_some_and(|m| !m.sampled));
        unsampled.map(str::to_owned).collect()
    }

    /// Every problem of `expr` (found at `place`), one line each. Returns the
    /// labels its result keeps (for `{{ $labels.x }}` in alert annotations).
    pub fn check(&self, place: &str, expr: &str, problems: &mut Vec<String>) -> BTreeSet<String> {
        let parsed = match promql::parse(expr) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("{place}: cannot read {expr:?}: {e}"));
                return BTreeSet::new();
            }
        };
        let mut kept: BTreeSet<String> = parsed.by_labels.iter().cloned().collect();
        let mut every_label = BTreeSet::new();
        for s in &parsed.selectors {
            let labels = self.check_selector(place, s, problems);
            if parsed.by_labels.is_empty() {
                kept.extend(labels.iter().cloned());
            }
            every_label.extend(labels);
        }
        for label in &parsed.copied_labels {
            if !every_label.contains(label) {
                problems.push(format!("{place}: group_left/right ({label}) on no metric"));
            }
        }
        kept
    }

    /// Checks one selector; returns the labels its metric has.
    fn check_selector(
        &self,
        place: &str,
        s: &promql::Selector,
        problems: &mut Vec<String>,
    ) -> BTreeSet<String> {
        let metric = s.metric.as_str();
        let target = TARGET_LABELS.iter().map(|l| l.to_string());
        if let Some((_, labels)) = PROMETHEUS_OWN.iter().find(|(n, _)| *n == metric) {
            let labels: BTreeSet<String> = labels.iter().map(|l| l.to_string()).collect();
            for l in s.grouping.iter().chain(s.matchers.iter().map(|m| &m.label)) {
                if !labels.contains(l) {
                    problems.push(format!("{place}: {metric} has no label {l}"));
                }
            }
            return labels;
        }
        if !self.metrics.contains_key(metric) {
            let hint = match self.metrics.contains_key(&format!("{metric}_total")) {
                true => format!(" (a counter: {metric}_total)"),
                false => String::new(),
            };
            problems.push(format!("{place}: no metric {metric} in /metrics{hint}"));
            return BTreeSet::new();
        }
        let Some(row) = self.docs.get(metric) else {
            problems.push(format!("{place}: {metric} has no row in docs/metrics.md"));
            return BTreeSet::new();
        };
        let (own, sampled) = self.labels(metric);
        let documented: BTreeSet<String> = row.keys().cloned().collect();
        if sampled && own != documented {
            problems.push(format!(
                "{metric}: /metrics shows labels {own:?}, docs/metrics.md lists {documented:?}"
            ));
        }
        let known: BTreeSet<String> = own.into_iter().chain(target).collect();
        for label in &s.grouping {
            if !known.contains(label) {
                problems.push(format!(
                    "{place}: {metric} has no label {label} to group by"
                ));
            }
        }
        for m in &s.matchers {
            if !known.contains(&m.label) {
                problems.push(format!("{place}: {metric} has no label {}", m.label));
            } else if !TARGET_LABELS.contains(&m.label.as_str()) {
                self.check_value(place, metric, m, problems);
            }
        }
        known
    }

    /// A value matched with `=`/`!=`, or each word of an `a|b` regex, must be
    /// one the metric can carry. Grafana variables and other regexes are not checked.
    fn check_value(
        &self,
        place: &str,
        metric: &str,
        m: &promql::Matcher,
        problems: &mut Vec<String>,
    ) {
        let word =
            |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let wanted: Vec<&str> = match m.op.as_str() {
            "=" | "!=" if m.value.contains('$') || m.value.is_empty() => return,
            "=" | "!=" => vec![m.value.as_str()],
            _ if m.value.split('|').all(word) => m.value.split('|').collect(),
            _ => return,
        };
        let can = self.values(metric, &m.label);
        for v in wanted {
            if !can.contains(v) {
                problems.push(format!(
                    "{place}: {metric}{{{}}} is never {v:?} (known: {can:?})",
                    m.label
                ));
            }
        }
    }
}

/// The labels cell of a docs row: "`backend`, `kind` (`refused`, `connect`)".
/// A parenthesised part that is only back-quoted words lists the label's values.
fn docs_labels(cell: &str) -> DocsRow {
    let mut row = DocsRow::new();
    let mut last: Option<String> = None;
    let mut rest = cell;
    while let Some(c) = rest.chars().next() {
        if c == '`' {
            let end = rest[1..].find('`').map_or(rest.len(), |e| e + 1);
            let name = rest[1..end].to_owned();
            row.entry(name.clone()).or_default();
            last = Some(name);
            rest = rest.get(end + 1..).unwrap_or("");
        } else if c == '(' {
            let end = rest.find(')').unwrap_or(rest.len());
            let inside = &rest[1..end];
            let items: Vec<&str> = inside.split(',').map(str::trim).collect();
            let quoted = |i: &&str| i.len() > 2 && i.starts_with('`') && i.ends_with('`');
            if let (Some(label), true) = (&last, items.iter().all(quoted)) {
                let values = items.iter().map(|i| i.trim_matches('`').to_owned());
                row.entry(label.clone()).or_default().extend(values);
            }
            rest = rest.get(end + 1..).unwrap_or("");
        } else {
            rest = &rest[c.len_utf8()..];
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# HELP tether_requests Requests.\n# TYPE tether_requests counter\n\
        tether_requests_total{backend=\"127.0.0.1:1\",status=\"200\"} 3\n\
        # TYPE tether_backend_state gauge\n\
        tether_backend_state{backend=\"127.0.0.1:1\",state=\"active\"} 1\n\
        # TYPE tether_tls_handshakes counter\n# EOF\n";
    const DOCS: &str = "| metric | type | labels | meaning |\n|---|---|---|---|\n\
        | `tether_requests_total` | counter | `backend`, `status` | responses |\n\
        | `tether_backend_state` | gauge | `backend`, `state` (`active`, `draining`, `down`) | state |\n\
        | `tether_tls_handshakes_total` | counter | `version` (`1.3`, `1.2`) | handshakes |\n";

    fn problems(expr: &str) -> Vec<String> {
        let mut out = Vec::new();
        Catalogue::new(EXPOSITION, DOCS).check("test", expr, &mut out);
        out
    }

    #[test]
    fn a_sound_expression_has_no_problem() {
        for expr in [
            r#"sum by (backend, status) (rate(tether_requests_total{instance=~"$i"}[5m]))"#,
            r#"max by (instance) (tether_backend_state{state=~"draining|down"}) == 1"#,
            r#"sum by (version) (rate(tether_tls_handshakes_total[5m]))"#,
            r#"up{job="tether"} == 0"#,
        ] {
            assert_eq!(problems(expr), Vec::<String>::new(), "{expr}");
        }
    }

    #[test]
    fn a_renamed_metric_is_reported() {
        let found = problems("sum(rate(tether_request_total[5m]))");
        assert!(
            found[0].contains("no metric tether_request_total"),
            "{found:?}"
        );
        // The family name is not what Prometheus stores for a counter.
        let found = problems("rate(tether_requests[5m])");
        assert!(found[0].contains("tether_requests_total"), "{found:?}");
        let found = problems("process_cpu_seconds_total");
        assert!(
            found[0].contains("no metric process_cpu_seconds_total"),
            "{found:?}"
        );
    }

    #[test]
    fn a_missing_label_or_value_is_reported() {
        let found = problems("sum by (pool) (rate(tether_requests_total[5m]))");
        assert!(found[0].contains("no label pool"), "{found:?}");
        let found = problems(r#"tether_backend_state{status="active"}"#);
        assert!(found[0].contains("no label status"), "{found:?}");
        let found = problems(r#"tether_backend_state{state="unhealthy"}"#);
        assert!(found[0].contains("never \"unhealthy\""), "{found:?}");
        let found = problems(r#"tether_backend_state{state=~"down|gone"}"#);
        assert!(found[0].contains("never \"gone\""), "{found:?}");
        // An unsampled family is checked against its docs row.
        let found = problems(r#"rate(tether_tls_handshakes_total{version="1.1"}[5m])"#);
        assert!(found[0].contains("never \"1.1\""), "{found:?}");
        let found = problems(r#"up{pool="a"}"#);
        assert!(found[0].contains("up has no label pool"), "{found:?}");
    }

    #[test]
    fn docs_that_disagree_with_the_samples_are_reported() {
        let docs = DOCS.replace("`backend`, `status`", "`backend`, `code`");
        let mut found = Vec::new();
        Catalogue::new(EXPOSITION, &docs).check("t", "tether_requests_total", &mut found);
        assert!(found[0].contains("docs/metrics.md lists"), "{found:?}");
        let mut found = Vec::new();
        Catalogue::new(EXPOSITION, "").check("t", "tether_requests_total", &mut found);
        assert!(found[0].contains("no row in docs/metrics.md"), "{found:?}");
    }

    #[test]
    fn docs_label_cells_are_read() {
        let row = docs_labels("`route` (its index in `[[routes]]`), `pool`");
        assert_eq!(row.keys().collect::<Vec<_>>(), ["pool", "route"]);
        assert!(row.values().all(|v| v.is_empty()));
        let row = docs_labels("`backend`, `kind` (`refused`, `tls`)");
        assert_eq!(row["kind"].iter().collect::<Vec<_>>(), ["refused", "tls"]);
        assert!(docs_labels("").is_empty());
    }
}
