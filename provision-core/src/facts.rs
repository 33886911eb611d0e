//! Facts about a host, gathered in one round trip.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::host::{Command, Host, HostError};

/// Commands whose presence layers ask about (`Facts::has_command`).
const PROBED_COMMANDS: &[&str] = &[
    "apt-get",
    "dpkg-query",
    "systemctl",
    "systemd-analyze",
    "sudo",
    "python3",
    "git",
    "curl",
    "haproxy",
    "nginx",
    "varnishd",
    "redis-server",
    "psql",
    "java",
    "s3fs",
    "glusterfs",
    "ganesha.nfsd",
    "mount.nfs",
    "sha256sum",
    "base64",
];

/// What `provision` knows about a host before it decides anything.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Facts {
    pub hostname: String,
    pub os_id: String,
    pub os_version_id: String,
    pub os_pretty_name: String,
    pub arch: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    /// `systemd` when systemd is PID 1, else the name of PID 1.
    pub init: String,
    /// The first package manager found (`apt-get`, `dnf`, `yum`, `apk`, `zypper`).
    pub package_manager: Option<String>,
    /// Global-scope addresses of the host's interfaces.
    pub addresses: Vec<IpAddr>,
    /// The kernel has IPv6 (services may bind `[::]`).
    pub ipv6: bool,
    /// The hard limit of open files (`ulimit -Hn`) a service can raise itself to; `None` is
    /// unlimited.
    pub open_files_limit: Option<u64>,
    pub commands: BTreeSet<String>,
}

impl Facts {
    pub fn has_command(&self, name: &str) -> bool {
        self.commands.contains(name)
    }

    pub fn is_systemd(&self) -> bool {
        self.init == "systemd"
    }

    /// The shell script that prints the facts as `key=value` lines. Shell builtins where they
    /// do: every process costs the host about a millisecond of CPU, on every run.
    pub fn script() -> String {
        let probes = PROBED_COMMANDS.join(" ");
        format!(
            r#"[ -r /etc/os-release ] && . /etc/os-release
echo "os_id=${{ID:-unknown}}"
echo "os_version_id=${{VERSION_ID:-}}"
echo "os_pretty_name=${{PRETTY_NAME:-}}"
echo "arch=$(uname -m)"
echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
while read -r k v _; do if [ "$k" = MemTotal: ]; then echo "memory_kib=$v"; break; fi; done </proc/meminfo
if [ -d /run/systemd/system ]; then echo init=systemd; else echo "init=$(cat /proc/1/comm 2>/dev/null)"; fi
for pm in apt-get dnf yum apk zypper; do if command -v $pm >/dev/null 2>&1; then echo "package_manager=$pm"; break; fi; done
if read -r h </proc/sys/kernel/hostname 2>/dev/null; then echo "hostname=$h"; else echo "hostname=$(hostname 2>/dev/null || cat /etc/hostname)"; fi
if command -v ip >/dev/null 2>&1; then ip -o addr show scope global | while read -r _ _ _ a _; do echo "address=${{a%%/*}}"; done; fi
if [ -e /proc/net/if_inet6 ]; then echo ipv6=yes; fi
echo "open_files_limit=$(ulimit -Hn)"
for c in {probes}; do if command -v $c >/dev/null 2>&1; then echo "command=$c"; fi; done
"#
        )
    }

    /// Parse what [`Facts::script`] printed.
    pub fn parse(output: &str) -> Result<Facts, String> {
        let mut facts = Facts {
            hostname: String::new(),
            os_id: String::new(),
            os_version_id: String::new(),
            os_pretty_name: String::new(),
            arch: String::new(),
            cpus: 0,
            memory_bytes: 0,
            init: String::new(),
            package_manager: None,
            addresses: Vec::new(),
            ipv6: false,
            open_files_limit: None,
            commands: BTreeSet::new(),
        };
        for line in output.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key {
                "hostname" => facts.hostname = value.to_string(),
                "os_id" => facts.os_id = value.to_string(),
                "os_version_id" => facts.os_version_id = value.to_string(),
                "os_pretty_name" => facts.os_pretty_name = value.to_string(),
                "arch" => facts.arch = value.to_string(),
                "cpus" => {
                    facts.cpus = value
                        .parse()
                        .map_err(|_| format!("CPU count is not a number: {value:?}"))?;
                }
                "memory_kib" => {
                    facts.memory_bytes = value
                        .parse::<u64>()
                        .map_err(|_| format!("memory size is not a number: {value:?}"))?
                        * 1024;
                }
                "init" => facts.init = value.to_string(),
                "package_manager" => facts.package_manager = Some(value.to_string()),
                "address" => {
                    if let Ok(address) = value.parse() {
                        facts.addresses.push(address);
                    }
                }
                "ipv6" => facts.ipv6 = value == "yes",
                "open_files_limit" => facts.open_files_limit = value.parse().ok(),
                "command" => {
                    facts.commands.insert(value.to_string());
                }
                _ => {}
            }
        }
        if facts.cpus == 0 {
            return Err("the host did not report its CPU count".to_string());
        }
        Ok(facts)
    }

    /// Gather the facts of `host` in one round trip.
    pub async fn gather(host: &Host) -> Result<Facts, HostError> {
        let output = host.exec(Command::new(Facts::script())).await?;
        let reason = if output.success() {
            match Facts::parse(&output.stdout_lossy()) {
                Ok(facts) => return Ok(facts),
                Err(reason) => reason,
            }
        } else {
            format!(
                "{}: {}",
                output.describe_exit(),
                output.stderr_lossy().trim()
            )
        };
        Err(HostError::Other {
            host: host.name().to_string(),
            reason: format!("gathering facts failed: {reason}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_debian_host() {
        let facts = Facts::parse(
            "os_id=debian\nos_version_id=12\nos_pretty_name=Debian GNU/Linux 12 (bookworm)\n\
             arch=x86_64\ncpus=4\nmemory_kib=2048000\ninit=systemd\npackage_manager=apt-get\n\
             hostname=app1\naddress=10.77.0.11\naddress=fe80::1\nipv6=yes\nopen_files_limit=20000\ncommand=systemctl\ncommand=apt-get\n",
        )
        .unwrap();
        assert_eq!(facts.cpus, 4);
        assert_eq!(facts.memory_bytes, 2048000 * 1024);
        assert!(facts.is_systemd());
        assert_eq!(facts.package_manager.as_deref(), Some("apt-get"));
        assert_eq!(facts.addresses.len(), 2);
        assert!(facts.ipv6);
        assert_eq!(facts.open_files_limit, Some(20000));
        assert!(facts.has_command("systemctl"));
        assert!(!facts.has_command("haproxy"));
    }

    #[test]
    fn missing_cpu_count_is_an_error() {
        assert!(Facts::parse("os_id=debian\n").is_err());
    }

    #[tokio::test]
    async fn gathers_the_local_machine_in_one_round_trip() {
        let host = Host::local("local");
        let facts = Facts::gather(&host).await.unwrap();
        assert!(facts.cpus >= 1);
        assert!(facts.memory_bytes > 0);
        assert!(facts.has_command("base64"));
        assert_eq!(host.round_trips(), 1);
    }
}
