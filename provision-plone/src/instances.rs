//! What an instance host needs before its first release (the cookbook's instances-setup and
//! python_base_setup): packages to build Plone, the app user, the release directories, the
//! clients' systemd template unit and their log rotation.

use serde::Serialize;

use crate::error::PloneError;
use crate::settings::{AppKind, InstanceSettings};
use provision_core::phase::Phase;
use provision_core::resource::{
    Directory, File, Group, Instances, Packages, Resource, Script, Service, Symlink, Unit, User,
};
use provision_core::stack::CacheArchive;
use provision_core::template::Templates;

pub(crate) const UNIT_TEMPLATE: &str = "plone/client.service.j2";
pub(crate) const LOGROTATE_TEMPLATE: &str = "plone/logrotate.j2";

/// Debian 12 packages a Plone build needs: Python with venv and headers, a compiler, git, and
/// the headers of the C extensions without wheels for every platform (lxml, Pillow, cffi).
pub const BUILD_PACKAGES: &[&str] = &[
    "build-essential",
    "ca-certificates",
    "curl",
    "git",
    "libffi-dev",
    "libjpeg-dev",
    "libpng-dev",
    "libxml2-dev",
    "libxslt1-dev",
    "logrotate",
    "python3",
    "python3-dev",
    "python3-venv",
    "zlib1g-dev",
];

/// Checks a candidate logrotate file (only a failure's errors are shown).
const LOGROTATE_CHECK: &str = "{ out=$(logrotate -d {} 2>&1) \
     || { printf '%s\\n' \"$out\" | grep -i error >&2; false; }; }";

#[derive(Serialize)]
struct UnitContext<'a> {
    app: &'a str,
    unit_prefix: String,
    deploy_to: &'a str,
    user: &'a str,
    group: &'a str,
    environment_file: String,
    exec_start: String,
    stop_timeout: u32,
}

#[derive(Serialize)]
struct LogrotateContext<'a> {
    app: &'a str,
    log_dir: String,
    user: &'a str,
    group: &'a str,
}

/// The clients' environment file: the public and the private environment, `NAME="value"`.
pub fn render_environment(settings: &InstanceSettings) -> Result<String, PloneError> {
    let mut out = format!(
        "# Managed by provision: the environment of app {}'s Plone clients. It may hold\n\
         # passwords: root:{}, mode 0640, read by systemd.\n",
        settings.app, settings.group
    );
    let private = settings
        .private_environment
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()));
    for (name, value) in settings.client_environment().into_iter().chain(private) {
        let line = provision_core::shell::environment_file_line(name, value)
            .map_err(|reason| PloneError::invalid("environment", name, reason))?;
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// The command a client unit runs, `%i` being the client's name.
pub fn exec_start(settings: &InstanceSettings) -> String {
    let current = settings.current_link();
    match &settings.kind {
        // plone.recipe.zope2instance's `console`: the WSGI server in the foreground, exec'd.
        AppKind::Buildout(_) => format!("{current}/bin/%i console"),
        AppKind::Pip(_) => format!("{current}/.venv/bin/runwsgi {current}/etc/%i/zope.ini"),
    }
}

/// The clients' template unit, `plone-<app>@.service`.
pub fn render_unit(
    settings: &InstanceSettings,
    templates: &Templates,
) -> Result<String, PloneError> {
    settings.validate()?;
    let context = UnitContext {
        app: &settings.app,
        unit_prefix: format!("plone-{}", settings.app),
        deploy_to: &settings.deploy_to,
        user: &settings.user,
        group: &settings.group,
        environment_file: settings.environment_file(),
        exec_start: exec_start(settings),
        stop_timeout: settings.stop_timeout,
    };
    Ok(templates.render(UNIT_TEMPLATE, &context)?)
}

/// `/etc/logrotate.d/plone-<app>`.
pub fn render_logrotate(
    settings: &InstanceSettings,
    templates: &Templates,
) -> Result<String, PloneError> {
    settings.validate()?;
    Ok(templates.render(
        LOGROTATE_TEMPLATE,
        &LogrotateContext {
            app: &settings.app,
            log_dir: format!("{}/var/log", settings.shared_dir()),
            user: &settings.user,
            group: &settings.group,
        },
    )?)
}

/// The packages of an instance host: [`BUILD_PACKAGES`] and the app's own.
pub fn packages(settings: &InstanceSettings) -> Packages {
    let mut names: Vec<String> = BUILD_PACKAGES.iter().map(|p| p.to_string()).collect();
    for package in &settings.os_packages {
        if !names.contains(package) {
            names.push(package.clone());
        }
    }
    Packages::new(names)
}

/// The resources of an instance host for one phase. Everything is at setup: the generated
/// configs (`deploy.cfg`, `zope.conf`) are not resources but part of each release (see
/// [`crate::deploy`]), so that a change makes a new release that `current` moves to atomically.
pub fn resources(
    settings: &InstanceSettings,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, PloneError> {
    settings.validate()?;
    let mut resources: Vec<Resource> = Vec::new();
    if phase != Phase::Setup {
        return Ok(resources);
    }
    let (user, group) = (settings.user.as_str(), settings.group.as_str());
    let shared = settings.shared_dir();
    resources.push(packages(settings).into());
    resources.push(Group::system(group).into());
    resources.push(User::system(user).group(group).into());
    resources.extend(release_dirs(settings)?);
    if let Some(blob_dir) = &settings.blob_dir {
        resources.push(
            Directory::new(blob_dir.clone())
                .owner(user, group)
                .mode(0o700)
                .into(),
        );
        if settings.shared_blobs {
            resources
                .push(Symlink::new(format!("{shared}/var/blobstorage"), blob_dir.clone()).into());
        }
    }
    resources.push(
        File::new(settings.environment_file(), render_environment(settings)?)
            .owner("root", group)
            .mode(0o640)
            // Its diff would show the broker's password (percent-encoded, which masking misses).
            .secret()
            .into(),
    );
    // ExecStart points into a release that does not exist before the first deploy.
    resources.push(
        Unit::new(settings.unit_template(), render_unit(settings, templates)?)
            .without_verify()
            .into(),
    );
    resources.push(
        File::new(
            format!("/etc/logrotate.d/plone-{}", settings.app),
            render_logrotate(settings, templates)?,
        )
        .validate(LOGROTATE_CHECK)
        .into(),
    );
    Ok(resources)
}

/// The directories the release scripts need (`deploy_to`, `releases`, `shared` with its
/// shared directories and `var/log`), owned by the app user; also for apps without clients
/// (the ZEO server's buildout mode).
pub fn release_dirs(settings: &InstanceSettings) -> Result<Vec<Resource>, PloneError> {
    settings.validate_release()?;
    let (user, group) = (settings.user.as_str(), settings.group.as_str());
    let dir =
        |path: String| -> Resource { Directory::new(path).owner(user, group).mode(0o755).into() };
    let shared = settings.shared_dir();
    let mut resources = vec![
        dir(settings.deploy_to.clone()),
        dir(settings.releases_dir()),
        dir(shared.clone()),
    ];
    for link in &settings.deploy.shared_links {
        resources.push(dir(format!("{shared}/{}", link.shared)));
    }
    resources.push(dir(format!("{shared}/var/log")));
    for archive in &settings.deploy.cache_archives {
        resources.push(cache_archive(settings, archive).into());
    }
    // The cookbook's `shared/log`, where logs are looked for.
    resources.push(Symlink::new(format!("{shared}/log"), "var/log").into());
    Ok(resources)
}

/// The clients' services, enabled and running. Converge them only once a release is live
/// (after the first [`crate::deploy::switch_current`]); restarts are the rolling restart's job,
/// so nothing here restarts on a change.
pub fn client_services(settings: &InstanceSettings) -> Vec<Resource> {
    let mut resources: Vec<Resource> = settings
        .clients
        .iter()
        .map(|c| Service::running(settings.client_unit(&c.name)).into())
        .collect();
    resources.push(surplus_clients(settings).into());
    resources
}

/// A `buildout_cache_archives` tarball unpacked as the app user into an empty directory
/// (or, with `purge`, whenever its URL changed). The password goes to curl on stdin, never on
/// a command line.
fn cache_archive(settings: &InstanceSettings, archive: &CacheArchive) -> Script {
    use provision_core::shell::quote;
    let target = format!("{}/{}", settings.deploy_to, archive.path);
    let marker = format!("{target}/.provision-archive");
    let check = if archive.purge {
        format!("grep -qxF {} {}", quote(&archive.url), quote(&marker))
    } else {
        format!("test -n \"$(ls -A {} 2>/dev/null)\"", quote(&target))
    };
    let credentials = match (&archive.user, &archive.password) {
        (Some(user), password) => {
            let both = format!(
                "{user}:{}",
                password.as_ref().map(|p| p.expose()).unwrap_or_default()
            );
            // curl's config syntax: a quoted string with \ and " escaped.
            format!(
                "user = \"{}\"",
                both.replace('\\', "\\\\").replace('"', "\\\"")
            )
        }
        (None, _) => String::new(),
    };
    let app = quote(&settings.user);
    let fix = format!(
        "archive=$(mktemp)\n\
         trap 'rm -f \"$archive\"' EXIT\n\
         curl -fsSL --retry 2 -K - -o \"$archive\" {url} <<'PROVISION_CURL'\n{credentials}\nPROVISION_CURL\n\
         chmod 0644 \"$archive\"\n\
         install -d -o {app} -g {group} {target}\n\
         {purge}\
         runuser -u {app} -- tar -xf \"$archive\" -C {target} --no-same-owner\n\
         printf '%s\\n' {url} | runuser -u {app} -- sh -c 'cat > \"$1\"' marker {marker}",
        url = quote(&archive.url),
        group = quote(&settings.group),
        target = quote(&target),
        marker = quote(&marker),
        purge = if archive.purge {
            format!(
                "runuser -u {app} -- find {} -mindepth 1 -delete\n",
                quote(&target)
            )
        } else {
            String::new()
        },
    );
    Script::new(
        &format!("cache-archive:{}", archive.path),
        &format!("unpack {} into {target}", archive.url),
        &check,
        &fix,
    )
}

/// Clients beyond this host's count (`instance_count` lowered, fewer CPUs) stopped and
/// disabled: HAProxy no longer lists them, so they would only hold memory and ZEO
/// connections.
fn surplus_clients(settings: &InstanceSettings) -> Instances {
    Instances::of(
        format!("plone-{}@", settings.app),
        settings
            .clients
            .iter()
            .map(|c| settings.client_unit(&c.name))
            .collect(),
    )
}
