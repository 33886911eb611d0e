//! Every config and script this crate renders: snapshots of the configs, `sh -n` of the
//! scripts, the resources of each phase, and the fingerprint that decides whether a deploy
//! builds.

use std::collections::BTreeMap;
use std::process::Command;

use provision_core::engine;
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::template::Templates;
use provision_plone::deploy::{self, ConfigFile, PushedTree, Source};
use provision_plone::instances;
use provision_plone::{
    AppKind, BuildoutSettings, ClientSettings, InstanceSettings, PipSettings, Syslog, TEMPLATES,
    render_deploy_cfg, render_zope_conf, render_zope_ini,
};

fn templates() -> Templates {
    Templates::new(TEMPLATES).unwrap()
}

fn zeoclient(n: u16) -> String {
    format!(
        "<zeoclient>\n  read-only off\n  server 10.0.0.5:8001\n  storage 1\n  name zeostorage\n  \
         blob-dir /srv/www/site/shared/var/blobstorage\n  shared-blob-dir on\n  cache-size 128MB\n  \
         client zeoclient-{n}\n  var /srv/www/site/shared/var\n</zeoclient>\n"
    )
}

fn clients(count: u16) -> Vec<ClientSettings> {
    (1..=count)
        .map(|n| ClientSettings {
            name: format!("client{n}"),
            port: 8080 + n,
            storage_section: zeoclient(n),
        })
        .collect()
}

/// The cookbook's reference/plone-cookbook.md 4.1 example: two clients over ZEO.
fn cookbook() -> InstanceSettings {
    let mut s = InstanceSettings::new("plone_instances", "/srv/www/plone_instances", clients(2));
    s.zodb_cache_size = Some(30000);
    s.zserver_threads = Some(2);
    s.environment = BTreeMap::from([
        (
            "PYTHON_EGG_CACHE".to_string(),
            "/srv/www/plone_instances/shared/eggs".to_string(),
        ),
        ("TMP".to_string(), "/tmp".to_string()),
    ]);
    s.kind = AppKind::Buildout(BuildoutSettings {
        extends: vec!["cfg/base.cfg".into(), "cfg/sources.cfg".into()],
        parts_to_include: vec!["client1".into(), "celery".into()],
        zeo_address: Some("zeo1.internal:8001".into()),
        ..BuildoutSettings::default()
    });
    s
}

/// RelStorage from the database layer's buildout form, syslog, blobs from the database.
fn relstorage() -> InstanceSettings {
    let mut s = InstanceSettings::new("site", "/srv/www/site", clients(3));
    s.persistent_cache = false;
    s.shared_blobs = false;
    s.blob_dir = Some("/srv/www/site/shared/var/blobcache".into());
    s.http_host = Some("10.0.0.11".into());
    s.syslog = Some(Syslog {
        facility: "local3".into(),
        level: "WARNING".into(),
    });
    s.environment
        .insert("zope_i18n_compile_mo_files".into(), "true".into());
    s.kind = AppKind::Buildout(BuildoutSettings {
        extends: vec!["cfg/base.cfg".into(), "cfg/relstorage.cfg".into()],
        inherit_parts: false,
        storage_options: "rel-storage =\n    type postgresql\n    dsn dbname='zodb' user='plone' host='10.0.0.6' password='s3cret'\n    keep-history false\n    blob-dir /srv/www/site/shared/var/blobcache\n    shared-blob-dir false\n    blob-cache-size 1GB\n".into(),
        additional_config: "[memcached]\nservers = 10.0.0.7:11211\n\n".into(),
        flags: "-N".into(),
        ..BuildoutSettings::default()
    });
    s
}

fn pip() -> InstanceSettings {
    let mut s = InstanceSettings::new("site", "/srv/www/site", clients(2));
    s.http_host = Some("10.0.0.11".into());
    s.zodb_cache_size = Some(50000);
    s.zserver_threads = Some(4);
    s.environment.insert("TZ".into(), "Europe/Berlin".into());
    s.kind = AppKind::Pip(PipSettings::default());
    s.deploy = provision_plone::DeploySettings::pip();
    s
}

#[test]
fn every_template_renders_its_example() {
    let t = templates();
    for source in TEMPLATES {
        let context: serde_json::Value = serde_json::from_str(source.example)
            .unwrap_or_else(|e| panic!("{}: bad example: {e}", source.name));
        let text = t
            .render(source.name, &context)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(text.ends_with('\n'), "{}", source.name);
    }
}

#[test]
fn deploy_cfg_in_the_cookbook_shape() {
    let text = render_deploy_cfg(&cookbook(), &templates()).unwrap();
    // client1 is listed once although parts_to_include names it too; TMP is dropped.
    assert_eq!(text.matches("    client1\n").count(), 1);
    assert!(!text.contains("TMP"));
    insta::assert_snapshot!("deploy.cfg-cookbook", text);
}

#[test]
fn deploy_cfg_with_relstorage_and_syslog() {
    let text = render_deploy_cfg(&relstorage(), &templates()).unwrap();
    // No persistent cache: the clients copy client1 and change only their port.
    assert!(!text.contains("zeo-client-client"));
    insta::assert_snapshot!("deploy.cfg-relstorage-syslog", text);
}

#[test]
fn storage_options_win_over_generated_ones() {
    let mut s = cookbook();
    if let AppKind::Buildout(b) = &mut s.kind {
        b.storage_options = "zeo-client = on\nzeo-address = 10.0.0.5:8001\nblob-storage = /mnt/blobs\nzeo-client-client = zeoclient-1\n".into();
    }
    s.persistent_cache = false;
    s.blob_dir = Some("/elsewhere".into());
    let text = render_deploy_cfg(&s, &templates()).unwrap();
    assert_eq!(text.matches("blob-storage").count(), 1, "{text}");
    assert!(text.contains("blob-storage = /mnt/blobs"), "{text}");
    // The storage names a cache file: every other client gets its own.
    assert!(text.contains("zeo-client-client = zeoclient-2"), "{text}");
    assert_eq!(text.matches("zeo-client-client = zeoclient-1").count(), 1);
}

#[test]
fn units_of_both_kinds() {
    let t = templates();
    insta::assert_snapshot!(
        "unit-buildout",
        instances::render_unit(&cookbook(), &t).unwrap()
    );
    insta::assert_snapshot!("unit-pip", instances::render_unit(&pip(), &t).unwrap());
}

#[test]
fn zope_conf_and_ini_of_the_pip_kind() {
    let t = templates();
    let s = pip();
    insta::assert_snapshot!(
        "zope.conf-client2",
        render_zope_conf(&s, "client2", &t).unwrap()
    );
    insta::assert_snapshot!(
        "zope.ini-client2",
        render_zope_ini(&s, "client2", &t).unwrap()
    );
    let mut syslog = s.clone();
    syslog.syslog = Some(Syslog {
        facility: "local3".into(),
        level: "INFO".into(),
    });
    if let AppKind::Pip(p) = &mut syslog.kind {
        p.zope_conf_imports = vec!["%import relstorage".into()];
    }
    syslog.clients[0].storage_section =
        "<relstorage>\n  <postgresql>\n    dsn dbname='zodb'\n  </postgresql>\n</relstorage>\n"
            .into();
    insta::assert_snapshot!(
        "zope.conf-relstorage",
        render_zope_conf(&syslog, "client1", &t).unwrap()
    );
    insta::assert_snapshot!(
        "zope.ini-syslog",
        render_zope_ini(&syslog, "client1", &t).unwrap()
    );
    assert!(render_zope_conf(&cookbook(), "client1", &t).is_err());
    assert!(render_zope_conf(&s, "client9", &t).is_err());
}

#[test]
fn setup_resources_in_order() {
    let t = templates();
    let mut s = cookbook();
    s.blob_dir = Some("/srv/blobs".into());
    s.os_packages = vec!["libpq-dev".into()];
    let ids: Vec<String> = instances::resources(&s, Phase::Setup, &t)
        .unwrap()
        .iter()
        .map(Resource::id)
        .collect();
    insta::assert_snapshot!("setup-resources", ids.join("\n"));
    assert!(
        instances::resources(&s, Phase::Configure, &t)
            .unwrap()
            .is_empty()
    );
    assert!(
        instances::resources(&s, Phase::Deploy, &t)
            .unwrap()
            .is_empty()
    );
    let services: Vec<String> = instances::client_services(&s)
        .iter()
        .map(Resource::id)
        .collect();
    assert_eq!(
        services,
        [
            "service:plone-plone_instances@client1",
            "service:plone-plone_instances@client2",
            "instances:plone-plone_instances@",
        ]
    );
    let logrotate = instances::render_logrotate(&s, &t).unwrap();
    insta::assert_snapshot!("logrotate", logrotate);
}

fn all_scripts(s: &InstanceSettings) -> Vec<(String, String)> {
    let t = templates();
    let git = Source::Git {
        url: "https://git.example.org/site.git".into(),
        revision: "main".into(),
        submodules: true,
    };
    let pushed = Source::Pushed(PushedTree {
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        tar: Vec::new(),
    });
    let live_check = engine::check_script(&instances::client_services(s)).unwrap();
    vec![
        (
            "prepare (git)".into(),
            deploy::prepare_release(s, &git, None, &t).unwrap().script,
        ),
        (
            "prepare (pushed)".into(),
            deploy::prepare_release(s, &pushed, None, &t)
                .unwrap()
                .script,
        ),
        (
            "prepare (with a live check)".into(),
            deploy::prepare_release(s, &git, Some(&live_check), &t)
                .unwrap()
                .script,
        ),
        (
            "switch".into(),
            deploy::switch_current(s, "20250101120000", &t).unwrap(),
        ),
        ("rollback".into(), deploy::rollback(s, &t).unwrap()),
        ("prune".into(), deploy::prune_releases(s, &t).unwrap()),
        ("status".into(), deploy::release_status(s, &t).unwrap()),
        (
            "health".into(),
            deploy::client_health("127.0.0.1", 8081, "/Plone/@@ok", 30, &t).unwrap(),
        ),
        (
            "log".into(),
            deploy::client_log_tail(s, "client1", 40, &t).unwrap(),
        ),
        ("restart".into(), deploy::restart_client(s, "client1")),
    ]
}

#[test]
fn every_script_is_valid_sh() {
    for settings in [cookbook(), relstorage(), pip()] {
        for (name, script) in all_scripts(&settings) {
            let output = Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{name}: {}\n{script}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

#[test]
fn a_pushed_tree_goes_to_stdin_and_needs_a_commit_id() {
    let t = templates();
    let tree = PushedTree {
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        tar: b"tar".to_vec(),
    };
    let command =
        deploy::prepare_release(&cookbook(), &Source::Pushed(tree.clone()), None, &t).unwrap();
    assert_eq!(command.stdin.as_deref(), Some(&b"tar"[..]));
    assert!(!command.script.contains("git clone"));
    let short = PushedTree {
        commit: "main".into(),
        ..tree
    };
    assert!(deploy::prepare_release(&cookbook(), &Source::Pushed(short), None, &t).is_err());
}

#[test]
fn the_fingerprint_follows_the_generated_config_and_build_settings() {
    let t = templates();
    let base = deploy::fingerprint(&cookbook(), &t).unwrap();
    assert_eq!(base, deploy::fingerprint(&cookbook(), &t).unwrap());
    let mut moved = cookbook();
    if let AppKind::Buildout(b) = &mut moved.kind {
        b.zeo_address = Some("zeo2.internal:8001".into());
    }
    assert_ne!(base, deploy::fingerprint(&moved, &t).unwrap());
    let mut flags = cookbook();
    if let AppKind::Buildout(b) = &mut flags.kind {
        b.flags = "-N".into();
    }
    assert_ne!(base, deploy::fingerprint(&flags, &t).unwrap());
    // Settings that only the unit reads do not rebuild.
    let mut stop = cookbook();
    stop.stop_timeout = 5;
    assert_eq!(base, deploy::fingerprint(&stop, &t).unwrap());
}

#[test]
fn config_files_per_kind() {
    let t = templates();
    let paths = |s: &InstanceSettings| -> Vec<String> {
        deploy::config_files(s, &t)
            .unwrap()
            .into_iter()
            .map(|f: ConfigFile| f.path)
            .collect()
    };
    assert_eq!(paths(&cookbook()), ["deploy.cfg"]);
    assert_eq!(
        paths(&pip()),
        [
            "etc/client1/zope.conf",
            "etc/client1/zope.ini",
            "etc/client2/zope.conf",
            "etc/client2/zope.ini"
        ]
    );
}

#[test]
fn settings_that_would_break_a_config_are_refused() {
    let t = templates();
    let mut s = cookbook();
    s.environment.insert("BAD NAME".into(), "x".into());
    assert!(render_deploy_cfg(&s, &t).is_err());
    let mut s = cookbook();
    s.environment.insert("X".into(), "two\nlines".into());
    assert!(render_deploy_cfg(&s, &t).is_err());
    let mut s = pip();
    s.clients[0].storage_section.clear();
    let error = render_zope_conf(&s, "client1", &t).unwrap_err().to_string();
    assert!(error.contains("storage section"), "{error}");
    assert!(deploy::client_health("127.0.0.1", 8081, "Plone", 5, &t).is_err());
}
