//! The optional layers: `celery_broker` (Redis) with Celery workers on the instance hosts, and
//! `solr` for collective.solr.

use std::collections::BTreeMap;

use anyhow::Context as _;
use provision_celery::{BrokerEndpoint, BrokerSettings, Password, WorkerSettings};
use provision_core::facts::Facts;
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::stack::{HostSpec, Layer, Stack};
use provision_core::template::Templates;
use provision_solr::SolrSettings;

use super::{HostContext, bind_address};

/// The core collective.solr uses.
const SOLR_CORE: &str = "plone";

/// The Redis password (`redis_config_requirepass` in the secrets file).
fn redis_password(stack: &Stack) -> Option<String> {
    match stack.attributes().redis.config.get("requirepass") {
        Some(serde_json::Value::String(password)) => Some(password.clone()),
        _ => None,
    }
}

pub fn broker(
    context: &HostContext<'_>,
    phase: Phase,
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    let attributes = context.stack.attributes();
    let settings = BrokerSettings::from_redis_config(
        bind_address(context.host, Layer::CeleryBroker)?,
        attributes.plone_instances.broker.port,
        &attributes.redis.config,
    )
    .with_context(|| format!("host {}: the celery_broker layer", context.host.name))?;
    Ok(provision_celery::broker::resources(
        &settings, phase, templates,
    )?)
}

/// The Celery workers of an instance host, when `plone_instances.enable_celery`.
pub fn worker_settings(stack: &Stack, host: &HostSpec) -> anyhow::Result<Option<WorkerSettings>> {
    let pi = &stack.attributes().plone_instances;
    if !pi.enable_celery {
        return Ok(None);
    }
    let app = super::instances::app(stack)?;
    let broker = stack.broker().context(
        "plone_instances.enable_celery needs a broker: add the celery_broker layer to a host, \
         or set plone_instances.broker.host",
    )?;
    let endpoint = BrokerEndpoint::new(
        broker.host,
        broker.port,
        redis_password(stack).map(Password),
    );
    let deploy = stack.deploy_settings(&app.name);
    let mut settings =
        WorkerSettings::new(&app.name, &app.deploy_to.display().to_string(), endpoint);
    settings.user = deploy.user.clone();
    settings.group = deploy.group.clone();
    if app.kind == provision_core::stack::AppKind::Pip {
        settings.celery = format!("{}/current/.venv/bin/celery", app.deploy_to.display());
    }
    settings.celery_app = pi.celery_app.clone();
    settings.imports = pi.celery_imports.clone();
    settings.worker_args = pi.celery_args.clone();
    settings.beat = stack.beat_host().is_some_and(|b| b.name == host.name);
    settings.beat_args = pi.beat_args.clone();
    settings.environment = deploy.environment.clone();
    // The deploy starts them once a release is live; the converge only installs them.
    settings.start = false;
    Ok(Some(settings))
}

/// The worker units of an instance host (or their removal when Celery is off).
pub fn workers(
    context: &HostContext<'_>,
    phase: Phase,
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    match worker_settings(context.stack, context.host)? {
        Some(settings) => Ok(provision_celery::worker::resources(
            &settings, phase, templates,
        )?),
        None if phase == Phase::Configure => {
            let app = super::instances::app(context.stack)?;
            Ok(provision_celery::worker::stopped(&app.name))
        }
        None => Ok(Vec::new()),
    }
}

pub fn solr_settings(
    stack: &Stack,
    host: &HostSpec,
    facts: &Facts,
) -> anyhow::Result<SolrSettings> {
    let mut settings = SolrSettings::for_host(bind_address(host, Layer::Solr)?, facts);
    settings.allowed_clients = stack
        .hosts_with(Layer::PloneInstances)
        .iter()
        .map(|h| h.service_address().to_string())
        .collect();
    if let Some(dir) = &stack.attributes().plone_solr.data_dir {
        settings.data_dir = dir.clone();
    }
    Ok(settings)
}

pub fn solr(
    context: &HostContext<'_>,
    phase: Phase,
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    let settings = solr_settings(context.stack, context.host, context.facts)?;
    provision_solr::resources(&settings, phase, templates)
        .with_context(|| format!("host {}: the solr layer", context.host.name))
}

/// What the clients need in their environment from the optional layers: collective.celery's
/// broker settings and collective.solr's connection.
pub fn client_environment(
    stack: &Stack,
    host: &HostSpec,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut environment = BTreeMap::new();
    if let Some(workers) = worker_settings(stack, host)? {
        environment.extend(provision_celery::client_environment(&workers));
    }
    let pi = &stack.attributes().plone_instances;
    if pi.solr_enabled {
        let host = stack.solr_host().context(
            "plone_instances.solr_enabled needs a Solr host: add the solr layer to a host, or \
             set plone_instances.solr_host",
        )?;
        environment.extend(
            provision_solr::client_environment(&host, provision_solr::DEFAULT_PORT, SOLR_CORE)?
                .into_iter()
                .map(|(key, value)| (key.to_string(), value)),
        );
    }
    Ok(environment)
}
