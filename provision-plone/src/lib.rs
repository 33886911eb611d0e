//! The `plone_instances` layer: Plone clients on an instance host, and Capistrano-style
//! deploys of the site's repository (the cookbook's instances*.rb and opsworks_deploy_python).
//!
//! - [`instances::resources`]: what a host needs before its first release (packages, the app
//!   user, `releases/` and `shared/`, the clients' systemd template unit `plone-<app>@.service`,
//!   log rotation).
//! - [`render_deploy_cfg`] (buildout kind) and [`render_zope_conf`] / [`render_zope_ini`]
//!   (pip kind): the generated configuration, written into each release by the deploy.
//! - [`deploy`]: one shell script per deploy step (prepare a release, switch `current`, roll
//!   back, prune, status, health check, log tail), each run with one round trip and reporting
//!   `@key=value` lines.
//!
//! Releases never share `parts`: plone.recipe.zope2instance (like most recipes) deletes and
//! rewrites its part directory when it installs, so with the cookbook's shared `parts` a new
//! build rewrote the running release's `zope.conf` and a failed one left it deleted. Each
//! release has its own `parts`, `bin` and `develop-eggs`; `eggs`, `downloads` and `extends`
//! (caches that only grow) and `var` (data, logs) are shared. A new release therefore builds
//! every part, from cached eggs: seconds for the Zope example, not minutes.

pub mod buildout;
pub mod deploy;
mod error;
pub mod instances;
pub mod pip;
mod settings;

pub use buildout::render_deploy_cfg;
pub use error::PloneError;
pub use pip::{render_zope_conf, render_zope_ini};
pub use settings::{
    AppKind, BuildoutSettings, ClientSettings, DeploySettings, InstanceSettings, PipSettings,
    SharedLink, Syslog,
};

use provision_core::template::TemplateSource;

macro_rules! template {
    ($file:literal, $example:expr) => {
        TemplateSource {
            name: concat!("plone/", $file),
            source: include_str!(concat!("templates/plone/", $file)),
            example: $example,
        }
    };
}

macro_rules! with_common {
    ($($rest:literal),*) => {
        concat!("{", r#""deploy_to": "/srv/www/site", "user": "plone", "group": "plone", "lock_timeout": 1800"#, $($rest,)* "}")
    };
}

/// Every template of this crate, with an example context.
pub const TEMPLATES: &[TemplateSource] = &[
    template!(
        "deploy.cfg.j2",
        r#"{"app": "site", "extends": ["cfg/base.cfg", "cfg/sources.cfg"], "inherit_parts": true, "parts": ["client1", "client2", "celery"], "zeo_address": "10.0.0.5:8001", "clients": [{"name": "client1", "http_address": "8081", "options": ["zeo-client-client = zeoclient-1", "zodb-cache-size = 30000", "threads = 2", "http-fast-listen = off", "environment-vars +=\n    PYTHON_EGG_CACHE /srv/www/site/shared/eggs"]}, {"name": "client2", "http_address": "8082", "options": ["zeo-client-client = zeoclient-2"]}], "additional_config": "[celery]\nbroker-host = 10.0.0.7"}"#
    ),
    template!(
        "client.service.j2",
        r#"{"app": "site", "unit_prefix": "plone-site", "deploy_to": "/srv/www/site", "user": "plone", "group": "plone", "environment_file": "/etc/provision/plone-site.env", "exec_start": "/srv/www/site/current/bin/%i console", "stop_timeout": 60}"#
    ),
    template!(
        "logrotate.j2",
        r#"{"app": "site", "log_dir": "/srv/www/site/shared/var/log", "user": "plone", "group": "plone"}"#
    ),
    template!(
        "zope.conf.j2",
        r#"{"app": "site", "client": "client1", "imports": ["%import relstorage"], "instance_home": "/srv/www/site/current", "client_home": "/srv/www/site/shared/var/client1", "environment": [["CHAMELEON_CACHE", "/srv/www/site/shared/var/cache"]], "zodb_cache_size": 30000, "storage": ["<filestorage>", "  path /srv/www/site/shared/var/filestorage/Data.fs", "</filestorage>"], "additional": ""}"#
    ),
    template!(
        "zope.ini.j2",
        r#"{"app": "site", "client": "client1", "listen": "10.0.0.11:8081", "threads": 2, "level": "INFO", "log_dir": "/srv/www/site/shared/var/log", "syslog": {"facility": "local3", "level": "INFO"}}"#
    ),
    template!("common.sh.j2", with_common!()),
    template!(
        "prepare-release.sh.j2",
        with_common!(
            r#", "source_description": "https://git.example.org/site.git at main", "git_url": "https://git.example.org/site.git", "submodules": true, "revision": "main", "fingerprint": "0123abcd", "always_build": false, "log_lines": 40, "shared_links": [{"shared": "eggs", "release_path": "eggs"}], "shared_dirs": ["var/log"], "files": [{"path": "deploy.cfg", "base64": "W2J1aWxkb3V0XQo=", "marker": "PROVISION_EOF_1"}], "manifest": "abc  deploy.cfg\n", "python": "/usr/bin/python3", "buildout": {"config": "deploy.cfg", "version": "6.0.1", "bootstrap_args": [], "args": ["-N"]}, "pip": null, "live_check": "echo @end\n""#
        )
    ),
    template!(
        "switch-current.sh.j2",
        with_common!(r#", "release": "20250101120000""#)
    ),
    template!("rollback.sh.j2", with_common!()),
    template!("prune-releases.sh.j2", with_common!(r#", "keep": 5"#)),
    template!("release-status.sh.j2", with_common!()),
    template!(
        "client-health.sh.j2",
        r#"{"url": "http://127.0.0.1:8081/Plone/@@ok", "timeout": 60}"#
    ),
    template!(
        "ensure-site.sh.j2",
        with_common!(
            r#", "client": "client1", "client_url": "http://10.0.0.11:8081/Plone", "zope_conf": "parts/client1/etc/zope.conf", "python": "parts/client1/bin/interpreter", "site_id": "Plone", "title": "Plone site", "profiles": ["plone.app.contenttypes:default", "plonetheme.barceloneta:default"], "language": "en", "timezone": "Europe/Amsterdam""#
        )
    ),
    template!(
        "client-log-tail.sh.j2",
        r#"{"unit": "plone-site@client1", "lines": 40, "log_file": "/srv/www/site/shared/var/log/client1.log"}"#
    ),
];
