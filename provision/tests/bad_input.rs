//! Bad input, end to end: broken stack files, Custom JSON files, secrets files, repositories
//! and command lines, each refused by the real binary with exit code 2 and a message that
//! names the problem, before any host is touched.
//!
//! The whole table runs against one sandbox host, whose state (a listing of /etc, /srv, /opt,
//! /var/lib, ... and its count of SSH logins) must be the same afterwards. Without the sandbox
//! the table still runs, against a closed port on 127.0.0.1: had provision connected anywhere,
//! the exit code would be 1, not 2.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use provision_sandbox::fixture;

use common::{provision, text};

/// A valid stack; `{NAME}`, `{ADDRESS}` and `{PORT}` are filled in for the target host.
/// Lines added after it start at line 14.
const BASE: &str = r#"[stack]
name = "{NAME}"

[hosts.app1]
address = "{ADDRESS}"
port = {PORT}
layers = ["plone_instances", "zeoserver"]

[apps.site]
repository = "https://example.org/site.git"

[attributes.plone_instances]
instance_count = 1
"#;

/// Set for every case: a secret no case needs, so it must show nowhere.
const ENV_SECRET: (&str, &str) = ("PROVISION_SECRET_NEWRELIC_LICENSE", "Env-Secret-4711");

fn base(more: &str) -> String {
    format!("{BASE}{more}")
}

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    stack: String,
    custom_json: Option<&'static str>,
    /// The secrets file `secrets.toml` and its mode.
    secrets: Option<(&'static str, u32)>,
    env: &'static [(&'static str, &'static str)],
    /// Secret values the case holds (in the stack, the secrets file or the environment).
    hidden: &'static [&'static str],
    /// A directory of the case made a git repository with one commit.
    git_repository: Option<&'static str>,
    /// A directory of the case with a file in it, not a git repository.
    plain_directory: Option<&'static str>,
    expect: &'static str,
}

fn case(
    name: &'static str,
    args: &'static [&'static str],
    stack: String,
    expect: &'static str,
) -> Case {
    Case {
        name,
        args,
        stack,
        custom_json: None,
        secrets: None,
        env: &[],
        hidden: &[],
        git_repository: None,
        plain_directory: None,
        expect,
    }
}

impl Case {
    fn json(self, json: &'static str) -> Case {
        Case {
            custom_json: Some(json),
            ..self
        }
    }

    fn secrets(self, text: &'static str, mode: u32) -> Case {
        Case {
            secrets: Some((text, mode)),
            ..self
        }
    }

    fn env(self, env: &'static [(&'static str, &'static str)]) -> Case {
        Case { env, ..self }
    }

    fn hidden(self, hidden: &'static [&'static str]) -> Case {
        Case { hidden, ..self }
    }

    fn git_repository(self, dir: &'static str) -> Case {
        Case {
            git_repository: Some(dir),
            ..self
        }
    }

    fn plain_directory(self, dir: &'static str) -> Case {
        Case {
            plain_directory: Some(dir),
            ..self
        }
    }
}

fn cases() -> Vec<Case> {
    let app_at = |repository: &str, revision: &str| {
        BASE.replace(
            "repository = \"https://example.org/site.git\"\n",
            &format!("repository = \"{repository}\"\n{revision}"),
        )
    };
    vec![
        // Syntax.
        case(
            "toml syntax",
            &["plan"],
            base("[attributes.haproxy]\nretries = = 3\n"),
            "invalid TOML at stack.toml:15:11",
        ),
        case(
            "a host written twice",
            &["plan"],
            base("[hosts.app1]\naddress = \"10.0.0.12\"\nlayers = []\n"),
            "invalid TOML at stack.toml:14:8: duplicate key",
        ),
        case(
            "json syntax",
            &["plan", "--custom-json", "custom.json"],
            base(""),
            "invalid JSON at custom.json:2:36: trailing comma",
        )
        .json("{\n  \"plone_instances\": {\"per_cpu\": 2,}\n}\n"),
        case(
            "json that is not an object",
            &["plan", "--custom-json", "custom.json"],
            base(""),
            "the custom JSON custom.json must be an object",
        )
        .json("[\"plone_instances\"]"),
        case(
            "a custom JSON file that does not exist",
            &["plan", "--custom-json", "opsworks.json"],
            base(""),
            "cannot read the custom JSON opsworks.json: No such file or directory",
        ),
        case(
            "a stack file that does not exist",
            &["up", "--stack", "prod.toml"],
            base(""),
            "cannot read the stack file prod.toml: No such file or directory",
        ),
        // Unknown keys, at every level, with the nearest valid key.
        case(
            "unknown key in [stack]",
            &["plan"],
            BASE.replace("[hosts.app1]", "nmae = \"x\"\n[hosts.app1]"),
            "unknown key `stack.nmae` at stack.toml:4:1; did you mean `name`?",
        ),
        case(
            "unknown key in [stack.ssh]",
            &["plan"],
            base("[stack.ssh]\nusr = \"root\"\n"),
            "unknown key `stack.ssh.usr` at stack.toml:15:1; did you mean `user`?",
        ),
        case(
            "unknown key in a host",
            &["plan"],
            BASE.replace("port = {PORT}", "port = {PORT}\nadress = \"10.0.0.12\""),
            "unknown key `hosts.app1.adress` at stack.toml:7:1; did you mean `address`?",
        ),
        case(
            "unknown key in an app",
            &["deploy"],
            base("[apps.other]\nrepository = \"r\"\nrevison = \"main\"\n"),
            "unknown key `apps.other.revison` at stack.toml:16:1; did you mean `revision`?",
        ),
        case(
            "unknown table",
            &["plan"],
            base("[atributes.haproxy]\nretries = 2\n"),
            "unknown key `atributes` at stack.toml:14:2; did you mean `attributes`?",
        ),
        case(
            "unknown attribute",
            &["up"],
            base("per_cpux = 2\n"),
            "unknown key `attributes.plone_instances.per_cpux` at stack.toml:14:1; did you mean `per_cpu`?",
        ),
        case(
            "unknown key deep in the custom JSON",
            &["plan", "--custom-json", "custom.json"],
            base(""),
            "unknown key `plone_instances.relstorage.db.hots` at custom.json:1:44; did you mean `host`?",
        )
        .json(r#"{"plone_instances": {"relstorage": {"db": {"hots": "db1"}}}}"#),
        case(
            "a misspelt secret attribute",
            &["plan"],
            base("[attributes.haproxy]\nstats_pasword = \"Inline-Secret-1\"\n"),
            "unknown key `attributes.haproxy.stats_pasword` at stack.toml:15:1; did you mean `stats_password`?",
        )
        .hidden(&["Inline-Secret-1"]),
        // Types and values.
        case(
            "wrong type in the stack",
            &["plan"],
            base("per_cpu = \"two\"\n"),
            "wrong type for `attributes.plone_instances.per_cpu` at stack.toml:14:11: expected a number, found the string \"two\"",
        ),
        case(
            "wrong type in the custom JSON",
            &["configure", "--custom-json", "custom.json"],
            base(""),
            "wrong type for `haproxy.retries` at custom.json:1:25: expected a whole number (0 or more), found the string \"three\"",
        )
        .json(r#"{"haproxy": {"retries": "three"}}"#),
        case(
            "layers that are not a list",
            &["plan"],
            BASE.replace(
                "layers = [\"plone_instances\", \"zeoserver\"]",
                "layers = \"plone_instances\"",
            ),
            "wrong type for `hosts.app1.layers` at stack.toml:7:10: expected an array, found the string \"plone_instances\"",
        ),
        case(
            "a secret of the wrong type",
            &["plan"],
            base("[attributes.haproxy]\nstats_password = 20250101\n"),
            "wrong type for `attributes.haproxy.stats_password` at stack.toml:15:18: expected a string, found an integer",
        )
        .hidden(&["20250101"]),
        case(
            "a ZEO server in buildout mode with a pip app",
            &["plan"],
            format!(
                "{}[attributes.plone_zeoserver]\nmode = \"buildout\"\n",
                BASE.replace("site.git\"\n", "site.git\"\nkind = \"pip\"\n")
            ),
            "but the ZEO server's app `site` is of kind `pip`: buildout mode builds the `zeoserver` part of a buildout app",
        ),
        case(
            "a ZEO server in buildout mode sharing the instances' app on one host",
            &["up"],
            base("[attributes.plone_zeoserver]\nmode = \"buildout\"\n"),
            "host `app1` has both the `zeoserver` and the `plone_instances` layer with the same app `site`: their releases would share `/srv/www/site`",
        ),
        case(
            "an app kind that does not exist",
            &["deploy"],
            BASE.replace(
                "site.git\"\n",
                "site.git\"\nkind = \"poetry\"\n",
            ),
            "unknown value `poetry` for `apps.site.kind` at stack.toml:11:8; use one of `buildout`, `pip`",
        ),
        // Missing pieces.
        case(
            "a stack without a name",
            &["plan"],
            BASE.replace("name = \"{NAME}\"\n", ""),
            "missing key `stack.name` in the table at stack.toml:1:1; it is required",
        ),
        case(
            "a host without an address",
            &["plan"],
            BASE.replace("address = \"{ADDRESS}\"\n", ""),
            "missing key `hosts.app1.address` in the table at stack.toml:4:1; it is required",
        ),
        case(
            "instances without a ZEO server",
            &["up"],
            BASE.replace(", \"zeoserver\"", ""),
            "host `app1` at stack.toml:4:1 has the `plone_instances` layer, which needs a ZEO server, but no host has the `zeoserver` layer",
        ),
        case(
            "instances without an app",
            &["plan"],
            BASE.replace("[apps.site]\nrepository = \"https://example.org/site.git\"\n", ""),
            "the plone_instances layer needs its app: add an [apps.NAME] table",
        ),
        case(
            "celery without a broker",
            &["plan", "--custom-json", "custom.json"],
            base(""),
            "`plone_instances.enable_celery` is true at custom.json:1:39, but there is no Celery broker",
        )
        .json(r#"{"plone_instances": {"enable_celery": true, "celerybeat": true}}"#),
        case(
            "a Solr release without its checksum",
            &["up"],
            base("[attributes.plone_solr]\nversion = \"9.9.0\"\n"),
            "`attributes.plone_solr.version` is set at stack.toml:15:11, but `plone_solr.sha512` is not: the archive is unpacked only when its SHA-512 matches",
        ),
        case(
            "a Solr heap too small and a core for the reindex",
            &["plan", "--custom-json", "custom.json"],
            base(""),
            "`plone_solr.heap_mb` is 64 at custom.json:1:28, but Solr needs at least 128 MiB",
        )
        .json(r#"{"plone_solr": {"heap_mb": 64, "cores": ["plone_rebuild"]}}"#),
        // Things that exist once.
        case(
            "two celerybeat hosts",
            &["up"],
            base(
                "enable_celery = true\ncelerybeat = true\nbroker.host = \"10.0.0.40\"\n\
                 [hosts.app2]\naddress = \"10.0.0.12\"\nlayers = [\"plone_instances\", \"celerybeat\"]\n\
                 [hosts.app3]\naddress = \"10.0.0.13\"\nlayers = [\"plone_instances\", \"celerybeat\"]\n",
            ),
            "unknown layer `celerybeat` in `hosts.app2.layers` at stack.toml:19:30; beat is not a layer here: set `plone_instances.enable_celery` and `plone_instances.celerybeat` to true, and Celery beat runs on exactly one host",
        ),
        case(
            "a site to create with an id Zope refuses",
            &["deploy"],
            base("create_site = true\nsite_id = \"my site\"\n"),
            "`attributes.plone_instances.create_site` is true at stack.toml:14:15, but `attributes.plone_instances.site_id` is \"my site\" at stack.toml:15:11: a Plone site needs an id of letters, digits, `-`, `_` and `.` (such as \"Plone\"); set `site_id`, or turn `create_site` off",
        ),
        case(
            "two db_packing hosts",
            &["plan"],
            base(
                "[hosts.pack1]\naddress = \"10.0.0.31\"\nlayers = [\"db_packing\"]\n\
                 [hosts.pack2]\naddress = \"10.0.0.32\"\nlayers = [\"db_packing\"]\n",
            ),
            "2 hosts have the `db_packing` layer (`pack1` at stack.toml:14:1, `pack2` at stack.toml:17:1), but the database must be packed from exactly one",
        ),
        case(
            "two hosts with one address",
            &["plan"],
            base("[hosts.app2]\naddress = \"{ADDRESS}\"\nport = {PORT}\nlayers = []\n"),
            "hosts `app1` at stack.toml:4:1 and `app2` at stack.toml:14:1 have the same address and SSH port",
        ),
        case(
            "blobs from NFS and GlusterFS at once",
            &["plan", "--custom-json", "custom.json"],
            base(""),
            "`plone_instances.nfs_blobs` at custom.json:1:35 and `plone_instances.gluster_blobs` at custom.json:1:58 are both true, but the blobs can come from only one of NFS and GlusterFS",
        )
        .json(r#"{"plone_instances": {"nfs_blobs": true, "gluster_blobs": true}}"#),
        // Hosts: addresses, ports, layers.
        case(
            "an address with a port",
            &["plan"],
            base("[hosts.web1]\naddress = \"10.0.0.12:2222\"\nlayers = []\n"),
            "`hosts.web1.address` is `10.0.0.12:2222` at stack.toml:15:11, which holds a port: write only the host name or IP address, and the port as `port = 2222`",
        ),
        case(
            "an address that is a URL",
            &["status"],
            base("[hosts.web1]\naddress = \"ssh://web1.example.com\"\nlayers = []\n"),
            "`hosts.web1.address` is `ssh://web1.example.com` at stack.toml:15:11, which is a URL",
        ),
        case(
            "an empty address",
            &["plan"],
            base("[hosts.web1]\naddress = \"\"\nlayers = []\n"),
            "`hosts.web1.address` is `` at stack.toml:15:11, but it must be the host name or IP address SSH connects to",
        ),
        case(
            "a broken IP address",
            &["plan"],
            base("[hosts.web1]\naddress = \"10.0.0.300\"\nlayers = []\n"),
            "`hosts.web1.address` is `10.0.0.300` at stack.toml:15:11, which is not a host name or an IP address",
        ),
        case(
            "a port out of range",
            &["plan"],
            BASE.replace("port = {PORT}", "port = 70000"),
            "invalid value for `hosts.app1.port` at stack.toml:6:8: expected a whole number from 0 to 65535, found the integer 70000",
        ),
        case(
            "port 0",
            &["plan"],
            BASE.replace("port = {PORT}", "port = 0"),
            "the SSH port of host `app1` is 0 at stack.toml:6:8",
        ),
        case(
            "a service host named, not addressed",
            &["plan"],
            base("[hosts.db1]\naddress = \"db1.example.com\"\nlayers = [\"memcached\"]\n"),
            "host `db1` at stack.toml:14:1 has the `memcached` layer, which needs its private address to be an IP address (its services bind to it), but `db1.example.com` is not one: set `private_address` of `[hosts.db1]`",
        ),
        case(
            "a misspelt layer",
            &["plan"],
            BASE.replace("\"zeoserver\"]", "\"zeoservr\"]"),
            "unknown layer `zeoservr` in `hosts.app1.layers` at stack.toml:7:30; did you mean `zeoserver`?",
        ),
        case(
            "a layer that does not exist",
            &["plan"],
            BASE.replace("\"zeoserver\"]", "\"zeoserver\", \"ebs_snapshots\"]"),
            "unknown layer `ebs_snapshots` in `hosts.app1.layers` at stack.toml:7:43; the layers are `lb`, `plone_instances`",
        ),
        // Secrets.
        case(
            "a secrets file that does not exist",
            &["up"],
            BASE.replace("name = \"{NAME}\"\n", "name = \"{NAME}\"\nsecrets = \"secrets.toml\"\n")
                .replace("\"zeoserver\"]", "\"postgres\"]")
                + "enable_relstorage = true\nrelstorage = { enable_cache = false }\n",
            "host `app1` at stack.toml:5:1 has the `postgres` layer, which needs the secret `plone_instances_relstorage_db_password` (the password of the RelStorage database), but there is none: the secrets file ./secrets.toml does not exist",
        ),
        case(
            "a secret missing for a layer that needs it",
            &["setup"],
            BASE.replace("\"zeoserver\"]", "\"zeoserver\", \"lb\"]"),
            "host `app1` at stack.toml:4:1 has the `lb` layer, which needs the secret `haproxy_stats_password` (the password of HAProxy's statistics page), but there is none: name a secrets file in `[stack] secrets`",
        ),
        case(
            "a secrets file others can read",
            &["plan"],
            BASE.replace("name = \"{NAME}\"\n", "name = \"{NAME}\"\nsecrets = \"secrets.toml\"\n"),
            "the secrets file ./secrets.toml can be read or written by other users (mode 0644); run `chmod 600 ./secrets.toml`",
        )
        .secrets("haproxy_stats_password = \"File-Secret-2\"\n", 0o644)
        .hidden(&["File-Secret-2"]),
        case(
            "a secrets file with a syntax error",
            &["plan"],
            BASE.replace("name = \"{NAME}\"\n", "name = \"{NAME}\"\nsecrets = \"secrets.toml\"\n"),
            "invalid TOML at ./secrets.toml:2:",
        )
        .secrets(
            "plone_instances_relstorage_db_password = \"File-Secret-3\"\nhaproxy_stats_password = \"File-Secret-4\n",
            0o600,
        )
        .hidden(&["File-Secret-3", "File-Secret-4"]),
        case(
            "S3 keys for backups that are not made",
            &["plan"],
            base("[attributes.plone_zeoserver.backup_s3]\nbucket = \"zeo-backups\"\n"),
            "`attributes.plone_zeoserver.backup_s3.bucket` is set at stack.toml:15:10, but `plone_zeoserver.enable_backup` is false (the default)",
        )
        .env(&[("PROVISION_SECRET_PLONE_ZEOSERVER_BACKUP_S3_SECRET_KEY", "Env-Secret-S3")])
        .hidden(&["Env-Secret-S3"]),
        // Paths and counts.
        case(
            "a relative deploy_to",
            &["deploy"],
            BASE.replace("site.git\"\n", "site.git\"\ndeploy_to = \"srv/site\"\n"),
            "`apps.site.deploy_to` is `srv/site` at stack.toml:11:13, but it must be an absolute path, such as `/srv/www/site`",
        ),
        case(
            "a relative FileStorage directory",
            &["plan"],
            base("[attributes.plone_zeoserver]\nfilestorage_dir = \"var/filestorage\"\n"),
            "`attributes.plone_zeoserver.filestorage_dir` is `var/filestorage` at stack.toml:15:19, but it must be an absolute path",
        ),
        case(
            "no clients",
            &["plan"],
            BASE.replace("instance_count = 1", "instance_count = 0"),
            "`attributes.plone_instances.instance_count` is 0 at stack.toml:13:18, but every `plone_instances` host needs at least one client",
        ),
        case(
            "more clients than ports",
            &["up"],
            BASE.replace("instance_count = 1", "instance_count = 5000"),
            "`attributes.plone_instances.instance_count` is 5000 at stack.toml:13:18, but one host runs at most 1000 Plone clients",
        ),
        case(
            "no clients per CPU",
            &["plan", "--custom-json", "custom.json"],
            BASE.replace("instance_count = 1\n", ""),
            "`plone_instances.per_cpu` is 0 at custom.json:1:33, but it must be more than 0",
        )
        .json(r#"{"plone_instances": {"per_cpu": 0}}"#),
        // The command line.
        case(
            "an unknown --host",
            &["plan", "--host", "app2"],
            base(""),
            "--host app2: no such host in stack.toml; did you mean `app1`?",
        ),
        case(
            "an unknown --layer",
            &["up", "--layer", "plone_instance"],
            base(""),
            "--layer plone_instance: no such layer (did you mean `plone_instances`?)",
        ),
        case(
            "--parallel 0",
            &["plan", "--parallel", "0"],
            base(""),
            "invalid value '0' for '--parallel <PARALLEL>'",
        ),
        case(
            "deploy without an instance host",
            &["deploy"],
            BASE.replace("[\"plone_instances\", \"zeoserver\"]", "[\"zeoserver\"]"),
            "no selected host has the plone_instances layer in stack.toml",
        ),
        case(
            "deploy of an app the stack does not have",
            &["deploy", "blog"],
            base(""),
            "no app blog to release: the instances of stack.toml run app site (apps in the stack: site)",
        ),
        case(
            "shutdown without a host",
            &["shutdown"],
            base(""),
            "shutdown works on exactly one host, named with --host NAME (given: none)",
        ),
        case(
            "shutdown of two hosts",
            &["shutdown", "--host", "app1", "--host", "db1"],
            base(""),
            "shutdown works on exactly one host, named with --host NAME (given: app1, db1)",
        ),
        case(
            "undeploy of an app the stack does not have",
            &["undeploy", "blog"],
            base(""),
            "no app blog to undeploy: the instances of stack.toml run app site (apps in the stack: site)",
        ),
        case(
            "undeploy --purge-data without --yes",
            &["undeploy", "site", "--purge-data"],
            base(""),
            "--purge-data removes /srv/www/site with the data of app site (shared/var: filestorage, \
             blobs, logs) on app1: run it again with --yes to do it (nothing was changed)",
        ),
        // The app's repository on this machine.
        case(
            "a repository path that does not exist",
            &["deploy"],
            app_at("sites/plone", ""),
            "`apps.site.repository` is `sites/plone`, but ./sites/plone does not exist on this machine",
        ),
        case(
            "a repository path that is not a git repository",
            &["up"],
            app_at("plain", ""),
            "`apps.site.repository` is `plain`, but ./plain is not a git repository",
        )
        .plain_directory("plain"),
        case(
            "a --revision the repository does not have",
            &["deploy", "--revision", "no-such-branch"],
            app_at("site", ""),
            "revision `no-such-branch` (--revision) is not a commit of the git repository ./site",
        )
        .git_repository("site"),
        case(
            "an app revision the repository does not have",
            &["up"],
            app_at("site", "revision = \"v9.9\"\n"),
            "revision `v9.9` (`apps.site.revision`) is not a commit of the git repository ./site",
        )
        .git_repository("site"),
    ]
}

/// Where the cases point: the sandbox host, or a closed port here.
struct Target {
    name: String,
    address: String,
    port: u16,
    sandbox: bool,
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.email=ci@example.org", "-c", "user.name=ci"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

/// Runs one case; what went wrong, if anything.
fn run(case: &Case, target: &Target) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let stack = case
        .stack
        .replace("{NAME}", &target.name)
        .replace("{ADDRESS}", &target.address)
        .replace("{PORT}", &target.port.to_string());
    std::fs::write(dir.path().join("stack.toml"), &stack).unwrap();
    if let Some(json) = case.custom_json {
        std::fs::write(dir.path().join("custom.json"), json).unwrap();
    }
    if let Some((secrets, mode)) = case.secrets {
        let path = dir.path().join("secrets.toml");
        std::fs::write(&path, secrets).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    if let Some(repo) = case.git_repository {
        let repo = dir.path().join(repo);
        std::fs::create_dir(&repo).unwrap();
        std::fs::write(repo.join("buildout.cfg"), "[buildout]\nparts =\n").unwrap();
        git(&repo, &["init", "-q"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "the site"]);
    }
    if let Some(plain) = case.plain_directory {
        std::fs::create_dir(dir.path().join(plain)).unwrap();
        std::fs::write(dir.path().join(plain).join("buildout.cfg"), "[buildout]\n").unwrap();
    }
    let mut args = case.args.to_vec();
    if target.sandbox {
        args.push("--sandbox");
    }
    let mut env = case.env.to_vec();
    env.push(ENV_SECRET);
    let out = provision(dir.path(), &args, &env);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let mut wrong = Vec::new();
    if out.status.code() != Some(2) {
        wrong.push(format!("exit code {:?}, not 2", out.status.code()));
    }
    if !stderr.contains(case.expect) {
        wrong.push(format!("stderr lacks {:?}", case.expect));
    }
    for secret in case.hidden.iter().chain([&ENV_SECRET.1]) {
        if stdout.contains(secret) || stderr.contains(secret) {
            wrong.push(format!("the secret {secret:?} was printed"));
        }
    }
    if stderr.contains("connecting") || !stdout.is_empty() {
        wrong.push("it went on to the hosts".to_string());
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "{} (provision {}): {}\nstderr:\n{stderr}stdout:\n{stdout}",
            case.name,
            args.join(" "),
            wrong.join("; ")
        )
    })
}

/// What a change on the host would show: a listing of where provision writes (with sizes,
/// modes, owners and times), and the count of SSH logins (this one's included: journald is
/// synced first, so its login line is always written by then).
fn host_state(hosts: &fixture::Hosts) -> (String, usize) {
    let out = hosts.ssh(
        &hosts[0],
        "find /etc /srv /opt /root /home /usr/local /var/lib -xdev \
         -printf '%p %s %m %U:%G %T@ %l\\n' | sort; \
         journalctl --sync; journalctl -u ssh -o cat --no-pager | grep -c 'Accepted publickey'",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut listing = text(&out.stdout);
    let logins_line = listing.trim_end().rsplit('\n').next().unwrap().to_string();
    listing.truncate(listing.trim_end().len() - logins_line.len());
    (listing, logins_line.trim().parse().unwrap())
}

#[test]
fn bad_input_is_refused_with_exit_code_2_before_any_host_is_touched() {
    let hosts = fixture::named_blocking(&["app1"]);
    let target = match &hosts {
        Some(hosts) => Target {
            name: hosts.name().to_string(),
            address: hosts[0].address().to_string(),
            port: 22,
            sandbox: true,
        },
        None => Target {
            name: "badinput".to_string(),
            address: "127.0.0.1".to_string(),
            port: std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
            sandbox: false,
        },
    };
    let before = hosts.as_ref().map(host_state);

    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut wrong: Vec<String> = cases.iter().filter_map(|c| run(c, &target)).collect();
    if !wrong.is_empty() {
        wrong.insert(
            0,
            format!("{} of {} cases went wrong:", wrong.len(), cases.len()),
        );
    }
    if let (Some(hosts), Some((listing, logins))) = (&hosts, before) {
        let (after, logins_after) = host_state(hosts);
        let (old, new): (HashSet<&str>, HashSet<&str>) =
            (listing.lines().collect(), after.lines().collect());
        let mut changed: Vec<String> = old.difference(&new).map(|l| format!("-{l}")).collect();
        changed.extend(new.difference(&old).map(|l| format!("+{l}")));
        if !changed.is_empty() {
            wrong.push(format!("the host changed:\n{}", changed.join("\n")));
        }
        // One more login: the one that read the state again.
        if logins_after != logins + 1 {
            wrong.push(format!(
                "provision logged in to the host: {} logins, not {}",
                logins_after,
                logins + 1
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    if let Some(hosts) = hosts {
        hosts.destroy().unwrap();
    }
}
