//! The base system every host of a stack gets, whatever its layers (the cookbook's
//! instances-setup and the apt::unattended-upgrades recipe): time zone, `/tmp` on tmpfs,
//! unattended security upgrades.

use serde::Serialize;

use crate::phase::Phase;
use crate::resource::{File, Mount, Packages, Resource, Symlink};
use crate::template::{TemplateError, TemplateSource, Templates};

pub const TEMPLATES: &[TemplateSource] = &[
    TemplateSource {
        name: "system/20auto-upgrades.j2",
        source: include_str!("templates/system/20auto-upgrades.j2"),
        example: "{}",
    },
    TemplateSource {
        name: "system/51provision-unattended-upgrades.j2",
        source: include_str!("templates/system/51provision-unattended-upgrades.j2"),
        example: r#"{"mail": "ops@example.org", "package_blacklist": ["newrelic-sysmond"]}"#,
    },
];

/// The settings of the base system, taken from the stack's attributes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SystemSettings {
    /// `system.timezone`, e.g. `Europe/Berlin`; `None` leaves the host's zone alone.
    pub timezone: Option<String>,
    /// `tmpdir.tmpfs_size` when `tmpdir.tmpfs` is on: mount `/tmp` as tmpfs of that size.
    pub tmpfs_size: Option<String>,
    /// `apt.unattended_upgrades.*` when enabled.
    pub unattended_upgrades: Option<UnattendedUpgrades>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UnattendedUpgrades {
    pub mail: Option<String>,
    pub package_blacklist: Vec<String>,
}

/// The base system's resources for one phase.
pub fn resources(
    settings: &SystemSettings,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, TemplateError> {
    let mut resources = Vec::new();
    match phase {
        Phase::Setup => {
            if let Some(zone) = &settings.timezone {
                resources.push(File::new("/etc/timezone", format!("{zone}\n")).into());
                resources.push(
                    Symlink::new("/etc/localtime", format!("/usr/share/zoneinfo/{zone}"))
                        .replace_existing()
                        .into(),
                );
            }
            if let Some(size) = &settings.tmpfs_size {
                resources.push(
                    Mount::new(
                        "tmpfs",
                        "/tmp",
                        "tmpfs",
                        &format!("nodev,nosuid,noatime,size={size}"),
                    )
                    .into(),
                );
            }
            if settings.unattended_upgrades.is_some() {
                resources.push(Packages::new(["unattended-upgrades"]).into());
            }
        }
        Phase::Configure => {
            if let Some(upgrades) = &settings.unattended_upgrades {
                resources.push(
                    File::new(
                        "/etc/apt/apt.conf.d/20auto-upgrades",
                        templates.render("system/20auto-upgrades.j2", &())?,
                    )
                    .into(),
                );
                resources.push(
                    File::new(
                        "/etc/apt/apt.conf.d/51provision-unattended-upgrades",
                        templates.render("system/51provision-unattended-upgrades.j2", upgrades)?,
                    )
                    .into(),
                );
            }
        }
        Phase::Deploy => {}
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> Templates {
        Templates::new(TEMPLATES).unwrap()
    }

    #[test]
    fn every_template_renders_its_example() {
        for source in TEMPLATES {
            let context: serde_json::Value = serde_json::from_str(source.example).unwrap();
            let rendered = templates().render(source.name, &context).unwrap();
            insta::assert_snapshot!(source.name.replace('/', "__"), rendered);
        }
    }

    #[test]
    fn each_setting_brings_its_resources() {
        let none = SystemSettings::default();
        for phase in Phase::ALL {
            assert!(resources(&none, phase, &templates()).unwrap().is_empty());
        }
        let all = SystemSettings {
            timezone: Some("Europe/Amsterdam".to_string()),
            tmpfs_size: Some("1G".to_string()),
            unattended_upgrades: Some(UnattendedUpgrades::default()),
        };
        let ids = |phase| {
            resources(&all, phase, &templates())
                .unwrap()
                .iter()
                .map(Resource::id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(Phase::Setup),
            [
                "file:/etc/timezone",
                "symlink:/etc/localtime",
                "mount:/tmp",
                "packages:unattended-upgrades"
            ]
        );
        assert_eq!(
            ids(Phase::Configure),
            [
                "file:/etc/apt/apt.conf.d/20auto-upgrades",
                "file:/etc/apt/apt.conf.d/51provision-unattended-upgrades"
            ]
        );
    }
}
