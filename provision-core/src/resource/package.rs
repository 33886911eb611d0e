//! Debian packages, installed with apt.

use super::Drift;
use crate::shell::quote;

#[derive(Debug, Clone)]
pub struct Packages {
    pub names: Vec<String>,
}

impl Packages {
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Packages {
        Packages {
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    pub(crate) fn check_script(&self, tag: &str) -> String {
        let names: Vec<String> = self.names.iter().map(|n| quote(n)).collect();
        format!(
            "dpkg-query -W -f='${{Package}} ${{db:Status-Status}}\\n' {} 2>/dev/null \
             | awk '$2 == \"installed\" {{print \"@{tag} installed=\" $1}}'; echo \"@{tag} checked=1\"\n",
            names.join(" ")
        )
    }

    pub(crate) fn drift(&self, state: &[&str]) -> Result<Option<Drift>, String> {
        let installed: Vec<&str> = state
            .iter()
            .filter_map(|l| l.strip_prefix("installed="))
            .collect();
        let missing: Vec<&String> = self
            .names
            .iter()
            .filter(|n| !installed.contains(&n.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(None);
        }
        let list = missing
            .iter()
            .map(|n| quote(n))
            .collect::<Vec<_>>()
            .join(" ");
        // A fresh host has no package lists: update and retry once when install fails.
        let install = format!(
            "apt-get install -y -q --no-install-recommends \
             -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold {list}"
        );
        Ok(Some(Drift {
            summary: vec![format!(
                "install {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )],
            diff: None,
            fix: format!(
                "export DEBIAN_FRONTEND=noninteractive\n{install} || {{ apt-get update -q && {install}; }}\n"
            ),
        }))
    }
}
