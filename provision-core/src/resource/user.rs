//! System users and groups.

use super::{Drift, state_value};
use crate::shell::quote;

/// Whether `name` is a user or group name `useradd` and `groupadd` accept (Debian's default
/// rule: lowercase, digits, `_` and `-`, starting with a letter or `_`, at most 32 bytes).
pub fn is_valid_account_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    first_ok
        && name.len() <= 32
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// Primary group; `None` makes a group of the user's own name.
    pub group: Option<String>,
    pub home: String,
    pub shell: String,
    pub system: bool,
}

impl User {
    /// A system user with its own group, a home under /var/lib and no login shell.
    pub fn system(name: &str) -> User {
        User {
            name: name.to_string(),
            group: None,
            home: format!("/var/lib/{name}"),
            shell: "/usr/sbin/nologin".to_string(),
            system: true,
        }
    }

    #[must_use]
    pub fn group(mut self, group: &str) -> User {
        self.group = Some(group.to_string());
        self
    }

    #[must_use]
    pub fn home(mut self, home: &str) -> User {
        self.home = home.to_string();
        self
    }

    #[must_use]
    pub fn shell(mut self, shell: &str) -> User {
        self.shell = shell.to_string();
        self
    }

    pub(crate) fn check_script(&self, tag: &str) -> String {
        let n = quote(&self.name);
        // The fields split by the shell itself, and the primary group's name read from
        // /etc/group by it too: one process (getent) per user; `id` only for a group that is
        // not in /etc/group (from LDAP, say).
        format!(
            "if e=$(getent passwd {n}); then IFS=: read -r _ _ _ gid _ home shell <<PROVISION_PASSWD\n\
             $e\nPROVISION_PASSWD\n\
             echo \"@{tag} home=$home\"; echo \"@{tag} shell=$shell\"; g=; \
             if [ -r /etc/group ]; then while IFS=: read -r gn _ gi _; do \
             if [ \"$gi\" = \"$gid\" ]; then g=$gn; break; fi; done </etc/group; fi; \
             [ -n \"$g\" ] || g=$(id -gn {n}); echo \"@{tag} group=$g\"; \
             else echo \"@{tag} kind=absent\"; fi\n"
        )
    }

    pub(crate) fn drift(&self, state: &[&str]) -> Result<Option<Drift>, String> {
        let n = quote(&self.name);
        let home = quote(&self.home);
        let shell = quote(&self.shell);
        if state_value(state, "kind") == Some("absent") {
            let group = match &self.group {
                Some(g) => format!("--gid {}", quote(g)),
                // The group may exist already (made by a Group resource or a package).
                None => {
                    format!("$(getent group {n} >/dev/null && echo --gid {n} || echo --user-group)")
                }
            };
            let system = if self.system { "--system " } else { "" };
            return Ok(Some(Drift {
                summary: vec![format!(
                    "create user (home {}, shell {})",
                    self.home, self.shell
                )],
                diff: None,
                fix: format!(
                    "useradd {system}{group} --home-dir {home} --create-home --shell {shell} {n}\n"
                ),
            }));
        }
        let mut summary = Vec::new();
        let mut args = Vec::new();
        if state_value(state, "home") != Some(self.home.as_str()) {
            summary.push(format!(
                "home {} -> {}",
                state_value(state, "home").unwrap_or(""),
                self.home
            ));
            args.push(format!("--home {home}"));
        }
        if state_value(state, "shell") != Some(self.shell.as_str()) {
            summary.push(format!(
                "shell {} -> {}",
                state_value(state, "shell").unwrap_or(""),
                self.shell
            ));
            args.push(format!("--shell {shell}"));
        }
        if let Some(group) = &self.group
            && state_value(state, "group") != Some(group.as_str())
        {
            summary.push(format!(
                "primary group {} -> {group}",
                state_value(state, "group").unwrap_or("")
            ));
            args.push(format!("--gid {}", quote(group)));
        }
        Ok((!summary.is_empty()).then(|| Drift {
            summary,
            diff: None,
            fix: format!("usermod {} {n}\n", args.join(" ")),
        }))
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub system: bool,
}

impl Group {
    pub fn system(name: &str) -> Group {
        Group {
            name: name.to_string(),
            system: true,
        }
    }

    pub(crate) fn check_script(&self, tag: &str) -> String {
        format!(
            "if getent group {} >/dev/null; then echo \"@{tag} kind=present\"; \
             else echo \"@{tag} kind=absent\"; fi\n",
            quote(&self.name)
        )
    }

    pub(crate) fn drift(&self, state: &[&str]) -> Result<Option<Drift>, String> {
        if state_value(state, "kind") != Some("absent") {
            return Ok(None);
        }
        let system = if self.system { "--system " } else { "" };
        Ok(Some(Drift {
            summary: vec!["create group".to_string()],
            diff: None,
            fix: format!("groupadd {system}{}\n", quote(&self.name)),
        }))
    }
}
