//! Every template renders with its example, and every file the provisioners write is a
//! snapshot: a change to any rendered config shows up in review.

use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::template::Templates;
use provision_zeo::S3Copies;
use provision_zeo::client::{self, DbConnection, RelStorageSettings, ZeoClientSettings};
use provision_zeo::memcached::{self, MemcachedSettings};
use provision_zeo::packing::{self, PackerSettings};
use provision_zeo::postgres::{self, PostgresSettings};
use provision_zeo::zeoserver::{self, ZeoServerSettings};

fn templates() -> Templates {
    Templates::new(provision_zeo::TEMPLATES).expect("templates parse")
}

/// Snapshot names from paths: `/etc/provision/zeo/zeo.conf` -> `etc__provision__zeo__zeo.conf`.
fn snapshot_name(prefix: &str, path: &str) -> String {
    format!(
        "{prefix}{}",
        path.trim_start_matches('/').replace('/', "__")
    )
}

/// Snapshot the content of every file and unit, and the list of resources with their ids.
fn snapshot_resources(prefix: &str, resources: &[Resource]) {
    let mut listing = String::new();
    for resource in resources {
        listing.push_str(&resource.id());
        if let Resource::Service(service) = resource
            && !service.restart_on.is_empty()
        {
            listing.push_str(&format!(" (restart on {})", service.restart_on.join(", ")));
        }
        listing.push('\n');
        match resource {
            Resource::File(file) => {
                let content = String::from_utf8(file.content.clone()).expect("text");
                insta::assert_snapshot!(
                    snapshot_name(prefix, &file.path),
                    format!(
                        "# {}:{} {:04o}\n{content}",
                        file.owner, file.group, file.mode
                    )
                );
            }
            Resource::Unit(unit) => {
                insta::assert_snapshot!(snapshot_name(prefix, &unit.path()), unit.content);
            }
            _ => {}
        }
    }
    insta::assert_snapshot!(format!("{prefix}resources"), listing);
}

#[test]
fn every_template_renders_with_its_example() {
    let templates = templates();
    for source in provision_zeo::TEMPLATES {
        let context: serde_json::Value = serde_json::from_str(source.example)
            .unwrap_or_else(|e| panic!("{}: example is not JSON: {e}", source.name));
        let rendered = templates
            .render(source.name, &context)
            .unwrap_or_else(|e| panic!("{e}"));
        insta::assert_snapshot!(
            format!("template__{}", source.name.replace('/', "__")),
            rendered
        );
    }
}

fn zeo_settings() -> ZeoServerSettings {
    let mut settings = ZeoServerSettings::new("10.0.0.5".parse().unwrap());
    settings.enable_backup = true;
    settings.syslog_facility = Some("local3".to_string());
    settings
}

#[test]
fn zeoserver_resources() {
    let templates = templates();
    let settings = zeo_settings();
    let mut all = Vec::new();
    for phase in Phase::ALL {
        all.extend(zeoserver::resources(&settings, phase, &templates).unwrap());
    }
    snapshot_resources("zeoserver__", &all);
}

#[test]
fn zeoserver_with_s3_copies() {
    let templates = templates();
    let mut settings = zeo_settings();
    settings.s3 = Some(S3Copies {
        bucket: "zeo-backups".to_string(),
        prefix: "cluster".to_string(),
        endpoint: Some("https://s3.example.org".to_string()),
        region: "us-east-1".to_string(),
        keep: 4,
        access_key: "AKIDEXAMPLE".to_string(),
        secret_key: "s3cr3t-example".to_string(),
    });
    let mut all = Vec::new();
    for phase in Phase::ALL {
        all.extend(zeoserver::resources(&settings, phase, &templates).unwrap());
    }
    let rclone = all
        .iter()
        .find_map(|r| match r {
            Resource::File(f) if f.path.ends_with("/rclone.conf") => Some(f.clone()),
            _ => None,
        })
        .expect("an rclone config");
    assert!(rclone.secret, "the keys could show in a plan");
    assert_eq!((rclone.group.as_str(), rclone.mode), ("zeo", 0o640));
    // The files that differ from `zeoserver_resources`, and the list.
    let differing: Vec<Resource> = all
        .iter()
        .filter(|r| match r {
            Resource::File(f) => ["rclone", "-s3", "-backup", "-restore"]
                .iter()
                .any(|part| f.path.contains(part)),
            Resource::Unit(_) => false,
            _ => true,
        })
        .cloned()
        .collect();
    snapshot_resources("zeoserver_s3__", &differing);

    // Without backups there is nothing to copy.
    settings.enable_backup = false;
    let err = zeoserver::resources(&settings, Phase::Setup, &templates).unwrap_err();
    assert!(err.to_string().contains("enable_backup"), "{err}");
}

#[test]
fn memcached_resources() {
    let templates = templates();
    let settings = MemcachedSettings::new("10.0.0.7".parse().unwrap(), 4 << 30);
    let mut all = Vec::new();
    for phase in Phase::ALL {
        all.extend(memcached::resources(&settings, phase, &templates).unwrap());
    }
    snapshot_resources("memcached__", &all);
}

#[test]
fn zeoserver_defaults_pack_but_do_not_back_up() {
    let templates = templates();
    let settings = ZeoServerSettings::new("10.0.0.5".parse().unwrap());
    let ids: Vec<String> = zeoserver::resources(&settings, Phase::Configure, &templates)
        .unwrap()
        .iter()
        .map(Resource::id)
        .collect();
    assert!(
        ids.contains(&"unit:zeoserver-pack.timer".to_string()),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&"unit:zeoserver-backup.timer".to_string()),
        "{ids:?}"
    );
    // A backup timer an earlier configuration enabled is stopped.
    assert!(
        ids.contains(&"service:zeoserver-backup.timer".to_string()),
        "{ids:?}"
    );
    let conf = zeoserver::zeo_conf(&settings, &templates).unwrap();
    assert!(conf.contains("address 10.0.0.5:8001\n"), "{conf}");
    assert!(!conf.contains("<syslog>"), "{conf}");
    assert!(!conf.contains("pack-gc"), "{conf}");
}

#[test]
fn zeoserver_refuses_every_interface() {
    let templates = templates();
    let settings = ZeoServerSettings::new("0.0.0.0".parse().unwrap());
    let err = zeoserver::resources(&settings, Phase::Setup, &templates).unwrap_err();
    assert!(err.to_string().starts_with("bind_address:"), "{err}");
}

#[test]
fn zeoserver_pack_commands() {
    let mut settings = ZeoServerSettings::new("10.0.0.5".parse().unwrap());
    assert_eq!(
        zeoserver::pack_command(&settings),
        "/opt/provision/zeo/bin/zeopack -d 7 10.0.0.5:8001:1"
    );
    settings.bind_address = "fd00::5".parse().unwrap();
    settings.pack_days = 3;
    assert_eq!(
        zeoserver::pack_command(&settings),
        "/opt/provision/zeo/bin/zeopack -d 3 -h fd00::5 -p 8001 -S 1"
    );
    assert_eq!(
        zeoserver::run_now_command(zeoserver::BACKUP_JOB),
        "systemctl start zeoserver-backup.service"
    );
}

#[test]
fn zeoclient_sections() {
    let templates = templates();
    let mut settings = ZeoClientSettings::new(
        vec!["10.0.0.5:8001".to_string()],
        "/srv/www/plone/shared/var/blobstorage",
        "/srv/www/plone/shared/var",
    );
    insta::assert_snapshot!(
        "zeoclient_shared_blobs_client2",
        client::zeoclient_section(&settings, 2, &templates).unwrap()
    );
    insta::assert_snapshot!(
        "zeoclient_shared_blobs_client2_buildout",
        client::zeoclient_buildout_options(&settings, 2, &templates).unwrap()
    );
    settings.shared_blob_dir = false;
    settings.persistent_cache = false;
    settings.blob_dir = "/srv/www/plone/shared/var/blobcache".to_string();
    let section = client::zeoclient_section(&settings, 1, &templates).unwrap();
    insta::assert_snapshot!("zeoclient_blob_cache_no_persistent_cache", section);
    insta::assert_snapshot!(
        "zodb_db_main_zeoclient",
        client::zodb_db_section("main", "/", 30000, &section)
    );
}

fn relstorage_settings() -> RelStorageSettings {
    let mut settings = RelStorageSettings::new(
        DbConnection::Params {
            host: "10.0.0.6".to_string(),
            port: Some(5432),
            name: "zodb".to_string(),
            user: "plone".to_string(),
            password: Some("pa$$'word".to_string()),
        },
        "/srv/www/plone/shared/var/blobcache",
    );
    settings.keep_history = false;
    settings.cache_servers = vec!["10.0.0.7:11211".to_string(), "10.0.0.8:11211".to_string()];
    settings
}

#[test]
fn relstorage_sections() {
    let templates = templates();
    let settings = relstorage_settings();
    insta::assert_snapshot!(
        "relstorage_section",
        client::relstorage_section(&settings, &templates).unwrap()
    );
    insta::assert_snapshot!(
        "relstorage_buildout",
        client::relstorage_buildout_option(&settings, &templates).unwrap()
    );
    let mut dsn = settings.clone();
    dsn.db = DbConnection::Dsn("dbname=zodb host=db.internal".to_string());
    dsn.shared_blob_dir = true;
    dsn.cache_servers.clear();
    insta::assert_snapshot!(
        "relstorage_section_dsn_shared_blobs",
        client::relstorage_section(&dsn, &templates).unwrap()
    );
}

#[test]
fn packing_resources_single_stage() {
    let templates = templates();
    let settings = relstorage_settings();
    let mut all = Vec::new();
    for phase in Phase::ALL {
        all.extend(
            packing::resources(&settings, &PackerSettings::default(), phase, &templates).unwrap(),
        );
    }
    snapshot_resources("packing__", &all);
}

#[test]
fn packing_two_stage_with_truncate() {
    let templates = templates();
    let mut settings = relstorage_settings();
    settings.pack.two_stage_pack = true;
    settings.pack.truncate_refs = true;
    settings.pack.pack_days = 3;
    let packer = PackerSettings::default();
    let mut all = Vec::new();
    for phase in Phase::ALL {
        all.extend(packing::resources(&settings, &packer, phase, &templates).unwrap());
    }
    snapshot_resources("packing_two_stage__", &all);
    let timers: Vec<(String, String, String)> = packing::timers(&settings, &packer)
        .into_iter()
        .filter(|(_, wanted)| *wanted)
        .map(|(t, _)| (t.name, t.on_calendar, t.command))
        .collect();
    insta::assert_debug_snapshot!("packing_two_stage_timers", timers);
}

#[test]
fn packing_without_gc_never_truncates() {
    let mut settings = relstorage_settings();
    settings.pack.pack_gc = false;
    settings.pack.truncate_refs = true;
    let wanted: Vec<String> = packing::timers(&settings, &PackerSettings::default())
        .into_iter()
        .filter(|(_, wanted)| *wanted)
        .map(|(t, _)| t.name)
        .collect();
    assert_eq!(wanted, ["relstorage-pack"]);
    let conf = packing::pack_config(&settings, &PackerSettings::default(), &templates()).unwrap();
    assert!(conf.contains("  pack-gc false\n"), "{conf}");
}

#[test]
fn postgres_resources() {
    let templates = templates();
    let settings = PostgresSettings::new(
        "15",
        "10.0.0.6".parse().unwrap(),
        vec![
            "10.0.0.11".parse().unwrap(),
            "10.0.0.12".parse().unwrap(),
            "fd00::13".parse().unwrap(),
        ],
        "it's secret",
    );
    let mut all = Vec::new();
    for phase in Phase::ALL {
        all.extend(postgres::resources(&settings, phase, &templates).unwrap());
    }
    snapshot_resources("postgres__", &all);
}

#[test]
fn postgres_with_dumps_copied_to_s3() {
    let templates = templates();
    let mut settings = PostgresSettings::new(
        "15",
        "10.0.0.6".parse().unwrap(),
        vec!["10.0.0.11".parse().unwrap()],
        "it's secret",
    );
    settings.enable_backup = true;
    settings.s3 = Some(S3Copies {
        bucket: "db-backups".to_string(),
        prefix: "cluster".to_string(),
        endpoint: None,
        region: "us-east-1".to_string(),
        keep: 7,
        access_key: "AKIDEXAMPLE".to_string(),
        secret_key: "s3cr3t-example".to_string(),
    });
    let mut all = Vec::new();
    for phase in Phase::ALL {
        all.extend(postgres::resources(&settings, phase, &templates).unwrap());
    }
    let rclone = all
        .iter()
        .find_map(|r| match r {
            Resource::File(f) if f.path.ends_with("/rclone.conf") => Some(f.clone()),
            _ => None,
        })
        .expect("an rclone config");
    assert!(rclone.secret, "the keys could show in a plan");
    assert_eq!((rclone.group.as_str(), rclone.mode), ("postgres", 0o640));
    // The dump's resources; the rest is `postgres_resources`.
    let dumps: Vec<Resource> = all
        .iter()
        .filter(|r| {
            let id = r.id();
            ["backup", "restore", "rclone", "package"]
                .iter()
                .any(|part| id.contains(part))
        })
        .cloned()
        .collect();
    snapshot_resources("postgres_backup__", &dumps);

    // S3 copies are copies of dumps; and a host keeps at least one.
    settings.enable_backup = false;
    let err = postgres::resources(&settings, Phase::Setup, &templates).unwrap_err();
    assert!(err.to_string().contains("enable_backup"), "{err}");
    settings.enable_backup = true;
    settings.backup_keep = 0;
    let err = postgres::resources(&settings, Phase::Setup, &templates).unwrap_err();
    assert!(err.to_string().contains("backup_keep"), "{err}");
}

#[test]
fn postgres_refuses_open_settings() {
    let templates = templates();
    let mut settings = PostgresSettings::new(
        "15",
        "0.0.0.0".parse().unwrap(),
        vec!["10.0.0.11".parse().unwrap()],
        "secret",
    );
    let err = postgres::resources(&settings, Phase::Configure, &templates).unwrap_err();
    assert!(err.to_string().starts_with("listen_addresses:"), "{err}");
    settings.listen_addresses = vec!["10.0.0.6".parse().unwrap()];
    settings.allowed_clients.clear();
    let err = postgres::resources(&settings, Phase::Configure, &templates).unwrap_err();
    assert!(err.to_string().starts_with("allowed_clients:"), "{err}");
    settings.allowed_clients = vec!["10.0.0.11".parse().unwrap()];
    settings.role = "all".to_string();
    assert!(postgres::resources(&settings, Phase::Configure, &templates).is_ok());
    settings.role = "Robert'); DROP".to_string();
    let err = postgres::resources(&settings, Phase::Configure, &templates).unwrap_err();
    assert!(err.to_string().starts_with("role:"), "{err}");
}
