//! A small PromQL reader for the deploy checks: it finds every series
//! selector in an expression (the metric, its label matchers) and the labels
//! that `by`/`without`/`on`/`ignoring` clauses apply to it. Not a full
//! parser (promtool's job): enough to tell which metrics and labels an
//! expression depends on, and to fail loudly on what it cannot read.

/// `label op "value"` inside a selector's braces.
#[derive(Clone, Debug, PartialEq)]
pub struct Matcher {
    pub label: String,
    pub op: String,
    pub value: String,
}

/// One series selector: `metric{matchers}` and the grouping labels applied to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
    /// Labels named by `by (...)`/`without (...)` around it, and `on (...)`/`ignoring (...)`
    /// anywhere in the expression (those must hold on both sides).
    pub grouping: Vec<String>,
}

/// What an expression depends on.
#[derive(Debug, Default)]
pub struct Expr {
    pub selectors: Vec<Selector>,
    /// Labels of every `by (...)` clause: what an aggregation keeps.
    pub by_labels: Vec<String>,
    /// `group_left (...)`/`group_right (...)` labels: each must be on some selector.
    pub copied_labels: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    /// A number or duration, a `[range]`, or a Grafana `$variable`.
    Atom,
    Punct(String),
}

const AGGREGATORS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2"];
const CLAUSES: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn tokenize(expr: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            let mut value = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated string in {expr:?}")),
                    Some(&q) if q == c => break,
                    Some('\\') if c != '`' => {
                        value.extend(chars.get(i + 1));
                        i += 2;
                    }
                    Some(&other) => {
                        value.push(other);
                        i += 1;
                    }
                }
            }
            i += 1;
            out.push(Tok::Str(value));
        } else if c == '[' {
            let end = chars[i..].iter().position(|&c| c == ']');
            let end = end.ok_or_else(|| format!("unclosed [ in {expr:?}"))?;
            i += end + 1;
            out.push(Tok::Atom);
        } else if c.is_ascii_digit() || c == '.' || c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            }
            while i < chars.len() && (ident_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Atom);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = match two.as_str() {
                "==" | "!=" | "=~" | "!~" | ">=" | "<=" => two,
                _ => c.to_string(),
            };
            i += op.len();
            out.push(Tok::Punct(op));
        }
    }
    Ok(out)
}

fn is(tok: Option<&Tok>, punct: &str) -> bool {
    matches!(tok, Some(Tok::Punct(p)) if p == punct)
}

/// For every `(`, the index of its `)`, and the other way round.
fn pairs(toks: &[Tok]) -> Result<Vec<Option<usize>>, String> {
    let mut matching = vec![None; toks.len()];
    let mut open = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if is(Some(t), "(") {
            open.push(i);
        } else if is(Some(t), ")") {
            let o = open.pop().ok_or("unbalanced )")?;
            matching[o] = Some(i);
            matching[i] = Some(o);
        }
    }
    match open.is_empty() {
        true => Ok(matching),
        false => Err("unbalanced (".into()),
    }
}

/// Reads `(a, b, c)` at `toks[i]`; returns the labels and the index of `)`.
fn label_list(toks: &[Tok], i: usize) -> Result<(Vec<String>, usize), String> {
    if !is(toks.get(i), "(") {
        return Err("expected ( after a grouping keyword".into());
    }
    let mut labels = Vec::new();
    let mut j = i + 1;
    loop {
        match toks.get(j) {
            Some(Tok::Ident(l)) => labels.push(l.clone()),
            Some(Tok::Punct(p)) if p == "," => {}
            Some(Tok::Punct(p)) if p == ")" => return Ok((labels, j)),
            other => return Err(format!("unexpected {other:?} in a label list")),
        }
        j += 1;
    }
}

/// Reads `{label op "value", ...}` at `toks[i]`; returns the matchers and the index of `}`.
fn matchers(toks: &[Tok], i: usize) -> Result<(Vec<Matcher>, usize), String> {
    let mut out = Vec::new();
    let mut j = i + 1;
    loop {
        match (toks.get(j), toks.get(j + 1), toks.get(j + 2)) {
            (Some(Tok::Punct(p)), _, _) if p == "}" => return Ok((out, j)),
            (Some(Tok::Punct(p)), _, _) if p == "," => j += 1,
            (Some(Tok::Ident(label)), Some(Tok::Punct(op)), Some(Tok::Str(value)))
                if ["=", "!=", "=~", "!~"].contains(&op.as_str()) =>
            {
                out.push(Matcher {
                    label: label.clone(),
                    op: op.clone(),
                    value: value.clone(),
                });
                j += 3;
            }
            other => return Err(format!("unexpected {other:?} in a selector")),
        }
    }
}

/// The selectors of `expr` and the labels its clauses name.
pub fn parse(expr: &str) -> Result<Expr, String> {
    let toks = tokenize(expr)?;
    let matching = pairs(&toks)?;
    let mut out = Expr::default();
    // (labels, token span) of each by/without clause, applied once all selectors are known.
    let mut scoped: Vec<(Vec<String>, usize, usize)> = Vec::new();
    let mut everywhere: Vec<String> = Vec::new();
    let mut positions = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Ident(word) if CLAUSES.contains(&word.as_str()) => {
                let grouping_of_left = matches!(word.as_str(), "group_left" | "group_right");
                if grouping_of_left && !is(toks.get(i + 1), "(") {
                    i += 1;
                    continue;
                }
                let (labels, end) = label_list(&toks, i + 1)?;
                match word.as_str() {
                    "by" | "without" => {
                        let span = match i.checked_sub(1).map(|p| &toks[p]) {
                            Some(Tok::Ident(agg)) if AGGREGATORS.contains(&agg.as_str()) => {
                                let open = end + 1;
                                let close = matching.get(open).copied().flatten();
                                (open, close.ok_or("no argument after by (...)")?)
                            }
                            Some(Tok::Punct(p)) if p == ")" => {
                                (matching[i - 1].ok_or("unbalanced")?, i - 1)
                            }
                            other => return Err(format!("{word} after {other:?}")),
                        };
                        if word == "by" {
                            out.by_labels.extend(labels.iter().cloned());
                        }
                        scoped.push((labels, span.0, span.1));
                    }
                    "on" | "ignoring" => everywhere.extend(labels),
                    _ => out.copied_labels.extend(labels),
                }
                i = end + 1;
            }
            Tok::Ident(word) if KEYWORDS.contains(&word.as_str()) => i += 1,
            Tok::Ident(word) => {
                let next = toks.get(i + 1);
                let call = is(next, "(")
                    || (AGGREGATORS.contains(&word.as_str())
                        && matches!(next, Some(Tok::Ident(n)) if n == "by" || n == "without"));
                if call {
                    i += 1;
                    continue;
                }
                let (found, end) = match is(next, "{") {
                    true => matchers(&toks, i + 1)?,
                    false => (Vec::new(), i),
                };
                positions.push(i);
                out.selectors.push(Selector {
                    metric: word.clone(),
                    matchers: found,
                    grouping: Vec::new(),
                });
                i = end + 1;
            }
            Tok::Punct(p) if p == "{" => return Err("a selector without a metric name".into()),
            _ => i += 1,
        }
    }
    for (selector, at) in out.selectors.iter_mut().zip(positions) {
        for (labels, from, to) in &scoped {
            if (*from..=*to).contains(&at) {
                selector.grouping.extend(labels.iter().cloned());
            }
        }
        selector.grouping.extend(everywhere.iter().cloned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(label: &str, op: &str, value: &str) -> Matcher {
        Matcher {
            label: label.into(),
            op: op.into(),
            value: value.into(),
        }
    }

    #[test]
    fn selectors_matchers_and_grouping_are_found() {
        let e = parse(
            r#"sum by (backend, kind) (rate(tether_a_total{instance=~"$instance",kind!="x"}[$__rate_interval]))
               / ignoring (kind) sum(rate(tether_b_total[5m] offset 1h)) by (backend)"#,
        )
        .unwrap();
        let names: Vec<_> = e.selectors.iter().map(|s| s.metric.as_str()).collect();
        assert_eq!(names, ["tether_a_total", "tether_b_total"]);
        assert_eq!(
            e.selectors[0].matchers,
            [m("instance", "=~", "$instance"), m("kind", "!=", "x")]
        );
        assert_eq!(e.selectors[0].grouping, ["backend", "kind", "kind"]);
        assert_eq!(e.selectors[1].grouping, ["backend", "kind"]);
        assert_eq!(e.by_labels, ["backend", "kind", "backend"]);
    }

    #[test]
    fn binary_operators_and_bare_metrics() {
        let e = parse(
            r#"(max by (instance) (tether_x) == 0) unless on (instance) (tether_y{s="a"} == 1) or up"#,
        )
        .unwrap();
        let names: Vec<_> = e.selectors.iter().map(|s| s.metric.as_str()).collect();
        assert_eq!(names, ["tether_x", "tether_y", "up"]);
        assert_eq!(e.selectors[0].grouping, ["instance", "instance"]);
        assert_eq!(e.selectors[1].grouping, ["instance"]);
    }

    #[test]
    fn what_it_cannot_read_is_an_error_not_a_pass() {
        for bad in [
            r#"sum(rate(tether_x_total{reason="a"[5m]))"#,
            r#"{__name__="tether_x"}"#,
            "sum(rate(tether_x_total[5m])",
            r#"tether_x{reason="a}"#,
            "sum by reason (tether_x)",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
