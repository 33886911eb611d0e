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

/// Runs the `provision` binary in `dir` with `args` and extra environment variables.
pub fn provision(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_provision"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("PROVISION_STACK");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the provision binary runs")
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
    std::fs::write(
        dir.join("stack.toml"),
        format!("[stack]\nname = \"{}\"\n\n{body}", hosts.name()),
    )
    .unwrap();
}

/// Polls `check` every 500 ms; panics when it is not true within `limit`.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
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

/// The Zope example app (examples/apps/zope-buildout) as the git repository `dir/site`, with
/// `files` (path in the repository, content) added: what `repository = "site"` deploys.
pub fn zope_example_repository(dir: &Path, files: &[(&str, &str)], message: &str) -> PathBuf {
    let repo = dir.join("site");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/apps/zope-buildout");
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
