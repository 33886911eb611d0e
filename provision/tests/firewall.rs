//! The host firewall (`[attributes.firewall]`, issue 10) on real sandbox hosts: lb1 (nginx +
//! HAProxy), app1 (a Plone client of the Zope example) and db1 (ZEO, PostgreSQL, Redis and
//! Solr 9, the archive built from Maven artifacts and served on the bridge as in
//! tests/optional.rs), plus `outsider`, a sandbox host that is not in the stack. With the
//! firewall on, the stack works (a page through the frontend, which needs ZEO; PostgreSQL,
//! Redis, ZEO and Solr answer app1 in their own protocols), while from outsider the four
//! service ports of db1 and app1's client port take no connection and SSH and the frontend
//! still do. A second `up` changes nothing; the rules are back after app1 reboots; turning
//! the firewall off removes the table, and outsider connects again (the services' own
//! access lists remain).
//!
//! Skips with one line without the sandbox, Maven or a JDK, except under
//! PROVISION_SANDBOX=required, where it fails.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use provision_sandbox::fixture;

use common::{dist, http_get, json, sh, show, tcp_reachable, text, wait_for, write_stack};

const REDIS_PASSWORD: &str = "Redis-fw-p4ss";
const DB_PASSWORD: &str = "pg-fw-p4ss";

const ZEO: u16 = 8001;
const POSTGRES: u16 = 5432;
const REDIS: u16 = 6379;
const SOLR: u16 = 8983;
const CLIENT: u16 = 8081;

fn provision(dir: &Path, args: &[&str]) -> Output {
    let out = common::provision(
        dir,
        args,
        &[
            ("PROVISION_SECRET_REDIS_CONFIG_REQUIREPASS", REDIS_PASSWORD),
            (
                "PROVISION_SECRET_PLONE_INSTANCES_RELSTORAGE_DB_PASSWORD",
                DB_PASSWORD,
            ),
        ],
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !all.contains(REDIS_PASSWORD) && !all.contains(DB_PASSWORD),
        "provision {args:?} printed a password:\n{all}"
    );
    out
}

fn stack(hosts: &fixture::Hosts, (url, sha512): (&str, &str), firewall: bool) -> String {
    let address = |name: &str| hosts.host(name).address().to_string();
    format!(
        "[hosts.lb1]\naddress = \"{}\"\nlayers = [\"lb\"]\n\
         [hosts.app1]\naddress = \"{}\"\nlayers = [\"plone_instances\"]\n\
         [hosts.db1]\naddress = \"{}\"\n\
         layers = [\"zeoserver\", \"postgres\", \"celery_broker\", \"solr\"]\n\
         [apps.site]\nrepository = \"site\"\n\
         [attributes.haproxy]\nhealth_check_url = \"/\"\ncheck_interval = 1000\n\
         enable_stats = false\n\
         [attributes.plone_instances]\ninstance_count = 1\nshared_blobs = false\nsite_id = \"\"\n\
         [attributes.plone_solr]\nurl = \"{url}\"\nsha512 = \"{sha512}\"\nheap_mb = 256\n\
         [attributes.firewall]\nenable = {firewall}\n",
        address("lb1"),
        address("app1"),
        address("db1"),
    )
}

/// The first bytes each service on `address` answers app1 with, in its own protocol: ZEO's
/// handshake, PostgreSQL's answer to an SSL request, Redis's to PING (no password given),
/// Solr's HTTP status line.
fn protocol_answers(hosts: &fixture::Hosts, address: &str) -> String {
    let script = format!(
        r#"python3 - <<'PY'
import socket
probes = [
    ("zeo", {ZEO}, b""),
    ("postgres", {POSTGRES}, b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
    ("redis", {REDIS}, b"PING\r\n"),
    ("solr", {SOLR}, b"GET /solr/ HTTP/1.0\r\n\r\n"),
]
for name, port, request in probes:
    with socket.create_connection(("{address}", port), 5) as s:
        s.settimeout(10)
        s.sendall(request)
        print(name, repr(s.recv(16)))
PY"#
    );
    sh(hosts, "app1", &script)
}

/// The value of field 22 of /proc/1/stat: when the host's init started (changes on reboot).
fn init_started(hosts: &fixture::Hosts, host: &str) -> Option<String> {
    let out = hosts.ssh(hosts.host(host), "cut -d' ' -f22 /proc/1/stat");
    out.status.success().then(|| text(&out.stdout))
}

#[test]
fn the_firewall_lets_only_stack_members_reach_the_services_and_goes_away_when_off() {
    // Ask the sandbox first: building the archive is the slow part of a skip.
    if !fixture::available() {
        return;
    }
    let Some(distribution) = dist::build_or_skip() else {
        return;
    };
    let Some(hosts) = fixture::named_blocking(&["lb1", "app1", "db1", "outsider"]) else {
        return;
    };
    let started = Instant::now();
    let files = dist::FileServer::start(hosts.inventory().gateway.into(), &distribution.archive);
    let url = files.url(&distribution);
    let solr = (url.as_str(), distribution.sha512.as_str());
    let dir = tempfile::tempdir().unwrap();
    common::zope_example_repository(dir.path(), &[], "the Zope example");
    let address = |name: &str| hosts.host(name).address().to_string();
    let (db1, app1, lb1) = (address("db1"), address("app1"), address("lb1"));
    let web = format!("{lb1}:80");
    let services = [
        (db1.as_str(), ZEO),
        (db1.as_str(), POSTGRES),
        (db1.as_str(), REDIS),
        (db1.as_str(), SOLR),
        (app1.as_str(), CLIENT),
    ];

    // Up with the firewall on.
    write_stack(dir.path(), &hosts, &stack(&hosts, solr, true));
    let out = provision(dir.path(), &["up", "--sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let first_up = started.elapsed();
    assert_eq!(http_get(&web, "/", Duration::from_secs(60)).0, 200);

    // Stack members reach every service (Solr may still be starting).
    wait_for(
        "app1 reaches db1's services",
        Duration::from_secs(120),
        || tcp_reachable(&hosts, "app1", &services[..4]) == [true; 4],
    );
    let answers = protocol_answers(&hosts, &db1);
    for expected in [
        // A sized message of two bytes: the protocol version (Z5, or M5 with msgpack).
        "zeo b'\\x00\\x00\\x00\\x02",
        // PostgreSQL answers an SSL request with one byte, S or N.
        "postgres b'",
        "redis b'-NOAUTH",
        "solr b'HTTP/1.1 ",
    ] {
        assert!(answers.contains(expected), "{expected}:\n{answers}");
    }
    assert!(
        answers.contains("postgres b'N'") || answers.contains("postgres b'S'"),
        "{answers}"
    );

    // From outside the stack: no service, but SSH and the frontend.
    assert_eq!(
        tcp_reachable(&hosts, "outsider", &services),
        [false; 5],
        "outsider reached a service of the stack"
    );
    assert_eq!(
        tcp_reachable(&hosts, "outsider", &[(&db1, 22), (&lb1, 80)]),
        [true, true]
    );
    let page = sh(
        &hosts,
        "outsider",
        &format!(
            "python3 -c 'import urllib.request; \
             print(urllib.request.urlopen(\"http://{lb1}/\", timeout=30).status)'"
        ),
    );
    assert_eq!(page.trim(), "200");
    // The table, its file and the unit that loads it at boot, on every host of the stack.
    for host in ["lb1", "app1", "db1"] {
        let state = sh(
            &hosts,
            host,
            "nft list table inet provision | grep -c 'policy drop'; \
             systemctl is-enabled provision-firewall.service; \
             systemctl is-active provision-firewall.service; \
             stat -c '%U:%G %a' /etc/provision/firewall.nft",
        );
        assert_eq!(state, "1\nenabled\nactive\nroot:root 644\n", "{host}");
    }
    assert_eq!(
        sh(&hosts, "outsider", "nft list tables 2>/dev/null || true"),
        "",
        "the host outside the stack got a firewall"
    );

    // Converged: a second `up` changes nothing on any host.
    let again = provision(dir.path(), &["up", "--sandbox", "--json"]);
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    for host in json(&again)["hosts"].as_array().unwrap() {
        assert_eq!(host["outcome"]["status"], "unchanged", "{host}");
    }

    // After a reboot the table is loaded before anything listens, and the stack works.
    let before = init_started(&hosts, "app1").expect("app1 answers");
    let _ = hosts.ssh(hosts.host("app1"), "systemctl reboot");
    let rebooted = Instant::now();
    wait_for("app1 is back", Duration::from_secs(120), || {
        init_started(&hosts, "app1").is_some_and(|now| now != before)
    });
    assert_eq!(
        sh(
            &hosts,
            "app1",
            "timeout 90 systemctl is-system-running --wait >/dev/null || true; \
             systemctl is-active provision-firewall.service; \
             nft list table inet provision | grep -c 'policy drop'"
        ),
        "active\n1\n"
    );
    wait_for(
        "the frontend answers after app1's reboot",
        Duration::from_secs(120),
        || http_get(&web, "/", Duration::from_secs(10)).0 == 200,
    );
    let reboot = rebooted.elapsed();
    assert_eq!(
        tcp_reachable(&hosts, "outsider", &[(&app1, CLIENT)]),
        [false]
    );

    // Off: the table, the unit and the file go, and outsider connects again (the services'
    // own access lists stay: pg_hba.conf, Redis's password, Solr's allow-list).
    write_stack(dir.path(), &hosts, &stack(&hosts, solr, false));
    let out = provision(dir.path(), &["up", "--sandbox"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("script:firewall-removed"),
        "{}",
        show(&out)
    );
    for host in ["lb1", "app1", "db1"] {
        assert_eq!(
            sh(
                &hosts,
                host,
                "nft list tables; \
                 ls /etc/provision/firewall.nft /etc/systemd/system/provision-firewall.service \
                 2>/dev/null || true; systemctl is-active provision-firewall.service || true"
            ),
            "inactive\n",
            "{host}"
        );
    }
    assert_eq!(tcp_reachable(&hosts, "outsider", &services), [true; 5]);
    let again = provision(dir.path(), &["up", "--sandbox", "--json"]);
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    for host in json(&again)["hosts"].as_array().unwrap() {
        assert_eq!(host["outcome"]["status"], "unchanged", "{host}");
    }
    eprintln!(
        "timings: first up {first_up:?}, app1's reboot until the frontend answered {reboot:?}, \
         total {:?}",
        started.elapsed()
    );
}
