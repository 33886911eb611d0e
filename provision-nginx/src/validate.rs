//! Checks of the settings before anything is rendered: a value that would break a config file,
//! or change its meaning (a space in a path, a `;` in a host name), is an error naming the key.
//! The raw hooks (`additional_config`, ...) are not checked here: `nginx -t` checks them on the
//! host before they replace the live site.

use std::collections::HashSet;
use std::time::Duration;

use crate::error::FrontendError;
use crate::settings::FrontendSettings;

/// Parse an HAProxy time: a number and an optional unit (`us`, `ms`, `s`, `m`, `h`, `d`;
/// none means milliseconds), e.g. `900s`, `15m`, `10000`.
pub fn parse_haproxy_time(text: &str) -> Option<Duration> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number: u64 = text[..digits].parse().ok()?;
    let micros_per_unit: u64 = match &text[digits..] {
        "us" => 1,
        "" | "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return None,
    };
    Some(Duration::from_micros(number.checked_mul(micros_per_unit)?))
}

impl FrontendSettings {
    /// Check every setting that goes into a config file; the first problem is the error.
    pub fn validate(&self) -> Result<(), FrontendError> {
        let h = &self.haproxy;
        if h.enable_stats {
            match &h.stats_password {
                None => return Err(FrontendError::MissingStatsPassword),
                Some(p) if p.0.is_empty() => return Err(FrontendError::MissingStatsPassword),
                Some(p) if p.0.chars().any(char::is_control) => {
                    return Err(FrontendError::invalid(
                        "haproxy.stats_password",
                        "********",
                        "must not contain control characters (line breaks, tabs)",
                    ));
                }
                Some(_) => {}
            }
            word("haproxy.stats_user", &h.stats_user)?;
            if h.stats_user.contains(':') {
                return Err(FrontendError::invalid(
                    "haproxy.stats_user",
                    &h.stats_user,
                    "must not contain `:` (HAProxy splits `user:password` there)",
                ));
            }
            url_path("haproxy.stats_url", &h.stats_url)?;
        }
        for (key, value) in [
            ("haproxy.connect_timeout", &h.connect_timeout),
            ("haproxy.client_timeout", &h.client_timeout),
            ("haproxy.server_timeout", &h.server_timeout),
            ("haproxy.queue_timeout", &h.queue_timeout),
            ("haproxy.http_request_timeout", &h.http_request_timeout),
        ] {
            match parse_haproxy_time(value) {
                Some(d) if !d.is_zero() => {}
                _ => {
                    return Err(FrontendError::invalid(
                        key,
                        value,
                        "expected a time such as `900s`, `15m` or `10000` (milliseconds)",
                    ));
                }
            }
        }
        if h.check_interval < 10 {
            return Err(FrontendError::invalid(
                "haproxy.check_interval",
                &h.check_interval.to_string(),
                "expected milliseconds, at least 10",
            ));
        }
        for (key, value) in [("haproxy.rise", h.rise), ("haproxy.fall", h.fall)] {
            if value == 0 {
                return Err(FrontendError::invalid(key, "0", "must be at least 1"));
            }
        }
        if h.balance.is_empty() || h.balance.chars().any(|c| c.is_control() || c == '#') {
            return Err(FrontendError::invalid(
                "haproxy.balance",
                &h.balance,
                "expected an HAProxy algorithm such as `leastconn` or `roundrobin`",
            ));
        }
        if h.health_check_method.is_empty()
            || !h
                .health_check_method
                .bytes()
                .all(|b| b.is_ascii_uppercase())
        {
            return Err(FrontendError::invalid(
                "haproxy.health_check_method",
                &h.health_check_method,
                "expected an HTTP method such as `GET` or `HEAD`",
            ));
        }
        url_path("haproxy.health_check_url", &h.health_check_url)?;
        absolute_path("haproxy.stats_socket_path", &h.stats_socket_path)?;
        if !matches!(h.stats_socket_level.as_str(), "user" | "operator" | "admin") {
            return Err(FrontendError::invalid(
                "haproxy.stats_socket_level",
                &h.stats_socket_level,
                "expected `user`, `operator` or `admin` (draining clients needs `admin`)",
            ));
        }

        let mut names = HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let key = format!("backends[{i}]");
            if b.name.is_empty()
                || !b
                    .name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
            {
                return Err(FrontendError::invalid(
                    format!("{key}.name"),
                    &b.name,
                    "expected letters, digits, `-`, `_` and `.` only",
                ));
            }
            if !names.insert(b.name.as_str()) {
                return Err(FrontendError::invalid(
                    format!("{key}.name"),
                    &b.name,
                    "two clients have this name; HAProxy needs unique server names",
                ));
            }
            address(&format!("{key}.address"), &b.address)?;
            if b.port == 0 {
                return Err(FrontendError::invalid(
                    format!("{key}.port"),
                    "0",
                    "not a port",
                ));
            }
            if b.maxconn == 0 {
                return Err(FrontendError::invalid(
                    format!("{key}.maxconn"),
                    "0",
                    "must be at least 1 (the client's threads)",
                ));
            }
        }

        // An empty site id is the Zope root (a Zope app without Plone).
        if !self.site_id.trim_matches('/').is_empty() {
            site_path("plone_instances.site_id", &self.site_id)?;
        }
        for (host, path) in &self.subsites {
            server_name("plone_instances.subsites", host)?;
            site_path(&format!("plone_instances.subsites.{host}"), path)?;
        }
        for host in self.subsite_config.keys() {
            if !self.subsites.contains_key(host) {
                return Err(FrontendError::invalid(
                    "plone_instances.subsite_config",
                    host,
                    "names no host of `plone_instances.subsites`",
                ));
            }
        }
        address("private_address", &self.private_address)?;
        if self.listen_addresses.is_empty() {
            return Err(FrontendError::invalid(
                "listen_addresses",
                "[]",
                "nginx needs at least one address to listen on",
            ));
        }
        for a in &self.listen_addresses {
            address("listen_addresses", a)?;
        }
        for (key, port) in [
            ("http_port", self.http_port),
            ("https_port", self.https_port),
            ("haproxy_port", self.haproxy_port),
            ("nginx_plone.proxy_port", self.nginx.proxy_port),
        ] {
            if port == 0 {
                return Err(FrontendError::invalid(key, "0", "not a port"));
            }
        }
        if let Some(tls) = &self.tls {
            absolute_path("tls.certificate", &tls.certificate)?;
            absolute_path("tls.key", &tls.key)?;
        }

        let n = &self.nginx;
        let size = n
            .client_max_body_size
            .trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || n.client_max_body_size.len() - size.len() > 1
        {
            return Err(FrontendError::invalid(
                "nginx_plone.client_max_body_size",
                &n.client_max_body_size,
                "expected a size such as `128m`, `1g` or `0` (no limit)",
            ));
        }
        if n.log_retention_days == 0 {
            return Err(FrontendError::invalid(
                "nginx_plone.log_retention_days",
                "0",
                "must be at least 1",
            ));
        }

        if let Some(v) = &self.varnish {
            word("varnish_plone.storage", &v.storage)?;
        }
        Ok(())
    }
}

/// Characters that end or split a word in nginx, HAProxy, VCL or a systemd command line.
fn is_special(c: char) -> bool {
    c.is_whitespace() || c.is_control() || "\"'`;{}#\\$".contains(c)
}

fn word(key: &str, value: &str) -> Result<(), FrontendError> {
    if value.is_empty() || value.chars().any(is_special) {
        return Err(FrontendError::invalid(
            key,
            value,
            "must be one word, without spaces, quotes, `;`, `{`, `}`, `#`, `\\` or `$`",
        ));
    }
    Ok(())
}

fn address(key: &str, value: &str) -> Result<(), FrontendError> {
    word(key, value)?;
    if value.contains('/') {
        return Err(FrontendError::invalid(
            key,
            value,
            "expected an address, not a network",
        ));
    }
    Ok(())
}

fn absolute_path(key: &str, value: &str) -> Result<(), FrontendError> {
    word(key, value)?;
    if !value.starts_with('/') {
        return Err(FrontendError::invalid(
            key,
            value,
            "expected an absolute path",
        ));
    }
    Ok(())
}

fn url_path(key: &str, value: &str) -> Result<(), FrontendError> {
    word(key, value)?;
    if !value.starts_with('/') {
        return Err(FrontendError::invalid(
            key,
            value,
            "expected a path starting with `/`",
        ));
    }
    Ok(())
}

/// A path of Zope ids below the root (`Plone`, `Plone/en`), as it goes into the rewrite.
fn site_path(key: &str, value: &str) -> Result<(), FrontendError> {
    let trimmed = value.trim_matches('/');
    if trimmed.is_empty()
        || !trimmed.split('/').all(|id| {
            !id.is_empty()
                && id != "."
                && id != ".."
                && id
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.~@+".contains(&c))
        })
    {
        return Err(FrontendError::invalid(
            key,
            value,
            "expected Zope ids separated by `/` (letters, digits, `-`, `_`, `.`, `~`, `@`, `+`)",
        ));
    }
    Ok(())
}

fn server_name(key: &str, value: &str) -> Result<(), FrontendError> {
    if value.is_empty()
        || value.starts_with('~')
        || !value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.*".contains(&c))
    {
        return Err(FrontendError::invalid(
            key,
            value,
            "expected a host name such as `www.example.org` or `*.example.org`",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Backend, Password};

    fn valid() -> FrontendSettings {
        let mut s = FrontendSettings::default();
        s.haproxy.stats_password = Some(Password("secret".to_string()));
        s.backends.push(Backend {
            name: "app1-1".to_string(),
            address: "10.0.0.11".to_string(),
            port: 8081,
            maxconn: 2,
        });
        s
    }

    #[test]
    fn haproxy_times_parse_with_and_without_units() {
        assert_eq!(parse_haproxy_time("900s"), Some(Duration::from_secs(900)));
        assert_eq!(parse_haproxy_time("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_haproxy_time("10000"), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_haproxy_time("250ms"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_haproxy_time("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_haproxy_time("s"), None);
        assert_eq!(parse_haproxy_time("10 s"), None);
        assert_eq!(parse_haproxy_time("10sec"), None);
    }

    #[test]
    fn the_defaults_with_a_password_are_valid() {
        valid().validate().unwrap();
    }

    #[test]
    fn stats_need_a_password_unless_turned_off() {
        let mut s = valid();
        s.haproxy.stats_password = None;
        assert!(matches!(
            s.validate(),
            Err(FrontendError::MissingStatsPassword)
        ));
        s.haproxy.stats_password = Some(Password(String::new()));
        assert!(matches!(
            s.validate(),
            Err(FrontendError::MissingStatsPassword)
        ));
        s.haproxy.enable_stats = false;
        s.validate().unwrap();
    }

    #[test]
    fn a_bad_password_is_refused_without_showing_it() {
        let mut s = valid();
        s.haproxy.stats_password = Some(Password("top\nsecret".to_string()));
        let message = s.validate().unwrap_err().to_string();
        assert!(message.contains("haproxy.stats_password"), "{message}");
        assert!(!message.contains("secret\""), "{message}");
    }

    #[test]
    fn errors_name_the_key_and_value() {
        let mut s = valid();
        s.haproxy.server_timeout = "15 minutes".to_string();
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "`haproxy.server_timeout` = \"15 minutes\": expected a time such as `900s`, `15m` \
             or `10000` (milliseconds)"
        );
        let mut s = valid();
        s.subsites
            .insert("www.example.org;".to_string(), "en".to_string());
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("plone_instances.subsites")
        );
        let mut s = valid();
        s.site_id = "Plone/../x".to_string();
        assert!(s.validate().is_err());
        let mut s = valid();
        s.backends.push(s.backends[0].clone());
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("unique server names")
        );
        let mut s = valid();
        s.subsite_config
            .insert("nowhere.example.org".to_string(), "x;".to_string());
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("subsite_config")
        );
        let mut s = valid();
        s.nginx.client_max_body_size = "128mb".to_string();
        assert!(s.validate().is_err());
    }
}
