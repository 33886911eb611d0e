//! Where the broker is, as the workers and the Plone clients name it: `redis://` URLs.

use std::fmt;

use crate::error::{CeleryError, invalid};
use crate::text::percent_encode;

/// A password that `Debug` does not print.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(********)")
    }
}

/// A Redis broker: the `celery_broker` host's (see [`crate::BrokerSettings::endpoint`]) or an
/// external one (`plone_instances.broker.host` / `port`, such as ElastiCache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    /// Host name or IP address.
    pub host: String,
    /// Default 6379.
    pub port: u16,
    /// Redis `AUTH` password; `None` for a broker without one.
    pub password: Option<Password>,
    /// The database of the task queues. Default 0.
    pub broker_db: u8,
    /// The database of task results. Default 1 (collective.celery's example).
    pub result_db: u8,
}

impl BrokerEndpoint {
    pub fn new(host: impl Into<String>, port: u16, password: Option<Password>) -> BrokerEndpoint {
        BrokerEndpoint {
            host: host.into(),
            port,
            password,
            broker_db: 0,
            result_db: 1,
        }
    }

    pub fn check(&self) -> Result<(), CeleryError> {
        let plain = !self.host.is_empty()
            && self
                .host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b));
        if !plain {
            return Err(invalid(
                "plone_instances.broker.host",
                format!("{:?} is not a host name or IP address", self.host),
            ));
        }
        if self.port == 0 {
            return Err(invalid("plone_instances.broker.port", "0 is not a port"));
        }
        if self.broker_db == self.result_db {
            return Err(invalid(
                "result_db",
                "task results need their own Redis database, not the queues'",
            ));
        }
        Ok(())
    }

    fn url(&self, db: u8) -> String {
        let auth = match &self.password {
            Some(p) => format!(":{}@", percent_encode(&p.0)),
            None => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("redis://{auth}{host}:{}/{db}", self.port)
    }

    /// The queues: `redis://:PASSWORD@HOST:PORT/0` (password percent-encoded).
    pub fn broker_url(&self) -> String {
        self.url(self.broker_db)
    }

    /// The results: `redis://:PASSWORD@HOST:PORT/1`.
    pub fn result_backend_url(&self) -> String {
        self.url(self.result_db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_the_password_and_bracket_ipv6() {
        let endpoint = BrokerEndpoint::new("fd00::5", 6379, Some(Password("a@b:c/d".into())));
        assert_eq!(
            endpoint.broker_url(),
            "redis://:a%40b%3Ac%2Fd@[fd00::5]:6379/0"
        );
        assert_eq!(
            endpoint.result_backend_url(),
            "redis://:a%40b%3Ac%2Fd@[fd00::5]:6379/1"
        );
        let open = BrokerEndpoint::new("redis.internal", 6380, None);
        assert_eq!(open.broker_url(), "redis://redis.internal:6380/0");
        assert!(format!("{endpoint:?}").contains("********"));
        assert!(!format!("{endpoint:?}").contains("a@b"));
    }

    #[test]
    fn bad_hosts_are_refused() {
        assert!(BrokerEndpoint::new("a b", 6379, None).check().is_err());
        assert!(BrokerEndpoint::new("", 6379, None).check().is_err());
        assert!(BrokerEndpoint::new("10.0.0.5", 6379, None).check().is_ok());
    }
}
