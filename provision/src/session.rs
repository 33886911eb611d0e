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
        if generate_missing_secrets(&stack)? {
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

/// Passwords only provision's own services use, made when the stack needs them, has none
/// and names a secrets file: they are added to that file (created with mode 0600). Returns
/// whether it added any.
fn generate_missing_secrets(stack: &Stack) -> anyhow::Result<bool> {
    let Some(file) = &stack.secrets_file else {
        return Ok(false);
    };
    let attributes = stack.attributes();
    let haproxy = &attributes.haproxy;
    // (name, what it is for)
    let mut wanted = Vec::new();
    if !stack.hosts_with(Layer::Lb).is_empty()
        && haproxy.enable_stats
        && haproxy.stats_password.is_none()
    {
        wanted.push((
            "haproxy_stats_password",
            "the HAProxy statistics at haproxy.stats_url",
        ));
    }
    if !stack.hosts_with(Layer::CeleryBroker).is_empty()
        && !attributes.redis.config.contains_key("requirepass")
    {
        wanted.push((
            "redis_config_requirepass",
            "the Redis broker of the Celery workers",
        ));
    }
    if wanted.is_empty() {
        return Ok(false);
    }
    let mut urandom = std::fs::File::open("/dev/urandom").context("reading /dev/urandom")?;
    let mut lines = String::new();
    for (name, what) in &wanted {
        let mut random = [0u8; 18];
        std::io::Read::read_exact(&mut urandom, &mut random)?;
        // Letters and digits only: the password goes into URLs and config files unquoted.
        let password: String = random
            .iter()
            .map(|b| {
                const ALPHABET: &[u8] =
                    b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
                ALPHABET[usize::from(*b) % ALPHABET.len()] as char
            })
            .collect();
        lines.push_str(&format!(
            "# Generated by provision for {what}.\n{name} = \"{password}\"\n"
        ));
    }
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let existing = std::fs::read_to_string(file).unwrap_or_default();
    let separator = if existing.is_empty() || existing.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let names: Vec<&str> = wanted.iter().map(|(name, _)| *name).collect();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut out| write!(out, "{separator}{lines}"))
        .with_context(|| format!("adding {} to {}", names.join(" and "), file.display()))?;
    eprintln!(
        "provision: generated {} into {}",
        names.join(" and "),
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
