//! Deploys of the Zope example (examples/apps/buildout) on this machine, with the real
//! buildout, ZEO and Zope: releases, `current`, unchanged redeploys, failed builds, rollback
//! and pruning. See `common` for the setup and the cache of eggs.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::{App, Repo, free_port, missing_prerequisite, skip, wait_for_port};
use provision_core::engine::{self, Mode, Options, Quiet};
use provision_plone::deploy::{self, Prepared, Source};
use provision_plone::{AppKind, BuildoutSettings, ClientSettings, InstanceSettings, instances};

const EXAMPLE: &str = "buildout";

/// Two clients over the ZEO server of the build, on free ports.
fn settings(zeo_port: u16) -> InstanceSettings {
    let clients = (1..=2)
        .map(|n| ClientSettings {
            name: format!("client{n}"),
            port: free_port(),
            storage_section: String::new(),
        })
        .collect();
    let mut s = InstanceSettings::new("zope", "/placeholder", clients);
    s.zodb_cache_size = Some(5000);
    s.zserver_threads = Some(2);
    s.environment
        .insert("zope_i18n_compile_mo_files".into(), "true".into());
    s.environment.insert("TMP".into(), "/nowhere".into());
    s.kind = AppKind::Buildout(BuildoutSettings {
        parts_to_include: vec!["zeoserver".into()],
        zeo_address: Some(format!("127.0.0.1:{zeo_port}")),
        // The database layer's buildout form, written by hand.
        storage_options: format!(
            "zeo-client = on\nzeo-address = 127.0.0.1:{zeo_port}\nshared-blob = on\nzeo-client-cache-size = 64MB\n"
        ),
        buildout_version: Some("6.0.1".into()),
        ..BuildoutSettings::default()
    });
    s
}

async fn app(settings: InstanceSettings) -> Option<(App, Repo)> {
    if let Some(reason) = missing_prerequisite() {
        skip(&reason);
        return None;
    }
    let root = tempfile::Builder::new()
        .prefix("plone-deploy-")
        .tempdir()
        .unwrap();
    let app = App::setup(settings, root).await;
    app.use_cache(&["eggs", "downloads"]);
    let repo = Repo::new(EXAMPLE, &app.settings.user);
    Some((app, repo))
}

fn git(repo: &Repo, revision: &str) -> Source {
    Source::Git {
        url: repo.url(),
        revision: revision.to_string(),
        submodules: true,
    }
}

fn built(prepared: Prepared) -> String {
    match prepared {
        Prepared::Built { release, .. } => release,
        other => panic!("expected a new release, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn zope_release_builds_and_two_clients_answer_over_zeo() {
    let zeo_port = free_port();
    let Some((app, repo)) = app(settings(zeo_port)).await else {
        return;
    };
    let commit = repo.git(&["rev-parse", "HEAD"]).trim().to_string();

    let (prepared, took) = app.prepare_ok(&git(&repo, "main")).await;
    eprintln!("first release built in {:.1} s", took.as_secs_f64());
    assert_eq!(prepared.commit(), commit);
    let release = built(prepared);
    assert!(app.current().is_none(), "prepare must not touch current");

    // The release: the revision, the generated deploy.cfg (0600, the app user's), the shared
    // directories linked in, its own parts and bin.
    let dir = std::path::Path::new(&release);
    assert_eq!(
        fs::read_to_string(dir.join("REVISION")).unwrap().trim(),
        commit
    );
    let deploy_cfg = dir.join("deploy.cfg");
    let wanted = provision_plone::render_deploy_cfg(&app.settings, &app.templates).unwrap();
    assert_eq!(fs::read_to_string(&deploy_cfg).unwrap(), wanted);
    let meta = fs::metadata(&deploy_cfg).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        meta.uid(),
        fs::metadata(app.deploy_to().join("releases"))
            .unwrap()
            .uid()
    );
    for shared in ["eggs", "downloads", "extends", "var"] {
        let link = fs::read_link(dir.join(shared)).unwrap();
        assert_eq!(link, app.deploy_to().join("shared").join(shared));
    }
    assert!(!dir.join("parts").is_symlink() && dir.join("parts/client2/etc/zope.conf").is_file());
    let wsgi = fs::read_to_string(dir.join("parts/client2/etc/wsgi.ini")).unwrap();
    assert!(
        wsgi.contains(&format!(
            "\nlisten = 0.0.0.0:{}",
            app.settings.clients[1].port
        )),
        "{wsgi}"
    );
    assert!(wsgi.contains("threads = 2"), "{wsgi}");
    let zope_conf = fs::read_to_string(dir.join("parts/client2/etc/zope.conf")).unwrap();
    assert!(zope_conf.contains("client zeoclient-2"), "{zope_conf}");
    assert!(zope_conf.contains("cache-size 5000"), "{zope_conf}");
    assert!(
        zope_conf.contains("zope_i18n_compile_mo_files true") && !zope_conf.contains("/nowhere")
    );

    let switched = app.switch(&release).await;
    assert_eq!(switched.get("current"), Some(release.as_str()));
    assert_eq!(switched.get("previous"), None);
    assert_eq!(app.current().unwrap().display().to_string(), release);
    let status = app.status().await;
    assert_eq!(status.get("revision"), Some(commit.as_str()));
    assert_eq!(
        status.get("config_sha256").unwrap(),
        deploy::fingerprint(&app.settings, &app.templates).unwrap()
    );

    // ZEO and both clients from the live release, as the units would run them.
    let mut zeo = app.spawn(
        &["bin/runzeo", "-C", "parts/zeoserver/etc/zeo.conf"],
        "zeo.log",
    );
    wait_for_port(zeo_port, &mut zeo, 60);
    // One after the other, as a rolling start does (two first starts on an empty database
    // conflict creating the root objects).
    let mut clients = Vec::new();
    for client in &app.settings.clients {
        let bin = format!("bin/{}", client.name);
        let mut guard = app.spawn(&[&bin, "console"], &format!("{}.log", client.name));
        let output = app.health(client.port, "/", 60).await;
        guard.assert_running();
        let report = deploy::check_step("health", &output)
            .unwrap_or_else(|e| panic!("{e}\n{}", guard.log()));
        assert_eq!(report.get("health"), Some("ok"));
        eprintln!(
            "{} answered 200 after {} s",
            client.name,
            report.get("seconds").unwrap()
        );
        clients.push(guard);
    }
    // No journal here: the log tail falls back to the client's event log.
    let tail = app
        .exec(deploy::client_log_tail(&app.settings, "client1", 20, &app.templates).unwrap())
        .await
        .stdout_lossy();
    assert!(
        tail.contains("Ready to handle requests") || tail.contains("Serving on"),
        "{tail}"
    );

    // The same revision and config again: nothing to do, in seconds. The clients' check rides
    // along as `provision` passes it: the script's `set -eu` does not end it (systemctl fails
    // here), and the engine takes its output for its own check, without a round trip.
    let live = instances::client_services(&app.settings);
    let live_check = engine::check_script(&live).unwrap();
    let (again, output, took) = app
        .prepare_checking(&git(&repo, "main"), Some(&live_check))
        .await;
    eprintln!("unchanged redeploy took {:.1} s", took.as_secs_f64());
    let again = again.unwrap_or_else(|e| panic!("{e}\nstderr: {}", output.stderr_lossy()));
    let Prepared::Unchanged {
        release: same,
        commit: same_commit,
        live_checked: Some(checked),
    } = again
    else {
        panic!("{again:?}\nstdout: {}", output.stdout_lossy());
    };
    assert_eq!((&same, &same_commit), (&release, &commit));
    assert!(took < Duration::from_secs(15), "{took:?}");
    let options = Options {
        mode: Mode::Plan,
        command_timeout: None,
        mask: &|s: &str| s.to_string(),
        progress: &Quiet,
    };
    let report = engine::converge_checked(&app.host, &live, Some(&checked), &options).await;
    assert!(!report.is_failed(), "{report:?}\n{checked}");
    assert_eq!(report.round_trips, 0, "{report:?}\n{checked}");
    assert_eq!(app.release_names().len(), 1);

    // A dead port fails the health check within its bound.
    let started = Instant::now();
    let dead = app.health(free_port(), "/", 2).await;
    assert!(!dead.success());
    let error = deploy::check_step("health", &dead).unwrap_err().to_string();
    assert!(error.contains("did not answer 200"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The unit of this app passes systemd-analyze once a release is live.
    if which_systemd_analyze() {
        let unit_dir = app.root.path().join("units");
        fs::create_dir_all(&unit_dir).unwrap();
        let unit = provision_plone::instances::render_unit(&app.settings, &app.templates).unwrap();
        fs::write(unit_dir.join(app.settings.unit_template()), unit).unwrap();
        let instance = unit_dir.join(format!("{}.service", app.settings.client_unit("client1")));
        std::os::unix::fs::symlink(app.settings.unit_template(), &instance).unwrap();
        let output = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&instance)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "systemd-analyze verify: {stderr}");
    }
    drop(clients);
    drop(zeo);
}

fn which_systemd_analyze() -> bool {
    std::process::Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn new_commits_make_new_releases_and_a_broken_build_changes_nothing() {
    let zeo_port = free_port();
    let mut settings = settings(zeo_port);
    settings.deploy.lock_timeout = 2;
    let Some((app, repo)) = app(settings).await else {
        return;
    };
    // The controller pushes the tree (no repository access from the host).
    let tree = deploy::git_archive(repo.path(), "main", true)
        .await
        .unwrap();
    let (first, took) = app.prepare_ok(&Source::Pushed(tree)).await;
    eprintln!(
        "release of a pushed tree built in {:.1} s",
        took.as_secs_f64()
    );
    let first = built(first);
    app.switch(&first).await;
    assert!(!app.deploy_to().join("shared/repo").exists());

    // While another deploy holds the lock, the live revision is still seen unchanged at once
    // (looked at without the lock); anything to build waits for the lock, then gives up.
    let holder = common::ChildGuard {
        // One process, which holds the lock until it is killed.
        child: std::process::Command::new("sh")
            .args(["-c", "exec 9<\"$0\" && flock 9 && exec sleep 600"])
            .arg(app.deploy_to())
            .spawn()
            .unwrap(),
        log: Default::default(),
    };
    while common::run(std::process::Command::new("sh").arg("-c").arg(format!(
        "flock -n {} true && echo free || echo held",
        app.deploy_to().display()
    ))) != "held\n"
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let tree = deploy::git_archive(repo.path(), "main", true)
        .await
        .unwrap();
    let (again, _) = app.prepare_ok(&Source::Pushed(tree)).await;
    assert!(
        matches!(&again, Prepared::Unchanged { release, .. } if *release == first),
        "{again:?}"
    );
    repo.write("README.txt", "waits for the lock\n");
    repo.commit("waits");
    let tree = deploy::git_archive(repo.path(), "HEAD", true)
        .await
        .unwrap();
    let (result, _, _) = app.prepare(&Source::Pushed(tree)).await;
    let error = result.unwrap_err().to_string();
    assert!(
        error.contains("another deploy of") && error.contains("held its lock for 2 s"),
        "{error}"
    );
    drop(holder);
    assert_eq!(app.release_names().len(), 1, "nothing built while locked");

    // The repository cannot make root write through a link: its REVISION points at a
    // root-owned file, which the deploy must leave alone.
    let target = app.root.path().join("root-owned");
    fs::write(&target, "untouched\n").unwrap();
    std::os::unix::fs::symlink(&target, repo.path().join("REVISION")).unwrap();
    repo.write("README.txt", "second commit\n");
    let second_commit = repo.commit("second");
    let tree = deploy::git_archive(repo.path(), "HEAD", true)
        .await
        .unwrap();
    assert_eq!(tree.commit, second_commit);
    let (prepared, took) = app.prepare_ok(&Source::Pushed(tree)).await;
    eprintln!(
        "release of a new commit built in {:.1} s",
        took.as_secs_f64()
    );
    let second = built(prepared);
    assert_ne!(second, first);
    assert_eq!(fs::read_to_string(&target).unwrap(), "untouched\n");
    let revision = std::path::Path::new(&second).join("REVISION");
    assert!(!revision.is_symlink());
    assert_eq!(fs::read_to_string(revision).unwrap().trim(), second_commit);
    let switched = app.switch(&second).await;
    assert_eq!(switched.get("previous"), Some(first.as_str()));
    assert_eq!(app.previous().unwrap().display().to_string(), first);

    let mut zeo = app.spawn(
        &["bin/runzeo", "-C", "parts/zeoserver/etc/zeo.conf"],
        "zeo.log",
    );
    wait_for_port(zeo_port, &mut zeo, 60);
    let port = app.settings.clients[0].port;
    let mut client = app.spawn(&["bin/client1", "console"], "client1.log");
    let output = app.health(port, "/", 60).await;
    deploy::check_step("health", &output).unwrap_or_else(|e| panic!("{e}\n{}", client.log()));

    // A commit that breaks buildout: the deploy fails with the end of the build log, the
    // live release, `current` and the running client stay as they were.
    let base = repo.read("cfg/base.cfg");
    repo.write(
        "cfg/base.cfg",
        &base.replace("    ZEO\nuser", "    ZEO\n    ${ports:client1}\nuser"),
    );
    repo.commit("broken");
    let (result, output, _) = app.prepare(&git(&repo, "main")).await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("buildout failed"), "{error}");
    assert!(error.contains("current is unchanged"), "{error}");
    let stderr = output.stderr_lossy();
    assert!(
        stderr.contains("ports"),
        "the build log's end is shown: {stderr}"
    );
    assert_eq!(app.current().unwrap().display().to_string(), second);
    assert!(std::path::Path::new(&second).join("bin/client1").is_file());
    client.assert_running();
    let output = app.health(port, "/", 10).await;
    deploy::check_step("health", &output).unwrap();
    let status = app.status().await;
    let states = status.all("release");
    assert_eq!(states.len(), 3, "{states:?}");
    assert!(states[2].ends_with(" failed"), "{states:?}");
    assert!(states[1].ends_with(" built"), "{states:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_returns_to_the_previous_release_and_prune_keeps_five() {
    let mut s = settings(free_port());
    s.deploy.always_build_on_deploy = true;
    let Some((app, repo)) = app(s).await else {
        return;
    };
    let rollback = deploy::rollback(&app.settings, &app.templates).unwrap();
    let output = app.exec(rollback.clone()).await;
    let error = deploy::check_step("rollback", &output)
        .unwrap_err()
        .to_string();
    assert!(error.contains("no previous release"), "{error}");

    // Releases started in the same second get a -N suffix: occupy the next seconds' names,
    // holding the cache lock so that the first build starts at once.
    let lock = common::CacheLock::take();
    let now = std::process::Command::new("date")
        .args(["-u", "+%s"])
        .output()
        .unwrap();
    let now: i64 = String::from_utf8_lossy(&now.stdout).trim().parse().unwrap();
    for second in now..now + 20 {
        let name = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{second}"), "+%Y%m%d%H%M%S"])
            .output()
            .unwrap();
        let name = String::from_utf8_lossy(&name.stdout).trim().to_string();
        fs::create_dir(app.deploy_to().join("releases").join(name)).unwrap();
    }
    fs::create_dir(app.deploy_to().join("releases/notes")).unwrap();
    let (first, _, took) = app.prepare_locked(&git(&repo, "main")).await;
    drop(lock);
    eprintln!("release 0 built in {:.1} s", took.as_secs_f64());
    let first = built(first.unwrap());
    app.switch(&first).await;

    // Six more releases of the same commit (always_build_on_deploy), each made live.
    let mut releases = vec![first];
    for n in 1..7 {
        let (prepared, took) = app.prepare_ok(&git(&repo, "main")).await;
        let release = built(prepared);
        eprintln!("release {n} built in {:.1} s", took.as_secs_f64());
        app.switch(&release).await;
        releases.push(release);
    }
    let name = |r: &String| r.rsplit('/').next().unwrap().to_string();
    assert!(name(&releases[0]).ends_with("-1"), "{}", releases[0]);

    // Rollback: back to the sixth; the fifth becomes previous.
    let report = app.step("rollback", rollback.clone()).await;
    assert_eq!(report.get("current"), Some(releases[5].as_str()));
    assert_eq!(report.get("rolled_back_from"), Some(releases[6].as_str()));
    assert_eq!(report.get("previous"), Some(releases[4].as_str()));
    assert_eq!(app.current().unwrap().display().to_string(), releases[5]);
    let status = app.status().await;
    assert!(
        status
            .all("release")
            .iter()
            .any(|r| *r == format!("{} rolled_back", name(&releases[6])))
    );

    // The unused placeholders go; a failed build newer than everything stays for its log,
    // an old one goes.
    let mut placeholders = app.release_names();
    placeholders.retain(|n| n.len() == 14 && !releases.iter().any(|r| name(r) == *n));
    for placeholder in placeholders {
        fs::remove_dir(app.deploy_to().join("releases").join(placeholder)).unwrap();
    }
    for failed in ["20000101000000", "99990101000000"] {
        fs::create_dir_all(
            app.deploy_to()
                .join("releases")
                .join(failed)
                .join(".provision"),
        )
        .unwrap();
    }

    // Make the oldest release live: prune keeps the five newest built ones, the live one
    // and the previous one, whatever their age, and touches nothing but releases.
    app.switch(&releases[0]).await;
    assert_eq!(app.previous().unwrap().display().to_string(), releases[5]);
    let report = app
        .step(
            "prune",
            deploy::prune_releases(&app.settings, &app.templates).unwrap(),
        )
        .await;
    assert_eq!(
        report.all("removed"),
        [name(&releases[1]), "20000101000000".to_string()],
        "{report:?}"
    );
    let left = |app: &App| -> Vec<String> {
        let mut names = app.release_names();
        names.retain(|n| n != "notes");
        names
    };
    let expected = |indexes: &[usize]| -> Vec<String> {
        let mut names: Vec<String> = indexes.iter().map(|i| name(&releases[*i])).collect();
        names.push("99990101000000".to_string());
        names.sort();
        names
    };
    assert_eq!(left(&app), expected(&[0, 2, 3, 4, 5, 6]));
    assert!(app.deploy_to().join("releases/notes").is_dir());

    // Keep 2: the two newest built, the live (oldest) and the previous one.
    let mut two = app.settings.clone();
    two.deploy.keep_releases = 2;
    let report = app
        .step(
            "prune",
            deploy::prune_releases(&two, &app.templates).unwrap(),
        )
        .await;
    assert_eq!(left(&app), expected(&[0, 5, 6]), "{report:?}");
    assert_eq!(app.current().unwrap().display().to_string(), releases[0]);
}

/// A git repository in `dir` holding what is there, committed on `main`.
fn init_repository(dir: &std::path::Path) {
    common::run(
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["init", "-q", "-b", "main"]),
    );
    common::commit_all(dir, "submodule");
}

/// `git submodule add` of the repository at `url` as `path` of `superproject`, then its
/// `.gitmodules` URL made `relative`, as a project on a forge writes it.
fn add_submodule(
    superproject: &std::path::Path,
    url: &std::path::Path,
    path: &str,
    relative: &str,
) {
    let git = |args: &[&str]| {
        common::run(
            std::process::Command::new("git")
                .arg("-C")
                .arg(superproject)
                .args(["-c", "protocol.file.allow=always"])
                .args(args),
        )
    };
    git(&["submodule", "add", "-q", &url.display().to_string(), path]);
    git(&["submodule", "update", "-q", "--init", "--recursive"]);
    git(&[
        "config",
        "-f",
        ".gitmodules",
        &format!("submodule.{path}.url"),
        relative,
    ]);
    git(&["add", ".gitmodules"]);
}

/// The app's `cfg/` (the buildout configs deploy.cfg extends) moved into a submodule with a
/// relative URL and a nested submodule of its own: a release built from the host's mirror and
/// one from a tree the controller pushed both have them, so buildout finds its configs.
#[tokio::test(flavor = "multi_thread")]
async fn submodules_come_with_the_release_from_git_and_from_the_controller() {
    let Some((app, repo)) = app(settings(free_port())).await else {
        return;
    };
    let owner = app.settings.user.clone();
    // Working repositories named as their bare copies on the "forge" (next to site.git), so
    // that relative URLs resolve alike here and on the host.
    let work = tempfile::Builder::new()
        .prefix("plone-sub-")
        .tempdir()
        .unwrap();
    let nested = work.path().join("nested.git");
    fs::create_dir(&nested).unwrap();
    fs::write(nested.join("NESTED.txt"), "from the nested submodule\n").unwrap();
    init_repository(&nested);
    let cfg = work.path().join("cfg.git");
    common::run(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(repo.path().join("cfg"))
            .arg(&cfg),
    );
    init_repository(&cfg);
    add_submodule(&cfg, &nested, "nested", "../nested.git");
    common::commit_all(&cfg, "nested");
    repo.git(&["rm", "-r", "-q", "cfg"]);
    add_submodule(repo.path(), &cfg, "cfg", "../cfg.git");
    let commit = repo.commit("cfg is a submodule");
    let forge = std::path::Path::new(&repo.url())
        .parent()
        .unwrap()
        .to_path_buf();
    for name in ["cfg.git", "nested.git"] {
        common::run(
            std::process::Command::new("git")
                .args(["clone", "-q", "--bare"])
                .arg(work.path().join(name))
                .arg(forge.join(name)),
        );
        common::run(
            std::process::Command::new("chown")
                .args(["-R", &format!("{owner}:{owner}")])
                .arg(forge.join(name)),
        );
    }
    // Since git 2.38 submodules may not come over the local file transport unless allowed;
    // a real forge is reached over https or ssh.
    common::run(std::process::Command::new("runuser").args([
        "-u",
        &owner,
        "--",
        "sh",
        "-c",
        "HOME=$(getent passwd \"$(id -un)\" | cut -d: -f6) git config --global protocol.file.allow always",
    ]));

    let release = built(app.prepare_ok(&git(&repo, "main")).await.0);
    let release = std::path::Path::new(&release);
    assert!(release.join("cfg/base.cfg").is_file());
    assert_eq!(
        fs::read_to_string(release.join("cfg/nested/NESTED.txt")).unwrap(),
        "from the nested submodule\n"
    );
    assert!(release.join("bin/client1").is_file(), "buildout used cfg/");

    let tree = deploy::git_archive(repo.path(), "main", true)
        .await
        .unwrap();
    assert_eq!(tree.commit, commit);
    let (prepared, _) = app.prepare_ok(&Source::Pushed(tree)).await;
    let pushed = built(prepared);
    let pushed = std::path::Path::new(&pushed);
    assert!(pushed.join("cfg/base.cfg").is_file());
    assert!(pushed.join("cfg/nested/NESTED.txt").is_file());
    assert!(pushed.join("bin/client1").is_file(), "buildout used cfg/");

    // Without submodules on the controller's side: a clear error naming the submodule.
    let error = deploy::git_archive(&cfg.join("nested"), "main", true).await;
    assert!(
        error.is_ok(),
        "a repository without submodules exports as before"
    );
    common::run(
        std::process::Command::new("rm")
            .arg("-rf")
            .arg(repo.path().join("cfg/nested")),
    );
    fs::create_dir(repo.path().join("cfg/nested")).unwrap();
    let error = deploy::git_archive(repo.path(), "main", true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("submodule cfg/nested/") && error.contains("git submodule update --init"),
        "{error}"
    );
    let tree = deploy::git_archive(repo.path(), "main", false)
        .await
        .unwrap();
    assert_eq!(
        tree.commit, commit,
        "enable_submodules = false exports the superproject only"
    );
}
