//! The hosts both tools work on: sandbox hosts booted from a base image that already holds the
//! layers' Debian packages (so that apt's time does not hide the tools'), with sshd logging
//! every session, which is how round trips are counted for both tools alike.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use provision_sandbox::{Config, Egress, Host, Inventory, ProxyMode, Sandbox, UpOptions};

/// Every sandbox of this benchmark is named `vsa-...`; stale ones are removed at start.
pub const PREFIX: &str = "vsa-";
/// The benchmark's base images and build cache.
pub const CACHE_DIR: &str = "/var/cache/provision-bench";
/// Bump when the steps of the bench base change.
const BENCH_BASE_VERSION: u32 = 1;
/// sshd logs `Starting session: command for ...` per command at this level.
const SSHD_LOG: &str =
    "# vs_ansible: one log line per SSH session, to count round trips\nLogLevel VERBOSE\n";

pub fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "vs_ansible: {message}");
}

/// The sandbox configuration of the machine, with the benchmark's own base image cache.
pub fn bench_config(machine: &Config) -> Config {
    let mut config = machine.clone();
    config.cache_root = Path::new(CACHE_DIR).join("sandbox");
    config
}

/// Booted hosts of one sandbox.
pub struct Bed {
    pub sandbox: Sandbox,
    pub hosts: Vec<Host>,
    pub inventory: Inventory,
}

impl Bed {
    /// Boots `names` as sandbox `name` (an existing sandbox of that name is destroyed first).
    pub fn boot(config: &Config, name: &str, names: &[String]) -> anyhow::Result<Bed> {
        let sandbox = Sandbox::with_config(config.clone(), name)?;
        if sandbox.exists() {
            sandbox.down(true)?;
        }
        let options = UpOptions {
            build_base: false,
            proxy: ProxyMode::InProcess,
            progress: Some(std::sync::Arc::new(|m: &str| say(m))),
            ..UpOptions::default()
        };
        let inventory = sandbox
            .up(names, &options)
            .with_context(|| format!("booting sandbox {name}"))?;
        let hosts = sandbox.hosts()?;
        Ok(Bed {
            sandbox,
            hosts,
            inventory,
        })
    }

    pub fn destroy(&self) -> anyhow::Result<()> {
        Ok(self.sandbox.down(true)?)
    }

    /// CPU time all hosts used so far (their cgroups: every process of the host).
    pub fn host_cpu(&self) -> Duration {
        self.hosts.iter().filter_map(Host::cpu_usage).sum()
    }

    /// SSH sessions (commands) each host's sshd has started so far.
    pub fn sessions(&self) -> anyhow::Result<Vec<u64>> {
        self.each(|host| {
            let out = host
                .sh("journalctl -q -o cat -u ssh.service | grep -c '^Starting session:' || true")?;
            let text = String::from_utf8_lossy(&out.stdout);
            text.trim()
                .parse()
                .with_context(|| format!("{}: cannot count SSH sessions: {text:?}", host.name()))
        })
    }

    /// `f` on every host, 16 at a time; results in host order.
    pub fn each<T: Send>(
        &self,
        f: impl Fn(&Host) -> anyhow::Result<T> + Sync,
    ) -> anyhow::Result<Vec<T>> {
        each(&self.hosts, f)
    }

    /// The hosts but `except`.
    pub fn hosts_but(&self, except: &str) -> Vec<Host> {
        self.hosts
            .iter()
            .filter(|h| h.name() != except)
            .cloned()
            .collect()
    }

    /// A file of a host, read from the machine through the host's mounted root.
    pub fn read(&self, host: &Host, path: &str) -> anyhow::Result<String> {
        let full = host.root().join(path.trim_start_matches('/'));
        std::fs::read_to_string(&full).with_context(|| format!("reading {}", full.display()))
    }
}

/// `f` on every host of `hosts`, 16 at a time; results in host order.
pub fn each<T: Send>(
    hosts: &[Host],
    f: impl Fn(&Host) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    {
        let mut results = Vec::with_capacity(hosts.len());
        for chunk in hosts.chunks(16) {
            let done: Vec<anyhow::Result<T>> = std::thread::scope(|scope| {
                let handles: Vec<_> = chunk.iter().map(|h| scope.spawn(|| f(h))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| bail!("a host thread panicked")))
                    .collect()
            });
            for result in done {
                results.push(result?);
            }
        }
        Ok(results)
    }
}

/// Removes sandboxes of this benchmark left by an earlier run that did not finish.
pub fn remove_stale(config: &Config) {
    for name in Sandbox::list(config) {
        if name.starts_with(PREFIX)
            && let Ok(sandbox) = Sandbox::with_config(config.clone(), &name)
        {
            say(&format!("removing sandbox {name} left by an earlier run"));
            if let Err(e) = sandbox.down(true) {
                say(&format!("cannot remove sandbox {name}: {e}"));
            }
        }
    }
}

/// What the layers install from package indexes, to put into the base: Debian packages, and
/// the files of virtualenv installers (`.../install-venv` and the requirements they read),
/// which are run once in the base and removed again, leaving the virtualenvs.
pub struct Preinstall {
    pub packages: Vec<String>,
    pub venv_files: Vec<(String, Vec<u8>)>,
}

impl Preinstall {
    fn installers(&self) -> impl Iterator<Item = &str> {
        self.venv_files
            .iter()
            .map(|(path, _)| path.as_str())
            .filter(|p| p.ends_with("/install-venv"))
    }
}

/// The recipe of the bench base: what it adds to the sandbox's base.
fn bench_recipe(pre: &Preinstall) -> String {
    let mut recipe = format!(
        "vs_ansible base {BENCH_BASE_VERSION}\nfrom {}\npackages {}\nsshd {SSHD_LOG:?}\n",
        provision_sandbox::base_image::recipe_hash(),
        pre.packages.join(" ")
    );
    for (path, content) in &pre.venv_files {
        recipe.push_str(&format!(
            "{path} {}\n",
            String::from_utf8_lossy(content).len()
        ));
        recipe.push_str(&String::from_utf8_lossy(content));
    }
    recipe
}

/// Makes `bench.cache_root`'s base: the machine's sandbox base plus the packages (installed
/// with apt in a chroot, their services left disabled, so a host boots as lean as the plain
/// base) and the virtualenvs of `pre`, and sshd at `LogLevel VERBOSE`. Rebuilt when any of
/// that changes.
pub fn ensure_bench_base(machine: &Config, bench: &Config, pre: &Preinstall) -> anyhow::Result<()> {
    let packages = &pre.packages;
    let source = provision_sandbox::base_image::ensure(&machine.cache_root, &|m| say(m))?;
    let target = provision_sandbox::base_image::path(&bench.cache_root);
    let recipe_file = target.with_extension("bench-recipe");
    let recipe = bench_recipe(pre);
    if provision_sandbox::base_image::is_built(&bench.cache_root)
        && std::fs::read_to_string(&recipe_file).is_ok_and(|r| r == recipe)
    {
        return Ok(());
    }
    say(&format!(
        "building the benchmark's base image {} (once; the sandbox base plus {} packages)",
        target.display(),
        packages.len()
    ));
    std::fs::create_dir_all(&bench.cache_root)?;
    let partial = target.with_extension("partial");
    for dir in [&partial, &target] {
        if dir.exists() {
            run(Command::new("rm").arg("-rf").arg(dir))?;
        }
    }
    run(Command::new("cp").arg("-a").arg(&source).arg(&partial))?;
    let egress = Egress::from_machine();
    let mut apt_conf = String::new();
    for (key, value) in &egress.apt_options {
        apt_conf.push_str(&format!("{key} \"{value}\";\n"));
    }
    write_in(
        &partial,
        "/etc/apt/apt.conf.d/00vs-ansible",
        apt_conf.as_bytes(),
    )?;
    for file in egress.apt_files.iter().chain(&egress.apt_keyrings) {
        write_in(&partial, &file.to_string_lossy(), &std::fs::read(file)?)?;
    }
    // pip in the chroot uses the machine's index, as the hosts do.
    let mut pip_conf = String::from("[global]\n");
    if let Some(url) = &egress.pip.index_url {
        pip_conf.push_str(&format!("index-url = {url}\n"));
    }
    if !egress.pip.extra_index_urls.is_empty() {
        pip_conf.push_str(&format!(
            "extra-index-url = {}\n",
            egress.pip.extra_index_urls.join(" ")
        ));
    }
    if let Some(cert) = &egress.pip.cert {
        pip_conf.push_str(&format!("cert = {}\n", cert.display()));
    }
    write_in(&partial, "/etc/pip.conf", pip_conf.as_bytes())?;
    for (path, content) in &pre.venv_files {
        write_in(&partial, path, content)?;
    }
    let installers: Vec<&str> = pre.installers().collect();
    // A private mount namespace: /proc in the chroot goes away with the script.
    let script = r#"set -eu
R=$1; shift
mount -t proc proc "$R/proc"
cp "$R/etc/resolv.conf" "$R/etc/resolv.conf.vs-ansible"
cat /etc/resolv.conf > "$R/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"
chmod 755 "$R/usr/sbin/policy-rc.d"
ls -1 "$R"/etc/systemd/system/*.wants/ > "$R/tmp/wants.before" 2>/dev/null || true
export DEBIAN_FRONTEND=noninteractive
chroot "$R" apt-get update -q
chroot "$R" apt-get install -y -q --no-install-recommends "$@"
chroot "$R" apt-get clean
# What the machine trusts (as the hosts get it at every start), after apt rewrote the bundle.
for ca in $CA_FILES; do mkdir -p "$R$(dirname "$ca")"; cp "$ca" "$R$ca"; done
for installer in $INSTALLERS; do chroot "$R" sh "$installer"; done
# Services of the added packages stay off: the layers enable what they manage.
for link in "$R"/etc/systemd/system/*.wants/*; do
    grep -qx "$(basename "$link")" "$R/tmp/wants.before" || rm -f "$link"
done
rm -f "$R/usr/sbin/policy-rc.d" "$R/tmp/wants.before" "$R/etc/apt/apt.conf.d/00vs-ansible"
mv "$R/etc/resolv.conf.vs-ansible" "$R/etc/resolv.conf"
find "$R/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -delete
umount "$R/proc"
"#;
    let log = bench.cache_root.join("bench-base.log");
    let status = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&partial)
        .args(packages)
        .env("INSTALLERS", installers.join(" "))
        .env(
            "CA_FILES",
            egress
                .ca_files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
        )
        .env_remove("PIP_FIND_LINKS")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(log.with_extension("err"))?)
        .status()
        .context("cannot run unshare (util-linux)")?;
    if !status.success() {
        bail!(
            "installing the packages into the benchmark's base failed; see {} and {}",
            log.display(),
            log.with_extension("err").display()
        );
    }
    for file in &egress.apt_files {
        let _ = std::fs::remove_file(partial.join(file.strip_prefix("/").unwrap_or(file)));
    }
    // The installers and their inputs are the layers' to write: only the virtualenvs stay.
    let _ = std::fs::remove_file(partial.join("etc/pip.conf"));
    for (path, _) in &pre.venv_files {
        let _ = std::fs::remove_file(partial.join(path.trim_start_matches('/')));
    }
    write_in(
        &partial,
        "/etc/ssh/sshd_config.d/zz-vs-ansible.conf",
        SSHD_LOG.as_bytes(),
    )?;
    std::fs::rename(&partial, &target)?;
    std::fs::write(&recipe_file, recipe)?;
    Ok(())
}

fn write_in(root: &Path, path: &str, content: &[u8]) -> anyhow::Result<()> {
    let full = root.join(path.trim_start_matches('/'));
    if let Some(dir) = full.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&full, content).with_context(|| format!("writing {}", full.display()))
}

pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The shared directories of a buildout app that make a build "cached": eggs, downloads,
/// extends and buildout's own virtualenv.
pub const BUILD_CACHE_DIRS: &[&str] = &["eggs", "downloads", "extends", "env"];

pub fn build_cache_file() -> PathBuf {
    Path::new(CACHE_DIR).join("build-cache.tar")
}

/// Saves the build cache of `host` (after a build there) for later runs.
pub fn save_build_cache(host: &Host, shared: &str) -> anyhow::Result<()> {
    let dir = host.root().join(shared.trim_start_matches('/'));
    let file = build_cache_file();
    let partial = file.with_extension("partial");
    run(Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&partial)
        .args(BUILD_CACHE_DIRS))?;
    std::fs::rename(&partial, &file)?;
    Ok(())
}

/// Unpacks the saved build cache into `shared` on `hosts`, owned by the app's user.
pub fn seed_build_cache(
    hosts: &[Host],
    shared: &str,
    user: &str,
    group: &str,
) -> anyhow::Result<()> {
    let file = build_cache_file();
    each(hosts, |host| {
        let dirs = BUILD_CACHE_DIRS
            .iter()
            .map(|d| format!("{shared}/{d}"))
            .collect::<Vec<_>>()
            .join(" ");
        let script = format!(
            "set -e; mkdir -p {shared}; tar -x -C {shared}; chown -R {user}:{group} {dirs}"
        );
        let mut command = host.command(&["/bin/sh", "-c", &script])?;
        command.stdin(std::fs::File::open(&file)?);
        let out = command.output()?;
        if !out.status.success() {
            bail!(
                "{}: seeding the build cache failed: {}",
                host.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    })?;
    Ok(())
}
