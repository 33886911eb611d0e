//! The rest of the OpsWorks lifecycle on sandbox hosts with the Zope example deployed (nginx +
//! HAProxy on lb1, two instance hosts, ZEO on db1): `shutdown --host app1` under load through
//! nginx fails no request and leaves app1's clients stopped and in MAINT while app2 serves;
//! `undeploy site` stops and disables the clients and removes the releases but keeps the data,
//! and with `--purge-data` but no `--yes` changes nothing.
//!
//! Without root or systemd-nspawn this skips with one line, except under
//! PROVISION_SANDBOX=required (CI).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    LoadLoop, haproxy_servers, http_get_status, ok, provision, sh, text, write_stack,
    zope_cluster_stack, zope_example_repository,
};
use provision_sandbox::fixture::{self, Hosts};

const SECRET: [(&str, &str); 1] = [("PROVISION_SECRET_HAPROXY_STATS_PASSWORD", "l1fe-Stats-pw")];

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    provision(dir, args, &SECRET)
}

/// The HAProxy status of every server on lb1.
fn haproxy(dir: &Path) -> Vec<(String, String)> {
    haproxy_servers(dir, &SECRET, "lb1")
}

/// `systemctl is-active` (or another query) of both clients of a host, one word each.
fn clients(hosts: &Hosts, host: &str, query: &str) -> Vec<String> {
    sh(
        hosts,
        host,
        &format!("systemctl {query} plone-site@client1 plone-site@client2 || true"),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// What undeploy may change on an instance host: the app's directory and its units' state.
fn app_state(hosts: &Hosts, host: &str) -> String {
    sh(
        hosts,
        host,
        "find /srv/www/site -maxdepth 3 -printf '%p %l\\n' | sort; \
         systemctl is-enabled plone-site@client1 plone-site@client2 || true; \
         systemctl is-active plone-site@client1 plone-site@client2 || true",
    )
}

#[test]
fn shutdown_takes_a_host_out_without_a_failed_request_and_undeploy_keeps_the_data() {
    let Some(hosts) = fixture::named_blocking(&["lb1", "app1", "app2", "db1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    zope_example_repository(dir.path(), &[], "the Zope example");
    write_stack(dir.path(), &hosts, &zope_cluster_stack(2));
    ok(&run(dir.path(), &["up", "--sandbox"]));
    let web = format!("{}:80", hosts.host("lb1").address());
    assert_eq!(http_get_status(&web, "/"), 200);

    // Shutdown under load through nginx.
    let load = LoadLoop::start(&web, "/", 3);
    std::thread::sleep(Duration::from_secs(3));
    let out = run(dir.path(), &["shutdown", "--host", "app1", "--sandbox"]);
    std::thread::sleep(Duration::from_secs(3));
    let seen = load.stop();
    ok(&out);
    let stdout = text(&out.stdout);
    assert!(
        seen.failures.is_empty(),
        "{} of {} requests failed: {:?}\n{stdout}{}",
        seen.failures.len(),
        seen.latencies.len(),
        seen.failures,
        text(&out.stderr)
    );
    for expected in [
        "app1: taking its clients out of HAProxy: app1-1, app1-2 drained and in MAINT",
        "app1: stopping the Plone clients: stopped plone-site@client1.service, plone-site@client2.service",
        "app1: shut down",
        "app1 stays in stack.toml until it is removed there",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    assert_eq!(
        clients(&hosts, "app1", "is-active"),
        ["inactive", "inactive"]
    );
    assert_eq!(clients(&hosts, "app2", "is-active"), ["active", "active"]);
    let servers = haproxy(dir.path());
    for (server, status) in [
        ("app1-1", "MAINT"),
        ("app1-2", "MAINT"),
        ("app2-1", "UP"),
        ("app2-2", "UP"),
    ] {
        assert!(
            servers.iter().any(|(s, st)| s == server && st == status),
            "{server} is not {status}: {servers:?}"
        );
    }
    for _ in 0..10 {
        assert_eq!(http_get_status(&web, "/"), 200, "app2 serves");
    }
    // Other hosts are left alone.
    assert_eq!(
        sh(&hosts, "db1", "systemctl is-active zeoserver").trim(),
        "active"
    );

    // --purge-data without --yes (no terminal here): refused, nothing changed.
    let before = app_state(&hosts, "app2");
    let out = run(
        dir.path(),
        &["undeploy", "site", "--purge-data", "--sandbox"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("run it again with --yes"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(app_state(&hosts, "app2"), before);

    // Undeploy: services stopped and disabled, releases and build state gone, data kept.
    let out = run(dir.path(), &["undeploy", "site", "--sandbox"]);
    ok(&out);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("app2: undeployed site"), "{stdout}");
    for host in ["app1", "app2"] {
        assert_eq!(
            clients(&hosts, host, "is-enabled"),
            ["disabled", "disabled"]
        );
        assert_eq!(clients(&hosts, host, "is-active"), ["inactive", "inactive"]);
        let left = sh(
            &hosts,
            host,
            "cd /srv/www/site && ls -A releases; ls -A; ls -A shared",
        );
        let lines: Vec<&str> = left.lines().collect();
        assert!(
            !lines.contains(&"current") && !lines.contains(&"previous"),
            "{host}: {left}"
        );
        for gone in ["repo", "env", "eggs", "downloads", "extends"] {
            assert!(
                !lines.contains(&gone),
                "{host}: shared/{gone} is left: {left}"
            );
        }
        assert!(lines.contains(&"var"), "{host}: shared/var is gone: {left}");
        assert_eq!(
            sh(&hosts, host, "ls /srv/www/site/releases | wc -l").trim(),
            "0",
            "{host}: releases are left"
        );
    }
    assert_ne!(http_get_status(&web, "/"), 200, "no client serves any more");

    // Again: nothing left to do, and still fine.
    let out = run(dir.path(), &["undeploy", "site", "--sandbox"]);
    ok(&out);
    assert!(
        text(&out.stdout).contains("app1: undeployed site: stopped and disabled nothing"),
        "{}",
        text(&out.stdout)
    );
}
