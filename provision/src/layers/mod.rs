//! Layer runners: for one host, compose the resources of the provisioners its layers need.
//! They only compose; what a layer installs and renders lives in its provisioner crate.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::Context as _;
use provision_core::facts::Facts;
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::stack::{HostSpec, Layer, Stack};
use provision_core::system::{self, SystemSettings, UnattendedUpgrades};
use provision_core::template::{TemplateSource, Templates};

use crate::session::FactsByHost;

pub mod blobs;
// pub(crate) for migrate_relstorage (the RelStorage settings of a stack).
pub(crate) mod database;
mod firewall;
pub mod instances;
mod lb;
pub mod optional;

/// Every template of the workspace, for the one environment.
pub fn all_templates() -> Vec<TemplateSource> {
    [
        system::TEMPLATES,
        provision_core::firewall::TEMPLATES,
        provision_nginx::TEMPLATES,
        provision_zeo::TEMPLATES,
        provision_plone::TEMPLATES,
        provision_celery::TEMPLATES,
        provision_solr::TEMPLATES,
        provision_blobs::TEMPLATES,
    ]
    .concat()
}

/// The hosts a host's layers need to reach besides itself: an `lb` host lists the clients of
/// every instance host (their number comes from each host's CPU count), and an instance
/// host's rolling restart drains its clients in every `lb` host.
pub fn hosts_for_discovery<'a>(stack: &'a Stack, host: &HostSpec) -> Vec<&'a HostSpec> {
    let mut hosts = Vec::new();
    if host.has_layer(Layer::Lb) && stack.attributes().plone_instances.instance_count.is_none() {
        hosts.extend(stack.hosts_with(Layer::PloneInstances));
    }
    // A release on an instance host restarts its clients drained in every HAProxy.
    if host.has_layer(Layer::PloneInstances) {
        hosts.extend(stack.hosts_with(Layer::Lb));
    }
    hosts
}

/// The address a service of `host` binds to: its private (service) address, which must be an
/// IP address (a service never binds 0.0.0.0 by default).
pub(crate) fn bind_address(host: &HostSpec, layer: Layer) -> anyhow::Result<IpAddr> {
    let address = host.service_address();
    address.parse().with_context(|| {
        format!(
            "host {}: the {layer} layer binds to the host's private address, but `{address}` is \
             not an IP address; set `private_address` of [hosts.{}] to its private IP",
            host.name, host.name
        )
    })
}

/// What a layer runner sees of one host.
pub struct HostContext<'a> {
    pub stack: &'a Stack,
    pub host: &'a HostSpec,
    pub facts: &'a Facts,
    /// Facts of every reachable host of the stack (discovery).
    pub all_facts: &'a FactsByHost,
    /// Instance hosts out of the frontend ([`crate::session::Session::away`]).
    pub away: &'a BTreeSet<String>,
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
        // The blob mount comes before the directories the layers make inside it; a run of
        // both phases mounts during setup (the later copies are dropped below).
        if *phase != Phase::Deploy {
            for blob_phase in [Phase::Setup, Phase::Configure] {
                resources.extend(blobs::resources(context, blob_phase, templates)?);
            }
        }
        for layer in &context.host.layers {
            resources.extend(match layer {
                Layer::Lb => lb::resources(context, *phase, templates)?,
                Layer::Zeoserver => database::zeoserver(context, *phase, templates)?,
                Layer::Postgres => database::postgres(context, *phase, templates)?,
                Layer::PloneInstances => {
                    let mut resources = instances::resources(context, *phase, templates)?;
                    resources.extend(optional::workers(context, *phase, templates)?);
                    resources
                }
                Layer::CeleryBroker => optional::broker(context, *phase, templates)?,
                Layer::Solr => optional::solr(context, *phase, templates)?,
                Layer::DbPacking => database::packing(context, *phase, templates)?,
                Layer::Memcached => database::memcached(context, *phase, templates)?,
                _ => Vec::new(),
            });
        }
        // Last, once the host's services are configured; off, it removes a firewall of ours.
        resources.extend(firewall::resources(context, *phase, templates)?);
    }
    Ok(without_repeats(resources))
}

/// Keeps the first of resources with the same id: layers of one host may each ask for the
/// same directory (the ZEO server and the clients share the blob store on one host).
fn without_repeats(resources: Vec<Resource>) -> Vec<Resource> {
    let mut seen = std::collections::HashSet::new();
    resources
        .into_iter()
        .filter(|resource| seen.insert(resource.id()))
        .collect()
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
