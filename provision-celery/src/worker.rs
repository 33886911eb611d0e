//! Celery on the instance hosts (`plone_instances.enable_celery`): a worker on every host and
//! beat on exactly one, as systemd units running the app's own Celery app from the live
//! release (`celery -A <module> worker`), as the app's user. The broker's URL, with its
//! password, is in an environment file (root:<group>, 0640) that systemd reads: it is never on
//! a command line, so `ps` does not show it.
//!
//! Celery reads `CELERY_BROKER_URL` and `CELERY_RESULT_BACKEND` from the environment before
//! its own configuration, so the same file points a buildout's `bin/celery`
//! (collective.recipe.celery) or a virtualenv's `celery` at the stack's broker. The Plone
//! clients get the variables collective.celery reads from [`client_environment`].

use std::collections::BTreeMap;

use provision_core::phase::Phase;
use provision_core::resource::{Directory, File, Resource, Service, Unit};
use provision_core::shell::quote;
use provision_core::template::Templates;
use serde::Serialize;

use crate::BrokerEndpoint;
use crate::error::{CeleryError, invalid};
use crate::text::{
    check_account, check_env_name, check_module, check_name, check_path, env_line, split_words,
    systemd_command,
};

pub(crate) const ENV_TEMPLATE: &str = "celery/celery.env.j2";
pub(crate) const WORKER_TEMPLATE: &str = "celery/worker.service.j2";
pub(crate) const BEAT_TEMPLATE: &str = "celery/beat.service.j2";

/// Where the environment files go (`<app>.env`).
pub const CONFIG_DIR: &str = "/etc/provision/celery";

const LOG_LEVELS: &[&str] = &["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL"];

/// Celery on one instance host, for one app.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSettings {
    /// The app's name (`[apps.NAME]`): the units are `celery-<app>-worker.service` and
    /// `celery-<app>-beat.service`.
    pub app: String,
    /// The user the worker and beat run as: the app's. Default `plone`.
    pub user: String,
    pub group: String,
    /// The Celery program of the live release: `<deploy_to>/current/bin/celery` (default;
    /// buildout's collective.recipe.celery part, or a virtualenv's `bin`).
    pub celery: String,
    /// Where they run, and where `-A` finds the app's module. Default `<deploy_to>/current`.
    pub working_directory: String,
    /// The Celery app (`-A`): a module (`my.package.tasks`) or `module:attribute`. `None` for
    /// a `bin/celery` that configures itself (collective.recipe.celery). Default none.
    pub celery_app: Option<String>,
    /// Task modules: the worker imports them (`--include`), and the clients get them as
    /// `CELERY_IMPORTS` (collective.celery). Default none.
    pub imports: Vec<String>,
    /// `plone_instances.celery_args`: extra arguments of `celery worker`, split as `sh` would.
    /// Default `""`.
    pub worker_args: String,
    /// Whether this host runs beat (the first host of the `plone_instances` layer, when
    /// `plone_instances.celerybeat`). Default `false`.
    pub beat: bool,
    /// `plone_instances.beat_args`: extra arguments of `celery beat`. Default `""`.
    pub beat_args: String,
    /// The broker.
    pub broker: BrokerEndpoint,
    /// The app's environment (`deploy.<app>.environment`), given to the worker and beat too.
    /// The broker variables are written after it and win.
    pub environment: BTreeMap<String, String>,
    /// Writable by the user: beat's schedule (`celerybeat-schedule`). Default
    /// `/var/lib/celery/<app>`.
    pub state_dir: String,
    /// `--loglevel`. Default `INFO`.
    pub log_level: String,
    /// Seconds systemd waits for a warm shutdown (running tasks finish) before it kills the
    /// worker. Default 300.
    pub stop_timeout: u32,
    /// Start the worker (and beat) now and keep them running. False until the app's first
    /// release is live: the units are installed, and the deploy's [`restart_command`] starts
    /// them. Default `true`.
    pub start: bool,
}

impl WorkerSettings {
    /// The defaults for `app` deployed to `deploy_to` (the buildout layout).
    pub fn new(app: &str, deploy_to: &str, broker: BrokerEndpoint) -> WorkerSettings {
        WorkerSettings {
            app: app.to_string(),
            user: "plone".to_string(),
            group: "plone".to_string(),
            celery: format!("{deploy_to}/current/bin/celery"),
            working_directory: format!("{deploy_to}/current"),
            celery_app: None,
            imports: Vec::new(),
            worker_args: String::new(),
            beat: false,
            beat_args: String::new(),
            broker,
            environment: BTreeMap::new(),
            state_dir: format!("/var/lib/celery/{app}"),
            log_level: "INFO".to_string(),
            stop_timeout: 300,
            start: true,
        }
    }

    pub fn worker_unit(&self) -> String {
        format!("celery-{}-worker.service", self.app)
    }

    pub fn beat_unit(&self) -> String {
        format!("celery-{}-beat.service", self.app)
    }

    pub fn environment_file(&self) -> String {
        format!("{CONFIG_DIR}/{}.env", self.app)
    }

    /// Beat's schedule database.
    pub fn schedule_file(&self) -> String {
        format!("{}/celerybeat-schedule", self.state_dir)
    }

    /// Refuse settings that cannot work, naming the setting.
    pub fn check(&self) -> Result<(), CeleryError> {
        check_name("app", &self.app)?;
        check_account("user", &self.user)?;
        check_account("group", &self.group)?;
        check_path("celery", &self.celery)?;
        check_path("working_directory", &self.working_directory)?;
        check_path("state_dir", &self.state_dir)?;
        if let Some(app) = &self.celery_app {
            check_module("celery_app", app)?;
        }
        for module in &self.imports {
            check_module("imports", module)?;
        }
        split_words("plone_instances.celery_args", &self.worker_args)?;
        split_words("plone_instances.beat_args", &self.beat_args)?;
        self.broker.check()?;
        for (name, value) in &self.environment {
            env_line("deploy.environment", name, value)?;
        }
        if !LOG_LEVELS.contains(&self.log_level.as_str()) {
            return Err(invalid(
                "log_level",
                format!(
                    "{:?} is not a Celery log level ({})",
                    self.log_level,
                    LOG_LEVELS.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn program(&self) -> Vec<String> {
        let mut words = vec![self.celery.clone()];
        if let Some(app) = &self.celery_app {
            words.extend(["-A".to_string(), app.clone()]);
        }
        words
    }

    /// The worker's command line (before systemd quoting): the node is `<app>@<host name>`.
    pub fn worker_command(&self) -> Result<Vec<String>, CeleryError> {
        let mut words = self.program();
        words.push("worker".to_string());
        words.push(format!("--hostname={}@%h", self.app));
        words.push(format!("--loglevel={}", self.log_level));
        if !self.imports.is_empty() {
            words.push(format!("--include={}", self.imports.join(",")));
        }
        words.extend(split_words(
            "plone_instances.celery_args",
            &self.worker_args,
        )?);
        Ok(words)
    }

    /// Beat's command line, its schedule in the state directory.
    pub fn beat_command(&self) -> Result<Vec<String>, CeleryError> {
        let mut words = self.program();
        words.push("beat".to_string());
        words.push(format!("--loglevel={}", self.log_level));
        words.push(format!("--schedule={}", self.schedule_file()));
        words.extend(split_words("plone_instances.beat_args", &self.beat_args)?);
        Ok(words)
    }
}

/// What collective.celery reads from the clients' environment (`environment-vars` of the
/// buildout, `<environment>` of zope.conf), to add to theirs: `BROKER_URL`,
/// `CELERY_RESULT_BACKEND` and, with task modules, `CELERY_IMPORTS` as a Python tuple. Also
/// `CELERY_BROKER_URL`, which Celery itself reads from the environment, for a client that
/// sends tasks through the app's own Celery app. The values hold the broker password: the
/// file they are written into must be private to the app's user.
pub fn client_environment(settings: &WorkerSettings) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("BROKER_URL".to_string(), settings.broker.broker_url());
    env.insert(
        "CELERY_BROKER_URL".to_string(),
        settings.broker.broker_url(),
    );
    env.insert(
        "CELERY_RESULT_BACKEND".to_string(),
        settings.broker.result_backend_url(),
    );
    if !settings.imports.is_empty() {
        // No spaces: buildout's environment-vars splits name and value at white space.
        let modules: Vec<String> = settings.imports.iter().map(|m| format!("'{m}',")).collect();
        env.insert(
            "CELERY_IMPORTS".to_string(),
            format!("({})", modules.concat()),
        );
    }
    env
}

#[derive(Serialize)]
struct EnvContext<'a> {
    app: &'a str,
    group: &'a str,
    lines: Vec<String>,
}

/// The rendered environment file of the worker and beat.
pub fn render_environment(
    settings: &WorkerSettings,
    templates: &Templates,
) -> Result<String, CeleryError> {
    settings.check()?;
    let mut lines = Vec::new();
    for (name, value) in &settings.environment {
        lines.push(env_line("deploy.environment", name, value)?);
    }
    for (name, value) in [
        ("CELERY_BROKER_URL", settings.broker.broker_url()),
        (
            "CELERY_RESULT_BACKEND",
            settings.broker.result_backend_url(),
        ),
    ] {
        check_env_name("broker", name)?;
        lines.push(env_line("broker", name, &value)?);
    }
    Ok(templates.render(
        ENV_TEMPLATE,
        &EnvContext {
            app: &settings.app,
            group: &settings.group,
            lines,
        },
    )?)
}

#[derive(Serialize)]
struct UnitContext<'a> {
    app: &'a str,
    user: &'a str,
    group: &'a str,
    working_directory: &'a str,
    environment_file: String,
    exec_start: String,
    stop_timeout: u32,
    state_dir: &'a str,
}

fn unit_context<'a>(settings: &'a WorkerSettings, command: &[String]) -> UnitContext<'a> {
    UnitContext {
        app: &settings.app,
        user: &settings.user,
        group: &settings.group,
        working_directory: &settings.working_directory,
        environment_file: settings.environment_file(),
        exec_start: systemd_command(command),
        stop_timeout: settings.stop_timeout,
        state_dir: &settings.state_dir,
    }
}

/// The rendered worker unit.
pub fn render_worker_unit(
    settings: &WorkerSettings,
    templates: &Templates,
) -> Result<String, CeleryError> {
    settings.check()?;
    let command = settings.worker_command()?;
    Ok(templates.render(WORKER_TEMPLATE, &unit_context(settings, &command))?)
}

/// The rendered beat unit.
pub fn render_beat_unit(
    settings: &WorkerSettings,
    templates: &Templates,
) -> Result<String, CeleryError> {
    settings.check()?;
    let command = settings.beat_command()?;
    Ok(templates.render(BEAT_TEMPLATE, &unit_context(settings, &command))?)
}

/// The resources of an instance host running Celery for one phase: the state directory at
/// setup; the environment file, the units and (once a release is live, see
/// [`WorkerSettings::start`]) the running worker and beat, restarted when their file or unit
/// changed, at configure. A host without beat has it stopped and disabled, so beat moves
/// when the first instance host changes.
pub fn resources(
    settings: &WorkerSettings,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, CeleryError> {
    settings.check()?;
    let mut resources: Vec<Resource> = Vec::new();
    match phase {
        // Parents (`/var/lib/celery`, CONFIG_DIR) are made as needed, root's and 0755: two
        // apps on one host share them without naming them twice.
        Phase::Setup => {
            resources.push(
                Directory::new(&settings.state_dir)
                    .owner(&settings.user, &settings.group)
                    .mode(0o750)
                    .into(),
            );
        }
        Phase::Configure => {
            let env = File::new(
                settings.environment_file(),
                render_environment(settings, templates)?,
            )
            .owner("root", &settings.group)
            .mode(0o640)
            // Its diff would show the broker password (percent-encoded, which masking misses).
            .secret();
            // ExecStart points into a release that does not exist before the first deploy.
            let worker = Unit::new(
                settings.worker_unit(),
                render_worker_unit(settings, templates)?,
            )
            .without_verify();
            let env_id = Resource::from(env.clone()).id();
            let worker_id = Resource::from(worker.clone()).id();
            resources.push(env.into());
            resources.push(worker.into());
            let beat = if settings.beat {
                let unit = Unit::new(settings.beat_unit(), render_beat_unit(settings, templates)?)
                    .without_verify();
                let id = Resource::from(unit.clone()).id();
                resources.push(unit.into());
                Some(id)
            } else {
                None
            };
            if settings.start {
                resources.push(
                    Service::running(settings.worker_unit())
                        .restart_on(env_id.clone())
                        .restart_on(worker_id)
                        .into(),
                );
            }
            match beat {
                Some(unit_id) if settings.start => resources.push(
                    Service::running(settings.beat_unit())
                        .restart_on(env_id)
                        .restart_on(unit_id)
                        .into(),
                ),
                Some(_) => {}
                None => resources.push(Service::stopped(settings.beat_unit()).into()),
            }
        }
        Phase::Deploy => {}
    }
    Ok(resources)
}

/// The Celery units of `app`, as a host may have them: the worker, then beat.
pub fn units(app: &str) -> [String; 2] {
    [
        format!("celery-{app}-worker.service"),
        format!("celery-{app}-beat.service"),
    ]
}

/// Stops and disables Celery of `app` on a host where it is off (`enable_celery = false`).
pub fn stopped(app: &str) -> Vec<Resource> {
    units(app)
        .into_iter()
        .map(|unit| Service::stopped(unit).into())
        .collect()
}

/// The command a deploy runs on the host once the new release is live: enable and restart
/// the worker (and beat, on its host). The worker's warm shutdown lets running tasks finish;
/// tasks it had not started go back to the queue.
pub fn restart_command(settings: &WorkerSettings) -> String {
    let mut units = vec![quote(&settings.worker_unit())];
    if settings.beat {
        units.push(quote(&settings.beat_unit()));
    }
    let units = units.join(" ");
    format!("systemctl enable --quiet {units} && systemctl restart {units}")
}

/// Beat must run on one host only (two would send every periodic task twice): an error
/// naming the hosts when more than one is given.
pub fn check_single_beat<S: AsRef<str>>(beat_hosts: &[S]) -> Result<(), CeleryError> {
    if beat_hosts.len() > 1 {
        let names: Vec<&str> = beat_hosts.iter().map(AsRef::as_ref).collect();
        return Err(invalid(
            "plone_instances.celerybeat",
            format!(
                "Celery beat would run on {}: it must run on exactly one host, or every \
                 periodic task runs once per beat",
                names.join(" and ")
            ),
        ));
    }
    Ok(())
}
