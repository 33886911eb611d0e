//! `provision` end to end against real sandbox hosts (systemd-nspawn, real sshd, real apt,
//! real systemd): the base system, the zeoserver layer and the lb layer.
//!
//! Without root or systemd-nspawn these tests skip with one line, except under
//! PROVISION_SANDBOX=required (CI), where they fail.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use provision_sandbox::fixture;

fn provision(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_provision"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("PROVISION_STACK");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the provision binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A stack named after the sandbox, so that `--sandbox` finds its hosts.
fn write_stack(dir: &Path, hosts: &fixture::Hosts, body: &str) {
    std::fs::write(
        dir.join("stack.toml"),
        format!("[stack]\nname = \"{}\"\n\n{body}", hosts.name()),
    )
    .unwrap();
}

/// One HTTP/1.0 GET from the controller; (status, body).
fn http_get(address: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {address}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = auth
        .map(|a| {
            use base64::Engine as _;
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(a)
            )
        })
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\n{auth}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    (status, body.to_string())
}

fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_base_system_converges_and_a_second_up_changes_nothing() {
    let Some(hosts) = fixture::named_blocking(&["web1", "web2"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_stack(
        dir.path(),
        &hosts,
        "[hosts.web1]\naddress = \"192.0.2.1\"\nlayers = []\n\
         [hosts.web2]\naddress = \"192.0.2.2\"\nlayers = []\n\
         [attributes.system]\ntimezone = \"Europe/Amsterdam\"\n\
         [attributes.apt.unattended_upgrades]\nmail = \"ops@example.org\"\n\
         [attributes.tmpdir]\ntmpfs = true\ntmpfs_size = \"64M\"\n",
    );
    let web1 = hosts.host("web1");

    // plan: a diff per host, and nothing changes.
    let out = provision(dir.path(), &["plan", "--sandbox", "--json"], &[]);
    ok(&out);
    let plan = json(&out);
    for host in plan["hosts"].as_array().unwrap() {
        assert_eq!(host["outcome"]["status"], "planned", "{plan}");
        let timezone = host["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["resource"] == "file:/etc/timezone")
            .expect("the time zone is planned");
        assert!(
            timezone["diff"]
                .as_str()
                .unwrap()
                .contains("+Europe/Amsterdam"),
            "{timezone}"
        );
    }
    let zone = hosts.ssh(web1, "cat /etc/timezone");
    assert_eq!(
        text(&zone.stdout).trim(),
        "Etc/UTC",
        "plan changed the host"
    );

    // up: every change made, on both hosts.
    let out = provision(dir.path(), &["up", "--sandbox"], &[]);
    ok(&out);
    assert!(
        text(&out.stdout).contains("web1: changed"),
        "{}",
        text(&out.stdout)
    );
    let check = hosts.ssh(
        web1,
        "cat /etc/timezone; readlink /etc/localtime; dpkg-query -W -f='${db:Status-Status}' unattended-upgrades; \
         grep -c ops@example.org /etc/apt/apt.conf.d/51provision-unattended-upgrades; \
         awk '$2 == \"/tmp\" {print $3, $4}' /proc/self/mounts; grep -c '^tmpfs /tmp tmpfs' /etc/fstab",
    );
    let stdout = text(&check.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "Europe/Amsterdam",
            "/usr/share/zoneinfo/Europe/Amsterdam",
            "installed1"
        ],
        "{stdout}"
    );
    // /tmp is a 64 MiB tmpfs now (remounted in place: it was busy), and stays one at boot.
    assert!(lines[3].starts_with("tmpfs "), "{stdout}");
    assert!(
        lines[3].contains("size=65536k") && lines[3].contains("noatime"),
        "{stdout}"
    );
    assert_eq!(lines[4], "1", "{stdout}");

    // A second up: nothing to do, one round trip per host after the facts.
    let out = provision(dir.path(), &["up", "--sandbox", "--json"], &[]);
    ok(&out);
    let again = json(&out);
    for host in again["hosts"].as_array().unwrap() {
        assert_eq!(host["outcome"]["status"], "unchanged", "{again}");
        assert_eq!(host["round_trips"], 1, "{again}");
    }
}

#[test]
fn a_host_that_cannot_be_reached_fails_alone() {
    let Some(hosts) = fixture::named_blocking(&["ok1", "gone1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_stack(
        dir.path(),
        &hosts,
        "[stack.ssh]\nconnect_timeout = 3\n\
         [hosts.ok1]\naddress = \"192.0.2.1\"\nlayers = []\n\
         [hosts.gone1]\naddress = \"192.0.2.2\"\nlayers = []\n\
         [attributes.system]\ntimezone = \"Europe/Berlin\"\n",
    );
    hosts.host("gone1").power_cut().unwrap();
    let out = provision(dir.path(), &["up", "--sandbox", "--json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = json(&out);
    assert_eq!(report["hosts"][0]["host"], "ok1");
    assert_eq!(
        report["hosts"][0]["outcome"]["status"], "changed",
        "{report}"
    );
    assert_eq!(report["hosts"][1]["host"], "gone1");
    let error = report["hosts"][1]["outcome"]["error"].as_str().unwrap();
    assert!(error.starts_with("connecting:"), "{error}");
    assert!(error.contains("within 3s"), "{error}");
}

#[test]
fn the_zeo_server_listens_on_its_private_address_and_backs_up() {
    let Some(hosts) = fixture::named_blocking(&["db1", "app1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_stack(
        dir.path(),
        &hosts,
        "[hosts.db1]\naddress = \"192.0.2.20\"\nlayers = [\"zeoserver\"]\n\
         [hosts.app1]\naddress = \"192.0.2.11\"\nlayers = []\n\
         [attributes.plone_zeoserver]\nenable_backup = true\n",
    );
    let db1 = hosts.host("db1");
    let app1 = hosts.host("app1");
    let out = provision(dir.path(), &["up", "--sandbox", "--host", "db1"], &[]);
    ok(&out);

    // Reachable from another host of the stack, on the private address only.
    let probe = |host, address: &str| {
        let script = format!(
            "python3 -c 'import socket; socket.create_connection((\"{address}\", 8001), 3)'"
        );
        hosts.ssh(host, &script).status.success()
    };
    let db1_address = db1.address().to_string();
    wait_for("ZEO answers on 8001", Duration::from_secs(90), || {
        probe(app1, &db1_address)
    });
    assert!(!probe(db1, "127.0.0.1"), "ZEO listens on loopback too");

    // Write something so there is a database to back up.
    let out = provision(dir.path(), &["backup", "--sandbox"], &[]);
    ok(&out);
    assert!(
        text(&out.stdout).contains("db1: zeoserver-backup done"),
        "{}",
        text(&out.stdout)
    );
    let listing = hosts.ssh(db1, "find /var/backups/zeo -name '*.fsz'");
    assert!(
        text(&listing.stdout).contains(".fsz"),
        "no repozo backup: {}",
        text(&listing.stdout)
    );
    let out = provision(dir.path(), &["pack", "--sandbox"], &[]);
    ok(&out);

    let out = provision(
        dir.path(),
        &["plan", "--sandbox", "--host", "db1", "--json"],
        &[],
    );
    ok(&out);
    assert_eq!(
        json(&out)["hosts"][0]["outcome"]["status"],
        "unchanged",
        "{}",
        text(&out.stdout)
    );
}

/// A stand-in Plone client: python's http.server on the client's port, answering the
/// health check and the VirtualHostMonster path nginx rewrites to with the host's name.
fn fake_client(hosts: &fixture::Hosts, host: &str, port: u16, lb_address: &str) {
    let vhm = format!("VirtualHostBase/http/{lb_address}:80/Plone/VirtualHostRoot");
    let script = format!(
        "mkdir -p /srv/fake{port}/{vhm} && echo {host}-{port} > /srv/fake{port}/{vhm}/index.html && \
         echo OK > /srv/fake{port}/ok && \
         systemd-run --unit=fake-client-{port} python3 -m http.server {port} --directory /srv/fake{port}"
    );
    let out = hosts.ssh(hosts.host(host), &script);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn the_frontend_balances_over_every_client_and_guards_its_stats() {
    let Some(hosts) = fixture::named_blocking(&["lb1", "app1", "app2"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_stack(
        dir.path(),
        &hosts,
        "[hosts.lb1]\naddress = \"192.0.2.10\"\nlayers = [\"lb\"]\n\
         [hosts.app1]\naddress = \"192.0.2.11\"\nlayers = [\"plone_instances\"]\n\
         [hosts.app2]\naddress = \"192.0.2.12\"\nlayers = [\"plone_instances\"]\n\
         [attributes.plone_instances]\ninstance_count = 2\nzeo = { address = \"192.0.2.20:8001\" }\n\
         [attributes.haproxy]\ncheck_interval = 1000\n",
    );
    let lb_address = hosts.host("lb1").address().to_string();
    for host in ["app1", "app2"] {
        for port in [8081, 8082] {
            fake_client(&hosts, host, port, &lb_address);
        }
    }
    let secret = [("PROVISION_SECRET_HAPROXY_STATS_PASSWORD", "st4ts-Secret")];

    // Without a stats password the frontend is refused, naming what to set.
    let out = provision(dir.path(), &["up", "--sandbox", "--layer", "lb"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("password"),
        "{}",
        text(&out.stdout)
    );

    let out = provision(dir.path(), &["up", "--sandbox", "--layer", "lb"], &secret);
    ok(&out);
    assert!(
        !text(&out.stdout).contains("st4ts-Secret"),
        "secret printed"
    );

    let web = format!("{lb_address}:80");
    let mut seen = std::collections::BTreeSet::new();
    wait_for(
        "every client answers through nginx",
        Duration::from_secs(60),
        || {
            // Right after a reload, nginx's old workers may still answer with Debian's page.
            let (status, body) = http_get(&web, "/", None);
            if status == 200 && body.starts_with("app") {
                seen.insert(body.trim().to_string());
            }
            seen.len() == 4
        },
    );
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["app1-8081", "app1-8082", "app2-8081", "app2-8082"]
    );
    assert_eq!(http_get(&web, "/balancer/stats", None).0, 401);
    assert_eq!(
        http_get(&web, "/balancer/stats", Some("stats:st4ts-Secret")).0,
        200
    );

    // A stopped client goes DOWN in HAProxy and traffic moves to the others.
    hosts.ssh(hosts.host("app2"), "systemctl stop fake-client-8082");
    wait_for("app2-2 is DOWN", Duration::from_secs(30), || {
        let out = provision(
            dir.path(),
            &["status", "--sandbox", "--host", "lb1", "--json"],
            &secret,
        );
        let status = json(&out);
        status[0]["haproxy"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["server"] == "app2-2" && s["status"] == "DOWN")
    });
    for _ in 0..20 {
        let (status, body) = http_get(&web, "/", None);
        assert_eq!(status, 200);
        assert_ne!(body.trim(), "app2-8082");
    }
    let out = provision(
        dir.path(),
        &["status", "--sandbox", "--host", "lb1"],
        &secret,
    );
    assert!(
        text(&out.stdout).contains("app1-1"),
        "{}",
        text(&out.stdout)
    );

    let out = provision(
        dir.path(),
        &["up", "--sandbox", "--layer", "lb", "--json"],
        &secret,
    );
    ok(&out);
    assert_eq!(
        json(&out)["hosts"][0]["outcome"]["status"],
        "unchanged",
        "{}",
        text(&out.stdout)
    );
}
