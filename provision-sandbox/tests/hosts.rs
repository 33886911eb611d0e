//! Booted hosts: SSH with strict host-key checking, separate disks, egress
//! through the proxy to the machine's package registries only.

mod common;

use common::{sh_ok, text};
use provision_sandbox::fixture;

#[test]
fn three_hosts_answer_on_ssh_and_have_their_own_disks() {
    let Some(hosts) = fixture::hosts_blocking(3) else {
        return;
    };
    let inv = hosts.inventory();
    assert_eq!(inv.hosts.len(), 3);
    let known = std::fs::read_to_string(&inv.known_hosts).unwrap();
    for (host, entry) in hosts.hosts().iter().zip(&inv.hosts) {
        assert_eq!(entry.address, host.address());
        assert_eq!((entry.port, entry.user.as_str()), (22, "root"));
        assert!(entry.pid1.is_some());
        assert!(known.contains(&format!("{},{} ssh-ed25519 ", host.address(), host.name())));
        // real ssh client, strict host-key checking, the inventory's key
        let out = hosts.ssh(
            host,
            "hostname; cat /proc/1/comm; systemctl is-system-running --wait",
        );
        assert!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines, [host.name(), "systemd", "running"], "{}", text(&out));
    }
    let addresses: std::collections::BTreeSet<_> = inv.hosts.iter().map(|h| h.address).collect();
    assert_eq!(addresses.len(), 3);

    // a wrong host key is refused: strict checking is real
    let bad_known = tempfile::NamedTempFile::new().unwrap();
    let other_key = known.lines().find(|l| l.contains(hosts[1].name())).unwrap();
    let forged = other_key.replacen(
        &format!("{},{}", hosts[1].address(), hosts[1].name()),
        &hosts[0].address().to_string(),
        1,
    );
    std::fs::write(bad_known.path(), forged + "\n").unwrap();
    let entry = inv.host(hosts[0].name()).unwrap();
    let out = std::process::Command::new("ssh")
        .args(["-i", &inv.key_file.display().to_string()])
        .args([
            "-o",
            &format!("UserKnownHostsFile={}", bad_known.path().display()),
        ])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .arg(format!("root@{}", entry.address))
        .arg("true")
        .output()
        .unwrap();
    assert!(!out.status.success(), "ssh accepted a wrong host key");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        text(&out)
    );

    // /etc of one host is its own
    let out = hosts.ssh(
        &hosts[0],
        "echo written-on-host1 > /etc/provision-sandbox-test",
    );
    assert!(out.status.success(), "{}", text(&out));
    for other in &hosts.hosts()[1..] {
        let out = hosts.ssh(other, "test ! -e /etc/provision-sandbox-test");
        assert!(
            out.status.success(),
            "{} sees host1's file: {}",
            other.name(),
            text(&out)
        );
    }
    // and the file is on host1's disk as seen from the machine
    let on_disk =
        std::fs::read_to_string(hosts[0].disk().join("etc/provision-sandbox-test")).unwrap();
    assert_eq!(on_disk, "written-on-host1\n");

    // hosts resolve each other by name and reach each other
    let out = sh_ok(
        &hosts[0],
        "getent hosts host2 && timeout 5 bash -c '</dev/tcp/host3/22' && echo ok",
    );
    assert!(
        out.contains(&hosts[1].address().to_string()) && out.ends_with("ok\n"),
        "{out}"
    );

    // a host's MAC follows its address, so an address reused after a destroy
    // is reachable at once (no stale ARP entry on the machine or other hosts)
    for h in hosts.hosts() {
        let [_, b, c, d] = h.address().octets();
        let want = format!("0a:70:73:{b:02x}:{c:02x}:{d:02x}\n");
        // (not /sys/class/net: nspawn gives hosts the machine's sysfs, read-only)
        assert_eq!(
            sh_ok(
                h,
                "ip -o link show eth0 | grep -o 'link/ether [^ ]*' | cut -d' ' -f2"
            ),
            want
        );
    }

    // FUSE is there, and every host has its own machine-id
    sh_ok(&hosts[0], "test -c /dev/fuse");
    let ids: std::collections::BTreeSet<String> = hosts
        .hosts()
        .iter()
        .map(|h| sh_ok(h, "cat /etc/machine-id"))
        .collect();
    assert_eq!(ids.len(), 3);

    // exec returns the command's exit code
    assert_eq!(hosts[2].exec(&["sh", "-c", "exit 7"]).unwrap(), 7);
}

#[test]
fn apt_and_pip_reach_the_machines_registries_through_the_proxy_and_nothing_else() {
    let Some(hosts) = fixture::hosts_blocking(1) else {
        return;
    };
    let host = &hosts[0];
    let proxy = hosts.inventory().proxy.expect("the fixture starts a proxy");
    assert_eq!(proxy.ip(), std::net::IpAddr::V4(hosts.inventory().gateway));

    let out = host
        .sh("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q hello && hello")
        .unwrap();
    assert!(
        out.status.success(),
        "apt through the proxy: {}",
        text(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Hello, world!"));

    // pip: the machine's index (and CA, for TLS) through the proxy
    let out = host
        .sh("python3 -m venv /tmp/venv && /tmp/venv/bin/pip download --no-deps -q -d /tmp/dl six && ls /tmp/dl")
        .unwrap();
    assert!(
        out.status.success(),
        "pip through the proxy: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("six-"),
        "{}",
        text(&out)
    );

    // a CONNECT to a name not on the allowlist is refused with 403
    let script = format!(
        "import socket\ns = socket.create_connection(('{}', {}), timeout=10)\ns.sendall(b'CONNECT example.com:443 HTTP/1.1\\r\\nHost: example.com:443\\r\\n\\r\\n')\nprint(s.recv(200).decode().splitlines()[0])\n",
        proxy.ip(),
        proxy.port()
    );
    let out = host.output(&["python3", "-c", &script]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "HTTP/1.1 403 Forbidden"
    );
}

#[tokio::test]
async fn the_async_fixture_boots_hosts_from_a_tokio_test() {
    let Some(hosts) = fixture::named(&["zeo", "app1"]).await else {
        return;
    };
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts.host("app1").name(), "app1");
    let out = hosts.ssh(hosts.host("app1"), "getent hosts zeo");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&hosts.host("zeo").address().to_string())
    );
    // dropped inside the runtime: destroy blocks briefly, which is fine
}
