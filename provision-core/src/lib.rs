//! The core of `provision`: hosts (SSH and local), facts, resources, the plan/apply engine, the
//! template environment and the stack model. Layer crates turn (stack, host, facts) into
//! resources; this crate checks and applies them.

pub mod engine;
pub mod facts;
pub mod firewall;
pub mod host;
pub mod phase;
pub mod resource;
pub mod shell;
pub mod stack;
pub mod system;
pub mod template;
pub mod testing;
