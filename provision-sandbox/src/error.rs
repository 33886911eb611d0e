//! Errors of the sandbox, written for the person who runs it.

use std::path::PathBuf;

/// A tool the sandbox needs that is not installed on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingTool {
    /// The program looked up in PATH (plus the sbin directories).
    pub program: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
    /// Whether the package must be installed without recommends.
    pub no_recommends: bool,
}

impl std::fmt::Display for MissingTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flags = if self.no_recommends {
            " --no-install-recommends"
        } else {
            ""
        };
        write!(
            f,
            "`{}` not found: install it with `apt-get install{flags} {}`",
            self.program, self.package
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the sandbox needs root (running as uid {uid}): it creates network namespaces, mounts and cgroups; run it as root or with sudo"
    )]
    NotRoot { uid: u32 },

    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    MissingTools(Vec<MissingTool>),

    #[error("the sandbox cannot run on this machine: {0}")]
    Unsupported(String),

    #[error(
        "sandbox {name:?} already has running hosts ({running}); stop it first with `provision sandbox down --name {name}`"
    )]
    NameClash { name: String, running: String },

    #[error(
        "sandbox {name:?} exists (stopped) with hosts [{existing}], not [{requested}]; remove it first with `provision sandbox down --destroy --name {name}`"
    )]
    HostSetMismatch {
        name: String,
        existing: String,
        requested: String,
    },

    #[error("no sandbox named {name:?} (no state in {dir})")]
    NoSuchSandbox { name: String, dir: PathBuf },

    #[error("sandbox {sandbox:?} has no host {host:?} (its hosts: {hosts})")]
    NoSuchHost {
        sandbox: String,
        host: String,
        hosts: String,
    },

    #[error(
        "the base image {path} is missing and building it was not allowed; build it once with `provision sandbox base` (debootstrap, about 100 s)"
    )]
    BaseMissing { path: PathBuf },

    #[error("building the base image failed: {0}")]
    BaseBuild(String),

    #[error("address {address} is already taken: {detail}")]
    AddressTaken { address: String, detail: String },

    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },

    #[error("{0}")]
    InvalidInput(String),

    #[error("`{command}` failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    #[error("host {host} of sandbox {sandbox} did not become ready: {detail}\n{log}")]
    NotReady {
        sandbox: String,
        host: String,
        detail: String,
        log: String,
    },

    #[error("host {host} of sandbox {sandbox} is not running")]
    NotRunning { sandbox: String, host: String },

    #[error("host {host} of sandbox {sandbox} is already running (PID 1 is {pid1})")]
    AlreadyRunning {
        sandbox: String,
        host: String,
        pid1: u32,
    },

    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a sentence of context to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|errno| Error::Io {
            context: context(),
            source: std::io::Error::from(errno),
        })
    }
}
