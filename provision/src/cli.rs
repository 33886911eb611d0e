//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::sandbox_cmd::SandboxArgs;

/// Build, deploy and operate a production Plone/ZODB stack on plain Linux hosts over SSH.
#[derive(Debug, Parser)]
#[command(name = "provision", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: CommandKind,
}

/// Options shared by every command that works on a stack.
#[derive(Debug, Args, Clone)]
pub struct StackArgs {
    /// The stack file.
    #[arg(
        long,
        short = 's',
        default_value = "stack.toml",
        env = "PROVISION_STACK"
    )]
    pub stack: PathBuf,
    /// An OpsWorks Custom JSON file, deep-merged over the stack's [attributes].
    #[arg(long, value_name = "FILE")]
    pub custom_json: Option<PathBuf>,
    /// Only these hosts (repeatable).
    #[arg(long = "host", short = 'H', value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Only hosts with these layers (repeatable).
    #[arg(long = "layer", short = 'l', value_name = "LAYER")]
    pub layers: Vec<String>,
    /// How many hosts to work on at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// Print the result as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Learn the host keys of hosts not yet in known_hosts (a changed key is still refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Seconds a restarted Plone client has to answer its health URL before its host goes back
    /// to the previous release.
    #[arg(long, default_value_t = 180, value_name = "SECONDS")]
    pub health_timeout: u64,
    /// How many Plone clients a rolling restart takes out of HAProxy at once, across all
    /// hosts: whole hosts go together while their clients add up to at most N.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    pub max_in_flight: u16,
    /// How many instance hosts may fail a deploy (a count, or a percentage of the instance
    /// hosts) before the rollout stops. The failed hosts are skipped; once failures exceed
    /// the limit, every host not switched yet stays on its old release. Default 0: the first
    /// failure stops the rollout.
    #[arg(long, default_value = "0", value_name = "N|P%")]
    pub max_fail: crate::deploy::MaxFail,
    /// Seconds one command on a host may take before that host is reported as failed
    /// (default: `[stack.ssh] command_timeout`, 1800). An unreachable or hung host is also
    /// given up after 3 unanswered SSH keepalives (45 to 60 s).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Reach the hosts of this stack in the local sandbox (`provision sandbox up`) instead of
    /// their addresses in the stack file.
    #[arg(long)]
    pub sandbox: bool,
}

#[derive(Debug, Subcommand)]
pub enum CommandKind {
    /// Show, per host, what `up` would change (diffs with secrets masked); change nothing.
    Plan(StackArgs),
    /// Set up, configure and deploy every host where it is out of date.
    Up(StackArgs),
    /// Install packages, users, directories and units.
    Setup(StackArgs),
    /// Re-render everything that depends on the stack's membership; reload what changed.
    Configure(StackArgs),
    /// Build a new release of the app on every instance host, then switch and restart the
    /// clients one by one, drained in HAProxy.
    Deploy {
        #[command(flatten)]
        stack: StackArgs,
        /// The app (default: every app of the stack).
        app: Option<String>,
        #[arg(long)]
        revision: Option<String>,
    },
    /// Put the previous release back on every instance host, with a rolling restart.
    Rollback {
        #[command(flatten)]
        stack: StackArgs,
        app: Option<String>,
    },
    /// Restart the Plone clients one by one, drained in HAProxy and health-checked.
    Restart(StackArgs),
    /// Take one host (--host NAME) out of service, as before it is retired: out of HAProxy
    /// first, then its services stopped.
    ///
    /// Its Plone clients are drained in every HAProxy through the runtime socket (waiting for
    /// their requests to end, at most 30 s) and set to MAINT; then its services are stopped,
    /// clients before what they depend on (frontend, Plone clients, Celery, jobs, Solr,
    /// Redis, memcached, ZEO, PostgreSQL, blob server). The stack file is not changed: remove
    /// the host there, then `provision configure` updates the frontends.
    Shutdown(StackArgs),
    /// Remove an app from its instance hosts: services stopped and disabled, releases
    /// removed; its data stays unless --purge-data.
    ///
    /// Its Plone clients and Celery units are stopped and disabled; its releases, `current`,
    /// `previous` and build state (repository mirror, virtualenv, eggs, downloads, extends)
    /// are removed. `shared/var` (filestorage, blobs, logs) and other shared directories stay
    /// unless --purge-data, which removes the app's whole directory; the database layers' own
    /// stores are never touched.
    Undeploy {
        #[command(flatten)]
        stack: StackArgs,
        /// The app (the one the stack's instances run).
        app: String,
        /// Also remove the app's data: its whole directory, `shared/` included. Asks for
        /// confirmation on a terminal; needs --yes otherwise.
        #[arg(long)]
        purge_data: bool,
        /// Do not ask: really remove the app's data with --purge-data.
        #[arg(long)]
        yes: bool,
    },
    /// Show each host: reachable, facts, layers, clients.
    Status(StackArgs),
    /// Self-healing: probe every host each round; take an instance host that stopped
    /// answering out of the frontend, and put it back when it returns.
    ///
    /// Runs in the foreground until Ctrl-C or SIGTERM (run it under systemd or tmux). Each
    /// round connects to every selected host over SSH and runs a trivial command, all hosts
    /// at once, each given the interval (at least 5 s, at most 30 s). An instance host
    /// (`plone_instances`) that failed --down-after probes in a row is away: the lb hosts are
    /// reconfigured (the Configure phase of their lb layer) with HAProxy listing none of its
    /// clients. Once it answers again and each of its clients answers the health URL
    /// (`haproxy.health_check_url`), the lb hosts are reconfigured with every client. One
    /// line per event on stdout, with the UTC time. An lb host that cannot be reconfigured
    /// is reported and tried again the next round. Other hosts going away are reported
    /// only. The first round also brings every lb host up to date.
    Watch {
        #[command(flatten)]
        stack: StackArgs,
        /// Seconds between the starts of two rounds.
        #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        interval: u64,
        /// Failed probes in a row after which a host is away.
        #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        down_after: u32,
        /// One round, then exit (for cron): nothing is remembered between runs, so one failed
        /// probe makes a host away. Exit code 1 when an lb host could not be reconfigured.
        #[arg(long)]
        once: bool,
    },
    /// Run a one-off shell command on the selected hosts (as root).
    Run {
        #[command(flatten)]
        stack: StackArgs,
        /// The command, passed to /bin/sh.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Back up the database now: repozo and a blob snapshot on the zeoserver host, or for
    /// RelStorage a pg_dump on the postgres host.
    Backup(StackArgs),
    /// Pack the database now: zeopack on the zeoserver host, or zodbpack on the db_packing
    /// host for RelStorage.
    Pack(StackArgs),
    /// Put the database back as of its newest backup (or --backup): on the zeoserver host
    /// (ZEO stopped meanwhile, and the Plone clients, whose caches are then newer than the
    /// database), or for RelStorage on the postgres host (pg_restore --clean; the clients
    /// reconnect). Every change since the backup is lost, so it needs --yes.
    Restore {
        #[command(flatten)]
        stack: StackArgs,
        /// The backup's UTC time stamp, YYYY-MM-DD-HH-MM-SS (default: the newest).
        #[arg(long, value_name = "NAME")]
        backup: Option<String>,
        /// Fetch the backup from the S3 copies first (plone_zeoserver.backup_s3), e.g. on a
        /// new host.
        #[arg(long)]
        from_s3: bool,
        /// Really replace the live database.
        #[arg(long)]
        yes: bool,
    },
    /// Print the stack's effective attributes: the defaults, the stack's [attributes] and the
    /// custom JSON merged, secrets masked. Reads no host.
    Attributes(StackArgs),
    /// The blob store: `migrate --to KIND` moves every blob file to another store while the
    /// site runs.
    Blobs {
        #[command(subcommand)]
        command: BlobsCommand,
    },
    /// Print the stack file reference as Markdown: every layer, table and attribute with its
    /// type, default and description, from the definitions the stack file is validated with
    /// (docs/stack-reference.md is its output).
    Reference,
    /// Local test hosts (systemd-nspawn) for a stack.
    Sandbox(SandboxArgs),
    /// Write a commented starter stack file: one host, a small ZEO cluster, or a RelStorage
    /// cluster. An existing file is left alone unless --force.
    Init(crate::init::InitArgs),
    /// Print a shell completion script, e.g. `provision completions bash >
    /// /etc/bash_completion.d/provision`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages: provision.1 and one per subcommand (provision-plan.1, ...).
    Man {
        /// The directory to write them into (created if missing).
        #[arg(long, default_value = ".", value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum BlobsCommand {
    /// Copy every blob file to another store, check each copy's sha256, switch the stack file
    /// and the hosts to it, and restart the clients one by one. Interrupted, it resumes; a
    /// copy that differs stops it before the switch. The old store is left as it was.
    ///
    /// With RelStorage (`enable_relstorage`) the blobs move between the database (`--to
    /// local`, alias `database`) and a shared NFS or GlusterFS mount (`shared-blob-dir`; not
    /// S3): zodbconvert copies the database, blobs included, into a new database on the
    /// postgres host while the site runs, and the live revision is built with the new
    /// settings. Then a short write freeze, as every client must change database at once: all
    /// clients stop, `zodbconvert --incremental` copies what was written meanwhile, every
    /// blob is checked (count and sha256), the new releases go live, the stack file names the
    /// new database, and the clients start. The report gives the seconds of the freeze. A
    /// mismatch restarts the clients on the old database, which is never changed nor
    /// dropped.
    Migrate {
        #[command(flatten)]
        stack: StackArgs,
        /// The new store.
        #[arg(long, value_enum)]
        to: crate::layers::blobs::StoreKind,
        /// The directory of the new store (`plone_blobs.blob_dir`) for `local` and `s3`.
        /// Default for `local`: the ZEO server's own, or /var/lib/zeo/blobstorage-local when
        /// that path links to the store the blobs leave; for `s3`: `<mount path>/blobstorage`.
        /// Clients on other hosts than the ZEO server's then get their blobs through ZEO
        /// (`plone_instances.shared_blobs = false`, set first); moving to a shared store sets
        /// it back to true.
        #[arg(long, value_name = "DIR")]
        blob_dir: Option<String>,
    },
}
