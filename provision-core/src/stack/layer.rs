//! Layers: what a host does in the stack (the cookbook's layer shortnames).

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A role a host plays. A host may have several.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The frontend: nginx, HAProxy and (optionally) Varnish.
    Lb,
    /// Plone instances (ZEO or RelStorage clients), and Celery workers when enabled.
    PloneInstances,
    /// The ZEO server (FileStorage).
    Zeoserver,
    /// The shared blob server (NFS or GlusterFS).
    SharedBlobs,
    /// A Solr server for the site's search.
    Solr,
    /// The Redis broker for Celery.
    CeleryBroker,
    /// memcached for the RelStorage cache.
    Memcached,
    /// The one host that packs the RelStorage database.
    DbPacking,
    /// A PostgreSQL server provisioned for RelStorage.
    Postgres,
}

impl Layer {
    /// Every layer, in the order of the stack file documentation.
    pub const ALL: [Layer; 9] = [
        Layer::Lb,
        Layer::PloneInstances,
        Layer::Zeoserver,
        Layer::SharedBlobs,
        Layer::Solr,
        Layer::CeleryBroker,
        Layer::Memcached,
        Layer::DbPacking,
        Layer::Postgres,
    ];

    /// The name used in the stack file.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Lb => "lb",
            Layer::PloneInstances => "plone_instances",
            Layer::Zeoserver => "zeoserver",
            Layer::SharedBlobs => "shared_blobs",
            Layer::Solr => "solr",
            Layer::CeleryBroker => "celery_broker",
            Layer::Memcached => "memcached",
            Layer::DbPacking => "db_packing",
            Layer::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`Layer::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown layer `{name}`{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
pub struct UnknownLayer {
    pub name: String,
    pub suggestion: Option<String>,
}

impl FromStr for Layer {
    type Err = UnknownLayer;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Layer::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| UnknownLayer {
                name: s.to_string(),
                suggestion: super::error::nearest(s, Layer::ALL.iter().map(|l| l.as_str())),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for layer in Layer::ALL {
            let json = serde_json::to_string(&layer).unwrap();
            assert_eq!(json, format!("\"{layer}\""));
            assert_eq!(layer.as_str().parse::<Layer>().unwrap(), layer);
        }
        let err = "zeoservr".parse::<Layer>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown layer `zeoservr`; did you mean `zeoserver`?"
        );
    }
}
