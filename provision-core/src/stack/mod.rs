//! The stack model: one TOML file for the whole site, optionally with an OpsWorks Custom JSON
//! merged over its attributes.
//!
//! ```toml
//! [stack]
//! name = "demo"
//! secrets = "secrets.toml"          # optional, relative to this file, mode 0600
//! [stack.ssh]                       # defaults for every host
//! user = "root"
//! port = 22
//!
//! [hosts.app1]
//! address = "10.0.0.11"
//! layers = ["plone_instances"]
//!
//! [apps.plone]
//! repository = "https://github.com/example/site.git"
//! revision = "main"
//! kind = "buildout"                 # or "pip"
//!
//! [attributes.plone_instances]      # the cookbook's Custom JSON keys, unchanged
//! per_cpu = 2
//! ```
//!
//! [`Stack::load`] reads and checks everything at once: syntax, unknown keys (with the nearest
//! valid one), types, and values that cannot work together (a layer that needs another layer
//! no host has). Errors name file:line:column. Secrets come from the secrets file and the
//! environment ([`Secrets`]); discovery (the ZEO server, the broker, every HAProxy backend)
//! is computed from the stack alone ([`Stack::zeo_address`], [`Stack::haproxy_backends`], ...).

mod attributes;
mod de;
mod discovery;
mod error;
mod layer;
mod locate;
mod merge;
mod model;
mod reference;
mod secrets;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use attributes::{
    Apt, Attributes, BackupS3, Broker, CacheArchive, Client, DbType, DeployApp, DeployDatabase,
    EbsSnapshots, Firewall, Haproxy, InitCommand, NewRelic, Newrelic, NfsServer, NginxPlone,
    Papertrail, PloneBlobs, PloneInstances, PloneSolr, PloneZeoserver, Redis, RelStorage,
    RelStorageDb, S3fsFuse, S3fsMount, System, Tmpdir, Traceview, UnattendedUpgrades, VarnishPlone,
    Zeo, ZeoMode, is_site_id,
};
pub use discovery::{Backend, DiscoveryError, Endpoint};
pub use error::{Location, Problem, ProblemKind, StackError, nearest};
pub use layer::{Layer, UnknownLayer};
pub use model::{App, AppKind, HostSpec, SshDefaults};
pub use reference::{REFERENCE_COMMAND, reference_markdown};
pub use secrets::{MASK, MASK_MIN_LEN, SECRET_ENV_PREFIX, SecretString, Secrets};

use locate::{Part, Seg, Sources};
use model::{StackFile, resolve_path};
use secrets::first_line;

/// A checked stack: its hosts, apps and attributes, ready to provision.
#[derive(Clone)]
pub struct Stack {
    /// `[stack] name`.
    pub name: String,
    /// `[stack.ssh]`, the SSH settings every host starts from.
    pub ssh: SshDefaults,
    /// The hosts, in the order of the stack file.
    pub hosts: Vec<HostSpec>,
    /// The apps, in the order of the stack file.
    pub apps: Vec<App>,
    /// `[attributes]`, with the custom JSON merged over it, over the defaults; secret
    /// attributes filled from [`Stack::secrets`].
    pub attributes: Attributes,
    /// The directory of the stack file; relative paths in it are relative to this.
    pub base_dir: PathBuf,
    /// `[stack] secrets`, resolved.
    pub secrets_file: Option<PathBuf>,
    /// The secrets ([`Stack::load`] reads the secrets file and the environment;
    /// [`Stack::parse`] only registers the secrets written inline in the attributes).
    pub secrets: Secrets,
    sources: Sources,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("name", &self.name)
            .field("ssh", &self.ssh)
            .field("hosts", &self.hosts)
            .field("apps", &self.apps)
            .field("attributes", &self.attributes)
            .field("base_dir", &self.base_dir)
            .field("secrets_file", &self.secrets_file)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// Reads the stack file, merges the custom JSON (if any) over its attributes, checks
    /// everything, and reads the secrets file and the `PROVISION_SECRET_*` environment.
    pub fn load(path: &Path, custom_json: Option<&Path>) -> Result<Stack, StackError> {
        let text = read("stack file", path)?;
        let custom = match custom_json {
            Some(p) => Some((read("custom JSON", p)?, p.display().to_string())),
            None => None,
        };
        let name = path.display().to_string();
        let custom_ref = custom
            .as_ref()
            .map(|(text, name)| (text.as_str(), name.as_str()));
        let mut stack = Stack::build(&text, &name, custom_ref, base_dir_of(path))?;
        let secrets = match &stack.secrets_file {
            Some(file) => {
                let named_at = stack
                    .sources
                    .locate(&[Seg::key("stack"), Seg::key("secrets")], Part::Value);
                Secrets::load(file, named_at.location)?
            }
            None => Secrets::new(),
        };
        stack.set_secrets(secrets.with_env());
        Ok(stack)
    }

    /// Parses and checks a stack from text: `toml_name` names the stack file in messages (and
    /// its directory is the base of relative paths); `custom` is the custom JSON's text and
    /// name. Reads no file and no environment: see [`Stack::set_secrets`].
    pub fn parse(
        toml_text: &str,
        toml_name: &str,
        custom: Option<(&str, &str)>,
    ) -> Result<Stack, StackError> {
        Stack::build(
            toml_text,
            toml_name,
            custom,
            base_dir_of(Path::new(toml_name)),
        )
    }

    /// Replaces the secrets, and fills the secret attributes from them.
    pub fn set_secrets(&mut self, secrets: Secrets) {
        self.secrets = secrets;
        self.secrets.bind(&mut self.attributes);
    }

    /// `[stack] name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `[stack.ssh]`, resolved.
    pub fn ssh(&self) -> &SshDefaults {
        &self.ssh
    }

    /// The hosts, in the order of the stack file.
    pub fn hosts(&self) -> &[HostSpec] {
        &self.hosts
    }

    /// The apps, in the order of the stack file.
    pub fn apps(&self) -> &[App] {
        &self.apps
    }

    /// The merged attributes.
    pub fn attributes(&self) -> &Attributes {
        &self.attributes
    }

    /// The directory of the stack file.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// The secrets (see [`Stack::load`] and [`Stack::set_secrets`]).
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Plone clients on a `plone_instances` host with `cpus` CPUs
    /// ([`PloneInstances::clients_per_host`]).
    pub fn clients_per_host(&self, cpus: u32) -> u32 {
        self.attributes.plone_instances.clients_per_host(cpus)
    }

    /// The hosts that have `layer`, in the order of the stack file.
    pub fn hosts_with(&self, layer: Layer) -> Vec<&HostSpec> {
        self.hosts.iter().filter(|h| h.has_layer(layer)).collect()
    }

    /// The http(s) URLs the hosts download from besides the package registries: Solr's
    /// archive (with a `solr` host), app repositories given as URLs, buildout cache
    /// archives, s3fs endpoints. The sandbox lets its hosts reach these.
    pub fn download_urls(&self) -> Vec<String> {
        let a = &self.attributes;
        let mut urls = Vec::new();
        if !self.hosts_with(Layer::Solr).is_empty() {
            urls.push(a.plone_solr.archive_url());
        }
        for app in &self.apps {
            urls.push(app.repository.clone());
            urls.extend(
                self.deploy_settings(&app.name)
                    .buildout_cache_archives
                    .iter()
                    .map(|archive| archive.url.clone()),
            );
        }
        urls.extend(a.s3fs_fuse.mounts.iter().filter_map(|m| m.url.clone()));
        urls.retain(|url| url.starts_with("http://") || url.starts_with("https://"));
        urls.sort();
        urls.dedup();
        urls
    }

    /// The host of that name.
    pub fn host(&self, name: &str) -> Option<&HostSpec> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The app of that name.
    pub fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// The app a layer deploys: the one named by `plone_instances.app_name`,
    /// `plone_zeoserver.app_name` or `plone_solr.app_name`, or the only app of the stack.
    /// Layers that deploy no app have none.
    pub fn app_for(&self, layer: Layer) -> Option<&App> {
        let name = app_name_attribute(&self.attributes, layer)?.1;
        self.app(name).or(match self.apps.as_slice() {
            [only] => Some(only),
            _ => None,
        })
    }

    /// The deploy settings of an app (`attributes.deploy.<app>`, or the defaults).
    pub fn deploy_settings(&self, app: &str) -> &DeployApp {
        self.attributes.deploy_app(app)
    }

    /// Where an attribute (`plone_instances.per_cpu`) is written, if it is: the custom JSON
    /// first, since it wins. For error messages of other modules.
    pub fn attribute_location(&self, dotted: &str) -> Option<Location> {
        self.sources.attribute(dotted).location
    }

    fn build(
        toml_text: &str,
        toml_name: &str,
        custom: Option<(&str, &str)>,
        base_dir: PathBuf,
    ) -> Result<Stack, StackError> {
        let doc = locate::parse_document(toml_text).map_err(|e| {
            let location = e.span.map(|s| location_at(toml_text, toml_name, s.start));
            syntax("TOML", toml_name, first_line(&e.message), location)
        })?;
        let (mut file_value, toml_map) = locate::toml_to_json(&doc, toml_name);

        let (custom_value, json_map) = match custom {
            Some((text, name)) => {
                let value: Value = serde_json::from_str(text).map_err(|e| {
                    let location = Location {
                        file: name.to_string(),
                        line: e.line(),
                        column: e.column(),
                    };
                    syntax("JSON", name, json_message(&e), Some(location))
                })?;
                if !value.is_object() {
                    let problem = Problem {
                        kind: ProblemKind::Impossible {
                            message: format!(
                                "the custom JSON {name} must be an object (`{{ \"plone_instances\": {{ ... }} }}`), like the Custom JSON of an OpsWorks stack"
                            ),
                        },
                        location: None,
                    };
                    return Err(StackError::invalid(vec![problem]));
                }
                (Some(value), Some(locate::scan_json(text, name)))
            }
            None => (None, None),
        };
        let sources = Sources {
            toml: toml_map,
            json: json_map,
        };

        let mut attributes_value = match &mut file_value {
            Value::Object(root) => root.shift_remove("attributes"),
            _ => None,
        }
        .unwrap_or_else(|| Value::Object(Map::new()));
        if let Some(custom) = custom_value {
            merge::deep_merge(&mut attributes_value, custom);
        }

        let file = de::collect::<StackFile>(file_value, &[]);
        let attributes = de::collect::<Attributes>(attributes_value, &[Seg::key("attributes")]);
        let (file, attributes) = match (file, attributes) {
            (Ok(file), Ok(attributes)) => (file, attributes),
            (file, attributes) => {
                let errors = file.err().into_iter().chain(attributes.err()).flatten();
                let problems = errors.map(|e| de::to_problem(&e, &sources)).collect();
                return Err(StackError::invalid(problems));
            }
        };

        let mut stack = Stack::resolve(file, attributes, base_dir, sources);
        let problems = validate::validate(&stack);
        if !problems.is_empty() {
            return Err(StackError::invalid(problems));
        }
        let inline_only = Secrets::new();
        stack.set_secrets(inline_only);
        Ok(stack)
    }

    fn resolve(
        file: StackFile,
        attributes: Attributes,
        base_dir: PathBuf,
        sources: Sources,
    ) -> Stack {
        let spec = file.stack.ssh;
        let ssh = SshDefaults {
            user: spec.user,
            port: spec.port,
            key: spec.key.as_deref().map(|k| resolve_path(&base_dir, k)),
            known_hosts: resolve_path(
                &base_dir,
                spec.known_hosts.as_deref().unwrap_or("~/.ssh/known_hosts"),
            ),
            agent: spec.agent,
            connect_timeout: spec.connect_timeout,
            command_timeout: spec.command_timeout,
        };
        let hosts = file
            .hosts
            .0
            .into_iter()
            .map(|(name, spec)| {
                let mut layers = Vec::new();
                for layer in spec.layers {
                    if !layers.contains(&layer) {
                        layers.push(layer);
                    }
                }
                HostSpec {
                    name,
                    address: spec.address,
                    private_address: spec.private_address,
                    port: spec.port.unwrap_or(ssh.port),
                    user: spec.user.unwrap_or_else(|| ssh.user.clone()),
                    key: spec
                        .key
                        .as_deref()
                        .map(|k| resolve_path(&base_dir, k))
                        .or_else(|| ssh.key.clone()),
                    layers,
                }
            })
            .collect();
        let apps = file
            .apps
            .0
            .into_iter()
            .map(|(name, spec)| {
                let deploy_to = attributes
                    .deploy
                    .get(&name)
                    .and_then(|d| d.deploy_to.clone())
                    .or(spec.deploy_to)
                    .unwrap_or_else(|| format!("/srv/www/{name}"));
                App {
                    repository: spec.repository,
                    revision: spec.revision,
                    kind: spec.kind,
                    deploy_to: PathBuf::from(deploy_to),
                    name,
                }
            })
            .collect();
        let secrets_file = file
            .stack
            .secrets
            .as_deref()
            .map(|s| resolve_path(&base_dir, s));
        Stack {
            name: file.stack.name,
            ssh,
            hosts,
            apps,
            attributes,
            base_dir,
            secrets_file,
            secrets: Secrets::new(),
            sources,
        }
    }
}

/// The attribute that names the app of a layer, and its value.
pub(crate) fn app_name_attribute(
    attributes: &Attributes,
    layer: Layer,
) -> Option<(&'static str, &str)> {
    match layer {
        Layer::PloneInstances => Some((
            "plone_instances.app_name",
            &attributes.plone_instances.app_name,
        )),
        Layer::Zeoserver => Some((
            "plone_zeoserver.app_name",
            &attributes.plone_zeoserver.app_name,
        )),
        Layer::Solr => Some(("plone_solr.app_name", &attributes.plone_solr.app_name)),
        _ => None,
    }
}

fn read(what: &'static str, path: &Path) -> Result<String, StackError> {
    std::fs::read_to_string(path).map_err(|source| StackError::Read {
        what,
        path: path.to_path_buf(),
        named_at: None,
        source,
    })
}

fn base_dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn location_at(text: &str, file: &str, offset: usize) -> Location {
    let pos = locate::LineIndex::new(text).pos(offset);
    Location {
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
    }
}

fn syntax(
    format: &'static str,
    file: &str,
    message: String,
    location: Option<Location>,
) -> StackError {
    StackError::invalid(vec![Problem {
        kind: ProblemKind::Syntax {
            format,
            file: file.to_string(),
            message,
        },
        location,
    }])
}

/// serde_json's message without its " at line L column C" (we print the location ourselves).
fn json_message(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    }
}
