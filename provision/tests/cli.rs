//! The `provision` binary as a user runs it: exit codes, messages, and plan/run/status against
//! a real sshd on 127.0.0.1 (read-only there: this machine is not a sandbox host).

use std::path::Path;
use std::process::{Command, Output};

use provision_core::testing::Sshd;

fn provision(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .current_dir(dir)
        .env_remove("PROVISION_STACK")
        .output()
        .expect("the provision binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn stack_for(sshd: &Sshd, extra_hosts: &str, attributes: &str) -> String {
    format!(
        r#"[stack]
name = "clitest"

[stack.ssh]
user = "root"
key = "{key}"
known_hosts = "{known_hosts}"
agent = false
connect_timeout = 5

[hosts.web1]
address = "127.0.0.1"
port = {port}
layers = []
{extra_hosts}
[attributes]
{attributes}
"#,
        key = sshd.client_key_path().display(),
        known_hosts = sshd.known_hosts_path().display(),
        port = sshd.port(),
    )
}

#[test]
fn an_unknown_key_is_bad_input_with_the_place_and_the_nearest_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stack.toml"),
        "[stack]\nname = \"x\"\n[hosts.a]\naddress = \"10.0.0.1\"\nlayers = []\n\
         [attributes.plone_instances]\nper_cpux = 2\n",
    )
    .unwrap();
    let out = provision(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("stack.toml:7:1"), "{stderr}");
    assert!(stderr.contains("per_cpu"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_missing_stack_file_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = provision(dir.path(), &["up", "--stack", "nope.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nope.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_unknown_host_or_layer_is_bad_input_naming_the_nearest() {
    let sshd = Sshd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stack.toml"), stack_for(&sshd, "", "")).unwrap();
    let out = provision(dir.path(), &["plan", "--host", "web2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("did you mean `web1`"),
        "{}",
        text(&out.stderr)
    );
    let out = provision(dir.path(), &["plan", "--layer", "plone_instance"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("plone_instances"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn deploy_without_an_instance_host_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stack.toml"),
        "[stack]\nname = \"x\"\n[hosts.a]\naddress = \"10.0.0.1\"\nlayers = []\n",
    )
    .unwrap();
    let out = provision(dir.path(), &["deploy"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no selected host has the plone_instances layer"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plan_reports_each_host_failure_with_its_cause() {
    // This machine is reachable over SSH but is not a systemd host, so it is refused with a
    // reason; a closed port is reported as that host's connection failure. (A real plan with
    // diffs runs against sandbox hosts in tests/sandbox.rs.)
    let sshd = Sshd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gone = format!(
        "[hosts.web2]\naddress = \"127.0.0.1\"\nport = {}\nlayers = []\n",
        closed_port()
    );
    std::fs::write(
        dir.path().join("stack.toml"),
        stack_for(&sshd, &gone, "system.timezone = \"Etc/UTC\"\n"),
    )
    .unwrap();
    let out = provision(dir.path(), &["plan", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts = report["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[0]["host"], "web1");
    assert_eq!(hosts[0]["outcome"]["status"], "failed", "{report}");
    assert!(
        hosts[0]["outcome"]["error"]
            .as_str()
            .unwrap()
            .contains("supports Debian and Ubuntu hosts with systemd"),
        "{report}"
    );
    assert_eq!(hosts[1]["host"], "web2");
    assert_eq!(hosts[1]["outcome"]["status"], "failed");
    assert!(
        hosts[1]["outcome"]["error"]
            .as_str()
            .unwrap()
            .starts_with("connecting:"),
        "{report}"
    );
    // Progress went to stderr, per host.
    assert!(
        text(&out.stderr).contains("[web1] gathering facts"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_executes_on_the_host_and_masks_secrets() {
    let sshd = Sshd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stack.toml"), stack_for(&sshd, "", "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args([
            "run",
            "--",
            "echo",
            "hello",
            "$PROVISION_NOTHING",
            "topsecret-value",
        ])
        .current_dir(dir.path())
        .env("PROVISION_SECRET_HAPROXY_STATS_PASSWORD", "topsecret-value")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("web1: exit 0"), "{stdout}");
    assert!(stdout.contains("hello"), "{stdout}");
    assert!(
        !stdout.contains("topsecret-value"),
        "secret printed: {stdout}"
    );

    let out = provision(dir.path(), &["run", "--", "exit", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("web1: exit 3"));
}

#[test]
fn status_shows_facts_and_unreachable_hosts() {
    let sshd = Sshd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gone = format!(
        "[hosts.web2]\naddress = \"127.0.0.1\"\nport = {}\nlayers = []\n",
        closed_port()
    );
    std::fs::write(dir.path().join("stack.toml"), stack_for(&sshd, &gone, "")).unwrap();
    let out = provision(dir.path(), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("web1 (127.0.0.1): up;"), "{stdout}");
    assert!(stdout.contains("CPUs"), "{stdout}");
    assert!(stdout.contains("web2 (127.0.0.1): UNREACHABLE"), "{stdout}");
}

#[test]
fn a_changed_host_key_is_refused_by_the_cli() {
    let mut sshd = Sshd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stack.toml"), stack_for(&sshd, "", "")).unwrap();
    sshd.regenerate_host_key_and_restart().unwrap();
    let out = provision(dir.path(), &["run", "--accept-new-host-keys", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("CHANGED"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn attributes_shows_the_custom_json_merged_over_the_stack_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stack.toml"),
        "[stack]\nname = \"x\"\n[hosts.a]\naddress = \"10.0.0.1\"\nlayers = []\n\
         [apps.plone]\nrepository = \"https://example.org/site.git\"\n\
         [attributes.plone_instances]\nper_cpu = 3\nzserver_threads = 4\n\
         [attributes.haproxy]\nstats_password = \"inline-secret\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("opsworks.json"),
        r#"{"plone_instances": {"per_cpu": 1.5}, "deploy": {"plone": {"always_buildout_on_deploy": true}}}"#,
    )
    .unwrap();
    let out = provision(
        dir.path(),
        &["attributes", "--custom-json", "opsworks.json", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("inline-secret"),
        "secret printed: {stdout}"
    );
    let attributes: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        attributes["plone_instances"]["per_cpu"], 1.5,
        "the JSON wins"
    );
    assert_eq!(
        attributes["plone_instances"]["zserver_threads"], 4,
        "the stack stays"
    );
    assert_eq!(
        attributes["deploy"]["plone"]["always_build_on_deploy"], true,
        "alias"
    );
    assert_eq!(
        attributes["haproxy"]["balance"], "leastconn",
        "the default stays"
    );
}

#[test]
fn backup_without_a_zeo_server_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stack.toml"),
        "[stack]\nname = \"x\"\n[hosts.a]\naddress = \"10.0.0.1\"\nlayers = []\n",
    )
    .unwrap();
    let out = provision(dir.path(), &["backup"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("nothing to run: the stack needs a host with the zeoserver layer"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn missing_stats_and_broker_passwords_are_generated_into_the_secrets_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stack.toml"),
        "[stack]\nname = \"x\"\nsecrets = \"secrets.toml\"\n\
         [hosts.lb1]\naddress = \"10.0.0.10\"\nlayers = [\"lb\"]\n\
         [hosts.db1]\naddress = \"10.0.0.20\"\nlayers = [\"celery_broker\"]\n",
    )
    .unwrap();
    let out = provision(dir.path(), &["attributes", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("generated haproxy_stats_password and redis_config_requirepass into"),
        "{}",
        text(&out.stderr)
    );
    let secrets = std::fs::read_to_string(dir.path().join("secrets.toml")).unwrap();
    let password = |name: &str| {
        secrets
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{name} is not in the secrets file:\n{secrets}"))
    };
    let broker = password("redis_config_requirepass");
    let password = password("haproxy_stats_password");
    assert!(password.len() >= 16 && broker.len() >= 16, "{secrets}");
    assert_ne!(password, broker);
    assert!(
        !text(&out.stdout).contains(broker),
        "the password was printed"
    );
    let mode = std::fs::metadata(dir.path().join("secrets.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !text(&out.stdout).contains(password),
        "the password was printed"
    );
    assert!(text(&out.stdout).contains("********"));

    // The next run uses it and generates nothing.
    let out = provision(dir.path(), &["attributes", "--json"]);
    assert!(
        !text(&out.stderr).contains("generated"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("secrets.toml")).unwrap(),
        secrets
    );
}
