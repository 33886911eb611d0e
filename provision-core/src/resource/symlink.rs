//! A symbolic link, switched atomically (new link beside it, then rename over).

use super::{Drift, state_value};
use crate::shell::quote;

#[derive(Debug, Clone)]
pub struct Symlink {
    pub path: String,
    pub target: String,
    /// Replace a file or directory that stands where the link should be (Capistrano's purge of
    /// shared dirs in a release). Off by default: nothing is deleted unless asked.
    pub replace_existing: bool,
}

impl Symlink {
    pub fn new(path: impl Into<String>, target: impl Into<String>) -> Symlink {
        Symlink {
            path: path.into(),
            target: target.into(),
            replace_existing: false,
        }
    }

    #[must_use]
    pub fn replace_existing(mut self) -> Symlink {
        self.replace_existing = true;
        self
    }

    pub(crate) fn check_script(&self, tag: &str) -> String {
        let p = quote(&self.path);
        format!(
            "if [ -L {p} ]; then echo \"@{tag} target=$(readlink {p})\"; \
             elif [ -e {p} ]; then echo \"@{tag} kind=other\"; \
             else echo \"@{tag} kind=absent\"; fi\n"
        )
    }

    pub(crate) fn drift(&self, state: &[&str]) -> Result<Option<Drift>, String> {
        let p = quote(&self.path);
        let tmp = quote(&format!("{}.provision-link", self.path));
        let switch = format!(
            "ln -sfn {t} {tmp} && mv -T {tmp} {p}\n",
            t = quote(&self.target)
        );
        let (summary, fix) = match (state_value(state, "target"), state_value(state, "kind")) {
            (Some(current), _) if current == self.target => return Ok(None),
            (Some(current), _) => (format!("retarget {current} -> {}", self.target), switch),
            (None, Some("absent")) => (format!("create -> {}", self.target), switch),
            (None, Some(_)) if self.replace_existing => (
                format!(
                    "replace existing file or directory with link -> {}",
                    self.target
                ),
                format!("rm -rf {p}\n{switch}"),
            ),
            (None, Some(_)) => {
                return Err(format!(
                    "{} exists and is not a symlink; refusing to delete it",
                    self.path
                ));
            }
            (None, None) => return Err("no state reported".to_string()),
        };
        Ok(Some(Drift {
            summary: vec![summary],
            diff: None,
            fix,
        }))
    }
}
