//! The README's quick start, run as a user would: `scripts/demo` boots the demo stack's four
//! sandbox hosts, sets them up, deploys the Plone example and creates its site; the site
//! answers through nginx with its title; a second run changes nothing.
//!
//! The stack is `examples/demo.toml` under another sandbox name (a user's own demo stays
//! untouched), and the script uses this test's `provision` instead of building a release one.
//! Without root or systemd-nspawn this skips with one line, except under
//! PROVISION_SANDBOX=required (CI), where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{provision, show, text};
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

/// The sandbox's hosts, destroyed however the test ends.
struct Destroy<'a>(&'a Path);

impl Drop for Destroy<'_> {
    fn drop(&mut self) {
        let stack = self.0.to_string_lossy().into_owned();
        let out = provision(
            Path::new("/"),
            &["sandbox", "down", "--stack", &stack, "--destroy"],
            &[],
        );
        if !out.status.success() {
            eprintln!("destroying the sandbox {NAME}: {}", show(&out));
        }
    }
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
    let dir = tempfile::tempdir().unwrap();
    let demo_stack = std::fs::read_to_string(examples().join("demo.toml")).unwrap();
    let repository = examples()
        .join("apps/plone-buildout")
        .canonicalize()
        .unwrap();
    let changed = demo_stack
        .replacen("name = \"demo\"", &format!("name = \"{NAME}\""), 1)
        .replacen(
            "repository = \"apps/plone-buildout\"",
            &format!("repository = \"{}\"", repository.display()),
            1,
        );
    assert_ne!(changed, demo_stack, "examples/demo.toml changed shape");
    let stack = dir.path().join("demo.toml");
    std::fs::write(&stack, changed).unwrap();
    // A leftover of an earlier, killed run would make `sandbox up` reuse old hosts.
    drop(Destroy(&stack));
    let _destroy = Destroy(&stack);

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
