//! Packing a RelStorage database, from exactly one host (the `db_packing` layer): a virtualenv
//! with RelStorage, the pack config for `zodbpack` (which repeats the instances' blob settings,
//! relstorage#24), and the pack jobs as systemd timers: one weekly pack, or a pre-pack on
//! Saturday and a pack from its state on Sunday (`two_stage_pack`), and optionally a monthly
//! truncate of the reference tables before the first pack of the month (`truncate_refs`).
//! All jobs take the same lock, so they never overlap.
//!
//! That only one host packs is the stack's rule (two `db_packing` hosts are an input error);
//! this module provisions the one it is given.

use provision_core::phase::Phase;
use provision_core::resource::{Directory, File, Group, Packages, Resource, Service, Timer, User};
use provision_core::template::Templates;
use serde::Serialize;

use crate::client::{RelStorageSettings, relstorage_context};
use crate::venv::Venv;
use crate::{Error, check_account, check_path, invalid};

/// The weekly pack (or, with `two_stage_pack`, the pack from the pre-pack state).
pub const PACK_JOB: &str = "relstorage-pack";
/// The pre-pack of `two_stage_pack`.
pub const PREPACK_JOB: &str = "relstorage-prepack";
/// The monthly truncate of `object_ref` and `object_refs_added`.
pub const CLEAR_REFS_JOB: &str = "relstorage-clear-refs";
/// The lock every job holds while it runs.
pub const LOCK_FILE: &str = "/run/lock/provision-relstorage-pack.lock";

/// When and how the database is packed (`plone_instances.relstorage.*`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackSchedule {
    /// `pack_days`: days of history kept (`zodbpack -d`). Default 7.
    pub pack_days: u32,
    /// `two_stage_pack`: pre-pack on Saturday, pack on Sunday. Default `false`.
    pub two_stage_pack: bool,
    /// `pack_gc`: garbage-collect unreachable objects. Default `true`.
    pub pack_gc: bool,
    /// `truncate_refs`: empty the reference tables before the first pack of each month (only
    /// with `pack_gc`, as in the cookbook). Default `false`.
    pub truncate_refs: bool,
    /// Default `Sun *-*-* 01:00:00 UTC`.
    pub pack_on_calendar: String,
    /// Default `Sat *-*-* 01:00:00 UTC`.
    pub prepack_on_calendar: String,
}

impl Default for PackSchedule {
    fn default() -> Self {
        PackSchedule {
            pack_days: 7,
            two_stage_pack: false,
            pack_gc: true,
            truncate_refs: false,
            pack_on_calendar: "Sun *-*-* 01:00:00 UTC".to_string(),
            prepack_on_calendar: "Sat *-*-* 01:00:00 UTC".to_string(),
        }
    }
}

impl PackSchedule {
    /// Midnight before the first pack job of the month (the first Saturday with
    /// `two_stage_pack`, else the first Sunday).
    pub fn clear_refs_on_calendar(&self) -> String {
        let day = if self.two_stage_pack { "Sat" } else { "Sun" };
        format!("{day} *-*-01..07 00:00:00 UTC")
    }

    fn clears_refs(&self) -> bool {
        self.truncate_refs && self.pack_gc
    }
}

/// The packing host's side: who packs, and where its tools go.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackerSettings {
    /// The user the jobs run as. Default `zodbpack`. With `shared_blob_dir`, the instances'
    /// user: the pack deletes blob files in the shared directory.
    pub user: String,
    pub group: String,
    /// Make `user` a system user (off when another layer of the host makes it).
    pub create_user: bool,
    /// Default `/opt/provision/relstorage`.
    pub venv: String,
    /// Default `/usr/bin/python3`.
    pub python: String,
    /// Default the tested pin `RelStorage[postgresql]==4.3.0` (psycopg2 builds from source:
    /// the `setup` phase installs gcc, python3-dev and libpq-dev).
    pub requirements: Vec<String>,
    /// The pack config and the DSN file. Default `/etc/provision/relstorage`.
    pub config_dir: String,
    /// The packer's own blob cache, when blobs are in the database. Default
    /// `/var/cache/provision/relstorage-pack`.
    pub blob_cache_dir: String,
}

impl Default for PackerSettings {
    fn default() -> Self {
        PackerSettings {
            user: "zodbpack".to_string(),
            group: "zodbpack".to_string(),
            create_user: true,
            venv: "/opt/provision/relstorage".to_string(),
            python: "/usr/bin/python3".to_string(),
            requirements: vec!["RelStorage[postgresql]==4.3.0".to_string()],
            config_dir: "/etc/provision/relstorage".to_string(),
            blob_cache_dir: "/var/cache/provision/relstorage-pack".to_string(),
        }
    }
}

impl PackerSettings {
    pub fn pack_config_path(&self) -> String {
        format!("{}/zodbpack.conf", self.config_dir)
    }

    pub fn dsn_path(&self) -> String {
        format!("{}/dsn", self.config_dir)
    }

    pub fn clear_refs_script(&self) -> String {
        "/usr/local/lib/provision/relstorage/clear-refs".to_string()
    }

    fn venv(&self) -> Venv<'_> {
        Venv {
            name: "relstorage",
            what: "RelStorage packing",
            path: &self.venv,
            python: &self.python,
            requirements_path: format!("{}/requirements.txt", self.config_dir),
            requirements: &self.requirements,
        }
    }

    fn check(&self) -> Result<(), Error> {
        check_account("user", &self.user)?;
        check_account("group", &self.group)?;
        check_path("config_dir", &self.config_dir)?;
        check_path("blob_cache_dir", &self.blob_cache_dir)?;
        self.venv().check()
    }
}

fn check_schedule(schedule: &PackSchedule) -> Result<(), Error> {
    for (setting, calendar) in [
        ("pack_on_calendar", &schedule.pack_on_calendar),
        ("prepack_on_calendar", &schedule.prepack_on_calendar),
    ] {
        if calendar.trim().is_empty() || calendar.contains(['\n', '%', '$']) {
            return Err(invalid(
                setting,
                format!("{calendar:?} is not a systemd calendar expression"),
            ));
        }
    }
    Ok(())
}

/// The rendered `zodbpack.conf`: the storage as the instances open it, with `pack-gc`, the
/// packer's blob cache unless the blob directory is shared, and no memcached.
pub fn pack_config(
    storage: &RelStorageSettings,
    packer: &PackerSettings,
    templates: &Templates,
) -> Result<String, Error> {
    packer.check()?;
    let mut context = relstorage_context(storage)?;
    context.pack_gc = Some(storage.pack.pack_gc);
    // A pack needs no memcached (and the packing venv has no pylibmc).
    context.cache_servers.clear();
    if !storage.shared_blob_dir {
        context.blob_dir = packer.blob_cache_dir.clone();
    }
    Ok(templates.render("zeo/zodbpack.conf.j2", &context)?)
}

/// The pack jobs, as (job name, command), in the order they run in a week: the pre-pack (with
/// `two_stage_pack`), then the pack.
pub fn pack_commands(
    storage: &RelStorageSettings,
    packer: &PackerSettings,
) -> Vec<(&'static str, String)> {
    let zodbpack = format!(
        "/usr/bin/flock {LOCK_FILE} {}/bin/zodbpack -d {}",
        packer.venv, storage.pack.pack_days
    );
    let config = packer.pack_config_path();
    if storage.pack.two_stage_pack {
        vec![
            (PREPACK_JOB, format!("{zodbpack} --prepack {config}")),
            (PACK_JOB, format!("{zodbpack} --use-prepack-state {config}")),
        ]
    } else {
        vec![(PACK_JOB, format!("{zodbpack} {config}"))]
    }
}

/// The command of the monthly truncate of the reference tables.
pub fn clear_refs_command(packer: &PackerSettings) -> String {
    format!("/usr/bin/flock {LOCK_FILE} {}", packer.clear_refs_script())
}

#[derive(Serialize)]
struct ClearRefsContext {
    python: String,
    dsn_file_literal: String,
}

/// The rendered truncate script (Python, from the packing virtualenv).
pub fn clear_refs_script(packer: &PackerSettings, templates: &Templates) -> Result<String, Error> {
    packer.check()?;
    Ok(templates.render(
        "zeo/relstorage-clear-refs.py.j2",
        &ClearRefsContext {
            python: format!("{}/bin/python", packer.venv),
            dsn_file_literal: serde_json::to_string(&packer.dsn_path())
                .expect("a string serializes"),
        },
    )?)
}

/// Every job timer of the packing host, as configured: (timer, wanted).
pub fn timers(storage: &RelStorageSettings, packer: &PackerSettings) -> Vec<(Timer, bool)> {
    let schedule = &storage.pack;
    let commands = pack_commands(storage, packer);
    let command = |job: &str| {
        commands
            .iter()
            .find(|(name, _)| *name == job)
            .map(|(_, command)| command.clone())
    };
    let timer = |name: &str, description: String, command: String, on_calendar: String| Timer {
        name: name.to_string(),
        description,
        command,
        user: packer.user.clone(),
        on_calendar,
        persistent: false,
    };
    let prepack = command(PREPACK_JOB);
    vec![
        (
            timer(
                PREPACK_JOB,
                "RelStorage pre-pack (first stage of the weekly pack)".to_string(),
                prepack.clone().unwrap_or_default(),
                schedule.prepack_on_calendar.clone(),
            ),
            prepack.is_some(),
        ),
        (
            timer(
                PACK_JOB,
                format!(
                    "RelStorage pack, keeping {} days of history",
                    schedule.pack_days
                ),
                command(PACK_JOB).expect("there is always a pack job"),
                schedule.pack_on_calendar.clone(),
            ),
            true,
        ),
        (
            timer(
                CLEAR_REFS_JOB,
                "RelStorage: truncate the pack reference tables (monthly)".to_string(),
                clear_refs_command(packer),
                schedule.clear_refs_on_calendar(),
            ),
            schedule.clears_refs(),
        ),
    ]
}

/// The packing host's resources for one phase.
pub fn resources(
    storage: &RelStorageSettings,
    packer: &PackerSettings,
    phase: Phase,
    templates: &Templates,
) -> Result<Vec<Resource>, Error> {
    packer.check()?;
    check_schedule(&storage.pack)?;
    let mut resources: Vec<Resource> = Vec::new();
    match phase {
        Phase::Setup => {
            resources.push(
                Packages::new(["python3", "python3-venv", "python3-dev", "gcc", "libpq-dev"])
                    .into(),
            );
            if packer.create_user {
                let mut user = User::system(&packer.user);
                if packer.group != packer.user {
                    resources.push(Group::system(&packer.group).into());
                    user = user.group(&packer.group);
                }
                resources.push(user.into());
            }
            if !storage.shared_blob_dir {
                resources.push(
                    Directory::new(&packer.blob_cache_dir)
                        .owner(&packer.user, &packer.group)
                        .mode(0o700)
                        .into(),
                );
            }
        }
        Phase::Configure => {
            resources.push(
                Directory::new(&packer.config_dir)
                    .owner("root", &packer.group)
                    .mode(0o750)
                    .into(),
            );
            resources.extend(packer.venv().resources(templates)?);
            // Both hold the database password.
            resources.push(
                File::new(
                    packer.pack_config_path(),
                    pack_config(storage, packer, templates)?,
                )
                .owner("root", &packer.group)
                .mode(0o640)
                .into(),
            );
            if storage.pack.clears_refs() {
                resources.push(
                    File::new(packer.dsn_path(), format!("{}\n", storage.db.dsn()))
                        .owner("root", &packer.group)
                        .mode(0o640)
                        .into(),
                );
                resources.push(
                    File::new(
                        packer.clear_refs_script(),
                        clear_refs_script(packer, templates)?,
                    )
                    .mode(0o755)
                    .into(),
                );
            }
            for (timer, wanted) in timers(storage, packer) {
                if wanted {
                    resources.extend(timer.resources());
                } else {
                    resources.push(Service::stopped(format!("{}.timer", timer.name)).into());
                }
            }
        }
        Phase::Deploy => {}
    }
    Ok(resources)
}
