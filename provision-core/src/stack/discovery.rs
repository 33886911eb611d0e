//! Discovery, computed from the stack alone (no network): which host serves ZEO, the broker,
//! Solr, the blobs and memcached, and every HAProxy backend. Fixed addresses in the attributes
//! win over the layers; among a layer's hosts the first in the stack file serves.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use super::Stack;
use super::attributes::Client;
use super::layer::Layer;
use super::model::HostSpec;

/// A `host:port` a service listens on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// ZEO's port (hard-coded by the cookbook's buildouts).
    pub const ZEO_PORT: u16 = 8001;
    /// memcached's port.
    pub const MEMCACHED_PORT: u16 = 11211;

    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; `None` when
    /// the port is not a number from 1 to 65535 or the host is empty.
    pub fn parse(text: &str, default_port: u16) -> Option<Endpoint> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return None,
            }
        } else if text.matches(':').count() == 1 {
            let (host, port) = text.split_once(':')?;
            (host, Some(port))
        } else {
            (text, None)
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
            None => default_port,
        };
        (!host.is_empty()).then(|| Endpoint::new(host, port))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One `server` line of HAProxy's Plone backend: one client of one `plone_instances` host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// `<host>-<n>`, the name used with HAProxy's runtime API to drain it.
    pub name: String,
    /// The stack's name of the host.
    pub host: String,
    /// The address HAProxy connects to (the host's service address).
    pub address: String,
    /// The client's port, 8080 + n.
    pub port: u16,
    /// The client's name on its host (`client<n>`).
    pub client: String,
    /// Concurrent requests HAProxy sends it: its threads.
    pub maxconn: u32,
}

/// Discovery that needs facts the stack does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "cannot list the Plone clients of host `{host}`: its CPU count is unknown (gather its \
         facts first, or set `plone_instances.instance_count`)"
    )]
    UnknownCpuCount { host: String },
}

impl Stack {
    fn first_with(&self, layer: Layer) -> Option<&HostSpec> {
        self.hosts.iter().find(|h| h.has_layer(layer))
    }

    /// The ZEO server: `plone_instances.zeo.address` (port 8001 if none is given), else the
    /// first host of `plone_instances.zeo_layer` on port 8001. `None` with RelStorage, or when
    /// there is no such host.
    pub fn zeo_address(&self) -> Option<Endpoint> {
        let pi = &self.attributes.plone_instances;
        if let Some(address) = &pi.zeo.address {
            return Endpoint::parse(address, Endpoint::ZEO_PORT);
        }
        if pi.enable_relstorage {
            return None;
        }
        let host = self.first_with(pi.zeo_layer)?;
        Some(Endpoint::new(host.service_address(), Endpoint::ZEO_PORT))
    }

    /// The Celery broker (Redis): `plone_instances.broker.host`, else the first host of
    /// `plone_instances.broker_layer`; on `plone_instances.broker.port` (6379).
    pub fn broker(&self) -> Option<Endpoint> {
        let pi = &self.attributes.plone_instances;
        let host = match &pi.broker.host {
            Some(host) => host.clone(),
            None => self
                .first_with(pi.broker_layer)?
                .service_address()
                .to_string(),
        };
        Some(Endpoint::new(host, pi.broker.port))
    }

    /// The Solr host: `plone_instances.solr_host`, else the first host of
    /// `plone_instances.solr_layer`.
    pub fn solr_host(&self) -> Option<String> {
        let pi = &self.attributes.plone_instances;
        match &pi.solr_host {
            Some(host) => Some(host.clone()),
            None => self
                .first_with(pi.solr_layer)
                .map(|h| h.service_address().to_string()),
        }
    }

    /// The NFS or GlusterFS server the blob directory is mounted from: `plone_blobs.host`,
    /// else the first of `plone_blobs.servers`, else the first host of `plone_blobs.layer`.
    pub fn blob_server(&self) -> Option<String> {
        let blobs = &self.attributes.plone_blobs;
        if let Some(host) = &blobs.host {
            return Some(host.clone());
        }
        if let Some(first) = blobs.servers.as_ref().and_then(|s| s.first()) {
            return Some(first.clone());
        }
        self.first_with(blobs.layer)
            .map(|h| h.service_address().to_string())
    }

    /// The GlusterFS peers: `plone_blobs.servers`, else every host of `plone_blobs.layer`.
    /// The first one leads (creates the volume, adds bricks).
    pub fn gluster_peers(&self) -> Vec<String> {
        let blobs = &self.attributes.plone_blobs;
        match &blobs.servers {
            Some(servers) => servers.clone(),
            None => self
                .hosts_with(blobs.layer)
                .iter()
                .map(|h| h.service_address().to_string())
                .collect(),
        }
    }

    /// The memcached servers of RelStorage: `plone_instances.relstorage.cache_servers`
    /// (port 11211 where none is given), else every `memcached` host on 11211.
    pub fn memcached_servers(&self) -> Vec<Endpoint> {
        match &self.attributes.plone_instances.relstorage.cache_servers {
            Some(servers) => servers
                .iter()
                .filter_map(|s| Endpoint::parse(s, Endpoint::MEMCACHED_PORT))
                .collect(),
            None => self
                .hosts_with(Layer::Memcached)
                .iter()
                .map(|h| Endpoint::new(h.service_address(), Endpoint::MEMCACHED_PORT))
                .collect(),
        }
    }

    /// The RelStorage database host when it is not in a DSN: `relstorage.db.host`, else the
    /// app's `deploy.<app>.database.host`, else the first `postgres` host.
    pub fn relstorage_db_host(&self) -> Option<String> {
        let db = &self.attributes.plone_instances.relstorage.db;
        if let Some(host) = &db.host {
            return Some(host.clone());
        }
        let app_database = self
            .app_for(Layer::PloneInstances)
            .and_then(|app| self.attributes.deploy.get(&app.name))
            .and_then(|d| d.database.as_ref())
            .and_then(|d| d.host.clone());
        app_database.or_else(|| {
            self.first_with(Layer::Postgres)
                .map(|h| h.service_address().to_string())
        })
    }

    /// The host that runs Celery beat: the first `plone_instances` host, when Celery and beat
    /// are on. Exactly one host runs it.
    pub fn beat_host(&self) -> Option<&HostSpec> {
        let pi = &self.attributes.plone_instances;
        if pi.enable_celery && pi.celerybeat {
            self.first_with(Layer::PloneInstances)
        } else {
            None
        }
    }

    /// The host that packs the RelStorage database: the `db_packing` host, else (with
    /// `relstorage.enable_pack`) the first `plone_instances` host. `None` with ZEO, which packs
    /// on the ZEO server.
    pub fn pack_host(&self) -> Option<&HostSpec> {
        let pi = &self.attributes.plone_instances;
        if !pi.enable_relstorage {
            return None;
        }
        self.first_with(Layer::DbPacking).or_else(|| {
            if pi.relstorage.enable_pack {
                self.first_with(Layer::PloneInstances)
            } else {
                None
            }
        })
    }

    /// The Plone clients of one host, given its CPU count (not needed with
    /// `plone_instances.instance_count`).
    pub fn clients_of(
        &self,
        host: &HostSpec,
        cpus: Option<u32>,
    ) -> Result<Vec<Client>, DiscoveryError> {
        let pi = &self.attributes.plone_instances;
        let cpus = match (pi.instance_count, cpus) {
            (Some(_), _) => 1,
            (None, Some(cpus)) => cpus,
            (None, None) => {
                return Err(DiscoveryError::UnknownCpuCount {
                    host: host.name.clone(),
                });
            }
        };
        Ok(pi.clients(cpus))
    }

    /// Every HAProxy backend: for each `plone_instances` host in order, each of its clients.
    /// `cpus` gives a host's CPU count by its name (from its facts).
    pub fn haproxy_backends(
        &self,
        cpus: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<Vec<Backend>, DiscoveryError> {
        self.haproxy_backends_except(cpus, &BTreeSet::new())
    }

    /// [`Stack::haproxy_backends`] without the clients of the instance hosts named in `away`
    /// (hosts `provision watch` found gone); their CPU counts are not needed.
    pub fn haproxy_backends_except(
        &self,
        cpus: &dyn Fn(&str) -> Option<u32>,
        away: &BTreeSet<String>,
    ) -> Result<Vec<Backend>, DiscoveryError> {
        let maxconn = self.attributes.plone_instances.threads();
        let mut backends = Vec::new();
        let hosts = self.hosts_with(Layer::PloneInstances);
        for host in hosts.into_iter().filter(|h| !away.contains(&h.name)) {
            for client in self.clients_of(host, cpus(&host.name))? {
                backends.push(Backend {
                    name: format!("{}-{}", host.name, client.number),
                    host: host.name.clone(),
                    address: host.service_address().to_string(),
                    port: client.port,
                    client: client.name,
                    maxconn,
                });
            }
        }
        Ok(backends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_hosts_ports_and_ipv6() {
        let parse = |s| Endpoint::parse(s, 8001).map(|e| e.to_string());
        assert_eq!(parse("zeo1").as_deref(), Some("zeo1:8001"));
        assert_eq!(parse("zeo1:8100").as_deref(), Some("zeo1:8100"));
        assert_eq!(parse("[fd00::1]:9000").as_deref(), Some("[fd00::1]:9000"));
        assert_eq!(parse("fd00::1").as_deref(), Some("[fd00::1]:8001"));
        assert_eq!(parse("zeo1:port"), None);
        assert_eq!(parse("zeo1:0"), None);
        assert_eq!(parse(":8001"), None);
    }
}
