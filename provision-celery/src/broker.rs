//! The `celery_broker` layer: Redis from Debian, listening on the host's private address and
//! loopback, with a password, persistence (append-only file and snapshots) and protected mode.
//!
//! provision owns `/etc/redis/redis.conf` whole (Debian's is a conffile; upgrades keep ours).
//! The password goes into its own file, `/etc/redis/provision-auth.conf`, which `redis.conf`
//! includes last: plans show the diff of `redis.conf` and never the password. Redis has no
//! config-test switch, so a candidate file is checked by starting `redis-server` on it with
//! every listener turned off: a file Redis cannot read fails with `FATAL CONFIG FILE ERROR`,
//! a good one gets as far as "Configured to not listen anywhere" and exits, having bound,
//! written and loaded nothing. Only then does it replace the live file; Redis restarts when
//! a file it reads changed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use provision_core::phase::Phase;
use provision_core::resource::{Directory, File, Packages, Resource, Service, Unit};
use provision_core::template::Templates;
use serde::Serialize;
use serde_json::Value;

use crate::error::{CeleryError, invalid};
use crate::text::{check_path, redis_string};
use crate::{BrokerEndpoint, Password};

/// Debian's service.
pub const SERVICE: &str = "redis-server";
/// The live configuration (Debian's path, which its unit reads).
pub const CONFIG_PATH: &str = "/etc/redis/redis.conf";
/// The password, included by [`CONFIG_PATH`].
pub const AUTH_PATH: &str = "/etc/redis/provision-auth.conf";
/// Our drop-in for Debian's unit.
pub const DROP_IN_UNIT: &str = "redis-server.service.d/provision.conf";
/// Debian's data directory.
pub const DEFAULT_DIR: &str = "/var/lib/redis";
/// The cookbook's and Redis's port.
pub const DEFAULT_PORT: u16 = 6379;

pub(crate) const CONFIG_TEMPLATE: &str = "celery/redis.conf.j2";
pub(crate) const AUTH_TEMPLATE: &str = "celery/redis-auth.conf.j2";
pub(crate) const DROP_IN_TEMPLATE: &str = "celery/redis-service.conf.j2";

/// Settings the broker always has; `redis.config` cannot change them.
const MANAGED: &[(&str, &str)] = &[
    ("port", "set `plone_instances.broker.port`"),
    (
        "requirepass",
        "put `redis_config_requirepass` in the secrets file",
    ),
    ("protected-mode", "it is always on"),
    ("daemonize", "systemd runs Redis in the foreground"),
    ("supervised", "systemd runs Redis in the foreground"),
    (
        "pidfile",
        "Debian's unit expects /run/redis/redis-server.pid",
    ),
    ("include", "provision writes the whole configuration"),
    ("bind", "set `BrokerSettings::bind`"),
    ("dir", "set `BrokerSettings::dir`"),
];

/// The Redis broker of one `celery_broker` host.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerSettings {
    /// Addresses Redis listens on. Default: the host's private address, `127.0.0.1` and
    /// `::1` (the latter only where the host has it). Wildcards are refused: Redis has no
    /// host-based access control, so it listens only where the stack reaches it.
    pub bind: Vec<IpAddr>,
    /// Default 6379 (`plone_instances.broker.port`).
    pub port: u16,
    /// `requirepass`, from the secrets file (`redis_config_requirepass`).
    pub password: Password,
    /// The data directory (`redis.config.dir`). Default Debian's `/var/lib/redis`.
    pub dir: String,
    /// Other `redis.conf` settings (`redis.config.*`), name → value as written in redis.conf.
    /// They replace our defaults of the same name (for example `appendfsync`, `maxmemory`,
    /// `save`); the settings provision manages are refused with the reason.
    pub config: BTreeMap<String, String>,
}

impl BrokerSettings {
    /// Redis on `private_address` (and loopback) with `password`, persistence on, Debian's
    /// data directory.
    pub fn new(private_address: IpAddr, password: impl Into<String>) -> BrokerSettings {
        let mut bind = vec![private_address];
        for loopback in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            if !bind.contains(&loopback) {
                bind.push(loopback);
            }
        }
        BrokerSettings {
            bind,
            port: DEFAULT_PORT,
            password: Password(password.into()),
            dir: DEFAULT_DIR.to_string(),
            config: BTreeMap::new(),
        }
    }

    /// The broker from the stack's `redis.config` (with `requirepass` from the secrets file
    /// merged in) and `plone_instances.broker.port`. Names may use `_` for `-` (Chef's Redis
    /// cookbooks did). `dir` and `bind` (or the cookbook's `listen_addr`) are applied here,
    /// Redis 2.4's `vm_*` settings (gone since Redis 2.6) are ignored, and the rest are written
    /// into redis.conf as given.
    pub fn from_redis_config(
        private_address: IpAddr,
        port: u16,
        config: &BTreeMap<String, Value>,
    ) -> Result<BrokerSettings, CeleryError> {
        let password = match config.get("requirepass") {
            Some(Value::String(p)) if !p.is_empty() => p.clone(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(CeleryError::MissingPassword);
            }
            Some(_) => return Err(invalid("redis.config.requirepass", "must be a string")),
        };
        let mut settings = BrokerSettings::new(private_address, password);
        settings.port = port;
        for (name, value) in config {
            let key = format!("redis.config.{name}");
            // redis.conf spells names with `-`; Chef's Redis cookbooks with `_`.
            let setting = name.replace('_', "-");
            // The password is taken above; Redis 2.4's virtual memory (the cookbook's
            // `vm_swap_file`) is gone since Redis 2.6.
            if setting == "requirepass" || setting.starts_with("vm-") {
                continue;
            }
            let Some(value) = config_value(&key, value)? else {
                continue;
            };
            match setting.as_str() {
                "dir" => settings.dir = value,
                "bind" | "listen-addr" => settings.bind = parse_bind(&key, &value)?,
                "port" | "listen-port" if value == port.to_string() => {}
                "port" | "listen-port" => {
                    return Err(invalid(
                        key,
                        format!(
                            "{value} is not the broker's port {port}: set \
                             `plone_instances.broker.port` instead"
                        ),
                    ));
                }
                _ => {
                    if let Some((_, reason)) = MANAGED.iter().find(|(m, _)| *m == setting) {
                        return Err(invalid(key, format!("provision sets it: {reason}")));
                    }
                    settings.config.insert(setting, value);
                }
            }
        }
        settings.check()?;
        Ok(settings)
    }

    /// How the Celery workers and the Plone clients reach this broker: its first address.
    pub fn endpoint(&self) -> BrokerEndpoint {
        BrokerEndpoint::new(
            self.bind
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
            self.port,
            Some(self.password.clone()),
        )
    }

    /// Refuse settings that cannot work, naming the setting.
    pub fn check(&self) -> Result<(), CeleryError> {
        if self.bind.is_empty() {
            return Err(invalid("redis.config.bind", "name at least one address"));
        }
        if let Some(any) = self.bind.iter().find(|a| a.is_unspecified()) {
            return Err(invalid(
                "redis.config.bind",
                format!(
                    "{any} would listen on every network of the host, and Redis has no \
                     host-based access control: name the private address instead"
                ),
            ));
        }
        if self.port == 0 {
            return Err(invalid("plone_instances.broker.port", "0 is not a port"));
        }
        if self.password.0.is_empty() {
            return Err(CeleryError::MissingPassword);
        }
        check_path("redis.config.dir", &self.dir)?;
        for (name, value) in &self.config {
            let key = format!("redis.config.{name}");
            let plain = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !plain {
                return Err(invalid(
                    key,
                    "is not a redis.conf setting name (lower case letters, digits and -)",
                ));
            }
            if let Some((_, reason)) = MANAGED.iter().find(|(m, _)| m == name) {
                return Err(invalid(key, format!("provision sets it: {reason}")));
            }
            if value.contains(['\n', '\r']) {
                return Err(invalid(key, "must be one line"));
            }
        }
        Ok(())
    }
}

/// A `redis.config` value as redis.conf text: strings as given, numbers, `yes`/`no` for
/// booleans, arrays joined with spaces; `None` for null (not written).
fn config_value(key: &str, value: &Value) -> Result<Option<String>, CeleryError> {
    let scalar = |v: &Value| -> Result<String, CeleryError> {
        Ok(match v {
            Value::String(s) if s.is_empty() => "\"\"".to_string(),
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
            _ => return Err(invalid(key, "must be a string, number or boolean")),
        })
    };
    match value {
        Value::Null => Ok(None),
        Value::Array(items) => Ok(Some(
            items
                .iter()
                .map(scalar)
                .collect::<Result<Vec<_>, _>>()?
                .join(" "),
        )),
        v => scalar(v).map(Some),
    }
}

fn parse_bind(key: &str, value: &str) -> Result<Vec<IpAddr>, CeleryError> {
    value
        .split_whitespace()
        .map(|a| {
            a.trim_start_matches('-').parse::<IpAddr>().map_err(|_| {
                invalid(
                    key,
                    format!("{a:?} is not an IP address (host names cannot be bound)"),
                )
            })
        })
        .collect()
}

/// Our defaults for what `redis.config` may change, in redis.conf order.
fn default_settings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("timeout", "0"),
        ("tcp-keepalive", "300"),
        ("loglevel", "notice"),
        ("logfile", "/var/log/redis/redis-server.log"),
        ("databases", "16"),
        ("dbfilename", "dump.rdb"),
        ("save", "3600 1 300 100 60 10000"),
        ("appendonly", "yes"),
        ("appendfilename", "\"appendonly.aof\""),
        ("appenddirname", "\"appendonlydir\""),
        ("appendfsync", "everysec"),
        ("maxmemory-policy", "noeviction"),
        ("enable-protected-configs", "no"),
        ("enable-debug-command", "no"),
        ("enable-module-command", "no"),
    ]
}

#[derive(Serialize)]
struct Setting {
    name: String,
    value: String,
}

#[derive(Serialize)]
struct ConfigContext {
    bind: String,
    port: u16,
    dir: String,
    defaults: Vec<Setting>,
    extra: Vec<Setting>,
    auth_file: &'static str,
}

/// The rendered `redis.conf` (without the password: see [`auth_conf`]).
pub fn redis_conf(settings: &BrokerSettings, templates: &Templates) -> Result<String, CeleryError> {
    settings.check()?;
    let bind = settings
        .bind
        .iter()
        .map(|a| match a {
            // Optional: a host without IPv6 has no ::1, and Redis then skips it.
            IpAddr::V6(v6) if v6.is_loopback() => format!("-{a}"),
            _ => a.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    let defaults = default_settings()
        .into_iter()
        .map(|(name, value)| Setting {
            name: name.to_string(),
            value: settings
                .config
                .get(name)
                .cloned()
                .unwrap_or_else(|| value.to_string()),
        })
        .collect();
    let known: Vec<&str> = default_settings().iter().map(|(n, _)| *n).collect();
    let extra = settings
        .config
        .iter()
        .filter(|(name, _)| !known.contains(&name.as_str()))
        .map(|(name, value)| Setting {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    Ok(templates.render(
        CONFIG_TEMPLATE,
        &ConfigContext {
            bind,
            port: settings.port,
            dir: settings.dir.clone(),
            defaults,
            extra,
            auth_file: AUTH_PATH,
        },
    )?)
}

#[derive(Serialize)]
struct AuthContext {
    password_literal: String,
}

/// The rendered password file (a secret).
pub fn auth_conf(settings: &BrokerSettings, templates: &Templates) -> Result<String, CeleryError> {
    settings.check()?;
    Ok(templates.render(
        AUTH_TEMPLATE,
        &AuthContext {
            password_literal: redis_string(&settings.password.0),
        },
    )?)
}

#[derive(Serialize)]
struct DropInContext {
    dir: String,
}

/// The rendered drop-in for Debian's unit.
pub fn drop_in(settings: &BrokerSettings, templates: &Templates) -> Result<String, CeleryError> {
    settings.check()?;
    Ok(templates.render(
        DROP_IN_TEMPLATE,
        &DropInContext {
            dir: settings.dir.clone(),
        },
    )?)
}

/// The check a candidate Redis configuration must pass (`{}` is its path): redis-server reads
/// it with every listener, persistence and side file turned off, in a scratch directory. A
/// good file makes it stop at "Configured to not listen anywhere"; anything else is printed.
/// (Its variables are prefixed: the atomic write around it uses `d` and `tmp`.)
pub const CONFIG_CHECK: &str = "{ redis_d=$(mktemp -d) && redis_out=$(timeout 20 redis-server {} \
     --port 0 --tls-port 0 --unixsocket '' --daemonize no --supervised no --pidfile '' \
     --logfile '' --dir \"$redis_d\" --appendonly no --save '' 2>&1); rm -rf \"$redis_d\"; \
     case $redis_out in *'Configured to not listen anywhere'*) true ;; \
     *) printf '%s\\n' \"$redis_out\" | grep -v -e '^$' -e 'oO0OoO0OoO0Oo' >&2; false ;; esac; }";

/// The check of a candidate password file: as [`CONFIG_CHECK`], but what redis-server prints
/// is not shown, since it would quote the password.
pub const AUTH_CHECK: &str = "{ redis_d=$(mktemp -d) && redis_out=$(timeout 20 redis-server {} \
     --port 0 --tls-port 0 --unixsocket '' --daemonize no --supervised no --pidfile '' \
     --logfile '' --dir \"$redis_d\" --appendonly no --save '' 2>&1); rm -rf \"$redis_d\"; \
     case $redis_out in *'Configured to not listen anywhere'*) true ;; \
     *) echo 'redis-server cannot read the password file (its output is not shown: it would \
     quote the password)' >&2; false ;; esac; }";

/// The resources of a `celery_broker` host for one phase: the package and the data directory
/// at setup; the configuration (checked before it goes live), the unit's drop-in and the
/// running service, restarted when one of them changed, at configure.
pub fn resources(
    settings: &BrokerSettings,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, CeleryError> {
    settings.check()?;
    let mut resources: Vec<Resource> = Vec::new();
    match phase {
        Phase::Setup => {
            resources.push(Packages::new(["redis-server"]).into());
            resources.push(
                Directory::new(&settings.dir)
                    .owner("redis", "redis")
                    .mode(0o750)
                    .into(),
            );
        }
        Phase::Configure => {
            // Debian's ownership and mode (its package sets them with dpkg-statoverride).
            let auth = File::new(AUTH_PATH, auth_conf(settings, templates)?)
                .owner("redis", "redis")
                .mode(0o640)
                .secret()
                .validate(AUTH_CHECK);
            let config = File::new(CONFIG_PATH, redis_conf(settings, templates)?)
                .owner("redis", "redis")
                .mode(0o640)
                .validate(CONFIG_CHECK);
            // A drop-in, not a whole unit: `systemd-analyze verify` wants a whole unit.
            let drop_in = Unit::new(DROP_IN_UNIT, drop_in(settings, templates)?).without_verify();
            let service = Service::running(SERVICE)
                .restart_on(Resource::from(auth.clone()).id())
                .restart_on(Resource::from(config.clone()).id())
                .restart_on(Resource::from(drop_in.clone()).id());
            // The password first: redis.conf includes it, and its check reads it.
            resources.extend([auth.into(), config.into(), drop_in.into(), service.into()]);
        }
        Phase::Deploy => {}
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> BTreeMap<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_stack_config_maps_onto_the_settings() {
        let settings = BrokerSettings::from_redis_config(
            "10.0.0.5".parse().unwrap(),
            6380,
            &config(
                r#"{"requirepass": "pw", "dir": "/srv/redis", "port": 6380,
                    "vm_swap_file": "/mnt/redis/redis.swap", "maxmemory": "256mb",
                    "maxmemory_policy": "noeviction", "listen_port": 6380,
                    "appendonly": true, "save": [900, 1], "notify-keyspace-events": "",
                    "slowlog-max-len": null}"#,
            ),
        )
        .unwrap();
        assert_eq!(settings.port, 6380);
        assert_eq!(settings.dir, "/srv/redis");
        assert_eq!(settings.password.0, "pw");
        let expected: BTreeMap<String, String> = [
            ("appendonly", "yes"),
            ("maxmemory", "256mb"),
            ("maxmemory-policy", "noeviction"),
            ("notify-keyspace-events", "\"\""),
            ("save", "900 1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(settings.config, expected);
        assert_eq!(
            settings.endpoint().broker_url(),
            "redis://:pw@10.0.0.5:6380/0"
        );
    }

    #[test]
    fn a_password_is_required() {
        let error =
            BrokerSettings::from_redis_config("10.0.0.5".parse().unwrap(), 6379, &config("{}"))
                .unwrap_err();
        assert!(matches!(error, CeleryError::MissingPassword), "{error}");
        assert!(error.to_string().contains("redis_config_requirepass"));
    }

    #[test]
    fn managed_settings_and_wildcards_are_refused_with_the_reason() {
        let address: IpAddr = "10.0.0.5".parse().unwrap();
        let error = |json: &str| {
            BrokerSettings::from_redis_config(address, 6379, &config(json))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error(r#"{"requirepass": "pw", "port": 6390}"#),
            "`redis.config.port`: 6390 is not the broker's port 6379: set \
             `plone_instances.broker.port` instead"
        );
        assert_eq!(
            error(r#"{"requirepass": "pw", "protected-mode": "no"}"#),
            "`redis.config.protected-mode`: provision sets it: it is always on"
        );
        assert!(
            error(r#"{"requirepass": "pw", "listen_addr": "0.0.0.0"}"#)
                .contains("would listen on every network"),
        );
        assert!(
            error(r#"{"requirepass": "pw", "bind": "redis.internal"}"#)
                .contains("is not an IP address")
        );
        assert!(
            error(r#"{"requirepass": "pw", "save": {"a": 1}}"#)
                .contains("must be a string, number or boolean")
        );
        assert!(error(r#"{"requirepass": "pw", "dir": "relative"}"#).contains("absolute path"));
        assert_eq!(
            error(r#"{"requirepass": "pw", "include": "/etc/redis/extra.conf"}"#),
            "`redis.config.include`: provision sets it: provision writes the whole configuration"
        );
        assert!(
            error(r#"{"requirepass": "pw", "Max Memory": "1gb"}"#)
                .contains("is not a redis.conf setting name")
        );
        let bound = BrokerSettings::from_redis_config(
            address,
            6379,
            &config(r#"{"requirepass": "pw", "bind": "10.0.0.5 -::1"}"#),
        )
        .unwrap();
        assert_eq!(
            bound.bind,
            [
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_loopback_private_address_is_listed_once() {
        let settings = BrokerSettings::new("127.0.0.1".parse().unwrap(), "pw");
        assert_eq!(
            settings.bind,
            [
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn the_password_never_shows_in_debug() {
        let settings = BrokerSettings::new("10.0.0.5".parse().unwrap(), "s3cret-pw");
        assert!(!format!("{settings:?}").contains("s3cret-pw"));
    }
}
