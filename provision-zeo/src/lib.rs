//! The database layer of a Plone stack: the ZEO server (`zeoserver` layer) with its backups
//! (also copied to S3), PostgreSQL for RelStorage (`postgres` layer), packing of a RelStorage
//! database (`db_packing` layer), memcached for RelStorage (`memcached` layer), and the
//! client-side storage sections the Plone instances put into their `zope.conf`.
//!
//! Each server part turns plain settings into resources per phase, like
//! [`provision_core::system`]: [`zeoserver::resources`], [`postgres::resources`],
//! [`packing::resources`], [`memcached::resources`]. The client part renders text: [`client::zeoclient_section`],
//! [`client::relstorage_section`] and their buildout forms.
//!
//! Phases: `setup` has what a new host needs once (packages, users, data directories); the
//! rest (virtualenvs, units, configs, scripts, timers, services) is in `configure`, because a
//! service may only restart on resources of its own phase, and `provision configure` alone
//! must restart ZEO when its unit, its config or its ZEO version changed.

pub mod backup_s3;
pub mod client;
pub mod memcached;
pub mod packing;
pub mod postgres;
mod venv;
pub mod zeoserver;

use std::net::IpAddr;

use provision_core::template::{TemplateError, TemplateSource};

pub use backup_s3::S3Copies;
pub use client::{
    DbConnection, RelStorageSettings, ZeoClientSettings, relstorage_buildout_option,
    relstorage_section, zeoclient_buildout_options, zeoclient_section, zodb_db_section,
};
pub use memcached::MemcachedSettings;
pub use packing::{PackSchedule, PackerSettings};
pub use postgres::PostgresSettings;
pub use zeoserver::ZeoServerSettings;

macro_rules! template {
    ($file:literal, $example:literal) => {
        TemplateSource {
            name: concat!("zeo/", $file),
            source: include_str!(concat!("templates/zeo/", $file)),
            example: $example,
        }
    };
}

/// Every template of this crate, with an example context.
pub const TEMPLATES: &[TemplateSource] = &[
    template!(
        "venv-install.sh.j2",
        r#"{"venv": "/opt/provision/zeo", "python": "/usr/bin/python3", "requirements": "/etc/provision/zeo/requirements.txt", "what": "ZEO server"}"#
    ),
    template!(
        "venv.service.j2",
        r#"{"description": "Python virtualenv /opt/provision/zeo (ZEO server)", "script": "/usr/local/lib/provision/zeo/install-venv"}"#
    ),
    template!(
        "zeo.conf.j2",
        r#"{"path": "/etc/provision/zeo/zeo.conf", "address": "10.0.0.5:8001", "invalidation_queue_size": 100, "data_fs": "/var/lib/zeo/filestorage/Data.fs", "blob_dir": "/var/lib/zeo/blobstorage", "pack_gc": false, "pack_keep_old": true, "log_file": "/var/log/zeo/zeoserver.log", "log_level": "INFO", "syslog_facility": "local3", "syslog_level": "WARNING"}"#
    ),
    template!(
        "zeoserver.service.j2",
        r#"{"address": "10.0.0.5:8001", "user": "zeo", "group": "zeo", "exec_start": "/opt/provision/zeo/bin/runzeo -C /etc/provision/zeo/zeo.conf", "after": "network-online.target provision-zeo-venv.service"}"#
    ),
    template!(
        "zeoserver.buildout.j2",
        r#"{"extends": ["cfg/base.cfg"], "address": "10.0.0.5:8001", "data_fs": "/var/lib/zeo/filestorage/Data.fs", "blob_dir": "/var/lib/zeo/blobstorage", "invalidation_queue_size": 100, "pack_days": 7, "pack_gc": false, "log_file": "/var/log/zeo/zeoserver.log", "syslog_facility": "local3", "syslog_level": "INFO"}"#
    ),
    template!(
        "zeo-backup.sh.j2",
        r#"{"repozo": "/opt/provision/zeo/bin/repozo", "data_fs": "/var/lib/zeo/filestorage/Data.fs", "blob_dir": "/var/lib/zeo/blobstorage", "backup_dir": "/var/backups/zeo", "keep": 2, "restore_command": "provision-zeo-restore", "s3_command": "/usr/local/sbin/provision-zeo-s3"}"#
    ),
    template!(
        "zeo-restore.sh.j2",
        r#"{"repozo": "/opt/provision/zeo/bin/repozo", "data_fs": "/var/lib/zeo/filestorage/Data.fs", "blob_dir": "/var/lib/zeo/blobstorage", "backup_dir": "/var/backups/zeo", "user": "zeo", "group": "zeo", "service": "zeoserver", "backup_command": "provision-zeo-backup", "restore_command": "provision-zeo-restore", "s3_command": "/usr/local/sbin/provision-zeo-s3"}"#
    ),
    template!(
        "zeo-s3.sh.j2",
        r#"{"remote": "backups:zeo-backups/cluster", "url": "s3://zeo-backups/cluster", "config": "/etc/provision/zeo/rclone.conf", "backup_dir": "/var/backups/zeo", "keep": 4, "user": "zeo", "group": "zeo", "command": "provision-zeo-s3", "backup_command": "provision-zeo-backup", "restore_command": "provision-zeo-restore"}"#
    ),
    template!(
        "zeo-rclone.conf.j2",
        r#"{"copier": "provision-zeo-s3", "what": "the ZEO backups", "readers": "the ZEO server's group", "remote": "backups", "provider": "Other", "access_key": "AKIDEXAMPLE", "secret_key": "secret", "region": "us-east-1", "endpoint": "http://10.0.0.1:9000"}"#
    ),
    template!(
        "postgres-backup.sh.j2",
        r#"{"database": "zodb", "role": "plone", "port": 5432, "backup_dir": "/var/backups/postgres", "keep": 7, "backup_command": "provision-postgres-backup", "restore_command": "provision-postgres-restore", "remote": "backups:db-backups/cluster", "url": "s3://db-backups/cluster", "s3_keep": 7, "rclone_config": "/etc/provision/postgres/rclone.conf"}"#
    ),
    template!(
        "postgres-restore.sh.j2",
        r#"{"database": "zodb", "role": "plone", "port": 5432, "backup_dir": "/var/backups/postgres", "keep": 7, "backup_command": "provision-postgres-backup", "restore_command": "provision-postgres-restore", "remote": "backups:db-backups/cluster", "url": "s3://db-backups/cluster", "s3_keep": 7, "rclone_config": "/etc/provision/postgres/rclone.conf"}"#
    ),
    template!(
        "memcached.conf.j2",
        r#"{"address": "10.0.0.7", "port": 11211, "memory_mb": 512, "max_connections": 1024}"#
    ),
    template!(
        "zeoclient.conf.j2",
        r#"{"read_only": false, "servers": ["10.0.0.5:8001"], "storage": "1", "name": "zeostorage", "blob_dir": "/srv/www/plone/shared/var/blobcache", "shared_blob_dir": false, "blob_cache_size": "1GB", "blob_cache_size_check": 10, "cache_size": "128MB", "client": "zeoclient-1", "var": "/srv/www/plone/shared/var"}"#
    ),
    template!(
        "zeoclient.buildout.j2",
        r#"{"read_only": false, "servers": ["10.0.0.5:8001"], "storage": "1", "name": "zeostorage", "blob_dir": "/srv/www/plone/shared/var/blobcache", "shared_blob_dir": false, "blob_cache_size": "1GB", "blob_cache_size_check": 10, "cache_size": "128MB", "client": "zeoclient-1", "var": "/srv/www/plone/shared/var"}"#
    ),
    template!(
        "relstorage.conf.j2",
        r#"{"pack_gc": null, "keep_history": false, "blob_dir": "/srv/www/plone/shared/var/blobcache", "shared_blob_dir": false, "blob_cache_size": "1GB", "blob_cache_size_check": 10, "blob_chunk_size": "1MB", "cache_local_mb": 512, "cache_servers": ["10.0.0.7:11211"], "dsn": "dbname='zodb' user='plone' host='10.0.0.6' password='secret'"}"#
    ),
    template!(
        "relstorage.buildout.j2",
        r#"{"keep_history": false, "blob_dir": "/srv/www/plone/shared/var/blobcache", "shared_blob_dir": false, "blob_cache_size": "1GB", "blob_cache_size_check": 10, "blob_chunk_size": "1MB", "cache_local_mb": null, "cache_servers": [], "dsn": "dbname='zodb' user='plone' host='10.0.0.6' password='secret'"}"#
    ),
    template!(
        "zodbpack.conf.j2",
        r#"{"pack_gc": true, "keep_history": false, "blob_dir": "/var/cache/provision/relstorage-pack/blobs", "shared_blob_dir": false, "blob_cache_size": "1GB", "blob_cache_size_check": 10, "blob_chunk_size": "1MB", "cache_local_mb": null, "cache_servers": [], "dsn": "dbname='zodb' user='plone' host='10.0.0.6' password='secret'"}"#
    ),
    template!(
        "relstorage-clear-refs.py.j2",
        r#"{"python": "/opt/provision/relstorage/bin/python", "dsn_file_literal": "\"/etc/provision/relstorage/dsn\""}"#
    ),
    template!(
        "postgres.conf.j2",
        r#"{"listen_addresses": ["10.0.0.6"], "port": 5432}"#
    ),
    template!(
        "pg_hba.conf.j2",
        r#"{"database": "zodb", "role": "plone", "clients": ["10.0.0.11/32", "10.0.0.12/32"]}"#
    ),
    template!(
        "postgres-zodb.sql.j2",
        r#"{"database": "zodb", "role": "plone", "password_literal": "'it''s secret'"}"#
    ),
    template!(
        "postgres-setup.sh.j2",
        r#"{"port": 5432, "sql": "/etc/provision/postgres/zodb.sql", "unit": "provision-postgres-zodb.service", "conf": "/etc/postgresql/15/main/conf.d/provision.conf", "hba": "/etc/postgresql/15/main/pg_hba.conf", "listen_addresses": "10.0.0.6", "cluster_unit": "postgresql@15-main"}"#
    ),
    template!(
        "postgres-setup.service.j2",
        r#"{"database": "zodb", "role": "plone", "script": "/usr/local/lib/provision/postgres/setup-zodb"}"#
    ),
];

/// What can go wrong turning settings into resources or configs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A setting that cannot work; the message says what to change.
    #[error("{setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

pub(crate) fn invalid(setting: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid {
        setting,
        message: message.into(),
    }
}

/// `host:port` as ZConfig and most clients read it (`[addr]:port` for IPv6).
pub(crate) fn socket_address(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// A value for a ZConfig file: `$` starts a substitution there, so it is doubled. A line break
/// cannot be expressed at all.
pub(crate) fn zconfig_value(setting: &'static str, value: &str) -> Result<String, Error> {
    if value.contains(['\n', '\r']) {
        return Err(invalid(setting, "must not contain a line break"));
    }
    if value.trim() != value || value.is_empty() {
        return Err(invalid(
            setting,
            "must not be empty or start or end with white space",
        ));
    }
    Ok(value.replace('$', "$$"))
}

/// An absolute path without characters that configs, units or scripts would read differently.
pub(crate) fn check_path(setting: &'static str, path: &str) -> Result<(), Error> {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+@".contains(&b));
    if !path.starts_with('/') || !plain || path.contains("/../") || path.ends_with("/..") {
        return Err(invalid(
            setting,
            format!(
                "{path:?} must be an absolute path of letters, digits and / . _ - + @ (no white space, quotes or $)"
            ),
        ));
    }
    Ok(())
}

/// A user or group name as `useradd` accepts it.
pub(crate) fn check_account(setting: &'static str, name: &str) -> Result<(), Error> {
    if !provision_core::resource::is_valid_account_name(name) {
        return Err(invalid(
            setting,
            format!("{name:?} is not a valid user or group name"),
        ));
    }
    Ok(())
}

/// An address a service may bind to: a real one, never "every interface".
pub(crate) fn check_bind_address(setting: &'static str, address: IpAddr) -> Result<(), Error> {
    if address.is_unspecified() {
        return Err(invalid(
            setting,
            format!("{address} would listen on every network of the host; use its private address"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zconfig_values_escape_dollars_and_refuse_line_breaks() {
        assert_eq!(zconfig_value("x", "pa$word").unwrap(), "pa$$word");
        assert!(zconfig_value("x", "a\nb").is_err());
        assert!(zconfig_value("x", " a").is_err());
    }

    #[test]
    fn paths_must_be_absolute_and_plain() {
        assert!(check_path("p", "/var/lib/zeo").is_ok());
        assert!(check_path("p", "var/lib").is_err());
        assert!(check_path("p", "/var/lib zeo").is_err());
        assert!(check_path("p", "/var/$HOME").is_err());
        assert!(check_path("p", "/var/../etc").is_err());
    }

    #[test]
    fn ipv6_socket_addresses_are_bracketed() {
        assert_eq!(
            socket_address("10.0.0.5".parse().unwrap(), 8001),
            "10.0.0.5:8001"
        );
        assert_eq!(
            socket_address("fd00::5".parse().unwrap(), 8001),
            "[fd00::5]:8001"
        );
    }

    #[test]
    fn unspecified_addresses_are_refused() {
        let err = check_bind_address("bind_address", "0.0.0.0".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("private address"), "{err}");
    }
}
