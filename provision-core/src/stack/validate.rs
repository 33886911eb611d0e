//! Values that parse but cannot work: each problem is a sentence saying what to change.

use std::collections::HashMap;

use super::discovery::Endpoint;
use super::error::{Problem, ProblemKind, nearest};
use super::layer::Layer;
use super::locate::{Located, Part, Seg};
use super::{Stack, app_name_attribute};

/// Every impossible value of the stack, in the order of the stack file's sections.
pub(crate) fn validate(stack: &Stack) -> Vec<Problem> {
    let mut v = Validator {
        stack,
        problems: Vec::new(),
    };
    v.names();
    v.hosts();
    v.client_count();
    v.zeo_address();
    v.cache_servers();
    v.layer_requirements();
    v.packing();
    v.apps();
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
