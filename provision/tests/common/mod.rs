//! Helpers of the end-to-end tests: run the `provision` binary, read its output, write a
//! stack named after a sandbox, wait for a condition.

#![allow(dead_code)]

use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use provision_sandbox::fixture::{self, Hosts};

#[path = "../../../provision-solr/tests/common/dist.rs"]
pub mod dist;

/// Runs the `provision` binary in `dir` with `args` and extra environment variables, and
/// asserts that its output shows no secret of the run: a `PROVISION_SECRET_*` value or a value
/// of the stack's secrets file (read before and after: `up` may generate some), plain or
/// percent-encoded as in a URL. Every end-to-end test runs `provision` through here, so this
/// is the sweep over all output of plan, up, deploy, status and their errors.
pub fn provision(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_provision"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("PROVISION_STACK");
    for (key, value) in env {
        command.env(key, value);
    }
    let mut secrets = secret_values(dir, args, env);
    let out = command.output().expect("the provision binary runs");
    secrets.extend(secret_values(dir, args, env));
    let printed = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    for secret in &secrets {
        for form in [secret.clone(), percent_encoded(secret)] {
            assert!(
                !printed.contains(&form),
                "provision {args:?} printed a secret ({}...):\n{printed}",
                &secret[..2]
            );
        }
    }
    out
}

/// The secret values a run of `provision` with `args` in `dir` knows: its `PROVISION_SECRET_*`
/// variables and the string values of the stack's secrets file. Values shorter than 6
/// characters would be found by chance and are left out.
fn secret_values(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let mut values: Vec<String> = std::env::vars()
        .filter(|(key, _)| key.starts_with("PROVISION_SECRET_"))
        .map(|(_, value)| value)
        .chain(
            env.iter()
                .filter(|(key, _)| key.starts_with("PROVISION_SECRET_"))
                .map(|(_, value)| value.to_string()),
        )
        .collect();
    let stack_file = args
        .iter()
        .position(|a| *a == "--stack")
        .and_then(|i| args.get(i + 1))
        .map_or_else(|| dir.join("stack.toml"), |f| dir.join(f));
    let secrets_file = std::fs::read_to_string(&stack_file)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|stack| Some(stack.get("stack")?.get("secrets")?.as_str()?.to_string()))
        .map(|file| stack_file.parent().unwrap_or(dir).join(file));
    if let Some(table) = secrets_file
        .and_then(|file| std::fs::read_to_string(file).ok())
        .and_then(|text| text.parse::<toml::Table>().ok())
    {
        collect_strings(&toml::Value::Table(table), &mut values);
    }
    values.retain(|v| v.len() >= 6);
    values
}

fn collect_strings(value: &toml::Value, into: &mut Vec<String>) {
    match value {
        toml::Value::String(s) => into.push(s.clone()),
        toml::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, into)),
        toml::Value::Table(table) => table.values().for_each(|v| collect_strings(v, into)),
        _ => {}
    }
}

/// `value` as a URL's user info carries it: every byte but unreserved ones as `%XX`.
fn percent_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The exit code and both streams, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// stdout as JSON; panics with both streams when it is not.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// Asserts exit code 0, showing both streams when not.
pub fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A stack named after the sandbox, so that `--sandbox` finds its hosts.
pub fn write_stack(dir: &Path, hosts: &fixture::Hosts, body: &str) {
    // An app named `site` without archives of its own builds from the machine's eggs.
    let eggs = if body.contains("[apps.site]") && !body.contains("buildout_cache_archives") {
        egg_cache_archive(hosts)
            .map(|url| {
                format!(
                    "\n# The test machine's eggs (tests/common: egg_cache_archive).\n\
                     [[attributes.deploy.site.buildout_cache_archives]]\n\
                     url = \"{url}\"\npath = \"shared/eggs\"\n"
                )
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    std::fs::write(
        dir.join("stack.toml"),
        format!("[stack]\nname = \"{}\"\n\n{body}{eggs}", hosts.name()),
    )
    .unwrap();
}

/// The eggs that provision-plone's deploy tests leave on this machine (CI runs them before
/// the sandbox tests): the Zope and Plone builds of examples/apps/buildout.
const EGG_CACHE: &str = "/var/cache/provision-tests/buildout-cache/eggs";

/// This machine's egg cache as a tarball served on the sandbox's bridge, for a
/// `buildout_cache_archives` entry: an app host unpacks it into `shared/eggs` before its first
/// build, so buildout installs no egg. Installing one costs buildout a pip process (about a
/// second of CPU, some 100 per Zope build), the largest share of the sandbox tests' CPU on
/// two cores. None while the cache is empty (a fresh machine that has not run those tests):
/// the build then installs every egg itself, as a user's first build does (the quick start
/// test always does).
pub fn egg_cache_archive(hosts: &Hosts) -> Option<String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static SERVED: OnceLock<Mutex<HashMap<std::net::IpAddr, (dist::FileServer, String)>>> =
        OnceLock::new();

    // One server per sandbox bridge, for the test process's life.
    let gateway = std::net::IpAddr::from(hosts.inventory().gateway);
    let mut served = SERVED.get_or_init(Default::default).lock().unwrap();
    if let Some((_, url)) = served.get(&gateway) {
        return Some(url.clone());
    }
    let mut eggs: Vec<String> = std::fs::read_dir(Path::new(EGG_CACHE).join("v5"))
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.ends_with(".egg"))
        .collect();
    if eggs.is_empty() {
        return None;
    }
    eggs.sort();
    // Named after its content, so a grown cache makes a new tarball and a test process never
    // reads one that another is still writing (written aside, then renamed).
    let digest = <sha2::Sha256 as sha2::Digest>::digest(eggs.join("\n"));
    let name = format!("eggs-{}.tar", hex::encode(&digest[..6]));
    let tarball = Path::new(EGG_CACHE).parent().unwrap().join(&name);
    if !tarball.exists() {
        let partial = tarball.with_extension(format!("tar.{}", std::process::id()));
        let tar = Command::new("tar")
            .arg("-cf")
            .arg(&partial)
            .args(["-C", EGG_CACHE, "."])
            .output()
            .expect("tar runs");
        assert!(tar.status.success(), "tar of {EGG_CACHE}: {}", show(&tar));
        std::fs::rename(&partial, &tarball).unwrap();
    }
    let server = dist::FileServer::start(gateway, &tarball);
    let url = format!("http://{}/{name}", server.address);
    served.insert(gateway, (server, url.clone()));
    Some(url)
}

/// Polls `check` every 500 ms; panics when it is not true within `limit`.
pub fn wait_for(what: &str, limit: Duration, check: impl FnMut() -> bool) {
    assert!(eventually(limit, check), "{what}: not within {limit:?}");
}

/// Polls `check` every 500 ms until it is true (true) or `limit` has passed (false), for a
/// caller whose failure message needs more than [`wait_for`]'s.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !check() {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    true
}

/// moto's virtualenv on the controller (made by scripts/install-deps).
pub const MOTO_VENV: &str = "/var/cache/provision-tests/venv-moto";
/// The keys of the tests' S3 server (moto accepts any).
pub const S3_KEY: &str = "AKIDPROVISIONTEST";
pub const S3_SECRET: &str = "s3cr3t-Backup-key-0f-the-test";

/// moto's S3 server on the sandbox bridge (the inventory's gateway), killed on drop.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
    log: PathBuf,
}

impl S3Server {
    /// The server program, or `None` (after one line saying why) when moto is not installed,
    /// except under PROVISION_SANDBOX=required, where that fails.
    pub fn program() -> Option<PathBuf> {
        let server = Path::new(MOTO_VENV).join("bin/moto_server");
        if server.exists() {
            return Some(server);
        }
        let reason = format!(
            "{} is missing (scripts/install-deps makes it)",
            server.display()
        );
        assert!(!required(), "PROVISION_SANDBOX=required but {reason}");
        // Straight to stderr: libtest does not capture it, so the skip shows.
        let _ = writeln!(std::io::stderr(), "skipped: {reason}");
        None
    }

    pub fn start(server: &Path, gateway: Ipv4Addr, log_dir: &Path) -> S3Server {
        let port = TcpListener::bind((gateway, 0))
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("no free port on the bridge {gateway}: {e}"))
            .port();
        let log = log_dir.join("moto.log");
        let child = Command::new(server)
            .args(["-H", &gateway.to_string(), "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(File::create(&log).unwrap())
            .stderr(File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        let mut s3 = S3Server {
            child,
            endpoint: format!("http://{gateway}:{port}"),
            log,
        };
        let address = (gateway, port).into();
        wait_for("the S3 server listens", Duration::from_secs(60), || {
            if let Ok(Some(status)) = s3.child.try_wait() {
                panic!(
                    "moto exited ({status}): {}",
                    std::fs::read_to_string(s3.log.with_extension("err")).unwrap_or_default()
                );
            }
            TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
        });
        s3
    }

    /// Runs Python with boto3 and `s3`, a client of this server; returns stdout.
    pub fn python(&self, code: &str) -> String {
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='{S3_KEY}', \
             aws_secret_access_key='{S3_SECRET}', region_name='us-east-1')\n{code}",
            self.endpoint
        );
        let out = Command::new(Path::new(MOTO_VENV).join("bin/python"))
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success(), "boto3: {code}\n{}", text(&out.stderr));
        text(&out.stdout)
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.python(&format!("s3.create_bucket(Bucket='{bucket}')"));
    }

    /// Every key under `prefix`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let listing = self.python(&format!(
            "for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{bucket}', Prefix='{prefix}'):\n\
             \x20   for o in page.get('Contents', []):\n\
             \x20       print(o['Key'])"
        ));
        let mut keys: Vec<String> = listing.lines().map(str::to_string).collect();
        keys.sort();
        keys
    }

    pub fn get(&self, bucket: &str, key: &str) -> String {
        self.python(&format!(
            "import sys; sys.stdout.write(s3.get_object(Bucket='{bucket}', Key='{key}')['Body'].read().decode())"
        ))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether sandbox tests must run (CI) instead of skipping.
pub fn required() -> bool {
    std::env::var(fixture::ENV).as_deref() == Ok("required")
}

/// Runs `script` on `host` as root; panics with its output unless it succeeds. Returns stdout.
pub fn sh(hosts: &Hosts, host: &str, script: &str) -> String {
    let out = hosts.ssh(hosts.host(host), script);
    assert!(
        out.status.success(),
        "on {host}: {script}\nexit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs git in `repo` as a CI user; panics with its stderr when it fails.
pub fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.email=ci@example.org", "-c", "user.name=ci"])
        .args(args)
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

/// The Zope example app (examples/apps/buildout) as the git repository `dir/site`, with
/// `files` (path in the repository, content) added: what `repository = "site"` deploys.
pub fn zope_example_repository(dir: &Path, files: &[(&str, &str)], message: &str) -> PathBuf {
    let repo = dir.join("site");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/apps/buildout");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(&example)
        .arg(&repo)
        .status()
        .unwrap();
    assert!(copied.success(), "copying {}", example.display());
    for (path, content) in files {
        let path = repo.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", message]);
    repo
}

/// The body of a stack for the Zope example (`zope_example_repository`) on hosts lb1
/// (nginx + HAProxy), app1 and app2 (`clients` clients each) and db1 (ZEO), the site at
/// the Zope root, HAProxy checking every second.
pub fn zope_cluster_stack(clients: u32) -> String {
    format!(
        "[hosts.lb1]\naddress = \"192.0.2.10\"\nlayers = [\"lb\"]\n\
         [hosts.app1]\naddress = \"192.0.2.11\"\nlayers = [\"plone_instances\"]\n\
         [hosts.app2]\naddress = \"192.0.2.12\"\nlayers = [\"plone_instances\"]\n\
         [hosts.db1]\naddress = \"192.0.2.20\"\nlayers = [\"zeoserver\"]\n\
         [apps.site]\nrepository = \"site\"\n\
         [attributes.plone_instances]\ninstance_count = {clients}\nshared_blobs = false\n\
         # A Zope app without Plone: the site is the Zope root.\nsite_id = \"\"\n\
         [attributes.haproxy]\nhealth_check_url = \"/\"\ncheck_interval = 1000\n"
    )
}

/// A new commit of `repo` that writes `content` to `file`.
pub fn commit(repo: &Path, file: &str, content: &str, message: &str) {
    std::fs::write(repo.join(file), content).unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", message]);
}

/// One HTTP/1.0 request to a client, as the example's Zope manager: (status, body); status 0
/// when the connection failed.
pub fn zope_http(address: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let Ok(mut stream) =
        std::net::TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(5))
    else {
        return (0, Vec::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body).is_err() {
        return (0, Vec::new());
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let status = String::from_utf8_lossy(&response[..split])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        response.get(split + 4..).unwrap_or_default().to_vec(),
    )
}

/// A bounded load loop from the controller: `workers` threads of sequential HTTP/1.0 GETs of
/// `path` at `address` (bridge addresses only) until stopped, each at most 20 000 requests
/// or 15 minutes.
pub struct LoadLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<std::thread::JoinHandle<LoadReport>>,
}

/// What a load loop saw: each request's latency, and the statuses that were not 200 (0: no
/// answer).
#[derive(Debug, Default)]
pub struct LoadReport {
    pub latencies: Vec<Duration>,
    pub failures: Vec<u16>,
}

impl LoadReport {
    /// The latency below which `percent` of the requests finished.
    pub fn percentile(&self, percent: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }
}

impl LoadLoop {
    pub fn start(address: &str, path: &str, workers: usize) -> LoadLoop {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| {
                let (stop, address, path) = (stop.clone(), address.to_string(), path.to_string());
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let mut report = LoadReport::default();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && report.latencies.len() < 20_000
                        && start.elapsed() < Duration::from_secs(900)
                    {
                        let sent = Instant::now();
                        let status = http_get_status(&address, &path);
                        report.latencies.push(sent.elapsed());
                        if status != 200 {
                            report.failures.push(status);
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    report
                })
            })
            .collect();
        LoadLoop { stop, workers }
    }

    /// Stop and merge what every worker saw.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = LoadReport::default();
        for worker in self.workers {
            let report = worker.join().expect("a load worker");
            all.latencies.extend(report.latencies);
            all.failures.extend(report.failures);
        }
        all
    }
}

/// One HTTP/1.0 GET: the status, or 0 when there was no answer within 30 s.
pub fn http_get_status(address: &str, path: &str) -> u16 {
    http_get(address, path, Duration::from_secs(30)).0
}

/// One HTTP/1.0 GET: (status, body); status 0 when there was no answer within `timeout`.
pub fn http_get(address: &str, path: &str, timeout: Duration) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) =
        TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(5))
    else {
        return (0, String::new());
    };
    stream.set_read_timeout(Some(timeout)).unwrap();
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Asserts that every file on `host` holding one of `secrets` (plain or percent-encoded as in
/// a URL) is readable by its owner and at most its group: the sweep over a host's disk for
/// secret files (configs, env files, credentials) left readable by everyone. Returns the files
/// found, for a test to check that the sweep saw what it should.
pub fn assert_secret_files_private(hosts: &Hosts, host: &str, secrets: &[&str]) -> Vec<String> {
    let patterns: String = secrets
        .iter()
        .flat_map(|s| [s.to_string(), percent_encoded(s)])
        .map(|s| s + "\n")
        .collect();
    let encoded = base64_lines(patterns.as_bytes());
    let script = format!(
        "set -e; p=$(mktemp); trap 'rm -f \"$p\"' EXIT; echo '{encoded}' | base64 -d > \"$p\"; \
         grep -rlZF -f \"$p\" /etc /srv /opt /home /root /var/lib /var/backups /usr/local \
           2>/dev/null | xargs -0 -r stat -c '%a %U:%G %n'"
    );
    let listing = sh(hosts, host, &script);
    let files: Vec<String> = listing.lines().map(str::to_string).collect();
    let open: Vec<&String> = files
        .iter()
        .filter(|line| {
            let mode = line.split(' ').next().unwrap_or("777");
            u32::from_str_radix(mode, 8).map_or(true, |m| m & 0o027 != 0)
        })
        .collect();
    assert!(
        open.is_empty(),
        "on {host}, files holding a secret can be read by others or written by the group:\n{open:#?}\n(all files holding one: {files:#?})"
    );
    files
}

/// Standard base64 of `data` on one line (for a shell's `base64 -d`).
fn base64_lines(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Which of `targets` (address, port) `host` opens a TCP connection to within 3 s, all tried
/// at once (a dropped connection costs the whole timeout): one bool per target, in order.
pub fn tcp_reachable(hosts: &Hosts, host: &str, targets: &[(&str, u16)]) -> Vec<bool> {
    let targets: Vec<String> = targets
        .iter()
        .map(|(address, port)| format!("(\"{address}\", {port})"))
        .collect();
    let script = format!(
        "python3 - <<'PY'\n\
         import socket, threading\n\
         targets = [{}]\n\
         reached = [False] * len(targets)\n\
         def probe(i):\n\
         \x20   try:\n\
         \x20       socket.create_connection(targets[i], 3).close()\n\
         \x20       reached[i] = True\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         threads = [threading.Thread(target=probe, args=(i,)) for i in range(len(targets))]\n\
         for t in threads: t.start()\n\
         for t in threads: t.join()\n\
         print(' '.join('1' if r else '0' for r in reached))\n\
         PY",
        targets.join(", ")
    );
    sh(hosts, host, &script)
        .split_whitespace()
        .map(|r| r == "1")
        .collect()
}

/// The state of every server in HAProxy on `lb` (UP, DOWN, MAINT, ...), from `provision
/// status --json` with `env`.
pub fn haproxy_servers(dir: &Path, env: &[(&str, &str)], lb: &str) -> Vec<(String, String)> {
    let out = provision(dir, &["status", "--sandbox", "--json", "--host", lb], env);
    ok(&out);
    json(&out)[0]["haproxy"]
        .as_array()
        .unwrap_or_else(|| panic!("no HAProxy servers: {}", text(&out.stdout)))
        .iter()
        .map(|s| {
            (
                s["server"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The `provision` binary running in the background (a long-running command such as
/// `watch`), its output collected as it comes; killed on drop.
pub struct Background {
    child: Child,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Background {
    /// Starts `provision` in `dir` with `args` and extra environment variables.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Background {
        let mut command = Command::new(env!("CARGO_BIN_EXE_provision"));
        command
            .args(args)
            .current_dir(dir)
            .env_remove("PROVISION_STACK")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the provision binary starts");
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let sink = text.clone();
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut text = sink.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Background {
            child,
            stdout,
            stderr,
        }
    }

    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Both streams so far, for assertion messages.
    pub fn show(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr.lock().unwrap()
        )
    }

    /// Whether it has not exited yet.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM and waits (at most `limit`) for it to end; its exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {}", self.child.id());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < limit,
                "still running {limit:?} after SIGTERM\n{}",
                self.show()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sandbox `provision sandbox up --stack FILE` makes, destroyed however the test ends.
pub struct StackSandbox<'a>(&'a Path);

impl StackSandbox<'_> {
    /// Destroys a leftover of an earlier, killed run first (`sandbox up` would reuse its
    /// hosts).
    pub fn fresh(stack: &Path) -> StackSandbox<'_> {
        let _ = Self::destroy(stack);
        StackSandbox(stack)
    }

    fn destroy(stack: &Path) -> Output {
        provision(
            Path::new("/"),
            &[
                "sandbox",
                "down",
                "--stack",
                &stack.to_string_lossy(),
                "--destroy",
            ],
            &[],
        )
    }
}

impl Drop for StackSandbox<'_> {
    fn drop(&mut self) {
        let out = Self::destroy(self.0);
        if !out.status.success() {
            eprintln!(
                "destroying the sandbox of {}: {}",
                self.0.display(),
                show(&out)
            );
        }
    }
}

/// How the engine reaches a sandbox host, as `provision --sandbox` does: the inventory's key,
/// strict host-key checking.
pub fn engine_connection(hosts: &Hosts, name: &str) -> provision_core::engine::Connection {
    let inventory = hosts.inventory();
    let entry = inventory
        .host(name)
        .unwrap_or_else(|| panic!("no {name} in the sandbox"));
    provision_core::engine::Connection::Ssh(provision_core::host::SshTarget::with_key_file(
        entry.address.to_string(),
        entry.port,
        entry.user.clone(),
        inventory.key_file.clone(),
        inventory.known_hosts.clone(),
    ))
}

/// Connects the engine to a sandbox host as `provision --sandbox` does; panics if it cannot.
pub async fn engine_host(
    hosts: &Hosts,
    name: &str,
) -> (provision_core::host::Host, provision_core::facts::Facts) {
    let targets = vec![(name.to_string(), engine_connection(hosts, name))];
    provision_core::engine::connect_all(&targets, 1, &provision_core::engine::Quiet)
        .await
        .remove(0)
        .unwrap_or_else(|e| panic!("connecting to {name}: {e}"))
}

/// Converges `resources` on `host` as `provision up` does (2 minutes at most per command).
pub async fn engine_apply(
    host: &provision_core::host::Host,
    resources: &[provision_core::resource::Resource],
) -> provision_core::engine::HostReport {
    let options = provision_core::engine::Options {
        mode: provision_core::engine::Mode::Apply,
        command_timeout: Some(Duration::from_secs(120)),
        mask: &|s: &str| s.to_string(),
        progress: &provision_core::engine::Quiet,
    };
    provision_core::engine::converge(host, resources, &options).await
}
