//! Host-wide sections: `tmpdir`, `system`, `ebs_snapshots`, `s3fs_fuse`, monitoring
//! (`newrelic`, `new_relic`, `papertrail`, `traceview`), `apt`, `redis` and `firewall`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{string_or_list, string_or_number};
use crate::stack::secrets::SecretString;

/// `tmpdir`: temporary files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Tmpdir {
    /// Link the instances' `shared/var/tmp` to `/tmp`. Default `false`.
    pub global_tmp: bool,
    /// Mount `/tmp` as a tmpfs (`nodev,nosuid,noatime`). Default `false`.
    pub tmpfs: bool,
    /// The size of the tmpfs. Default `"1G"`.
    pub tmpfs_size: String,
}

impl Default for Tmpdir {
    fn default() -> Self {
        Tmpdir {
            global_tmp: false,
            tmpfs: false,
            tmpfs_size: "1G".to_string(),
        }
    }
}

/// `system`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct System {
    /// The hosts' timezone, such as `"Europe/Berlin"`. Default none: left as it is.
    pub timezone: Option<String>,
}

/// `ebs_snapshots`: a daily snapshot of the host's EBS volumes (AWS only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EbsSnapshots {
    /// Snapshots to keep per volume. Default 15.
    pub keep: u32,
    /// Cron hour (UTC). Default `"8"`. A number is accepted too.
    #[serde(deserialize_with = "string_or_number")]
    pub hour: String,
    /// Cron minute. Default `"0"`. A number is accepted too.
    #[serde(deserialize_with = "string_or_number")]
    pub minute: String,
    /// Cron day of week. Default `"0-6"`. A number is accepted too.
    #[serde(deserialize_with = "string_or_number")]
    pub weekday: String,
    /// The AWS access key id. Default none; better kept in the secrets file as
    /// `ebs_snapshots_aws_key`.
    pub aws_key: Option<SecretString>,
    /// The AWS secret access key. Default none; better kept in the secrets file as
    /// `ebs_snapshots_aws_secret`.
    pub aws_secret: Option<SecretString>,
}

impl Default for EbsSnapshots {
    fn default() -> Self {
        EbsSnapshots {
            keep: 15,
            hour: "8".to_string(),
            minute: "0".to_string(),
            weekday: "0-6".to_string(),
            aws_key: None,
            aws_secret: None,
        }
    }
}

/// `s3fs_fuse`: S3 buckets mounted as directories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct S3fsFuse {
    /// The S3 access key id. Default none; better kept in the secrets file as
    /// `s3fs_fuse_s3_key`.
    pub s3_key: Option<SecretString>,
    /// The S3 secret key. Default none; better kept in the secrets file as
    /// `s3fs_fuse_s3_secret`.
    pub s3_secret: Option<SecretString>,
    /// The buckets to mount. Default none.
    pub mounts: Vec<S3fsMount>,
    /// The s3fs version the cookbook built from source. Default `"1.74"`; ignored: the
    /// distribution's `s3fs` package is installed.
    pub version: String,
}

impl Default for S3fsFuse {
    fn default() -> Self {
        S3fsFuse {
            s3_key: None,
            s3_secret: None,
            mounts: Vec::new(),
            version: "1.74".to_string(),
        }
    }
}

/// One entry of `s3fs_fuse.mounts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3fsMount {
    /// The bucket. Required.
    pub bucket: String,
    /// The mount point, such as `/mnt/s3/blobs`. Required.
    pub path: String,
    /// A local cache directory (s3fs `use_cache`). Default none.
    pub tmp_store: Option<String>,
    /// The S3 endpoint URL, for S3-compatible servers (s3fs `url`, path-style requests).
    /// Default none: AWS. Not a cookbook key.
    pub url: Option<String>,
    /// The bucket's region. Default none: `us-east-1`. Not a cookbook key.
    pub region: Option<String>,
}

/// `newrelic`: the New Relic agents (the `newrelic` cookbook's attributes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Newrelic {
    /// The license key. Default none; better kept in the secrets file as `newrelic_license`.
    pub license: Option<SecretString>,
    /// Python agent settings, passed through (`app_name` defaults to the Plone app,
    /// `browser_monitoring.auto_instrument` to `true`, `transaction_tracer.slow_sql` to
    /// `false`, `transaction_tracer.record_sql` to `"raw"`).
    pub application_monitoring: BTreeMap<String, Value>,
    /// Varnish plugin settings, passed through.
    pub varnish: BTreeMap<String, Value>,
    /// Python agent installation settings, passed through.
    pub python_agent: BTreeMap<String, Value>,
    /// Package repository settings, passed through.
    pub repository: BTreeMap<String, Value>,
}

/// `new_relic`: which host agent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NewRelic {
    /// The server monitor agent. Default `true`.
    pub servers: bool,
    /// The infrastructure agent (with the nginx integration) instead. Default `false`.
    pub infrastructure: bool,
}

impl Default for NewRelic {
    fn default() -> Self {
        NewRelic {
            servers: true,
            infrastructure: false,
        }
    }
}

/// `papertrail`: remote syslog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Papertrail {
    /// The Papertrail host, such as `logs.papertrailapp.com`. Default none: off.
    pub remote_host: Option<String>,
    /// The Papertrail port. Default none.
    pub remote_port: Option<u16>,
    /// Extra log files to send: path → tag. Default none (the clients', Celery's, nginx's and
    /// Redis's logs are always sent when Papertrail is on).
    pub watch_files: BTreeMap<String, String>,
}

/// `traceview`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Traceview {
    /// The TraceView access key. Default none; better kept in the secrets file as
    /// `traceview_access_key`.
    pub access_key: Option<SecretString>,
}

/// `apt`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Apt {
    /// Unattended upgrades.
    pub unattended_upgrades: UnattendedUpgrades,
}

/// `apt.unattended_upgrades`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UnattendedUpgrades {
    /// Install security upgrades automatically. Default `true`.
    pub enable: bool,
    /// Mail a report to this address. Default none.
    pub mail: Option<String>,
    /// Packages never upgraded automatically. Default `["newrelic-sysmond"]`.
    pub package_blacklist: Vec<String>,
    /// Run `dpkg --configure -a` after an interrupted upgrade. Default `false`.
    pub auto_fix_interrupted_dpkg: bool,
}

impl Default for UnattendedUpgrades {
    fn default() -> Self {
        UnattendedUpgrades {
            enable: true,
            mail: None,
            package_blacklist: vec!["newrelic-sysmond".to_string()],
            auto_fix_interrupted_dpkg: false,
        }
    }
}

/// `redis`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Redis {
    /// `redis.conf` settings: name → value, written as given (`maxmemory = "256mb"`).
    /// Default none. The cookbook listened on `0.0.0.0`; we listen on the host's private
    /// address and accept only stack members unless `bind` is set here. `requirepass` (the
    /// broker's password, better kept in the secrets file as `redis_config_requirepass`, and
    /// generated into it when missing) is masked in output.
    pub config: BTreeMap<String, Value>,
}

/// Settings of `redis.config` that hold passwords: never shown by Debug.
const REDIS_SECRET_SETTINGS: [&str; 2] = ["requirepass", "masterauth"];

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: BTreeMap<&str, &dyn std::fmt::Debug> = self
            .config
            .iter()
            .map(|(k, v)| {
                let v: &dyn std::fmt::Debug = if REDIS_SECRET_SETTINGS.contains(&k.as_str()) {
                    &crate::stack::MASK
                } else {
                    v
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("Redis").field("config", &shown).finish()
    }
}

/// `firewall`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Firewall {
    /// Give every host of the stack a firewall: the nftables table `inet provision` in
    /// `/etc/provision/firewall.nft`, loaded at boot by `provision-firewall.service`. It drops
    /// every incoming connection except loopback, replies, ICMP, SSH, HTTP and HTTPS on `lb`
    /// hosts, `extra_tcp_ports`, and the ports of the host's layers (ZEO, PostgreSQL, Redis,
    /// Solr, memcached, the Plone clients, Varnish, NFS, GlusterFS), which are open to every
    /// host of the stack (their SSH and private addresses) and `trusted`, not to each layer's
    /// clients alone. Default `false`; turning it off removes the table, the unit and the file.
    pub enable: bool,
    /// Who may connect to SSH (port 22 and the host's SSH port): IP addresses or networks,
    /// such as `"203.0.113.0/24"`. Default anywhere, `["0.0.0.0/0", "::/0"]`. The hosts of the
    /// stack always may. A single string is accepted as a one-element list.
    #[serde(deserialize_with = "string_or_list")]
    pub ssh_from: Vec<String>,
    /// IP addresses or networks let in like the hosts of the stack (every service port), such
    /// as a monitoring or backup host. Default none. A single string is accepted as a
    /// one-element list.
    #[serde(deserialize_with = "string_or_list")]
    pub trusted: Vec<String>,
    /// TCP ports open to anyone on every host, for services provision does not manage.
    /// Default none.
    pub extra_tcp_ports: Vec<u16>,
}

impl Default for Firewall {
    fn default() -> Self {
        Firewall {
            enable: false,
            ssh_from: vec!["0.0.0.0/0".to_string(), "::/0".to_string()],
            trusted: Vec::new(),
            extra_tcp_ports: Vec::new(),
        }
    }
}
