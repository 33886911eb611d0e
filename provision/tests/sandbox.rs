//! `provision` end to end against real sandbox hosts (systemd-nspawn, real sshd, real apt,
//! real systemd): the base system, the zeoserver layer and the lb layer.
//!
//! Without root or systemd-nspawn these tests skip with one line, except under
//! PROVISION_SANDBOX=required (CI), where they fail.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{provision, wait_for};
use provision_sandbox::fixture;

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

/// An HTTP answer as the controller saw it.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// One HTTP/1.0 request from the controller (a bridge address only).
fn http(address: &str, method: &str, path: &str, host: Option<&str>, auth: Option<&str>) -> Answer {
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
    let host = host.unwrap_or(address);
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn http_get(address: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    let answer = http(address, "GET", path, None, auth);
    (answer.status, answer.body)
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
/// health check and the VirtualHostMonster paths nginx rewrites to (the site on the lb's
/// address, and the `en` subsite of en.example.org) with the host's name.
fn fake_client(hosts: &fixture::Hosts, host: &str, port: u16, lb_address: &str) {
    let site = format!("VirtualHostBase/http/{lb_address}:80/Plone/VirtualHostRoot");
    let subsite = "VirtualHostBase/http/en.example.org:80/Plone/en/VirtualHostRoot";
    let script = format!(
        "mkdir -p /srv/fake{port}/{site} /srv/fake{port}/{subsite} && \
         echo {host}-{port} > /srv/fake{port}/{site}/index.html && \
         echo en-{host}-{port} > /srv/fake{port}/{subsite}/index.html && \
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

    // Without a stats password the frontend is refused before any host is touched.
    let out = provision(dir.path(), &["up", "--sandbox", "--layer", "lb"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("haproxy_stats_password"),
        "{}",
        text(&out.stderr)
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

/// A bounded load loop from the controller: sequential GETs until told to stop (or at most
/// 3000 requests / 120 s); (requests, failures, bodies seen in order).
fn load_loop(
    address: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>, Vec<String>)> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut failures = Vec::new();
        let mut bodies = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed)
            && bodies.len() + failures.len() < 3000
            && start.elapsed() < Duration::from_secs(120)
        {
            let result = std::panic::catch_unwind(|| http(&address, "GET", "/", None, None));
            match result {
                Ok(answer) if answer.status == 200 => bodies.push(answer.body.trim().to_string()),
                Ok(answer) => failures.push(format!("status {}: {}", answer.status, answer.head)),
                Err(_) => failures.push("connection failed".to_string()),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (bodies.len() + failures.len(), failures, bodies)
    })
}

fn lb_stack(instance_hosts: &[&str], extra: &str) -> String {
    let mut body = String::from("[hosts.lb1]\naddress = \"192.0.2.10\"\nlayers = [\"lb\"]\n");
    for (i, host) in instance_hosts.iter().enumerate() {
        body.push_str(&format!(
            "[hosts.{host}]\naddress = \"192.0.2.{}\"\nlayers = [\"plone_instances\"]\n",
            11 + i
        ));
    }
    body.push_str(
        "[attributes.plone_instances]\ninstance_count = 1\nzeo = { address = \"192.0.2.20:8001\" }\n\
         [attributes.haproxy]\ncheck_interval = 1000\n",
    );
    body.push_str(extra);
    body
}

#[test]
fn instance_hosts_join_and_leave_the_frontend_without_a_failed_request() {
    let Some(hosts) = fixture::named_blocking(&["lb1", "app1", "app2", "app3"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lb_address = hosts.host("lb1").address().to_string();
    for host in ["app1", "app2", "app3"] {
        fake_client(&hosts, host, 8081, &lb_address);
    }
    let secret = [("PROVISION_SECRET_HAPROXY_STATS_PASSWORD", "st4ts-Secret")];
    let up = |instances: &[&str]| {
        write_stack(dir.path(), &hosts, &lb_stack(instances, ""));
        let out = provision(dir.path(), &["up", "--sandbox", "--layer", "lb"], &secret);
        ok(&out);
    };
    up(&["app1", "app2"]);
    let web = format!("{lb_address}:80");
    wait_for("both clients serve", Duration::from_secs(60), || {
        let bodies: Vec<String> = (0..6).map(|_| http_get(&web, "/", None).1).collect();
        bodies.iter().any(|b| b.starts_with("app1")) && bodies.iter().any(|b| b.starts_with("app2"))
    });

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = load_loop(web.clone(), stop.clone());
    up(&["app1", "app2", "app3"]);
    wait_for("app3 serves", Duration::from_secs(30), || {
        http_get(&web, "/", None).1.starts_with("app3")
            || http_get(&web, "/", None).1.starts_with("app3")
            || http_get(&web, "/", None).1.starts_with("app3")
    });
    up(&["app1", "app3"]);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (requests, failures, bodies) = load.join().unwrap();
    assert!(requests > 50, "the load loop ran only {requests} requests");
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed: {failures:?}",
        failures.len()
    );
    let tail = &bodies[bodies.len().saturating_sub(20)..];
    assert!(
        !tail.iter().any(|b| b.starts_with("app2")),
        "app2 still served after removal: {tail:?}"
    );
}

#[test]
fn a_broken_nginx_hook_is_refused_and_varnish_caches_and_purges_for_instance_hosts_only() {
    let Some(hosts) = fixture::named_blocking(&["lb1", "app1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lb_address = hosts.host("lb1").address().to_string();
    fake_client(&hosts, "app1", 8081, &lb_address);
    let secret = [("PROVISION_SECRET_HAPROXY_STATS_PASSWORD", "st4ts-Secret")];
    let varnish = "[attributes.varnish_plone]\nenable = true\n\
                   [attributes.plone_instances.subsites]\n\"en.example.org\" = \"en\"\n";
    write_stack(dir.path(), &hosts, &lb_stack(&["app1"], varnish));
    ok(&provision(
        dir.path(),
        &["up", "--sandbox", "--layer", "lb"],
        &secret,
    ));
    let web = format!("{lb_address}:80");
    wait_for("the site serves", Duration::from_secs(60), || {
        http_get(&web, "/", None).1.starts_with("app1")
    });

    // The subsite routes to its path.
    let en = http(&web, "GET", "/", Some("en.example.org"), None);
    assert_eq!(
        (en.status, en.body.trim()),
        (200, "en-app1-8081"),
        "{}",
        en.head
    );

    // Varnish: the second anonymous GET is a hit; a PURGE from the instance host empties it,
    // from elsewhere it is refused.
    let first = http(&web, "GET", "/", None, None);
    let second = http(&web, "GET", "/", None, None);
    assert!(
        second.head.contains("X-Cache: HIT"),
        "{}\n---\n{}",
        first.head,
        second.head
    );
    let refused = http(&web, "PURGE", "/", None, None);
    assert_ne!(refused.status, 200, "nginx let a visitor PURGE");
    let varnish_on_lb = format!("{lb_address}:6081");
    let from_controller = http(&varnish_on_lb, "PURGE", "/.*", Some(&lb_address), None);
    assert_ne!(
        from_controller.status, 200,
        "Varnish took a PURGE from outside the stack"
    );
    let purge = format!(
        "python3 -c \"import http.client; c = http.client.HTTPConnection('{lb_address}', 6081, timeout=5); \
         c.request('PURGE', '/.*', headers={{'Host': '{lb_address}'}}); print(c.getresponse().status)\""
    );
    let from_app1 = hosts.ssh(hosts.host("app1"), &purge);
    assert_eq!(
        text(&from_app1.stdout).trim(),
        "200",
        "{}",
        text(&from_app1.stderr)
    );
    let after = http(&web, "GET", "/", None, None);
    assert!(after.head.contains("X-Cache: MISS"), "{}", after.head);

    // A broken raw hook: nginx -t refuses it, the command says why, the old site still serves.
    let broken =
        format!("{varnish}[attributes.nginx_plone]\nadditional_config = \"this is not nginx;\"\n");
    write_stack(dir.path(), &hosts, &lb_stack(&["app1"], &broken));
    let out = provision(dir.path(), &["up", "--sandbox", "--layer", "lb"], &secret);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("unknown directive \"this\""),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(http_get(&web, "/", None).0, 200);
}

#[test]
fn the_site_is_served_over_tls_with_modern_protocols_only() {
    let Some(hosts) = fixture::named_blocking(&["lb1", "app1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lb_address = hosts.host("lb1").address().to_string();
    fake_client(&hosts, "app1", 8081, &lb_address);
    // A self-signed certificate made on the controller.
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=www.example.org",
        ])
        .args(["-keyout", "site.key", "-out", "site.pem"])
        .current_dir(dir.path())
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let certificate = std::fs::read_to_string(dir.path().join("site.pem")).unwrap();
    let key = std::fs::read_to_string(dir.path().join("site.key")).unwrap();
    let extra = format!(
        "[apps.site]\nrepository = \"https://example.org/site.git\"\n\
         [attributes.deploy.site]\nssl_support = true\nssl_certificate = '''\n{certificate}'''\n"
    );
    write_stack(dir.path(), &hosts, &lb_stack(&["app1"], &extra));
    let env = [
        ("PROVISION_SECRET_HAPROXY_STATS_PASSWORD", "st4ts-Secret"),
        (
            "PROVISION_SECRET_DEPLOY_SITE_SSL_CERTIFICATE_KEY",
            key.as_str(),
        ),
    ];
    let out = provision(dir.path(), &["up", "--sandbox", "--layer", "lb"], &env);
    ok(&out);
    assert!(
        !text(&out.stdout).contains("PRIVATE KEY"),
        "the key was printed"
    );
    let key_mode = hosts.ssh(
        hosts.host("lb1"),
        "stat -c %a /etc/ssl/provision/private/site.key",
    );
    assert_eq!(text(&key_mode.stdout).trim(), "600");

    let fetch = |protocol: &str| {
        Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("{lb_address}:443"),
                protocol,
            ])
            .args(["-servername", "www.example.org"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    wait_for("TLS 1.3 answers", Duration::from_secs(30), || {
        text(&fetch("-tls1_3").stdout).contains("Protocol  : TLSv1.3")
            || text(&fetch("-tls1_3").stdout).contains("TLSv1.3")
    });
    assert!(fetch("-tls1_2").status.success(), "TLS 1.2 refused");
    assert!(!fetch("-tls1_1").status.success(), "TLS 1.1 accepted");
}
