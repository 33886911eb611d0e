//! `provision sandbox up | down | status | exec | base`: local test hosts
//! (systemd-nspawn, see the provision-sandbox crate).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use provision_sandbox::{Config, Error, Inventory, ProxyMode, Sandbox, Subnet, UpOptions};

/// Name of the sandbox made with `--hosts N` and no `--name`.
const DEFAULT_NAME: &str = "sandbox";

#[derive(clap::Args, Debug)]
pub struct SandboxArgs {
    #[command(subcommand)]
    pub command: SandboxCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SandboxCommand {
    /// Boot one local host per [hosts.NAME] of the stack (or --hosts N)
    Up(UpArgs),
    /// Stop the hosts (their disks stay); --destroy removes every trace
    Down(DownArgs),
    /// Show each host, its address, and whether SSH answers
    Status(StatusArgs),
    /// Run a command in a host (as root, through its PID 1's namespaces)
    Exec(ExecArgs),
    /// Build the cached base image if missing, and print its path
    Base,
    /// The egress proxy of a sandbox (started by `up`; listens on stdin)
    #[command(hide = true)]
    Proxy(ProxyArgs),
}

/// Which sandbox: `--name`, else the stack's `[stack] name`, else "sandbox".
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Stack file; its [stack] name names the sandbox
    #[arg(long, value_name = "FILE")]
    pub stack: Option<PathBuf>,
    /// Sandbox name (lowercase letters, digits, '-')
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub target: Target,
    /// Boot N hosts named host1..hostN instead of the stack's hosts
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "stack",
        required_unless_present = "stack"
    )]
    pub hosts: Option<usize>,
    /// Subnet of the bridge for a new sandbox (default 10.77.0.0/24)
    #[arg(long, env = "PROVISION_SANDBOX_SUBNET")]
    pub subnet: Option<Subnet>,
    /// Fail instead of building the base image when it is missing
    #[arg(long)]
    pub no_build: bool,
    /// Port of the egress proxy on the bridge (default: any free port)
    #[arg(long, default_value_t = 0)]
    pub proxy_port: u16,
    /// Print the inventory as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DownArgs {
    #[command(flatten)]
    pub target: Target,
    /// Remove every trace: processes, mounts, namespaces, links, cgroups, state
    #[arg(long)]
    pub destroy: bool,
    /// Every sandbox on this machine
    #[arg(long, conflicts_with_all = ["stack", "name"])]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub target: Target,
    /// Host name
    pub host: String,
    /// Command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// The sandbox's egress.json, written by `up`
    #[arg(long, value_name = "FILE")]
    pub allowlist: PathBuf,
}

pub async fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    if let SandboxCommand::Proxy(p) = &args.command {
        provision_sandbox::proxy::serve_stdin(&p.allowlist).await?;
        return Ok(ExitCode::SUCCESS);
    }
    // the library blocks (processes, polling); keep it off the async workers
    let outcome = tokio::task::spawn_blocking(move || run_blocking(args)).await?;
    Ok(match outcome {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::from(exit_code_for(&e))
        }
    })
}

/// 2 for what the user can fix by changing the command or the machine; 1 otherwise.
fn exit_code_for(e: &Error) -> u8 {
    match e {
        Error::NotRoot { .. }
        | Error::MissingTools(_)
        | Error::Unsupported(_)
        | Error::NameClash { .. }
        | Error::HostSetMismatch { .. }
        | Error::NoSuchSandbox { .. }
        | Error::NoSuchHost { .. }
        | Error::BaseMissing { .. }
        | Error::AddressTaken { .. }
        | Error::InvalidName { .. }
        | Error::InvalidInput(_)
        | Error::Parse { .. } => 2,
        _ => 1,
    }
}

fn run_blocking(args: SandboxArgs) -> provision_sandbox::Result<ExitCode> {
    match args.command {
        SandboxCommand::Up(a) => up(a),
        SandboxCommand::Down(a) => down(a),
        SandboxCommand::Status(a) => status(a),
        SandboxCommand::Exec(a) => exec(a),
        SandboxCommand::Base => {
            let config = Config::from_env()?;
            let path = provision_sandbox::base_image::ensure(&config.cache_root, &progress)?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Proxy(_) => unreachable!("served in run()"),
    }
}

fn progress(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The sandbox name and, with --stack, the stack's host names.
fn resolve(target: &Target) -> provision_sandbox::Result<(String, Option<Vec<String>>)> {
    let stack = match &target.stack {
        Some(path) => Some(provision_sandbox::read_stack(path)?),
        None => None,
    };
    let name = match (&target.name, &stack) {
        (Some(name), _) => name.clone(),
        (None, Some(s)) => match &s.name {
            Some(n) => {
                provision_sandbox::check_sandbox_name(n).map_err(|e| {
                    Error::InvalidInput(format!(
                        "the stack's name cannot name a sandbox ({e}); pass --name"
                    ))
                })?;
                n.clone()
            }
            None => DEFAULT_NAME.to_string(),
        },
        (None, None) => DEFAULT_NAME.to_string(),
    };
    Ok((name, stack.map(|s| s.hosts)))
}

/// Opens an existing sandbox; a missing one lists those that exist.
fn open(config: &Config, target: &Target) -> provision_sandbox::Result<Sandbox> {
    let (name, _) = resolve(target)?;
    let sandbox = Sandbox::with_config(config.clone(), &name)?;
    if !sandbox.exists() {
        let existing = Sandbox::list(config);
        let hint = if existing.is_empty() {
            "there are none; make one with `provision sandbox up`".to_string()
        } else {
            format!("existing: {} (pass --name or --stack)", existing.join(", "))
        };
        return Err(Error::InvalidInput(format!(
            "no sandbox named {name:?}; {hint}"
        )));
    }
    Ok(sandbox)
}

fn up(a: UpArgs) -> provision_sandbox::Result<ExitCode> {
    let mut config = Config::from_env()?;
    if let Some(subnet) = a.subnet {
        config = config.with_subnet(subnet);
    }
    let (name, stack_hosts) = resolve(&a.target)?;
    let hosts = match (a.hosts, stack_hosts) {
        (Some(0), _) => return Err(Error::InvalidInput("--hosts needs at least 1".into())),
        (Some(n), _) => (1..=n).map(|i| format!("host{i}")).collect(),
        (None, Some(hosts)) => hosts,
        (None, None) => return Err(Error::InvalidInput("pass --stack FILE or --hosts N".into())),
    };
    let sandbox = Sandbox::with_config(config, &name)?;
    let exe = std::env::current_exe().map_err(|e| Error::Io {
        context: "cannot find the provision binary for the proxy".into(),
        source: e,
    })?;
    let allow_urls = stack_download_urls(a.target.stack.as_deref());
    let opts = UpOptions {
        build_base: !a.no_build,
        allow_urls: allow_urls.clone(),
        proxy: ProxyMode::Detached {
            program: exe,
            args: vec!["sandbox".into(), "proxy".into()],
        },
        proxy_port: a.proxy_port,
        progress: Some(std::sync::Arc::new(progress)),
        ..UpOptions::default()
    };
    let started = std::time::Instant::now();
    // Already up with these hosts: nothing to do (the quick start runs `sandbox up` each time).
    let already_up = sandbox.status().is_ok_and(|status| {
        status.proxy_running
            && status.hosts.len() == hosts.len()
            && status
                .hosts
                .iter()
                .zip(&hosts)
                .all(|(h, name)| &h.name == name && h.running && h.ssh)
    });
    let inventory = if already_up {
        if sandbox.allow_urls(&allow_urls)? {
            progress("the egress proxy now also allows the stack's download hosts");
        }
        sandbox.inventory()?
    } else {
        sandbox.up(&hosts, &opts)?
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&inventory).unwrap_or_default()
        );
    } else {
        print_inventory(&inventory, sandbox.state_dir(), started.elapsed());
    }
    Ok(ExitCode::SUCCESS)
}

/// The URLs the stack's hosts download from (Solr's archive, app repositories, ...), for the
/// egress proxy. A stack that does not load yet gets none: `up` reports what is wrong with it.
fn stack_download_urls(stack: Option<&std::path::Path>) -> Vec<String> {
    let Some(path) = stack else {
        return Vec::new();
    };
    match provision_core::stack::Stack::load(path, None) {
        Ok(stack) => stack.download_urls(),
        Err(e) => {
            progress(&format!(
                "provision: the hosts may reach the package registries only: {} does not \
                 load ({e})",
                path.display()
            ));
            Vec::new()
        }
    }
}

fn print_inventory(inv: &Inventory, dir: &std::path::Path, took: std::time::Duration) {
    println!(
        "sandbox {}: {} host(s) up in {:.1} s",
        inv.name,
        inv.hosts.len(),
        took.as_secs_f64()
    );
    for h in &inv.hosts {
        println!("  {:<24} {}", h.name, h.address);
    }
    println!("inventory:   {}", dir.join("inventory.json").display());
    println!("key:         {}", inv.key_file.display());
    println!("known_hosts: {}", inv.known_hosts.display());
    if let Some(proxy) = inv.proxy {
        println!(
            "egress:      proxy on {proxy} (the machine's package registries and the stack's \
             download hosts only)"
        );
    }
    if let Some(first) = inv.hosts.first() {
        println!(
            "try:         ssh -i {} -o UserKnownHostsFile={} root@{}",
            inv.key_file.display(),
            inv.known_hosts.display(),
            first.address
        );
    }
}

fn down(a: DownArgs) -> provision_sandbox::Result<ExitCode> {
    let config = Config::from_env()?;
    let sandboxes = if a.all {
        Sandbox::list(&config)
            .iter()
            .map(|n| Sandbox::with_config(config.clone(), n))
            .collect::<provision_sandbox::Result<Vec<_>>>()?
    } else {
        vec![open(&config, &a.target)?]
    };
    for sandbox in sandboxes {
        sandbox.down(a.destroy)?;
        let what = if a.destroy { "destroyed" } else { "stopped" };
        println!("sandbox {}: {what}", sandbox.name());
    }
    Ok(ExitCode::SUCCESS)
}

fn status(a: StatusArgs) -> provision_sandbox::Result<ExitCode> {
    let config = Config::from_env()?;
    let sandbox = open(&config, &a.target)?;
    let status = sandbox.status()?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
    } else {
        println!("{status}");
    }
    Ok(if status.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn exec(a: ExecArgs) -> provision_sandbox::Result<ExitCode> {
    let config = Config::from_env()?;
    let sandbox = open(&config, &a.target)?;
    let code = sandbox.exec(&a.host, &a.command)?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
