//! The client side: how the Plone instances reach a core, in the forms collective.solr reads
//! (environment variables, or a ZCML `<solr:connection>`).

use serde::Serialize;

use crate::error::SolrError;
use crate::settings::{SolrSettings, check_core_name};

/// Where collective.solr finds one core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SolrConnection {
    /// The Solr host's private address (or name).
    pub host: String,
    pub port: u16,
    pub core: String,
}

impl SolrConnection {
    pub fn new(
        host: impl Into<String>,
        port: u16,
        core: &str,
    ) -> Result<SolrConnection, SolrError> {
        check_core_name("core", core)?;
        let host = host.into();
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:_".contains(&b))
        {
            return Err(crate::error::invalid(
                "host",
                format!("{host:?} is not a host name or address"),
            ));
        }
        Ok(SolrConnection {
            host,
            port,
            core: core.to_string(),
        })
    }

    /// `/solr/<core>`: collective.solr's `base`.
    pub fn base(&self) -> String {
        format!("/solr/{}", self.core)
    }

    /// The core's URL.
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("http://{host}:{}{}", self.port, self.base())
    }

    /// The environment collective.solr reads (second after ZCML, before the control panel):
    /// `COLLECTIVE_SOLR_HOST`, `COLLECTIVE_SOLR_PORT`, `COLLECTIVE_SOLR_BASE`.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("COLLECTIVE_SOLR_HOST", self.host.clone()),
            ("COLLECTIVE_SOLR_PORT", self.port.to_string()),
            ("COLLECTIVE_SOLR_BASE", self.base()),
        ]
    }

    /// The same connection as ZCML (`zcml-additional`), which wins over the environment.
    pub fn zcml(&self) -> String {
        format!(
            "<configure xmlns:solr=\"http://namespaces.plone.org/solr\">\n  \
             <solr:connection host=\"{}\" port=\"{}\" base=\"{}\"/>\n</configure>\n",
            self.host,
            self.port,
            self.base()
        )
    }
}

impl SolrSettings {
    /// How the stack's clients reach `core` of this server.
    pub fn connection(&self, core: &str) -> Result<SolrConnection, SolrError> {
        SolrConnection::new(self.bind_address.to_string(), self.port, core)
    }
}

/// The environment of the instances for the stack's Solr: the discovered host
/// (`plone_instances.solr_host` or the first `solr` host), the port and the core.
pub fn client_environment(
    host: &str,
    port: u16,
    core: &str,
) -> Result<Vec<(&'static str, String)>, SolrError> {
    Ok(SolrConnection::new(host, port, core)?.environment())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_and_zcml_name_host_port_and_base() {
        let connection = SolrConnection::new("10.0.0.5", 8983, "plone").unwrap();
        assert_eq!(
            connection.environment(),
            vec![
                ("COLLECTIVE_SOLR_HOST", "10.0.0.5".to_string()),
                ("COLLECTIVE_SOLR_PORT", "8983".to_string()),
                ("COLLECTIVE_SOLR_BASE", "/solr/plone".to_string()),
            ]
        );
        assert_eq!(
            connection.zcml(),
            "<configure xmlns:solr=\"http://namespaces.plone.org/solr\">\n  \
             <solr:connection host=\"10.0.0.5\" port=\"8983\" base=\"/solr/plone\"/>\n</configure>\n"
        );
        assert_eq!(connection.url(), "http://10.0.0.5:8983/solr/plone");
        let v6 = SolrConnection::new("fd00::5", 8983, "plone").unwrap();
        assert_eq!(v6.url(), "http://[fd00::5]:8983/solr/plone");
    }

    #[test]
    fn a_bad_core_or_host_is_refused() {
        assert!(SolrConnection::new("10.0.0.5", 8983, "a/b").is_err());
        assert!(SolrConnection::new("10.0.0.5\"", 8983, "plone").is_err());
        assert!(client_environment("solr.internal", 8983, "plone").is_ok());
    }
}
