//! `provision init`, `completions` and `man`: the starter stack files are valid stacks of the
//! promised shape, an existing file is never overwritten without --force, and the completion
//! scripts and man pages come from the CLI definition. No host is needed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use provision_core::stack::Stack;

fn provision(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_provision"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("PROVISION_STACK");
    // Secrets from the environment would hide a secret the stack file fails to mention.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PROVISION_SECRET_") {
            command.env_remove(name);
        }
    }
    command.output().expect("the provision binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A shape `provision init` writes, and what its stack must hold.
struct Expected {
    shape: &'static str,
    /// Hosts with their layers, in stack order.
    hosts: &'static [(&'static str, &'static [&'static str])],
    /// The secrets the stack needs before `up`.
    secrets: &'static [&'static str],
}

const SHAPES: &[Expected] = &[
    Expected {
        shape: "single",
        hosts: &[("web1", &["lb", "plone_instances", "zeoserver"])],
        secrets: &["haproxy_stats_password"],
    },
    Expected {
        shape: "cluster",
        hosts: &[
            ("lb1", &["lb"]),
            ("app1", &["plone_instances"]),
            ("app2", &["plone_instances"]),
            ("db1", &["zeoserver", "shared_blobs"]),
        ],
        secrets: &["haproxy_stats_password"],
    },
    Expected {
        shape: "relstorage",
        hosts: &[
            ("lb1", &["lb"]),
            ("app1", &["plone_instances", "db_packing"]),
            ("app2", &["plone_instances"]),
            ("db1", &["postgres"]),
        ],
        secrets: &[
            "haproxy_stats_password",
            "plone_instances_relstorage_db_password",
        ],
    },
];

fn hosts_and_layers(stack: &Stack) -> Vec<(String, Vec<String>)> {
    stack
        .hosts()
        .iter()
        .map(|h| {
            let layers = h.layers.iter().map(|l| l.as_str().to_string()).collect();
            (h.name.clone(), layers)
        })
        .collect()
}

/// The stack file with every commented-out setting (`# key = value`, `# [table]`) turned on.
fn uncommented(stack: &str) -> String {
    stack
        .lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else {
                return line.to_string();
            };
            let key = rest.split(" = ").next().unwrap_or_default();
            let is_setting = rest.contains(" = ")
                && !key.is_empty()
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            let is_table = rest.starts_with("[attributes.") && rest.ends_with(']');
            if is_setting || is_table {
                rest.to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_shape_is_a_valid_stack_with_its_hosts_and_layers() {
    for Expected {
        shape,
        hosts,
        secrets,
    } in SHAPES
    {
        let dir = tempfile::tempdir().unwrap();
        let out = provision(
            dir.path(),
            &["init", "--shape", shape, "--out", "site/stack.toml"],
        );
        // The directory must exist: init writes one file.
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        std::fs::create_dir(dir.path().join("site")).unwrap();
        let out = provision(
            dir.path(),
            &["init", "--shape", shape, "--out", "site/stack.toml"],
        );
        ok(&out);
        assert!(
            text(&out.stdout).contains("site/stack.toml"),
            "{}",
            text(&out.stdout)
        );
        let path = dir.path().join("site/stack.toml");
        let written = std::fs::read_to_string(&path).unwrap();
        insta::assert_snapshot!(format!("init-{shape}"), written);

        // Checked by the binary without connecting: parsed, validated, attributes merged.
        let out = provision(
            dir.path(),
            &["attributes", "--json", "--stack", "site/stack.toml"],
        );
        ok(&out);
        let attributes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let instances = &attributes["plone_instances"];
        assert_eq!(instances["enable_relstorage"], *shape == "relstorage");
        assert_eq!(instances["nfs_blobs"], *shape == "cluster");
        assert_eq!(
            attributes["plone_zeoserver"]["nfs_blobs"],
            *shape == "cluster"
        );

        let stack = Stack::load(&path, None).unwrap_or_else(|e| panic!("{shape}: {e}"));
        let expected: Vec<(String, Vec<String>)> = hosts
            .iter()
            .map(|(name, layers)| {
                let layers = layers.iter().map(|l| l.to_string()).collect();
                (name.to_string(), layers)
            })
            .collect();
        assert_eq!(hosts_and_layers(&stack), expected, "{shape}");
        assert_eq!(stack.apps().len(), 1, "{shape}");
        for host in stack.hosts() {
            assert!(host.address.starts_with("192.0.2."), "{shape}: {host:?}");
        }

        // The secrets the comments name are the ones `up` asks for.
        for secret in *secrets {
            assert!(written.contains(secret), "{shape}: {secret} not mentioned");
        }
        let secrets_file = dir.path().join("site/secrets.toml");
        let entries: String = secrets
            .iter()
            .map(|s| format!("{s} = \"a-test-secret\"\n"))
            .collect();
        std::fs::write(&secrets_file, entries).unwrap();
        std::fs::set_permissions(&secrets_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let stack = Stack::load(&path, None).unwrap();
        stack
            .check_secrets(stack.hosts())
            .unwrap_or_else(|e| panic!("{shape}: {e}"));

        // Every commented-out setting is a valid one too.
        let all_on = uncommented(&written);
        assert_ne!(all_on, written);
        let all_on_path = dir.path().join("site/all-on.toml");
        std::fs::write(&all_on_path, &all_on).unwrap();
        Stack::load(&all_on_path, None)
            .unwrap_or_else(|e| panic!("{shape} with every setting on: {e}\n{all_on}"));
    }
}

#[test]
fn the_relstorage_stack_asks_for_its_database_password_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    ok(&provision(dir.path(), &["init", "--shape", "relstorage"]));
    let out = provision(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("plone_instances_relstorage_db_password"),
        "{stderr}"
    );
    assert!(
        stderr.contains("PROVISION_SECRET_PLONE_INSTANCES_RELSTORAGE_DB_PASSWORD"),
        "{stderr}"
    );
}

#[test]
fn init_never_overwrites_a_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    std::fs::write(&path, "# mine\n").unwrap();
    for args in [
        &["init"][..],
        &["init", "--shape", "cluster", "--out", "stack.toml"],
    ] {
        let out = provision(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            text(&out.stderr),
            "error: stack.toml already exists and was left unchanged: pass --force to \
             overwrite it, or --out another file\n"
        );
        assert!(out.stdout.is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
    }
    ok(&provision(
        dir.path(),
        &["init", "--shape", "cluster", "--force"],
    ));
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("[hosts.db1]"), "{written}");
}

#[test]
fn completions_cover_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = provision(dir.path(), &["completions", "bash"]);
    ok(&out);
    let script = text(&out.stdout);
    for name in [
        "plan",
        "up",
        "deploy",
        "blobs",
        "migrate",
        "sandbox",
        "init",
        "completions",
        "man",
        "--shape",
    ] {
        assert!(script.contains(name), "{name} missing");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = provision(dir.path(), &["completions", shell]);
        ok(&out);
        assert!(text(&out.stdout).contains("init"), "{shell}");
    }
    let out = provision(dir.path(), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    ok(&provision(dir.path(), &["man", "--out", "pages"]));
    let pages = dir.path().join("pages");
    for page in [
        "provision.1",
        "provision-plan.1",
        "provision-init.1",
        "provision-blobs-migrate.1",
        "provision-sandbox-up.1",
    ] {
        let roff = std::fs::read_to_string(pages.join(page)).unwrap();
        assert!(roff.contains(".TH "), "{page}");
    }
    // The hidden `sandbox proxy` has no page.
    assert!(!pages.join("provision-sandbox-proxy.1").exists());
    let man_available = Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if man_available {
        let out = Command::new("man")
            .arg("-l")
            .arg(pages.join("provision-init.1"))
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        ok(&out);
        let shown = text(&out.stdout);
        assert!(shown.contains("--shape"), "{shown}");
        assert!(shown.contains("relstorage"), "{shown}");
    }
}
