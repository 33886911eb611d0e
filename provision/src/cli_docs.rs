//! `provision completions SHELL` and `provision man`, generated from the CLI definition, and
//! `provision reference`, generated from the stack file's.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::EXIT_OK;
use crate::cli::Cli;

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "provision", &mut script);
    let script = String::from_utf8(script).context("the completion script is not UTF-8")?;
    crate::out!("{}", script.strip_suffix('\n').unwrap_or(&script));
    Ok(ExitCode::from(EXIT_OK))
}

/// Writes `provision.1` and one page per subcommand (`provision-plan.1`, ...) into `dir`.
pub fn man(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing the man pages into {}", dir.display()))?;
    crate::out!(
        "wrote the man pages into {}; read one with `man -l {}`",
        dir.display(),
        dir.join("provision.1").display()
    );
    Ok(ExitCode::from(EXIT_OK))
}

/// Prints the stack file reference (docs/stack-reference.md) on stdout.
pub fn reference() -> anyhow::Result<ExitCode> {
    crate::out!("{}", provision_core::stack::reference_markdown());
    Ok(ExitCode::from(EXIT_OK))
}
