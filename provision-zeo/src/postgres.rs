//! PostgreSQL for RelStorage (the `postgres` layer), from Debian: the packaged cluster
//! (`VERSION/main`), listening only on the private address, `pg_hba.conf` letting in only the
//! stack's instance hosts (as the RelStorage role, to its database, with scram-sha-256), and the
//! role and database with their password.
//!
//! The role and database are SQL state, which no core resource checks; a SQL script (a file)
//! and a oneshot unit that runs it through `psql` make them. The unit reruns when any of the
//! files changes (so a new password is applied) and at every boot; the SQL creates what is
//! missing and sets password and ownership, so reruns are harmless. A role dropped by hand is
//! not noticed until then. The same unit applies the config files: a reload for
//! `pg_hba.conf`, a restart of the cluster when `listen_addresses` or the port differ from
//! the running ones; that also covers the first converge, where the Debian package started
//! the cluster before the files were written (a `Service` would only see "start").
//!
//! With `enable_backup`, a daily timer dumps the database (`pg_dump -Fc`, as postgres) into
//! `backup_dir`, keeping the newest `backup_keep` dumps, and copies them to the stack's S3
//! backup bucket when there is one ([`S3Copies`], under `PREFIX/postgres/`). [`RESTORE_SCRIPT`]
//! puts a dump back (`pg_restore --clean`).

use std::net::IpAddr;

use provision_core::phase::Phase;
use provision_core::resource::{Directory, File, Packages, Resource, Service, Timer, Unit};
use provision_core::template::Templates;
use serde::Serialize;

use crate::backup_s3::{self, S3Copies};
use crate::{Error, check_bind_address, check_path, invalid};

/// The oneshot unit that creates the role and database.
pub const SETUP_UNIT: &str = "provision-postgres-zodb.service";
/// Its script.
pub const SETUP_SCRIPT: &str = "/usr/local/lib/provision/postgres/setup-zodb";
/// The timer (and oneshot service) of the daily dump.
pub const BACKUP_JOB: &str = "postgres-backup";
/// The dump script, also for operators.
pub const BACKUP_SCRIPT: &str = "/usr/local/sbin/provision-postgres-backup";
/// The restore script (see its head for the arguments).
pub const RESTORE_SCRIPT: &str = "/usr/local/sbin/provision-postgres-restore";
/// PostgreSQL's port.
pub const DEFAULT_PORT: u16 = 5432;

/// PostgreSQL's settings for RelStorage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostgresSettings {
    /// The Debian PostgreSQL major version: the cluster's config is in
    /// `/etc/postgresql/VERSION/main` (see [`debian_version`]).
    pub version: String,
    /// The private address(es) PostgreSQL listens on; `0.0.0.0` and `::` are refused.
    pub listen_addresses: Vec<IpAddr>,
    /// Default 5432.
    pub port: u16,
    /// The hosts allowed to connect (the stack's instance hosts, and the `db_packing` host).
    pub allowed_clients: Vec<IpAddr>,
    /// The RelStorage role. Default `plone`.
    pub role: String,
    /// The RelStorage database. Default `zodb`.
    pub database: String,
    /// The role's password (from the secrets file).
    pub password: String,
    /// Where the SQL goes (`zodb.sql`, postgres-only: it holds the password). Default
    /// `/etc/provision/postgres`.
    pub config_dir: String,
    /// A daily `pg_dump -Fc` of the database (`plone_instances.relstorage.enable_backup`).
    /// Default `false`.
    pub enable_backup: bool,
    /// Where the dumps go (postgres only, mode 0700). Default `/var/backups/postgres`.
    pub backup_dir: String,
    /// Dumps kept on the host. Default 7.
    pub backup_keep: u32,
    /// systemd calendar of the dump. Default `*-*-* 21:00:00 UTC`, as the ZEO backup.
    pub backup_on_calendar: String,
    /// Copies of the dumps in S3 (`plone_zeoserver.backup_s3`); the bucket keeps the newest
    /// `keep`. Default none.
    pub s3: Option<S3Copies>,
}

impl PostgresSettings {
    /// Role `plone`, database `zodb`, port 5432.
    pub fn new(
        version: &str,
        listen_address: IpAddr,
        allowed_clients: Vec<IpAddr>,
        password: &str,
    ) -> PostgresSettings {
        PostgresSettings {
            version: version.to_string(),
            listen_addresses: vec![listen_address],
            port: DEFAULT_PORT,
            allowed_clients,
            role: "plone".to_string(),
            database: "zodb".to_string(),
            password: password.to_string(),
            config_dir: "/etc/provision/postgres".to_string(),
            enable_backup: false,
            backup_dir: "/var/backups/postgres".to_string(),
            backup_keep: 7,
            backup_on_calendar: "*-*-* 21:00:00 UTC".to_string(),
            s3: None,
        }
    }

    /// rclone's config with the S3 keys (readable by root and postgres).
    pub fn rclone_config_path(&self) -> String {
        format!("{}/rclone.conf", self.config_dir)
    }

    /// The SQL that makes the role and database.
    pub fn sql_path(&self) -> String {
        format!("{}/zodb.sql", self.config_dir)
    }

    pub fn cluster_dir(&self) -> String {
        format!("/etc/postgresql/{}/main", self.version)
    }

    /// The drop-in with `listen_addresses`; Debian's `postgresql.conf` includes `conf.d`.
    pub fn conf_path(&self) -> String {
        format!("{}/conf.d/provision.conf", self.cluster_dir())
    }

    /// The systemd unit of the cluster (`postgresql@15-main`).
    pub fn cluster_unit(&self) -> String {
        format!("postgresql@{}-main", self.version)
    }

    pub fn hba_path(&self) -> String {
        format!("{}/pg_hba.conf", self.cluster_dir())
    }

    pub fn check(&self) -> Result<(), Error> {
        if self.version.is_empty() || !self.version.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "version",
                format!(
                    "{:?} is not a PostgreSQL major version such as 15",
                    self.version
                ),
            ));
        }
        if self.listen_addresses.is_empty() {
            return Err(invalid(
                "listen_addresses",
                "name the host's private address",
            ));
        }
        for address in &self.listen_addresses {
            check_bind_address("listen_addresses", *address)?;
        }
        if self.port == 0 {
            return Err(invalid("port", "0 is not a port"));
        }
        if self.allowed_clients.is_empty() {
            return Err(invalid(
                "allowed_clients",
                "no host could use the database; name the instance hosts",
            ));
        }
        if let Some(any) = self.allowed_clients.iter().find(|a| a.is_unspecified()) {
            return Err(invalid(
                "allowed_clients",
                format!("{any} is not a host; name the instance hosts"),
            ));
        }
        check_path("config_dir", &self.config_dir)?;
        check_identifier("role", &self.role)?;
        check_identifier("database", &self.database)?;
        if self.password.is_empty() {
            return Err(invalid("password", "set a password (in the secrets file)"));
        }
        if self.password.contains('\0') {
            return Err(invalid("password", "must not contain NUL"));
        }
        check_path("backup_dir", &self.backup_dir)?;
        if self.backup_keep == 0 {
            return Err(invalid("backup_keep", "keep at least 1 dump"));
        }
        let calendar = &self.backup_on_calendar;
        if calendar.trim().is_empty() || calendar.contains(['\n', '%', '$']) {
            return Err(invalid(
                "backup_on_calendar",
                format!("{calendar:?} is not a systemd calendar expression"),
            ));
        }
        if let Some(s3) = &self.s3 {
            if !self.enable_backup {
                return Err(invalid(
                    "backup_s3",
                    "copies of the dumps need dumps: set enable_backup",
                ));
            }
            s3.check(self.backup_keep)?;
        }
        Ok(())
    }
}

/// The PostgreSQL major version Debian ships in a release (`VERSION_ID` of os-release).
pub fn debian_version(debian_version_id: &str) -> Option<&'static str> {
    match debian_version_id {
        "11" => Some("13"),
        "12" => Some("15"),
        "13" => Some("17"),
        _ => None,
    }
}

/// Role and database names are kept to plain lowercase identifiers, which need no quoting
/// rules beyond double quotes in SQL and `pg_hba.conf`.
fn check_identifier(setting: &'static str, name: &str) -> Result<(), Error> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    if !first_ok
        || name.len() > 63
        || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        || name.starts_with("pg_")
    {
        return Err(invalid(
            setting,
            format!(
                "{name:?} must be a lowercase identifier (a-z, 0-9, _; not starting with a digit or pg_)"
            ),
        ));
    }
    Ok(())
}

/// A SQL string literal (standard_conforming_strings: only `'` needs doubling).
fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn host_cidr(address: IpAddr) -> String {
    match address {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

#[derive(Serialize)]
struct ConfContext {
    listen_addresses: Vec<String>,
    port: u16,
}

#[derive(Serialize)]
struct HbaContext<'a> {
    database: &'a str,
    role: &'a str,
    clients: Vec<String>,
}

#[derive(Serialize)]
struct SqlContext<'a> {
    database: &'a str,
    role: &'a str,
    password_literal: String,
}

#[derive(Serialize)]
struct SetupContext<'a> {
    port: u16,
    sql: String,
    unit: &'a str,
    database: &'a str,
    role: &'a str,
    script: &'a str,
    conf: String,
    hba: String,
    listen_addresses: String,
    cluster_unit: String,
}

/// The rendered `conf.d/provision.conf`.
pub fn conf(settings: &PostgresSettings, templates: &Templates) -> Result<String, Error> {
    settings.check()?;
    Ok(templates.render(
        "zeo/postgres.conf.j2",
        &ConfContext {
            listen_addresses: listen_addresses(settings),
            port: settings.port,
        },
    )?)
}

/// The rendered `pg_hba.conf`.
pub fn hba(settings: &PostgresSettings, templates: &Templates) -> Result<String, Error> {
    settings.check()?;
    let mut clients: Vec<String> = settings
        .allowed_clients
        .iter()
        .map(|a| host_cidr(*a))
        .collect();
    clients.dedup();
    Ok(templates.render(
        "zeo/pg_hba.conf.j2",
        &HbaContext {
            database: &settings.database,
            role: &settings.role,
            clients,
        },
    )?)
}

/// The rendered SQL that makes the role and database.
pub fn setup_sql(settings: &PostgresSettings, templates: &Templates) -> Result<String, Error> {
    settings.check()?;
    Ok(templates.render(
        "zeo/postgres-zodb.sql.j2",
        &SqlContext {
            database: &settings.database,
            role: &settings.role,
            password_literal: sql_literal(&settings.password),
        },
    )?)
}

fn setup_context(settings: &PostgresSettings) -> SetupContext<'_> {
    SetupContext {
        port: settings.port,
        sql: settings.sql_path(),
        unit: SETUP_UNIT,
        database: &settings.database,
        role: &settings.role,
        script: SETUP_SCRIPT,
        conf: settings.conf_path(),
        hba: settings.hba_path(),
        listen_addresses: listen_addresses(settings).join(","),
        cluster_unit: settings.cluster_unit(),
    }
}

fn listen_addresses(settings: &PostgresSettings) -> Vec<String> {
    settings
        .listen_addresses
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The rendered script of [`SETUP_UNIT`]: applies the config files (reload, or restart when
/// needed), waits for the server, then runs the SQL.
pub fn setup_script(settings: &PostgresSettings, templates: &Templates) -> Result<String, Error> {
    settings.check()?;
    Ok(templates.render("zeo/postgres-setup.sh.j2", &setup_context(settings))?)
}

#[derive(Serialize)]
struct BackupContext<'a> {
    database: &'a str,
    role: &'a str,
    port: u16,
    backup_dir: &'a str,
    keep: u32,
    backup_command: &'static str,
    restore_command: &'static str,
    remote: Option<String>,
    url: Option<String>,
    s3_keep: u32,
    rclone_config: String,
}

fn backup_context(settings: &PostgresSettings) -> BackupContext<'_> {
    BackupContext {
        database: &settings.database,
        role: &settings.role,
        port: settings.port,
        backup_dir: &settings.backup_dir,
        keep: settings.backup_keep,
        backup_command: "provision-postgres-backup",
        restore_command: "provision-postgres-restore",
        remote: settings.s3.as_ref().map(S3Copies::remote),
        url: settings.s3.as_ref().map(S3Copies::url),
        s3_keep: settings.s3.as_ref().map_or(0, |s3| s3.keep),
        rclone_config: settings.rclone_config_path(),
    }
}

/// The rendered dump script (installed as [`BACKUP_SCRIPT`]).
pub fn backup_script(settings: &PostgresSettings, templates: &Templates) -> Result<String, Error> {
    settings.check()?;
    Ok(templates.render("zeo/postgres-backup.sh.j2", &backup_context(settings))?)
}

/// The rendered restore script (installed as [`RESTORE_SCRIPT`]).
pub fn restore_script(settings: &PostgresSettings, templates: &Templates) -> Result<String, Error> {
    settings.check()?;
    Ok(templates.render("zeo/postgres-restore.sh.j2", &backup_context(settings))?)
}

/// The timer of the daily dump.
pub fn backup_timer(settings: &PostgresSettings) -> Timer {
    Timer {
        name: BACKUP_JOB.to_string(),
        description: format!(
            "PostgreSQL dump of {} into {}",
            settings.database, settings.backup_dir
        ),
        command: BACKUP_SCRIPT.to_string(),
        user: "postgres".to_string(),
        on_calendar: settings.backup_on_calendar.clone(),
        persistent: true,
    }
}

/// The dump job's resources: the backup directory (setup), the scripts, the S3 keys and the
/// timer (configure). Without `enable_backup`, only a stopped timer (turning off one an
/// earlier configuration enabled).
fn backup_resources(
    settings: &PostgresSettings,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, Error> {
    let mut resources: Vec<Resource> = Vec::new();
    match phase {
        Phase::Setup if settings.enable_backup => {
            if settings.s3.is_some() {
                resources.push(Packages::new(["rclone"]).into());
            }
            resources.push(
                Directory::new(&settings.backup_dir)
                    .owner("postgres", "postgres")
                    .mode(0o700)
                    .into(),
            );
        }
        Phase::Configure if settings.enable_backup => {
            if let Some(s3) = &settings.s3 {
                resources.push(
                    Directory::new(&settings.config_dir)
                        .owner("root", "postgres")
                        .mode(0o750)
                        .into(),
                );
                let config = templates.render(
                    "zeo/zeo-rclone.conf.j2",
                    &backup_s3::rclone_context(
                        s3,
                        "provision-postgres-backup",
                        "the database dumps",
                        "postgres",
                    ),
                )?;
                resources.push(
                    File::new(settings.rclone_config_path(), config)
                        .owner("root", "postgres")
                        .mode(0o640)
                        .secret()
                        .into(),
                );
            }
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
            resources.extend(backup_timer(settings).resources());
        }
        Phase::Configure => {
            resources.push(Service::stopped(format!("{BACKUP_JOB}.timer")).into());
        }
        _ => {}
    }
    Ok(resources)
}

/// PostgreSQL's resources for one phase.
pub fn resources(
    settings: &PostgresSettings,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, Error> {
    settings.check()?;
    let mut resources: Vec<Resource> = Vec::new();
    match phase {
        // Debian's package makes and starts the `main` cluster.
        Phase::Setup => resources.push(Packages::new(["postgresql"]).into()),
        Phase::Configure => {
            let conf = File::new(settings.conf_path(), conf(settings, templates)?)
                .owner("postgres", "postgres");
            let hba = File::new(settings.hba_path(), hba(settings, templates)?)
                .owner("postgres", "postgres")
                .mode(0o640);
            let config_ids = [
                Resource::from(conf.clone()).id(),
                Resource::from(hba.clone()).id(),
            ];
            resources.extend([
                conf.into(),
                hba.into(),
                Service::running("postgresql").into(),
            ]);

            let sql = File::new(settings.sql_path(), setup_sql(settings, templates)?)
                .owner("postgres", "postgres")
                .mode(0o600);
            let script = File::new(SETUP_SCRIPT, setup_script(settings, templates)?).mode(0o755);
            let unit = Unit::new(
                SETUP_UNIT,
                templates.render("zeo/postgres-setup.service.j2", &setup_context(settings))?,
            );
            let [conf_id, hba_id] = config_ids;
            let setup = Service::running(SETUP_UNIT)
                .restart_on(conf_id)
                .restart_on(hba_id)
                .restart_on(Resource::from(sql.clone()).id())
                .restart_on(Resource::from(script.clone()).id())
                .restart_on(Resource::from(unit.clone()).id());
            resources.extend([sql.into(), script.into(), unit.into(), setup.into()]);
        }
        Phase::Deploy => {}
    }
    resources.extend(backup_resources(settings, phase, templates)?);
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_plain() {
        assert!(check_identifier("role", "plone").is_ok());
        assert!(check_identifier("role", "zodb_2").is_ok());
        for bad in ["", "Plone", "2db", "a-b", "a\"b", "pg_zodb", "all b"] {
            assert!(check_identifier("role", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sql_literals_double_quotes() {
        assert_eq!(sql_literal(r"it's \n"), r"'it''s \n'");
    }

    #[test]
    fn debian_releases_map_to_their_postgresql() {
        assert_eq!(debian_version("12"), Some("15"));
        assert_eq!(debian_version("42"), None);
    }
}
