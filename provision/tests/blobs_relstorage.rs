//! `blobs migrate` on a RelStorage stack, end to end on real sandbox hosts: PostgreSQL on db1
//! (which also serves GlusterFS: kernel NFS mounts cannot run in the sandbox, see
//! testbed.md), the Zope example app built with RelStorage on app1, 50 blobs committed
//! through the app's own client. The blobs move out of the database into the GlusterFS
//! volume (`shared-blob-dir`), then back into a database; after each move the client reads
//! every blob with its sha256, the old database is still there, and a plan changes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use provision_sandbox::fixture::{self, Hosts};

const DB_PASSWORD: &str = "pg-Bl0bs-migrate-pw-of-the-test";
const BLOBS: usize = 50;
const DIR: &str = "/srv/blobtest";
const CLIENT: &str = "/srv/www/site/current/bin/client1";

/// Commits BLOBS blobs of different sizes through the client's own configuration (`bin/client1
/// run`) and writes their sha256 to a manifest.
const SEED_PY: &str = r#"
import hashlib, json
import transaction
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob

root = app._p_jar.root()
blobs = root["test_blobs"] = PersistentMapping()
manifest = {}
for i in range(COUNT):
    data = (("blob %d " % i) * (50 + 97 * i)).encode()
    blob = Blob()
    with blob.open("w") as f:
        f.write(data)
    blobs[str(i)] = blob
    manifest[str(i)] = hashlib.sha256(data).hexdigest()
    if i % 20 == 19:
        transaction.commit()
transaction.commit()
with open("/srv/blobtest/manifest.json", "w") as f:
    json.dump(manifest, f)
"#;

/// Reads every blob through the client's configuration; prints `read N` when each sha256
/// matches the manifest.
const READ_PY: &str = r#"
import hashlib, json
manifest = json.load(open("/srv/blobtest/manifest.json"))
blobs = app._p_jar.root()["test_blobs"]
bad = []
for key, expected in sorted(manifest.items()):
    with blobs[key].open("r") as f:
        if hashlib.sha256(f.read()).hexdigest() != expected:
            bad.append(key)
if bad:
    raise SystemExit("wrong sha256: %s" % bad)
print("read %d" % len(manifest))
"#;

/// The Zope example app with RelStorage in its client (`cfg/relstorage.cfg`, which
/// `plone_instances.relstorage.config` names), as a git repository beside the stack.
fn zope_app_with_relstorage(dir: &Path) -> PathBuf {
    zope_example_repository(
        dir,
        &[(
            "cfg/relstorage.cfg",
            "# RelStorage with psycopg2 for the clients; its dependencies as pip picks them.\n\
             [buildout]\nallow-picked-versions = true\n\n\
             [versions]\nRelStorage = 4.3.0\n\n\
             [client1]\neggs += RelStorage[postgresql]\nzeo-client = off\n",
        )],
        "the Zope example with RelStorage",
    )
}

fn stack(hosts: &Hosts) -> String {
    let address = |name: &str| hosts.host(name).address().to_string();
    format!(
        "[hosts.db1]\naddress = \"{}\"\nlayers = [\"postgres\", \"shared_blobs\"]\n\n\
         [hosts.app1]\naddress = \"{}\"\nlayers = [\"plone_instances\"]\n\n\
         [apps.site]\nrepository = \"site\"\n\n\
         # Blobs in the database until `blobs migrate` moves them.\n\
         [attributes.plone_instances]\nenable_relstorage = true\ninstance_count = 1\n\
         site_id = \"\"\n\n\
         [attributes.plone_instances.relstorage]\nenable_cache = false\n\n\
         [attributes.haproxy]\nhealth_check_url = \"/\"\n",
        address("db1"),
        address("app1"),
    )
}

/// One SQL answer from database `db` on db1.
fn psql(hosts: &Hosts, db: &str, sql: &str) -> String {
    sh(
        hosts,
        "db1",
        &format!("runuser -u postgres -- psql -X -d {db} -tAc \"{sql}\""),
    )
    .trim()
    .to_string()
}

/// The blobs stored in database `db` (distinct oid and tid of blob_chunk).
fn blobs_in(hosts: &Hosts, db: &str) -> String {
    psql(
        hosts,
        db,
        "SELECT count(DISTINCT (zoid, tid)) FROM blob_chunk",
    )
}

/// The database the stack file names now.
fn database_of(dir: &Path) -> (String, toml::Value) {
    let text = std::fs::read_to_string(dir.join("stack.toml")).unwrap();
    let doc: toml::Value = toml::from_str(&text).unwrap();
    let name = doc["attributes"]["plone_instances"]["relstorage"]["db"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no database name in the stack file:\n{text}"))
        .to_string();
    (name, doc)
}

fn read_all(hosts: &Hosts) {
    let out = sh(
        hosts,
        "app1",
        &format!("runuser -u plone -- {CLIENT} run {DIR}/read.py 2>&1 | tail -n 1"),
    );
    assert_eq!(out.trim(), format!("read {BLOBS}"), "{out}");
}

fn plan_changes_nothing(dir: &Path, secrets: &[(&str, &str)]) {
    let out = provision(dir, &["plan", "--sandbox", "--json"], secrets);
    ok(&out);
    let plan = json(&out);
    for host in plan["hosts"].as_array().unwrap() {
        assert_eq!(host["outcome"]["status"], "unchanged", "{plan}");
    }
}

fn migrate(dir: &Path, to: &str, secrets: &[(&str, &str)]) -> String {
    let started = Instant::now();
    let out = provision(dir, &["blobs", "migrate", "--to", to, "--sandbox"], secrets);
    ok(&out);
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!shown.contains(DB_PASSWORD), "the password was printed");
    eprintln!(
        "blobs migrate --to {to} in {:.0} s:\n{}",
        started.elapsed().as_secs_f64(),
        text(&out.stdout)
    );
    text(&out.stdout)
}

/// Writes a new object through the client every 100 ms until stopped; the names of the
/// writes the client accepted (a refused or failed one is the write freeze).
fn writer(address: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Vec<String>, usize)> {
    std::thread::spawn(move || {
        let (mut accepted, mut refused) = (Vec::new(), 0);
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) && n < 5000 {
            n += 1;
            let name = format!("written-{n}");
            let (status, _) = zope_http(&address, "PUT", &format!("/{name}"), name.as_bytes());
            if (200..300).contains(&status) {
                accepted.push(name);
            } else {
                refused += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (accepted, refused)
    })
}

/// Every write the client accepted is there, with its content.
fn all_written(address: &str, accepted: &[String]) {
    for name in accepted {
        let (status, body) = zope_http(address, "GET", &format!("/{name}"), b"");
        assert_eq!(status, 200, "{name} was accepted, then lost");
        assert_eq!(text(&body), *name);
    }
}

#[test]
fn relstorage_refuses_s3_and_knows_where_its_blobs_are() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stack.toml"),
        "[stack]\nname = \"site\"\n\
         [hosts.db1]\naddress = \"192.0.2.20\"\nlayers = [\"postgres\", \"shared_blobs\"]\n\
         [hosts.app1]\naddress = \"192.0.2.11\"\nlayers = [\"plone_instances\"]\n\
         [apps.site]\nrepository = \"site\"\n\
         [attributes.plone_instances]\nenable_relstorage = true\n\
         [attributes.plone_instances.relstorage]\nenable_cache = false\n\
         [[attributes.s3fs_fuse.mounts]]\nbucket = \"b\"\npath = \"/mnt/s3\"\n",
    )
    .unwrap();
    let secrets = [(
        "PROVISION_SECRET_PLONE_INSTANCES_RELSTORAGE_DB_PASSWORD",
        DB_PASSWORD,
    )];
    let out = provision(dir.path(), &["blobs", "migrate", "--to", "s3"], &secrets);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("shares blobs only over NFS or GlusterFS"),
        "{}",
        text(&out.stderr)
    );
    let out = provision(
        dir.path(),
        &["blobs", "migrate", "--to", "database"],
        &secrets,
    );
    ok(&out);
    assert!(
        text(&out.stdout).contains("already in the database; nothing to do"),
        "{}",
        text(&out.stdout)
    );
    // From one shared mount to another: through the database.
    let stack = std::fs::read_to_string(dir.path().join("stack.toml")).unwrap();
    std::fs::write(
        dir.path().join("stack.toml"),
        stack.replace(
            "enable_relstorage = true\n",
            "enable_relstorage = true\ngluster_blobs = true\n",
        ),
    )
    .unwrap();
    let out = provision(dir.path(), &["blobs", "migrate", "--to", "nfs"], &secrets);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Move them into the database first (--to local)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn relstorage_blobs_move_from_the_database_to_glusterfs_and_back() {
    let Some(hosts) = fixture::named_blocking(&["db1", "app1"]) else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    zope_app_with_relstorage(dir.path());
    let secrets = [(
        "PROVISION_SECRET_PLONE_INSTANCES_RELSTORAGE_DB_PASSWORD",
        DB_PASSWORD,
    )];
    write_stack(dir.path(), &hosts, &stack(&hosts));
    ok(&provision(dir.path(), &["up", "--sandbox"], &secrets));
    eprintln!("up in {:.0} s", started.elapsed().as_secs_f64());

    // 50 blobs through the client, into the database.
    sh(
        &hosts,
        "app1",
        &format!(
            "set -e\nmkdir -p {DIR} && chown plone: {DIR}\n\
             cat > {DIR}/seed.py <<'PY'\n{}PY\ncat > {DIR}/read.py <<'PY'\n{READ_PY}PY\n\
             runuser -u plone -- {CLIENT} run {DIR}/seed.py",
            SEED_PY.replace("COUNT", &BLOBS.to_string())
        ),
    );
    assert_eq!(blobs_in(&hosts, "zodb"), BLOBS.to_string());
    read_all(&hosts);

    // Out of the database, into the GlusterFS volume, while a client of the site writes.
    let app1 = format!("{}:8081", hosts.host("app1").address());
    let (status, body) = zope_http(&app1, "PUT", "/written-0", b"written-0");
    assert!(
        (200..300).contains(&status),
        "PUT on app1: {status} {}",
        text(&body)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(app1.clone(), stop.clone());
    let report = migrate(dir.path(), "glusterfs", &secrets);
    stop.store(true, Ordering::Relaxed);
    let (accepted, refused) = writes.join().unwrap();
    eprintln!(
        "{} writes accepted during the migration, {refused} refused (the freeze)",
        accepted.len()
    );
    assert!(!accepted.is_empty());
    all_written(&app1, &accepted);
    all_written(&app1, &["written-0".to_string()]);
    assert!(report.contains("write freeze of"), "{report}");
    assert!(report.contains(&format!("moved {BLOBS} blobs")), "{report}");
    let (first, doc) = database_of(dir.path());
    assert!(first.starts_with("zodb_"), "{first}");
    assert_eq!(
        doc["attributes"]["plone_instances"]["gluster_blobs"].as_bool(),
        Some(true)
    );
    assert!(
        report.contains("The old database zodb on host db1 is kept"),
        "{report}"
    );
    assert_eq!(
        sh(&hosts, "app1", "findmnt -n -o FSTYPE /mnt/shared/blobs").trim(),
        "fuse.glusterfs"
    );
    assert_eq!(
        sh(
            &hosts,
            "app1",
            "readlink /srv/www/site/shared/var/blobstorage"
        )
        .trim(),
        "/mnt/shared/blobs/blobstorage"
    );
    assert_eq!(
        sh(
            &hosts,
            "app1",
            "find /mnt/shared/blobs/blobstorage -name '*.blob' | wc -l"
        )
        .trim(),
        BLOBS.to_string()
    );
    // The new database holds no blob; the old one is untouched.
    assert_eq!(blobs_in(&hosts, &first), "0");
    assert_eq!(blobs_in(&hosts, "zodb"), BLOBS.to_string());
    read_all(&hosts);
    plan_changes_nothing(dir.path(), &secrets);

    // And back into a database (`local`, alias `database`).
    let report = migrate(dir.path(), "database", &secrets);
    assert!(report.contains("write freeze of"), "{report}");
    let (second, doc) = database_of(dir.path());
    assert!(second.starts_with("zodb_") && second != first, "{second}");
    assert_eq!(
        doc["attributes"]["plone_instances"].get("gluster_blobs"),
        None
    );
    assert_eq!(blobs_in(&hosts, &second), BLOBS.to_string());
    assert_eq!(
        sh(
            &hosts,
            "app1",
            "test -d /srv/www/site/shared/var/blobstorage && \
             ! test -L /srv/www/site/shared/var/blobstorage && echo directory"
        )
        .trim(),
        "directory"
    );
    read_all(&hosts);
    plan_changes_nothing(dir.path(), &secrets);

    // Every database is still there.
    let databases = psql(
        &hosts,
        "postgres",
        "SELECT string_agg(datname, ' ' ORDER BY datname) FROM pg_database WHERE datname LIKE 'zodb%'",
    );
    assert_eq!(databases, format!("zodb {first} {second}"));
    eprintln!(
        "RelStorage blobs test done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
