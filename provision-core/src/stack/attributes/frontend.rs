//! `nginx_plone`, `varnish_plone` and `haproxy`: the `lb` layer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::stack::secrets::SecretString;

/// `nginx_plone`: the nginx site in front of Varnish and HAProxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NginxPlone {
    /// Server-side includes (`ssi on`) on proxied pages. Default `false`.
    pub enable_ssi: bool,
    /// Raw nginx configuration at `http` level, typically extra `server` blocks. Default none.
    pub additional_servers: Option<String>,
    /// Raw lines added to every plain-HTTP server block. Default none. Also accepted as
    /// `additional_configuration` (the training text's name).
    #[serde(alias = "additional_configuration")]
    pub additional_config: Option<String>,
    /// Raw lines added to every HTTPS server block. Default none.
    pub additional_ssl_config: Option<String>,
    /// Raw lines added to the default plain-HTTP server block only. Default none.
    pub default_config: Option<String>,
    /// Raw lines added to the default HTTPS server block only. Default none.
    pub default_ssl_config: Option<String>,
    /// The port nginx proxies to: Varnish. Default 6081.
    pub proxy_port: u16,
    /// Days of nginx logs to keep. Default 14.
    pub log_retention_days: u32,
    /// Reload nginx on every configure, even when nothing changed. Default `false`.
    pub force_reload: bool,
    /// The largest request body (upload) nginx accepts. Default `"128m"`.
    pub client_max_body_size: String,
}

impl Default for NginxPlone {
    fn default() -> Self {
        NginxPlone {
            enable_ssi: false,
            additional_servers: None,
            additional_config: None,
            additional_ssl_config: None,
            default_config: None,
            default_ssl_config: None,
            proxy_port: 6081,
            log_retention_days: 14,
            force_reload: false,
            client_max_body_size: "128m".to_string(),
        }
    }
}

/// `varnish_plone`: the Varnish cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct VarnishPlone {
    /// Put Varnish between nginx and HAProxy on the `lb` hosts. Default false. (The cookbook
    /// always installed Varnish; here it is a choice, and nginx proxies straight to HAProxy
    /// without it.)
    pub enable: bool,
    /// Seconds Varnish may serve stale content while it fetches a fresh copy. Default 60.
    pub grace: u32,
    /// Seconds to cache anonymous responses that carry no Cache-Control. Default 300.
    pub default_ttl: u32,
}

impl Default for VarnishPlone {
    fn default() -> Self {
        VarnishPlone {
            enable: false,
            grace: 60,
            default_ttl: 300,
        }
    }
}

/// `haproxy`: the balancer in front of every Plone client. The cookbook's overrides of the
/// OpsWorks HAProxy layer, plus the OpsWorks keys it kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Haproxy {
    /// The balancing algorithm. Default `"leastconn"` (OpsWorks: `roundrobin`).
    pub balance: String,
    /// Connection retries before a request fails. Default 3.
    pub retries: u32,
    /// Milliseconds between health checks of a client (`inter`); `fastinter` is a tenth of it
    /// and `downinter` half. Default 10000 (OpsWorks: `"10s"`).
    pub check_interval: u64,
    /// `timeout connect`. Default `"10s"`.
    pub connect_timeout: String,
    /// `timeout client`. Default `"60s"`.
    pub client_timeout: String,
    /// `timeout server`: the longest a client may take to answer. Default `"900s"`
    /// (OpsWorks: `"60s"`).
    pub server_timeout: String,
    /// `timeout queue`. Default `"120s"`.
    pub queue_timeout: String,
    /// `timeout http-request`. Default `"30s"`.
    pub http_request_timeout: String,
    /// `maxconn` of the HAProxy process. Default: as many as the host's open-file limit
    /// allows (HAProxy needs two descriptors per connection), at most 80000 (OpsWorks'
    /// value). A value the host cannot give is an error that says so.
    pub global_max_connections: Option<u32>,
    /// `maxconn` of the `defaults` section. Default: `global_max_connections`.
    pub default_max_connections: Option<u32>,
    /// Successful checks before a client is up again. Default 1.
    pub rise: u32,
    /// Failed checks before a client is down. Default 5.
    pub fall: u32,
    /// Sticky sessions on the `__ac` login cookie (also enabled by
    /// `plone_instances.sticky_sessions`). Default `false`.
    pub sticky_sessions: bool,
    /// Serve HAProxy's statistics page (behind a password). Default `true`.
    pub enable_stats: bool,
    /// The statistics page's path. Default `"/balancer/stats"` (OpsWorks: `/haproxy?stats`).
    pub stats_url: String,
    /// The statistics page's user. Default `"stats"` (OpsWorks: `opsworks`).
    pub stats_user: String,
    /// The statistics page's password; required when `enable_stats` is on. Default none;
    /// better kept in the secrets file as `haproxy_stats_password` (generated into it when
    /// missing).
    pub stats_password: Option<SecretString>,
    /// The path HAProxy checks on each client. Default `"/ok"`: Plone's cheap, uncached `ok`
    /// view, which needs Products.CMFPlone 5.1 or later. The cookbook checked
    /// `/misc_/CMFPlone/plone_icon` (with `HEAD`); set that for older sites.
    pub health_check_url: String,
    /// The HTTP method of the health check. Default `"GET"` (the cookbook's was `HEAD`, on
    /// its icon URL).
    pub health_check_method: String,
    /// The runtime API socket, used to drain clients during rolling restarts. Default
    /// `"/run/haproxy/admin.sock"` (OpsWorks: `/tmp/haproxy.sock`).
    pub stats_socket_path: String,
    /// The runtime API level; draining needs `admin`. Default `"admin"` (OpsWorks: none).
    pub stats_socket_level: String,
}

impl Default for Haproxy {
    fn default() -> Self {
        Haproxy {
            balance: "leastconn".to_string(),
            retries: 3,
            check_interval: 10_000,
            connect_timeout: "10s".to_string(),
            client_timeout: "60s".to_string(),
            server_timeout: "900s".to_string(),
            queue_timeout: "120s".to_string(),
            http_request_timeout: "30s".to_string(),
            global_max_connections: None,
            default_max_connections: None,
            rise: 1,
            fall: 5,
            sticky_sessions: false,
            enable_stats: true,
            stats_url: "/balancer/stats".to_string(),
            stats_user: "stats".to_string(),
            stats_password: None,
            health_check_url: "/ok".to_string(),
            health_check_method: "GET".to_string(),
            stats_socket_path: "/run/haproxy/admin.sock".to_string(),
            stats_socket_level: "admin".to_string(),
        }
    }
}
