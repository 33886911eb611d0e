//! `deploy.<app>`: per-app deploy settings (the cookbook's `deploy[app]` keys).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{opt_string_or_number, string_or_list};
use crate::stack::secrets::SecretString;

/// The shared directories every buildout release links in: `shared/<dir>` → `<release>/<dir>`.
/// The cookbook also shared `parts`; we do not: zope2instance rewrites its part on every
/// build, so a shared `parts` let a new build (or a failed one) change the running release.
const BUILDOUT_SHARED_DIRS: [&str; 4] = ["eggs", "downloads", "extends", "var"];

/// `deploy.<app>`: how an app is built and deployed. The `buildout_*` keys override the
/// cookbook's `deploy_buildout` defaults, which are the defaults here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeployApp {
    /// Files `deploy.cfg` extends after `plone_instances.base_config` (and
    /// `relstorage.config`), such as `["cfg/sources.cfg"]`. Default none.
    #[serde(deserialize_with = "string_or_list")]
    pub buildout_extends: Vec<String>,
    /// Extra buildout parts to build. Default none.
    #[serde(deserialize_with = "string_or_list")]
    pub buildout_parts_to_include: Vec<String>,
    /// Raw buildout configuration appended to `deploy.cfg`. Default `""`.
    pub buildout_additional_config: String,
    /// Extra programs to run from the release, besides the clients. Default none.
    pub buildout_init_commands: Vec<InitCommand>,
    /// The cookbook's process manager for the programs (`supervisor` or `upstart`). Default
    /// `"supervisor"`; ignored: provision runs every program as a systemd unit.
    pub buildout_init_type: String,
    /// Tarballs (such as an egg cache) unpacked into the app before the first build.
    /// Default none.
    pub buildout_cache_archives: Vec<CacheArchive>,
    /// The name of the generated buildout file. Default `"deploy.cfg"`.
    pub buildout_config: String,
    /// The cookbook's ERB template for `deploy.cfg` (default `deploy.cfg.erb`). Ignored:
    /// provision renders its own `deploy.cfg`.
    pub buildout_config_template: Option<String>,
    /// The cookbook holding `buildout_config_template`. Ignored.
    pub buildout_config_cookbook: Option<String>,
    /// Extra arguments for `bin/buildout`, such as `"-N"`. Default `""`.
    pub buildout_flags: String,
    /// The zc.buildout version for bootstrap (`--buildout-version`). Default `""`: the
    /// bootstrap's choice.
    pub buildout_version: String,
    /// Extra arguments for the bootstrap. Default `""`.
    pub buildout_bootstrap_params: String,
    /// A supervisor part of the buildout that runs the programs instead of us. Default none.
    pub buildout_supervisor_part: Option<String>,
    /// Add to the parts of the extended files (`parts +=`); `false` replaces them
    /// (`parts =`). Default `true`.
    pub buildout_inherit_parts: bool,
    /// Run buildout with `-vvv`. Default `false`.
    pub buildout_debug: bool,
    /// Run buildout on every deploy, even when `deploy.cfg` did not change. Default `false`.
    /// Also accepted as `always_buildout_on_deploy` (the training text's name).
    #[serde(alias = "always_buildout_on_deploy")]
    pub always_build_on_deploy: bool,
    /// Releases kept in `releases/` (never the live or the previous one). Default 5.
    pub keep_releases: u32,
    /// OS packages installed before the first build. Default none.
    #[serde(deserialize_with = "string_or_list")]
    pub os_packages: Vec<String>,
    /// Python packages pip-installs into the app's virtualenv. Default none.
    #[serde(deserialize_with = "string_or_list")]
    pub packages: Vec<String>,
    /// Ruby gems the cookbook installed. Default none; ignored.
    #[serde(deserialize_with = "string_or_list")]
    pub ruby_gems: Vec<String>,
    /// Extra options for creating the virtualenv. Default `""` (the cookbook's
    /// `--no-site-packages` is the default of Python 3's venv, which rejects the flag).
    pub venv_options: String,
    /// The Python version of the virtualenv, such as `"3.12"`. Default none: the host's
    /// `python3`.
    #[serde(deserialize_with = "opt_string_or_number")]
    pub python_major_version: Option<String>,
    /// Environment variables of the app's programs (clients, Celery), sorted by name in the
    /// generated files. `TMP`, `TEMP` and Ruby/Rails/Rack variables are left out of the
    /// clients' `environment-vars`, as the cookbook does. Default none.
    pub environment: BTreeMap<String, String>,
    /// Extra shared directories linked into each release: path in `shared/` → path in the
    /// release. Added to the buildout's `eggs`, `downloads`, `extends` and `var` (`parts`
    /// belongs to each release; add `src = "src"` for mr.developer checkouts). Default none.
    pub symlink_before_migrate: BTreeMap<String, String>,
    /// Extra release directories removed before the shared ones are linked in. Default none.
    #[serde(deserialize_with = "string_or_list")]
    pub purge_before_symlink: Vec<String>,
    /// Extra directories created in each release before linking. Default none.
    #[serde(deserialize_with = "string_or_list")]
    pub create_dirs_before_symlink: Vec<String>,
    /// Where the app is deployed; overrides `[apps.NAME].deploy_to` (the OpsWorks App field).
    /// Default none: `/srv/www/<app>`.
    pub deploy_to: Option<String>,
    /// The user that owns the app and runs its programs. Default `"plone"` (the cookbook's
    /// was `deploy`).
    pub user: String,
    /// The app's group. Default `"plone"` (the cookbook's was `www-data`).
    pub group: String,
    /// The app's domains (the OpsWorks App field): HTTPS virtual hosts. Default none.
    #[serde(deserialize_with = "string_or_list")]
    pub domains: Vec<String>,
    /// The app's database (the OpsWorks App data source): the RelStorage connection when
    /// `plone_instances.relstorage.db` names none. Default none.
    pub database: Option<DeployDatabase>,
    /// Serve the app's domains over HTTPS with the certificate below (the OpsWorks App
    /// field). Default `false`.
    pub ssl_support: bool,
    /// The PEM certificate. Default none.
    pub ssl_certificate: Option<String>,
    /// The PEM private key. Default none; better kept in the secrets file as
    /// `deploy_<app>_ssl_certificate_key`.
    pub ssl_certificate_key: Option<SecretString>,
    /// The PEM chain of the certificate authority. Default none.
    pub ssl_certificate_ca: Option<String>,
    /// Put the commit's git submodules (recursively) into each release. Default `true`. Hosts
    /// cloning the repository check them out in `shared/checkout` (relative submodule URLs
    /// resolve against the app's repository URL); a repository pushed from the controller
    /// sends them from the local checkout, which must have them (`git submodule update --init
    /// --recursive`).
    pub enable_submodules: bool,
    /// Clone with `--depth 1`. Default `true`. Ignored: the hosts keep a mirror of the
    /// repository and fetch only what changed, which a shallow clone cannot serve.
    pub shallow_clone: bool,
}

impl Default for DeployApp {
    fn default() -> Self {
        DeployApp {
            buildout_extends: Vec::new(),
            buildout_parts_to_include: Vec::new(),
            buildout_additional_config: String::new(),
            buildout_init_commands: Vec::new(),
            buildout_init_type: "supervisor".to_string(),
            buildout_cache_archives: Vec::new(),
            buildout_config: "deploy.cfg".to_string(),
            buildout_config_template: None,
            buildout_config_cookbook: None,
            buildout_flags: String::new(),
            buildout_version: String::new(),
            buildout_bootstrap_params: String::new(),
            buildout_supervisor_part: None,
            buildout_inherit_parts: true,
            buildout_debug: false,
            always_build_on_deploy: false,
            keep_releases: 5,
            os_packages: Vec::new(),
            packages: Vec::new(),
            ruby_gems: Vec::new(),
            venv_options: String::new(),
            python_major_version: None,
            environment: BTreeMap::new(),
            symlink_before_migrate: BTreeMap::new(),
            purge_before_symlink: Vec::new(),
            create_dirs_before_symlink: Vec::new(),
            deploy_to: None,
            user: "plone".to_string(),
            group: "plone".to_string(),
            domains: Vec::new(),
            database: None,
            ssl_support: false,
            ssl_certificate: None,
            ssl_certificate_key: None,
            ssl_certificate_ca: None,
            enable_submodules: true,
            shallow_clone: true,
        }
    }
}

impl DeployApp {
    /// Every shared directory linked into a buildout release (`shared/<key>` →
    /// `<release>/<value>`): the buildout's own, then `symlink_before_migrate`.
    pub fn shared_links(&self) -> BTreeMap<String, String> {
        let mut links: BTreeMap<String, String> = BUILDOUT_SHARED_DIRS
            .iter()
            .map(|d| (d.to_string(), d.to_string()))
            .collect();
        links.extend(
            self.symlink_before_migrate
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        links
    }

    /// Release directories removed before linking: the buildout's shared ones, then
    /// `purge_before_symlink`.
    pub fn purged_dirs(&self) -> Vec<String> {
        union(&BUILDOUT_SHARED_DIRS, &self.purge_before_symlink)
    }

    /// Directories created in a release before linking: the buildout's shared ones, then
    /// `create_dirs_before_symlink`.
    pub fn created_dirs(&self) -> Vec<String> {
        union(&BUILDOUT_SHARED_DIRS, &self.create_dirs_before_symlink)
    }
}

fn union(defaults: &[&str], extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = defaults.iter().map(|d| d.to_string()).collect();
    for dir in extra {
        if !out.contains(dir) {
            out.push(dir.clone());
        }
    }
    out
}

/// One entry of `deploy.<app>.buildout_init_commands`: a program run from the release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InitCommand {
    /// The program's name. Required.
    pub name: String,
    /// The command, relative to the release (such as `bin/instance`). Required.
    pub cmd: String,
    /// Its arguments. Default `""`.
    #[serde(default)]
    pub args: String,
    /// Seconds to wait before restarting it. Default 0.
    #[serde(default)]
    pub delay: u64,
    /// The cookbook's process manager for this program. Ignored: always a systemd unit.
    #[serde(default)]
    pub init_type: Option<String>,
    /// A supervisor event listener (such as memmon). Default `false`.
    #[serde(default)]
    pub eventlistener: bool,
    /// The events the listener subscribes to, such as `["TICK_60"]`. Default none.
    #[serde(default, deserialize_with = "string_or_list")]
    pub eventlistener_events: Vec<String>,
}

/// One entry of `deploy.<app>.buildout_cache_archives`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheArchive {
    /// The tarball's URL. Required.
    pub url: String,
    /// Where to unpack it, relative to the app's `deploy_to` (such as `shared/eggs`).
    /// Required.
    pub path: String,
    /// HTTP basic-auth user. Default none.
    #[serde(default)]
    pub user: Option<String>,
    /// HTTP basic-auth password. Default none.
    #[serde(default)]
    pub password: Option<SecretString>,
    /// Unpack again even when the target is not empty. Default `false`.
    #[serde(default)]
    pub purge: bool,
}

/// `deploy.<app>.database`: the OpsWorks App data source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeployDatabase {
    /// The database host.
    pub host: Option<String>,
    /// The database port.
    pub port: Option<u16>,
    /// `postgresql`, `mysql` or `oracle`.
    pub adapter: Option<String>,
    /// The database user.
    pub username: Option<String>,
    /// The database password; better kept in the secrets file as
    /// `deploy_<app>_database_password`.
    pub password: Option<SecretString>,
    /// The database name.
    pub database: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_links_add_to_the_buildout_defaults() {
        let mut app = DeployApp::default();
        app.symlink_before_migrate
            .insert("src".into(), "src".into());
        let links = app.shared_links();
        assert_eq!(
            links.keys().collect::<Vec<_>>(),
            ["downloads", "eggs", "extends", "src", "var"]
        );
        app.purge_before_symlink = vec!["var".into(), "tmp".into()];
        assert_eq!(
            app.purged_dirs(),
            ["eggs", "downloads", "extends", "var", "tmp"]
        );
    }
}
