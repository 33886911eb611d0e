//! A named set of hosts: `up`, `down`, `status`, `exec`.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::base;
use crate::cgroup::{Cgroups, wait_until};
use crate::config::{Config, Subnet};
use crate::egress::{Egress, write_in_root};
use crate::error::{Error, IoContext, Result};
use crate::host::Host;
use crate::inventory::{Inventory, InventoryHost};
use crate::names;
use crate::net::{Net, veth_name};
use crate::process;
use crate::proxy::{InProcessProxy, register_in_process, stop_in_process};
use crate::state::{self, HostState, Owner, Paths, State};
use crate::tools::{self, Tools};

/// What every operation shares: configuration, tools, cgroups.
pub(crate) struct Ctx {
    pub config: Config,
    pub tools: Tools,
    pub missing: Option<Error>,
    pub cgroups: Option<Cgroups>,
    pub cgroup_error: Option<String>,
}

impl Ctx {
    fn new(config: Config) -> Ctx {
        let mut tools = Tools::default();
        let missing = tools.add(tools::RUN).err();
        let (cgroups, cgroup_error) = match Cgroups::detect() {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Ctx {
            config,
            tools,
            missing,
            cgroups,
            cgroup_error,
        }
    }

    /// Root, tools, cgroup2, overlayfs: what running hosts needs.
    pub(crate) fn preflight(&self) -> Result<()> {
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return Err(Error::NotRoot { uid: uid.as_raw() });
        }
        if let Some(Error::MissingTools(missing)) = &self.missing {
            return Err(Error::MissingTools(missing.clone()));
        }
        if let Some(e) = &self.cgroup_error {
            return Err(Error::Unsupported(e.clone()));
        }
        let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !filesystems
            .lines()
            .any(|l| l.trim_end().ends_with("overlay"))
        {
            return Err(Error::Unsupported(
                "the kernel has no overlay filesystem (host disks are overlays over the base)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Why the sandbox cannot run here (not root, a missing tool, no cgroup2, no
/// overlayfs), or `None` when it can.
pub fn unavailable_reason(config: &Config) -> Option<Error> {
    Ctx::new(config.clone()).preflight().err()
}

/// Where the egress proxy runs.
#[derive(Debug, Clone, Default)]
pub enum ProxyMode {
    /// A thread of this process; it stops with `down` or when the process exits
    /// (tests, benchmarks).
    #[default]
    InProcess,
    /// A detached process: `program args... --allowlist FILE` with the listening
    /// socket as its stdin, which must call [`crate::proxy::serve_stdin`]. The
    /// CLI passes its own binary and its hidden `sandbox proxy` subcommand.
    Detached {
        program: PathBuf,
        args: Vec<OsString>,
    },
    /// No proxy: hosts have no egress at all.
    Off,
}

/// Receives progress messages.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// Options of [`Sandbox::up`].
#[derive(Clone)]
pub struct UpOptions {
    /// Build the base image when missing (about 100 s, once).
    pub build_base: bool,
    pub proxy: ProxyMode,
    /// Proxy port on the bridge address; 0 takes a free one.
    pub proxy_port: u16,
    /// How long each host may take to answer on SSH; default 60 s plus 2 s per host.
    pub ready_timeout: Option<Duration>,
    /// Progress messages (base build, inotify limit changes); default: stderr.
    pub progress: Option<Progress>,
    /// Marks a test's sandbox: a later fixture destroys it once the process
    /// that made it has died (a test killed by a timeout never drops it).
    pub fixture: bool,
    /// URLs the hosts download from besides the package registries (a stack's Solr
    /// archive, app repositories, ...): the proxy relays to their hosts too.
    pub allow_urls: Vec<String>,
}

impl Default for UpOptions {
    fn default() -> UpOptions {
        UpOptions {
            build_base: true,
            proxy: ProxyMode::InProcess,
            proxy_port: 0,
            ready_timeout: None,
            progress: None,
            fixture: false,
            allow_urls: Vec::new(),
        }
    }
}

impl fmt::Debug for UpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpOptions")
            .field("build_base", &self.build_base)
            .field("proxy", &self.proxy)
            .field("proxy_port", &self.proxy_port)
            .field("ready_timeout", &self.ready_timeout)
            .finish()
    }
}

impl UpOptions {
    fn say(&self, msg: &str) {
        match &self.progress {
            Some(f) => f(msg),
            None => {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "provision-sandbox: {msg}");
            }
        }
    }
}

/// State of one host, from [`Sandbox::status`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostStatus {
    pub name: String,
    pub address: Ipv4Addr,
    pub running: bool,
    pub pid1: Option<u32>,
    pub frozen: bool,
    /// Whether the host's link is up (false after `partition` or a power cut).
    pub link_up: bool,
    /// Whether an SSH banner came on port 22 within a second.
    pub ssh: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub name: String,
    pub hosts: Vec<HostStatus>,
    pub proxy: Option<SocketAddr>,
    pub proxy_running: bool,
}

impl Status {
    /// Every host runs and answers on SSH.
    pub fn healthy(&self) -> bool {
        self.hosts.iter().all(|h| h.running && h.ssh)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sandbox {}", self.name)?;
        writeln!(
            f,
            "  {:<24} {:<15} {:<8} {:<8} {:<5}",
            "HOST", "ADDRESS", "STATE", "PID1", "SSH"
        )?;
        for h in &self.hosts {
            let state = match (h.running, h.frozen, h.link_up) {
                (false, _, _) => "stopped",
                (true, true, _) => "frozen",
                (true, false, false) => "cut",
                (true, false, true) => "running",
            };
            let pid1 = h.pid1.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
            let ssh = if h.ssh { "yes" } else { "no" };
            writeln!(
                f,
                "  {:<24} {:<15} {state:<8} {pid1:<8} {ssh:<5}",
                h.name,
                h.address.to_string()
            )?;
        }
        match self.proxy {
            Some(addr) => write!(
                f,
                "  egress proxy {addr}: {}",
                if self.proxy_running {
                    "running"
                } else {
                    "not running"
                }
            ),
            None => write!(f, "  no egress proxy"),
        }
    }
}

/// A named sandbox: a set of hosts on the bridge.
#[derive(Clone)]
pub struct Sandbox {
    ctx: Arc<Ctx>,
    name: String,
    paths: Paths,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox").field("name", &self.name).finish()
    }
}

impl Sandbox {
    /// A handle on the sandbox `name`, configured from the environment
    /// ([`Config::from_env`]). Nothing is created until `up`.
    pub fn new(name: &str) -> Result<Sandbox> {
        Sandbox::with_config(Config::from_env()?, name)
    }

    pub fn with_config(config: Config, name: &str) -> Result<Sandbox> {
        names::check_sandbox_name(name)?;
        config.check()?;
        let paths = Paths::new(&config, name);
        Ok(Sandbox {
            ctx: Arc::new(Ctx::new(config)),
            name: name.to_string(),
            paths,
        })
    }

    /// Names of the sandboxes on this machine.
    pub fn list(config: &Config) -> Vec<String> {
        state::list(config)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// The state directory (keys, inventory, host disks, logs).
    pub fn state_dir(&self) -> &Path {
        &self.paths.dir
    }

    pub fn exists(&self) -> bool {
        self.paths.state().is_file()
    }

    fn state(&self) -> Result<State> {
        if !self.exists() {
            return Err(Error::NoSuchSandbox {
                name: self.name.clone(),
                dir: self.paths.dir.clone(),
            });
        }
        state::read_state(&self.paths)
    }

    fn host_of(&self, state: &State, host: &state::HostState) -> Result<Host> {
        Ok(Host {
            ctx: self.ctx.clone(),
            sandbox: self.name.clone(),
            paths: self.paths.clone(),
            state: host.clone(),
            subnet: state.subnet.parse()?,
            bridge: state.bridge.clone(),
            base: state.base.clone(),
        })
    }

    /// The hosts, in the order they were given to `up`.
    pub fn hosts(&self) -> Result<Vec<Host>> {
        let state = self.state()?;
        state
            .hosts
            .iter()
            .map(|h| self.host_of(&state, h))
            .collect()
    }

    pub fn host(&self, name: &str) -> Result<Host> {
        let state = self.state()?;
        match state.hosts.iter().find(|h| h.name == name) {
            Some(h) => self.host_of(&state, h),
            None => Err(Error::NoSuchHost {
                sandbox: self.name.clone(),
                host: name.to_string(),
                hosts: state
                    .hosts
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Lets a running sandbox's hosts reach the hosts of `urls` too: its detached proxy
    /// (the CLI's) reads the rewritten allowlist at its next connection. Returns whether the
    /// allowlist grew.
    pub fn allow_urls(&self, urls: &[String]) -> Result<bool> {
        let path = self.paths.egress();
        let mut egress: Egress = state::read_json(&path)?;
        let grew = egress.allow_urls(urls);
        if grew {
            state::write_json(&path, &egress)?;
        }
        Ok(grew)
    }

    /// The inventory, with each host's PID 1 as it is now.
    pub fn inventory(&self) -> Result<Inventory> {
        let mut inventory = Inventory::read(&self.paths.inventory())?;
        if self.ctx.cgroups.is_some() {
            for (h, host) in inventory.hosts.iter_mut().zip(self.hosts()?) {
                h.pid1 = host.pid1();
            }
        }
        Ok(inventory)
    }

    /// Boots one host per name. A stopped sandbox with the same hosts boots again
    /// on its disks; a running one is a name clash. On any error everything this
    /// call made is removed again.
    pub fn up<S: AsRef<str>>(&self, host_names: &[S], opts: &UpOptions) -> Result<Inventory> {
        let ctx = &self.ctx;
        ctx.preflight()?;
        let names: Vec<String> = host_names.iter().map(|s| s.as_ref().to_string()).collect();
        names::check_host_names(&names)?;
        if self.name.len() + names.iter().map(String::len).max().unwrap_or(0) + 5 > 64 {
            return Err(Error::InvalidName {
                name: self.name.clone(),
                reason: "sandbox and host name together must stay under 60 characters".into(),
            });
        }
        let base = base::ensure(&ctx.config.cache_root, opts.build_base, &|m| opts.say(m))?;
        let mut egress = Egress::from_machine();
        egress.allow_urls(&opts.allow_urls);

        let (state, resumed) = {
            let _lock = state::machine_lock(&ctx.config)?;
            let resumed = if self.exists() {
                let old = self.state()?;
                let running: Vec<String> = old
                    .hosts
                    .iter()
                    .filter_map(|h| self.host_of(&old, h).ok())
                    .filter(Host::is_running)
                    .map(|h| h.name().to_string())
                    .collect();
                if !running.is_empty()
                    || (old.proxy_mode == "in-process"
                        && old.owner.alive()
                        && old.owner.pid != std::process::id())
                {
                    return Err(Error::NameClash {
                        name: self.name.clone(),
                        running: if running.is_empty() {
                            format!("its proxy in process {}", old.owner.pid)
                        } else {
                            running.join(", ")
                        },
                    });
                }
                let old_names: Vec<&str> = old.hosts.iter().map(|h| h.name.as_str()).collect();
                if old_names != names.iter().map(String::as_str).collect::<Vec<_>>() {
                    return Err(Error::HostSetMismatch {
                        name: self.name.clone(),
                        existing: old_names.join(", "),
                        requested: names.join(", "),
                    });
                }
                Some(old)
            } else {
                None
            };
            let state = match &resumed {
                Some(old) => {
                    let mut s = old.clone();
                    s.owner = Owner::me();
                    s.fixture = opts.fixture;
                    s.base = base.clone();
                    s
                }
                None => self.reserve(&names, &base, opts)?,
            };
            // the network is made under the lock: bridge and netns setup race otherwise
            if let Err(e) = self.make_network(&state) {
                drop(_lock);
                self.undo(&state, resumed.is_some());
                return Err(e);
            }
            (state, resumed.is_some())
        };

        match self.boot(state.clone(), &egress, opts) {
            Ok(inventory) => Ok(inventory),
            Err(e) => {
                self.undo(&state, resumed);
                Err(e)
            }
        }
    }

    /// Picks addresses and writes the state file (under the machine lock).
    fn reserve(&self, names: &[String], base: &Path, opts: &UpOptions) -> Result<State> {
        let config = &self.ctx.config;
        let subnet = config.subnet;
        let net = Net {
            tools: &self.ctx.tools,
        };
        net.check_bridge(&config.bridge, &subnet)?;
        let mut used: BTreeSet<Ipv4Addr> = BTreeSet::new();
        for other in state::list(config) {
            if let Ok(s) = state::read_state(&Paths::new(config, &other)) {
                if s.bridge == config.bridge && s.subnet != subnet.to_string() {
                    return Err(Error::AddressTaken {
                        address: subnet.to_string(),
                        detail: format!(
                            "bridge {} serves {} for sandbox {other}; use another bridge name",
                            config.bridge, s.subnet
                        ),
                    });
                }
                used.extend(s.hosts.iter().map(|h| h.address));
            }
        }
        let links: BTreeSet<String> = net.links()?.into_iter().map(|l| l.ifname).collect();
        let mut free = subnet
            .host_addresses()
            .filter(|a| !used.contains(a) && !links.contains(&veth_name(*a)));
        let mut hosts = Vec::new();
        for name in names {
            let Some(address) = free.next() else {
                return Err(Error::AddressTaken {
                    address: subnet.to_string(),
                    detail: format!(
                        "no free address left for {} hosts ({} in use); destroy other sandboxes or use a larger subnet",
                        names.len(),
                        used.len()
                    ),
                });
            };
            hosts.push(HostState {
                name: name.clone(),
                address,
                veth: veth_name(address),
                netns: format!("psb-{}-{name}", self.name),
                machine: format!("psb-{}-{name}", self.name),
            });
        }
        let state = State {
            name: self.name.clone(),
            subnet: subnet.to_string(),
            bridge: config.bridge.clone(),
            base: base.to_path_buf(),
            hosts,
            proxy: None,
            proxy_mode: String::new(),
            owner: Owner::me(),
            fixture: opts.fixture,
        };
        std::fs::create_dir_all(&self.paths.dir)
            .ctx(|| format!("cannot create {}", self.paths.dir.display()))?;
        state::write_json(&self.paths.state(), &state)?;
        Ok(state)
    }

    fn make_network(&self, state: &State) -> Result<()> {
        let net = Net {
            tools: &self.ctx.tools,
        };
        let subnet: Subnet = state.subnet.parse()?;
        net.ensure_bridge(&state.bridge, &subnet)?;
        for h in &state.hosts {
            net.ensure_host(&h.netns, &h.veth, h.address, &subnet, &state.bridge)?;
            net.set_link(&h.veth, true)?;
            net.set_isolated(&h.veth, false)?;
        }
        Ok(())
    }

    /// Removes what a failed `up` made: all of it for a new sandbox, only the
    /// running parts for a resumed one.
    fn undo(&self, state: &State, resumed: bool) {
        let result = if resumed {
            self.stop_all(state, false)
        } else {
            self.destroy_state(state)
        };
        if let Err(e) = result {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "provision-sandbox: cleaning up after the failed start of {} also failed: {e}",
                self.name
            );
        }
    }

    fn boot(&self, mut state: State, egress: &Egress, opts: &UpOptions) -> Result<Inventory> {
        let gateway = state.subnet.parse::<Subnet>()?.gateway();
        crate::inotify::ensure_for(&self.ctx.config, &state, &|m| opts.say(m))?;
        let key = self.paths.key();
        if !key.is_file() {
            process::run(
                self.ctx
                    .tools
                    .command(tools::SSH_KEYGEN)
                    .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                    .arg(format!("provision-sandbox-{}", self.name))
                    .arg("-f")
                    .arg(&key),
            )?;
        }
        let client_pub = std::fs::read_to_string(key.with_extension("pub"))
            .ctx(|| format!("cannot read {}.pub", key.display()))?;

        state.proxy = self.start_proxy(&state, egress, gateway, opts)?;
        state.proxy_mode = match (&opts.proxy, state.proxy) {
            (_, None) => "none",
            (ProxyMode::InProcess, _) => "in-process",
            _ => "detached",
        }
        .into();
        state::write_json(&self.paths.state(), &state)?;

        let hosts: Vec<Host> = state
            .hosts
            .iter()
            .map(|h| self.host_of(&state, h))
            .collect::<Result<_>>()?;
        let etc_hosts = etc_hosts(&state, gateway);
        let subnet = state.subnet.clone();
        let no_proxy = {
            let mut v = vec![
                "localhost".to_string(),
                "127.0.0.1".into(),
                "::1".into(),
                subnet,
            ];
            for h in &state.hosts {
                v.push(h.name.clone());
                v.push(h.address.to_string());
            }
            v.push(gateway.to_string());
            v.join(",")
        };
        let timeout = opts
            .ready_timeout
            .unwrap_or(Duration::from_secs(60 + 2 * hosts.len() as u64));

        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = hosts
                .iter()
                .map(|host| {
                    let (etc_hosts, client_pub, no_proxy) = (&etc_hosts, &client_pub, &no_proxy);
                    let proxy = state.proxy;
                    scope.spawn(move || -> Result<()> {
                        host.mount_root()?;
                        self.write_identity(host, etc_hosts, client_pub)?;
                        if let Some(proxy) = proxy {
                            egress.write_host_config(&host.root(), proxy, no_proxy)?;
                        }
                        host.launch()?;
                        host.wait_ready(timeout)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::InvalidInput("a host's boot thread panicked".into()))
                    })
                })
                .collect()
        });
        if let Some(err) = results.into_iter().find_map(Result::err) {
            return Err(err);
        }

        let mut known = String::new();
        for host in &hosts {
            let pub_file = host.root().join("etc/ssh/ssh_host_ed25519_key.pub");
            let text = std::fs::read_to_string(&pub_file)
                .ctx(|| format!("cannot read {}", pub_file.display()))?;
            let mut words = text.split_whitespace();
            let (Some(kind), Some(key)) = (words.next(), words.next()) else {
                return Err(Error::Parse {
                    path: pub_file,
                    detail: "not an SSH public key".into(),
                });
            };
            known.push_str(&format!(
                "{},{} {kind} {key}\n",
                host.address(),
                host.name()
            ));
        }
        std::fs::write(self.paths.known_hosts(), known)
            .ctx(|| format!("cannot write {}", self.paths.known_hosts().display()))?;

        let inventory = Inventory {
            name: self.name.clone(),
            hosts: hosts
                .iter()
                .map(|h| InventoryHost {
                    name: h.name().to_string(),
                    address: h.address(),
                    port: 22,
                    user: "root".into(),
                    pid1: h.pid1(),
                })
                .collect(),
            key_file: key,
            known_hosts: self.paths.known_hosts(),
            gateway,
            subnet: state.subnet.clone(),
            proxy: state.proxy,
        };
        state::write_json(&self.paths.inventory(), &inventory)?;
        for note in &egress.notes {
            opts.say(note);
        }
        Ok(inventory)
    }

    /// Identity of a host, written once: machine-id, host name, /etc/hosts, its
    /// SSH host key, the sandbox's client key for root.
    fn write_identity(&self, host: &Host, etc_hosts: &str, client_pub: &str) -> Result<()> {
        let root = host.root();
        write_in_root(&root, Path::new("/etc/hosts"), etc_hosts.as_bytes())?;
        let host_key = root.join("etc/ssh/ssh_host_ed25519_key");
        if host_key.is_file() {
            return Ok(());
        }
        write_in_root(
            &root,
            Path::new("/etc/machine-id"),
            format!("{}\n", machine_id()?).as_bytes(),
        )?;
        write_in_root(
            &root,
            Path::new("/etc/hostname"),
            format!("{}\n", host.name()).as_bytes(),
        )?;
        process::run(
            self.ctx
                .tools
                .command(tools::SSH_KEYGEN)
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("root@{}", host.name()))
                .arg("-f")
                .arg(&host_key),
        )?;
        let ssh_dir = root.join("root/.ssh");
        std::fs::create_dir_all(&ssh_dir).ctx(|| format!("cannot create {}", ssh_dir.display()))?;
        set_mode(&ssh_dir, 0o700)?;
        let auth = ssh_dir.join("authorized_keys");
        std::fs::write(&auth, client_pub).ctx(|| format!("cannot write {}", auth.display()))?;
        set_mode(&auth, 0o600)
    }

    fn start_proxy(
        &self,
        state: &State,
        egress: &Egress,
        gateway: Ipv4Addr,
        opts: &UpOptions,
    ) -> Result<Option<SocketAddr>> {
        if matches!(opts.proxy, ProxyMode::Off) {
            return Ok(None);
        }
        self.stop_proxy();
        let want = SocketAddr::from((gateway, opts.proxy_port));
        let listener = TcpListener::bind(want).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                Error::AddressTaken {
                    address: want.to_string(),
                    detail: "another process listens there; choose another proxy port".into(),
                }
            } else {
                Error::Io {
                    context: format!("cannot listen on {want} for the egress proxy"),
                    source: e,
                }
            }
        })?;
        let addr = listener
            .local_addr()
            .ctx(|| "the proxy socket has no address".into())?;
        state::write_json(&self.paths.egress(), egress)?;
        match &opts.proxy {
            ProxyMode::Off => unreachable!("handled above"),
            ProxyMode::InProcess => {
                let proxy = InProcessProxy::start(
                    listener,
                    egress.allow.clone(),
                    Some(self.paths.proxy_log()),
                )?;
                register_in_process(self.paths.dir.clone(), proxy);
            }
            ProxyMode::Detached { program, args } => {
                let cgroups = self
                    .ctx
                    .cgroups
                    .as_ref()
                    .ok_or_else(|| Error::Unsupported("no cgroup2".into()))?;
                let rel = Cgroups::proxy_rel(&state.name);
                let procs = cgroups.create(&rel)?;
                let log_path = self.paths.proxy_log();
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .ctx(|| format!("cannot open {}", log_path.display()))?;
                let log2 = log
                    .try_clone()
                    .ctx(|| "cannot duplicate the proxy log".into())?;
                let mut cmd = self.ctx.tools.command(tools::SETSID);
                cmd.arg("/bin/sh")
                    .arg("-c")
                    .arg("echo $$ > \"$1\" || exit 97; shift; exec \"$@\"")
                    .arg(format!("provision-sandbox-proxy-{}", state.name))
                    .arg(&procs[0])
                    .arg(program)
                    .args(args)
                    .arg("--allowlist")
                    .arg(self.paths.egress())
                    .stdin(Stdio::from(OwnedFd::from(listener)))
                    .stdout(log)
                    .stderr(log2);
                let mut child = cmd
                    .spawn()
                    .ctx(|| format!("cannot start the proxy: `{}`", process::describe(&cmd)))?;
                drop(cmd);
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut exited = None;
                wait_until(deadline, || {
                    if let Ok(Some(status)) = child.try_wait() {
                        exited = Some(status);
                        return true;
                    }
                    // started and still there: the program has had its chance to fail
                    cgroups.populated(&rel)
                        && std::fs::metadata(&log_path).is_ok_and(|m| m.len() > 0)
                });
                if let Some(status) = exited {
                    return Err(Error::Command {
                        command: "the egress proxy".into(),
                        status: process::status_text(status),
                        output: process::tail(&log_path, 10),
                    });
                }
                process::adopt(child);
            }
        }
        Ok(Some(addr))
    }

    fn stop_proxy(&self) {
        stop_in_process(&self.paths.dir);
        if let Some(cgroups) = &self.ctx.cgroups {
            let rel = Cgroups::proxy_rel(&self.name);
            let _ = cgroups.kill_all(&rel, Duration::from_secs(5));
            let _ = cgroups.remove(&rel);
        }
    }

    /// Stops every host (in parallel) and the proxy; unmounts the disks and
    /// removes the cgroups. Disks, keys and addresses stay.
    fn stop_all(&self, state: &State, graceful: bool) -> Result<()> {
        let hosts: Vec<Host> = state
            .hosts
            .iter()
            .map(|h| self.host_of(state, h))
            .collect::<Result<_>>()?;
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = hosts
                .iter()
                .map(|h| {
                    scope.spawn(move || {
                        if graceful {
                            h.stop(Duration::from_secs(15))?;
                        } else {
                            h.kill()?;
                        }
                        h.unmount_root()?;
                        if let Some(c) = &self.ctx.cgroups {
                            c.remove(&h.cgroup())?;
                        }
                        let propagate =
                            Path::new("/run/systemd/nspawn/propagate").join(&h.state.machine);
                        if propagate.exists() {
                            std::fs::remove_dir_all(&propagate)
                                .ctx(|| format!("cannot remove {}", propagate.display()))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::InvalidInput("a stop thread panicked".into()))
                    })
                })
                .collect()
        });
        self.stop_proxy();
        if let Some(c) = &self.ctx.cgroups {
            c.remove_if_empty(&Cgroups::sandbox_rel(&self.name));
            c.remove_if_empty(Path::new(crate::cgroup::ROOT));
        }
        process::reap();
        results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
    }

    /// Removes every trace of the sandbox except the cached base.
    fn destroy_state(&self, state: &State) -> Result<()> {
        let mut first_error = self.stop_all(state, false).err();
        let _lock = state::machine_lock(&self.ctx.config)?;
        let net = Net {
            tools: &self.ctx.tools,
        };
        for h in &state.hosts {
            if let Err(e) = net.remove_host(&h.netns, &h.veth) {
                first_error.get_or_insert(e);
            }
        }
        if first_error.is_none() && self.paths.dir.exists() {
            // only once nothing is mounted below it any more
            if let Some(m) = state::mounts_under(&self.paths.dir).first() {
                first_error = Some(Error::InvalidInput(format!(
                    "{} is still mounted; not removing the state directory",
                    m.display()
                )));
            } else if let Err(e) = std::fs::remove_dir_all(&self.paths.dir) {
                first_error = Some(Error::Io {
                    context: format!("cannot remove {}", self.paths.dir.display()),
                    source: e,
                });
            }
        }
        let others = state::list(&self.ctx.config);
        let bridge_in_use = others.iter().filter(|n| **n != self.name).any(|n| {
            state::read_state(&Paths::new(&self.ctx.config, n))
                .is_ok_and(|s| s.bridge == state.bridge)
        });
        if !bridge_in_use && let Err(e) = net.remove_bridge_if_unused(&state.bridge) {
            first_error.get_or_insert(e);
        }
        if others.iter().all(|n| *n == self.name) {
            crate::inotify::restore(&self.ctx.config);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops the hosts (orderly, killed after 15 s). With `destroy`, removes
    /// every trace: processes, cgroups, mounts, network namespaces, veths, the
    /// bridge when no sandbox uses it any more, and the state directory. The
    /// cached base stays.
    pub fn down(&self, destroy: bool) -> Result<()> {
        self.ctx.preflight()?;
        let state = self.state()?;
        if destroy {
            self.destroy_state(&state)
        } else {
            self.stop_all(&state, true)?;
            let mut state = state;
            state.proxy = None;
            state.proxy_mode = "none".into();
            state::write_json(&self.paths.state(), &state)?;
            if let Ok(mut inventory) = Inventory::read(&self.paths.inventory()) {
                for h in &mut inventory.hosts {
                    h.pid1 = None;
                }
                inventory.proxy = None;
                state::write_json(&self.paths.inventory(), &inventory)?;
            }
            Ok(())
        }
    }

    /// Each host: address, running, frozen, link, and whether SSH answers.
    pub fn status(&self) -> Result<Status> {
        let state = self.state()?;
        let net = Net {
            tools: &self.ctx.tools,
        };
        let hosts = self.hosts()?;
        let statuses: Vec<HostStatus> = std::thread::scope(|scope| {
            let handles: Vec<_> = hosts
                .iter()
                .map(|h| {
                    let net = &net;
                    scope.spawn(move || {
                        let running = h.is_running();
                        HostStatus {
                            name: h.name().to_string(),
                            address: h.address(),
                            running,
                            pid1: h.pid1(),
                            frozen: running && h.is_frozen(),
                            link_up: net.link_up(h.veth()).unwrap_or(false),
                            ssh: h.ssh_banner(Duration::from_secs(1)).is_some(),
                        }
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let proxy_running = state.proxy.is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok()
        });
        Ok(Status {
            name: self.name.clone(),
            hosts: statuses,
            proxy: state.proxy,
            proxy_running,
        })
    }

    /// Runs `cmd` in `host` with the caller's stdio; returns its exit code.
    pub fn exec<S: AsRef<OsStr>>(&self, host: &str, cmd: &[S]) -> Result<i32> {
        self.host(host)?.exec(cmd)
    }

    /// Runs `cmd` in `host` and captures its output.
    pub fn output<S: AsRef<OsStr>>(&self, host: &str, cmd: &[S]) -> Result<Output> {
        self.host(host)?.output(cmd)
    }

    /// The state's owner and fixture flag, for the fixture's stale cleanup.
    pub(crate) fn stale_fixture(&self) -> bool {
        state::read_state(&self.paths).is_ok_and(|s| s.fixture && !s.owner.alive())
    }
}

fn etc_hosts(state: &State, gateway: Ipv4Addr) -> String {
    let mut s = String::from(
        "# written by provision-sandbox\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    if !state.hosts.iter().any(|h| h.name == "controller") {
        s.push_str(&format!("{gateway}\tcontroller\n"));
    }
    for h in &state.hosts {
        s.push_str(&format!("{}\t{}\n", h.address, h.name));
    }
    s
}

/// A fresh machine id: 128 random bits shaped as a v4 UUID, as systemd makes them.
fn machine_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .ctx(|| "cannot read /dev/urandom".into())?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Ok(hex::encode(bytes))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .ctx(|| format!("cannot chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_are_v4_uuids() {
        let id = machine_id().unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(&id[12..13], "4");
        assert!(matches!(&id[16..17], "8" | "9" | "a" | "b"));
        assert_ne!(id, machine_id().unwrap());
    }
}
