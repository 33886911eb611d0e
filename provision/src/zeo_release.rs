//! The ZEO server's releases in buildout mode (`plone_zeoserver.mode = "buildout"`), as the
//! cookbook's zeoserver-deploy: the app's `zeoserver` part built in `releases/<stamp>` by the
//! instances' release scripts, `current` switched, ZEO restarted into it. It runs before the
//! instances' deploy (their clients need the server) and only when the revision or the
//! generated `deploy.cfg` changed, so a second `up` leaves ZEO alone. The result is one more
//! change (`release:zeoserver`) of the host's report, in `plan` too.

use provision_core::engine::{self, Change, HostReport, Mode, Options, Outcome, Progress};
use provision_core::facts::Facts;
use provision_core::host::{Command, Host};
use provision_core::stack::Layer;
use provision_core::template::Templates;
use provision_plone::deploy::{self as scripts, Prepared, Report, Source};
use provision_zeo::zeoserver;

use crate::layers::database::{ZeoRelease, zeo_app, zeo_release};
use crate::layers::instances;
use crate::session::Session;

/// The resource name of the release in the host's report.
const RESOURCE: &str = "release:zeoserver";

/// Which revision to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// The app's.
    App,
    /// The live one: a rebuild only when the generated configuration changed; nothing
    /// before the first release.
    Live,
}

/// Build (or, with `plan`, show) the ZEO release of every buildout-mode `zeoserver` host among
/// `hosts` whose converge did not fail, recording the outcome in its report.
pub async fn converge(
    session: &Session,
    hosts: &[(Host, Facts)],
    reports: &mut [HostReport],
    revision: Revision,
    plan: bool,
    templates: &Templates,
    progress: &dyn Progress,
) {
    for (host, _) in hosts {
        let Some(report) = reports.iter_mut().find(|r| r.host == host.name()) else {
            continue;
        };
        let Some(spec) = session.stack.host(host.name()) else {
            continue;
        };
        if report.is_failed() || !spec.has_layer(Layer::Zeoserver) {
            continue;
        }
        let result = match zeo_release(&session.stack, spec, templates) {
            Ok(Some(release)) => {
                one_host(session, host, &release, revision, plan, templates, progress).await
            }
            Ok(None) => continue,
            Err(error) => Err(error),
        };
        match result {
            Ok(None) => {}
            Ok(Some(summary)) => {
                report.changes.push(Change {
                    resource: RESOURCE.to_string(),
                    summary,
                    diff: None,
                });
                if report.outcome == Outcome::Unchanged {
                    report.outcome = if plan {
                        Outcome::Planned
                    } else {
                        Outcome::Changed
                    };
                }
            }
            Err(error) => {
                report.outcome = Outcome::Failed(session.mask(&format!(
                    "host {}: the ZEO server's release: {error:#}",
                    host.name()
                )));
            }
        }
    }
}

/// One host: what changed (or would), `None` when nothing did.
async fn one_host(
    session: &Session,
    host: &Host,
    release: &ZeoRelease,
    revision: Revision,
    plan: bool,
    templates: &Templates,
    progress: &dyn Progress,
) -> anyhow::Result<Option<Vec<String>>> {
    let settings = &release.settings;
    let app = zeo_app(&session.stack)?;
    // The live release matters to `plan` and to a rebuild of the live revision; `up` builds
    // the app's revision, and its prepare script finds out itself whether that is live.
    let live = if plan || revision == Revision::Live {
        let status = scripts::release_status(settings, templates)?;
        match run(session, host, "reading the releases", status).await {
            Ok(live) => live,
            // A host that is not set up yet (no user, no `deploy_to`) has no release.
            Err(_) if plan => Report::default(),
            Err(error) => return Err(error),
        }
    } else {
        Report::default()
    };
    let live_revision = live.get("revision").map(str::to_string);
    let revision = match (revision, &live_revision) {
        (Revision::Live, None) => return Ok(None),
        (Revision::Live, Some(live)) => live.clone(),
        (Revision::App, _) => app.revision.clone().unwrap_or_else(|| "HEAD".to_string()),
    };
    let source = instances::source(&session.stack, app, &revision).await?;
    let fingerprint = scripts::fingerprint_of(settings, &release.files);
    if plan {
        let same_config = live.get("config_sha256") == Some(fingerprint.as_str());
        let same_commit = match &source {
            Source::Pushed(tree) => live_revision.as_deref() == Some(tree.commit.as_str()),
            // A branch may have moved: only the build can tell, and it changes nothing then.
            Source::Git { .. } => live_revision.is_some(),
        };
        if same_config && same_commit && !settings.deploy.always_build_on_deploy {
            return Ok(None);
        }
        let why = match (&live_revision, same_config) {
            (None, _) => "no release yet".to_string(),
            (Some(_), false) => "the generated deploy.cfg changed".to_string(),
            (Some(live), true) => format!("live revision {}", short(live)),
        };
        return Ok(Some(vec![
            format!("build {} ({why})", source),
            format!("restart {}", zeoserver::SERVICE),
        ]));
    }
    progress.step(
        host.name(),
        &format!("building the ZEO server from {}", source),
    );
    // On an unchanged release the script checks ZEO's service too: no round trip for it.
    let live_check =
        engine::check_script(&[zeoserver::release_service()]).map_err(anyhow::Error::msg)?;
    let command = scripts::prepare_release_of(
        settings,
        &release.files,
        &source,
        Some(&live_check),
        templates,
    )?;
    let output = host
        .exec(command.timeout(session.command_timeout()))
        .await
        .map_err(|e| anyhow::anyhow!("building the release: {e}"))?;
    let prepared = scripts::parse_prepared(&output).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (built, commit) = match prepared {
        Prepared::Built { release, commit } => (release, commit),
        Prepared::Unchanged { live_checked, .. } => {
            // ZEO keeps running; started if it is not.
            let started = ensure_running(session, host, live_checked.as_deref(), progress).await?;
            return Ok(started.then(|| vec![format!("start {}", zeoserver::SERVICE)]));
        }
    };
    let switch = scripts::switch_current(settings, &built, templates)?;
    run(session, host, "switching current", switch).await?;
    progress.step(
        host.name(),
        &format!("restarting {} into {built}", zeoserver::SERVICE),
    );
    run(
        session,
        host,
        "restarting ZEO",
        zeoserver::restart_command(),
    )
    .await?;
    let prune = scripts::prune_releases(settings, templates)?;
    if let Err(error) = run(session, host, "pruning releases", prune).await {
        progress.step(
            host.name(),
            &format!("pruning old releases failed: {error:#}"),
        );
    }
    Ok(Some(vec![
        format!("built {built} ({})", short(&commit)),
        format!("restarted {}", zeoserver::SERVICE),
    ]))
}

/// Start ZEO when it is not running; whether it was started. `checked` is the output of its
/// check, when the prepare script ran it.
async fn ensure_running(
    session: &Session,
    host: &Host,
    checked: Option<&str>,
    progress: &dyn Progress,
) -> anyhow::Result<bool> {
    let mask = |s: &str| session.mask(s);
    let options = Options {
        mode: Mode::Apply,
        command_timeout: Some(session.command_timeout()),
        mask: &mask,
        progress,
    };
    let report =
        engine::converge_checked(host, &[zeoserver::release_service()], checked, &options).await;
    match report.outcome {
        Outcome::Failed(error) => anyhow::bail!("starting ZEO: {error}"),
        Outcome::Changed => Ok(true),
        _ => Ok(false),
    }
}

/// Run a step's script; an error names the step and carries what the script said.
async fn run(session: &Session, host: &Host, what: &str, script: String) -> anyhow::Result<Report> {
    let output = host
        .exec(Command::new(script).timeout(session.command_timeout()))
        .await
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    scripts::check_step(what, &output).map_err(|e| anyhow::anyhow!("{e}"))
}

fn short(commit: &str) -> &str {
    &commit[..12.min(commit.len())]
}
