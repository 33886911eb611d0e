//! GlusterFS on real sandbox hosts (systemd-nspawn, real sshd, Debian's GlusterFS 10): the
//! resources of `provision_blobs::gluster`, converged over SSH by the engine on every host at
//! the same time, as a run of `provision up` does.
//!
//! Without root or systemd-nspawn these tests skip with one line, except under
//! PROVISION_SANDBOX=required (CI), where they fail.

mod common;

use common::{assert_converged, changed, converge, run, templates, try_run};
use provision_blobs::gluster::{self, GlusterMount, GlusterServerSettings};
use provision_core::engine::Outcome;
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_sandbox::fixture;

const EXPORT_DIR: &str = "/srv/gluster-exports";
const MOUNT_POINT: &str = "/mnt/shared/blobs";

fn server(peers: &[String], own: &str) -> GlusterServerSettings {
    GlusterServerSettings {
        export_dir: EXPORT_DIR.to_string(),
        store_config_in_exports: true,
        ..GlusterServerSettings::new(peers.to_vec(), own)
    }
}

/// Every phase of a peer that also mounts the volume (the cookbook's zeoserver or instance
/// host on a `shared_blobs` host).
fn peer_and_client(settings: &GlusterServerSettings) -> Vec<Resource> {
    let templates = templates();
    let mount = GlusterMount {
        servers: settings.peers.clone(),
        volume: settings.volume.clone(),
        mount_point: MOUNT_POINT.to_string(),
        options: gluster::DEFAULT_MOUNT_OPTIONS.to_string(),
    };
    mount.check().unwrap();
    let mut all = Vec::new();
    for phase in Phase::ALL {
        all.extend(gluster::server_resources(settings, phase, &templates).unwrap());
        all.extend(gluster::client_resources(&mount, phase));
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replicated_volume_is_shared_by_both_peers_converges_once_and_outlives_a_crashed_peer() {
    // host3 is a host of another stack: not a peer, not in auth.allow.
    let Some(hosts) = fixture::hosts(3).await else {
        return;
    };
    let peers: Vec<String> = hosts.hosts()[..2]
        .iter()
        .map(|h| h.address().to_string())
        .collect();
    let work = || {
        hosts.hosts()[..2]
            .iter()
            .map(|h| {
                (
                    h.name(),
                    peer_and_client(&server(&peers, &h.address().to_string())),
                )
            })
            .collect::<Vec<_>>()
    };

    // Both hosts at once: host1 leads while host2 may not have glusterd yet.
    let first = converge(&hosts, work()).await;
    assert_converged(&first);
    assert!(
        first.iter().all(|r| r.outcome == Outcome::Changed),
        "{first:#?}"
    );

    let info = run(&hosts, "host1", "gluster volume info blobs");
    for line in [
        "Type: Replicate".to_string(),
        "Status: Started".to_string(),
        "Number of Bricks: 1 x 2 = 2".to_string(),
        format!("Brick1: {}:{EXPORT_DIR}/brick", peers[0]),
        format!("Brick2: {}:{EXPORT_DIR}/brick", peers[1]),
        format!("auth.allow: {},{}", peers[0], peers[1]),
        "performance.cache-size: 256MB".to_string(),
    ] {
        assert!(info.lines().any(|l| l == line), "no {line:?} in:\n{info}");
    }
    for host in ["host1", "host2"] {
        // A reboot mounts it again from fstab; glusterd's state lives on the export volume.
        let fstab = run(
            &hosts,
            host,
            &format!("awk '$2 == \"{MOUNT_POINT}\"' /etc/fstab"),
        );
        assert_eq!(
            fstab.trim(),
            format!(
                "{}:/blobs {MOUNT_POINT} glusterfs auto,rw,direct-io-mode=disable,\
                 backup-volfile-servers={},_netdev 0 0",
                peers[0], peers[1]
            )
        );
        run(
            &hosts,
            host,
            &format!(
                "mountpoint -q /var/lib/glusterd && test -s {EXPORT_DIR}/gluster-config/glusterd/glusterd.info"
            ),
        );
        // The client's wait leaves no scratch mount behind.
        run(
            &hosts,
            host,
            "! ls -d /run/provision-gluster-probe.* 2>/dev/null && ! grep -q provision-gluster-probe /proc/self/mounts",
        );
    }

    run(
        &hosts,
        "host1",
        &format!("echo 'blob written on host1' > {MOUNT_POINT}/from-host1.blob"),
    );
    run(
        &hosts,
        "host3",
        "export DEBIAN_FRONTEND=noninteractive; i='apt-get install -y -q --no-install-recommends \
         glusterfs-client'; $i >/dev/null 2>&1 || { apt-get update -q >/dev/null && $i >/dev/null; }",
    );
    let outsider = try_run(
        &hosts,
        "host3",
        &format!(
            "mkdir -p /mnt/other; mount -t glusterfs {}:/blobs /mnt/other; sleep 1; \
             cat /mnt/other/from-host1.blob",
            peers[0]
        ),
    );
    assert!(
        !outsider.status.success(),
        "host3 read the volume although auth.allow leaves it out: {}",
        common::text(&outsider.stdout)
    );
    // Refused by the bricks, not unreachable.
    run(
        &hosts,
        "host3",
        "for i in $(seq 50); do grep -q 'Authentication failed' /var/log/glusterfs/mnt-other.log \
         && exit 0; sleep 0.2; done; exit 1",
    );
    assert_eq!(
        run(
            &hosts,
            "host2",
            &format!("cat {MOUNT_POINT}/from-host1.blob")
        ),
        "blob written on host1\n"
    );
    // Replicated: the file is on host2's own brick, not only readable through host1.
    assert_eq!(
        run(
            &hosts,
            "host2",
            &format!("cat {EXPORT_DIR}/brick/from-host1.blob")
        ),
        "blob written on host1\n"
    );

    // Not read on host2 before the crash: no cache of host2 can answer for it.
    run(
        &hosts,
        "host1",
        &format!("echo 'unread until the crash' > {MOUNT_POINT}/unread.blob"),
    );

    let second = converge(&hosts, work()).await;
    assert_converged(&second);
    for report in &second {
        assert_eq!(
            report.outcome,
            Outcome::Unchanged,
            "{} changed on the second converge: {:#?}",
            report.host,
            changed(report)
        );
    }

    hosts.host("host1").crash().expect("crash host1");
    assert_eq!(
        run(
            &hosts,
            "host2",
            &format!("cat {MOUNT_POINT}/from-host1.blob")
        ),
        "blob written on host1\n",
        "host2 lost the file when host1 crashed"
    );
    assert_eq!(
        run(&hosts, "host2", &format!("cat {MOUNT_POINT}/unread.blob")),
        "unread until the crash\n"
    );
    run(
        &hosts,
        "host2",
        &format!("echo 'blob written after the crash' > {MOUNT_POINT}/after-crash.blob"),
    );
    assert_eq!(
        run(
            &hosts,
            "host2",
            &format!("cat {MOUNT_POINT}/after-crash.blob")
        ),
        "blob written after the crash\n"
    );
}

/// The leader waits for a peer whose glusterd never comes, then fails naming that peer.
#[tokio::test(flavor = "multi_thread")]
async fn the_leader_names_the_peer_whose_glusterd_never_answered() {
    let Some(hosts) = fixture::hosts(2).await else {
        return;
    };
    let peers: Vec<String> = hosts
        .hosts()
        .iter()
        .map(|h| h.address().to_string())
        .collect();
    // host2 is up, but nothing installs GlusterFS there.
    let leader = GlusterServerSettings::new(peers.clone(), &peers[0]);
    let templates = templates();
    let mut resources = Vec::new();
    for phase in Phase::ALL {
        resources.extend(gluster::server_resources(&leader, phase, &templates).unwrap());
    }
    let started = std::time::Instant::now();
    let report = converge(&hosts, vec![("host1", resources)]).await.remove(0);
    let Outcome::Failed(error) = &report.outcome else {
        panic!("the leader converged without its peer: {report:#?}");
    };
    assert!(
        error.contains(&format!("script:gluster-peer:{}", peers[1]))
            && error.contains(&format!(
                "GlusterFS peer {} never answered within {} s",
                peers[1],
                gluster::WAIT_SECONDS
            )),
        "{error}"
    );
    assert!(
        started.elapsed().as_secs() >= u64::from(gluster::WAIT_SECONDS),
        "gave up after {:?}",
        started.elapsed()
    );
    // Nothing was created with half a pool.
    let out = try_run(&hosts, "host1", "gluster volume info blobs");
    assert!(
        !out.status.success(),
        "the volume exists: {}",
        common::text(&out.stdout)
    );
}
