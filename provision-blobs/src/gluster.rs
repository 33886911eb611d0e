//! GlusterFS for shared blobs (the cookbook's `gluster` recipe and the Gluster half of
//! `blob_mounts`): one volume replicated across the `shared_blobs` hosts, mounted with FUSE.
//!
//! Every peer installs glusterd and makes its brick directory; only the leader (`peers[0]`)
//! runs volume operations: it adds the other peers to the trusted pool, creates the volume
//! (`replica N` for N peers), sets its options, starts it, and gives a peer that joined later
//! its brick (`add-brick … replica N`, then `heal`). Hosts converge in parallel, so the
//! leader waits (bounded) for each peer's glusterd, and a client waits (bounded) until the
//! volume can be mounted before it mounts it.
//!
//! Like the cookbook, nothing removes bricks or detaches peers: a departed peer stays in
//! the volume until someone runs `replace-brick` or `remove-brick` by hand.

use provision_core::phase::Phase;
use provision_core::resource::{Directory, Mount, Packages, Resource, Script, Service};
use provision_core::shell::quote;
use provision_core::template::Templates;
use serde::Serialize;

use crate::error::{BlobsError, check_host, check_mount_options, check_path, invalid};

/// The cookbook's `plone_blobs.gluster_volume`.
pub const DEFAULT_VOLUME: &str = "blobs";
/// The cookbook's `<ephemeral>/gluster-exports` on a host without an ephemeral volume.
pub const DEFAULT_EXPORT_DIR: &str = "/gluster-exports";
/// The cookbook's `plone_blobs.gluster_mount_options`.
pub const DEFAULT_MOUNT_OPTIONS: &str = "auto,rw,direct-io-mode=disable";
/// The cookbook's `performance.cache-size`.
pub const CACHE_SIZE: &str = "256MB";
/// How long the leader waits for a peer's glusterd, and a client for the volume.
pub const WAIT_SECONDS: u32 = 120;
/// glusterd's state: its UUID, the pool and the volumes.
pub const GLUSTERD_STATE_DIR: &str = "/var/lib/glusterd";

pub(crate) const PEER_TEMPLATE: &str = "blobs/gluster-peer.sh.j2";
pub(crate) const VOLUME_TEMPLATE: &str = "blobs/gluster-volume.sh.j2";
pub(crate) const BRICKS_TEMPLATE: &str = "blobs/gluster-bricks.sh.j2";

/// The GlusterFS server of one `shared_blobs` host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlusterServerSettings {
    /// Default `blobs`.
    pub volume: String,
    /// The brick is `{export_dir}/brick`.
    pub export_dir: String,
    /// Every peer's address in stack order; `peers[0]` leads (only it runs volume operations).
    pub peers: Vec<String>,
    /// This host's address as it appears in `peers`.
    pub own_address: String,
    /// `auth.allow` of the volume: the stack's hosts (the peers are always added).
    pub allowed_clients: Vec<String>,
    /// Keep glusterd's state on the export volume: `{export_dir}/gluster-config/glusterd` is
    /// bind-mounted onto /var/lib/glusterd (`gluster_store_config_in_exports`).
    pub store_config_in_exports: bool,
}

impl GlusterServerSettings {
    /// Volume `blobs` under the default export directory, open to the peers only.
    pub fn new(peers: Vec<String>, own_address: &str) -> Self {
        GlusterServerSettings {
            volume: DEFAULT_VOLUME.to_string(),
            export_dir: DEFAULT_EXPORT_DIR.to_string(),
            allowed_clients: peers.clone(),
            peers,
            own_address: own_address.to_string(),
            store_config_in_exports: false,
        }
    }

    /// Refuse settings that cannot work, naming the setting.
    pub fn check(&self) -> Result<(), BlobsError> {
        check_volume_name(&self.volume)?;
        check_path("plone_blobs.gluster_export_dir", &self.export_dir)?;
        if self.peers.is_empty() {
            return Err(invalid(
                "plone_blobs.servers",
                "names no peer: list the addresses of the shared_blobs hosts",
            ));
        }
        for (i, peer) in self.peers.iter().enumerate() {
            check_peer("plone_blobs.servers", peer)?;
            if self.peers[..i].contains(peer) {
                return Err(invalid(
                    "plone_blobs.servers",
                    format!("{peer} is listed twice"),
                ));
            }
        }
        if !self.peers.contains(&self.own_address) {
            return Err(invalid(
                "own_address",
                format!(
                    "{:?} is not among the peers ({}): the peers must list every \
                     shared_blobs host by the address it has in the stack",
                    self.own_address,
                    self.peers.join(", ")
                ),
            ));
        }
        for client in &self.allowed_clients {
            check_host("allowed_clients", client).map_err(|_| {
                invalid(
                    "allowed_clients",
                    format!(
                        "{client:?} is not an address or host name (wildcards are refused: \
                         only the stack's hosts may mount the volume)"
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// Whether this host runs the volume operations.
    pub fn is_leader(&self) -> bool {
        self.peers.first() == Some(&self.own_address)
    }

    pub fn brick_dir(&self) -> String {
        format!("{}/brick", self.export_dir)
    }

    /// Every peer's brick, in peer order: `peer:{export_dir}/brick`.
    pub fn bricks(&self) -> Vec<String> {
        self.peers
            .iter()
            .map(|p| format!("{p}:{}", self.brick_dir()))
            .collect()
    }

    /// `auth.allow`: the allowed clients, then the peers (their self-heal daemons are
    /// clients too).
    pub fn auth_allow(&self) -> String {
        let mut all: Vec<&str> = Vec::new();
        for host in self.allowed_clients.iter().chain(&self.peers) {
            if !all.contains(&host.as_str()) {
                all.push(host);
            }
        }
        all.join(",")
    }

    fn config_dir(&self) -> String {
        format!("{}/gluster-config/glusterd", self.export_dir)
    }
}

fn check_volume_name(volume: &str) -> Result<(), BlobsError> {
    let ok = !volume.is_empty()
        && volume.len() <= 64
        && !volume.starts_with('-')
        && volume
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "plone_blobs.gluster_volume",
            format!("{volume:?} is not a volume name: use up to 64 letters, digits, - and _"),
        ))
    }
}

/// A peer or volfile server: a host name or an IPv4 address. GlusterFS's `host:/brick`
/// syntax has no room for IPv6 literals.
fn check_peer(setting: &str, peer: &str) -> Result<(), BlobsError> {
    check_host(setting, peer)?;
    if peer.contains(':') {
        return Err(invalid(
            setting,
            format!("{peer}: GlusterFS cannot name a peer by an IPv6 address; use a host name"),
        ));
    }
    Ok(())
}

/// `gluster` with answers to its questions (replica 2 asks about split-brain).
fn gluster(args: &str) -> String {
    format!("gluster --mode=script {args}")
}

/// Whether `peer` is in this glusterd's trusted pool (connected or not: a peer that is down
/// is still a member, and waiting for it would stop every converge of the leader).
fn in_pool(peer: &str) -> String {
    format!(
        "gluster peer status 2>/dev/null | awk -v p={} '$1 == \"Hostname:\" {{h = $2}} \
         $1 == \"State:\" && h == p && /Peer in Cluster/ {{f = 1}} END {{exit !f}}'",
        quote(peer)
    )
}

/// `gluster volume info VOLUME` prints `line` (exactly, as a whole line).
fn volume_info_has(volume: &str, line: &str) -> String {
    format!(
        "gluster volume info {} 2>/dev/null | grep -qxF {}",
        quote(volume),
        quote(line)
    )
}

#[derive(Serialize)]
struct PeerContext<'a> {
    peer: &'a str,
    wait_seconds: u32,
    in_pool: String,
}

#[derive(Serialize)]
struct VolumeContext<'a> {
    volume: &'a str,
    replica: usize,
    bricks: Vec<String>,
}

/// What a GlusterFS peer needs in `phase`; the leader's configure also runs the volume.
pub fn server_resources(
    settings: &GlusterServerSettings,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, BlobsError> {
    settings.check()?;
    let mut resources: Vec<Resource> = Vec::new();
    match phase {
        Phase::Setup => setup(settings, &mut resources),
        Phase::Configure if settings.is_leader() => {
            leader_configure(settings, templates, &mut resources)?
        }
        Phase::Configure | Phase::Deploy => {}
    }
    Ok(resources)
}

fn setup(settings: &GlusterServerSettings, resources: &mut Vec<Resource>) {
    resources.push(Packages::new(["glusterfs-server"]).into());
    resources.push(Directory::new(&settings.export_dir).into());
    let mut glusterd = Service::running("glusterd");
    if settings.store_config_in_exports {
        let config_dir = settings.config_dir();
        let mount = Mount::new(&config_dir, GLUSTERD_STATE_DIR, "none", "bind");
        glusterd = glusterd.restart_on(Resource::from(mount.clone()).id());
        resources.push(Directory::new(format!("{}/gluster-config", settings.export_dir)).into());
        resources.push(Directory::new(&config_dir).into());
        resources.push(seed_config_dir(&config_dir).into());
        resources.push(mount.into());
    }
    // Only existence: the brick's root is the volume's root, whose owner and mode clients
    // set through the mount.
    let brick = quote(&settings.brick_dir());
    resources.push(
        Script::new(
            &format!("gluster-brick:{}", settings.brick_dir()),
            &format!("create the brick directory {}", settings.brick_dir()),
            &format!("[ -d {brick} ]"),
            &format!("mkdir -p {brick}"),
        )
        .into(),
    );
    resources.push(glusterd.into());
}

/// Before the bind mount hides /var/lib/glusterd: stop glusterd, and carry its state (UUID,
/// pool, volumes) over unless the export volume brought a state of its own (a rebuilt host).
fn seed_config_dir(config_dir: &str) -> Script {
    let target = quote(config_dir);
    Script::new(
        "glusterd-state-in-exports",
        &format!("keep glusterd's state in {config_dir}"),
        &format!("mountpoint -q {GLUSTERD_STATE_DIR}"),
        &format!(
            "if systemctl is-active --quiet glusterd; then systemctl stop glusterd; fi\n\
             if [ -d {GLUSTERD_STATE_DIR} ] && [ -z \"$(ls -A {target})\" ]; then \
             cp -a {GLUSTERD_STATE_DIR}/. {target}/; fi"
        ),
    )
}

fn leader_configure(
    settings: &GlusterServerSettings,
    templates: &Templates,
    resources: &mut Vec<Resource>,
) -> Result<(), BlobsError> {
    let volume = settings.volume.as_str();
    let v = quote(volume);
    for peer in settings.peers.iter().skip(1) {
        let fix = templates.render(
            PEER_TEMPLATE,
            &PeerContext {
                peer,
                wait_seconds: WAIT_SECONDS,
                in_pool: in_pool(peer),
            },
        )?;
        resources.push(
            Script::new(
                &format!("gluster-peer:{peer}"),
                &format!(
                    "add {peer} to the trusted pool (waits up to {WAIT_SECONDS} s for its glusterd)"
                ),
                &in_pool(peer),
                &fix,
            )
            .into(),
        );
    }
    let context = VolumeContext {
        volume,
        replica: settings.peers.len(),
        bricks: settings.bricks(),
    };
    let replica = if context.replica > 1 {
        format!("replica {}", context.replica)
    } else {
        "one brick".to_string()
    };
    resources.push(
        Script::new(
            &format!("gluster-volume:{volume}"),
            &format!(
                "create volume {volume} ({replica}: {})",
                context.bricks.join(" ")
            ),
            &format!("gluster volume info {v}"),
            &templates.render(VOLUME_TEMPLATE, &context)?,
        )
        .into(),
    );
    let has_every_brick = format!(
        "info=$(gluster volume info {v} 2>/dev/null) || exit 1\n\
         for brick in {}; do printf '%s\\n' \"$info\" | awk -v b=\"$brick\" \
         '$1 ~ /^Brick[0-9]+:$/ && $2 == b {{f = 1}} END {{exit !f}}' || exit 1; done",
        context
            .bricks
            .iter()
            .map(|b| quote(b))
            .collect::<Vec<_>>()
            .join(" ")
    );
    resources.push(
        Script::new(
            &format!("gluster-bricks:{volume}"),
            &format!("add the missing bricks to {volume} ({replica}) and heal it"),
            &has_every_brick,
            &templates.render(BRICKS_TEMPLATE, &context)?,
        )
        .into(),
    );
    // Options before the first start: the volume never runs open to every host.
    let auth_allow = settings.auth_allow();
    for (option, value) in [
        ("performance.cache-size", CACHE_SIZE),
        ("auth.allow", auth_allow.as_str()),
    ] {
        resources.push(
            Script::new(
                &format!("gluster-option:{volume}:{option}"),
                &format!("set {option} {value} on {volume}"),
                &volume_info_has(volume, &format!("{option}: {value}")),
                &gluster(&format!("volume set {v} {option} {}", quote(value))),
            )
            .into(),
        );
    }
    let started = volume_info_has(volume, "Status: Started");
    resources.push(
        Script::new(
            &format!("gluster-started:{volume}"),
            &format!("start volume {volume}"),
            &started,
            &format!("{started} || {}", gluster(&format!("volume start {v}"))),
        )
        .into(),
    );
    Ok(())
}

/// A FUSE mount of the volume on a client (ZEO server or Plone instance host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlusterMount {
    /// The peers; the first serves the volfile, the others are backups.
    pub servers: Vec<String>,
    pub volume: String,
    /// Where it is mounted, e.g. `/mnt/shared/blobs`.
    pub mount_point: String,
    /// fstab options (`plone_blobs.gluster_mount_options`); the backup volfile servers and
    /// `_netdev` are appended.
    pub options: String,
}

impl GlusterMount {
    /// Refuse a mount that fstab cannot hold, naming the setting.
    pub fn check(&self) -> Result<(), BlobsError> {
        if self.servers.is_empty() {
            return Err(invalid(
                "plone_blobs.servers",
                "names no server to mount the volume from",
            ));
        }
        for server in &self.servers {
            check_peer("plone_blobs.servers", server)?;
        }
        check_volume_name(&self.volume)?;
        check_path("mount_point", &self.mount_point)?;
        check_mount_options("plone_blobs.gluster_mount_options", &self.options)?;
        if self.options.split(',').any(|o| {
            o.starts_with("backupvolfile-server") || o.starts_with("backup-volfile-servers")
        }) {
            return Err(invalid(
                "plone_blobs.gluster_mount_options",
                "names backup volfile servers: leave them out, provision adds every server \
                 after the first",
            ));
        }
        Ok(())
    }

    /// `servers[0]:/volume`.
    pub fn device(&self) -> String {
        format!(
            "{}:/{}",
            self.servers.first().map(String::as_str).unwrap_or(""),
            self.volume
        )
    }

    /// The options with the other servers as backup volfile servers, and `_netdev`.
    pub fn fstab_options(&self) -> String {
        let mut options = self.options.clone();
        if self.servers.len() > 1 {
            options.push_str(&format!(
                ",backup-volfile-servers={}",
                self.servers[1..].join(":")
            ));
        }
        crate::nfs::with_netdev(&options)
    }
}

/// What a client of the volume needs in `phase`: the FUSE client at setup; at configure, a
/// bounded wait for the volume, then the fstab entry, mounted. Call [`GlusterMount::check`]
/// first.
pub fn client_resources(mount: &GlusterMount, phase: Phase) -> Vec<Resource> {
    match phase {
        Phase::Setup => vec![Packages::new(["glusterfs-client"]).into()],
        Phase::Configure => vec![
            wait_for_volume(mount).into(),
            Mount::new(
                &mount.device(),
                &mount.mount_point,
                "glusterfs",
                &mount.fstab_options(),
            )
            .into(),
        ],
        Phase::Deploy => Vec::new(),
    }
}

/// The leader may still be creating the volume: try a mount on a scratch directory until one
/// works (the volume exists, is started, and lets this host in), for at most WAIT_SECONDS.
/// mount.glusterfs can exit 0 for a host that auth.allow refuses (the client then unmounts
/// itself a moment later), so a probe counts once it still holds after a listing.
/// In sync as soon as the real mount is there.
fn wait_for_volume(mount: &GlusterMount) -> Script {
    let mut probe_options = "log-file=/var/log/glusterfs/provision-probe.log".to_string();
    if mount.servers.len() > 1 {
        probe_options.push_str(&format!(
            ",backup-volfile-servers={}",
            mount.servers[1..].join(":")
        ));
    }
    let servers = mount.servers.join(", ");
    let fix = format!(
        "probe=$(mktemp -d /run/provision-gluster-probe.XXXXXX)\n\
         deadline=$(( $(date +%s) + {WAIT_SECONDS} ))\n\
         until mount -t glusterfs -o {options} {device} \"$probe\" 2>/dev/null \\\n\
         \x20   && ls \"$probe\" >/dev/null 2>&1 && sleep 1 && mountpoint -q \"$probe\"; do\n\
         \x20 umount \"$probe\" 2>/dev/null || true\n\
         \x20 if [ \"$(date +%s)\" -ge \"$deadline\" ]; then\n\
         \x20   rmdir \"$probe\"\n\
         \x20   echo {message} >&2\n\
         \x20   tail -n 5 /var/log/glusterfs/provision-probe.log >&2 || true\n\
         \x20   exit 1\n\
         \x20 fi\n\
         \x20 sleep 3\n\
         done\n\
         umount \"$probe\" && rmdir \"$probe\"",
        options = quote(&probe_options),
        device = quote(&mount.device()),
        message = quote(&format!(
            "GlusterFS volume {} on {servers} could not be mounted within {WAIT_SECONDS} s: \
             the first peer's converge creates and starts it, and this host must be in its \
             auth.allow. The client's log says:",
            mount.volume
        )),
    );
    Script::new(
        &format!("gluster-volume-ready:{}", mount.mount_point),
        &format!(
            "wait (up to {WAIT_SECONDS} s) until volume {} on {servers} can be mounted",
            mount.volume
        ),
        &format!(
            "awk -v m={} '$2 == m {{f = 1}} END {{exit !f}}' /proc/self/mounts",
            quote(&mount.mount_point)
        ),
        &fix,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GlusterServerSettings {
        GlusterServerSettings::new(vec!["10.0.0.5".into(), "10.0.0.6".into()], "10.0.0.6")
    }

    fn error(settings: &GlusterServerSettings) -> String {
        settings.check().unwrap_err().to_string()
    }

    #[test]
    fn the_first_peer_leads_and_auth_allow_holds_the_peers_once() {
        let mut s = settings();
        assert!(!s.is_leader());
        s.own_address = "10.0.0.5".into();
        assert!(s.is_leader());
        s.allowed_clients = vec!["10.0.0.9".into(), "10.0.0.5".into()];
        assert_eq!(s.auth_allow(), "10.0.0.9,10.0.0.5,10.0.0.6");
        assert_eq!(
            s.bricks(),
            [
                "10.0.0.5:/gluster-exports/brick",
                "10.0.0.6:/gluster-exports/brick"
            ]
        );
    }

    #[test]
    fn bad_settings_say_what_to_change() {
        let mut s = settings();
        s.peers.clear();
        assert!(error(&s).starts_with("`plone_blobs.servers`: names no peer"));
        let mut s = settings();
        s.own_address = "10.0.0.9".into();
        assert_eq!(
            error(&s),
            "`own_address`: \"10.0.0.9\" is not among the peers (10.0.0.5, 10.0.0.6): the peers \
             must list every shared_blobs host by the address it has in the stack"
        );
        let mut s = settings();
        s.peers.push("10.0.0.5".into());
        assert!(error(&s).contains("listed twice"));
        let mut s = settings();
        s.peers = vec!["fd00::5".into()];
        s.own_address = "fd00::5".into();
        assert!(error(&s).contains("IPv6"));
        let mut s = settings();
        s.volume = "my blobs".into();
        assert!(error(&s).starts_with("`plone_blobs.gluster_volume`"));
        let mut s = settings();
        s.export_dir = "gluster".into();
        assert!(error(&s).starts_with("`plone_blobs.gluster_export_dir`"));
        let mut s = settings();
        s.allowed_clients = vec!["10.0.0.*".into()];
        assert!(error(&s).contains("wildcards are refused"));
    }

    #[test]
    fn the_client_mount_names_the_other_servers_as_backups() {
        let mount = GlusterMount {
            servers: vec!["10.0.0.5".into(), "10.0.0.6".into(), "10.0.0.7".into()],
            volume: "blobs".into(),
            mount_point: "/mnt/shared/blobs".into(),
            options: DEFAULT_MOUNT_OPTIONS.into(),
        };
        assert!(mount.check().is_ok());
        assert_eq!(mount.device(), "10.0.0.5:/blobs");
        assert_eq!(
            mount.fstab_options(),
            "auto,rw,direct-io-mode=disable,backup-volfile-servers=10.0.0.6:10.0.0.7,_netdev"
        );
        let one = GlusterMount {
            servers: vec!["10.0.0.5".into()],
            ..mount.clone()
        };
        assert_eq!(
            one.fstab_options(),
            "auto,rw,direct-io-mode=disable,_netdev"
        );
        let doubled = GlusterMount {
            options: "rw,backupvolfile-server=10.0.0.6".into(),
            ..mount
        };
        assert!(
            doubled
                .check()
                .unwrap_err()
                .to_string()
                .contains("leave them out")
        );
    }
}
