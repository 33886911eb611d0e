//! Faults during work, on sandbox hosts: a host that crashes (PID 1 killed) in the middle of a
//! deploy, a host partitioned from the controller or frozen in the middle of `configure`, and
//! a controller killed with SIGKILL in the middle of `up`. Each test checks what a user sees:
//! the exit code, the message naming the host, and the state of the hosts; then that a rerun
//! converges.
//!
//! Without root or systemd-nspawn these tests skip with one line, except under
//! PROVISION_SANDBOX=required (CI), where they fail.

mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{commit, sh, text, write_stack, zope_example_repository};
use provision_sandbox::fixture;

const SECRET: (&str, &str) = ("PROVISION_SECRET_HAPROXY_STATS_PASSWORD", "st4ts-Secret");

/// The machine has 2 cores: one sandbox at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A `provision` run in the background: stderr (progress) line by line, stdout at the end.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stdout: std::thread::JoinHandle<String>,
    started: Instant,
}

/// What a finished run left.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Finished {
    fn show(&self) -> String {
        format!(
            "{:?} after {:.1}s\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

fn spawn(dir: &Path, args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(args)
        .current_dir(dir)
        .env_remove("PROVISION_STACK")
        .env(SECRET.0, SECRET.1)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the provision binary runs");
    let (send, lines) = mpsc::channel();
    let stderr = Arc::new(Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    let all = Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            all.lock().unwrap().push_str(&format!("{line}\n"));
            let _ = send.send(line);
        }
    });
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    Running {
        child,
        lines,
        stderr,
        stdout,
        started: Instant::now(),
    }
}

impl Running {
    /// Waits for a progress line containing `needle`; panics after `limit`.
    fn wait_line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no progress line with `{needle}` within {limit:?}:\n{}",
                        self.stderr.lock().unwrap()
                    );
                }
            }
        }
    }

    /// Waits for the command to end (at most `limit`, else kills it and panics).
    fn finish(mut self, limit: Duration) -> Finished {
        let deadline = self.started + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "provision did not end within {limit:?}:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let elapsed = self.started.elapsed();
        let stdout = self.stdout.join().unwrap();
        // Let the reader thread drain what is left.
        std::thread::sleep(Duration::from_millis(200));
        let stderr = self.stderr.lock().unwrap().clone();
        Finished {
            status,
            stdout,
            stderr,
            elapsed,
        }
    }
}

fn run(dir: &Path, args: &[&str], limit: Duration) -> Finished {
    spawn(dir, args).finish(limit)
}

/// The release `current` points at on a host, read from its disk (also while it is down),
/// and whether that release finished building.
fn live_release(hosts: &fixture::Hosts, host: &str) -> Option<(String, bool)> {
    let disk = hosts.host(host).disk();
    let target = std::fs::read_link(disk.join("srv/www/site/current")).ok()?;
    let target = target.to_string_lossy().to_string();
    let relative = target.trim_start_matches('/');
    let built = disk.join(relative).join(".provision/built").exists();
    Some((target, built))
}

/// Every instance host's `current` points at a release that built completely.
fn assert_live_releases_built(hosts: &fixture::Hosts, names: &[&str], context: &str) {
    for host in names {
        if let Some((release, built)) = live_release(hosts, host) {
            assert!(
                built,
                "{host}: current points at {release}, which did not build\n{context}"
            );
        }
    }
}

#[test]
fn a_crashed_host_or_a_killed_controller_during_a_deploy_leave_old_or_new_and_a_rerun_converges() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(hosts) = fixture::named_blocking(&["app1", "app2", "db1"]) else {
        return;
    };
    let instances = ["app1", "app2"];
    let dir = tempfile::tempdir().unwrap();
    let repo = zope_example_repository(dir.path(), &[], "the Zope example");
    write_stack(
        dir.path(),
        &hosts,
        "[hosts.app1]\naddress = \"192.0.2.11\"\nlayers = [\"plone_instances\"]\n\
         [hosts.app2]\naddress = \"192.0.2.12\"\nlayers = [\"plone_instances\"]\n\
         [hosts.db1]\naddress = \"192.0.2.20\"\nlayers = [\"zeoserver\"]\n\
         [apps.site]\nrepository = \"site\"\n\
         [attributes.plone_instances]\ninstance_count = 1\nshared_blobs = false\n\
         site_id = \"\"\n\
         [attributes.haproxy]\nhealth_check_url = \"/\"\n",
    );
    let long = Duration::from_secs(1200);

    // 1. The controller is killed (SIGKILL) while `up` builds the first release.
    let mut up = spawn(dir.path(), &["up", "--sandbox"]);
    up.wait_line("[app1] building", long);
    std::thread::sleep(Duration::from_secs(3));
    up.child.kill().unwrap();
    let killed = up.finish(Duration::from_secs(1300));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed.status),
        Some(9),
        "{}",
        killed.show()
    );
    assert_live_releases_built(&hosts, &instances, &killed.show());

    // The next `up` finishes the job; a plan after it shows nothing to change.
    let again = run(dir.path(), &["up", "--sandbox"], long);
    assert_eq!(again.status.code(), Some(0), "{}", again.show());
    for host in instances {
        let (release, built) = live_release(&hosts, host).expect("a live release");
        assert!(built, "{host}: {release}\n{}", again.show());
        let address = hosts.host(host).address();
        let status = sh(
            &hosts,
            host,
            &format!(
                "python3 -c 'import urllib.request; \
                 print(urllib.request.urlopen(\"http://{address}:8081/\", timeout=30).status)'"
            ),
        );
        assert_eq!(status.trim(), "200", "{host}");
    }
    let plan = run(dir.path(), &["plan", "--sandbox"], long);
    assert_eq!(plan.status.code(), Some(0), "{}", plan.show());
    assert!(!plan.stdout.contains("would change"), "{}", plan.show());
    let deploy = run(dir.path(), &["deploy", "--sandbox"], long);
    assert_eq!(deploy.status.code(), Some(0), "{}", deploy.show());
    for host in instances {
        assert!(
            deploy
                .stdout
                .contains(&format!("{host}: release unchanged")),
            "{}",
            deploy.show()
        );
    }

    // 2. app1 crashes while a new revision builds, default --max-fail 0: the deploy names
    //    app1, exits 1, and app2 stays on its old release.
    let app2_before = live_release(&hosts, "app2").unwrap().0;
    commit(&repo, "NEWS.txt", "v2\n", "v2");
    slow_builds(&hosts, "app1", true);
    let mut deploy = spawn(dir.path(), &["deploy", "--sandbox"]);
    deploy.wait_line("[app1] building", long);
    std::thread::sleep(Duration::from_secs(2));
    hosts.host("app1").crash().unwrap();
    let crashed = deploy.finish(long);
    eprintln!("deploy with a crashed host:\n{}", crashed.show());
    assert_eq!(crashed.status.code(), Some(1), "{}", crashed.show());
    assert!(
        crashed.stdout.contains("app1: FAILED"),
        "{}",
        crashed.show()
    );
    assert!(
        crashed.stdout.contains("app2: built") && crashed.stdout.contains("not switched"),
        "{}",
        crashed.show()
    );
    assert_eq!(live_release(&hosts, "app2").unwrap().0, app2_before);
    assert_live_releases_built(&hosts, &instances, &crashed.show());

    // app1 is back: a rerun deploys the revision on both.
    hosts.host("app1").start().unwrap();
    slow_builds(&hosts, "app1", false);
    let rerun = run(dir.path(), &["deploy", "--sandbox"], long);
    assert_eq!(rerun.status.code(), Some(0), "{}", rerun.show());
    for host in instances {
        assert!(
            rerun.stdout.contains(&format!("{host}: deployed")),
            "{}",
            rerun.show()
        );
    }
    assert_ne!(live_release(&hosts, "app2").unwrap().0, app2_before);
    assert_live_releases_built(&hosts, &instances, &rerun.show());

    // 3. The same crash with --max-fail 1: app2 goes on to the new release, app1 is named
    //    as failed; once app1 is back a rerun brings it along and leaves app2 as it is.
    let app2_before = live_release(&hosts, "app2").unwrap().0;
    commit(&repo, "NEWS.txt", "v3\n", "v3");
    slow_builds(&hosts, "app1", true);
    let mut deploy = spawn(dir.path(), &["deploy", "--sandbox", "--max-fail", "1"]);
    deploy.wait_line("[app1] building", long);
    std::thread::sleep(Duration::from_secs(2));
    hosts.host("app1").crash().unwrap();
    let crashed = deploy.finish(long);
    eprintln!("deploy with a crashed host:\n{}", crashed.show());
    assert_eq!(crashed.status.code(), Some(1), "{}", crashed.show());
    assert!(
        crashed.stdout.contains("app1: FAILED"),
        "{}",
        crashed.show()
    );
    assert!(
        crashed.stdout.contains("app2: deployed"),
        "{}",
        crashed.show()
    );
    let app2_new = live_release(&hosts, "app2").unwrap().0;
    assert_ne!(app2_new, app2_before);
    assert_live_releases_built(&hosts, &instances, &crashed.show());
    hosts.host("app1").start().unwrap();
    slow_builds(&hosts, "app1", false);
    let rerun = run(dir.path(), &["deploy", "--sandbox"], long);
    assert_eq!(rerun.status.code(), Some(0), "{}", rerun.show());
    assert!(rerun.stdout.contains("app1: deployed"), "{}", rerun.show());
    assert!(
        rerun.stdout.contains("app2: release unchanged"),
        "{}",
        rerun.show()
    );
    assert_eq!(live_release(&hosts, "app2").unwrap().0, app2_new);
    assert_live_releases_built(&hosts, &instances, &rerun.show());

    // 4. app1 cannot be set up (a file where a directory of its setup belongs): without
    //    --max-fail nothing is deployed; with --max-fail 1 app2 takes the new revision and
    //    app1 is named with the step; once app1 is mended a rerun brings it along.
    let app1_before = live_release(&hosts, "app1").unwrap().0;
    commit(&repo, "NEWS.txt", "v4\n", "v4");
    let downloads = "/srv/www/site/shared/downloads";
    sh(
        &hosts,
        "app1",
        &format!("rm -rf {downloads} && touch {downloads}"),
    );
    let refused = run(dir.path(), &["deploy", "--sandbox"], long);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.show());
    assert!(
        refused.stdout.contains("app1: FAILED") && refused.stdout.contains("setting up"),
        "{}",
        refused.show()
    );
    assert!(
        refused.stderr.contains("more than --max-fail allows"),
        "{}",
        refused.show()
    );
    assert_eq!(live_release(&hosts, "app2").unwrap().0, app2_new);
    let partial = run(
        dir.path(),
        &["deploy", "--sandbox", "--max-fail", "1"],
        long,
    );
    assert_eq!(partial.status.code(), Some(1), "{}", partial.show());
    assert!(
        partial.stdout.contains("app1: FAILED") && partial.stdout.contains("app2: deployed"),
        "{}",
        partial.show()
    );
    assert_ne!(live_release(&hosts, "app2").unwrap().0, app2_new);
    assert_eq!(live_release(&hosts, "app1").unwrap().0, app1_before);
    sh(&hosts, "app1", &format!("rm -f {downloads}"));
    let rerun = run(dir.path(), &["deploy", "--sandbox"], long);
    assert_eq!(rerun.status.code(), Some(0), "{}", rerun.show());
    assert!(rerun.stdout.contains("app1: deployed"), "{}", rerun.show());
    assert_live_releases_built(&hosts, &instances, &rerun.show());
}

/// The file `configure` changes on every host of the base-system stack.
const UPGRADES: &str = "etc/apt/apt.conf.d/51provision-unattended-upgrades";

fn base_stack(dir: &Path, hosts: &fixture::Hosts, mail: &str) {
    write_stack(
        dir,
        hosts,
        &format!(
            "[stack.ssh]\nconnect_timeout = 5\n\
             [hosts.web1]\naddress = \"192.0.2.31\"\nlayers = []\n\
             [hosts.web2]\naddress = \"192.0.2.32\"\nlayers = []\n\
             [hosts.web3]\naddress = \"192.0.2.33\"\nlayers = []\n\
             [attributes.apt.unattended_upgrades]\nmail = \"{mail}\"\n"
        ),
    );
}

/// The managed file on a host's disk.
fn upgrades_file(hosts: &fixture::Hosts, host: &str) -> String {
    std::fs::read_to_string(hosts.host(host).disk().join(UPGRADES)).unwrap_or_default()
}

/// Temporary files of atomic writes left in the managed file's directory.
fn leftovers(hosts: &fixture::Hosts, host: &str) -> Vec<String> {
    let dir = hosts
        .host(host)
        .disk()
        .join(Path::new(UPGRADES).parent().unwrap());
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(".provision."))
                .collect()
        })
        .unwrap_or_default()
}

/// Makes builds on `host` slow (its `tar`, which unpacks the release, sleeps first), so that
/// a crash lands in the middle of the build: a Zope example build takes about a second.
fn slow_builds(hosts: &fixture::Hosts, host: &str, on: bool) {
    let script = if on {
        "printf '#!/bin/sh\\nsleep 10\\nexec /bin/tar \"$@\"\\n' > /usr/local/bin/tar && \
         chmod 755 /usr/local/bin/tar"
    } else {
        "rm -f /usr/local/bin/tar"
    };
    let out = hosts.host(host).sh(script).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Makes the next file write on `host` slow (its `sync` sleeps), so a fault can be injected
/// while `configure` is writing there: the temporary file is complete, not yet renamed.
fn slow_writes(hosts: &fixture::Hosts, host: &str, on: bool) {
    let script = if on {
        "printf '#!/bin/sh\\nsleep 10\\nexec /bin/sync \"$@\"\\n' > /usr/local/bin/sync && \
         chmod 755 /usr/local/bin/sync"
    } else {
        "rm -f /usr/local/bin/sync"
    };
    let out = hosts.host(host).sh(script).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_partitioned_or_frozen_host_during_configure_is_reported_in_time_and_a_rerun_converges() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(hosts) = fixture::named_blocking(&["web1", "web2", "web3"]) else {
        return;
    };
    let names = ["web1", "web2", "web3"];
    let dir = tempfile::tempdir().unwrap();
    let long = Duration::from_secs(900);
    base_stack(dir.path(), &hosts, "old@example.org");
    let up = run(dir.path(), &["up", "--sandbox"], long);
    assert_eq!(up.status.code(), Some(0), "{}", up.show());
    let old = upgrades_file(&hosts, "web1");
    assert!(old.contains("old@example.org"), "{old}");

    // 1. web1 is partitioned from the controller while `configure` writes the file there.
    base_stack(dir.path(), &hosts, "new@example.org");
    slow_writes(&hosts, "web1", true);
    let mut configure = spawn(dir.path(), &["configure", "--sandbox", "--timeout", "15"]);
    configure.wait_line("[web1] applying", Duration::from_secs(120));
    hosts.host("web1").partition().unwrap();
    // While cut off, the live file is the old one or the new one, whole, never a part.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(12) {
        let now = upgrades_file(&hosts, "web1");
        assert!(
            now == old || now.contains("new@example.org") && now.ends_with('\n'),
            "a half-written file on web1:\n{now}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let cut = configure.finish(Duration::from_secs(120));
    eprintln!("configure with a partitioned host:\n{}", cut.stdout);
    assert_eq!(cut.status.code(), Some(1), "{}", cut.show());
    assert!(
        cut.stdout
            .contains("web1: FAILED: applying web1: command did not finish within 15s"),
        "{}",
        cut.show()
    );
    // The bound: 15 s from the write on web1, plus the other steps.
    assert!(cut.elapsed < Duration::from_secs(45), "{}", cut.show());
    for host in ["web2", "web3"] {
        assert!(
            cut.stdout.contains(&format!("{host}: changed")),
            "{}",
            cut.show()
        );
        assert!(upgrades_file(&hosts, host).contains("new@example.org"));
    }
    hosts.host("web1").heal().unwrap();
    slow_writes(&hosts, "web1", false);
    let rerun = run(dir.path(), &["configure", "--sandbox"], long);
    assert_eq!(rerun.status.code(), Some(0), "{}", rerun.show());
    let plan = run(dir.path(), &["plan", "--sandbox"], long);
    assert_eq!(plan.status.code(), Some(0), "{}", plan.show());
    assert!(!plan.stdout.contains("would change"), "{}", plan.show());
    for host in names {
        assert!(upgrades_file(&hosts, host).contains("new@example.org"));
        assert_eq!(leftovers(&hosts, host), Vec::<String>::new(), "{host}");
    }

    // 2. web2 freezes (every process stopped) while `configure` writes there: it is reported
    //    after the bound, and web1 and web3 are done long before.
    base_stack(dir.path(), &hosts, "frozen@example.org");
    slow_writes(&hosts, "web2", true);
    let mut configure = spawn(dir.path(), &["configure", "--sandbox", "--timeout", "20"]);
    configure.wait_line("[web2] applying", Duration::from_secs(120));
    hosts.host("web2").freeze().unwrap();
    let frozen_at = Instant::now();
    let mut others_done = None;
    while frozen_at.elapsed() < Duration::from_secs(60) && others_done.is_none() {
        if ["web1", "web3"]
            .iter()
            .all(|h| upgrades_file(&hosts, h).contains("frozen@example.org"))
        {
            others_done = Some(frozen_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let frozen = configure.finish(Duration::from_secs(120));
    eprintln!("configure with a frozen host:\n{}", frozen.stdout);
    let others_done = others_done.expect("web1 and web3 converge while web2 is frozen");
    assert!(
        others_done < Duration::from_secs(10),
        "web1 and web3 waited for the frozen host: {others_done:?}"
    );
    assert_eq!(frozen.status.code(), Some(1), "{}", frozen.show());
    assert!(
        frozen
            .stdout
            .contains("web2: FAILED: applying web2: command did not finish within 20s"),
        "{}",
        frozen.show()
    );
    assert!(
        frozen.elapsed < Duration::from_secs(50),
        "{}",
        frozen.show()
    );
    for host in ["web1", "web3"] {
        assert!(
            frozen.stdout.contains(&format!("{host}: changed")),
            "{}",
            frozen.show()
        );
    }
    hosts.host("web2").thaw().unwrap();
    slow_writes(&hosts, "web2", false);

    // 3. web2 frozen before the command: the connection times out within connect_timeout
    //    (5 s), the others converge.
    base_stack(dir.path(), &hosts, "again@example.org");
    hosts.host("web2").freeze().unwrap();
    let frozen = run(
        dir.path(),
        &["configure", "--sandbox"],
        Duration::from_secs(120),
    );
    hosts.host("web2").thaw().unwrap();
    assert_eq!(frozen.status.code(), Some(1), "{}", frozen.show());
    assert!(
        frozen
            .stdout
            .contains("web2: FAILED: connecting: no SSH answer from"),
        "{}",
        frozen.show()
    );
    assert!(
        frozen.elapsed < Duration::from_secs(40),
        "{}",
        frozen.show()
    );
    for host in ["web1", "web3"] {
        assert!(upgrades_file(&hosts, host).contains("again@example.org"));
    }

    // Thawed, a rerun converges everything and nothing is left to change.
    let rerun = run(dir.path(), &["configure", "--sandbox"], long);
    assert_eq!(rerun.status.code(), Some(0), "{}", rerun.show());
    let plan = run(dir.path(), &["plan", "--sandbox"], long);
    assert_eq!(plan.status.code(), Some(0), "{}", plan.show());
    assert!(!plan.stdout.contains("would change"), "{}", plan.show());
    for host in names {
        assert!(upgrades_file(&hosts, host).contains("again@example.org"));
        assert_eq!(leftovers(&hosts, host), Vec::<String>::new(), "{host}");
    }
}
