//! `provision blobs migrate --to KIND`: move the blob files to another store while the site
//! runs, with nothing lost.
//!
//! 1. The new store is made ready (its server, its mount on the hosts that will use it).
//! 2. From the ZEO server's host, which sees both stores, every file is copied that the new
//!    store lacks or has with another size: an interrupted run resumes where it stopped.
//! 3. Every copied file's sha256 is compared on both sides; a mismatch stops here, before the
//!    switch, with the old store untouched (the bad copies are removed, a rerun copies them
//!    again).
//! 4. The switch: the stack file gets the new settings (written beside it, renamed over it),
//!    every host's blob directory link moves to the new store, the files written meanwhile
//!    are copied, then `up` converges the hosts and the clients restart one by one.
//!
//! ZODB blob files never change once written, so a copy that is complete stays right, and
//! files written during the copy are caught up after the switch.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use provision_core::engine::{self, Mode, Options};
use provision_core::host::{Command, Host};
use provision_core::phase::Phase;
use provision_core::resource::{Directory, Resource};
use provision_core::shell::quote;
use provision_core::stack::{HostSpec, Layer};
use provision_core::template::Templates;

use crate::cli::StackArgs;
use crate::layers::blobs::{self, BlobStore, StoreKind};
use crate::layers::{self, HostContext};
use crate::session::{FactsByHost, Session, StderrProgress};
use crate::{BadInput, EXIT_OK};

/// Swaps two paths atomically: renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE).
const EXCHANGE_PY: &str = "import ctypes, os, sys\n\
libc = ctypes.CDLL(None, use_errno=True)\n\
a, b = (os.fsencode(p) for p in sys.argv[1:3])\n\
sys.exit(0 if libc.renameat2(-100, a, -100, b, 2) == 0 else 1)\n";

/// Files per remote command when copying and hashing: one round trip each.
const BATCH: usize = 200;

/// One blob file: its path under the store's directory and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlobFile {
    path: String,
    size: u64,
}

pub async fn migrate(
    args: &StackArgs,
    to: StoreKind,
    blob_dir: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let session = Session::load(args)?;
    // Hook (RelStorage): its blobs live in the database or a shared directory, and move with
    // zodbconvert into a new database; see migrate_relstorage.rs.
    if session.stack.attributes().plone_instances.enable_relstorage {
        return crate::migrate_relstorage::migrate(session, args, to, blob_dir).await;
    }
    let from = blobs::store(&session.stack);
    let text = std::fs::read_to_string(&session.args.stack)
        .with_context(|| format!("reading {}", session.args.stack.display()))?;
    let edited = edit_stack(&text, &session, to, blob_dir)?;
    let edited = share_with_clients(&edited, &session, to)?;
    let (pending_guard, target) = PendingStack::write(
        &session.args,
        "blobs-migrate",
        &edited,
        &format!("the stack with its blobs in {to}"),
    )?;
    let to_store = blobs::store(&target.stack);
    if to_store == from && edited != text {
        // Only the clients change: they share the store now (ZEO serves it meanwhile).
        pending_guard.switch()?;
        let mut up_args = args.clone();
        up_args.hosts.clear();
        up_args.layers.clear();
        converge_and_restart(&up_args, &session).await?;
        crate::out!(
            "the clients now read and write the blobs in {to} ({}) themselves",
            from.dir
        );
        return Ok(ExitCode::from(EXIT_OK));
    }
    if to_store == from {
        crate::out!(
            "the blobs are already in {to} ({}); nothing to do",
            from.dir
        );
        return Ok(ExitCode::from(EXIT_OK));
    }
    let zeo_host = session
        .stack
        .hosts_with(Layer::Zeoserver)
        .first()
        .copied()
        .ok_or_else(|| {
            BadInput(
                "blobs migrate moves the blob files of a ZEO server: the stack has no host with \
                 the zeoserver layer (RelStorage keeps its blobs in the database; move them \
                 with zodbconvert)"
                    .to_string(),
            )
        })?;
    crate::out!(
        "moving the blobs from {} ({}) to {} ({}) through host {}",
        from.kind,
        from.dir,
        to_store.kind,
        to_store.dir,
        zeo_host.name
    );

    let progress = StderrProgress::new();
    let mut up_args = args.clone();
    up_args.hosts.clear();
    up_args.layers.clear();
    stop_sharing_first(&session, &target, &text, &up_args).await?;
    prepare(&target, &progress).await?;

    let host = connect_one(&session, zeo_host).await?;
    let link = blobs::zeo_blob_path();
    let source = format!("{link}/");
    let files = list(&host, &source).await?;
    let present = list(&host, &to_store.dir).await?;
    let (user, group) = blobs::blob_owner(&target.stack);
    let owner = (user.as_str(), group.as_str());
    let (copied, bytes) = copy(
        &host,
        &source,
        &to_store.dir,
        &files,
        &present,
        owner,
        &progress,
    )
    .await?;
    verify(&host, &source, &to_store.dir, &files, &progress).await?;

    // The switch. From here the stack file says where the blobs are.
    let old_dir = resolve(&host, &link).await?;
    pending_guard.switch()?;
    crate::out!(
        "{} now keeps the blobs in {to}",
        session.args.stack.display()
    );
    let moved_aside = switch_links(&target, &to_store).await?;
    // Files the site wrote to the old store while the links moved.
    let old_dir = moved_aside.get(&zeo_host.name).cloned().unwrap_or(old_dir);
    let late = list(&host, &old_dir).await?;
    let now_present = list(&host, &to_store.dir).await?;
    let (caught_up, _) = copy(
        &host,
        &old_dir,
        &to_store.dir,
        &late,
        &now_present,
        owner,
        &progress,
    )
    .await?;
    host.close().await;

    converge_and_restart(&up_args, &session)
        .await
        .with_context(|| {
            format!(
                "the blobs are in {to} and the stack file says so, but the hosts did not follow"
            )
        })?;
    crate::out!(
        "moved {} blob files ({}) from {} to {} in {:.1} s: {copied} copied now, {} were already \
         there, {caught_up} written during the switch caught up, every copy checked by sha256; \
         the old store ({old_dir}) is untouched",
        files.len(),
        human_bytes(files.iter().map(|f| f.size).sum()),
        from.kind,
        to_store.kind,
        start.elapsed().as_secs_f64(),
        files.len() - copied.min(files.len()),
    );
    let _ = bytes;
    Ok(ExitCode::from(EXIT_OK))
}

/// The stack text with `plone_instances.shared_blobs` set for a ZEO server's store in `to`:
/// clients share NFS, GlusterFS and S3 stores; a local directory only on the ZEO server's own
/// host, so clients elsewhere then get their blobs through ZEO (`shared-blob off`).
fn share_with_clients(text: &str, session: &Session, to: StoreKind) -> anyhow::Result<String> {
    let stack = &session.stack;
    let instances = stack.hosts_with(Layer::PloneInstances);
    if instances.is_empty() {
        return Ok(text.to_string());
    }
    let zeo = stack.zeo_address().map(|a| a.host.clone());
    let shared = match to {
        StoreKind::Local => instances
            .iter()
            .all(|h| zeo.as_deref() == Some(h.service_address())),
        StoreKind::Nfs | StoreKind::Glusterfs | StoreKind::S3 => true,
    };
    if stack.attributes().plone_instances.shared_blobs == shared {
        return Ok(text.to_string());
    }
    set_shared_blobs(text, shared)
}

/// The stack text with `plone_instances.shared_blobs = on`; comments and layout kept.
fn set_shared_blobs(text: &str, on: bool) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("parsing the stack file")?;
    let attributes = doc
        .entry("attributes")
        .or_insert(toml_edit::table())
        .as_table_mut()
        .context("`attributes` in the stack file is not a table")?;
    attributes.set_implicit(true);
    let table = attributes
        .entry("plone_instances")
        .or_insert(toml_edit::table())
        .as_table_mut()
        .context("`attributes.plone_instances` in the stack file is not a table")?;
    table["shared_blobs"] = toml_edit::value(on);
    Ok(doc.to_string())
}

/// Clients that share the old store but will not see the new one (a local directory on
/// another host) first switch to blobs through ZEO, with a converge and a rolling restart:
/// a client still writing into the old store after the server moved would lose its blob.
/// The stack file says so from then on, which is a valid stack on its own (a killed run
/// resumes from it).
async fn stop_sharing_first(
    session: &Session,
    target: &Session,
    text: &str,
    up_args: &StackArgs,
) -> anyhow::Result<()> {
    let leaving: Vec<&str> = session
        .stack
        .hosts_with(Layer::PloneInstances)
        .into_iter()
        .filter(|h| {
            blobs::uses_store(&session.stack, h)
                && target
                    .stack
                    .host(&h.name)
                    .is_some_and(|t| !blobs::uses_store(&target.stack, t))
        })
        .map(|h| h.name.as_str())
        .collect();
    if leaving.is_empty() {
        return Ok(());
    }
    crate::out!(
        "first, the clients of {} get their blobs through ZEO (plone_instances.shared_blobs = \
         false): the new store is not shared with them",
        leaving.join(", ")
    );
    let (step, _) = PendingStack::write(
        &session.args,
        "blobs-clients",
        &set_shared_blobs(text, false)?,
        "the stack with blobs through ZEO",
    )?;
    step.switch()?;
    converge_and_restart(up_args, session).await.context(
        "the stack file now has plone_instances.shared_blobs = false, but the hosts did not \
         follow; the blobs were not moved",
    )
}

/// `setup` + `configure` of every host, then a rolling restart of the clients.
async fn converge_and_restart(up_args: &StackArgs, session: &Session) -> anyhow::Result<()> {
    let code = crate::run::converge(up_args, &[Phase::Setup, Phase::Configure], false).await?;
    if code != ExitCode::from(EXIT_OK) {
        bail!("converging the hosts failed (see above); fix the cause and run `provision up`");
    }
    if !session.stack.hosts_with(Layer::PloneInstances).is_empty() {
        let code =
            crate::run::release_command(up_args, crate::run::ReleaseAction::Restart, None).await?;
        if code != ExitCode::from(EXIT_OK) {
            bail!("the rolling restart failed (see above)");
        }
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stack.toml".to_string())
}

/// An edited stack file beside the real one (so that its relative paths, secrets and
/// repositories, stay right and the rename is atomic), removed unless
/// [`PendingStack::switch`] renames it over the stack file.
pub(crate) struct PendingStack {
    path: PathBuf,
    stack: PathBuf,
}

impl PendingStack {
    /// Writes `text` as `.<stack file>.<suffix>` and loads it with the other options of
    /// `args`. A stack that does not load is bad input: `what` names it, and the file goes.
    pub(crate) fn write(
        args: &StackArgs,
        suffix: &str,
        text: &str,
        what: &str,
    ) -> anyhow::Result<(PendingStack, Session)> {
        let path = args
            .stack
            .with_file_name(format!(".{}.{suffix}", file_name(&args.stack)));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let pending = PendingStack {
            path: path.clone(),
            stack: args.stack.clone(),
        };
        let mut pending_args = args.clone();
        pending_args.stack = path;
        let session = Session::load(&pending_args)
            .map_err(|e| BadInput(format!("{what} is not valid: {e:#}\nNothing was changed.")))?;
        Ok((pending, session))
    }

    /// Renames it over the stack file (atomic: beside it): from here the stack says so.
    pub(crate) fn switch(self) -> anyhow::Result<()> {
        std::fs::rename(&self.path, &self.stack).with_context(|| {
            format!(
                "switching {}: renaming {} over it",
                self.stack.display(),
                self.path.display()
            )
        })?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for PendingStack {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The stack file's text with the settings that choose the store set for `to`. Comments and
/// layout stay as they are.
pub(crate) fn edit_stack(
    text: &str,
    session: &Session,
    to: StoreKind,
    blob_dir: Option<&str>,
) -> anyhow::Result<String> {
    if session.args.custom_json.is_some() {
        return Err(BadInput(
            "blobs migrate writes the new blob settings into the stack file, but --custom-json \
             could override them: move the plone_blobs, plone_instances and plone_zeoserver blob \
             keys into the stack file and run it without --custom-json"
                .to_string(),
        )
        .into());
    }
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("parsing {}", session.args.stack.display()))?;
    let stack = &session.stack;
    let has = |layer| !stack.hosts_with(layer).is_empty();
    let attributes = doc
        .entry("attributes")
        .or_insert(toml_edit::table())
        .as_table_mut()
        .context("`attributes` in the stack file is not a table")?;
    let set_flags = |attributes: &mut toml_edit::Table, nfs: bool, gluster: bool| {
        for (section, present) in [
            ("plone_instances", has(Layer::PloneInstances)),
            ("plone_zeoserver", has(Layer::Zeoserver)),
        ] {
            let table = attributes
                .entry(section)
                .or_insert(toml_edit::table())
                .as_table_mut();
            if let Some(table) = table {
                table.set_implicit(true);
                for (key, on) in [("nfs_blobs", nfs), ("gluster_blobs", gluster)] {
                    if on && present {
                        table[key] = toml_edit::value(true);
                    } else {
                        table.remove(key);
                    }
                }
            }
        }
    };
    let shared_layer = stack.attributes().plone_blobs.layer;
    match to {
        StoreKind::Local => {
            set_flags(attributes, false, false);
            if let Some(table) = blobs_table(attributes) {
                match blob_dir {
                    Some(dir) => table["blob_dir"] = toml_edit::value(dir),
                    // The ZEO server's own path links to the store the blobs leave: they need
                    // a directory of their own, which the stack file then names.
                    None if has(Layer::Zeoserver)
                        && blobs::store(stack).dir != blobs::zeo_blob_path() =>
                    {
                        table["blob_dir"] = toml_edit::value(blobs::LOCAL_STORE);
                    }
                    None => {
                        table.remove("blob_dir");
                    }
                }
            }
        }
        StoreKind::Nfs | StoreKind::Glusterfs => {
            if !has(shared_layer) && stack.attributes().plone_blobs.host.is_none() {
                return Err(BadInput(format!(
                    "blobs migrate --to {to}: no host has the `{shared_layer}` layer to serve \
                     the blobs; add it to the layers of a host (and run `provision up`) first"
                ))
                .into());
            }
            set_flags(attributes, to == StoreKind::Nfs, to == StoreKind::Glusterfs);
            if let Some(table) = blobs_table(attributes) {
                table.remove("blob_dir");
            }
        }
        StoreKind::S3 => {
            let mount = stack.attributes().s3fs_fuse.mounts.first().ok_or_else(|| {
                BadInput(
                    "blobs migrate --to s3: the stack has no bucket to mount; add one as \
                     [[attributes.s3fs_fuse.mounts]] with bucket and path (and the keys \
                     s3fs_fuse_s3_key and s3fs_fuse_s3_secret to the secrets file)"
                        .to_string(),
                )
            })?;
            let dir = blob_dir
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}/blobstorage", mount.path.trim_end_matches('/')));
            set_flags(attributes, false, false);
            if let Some(table) = blobs_table(attributes) {
                table["blob_dir"] = toml_edit::value(dir);
            }
        }
    }
    Ok(doc.to_string())
}

/// `[attributes.plone_blobs]` of the stack file, made when missing.
fn blobs_table(attributes: &mut toml_edit::Table) -> Option<&mut toml_edit::Table> {
    let table = attributes
        .entry("plone_blobs")
        .or_insert(toml_edit::table())
        .as_table_mut()?;
    table.set_implicit(true);
    Some(table)
}

/// Makes the new store ready: the `shared_blobs` servers, the mounts and the store's
/// directory on the hosts that will use it. Nothing the site uses changes.
pub(crate) async fn prepare(target: &Session, progress: &StderrProgress) -> anyhow::Result<()> {
    let store = blobs::store(&target.stack);
    let shared_layer = target.stack.attributes().plone_blobs.layer;
    let hosts: Vec<&HostSpec> = target
        .stack
        .hosts()
        .iter()
        .filter(|h| h.has_layer(shared_layer) || blobs::uses_store(&target.stack, h))
        .collect();
    let templates = Templates::new(&layers::all_templates()).context("loading templates")?;
    for line in blobs::ensure_buckets(&target.stack, false).await? {
        crate::out!("{line}");
    }
    let (connected, failed) = crate::run::connect(target, &hosts, progress).await?;
    if let Some(report) = failed.first() {
        bail!(
            "host {}: cannot prepare the new blob store; nothing was switched: {}",
            report.host,
            failure(report)
        );
    }
    let all_facts: FactsByHost = connected
        .iter()
        .map(|(host, facts)| (host.name().to_string(), facts.clone()))
        .collect();
    let (user, group) = blobs::blob_owner(&target.stack);
    let mut work = Vec::new();
    for (host, facts) in &connected {
        let spec = hosts
            .iter()
            .find(|h| h.name == host.name())
            .context("connected host")?;
        let context = HostContext {
            stack: &target.stack,
            host: spec,
            facts,
            all_facts: &all_facts,
            away: &target.away,
        };
        let mut resources: Vec<Resource> = Vec::new();
        for phase in [Phase::Setup, Phase::Configure] {
            resources.extend(blobs::resources(&context, phase, &templates)?);
        }
        if blobs::uses_store(&target.stack, spec) {
            // `tmp` too: the running server (and clients sharing the store) write new blobs
            // there first, and ZODB makes it only when a storage opens.
            for dir in [store.dir.clone(), format!("{}/tmp", store.dir)] {
                resources.push(Directory::new(dir).owner(&user, &group).mode(0o700).into());
            }
        }
        work.push((host.clone(), resources));
    }
    let mask = |s: &str| target.mask(s);
    let options = Options {
        mode: Mode::Apply,
        command_timeout: Some(target.command_timeout()),
        mask: &mask,
        progress,
    };
    let reports = engine::converge_all(work, usize::from(target.args.parallel), &options).await;
    if let Some(failed) = reports.iter().find(|r| r.is_failed()) {
        bail!(
            "host {}: preparing the new blob store failed; nothing was switched: {}",
            failed.host,
            failure(failed)
        );
    }
    Ok(())
}

pub(crate) async fn connect_one(session: &Session, spec: &HostSpec) -> anyhow::Result<Host> {
    let (mut connected, failed) =
        crate::run::connect(session, &[spec], &StderrProgress::new()).await?;
    if let Some(report) = failed.first() {
        bail!("host {}: {}", report.host, failure(report));
    }
    Ok(connected.remove(0).0)
}

pub(crate) fn failure(report: &engine::HostReport) -> String {
    match &report.outcome {
        engine::Outcome::Failed(error) => error.clone(),
        other => format!("{other:?}"),
    }
}

/// Runs `script` on `host`; its stdout, or an error naming the host, the step and stderr.
pub(crate) async fn run(host: &Host, step: &str, command: Command) -> anyhow::Result<String> {
    let output = host
        .exec(command)
        .await
        .with_context(|| format!("host {}: {step}", host.name()))?;
    if !output.success() {
        bail!(
            "host {}: {step} failed ({}): {}",
            host.name(),
            output.describe_exit(),
            output.stderr_lossy().trim()
        );
    }
    Ok(output.stdout_lossy())
}

/// Where a link (or a directory) really is.
async fn resolve(host: &Host, path: &str) -> anyhow::Result<String> {
    let out = run(
        host,
        "resolving the blob directory",
        Command::new(format!("readlink -f {}", quote(path))),
    )
    .await?;
    Ok(out.trim().to_string())
}

/// Every blob file under `dir` with its size, but the upload area `tmp/`. A missing directory holds nothing.
async fn list(host: &Host, dir: &str) -> anyhow::Result<Vec<BlobFile>> {
    let d = quote(&format!("{}/", dir.trim_end_matches('/')));
    let script =
        format!("[ -d {d} ] || exit 0\nfind {d} -type f ! -path '*/tmp/*' -printf '%s %P\\n'");
    let out = run(
        host,
        &format!("listing the blobs in {dir}"),
        Command::new(script),
    )
    .await?;
    let mut files = Vec::new();
    for line in out.lines() {
        let (size, path) = line
            .split_once(' ')
            .with_context(|| format!("host {}: unexpected listing line `{line}`", host.name()))?;
        files.push(BlobFile {
            path: path.to_string(),
            size: size.parse().with_context(|| format!("size in `{line}`"))?,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Copies the files of `files` that `present` lacks (or has with another size) from `from` to
/// `to`, in batches; returns how many it copied and their bytes.
async fn copy(
    host: &Host,
    from: &str,
    to: &str,
    files: &[BlobFile],
    present: &[BlobFile],
    owner: (&str, &str),
    progress: &StderrProgress,
) -> anyhow::Result<(usize, u64)> {
    use provision_core::engine::Progress as _;
    let present: std::collections::HashMap<&str, u64> =
        present.iter().map(|f| (f.path.as_str(), f.size)).collect();
    let missing: Vec<&BlobFile> = files
        .iter()
        .filter(|f| present.get(f.path.as_str()) != Some(&f.size))
        .collect();
    if missing.is_empty() {
        return Ok((0, 0));
    }
    let total_bytes: u64 = missing.iter().map(|f| f.size).sum();
    // As root: s3fs checks a non-root caller against metadata it may not have cached yet for
    // a directory just made. Each new directory and file belongs to the store's owner (the
    // server's user may change with the store) and takes its original's mode (ZODB's: 0700). s3fs changes metadata by rewriting the object and may not
    // see it for a moment: those steps are retried. A file cut short has the wrong size, so
    // the next run copies it again (and the sha256 check would catch anything else).
    let script = format!(
        "cd {from} && umask 077 && D={to}\n\
         again() {{ \"$@\" || {{ sleep 0.3; \"$@\"; }} || {{ sleep 1; \"$@\"; }}; }}\n\
         same() {{ again chown {owner} \"$2\" && again chmod --reference=\"$1\" \"$2\"; }}\n\
         mkd() {{ [ -d \"$1\" ] && return 0; mkd \"${{1%/*}}\" || return 1; \
         if mkdir \"$1\" 2>/dev/null; then same \"./${{1#\"$D\"/}}\" \"$1\"; else again test -d \"$1\"; fi; }}\n\
         while IFS= read -r f; do d=\"$D/$f\"; mkd \"${{d%/*}}\" || exit 1; \
         again cp -- \"$f\" \"$d\" && same \"$f\" \"$d\" || exit 1; done",
        from = quote(from),
        to = quote(to.trim_end_matches('/')),
        owner = quote(&format!("{}:{}", owner.0, owner.1)),
    );
    let mut done = 0;
    let mut bytes = 0;
    for batch in missing.chunks(BATCH) {
        let list: String = batch.iter().map(|f| format!("{}\n", f.path)).collect();
        let command = Command::new(script.clone()).stdin(list.into_bytes());
        run(host, &format!("copying blobs from {from} to {to}"), command).await?;
        done += batch.len();
        bytes += batch.iter().map(|f| f.size).sum::<u64>();
        progress.step(
            host.name(),
            &format!(
                "copied {done}/{} blob files ({} of {})",
                missing.len(),
                human_bytes(bytes),
                human_bytes(total_bytes)
            ),
        );
    }
    Ok((done, bytes))
}

/// Compares the sha256 of every file in both stores. A copy that differs is removed from the
/// new store (a rerun copies it again) and the migration stops before the switch.
async fn verify(
    host: &Host,
    from: &str,
    to: &str,
    files: &[BlobFile],
    progress: &StderrProgress,
) -> anyhow::Result<()> {
    use provision_core::engine::Progress as _;
    let hash = |dir: &str| format!("(cd {} && xargs -d '\\n' -r sha256sum --)", quote(dir));
    let mut checked = 0;
    let mut bad = Vec::new();
    for batch in files.chunks(BATCH) {
        let list: String = batch.iter().map(|f| format!("{}\n", f.path)).collect();
        let script = format!(
            "list=$(cat)\nprintf '%s\\n' \"$list\" | {} | sed 's/^/S /'\nprintf '%s\\n' \"$list\" | {} | sed 's/^/D /'",
            hash(from),
            hash(to)
        );
        let out = run(
            host,
            "checking the copies (sha256)",
            Command::new(script).stdin(list.into_bytes()),
        )
        .await?;
        let mut source = std::collections::HashMap::new();
        let mut copy = std::collections::HashMap::new();
        for line in out.lines() {
            let (side, rest) = line.split_at(2);
            if let Some((sum, path)) = rest.split_once("  ") {
                if side == "S " {
                    source.insert(path.to_string(), sum.to_string());
                } else {
                    copy.insert(path.to_string(), sum.to_string());
                }
            }
        }
        for file in batch {
            if !source.contains_key(&file.path) || source.get(&file.path) != copy.get(&file.path) {
                bad.push(file.path.clone());
            }
        }
        checked += batch.len();
        progress.step(
            host.name(),
            &format!("checked {checked}/{} copies (sha256)", files.len()),
        );
    }
    if bad.is_empty() {
        return Ok(());
    }
    let list: String = bad.iter().map(|p| format!("{p}\n")).collect();
    let _ = host
        .exec(
            Command::new(format!("cd {} && xargs -d '\\n' -r rm -f --", quote(to)))
                .stdin(list.into_bytes()),
        )
        .await;
    bail!(
        "{} of {} copies differ from the original (first: {}); they were removed from the new \
         store and nothing was switched: the site still uses the old store. Run the migration \
         again to copy them again",
        bad.len(),
        files.len(),
        bad.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
    )
}

/// Points the blob directory of every host that uses the store at the new store. A blob
/// directory that is a real directory (the ZEO server's default) is moved aside and kept.
/// Returns, per host, where a moved-aside directory went.
pub(crate) async fn switch_links(
    target: &Session,
    store: &BlobStore,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut moved = std::collections::HashMap::new();
    for spec in target.stack.hosts() {
        let mut links = Vec::new();
        if spec.has_layer(Layer::Zeoserver) {
            links.push(blobs::zeo_blob_path());
        }
        if spec.has_layer(Layer::PloneInstances) && blobs::uses_store(&target.stack, spec) {
            let app = layers::instances::app(&target.stack)?;
            links.push(format!(
                "{}/shared/var/blobstorage",
                app.deploy_to.display()
            ));
        }
        if links.is_empty() {
            continue;
        }
        let host = connect_one(target, spec).await?;
        for link in links {
            let aside = format!("{link}.before-migration-{stamp}");
            let (l, d, a) = (quote(&link), quote(&store.dir), quote(&aside));
            // A link replaces a link in one rename. A real directory is swapped with the new
            // link in one renameat2(RENAME_EXCHANGE), so that no read ever finds neither;
            // where that call is missing, two renames leave a window of microseconds.
            let script = format!(
                "ln -sfn {d} {l}.provision-link\n\
                 if [ -d {l} ] && [ ! -L {l} ]; then\n\
                 if python3 -c {exchange} {l}.provision-link {l} 2>/dev/null; then mv -T {l}.provision-link {a}; \
                 else mv -T {l} {a} && mv -T {l}.provision-link {l}; fi\n\
                 echo moved\n\
                 else mv -T {l}.provision-link {l}; fi",
                exchange = quote(EXCHANGE_PY)
            );
            let out = run(
                &host,
                &format!("pointing {link} at {}", store.dir),
                Command::new(script),
            )
            .await?;
            if out.trim() == "moved" {
                moved.insert(spec.name.clone(), aside);
            }
        }
        host.close().await;
    }
    Ok(moved)
}

pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
