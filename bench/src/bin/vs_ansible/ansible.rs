//! The Ansible side: ansible-core in a virtualenv, and playbooks that manage exactly what
//! provision manages. The configuration play is generated from the resources provision itself
//! converges on each host (`PROVISION_DEBUG_RESOURCES`), one task per resource with the module
//! a user would pick (apt, user, group, file, copy, systemd_service); the deploy plays
//! (bench/ansible/deploy.yml) mirror provision's release steps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::Value;

use crate::testbed::{self, CACHE_DIR};

/// Pinned, so that runs compare.
const ANSIBLE_CORE: &str = "ansible-core==2.19.14";

pub const STATIC_FILES: &[(&str, &str)] = &[
    ("site.yml", include_str!("../../../ansible/site.yml")),
    (
        "deploy-all.yml",
        include_str!("../../../ansible/deploy-all.yml"),
    ),
    ("deploy.yml", include_str!("../../../ansible/deploy.yml")),
    (
        "restart-client.yml",
        include_str!("../../../ansible/restart-client.yml"),
    ),
];
const CONFIG: &str = include_str!("../../../ansible/ansible.cfg");

/// ansible-core in its own virtualenv (made once), from the machine's Python package index as
/// pip is configured here. Returns the `ansible-playbook` to run.
pub fn ensure_installed() -> anyhow::Result<PathBuf> {
    let venv = Path::new(CACHE_DIR).join("venv-ansible");
    let playbook = venv.join("bin/ansible-playbook");
    let stamp = venv.join(".vs-ansible");
    if playbook.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == ANSIBLE_CORE) {
        return Ok(playbook);
    }
    testbed::say(&format!(
        "installing {ANSIBLE_CORE} into {}",
        venv.display()
    ));
    std::fs::create_dir_all(CACHE_DIR)?;
    // Debian's Python, not a user's pyenv: the venv must outlive shell setups.
    let python = if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    testbed::run(
        Command::new(python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    testbed::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(ANSIBLE_CORE),
    )?;
    std::fs::write(stamp, ANSIBLE_CORE)?;
    Ok(playbook)
}

/// One host for the inventory.
pub struct InventoryHost {
    pub name: String,
    pub address: String,
    pub instance: bool,
}

/// Writes ansible.cfg, the inventory and the static playbooks into `dir`.
pub fn write_project(
    dir: &Path,
    hosts: &[InventoryHost],
    key_file: &Path,
    known_hosts: &Path,
) -> anyhow::Result<()> {
    let control = dir.join("cp");
    std::fs::create_dir_all(&control)?;
    let config = CONFIG
        .replace("@FORKS@", &hosts.len().to_string())
        .replace("@KNOWN_HOSTS@", &known_hosts.display().to_string())
        .replace("@CONTROL_DIR@", &control.display().to_string());
    std::fs::write(dir.join("ansible.cfg"), config)?;
    let mut inventory = String::from("[all]\n");
    for h in hosts {
        let _ = writeln!(
            inventory,
            "{} ansible_host={} ansible_user=root ansible_ssh_private_key_file={}",
            h.name,
            h.address,
            key_file.display()
        );
    }
    inventory.push_str("\n[instances]\n");
    for h in hosts.iter().filter(|h| h.instance) {
        let _ = writeln!(inventory, "{}", h.name);
    }
    std::fs::write(dir.join("inventory.ini"), inventory)?;
    for (name, text) in STATIC_FILES {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// Ends the SSH master connections Ansible left (ControlPersist), so that every run starts
/// from no connection, as provision's runs do.
pub fn close_masters(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir.join("cp")) else {
        return;
    };
    for entry in entries.flatten() {
        let _ = Command::new("ssh")
            .arg("-o")
            .arg(format!("ControlPath={}", entry.path().display()))
            .args(["-O", "exit", "vs-ansible-master"])
            .output();
        let _ = std::fs::remove_file(entry.path());
    }
}

/// The resources provision converged on each host, from `PROVISION_DEBUG_RESOURCES`: one
/// list per converge call, in order.
pub fn read_dump(dir: &Path, host: &str) -> anyhow::Result<Vec<Vec<Value>>> {
    let path = dir.join(format!("{host}.jsonl"));
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "provision wrote no resources for {host} ({})",
            path.display()
        )
    })?;
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)?;
            Ok(value["resources"].as_array().cloned().unwrap_or_default())
        })
        .collect()
}

/// A YAML scalar Ansible takes literally: a JSON string (YAML reads JSON escapes the same way),
/// tagged `!unsafe` so that Jinja never renders it.
fn lit(text: &str) -> String {
    format!("!unsafe {}", Value::String(text.to_string()))
}

fn str_of<'a>(resource: &'a Value, key: &str) -> &'a str {
    resource[key].as_str().unwrap_or_default()
}

/// `validate` for the copy module: ours use `{}` for the candidate and need a shell; Ansible
/// splits the command itself and puts the candidate at `%s`.
fn copy_validate(command: &str) -> String {
    let script = command.replace("{}", "\"$1\"");
    let quoted = format!("'{}'", script.replace('\'', r"'\''"));
    format!("/bin/sh -c {quoted} validate ").replace('%', "%%") + "%s"
}

/// One play that makes every host what provision's resources say. Hosts with the same
/// resources share one block of tasks; blocks of other hosts are skipped without a connection.
/// `strategy: free` lets every host run through its tasks at its own pace, as provision's
/// hosts do.
///
/// provision's file writes make a missing parent directory (`mkdir -p`); the copy module does
/// not, so a parent that no resource manages and that the hosts' base image lacks
/// (`in_base`) gets a directory task, as a user would add.
pub fn play(
    name: &str,
    per_host: &[(String, Vec<Value>)],
    in_base: &dyn Fn(&str) -> bool,
) -> anyhow::Result<(String, Vec<Vec<String>>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut handlers: BTreeMap<String, String> = BTreeMap::new();
    for (host, resources) in per_host {
        if resources.is_empty() {
            continue;
        }
        let tasks = tasks(resources, &mut handlers, in_base)?;
        match groups.iter_mut().find(|(t, _)| *t == tasks) {
            Some((_, hosts)) => hosts.push(host.clone()),
            None => groups.push((tasks, vec![host.clone()])),
        }
    }
    let mut yaml = format!(
        "# Generated by vs_ansible from the resources provision converges on these hosts.\n\
         - name: {}\n  hosts: all\n  strategy: free\n  gather_facts: false\n  tasks:\n",
        Value::String(name.to_string())
    );
    for (index, (tasks, hosts)) in groups.iter().enumerate() {
        let group = format!("g{}", index + 1);
        let _ = writeln!(
            yaml,
            "    - name: {}\n      when: inventory_hostname in {}\n      block:",
            Value::String(format!("{} host(s) like {}", hosts.len(), hosts[0])),
            Value::from(hosts.clone())
        );
        for line in tasks.replace("@G@", &group).lines() {
            let _ = writeln!(yaml, "        {line}");
        }
    }
    if !handlers.is_empty() {
        yaml.push_str("  handlers:\n");
        for handler in handlers.values() {
            for line in handler.lines() {
                let _ = writeln!(yaml, "    {line}");
            }
        }
    }
    Ok((yaml, groups.into_iter().map(|(_, hosts)| hosts).collect()))
}

/// The tasks of one host, `@G@` standing for its group in registered names.
fn tasks(
    resources: &[Value],
    handlers: &mut BTreeMap<String, String>,
    in_base: &dyn Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let mut directories: Vec<String> = resources
        .iter()
        .filter(|r| str_of(r, "kind") == "directory")
        .map(|r| str_of(r, "path").to_string())
        .collect();
    // A change of a resource a service depends on restarts or reloads it (handlers).
    let mut notify: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in resources.iter().filter(|r| str_of(r, "kind") == "service") {
        let service = str_of(r, "name");
        for (key, action, state) in [
            ("restart_on", "restart", "restarted"),
            ("reload_on", "reload", "reloaded"),
        ] {
            for dep in r[key].as_array().into_iter().flatten() {
                let handler = format!("{action} {service}");
                notify
                    .entry(dep.as_str().unwrap_or_default().to_string())
                    .or_default()
                    .push(handler.clone());
                handlers.entry(handler.clone()).or_insert_with(|| {
                    format!(
                        "- name: {}\n  ansible.builtin.systemd_service:\n    name: {}\n    state: {state}\n",
                        Value::String(handler),
                        lit(service)
                    )
                });
            }
        }
    }
    let mut out = String::new();
    let mut units_changed: Vec<String> = Vec::new();
    for (index, r) in resources.iter().enumerate() {
        let id = str_of(r, "id");
        let kind = str_of(r, "kind");
        let register = format!("@G@_r{index}");
        if kind == "service" && !units_changed.is_empty() {
            // As provision does: daemon-reload before the first service after a changed unit.
            let _ = write!(
                out,
                "- name: daemon-reload\n  ansible.builtin.systemd_service:\n    daemon_reload: true\n  when: {}\n",
                units_changed
                    .iter()
                    .map(|r| format!("{r} is changed"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
            units_changed.clear();
        }
        if kind == "file" || kind == "unit" {
            let parent = str_of(r, "path")
                .rsplit_once('/')
                .map(|(d, _)| d)
                .unwrap_or("/");
            if !parent.is_empty() && !directories.iter().any(|d| d == parent) && !in_base(parent) {
                let _ = write!(
                    out,
                    "- name: {}\n  ansible.builtin.file:\n    path: {}\n    state: directory\n",
                    Value::String(format!("directory:{parent} (the parent of {id})")),
                    lit(parent)
                );
                directories.push(parent.to_string());
            }
        }
        let _ = writeln!(out, "- name: {}", Value::String(id.to_string()));
        match kind {
            "packages" => {
                let names: Vec<String> = r["names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| lit(n.as_str().unwrap_or_default()))
                    .collect();
                let _ = write!(
                    out,
                    "  ansible.builtin.apt:\n    name: [{}]\n    state: present\n    install_recommends: false\n",
                    names.join(", ")
                );
            }
            "group" => {
                let _ = write!(
                    out,
                    "  ansible.builtin.group:\n    name: {}\n    system: {}\n",
                    lit(str_of(r, "name")),
                    r["system"].as_bool().unwrap_or(false)
                );
            }
            "user" => {
                let _ = write!(
                    out,
                    "  ansible.builtin.user:\n    name: {}\n    system: {}\n    home: {}\n    create_home: true\n    shell: {}\n",
                    lit(str_of(r, "name")),
                    r["system"].as_bool().unwrap_or(false),
                    lit(str_of(r, "home")),
                    lit(str_of(r, "shell")),
                );
                if let Some(group) = r["group"].as_str() {
                    let _ = writeln!(out, "    group: {}", lit(group));
                }
            }
            "directory" => {
                let _ = write!(
                    out,
                    "  ansible.builtin.file:\n    path: {}\n    state: directory\n    owner: {}\n    group: {}\n    mode: \"{:04o}\"\n",
                    lit(str_of(r, "path")),
                    lit(str_of(r, "owner")),
                    lit(str_of(r, "group")),
                    r["mode"].as_u64().unwrap_or(0o755)
                );
            }
            "symlink" => {
                let _ = write!(
                    out,
                    "  ansible.builtin.file:\n    src: {}\n    dest: {}\n    state: link\n    force: {}\n",
                    lit(str_of(r, "target")),
                    lit(str_of(r, "path")),
                    r["replace_existing"].as_bool().unwrap_or(false)
                );
            }
            "file" | "unit" => {
                let content = base64::engine::general_purpose::STANDARD
                    .decode(str_of(r, "content_base64"))
                    .context("file content in the dump")?;
                let content = String::from_utf8(content)
                    .with_context(|| format!("{id}: binary content is not supported here"))?;
                let _ = write!(
                    out,
                    "  ansible.builtin.copy:\n    dest: {}\n    content: {}\n    owner: {}\n    group: {}\n    mode: \"{:04o}\"\n",
                    lit(str_of(r, "path")),
                    lit(&content),
                    lit(str_of(r, "owner")),
                    lit(str_of(r, "group")),
                    r["mode"].as_u64().unwrap_or(0o644)
                );
                if let Some(command) = r["validate"].as_str() {
                    let _ = writeln!(out, "    validate: {}", lit(&copy_validate(command)));
                }
                if r["secret"].as_bool().unwrap_or(false) {
                    out.push_str("  no_log: true\n");
                }
                if kind == "unit" {
                    units_changed.push(register.clone());
                }
            }
            "service" => {
                let _ = write!(
                    out,
                    "  ansible.builtin.systemd_service:\n    name: {}\n",
                    lit(str_of(r, "name"))
                );
                if let Some(enabled) = r["enabled"].as_bool() {
                    let _ = writeln!(out, "    enabled: {enabled}");
                }
                match r["state"].as_str() {
                    Some("running") => out.push_str("    state: started\n"),
                    Some("stopped") => out.push_str("    state: stopped\n"),
                    _ => {}
                }
                if r["state"].as_str() == Some("stopped") {
                    // provision keeps a unit that is not installed stopped by doing nothing.
                    let _ = writeln!(
                        out,
                        "  failed_when: {register}.failed | default(false) and 'Could not find the requested service' not in ({register}.msg | default(''))"
                    );
                }
            }
            "script" => {
                let script = format!(
                    "if ( {}\n) >/dev/null 2>&1 </dev/null; then exit 0; fi\n( set -e\n{}\n)\necho PROVISION_CHANGED\n",
                    str_of(r, "check"),
                    str_of(r, "fix")
                );
                let _ = write!(
                    out,
                    "  ansible.builtin.shell: {}\n  changed_when: \"'PROVISION_CHANGED' in {register}.stdout\"\n",
                    lit(&script)
                );
            }
            "instances" => {
                // What a playbook author would write: the template's running or enabled
                // instances, all but the wanted ones stopped and disabled.
                let prefix = str_of(r, "template")
                    .split_once('@')
                    .map_or(str_of(r, "template"), |(name, _)| name);
                let keep: Vec<String> = r["keep"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| {
                        let k = k.as_str().unwrap_or_default();
                        let unit = if k.ends_with(".service") {
                            k.to_string()
                        } else {
                            format!("{k}.service")
                        };
                        format!("'{unit}'")
                    })
                    .collect();
                let script = format!(
                    "for u in $({{ systemctl list-units --all --plain --no-legend --full '{prefix}@*.service' \
                     | awk '$3 != \"inactive\" {{print $1}}'; \
                     ls /etc/systemd/system/*.wants/ 2>/dev/null | grep '^{prefix}@.*\\.service$'; }} | sort -u); do \
                     case $u in {keep}) ;; *) systemctl disable --now \"$u\"; echo PROVISION_CHANGED ;; esac; done\n",
                    keep = if keep.is_empty() {
                        "''".to_string()
                    } else {
                        keep.join("|")
                    }
                );
                let _ = write!(
                    out,
                    "  ansible.builtin.shell: {}\n  changed_when: \"'PROVISION_CHANGED' in {register}.stdout\"\n",
                    lit(&script)
                );
            }
            other => bail!(
                "{id}: no Ansible task for a {other} resource here (mounts need the ansible.posix \
                 collection, which ansible-core does not have)"
            ),
        }
        let _ = writeln!(out, "  register: {register}");
        if let Some(handlers) = notify.get(id) {
            let _ = writeln!(out, "  notify: {}", Value::from(handlers.clone()));
        }
    }
    if !units_changed.is_empty() {
        let _ = write!(
            out,
            "- name: daemon-reload\n  ansible.builtin.systemd_service:\n    daemon_reload: true\n  when: {}\n",
            units_changed
                .iter()
                .map(|r| format!("{r} is changed"))
                .collect::<Vec<_>>()
                .join(" or ")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_commands_get_a_shell_and_escaped_percents() {
        assert_eq!(
            copy_validate("haproxy -c -f {} >/dev/null"),
            r#"/bin/sh -c 'haproxy -c -f "$1" >/dev/null' validate %s"#
        );
        assert_eq!(
            copy_validate("printf '%s' {}"),
            r#"/bin/sh -c 'printf '\''%%s'\'' "$1"' validate %s"#
        );
    }

    #[test]
    fn a_service_reloads_when_its_file_changes() {
        let resources: Vec<Value> = serde_json::from_str(
            r#"[{"kind": "file", "id": "file:/etc/x", "path": "/etc/x", "content_base64": "eAo=",
                 "owner": "root", "group": "root", "mode": 420, "validate": null, "secret": false},
                {"kind": "service", "id": "service:x", "name": "x", "enabled": true,
                 "state": "running", "restart_on": [], "reload_on": ["file:/etc/x"]}]"#,
        )
        .unwrap();
        let (yaml, groups) = play(
            "t",
            &[("h1".into(), resources.clone()), ("h2".into(), resources)],
            &|_| true,
        )
        .unwrap();
        assert_eq!(groups, vec![vec!["h1".to_string(), "h2".to_string()]]);
        assert!(yaml.contains("notify: [\"reload x\"]"), "{yaml}");
        assert!(yaml.contains("state: reloaded"), "{yaml}");
        assert!(yaml.contains("content: !unsafe \"x\\n\""), "{yaml}");
    }

    #[test]
    fn instances_beyond_the_wanted_ones_are_disabled_by_a_shell_task() {
        let resources: Vec<Value> = serde_json::from_str(
            r#"[{"kind": "instances", "id": "instances:p@", "template": "p@",
                 "keep": ["p@c1", "p@c2.service"]}]"#,
        )
        .unwrap();
        let (yaml, _) = play("t", &[("h1".into(), resources)], &|_| true).unwrap();
        assert!(yaml.contains("'p@*.service'"), "{yaml}");
        assert!(
            yaml.contains("case $u in 'p@c1.service'|'p@c2.service') ;;"),
            "{yaml}"
        );
        assert!(yaml.contains("systemctl disable --now"), "{yaml}");
    }
}
