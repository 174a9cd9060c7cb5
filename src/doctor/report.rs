//! The report: a table for people, JSON for machines (`--json`). Both carry
//! the same checks in the same order; stdout gets nothing else.

use super::client::printable;
use super::{Report, Verdict};

pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub fn table(report: &Report) -> String {
    let width = report
        .checks
        .iter()
        .map(|c| c.id.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "tether doctor {} ({:.1} s)\n\n{:width$}  {:7}  SAW\n",
        printable(&report.url),
        report.elapsed_ms as f64 / 1000.0,
        "CHECK",
        "VERDICT",
    );
    for c in &report.checks {
        out.push_str(&format!(
            "{:width$}  {:7}  {}\n",
            c.id,
            c.verdict.label(),
            // Each line is clipped where it quotes a server; this is the backstop.
            printable(&c.saw)
        ));
    }
    let count = |v: Verdict| report.checks.iter().filter(|c| c.verdict == v).count();
    out.push_str(&format!(
        "\n{} passed, {} failed, {} warnings, {} not applicable: exit {}",
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Warn),
        count(Verdict::NotApplicable),
        report.exit
    ));
    out
}
