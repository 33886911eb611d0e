//! Every booted host holds several inotify instances (systemd, journald,
//! logind, dbus...), all of root's. The usual `fs.inotify.max_user_instances`
//! of 128 stops host creation at about the 18th host, so it is raised for as
//! long as sandboxes exist and restored when the last one is destroyed.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{IoContext, Result};
use crate::state::{self, Paths, State};

const SYSCTL: &str = "/proc/sys/fs/inotify/max_user_instances";
/// Measured: a booted bookworm host holds 7 (also with nginx installed).
pub const PER_HOST: u64 = 8;
/// What the machine itself may use besides the hosts.
const RESERVE: u64 = 64;

fn saved(config: &Config) -> PathBuf {
    config.state_root.join(".inotify-max-user-instances.orig")
}

fn read(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The limit needed for `hosts` hosts in all.
pub fn needed(hosts: u64) -> u64 {
    let want = hosts * PER_HOST + RESERVE;
    want.div_ceil(128) * 128
}

/// Raises the limit if the hosts of every sandbox (this one included) need more.
pub(crate) fn ensure_for(config: &Config, this: &State, say: &dyn Fn(&str)) -> Result<()> {
    let mut total = this.hosts.len() as u64;
    for name in state::list(config) {
        if name != this.name
            && let Ok(s) = state::read_state(&Paths::new(config, &name))
        {
            total += s.hosts.len() as u64;
        }
    }
    let Some(current) = read(Path::new(SYSCTL)) else {
        return Ok(());
    };
    let want = needed(total);
    if want <= current {
        return Ok(());
    }
    let orig = saved(config);
    if !orig.exists() {
        std::fs::write(&orig, format!("{current}\n"))
            .ctx(|| format!("cannot write {}", orig.display()))?;
    }
    std::fs::write(SYSCTL, want.to_string()).ctx(|| format!("cannot raise {SYSCTL}"))?;
    say(&format!(
        "raised fs.inotify.max_user_instances from {current} to {want} for {total} hosts (restored when the last sandbox is destroyed)"
    ));
    Ok(())
}

/// Puts the original limit back (when no sandbox is left).
pub(crate) fn restore(config: &Config) {
    let orig = saved(config);
    if let Some(value) = read(&orig)
        && std::fs::write(SYSCTL, value.to_string()).is_ok()
    {
        let _ = std::fs::remove_file(&orig);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn needed_rounds_up() {
        assert_eq!(super::needed(3), 128);
        assert_eq!(super::needed(16), 256);
        assert_eq!(super::needed(30), 384);
    }
}
