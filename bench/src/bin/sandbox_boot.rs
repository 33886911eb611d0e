//! Benchmark (not a test): how long the sandbox takes to boot 1, 4 and 16 hosts
//! with the base image cached, and how much memory an idle host costs.
//!
//! Run as root:
//!   cargo run --release -p provision-bench --bin sandbox_boot [-- --counts 1,4,16 --idle 5]
//!
//! Targets: 4 hosts ready (SSH login works) in under 10 s, under 30 MiB PSS each.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use provision_sandbox::{Config, Host, Inventory, ProxyMode, Sandbox, UpOptions};

struct Row {
    hosts: usize,
    up: Duration,
    login: Duration,
    pss_avg_kib: u64,
    pss_max_kib: u64,
    machine_side_kib: u64,
    boot_cpu: Duration,
    down: Duration,
}

fn main() -> anyhow::Result<()> {
    let mut counts = vec![1usize, 4, 16];
    let mut idle = Duration::from_secs(5);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--counts" => {
                counts = args
                    .next()
                    .context("--counts needs a list such as 1,4,16")?
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()
                    .context("--counts needs numbers")?;
            }
            "--idle" => {
                idle = Duration::from_secs(args.next().context("--idle needs seconds")?.parse()?);
            }
            "-h" | "--help" => {
                println!("sandbox_boot [--counts 1,4,16] [--idle SECONDS]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }

    let config = Config::from_env()?;
    if let Some(reason) = provision_sandbox::unavailable_reason(&config) {
        bail!("the sandbox cannot run here: {reason}");
    }
    let base = provision_sandbox::base_image::path(&config.cache_root);
    if provision_sandbox::base_image::is_built(&config.cache_root) {
        println!("base image: {} (cached)", base.display());
    } else {
        let started = Instant::now();
        provision_sandbox::base_image::ensure(&config.cache_root, &|m| eprintln!("{m}"))?;
        println!(
            "base image: {} (built now in {:.0} s; not part of the timings)",
            base.display(),
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "machine: {} cores; all hosts share them with this process",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let mut rows = Vec::new();
    for &n in &counts {
        rows.push(measure(&config, n, idle)?);
    }

    println!();
    println!(
        "{:>5}  {:>8}  {:>10}  {:>8}  {:>10}  {:>10}  {:>12}  {:>12}  {:>8}",
        "hosts",
        "up (s)",
        "login (s)",
        "s/host",
        "PSS avg",
        "PSS max",
        "+nspawn/host",
        "boot CPU/host",
        "down (s)"
    );
    for r in &rows {
        println!(
            "{:>5}  {:>8.2}  {:>10.2}  {:>8.2}  {:>7.1} MiB  {:>6.1} MiB  {:>8.1} MiB  {:>11.2}s  {:>8.2}",
            r.hosts,
            r.up.as_secs_f64(),
            r.login.as_secs_f64(),
            r.login.as_secs_f64() / r.hosts as f64,
            r.pss_avg_kib as f64 / 1024.0,
            r.pss_max_kib as f64 / 1024.0,
            r.machine_side_kib as f64 / 1024.0,
            r.boot_cpu.as_secs_f64(),
            r.down.as_secs_f64(),
        );
    }
    println!();
    println!(
        "up: `Sandbox::up` until every host answers with an SSH banner; login: until `ssh true` works on every host"
    );
    println!(
        "PSS: the host's own processes (systemd, journald, sshd, ...), idle {} s after boot; +nspawn: systemd-nspawn and its supervisor on the machine",
        idle.as_secs()
    );
    if let Some(r) = rows.iter().find(|r| r.hosts == 4) {
        let ok = |b: bool| if b { "met" } else { "MISSED" };
        println!(
            "target: 4 hosts ready in under 10 s: {:.2} s, {}",
            r.login.as_secs_f64(),
            ok(r.login < Duration::from_secs(10))
        );
        println!(
            "target: under 30 MiB per idle host: {:.1} MiB (+{:.1} MiB nspawn), {}",
            r.pss_avg_kib as f64 / 1024.0,
            r.machine_side_kib as f64 / 1024.0,
            ok(r.pss_avg_kib + r.machine_side_kib < 30 * 1024)
        );
    }
    Ok(())
}

fn measure(config: &Config, n: usize, idle: Duration) -> anyhow::Result<Row> {
    let name = format!("bench-boot-{n}");
    let sandbox = Sandbox::with_config(config.clone(), &name)?;
    if sandbox.exists() {
        sandbox
            .down(true)
            .context("removing a sandbox left by an earlier run")?;
    }
    let names: Vec<String> = (1..=n).map(|i| format!("host{i}")).collect();
    let opts = UpOptions {
        proxy: ProxyMode::InProcess,
        ..UpOptions::default()
    };
    eprintln!("booting {n} host(s)...");
    let started = Instant::now();
    let result = (|| -> anyhow::Result<Row> {
        let inventory = sandbox.up(&names, &opts)?;
        let up = started.elapsed();
        login_all(&inventory)?;
        let login = started.elapsed();
        let hosts = sandbox.hosts()?;
        let boot_cpu = hosts.iter().filter_map(Host::cpu_usage).sum::<Duration>() / n as u32;
        std::thread::sleep(idle);
        let pss: Vec<u64> = hosts.iter().map(Host::pss_kib).collect();
        let machine_side: u64 = hosts.iter().map(machine_side_pss_kib).sum::<u64>() / n as u64;
        Ok(Row {
            hosts: n,
            up,
            login,
            pss_avg_kib: pss.iter().sum::<u64>() / n as u64,
            pss_max_kib: pss.iter().copied().max().unwrap_or(0),
            machine_side_kib: machine_side,
            boot_cpu,
            down: Duration::ZERO,
        })
    })();
    let down_started = Instant::now();
    let down = sandbox.down(true);
    let mut row = result?;
    down?;
    row.down = down_started.elapsed();
    Ok(row)
}

/// `ssh true` on every host in parallel, with the inventory's key and strict checking.
fn login_all(inventory: &Inventory) -> anyhow::Result<()> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = inventory
            .hosts
            .iter()
            .map(|h| {
                scope.spawn(move || -> anyhow::Result<()> {
                    let out = Command::new("ssh")
                        .args(inventory.ssh_args(h))
                        .arg("true")
                        .output()
                        .context("cannot run ssh (apt-get install openssh-client)")?;
                    if !out.status.success() {
                        bail!(
                            "ssh to {} failed: {}",
                            h.name,
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("ssh thread panicked")))
            .collect::<anyhow::Result<Vec<()>>>()
    })?;
    Ok(())
}

/// PSS of the machine-side processes of a host: the supervisor shell and nspawn.
fn machine_side_pss_kib(host: &Host) -> u64 {
    let Some(dir) = host.cgroup_dir() else {
        return 0;
    };
    let mut total = 0;
    for procs in [
        dir.join("cgroup.procs"),
        dir.join("supervisor/cgroup.procs"),
    ] {
        for pid in std::fs::read_to_string(procs).unwrap_or_default().lines() {
            let rollup =
                std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
            total += rollup
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}
