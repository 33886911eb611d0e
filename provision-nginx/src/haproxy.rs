//! HAProxy: one backend over every Plone client, checked, with stats and the runtime API.

use serde::Serialize;

use crate::error::FrontendError;
use crate::settings::FrontendSettings;
use provision_core::template::Templates;

/// The live configuration; Debian's unit reads it.
pub const CONFIG_PATH: &str = "/etc/haproxy/haproxy.cfg";
/// The backend listing the Plone clients; runtime API commands name servers as
/// `plone_instances/<server>`.
pub const BACKEND: &str = "plone_instances";
pub(crate) const TEMPLATE: &str = "frontend/haproxy.cfg.j2";

#[derive(Debug, Serialize)]
pub(crate) struct Context {
    bind: String,
    global_max_connections: u32,
    default_max_connections: u32,
    stats_socket: String,
    stats_socket_level: String,
    retries: u32,
    connect_timeout: String,
    client_timeout: String,
    server_timeout: String,
    queue_timeout: String,
    http_request_timeout: String,
    stats: Option<Stats>,
    backend: &'static str,
    balance: String,
    check_method: String,
    check_url: String,
    inter: u64,
    fastinter: u64,
    downinter: u64,
    rise: u32,
    fall: u32,
    sticky_sessions: bool,
    servers: Vec<Server>,
}

#[derive(Debug, Serialize)]
struct Stats {
    url: String,
    /// `user:password`, quoted for HAProxy.
    auth: String,
}

#[derive(Debug, Serialize)]
struct Server {
    name: String,
    address: String,
    maxconn: u32,
}

/// Quote a word for HAProxy's configuration parser: double quotes, with `\`, `"` and `$`
/// escaped (environment variables expand inside double quotes).
pub(crate) fn quote(word: &str) -> String {
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('"');
    for c in word.chars() {
        if matches!(c, '\\' | '"' | '$') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// `host:port`, with an IPv6 address in brackets.
pub(crate) fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

pub(crate) fn context(settings: &FrontendSettings) -> Context {
    let h = &settings.haproxy;
    let stats = match (&h.stats_password, h.enable_stats) {
        (Some(password), true) => Some(Stats {
            url: h.stats_url.clone(),
            auth: quote(&format!("{}:{}", h.stats_user, password.0)),
        }),
        _ => None,
    };
    Context {
        bind: host_port("127.0.0.1", settings.haproxy_port),
        global_max_connections: h.global_max_connections,
        default_max_connections: h.default_max_connections,
        stats_socket: h.stats_socket_path.clone(),
        stats_socket_level: h.stats_socket_level.clone(),
        retries: h.retries,
        connect_timeout: h.connect_timeout.clone(),
        client_timeout: h.client_timeout.clone(),
        server_timeout: h.server_timeout.clone(),
        queue_timeout: h.queue_timeout.clone(),
        http_request_timeout: h.http_request_timeout.clone(),
        stats,
        backend: BACKEND,
        balance: h.balance.clone(),
        check_method: h.health_check_method.clone(),
        check_url: h.health_check_url.clone(),
        inter: h.check_interval,
        fastinter: (h.check_interval / 10).max(1),
        downinter: (h.check_interval / 2).max(1),
        rise: h.rise,
        fall: h.fall,
        sticky_sessions: h.sticky_sessions,
        servers: settings
            .backends
            .iter()
            .map(|b| Server {
                name: b.name.clone(),
                address: host_port(&b.address, b.port),
                maxconn: b.maxconn,
            })
            .collect(),
    }
}

/// `/etc/haproxy/haproxy.cfg` for these settings.
pub fn render_config(
    settings: &FrontendSettings,
    templates: &Templates,
) -> Result<String, FrontendError> {
    settings.validate()?;
    Ok(templates.render(TEMPLATE, &context(settings))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_what_haproxy_interprets() {
        assert_eq!(quote("stats:pa ss"), r#""stats:pa ss""#);
        assert_eq!(quote(r#"a"b\c$HOME#'"#), r#""a\"b\\c\$HOME#'""#);
    }

    #[test]
    fn ipv6_addresses_get_brackets() {
        assert_eq!(host_port("fd00::11", 8081), "[fd00::11]:8081");
        assert_eq!(host_port("10.0.0.11", 8081), "10.0.0.11:8081");
        assert_eq!(host_port("app1.internal", 8081), "app1.internal:8081");
    }
}
