//! Load on a real stack in the sandbox: 2 instance hosts with 4 clients each behind nginx +
//! HAProxy, ZEO on a fourth host. A rolling deploy and a rollback under continuous load fail
//! no request, and their p99 latency is reported next to the p99 before; the ZEO host
//! restarted under load: the clients reconnect, and no request fails once it is back.
//!
//! The numbers go to stderr uncaptured (`LOAD ...` lines), for the CI log. Without root or
//! systemd-nspawn this skips with one line, except under PROVISION_SANDBOX=required (CI).

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    LoadLoop, LoadReport, commit, ok, provision, text, wait_for, write_stack, zope_cluster_stack,
    zope_example_repository, zope_http,
};
use provision_sandbox::fixture;

const SECRET: [(&str, &str); 1] = [("PROVISION_SECRET_HAPROXY_STATS_PASSWORD", "l0ad-Stats-pw")];
/// Load threads: a few requests in flight at once, as a small site's visitors make.
const WORKERS: usize = 3;

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    provision(dir, args, &SECRET)
}

/// Uncaptured: libtest captures `eprintln!`, not writes to the stderr handle.
fn report(phase: &str, load: &LoadReport) {
    let line = format!(
        "LOAD {phase:<22} requests {:>5}  failed {:>3}  p50 {:>5} ms  p99 {:>5} ms\n",
        load.latencies.len(),
        load.failures.len(),
        load.percentile(50.0).as_millis(),
        load.percentile(99.0).as_millis(),
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn assert_no_failure(phase: &str, load: &LoadReport, out: &std::process::Output) {
    assert!(
        load.failures.is_empty(),
        "{phase}: {} of {} requests failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        load.failures.len(),
        load.latencies.len(),
        load.failures,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn deploy_rollback_and_a_zeo_restart_under_load_fail_no_request() {
    let Some(hosts) = fixture::named_blocking(&["lb1", "app1", "app2", "db1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = zope_example_repository(dir.path(), &[], "the Zope example");
    write_stack(dir.path(), &hosts, &zope_cluster_stack(4));
    let out = run(dir.path(), &["up", "--sandbox"]);
    ok(&out);
    let web = format!("{}:80", hosts.host("lb1").address());

    let load = LoadLoop::start(&web, "/", WORKERS);
    std::thread::sleep(Duration::from_secs(15));
    let before = load.stop();
    report("before", &before);
    assert!(before.failures.is_empty(), "{:?}", before.failures);

    // A rolling deploy of a new revision: 8 clients drained and restarted one at a time.
    commit(&repo, "NEWS.txt", "v2\n", "v2");
    let load = LoadLoop::start(&web, "/", WORKERS);
    let out = run(dir.path(), &["deploy", "--sandbox"]);
    std::thread::sleep(Duration::from_secs(2));
    let deploy = load.stop();
    ok(&out);
    assert!(
        text(&out.stdout).contains("app2: deployed"),
        "{}",
        text(&out.stdout)
    );
    report("during deploy", &deploy);
    assert_no_failure("deploy", &deploy, &out);

    let load = LoadLoop::start(&web, "/", WORKERS);
    let out = run(dir.path(), &["rollback", "--sandbox"]);
    std::thread::sleep(Duration::from_secs(2));
    let rollback = load.stop();
    ok(&out);
    report("during rollback", &rollback);
    assert_no_failure("rollback", &rollback, &out);

    // The ZEO host restarted (an orderly shutdown and boot) under load.
    let load = LoadLoop::start(&web, "/", WORKERS);
    let db1 = hosts.host("db1");
    db1.stop(Duration::from_secs(60)).unwrap();
    db1.start().unwrap();
    let back = Instant::now();
    let zeo = format!("{}:8001", db1.address());
    wait_for("ZEO answers again", Duration::from_secs(120), || {
        std::net::TcpStream::connect_timeout(&zeo.parse().unwrap(), Duration::from_secs(2)).is_ok()
    });
    // Every client has reconnected when a write through it commits.
    for host in ["app1", "app2"] {
        let address = hosts.host(host).address().to_string();
        for port in 8081..=8084 {
            let client = format!("{address}:{port}");
            let path = format!("/after-zeo-restart-{host}-{port}");
            wait_for(
                &format!("{client} commits to ZEO again"),
                Duration::from_secs(120),
                || zope_http(&client, "PUT", &path, b"written after the restart").0 == 201,
            );
        }
    }
    let reconnected = back.elapsed();
    let during_restart = load.stop();
    report("during ZEO restart", &during_restart);
    let _ = std::io::stderr().write_all(
        format!(
            "LOAD every client committed to ZEO {:.1} s after the ZEO host was started\n",
            reconnected.as_secs_f64()
        )
        .as_bytes(),
    );

    let load = LoadLoop::start(&web, "/", WORKERS);
    std::thread::sleep(Duration::from_secs(20));
    let after = load.stop();
    report("after ZEO restart", &after);
    assert!(
        after.failures.is_empty(),
        "after ZEO was back, {} of {} requests failed: {:?}",
        after.failures.len(),
        after.latencies.len(),
        after.failures
    );
    let out = run(dir.path(), &["status", "--sandbox"]);
    ok(&out);
}
