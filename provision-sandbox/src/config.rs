//! Where the sandbox keeps its state and cache, and which subnet it uses.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Default subnet of the bridge; the bridge takes `.1`, hosts `.2` upwards.
pub const DEFAULT_SUBNET: &str = "10.77.0.0/24";
/// Default state directory: one directory per sandbox.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/provision-sandbox";
/// Default cache directory: the debootstrap'ed base images, outside any checkout.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/provision-sandbox";

/// An IPv4 subnet such as `10.77.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Subnet> {
        if !(8..=29).contains(&prefix) {
            return Err(Error::InvalidInput(format!(
                "subnet {network}/{prefix}: the prefix length must be between 8 and 29"
            )));
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(network) & !mask != 0 {
            let net = Ipv4Addr::from(u32::from(network) & mask);
            return Err(Error::InvalidInput(format!(
                "subnet {network}/{prefix} has host bits set; did you mean {net}/{prefix}?"
            )));
        }
        Ok(Subnet { network, prefix })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// The bridge's address: the first address of the subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Addresses hosts may take, in order.
    pub fn host_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        let first = u32::from(self.network) + 2;
        let broadcast = u32::from(self.network) | !self.mask();
        (first..broadcast).map(Ipv4Addr::from)
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let mask = self.mask().min(other.mask());
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }

    /// The bridge name used for this subnet when none is configured:
    /// `psbr` and the network in hex, so that two subnets never share a bridge.
    pub fn default_bridge(&self) -> String {
        format!("psbr{:08x}", u32::from(self.network))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Subnet> {
        let bad = || {
            Error::InvalidInput(format!(
                "subnet {s:?} is not of the form A.B.C.D/LEN (e.g. {DEFAULT_SUBNET})"
            ))
        };
        let (net, len) = s.trim().split_once('/').ok_or_else(bad)?;
        let network: Ipv4Addr = net.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        Subnet::new(network, prefix)
    }
}

/// Paths and network of the sandbox. `Config::from_env()` reads overrides from
/// `PROVISION_SANDBOX_STATE_DIR`, `PROVISION_SANDBOX_CACHE_DIR`,
/// `PROVISION_SANDBOX_SUBNET` and `PROVISION_SANDBOX_BRIDGE`.
#[derive(Debug, Clone)]
pub struct Config {
    /// One directory per sandbox (state, keys, inventory, host disks).
    pub state_root: PathBuf,
    /// Base images, kept between runs.
    pub cache_root: PathBuf,
    /// Subnet for new sandboxes (existing ones keep theirs).
    pub subnet: Subnet,
    /// Bridge for new sandboxes; at most 15 characters.
    pub bridge: String,
}

impl Default for Config {
    fn default() -> Config {
        let subnet: Subnet = DEFAULT_SUBNET.parse().expect("default subnet is valid");
        Config {
            state_root: PathBuf::from(DEFAULT_STATE_DIR),
            cache_root: PathBuf::from(DEFAULT_CACHE_DIR),
            bridge: subnet.default_bridge(),
            subnet,
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Config> {
        let mut config = Config::default();
        if let Some(dir) = std::env::var_os("PROVISION_SANDBOX_STATE_DIR") {
            config.state_root = PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("PROVISION_SANDBOX_CACHE_DIR") {
            config.cache_root = PathBuf::from(dir);
        }
        if let Ok(subnet) = std::env::var("PROVISION_SANDBOX_SUBNET") {
            config = config.with_subnet(subnet.parse()?);
        }
        if let Ok(bridge) = std::env::var("PROVISION_SANDBOX_BRIDGE") {
            config.bridge = bridge;
        }
        config.check()?;
        Ok(config)
    }

    /// Sets the subnet and the bridge that goes with it.
    pub fn with_subnet(mut self, subnet: Subnet) -> Config {
        self.bridge = subnet.default_bridge();
        self.subnet = subnet;
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        let b = &self.bridge;
        if b.is_empty()
            || b.len() > 15
            || !b
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::InvalidName {
                name: b.clone(),
                reason: "a bridge name has 1 to 15 characters out of a-z, 0-9, - and _".into(),
            });
        }
        for dir in [&self.state_root, &self.cache_root] {
            let s = dir.to_string_lossy();
            if !dir.is_absolute() || s.contains([',', ':', ' ', '\n']) {
                return Err(Error::InvalidInput(format!(
                    "{s}: the sandbox directories must be absolute paths without commas, colons or spaces (they end up in overlay mount options)"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_parsing_and_ranges() {
        let s: Subnet = "10.77.0.0/24".parse().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 77, 0, 1));
        let hosts: Vec<_> = s.host_addresses().collect();
        assert_eq!(hosts.len(), 253);
        assert_eq!(hosts[0], Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(*hosts.last().unwrap(), Ipv4Addr::new(10, 77, 0, 254));
        assert!(s.contains(Ipv4Addr::new(10, 77, 0, 9)));
        assert!(!s.contains(Ipv4Addr::new(10, 77, 1, 9)));
        assert_eq!(s.default_bridge(), "psbr0a4d0000");
        assert!("10.77.0.1/24".parse::<Subnet>().is_err());
        assert!("10.77.0.0".parse::<Subnet>().is_err());
        assert!("10.77.0.0/31".parse::<Subnet>().is_err());
        let wide: Subnet = "10.77.0.0/16".parse().unwrap();
        assert!(wide.overlaps(&s) && s.overlaps(&wide));
        assert!(!s.overlaps(&"10.78.0.0/24".parse().unwrap()));
    }
}
