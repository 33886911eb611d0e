//! Test fixture: booted, ssh-reachable hosts under a unique sandbox name,
//! destroyed on drop (also when the test fails or panics).
//!
//! ```ignore
//! #[tokio::test]
//! async fn converges() {
//!     let Some(hosts) = provision_sandbox::fixture::hosts(3).await else { return };
//!     let out = hosts.ssh(&hosts[0], "hostname");
//! }
//! ```
//!
//! Without root, nspawn or cgroup2 the fixture prints one line saying why and
//! returns `None`, except when `PROVISION_SANDBOX=required`, where it panics.
//! Any other failure (a host that does not boot) always panics.

use std::io::Write;
use std::ops::Index;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Config;
use crate::host::Host;
use crate::inventory::Inventory;
use crate::sandbox::{ProxyMode, Sandbox, UpOptions, unavailable_reason};
use crate::tools::{self, Tools};

/// Set to `required` to make the fixture fail instead of skipping.
pub const ENV: &str = "PROVISION_SANDBOX";

fn required() -> bool {
    std::env::var(ENV).is_ok_and(|v| v == "required")
}

/// Writes straight to stderr: libtest does not capture it, so a skip shows.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Why sandbox tests cannot run here, or `None`.
pub fn skip_reason() -> Option<String> {
    match Config::from_env() {
        Ok(config) => unavailable_reason(&config).map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    }
}

/// For tests that use the sandbox without the fixture: `false` after printing
/// the one skip line when it cannot run here; panics instead when
/// `PROVISION_SANDBOX=required`.
pub fn available() -> bool {
    match skip_reason() {
        None => true,
        Some(reason) if required() => panic!("{ENV}=required but the sandbox cannot run: {reason}"),
        Some(reason) => {
            say(&format!("skipped: {reason}"));
            false
        }
    }
}

/// Booted hosts of one test. Derefs to nothing; index it (`hosts[0]`) or use
/// [`Hosts::host`].
pub struct Hosts {
    sandbox: Sandbox,
    inventory: Inventory,
    hosts: Vec<Host>,
    destroyed: bool,
}

impl std::fmt::Debug for Hosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosts")
            .field("sandbox", &self.sandbox.name())
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl Hosts {
    pub fn name(&self) -> &str {
        self.sandbox.name()
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name() == name)
            .unwrap_or_else(|| panic!("sandbox {} has no host {name}", self.name()))
    }

    pub fn key_file(&self) -> &Path {
        &self.inventory.key_file
    }

    pub fn known_hosts(&self) -> &Path {
        &self.inventory.known_hosts
    }

    /// An `ssh` command to `host` with the sandbox key and strict host-key
    /// checking; append the remote command.
    pub fn ssh_command(&self, host: &Host) -> Command {
        let ssh = Tools::find(&[tools::SSH]).unwrap_or_else(|e| panic!("{e}"));
        let entry = self
            .inventory
            .host(host.name())
            .unwrap_or_else(|| panic!("{} is not in the inventory", host.name()));
        let mut cmd = ssh.command(tools::SSH);
        cmd.args(self.inventory.ssh_args(entry));
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    /// Runs `script` on `host` over SSH; panics only if ssh cannot be started.
    pub fn ssh(&self, host: &Host, script: &str) -> Output {
        let mut cmd = self.ssh_command(host);
        cmd.arg(script);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run ssh to {}: {e}", host.name()))
    }

    /// Destroys the sandbox now and reports errors (drop only prints them).
    pub fn destroy(mut self) -> crate::Result<()> {
        self.destroyed = true;
        self.sandbox.down(true)
    }
}

impl Index<usize> for Hosts {
    type Output = Host;
    fn index(&self, i: usize) -> &Host {
        &self.hosts[i]
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if self.destroyed {
            return;
        }
        if let Err(e) = self.sandbox.down(true) {
            say(&format!(
                "provision-sandbox fixture: destroying sandbox {} failed: {e}",
                self.name()
            ));
        }
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique sandbox name: pid, a counter, and a bit of the test's name (libtest
/// names each test's thread after the test).
fn unique_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    let last = test.rsplit("::").next().unwrap_or(test);
    let mut short: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("t{}-{n}-", std::process::id());
    let room = crate::names::MAX_SANDBOX_NAME.saturating_sub(name.len());
    short.truncate(room);
    name.push_str(&short);
    while name.ends_with('-') || name.contains("--") {
        name = name.trim_end_matches('-').replace("--", "-");
    }
    name
}

/// Destroys sandboxes left by fixtures of test processes that died (killed by a
/// timeout, for instance), once per process.
fn collect_stale(config: &Config) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for name in Sandbox::list(config) {
            if let Ok(sandbox) = Sandbox::with_config(config.clone(), &name)
                && sandbox.stale_fixture()
            {
                say(&format!(
                    "provision-sandbox fixture: removing sandbox {name} left by a test process that died"
                ));
                let _ = sandbox.down(true);
            }
        }
    });
}

/// `n` hosts named host1..hostN.
pub fn hosts_blocking(n: usize) -> Option<Hosts> {
    let names: Vec<String> = (1..=n).map(|i| format!("host{i}")).collect();
    named_blocking(&names)
}

/// Hosts with the given names.
pub fn named_blocking<S: AsRef<str>>(names: &[S]) -> Option<Hosts> {
    let names: Vec<String> = names.iter().map(|s| s.as_ref().to_string()).collect();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => panic!("sandbox configuration: {e}"),
    };
    boot(config, unique_name(), names)
}

/// Hosts with the given names under a given configuration (own subnet, bridge
/// or state directory).
pub fn with_config_blocking<S: AsRef<str>>(config: Config, names: &[S]) -> Option<Hosts> {
    let names: Vec<String> = names.iter().map(|s| s.as_ref().to_string()).collect();
    boot(config, unique_name(), names)
}

/// `n` hosts named host1..hostN (async: boots on tokio's blocking pool).
pub async fn hosts(n: usize) -> Option<Hosts> {
    let names: Vec<String> = (1..=n).map(|i| format!("host{i}")).collect();
    named(&names).await
}

/// Hosts with the given names (async).
pub async fn named<S: AsRef<str>>(names: &[S]) -> Option<Hosts> {
    let names: Vec<String> = names.iter().map(|s| s.as_ref().to_string()).collect();
    let name = unique_name();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => panic!("sandbox configuration: {e}"),
    };
    match tokio::task::spawn_blocking(move || boot(config, name, names)).await {
        Ok(hosts) => hosts,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("sandbox fixture task failed: {e}"),
    }
}

fn boot(config: Config, name: String, names: Vec<String>) -> Option<Hosts> {
    if let Some(reason) = unavailable_reason(&config) {
        if required() {
            panic!("{ENV}=required but the sandbox cannot run: {reason}");
        }
        say(&format!("skipped: {reason}"));
        return None;
    }
    collect_stale(&config);
    let sandbox = Sandbox::with_config(config, &name).unwrap_or_else(|e| panic!("{e}"));
    let opts = UpOptions {
        proxy: ProxyMode::InProcess,
        fixture: true,
        progress: Some(std::sync::Arc::new(|m: &str| {
            say(&format!("provision-sandbox: {m}"))
        })),
        ..UpOptions::default()
    };
    let inventory = match sandbox.up(&names, &opts) {
        Ok(inventory) => inventory,
        Err(e) => panic!("sandbox {name}: up failed: {e}"),
    };
    let hosts = sandbox.hosts().unwrap_or_else(|e| panic!("{e}"));
    Some(Hosts {
        sandbox,
        inventory,
        hosts,
        destroyed: false,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn unique_names_are_valid_and_distinct() {
        let a = super::unique_name();
        let b = super::unique_name();
        assert_ne!(a, b);
        crate::names::check_sandbox_name(&a).unwrap();
        assert!(a.len() <= crate::names::MAX_SANDBOX_NAME, "{a}");
    }
}
