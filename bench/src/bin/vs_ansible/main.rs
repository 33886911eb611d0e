//! Benchmark (not a test): provision against Ansible, the same work on the same sandbox hosts
//! in the same run, for N = 1, 10, 50 and 100 hosts.
//!
//! Run as root after `cargo build --release -p provision -p provision-bench`:
//!   cargo run --release -p provision-bench --bin vs_ansible -- --hosts 1,10,50,100
//!   ... -- --smoke            (CI: 4 hosts, every row once; fails on errors, never on time)
//!   ... -- --hosts 50,100 --no-ansible   (provision's side of every row only)
//!
//! The stack: N app hosts (`plone_instances`, one Plone client each, the Zope example app of
//! examples/apps/buildout) and one more host, `front`, with the `lb` and `zeoserver`
//! layers, as in examples/demo.toml.
//! For each N the rows are: first converge of the configuration layers, no-op `up`, one
//! change (`haproxy.check_interval`: a new haproxy.cfg and a reload on `front`), `deploy` of the
//! live revision (a no-op) and of a new revision with the build cached. The Ansible playbook is
//! generated from the resources provision converges on those hosts, and after every Ansible
//! run provision checks that the hosts are exactly as it would have made them.

mod ansible;
mod measure;
mod report;
mod testbed;

use anyhow::{Context, bail, ensure};
use provision_sandbox::Config;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::measure::Run;
use crate::report::{Measured, Op, Row, Table};
use crate::testbed::{Bed, say};

/// The HAProxy stats password of the benchmark's stack (a throwaway secret).
const STATS_PASSWORD: &str = "vs-ansible-stats";
const APP: &str = "site";
const DEPLOY_TO: &str = "/srv/www/site";
const APP_USER: &str = "plone";
const KEEP_RELEASES: u32 = 5;
/// HAProxy's `maxconn`. provision's default (half the open-file limit, less 100) leaves too
/// few descriptors for 100 servers: HAProxy then refuses to start (it needs 2 per connection
/// plus one per server and listener).
const MAX_CONNECTIONS: u32 = 9000;
/// `haproxy.check_interval` of the stack, and the values of the one-change rows.
const CHECK_INTERVAL: [u32; 3] = [1000, 1500, 2000];

struct Options {
    hosts: Vec<usize>,
    repeat: usize,
    smoke: bool,
    keep: bool,
    /// Only provision's side of every row: no Ansible, nor its playbooks and the checks after
    /// its runs.
    no_ansible: bool,
    provision: PathBuf,
    out: Option<PathBuf>,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options {
        hosts: vec![1, 10, 50, 100],
        repeat: 3,
        smoke: false,
        keep: false,
        no_ansible: false,
        provision: std::env::current_exe()?
            .parent()
            .context("no directory of this binary")?
            .join("provision"),
        out: None,
    };
    let mut hosts_given = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--hosts" => {
                options.hosts = args
                    .next()
                    .context("--hosts needs a list such as 1,10,50,100")?
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()
                    .context("--hosts needs numbers")?;
                hosts_given = true;
            }
            "--repeat" => {
                options.repeat = args.next().context("--repeat needs a number")?.parse()?;
            }
            "--smoke" => options.smoke = true,
            "--keep" => options.keep = true,
            "--no-ansible" => options.no_ansible = true,
            "--provision" => {
                options.provision = args.next().context("--provision needs a path")?.into()
            }
            "--out" => options.out = Some(args.next().context("--out needs a file")?.into()),
            "-h" | "--help" => {
                println!(
                    "vs_ansible [--hosts 1,10,50,100] [--repeat 3] [--smoke] [--no-ansible] [--out FILE] [--keep] [--provision PATH]\n\
                     --repeat: runs of each no-op row (the median is reported); Ansible's are\n\
                     \x20         repeated only up to 10 hosts (they take minutes and vary by ~2%)\n\
                     --smoke: 4 hosts, every row once; fails on errors, not on time (CI)\n\
                     --no-ansible: provision's side of every row only (same hosts and stack; no\n\
                     \x20             Ansible install, runs or checks after them); the report\n\
                     \x20             shows the Ansible columns as not run\n\
                     --keep: leave the work directory (logs, playbooks) for inspection"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if options.smoke {
        if !hosts_given {
            options.hosts = vec![4];
        }
        options.repeat = 1;
    }
    ensure!(
        options.hosts.iter().all(|&n| (1..=200).contains(&n)),
        "--hosts: 1 to 200 hosts"
    );
    ensure!(options.repeat >= 1, "--repeat: at least 1");
    ensure!(
        options.provision.is_file(),
        "{} does not exist: build it with `cargo build --release -p provision`",
        options.provision.display()
    );
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(measure::MEASURE_ARG) {
        return match measure::child_main(&args[2..]) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("vs_ansible {}: {e:#}", measure::MEASURE_ARG);
                ExitCode::from(2)
            }
        };
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vs_ansible: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let options = parse_options()?;
    let machine = Config::from_env()?;
    if let Some(reason) = provision_sandbox::unavailable_reason(&machine) {
        bail!("the sandbox cannot run here: {reason}");
    }
    let bench = testbed::bench_config(&machine);
    testbed::remove_stale(&machine);
    let ansible_playbook = if options.no_ansible {
        None
    } else {
        Some(ansible::ensure_installed()?)
    };
    let work = tempfile::Builder::new()
        .prefix("vs-ansible-")
        .tempdir()
        .context("making the work directory")?;
    let dir = work.path().to_path_buf();
    say(&format!("work directory: {}", dir.display()));
    let repo = app_repository(&dir)?;
    let mut ctx = Ctx {
        options: &options,
        dir: dir.clone(),
        repo,
        ansible_playbook,
        ansible: dir.join("ansible"),
        tables: Vec::new(),
    };

    // What the layers install from package indexes goes into the base image, so that no row
    // waits on apt or pip.
    let preinstall = probe_preinstall(&ctx, &machine)?;
    testbed::ensure_bench_base(&machine, &bench, &preinstall)?;

    let result = (|| -> anyhow::Result<()> {
        for &n in &options.hosts {
            let table = ctx.bench_hosts(&bench, n)?;
            println!("{}", table.markdown());
            ctx.tables.push(table);
        }
        Ok(())
    })();
    if result.is_err() || options.keep {
        say(&format!("kept the work directory {}", dir.display()));
        let _ = work.keep();
    }
    result?;
    let text = report::document(
        &ctx.tables,
        &std::env::args().collect::<Vec<_>>().join(" "),
        !options.no_ansible,
    );
    if let Some(out) = &options.out {
        std::fs::write(out, &text)?;
        say(&format!("results written to {}", out.display()));
    }
    Ok(())
}

/// The Zope example app as a git repository (provision pushes it with `git archive`).
fn app_repository(dir: &Path) -> anyhow::Result<PathBuf> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/apps/buildout");
    let repo = dir.join(APP);
    testbed::run(Command::new("cp").arg("-r").arg(&example).arg(&repo))?;
    git(&repo, &["init", "-q"])?;
    git(&repo, &["add", "-A"])?;
    git(&repo, &["commit", "-qm", "the Zope example"])?;
    Ok(repo)
}

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.email=bench@example.org",
            "-c",
            "user.name=bench",
        ])
        .args(args)
        .current_dir(repo)
        .output()
        .context("cannot run git")?;
    ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A new commit of the app: a new revision to deploy.
fn new_revision(repo: &Path, tag: &str) -> anyhow::Result<String> {
    std::fs::write(repo.join("NEWS.txt"), format!("{tag}\n"))?;
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "-qm", tag])?;
    git(repo, &["rev-parse", "HEAD"])
}

/// The frontend and database host.
const FRONT: &str = "front";

/// `front`, then the N app hosts.
fn host_names(n: usize) -> Vec<String> {
    std::iter::once(FRONT.to_string())
        .chain((1..=n).map(|i| format!("app{i}")))
        .collect()
}

/// The stack: `front` serves the frontend and ZEO, every app host runs one Plone client.
/// Unattended upgrades are off (not part of the instances or the frontend).
fn stack_toml(name: &str, n: usize, check_interval: u32) -> String {
    let mut text = format!("[stack]\nname = \"{name}\"\n\n");
    for (i, host) in host_names(n).iter().enumerate() {
        let layers = if host == FRONT {
            r#"["lb", "zeoserver"]"#
        } else {
            r#"["plone_instances"]"#
        };
        text.push_str(&format!(
            "[hosts.{host}]\naddress = \"192.0.2.{}\"\nlayers = {layers}\n\n",
            i + 1
        ));
    }
    text.push_str(&format!(
        "[apps.{APP}]\nrepository = \"{APP}\"\n\n\
         [attributes.plone_instances]\ninstance_count = 1\nshared_blobs = false\nsite_id = \"\"\n\n\
         [attributes.haproxy]\nhealth_check_url = \"/\"\ncheck_interval = {check_interval}\n\
         global_max_connections = {MAX_CONNECTIONS}\n\n\
         [attributes.apt.unattended_upgrades]\nenable = false\n\n\
         [attributes.deploy.{APP}]\nkeep_releases = {KEEP_RELEASES}\n"
    ));
    text
}

/// Boots throwaway hosts on the plain sandbox base and asks provision (plan, nothing changed)
/// which packages and virtualenvs the layers install.
fn probe_preinstall(ctx: &Ctx<'_>, machine: &Config) -> anyhow::Result<testbed::Preinstall> {
    let name = format!("{}probe", testbed::PREFIX);
    let bed = Bed::boot(machine, &name, &host_names(1))?;
    let result = (|| {
        std::fs::write(
            ctx.dir.join("stack.toml"),
            stack_toml(&name, 1, CHECK_INTERVAL[0]),
        )?;
        let dump = ctx.dump_dir("probe")?;
        ctx.provision_checked(&["plan", "--json"], Some(&dump), "probe-plan", 1)?;
        let mut packages: Vec<String> = Vec::new();
        let mut venv_files = Vec::new();
        for converge in ansible::read_dump(&dump, FRONT)?
            .into_iter()
            .chain(ansible::read_dump(&dump, "app1")?)
        {
            for r in &converge {
                if r["kind"] == "packages" {
                    for name in r["names"].as_array().into_iter().flatten() {
                        packages.push(name.as_str().unwrap_or_default().to_string());
                    }
                }
                let path = r["path"].as_str().unwrap_or_default();
                if r["kind"] == "file"
                    && (path.ends_with("/install-venv")
                        || (path.starts_with("/etc/provision/")
                            && path.ends_with("requirements.txt")))
                {
                    use base64::Engine as _;
                    let content = base64::engine::general_purpose::STANDARD
                        .decode(r["content_base64"].as_str().unwrap_or_default())?;
                    venv_files.push((path.to_string(), content));
                }
            }
        }
        // Ansible's apt module needs python3-apt on the host (also with --no-ansible: the
        // same base, the same hosts).
        packages.push("python3-apt".to_string());
        packages.sort();
        packages.dedup();
        Ok(testbed::Preinstall {
            packages,
            venv_files,
        })
    })();
    bed.destroy()?;
    result
}

struct Ctx<'a> {
    options: &'a Options,
    dir: PathBuf,
    repo: PathBuf,
    /// `ansible-playbook`; none with --no-ansible.
    ansible_playbook: Option<PathBuf>,
    /// The Ansible project: ansible.cfg, inventory, playbooks, vars.
    ansible: PathBuf,
    tables: Vec<Table>,
}

/// What the Ansible deploy needs that only provision's own release can say.
struct ReleaseFiles {
    fingerprint: String,
    manifest: String,
    deploy_cfg: String,
}

impl Ctx<'_> {
    fn dump_dir(&self, tag: &str) -> anyhow::Result<PathBuf> {
        let dump = self.dir.join(format!("dump-{tag}"));
        if dump.exists() {
            std::fs::remove_dir_all(&dump)?;
        }
        std::fs::create_dir_all(&dump)?;
        Ok(dump)
    }

    fn provision_run(&self, args: &[&str], dump: Option<&Path>, log: &str, n: usize) -> Run<'_> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend([
            "--stack".into(),
            "stack.toml".into(),
            "--sandbox".into(),
            // As Ansible gets forks = N.
            "--parallel".into(),
            n.to_string(),
        ]);
        let mut env = vec![(
            "PROVISION_SECRET_HAPROXY_STATS_PASSWORD".to_string(),
            STATS_PASSWORD.to_string(),
        )];
        if let Some(dump) = dump {
            env.push((
                provision_core::engine::DEBUG_RESOURCES_ENV.to_string(),
                dump.display().to_string(),
            ));
        }
        Run {
            program: &self.options.provision,
            args: all,
            env,
            dir: &self.dir,
            log: self.dir.join("logs").join(log),
        }
    }

    /// Runs provision (not measured) and fails on a non-zero exit; returns its stdout.
    fn provision_checked(
        &self,
        args: &[&str],
        dump: Option<&Path>,
        log: &str,
        n: usize,
    ) -> anyhow::Result<String> {
        std::fs::create_dir_all(self.dir.join("logs"))?;
        let run = self.provision_run(args, dump, log, n);
        let usage = run.measure()?;
        ensure!(
            usage.exit_code == 0,
            "provision {} exited with {}:\n{}\n{}",
            args.join(" "),
            usage.exit_code,
            run.stdout(),
            run.stderr_tail(30)
        );
        Ok(run.stdout())
    }

    fn ansible_run(
        &self,
        playbook: &str,
        log: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Run<'_>> {
        let mut args = vec![playbook.to_string()];
        for (k, v) in extra {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        Ok(Run {
            program: self
                .ansible_playbook
                .as_deref()
                .context("Ansible is not installed with --no-ansible")?,
            args,
            env: vec![
                (
                    "ANSIBLE_CONFIG".to_string(),
                    self.dir.join("ansible/ansible.cfg").display().to_string(),
                ),
                ("ANSIBLE_NOCOLOR".to_string(), "1".to_string()),
            ],
            dir: &self.ansible,
            log: self.dir.join("logs").join(log),
        })
    }

    fn ansible_dir(&self) -> PathBuf {
        self.ansible.clone()
    }

    /// Measures one run of a tool on `bed`: the command's own usage, the CPU the hosts spent
    /// meanwhile (their cgroups) and the SSH sessions each host's sshd started.
    fn measure(&self, bed: &Bed, run: &Run<'_>, what: &str) -> anyhow::Result<Measured> {
        std::fs::create_dir_all(self.dir.join("logs"))?;
        let load = report::loadavg();
        let sessions_before = bed.sessions()?;
        let cpu_before = bed.host_cpu();
        let usage = run.measure()?;
        let host_cpu = bed.host_cpu().saturating_sub(cpu_before);
        let sessions_after = bed.sessions()?;
        ensure!(
            usage.exit_code == 0,
            "{what} exited with {}:\n{}\n{}",
            usage.exit_code,
            tail(&run.stdout(), 40),
            run.stderr_tail(30)
        );
        let sessions = sessions_after
            .iter()
            .zip(&sessions_before)
            .map(|(a, b)| a - b)
            .collect();
        say(&format!(
            "{what}: {:.2} s, {} MiB peak",
            usage.wall.as_secs_f64(),
            usage.max_rss_kib / 1024
        ));
        Ok(Measured {
            usage,
            host_cpu,
            sessions,
            load,
        })
    }

    /// A provision row of `repeat` runs.
    fn measure_provision(
        &self,
        bed: &Bed,
        args: &[&str],
        log: &str,
        repeat: usize,
    ) -> anyhow::Result<Vec<Measured>> {
        let n = bed.hosts.len();
        (0..repeat)
            .map(|i| {
                let run = self.provision_run(args, None, &format!("{log}-{i}"), n);
                let what = format!("provision {} (N={})", args.join(" "), n - 1);
                self.measure(bed, &run, &what)
            })
            .collect()
    }

    fn measure_ansible(
        &self,
        bed: &Bed,
        playbook: &str,
        log: &str,
        repeat: usize,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Vec<Measured>> {
        let n = bed.hosts.len() - 1;
        (0..repeat)
            .map(|i| {
                ansible::close_masters(&self.ansible_dir());
                let run = self.ansible_run(playbook, &format!("{log}-{i}"), extra)?;
                let measured = self.measure(bed, &run, &format!("ansible {playbook} (N={n})"));
                ansible::close_masters(&self.ansible_dir());
                measured
            })
            .collect()
    }

    /// provision's plan of the whole stack: every host must be up to date (the other tool made
    /// exactly what provision would have). Returns each host's resources (a dump).
    fn plan_unchanged(&self, n: usize, tag: &str, after: &str) -> anyhow::Result<PathBuf> {
        let dump = self.dump_dir(tag)?;
        let out =
            self.provision_checked(&["plan", "--json"], Some(&dump), &format!("plan-{tag}"), n)?;
        let plan: Value = serde_json::from_str(&out).context("provision plan --json")?;
        let mut differences = Vec::new();
        for host in plan["hosts"].as_array().into_iter().flatten() {
            if host["outcome"]["status"] != "unchanged" {
                differences.push(format!(
                    "{}: {}",
                    host["host"].as_str().unwrap_or_default(),
                    serde_json::to_string_pretty(&host["changes"]).unwrap_or_default()
                ));
            }
        }
        ensure!(
            differences.is_empty(),
            "after {after}, provision would still change:\n{}",
            differences.join("\n")
        );
        Ok(dump)
    }

    /// The per-host configuration resources from a plan dump (the last converge of each host).
    fn config_resources(
        dump: &Path,
        names: &[String],
    ) -> anyhow::Result<Vec<(String, Vec<Value>)>> {
        names
            .iter()
            .map(|h| {
                let mut converges = ansible::read_dump(dump, h)?;
                Ok((h.clone(), converges.pop().unwrap_or_default()))
            })
            .collect()
    }

    fn write_converge_playbook(&self, dump: &Path, names: &[String]) -> anyhow::Result<()> {
        let resources = Self::config_resources(dump, names)?;
        let (yaml, groups) = ansible::play("the configuration layers", &resources, &in_base)?;
        say(&format!(
            "converge.yml: {} task(s) for {} group(s) of hosts",
            resources.iter().map(|(_, r)| r.len()).max().unwrap_or(0),
            groups.len()
        ));
        std::fs::write(self.ansible_dir().join("converge.yml"), yaml)?;
        Ok(())
    }

    /// Everything one N takes: boot, every row for both tools, the checks, destroy. With
    /// --no-ansible only provision's side: no Ansible runs, playbooks or checks after them.
    fn bench_hosts(&self, bench: &Config, n: usize) -> anyhow::Result<Table> {
        let name = format!("{}{n}", testbed::PREFIX);
        let names = host_names(n);
        std::fs::write(
            self.dir.join("stack.toml"),
            stack_toml(&name, n, CHECK_INTERVAL[0]),
        )?;
        let mut table = Table::new(n);
        let repeat = self.options.repeat;
        let with_ansible = !self.options.no_ansible;
        // Beyond 10 hosts one Ansible run takes minutes, and its runs differ by about 2%.
        let ansible_repeat = if n <= 10 { repeat } else { 1 };

        say(&format!("N={n}: booting {} hosts", n + 1));
        let mut bed = Bed::boot(bench, &name, &names)?;
        let result = (|| -> anyhow::Result<()> {
            // First converge of the configuration layers: `setup`, then `configure`.
            let setup = self.measure_provision(&bed, &["setup"], "p-first-setup", 1)?;
            let configure = self.measure_provision(&bed, &["configure"], "p-first-configure", 1)?;
            let provision_first = vec![Measured::sum(&setup[0], &configure[0])];
            let dump = self.plan_unchanged(n, "first", "provision setup + configure")?;

            // The same on fresh hosts, by Ansible.
            let ansible_first = if with_ansible {
                bed.destroy()?;
                bed = Bed::boot(bench, &name, &names)?;
                std::fs::create_dir_all(self.ansible_dir())?;
                let inventory: Vec<ansible::InventoryHost> = bed
                    .inventory
                    .hosts
                    .iter()
                    .map(|h| ansible::InventoryHost {
                        name: h.name.clone(),
                        address: h.address.to_string(),
                        instance: h.name != FRONT,
                    })
                    .collect();
                ansible::write_project(
                    &self.ansible_dir(),
                    &inventory,
                    &bed.inventory.key_file,
                    &bed.inventory.known_hosts,
                )?;
                self.write_converge_playbook(&dump, &names)?;
                let a = self.measure_ansible(&bed, "converge.yml", "a-first", 1, &[])?;
                self.plan_unchanged(n, "after-ansible-first", "Ansible's first converge")?;
                a
            } else {
                Vec::new()
            };
            table.push(Row::new(Op::FirstConverge, provision_first, ansible_first));

            // A live release everywhere, built with the build cache (untimed).
            let dump = self.first_release(&bed)?;
            if with_ansible {
                self.write_release_playbooks(&dump, &names[1..])?;
                let commit = git(&self.repo, &["rev-parse", "HEAD"])?;
                self.write_deploy_vars(&bed, &commit)?;
            }

            // What the hosts burn doing nothing (HAProxy's health checks of every client, ZEO,
            // the clients themselves), for reading the short rows.
            let before = bed.host_cpu();
            std::thread::sleep(std::time::Duration::from_secs(5));
            table.idle_cores = (bed.host_cpu() - before).as_secs_f64() / 5.0;

            // No-op `up`.
            let p = self.measure_provision(&bed, &["up"], "p-noop", repeat)?;
            let a = if with_ansible {
                self.measure_ansible(
                    &bed,
                    "site.yml",
                    "a-noop",
                    ansible_repeat,
                    &self.release_var(),
                )?
            } else {
                Vec::new()
            };
            table.push(Row::new(Op::Noop, p, a));

            // One change: haproxy.check_interval, a new haproxy.cfg and a reload on `front`.
            std::fs::write(
                self.dir.join("stack.toml"),
                stack_toml(&name, n, CHECK_INTERVAL[1]),
            )?;
            let p = self.measure_provision(&bed, &["up"], "p-change", 1)?;
            let a = if with_ansible {
                std::fs::write(
                    self.dir.join("stack.toml"),
                    stack_toml(&name, n, CHECK_INTERVAL[2]),
                )?;
                let dump = self.dump_dir("change")?;
                self.provision_checked(&["plan", "--json"], Some(&dump), "plan-change", n)?;
                self.write_converge_playbook(&dump, &names)?;
                let a =
                    self.measure_ansible(&bed, "site.yml", "a-change", 1, &self.release_var())?;
                self.plan_unchanged(n, "after-ansible-change", "Ansible's one-change converge")?;
                a
            } else {
                Vec::new()
            };
            table.push(Row::new(Op::OneChange, p, a));

            // Deploy of the live revision: nothing to do.
            let p = self.measure_provision(&bed, &["deploy"], "p-deploy-same", repeat)?;
            let a = if with_ansible {
                self.measure_ansible(
                    &bed,
                    "deploy-all.yml",
                    "a-deploy-same",
                    ansible_repeat,
                    &self.release_var(),
                )?
            } else {
                Vec::new()
            };
            table.push(Row::new(Op::DeployUnchanged, p, a));

            // Deploy of a new revision, the build cached (a commit per N: without Ansible's
            // commit in between, the same text would make no commit at the next N).
            new_revision(&self.repo, &format!("provision N={n}"))?;
            let p = self.measure_provision(&bed, &["deploy"], "p-deploy-new", 1)?;
            let a = if with_ansible {
                let commit = new_revision(&self.repo, &format!("ansible N={n}"))?;
                self.write_deploy_vars(&bed, &commit)?;
                let a = self.measure_ansible(
                    &bed,
                    "deploy-all.yml",
                    "a-deploy-new",
                    1,
                    &self.release_var(),
                )?;
                self.check_release_unchanged(n, &commit)?;
                a
            } else {
                Vec::new()
            };
            table.push(Row::new(Op::DeployNew, p, a));
            Ok(())
        })();
        table.load_note = report::machine_note(bench, &name);
        if (!self.options.keep || result.is_ok())
            && let Err(e) = bed.destroy()
        {
            say(&format!("destroying sandbox {name} failed: {e:#}"));
        }
        result.with_context(|| format!("N={n}"))?;
        Ok(table)
    }

    /// A release on every app host: the build cache is put in place first (made once, on app1,
    /// by a cold build, and kept in the benchmark's cache directory), then `provision deploy`.
    fn first_release(&self, bed: &Bed) -> anyhow::Result<PathBuf> {
        let n = bed.hosts.len();
        let shared = format!("{DEPLOY_TO}/shared");
        if !testbed::build_cache_file().is_file() {
            say(
                "building the app once on app1 for the build cache (a cold buildout, 1 to 2 minutes)",
            );
            self.provision_checked(&["deploy", "--host", "app1"], None, "cold-build", n)?;
            testbed::save_build_cache(&bed.hosts[1], &shared)?;
        }
        testbed::seed_build_cache(&bed.hosts_but(FRONT), &shared, APP_USER, APP_USER)?;
        say("first release on every host (untimed)");
        let dump = self.dump_dir("deploy")?;
        self.provision_checked(&["deploy"], Some(&dump), "first-release", n)?;
        Ok(dump)
    }

    /// From what `provision deploy` converged on each host: the instances' setup it checks
    /// first (deploy-setup.yml) and the clients' services it starts last (clients.yml).
    fn write_release_playbooks(&self, dump: &Path, names: &[String]) -> anyhow::Result<()> {
        let mut setup = Vec::new();
        let mut resources = Vec::new();
        for host in names {
            let mut converges = ansible::read_dump(dump, host)?.into_iter();
            setup.push((host.clone(), converges.next().unwrap_or_default()));
            resources.push((host.clone(), converges.flatten().collect::<Vec<Value>>()));
        }
        let (yaml, _) = ansible::play("what a release needs", &setup, &in_base)?;
        std::fs::write(self.ansible_dir().join("deploy-setup.yml"), yaml)?;
        let (yaml, _) = ansible::play("every Plone client running", &resources, &in_base)?;
        std::fs::write(self.ansible_dir().join("clients.yml"), yaml)?;
        let clients: Vec<Value> = resources[0]
            .1
            .iter()
            .filter(|r| r["kind"] == "service")
            .map(|r| {
                let unit = r["name"].as_str().unwrap_or_default();
                let client = unit.rsplit_once('@').map(|(_, c)| c).unwrap_or(unit);
                let number: u32 = client.trim_start_matches("client").parse().unwrap_or(1);
                serde_json::json!({"name": client, "unit": unit, "port": 8080 + number})
            })
            .collect();
        ensure!(
            !clients.is_empty(),
            "provision converged no Plone client services"
        );
        std::fs::write(
            self.ansible_dir().join("clients.json"),
            Value::from(clients).to_string(),
        )?;
        Ok(())
    }

    fn release_var(&self) -> Vec<(&'static str, String)> {
        let stamp = Command::new("date")
            .args(["-u", "+%Y%m%d%H%M%S"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        vec![("release_name", stamp)]
    }

    /// group_vars and host_vars of the deploy plays: the stack's settings, the commit to
    /// deploy (its tree as a tar), and per host the files provision generated for its release.
    fn write_deploy_vars(&self, bed: &Bed, commit: &str) -> anyhow::Result<()> {
        let dir = self.ansible_dir();
        let tree = dir.join("tree.tar");
        testbed::run(
            Command::new("git")
                .arg("-C")
                .arg(&self.repo)
                .args(["archive", "--format=tar", "-o"])
                .arg(&tree)
                .arg(commit),
        )?;
        let clients = std::fs::read_to_string(dir.join("clients.json"))?;
        let all = format!(
            "deploy_to: {DEPLOY_TO}\napp_user: {APP_USER}\napp_group: {APP_USER}\n\
             python: /usr/bin/python3\ncommit: \"{commit}\"\ntree_tar: \"{}\"\n\
             shared_links: [eggs, downloads, extends, var]\nshared_dirs: [var/log]\n\
             buildout_config: deploy.cfg\nbuildout_args: \"\"\nkeep_releases: {KEEP_RELEASES}\n\
             lb_host: {FRONT}\nhaproxy_socket: /run/haproxy/admin.sock\nhaproxy_backend: plone_instances\n\
             health_path: /\nhealth_timeout: 180\nclients: {clients}\n",
            tree.display()
        );
        std::fs::create_dir_all(dir.join("group_vars"))?;
        std::fs::create_dir_all(dir.join("host_vars"))?;
        std::fs::write(dir.join("group_vars/all.yml"), all)?;
        let apps = bed.hosts_but(FRONT);
        let files = testbed::each(&apps, |host| release_files(bed, host))?;
        for (host, files) in apps.iter().zip(files) {
            std::fs::write(
                dir.join(format!("host_vars/{}.yml", host.name())),
                format!(
                    "fingerprint: {}\nmanifest: {}\ndeploy_cfg: {}\n",
                    Value::String(files.fingerprint),
                    lit(&files.manifest),
                    lit(&files.deploy_cfg)
                ),
            )?;
        }
        Ok(())
    }

    /// After Ansible's deploy, provision must take the live release for its own: a deploy of
    /// the same commit is a no-op on every host.
    fn check_release_unchanged(&self, n: usize, commit: &str) -> anyhow::Result<()> {
        let out = self.provision_checked(&["deploy", "--json"], None, "deploy-check", n)?;
        let value: Value = serde_json::from_str(&out).context("provision deploy --json")?;
        for release in value["releases"].as_array().into_iter().flatten() {
            ensure!(
                release["outcome"]["status"] == "unchanged" && release["revision"] == commit,
                "after Ansible's deploy, provision did not take the release as its own: {release}"
            );
        }
        Ok(())
    }
}

/// Whether a directory exists in the hosts' base image.
fn in_base(dir: &str) -> bool {
    let machine = Config::from_env().unwrap_or_default();
    provision_sandbox::base_image::path(&testbed::bench_config(&machine).cache_root)
        .join(dir.trim_start_matches('/'))
        .is_dir()
}

fn lit(text: &str) -> String {
    format!("!unsafe {}", Value::String(text.to_string()))
}

/// The generated files of a host's live release, read from the machine.
fn release_files(bed: &Bed, host: &provision_sandbox::Host) -> anyhow::Result<ReleaseFiles> {
    let link = host
        .root()
        .join(DEPLOY_TO.trim_start_matches('/'))
        .join("current");
    let target = std::fs::read_link(&link).with_context(|| format!("{}", link.display()))?;
    let release = target.display().to_string();
    let read = |file: &str| bed.read(host, &format!("{release}/{file}"));
    Ok(ReleaseFiles {
        fingerprint: read(".provision/config.sha256")?.trim().to_string(),
        manifest: read(".provision/config.sha256sum")?,
        deploy_cfg: read("deploy.cfg")?,
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
