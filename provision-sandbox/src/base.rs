//! The shared read-only root of every host: Debian bookworm made with
//! debootstrap from the machine's own mirror, built once and cached under a
//! name that hashes its recipe (a changed recipe builds a new base).

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::egress;
use crate::error::{Error, IoContext, Result};
use crate::tools::{self, Tools};

pub const SUITE: &str = "bookworm";
pub const VARIANT: &str = "minbase";
pub const PACKAGES: &[&str] = &[
    "openssh-server",
    "python3",
    "python3-venv",
    "iproute2",
    "systemd",
    "systemd-sysv",
    "dbus",
    "sudo",
    "ca-certificates",
];

/// Bump when the steps below change in a way the lists do not show.
const RECIPE_VERSION: u32 = 1;

/// Units that make no sense in a test host, or that would take the dpkg lock
/// in the middle of a test (apt-daily).
const MASKED_UNITS: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "console-getty.service",
    "systemd-pstore.service",
];

/// One ed25519 host key, generated per host in milliseconds (RSA keys would
/// dominate the boot time).
const SSHD_CONFIG: &str = "# provision-sandbox\nHostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n";

const RESOLV_CONF: &str = "# provision-sandbox: no DNS here. Sandbox hosts are in /etc/hosts;\n# package registries are reached through the proxy on the bridge.\noptions timeout:1 attempts:1\n";

/// The recipe as text; its hash names the cached base.
pub fn recipe() -> String {
    format!(
        "recipe {RECIPE_VERSION}\nsuite {SUITE}\nvariant {VARIANT}\npackages {}\nmasked {}\nsshd_config {SSHD_CONFIG:?}\nresolv.conf {RESOLV_CONF:?}\n",
        PACKAGES.join(","),
        MASKED_UNITS.join(",")
    )
}

pub fn recipe_hash() -> String {
    let digest = Sha256::digest(recipe().as_bytes());
    hex::encode(&digest[..6])
}

/// Where the base of the current recipe lives.
pub fn path(cache_root: &Path) -> PathBuf {
    cache_root.join(format!("base-{}", recipe_hash()))
}

pub fn is_built(cache_root: &Path) -> bool {
    path(cache_root).join("etc/os-release").exists()
}

/// Returns the base, building it first when missing and `allow_build`.
pub fn ensure(cache_root: &Path, allow_build: bool, progress: &dyn Fn(&str)) -> Result<PathBuf> {
    let base = path(cache_root);
    if is_built(cache_root) {
        return Ok(base);
    }
    if !allow_build {
        return Err(Error::BaseMissing { path: base });
    }
    let tools = Tools::find(tools::BUILD)?;
    std::fs::create_dir_all(cache_root)
        .ctx(|| format!("cannot create {}", cache_root.display()))?;
    let hash = recipe_hash();
    // one builder at a time; the others wait and then find it built
    let _lock = crate::state::lock_file(&cache_root.join(format!(".base-{hash}.lock")))?;
    if is_built(cache_root) {
        return Ok(base);
    }
    let (mirror, keyring) = egress::debian_mirror(SUITE).ok_or_else(|| {
        Error::BaseBuild(format!(
            "no http(s) Debian mirror for {SUITE} in the machine's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/): the base is built from the machine's own mirror"
        ))
    })?;
    let partial = cache_root.join(format!("base-{hash}.partial"));
    remove_partial(&partial)?;
    let log_path = cache_root.join(format!("base-{hash}.log"));
    let log =
        std::fs::File::create(&log_path).ctx(|| format!("cannot create {}", log_path.display()))?;
    let log2 = log
        .try_clone()
        .ctx(|| "cannot duplicate the log file".into())?;
    progress(&format!(
        "building the sandbox base image {} with debootstrap (once; about 100 s; log: {})",
        base.display(),
        log_path.display()
    ));
    let started = Instant::now();
    let mut cmd = tools.command(tools::DEBOOTSTRAP);
    cmd.arg(format!("--variant={VARIANT}"))
        .arg(format!("--include={}", PACKAGES.join(",")));
    if let Some(keyring) = &keyring {
        cmd.arg(format!("--keyring={}", keyring.display()));
    }
    cmd.arg(SUITE)
        .arg(&partial)
        .arg(&mirror)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    let status = cmd
        .status()
        .ctx(|| format!("cannot run `{}`", crate::process::describe(&cmd)))?;
    if !status.success() {
        let _ = remove_partial(&partial);
        return Err(Error::BaseBuild(format!(
            "debootstrap {} ({})\n{}",
            crate::process::status_text(status),
            crate::process::describe(&cmd),
            crate::process::tail(&log_path, 20)
        )));
    }
    if let Err(e) = finish(&partial) {
        let _ = remove_partial(&partial);
        return Err(e);
    }
    std::fs::write(cache_root.join(format!("base-{hash}.recipe")), recipe())
        .ctx(|| "cannot write the recipe file".into())?;
    std::fs::rename(&partial, &base)
        .ctx(|| format!("cannot move the base to {}", base.display()))?;
    progress(&format!(
        "built the base image in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(base)
}

/// Turns a fresh debootstrap tree into the shared base: no identity (host keys,
/// machine-id), no apt sources (hosts get the machine's), test-friendly units.
fn finish(root: &Path) -> Result<()> {
    let p = |rel: &str| root.join(rel);
    remove_matching(&p("etc/ssh"), |n| n.starts_with("ssh_host_"))?;
    remove_matching(&p("var/lib/apt/lists"), |n| n != "lock" && n != "partial")?;
    remove_matching(&p("var/cache/apt/archives"), |n| n.ends_with(".deb"))?;
    remove_matching(&p("var/cache/apt"), |n| n.ends_with(".bin"))?;
    for rel in ["var/lib/dbus/machine-id", "etc/apt/sources.list"] {
        match std::fs::remove_file(p(rel)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).ctx(|| format!("cannot remove {rel} from the base"));
            }
            _ => {}
        }
    }
    let write =
        |rel: &str, content: &str| egress::write_in_root(root, Path::new(rel), content.as_bytes());
    write("/etc/machine-id", "")?;
    write("/etc/hostname", "localhost\n")?;
    write("/etc/resolv.conf", RESOLV_CONF)?;
    write("/etc/ssh/sshd_config.d/provision-sandbox.conf", SSHD_CONFIG)?;
    let units = p("etc/systemd/system");
    for unit in MASKED_UNITS {
        let link = units.join(unit);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link)
            .ctx(|| format!("cannot mask {unit} in the base"))?;
    }
    let default = units.join("default.target");
    let _ = std::fs::remove_file(&default);
    std::os::unix::fs::symlink("/lib/systemd/system/multi-user.target", &default)
        .ctx(|| "cannot set the default target in the base".into())?;
    Ok(())
}

fn remove_matching(dir: &Path, pick: impl Fn(&str) -> bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if pick(&name) && entry.file_type().is_ok_and(|t| !t.is_dir()) {
            std::fs::remove_file(entry.path())
                .ctx(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Removes a half-built tree, unmounting whatever debootstrap left mounted in it first.
fn remove_partial(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for mount in crate::state::mounts_under(dir).into_iter().rev() {
        let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
    }
    if !crate::state::mounts_under(dir).is_empty() {
        return Err(Error::BaseBuild(format!(
            "{} still has mounts; unmount them and remove it",
            dir.display()
        )));
    }
    std::fs::remove_dir_all(dir).ctx(|| format!("cannot remove {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_hash_is_stable_and_short() {
        assert_eq!(recipe_hash().len(), 12);
        assert_eq!(recipe_hash(), recipe_hash());
        assert!(recipe().contains("openssh-server"));
        assert!(
            path(Path::new("/c"))
                .to_string_lossy()
                .starts_with("/c/base-")
        );
    }
}
