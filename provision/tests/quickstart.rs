//! The README's quick start, run as a user would: `scripts/demo` boots the demo stack's four
//! sandbox hosts, sets them up, deploys the example app and creates its Plone site; the site
//! answers through nginx with its title, a task sent through the site runs on a Celery worker,
//! and a document it indexes into Solr is found; a second run changes nothing.
//!
//! The stack is `examples/demo.toml` under another sandbox name (a user's own demo stays
//! untouched), and the script uses this test's `provision` instead of building a release one.
//! Solr's archive is the one assembled from Maven artifacts, served on the sandbox's bridge
//! (the hosts here reach only package registries, not the official archive); to know the
//! bridge's address the test boots the hosts (`sandbox up`) before the script does again.
//! Without root, systemd-nspawn, Maven or a JDK this skips with one line, except under
//! PROVISION_SANDBOX=required (CI), where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{dist, provision, show, text, wait_for};
use provision_sandbox::fixture;

const NAME: &str = "quickstart";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn demo(stack: &Path) -> Output {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo"))
        .arg(stack)
        .env("PROVISION_BIN", env!("CARGO_BIN_EXE_provision"))
        .env_remove("PROVISION_STACK")
        .output()
        .expect("scripts/demo runs")
}

/// `GET http://address/` through nginx: (status, body).
fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "60", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs");
    let body = text(&out.stdout);
    let (page, status) = body.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), page.to_string())
}

#[test]
fn the_quick_start_serves_the_plone_site_through_nginx_and_a_second_run_changes_nothing() {
    if !fixture::available() {
        return;
    }
    let Some(distribution) = dist::build_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo_stack = std::fs::read_to_string(examples().join("demo.toml")).unwrap();
    let repository = examples().join("apps/buildout").canonicalize().unwrap();
    let changed = demo_stack
        .replacen("name = \"demo\"", &format!("name = \"{NAME}\""), 1)
        .replacen(
            "repository = \"apps/buildout\"",
            &format!("repository = \"{}\"", repository.display()),
            1,
        );
    assert_ne!(changed, demo_stack, "examples/demo.toml changed shape");
    let stack = dir.path().join("demo.toml");
    std::fs::write(&stack, &changed).unwrap();
    let _sandbox = common::StackSandbox::fresh(&stack);

    let booted = provision(
        Path::new("/"),
        &["sandbox", "up", "--stack", &stack.to_string_lossy()],
        &[],
    );
    assert!(booted.status.success(), "{}", show(&booted));
    let gateway = provision_sandbox::Sandbox::new(NAME)
        .and_then(|sandbox| sandbox.inventory())
        .unwrap()
        .gateway;
    let files = dist::FileServer::start(gateway.into(), &distribution.archive);
    let with_solr = changed.replacen(
        "[attributes.plone_solr]\n",
        &format!(
            "[attributes.plone_solr]\nurl = \"{}\"\nsha512 = \"{}\"\n",
            files.url(&distribution),
            distribution.sha512
        ),
        1,
    );
    assert_ne!(
        with_solr, changed,
        "examples/demo.toml has no [attributes.plone_solr]"
    );
    std::fs::write(&stack, with_solr).unwrap();

    let started = Instant::now();
    let first = demo(&stack);
    assert!(first.status.success(), "{}", show(&first));
    eprintln!(
        "the quick start took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let stdout = text(&first.stdout);
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("The site:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no site URL printed:\n{stdout}"))
        .to_string();
    assert!(
        stdout.contains("HAProxy stats:") && stdout.contains("demo.secrets.toml"),
        "{stdout}"
    );
    // `provision status`: each instance host's release and clients.
    assert_eq!(
        stdout
            .matches("  clients: client1 active, client2 active")
            .count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("  release 20"), "{stdout}");
    let secrets = std::fs::read_to_string(dir.path().join("demo.secrets.toml")).unwrap();
    let password = secrets
        .lines()
        .find_map(|l| l.strip_prefix("haproxy_stats_password = "))
        .expect("the stats password was generated")
        .trim_matches('"');
    assert!(
        !stdout.contains(password) && !text(&first.stderr).contains(password),
        "the stats password was printed"
    );

    let (status, page) = get(&url);
    assert_eq!(status, 200, "{url}: {page}");
    assert!(
        page.contains("<title>") && page.contains("Plone on provision"),
        "{url} does not show the site's title:\n{page}"
    );

    // A task sent through the site runs on a worker of app1 or app2.
    let (status, id) = get(&format!("{url}@@celery-enqueue?marker=quickstart"));
    assert_eq!(status, 200, "{id}");
    let mut result = String::new();
    wait_for("the task ran", Duration::from_secs(120), || {
        result = get(&format!("{url}@@celery-result?id={}", id.trim())).1;
        result.starts_with("SUCCESS ")
    });
    assert!(
        ["SUCCESS app1", "SUCCESS app2"].contains(&result.trim()),
        "{result}"
    );
    // A document indexed into Solr through the site is found there.
    let (status, body) = get(&format!(
        "{url}@@solr-index?uid=quickstart-1&title=Kaffeemaschinen&text=espresso+crema"
    ));
    assert_eq!(status, 200, "{body}");
    let (status, found) = get(&format!("{url}@@solr-search?q=SearchableText:espresso"));
    assert_eq!((status, found.as_str()), (200, "quickstart-1"));

    let second = demo(&stack);
    assert!(second.status.success(), "{}", show(&second));
    let status = provision(
        dir.path(),
        &["up", "--stack", "demo.toml", "--sandbox", "--json"],
        &[],
    );
    assert!(status.status.success(), "{}", show(&status));
    let again = common::json(&status);
    for host in again["hosts"].as_array().unwrap() {
        assert_eq!(host["outcome"]["status"], "unchanged", "{again}");
    }
    for release in again["releases"].as_array().unwrap() {
        assert_eq!(release["outcome"]["status"], "unchanged", "{again}");
    }
    let second_out = text(&second.stdout) + &text(&second.stderr);
    assert!(
        second_out.contains("release unchanged") && !second_out.contains("created the Plone site"),
        "the second run changed something:\n{second_out}"
    );
    assert_eq!(get(&url).0, 200);
}
