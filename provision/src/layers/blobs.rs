//! Shared blob storage: where the stack's blob files live (the [`BlobStore`]), the servers of
//! the `shared_blobs` layer, and the mounts of the hosts that use them.
//!
//! The ZEO server and the clients always name their blob directory by a stable path (the ZEO
//! server's `blob_dir`, the app's `shared/var/blobstorage`); when the files live elsewhere
//! that path is a symbolic link to the store. Swapping stores (`provision blobs migrate`) then
//! moves a link, not a setting in a config file.

use anyhow::Context as _;
use provision_blobs::gluster::{self, GlusterMount, GlusterServerSettings};
use provision_blobs::nfs::{self, NfsMount, NfsServerKind, NfsServerSettings};
use provision_blobs::s3::{self, S3Access, S3fsMount};
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::stack::{HostSpec, Layer, NfsServer, Stack};
use provision_core::template::Templates;

use super::{HostContext, bind_address};

/// Where NFS and GlusterFS are mounted (the cookbook's `<ephemeral or /mnt>/shared/blobs`).
pub const SHARED_MOUNT: &str = "/mnt/shared/blobs";

/// Where `blobs migrate --to local` puts the blobs when the ZEO server's own blob path is a
/// link to the store they leave.
pub const LOCAL_STORE: &str = "/var/lib/zeo/blobstorage-local";

/// The secrets with the keys of `s3fs_fuse`.
pub const S3_KEY: &str = "s3fs_fuse_s3_key";
pub const S3_SECRET: &str = "s3fs_fuse_s3_secret";

/// The kinds of store that hold blob files, the values of `blobs migrate --to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// A directory on the ZEO server's host (`plone_blobs.blob_dir`, else the server's own).
    /// With RelStorage: back into the database (alias `database`), each host keeping a cache.
    #[value(alias = "database")]
    Local,
    /// An NFS export of the `shared_blobs` host, mounted by the ZEO server and the clients.
    Nfs,
    /// A replicated GlusterFS volume across the `shared_blobs` hosts.
    Glusterfs,
    /// An S3 bucket mounted with s3fs (`s3fs_fuse.mounts`, `plone_blobs.blob_dir` under it).
    S3,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::Local => "local",
            StoreKind::Nfs => "nfs",
            StoreKind::Glusterfs => "glusterfs",
            StoreKind::S3 => "s3",
        })
    }
}

/// Where the blob files of a stack live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobStore {
    pub kind: StoreKind,
    /// The directory that holds them, on every host that uses the store.
    pub dir: String,
}

/// The ZEO server's blob directory when nothing else is set.
pub fn zeo_blob_path() -> String {
    provision_zeo::zeoserver::ZeoServerSettings::new([127, 0, 0, 1].into()).blob_dir
}

/// The store the stack's settings choose: GlusterFS or NFS when a layer mounts it, S3 when
/// `plone_blobs.blob_dir` is inside an s3fs mount, else a local directory.
pub fn store(stack: &Stack) -> BlobStore {
    let attributes = stack.attributes();
    let (pi, zs) = (&attributes.plone_instances, &attributes.plone_zeoserver);
    let shared = format!("{SHARED_MOUNT}/blobstorage");
    if pi.gluster_blobs || zs.gluster_blobs {
        return BlobStore {
            kind: StoreKind::Glusterfs,
            dir: shared,
        };
    }
    if pi.nfs_blobs || zs.nfs_blobs {
        return BlobStore {
            kind: StoreKind::Nfs,
            dir: shared,
        };
    }
    match &attributes.plone_blobs.blob_dir {
        Some(dir) if s3_mount_of(stack, dir).is_some() => BlobStore {
            kind: StoreKind::S3,
            dir: dir.clone(),
        },
        Some(dir) => BlobStore {
            kind: StoreKind::Local,
            dir: dir.clone(),
        },
        None => BlobStore {
            kind: StoreKind::Local,
            dir: zeo_blob_path(),
        },
    }
}

/// The s3fs mount (`s3fs_fuse.mounts`) that holds `dir`.
fn s3_mount_of<'a>(stack: &'a Stack, dir: &str) -> Option<&'a provision_core::stack::S3fsMount> {
    stack.attributes().s3fs_fuse.mounts.iter().find(|m| {
        let root = m.path.trim_end_matches('/');
        dir == root || dir.starts_with(&format!("{root}/"))
    })
}

/// Whether `host` reads and writes the store's files itself: the ZEO server's host, and
/// instance hosts whose clients share the blob directory (`plone_instances.shared_blobs`,
/// ZEO rather than RelStorage with blobs in the database).
pub fn uses_store(stack: &Stack, host: &HostSpec) -> bool {
    let attributes = stack.attributes();
    let pi = &attributes.plone_instances;
    let store = store(stack);
    if host.has_layer(Layer::Zeoserver) {
        return true;
    }
    if !host.has_layer(Layer::PloneInstances) || !pi.shared_blobs {
        return false;
    }
    match store.kind {
        StoreKind::Nfs => pi.nfs_blobs,
        StoreKind::Glusterfs => pi.gluster_blobs,
        StoreKind::S3 => true,
        // The ZEO server's own directory: shared only on its host.
        StoreKind::Local => stack
            .zeo_address()
            .is_some_and(|zeo| zeo.host == host.service_address()),
    }
}

/// The addresses of the stack's hosts, which alone may mount the blobs.
fn stack_addresses(stack: &Stack) -> Vec<String> {
    let mut addresses: Vec<String> = stack
        .hosts
        .iter()
        .map(|h| h.service_address().to_string())
        .collect();
    addresses.dedup();
    addresses
}

/// The S3 endpoint and keys of `s3fs_fuse`, from the secrets.
pub fn s3_access(
    stack: &Stack,
    mount: &provision_core::stack::S3fsMount,
) -> anyhow::Result<S3Access> {
    let s3fs = &stack.attributes().s3fs_fuse;
    let key = |value: &Option<provision_core::stack::SecretString>, name: &str| {
        value
            .as_ref()
            .map(|v| v.expose().to_string())
            .with_context(|| {
                format!(
                    "the s3fs mount of bucket {} needs {name}: add it to the secrets file (or set \
                     PROVISION_SECRET_{})",
                    mount.bucket,
                    name.to_ascii_uppercase()
                )
            })
    };
    Ok(S3Access {
        url: mount.url.clone(),
        region: mount
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".to_string()),
        access_key: key(&s3fs.s3_key, S3_KEY)?,
        secret_key: key(&s3fs.s3_secret, S3_SECRET)?,
    })
}

/// The s3fs mounts of the stack.
pub fn s3_mounts(stack: &Stack) -> anyhow::Result<Vec<S3fsMount>> {
    stack
        .attributes()
        .s3fs_fuse
        .mounts
        .iter()
        .map(|m| {
            Ok(S3fsMount {
                bucket: m.bucket.clone(),
                mount_point: m.path.clone(),
                cache_dir: m.tmp_store.clone(),
                access: s3_access(stack, m)?,
            })
        })
        .collect()
}

/// The user and group that own the blob files: the app's when the stack has Plone clients
/// (the ZEO server then runs as that user too: ZODB makes blob directories 0700, and clients
/// that share the store write into them), else the ZEO server's own. It does not depend on
/// whether the clients share the store, so that switching them between a shared store and
/// blobs served by ZEO changes no owner.
pub fn blob_owner(stack: &Stack) -> (String, String) {
    if stack.hosts_with(Layer::PloneInstances).is_empty() {
        let zeo = provision_zeo::zeoserver::ZeoServerSettings::new([127, 0, 0, 1].into());
        (zeo.user, zeo.group)
    } else {
        owner(stack)
    }
}

/// The app's user and group.
pub fn owner(stack: &Stack) -> (String, String) {
    match stack.app_for(Layer::PloneInstances) {
        Some(app) => {
            let deploy = stack.deploy_settings(&app.name);
            (deploy.user.clone(), deploy.group.clone())
        }
        None => ("plone".to_string(), "plone".to_string()),
    }
}

/// The blob resources of one host for `phase`: the server side on `shared_blobs` hosts, then
/// the mount on the hosts that use the store. They come before the ZEO server's and the
/// instances' resources, which make the store's directory and link theirs to it.
pub fn resources(
    context: &HostContext<'_>,
    phase: Phase,
    templates: &Templates,
) -> anyhow::Result<Vec<Resource>> {
    let (stack, host) = (context.stack, context.host);
    let store = store(stack);
    let in_host = |what: &str| format!("host {}: {what}", host.name);
    let mut resources = Vec::new();
    let blobs = &stack.attributes().plone_blobs;
    if host.has_layer(blobs.layer) {
        match store.kind {
            StoreKind::Glusterfs => {
                let settings = gluster_server(stack, host)?;
                resources.extend(
                    gluster::server_resources(&settings, phase, templates)
                        .with_context(|| in_host("the GlusterFS server"))?,
                );
            }
            StoreKind::Nfs => {
                let mut settings = NfsServerSettings::new(
                    &blobs.nfs_export_dir,
                    match &blobs.network {
                        Some(network) => vec![network.clone()],
                        None => stack_addresses(stack),
                    },
                );
                settings.kind = match blobs.nfs_server {
                    NfsServer::Kernel => NfsServerKind::Kernel,
                    NfsServer::Ganesha => NfsServerKind::Ganesha,
                };
                settings.bind = Some(bind_address(host, blobs.layer)?);
                (settings.owner, settings.group) = blob_owner(stack);
                resources.extend(
                    nfs::server_resources(&settings, phase, templates)
                        .with_context(|| in_host("the NFS server"))?,
                );
            }
            StoreKind::Local | StoreKind::S3 => {}
        }
    }
    if !uses_store(stack, host) {
        return Ok(resources);
    }
    resources.extend(mounts(stack, &store, phase).with_context(|| in_host("the blob mount"))?);
    Ok(resources)
}

/// The mount of `store` on a host that uses it.
pub fn mounts(stack: &Stack, store: &BlobStore, phase: Phase) -> anyhow::Result<Vec<Resource>> {
    let blobs = &stack.attributes().plone_blobs;
    Ok(match store.kind {
        StoreKind::Local => Vec::new(),
        StoreKind::Nfs => {
            let server = stack
                .blob_server()
                .context("NFS blobs need a server: give a host the shared_blobs layer")?;
            nfs::client_resources(
                &NfsMount {
                    server,
                    export_dir: blobs.nfs_export_dir.clone(),
                    mount_point: SHARED_MOUNT.to_string(),
                    options: blobs.nfs_mount_options.clone(),
                },
                phase,
            )
        }
        StoreKind::Glusterfs => gluster::client_resources(
            &GlusterMount {
                servers: stack.gluster_peers(),
                volume: blobs.gluster_volume.clone(),
                mount_point: SHARED_MOUNT.to_string(),
                options: blobs.gluster_mount_options.clone(),
            },
            phase,
        ),
        StoreKind::S3 => {
            let all = s3_mounts(stack)?;
            let mount: Vec<S3fsMount> = all
                .into_iter()
                .filter(|m| {
                    let root = m.mount_point.trim_end_matches('/');
                    store.dir == root || store.dir.starts_with(&format!("{root}/"))
                })
                .collect();
            s3::client_resources(&mount, phase)?
        }
    })
}

fn gluster_server(stack: &Stack, host: &HostSpec) -> anyhow::Result<GlusterServerSettings> {
    let blobs = &stack.attributes().plone_blobs;
    Ok(GlusterServerSettings {
        volume: blobs.gluster_volume.clone(),
        export_dir: blobs.gluster_export_dir.clone(),
        peers: stack.gluster_peers(),
        own_address: host.service_address().to_string(),
        allowed_clients: stack_addresses(stack),
        store_config_in_exports: blobs.gluster_store_config_in_exports,
    })
}

/// The buckets of the stack's s3fs mounts, made sure of from the controller before the hosts
/// mount them. Returns one line per bucket for the output.
pub async fn ensure_buckets(stack: &Stack, plan: bool) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    if store(stack).kind != StoreKind::S3 {
        return Ok(lines);
    }
    for mount in s3_mounts(stack)? {
        let state = s3::ensure_bucket(&mount.access, &mount.bucket, plan).await?;
        match state {
            s3::BucketState::Exists => {}
            s3::BucketState::Created => lines.push(format!("S3 bucket {}: created", mount.bucket)),
            s3::BucketState::WouldCreate => {
                lines.push(format!("S3 bucket {}: would be created", mount.bucket));
            }
        }
    }
    Ok(lines)
}
