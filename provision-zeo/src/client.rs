//! The client side: the storage sections the Plone instances put into `zope.conf` (inside
//! `<zodb_db main>`), and the same settings as `plone.recipe.zope2instance` options for a
//! buildout's `deploy.cfg`.

use provision_core::template::Templates;
use serde::Serialize;

use crate::packing::PackSchedule;
use crate::{Error, check_path, invalid, zconfig_value};

/// A ZEO client's storage (`<zeoclient>`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZeoClientSettings {
    /// ZEO servers as `host:port` (the `zeoserver` host's private address, port 8001, or
    /// `plone_instances.zeo.address`).
    pub servers: Vec<String>,
    /// The storage name on the server. Default `1`.
    pub storage: String,
    /// Default `zeostorage`.
    pub name: String,
    /// The shared blob directory (with `shared_blob_dir`) or the client's blob cache.
    pub blob_dir: String,
    /// `plone_instances.shared_blobs`: the server's blob directory is mounted here too (NFS,
    /// GlusterFS, s3fs, or the same host), so blobs are not sent over ZEO. Default `true`.
    pub shared_blob_dir: bool,
    /// Bound of the blob cache when not shared. Default `1GB`.
    pub blob_cache_size: Option<String>,
    /// Percent of `blob_cache_size` loaded between cache size checks. Default 10.
    pub blob_cache_size_check: u32,
    /// The ZEO object cache (`zeo-client-cache-size`). Default `128MB`.
    pub cache_size: String,
    /// `plone_instances.persistent_cache`: a persistent cache file per client process,
    /// `zeoclient-N` (a cache file cannot be shared by processes, ZEO#95). Default `true`.
    pub persistent_cache: bool,
    /// Where the persistent cache file goes (the app's `var`).
    pub var: String,
    /// Default `false`.
    pub read_only: bool,
}

impl ZeoClientSettings {
    /// The cookbook's defaults: shared blobs, persistent cache.
    pub fn new(servers: Vec<String>, blob_dir: &str, var: &str) -> ZeoClientSettings {
        ZeoClientSettings {
            servers,
            storage: crate::zeoserver::STORAGE.to_string(),
            name: "zeostorage".to_string(),
            blob_dir: blob_dir.to_string(),
            shared_blob_dir: true,
            blob_cache_size: Some("1GB".to_string()),
            blob_cache_size_check: 10,
            cache_size: "128MB".to_string(),
            persistent_cache: true,
            var: var.to_string(),
            read_only: false,
        }
    }
}

#[derive(Serialize)]
struct ZeoClientContext {
    read_only: bool,
    servers: Vec<String>,
    storage: String,
    name: String,
    blob_dir: String,
    shared_blob_dir: bool,
    blob_cache_size: Option<String>,
    blob_cache_size_check: u32,
    cache_size: String,
    client: Option<String>,
    var: String,
}

fn zeoclient_context(settings: &ZeoClientSettings, client: u32) -> Result<ZeoClientContext, Error> {
    if settings.servers.is_empty() {
        return Err(invalid("servers", "name at least one ZEO server"));
    }
    for server in &settings.servers {
        let port = server.rsplit_once(':').map(|(_, port)| port);
        if port.is_none_or(|p| p.parse::<u16>().is_err()) || server.contains(char::is_whitespace) {
            return Err(invalid("servers", format!("{server:?} is not host:port")));
        }
    }
    check_path("blob_dir", &settings.blob_dir)?;
    check_path("var", &settings.var)?;
    check_byte_size("cache_size", &settings.cache_size)?;
    if let Some(size) = &settings.blob_cache_size {
        check_byte_size("blob_cache_size", size)?;
    }
    if client == 0 {
        return Err(invalid("client", "clients are numbered from 1"));
    }
    Ok(ZeoClientContext {
        read_only: settings.read_only,
        servers: settings.servers.clone(),
        storage: zconfig_value("storage", &settings.storage)?,
        name: zconfig_value("name", &settings.name)?,
        blob_dir: settings.blob_dir.clone(),
        shared_blob_dir: settings.shared_blob_dir,
        blob_cache_size: settings.blob_cache_size.clone(),
        blob_cache_size_check: settings.blob_cache_size_check,
        cache_size: settings.cache_size.clone(),
        client: settings
            .persistent_cache
            .then(|| cache_name(&client.to_string(), &settings.servers)),
        var: settings.var.clone(),
    })
}

/// The persistent cache of client number `number` of these servers: `zeoclient-N-TAG`, TAG
/// naming the servers. A cache belongs to one database: after the ZEO server moved (a new,
/// empty database), a client keeping its old cache would be refused ("server behind
/// client"), so clients of a new server start with new caches.
pub fn cache_name(number: &str, servers: &[String]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(servers.join(" ").as_bytes());
    format!("zeoclient-{number}-{}", &hex::encode(digest)[..8])
}

/// The `<zeoclient>` section of client number `client` (1-based), unindented.
pub fn zeoclient_section(
    settings: &ZeoClientSettings,
    client: u32,
    templates: &Templates,
) -> Result<String, Error> {
    Ok(templates.render(
        "zeo/zeoclient.conf.j2",
        &zeoclient_context(settings, client)?,
    )?)
}

/// The same settings as `plone.recipe.zope2instance` options (`zeo-address`, `shared-blob`,
/// `zeo-client-client`, ...), one per line, for the `[clientN]` part of `deploy.cfg`.
pub fn zeoclient_buildout_options(
    settings: &ZeoClientSettings,
    client: u32,
    templates: &Templates,
) -> Result<String, Error> {
    let mut context = zeoclient_context(settings, client)?;
    context.storage = buildout_escape(&context.storage);
    context.name = buildout_escape(&context.name);
    Ok(templates.render("zeo/zeoclient.buildout.j2", &context)?)
}

/// How RelStorage reaches its PostgreSQL database (`plone_instances.relstorage.db`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DbConnection {
    /// A complete libpq connection string, used as is.
    Dsn(String),
    /// The parts of one; with the `postgres` layer, its host's private address.
    Params {
        host: String,
        port: Option<u16>,
        name: String,
        user: String,
        password: Option<String>,
    },
}

impl DbConnection {
    /// The libpq connection string (`dbname='zodb' user='plone' host='10.0.0.6' ...`).
    pub fn dsn(&self) -> String {
        match self {
            DbConnection::Dsn(dsn) => dsn.clone(),
            DbConnection::Params {
                host,
                port,
                name,
                user,
                password,
            } => {
                let mut parts = vec![
                    format!("dbname={}", libpq_quote(name)),
                    format!("user={}", libpq_quote(user)),
                    format!("host={}", libpq_quote(host)),
                ];
                if let Some(port) = port {
                    parts.push(format!("port={port}"));
                }
                if let Some(password) = password {
                    parts.push(format!("password={}", libpq_quote(password)));
                }
                parts.join(" ")
            }
        }
    }
}

/// A value of a libpq connection string: single-quoted, with `\` and `'` escaped.
fn libpq_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
}

/// RelStorage on PostgreSQL: the client settings and how the database is packed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelStorageSettings {
    pub db: DbConnection,
    /// History-preserving tables. Default `true` (RelStorage's default). It is fixed when the
    /// tables are created: changing it later needs a conversion (zodbconvert).
    pub keep_history: bool,
    /// The blob cache (or, with `shared_blob_dir`, the shared blob directory).
    pub blob_dir: String,
    /// Blobs live in a shared directory, not in the database. Default `false` (blobs in the
    /// database, `blob_dir` a cache); RelStorage deprecates `true`.
    pub shared_blob_dir: bool,
    /// Bound of the blob cache when not shared. Default `1GB`.
    pub blob_cache_size: Option<String>,
    /// Default 10.
    pub blob_cache_size_check: u32,
    /// Default `1MB`.
    pub blob_chunk_size: String,
    /// RelStorage's local object cache per process, in MB. Default none (RelStorage's 10).
    pub cache_local_mb: Option<u32>,
    /// memcached servers as `host:port` (`relstorage.enable_cache`: the `memcached` hosts on
    /// port 11211, or `relstorage.cache_servers`). Empty: none.
    pub cache_servers: Vec<String>,
    /// Packing (`relstorage.pack_days`, `two_stage_pack`, `pack_gc`, `truncate_refs`).
    pub pack: PackSchedule,
}

impl RelStorageSettings {
    /// The defaults of the cookbook and RelStorage for a database and blob cache.
    pub fn new(db: DbConnection, blob_dir: &str) -> RelStorageSettings {
        RelStorageSettings {
            db,
            keep_history: true,
            blob_dir: blob_dir.to_string(),
            shared_blob_dir: false,
            blob_cache_size: Some("1GB".to_string()),
            blob_cache_size_check: 10,
            blob_chunk_size: "1MB".to_string(),
            cache_local_mb: None,
            cache_servers: Vec::new(),
            pack: PackSchedule::default(),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct RelStorageContext {
    pub pack_gc: Option<bool>,
    keep_history: bool,
    pub blob_dir: String,
    shared_blob_dir: bool,
    blob_cache_size: Option<String>,
    blob_cache_size_check: u32,
    blob_chunk_size: String,
    cache_local_mb: Option<u32>,
    pub cache_servers: Vec<String>,
    pub dsn: String,
}

pub(crate) fn relstorage_context(
    settings: &RelStorageSettings,
) -> Result<RelStorageContext, Error> {
    check_path("blob_dir", &settings.blob_dir)?;
    if let Some(size) = &settings.blob_cache_size {
        check_byte_size("blob_cache_size", size)?;
    }
    check_byte_size("blob_chunk_size", &settings.blob_chunk_size)?;
    if let Some(bad) = settings.cache_servers.iter().find(|s| {
        s.contains(char::is_whitespace)
            || s.rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    }) {
        return Err(invalid(
            "cache_servers",
            format!("{bad:?} is not host:port"),
        ));
    }
    if let DbConnection::Params {
        host, name, user, ..
    } = &settings.db
    {
        for (setting, value) in [("db.host", host), ("db.name", name), ("db.user", user)] {
            if value.is_empty() {
                return Err(invalid(setting, "must not be empty"));
            }
        }
    }
    Ok(RelStorageContext {
        pack_gc: None,
        keep_history: settings.keep_history,
        blob_dir: settings.blob_dir.clone(),
        shared_blob_dir: settings.shared_blob_dir,
        blob_cache_size: settings.blob_cache_size.clone(),
        blob_cache_size_check: settings.blob_cache_size_check,
        blob_chunk_size: settings.blob_chunk_size.clone(),
        cache_local_mb: settings.cache_local_mb,
        cache_servers: settings.cache_servers.clone(),
        dsn: zconfig_value("db", &settings.db.dsn())?,
    })
}

/// The `<relstorage>` section (with its `<postgresql>`), unindented. `zope.conf` needs
/// [`RELSTORAGE_IMPORT`] before it.
pub fn relstorage_section(
    settings: &RelStorageSettings,
    templates: &Templates,
) -> Result<String, Error> {
    Ok(templates.render("zeo/relstorage.conf.j2", &relstorage_context(settings)?)?)
}

/// The line that makes ZConfig know `<relstorage>`.
pub const RELSTORAGE_IMPORT: &str = "%import relstorage";

/// The `rel-storage` option of `plone.recipe.zope2instance`, for `deploy.cfg`.
pub fn relstorage_buildout_option(
    settings: &RelStorageSettings,
    templates: &Templates,
) -> Result<String, Error> {
    let mut context = relstorage_context(settings)?;
    context.dsn = buildout_escape(&context.dsn);
    Ok(templates.render("zeo/relstorage.buildout.j2", &context)?)
}

/// A `<zodb_db NAME>` section of `zope.conf` around a storage section.
pub fn zodb_db_section(name: &str, mount_point: &str, cache_size: u32, storage: &str) -> String {
    let mut out = format!("<zodb_db {name}>\n    cache-size {cache_size}\n");
    for line in storage.lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(&format!("    mount-point {mount_point}\n</zodb_db>\n"));
    out
}

/// Buildout reads `$$` as `$`; the recipe then writes the value into `zope.conf`, where the
/// ZConfig escaping must survive.
fn buildout_escape(zconfig_value: &str) -> String {
    zconfig_value.replace('$', "$$")
}

/// A ZConfig byte size: digits with an optional KB, MB or GB suffix.
fn check_byte_size(setting: &'static str, value: &str) -> Result<(), Error> {
    let lower = value.to_ascii_lowercase();
    let digits = ["kb", "mb", "gb"]
        .iter()
        .find_map(|suffix| lower.strip_suffix(suffix))
        .unwrap_or(&lower);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            setting,
            format!("{value:?} is not a size such as 1GB, 128MB or 500000"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dsn_from_parts_quotes_every_value() {
        let db = DbConnection::Params {
            host: "10.0.0.6".to_string(),
            port: Some(5432),
            name: "zodb".to_string(),
            user: "plone".to_string(),
            password: Some(r"it's a \ secret".to_string()),
        };
        assert_eq!(
            db.dsn(),
            r"dbname='zodb' user='plone' host='10.0.0.6' port=5432 password='it\'s a \\ secret'"
        );
    }

    #[test]
    fn byte_sizes() {
        for ok in ["1GB", "128MB", "500000", "1gb", "10kb"] {
            assert!(check_byte_size("x", ok).is_ok(), "{ok}");
        }
        for bad in ["", "GB", "1 GB", "1TB", "-1"] {
            assert!(check_byte_size("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn zodb_db_section_indents_the_storage() {
        let section = zodb_db_section(
            "main",
            "/",
            30000,
            "<zeoclient>\n  server a:1\n</zeoclient>\n",
        );
        assert_eq!(
            section,
            "<zodb_db main>\n    cache-size 30000\n    <zeoclient>\n      server a:1\n    </zeoclient>\n    mount-point /\n</zodb_db>\n"
        );
    }
}
