//! Layer runners: for one host, compose the resources of the provisioners its layers need.
//! They only compose; what a layer installs and renders lives in its provisioner crate.

use provision_core::facts::Facts;
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::stack::{HostSpec, Layer, Stack};
use provision_core::system::{self, SystemSettings, UnattendedUpgrades};
use provision_core::template::{TemplateSource, Templates};

use crate::session::FactsByHost;

mod database;
mod lb;

/// Every template of the workspace, for the one environment.
pub fn all_templates() -> Vec<TemplateSource> {
    [
        system::TEMPLATES,
        provision_nginx::TEMPLATES,
        provision_zeo::TEMPLATES,
    ]
    .concat()
}

/// The issue that brings each layer, for the message when a stack uses one that has not
/// landed yet.
pub fn pending_layer(layer: Layer) -> Option<&'static str> {
    Some(match layer {
        Layer::Zeoserver | Layer::Postgres | Layer::Lb => return None,
        Layer::DbPacking => "the RelStorage packing layer",
        Layer::Memcached => "the memcached layer",
        Layer::PloneInstances => "the Plone instances layer",
        Layer::SharedBlobs => "the shared blob storage layer",
        Layer::Solr | Layer::CeleryBroker => "the optional Solr and Celery layers",
    })
}

/// The hosts whose facts a host's layers need besides its own: an `lb` host lists the
/// clients of every instance host, and their number comes from each host's CPU count.
pub fn hosts_for_discovery<'a>(stack: &'a Stack, host: &HostSpec) -> Vec<&'a HostSpec> {
    if host.has_layer(Layer::Lb) && stack.attributes().plone_instances.instance_count.is_none() {
        stack.hosts_with(Layer::PloneInstances)
    } else {
        Vec::new()
    }
}

/// What a layer runner sees of one host.
pub struct HostContext<'a> {
    pub stack: &'a Stack,
    pub host: &'a HostSpec,
    pub facts: &'a Facts,
    /// Facts of every reachable host of the stack (discovery).
    pub all_facts: &'a FactsByHost,
}

/// The resources of one host for the given phases, in order.
pub fn resources(
    context: &HostContext<'_>,
    phases: &[Phase],
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    check_supported(context.host, context.facts)?;
    let settings = system_settings(context.stack);
    let mut resources = Vec::new();
    for phase in phases {
        resources.extend(system::resources(&settings, *phase, templates)?);
        for layer in &context.host.layers {
            resources.extend(match layer {
                Layer::Lb => lb::resources(context, *phase, templates)?,
                Layer::Zeoserver => database::zeoserver(context, *phase, templates)?,
                Layer::Postgres => database::postgres(context, *phase, templates)?,
                _ => Vec::new(),
            });
        }
    }
    Ok(resources)
}

/// Hosts are Debian or Ubuntu with systemd: say so plainly instead of failing on `apt-get`.
fn check_supported(host: &HostSpec, facts: &Facts) -> anyhow::Result<()> {
    let apt = facts.package_manager.as_deref() == Some("apt-get");
    if apt && facts.is_systemd() {
        return Ok(());
    }
    anyhow::bail!(
        "host {} runs {} (package manager {}, init {}); provision supports Debian and Ubuntu \
         hosts with systemd",
        host.name,
        if facts.os_pretty_name.is_empty() {
            &facts.os_id
        } else {
            &facts.os_pretty_name
        },
        facts.package_manager.as_deref().unwrap_or("none found"),
        facts.init
    )
}

fn system_settings(stack: &Stack) -> SystemSettings {
    let attributes = stack.attributes();
    let upgrades = &attributes.apt.unattended_upgrades;
    SystemSettings {
        timezone: attributes.system.timezone.clone(),
        tmpfs_size: attributes
            .tmpdir
            .tmpfs
            .then(|| attributes.tmpdir.tmpfs_size.clone()),
        unattended_upgrades: upgrades.enable.then(|| UnattendedUpgrades {
            mail: upgrades.mail.clone(),
            package_blacklist: upgrades.package_blacklist.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every template of the workspace loads into the one environment (no two share a name)
    /// and renders with its example context. Each crate snapshots its own rendered templates.
    #[test]
    fn every_template_renders_with_its_example() {
        let sources = all_templates();
        let templates = Templates::new(&sources).expect("all templates parse");
        let mut names: Vec<&str> = sources.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), sources.len(), "two templates share a name");
        for source in &sources {
            let context: serde_json::Value = serde_json::from_str(source.example)
                .unwrap_or_else(|e| panic!("{}: example context is not JSON: {e}", source.name));
            let rendered = templates
                .render(source.name, &context)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(!rendered.trim().is_empty(), "{} renders empty", source.name);
        }
    }
}
