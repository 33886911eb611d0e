//! Hosts: one interface over two transports, SSH (russh) and the local machine.
//!
//! Everything a resource or layer does on a host goes through [`Host::exec`] (a shell script,
//! optional stdin) or [`Host::upload`] (an atomic file write built on `exec`). Each call is one
//! round trip, and the host counts them so that tests and benchmarks can hold us to O(1) round
//! trips per converge.

mod local;
mod ssh;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use ssh::SshTarget;

use crate::shell::{atomic_write_steps, quote};

/// Scripts longer than this go to `sh -s` on stdin: a single argument is limited to 128 KiB on
/// Linux, and large batched scripts (files embedded) would not fit on the command line.
const INLINE_SCRIPT_MAX: usize = 32 * 1024;

/// A shell script to run on a host with `/bin/sh`, as root (through `sudo -n` when the login
/// user is not root).
#[derive(Debug, Clone, Default)]
pub struct Command {
    pub script: String,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
}

impl Command {
    pub fn new(script: impl Into<String>) -> Self {
        Command {
            script: script.into(),
            ..Default::default()
        }
    }

    #[must_use]
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// What a command left behind: its exit status (or the signal that ended it) and its output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub status: Option<u32>,
    pub signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// A short description of how the command ended, for error messages.
    pub fn describe_exit(&self) -> String {
        match (&self.status, &self.signal) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "no exit status (connection lost?)".to_string(),
        }
    }
}

/// Failures of the transport itself. A command that ran and exited non-zero is not an error
/// here: it is an [`Output`] with that status.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{host}: cannot connect to {address}: {reason}")]
    Connect {
        host: String,
        address: String,
        reason: String,
    },
    #[error("{host}: no SSH answer from {address} within {seconds}s")]
    ConnectTimeout {
        host: String,
        address: String,
        seconds: u64,
    },
    #[error(
        "{host}: the host key of {address} CHANGED (known_hosts {known_hosts}, line {line}); \
         this may be a man-in-the-middle attack. If the host was really reinstalled, remove \
         that line and run again with --accept-new-host-keys"
    )]
    HostKeyChanged {
        host: String,
        address: String,
        known_hosts: PathBuf,
        line: usize,
    },
    #[error(
        "{host}: the host key of {address} is not in {known_hosts}; run with \
         --accept-new-host-keys to learn it (or add it to that file)"
    )]
    HostKeyUnknown {
        host: String,
        address: String,
        known_hosts: PathBuf,
    },
    #[error("{host}: SSH authentication failed for user {user}: {reason}")]
    Auth {
        host: String,
        user: String,
        reason: String,
    },
    #[error("{host}: command did not finish within {seconds}s")]
    Timeout { host: String, seconds: u64 },
    #[error("{host}: connection lost: {reason}")]
    Disconnected { host: String, reason: String },
    #[error("{host}: {reason}")]
    Other { host: String, reason: String },
}

impl HostError {
    /// The host the error is about.
    pub fn host(&self) -> &str {
        match self {
            HostError::Connect { host, .. }
            | HostError::ConnectTimeout { host, .. }
            | HostError::HostKeyChanged { host, .. }
            | HostError::HostKeyUnknown { host, .. }
            | HostError::Auth { host, .. }
            | HostError::Timeout { host, .. }
            | HostError::Disconnected { host, .. }
            | HostError::Other { host, .. } => host,
        }
    }
}

/// What the transport runs: a complete command line for the login shell, plus stdin.
#[derive(Debug)]
pub(crate) struct Invocation {
    pub command_line: String,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
}

enum Transport {
    Local(local::LocalTransport),
    Ssh(ssh::SshTransport),
}

/// A host to run commands on. Cheap to clone; clones share the connection and the counter.
#[derive(Clone)]
pub struct Host {
    name: Arc<str>,
    transport: Arc<Transport>,
    sudo: bool,
    round_trips: Arc<AtomicU64>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match *self.transport {
            Transport::Local(_) => "local",
            Transport::Ssh(_) => "ssh",
        };
        write!(f, "Host({} via {kind})", self.name)
    }
}

impl Host {
    /// The machine `provision` runs on.
    pub fn local(name: &str) -> Host {
        let transport = local::LocalTransport::new(name);
        let sudo = !transport.is_root();
        Host::wrap(name, Transport::Local(transport), sudo)
    }

    /// Connect and authenticate over SSH, checking the host key against `target.known_hosts`.
    pub async fn connect_ssh(name: &str, target: &SshTarget) -> Result<Host, HostError> {
        let transport = ssh::SshTransport::connect(name, target).await?;
        Ok(Host::wrap(
            name,
            Transport::Ssh(transport),
            target.user != "root",
        ))
    }

    fn wrap(name: &str, transport: Transport, sudo: bool) -> Host {
        Host {
            name: Arc::from(name),
            transport: Arc::new(transport),
            sudo,
            round_trips: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Commands sent so far (each is one round trip).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Run a script with `/bin/sh` as root. A non-zero exit is an `Ok` output, not an error.
    pub async fn exec(&self, command: Command) -> Result<Output, HostError> {
        let prefix = if self.sudo { "sudo -n -- " } else { "" };
        let invocation = if command.stdin.is_none() && command.script.len() > INLINE_SCRIPT_MAX {
            Invocation {
                command_line: format!("{prefix}/bin/sh -s"),
                stdin: Some(whole_or_nothing(&command.script)),
                timeout: command.timeout,
            }
        } else {
            Invocation {
                command_line: format!("{prefix}/bin/sh -c {}", quote(&command.script)),
                stdin: command.stdin,
                timeout: command.timeout,
            }
        };
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match &*self.transport {
            Transport::Local(t) => t.run(invocation).await,
            Transport::Ssh(t) => t.run(invocation).await,
        }
    }

    /// Write `content` to `path` atomically: a temporary file beside it, owner and mode set,
    /// fsync, then rename over the old one, so a reader sees the old file or the new one,
    /// never a half-written one, and a secret is never readable by others, not even briefly.
    pub async fn upload(&self, upload: Upload<'_>) -> Result<(), HostError> {
        let script = upload_script(&upload);
        let output = self
            .exec(Command::new(script).stdin(upload.content.to_vec()))
            .await?;
        if output.success() {
            Ok(())
        } else {
            Err(HostError::Other {
                host: self.name.to_string(),
                reason: format!(
                    "writing {} failed ({}): {}",
                    upload.path,
                    output.describe_exit(),
                    output.stderr_lossy().trim()
                ),
            })
        }
    }

    /// Close the connection (SSH) politely. Dropping the last clone closes it too.
    pub async fn close(&self) {
        if let Transport::Ssh(t) = &*self.transport {
            t.close().await;
        }
    }
}

/// A file to write with [`Host::upload`].
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    pub path: &'a str,
    pub content: &'a [u8],
    pub owner: &'a str,
    pub group: &'a str,
    pub mode: u32,
}

fn upload_script(upload: &Upload<'_>) -> String {
    // stdin ends early when the connection is lost: a short file is never renamed into place.
    let length = format!("test \"$(wc -c < {{}})\" -eq {}", upload.content.len());
    format!(
        "set -e; umask 077; {}",
        atomic_write_steps(
            upload.path,
            upload.owner,
            upload.group,
            upload.mode,
            Some(&length)
        )
    )
}

/// A script for `sh -s` that runs whole or not at all. The shell runs a script from stdin
/// command by command as it reads it, and when the connection drops, sshd closes that stdin:
/// the shell would run the part that arrived, and a here-document cut short would still be
/// written and renamed into place. Inside one `{ ... }` group the shell parses everything
/// before it runs anything, and a group cut short is a syntax error.
fn whole_or_nothing(script: &str) -> Vec<u8> {
    format!("{{\n{script}\n}}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use super::{atomic_write_steps, whole_or_nothing};

    /// Feeds `input` to `sh -s` in `dir`; whether it exited 0.
    fn sh_s(dir: &std::path::Path, input: &[u8]) -> bool {
        let mut child = Command::new("/bin/sh")
            .arg("-s")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait().unwrap().success()
    }

    #[test]
    fn a_script_cut_short_on_stdin_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let content = "a line of the new file\n".repeat(200);
        let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &content);
        let target = dir.path().join("conf");
        std::fs::write(&target, "old\n").unwrap();
        let target = target.to_str().unwrap();
        let steps = atomic_write_steps(target, "root", "root", 0o644, None);
        let script = format!(
            "touch started\nbase64 -d <<'EOF_MARK' | {{ {steps}; }}\n{encoded}\nEOF_MARK\n"
        );
        let whole = whole_or_nothing(&script);
        // Cut inside the here-document, as a lost connection would.
        let cut = &whole[..whole.len() / 2];
        assert!(!sh_s(dir.path(), cut));
        assert_eq!(std::fs::read_to_string(target).unwrap(), "old\n");
        assert!(!dir.path().join("started").exists());
        // Whole, it runs.
        assert!(sh_s(dir.path(), &whole));
        assert_eq!(std::fs::read_to_string(target).unwrap(), content);
        assert!(dir.path().join("started").exists());
    }

    #[test]
    fn an_upload_cut_short_is_not_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secret");
        std::fs::write(&target, "old\n").unwrap();
        let path = target.to_str().unwrap();
        let (user, group) = (whoami(), whoami_group());
        let upload = super::Upload {
            path,
            content: b"the whole new content\n",
            owner: &user,
            group: &group,
            mode: 0o600,
        };
        let script = super::upload_script(&upload);
        let run = |stdin: &[u8]| {
            let mut child = Command::new("/bin/sh")
                .args(["-c", &script])
                .stdin(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(stdin).unwrap();
            child.wait().unwrap().success()
        };
        assert!(!run(b"the whole"));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old\n");
        assert!(run(upload.content));
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "the whole new content\n"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".provision."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn whoami() -> String {
        let out = Command::new("id").arg("-un").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn whoami_group() -> String {
        let out = Command::new("id").arg("-gn").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
