//! Helpers of the tests that run real ZEO, PostgreSQL and RelStorage on this machine.
//!
//! Python packages go into virtualenvs under [`CACHE_DIR`], made by the crate's own rendered
//! install script and reused across runs; nothing else is installed. A missing prerequisite
//! skips the test with one printed reason, unless `PROVISION_SANDBOX=required`, where it fails.

#![allow(dead_code)]

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use provision_core::resource::Resource;
use provision_core::template::Templates;

pub const CACHE_DIR: &str = "/var/cache/provision-tests";

pub fn templates() -> Templates {
    Templates::new(provision_zeo::TEMPLATES).expect("templates parse")
}

fn required() -> bool {
    std::env::var("PROVISION_SANDBOX").as_deref() == Ok("required")
}

/// Say why the test cannot run: a skip (returns), or with `PROVISION_SANDBOX=required` a
/// failure.
pub fn skip(reason: &str) {
    if required() {
        panic!("PROVISION_SANDBOX=required and {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// The first missing program of `programs` (names looked up in PATH, or absolute paths).
pub fn missing_program(programs: &[&str]) -> Option<String> {
    programs
        .iter()
        .find(|p| {
            if p.starts_with('/') {
                !Path::new(p).exists()
            } else {
                Command::new("sh")
                    .args(["-c", &format!("command -v {p}")])
                    .stdout(Stdio::null())
                    .status()
                    .map(|s| !s.success())
                    .unwrap_or(true)
            }
        })
        .map(|p| p.to_string())
}

/// The content of the file resource whose path ends with `suffix`.
pub fn file_content(resources: &[Resource], suffix: &str) -> String {
    resources
        .iter()
        .find_map(|r| match r {
            Resource::File(f) if f.path.ends_with(suffix) => {
                Some(String::from_utf8(f.content.clone()).expect("text"))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no file resource ending in {suffix}"))
}

/// Make (or reuse) a virtualenv with the rendered install script and requirements file taken
/// from `resources`; `scratch` holds the copies. Concurrent tests wait on a lock.
pub fn install_venv(resources: &[Resource], venv: &Path, scratch: &Path) -> Result<(), String> {
    fs::create_dir_all(CACHE_DIR).map_err(|e| format!("cannot create {CACHE_DIR}: {e}"))?;
    let requirements = resources
        .iter()
        .find_map(|r| match r {
            Resource::File(f) if f.path.ends_with("/requirements.txt") => Some(f.clone()),
            _ => None,
        })
        .expect("a requirements file");
    // The script names the requirements file by its rendered path (the test's config dir).
    fs::create_dir_all(Path::new(&requirements.path).parent().unwrap()).unwrap();
    fs::write(&requirements.path, &requirements.content).unwrap();
    let script = scratch.join("install-venv");
    fs::write(&script, file_content(resources, "/install-venv")).unwrap();
    let lock = venv.with_extension("lock");
    let started = Instant::now();
    let output = Command::new("flock")
        .arg(&lock)
        .arg("sh")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run flock: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "the rendered install script could not make {} ({}): {}",
            venv.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    eprintln!(
        "virtualenv {} ready in {:.1} s",
        venv.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard(pub Child, pub &'static str);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, child: &mut ChildGuard, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "{} exited ({status}) before listening: {}",
                child.1,
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{} did not listen on port {port} within 30 s: {}",
        child.1,
        fs::read_to_string(log).unwrap_or_default()
    );
}

/// Run a command; panic with its output unless it succeeds. Returns stdout.
pub fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    check(command, &output);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn check(command: &Command, output: &Output) {
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A ZODB client process: opens the database of the ZConfig file `config`, then `write TEXT`
/// (a mapping with the title and a blob of TEXT repeated), `orphan` (a blob object added in one
/// transaction and unreferenced in the next), or `read` (prints `TITLE BLOB_LENGTH BLOB_START`).
pub const CLIENT_PY: &str = r#"
import sys
import transaction
import ZODB.config
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob

config, action = sys.argv[1], sys.argv[2]
with open(config) as f:
    db = ZODB.config.databaseFromFile(f)
connection = db.open()
root = connection.root()
if action == "write":
    text = sys.argv[3]
    root["doc"] = PersistentMapping(title=text)
    blob = root.get("blob") or Blob()
    with blob.open("w") as f:
        f.write(text.encode() * 1000)
    root["blob"] = blob
    transaction.commit()
elif action == "orphan":
    blob = Blob()
    with blob.open("w") as f:
        f.write(b"orphan" * 1000)
    root["old"] = blob
    transaction.commit()
    del root["old"]
    transaction.commit()
elif action == "read":
    title = root["doc"]["title"]
    with root["blob"].open("r") as f:
        data = f.read()
    print(title, len(data), data[: len(title)].decode())
else:
    raise SystemExit("unknown action " + action)
connection.close()
db.close()
"#;

pub fn client(python: &Path, config: &Path, args: &[&str]) -> String {
    run(Command::new(python)
        .arg("-c")
        .arg(CLIENT_PY)
        .arg(config)
        .args(args))
    .trim()
    .to_string()
}

/// What `read` prints for a blob written by `write TEXT`.
pub fn expected_read(text: &str) -> String {
    format!("{text} {} {text}", text.len() * 1000)
}

/// Files under `dir` whose name ends with `.blob`.
pub fn count_blobs(dir: &Path) -> usize {
    let mut count = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            count += count_blobs(&path);
        } else if path.extension().is_some_and(|e| e == "blob") {
            count += 1;
        }
    }
    count
}

pub fn write_file(path: &Path, content: &str) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    path.to_path_buf()
}

pub fn private_dir(path: &Path) -> PathBuf {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
    path.to_path_buf()
}

/// A global IPv4 address of this machine other than loopback, if it has one.
pub fn other_local_address() -> Option<Ipv4Addr> {
    let output = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .next()
}
