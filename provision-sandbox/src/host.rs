//! One host of a sandbox: its disk (an overlay over the base), its boot under
//! `systemd-nspawn --boot` in its own cgroup and network namespace, and the
//! faults tests inject.

use std::ffi::OsStr;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::cgroup::{Cgroups, wait_until};
use crate::config::Subnet;
use crate::error::{Error, IoContext, Result};
use crate::net::Net;
use crate::process;
use crate::sandbox::Ctx;
use crate::state::{HostState, Paths, is_mounted};
use crate::tools;

/// Restarts nspawn when the host reboots (`systemctl reboot` makes nspawn exit
/// with 133); any other exit ends the host. Runs in the host's cgroups.
const SUPERVISOR: &str = r#"set -u
echo $$ > "$1" || exit 97
if [ -n "$2" ]; then echo $$ > "$2" || exit 97; fi
propagate=$3; exitfile=$4; shift 4
while :; do
  rm -rf "$propagate"
  "$@"
  rc=$?
  echo "$rc" > "$exitfile"
  [ "$rc" -eq 133 ] || exit "$rc"
done
"#;

const PATH_IN_HOST: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A host of a running (or stopped) sandbox. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) sandbox: String,
    pub(crate) paths: Paths,
    pub(crate) state: HostState,
    pub(crate) subnet: Subnet,
    pub(crate) bridge: String,
    pub(crate) base: PathBuf,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("sandbox", &self.sandbox)
            .field("name", &self.state.name)
            .field("address", &self.state.address)
            .finish()
    }
}

impl Host {
    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn sandbox(&self) -> &str {
        &self.sandbox
    }

    pub fn address(&self) -> Ipv4Addr {
        self.state.address
    }

    /// Address of its sshd.
    pub fn ssh_addr(&self) -> SocketAddr {
        SocketAddr::from((self.state.address, 22))
    }

    /// Machine-side veth (a port of the bridge).
    pub fn veth(&self) -> &str {
        &self.state.veth
    }

    /// Network namespace name (`ip netns`).
    pub fn netns(&self) -> &str {
        &self.state.netns
    }

    /// The host's disk as seen from the machine: the overlay's upper directory
    /// holds every file the host wrote or changed.
    pub fn disk(&self) -> PathBuf {
        self.paths.upper(self.name())
    }

    /// The host's whole root (base + disk) while it is mounted.
    pub fn root(&self) -> PathBuf {
        self.paths.root(self.name())
    }

    /// nspawn's console output (boot messages), for diagnosis.
    pub fn console_log(&self) -> PathBuf {
        self.paths.console(self.name())
    }

    /// The host's cgroup relative to a hierarchy's root.
    pub fn cgroup(&self) -> PathBuf {
        Cgroups::host_rel(&self.sandbox, self.name())
    }

    /// The host's cgroup2 directory (cpu.stat, cgroup.freeze, ...).
    pub fn cgroup_dir(&self) -> Option<PathBuf> {
        self.ctx
            .cgroups
            .as_ref()
            .map(|c| c.unified_dir(&self.cgroup()))
    }

    fn cgroups(&self) -> Result<&Cgroups> {
        self.ctx
            .cgroups
            .as_ref()
            .ok_or_else(|| Error::Unsupported("no cgroup2 hierarchy on this machine".into()))
    }

    fn net(&self) -> Net<'_> {
        Net {
            tools: &self.ctx.tools,
        }
    }

    /// Whether any process of the host is alive.
    pub fn is_running(&self) -> bool {
        self.ctx
            .cgroups
            .as_ref()
            .is_some_and(|c| c.populated(&self.cgroup()))
    }

    /// The host's PID 1 (its systemd) as a machine pid.
    pub fn pid1(&self) -> Option<u32> {
        let cgroups = self.ctx.cgroups.as_ref()?;
        cgroups
            .procs(&self.cgroup())
            .into_iter()
            .find(|&pid| process::is_namespace_init(pid))
    }

    fn require_pid1(&self) -> Result<u32> {
        self.pid1().ok_or_else(|| Error::NotRunning {
            sandbox: self.sandbox.clone(),
            host: self.name().to_string(),
        })
    }

    pub fn is_frozen(&self) -> bool {
        self.ctx
            .cgroups
            .as_ref()
            .is_some_and(|c| c.frozen(&self.cgroup()))
    }

    /// CPU time the host used so far (all its processes).
    pub fn cpu_usage(&self) -> Option<Duration> {
        self.ctx.cgroups.as_ref()?.cpu_usage(&self.cgroup())
    }

    /// Memory of the host's processes (the machine side, nspawn and its
    /// supervisor, excluded): sum of their proportional set sizes, in KiB.
    pub fn pss_kib(&self) -> u64 {
        let Some(cgroups) = self.ctx.cgroups.as_ref() else {
            return 0;
        };
        let payload = self.cgroup().join("payload");
        cgroups
            .procs(&payload)
            .into_iter()
            .filter_map(process::pss_kib)
            .sum()
    }

    /// Reads the SSH banner on port 22 within `timeout`.
    pub fn ssh_banner(&self, timeout: Duration) -> Option<String> {
        read_banner(self.ssh_addr(), timeout)
    }

    // ---- disk and boot ----

    /// Mounts the overlay root if it is not mounted.
    pub(crate) fn mount_root(&self) -> Result<()> {
        let name = self.name();
        let (upper, work, root) = (
            self.paths.upper(name),
            self.paths.work(name),
            self.paths.root(name),
        );
        for dir in [&upper, &work, &root] {
            std::fs::create_dir_all(dir).ctx(|| format!("cannot create {}", dir.display()))?;
        }
        if is_mounted(&root) {
            return Ok(());
        }
        if !self.base.join("etc/os-release").exists() {
            return Err(Error::BaseMissing {
                path: self.base.clone(),
            });
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.base.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &root,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .ctx(|| {
            format!(
                "cannot mount the overlay root of {name} on {}",
                root.display()
            )
        })
    }

    pub(crate) fn unmount_root(&self) -> Result<()> {
        let root = self.paths.root(self.name());
        for mount in crate::state::mounts_under(&root).into_iter().rev() {
            if nix::mount::umount2(&mount, nix::mount::MntFlags::empty()).is_err() {
                nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH)
                    .ctx(|| format!("cannot unmount {}", mount.display()))?;
            }
        }
        Ok(())
    }

    /// Boots the host (its disk must be mounted and its network present) and
    /// returns without waiting.
    pub(crate) fn launch(&self) -> Result<()> {
        let cgroups = self.cgroups()?;
        let rel = self.cgroup();
        if cgroups.populated(&rel) {
            return Err(Error::AlreadyRunning {
                sandbox: self.sandbox.clone(),
                host: self.name().to_string(),
                pid1: self.pid1().unwrap_or(0),
            });
        }
        let procs = cgroups.create(&rel)?;
        if cgroups.frozen(&rel) {
            cgroups.set_frozen(&rel, false)?;
        }
        let name = self.name();
        let exit_file = self.paths.exit_file(name);
        let _ = std::fs::remove_file(&exit_file);
        let console = self.paths.console(name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&console)
            .ctx(|| format!("cannot open {}", console.display()))?;
        let log2 = log
            .try_clone()
            .ctx(|| "cannot duplicate the console log".into())?;
        let propagate = Path::new("/run/systemd/nspawn/propagate").join(&self.state.machine);

        let mut cmd = self.ctx.tools.command(tools::SETSID);
        cmd.arg("/bin/sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg(format!("provision-sandbox-{}-{name}", self.sandbox))
            .arg(&procs[0])
            .arg(procs.get(1).map(PathBuf::as_path).unwrap_or(Path::new("")))
            .arg(&propagate)
            .arg(&exit_file)
            .arg(self.ctx.tools.path(tools::NSPAWN))
            .args(self.nspawn_args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd
            .spawn()
            .ctx(|| format!("cannot start host {name}: `{}`", process::describe(&cmd)))?;
        process::adopt(child);
        Ok(())
    }

    fn nspawn_args(&self) -> Vec<String> {
        let mut args = vec![
            "--boot".to_string(),
            // no system bus on a machine whose PID 1 is not systemd
            "--register=no".into(),
            "--keep-unit".into(),
            format!("--machine={}", self.state.machine),
            format!("--hostname={}", self.name()),
            format!("--directory={}", self.paths.root(self.name()).display()),
            format!("--network-namespace-path=/run/netns/{}", self.state.netns),
            "--capability=CAP_NET_ADMIN,CAP_IPC_LOCK".into(),
            // nfs-ganesha (the sandbox's NFS server) opens every file it serves by handle.
            "--system-call-filter=open_by_handle_at".into(),
            "--resolv-conf=off".into(),
            "--link-journal=no".into(),
        ];
        if Path::new("/dev/fuse").exists() {
            args.push("--bind=/dev/fuse".into());
        }
        args
    }

    /// Waits until PID 1 runs and sshd answers with its banner.
    pub(crate) fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let deadline = started + timeout;
        let cgroups = self.cgroups()?;
        let exit_file = self.paths.exit_file(self.name());
        let mut seen_running = false;
        loop {
            let running = cgroups.populated(&self.cgroup());
            seen_running |= running;
            if let Ok(code) = std::fs::read_to_string(&exit_file)
                && code.trim() != "133"
                && !running
            {
                return Err(self.not_ready(format!("nspawn exited with code {}", code.trim())));
            }
            if seen_running && !running {
                return Err(self.not_ready("its processes exited".into()));
            }
            if !seen_running && started.elapsed() > Duration::from_secs(10) {
                return Err(self.not_ready("its supervisor never started".into()));
            }
            if running && self.pid1().is_some() && self.ssh_banner(Duration::from_secs(1)).is_some()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready(format!(
                    "no SSH banner on {} after {} s",
                    self.ssh_addr(),
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn not_ready(&self, detail: String) -> Error {
        Error::NotReady {
            sandbox: self.sandbox.clone(),
            host: self.name().to_string(),
            detail,
            log: process::tail(&self.paths.console(self.name()), 15),
        }
    }

    /// Ends the host: SIGKILL its PID 1 (nspawn and its supervisor then exit on
    /// their own, so nothing is left as a zombie), then kill whatever remains.
    pub(crate) fn kill(&self) -> Result<()> {
        let Some(cgroups) = self.ctx.cgroups.as_ref() else {
            return Ok(());
        };
        let rel = self.cgroup();
        if cgroups.frozen(&rel) {
            cgroups.set_frozen(&rel, false)?;
        }
        if let Some(pid1) = self.pid1() {
            process::kill(pid1, Signal::SIGKILL);
            wait_until(Instant::now() + Duration::from_secs(3), || {
                !cgroups.populated(&rel)
            });
        }
        cgroups.kill_all(&rel, Duration::from_secs(10))?;
        process::reap();
        Ok(())
    }

    // ---- public lifecycle and faults ----

    /// Starts the host again on the same disk (after `crash`, `power_cut` or
    /// `stop`): link up, boot, wait until sshd answers.
    pub fn start(&self) -> Result<()> {
        self.start_with_timeout(Duration::from_secs(60))
    }

    pub fn start_with_timeout(&self, timeout: Duration) -> Result<()> {
        self.ctx.preflight()?;
        if let Some(pid1) = self.pid1() {
            return Err(Error::AlreadyRunning {
                sandbox: self.sandbox.clone(),
                host: self.name().to_string(),
                pid1,
            });
        }
        // leftovers of a crash (a dying supervisor) must be gone
        self.kill()?;
        self.mount_root()?;
        self.net().ensure_host(
            &self.state.netns,
            &self.state.veth,
            self.state.address,
            &self.subnet,
            &self.bridge,
        )?;
        self.net().set_link(&self.state.veth, true)?;
        self.launch()?;
        self.wait_ready(timeout)
    }

    /// Orderly shutdown (SIGTERM to nspawn halts the host's systemd), killed
    /// after `timeout`.
    pub fn stop(&self, timeout: Duration) -> Result<()> {
        let Some(cgroups) = self.ctx.cgroups.as_ref() else {
            return Ok(());
        };
        let rel = self.cgroup();
        if cgroups.frozen(&rel) {
            cgroups.set_frozen(&rel, false)?;
        }
        if let Some(pid1) = self.pid1()
            && let Some(nspawn) = process::parent(pid1)
            && process::comm(nspawn) == "systemd-nspawn"
        {
            process::kill(nspawn, Signal::SIGTERM);
            wait_until(Instant::now() + timeout, || !cgroups.populated(&rel));
        }
        self.kill()
    }

    /// Crash: SIGKILL the host's PID 1. Open sessions close at once, new
    /// connections are refused (the address stays, nothing listens).
    pub fn crash(&self) -> Result<()> {
        self.ctx.preflight()?;
        let pid1 = self.require_pid1()?;
        let cgroups = self.cgroups()?;
        let rel = self.cgroup();
        if cgroups.frozen(&rel) {
            cgroups.set_frozen(&rel, false)?;
        }
        process::kill(pid1, Signal::SIGKILL);
        wait_until(Instant::now() + Duration::from_secs(5), || {
            !cgroups.populated(&rel)
        });
        cgroups.kill_all(&rel, Duration::from_secs(10))?;
        process::reap();
        Ok(())
    }

    /// Power cut: the link goes down first, then the host dies. New connections
    /// time out (no RST is ever sent). `start()` brings the link back.
    pub fn power_cut(&self) -> Result<()> {
        self.ctx.preflight()?;
        self.require_pid1()?;
        self.net().set_link(&self.state.veth, false)?;
        self.crash()
    }

    /// Partition from the controller (and every other host): the veth goes
    /// down. Connections time out; open sessions resume after `heal()`.
    pub fn partition(&self) -> Result<()> {
        self.ctx.preflight()?;
        self.net().set_link(&self.state.veth, false)
    }

    /// Undoes `partition()` and `isolate_from()` for this host.
    pub fn heal(&self) -> Result<()> {
        self.ctx.preflight()?;
        self.net().set_link(&self.state.veth, true)?;
        self.net().set_isolated(&self.state.veth, false)
    }

    /// Cuts this host and `other` from each other while the controller still
    /// reaches both. Bridge isolation is per port: every isolated port is cut
    /// from every other isolated port, so with more hosts, isolating a from b
    /// and then c from d also cuts a from c and d; hosts never isolated still
    /// reach everyone. `heal()` on a host lifts its isolation.
    pub fn isolate_from(&self, other: &Host) -> Result<()> {
        self.ctx.preflight()?;
        if other.bridge != self.bridge {
            return Err(Error::InvalidInput(format!(
                "{} and {} are on different bridges",
                self.name(),
                other.name()
            )));
        }
        self.net().set_isolated(&self.state.veth, true)?;
        self.net().set_isolated(&other.state.veth, true)
    }

    /// Hung host: every process of the host is frozen (cgroup2 freezer). TCP
    /// connections still complete (the kernel answers) but no SSH banner comes.
    pub fn freeze(&self) -> Result<()> {
        self.ctx.preflight()?;
        self.require_pid1()?;
        self.cgroups()?.set_frozen(&self.cgroup(), true)
    }

    pub fn thaw(&self) -> Result<()> {
        self.ctx.preflight()?;
        self.cgroups()?.set_frozen(&self.cgroup(), false)
    }

    // ---- running commands ----

    /// A command that runs `cmd` inside the host (nsenter into all namespaces of
    /// its PID 1) with a clean environment: PATH, HOME=/root, LANG=C.UTF-8.
    pub fn command<S: AsRef<OsStr>>(&self, cmd: &[S]) -> Result<Command> {
        self.ctx.preflight()?;
        if cmd.is_empty() {
            return Err(Error::InvalidInput("no command given".into()));
        }
        let pid1 = self.require_pid1()?;
        let mut c = self.ctx.tools.command(tools::NSENTER);
        c.arg("-t")
            .arg(pid1.to_string())
            .arg("-a")
            .arg("--")
            .arg("/usr/bin/env")
            .arg("-i")
            .arg(format!("PATH={PATH_IN_HOST}"))
            .arg("HOME=/root")
            .arg("USER=root")
            .arg("LOGNAME=root")
            .arg("LANG=C.UTF-8");
        if let Ok(term) = std::env::var("TERM") {
            c.arg(format!("TERM={term}"));
        }
        c.args(cmd);
        Ok(c)
    }

    /// Runs `cmd` in the host with the caller's stdio; returns its exit code.
    pub fn exec<S: AsRef<OsStr>>(&self, cmd: &[S]) -> Result<i32> {
        let mut c = self.command(cmd)?;
        let status = c
            .status()
            .ctx(|| format!("cannot run `{}`", process::describe(&c)))?;
        Ok(process::exit_code(status))
    }

    /// Runs `cmd` in the host and captures its output.
    pub fn output<S: AsRef<OsStr>>(&self, cmd: &[S]) -> Result<Output> {
        let mut c = self.command(cmd)?;
        c.stdin(Stdio::null())
            .output()
            .ctx(|| format!("cannot run `{}`", process::describe(&c)))
    }

    /// Runs a shell script (`sh -c`) in the host and captures its output.
    pub fn sh(&self, script: &str) -> Result<Output> {
        self.output(&["/bin/sh", "-c", script])
    }
}

/// Connects and reads the first line an SSH server sends.
pub fn read_banner(addr: SocketAddr, timeout: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let mut buf = [0u8; 256];
    let mut got = 0;
    while got < buf.len() {
        let n = stream.read(&mut buf[got..]).ok()?;
        if n == 0 {
            break;
        }
        got += n;
        if buf[..got].contains(&b'\n') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf[..got]);
    let line = text.lines().next()?.trim().to_string();
    line.starts_with("SSH-").then_some(line)
}
