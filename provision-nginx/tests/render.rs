//! Every config the frontend renders, as snapshots, and each one checked by the real program
//! that reads it, through the same check command the host runs.

mod common;

use std::path::Path;
use std::process::Command;

use common::{full_stack, have, plain_stack, run_check};
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::template::Templates;
use provision_nginx::{
    FrontendError, FrontendSettings, HAPROXY_CHECK, LOGROTATE_CHECK, TEMPLATES, Tls, VCL_CHECK,
    haproxy, nginx, resources, varnish,
};

fn templates() -> Templates {
    Templates::new(TEMPLATES).unwrap()
}

#[test]
fn every_template_renders_its_example() {
    let t = templates();
    for source in TEMPLATES {
        let context: serde_json::Value = serde_json::from_str(source.example)
            .unwrap_or_else(|e| panic!("{}: bad example: {e}", source.name));
        let text = t
            .render(source.name, &context)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(text.ends_with('\n'), "{}", source.name);
    }
}

#[test]
fn snapshots_of_the_full_stack() {
    let t = templates();
    let s = full_stack();
    insta::assert_snapshot!("haproxy.cfg", haproxy::render_config(&s, &t).unwrap());
    insta::assert_snapshot!("nginx-site", nginx::render_site(&s, &t).unwrap());
    insta::assert_snapshot!("nginx-logrotate", nginx::render_logrotate(&s, &t).unwrap());
    insta::assert_snapshot!("varnish.vcl", varnish::render_vcl(&s, &t).unwrap());
    insta::assert_snapshot!("varnish-drop-in", varnish::render_drop_in(&s, &t).unwrap());
}

#[test]
fn snapshots_of_the_defaults() {
    let t = templates();
    let s = plain_stack();
    insta::assert_snapshot!(
        "haproxy-defaults.cfg",
        haproxy::render_config(&s, &t).unwrap()
    );
    insta::assert_snapshot!("nginx-site-defaults", nginx::render_site(&s, &t).unwrap());
}

#[test]
fn the_resources_of_each_phase_in_order() {
    let t = templates();
    let ids = |s: &FrontendSettings, phase| -> Vec<String> {
        resources(s, phase, &t)
            .unwrap()
            .iter()
            .map(Resource::id)
            .collect()
    };
    assert_eq!(
        ids(&full_stack(), Phase::Setup),
        ["packages:haproxy,nginx,socat,logrotate,varnish"]
    );
    assert_eq!(
        ids(&full_stack(), Phase::Configure),
        [
            "file:/etc/haproxy/haproxy.cfg",
            "file:/etc/nginx/sites-available/default",
            "file:/etc/nginx/sites-available/plone",
            "symlink:/etc/nginx/sites-enabled/plone",
            "file:/etc/logrotate.d/nginx",
            "file:/etc/varnish/default.vcl",
            "unit:varnish.service.d/provision.conf",
            "service:haproxy",
            "service:varnish",
            "service:nginx",
        ]
    );
    assert!(ids(&full_stack(), Phase::Deploy).is_empty());
    assert_eq!(
        ids(&plain_stack(), Phase::Setup),
        ["packages:haproxy,nginx,socat,logrotate"]
    );

    let configure = resources(&full_stack(), Phase::Configure, &t).unwrap();
    let service = |name: &str| {
        configure
            .iter()
            .find_map(|r| match r {
                Resource::Service(s) if s.name == name => Some(s.clone()),
                _ => None,
            })
            .unwrap()
    };
    // HAProxy and nginx only ever reload: a changed backend list drops no request.
    assert!(service("haproxy").restart_on.is_empty());
    assert_eq!(
        service("haproxy").reload_on,
        ["file:/etc/haproxy/haproxy.cfg"]
    );
    assert!(service("nginx").restart_on.is_empty());
    assert_eq!(service("nginx").reload_on.len(), 3);
    assert_eq!(
        service("varnish").restart_on,
        ["unit:varnish.service.d/provision.conf"]
    );
    assert_eq!(
        service("varnish").reload_on,
        ["file:/etc/varnish/default.vcl"]
    );
    let haproxy_cfg = configure
        .iter()
        .find_map(|r| match r {
            Resource::File(f) if f.path == haproxy::CONFIG_PATH => Some(f.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (haproxy_cfg.group.as_str(), haproxy_cfg.mode),
        ("haproxy", 0o640)
    );
    assert_eq!(haproxy_cfg.validate.as_deref(), Some(HAPROXY_CHECK));

    let plain = resources(&plain_stack(), Phase::Configure, &t).unwrap();
    assert!(plain.iter().any(|r| matches!(
        r,
        Resource::Service(s) if s.name == "varnish" && s.state == Some(provision_core::resource::ServiceState::Stopped)
    )));
}

#[test]
fn stats_without_a_password_is_an_error() {
    let mut s = plain_stack();
    s.haproxy.stats_password = None;
    let error = resources(&s, Phase::Configure, &templates()).unwrap_err();
    assert!(
        matches!(error, FrontendError::MissingStatsPassword),
        "{error}"
    );
    assert!(
        error.to_string().contains("haproxy.stats_password"),
        "{error}"
    );
    s.haproxy.enable_stats = false;
    let cfg = haproxy::render_config(&s, &templates()).unwrap();
    assert!(!cfg.contains("stats auth"), "{cfg}");
    let site = nginx::render_site(&s, &templates()).unwrap();
    assert!(!site.contains("/balancer/stats"), "{site}");
}

#[test]
fn haproxy_accepts_the_rendered_config() {
    if !have("haproxy", "-v") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for s in [full_stack(), plain_stack()] {
        let cfg = haproxy::render_config(&s, &templates()).unwrap();
        let (ok, stderr) = run_check(HAPROXY_CHECK, &cfg, dir.path());
        assert!(ok, "haproxy -c refused:\n{stderr}\n{cfg}");
    }
    let (ok, stderr) = run_check(HAPROXY_CHECK, "global\n    bogus\n", dir.path());
    assert!(!ok);
    assert!(stderr.contains("unknown keyword 'bogus'"), "{stderr}");
}

/// A copy of this machine's /etc/nginx whose nginx.conf includes the copy's sites-enabled.
fn nginx_conf_copy(root: &Path) -> std::path::PathBuf {
    let conf = root.join("nginx");
    let status = Command::new("cp")
        .arg("-a")
        .arg("/etc/nginx")
        .arg(&conf)
        .status()
        .unwrap();
    assert!(status.success());
    let main = conf.join("nginx.conf");
    let text = std::fs::read_to_string(&main).unwrap().replace(
        "/etc/nginx/sites-enabled/",
        &format!("{}/sites-enabled/", conf.display()),
    );
    std::fs::write(&main, text).unwrap();
    conf
}

/// A self-signed certificate and key for `nginx -t` to load.
fn certificate(dir: &Path) -> Tls {
    let (cert, key) = (dir.join("site.pem"), dir.join("site.key"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=www.example.org", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    Tls {
        certificate: cert.display().to_string(),
        key: key.display().to_string(),
    }
}

#[test]
fn nginx_accepts_the_rendered_site_beside_the_other_enabled_sites() {
    if !have("nginx", "-v") || !have("openssl", "version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = nginx_conf_copy(dir.path());
    let available = conf.join("sites-available");
    // Debian's default site is still enabled in the copy: the check leaves it out, as the
    // emptied file would be on a host.
    let check = nginx::site_check_command(&conf.display().to_string());
    let mut full = full_stack();
    full.tls = Some(certificate(dir.path()));
    for s in [full, plain_stack()] {
        let site = nginx::render_site(&s, &templates()).unwrap();
        let (ok, stderr) = run_check(&check, &site, &available);
        assert!(ok, "nginx -t refused:\n{stderr}\n{site}");
    }

    // Another enabled site is checked with the candidate: a clash with it is found.
    std::fs::write(
        available.join("other"),
        "upstream plone_balancer {\n    server 127.0.0.1:9;\n}\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(available.join("other"), conf.join("sites-enabled/other")).unwrap();
    let site = nginx::render_site(&plain_stack(), &templates()).unwrap();
    let (ok, stderr) = run_check(&check, &site, &available);
    assert!(!ok);
    assert!(
        stderr.contains("duplicate upstream \"plone_balancer\""),
        "{stderr}"
    );
    std::fs::remove_file(conf.join("sites-enabled/other")).unwrap();

    // A broken hook is refused with nginx's message, naming the directive.
    let mut broken = plain_stack();
    broken.nginx.additional_config = Some("proxy_bogus on;".to_string());
    let site = nginx::render_site(&broken, &templates()).unwrap();
    let (ok, stderr) = run_check(&check, &site, &available);
    assert!(!ok);
    assert!(
        stderr.contains("unknown directive \"proxy_bogus\""),
        "{stderr}"
    );

    // Nothing is left behind, whatever the outcome.
    let leftovers: Vec<_> = std::fs::read_dir(&conf)
        .unwrap()
        .chain(std::fs::read_dir(&available).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".provision"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn the_nginx_check_fails_clearly_when_nginx_conf_has_no_sites_include() {
    if !have("nginx", "-v") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = nginx_conf_copy(dir.path());
    let main = conf.join("nginx.conf");
    let text = std::fs::read_to_string(&main)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("sites-enabled"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&main, text).unwrap();
    let check = nginx::site_check_command(&conf.display().to_string());
    let site = nginx::render_site(&plain_stack(), &templates()).unwrap();
    let (ok, stderr) = run_check(&check, &site, &conf.join("sites-available"));
    assert!(!ok);
    assert!(stderr.contains("cannot check the site"), "{stderr}");
}

#[test]
fn varnish_compiles_the_rendered_vcl() {
    if !have("varnishd", "-V") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vcl = varnish::render_vcl(&full_stack(), &templates()).unwrap();
    let (ok, stderr) = run_check(VCL_CHECK, &vcl, dir.path());
    assert!(ok, "varnishd -C refused:\n{stderr}\n{vcl}");
    assert!(stderr.is_empty(), "{stderr}");
    let broken = vcl.replace("unset req.http.Accept-Encoding;", "bogus;");
    let (ok, stderr) = run_check(VCL_CHECK, &broken, dir.path());
    assert!(!ok);
    assert!(stderr.contains("Symbol not found: 'bogus'"), "{stderr}");
}

#[test]
fn logrotate_accepts_the_rendered_config() {
    if !have("logrotate", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = nginx::render_logrotate(&full_stack(), &templates()).unwrap();
    let (ok, stderr) = run_check(LOGROTATE_CHECK, &text, dir.path());
    assert!(ok, "logrotate refused:\n{stderr}\n{text}");
    let (ok, stderr) = run_check(
        LOGROTATE_CHECK,
        &text.replace("daily", "every-blue-moon"),
        dir.path(),
    );
    assert!(!ok);
    assert!(stderr.contains("keyword 'every'"), "{stderr}");
}
