//! `provision`: a thin binary over the provision crates. It reads the stack, connects to the
//! hosts, asks each layer for its resources and prints what happened.

mod cli;
mod cli_docs;
mod deploy;
mod init;
mod layers;
mod lifecycle;
mod migrate;
mod migrate_relstorage;
mod output;
mod restore;
mod run;
mod sandbox_cmd;
mod session;
mod watch;
mod zeo_release;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{BlobsCommand, Cli, CommandKind};

/// Exit codes: every host converged, some host failed, bad input (nothing was changed).
pub const EXIT_OK: u8 = 0;
pub const EXIT_HOST_FAILED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;

/// An error in what the user gave us: printed, exit code 2, no host touched.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_HOST_FAILED);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            // A stack error's message already holds its cause: print it once.
            if let Some(stack_error) = error.downcast_ref::<provision_core::stack::StackError>() {
                eprintln!("error: {stack_error}");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
            eprintln!("error: {error:#}");
            if error.downcast_ref::<BadInput>().is_some() {
                ExitCode::from(EXIT_BAD_INPUT)
            } else {
                ExitCode::from(EXIT_HOST_FAILED)
            }
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    use provision_core::phase::Phase;
    match cli.command {
        CommandKind::Plan(args) => run::converge(&args, &Phase::ALL, true).await,
        CommandKind::Up(args) => run::converge(&args, &Phase::ALL, false).await,
        CommandKind::Setup(args) => run::converge(&args, &[Phase::Setup], false).await,
        CommandKind::Configure(args) => run::converge(&args, &[Phase::Configure], false).await,
        CommandKind::Status(args) => run::status(&args).await,
        CommandKind::Watch {
            stack,
            interval,
            down_after,
            once,
        } => {
            let options = watch::WatchOptions {
                interval: std::time::Duration::from_secs(interval),
                down_after,
                once,
            };
            watch::watch(&stack, options).await
        }
        CommandKind::Shutdown(args) => lifecycle::shutdown(&args).await,
        CommandKind::Undeploy {
            stack,
            app,
            purge_data,
            yes,
        } => lifecycle::undeploy(&stack, &app, purge_data, yes).await,
        CommandKind::Run { stack, command } => run::run_command(&stack, &command.join(" ")).await,
        CommandKind::Deploy {
            stack,
            app,
            revision,
        } => {
            run::check_app(&stack, app.as_deref(), "release")?;
            run::release_command(&stack, run::ReleaseAction::Deploy, revision.as_deref()).await
        }
        CommandKind::Rollback { stack, app } => {
            run::check_app(&stack, app.as_deref(), "release")?;
            run::release_command(&stack, run::ReleaseAction::Rollback, None).await
        }
        CommandKind::Restart(stack) => {
            run::release_command(&stack, run::ReleaseAction::Restart, None).await
        }
        CommandKind::Attributes(args) => run::attributes(&args),
        CommandKind::Backup(args) => run::run_job(&args, run::Job::Backup).await,
        CommandKind::Pack(args) => run::run_job(&args, run::Job::Pack).await,
        CommandKind::Restore {
            stack,
            backup,
            from_s3,
            yes,
        } => {
            let args = restore::RestoreArgs {
                backup: backup.as_deref(),
                from_s3,
                yes,
            };
            restore::restore(&stack, args).await
        }
        CommandKind::Blobs {
            command:
                BlobsCommand::Migrate {
                    stack,
                    to,
                    blob_dir,
                },
        } => migrate::migrate(&stack, to, blob_dir.as_deref()).await,
        CommandKind::Sandbox(args) => sandbox_cmd::run(args).await,
        CommandKind::Init(args) => init::run(&args),
        CommandKind::Completions { shell } => cli_docs::completions(shell),
        CommandKind::Man { out } => cli_docs::man(&out),
        CommandKind::Reference => cli_docs::reference(),
    }
}
