//! `provision sandbox up --stack` lets the hosts reach what the stack downloads, not only the
//! package registries: Solr's archive URL is relayed by the sandbox's proxy, another host is
//! refused, and running `sandbox up` again after the URL changed allows the new host without
//! restarting anything (the quick start's Solr comes from the official archive this way).
//!
//! Without root or systemd-nspawn this skips with one line, except under
//! PROVISION_SANDBOX=required (CI), where it fails.

mod common;

use std::path::Path;

use common::{dist, provision, show, text};
use provision_sandbox::fixture;

const NAME: &str = "egress-test";
const REFUSED: &str = "not on the egress allowlist";

fn stack(url: &str) -> String {
    format!(
        "[stack]\nname = \"{NAME}\"\n[hosts.solr1]\naddress = \"10.0.0.30\"\nlayers = [\"solr\"]\n\
         [attributes.plone_solr]\nurl = \"{url}\"\nsha512 = \"{}\"\n",
        "0".repeat(128)
    )
}

fn sandbox_up(stack: &Path) -> std::process::Output {
    let out = provision(
        Path::new("/"),
        &["sandbox", "up", "--stack", &stack.to_string_lossy()],
        &[],
    );
    assert!(out.status.success(), "{}", show(&out));
    out
}

/// Fetches `url` in solr1 through the sandbox's proxy, as every download there goes (Python:
/// the base has no curl): the body, or the error.
fn fetch_in_host(stack: &Path, url: &str) -> String {
    // The bridge's own address is in no_proxy: name the proxy explicitly.
    const FETCH: &str = "import sys, urllib.error, urllib.request\n\
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': sys.argv[2]}))\n\
        try:\n    print(opener.open(sys.argv[1], timeout=30).read().decode(), end='')\n\
        except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode(), end='')\n\
        except Exception as e:\n    print('failed:', e, end='')\n";
    let out = provision(
        Path::new("/"),
        &[
            "sandbox",
            "exec",
            "--stack",
            &stack.to_string_lossy(),
            "solr1",
            "--",
            "sh",
            "-c",
            &format!(". /etc/environment; python3 -c \"$0\" {url} \"$http_proxy\""),
            FETCH,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", show(&out));
    text(&out.stdout)
}

#[test]
fn the_sandbox_proxy_relays_to_the_stacks_download_hosts_and_learns_new_ones() {
    if !fixture::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stack_file = dir.path().join("stack.toml");
    std::fs::write(&stack_file, stack("http://solr-archive.invalid/solr.tgz")).unwrap();
    let _sandbox = common::StackSandbox::fresh(&stack_file);

    let first = sandbox_up(&stack_file);
    assert!(
        text(&first.stdout).contains("the stack's download hosts"),
        "{}",
        show(&first)
    );
    // The archive's host is relayed (it does not resolve: the proxy says so), another is not.
    let allowed = fetch_in_host(&stack_file, "http://solr-archive.invalid/solr.tgz");
    assert!(
        allowed.starts_with("502 cannot reach solr-archive.invalid:80"),
        "{allowed}"
    );
    let other = fetch_in_host(&stack_file, "http://elsewhere.invalid/solr.tgz");
    assert!(
        other.starts_with("403 ") && other.contains(REFUSED),
        "{other}"
    );

    // The archive moves to a server on the bridge: refused until `sandbox up` runs again.
    let archive = dir.path().join("solr-test.tgz");
    std::fs::write(&archive, "the archive's bytes").unwrap();
    let gateway = provision_sandbox::Sandbox::new(NAME)
        .and_then(|sandbox| sandbox.inventory())
        .unwrap()
        .gateway;
    let files = dist::FileServer::start(gateway.into(), &archive);
    let url = format!("http://{}/solr-test.tgz", files.address);
    assert!(fetch_in_host(&stack_file, &url).contains(REFUSED));
    std::fs::write(&stack_file, stack(&url)).unwrap();
    let again = sandbox_up(&stack_file);
    assert!(
        text(&again.stderr).contains("now also allows the stack's download hosts"),
        "{}",
        show(&again)
    );
    assert_eq!(fetch_in_host(&stack_file, &url), "the archive's bytes");
    // Nothing new to allow: nothing said.
    let third = sandbox_up(&stack_file);
    assert!(
        !text(&third.stderr).contains("now also allows"),
        "{}",
        show(&third)
    );
}
