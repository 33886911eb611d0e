//! The whole frontend on loopback, from the rendered configs: nginx (the rendered site in a
//! scratch main config) in front of HAProxy, with and without Varnish between them, over small
//! HTTP backends standing in for the Plone clients.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;

use common::{
    Balancer, ChildGuard, HttpBackend, STATS_PASSWORD, basic_auth, free_port, have, http,
    listening, request_on, start_haproxy, status_of,
};
use provision_core::template::Templates;
use provision_nginx::haproxy_runtime::ServerStatus;
use provision_nginx::{FrontendSettings, TEMPLATES, VarnishSettings, nginx, varnish};

/// nginx running the rendered site for `settings`, listening on 127.0.0.1:`http_port`.
fn start_nginx(settings: &FrontendSettings, dir: &Path) -> ChildGuard {
    let templates = Templates::new(TEMPLATES).unwrap();
    let site = nginx::render_site(settings, &templates).unwrap();
    std::fs::write(dir.join("site.conf"), site).unwrap();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nevents {{\n    worker_connections 64;\n}}\n\
             http {{\n    access_log {d}/access.log;\n    include /etc/nginx/mime.types;\n    \
             include {d}/site.conf;\n}}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut child = ChildGuard::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"]),
        dir.join("nginx.out"),
    );
    let port = settings.http_port;
    child.wait_for("listening", || listening(port));
    child
}

/// The balancer's settings, with nginx on a free loopback port and a sub-site.
fn frontend_settings(lb: &Balancer) -> FrontendSettings {
    let mut s = lb.settings.clone();
    s.listen_addresses = vec!["127.0.0.1".to_string()];
    s.http_port = free_port();
    s.subsites = BTreeMap::from([("en.example.org".to_string(), "en".to_string())]);
    s
}

fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> common::Response {
    let response = http(port, "GET", path, headers).unwrap();
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    response
}

#[test]
fn nginx_rewrites_for_zope_routes_subsites_and_survives_a_stopped_client() {
    if !have("nginx", "-v") || !have("haproxy", "-v") || !have("socat", "-V") {
        return;
    }
    let a = HttpBackend::start("app1-1", "127.0.0.1");
    let b = HttpBackend::start("app2-1", "127.0.0.1");
    let mut lb = start_haproxy(&[&a, &b], |_| {});
    let dir = tempfile::tempdir().unwrap();
    let s = frontend_settings(&lb);
    let web = start_nginx(&s, dir.path());
    let port = s.http_port;

    // The VirtualHostMonster rewrite to the site, with the visitor's host and port.
    let body = get(port, "/news?x=1", &[]).body;
    let path =
        format!("/VirtualHostBase/http/www.example.org:{port}/Plone/VirtualHostRoot/news?x=1");
    assert!(body.ends_with(&path), "{body}");
    // A TLS terminator in front says https: Plone makes https URLs on port 443.
    let body = get(port, "/", &[("X-Forwarded-Proto", "https")]).body;
    assert!(
        body.ends_with("/VirtualHostBase/https/www.example.org:443/Plone/VirtualHostRoot/"),
        "{body}"
    );
    // A sub-site's host maps to its path below the site.
    let body = get(port, "/events", &[("Host", "en.example.org")]).body;
    let path =
        format!("/VirtualHostBase/http/en.example.org:{port}/Plone/en/VirtualHostRoot/events");
    assert!(body.ends_with(&path), "{body}");

    // Every client in turn.
    let names: Vec<String> = (0..6)
        .map(|_| {
            get(port, "/", &[])
                .body
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        names.iter().any(|n| n == "app1-1") && names.iter().any(|n| n == "app2-1"),
        "{names:?}"
    );

    // HAProxy's statistics through nginx: 401 without the password, 200 with it.
    let stats = http(port, "GET", "/balancer/stats", &[]).unwrap();
    assert_eq!(stats.status, 401, "{}", web.log());
    let auth = basic_auth("stats", STATS_PASSWORD);
    let stats = http(port, "GET", "/balancer/stats", &[("Authorization", &auth)]).unwrap();
    assert_eq!(stats.status, 200);
    assert!(stats.body.contains("plone_instances"));

    // stub_status answers this host.
    let status = get(port, nginx::STATUS_URL, &[]).body;
    assert!(status.starts_with("Active connections:"), "{status}");

    // A client stops: not one request fails (a refused connection is retried on the other
    // client), HAProxy marks it DOWN, and all traffic goes to the other.
    b.stop();
    for _ in 0..20 {
        let body = get(port, "/", &[]).body;
        assert!(body.starts_with("app1-1 "), "{body}");
    }
    let socket = lb.socket.clone();
    lb.child.wait_for("app2-1 DOWN", || {
        status_of(&socket, "app2-1") == ServerStatus::Down
    });
}

/// A connection to 127.0.0.1:`port` from `source` (another loopback address).
fn connect_from(source: &str, port: u16) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(format!("{source}:0").parse::<SocketAddr>().unwrap())
            .unwrap();
        socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

#[test]
fn varnish_caches_anonymous_pages_and_takes_purges_from_instance_hosts_only() {
    if !have("nginx", "-v")
        || !have("haproxy", "-v")
        || !have("socat", "-V")
        || !have("varnishd", "-V")
    {
        return;
    }
    // The second "instance host" is 127.0.0.2: it is in the purge ACL, 127.0.0.3 is not.
    let a = HttpBackend::start("app1-1", "127.0.0.1");
    let b = HttpBackend::start("app2-1", "127.0.0.2");
    let lb = start_haproxy(&[&a, &b], |_| {});
    let dir = tempfile::tempdir().unwrap();
    let mut s = frontend_settings(&lb);
    s.nginx.proxy_port = free_port();
    s.varnish = Some(VarnishSettings {
        storage: "malloc,16m".to_string(),
        ..VarnishSettings::default()
    });

    let templates = Templates::new(TEMPLATES).unwrap();
    let vcl = dir.path().join("default.vcl");
    std::fs::write(&vcl, varnish::render_vcl(&s, &templates).unwrap()).unwrap();
    // The drop-in's command line, minus what needs the packaged service (jail user, secret,
    // management port).
    let mut cache = ChildGuard::spawn(
        "varnishd",
        Command::new("varnishd")
            .args(["-F", "-j", "none", "-T", "none", "-s", "malloc,16m"])
            .arg("-n")
            .arg(dir.path().join("varnish"))
            .arg("-a")
            .arg(format!("127.0.0.1:{}", s.nginx.proxy_port))
            .arg("-f")
            .arg(&vcl),
        dir.path().join("varnishd.log"),
    );
    let cache_port = s.nginx.proxy_port;
    cache.wait_for("listening", || listening(cache_port));
    let web = start_nginx(&s, dir.path());
    let port = s.http_port;
    let hits = || a.hits() + b.hits();

    // An anonymous page is fetched once, then served from the cache.
    let before = hits();
    let first = get(port, "/front-page", &[]);
    assert_eq!(first.header("X-Cache"), Some("MISS"), "{}", web.log());
    let second = get(port, "/front-page", &[]);
    assert_eq!(second.header("X-Cache"), Some("HIT"));
    assert_eq!(second.body, first.body);
    assert_eq!(hits(), before + 1);
    assert!(second.header("x-url").is_none());
    // Analytics cookies do not make a visitor uncacheable; Plone's login cookie does.
    let tracked = get(port, "/front-page", &[("Cookie", "_ga=GA1.2.3; _gid=x")]);
    assert_eq!(tracked.header("X-Cache"), Some("HIT"));
    let logged_in = get(port, "/front-page", &[("Cookie", "_ga=1; __ac=\"abc\"")]);
    assert_eq!(logged_in.header("X-Cache"), Some("MISS"));
    assert_eq!(hits(), before + 2);

    // Visitors cannot purge: nginx refuses PURGE.
    let refused = http(port, "PURGE", "/front-page", &[]).unwrap();
    assert_eq!(refused.status, 405);
    // Nor can a host outside the ACL that reaches Varnish directly.
    let url =
        format!("/VirtualHostBase/http/www.example.org:{port}/Plone/VirtualHostRoot/front-page");
    let outsider = request_on(connect_from("127.0.0.3", cache_port), "PURGE", &url, &[]).unwrap();
    assert_eq!(outsider.status, 405);
    assert_eq!(get(port, "/front-page", &[]).header("X-Cache"), Some("HIT"));
    // An instance host can: the next request goes to Plone again.
    let purge = request_on(connect_from("127.0.0.2", cache_port), "PURGE", &url, &[]).unwrap();
    assert_eq!(purge.status, 200);
    let after = get(port, "/front-page", &[]);
    assert_eq!(after.header("X-Cache"), Some("MISS"));
    assert_eq!(hits(), before + 3);
}
