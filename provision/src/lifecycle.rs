//! The rest of the OpsWorks lifecycle: `shutdown` (a host out of service, as before it is
//! retired) and `undeploy` (an app off its instance hosts).

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Instant;

use provision_core::engine::{Outcome, Progress as _};
use provision_core::host::{Command, Host};
use provision_core::shell::quote;
use provision_core::stack::{HostSpec, Layer, Stack};
use provision_nginx::haproxy::BACKEND;
use provision_nginx::haproxy_runtime::{
    AdminState, ServerStatus, parse_show_stat, show_stat, socket_shell_command,
};

use crate::cli::StackArgs;
use crate::deploy::{DRAIN_TIMEOUT, drain, set_state};
use crate::output::json_list;
use crate::run::{self, connect};
use crate::session::{Session, StderrProgress};
use crate::{BadInput, EXIT_HOST_FAILED, EXIT_OK};

/// One step of a command on one host, as reported.
#[derive(Debug, serde::Serialize)]
struct Step {
    step: String,
    ok: bool,
    detail: String,
}

impl Step {
    fn ok(step: &str, detail: impl Into<String>) -> Step {
        Step {
            step: step.to_string(),
            ok: true,
            detail: detail.into(),
        }
    }

    fn failed(step: &str, detail: impl Into<String>) -> Step {
        Step {
            step: step.to_string(),
            ok: false,
            detail: detail.into(),
        }
    }
}

/// `shutdown --host H`.
pub async fn shutdown(args: &StackArgs) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    if args.hosts.len() != 1 {
        return Err(BadInput(format!(
            "shutdown works on exactly one host, named with --host NAME (given: {})",
            if args.hosts.is_empty() {
                "none".to_string()
            } else {
                args.hosts.join(", ")
            }
        ))
        .into());
    }
    let session = Session::load(args)?;
    let selected = session.selected();
    let [spec] = selected.as_slice() else {
        return Err(BadInput(format!(
            "--host {} has none of the layers given with --layer",
            args.hosts[0]
        ))
        .into());
    };
    let spec: &HostSpec = spec;
    let groups = stop_groups(&session.stack, spec);
    let progress = StderrProgress::new();

    // The HAProxy of every lb host routes to this host's clients.
    let lb_specs: Vec<&HostSpec> = if spec.has_layer(Layer::PloneInstances) {
        session.stack.hosts_with(Layer::Lb)
    } else {
        Vec::new()
    };
    let mut reach = vec![spec];
    reach.extend(lb_specs.iter().filter(|l| l.name != spec.name));
    let (connected, failed) = connect(&session, &reach, &progress).await?;
    let unreachable = |name: &str| {
        failed
            .iter()
            .find(|r| r.host == name)
            .map(|r| match &r.outcome {
                Outcome::Failed(error) => error.clone(),
                _ => "unreachable".to_string(),
            })
    };

    let mut steps = Vec::new();
    let mut go_on = true;
    if spec.has_layer(Layer::PloneInstances) {
        const STEP: &str = "taking its clients out of HAProxy";
        progress.step(&spec.name, STEP);
        let lost: Vec<String> = lb_specs
            .iter()
            .filter_map(|l| unreachable(&l.name).map(|e| format!("{}: {e}", l.name)))
            .collect();
        if !lost.is_empty() {
            // A frontend we cannot reach may still send requests to these clients.
            steps.push(Step::failed(
                STEP,
                format!(
                    "{}; nothing was stopped, as that HAProxy may still send requests to {}",
                    lost.join("; "),
                    spec.name
                ),
            ));
            go_on = false;
        } else {
            let lbs: Vec<Host> = connected
                .iter()
                .map(|(h, _)| h)
                .filter(|h| lb_specs.iter().any(|l| l.name == h.name()))
                .cloned()
                .collect();
            let step = take_out_of_haproxy(&session, &lbs, &spec.name).await;
            go_on = step.ok;
            steps.push(step);
        }
    }
    let host = connected
        .iter()
        .find(|(h, _)| h.name() == spec.name)
        .map(|(h, _)| h);
    match (go_on, host) {
        (false, _) => {}
        (true, None) => steps.push(Step::failed(
            "stopping its services",
            unreachable(&spec.name).unwrap_or_else(|| "unreachable".to_string()),
        )),
        (true, Some(host)) => {
            for (what, units) in &groups {
                let step = format!("stopping {what}");
                progress.step(&spec.name, &step);
                let done = stop_units(&session, host, units).await;
                let failed = !done.ok;
                steps.push(Step { step, ..done });
                if failed {
                    break;
                }
            }
        }
    }

    let all_ok = steps.iter().all(|s| s.ok);
    let note = format!(
        "{} stays in {} until it is removed there; then `provision configure` updates the \
         frontends' configuration",
        spec.name,
        session.stack_path().display()
    );
    if args.json {
        crate::out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "host": spec.name,
                "stopped": all_ok,
                "steps": steps,
                "note": note,
                "elapsed_seconds": start.elapsed().as_secs_f64(),
            }))?
        );
    } else {
        for step in &steps {
            let status = if step.ok { "" } else { "FAILED: " };
            crate::out!("{}: {}{}: {}", spec.name, status, step.step, step.detail);
        }
        if all_ok {
            crate::out!(
                "{}: shut down ({:.1}s)",
                spec.name,
                start.elapsed().as_secs_f64()
            );
        }
        crate::out!("note: {note}");
    }
    Ok(ExitCode::from(if all_ok {
        EXIT_OK
    } else {
        EXIT_HOST_FAILED
    }))
}

/// The services of a host's layers, in the order they stop: what serves requests and what
/// uses other services first, the stores last. Units may be globs; a bare name is a service.
fn stop_groups(stack: &Stack, host: &HostSpec) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |what: &str, units: Vec<String>| groups.push((what.to_string(), units));
    let has = |layer| host.has_layer(layer);
    if has(Layer::Lb) {
        add(
            "the frontend",
            vec!["nginx".into(), "varnish".into(), "haproxy".into()],
        );
    }
    if has(Layer::PloneInstances)
        && let Some(app) = stack.app_for(Layer::PloneInstances)
    {
        add("the Plone clients", vec![client_glob(&app.name)]);
        // Beat sends tasks, the worker runs them: beat first.
        let mut celery = provision_celery::worker::units(&app.name).to_vec();
        celery.reverse();
        add("Celery", celery);
    }
    let mut timers = Vec::new();
    if has(Layer::Zeoserver) {
        timers.extend([
            provision_zeo::zeoserver::BACKUP_JOB,
            provision_zeo::zeoserver::PACK_JOB,
        ]);
    }
    if has(Layer::Postgres) {
        timers.push(provision_zeo::postgres::BACKUP_JOB);
    }
    if has(Layer::DbPacking) {
        timers.extend([
            provision_zeo::packing::PREPACK_JOB,
            provision_zeo::packing::PACK_JOB,
            provision_zeo::packing::CLEAR_REFS_JOB,
        ]);
    }
    if !timers.is_empty() {
        add(
            "the scheduled jobs",
            timers.iter().map(|t| format!("{t}.timer")).collect(),
        );
    }
    if has(Layer::Solr) {
        add("Solr", vec![provision_solr::server::SERVICE.into()]);
    }
    if has(Layer::CeleryBroker) {
        add("Redis", vec![provision_celery::broker::SERVICE.into()]);
    }
    if has(Layer::Memcached) {
        add("memcached", vec![provision_zeo::memcached::SERVICE.into()]);
    }
    if has(Layer::Zeoserver) {
        add("ZEO", vec![provision_zeo::zeoserver::SERVICE.into()]);
    }
    if has(Layer::Postgres) {
        add("PostgreSQL", vec!["postgresql".into()]);
    }
    if has(Layer::SharedBlobs) {
        add(
            "the blob server",
            vec!["nfs-ganesha".into(), "glusterd".into(), "nfs-server".into()],
        );
    }
    groups
}

/// Every client unit of `app` (surplus ones too), e.g. `plone-site@*.service`.
fn client_glob(app: &str) -> String {
    let settings = provision_plone::InstanceSettings::new(app, "/", Vec::new());
    format!("{}.service", settings.client_unit("*"))
}

fn unit_name(unit: &str) -> String {
    if unit.contains('.') {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

/// Stop the running units among `units`, one pattern after another (every unit of a glob at
/// once), and check that none runs any more.
async fn stop_units(session: &Session, host: &Host, units: &[String]) -> Step {
    let patterns: Vec<String> = units.iter().map(|u| quote(&unit_name(u))).collect();
    let script = format!(
        "set -u\n\
         running() {{ systemctl list-units --plain --no-legend --state=active,activating,reloading,deactivating -- \"$@\" | awk '{{print $1}}'; }}\n\
         for p in {patterns}; do\n\
         \x20   units=$(running \"$p\")\n\
         \x20   [ -n \"$units\" ] || continue\n\
         \x20   systemctl stop -- $units || exit $?\n\
         \x20   for u in $units; do echo \"@stopped=$u\"; done\n\
         done\n\
         still=$(running {patterns})\n\
         [ -z \"$still\" ] || {{ echo \"still running:\" $still >&2; exit 1; }}",
        patterns = patterns.join(" ")
    );
    let output = match host
        .exec(Command::new(script).timeout(session.command_timeout()))
        .await
    {
        Ok(output) => output,
        Err(error) => return Step::failed("", error.to_string()),
    };
    if !output.success() {
        return Step::failed(
            "",
            format!(
                "{}: {}",
                output.describe_exit(),
                session.mask(output.stderr_lossy().trim())
            ),
        );
    }
    let report = provision_plone::deploy::Report::parse(&output.stdout_lossy());
    let stopped = report.all("stopped");
    Step::ok(
        "",
        if stopped.is_empty() {
            "none was running".to_string()
        } else {
            format!("stopped {}", stopped.join(", "))
        },
    )
}

/// Drain every server of `host` in every HAProxy, wait for its requests to end (bounded),
/// set it to MAINT and check that each HAProxy shows it so.
async fn take_out_of_haproxy(session: &Session, lbs: &[Host], host: &str) -> Step {
    const STEP: &str = "taking its clients out of HAProxy";
    if lbs.is_empty() {
        return Step::ok(STEP, "the stack has no lb host");
    }
    let servers = match servers_of(session, lbs, host).await {
        Ok(servers) => servers,
        Err(error) => return Step::failed(STEP, format!("{error}; nothing was stopped")),
    };
    if servers.is_empty() {
        return Step::ok(STEP, format!("no HAProxy lists a client of {host}"));
    }
    let drained = futures::future::join_all(servers.iter().map(|s| drain(session, lbs, s))).await;
    let mut lingering = Vec::new();
    for (server, drained) in servers.iter().zip(drained) {
        if drained == Some(false) {
            lingering.push(server.clone());
        }
        set_state(session, lbs, server, AdminState::Maint).await;
    }
    let lb_names: Vec<&str> = lbs.iter().map(Host::name).collect();
    let not_maint = match statuses(session, lbs, &servers).await {
        Ok(not_maint) => not_maint,
        Err(error) => return Step::failed(STEP, format!("{error}; nothing was stopped")),
    };
    if !not_maint.is_empty() {
        return Step::failed(
            STEP,
            format!(
                "not in MAINT: {}; nothing was stopped",
                not_maint.join(", ")
            ),
        );
    }
    let mut detail = format!(
        "{} drained and in MAINT in the HAProxy of {}",
        servers.join(", "),
        lb_names.join(", ")
    );
    if !lingering.is_empty() {
        detail.push_str(&format!(
            " ({} still had requests after {} s: stopped anyway)",
            lingering.join(", "),
            DRAIN_TIMEOUT.as_secs()
        ));
    }
    Step::ok(STEP, detail)
}

/// `show stat` of every HAProxy; an error names the lb host whose socket did not answer.
async fn show_stats(
    session: &Session,
    lbs: &[Host],
) -> Result<Vec<(String, Vec<provision_nginx::haproxy_runtime::ServerStat>)>, String> {
    let socket = &session.stack.attributes().haproxy.stats_socket_path;
    let command = show_stat(BACKEND).map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    for lb in lbs {
        let failed = |why: String| {
            format!(
                "{}: HAProxy's socket {socket} did not answer: {why}",
                lb.name()
            )
        };
        let output = lb
            .exec(Command::new(socket_shell_command(socket, &command)))
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !output.success() {
            return Err(failed(output.stderr_lossy().trim().to_string()));
        }
        let stats = parse_show_stat(&output.stdout_lossy()).map_err(|e| failed(e.to_string()))?;
        all.push((lb.name().to_string(), stats));
    }
    Ok(all)
}

/// The HAProxy servers of `host`'s clients (`<host>-<number>`) in any HAProxy.
async fn servers_of(session: &Session, lbs: &[Host], host: &str) -> Result<Vec<String>, String> {
    let prefix = format!("{host}-");
    let mut servers: Vec<String> = show_stats(session, lbs)
        .await?
        .into_iter()
        .flat_map(|(_, stats)| stats)
        .map(|s| s.name)
        .filter(|name| {
            name.strip_prefix(&prefix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    servers.sort_by_key(|s| s[prefix.len()..].parse::<u32>().unwrap_or(u32::MAX));
    servers.dedup();
    Ok(servers)
}

/// The `lb: server (STATUS)` of `servers` that some HAProxy does not show in MAINT.
async fn statuses(
    session: &Session,
    lbs: &[Host],
    servers: &[String],
) -> Result<Vec<String>, String> {
    Ok(show_stats(session, lbs)
        .await?
        .into_iter()
        .flat_map(|(lb, stats)| {
            stats
                .into_iter()
                .filter(|s| servers.contains(&s.name) && s.status != ServerStatus::Maint)
                .map(move |s| format!("{lb}: {} ({:?})", s.name, s.status))
        })
        .collect())
}

/// `undeploy APP [--purge-data] [--yes]`.
pub async fn undeploy(
    args: &StackArgs,
    app: &str,
    purge_data: bool,
    yes: bool,
) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    run::check_app(args, Some(app), "undeploy")?;
    let session = Session::load(args)?;
    let selected = run::instance_hosts(&session)?;
    let app = session
        .stack
        .app(app)
        .expect("check_app found the app")
        .clone();
    let deploy_to = app.deploy_to.display().to_string();
    let names: Vec<&str> = selected.iter().map(|h| h.name.as_str()).collect();
    if purge_data && !yes {
        confirm_purge(&app.name, &deploy_to, &names)?;
    }

    let progress = StderrProgress::new();
    let (connected, failed) = connect(&session, &selected, &progress).await?;
    let script = undeploy_script(&app.name, &deploy_to, purge_data);
    let runs = futures::future::join_all(connected.iter().map(|(host, _)| {
        progress.step(host.name(), &format!("undeploying {}", app.name));
        host.exec(Command::new(script.clone()).timeout(session.command_timeout()))
    }))
    .await;

    let mut rows = Vec::new();
    for report in &failed {
        if let Outcome::Failed(error) = &report.outcome {
            rows.push(
                serde_json::json!({"host": report.host, "undeployed": false, "error": error}),
            );
        }
    }
    for ((host, _), run) in connected.iter().zip(runs) {
        let row = match run {
            Ok(output) => {
                let report = provision_plone::deploy::Report::parse(&output.stdout_lossy());
                let mut row = serde_json::json!({
                    "host": host.name(),
                    "undeployed": output.success(),
                    "stopped": report.all("stopped"),
                    "removed": report.all("removed"),
                    "releases_removed": report.get("releases").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0),
                    "kept": report.all("kept"),
                });
                if !output.success() {
                    row["error"] = serde_json::Value::String(session.mask(&format!(
                        "{} ({}): {}",
                        report.get("step").unwrap_or("undeploying"),
                        output.describe_exit(),
                        output.stderr_lossy().trim()
                    )));
                }
                row
            }
            Err(error) => {
                serde_json::json!({"host": host.name(), "undeployed": false, "error": error.to_string()})
            }
        };
        rows.push(row);
    }
    rows.sort_by_key(|r| names.iter().position(|n| r["host"].as_str() == Some(*n)));
    let all_ok = rows.iter().all(|r| r["undeployed"] == true);
    let note = format!(
        "{app} stays in {stack}: `provision up` or `provision deploy` would deploy it again; \
         remove [apps.{app}] (and the plone_instances layer of its hosts) from {stack} to retire it",
        app = app.name,
        stack = session.stack_path().display()
    );
    if args.json {
        crate::out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "app": app.name,
                "hosts": rows,
                "note": note,
                "elapsed_seconds": start.elapsed().as_secs_f64(),
            }))?
        );
    } else {
        for row in &rows {
            let host = row["host"].as_str().unwrap_or_default();
            if let Some(error) = row["error"].as_str() {
                crate::out!("{host}: FAILED: {error}");
                continue;
            }
            let stopped = json_list(&row["stopped"]);
            crate::out!(
                "{host}: undeployed {}: stopped and disabled {}; removed {} release(s), {}{}",
                app.name,
                if stopped.is_empty() {
                    "nothing (none was there)"
                } else {
                    &stopped
                },
                row["releases_removed"],
                json_list(&row["removed"]),
                match json_list(&row["kept"]) {
                    kept if kept.is_empty() => String::new(),
                    kept => format!("; kept {kept}"),
                }
            );
        }
        crate::out!("({:.1}s)", start.elapsed().as_secs_f64());
        crate::out!("note: {note}");
    }
    Ok(ExitCode::from(if all_ok {
        EXIT_OK
    } else {
        EXIT_HOST_FAILED
    }))
}

/// --purge-data without --yes: ask on a terminal (the app's name typed back), refuse
/// otherwise. Either refusal changes nothing.
fn confirm_purge(app: &str, deploy_to: &str, hosts: &[&str]) -> Result<(), BadInput> {
    let what = format!(
        "--purge-data removes {deploy_to} with the data of app {app} (shared/var: filestorage, \
         blobs, logs) on {}",
        hosts.join(", ")
    );
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(BadInput(format!(
            "{what}: run it again with --yes to do it (nothing was changed)"
        )));
    }
    eprint!("{what}.\nType the app's name ({app}) to go on: ");
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if answer.trim() == app {
        Ok(())
    } else {
        Err(BadInput("not confirmed: nothing was changed".to_string()))
    }
}

/// The script that undeploys `app` from one host, under the app's deploy lock: its clients
/// and Celery units that run or are enabled stopped and disabled, then its releases, `current`, `previous` and build
/// state removed (or, with `purge`, `deploy_to` whole). It prints `@stopped=`, `@removed=`,
/// `@releases=` and `@kept=` lines, and `@step=` before each step.
fn undeploy_script(app: &str, deploy_to: &str, purge: bool) -> String {
    let [worker, beat] = provision_celery::worker::units(app);
    let build_state = [
        "repo",
        "repo.provision-tmp",
        "env",
        "eggs",
        "downloads",
        "extends",
    ];
    let removal = if purge {
        "rm -rf -- \"$DEPLOY_TO\"\n\
         echo \"@removed=$DEPLOY_TO\""
            .to_string()
    } else {
        format!(
            "for l in current previous current.provision-tmp previous.provision-tmp; do\n\
             \x20   if [ -L \"$DEPLOY_TO/$l\" ] || [ -e \"$DEPLOY_TO/$l\" ]; then rm -rf -- \"$DEPLOY_TO/$l\"; echo \"@removed=$l\"; fi\n\
             done\n\
             n=0\n\
             for r in \"$DEPLOY_TO/releases\"/* \"$DEPLOY_TO/releases\"/.[!.]*; do\n\
             \x20   if [ -L \"$r\" ] || [ -e \"$r\" ]; then rm -rf -- \"$r\"; n=$((n + 1)); fi\n\
             done\n\
             echo \"@releases=$n\"\n\
             for d in {build_state}; do\n\
             \x20   if [ -L \"$DEPLOY_TO/shared/$d\" ] || [ -e \"$DEPLOY_TO/shared/$d\" ]; then rm -rf -- \"$DEPLOY_TO/shared/$d\"; echo \"@removed=shared/$d\"; fi\n\
             done\n\
             for k in \"$DEPLOY_TO/shared\"/*; do [ -e \"$k\" ] && echo \"@kept=$k\"; done",
            build_state = build_state.join(" ")
        )
    };
    // rm -rf never follows a link: a shared/var/blobstorage that links to the blob store
    // goes, the store stays.
    format!(
        "set -u\n\
         DEPLOY_TO={deploy_to}\n\
         fail() {{ echo \"error: $*\" >&2; exit 1; }}\n\
         echo @step=taking the deploy lock\n\
         if [ -d \"$DEPLOY_TO\" ]; then\n\
         \x20   exec 9<\"$DEPLOY_TO\"\n\
         \x20   flock -w 60 9 || fail \"a deploy of $DEPLOY_TO still holds its lock after 60 s\"\n\
         fi\n\
         echo @step=stopping the Plone clients\n\
         clients=$( {{ systemctl list-units --plain --no-legend --type=service --state=active,activating,deactivating,reloading,failed -- {clients} | awk '{{print $1}}'\n\
         \x20   find /etc/systemd/system -mindepth 2 -maxdepth 2 -path '*.wants/*' -name {clients} -printf '%f\\n'; }} | sort -u)\n\
         if [ -n \"$clients\" ]; then\n\
         \x20   systemctl disable --now --quiet -- $clients || fail \"systemctl disable --now failed\"\n\
         \x20   systemctl reset-failed -- $clients 2>/dev/null\n\
         \x20   for u in $clients; do echo \"@stopped=$u\"; done\n\
         fi\n\
         echo @step=stopping Celery\n\
         for u in {beat} {worker}; do\n\
         \x20   systemctl is-active --quiet -- \"$u\" || systemctl is-failed --quiet -- \"$u\" \\\n\
         \x20       || [ \"$(systemctl is-enabled -- \"$u\" 2>/dev/null)\" = enabled ] || continue\n\
         \x20   systemctl disable --now --quiet -- \"$u\" || fail \"systemctl disable --now $u failed\"\n\
         \x20   systemctl reset-failed -- \"$u\" 2>/dev/null\n\
         \x20   echo \"@stopped=$u\"\n\
         done\n\
         echo @step=removing the releases\n\
         [ -d \"$DEPLOY_TO\" ] || exit 0\n\
         {removal}\n\
         exit 0",
        deploy_to = quote(deploy_to),
        clients = quote(&client_glob(app)),
        beat = quote(&beat),
        worker = quote(&worker),
    )
}
