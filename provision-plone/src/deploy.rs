//! Capistrano-style deploys as shell scripts, one per step, each run with one
//! [`Host::exec`](provision_core::host::Host::exec) as root. They print `@key=value` lines for
//! the controller ([`Report`]) and fail with a message saying what failed (`@error=`, stderr).
//!
//! Layout on the host (`deploy_to`):
//!
//! ```text
//! releases/<UTC YYYYmmddHHMMSS>[-N]/   one per build; REVISION, .provision/{built,build.log,...}
//! shared/{eggs,downloads,extends,var,...}  linked into every release
//! shared/env                            zc.buildout's virtualenv (buildout kind)
//! shared/repo                           a mirror of the repository (git source)
//! current -> releases/...               the live release, switched atomically
//! previous -> releases/...              the release `current` pointed at before
//! ```
//!
//! The steps: [`prepare_release`] (build a release, or report the live one unchanged),
//! [`switch_current`], [`rollback`], [`prune_releases`], [`release_status`], [`client_health`],
//! [`client_log_tail`], [`restart_client`]. A rolling restart is built from them: for each
//! client, drain it, [`restart_client`], [`client_health`], put it back; on a failed health
//! check, [`rollback`] on that host and restart its clients again.

use std::path::Path;

use base64_encode::encode as base64;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::buildout::{buildout_args, render_deploy_cfg};
use crate::error::PloneError;
use crate::pip::{config_dir, render_zope_conf, render_zope_ini};
use crate::settings::{AppKind, InstanceSettings, SharedLink};
use provision_core::host::{Command, Output};
use provision_core::template::Templates;

pub(crate) const PREPARE_TEMPLATE: &str = "plone/prepare-release.sh.j2";
pub(crate) const SWITCH_TEMPLATE: &str = "plone/switch-current.sh.j2";
pub(crate) const ROLLBACK_TEMPLATE: &str = "plone/rollback.sh.j2";
pub(crate) const PRUNE_TEMPLATE: &str = "plone/prune-releases.sh.j2";
pub(crate) const STATUS_TEMPLATE: &str = "plone/release-status.sh.j2";
pub(crate) const HEALTH_TEMPLATE: &str = "plone/client-health.sh.j2";
pub(crate) const SITE_TEMPLATE: &str = "plone/ensure-site.sh.j2";
pub(crate) const LOG_TAIL_TEMPLATE: &str = "plone/client-log-tail.sh.j2";

/// Lines of the build log shown when a build fails.
const LOG_LINES: u32 = 40;

/// A file generated into each release (its path relative to the release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigFile {
    pub path: String,
    pub content: String,
}

/// Where a release's tree comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The host keeps a mirror of `url` in `shared/repo`, fetches it, and exports `revision`
    /// (a branch, tag or commit). With `submodules`, the commit's git submodules come along
    /// (recursively), checked out in a working clone kept in `shared/checkout` whose origin is
    /// `url`, so relative submodule URLs resolve as in a developer's clone.
    Git {
        url: String,
        revision: String,
        submodules: bool,
    },
    /// The controller sends the tree (a private repository without deploy keys on the hosts):
    /// a tar of `commit`, made by [`git_archive`].
    Pushed(PushedTree),
}

/// A tree exported on the controller, sent to the host on stdin.
#[derive(Clone, PartialEq, Eq)]
pub struct PushedTree {
    /// The full commit id.
    pub commit: String,
    /// A tar of the tree at `commit`.
    pub tar: Vec<u8>,
}

impl std::fmt::Display for Source {
    /// What a progress line says is being built.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Git { url, revision, .. } => write!(f, "{url} at {revision}"),
            Source::Pushed(tree) => {
                write!(f, "commit {}", &tree.commit[..12.min(tree.commit.len())])
            }
        }
    }
}

impl std::fmt::Debug for PushedTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PushedTree({}, {} bytes)", self.commit, self.tar.len())
    }
}

/// The files generated into each release: `deploy.cfg` (buildout), or `etc/<client>/zope.conf`
/// and `zope.ini` per client (pip).
pub fn config_files(
    settings: &InstanceSettings,
    templates: &Templates,
) -> Result<Vec<ConfigFile>, PloneError> {
    settings.validate()?;
    Ok(match &settings.kind {
        AppKind::Buildout(b) => vec![ConfigFile {
            path: b.config_name.clone(),
            content: render_deploy_cfg(settings, templates)?,
        }],
        AppKind::Pip(_) => {
            let mut files = Vec::new();
            for client in &settings.clients {
                let dir = config_dir(&client.name);
                files.push(ConfigFile {
                    path: format!("{dir}/zope.conf"),
                    content: render_zope_conf(settings, &client.name, templates)?,
                });
                files.push(ConfigFile {
                    path: format!("{dir}/zope.ini"),
                    content: render_zope_ini(settings, &client.name, templates)?,
                });
            }
            files
        }
    })
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// What the build settings are, for the fingerprint: a change of them needs a new build.
fn build_settings_line(settings: &InstanceSettings) -> String {
    match &settings.kind {
        AppKind::Buildout(b) => format!(
            "buildout python={} version={} bootstrap={} args={}",
            settings.python,
            b.buildout_version.as_deref().unwrap_or(""),
            b.bootstrap_params
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            buildout_args(b).join(" ")
        ),
        AppKind::Pip(p) => format!(
            "pip python={} requirements={} constraints={} args={}",
            settings.python,
            p.requirements,
            p.constraints.as_deref().unwrap_or(""),
            p.pip_args.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
    }
}

/// `sha256sum` lines of the generated files (sorted by path), then one line for the build
/// settings and the shared links. Kept in each release as `.provision/config.sha256sum`.
fn manifest(settings: &InstanceSettings, files: &[ConfigFile]) -> String {
    let mut sorted: Vec<&ConfigFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = String::new();
    for file in sorted {
        out.push_str(&format!(
            "{}  {}\n",
            sha256_hex(file.content.as_bytes()),
            file.path
        ));
    }
    let links: Vec<String> = settings
        .deploy
        .shared_links
        .iter()
        .map(|l| format!("{}={}", l.shared, l.release_path))
        .collect();
    let build = format!(
        "{} links={}",
        build_settings_line(settings),
        links.join(",")
    );
    out.push_str(&format!(
        "{}  (build settings)\n",
        sha256_hex(build.as_bytes())
    ));
    // The clients read it from their environment file, not from the release; a change still
    // needs a rollout (a new broker), so it counts as configuration.
    if !settings.private_environment.is_empty() {
        let private: Vec<String> = settings
            .private_environment
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        out.push_str(&format!(
            "{}  (private environment)\n",
            sha256_hex(private.join("\n").as_bytes())
        ));
    }
    out
}

/// The fingerprint of what a release is built from besides its revision: the generated files
/// and the build settings. A live release with the same revision and fingerprint is left as it
/// is; [`release_status`] reports the live one's as `@config_sha256=`.
pub fn fingerprint(
    settings: &InstanceSettings,
    templates: &Templates,
) -> Result<String, PloneError> {
    let files = config_files(settings, templates)?;
    Ok(fingerprint_of(settings, &files))
}

/// [`fingerprint`] of a release whose generated files are `files` ([`prepare_release_of`]).
pub fn fingerprint_of(settings: &InstanceSettings, files: &[ConfigFile]) -> String {
    sha256_hex(manifest(settings, files).as_bytes())
}

#[derive(Serialize)]
struct Common<'a> {
    deploy_to: &'a str,
    user: &'a str,
    group: &'a str,
    lock_timeout: u32,
}

fn common(settings: &InstanceSettings) -> Common<'_> {
    Common {
        deploy_to: &settings.deploy_to,
        user: &settings.user,
        group: &settings.group,
        lock_timeout: settings.deploy.lock_timeout,
    }
}

#[derive(Serialize)]
struct EmbeddedFile {
    path: String,
    base64: String,
    marker: String,
}

#[derive(Serialize)]
struct BuildoutStep<'a> {
    config: &'a str,
    version: &'a str,
    bootstrap_args: Vec<&'a str>,
    args: Vec<String>,
}

#[derive(Serialize)]
struct PipStep<'a> {
    requirements: &'a str,
    constraints: Option<&'a str>,
    args: Vec<&'a str>,
    zope_confs: Vec<String>,
}

#[derive(Serialize)]
struct PrepareContext<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    source_description: String,
    git_url: Option<&'a str>,
    submodules: bool,
    revision: &'a str,
    fingerprint: String,
    always_build: bool,
    log_lines: u32,
    shared_links: &'a [SharedLink],
    shared_dirs: Vec<String>,
    files: Vec<EmbeddedFile>,
    manifest: String,
    python: &'a str,
    buildout: Option<BuildoutStep<'a>>,
    pip: Option<PipStep<'a>>,
    live_check: Option<&'a str>,
}

fn is_commit_id(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The script that prepares a release, as a command (with the tree on stdin for a pushed
/// source). It prints `@revision=<commit>`, then either `@unchanged=<live release>` (same
/// revision and [`fingerprint`], unless `always_build_on_deploy`) or `@building=<release>` and,
/// when the build succeeded, `@release=<release>`. A failed build exits non-zero after
/// printing the end of its log to stderr, `@failed_release=` and `@log=`; nothing of the live
/// release changes. See [`parse_prepared`].
///
/// `live_check` is a shell script run when the live release stays (the controller's check of
/// what must run on it); its output comes back in [`Prepared::Unchanged`], saving the
/// controller a round trip of its own.
pub fn prepare_release(
    settings: &InstanceSettings,
    source: &Source,
    live_check: Option<&str>,
    templates: &Templates,
) -> Result<Command, PloneError> {
    let files = config_files(settings, templates)?;
    prepare_release_of(settings, &files, source, live_check, templates)
}

/// [`prepare_release`] with these generated files instead of the clients' (`settings.clients`
/// may be empty): how another layer (the ZEO server's buildout mode) builds its releases.
pub fn prepare_release_of(
    settings: &InstanceSettings,
    files: &[ConfigFile],
    source: &Source,
    live_check: Option<&str>,
    templates: &Templates,
) -> Result<Command, PloneError> {
    settings.validate_release()?;
    let manifest = manifest(settings, files);
    let (git_url, revision, source_description) = match source {
        Source::Git { url, revision, .. } => {
            if url.is_empty() || url.contains(['\n', '\r']) {
                return Err(PloneError::invalid(
                    "repository",
                    url,
                    "not a repository URL",
                ));
            }
            if revision.is_empty()
                || revision.starts_with('-')
                || revision.contains(char::is_whitespace)
            {
                return Err(PloneError::invalid("revision", revision, "not a revision"));
            }
            (
                Some(url.as_str()),
                revision.as_str(),
                format!("{url} at {revision}"),
            )
        }
        Source::Pushed(tree) => {
            if !is_commit_id(&tree.commit) {
                return Err(PloneError::invalid(
                    "revision",
                    &tree.commit,
                    "a pushed tree needs its full commit id",
                ));
            }
            (
                None,
                tree.commit.as_str(),
                format!("commit {} sent by the controller", tree.commit),
            )
        }
    };
    let embedded = files
        .iter()
        .map(|f| EmbeddedFile {
            path: f.path.clone(),
            base64: base64(f.content.as_bytes()),
            marker: format!("PROVISION_EOF_{}", &sha256_hex(f.content.as_bytes())[..16]),
        })
        .collect();
    let mut shared_dirs = vec!["var/log".to_string()];
    let (buildout, pip) = match &settings.kind {
        AppKind::Buildout(b) => (
            Some(BuildoutStep {
                config: &b.config_name,
                version: b.buildout_version.as_deref().unwrap_or(""),
                bootstrap_args: b.bootstrap_params.split_whitespace().collect(),
                args: buildout_args(b),
            }),
            None,
        ),
        AppKind::Pip(p) => {
            shared_dirs.push("var/cache".to_string());
            shared_dirs.extend(settings.clients.iter().map(|c| format!("var/{}", c.name)));
            (
                None,
                Some(PipStep {
                    requirements: &p.requirements,
                    constraints: p.constraints.as_deref(),
                    args: p.pip_args.split_whitespace().collect(),
                    zope_confs: settings
                        .clients
                        .iter()
                        .map(|c| format!("{}/zope.conf", config_dir(&c.name)))
                        .collect(),
                }),
            )
        }
    };
    let context = PrepareContext {
        common: common(settings),
        source_description,
        git_url,
        submodules: matches!(
            source,
            Source::Git {
                submodules: true,
                ..
            }
        ),
        revision,
        fingerprint: sha256_hex(manifest.as_bytes()),
        always_build: settings.deploy.always_build_on_deploy,
        log_lines: LOG_LINES,
        shared_links: &settings.deploy.shared_links,
        shared_dirs,
        files: embedded,
        manifest,
        python: &settings.python,
        buildout,
        pip,
        live_check,
    };
    let script = templates.render(PREPARE_TEMPLATE, &context)?;
    Ok(match source {
        Source::Git { .. } => Command::new(script),
        Source::Pushed(tree) => Command::new(script).stdin(tree.tar.clone()),
    })
}

#[derive(Serialize)]
struct ReleaseContext<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    release: &'a str,
}

#[derive(Serialize)]
struct PruneContext<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    keep: u32,
}

/// Make `release` (a path under `releases/` or a release name) live: `current` is switched
/// atomically and the release it pointed at becomes `previous`. Refuses a release that did
/// not build completely. Prints `@current=`, `@previous=` (`@unchanged=` when it was live).
pub fn switch_current(
    settings: &InstanceSettings,
    release: &str,
    templates: &Templates,
) -> Result<String, PloneError> {
    settings.validate_release()?;
    Ok(templates.render(
        SWITCH_TEMPLATE,
        &ReleaseContext {
            common: common(settings),
            release,
        },
    )?)
}

/// Point `current` back at `previous`; fails with a clear message when there is none. Prints
/// `@current=` (now live), `@rolled_back_from=` and `@previous=` (the new previous release).
pub fn rollback(settings: &InstanceSettings, templates: &Templates) -> Result<String, PloneError> {
    settings.validate_release()?;
    Ok(templates.render(ROLLBACK_TEMPLATE, &common(settings))?)
}

/// Remove releases beyond `deploy.keep_releases`, never the live or the previous one. Prints
/// `@kept=NAME` and `@removed=NAME`.
pub fn prune_releases(
    settings: &InstanceSettings,
    templates: &Templates,
) -> Result<String, PloneError> {
    settings.validate_release()?;
    Ok(templates.render(
        PRUNE_TEMPLATE,
        &PruneContext {
            common: common(settings),
            keep: settings.deploy.keep_releases,
        },
    )?)
}

/// The releases, read-only: `@current=`, `@revision=` and `@config_sha256=` of the live one,
/// `@previous=`, `@release=NAME STATE` (built, failed, rolled_back) for each.
pub fn release_status(
    settings: &InstanceSettings,
    templates: &Templates,
) -> Result<String, PloneError> {
    settings.validate_release()?;
    Ok(templates.render(STATUS_TEMPLATE, &common(settings))?)
}

#[derive(Serialize)]
struct HealthContext {
    url: String,
    timeout: u64,
}

/// Wait up to `timeout_seconds` for `http://address:port/path` to answer 200 (curl, or
/// python3 when curl is missing). Prints `@health=ok|failed`, `@status=`, `@seconds=`; exits
/// non-zero when it never answered 200.
pub fn client_health(
    address: &str,
    port: u16,
    path: &str,
    timeout_seconds: u64,
    templates: &Templates,
) -> Result<String, PloneError> {
    if address.is_empty() || address.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(PloneError::invalid(
            "address",
            address,
            "not a host address",
        ));
    }
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        return Err(PloneError::invalid(
            "health path",
            path,
            "must start with / and have no spaces",
        ));
    }
    let host = if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    Ok(templates.render(
        HEALTH_TEMPLATE,
        &HealthContext {
            url: format!("http://{host}:{port}{path}"),
            timeout: timeout_seconds.max(1),
        },
    )?)
}

/// The Plone site a deploy creates when it is missing (`plone_instances.create_site`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub id: String,
    pub title: String,
    /// Add-on profiles (`extension_ids`).
    pub profiles: Vec<String>,
    pub language: String,
    pub timezone: String,
}

#[derive(Serialize)]
struct SiteContext<'a> {
    #[serde(flatten)]
    common: Common<'a>,
    client: &'a str,
    client_url: String,
    zope_conf: String,
    python: String,
    site_id: &'a str,
    title: &'a str,
    profiles: &'a [String],
    language: &'a str,
    timezone: &'a str,
}

/// Create `site` when the database has none, with the live release's code, through the first
/// client's configuration (less its persistent ZEO cache, which the running client holds).
/// When the site answers on that client already, nothing starts. Prints `@site=exists|created`.
pub fn ensure_site(
    settings: &InstanceSettings,
    site: &Site,
    address: &str,
    templates: &Templates,
) -> Result<String, PloneError> {
    settings.validate()?;
    let client = settings
        .clients
        .first()
        .ok_or_else(|| PloneError::invalid("clients", "none", "a host needs a client"))?;
    if !provision_core::stack::is_site_id(&site.id) {
        return Err(PloneError::invalid(
            "site id",
            &site.id,
            "letters, digits, `-`, `_` and `.` only",
        ));
    }
    let (zope_conf, python) = match &settings.kind {
        AppKind::Buildout(_) => (
            format!("parts/{}/etc/zope.conf", client.name),
            format!("parts/{}/bin/interpreter", client.name),
        ),
        AppKind::Pip(_) => (
            format!("{}/zope.conf", config_dir(&client.name)),
            ".venv/bin/python".to_string(),
        ),
    };
    let host = if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    Ok(templates.render(
        SITE_TEMPLATE,
        &SiteContext {
            common: common(settings),
            client: &client.name,
            client_url: format!("http://{host}:{}/{}", client.port, site.id),
            zope_conf,
            python,
            site_id: &site.id,
            title: &site.title,
            profiles: &site.profiles,
            language: &site.language,
            timezone: &site.timezone,
        },
    )?)
}

#[derive(Serialize)]
struct LogTailContext {
    unit: String,
    lines: u32,
    log_file: String,
}

/// The last `lines` lines of a client's log: its journal, or its event log file.
pub fn client_log_tail(
    settings: &InstanceSettings,
    client: &str,
    lines: u32,
    templates: &Templates,
) -> Result<String, PloneError> {
    settings.validate()?;
    if !settings.clients.iter().any(|c| c.name == client) {
        return Err(PloneError::invalid(
            "client",
            client,
            "not a client of this host",
        ));
    }
    Ok(templates.render(
        LOG_TAIL_TEMPLATE,
        &LogTailContext {
            unit: settings.client_unit(client),
            lines: lines.max(1),
            log_file: format!("{}/var/log/{client}.log", settings.shared_dir()),
        },
    )?)
}

/// Restart one client (and enable it, so that it also starts at boot).
pub fn restart_client(settings: &InstanceSettings, client: &str) -> String {
    let unit = provision_core::shell::quote(&settings.client_unit(client));
    format!("systemctl enable --quiet {unit} && systemctl restart {unit}")
}

/// The `@key=value` lines a deploy script printed, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub pairs: Vec<(String, String)>,
}

impl Report {
    pub fn parse(stdout: &str) -> Report {
        Report {
            pairs: stdout
                .lines()
                .filter_map(|line| line.strip_prefix('@')?.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The last value of `key`; `None` when absent or empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The report of a step that succeeded, or an error with its message and the end of stderr
/// (the build log's last lines, for a failed build).
pub fn check_step(step: &str, output: &Output) -> Result<Report, PloneError> {
    let report = Report::parse(&output.stdout_lossy());
    if output.success() {
        return Ok(report);
    }
    let stderr = output.stderr_lossy();
    let message = report
        .get("error")
        .map(str::to_string)
        .unwrap_or_else(|| format!("{} without a message", output.describe_exit()));
    let tail: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("error: "))
        .collect();
    let start = tail.len().saturating_sub(LOG_LINES as usize + 1);
    let tail = tail[start..].join("\n");
    Err(PloneError::Step {
        step: step.to_string(),
        message,
        log_tail: (!tail.trim().is_empty()).then_some(tail),
    })
}

/// What [`prepare_release`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// The live release has the revision and the fingerprint: nothing was built.
    Unchanged {
        release: String,
        commit: String,
        /// What the `live_check` printed, when one was given.
        live_checked: Option<String>,
    },
    /// A new release was built; switch to it with [`switch_current`].
    Built { release: String, commit: String },
}

impl Prepared {
    pub fn release(&self) -> &str {
        match self {
            Prepared::Unchanged { release, .. } | Prepared::Built { release, .. } => release,
        }
    }

    pub fn commit(&self) -> &str {
        match self {
            Prepared::Unchanged { commit, .. } | Prepared::Built { commit, .. } => commit,
        }
    }
}

/// Read the output of [`prepare_release`].
pub fn parse_prepared(output: &Output) -> Result<Prepared, PloneError> {
    let report = check_step("prepare release", output)?;
    let commit = report.get("revision").unwrap_or_default().to_string();
    if let Some(release) = report.get("unchanged") {
        return Ok(Prepared::Unchanged {
            release: release.to_string(),
            commit,
            live_checked: live_checked(&output.stdout_lossy()),
        });
    }
    match report.get("release") {
        Some(release) => Ok(Prepared::Built {
            release: release.to_string(),
            commit,
        }),
        None => Err(PloneError::Step {
            step: "prepare release".to_string(),
            message: "the script ended without reporting a release".to_string(),
            log_tail: Some(output.stdout_lossy()),
        }),
    }
}

/// The lines the prepare script's live check printed between its marks; `None` without both.
fn live_checked(stdout: &str) -> Option<String> {
    let mut checked = String::new();
    for line in stdout
        .lines()
        .skip_while(|line| *line != "@live_check=start")
        .skip(1)
    {
        if line == "@live_check=end" {
            return Some(checked);
        }
        checked.push_str(line);
        checked.push('\n');
    }
    None
}

/// Export `revision` of the local repository at `repository` for a [`Source::Pushed`]: the
/// full commit id and a tar of its tree (`git archive`; committed files only). With
/// `submodules`, the tars of the commit's submodules (recursively, each at the commit the
/// superproject records) follow it, taken from their checkouts here; the host unpacks the
/// concatenation with `tar --ignore-zeros`.
pub async fn git_archive(
    repository: &Path,
    revision: &str,
    submodules: bool,
) -> Result<PushedTree, PloneError> {
    if revision.is_empty() || revision.starts_with('-') {
        return Err(PloneError::invalid("revision", revision, "not a revision"));
    }
    let output = git(
        repository,
        "rev-parse",
        &["--verify", "--quiet", &format!("{revision}^{{commit}}")],
    )
    .await?;
    if !output.status.success() {
        return Err(git_error(
            repository,
            "rev-parse",
            format!("revision {revision} is not a commit here"),
        ));
    }
    let mut commit = String::from_utf8_lossy(&output.stdout).trim().to_string();
    // A subdirectory of a larger repository (such as the examples of this one): its release
    // is the last commit that changed it, so commits elsewhere do not make a new release.
    let prefix = git(repository, "rev-parse", &["--show-prefix"]).await?;
    if prefix.status.success() && !String::from_utf8_lossy(&prefix.stdout).trim().is_empty() {
        let last = git(
            repository,
            "log",
            &["-1", "--format=%H", &commit, "--", "."],
        )
        .await?;
        let last = String::from_utf8_lossy(&last.stdout).trim().to_string();
        if !last.is_empty() {
            commit = last;
        }
    }
    let mut tar = archive(repository, &commit, "").await?;
    if submodules {
        // (checkout, commit, path prefix in the release) still to look into for submodules.
        let mut pending = vec![(repository.to_path_buf(), commit.clone(), String::new())];
        while let Some((dir, at, prefix)) = pending.pop() {
            for (path, sub_commit) in gitlinks(&dir, &at).await? {
                let checkout = dir.join(&path);
                let release_path = format!("{prefix}{path}/");
                let present = checkout.join(".git").exists()
                    && git(
                        &checkout,
                        "cat-file",
                        &["-e", &format!("{sub_commit}^{{commit}}")],
                    )
                    .await?
                    .status
                    .success();
                if !present {
                    return Err(git_error(
                        repository,
                        "archive",
                        format!(
                            "submodule {release_path} at {sub_commit} is not checked out here: \
                             run `git submodule update --init --recursive` in {}, or set \
                             enable_submodules = false",
                            repository.display()
                        ),
                    ));
                }
                tar.extend(archive(&checkout, &sub_commit, &release_path).await?);
                pending.push((checkout, sub_commit, release_path));
            }
        }
    }
    Ok(PushedTree { commit, tar })
}

fn git_error(repository: &Path, what: &str, message: String) -> PloneError {
    PloneError::Git {
        what: what.to_string(),
        repository: repository.display().to_string(),
        message,
    }
}

/// Runs `git -C dir SUBCOMMAND ARGS` on the controller.
async fn git(
    dir: &Path,
    subcommand: &str,
    args: &[&str],
) -> Result<std::process::Output, PloneError> {
    tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .arg(subcommand)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| git_error(dir, subcommand, format!("cannot run git: {e}")))
}

/// A tar of `commit` in the checkout at `dir`, its paths below `prefix`.
async fn archive(dir: &Path, commit: &str, prefix: &str) -> Result<Vec<u8>, PloneError> {
    let prefix = format!("--prefix={prefix}");
    let output = git(dir, "archive", &["--format=tar", &prefix, commit]).await?;
    if !output.status.success() {
        return Err(git_error(
            dir,
            "archive",
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(output.stdout)
}

/// The submodules of `commit` (below the current directory of `dir`): each path and the
/// commit the tree records for it.
async fn gitlinks(dir: &Path, commit: &str) -> Result<Vec<(String, String)>, PloneError> {
    let output = git(dir, "ls-tree", &["-r", "-z", commit]).await?;
    if !output.status.success() {
        return Err(git_error(
            dir,
            "ls-tree",
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(output
        .stdout
        .split(|b| *b == 0)
        .filter_map(|entry| {
            // `<mode> SP <type> SP <object> TAB <path>`
            let entry = std::str::from_utf8(entry).ok()?;
            let (meta, path) = entry.split_once('\t')?;
            let mut fields = meta.split(' ');
            (fields.next()? == "160000" && fields.next()? == "commit").then(|| {
                (
                    path.to_string(),
                    fields.next().unwrap_or_default().to_string(),
                )
            })
        })
        .collect())
}

/// Standard base64 without a dependency (core's `base64` is not one of ours).
mod base64_encode {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn rfc4648_vectors() {
            for (plain, encoded) in [
                ("", ""),
                ("f", "Zg=="),
                ("fo", "Zm8="),
                ("foo", "Zm9v"),
                ("foob", "Zm9vYg=="),
                ("fooba", "Zm9vYmE="),
                ("foobar", "Zm9vYmFy"),
            ] {
                assert_eq!(super::encode(plain.as_bytes()), encoded);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_keep_the_last_value_and_all_values() {
        let report = Report::parse("noise\n@kept=a\n@kept=b\n@error=\n@x=1=2\n");
        assert_eq!(report.all("kept"), ["a", "b"]);
        assert_eq!(report.get("kept"), Some("b"));
        assert_eq!(report.get("error"), None);
        assert_eq!(report.get("x"), Some("1=2"));
    }

    fn exited(status: u32, stdout: &str) -> Output {
        Output {
            status: Some(status),
            signal: None,
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    #[test]
    fn an_unchanged_release_brings_the_output_of_its_live_check() {
        let unchanged = "@revision=abc\n@live_check=start\n@0 enabled=enabled\n@0 active=inactive\n\
                         @1 ok=1\n@end\n@live_check=end\n@unchanged=/srv/www/site/releases/1\n";
        assert_eq!(
            parse_prepared(&exited(0, unchanged)).unwrap(),
            Prepared::Unchanged {
                release: "/srv/www/site/releases/1".into(),
                commit: "abc".into(),
                live_checked: Some(
                    "@0 enabled=enabled\n@0 active=inactive\n@1 ok=1\n@end\n".into()
                ),
            }
        );
        // No live check asked for, or one cut short: nothing to go by.
        for stdout in [
            "@revision=abc\n@unchanged=/srv/www/site/releases/1\n",
            "@revision=abc\n@live_check=start\n@0 enabled=enabled\n@unchanged=/srv/www/site/releases/1\n",
        ] {
            let Prepared::Unchanged { live_checked, .. } =
                parse_prepared(&exited(0, stdout)).unwrap()
            else {
                panic!("not unchanged: {stdout}");
            };
            assert_eq!(live_checked, None, "{stdout}");
        }
    }
}
