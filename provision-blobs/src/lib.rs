//! Shared blob storage for a Plone stack (the cookbook's `nfs_blobs`, `gluster`, `blob_mounts`
//! and `s3fs-fuse` recipes) and moving blobs between backends.
//!
//! - [`nfs`]: the NFS server of the `shared_blobs` layer (nfs-kernel-server, or nfs-ganesha in
//!   userspace) and the clients' fstab mount.
//! - [`gluster`]: a replicated GlusterFS volume across the `shared_blobs` hosts, and the
//!   clients' FUSE mount with backup volfile servers.
//! - [`s3`]: the bucket (created or verified with aws-sdk-s3) and the s3fs mount.
//!
//! Like the other provisioners, this crate turns plain settings into resources per phase and
//! never reads the stack; only [`s3::Bucket`] talks to the network (the S3 API, from the
//! controller).

mod error;
pub mod gluster;
pub mod nfs;
pub mod s3;

use provision_core::template::TemplateSource;

pub use error::BlobsError;

/// Every template of this crate, with an example context.
pub const TEMPLATES: &[TemplateSource] = &[
    TemplateSource {
        name: nfs::EXPORTS_TEMPLATE,
        source: include_str!("templates/blobs/exports.j2"),
        example: r#"{
            "export_dir": "/srv/exports",
            "clients": ["10.0.0.6", "10.0.0.7", "fd00::8"],
            "options": "rw,sync,no_subtree_check,no_root_squash"
        }"#,
    },
    TemplateSource {
        name: nfs::NFS_CONF_TEMPLATE,
        source: include_str!("templates/blobs/nfs.conf.j2"),
        example: r#"{"statd_port": 32765, "statd_outgoing_port": 32766, "bind": "10.0.0.5"}"#,
    },
    TemplateSource {
        name: nfs::GANESHA_TEMPLATE,
        source: include_str!("templates/blobs/ganesha.conf.j2"),
        example: r#"{
            "export_dir": "/srv/exports",
            "clients": ["10.0.0.6", "10.0.0.0/24"],
            "bind": "10.0.0.5"
        }"#,
    },
    TemplateSource {
        name: gluster::PEER_TEMPLATE,
        source: include_str!("templates/blobs/gluster-peer.sh.j2"),
        example: r#"{
            "peer": "10.0.0.6",
            "wait_seconds": 120,
            "in_pool": "gluster peer status | grep -q 10.0.0.6"
        }"#,
    },
    TemplateSource {
        name: gluster::VOLUME_TEMPLATE,
        source: include_str!("templates/blobs/gluster-volume.sh.j2"),
        example: r#"{
            "volume": "blobs",
            "replica": 2,
            "bricks": ["10.0.0.5:/gluster-exports/brick", "10.0.0.6:/gluster-exports/brick"]
        }"#,
    },
    TemplateSource {
        name: gluster::BRICKS_TEMPLATE,
        source: include_str!("templates/blobs/gluster-bricks.sh.j2"),
        example: r#"{
            "volume": "blobs",
            "replica": 3,
            "bricks": ["10.0.0.5:/gluster-exports/brick", "10.0.0.6:/gluster-exports/brick", "10.0.0.7:/gluster-exports/brick"]
        }"#,
    },
];
