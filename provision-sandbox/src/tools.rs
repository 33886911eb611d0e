//! The machine's tools, found at run time; a missing one names its Debian package.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, MissingTool, Result};

/// A program and the Debian package that ships it.
#[derive(Debug, Clone, Copy)]
pub struct ToolSpec {
    pub program: &'static str,
    pub package: &'static str,
    pub no_recommends: bool,
}

const fn tool(program: &'static str, package: &'static str) -> ToolSpec {
    ToolSpec {
        program,
        package,
        no_recommends: false,
    }
}

/// systemd-container pulls in libnss-mymachines as a recommendation, which edits
/// the machine's /etc/nsswitch.conf: install it without recommends.
pub const NSPAWN: ToolSpec = ToolSpec {
    program: "systemd-nspawn",
    package: "systemd-container",
    no_recommends: true,
};
pub const IP: ToolSpec = tool("ip", "iproute2");
pub const BRIDGE: ToolSpec = tool("bridge", "iproute2");
pub const NSENTER: ToolSpec = tool("nsenter", "util-linux");
pub const SETSID: ToolSpec = tool("setsid", "util-linux");
pub const SSH_KEYGEN: ToolSpec = tool("ssh-keygen", "openssh-client");
pub const DEBOOTSTRAP: ToolSpec = tool("debootstrap", "debootstrap");
pub const SSH: ToolSpec = tool("ssh", "openssh-client");

/// What running hosts needs.
pub const RUN: &[ToolSpec] = &[NSPAWN, IP, BRIDGE, NSENTER, SETSID, SSH_KEYGEN];
/// What building the base needs in addition.
pub const BUILD: &[ToolSpec] = &[DEBOOTSTRAP];

/// Paths of the tools found.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    found: BTreeMap<&'static str, PathBuf>,
}

fn search_path() -> OsString {
    // root's tools live in sbin, which a user's PATH (e.g. under sudo -E) may lack
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    for dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !path.is_empty() {
            path.push(":");
        }
        path.push(dir);
    }
    path
}

impl Tools {
    /// Finds every tool of `specs`; the error lists all missing ones with their packages.
    pub fn find(specs: &[ToolSpec]) -> Result<Tools> {
        let mut tools = Tools::default();
        tools.add(specs)?;
        Ok(tools)
    }

    /// Adds more tools to the set.
    pub fn add(&mut self, specs: &[ToolSpec]) -> Result<()> {
        let path = search_path();
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let mut missing = Vec::new();
        for spec in specs {
            if self.found.contains_key(spec.program) {
                continue;
            }
            match which::which_in(spec.program, Some(&path), &cwd) {
                Ok(found) => {
                    self.found.insert(spec.program, found);
                }
                Err(_) => missing.push(MissingTool {
                    program: spec.program,
                    package: spec.package,
                    no_recommends: spec.no_recommends,
                }),
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::MissingTools(missing))
        }
    }

    /// The path of a tool found before; falls back to the bare name.
    pub fn path(&self, spec: ToolSpec) -> &Path {
        self.found
            .get(spec.program)
            .map(PathBuf::as_path)
            .unwrap_or_else(|| Path::new(spec.program))
    }

    pub fn command(&self, spec: ToolSpec) -> std::process::Command {
        std::process::Command::new(self.path(spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_its_package() {
        let err = Tools::find(&[ToolSpec {
            program: "provision-sandbox-no-such-tool",
            package: "no-such-package",
            no_recommends: true,
        }])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`provision-sandbox-no-such-tool` not found: install it with `apt-get install --no-install-recommends no-such-package`"
        );
        let tools = Tools::find(&[tool("sh", "dash")]).unwrap();
        assert!(tools.path(tool("sh", "dash")).is_absolute());
    }
}
