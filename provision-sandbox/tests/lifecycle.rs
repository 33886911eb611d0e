//! up / down / down --destroy, and bad input: each a clear error with nothing
//! left half made.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{sh_ok, ssh_probe, text};
use provision_sandbox::{Config, Error, ProxyMode, Sandbox, Subnet, UpOptions, fixture};

/// A subnet of its own per test, so that bridge removal is observable while
/// other tests run on the default bridge.
fn own_config(third_octet: u8) -> Config {
    let subnet = Subnet::new(std::net::Ipv4Addr::new(10, 77, third_octet, 0), 24).unwrap();
    Config::from_env().unwrap().with_subnet(subnet)
}

fn links() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect()
}

fn netns() -> BTreeSet<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// Everything a sandbox makes on the machine, as observed from outside.
struct Traces {
    state_dir: PathBuf,
    mounts: Vec<PathBuf>,
    netns: Vec<String>,
    veths: Vec<String>,
    cgroups: Vec<PathBuf>,
    pids: Vec<u32>,
    propagate: Vec<PathBuf>,
}

fn traces(hosts: &fixture::Hosts) -> Traces {
    let mut t = Traces {
        state_dir: hosts.sandbox().state_dir().to_path_buf(),
        mounts: vec![],
        netns: vec![],
        veths: vec![],
        cgroups: vec![],
        pids: vec![],
        propagate: vec![],
    };
    for h in hosts.hosts() {
        t.mounts.push(h.root());
        t.netns.push(h.netns().to_string());
        t.veths.push(h.veth().to_string());
        let cg = h.cgroup();
        let unified = h.cgroup_dir().unwrap();
        t.pids.extend(
            std::fs::read_to_string(unified.join("payload/init.scope/cgroup.procs"))
                .unwrap()
                .lines()
                .map(|p| p.parse::<u32>().unwrap()),
        );
        t.pids.push(h.pid1().unwrap());
        t.cgroups.push(unified);
        t.cgroups
            .push(Path::new("/sys/fs/cgroup/systemd").join(&cg));
        t.propagate
            .push(Path::new("/run/systemd/nspawn/propagate").join(format!(
                "psb-{}-{}",
                hosts.name(),
                h.name()
            )));
    }
    t
}

fn assert_gone(t: &Traces) {
    let mounts = mountinfo();
    for m in &t.mounts {
        assert!(
            !mounts.contains(&format!(" {} ", m.display())),
            "{} is still mounted",
            m.display()
        );
    }
    let (ns, ls) = (netns(), links());
    for n in &t.netns {
        assert!(!ns.contains(n), "netns {n} is left");
    }
    for v in &t.veths {
        assert!(!ls.contains(v), "link {v} is left");
    }
    for c in &t.cgroups {
        assert!(!c.exists(), "cgroup {} is left", c.display());
    }
    for p in &t.pids {
        let alive =
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(!alive, "process {p} is left");
    }
    for p in &t.propagate {
        assert!(!p.exists(), "{} is left", p.display());
    }
    assert!(!t.state_dir.exists(), "{} is left", t.state_dir.display());
    // no process refers to the sandbox any more
    let name = t
        .state_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !(cmdline.contains(&format!("psb-{name}-"))
                || cmdline.contains(&format!("provision-sandbox/{name}/"))),
            "process {:?} still runs for the sandbox: {cmdline}",
            entry.file_name()
        );
    }
}

#[test]
fn destroy_leaves_nothing_behind_and_the_bridge_goes_with_the_last_sandbox() {
    let config = own_config(250);
    let bridge = config.bridge.clone();
    let Some(first) = fixture::with_config_blocking(config.clone(), &["web", "db"]) else {
        return;
    };
    let second = fixture::with_config_blocking(config.clone(), &["web"]).unwrap();
    assert!(links().contains(&bridge));
    let base = provision_sandbox::base_image::path(&config.cache_root);

    // the bridge's MAC must not follow its ports: hosts would keep a stale ARP
    // entry for the gateway and time out on the proxy
    let mac = || std::fs::read_to_string(format!("/sys/class/net/{bridge}/address")).unwrap();
    let mac_before = mac();

    let t1 = traces(&first);
    first.destroy().unwrap();
    assert_gone(&t1);
    assert_eq!(
        mac(),
        mac_before,
        "the bridge's MAC changed when ports went"
    );
    let gateway = second.inventory().gateway;
    let out = second[0]
        .sh(&format!(
            "timeout 3 bash -c '</dev/tcp/{gateway}/{}'",
            second.inventory().proxy.unwrap().port()
        ))
        .unwrap();
    assert!(
        out.status.success(),
        "the proxy is unreachable after another sandbox went: {}",
        text(&out)
    );
    // the other sandbox on the bridge is untouched
    assert!(
        links().contains(&bridge),
        "the bridge went while a sandbox still uses it"
    );
    let out = second.ssh(&second[0], "hostname");
    assert!(out.status.success(), "{}", text(&out));

    let t2 = traces(&second);
    second.destroy().unwrap();
    assert_gone(&t2);
    assert!(
        !links().contains(&bridge),
        "bridge {bridge} is left after the last sandbox"
    );
    assert!(
        base.join("etc/os-release").exists(),
        "the cached base must stay"
    );
}

#[test]
fn down_stops_and_up_boots_again_on_the_same_disks() {
    let Some(hosts) = fixture::hosts_blocking(2) else {
        return;
    };
    sh_ok(&hosts[0], "echo kept > /etc/kept-across-down");
    let key_before = std::fs::read_to_string(hosts.known_hosts()).unwrap();
    let sandbox = hosts.sandbox();
    sandbox.down(false).unwrap();
    let status = sandbox.status().unwrap();
    assert!(
        status.hosts.iter().all(|h| !h.running && !h.ssh),
        "{status}"
    );
    assert!(!mountinfo().contains(&format!(" {} ", hosts[0].root().display())));
    assert_eq!(sandbox.inventory().unwrap().hosts[0].pid1, None);

    // another host set on the stopped sandbox is refused
    let err = sandbox.up(&["host1"], &UpOptions::default()).unwrap_err();
    assert!(matches!(err, Error::HostSetMismatch { .. }), "{err}");

    let inventory = sandbox
        .up(&["host1", "host2"], &UpOptions::default())
        .unwrap();
    assert!(inventory.hosts.iter().all(|h| h.pid1.is_some()));
    assert_eq!(
        std::fs::read_to_string(hosts.known_hosts()).unwrap(),
        key_before,
        "host keys must survive"
    );
    let out = hosts.ssh(&hosts[0], "cat /etc/kept-across-down");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "kept\n",
        "{}",
        text(&out)
    );
    assert!(sandbox.status().unwrap().healthy());
}

#[test]
fn a_name_clash_with_running_hosts_is_an_error_and_leaves_them_running() {
    let Some(hosts) = fixture::hosts_blocking(1) else {
        return;
    };
    let again = Sandbox::with_config(hosts.sandbox().config().clone(), hosts.name()).unwrap();
    let err = again.up(&["host1"], &UpOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NameClash { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("already has running hosts (host1)"),
        "{err}"
    );
    assert!(matches!(ssh_probe(&hosts[0]), common::Probe::Banner(_)));
}

#[test]
fn a_missing_base_is_an_error_when_building_is_not_allowed() {
    if !fixture::available() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let mut config = own_config(252);
    config.cache_root = cache.path().to_path_buf();
    let name = format!("t{}-nobase", std::process::id());
    let sandbox = Sandbox::with_config(config.clone(), &name).unwrap();
    let opts = UpOptions {
        build_base: false,
        ..UpOptions::default()
    };
    let err = sandbox.up(&["a"], &opts).unwrap_err();
    assert!(matches!(err, Error::BaseMissing { .. }), "{err}");
    assert!(err.to_string().contains("provision sandbox base"), "{err}");
    assert!(!sandbox.exists() && !sandbox.state_dir().exists());
    assert!(!links().contains(&config.bridge));
    assert!(!netns().contains(&format!("psb-{name}-a")));
}

/// Removes a link on drop.
struct LinkGuard(&'static str);
impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).status();
    }
}

#[test]
fn a_subnet_already_in_use_is_an_error_and_nothing_is_made() {
    if !fixture::available() {
        return;
    }
    // another interface (no traffic: a bridge without ports) holds the subnet
    let _guard = LinkGuard("psbtesttaken");
    for args in [
        &["link", "add", "name", "psbtesttaken", "type", "bridge"][..],
        &["addr", "add", "10.77.251.1/24", "dev", "psbtesttaken"][..],
    ] {
        assert!(Command::new("ip").args(args).status().unwrap().success());
    }
    let config = own_config(251);
    let name = format!("t{}-taken", std::process::id());
    let sandbox = Sandbox::with_config(config.clone(), &name).unwrap();
    let err = sandbox.up(&["a", "b"], &UpOptions::default()).unwrap_err();
    assert!(matches!(err, Error::AddressTaken { .. }), "{err}");
    assert!(err.to_string().contains("psbtesttaken"), "{err}");
    assert!(!sandbox.state_dir().exists());
    assert!(!links().contains(&config.bridge));
    assert!(
        !netns()
            .iter()
            .any(|n| n.starts_with(&format!("psb-{name}-")))
    );
}

#[test]
fn a_proxy_port_already_taken_is_an_error_and_nothing_is_left_half_made() {
    let Some(hosts) = fixture::hosts_blocking(1) else {
        return;
    };
    // the fixture's bridge is up: hold a port on its address
    let holder = std::net::TcpListener::bind((hosts.inventory().gateway, 0)).unwrap();
    let port = holder.local_addr().unwrap().port();
    let name = format!("t{}-port", std::process::id());
    let sandbox = Sandbox::with_config(hosts.sandbox().config().clone(), &name).unwrap();
    let opts = UpOptions {
        proxy_port: port,
        ..UpOptions::default()
    };
    let err = sandbox.up(&["a"], &opts).unwrap_err();
    assert!(matches!(err, Error::AddressTaken { .. }), "{err}");
    assert!(err.to_string().contains(&format!(":{port}")), "{err}");
    assert!(
        !sandbox.state_dir().exists(),
        "state of the failed sandbox is left"
    );
    assert!(!netns().contains(&format!("psb-{name}-a")));
    assert!(!mountinfo().contains(&format!("/{name}/")));
    // the running sandbox still works
    assert!(matches!(ssh_probe(&hosts[0]), common::Probe::Banner(_)));
}

#[test]
fn bad_names_are_refused_before_anything_is_made() {
    let err = Sandbox::with_config(Config::default(), "My Site").unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    if !fixture::available() {
        return;
    }
    let sandbox = Sandbox::with_config(
        Config::from_env().unwrap(),
        &format!("t{}-names", std::process::id()),
    )
    .unwrap();
    for bad in [&["app_1"][..], &["a", "a"][..], &[][..]] {
        let err = sandbox
            .up(
                bad,
                &UpOptions {
                    proxy: ProxyMode::Off,
                    ..UpOptions::default()
                },
            )
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidName { .. } | Error::InvalidInput(_)),
            "{err}"
        );
    }
    assert!(!sandbox.state_dir().exists());
}

/// Runs as an unprivileged user by the test below.
#[test]
#[ignore = "run by without_root_the_fixture_skips_unless_required"]
fn fixture_as_unprivileged_user() {
    let hosts = fixture::hosts_blocking(1);
    assert!(hosts.is_none());
}

#[test]
fn without_root_the_fixture_skips_unless_required() {
    if !nix::unistd::geteuid().is_root() {
        // this is the unprivileged case itself
        assert!(fixture::hosts_blocking(1).is_none() || std::env::var(fixture::ENV).is_ok());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let run = |required: bool| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe)
            .args([
                "--ignored",
                "--exact",
                "fixture_as_unprivileged_user",
                "--test-threads=1",
            ])
            .env_remove(fixture::ENV);
        if required {
            cmd.env(fixture::ENV, "required");
        }
        cmd.output().unwrap()
    };
    let out = run(false);
    if String::from_utf8_lossy(&out.stderr).contains("Permission denied") {
        eprintln!("skipped: the test binary is not readable by an unprivileged user here");
        return;
    }
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let skips: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("skipped:"))
        .collect();
    assert_eq!(skips.len(), 1, "{}", text(&out));
    assert!(skips[0].contains("needs root"), "{}", skips[0]);

    let out = run(true);
    assert!(
        !out.status.success(),
        "PROVISION_SANDBOX=required must fail: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PROVISION_SANDBOX=required"),
        "{}",
        text(&out)
    );
}
