//! `inventory.json`: what a client needs to reach the hosts of a sandbox.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Sandbox name.
    pub name: String,
    pub hosts: Vec<InventoryHost>,
    /// Private key (ed25519) authorized for root on every host.
    pub key_file: PathBuf,
    /// Every host's real host key, by address and by name: use it with strict
    /// host-key checking.
    pub known_hosts: PathBuf,
    /// The bridge's address: the machine as seen from the hosts.
    pub gateway: Ipv4Addr,
    pub subnet: String,
    /// The egress proxy on the bridge, if one was started.
    #[serde(default)]
    pub proxy: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryHost {
    pub name: String,
    pub address: Ipv4Addr,
    pub port: u16,
    pub user: String,
    /// The host's PID 1 (systemd) as seen from the machine; `None` when stopped.
    pub pid1: Option<u32>,
}

impl Inventory {
    pub fn read(path: &Path) -> Result<Inventory> {
        crate::state::read_json(path)
    }

    pub fn host(&self, name: &str) -> Option<&InventoryHost> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// `ssh` arguments that reach `host` with this inventory's key and strict
    /// host-key checking (followed by the remote command).
    pub fn ssh_args(&self, host: &InventoryHost) -> Vec<String> {
        vec![
            "-i".into(),
            self.key_file.display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
            "-p".into(),
            host.port.to_string(),
            format!("{}@{}", host.user, host.address),
        ]
    }
}
