//! A real ZEO server from the rendered `zeo.conf`, real clients from the rendered
//! `<zeoclient>` sections, and the rendered pack command, backup and restore scripts.

mod common;

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use provision_core::phase::Phase;
use provision_zeo::client::{self, ZeoClientSettings};
use provision_zeo::zeoserver::{self, ZeoServerSettings};

/// A zope.conf-like `<zodb>` wrapper around a rendered client section.
fn client_config(dir: &Path, name: &str, section: &str) -> std::path::PathBuf {
    write_file(
        &dir.join(format!("{name}.conf")),
        &format!("<zodb>\n{section}</zodb>\n"),
    )
}

#[test]
fn zeo_round_trip_pack_backup_and_restore() {
    if let Some(program) = missing_program(&["/usr/bin/python3", "flock", "rsync", "find", "ip"]) {
        return skip(&format!(
            "{program} is missing (Debian packages: python3-venv, util-linux, rsync, findutils, iproute2)"
        ));
    }
    let templates = templates();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let venv = Path::new(CACHE_DIR).join("venv-zeo");

    let mut settings = ZeoServerSettings::new("127.0.0.1".parse().unwrap());
    settings.port = free_port();
    settings.venv = venv.to_str().unwrap().to_string();
    settings.config_dir = root.join("etc").to_str().unwrap().to_string();
    settings.filestorage_dir = private_dir(&root.join("filestorage"))
        .to_str()
        .unwrap()
        .to_string();
    settings.blob_dir = private_dir(&root.join("blobstorage"))
        .to_str()
        .unwrap()
        .to_string();
    settings.log_dir = private_dir(&root.join("log")).to_str().unwrap().to_string();
    settings.backup_dir = private_dir(&root.join("backups"))
        .to_str()
        .unwrap()
        .to_string();
    settings.enable_backup = true;
    settings.backup_keep = 1;
    settings.pack_days = 0;

    let configure = zeoserver::resources(&settings, Phase::Configure, &templates).unwrap();
    if let Err(reason) = install_venv(&configure, &venv, root) {
        return skip(&reason);
    }
    let python = venv.join("bin/python");

    // The server, from the rendered zeo.conf.
    let zeo_conf = write_file(
        Path::new(&settings.config_path()),
        &zeoserver::zeo_conf(&settings, &templates).unwrap(),
    );
    assert_eq!(
        file_content(&configure, "/zeo.conf"),
        fs::read_to_string(&zeo_conf).unwrap()
    );
    // The check that guards the live file accepts it, and refuses a broken one.
    let validate = |path: &Path| {
        Command::new("sh")
            .arg("-c")
            .arg(zeoserver::validate_command(&settings).replace("{}", path.to_str().unwrap()))
            .output()
            .unwrap()
    };
    assert!(validate(&zeo_conf).status.success());
    let broken = write_file(
        &root.join("broken.conf"),
        &fs::read_to_string(&zeo_conf)
            .unwrap()
            .replace("address", "adress"),
    );
    let refused = validate(&broken);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("adress"));
    let log = root.join("runzeo.out");
    let mut server = ChildGuard(
        Command::new(venv.join("bin/runzeo"))
            .arg("-C")
            .arg(&zeo_conf)
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                fs::File::create(root.join("runzeo.err")).unwrap(),
            ))
            .spawn()
            .expect("runzeo starts"),
        "runzeo",
    );
    wait_for_port(settings.port, &mut server, &root.join("runzeo.err"));

    // Bound to 127.0.0.1: the machine's other address refuses.
    if let Some(other) = other_local_address() {
        let refused = TcpStream::connect_timeout(
            &SocketAddr::from((other, settings.port)),
            Duration::from_secs(2),
        );
        assert!(
            refused.is_err(),
            "ZEO answered on {other}, not only on 127.0.0.1"
        );
    }

    // Two client processes with their own blob caches and persistent caches.
    let mut zeo_client = ZeoClientSettings::new(
        vec![settings.address()],
        root.join("client-blobs").to_str().unwrap(),
        private_dir(&root.join("client-var")).to_str().unwrap(),
    );
    zeo_client.shared_blob_dir = false;
    let client1 = client_config(
        root,
        "client1",
        &client::zeoclient_section(&zeo_client, 1, &templates).unwrap(),
    );
    zeo_client.blob_dir = root.join("client2-blobs").to_str().unwrap().to_string();
    let client2 = client_config(
        root,
        "client2",
        &client::zeoclient_section(&zeo_client, 2, &templates).unwrap(),
    );
    client(&python, &client1, &["write", "first"]);
    assert_eq!(client(&python, &client2, &["read"]), expected_read("first"));
    assert!(
        root.join(format!(
            "client-var/{}-1.zec",
            client::cache_name("1", &zeo_client.servers)
        ))
        .exists(),
        "client 1 has its persistent cache, named after its number and server"
    );

    // A client that shares the server's blob directory reads the blob from disk.
    let mut shared = ZeoClientSettings::new(
        vec![settings.address()],
        &settings.blob_dir,
        root.join("client-var").to_str().unwrap(),
    );
    shared.persistent_cache = false;
    let client3 = client_config(
        root,
        "client3",
        &client::zeoclient_section(&shared, 3, &templates).unwrap(),
    );
    assert_eq!(client(&python, &client3, &["read"]), expected_read("first"));

    // A second revision of the blob; the rendered pack (0 days) removes the first.
    client(&python, &client1, &["write", "second"]);
    let server_blobs = Path::new(&settings.blob_dir);
    assert_eq!(
        count_blobs(server_blobs),
        2,
        "two blob revisions before the pack"
    );
    run(Command::new("sh").args(["-c", &zeoserver::pack_command(&settings)]));
    assert_eq!(
        count_blobs(server_blobs),
        1,
        "the pack removed the old blob revision"
    );
    assert_eq!(
        client(&python, &client2, &["read"]),
        expected_read("second")
    );

    // Backups: a full one, then another full one (keep 1 removes the first), then an
    // incremental one (a full one on Sundays).
    let backup = write_file(
        &root.join("provision-zeo-backup"),
        &file_content(&configure, "/provision-zeo-backup"),
    );
    let restore = write_file(
        &root.join("provision-zeo-restore"),
        &file_content(&configure, "/provision-zeo-restore"),
    );
    let backups = Path::new(&settings.backup_dir);
    let entries = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(backups.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    run(Command::new("bash").arg(&backup).arg("--full"));
    let first_full = entries("filestorage");
    assert!(
        first_full.iter().any(|n| n.ends_with(".fsz")),
        "{first_full:?}"
    );
    assert_eq!(entries("blobstorage").len(), 1);
    // repozo names backups by the second.
    std::thread::sleep(Duration::from_millis(1100));
    client(&python, &client1, &["write", "third"]);
    run(Command::new("bash").arg(&backup).arg("--full"));
    let second_full = entries("filestorage");
    assert!(
        !second_full.contains(&first_full[0]),
        "keep=1 removed the older full backup: {second_full:?}"
    );
    assert_eq!(entries("blobstorage").len(), 1, "and its blob snapshot");
    std::thread::sleep(Duration::from_millis(1100));
    client(&python, &client1, &["write", "fourth"]);
    run(Command::new("bash").arg(&backup));
    assert!(
        entries("filestorage")
            .iter()
            .any(|n| n.ends_with(".deltafsz"))
            || entries("filestorage")
                .iter()
                .filter(|n| n.ends_with(".fsz"))
                .count()
                == 1,
        "an incremental backup (or, on Sundays, a full one): {:?}",
        entries("filestorage")
    );

    // Restore into a new place and read the newest state back with a plain FileStorage.
    let restored = root.join("restored");
    let restored_fs = restored.join("Data.fs");
    let restored_blobs = restored.join("blobstorage");
    let args = [
        "--data-fs",
        restored_fs.to_str().unwrap(),
        "--blob-dir",
        restored_blobs.to_str().unwrap(),
    ];
    run(Command::new("bash").arg(&restore).args(args));
    assert!(
        restored.join("Data.fs.index").exists(),
        "repozo restored the index"
    );
    let filestorage = client_config(
        root,
        "restored",
        &format!(
            "<filestorage>\n  path {}\n  blob-dir {}\n</filestorage>\n",
            restored_fs.display(),
            restored_blobs.display()
        ),
    );
    assert_eq!(
        client(&python, &filestorage, &["read"]),
        expected_read("fourth")
    );

    // An existing Data.fs is only replaced with --force.
    let again = Command::new("bash")
        .arg(&restore)
        .args(args)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    run(Command::new("bash").arg(&restore).args(args).arg("--force"));

    // The server logged to the rendered log file.
    assert!(Path::new(&settings.log_file()).exists());
    drop(server);
}
