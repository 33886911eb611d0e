//! The commands that work on a stack's hosts.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use provision_core::engine::{self, Connection, HostReport, Mode, Options, Outcome, Progress as _};
use provision_core::facts::Facts;
use provision_core::host::{Command, Host, HostError};
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::stack::{HostSpec, Layer};
use provision_core::template::Templates;

use crate::cli::StackArgs;
use crate::deploy::{self, DeployOutcome, HostDeploy};
use crate::layers::{self, HostContext};
use crate::output::{count, json_list, print_reports};
use crate::session::{FactsByHost, Session, StderrProgress};
use crate::{BadInput, EXIT_HOST_FAILED, EXIT_OK, zeo_release};

/// `plan`, `up`, `setup`, `configure`.
pub async fn converge(args: &StackArgs, phases: &[Phase], plan: bool) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let session = Session::load(args)?;
    let (reports, deploys) = converge_session(&session, phases, plan).await?;
    if args.json && !deploys.is_empty() {
        // One JSON document: the hosts' converge and the releases.
        let value = serde_json::json!({
            "hosts": reports,
            "releases": deploys,
            "elapsed_seconds": start.elapsed().as_secs_f64(),
        });
        crate::out!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_reports(&reports, args.json, start.elapsed());
        if !deploys.is_empty() {
            print_deploys(&deploys, false);
        }
    }
    let deploy_failed = deploys
        .iter()
        .any(|d| matches!(d.outcome, DeployOutcome::Failed(_)));
    Ok(if deploy_failed {
        ExitCode::from(EXIT_HOST_FAILED)
    } else {
        exit_code(&reports)
    })
}

/// The converge of the session's selected hosts, then the releases of its instance hosts:
/// a report per host and per release, printed by the caller.
pub(crate) async fn converge_session(
    session: &Session,
    phases: &[Phase],
    plan: bool,
) -> anyhow::Result<(Vec<HostReport>, Vec<HostDeploy>)> {
    let args = &session.args;
    let selected = session.selected();
    check_before_connecting(session, &selected, phases, None).await?;
    let templates = Templates::new(&layers::all_templates()).context("loading templates")?;
    // The hosts mount the blob bucket: it must exist first.
    for line in layers::blobs::ensure_buckets(&session.stack, plan).await? {
        eprintln!("{line}");
    }
    let progress = StderrProgress::new();

    // Hosts whose facts discovery needs are reached too, but not converged.
    let mut reach = selected.clone();
    for host in &selected {
        for other in layers::hosts_for_discovery(&session.stack, host) {
            if !reach.iter().any(|h| h.name == other.name) && !session.away.contains(&other.name) {
                reach.push(other);
            }
        }
    }
    let (connected, failed) = connect(session, &reach, &progress).await?;
    let is_selected = |name: &str| selected.iter().any(|h| h.name == name);
    let mut reports: Vec<HostReport> = failed
        .into_iter()
        .filter(|r| is_selected(&r.host))
        .collect();
    let all_facts: FactsByHost = connected
        .iter()
        .map(|(host, facts)| (host.name().to_string(), facts.clone()))
        .collect();
    let mut work = Vec::new();
    // Reached for discovery or the drain only: not converged.
    let mut lb_extra = Vec::new();
    for (host, facts) in connected {
        let Some(spec) = selected.iter().find(|h| h.name == host.name()) else {
            lb_extra.push(host);
            continue;
        };
        let context = HostContext {
            stack: &session.stack,
            host: spec,
            facts: &facts,
            all_facts: &all_facts,
            away: &session.away,
        };
        match layers::resources(&context, phases, &templates) {
            Ok(resources) => work.push((host, resources)),
            Err(error) => reports.push(HostReport::failed(
                host.name(),
                format!("planning: {error:#}"),
                host.round_trips(),
            )),
        }
    }
    let mask = |s: &str| session.mask(s);
    let options = Options {
        mode: if plan { Mode::Plan } else { Mode::Apply },
        command_timeout: Some(session.command_timeout()),
        mask: &mask,
        progress: &progress,
    };
    let handles: Vec<Host> = work.iter().map(|(host, _)| host.clone()).collect();
    reports.extend(engine::converge_all(work, usize::from(args.parallel), &options).await);
    sort_like_stack(&mut reports, &selected);

    // Then the releases of the instance hosts that converged: `up` deploys the app's revision,
    // `configure` rebuilds the live revision when the generated configuration changed.
    let release_phase = if phases.contains(&Phase::Deploy) {
        Some(ReleaseRevision::App)
    } else if phases.contains(&Phase::Configure) {
        Some(ReleaseRevision::Live)
    } else {
        None
    };
    let mut deploys = Vec::new();
    if let Some(revision) = release_phase {
        let hosts = converged_hosts(&reports, &handles, &all_facts);
        // The ZEO server's release (buildout mode) first: the clients need the server.
        let zeo_revision = match revision {
            ReleaseRevision::App => zeo_release::Revision::App,
            ReleaseRevision::Live => zeo_release::Revision::Live,
        };
        zeo_release::converge(
            session,
            &hosts,
            &mut reports,
            zeo_revision,
            plan,
            &templates,
            &progress,
        )
        .await;
    }
    if let (Some(revision), false) = (release_phase, plan) {
        // Again: a failed ZEO release leaves its host out.
        let hosts = converged_hosts(&reports, &handles, &all_facts);
        let lbs = lb_handles(session, &hosts, &lb_extra);
        deploys = release_step(session, &hosts, &lbs, revision, &templates, &progress).await?;
    }
    Ok((reports, deploys))
}

/// Which revision a release step builds.
#[derive(Debug, Clone, Copy)]
enum ReleaseRevision {
    /// The app's revision from the stack (or --revision).
    App,
    /// The revision that is live (a rebuild when the generated configuration changed).
    Live,
}

/// The lb hosts among the connected ones (the rolling restart drains through them).
fn lb_handles(session: &Session, connected: &[(Host, Facts)], extra: &[Host]) -> Vec<Host> {
    let lbs = session.stack.hosts_with(Layer::Lb);
    connected
        .iter()
        .map(|(h, _)| h)
        .chain(extra.iter())
        .filter(|h| lbs.iter().any(|l| l.name == h.name()))
        .cloned()
        .collect()
}

/// The deploy part of `up` and `configure` for the instance hosts among `hosts`.
async fn release_step(
    session: &Session,
    hosts: &[(Host, Facts)],
    lbs: &[Host],
    revision: ReleaseRevision,
    templates: &Templates,
    progress: &StderrProgress,
) -> anyhow::Result<Vec<HostDeploy>> {
    let targets = targets(session, hosts, templates)?;
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let revision = match revision {
        ReleaseRevision::App => None,
        ReleaseRevision::Live => match live_revision(&targets, templates).await? {
            Some(live) => Some(live),
            // Nothing deployed yet: `configure` has nothing to rebuild.
            None => return Ok(Vec::new()),
        },
    };
    let mut reports = deploy::deploy(
        session,
        &targets,
        lbs,
        revision.as_deref(),
        0,
        templates,
        progress,
    )
    .await?;
    ensure_clients_running(session, &targets, &mut reports, progress).await;
    Ok(reports)
}

/// The instance hosts among `hosts`, with their settings.
fn targets<'a>(
    session: &'a Session,
    hosts: &[(Host, Facts)],
    templates: &Templates,
) -> anyhow::Result<Vec<deploy::Target<'a>>> {
    let mut targets = Vec::new();
    for (host, facts) in hosts {
        let Some(spec) = session.stack.host(host.name()) else {
            continue;
        };
        if spec.has_layer(Layer::PloneInstances) {
            targets.push(deploy::Target::new(
                session,
                spec,
                host.clone(),
                facts,
                templates,
            )?);
        }
    }
    Ok(targets)
}

/// The revision live on the first instance host that has a release.
async fn live_revision(
    targets: &[deploy::Target<'_>],
    templates: &Templates,
) -> anyhow::Result<Option<String>> {
    for target in targets {
        let script = provision_plone::deploy::release_status(&target.settings, templates)?;
        let output = target.host.exec(Command::new(script)).await?;
        let report = provision_plone::deploy::Report::parse(&output.stdout_lossy());
        if let Some(revision) = report.get("revision") {
            return Ok(Some(revision.to_string()));
        }
    }
    Ok(None)
}

/// After a release step every client of a host that is on a good release runs (one that
/// crashed, or a host whose release did not change but whose clients were stopped). A host
/// whose prepare script checked them already is not checked again: a round trip only to fix.
async fn ensure_clients_running(
    session: &Session,
    targets: &[deploy::Target<'_>],
    reports: &mut [HostDeploy],
    progress: &StderrProgress,
) {
    let mask = |s: &str| session.mask(s);
    let options = Options {
        mode: Mode::Apply,
        command_timeout: Some(session.command_timeout()),
        mask: &mask,
        progress,
    };
    // Every host's clients at once, not one after the other.
    let work: Vec<(Host, Vec<Resource>, Option<String>)> = targets
        .iter()
        .filter_map(|target| {
            let report = reports.iter().find(|r| {
                r.host == target.host.name()
                    && matches!(
                        r.outcome,
                        DeployOutcome::Unchanged | DeployOutcome::Deployed
                    )
            })?;
            Some((
                target.host.clone(),
                target.live_services(),
                report.live_checked.clone(),
            ))
        })
        .collect();
    let results =
        engine::converge_all_checked(work, usize::from(session.args.parallel), &options).await;
    for result in results {
        let Some(report) = reports.iter_mut().find(|r| r.host == result.host) else {
            continue;
        };
        report.services_fixed = result
            .changes
            .iter()
            .map(|change| format!("{}: {}", change.resource, change.summary.join(", ")))
            .collect();
        if let Outcome::Failed(error) = result.outcome {
            report.outcome = DeployOutcome::Failed(format!("starting the clients: {error}"));
        }
    }
}

/// The hosts whose converge has not failed (so far), with their facts.
fn converged_hosts(
    reports: &[HostReport],
    handles: &[Host],
    all_facts: &FactsByHost,
) -> Vec<(Host, Facts)> {
    handles
        .iter()
        .filter(|h| reports.iter().any(|r| r.host == h.name() && !r.is_failed()))
        .filter_map(|h| Some((h.clone(), all_facts.get(h.name())?.clone())))
        .collect()
}

/// `deploy`, `rollback` and `restart`: the instance hosts among the selected ones, with every
/// lb host reached for the drain.
/// Refuses an app name (`deploy APP`, `rollback APP`, `undeploy APP`) that is not the app the
/// stack's instances run: these commands act on that one app; `verb` says what was asked.
pub fn check_app(args: &StackArgs, app: Option<&str>, verb: &str) -> anyhow::Result<()> {
    let Some(name) = app else {
        return Ok(());
    };
    let session = Session::load(args)?;
    match session.stack.app_for(Layer::PloneInstances) {
        Some(deployed) if deployed.name == name => Ok(()),
        deployed => {
            let known: Vec<&str> = session
                .stack
                .apps()
                .iter()
                .map(|a| a.name.as_str())
                .collect();
            let runs = deployed.map_or_else(
                || "no app (set plone_instances.app_name)".to_string(),
                |a| format!("app {}", a.name),
            );
            Err(BadInput(format!(
                "no app {name} to {verb}: the instances of {} run {runs} (apps in the stack: {})",
                session.stack_path().display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
            .into())
        }
    }
}

/// The selected hosts with the `plone_instances` layer; none is bad input.
pub fn instance_hosts(session: &Session) -> Result<Vec<&HostSpec>, BadInput> {
    let selected: Vec<&HostSpec> = session
        .selected()
        .into_iter()
        .filter(|h| h.has_layer(Layer::PloneInstances))
        .collect();
    if selected.is_empty() {
        return Err(BadInput(format!(
            "no selected host has the plone_instances layer in {}",
            session.stack_path().display()
        )));
    }
    Ok(selected)
}

pub async fn release_command(
    args: &StackArgs,
    action: ReleaseAction,
    revision: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let session = Session::load(args)?;
    let selected = instance_hosts(&session)?;
    let builds: &[Phase] = match action {
        ReleaseAction::Deploy => &[Phase::Deploy],
        ReleaseAction::Rollback | ReleaseAction::Restart => &[],
    };
    check_before_connecting(&session, &selected, builds, revision).await?;
    let templates = Templates::new(&layers::all_templates()).context("loading templates")?;
    let progress = StderrProgress::new();
    let mut reach = selected.clone();
    for lb in session.stack.hosts_with(Layer::Lb) {
        if !reach.iter().any(|h| h.name == lb.name) {
            reach.push(lb);
        }
    }
    let (connected, failed) = connect(&session, &reach, &progress).await?;
    let mut reports: Vec<HostDeploy> = failed
        .iter()
        .filter(|r| selected.iter().any(|h| h.name == r.host))
        .map(|r| HostDeploy {
            host: r.host.clone(),
            release: None,
            revision: None,
            outcome: match &r.outcome {
                Outcome::Failed(error) => DeployOutcome::Failed(error.clone()),
                _ => DeployOutcome::Failed("unreachable".to_string()),
            },
            live_checked: None,
            services_fixed: Vec::new(),
        })
        .collect();
    let lbs = lb_handles(&session, &connected, &[]);
    let instance_hosts: Vec<(Host, Facts)> = connected
        .into_iter()
        .filter(|(h, _)| selected.iter().any(|s| s.name == h.name()))
        .collect();
    let targets = targets(&session, &instance_hosts, &templates)?;
    // A deploy goes on without unreachable hosts as far as --max-fail allows; a rollback or a
    // restart needs them all.
    let unreachable = reports.len();
    let go_on = match action {
        ReleaseAction::Deploy => {
            unreachable <= session.args.max_fail.allowed(targets.len() + unreachable)
        }
        ReleaseAction::Rollback | ReleaseAction::Restart => unreachable == 0,
    };
    if go_on {
        let done = match action {
            ReleaseAction::Deploy => {
                // The units and directories a release needs (a no-op once set up).
                let mask = |s: &str| session.mask(s);
                let options = Options {
                    mode: Mode::Apply,
                    command_timeout: Some(session.command_timeout()),
                    mask: &mask,
                    progress: &progress,
                };
                let mut setups = Vec::new();
                for target in &targets {
                    let setup = provision_plone::instances::resources(
                        &target.settings,
                        Phase::Setup,
                        &templates,
                    )?;
                    setups.push((target.host.clone(), setup));
                }
                // All hosts at once; a host that fails its setup counts toward --max-fail
                // like an unreachable one, and the others go on.
                let set_up = engine::converge_all(setups, usize::from(args.parallel), &options);
                let not_set_up: Vec<HostDeploy> = set_up
                    .await
                    .into_iter()
                    .filter_map(|report| match report.outcome {
                        Outcome::Failed(error) => Some(HostDeploy {
                            host: report.host,
                            release: None,
                            revision: None,
                            outcome: DeployOutcome::Failed(format!("setting up: {error}")),
                            live_checked: None,
                            services_fixed: Vec::new(),
                        }),
                        _ => None,
                    })
                    .collect();
                let failed_before = unreachable + not_set_up.len();
                let all = targets.len() + unreachable;
                let ready: Vec<_> = targets
                    .into_iter()
                    .filter(|t| !not_set_up.iter().any(|f| f.host == t.host.name()))
                    .collect();
                let mut done = not_set_up;
                if failed_before <= session.args.max_fail.allowed(all) {
                    let mut deployed = deploy::deploy(
                        &session,
                        &ready,
                        &lbs,
                        revision,
                        failed_before,
                        &templates,
                        &progress,
                    )
                    .await?;
                    ensure_clients_running(&session, &ready, &mut deployed, &progress).await;
                    done.extend(deployed);
                } else {
                    eprintln!(
                        "provision: not deployed: {failed_before} instance host(s) unreachable \
                         or not set up, more than --max-fail allows; no host was changed beyond \
                         its setup"
                    );
                }
                done
            }
            ReleaseAction::Rollback => {
                deploy::rollback(&session, &targets, &lbs, &templates, &progress).await?
            }
            ReleaseAction::Restart => {
                deploy::restart(&session, &targets, &lbs, &templates, &progress).await?
            }
        };
        reports.extend(done);
    } else {
        eprintln!(
            "provision: not started: {} instance host(s) unreachable{}",
            unreachable,
            match action {
                ReleaseAction::Deploy => " (more than --max-fail allows)",
                ReleaseAction::Rollback | ReleaseAction::Restart =>
                    "; every instance host must be reachable for a rollout",
            }
        );
    }
    print_deploys(&reports, args.json);
    if !args.json {
        crate::out!("({:.1}s)", start.elapsed().as_secs_f64());
    }
    let failed = reports
        .iter()
        .any(|r| matches!(r.outcome, DeployOutcome::Failed(_)));
    Ok(ExitCode::from(if failed {
        EXIT_HOST_FAILED
    } else {
        EXIT_OK
    }))
}

/// The release commands.
#[derive(Debug, Clone, Copy)]
pub enum ReleaseAction {
    Deploy,
    Rollback,
    Restart,
}

fn print_deploys(reports: &[HostDeploy], json: bool) {
    if json {
        crate::out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "releases": reports }))
                .unwrap_or_default()
        );
        return;
    }
    for report in reports {
        let release = report.release.as_deref().unwrap_or("-");
        let revision = report
            .revision
            .as_deref()
            .map(|r| format!(" (revision {})", &r[..12.min(r.len())]))
            .unwrap_or_default();
        match &report.outcome {
            DeployOutcome::Unchanged => {
                crate::out!("{}: release unchanged: {release}{revision}", report.host)
            }
            DeployOutcome::Deployed => {
                crate::out!("{}: deployed {release}{revision}", report.host)
            }
            DeployOutcome::NotSwitched => crate::out!(
                "{}: built {release}{revision}, not switched (the rollout stopped)",
                report.host
            ),
            DeployOutcome::RolledBack => {
                crate::out!("{}: rolled back to {release}", report.host)
            }
            DeployOutcome::Restarted => crate::out!("{}: every client restarted", report.host),
            DeployOutcome::Failed(error) => crate::out!("{}: FAILED: {error}", report.host),
        }
        for fixed in &report.services_fixed {
            crate::out!("{}: fixed {fixed}", report.host);
        }
    }
}

/// Bad input the stack file alone does not show, refused before any host is touched: a secret
/// the layers of the selected hosts need (when `phases` render them), the app of the instance
/// hosts, and, when `phases` deploy, an app repository on this machine that is not a git
/// repository or lacks the revision (`revision`, else the app's, else `HEAD`).
async fn check_before_connecting(
    session: &Session,
    selected: &[&HostSpec],
    phases: &[Phase],
    revision: Option<&str>,
) -> anyhow::Result<()> {
    let stack = &session.stack;
    if phases.contains(&Phase::Setup) || phases.contains(&Phase::Configure) {
        stack.check_secrets(selected.iter().copied())?;
    }
    if !selected.iter().any(|h| h.has_layer(Layer::PloneInstances)) {
        return Ok(());
    }
    let app = layers::instances::app(stack).map_err(|e| BadInput(format!("{e:#}")))?;
    let repository = &app.repository;
    // A URL (`https://…`, `git@host:path`) is the hosts' to clone; anything else is a path here.
    let url = repository.contains("://")
        || repository
            .split_once(':')
            .is_some_and(|(before, _)| !before.is_empty() && !before.contains('/'));
    if !phases.contains(&Phase::Deploy) || url {
        return Ok(());
    }
    let path = stack.base_dir().join(repository);
    let named = format!("`apps.{}.repository` is `{repository}`", app.name);
    if !path.exists() {
        return Err(BadInput(format!(
            "{named}, but {} does not exist on this machine: give the path of a git repository \
             here (relative to the stack file), or a URL the hosts clone from (`https://...`, or \
             `file:///srv/git/site.git` for a repository on the hosts)",
            path.display()
        ))
        .into());
    }
    let git = |args: &[&str]| {
        tokio::process::Command::new("git")
            .arg("-C")
            .arg(&path)
            .args(args)
            .output()
    };
    let is_repository = git(&["rev-parse", "--git-dir"])
        .await
        .context("running git on this machine")?;
    if !is_repository.status.success() {
        let said = String::from_utf8_lossy(&is_repository.stderr);
        return Err(BadInput(format!(
            "{named}, but {} is not a git repository ({}): provision exports a revision of it \
             with `git archive`; run `git init` and commit the site there, or give another path",
            path.display(),
            said.lines().next().unwrap_or_default().trim()
        ))
        .into());
    }
    let (revision, named_by) = match (revision, &app.revision) {
        (Some(r), _) => (r, "--revision".to_string()),
        (None, Some(r)) => (r.as_str(), format!("`apps.{}.revision`", app.name)),
        (None, None) => (
            "HEAD",
            format!("the default of `apps.{}.revision`", app.name),
        ),
    };
    let commit = format!("{revision}^{{commit}}");
    let found = git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        &commit,
    ])
    .await
    .context("running git on this machine")?;
    if !found.status.success() {
        return Err(BadInput(format!(
            "revision `{revision}` ({named_by}) is not a commit of the git repository {}: name \
             a branch, tag or commit it has",
            path.display()
        ))
        .into());
    }
    Ok(())
}

/// Connect to the selected hosts and gather their facts. Unreachable hosts become failed
/// reports; the others go on.
pub(crate) async fn connect(
    session: &Session,
    selected: &[&provision_core::stack::HostSpec],
    progress: &StderrProgress,
) -> anyhow::Result<(Vec<(Host, Facts)>, Vec<HostReport>)> {
    let targets: Vec<(String, Connection)> = selected
        .iter()
        .map(|h| Ok((h.name.clone(), session.connection(h)?)))
        .collect::<Result<_, BadInput>>()?;
    let results = engine::connect_all(&targets, usize::from(session.args.parallel), progress).await;
    let mut connected = Vec::new();
    let mut failed = Vec::new();
    for ((name, _), result) in targets.iter().zip(results) {
        match result {
            Ok(pair) => connected.push(pair),
            Err(error) => failed.push(HostReport::failed(name, connect_error(&error), 0)),
        }
    }
    Ok((connected, failed))
}

pub(crate) fn connect_error(error: &HostError) -> String {
    // The error names the host already; the report line does too.
    let text = error.to_string();
    let host = error.host();
    text.strip_prefix(&format!("{host}: "))
        .map(|rest| format!("connecting: {rest}"))
        .unwrap_or(text)
}

fn sort_like_stack(reports: &mut [HostReport], selected: &[&provision_core::stack::HostSpec]) {
    reports.sort_by_key(|r| selected.iter().position(|h| h.name == r.host));
}

fn exit_code(reports: &[HostReport]) -> ExitCode {
    if reports.iter().any(HostReport::is_failed) {
        ExitCode::from(EXIT_HOST_FAILED)
    } else {
        ExitCode::from(EXIT_OK)
    }
}

/// `status`: every selected host, reachable or not, with its facts and layers.
pub async fn status(args: &StackArgs) -> anyhow::Result<ExitCode> {
    let session = Session::load(args)?;
    let selected = session.selected();
    let progress = StderrProgress::new();
    let targets: Vec<(String, Connection)> = selected
        .iter()
        .map(|h| Ok((h.name.clone(), session.connection(h)?)))
        .collect::<Result<_, BadInput>>()?;
    let results = engine::connect_all(&targets, usize::from(args.parallel), &progress).await;
    let templates = Templates::new(&layers::all_templates()).context("loading templates")?;
    let mut rows = Vec::new();
    let mut any_failed = false;
    for (spec, result) in selected.iter().zip(results) {
        let layers: Vec<&str> = spec.layers.iter().map(|l| l.as_str()).collect();
        let row = match result {
            Ok((host, facts)) => serde_json::json!({
                "haproxy": if spec.has_layer(provision_core::stack::Layer::Lb) {
                    haproxy_servers(&host, &session).await
                } else {
                    serde_json::Value::Null
                },
                "host": spec.name,
                "address": spec.address,
                "reachable": true,
                "layers": layers,
                "os": facts.os_pretty_name,
                "cpus": facts.cpus,
                "memory_mib": facts.memory_bytes / (1024 * 1024),
                "init": facts.init,
                "plone_clients": spec.has_layer(provision_core::stack::Layer::PloneInstances)
                    .then(|| session.stack.clients_per_host(facts.cpus)),
                "release": if spec.has_layer(provision_core::stack::Layer::PloneInstances) {
                    release_state(&host, &session, spec, facts.cpus, &templates).await
                } else {
                    serde_json::Value::Null
                },
            }),
            Err(error) => {
                any_failed = true;
                serde_json::json!({
                    "host": spec.name,
                    "address": spec.address,
                    "reachable": false,
                    "layers": layers,
                    "error": connect_error(&error),
                })
            }
        };
        rows.push(row);
    }
    if args.json {
        crate::out!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for row in &rows {
            let name = row["host"].as_str().unwrap_or_default();
            let layers = json_list(&row["layers"]);
            if row["reachable"] == true {
                let clients = row["plone_clients"]
                    .as_u64()
                    .map(|n| format!(", {}", count(n as usize, "Plone client")))
                    .unwrap_or_default();
                crate::out!(
                    "{name} ({}): up; {}, {} CPUs, {} MiB, init {}; layers: {}{clients}",
                    row["address"].as_str().unwrap_or_default(),
                    row["os"].as_str().unwrap_or_default(),
                    row["cpus"],
                    row["memory_mib"],
                    row["init"].as_str().unwrap_or_default(),
                    if layers.is_empty() { "none" } else { &layers },
                );
                print_release(&row["release"]);
                print_haproxy(&row["haproxy"]);
            } else {
                crate::out!(
                    "{name} ({}): UNREACHABLE: {}",
                    row["address"].as_str().unwrap_or_default(),
                    row["error"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::from(if any_failed {
        EXIT_HOST_FAILED
    } else {
        EXIT_OK
    }))
}

/// An instance host's live and previous release (the live one's name is when it was built,
/// in UTC) and whether each client runs.
async fn release_state(
    host: &Host,
    session: &Session,
    spec: &provision_core::stack::HostSpec,
    cpus: u32,
    templates: &Templates,
) -> serde_json::Value {
    let settings = match crate::layers::instances::settings(&session.stack, spec, cpus, templates) {
        Ok(settings) => settings,
        Err(error) => return serde_json::json!({"error": format!("{error:#}")}),
    };
    let script = match provision_plone::deploy::release_status(&settings, templates) {
        Ok(script) => script,
        Err(error) => return serde_json::json!({"error": error.to_string()}),
    };
    let units: Vec<String> = settings
        .clients
        .iter()
        .map(|c| provision_core::shell::quote(&settings.client_unit(&c.name)))
        .collect();
    let command = format!(
        "( {script}\n) 2>/dev/null\nfor unit in {}; do echo \"@client=$unit $(systemctl is-active \"$unit\")\"; done",
        units.join(" ")
    );
    let report = match host.exec(Command::new(command)).await {
        Ok(output) => provision_plone::deploy::Report::parse(&output.stdout_lossy()),
        Err(error) => return serde_json::json!({"error": error.to_string()}),
    };
    let name = |path: Option<&str>| {
        path.filter(|p| !p.is_empty())
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
    };
    let clients: serde_json::Map<String, serde_json::Value> = report
        .all("client")
        .iter()
        .filter_map(|line| line.split_once(' '))
        .map(|(unit, state)| (unit.to_string(), serde_json::Value::from(state)))
        .collect();
    serde_json::json!({
        "current": name(report.get("current")),
        "revision": report.get("revision").filter(|r| !r.is_empty()),
        "previous": name(report.get("previous")),
        "clients": clients,
    })
}

fn print_release(release: &serde_json::Value) {
    if let Some(error) = release["error"].as_str() {
        crate::out!("  release: {error}");
        return;
    }
    let Some(clients) = release["clients"].as_object() else {
        return;
    };
    let current = match release["current"].as_str() {
        Some(current) => format!(
            "{current} (revision {})",
            release["revision"]
                .as_str()
                .map_or("unknown", |r| &r[..r.len().min(12)])
        ),
        None => "none deployed".to_string(),
    };
    let previous = release["previous"]
        .as_str()
        .map(|p| format!(", previous {p}"))
        .unwrap_or_default();
    crate::out!("  release {current}{previous}");
    let states: Vec<String> = clients
        .iter()
        .map(|(unit, state)| {
            let client = unit.rsplit('@').next().unwrap_or(unit);
            format!("{client} {}", state.as_str().unwrap_or_default())
        })
        .collect();
    crate::out!("  clients: {}", states.join(", "));
}

/// The state of every server in HAProxy on an `lb` host, through its runtime socket.
async fn haproxy_servers(host: &Host, session: &Session) -> serde_json::Value {
    use provision_nginx::haproxy_runtime::{parse_show_stat, show_stat, socket_shell_command};
    let socket = &session.stack.attributes().haproxy.stats_socket_path;
    let command = match show_stat(provision_nginx::haproxy::BACKEND) {
        Ok(command) => socket_shell_command(socket, &command),
        Err(error) => return serde_json::json!({"error": error.to_string()}),
    };
    let answer = match host.exec(Command::new(command)).await {
        Ok(output) if output.success() => output.stdout_lossy(),
        Ok(output) => {
            return serde_json::json!({
                "error": format!("HAProxy's socket {socket} did not answer: {}", output.stderr_lossy().trim())
            });
        }
        Err(error) => return serde_json::json!({"error": error.to_string()}),
    };
    match parse_show_stat(&answer) {
        Ok(servers) => serde_json::Value::Array(
            servers
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "server": s.name,
                        "status": format!("{:?}", s.status).to_uppercase(),
                        "check": s.check_status,
                        "sessions": s.current_sessions,
                        "queued": s.queued,
                        "served": s.total_sessions,
                    })
                })
                .collect(),
        ),
        Err(error) => serde_json::json!({"error": error.to_string()}),
    }
}

fn print_haproxy(haproxy: &serde_json::Value) {
    if let Some(error) = haproxy["error"].as_str() {
        crate::out!("  haproxy: {error}");
    } else if let Some(servers) = haproxy.as_array() {
        crate::out!("  haproxy backend {}:", provision_nginx::haproxy::BACKEND);
        for s in servers {
            crate::out!(
                "    {:<16} {:<10} check {:<8} sessions {:<4} served {}",
                s["server"].as_str().unwrap_or_default(),
                s["status"].as_str().unwrap_or_default(),
                s["check"].as_str().unwrap_or_default(),
                s["sessions"],
                s["served"]
            );
        }
    }
}

/// `backup` and `pack`: start a job's oneshot unit on the hosts that run it, wait for it, and
/// show its log when it fails.
pub async fn run_job(args: &StackArgs, job: Job) -> anyhow::Result<ExitCode> {
    let session = Session::load(args)?;
    let stack = &session.stack;
    let (hosts, unit, missing): (Vec<&provision_core::stack::HostSpec>, &str, &str) = match job {
        Job::Backup if stack.attributes().plone_instances.enable_relstorage => (
            if crate::layers::database::postgres_dumps(stack) {
                stack.hosts_with(provision_core::stack::Layer::Postgres)
            } else {
                Vec::new()
            },
            provision_zeo::postgres::BACKUP_JOB,
            "a host with the postgres layer and plone_instances.relstorage.enable_backup = true",
        ),
        Job::Backup => (
            stack.hosts_with(provision_core::stack::Layer::Zeoserver),
            provision_zeo::zeoserver::BACKUP_JOB,
            "a host with the zeoserver layer and plone_zeoserver.enable_backup = true",
        ),
        Job::Pack if stack.attributes().plone_instances.enable_relstorage => (
            stack.pack_host().into_iter().collect(),
            provision_zeo::packing::PACK_JOB,
            "a host with the db_packing layer",
        ),
        Job::Pack => (
            stack.hosts_with(provision_core::stack::Layer::Zeoserver),
            provision_zeo::zeoserver::PACK_JOB,
            "a host with the zeoserver layer and plone_zeoserver.enable_pack = true",
        ),
    };
    if hosts.is_empty() {
        return Err(BadInput(format!("nothing to run: the stack needs {missing}")).into());
    }
    let progress = StderrProgress::new();
    let (connected, failed) = connect(&session, &hosts, &progress).await?;
    let mut any_failed = !failed.is_empty();
    for report in &failed {
        if let Outcome::Failed(error) = &report.outcome {
            crate::out!("{}: FAILED: {error}", report.host);
        }
    }
    for (host, _) in &connected {
        progress.step(host.name(), &format!("running {unit}"));
        let script = format!(
            "if ! systemctl cat {unit}.service >/dev/null 2>&1; then \
             echo 'the {unit} job is not installed: enable it in the stack and run provision up' >&2; exit 3; fi\n\
             systemctl start {unit}.service || {{ rc=$?; journalctl -u {unit}.service -n 30 --no-pager >&2; exit $rc; }}"
        );
        let output = host
            .exec(Command::new(script).timeout(session.command_timeout()))
            .await;
        match output {
            Ok(output) if output.success() => crate::out!("{}: {unit} done", host.name()),
            Ok(output) => {
                any_failed = true;
                crate::out!(
                    "{}: {unit} FAILED ({}):\n{}",
                    host.name(),
                    output.describe_exit(),
                    session.mask(output.stderr_lossy().trim())
                );
            }
            Err(error) => {
                any_failed = true;
                crate::out!("{}: FAILED: {error}", host.name());
            }
        }
    }
    Ok(ExitCode::from(if any_failed {
        EXIT_HOST_FAILED
    } else {
        EXIT_OK
    }))
}

/// The database jobs that can be run now.
#[derive(Debug, Clone, Copy)]
pub enum Job {
    Backup,
    Pack,
}

/// `run`: a one-off command on the selected hosts, in parallel; output per host.
pub async fn run_command(args: &StackArgs, command: &str) -> anyhow::Result<ExitCode> {
    let session = Session::load(args)?;
    let selected = session.selected();
    let progress = StderrProgress::new();
    let (connected, failed) = connect(&session, &selected, &progress).await?;
    let timeout = session.command_timeout();
    let runs = futures::future::join_all(
        connected
            .iter()
            .map(|(host, _)| host.exec(Command::new(command.to_string()).timeout(timeout))),
    )
    .await;
    let mut results = Vec::new();
    let mut any_failed = !failed.is_empty();
    for report in &failed {
        if let Outcome::Failed(error) = &report.outcome {
            results.push(serde_json::json!({"host": report.host, "error": error}));
        }
    }
    for ((host, _), run) in connected.iter().zip(runs) {
        match run {
            Ok(output) => {
                any_failed |= !output.success();
                results.push(serde_json::json!({
                    "host": host.name(),
                    "status": output.status,
                    "signal": output.signal,
                    "stdout": session.mask(&output.stdout_lossy()),
                    "stderr": session.mask(&output.stderr_lossy()),
                }));
            }
            Err(error) => {
                any_failed = true;
                results.push(serde_json::json!({"host": host.name(), "error": error.to_string()}));
            }
        }
    }
    results.sort_by_key(|r| {
        selected
            .iter()
            .position(|h| r["host"].as_str() == Some(h.name.as_str()))
    });
    if args.json {
        crate::out!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            let host = r["host"].as_str().unwrap_or_default();
            if let Some(error) = r["error"].as_str() {
                crate::out!("{host}: FAILED: {error}");
                continue;
            }
            let ending = match (r["status"].as_u64(), r["signal"].as_str()) {
                (Some(code), _) => format!("exit {code}"),
                (None, Some(signal)) => format!("killed by {signal}"),
                _ => "no exit status".to_string(),
            };
            crate::out!("{host}: {ending}");
            for line in r["stdout"].as_str().unwrap_or_default().lines() {
                crate::out!("  {line}");
            }
            for line in r["stderr"].as_str().unwrap_or_default().lines() {
                crate::out!("  ! {line}");
            }
        }
    }
    Ok(ExitCode::from(if any_failed {
        EXIT_HOST_FAILED
    } else {
        EXIT_OK
    }))
}

/// `attributes`: the effective attributes as TOML (or JSON), secrets masked.
pub fn attributes(args: &StackArgs) -> anyhow::Result<ExitCode> {
    let session = Session::load(args)?;
    let attributes = session.stack.attributes();
    let text = if args.json {
        serde_json::to_string_pretty(attributes)?
    } else {
        let mut table = toml::Table::new();
        table.insert("attributes".to_string(), toml::Value::try_from(attributes)?);
        toml::to_string_pretty(&table)?
    };
    crate::out!("{}", session.mask(&text));
    Ok(ExitCode::from(EXIT_OK))
}
