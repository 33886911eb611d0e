//! The bridge on the machine, and per host a network namespace with a veth pair
//! whose machine side is a bridge port (named after the host's address).

use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;

use crate::config::Subnet;
use crate::error::{Error, Result};
use crate::process::run;
use crate::tools::{self, Tools};

/// Machine-side veth name for an address; unique on the machine because subnets
/// of different bridges never overlap.
pub fn veth_name(addr: Ipv4Addr) -> String {
    format!("vb{:08x}", u32::from(addr))
}

/// A fixed, locally administered MAC for the bridge of a subnet.
pub fn bridge_mac(subnet: &Subnet) -> String {
    let [a, b, c, _] = subnet.network().octets();
    format!("02:70:73:{a:02x}:{b:02x}:{c:02x}")
}

/// A host's MAC follows its address: a host that takes the address of one
/// destroyed a moment ago is reached at once, without waiting for the stale
/// ARP entries of the machine and the other hosts to time out (about 30 s).
pub fn host_mac(addr: Ipv4Addr) -> String {
    let [_, b, c, d] = addr.octets();
    format!("0a:70:73:{b:02x}:{c:02x}:{d:02x}")
}

pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[derive(Debug, Deserialize)]
pub struct Link {
    pub ifname: String,
    #[serde(default)]
    pub master: Option<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub addr_info: Vec<AddrInfo>,
}

#[derive(Debug, Deserialize)]
pub struct AddrInfo {
    pub family: String,
    pub local: String,
    pub prefixlen: u8,
}

impl Link {
    pub fn is_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }
}

pub struct Net<'a> {
    pub tools: &'a Tools,
}

impl Net<'_> {
    fn ip(&self, args: &[&str]) -> Result<String> {
        run(self.tools.command(tools::IP).args(args))
    }

    pub fn links(&self) -> Result<Vec<Link>> {
        let text = self.ip(&["-j", "link", "show"])?;
        serde_json::from_str(&text)
            .map_err(|e| Error::InvalidInput(format!("`ip -j link` printed unexpected JSON: {e}")))
    }

    pub fn link(&self, name: &str) -> Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.ifname == name))
    }

    /// IPv4 addresses on the machine's interfaces: (interface, address, prefix).
    pub fn addresses(&self) -> Result<Vec<(String, Ipv4Addr, u8)>> {
        let text = self.ip(&["-j", "-4", "addr", "show"])?;
        let links: Vec<Link> = serde_json::from_str(&text).map_err(|e| {
            Error::InvalidInput(format!("`ip -j addr` printed unexpected JSON: {e}"))
        })?;
        let mut out = Vec::new();
        for link in links {
            for a in link.addr_info {
                if a.family == "inet"
                    && let Ok(addr) = a.local.parse()
                {
                    out.push((link.ifname.clone(), addr, a.prefixlen));
                }
            }
        }
        Ok(out)
    }

    /// Checks that the bridge can serve `subnet`: either it exists with exactly
    /// the gateway address, or it does not exist and no interface uses the subnet.
    /// Returns whether the bridge exists already.
    pub fn check_bridge(&self, bridge: &str, subnet: &Subnet) -> Result<bool> {
        let gateway = subnet.gateway();
        let exists = self.link(bridge)?.is_some();
        for (ifname, addr, prefix) in self.addresses()? {
            let theirs = Subnet::new(
                Ipv4Addr::from(u32::from(addr) & (u32::MAX << (32 - prefix.clamp(1, 32)))),
                prefix,
            );
            let overlaps = match &theirs {
                Ok(theirs) => theirs.overlaps(subnet),
                Err(_) => subnet.contains(addr),
            };
            if ifname == bridge {
                if addr != gateway || prefix != subnet.prefix() {
                    return Err(Error::AddressTaken {
                        address: format!("{gateway}/{}", subnet.prefix()),
                        detail: format!(
                            "bridge {bridge} exists with {addr}/{prefix}; choose another subnet or bridge (PROVISION_SANDBOX_SUBNET, --subnet)"
                        ),
                    });
                }
            } else if overlaps {
                return Err(Error::AddressTaken {
                    address: subnet.to_string(),
                    detail: format!(
                        "interface {ifname} has {addr}/{prefix}, which overlaps the sandbox subnet; choose another subnet (PROVISION_SANDBOX_SUBNET, --subnet)"
                    ),
                });
            }
        }
        Ok(exists)
    }

    /// Creates the bridge with the gateway address if missing.
    pub fn ensure_bridge(&self, bridge: &str, subnet: &Subnet) -> Result<()> {
        if self.check_bridge(bridge, subnet)? {
            let link = self.link(bridge)?;
            if link.is_some_and(|l| !l.is_up()) {
                self.ip(&["link", "set", bridge, "up"])?;
            }
            return Ok(());
        }
        // a bridge without an address of its own takes the lowest MAC of its
        // ports, so it would change as hosts come and go and leave the other
        // hosts with a stale ARP entry for the gateway (their connections to
        // the proxy time out for half a minute)
        let mac = bridge_mac(subnet);
        self.ip(&[
            "link", "add", "name", bridge, "address", &mac, "type", "bridge",
        ])?;
        let result = (|| {
            let cidr = format!("{}/{}", subnet.gateway(), subnet.prefix());
            self.ip(&["addr", "add", &cidr, "dev", bridge])?;
            self.ip(&["link", "set", bridge, "up"])?;
            Ok(())
        })();
        if result.is_err() {
            let _ = self.ip(&["link", "del", bridge]);
        }
        result
    }

    /// Deletes the bridge if no port is left on it.
    pub fn remove_bridge_if_unused(&self, bridge: &str) -> Result<bool> {
        let links = self.links()?;
        if !links.iter().any(|l| l.ifname == bridge) {
            return Ok(false);
        }
        if links.iter().any(|l| l.master.as_deref() == Some(bridge)) {
            return Ok(false);
        }
        self.ip(&["link", "del", bridge])?;
        Ok(true)
    }

    /// Network namespace + veth pair + address + default route for one host.
    /// Idempotent: parts that exist are kept.
    pub fn ensure_host(
        &self,
        netns: &str,
        veth: &str,
        addr: Ipv4Addr,
        subnet: &Subnet,
        bridge: &str,
    ) -> Result<()> {
        if !netns_exists(netns) {
            self.ip(&["netns", "add", netns])?;
        }
        if self.link(veth)?.is_none() {
            let mac = host_mac(addr);
            self.ip(&[
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "address", &mac,
                "netns", netns,
            ])?;
            // whatever had this address before is gone: forget its MAC now
            // rather than after the neighbour entry times out
            let _ = self.ip(&["neigh", "del", &addr.to_string(), "dev", bridge]);
        }
        self.ip(&["link", "set", veth, "master", bridge, "up"])?;
        let cidr = format!("{addr}/{}", subnet.prefix());
        let have = self.ip(&["-n", netns, "-4", "-o", "addr", "show", "dev", "eth0"])?;
        if !have.contains(&format!(" {cidr} ")) {
            self.ip(&["-n", netns, "addr", "add", &cidr, "dev", "eth0"])?;
        }
        self.ip(&["-n", netns, "link", "set", "lo", "up"])?;
        self.ip(&["-n", netns, "link", "set", "eth0", "up"])?;
        let gw = subnet.gateway().to_string();
        self.ip(&["-n", netns, "route", "replace", "default", "via", &gw])?;
        Ok(())
    }

    /// Removes a host's veth pair and namespace; missing parts are fine.
    pub fn remove_host(&self, netns: &str, veth: &str) -> Result<()> {
        if self.link(veth)?.is_some() {
            self.ip(&["link", "del", veth])?;
        }
        if netns_exists(netns) {
            self.ip(&["netns", "del", netns])?;
        }
        Ok(())
    }

    pub fn set_link(&self, veth: &str, up: bool) -> Result<()> {
        self.ip(&["link", "set", veth, if up { "up" } else { "down" }])?;
        Ok(())
    }

    pub fn link_up(&self, veth: &str) -> Result<bool> {
        Ok(self.link(veth)?.is_some_and(|l| l.is_up()))
    }

    /// Bridge port isolation: isolated ports cannot talk to each other, only to
    /// ports that are not isolated (the bridge itself, i.e. the controller,
    /// and hosts that are not isolated).
    pub fn set_isolated(&self, veth: &str, on: bool) -> Result<()> {
        run(self.tools.command(tools::BRIDGE).args([
            "link",
            "set",
            "dev",
            veth,
            "isolated",
            if on { "on" } else { "off" },
        ]))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_in_an_interface_name() {
        let name = veth_name(Ipv4Addr::new(10, 77, 0, 254));
        assert_eq!(name, "vb0a4d00fe");
        assert!(name.len() <= 15);
        let subnet: Subnet = "10.77.0.0/24".parse().unwrap();
        assert_eq!(bridge_mac(&subnet), "02:70:73:0a:4d:00");
        assert_eq!(host_mac(Ipv4Addr::new(10, 77, 0, 2)), "0a:70:73:4d:00:02");
    }
}
