//! `provision watch`: self-healing, as OpsWorks' auto healing did. Each round probes every
//! watched host (one SSH command, bounded in time, all hosts at once). An instance host that
//! failed `--down-after` probes in a row is away: the lb hosts are reconverged (Configure, by
//! `run::converge_session`) with HAProxy listing none of its clients. Once it answers again
//! and its clients answer their health URL, the lb hosts are reconverged with every client.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use provision_core::engine::{Connection, Outcome};
use provision_core::facts::Facts;
use provision_core::host::{Command, Host};
use provision_core::phase::Phase;
use provision_core::stack::{HostSpec, Layer};
use provision_core::template::Templates;
use tokio::sync::watch;

use crate::cli::StackArgs;
use crate::output::{count, utc_now};
use crate::session::Session;
use crate::{BadInput, EXIT_HOST_FAILED, EXIT_OK, layers, run};

/// The shortest time a probe is given (it is given `--interval` when that is longer).
const PROBE_TIMEOUT_MIN: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT_MAX: Duration = Duration::from_secs(30);
/// Seconds a returning host's client has to answer its health URL, each round.
const HEALTH_SECONDS: u64 = 5;

/// `--interval`, `--down-after`, `--once`.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    pub interval: Duration,
    pub down_after: u32,
    pub once: bool,
}

/// One watched host.
struct Watched {
    spec: HostSpec,
    connection: Connection,
    /// The SSH connection of the last probe that answered, reused by the next.
    host: Option<Host>,
    /// Probes failed in a row.
    failures: u32,
    /// Whether the last probe answered.
    answers: bool,
    /// Failed `--down-after` probes in a row and not back yet.
    away: bool,
    /// An away instance host that answers but whose clients do not (yet): why, once said.
    waiting: Option<String>,
}

impl Watched {
    fn instance(&self) -> bool {
        self.spec.has_layer(Layer::PloneInstances)
    }
}

/// What HAProxy on one lb host lists, as far as this watch knows.
#[derive(Default)]
struct Frontend {
    /// The away hosts of its last successful reconverge (`None`: not reconverged yet).
    applied: Option<BTreeSet<String>>,
    /// The last failure, said once.
    error: Option<String>,
}

/// A host that went away or came back.
struct Event {
    host: String,
    /// Whether it is an instance host (whose clients HAProxy lists).
    instance: bool,
    change: Change,
}

enum Change {
    /// After this many failed probes; why the last one failed.
    Away {
        probes: u32,
        reason: String,
    },
    Back,
}

pub async fn watch(args: &StackArgs, options: WatchOptions) -> anyhow::Result<ExitCode> {
    let session = Session::load(args)?;
    let mut hosts: Vec<Watched> = session
        .selected()
        .into_iter()
        .map(|spec| {
            Ok(Watched {
                spec: spec.clone(),
                connection: session.connection(spec)?,
                host: None,
                failures: 0,
                answers: false,
                away: false,
                waiting: None,
            })
        })
        .collect::<Result<_, BadInput>>()?;
    if hosts.is_empty() {
        return Err(BadInput(format!(
            "no host to watch: --host and --layer select none of {}",
            session.stack_path().display()
        ))
        .into());
    }
    let templates = Templates::new(&layers::all_templates()).context("loading templates")?;
    // The lb hosts are reconverged through a session of their own (the lb layer only).
    let mut lb_args = args.clone();
    lb_args.hosts.clear();
    lb_args.layers = vec![Layer::Lb.as_str().to_string()];
    let mut lb_session = Session::load(&lb_args)?;
    let mut frontends: BTreeMap<String, Frontend> = session
        .stack
        .hosts_with(Layer::Lb)
        .into_iter()
        .map(|h| (h.name.clone(), Frontend::default()))
        .collect();
    // With --once nothing is remembered between runs: one failed probe is away.
    let down_after = if options.once { 1 } else { options.down_after };
    let probe_timeout = options.interval.clamp(PROBE_TIMEOUT_MIN, PROBE_TIMEOUT_MAX);
    if !options.once {
        eprintln!(
            "provision watch: {} of stack {} every {}s; an instance host is taken out of the \
             frontend after {}; Ctrl-C ends it",
            count(hosts.len(), "host"),
            session.stack.name(),
            options.interval.as_secs(),
            count(down_after as usize, "failed probe"),
        );
    }

    let mut stop = listen_for_stop()?;
    let mut ticks = tokio::time::interval(options.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut any_failed = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let events = tokio::select! {
            events = probe_round(&session, &mut hosts, down_after, probe_timeout, &templates) => events,
            _ = stop.wait_for(|s| *s) => break,
        };
        // A reconverge runs to its end: stopped halfway, HAProxy could keep a file it never
        // reloaded. A second Ctrl-C ends the program at once.
        let away: BTreeSet<String> = hosts
            .iter()
            .filter(|w| w.instance() && w.away)
            .map(|w| w.spec.name.clone())
            .collect();
        // The line of an instance host's event says where the frontend changed.
        let explained = events.iter().any(|e| e.instance);
        let reconverged = reconverge(
            &mut lb_session,
            &hosts,
            &mut frontends,
            &away,
            explained,
            args.json,
        )
        .await;
        any_failed |= !reconverged;
        for event in &events {
            let kind = match event.change {
                Change::Away { .. } => "away",
                Change::Back => "back",
            };
            let message = event_message(event, &frontends, &away);
            line(kind, &event.host, &message, args.json);
        }
        if options.once || *stop.borrow() {
            break;
        }
    }
    for watched in &hosts {
        if let Some(host) = &watched.host {
            host.close().await;
        }
    }
    if !options.once {
        eprintln!("provision watch: stopped");
    }
    Ok(ExitCode::from(if options.once && any_failed {
        EXIT_HOST_FAILED
    } else {
        EXIT_OK
    }))
}

/// Probe every host at once and update their state; an away instance host that answers is
/// back only when its clients answer their health URL too.
async fn probe_round(
    session: &Session,
    hosts: &mut [Watched],
    down_after: u32,
    timeout: Duration,
    templates: &Templates,
) -> Vec<Event> {
    let results = futures::future::join_all(
        hosts
            .iter()
            .map(|w| probe(&w.spec.name, w.host.clone(), &w.connection, timeout)),
    )
    .await;
    let mut events = Vec::new();
    let mut returning = Vec::new();
    for (index, (watched, result)) in hosts.iter_mut().zip(results).enumerate() {
        match result {
            Ok(host) => {
                watched.host = Some(host);
                watched.answers = true;
                watched.failures = 0;
                if watched.away && watched.instance() {
                    returning.push(index);
                } else if watched.away {
                    watched.away = false;
                    events.push(Event {
                        host: watched.spec.name.clone(),
                        instance: false,
                        change: Change::Back,
                    });
                }
            }
            Err(reason) => {
                watched.host = None;
                watched.answers = false;
                watched.waiting = None;
                watched.failures += 1;
                if !watched.away && watched.failures >= down_after {
                    watched.away = true;
                    events.push(Event {
                        host: watched.spec.name.clone(),
                        instance: watched.instance(),
                        change: Change::Away {
                            probes: watched.failures,
                            reason,
                        },
                    });
                }
            }
        }
    }
    let checks = futures::future::join_all(returning.iter().map(|&index| {
        let watched = &hosts[index];
        let host = watched.host.clone();
        async move {
            let Some(host) = host else {
                return Err("not connected".to_string());
            };
            tokio::time::timeout(
                timeout + Duration::from_secs(HEALTH_SECONDS),
                clients_answer(session, &watched.spec, &host, templates),
            )
            .await
            .unwrap_or_else(|_| Err("its clients' health check did not end in time".into()))
        }
    }))
    .await;
    for (index, check) in returning.into_iter().zip(checks) {
        let watched = &mut hosts[index];
        match check {
            Ok(()) => {
                watched.away = false;
                watched.waiting = None;
                events.push(Event {
                    host: watched.spec.name.clone(),
                    instance: true,
                    change: Change::Back,
                });
            }
            Err(reason) => {
                if watched.waiting.as_deref() != Some(reason.as_str()) {
                    line(
                        "waiting",
                        &watched.spec.name,
                        &format!(
                            "host {}: answers again, but not its clients yet ({reason}); it \
                             stays out of the frontend",
                            watched.spec.name
                        ),
                        session.args.json,
                    );
                    watched.waiting = Some(reason);
                }
            }
        }
    }
    events
}

/// One probe: a trivial command over the last connection, else over a new one, within
/// `timeout`. The connection that answered, or why none did.
async fn probe(
    name: &str,
    cached: Option<Host>,
    connection: &Connection,
    timeout: Duration,
) -> Result<Host, String> {
    let attempt = async {
        if let Some(host) = cached {
            match host.exec(Command::new("true")).await {
                Ok(output) if output.success() => return Ok(host),
                // A lost connection (a host that rebooted): try a new one below.
                _ => host.close().await,
            }
        }
        let host = match connection {
            Connection::Local => Host::local(name),
            Connection::Ssh(target) => Host::connect_ssh(name, target)
                .await
                .map_err(|e| run::connect_error(&e))?,
        };
        match host.exec(Command::new("true")).await {
            Ok(output) if output.success() => Ok(host),
            Ok(output) => Err(format!("`true` ended with {}", output.describe_exit())),
            Err(error) => Err(run::connect_error(&error)),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", timeout.as_secs())))
}

/// Whether every Plone client of an instance host answers its health URL (checked on the
/// host, as a deploy does); else which one does not.
async fn clients_answer(
    session: &Session,
    spec: &HostSpec,
    host: &Host,
    templates: &Templates,
) -> Result<(), String> {
    let stack = &session.stack;
    let cpus = if stack.attributes().plone_instances.instance_count.is_some() {
        None
    } else {
        let facts = Facts::gather(host)
            .await
            .map_err(|e| format!("gathering facts: {}", run::connect_error(&e)))?;
        Some(facts.cpus)
    };
    let clients = stack.clients_of(spec, cpus).map_err(|e| e.to_string())?;
    let path = &stack.attributes().haproxy.health_check_url;
    let address = spec.service_address();
    let checks = futures::future::join_all(clients.iter().map(|client| async move {
        let script = provision_plone::deploy::client_health(
            address,
            client.port,
            path,
            HEALTH_SECONDS,
            templates,
        )
        .map_err(|e| format!("{}: {e}", client.name))?;
        match host.exec(Command::new(script)).await {
            Ok(output) if output.success() => Ok(()),
            Ok(output) => {
                let report = provision_plone::deploy::Report::parse(&output.stdout_lossy());
                Err(format!(
                    "{}: no 200 from http://{address}:{}{path} (last status {})",
                    client.name,
                    client.port,
                    report.get("status").unwrap_or("none")
                ))
            }
            Err(error) => Err(format!("{}: {}", client.name, run::connect_error(&error))),
        }
    }))
    .await;
    checks.into_iter().collect()
}

/// Bring every lb host whose HAProxy does not list what it should (`away` left out) up to
/// date, with the Configure phase of `provision configure`. An lb host that did not answer
/// its probe waits for the next round. A change or a recovery from a failure gets a line of
/// its own unless `explained` (an event's line says it). Whether none failed.
async fn reconverge(
    lb_session: &mut Session,
    hosts: &[Watched],
    frontends: &mut BTreeMap<String, Frontend>,
    away: &BTreeSet<String>,
    explained: bool,
    json: bool,
) -> bool {
    let due: Vec<String> = frontends
        .iter()
        .filter(|(_, f)| f.applied.as_ref() != Some(away))
        .map(|(name, _)| name.clone())
        .filter(|name| {
            // Unwatched lb hosts (--host, --layer) are tried every time.
            hosts
                .iter()
                .find(|w| &w.spec.name == name)
                .is_none_or(|w| w.answers)
        })
        .collect();
    if due.is_empty() {
        return true;
    }
    lb_session.args.hosts = due.clone();
    lb_session.away = away.clone();
    let results: Vec<(String, Result<bool, String>)> =
        match run::converge_session(lb_session, &[Phase::Configure], false).await {
            Ok((reports, _releases)) => due
                .iter()
                .map(|name| {
                    let result = match reports.iter().find(|r| &r.host == name) {
                        Some(report) => match &report.outcome {
                            Outcome::Failed(error) => Err(lb_session.mask(error)),
                            outcome => Ok(*outcome == Outcome::Changed),
                        },
                        None => Err("no report".to_string()),
                    };
                    (name.clone(), result)
                })
                .collect(),
            Err(error) => {
                let error = lb_session.mask(&format!("{error:#}"));
                due.iter()
                    .map(|n| (n.clone(), Err(error.clone())))
                    .collect()
            }
        };
    let mut all_done = true;
    for (name, result) in results {
        let frontend = frontends.entry(name.clone()).or_default();
        match result {
            Ok(changed) => {
                let was_failing = frontend.error.take().is_some();
                frontend.applied = Some(away.clone());
                if (changed || was_failing) && !explained {
                    let without = if away.is_empty() {
                        "every instance host in it".to_string()
                    } else {
                        format!(
                            "without {}",
                            away.iter().cloned().collect::<Vec<_>>().join(", ")
                        )
                    };
                    line(
                        "frontend",
                        &name,
                        &format!("frontend on {name}: reconfigured, {without}"),
                        json,
                    );
                }
            }
            Err(error) => {
                all_done = false;
                if frontend.error.as_deref() != Some(error.as_str()) {
                    line(
                        "frontend_failed",
                        &name,
                        &format!(
                            "frontend on {name}: reconfiguring failed (retried next round): \
                             {error}"
                        ),
                        json,
                    );
                    frontend.error = Some(error);
                }
            }
        }
    }
    all_done
}

/// The line of one event: the host, what happened, and where the frontend changed (the lb
/// hosts whose HAProxy now lists every instance host but those in `away`).
fn event_message(
    event: &Event,
    frontends: &BTreeMap<String, Frontend>,
    away: &BTreeSet<String>,
) -> String {
    let (what, done_verb, pending_verb) = match &event.change {
        Change::Away { probes, reason } => (
            format!(
                "away ({} failed: {reason})",
                count(*probes as usize, "probe")
            ),
            "taken out of",
            "not yet taken out of",
        ),
        Change::Back => ("back".to_string(), "put back into", "not yet put back into"),
    };
    let outcome = if !event.instance {
        "not an instance host: the frontend is unchanged".to_string()
    } else if frontends.is_empty() {
        "no lb host in the stack: nothing to change".to_string()
    } else {
        let (mut done, mut pending) = (Vec::new(), Vec::new());
        for (lb, frontend) in frontends {
            if frontend.applied.as_ref() == Some(away) {
                done.push(lb.as_str());
            } else {
                pending.push(lb.as_str());
            }
        }
        match (done.is_empty(), pending.is_empty()) {
            (false, true) => format!("{done_verb} the frontend on {}", done.join(", ")),
            (false, false) => format!(
                "{done_verb} the frontend on {}; {pending_verb} the one on {} (retried next \
                 round)",
                done.join(", "),
                pending.join(", ")
            ),
            (true, _) => format!(
                "{pending_verb} the frontend on {} (retried next round)",
                pending.join(", ")
            ),
        }
    };
    format!("host {}: {what} — {outcome}", event.host)
}

/// One event on stdout: `<UTC time> <message>`, or with --json one JSON object a line.
fn line(event: &str, host: &str, message: &str, json: bool) {
    let time = utc_now();
    if json {
        crate::out!(
            "{}",
            serde_json::json!({"time": time, "event": event, "host": host, "message": message})
        );
    } else {
        crate::out!("{time} {message}");
    }
}

/// Ctrl-C or SIGTERM sets the flag: the watch ends after the step it is in. A second one
/// ends the program at once.
fn listen_for_stop() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            if *sender.borrow() {
                eprintln!("provision watch: stopped at once (second signal)");
                std::process::exit(130);
            }
            let _ = sender.send(true);
        }
    });
    Ok(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frontends(applied: &[(&str, Option<&[&str]>)]) -> BTreeMap<String, Frontend> {
        applied
            .iter()
            .map(|(lb, away)| {
                let frontend = Frontend {
                    applied: away.map(|a| a.iter().map(|h| h.to_string()).collect()),
                    error: None,
                };
                (lb.to_string(), frontend)
            })
            .collect()
    }

    #[test]
    fn an_event_line_says_where_the_frontend_changed() {
        let away = BTreeSet::from(["app2".to_string()]);
        let gone = Event {
            host: "app2".to_string(),
            instance: true,
            change: Change::Away {
                probes: 3,
                reason: "no answer within 10s".to_string(),
            },
        };
        assert_eq!(
            event_message(&gone, &frontends(&[("lb1", Some(&["app2"]))]), &away),
            "host app2: away (3 probes failed: no answer within 10s) — taken out of the \
             frontend on lb1"
        );
        assert_eq!(
            event_message(
                &gone,
                &frontends(&[("lb1", Some(&["app2"])), ("lb2", Some(&[]))]),
                &away
            ),
            "host app2: away (3 probes failed: no answer within 10s) — taken out of the \
             frontend on lb1; not yet taken out of the one on lb2 (retried next round)"
        );
        let back = Event {
            host: "app2".to_string(),
            instance: true,
            change: Change::Back,
        };
        assert_eq!(
            event_message(&back, &frontends(&[("lb1", None)]), &BTreeSet::new()),
            "host app2: back — not yet put back into the frontend on lb1 (retried next round)"
        );
        let db = Event {
            host: "db1".to_string(),
            instance: false,
            change: Change::Back,
        };
        assert_eq!(
            event_message(&db, &frontends(&[("lb1", Some(&[]))]), &BTreeSet::new()),
            "host db1: back — not an instance host: the frontend is unchanged"
        );
        assert_eq!(
            event_message(&back, &BTreeMap::new(), &BTreeSet::new()),
            "host app2: back — no lb host in the stack: nothing to change"
        );
    }
}
