//! memcached for RelStorage (the `memcached` layer): Debian's package, its one config file
//! (`/etc/memcached.conf`, read by Debian's unit) bound to the host's private address, and the
//! service restarted when the file changes. The instances list every `memcached` host in their
//! `cache-servers` ([`crate::client::RelStorageSettings::cache_servers`]).

use std::net::IpAddr;

use provision_core::phase::Phase;
use provision_core::resource::{File, Packages, Resource, Service};
use provision_core::template::Templates;
use serde::Serialize;

use crate::{Error, check_bind_address, invalid};

/// Debian's config file and service.
pub const CONFIG: &str = "/etc/memcached.conf";
pub const SERVICE: &str = "memcached";
/// The port the instances expect (the cookbook's, and memcached's).
pub const DEFAULT_PORT: u16 = 11211;

/// The memcached server of one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemcachedSettings {
    /// The host's private address; `0.0.0.0` and `::` are refused.
    pub address: IpAddr,
    /// Default 11211.
    pub port: u16,
    /// The cache's size in MB. Default [`MemcachedSettings::memory_for`] the host.
    pub memory_mb: u64,
    /// Default 1024.
    pub max_connections: u32,
}

impl MemcachedSettings {
    /// Port 11211, 1024 connections, and a cache of a quarter of the host's memory (64 MB to
    /// 1 GB; OpsWorks' memcached layer took 512 MB).
    pub fn new(address: IpAddr, host_memory_bytes: u64) -> MemcachedSettings {
        MemcachedSettings {
            address,
            port: DEFAULT_PORT,
            memory_mb: Self::memory_for(host_memory_bytes),
            max_connections: 1024,
        }
    }

    /// A quarter of the host's memory, from 64 MB to 1024 MB.
    pub fn memory_for(host_memory_bytes: u64) -> u64 {
        (host_memory_bytes / 4 / (1024 * 1024)).clamp(64, 1024)
    }

    pub fn check(&self) -> Result<(), Error> {
        check_bind_address("address", self.address)?;
        if self.port == 0 {
            return Err(invalid("port", "0 is not a port"));
        }
        if self.memory_mb == 0 {
            return Err(invalid("memory_mb", "give memcached some memory"));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "allow at least 1 connection"));
        }
        Ok(())
    }
}

/// The rendered `/etc/memcached.conf`.
pub fn config(settings: &MemcachedSettings, templates: &Templates) -> Result<String, Error> {
    settings.check()?;
    Ok(templates.render("zeo/memcached.conf.j2", settings)?)
}

/// memcached's resources for one phase.
pub fn resources(
    settings: &MemcachedSettings,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, Error> {
    settings.check()?;
    Ok(match phase {
        // Debian's package starts it on 127.0.0.1 until the configure phase moves it.
        Phase::Setup => vec![Packages::new(["memcached"]).into()],
        Phase::Configure => {
            let file = File::new(CONFIG, config(settings, templates)?);
            let id = Resource::from(file.clone()).id();
            vec![file.into(), Service::running(SERVICE).restart_on(id).into()]
        }
        Phase::Deploy => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_a_quarter_of_the_host_within_bounds() {
        let gib = 1024 * 1024 * 1024;
        assert_eq!(MemcachedSettings::memory_for(gib / 2), 128);
        assert_eq!(MemcachedSettings::memory_for(gib / 8), 64);
        assert_eq!(MemcachedSettings::memory_for(64 * gib), 1024);
    }

    #[test]
    fn every_interface_is_refused() {
        let settings = MemcachedSettings::new("0.0.0.0".parse().unwrap(), 1 << 30);
        assert!(
            settings
                .check()
                .unwrap_err()
                .to_string()
                .contains("private address")
        );
    }
}
