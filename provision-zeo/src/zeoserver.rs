//! The ZEO server of the `zeoserver` layer. Venv mode: a virtualenv with ZEO, `zeo.conf`
//! (FileStorage `1` with its blob directory, bound to the host's private address), a systemd
//! unit running `runzeo` as its own user, and the backup and pack jobs as systemd timers.
//! Buildout mode ([`ZeoServerSettings::release_dir`]): the same, but ZEO runs from a release of
//! the app, built by its `zeoserver` part with the options of [`deploy_cfg`]; the virtualenv
//! stays, for the backups' repozo and the packs' zeopack.
//!
//! The server runs as user `zeo` by default. When its blob directory is also the instances'
//! shared blob directory (`shared-blob-dir on`), it must run as the instances' user instead:
//! ZODB creates blob directories with mode 0700, so a second user could not write them.

use std::net::IpAddr;

use provision_core::phase::Phase;
use provision_core::resource::{
    Directory, File, Group, Packages, Resource, Script, Service, Symlink, Timer, Unit, User,
};
use provision_core::shell::quote;
use provision_core::template::Templates;
use serde::Serialize;

use crate::backup_s3::{self, S3Copies};
use crate::venv::Venv;
use crate::{Error, check_account, check_bind_address, check_path, invalid, socket_address};

/// The systemd unit of the server.
pub const SERVICE: &str = "zeoserver";
/// The timer (and oneshot service) of the daily backup.
pub const BACKUP_JOB: &str = "zeoserver-backup";
/// The timer (and oneshot service) of the weekly pack.
pub const PACK_JOB: &str = "zeoserver-pack";
/// The backup script, also for operators (`provision-zeo-backup --full`).
pub const BACKUP_SCRIPT: &str = "/usr/local/sbin/provision-zeo-backup";
/// The restore script (see its head for the arguments).
pub const RESTORE_SCRIPT: &str = "/usr/local/sbin/provision-zeo-restore";
/// The buildout part of the ZEO server in buildout mode (the cookbook's convention).
pub const PART: &str = "zeoserver";
/// The storage name clients ask for.
pub const STORAGE: &str = "1";
/// The cookbook's ZEO port.
pub const DEFAULT_PORT: u16 = 8001;

/// The ZEO server's settings: `plone_zeoserver.*` and where things go on the host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZeoServerSettings {
    /// The host's private address; ZEO listens only there. `0.0.0.0` and `::` are refused.
    pub bind_address: IpAddr,
    /// Default 8001.
    pub port: u16,
    /// The user the server, backups and packs run as. Default `zeo`.
    pub user: String,
    pub group: String,
    /// Make `user` a system user (off when another layer of the host makes it).
    pub create_user: bool,
    /// The virtualenv with ZEO. Default `/opt/provision/zeo`.
    pub venv: String,
    /// The interpreter that makes the virtualenv. Default `/usr/bin/python3`.
    pub python: String,
    /// pip requirement lines. Default the tested pins `ZEO==6.2`, `ZODB==6.4`.
    pub requirements: Vec<String>,
    /// `zeo.conf` and the requirements file. Default `/etc/provision/zeo`.
    pub config_dir: String,
    /// `plone_zeoserver.filestorage_dir`: holds `Data.fs`. Default `/var/lib/zeo/filestorage`.
    pub filestorage_dir: String,
    /// The server's blob directory, as zeo.conf names it. Default `/var/lib/zeo/blobstorage`.
    pub blob_dir: String,
    /// Where the blobs really are when not in `blob_dir` (`plone_blobs.blob_dir`, a shared
    /// mount): `blob_dir` is then a link to it, so that moving the blobs moves a link and not
    /// the config. Default none.
    pub blob_link: Option<String>,
    /// Default `/var/log/zeo` (`zeoserver.log`, rotated at 20 MB, 5 kept).
    pub log_dir: String,
    /// `plone_zeoserver.syslog_facility`: also log to syslog (`/dev/log`) with this facility.
    pub syslog_facility: Option<String>,
    /// `plone_zeoserver.syslog_level`. Default `INFO`.
    pub syslog_level: String,
    /// Garbage-collect unreachable objects when packing (`pack-gc`). Default `true`.
    pub pack_gc: bool,
    /// Keep `Data.fs.old` after a pack (`pack-keep-old`). Default `true`, as ZODB.
    pub pack_keep_old: bool,
    /// Default 100.
    pub invalidation_queue_size: u32,
    /// `plone_zeoserver.enable_backup`: daily repozo + blob snapshot. Default `false`.
    pub enable_backup: bool,
    /// Default `/var/backups/zeo` (`filestorage/` for repozo, `blobstorage/` for snapshots).
    pub backup_dir: String,
    /// Full backups kept, each with its incrementals and blob snapshots. Default 2.
    pub backup_keep: u32,
    /// systemd calendar of the backup. Default `*-*-* 21:00:00 UTC` (the cookbook's cron).
    pub backup_on_calendar: String,
    /// Copies of the backups in S3, pushed after each backup (`plone_zeoserver.backup_s3`).
    /// Default none.
    pub s3: Option<S3Copies>,
    /// `plone_zeoserver.enable_pack`: weekly `zeopack`. Default `true`.
    pub enable_pack: bool,
    /// Days of history a pack keeps (`zeopack -d`). Default 7.
    pub pack_days: u32,
    /// systemd calendar of the pack. Default `Sun *-*-* 01:00:00 UTC` (the cookbook's cron).
    pub pack_on_calendar: String,
    /// Buildout mode (`plone_zeoserver.mode = "buildout"`): the app's `deploy_to`. ZEO then runs
    /// the `runzeo` of the `zeoserver` part of `<release_dir>/current` (with the part's
    /// `zeo.conf`), a
    /// release the deploy builds from [`deploy_cfg`] (and restarts ZEO into); the virtualenv
    /// only provides repozo and zeopack. Default none: venv mode.
    pub release_dir: Option<String>,
}

impl ZeoServerSettings {
    /// The cookbook's defaults, listening on `bind_address`.
    pub fn new(bind_address: IpAddr) -> ZeoServerSettings {
        ZeoServerSettings {
            bind_address,
            port: DEFAULT_PORT,
            user: "zeo".to_string(),
            group: "zeo".to_string(),
            create_user: true,
            venv: "/opt/provision/zeo".to_string(),
            python: "/usr/bin/python3".to_string(),
            requirements: vec!["ZEO==6.2".to_string(), "ZODB==6.4".to_string()],
            config_dir: "/etc/provision/zeo".to_string(),
            filestorage_dir: "/var/lib/zeo/filestorage".to_string(),
            blob_dir: "/var/lib/zeo/blobstorage".to_string(),
            blob_link: None,
            log_dir: "/var/log/zeo".to_string(),
            syslog_facility: None,
            syslog_level: "INFO".to_string(),
            pack_gc: true,
            pack_keep_old: true,
            invalidation_queue_size: 100,
            enable_backup: false,
            backup_dir: "/var/backups/zeo".to_string(),
            backup_keep: 2,
            backup_on_calendar: "*-*-* 21:00:00 UTC".to_string(),
            s3: None,
            enable_pack: true,
            pack_days: 7,
            pack_on_calendar: "Sun *-*-* 01:00:00 UTC".to_string(),
            release_dir: None,
        }
    }

    /// What the unit runs: the venv's `runzeo` with provision's `zeo.conf`, or (buildout mode)
    /// the live release's, with the `zeo.conf` its `zeoserver` part rendered.
    pub fn exec_start(&self) -> String {
        match &self.release_dir {
            None => format!("{}/bin/runzeo -C {}", self.venv, self.config_path()),
            // The part's runzeo passes its own `-C etc/zeo.conf` (a second one is refused).
            Some(dir) => format!("{dir}/current/parts/{PART}/bin/runzeo"),
        }
    }

    /// `host:port` of the server, as clients name it.
    pub fn address(&self) -> String {
        socket_address(self.bind_address, self.port)
    }

    pub fn config_path(&self) -> String {
        format!("{}/zeo.conf", self.config_dir)
    }

    pub fn data_fs(&self) -> String {
        format!("{}/Data.fs", self.filestorage_dir)
    }

    pub fn log_file(&self) -> String {
        format!("{}/zeoserver.log", self.log_dir)
    }

    /// rclone's config with the S3 keys (readable by root and the server's group).
    pub fn rclone_config_path(&self) -> String {
        format!("{}/rclone.conf", self.config_dir)
    }

    fn venv(&self) -> Venv<'_> {
        Venv {
            name: "zeo",
            what: "ZEO server",
            path: &self.venv,
            python: &self.python,
            requirements_path: format!("{}/requirements.txt", self.config_dir),
            requirements: &self.requirements,
        }
    }

    /// Refuse settings that cannot work, naming the setting.
    pub fn check(&self) -> Result<(), Error> {
        check_bind_address("bind_address", self.bind_address)?;
        if self.port == 0 {
            return Err(invalid("port", "0 is not a port"));
        }
        check_account("user", &self.user)?;
        check_account("group", &self.group)?;
        for (setting, path) in [
            ("config_dir", &self.config_dir),
            ("filestorage_dir", &self.filestorage_dir),
            ("blob_dir", &self.blob_dir),
            ("log_dir", &self.log_dir),
            ("backup_dir", &self.backup_dir),
        ] {
            check_path(setting, path)?;
        }
        if let Some(target) = &self.blob_link {
            check_path("blob_link", target)?;
        }
        if let Some(dir) = &self.release_dir {
            check_path("release_dir", dir)?;
        }
        self.venv().check()?;
        if let Some(facility) = &self.syslog_facility
            && !SYSLOG_FACILITIES.contains(&facility.to_ascii_lowercase().as_str())
        {
            return Err(invalid(
                "syslog_facility",
                format!(
                    "{facility:?} is not a syslog facility ({})",
                    SYSLOG_FACILITIES.join(", ")
                ),
            ));
        }
        for (setting, level) in [("syslog_level", &self.syslog_level)] {
            if !LOG_LEVELS.contains(&level.to_ascii_uppercase().as_str()) {
                return Err(invalid(
                    setting,
                    format!("{level:?} is not a log level ({})", LOG_LEVELS.join(", ")),
                ));
            }
        }
        if self.backup_keep == 0 {
            return Err(invalid("backup_keep", "keep at least 1 full backup"));
        }
        if let Some(s3) = &self.s3 {
            if !self.enable_backup {
                return Err(invalid(
                    "backup_s3",
                    "copies of the backups need backups: set enable_backup",
                ));
            }
            s3.check(self.backup_keep)?;
        }
        for (setting, calendar) in [
            ("backup_on_calendar", &self.backup_on_calendar),
            ("pack_on_calendar", &self.pack_on_calendar),
        ] {
            if calendar.trim().is_empty() || calendar.contains(['\n', '%', '$']) {
                return Err(invalid(
                    setting,
                    format!("{calendar:?} is not a systemd calendar expression"),
                ));
            }
        }
        Ok(())
    }
}

const SYSLOG_FACILITIES: &[&str] = &[
    "auth", "authpriv", "cron", "daemon", "kern", "lpr", "mail", "news", "security", "syslog",
    "user", "uucp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];
const LOG_LEVELS: &[&str] = &[
    "CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "BLATHER", "DEBUG", "TRACE", "ALL",
];

#[derive(Serialize)]
struct ZeoConfContext {
    path: String,
    address: String,
    invalidation_queue_size: u32,
    data_fs: String,
    blob_dir: String,
    pack_gc: bool,
    pack_keep_old: bool,
    log_file: String,
    log_level: &'static str,
    syslog_facility: Option<String>,
    syslog_level: String,
}

/// The rendered `zeo.conf`.
pub fn zeo_conf(settings: &ZeoServerSettings, templates: &Templates) -> Result<String, Error> {
    settings.check()?;
    Ok(templates.render(
        "zeo/zeo.conf.j2",
        &ZeoConfContext {
            path: settings.config_path(),
            address: settings.address(),
            invalidation_queue_size: settings.invalidation_queue_size,
            data_fs: settings.data_fs(),
            blob_dir: settings.blob_dir.clone(),
            pack_gc: settings.pack_gc,
            pack_keep_old: settings.pack_keep_old,
            log_file: settings.log_file(),
            log_level: "INFO",
            syslog_facility: settings.syslog_facility.clone(),
            syslog_level: settings.syslog_level.to_ascii_uppercase(),
        },
    )?)
}

#[derive(Serialize)]
struct UnitContext<'a> {
    address: String,
    user: &'a str,
    group: &'a str,
    exec_start: String,
    after: String,
}

/// The rendered `zeoserver.service`.
pub fn unit(settings: &ZeoServerSettings, templates: &Templates) -> Result<String, Error> {
    settings.check()?;
    Ok(templates.render(
        "zeo/zeoserver.service.j2",
        &UnitContext {
            address: settings.address(),
            user: &settings.user,
            group: &settings.group,
            exec_start: settings.exec_start(),
            after: match settings.release_dir {
                None => format!("network-online.target {}", settings.venv().unit_name()),
                Some(_) => "network-online.target".to_string(),
            },
        },
    )?)
}

#[derive(Serialize)]
struct BuildoutContext<'a> {
    extends: &'a [String],
    address: String,
    data_fs: String,
    blob_dir: &'a str,
    invalidation_queue_size: u32,
    pack_days: u32,
    pack_gc: bool,
    log_file: String,
    syslog_facility: Option<&'a str>,
    syslog_level: String,
}

/// Buildout mode: the `deploy.cfg` of the ZEO server's releases. It extends `extends` (the
/// app's configs, which define the `zeoserver` part), builds only that part, and sets what
/// venv mode's `zeo.conf` has: the host's private address, the FileStorage, the blob
/// directory and the log.
pub fn deploy_cfg(
    settings: &ZeoServerSettings,
    extends: &[String],
    templates: &Templates,
) -> Result<String, Error> {
    settings.check()?;
    if let Some(bad) = extends
        .iter()
        .find(|e| e.trim().is_empty() || e.contains(char::is_whitespace))
    {
        return Err(invalid(
            "extends",
            format!("{bad:?} is not one buildout config"),
        ));
    }
    Ok(templates.render(
        "zeo/zeoserver.buildout.j2",
        &BuildoutContext {
            extends,
            address: settings.address(),
            data_fs: settings.data_fs(),
            blob_dir: &settings.blob_dir,
            invalidation_queue_size: settings.invalidation_queue_size,
            pack_days: settings.pack_days,
            pack_gc: settings.pack_gc,
            log_file: settings.log_file(),
            syslog_facility: settings.syslog_facility.as_deref(),
            syslog_level: settings.syslog_level.to_ascii_uppercase(),
        },
    )?)
}

#[derive(Serialize)]
struct BackupContext<'a> {
    repozo: String,
    data_fs: String,
    blob_dir: &'a str,
    backup_dir: &'a str,
    keep: u32,
    user: &'a str,
    group: &'a str,
    service: &'static str,
    backup_command: &'static str,
    restore_command: &'static str,
    s3_command: Option<&'static str>,
}

fn backup_context(settings: &ZeoServerSettings) -> BackupContext<'_> {
    BackupContext {
        repozo: format!("{}/bin/repozo", settings.venv),
        data_fs: settings.data_fs(),
        blob_dir: &settings.blob_dir,
        backup_dir: &settings.backup_dir,
        keep: settings.backup_keep,
        user: &settings.user,
        group: &settings.group,
        service: SERVICE,
        backup_command: "provision-zeo-backup",
        restore_command: "provision-zeo-restore",
        s3_command: settings.s3.as_ref().map(|_| backup_s3::SCRIPT),
    }
}

#[derive(Serialize)]
struct S3ScriptContext<'a> {
    remote: String,
    url: String,
    config: String,
    backup_dir: &'a str,
    keep: u32,
    user: &'a str,
    group: &'a str,
    command: &'static str,
    backup_command: &'static str,
    restore_command: &'static str,
}

/// The rendered script that pushes, lists and fetches the S3 copies (installed as
/// [`backup_s3::SCRIPT`]); `None` without S3 copies.
pub fn s3_script(
    settings: &ZeoServerSettings,
    templates: &Templates,
) -> Result<Option<String>, Error> {
    settings.check()?;
    let Some(s3) = &settings.s3 else {
        return Ok(None);
    };
    Ok(Some(templates.render(
        "zeo/zeo-s3.sh.j2",
        &S3ScriptContext {
            remote: s3.remote(),
            url: s3.url(),
            config: settings.rclone_config_path(),
            backup_dir: &settings.backup_dir,
            keep: s3.keep,
            user: &settings.user,
            group: &settings.group,
            command: "provision-zeo-s3",
            backup_command: "provision-zeo-backup",
            restore_command: "provision-zeo-restore",
        },
    )?))
}

/// The rendered rclone config with the S3 keys; `None` without S3 copies.
pub fn rclone_config(
    settings: &ZeoServerSettings,
    templates: &Templates,
) -> Result<Option<String>, Error> {
    settings.check()?;
    let Some(s3) = &settings.s3 else {
        return Ok(None);
    };
    Ok(Some(templates.render(
        "zeo/zeo-rclone.conf.j2",
        &backup_s3::rclone_context(
            s3,
            "provision-zeo-s3",
            "the ZEO backups",
            "the ZEO server's group",
        ),
    )?))
}

/// The rendered backup script (installed as [`BACKUP_SCRIPT`]).
pub fn backup_script(settings: &ZeoServerSettings, templates: &Templates) -> Result<String, Error> {
    settings.check()?;
    Ok(templates.render("zeo/zeo-backup.sh.j2", &backup_context(settings))?)
}

/// The rendered restore script (installed as [`RESTORE_SCRIPT`]).
pub fn restore_script(
    settings: &ZeoServerSettings,
    templates: &Templates,
) -> Result<String, Error> {
    settings.check()?;
    Ok(templates.render("zeo/zeo-restore.sh.j2", &backup_context(settings))?)
}

/// An empty `Data.fs` before the server's first start. FileStorage, when it has to create its
/// file, first removes the whole blob directory (`remove_committed_dir`): that fails on the
/// directory this layer made (its parent is root's) or on a link to a store, so the first
/// start crashed, and on a store holding blobs (a restore, a lost `Data.fs`) it would delete
/// them. Made without a blob directory, as the server's user.
fn empty_filestorage(settings: &ZeoServerSettings) -> Script {
    let data_fs = quote(&settings.data_fs());
    Script::new(
        "zeo-filestorage",
        &format!("create an empty {}", settings.data_fs()),
        &format!("test -e {data_fs}"),
        &format!(
            "runuser -u {user} -- {python} -c 'import sys; from ZODB.FileStorage import \
             FileStorage; FileStorage(sys.argv[1]).close()' {data_fs}",
            user = quote(&settings.user),
            python = quote(&format!("{}/bin/python", settings.venv)),
        ),
    )
}

/// The check a new `zeo.conf` must pass before it replaces the live one (`{}` is its path):
/// ZConfig loads it against runzeo's schema. Loading makes no side effects: realizing the
/// options (`ZEOOptions().realize`) would open the log file as root, and the server, running
/// as its own user, could then not write it.
pub fn validate_command(settings: &ZeoServerSettings) -> String {
    format!(
        "{}/bin/python -c 'import os, sys, ZConfig, ZEO; \
         ZConfig.loadConfig(ZConfig.loadSchema(os.path.join(os.path.dirname(ZEO.__file__), \"schema.xml\")), sys.argv[1])' {{}}",
        settings.venv
    )
}

/// The pack command of the weekly timer: `zeopack -d DAYS` against this server's storage 1.
pub fn pack_command(settings: &ZeoServerSettings) -> String {
    let zeopack = format!("{}/bin/zeopack", settings.venv);
    match settings.bind_address {
        // zeopack splits `host:port:storage` at colons, so IPv6 takes the older options.
        IpAddr::V6(address) => format!(
            "{zeopack} -d {} -h {address} -p {} -S {STORAGE}",
            settings.pack_days, settings.port
        ),
        IpAddr::V4(address) => format!(
            "{zeopack} -d {} {address}:{}:{STORAGE}",
            settings.pack_days, settings.port
        ),
    }
}

/// The timer of the daily backup.
pub fn backup_timer(settings: &ZeoServerSettings) -> Timer {
    Timer {
        name: BACKUP_JOB.to_string(),
        description: format!(
            "ZEO backup: repozo and blob snapshot into {}",
            settings.backup_dir
        ),
        command: BACKUP_SCRIPT.to_string(),
        user: settings.user.clone(),
        on_calendar: settings.backup_on_calendar.clone(),
        persistent: true,
    }
}

/// The timer of the weekly pack.
pub fn pack_timer(settings: &ZeoServerSettings) -> Timer {
    Timer {
        name: PACK_JOB.to_string(),
        description: format!("ZEO pack, keeping {} days of history", settings.pack_days),
        command: pack_command(settings),
        user: settings.user.clone(),
        on_calendar: settings.pack_on_calendar.clone(),
        // A pack missed while the host was down waits for its next slot, not for the boot.
        persistent: false,
    }
}

/// Buildout mode: the server enabled and running, for after a deploy (which restarts it when
/// it built a new release; this starts it when it is stopped).
pub fn release_service() -> Resource {
    Service::running(SERVICE).into()
}

/// Buildout mode: restart the server into the release `current` points at now; fails with
/// the end of its journal when it is not running 3 s later (a `Type=simple` unit "starts" even
/// when the server exits at once).
pub fn restart_command() -> String {
    format!(
        "systemctl enable --quiet {SERVICE} && systemctl restart {SERVICE} && sleep 3 && \
         {{ systemctl is-active --quiet {SERVICE} || {{ echo '@error={SERVICE} did not stay up'; \
         journalctl -u {SERVICE} -n 20 --no-pager >&2; exit 1; }}; }}"
    )
}

/// What runs a job now, on the ZEO host (`provision backup`, `provision pack`): the job's
/// oneshot service, which `systemctl start` waits for.
pub fn run_now_command(job: &str) -> String {
    format!("systemctl start {job}.service")
}

/// The ZEO server's resources for one phase.
pub fn resources(
    settings: &ZeoServerSettings,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, Error> {
    settings.check()?;
    let mut resources: Vec<Resource> = Vec::new();
    let data_dir = |path: &str| -> Resource {
        Directory::new(path)
            .owner(&settings.user, &settings.group)
            .mode(0o700)
            .into()
    };
    match phase {
        Phase::Setup => {
            let mut packages = vec!["python3", "python3-venv", "rsync"];
            if settings.s3.is_some() {
                packages.push("rclone");
            }
            resources.push(Packages::new(packages).into());
            if settings.create_user {
                let mut user = User::system(&settings.user);
                if settings.group != settings.user {
                    resources.push(Group::system(&settings.group).into());
                    user = user.group(&settings.group);
                }
                resources.push(user.into());
            }
            for dir in [&settings.filestorage_dir, &settings.log_dir] {
                resources.push(data_dir(dir));
            }
            match &settings.blob_link {
                Some(target) => {
                    resources.push(data_dir(target));
                    resources.push(Symlink::new(&settings.blob_dir, target).into());
                }
                None => resources.push(data_dir(&settings.blob_dir)),
            }
            if settings.enable_backup {
                resources.push(data_dir(&settings.backup_dir));
            }
        }
        Phase::Configure => {
            let venv = settings.venv();
            resources.push(
                Directory::new(&settings.config_dir)
                    .owner("root", &settings.group)
                    .mode(0o750)
                    .into(),
            );
            resources.extend(venv.resources(templates)?);
            let mut unit = Unit::new(format!("{SERVICE}.service"), unit(settings, templates)?);
            let mut restart_on = Vec::new();
            if settings.release_dir.is_none() {
                let config = File::new(settings.config_path(), zeo_conf(settings, templates)?)
                    .owner("root", &settings.group)
                    .mode(0o640)
                    .validate(validate_command(settings));
                restart_on.push(Resource::from(config.clone()).id());
                restart_on.push(Resource::from(unit.clone()).id());
                restart_on.push(venv.requirements_id());
                resources.push(config.into());
            } else {
                // ExecStart points into a release that the first deploy makes.
                unit = unit.without_verify();
                restart_on.push(Resource::from(unit.clone()).id());
            }
            resources.push(unit.into());
            resources.push(
                File::new(BACKUP_SCRIPT, backup_script(settings, templates)?)
                    .mode(0o755)
                    .into(),
            );
            resources.push(
                File::new(RESTORE_SCRIPT, restore_script(settings, templates)?)
                    .mode(0o755)
                    .into(),
            );
            if let (Some(script), Some(config)) = (
                s3_script(settings, templates)?,
                rclone_config(settings, templates)?,
            ) {
                resources.push(
                    File::new(settings.rclone_config_path(), config)
                        .owner("root", &settings.group)
                        .mode(0o640)
                        .secret()
                        .into(),
                );
                resources.push(File::new(backup_s3::SCRIPT, script).mode(0o755).into());
            }
            resources.push(empty_filestorage(settings).into());
            let mut service = Service::running(SERVICE);
            if settings.release_dir.is_some() {
                // The deploy starts it once a release is live (see `release_service`).
                service.state = None;
            }
            for id in restart_on {
                service = service.restart_on(id);
            }
            resources.push(service.into());
            for (enabled, timer) in [
                (settings.enable_backup, backup_timer(settings)),
                (settings.enable_pack, pack_timer(settings)),
            ] {
                if enabled {
                    resources.extend(timer.resources());
                } else {
                    // Turns off a timer an earlier configuration enabled; no-op when absent.
                    resources.push(Service::stopped(format!("{}.timer", timer.name)).into());
                }
            }
        }
        Phase::Deploy => {}
    }
    Ok(resources)
}
