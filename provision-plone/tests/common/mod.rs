//! Helpers of the tests that deploy the example apps for real on this machine: `deploy_to` is
//! a temporary directory, the host is [`Host::local`], the app user `plone` is made by the
//! crate's own setup resources, and the build runs the real buildout (or pip).
//!
//! Eggs and downloads live in [`CACHE`] across runs (linked as the app's `shared/eggs` and
//! `shared/downloads`), so a rerun builds from cache.
//! A missing prerequisite skips a test with one printed reason, unless
//! `PROVISION_SANDBOX=required`, where it fails.

#![allow(dead_code)]

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use provision_core::engine::{self, Mode, Options, Quiet};
use provision_core::host::{self, Host};
use provision_core::phase::Phase;
use provision_core::resource::Resource;
use provision_core::template::Templates;
use provision_plone::deploy::{self, Prepared, Report, Source};
use provision_plone::{InstanceSettings, PloneError, TEMPLATES, instances};
use tempfile::TempDir;

/// Eggs and downloads shared by test runs.
pub const CACHE: &str = "/var/cache/provision-tests/buildout-cache";

pub fn templates() -> Templates {
    Templates::new(TEMPLATES).expect("templates parse")
}

fn required() -> bool {
    std::env::var("PROVISION_SANDBOX").as_deref() == Ok("required")
}

/// Say why the test cannot run: a skip (the caller returns), or with
/// `PROVISION_SANDBOX=required` a failure.
pub fn skip(reason: &str) {
    if required() {
        panic!("PROVISION_SANDBOX=required and {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// Slow tests (a cold Plone build) run with `PROVISION_SLOW_TESTS=1` or under
/// `PROVISION_SANDBOX=required`.
pub fn slow_tests_enabled() -> bool {
    required() || std::env::var("PROVISION_SLOW_TESTS").as_deref() == Ok("1")
}

fn have_program(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why a deploy cannot run here, if it cannot: root (to make the app user and run as it),
/// git, a C compiler, Debian's python3 with venv, util-linux's runuser and flock.
pub fn missing_prerequisite() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("the deploy tests need root (they create the user plone)".to_string());
    }
    for program in ["git", "gcc", "runuser", "flock", "base64", "tar"] {
        if !have_program(program) {
            return Some(format!(
                "{program} is not installed (apt-get install git build-essential util-linux)"
            ));
        }
    }
    let venv = Command::new("/usr/bin/python3")
        .args(["-c", "import ensurepip, venv"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !venv.is_ok_and(|s| s.success()) {
        return Some(
            "/usr/bin/python3 with venv is missing (apt-get install python3-venv python3-dev)"
                .to_string(),
        );
    }
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run a command; panic with its output unless it succeeds. Returns stdout.
pub fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn uid_gid(user: &str) -> (u32, u32) {
    let uid = run(Command::new("id").args(["-u", user]))
        .trim()
        .parse()
        .unwrap();
    let gid = run(Command::new("id").args(["-g", user]))
        .trim()
        .parse()
        .unwrap();
    (uid, gid)
}

/// `git add -A` and a commit of it in `dir`, as a test user.
pub fn commit_all(dir: &Path, message: &str) {
    let git = |args: &[&str]| run(Command::new("git").arg("-C").arg(dir).args(args));
    git(&["add", "-A"]);
    git(&[
        "-c",
        "user.name=provision tests",
        "-c",
        "user.email=tests@provision.invalid",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        message,
    ]);
}

/// A git repository with the files of `examples/apps/<example>`, committed on `main` (owned
/// by root, as on a controller), and a bare copy of it owned by the app user that the host's
/// mirror clones (as a git server would serve it; git refuses repositories of other users).
pub struct Repo {
    pub dir: TempDir,
    pub remote: TempDir,
}

impl Repo {
    pub fn new(example: &str, owner: &str) -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("plone-repo-")
            .tempdir()
            .unwrap();
        let remote = tempfile::Builder::new()
            .prefix("plone-remote-")
            .tempdir()
            .unwrap();
        fs::set_permissions(remote.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/apps")
            .join(example);
        run(Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", source.display()))
            .arg(dir.path()));
        let repo = Repo { dir, remote };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.owner_set(owner);
        repo.commit("the example app");
        repo
    }

    fn owner_set(&self, owner: &str) {
        fs::write(self.remote.path().join(".owner"), owner).unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn git(&self, args: &[&str]) -> String {
        run(Command::new("git").arg("-C").arg(self.path()).args(args))
    }

    /// Commit everything; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        commit_all(self.path(), message);
        // The bare copy is made anew, then given to the app user: git refuses to work in a
        // repository of another user, so neither can push into or fetch from the other.
        let owner = fs::read_to_string(self.remote.path().join(".owner")).unwrap();
        let bare = self.remote.path().join("site.git");
        let _ = fs::remove_dir_all(&bare);
        run(Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(self.path())
            .arg(&bare));
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{owner}:{owner}"))
            .arg(&bare));
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    pub fn write(&self, path: &str, content: &str) {
        fs::write(self.path().join(path), content).unwrap();
    }

    pub fn read(&self, path: &str) -> String {
        fs::read_to_string(self.path().join(path)).unwrap()
    }

    /// The URL the host clones: the app user's bare copy.
    pub fn url(&self) -> String {
        self.remote.path().join("site.git").display().to_string()
    }
}

/// A deployed app: its `deploy_to` under a temporary directory, set up by the crate's setup
/// resources (without packages, unit and logrotate, which would change this machine).
pub struct App {
    pub root: TempDir,
    pub settings: InstanceSettings,
    pub host: Host,
    pub templates: Templates,
}

impl App {
    pub async fn setup(mut settings: InstanceSettings, root: TempDir) -> App {
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        settings.deploy_to = root.path().join("site").display().to_string();
        let templates = templates();
        let host = Host::local("test");
        let resources: Vec<Resource> = instances::resources(&settings, Phase::Setup, &templates)
            .unwrap()
            .into_iter()
            .filter(|r| {
                matches!(
                    r,
                    Resource::User(_)
                        | Resource::Group(_)
                        | Resource::Directory(_)
                        | Resource::Symlink(_)
                )
            })
            .collect();
        let report = engine::converge(
            &host,
            &resources,
            &Options {
                mode: Mode::Apply,
                command_timeout: Some(Duration::from_secs(120)),
                mask: &|s: &str| s.to_string(),
                progress: &Quiet,
            },
        )
        .await;
        assert!(!report.is_failed(), "setup failed: {report:?}");
        App {
            root,
            settings,
            host,
            templates,
        }
    }

    pub fn deploy_to(&self) -> PathBuf {
        PathBuf::from(&self.settings.deploy_to)
    }

    /// Link `shared/<dir>` to the cache of test runs (eggs, downloads, the buildout venv).
    pub fn use_cache(&self, dirs: &[&str]) {
        fs::create_dir_all(CACHE).unwrap();
        for dir in dirs {
            let cached = Path::new(CACHE).join(dir);
            fs::create_dir_all(&cached).unwrap();
            let shared = self.deploy_to().join("shared").join(dir);
            if shared.is_dir() && !shared.is_symlink() {
                fs::remove_dir(&shared).unwrap();
            }
            std::os::unix::fs::symlink(&cached, &shared).unwrap();
        }
        let user = &self.settings.user;
        run(Command::new("chown")
            .arg(format!("{user}:{user}"))
            .arg(CACHE));
        for dir in dirs {
            let cached = Path::new(CACHE).join(dir);
            if cached.exists() && fs::metadata(&cached).unwrap().uid() != uid_gid(user).0 {
                run(Command::new("chown")
                    .arg("-R")
                    .arg(format!("{user}:{user}"))
                    .arg(&cached));
            }
        }
    }

    pub async fn exec(&self, script: String) -> host::Output {
        self.host
            .exec(host::Command::new(script).timeout(Duration::from_secs(1800)))
            .await
            .unwrap()
    }

    /// Run a step and return its report; panic with its output if it failed.
    pub async fn step(&self, name: &str, script: String) -> Report {
        let output = self.exec(script).await;
        deploy::check_step(name, &output).unwrap_or_else(|e| {
            panic!(
                "{e}\nstdout: {}\nstderr: {}",
                output.stdout_lossy(),
                output.stderr_lossy()
            )
        })
    }

    /// Prepare a release while holding the cache lock (builds of concurrent tests share eggs).
    pub async fn prepare(
        &self,
        source: &Source,
    ) -> (Result<Prepared, PloneError>, host::Output, Duration) {
        let _lock = CacheLock::take();
        self.prepare_locked(source).await
    }

    /// [`App::prepare`] for a caller that holds the [`CacheLock`].
    pub async fn prepare_locked(
        &self,
        source: &Source,
    ) -> (Result<Prepared, PloneError>, host::Output, Duration) {
        self.prepare_checking(source, None).await
    }

    /// [`App::prepare_locked`] with `live_check` run on an unchanged release, as `provision`
    /// passes the clients' check.
    pub async fn prepare_checking(
        &self,
        source: &Source,
        live_check: Option<&str>,
    ) -> (Result<Prepared, PloneError>, host::Output, Duration) {
        let command =
            deploy::prepare_release(&self.settings, source, live_check, &self.templates).unwrap();
        let started = Instant::now();
        let output = self
            .host
            .exec(command.timeout(Duration::from_secs(1800)))
            .await
            .unwrap();
        let elapsed = started.elapsed();
        (deploy::parse_prepared(&output), output, elapsed)
    }

    pub async fn prepare_ok(&self, source: &Source) -> (Prepared, Duration) {
        let (result, output, elapsed) = self.prepare(source).await;
        match result {
            Ok(prepared) => (prepared, elapsed),
            Err(e) => panic!(
                "{e}\nstdout: {}\nstderr: {}",
                output.stdout_lossy(),
                output.stderr_lossy()
            ),
        }
    }

    pub async fn switch(&self, release: &str) -> Report {
        self.step(
            "switch",
            deploy::switch_current(&self.settings, release, &self.templates).unwrap(),
        )
        .await
    }

    pub async fn status(&self) -> Report {
        self.step(
            "status",
            deploy::release_status(&self.settings, &self.templates).unwrap(),
        )
        .await
    }

    pub fn current(&self) -> Option<PathBuf> {
        fs::read_link(self.deploy_to().join("current")).ok()
    }

    pub fn previous(&self) -> Option<PathBuf> {
        fs::read_link(self.deploy_to().join("previous")).ok()
    }

    /// Start a program of the live release as the app user, in the release, in the
    /// foreground (there is no systemd here); killed when the guard drops.
    pub fn spawn(&self, args: &[&str], log_name: &str) -> ChildGuard {
        let release = fs::canonicalize(self.deploy_to().join("current")).unwrap();
        let log = self.root.path().join(log_name);
        let file = fs::File::create(&log).unwrap();
        let (uid, gid) = uid_gid(&self.settings.user);
        let child = Command::new(release.join(args[0]))
            .args(&args[1..])
            .current_dir(&release)
            .env("HOME", "/tmp")
            .uid(uid)
            .gid(gid)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?}: {e}"));
        ChildGuard { child, log }
    }

    /// Wait for `path` on `port` to answer 200 with the crate's own health check.
    pub async fn health(&self, port: u16, path: &str, timeout: u64) -> host::Output {
        let script =
            deploy::client_health("127.0.0.1", port, path, timeout, &self.templates).unwrap();
        self.exec(script).await
    }

    pub fn release_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.deploy_to().join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// A process killed (and reaped) on drop.
pub struct ChildGuard {
    pub child: Child,
    pub log: PathBuf,
}

impl ChildGuard {
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panic with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.log.display(), self.log());
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An exclusive lock on the cache, held while a test builds.
pub struct CacheLock(fs::File);

impl CacheLock {
    pub fn take() -> CacheLock {
        fs::create_dir_all(CACHE).unwrap();
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(CACHE).join(".lock"))
            .unwrap();
        file.lock().unwrap();
        CacheLock(file)
    }
}

/// Wait until `port` accepts connections or `child` exits.
pub fn wait_for_port(port: u16, child: &mut ChildGuard, seconds: u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return;
        }
        child.assert_running();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "nothing listens on {port} after {seconds} s:\n{}",
        child.log()
    );
}
