//! The stack file's `[stack]`, `[hosts.NAME]` and `[apps.NAME]`: as written (the `*Table`
//! types) and as used (with defaults applied and paths resolved).

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::layer::Layer;

/// The stack file as written, without `[attributes]` (read on its own, merged with the custom
/// JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StackFile {
    pub(crate) stack: StackTable,
    #[serde(default)]
    pub(crate) hosts: Named<HostTable>,
    #[serde(default)]
    pub(crate) apps: Named<AppTable>,
    /// Read separately; listed so that a misspelt `[atributes]` gets a suggestion.
    #[serde(default, rename = "attributes")]
    _attributes: IgnoredAny,
}

/// `[stack]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StackTable {
    /// The stack's name. Required.
    pub(crate) name: String,
    /// The secrets file (`name = "value"`, mode 0600), relative to the stack file.
    /// Default none: secrets come from `PROVISION_SECRET_<NAME>` variables only.
    #[serde(default)]
    pub(crate) secrets: Option<String>,
    /// SSH defaults for every host.
    #[serde(default)]
    pub(crate) ssh: SshTable,
}

/// `[stack.ssh]`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SshTable {
    /// The login user. Default `"root"`; another user needs passwordless sudo.
    pub(crate) user: String,
    /// The SSH port. Default 22.
    pub(crate) port: u16,
    /// A private key file (`~/` is the home directory; relative to the stack file).
    /// Default none: the agent's keys and `~/.ssh/id_*`.
    pub(crate) key: Option<String>,
    /// The known-hosts file, relative to the stack file. Default none:
    /// `~/.ssh/known_hosts`.
    pub(crate) known_hosts: Option<String>,
    /// Use the SSH agent. Default `true`.
    pub(crate) agent: bool,
    /// Seconds to wait for a connection. Default 10.
    pub(crate) connect_timeout: u64,
    /// The most seconds one remote command may run. Default 1800.
    pub(crate) command_timeout: u64,
}

impl Default for SshTable {
    fn default() -> Self {
        SshTable {
            user: "root".to_string(),
            port: 22,
            key: None,
            known_hosts: None,
            agent: true,
            connect_timeout: 10,
            command_timeout: 1800,
        }
    }
}

/// `[hosts.NAME]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostTable {
    /// The address SSH connects to. Required.
    pub(crate) address: String,
    /// The address other hosts reach its services at, when it differs from `address`.
    /// Default none: `address`.
    #[serde(default)]
    pub(crate) private_address: Option<String>,
    /// The SSH port. Default `[stack.ssh] port`.
    #[serde(default)]
    pub(crate) port: Option<u16>,
    /// The SSH user. Default `[stack.ssh] user`.
    #[serde(default)]
    pub(crate) user: Option<String>,
    /// The SSH key. Default `[stack.ssh] key`.
    #[serde(default)]
    pub(crate) key: Option<String>,
    /// What the host does: `lb`, `plone_instances`, `zeoserver`, `shared_blobs`, `solr`,
    /// `celery_broker`, `memcached`, `db_packing`, `postgres`. Required, not empty.
    pub(crate) layers: Vec<Layer>,
}

/// `[apps.NAME]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppTable {
    /// The git repository of the site's buildout (or package). Required.
    pub(crate) repository: String,
    /// A branch, tag or commit. Default none: the repository's default branch.
    #[serde(default)]
    pub(crate) revision: Option<String>,
    /// `buildout` or `pip`. Default `buildout`.
    #[serde(default)]
    pub(crate) kind: AppKind,
    /// Where releases live (`releases/`, `current`, `shared/`). Default `/srv/www/<name>`.
    #[serde(default)]
    pub(crate) deploy_to: Option<String>,
}

/// Tables whose keys are names chosen by the user, in the order written.
#[derive(Debug)]
pub(crate) struct Named<T>(pub(crate) Vec<(String, T)>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NamedVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for NamedVisitor<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, T>()? {
                    out.push((name, value));
                }
                Ok(Named(out))
            }
        }
        d.deserialize_map(NamedVisitor(PhantomData))
    }
}

/// How an app is built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    /// zc.buildout: bootstrap, then `bin/buildout -c deploy.cfg`.
    #[default]
    Buildout,
    /// pip: `pip install` of the repository (and its requirements) into a virtualenv.
    Pip,
}

impl AppKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::Buildout => "buildout",
            AppKind::Pip => "pip",
        }
    }
}

impl fmt::Display for AppKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SSH settings every host starts from (`[stack.ssh]`), with paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshDefaults {
    /// The login user. Default `root`; any other user needs passwordless sudo.
    pub user: String,
    /// Default 22.
    pub port: u16,
    /// A private key file (`~/` is the home directory, relative paths are relative to the
    /// stack file). Default none: the agent's keys and `~/.ssh/id_*`.
    pub key: Option<PathBuf>,
    /// The known-hosts file (relative paths are relative to the stack file). Default
    /// `~/.ssh/known_hosts`.
    pub known_hosts: PathBuf,
    /// Use the SSH agent. Default `true`.
    pub agent: bool,
    /// Seconds to wait for a connection. Default 10.
    pub connect_timeout: u64,
    /// The most seconds one remote command may run. Default 1800.
    pub command_timeout: u64,
}

impl SshDefaults {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout)
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout)
    }
}

/// A host of the stack (`[hosts.NAME]`), with the SSH defaults applied. (The connection to it
/// is a [`crate::host::Host`].)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// The name of its `[hosts.NAME]` table.
    pub name: String,
    /// The address SSH connects to.
    pub address: String,
    /// The address the other hosts use for its services, when it differs from `address`
    /// (a public SSH address, a private service network). Default none.
    pub private_address: Option<String>,
    /// The SSH port (the host's `port`, else `[stack.ssh] port`).
    pub port: u16,
    /// The SSH user (the host's `user`, else `[stack.ssh] user`).
    pub user: String,
    /// The SSH key (the host's `key`, else `[stack.ssh] key`).
    pub key: Option<PathBuf>,
    /// Its layers, in the order written, without repeats.
    pub layers: Vec<Layer>,
}

impl HostSpec {
    pub fn has_layer(&self, layer: Layer) -> bool {
        self.layers.contains(&layer)
    }

    /// The address other hosts reach its services at: `private_address`, else `address`.
    pub fn service_address(&self) -> &str {
        self.private_address.as_deref().unwrap_or(&self.address)
    }
}

/// An app deployed by the stack (`[apps.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub name: String,
    /// The git repository.
    pub repository: String,
    /// A branch, tag or commit. Default none: the repository's default branch.
    pub revision: Option<String>,
    pub kind: AppKind,
    /// `attributes.deploy.<name>.deploy_to`, else `[apps.NAME] deploy_to`, else
    /// `/srv/www/<name>` (as on OpsWorks).
    pub deploy_to: PathBuf,
}

/// `~/x` → `$HOME/x`; a relative path → relative to `base_dir`.
pub(crate) fn resolve_path(base_dir: &Path, path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}
