//! The buildout kind's generated `deploy.cfg` (reference/plone-cookbook.md 4.1): it extends the
//! repository's configs, adds the client parts and their settings, then the raw additional
//! configuration.

use serde::Serialize;

use crate::error::PloneError;
use crate::settings::{AppKind, BuildoutSettings, InstanceSettings};
use provision_core::template::Templates;

pub(crate) const TEMPLATE: &str = "plone/deploy.cfg.j2";

#[derive(Serialize)]
struct Context<'a> {
    app: &'a str,
    extends: &'a [String],
    inherit_parts: bool,
    parts: Vec<&'a str>,
    zeo_address: Option<&'a str>,
    clients: Vec<Client>,
    additional_config: &'a str,
}

#[derive(Serialize)]
struct Client {
    name: String,
    http_address: String,
    /// Complete option lines (an option may span several lines).
    options: Vec<String>,
}

/// The option names set by buildout text (`name = ...`, `name += ...`).
fn option_names(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.starts_with([' ', '\t']) && !line.trim_start().starts_with(['#', ';']))
        .filter_map(|line| line.split_once('='))
        .map(|(name, _)| name.trim().trim_end_matches(['+', '-']).trim().to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

/// The buildout settings of a buildout app.
pub(crate) fn buildout_settings(
    settings: &InstanceSettings,
) -> Result<&BuildoutSettings, PloneError> {
    match &settings.kind {
        AppKind::Buildout(b) => Ok(b),
        AppKind::Pip(_) => Err(PloneError::invalid(
            "kind",
            "pip",
            "deploy.cfg belongs to buildout apps",
        )),
    }
}

/// The client's `http-address`: the bare port (all addresses), or `host:port`.
pub(crate) fn http_address(settings: &InstanceSettings, port: u16) -> String {
    match &settings.http_host {
        Some(host) if host.contains(':') && !host.starts_with('[') => format!("[{host}]:{port}"),
        Some(host) => format!("{host}:{port}"),
        None => port.to_string(),
    }
}

/// `deploy.cfg` for these settings.
pub fn render_deploy_cfg(
    settings: &InstanceSettings,
    templates: &Templates,
) -> Result<String, PloneError> {
    settings.validate()?;
    let b = buildout_settings(settings)?;
    let storage = b.storage_options.trim_end();
    let storage_names = option_names(storage);
    let storage_sets = |name: &str| storage_names.iter().any(|n| n == name);

    let zeo_server = b.zeo_address.as_deref().unwrap_or_default();
    // client1 carries every setting; the others copy it (`<= client1`) and change what differs.
    let first = &settings.clients[0];
    let mut options: Vec<String> = storage.lines().map(|l| l.trim_end().to_string()).collect();
    options.retain(|l| !l.is_empty());
    if let Some(dir) = &settings.blob_dir
        && !storage_sets("blob-storage")
    {
        options.push(format!("blob-storage = {dir}"));
    }
    if !settings.shared_blobs && !storage_sets("shared-blob") {
        options.push("shared-blob = off".to_string());
    }
    if settings.persistent_cache && !storage_sets("zeo-client-client") {
        options.push(format!(
            "zeo-client-client = {}",
            first.cache_name(zeo_server)
        ));
    }
    // The recipe's default for the cache file is $(ZEO_TMP): /tmp, private to each start
    // under systemd (PrivateTmp), which would make the persistent cache start cold every time.
    if (settings.persistent_cache || storage_sets("zeo-client-client")) && !storage_sets("zeo-var")
    {
        options.push(format!("zeo-var = {}/var", settings.shared_dir()));
    }
    if let Some(size) = settings.zodb_cache_size {
        options.push(format!("zodb-cache-size = {size}"));
    }
    // `threads` is read by the WSGI server (wsgi.ini) and zope.conf; the cookbook's
    // `zserver-threads` is deprecated and no longer reaches the WSGI server.
    options.push(format!("threads = {}", settings.threads()));
    options.push("http-fast-listen = off".to_string());
    let environment = settings.client_environment();
    if !environment.is_empty() {
        let mut option = "environment-vars +=".to_string();
        for (name, value) in environment {
            option.push_str(&format!("\n    {name} {value}"));
        }
        options.push(option);
    }
    if let Some(syslog) = &settings.syslog {
        options.push("event-log-handler = logging.handlers.SysLogHandler".to_string());
        options.push(format!(
            "event-log-args = ('/dev/log', '{}')",
            syslog.facility
        ));
        options.push(format!("event-log-level = {}", syslog.level));
    }
    // Each process needs its own persistent cache file (a shared one corrupts, ZEO#95).
    let own_cache = settings.persistent_cache || storage_sets("zeo-client-client");
    let mut clients = vec![Client {
        name: first.name.clone(),
        http_address: http_address(settings, first.port),
        options,
    }];
    for client in &settings.clients[1..] {
        clients.push(Client {
            name: client.name.clone(),
            http_address: http_address(settings, client.port),
            options: if own_cache {
                vec![format!(
                    "zeo-client-client = {}",
                    client.cache_name(zeo_server)
                )]
            } else {
                Vec::new()
            },
        });
    }

    let mut parts: Vec<&str> = settings.clients.iter().map(|c| c.name.as_str()).collect();
    for part in &b.parts_to_include {
        if !parts.contains(&part.as_str()) {
            parts.push(part);
        }
    }
    let context = Context {
        app: &settings.app,
        extends: &b.extends,
        inherit_parts: b.inherit_parts,
        parts,
        zeo_address: b.zeo_address.as_deref(),
        clients,
        additional_config: b.additional_config.trim_end_matches('\n'),
    };
    Ok(templates.render(TEMPLATE, &context)?)
}

/// The arguments of `bin/buildout` (after `-c deploy.cfg`).
pub(crate) fn buildout_args(b: &BuildoutSettings) -> Vec<String> {
    let mut args: Vec<String> = b.flags.split_whitespace().map(str::to_string).collect();
    if b.debug {
        args.push("-vvv".to_string());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_names_skip_continuations_and_comments() {
        let text = "zeo-client = on\nrel-storage =\n    type postgresql\n    dsn x=1\n# a = b\nenvironment-vars += \n";
        assert_eq!(
            option_names(text),
            ["zeo-client", "rel-storage", "environment-vars"]
        );
    }
}
