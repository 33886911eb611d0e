//! `configure` after the ZEO server moved to another host: the instance hosts' generated
//! deploy.cfg changes, so the live revision is rebuilt and rolled out, and the clients talk to
//! the new server; a second `configure` changes nothing.

mod common;

use common::{ok, provision, sh, show, text, write_stack, zope_example_repository, zope_http};
use provision_sandbox::fixture;

fn stack(zeo_host: &str) -> String {
    let layers = |host: &str| {
        if host == zeo_host {
            "[\"zeoserver\"]"
        } else {
            "[]"
        }
    };
    format!(
        "[hosts.app1]\naddress = \"192.0.2.11\"\nlayers = [\"plone_instances\"]\n\
         [hosts.db1]\naddress = \"192.0.2.20\"\nlayers = {}\n\
         [hosts.db2]\naddress = \"192.0.2.21\"\nlayers = {}\n\
         [apps.site]\nrepository = \"site\"\n\
         [attributes.plone_instances]\ninstance_count = 1\nshared_blobs = false\nsite_id = \"\"\n\
         [attributes.haproxy]\nhealth_check_url = \"/\"\n",
        layers("db1"),
        layers("db2")
    )
}

#[test]
fn configure_rolls_the_clients_over_to_a_moved_zeo_server() {
    let Some(hosts) = fixture::named_blocking(&["app1", "db1", "db2"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    zope_example_repository(dir.path(), &[], "the Zope example");
    write_stack(dir.path(), &hosts, &stack("db1"));
    ok(&provision(dir.path(), &["up", "--sandbox"], &[]));
    let client = format!("{}:8081", hosts.host("app1").address());
    assert_eq!(zope_http(&client, "PUT", "/on-db1", b"first server").0, 201);
    let first = sh(&hosts, "app1", "readlink -f /srv/www/site/current");

    // The ZEO server moves to db2 (a new, empty database): its host is set up, then
    // `configure` re-renders the clients' configuration and rolls it out.
    write_stack(dir.path(), &hosts, &stack("db2"));
    ok(&provision(
        dir.path(),
        &["setup", "--sandbox", "--host", "db2"],
        &[],
    ));
    let out = provision(dir.path(), &["configure", "--sandbox"], &[]);
    ok(&out);
    assert!(
        text(&out.stdout).contains("app1: deployed"),
        "{}",
        show(&out)
    );
    let second = sh(&hosts, "app1", "readlink -f /srv/www/site/current");
    assert_ne!(first, second, "no new release: {}", show(&out));
    let db2 = hosts.host("db2").address().to_string();
    let config = sh(
        &hosts,
        "app1",
        "cat /srv/www/site/current/parts/client1/etc/zope.conf",
    );
    assert!(config.contains(&format!("{db2}:8001")), "{config}");
    // The client serves from db2's database: the object written on db1 is not there, a new
    // one commits.
    assert_eq!(zope_http(&client, "GET", "/on-db1", b"").0, 404);
    assert_eq!(
        zope_http(&client, "PUT", "/on-db2", b"second server").0,
        201
    );

    let again = provision(dir.path(), &["configure", "--sandbox"], &[]);
    ok(&again);
    assert!(
        text(&again.stdout).contains("app1: release unchanged"),
        "{}",
        show(&again)
    );
    assert_eq!(
        sh(&hosts, "app1", "readlink -f /srv/www/site/current"),
        second
    );
}
