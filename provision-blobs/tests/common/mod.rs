//! Helpers of the sandbox tests: reach the hosts the way `provision --sandbox` does, converge
//! resources on several of them at once with the real engine, run commands over SSH.

#![allow(dead_code)]

use std::process::Output;
use std::time::Duration;

use provision_core::engine::{self, Connection, HostReport, Mode, Options, Quiet};
use provision_core::host::SshTarget;
use provision_core::resource::Resource;
use provision_core::template::Templates;
use provision_sandbox::fixture;

pub fn templates() -> Templates {
    Templates::new(provision_blobs::TEMPLATES).expect("templates parse")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `script` on `host`; returns stdout, panics with both outputs when it fails.
pub fn run(hosts: &fixture::Hosts, host: &str, script: &str) -> String {
    let out = hosts.ssh(hosts.host(host), script);
    assert!(
        out.status.success(),
        "{host}: {script}\nexit: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `script` on `host` and returns what happened, success or not.
pub fn try_run(hosts: &fixture::Hosts, host: &str, script: &str) -> Output {
    hosts.ssh(hosts.host(host), script)
}

pub fn options() -> Options<'static> {
    Options {
        mode: Mode::Apply,
        command_timeout: Some(Duration::from_secs(900)),
        mask: &|s: &str| s.to_string(),
        progress: &Quiet,
    }
}

/// The inventory's key and strict host-key checking, as `provision --sandbox` connects.
fn target(hosts: &fixture::Hosts, name: &str) -> Connection {
    let inventory = hosts.inventory();
    let entry = inventory
        .host(name)
        .unwrap_or_else(|| panic!("no host {name} in the sandbox"));
    Connection::Ssh(SshTarget::with_key_file(
        entry.address.to_string(),
        entry.port,
        entry.user.clone(),
        inventory.key_file.clone(),
        inventory.known_hosts.clone(),
    ))
}

/// Connect afresh (as a new `provision up` would) and converge every host's resources at the
/// same time; reports in the order given.
pub async fn converge(hosts: &fixture::Hosts, work: Vec<(&str, Vec<Resource>)>) -> Vec<HostReport> {
    let targets: Vec<(String, Connection)> = work
        .iter()
        .map(|(name, _)| (name.to_string(), target(hosts, name)))
        .collect();
    let connected = engine::connect_all(&targets, targets.len(), &Quiet).await;
    let mut jobs = Vec::new();
    for ((name, resources), connection) in work.into_iter().zip(connected) {
        let (host, _facts) = connection.unwrap_or_else(|e| panic!("connecting to {name}: {e}"));
        jobs.push((host, resources));
    }
    let parallel = jobs.len();
    engine::converge_all(jobs, parallel, &options()).await
}

/// Panics with the report when a host failed.
pub fn assert_converged(reports: &[HostReport]) {
    for report in reports {
        assert!(!report.is_failed(), "{} failed: {report:#?}", report.host);
    }
}

/// A one-line description of what a converge changed, for failure messages.
pub fn changed(report: &HostReport) -> Vec<String> {
    report
        .changes
        .iter()
        .map(|c| format!("{}: {}", c.resource, c.summary.join("; ")))
        .collect()
}
