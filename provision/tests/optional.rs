//! The optional layers added to a running stack (issue 8's headline): ZEO on db1, the Zope
//! example app on app1 and app2, nginx + HAProxy on lb1, deployed without Celery or Solr. One
//! edit of the stack file adds the `celery_broker` and `solr` layers to db1 (with
//! `enable_celery`, `celerybeat` and `solr_enabled`); `plan` shows it, `up` installs Redis
//! and Solr and restarts the clients rolling under load with no failed request; then the app
//! (cfg/optional.cfg of the example, src/stackdemo) sends a task from app1 that a worker runs,
//! beat runs on one host only, and a document the app indexes into Solr is found. A second
//! `up` changes nothing. Real Redis, Celery and Solr 9 (assembled from Maven artifacts and
//! served on the sandbox bridge, as in tests/solr.rs); one test for both layers, since the
//! builds dominate its time.
//!
//! Skips with one line without the sandbox, Maven or a JDK, except under
//! PROVISION_SANDBOX=required, where it fails.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use provision_sandbox::fixture;

use common::{
    LoadLoop, LoadReport, dist, http_get, json, sh, show, text, wait_for, write_stack,
    zope_example_repository,
};

/// Characters that could break redis.conf, a URL, buildout's environment-vars or a shell line.
const REDIS_PASSWORD: &str = "Redis-p@ss:w/rd%$x";
const STATS_PASSWORD: &str = "st4ts-Secret";

fn provision(dir: &Path, args: &[&str]) -> Output {
    let out = common::provision(
        dir,
        args,
        &[
            ("PROVISION_SECRET_HAPROXY_STATS_PASSWORD", STATS_PASSWORD),
            ("PROVISION_SECRET_REDIS_CONFIG_REQUIREPASS", REDIS_PASSWORD),
        ],
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        // Any form: plain, percent-encoded in a URL, or that with systemd's `%%`.
        !all.contains("Redis-p"),
        "provision {args:?} printed the Redis password:\n{all}"
    );
    out
}

fn stack(hosts: &fixture::Hosts, optional: Option<(&str, &str)>) -> String {
    let address = |name: &str| hosts.host(name).address().to_string();
    let (db_layers, more) = match optional {
        None => ("\"zeoserver\"".to_string(), String::new()),
        Some((url, sha512)) => (
            "\"zeoserver\", \"celery_broker\", \"solr\"".to_string(),
            format!(
                "enable_celery = true\ncelerybeat = true\nsolr_enabled = true\n\
                 [attributes.plone_solr]\nurl = \"{url}\"\nsha512 = \"{sha512}\"\n\
                 heap_mb = 512\n"
            ),
        ),
    };
    format!(
        "[hosts.lb1]\naddress = \"{}\"\nlayers = [\"lb\"]\n\
         [hosts.app1]\naddress = \"{}\"\nlayers = [\"plone_instances\"]\n\
         [hosts.app2]\naddress = \"{}\"\nlayers = [\"plone_instances\"]\n\
         [hosts.db1]\naddress = \"{}\"\nlayers = [{db_layers}]\n\
         [apps.site]\nrepository = \"site\"\n\
         [attributes.haproxy]\nhealth_check_url = \"/\"\ncheck_interval = 1000\n\
         [attributes.plone_instances]\ninstance_count = 1\nshared_blobs = false\nsite_id = \"\"\n\
         base_config = \"cfg/optional.cfg\"\ncelery_app = \"stackdemo.tasks\"\n{more}",
        address("lb1"),
        address("app1"),
        address("app2"),
        address("db1"),
    )
}

/// One HTTP/1.0 GET: (status, body); status 0 when there was no answer within 60 s.
fn get(address: &str, path: &str) -> (u16, String) {
    http_get(address, path, Duration::from_secs(60))
}

fn current(hosts: &fixture::Hosts, host: &str) -> String {
    sh(hosts, host, "readlink -f /srv/www/site/current")
        .trim()
        .to_string()
}

#[test]
fn celery_and_solr_are_added_to_a_running_stack_with_one_edit_and_no_failed_request() {
    // Ask the sandbox first: building the archive is the slow part of a skip.
    if !fixture::available() {
        return;
    }
    let Some(distribution) = dist::build_or_skip() else {
        return;
    };
    let Some(hosts) = fixture::named_blocking(&["lb1", "app1", "app2", "db1"]) else {
        return;
    };
    let started = Instant::now();
    let files = dist::FileServer::start(hosts.inventory().gateway.into(), &distribution.archive);
    let dir = tempfile::tempdir().unwrap();
    zope_example_repository(dir.path(), &[], "the Zope example");
    let web = format!("{}:80", hosts.host("lb1").address());
    let client = |host: &str| format!("{}:8081", hosts.host(host).address());

    // The stack without the optional layers; the app answers that it has neither.
    write_stack(dir.path(), &hosts, &stack(&hosts, None));
    let out = provision(dir.path(), &["up", "--sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let first_up = started.elapsed();
    assert_eq!(get(&web, "/").0, 200);
    assert_eq!(get(&client("app1"), "/@@celery-enqueue?marker=none").0, 503);
    assert_eq!(get(&client("app1"), "/@@solr-search?q=*:*").0, 503);
    let before = [current(&hosts, "app1"), current(&hosts, "app2")];

    // One edit: db1 gets the broker and Solr, the instances Celery and the Solr connection.
    let url = files.url(&distribution);
    write_stack(
        dir.path(),
        &hosts,
        &stack(&hosts, Some((&url, &distribution.sha512))),
    );
    let plan = provision(dir.path(), &["plan", "--sandbox"]);
    assert_eq!(plan.status.code(), Some(0), "{}", show(&plan));
    let planned = text(&plan.stdout);
    // The clients' new environment (the Solr connection and the broker URL) is in their
    // environment file, whose diff a plan hides: it holds the broker's password.
    for expected in [
        "db1: would change",
        "service:redis-server",
        "service:solr",
        "app1: would change",
        "celery-site-worker.service",
        "celery-site-beat.service",
        "file:/etc/provision/plone-site.env",
        "file:/etc/provision/celery/site.env",
        "(secret content not shown)",
    ] {
        assert!(
            planned.contains(expected),
            "plan lacks {expected}:\n{planned}"
        );
    }
    // The plan changed nothing.
    assert_eq!(
        sh(&hosts, "db1", "command -v redis-server java || true"),
        ""
    );

    let load = LoadLoop::start(&web, "/", 1);
    let up_started = Instant::now();
    let out = provision(dir.path(), &["up", "--sandbox"]);
    let second_up = up_started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let LoadReport {
        latencies,
        failures,
    } = load.stop();
    let requests = latencies.len();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(requests > 20, "the load loop ran only {requests} requests");
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed while the layers were added: {failures:?}\n{}",
        failures.len(),
        show(&out)
    );
    // The clients were restarted with the new environment (a new release, rolled out).
    let after = [current(&hosts, "app1"), current(&hosts, "app2")];
    assert_ne!(after[0], before[0], "{}", show(&out));
    assert_ne!(after[1], before[1], "{}", show(&out));

    // The files holding the broker's password: readable by their service's group only, and
    // nowhere in a release or a unit.
    let modes = sh(
        &hosts,
        "app1",
        "stat -c '%n %U:%G %a' /etc/provision/plone-site.env /etc/provision/celery/site.env; \
         grep -rlF 'redis://' /srv/www/site/current/deploy.cfg /srv/www/site/current/parts \
         /etc/systemd/system/plone-site@.service || true",
    );
    assert_eq!(
        modes,
        "/etc/provision/plone-site.env root:plone 640\n\
         /etc/provision/celery/site.env root:plone 640\n",
    );
    let redis = sh(
        &hosts,
        "db1",
        "stat -c '%U:%G %a' /etc/redis/provision-auth.conf",
    );
    assert_eq!(redis, "redis:redis 640\n");
    // Nor does any other file on any host let others read a secret.
    for host in ["lb1", "app1", "app2", "db1"] {
        let files =
            common::assert_secret_files_private(&hosts, host, &[REDIS_PASSWORD, STATS_PASSWORD]);
        let wanted = match host {
            "lb1" => "/etc/haproxy/haproxy.cfg",
            "db1" => "/etc/redis/provision-auth.conf",
            _ => "/etc/provision/plone-site.env",
        };
        assert!(
            files.iter().any(|f| f.ends_with(wanted)),
            "the sweep on {host} did not find {wanted}: {files:?}"
        );
    }

    // A task sent by the app on app1 runs on a worker, which leaves its marker.
    let (status, id) = get(&client("app1"), "/@@celery-enqueue?marker=added-1");
    assert_eq!(status, 200, "{id}");
    let id = id.trim().to_string();
    let mut result = String::new();
    wait_for("the task ran", Duration::from_secs(120), || {
        result = get(&client("app1"), &format!("/@@celery-result?id={id}")).1;
        result.starts_with("SUCCESS ")
    });
    let ran_on = result.trim_start_matches("SUCCESS ").trim().to_string();
    eprintln!("task {id} sent from app1 ran on {ran_on}");
    assert!(["app1", "app2"].contains(&ran_on.as_str()), "{result}");
    assert_eq!(
        sh(
            &hosts,
            &ran_on,
            "cat /srv/www/site/current/var/celery-markers/added-1"
        ),
        ran_on
    );

    // Beat: on app1 only, and its ticks reach the workers.
    let ticks = || {
        ["app1", "app2"]
            .iter()
            .map(|h| {
                sh(
                    &hosts,
                    h,
                    "cat /srv/www/site/current/var/celery-markers/ticks 2>/dev/null || true",
                )
            })
            .collect::<String>()
    };
    wait_for("beat sent a tick", Duration::from_secs(60), || {
        !ticks().is_empty()
    });
    let all_ticks = ticks();
    assert!(
        all_ticks.lines().all(|l| l.ends_with("@app1")),
        "a tick came from another beat:\n{all_ticks}"
    );
    let beats = |host: &str| {
        sh(
            &hosts,
            host,
            "systemctl is-active celery-site-beat.service || true; \
             pgrep -c -f '[c]elery -A stackdemo.tasks beat' || true",
        )
    };
    assert_eq!(beats("app1"), "active\n1\n");
    assert_eq!(beats("app2"), "inactive\n0\n");

    // A document indexed through the app (app1) is found by a query (app2, and the frontend).
    let (status, body) = get(
        &client("app1"),
        "/@@solr-index?uid=doc-1&title=Kaffeemaschinen&text=espresso+crema",
    );
    assert_eq!(status, 200, "{body}");
    for address in [client("app2"), web.clone()] {
        let (status, found) = get(&address, "/@@solr-search?q=SearchableText:espresso");
        assert_eq!((status, found.as_str()), (200, "doc-1"), "{address}");
    }
    // Solr on db1 with the stack's settings: its port, the heap given, the archive's version.
    let java = sh(&hosts, "db1", "ps -o user=,args= -C java");
    assert!(
        java.starts_with("solr ") && java.contains("-Xmx512m"),
        "{java}"
    );

    // The stack converged: a second `up` changes nothing, and a plan finds nothing to do.
    let out = provision(dir.path(), &["up", "--sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        [current(&hosts, "app1"), current(&hosts, "app2")],
        after,
        "{}",
        show(&out)
    );
    let plan = provision(dir.path(), &["plan", "--sandbox", "--json"]);
    assert_eq!(plan.status.code(), Some(0), "{}", show(&plan));
    for host in json(&plan)["hosts"].as_array().unwrap() {
        assert_eq!(host["changes"], serde_json::json!([]), "{host}");
    }
    eprintln!(
        "timings: first up {first_up:?}, up adding the layers {second_up:?} \
         ({requests} requests through the frontend), total {:?}",
        started.elapsed()
    );
}
