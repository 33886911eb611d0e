//! Every template renders with its example, and everything the NFS and GlusterFS provisioners
//! put on a host is a snapshot: files, fstab lines, and the check and fix of every script.
//! nfs-kernel-server cannot run on these machines, so its files are checked here only.

use provision_blobs::gluster::{self, GlusterMount, GlusterServerSettings};
use provision_blobs::nfs::{self, NfsMount, NfsServerKind, NfsServerSettings};
use provision_core::phase::Phase;
use provision_core::resource::{Resource, ServiceState};
use provision_core::template::Templates;

fn templates() -> Templates {
    Templates::new(provision_blobs::TEMPLATES).expect("templates parse")
}

/// `/etc/ganesha/ganesha.conf` -> `etc__ganesha__ganesha.conf`.
fn snapshot_name(prefix: &str, path: &str) -> String {
    format!(
        "{prefix}{}",
        path.trim_start_matches('/').replace(['/', ':'], "__")
    )
}

/// Snapshot the content of every file and script, and the list of resources.
fn snapshot_resources(prefix: &str, resources: &[Resource]) {
    let mut listing = String::new();
    for resource in resources {
        listing.push_str(&resource.id());
        match resource {
            Resource::Packages(_) => {}
            Resource::Directory(dir) => {
                listing.push_str(&format!(" {}:{} {:04o}", dir.owner, dir.group, dir.mode));
            }
            Resource::File(file) => {
                listing.push_str(&format!(
                    " {}:{} {:04o}{}",
                    file.owner,
                    file.group,
                    file.mode,
                    match &file.validate {
                        Some(command) => format!(" (checked with `{command}`)"),
                        None => String::new(),
                    }
                ));
                let content = String::from_utf8(file.content.clone()).expect("text");
                insta::assert_snapshot!(snapshot_name(prefix, &file.path), content);
            }
            Resource::Service(service) => {
                let state = match service.state {
                    Some(ServiceState::Running) => "running",
                    Some(ServiceState::Stopped) => "stopped",
                    None => "as it is",
                };
                listing.push_str(&format!(" {state}"));
                if !service.restart_on.is_empty() {
                    listing.push_str(&format!(" (restart on {})", service.restart_on.join(", ")));
                }
                if !service.reload_on.is_empty() {
                    listing.push_str(&format!(" (reload on {})", service.reload_on.join(", ")));
                }
            }
            Resource::Mount(mount) => {
                listing.push_str(&format!(
                    "\n    fstab: {} {} {} {} 0 0",
                    mount.device, mount.mount_point, mount.fstype, mount.options
                ));
            }
            Resource::Script(script) => {
                listing.push_str(&format!(": {}", script.summary));
                insta::assert_snapshot!(
                    snapshot_name(prefix, &format!("script__{}", script.name)),
                    format!(
                        "# check\n{}\n\n# fix\n{}\n",
                        script.check.trim_end(),
                        script.fix.trim_end()
                    )
                );
            }
            other => panic!("unexpected resource {}", other.id()),
        }
        listing.push('\n');
    }
    insta::assert_snapshot!(format!("{prefix}resources"), listing);
}

fn all_phases<E: std::fmt::Debug>(f: impl Fn(Phase) -> Result<Vec<Resource>, E>) -> Vec<Resource> {
    Phase::ALL.iter().flat_map(|p| f(*p).unwrap()).collect()
}

#[test]
fn every_template_renders_with_its_example() {
    let templates = templates();
    for source in provision_blobs::TEMPLATES {
        let context: serde_json::Value = serde_json::from_str(source.example)
            .unwrap_or_else(|e| panic!("{}: example is not JSON: {e}", source.name));
        let rendered = templates
            .render(source.name, &context)
            .unwrap_or_else(|e| panic!("{e}"));
        insta::assert_snapshot!(
            format!("template__{}", source.name.replace('/', "__")),
            rendered
        );
    }
}

fn nfs_settings(kind: NfsServerKind) -> NfsServerSettings {
    NfsServerSettings {
        kind,
        bind: Some("10.0.0.5".parse().unwrap()),
        ..NfsServerSettings::new(
            nfs::DEFAULT_EXPORT_DIR,
            vec!["10.0.0.6".into(), "10.0.0.7".into(), "fd00::8".into()],
        )
    }
}

#[test]
fn nfs_kernel_server() {
    let templates = templates();
    let settings = nfs_settings(NfsServerKind::Kernel);
    let all = all_phases(|p| nfs::server_resources(&settings, p, &templates));
    snapshot_resources("nfs_kernel__", &all);
}

#[test]
fn nfs_kernel_server_on_a_network_without_a_bind_address() {
    let templates = templates();
    let settings = NfsServerSettings::new("/srv/plone-exports", vec!["10.0.0.0/8".into()]);
    let all = all_phases(|p| nfs::server_resources(&settings, p, &templates));
    snapshot_resources("nfs_kernel_network__", &all);
}

#[test]
fn nfs_ganesha_server() {
    let templates = templates();
    let settings = nfs_settings(NfsServerKind::Ganesha);
    let all = all_phases(|p| nfs::server_resources(&settings, p, &templates));
    snapshot_resources("nfs_ganesha__", &all);
}

#[test]
fn nfs_ganesha_server_without_a_bind_address() {
    let templates = templates();
    let settings = NfsServerSettings {
        kind: NfsServerKind::Ganesha,
        ..NfsServerSettings::new(nfs::DEFAULT_EXPORT_DIR, vec!["10.0.0.0/24".into()])
    };
    let config = nfs::render_ganesha_conf(&settings, &templates).unwrap();
    assert!(!config.contains("Bind_addr"), "{config}");
    insta::assert_snapshot!("nfs_ganesha_network__ganesha.conf", config);
}

#[test]
fn an_invalid_nfs_server_is_refused_before_anything_renders() {
    let templates = templates();
    let settings = NfsServerSettings::new("/srv/exports", vec!["*".into()]);
    let error = nfs::server_resources(&settings, Phase::Setup, &templates).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("`plone_blobs.network`: \"*\""),
        "{error}"
    );
}

#[test]
fn nfs_client() {
    let mount = NfsMount {
        server: "10.0.0.5".into(),
        export_dir: nfs::DEFAULT_EXPORT_DIR.into(),
        mount_point: "/mnt/shared/blobs".into(),
        options: nfs::DEFAULT_MOUNT_OPTIONS.into(),
    };
    mount.check().unwrap();
    let all: Vec<Resource> = Phase::ALL
        .iter()
        .flat_map(|p| nfs::client_resources(&mount, *p))
        .collect();
    snapshot_resources("nfs_client__", &all);
}

fn gluster_settings(own: &str) -> GlusterServerSettings {
    GlusterServerSettings {
        allowed_clients: vec!["10.0.0.5".into(), "10.0.0.9".into()],
        store_config_in_exports: true,
        ..GlusterServerSettings::new(
            vec!["10.0.0.5".into(), "10.0.0.6".into(), "10.0.0.7".into()],
            own,
        )
    }
}

#[test]
fn gluster_leader() {
    let templates = templates();
    let settings = gluster_settings("10.0.0.5");
    let all = all_phases(|p| gluster::server_resources(&settings, p, &templates));
    snapshot_resources("gluster_leader__", &all);
}

#[test]
fn gluster_other_peer_runs_no_volume_operation() {
    let templates = templates();
    let settings = GlusterServerSettings {
        store_config_in_exports: false,
        ..gluster_settings("10.0.0.6")
    };
    let all = all_phases(|p| gluster::server_resources(&settings, p, &templates));
    snapshot_resources("gluster_peer__", &all);
    assert!(
        gluster::server_resources(&settings, Phase::Configure, &templates)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn gluster_single_peer_has_no_replica() {
    let templates = templates();
    let settings = GlusterServerSettings::new(vec!["blobs1.internal".into()], "blobs1.internal");
    let configure = gluster::server_resources(&settings, Phase::Configure, &templates).unwrap();
    snapshot_resources("gluster_single__", &configure);
}

#[test]
fn gluster_client() {
    let mount = GlusterMount {
        servers: vec!["10.0.0.5".into(), "10.0.0.6".into(), "10.0.0.7".into()],
        volume: gluster::DEFAULT_VOLUME.into(),
        mount_point: "/mnt/shared/blobs".into(),
        options: gluster::DEFAULT_MOUNT_OPTIONS.into(),
    };
    mount.check().unwrap();
    let all: Vec<Resource> = Phase::ALL
        .iter()
        .flat_map(|p| gluster::client_resources(&mount, *p))
        .collect();
    snapshot_resources("gluster_client__", &all);
}
