//! The plain inputs of this crate. The CLI maps the stack (`plone_instances.*`, `deploy.<app>.*`,
//! `[apps.NAME]`, the database layer's storage text) onto them; nothing here reads the stack.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::PloneError;

/// One Plone app on one instance host: its clients, how they run, how releases are built.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceSettings {
    /// The app's name (`[apps.NAME]`); the clients are `plone-<app>@<client>` units.
    pub app: String,
    /// Where releases live: `<deploy_to>/{releases,shared,current,previous}`.
    pub deploy_to: String,
    /// The user that owns the app, builds it and runs the clients. Default `plone`.
    pub user: String,
    pub group: String,
    /// The Python that makes the virtualenvs. Default `/usr/bin/python3`.
    pub python: String,
    /// The clients of this host, in order: client1 on 8081, ...
    pub clients: Vec<ClientSettings>,
    /// The address the clients listen on (the host's private address). `None`: all addresses
    /// (the cookbook's bare port).
    pub http_host: Option<String>,
    /// `zodb-cache-size` (objects); `None`: the recipe's 30000.
    pub zodb_cache_size: Option<u64>,
    /// Worker threads per client (`threads`); `None`: 2, as the cookbook.
    pub zserver_threads: Option<u32>,
    /// A persistent ZEO cache per client (`zeo-client-client = zeoclient-N`). Only meaningful
    /// with ZEO: set it false for RelStorage.
    pub persistent_cache: bool,
    /// `plone_instances.shared_blobs`: false writes `shared-blob = off`.
    pub shared_blobs: bool,
    /// `plone_blobs.blob_dir`: made at setup (mode 0700) and, with shared blobs, linked as
    /// `shared/var/blobstorage`; also the `blob-storage` option.
    pub blob_dir: Option<String>,
    /// Environment of the clients (`deploy.<app>.environment`). Rendered sorted; `TMP`, `TEMP`
    /// and Ruby/Rails/Rack variables are dropped, as the cookbook does.
    pub environment: BTreeMap<String, String>,
    /// More environment for the clients that holds passwords (the Celery broker's URL): only
    /// in the clients' environment file (root:group, 0640), never in deploy.cfg or zope.conf,
    /// which any user of the host can read.
    pub private_environment: BTreeMap<String, String>,
    /// Send the event log to syslog (`plone_instances.syslog_facility` / `syslog_level`).
    pub syslog: Option<Syslog>,
    /// The id of the Plone site (health checks, VHM).
    pub site_id: String,
    /// Extra OS packages (`deploy.<app>.os_packages`; `libpq-dev` for RelStorage, ...).
    pub os_packages: Vec<String>,
    /// Seconds systemd waits for a client to stop before killing it.
    pub stop_timeout: u32,
    /// How the app is built.
    pub kind: AppKind,
    /// How releases are kept.
    pub deploy: DeploySettings,
}

/// One client process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientSettings {
    /// `client1`, ...: the buildout part, the unit instance, the config directory.
    pub name: String,
    pub port: u16,
    /// The storage section of this client's `zope.conf` (pip kind): the database layer's
    /// `<zeoclient>` (with this client's own cache name), `<relstorage>` or `<filestorage>`,
    /// unindented. Unused by the buildout kind (see [`BuildoutSettings::storage_options`]).
    pub storage_section: String,
}

impl ClientSettings {
    /// The persistent ZEO cache name of client `clientN` of the ZEO server at `zeo_address`
    /// ([`provision_zeo::client::cache_name`]).
    pub fn cache_name(&self, zeo_address: &str) -> String {
        let number = self.name.trim_start_matches(|c: char| !c.is_ascii_digit());
        provision_zeo::client::cache_name(number, &[zeo_address.to_string()])
    }
}

/// Event log to syslog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Syslog {
    /// `local3`, `user`, ...
    pub facility: String,
    /// `INFO`, `WARNING`, ...
    pub level: String,
}

/// How the app is built from its repository.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AppKind {
    /// zc.buildout with a generated `deploy.cfg` (the cookbook's way).
    Buildout(BuildoutSettings),
    /// A virtualenv per release from the repository's requirements, with a generated
    /// `zope.conf` and `zope.ini` per client (Plone 6 style).
    Pip(PipSettings),
}

/// The buildout kind: what `deploy.cfg` says and how buildout runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildoutSettings {
    /// The generated file's name. Default `deploy.cfg`.
    pub config_name: String,
    /// What `deploy.cfg` extends, in order: `plone_instances.base_config`, the RelStorage
    /// config when on, then `deploy.<app>.buildout_extends`.
    pub extends: Vec<String>,
    /// Parts to build besides the clients (which are always added).
    pub parts_to_include: Vec<String>,
    /// `parts +=` (true) or `parts =`.
    pub inherit_parts: bool,
    /// Raw configuration appended to `deploy.cfg`.
    pub additional_config: String,
    /// The storage options of `[client1]`, one `option = value` per line: the database layer's
    /// buildout form (`zeo-client = on` + `zeo-address = ...`, or `rel-storage = ...`). They
    /// win over the options generated here. Empty: the repository's config defines storage.
    pub storage_options: String,
    /// The ZEO server as `host:port`: `[zeo-host] address` (and the cookbook's
    /// `[zeoserver] address = ${zeo-host:address}`), for configs that read it.
    pub zeo_address: Option<String>,
    /// Extra arguments of `bin/buildout`, split on whitespace (`-N`).
    pub flags: String,
    /// Run buildout with `-vvv`.
    pub debug: bool,
    /// The zc.buildout version installed in `shared/env`. `None`: the newest.
    pub buildout_version: Option<String>,
    /// Extra arguments of the bootstrap (`buildout bootstrap`), split on whitespace.
    pub bootstrap_params: String,
}

impl Default for BuildoutSettings {
    fn default() -> Self {
        BuildoutSettings {
            config_name: "deploy.cfg".to_string(),
            extends: vec!["cfg/base.cfg".to_string()],
            parts_to_include: Vec::new(),
            inherit_parts: true,
            additional_config: String::new(),
            storage_options: String::new(),
            zeo_address: None,
            flags: String::new(),
            debug: false,
            buildout_version: None,
            bootstrap_params: String::new(),
        }
    }
}

/// The pip kind: a virtualenv per release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipSettings {
    /// The requirements file of the repository. Default `requirements.txt`.
    pub requirements: String,
    /// The constraints file of the repository, used when it exists. Default `constraints.txt`.
    pub constraints: Option<String>,
    /// Extra arguments of `pip install`, split on whitespace.
    pub pip_args: String,
    /// ZConfig `%import` lines `zope.conf` needs before the storage (`%import relstorage`).
    pub zope_conf_imports: Vec<String>,
    /// Raw lines appended to each `zope.conf`.
    pub zope_conf_additional: String,
}

impl Default for PipSettings {
    fn default() -> Self {
        PipSettings {
            requirements: "requirements.txt".to_string(),
            constraints: Some("constraints.txt".to_string()),
            pip_args: String::new(),
            zope_conf_imports: Vec::new(),
            zope_conf_additional: String::new(),
        }
    }
}

/// How releases are made and kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploySettings {
    /// Built releases kept by `prune_releases` (never the live or the previous one). Default 5.
    pub keep_releases: u32,
    /// Build a new release even when the revision and the generated config are unchanged.
    pub always_build_on_deploy: bool,
    /// Shared directories linked into each release: `shared/<shared>` → `<release>/<release>`.
    /// `parts` is refused: see the crate documentation.
    pub shared_links: Vec<SharedLink>,
    /// Seconds a deploy step waits for another one on the same app to finish.
    pub lock_timeout: u32,
    /// Tarballs (an egg cache) unpacked below `deploy_to` before the first build
    /// (`deploy.<app>.buildout_cache_archives`). Not serialized: it may hold a password.
    #[serde(skip)]
    pub cache_archives: Vec<provision_core::stack::CacheArchive>,
}

/// `shared/<shared>` linked as `<release>/<release_path>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedLink {
    pub shared: String,
    pub release_path: String,
}

impl SharedLink {
    pub fn same(dir: &str) -> SharedLink {
        SharedLink {
            shared: dir.to_string(),
            release_path: dir.to_string(),
        }
    }
}

impl DeploySettings {
    /// The buildout kind's shared directories: eggs, downloads, extends, var.
    pub fn buildout() -> DeploySettings {
        DeploySettings {
            keep_releases: 5,
            always_build_on_deploy: false,
            shared_links: ["eggs", "downloads", "extends", "var"]
                .into_iter()
                .map(SharedLink::same)
                .collect(),
            lock_timeout: 1800,
            cache_archives: Vec::new(),
        }
    }

    /// The pip kind's shared directories: var.
    pub fn pip() -> DeploySettings {
        DeploySettings {
            shared_links: vec![SharedLink::same("var")],
            ..DeploySettings::buildout()
        }
    }
}

/// Environment variables the cookbook leaves out of the clients' environment.
fn dropped_variable(name: &str) -> bool {
    matches!(name, "TMP" | "TEMP")
        || ["RUBY", "RAILS", "RACK"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

impl InstanceSettings {
    /// The cookbook's defaults for an app with these clients, built with buildout.
    pub fn new(app: &str, deploy_to: &str, clients: Vec<ClientSettings>) -> InstanceSettings {
        InstanceSettings {
            app: app.to_string(),
            deploy_to: deploy_to.to_string(),
            user: "plone".to_string(),
            group: "plone".to_string(),
            python: "/usr/bin/python3".to_string(),
            clients,
            http_host: None,
            zodb_cache_size: None,
            zserver_threads: None,
            persistent_cache: true,
            shared_blobs: true,
            blob_dir: None,
            environment: BTreeMap::new(),
            private_environment: BTreeMap::new(),
            syslog: None,
            site_id: "Plone".to_string(),
            os_packages: Vec::new(),
            stop_timeout: 60,
            kind: AppKind::Buildout(BuildoutSettings::default()),
            deploy: DeploySettings::buildout(),
        }
    }

    /// The clients' environment, sorted, without the variables the cookbook drops.
    pub fn client_environment(&self) -> Vec<(&str, &str)> {
        self.environment
            .iter()
            .filter(|(name, _)| !dropped_variable(name))
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect()
    }

    /// Worker threads per client.
    pub fn threads(&self) -> u32 {
        self.zserver_threads.unwrap_or(2)
    }

    /// The clients' environment file, read by systemd: `/etc/provision/plone-<app>.env`.
    pub fn environment_file(&self) -> String {
        format!("/etc/provision/plone-{}.env", self.app)
    }

    /// The systemd template unit, e.g. `plone-site@.service`.
    pub fn unit_template(&self) -> String {
        format!("plone-{}@.service", self.app)
    }

    /// The unit of one client, e.g. `plone-site@client1`.
    pub fn client_unit(&self, client: &str) -> String {
        format!("plone-{}@{client}", self.app)
    }

    pub fn releases_dir(&self) -> String {
        format!("{}/releases", self.deploy_to)
    }

    pub fn shared_dir(&self) -> String {
        format!("{}/shared", self.deploy_to)
    }

    pub fn current_link(&self) -> String {
        format!("{}/current", self.deploy_to)
    }

    /// Check what would make a broken config, unit or script.
    pub fn validate(&self) -> Result<(), PloneError> {
        self.validate_release()?;
        if self.clients.is_empty() {
            return Err(PloneError::invalid(
                "clients",
                "[]",
                "name at least one client",
            ));
        }
        for archive in &self.deploy.cache_archives {
            if !(archive.url.starts_with("https://") || archive.url.starts_with("http://"))
                || archive.url.contains(char::is_whitespace)
            {
                return Err(PloneError::invalid(
                    "buildout_cache_archives url",
                    &archive.url,
                    "must be an http:// or https:// URL without spaces",
                ));
            }
            let path = std::path::Path::new(&archive.path);
            let inside = !archive.path.is_empty()
                && path
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside {
                return Err(PloneError::invalid(
                    "buildout_cache_archives path",
                    &archive.path,
                    "must be a path inside deploy_to, such as shared/eggs",
                ));
            }
        }
        let mut seen = Vec::new();
        for client in &self.clients {
            check_name("client", &client.name)?;
            if client.port == 0 {
                return Err(PloneError::invalid(
                    "client port",
                    &client.name,
                    "port 0 is not a port",
                ));
            }
            for (name, port) in &seen {
                if *name == &client.name || *port == client.port {
                    return Err(PloneError::invalid(
                        "clients",
                        &format!("{} {}", client.name, client.port),
                        "client names and ports must be unique",
                    ));
                }
            }
            seen.push((&client.name, client.port));
        }
        if let AppKind::Pip(_) = &self.kind {
            for client in &self.clients {
                if client.storage_section.trim().is_empty() {
                    return Err(PloneError::invalid(
                        "storage_section",
                        &client.name,
                        "the pip kind needs each client's zope.conf storage section",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Check what the release steps need (everything but the clients): a release of an app
    /// without clients, such as the ZEO server's, is built and switched by the same scripts.
    pub fn validate_release(&self) -> Result<(), PloneError> {
        check_name("app", &self.app)?;
        check_name("user", &self.user)?;
        check_name("group", &self.group)?;
        check_absolute("deploy_to", &self.deploy_to)?;
        check_absolute("python", &self.python)?;
        if self.deploy_to == "/" {
            return Err(PloneError::invalid("deploy_to", "/", "must not be /"));
        }
        if let Some(host) = &self.http_host {
            check_word("http_host", host)?;
        }
        if let Some(dir) = &self.blob_dir {
            check_absolute("blob_dir", dir)?;
        }
        for (name, value) in &self.environment {
            if name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || name.as_bytes()[0].is_ascii_digit()
            {
                return Err(PloneError::invalid(
                    "environment",
                    name,
                    "not a variable name (letters, digits, _)",
                ));
            }
            if value.contains(['\n', '\r']) || value.trim() != value || value.is_empty() {
                return Err(PloneError::invalid(
                    &format!("environment.{name}"),
                    value,
                    "must be one line, not empty, without leading or trailing spaces",
                ));
            }
        }
        if let Some(syslog) = &self.syslog {
            check_word("syslog_facility", &syslog.facility)?;
            check_word("syslog_level", &syslog.level)?;
        }
        for package in &self.os_packages {
            check_word("os_packages", package)?;
        }
        match &self.kind {
            AppKind::Buildout(b) => {
                check_relative("buildout_config", &b.config_name)?;
                for extend in &b.extends {
                    check_word("buildout_extends", extend)?;
                }
                for part in &b.parts_to_include {
                    check_word("buildout_parts_to_include", part)?;
                }
                if let Some(address) = &b.zeo_address {
                    check_word("zeo address", address)?;
                }
                if let Some(version) = &b.buildout_version {
                    check_word("buildout_version", version)?;
                }
            }
            AppKind::Pip(p) => {
                check_relative("requirements", &p.requirements)?;
                if let Some(constraints) = &p.constraints {
                    check_relative("constraints", constraints)?;
                }
            }
        }
        if self.deploy.keep_releases == 0 {
            return Err(PloneError::invalid(
                "keep_releases",
                "0",
                "keep at least the live release",
            ));
        }
        for link in &self.deploy.shared_links {
            check_relative("symlink_before_migrate", &link.shared)?;
            check_relative("symlink_before_migrate", &link.release_path)?;
            if link.release_path == "parts" || link.release_path.starts_with("parts/") {
                return Err(PloneError::invalid(
                    "shared dirs",
                    "parts",
                    "buildout deletes and rewrites a part's directory when it builds it, so a \
                     `parts` shared between releases lets a new build (or a failed one) break \
                     the running release; each release keeps its own parts",
                ));
            }
            if matches!(
                link.release_path.as_str(),
                "bin" | ".provision" | "REVISION" | ".venv"
            ) {
                return Err(PloneError::invalid(
                    "shared dirs",
                    &link.release_path,
                    "belongs to each release",
                ));
            }
        }
        Ok(())
    }
}

/// A name for users, units, parts: letters, digits, `_`, `-`, `.`.
fn check_name(key: &str, value: &str) -> Result<(), PloneError> {
    if value.is_empty()
        || value.starts_with(['-', '.'])
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return Err(PloneError::invalid(
            key,
            value,
            "use letters, digits, `_`, `-` and `.` only",
        ));
    }
    Ok(())
}

/// One word: no whitespace, quotes or shell/config specials that would end up in a config line.
fn check_word(key: &str, value: &str) -> Result<(), PloneError> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '`' | '\\'))
    {
        return Err(PloneError::invalid(key, value, "must be one word"));
    }
    Ok(())
}

fn check_absolute(key: &str, value: &str) -> Result<(), PloneError> {
    check_word(key, value)?;
    if !value.starts_with('/') || value.split('/').any(|part| part == "..") {
        return Err(PloneError::invalid(
            key,
            value,
            "must be an absolute path without `..`",
        ));
    }
    if value.contains('%') {
        return Err(PloneError::invalid(key, value, "must not contain `%`"));
    }
    Ok(())
}

fn check_relative(key: &str, value: &str) -> Result<(), PloneError> {
    check_word(key, value)?;
    if value.starts_with('/')
        || value
            .split('/')
            .any(|part| part.is_empty() || part == ".." || part == ".")
    {
        return Err(PloneError::invalid(
            key,
            value,
            "must be a relative path inside the release, without `..`",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u16) -> ClientSettings {
        ClientSettings {
            name: format!("client{n}"),
            port: 8080 + n,
            storage_section: String::new(),
        }
    }

    #[test]
    fn the_cookbook_drops_tmp_temp_and_ruby_variables() {
        let mut s = InstanceSettings::new("site", "/srv/www/site", vec![client(1)]);
        for name in [
            "TMP",
            "TEMP",
            "RAILS_ENV",
            "RUBY_X",
            "RACK_ENV",
            "ZOPE_X",
            "A",
        ] {
            s.environment.insert(name.to_string(), "1".to_string());
        }
        let names: Vec<&str> = s.client_environment().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["A", "ZOPE_X"]);
    }

    #[test]
    fn cache_names_follow_the_client_number() {
        let name = client(12).cache_name("10.0.0.5:8001");
        assert!(name.starts_with("zeoclient-12-"), "{name}");
        // Another server, another cache.
        assert_ne!(name, client(12).cache_name("10.0.0.6:8001"));
    }

    #[test]
    fn shared_parts_are_refused_with_the_reason() {
        let mut s = InstanceSettings::new("site", "/srv/www/site", vec![client(1)]);
        s.validate().unwrap();
        s.deploy.shared_links.push(SharedLink::same("parts"));
        let error = s.validate().unwrap_err().to_string();
        assert!(error.contains("running release"), "{error}");
    }

    #[test]
    fn duplicate_ports_and_bad_paths_are_refused() {
        let mut s = InstanceSettings::new("site", "/srv/www/site", vec![client(1), client(1)]);
        assert!(s.validate().is_err());
        s.clients = vec![client(1)];
        s.deploy_to = "srv/www".into();
        assert!(s.validate().is_err());
        s.deploy_to = "/srv/www/site".into();
        s.deploy.shared_links.push(SharedLink::same("../etc"));
        assert!(s.validate().is_err());
    }
}
