//! The NFS server of `provision_blobs::nfs` on real sandbox hosts, converged over SSH by the
//! engine: nfs-ganesha serving the blob export to the listed client and refusing every other
//! host, and nfs-kernel-server's files taken up by Debian's real statd and exportfs.
//!
//! These machines have no kernel NFS server or client, so neither nfsd nor a `mount -t nfs`
//! can run here (render.rs checks the client's fstab line). The clients speak NFSv4 from
//! userspace instead, with libnfs's `nfs-cp` and `nfs-ls`: the same protocol, the same export
//! rules, no kernel.
//!
//! Without root or systemd-nspawn this test skips with one line, except under
//! PROVISION_SANDBOX=required (CI), where it fails.

mod common;

use std::process::Stdio;

use common::{assert_converged, changed, converge, run, templates, text, try_run};
use provision_blobs::nfs::{self, NfsServerKind, NfsServerSettings};
use provision_core::engine::Outcome;
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_sandbox::fixture;

const EXPORT_DIR: &str = "/srv/exports";

fn server_resources(settings: &NfsServerSettings) -> Vec<Resource> {
    let templates = templates();
    let mut all = Vec::new();
    for phase in Phase::ALL {
        all.extend(nfs::server_resources(settings, phase, &templates).unwrap());
    }
    all
}

fn install_libnfs(hosts: &fixture::Hosts, host: &str) {
    run(
        hosts,
        host,
        "export DEBIAN_FRONTEND=noninteractive; i='apt-get install -y -q --no-install-recommends \
         libnfs-utils'; $i >/dev/null 2>&1 || { apt-get update -q >/dev/null && $i >/dev/null; }",
    );
}

/// Whether the host lets a process open files by handle, which ganesha's FSAL VFS does for
/// every file it serves. systemd-nspawn's seccomp filter refuses it unless the host was
/// started with `--system-call-filter=open_by_handle_at`.
fn open_by_handle_works(hosts: &fixture::Hosts, host: &str, path: &str) -> bool {
    let script = format!(
        r#"python3 - <<'PY'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
class Handle(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_uint), ("type", ctypes.c_int), ("data", ctypes.c_ubyte * 128)]
h = Handle(bytes=128)
mount_id = ctypes.c_int()
assert libc.name_to_handle_at(-100, b"{path}", ctypes.byref(h), ctypes.byref(mount_id), 0) == 0
fd = os.open("{path}", os.O_RDONLY)
print("ok" if libc.open_by_handle_at(fd, ctypes.byref(h), os.O_RDONLY) >= 0 else os.strerror(ctypes.get_errno()))
PY"#
    );
    let answer = run(hosts, host, &script);
    eprintln!("open_by_handle_at in {host}: {}", answer.trim());
    answer.trim() == "ok"
}

/// Run the ganesha.nfsd the converge configured outside the host's seccomp filter: through
/// nsenter from the machine, in all of the host's namespaces, with the same config file.
fn restart_ganesha_outside_the_seccomp_filter(hosts: &fixture::Hosts, host: &str) {
    run(hosts, host, "systemctl stop nfs-ganesha");
    let status = hosts
        .host(host)
        .command(&[
            "/bin/sh",
            "-c",
            "mkdir -p /run/ganesha && /usr/bin/ganesha.nfsd -L /var/log/ganesha/ganesha.log \
             -f /etc/ganesha/ganesha.conf -N NIV_EVENT >/dev/null 2>&1",
        ])
        .expect("nsenter into the host")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ganesha.nfsd runs");
    assert!(status.success(), "ganesha.nfsd did not start: {status}");
    run(
        hosts,
        host,
        "for i in $(seq 50); do ss -ltnH 'sport = :2049' | grep -q . && exit 0; sleep 0.2; done; exit 1",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ganesha_serves_the_listed_client_only_with_libnfs_tools_because_kernel_nfs_cannot_run_here()
 {
    let Some(hosts) = fixture::named(&["nfs", "app", "outsider"]).await else {
        return;
    };
    let server = hosts.host("nfs").address().to_string();
    let app = hosts.host("app").address().to_string();

    // The cookbook's export directory is a volume of its own; here a tmpfs, because the
    // hosts' overlay root cannot hand out the file handles ganesha serves files by. The
    // Plone user comes from the app layer on real stacks.
    run(
        &hosts,
        "nfs",
        &format!(
            "mkdir -p {EXPORT_DIR} && mount -t tmpfs -o size=64m tmpfs {EXPORT_DIR} && \
             useradd --system plone"
        ),
    );

    let settings = NfsServerSettings {
        kind: NfsServerKind::Ganesha,
        bind: Some(server.parse().unwrap()),
        ..NfsServerSettings::new(EXPORT_DIR, vec![app.clone()])
    };
    let first = converge(&hosts, vec![("nfs", server_resources(&settings))]).await;
    assert_converged(&first);
    assert_eq!(first[0].outcome, Outcome::Changed);
    let second = converge(&hosts, vec![("nfs", server_resources(&settings))]).await;
    assert_converged(&second);
    assert_eq!(
        second[0].outcome,
        Outcome::Unchanged,
        "the second converge changed: {:#?}",
        changed(&second[0])
    );

    // Only on the private address.
    let listening = run(&hosts, "nfs", "ss -ltnH 'sport = :2049' | awk '{print $4}'");
    assert!(
        !listening.is_empty() && listening.lines().all(|l| l.contains(&server)),
        "nfs-ganesha listens on {listening:?}, not only on {server}"
    );
    assert_eq!(
        run(
            &hosts,
            "nfs",
            &format!("stat -c '%U:%G %a' {EXPORT_DIR} {EXPORT_DIR}/blobstorage {EXPORT_DIR}/tmp")
        ),
        "root:plone 750\nplone:plone 750\nroot:root 1777\n"
    );

    if !open_by_handle_works(&hosts, "nfs", EXPORT_DIR) {
        eprintln!(
            "note: the sandbox's systemd-nspawn refuses open_by_handle_at, so the test runs the \
             same ganesha.nfsd and config outside that filter (start the hosts with \
             --system-call-filter=open_by_handle_at to serve from the systemd unit)"
        );
        restart_ganesha_outside_the_seccomp_filter(&hosts, "nfs");
    }

    let export = format!("nfs://{server}{EXPORT_DIR}");
    let ids = run(&hosts, "nfs", "echo $(id -u plone) $(id -g plone)");
    let (uid, gid) = ids.trim().split_once(' ').unwrap();
    let as_plone = format!("version=4&uid={uid}&gid={gid}");

    install_libnfs(&hosts, "app");
    run(
        &hosts,
        "app",
        &format!(
            "printf 'blob from app' > /tmp/blob && \
             nfs-cp /tmp/blob '{export}/blobstorage/one.blob?{as_plone}' && \
             nfs-cp /tmp/blob '{export}/tmp/scratch?{as_plone}'"
        ),
    );
    let listing = run(
        &hosts,
        "app",
        &format!("nfs-ls '{export}/blobstorage?{as_plone}'"),
    );
    assert!(listing.contains("one.blob"), "{listing}");
    assert_eq!(
        run(
            &hosts,
            "app",
            &format!(
                "nfs-cp '{export}/blobstorage/one.blob?{as_plone}' /tmp/back >/dev/null && cat /tmp/back"
            )
        ),
        "blob from app"
    );
    // Written through NFS, owned by the Plone user on the server's disk.
    assert_eq!(
        run(
            &hosts,
            "nfs",
            &format!(
                "stat -c %U {EXPORT_DIR}/blobstorage/one.blob && cat {EXPORT_DIR}/blobstorage/one.blob"
            )
        ),
        "plone\nblob from app"
    );
    // The export is the Plone user's: other users of a client host do not get in.
    let other_user = try_run(
        &hosts,
        "app",
        &format!("nfs-ls '{export}/blobstorage?version=4&uid=4321&gid=4321'"),
    );
    assert!(
        !other_user.status.success(),
        "uid 4321 read blobstorage: {}",
        text(&other_user.stdout)
    );

    install_libnfs(&hosts, "outsider");
    for script in [
        format!("nfs-ls '{export}/blobstorage?{as_plone}'"),
        format!("nfs-cp '{export}/blobstorage/one.blob?{as_plone}' /tmp/stolen"),
        format!("printf x > /tmp/x && nfs-cp /tmp/x '{export}/tmp/from-outsider?version=4'"),
    ] {
        let out = try_run(&hosts, "outsider", &script);
        let stderr = text(&out.stderr);
        assert!(
            !out.status.success(),
            "outsider: {script} worked: {}",
            text(&out.stdout)
        );
        // Refused by the server (its pseudo filesystem hides the export), not unreachable.
        assert!(stderr.contains("NFS4ERR_"), "outsider: {script}: {stderr}");
    }
    assert!(
        !try_run(
            &hosts,
            "nfs",
            &format!("test -e {EXPORT_DIR}/tmp/from-outsider")
        )
        .status
        .success()
    );
}

/// nfs-kernel-server's own daemon needs the kernel's nfsd, which these machines lack (its
/// unit fails on `proc-fs-nfsd.mount`), so it is left out; everything around it is real:
/// Debian's package, statd on the fixed ports from our nfs.conf.d file, nfsconf reading the
/// bind address, and exportfs parsing our exports file into its table.
#[tokio::test(flavor = "multi_thread")]
async fn kernel_server_files_drive_real_statd_and_exportfs_without_nfsd_because_kernel_nfs_cannot_run_here()
 {
    let Some(hosts) = fixture::named(&["nfs"]).await else {
        return;
    };
    let server = hosts.host("nfs").address().to_string();
    run(&hosts, "nfs", "useradd --system plone");
    let settings = NfsServerSettings {
        bind: Some(server.parse().unwrap()),
        ..NfsServerSettings::new(EXPORT_DIR, vec!["10.77.0.50".into(), "10.77.1.0/24".into()])
    };
    let without_nfsd = || {
        server_resources(&settings)
            .into_iter()
            .filter(|r| r.id() != "service:nfs-server")
            .collect::<Vec<_>>()
    };
    let first = converge(&hosts, vec![("nfs", without_nfsd())]).await;
    assert_converged(&first);
    let second = converge(&hosts, vec![("nfs", without_nfsd())]).await;
    assert_converged(&second);
    assert_eq!(
        second[0].outcome,
        Outcome::Unchanged,
        "the second converge changed: {:#?}",
        changed(&second[0])
    );

    // The package started statd before our file existed; the converge moved it.
    let statd = run(&hosts, "nfs", "ss -Hltnp 'sport = :32765'");
    assert!(
        statd.contains("rpc.statd"),
        "statd is not on port 32765: {statd:?}"
    );
    assert_eq!(
        run(&hosts, "nfs", "nfsconf --get nfsd host"),
        format!("{server}\n")
    );
    run(&hosts, "nfs", "exportfs -ra");
    assert_eq!(
        run(&hosts, "nfs", "exportfs -s | tr -s ' \\t' ' '"),
        format!(
            "{EXPORT_DIR} 10.77.0.50(sync,wdelay,hide,no_subtree_check,sec=sys,rw,no_root_squash,no_all_squash)\n\
             {EXPORT_DIR} 10.77.1.0/24(sync,wdelay,hide,no_subtree_check,sec=sys,rw,no_root_squash,no_all_squash)\n"
        )
    );
}
