//! The quick start's app (cfg/demo.cfg of examples/apps/buildout: Plone 6 with the app's
//! package and Celery) deployed for real: a cold build takes minutes, so this runs only with `PROVISION_SLOW_TESTS=1` or under
//! `PROVISION_SANDBOX=required`.

mod common;

use common::{App, Repo, free_port, missing_prerequisite, skip, slow_tests_enabled, wait_for_port};
use provision_plone::deploy::{self, Prepared, Site, Source};
use provision_plone::{AppKind, BuildoutSettings, ClientSettings, InstanceSettings};

#[tokio::test(flavor = "multi_thread")]
async fn plone_site_created_by_the_deploy_answers() {
    if !slow_tests_enabled() {
        eprintln!("SKIPPED: a cold Plone build takes minutes; set PROVISION_SLOW_TESTS=1");
        return;
    }
    if let Some(reason) = missing_prerequisite() {
        skip(&reason);
        return;
    }
    let zeo_port = free_port();
    let port = free_port();
    let mut settings = InstanceSettings::new(
        "plone",
        "/placeholder",
        vec![ClientSettings {
            name: "client1".into(),
            port,
            storage_section: String::new(),
        }],
    );
    settings.kind = AppKind::Buildout(BuildoutSettings {
        extends: vec!["cfg/demo.cfg".into()],
        parts_to_include: vec!["zeoserver".into()],
        zeo_address: Some(format!("127.0.0.1:{zeo_port}")),
        buildout_version: Some("6.0.1".into()),
        ..BuildoutSettings::default()
    });
    let root = tempfile::Builder::new()
        .prefix("plone-deploy-")
        .tempdir()
        .unwrap();
    let app = App::setup(settings, root).await;
    app.use_cache(&["eggs", "downloads"]);
    let repo = Repo::new("buildout", &app.settings.user);

    let tree = deploy::git_archive(repo.path(), "main", true)
        .await
        .unwrap();
    let (prepared, took) = app.prepare_ok(&Source::Pushed(tree)).await;
    eprintln!("Plone release built in {:.1} s", took.as_secs_f64());
    let Prepared::Built { release, .. } = prepared else {
        panic!("expected a new release: {prepared:?}");
    };
    app.switch(&release).await;

    let mut zeo = app.spawn(
        &["bin/runzeo", "-C", "parts/zeoserver/etc/zeo.conf"],
        "zeo.log",
    );
    wait_for_port(zeo_port, &mut zeo, 60);
    // client1 runs first: its persistent ZEO cache is locked, as on a live host.
    let mut client = app.spawn(&["bin/client1", "console"], "client1.log");
    let root = app.health(port, "/", 120).await;
    deploy::check_step("health", &root).unwrap_or_else(|e| panic!("{e}\n{}", client.log()));

    let site = Site {
        id: "Plone".into(),
        title: "A site made by the deploy".into(),
        profiles: vec![
            "plone.app.contenttypes:default".into(),
            "plonetheme.barceloneta:default".into(),
        ],
        language: "en".into(),
        timezone: "Europe/Amsterdam".into(),
    };
    let script = deploy::ensure_site(&app.settings, &site, "127.0.0.1", &app.templates).unwrap();
    let started = std::time::Instant::now();
    let report = app.step("ensure site", script.clone()).await;
    assert_eq!(report.get("site"), Some("created"), "{report:?}");
    eprintln!("site created in {:.1} s", started.elapsed().as_secs_f64());

    for path in ["/Plone", "/Plone/@@ok"] {
        let output = app.health(port, path, 120).await;
        client.assert_running();
        let report = deploy::check_step("health", &output)
            .unwrap_or_else(|e| panic!("{e}\n{}", client.log()));
        eprintln!(
            "{path} answered 200 after {} s",
            report.get("seconds").unwrap()
        );
    }
    let page = app
        .exec(format!("curl -s http://127.0.0.1:{port}/Plone"))
        .await
        .stdout_lossy();
    assert!(page.contains("A site made by the deploy"), "{page}");
    // The app's package is loaded (its view answers that no broker is configured here) and
    // the release has the workers' bin/celery.
    let view = app
        .exec(format!(
            "curl -s -w ' %{{http_code}}' http://127.0.0.1:{port}/Plone/@@celery-enqueue?marker=x"
        ))
        .await
        .stdout_lossy();
    assert_eq!(view, "no Celery broker configured 503");
    let celery = app
        .exec(format!(
            "{}/current/bin/celery --version",
            app.deploy_to().display()
        ))
        .await;
    assert!(celery.success(), "{}", celery.stderr_lossy());

    // An existing site is left alone, answered without starting a second Zope.
    let started = std::time::Instant::now();
    let report = app.step("ensure site", script).await;
    assert_eq!(report.get("site"), Some("exists"), "{report:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    client.assert_running();
}
