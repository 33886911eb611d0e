//! systemd units (files) and services (enabled, running, restarted or reloaded when what they
//! depend on changed).

use super::{Drift, File, state_value};
use crate::shell::quote;

/// A unit file in /etc/systemd/system. A changed unit makes the engine run
/// `systemctl daemon-reload` before any service is touched.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Full unit name, e.g. `zeoserver.service` or `plone-client@.service`.
    pub name: String,
    pub content: String,
    /// Check the unit with `systemd-analyze verify` before it replaces the live one. It also
    /// checks that `ExecStart` binaries exist, so turn it off for units of software a later
    /// step builds.
    pub verify: bool,
}

impl Unit {
    pub fn new(name: impl Into<String>, content: impl Into<String>) -> Unit {
        Unit {
            name: name.into(),
            content: content.into(),
            verify: true,
        }
    }

    #[must_use]
    pub fn without_verify(mut self) -> Unit {
        self.verify = false;
        self
    }

    pub fn path(&self) -> String {
        format!("/etc/systemd/system/{}", self.name)
    }

    pub(crate) fn file(&self) -> File {
        let file = File::new(self.path(), self.content.clone());
        if !self.verify {
            return file;
        }
        // verify wants the real unit name, so check a copy named like the unit.
        file.validate(format!(
            "{{ ! command -v systemd-analyze >/dev/null || \
             {{ vd=$(mktemp -d) && cp {{}} \"$vd\"/{name} && systemd-analyze verify \"$vd\"/{name}; \
             rc=$?; rm -rf \"$vd\"; [ $rc -eq 0 ]; }}; }}",
            name = quote(&self.name)
        ))
    }
}

/// Whether a service should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    Running,
    Stopped,
}

/// Where systemd looks for system units (systemd.unit(5)), `/lib` for hosts without merged
/// /usr. A unit with a file in none of them does not exist.
const UNIT_DIRS: &str = "/etc/systemd/system.control /run/systemd/system.control \
     /run/systemd/transient /run/systemd/generator.early /etc/systemd/system \
     /etc/systemd/system.attached /run/systemd/system /run/systemd/system.attached \
     /run/systemd/generator /usr/local/lib/systemd/system /usr/lib/systemd/system \
     /lib/systemd/system /run/systemd/generator.late";

/// The unit file names that define a unit: its own and, for an instance, its template's.
fn unit_files(name: &str) -> Vec<String> {
    const TYPES: [&str; 11] = [
        "service",
        "socket",
        "target",
        "timer",
        "mount",
        "path",
        "slice",
        "scope",
        "device",
        "swap",
        "automount",
    ];
    let full = match name.rsplit_once('.') {
        Some((_, suffix)) if TYPES.contains(&suffix) => name.to_string(),
        _ => format!("{name}.service"),
    };
    let mut files = vec![full.clone()];
    if let Some((prefix, rest)) = full.split_once('@')
        && let Some((_, suffix)) = rest.rsplit_once('.')
    {
        files.push(format!("{prefix}@.{suffix}"));
    }
    files
}

/// The check of every service of a host, and of which instances of a template run
/// ([`Instances`]), in two processes (instead of two per service): one `systemctl is-enabled`
/// for the units that have a unit file and one `systemctl list-units` for all, giving `@TAG
/// enabled=` and `@TAG active=` lines per service and `@TAG surplus=` per unwanted instance.
///
/// `is-enabled` reads the links on disk, so a unit enabled or disabled without a daemon reload
/// (as the fixes here do) shows as it is; `systemctl show`'s `UnitFileState` would not. It
/// stops at a unit that does not exist, so units without a unit file (a layer's service kept
/// stopped where it was never installed) are left out of it by the shell, and if one still
/// fails, each unit is asked on its own.
///
/// `list-units` shows the loaded units by their own name: a unit it leaves out is not loaded,
/// so inactive, unless the name is an alias (a link), which `is-active` is then asked about.
pub(crate) fn batch_check_script(
    services: &[(String, &Service)],
    instances: &[(String, &Instances)],
) -> String {
    if services.is_empty() && instances.is_empty() {
        return String::new();
    }
    // Per service its unit's file names, its own first (the name systemctl lists it by).
    let files: Vec<Vec<String>> = services
        .iter()
        .map(|(_, s)| unit_files(&s.name).iter().map(|f| quote(f)).collect())
        .collect();
    let full_names: Vec<&String> = files.iter().map(|f| &f[0]).collect();
    let tags: Vec<&str> = services.iter().map(|(tag, _)| tag.as_str()).collect();
    // `k`: how the unit's file was found: y (a file), l (a link: maybe an alias) or n (none).
    let mut script = format!(
        "u_kind() {{ k=n; for d in {UNIT_DIRS}; do for f in \"$@\"; do \
         if [ -L \"$d/$f\" ]; then k=l; return; elif [ -e \"$d/$f\" ]; then k=y; return; fi; \
         done; done; }}\n\
         set --; m=\n"
    );
    for files in &files {
        script.push_str(&format!(
            "u_kind {}; m=\"$m$k\"; [ $k = n ] || set -- \"$@\" {}\n",
            files.join(" "),
            files[0]
        ));
    }
    let patterns: Vec<String> = instances
        .iter()
        .map(|(_, i)| quote(&format!("{}*.service", i.prefix())))
        .collect();
    // Counted and paired by the shell itself: `systemctl` is the only process.
    script.push_str(&format!(
        "e=\nif [ $# -gt 0 ]; then\n\
         e=$(systemctl is-enabled -- \"$@\" 2>/dev/null)\n\
         n=0; for l in $e; do n=$((n + 1)); done\n\
         if [ \"$n\" != $# ]; then e=$(for u in \"$@\"; do \
         echo \"E:$(systemctl is-enabled -- \"$u\" 2>/dev/null)\"; done); fi\n\
         fi\n\
         nl='\n'\n\
         a=\"$nl$(systemctl list-units --all --plain --no-legend --full -- {names} {patterns} 2>/dev/null)\"\n\
         active_of() {{ s=; case $a in *\"$nl$1 \"*) s=${{a#*\"$nl$1 \"}}; s=${{s%%\"$nl\"*}}; \
         read -r _ s _ <<PROVISION_UNIT\n$s\nPROVISION_UNIT\n\
         ;; esac; }}\n",
        names = full_names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" "),
        patterns = patterns.join(" "),
    ));
    if !services.is_empty() {
        script.push_str(&format!(
            "f=$m; set -- {tags}\n\
             while [ $# -gt 0 ]; do l=; case $f in n*) ;; *) IFS= read -r l || l=;; esac; f=${{f#?}}; \
             echo \"@$1 enabled=${{l#E:}}\"; shift; \
             done <<PROVISION_ENABLED\n$e\nPROVISION_ENABLED\n\
             set --; t=\n",
            tags = tags.join(" "),
        ));
        for (tag, name) in tags.iter().zip(&full_names) {
            script.push_str(&format!(
                "active_of {name}; k=${{m%\"${{m#?}}\"}}; m=${{m#?}}\n\
                 if [ -n \"$s\" ]; then echo \"@{tag} active=$s\"; \
                 elif [ $k = l ]; then set -- \"$@\" {name}; t=\"$t {tag}\"; \
                 else echo \"@{tag} active=inactive\"; fi\n"
            ));
        }
        script.push_str(
            "if [ $# -gt 0 ]; then x=$(systemctl is-active -- \"$@\" 2>/dev/null); set -- $t\n\
             while IFS= read -r l; do [ $# -gt 0 ] || break; echo \"@$1 active=$l\"; shift; \
             done <<PROVISION_ACTIVE\n$x\nPROVISION_ACTIVE\n\
             fi\n",
        );
    }
    for (tag, instances) in instances {
        script.push_str(&instances.check_fragment(tag));
    }
    script
}

/// Only these instances of a template unit may run or start at boot; any other instance of it
/// is stopped and disabled (clients beyond a lowered count, say). Checked in the services'
/// batch: the running ones from its `systemctl list-units`, the enabled ones from the links in
/// `/etc/systemd/system/*.wants/`.
#[derive(Debug, Clone)]
pub struct Instances {
    /// The template, e.g. `plone-site@` (or `plone-site@.service`).
    pub template: String,
    /// The instances wanted, e.g. `plone-site@client1` (with or without `.service`).
    pub keep: Vec<String>,
}

impl Instances {
    pub fn of(template: impl Into<String>, keep: Vec<String>) -> Instances {
        Instances {
            template: template.into(),
            keep,
        }
    }

    /// The template's name up to and with its `@`.
    pub fn prefix(&self) -> &str {
        match self.template.find('@') {
            Some(at) => &self.template[..=at],
            None => &self.template,
        }
    }

    fn kept_units(&self) -> Vec<String> {
        self.keep.iter().map(|k| unit_files(k)[0].clone()).collect()
    }

    /// Runs after [`batch_check_script`]'s `list-units` (in `$a`).
    fn check_fragment(&self, tag: &str) -> String {
        let pattern = format!("{}*.service", quote(self.prefix()));
        let keep = self.kept_units();
        let keep = if keep.is_empty() {
            "''".to_string()
        } else {
            keep.iter().map(|u| quote(u)).collect::<Vec<_>>().join("|")
        };
        format!(
            "echo \"@{tag} checked=1\"\n\
             while read -r u _ s _; do case $u in {pattern}) case $s in inactive) ;; *) \
             case $u in {keep}) ;; *) echo \"@{tag} surplus=$u\" ;; esac ;; esac ;; esac; \
             done <<PROVISION_UNITS\n$a\nPROVISION_UNITS\n\
             for f in /etc/systemd/system/*.wants/{pattern}; do \
             if [ -L \"$f\" ] || [ -e \"$f\" ]; then u=${{f##*/}}; \
             case $u in {keep}) ;; *) echo \"@{tag} surplus=$u\" ;; esac; fi; done\n"
        )
    }

    pub(crate) fn drift(&self, state: &[&str]) -> Result<Option<Drift>, String> {
        if state_value(state, "checked").is_none() {
            return Err("no state reported".to_string());
        }
        let mut surplus: Vec<&str> = state
            .iter()
            .filter_map(|line| line.strip_prefix("surplus="))
            .collect();
        surplus.sort_unstable();
        surplus.dedup();
        if surplus.is_empty() {
            return Ok(None);
        }
        let fix = surplus
            .iter()
            .map(|u| {
                let u = quote(u);
                format!(
                    "systemctl disable --now {u}\nsystemctl reset-failed {u} 2>/dev/null || true\n"
                )
            })
            .collect();
        Ok(Some(Drift {
            summary: vec![format!(
                "stop and disable {} (wanted: {})",
                surplus.join(", "),
                if self.keep.is_empty() {
                    "none".to_string()
                } else {
                    self.kept_units().join(", ")
                }
            )],
            diff: None,
            fix,
        }))
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    /// Unit name, e.g. `haproxy` or `plone-client@client1`.
    pub name: String,
    pub enabled: Option<bool>,
    pub state: Option<ServiceState>,
    /// Resource ids whose change restarts the service.
    pub restart_on: Vec<String>,
    /// Resource ids whose change reloads it (when nothing asks for a restart).
    pub reload_on: Vec<String>,
}

impl Service {
    /// A service that is enabled and running.
    pub fn running(name: impl Into<String>) -> Service {
        Service {
            name: name.into(),
            enabled: Some(true),
            state: Some(ServiceState::Running),
            restart_on: Vec::new(),
            reload_on: Vec::new(),
        }
    }

    /// A service that is disabled and stopped.
    pub fn stopped(name: impl Into<String>) -> Service {
        Service {
            name: name.into(),
            enabled: Some(false),
            state: Some(ServiceState::Stopped),
            restart_on: Vec::new(),
            reload_on: Vec::new(),
        }
    }

    #[must_use]
    pub fn restart_on(mut self, resource_id: impl Into<String>) -> Service {
        self.restart_on.push(resource_id.into());
        self
    }

    #[must_use]
    pub fn reload_on(mut self, resource_id: impl Into<String>) -> Service {
        self.reload_on.push(resource_id.into());
        self
    }

    pub(crate) fn drift(
        &self,
        state: &[&str],
        triggered: &[String],
    ) -> Result<Option<Drift>, String> {
        let n = quote(&self.name);
        let enabled = state_value(state, "enabled").unwrap_or("");
        let active = state_value(state, "active").unwrap_or("");
        let mut summary = Vec::new();
        let mut fix = String::new();
        match self.enabled {
            Some(true)
                if !matches!(
                    enabled,
                    "enabled" | "static" | "alias" | "indirect" | "generated"
                ) =>
            {
                summary.push(format!("enable (is {})", or_unknown(enabled)));
                if enabled == "masked" {
                    fix.push_str(&format!("systemctl unmask {n}\n"));
                }
                // Enabling only links the unit for boot; the implicit daemon-reload (~70 ms)
                // buys nothing: unit files changed in this run are reloaded by the engine
                // before any service is touched.
                fix.push_str(&format!("systemctl enable --no-reload {n}\n"));
            }
            Some(false) if enabled == "enabled" => {
                summary.push("disable".to_string());
                fix.push_str(&format!("systemctl disable --no-reload {n}\n"));
            }
            _ => {}
        }
        let running = active == "active" || active == "reloading";
        // What a change of a dependency asks for: restart wins over reload.
        let wanted_action = if triggered.iter().any(|id| self.restart_on.contains(id)) {
            "restart"
        } else {
            "reload"
        };
        let mut started = false;
        match self.state {
            Some(ServiceState::Running) if !running => {
                summary.push(format!("start (is {})", or_unknown(active)));
                if triggered.is_empty() {
                    fix.push_str(&format!("systemctl start {n}\n"));
                } else {
                    // A package installed earlier in this run may have started the service
                    // with its default config already: then it must pick up ours.
                    fix.push_str(&format!(
                        "if systemctl is-active --quiet {n}; then systemctl {wanted_action} {n}; \
                         else systemctl start {n}; fi\n"
                    ));
                }
                started = true;
            }
            Some(ServiceState::Stopped) if active != "inactive" && !active.is_empty() => {
                summary.push(format!("stop (is {active})"));
                fix.push_str(&format!("systemctl stop {n}\n"));
            }
            _ => {}
        }
        let wants_running = self.state != Some(ServiceState::Stopped);
        if !started && wants_running && running && !triggered.is_empty() {
            summary.push(format!(
                "{wanted_action} (changed: {})",
                triggered.join(", ")
            ));
            fix.push_str(&format!("systemctl {wanted_action} {n}\n"));
        }
        Ok((!summary.is_empty()).then_some(Drift {
            summary,
            diff: None,
            fix,
        }))
    }
}

fn or_unknown(state: &str) -> &str {
    if state.is_empty() { "unknown" } else { state }
}

#[cfg(test)]
mod tests {
    use super::unit_files;

    #[test]
    fn a_unit_is_defined_by_its_file_or_its_template() {
        assert_eq!(unit_files("haproxy"), ["haproxy.service"]);
        assert_eq!(unit_files("backup.timer"), ["backup.timer"]);
        assert_eq!(
            unit_files("plone-site@client1"),
            ["plone-site@client1.service", "plone-site@.service"]
        );
        // A dot in an instance name is not a unit type.
        assert_eq!(
            unit_files("getty@tty1.x"),
            ["getty@tty1.x.service", "getty@.service"]
        );
    }
}
