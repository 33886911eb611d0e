//! Test fixtures shared by the tests and benchmarks of the workspace.
//!
//! [`Sshd`] runs a real OpenSSH server on loopback with its own host key, client key and
//! `known_hosts`, all in a private temporary directory.

use std::fs;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::host::SshTarget;

const SSHD: &str = "/usr/sbin/sshd";
const SSH_KEYGEN: &str = "ssh-keygen";
/// OpenSSH refuses to start without its privilege separation directory.
const PRIVSEP_DIR: &str = "/run/sshd";
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A private OpenSSH server on 127.0.0.1, killed (and its directory removed) on drop.
///
/// `MaxSessions` is left at the OpenSSH default of 10, so tests see the limit real servers have.
#[derive(Debug)]
pub struct Sshd {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    host_public_key: String,
    users: Vec<String>,
    extra_config: String,
}

impl Sshd {
    /// Generate keys, write the configuration and start `sshd`; returns once the port answers
    /// with an SSH banner.
    pub fn start() -> io::Result<Sshd> {
        Sshd::start_with_config("")
    }

    /// Like [`Sshd::start`], with extra `sshd_config` lines (for example `MaxSessions 3`). They
    /// come first, and for sshd the first value of a keyword wins.
    pub fn start_with_config(extra: &str) -> io::Result<Sshd> {
        if !Path::new(SSHD).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{SSHD} is missing: install the Debian package openssh-server \
                     (apt-get install -y --no-install-recommends openssh-server)"
                ),
            ));
        }
        let dir = make_temp_dir()?;
        let mut sshd = Sshd {
            dir,
            port: 0,
            child: None,
            host_public_key: String::new(),
            users: Vec::new(),
            extra_config: extra.to_string(),
        };
        sshd.host_public_key = generate_key(&sshd.host_key_path())?;
        let client_public_key = generate_key(&sshd.client_key_path())?;
        // sshd reads authorized_keys as the user logging in: it has to be readable for test
        // users too (see `add_user`), hence a traversable directory and a 0644 file.
        fs::set_permissions(&sshd.dir, fs::Permissions::from_mode(0o711))?;
        let authorized_keys = sshd.dir.join("authorized_keys");
        fs::write(&authorized_keys, format!("{client_public_key}\n"))?;
        fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o644))?;
        if !Path::new(PRIVSEP_DIR).exists() {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(PRIVSEP_DIR)
                .or_else(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })?;
        }

        // A free port can be taken by someone else between our probe and sshd's bind: retry.
        let mut last_error = None;
        for _ in 0..5 {
            sshd.port = free_port()?;
            match sshd.spawn() {
                Ok(()) => {
                    sshd.write_known_hosts()?;
                    return Ok(sshd);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("sshd did not start")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The fixture's private directory (keys, config, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The private key whose public half is in `authorized_keys` (for every user).
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.join("client_ed25519")
    }

    /// A known_hosts file holding the host key sshd started with, as `[127.0.0.1]:PORT key`.
    /// It is not updated by [`Sshd::regenerate_host_key_and_restart`].
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// The current host key as `ssh-ed25519 AAAA…` (no comment).
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// The known_hosts line for the current host key.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_public_key)
    }

    /// sshd's own log (`-e`), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// A target for `user` with the client key and strict checking against
    /// [`Sshd::known_hosts_path`].
    pub fn target(&self, user: &str) -> SshTarget {
        SshTarget::with_key_file(
            "127.0.0.1",
            self.port,
            user,
            self.client_key_path(),
            self.known_hosts_path(),
        )
    }

    /// Stop sshd, give it a new host key and start it again on the same port. Open connections
    /// live on (they belong to their own sshd processes); new ones see the new key.
    pub fn regenerate_host_key_and_restart(&mut self) -> io::Result<()> {
        self.stop();
        let key = self.host_key_path();
        fs::remove_file(&key)?;
        fs::remove_file(key.with_extension("pub"))?;
        self.host_public_key = generate_key(&key)?;
        // The port was ours a moment ago; give the kernel a few tries to hand it back.
        let mut last_error = None;
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("sshd did not restart")))
    }

    /// Create a user (home in the fixture directory) that can log in with the client key.
    /// With `sudo`, it also gets passwordless sudo through `/etc/sudoers.d`. Needs root; the user
    /// and the sudoers file are removed on drop.
    pub fn add_user(&mut self, sudo: bool) -> io::Result<String> {
        let name = format!("pv{}u{}", self.port, self.users.len());
        let home = self.dir.join(format!("home-{name}"));
        run_tool(
            Command::new("useradd")
                .args(["--create-home", "--shell", "/bin/sh", "--home-dir"])
                .arg(&home)
                .arg(&name),
        )?;
        self.users.push(name.clone());
        // A fresh account has a locked password ("!"), and sshd without PAM refuses locked
        // accounts even for key logins; "*" means "no password" without the lock.
        run_tool(Command::new("usermod").args(["-p", "*", &name]))?;
        if sudo {
            let path = sudoers_path(&name);
            fs::write(&path, format!("{name} ALL=(ALL:ALL) NOPASSWD: ALL\n"))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o440))?;
        }
        Ok(name)
    }

    fn host_key_path(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key")
    }

    fn write_known_hosts(&self) -> io::Result<()> {
        write_private(
            &self.known_hosts_path(),
            format!("{}\n", self.known_hosts_line()).as_bytes(),
        )
    }

    fn write_config(&self) -> io::Result<PathBuf> {
        let path = self.dir.join("sshd_config");
        let config = format!(
            "{extra}\n\
             Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             PidFile none\n\
             AuthorizedKeysFile {authorized_keys}\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             MaxSessions 10\n\
             MaxStartups 100:30:200\n\
             LogLevel INFO\n\
             Subsystem sftp internal-sftp\n",
            extra = self.extra_config,
            port = self.port,
            host_key = self.host_key_path().display(),
            authorized_keys = self.dir.join("authorized_keys").display(),
        );
        fs::write(&path, config)?;
        Ok(path)
    }

    /// Start sshd on `self.port` and wait for its banner.
    fn spawn(&mut self) -> io::Result<()> {
        let config = self.write_config()?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("sshd.log"))?;
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "sshd exited at start ({status}) on port {}: {}",
                    self.port,
                    self.log().trim()
                )));
            }
            if banner_answers(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "sshd gave no banner on port {} within {START_TIMEOUT:?}: {}",
                        self.port,
                        self.log().trim()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
        for user in self.users.drain(..) {
            let _ = fs::remove_file(sudoers_path(&user));
            // The user's session processes may still be exiting; userdel refuses while they run.
            for _ in 0..20 {
                let done = Command::new("userdel")
                    .arg(&user)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(true);
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn sudoers_path(user: &str) -> PathBuf {
    Path::new("/etc/sudoers.d").join(format!("provision-test-{user}"))
}

fn make_temp_dir() -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "provision-sshd-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

fn write_private(path: &Path, content: &[u8]) -> io::Result<()> {
    fs::write(path, content)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

/// `ssh-keygen -t ed25519` into `path`; returns the public key as `type base64`.
fn generate_key(path: &Path) -> io::Result<String> {
    run_tool(
        Command::new(SSH_KEYGEN)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
            .arg(path),
    )?;
    let public = fs::read_to_string(path.with_extension("pub"))?;
    let mut fields = public.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(kind), Some(key)) => Ok(format!("{kind} {key}")),
        _ => Err(io::Error::other(format!(
            "unexpected public key in {}.pub: {public:?}",
            path.display()
        ))),
    }
}

fn run_tool(command: &mut Command) -> io::Result<()> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {:?}: {e}", command.get_program()),
        )
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether something on the port sends an SSH identification line.
fn banner_answers(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut banner = [0u8; 8];
    let mut read = 0;
    while read < banner.len() {
        match stream.read(&mut banner[read..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => read += n,
        }
    }
    banner.starts_with(b"SSH-2.0-")
}
