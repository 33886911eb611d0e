//! What the frontend is built from: the `haproxy.*`, `nginx_plone.*` and `varnish_plone.*`
//! attributes with the cookbook's defaults, the site's `site_id` and `subsites`, and the list of
//! Plone clients HAProxy balances over. Plain values, filled from the stack by the caller.

use std::collections::BTreeMap;
use std::fmt;

/// Everything the frontend of one `lb` host needs.
#[derive(Debug, Clone, PartialEq)]
pub struct FrontendSettings {
    /// `plone_instances.site_id`: the Plone site the VirtualHostMonster rewrite points at.
    /// Default `"Plone"`.
    pub site_id: String,
    /// `plone_instances.subsites`: host name → path of the sub-site below the site. Each gets
    /// its own nginx `server`. Default none.
    pub subsites: BTreeMap<String, String>,
    /// `plone_instances.subsite_config`: host name → raw nginx lines for that sub-site's
    /// servers. Default none.
    pub subsite_config: BTreeMap<String, String>,
    /// Every client of every `plone_instances` host, in stack order.
    pub backends: Vec<Backend>,
    /// This host's private address. Varnish also listens there so the Plone clients can send
    /// it PURGE requests. Default `"127.0.0.1"` (Varnish on loopback only).
    pub private_address: String,
    /// Addresses nginx listens on for visitors. Default `["0.0.0.0", "[::]"]`.
    pub listen_addresses: Vec<String>,
    /// nginx's plain HTTP port. Default 80.
    pub http_port: u16,
    /// nginx's HTTPS port, used when `tls` is set. Default 443.
    pub https_port: u16,
    /// HAProxy's port on 127.0.0.1, behind nginx and Varnish. Default 8080.
    pub haproxy_port: u16,
    /// Serve HTTPS too, with this certificate and key. Default none.
    pub tls: Option<Tls>,
    pub haproxy: HaproxySettings,
    pub nginx: NginxSettings,
    /// `varnish_plone.*`; `None` when Varnish is off and nginx proxies straight to HAProxy.
    /// Default none.
    pub varnish: Option<VarnishSettings>,
}

impl Default for FrontendSettings {
    fn default() -> Self {
        FrontendSettings {
            site_id: "Plone".to_string(),
            subsites: BTreeMap::new(),
            subsite_config: BTreeMap::new(),
            backends: Vec::new(),
            private_address: "127.0.0.1".to_string(),
            listen_addresses: vec!["0.0.0.0".to_string(), "[::]".to_string()],
            http_port: 80,
            https_port: 443,
            haproxy_port: 8080,
            tls: None,
            haproxy: HaproxySettings::default(),
            nginx: NginxSettings::default(),
            varnish: None,
        }
    }
}

/// One Plone client, one `server` line of HAProxy's backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `<host>-<n>`: the server's name in HAProxy, used to drain it through the runtime API.
    pub name: String,
    /// The address HAProxy connects to: the instance host's private address.
    pub address: String,
    /// The client's port (8080 + n).
    pub port: u16,
    /// Concurrent requests HAProxy sends it: the client's `zserver_threads` (default 2).
    pub maxconn: u32,
}

/// A certificate and its key, as paths on the `lb` host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificate chain (the certificate first, then intermediates).
    pub certificate: String,
    /// PEM private key.
    pub key: String,
}

/// A password that `Debug` does not print.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(********)")
    }
}

/// `haproxy.*`: the balancer in front of every Plone client.
#[derive(Debug, Clone, PartialEq)]
pub struct HaproxySettings {
    /// The balancing algorithm. Default `"leastconn"`.
    pub balance: String,
    /// Connection retries before a request fails. Default 3.
    pub retries: u32,
    /// Milliseconds between health checks (`inter`); `fastinter` is a tenth of it and
    /// `downinter` half. Default 10000.
    pub check_interval: u64,
    /// `timeout connect`. Default `"10s"`.
    pub connect_timeout: String,
    /// `timeout client`. Default `"60s"`.
    pub client_timeout: String,
    /// `timeout server`: the longest a client may take to answer. Default `"900s"`.
    pub server_timeout: String,
    /// `timeout queue`. Default `"120s"`.
    pub queue_timeout: String,
    /// `timeout http-request`. Default `"30s"`.
    pub http_request_timeout: String,
    /// `maxconn` of the process. Default 80000.
    pub global_max_connections: u32,
    /// `maxconn` of the `defaults` section. Default 80000.
    pub default_max_connections: u32,
    /// Successful checks before a client is up again. Default 1.
    pub rise: u32,
    /// Failed checks before a client is down. Default 5.
    pub fall: u32,
    /// Keep a logged-in user (Plone's `__ac` cookie) on one client. Default `false`.
    pub sticky_sessions: bool,
    /// Serve the statistics page (behind a password). Default `true`.
    pub enable_stats: bool,
    /// The statistics page's path. Default `"/balancer/stats"`.
    pub stats_url: String,
    /// The statistics page's user. Default `"stats"`.
    pub stats_user: String,
    /// The statistics page's password; required when `enable_stats` is on. Default none.
    pub stats_password: Option<Password>,
    /// The path checked on each client. Default `"/ok"`: Plone's cheap, uncached `ok` view
    /// (Products.CMFPlone 5.1 or later). The cookbook checked `/misc_/CMFPlone/plone_icon`.
    pub health_check_url: String,
    /// The HTTP method of the health check. Default `"GET"`.
    pub health_check_method: String,
    /// The runtime API socket the rolling restart drains clients through. Default
    /// `"/run/haproxy/admin.sock"` (Debian's; its tmpfiles.d creates `/run/haproxy`).
    pub stats_socket_path: String,
    /// The runtime API level; draining needs `admin`. Default `"admin"`.
    pub stats_socket_level: String,
}

impl Default for HaproxySettings {
    fn default() -> Self {
        HaproxySettings {
            balance: "leastconn".to_string(),
            retries: 3,
            check_interval: 10_000,
            connect_timeout: "10s".to_string(),
            client_timeout: "60s".to_string(),
            server_timeout: "900s".to_string(),
            queue_timeout: "120s".to_string(),
            http_request_timeout: "30s".to_string(),
            global_max_connections: 80_000,
            default_max_connections: 80_000,
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

/// `nginx_plone.*`: the nginx site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxSettings {
    /// `ssi on` for proxied pages. Default `false`.
    pub enable_ssi: bool,
    /// Raw configuration at `http` level, typically extra `server` blocks. Default none.
    pub additional_servers: Option<String>,
    /// Raw lines in every plain-HTTP server. Default none.
    pub additional_config: Option<String>,
    /// Raw lines in every HTTPS server. Default none.
    pub additional_ssl_config: Option<String>,
    /// Raw lines in the default plain-HTTP server only. Default none.
    pub default_config: Option<String>,
    /// Raw lines in the default HTTPS server only. Default none.
    pub default_ssl_config: Option<String>,
    /// Varnish's port, which nginx proxies to when Varnish is on. Default 6081.
    pub proxy_port: u16,
    /// Days of nginx logs kept by logrotate. Default 14.
    pub log_retention_days: u32,
    /// The cookbook reloaded nginx on every run with this; we reload whenever a file nginx
    /// reads changed, so it has no effect. Default `false`.
    pub force_reload: bool,
    /// The largest request body (upload) accepted. Default `"128m"`.
    pub client_max_body_size: String,
}

impl Default for NginxSettings {
    fn default() -> Self {
        NginxSettings {
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

/// `varnish_plone.*`: the cache between nginx and HAProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarnishSettings {
    /// Seconds a stale object may be served while a fresh one is fetched. Default 60.
    pub grace: u32,
    /// Seconds anonymous responses without Cache-Control or Expires are cached. Default 300.
    pub default_ttl: u32,
    /// varnishd's `-s` storage. Default `"malloc,256m"` (Debian's; the cookbook used a file).
    pub storage: String,
}

impl Default for VarnishSettings {
    fn default() -> Self {
        VarnishSettings {
            grace: 60,
            default_ttl: 300,
            storage: "malloc,256m".to_string(),
        }
    }
}
