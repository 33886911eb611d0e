//! `[attributes]`: the cookbook's Custom JSON keys, unchanged, with the cookbook's defaults.
//!
//! Every section is a typed struct with `#[serde(default, deny_unknown_fields)]`: a missing key
//! takes its default, an unknown key is an error that names the nearest valid one. Where our
//! default differs from the cookbook's, the field's documentation says so. These comments
//! become the reference documentation of the stack file.

mod deploy;
mod frontend;
mod plone;
mod system;

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

pub use deploy::{CacheArchive, DeployApp, DeployDatabase, InitCommand};
pub use frontend::{Haproxy, NginxPlone, VarnishPlone};
pub use plone::{
    BackupS3, Broker, Client, DbType, NfsServer, PloneBlobs, PloneInstances, PloneSolr,
    PloneZeoserver, RelStorage, RelStorageDb, Zeo, ZeoMode, is_site_id,
};
pub use system::{
    Apt, EbsSnapshots, Firewall, NewRelic, Newrelic, Papertrail, Redis, S3fsFuse, S3fsMount,
    System, Tmpdir, Traceview, UnattendedUpgrades,
};

/// All attributes of a stack: the stack file's `[attributes]`, with the custom JSON merged over
/// it, over these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Attributes {
    /// Plone instances (ZEO clients): count, ZODB settings, discovery of ZEO, RelStorage,
    /// Celery and Solr.
    pub plone_instances: PloneInstances,
    /// The ZEO server.
    pub plone_zeoserver: PloneZeoserver,
    /// Shared blob storage (NFS, GlusterFS, or a local or S3-backed directory).
    pub plone_blobs: PloneBlobs,
    /// The Solr server.
    pub plone_solr: PloneSolr,
    /// The nginx site in front of the stack.
    pub nginx_plone: NginxPlone,
    /// The Varnish cache between nginx and HAProxy.
    pub varnish_plone: VarnishPlone,
    /// URL regular expressions banned from Varnish by `provision run varnish-purge`.
    /// Default `[".*"]` (everything).
    pub varnish_purge_urls: Vec<String>,
    /// The HAProxy balancer in front of the Plone clients.
    pub haproxy: Haproxy,
    /// Temporary files: the `var/tmp` link and a tmpfs `/tmp`.
    pub tmpdir: Tmpdir,
    /// Host-wide settings (timezone).
    pub system: System,
    /// Scheduled EBS snapshots (AWS only).
    pub ebs_snapshots: EbsSnapshots,
    /// Domains to request Let's Encrypt certificates for with certbot (webroot).
    /// Default none. A single string is accepted as a one-element list.
    #[serde(deserialize_with = "string_or_list")]
    pub certbot_domains: Vec<String>,
    /// The e-mail address given to Let's Encrypt. Default none.
    pub certbot_email: Option<String>,
    /// S3 buckets mounted with s3fs-fuse (for example as the blob directory).
    pub s3fs_fuse: S3fsFuse,
    /// New Relic agents (the `newrelic` cookbook's attributes).
    pub newrelic: Newrelic,
    /// Which New Relic host agent runs (the cookbook's `new_relic` switch).
    pub new_relic: NewRelic,
    /// Remote syslog to Papertrail.
    pub papertrail: Papertrail,
    /// TraceView (AppNeta) tracing.
    pub traceview: Traceview,
    /// Unattended upgrades of OS packages.
    pub apt: Apt,
    /// The Redis broker of the `celery_broker` layer.
    pub redis: Redis,
    /// An optional host firewall (nftables) on every host of the stack: SSH, the frontend, and
    /// each layer's ports to the stack's hosts only. Not a cookbook key.
    pub firewall: Firewall,
    /// Per-app deploy settings, by app name (the `[apps.NAME]` of the stack file). The
    /// cookbook's `deploy[app]` keys: `buildout_*`, `always_build_on_deploy`, ...
    pub deploy: BTreeMap<String, DeployApp>,
}

impl Default for Attributes {
    fn default() -> Self {
        Attributes {
            plone_instances: PloneInstances::default(),
            plone_zeoserver: PloneZeoserver::default(),
            plone_blobs: PloneBlobs::default(),
            plone_solr: PloneSolr::default(),
            nginx_plone: NginxPlone::default(),
            varnish_plone: VarnishPlone::default(),
            varnish_purge_urls: vec![".*".to_string()],
            haproxy: Haproxy::default(),
            tmpdir: Tmpdir::default(),
            system: System::default(),
            ebs_snapshots: EbsSnapshots::default(),
            certbot_domains: Vec::new(),
            certbot_email: None,
            s3fs_fuse: S3fsFuse::default(),
            newrelic: Newrelic::default(),
            new_relic: NewRelic::default(),
            papertrail: Papertrail::default(),
            traceview: Traceview::default(),
            apt: Apt::default(),
            redis: Redis::default(),
            firewall: Firewall::default(),
            deploy: BTreeMap::new(),
        }
    }
}

impl Attributes {
    /// The deploy settings of an app: `deploy.<app>`, or the defaults when it has none.
    pub fn deploy_app(&self, app: &str) -> &DeployApp {
        static DEFAULT: std::sync::LazyLock<DeployApp> =
            std::sync::LazyLock::new(DeployApp::default);
        self.deploy.get(app).unwrap_or(&DEFAULT)
    }
}

/// A list written as an array, or as one string of items separated by spaces or commas (the
/// cookbook's `cache_servers = "a:11211 b:11211"`).
pub(crate) fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(ListVisitor)
}

/// [`string_or_list`] for an optional list (`null` or absent is `None`).
pub(crate) fn opt_string_or_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    struct OptVisitor;
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or an array of strings")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            string_or_list(d).map(Some)
        }
    }
    d.deserialize_option(OptVisitor)
}

struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.split([' ', ',', '\t', '\n'])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            out.push(item);
        }
        Ok(out)
    }
}

/// A value the cookbook writes as a string but users also write as a number (cron fields,
/// `python_major_version`).
pub(crate) fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(TextVisitor)
}

/// [`string_or_number`] for an optional value.
pub(crate) fn opt_string_or_number<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    struct OptVisitor;
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a number")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            string_or_number(d).map(Some)
        }
    }
    d.deserialize_option(OptVisitor)
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.to_string())
    }
}
