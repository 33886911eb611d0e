//! `plone_instances`, `plone_zeoserver`, `plone_blobs` and `plone_solr`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::opt_string_or_list;
use crate::stack::layer::Layer;
use crate::stack::secrets::SecretString;

/// `plone_instances`: the Plone instances (ZEO clients) of the `plone_instances` layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PloneInstances {
    /// The app (`[apps.NAME]`) the instances deploy. Default `"plone_instances"`; a stack with
    /// a single app uses it whatever its name.
    pub app_name: String,
    /// The first file `deploy.cfg` extends. Default `"cfg/base.cfg"`.
    pub base_config: String,
    /// The id of the Plone site, used in the VirtualHostMonster rewrite. Default `"Plone"`.
    pub site_id: String,
    /// Create the Plone site `site_id` when the database has none: during a deploy, with the
    /// new release's code on the first instance host that switches to it, before its clients
    /// restart (on an unchanged deploy, with the live release). Default `false`: the cookbook
    /// never created sites. (The playbook's `plone_create_site`.)
    pub create_site: bool,
    /// The title of a site made by `create_site`. Default `"Plone site"`.
    pub site_title: String,
    /// The add-on profiles a site made by `create_site` gets. Default
    /// `["plone.app.contenttypes:default", "plonetheme.barceloneta:default"]` (Classic UI).
    pub site_profiles: Vec<String>,
    /// Extra virtual hosts served by nginx: host name → path of the sub-site below the site
    /// (`"www.example.org" = "example"`). Default none.
    pub subsites: BTreeMap<String, String>,
    /// Extra nginx configuration lines for a sub-site's server block: host name → lines.
    /// Default none.
    pub subsite_config: BTreeMap<String, String>,
    /// Clients per CPU: each host runs `ceil(cpus × per_cpu)` clients, at least 1. Default 2.
    /// (The cookbook counted OpsWorks `backends` / 8; we count CPUs.)
    pub per_cpu: f64,
    /// A fixed number of clients per host, instead of `per_cpu`. Default none. (The cookbook
    /// documents this key but never reads it; we honour it.)
    pub instance_count: Option<u32>,
    /// Whether the clients share the blob directory (`shared-blob = on`). `false` streams blobs
    /// from ZEO or RelStorage and keeps a local blob cache. Default `true`.
    pub shared_blobs: bool,
    /// Mount the blob directory over NFS from the `shared_blobs` layer. Default `false`.
    pub nfs_blobs: bool,
    /// Mount the blob directory from a GlusterFS volume of the `shared_blobs` layer.
    /// Default `false`.
    pub gluster_blobs: bool,
    /// `zodb-cache-size`: objects in each client's ZODB cache. Default none (the recipe's
    /// 30000).
    pub zodb_cache_size: Option<u64>,
    /// A persistent ZEO client cache per client (`zeo-client-client = zeoclient-N-TAG`, TAG
    /// naming the ZEO server). Default `true`.
    pub persistent_cache: bool,
    /// `zserver-threads` of each client; also HAProxy's `maxconn` per client. Default none
    /// (2 threads).
    pub zserver_threads: Option<u32>,
    /// Sticky sessions in HAProxy on the `__ac` login cookie. Default `false`.
    pub sticky_sessions: bool,
    /// Seconds to wait between restarting two clients. Default 0. (We also drain each client in
    /// HAProxy and wait for its health check, on every host in turn.)
    pub restart_delay: u64,
    /// Use RelStorage instead of ZEO. Default `false`.
    pub enable_relstorage: bool,
    /// RelStorage settings, used when `enable_relstorage` is on.
    pub relstorage: RelStorage,
    /// The layer whose first host is the ZEO server. Default `zeoserver`.
    pub zeo_layer: Layer,
    /// A fixed ZEO server, instead of the `zeo_layer` host.
    pub zeo: Zeo,
    /// Run a Celery worker on every instance host. Default `false`.
    pub enable_celery: bool,
    /// Also run Celery beat. Beat runs on exactly one host: the first host of the
    /// `plone_instances` layer. Default `false`.
    pub celerybeat: bool,
    /// Extra arguments for `bin/celery worker`. Default `""`.
    pub celery_args: String,
    /// Extra arguments for `bin/celery beat`. Default `""`.
    pub beat_args: String,
    /// The Celery app the workers run (`celery -A`): a module such as `my.package.tasks`, or
    /// `module:attribute`. Default none: a `bin/celery` that configures itself (buildout's
    /// collective.recipe.celery). Not in the cookbook, whose buildouts always had that part.
    pub celery_app: Option<String>,
    /// Task modules the workers import and the clients get as `CELERY_IMPORTS`
    /// (collective.celery). Default none. Not in the cookbook.
    pub celery_imports: Vec<String>,
    /// The layer whose first host is the Celery broker. Default `celery_broker`.
    pub broker_layer: Layer,
    /// A fixed Celery broker (such as ElastiCache), instead of the `broker_layer` host.
    pub broker: Broker,
    /// Point the clients at a Solr server. Default `false`.
    pub solr_enabled: bool,
    /// The layer whose first host is the Solr server. Default `solr`.
    pub solr_layer: Layer,
    /// A fixed Solr host, instead of the `solr_layer` host. Default none.
    pub solr_host: Option<String>,
    /// Add `collective.newrelic` to the first `tracing_clients` clients. Default `false`.
    pub newrelic_tracing: bool,
    /// Add TraceView tracing to the first `tracing_clients` clients. Default `false`.
    pub traceview_tracing: bool,
    /// TraceView's sample rate. Default 0.1.
    pub traceview_sample_rate: f64,
    /// How many clients get the tracing eggs; 0 means all. Default 1.
    pub tracing_clients: u32,
    /// Also log the clients' events to syslog with this facility (such as `local3`).
    /// Default none.
    pub syslog_facility: Option<String>,
    /// The syslog level. Default `"INFO"`.
    pub syslog_level: String,
}

/// An id Zope accepts for a Plone site (`create_site`): letters, digits, `-`, `_` and `.`,
/// not starting with `_`, `.` or `-`.
pub fn is_site_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with(['_', '.', '-'])
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Default for PloneInstances {
    fn default() -> Self {
        PloneInstances {
            app_name: "plone_instances".to_string(),
            base_config: "cfg/base.cfg".to_string(),
            site_id: "Plone".to_string(),
            create_site: false,
            site_title: "Plone site".to_string(),
            site_profiles: vec![
                "plone.app.contenttypes:default".to_string(),
                "plonetheme.barceloneta:default".to_string(),
            ],
            subsites: BTreeMap::new(),
            subsite_config: BTreeMap::new(),
            per_cpu: 2.0,
            instance_count: None,
            shared_blobs: true,
            nfs_blobs: false,
            gluster_blobs: false,
            zodb_cache_size: None,
            persistent_cache: true,
            zserver_threads: None,
            sticky_sessions: false,
            restart_delay: 0,
            enable_relstorage: false,
            relstorage: RelStorage::default(),
            zeo_layer: Layer::Zeoserver,
            zeo: Zeo::default(),
            enable_celery: false,
            celerybeat: false,
            celery_args: String::new(),
            beat_args: String::new(),
            celery_app: None,
            celery_imports: Vec::new(),
            broker_layer: Layer::CeleryBroker,
            broker: Broker::default(),
            solr_enabled: false,
            solr_layer: Layer::Solr,
            solr_host: None,
            newrelic_tracing: false,
            traceview_tracing: false,
            traceview_sample_rate: 0.1,
            tracing_clients: 1,
            syslog_facility: None,
            syslog_level: "INFO".to_string(),
        }
    }
}

/// One Plone client process on a host: `client1` listens on 8081, `clientN` on 8080 + N.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Client {
    /// 1-based.
    pub number: u32,
    /// `client<number>`, the buildout part and the program name.
    pub name: String,
    /// 8080 + number.
    pub port: u16,
}

impl Client {
    /// The port of the load balancer; client N listens on `BASE_PORT + N`.
    pub const BASE_PORT: u16 = 8080;
    /// More clients than this on one host would run out of sensible ports.
    pub const MAX_PER_HOST: u32 = 1000;

    pub fn new(number: u32) -> Self {
        let number = number.clamp(1, Self::MAX_PER_HOST);
        Client {
            number,
            name: format!("client{number}"),
            port: Self::BASE_PORT + u16::try_from(number).unwrap_or(u16::MAX - Self::BASE_PORT),
        }
    }

    /// The name of its persistent ZEO cache (`zeo-client-client`), unique per process.
    pub fn cache_name(&self) -> String {
        format!("zeoclient-{}", self.number)
    }
}

impl PloneInstances {
    /// How many clients a host with `cpus` CPUs runs: `instance_count` if set, else
    /// `ceil(cpus × per_cpu)`, at least 1 (and at most [`Client::MAX_PER_HOST`]).
    pub fn clients_per_host(&self, cpus: u32) -> u32 {
        if let Some(count) = self.instance_count {
            return count.clamp(1, Client::MAX_PER_HOST);
        }
        // The small epsilon keeps 10 × 0.3 = 3.0000000000000004 at 3.
        let wanted = (f64::from(cpus) * self.per_cpu - 1e-9).ceil();
        if wanted.is_nan() || wanted < 1.0 {
            1
        } else if wanted >= f64::from(Client::MAX_PER_HOST) {
            Client::MAX_PER_HOST
        } else {
            wanted as u32
        }
    }

    /// The clients of a host with `cpus` CPUs: client1..N on ports 8081..8080+N.
    pub fn clients(&self, cpus: u32) -> Vec<Client> {
        (1..=self.clients_per_host(cpus)).map(Client::new).collect()
    }

    /// Threads per client (`zserver_threads`, default 2); also HAProxy's `maxconn` per client.
    pub fn threads(&self) -> u32 {
        self.zserver_threads.unwrap_or(2)
    }
}

/// `plone_instances.relstorage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RelStorage {
    /// The database connection. Without `dsn` or `host`, the first `postgres` host is used.
    pub db: RelStorageDb,
    /// Cache in memcached (`cache-servers`, with pylibmc). Default `true`. RelStorage calls
    /// memcached "not recommended" nowadays; set `false` to use only its local cache.
    pub enable_cache: bool,
    /// An extra file `deploy.cfg` extends. Default `"cfg/relstorage.cfg"`.
    pub config: String,
    /// memcached servers as `host:port`, as an array or one space-separated string. Default
    /// none: every `memcached` host on port 11211.
    #[serde(deserialize_with = "opt_string_or_list")]
    pub cache_servers: Option<Vec<String>>,
    /// Pack the database from the first `plone_instances` host when no host has the
    /// `db_packing` layer (a `db_packing` host always packs). The cookbook set this on its one
    /// packing node. Default `false`.
    pub enable_pack: bool,
    /// Keep this many days of history when packing (`zodbpack -d`). Default 7.
    pub pack_days: u32,
    /// Pack in two stages: pre-pack on Saturday, pack on Sunday. Default `false`.
    pub two_stage_pack: bool,
    /// Garbage-collect unreachable objects when packing. Default `true`.
    pub pack_gc: bool,
    /// Truncate the reference tables monthly (`object_ref`, `object_refs_added`), a workaround
    /// for failing packs. Default `false`.
    pub truncate_refs: bool,
    /// A daily dump of the database on the `postgres` host (`pg_dump -Fc`, 21:00 UTC, into
    /// `/var/backups/postgres`), also copied to `plone_zeoserver.backup_s3` when that has a
    /// bucket; `provision backup` makes one now, `provision restore` puts one back. The
    /// twin of `plone_zeoserver.enable_backup`; not a cookbook key. Default `false`.
    pub enable_backup: bool,
    /// Dumps kept on the `postgres` host (and at least as many in the bucket). Default 7.
    pub backup_keep: u32,
}

impl Default for RelStorage {
    fn default() -> Self {
        RelStorage {
            db: RelStorageDb::default(),
            enable_cache: true,
            config: "cfg/relstorage.cfg".to_string(),
            cache_servers: None,
            enable_pack: false,
            pack_days: 7,
            two_stage_pack: false,
            pack_gc: true,
            truncate_refs: false,
            enable_backup: false,
            backup_keep: 7,
        }
    }
}

/// The NFS server of the `shared_blobs` layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NfsServer {
    /// nfs-kernel-server.
    #[default]
    Kernel,
    /// nfs-ganesha, in user space.
    Ganesha,
}

/// The RelStorage database type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DbType {
    /// PostgreSQL (also written `postgresql`).
    #[default]
    #[serde(alias = "postgresql")]
    Postgres,
    /// MySQL.
    Mysql,
    /// Oracle.
    Oracle,
}

/// `plone_instances.relstorage.db`: either a `dsn`, or `name`/`host`/`port`/`user`/`password`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RelStorageDb {
    /// The database type. Default `postgres`.
    #[serde(rename = "type")]
    pub db_type: DbType,
    /// A complete connection string, such as `dbname='zodb' user='plone' host='db1'`.
    /// Default none.
    pub dsn: Option<SecretString>,
    /// The database name. Default none.
    pub name: Option<String>,
    /// The database host. Default none (the first `postgres` host).
    pub host: Option<String>,
    /// The database port. Default none (the server's default).
    pub port: Option<u16>,
    /// The database user. Default none.
    pub user: Option<String>,
    /// The database password. Default none; better kept in the secrets file as
    /// `plone_instances_relstorage_db_password`.
    pub password: Option<SecretString>,
}

/// `plone_instances.zeo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Zeo {
    /// A fixed ZEO server as `host:port` (or `host`, port 8001). Default none: the first host
    /// of `zeo_layer`.
    pub address: Option<String>,
}

/// `plone_instances.broker`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Broker {
    /// A fixed Redis host. Default none: the first host of `broker_layer`.
    pub host: Option<String>,
    /// The Redis port, for a fixed host and for the layer's host. Default 6379.
    pub port: u16,
}

impl Default for Broker {
    fn default() -> Self {
        Broker {
            host: None,
            port: 6379,
        }
    }
}

/// `plone_zeoserver`: the ZEO server of the `zeoserver` layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PloneZeoserver {
    /// The app (`[apps.NAME]`) the ZEO server deploys. Default `"zeoserver"`; a stack with a
    /// single app uses it whatever its name.
    pub app_name: String,
    /// How ZEO is installed and run. `"venv"` (default): ZEO from pip in provision's own
    /// virtualenv (`/opt/provision/zeo`), with a `zeo.conf` provision renders. `"buildout"`
    /// (the cookbook's way): the app's `zeoserver` part (plone.recipe.zeoserver), built as a
    /// release under the app's `deploy_to` and run as `bin/zeoserver fg`; it needs an app of
    /// kind `buildout` (`app_name`, or the stack's only app). Not a cookbook key.
    pub mode: ZeoMode,
    /// A daily backup (collective.recipe.backup, 21:00 UTC). Default `false` (the cookbook's
    /// README says `true`; its code says `false`).
    pub enable_backup: bool,
    /// A weekly pack (`bin/zeopack`, Sunday 01:00 UTC). Default `true`.
    pub enable_pack: bool,
    /// Days of history the weekly pack (and `provision pack`) keeps: `zeopack -d`. Default 7,
    /// the cookbook's fixed value. Not a cookbook key (its RelStorage twin is
    /// `plone_instances.relstorage.pack_days`).
    pub pack_days: u32,
    /// The directory of the FileStorage (`Data.fs`), ideally on its own volume, in either mode
    /// (in buildout mode the `zeoserver` part's `file-storage` points there). Default none:
    /// `/var/lib/zeo/filestorage`, in both modes. (The cookbook's default was
    /// `<ephemeral>/shared/zodb/filestorage`, an OpsWorks mount, linked as the app's
    /// `shared/var/filestorage`.)
    pub filestorage_dir: Option<String>,
    /// Mount the blob directory over NFS from the `shared_blobs` layer. Default `false`.
    pub nfs_blobs: bool,
    /// Mount the blob directory from GlusterFS. Default `false`.
    pub gluster_blobs: bool,
    /// Also log to syslog with this facility. Default none.
    pub syslog_facility: Option<String>,
    /// The syslog level. Default `"INFO"`.
    pub syslog_level: String,
    /// Copies of the backups in an S3 bucket, so that the database survives the loss of its
    /// host. Not a cookbook key.
    pub backup_s3: BackupS3,
}

impl Default for PloneZeoserver {
    fn default() -> Self {
        PloneZeoserver {
            app_name: "zeoserver".to_string(),
            mode: ZeoMode::Venv,
            enable_backup: false,
            enable_pack: true,
            pack_days: 7,
            filestorage_dir: None,
            nfs_blobs: false,
            gluster_blobs: false,
            syslog_facility: None,
            syslog_level: "INFO".to_string(),
            backup_s3: BackupS3::default(),
        }
    }
}

/// `plone_zeoserver.mode`: how the `zeoserver` layer installs and runs ZEO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ZeoMode {
    /// ZEO from pip in provision's own virtualenv.
    #[default]
    Venv,
    /// The app's `zeoserver` buildout part, built as a release.
    Buildout,
}

/// `plone_zeoserver.backup_s3`: copies of the ZEO backups in an S3 bucket (or an S3-compatible
/// store), pushed by the ZEO host itself after every backup (with Debian's `rclone`), so they
/// are made also when no controller runs. Needs `enable_backup`. The `postgres` host copies
/// its dumps (`plone_instances.relstorage.enable_backup`) to the same bucket, under
/// `PREFIX/postgres/`. The keys come only from the
/// secrets file or the environment: `plone_zeoserver_backup_s3_access_key` and
/// `plone_zeoserver_backup_s3_secret_key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BackupS3 {
    /// The bucket; it must exist. Default none: the backups stay on the host.
    pub bucket: Option<String>,
    /// Where in the bucket this stack's backups go. Default none: the stack's name.
    pub prefix: Option<String>,
    /// The endpoint URL of an S3-compatible store, such as `https://minio.example.org:9000`
    /// (path-style requests). Default none: AWS S3.
    pub endpoint: Option<String>,
    /// The bucket's region. Default `"us-east-1"`.
    pub region: String,
    /// Full backups kept in the bucket, each with its incrementals and blob snapshots (a full
    /// backup is made every Sunday); at least the 2 the host keeps. Default 4.
    pub keep: u32,
}

impl Default for BackupS3 {
    fn default() -> Self {
        BackupS3 {
            bucket: None,
            prefix: None,
            endpoint: None,
            region: "us-east-1".to_string(),
            keep: 4,
        }
    }
}

/// `plone_blobs`: shared blob storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PloneBlobs {
    /// The layer that serves the blobs over NFS or GlusterFS. Default `shared_blobs`.
    pub layer: Layer,
    /// The NFS export root; holds `blobstorage/` and `tmp/`. Default `"/srv/exports"`.
    pub nfs_export_dir: String,
    /// The NFS server: `kernel` (nfs-kernel-server) or `ganesha` (nfs-ganesha, in user
    /// space, for hosts without the kernel server such as containers). Default `kernel`.
    /// Not a cookbook key.
    pub nfs_server: NfsServer,
    /// The parent directory of the GlusterFS brick. Default `"/srv/gluster-exports"` (the
    /// cookbook's was `<ephemeral>/gluster-exports`, an OpsWorks mount).
    pub gluster_export_dir: String,
    /// The network allowed to mount the NFS export, such as `10.0.0.0/8`. Default none: only
    /// the hosts of the stack.
    pub network: Option<String>,
    /// A fixed NFS or GlusterFS server, instead of the first host of `layer`. Default none.
    pub host: Option<String>,
    /// Fixed GlusterFS peers, instead of every host of `layer`. Default none.
    #[serde(deserialize_with = "opt_string_or_list")]
    pub servers: Option<Vec<String>>,
    /// The GlusterFS volume. Default `"blobs"`.
    pub gluster_volume: String,
    /// NFS mount options (`_netdev` is added). Default `"auto,rw,noatime,nodiratime"`.
    pub nfs_mount_options: String,
    /// GlusterFS mount options (`_netdev` and a backup volfile server are added).
    /// Default `"auto,rw,direct-io-mode=disable"`.
    pub gluster_mount_options: String,
    /// Keep glusterd's state on the export volume. Default `false`.
    pub gluster_store_config_in_exports: bool,
    /// A blob directory on the host itself (a local disk, or an s3fs mount), linked into the
    /// instances and the ZEO server as `shared/var/blobstorage`. Default none.
    pub blob_dir: Option<String>,
}

impl Default for PloneBlobs {
    fn default() -> Self {
        PloneBlobs {
            layer: Layer::SharedBlobs,
            nfs_export_dir: "/srv/exports".to_string(),
            nfs_server: NfsServer::Kernel,
            gluster_export_dir: "/srv/gluster-exports".to_string(),
            network: None,
            host: None,
            servers: None,
            gluster_volume: "blobs".to_string(),
            nfs_mount_options: "auto,rw,noatime,nodiratime".to_string(),
            gluster_mount_options: "auto,rw,direct-io-mode=disable".to_string(),
            gluster_store_config_in_exports: false,
            blob_dir: None,
        }
    }
}

/// `plone_solr`: the Solr server of the `solr` layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PloneSolr {
    /// The app (`[apps.NAME]`) the Solr layer deploys. Default `"solr"`; a stack with a single
    /// app uses it whatever its name.
    pub app_name: String,
    /// Send Solr's log to Papertrail. Default `false`.
    pub enable_papertrail: bool,
    /// Where Solr keeps its data (its own volume, ideally): the Solr home with the cores.
    /// Default none: `/var/lib/solr`. (The cookbook's was `<ephemeral>/shared/solr`, an
    /// OpsWorks mount.)
    pub data_dir: Option<String>,
    /// The Solr release: it names the install directory `/opt/solr-<version>`. Default
    /// `"9.10.1"`, the release collective.solr's own buildouts use. Not in the cookbook, whose
    /// buildout pinned Solr 4.4.
    pub version: String,
    /// The distribution archive (`.tgz`, shaped like Apache's). Default none: Apache's
    /// permanent archive of `version`.
    pub url: Option<String>,
    /// The archive's SHA-512 (128 hex digits, as in its `.sha512` file); the archive is
    /// unpacked only when it matches. Default: the published one of `solr-9.10.1.tgz`, so
    /// another `version` or `url` needs its own.
    pub sha512: Option<String>,
    /// Solr's port on the host's private address; the instances get it too. Default 8983.
    pub port: u16,
    /// The cores, each made from the collective.solr configset. One name or a list. The
    /// instances use the first. Default `["plone"]`.
    #[serde(deserialize_with = "super::string_or_list")]
    pub cores: Vec<String>,
    /// The JVM heap in MiB. Default none: a quarter of the host's memory, at least 512 and
    /// at most 8192.
    pub heap_mb: Option<u64>,
}

impl PloneSolr {
    /// The default `version`.
    pub const DEFAULT_VERSION: &str = "9.10.1";
    /// The sha512 of `solr-9.10.1.tgz` as Apache publishes it (`solr-9.10.1.tgz.sha512`; also
    /// pinned by the official Docker image's `SOLR_SHA512`).
    pub const DEFAULT_SHA512: &str = "23915ba0c9eba81d9ed7dd46bf3dfa748a1cf12cfd1d2bc3c37e3022893b8d45a6d6dc078ee79e33c0367191c3e4f2d1df3c6f5705331ccfe13d6b1287812eb0";
    /// The default `port`.
    pub const DEFAULT_PORT: u16 = 8983;
    /// The suffix of the core a reindex builds beside a live one: no core may end with it.
    pub const REBUILD_SUFFIX: &str = "_rebuild";
    /// Less heap than this (MiB) does not start Solr usefully.
    pub const MIN_HEAP_MB: u64 = 128;

    /// The archive's URL: `url`, or Apache's permanent archive of `version`.
    pub fn archive_url(&self) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => format!(
                "https://archive.apache.org/dist/solr/solr/{v}/solr-{v}.tgz",
                v = self.version
            ),
        }
    }

    /// The archive's sha512: `sha512`, or the published one when `version` and `url` are
    /// the defaults. `None` when it must be given.
    pub fn archive_sha512(&self) -> Option<String> {
        match &self.sha512 {
            Some(sha512) => Some(sha512.to_ascii_lowercase()),
            None if self.version == Self::DEFAULT_VERSION && self.url.is_none() => {
                Some(Self::DEFAULT_SHA512.to_string())
            }
            None => None,
        }
    }

    /// The core the instances use: the first.
    pub fn client_core(&self) -> &str {
        self.cores.first().map_or("plone", String::as_str)
    }
}

impl Default for PloneSolr {
    fn default() -> Self {
        PloneSolr {
            app_name: "solr".to_string(),
            enable_papertrail: false,
            data_dir: None,
            version: Self::DEFAULT_VERSION.to_string(),
            url: None,
            sha512: None,
            port: Self::DEFAULT_PORT,
            cores: vec!["plone".to_string()],
            heap_mb: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(per_cpu: f64, instance_count: Option<u32>) -> PloneInstances {
        PloneInstances {
            per_cpu,
            instance_count,
            ..PloneInstances::default()
        }
    }

    #[test]
    fn clients_per_host_rounds_up_with_at_least_one() {
        assert_eq!(with(2.0, None).clients_per_host(1), 2);
        assert_eq!(with(1.5, None).clients_per_host(3), 5);
        assert_eq!(with(0.1, None).clients_per_host(1), 1);
        assert_eq!(with(0.3, None).clients_per_host(10), 3);
        assert_eq!(with(2.0, None).clients_per_host(0), 1);
    }

    #[test]
    fn instance_count_wins_over_per_cpu() {
        assert_eq!(with(2.0, Some(3)).clients_per_host(8), 3);
        assert_eq!(with(0.1, Some(4)).clients_per_host(1), 4);
    }

    #[test]
    fn clients_are_numbered_from_8081() {
        let clients = with(1.5, None).clients(2);
        let shown: Vec<(String, u16)> = clients.iter().map(|c| (c.name.clone(), c.port)).collect();
        assert_eq!(
            shown,
            [
                ("client1".into(), 8081),
                ("client2".into(), 8082),
                ("client3".into(), 8083)
            ]
        );
        assert_eq!(clients[2].cache_name(), "zeoclient-3");
    }
}
