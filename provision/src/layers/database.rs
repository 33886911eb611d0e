//! The database layers: `zeoserver` (ZEO with backups and packing) and `postgres` (PostgreSQL
//! for RelStorage).

use std::net::IpAddr;

use anyhow::{Context as _, bail};
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::stack::{HostSpec, Layer, Stack};
use provision_core::template::Templates;
use provision_zeo::postgres::{self, PostgresSettings};
use provision_zeo::zeoserver::{self, ZeoServerSettings};

use super::HostContext;

/// The address a service of `host` binds to: its private (service) address, which must be an
/// IP address (a service never binds 0.0.0.0 by default).
fn bind_address(host: &HostSpec, layer: Layer) -> anyhow::Result<IpAddr> {
    let address = host.service_address();
    address.parse().with_context(|| {
        format!(
            "host {}: the {layer} layer binds to the host's private address, but `{address}` is \
             not an IP address; set `private_address` of [hosts.{}] to its private IP",
            host.name, host.name
        )
    })
}

pub fn zeoserver_settings(stack: &Stack, host: &HostSpec) -> anyhow::Result<ZeoServerSettings> {
    let attributes = stack.attributes();
    let zeo = &attributes.plone_zeoserver;
    let mut settings = ZeoServerSettings::new(bind_address(host, Layer::Zeoserver)?);
    if let Some(dir) = &zeo.filestorage_dir {
        settings.filestorage_dir = dir.clone();
    }
    if let Some(dir) = &attributes.plone_blobs.blob_dir {
        settings.blob_dir = dir.clone();
    }
    settings.enable_backup = zeo.enable_backup;
    settings.enable_pack = zeo.enable_pack;
    settings.syslog_facility = zeo.syslog_facility.clone();
    settings.syslog_level = zeo.syslog_level.clone();
    Ok(settings)
}

pub fn zeoserver(
    context: &HostContext<'_>,
    phase: Phase,
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    let settings = zeoserver_settings(context.stack, context.host)?;
    Ok(zeoserver::resources(&settings, phase, templates)?)
}

pub fn postgres(
    context: &HostContext<'_>,
    phase: Phase,
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    let stack = context.stack;
    let host = context.host;
    let db = &stack.attributes().plone_instances.relstorage.db;
    let Some(password) = &db.password else {
        bail!(
            "host {}: the postgres layer needs the database password: add \
             plone_instances_relstorage_db_password to the secrets file (or set \
             PROVISION_SECRET_PLONE_INSTANCES_RELSTORAGE_DB_PASSWORD)",
            host.name
        );
    };
    let version = postgres::debian_version(&context.facts.os_version_id).with_context(|| {
        format!(
            "host {}: no PostgreSQL version known for {}",
            host.name, context.facts.os_pretty_name
        )
    })?;
    // Only the hosts that open the database may connect: the instances and the packer.
    let mut clients = Vec::new();
    for client in stack
        .hosts_with(Layer::PloneInstances)
        .into_iter()
        .chain(stack.hosts_with(Layer::DbPacking))
    {
        let address = bind_address(client, Layer::Postgres)?;
        if !clients.contains(&address) {
            clients.push(address);
        }
    }
    let mut settings = PostgresSettings::new(
        version,
        bind_address(host, Layer::Postgres)?,
        clients,
        password.expose(),
    );
    if let Some(name) = &db.name {
        settings.database = name.clone();
    }
    if let Some(user) = &db.user {
        settings.role = user.clone();
    }
    if let Some(port) = db.port {
        settings.port = port;
    }
    Ok(postgres::resources(&settings, phase, templates)?)
}
