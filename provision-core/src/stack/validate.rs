//! Values that parse but cannot work: each problem is a sentence saying what to change.

use std::collections::HashMap;
use std::net::IpAddr;

use super::attributes::Client;
use super::discovery::Endpoint;
use super::error::{Problem, ProblemKind, StackError, nearest};
use super::layer::Layer;
use super::locate::{Located, Part, Seg};
use super::model::{AppKind, HostSpec};
use super::{SECRET_ENV_PREFIX, Stack, app_name_attribute};

/// Every impossible value of the stack, in the order of the stack file's sections.
pub(crate) fn validate(stack: &Stack) -> Vec<Problem> {
    let mut v = Validator {
        stack,
        problems: Vec::new(),
    };
    v.names();
    v.hosts();
    v.addresses();
    v.client_count();
    v.zeo_address();
    v.cache_servers();
    v.layer_requirements();
    v.packing();
    v.backups();
    v.absolute_paths();
    v.solr();
    v.apps();
    v.zeoserver_mode();
    v.site();
    v.firewall();
    v.problems
}

struct Validator<'a> {
    stack: &'a Stack,
    problems: Vec<Problem>,
}

fn at(located: &Located) -> String {
    located
        .location
        .as_ref()
        .map(|l| format!(" at {l}"))
        .unwrap_or_default()
}

impl Validator<'_> {
    fn push(&mut self, message: String, location: Option<super::Location>) {
        self.problems.push(Problem {
            kind: ProblemKind::Impossible { message },
            location,
        });
    }

    fn locate(&self, path: &[&str], part: Part) -> Located {
        let segs: Vec<Seg> = path.iter().map(|s| Seg::key(s)).collect();
        self.stack.sources.locate(&segs, part)
    }

    fn attribute(&self, dotted: &str) -> Located {
        self.stack.sources.attribute(dotted)
    }

    /// "`plone_instances.enable_celery` is true at L" or "... is true (the default)".
    fn is_true(&self, dotted: &str) -> (String, Located) {
        let located = self.attribute(dotted);
        let text = match &located.location {
            Some(l) => format!("`{}` is true at {l}", located.path),
            None => format!("`{}` is true (the default)", located.path),
        };
        (text, located)
    }

    /// Host and app names become HAProxy server names, unit names and paths.
    fn names(&mut self) {
        let stack = self.stack;
        let hosts = stack
            .hosts
            .iter()
            .map(|h| ("hosts", "host", h.name.as_str()));
        let apps = stack.apps.iter().map(|a| ("apps", "app", a.name.as_str()));
        for (table, what, name) in hosts.chain(apps) {
            let mut chars = name.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                let located = self.locate(&[table, name], Part::Key);
                self.push(
                    format!(
                        "the {what} name `{name}`{} may hold only letters, digits, `-`, `_` and \
                         `.`, and must start with a letter or a digit: rename it",
                        at(&located)
                    ),
                    located.location,
                );
            }
        }
    }

    fn hosts(&mut self) {
        if self.stack.hosts.is_empty() {
            self.push(
                "the stack has no hosts: add a `[hosts.NAME]` table with an `address` and `layers`"
                    .to_string(),
                None,
            );
        }
        let mut seen: HashMap<(String, u16), String> = HashMap::new();
        for host in &self.stack.hosts {
            if host.port == 0 {
                let mut port = self.locate(&["hosts", &host.name, "port"], Part::Value);
                if port.location.is_none() {
                    port = self.locate(&["stack", "ssh", "port"], Part::Value);
                }
                self.push(
                    format!(
                        "the SSH port of host `{}` is 0{}: set it to the port its sshd listens \
                         on, such as 22",
                        host.name,
                        at(&port)
                    ),
                    port.location,
                );
            }
            let key = (host.address.clone(), host.port);
            if let Some(first) = seen.get(&key) {
                let first_at = self.locate(&["hosts", first], Part::Value);
                let this_at = self.locate(&["hosts", &host.name], Part::Value);
                self.push(
                    format!(
                        "hosts `{first}`{} and `{}`{} have the same address and SSH port \
                         ({}:{}): give each host its own address or port, or make them one host \
                         with the layers of both",
                        at(&first_at),
                        host.name,
                        at(&this_at),
                        host.address,
                        host.port
                    ),
                    this_at.location,
                );
            } else {
                seen.insert(key, host.name.clone());
            }
        }
    }

    /// An address is what SSH connects to and what other hosts reach: a host name or an IP
    /// address, without a scheme, user or port (those have keys of their own).
    fn addresses(&mut self) {
        let stack = self.stack;
        let has_postgres = stack.hosts.iter().any(|h| h.has_layer(Layer::Postgres));
        for host in &stack.hosts {
            let written = [
                ("address", Some(host.address.as_str())),
                ("private_address", host.private_address.as_deref()),
            ];
            let mut usable = true;
            for (key, address) in written {
                let Some(address) = address else { continue };
                if let Some(advice) = address_problem(address) {
                    usable = false;
                    let located = self.locate(&["hosts", &host.name, key], Part::Value);
                    self.push(
                        format!(
                            "`{}` is `{address}`{}, {advice}",
                            located.path,
                            at(&located)
                        ),
                        located.location,
                    );
                }
            }
            let address = host.service_address();
            if !usable || address.parse::<IpAddr>().is_ok() {
                continue;
            }
            // Services bind to the private address, and PostgreSQL lets clients in by address.
            let binds = host
                .layers
                .iter()
                .find(|l| BINDING_LAYERS.contains(l))
                .map(|l| (*l, "its services bind to it"));
            let database_client = [Layer::PloneInstances, Layer::DbPacking]
                .into_iter()
                .find(|l| has_postgres && host.has_layer(*l))
                .map(|l| (l, "PostgreSQL lets its clients in by address"));
            if binds.or(database_client).is_none() && stack.attributes.firewall.enable {
                let host_at = self.locate(&["hosts", &host.name], Part::Value);
                let (is_true, _) = self.is_true("firewall.enable");
                self.push(
                    format!(
                        "{is_true}, and the firewall lets the stack's hosts in by address, but \
                         host `{}`{} has `{address}`, which is not an IP address: set \
                         `private_address` of `[hosts.{}]` to the host's private IP",
                        host.name,
                        at(&host_at),
                        host.name
                    ),
                    host_at.location,
                );
            }
            if let Some((layer, why)) = binds.or(database_client) {
                let host_at = self.locate(&["hosts", &host.name], Part::Value);
                self.push(
                    format!(
                        "host `{}`{} has the `{layer}` layer, which needs its private address to \
                         be an IP address ({why}), but `{address}` is not one: set \
                         `private_address` of `[hosts.{}]` to the host's private IP",
                        host.name,
                        at(&host_at),
                        host.name
                    ),
                    host_at.location,
                );
            }
        }
    }

    fn client_count(&mut self) {
        let instances = &self.stack.attributes.plone_instances;
        if !(instances.per_cpu.is_finite() && instances.per_cpu > 0.0) {
            let located = self.attribute("plone_instances.per_cpu");
            self.push(
                format!(
                    "`{}` is {}{}, but it must be more than 0: set the number of Plone clients \
                     per CPU (such as 2), or set `plone_instances.instance_count`",
                    located.path,
                    instances.per_cpu,
                    at(&located)
                ),
                located.location,
            );
        }
        if instances.per_cpu.is_finite() && instances.per_cpu > f64::from(Client::MAX_PER_HOST) {
            let located = self.attribute("plone_instances.per_cpu");
            self.push(
                format!(
                    "`{}` is {}{}, so even a host with one CPU would run more than {} Plone \
                     clients, the most one host runs: set it to the clients per CPU (such as 2)",
                    located.path,
                    instances.per_cpu,
                    at(&located),
                    Client::MAX_PER_HOST
                ),
                located.location,
            );
        }
        if let Some(count) = instances
            .instance_count
            .filter(|n| *n > Client::MAX_PER_HOST)
        {
            let located = self.attribute("plone_instances.instance_count");
            self.push(
                format!(
                    "`{}` is {count}{}, but one host runs at most {max} Plone clients (on ports \
                     {first} to {last}): set it to {max} or fewer, and add hosts for more",
                    located.path,
                    at(&located),
                    max = Client::MAX_PER_HOST,
                    first = Client::new(1).port,
                    last = Client::new(Client::MAX_PER_HOST).port,
                ),
                located.location,
            );
        }
        if instances.instance_count == Some(0) {
            let located = self.attribute("plone_instances.instance_count");
            self.push(
                format!(
                    "`{}` is 0{}, but every `plone_instances` host needs at least one client: \
                     set it to 1 or more, or remove it to count clients with \
                     `plone_instances.per_cpu`",
                    located.path,
                    at(&located)
                ),
                located.location,
            );
        }
    }

    fn cache_servers(&mut self) {
        let servers = &self
            .stack
            .attributes
            .plone_instances
            .relstorage
            .cache_servers;
        for server in servers.iter().flatten() {
            if Endpoint::parse(server, Endpoint::MEMCACHED_PORT).is_none() {
                let located = self.attribute("plone_instances.relstorage.cache_servers");
                self.push(
                    format!(
                        "`{}` holds `{server}`{}, which is not `host` or `host:port`: write it \
                         like `mc1.example.com:11211`",
                        located.path,
                        at(&located)
                    ),
                    located.location,
                );
            }
        }
    }

    fn zeo_address(&mut self) {
        if let Some(address) = &self.stack.attributes.plone_instances.zeo.address
            && Endpoint::parse(address, Endpoint::ZEO_PORT).is_none()
        {
            let located = self.attribute("plone_instances.zeo.address");
            self.push(
                format!(
                    "`{}` is `{address}`{}, which is not `host` or `host:port`: write it like \
                     `zeo1.example.com:8001`",
                    located.path,
                    at(&located)
                ),
                located.location,
            );
        }
    }

    /// A layer that another layer needs, when no host has it and no attribute replaces it.
    fn layer_requirements(&mut self) {
        let stack = self.stack;
        let a = &stack.attributes;
        let pi = &a.plone_instances;
        let has = |layer: Layer| stack.hosts.iter().any(|h| h.has_layer(layer));
        let first_instance = stack
            .hosts
            .iter()
            .find(|h| h.has_layer(Layer::PloneInstances));

        if let Some(host) = first_instance {
            if !pi.enable_relstorage && pi.zeo.address.is_none() && !has(pi.zeo_layer) {
                let host_at = self.locate(&["hosts", &host.name], Part::Value);
                self.push(
                    format!(
                        "host `{}`{} has the `plone_instances` layer, which needs a ZEO server, \
                         but no host has the `{}` layer: add `{}` to the layers of a host, set \
                         `plone_instances.zeo.address`, or set \
                         `plone_instances.enable_relstorage = true`",
                        host.name,
                        at(&host_at),
                        pi.zeo_layer,
                        pi.zeo_layer
                    ),
                    host_at.location,
                );
            }
            let db = &pi.relstorage.db;
            let app_database = stack
                .app_for(Layer::PloneInstances)
                .and_then(|app| a.deploy.get(&app.name))
                .and_then(|d| d.database.as_ref())
                .is_some_and(|d| d.host.is_some());
            if pi.enable_relstorage
                && db.dsn.is_none()
                && db.host.is_none()
                && !app_database
                && !has(Layer::Postgres)
            {
                let (is_true, located) = self.is_true("plone_instances.enable_relstorage");
                self.push(
                    format!(
                        "{is_true}, but there is no database for RelStorage: no host has the \
                         `postgres` layer and neither `plone_instances.relstorage.db.dsn` nor \
                         `plone_instances.relstorage.db.host` is set; add `postgres` to the \
                         layers of a host, or set one of them"
                    ),
                    located.location,
                );
            }
            if pi.enable_relstorage
                && pi.relstorage.enable_cache
                && pi.relstorage.cache_servers.is_none()
                && !has(Layer::Memcached)
            {
                let (is_true, located) = self.is_true("plone_instances.relstorage.enable_cache");
                self.push(
                    format!(
                        "{is_true}, but there is no memcached server: no host has the \
                         `memcached` layer and `plone_instances.relstorage.cache_servers` is \
                         not set; add `memcached` to the layers of a host, set \
                         `plone_instances.relstorage.cache_servers`, or set \
                         `plone_instances.relstorage.enable_cache = false`"
                    ),
                    located.location,
                );
            }
            if pi.enable_celery && pi.broker.host.is_none() && !has(pi.broker_layer) {
                let (is_true, located) = self.is_true("plone_instances.enable_celery");
                self.push(
                    format!(
                        "{is_true}, but there is no Celery broker: no host has the `{layer}` \
                         layer and `plone_instances.broker.host` is not set; add `{layer}` to \
                         the layers of a host, or set `plone_instances.broker.host`",
                        layer = pi.broker_layer
                    ),
                    located.location,
                );
            }
            if pi.solr_enabled && pi.solr_host.is_none() && !has(pi.solr_layer) {
                let (is_true, located) = self.is_true("plone_instances.solr_enabled");
                self.push(
                    format!(
                        "{is_true}, but there is no Solr server: no host has the `{layer}` \
                         layer and `plone_instances.solr_host` is not set; add `{layer}` to \
                         the layers of a host, or set `plone_instances.solr_host`",
                        layer = pi.solr_layer
                    ),
                    located.location,
                );
            }
            self.blob_mounts("plone_instances", pi.nfs_blobs, pi.gluster_blobs);
        }
        if stack.hosts.iter().any(|h| h.has_layer(pi.zeo_layer)) {
            let zs = &a.plone_zeoserver;
            self.blob_mounts("plone_zeoserver", zs.nfs_blobs, zs.gluster_blobs);
        }
    }

    fn blob_mounts(&mut self, section: &str, nfs: bool, gluster: bool) {
        let blobs = &self.stack.attributes.plone_blobs;
        let has_server = self.stack.hosts.iter().any(|h| h.has_layer(blobs.layer));
        if nfs && gluster {
            let nfs_at = self.attribute(&format!("{section}.nfs_blobs"));
            let gluster_at = self.attribute(&format!("{section}.gluster_blobs"));
            self.push(
                format!(
                    "`{}`{} and `{}`{} are both true, but the blobs can come from only one of \
                     NFS and GlusterFS: set one of them to false",
                    nfs_at.path,
                    at(&nfs_at),
                    gluster_at.path,
                    at(&gluster_at)
                ),
                nfs_at.location,
            );
            return;
        }
        if nfs && blobs.host.is_none() && !has_server {
            let (is_true, located) = self.is_true(&format!("{section}.nfs_blobs"));
            self.push(
                format!(
                    "{is_true}, but there is no blob server: no host has the `{layer}` layer \
                     and `plone_blobs.host` is not set; add `{layer}` to the layers of a host, \
                     or set `plone_blobs.host`",
                    layer = blobs.layer
                ),
                located.location,
            );
        }
        if gluster && blobs.host.is_none() && blobs.servers.is_none() && !has_server {
            let (is_true, located) = self.is_true(&format!("{section}.gluster_blobs"));
            self.push(
                format!(
                    "{is_true}, but there is no GlusterFS server: no host has the `{layer}` \
                     layer and neither `plone_blobs.host` nor `plone_blobs.servers` is set; add \
                     `{layer}` to the layers of a host, or set `plone_blobs.servers`",
                    layer = blobs.layer
                ),
                located.location,
            );
        }
    }

    fn packing(&mut self) {
        let packers = self.stack.hosts_with(Layer::DbPacking);
        if packers.len() > 1 {
            let listed: Vec<String> = packers
                .iter()
                .map(|h| {
                    let located = self.locate(&["hosts", &h.name], Part::Value);
                    format!("`{}`{}", h.name, at(&located))
                })
                .collect();
            let location = self
                .locate(&["hosts", &packers[1].name], Part::Value)
                .location;
            self.push(
                format!(
                    "{} hosts have the `db_packing` layer ({}), but the database must be packed \
                     from exactly one: remove `db_packing` from all but one of them",
                    packers.len(),
                    listed.join(", ")
                ),
                location,
            );
        }
    }

    /// S3 copies are made of the backups, so there must be backups.
    fn backups(&mut self) {
        let zs = &self.stack.attributes.plone_zeoserver;
        let has_zeo = self
            .stack
            .hosts
            .iter()
            .any(|h| h.has_layer(Layer::Zeoserver));
        // The postgres host copies its dumps to the same bucket.
        let pi = &self.stack.attributes.plone_instances;
        let dumps = pi.enable_relstorage
            && pi.relstorage.enable_backup
            && self
                .stack
                .hosts
                .iter()
                .any(|h| h.has_layer(Layer::Postgres));
        if pi.relstorage.backup_keep == 0 {
            let keep = self.attribute("plone_instances.relstorage.backup_keep");
            self.push(
                format!("`{}` is 0{}: keep at least 1 dump", keep.path, at(&keep)),
                keep.location,
            );
        }
        if has_zeo && zs.backup_s3.bucket.is_some() && !zs.enable_backup && !dumps {
            let bucket = self.attribute("plone_zeoserver.backup_s3.bucket");
            let backup = self.attribute("plone_zeoserver.enable_backup");
            let backup_is = match &backup.location {
                Some(l) => format!("false at {l}"),
                None => "false (the default)".to_string(),
            };
            self.push(
                format!(
                    "`{}` is set{}, but `{}` is {backup_is}: there would be no backups to copy; \
                     set `plone_zeoserver.enable_backup = true`, or remove the bucket",
                    bucket.path,
                    at(&bucket),
                    backup.path
                ),
                bucket.location,
            );
        }
    }

    /// Paths on the hosts: a relative one would depend on the directory a command runs in.
    fn absolute_paths(&mut self) {
        let a = &self.stack.attributes;
        let key = |dotted: &str| {
            let mut path = vec![Seg::key("attributes")];
            path.extend(dotted.split('.').map(Seg::key));
            path
        };
        let mut paths: Vec<(Vec<Seg>, &str, &str)> = [
            (
                "plone_zeoserver.filestorage_dir",
                a.plone_zeoserver.filestorage_dir.as_deref(),
                "/var/lib/zeo/filestorage",
            ),
            (
                "plone_blobs.blob_dir",
                a.plone_blobs.blob_dir.as_deref(),
                "/srv/blobs",
            ),
            (
                "plone_blobs.nfs_export_dir",
                Some(a.plone_blobs.nfs_export_dir.as_str()),
                "/srv/exports",
            ),
            (
                "plone_blobs.gluster_export_dir",
                Some(a.plone_blobs.gluster_export_dir.as_str()),
                "/srv/gluster-exports",
            ),
            (
                "plone_solr.data_dir",
                a.plone_solr.data_dir.as_deref(),
                "/var/lib/solr",
            ),
            (
                "haproxy.stats_socket_path",
                Some(a.haproxy.stats_socket_path.as_str()),
                "/run/haproxy/admin.sock",
            ),
        ]
        .into_iter()
        .filter_map(|(dotted, value, example)| Some((key(dotted), value?, example)))
        .collect();
        for (i, mount) in a.s3fs_fuse.mounts.iter().enumerate() {
            let mut path = key("s3fs_fuse.mounts");
            path.push(Seg::Index(i));
            let mut tmp_store = path.clone();
            path.push(Seg::key("path"));
            paths.push((path, &mount.path, "/mnt/s3/blobs"));
            if let Some(store) = &mount.tmp_store {
                tmp_store.push(Seg::key("tmp_store"));
                paths.push((tmp_store, store, "/var/cache/s3fs"));
            }
        }
        for (path, value, example) in paths {
            if std::path::Path::new(value).is_absolute() {
                continue;
            }
            let located = self.stack.sources.locate(&path, Part::Value);
            self.push(
                format!(
                    "`{}` is `{value}`{}, but it must be an absolute path, such as `{example}`",
                    located.path,
                    at(&located)
                ),
                located.location,
            );
        }
    }

    /// `create_site` makes a Plone site at `site_id`: it needs an id Zope accepts.
    fn site(&mut self) {
        let pi = &self.stack.attributes.plone_instances;
        if !pi.create_site {
            return;
        }
        let (create, _) = self.is_true("plone_instances.create_site");
        let id = &pi.site_id;
        if !super::attributes::is_site_id(id) {
            let site = self.attribute("plone_instances.site_id");
            self.push(
                format!(
                    "{create}, but `{}` is {id:?}{}: a Plone site needs an id of letters, digits, \
                     `-`, `_` and `.` (such as \"Plone\"); set `site_id`, or turn `create_site` off",
                    site.path,
                    at(&site),
                ),
                site.location,
            );
        }
    }

    /// `firewall`: addresses and networks nftables accepts, and SSH left open to someone.
    fn firewall(&mut self) {
        let firewall = &self.stack.attributes.firewall;
        for (key, list) in [
            ("firewall.ssh_from", &firewall.ssh_from),
            ("firewall.trusted", &firewall.trusted),
        ] {
            for text in list {
                if let Err(why) = crate::firewall::parse_network(text) {
                    let located = self.attribute(key);
                    self.push(
                        format!("`{}` holds `{text}`{}, {why}", located.path, at(&located)),
                        located.location,
                    );
                }
            }
        }
        if firewall.enable && firewall.ssh_from.is_empty() {
            let located = self.attribute("firewall.ssh_from");
            let (is_true, _) = self.is_true("firewall.enable");
            self.push(
                format!(
                    "{is_true}, but `{}` is empty{}: only the stack's own hosts could log in \
                     over SSH, not provision from here; list the addresses or networks you \
                     connect from, or remove it (the default is anywhere)",
                    located.path,
                    at(&located)
                ),
                located.location,
            );
        }
        if firewall.extra_tcp_ports.contains(&0) {
            let located = self.attribute("firewall.extra_tcp_ports");
            self.push(
                format!(
                    "`{}` holds 0{}, which is not a port: list ports from 1 to 65535",
                    located.path,
                    at(&located)
                ),
                located.location,
            );
        }
    }

    /// `plone_solr`: what the Solr host downloads, where it listens, its cores and heap.
    fn solr(&mut self) {
        let solr = &self.stack.attributes.plone_solr;
        // (attribute, what it is, what is wrong and what to do)
        let mut problems: Vec<(&str, String, String)> = Vec::new();
        let plain = |text: &str, more: &[u8]| {
            !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || more.contains(&b))
        };
        if !plain(&solr.version, b"._-") {
            problems.push((
                "plone_solr.version",
                format!("is `{}`", solr.version),
                format!(
                    "but it must be a release number of letters, digits, `.`, `_` and `-`, \
                     such as `{}`",
                    super::PloneSolr::DEFAULT_VERSION
                ),
            ));
        }
        if let Some(url) = &solr.url {
            let url_ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"'\"\\`$<>".contains(&b));
            if !url_ok {
                problems.push((
                    "plone_solr.url",
                    format!("is `{url}`"),
                    "but it must be an http:// or https:// URL without quotes, spaces or `$`"
                        .to_string(),
                ));
            }
        }
        match &solr.sha512 {
            Some(sha512)
                if sha512.len() != 128 || !sha512.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                problems.push((
                    "plone_solr.sha512",
                    format!("is `{sha512}`"),
                    "but it must be the 128 hex digits of the archive's SHA-512 (as in its \
                     `.sha512` file)"
                        .to_string(),
                ));
            }
            // A bad version or URL is reported first: fixing it may be all that is needed.
            None if solr.archive_sha512().is_none() && problems.is_empty() => {
                let changed = if solr.url.is_some() {
                    "plone_solr.url"
                } else {
                    "plone_solr.version"
                };
                problems.push((
                    changed,
                    "is set".to_string(),
                    "but `plone_solr.sha512` is not: the archive is unpacked only when its \
                     SHA-512 matches; set `plone_solr.sha512` to the 128 hex digits of its \
                     `.sha512` file"
                        .to_string(),
                ));
            }
            _ => {}
        }
        if solr.port == 0 {
            problems.push((
                "plone_solr.port",
                "is 0".to_string(),
                format!(
                    "but it must be the port Solr listens on, such as {}",
                    super::PloneSolr::DEFAULT_PORT
                ),
            ));
        }
        if solr.cores.is_empty() {
            problems.push((
                "plone_solr.cores",
                "is empty".to_string(),
                "but Solr needs a core for collective.solr: name one, such as `[\"plone\"]`"
                    .to_string(),
            ));
        }
        for (index, core) in solr.cores.iter().enumerate() {
            let (value, advice) = if core.len() > 64 || !plain(core, b"_-") {
                (
                    format!("holds `{core}`"),
                    "which is not 1 to 64 letters, digits, `_` or `-` (a core's name goes into \
                     URLs and directory names): rename it",
                )
            } else if core.ends_with(super::PloneSolr::REBUILD_SUFFIX) {
                (
                    format!("holds `{core}`"),
                    "which ends with `_rebuild`, the name of the core a reindex builds beside \
                     another: rename it",
                )
            } else if solr.cores[..index].contains(core) {
                (
                    format!("holds `{core}` twice"),
                    "but each core is one directory and one URL: remove one",
                )
            } else {
                continue;
            };
            problems.push(("plone_solr.cores", value, advice.to_string()));
        }
        if let Some(heap) = solr
            .heap_mb
            .filter(|mb| *mb < super::PloneSolr::MIN_HEAP_MB)
        {
            problems.push((
                "plone_solr.heap_mb",
                format!("is {heap}"),
                format!(
                    "but Solr needs at least {} MiB: raise it, or remove it to size the heap \
                     from the host's memory",
                    super::PloneSolr::MIN_HEAP_MB
                ),
            ));
        }
        for (dotted, value, advice) in problems {
            let located = self.attribute(dotted);
            self.push(
                format!("`{}` {value}{}, {advice}", located.path, at(&located)),
                located.location,
            );
        }
    }

    /// `plone_zeoserver.mode = "buildout"` builds the `zeoserver` part of a buildout app, into
    /// a `deploy_to` of its own.
    fn zeoserver_mode(&mut self) {
        let stack = self.stack;
        let zeo_hosts: Vec<&HostSpec> = stack
            .hosts
            .iter()
            .filter(|h| h.has_layer(Layer::Zeoserver))
            .collect();
        if stack.attributes.plone_zeoserver.mode != super::ZeoMode::Buildout || zeo_hosts.is_empty()
        {
            return;
        }
        let mode = self.attribute("plone_zeoserver.mode");
        let mode_is = format!("`{}` is \"buildout\"{}", mode.path, at(&mode));
        let Some(app) = stack.app_for(Layer::Zeoserver) else {
            // Several apps and none of that name: `apps` says so already.
            if stack.apps.is_empty() {
                self.push(
                    format!(
                        "{mode_is}, but the stack has no app to build the `zeoserver` part of: \
                         add an `[apps.NAME]` table with the buildout repository, or set \
                         `mode = \"venv\"`"
                    ),
                    mode.location,
                );
            }
            return;
        };
        if app.kind != AppKind::Buildout {
            self.push(
                format!(
                    "{mode_is}, but the ZEO server's app `{}` is of kind `pip`: buildout mode \
                     builds the `zeoserver` part of a buildout app; set `kind = \"buildout\"` on \
                     a buildout repository (and `plone_zeoserver.app_name` to it), or set \
                     `mode = \"venv\"`",
                    app.name
                ),
                mode.location,
            );
            return;
        }
        let same_app = stack
            .app_for(Layer::PloneInstances)
            .is_some_and(|a| a.name == app.name);
        for host in zeo_hosts {
            if same_app && host.has_layer(Layer::PloneInstances) {
                self.push(
                    format!(
                        "{mode_is}, and host `{}` has both the `zeoserver` and the \
                         `plone_instances` layer with the same app `{}`: their releases would \
                         share `{}`; give the ZEO server an app of its own (an \
                         `[apps.zeoserver]` table with the same repository and another \
                         `deploy_to`), or set `mode = \"venv\"`",
                        host.name,
                        app.name,
                        app.deploy_to.display()
                    ),
                    mode.location.clone(),
                );
            }
        }
    }

    fn apps(&mut self) {
        let stack = self.stack;
        for app in &stack.apps {
            if !app.deploy_to.is_absolute() {
                let mut located = self.locate(
                    &["attributes", "deploy", &app.name, "deploy_to"],
                    Part::Value,
                );
                if located.location.is_none() {
                    located = self.locate(&["apps", &app.name, "deploy_to"], Part::Value);
                }
                self.push(
                    format!(
                        "`{}` is `{}`{}, but it must be an absolute path, such as `/srv/www/{}`",
                        located.path,
                        app.deploy_to.display(),
                        at(&located),
                        app.name
                    ),
                    located.location,
                );
            }
        }
        let names: Vec<&str> = stack.apps.iter().map(|a| a.name.as_str()).collect();
        let listed = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        for name in stack.attributes.deploy.keys() {
            if names.contains(&name.as_str()) {
                continue;
            }
            let located = self.locate(&["attributes", "deploy", name], Part::Key);
            let advice = match nearest(name, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None if names.is_empty() => format!("add an `[apps.{name}]` table"),
                None => format!("the apps are {listed}"),
            };
            self.push(
                format!(
                    "`{}`{} names no app of the stack; {advice}",
                    located.path,
                    at(&located)
                ),
                located.location,
            );
        }
        if stack.apps.len() > 1 {
            for layer in [Layer::PloneInstances, Layer::Zeoserver, Layer::Solr] {
                let Some((attribute, value)) = app_name_attribute(&stack.attributes, layer) else {
                    continue;
                };
                if stack.hosts.iter().any(|h| h.has_layer(layer)) && stack.app(value).is_none() {
                    let located = self.attribute(attribute);
                    self.push(
                        format!(
                            "the `{layer}` layer deploys the app named by `{}`, `{value}`{}, \
                             but the stack has no such app: set `{attribute}` to one of {listed}",
                            located.path,
                            at(&located)
                        ),
                        located.location,
                    );
                }
            }
        }
    }
}

/// The layers whose services bind to the host's private address ([`HostSpec::service_address`]).
const BINDING_LAYERS: [Layer; 5] = [
    Layer::Zeoserver,
    Layer::Postgres,
    Layer::Memcached,
    Layer::CeleryBroker,
    Layer::Solr,
];

/// What is wrong with a host address, as the end of a sentence; `None` for a host name or an
/// IP address.
fn address_problem(address: &str) -> Option<String> {
    if address.parse::<IpAddr>().is_ok() || is_host_name(address) {
        return None;
    }
    let only = "write only the host name or IP address";
    Some(if address.trim().is_empty() {
        "but it must be the host name or IP address SSH connects to".to_string()
    } else if address.contains("://") {
        format!("which is a URL: {only}, such as `10.0.0.11`")
    } else if let Some((user, _)) = address.split_once('@') {
        format!("which holds a user: {only}, and the user as `user = \"{user}\"`")
    } else if let Some(port) = port_suffix(address) {
        format!("which holds a port: {only}, and the port as `port = {port}`")
    } else if address.trim() != address {
        "which has spaces around it: remove them".to_string()
    } else {
        "which is not a host name or an IP address: write it like `app1.example.com` or \
         `10.0.0.11`"
            .to_string()
    })
}

/// A DNS host name: dot-separated labels of letters, digits, `-` and `_`, not all numeric
/// (`10.0.0.256` is a broken IP address, not a name).
fn is_host_name(name: &str) -> bool {
    let labels: Vec<&str> = name.strip_suffix('.').unwrap_or(name).split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253
        && labels.iter().all(label_ok)
        && !labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit()))
}

/// The port of `host:port` or `[v6]:port`, when the rest is a valid address.
fn port_suffix(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let valid_host = host.parse::<IpAddr>().is_ok() || is_host_name(host);
    (valid_host && !port.is_empty() && port.chars().all(|c| c.is_ascii_digit())).then_some(port)
}

impl Stack {
    /// The secrets that the layers of `hosts` need and that neither the secrets file, nor the
    /// environment, nor the stack itself holds: one problem per host and secret, each saying
    /// where to put it. For a loaded stack ([`Stack::load`]), before any host is touched, so
    /// that a missing password is bad input rather than a host that fails half-way.
    pub fn check_secrets<'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a HostSpec>,
    ) -> Result<(), StackError> {
        let a = &self.attributes;
        let app = self.app_for(Layer::PloneInstances);
        let deploy = app.map(|app| (app.name.as_str(), self.deploy_settings(&app.name)));
        let missing =
            |secret: Option<&super::SecretString>| secret.is_none_or(|s| s.expose().is_empty());
        let mut problems = Vec::new();
        for host in hosts {
            // (layer, secret, what it is, another way out)
            let mut needed: Vec<(Layer, String, &str, String)> = Vec::new();
            if host.has_layer(Layer::Lb) {
                if a.haproxy.enable_stats && missing(a.haproxy.stats_password.as_ref()) {
                    needed.push((
                        Layer::Lb,
                        "haproxy_stats_password".to_string(),
                        "the password of HAProxy's statistics page",
                        ", or turn the page off with `haproxy.enable_stats = false`".to_string(),
                    ));
                }
                if let Some((app, deploy)) = deploy
                    && deploy.ssl_support
                    && missing(deploy.ssl_certificate_key.as_ref())
                {
                    needed.push((
                        Layer::Lb,
                        format!("deploy_{app}_ssl_certificate_key"),
                        "the private key of the site's TLS certificate",
                        format!(", or set `deploy.{app}.ssl_support = false`"),
                    ));
                }
            }
            if host.has_layer(Layer::Postgres) {
                let app_password = deploy
                    .and_then(|(_, d)| d.database.as_ref())
                    .and_then(|d| d.password.as_ref());
                if missing(a.plone_instances.relstorage.db.password.as_ref())
                    && missing(app_password)
                {
                    needed.push((
                        Layer::Postgres,
                        "plone_instances_relstorage_db_password".to_string(),
                        "the password of the RelStorage database",
                        String::new(),
                    ));
                }
            }
            let copies_dumps = host.has_layer(Layer::Postgres)
                && a.plone_instances.enable_relstorage
                && a.plone_instances.relstorage.enable_backup;
            let copies = (host.has_layer(Layer::Zeoserver) && a.plone_zeoserver.enable_backup)
                || copies_dumps;
            if (host.has_layer(Layer::Zeoserver) || copies_dumps)
                && copies
                && a.plone_zeoserver.backup_s3.bucket.is_some()
            {
                let layer = if host.has_layer(Layer::Zeoserver) {
                    Layer::Zeoserver
                } else {
                    Layer::Postgres
                };
                for name in [
                    "plone_zeoserver_backup_s3_access_key",
                    "plone_zeoserver_backup_s3_secret_key",
                ] {
                    if self.secrets.get(name).is_none_or(str::is_empty) {
                        needed.push((
                            layer,
                            name.to_string(),
                            "a key of the S3 bucket the backups are copied to",
                            ", or remove `plone_zeoserver.backup_s3.bucket`".to_string(),
                        ));
                    }
                }
            }
            if host.has_layer(Layer::CeleryBroker)
                && !matches!(a.redis.config.get("requirepass"), Some(serde_json::Value::String(p)) if !p.is_empty())
            {
                needed.push((
                    Layer::CeleryBroker,
                    "redis_config_requirepass".to_string(),
                    "the password of the Redis broker",
                    String::new(),
                ));
            }
            for (layer, secret, what, otherwise) in needed {
                let host_at = self
                    .sources
                    .locate(&[Seg::key("hosts"), Seg::key(&host.name)], Part::Value);
                let put = match &self.secrets_file {
                    Some(file) if file.exists() => format!(
                        "add `{secret} = \"...\"` to the secrets file {}",
                        file.display()
                    ),
                    Some(file) => format!(
                        "the secrets file {} does not exist: create it (mode 0600) with \
                         `{secret} = \"...\"`",
                        file.display()
                    ),
                    None => format!(
                        "name a secrets file in `[stack] secrets` and put `{secret} = \"...\"` \
                         in it"
                    ),
                };
                problems.push(Problem {
                    kind: ProblemKind::Impossible {
                        message: format!(
                            "host `{}`{} has the `{layer}` layer, which needs the secret \
                             `{secret}` ({what}), but there is none: {put}, or set \
                             {SECRET_ENV_PREFIX}{}{otherwise}",
                            host.name,
                            at(&host_at),
                            secret.to_ascii_uppercase()
                        ),
                    },
                    location: host_at.location,
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StackError::invalid(problems))
        }
    }
}
