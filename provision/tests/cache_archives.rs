//! `deploy.<app>.buildout_cache_archives` on a sandbox host: an egg cache tarball behind HTTP
//! basic auth is unpacked into `shared/eggs` as the app user before the first build, once; the
//! password never shows.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{ok, provision, sh, text, write_stack};
use provision_sandbox::fixture;

const PASSWORD: &str = "arch1ve-Secret-77";
/// `cache:arch1ve-Secret-77`, as curl sends it.
const AUTHORIZATION: &str = "Authorization: Basic Y2FjaGU6YXJjaDF2ZS1TZWNyZXQtNzc=";

/// Serves `body` at any path to requests with the right basic auth (401 otherwise) on the
/// sandbox bridge; counts the tarballs served.
fn serve(address: std::net::Ipv4Addr, body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((address, 0)).unwrap();
    let url = format!("http://{}/eggs.tar.gz", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let head = String::from_utf8_lossy(&request);
            let answer = if head.lines().any(|l| l.trim() == AUTHORIZATION) {
                count.fetch_add(1, Ordering::SeqCst);
                let mut answer =
                    format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                        .into_bytes();
                answer.extend_from_slice(&body);
                answer
            } else {
                b"HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"eggs\"\r\nContent-Length: 0\r\n\r\n"
                    .to_vec()
            };
            let _ = stream.write_all(&answer);
        }
    });
    (url, served)
}

#[test]
fn an_egg_cache_archive_is_unpacked_once_before_the_first_build() {
    let Some(hosts) = fixture::named_blocking(&["app1", "db1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The tarball: one egg directory, as a real cache holds.
    let tree = dir.path().join("cache");
    std::fs::create_dir_all(tree.join("Zope-6.3-py3.11.egg/EGG-INFO")).unwrap();
    std::fs::write(
        tree.join("Zope-6.3-py3.11.egg/EGG-INFO/PKG-INFO"),
        "Name: Zope\n",
    )
    .unwrap();
    let tarball = std::process::Command::new("tar")
        .args(["-czf", "-", "-C"])
        .arg(&tree)
        .arg(".")
        .output()
        .unwrap();
    assert!(tarball.status.success());
    let (url, served) = serve(hosts.inventory().gateway, tarball.stdout);

    write_stack(
        dir.path(),
        &hosts,
        &format!(
            // Still [stack]: write_stack starts the file with it.
            "secrets = \"secrets.toml\"\n\
             [hosts.app1]\naddress = \"192.0.2.11\"\nlayers = [\"plone_instances\"]\n\
             [hosts.db1]\naddress = \"192.0.2.20\"\nlayers = [\"zeoserver\"]\n\
             [apps.site]\nrepository = \"https://git.example.org/site.git\"\n\
             [attributes.plone_instances]\ninstance_count = 1\nshared_blobs = false\n\
             [[attributes.deploy.site.buildout_cache_archives]]\n\
             url = \"{url}\"\npath = \"shared/eggs\"\nuser = \"cache\"\n"
        ),
    );
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(
        &secrets,
        format!("deploy_site_buildout_cache_archives_0_password = \"{PASSWORD}\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();

    let plan = provision(dir.path(), &["plan", "--sandbox", "--host", "app1"], &[]);
    ok(&plan);
    let shown = text(&plan.stdout) + &text(&plan.stderr);
    assert!(shown.contains(&format!("unpack {url}")), "{shown}");

    let out = provision(dir.path(), &["setup", "--sandbox", "--host", "app1"], &[]);
    ok(&out);
    assert_eq!(served.load(Ordering::SeqCst), 1);
    let owner = sh(
        &hosts,
        "app1",
        "stat -c %U /srv/www/site/shared/eggs/Zope-6.3-py3.11.egg/EGG-INFO/PKG-INFO; \
         cat /srv/www/site/shared/eggs/Zope-6.3-py3.11.egg/EGG-INFO/PKG-INFO",
    );
    assert_eq!(owner, "plone\nName: Zope\n");

    // Once: the second setup finds the cache there and fetches nothing.
    let again = provision(dir.path(), &["setup", "--sandbox", "--host", "app1"], &[]);
    ok(&again);
    assert_eq!(served.load(Ordering::SeqCst), 1);
    for out in [&plan, &out, &again] {
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(!all.contains(PASSWORD), "the password was printed:\n{all}");
    }
}
