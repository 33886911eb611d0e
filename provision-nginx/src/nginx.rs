//! nginx: the public site, with the VirtualHostMonster rewrite, sub-sites, the raw hooks, TLS,
//! and the way to check a candidate site with `nginx -t` before it goes live.

use serde::Serialize;

use crate::error::FrontendError;
use crate::haproxy::host_port;
use crate::settings::FrontendSettings;
use crate::validate::parse_haproxy_time;
use provision_core::template::Templates;

/// The site, and the link that enables it.
pub const SITE_PATH: &str = "/etc/nginx/sites-available/plone";
pub const SITE_LINK: &str = "/etc/nginx/sites-enabled/plone";
/// Debian's default site. It also claims `default_server` on port 80, so it is emptied (it
/// stays enabled by Debian's link, with nothing in it).
pub const DEBIAN_DEFAULT_SITE: &str = "/etc/nginx/sites-available/default";
pub const DEBIAN_DEFAULT_SITE_CONTENT: &str = "# Managed by provision: Debian's default site is \
     off; the Plone site is /etc/nginx/sites-available/plone.\n";
pub const LOGROTATE_PATH: &str = "/etc/logrotate.d/nginx";
/// The stub_status page, answered to this host only.
pub const STATUS_URL: &str = "/_main_status_";

pub(crate) const SITE_TEMPLATE: &str = "frontend/nginx-site.conf.j2";
pub(crate) const LOGROTATE_TEMPLATE: &str = "frontend/nginx-logrotate.j2";

#[derive(Debug, Serialize)]
pub(crate) struct SiteContext {
    balancer: String,
    cache: Option<String>,
    upstream: &'static str,
    additional_servers: Option<String>,
    client_max_body_size: String,
    ssi: bool,
    /// Seconds nginx waits for an answer: HAProxy's `timeout server`.
    read_timeout: u64,
    servers: Vec<Server>,
}

#[derive(Debug, Serialize)]
struct Server {
    comment: String,
    listen: Vec<String>,
    server_name: String,
    tls: Option<TlsContext>,
    /// Path below the Zope root that the host's root maps to (`Plone`, `Plone/en`).
    vhm_path: String,
    stats_url: Option<String>,
    status_url: Option<&'static str>,
    raw: Vec<Raw>,
}

#[derive(Debug, Serialize)]
struct TlsContext {
    certificate: String,
    key: String,
}

/// A raw hook, with the attribute it came from.
#[derive(Debug, Serialize)]
struct Raw {
    key: String,
    text: String,
}

fn raw(key: &str, text: Option<&String>) -> Option<Raw> {
    text.map(|t| t.trim_end())
        .filter(|t| !t.trim().is_empty())
        .map(|t| Raw {
            key: key.to_string(),
            text: t.to_string(),
        })
}

pub(crate) fn site_context(settings: &FrontendSettings) -> SiteContext {
    let n = &settings.nginx;
    let site = settings.site_id.trim_matches('/');
    let stats_url = settings
        .haproxy
        .enable_stats
        .then(|| settings.haproxy.stats_url.clone());
    let listen = |port: u16, options: &str| -> Vec<String> {
        settings
            .listen_addresses
            .iter()
            .map(|a| format!("{}{options}", host_port(a, port)))
            .collect()
    };
    let tls = settings.tls.as_ref().map(|t| TlsContext {
        certificate: t.certificate.clone(),
        key: t.key.clone(),
    });
    let mut servers = vec![Server {
        comment: format!("The site {site}, for any host name no other server claims."),
        listen: listen(settings.http_port, " default_server"),
        server_name: "_".to_string(),
        tls: None,
        vhm_path: site.to_string(),
        stats_url: stats_url.clone(),
        status_url: Some(STATUS_URL),
        raw: [
            raw("nginx_plone.default_config", n.default_config.as_ref()),
            raw(
                "nginx_plone.additional_config",
                n.additional_config.as_ref(),
            ),
        ]
        .into_iter()
        .flatten()
        .collect(),
    }];
    for (host, path) in &settings.subsites {
        servers.push(Server {
            comment: format!("Sub-site {host}."),
            listen: listen(settings.http_port, ""),
            server_name: host.clone(),
            tls: None,
            vhm_path: format!("{site}/{}", path.trim_matches('/')),
            stats_url: None,
            status_url: None,
            raw: [
                raw(
                    "nginx_plone.additional_config",
                    n.additional_config.as_ref(),
                ),
                raw(
                    &format!("plone_instances.subsite_config.{host}"),
                    settings.subsite_config.get(host),
                ),
            ]
            .into_iter()
            .flatten()
            .collect(),
        });
    }
    if let Some(tls) = &tls {
        let https: Vec<Server> = servers
            .iter()
            .map(|s| {
                let default = s.server_name == "_";
                Server {
                    comment: format!("{} (HTTPS)", s.comment.trim_end_matches('.')),
                    listen: listen(
                        settings.https_port,
                        if default {
                            " ssl http2 default_server"
                        } else {
                            " ssl http2"
                        },
                    ),
                    server_name: s.server_name.clone(),
                    tls: Some(TlsContext {
                        certificate: tls.certificate.clone(),
                        key: tls.key.clone(),
                    }),
                    vhm_path: s.vhm_path.clone(),
                    stats_url: s.stats_url.clone(),
                    status_url: None,
                    raw: if default {
                        [
                            raw(
                                "nginx_plone.default_ssl_config",
                                n.default_ssl_config.as_ref(),
                            ),
                            raw(
                                "nginx_plone.additional_ssl_config",
                                n.additional_ssl_config.as_ref(),
                            ),
                        ]
                        .into_iter()
                        .flatten()
                        .collect()
                    } else {
                        [
                            raw(
                                "nginx_plone.additional_ssl_config",
                                n.additional_ssl_config.as_ref(),
                            ),
                            raw(
                                &format!("plone_instances.subsite_config.{}", s.server_name),
                                settings.subsite_config.get(&s.server_name),
                            ),
                        ]
                        .into_iter()
                        .flatten()
                        .collect()
                    },
                }
            })
            .collect();
        servers.extend(https);
    }
    let read_timeout = parse_haproxy_time(&settings.haproxy.server_timeout)
        .map(|d| d.as_secs().max(1))
        .unwrap_or(900);
    SiteContext {
        balancer: host_port("127.0.0.1", settings.haproxy_port),
        cache: settings
            .varnish
            .as_ref()
            .map(|_| host_port("127.0.0.1", n.proxy_port)),
        upstream: if settings.varnish.is_some() {
            "plone_cache"
        } else {
            "plone_balancer"
        },
        additional_servers: n
            .additional_servers
            .as_deref()
            .map(str::trim_end)
            .filter(|t| !t.trim().is_empty())
            .map(str::to_string),
        client_max_body_size: n.client_max_body_size.clone(),
        ssi: n.enable_ssi,
        read_timeout,
        servers,
    }
}

/// The site file (`sites-available/plone`) for these settings.
pub fn render_site(
    settings: &FrontendSettings,
    templates: &Templates,
) -> Result<String, FrontendError> {
    settings.validate()?;
    Ok(templates.render(SITE_TEMPLATE, &site_context(settings))?)
}

/// `/etc/logrotate.d/nginx`: daily, keeping `log_retention_days`.
pub fn render_logrotate(
    settings: &FrontendSettings,
    templates: &Templates,
) -> Result<String, FrontendError> {
    settings.validate()?;
    Ok(templates.render(
        LOGROTATE_TEMPLATE,
        &serde_json::json!({ "days": settings.nginx.log_retention_days }),
    )?)
}

/// A shell command that checks a candidate site file (`{}`) with `nginx -t`, in the context it
/// will live in: a copy of `<conf_dir>/nginx.conf`, written beside it so that its relative
/// includes still resolve, whose `include <conf_dir>/sites-enabled/*;` is pointed at a
/// temporary directory holding every other enabled site and the candidate. The live site and
/// Debian's `default` are left out (the candidate replaces the first; the second is emptied).
/// Fails with nginx's message, which names the candidate's line; leaves nothing behind.
///
/// `conf_dir` is `/etc/nginx` on a host; it must be a plain path (tests pass a copy).
pub fn site_check_command(conf_dir: &str) -> String {
    let dir = conf_dir.trim_end_matches('/');
    assert!(
        dir.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)),
        "not a plain path: {dir}"
    );
    let enabled = format!("{dir}/sites-enabled");
    // In double quotes: `$t` expands, the backslashes reach sed unchanged.
    let sed = format!(
        "\"s#^\\([[:space:]]*include[[:space:]]\\{{1,\\}}\\){}/\\*;#\\1$t/sites/*;#\"",
        enabled.replace('.', "\\.")
    );
    // One brace group, so that it is one step of the caller's `&&` chain; `nginx -t` sits in
    // an `&&`/`||` list so that the cleanup runs even under `set -e`.
    [
        format!("{{ if t=$(mktemp -d {dir}/.provision-check.XXXXXX); then"),
        "mkdir \"$t/sites\";".to_string(),
        format!("for f in {enabled}/*; do"),
        "case \"${f##*/}\" in plone|default) continue;; esac;".to_string(),
        "[ ! -e \"$f\" ] || ln -s \"$(readlink -f \"$f\")\" \"$t/sites/${f##*/}\";".to_string(),
        "done;".to_string(),
        "ln -s \"$(readlink -f {})\" \"$t/sites/plone\";".to_string(),
        format!("sed {sed} {dir}/nginx.conf > \"$t.conf\";"),
        "if grep -q \"$t/sites/\" \"$t.conf\";".to_string(),
        "then nginx -t -q -c \"$t.conf\" && rc=0 || rc=$?;".to_string(),
        format!(
            "else echo \"provision: {dir}/nginx.conf does not include {enabled}/*; \
             cannot check the site\" >&2; rc=1; fi;"
        ),
        "rm -rf \"$t\" \"$t.conf\"; [ $rc -eq 0 ];".to_string(),
        "else false; fi; }".to_string(),
    ]
    .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_command_has_one_placeholder() {
        let command = site_check_command("/etc/nginx");
        assert_eq!(command.matches("{}").count(), 1, "{command}");
    }
}
