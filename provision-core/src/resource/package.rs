//! Debian packages, installed with apt.

use super::Drift;
use crate::shell::quote;

#[derive(Debug, Clone)]
pub struct Packages {
    pub names: Vec<String>,
}

/// The check of every package resource of a host: one `dpkg-query` for all their names.
pub(crate) fn batch_check_script(packages: &[&Packages]) -> String {
    let mut names: Vec<String> = Vec::new();
    for package in packages {
        for name in &package.names {
            let name = quote(name);
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        return String::new();
    }
    format!(
        "dpkg-query -W -f='@P ${{Package}} ${{db:Status-Status}}\\n' -- {} 2>/dev/null\n",
        names.join(" ")
    )
}

impl Packages {
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Packages {
        Packages {
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    /// Its state lines (`installed=NAME`) from the output of [`batch_check_script`].
    pub(crate) fn batch_state(&self, output: &str) -> Vec<String> {
        let mut state = vec!["checked=1".to_string()];
        for line in output.lines() {
            if let Some((name, "installed")) =
                line.strip_prefix("@P ").and_then(|l| l.split_once(' '))
                && self.names.iter().any(|n| n == name)
            {
                state.push(format!("installed={name}"));
            }
        }
        state
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
