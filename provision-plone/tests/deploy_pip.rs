//! The pip kind for real: examples/apps/zope-pip deployed with a virtualenv per release and
//! the generated zope.conf/zope.ini, two clients over ZEO answering.

mod common;

use std::fs;

use common::{App, Repo, free_port, missing_prerequisite, skip, wait_for_port};
use provision_plone::deploy::{self, Prepared, Source};
use provision_plone::{AppKind, ClientSettings, DeploySettings, InstanceSettings, PipSettings};

fn zeoclient(zeo_port: u16, client: &ClientSettings, var: &str) -> String {
    format!(
        "<zeoclient>\n  read-only off\n  server 127.0.0.1:{zeo_port}\n  storage 1\n  name zeostorage\n  \
         cache-size 64MB\n  client {}\n  var {var}\n</zeoclient>\n",
        client.cache_name(&format!("127.0.0.1:{zeo_port}"))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn pip_release_with_generated_configs_serves_two_clients() {
    if let Some(reason) = missing_prerequisite() {
        skip(&reason);
        return;
    }
    let zeo_port = free_port();
    let clients = (1..=2)
        .map(|n| ClientSettings {
            name: format!("client{n}"),
            port: free_port(),
            storage_section: "placeholder".into(),
        })
        .collect();
    let mut settings = InstanceSettings::new("zopepip", "/placeholder", clients);
    settings.kind = AppKind::Pip(PipSettings::default());
    settings.deploy = DeploySettings::pip();
    settings.http_host = Some("127.0.0.1".into());
    settings.environment.insert("TZ".into(), "UTC".into());
    let root = tempfile::Builder::new()
        .prefix("plone-pip-")
        .tempdir()
        .unwrap();
    let mut app = App::setup(settings, root).await;
    let var = format!("{}/shared/var", app.settings.deploy_to);
    for client in app.settings.clients.iter_mut() {
        client.storage_section = zeoclient(zeo_port, client, &var);
    }
    let repo = Repo::new("zope-pip", &app.settings.user);

    let source = Source::Git {
        url: repo.url(),
        revision: "main".into(),
        submodules: false,
    };
    let (prepared, took) = app.prepare_ok(&source).await;
    eprintln!("pip release built in {:.1} s", took.as_secs_f64());
    let Prepared::Built { release, .. } = prepared else {
        panic!("expected a new release: {prepared:?}");
    };
    for client in &app.settings.clients {
        let conf = fs::read_to_string(format!("{release}/etc/{}/zope.conf", client.name)).unwrap();
        assert_eq!(
            conf,
            provision_plone::render_zope_conf(&app.settings, &client.name, &app.templates).unwrap()
        );
    }
    let log = fs::read_to_string(format!("{release}/.provision/build.log")).unwrap();
    assert!(log.contains("checked etc/client2/zope.conf"), "{log}");
    app.switch(&release).await;

    let data = format!("{var}/Data.fs");
    let mut zeo = app.spawn(
        &[
            ".venv/bin/runzeo",
            "-a",
            &format!("127.0.0.1:{zeo_port}"),
            "-f",
            &data,
        ],
        "zeo.log",
    );
    wait_for_port(zeo_port, &mut zeo, 60);
    let mut guards = Vec::new();
    for client in &app.settings.clients {
        let ini = format!("etc/{}/zope.ini", client.name);
        let mut guard = app.spawn(
            &[".venv/bin/runwsgi", &ini],
            &format!("{}.log", client.name),
        );
        let output = app.health(client.port, "/", 60).await;
        guard.assert_running();
        deploy::check_step("health", &output).unwrap_or_else(|e| panic!("{e}\n{}", guard.log()));
        guards.push(guard);
    }
    let access = fs::read_to_string(format!("{var}/log/client2-access.log")).unwrap();
    assert!(access.contains("GET / "), "{access}");

    // Unchanged, then a changed setting: a new release with the new zope.ini.
    let (again, _) = app.prepare_ok(&source).await;
    assert!(matches!(again, Prepared::Unchanged { .. }), "{again:?}");
    app.settings.zserver_threads = Some(3);
    let (changed, took) = app.prepare_ok(&source).await;
    eprintln!(
        "pip release of a changed config built in {:.1} s",
        took.as_secs_f64()
    );
    let Prepared::Built {
        release: second, ..
    } = changed
    else {
        panic!("a changed config must build: {changed:?}");
    };
    let ini = fs::read_to_string(format!("{second}/etc/client1/zope.ini")).unwrap();
    assert!(ini.contains("threads = 3"), "{ini}");
}
