//! A sandbox's state directory, the machine-wide lock, and mount bookkeeping.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, IoContext, Result};

/// Internal state of one sandbox (`sandbox.json`); `inventory.json` is the public part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub name: String,
    pub subnet: String,
    pub bridge: String,
    pub base: PathBuf,
    pub hosts: Vec<HostState>,
    #[serde(default)]
    pub proxy: Option<SocketAddr>,
    /// "in-process", "detached" or "none".
    #[serde(default)]
    pub proxy_mode: String,
    pub owner: Owner,
    /// Made by the test fixture: removed by a later fixture if its owner died.
    #[serde(default)]
    pub fixture: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HostState {
    pub name: String,
    pub address: Ipv4Addr,
    pub veth: String,
    pub netns: String,
    /// nspawn machine name.
    pub machine: String,
}

/// The process that made the sandbox (pid + start time, robust to pid reuse).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Owner {
    pub pid: u32,
    pub start_time: u64,
}

impl Owner {
    pub fn me() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start_time: crate::process::start_time(pid).unwrap_or(0),
        }
    }

    pub fn alive(&self) -> bool {
        crate::process::alive(self.pid)
            && crate::process::start_time(self.pid) == Some(self.start_time)
    }
}

/// Paths inside a sandbox's state directory.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(config: &Config, name: &str) -> Paths {
        Paths {
            dir: config.state_root.join(name),
        }
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("sandbox.json")
    }
    pub fn inventory(&self) -> PathBuf {
        self.dir.join("inventory.json")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    pub fn egress(&self) -> PathBuf {
        self.dir.join("egress.json")
    }
    pub fn proxy_log(&self) -> PathBuf {
        self.dir.join("proxy.log")
    }
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.join("hosts").join(host)
    }
    pub fn upper(&self, host: &str) -> PathBuf {
        self.host_dir(host).join("upper")
    }
    pub fn work(&self, host: &str) -> PathBuf {
        self.host_dir(host).join("work")
    }
    pub fn root(&self, host: &str) -> PathBuf {
        self.host_dir(host).join("root")
    }
    pub fn console(&self, host: &str) -> PathBuf {
        self.host_dir(host).join("console.log")
    }
    pub fn exit_file(&self, host: &str) -> PathBuf {
        self.host_dir(host).join("last-exit")
    }
}

pub(crate) fn read_state(paths: &Paths) -> Result<State> {
    read_json(&paths.state())
}

/// Reads a JSON state file (sandbox.json, inventory.json, egress.json).
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).ctx(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Writes JSON through a temporary file and a rename.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").ctx(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("cannot write {}", path.display()))
}

/// Names of every sandbox with a state file.
pub(crate) fn list(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&config.state_root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("sandbox.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// An exclusive flock, released on drop.
pub(crate) fn lock_file(path: &Path) -> Result<Flock<File>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).ctx(|| format!("cannot create {}", parent.display()))?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ctx(|| format!("cannot open the lock {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .ctx(|| format!("cannot lock {}", path.display()))
}

/// The machine-wide lock around address allocation and bridge changes.
pub(crate) fn machine_lock(config: &Config) -> Result<Flock<File>> {
    lock_file(&config.state_root.join(".lock"))
}

/// Mount points at or below `dir`, outermost first.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| p.components().count());
    out.dedup();
    out
}

pub(crate) fn is_mounted(dir: &Path) -> bool {
    mounts_under(dir).iter().any(|m| m == dir)
}
