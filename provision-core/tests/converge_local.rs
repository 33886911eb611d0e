//! The engine against the real local machine: resources in a temporary directory, real `sh`,
//! real coreutils. (Services and packages need a systemd host: see the sandbox tests.)

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use provision_core::engine::{self, Mode, Options, Outcome, Quiet};
use provision_core::host::{Command, Host};
use provision_core::resource::{Directory, File, Resource, Symlink};

fn options(mode: Mode) -> Options<'static> {
    Options {
        mode,
        command_timeout: None,
        mask: &|s: &str| s.replace("s3cr3t-pass", "********"),
        progress: &Quiet,
    }
}

fn files(dir: &str, count: usize, version: &str) -> Vec<Resource> {
    (0..count)
        .map(|i| {
            File::new(
                format!("{dir}/conf-{i}.cfg"),
                format!("value = {i}\nversion = {version}\n"),
            )
            .mode(0o640)
            .into()
        })
        .collect()
}

#[tokio::test]
async fn fifty_files_converge_then_a_second_run_changes_nothing_in_one_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let host = Host::local("local");
    let resources = files(dir, 50, "1");

    let first = engine::converge(&host, &resources, &options(Mode::Apply)).await;
    assert_eq!(first.outcome, Outcome::Changed, "{first:?}");
    assert_eq!(first.changes.len(), 50);
    assert_eq!(first.round_trips, 2, "one check, one apply");
    let meta = fs::metadata(format!("{dir}/conf-7.cfg")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(
        fs::read_to_string(format!("{dir}/conf-7.cfg")).unwrap(),
        "value = 7\nversion = 1\n"
    );

    let second = engine::converge(&host, &resources, &options(Mode::Apply)).await;
    assert_eq!(second.outcome, Outcome::Unchanged, "{second:?}");
    assert!(second.changes.is_empty());
    assert_eq!(second.round_trips, 1);
    let leftovers: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".provision"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test]
async fn a_check_run_inside_another_script_leaves_only_the_fix_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let host = Host::local("local");
    let resources = files(dir, 3, "1");
    engine::converge(&host, &resources, &options(Mode::Apply)).await;
    // The check inside a step of its own, between that step's `@key=value` lines.
    let step = format!(
        "echo @revision=abc\n{}echo @unchanged=/srv/releases/1\n",
        engine::check_script(&resources).unwrap()
    );
    let run_step = || async {
        host.exec(Command::new(step.clone()))
            .await
            .unwrap()
            .stdout_lossy()
    };

    let checked = run_step().await;
    let in_sync =
        engine::converge_checked(&host, &resources, Some(&checked), &options(Mode::Apply)).await;
    assert_eq!(in_sync.outcome, Outcome::Unchanged, "{in_sync:?}");
    assert_eq!(in_sync.round_trips, 0);

    fs::write(format!("{dir}/conf-1.cfg"), "changed by hand\n").unwrap();
    let checked = run_step().await;
    let fixed =
        engine::converge_checked(&host, &resources, Some(&checked), &options(Mode::Apply)).await;
    assert_eq!(fixed.outcome, Outcome::Changed, "{fixed:?}");
    assert_eq!(fixed.changes.len(), 1);
    assert_eq!(fixed.round_trips, 1, "the fix only");
    assert_eq!(
        fs::read_to_string(format!("{dir}/conf-1.cfg")).unwrap(),
        "value = 1\nversion = 1\n"
    );

    // A check cut short is run again.
    fs::write(format!("{dir}/conf-2.cfg"), "changed by hand\n").unwrap();
    let cut = checked.replace("@end\n", "");
    let again =
        engine::converge_checked(&host, &resources, Some(&cut), &options(Mode::Apply)).await;
    assert_eq!(again.outcome, Outcome::Changed, "{again:?}");
    assert_eq!(again.round_trips, 2, "its own check, then the fix");
}

#[tokio::test]
async fn plan_shows_a_masked_diff_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("haproxy.cfg");
    fs::write(&path, "stats auth admin:old\nbalance roundrobin\n").unwrap();
    let host = Host::local("local");
    let wanted: Vec<Resource> = vec![
        File::new(
            path.to_str().unwrap(),
            "stats auth admin:s3cr3t-pass\nbalance leastconn\n",
        )
        .mode(0o644)
        .into(),
    ];
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

    let plan = engine::converge(&host, &wanted, &options(Mode::Plan)).await;
    assert_eq!(plan.outcome, Outcome::Planned);
    let diff = plan.changes[0].diff.as_deref().unwrap();
    assert!(diff.contains("-balance roundrobin"), "{diff}");
    assert!(diff.contains("+balance leastconn"), "{diff}");
    assert!(diff.contains("+stats auth admin:********"), "{diff}");
    assert!(!diff.contains("s3cr3t-pass"), "secret printed: {diff}");
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "stats auth admin:old\nbalance roundrobin\n",
        "plan changed the file"
    );
}

#[tokio::test]
async fn a_failed_validation_keeps_the_live_file_and_names_the_resource() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nginx.conf");
    fs::write(&path, "good\n").unwrap();
    let host = Host::local("local");
    let wanted: Vec<Resource> = vec![
        File::new(path.to_str().unwrap(), "broken\n")
            .validate("grep -q good {} || { echo 'config test failed' >&2; false; }")
            .into(),
    ];
    let report = engine::converge(&host, &wanted, &options(Mode::Apply)).await;
    let Outcome::Failed(message) = &report.outcome else {
        panic!("expected a failure, got {report:?}");
    };
    assert!(
        message.contains(&format!("file:{}", path.display())),
        "{message}"
    );
    assert!(message.contains("config test failed"), "{message}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "good\n");
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temporary file left behind: {names:?}");
}

#[tokio::test]
async fn directories_and_symlinks_converge_and_a_symlink_never_replaces_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_str().unwrap();
    fs::create_dir(format!("{base}/releases")).unwrap();
    fs::create_dir(format!("{base}/releases/a")).unwrap();
    fs::create_dir(format!("{base}/releases/b")).unwrap();
    std::os::unix::fs::symlink(format!("{base}/releases/a"), format!("{base}/current")).unwrap();
    fs::create_dir(format!("{base}/occupied")).unwrap();
    let host = Host::local("local");
    let me = users_name();

    let resources: Vec<Resource> = vec![
        Directory::new(format!("{base}/data"))
            .owner(&me.0, &me.1)
            .mode(0o700)
            .into(),
        Symlink::new(format!("{base}/current"), format!("{base}/releases/b")).into(),
    ];
    let report = engine::converge(&host, &resources, &options(Mode::Apply)).await;
    assert_eq!(report.outcome, Outcome::Changed, "{report:?}");
    assert_eq!(
        fs::read_link(format!("{base}/current"))
            .unwrap()
            .to_str()
            .unwrap(),
        format!("{base}/releases/b")
    );
    let meta = fs::metadata(format!("{base}/data")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    assert_eq!(meta.uid(), nix_uid());

    // A symlink may not silently replace a real directory.
    let refused: Vec<Resource> = vec![Symlink::new(format!("{base}/occupied"), "/tmp").into()];
    let report = engine::converge(&host, &refused, &options(Mode::Apply)).await;
    let Outcome::Failed(message) = &report.outcome else {
        panic!("expected a failure, got {report:?}");
    };
    assert!(message.contains("not a symlink"), "{message}");
    assert!(fs::metadata(format!("{base}/occupied")).unwrap().is_dir());
}

fn users_name() -> (String, String) {
    let out = std::process::Command::new("sh")
        .args(["-c", "id -un; id -gn"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    (
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
    )
}

fn nix_uid() -> u32 {
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_failing_step_stops_the_run_before_later_resources() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let host = Host::local("local");
    let resources: Vec<Resource> = vec![
        File::new(format!("{dir}/first"), "1\n").into(),
        File::new(format!("{dir}/second"), "2\n")
            .validate("false")
            .into(),
        File::new(format!("{dir}/third"), "3\n").into(),
    ];
    let report = engine::converge(&host, &resources, &options(Mode::Apply)).await;
    let Outcome::Failed(message) = &report.outcome else {
        panic!("expected a failure, got {report:?}");
    };
    assert!(message.contains(&format!("file:{dir}/second")), "{message}");
    assert!(fs::metadata(format!("{dir}/first")).is_ok());
    assert!(fs::metadata(format!("{dir}/second")).is_err());
    assert!(
        fs::metadata(format!("{dir}/third")).is_err(),
        "the run went on after a failure"
    );
}

#[tokio::test]
async fn a_script_resource_runs_its_fix_only_when_its_check_fails() {
    use provision_core::resource::Script;
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("venv-ready");
    let counter = tmp.path().join("fixes");
    let m = marker.display();
    let c = counter.display();
    let resources: Vec<Resource> = vec![
        Script::new(
            "venv",
            "create the virtualenv",
            &format!("test -e {m}"),
            &format!("echo run >> {c}; touch {m}"),
        )
        .into(),
    ];
    let plan = engine::converge(&Host::local("local"), &resources, &options(Mode::Plan)).await;
    assert_eq!(plan.outcome, Outcome::Planned);
    assert_eq!(plan.changes[0].summary, vec!["create the virtualenv"]);
    assert!(!counter.exists(), "plan ran the fix");
    for _ in 0..2 {
        engine::converge(&Host::local("local"), &resources, &options(Mode::Apply)).await;
    }
    assert_eq!(
        fs::read_to_string(&counter).unwrap(),
        "run\n",
        "the fix ran once"
    );
}

#[tokio::test]
async fn a_secret_file_shows_that_it_changes_but_not_what_it_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("site.key");
    fs::write(&path, "old key material\n").unwrap();
    let resources: Vec<Resource> = vec![
        File::new(path.to_str().unwrap(), "new key material\n")
            .mode(0o600)
            .secret()
            .into(),
    ];
    let plan = engine::converge(&Host::local("local"), &resources, &options(Mode::Plan)).await;
    let change = &plan.changes[0];
    assert!(
        change.summary.contains(&"content changed".to_string()),
        "{change:?}"
    );
    assert_eq!(change.diff.as_deref(), Some("(secret content not shown)\n"));
}
