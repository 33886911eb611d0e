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

/// `YYYYMMDDHHMMSS` of a Unix time (days to civil date: Howard Hinnant's algorithm).
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Now in UTC as ISO 8601, `YYYY-MM-DDTHH:MM:SSZ`, for log lines.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    iso_utc(secs)
}

fn iso_utc(secs: u64) -> String {
    let s = utc_stamp(secs);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[..4],
        &s[4..6],
        &s[6..8],
        &s[8..10],
        &s[10..12],
        &s[12..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_are_civil_time() {
        assert_eq!(utc_stamp(0), "19700101000000");
        assert_eq!(utc_stamp(951_782_400), "20000229000000");
        assert_eq!(utc_stamp(1_795_000_000), "20261118110640");
        assert_eq!(iso_utc(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
