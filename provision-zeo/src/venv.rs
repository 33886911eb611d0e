//! A Python virtualenv with pinned packages, installed by pip with the host's own pip
//! configuration.
//!
//! Core has no resource for "a command's outcome", so the install is a oneshot unit that runs
//! a script: the unit stays active (`RemainAfterExit`), and restarts, so reinstalls, when the
//! requirements file or the script changed. The script itself does nothing when the installed
//! requirements equal the wanted ones, so boots and restarts cost no network.

use provision_core::resource::{File, Resource, Service, Unit};
use provision_core::template::Templates;
use serde::Serialize;

use crate::{Error, check_path, invalid};

pub(crate) struct Venv<'a> {
    /// Short name: the unit is `provision-NAME-venv.service`, the script
    /// `/usr/local/lib/provision/NAME/install-venv`.
    pub name: &'a str,
    /// What it is for, in the unit's description.
    pub what: &'a str,
    pub path: &'a str,
    pub python: &'a str,
    /// Where the requirements file goes.
    pub requirements_path: String,
    pub requirements: &'a [String],
}

#[derive(Serialize)]
struct InstallContext<'a> {
    venv: &'a str,
    python: &'a str,
    requirements: &'a str,
    what: &'a str,
}

#[derive(Serialize)]
struct UnitContext {
    description: String,
    script: String,
}

impl Venv<'_> {
    pub fn unit_name(&self) -> String {
        format!("provision-{}-venv.service", self.name)
    }

    fn script_path(&self) -> String {
        format!("/usr/local/lib/provision/{}/install-venv", self.name)
    }

    /// The id of the requirements file: services running code from the venv restart on it.
    pub fn requirements_id(&self) -> String {
        format!("file:{}", self.requirements_path)
    }

    pub fn check(&self) -> Result<(), Error> {
        check_path("venv", self.path)?;
        check_path("python", self.python)?;
        if self.requirements.is_empty() {
            return Err(invalid("requirements", "name at least one package"));
        }
        if let Some(bad) = self
            .requirements
            .iter()
            .find(|r| r.trim().is_empty() || r.contains(['\n', '\r']))
        {
            return Err(invalid(
                "requirements",
                format!("{bad:?} is not one requirement line"),
            ));
        }
        Ok(())
    }

    /// The requirements file, the install script, its unit, and the unit started (which
    /// installs).
    pub fn resources(&self, templates: &Templates) -> Result<Vec<Resource>, Error> {
        self.check()?;
        let mut requirements = self.requirements.join("\n");
        requirements.push('\n');
        let requirements = File::new(&self.requirements_path, requirements);
        let script = File::new(
            self.script_path(),
            templates.render(
                "zeo/venv-install.sh.j2",
                &InstallContext {
                    venv: self.path,
                    python: self.python,
                    requirements: &self.requirements_path,
                    what: self.what,
                },
            )?,
        )
        .mode(0o755);
        let unit = Unit::new(
            self.unit_name(),
            templates.render(
                "zeo/venv.service.j2",
                &UnitContext {
                    description: format!("Python virtualenv {} ({})", self.path, self.what),
                    script: self.script_path(),
                },
            )?,
        );
        let service = Service::running(self.unit_name())
            .restart_on(self.requirements_id())
            .restart_on(Resource::from(script.clone()).id())
            .restart_on(Resource::from(unit.clone()).id());
        Ok(vec![
            requirements.into(),
            script.into(),
            unit.into(),
            service.into(),
        ])
    }
}
