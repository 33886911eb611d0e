//! The Solr server of the `solr` layer: Java from Debian, the distribution archive (checked,
//! then unpacked into its own directory, `current` link switched atomically), its own user,
//! the Solr home on the data directory, a systemd unit, the configset collective.solr needs and
//! the cores made from it.

use provision_core::phase::Phase;
use provision_core::resource::{
    Directory, File, Packages, Resource, Script, Service, Symlink, Unit, User,
};
use provision_core::shell::quote;
use provision_core::template::Templates;
use serde::Serialize;

use crate::error::SolrError;
use crate::settings::{REBUILD_SUFFIX, SolrSettings};

/// The systemd service.
pub const SERVICE: &str = "solr";
/// The host's tool for the cores (create, ping, reload, rebuild, swap); see its head.
pub const CORE_COMMAND: &str = "/usr/local/sbin/provision-solr-core";
/// The file in an unpacked distribution that records the sha512 of its archive.
pub const ARCHIVE_MARKER: &str = ".provision-archive-sha512";
/// How long the core tool waits for Solr or a core's ping (seconds).
pub const WAIT_SECONDS: u32 = 300;

/// The configset: collective.solr's schema and core configuration, written for Solr 9.
pub const SCHEMA_XML: &str = include_str!("templates/solr/schema.xml");
pub const SOLRCONFIG_XML: &str = include_str!("templates/solr/solrconfig.xml");
pub const STOPWORDS_TXT: &str = include_str!("templates/solr/stopwords.txt");
pub const SYNONYMS_TXT: &str = include_str!("templates/solr/synonyms.txt");

pub(crate) const ENV_TEMPLATE: &str = "solr/solr.in.sh.j2";
pub(crate) const UNIT_TEMPLATE: &str = "solr/solr.service.j2";
pub(crate) const SOLR_XML_TEMPLATE: &str = "solr/solr.xml.j2";
pub(crate) const CORE_TOOL_TEMPLATE: &str = "solr/solr-core.sh.j2";
pub(crate) const INSTALL_TEMPLATE: &str = "solr/install-archive.sh.j2";

/// The packages of a Solr host: Java, curl (downloads and the CoreAdmin API), procps (bin/solr
/// needs `ps`).
pub fn packages(settings: &SolrSettings) -> Packages {
    Packages::new([
        settings.java_package.as_str(),
        "curl",
        "ca-certificates",
        "procps",
    ])
}

#[derive(Serialize)]
struct EnvContext<'a> {
    home: &'a str,
    log_dir: &'a str,
    port: u16,
    bind_address: String,
    allowlist: String,
    heap: String,
    extra: &'a [(String, String)],
}

/// The environment file (`SOLR_INCLUDE`).
pub fn environment_file(
    settings: &SolrSettings,
    templates: &Templates,
) -> Result<String, SolrError> {
    settings.check()?;
    Ok(templates.render(
        ENV_TEMPLATE,
        &EnvContext {
            home: &settings.data_dir,
            log_dir: &settings.log_dir,
            port: settings.port,
            bind_address: settings.bind_address.to_string(),
            allowlist: settings.allowlist(),
            heap: format!("{}m", settings.heap_mb),
            extra: &settings.extra_environment,
        },
    )?)
}

#[derive(Serialize)]
struct UnitContext<'a> {
    version: &'a str,
    user: &'a str,
    group: &'a str,
    env_file: &'a str,
    install_dir: String,
    exec_start: String,
    reload_script: String,
    wait_command: String,
    start_timeout: u32,
    open_files: u64,
}

/// `solr.service`.
pub fn unit(settings: &SolrSettings, templates: &Templates) -> Result<String, SolrError> {
    settings.check()?;
    Ok(templates.render(
        UNIT_TEMPLATE,
        &UnitContext {
            version: &settings.archive.version,
            user: &settings.user,
            group: &settings.group,
            env_file: &settings.env_file,
            install_dir: settings.current_link(),
            exec_start: settings.exec_start(),
            reload_script: format!("{CORE_COMMAND} reload-all"),
            wait_command: format!("{CORE_COMMAND} wait"),
            start_timeout: WAIT_SECONDS * 2,
            open_files: settings.open_files,
        },
    )?)
}

#[derive(Serialize)]
struct SolrXmlContext {
    configsets: String,
    max_boolean_clauses: u32,
}

/// `solr.xml` in the Solr home.
pub fn solr_xml(settings: &SolrSettings, templates: &Templates) -> Result<String, SolrError> {
    settings.check()?;
    Ok(templates.render(
        SOLR_XML_TEMPLATE,
        &SolrXmlContext {
            configsets: settings.configsets_dir(),
            max_boolean_clauses: settings.max_boolean_clauses,
        },
    )?)
}

#[derive(Serialize)]
struct CoreToolContext<'a> {
    command: &'static str,
    base_url: String,
    home: &'a str,
    configset: &'a str,
    suffix: &'static str,
    service: &'static str,
    wait_seconds: u32,
}

/// The core tool ([`CORE_COMMAND`]).
pub fn core_tool(settings: &SolrSettings, templates: &Templates) -> Result<String, SolrError> {
    settings.check()?;
    Ok(templates.render(
        CORE_TOOL_TEMPLATE,
        &CoreToolContext {
            command: "provision-solr-core",
            base_url: settings.base_url(),
            home: &settings.data_dir,
            configset: &settings.configset,
            suffix: REBUILD_SUFFIX,
            service: SERVICE,
            wait_seconds: WAIT_SECONDS,
        },
    )?)
}

#[derive(Serialize)]
struct InstallContext<'a> {
    version: &'a str,
    url: &'a str,
    sha512: &'a str,
    install_root: &'a str,
    install_dir: String,
    start_program: Option<&'a str>,
    marker: &'static str,
}

/// The resource "the archive with this sha512 is unpacked in the install directory": checked
/// by the marker the install leaves, fixed by downloading, checking the sha512, and unpacking.
pub fn archive(settings: &SolrSettings, templates: &Templates) -> Result<Script, SolrError> {
    settings.check()?;
    let archive = &settings.archive;
    let install_dir = settings.install_dir();
    let fix = templates.render(
        INSTALL_TEMPLATE,
        &InstallContext {
            version: &archive.version,
            url: &archive.url,
            sha512: &archive.sha512,
            install_root: &settings.install_root,
            install_dir: install_dir.clone(),
            start_program: settings.start_program(),
            marker: ARCHIVE_MARKER,
        },
    )?;
    let check = format!(
        "[ \"$(cat {} 2>/dev/null)\" = {} ]",
        quote(&format!("{install_dir}/{ARCHIVE_MARKER}")),
        archive.sha512
    );
    Ok(Script::new(
        &format!("solr-archive-{}", archive.version),
        &format!("install Solr {} from {}", archive.version, archive.url),
        &check,
        fix.trim_end(),
    ))
}

/// The resource "core `core` exists": checked on disk (Solr may be down), fixed by creating it
/// from the configset through CoreAdmin once Solr answers, then waiting for its ping.
pub fn core(core: &str) -> Script {
    Script::new(
        &format!("solr-core-{core}"),
        &format!("create the Solr core {core}"),
        &format!("{CORE_COMMAND} exists {core}"),
        &format!("{CORE_COMMAND} ensure {core}"),
    )
}

/// What asks a core's health: exits 0 when its ping handler answers OK. Runs on the Solr host.
pub fn ping_command(core: &str) -> String {
    format!("{CORE_COMMAND} ping {core}")
}

/// The URL of a core's ping handler (`status` is `OK` when healthy).
pub fn ping_url(settings: &SolrSettings, core: &str) -> String {
    format!("{}/{core}/admin/ping", settings.base_url())
}

/// The resources of a Solr host for one phase: at setup the packages, the user and the data
/// and log directories; at configure the distribution, the link, the configset and
/// configuration files, the unit, the service (restarted when the distribution, its
/// environment, `solr.xml` or the unit changed; reloaded, core by core, when the configset
/// changed), then the cores.
pub fn resources(
    settings: &SolrSettings,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, SolrError> {
    settings.check()?;
    let user = settings.user.as_str();
    let group = settings.group.as_str();
    let mut resources: Vec<Resource> = Vec::new();
    match phase {
        Phase::Setup => {
            resources.push(packages(settings).into());
            let mut account = User::system(user).home(&settings.data_dir);
            if group != user {
                resources.push(provision_core::resource::Group::system(group).into());
                account = account.group(group);
            }
            resources.push(account.into());
            for dir in [&settings.data_dir, &settings.log_dir] {
                resources.push(Directory::new(dir).owner(user, group).mode(0o750).into());
            }
        }
        Phase::Configure => {
            let archive = archive(settings, templates)?;
            let link = Symlink::new(settings.current_link(), settings.install_dir());
            let config_dir = |path: String| -> Resource {
                Directory::new(path).owner("root", group).mode(0o750).into()
            };
            let config_file = |path: String, content: &str| -> File {
                File::new(path, content.to_string())
                    .owner("root", group)
                    .mode(0o640)
            };
            let conf = settings.configset_conf_dir();
            let configset: Vec<File> = [
                ("schema.xml", SCHEMA_XML),
                ("solrconfig.xml", SOLRCONFIG_XML),
                ("stopwords.txt", STOPWORDS_TXT),
                ("synonyms.txt", SYNONYMS_TXT),
            ]
            .into_iter()
            .map(|(name, content)| config_file(format!("{conf}/{name}"), content))
            .collect();
            let solr_xml = config_file(
                format!("{}/solr.xml", settings.data_dir),
                &solr_xml(settings, templates)?,
            );
            let env = File::new(&settings.env_file, environment_file(settings, templates)?);
            let tool = File::new(CORE_COMMAND, core_tool(settings, templates)?).mode(0o755);
            let unit = Unit::new(format!("{SERVICE}.service"), unit(settings, templates)?);

            let mut service = Service::running(SERVICE);
            for id in [
                Resource::from(archive.clone()).id(),
                Resource::from(link.clone()).id(),
                Resource::from(solr_xml.clone()).id(),
                Resource::from(env.clone()).id(),
                Resource::from(unit.clone()).id(),
            ] {
                service = service.restart_on(id);
            }
            for file in &configset {
                service = service.reload_on(Resource::from(file.clone()).id());
            }

            resources.push(Directory::new(&settings.install_root).into());
            resources.push(archive.into());
            resources.push(link.into());
            resources.push(config_dir(settings.configsets_dir()));
            resources.push(config_dir(format!(
                "{}/{}",
                settings.configsets_dir(),
                settings.configset
            )));
            resources.push(config_dir(conf));
            resources.extend(configset.into_iter().map(Resource::from));
            resources.push(solr_xml.into());
            resources.push(env.into());
            resources.push(tool.into());
            resources.push(unit.into());
            resources.push(service.into());
            resources.extend(settings.cores.iter().map(|c| Resource::from(core(c))));
        }
        Phase::Deploy => {}
    }
    Ok(resources)
}
