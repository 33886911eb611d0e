//! The database layers: `zeoserver` (ZEO with backups, their S3 copies, and packing),
//! `postgres` (PostgreSQL for RelStorage), `db_packing` (packing a RelStorage database from one
//! host) and `memcached` (RelStorage's shared cache). [`relstorage_settings`] is the storage
//! the instances and the packer open.

use anyhow::{Context as _, bail};
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::stack::{HostSpec, Layer, Stack, ZeoMode};
use provision_core::template::Templates;
use provision_plone::deploy::ConfigFile;
use provision_plone::{AppKind as PloneKind, BuildoutSettings, DeploySettings, InstanceSettings};
use provision_zeo::S3Copies;
use provision_zeo::client::{DbConnection, RelStorageSettings};
use provision_zeo::memcached::{self, MemcachedSettings};
use provision_zeo::packing::{self, PackSchedule, PackerSettings};
use provision_zeo::postgres::{self, PostgresSettings};
use provision_zeo::zeoserver::{self, ZeoServerSettings};

use super::{HostContext, bind_address};

/// The secrets with the keys of `plone_zeoserver.backup_s3`.
pub const BACKUP_S3_ACCESS_KEY: &str = "plone_zeoserver_backup_s3_access_key";
pub const BACKUP_S3_SECRET_KEY: &str = "plone_zeoserver_backup_s3_secret_key";

pub fn zeoserver_settings(stack: &Stack, host: &HostSpec) -> anyhow::Result<ZeoServerSettings> {
    let attributes = stack.attributes();
    let zeo = &attributes.plone_zeoserver;
    let mut settings = ZeoServerSettings::new(bind_address(host, Layer::Zeoserver)?);
    if let Some(dir) = &zeo.filestorage_dir {
        settings.filestorage_dir = dir.clone();
    }
    let store = super::blobs::store(stack);
    if store.dir != settings.blob_dir {
        settings.blob_link = Some(store.dir);
    }
    (settings.user, settings.group) = super::blobs::blob_owner(stack);
    // The instances' layer makes the app's user on a host that has both.
    settings.create_user = !host.has_layer(Layer::PloneInstances);
    settings.enable_backup = zeo.enable_backup;
    settings.enable_pack = zeo.enable_pack;
    settings.syslog_facility = zeo.syslog_facility.clone();
    settings.syslog_level = zeo.syslog_level.clone();
    settings.pack_days = zeo.pack_days;
    if zeo.mode == ZeoMode::Buildout {
        settings.release_dir = Some(zeo_app(stack)?.deploy_to.display().to_string());
    }
    if zeo.enable_backup || !postgres_dumps(stack) {
        settings.s3 = backup_s3(
            stack,
            host,
            zeo.enable_backup,
            "plone_zeoserver.enable_backup",
        )?;
    }
    Ok(settings)
}

/// Whether the `postgres` host dumps the RelStorage database
/// (`plone_instances.relstorage.enable_backup`).
pub fn postgres_dumps(stack: &Stack) -> bool {
    let pi = &stack.attributes().plone_instances;
    pi.enable_relstorage
        && pi.relstorage.enable_backup
        && !stack.hosts_with(Layer::Postgres).is_empty()
}

/// `plone_zeoserver.backup_s3`, with its keys from the secrets, for a host whose backups are
/// on when `enabled` (the attribute `switch`).
fn backup_s3(
    stack: &Stack,
    host: &HostSpec,
    enabled: bool,
    switch: &str,
) -> anyhow::Result<Option<S3Copies>> {
    let zeo = &stack.attributes().plone_zeoserver;
    let s3 = &zeo.backup_s3;
    let Some(bucket) = &s3.bucket else {
        return Ok(None);
    };
    if !enabled {
        bail!(
            "host {}: plone_zeoserver.backup_s3.bucket is set, but {switch} is false: there \
             would be no backups to copy; set {switch} = true",
            host.name
        );
    }
    let secret = |name: &str| {
        stack.secrets().get(name).map(str::to_string).with_context(|| {
            format!(
                "host {}: copying the backups to S3 needs the key {name}: add it to the secrets \
                 file (or set PROVISION_SECRET_{})",
                host.name,
                name.to_ascii_uppercase()
            )
        })
    };
    Ok(Some(S3Copies {
        bucket: bucket.clone(),
        prefix: s3
            .prefix
            .clone()
            .unwrap_or_else(|| stack.name().to_string()),
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        keep: s3.keep,
        access_key: secret(BACKUP_S3_ACCESS_KEY)?,
        secret_key: secret(BACKUP_S3_SECRET_KEY)?,
    }))
}

pub fn zeoserver(
    context: &HostContext<'_>,
    phase: Phase,
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    let settings = zeoserver_settings(context.stack, context.host)?;
    let mut resources = zeoserver::resources(&settings, phase, templates)?;
    if phase == Phase::Setup
        && let Some(release) = zeo_release(context.stack, context.host, templates)?
    {
        // What the build needs; the release itself is the deploy's (crate::zeo_release).
        resources.push(provision_plone::instances::packages(&release.settings).into());
        resources.extend(
            provision_plone::instances::release_dirs(&release.settings)
                .map_err(|e| anyhow::anyhow!("host {}: {e}", context.host.name))?,
        );
    }
    Ok(resources)
}

/// The app whose `zeoserver` part buildout mode builds (the stack checked its kind).
pub fn zeo_app(stack: &Stack) -> anyhow::Result<&provision_core::stack::App> {
    stack.app_for(Layer::Zeoserver).context(
        "plone_zeoserver.mode is \"buildout\", but the stack has no app for the ZEO server: \
         set plone_zeoserver.app_name",
    )
}

/// Buildout mode: the ZEO server's releases, built by the instances' release scripts with
/// no clients.
pub struct ZeoRelease {
    /// Owned and built by the server's user, which runs it.
    pub settings: InstanceSettings,
    /// The generated `deploy.cfg` ([`zeoserver::deploy_cfg`]).
    pub files: Vec<ConfigFile>,
}

/// The ZEO server's release on `host`, in buildout mode; `None` in venv mode.
pub fn zeo_release(
    stack: &Stack,
    host: &HostSpec,
    templates: &Templates,
) -> anyhow::Result<Option<ZeoRelease>> {
    if stack.attributes().plone_zeoserver.mode != ZeoMode::Buildout {
        return Ok(None);
    }
    let zeo = zeoserver_settings(stack, host)?;
    let app = zeo_app(stack)?;
    let deploy = stack.deploy_settings(&app.name);
    let mut extends = vec![stack.attributes().plone_instances.base_config.clone()];
    extends.extend(deploy.buildout_extends.iter().cloned());
    let mut settings =
        InstanceSettings::new(&app.name, &app.deploy_to.display().to_string(), vec![]);
    settings.user = zeo.user.clone();
    settings.group = zeo.group.clone();
    settings.os_packages = deploy.os_packages.clone();
    settings.kind = PloneKind::Buildout(BuildoutSettings {
        config_name: deploy.buildout_config.clone(),
        extends: extends.clone(),
        flags: deploy.buildout_flags.clone(),
        debug: deploy.buildout_debug,
        buildout_version: (!deploy.buildout_version.is_empty())
            .then(|| deploy.buildout_version.clone()),
        bootstrap_params: deploy.buildout_bootstrap_params.clone(),
        ..BuildoutSettings::default()
    });
    settings.deploy = DeploySettings {
        keep_releases: deploy.keep_releases,
        always_build_on_deploy: deploy.always_build_on_deploy,
        ..DeploySettings::buildout()
    };
    settings
        .validate_release()
        .map_err(|e| anyhow::anyhow!("host {}: the ZEO server's release: {e}", host.name))?;
    let files = vec![ConfigFile {
        path: deploy.buildout_config.clone(),
        content: zeoserver::deploy_cfg(&zeo, &extends, templates)
            .with_context(|| format!("host {}: the ZEO server's deploy.cfg", host.name))?,
    }];
    Ok(Some(ZeoRelease { settings, files }))
}

/// The RelStorage database's name, role, port and password: `plone_instances.relstorage.db.*`,
/// else the app's OpsWorks data source (`deploy.<app>.database`), else `zodb`, `plone` and the
/// server's default port. The `postgres` layer makes exactly this database.
struct DbParams {
    name: String,
    user: String,
    port: Option<u16>,
    password: Option<String>,
}

fn db_params(stack: &Stack) -> DbParams {
    let db = &stack.attributes().plone_instances.relstorage.db;
    let app = stack
        .app_for(Layer::PloneInstances)
        .and_then(|app| stack.attributes().deploy.get(&app.name))
        .and_then(|deploy| deploy.database.as_ref());
    DbParams {
        name: db
            .name
            .clone()
            .or_else(|| app.and_then(|a| a.database.clone()))
            .unwrap_or_else(|| "zodb".to_string()),
        user: db
            .user
            .clone()
            .or_else(|| app.and_then(|a| a.username.clone()))
            .unwrap_or_else(|| "plone".to_string()),
        port: db.port.or_else(|| app.and_then(|a| a.port)),
        password: db
            .password
            .as_ref()
            .or_else(|| app.and_then(|a| a.password.as_ref()))
            .map(|p| p.expose().to_string()),
    }
}

/// The port the `postgres` layer's PostgreSQL listens on.
pub fn postgres_port(stack: &Stack) -> u16 {
    db_params(stack).port.unwrap_or(postgres::DEFAULT_PORT)
}

/// How the instances and the packer reach the RelStorage database: `relstorage.db.dsn` as it
/// is, else a DSN from the host (`relstorage.db.host`, the app's database host, or the first
/// `postgres` host) and [`db_params`].
pub fn db_connection(stack: &Stack) -> anyhow::Result<DbConnection> {
    let db = &stack.attributes().plone_instances.relstorage.db;
    if let Some(dsn) = &db.dsn {
        return Ok(DbConnection::Dsn(dsn.expose().to_string()));
    }
    let host = stack.relstorage_db_host().context(
        "RelStorage has no database: set plone_instances.relstorage.db.dsn or db.host, or give \
         a host the postgres layer",
    )?;
    let params = db_params(stack);
    Ok(DbConnection::Params {
        host,
        port: params.port,
        name: params.name,
        user: params.user,
        password: params.password,
    })
}

/// The RelStorage storage of the stack, with `blob_dir` as the blob cache (or the shared blob
/// directory): the database, `cache-servers` from the `memcached` layer (or
/// `relstorage.cache_servers`) when `relstorage.enable_cache`, and the pack settings. Blobs
/// live in the database unless the instances share a blob mount (`plone_instances.shared_blobs`
/// with `nfs_blobs` or `gluster_blobs`): RelStorage deprecates a shared blob directory, and
/// without a shared mount each host would see only its own blobs.
pub fn relstorage_settings(stack: &Stack, blob_dir: &str) -> anyhow::Result<RelStorageSettings> {
    let pi = &stack.attributes().plone_instances;
    let relstorage = &pi.relstorage;
    let mut settings = RelStorageSettings::new(db_connection(stack)?, blob_dir);
    settings.shared_blob_dir = pi.shared_blobs && (pi.nfs_blobs || pi.gluster_blobs);
    if relstorage.enable_cache {
        settings.cache_servers = stack
            .memcached_servers()
            .iter()
            .map(ToString::to_string)
            .collect();
    }
    settings.pack = PackSchedule {
        pack_days: relstorage.pack_days,
        two_stage_pack: relstorage.two_stage_pack,
        pack_gc: relstorage.pack_gc,
        truncate_refs: relstorage.truncate_refs,
        ..PackSchedule::default()
    };
    Ok(settings)
}

pub fn postgres(
    context: &HostContext<'_>,
    phase: Phase,
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    let stack = context.stack;
    let host = context.host;
    let params = db_params(stack);
    let Some(password) = &params.password else {
        bail!(
            "host {}: the postgres layer needs the database password: add \
             plone_instances_relstorage_db_password to the secrets file (or set \
             PROVISION_SECRET_PLONE_INSTANCES_RELSTORAGE_DB_PASSWORD)",
            host.name
        );
    };
    let version = postgres::debian_version(&context.facts.os_version_id).with_context(|| {
        format!(
            "host {}: no PostgreSQL version known for {}",
            host.name, context.facts.os_pretty_name
        )
    })?;
    // Only the hosts that open the database may connect: the instances and the packer.
    let mut clients = Vec::new();
    for client in stack
        .hosts_with(Layer::PloneInstances)
        .into_iter()
        .chain(stack.hosts_with(Layer::DbPacking))
    {
        let address = bind_address(client, Layer::Postgres)?;
        if !clients.contains(&address) {
            clients.push(address);
        }
    }
    let mut settings = PostgresSettings::new(
        version,
        bind_address(host, Layer::Postgres)?,
        clients,
        password,
    );
    settings.database = params.name;
    settings.role = params.user;
    if let Some(port) = params.port {
        settings.port = port;
    }
    let relstorage = &stack.attributes().plone_instances.relstorage;
    settings.enable_backup = postgres_dumps(stack);
    settings.backup_keep = relstorage.backup_keep;
    if settings.enable_backup {
        settings.s3 = backup_s3(
            stack,
            host,
            true,
            "plone_instances.relstorage.enable_backup",
        )?
        .map(|mut s3| {
            // Each dump is complete: the bucket keeps at least as many as the host.
            s3.keep = s3.keep.max(settings.backup_keep);
            s3
        });
    }
    Ok(postgres::resources(&settings, phase, templates)?)
}

/// The `db_packing` layer: the pack jobs of the RelStorage database, on this one host (the
/// stack refuses two `db_packing` hosts).
pub fn packing(
    context: &HostContext<'_>,
    phase: Phase,
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    let stack = context.stack;
    let host = context.host;
    let pi = &stack.attributes().plone_instances;
    if !pi.enable_relstorage {
        bail!(
            "host {}: the db_packing layer packs a RelStorage database, but \
             plone_instances.enable_relstorage is false (a ZEO server packs its own storage: \
             plone_zeoserver.enable_pack); remove the layer or enable RelStorage",
            host.name
        );
    }
    let packer = PackerSettings::default();
    // The packer's blob directory matters only when the blobs are in a shared directory; a
    // blob cache of its own is used otherwise.
    let blob_dir = stack
        .attributes()
        .plone_blobs
        .blob_dir
        .clone()
        .unwrap_or_else(|| packer.blob_cache_dir.clone());
    let storage =
        relstorage_settings(stack, &blob_dir).with_context(|| format!("host {}", host.name))?;
    Ok(packing::resources(&storage, &packer, phase, templates)?)
}

/// The `memcached` layer: memcached on the host's private address, sized to its memory.
pub fn memcached(
    context: &HostContext<'_>,
    phase: Phase,
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    let settings = MemcachedSettings::new(
        bind_address(context.host, Layer::Memcached)?,
        context.facts.memory_bytes,
    );
    Ok(memcached::resources(&settings, phase, templates)?)
}

#[cfg(test)]
mod tests {
    use provision_core::stack::Secrets;

    use super::*;

    const RELSTORAGE: &str = "[stack]\nname = \"site\"\n\
        [hosts.db1]\naddress = \"10.0.0.6\"\nlayers = [\"postgres\", \"memcached\"]\n\
        [hosts.app1]\naddress = \"10.0.0.11\"\nlayers = [\"plone_instances\", \"db_packing\"]\n\
        [attributes.plone_instances]\nenable_relstorage = true\n\
        [attributes.plone_instances.relstorage]\npack_days = 3\ntwo_stage_pack = true\n";

    fn stack(text: &str, secrets: &[(&str, &str)]) -> Stack {
        let mut stack = Stack::parse(text, "stack.toml", None).expect("a valid stack");
        let mut all = Secrets::new();
        for (name, value) in secrets {
            all.insert(name, *value);
        }
        stack.set_secrets(all);
        stack
    }

    #[test]
    fn relstorage_uses_the_postgres_host_memcached_and_the_pack_settings() {
        let stack = stack(
            RELSTORAGE,
            &[("plone_instances_relstorage_db_password", "pw'1")],
        );
        let settings = relstorage_settings(&stack, "/srv/blobcache").unwrap();
        assert_eq!(
            settings.db.dsn(),
            r"dbname='zodb' user='plone' host='10.0.0.6' password='pw\'1'"
        );
        assert_eq!(settings.cache_servers, ["10.0.0.6:11211"]);
        assert!(!settings.shared_blob_dir);
        assert_eq!(
            (settings.pack.pack_days, settings.pack.two_stage_pack),
            (3, true)
        );
    }

    #[test]
    fn a_dsn_wins_and_the_cache_can_be_off() {
        let text = format!(
            "{RELSTORAGE}enable_cache = false\n\
             [attributes.plone_instances.relstorage.db]\ndsn = \"dbname=z host=elsewhere\"\n"
        );
        let settings = relstorage_settings(&stack(&text, &[]), "/srv/blobcache").unwrap();
        assert_eq!(settings.db.dsn(), "dbname=z host=elsewhere");
        assert!(settings.cache_servers.is_empty());
    }

    const ZEO: &str = "[stack]\nname = \"site\"\n\
        [hosts.db1]\naddress = \"10.0.0.5\"\nlayers = [\"zeoserver\"]\n\
        [attributes.plone_zeoserver]\nenable_backup = true\n\
        [attributes.plone_zeoserver.backup_s3]\nbucket = \"zeo-backups\"\n";

    #[test]
    fn s3_copies_take_their_keys_from_the_secrets_only() {
        let without = stack(ZEO, &[]);
        let err = zeoserver_settings(&without, without.host("db1").unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("plone_zeoserver_backup_s3_access_key"),
            "{err}"
        );
        let with = stack(
            ZEO,
            &[
                (BACKUP_S3_ACCESS_KEY, "AKIDEXAMPLE"),
                (BACKUP_S3_SECRET_KEY, "s3cr3t"),
            ],
        );
        let settings = zeoserver_settings(&with, with.host("db1").unwrap()).unwrap();
        let s3 = settings.s3.expect("S3 copies");
        assert_eq!(s3.remote(), "backups:zeo-backups/site");
        assert_eq!((s3.keep, s3.secret_key.as_str()), (4, "s3cr3t"));
    }

    #[test]
    fn pack_days_reach_the_pack_timer() {
        let zeo = stack(
            "[stack]\nname = \"site\"\n\
             [hosts.db1]\naddress = \"10.0.0.5\"\nlayers = [\"zeoserver\"]\n",
            &[],
        );
        let settings = zeoserver_settings(&zeo, zeo.host("db1").unwrap()).unwrap();
        assert_eq!(
            zeoserver::pack_timer(&settings).command,
            "/opt/provision/zeo/bin/zeopack -d 7 10.0.0.5:8001:1"
        );
        let three = stack(
            "[stack]\nname = \"site\"\n\
             [hosts.db1]\naddress = \"10.0.0.5\"\nlayers = [\"zeoserver\"]\n\
             [attributes.plone_zeoserver]\npack_days = 3\n",
            &[],
        );
        let timer =
            zeoserver::pack_timer(&zeoserver_settings(&three, three.host("db1").unwrap()).unwrap());
        assert_eq!(
            timer.command,
            "/opt/provision/zeo/bin/zeopack -d 3 10.0.0.5:8001:1"
        );
        assert!(
            timer.description.contains("3 days"),
            "{}",
            timer.description
        );
    }
}
