//! The database layers end to end on real sandbox hosts: ZEO from pip, PostgreSQL and
//! memcached from Debian, ZODB clients on other hosts opening the storage sections that
//! `provision_zeo::client` renders, RelStorage packing from the one `db_packing` host, and
//! copies of the ZEO backups in an S3 server (moto) on the sandbox bridge.
//!
//! Without root or systemd-nspawn these tests skip with one line, except under
//! PROVISION_SANDBOX=required (CI), where they fail. The S3 server runs from the virtualenv
//! that scripts/install-deps makes ([`MOTO_VENV`]), bound to the bridge address only.

mod common;

use std::time::{Duration, Instant};

use common::*;
use provision_core::stack::Stack;
use provision_core::template::Templates;
use provision_sandbox::fixture::{self, Hosts};
use provision_zeo::client::{self, DbConnection, RelStorageSettings, ZeoClientSettings};

/// The test's ZODB client on a sandbox host: a virtualenv, and its caches and config.
const CLIENT_VENV: &str = "/opt/zodb-client";
const CLIENT_DIR: &str = "/srv/zodb-client";

const DB_PASSWORD: &str = "pg-S3cret-pw-0f-the-test";

/// A ZODB client: opens the database of the ZConfig file `argv[1]`, then `write TEXT` (a
/// mapping with the title TEXT and a blob of TEXT repeated) or `read` (prints
/// `TITLE BLOB_LENGTH BLOB_START`).
const CLIENT_PY: &str = r#"
import sys
import transaction
import ZODB.config
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob

config, action = sys.argv[1], sys.argv[2]
with open(config) as f:
    db = ZODB.config.databaseFromFile(f)
connection = db.open()
root = connection.root()
if action == "write":
    text = sys.argv[3]
    root["doc"] = PersistentMapping(title=text)
    blob = root.get("blob") or Blob()
    with blob.open("w") as f:
        f.write(text.encode() * 1000)
    root["blob"] = blob
    transaction.commit()
elif action == "read":
    title = root["doc"]["title"]
    with root["blob"].open("r") as f:
        data = f.read()
    print(title, len(data), data[: len(title)].decode())
else:
    raise SystemExit("unknown action " + action)
connection.close()
db.close()
"#;

/// What `read` prints for the state written by `write TEXT`.
fn expected(text: &str) -> String {
    format!("{text} {} {text}", text.len() * 1000)
}

fn templates() -> Templates {
    Templates::new(provision_zeo::TEMPLATES).expect("templates parse")
}

/// Makes the client's virtualenv on `host`: Debian packages first (with the host's apt,
/// through the sandbox's proxy), then pip with the host's own configuration.
fn client_venv(hosts: &Hosts, host: &str, debian: &[&str], requirements: &[&str]) {
    let started = Instant::now();
    let apt = if debian.is_empty() {
        String::new()
    } else {
        format!(
            "export DEBIAN_FRONTEND=noninteractive\napt-get update -qq\n\
             apt-get install -y -qq --no-install-recommends {} >/dev/null\n",
            debian.join(" ")
        )
    };
    let requirements: Vec<String> = requirements.iter().map(|r| format!("'{r}'")).collect();
    sh(
        hosts,
        host,
        &format!(
            "set -e\n{apt}python3 -m venv {CLIENT_VENV}\n\
             {CLIENT_VENV}/bin/pip install -q --disable-pip-version-check {}\n\
             cat > {CLIENT_VENV}/client.py <<'PY'\n{CLIENT_PY}PY\n",
            requirements.join(" ")
        ),
    );
    eprintln!(
        "client virtualenv on {host} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// Runs the client on `host` with `config` (a `<zodb>` ZConfig file). Its caches start empty
/// each time: a restored server is older than what a kept cache has seen.
fn zodb(hosts: &Hosts, host: &str, config: &str, args: &str) -> String {
    sh(
        hosts,
        host,
        &format!(
            "set -e\nrm -rf {CLIENT_DIR}\nmkdir -p {CLIENT_DIR}/var\n\
             cat > {CLIENT_DIR}/db.conf <<'CONF'\n{config}CONF\n\
             chmod 600 {CLIENT_DIR}/db.conf\n\
             {CLIENT_VENV}/bin/python {CLIENT_VENV}/client.py {CLIENT_DIR}/db.conf {args}"
        ),
    )
    .trim()
    .to_string()
}

/// Whether a TCP connection from `host` to `address:port` is accepted.
fn connects(hosts: &Hosts, host: &str, address: &str, port: u16) -> bool {
    let script =
        format!("python3 -c 'import socket; socket.create_connection((\"{address}\", {port}), 3)'");
    hosts.ssh(hosts.host(host), &script).status.success()
}

/// The repozo time stamps of the full backups among `keys`, oldest first.
fn full_backups(keys: &[String]) -> Vec<String> {
    keys.iter()
        .filter(|k| k.ends_with(".fsz") || k.ends_with(".fs"))
        .map(|k| k.rsplit('/').next().unwrap()[..19].to_string())
        .collect()
}

fn zeo_stack(zeo_host: &str, hosts: &Hosts, endpoint: &str) -> String {
    let address = |name: &str| hosts.host(name).address().to_string();
    format!(
        "[hosts.{zeo_host}]\naddress = \"{}\"\nlayers = [\"zeoserver\"]\n\
         [hosts.app1]\naddress = \"{}\"\nlayers = []\n\
         [hosts.app2]\naddress = \"{}\"\nlayers = []\n\
         [attributes.plone_zeoserver]\nenable_backup = true\n\
         [attributes.plone_zeoserver.backup_s3]\nbucket = \"zeo-backups\"\nprefix = \"site/zeo\"\n\
         endpoint = \"{endpoint}\"\nkeep = 2\n",
        address(zeo_host),
        address("app1"),
        address("app2"),
    )
}

/// The `<zodb>` config of a client of the ZEO server on `zeo_host`, from the rendered
/// `<zeoclient>` section: blobs come over ZEO into a blob cache (the hosts share no
/// directory), persistent cache `zeoclient-1`.
fn zeo_client_config(hosts: &Hosts, zeo_host: &str) -> String {
    let server = format!("{}:8001", hosts.host(zeo_host).address());
    let mut settings = ZeoClientSettings::new(
        vec![server],
        &format!("{CLIENT_DIR}/blobs"),
        &format!("{CLIENT_DIR}/var"),
    );
    settings.shared_blob_dir = false;
    let section = client::zeoclient_section(&settings, 1, &templates()).unwrap();
    assert!(section.contains("client zeoclient-1"), "{section}");
    format!("<zodb>\n{section}</zodb>\n")
}

#[test]
fn zeo_serves_two_hosts_and_its_backups_survive_the_loss_of_the_database_host() {
    let Some(moto) = S3Server::program() else {
        return;
    };
    let Some(hosts) = fixture::named_blocking(&["db1", "db2", "app1", "app2"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&moto, hosts.inventory().gateway, dir.path());
    s3.create_bucket("zeo-backups");
    let secrets = [
        (
            "PROVISION_SECRET_PLONE_ZEOSERVER_BACKUP_S3_ACCESS_KEY",
            S3_KEY,
        ),
        (
            "PROVISION_SECRET_PLONE_ZEOSERVER_BACKUP_S3_SECRET_KEY",
            S3_SECRET,
        ),
    ];
    write_stack(dir.path(), &hosts, &zeo_stack("db1", &hosts, &s3.endpoint));

    // The plan shows that the S3 keys' file will be written, never the keys.
    let started = Instant::now();
    let plan = provision(
        dir.path(),
        &["plan", "--sandbox", "--host", "db1", "--json"],
        &secrets,
    );
    ok(&plan);
    let shown = format!("{}{}", text(&plan.stdout), text(&plan.stderr));
    assert!(
        !shown.contains(S3_SECRET) && !shown.contains(S3_KEY),
        "{shown}"
    );
    let planned = json(&plan);
    let rclone = planned["hosts"][0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["resource"] == "file:/etc/provision/zeo/rclone.conf")
        .unwrap_or_else(|| panic!("no rclone config planned: {planned}"));
    assert_eq!(rclone["diff"], "(secret content not shown)\n", "{rclone}");

    // The ZEO host converges while the client hosts make their virtualenvs.
    let up = std::thread::scope(|scope| {
        let up =
            scope.spawn(|| provision(dir.path(), &["up", "--sandbox", "--host", "db1"], &secrets));
        let hosts = &hosts;
        for host in ["app1", "app2"] {
            scope.spawn(move || client_venv(hosts, host, &[], &["ZEO==6.2", "ZODB==6.4"]));
        }
        up.join().unwrap()
    });
    ok(&up);
    eprintln!(
        "db1 up and clients ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let shown = format!("{}{}", text(&up.stdout), text(&up.stderr));
    assert!(
        !shown.contains(S3_SECRET),
        "the S3 key was printed: {shown}"
    );
    let plan = provision(
        dir.path(),
        &["plan", "--sandbox", "--host", "db1", "--json"],
        &secrets,
    );
    ok(&plan);
    assert_eq!(
        json(&plan)["hosts"][0]["outcome"]["status"],
        "unchanged",
        "{}",
        text(&plan.stdout)
    );
    let mode = sh(
        &hosts,
        "db1",
        "stat -c '%U:%G %a' /etc/provision/zeo/rclone.conf",
    );
    assert_eq!(mode.trim(), "root:zeo 640");
    let files = common::assert_secret_files_private(&hosts, "db1", &[S3_KEY, S3_SECRET]);
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("/etc/provision/zeo/rclone.conf")),
        "{files:?}"
    );

    // A client on app1 commits an object and a blob; a client on app2 reads both.
    let db1_config = zeo_client_config(&hosts, "db1");
    let db1_address = hosts.host("db1").address().to_string();
    wait_for("ZEO answers on db1", Duration::from_secs(60), || {
        connects(&hosts, "app1", &db1_address, 8001)
    });
    zodb(&hosts, "app1", &db1_config, "write hello");
    assert_eq!(zodb(&hosts, "app2", &db1_config, "read"), expected("hello"));
    // Bound to the private address only: db1's own loopback is refused.
    assert!(
        !connects(&hosts, "db1", "127.0.0.1", 8001),
        "ZEO listens on loopback"
    );

    // `provision backup` backs up and copies the backup to S3.
    let out = provision(dir.path(), &["backup", "--sandbox"], &secrets);
    ok(&out);
    assert!(
        text(&out.stdout).contains("db1: zeoserver-backup done"),
        "{}",
        text(&out.stdout)
    );
    let keys = s3.keys("zeo-backups", "site/zeo/");
    let first = full_backups(&keys);
    assert_eq!(first.len(), 1, "{keys:?}");
    let first = first[0].clone();
    let first_list_key = format!("site/zeo/snapshots/{first}.list");
    assert!(keys.contains(&first_list_key), "{keys:?}");
    let first_list = s3.get("zeo-backups", &first_list_key);
    let hello_blob = first_list
        .lines()
        .find(|l| l.ends_with(".blob"))
        .unwrap_or_else(|| panic!("no blob in the first snapshot: {first_list}"))
        .to_string();
    assert!(
        keys.contains(&format!("site/zeo/blobs/{hello_blob}")),
        "{keys:?}"
    );

    // A second revision; a pack of all history removes the first revision's blob file; a
    // full backup. Then a third revision and another full backup: the bucket keeps 2 full
    // backups, so the first one goes, and with it the blob no kept snapshot names.
    let pack = format!(
        "runuser -u zeo -- /opt/provision/zeo/bin/zeopack -d 0 {db1_address}:8001:1 && \
         find /var/lib/zeo/blobstorage -path /var/lib/zeo/blobstorage/old -prune -o -name '*.blob' -print | wc -l"
    );
    let full_backup = "runuser -u zeo -- /usr/local/sbin/provision-zeo-backup --full";
    zodb(&hosts, "app1", &db1_config, "write world");
    assert_eq!(
        sh(&hosts, "db1", &pack).trim(),
        "1",
        "zeopack kept the old blob"
    );
    sh(&hosts, "db1", full_backup);
    zodb(&hosts, "app1", &db1_config, "write third");
    let pushed = sh(&hosts, "db1", full_backup);
    assert!(pushed.contains("2 full backups"), "{pushed}");
    let keys = s3.keys("zeo-backups", "site/zeo/");
    let fulls = full_backups(&keys);
    assert_eq!(fulls.len(), 2, "{keys:?}");
    assert!(!fulls.contains(&first), "{keys:?}");
    let second = fulls[0].clone();
    assert!(!keys.iter().any(|k| k.contains(&first)), "{keys:?}");
    assert!(
        !keys.contains(&format!("site/zeo/blobs/{hello_blob}")),
        "{keys:?}"
    );
    let mut wanted: Vec<String> = keys
        .iter()
        .filter(|k| k.ends_with(".list"))
        .flat_map(|k| {
            s3.get("zeo-backups", k)
                .lines()
                .map(|l| format!("site/zeo/blobs/{l}"))
                .collect::<Vec<_>>()
        })
        .collect();
    wanted.sort();
    wanted.dedup();
    let stored: Vec<&String> = keys.iter().filter(|k| k.contains("/blobs/")).collect();
    assert_eq!(stored, wanted.iter().collect::<Vec<_>>());

    // Destroy the data on db1 and restore the second backup with the host's script.
    sh(
        &hosts,
        "db1",
        "systemctl stop zeoserver && rm -rf /var/lib/zeo/filestorage/* /var/lib/zeo/blobstorage/*",
    );
    let restored = sh(
        &hosts,
        "db1",
        &format!("provision-zeo-restore --date {second} --restart"),
    );
    assert!(restored.contains(&format!("backup {second}")), "{restored}");
    assert_eq!(zodb(&hosts, "app2", &db1_config, "read"), expected("world"));

    // Lose db1 for good. A new host takes its place, and its data comes from S3 alone.
    hosts.host("db1").power_cut().unwrap();
    write_stack(dir.path(), &hosts, &zeo_stack("db2", &hosts, &s3.endpoint));
    ok(&provision(
        dir.path(),
        &["up", "--sandbox", "--host", "db2"],
        &secrets,
    ));
    let db2_config = zeo_client_config(&hosts, "db2");
    let restore = |date: Option<&str>| {
        let mut args = vec!["run", "--sandbox", "--host", "db2", "--"];
        args.extend(["provision-zeo-restore", "--from-s3", "--restart", "--force"]);
        args.extend(date.map(|d| ["--date", d]).into_iter().flatten());
        provision(dir.path(), &args, &secrets)
    };
    let out = restore(None);
    ok(&out);
    assert!(
        text(&out.stdout).contains("started zeoserver"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(zodb(&hosts, "app2", &db2_config, "read"), expected("third"));
    ok(&restore(Some(&second)));
    assert_eq!(zodb(&hosts, "app1", &db2_config, "read"), expected("world"));
    // The first backup left the bucket with its retention.
    let out = restore(Some(&first));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("no backup in s3://zeo-backups/site/zeo"),
        "{}",
        text(&out.stdout)
    );
    // The restored host backs up again, into the same bucket, which keeps 2 full backups.
    ok(&provision(dir.path(), &["backup", "--sandbox"], &secrets));
    let listing = provision(
        dir.path(),
        &[
            "run",
            "--sandbox",
            "--host",
            "db2",
            "--",
            "provision-zeo-s3",
            "list",
        ],
        &secrets,
    );
    ok(&listing);
    let fulls = text(&listing.stdout).matches(" full ").count();
    assert_eq!(fulls, 2, "{}", text(&listing.stdout));
    eprintln!("ZEO test done in {:.0} s", started.elapsed().as_secs_f64());
}

fn relstorage_stack(hosts: &Hosts, pack_days: u32) -> String {
    let address = |name: &str| hosts.host(name).address().to_string();
    format!(
        "[hosts.db1]\naddress = \"{}\"\nlayers = [\"postgres\", \"memcached\"]\n\
         [hosts.app1]\naddress = \"{}\"\nlayers = [\"db_packing\"]\n\
         [hosts.app2]\naddress = \"{}\"\nlayers = [\"plone_instances\"]\n\
         [attributes.plone_instances]\nenable_relstorage = true\n\
         [attributes.plone_instances.relstorage]\npack_days = {pack_days}\n",
        address("db1"),
        address("app1"),
        address("app2"),
    )
}

/// What the RelStorage clients need on a host: a compiler and headers for psycopg2 and
/// pylibmc, which pip builds from source.
const RELSTORAGE_DEBIAN: &[&str] = &[
    "gcc",
    "python3-dev",
    "libpq-dev",
    "libmemcached-dev",
    "zlib1g-dev",
];
const RELSTORAGE_PIP: &[&str] = &["RelStorage[postgresql]==4.3.0", "pylibmc"];

/// `psql` as postgres on the database host.
fn psql(hosts: &Hosts, sql: &str) -> String {
    sh(
        hosts,
        "db1",
        &format!("runuser -u postgres -- psql -X -d zodb -tAc \"{sql}\""),
    )
    .trim()
    .to_string()
}

#[test]
fn relstorage_serves_two_hosts_through_memcached_and_one_host_packs() {
    let Some(hosts) = fixture::named_blocking(&["db1", "app1", "app2", "out1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let secrets = [(
        "PROVISION_SECRET_PLONE_INSTANCES_RELSTORAGE_DB_PASSWORD",
        DB_PASSWORD,
    )];
    write_stack(dir.path(), &hosts, &relstorage_stack(&hosts, 0));
    let converge = ["--sandbox", "--host", "db1", "--host", "app1"];
    let started = Instant::now();

    // PostgreSQL, memcached and the packer converge while app2 builds its client and out1,
    // a sandbox host outside the stack, gets psql. app1 builds its client after its up:
    // two apt-gets on one host would fight over its lock.
    let up = std::thread::scope(|scope| {
        let up = scope.spawn(|| {
            let out = provision(dir.path(), &[&["up"][..], &converge].concat(), &secrets);
            if out.status.success() {
                client_venv(&hosts, "app1", RELSTORAGE_DEBIAN, RELSTORAGE_PIP);
            }
            out
        });
        let hosts = &hosts;
        scope.spawn(move || client_venv(hosts, "app2", RELSTORAGE_DEBIAN, RELSTORAGE_PIP));
        scope.spawn(move || {
            sh(
                hosts,
                "out1",
                "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
                 apt-get install -y -qq --no-install-recommends postgresql-client >/dev/null",
            )
        });
        up.join().unwrap()
    });
    ok(&up);
    assert!(
        !text(&up.stdout).contains(DB_PASSWORD),
        "the password was printed"
    );
    eprintln!(
        "db1 and app1 up, clients ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // The clients' storage section, as the stack discovers it: the postgres host's
    // database, and the memcached host in cache-servers.
    let stack = Stack::parse(
        &format!(
            "[stack]\nname = \"{}\"\n\n{}",
            hosts.name(),
            relstorage_stack(&hosts, 0)
        ),
        "stack.toml",
        None,
    )
    .unwrap();
    let db1_address = hosts.host("db1").address().to_string();
    let mut settings = RelStorageSettings::new(
        DbConnection::Params {
            host: stack.relstorage_db_host().unwrap(),
            port: None,
            name: "zodb".to_string(),
            user: "plone".to_string(),
            password: Some(DB_PASSWORD.to_string()),
        },
        &format!("{CLIENT_DIR}/blobs"),
    );
    settings.cache_servers = stack
        .memcached_servers()
        .iter()
        .map(ToString::to_string)
        .collect();
    let section = client::relstorage_section(&settings, &templates()).unwrap();
    assert!(
        section.contains(&format!("cache-servers {db1_address}:11211")),
        "{section}"
    );
    let config = format!("{}\n<zodb>\n{section}</zodb>\n", client::RELSTORAGE_IMPORT);

    // An object and a blob from app1, read on app2.
    zodb(&hosts, "app1", &config, "write hello");
    assert_eq!(zodb(&hosts, "app2", &config, "read"), expected("hello"));
    // Through memcached, which listens on the private address only.
    let stats = sh(
        &hosts,
        "app2",
        &format!(
            "python3 -c 'import socket; s = socket.create_connection((\"{db1_address}\", 11211), 3); \
             s.sendall(b\"stats\\r\\n\"); d = b\"\"\nwhile not d.endswith(b\"END\\r\\n\"): d += s.recv(65536)\nprint(d.decode())'"
        ),
    );
    let sets: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("STAT cmd_set "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no cmd_set in {stats}"));
    assert!(sets > 0, "the clients stored nothing in memcached: {stats}");
    assert!(
        !connects(&hosts, "db1", "127.0.0.1", 11211),
        "memcached listens on loopback"
    );

    // A host outside the stack is refused by pg_hba.conf, even with the password.
    let out1_address = hosts.host("out1").address().to_string();
    let refused = hosts.ssh(
        hosts.host("out1"),
        &format!(
            "PGPASSWORD='{DB_PASSWORD}' psql -X -tAc 'SELECT 1' \
             'host={db1_address} dbname=zodb user=plone connect_timeout=5'"
        ),
    );
    assert!(!refused.status.success(), "out1 got into the database");
    // No file holding the database password is readable by others, on any host.
    for host in ["db1", "app1", "app2"] {
        let files = common::assert_secret_files_private(&hosts, host, &[DB_PASSWORD]);
        assert!(
            !files.is_empty() || host == "db1",
            "{host}: the sweep found no config"
        );
    }
    assert!(
        text(&refused.stderr)
            .contains(&format!("no pg_hba.conf entry for host \"{out1_address}\"")),
        "{}",
        text(&refused.stderr)
    );

    // A second revision of the blob; a pack keeping no history removes the first one's
    // chunks. It runs on the db_packing host, and only there.
    zodb(&hosts, "app1", &config, "write world");
    assert_eq!(psql(&hosts, "SELECT count(*) FROM blob_chunk"), "2");
    let out = provision(dir.path(), &["pack", "--sandbox"], &secrets);
    ok(&out);
    let done: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| l.contains("done"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        done,
        ["app1: relstorage-pack done"],
        "{}",
        text(&out.stdout)
    );
    assert_eq!(psql(&hosts, "SELECT count(*) FROM blob_chunk"), "1");
    assert_eq!(zodb(&hosts, "app2", &config, "read"), expected("world"));
    for host in ["db1", "app2"] {
        let unit = hosts.ssh(hosts.host(host), "systemctl cat relstorage-pack.timer");
        assert!(!unit.status.success(), "{host} has a pack timer too");
    }

    // plan after up changes nothing; a new pack_days changes exactly the pack timer.
    let plan = |pack_days| {
        write_stack(dir.path(), &hosts, &relstorage_stack(&hosts, pack_days));
        let out = provision(
            dir.path(),
            &[&["plan", "--json"][..], &converge].concat(),
            &secrets,
        );
        ok(&out);
        json(&out)
    };
    let unchanged = plan(0);
    for host in unchanged["hosts"].as_array().unwrap() {
        assert_eq!(host["outcome"]["status"], "unchanged", "{unchanged}");
    }
    let changed = plan(3);
    assert_eq!(changed["hosts"][0]["host"], "db1");
    assert_eq!(
        changed["hosts"][0]["outcome"]["status"], "unchanged",
        "{changed}"
    );
    let changes = changed["hosts"][1]["changes"].as_array().unwrap();
    let resources: Vec<&str> = changes
        .iter()
        .map(|c| c["resource"].as_str().unwrap())
        .collect();
    assert_eq!(
        resources,
        [
            "unit:relstorage-pack.service",
            "unit:relstorage-pack.timer",
            "service:relstorage-pack.timer"
        ],
        "{changed}"
    );
    let diff = changes[0]["diff"].as_str().unwrap();
    assert!(
        diff.contains("zodbpack -d 0 ") && diff.contains("zodbpack -d 3 "),
        "{diff}"
    );
    eprintln!(
        "RelStorage test done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// The ZEO stack of [`zeo_stack`] on db1, with `pack_days`.
fn zeo_restore_stack(hosts: &Hosts, endpoint: &str, pack_days: u32) -> String {
    zeo_stack("db1", hosts, endpoint).replace(
        "enable_backup = true\n",
        &format!("enable_backup = true\npack_days = {pack_days}\n"),
    )
}

/// The resources a plan of `--host db1` would change.
fn planned_changes(dir: &std::path::Path, secrets: &[(&str, &str)]) -> Vec<String> {
    let plan = provision(
        dir,
        &["plan", "--sandbox", "--host", "db1", "--json"],
        secrets,
    );
    ok(&plan);
    json(&plan)["hosts"][0]["changes"]
        .as_array()
        .map(|changes| {
            changes
                .iter()
                .map(|c| c["resource"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn provision_restore_puts_the_zeo_database_back_and_pack_days_changes_only_the_timer() {
    let Some(moto) = S3Server::program() else {
        return;
    };
    let Some(hosts) = fixture::named_blocking(&["db1", "app1", "app2"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&moto, hosts.inventory().gateway, dir.path());
    s3.create_bucket("zeo-backups");
    let secrets = [
        (
            "PROVISION_SECRET_PLONE_ZEOSERVER_BACKUP_S3_ACCESS_KEY",
            S3_KEY,
        ),
        (
            "PROVISION_SECRET_PLONE_ZEOSERVER_BACKUP_S3_SECRET_KEY",
            S3_SECRET,
        ),
    ];
    write_stack(
        dir.path(),
        &hosts,
        &zeo_restore_stack(&hosts, &s3.endpoint, 7),
    );
    let started = Instant::now();
    let up = std::thread::scope(|scope| {
        let up =
            scope.spawn(|| provision(dir.path(), &["up", "--sandbox", "--host", "db1"], &secrets));
        client_venv(&hosts, "app1", &[], &["ZEO==6.2", "ZODB==6.4"]);
        up.join().unwrap()
    });
    ok(&up);
    let pack_unit = sh(&hosts, "db1", "systemctl cat zeoserver-pack.service");
    assert!(pack_unit.contains("zeopack -d 7 "), "{pack_unit}");

    // pack_days changes exactly the pack timer.
    assert_eq!(planned_changes(dir.path(), &secrets), Vec::<String>::new());
    write_stack(
        dir.path(),
        &hosts,
        &zeo_restore_stack(&hosts, &s3.endpoint, 3),
    );
    assert_eq!(
        planned_changes(dir.path(), &secrets),
        [
            "unit:zeoserver-pack.service",
            "unit:zeoserver-pack.timer",
            "service:zeoserver-pack.timer"
        ]
    );
    ok(&provision(
        dir.path(),
        &["up", "--sandbox", "--host", "db1"],
        &secrets,
    ));
    let pack_unit = sh(&hosts, "db1", "systemctl cat zeoserver-pack.service");
    assert!(pack_unit.contains("zeopack -d 3 "), "{pack_unit}");

    // Back up "before", then write "after".
    let config = zeo_client_config(&hosts, "db1");
    let db1_address = hosts.host("db1").address().to_string();
    wait_for("ZEO answers on db1", Duration::from_secs(60), || {
        connects(&hosts, "app1", &db1_address, 8001)
    });
    zodb(&hosts, "app1", &config, "write before");
    ok(&provision(dir.path(), &["backup", "--sandbox"], &secrets));
    zodb(&hosts, "app1", &config, "write after");

    // Without --yes: exit 2, a sentence, nothing changed.
    let refused = provision(dir.path(), &["restore", "--sandbox"], &secrets);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("run it again with --yes"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(zodb(&hosts, "app1", &config, "read"), expected("after"));
    // A backup name that is no time stamp: exit 2 too.
    let bad = provision(
        dir.path(),
        &["restore", "--sandbox", "--yes", "--backup", "latest"],
        &secrets,
    );
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));

    let out = provision(dir.path(), &["restore", "--sandbox", "--yes"], &secrets);
    ok(&out);
    let said = text(&out.stdout);
    assert!(
        said.contains("db1: restored ") && said.contains("db1: started zeoserver"),
        "{said}"
    );
    assert_eq!(zodb(&hosts, "app1", &config, "read"), expected("before"));

    // From S3 after losing the local backups, by name.
    zodb(&hosts, "app1", &config, "write later");
    let stamp = full_backups(&s3.keys("zeo-backups", "site/zeo/"))
        .pop()
        .expect("a backup in S3");
    sh(
        &hosts,
        "db1",
        "rm -rf /var/backups/zeo/filestorage /var/backups/zeo/blobstorage",
    );
    let out = provision(
        dir.path(),
        &[
            "restore",
            "--sandbox",
            "--yes",
            "--from-s3",
            "--backup",
            &stamp,
        ],
        &secrets,
    );
    ok(&out);
    assert!(
        text(&out.stdout).contains(&format!("backup {stamp}")),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(zodb(&hosts, "app1", &config, "read"), expected("before"));
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!shown.contains(S3_SECRET), "{shown}");
    eprintln!(
        "ZEO restore test done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn postgres_dumps_back_up_and_restore_a_relstorage_database() {
    let Some(moto) = S3Server::program() else {
        return;
    };
    let Some(hosts) = fixture::named_blocking(&["db1", "app1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&moto, hosts.inventory().gateway, dir.path());
    s3.create_bucket("db-backups");
    let secrets = [
        (
            "PROVISION_SECRET_PLONE_INSTANCES_RELSTORAGE_DB_PASSWORD",
            DB_PASSWORD,
        ),
        (
            "PROVISION_SECRET_PLONE_ZEOSERVER_BACKUP_S3_ACCESS_KEY",
            S3_KEY,
        ),
        (
            "PROVISION_SECRET_PLONE_ZEOSERVER_BACKUP_S3_SECRET_KEY",
            S3_SECRET,
        ),
    ];
    let db1_address = hosts.host("db1").address().to_string();
    write_stack(
        dir.path(),
        &hosts,
        &format!(
            "[hosts.db1]\naddress = \"{db1_address}\"\nlayers = [\"postgres\"]\n\
             [hosts.app1]\naddress = \"{}\"\nlayers = [\"plone_instances\"]\n\
             [attributes.plone_instances]\nenable_relstorage = true\n\
             [attributes.plone_instances.relstorage]\nenable_backup = true\nbackup_keep = 2\n\
             enable_cache = false\n\
             [attributes.plone_zeoserver.backup_s3]\nbucket = \"db-backups\"\nprefix = \"site\"\n\
             endpoint = \"{}\"\nkeep = 2\n",
            hosts.host("app1").address(),
            s3.endpoint
        ),
    );
    let started = Instant::now();
    let up = std::thread::scope(|scope| {
        let up =
            scope.spawn(|| provision(dir.path(), &["up", "--sandbox", "--host", "db1"], &secrets));
        client_venv(&hosts, "app1", RELSTORAGE_DEBIAN, RELSTORAGE_PIP);
        up.join().unwrap()
    });
    ok(&up);
    assert!(!text(&up.stdout).contains(DB_PASSWORD) && !text(&up.stdout).contains(S3_SECRET));
    let mode = sh(&hosts, "db1", "stat -c '%U:%G %a' /var/backups/postgres");
    assert_eq!(mode.trim(), "postgres:postgres 700");
    let timer = sh(&hosts, "db1", "systemctl is-enabled postgres-backup.timer");
    assert_eq!(timer.trim(), "enabled");

    let settings = RelStorageSettings::new(
        DbConnection::Params {
            host: db1_address.clone(),
            port: None,
            name: "zodb".to_string(),
            user: "plone".to_string(),
            password: Some(DB_PASSWORD.to_string()),
        },
        &format!("{CLIENT_DIR}/blobs"),
    );
    let section = client::relstorage_section(&settings, &templates()).unwrap();
    let config = format!("{}\n<zodb>\n{section}</zodb>\n", client::RELSTORAGE_IMPORT);
    zodb(&hosts, "app1", &config, "write before");

    // `provision backup` dumps on the postgres host and copies the dump to S3.
    let out = provision(dir.path(), &["backup", "--sandbox"], &secrets);
    ok(&out);
    assert!(
        text(&out.stdout).contains("db1: postgres-backup done"),
        "{}",
        text(&out.stdout)
    );
    let keys = s3.keys("db-backups", "site/postgres/");
    assert_eq!(keys.len(), 1, "{keys:?}");
    zodb(&hosts, "app1", &config, "write after");

    let refused = provision(dir.path(), &["restore", "--sandbox"], &secrets);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert_eq!(zodb(&hosts, "app1", &config, "read"), expected("after"));

    let out = provision(dir.path(), &["restore", "--sandbox", "--yes"], &secrets);
    ok(&out);
    assert!(
        text(&out.stdout).contains("db1: restored database zodb"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(zodb(&hosts, "app1", &config, "read"), expected("before"));
    // The role logs in again: a client writes after the restore.
    zodb(&hosts, "app1", &config, "write again");
    assert_eq!(zodb(&hosts, "app1", &config, "read"), expected("again"));

    // From S3, after losing the local dumps.
    sh(&hosts, "db1", "rm -f /var/backups/postgres/*.dump");
    let out = provision(
        dir.path(),
        &["restore", "--sandbox", "--yes", "--from-s3"],
        &secrets,
    );
    ok(&out);
    assert_eq!(zodb(&hosts, "app1", &config, "read"), expected("before"));
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !shown.contains(DB_PASSWORD) && !shown.contains(S3_SECRET),
        "{shown}"
    );
    eprintln!(
        "PostgreSQL dump test done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// `plone_zeoserver.mode = "buildout"`: ZEO built from the Zope example's `zeoserver` part
/// (real buildout, plone.recipe.zeoserver) as a release on db1, serving two client hosts.
#[test]
fn zeo_in_buildout_mode_serves_two_hosts_from_a_release_of_the_app() {
    let Some(hosts) = fixture::named_blocking(&["db1", "app1", "app2"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = zope_example_repository(dir.path(), &[], "the Zope example");
    let address = |name: &str| hosts.host(name).address().to_string();
    write_stack(
        dir.path(),
        &hosts,
        &format!(
            "[hosts.db1]\naddress = \"{}\"\nlayers = [\"zeoserver\"]\n\
             [hosts.app1]\naddress = \"{}\"\nlayers = []\n\
             [hosts.app2]\naddress = \"{}\"\nlayers = []\n\
             [apps.site]\nrepository = \"{}\"\n\
             [attributes.plone_zeoserver]\nmode = \"buildout\"\nenable_backup = true\n",
            address("db1"),
            address("app1"),
            address("app2"),
            repo.display(),
        ),
    );
    let started = Instant::now();
    let plan = provision(dir.path(), &["plan", "--sandbox", "--host", "db1"], &[]);
    ok(&plan);
    let planned = text(&plan.stdout);
    assert!(planned.contains("release:zeoserver"), "{planned}");

    let up = std::thread::scope(|scope| {
        let up = scope.spawn(|| provision(dir.path(), &["up", "--sandbox", "--host", "db1"], &[]));
        let hosts = &hosts;
        for host in ["app1", "app2"] {
            scope.spawn(move || client_venv(hosts, host, &[], &["ZEO==6.2", "ZODB==6.4"]));
        }
        up.join().unwrap()
    });
    ok(&up);
    eprintln!(
        "db1 built and clients ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // ZEO runs the release's runzeo, with the part's zeo.conf, as the server's user.
    let process = sh(
        &hosts,
        "db1",
        "ps -o user=,args= -p $(systemctl show -p MainPID --value zeoserver)",
    );
    let current = sh(&hosts, "db1", "readlink /srv/www/site/current");
    assert!(
        process.starts_with("zeo ")
            && process.contains(&format!("{}/parts/zeoserver/etc/zeo.conf", current.trim())),
        "{process}"
    );
    let conf = sh(
        &hosts,
        "db1",
        "cat /srv/www/site/current/parts/zeoserver/etc/zeo.conf",
    );
    assert!(
        conf.contains(&format!("address {}:8001", address("db1")))
            && conf.contains("/var/lib/zeo/filestorage/Data.fs")
            && conf.contains("blob-dir /var/lib/zeo/blobstorage"),
        "{conf}"
    );

    let config = zeo_client_config(&hosts, "db1");
    let db1 = address("db1");
    wait_for("ZEO answers on db1", Duration::from_secs(60), || {
        connects(&hosts, "app1", &db1, 8001)
    });
    zodb(&hosts, "app1", &config, "write buildout");
    assert_eq!(zodb(&hosts, "app2", &config, "read"), expected("buildout"));
    assert!(
        !connects(&hosts, "db1", "127.0.0.1", 8001),
        "ZEO listens on loopback"
    );

    // A second `up` changes nothing: no build, no restart, in three SSH sessions on db1 (the
    // facts, the check, the release's prepare script, which checks ZEO's service too).
    let pid = sh(&hosts, "db1", "systemctl show -p MainPID --value zeoserver");
    sh(
        &hosts,
        "db1",
        // sshd re-executes itself on a reload and refuses connections until it listens again:
        // wait on db1 for its "Server listening" line of the new start.
        "listening() { journalctl --sync; journalctl -q -o cat -u ssh.service | grep -c '^Server listening on' || true; }
         before=$(listening)
         printf 'LogLevel VERBOSE\\n' > /etc/ssh/sshd_config.d/zz-sessions.conf
         systemctl reload ssh
         tries=0
         while [ \"$(listening)\" -le \"$before\" ]; do
             tries=$((tries + 1))
             [ \"$tries\" -lt 100 ] || { echo 'sshd did not listen again within 10 s' >&2; exit 1; }
             sleep 0.1
         done",
    );
    // Every session so far, this one's included (sshd logs it before the command runs).
    let sessions = || -> u32 {
        sh(
            &hosts,
            "db1",
            "journalctl --sync; journalctl -q -o cat -u ssh.service | grep -c '^Starting session:' || true",
        )
        .trim()
        .parse()
        .unwrap()
    };
    let before = sessions();
    let again = provision(
        dir.path(),
        &["up", "--sandbox", "--host", "db1", "--json"],
        &[],
    );
    ok(&again);
    assert_eq!(sessions() - before - 1, 3, "{}", text(&again.stdout));
    let report = json(&again);
    assert_eq!(
        report["hosts"][0]["outcome"]["status"],
        "unchanged",
        "{}",
        text(&again.stdout)
    );
    assert_eq!(
        sh(&hosts, "db1", "systemctl show -p MainPID --value zeoserver"),
        pid
    );

    // Backups keep working (the virtualenv's repozo, on the release's Data.fs).
    let out = provision(dir.path(), &["backup", "--sandbox"], &[]);
    ok(&out);
    assert!(
        text(&out.stdout).contains("db1: zeoserver-backup done"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(zodb(&hosts, "app1", &config, "read"), expected("buildout"));
    eprintln!(
        "ZEO buildout test done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
