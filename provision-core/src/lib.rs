//! The core of `provision`: hosts (SSH and local), facts, resources, the plan/apply engine, the
//! template environment and the stack model. Layer crates turn (stack, host, facts) into
//! resources; this crate checks and applies them.

// Without `hosts` (the fuzz target's build) the resources' check and apply halves have no caller.
#![cfg_attr(not(feature = "hosts"), allow(dead_code))]

#[cfg(feature = "hosts")]
pub mod engine;
#[cfg(feature = "hosts")]
pub mod facts;
pub mod firewall;
#[cfg(feature = "hosts")]
pub mod host;
pub mod phase;
pub mod resource;
pub mod shell;
pub mod stack;
pub mod system;
pub mod template;
#[cfg(feature = "hosts")]
pub mod testing;
