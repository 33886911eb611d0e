//! `provision blobs migrate` for a RelStorage stack. Its blobs live in the database
//! (`shared-blob-dir false`, the recommended way) or, when the instances share an NFS or
//! GlusterFS mount, only in that directory (`shared-blob-dir true`). Moving them means
//! converting the database, which RelStorage does with `zodbconvert`:
//!
//! 1. The new store is made ready (as for ZEO), and a new database is created beside the old
//!    one in the same PostgreSQL cluster, reachable by the same role from the same hosts.
//! 2. From the first instance host, with the Python of its live release: a full
//!    `zodbconvert` from the old database (and its blobs) into the new one (with the blobs
//!    where they are to live), while the site runs.
//! 3. Every blob the copy holds is compared by sha256 with the source's.
//! 4. The live revision is built on every instance host with the new settings (not live).
//! 5. A short write freeze, because every client must change database at the same moment:
//!    the clients (and Celery workers) stop, `zodbconvert --incremental` copies the
//!    transactions written meanwhile, the new blobs are checked (count and sha256 of all),
//!    the prebuilt releases go live, the stack file switches to the new database and blob
//!    settings, the clients start and answer. Then `up` converges the rest (pg_hba.conf,
//!    mounts, pack jobs).
//!
//! Any failure before the switch starts the clients again on the old database, which nothing
//! changed. The old database is never dropped; the report names it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use provision_core::engine::Progress as _;
use provision_core::host::{Command, Host};
use provision_core::phase::Phase;
use provision_core::shell::quote;
use provision_core::stack::{AppKind, HostSpec, Layer, Stack};
use provision_core::template::Templates;
use provision_plone::InstanceSettings;
use provision_plone::deploy;
use provision_zeo::client::DbConnection;

use crate::cli::StackArgs;
use crate::layers::blobs::{self, StoreKind};
use crate::layers::{self, database};
use crate::migrate::{
    PendingStack, connect_one, edit_stack, failure, human_bytes, prepare, run, switch_links,
};
use crate::session::{Session, StderrProgress};
use crate::{BadInput, EXIT_OK};

/// How long one `zodbconvert` or check may run.
const COPY_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Where the blobs of a RelStorage stack are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    /// In the database (`shared-blob-dir false`); each host keeps a blob cache.
    Database,
    /// Only in a directory the instances share (`shared-blob-dir true`).
    Shared(StoreKind),
}

impl std::fmt::Display for Where {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Where::Database => f.write_str("the database"),
            Where::Shared(kind) => write!(f, "{kind}"),
        }
    }
}

/// Where the stack's settings put the blobs; the same rule as
/// [`database::relstorage_settings`].
fn blobs_of(stack: &Stack) -> Where {
    let pi = &stack.attributes().plone_instances;
    if !(pi.shared_blobs && (pi.nfs_blobs || pi.gluster_blobs)) {
        Where::Database
    } else if pi.gluster_blobs {
        Where::Shared(StoreKind::Glusterfs)
    } else {
        Where::Shared(StoreKind::Nfs)
    }
}

/// Prepended to each Python script: puts the live release's packages on `sys.path`. Its
/// first argument is a buildout script of the release (`bin/client1`, whose
/// `sys.path[0:0] = [...]` names its eggs), or `-` for a virtualenv's own Python.
const PRELUDE_PY: &str = r#"import ast, re, sys
_script = sys.argv.pop(1)
if _script != "-":
    _found = re.search(r"sys\.path\[0:0\] = (\[.*?\])", open(_script).read(), re.S)
    if not _found:
        raise SystemExit("no sys.path list in " + _script)
    sys.path[0:0] = ast.literal_eval(_found.group(1))
"#;

const ZODBCONVERT_PY: &str = r#"
from relstorage.zodbconvert import main
main(["zodbconvert"] + sys.argv[1:])
"#;

/// Compares the blobs of the config's `source` and `destination` storages: every blob record
/// (oid, tid) of each, by sha256. A blob (oid, tid) never changes once committed, so those
/// checked before (argv[2], a JSON state file) are not read again. `partial` (during the
/// copy, while the site writes) checks the records both sides have; `final` also wants the
/// same records on both. argv[3:5]: 1 when the source / destination blob directory is a
/// cache, whose files are removed once hashed. Prints one JSON line.
const VERIFY_PY: &str = r#"
import hashlib, json, os
from io import StringIO
import ZConfig
from ZODB.blob import is_blob_record
from ZODB.utils import u64

SCHEMA = """<schema><import package="ZODB"/><import package="relstorage"/>
<section type="ZODB.storage" name="source" attribute="source" required="yes"/>
<section type="ZODB.storage" name="destination" attribute="destination" required="yes"/>
</schema>"""
config_path, state_path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
src_cache, dst_cache = sys.argv[4] == "1", sys.argv[5] == "1"
config, _ = ZConfig.loadConfig(ZConfig.loadSchemaFile(StringIO(SCHEMA)), config_path)
source, destination = config.source.open(), config.destination.open()

def blobs(storage):
    found = {}
    records = storage.iterator()
    try:
        for txn in records:
            for record in txn:
                if record.data and is_blob_record(record.data):
                    found["%016x.%016x" % (u64(record.oid), u64(record.tid))] = (record.oid, record.tid)
    finally:
        if hasattr(records, "close"):
            records.close()
    return found

def digest(storage, oid, tid, cache):
    path = storage.loadBlob(oid, tid)
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            size += len(chunk)
    if cache:
        try:
            os.remove(path)
        except OSError:
            pass
    return sha.hexdigest(), size

state = {}
if os.path.exists(state_path):
    with open(state_path) as f:
        state = json.load(f)
src, dst = blobs(source), blobs(destination)
missing = sorted(set(src) - set(dst))
extra = sorted(set(dst) - set(src))
bad, hashed, size_total = [], 0, 0
for key in sorted(set(src) & set(dst)):
    if key in state:
        size_total += state[key][1]
        continue
    oid, tid = src[key]
    a = digest(source, oid, tid, src_cache)
    b = digest(destination, oid, tid, dst_cache)
    hashed += 1
    if a != b:
        bad.append(key)
    else:
        state[key] = [a[0], a[1]]
        size_total += a[1]
with open(state_path + ".tmp", "w") as f:
    json.dump(state, f)
os.rename(state_path + ".tmp", state_path)
source.close()
destination.close()
print(json.dumps({"source": len(src), "destination": len(dst), "missing": missing,
                  "extra": extra, "bad": bad, "hashed": hashed, "bytes": size_total,
                  "mode": mode}))
"#;

/// What the check printed.
#[derive(Debug, serde::Deserialize)]
struct Checked {
    source: usize,
    destination: usize,
    missing: Vec<String>,
    extra: Vec<String>,
    bad: Vec<String>,
    hashed: usize,
    bytes: u64,
}

/// The instance host that runs the copy, and how it runs the release's Python.
struct Runner {
    host: Host,
    user: String,
    /// The release's Python as a shell fragment (already quoted: a `#!` line may be
    /// `/usr/bin/env python3`).
    python: String,
    first_arg: String,
    /// The migration's own directory on the host (configs, caches, the check's state).
    work: String,
}

impl Runner {
    /// The shell command that runs `script` (after [`PRELUDE_PY`]) with `args`.
    fn python(&self, script: &str, args: &[&str]) -> String {
        let mut line = format!(
            "runuser -u {} -- {} -c {} {}",
            quote(&self.user),
            self.python,
            quote(&format!("{PRELUDE_PY}{script}")),
            quote(&self.first_arg)
        );
        for arg in args {
            line.push(' ');
            line.push_str(&quote(arg));
        }
        line
    }

    /// Runs `script` with the zodbconvert config `config` written (mode 0600, the app's) for
    /// the time of the command only: it holds the database password.
    async fn with_config(
        &self,
        session: &Session,
        step: &str,
        config: &str,
        script: &str,
        args: &[&str],
    ) -> anyhow::Result<String> {
        let file = format!("{}/convert.conf", self.work);
        let mut all = vec![file.as_str()];
        all.extend_from_slice(args);
        let command = format!(
            "set -e\nF={f}\ntrap 'rm -f \"$F\"' EXIT\numask 077\n\
             runuser -u {u} -- sh -c 'umask 077; cat > \"$1\"' sh \"$F\"\n{run}",
            f = quote(&file),
            u = quote(&self.user),
            run = self.python(script, &all)
        );
        run(
            &self.host,
            step,
            Command::new(command)
                .stdin(config.as_bytes().to_vec())
                .timeout(COPY_TIMEOUT),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", session.mask(&format!("{e:#}"))))
    }
}

pub async fn migrate(
    session: Session,
    args: &StackArgs,
    to: StoreKind,
    blob_dir: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let stack = &session.stack;
    let from = blobs_of(stack);
    let want = match to {
        StoreKind::Local => Where::Database,
        StoreKind::Nfs | StoreKind::Glusterfs => Where::Shared(to),
        StoreKind::S3 => {
            return Err(BadInput(
                "blobs migrate --to s3: a RelStorage stack shares blobs only over NFS or \
                 GlusterFS. With shared-blob-dir, RelStorage keeps the only copy of each blob \
                 in the shared directory and needs POSIX file locks and atomic renames across \
                 hosts, which an s3fs mount does not give; and the clients' settings never \
                 make an S3 directory shared. Keep the blobs in the database (--to local; back \
                 the database up to S3) or use --to nfs or --to glusterfs. Nothing was changed."
                    .to_string(),
            )
            .into());
        }
    };
    if blob_dir.is_some() {
        return Err(BadInput(
            "blobs migrate --blob-dir: with RelStorage the blobs go into the database (--to \
             local) or the shared mount (/mnt/shared/blobs); there is no directory to choose. \
             Nothing was changed."
                .to_string(),
        )
        .into());
    }
    if want == from {
        crate::out!("the blobs are already in {from}; nothing to do");
        return Ok(ExitCode::from(EXIT_OK));
    }
    if let (Where::Shared(a), Where::Shared(b)) = (from, want) {
        return Err(BadInput(format!(
            "blobs migrate --to {b}: the blobs are in {a}, which is mounted at the same place \
             ({}) as {b} would be. Move them into the database first (--to local), then to \
             {b}. Nothing was changed.",
            blobs::SHARED_MOUNT
        ))
        .into());
    }
    let old = match database::db_connection(stack)? {
        DbConnection::Params { name, user, .. } => (name, user),
        DbConnection::Dsn(_) => {
            return Err(BadInput(
                "blobs migrate: the RelStorage database is given as a DSN \
                 (plone_instances.relstorage.db.dsn); moving the blobs makes a new database \
                 through the postgres host, so name it by the postgres layer and \
                 plone_instances.relstorage.db.name instead. Nothing was changed."
                    .to_string(),
            )
            .into());
        }
    };
    let (old_db, role) = old;
    let db_host = match stack.hosts_with(Layer::Postgres).first() {
        Some(host)
            if stack
                .attributes()
                .plone_instances
                .relstorage
                .db
                .host
                .is_none() =>
        {
            *host
        }
        _ => {
            return Err(BadInput(
                "blobs migrate: the RelStorage database is not on a host of this stack with \
                 the postgres layer; the new database is made there. Nothing was changed."
                    .to_string(),
            )
            .into());
        }
    };
    let instance_hosts = stack.hosts_with(Layer::PloneInstances);
    let Some(&first) = instance_hosts.first() else {
        return Err(BadInput(
            "blobs migrate: no host has the plone_instances layer, whose release has the \
             RelStorage that copies the database. Nothing was changed."
                .to_string(),
        )
        .into());
    };
    let new_db = new_database_name(&old_db);

    // The stack as it will be: the new database, the new blob settings.
    let text = std::fs::read_to_string(&session.args.stack)
        .with_context(|| format!("reading {}", session.args.stack.display()))?;
    let edited = edit_stack(&text, &session, to, None)?;
    let edited = set_database(&edited, &new_db, want != Where::Database)?;
    let (pending_guard, target) = PendingStack::write(
        &session.args,
        "blobs-migrate",
        &edited,
        &format!("the stack with its blobs in {want}"),
    )?;
    if blobs_of(&target.stack) != want {
        bail!("the edited stack file does not put the blobs in {want}; nothing was changed");
    }
    crate::out!(
        "moving the blobs from {from} (database {old_db}) to {want} (new database {new_db} on \
         host {}), copying on host {}",
        db_host.name,
        first.name
    );

    let progress = StderrProgress::new();
    prepare(&target, &progress).await?;
    let runner = runner(&session, first, &new_db).await?;
    let db = connect_one(&session, db_host).await?;
    create_database(&db, &old_db, &new_db, &role).await?;
    let packer = pause_packing(&session).await?;

    // The configs of the copy: the old stack's storage as the source, the new one's as the
    // destination; a blob cache of the migration's own for a side with blobs in the database.
    let templates = Templates::new(&layers::all_templates()).context("loading templates")?;
    let side = |stack: &Stack, place: Where, name: &str, cache: &str| -> anyhow::Result<String> {
        let dir = match place {
            Where::Database => cache.to_string(),
            Where::Shared(_) => blobs::store(stack).dir,
        };
        let mut settings = database::relstorage_settings(stack, &dir)?;
        settings.cache_servers.clear();
        let section = provision_zeo::client::relstorage_section(&settings, &templates)?;
        Ok(section.replacen("<relstorage>", &format!("<relstorage {name}>"), 1))
    };
    let config = format!(
        "{}\n{}\n{}",
        provision_zeo::client::RELSTORAGE_IMPORT,
        side(
            stack,
            from,
            "source",
            &format!("{}/source-cache", runner.work)
        )?,
        side(
            &target.stack,
            want,
            "destination",
            &format!("{}/destination-cache", runner.work)
        )?
    );
    let caches = [
        if from == Where::Database { "1" } else { "0" },
        if want == Where::Database { "1" } else { "0" },
    ];
    let state = format!("{}/verified.json", runner.work);

    // The live revision, built with the new settings while the site runs: the freeze then
    // only switches `current`.
    let prebuilt = match prebuild(&target, &progress, &templates).await {
        Ok(prebuilt) => prebuilt,
        Err(error) => {
            resume_packing(&session, packer).await;
            forget_database(&db, &new_db).await;
            bail!(
                "{error:#}\nNothing was switched: the site still uses database {old_db}; the \
                 empty database {new_db} on host {} was left (drop it when done)",
                db_host.name
            );
        }
    };

    let copied_at = Instant::now();
    progress.step(
        runner.host.name(),
        &format!("zodbconvert: full copy of {old_db} into {new_db}"),
    );
    let result = async {
        runner
            .with_config(
                &session,
                &format!("zodbconvert (full copy of {old_db} into {new_db})"),
                &config,
                ZODBCONVERT_PY,
                &[],
            )
            .await?;
        progress.step(
            runner.host.name(),
            "checking the copied blobs (sha256) while the site runs",
        );
        let checked = check(&session, &runner, &config, &state, "partial", caches).await?;
        if !checked.bad.is_empty() {
            bail!(mismatch(&checked, &new_db));
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(error) = result {
        resume_packing(&session, packer).await;
        forget_database(&db, &new_db).await;
        bail!(
            "{error:#}\nNothing was switched: the site still uses database {old_db}, untouched; \
             the partial copy {new_db} on host {} was left for inspection (drop it when done)",
            db_host.name
        );
    }
    let full_copy = copied_at.elapsed();

    // The write freeze.
    let frozen_at = Instant::now();
    let stopped = stop_clients(&session).await?;
    let result = async {
        progress.step(
            runner.host.name(),
            "zodbconvert --incremental: the transactions written meanwhile",
        );
        runner
            .with_config(
                &session,
                "zodbconvert --incremental (the final catch-up)",
                &config,
                ZODBCONVERT_PY,
                &["--incremental"],
            )
            .await?;
        progress.step(runner.host.name(), "checking every blob (count and sha256)");
        let checked = check(&session, &runner, &config, &state, "final", caches).await?;
        if !checked.bad.is_empty() || !checked.missing.is_empty() || !checked.extra.is_empty() {
            bail!(mismatch(&checked, &new_db));
        }
        anyhow::Ok(checked)
    }
    .await;
    let checked = match result {
        Ok(checked) => checked,
        Err(error) => {
            let restarted = start_again(&session, &stopped).await;
            resume_packing(&session, packer).await;
            forget_database(&db, &new_db).await;
            bail!(
                "{error:#}\nNothing was switched: the site is back on database {old_db}, \
                 untouched ({restarted}); the copy {new_db} on host {} was left for inspection \
                 (drop it when done)",
                db_host.name
            );
        }
    };

    // The releases with the new settings go live (their clients are stopped).
    if let Err(error) = go_live(&target, &prebuilt, &templates).await {
        let restarted = start_again(&session, &stopped).await;
        resume_packing(&session, packer).await;
        forget_database(&db, &new_db).await;
        bail!(
            "{error:#}\nNothing was switched: the site is back on database {old_db}, untouched \
             ({restarted}); the copy {new_db} on host {} was left for inspection (drop it when \
             done)",
            db_host.name
        );
    }

    // The switch. From here the stack file names the new database.
    pending_guard.switch()?;
    crate::out!(
        "{} now names database {new_db}, blobs in {want}",
        session.args.stack.display()
    );
    match want {
        Where::Shared(_) => {
            let store = blobs::store(&target.stack);
            switch_links(&target, &store).await?;
        }
        Where::Database => local_blob_caches(&target).await?,
    }
    // The caches and check state; the configs went after each command.
    let _ = runner
        .host
        .exec(Command::new(format!("rm -rf {}", quote(&runner.work))))
        .await;
    runner.host.close().await;
    db.close().await;
    let started = start_again(&session, &stopped).await;
    let healthy = wait_healthy(&target, &prebuilt, &templates).await;
    let downtime = frozen_at.elapsed();
    crate::out!(
        "write freeze over after {:.1} s: {}",
        downtime.as_secs_f64(),
        if healthy.is_ok() {
            "every client answers on the new database"
        } else {
            started.as_str()
        }
    );

    // Everything else the new settings change (pg_hba.conf, mounts, pack jobs); the release
    // is unchanged by now, and only clients that do not run yet are started.
    let mut up_args = args.clone();
    up_args.hosts.clear();
    up_args.layers.clear();
    let code = crate::run::converge(&up_args, &[Phase::Setup, Phase::Configure], false).await?;
    if let Err(error) = healthy {
        bail!(
            "the blobs are in {want} (database {new_db}) and the stack file says so, but a \
             client did not answer after the switch: {error:#}. The old database {old_db} on \
             host {} is kept",
            db_host.name
        );
    }
    if code != ExitCode::from(EXIT_OK) {
        bail!(
            "the blobs are in {want} (database {new_db}) and the stack file says so, but \
             converging the hosts failed (see above; the clients run on the new database \
             since a write freeze of {:.0} s); fix the cause and run `provision up`. The old \
             database {old_db} on host {} is kept",
            downtime.as_secs_f64(),
            db_host.name
        );
    }
    crate::out!(
        "moved {} blobs ({}) from {from} to {want} in {:.1} s: full copy by zodbconvert into \
         the new database {new_db} in {:.1} s, then a write freeze of {:.1} s (clients stopped, \
         zodbconvert --incremental, count and sha256 of every blob, prebuilt releases live, \
         clients started and answering on the new database); {} blobs hashed during the freeze. The old database {old_db} on \
         host {} is kept, untouched (drop it yourself when sure)",
        checked.source,
        human_bytes(checked.bytes),
        start.elapsed().as_secs_f64(),
        full_copy.as_secs_f64(),
        downtime.as_secs_f64(),
        checked.hashed,
        db_host.name,
    );
    Ok(ExitCode::from(EXIT_OK))
}

/// A release of the live revision with the new settings, built before the freeze; `None`
/// when the live one has them already.
struct Prebuilt {
    spec: HostSpec,
    settings: InstanceSettings,
    release: Option<String>,
}

/// Builds, on every instance host, the live revision with the new stack's settings, without
/// making it live.
async fn prebuild(
    target: &Session,
    progress: &StderrProgress,
    templates: &Templates,
) -> anyhow::Result<Vec<Prebuilt>> {
    let specs = target.stack.hosts_with(Layer::PloneInstances);
    let (connected, failed) = crate::run::connect(target, &specs, progress).await?;
    if let Some(report) = failed.first() {
        bail!("host {}: {}", report.host, failure(report));
    }
    let app = layers::instances::app(&target.stack)?;
    let mut built = Vec::new();
    for (host, facts) in connected {
        let spec = target.stack.host(host.name()).context("a connected host")?;
        let settings = layers::instances::settings(&target.stack, spec, facts.cpus, templates)?;
        let status = run(
            &host,
            "reading the live release",
            Command::new(deploy::release_status(&settings, templates)?),
        )
        .await?;
        let revision = deploy::Report::parse(&status)
            .get("revision")
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "host {}: no live release to rebuild with the new settings: run `provision \
                     up` first",
                    spec.name
                )
            })?;
        let source = layers::instances::source(&target.stack, app, &revision).await?;
        progress.step(
            host.name(),
            &format!("building {revision:.12} with the new settings (the site runs on)"),
        );
        let command = deploy::prepare_release(&settings, &source, None, templates)?
            .timeout(target.command_timeout());
        let output = host
            .exec(command)
            .await
            .with_context(|| format!("host {}: building the release", spec.name))?;
        let prepared = deploy::parse_prepared(&output).map_err(|e| {
            anyhow::anyhow!(
                "host {}: building the release with the new settings: {}",
                spec.name,
                target.mask(&e.to_string())
            )
        })?;
        host.close().await;
        built.push(Prebuilt {
            spec: spec.clone(),
            settings,
            release: match prepared {
                deploy::Prepared::Built { release, .. } => Some(release),
                deploy::Prepared::Unchanged { .. } => None,
            },
        });
    }
    Ok(built)
}

/// Makes the prebuilt releases live, host by host; on a failure the hosts switched already
/// go back to their previous release.
async fn go_live(
    target: &Session,
    prebuilt: &[Prebuilt],
    templates: &Templates,
) -> anyhow::Result<()> {
    let mut switched: Vec<&Prebuilt> = Vec::new();
    let mut failure = None;
    for built in prebuilt {
        let Some(release) = &built.release else {
            continue;
        };
        let result = async {
            let host = connect_one(target, &built.spec).await?;
            let result = run(
                &host,
                &format!("making {release} live"),
                Command::new(deploy::switch_current(&built.settings, release, templates)?),
            )
            .await;
            host.close().await;
            result
        }
        .await;
        match result {
            Ok(_) => switched.push(built),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    let Some(error) = failure else {
        return Ok(());
    };
    for built in switched {
        if let Ok(host) = connect_one(target, &built.spec).await {
            if let Ok(script) = deploy::rollback(&built.settings, templates) {
                let _ = host.exec(Command::new(script)).await;
            }
            host.close().await;
        }
    }
    Err(error)
}

/// Waits until every client answers its health URL.
async fn wait_healthy(
    target: &Session,
    prebuilt: &[Prebuilt],
    templates: &Templates,
) -> anyhow::Result<()> {
    let path = &target.stack.attributes().haproxy.health_check_url;
    for built in prebuilt {
        let host = connect_one(target, &built.spec).await?;
        for client in &built.settings.clients {
            let script = deploy::client_health(
                built.spec.service_address(),
                client.port,
                path,
                target.args.health_timeout,
                templates,
            )?;
            let result = run(
                &host,
                &format!("waiting for {} to answer {path}", client.name),
                Command::new(script),
            )
            .await;
            if let Err(error) = result {
                host.close().await;
                return Err(error);
            }
        }
        host.close().await;
    }
    Ok(())
}

/// `NAME_YYYYMMDDHHMMSS` (UTC), from `old` without such a suffix: a new name each time, so
/// that no database a migration kept is ever reused.
fn new_database_name(old: &str) -> String {
    let base = match old.rsplit_once('_') {
        Some((base, stamp)) if stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()) => {
            base
        }
        _ => old,
    };
    let base: String = base.chars().take(63 - 15).collect();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{base}_{}", crate::output::utc_stamp(secs))
}

/// The stack text with `plone_instances.relstorage.db.name` set to `name`, and
/// `plone_instances.shared_blobs` on when the blobs are to be shared.
fn set_database(text: &str, name: &str, shared: bool) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("parsing the edited stack")?;
    let mut table = doc.as_table_mut();
    for key in ["attributes", "plone_instances"] {
        table = sub_table(table, key)?;
    }
    if shared {
        table["shared_blobs"] = toml_edit::value(true);
    }
    for key in ["relstorage", "db"] {
        table = sub_table(table, key)?;
    }
    table["name"] = toml_edit::value(name);
    Ok(doc.to_string())
}

fn sub_table<'a>(
    table: &'a mut toml_edit::Table,
    key: &str,
) -> anyhow::Result<&'a mut toml_edit::Table> {
    let item = table.entry(key).or_insert_with(|| {
        let mut t = toml_edit::Table::new();
        t.set_implicit(true);
        toml_edit::Item::Table(t)
    });
    if let Some(inline) = item.as_inline_table() {
        *item = toml_edit::Item::Table(inline.clone().into_table());
    }
    item.as_table_mut()
        .with_context(|| format!("`{key}` in the stack file is not a table"))
}

/// The first instance host, its live release's Python (which has RelStorage: the instances
/// open the database with it) and the migration's directory.
async fn runner(session: &Session, spec: &HostSpec, new_db: &str) -> anyhow::Result<Runner> {
    let stack = &session.stack;
    let app = layers::instances::app(stack)?;
    let deploy = stack.deploy_settings(&app.name);
    let deploy_to = app.deploy_to.display().to_string();
    let current = format!("{deploy_to}/current");
    let (python, first_arg) = match app.kind {
        AppKind::Pip => (
            quote(&format!("{current}/.venv/bin/python")),
            "-".to_string(),
        ),
        AppKind::Buildout => (String::new(), format!("{current}/bin/client1")),
    };
    let host = connect_one(session, spec).await?;
    // A buildout script's interpreter is on its first line.
    let python = if python.is_empty() {
        let line = run(
            &host,
            "reading the live release's Python",
            Command::new(format!("head -n 1 {}", quote(&first_arg))),
        )
        .await?;
        line.trim()
            .strip_prefix("#!")
            .map(|p| {
                p.split_whitespace()
                    .map(quote)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .with_context(|| format!("host {}: {first_arg} has no #! line", spec.name))?
    } else {
        python
    };
    // Its own for each migration: a blob cache or check state of an earlier one (the same
    // oids and tids, another database) would hide a bad copy.
    let work = format!("{deploy_to}/shared/var/blobs-migrate/{new_db}");
    let runner = Runner {
        host,
        user: deploy.user.clone(),
        python,
        first_arg,
        work,
    };
    run(
        &runner.host,
        "making the migration's directory",
        Command::new(format!(
            "install -d -m 0700 -o {u} -g {g} {p} && rm -rf {w} && \
             install -d -m 0700 -o {u} -g {g} {w} {w}/source-cache {w}/destination-cache",
            p = quote(&format!("{deploy_to}/shared/var/blobs-migrate")),
            u = quote(&deploy.user),
            g = quote(&deploy.group),
            w = quote(&runner.work)
        )),
    )
    .await?;
    let version = run(
        &runner.host,
        "finding RelStorage in the live release",
        Command::new(runner.python(
            "import relstorage, importlib.metadata as m\nprint(m.version('RelStorage'))\n",
            &[],
        )),
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\nThe live release of {} must have RelStorage (its clients open the database \
             with it): run `provision up` first",
            spec.name
        )
    })?;
    crate::out!(
        "host {}: RelStorage {} of the live release copies the database",
        spec.name,
        version.trim()
    );
    Ok(runner)
}

/// Creates `new` in the cluster of `old`, owned by `role` like the postgres layer makes it,
/// and lets the hosts that may reach `old` reach `new` too, until the switch rewrites
/// pg_hba.conf. A database of that name must not exist yet.
async fn create_database(host: &Host, old: &str, new: &str, role: &str) -> anyhow::Result<()> {
    let script = format!(
        "set -eu\n\
         psql_() {{ runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres \"$@\"; }}\n\
         if [ \"$(psql_ -tAc \"SELECT 1 FROM pg_database WHERE datname = '{new}'\")\" = 1 ]; then\n\
         echo 'database {new} exists already' >&2; exit 1; fi\n\
         psql_ -c 'CREATE DATABASE \"{new}\" OWNER \"{role}\" ENCODING '\\''UTF8'\\'' TEMPLATE template0'\n\
         psql_ -c 'REVOKE ALL ON DATABASE \"{new}\" FROM PUBLIC'\n\
         psql_ -c 'GRANT CONNECT, TEMPORARY ON DATABASE \"{new}\" TO \"{role}\"'\n\
         HBA=$(psql_ -tAc 'SHOW hba_file')\n\
         LINES=$(awk -v old='\"{old}\"' -v new='\"{new}\"' '$1 == \"host\" && $2 == old {{ $2 = new; print }}' \"$HBA\")\n\
         [ -n \"$LINES\" ] || {{ echo \"no line of $HBA lets a host reach database {old}\" >&2; exit 1; }}\n\
         printf '# provision blobs migrate: {old} -> {new}, until the stack switches\\n%s\\n' \"$LINES\" >> \"$HBA\"\n\
         psql_ -tAc 'SELECT pg_reload_conf()' >/dev/null"
    );
    run(
        host,
        &format!("creating database {new} beside {old}"),
        Command::new(script),
    )
    .await?;
    Ok(())
}

/// Takes back the pg_hba.conf lines [`create_database`] added (best effort: the next `up`
/// rewrites the file anyway). The database stays.
async fn forget_database(host: &Host, new: &str) {
    let script = format!(
        "HBA=$(runuser -u postgres -- psql -X -d postgres -tAc 'SHOW hba_file') && \
         sed -i -e '/^# provision blobs migrate: .* -> {new},/d' -e '/^host[[:space:]]*\"{new}\"[[:space:]]/d' \"$HBA\" && \
         runuser -u postgres -- psql -X -d postgres -tAc 'SELECT pg_reload_conf()' >/dev/null"
    );
    let _ = host.exec(Command::new(script)).await;
}

/// The pack timers of the `db_packing` host, stopped for the migration (a pack during the
/// copy would make the two databases differ); `up` starts them again after the switch.
async fn pause_packing(session: &Session) -> anyhow::Result<Option<HostSpec>> {
    let Some(spec) = session.stack.hosts_with(Layer::DbPacking).first().copied() else {
        return Ok(None);
    };
    let host = connect_one(session, spec).await?;
    run(
        &host,
        "pausing the RelStorage pack timers",
        Command::new(format!("systemctl stop {PACK_TIMERS} 2>/dev/null || true")),
    )
    .await?;
    host.close().await;
    Ok(Some(spec.clone()))
}

const PACK_TIMERS: &str = "relstorage-pack.timer relstorage-prepack.timer";

async fn resume_packing(session: &Session, packer: Option<HostSpec>) {
    let Some(spec) = packer else {
        return;
    };
    if let Ok(host) = connect_one(session, &spec).await {
        let _ = host
            .exec(Command::new(format!(
                "for t in {PACK_TIMERS}; do systemctl is-enabled -q $t 2>/dev/null && systemctl start $t; done; true"
            )))
            .await;
        host.close().await;
    }
}

/// Runs the check; its parsed report.
async fn check(
    session: &Session,
    runner: &Runner,
    config: &str,
    state: &str,
    mode: &str,
    caches: [&str; 2],
) -> anyhow::Result<Checked> {
    let out = runner
        .with_config(
            session,
            &format!("checking the blobs of both databases ({mode})"),
            config,
            VERIFY_PY,
            &[state, mode, caches[0], caches[1]],
        )
        .await?;
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| {
        format!(
            "host {}: the blob check printed no report: {out}",
            runner.host.name()
        )
    })
}

fn mismatch(checked: &Checked, new_db: &str) -> String {
    let first = |keys: &[String]| keys.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    format!(
        "the copy {new_db} differs from the source: {} blobs in the source, {} in the copy; \
         {} missing from the copy ({}), {} only in the copy ({}), {} with another sha256 ({}) \
         (blobs named oid.tid in hex)",
        checked.source,
        checked.destination,
        checked.missing.len(),
        first(&checked.missing),
        checked.extra.len(),
        first(&checked.extra),
        checked.bad.len(),
        first(&checked.bad)
    )
}

/// The units stopped on one host.
struct Stopped {
    spec: HostSpec,
    units: Vec<String>,
}

/// Stops every client and Celery worker of every instance host (the write freeze); returns
/// what ran, to start it again if the switch does not happen.
async fn stop_clients(session: &Session) -> anyhow::Result<Vec<Stopped>> {
    let app = layers::instances::app(&session.stack)?;
    let mut stopped = Vec::new();
    for spec in session.stack.hosts_with(Layer::PloneInstances) {
        let mut patterns = vec![format!("plone-{}@*.service", app.name)];
        if let Some(workers) = layers::optional::worker_settings(&session.stack, spec)? {
            patterns.push(workers.worker_unit());
            patterns.push(workers.beat_unit());
        }
        let host = connect_one(session, spec).await?;
        let patterns: Vec<String> = patterns.iter().map(|p| quote(p)).collect();
        let out = run(
            &host,
            "stopping the clients (write freeze)",
            Command::new(format!(
                "units=$(systemctl list-units --plain --no-legend --state=active {} | awk '{{print $1}}')\n\
                 [ -z \"$units\" ] || systemctl stop $units\nprintf '%s\\n' $units",
                patterns.join(" ")
            )),
        )
        .await;
        host.close().await;
        let out = match out {
            Ok(out) => out,
            Err(error) => {
                let restarted = start_again(session, &stopped).await;
                bail!("{error:#} ({restarted})");
            }
        };
        stopped.push(Stopped {
            spec: spec.clone(),
            units: out.split_whitespace().map(str::to_string).collect(),
        });
    }
    Ok(stopped)
}

/// Starts again what [`stop_clients`] stopped; says how that went.
async fn start_again(session: &Session, stopped: &[Stopped]) -> String {
    let mut failed = Vec::new();
    for host in stopped {
        if host.units.is_empty() {
            continue;
        }
        let started = match connect_one(session, &host.spec).await {
            Ok(h) => {
                let units: Vec<String> = host.units.iter().map(|u| quote(u)).collect();
                let result = run(
                    &h,
                    "starting the clients again",
                    Command::new(format!("systemctl start {}", units.join(" "))),
                )
                .await;
                h.close().await;
                result.map(|_| ())
            }
            Err(error) => Err(error),
        };
        if let Err(error) = started {
            failed.push(format!("{error:#}"));
        }
    }
    if failed.is_empty() {
        "the clients were started again".to_string()
    } else {
        format!(
            "starting the clients again failed: {}; run `provision up`",
            failed.join("; ")
        )
    }
}

/// Back to blobs in the database: each instance host's blob directory, a link to the shared
/// store until now, becomes a directory of its own again (the blob cache). The link is kept
/// beside it, and the store's files stay where they are.
async fn local_blob_caches(target: &Session) -> anyhow::Result<()> {
    let app = layers::instances::app(&target.stack)?;
    let deploy = target.stack.deploy_settings(&app.name);
    let link = format!("{}/shared/var/blobstorage", app.deploy_to.display());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for spec in target.stack.hosts_with(Layer::PloneInstances) {
        let host = connect_one(target, spec).await?;
        let (l, a) = (
            quote(&link),
            quote(&format!("{link}.before-migration-{stamp}")),
        );
        let script = format!(
            "if [ -L {l} ]; then mv -T {l} {a}; fi\n\
             install -d -m 0700 -o {u} -g {g} {l}",
            u = quote(&deploy.user),
            g = quote(&deploy.group)
        );
        run(
            &host,
            &format!("making {link} a local blob cache"),
            Command::new(script),
        )
        .await?;
        host.close().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_name_replaces_an_earlier_stamp() {
        let name = new_database_name("zodb_20260101120000");
        assert!(name.starts_with("zodb_") && name.len() == 19, "{name}");
        assert!(new_database_name("zodb").starts_with("zodb_"));
    }

    #[test]
    fn the_database_and_sharing_are_set_keeping_the_rest() {
        let text = "[stack]\nname = \"s\"\n# keep me\n\
                    [attributes.plone_instances]\nenable_relstorage = true\n\
                    relstorage = { pack_days = 3 }\n";
        let edited = set_database(text, "zodb_1", true).unwrap();
        assert!(edited.contains("# keep me"), "{edited}");
        let doc: toml::Value = toml::from_str(&edited).unwrap();
        let pi = &doc["attributes"]["plone_instances"];
        assert_eq!(pi["relstorage"]["db"]["name"].as_str(), Some("zodb_1"));
        assert_eq!(pi["relstorage"]["pack_days"].as_integer(), Some(3));
        assert_eq!(pi["shared_blobs"].as_bool(), Some(true));
    }
}
