//! A state that only a command can tell: checked by one shell command (exit 0 means in sync),
//! fixed by another. For what the other resources cannot express: a virtualenv with the right
//! packages, a database role, a GlusterFS volume.

use super::{Drift, state_value};

#[derive(Debug, Clone)]
pub struct Script {
    /// Names the resource (`script:NAME`), e.g. `zeo-venv`.
    pub name: String,
    /// What the fix does, for the plan (e.g. `install ZEO 6.2 into /opt/provision/zeo`).
    pub summary: String,
    /// Exits 0 when the state is right. Runs during `plan` too, so it must change nothing.
    pub check: String,
    /// Makes the state right; runs with `set -e` as root.
    pub fix: String,
}

impl Script {
    pub fn new(name: &str, summary: &str, check: &str, fix: &str) -> Script {
        Script {
            name: name.to_string(),
            summary: summary.to_string(),
            check: check.to_string(),
            fix: fix.to_string(),
        }
    }

    pub(crate) fn check_script(&self, tag: &str) -> String {
        format!(
            "if ( {check}\n) >/dev/null 2>&1 </dev/null; then echo \"@{tag} ok=1\"; else echo \"@{tag} ok=0\"; fi\n",
            check = self.check
        )
    }

    pub(crate) fn drift(&self, state: &[&str]) -> Result<Option<Drift>, String> {
        match state_value(state, "ok") {
            Some("1") => Ok(None),
            Some(_) => Ok(Some(Drift {
                summary: vec![self.summary.clone()],
                diff: None,
                fix: format!("{}\n", self.fix),
            })),
            None => Err("no state reported".to_string()),
        }
    }
}
