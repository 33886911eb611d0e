//! The `lb` layer: nginx, optional Varnish, and HAProxy over every Plone client of the stack.

use anyhow::Context as _;
use provision_core::phase::Phase;
use provision_core::resource::{Directory, File, Resource};
use provision_core::stack::Layer;
use provision_core::template::Templates;
use provision_nginx::{
    Backend, FrontendSettings, HaproxySettings, NginxSettings, Password, Tls, VarnishSettings,
};

use super::HostContext;

pub fn resources(
    context: &HostContext<'_>,
    phase: Phase,
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    let (tls, mut resources) = match certificate(context)? {
        // nginx -t reads the certificate: it must be in place before the site.
        Some((tls, files)) if phase == Phase::Configure => (Some(tls), files),
        Some((tls, _)) => (Some(tls), Vec::new()),
        None => (None, Vec::new()),
    };
    let mut settings = settings(context)?;
    settings.tls = tls;
    resources.extend(
        provision_nginx::resources(&settings, phase, templates)
            .with_context(|| format!("host {}: the lb layer", context.host.name))?,
    );
    Ok(resources)
}

/// The site's certificate, from the OpsWorks App fields of the instances' app
/// (`deploy.<app>.ssl_support`, `ssl_certificate`, `ssl_certificate_key`,
/// `ssl_certificate_ca`): where nginx finds it, and the files that put it there (the key
/// readable by root only).
fn certificate(context: &HostContext<'_>) -> anyhow::Result<Option<(Tls, Vec<Resource>)>> {
    let stack = context.stack;
    let Some(app) = stack.app_for(Layer::PloneInstances) else {
        return Ok(None);
    };
    let deploy = stack.deploy_settings(&app.name);
    if !deploy.ssl_support {
        return Ok(None);
    }
    let (Some(certificate), Some(key)) = (&deploy.ssl_certificate, &deploy.ssl_certificate_key)
    else {
        anyhow::bail!(
            "host {}: deploy.{app}.ssl_support is on, but the certificate or its key is missing: \
             set deploy.{app}.ssl_certificate and put the key in the secrets file as \
             deploy_{app}_ssl_certificate_key",
            context.host.name,
            app = app.name
        );
    };
    let mut chain = certificate.trim_end().to_string();
    chain.push('\n');
    if let Some(ca) = &deploy.ssl_certificate_ca {
        chain.push_str(ca.trim_end());
        chain.push('\n');
    }
    let tls = Tls {
        certificate: format!("/etc/ssl/provision/{}.pem", app.name),
        key: format!("/etc/ssl/provision/private/{}.key", app.name),
    };
    let mut key_text = key.expose().trim_end().to_string();
    key_text.push('\n');
    let files = vec![
        Directory::new("/etc/ssl/provision").into(),
        File::new(&tls.certificate, chain).into(),
        Directory::new("/etc/ssl/provision/private")
            .mode(0o700)
            .into(),
        File::new(&tls.key, key_text).mode(0o600).secret().into(),
    ];
    Ok(Some((tls, files)))
}

/// HAProxy's process `maxconn`: what the stack says, or as much as the host's open-file limit
/// allows (two descriptors a connection, some to spare), at most OpsWorks' 80000. HAProxy
/// refuses to start when it cannot raise its limit that far, so too big a value is an error
/// here, before anything changes.
fn haproxy_max_connections(context: &HostContext<'_>) -> anyhow::Result<u32> {
    const MOST: u32 = 80_000;
    const SPARE: u64 = 100;
    let host_allows = context
        .facts
        .open_files_limit
        .map(|limit| u32::try_from(limit.saturating_sub(SPARE) / 2).unwrap_or(u32::MAX));
    match (
        context.stack.attributes().haproxy.global_max_connections,
        host_allows,
    ) {
        (Some(wanted), Some(allowed)) if wanted > allowed => anyhow::bail!(
            "host {}: haproxy.global_max_connections = {wanted} needs {} open files, but the \
             host allows {}: lower it to {allowed} or less, or raise the host's limit",
            context.host.name,
            u64::from(wanted) * 2 + SPARE,
            context.facts.open_files_limit.unwrap_or_default()
        ),
        (Some(wanted), _) => Ok(wanted),
        (None, Some(allowed)) => Ok(allowed.min(MOST)),
        (None, None) => Ok(MOST),
    }
}

/// The frontend of one `lb` host, from the stack's attributes and the facts of every
/// instance host (their CPU counts give the clients).
pub fn settings(context: &HostContext<'_>) -> anyhow::Result<FrontendSettings> {
    let stack = context.stack;
    let attributes = stack.attributes();
    let cpus = |name: &str| context.all_facts.get(name).map(|f| f.cpus);
    let backends = stack
        .haproxy_backends_except(&cpus, context.away)
        .context("listing the Plone clients for HAProxy")?
        .into_iter()
        .map(|b| Backend {
            name: b.name,
            address: b.address,
            port: b.port,
            maxconn: b.maxconn,
        })
        .collect();
    let haproxy = &attributes.haproxy;
    let max_connections = haproxy_max_connections(context)?;
    let nginx = &attributes.nginx_plone;
    let mut listen_addresses = vec!["0.0.0.0".to_string()];
    if context.facts.ipv6 {
        listen_addresses.push("[::]".to_string());
    }
    Ok(FrontendSettings {
        site_id: attributes.plone_instances.site_id.clone(),
        subsites: attributes
            .plone_instances
            .subsites
            .clone()
            .into_iter()
            .collect(),
        subsite_config: attributes
            .plone_instances
            .subsite_config
            .clone()
            .into_iter()
            .collect(),
        backends,
        private_address: context.host.service_address().to_string(),
        listen_addresses,
        tls: None,
        haproxy: HaproxySettings {
            balance: haproxy.balance.clone(),
            retries: haproxy.retries,
            check_interval: haproxy.check_interval,
            connect_timeout: haproxy.connect_timeout.clone(),
            client_timeout: haproxy.client_timeout.clone(),
            server_timeout: haproxy.server_timeout.clone(),
            queue_timeout: haproxy.queue_timeout.clone(),
            http_request_timeout: haproxy.http_request_timeout.clone(),
            global_max_connections: max_connections,
            default_max_connections: haproxy.default_max_connections.unwrap_or(max_connections),
            rise: haproxy.rise,
            fall: haproxy.fall,
            sticky_sessions: haproxy.sticky_sessions || attributes.plone_instances.sticky_sessions,
            enable_stats: haproxy.enable_stats,
            stats_url: haproxy.stats_url.clone(),
            stats_user: haproxy.stats_user.clone(),
            stats_password: haproxy
                .stats_password
                .as_ref()
                .map(|p| Password(p.expose().to_string())),
            health_check_url: haproxy.health_check_url.clone(),
            health_check_method: haproxy.health_check_method.clone(),
            stats_socket_path: haproxy.stats_socket_path.clone(),
            stats_socket_level: haproxy.stats_socket_level.clone(),
        },
        nginx: NginxSettings {
            enable_ssi: nginx.enable_ssi,
            additional_servers: nginx.additional_servers.clone(),
            additional_config: nginx.additional_config.clone(),
            additional_ssl_config: nginx.additional_ssl_config.clone(),
            default_config: nginx.default_config.clone(),
            default_ssl_config: nginx.default_ssl_config.clone(),
            proxy_port: nginx.proxy_port,
            log_retention_days: nginx.log_retention_days,
            force_reload: nginx.force_reload,
            client_max_body_size: nginx.client_max_body_size.clone(),
        },
        varnish: attributes.varnish_plone.enable.then(|| VarnishSettings {
            grace: attributes.varnish_plone.grace,
            default_ttl: attributes.varnish_plone.default_ttl,
            ..VarnishSettings::default()
        }),
        ..FrontendSettings::default()
    })
}
