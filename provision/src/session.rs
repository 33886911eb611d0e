//! A stack loaded for one command: the stack, its secrets, the hosts selected by --host and
//! --layer, and how to reach each of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use provision_core::engine::{Connection, Progress};
use provision_core::host::SshTarget;
use provision_core::stack::{HostSpec, Layer, Secrets, Stack, nearest};

use crate::BadInput;
use crate::cli::StackArgs;

pub struct Session {
    pub stack: Stack,
    pub secrets: Secrets,
    pub args: StackArgs,
    /// Instance hosts taken out of the frontend (`provision watch`): HAProxy lists none of
    /// their clients and discovery does not reach them. Empty for every other command.
    pub away: BTreeSet<String>,
    /// Addresses from `provision sandbox up`, when --sandbox is given.
    sandbox: Option<provision_sandbox::Inventory>,
}

impl Session {
    pub fn load(args: &StackArgs) -> anyhow::Result<Session> {
        let mut stack = Stack::load(&args.stack, args.custom_json.as_deref())?;
        if generate_stats_password(&stack)? {
            stack = Stack::load(&args.stack, args.custom_json.as_deref())?;
        }
        let secrets = stack.secrets().clone();
        let sandbox = if args.sandbox {
            Some(
                provision_sandbox::Sandbox::new(stack.name())
                    .and_then(|sandbox| sandbox.inventory())
                    .with_context(|| {
                        format!(
                            "--sandbox: no running sandbox for stack `{}`; start it with \
                         `provision sandbox up --stack {}`",
                            stack.name(),
                            args.stack.display()
                        )
                    })?,
            )
        } else {
            None
        };
        let mut stack = stack;
        if let Some(inventory) = &sandbox {
            move_into_sandbox(&mut stack, inventory)?;
        }
        let session = Session {
            stack,
            secrets,
            args: args.clone(),
            away: BTreeSet::new(),
            sandbox,
        };
        session.check_selection()?;
        Ok(session)
    }

    /// Every --host and --layer must name something in the stack.
    fn check_selection(&self) -> Result<(), BadInput> {
        let names: Vec<&str> = self.stack.hosts().iter().map(|h| h.name.as_str()).collect();
        for wanted in &self.args.hosts {
            if !names.contains(&wanted.as_str()) {
                return Err(BadInput(format!(
                    "--host {wanted}: no such host in {}{}",
                    self.args.stack.display(),
                    nearest(wanted, names.iter().copied())
                        .map(|n| format!("; did you mean `{n}`?"))
                        .unwrap_or_default()
                )));
            }
        }
        for wanted in &self.args.layers {
            if wanted.parse::<Layer>().is_err() {
                let all: Vec<&str> = Layer::ALL.iter().map(|l| l.as_str()).collect();
                return Err(BadInput(format!(
                    "--layer {wanted}: no such layer{}; layers are: {}",
                    nearest(wanted, all.iter().copied())
                        .map(|n| format!(" (did you mean `{n}`?)"))
                        .unwrap_or_default(),
                    all.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The hosts this command works on, in stack order.
    pub fn selected(&self) -> Vec<&HostSpec> {
        self.stack
            .hosts()
            .iter()
            .filter(|h| self.args.hosts.is_empty() || self.args.hosts.contains(&h.name))
            .filter(|h| {
                self.args.layers.is_empty()
                    || self
                        .args
                        .layers
                        .iter()
                        .any(|l| h.layers.iter().any(|hl| hl.as_str() == l))
            })
            .collect()
    }

    /// How to reach a host: its stack address and the SSH defaults, or its sandbox twin.
    pub fn connection(&self, host: &HostSpec) -> Result<Connection, BadInput> {
        let ssh = self.stack.ssh();
        let mut target = SshTarget {
            address: host.address.clone(),
            port: host.port,
            user: host.user.clone(),
            key_file: host.key.clone(),
            use_agent: ssh.agent,
            known_hosts: ssh.known_hosts.clone(),
            accept_new_host_keys: self.args.accept_new_host_keys,
            connect_timeout: Duration::from_secs(ssh.connect_timeout),
            keepalive_interval: Duration::from_secs(15),
        };
        if let Some(inventory) = &self.sandbox {
            target.key_file = Some(inventory.key_file.clone());
            target.use_agent = false;
            target.known_hosts = inventory.known_hosts.clone();
        }
        Ok(Connection::Ssh(target))
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(
            self.args
                .timeout
                .unwrap_or(self.stack.ssh().command_timeout),
        )
    }

    pub fn mask(&self, text: &str) -> String {
        self.secrets.mask(text)
    }

    pub fn stack_path(&self) -> &Path {
        &self.args.stack
    }
}

/// The HAProxy statistics need a password. When the stack has an `lb` host, statistics on,
/// no password, and a secrets file, make one and add it to that file (created with mode 0600).
/// Returns whether it did.
fn generate_stats_password(stack: &Stack) -> anyhow::Result<bool> {
    let haproxy = &stack.attributes().haproxy;
    if stack.hosts_with(Layer::Lb).is_empty()
        || !haproxy.enable_stats
        || haproxy.stats_password.is_some()
    {
        return Ok(false);
    }
    let Some(file) = &stack.secrets_file else {
        return Ok(false);
    };
    let mut random = [0u8; 18];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("reading /dev/urandom")?,
        &mut random,
    )?;
    let password: String = random
        .iter()
        .map(|b| {
            const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
            ALPHABET[usize::from(*b) % ALPHABET.len()] as char
        })
        .collect();
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let existing = std::fs::read_to_string(file).unwrap_or_default();
    let separator = if existing.is_empty() || existing.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("adding the HAProxy stats password to {}", file.display()))?;
    writeln!(
        out,
        "{separator}# Generated by provision for the HAProxy statistics at haproxy.stats_url.\n\
         haproxy_stats_password = \"{password}\""
    )?;
    eprintln!(
        "provision: generated the HAProxy stats password into {} (haproxy_stats_password)",
        file.display()
    );
    Ok(true)
}

/// With --sandbox, every host's address, port and user become its sandbox twin's, so that
/// discovery (HAProxy backends, the ZEO address, ...) points at the sandbox too.
fn move_into_sandbox(
    stack: &mut Stack,
    inventory: &provision_sandbox::Inventory,
) -> Result<(), BadInput> {
    for host in &mut stack.hosts {
        let twin = inventory.host(&host.name).ok_or_else(|| {
            BadInput(format!(
                "--sandbox: host {} is not in the running sandbox `{}`; run \
                 `provision sandbox up` again after changing the stack's hosts",
                host.name, inventory.name
            ))
        })?;
        host.address = twin.address.to_string();
        host.private_address = None;
        host.port = twin.port;
        host.user = twin.user.clone();
    }
    Ok(())
}

/// Progress lines on stderr: `[host] step (elapsed)`.
pub struct StderrProgress {
    start: Instant,
}

impl StderrProgress {
    pub fn new() -> StderrProgress {
        StderrProgress {
            start: Instant::now(),
        }
    }
}

impl Progress for StderrProgress {
    fn step(&self, host: &str, message: &str) {
        eprintln!(
            "[{host}] {message} ({:.1}s)",
            self.start.elapsed().as_secs_f64()
        );
    }
}

/// Facts by host name, for discovery (client counts of other hosts).
pub type FactsByHost = BTreeMap<String, provision_core::facts::Facts>;
