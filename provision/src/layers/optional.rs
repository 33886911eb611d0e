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
use provision_solr::{SolrArchive, SolrSettings};

use super::{HostContext, bind_address};

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

/// The Solr host's settings: `plone_solr.*` over the defaults for its facts.
pub fn solr_settings(
    stack: &Stack,
    host: &HostSpec,
    facts: &Facts,
) -> anyhow::Result<SolrSettings> {
    let attributes = &stack.attributes().plone_solr;
    let mut settings = SolrSettings::for_host(bind_address(host, Layer::Solr)?, facts);
    settings.allowed_clients = stack
        .hosts_with(Layer::PloneInstances)
        .iter()
        .map(|h| h.service_address().to_string())
        .collect();
    if let Some(dir) = &attributes.data_dir {
        settings.data_dir = dir.clone();
    }
    // Validation refuses a stack without it; this is the backstop.
    let sha512 = attributes.archive_sha512().with_context(|| {
        format!(
            "host {}: the solr layer: plone_solr.sha512 is needed for {}",
            host.name,
            attributes.archive_url()
        )
    })?;
    settings.archive = SolrArchive {
        version: attributes.version.clone(),
        url: attributes.archive_url(),
        sha512,
    };
    settings.port = attributes.port;
    settings.cores = attributes.cores.clone();
    if let Some(heap) = attributes.heap_mb {
        settings.heap_mb = heap;
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

/// What the clients need in their environment from the Celery layer: collective.celery's
/// broker settings. Private: the broker URL holds its password.
pub fn broker_environment(
    stack: &Stack,
    host: &HostSpec,
) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(worker_settings(stack, host)?
        .map(|workers| provision_celery::client_environment(&workers))
        .unwrap_or_default())
}

/// What the clients need in their environment from the Solr layer: collective.solr's
/// connection.
pub fn solr_environment(stack: &Stack) -> anyhow::Result<BTreeMap<String, String>> {
    let mut environment = BTreeMap::new();
    let pi = &stack.attributes().plone_instances;
    let solr = &stack.attributes().plone_solr;
    if pi.solr_enabled {
        let host = stack.solr_host().context(
            "plone_instances.solr_enabled needs a Solr host: add the solr layer to a host, or \
             set plone_instances.solr_host",
        )?;
        environment.extend(
            provision_solr::client_environment(&host, solr.port, solr.client_core())?
                .into_iter()
                .map(|(key, value)| (key.to_string(), value)),
        );
    }
    Ok(environment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use provision_core::resource::Resource;
    use provision_core::template::Templates;

    const STACK: &str = r#"[stack]
name = "optional"
[hosts.app1]
address = "10.0.0.11"
layers = ["plone_instances"]
[hosts.search1]
address = "10.0.0.30"
layers = ["zeoserver", "solr"]
[apps.site]
repository = "https://example.org/site.git"
[attributes.plone_instances]
solr_enabled = true
"#;

    fn stack(more: &str) -> Stack {
        Stack::parse(&format!("{STACK}{more}"), "stack.toml", None).unwrap()
    }

    fn facts() -> Facts {
        // 16 GiB.
        Facts::parse("os_id=debian\ncpus=2\nmemory_kib=16777216\ninit=systemd\n").unwrap()
    }

    fn settings(stack: &Stack) -> SolrSettings {
        let host = stack.host("search1").unwrap();
        solr_settings(stack, host, &facts()).unwrap()
    }

    /// The content of the file at `path` among the Solr host's configure resources.
    fn file(settings: &SolrSettings, path: &str) -> String {
        let templates = Templates::new(provision_solr::TEMPLATES).unwrap();
        provision_solr::resources(settings, Phase::Configure, &templates)
            .unwrap()
            .into_iter()
            .find_map(|r| match r {
                Resource::File(f) if f.path == path => Some(String::from_utf8(f.content).unwrap()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no file {path}"))
    }

    #[test]
    fn solr_defaults_are_the_official_archive_one_core_and_a_heap_from_memory() {
        let stack = stack("");
        let s = settings(&stack);
        assert_eq!(s.archive, SolrArchive::default());
        assert_eq!(s.port, 8983);
        assert_eq!(s.cores, ["plone"]);
        assert_eq!(s.heap_mb, 4096);
        assert_eq!(s.allowed_clients, ["10.0.0.11"]);
        let env = solr_environment(&stack).unwrap();
        assert_eq!(env["COLLECTIVE_SOLR_HOST"], "10.0.0.30");
        assert_eq!(env["COLLECTIVE_SOLR_PORT"], "8983");
        assert_eq!(env["COLLECTIVE_SOLR_BASE"], "/solr/plone");
    }

    #[test]
    fn solr_attributes_reach_the_solr_host_and_the_clients() {
        let sha512 = "ab".repeat(64);
        let stack = stack(&format!(
            "[attributes.plone_solr]\nversion = \"9.9.0\"\n\
             url = \"http://files.example.org/solr-9.9.0.tgz\"\nsha512 = \"{}\"\n\
             port = 8990\ncores = [\"site\", \"intranet\"]\nheap_mb = 640\n",
            sha512.to_uppercase()
        ));
        let s = settings(&stack);
        assert_eq!(
            s.archive,
            SolrArchive {
                version: "9.9.0".into(),
                url: "http://files.example.org/solr-9.9.0.tgz".into(),
                sha512: sha512.clone(),
            }
        );
        assert_eq!((s.port, s.heap_mb), (8990, 640));
        assert_eq!(s.cores, ["site", "intranet"]);
        assert_eq!(s.install_dir(), "/opt/solr-9.9.0");
        let env = file(&s, "/etc/default/solr.in.sh");
        assert!(env.contains("SOLR_PORT=\"8990\""), "{env}");
        assert!(env.contains("SOLR_HEAP=\"640m\""), "{env}");
        let templates = Templates::new(provision_solr::TEMPLATES).unwrap();
        let install = provision_solr::server::archive(&s, &templates).unwrap();
        assert_eq!(install.name, "solr-archive-9.9.0");
        assert!(
            install
                .fix
                .contains("http://files.example.org/solr-9.9.0.tgz")
                && install.fix.contains(&sha512)
                && install.check.contains(&sha512),
            "{install:?}"
        );
        // The clients use the first core, on the port.
        let env = solr_environment(&stack).unwrap();
        assert_eq!(env["COLLECTIVE_SOLR_PORT"], "8990");
        assert_eq!(env["COLLECTIVE_SOLR_BASE"], "/solr/site");
        // One core may be written as a string.
        let one = stack_with_cores("\"plone\"");
        assert_eq!(settings(&one).cores, ["plone"]);
    }

    fn stack_with_cores(cores: &str) -> Stack {
        stack(&format!("[attributes.plone_solr]\ncores = {cores}\n"))
    }
}
