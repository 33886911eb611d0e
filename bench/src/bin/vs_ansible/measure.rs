//! Running a tool as a child and measuring it: wall time, and the peak RSS and CPU time of its
//! whole process tree. `getrusage(RUSAGE_CHILDREN)` keeps the largest RSS of every child a
//! process ever waited for, so each run goes through a fresh copy of this binary
//! (`vs_ansible __measure OUT -- CMD...`) that runs only that one command.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::resource::{UsageWho, getrusage};

pub const MEASURE_ARG: &str = "__measure";

/// What one run of a command cost on the controller.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub wall: Duration,
    /// User + system CPU of the command and everything it started.
    pub cpu: Duration,
    /// The largest resident set of any single process of the run.
    pub max_rss_kib: u64,
    pub exit_code: i32,
}

/// `vs_ansible __measure OUT -- CMD ARGS...`: run CMD with this process's stdio, environment
/// and directory, then write its usage to OUT as `key value` lines.
pub fn child_main(args: &[String]) -> anyhow::Result<ExitCode> {
    let [out, dashes, program, rest @ ..] = args else {
        bail!("usage: vs_ansible {MEASURE_ARG} OUT -- CMD [ARGS...]");
    };
    if dashes != "--" {
        bail!("usage: vs_ansible {MEASURE_ARG} OUT -- CMD [ARGS...]");
    }
    let started = Instant::now();
    let status = Command::new(program)
        .args(rest)
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    let wall = started.elapsed();
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let micros = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    let code = status.code().unwrap_or(128);
    std::fs::write(
        out,
        format!(
            "wall_us {}\ncpu_us {}\nmax_rss_kib {}\nexit {code}\n",
            wall.as_micros(),
            micros(usage.user_time()) + micros(usage.system_time()),
            usage.max_rss(),
        ),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// A command to measure: program, arguments, environment, directory, and where its output goes.
pub struct Run<'a> {
    pub program: &'a Path,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: &'a Path,
    /// `<log>.out` and `<log>.err` receive its stdout and stderr.
    pub log: PathBuf,
}

impl Run<'_> {
    pub fn measure(&self) -> anyhow::Result<Usage> {
        let usage_file = self.log.with_extension("usage");
        let me = std::env::current_exe().context("cannot find this benchmark's own binary")?;
        let stdout = std::fs::File::create(self.log.with_extension("out"))?;
        let stderr = std::fs::File::create(self.log.with_extension("err"))?;
        let status = Command::new(me)
            .arg(MEASURE_ARG)
            .arg(&usage_file)
            .arg("--")
            .arg(self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("PROVISION_STACK")
            .current_dir(self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .status()?;
        if !status.success() {
            bail!(
                "measuring {} failed; see {}",
                self.program.display(),
                self.log.with_extension("err").display()
            );
        }
        let text = std::fs::read_to_string(&usage_file)?;
        let field = |key: &str| -> anyhow::Result<i64> {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
                .with_context(|| format!("no {key} in {}", usage_file.display()))
        };
        Ok(Usage {
            wall: Duration::from_micros(field("wall_us")? as u64),
            cpu: Duration::from_micros(field("cpu_us")? as u64),
            max_rss_kib: field("max_rss_kib")? as u64,
            exit_code: field("exit")? as i32,
        })
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("out")).unwrap_or_default()
    }

    /// The end of its stderr, for error messages.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
