//! The `solr` layer: Solr for collective.solr (the cookbook's solr.rb, done without buildout).
//!
//! [`resources`] turns [`SolrSettings`] into the resources of one Solr host: Java from Debian,
//! the Solr distribution from an archive whose sha512 is checked before it is unpacked into
//! `/opt/solr-<version>` (`/opt/solr` links the running one), its own user, the Solr home on
//! the data directory (`plone_solr.data_dir`), a heap from the host's memory, a systemd unit,
//! listening on the private address only and answering only the stack's clients
//! (`SOLR_IP_ALLOWLIST`), and the cores collective.solr uses, made from a configset written for
//! it. [`SolrConnection`] is what the instances get (collective.solr's environment or ZCML);
//! [`reindex`] gives the commands of a reindex without downtime (build a second core, swap).

pub mod client;
mod error;
pub mod reindex;
pub mod server;
mod settings;

pub use client::{SolrConnection, client_environment};
pub use error::SolrError;
pub use reindex::{Reindex, reindex};
pub use server::{ping_command, ping_url, resources};
pub use settings::{
    DEFAULT_PORT, DEFAULT_SHA512, DEFAULT_START_COMMAND, DEFAULT_VERSION, MAX_HEAP_MB, MIN_HEAP_MB,
    REBUILD_SUFFIX, SolrArchive, SolrSettings, heap_megabytes,
};

use provision_core::template::TemplateSource;

/// Every template of this crate, with an example context.
pub const TEMPLATES: &[TemplateSource] = &[
    TemplateSource {
        name: server::ENV_TEMPLATE,
        source: include_str!("templates/solr/solr.in.sh.j2"),
        example: r#"{"home": "/var/lib/solr", "log_dir": "/var/log/solr", "port": 8983, "bind_address": "10.0.0.5", "allowlist": "10.0.0.5, 10.0.0.11", "heap": "2048m", "extra": [["SOLR_OPTS", "-Dsolr.autoSoftCommit.maxTime=1000"]]}"#,
    },
    TemplateSource {
        name: server::UNIT_TEMPLATE,
        source: include_str!("templates/solr/solr.service.j2"),
        example: r#"{"version": "9.10.1", "user": "solr", "group": "solr", "env_file": "/etc/default/solr.in.sh", "install_dir": "/opt/solr", "exec_start": "/opt/solr/bin/solr start -f", "reload_script": "/usr/local/sbin/provision-solr-core reload-all", "wait_command": "/usr/local/sbin/provision-solr-core wait", "start_timeout": 600, "open_files": 65000}"#,
    },
    TemplateSource {
        name: server::SOLR_XML_TEMPLATE,
        source: include_str!("templates/solr/solr.xml.j2"),
        example: r#"{"configsets": "/var/lib/solr/configsets", "max_boolean_clauses": 1024}"#,
    },
    TemplateSource {
        name: server::CORE_TOOL_TEMPLATE,
        source: include_str!("templates/solr/solr-core.sh.j2"),
        example: r#"{"command": "provision-solr-core", "base_url": "http://10.0.0.5:8983/solr", "home": "/var/lib/solr", "configset": "plone", "suffix": "_rebuild", "service": "solr", "wait_seconds": 300}"#,
    },
    TemplateSource {
        name: server::INSTALL_TEMPLATE,
        source: include_str!("templates/solr/install-archive.sh.j2"),
        example: r#"{"version": "9.10.1", "url": "https://archive.apache.org/dist/solr/solr/9.10.1/solr-9.10.1.tgz", "sha512": "23915ba0c9eba81d9ed7dd46bf3dfa748a1cf12cfd1d2bc3c37e3022893b8d45a6d6dc078ee79e33c0367191c3e4f2d1df3c6f5705331ccfe13d6b1287812eb0", "install_root": "/opt", "install_dir": "/opt/solr-9.10.1", "start_program": "bin/solr", "marker": ".provision-archive-sha512"}"#,
    },
];
