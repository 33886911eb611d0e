//! A throwaway PostgreSQL cluster configured by the rendered `conf.d` file, `pg_hba.conf` and
//! setup script (role, database), RelStorage clients from the rendered `<relstorage>` section,
//! and the rendered pack config, pack commands and truncate script.
//!
//! The setup script restarts the cluster with `systemctl` on a host; this machine has no
//! systemd, so a `systemctl` on PATH here does that restart with `pg_ctl`. Everything else is
//! the real thing.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use provision_core::phase::Phase;
use provision_zeo::client::{self, DbConnection, RelStorageSettings};
use provision_zeo::packing::{self, PackerSettings};
use provision_zeo::postgres::{self, PostgresSettings};

const PASSWORD: &str = "s3cret 'with' $quotes\\";

/// The newest `/usr/lib/postgresql/VERSION/bin`.
fn postgres_bin() -> Option<(String, PathBuf)> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(v, bin)| (v.to_string(), bin))
}

/// The cluster: stopped (immediately) on drop.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
}

impl Cluster {
    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(args);
        command
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]).output();
    }
}

/// `psql` as postgres over the cluster's socket.
fn psql(socket: &Path, port: u16, database: &str, sql: &str) -> String {
    run(Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-q",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .arg("-h")
        .arg(socket)
        .arg("-p")
        .arg(port.to_string())
        .args(["-d", database, "-c", sql]))
    .trim()
    .to_string()
}

/// A password login over TCP as `role`: Ok, or the server's refusal.
fn login(port: u16, database: &str, role: &str) -> Result<(), String> {
    let output = Command::new("psql")
        .args(["-X", "-tA", "-c", "SELECT 1"])
        .arg(format!(
            "host=127.0.0.1 port={port} dbname={database} user={role} connect_timeout=5"
        ))
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn relstorage_on_postgresql_round_trip_and_pack() {
    let Some((version, bin)) = postgres_bin() else {
        return skip("PostgreSQL server binaries are missing (Debian package postgresql)");
    };
    if let Some(program) = missing_program(&[
        "/usr/bin/python3",
        "flock",
        "runuser",
        "psql",
        "pg_isready",
        "gcc",
        "pg_config",
    ]) {
        return skip(&format!(
            "{program} is missing (Debian packages: python3-venv python3-dev gcc libpq-dev postgresql util-linux)"
        ));
    }
    if run(Command::new("id").arg("-u")).trim() != "0" {
        return skip("the test runs PostgreSQL as the postgres user and needs root for runuser");
    }
    if !Command::new("id")
        .arg("postgres")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return skip("there is no postgres user (Debian package postgresql)");
    }
    let templates = templates();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    let venv = Path::new(CACHE_DIR).join("venv-relstorage");
    let port = free_port();

    // The storage as the instances see it: history-free, blobs in the database.
    let mut storage = RelStorageSettings::new(
        DbConnection::Params {
            host: "127.0.0.1".to_string(),
            port: Some(port),
            name: "zodb".to_string(),
            user: "plone".to_string(),
            password: Some(PASSWORD.to_string()),
        },
        root.join("client1-blobs").to_str().unwrap(),
    );
    storage.keep_history = false;
    storage.pack.pack_days = 0;
    storage.pack.two_stage_pack = true;
    storage.pack.truncate_refs = true;
    let packer = PackerSettings {
        venv: venv.to_str().unwrap().to_string(),
        config_dir: root.join("etc/relstorage").to_str().unwrap().to_string(),
        blob_cache_dir: private_dir(&root.join("pack-blobs"))
            .to_str()
            .unwrap()
            .to_string(),
        ..PackerSettings::default()
    };
    let packing = packing::resources(&storage, &packer, Phase::Configure, &templates).unwrap();
    if let Err(reason) = install_venv(&packing, &venv, root) {
        return skip(&format!(
            "{reason}\n(RelStorage[postgresql] builds psycopg2: it needs gcc, python3-dev, libpq-dev)"
        ));
    }
    let python = venv.join("bin/python");

    // A cluster as Debian makes one: peer for local postgres, started before our files exist.
    let pg = root.join("pg");
    fs::create_dir_all(&pg).unwrap();
    run(Command::new("chown").args(["postgres:postgres"]).arg(&pg));
    let data = pg.join("data");
    run(Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join("initdb"))
        .args([
            "-U",
            "postgres",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "-D",
        ])
        .arg(&data));
    let cluster = Cluster {
        bin: bin.clone(),
        data: data.clone(),
    };
    let pg_log = pg.join("log");
    run(&mut cluster.pg_ctl(&[
        "-w",
        "-l",
        pg_log.to_str().unwrap(),
        "-o",
        &format!("-p {port} -k {}", pg.display()),
        "start",
    ]));

    // The rendered config files, as on a host (conf.d is included by Debian's
    // postgresql.conf; initdb's is told to here).
    let settings = PostgresSettings {
        port,
        config_dir: root.join("etc/postgres").to_str().unwrap().to_string(),
        ..PostgresSettings::new(
            &version,
            "127.0.0.1".parse().unwrap(),
            vec!["127.0.0.1".parse().unwrap()],
            PASSWORD,
        )
    };
    let configure = postgres::resources(&settings, Phase::Configure, &templates).unwrap();
    let install_as_postgres = |path: &Path, content: &str| {
        write_file(path, content);
        run(Command::new("chown").arg("postgres:postgres").arg(path));
    };
    install_as_postgres(
        &data.join("conf.d/provision.conf"),
        &file_content(&configure, "/conf.d/provision.conf"),
    );
    run(Command::new("chown")
        .arg("postgres:postgres")
        .arg(data.join("conf.d")));
    let mut main_conf = fs::read_to_string(data.join("postgresql.conf")).unwrap();
    main_conf.push_str("include_dir = 'conf.d'\n");
    fs::write(data.join("postgresql.conf"), main_conf).unwrap();
    install_as_postgres(
        &data.join("pg_hba.conf"),
        &file_content(&configure, "/pg_hba.conf"),
    );
    install_as_postgres(
        Path::new(&settings.sql_path()),
        &file_content(&configure, "/zodb.sql"),
    );
    run(Command::new("chmod")
        .arg("0755")
        .arg(root.join("etc"))
        .arg(root.join("etc/postgres")));

    // The setup script: restarts (listen_addresses changed), then creates role and database.
    let shim = root.join("bin");
    write_file(
        &shim.join("systemctl"),
        &format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"restart {}\" ] || exit 3\nexec runuser -u postgres -- {} -D {} -w -l {} restart\n",
            settings.cluster_unit(),
            bin.join("pg_ctl").display(),
            data.display(),
            pg_log.display()
        ),
    );
    run(Command::new("chmod")
        .arg("0755")
        .arg(shim.join("systemctl")));
    let setup = write_file(
        &root.join("setup-zodb"),
        &file_content(&configure, "/setup-zodb"),
    );
    let path = format!(
        "{}:{}",
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run_setup = || {
        run(Command::new("sh")
            .arg(&setup)
            .env("PATH", &path)
            .env("PGHOST", &pg)
            .current_dir(root))
    };
    assert_eq!(
        psql(&pg, port, "postgres", "SHOW listen_addresses"),
        "localhost"
    );
    run_setup();
    assert_eq!(
        psql(&pg, port, "postgres", "SHOW listen_addresses"),
        "127.0.0.1"
    );
    // Again: a reload, and the SQL changes nothing.
    run_setup();
    assert_eq!(
        psql(
            &pg,
            port,
            "postgres",
            "SELECT datdba::regrole FROM pg_database WHERE datname = 'zodb'"
        ),
        "plone"
    );

    // pg_hba: the role gets only its database; another address gets nothing.
    login(port, "zodb", "plone").expect("plone logs in to zodb from an allowed address");
    let refused = login(port, "postgres", "plone").unwrap_err();
    assert!(refused.contains("no pg_hba.conf entry"), "{refused}");
    let mut elsewhere = settings.clone();
    elsewhere.allowed_clients = vec!["10.255.255.254".parse().unwrap()];
    install_as_postgres(
        &data.join("pg_hba.conf"),
        &postgres::hba(&elsewhere, &templates).unwrap(),
    );
    run(&mut cluster.pg_ctl(&["reload"]));
    // The postmaster reads pg_hba.conf when it handles the SIGHUP, after pg_ctl returned.
    let reloaded = std::time::Instant::now();
    let refused = loop {
        match login(port, "zodb", "plone") {
            Err(refused) => break refused,
            Ok(_) if reloaded.elapsed() < std::time::Duration::from_secs(10) => {
                std::thread::sleep(std::time::Duration::from_millis(200))
            }
            Ok(_) => panic!("plone still logs in 10 s after pg_hba.conf left its address out"),
        }
    };
    assert!(refused.contains("no pg_hba.conf entry"), "{refused}");
    install_as_postgres(
        &data.join("pg_hba.conf"),
        &file_content(&configure, "/pg_hba.conf"),
    );
    run_setup();

    // Two client processes, each with its own blob cache.
    let client_config = |name: &str, storage: &RelStorageSettings| {
        write_file(
            &root.join(format!("{name}.conf")),
            &format!(
                "{}\n<zodb>\n{}</zodb>\n",
                client::RELSTORAGE_IMPORT,
                client::relstorage_section(storage, &templates).unwrap()
            ),
        )
    };
    let client1 = client_config("client1", &storage);
    let mut second = storage.clone();
    second.blob_dir = root.join("client2-blobs").to_str().unwrap().to_string();
    let client2 = client_config("client2", &second);
    client(&python, &client1, &["write", "first"]);
    assert_eq!(client(&python, &client2, &["read"]), expected_read("first"));
    client(&python, &client1, &["write", "second"]);
    client(&python, &client1, &["orphan"]);
    let blob_rows = || {
        psql(
            &pg,
            port,
            "zodb",
            "SELECT count(DISTINCT zoid) FROM blob_chunk",
        )
    };
    assert_eq!(blob_rows(), "2", "the current blob and the orphan's");

    // The rendered jobs in their weekly order: truncate, pre-pack, pack.
    write_file(
        Path::new(&packer.pack_config_path()),
        &file_content(&packing, "/zodbpack.conf"),
    );
    write_file(
        Path::new(&packer.dsn_path()),
        &file_content(&packing, "/dsn"),
    );
    let clear_refs = write_file(
        &root.join("clear-refs"),
        &file_content(&packing, "/clear-refs"),
    );
    let truncated = run(Command::new(&python).arg(&clear_refs));
    assert!(truncated.contains("truncated"), "{truncated}");
    let commands = packing::pack_commands(&storage, &packer);
    assert_eq!(
        commands.iter().map(|(job, _)| *job).collect::<Vec<_>>(),
        [packing::PREPACK_JOB, packing::PACK_JOB]
    );
    for (_, command) in &commands {
        run(Command::new("sh").args(["-c", command]));
    }
    assert_eq!(blob_rows(), "1", "the pack removed the unreferenced blob");
    assert_eq!(
        client(&python, &client2, &["read"]),
        expected_read("second")
    );
    drop(cluster);
}
