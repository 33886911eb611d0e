//! The Plone example (examples/apps/plone-buildout) deployed for real: a cold build takes
//! minutes, so this runs only with `PROVISION_SLOW_TESTS=1` or under
//! `PROVISION_SANDBOX=required`.

mod common;

use common::{App, Repo, free_port, missing_prerequisite, skip, slow_tests_enabled, wait_for_port};
use provision_plone::deploy::{self, Prepared, Source};
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
    let repo = Repo::new("plone-buildout", &app.settings.user);

    let tree = deploy::git_archive(repo.path(), "main").await.unwrap();
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
    // The site script runs beside the server (ZEO), as a deploy hook would.
    let started = std::time::Instant::now();
    let output = app
        .exec(format!(
            "cd {release} && runuser -u plone -- bin/client1 run scripts/create_site.py Plone"
        ))
        .await;
    assert!(
        output.success(),
        "create_site.py failed:\n{}\n{}",
        output.stdout_lossy(),
        output.stderr_lossy()
    );
    assert!(
        output.stdout_lossy().contains("site Plone created"),
        "{}",
        output.stdout_lossy()
    );
    eprintln!("site created in {:.1} s", started.elapsed().as_secs_f64());

    let mut client = app.spawn(&["bin/client1", "console"], "client1.log");
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

    // Idempotent: the script leaves an existing site alone. It runs with client1's zope.conf,
    // so client1 must be stopped: its persistent ZEO cache file is locked by the process.
    drop(client);
    let output = app
        .exec(format!(
            "cd {release} && runuser -u plone -- bin/client1 run scripts/create_site.py Plone"
        ))
        .await;
    assert!(
        output.stdout_lossy().contains("site Plone exists"),
        "{}\n{}",
        output.stdout_lossy(),
        output.stderr_lossy()
    );
}
