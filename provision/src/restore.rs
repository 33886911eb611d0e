//! `provision restore`: put the database back as of a backup, on the host that holds it.
//!
//! ZEO: the ZEO host's `provision-zeo-restore` (repozo and the blob snapshot) with ZEO stopped
//! meanwhile. The Plone clients and Celery workers stop first and start after: a ZEO client
//! that has seen newer transactions than the server refuses to reconnect, so their persistent
//! caches (`zeoclient-N-TAG-1.zec`) go too. RelStorage with the `postgres` layer: the PostgreSQL
//! host's `provision-postgres-restore` (`pg_restore --clean` in one transaction); the clients
//! keep running and reconnect.

use std::process::ExitCode;

use anyhow::Context as _;
use provision_core::host::{Command, Host};
use provision_core::shell::quote;
use provision_core::stack::{HostSpec, Layer};

use crate::session::Session;
use crate::{BadInput, EXIT_HOST_FAILED, EXIT_OK, cli::StackArgs, layers, migrate};

/// What `provision restore` was asked for.
pub struct RestoreArgs<'a> {
    /// A backup's UTC time stamp (`YYYY-MM-DD-HH-MM-SS`); default the newest.
    pub backup: Option<&'a str>,
    pub from_s3: bool,
    pub yes: bool,
}

/// Whether `name` is a backup's time stamp, `YYYY-MM-DD-HH-MM-SS`.
fn is_stamp(name: &str) -> bool {
    name.len() == 19
        && name.bytes().enumerate().all(|(i, b)| {
            if [4, 7, 10, 13, 16].contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// The database of the stack: which hosts hold it, and the script that restores it there.
struct Target<'a> {
    hosts: Vec<&'a HostSpec>,
    script: &'static str,
    what: &'static str,
}

fn target<'a>(session: &'a Session, args: &RestoreArgs<'_>) -> Result<Target<'a>, BadInput> {
    let stack = &session.stack;
    let attributes = stack.attributes();
    let relstorage = attributes.plone_instances.enable_relstorage;
    let (layer, switch, enabled, script, what) = if relstorage {
        (
            Layer::Postgres,
            "plone_instances.relstorage.enable_backup",
            attributes.plone_instances.relstorage.enable_backup,
            provision_zeo::postgres::RESTORE_SCRIPT,
            "the RelStorage database",
        )
    } else {
        (
            Layer::Zeoserver,
            "plone_zeoserver.enable_backup",
            attributes.plone_zeoserver.enable_backup,
            provision_zeo::zeoserver::RESTORE_SCRIPT,
            "the ZEO database",
        )
    };
    let hosts = stack.hosts_with(layer);
    if hosts.is_empty() {
        return Err(BadInput(if relstorage {
            "nothing to restore: the RelStorage database is not on a host of this stack (no \
             host has the postgres layer); restore it where it lives"
                .to_string()
        } else {
            "nothing to restore: no host has the zeoserver layer".to_string()
        }));
    }
    if !enabled {
        return Err(BadInput(format!(
            "nothing to restore from: {switch} is false, so {what} is not backed up; set it, \
             run provision up and provision backup"
        )));
    }
    if args.from_s3 && attributes.plone_zeoserver.backup_s3.bucket.is_none() {
        return Err(BadInput(
            "--from-s3: the stack has no S3 copies of the backups \
             (plone_zeoserver.backup_s3.bucket is not set)"
                .to_string(),
        ));
    }
    if let Some(name) = args.backup
        && !is_stamp(name)
    {
        return Err(BadInput(format!(
            "--backup {name:?} is not a backup's name: give its UTC time stamp \
             YYYY-MM-DD-HH-MM-SS, as `provision-zeo-s3 list` or the backup directory shows it"
        )));
    }
    Ok(Target {
        hosts,
        script,
        what,
    })
}

/// Runs `script` on `host` as the step `step`: its stdout, or an error naming host and step
/// with what it printed (secrets masked).
async fn step(
    session: &Session,
    host: &Host,
    step: &str,
    script: String,
) -> anyhow::Result<String> {
    let output = host
        .exec(Command::new(script).timeout(session.command_timeout()))
        .await
        .with_context(|| format!("host {}: {step}", host.name()))?;
    if !output.success() {
        anyhow::bail!(
            "host {}: {step} failed ({}): {}",
            host.name(),
            output.describe_exit(),
            session.mask(output.stderr_lossy().trim())
        );
    }
    Ok(session.mask(output.stdout_lossy().trim()))
}

/// The instance hosts' clients and workers: (host, unit patterns, ZEO cache directory).
fn client_units(session: &Session) -> anyhow::Result<Vec<(&HostSpec, Vec<String>, String)>> {
    let stack = &session.stack;
    let hosts = stack.hosts_with(Layer::PloneInstances);
    if hosts.is_empty() {
        return Ok(Vec::new());
    }
    let app = layers::instances::app(stack).map_err(|e| BadInput(format!("{e:#}")))?;
    let var = format!("{}/shared/var", app.deploy_to.display());
    let mut units = Vec::new();
    for spec in hosts {
        let mut patterns = vec![format!("plone-{}@*.service", app.name)];
        if let Some(workers) = layers::optional::worker_settings(stack, spec)? {
            patterns.push(workers.worker_unit());
            patterns.push(workers.beat_unit());
        }
        units.push((spec, patterns, var.clone()));
    }
    Ok(units)
}

pub async fn restore(args: &StackArgs, restore: RestoreArgs<'_>) -> anyhow::Result<ExitCode> {
    let session = Session::load(args)?;
    let target = target(&session, &restore)?;
    let zeo = target.script == provision_zeo::zeoserver::RESTORE_SCRIPT;
    let clients = if zeo {
        client_units(&session)?
    } else {
        Vec::new()
    };
    let names: Vec<&str> = target.hosts.iter().map(|h| h.name.as_str()).collect();
    let which = match restore.backup {
        Some(name) => format!("backup {name}"),
        None => "its newest backup".to_string(),
    };
    let from = if restore.from_s3 { " from S3" } else { "" };
    if !restore.yes {
        let stopping = if clients.is_empty() {
            String::new()
        } else {
            " (the Plone clients stop meanwhile)".to_string()
        };
        return Err(BadInput(format!(
            "restore replaces {} on {} with {which}{from}: every change since is lost{stopping}; \
             nothing was changed: run it again with --yes to do it",
            target.what,
            names.join(", ")
        ))
        .into());
    }

    let mut arguments = String::new();
    if let Some(name) = restore.backup {
        arguments.push_str(&format!(" --backup {}", quote(name)));
    }
    if restore.from_s3 {
        arguments.push_str(" --from-s3");
    }
    if zeo {
        arguments.push_str(" --restart --force");
    }

    // ZEO clients stop first (their caches would be newer than the restored server).
    let mut stopped: Vec<(Host, String)> = Vec::new();
    let mut failed = false;
    for (spec, patterns, var) in &clients {
        let host = migrate::connect_one(&session, spec).await?;
        let patterns: Vec<String> = patterns.iter().map(|p| quote(p)).collect();
        let units = step(
            &session,
            &host,
            "stopping the Plone clients",
            format!(
                "units=$(systemctl list-units --plain --no-legend --state=active {} | awk '{{print $1}}')\n\
                 [ -z \"$units\" ] || systemctl stop $units\n\
                 rm -f {var}/zeoclient-*.zec\nprintf '%s\\n' $units",
                patterns.join(" "),
                var = quote(var),
            ),
        )
        .await;
        match units {
            Ok(units) => {
                let units: Vec<String> = units.split_whitespace().map(quote).collect();
                crate::out!(
                    "{}: stopped {} and removed their ZEO caches",
                    spec.name,
                    if units.is_empty() {
                        "no running client".to_string()
                    } else {
                        units.join(" ")
                    }
                );
                stopped.push((host, units.join(" ")));
            }
            Err(error) => {
                crate::out!("{}: FAILED: {error:#}", spec.name);
                failed = true;
                break;
            }
        }
    }

    if !failed {
        for spec in &target.hosts {
            let result = async {
                let host = migrate::connect_one(&session, spec).await?;
                let said = step(
                    &session,
                    &host,
                    "restoring the database",
                    format!("{}{arguments}", target.script),
                )
                .await;
                host.close().await;
                said
            }
            .await;
            match result {
                Ok(said) => {
                    for line in said.lines() {
                        crate::out!("{}: {line}", spec.name);
                    }
                }
                Err(error) => {
                    crate::out!("{}: FAILED: {error:#}", spec.name);
                    failed = true;
                }
            }
        }
    }

    // Started again whatever happened: a client waits for a ZEO server that is down.
    for (host, units) in stopped {
        if units.is_empty() {
            host.close().await;
            continue;
        }
        match step(
            &session,
            &host,
            "starting the Plone clients",
            format!("systemctl start {units}"),
        )
        .await
        {
            Ok(_) => crate::out!("{}: started {units}", host.name()),
            Err(error) => {
                crate::out!("{}: FAILED: {error:#}", host.name());
                failed = true;
            }
        }
        host.close().await;
    }
    Ok(ExitCode::from(if failed {
        EXIT_HOST_FAILED
    } else {
        EXIT_OK
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_are_time_stamps() {
        assert!(is_stamp("2025-01-31-21-00-07"));
        for bad in [
            "2025-01-31",
            "2025-01-31-21-00-07.fsz",
            "2025_01-31-21-00-07",
            "x; rm",
        ] {
            assert!(!is_stamp(bad), "{bad}");
        }
    }
}
