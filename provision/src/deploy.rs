//! Releases across hosts: build everywhere, then switch and restart one client at a time,
//! drained in HAProxy, health-checked, put back; a client that fails its health check sends
//! its host back to the previous release and stops the rollout.

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use provision_core::engine::{self, Progress};
use provision_core::facts::Facts;
use provision_core::host::{Command, Host, Output};
use provision_core::resource::{Resource, Service};
use provision_core::stack::HostSpec;
use provision_core::template::Templates;
use provision_nginx::haproxy::BACKEND;
use provision_nginx::haproxy_runtime::{
    AdminState, ServerStat, ServerStatus, parse_set_server_answer, parse_show_stat,
    set_server_state, show_stat, socket_shell_command,
};
use provision_plone::deploy::{self as scripts, Prepared, Report};
use provision_plone::{ClientSettings, InstanceSettings};

use crate::layers::instances;
use crate::session::Session;

/// How long a drained client may keep serving its requests before it is restarted anyway.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a failed client's log in the report.
const LOG_LINES: u32 = 30;

/// How many instance hosts may fail a deploy before the rollout stops (`--max-fail`, like
/// Ansible's `max_fail_percentage`): a count `N`, or `P%` of the instance hosts (rounded
/// down). Default 0: the first failure stops the rollout. Hosts not yet switched when the
/// limit is crossed stay on their old release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxFail {
    #[default]
    None,
    Count(usize),
    Percent(u8),
}

impl MaxFail {
    /// How many of `total` hosts may fail with the rollout going on.
    pub fn allowed(self, total: usize) -> usize {
        match self {
            MaxFail::None => 0,
            MaxFail::Count(n) => n,
            MaxFail::Percent(p) => total * usize::from(p) / 100,
        }
    }
}

impl std::str::FromStr for MaxFail {
    type Err = String;

    fn from_str(text: &str) -> Result<MaxFail, String> {
        let wrong = || format!("`{text}` is not a number of hosts (N) nor a percentage (P%)");
        match text.trim().strip_suffix('%') {
            Some(percent) => match percent.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Ok(MaxFail::Percent(p)),
                Ok(_) => Err(format!("`{text}`: a percentage is at most 100%")),
                Err(_) => Err(wrong()),
            },
            None => match text.trim().parse::<usize>() {
                Ok(0) => Ok(MaxFail::None),
                Ok(n) => Ok(MaxFail::Count(n)),
                Err(_) => Err(wrong()),
            },
        }
    }
}

/// What happened to one instance host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostDeploy {
    pub host: String,
    /// The live release after the command.
    pub release: Option<String>,
    pub revision: Option<String>,
    pub outcome: DeployOutcome,
    /// The output of the check of [`Target::live_services`] that the prepare script ran on a
    /// release it left unchanged: the services' check after the deploy, done already.
    #[serde(skip)]
    pub live_checked: Option<String>,
    /// What the check of the live release's services found and fixed after the release step
    /// (a stopped client started, a surplus client stopped), one line per change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services_fixed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", content = "error", rename_all = "snake_case")]
pub enum DeployOutcome {
    /// The revision and configuration were live already.
    Unchanged,
    /// A new release is live and every client answered.
    Deployed,
    /// Built, but not switched: the rollout stopped before this host.
    NotSwitched,
    /// Back on the previous release (`provision rollback`, or after a failed health check).
    RolledBack,
    /// Every client was restarted and answered.
    Restarted,
    Failed(String),
}

/// One instance host, ready to deploy.
pub struct Target<'a> {
    pub host: Host,
    pub spec: &'a HostSpec,
    pub settings: InstanceSettings,
    /// The Celery workers of the host, restarted with each release.
    pub workers: Option<provision_celery::WorkerSettings>,
}

impl<'a> Target<'a> {
    pub fn new(
        session: &Session,
        spec: &'a HostSpec,
        host: Host,
        facts: &Facts,
        templates: &Templates,
    ) -> anyhow::Result<Target<'a>> {
        let settings = instances::settings(&session.stack, spec, facts.cpus, templates)?;
        let workers = crate::layers::optional::worker_settings(&session.stack, spec)?;
        Ok(Target {
            host,
            spec,
            settings,
            workers,
        })
    }

    /// What must run on the live release: the clients (and no others) and the Celery worker
    /// and beat, enabled.
    pub fn live_services(&self) -> Vec<Resource> {
        let mut services = provision_plone::instances::client_services(&self.settings);
        if let Some(workers) = &self.workers {
            services.push(Service::running(workers.worker_unit()).into());
            if workers.beat {
                services.push(Service::running(workers.beat_unit()).into());
            }
        }
        services
    }
}

/// Run a deploy script on a host; a non-zero exit is an error with what it printed.
async fn step(
    session: &Session,
    host: &Host,
    what: &str,
    command: Command,
) -> anyhow::Result<(Report, Output)> {
    let output = host
        .exec(command.timeout(session.command_timeout()))
        .await
        .with_context(|| what.to_string())?;
    let report = scripts::check_step(what, &output).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((report, output))
}

/// [`step`] with a script that may not have rendered.
async fn script_step(
    session: &Session,
    target: &Target<'_>,
    what: &str,
    script: Result<String, provision_plone::PloneError>,
) -> anyhow::Result<Report> {
    let script = script.map_err(|e| anyhow::anyhow!("{e}"))?;
    let (report, _) = step(session, &target.host, what, Command::new(script)).await?;
    Ok(report)
}

/// `deploy` (and the deploy part of `up`): build `revision` on every target at once; when no
/// more builds failed than `--max-fail` allows (`failed_before` hosts, unreachable, count
/// too), switch host by host with a rolling restart, skipping the failed ones. Once failures
/// exceed the limit the rollout stops: the hosts not switched yet stay on their old release.
pub async fn deploy(
    session: &Session,
    targets: &[Target<'_>],
    lbs: &[Host],
    revision: Option<&str>,
    failed_before: usize,
    templates: &Templates,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<HostDeploy>> {
    let allowed = session.args.max_fail.allowed(targets.len() + failed_before);
    let mut failures = failed_before;
    let app = instances::app(&session.stack)?;
    let revision = revision
        .map(str::to_string)
        .or_else(|| app.revision.clone())
        .unwrap_or_else(|| "HEAD".to_string());
    let source = instances::source(&session.stack, app, &revision).await?;

    // Build everywhere first: a failed build anywhere switches nothing anywhere.
    let builds: Vec<anyhow::Result<Prepared>> =
        futures::stream::iter(targets.iter().map(|target| {
            let source = &source;
            async move {
                progress.step(target.host.name(), &format!("building {}", source));
                let live_check =
                    engine::check_script(&target.live_services()).map_err(anyhow::Error::msg)?;
                let command = scripts::prepare_release(
                    &target.settings,
                    source,
                    Some(&live_check),
                    templates,
                )?;
                let output = target
                    .host
                    .exec(command.timeout(session.command_timeout()))
                    .await?;
                scripts::parse_prepared(&output).map_err(|e| anyhow::anyhow!("{e}"))
            }
        }))
        .buffered(usize::from(session.args.parallel))
        .collect()
        .await;

    let mut reports: Vec<HostDeploy> = Vec::new();
    let mut to_switch = Vec::new();
    for (target, build) in targets.iter().zip(builds) {
        let name = target.host.name().to_string();
        match build {
            Ok(Prepared::Unchanged {
                release,
                commit,
                live_checked,
            }) => {
                progress.step(&name, "release unchanged");
                reports.push(HostDeploy {
                    host: name,
                    release: Some(release),
                    revision: Some(commit),
                    outcome: DeployOutcome::Unchanged,
                    live_checked,
                    services_fixed: Vec::new(),
                });
            }
            Ok(Prepared::Built { release, commit }) => {
                progress.step(&name, &format!("built {release}"));
                reports.push(HostDeploy {
                    host: name,
                    release: Some(release.clone()),
                    revision: Some(commit),
                    outcome: DeployOutcome::NotSwitched,
                    live_checked: None,
                    services_fixed: Vec::new(),
                });
                to_switch.push((target, release));
            }
            Err(error) => reports.push(HostDeploy {
                host: name,
                release: None,
                revision: None,
                outcome: DeployOutcome::Failed(session.mask(&format!("building: {error:#}"))),
                live_checked: None,
                services_fixed: Vec::new(),
            }),
        }
    }
    failures += reports
        .iter()
        .filter(|r| matches!(r.outcome, DeployOutcome::Failed(_)))
        .count();

    let mut site_pending = session.stack.attributes().plone_instances.create_site;
    // The site is made before any other host restarts into the new code: alone in its wave.
    let first_alone = site_pending;
    let switch_targets: Vec<&Target<'_>> = to_switch.iter().map(|(t, _)| *t).collect();
    for wave in waves(session, &switch_targets, first_alone) {
        if failures > allowed {
            // The new releases stay built (unswitched) and will be pruned later.
            for &index in &wave {
                progress.step(
                    to_switch[index].0.host.name(),
                    &format!(
                        "not switched: {failures} of {} instance hosts failed (--max-fail allows {allowed})",
                        targets.len() + failed_before
                    ),
                );
            }
            continue;
        }
        let make_site = std::mem::take(&mut site_pending);
        let outcomes = futures::future::join_all(wave.iter().enumerate().map(|(i, &index)| {
            let (target, release) = &to_switch[index];
            roll_out(
                session,
                target,
                release,
                make_site && i == 0,
                lbs,
                templates,
                progress,
            )
        }))
        .await;
        for (&index, outcome) in wave.iter().zip(outcomes) {
            let name = to_switch[index].0.host.name();
            let report = reports
                .iter_mut()
                .find(|r| r.host == name)
                .expect("a report per target");
            if matches!(outcome, DeployOutcome::Failed(_)) {
                failures += 1;
            }
            report.outcome = outcome;
        }
    }

    // Nothing switched (an unchanged redeploy): the site is still made when it is missing.
    if site_pending
        && failures <= allowed
        && let Some(target) = targets.iter().find(|t| {
            reports
                .iter()
                .any(|r| r.host == t.host.name() && r.outcome == DeployOutcome::Unchanged)
        })
        && let Err(error) = ensure_site(session, target, templates, progress).await
    {
        let report = reports
            .iter_mut()
            .find(|r| r.host == target.host.name())
            .expect("a report per target");
        report.outcome = DeployOutcome::Failed(session.mask(&format!("{error:#}")));
    }
    // A rollout of other hosts can take minutes: then the unchanged ones are checked afresh.
    if !to_switch.is_empty() {
        for report in &mut reports {
            report.live_checked = None;
        }
    }
    Ok(reports)
}

/// One host of a deploy's rollout: `current` switched to `release`, the site made when
/// `make_site` (before the clients restart into the new code), the clients restarted rolling,
/// the Celery workers restarted, old releases pruned. A client that does not answer sends the
/// host back to its previous release.
async fn roll_out(
    session: &Session,
    target: &Target<'_>,
    release: &str,
    make_site: bool,
    lbs: &[Host],
    templates: &Templates,
    progress: &dyn Progress,
) -> DeployOutcome {
    let name = target.host.name();
    progress.step(name, &format!("switching to {release}"));
    let switch = scripts::switch_current(&target.settings, release, templates);
    if let Err(error) = script_step(session, target, "switching current", switch).await {
        return DeployOutcome::Failed(session.mask(&format!("{error:#}")));
    }
    let restarted = match make_site {
        true => ensure_site(session, target, templates, progress)
            .await
            .map_err(|error| format!("{error:#}")),
        false => Ok(()),
    };
    let restarted = match restarted {
        Ok(()) => restart_clients(session, target, lbs, templates, progress).await,
        Err(failure) => Err(failure),
    };
    if let Err(failure) = restarted {
        progress.step(name, "going back to the previous release");
        let back = back_to_previous(session, target, lbs, templates, progress).await;
        return DeployOutcome::Failed(session.mask(&format!(
            "{failure}\n{}",
            match back {
                Ok(previous) => format!("{name} is back on {previous}"),
                Err(error) => format!("going back to the previous release failed too: {error:#}"),
            }
        )));
    }
    if let Some(workers) = &target.workers {
        progress.step(name, "restarting the Celery workers");
        let restart = provision_celery::worker::restart_command(workers);
        if let Err(error) = step(
            session,
            &target.host,
            "restarting the Celery workers",
            Command::new(restart),
        )
        .await
        {
            return DeployOutcome::Failed(session.mask(&format!("{error:#}")));
        }
    }
    let prune = scripts::prune_releases(&target.settings, templates);
    if let Err(error) = script_step(session, target, "pruning releases", prune).await {
        progress.step(name, &format!("pruning old releases failed: {error:#}"));
    }
    DeployOutcome::Deployed
}

/// The rollout's waves, as indexes into `targets`: whole hosts, together while their clients
/// add up to at most `--max-in-flight` (a host with more clients goes alone, restarting that
/// many at a time). The default of one client in flight is one host after another. With
/// `first_alone`, the first host is a wave of its own.
fn waves(session: &Session, targets: &[&Target<'_>], first_alone: bool) -> Vec<Vec<usize>> {
    let clients: Vec<usize> = targets.iter().map(|t| t.settings.clients.len()).collect();
    group_hosts(
        &clients,
        usize::from(session.args.max_in_flight),
        first_alone,
    )
}

/// [`waves`] over the hosts' client counts.
fn group_hosts(clients: &[usize], limit: usize, first_alone: bool) -> Vec<Vec<usize>> {
    let limit = limit.max(1);
    let mut waves: Vec<Vec<usize>> = Vec::new();
    let mut in_wave = 0;
    for (index, &count) in clients.iter().enumerate() {
        let count = count.max(1);
        let fits = in_wave + count <= limit && !(first_alone && index == 1);
        match waves.last_mut() {
            Some(wave) if fits => {
                wave.push(index);
                in_wave += count;
            }
            _ => {
                waves.push(vec![index]);
                in_wave = count;
            }
        }
    }
    waves
}

/// `plone_instances.create_site`: the Plone site, made through `target` when the database
/// has none.
async fn ensure_site(
    session: &Session,
    target: &Target<'_>,
    templates: &Templates,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let attributes = session.stack.attributes();
    let pi = &attributes.plone_instances;
    let site = scripts::Site {
        id: pi.site_id.clone(),
        title: pi.site_title.clone(),
        profiles: pi.site_profiles.clone(),
        language: "en".to_string(),
        timezone: attributes
            .system
            .timezone
            .clone()
            .unwrap_or_else(|| "UTC".to_string()),
    };
    let script = scripts::ensure_site(
        &target.settings,
        &site,
        target.spec.service_address(),
        templates,
    )?;
    let name = target.host.name();
    progress.step(name, &format!("checking the Plone site /{}", site.id));
    let what = format!("creating the Plone site /{}", site.id);
    let (report, _) = step(session, &target.host, &what, Command::new(script)).await?;
    if report.get("site") == Some("created") {
        progress.step(name, &format!("created the Plone site /{}", site.id));
    }
    Ok(())
}

/// `rollback`: every target back to its previous release, each with a rolling restart, in
/// waves of `--max-in-flight` clients; a failure stops the hosts after its wave.
pub async fn rollback(
    session: &Session,
    targets: &[Target<'_>],
    lbs: &[Host],
    templates: &Templates,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<HostDeploy>> {
    in_waves(session, targets, |target| async move {
        let name = target.host.name().to_string();
        match back_to_previous(session, target, lbs, templates, progress).await {
            Ok(release) => HostDeploy {
                host: name,
                release: Some(release),
                revision: None,
                outcome: DeployOutcome::RolledBack,
                live_checked: None,
                services_fixed: Vec::new(),
            },
            Err(error) => HostDeploy {
                host: name,
                release: None,
                revision: None,
                outcome: DeployOutcome::Failed(session.mask(&format!("{error:#}"))),
                live_checked: None,
                services_fixed: Vec::new(),
            },
        }
    })
    .await
}

/// `restart`: a rolling restart of every client of every target, in waves of
/// `--max-in-flight` clients; a failure stops the hosts after its wave.
pub async fn restart(
    session: &Session,
    targets: &[Target<'_>],
    lbs: &[Host],
    templates: &Templates,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<HostDeploy>> {
    in_waves(session, targets, |target| async move {
        let outcome = match restart_clients(session, target, lbs, templates, progress).await {
            Ok(()) => DeployOutcome::Restarted,
            Err(failure) => DeployOutcome::Failed(session.mask(&failure)),
        };
        HostDeploy {
            host: target.host.name().to_string(),
            release: None,
            revision: None,
            outcome,
            live_checked: None,
            services_fixed: Vec::new(),
        }
    })
    .await
}

/// Run `each` on the targets wave by wave ([`waves`]); after a wave with a failure, stop.
async fn in_waves<'t, 'a, F, Fut>(
    session: &Session,
    targets: &'t [Target<'a>],
    each: F,
) -> anyhow::Result<Vec<HostDeploy>>
where
    F: Fn(&'t Target<'a>) -> Fut,
    Fut: std::future::Future<Output = HostDeploy>,
{
    let all: Vec<&Target<'_>> = targets.iter().collect();
    let mut reports = Vec::new();
    for wave in waves(session, &all, false) {
        let done = futures::future::join_all(wave.iter().map(|&index| each(&targets[index]))).await;
        let failed = done
            .iter()
            .any(|r| matches!(r.outcome, DeployOutcome::Failed(_)));
        reports.extend(done);
        if failed {
            break;
        }
    }
    Ok(reports)
}

/// Switch `current` back to the previous release and restart every client on it.
async fn back_to_previous(
    session: &Session,
    target: &Target<'_>,
    lbs: &[Host],
    templates: &Templates,
    progress: &dyn Progress,
) -> anyhow::Result<String> {
    let script = scripts::rollback(&target.settings, templates)?;
    let (report, _) = step(session, &target.host, "rolling back", Command::new(script)).await?;
    let current = report
        .get("current")
        .unwrap_or("the previous release")
        .to_string();
    progress.step(target.host.name(), &format!("back on {current}"));
    restart_clients(session, target, lbs, templates, progress)
        .await
        .map_err(|failure| anyhow::anyhow!("{failure}"))?;
    Ok(current)
}

/// Restart the clients of one host, `--max-in-flight` at a time (default one): each is
/// drained in every HAProxy, waited for until its requests finish (bounded), taken out,
/// restarted, checked on its health URL, put back and seen UP by HAProxy; then
/// `restart_delay`. The error names the host and client and ends with the client's log.
async fn restart_clients(
    session: &Session,
    target: &Target<'_>,
    lbs: &[Host],
    templates: &Templates,
    progress: &dyn Progress,
) -> Result<(), String> {
    let delay = Duration::from_secs(session.stack.attributes().plone_instances.restart_delay);
    let clients: Vec<(usize, &ClientSettings)> =
        target.settings.clients.iter().enumerate().collect();
    for group in clients.chunks(usize::from(session.args.max_in_flight)) {
        let results = futures::future::join_all(group.iter().map(|(index, client)| {
            restart_client(session, target, lbs, templates, progress, index + 1, client)
        }))
        .await;
        if let Some(failure) = results.into_iter().find_map(Result::err) {
            return Err(failure);
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    Ok(())
}

/// One client of a rolling restart; `number` is its HAProxy server's (`<host>-<number>`).
async fn restart_client(
    session: &Session,
    target: &Target<'_>,
    lbs: &[Host],
    templates: &Templates,
    progress: &dyn Progress,
    number: usize,
    client: &ClientSettings,
) -> Result<(), String> {
    let attributes = session.stack.attributes();
    let health_path = &attributes.haproxy.health_check_url;
    let health_timeout = session.args.health_timeout;
    let host = &target.host;
    let address = target.spec.service_address();
    let server = format!("{}-{number}", target.spec.name);
    let fail = |what: String| async move {
        let tail =
            match scripts::client_log_tail(&target.settings, &client.name, LOG_LINES, templates) {
                Ok(script) => host
                    .exec(Command::new(script))
                    .await
                    .map(|o| o.stdout_lossy())
                    .unwrap_or_default(),
                Err(_) => String::new(),
            };
        format!(
            "host {}, {}: {what}\nthe last lines of its log:\n{}",
            host.name(),
            client.name,
            tail.trim_end()
        )
    };
    progress.step(host.name(), &format!("draining {server}"));
    drain(session, lbs, &server).await;
    set_state(session, lbs, &server, AdminState::Maint).await;
    progress.step(host.name(), &format!("restarting {}", client.name));
    let restart = scripts::restart_client(&target.settings, &client.name);
    match host
        .exec(Command::new(restart).timeout(session.command_timeout()))
        .await
    {
        Ok(output) if output.success() => {}
        Ok(output) => {
            return Err(fail(format!(
                "restart failed ({}): {}",
                output.describe_exit(),
                output.stderr_lossy().trim()
            ))
            .await);
        }
        Err(error) => return Err(fail(format!("restart failed: {error}")).await),
    }
    let health =
        scripts::client_health(address, client.port, health_path, health_timeout, templates)
            .map_err(|e| e.to_string())?;
    match host.exec(Command::new(health)).await {
        Ok(output) if output.success() => {}
        Ok(output) => {
            let report = Report::parse(&output.stdout_lossy());
            return Err(fail(format!(
                "no 200 from http://{address}:{}{health_path} within {health_timeout}s (last status {})",
                client.port,
                report.get("status").unwrap_or("none")
            ))
            .await);
        }
        Err(error) => return Err(fail(format!("health check failed: {error}")).await),
    }
    set_state(session, lbs, &server, AdminState::Ready).await;
    // The next client goes out only once HAProxy has seen this one answer its check.
    if !wait_until_up(session, lbs, &server).await {
        progress.step(
            host.name(),
            &format!("{server} is not UP in HAProxy yet; going on"),
        );
    }
    progress.step(host.name(), &format!("{} is back", client.name));
    Ok(())
}

/// Drain `server` in every HAProxy and wait until none serves a request on it (bounded):
/// `None` when no HAProxy lists it, else whether its sessions ended in time.
pub(crate) async fn drain(session: &Session, lbs: &[Host], server: &str) -> Option<bool> {
    if !set_state(session, lbs, server, AdminState::Drain).await {
        return None;
    }
    Some(
        wait_for_server(session, lbs, server, |s| {
            s.is_none_or(|s| s.current_sessions == 0)
        })
        .await,
    )
}

/// Wait until every HAProxy that lists `server` reports it UP (bounded by the drain timeout).
async fn wait_until_up(session: &Session, lbs: &[Host], server: &str) -> bool {
    wait_for_server(session, lbs, server, |s| {
        s.is_none_or(|s| s.status == ServerStatus::Up)
    })
    .await
}

/// Poll `show stat` of every HAProxy until `settled` holds for `server` (given `None` when
/// that HAProxy does not list it), at most [`DRAIN_TIMEOUT`] in all; whether it settled. An
/// HAProxy whose socket does not answer is passed over.
async fn wait_for_server(
    session: &Session,
    lbs: &[Host],
    server: &str,
    settled: impl Fn(Option<&ServerStat>) -> bool,
) -> bool {
    let socket = &session.stack.attributes().haproxy.stats_socket_path;
    let Ok(command) = show_stat(BACKEND) else {
        return false;
    };
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    for lb in lbs {
        loop {
            let done = match lb
                .exec(Command::new(socket_shell_command(socket, &command)))
                .await
            {
                Ok(output) => parse_show_stat(&output.stdout_lossy())
                    .map(|stats| settled(stats.iter().find(|s| s.name == server)))
                    .unwrap_or(true),
                Err(_) => true,
            };
            if done {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    true
}

/// Set `server`'s state in every HAProxy; whether any of them knows the server. An HAProxy
/// that does not list it yet (its `configure` has not run) is passed over.
pub(crate) async fn set_state(
    session: &Session,
    lbs: &[Host],
    server: &str,
    state: AdminState,
) -> bool {
    let socket = &session.stack.attributes().haproxy.stats_socket_path;
    let Ok(command) = set_server_state(BACKEND, server, state) else {
        return false;
    };
    let mut known = false;
    for lb in lbs {
        if let Ok(output) = lb
            .exec(Command::new(socket_shell_command(socket, &command)))
            .await
        {
            known |= output.success() && parse_set_server_answer(&output.stdout_lossy()).is_ok();
        }
    }
    known
}

#[cfg(test)]
mod tests {
    use super::{MaxFail, group_hosts};

    #[test]
    fn hosts_go_together_while_their_clients_fit_in_flight() {
        // One client in flight: one host after another, whatever their size.
        assert_eq!(
            group_hosts(&[2, 2, 1], 1, false),
            [vec![0], vec![1], vec![2]]
        );
        // Four in flight: two hosts of two at once; a host of three fills a wave alone.
        assert_eq!(
            group_hosts(&[2, 2, 3, 1, 5], 4, false),
            [vec![0, 1], vec![2, 3], vec![4]]
        );
        // The host that makes the Plone site goes alone, the rest as before.
        assert_eq!(group_hosts(&[1, 1, 1], 3, true), [vec![0], vec![1, 2]]);
    }

    #[test]
    fn max_fail_is_a_count_or_a_percentage_rounded_down() {
        assert_eq!("0".parse::<MaxFail>().unwrap().allowed(4), 0);
        assert_eq!("2".parse::<MaxFail>().unwrap().allowed(4), 2);
        assert_eq!("50%".parse::<MaxFail>().unwrap().allowed(3), 1);
        assert_eq!("49%".parse::<MaxFail>().unwrap().allowed(2), 0);
        assert_eq!("100%".parse::<MaxFail>().unwrap().allowed(7), 7);
        assert!("101%".parse::<MaxFail>().is_err());
        assert!("-1".parse::<MaxFail>().is_err());
        assert!("half".parse::<MaxFail>().unwrap_err().contains("`half`"));
    }
}
