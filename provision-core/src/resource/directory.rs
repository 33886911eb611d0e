//! A directory with owner, group and mode.

use super::{Drift, parse_mode, state_value};
use crate::shell::quote;

#[derive(Debug, Clone)]
pub struct Directory {
    pub path: String,
    pub owner: String,
    pub group: String,
    pub mode: u32,
}

impl Directory {
    /// A directory owned by root:root, mode 0755.
    pub fn new(path: impl Into<String>) -> Directory {
        Directory {
            path: path.into(),
            owner: "root".to_string(),
            group: "root".to_string(),
            mode: 0o755,
        }
    }

    #[must_use]
    pub fn owner(mut self, owner: &str, group: &str) -> Directory {
        self.owner = owner.to_string();
        self.group = group.to_string();
        self
    }

    #[must_use]
    pub fn mode(mut self, mode: u32) -> Directory {
        self.mode = mode;
        self
    }

    /// The check of a directory the batch `stat` cannot take (see [`super::file::batchable`]).
    pub(crate) fn check_script(&self, tag: &str) -> String {
        let p = quote(&self.path);
        format!(
            "if [ -d {p} ] && [ ! -L {p} ]; then echo \"@{tag} meta=$(stat -c '%U %G %a' {p})\"; \
             elif [ -e {p} ] || [ -L {p} ]; then echo \"@{tag} kind=other\"; \
             else echo \"@{tag} kind=absent\"; fi\n"
        )
    }

    /// Its state lines from the batch `stat` of [`super::check_script`]: `meta=OWNER GROUP
    /// MODE` for a directory (not a symlink to one), else `kind=other` or `kind=absent`.
    pub(crate) fn batch_state(&self, output: &str) -> Vec<String> {
        match super::file::batch_stat(&self.path, output) {
            Some(["directory", owner, group, mode]) => vec![format!("meta={owner} {group} {mode}")],
            Some(_) => vec!["kind=other".to_string()],
            None => vec!["kind=absent".to_string()],
        }
    }

    pub(crate) fn drift(&self, state: &[&str]) -> Result<Option<Drift>, String> {
        let fix = format!(
            "mkdir -p {p} && chown {o}:{g} {p} && chmod {m:o} {p}\n",
            p = quote(&self.path),
            o = quote(&self.owner),
            g = quote(&self.group),
            m = self.mode
        );
        match state_value(state, "kind") {
            Some("absent") => {
                return Ok(Some(Drift {
                    summary: vec![format!(
                        "create ({}:{} {:04o})",
                        self.owner, self.group, self.mode
                    )],
                    diff: None,
                    fix,
                }));
            }
            Some(_) => {
                return Err(format!(
                    "{} exists and is not a directory; remove it or choose another path",
                    self.path
                ));
            }
            None => {}
        }
        let meta = state_value(state, "meta").ok_or("no state reported")?;
        let mut fields = meta.split(' ');
        let (owner, group) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        let mode = fields.next().and_then(parse_mode);
        let mut summary = Vec::new();
        if (owner, group) != (self.owner.as_str(), self.group.as_str()) {
            summary.push(format!(
                "owner {owner}:{group} -> {}:{}",
                self.owner, self.group
            ));
        }
        if mode != Some(self.mode) {
            summary.push(format!(
                "mode {} -> {:04o}",
                mode.map(|m| format!("{m:04o}")).unwrap_or_default(),
                self.mode
            ));
        }
        Ok((!summary.is_empty()).then_some(Drift {
            summary,
            diff: None,
            fix,
        }))
    }
}
