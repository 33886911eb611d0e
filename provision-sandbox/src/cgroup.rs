//! One cgroup per host (and one for a detached proxy), so that a host can be
//! frozen, measured and killed on its own. On a hybrid machine (cgroup v1 plus
//! cgroup2 at /sys/fs/cgroup/unified) nspawn needs both the name=systemd v1
//! hierarchy and the unified one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// Directory under each hierarchy that holds every sandbox.
pub const ROOT: &str = "provision-sandbox";

#[derive(Debug, Clone)]
pub struct Cgroups {
    /// cgroup2 mount: freeze, kill, cpu.stat.
    pub unified: PathBuf,
    /// name=systemd v1 hierarchy, on hybrid machines.
    pub systemd_v1: Option<PathBuf>,
}

impl Cgroups {
    pub fn detect() -> Result<Cgroups> {
        let base = Path::new("/sys/fs/cgroup");
        if base.join("unified/cgroup.procs").exists() {
            let v1 = base.join("systemd");
            Ok(Cgroups {
                unified: base.join("unified"),
                systemd_v1: v1.join("cgroup.procs").exists().then_some(v1),
            })
        } else if base.join("cgroup.controllers").exists() {
            Ok(Cgroups {
                unified: base.to_path_buf(),
                systemd_v1: None,
            })
        } else {
            Err(Error::Unsupported(
                "no cgroup2 hierarchy (neither /sys/fs/cgroup/unified nor a cgroup2 /sys/fs/cgroup): per-host freeze and kill need it".into(),
            ))
        }
    }

    /// Relative path of a sandbox's cgroup.
    pub fn sandbox_rel(sandbox: &str) -> PathBuf {
        Path::new(ROOT).join(sandbox)
    }

    /// Relative path of a host's cgroup.
    pub fn host_rel(sandbox: &str, host: &str) -> PathBuf {
        Self::sandbox_rel(sandbox).join(host)
    }

    /// Relative path of a sandbox's detached proxy (`_` cannot start a host name).
    pub fn proxy_rel(sandbox: &str) -> PathBuf {
        Self::sandbox_rel(sandbox).join("_proxy")
    }

    pub fn unified_dir(&self, rel: &Path) -> PathBuf {
        self.unified.join(rel)
    }

    fn dirs(&self, rel: &Path) -> Vec<PathBuf> {
        let mut dirs = vec![self.unified.join(rel)];
        if let Some(v1) = &self.systemd_v1 {
            dirs.push(v1.join(rel));
        }
        dirs
    }

    /// Creates the cgroup in every hierarchy; returns the `cgroup.procs` files a
    /// launcher writes its pid into.
    pub fn create(&self, rel: &Path) -> Result<Vec<PathBuf>> {
        let mut procs = Vec::new();
        for dir in self.dirs(rel) {
            std::fs::create_dir_all(&dir)
                .ctx(|| format!("cannot create cgroup {}", dir.display()))?;
            procs.push(dir.join("cgroup.procs"));
        }
        Ok(procs)
    }

    /// Every live process in the cgroup and below.
    pub fn procs(&self, rel: &Path) -> Vec<u32> {
        let mut pids = Vec::new();
        collect_procs(&self.unified.join(rel), &mut pids);
        pids
    }

    pub fn populated(&self, rel: &Path) -> bool {
        let events = self.unified.join(rel).join("cgroup.events");
        match std::fs::read_to_string(events) {
            Ok(text) => text.lines().any(|l| l == "populated 1"),
            Err(_) => false,
        }
    }

    pub fn frozen(&self, rel: &Path) -> bool {
        std::fs::read_to_string(self.unified.join(rel).join("cgroup.freeze"))
            .is_ok_and(|s| s.trim() == "1")
    }

    /// Freezes or thaws, and waits until the kernel says it is done.
    pub fn set_frozen(&self, rel: &Path, frozen: bool) -> Result<()> {
        let dir = self.unified.join(rel);
        let file = dir.join("cgroup.freeze");
        std::fs::write(&file, if frozen { "1" } else { "0" })
            .ctx(|| format!("cannot write {}", file.display()))?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
            if events.lines().any(|l| l == want) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(Error::Io {
            context: format!("{} did not report `{want}` within 10 s", dir.display()),
            source: std::io::ErrorKind::TimedOut.into(),
        })
    }

    /// Kills every process in the cgroup and below, and waits until it is empty.
    pub fn kill_all(&self, rel: &Path, timeout: Duration) -> Result<()> {
        let dir = self.unified.join(rel);
        if !dir.is_dir() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            if self.frozen(rel) {
                // frozen tasks die on SIGKILL, but thawing first keeps it simple
                let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
            }
            let kill_file = dir.join("cgroup.kill");
            if kill_file.exists() {
                let _ = std::fs::write(&kill_file, "1");
            } else {
                for pid in self.procs(rel) {
                    crate::process::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
            if wait_until(
                deadline.min(Instant::now() + Duration::from_millis(500)),
                || !self.populated(rel),
            ) {
                crate::process::reap();
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Io {
                    context: format!(
                        "processes in {} survived SIGKILL for {} s: {:?}",
                        dir.display(),
                        timeout.as_secs(),
                        self.procs(rel)
                    ),
                    source: std::io::ErrorKind::TimedOut.into(),
                });
            }
        }
    }

    /// Removes the cgroup and everything below it in every hierarchy (it must be
    /// empty of processes). Missing directories are fine.
    pub fn remove(&self, rel: &Path) -> Result<()> {
        for dir in self.dirs(rel) {
            remove_tree(&dir)?;
        }
        Ok(())
    }

    /// Removes `dir` if nothing is left in it (used for the sandbox and root levels).
    pub fn remove_if_empty(&self, rel: &Path) {
        for dir in self.dirs(rel) {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// CPU time used by the cgroup, from cgroup2's cpu.stat.
    pub fn cpu_usage(&self, rel: &Path) -> Option<Duration> {
        let text = std::fs::read_to_string(self.unified.join(rel).join("cpu.stat")).ok()?;
        let usec: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?;
        Some(Duration::from_micros(usec))
    }
}

fn collect_procs(dir: &Path, pids: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_procs(&entry.path(), pids);
            }
        }
    }
}

fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path())?;
            }
        }
    }
    // a task that just died may still be accounted for a moment (EBUSY)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(Error::Io {
                    context: format!("cannot remove cgroup {}", dir.display()),
                    source: e,
                });
            }
        }
    }
}

/// Polls `cond` every 10 ms until it holds or the deadline passes.
pub(crate) fn wait_until(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
