//! Blob stores end to end on real sandbox hosts: a ZEO server with 1,000 blobs moves them from
//! its local directory to an S3 bucket (moto on the sandbox bridge, mounted with s3fs), then
//! to a GlusterFS volume replicated across two hosts, while a real ZODB client reads and
//! checks every blob in a loop; the first migration is killed half way and resumed.
//!
//! The reader is a ZEO client on the server's host that reads the blob files through the
//! shared blob directory, as Plone clients sharing the store do.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use provision_sandbox::fixture::{self, Hosts};

const DIR: &str = "/srv/blobtest";
const PYTHON: &str = "/opt/provision/zeo/bin/python";
const BLOBS: usize = 1000;

/// Writes BLOBS blobs of different sizes through ZEO and a manifest of their sha256.
const SEED_PY: &str = r#"
import hashlib, json, sys
import transaction, ZEO
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob

count = int(sys.argv[1])
db = ZEO.DB(("ADDRESS", 8001), blob_dir="/var/lib/zeo/blobstorage", shared_blob_dir=True)
root = db.open().root()
root["blobs"] = PersistentMapping()
manifest = {}
for i in range(count):
    data = (("blob %d " % i) * (1 + i % 97)).encode()
    blob = Blob()
    with blob.open("w") as f:
        f.write(data)
    root["blobs"][str(i)] = blob
    manifest[str(i)] = hashlib.sha256(data).hexdigest()
    if i % 100 == 99:
        transaction.commit()
transaction.commit()
json.dump(manifest, open("/srv/blobtest/manifest.json", "w"))
db.close()
"#;

/// Reads every blob again and again until /srv/blobtest/stop exists; counts reads and
/// failures (a missing file or a wrong sha256) in stats.json.
const READER_PY: &str = r#"
import hashlib, json, os, time, traceback
import ZEO

manifest = json.load(open("/srv/blobtest/manifest.json"))
db = ZEO.DB(("ADDRESS", 8001), blob_dir="/var/lib/zeo/blobstorage", shared_blob_dir=True)
connection = db.open()
reads, failures, errors = 0, 0, []
def save():
    with open("/srv/blobtest/stats.tmp", "w") as f:
        json.dump({"reads": reads, "failures": failures, "errors": errors[:5]}, f)
    os.rename("/srv/blobtest/stats.tmp", "/srv/blobtest/stats.json")
while not os.path.exists("/srv/blobtest/stop"):
    connection.sync()
    blobs = connection.root()["blobs"]
    for key, expected in manifest.items():
        try:
            with blobs[key].open("r") as f:
                if hashlib.sha256(f.read()).hexdigest() != expected:
                    raise ValueError("blob %s: wrong sha256" % key)
        except Exception:
            failures += 1
            errors.append(traceback.format_exc(limit=2))
        reads += 1
        if reads % 200 == 0:
            save()
        # At most ~250 reads a second: a whole pass still takes seconds, and the loop leaves
        # the CPU to the migration (a tight loop took a core of two for the whole test).
        time.sleep(0.004)
save()
"#;

/// Commits one more blob through ZEO.
const WRITE_PY: &str = r#"
import transaction, ZEO
from ZODB.blob import Blob

db = ZEO.DB(("ADDRESS", 8001), blob_dir="/var/lib/zeo/blobstorage", shared_blob_dir=True)
root = db.open().root()
blob = Blob()
with blob.open("w") as f:
    f.write(b"written after the move")
root["after"] = blob
transaction.commit()
db.close()
"#;

fn stack(hosts: &Hosts, endpoint: &str) -> String {
    let address = |name: &str| hosts.host(name).address().to_string();
    format!(
        "[hosts.db1]\naddress = \"{}\"\nlayers = [\"zeoserver\", \"shared_blobs\"]\n\n\
         [hosts.db2]\naddress = \"{}\"\nlayers = [\"shared_blobs\"]\n\n\
         # The bucket the blobs may move to.\n\
         [[attributes.s3fs_fuse.mounts]]\nbucket = \"site-blobs\"\npath = \"/mnt/s3/blobs\"\nurl = \"{endpoint}\"\n",
        address("db1"),
        address("db2"),
    )
}

#[test]
fn blobs_move_local_to_s3_to_glusterfs_while_a_client_reads_them() {
    let Some(moto) = S3Server::program() else {
        return;
    };
    let Some(hosts) = fixture::named_blocking(&["db1", "db2"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&moto, hosts.inventory().gateway, dir.path());
    let secrets = [
        ("PROVISION_SECRET_S3FS_FUSE_S3_KEY", S3_KEY),
        ("PROVISION_SECRET_S3FS_FUSE_S3_SECRET", S3_SECRET),
    ];
    write_stack(dir.path(), &hosts, &stack(&hosts, &s3.endpoint));
    ok(&provision(dir.path(), &["up", "--sandbox"], &secrets));

    // 1,000 blobs in the ZEO server's own directory, and a reader that checks them.
    let db1 = hosts.host("db1").address().to_string();
    let python = |code: &str| code.replace("ADDRESS", &db1);
    sh(
        &hosts,
        "db1",
        &format!(
            "mkdir -p {DIR} && chown zeo: {DIR}\n\
             cat > {DIR}/seed.py <<'PY'\n{}PY\ncat > {DIR}/reader.py <<'PY'\n{}PY\n\
             runuser -u zeo -- {PYTHON} {DIR}/seed.py {BLOBS}\n\
             runuser -u zeo -- sh -c 'nohup {PYTHON} {DIR}/reader.py > {DIR}/reader.log 2>&1 &'",
            python(SEED_PY),
            python(READER_PY)
        ),
    );
    let stats = || -> serde_json::Value {
        let out = hosts.ssh(hosts.host("db1"), &format!("cat {DIR}/stats.json"));
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    wait_for("the reader reads", Duration::from_secs(120), || {
        stats()["reads"].as_u64().unwrap_or(0) >= BLOBS as u64
    });

    // Killed once it has copied a batch, the migration leaves the stack file as it was.
    let before = std::fs::read_to_string(dir.path().join("stack.toml")).unwrap();
    let log = dir.path().join("migrate.err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(["blobs", "migrate", "--to", "s3", "--sandbox"])
        .current_dir(dir.path())
        .envs(secrets)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for("the first blobs copied", Duration::from_secs(600), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "blobs migrate ended ({status}) before it was killed:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("copied 200/"))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stack.toml")).unwrap(),
        before,
        "a migration killed before its switch changed the stack file"
    );

    let resumed = provision(
        dir.path(),
        &["blobs", "migrate", "--to", "s3", "--sandbox"],
        &secrets,
    );
    ok(&resumed);
    let report = text(&resumed.stdout);
    let already: usize = report
        .split(" were already there")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume count in the report:\n{report}"));
    assert!(
        already >= 200,
        "the resumed run copied everything again:\n{report}"
    );
    // The blobs and ZODB's `.layout` marker.
    assert!(
        report.contains(&format!("moved {} blob files", BLOBS + 1)),
        "{report}"
    );
    let stack_now = std::fs::read_to_string(dir.path().join("stack.toml")).unwrap();
    assert!(
        stack_now.contains("blob_dir = \"/mnt/s3/blobs/blobstorage\"")
            && stack_now.contains("# The bucket the blobs may move to."),
        "the stack file should keep its comments and name the new store:\n{stack_now}"
    );
    assert_eq!(
        sh(&hosts, "db1", "readlink /var/lib/zeo/blobstorage").trim(),
        "/mnt/s3/blobs/blobstorage"
    );
    let objects = s3.keys("site-blobs", "blobstorage/");
    assert!(
        objects.iter().filter(|k| k.ends_with(".blob")).count() >= BLOBS,
        "the bucket holds {} objects",
        objects.len()
    );
    // The keys file is root's alone and never printed.
    assert_eq!(
        sh(
            &hosts,
            "db1",
            "stat -c '%a %U' /etc/provision/s3fs/site-blobs.passwd"
        )
        .trim(),
        "600 root"
    );
    let shown = format!("{}{}", report, text(&resumed.stderr));
    assert!(!shown.contains(S3_SECRET), "{shown}");

    // On to GlusterFS, replicated on db1 and db2.
    let to_gluster = provision(
        dir.path(),
        &["blobs", "migrate", "--to", "glusterfs", "--sandbox"],
        &secrets,
    );
    ok(&to_gluster);
    assert_eq!(
        sh(&hosts, "db1", "readlink /var/lib/zeo/blobstorage").trim(),
        "/mnt/shared/blobs/blobstorage"
    );
    let replicated = sh(
        &hosts,
        "db2",
        "find /srv/gluster-exports/brick/blobstorage -name '*.blob' | wc -l",
    );
    assert_eq!(replicated.trim(), BLOBS.to_string(), "db2's brick");

    // The server writes new blobs into the new store (it was not restarted).
    sh(
        &hosts,
        "db1",
        &format!(
            "cat > {DIR}/write.py <<'PY'\n{}PY\nrunuser -u zeo -- {PYTHON} {DIR}/write.py",
            python(WRITE_PY)
        ),
    );
    assert_eq!(
        sh(
            &hosts,
            "db2",
            "find /srv/gluster-exports/brick/blobstorage -name '*.blob' | wc -l"
        )
        .trim(),
        (BLOBS + 1).to_string(),
        "the new blob on db2's brick"
    );

    // Let the reader make one more full pass on the new store, then stop it.
    let reads_now = stats()["reads"].as_u64().unwrap();
    wait_for("a full pass on GlusterFS", Duration::from_secs(300), || {
        stats()["reads"].as_u64().unwrap_or(0) >= reads_now + BLOBS as u64
    });
    sh(&hosts, "db1", &format!("touch {DIR}/stop"));
    let stats = stats();
    assert_eq!(
        stats["failures"], 0,
        "reads failed during the moves: {stats}"
    );

    // The stack converged: a plan changes nothing.
    let plan = provision(dir.path(), &["plan", "--sandbox", "--json"], &secrets);
    ok(&plan);
    let planned = json(&plan);
    for host in planned["hosts"].as_array().unwrap() {
        assert_eq!(host["changes"], serde_json::json!([]), "{host}");
    }
}

/// A Zope object whose content is one ZODB blob: `PUT` (Manager) replaces it, `GET` serves it.
/// Plain Zope has no blob-backed file type (Plone's come from plone.namedfile), so the test's
/// copy of the Zope example app carries this one as a develop egg.
const BLOBFILE_PY: &str = r#""""A Zope object whose content is one ZODB blob."""
from OFS.SimpleItem import SimpleItem
from ZODB.blob import Blob


class BlobFile(SimpleItem):
    """A file kept in a ZODB blob."""

    meta_type = "Blob File"
    index_html__roles__ = None
    PUT__roles__ = ("Manager",)

    def __init__(self, id):
        self.id = id
        self.data = Blob()

    def index_html(self, REQUEST=None, RESPONSE=None):
        """The file's bytes."""
        with self.data.open("r") as f:
            body = f.read()
        if RESPONSE is not None:
            RESPONSE.setHeader("Content-Type", "application/octet-stream")
        return body

    def PUT(self, REQUEST, RESPONSE):
        """Replaces the file's bytes with the request body."""
        body = REQUEST["BODYFILE"]
        body.seek(0)
        with self.data.open("w") as f:
            f.write(body.read())
        RESPONSE.setStatus(204)
        return ""
"#;

/// The test's copy of the Zope example, with the blob file egg, as a git repository.
fn zope_app_with_blob_files(dir: &std::path::Path) -> std::path::PathBuf {
    zope_example_repository(
        dir,
        &[
            ("src/blobfile/blobfile.py", BLOBFILE_PY),
            (
                "src/blobfile/setup.py",
                "from setuptools import setup\n\n\
                 setup(name=\"blobfile\", version=\"1.0\", py_modules=[\"blobfile\"])\n",
            ),
            (
                "cfg/blobfile.cfg",
                "[buildout]\nextends = base.cfg\ndevelop = src/blobfile\n\n\
                 [client1]\neggs += blobfile\n",
            ),
        ],
        "the Zope example with blob files",
    )
}

/// The client at `address` serves `expected` at `path` within 10 s. A write through another
/// ZEO client reaches this one as an invalidation a moment after its commit (ZEO clients do
/// not ask the server on each transaction), so the first read may still see the old object.
fn serves_soon(host: &str, address: &str, path: &str, expected: &[u8]) {
    let mut last = (0, Vec::new());
    let served = eventually(Duration::from_secs(10), || {
        last = zope_http(address, "GET", path, b"");
        last.0 == 200 && last.1 == expected
    });
    let (status, body) = last;
    assert!(
        served,
        "{host} served {} bytes with status {status}, not the {} written: {}",
        body.len(),
        expected.len(),
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
}

#[test]
fn a_blob_uploaded_through_a_client_on_one_host_is_served_by_a_client_on_another_via_s3() {
    let Some(moto) = S3Server::program() else {
        return;
    };
    let Some(hosts) = fixture::named_blocking(&["db1", "app1", "app2"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&moto, hosts.inventory().gateway, dir.path());
    zope_app_with_blob_files(dir.path());
    let secrets = [
        ("PROVISION_SECRET_S3FS_FUSE_S3_KEY", S3_KEY),
        ("PROVISION_SECRET_S3FS_FUSE_S3_SECRET", S3_SECRET),
    ];
    let address = |name: &str| hosts.host(name).address().to_string();
    write_stack(
        dir.path(),
        &hosts,
        &format!(
            "[hosts.db1]\naddress = \"{}\"\nlayers = [\"zeoserver\"]\n\n\
             [hosts.app1]\naddress = \"{}\"\nlayers = [\"plone_instances\"]\n\n\
             [hosts.app2]\naddress = \"{}\"\nlayers = [\"plone_instances\"]\n\n\
             [apps.site]\nrepository = \"site\"\n\n\
             [attributes.plone_instances]\ninstance_count = 1\nshared_blobs = true\n\
             base_config = \"cfg/blobfile.cfg\"\nsite_id = \"\"\n\n\
             [attributes.haproxy]\nhealth_check_url = \"/\"\n\n\
             [attributes.plone_blobs]\nblob_dir = \"/mnt/s3/blobs/blobstorage\"\n\n\
             [[attributes.s3fs_fuse.mounts]]\nbucket = \"site-blobs\"\npath = \"/mnt/s3/blobs\"\n\
             url = \"{}\"\n",
            address("db1"),
            address("app1"),
            address("app2"),
            s3.endpoint
        ),
    );
    let up = provision(dir.path(), &["up", "--sandbox"], &secrets);
    ok(&up);
    for host in ["db1", "app1", "app2"] {
        assert_eq!(
            sh(&hosts, host, "findmnt -n -o FSTYPE /mnt/s3/blobs").trim(),
            "fuse.s3fs",
            "{host}"
        );
    }

    // The object, made with the client's own configuration (its service stopped meanwhile:
    // one process per persistent ZEO cache).
    sh(
        &hosts,
        "app1",
        "printf '%s\\n' 'import transaction' 'from blobfile import BlobFile' \
         'app._setObject(\"shared-file\", BlobFile(\"shared-file\"))' 'transaction.commit()' \
         > /tmp/create.py && chmod 644 /tmp/create.py\n\
         systemctl stop plone-site@client1\n\
         runuser -u plone -- /srv/www/site/current/bin/client1 run /tmp/create.py\n\
         systemctl start plone-site@client1",
    );
    let app1 = format!("{}:8081", address("app1"));
    let app2 = format!("{}:8081", address("app2"));
    wait_for("client1 on app1 answers", Duration::from_secs(120), || {
        std::net::TcpStream::connect(&app1).is_ok()
    });

    // 300 KB through app1's client, served by app2's.
    let content: Vec<u8> = (0..300_000u32)
        .map(|i| b"provision blob "[(i % 15) as usize])
        .collect();
    let (status, body) = zope_http(&app1, "PUT", "/shared-file", &content);
    assert!(
        status == 204 || status == 200,
        "PUT on app1: {status} {}",
        String::from_utf8_lossy(&body)
    );
    serves_soon("app2", &app2, "/shared-file", &content);

    // The blob lives in the bucket, and the keys file is root's alone.
    let objects = s3.keys("site-blobs", "blobstorage/");
    assert!(
        objects.iter().any(|k| k.ends_with(".blob")),
        "no blob in the bucket: {objects:?}"
    );
    assert_eq!(
        sh(
            &hosts,
            "app2",
            "stat -c '%a %U' /etc/provision/s3fs/site-blobs.passwd"
        )
        .trim(),
        "600 root"
    );
    let shown = format!("{}{}", text(&up.stdout), text(&up.stderr));
    assert!(!shown.contains(S3_SECRET), "the secret key was printed");

    // To a directory on db1: the clients of app1 and app2 cannot share it, so they first
    // switch to blobs through ZEO, and keep serving the file.
    let to_local = provision(
        dir.path(),
        &["blobs", "migrate", "--to", "local", "--sandbox"],
        &secrets,
    );
    ok(&to_local);
    let stack_now = std::fs::read_to_string(dir.path().join("stack.toml")).unwrap();
    assert!(
        stack_now.contains("shared_blobs = false")
            && stack_now.contains("blob_dir = \"/var/lib/zeo/blobstorage-local\""),
        "{stack_now}"
    );
    assert_eq!(
        sh(&hosts, "db1", "readlink /var/lib/zeo/blobstorage").trim(),
        "/var/lib/zeo/blobstorage-local"
    );
    let (status, served) = zope_http(&app2, "GET", "/shared-file", b"");
    assert_eq!(status, 200);
    assert!(
        served == content,
        "app2 served {} other bytes",
        served.len()
    );
    // A new upload through ZEO, served by the other host.
    let second: Vec<u8> = content.iter().rev().copied().collect();
    let (status, _) = zope_http(&app2, "PUT", "/shared-file", &second);
    assert!(
        status == 204 || status == 200,
        "PUT on app2: {status}\n{}\n{}",
        sh(
            &hosts,
            "app2",
            "tail -n 40 /srv/www/site/shared/var/log/*.log || true"
        ),
        sh(
            &hosts,
            "db1",
            "tail -n 60 /var/log/zeo/zeoserver.log; ls -la /var/lib/zeo /var/lib/zeo/blobstorage-local; true"
        )
    );
    serves_soon("app1", &app1, "/shared-file", &second);

    // And back to the bucket: the clients share it again.
    let to_s3 = provision(
        dir.path(),
        &["blobs", "migrate", "--to", "s3", "--sandbox"],
        &secrets,
    );
    ok(&to_s3);
    let stack_now = std::fs::read_to_string(dir.path().join("stack.toml")).unwrap();
    assert!(stack_now.contains("shared_blobs = true"), "{stack_now}");
    assert_eq!(
        sh(
            &hosts,
            "app1",
            "readlink /srv/www/site/shared/var/blobstorage"
        )
        .trim(),
        "/mnt/s3/blobs/blobstorage"
    );
    let (status, served) = zope_http(&app1, "GET", "/shared-file", b"");
    assert_eq!(status, 200);
    assert!(served == second, "app1 served {} other bytes", served.len());
    let plan = provision(dir.path(), &["plan", "--sandbox", "--json"], &secrets);
    ok(&plan);
    for host in json(&plan)["hosts"].as_array().unwrap() {
        assert_eq!(host["changes"], serde_json::json!([]), "{host}");
    }
}
