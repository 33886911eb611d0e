//! The core of `provision`: hosts (SSH and local), facts, resources, the plan/apply engine, the
//! template environment and the stack model. Layer crates turn (stack, host, facts) into
//! resources; this crate checks and applies them.

pub mod host;
pub mod shell;
pub mod stack;
pub mod testing;
pub mod facts;
pub mod engine;
pub mod resource;
pub mod template;
pub mod phase;
pub mod system;
