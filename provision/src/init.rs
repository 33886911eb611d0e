//! `provision init`: a commented starter stack file for one of three shapes.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::{BadInput, EXIT_OK};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// What the stack looks like.
    #[arg(long, value_enum, default_value_t = Shape::Single)]
    pub shape: Shape,
    /// The file to write.
    #[arg(long, short = 'o', default_value = "stack.toml", value_name = "FILE")]
    pub out: PathBuf,
    /// Overwrite the file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// One host with every layer: lb, plone_instances, zeoserver.
    Single,
    /// An lb host, two instance hosts, and a db host with zeoserver and shared_blobs (NFS).
    Cluster,
    /// An lb host, two instance hosts (one also db_packing), and a postgres host.
    Relstorage,
}

impl Shape {
    /// The stack file of this shape.
    pub fn template(self) -> &'static str {
        match self {
            Shape::Single => include_str!("init/single.toml"),
            Shape::Cluster => include_str!("init/cluster.toml"),
            Shape::Relstorage => include_str!("init/relstorage.toml"),
        }
    }

    fn described(self) -> &'static str {
        match self {
            Shape::Single => "one host: web1 (lb, plone_instances, zeoserver)",
            Shape::Cluster => {
                "a small cluster: lb1 (lb), app1 and app2 (plone_instances), db1 (zeoserver, \
                 shared_blobs)"
            }
            Shape::Relstorage => {
                "a RelStorage cluster: lb1 (lb), app1 (plone_instances, db_packing), app2 \
                 (plone_instances), db1 (postgres)"
            }
        }
    }
}

/// Writes the starter file; an existing file is left alone without `--force` (bad input).
pub fn run(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let out = &args.out;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        // Refused atomically: a file created meanwhile is not overwritten either.
        options.create_new(true);
    }
    let mut file = match options.open(out) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(BadInput(format!(
                "{} already exists and was left unchanged: pass --force to overwrite it, or \
                 --out another file",
                out.display()
            ))
            .into());
        }
        Err(e) => {
            return Err(BadInput(format!("cannot write {}: {e}", out.display())).into());
        }
    };
    file.write_all(args.shape.template().as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    crate::out!(
        "wrote {}: {}\nnext: replace the addresses (marked REPLACE) and the app's repository, \
         then run `provision plan --stack {}`",
        out.display(),
        args.shape.described(),
        out.display()
    );
    Ok(ExitCode::from(EXIT_OK))
}
