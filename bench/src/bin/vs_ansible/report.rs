//! Results: one table per number of hosts, both tools side by side, as Markdown.

use std::fmt::Write as _;
use std::time::Duration;

use provision_sandbox::{Config, Sandbox};

use crate::measure::Usage;

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
    pub ansible: Measured,
    pub runs: (usize, usize),
}

fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by_key(|m| m.usage.wall);
    runs.swap_remove(runs.len() / 2)
}

impl Row {
    pub fn new(op: Op, provision: Vec<Measured>, ansible: Vec<Measured>) -> Row {
        let runs = (provision.len(), ansible.len());
        Row {
            op,
            provision: median(provision),
            ansible: median(ansible),
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
            "### N = {} app host{} (+ `front`: lb, ZEO)\n\n\
             | operation | provision | round trips/host, max (mean) | peak RSS | own CPU / hosts' CPU | Ansible | round trips/host, max (mean) | own CPU / hosts' CPU | Ansible / provision |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            self.hosts,
            if self.hosts == 1 { "" } else { "s" }
        );
        for row in &self.rows {
            let (p, a) = (&row.provision, &row.ansible);
            let _ = writeln!(
                out,
                "| {} | {} | {} ({:.1}) | {:.1} MiB | {} / {} | {} | {} ({:.1}) | {} / {} | **{:.0}x** |",
                row.op.label(),
                seconds(p.usage.wall),
                p.sessions_max(),
                p.sessions_mean(),
                p.usage.max_rss_kib as f64 / 1024.0,
                seconds(p.usage.cpu),
                seconds(p.host_cpu),
                seconds(a.usage.wall),
                a.sessions_max(),
                a.sessions_mean(),
                seconds(a.usage.cpu),
                seconds(a.host_cpu),
                a.usage.wall.as_secs_f64() / p.usage.wall.as_secs_f64().max(1e-6),
            );
        }
        let runs: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.runs != (1, 1))
            .map(|r| {
                format!(
                    "{}: median of {} / {} runs",
                    r.op.label(),
                    r.runs.0,
                    r.runs.1
                )
            })
            .collect();
        if !runs.is_empty() {
            let _ = writeln!(out, "\n{}.", runs.join("; "));
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

/// The whole report: the command, the machine, every table.
pub fn document(tables: &[Table], command: &str) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = format!(
        "Command: `{command}`\n\nMachine: {cores} cores; the controller and every host share them.\n\n"
    );
    for table in tables {
        out.push_str(&table.markdown());
        out.push('\n');
    }
    out
}
