//! The pip kind's generated files: `etc/<client>/zope.conf` and `etc/<client>/zope.ini` in each
//! release (what `mkwsgiinstance` would make, with the stack's storage and settings).

use serde::Serialize;

use crate::error::PloneError;
use crate::settings::{AppKind, ClientSettings, InstanceSettings, PipSettings, Syslog};
use provision_core::template::Templates;

pub(crate) const ZOPE_CONF_TEMPLATE: &str = "plone/zope.conf.j2";
pub(crate) const ZOPE_INI_TEMPLATE: &str = "plone/zope.ini.j2";

#[derive(Serialize)]
struct ZopeConfContext<'a> {
    app: &'a str,
    client: &'a str,
    imports: &'a [String],
    instance_home: String,
    client_home: String,
    environment: Vec<(&'a str, String)>,
    zodb_cache_size: u64,
    storage: Vec<&'a str>,
    additional: &'a str,
}

#[derive(Serialize)]
struct ZopeIniContext<'a> {
    app: &'a str,
    client: &'a str,
    listen: String,
    threads: u32,
    level: &'a str,
    log_dir: String,
    syslog: Option<&'a Syslog>,
}

fn pip_settings(settings: &InstanceSettings) -> Result<&PipSettings, PloneError> {
    match &settings.kind {
        AppKind::Pip(p) => Ok(p),
        AppKind::Buildout(_) => Err(PloneError::invalid(
            "kind",
            "buildout",
            "zope.conf and zope.ini are generated for pip apps; buildout makes its own",
        )),
    }
}

fn client<'a>(
    settings: &'a InstanceSettings,
    name: &str,
) -> Result<&'a ClientSettings, PloneError> {
    settings
        .clients
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| PloneError::invalid("client", name, "not a client of this host"))
}

/// The path of a client's config directory inside a release.
pub fn config_dir(client: &str) -> String {
    format!("etc/{client}")
}

/// `etc/<client>/zope.conf` of a pip app.
pub fn render_zope_conf(
    settings: &InstanceSettings,
    client_name: &str,
    templates: &Templates,
) -> Result<String, PloneError> {
    settings.validate()?;
    let pip = pip_settings(settings)?;
    let client = client(settings, client_name)?;
    let shared = settings.shared_dir();
    let mut environment: Vec<(&str, String)> = settings
        .client_environment()
        .into_iter()
        .map(|(n, v)| (n, v.to_string()))
        .collect();
    if !environment.iter().any(|(n, _)| *n == "CHAMELEON_CACHE") {
        environment.push(("CHAMELEON_CACHE", format!("{shared}/var/cache")));
        environment.sort();
    }
    let context = ZopeConfContext {
        app: &settings.app,
        client: &client.name,
        imports: &pip.zope_conf_imports,
        instance_home: settings.current_link(),
        client_home: format!("{shared}/var/{}", client.name),
        environment,
        zodb_cache_size: settings.zodb_cache_size.unwrap_or(30000),
        storage: client
            .storage_section
            .trim_end()
            .lines()
            .map(str::trim_end)
            .collect(),
        additional: pip.zope_conf_additional.trim_end_matches('\n'),
    };
    Ok(templates.render(ZOPE_CONF_TEMPLATE, &context)?)
}

/// `etc/<client>/zope.ini` of a pip app.
pub fn render_zope_ini(
    settings: &InstanceSettings,
    client_name: &str,
    templates: &Templates,
) -> Result<String, PloneError> {
    settings.validate()?;
    pip_settings(settings)?;
    let client = client(settings, client_name)?;
    let host = settings.http_host.as_deref().unwrap_or("0.0.0.0");
    let listen = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{}", client.port)
    } else {
        format!("{host}:{}", client.port)
    };
    let context = ZopeIniContext {
        app: &settings.app,
        client: &client.name,
        listen,
        threads: settings.threads(),
        level: settings
            .syslog
            .as_ref()
            .map_or("INFO", |s| s.level.as_str()),
        log_dir: format!("{}/var/log", settings.shared_dir()),
        syslog: settings.syslog.as_ref(),
    };
    Ok(templates.render(ZOPE_INI_TEMPLATE, &context)?)
}
