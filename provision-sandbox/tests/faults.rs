//! Every fault of the sandbox, observed from the controller the way
//! reference/testbed.md's fault table says.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Probe, eventually, sh_ok, ssh_probe, text};
use provision_sandbox::fixture;

fn is_banner(p: &Probe) -> bool {
    matches!(p, Probe::Banner(b) if b.starts_with("SSH-"))
}

#[test]
fn crash_refuses_connections_and_start_again_keeps_the_disk() {
    let Some(hosts) = fixture::hosts_blocking(1) else {
        return;
    };
    let host = &hosts[0];
    let out = hosts.ssh(host, "echo before-crash > /root/kept && echo ok");
    assert!(out.status.success(), "{}", text(&out));

    // an open session is closed at once
    let mut session = TcpStream::connect(host.ssh_addr()).unwrap();
    session
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut banner = [0u8; 64];
    assert!(session.read(&mut banner).unwrap() > 0);

    let pid1 = host.pid1().unwrap();
    host.crash().unwrap();
    assert!(!host.is_running());
    assert_eq!(host.pid1(), None);
    assert!(!std::path::Path::new(&format!("/proc/{pid1}")).exists() || !is_alive(pid1));
    let mut rest = [0u8; 64];
    let closed = matches!(session.read(&mut rest), Ok(0) | Err(_));
    assert!(closed, "the open session survived the crash");
    assert_eq!(ssh_probe(host), Probe::Refused);

    host.start().unwrap();
    assert!(host.pid1().is_some_and(|p| p != pid1));
    let out = hosts.ssh(host, "cat /root/kept");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before-crash\n");
    // the inventory follows the new PID 1
    assert_eq!(
        hosts.sandbox().inventory().unwrap().hosts[0].pid1,
        host.pid1()
    );
}

fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
}

#[test]
fn power_cut_times_out_and_start_again_keeps_the_disk() {
    let Some(hosts) = fixture::hosts_blocking(1) else {
        return;
    };
    let host = &hosts[0];
    sh_ok(host, "echo before-power-cut > /root/kept");
    host.power_cut().unwrap();
    assert!(!host.is_running());
    assert_eq!(ssh_probe(host), Probe::NoAnswer);
    host.start().unwrap();
    assert!(is_banner(&ssh_probe(host)));
    assert_eq!(sh_ok(host, "cat /root/kept"), "before-power-cut\n");
}

#[test]
fn partition_times_out_and_heal_resumes_open_sessions() {
    let Some(hosts) = fixture::hosts_blocking(1) else {
        return;
    };
    let host = &hosts[0];
    let mut session = TcpStream::connect(host.ssh_addr()).unwrap();
    session
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut banner = [0u8; 64];
    let n = session.read(&mut banner).unwrap();
    assert!(banner[..n].starts_with(b"SSH-"));

    host.partition().unwrap();
    assert!(host.is_running());
    assert_eq!(ssh_probe(host), Probe::NoAnswer);
    // the open session sends its half of the key exchange while cut off...
    session
        .write_all(b"SSH-2.0-provision_sandbox_test\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    host.heal().unwrap();
    // ...and the retransmission gets through after heal: the server answers
    let mut reply = [0u8; 16];
    let n = session.read(&mut reply).unwrap();
    assert!(n > 0, "no answer on the open session after heal");
    eventually(10, "ssh answers after heal", || is_banner(&ssh_probe(host)));
}

#[test]
fn isolate_cuts_two_hosts_from_each_other_but_not_from_the_controller() {
    let Some(hosts) = fixture::hosts_blocking(3) else {
        return;
    };
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    let reach = |from: &provision_sandbox::Host, to: &provision_sandbox::Host| {
        from.sh(&format!(
            "timeout 3 bash -c '</dev/tcp/{}/22'",
            to.address()
        ))
        .unwrap()
        .status
        .success()
    };
    assert!(reach(a, b) && reach(b, a));
    a.isolate_from(b).unwrap();
    assert!(!reach(a, b), "{} still reaches {}", a.name(), b.name());
    assert!(!reach(b, a), "{} still reaches {}", b.name(), a.name());
    // the controller still reaches both, and a host left alone reaches both
    assert!(is_banner(&ssh_probe(a)) && is_banner(&ssh_probe(b)));
    assert!(reach(c, a) && reach(c, b) && reach(a, c));
    a.heal().unwrap();
    assert!(reach(a, b) && reach(b, a));
}

#[test]
fn freeze_accepts_tcp_but_sends_no_banner_until_thawed() {
    let Some(hosts) = fixture::hosts_blocking(1) else {
        return;
    };
    let host = &hosts[0];
    host.freeze().unwrap();
    assert!(host.is_frozen());
    assert_eq!(ssh_probe(host), Probe::Silent);
    let status = hosts.sandbox().status().unwrap();
    assert!(status.hosts[0].frozen && !status.hosts[0].ssh);
    host.thaw().unwrap();
    eventually(10, "ssh answers after thaw", || is_banner(&ssh_probe(host)));
    let out = hosts.ssh(host, "true");
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn reboot_inside_a_host_comes_back() {
    let Some(hosts) = fixture::hosts_blocking(1) else {
        return;
    };
    let host = &hosts[0];
    let before = host.pid1().unwrap();
    // nspawn exits with 133 on reboot; the supervisor starts it again
    let _ = hosts.ssh(host, "systemctl reboot");
    eventually(60, "a new PID 1 after reboot", || {
        host.pid1().is_some_and(|p| p != before)
    });
    eventually(60, "ssh after reboot", || is_banner(&ssh_probe(host)));
    assert_eq!(sh_ok(host, "cat /proc/1/comm"), "systemd\n");
}
