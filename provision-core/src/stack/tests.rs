//! Tests of the whole stack model: parsing, merging, every error message, discovery, secrets.

use std::path::{Path, PathBuf};

use super::*;

/// A valid minimal stack: one instance host and one ZEO server.
const BASE: &str = r#"[stack]
name = "demo"

[hosts.app1]
address = "10.0.0.11"
layers = ["plone_instances"]

[hosts.db1]
address = "10.0.0.20"
layers = ["zeoserver"]
"#;

fn parse(toml: &str) -> Stack {
    match Stack::parse(toml, "stack.toml", None) {
        Ok(stack) => stack,
        Err(e) => panic!("{e}"),
    }
}

fn parse_with(toml: &str, json: &str) -> Stack {
    match Stack::parse(toml, "stack.toml", Some((json, "custom.json"))) {
        Ok(stack) => stack,
        Err(e) => panic!("{e}"),
    }
}

fn error(toml: &str) -> String {
    Stack::parse(toml, "stack.toml", None)
        .expect_err("the stack should not parse")
        .to_string()
}

fn error_with(toml: &str, json: &str) -> String {
    Stack::parse(toml, "stack.toml", Some((json, "custom.json")))
        .expect_err("the stack should not parse")
        .to_string()
}

/// BASE plus more lines (BASE has 10 lines, so the first added line is line 11).
fn base_and(more: &str) -> String {
    format!("{BASE}{more}")
}

// ---------------------------------------------------------------------------------------------
// Parsing

const FULL: &str = r#"[stack]
name = "full"
secrets = "secrets/prod.toml"

[stack.ssh]
user = "admin"
port = 2222
key = "keys/id_ed25519"
known_hosts = "known_hosts"
agent = false
connect_timeout = 5
command_timeout = 600

[hosts.lb1]
address = "203.0.113.10"
layers = ["lb"]

[hosts.app1]
address = "10.0.0.11"
port = 22
user = "deploy"
key = "/etc/provision/app.key"
layers = ["plone_instances", "db_packing", "plone_instances"]

[hosts.app2]
address = "203.0.113.12"
private_address = "10.0.0.12"
layers = ["plone_instances"]

[hosts.db1]
address = "10.0.0.20"
layers = ["postgres", "memcached", "celery_broker", "solr"]

[apps.plone]
repository = "https://github.com/example/site.git"
revision = "v2.1"
kind = "buildout"

[apps.api]
repository = "https://github.com/example/api.git"
kind = "pip"
deploy_to = "/opt/api"

[attributes]
varnish_purge_urls = ["/news/.*"]
certbot_domains = "www.example.com example.com"
certbot_email = "ops@example.com"

[attributes.plone_solr]
app_name = "plone"

[attributes.plone_instances]
app_name = "plone"
per_cpu = 1.5
enable_relstorage = true
enable_celery = true
celerybeat = true
solr_enabled = true
subsites = { "www.example.org" = "org" }

[attributes.plone_instances.relstorage]
db = { name = "zodb", user = "plone", password = "db-password" }
cache_servers = "db1:11211 db2"
pack_days = 3

[attributes.haproxy]
stats_password = "stats-password"

[attributes.ebs_snapshots]
hour = 3

[attributes.redis.config]
maxmemory = "256mb"
tcp-keepalive = 60

[attributes.deploy.plone]
buildout_extends = ["cfg/sources.cfg", "cfg/prod.cfg"]
buildout_flags = "-N"
always_build_on_deploy = true
environment = { TZ = "UTC" }

[[attributes.deploy.plone.buildout_init_commands]]
name = "worker"
cmd = "bin/worker"
eventlistener_events = "TICK_60"

[[attributes.s3fs_fuse.mounts]]
bucket = "site-blobs"
path = "/mnt/s3/blobs"
url = "http://10.0.0.99:9000"
"#;

#[test]
fn parses_a_full_stack() {
    let stack = Stack::parse(FULL, "/etc/provision/stack.toml", None).unwrap();
    assert_eq!(stack.name, "full");
    assert_eq!(stack.base_dir, Path::new("/etc/provision"));
    assert_eq!(
        stack.secrets_file.as_deref(),
        Some(Path::new("/etc/provision/secrets/prod.toml"))
    );
    assert_eq!(
        stack.ssh,
        SshDefaults {
            user: "admin".into(),
            port: 2222,
            key: Some(PathBuf::from("/etc/provision/keys/id_ed25519")),
            known_hosts: PathBuf::from("/etc/provision/known_hosts"),
            agent: false,
            connect_timeout: 5,
            command_timeout: 600,
        }
    );

    let names: Vec<&str> = stack.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["lb1", "app1", "app2", "db1"]);
    let app1 = stack.host("app1").unwrap();
    assert_eq!((app1.port, app1.user.as_str()), (22, "deploy"));
    assert_eq!(
        app1.key.as_deref(),
        Some(Path::new("/etc/provision/app.key"))
    );
    assert_eq!(
        app1.layers,
        [Layer::PloneInstances, Layer::DbPacking],
        "repeats are dropped"
    );
    assert!(app1.has_layer(Layer::DbPacking) && !app1.has_layer(Layer::Lb));
    let lb1 = stack.host("lb1").unwrap();
    assert_eq!(
        (lb1.port, lb1.user.as_str()),
        (2222, "admin"),
        "[stack.ssh] defaults"
    );
    assert_eq!(lb1.key, stack.ssh.key);
    assert_eq!(stack.host("app2").unwrap().service_address(), "10.0.0.12");
    let instance_hosts: Vec<&str> = stack
        .hosts_with(Layer::PloneInstances)
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(instance_hosts, ["app1", "app2"]);

    assert_eq!(
        stack.apps,
        [
            App {
                name: "plone".into(),
                repository: "https://github.com/example/site.git".into(),
                revision: Some("v2.1".into()),
                kind: AppKind::Buildout,
                deploy_to: PathBuf::from("/srv/www/plone"),
            },
            App {
                name: "api".into(),
                repository: "https://github.com/example/api.git".into(),
                revision: None,
                kind: AppKind::Pip,
                deploy_to: PathBuf::from("/opt/api"),
            },
        ]
    );
    assert_eq!(stack.app_for(Layer::PloneInstances).unwrap().name, "plone");
    assert_eq!(stack.app_for(Layer::Lb), None);

    let a = &stack.attributes;
    assert_eq!(a.varnish_purge_urls, ["/news/.*"]);
    assert_eq!(a.certbot_domains, ["www.example.com", "example.com"]);
    assert_eq!(a.plone_instances.per_cpu, 1.5);
    assert_eq!(a.plone_instances.subsites["www.example.org"], "org");
    assert_eq!(a.plone_instances.site_id, "Plone", "a default");
    let rs = &a.plone_instances.relstorage;
    assert_eq!(rs.db.db_type, DbType::Postgres);
    assert_eq!(rs.db.name.as_deref(), Some("zodb"));
    assert_eq!(
        rs.db.password.as_ref().map(SecretString::expose),
        Some("db-password")
    );
    assert_eq!(
        rs.cache_servers.as_deref(),
        Some(&["db1:11211".to_string(), "db2".to_string()][..])
    );
    assert_eq!((rs.pack_days, rs.pack_gc), (3, true));
    assert_eq!(
        a.ebs_snapshots.hour, "3",
        "a number is accepted for a cron field"
    );
    assert_eq!(a.redis.config["tcp-keepalive"], 60);
    let deploy = stack.deploy_settings("plone");
    assert_eq!(deploy.buildout_extends, ["cfg/sources.cfg", "cfg/prod.cfg"]);
    assert_eq!(deploy.buildout_flags, "-N");
    assert!(deploy.always_build_on_deploy);
    assert_eq!(deploy.keep_releases, 5, "a default");
    assert_eq!(
        deploy.buildout_init_commands[0].eventlistener_events,
        ["TICK_60"]
    );
    assert_eq!(deploy.environment["TZ"], "UTC");
    assert_eq!(stack.deploy_settings("api"), &DeployApp::default());
    assert_eq!(
        a.s3fs_fuse.mounts[0].url.as_deref(),
        Some("http://10.0.0.99:9000")
    );

    // Inline secrets are registered, so that output is masked.
    assert_eq!(
        stack
            .secrets
            .mask("password=db-password auth=stats-password"),
        "password=******** auth=********"
    );
}

#[test]
fn the_example_cluster_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.toml");
    let stack = Stack::load(&path, None).unwrap();
    assert_eq!(stack.name, "cluster");
    let layers: Vec<(&str, Vec<&str>)> = stack
        .hosts
        .iter()
        .map(|h| {
            (
                h.name.as_str(),
                h.layers.iter().map(|l| l.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        layers,
        [
            ("lb1", vec!["lb"]),
            ("app1", vec!["plone_instances"]),
            ("app2", vec!["plone_instances"]),
            ("data1", vec!["zeoserver", "shared_blobs"]),
        ]
    );
    assert_eq!(
        stack.app_for(Layer::Zeoserver).unwrap().deploy_to,
        Path::new("/srv/www/plone")
    );
    assert_eq!(stack.zeo_address().unwrap().to_string(), "10.0.0.20:8001");
    assert_eq!(stack.blob_server().as_deref(), Some("10.0.0.20"));
    let backends = stack.haproxy_backends(&|_| Some(2)).unwrap();
    assert_eq!(backends.len(), 8);
    assert_eq!(
        stack.ssh.known_hosts,
        path.parent().unwrap().join("known_hosts")
    );
}

#[test]
fn defaults_match_the_cookbook() {
    let defaults = serde_json::to_string_pretty(&Attributes::default()).unwrap();
    insta::assert_snapshot!("attribute_defaults", defaults);
}

#[test]
fn a_stack_without_attributes_gets_the_defaults() {
    let stack = parse(BASE);
    assert_eq!(stack.attributes, Attributes::default());
    assert!(stack.ssh.known_hosts.ends_with(".ssh/known_hosts"));
    assert_eq!(
        (stack.ssh.user.as_str(), stack.ssh.port, stack.ssh.agent),
        ("root", 22, true)
    );
    assert_eq!(stack.ssh.command_timeout().as_secs(), 1800);
    assert_eq!(stack.clients_per_host(3), 6);
}

// ---------------------------------------------------------------------------------------------
// Custom JSON

#[test]
fn custom_json_merges_over_the_stack_over_the_defaults() {
    let toml = base_and(
        r#"
[apps.plone]
repository = "https://example.com/site.git"

[attributes]
varnish_purge_urls = ["/a", "/b"]

[attributes.plone_instances]
per_cpu = 3
site_id = "Site"
relstorage = { pack_days = 3, db = { host = "db1", name = "zodb" } }

[attributes.deploy.plone]
buildout_flags = "-N"
"#,
    );
    let json = r#"{
        "plone_instances": {
            "per_cpu": 1,
            "relstorage": {"db": {"name": "other"}},
            "zeo": {"address": "zeo.example.com"}
        },
        "varnish_purge_urls": ["/c"],
        "deploy": {"plone": {"always_build_on_deploy": true, "environment": {"A": "1"}}},
        "haproxy": {"retries": 5}
    }"#;
    let a = parse_with(&toml, json).attributes;
    let pi = &a.plone_instances;
    assert_eq!(pi.per_cpu, 1.0, "the JSON wins");
    assert_eq!(pi.site_id, "Site", "the stack's value stays");
    assert_eq!(pi.relstorage.pack_days, 3, "nested objects merge");
    assert_eq!(
        pi.relstorage.db.host.as_deref(),
        Some("db1"),
        "nested objects merge"
    );
    assert_eq!(pi.relstorage.db.name.as_deref(), Some("other"));
    assert_eq!(pi.zeo.address.as_deref(), Some("zeo.example.com"));
    assert!(pi.relstorage.enable_cache, "defaults fill the rest");
    assert_eq!(a.varnish_purge_urls, ["/c"], "arrays replace");
    let deploy = &a.deploy["plone"];
    assert_eq!(deploy.buildout_flags, "-N");
    assert!(deploy.always_build_on_deploy);
    assert_eq!(deploy.environment["A"], "1");
    assert_eq!(a.haproxy.retries, 5);
    assert_eq!(a.haproxy.balance, "leastconn");
}

#[test]
fn documented_aliases_are_accepted() {
    let toml = base_and(
        r#"
[apps.plone]
repository = "https://example.com/site.git"

[attributes.deploy.plone]
always_buildout_on_deploy = true

[attributes.nginx_plone]
additional_configuration = "gzip on;"
"#,
    );
    let stack = parse(&toml);
    assert!(stack.deploy_settings("plone").always_build_on_deploy);
    assert_eq!(
        stack.attributes.nginx_plone.additional_config.as_deref(),
        Some("gzip on;")
    );

    let json = r#"{"nginx_plone": {"additional_configuration": "ssi on;"},
                   "deploy": {"plone": {"always_buildout_on_deploy": true}}}"#;
    let toml = base_and("[apps.plone]\nrepository = \"r\"\n");
    let stack = parse_with(&toml, json);
    assert!(stack.deploy_settings("plone").always_build_on_deploy);
    assert_eq!(
        stack.attributes.nginx_plone.additional_config.as_deref(),
        Some("ssi on;")
    );
    assert_eq!(
        DbType::Postgres,
        parse(&base_and(
            "[attributes.plone_instances.relstorage.db]\ntype = \"postgresql\"\n"
        ))
        .attributes
        .plone_instances
        .relstorage
        .db
        .db_type
    );
}

// ---------------------------------------------------------------------------------------------
// Syntax, unknown keys, types

#[test]
fn toml_syntax_errors_name_the_place() {
    assert_eq!(
        error("[stack]\nname = \"demo\nx = 1\n"),
        "invalid TOML at stack.toml:2:13: invalid basic string, expected `\"`"
    );
    assert_eq!(
        error("[stack]\nname = \"a\"\nname = \"b\"\n"),
        "invalid TOML at stack.toml:3:1: duplicate key"
    );
    // Found by the fuzz target: toml_edit alone panics on it ("all items have spans").
    assert_eq!(
        error(
            "hosts =  = [\"ploAne_instances\"]\n\n[hosts.db1]\nadin\"'= \
             [\"cfg/sources.ctimeoutfg$]\nalway,_build_bon_instanc"
        ),
        "invalid TOML at stack.toml:1:10: extra `=`, expected nothing"
    );
}

#[test]
fn json_syntax_errors_name_the_place() {
    assert_eq!(
        error_with(BASE, "{\n  \"plone_instances\": {\"per_cpu\": 2,}\n}"),
        "invalid JSON at custom.json:2:36: trailing comma"
    );
    assert_eq!(
        error_with(BASE, "[1, 2]"),
        "the custom JSON custom.json must be an object (`{ \"plone_instances\": { ... } }`), like the Custom JSON of an OpsWorks stack"
    );
}

#[test]
fn unknown_keys_name_the_nearest_valid_key() {
    assert_eq!(
        error(&base_and("[attributes.plone_instances]\nper_cpux = 3\n")),
        "unknown key `attributes.plone_instances.per_cpux` at stack.toml:12:1; did you mean `per_cpu`?"
    );
    assert_eq!(
        error(
            "[stack]\nname = \"demo\"\n\n[hosts.app1]\nadress = \"10.0.0.1\"\nlayers = [\"lb\"]\n"
        ),
        "unknown key `hosts.app1.adress` at stack.toml:5:1; did you mean `address`?"
    );
    assert_eq!(
        error(&base_and("[stack.ssh]\nusr = \"root\"\n")),
        "unknown key `stack.ssh.usr` at stack.toml:12:1; did you mean `user`?"
    );
    assert_eq!(
        error("[stack]\nname = \"demo\"\nssh = { usr = \"root\" }\n"),
        "unknown key `stack.ssh.usr` at stack.toml:3:9; did you mean `user`?"
    );
    assert_eq!(
        error(&base_and("[atributes.haproxy]\nretries = 2\n")),
        "unknown key `atributes` at stack.toml:11:2; did you mean `attributes`?"
    );
    assert_eq!(
        error(&base_and("[attributes.plone_instance]\nper_cpu = 2\n")),
        "unknown key `attributes.plone_instance` at stack.toml:11:13; did you mean `plone_instances`?"
    );
    assert_eq!(
        error(&base_and(
            "[apps.plone]\nrepository = \"r\"\nrevison = \"main\"\n"
        )),
        "unknown key `apps.plone.revison` at stack.toml:13:1; did you mean `revision`?"
    );
}

#[test]
fn unknown_keys_without_a_near_one_list_the_valid_keys() {
    assert_eq!(
        error(&base_and(
            "[attributes.plone_instances.zeo]\nhost = \"zeo1\"\n"
        )),
        "unknown key `attributes.plone_instances.zeo.host` at stack.toml:12:1; the keys allowed here are `address`"
    );
}

#[test]
fn unknown_keys_in_the_custom_json_name_the_json_place() {
    let json = "{\n  \"plone_instances\": {\n    \"celery_enabled\": true\n  }\n}";
    assert_eq!(
        error_with(BASE, json),
        "unknown key `plone_instances.celery_enabled` at custom.json:3:5; did you mean `enable_celery`?"
    );
    let json = "{\"deploy\": {\"plone\": {\"always_build_on_deplo\": true}}}";
    assert_eq!(
        error_with(&base_and("[apps.plone]\nrepository = \"r\"\n"), json),
        "unknown key `deploy.plone.always_build_on_deplo` at custom.json:1:23; did you mean `always_build_on_deploy`?"
    );
}

#[test]
fn unknown_layers_name_the_nearest_layer() {
    assert_eq!(
        error(
            "[stack]\nname = \"demo\"\n[hosts.app1]\naddress = \"10.0.0.1\"\nlayers = [\"lb\", \"zeoservr\"]\n"
        ),
        "unknown layer `zeoservr` in `hosts.app1.layers` at stack.toml:5:17; did you mean `zeoserver`?"
    );
    assert_eq!(
        error(
            "[stack]\nname = \"demo\"\n[hosts.app1]\naddress = \"10.0.0.1\"\nlayers = [\"web\"]\n"
        ),
        "unknown layer `web` in `hosts.app1.layers` at stack.toml:5:11; the layers are `lb`, `plone_instances`, `zeoserver`, `shared_blobs`, `solr`, `celery_broker`, `memcached`, `db_packing`, `postgres`"
    );
    assert_eq!(
        error(&base_and(
            "[attributes.plone_instances]\nzeo_layer = \"zeo\"\n"
        )),
        "unknown layer `zeo` in `attributes.plone_instances.zeo_layer` at stack.toml:12:13; did you mean `zeoserver`?"
    );
}

#[test]
fn an_unknown_app_kind_names_the_valid_kinds() {
    assert_eq!(
        error(&base_and(
            "[apps.plone]\nrepository = \"r\"\nkind = \"buildot\"\n"
        )),
        "unknown value `buildot` for `apps.plone.kind` at stack.toml:13:8; did you mean `buildout`?"
    );
    assert_eq!(
        error(&base_and(
            "[apps.plone]\nrepository = \"r\"\nkind = \"docker\"\n"
        )),
        "unknown value `docker` for `apps.plone.kind` at stack.toml:13:8; use one of `buildout`, `pip`"
    );
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    assert_eq!(
        error(&base_and(
            "[attributes.plone_instances]\nper_cpu = \"two\"\n"
        )),
        "wrong type for `attributes.plone_instances.per_cpu` at stack.toml:12:11: expected a number, found the string \"two\""
    );
    assert_eq!(
        error(&base_and("[attributes.haproxy]\nenable_stats = \"yes\"\n")),
        "wrong type for `attributes.haproxy.enable_stats` at stack.toml:12:16: expected `true` or `false`, found the string \"yes\""
    );
    assert_eq!(
        error(&base_and("[attributes]\nplone_instances = 5\n")),
        "wrong type for `attributes.plone_instances` at stack.toml:12:19: expected a table, found the integer 5"
    );
    assert_eq!(
        error_with(BASE, "{\"plone_instances\": {\"relstorage\": [1]}}"),
        "wrong type for `plone_instances.relstorage` at custom.json:1:36: expected an object, found an array"
    );
    assert_eq!(
        error_with(BASE, "{\"plone_blobs\": {\"servers\": 5}}"),
        "wrong type for `plone_blobs.servers` at custom.json:1:29: expected a string or an array of strings, found the integer 5"
    );
    assert_eq!(
        error("[stack]\nname = \"demo\"\n[hosts.app1]\naddress = 10\nlayers = \"lb\"\n"),
        "wrong type for `hosts.app1.address` at stack.toml:4:11: expected a string, found the integer 10\n\
         wrong type for `hosts.app1.layers` at stack.toml:5:10: expected an array, found the string \"lb\""
    );
}

#[test]
fn out_of_range_values_are_invalid_values() {
    assert_eq!(
        error(&base_and(
            "[attributes.plone_instances]\ninstance_count = -1\n"
        )),
        "invalid value for `attributes.plone_instances.instance_count` at stack.toml:12:18: expected a whole number (0 or more), found the integer -1"
    );
    assert_eq!(
        error(&base_and(
            "[hosts.app2]\naddress = \"a\"\nport = 70000\nlayers = [\"lb\"]\n"
        )),
        "invalid value for `hosts.app2.port` at stack.toml:13:8: expected a whole number from 0 to 65535, found the integer 70000"
    );
}

#[test]
fn missing_required_keys_name_the_table() {
    assert_eq!(
        error("[stack]\nname = \"demo\"\n\n[hosts.app1]\nlayers = [\"lb\"]\n"),
        "missing key `hosts.app1.address` in the table at stack.toml:4:1; it is required"
    );
    assert_eq!(
        error("[hosts.app1]\naddress = \"a\"\nlayers = [\"lb\"]\n"),
        "missing key `stack`; it is required"
    );
    assert_eq!(
        error_with(BASE, "{\"s3fs_fuse\": {\"mounts\": [{\"bucket\": \"b\"}]}}"),
        "missing key `s3fs_fuse.mounts[0].path` in the table at custom.json:1:27; it is required"
    );
}

#[test]
fn the_custom_json_wins_the_location_too() {
    let toml = base_and("[attributes.plone_instances]\nper_cpu = \"x\"\n");
    assert_eq!(
        error_with(&toml, "{\"plone_instances\": {\"per_cpu\": \"y\"}}"),
        "wrong type for `plone_instances.per_cpu` at custom.json:1:33: expected a number, found the string \"y\""
    );
}

#[test]
fn every_unknown_key_and_wrong_type_is_reported_at_once() {
    let toml = r#"[stack]
name = "demo"
nmae = "typo"

[hosts.app1]
address = "10.0.0.11"
layers = ["plone_instances", "zeo", "lb", "memcache"]
prot = 22

[attributes.plone_instances]
per_cpux = 2
restart_delay = "10s"

[attributes.haproxy]
retries = "three"
"#;
    let json = r#"{"plone_zeoserver": {"enable_bakup": true}}"#;
    let err = Stack::parse(toml, "stack.toml", Some((json, "custom.json"))).unwrap_err();
    insta::assert_snapshot!("every_syntax_problem", err.to_string());
    assert_eq!(err.problems().len(), 8);
}

// ---------------------------------------------------------------------------------------------
// Impossible values

#[test]
fn per_cpu_must_be_positive() {
    assert_eq!(
        error(&base_and("[attributes.plone_instances]\nper_cpu = 0\n")),
        "`attributes.plone_instances.per_cpu` is 0 at stack.toml:12:11, but it must be more than 0: set the number of Plone clients per CPU (such as 2), or set `plone_instances.instance_count`"
    );
    assert_eq!(
        error_with(BASE, "{\"plone_instances\": {\"per_cpu\": -0.5}}"),
        "`plone_instances.per_cpu` is -0.5 at custom.json:1:33, but it must be more than 0: set the number of Plone clients per CPU (such as 2), or set `plone_instances.instance_count`"
    );
    assert_eq!(
        error(&base_and("[attributes.plone_instances]\nper_cpu = nan\n")),
        "wrong type for `attributes.plone_instances.per_cpu` at stack.toml:12:11: expected a number, found the string \"NaN\""
    );
}

#[test]
fn instance_count_must_not_be_zero() {
    assert_eq!(
        error(&base_and(
            "[attributes.plone_instances]\ninstance_count = 0\n"
        )),
        "`attributes.plone_instances.instance_count` is 0 at stack.toml:12:18, but every `plone_instances` host needs at least one client: set it to 1 or more, or remove it to count clients with `plone_instances.per_cpu`"
    );
}

const INSTANCES_ONLY: &str = r#"[stack]
name = "demo"

[hosts.app1]
address = "10.0.0.11"
layers = ["plone_instances"]
"#;

#[test]
fn plone_instances_need_a_zeo_server() {
    assert_eq!(
        error(INSTANCES_ONLY),
        "host `app1` at stack.toml:4:1 has the `plone_instances` layer, which needs a ZEO server, but no host has the `zeoserver` layer: add `zeoserver` to the layers of a host, set `plone_instances.zeo.address`, or set `plone_instances.enable_relstorage = true`"
    );
    parse(&format!(
        "{INSTANCES_ONLY}[attributes.plone_instances.zeo]\naddress = \"zeo.example.com:8100\"\n"
    ));
    assert_eq!(
        error(&format!(
            "{INSTANCES_ONLY}[attributes.plone_instances]\nzeo_layer = \"solr\"\n[hosts.z]\naddress = \"10.0.0.30\"\nlayers = [\"zeoserver\"]\n"
        )),
        "host `app1` at stack.toml:4:1 has the `plone_instances` layer, which needs a ZEO server, but no host has the `solr` layer: add `solr` to the layers of a host, set `plone_instances.zeo.address`, or set `plone_instances.enable_relstorage = true`"
    );
}

#[test]
fn relstorage_needs_a_database() {
    let toml = format!(
        "{INSTANCES_ONLY}[attributes.plone_instances]\nenable_relstorage = true\nrelstorage = {{ enable_cache = false }}\n"
    );
    assert_eq!(
        error(&toml),
        "`attributes.plone_instances.enable_relstorage` is true at stack.toml:8:21, but there is no database for RelStorage: no host has the `postgres` layer and neither `plone_instances.relstorage.db.dsn` nor `plone_instances.relstorage.db.host` is set; add `postgres` to the layers of a host, or set one of them"
    );
    parse(&format!(
        "{toml}[hosts.pg]\naddress = \"10.0.0.30\"\nlayers = [\"postgres\"]\n"
    ));
    parse(&toml.replace(
        "enable_cache = false",
        "enable_cache = false, db = { dsn = \"dbname=zodb\" }",
    ));
}

#[test]
fn the_relstorage_cache_needs_memcached() {
    let toml = format!(
        "{INSTANCES_ONLY}[attributes.plone_instances]\nenable_relstorage = true\nrelstorage.db.host = \"db\"\n"
    );
    assert_eq!(
        error(&toml),
        "`plone_instances.relstorage.enable_cache` is true (the default), but there is no memcached server: no host has the `memcached` layer and `plone_instances.relstorage.cache_servers` is not set; add `memcached` to the layers of a host, set `plone_instances.relstorage.cache_servers`, or set `plone_instances.relstorage.enable_cache = false`"
    );
    parse(&format!(
        "{toml}relstorage.cache_servers = [\"mc1:11211\"]\n"
    ));
}

#[test]
fn celery_needs_a_broker() {
    assert_eq!(
        error(&base_and(
            "[attributes.plone_instances]\nenable_celery = true\n"
        )),
        "`attributes.plone_instances.enable_celery` is true at stack.toml:12:17, but there is no Celery broker: no host has the `celery_broker` layer and `plone_instances.broker.host` is not set; add `celery_broker` to the layers of a host, or set `plone_instances.broker.host`"
    );
    parse(&base_and(
        "[attributes.plone_instances]\nenable_celery = true\nbroker.host = \"redis.example.com\"\n",
    ));
}

#[test]
fn solr_needs_a_solr_host() {
    assert_eq!(
        error_with(BASE, "{\"plone_instances\": {\"solr_enabled\": true}}"),
        "`plone_instances.solr_enabled` is true at custom.json:1:38, but there is no Solr server: no host has the `solr` layer and `plone_instances.solr_host` is not set; add `solr` to the layers of a host, or set `plone_instances.solr_host`"
    );
    parse_with(
        BASE,
        "{\"plone_instances\": {\"solr_enabled\": true, \"solr_host\": \"solr1\"}}",
    );
}

#[test]
fn solr_settings_that_cannot_work_are_refused_naming_the_attribute() {
    let cases = [
        (
            "version = \"9 10\"",
            "`attributes.plone_solr.version` is `9 10` at stack.toml:12:11, but it must be a release number of letters, digits, `.`, `_` and `-`, such as `9.10.1`",
        ),
        (
            "version = \"9.9.0\"",
            "`attributes.plone_solr.version` is set at stack.toml:12:11, but `plone_solr.sha512` is not: the archive is unpacked only when its SHA-512 matches; set `plone_solr.sha512` to the 128 hex digits of its `.sha512` file",
        ),
        (
            // Every problem at once.
            "url = \"ftp://mirror.example.org/solr.tgz\"\nsha512 = \"abc\"",
            "`attributes.plone_solr.url` is `ftp://mirror.example.org/solr.tgz` at stack.toml:12:7, but it must be an http:// or https:// URL without quotes, spaces or `$`\n\
             `attributes.plone_solr.sha512` is `abc` at stack.toml:13:10, but it must be the 128 hex digits of the archive's SHA-512 (as in its `.sha512` file)",
        ),
        (
            "url = \"https://mirror.example.org/solr.tgz\"",
            "`attributes.plone_solr.url` is set at stack.toml:12:7, but `plone_solr.sha512` is not: the archive is unpacked only when its SHA-512 matches; set `plone_solr.sha512` to the 128 hex digits of its `.sha512` file",
        ),
        (
            "sha512 = \"abc\"",
            "`attributes.plone_solr.sha512` is `abc` at stack.toml:12:10, but it must be the 128 hex digits of the archive's SHA-512 (as in its `.sha512` file)",
        ),
        (
            "port = 0",
            "`attributes.plone_solr.port` is 0 at stack.toml:12:8, but it must be the port Solr listens on, such as 8983",
        ),
        (
            "cores = []",
            "`attributes.plone_solr.cores` is empty at stack.toml:12:9, but Solr needs a core for collective.solr: name one, such as `[\"plone\"]`",
        ),
        (
            "cores = \"plone plone\"",
            "`attributes.plone_solr.cores` holds `plone` twice at stack.toml:12:9, but each core is one directory and one URL: remove one",
        ),
        (
            "cores = [\"plone\", \"../x\"]",
            "`attributes.plone_solr.cores` holds `../x` at stack.toml:12:9, which is not 1 to 64 letters, digits, `_` or `-` (a core's name goes into URLs and directory names): rename it",
        ),
        (
            "cores = [\"plone_rebuild\"]",
            "`attributes.plone_solr.cores` holds `plone_rebuild` at stack.toml:12:9, which ends with `_rebuild`, the name of the core a reindex builds beside another: rename it",
        ),
        (
            "heap_mb = 64",
            "`attributes.plone_solr.heap_mb` is 64 at stack.toml:12:11, but Solr needs at least 128 MiB: raise it, or remove it to size the heap from the host's memory",
        ),
    ];
    for (lines, expected) in cases {
        assert_eq!(
            error(&base_and(&format!("[attributes.plone_solr]\n{lines}\n"))),
            expected,
            "{lines}"
        );
    }
    // Another release with its own archive and checksum is fine; so is one core as a string.
    let stack = parse(&base_and(&format!(
        "[attributes.plone_solr]\nversion = \"9.9.0\"\nsha512 = \"{}\"\ncores = \"site\"\n",
        "AB".repeat(64)
    )));
    let solr = &stack.attributes().plone_solr;
    assert_eq!(
        solr.archive_url(),
        "https://archive.apache.org/dist/solr/solr/9.9.0/solr-9.9.0.tgz"
    );
    assert_eq!(solr.archive_sha512(), Some("ab".repeat(64)));
    assert_eq!(solr.client_core(), "site");
}

#[test]
fn firewall_settings_that_cannot_work_are_refused_naming_the_attribute() {
    let cases = [
        (
            "ssh_from = [\"10.0.0.0/8\", \"office\"]",
            "`attributes.firewall.ssh_from` holds `office` at stack.toml:12:12, which is not an IP address or network: write it like `203.0.113.7` or `203.0.113.0/24`",
        ),
        (
            "trusted = \"10.0.0.0/33\"",
            "`attributes.firewall.trusted` holds `10.0.0.0/33` at stack.toml:12:11, whose prefix length is not a number from 0 to 32",
        ),
        (
            // Nobody could reach SSH from outside the stack, not even provision.
            "enable = true\nssh_from = []",
            "`attributes.firewall.enable` is true at stack.toml:12:10, but `attributes.firewall.ssh_from` is empty at stack.toml:13:12: only the stack's own hosts could log in over SSH, not provision from here; list the addresses or networks you connect from, or remove it (the default is anywhere)",
        ),
        (
            "extra_tcp_ports = [8443, 0]",
            "`attributes.firewall.extra_tcp_ports` holds 0 at stack.toml:12:19, which is not a port: list ports from 1 to 65535",
        ),
    ];
    for (lines, expected) in cases {
        assert_eq!(
            error(&base_and(&format!("[attributes.firewall]\n{lines}\n"))),
            expected,
            "{lines}"
        );
    }
    // With the firewall on, every host is let in by its address, which must be an IP.
    let named = BASE.replace(
        "address = \"10.0.0.11\"\nlayers = [\"plone_instances\"]",
        "address = \"app1.example.org\"\nlayers = []",
    );
    parse(&named);
    assert_eq!(
        error(&format!("{named}[attributes.firewall]\nenable = true\n")),
        "`attributes.firewall.enable` is true at stack.toml:12:10, and the firewall lets the stack's hosts in by address, but host `app1` at stack.toml:4:1 has `app1.example.org`, which is not an IP address: set `private_address` of `[hosts.app1]` to the host's private IP"
    );
    // Off (the default), nothing else is asked; on, the defaults work.
    let on = parse(&base_and("[attributes.firewall]\nenable = true\n"));
    assert_eq!(on.attributes().firewall.ssh_from, ["0.0.0.0/0", "::/0"]);
}

#[test]
fn shared_blob_mounts_need_a_blob_server() {
    assert_eq!(
        error(&base_and(
            "[attributes.plone_instances]\nnfs_blobs = true\n"
        )),
        "`attributes.plone_instances.nfs_blobs` is true at stack.toml:12:13, but there is no blob server: no host has the `shared_blobs` layer and `plone_blobs.host` is not set; add `shared_blobs` to the layers of a host, or set `plone_blobs.host`"
    );
    assert_eq!(
        error(&base_and(
            "[attributes.plone_zeoserver]\ngluster_blobs = true\n"
        )),
        "`attributes.plone_zeoserver.gluster_blobs` is true at stack.toml:12:17, but there is no GlusterFS server: no host has the `shared_blobs` layer and neither `plone_blobs.host` nor `plone_blobs.servers` is set; add `shared_blobs` to the layers of a host, or set `plone_blobs.servers`"
    );
    assert_eq!(
        error(&base_and(
            "[attributes.plone_instances]\nnfs_blobs = true\ngluster_blobs = true\n"
        )),
        "`attributes.plone_instances.nfs_blobs` at stack.toml:12:13 and `attributes.plone_instances.gluster_blobs` at stack.toml:13:17 are both true, but the blobs can come from only one of NFS and GlusterFS: set one of them to false"
    );
    parse(&base_and(
        "[attributes.plone_instances]\ngluster_blobs = true\n[attributes.plone_blobs]\nservers = [\"g1\", \"g2\"]\n",
    ));
}

#[test]
fn only_one_host_may_pack() {
    let toml = base_and(
        "[hosts.p1]\naddress = \"10.0.0.31\"\nlayers = [\"db_packing\"]\n\n[hosts.p2]\naddress = \"10.0.0.32\"\nlayers = [\"db_packing\"]\n",
    );
    assert_eq!(
        error(&toml),
        "2 hosts have the `db_packing` layer (`p1` at stack.toml:11:1, `p2` at stack.toml:15:1), but the database must be packed from exactly one: remove `db_packing` from all but one of them"
    );
}

#[test]
fn two_hosts_may_not_share_an_address_and_port() {
    let toml = base_and("[hosts.app2]\naddress = \"10.0.0.11\"\nlayers = [\"lb\"]\n");
    assert_eq!(
        error(&toml),
        "hosts `app1` at stack.toml:4:1 and `app2` at stack.toml:11:1 have the same address and SSH port (10.0.0.11:22): give each host its own address or port, or make them one host with the layers of both"
    );
    parse(&base_and(
        "[hosts.app2]\naddress = \"10.0.0.11\"\nport = 2222\nlayers = [\"lb\"]\n",
    ));
}

#[test]
fn a_host_without_layers_gets_the_base_system_and_a_stack_needs_hosts() {
    // `layers = []` is a host managed for its base system only (time zone, upgrades).
    let stack = Stack::parse(
        &base_and("[hosts.spare]\naddress = \"10.0.0.99\"\nlayers = []\n"),
        "stack.toml",
        None,
    )
    .unwrap();
    assert!(stack.host("spare").unwrap().layers.is_empty());
    assert_eq!(
        error("[stack]\nname = \"empty\"\n"),
        "the stack has no hosts: add a `[hosts.NAME]` table with an `address` and `layers`"
    );
    assert_eq!(
        error(
            "[stack]\nname = \"x\"\nssh = { port = 0 }\n[hosts.a]\naddress = \"a\"\nlayers = [\"lb\"]\n"
        ),
        "the SSH port of host `a` is 0 at stack.toml:3:16: set it to the port its sshd listens on, such as 22"
    );
}

#[test]
fn names_must_be_usable_in_paths_and_haproxy() {
    assert_eq!(
        error(&base_and(
            "[hosts.\"app 3\"]\naddress = \"10.0.0.13\"\nlayers = [\"lb\"]\n"
        )),
        "the host name `app 3` at stack.toml:11:8 may hold only letters, digits, `-`, `_` and `.`, and must start with a letter or a digit: rename it"
    );
    assert_eq!(
        error(&base_and("[apps.\"../etc\"]\nrepository = \"r\"\n")),
        "the app name `../etc` at stack.toml:11:7 may hold only letters, digits, `-`, `_` and `.`, and must start with a letter or a digit: rename it"
    );
}

#[test]
fn apps_are_checked() {
    assert_eq!(
        error(&base_and(
            "[apps.plone]\nrepository = \"r\"\ndeploy_to = \"srv/plone\"\n"
        )),
        "`apps.plone.deploy_to` is `srv/plone` at stack.toml:13:13, but it must be an absolute path, such as `/srv/www/plone`"
    );
    assert_eq!(
        error(&base_and(
            "[apps.plone]\nrepository = \"r\"\n[attributes.deploy.plon]\nkeep_releases = 3\n"
        )),
        "`attributes.deploy.plon` at stack.toml:13:20 names no app of the stack; did you mean `plone`?"
    );
    assert_eq!(
        error_with(BASE, "{\"deploy\": {\"plone_instances\": {}}}"),
        "`deploy.plone_instances` at custom.json:1:13 names no app of the stack; add an `[apps.plone_instances]` table"
    );
    assert_eq!(
        error(&base_and(
            "[apps.site]\nrepository = \"r\"\n[apps.search]\nrepository = \"s\"\n"
        )),
        "the `plone_instances` layer deploys the app named by `plone_instances.app_name`, `plone_instances`, but the stack has no such app: set `plone_instances.app_name` to one of `site`, `search`\n\
         the `zeoserver` layer deploys the app named by `plone_zeoserver.app_name`, `zeoserver`, but the stack has no such app: set `plone_zeoserver.app_name` to one of `site`, `search`"
    );
}

#[test]
fn host_addresses_are_host_names_or_ip_addresses() {
    let with_address = |address: &str| {
        error(&base_and(&format!(
            "[hosts.web1]\naddress = \"{address}\"\nlayers = [\"lb\"]\n"
        )))
    };
    assert_eq!(
        with_address("10.0.0.12:2222"),
        "`hosts.web1.address` is `10.0.0.12:2222` at stack.toml:12:11, which holds a port: write only the host name or IP address, and the port as `port = 2222`"
    );
    assert_eq!(
        with_address("ssh://web1.example.com"),
        "`hosts.web1.address` is `ssh://web1.example.com` at stack.toml:12:11, which is a URL: write only the host name or IP address, such as `10.0.0.11`"
    );
    assert_eq!(
        with_address("admin@10.0.0.12"),
        "`hosts.web1.address` is `admin@10.0.0.12` at stack.toml:12:11, which holds a user: write only the host name or IP address, and the user as `user = \"admin\"`"
    );
    assert_eq!(
        with_address(""),
        "`hosts.web1.address` is `` at stack.toml:12:11, but it must be the host name or IP address SSH connects to"
    );
    assert_eq!(
        with_address("10.0.0.256"),
        "`hosts.web1.address` is `10.0.0.256` at stack.toml:12:11, which is not a host name or an IP address: write it like `app1.example.com` or `10.0.0.11`"
    );
    assert_eq!(
        with_address(" web1"),
        "`hosts.web1.address` is ` web1` at stack.toml:12:11, which has spaces around it: remove them"
    );
    assert_eq!(
        error(&base_and(
            "[hosts.web1]\naddress = \"10.0.0.12\"\nprivate_address = \"web 1\"\nlayers = [\"lb\"]\n"
        )),
        "`hosts.web1.private_address` is `web 1` at stack.toml:13:19, which is not a host name or an IP address: write it like `app1.example.com` or `10.0.0.11`"
    );
    for good in ["web1.example.com", "web-1", "fd00::12", "10.0.0.12"] {
        let stack = parse(&base_and(&format!(
            "[hosts.web1]\naddress = \"{good}\"\nlayers = [\"lb\"]\n"
        )));
        assert_eq!(stack.host("web1").unwrap().address, good);
    }
}

#[test]
fn services_bind_to_an_ip_address() {
    let toml = "[stack]\nname = \"demo\"\n[hosts.app1]\naddress = \"10.0.0.11\"\nlayers = [\"plone_instances\"]\n\
                [hosts.db1]\naddress = \"db1.example.com\"\nlayers = [\"zeoserver\"]\n";
    assert_eq!(
        error(toml),
        "host `db1` at stack.toml:6:1 has the `zeoserver` layer, which needs its private address to be an IP address (its services bind to it), but `db1.example.com` is not one: set `private_address` of `[hosts.db1]` to the host's private IP"
    );
    parse(&toml.replace(
        "layers = [\"zeoserver\"]",
        "private_address = \"10.1.0.20\"\nlayers = [\"zeoserver\"]",
    ));
    let relstorage = "[stack]\nname = \"demo\"\n[hosts.app1]\naddress = \"app1.example.com\"\nlayers = [\"plone_instances\"]\n\
                      [hosts.pg]\naddress = \"10.0.0.30\"\nlayers = [\"postgres\"]\n\
                      [attributes.plone_instances]\nenable_relstorage = true\nrelstorage = { enable_cache = false }\n";
    assert_eq!(
        error(relstorage),
        "host `app1` at stack.toml:3:1 has the `plone_instances` layer, which needs its private address to be an IP address (PostgreSQL lets its clients in by address), but `app1.example.com` is not one: set `private_address` of `[hosts.app1]` to the host's private IP"
    );
}

#[test]
fn a_host_runs_at_most_a_thousand_clients() {
    assert_eq!(
        error(&base_and(
            "[attributes.plone_instances]\ninstance_count = 5000\n"
        )),
        "`attributes.plone_instances.instance_count` is 5000 at stack.toml:12:18, but one host runs at most 1000 Plone clients (on ports 8081 to 9080): set it to 1000 or fewer, and add hosts for more"
    );
    assert_eq!(
        error_with(BASE, "{\"plone_instances\": {\"per_cpu\": 2000}}"),
        "`plone_instances.per_cpu` is 2000 at custom.json:1:33, so even a host with one CPU would run more than 1000 Plone clients, the most one host runs: set it to the clients per CPU (such as 2)"
    );
    parse(&base_and(
        "[attributes.plone_instances]\ninstance_count = 1000\n",
    ));
}

#[test]
fn paths_on_the_hosts_are_absolute() {
    assert_eq!(
        error(&base_and(
            "[attributes.plone_zeoserver]\nfilestorage_dir = \"var/filestorage\"\n"
        )),
        "`attributes.plone_zeoserver.filestorage_dir` is `var/filestorage` at stack.toml:12:19, but it must be an absolute path, such as `/var/lib/zeo/filestorage`"
    );
    assert_eq!(
        error_with(
            BASE,
            r#"{"s3fs_fuse": {"mounts": [{"bucket": "b", "path": "mnt/s3"}]}}"#
        ),
        "`s3fs_fuse.mounts[0].path` is `mnt/s3` at custom.json:1:51, but it must be an absolute path, such as `/mnt/s3/blobs`"
    );
    parse(&base_and(
        "[attributes.plone_blobs]\nblob_dir = \"/srv/blobs\"\n",
    ));
}

#[test]
fn s3_copies_of_backups_need_backups() {
    assert_eq!(
        error(&base_and(
            "[attributes.plone_zeoserver.backup_s3]\nbucket = \"zeo-backups\"\n"
        )),
        "`attributes.plone_zeoserver.backup_s3.bucket` is set at stack.toml:12:10, but `plone_zeoserver.enable_backup` is false (the default): there would be no backups to copy; set `plone_zeoserver.enable_backup = true`, or remove the bucket"
    );
}

#[test]
fn celerybeat_is_a_setting_not_a_layer() {
    assert_eq!(
        error(&base_and(
            "[hosts.app2]\naddress = \"10.0.0.12\"\nlayers = [\"plone_instances\", \"celerybeat\"]\n"
        )),
        "unknown layer `celerybeat` in `hosts.app2.layers` at stack.toml:13:30; beat is not a layer here: set `plone_instances.enable_celery` and `plone_instances.celerybeat` to true, and Celery beat runs on exactly one host, the first `plone_instances` host"
    );
}

#[test]
fn a_secret_of_the_wrong_type_is_not_shown() {
    assert_eq!(
        error(&base_and(
            "[attributes.haproxy]\nstats_password = 12345678\n"
        )),
        "wrong type for `attributes.haproxy.stats_password` at stack.toml:12:18: expected a string, found an integer"
    );
    assert_eq!(
        error_with(
            BASE,
            r#"{"plone_instances": {"relstorage": {"db": {"password": true}}}}"#
        ),
        "wrong type for `plone_instances.relstorage.db.password` at custom.json:1:56: expected a string, found a boolean"
    );
    // Values of other keys are still shown: they help and hide nothing.
    assert!(
        error(&base_and("[attributes.haproxy]\nretries = \"three\"\n"))
            .ends_with("found the string \"three\"")
    );
}

#[test]
fn a_fixed_zeo_address_must_parse() {
    assert_eq!(
        error(&base_and(
            "[attributes.plone_instances]\nzeo = { address = \"zeo1:eight\" }\n"
        )),
        "`attributes.plone_instances.zeo.address` is `zeo1:eight` at stack.toml:12:19, which is not `host` or `host:port`: write it like `zeo1.example.com:8001`"
    );
}

#[test]
fn cache_servers_must_parse() {
    assert_eq!(
        error_with(
            BASE,
            r#"{"plone_instances": {"relstorage": {"cache_servers": "mc1 mc2:x"}}}"#
        ),
        "`plone_instances.relstorage.cache_servers` holds `mc2:x` at custom.json:1:54, which is not `host` or `host:port`: write it like `mc1.example.com:11211`"
    );
}

#[test]
fn every_impossible_value_is_reported_at_once() {
    let toml = r#"[stack]
name = "demo"

[hosts.app1]
address = "10.0.0.11"
layers = ["plone_instances", "db_packing"]

[hosts.app2]
address = "10.0.0.11"
layers = ["plone_instances", "db_packing"]

[attributes.plone_instances]
per_cpu = 0
enable_celery = true
solr_enabled = true
"#;
    let err = Stack::parse(toml, "stack.toml", None).unwrap_err();
    insta::assert_snapshot!("every_impossible_value", err.to_string());
    assert_eq!(err.problems().len(), 6);
}

// ---------------------------------------------------------------------------------------------
// Discovery

const DISCOVERY: &str = r#"[stack]
name = "discovery"

[hosts.lb1]
address = "10.0.0.10"
layers = ["lb"]

[hosts.app1]
address = "10.0.0.11"
layers = ["plone_instances"]

[hosts.app2]
address = "203.0.113.12"
private_address = "10.0.0.12"
layers = ["plone_instances", "memcached"]

[hosts.data1]
address = "10.0.0.20"
layers = ["zeoserver", "shared_blobs", "celery_broker", "solr", "memcached"]

[hosts.data2]
address = "10.0.0.21"
layers = ["shared_blobs", "solr"]

[attributes.plone_instances]
enable_celery = true
celerybeat = true
solr_enabled = true
zserver_threads = 4
"#;

#[test]
fn discovery_takes_the_first_host_of_each_layer() {
    let stack = parse(DISCOVERY);
    assert_eq!(stack.zeo_address(), Some(Endpoint::new("10.0.0.20", 8001)));
    assert_eq!(stack.broker(), Some(Endpoint::new("10.0.0.20", 6379)));
    assert_eq!(stack.solr_host().as_deref(), Some("10.0.0.20"));
    assert_eq!(stack.blob_server().as_deref(), Some("10.0.0.20"));
    assert_eq!(stack.gluster_peers(), ["10.0.0.20", "10.0.0.21"]);
    let memcached: Vec<String> = stack
        .memcached_servers()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(memcached, ["10.0.0.12:11211", "10.0.0.20:11211"]);
    assert_eq!(stack.beat_host().map(|h| h.name.as_str()), Some("app1"));
    assert_eq!(stack.pack_host(), None, "ZEO packs on the ZEO server");
}

#[test]
fn fixed_addresses_win_over_layers() {
    let json = r#"{"plone_instances": {
        "zeo": {"address": "zeo.example.com:8100"},
        "broker": {"host": "redis.example.com", "port": 6380},
        "solr_host": "solr.example.com",
        "relstorage": {"cache_servers": "mc1 mc2:11212"}
    },
    "plone_blobs": {"servers": ["g1", "g2", "g3"]}}"#;
    let stack = parse_with(DISCOVERY, json);
    assert_eq!(
        stack.zeo_address(),
        Some(Endpoint::new("zeo.example.com", 8100))
    );
    assert_eq!(
        stack.broker(),
        Some(Endpoint::new("redis.example.com", 6380))
    );
    assert_eq!(stack.solr_host().as_deref(), Some("solr.example.com"));
    assert_eq!(stack.blob_server().as_deref(), Some("g1"));
    assert_eq!(stack.gluster_peers(), ["g1", "g2", "g3"]);
    let memcached: Vec<String> = stack
        .memcached_servers()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(memcached, ["mc1:11211", "mc2:11212"]);
    let stack = parse_with(DISCOVERY, r#"{"plone_blobs": {"host": "nfs.example.com"}}"#);
    assert_eq!(stack.blob_server().as_deref(), Some("nfs.example.com"));
}

#[test]
fn relstorage_discovery() {
    let toml = format!(
        "{INSTANCES_ONLY}[hosts.pg]\naddress = \"10.0.0.30\"\nlayers = [\"postgres\", \"memcached\"]\n\
         [hosts.packer]\naddress = \"10.0.0.31\"\nlayers = [\"db_packing\"]\n\
         [attributes.plone_instances]\nenable_relstorage = true\n"
    );
    let stack = parse(&toml);
    assert_eq!(stack.zeo_address(), None);
    assert_eq!(stack.relstorage_db_host().as_deref(), Some("10.0.0.30"));
    assert_eq!(stack.pack_host().map(|h| h.name.as_str()), Some("packer"));
    let stack = parse(&toml.replace("[hosts.packer]\naddress = \"10.0.0.31\"\nlayers = [\"db_packing\"]\n", "")
        .replace("enable_relstorage = true\n", "enable_relstorage = true\nrelstorage = { enable_pack = true, db = { host = \"db.example.com\" } }\n"));
    assert_eq!(
        stack.relstorage_db_host().as_deref(),
        Some("db.example.com")
    );
    assert_eq!(stack.pack_host().map(|h| h.name.as_str()), Some("app1"));
}

#[test]
fn haproxy_lists_every_client_of_every_instance_host() {
    let stack = parse(DISCOVERY);
    let cpus = |host: &str| match host {
        "app1" => Some(1),
        "app2" => Some(2),
        _ => None,
    };
    let backends = stack.haproxy_backends(&cpus).unwrap();
    let shown: Vec<String> = backends
        .iter()
        .map(|b| {
            format!(
                "{} {}:{} {} maxconn {}",
                b.name, b.address, b.port, b.client, b.maxconn
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            "app1-1 10.0.0.11:8081 client1 maxconn 4",
            "app1-2 10.0.0.11:8082 client2 maxconn 4",
            "app2-1 10.0.0.12:8081 client1 maxconn 4",
            "app2-2 10.0.0.12:8082 client2 maxconn 4",
            "app2-3 10.0.0.12:8083 client3 maxconn 4",
            "app2-4 10.0.0.12:8084 client4 maxconn 4",
        ]
    );
    let err = stack
        .haproxy_backends(&|h| (h == "app1").then_some(1))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot list the Plone clients of host `app2`: its CPU count is unknown (gather its facts first, or set `plone_instances.instance_count`)"
    );
    let fixed = parse_with(DISCOVERY, r#"{"plone_instances": {"instance_count": 1}}"#);
    assert_eq!(fixed.haproxy_backends(&|_| None).unwrap().len(), 2);
    // A host taken out (`provision watch`) is left out, and its CPU count is not needed.
    let away = std::collections::BTreeSet::from(["app2".to_string()]);
    let left: Vec<String> = stack
        .haproxy_backends_except(&|h| (h == "app1").then_some(1), &away)
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(left, ["app1-1", "app1-2"]);
}

// ---------------------------------------------------------------------------------------------
// Secrets

#[test]
fn secrets_fill_secret_attributes_and_are_masked() {
    let mut stack = parse(&base_and(
        "[attributes.haproxy]\nstats_password = \"inline-pw\"\n",
    ));
    let mut secrets = Secrets::new().with_vars([(
        "PROVISION_SECRET_HAPROXY_STATS_PASSWORD".to_string(),
        "env-password".to_string(),
    )]);
    secrets.insert("s3fs_fuse_s3_secret", "s3-secret-key");
    stack.set_secrets(secrets);
    let a = &stack.attributes;
    assert_eq!(
        a.haproxy.stats_password.as_ref().unwrap().expose(),
        "env-password"
    );
    assert_eq!(
        a.s3fs_fuse.s3_secret.as_ref().unwrap().expose(),
        "s3-secret-key"
    );
    assert_eq!(
        stack.secrets.mask("auth stats:env-password"),
        "auth stats:********"
    );
    assert!(
        !format!("{stack:?}").contains("env-password"),
        "Debug must not show secrets"
    );
    let stack = parse(&base_and(
        "[attributes.redis.config]\nrequirepass = \"redis-pw\"\nport = 6379\n",
    ));
    let shown = format!("{:?}", stack.attributes.redis);
    assert_eq!(
        shown,
        r#"Redis { config: {"port": Number(6379), "requirepass": "********"} }"#
    );
    assert_eq!(stack.secrets.mask("AUTH redis-pw"), "AUTH ********");
}

#[test]
fn check_secrets_names_each_missing_secret_and_where_it_goes() {
    let toml = "[stack]\nname = \"demo\"\n\
                [hosts.lb1]\naddress = \"10.0.0.10\"\nlayers = [\"lb\"]\n\
                [hosts.app1]\naddress = \"10.0.0.11\"\nlayers = [\"plone_instances\"]\n\
                [hosts.db1]\naddress = \"10.0.0.20\"\nlayers = [\"postgres\", \"zeoserver\", \"celery_broker\"]\n\
                [apps.site]\nrepository = \"r\"\n\
                [attributes.plone_instances]\nenable_relstorage = true\nrelstorage = { enable_cache = false }\n\
                [attributes.plone_zeoserver]\nenable_backup = true\nbackup_s3 = { bucket = \"b\" }\n\
                [attributes.deploy.site]\nssl_support = true\n";
    let stack = parse(toml);
    let err = stack.check_secrets(stack.hosts()).unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "host `lb1` at stack.toml:3:1 has the `lb` layer, which needs the secret `haproxy_stats_password` (the password of HAProxy's statistics page), but there is none: name a secrets file in `[stack] secrets` and put `haproxy_stats_password = \"...\"` in it, or set PROVISION_SECRET_HAPROXY_STATS_PASSWORD, or turn the page off with `haproxy.enable_stats = false`",
            "host `lb1` at stack.toml:3:1 has the `lb` layer, which needs the secret `deploy_site_ssl_certificate_key` (the private key of the site's TLS certificate), but there is none: name a secrets file in `[stack] secrets` and put `deploy_site_ssl_certificate_key = \"...\"` in it, or set PROVISION_SECRET_DEPLOY_SITE_SSL_CERTIFICATE_KEY, or set `deploy.site.ssl_support = false`",
            "host `db1` at stack.toml:9:1 has the `postgres` layer, which needs the secret `plone_instances_relstorage_db_password` (the password of the RelStorage database), but there is none: name a secrets file in `[stack] secrets` and put `plone_instances_relstorage_db_password = \"...\"` in it, or set PROVISION_SECRET_PLONE_INSTANCES_RELSTORAGE_DB_PASSWORD",
            "host `db1` at stack.toml:9:1 has the `zeoserver` layer, which needs the secret `plone_zeoserver_backup_s3_access_key` (a key of the S3 bucket the backups are copied to), but there is none: name a secrets file in `[stack] secrets` and put `plone_zeoserver_backup_s3_access_key = \"...\"` in it, or set PROVISION_SECRET_PLONE_ZEOSERVER_BACKUP_S3_ACCESS_KEY, or remove `plone_zeoserver.backup_s3.bucket`",
            "host `db1` at stack.toml:9:1 has the `zeoserver` layer, which needs the secret `plone_zeoserver_backup_s3_secret_key` (a key of the S3 bucket the backups are copied to), but there is none: name a secrets file in `[stack] secrets` and put `plone_zeoserver_backup_s3_secret_key = \"...\"` in it, or set PROVISION_SECRET_PLONE_ZEOSERVER_BACKUP_S3_SECRET_KEY, or remove `plone_zeoserver.backup_s3.bucket`",
            "host `db1` at stack.toml:9:1 has the `celery_broker` layer, which needs the secret `redis_config_requirepass` (the password of the Redis broker), but there is none: name a secrets file in `[stack] secrets` and put `redis_config_requirepass = \"...\"` in it, or set PROVISION_SECRET_REDIS_CONFIG_REQUIREPASS",
        ]
    );
    // Only the hosts asked about.
    stack
        .check_secrets(stack.hosts().iter().filter(|h| h.name == "app1"))
        .unwrap();

    let mut stack = stack;
    let secrets = Secrets::new().with_vars(
        [
            "HAPROXY_STATS_PASSWORD",
            "DEPLOY_SITE_SSL_CERTIFICATE_KEY",
            "PLONE_INSTANCES_RELSTORAGE_DB_PASSWORD",
            "PLONE_ZEOSERVER_BACKUP_S3_ACCESS_KEY",
            "PLONE_ZEOSERVER_BACKUP_S3_SECRET_KEY",
            "REDIS_CONFIG_REQUIREPASS",
        ]
        .map(|name| {
            (
                format!("{SECRET_ENV_PREFIX}{name}"),
                "s3cret-value".to_string(),
            )
        }),
    );
    stack.set_secrets(secrets);
    stack.check_secrets(stack.hosts()).unwrap();
}

#[test]
fn check_secrets_says_when_the_secrets_file_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    std::fs::write(
        &path,
        "[stack]\nname = \"demo\"\nsecrets = \"secrets.toml\"\n\
         [hosts.db1]\naddress = \"10.0.0.20\"\nlayers = [\"postgres\"]\n",
    )
    .unwrap();
    let stack = Stack::load(&path, None).unwrap();
    let err = stack.check_secrets(stack.hosts()).unwrap_err().to_string();
    let dir_shown = dir.path().display().to_string();
    assert_eq!(
        err.replace(&dir_shown, "DIR"),
        "host `db1` at DIR/stack.toml:4:1 has the `postgres` layer, which needs the secret `plone_instances_relstorage_db_password` (the password of the RelStorage database), but there is none: the secrets file DIR/secrets.toml does not exist: create it (mode 0600) with `plone_instances_relstorage_db_password = \"...\"`, or set PROVISION_SECRET_PLONE_INSTANCES_RELSTORAGE_DB_PASSWORD"
    );
}

#[cfg(unix)]
#[test]
fn load_reads_the_secrets_file_next_to_the_stack() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let stack_path = dir.path().join("stack.toml");
    std::fs::write(
        &stack_path,
        BASE.replace(
            "name = \"demo\"",
            "name = \"demo\"\nsecrets = \"secrets.toml\"",
        ),
    )
    .unwrap();
    let secrets_path = dir.path().join("secrets.toml");
    std::fs::write(
        &secrets_path,
        "haproxy_stats_password = \"from-the-file\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&secrets_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let json_path = dir.path().join("custom.json");
    std::fs::write(&json_path, r#"{"plone_instances": {"per_cpu": 1}}"#).unwrap();

    let stack = Stack::load(&stack_path, Some(&json_path)).unwrap();
    assert_eq!(stack.attributes.plone_instances.per_cpu, 1.0);
    assert_eq!(
        stack
            .attributes
            .haproxy
            .stats_password
            .as_ref()
            .unwrap()
            .expose(),
        "from-the-file"
    );
    assert_eq!(
        stack
            .attribute_location("plone_instances.per_cpu")
            .unwrap()
            .line,
        1
    );

    // A secrets file that does not exist yet holds no secrets (provision may create it).
    std::fs::remove_file(&secrets_path).unwrap();
    let stack = Stack::load(&stack_path, None).unwrap();
    assert!(stack.attributes().haproxy.stats_password.is_none());
    // One that cannot be read is an error naming it.
    std::fs::create_dir(&secrets_path).unwrap();
    std::fs::set_permissions(&secrets_path, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = Stack::load(&stack_path, None).unwrap_err().to_string();
    let dir_shown = dir.path().display().to_string();
    assert_eq!(
        err.replace(&dir_shown, "DIR"),
        "cannot read the secrets file DIR/secrets.toml (named at DIR/stack.toml:3:11): Is a directory (os error 21)"
    );
    let err = Stack::load(&dir.path().join("nope.toml"), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err.replace(&dir_shown, "DIR"),
        "cannot read the stack file DIR/nope.toml: No such file or directory (os error 2)"
    );
}

#[test]
fn download_urls_name_what_the_hosts_fetch_besides_the_package_registries() {
    let without_solr = parse(&format!(
        "{BASE}[apps.site]\nrepository = \"https://git.example.org/site.git\"\n\
         [attributes.plone_solr]\nurl = \"https://unused.example.org/solr.tgz\"\nsha512 = \"{}\"\n\
         [[attributes.deploy.site.buildout_cache_archives]]\n\
         url = \"https://files.example.org/eggs.tgz\"\npath = \"shared/eggs\"\n\
         [[attributes.deploy.site.buildout_cache_archives]]\n\
         url = \"https://files.example.org/downloads.tgz\"\npath = \"shared/downloads\"\n",
        "0".repeat(128)
    ));
    // Solr's archive only with a `solr` host; a repository path on the controller is pushed.
    assert_eq!(
        without_solr.download_urls(),
        [
            "https://files.example.org/downloads.tgz",
            "https://files.example.org/eggs.tgz",
            "https://git.example.org/site.git",
        ]
    );
    let with_solr = parse(&format!(
        "{BASE}[hosts.solr1]\naddress = \"10.0.0.30\"\nlayers = [\"solr\"]\n"
    ));
    assert_eq!(
        with_solr.download_urls(),
        ["https://archive.apache.org/dist/solr/solr/9.10.1/solr-9.10.1.tgz"]
    );
}
