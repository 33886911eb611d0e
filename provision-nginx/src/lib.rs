//! The `lb` layer: nginx in front, optionally Varnish, then HAProxy over every Plone client
//! (the cookbook's nginx.rb, nginx-ssl.rb, varnish.rb and haproxy.rb).
//!
//! [`resources`] turns [`FrontendSettings`] into the resources of one `lb` host. Every config
//! file is checked on the host by the program that reads it (`haproxy -c`, `nginx -t`,
//! `varnishd -C`, `logrotate -d`) before it replaces the live one, and applied by a reload:
//! adding or removing an instance host drops no request. [`haproxy_runtime`] builds and parses
//! the runtime API commands that drain a client during a rolling restart.

mod error;
pub mod haproxy;
pub mod haproxy_runtime;
pub mod nginx;
mod settings;
mod validate;
pub mod varnish;

pub use error::FrontendError;
pub use settings::{
    Backend, FrontendSettings, HaproxySettings, NginxSettings, Password, Tls, VarnishSettings,
};
pub use validate::parse_haproxy_time;

use provision_core::phase::Phase;
use provision_core::resource::{File, Packages, Resource, Service, Symlink, Unit};
use provision_core::template::{TemplateSource, Templates};

pub const TEMPLATES: &[TemplateSource] = &[
    TemplateSource {
        name: haproxy::TEMPLATE,
        source: include_str!("templates/haproxy.cfg.j2"),
        example: r#"{
            "bind": "127.0.0.1:8080",
            "global_max_connections": 80000,
            "default_max_connections": 80000,
            "stats_socket": "/run/haproxy/admin.sock",
            "stats_socket_level": "admin",
            "retries": 3,
            "connect_timeout": "10s",
            "client_timeout": "60s",
            "server_timeout": "900s",
            "queue_timeout": "120s",
            "http_request_timeout": "30s",
            "stats": {"url": "/balancer/stats", "auth": "\"stats:secret\""},
            "backend": "plone_instances",
            "balance": "leastconn",
            "check_method": "GET",
            "check_url": "/ok",
            "inter": 10000,
            "fastinter": 1000,
            "downinter": 5000,
            "rise": 1,
            "fall": 5,
            "sticky_sessions": true,
            "servers": [
                {"name": "app1-1", "address": "10.0.0.11:8081", "maxconn": 2},
                {"name": "app1-2", "address": "10.0.0.11:8082", "maxconn": 2}
            ]
        }"#,
    },
    TemplateSource {
        name: nginx::SITE_TEMPLATE,
        source: include_str!("templates/nginx-site.conf.j2"),
        example: r#"{
            "balancer": "127.0.0.1:8080",
            "cache": "127.0.0.1:6081",
            "upstream": "plone_cache",
            "additional_servers": "server {\n    listen 8000;\n    return 204;\n}",
            "client_max_body_size": "128m",
            "ssi": true,
            "read_timeout": 900,
            "servers": [
                {
                    "comment": "The site Plone.",
                    "listen": ["0.0.0.0:80 default_server"],
                    "server_name": "_",
                    "tls": null,
                    "vhm_path": "Plone",
                    "stats_url": "/balancer/stats",
                    "status_url": "/_main_status_",
                    "raw": [{"key": "nginx_plone.default_config", "text": "add_header X-Frame-Options SAMEORIGIN;"}]
                },
                {
                    "comment": "Sub-site en.example.org (HTTPS)",
                    "listen": ["0.0.0.0:443 ssl http2"],
                    "server_name": "en.example.org",
                    "tls": {"certificate": "/etc/ssl/site.pem", "key": "/etc/ssl/private/site.key"},
                    "vhm_path": "Plone/en",
                    "stats_url": null,
                    "status_url": null,
                    "raw": []
                }
            ]
        }"#,
    },
    TemplateSource {
        name: nginx::LOGROTATE_TEMPLATE,
        source: include_str!("templates/nginx-logrotate.j2"),
        example: r#"{"days": 14}"#,
    },
    TemplateSource {
        name: varnish::VCL_TEMPLATE,
        source: include_str!("templates/varnish.vcl.j2"),
        example: r#"{
            "backend_host": "127.0.0.1",
            "backend_port": 8080,
            "first_byte_timeout_ms": 900000,
            "purge_acl": ["127.0.0.1", "::1", "10.0.0.11"],
            "kept_cookies": "__ac|statusmessages",
            "uncached_urls": "/(login|logout)",
            "grace": 60,
            "default_ttl": 300
        }"#,
    },
    TemplateSource {
        name: varnish::DROP_IN_TEMPLATE,
        source: include_str!("templates/varnish-service.conf.j2"),
        example: r#"{
            "listen": ["127.0.0.1:6081", "10.0.0.5:6081"],
            "private_listen": true,
            "vcl_path": "/etc/varnish/default.vcl",
            "storage": "malloc,256m"
        }"#,
    },
];

/// Checks `haproxy.cfg` before it goes live (`{}` is the candidate).
pub const HAPROXY_CHECK: &str = "haproxy -c -f {} >/dev/null";
/// Compiles a candidate VCL in a scratch work directory, as root (the jail's user could not
/// read the candidate, which is private until it is in place). varnishd prints the generated
/// C on success, so only a failure's output is shown.
pub const VCL_CHECK: &str = "{ out= vd=; vd=$(mktemp -d) && out=$(varnishd -C -j none -n \"$vd\" -f {} 2>&1) \
     && rc=0 || { rc=$?; printf '%s\\n' \"$out\" >&2; }; rm -rf \"$vd\"; [ $rc -eq 0 ]; }";
/// Checks a candidate logrotate file; `-d` changes nothing but is chatty, so only the errors
/// of a failure are shown.
pub const LOGROTATE_CHECK: &str = "{ out=$(logrotate -d {} 2>&1) \
     || { printf '%s\\n' \"$out\" | grep -i error >&2; false; }; }";

/// The packages of an `lb` host.
pub fn packages(settings: &FrontendSettings) -> Packages {
    let mut names = vec!["haproxy", "nginx", "socat", "logrotate"];
    if settings.varnish.is_some() {
        names.push("varnish");
    }
    Packages::new(names)
}

/// The resources of an `lb` host for one phase: its packages at setup; at configure the config
/// files (each checked before it goes live), then the services, which reload when a file they
/// read changed (Varnish restarts only when where it listens changed).
pub fn resources(
    settings: &FrontendSettings,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, FrontendError> {
    settings.validate()?;
    let mut resources: Vec<Resource> = Vec::new();
    match phase {
        Phase::Setup => resources.push(packages(settings).into()),
        Phase::Configure => {
            let haproxy_cfg = File::new(
                haproxy::CONFIG_PATH,
                haproxy::render_config(settings, templates)?,
            )
            // It holds the statistics password.
            .owner("root", "haproxy")
            .mode(0o640)
            .validate(HAPROXY_CHECK);
            let debian_default = File::new(
                nginx::DEBIAN_DEFAULT_SITE,
                nginx::DEBIAN_DEFAULT_SITE_CONTENT,
            );
            let site = File::new(nginx::SITE_PATH, nginx::render_site(settings, templates)?)
                .validate(nginx::site_check_command("/etc/nginx"));
            let link = Symlink::new(nginx::SITE_LINK, nginx::SITE_PATH);
            let logrotate = File::new(
                nginx::LOGROTATE_PATH,
                nginx::render_logrotate(settings, templates)?,
            )
            .validate(LOGROTATE_CHECK);

            let haproxy_service =
                Service::running("haproxy").reload_on(Resource::from(haproxy_cfg.clone()).id());
            let nginx_service = Service::running("nginx")
                .reload_on(Resource::from(debian_default.clone()).id())
                .reload_on(Resource::from(site.clone()).id())
                .reload_on(Resource::from(link.clone()).id());
            resources.extend([
                haproxy_cfg.into(),
                debian_default.into(),
                site.into(),
                link.into(),
                logrotate.into(),
            ]);
            let varnish_service = if settings.varnish.is_some() {
                let vcl = File::new(varnish::VCL_PATH, varnish::render_vcl(settings, templates)?)
                    .validate(VCL_CHECK);
                // A drop-in, not a unit: `systemd-analyze verify` wants a whole unit.
                let drop_in = Unit::new(
                    varnish::DROP_IN_UNIT,
                    varnish::render_drop_in(settings, templates)?,
                )
                .without_verify();
                let service = Service::running("varnish")
                    .restart_on(Resource::from(drop_in.clone()).id())
                    .reload_on(Resource::from(vcl.clone()).id());
                resources.extend([vcl.into(), drop_in.into()]);
                service
            } else {
                // Debian starts it on install, listening everywhere; off means stopped.
                Service::stopped("varnish")
            };
            // HAProxy first: nginx and Varnish send to it.
            resources.extend([
                haproxy_service.into(),
                varnish_service.into(),
                nginx_service.into(),
            ]);
        }
        Phase::Deploy => {}
    }
    Ok(resources)
}
