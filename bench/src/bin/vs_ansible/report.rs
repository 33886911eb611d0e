//! Results: one table per number of hosts, both tools side by side, as Markdown.

use std::fmt::Write as _;
use std::time::Duration;

use provision_sandbox::{Config, Sandbox};

use crate::measure::Usage;

/// The Ansible columns of a row Ansible did not run.
const NOT_RUN: &str = "not run";
/// The note of a report run with --no-ansible.
const NO_ANSIBLE: &str = "Run with `--no-ansible`: provision's side of every row only; Ansible \
     was not installed or run, so its columns say \"not run\" and there is no ratio.";

/// One run of one tool.
#[derive(Debug, Clone)]
pub struct Measured {
    pub usage: Usage,
    /// CPU the hosts used during the run (their cgroups).
    pub host_cpu: Duration,
    /// SSH sessions (one per remote command) each host's sshd started.
    pub sessions: Vec<u64>,
    /// 1-minute load average of the machine when the run started.
    pub load: f64,
}

impl Measured {
    /// Two commands run one after the other, as one operation.
    pub fn sum(a: &Measured, b: &Measured) -> Measured {
        Measured {
            usage: Usage {
                wall: a.usage.wall + b.usage.wall,
                cpu: a.usage.cpu + b.usage.cpu,
                max_rss_kib: a.usage.max_rss_kib.max(b.usage.max_rss_kib),
                exit_code: a.usage.exit_code.max(b.usage.exit_code),
            },
            host_cpu: a.host_cpu + b.host_cpu,
            sessions: a
                .sessions
                .iter()
                .zip(&b.sessions)
                .map(|(x, y)| x + y)
                .collect(),
            load: a.load.max(b.load),
        }
    }

    fn sessions_max(&self) -> u64 {
        self.sessions.iter().copied().max().unwrap_or(0)
    }

    fn sessions_mean(&self) -> f64 {
        self.sessions.iter().sum::<u64>() as f64 / self.sessions.len().max(1) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    FirstConverge,
    Noop,
    OneChange,
    DeployUnchanged,
    DeployNew,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::FirstConverge => "first converge (setup + configure; packages in the base)",
            Op::Noop => "no-op `up`",
            Op::OneChange => "one change (`haproxy.check_interval`)",
            Op::DeployUnchanged => "`deploy`, live revision (no-op)",
            Op::DeployNew => "`deploy`, new revision, build cached",
        }
    }
}

/// One operation, both tools: the run with the median wall time of each.
#[derive(Debug, Clone)]
pub struct Row {
    pub op: Op,
    pub provision: Measured,
    /// None when Ansible was not run (--no-ansible).
    pub ansible: Option<Measured>,
    pub runs: (usize, usize),
}

fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by_key(|m| m.usage.wall);
    runs.swap_remove(runs.len() / 2)
}

impl Row {
    /// `ansible` is empty when Ansible was not run.
    pub fn new(op: Op, provision: Vec<Measured>, ansible: Vec<Measured>) -> Row {
        let runs = (provision.len(), ansible.len());
        Row {
            op,
            provision: median(provision),
            ansible: (!ansible.is_empty()).then(|| median(ansible)),
            runs,
        }
    }
}

pub struct Table {
    pub hosts: usize,
    pub rows: Vec<Row>,
    pub load_note: String,
    /// Cores the hosts used while no tool ran, once every client was up.
    pub idle_cores: f64,
}

impl Table {
    pub fn new(hosts: usize) -> Table {
        Table {
            hosts,
            rows: Vec::new(),
            load_note: String::new(),
            idle_cores: 0.0,
        }
    }

    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn markdown(&self) -> String {
        let mut out = format!(
            "### N = {} app host{} (+ `front`: lb, ZEO)\n\n",
            self.hosts,
            if self.hosts == 1 { "" } else { "s" }
        );
        if self.rows.iter().any(|r| r.ansible.is_none()) {
            out.push_str("Ansible not run (`--no-ansible`).\n\n");
        }
        out.push_str(
            "| operation | provision | round trips/host, max (mean) | peak RSS | own CPU / hosts' CPU | Ansible | round trips/host, max (mean) | own CPU / hosts' CPU | Ansible / provision |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for row in &self.rows {
            let p = &row.provision;
            let ansible = match &row.ansible {
                Some(a) => format!(
                    "{} | {} ({:.1}) | {} / {} | **{:.0}x**",
                    seconds(a.usage.wall),
                    a.sessions_max(),
                    a.sessions_mean(),
                    seconds(a.usage.cpu),
                    seconds(a.host_cpu),
                    a.usage.wall.as_secs_f64() / p.usage.wall.as_secs_f64().max(1e-6),
                ),
                None => format!("{NOT_RUN} | {NOT_RUN} | {NOT_RUN} | —"),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} ({:.1}) | {:.1} MiB | {} / {} | {ansible} |",
                row.op.label(),
                seconds(p.usage.wall),
                p.sessions_max(),
                p.sessions_mean(),
                p.usage.max_rss_kib as f64 / 1024.0,
                seconds(p.usage.cpu),
                seconds(p.host_cpu),
            );
        }
        let runs: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.runs.0 > 1 || r.runs.1 > 1)
            .map(|r| match r.runs {
                (p, 0) => format!("{}: median of {p} runs", r.op.label()),
                (p, a) => format!("{}: median of {p} / {a} runs", r.op.label()),
            })
            .collect();
        // A blank line ends the table (a line right after it would be read as one more row).
        out.push('\n');
        if !runs.is_empty() {
            let _ = writeln!(out, "{}.", runs.join("; "));
        }
        let _ = writeln!(
            out,
            "Idle, the hosts used {:.2} cores (HAProxy's health checks of every client, ZEO, the \
             clients). {}",
            self.idle_cores, self.load_note
        );
        out
    }
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// What else ran on the machine: load, other sandboxes, free memory.
pub fn machine_note(config: &Config, ours: &str) -> String {
    let others: Vec<String> = Sandbox::list(config)
        .into_iter()
        .filter(|n| n != ours)
        .collect();
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "Machine at the end: load {:.2}, {} MiB available, other sandboxes: {}.",
        loadavg(),
        available / 1024,
        if others.is_empty() {
            "none".to_string()
        } else {
            others.join(", ")
        }
    )
}

/// The whole report: the command, the machine, whether Ansible ran, every table.
pub fn document(tables: &[Table], command: &str, with_ansible: bool) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = format!(
        "Command: `{command}`\n\nMachine: {cores} cores; the controller and every host share them.\n\n"
    );
    if !with_ansible {
        out.push_str(NO_ANSIBLE);
        out.push_str("\n\n");
    }
    for table in tables {
        out.push_str(&table.markdown());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(wall_ms: u64) -> Measured {
        Measured {
            usage: Usage {
                wall: Duration::from_millis(wall_ms),
                cpu: Duration::from_millis(20),
                max_rss_kib: 14 * 1024,
                exit_code: 0,
            },
            host_cpu: Duration::from_millis(200),
            sessions: vec![4, 2],
            load: 0.0,
        }
    }

    #[test]
    fn rows_with_ansible_have_its_columns_and_the_ratio() {
        let mut table = Table::new(1);
        table.push(Row::new(
            Op::Noop,
            vec![run(150), run(160), run(170)],
            vec![run(12_900); 3],
        ));
        let text = table.markdown();
        assert!(
            text.contains(
                "| no-op `up` | 0.16 s | 4 (3.0) | 14.0 MiB | 0.02 s / 0.20 s | 12.9 s | 4 (3.0) \
                 | 0.02 s / 0.20 s | **81x** |"
            ),
            "{text}"
        );
        assert!(
            text.contains("**81x** |\n\nno-op `up`: median of 3 / 3 runs.\nIdle"),
            "{text}"
        );
        assert!(!text.contains(NOT_RUN), "{text}");
        assert!(!document(&[table], "vs_ansible", true).contains(NO_ANSIBLE));
    }

    #[test]
    fn a_table_of_single_runs_ends_before_the_idle_note() {
        let mut table = Table::new(4);
        table.push(Row::new(Op::DeployNew, vec![run(14_800)], vec![]));
        let text = table.markdown();
        assert!(text.contains("| — |\n\nIdle, the hosts used"), "{text}");
    }

    #[test]
    fn rows_without_ansible_say_not_run_and_have_no_ratio() {
        let mut table = Table::new(1);
        table.push(Row::new(
            Op::Noop,
            vec![run(150), run(160), run(170)],
            vec![],
        ));
        table.push(Row::new(Op::OneChange, vec![run(330)], vec![]));
        let text = table.markdown();
        assert!(text.contains("Ansible not run (`--no-ansible`)."), "{text}");
        assert!(
            text.contains(
                "| one change (`haproxy.check_interval`) | 0.33 s | 4 (3.0) | 14.0 MiB \
                 | 0.02 s / 0.20 s | not run | not run | not run | — |"
            ),
            "{text}"
        );
        assert!(!text.contains("**"), "{text}");
        assert!(
            text.contains("| — |\n\nno-op `up`: median of 3 runs."),
            "{text}"
        );
        assert!(
            !text.contains("one change (`haproxy.check_interval`): median"),
            "{text}"
        );
        assert!(document(&[table], "vs_ansible --no-ansible", false).contains(NO_ANSIBLE));
    }
}
