//! Deploys end to end on sandbox hosts: the Zope example app built with buildout on two
//! instance hosts, ZEO on a third, nginx + HAProxy on a fourth; new releases under load,
//! broken builds, failed health checks, rollback and pruning.
//!
//! Without root or systemd-nspawn these tests skip with one line, except under
//! PROVISION_SANDBOX=required (CI), where they fail.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use provision_sandbox::fixture;

const SECRET: [(&str, &str); 1] = [("PROVISION_SECRET_HAPROXY_STATS_PASSWORD", "st4ts-Secret")];

fn provision(dir: &Path, args: &[&str]) -> Output {
    common::provision(dir, args, &SECRET)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.email=ci@example.org", "-c", "user.name=ci"])
        .args(args)
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

/// The Zope example app as a git repository on the controller (pushed to the hosts).
fn example_repository(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("site");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/apps/buildout");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(&example)
        .arg(&repo)
        .status()
        .unwrap();
    assert!(copied.success());
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "the Zope example"]);
    repo
}

fn commit(repo: &Path, file: &str, content: &str, message: &str) {
    std::fs::write(repo.join(file), content).unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", message]);
}

fn write_stack(dir: &Path, hosts: &fixture::Hosts, extra: &str) {
    common::write_stack(
        dir,
        hosts,
        &format!(
            "[hosts.lb1]\naddress = \"192.0.2.10\"\nlayers = [\"lb\"]\n\
             [hosts.app1]\naddress = \"192.0.2.11\"\nlayers = [\"plone_instances\"]\n\
             [hosts.app2]\naddress = \"192.0.2.12\"\nlayers = [\"plone_instances\"]\n\
             [hosts.db1]\naddress = \"192.0.2.20\"\nlayers = [\"zeoserver\"]\n\
             [apps.site]\nrepository = \"site\"\n\
             [attributes.plone_instances]\ninstance_count = 2\nshared_blobs = false\n\
             # A Zope app without Plone: the site is the Zope root.\nsite_id = \"\"\n\
             [attributes.haproxy]\nhealth_check_url = \"/\"\ncheck_interval = 1000\n\
             [attributes.deploy.site]\nkeep_releases = 2\n{extra}"
        ),
    );
}

/// One HTTP/1.0 GET from the controller; the status, or 0 when the connection failed.
fn get(address: &str, path: &str) -> u16 {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(5))
    else {
        return 0;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").is_err() {
        return 0;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The live release of a host (`current`'s target).
fn current(hosts: &fixture::Hosts, host: &str) -> String {
    let out = hosts.ssh(hosts.host(host), "readlink -f /srv/www/site/current");
    text(&out.stdout).trim().to_string()
}

fn releases(hosts: &fixture::Hosts, host: &str) -> Vec<String> {
    let out = hosts.ssh(hosts.host(host), "ls /srv/www/site/releases");
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// A bounded load loop through nginx: sequential GETs until stopped (at most 5000 requests
/// or 10 minutes); (requests, failures).
fn load(address: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Vec<u16>)> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let (mut requests, mut failures) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed)
            && requests < 5000
            && start.elapsed() < Duration::from_secs(600)
        {
            requests += 1;
            let status = get(&address, "/");
            if status != 200 {
                failures.push(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (requests, failures)
    })
}

#[test]
fn releases_roll_out_without_a_failed_request_and_bad_ones_change_nothing() {
    let Some(hosts) = fixture::named_blocking(&["lb1", "app1", "app2", "db1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = example_repository(dir.path());
    write_stack(dir.path(), &hosts, "");

    // First `up`: every layer, then the first release on both instance hosts.
    let out = provision(dir.path(), &["up", "--sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("app1: deployed"),
        "{}",
        show(&out)
    );
    let first = current(&hosts, "app1");
    let first_app2 = current(&hosts, "app2");
    assert!(first.starts_with("/srv/www/site/releases/"), "{first}");
    for host in ["app1", "app2"] {
        let address = hosts.host(host).address().to_string();
        for port in [8081, 8082] {
            assert_eq!(get(&format!("{address}:{port}"), "/"), 200, "{host}:{port}");
        }
    }
    let web = format!("{}:80", hosts.host("lb1").address());
    assert_eq!(get(&web, "/"), 200);

    // The same revision again: nothing to do.
    let started = Instant::now();
    let out = provision(dir.path(), &["deploy", "--sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("app1: release unchanged"),
        "{}",
        show(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(current(&hosts, "app1"), first);

    // A client stopped and disabled by hand on an unchanged release, and a client beyond
    // the host's count enabled: `up` enables and starts the one, disables the other (its
    // prepare step checked the clients for it) and says so.
    hosts.ssh(
        hosts.host("app1"),
        "systemctl disable --now plone-site@client2; systemctl enable plone-site@client9",
    );
    let out = provision(dir.path(), &["up", "--sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = text(&out.stdout);
    for line in [
        "app1: release unchanged",
        "app1: fixed service:plone-site@client2: enable (is disabled), start (is inactive)",
        "app1: fixed instances:plone-site@: stop and disable plone-site@client9.service \
         (wanted: plone-site@client1.service, plone-site@client2.service)",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{}", show(&out));
    }
    let surplus = hosts.ssh(
        hosts.host("app1"),
        "systemctl is-enabled plone-site@client9 || true",
    );
    assert_eq!(text(&surplus.stdout).trim(), "disabled", "{}", show(&out));
    let state = hosts.ssh(
        hosts.host("app1"),
        "systemctl is-enabled plone-site@client2; systemctl is-active plone-site@client2",
    );
    assert_eq!(
        text(&state.stdout).split_whitespace().collect::<Vec<_>>(),
        ["enabled", "active"],
        "{}",
        show(&out)
    );
    // Serving and UP in HAProxy again before the load below.
    let client2 = format!("{}:8082", hosts.host("app1").address());
    common::wait_for("client2 of app1 answers", Duration::from_secs(120), || {
        get(&client2, "/") == 200
    });
    common::wait_for("app1-2 is UP in HAProxy", Duration::from_secs(60), || {
        common::haproxy_servers(dir.path(), &SECRET, "lb1")
            .iter()
            .any(|(server, status)| server == "app1-2" && status == "UP")
    });

    // A new commit under load: a new release on both hosts, no failed request.
    commit(&repo, "NEWS.txt", "v2\n", "v2");
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(web.clone(), stop.clone());
    let out = provision(dir.path(), &["deploy", "--sandbox"]);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (requests, failures) = loader.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let second = current(&hosts, "app1");
    assert_ne!(second, first);
    assert_ne!(current(&hosts, "app2"), first_app2);
    assert!(requests > 20, "the load loop ran only {requests} requests");
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed during the rollout: {failures:?}\n{}",
        failures.len(),
        show(&out)
    );
    // keep_releases = 2: the live and the previous one.
    assert_eq!(
        releases(&hosts, "app1").len(),
        2,
        "{:?}",
        releases(&hosts, "app1")
    );

    // A commit that breaks buildout: the deploy fails, nothing live changes.
    let base = std::fs::read_to_string(repo.join("cfg/base.cfg")).unwrap();
    assert!(base.contains("recipe = plone.recipe.zope2instance"));
    commit(
        &repo,
        "cfg/base.cfg",
        &base.replace(
            "recipe = plone.recipe.zope2instance",
            "recipe = no.such.recipe",
        ),
        "broken build",
    );
    let out = provision(dir.path(), &["deploy", "--sandbox"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("FAILED: building"),
        "{}",
        show(&out)
    );
    assert_eq!(current(&hosts, "app1"), second);
    assert_eq!(get(&web, "/"), 200);
    git(&repo, &["revert", "--no-edit", "HEAD"]);

    // A commit that builds but whose clients do not start: app1 goes back, the rollout stops
    // before app2, and the command names the host, the client and its log.
    assert!(base.contains("zodb-temporary-storage = off"));
    commit(
        &repo,
        "cfg/base.cfg",
        &base.replace(
            "zodb-temporary-storage = off",
            "zodb-temporary-storage = off\nzope-conf-additional = this-is-not-a-zope-directive on",
        ),
        "a client that cannot start",
    );
    let app2_before = current(&hosts, "app2");
    let out = provision(
        dir.path(),
        &["deploy", "--sandbox", "--health-timeout", "20"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("app1: FAILED: host app1, client1"),
        "{}",
        show(&out)
    );
    assert!(stdout.contains("app1 is back on"), "{}", show(&out));
    assert!(stdout.contains("app2: built"), "{}", show(&out));
    assert_eq!(current(&hosts, "app1"), second);
    assert_eq!(current(&hosts, "app2"), app2_before);
    assert_eq!(get(&web, "/"), 200);

    // `provision rollback`: both hosts back on the release before.
    let out = provision(dir.path(), &["rollback", "--sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(current(&hosts, "app1"), first);
    assert_eq!(current(&hosts, "app2"), first_app2);
    assert_eq!(get(&web, "/"), 200);

    // `provision restart` two clients at a time (a whole host here) under load: the other
    // host serves meanwhile, no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(web.clone(), stop.clone());
    let out = provision(
        dir.path(),
        &["restart", "--sandbox", "--max-in-flight", "2"],
    );
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (requests, failures) = loader.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("app2: every client restarted"),
        "{}",
        show(&out)
    );
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed during the restart: {failures:?}",
        failures.len()
    );

    // One client per host now: the second ones stop, are disabled, and leave HAProxy. (The
    // broken commit reverted first: `up` deploys the repository's head.)
    git(&repo, &["revert", "--no-edit", "HEAD"]);
    let stack = std::fs::read_to_string(dir.path().join("stack.toml")).unwrap();
    std::fs::write(
        dir.path().join("stack.toml"),
        stack.replacen("instance_count = 2", "instance_count = 1", 1),
    )
    .unwrap();
    let out = provision(dir.path(), &["up", "--sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    for host in ["app1", "app2"] {
        let state = hosts.ssh(
            hosts.host(host),
            "systemctl is-active plone-site@client2; systemctl is-enabled plone-site@client2; \
             systemctl is-active plone-site@client1",
        );
        assert_eq!(
            text(&state.stdout).split_whitespace().collect::<Vec<_>>(),
            ["inactive", "disabled", "active"],
            "{host}: {}",
            show(&state)
        );
    }
    let lb = hosts.ssh(hosts.host("lb1"), "cat /etc/haproxy/haproxy.cfg");
    let config = text(&lb.stdout);
    assert!(
        config.contains("app1-1") && !config.contains("app1-2"),
        "{config}"
    );
    assert_eq!(get(&web, "/"), 200);
    let out = provision(dir.path(), &["plan", "--sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        !text(&out.stdout).contains("stop and disable"),
        "{}",
        show(&out)
    );
}
