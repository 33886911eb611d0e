//! A reindex without downtime: a second core is built beside the live one, filled by a full
//! reindex while Plone keeps searching (and indexing into) the live core, then the two are
//! swapped with CoreAdmin `SWAP`, an atomic rename inside Solr: the next query finds the new
//! index under the old name. The old index stays as the rebuild core, so swapping again goes
//! back; `cleanup` drops it.
//!
//! Edits made while the rebuild ran reached only the live core. After the swap, collective.solr's
//! `@@solr-maintenance/sync` (catalog against Solr) brings them over.

use serde::Serialize;

use crate::client::SolrConnection;
use crate::error::{SolrError, invalid};
use crate::server::CORE_COMMAND;
use crate::settings::SolrSettings;

/// The commands of a reindex of one core, each run on the Solr host (as root, e.g. with
/// `provision run --layer solr -- COMMAND`), in this order: `rebuild`, then the reindex into
/// [`Reindex::rebuild_connection`], then `swap`, later `cleanup` (or `rollback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reindex {
    /// The live core, e.g. `plone`.
    pub core: String,
    /// The core being rebuilt, e.g. `plone_rebuild`.
    pub rebuild_core: String,
    /// Makes a new, empty rebuild core from the configset (dropping an earlier one).
    pub rebuild: String,
    /// Where the reindex writes: give one Plone client this connection (its
    /// `COLLECTIVE_SOLR_BASE`) and run collective.solr's reindex there.
    pub rebuild_connection: SolrConnection,
    /// Swaps the two: the rebuilt index answers as `core`; then waits for its ping.
    pub swap: String,
    /// Swaps back (the old index is kept as the rebuild core until `cleanup`).
    pub rollback: String,
    /// Drops the rebuild core (after a swap: the old index) and its files.
    pub cleanup: String,
}

/// The reindex of `core`, one of the server's cores.
pub fn reindex(settings: &SolrSettings, core: &str) -> Result<Reindex, SolrError> {
    settings.check()?;
    if !settings.cores.iter().any(|c| c == core) {
        return Err(invalid(
            "core",
            format!(
                "{core:?} is not a core of this Solr (its cores: {})",
                settings.cores.join(", ")
            ),
        ));
    }
    let rebuild_core = SolrSettings::rebuild_core(core);
    Ok(Reindex {
        core: core.to_string(),
        rebuild: format!("{CORE_COMMAND} rebuild {core}"),
        rebuild_connection: settings.connection(&rebuild_core)?,
        swap: format!("{CORE_COMMAND} swap {core}"),
        rollback: format!("{CORE_COMMAND} swap {core}"),
        cleanup: format!("{CORE_COMMAND} cleanup {core}"),
        rebuild_core,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reindex_builds_beside_the_core_then_swaps() {
        let settings = SolrSettings::new("10.0.0.5".parse().unwrap(), 1 << 33);
        let plan = reindex(&settings, "plone").unwrap();
        assert_eq!(plan.rebuild_core, "plone_rebuild");
        assert_eq!(
            plan.rebuild,
            "/usr/local/sbin/provision-solr-core rebuild plone"
        );
        assert_eq!(plan.swap, "/usr/local/sbin/provision-solr-core swap plone");
        assert_eq!(
            plan.cleanup,
            "/usr/local/sbin/provision-solr-core cleanup plone"
        );
        assert_eq!(plan.rebuild_connection.base(), "/solr/plone_rebuild");
        let error = reindex(&settings, "other").unwrap_err().to_string();
        assert!(error.starts_with("core:"), "{error}");
    }
}
