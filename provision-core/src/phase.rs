//! The lifecycle phases (the OpsWorks events a resource belongs to).

/// When a resource is converged. `up` runs all phases in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Packages, users, directories, units: what a new host needs once.
    Setup,
    /// Everything that depends on the stack's membership (addresses of other hosts).
    Configure,
    /// Releases of the apps.
    Deploy,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Setup, Phase::Configure, Phase::Deploy];
}
