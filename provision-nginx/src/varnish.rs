//! Varnish (optional): the Plone VCL, and where varnishd listens.

use serde::Serialize;

use crate::error::FrontendError;
use crate::haproxy::host_port;
use crate::settings::FrontendSettings;
use crate::validate::parse_haproxy_time;
use provision_core::shell::quote;
use provision_core::template::Templates;

/// The VCL Debian's unit loads.
pub const VCL_PATH: &str = "/etc/varnish/default.vcl";
/// A drop-in for Debian's `varnish.service`: where varnishd listens, and its storage.
pub const DROP_IN_UNIT: &str = "varnish.service.d/provision.conf";

pub(crate) const VCL_TEMPLATE: &str = "frontend/varnish.vcl.j2";
pub(crate) const DROP_IN_TEMPLATE: &str = "frontend/varnish-service.conf.j2";

/// The cookies Plone reads; Varnish drops every other one before it looks at the request.
const KEPT_COOKIES: &str = "__ac|_ZopeId|__cp|statusmessages|I18N_LANGUAGE|auth_token";
/// Pages never cached (the cookbook's login and logout URLs).
const UNCACHED_URLS: &str =
    "/(@@)?(login|logout|logged_out|login_form|require_login|mail_password|passwordreset)";

#[derive(Debug, Serialize)]
pub(crate) struct VclContext {
    backend_host: String,
    backend_port: u16,
    first_byte_timeout_ms: u128,
    purge_acl: Vec<String>,
    kept_cookies: &'static str,
    uncached_urls: &'static str,
    grace: u32,
    default_ttl: u32,
}

#[derive(Debug, Serialize)]
pub(crate) struct DropInContext {
    listen: Vec<String>,
    private_listen: bool,
    vcl_path: &'static str,
    storage: String,
}

/// The addresses that may PURGE: loopback and every instance host, each once, in stack order.
fn purge_acl(settings: &FrontendSettings) -> Vec<String> {
    let mut acl = vec!["127.0.0.1".to_string(), "::1".to_string()];
    for b in &settings.backends {
        let address = b.address.trim_start_matches('[').trim_end_matches(']');
        if !acl.iter().any(|a| a == address) {
            acl.push(address.to_string());
        }
    }
    acl
}

pub(crate) fn vcl_context(settings: &FrontendSettings) -> VclContext {
    let varnish = settings.varnish.clone().unwrap_or_default();
    VclContext {
        backend_host: "127.0.0.1".to_string(),
        backend_port: settings.haproxy_port,
        // As long as HAProxy lets a client take, so that Varnish does not give up first.
        first_byte_timeout_ms: parse_haproxy_time(&settings.haproxy.server_timeout)
            .map(|d| d.as_millis())
            .unwrap_or(900_000),
        purge_acl: purge_acl(settings),
        kept_cookies: KEPT_COOKIES,
        uncached_urls: UNCACHED_URLS,
        grace: varnish.grace,
        default_ttl: varnish.default_ttl,
    }
}

pub(crate) fn drop_in_context(settings: &FrontendSettings) -> DropInContext {
    let varnish = settings.varnish.clone().unwrap_or_default();
    let port = settings.nginx.proxy_port;
    let mut listen = vec![host_port("127.0.0.1", port)];
    let private = settings.private_address.as_str();
    let private_listen = !matches!(private, "127.0.0.1" | "localhost" | "::1");
    if private_listen {
        listen.push(host_port(private, port));
    }
    DropInContext {
        listen,
        private_listen,
        vcl_path: VCL_PATH,
        storage: varnish.storage,
    }
}

/// `/etc/varnish/default.vcl` for these settings (Varnish's settings default when it is off).
pub fn render_vcl(
    settings: &FrontendSettings,
    templates: &Templates,
) -> Result<String, FrontendError> {
    settings.validate()?;
    Ok(templates.render(VCL_TEMPLATE, &vcl_context(settings))?)
}

/// The drop-in for `varnish.service`.
pub fn render_drop_in(
    settings: &FrontendSettings,
    templates: &Templates,
) -> Result<String, FrontendError> {
    settings.validate()?;
    Ok(templates.render(DROP_IN_TEMPLATE, &drop_in_context(settings))?)
}

/// Shell commands (run on the `lb` host) that ban every cached object whose URL matches one of
/// `patterns` (regular expressions; the cookbook's `varnish_purge_urls`, default `.*`).
pub fn ban_commands<S: AsRef<str>>(patterns: &[S]) -> Vec<String> {
    patterns
        .iter()
        .map(|p| format!("varnishadm ban obj.http.x-url '~' {}", quote(p.as_ref())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Backend;

    #[test]
    fn the_purge_acl_lists_each_instance_host_once() {
        let mut s = FrontendSettings::default();
        for (name, address) in [
            ("a-1", "10.0.0.11"),
            ("a-2", "10.0.0.11"),
            ("b-1", "fd00::12"),
        ] {
            s.backends.push(Backend {
                name: name.to_string(),
                address: address.to_string(),
                port: 8081,
                maxconn: 2,
            });
        }
        assert_eq!(purge_acl(&s), ["127.0.0.1", "::1", "10.0.0.11", "fd00::12"]);
    }

    #[test]
    fn ban_commands_quote_the_pattern() {
        assert_eq!(
            ban_commands(&[".*", "/news/.*"]),
            [
                "varnishadm ban obj.http.x-url '~' '.*'",
                "varnishadm ban obj.http.x-url '~' '/news/.*'"
            ]
        );
    }
}
