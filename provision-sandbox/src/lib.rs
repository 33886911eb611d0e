//! Local multi-host test bed: real Debian hosts with systemd as PID 1, each in
//! its own network namespace on a bridge, over an overlay root on a shared
//! debootstrap'ed base, reached over SSH with strict host-key checking.
//!
//! - [`Sandbox`]: `up` / `down` / `status` / `exec` of a named set of hosts;
//!   `up` writes `inventory.json` ([`Inventory`]) in the sandbox's state directory.
//! - [`Host`]: one host, with the faults tests inject (`crash`, `power_cut`,
//!   `partition`/`heal`, `isolate_from`, `freeze`/`thaw`, `start` again).
//! - [`fixture`]: N booted hosts for a test, destroyed on drop.
//! - [`proxy`]: the egress proxy that lets hosts reach only the machine's
//!   package registries.
//!
//! See `reference/testbed.md` for what this machine kind supports and why each
//! step is done the way it is.

mod base;
mod cgroup;
mod config;
mod egress;
mod error;
pub mod fixture;
mod host;
mod inotify;
mod inventory;
mod names;
mod net;
mod process;
pub mod proxy;
mod sandbox;
mod stack;
mod state;
mod tools;

pub use config::{Config, DEFAULT_CACHE_DIR, DEFAULT_STATE_DIR, DEFAULT_SUBNET, Subnet};
pub use egress::{Allowlist, Egress, PipSettings};
pub use error::{Error, MissingTool, Result};
pub use host::{Host, read_banner};
pub use inventory::{Inventory, InventoryHost};
pub use names::{MAX_HOST_NAME, MAX_SANDBOX_NAME, check_host_name, check_sandbox_name};
pub use process::exit_code;
pub use sandbox::{
    HostStatus, Progress, ProxyMode, Sandbox, Status, UpOptions, unavailable_reason,
};
pub use stack::{StackHosts, parse_stack, read_stack};

/// The shared base image.
pub mod base_image {
    pub use crate::base::{PACKAGES, SUITE, VARIANT, is_built, path, recipe, recipe_hash};

    /// Builds the base if missing (about 100 s with debootstrap) and returns its path.
    pub fn ensure(
        cache_root: &std::path::Path,
        progress: &dyn Fn(&str),
    ) -> crate::Result<std::path::PathBuf> {
        crate::base::ensure(cache_root, true, progress)
    }
}

/// Tool discovery: what the sandbox needs on the machine.
pub mod machine_tools {
    pub use crate::tools::{BUILD, RUN, ToolSpec, Tools};
}
