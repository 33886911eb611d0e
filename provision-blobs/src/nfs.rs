//! NFS for shared blobs (the cookbook's `nfs_blobs` server and the NFS half of `blob_mounts`).
//!
//! The server of the `shared_blobs` layer exports one directory, holding `blobstorage/` (the
//! Plone user's) and `tmp/` (sticky, mode 01777), to the stack's hosts only; the directory
//! itself lets in root and the Plone user's group:
//!
//! - [`NfsServerKind::Kernel`]: nfs-kernel-server with a file of our own in
//!   `/etc/exports.d` (re-exported on change), and one in `/etc/nfs.conf.d` for statd's
//!   fixed ports (the cookbook's) and nfsd's private address. The cookbook wrote the ports
//!   into `/etc/default/nfs-common`, which systemd hosts ignore since nfs-utils 2.6.1.
//! - [`NfsServerKind::Ganesha`]: nfs-ganesha, the userspace server, NFSv4 only, with one
//!   export whose default access is none and whose client list gets read-write.
//!
//! Clients get an fstab entry that is also mounted ([`client_resources`]). The cookbook's
//! `nobootwait` is left out: it was Upstart's, and mount.nfs refuses unknown options; on
//! systemd, `_netdev` orders the mount after the network.

use std::net::IpAddr;

use provision_core::phase::Phase;
use provision_core::resource::{
    Directory, File, Mount, Packages, Resource, Script, Service, ServiceState,
};
use provision_core::shell::quote;
use provision_core::template::Templates;
use serde::Serialize;

use crate::error::{BlobsError, check_host, check_mount_options, check_path, invalid};

/// The cookbook's `plone_blobs.nfs_export_dir`.
pub const DEFAULT_EXPORT_DIR: &str = "/srv/exports";
/// The cookbook's `plone_blobs.nfs_mount_options`; [`client_resources`] appends `_netdev`.
pub const DEFAULT_MOUNT_OPTIONS: &str = "auto,rw,noatime,nodiratime";
/// Fixed statd ports (the Chef `nfs` cookbook's defaults), so that a firewall can name them.
pub const STATD_PORT: u16 = 32765;
pub const STATD_OUTGOING_PORT: u16 = 32766;

pub const EXPORTS_PATH: &str = "/etc/exports.d/provision-blobs.exports";
pub const NFS_CONF_PATH: &str = "/etc/nfs.conf.d/provision-blobs.conf";
pub const GANESHA_CONF_PATH: &str = "/etc/ganesha/ganesha.conf";

pub(crate) const EXPORTS_TEMPLATE: &str = "blobs/exports.j2";
pub(crate) const NFS_CONF_TEMPLATE: &str = "blobs/nfs.conf.j2";
pub(crate) const GANESHA_TEMPLATE: &str = "blobs/ganesha.conf.j2";

/// Which NFS server runs on the `shared_blobs` host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NfsServerKind {
    /// nfs-kernel-server: what real hosts run.
    Kernel,
    /// nfs-ganesha (userspace, NFSv4): also runs where the kernel has no NFS server.
    Ganesha,
}

/// The NFS server of one `shared_blobs` host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsServerSettings {
    pub kind: NfsServerKind,
    /// Default `/srv/exports`; holds `blobstorage/` (0750, owner:group) and `tmp/` (01777).
    pub export_dir: String,
    /// Addresses, host names or one network (`10.0.0.0/8`) allowed to mount; nothing else may.
    pub clients: Vec<String>,
    /// The private address to listen on (nfsd's `host`, ganesha's `Bind_addr`).
    pub bind: Option<IpAddr>,
    /// Owner and group of `blobstorage/`: the Plone user, which must exist on the server with
    /// the same uid and gid as on the clients (the app layer creates it).
    pub owner: String,
    pub group: String,
}

impl NfsServerSettings {
    /// nfs-kernel-server exporting `export_dir` to `clients`, `blobstorage/` owned by plone.
    pub fn new(export_dir: &str, clients: Vec<String>) -> Self {
        NfsServerSettings {
            kind: NfsServerKind::Kernel,
            export_dir: export_dir.to_string(),
            clients,
            bind: None,
            owner: "plone".to_string(),
            group: "plone".to_string(),
        }
    }

    /// Refuse settings that cannot work, naming the setting.
    pub fn check(&self) -> Result<(), BlobsError> {
        check_path("plone_blobs.nfs_export_dir", &self.export_dir)?;
        if self.clients.is_empty() {
            return Err(invalid(
                "plone_blobs.network",
                "no client may mount the export: name the stack's hosts or their network",
            ));
        }
        for (i, client) in self.clients.iter().enumerate() {
            check_client(client)?;
            if self.clients[..i].contains(client) {
                return Err(invalid(
                    "plone_blobs.network",
                    format!("{client} is listed twice"),
                ));
            }
        }
        if let Some(bind) = self.bind
            && bind.is_unspecified()
        {
            return Err(invalid(
                "bind",
                format!("{bind} would listen on every network: name the private address"),
            ));
        }
        for (setting, name) in [("owner", &self.owner), ("group", &self.group)] {
            if !provision_core::resource::is_valid_account_name(name) {
                return Err(invalid(
                    setting,
                    format!("{name:?} is not a user or group name"),
                ));
            }
        }
        Ok(())
    }

    fn blobstorage(&self) -> String {
        format!("{}/blobstorage", self.export_dir)
    }
}

/// One client entry: an address, a host name, or a network in CIDR notation; never everyone.
fn check_client(client: &str) -> Result<(), BlobsError> {
    const SETTING: &str = "plone_blobs.network";
    if let Some((address, prefix)) = client.split_once('/') {
        let address: IpAddr = address.parse().map_err(|_| {
            invalid(
                SETTING,
                format!("{client:?}: a network is an address and a prefix length, e.g. 10.0.0.0/8"),
            )
        })?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(0) => Err(invalid(
                SETTING,
                format!("{client} lets every host mount the blobs: name the stack's network"),
            )),
            Ok(p) if p <= max => Ok(()),
            _ => Err(invalid(
                SETTING,
                format!("{client:?}: the prefix length must be 1 to {max}"),
            )),
        }
    } else {
        check_host(SETTING, client).map_err(|_| {
            invalid(
                SETTING,
                format!(
                    "{client:?} is not an address, a host name or a network (wildcards are \
                     refused: only the stack's hosts may mount)"
                ),
            )
        })
    }
}

#[derive(Serialize)]
struct ExportsContext<'a> {
    export_dir: &'a str,
    clients: &'a [String],
    options: &'a str,
}

#[derive(Serialize)]
struct NfsConfContext {
    statd_port: u16,
    statd_outgoing_port: u16,
    bind: Option<String>,
}

#[derive(Serialize)]
struct GaneshaContext<'a> {
    export_dir: &'a str,
    clients: &'a [String],
    bind: Option<String>,
}

/// The options of every client line of the exports file (the cookbook's `writeable` export
/// with `no_subtree_check,no_root_squash`; `sync` so a blob is on disk when ZODB commits).
const EXPORT_OPTIONS: &str = "rw,sync,no_subtree_check,no_root_squash";

pub fn render_exports(
    settings: &NfsServerSettings,
    templates: &Templates,
) -> Result<String, BlobsError> {
    Ok(templates.render(
        EXPORTS_TEMPLATE,
        &ExportsContext {
            export_dir: &settings.export_dir,
            clients: &settings.clients,
            options: EXPORT_OPTIONS,
        },
    )?)
}

pub fn render_nfs_conf(
    settings: &NfsServerSettings,
    templates: &Templates,
) -> Result<String, BlobsError> {
    Ok(templates.render(
        NFS_CONF_TEMPLATE,
        &NfsConfContext {
            statd_port: STATD_PORT,
            statd_outgoing_port: STATD_OUTGOING_PORT,
            bind: settings.bind.map(|b| b.to_string()),
        },
    )?)
}

pub fn render_ganesha_conf(
    settings: &NfsServerSettings,
    templates: &Templates,
) -> Result<String, BlobsError> {
    Ok(templates.render(
        GANESHA_TEMPLATE,
        &GaneshaContext {
            export_dir: &settings.export_dir,
            clients: &settings.clients,
            bind: settings.bind.map(|b| b.to_string()),
        },
    )?)
}

/// What the NFS server host needs in `phase`.
pub fn server_resources(
    settings: &NfsServerSettings,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, BlobsError> {
    settings.check()?;
    let mut resources: Vec<Resource> = Vec::new();
    match phase {
        Phase::Setup => {
            resources.push(
                match settings.kind {
                    NfsServerKind::Kernel => Packages::new(["nfs-kernel-server"]),
                    NfsServerKind::Ganesha => Packages::new(["nfs-ganesha", "nfs-ganesha-vfs"]),
                }
                .into(),
            );
            // The group may traverse the export's root to reach blobstorage/.
            resources.push(
                Directory::new(&settings.export_dir)
                    .owner("root", &settings.group)
                    .mode(0o750)
                    .into(),
            );
            resources.push(
                Directory::new(settings.blobstorage())
                    .owner(&settings.owner, &settings.group)
                    .mode(0o750)
                    .into(),
            );
            resources.push(
                Directory::new(format!("{}/tmp", settings.export_dir))
                    .mode(0o1777)
                    .into(),
            );
        }
        Phase::Configure => match settings.kind {
            NfsServerKind::Kernel => kernel_configure(settings, templates, &mut resources)?,
            NfsServerKind::Ganesha => ganesha_configure(settings, templates, &mut resources)?,
        },
        Phase::Deploy => {}
    }
    Ok(resources)
}

fn kernel_configure(
    settings: &NfsServerSettings,
    templates: &Templates,
    resources: &mut Vec<Resource>,
) -> Result<(), BlobsError> {
    // nfsconf reports what it cannot parse on stderr but exits 0 all the same.
    let nfs_conf = File::new(NFS_CONF_PATH, render_nfs_conf(settings, templates)?).validate(
        "nfsconf --file {} --get statd port >/dev/null && \
         [ -z \"$(nfsconf --file {} --dump 2>&1 >/dev/null)\" ]",
    );
    let exports = File::new(EXPORTS_PATH, render_exports(settings, templates)?);
    let nfs_conf_id = Resource::from(nfs_conf.clone()).id();
    let exports_id = Resource::from(exports.clone()).id();
    resources.extend([
        nfs_conf.into(),
        exports.into(),
        // Static (started by nfs-server), so never enabled; running, so that a statd the
        // package install started is restarted onto the fixed ports.
        Service {
            name: "rpc-statd".to_string(),
            enabled: None,
            state: Some(ServiceState::Running),
            restart_on: vec![nfs_conf_id.clone()],
            reload_on: Vec::new(),
        }
        .into(),
        // Its reload is `exportfs -r`: a changed client list applies without a restart.
        Service::running("nfs-server")
            .restart_on(nfs_conf_id)
            .reload_on(exports_id)
            .into(),
    ]);
    Ok(())
}

fn ganesha_configure(
    settings: &NfsServerSettings,
    templates: &Templates,
    resources: &mut Vec<Resource>,
) -> Result<(), BlobsError> {
    // nfs-ganesha has no check mode; the script below reports an export it did not load.
    let config = File::new(GANESHA_CONF_PATH, render_ganesha_conf(settings, templates)?);
    let service = Service::running("nfs-ganesha").restart_on(Resource::from(config.clone()).id());
    resources.extend([config.into(), service.into()]);
    resources.push(ganesha_export_loaded(&settings.export_dir).into());
    Ok(())
}

/// nfs-ganesha starts even when an export fails to load (a filesystem without file handles,
/// a missing directory): ask it over D-Bus which exports it serves.
fn ganesha_export_loaded(export_dir: &str) -> Script {
    let listed = format!(
        "dbus-send --system --print-reply --dest=org.ganesha.nfsd /org/ganesha/nfsd/ExportMgr \
         org.ganesha.nfsd.exportmgr.ShowExports 2>/dev/null | grep -qF {}",
        quote(&format!("string \"{export_dir}\""))
    );
    let fix = format!(
        "i=0\n\
         until {listed}; do\n\
         \x20 i=$((i + 1))\n\
         \x20 if [ $i -ge 30 ]; then\n\
         \x20   echo \"nfs-ganesha runs but does not export {dir}; its log says:\" >&2\n\
         \x20   grep -E ':(CRIT|MAJ|FATAL) :' /var/log/ganesha/ganesha.log 2>/dev/null | tail -n 5 >&2 || true\n\
         \x20   echo \"(check that {dir} exists on a filesystem with file handles, e.g. ext4 or xfs)\" >&2\n\
         \x20   exit 1\n\
         \x20 fi\n\
         \x20 sleep 1\n\
         done",
        dir = export_dir
    );
    Script::new(
        &format!("ganesha-export:{export_dir}"),
        &format!("check that nfs-ganesha exports {export_dir}"),
        &listed,
        &fix,
    )
}

/// An NFS mount of the blob export on a client (ZEO server or Plone instance host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsMount {
    /// The server's address (`plone_blobs.host`, or the `shared_blobs` host).
    pub server: String,
    /// The server's export directory.
    pub export_dir: String,
    /// Where it is mounted, e.g. `/mnt/shared/blobs`.
    pub mount_point: String,
    /// fstab options (`plone_blobs.nfs_mount_options`); `_netdev` is appended.
    pub options: String,
}

impl NfsMount {
    /// Refuse a mount that fstab cannot hold, naming the setting.
    pub fn check(&self) -> Result<(), BlobsError> {
        check_host("plone_blobs.host", &self.server)?;
        check_path("plone_blobs.nfs_export_dir", &self.export_dir)?;
        check_path("mount_point", &self.mount_point)?;
        check_mount_options("plone_blobs.nfs_mount_options", &self.options)
    }

    /// `server:/export`, with an IPv6 address in brackets as mount.nfs wants it.
    pub fn device(&self) -> String {
        if self.server.contains(':') {
            format!("[{}]:{}", self.server, self.export_dir)
        } else {
            format!("{}:{}", self.server, self.export_dir)
        }
    }
}

/// What a client of the NFS blobs needs in `phase`: nfs-common at setup, the fstab entry
/// (mounted) at configure. Call [`NfsMount::check`] first.
pub fn client_resources(mount: &NfsMount, phase: Phase) -> Vec<Resource> {
    match phase {
        Phase::Setup => vec![Packages::new(["nfs-common"]).into()],
        Phase::Configure => vec![
            Mount::new(
                &mount.device(),
                &mount.mount_point,
                "nfs",
                &with_netdev(&mount.options),
            )
            .into(),
        ],
        Phase::Deploy => Vec::new(),
    }
}

pub(crate) fn with_netdev(options: &str) -> String {
    let mut parts: Vec<&str> = options.split(',').filter(|o| !o.is_empty()).collect();
    if !parts.contains(&"_netdev") {
        parts.push("_netdev");
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> NfsServerSettings {
        NfsServerSettings::new("/srv/exports", vec!["10.0.0.6".into(), "10.0.0.7".into()])
    }

    fn error(settings: &NfsServerSettings) -> String {
        settings.check().unwrap_err().to_string()
    }

    #[test]
    fn defaults_follow_the_cookbook() {
        let s = NfsServerSettings::new(DEFAULT_EXPORT_DIR, vec!["10.0.0.0/8".into()]);
        assert_eq!(s.kind, NfsServerKind::Kernel);
        assert_eq!((s.owner.as_str(), s.group.as_str()), ("plone", "plone"));
        assert!(s.check().is_ok());
    }

    #[test]
    fn bad_settings_say_what_to_change() {
        let mut s = settings();
        s.export_dir = "exports".into();
        assert!(
            error(&s)
                .starts_with("`plone_blobs.nfs_export_dir`: \"exports\" is not an absolute path")
        );
        let mut s = settings();
        s.clients.clear();
        assert!(error(&s).contains("no client may mount"));
        for everyone in ["0.0.0.0/0", "*", "10.0.0.*", "::/0"] {
            let mut s = settings();
            s.clients = vec![everyone.into()];
            assert!(s.check().is_err(), "{everyone} accepted");
        }
        let mut s = settings();
        s.clients.push("10.0.0.6".into());
        assert_eq!(error(&s), "`plone_blobs.network`: 10.0.0.6 is listed twice");
        let mut s = settings();
        s.bind = Some("0.0.0.0".parse().unwrap());
        assert!(error(&s).contains("every network"));
        let mut s = settings();
        s.owner = "Plone User".into();
        assert!(error(&s).starts_with("`owner`:"));
    }

    #[test]
    fn a_client_mount_appends_netdev_once() {
        assert_eq!(with_netdev("auto,rw"), "auto,rw,_netdev");
        assert_eq!(with_netdev("rw,_netdev"), "rw,_netdev");
        let mount = NfsMount {
            server: "fd00::5".into(),
            export_dir: "/srv/exports".into(),
            mount_point: "/mnt/shared/blobs".into(),
            options: DEFAULT_MOUNT_OPTIONS.into(),
        };
        assert_eq!(mount.device(), "[fd00::5]:/srv/exports");
        assert!(mount.check().is_ok());
        let bad = NfsMount {
            options: "rw noatime".into(),
            ..mount
        };
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .starts_with("`plone_blobs.nfs_mount_options`")
        );
    }
}
