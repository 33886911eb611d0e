//! Self-healing on sandbox hosts with the Zope example deployed (nginx + HAProxy on lb1, two
//! instance hosts, ZEO on db1): `provision watch --interval 1 --down-after 2` takes app2 out
//! of HAProxy's configuration once the host is stopped, while requests through nginx keep
//! answering 200; started again, app2 is put back and its clients are UP in HAProxy, with
//! no request failing meanwhile. SIGTERM ends the watch with exit code 0.
//!
//! Without root or systemd-nspawn this skips with one line, except under
//! PROVISION_SANDBOX=required (CI).

mod common;

use std::time::{Duration, Instant};

use common::{
    Background, LoadLoop, eventually, haproxy_servers, http_get_status, ok, provision, sh,
    wait_for, write_stack, zope_cluster_stack, zope_example_repository,
};
use provision_sandbox::fixture;

const SECRET: [(&str, &str); 1] = [("PROVISION_SECRET_HAPROXY_STATS_PASSWORD", "w4tch-Stats-pw")];

#[test]
fn watch_takes_a_stopped_host_out_of_the_frontend_and_puts_it_back() {
    let Some(hosts) = fixture::named_blocking(&["lb1", "app1", "app2", "db1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    zope_example_repository(dir.path(), &[], "the Zope example");
    write_stack(dir.path(), &hosts, &zope_cluster_stack(2));
    ok(&provision(dir.path(), &["up", "--sandbox"], &SECRET));
    let web = format!("{}:80", hosts.host("lb1").address());
    assert_eq!(http_get_status(&web, "/"), 200);
    let config = || sh(&hosts, "lb1", "cat /etc/haproxy/haproxy.cfg");
    let lists_app2 = |config: &str| config.contains("app2-1") && config.contains("app2-2");
    assert!(lists_app2(&config()), "{}", config());

    let mut watch = Background::start(
        dir.path(),
        &["watch", "--sandbox", "--interval", "1", "--down-after", "2"],
        &SECRET,
    );
    let app2 = hosts.host("app2");
    app2.stop(Duration::from_secs(30)).unwrap();
    let stopped = Instant::now();
    wait_for(
        "app2's clients gone from lb1's haproxy.cfg",
        Duration::from_secs(60),
        || !config().contains("app2-"),
    );
    let taken_out = stopped.elapsed();
    wait_for("the away line", Duration::from_secs(10), || {
        watch
            .stdout()
            .contains("host app2: away (2 probes failed: ")
    });
    assert!(
        watch
            .stdout()
            .contains(") — taken out of the frontend on lb1\n"),
        "{}",
        watch.show()
    );

    // app2 out: no request fails, and none fails while it is put back.
    let load = LoadLoop::start(&web, "/", 2);
    std::thread::sleep(Duration::from_secs(3));
    app2.start().unwrap();
    let started = Instant::now();
    wait_for(
        "app2's clients back in lb1's haproxy.cfg",
        Duration::from_secs(120),
        || lists_app2(&config()),
    );
    let put_back = started.elapsed();
    wait_for(
        "app2's clients UP in HAProxy",
        Duration::from_secs(30),
        || {
            let servers = haproxy_servers(dir.path(), &SECRET, "lb1");
            ["app2-1", "app2-2"]
                .iter()
                .all(|name| servers.iter().any(|(s, st)| s == name && st == "UP"))
        },
    );
    let seen = load.stop();
    assert!(
        seen.failures.is_empty(),
        "{} of {} requests failed: {:?}\n{}",
        seen.failures.len(),
        seen.latencies.len(),
        seen.failures,
        watch.show()
    );
    // Printed once the reconverge returned, which may be after HAProxy shows UP.
    assert!(
        eventually(Duration::from_secs(10), || {
            watch
                .stdout()
                .contains("host app2: back — put back into the frontend on lb1\n")
        }),
        "{}",
        watch.show()
    );
    let stdout = watch.stdout();
    // Only app2 went away (and may have answered before its clients did); every line
    // starts with its UTC time.
    assert!(
        stdout.lines().all(|l| l.len() > 21
            && l.as_bytes()[10] == b'T'
            && &l[19..21] == "Z "
            && l[21..].starts_with("host app2: ")),
        "{}",
        watch.show()
    );
    assert!(watch.is_running(), "{}", watch.show());
    assert_eq!(watch.terminate(Duration::from_secs(20)), Some(0));
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "WATCH app2 out of haproxy.cfg {:.1} s after its stop, back {:.1} s after its start\n",
            taken_out.as_secs_f64(),
            put_back.as_secs_f64()
        )
        .as_bytes(),
    );
}
