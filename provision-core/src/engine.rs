//! The plan/apply engine: check every resource of a host in one round trip, work out what
//! differs, and (when applying) fix all of it in one more.

use std::fmt::Write as _;
use std::time::Duration;

use futures::StreamExt as _;

use crate::facts::Facts;
use crate::host::{Command, Host, HostError, SshTarget};
use crate::resource::{self, Resource};

/// What a converge does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Check and report; change nothing.
    Plan,
    /// Check, then fix what differs.
    Apply,
}

/// One resource that differs (or differed, once applied).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub resource: String,
    pub summary: Vec<String>,
    /// Unified diff of file content, secrets masked.
    pub diff: Option<String>,
}

/// How a host ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", content = "error", rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing differed.
    Unchanged,
    /// Plan mode: the changes would be made.
    Planned,
    /// Apply mode: every change was made.
    Changed,
    /// The host could not be reached or a step failed; the message names the step.
    Failed(String),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HostReport {
    pub host: String,
    pub changes: Vec<Change>,
    pub outcome: Outcome,
    pub round_trips: u64,
}

impl HostReport {
    pub fn failed(host: &str, error: impl ToString, round_trips: u64) -> HostReport {
        HostReport {
            host: host.to_string(),
            changes: Vec::new(),
            outcome: Outcome::Failed(error.to_string()),
            round_trips,
        }
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }
}

/// Where progress of long work goes (one line per host and step).
pub trait Progress: Sync {
    fn step(&self, host: &str, message: &str);
}

/// Progress that goes nowhere.
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _host: &str, _message: &str) {}
}

/// Options of a converge.
pub struct Options<'a> {
    pub mode: Mode,
    /// Bound for each remote command (check or apply).
    pub command_timeout: Option<Duration>,
    /// Replaces secret values in diffs and errors.
    pub mask: &'a (dyn Fn(&str) -> String + Sync),
    pub progress: &'a dyn Progress,
}

/// How to reach a host.
#[derive(Debug, Clone)]
pub enum Connection {
    Local,
    Ssh(SshTarget),
}

/// Connect to every host and gather its facts, `parallel` hosts at a time. The result keeps
/// the order of `targets`; a host that cannot be reached is an `Err` for that host only.
pub async fn connect_all(
    targets: &[(String, Connection)],
    parallel: usize,
    progress: &dyn Progress,
) -> Vec<Result<(Host, Facts), HostError>> {
    futures::stream::iter(targets.iter().map(|(name, connection)| async move {
        progress.step(name, "connecting");
        let host = match connection {
            Connection::Local => Host::local(name),
            Connection::Ssh(target) => Host::connect_ssh(name, target).await?,
        };
        progress.step(name, "gathering facts");
        let facts = Facts::gather(&host).await?;
        Ok((host, facts))
    }))
    .buffered(parallel.max(1))
    .collect()
    .await
}

/// Converge several hosts, `parallel` at a time; one host's failure does not stop the others.
pub async fn converge_all(
    work: Vec<(Host, Vec<Resource>)>,
    parallel: usize,
    options: &Options<'_>,
) -> Vec<HostReport> {
    let work = work
        .into_iter()
        .map(|(host, resources)| (host, resources, None))
        .collect();
    converge_all_checked(work, parallel, options).await
}

/// [`converge_all`] where another script may have run a host's check already in this run:
/// its output ([`converge_checked`]) saves that host the check's round trip.
pub async fn converge_all_checked(
    work: Vec<(Host, Vec<Resource>, Option<String>)>,
    parallel: usize,
    options: &Options<'_>,
) -> Vec<HostReport> {
    futures::stream::iter(
        work.into_iter()
            .map(|(host, resources, checked)| async move {
                converge_checked(&host, &resources, checked.as_deref(), options).await
            }),
    )
    .buffered(parallel.max(1))
    .collect()
    .await
}

/// Check the resources of one host in one round trip and, in apply mode, fix what differs in
/// one more.
pub async fn converge(host: &Host, resources: &[Resource], options: &Options<'_>) -> HostReport {
    converge_checked(host, resources, None, options).await
}

/// The script [`converge`] checks `resources` with, for another step's script to run on the
/// host (a deploy script checks the services of the release it leaves live); its output goes
/// to [`converge_checked`].
pub fn check_script(resources: &[Resource]) -> Result<String, String> {
    let mut script = resource::check_script(resources)?;
    script.push_str("echo @end\n");
    Ok(script)
}

/// [`converge`] where the check may have run already in this run, by another script on
/// `host`: `checked` is then the output of [`check_script`]. In sync, it costs no round trip;
/// in apply mode what differs is fixed in one. A check that did not finish, or none, is run.
pub async fn converge_checked(
    host: &Host,
    resources: &[Resource],
    checked: Option<&str>,
    options: &Options<'_>,
) -> HostReport {
    debug_dump(host.name(), resources, options.mode);
    let start = host.round_trips();
    let mask = options.mask;
    let report = |outcome, changes| HostReport {
        host: host.name().to_string(),
        changes,
        outcome,
        round_trips: host.round_trips() - start,
    };
    let fail = |step: &str, error: String| {
        report(
            Outcome::Failed(mask(&format!("{step}: {error}"))),
            Vec::new(),
        )
    };

    if let Err(error) = check_dependencies(resources) {
        return fail("planning", error);
    }
    let states = match checked.and_then(|output| finished_check(resources, output)) {
        Some(states) => states,
        None => {
            options.progress.step(
                host.name(),
                &format!("checking {} resources", resources.len()),
            );
            match check(host, resources, options.command_timeout).await {
                Ok(states) => states,
                Err(error) => return fail("checking", error),
            }
        }
    };

    let mut changed_ids: Vec<String> = Vec::new();
    let mut changes = Vec::new();
    let mut fixes = Vec::new();
    for (index, resource) in resources.iter().enumerate() {
        let id = resource.id();
        let triggered: Vec<String> = resource
            .depends_on()
            .into_iter()
            .filter(|dep| changed_ids.iter().any(|c| c == dep))
            .map(str::to_string)
            .collect();
        let state: Vec<&str> = states[index].iter().map(String::as_str).collect();
        match resource.drift(&state, &triggered) {
            Ok(None) => {}
            Ok(Some(drift)) => {
                changes.push(Change {
                    resource: id.clone(),
                    summary: drift.summary.iter().map(|s| mask(s)).collect(),
                    diff: drift.diff.as_deref().map(mask),
                });
                fixes.push((index, drift.fix));
                changed_ids.push(id);
            }
            Err(error) => return fail("checking", format!("{id}: {error}")),
        }
    }

    if changes.is_empty() {
        return report(Outcome::Unchanged, changes);
    }
    if options.mode == Mode::Plan {
        return report(Outcome::Planned, changes);
    }
    options
        .progress
        .step(host.name(), &format!("applying {} changes", changes.len()));
    match apply(host, resources, &fixes, options.command_timeout).await {
        Ok(()) => report(Outcome::Changed, changes),
        Err(error) => report(Outcome::Failed(mask(&format!("applying {error}"))), changes),
    }
}

/// Every dependency must name a resource listed before the one that depends on it.
fn check_dependencies(resources: &[Resource]) -> Result<(), String> {
    let mut seen: Vec<String> = Vec::new();
    for resource in resources {
        for dep in resource.depends_on() {
            if !seen.iter().any(|s| s == dep) {
                return Err(format!(
                    "{} depends on {dep}, which is not listed before it",
                    resource.id()
                ));
            }
        }
        let id = resource.id();
        if seen.contains(&id) {
            return Err(format!("{id} is listed twice"));
        }
        seen.push(id);
    }
    Ok(())
}

/// Run the checks of all resources as one script; return each resource's state lines.
async fn check(
    host: &Host,
    resources: &[Resource],
    timeout: Option<Duration>,
) -> Result<Vec<Vec<String>>, String> {
    let mut command = Command::new(check_script(resources)?);
    command.timeout = timeout;
    let output = host.exec(command).await.map_err(|e| e.to_string())?;
    finished_check(resources, &output.stdout_lossy()).ok_or_else(|| {
        format!(
            "the check script did not finish ({}): {}",
            output.describe_exit(),
            output.stderr_lossy().trim()
        )
    })
}

/// Each resource's state lines from the output of [`check_script`]; `None` when the check
/// did not finish.
fn finished_check(resources: &[Resource], output: &str) -> Option<Vec<Vec<String>>> {
    output
        .lines()
        .any(|l| l == "@end")
        .then(|| resource::parse_check(resources, output))
}

/// Run all fixes as one script. Each fix runs in a subshell with `set -e`; the first failure
/// stops the script, and its stderr is reported with the resource it belongs to.
async fn apply(
    host: &Host,
    resources: &[Resource],
    fixes: &[(usize, String)],
    timeout: Option<Duration>,
) -> Result<(), String> {
    let mut script =
        String::from("set -u\numask 022\nerrf=$(mktemp)\ntrap 'rm -f \"$errf\"' EXIT\n");
    let mut reload_pending = false;
    let daemon_reload = |script: &mut String| {
        step(script, "daemon-reload", "systemctl daemon-reload\n");
    };
    for (index, fix) in fixes {
        let resource = &resources[*index];
        if reload_pending && matches!(resource, Resource::Service(_)) {
            daemon_reload(&mut script);
            reload_pending = false;
        }
        step(&mut script, &index.to_string(), fix);
        reload_pending |= matches!(resource, Resource::Unit(_));
    }
    if reload_pending {
        daemon_reload(&mut script);
    }
    script.push_str("echo @end\n");

    let mut command = Command::new(script);
    command.timeout = timeout;
    let output = host.exec(command).await.map_err(|e| e.to_string())?;
    let stdout = output.stdout_lossy();
    if let Some(failed) = stdout.lines().find_map(|l| l.strip_prefix("@failed ")) {
        let mut parts = failed.split(' ');
        let tag = parts.next().unwrap_or("");
        let code = parts.next().unwrap_or("?");
        let what = tag
            .parse::<usize>()
            .ok()
            .and_then(|i| resources.get(i))
            .map(Resource::id)
            .unwrap_or_else(|| tag.to_string());
        return Err(format!(
            "{what} (exit status {code}): {}",
            output.stderr_lossy().trim()
        ));
    }
    if !stdout.lines().any(|l| l == "@end") {
        return Err(format!(
            "the apply script did not finish ({}): {}",
            output.describe_exit(),
            output.stderr_lossy().trim()
        ));
    }
    Ok(())
}

fn step(script: &mut String, tag: &str, fix: &str) {
    let _ = write!(
        script,
        "( set -e\n{fix}) 2>\"$errf\" || {{ rc=$?; echo \"@failed {tag} $rc\"; cat \"$errf\" >&2; exit 1; }}\n"
    );
}

/// With `PROVISION_DEBUG_RESOURCES=DIR`, every converge appends the host's resources, in full,
/// as one JSON line to `DIR/HOST.jsonl` (mode 0600: secrets are in it). The benchmark against
/// Ansible builds its playbook from these, so both tools manage exactly the same things.
pub const DEBUG_RESOURCES_ENV: &str = "PROVISION_DEBUG_RESOURCES";

fn debug_dump(host: &str, resources: &[Resource], mode: Mode) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let Some(dir) = std::env::var_os(DEBUG_RESOURCES_ENV) else {
        return;
    };
    let line = serde_json::json!({
        "mode": if mode == Mode::Plan { "plan" } else { "apply" },
        "resources": resources.iter().map(describe).collect::<Vec<_>>(),
    });
    let path = std::path::Path::new(&dir).join(format!("{host}.jsonl"));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{line}"));
    if let Err(error) = written {
        eprintln!(
            "{DEBUG_RESOURCES_ENV}: cannot write {}: {error}",
            path.display()
        );
    }
}

fn describe(resource: &Resource) -> serde_json::Value {
    use base64::Engine as _;
    use serde_json::json;
    let file = |f: &resource::File| {
        json!({
            "path": f.path,
            "content_base64": base64::engine::general_purpose::STANDARD.encode(&f.content),
            "owner": f.owner,
            "group": f.group,
            "mode": f.mode,
            "validate": f.validate,
            "secret": f.secret,
        })
    };
    let mut value = match resource {
        Resource::File(f) => file(f),
        Resource::Unit(u) => file(&u.file()),
        Resource::Directory(d) => {
            json!({"path": d.path, "owner": d.owner, "group": d.group, "mode": d.mode})
        }
        Resource::Symlink(l) => {
            json!({"path": l.path, "target": l.target, "replace_existing": l.replace_existing})
        }
        Resource::Packages(p) => json!({"names": p.names}),
        Resource::User(u) => json!({
            "name": u.name, "group": u.group, "home": u.home, "shell": u.shell, "system": u.system,
        }),
        Resource::Group(g) => json!({"name": g.name, "system": g.system}),
        Resource::Service(s) => json!({
            "name": s.name,
            "enabled": s.enabled,
            "state": s.state.map(|state| match state {
                resource::ServiceState::Running => "running",
                resource::ServiceState::Stopped => "stopped",
            }),
            "restart_on": s.restart_on,
            "reload_on": s.reload_on,
        }),
        Resource::Instances(i) => json!({"template": i.template, "keep": i.keep}),
        Resource::Mount(m) => json!({
            "device": m.device, "mount_point": m.mount_point, "fstype": m.fstype, "options": m.options,
        }),
        Resource::Script(s) => {
            json!({"name": s.name, "summary": s.summary, "check": s.check, "fix": s.fix})
        }
    };
    let id = resource.id();
    let kind = id.split(':').next().unwrap_or_default().to_string();
    value["id"] = json!(id);
    value["kind"] = json!(kind);
    value
}
