//! How results are shown: a report per host for people, or JSON for scripts.

use std::time::Duration;

use provision_core::engine::{HostReport, Outcome};

/// Print the reports; `verb` is what happened to a changed host ("would change", "changed").
pub fn print_reports(reports: &[HostReport], json: bool, elapsed: Duration) {
    if json {
        let value = serde_json::json!({
            "hosts": reports,
            "elapsed_seconds": elapsed.as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        return;
    }
    let (mut changed, mut unchanged, mut failed) = (0, 0, 0);
    for report in reports {
        match &report.outcome {
            Outcome::Unchanged => {
                unchanged += 1;
                println!("{}: up to date", report.host);
            }
            Outcome::Planned | Outcome::Changed => {
                changed += 1;
                let verb = if report.outcome == Outcome::Planned {
                    "would change"
                } else {
                    "changed"
                };
                println!("{}: {verb} {}", report.host, count(report.changes.len(), "resource"));
            }
            Outcome::Failed(error) => {
                failed += 1;
                println!("{}: FAILED: {error}", report.host);
                if !report.changes.is_empty() {
                    println!("  (of these changes, the ones before the failure were made)");
                }
            }
        }
        for change in &report.changes {
            println!("  ~ {}", change.resource);
            for line in &change.summary {
                println!("      {line}");
            }
            if let Some(diff) = &change.diff {
                for line in diff.lines() {
                    println!("      {line}");
                }
            }
        }
    }
    println!(
        "{} to change, {} up to date, {} failed ({:.1}s)",
        count(changed, "host"),
        unchanged,
        failed,
        elapsed.as_secs_f64()
    );
}

pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
