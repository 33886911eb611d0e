//! The optional host firewall (`[attributes.firewall]`), on every host of the stack: the ports
//! of the host's layers open to the stack's hosts, SSH to `firewall.ssh_from`, HTTP and HTTPS
//! of `lb` hosts to anyone. The ruleset itself is provision-core's.
//!
//! Every service port is open to every host of the stack (its SSH and private addresses) and
//! `firewall.trusted`, not only to the hosts of the layers that use it: the services keep
//! their own lists of clients (pg_hba.conf, Solr's allow-list, the NFS exports), and a
//! narrower firewall would have to follow every way a layer is reached (HAProxy's checks,
//! ZEO from the instances and a packing host, Varnish purges from the clients).

use anyhow::Context as _;
use provision_core::firewall::{self, FirewallSettings, Networks, Opening, Ports};
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::stack::{Layer, NfsServer};
use provision_core::template::Templates;

use super::HostContext;
use super::blobs::{self, StoreKind};

/// nfsd, and (kernel server) rpcbind and statd at their fixed ports.
const NFS_PORT: u16 = 2049;
const RPCBIND_PORT: u16 = 111;
/// glusterd (24007) and its management port (24008), and the brick ports: GlusterFS's
/// `base-port` to `max-port`.
const GLUSTERD_PORTS: (u16, u16) = (24007, 24008);
const GLUSTER_BRICK_PORTS: (u16, u16) = (49152, 60999);

pub fn resources(
    context: &HostContext<'_>,
    phase: Phase,
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    let settings = if context.stack.attributes().firewall.enable {
        Some(settings(context)?)
    } else {
        None
    };
    firewall::resources(settings.as_ref(), phase, templates)
        .with_context(|| format!("host {}: the firewall", context.host.name))
}

/// The firewall of one host.
pub fn settings(context: &HostContext<'_>) -> anyhow::Result<FirewallSettings> {
    let (stack, host) = (context.stack, context.host);
    let attributes = stack.attributes();
    let firewall = &attributes.firewall;
    let in_host = |what: String| format!("host {}: the firewall: {what}", host.name);

    let mut members = Networks::default();
    for member in stack.hosts() {
        let service = member.service_address();
        members.add(service).map_err(|_| {
            anyhow::anyhow!(in_host(format!(
                "it lets the stack's hosts in by address, but host {} has `{service}`, which is \
                 not an IP address; set `private_address` of [hosts.{}] to its private IP",
                member.name, member.name
            )))
        })?;
        // An SSH address that is a name is not needed: the private address is the one used.
        let _ = members.add(&member.address);
    }
    for trusted in &firewall.trusted {
        members.add(trusted).map_err(|why| {
            anyhow::anyhow!(in_host(format!("firewall.trusted `{trusted}` {why}")))
        })?;
    }
    let mut ssh_from = Networks::default();
    for from in &firewall.ssh_from {
        ssh_from
            .add(from)
            .map_err(|why| anyhow::anyhow!(in_host(format!("firewall.ssh_from `{from}` {why}"))))?;
    }

    let mut public = Vec::new();
    let mut members_only = Vec::new();
    for layer in &host.layers {
        match layer {
            Layer::Lb => {
                let frontend = provision_nginx::FrontendSettings::default();
                public.push(Opening::tcp(
                    "nginx, HTTP and HTTPS (lb)",
                    [
                        Ports::one(frontend.http_port),
                        Ports::one(frontend.https_port),
                    ],
                ));
                if attributes.varnish_plone.enable {
                    members_only.push(Opening::tcp(
                        "Varnish, for purges from the Plone clients (lb)",
                        [Ports::one(attributes.nginx_plone.proxy_port)],
                    ));
                }
            }
            Layer::PloneInstances => {
                let clients = stack
                    .clients_of(host, Some(context.facts.cpus))
                    .with_context(|| in_host("its Plone clients".to_string()))?;
                members_only.push(Opening::tcp(
                    "the Plone clients, for HAProxy (plone_instances)",
                    ports_of(clients.iter().map(|c| c.port)),
                ));
            }
            Layer::Zeoserver => {
                let zeo = super::database::zeoserver_settings(stack, host)?;
                members_only.push(Opening::tcp("ZEO (zeoserver)", [Ports::one(zeo.port)]));
            }
            Layer::Postgres => members_only.push(Opening::tcp(
                "PostgreSQL (postgres)",
                [Ports::one(super::database::postgres_port(stack))],
            )),
            Layer::CeleryBroker => members_only.push(Opening::tcp(
                "Redis (celery_broker)",
                [Ports::one(attributes.plone_instances.broker.port)],
            )),
            Layer::Solr => members_only.push(Opening::tcp(
                "Solr (solr)",
                [Ports::one(attributes.plone_solr.port)],
            )),
            Layer::Memcached => members_only.push(Opening::tcp(
                "memcached",
                [Ports::one(provision_zeo::memcached::DEFAULT_PORT)],
            )),
            _ => {}
        }
    }
    let blob_layer = attributes.plone_blobs.layer;
    if host.has_layer(blob_layer) {
        members_only.extend(blob_server_openings(context, blob_layer));
    }
    if !firewall.extra_tcp_ports.is_empty() {
        public.push(Opening::tcp(
            "firewall.extra_tcp_ports",
            firewall.extra_tcp_ports.iter().copied().map(Ports::one),
        ));
    }
    Ok(FirewallSettings {
        host: host.name.clone(),
        ssh_ports: vec![22, host.port],
        ssh_from,
        members,
        public,
        members_only,
    })
}

/// The NFS or GlusterFS server of the blobs, on a host of `plone_blobs.layer`.
fn blob_server_openings(context: &HostContext<'_>, layer: Layer) -> Vec<Opening> {
    match blobs::store(context.stack).kind {
        StoreKind::Nfs => match context.stack.attributes().plone_blobs.nfs_server {
            // NFSv4 over TCP only.
            NfsServer::Ganesha => vec![Opening::tcp(
                format!("NFS, nfs-ganesha ({layer})"),
                [Ports::one(NFS_PORT)],
            )],
            NfsServer::Kernel => {
                let statd = Ports::range(
                    provision_blobs::nfs::STATD_PORT,
                    provision_blobs::nfs::STATD_OUTGOING_PORT,
                );
                let ports = [Ports::one(RPCBIND_PORT), Ports::one(NFS_PORT), statd];
                vec![
                    Opening::tcp(format!("NFS: nfsd, rpcbind, statd ({layer})"), ports),
                    Opening::udp(format!("NFS: nfsd, rpcbind, statd ({layer})"), ports),
                ]
            }
        },
        StoreKind::Glusterfs => vec![Opening::tcp(
            format!("GlusterFS: glusterd and bricks ({layer})"),
            [
                Ports::range(GLUSTERD_PORTS.0, GLUSTERD_PORTS.1),
                Ports::range(GLUSTER_BRICK_PORTS.0, GLUSTER_BRICK_PORTS.1),
            ],
        )],
        StoreKind::Local | StoreKind::S3 => Vec::new(),
    }
}

/// Ports, consecutive ones as ranges.
fn ports_of(ports: impl IntoIterator<Item = u16>) -> Vec<Ports> {
    let mut sorted: Vec<u16> = ports.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges: Vec<Ports> = Vec::new();
    for port in sorted {
        match ranges.last_mut() {
            Some(last) if u32::from(last.last) + 1 == u32::from(port) => last.last = port,
            _ => ranges.push(Ports::one(port)),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use provision_core::facts::Facts;
    use provision_core::stack::{Secrets, Stack};

    use super::*;
    use crate::session::FactsByHost;

    /// Four hosts: the frontend, two instance hosts (one also packs), and a database host with
    /// ZEO, PostgreSQL, Redis, Solr and memcached.
    const STACK: &str = r#"[stack]
name = "site"
[hosts.lb1]
address = "203.0.113.10"
private_address = "10.0.0.10"
layers = ["lb"]
[hosts.app1]
address = "10.0.0.11"
layers = ["plone_instances", "db_packing"]
[hosts.app2]
address = "10.0.0.12"
layers = ["plone_instances"]
[hosts.db1]
address = "10.0.0.20"
port = 2222
layers = ["zeoserver", "postgres", "celery_broker", "solr", "memcached"]
[apps.site]
repository = "https://example.org/site.git"
[attributes.haproxy]
enable_stats = false
[attributes.plone_solr]
port = 8990
[attributes.firewall]
enable = true
ssh_from = ["198.51.100.0/24", "2001:db8::/32"]
trusted = "10.9.0.0/16"
extra_tcp_ports = [9100]
"#;

    fn stack(text: &str) -> Stack {
        let mut stack = Stack::parse(text, "stack.toml", None).unwrap_or_else(|e| panic!("{e}"));
        let mut secrets = Secrets::new();
        secrets.insert("plone_instances_relstorage_db_password", "pw");
        secrets.insert("redis_config_requirepass", "pw");
        stack.set_secrets(secrets);
        stack
    }

    fn facts(cpus: u32) -> Facts {
        Facts::parse(&format!(
            "os_id=debian\nos_version_id=12\ncpus={cpus}\nmemory_kib=4194304\ninit=systemd\n\
             package_manager=apt-get\n"
        ))
        .unwrap()
    }

    fn settings_of(stack: &Stack, host: &str, cpus: u32) -> FirewallSettings {
        let all = FactsByHost::default();
        let facts = facts(cpus);
        let context = HostContext {
            stack,
            host: stack.host(host).unwrap(),
            facts: &facts,
            all_facts: &all,
            away: &Default::default(),
        };
        settings(&context).unwrap()
    }

    fn ruleset(stack: &Stack, host: &str, cpus: u32) -> String {
        let templates = Templates::new(&super::super::all_templates()).unwrap();
        firewall::ruleset(&settings_of(stack, host, cpus), &templates).unwrap()
    }

    /// The rulesets of a four-host stack, each host with its own layers' ports.
    #[test]
    fn rulesets_of_a_four_host_stack() {
        let stack = stack(STACK);
        let all: String = [("lb1", 2), ("app1", 2), ("app2", 1), ("db1", 4)]
            .iter()
            .map(|(host, cpus)| format!("==> {host}\n{}", ruleset(&stack, host, *cpus)))
            .collect();
        insta::assert_snapshot!("firewall-four-hosts", all);
    }

    #[test]
    fn every_layer_opens_its_ports_to_the_members_only() {
        let stack = stack(STACK);
        let db1 = settings_of(&stack, "db1", 4);
        let opened: Vec<(String, String)> = db1
            .members_only
            .iter()
            .map(|o| {
                let ports: Vec<String> = o.ports.iter().map(ToString::to_string).collect();
                (o.what.clone(), ports.join(","))
            })
            .collect();
        let expected = [
            ("ZEO (zeoserver)", "8001"),
            ("PostgreSQL (postgres)", "5432"),
            ("Redis (celery_broker)", "6379"),
            ("Solr (solr)", "8990"),
            ("memcached", "11211"),
        ];
        assert_eq!(
            opened,
            expected.map(|(w, p)| (w.to_string(), p.to_string()))
        );
        assert_eq!(db1.ssh_ports, [22, 2222]);
        // Both addresses of lb1, the others once, and the trusted network.
        assert_eq!(
            db1.members.v4,
            [
                "10.0.0.10",
                "203.0.113.10",
                "10.0.0.11",
                "10.0.0.12",
                "10.0.0.20",
                "10.9.0.0/16"
            ]
        );
        assert_eq!(db1.ssh_from.v6, ["2001:db8::/32"]);
        // An instance host: its clients (from its CPUs) as one range.
        let app1 = settings_of(&stack, "app1", 2);
        assert_eq!(app1.members_only.len(), 1);
        assert_eq!(app1.members_only[0].ports, [Ports::range(8081, 8084)]);
        // The frontend is public; extra ports on every host.
        let lb1 = settings_of(&stack, "lb1", 2);
        assert!(lb1.members_only.is_empty());
        let public: Vec<&str> = lb1.public.iter().map(|o| o.what.as_str()).collect();
        assert_eq!(
            public,
            ["nginx, HTTP and HTTPS (lb)", "firewall.extra_tcp_ports"]
        );
    }

    #[test]
    fn blob_servers_open_nfs_or_glusterfs() {
        let nfs = stack(&format!(
            "{STACK}[hosts.nfs1]\naddress = \"10.0.0.30\"\nlayers = [\"shared_blobs\"]\n\
             [attributes.plone_instances]\nnfs_blobs = true\n"
        ));
        let server = settings_of(&nfs, "nfs1", 1);
        let ports: Vec<String> = server
            .members_only
            .iter()
            .map(|o| format!("{:?} {}", o.protocol, o.expression()))
            .collect();
        assert_eq!(
            ports,
            [
                "Tcp { 111, 2049, 32765-32766 }",
                "Udp { 111, 2049, 32765-32766 }"
            ]
        );
        let gluster = stack(&format!(
            "{STACK}[hosts.gl1]\naddress = \"10.0.0.31\"\nlayers = [\"shared_blobs\"]\n\
             [attributes.plone_instances]\ngluster_blobs = true\n"
        ));
        let server = settings_of(&gluster, "gl1", 1);
        assert_eq!(
            server.members_only[0].ports,
            [Ports::range(24007, 24008), Ports::range(49152, 60999)]
        );
    }

    #[test]
    fn off_removes_it_on_every_host() {
        let off = stack(&STACK.replace("enable = true", "enable = false"));
        let all = FactsByHost::default();
        let facts = facts(1);
        let templates = Templates::new(&super::super::all_templates()).unwrap();
        for host in off.hosts() {
            let context = HostContext {
                stack: &off,
                host,
                facts: &facts,
                all_facts: &all,
                away: &Default::default(),
            };
            let ids: Vec<String> = resources(&context, Phase::Configure, &templates)
                .unwrap()
                .iter()
                .map(Resource::id)
                .collect();
            assert_eq!(ids, ["script:firewall-removed"]);
        }
    }

    #[test]
    fn consecutive_ports_become_ranges() {
        assert_eq!(
            ports_of([8083, 8081, 8082, 8090, 8081]),
            [Ports::range(8081, 8083), Ports::one(8090)]
        );
        assert!(ports_of([]).is_empty());
    }
}
