//! Helpers of the end-to-end tests: run the `provision` binary, read its output, write a
//! stack named after a sandbox, wait for a condition.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use provision_sandbox::fixture;

/// Runs the `provision` binary in `dir` with `args` and extra environment variables.
pub fn provision(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_provision"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("PROVISION_STACK");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the provision binary runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// stdout as JSON; panics with both streams when it is not.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// Asserts exit code 0, showing both streams when not.
pub fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A stack named after the sandbox, so that `--sandbox` finds its hosts.
pub fn write_stack(dir: &Path, hosts: &fixture::Hosts, body: &str) {
    std::fs::write(
        dir.join("stack.toml"),
        format!("[stack]\nname = \"{}\"\n\n{body}", hosts.name()),
    )
    .unwrap();
}

/// Polls `check` every 500 ms; panics when it is not true within `limit`.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}
