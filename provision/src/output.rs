//! How results are shown: a report per host for people, or JSON for scripts.

use std::io::Write as _;

use std::time::Duration;

use provision_core::engine::{HostReport, Outcome};

/// Print the reports; `verb` is what happened to a changed host ("would change", "changed").
pub fn print_reports(reports: &[HostReport], json: bool, elapsed: Duration) {
    let planned = reports.iter().any(|r| r.outcome == Outcome::Planned);
    if json {
        let value = serde_json::json!({
            "hosts": reports,
            "elapsed_seconds": elapsed.as_secs_f64(),
        });
        crate::out!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return;
    }
    let (mut changed, mut unchanged, mut failed) = (0, 0, 0);
    for report in reports {
        match &report.outcome {
            Outcome::Unchanged => {
                unchanged += 1;
                crate::out!("{}: up to date", report.host);
            }
            Outcome::Planned | Outcome::Changed => {
                changed += 1;
                let verb = if report.outcome == Outcome::Planned {
                    "would change"
                } else {
                    "changed"
                };
                crate::out!(
                    "{}: {verb} {}",
                    report.host,
                    count(report.changes.len(), "resource")
                );
            }
            Outcome::Failed(error) => {
                failed += 1;
                crate::out!("{}: FAILED: {error}", report.host);
                if !report.changes.is_empty() {
                    crate::out!("  (of these changes, the ones before the failure were made)");
                }
            }
        }
        for change in &report.changes {
            crate::out!("  ~ {}", change.resource);
            for line in &change.summary {
                crate::out!("      {line}");
            }
            if let Some(diff) = &change.diff {
                for line in diff.lines() {
                    crate::out!("      {line}");
                }
            }
        }
    }
    crate::out!(
        "{} {}, {} up to date, {} failed ({:.1}s)",
        count(changed, "host"),
        if planned { "to change" } else { "changed" },
        unchanged,
        failed,
        elapsed.as_secs_f64()
    );
}

/// The strings of a JSON array, joined with ", " (nothing when it is not an array).
pub fn json_list(value: &serde_json::Value) -> String {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Print a line on stdout. A reader that went away (`provision plan | head`) ends the program
/// quietly, as it would for any Unix tool, instead of a panic.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {error}");
        std::process::exit(1);
    }
}

/// `println!` through [`write_line`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
