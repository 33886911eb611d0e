//! The `plone_instances` layer: the app's clients on one host, from the stack's attributes,
//! the host's facts and the database layer's storage sections.

use anyhow::{Context as _, bail};
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::stack::{App, AppKind, HostSpec, Layer, Stack};
use provision_core::template::Templates;
use provision_plone::{
    AppKind as PloneKind, BuildoutSettings, ClientSettings, DeploySettings, InstanceSettings,
    PipSettings, Syslog,
};
use provision_zeo::client::{RelStorageSettings, ZeoClientSettings};

use super::HostContext;

pub fn resources(
    context: &HostContext<'_>,
    phase: Phase,
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    let settings = settings(context.stack, context.host, context.facts.cpus, templates)?;
    provision_plone::instances::resources(&settings, phase, templates)
        .with_context(|| format!("host {}: the plone_instances layer", context.host.name))
}

/// The app the `plone_instances` layer deploys.
pub fn app(stack: &Stack) -> anyhow::Result<&App> {
    stack.app_for(Layer::PloneInstances).with_context(|| {
        "the plone_instances layer needs its app: add an [apps.NAME] table with the repository \
         (and set plone_instances.app_name when the stack has several apps)"
    })
}

/// Everything the instances provisioner needs for `host`, which has `cpus` CPUs.
pub fn settings(
    stack: &Stack,
    host: &HostSpec,
    cpus: u32,
    templates: &Templates,
) -> anyhow::Result<InstanceSettings> {
    let attributes = stack.attributes();
    let pi = &attributes.plone_instances;
    let app = app(stack)?;
    let deploy = stack.deploy_settings(&app.name);
    let deploy_to = app.deploy_to.display().to_string();
    let var = format!("{deploy_to}/shared/var");
    // The clients name their blob directory by this stable path; when they share the blob
    // store it links there (see layers::blobs). Clients that get their blobs through ZEO keep
    // a cache elsewhere: ZEO prunes a cache, and a link left from sharing would point it at
    // the store itself.
    let shares_store = super::blobs::uses_store(stack, host);
    check_blob_sharing(stack, host, shares_store)?;
    let blob_dir = if shares_store || pi.enable_relstorage {
        format!("{var}/blobstorage")
    } else {
        format!("{var}/blobcache")
    };

    let clients = stack
        .clients_of(host, Some(cpus))
        .with_context(|| format!("host {}: counting its Plone clients", host.name))?;
    let storage = Storage::of(stack, &blob_dir, &var)?;
    let mut client_settings = Vec::new();
    for client in &clients {
        client_settings.push(ClientSettings {
            name: client.name.clone(),
            port: client.port,
            storage_section: storage.section(client.number, templates)?,
        });
    }

    let mut os_packages = deploy.os_packages.clone();
    if pi.enable_relstorage {
        os_packages.push("libpq-dev".to_string());
    }
    let kind = match app.kind {
        AppKind::Buildout => {
            let mut extends = vec![pi.base_config.clone()];
            if pi.enable_relstorage {
                extends.push(pi.relstorage.config.clone());
            }
            extends.extend(deploy.buildout_extends.iter().cloned());
            PloneKind::Buildout(BuildoutSettings {
                config_name: deploy.buildout_config.clone(),
                extends,
                parts_to_include: deploy.buildout_parts_to_include.clone(),
                inherit_parts: deploy.buildout_inherit_parts,
                additional_config: deploy.buildout_additional_config.clone(),
                storage_options: storage.buildout_options(templates)?,
                zeo_address: stack.zeo_address().map(|e| e.to_string()),
                flags: deploy.buildout_flags.clone(),
                debug: deploy.buildout_debug,
                buildout_version: (!deploy.buildout_version.is_empty())
                    .then(|| deploy.buildout_version.clone()),
                bootstrap_params: deploy.buildout_bootstrap_params.clone(),
            })
        }
        AppKind::Pip => PloneKind::Pip(PipSettings {
            zope_conf_imports: if pi.enable_relstorage {
                vec![provision_zeo::client::RELSTORAGE_IMPORT.to_string()]
            } else {
                Vec::new()
            },
            ..PipSettings::default()
        }),
    };
    let mut deploy_settings = match app.kind {
        AppKind::Buildout => DeploySettings::buildout(),
        AppKind::Pip => DeploySettings::pip(),
    };
    deploy_settings.keep_releases = deploy.keep_releases;
    deploy_settings.always_build_on_deploy = deploy.always_build_on_deploy;
    deploy_settings.cache_archives = deploy.buildout_cache_archives.clone();

    let settings = InstanceSettings {
        app: app.name.clone(),
        deploy_to,
        user: deploy.user.clone(),
        group: deploy.group.clone(),
        python: "/usr/bin/python3".to_string(),
        clients: client_settings,
        http_host: Some(host.service_address().to_string()),
        zodb_cache_size: pi.zodb_cache_size,
        zserver_threads: pi.zserver_threads,
        persistent_cache: pi.persistent_cache && !pi.enable_relstorage,
        shared_blobs: pi.shared_blobs,
        blob_dir: shares_store.then(|| super::blobs::store(stack).dir),
        environment: {
            let mut environment = deploy.environment.clone();
            environment.extend(super::optional::solr_environment(stack)?);
            environment
        },
        private_environment: super::optional::broker_environment(stack, host)?,
        syslog: pi.syslog_facility.as_ref().map(|facility| Syslog {
            facility: facility.clone(),
            level: pi.syslog_level.clone(),
        }),
        site_id: pi.site_id.clone(),
        os_packages,
        stop_timeout: 60,
        kind,
        deploy: deploy_settings,
    };
    settings
        .validate()
        .with_context(|| format!("host {}: the plone_instances layer", host.name))?;
    Ok(settings)
}

/// Blobs shared as files (`plone_instances.shared_blobs`, the cookbook's default) need the
/// blob store on this host: the ZEO server's host, or a shared mount (NFS, GlusterFS, S3).
fn check_blob_sharing(stack: &Stack, host: &HostSpec, shares_store: bool) -> anyhow::Result<()> {
    let pi = &stack.attributes().plone_instances;
    if !pi.shared_blobs || pi.enable_relstorage || shares_store {
        return Ok(());
    }
    bail!(
        "host {}: plone_instances.shared_blobs is on (the cookbook's default), but the ZEO \
         server is on another host and {} mounts no shared blob store: set \
         plone_instances.shared_blobs = false to stream blobs through ZEO, or share them \
         (plone_instances.nfs_blobs or gluster_blobs, or plone_blobs.blob_dir on an s3fs mount)",
        host.name,
        host.name
    )
}

/// The storage of the clients: ZEO or RelStorage, as the database layer renders it.
enum Storage {
    Zeo(ZeoClientSettings),
    Rel(Box<RelStorageSettings>),
}

impl Storage {
    fn of(stack: &Stack, blob_dir: &str, var: &str) -> anyhow::Result<Storage> {
        let pi = &stack.attributes().plone_instances;
        if pi.enable_relstorage {
            let settings = super::database::relstorage_settings(stack, blob_dir)?;
            return Ok(Storage::Rel(Box::new(settings)));
        }
        let zeo = stack.zeo_address().context(
            "the Plone clients need a ZEO server: add the zeoserver layer to a host, or set \
             plone_instances.zeo.address",
        )?;
        let mut settings = ZeoClientSettings::new(vec![zeo.to_string()], blob_dir, var);
        settings.shared_blob_dir = pi.shared_blobs;
        settings.persistent_cache = pi.persistent_cache;
        Ok(Storage::Zeo(settings))
    }

    /// The `zope.conf` storage section of client `number` (pip apps).
    fn section(&self, number: u32, templates: &Templates) -> anyhow::Result<String> {
        Ok(match self {
            Storage::Zeo(s) => provision_zeo::client::zeoclient_section(s, number, templates)?,
            Storage::Rel(s) => provision_zeo::client::relstorage_section(s, templates)?,
        })
    }

    /// The storage options of `[client1]` (buildout apps).
    fn buildout_options(&self, templates: &Templates) -> anyhow::Result<String> {
        Ok(match self {
            Storage::Zeo(s) => provision_zeo::client::zeoclient_buildout_options(s, 1, templates)?,
            Storage::Rel(s) => provision_zeo::client::relstorage_buildout_option(s, templates)?,
        })
    }
}

/// Where a release's tree comes from: a repository on the controller (a path that exists
/// here) is exported with `git archive` and pushed over SSH, for private repositories without
/// deploy keys on the hosts; anything else is a URL the hosts clone from. Submodules come
/// along unless `deploy.<app>.enable_submodules` is off.
pub async fn source(
    stack: &Stack,
    app: &App,
    revision: &str,
) -> anyhow::Result<provision_plone::deploy::Source> {
    let submodules = stack.deploy_settings(&app.name).enable_submodules;
    let local = stack.base_dir().join(&app.repository);
    if local.exists() {
        let tree = provision_plone::deploy::git_archive(&local, revision, submodules)
            .await
            .with_context(|| {
                format!(
                    "exporting revision {revision} of {} with git archive",
                    local.display()
                )
            })?;
        return Ok(provision_plone::deploy::Source::Pushed(tree));
    }
    Ok(provision_plone::deploy::Source::Git {
        url: app.repository.clone(),
        revision: revision.to_string(),
        submodules,
    })
}
