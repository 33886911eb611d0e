//! Shared by the tests: the example stack, tiny HTTP backends and client, child processes
//! that die with the test, and the checks run the way the engine runs them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use provision_core::template::Templates;
use provision_nginx::haproxy_runtime::{
    ServerStat, ServerStatus, parse_show_stat, show_stat, socket_shell_command,
};
use provision_nginx::{
    Backend, FrontendSettings, Password, TEMPLATES, Tls, VarnishSettings, haproxy,
};

pub const STATS_PASSWORD: &str = "s3cret \"pa$$\" #1";

/// Two instance hosts with two clients each, a sub-site, every hook, TLS and Varnish.
pub fn full_stack() -> FrontendSettings {
    let mut s = FrontendSettings::default();
    s.haproxy.stats_password = Some(Password(STATS_PASSWORD.to_string()));
    s.haproxy.sticky_sessions = true;
    s.private_address = "10.0.0.5".to_string();
    for (host, address) in [("app1", "10.0.0.11"), ("app2", "10.0.0.12")] {
        for n in 1..=2u16 {
            s.backends.push(Backend {
                name: format!("{host}-{n}"),
                address: address.to_string(),
                port: 8080 + n,
                maxconn: 2,
            });
        }
    }
    s.subsites = BTreeMap::from([("en.example.org".to_string(), "en".to_string())]);
    s.subsite_config = BTreeMap::from([(
        "en.example.org".to_string(),
        "add_header X-Subsite en;\n".to_string(),
    )]);
    s.nginx.additional_config = Some("location ~ /manage_ {\n    deny all;\n}\n".to_string());
    s.nginx.default_config = Some("add_header X-Frame-Options SAMEORIGIN;".to_string());
    s.nginx.additional_ssl_config =
        Some("add_header Strict-Transport-Security \"max-age=31536000\";".to_string());
    s.nginx.default_ssl_config = Some("add_header X-Default-Tls yes;".to_string());
    s.nginx.additional_servers = Some(
        "server {\n    listen 127.0.0.1:8099;\n    server_name health.internal;\n    return 204;\n}"
            .to_string(),
    );
    s.nginx.enable_ssi = true;
    s.tls = Some(Tls {
        certificate: "/etc/ssl/certs/plone.pem".to_string(),
        key: "/etc/ssl/private/plone.key".to_string(),
    });
    s.varnish = Some(VarnishSettings::default());
    s
}

/// The same two hosts with everything else at its default.
pub fn plain_stack() -> FrontendSettings {
    let mut s = FrontendSettings::default();
    s.haproxy.stats_password = Some(Password("secret".to_string()));
    s.backends = full_stack().backends;
    s
}

/// Whether `program` runs here. Missing software skips a test, unless
/// `PROVISION_SANDBOX=required`, where it fails.
pub fn have(program: &str, version_arg: &str) -> bool {
    let ok = Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("PROVISION_SANDBOX").as_deref() != Ok("required"),
            "{program} is not installed"
        );
        eprintln!("skipped: {program} is not installed");
    }
    ok
}

/// Run a `validate` command the way a File resource does on a host: the candidate is copied
/// to `$tmp` in `dir`, `{}` names it, and it runs under `set -eu` in an `&&` chain.
/// Returns whether it accepted the candidate, and its stderr.
pub fn run_check(command: &str, content: &str, dir: &Path) -> (bool, String) {
    let source = dir.join(".candidate-source");
    std::fs::write(&source, content).unwrap();
    let script = format!(
        "set -eu\ntmp=$(mktemp {dir}/.provision.XXXXXX)\ntrap 'rm -f \"$tmp\"' EXIT\n\
         cat {source} > \"$tmp\" && {check} && echo accepted\n",
        dir = dir.display(),
        source = source.display(),
        check = command.replace("{}", "\"$tmp\""),
    );
    let output = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    std::fs::remove_file(&source).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    (
        stdout.lines().any(|l| l == "accepted"),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny HTTP backend: answers every request with `<name> <path>` (and `OK` on `/ok`),
/// counting the requests that are not health checks. `stop` closes its port, as a stopped
/// Plone client would.
pub struct HttpBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    stopped: Arc<AtomicBool>,
}

impl HttpBackend {
    pub fn start(name: &str, ip: &str) -> HttpBackend {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let (counter, stop, label) = (hits.clone(), stopped.clone(), name.to_string());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let (counter, label) = (counter.clone(), label.clone());
                        std::thread::spawn(move || serve(stream, &label, &counter));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HttpBackend {
            name: name.to_string(),
            addr,
            hits,
            stopped,
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Close the port (within a few milliseconds).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

fn serve(mut stream: TcpStream, name: &str, hits: &AtomicU64) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let body = if path == "/ok" {
        "OK".to_string()
    } else {
        hits.fetch_add(1, Ordering::SeqCst);
        format!("{name} {path}")
    };
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    request_on(stream, method, path, headers)
}

pub fn request_on(
    mut stream: TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str("Host: www.example.org\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `Basic <base64(user:password)>`.
pub fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct ChildGuard {
    pub child: Child,
    pub name: &'static str,
    pub log: PathBuf,
}

impl ChildGuard {
    pub fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> ChildGuard {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard { child, name, log }
    }

    /// The child's output so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until `ready` holds, failing with the child's output if it exits or takes long.
    pub fn wait_for(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before {what}:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} did not get to {what} in 10s:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    /// SIGTERM first, so that nginx and varnishd take their worker processes with them; then
    /// SIGKILL if it lingers.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until a TCP port accepts connections.
pub fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Send one runtime API command through `socat`, as the rolling restart does on the host.
pub fn runtime(socket: &str, command: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(socket_shell_command(socket, command))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub fn servers(socket: &str) -> Vec<ServerStat> {
    parse_show_stat(&runtime(socket, &show_stat(haproxy::BACKEND).unwrap())).unwrap()
}

pub fn status_of(socket: &str, name: &str) -> ServerStatus {
    servers(socket)
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no server {name}"))
        .status
}

/// A running HAProxy from the rendered config, and its runtime socket.
pub struct Balancer {
    pub settings: FrontendSettings,
    pub port: u16,
    pub socket: String,
    pub child: ChildGuard,
    pub _dir: tempfile::TempDir,
}

/// HAProxy from the rendered config over `backends`, ready when both servers are UP.
pub fn start_haproxy(
    backends: &[&HttpBackend],
    adjust: impl FnOnce(&mut FrontendSettings),
) -> Balancer {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FrontendSettings {
        haproxy_port: free_port(),
        ..FrontendSettings::default()
    };
    s.haproxy.stats_password = Some(Password(STATS_PASSWORD.to_string()));
    s.haproxy.stats_socket_path = dir.path().join("admin.sock").display().to_string();
    // Fast checks, so that a stopped client is seen DOWN within a second.
    s.haproxy.check_interval = 200;
    s.haproxy.fall = 2;
    s.haproxy.global_max_connections = 1000;
    s.haproxy.default_max_connections = 1000;
    for (i, b) in backends.iter().enumerate() {
        s.backends.push(Backend {
            name: b.name.clone(),
            address: b.addr.ip().to_string(),
            port: b.addr.port(),
            maxconn: 2 + i as u32,
        });
    }
    adjust(&mut s);
    let templates = Templates::new(TEMPLATES).unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, haproxy::render_config(&s, &templates).unwrap()).unwrap();
    let mut child = ChildGuard::spawn(
        "haproxy",
        Command::new("haproxy").arg("-f").arg(&cfg).arg("-db"),
        dir.path().join("haproxy.log"),
    );
    let socket = s.haproxy.stats_socket_path.clone();
    let port = s.haproxy_port;
    child.wait_for("listening", || {
        listening(port) && std::path::Path::new(&socket).exists()
    });
    child.wait_for("every server UP", || {
        servers(&socket)
            .iter()
            .all(|s| s.status == ServerStatus::Up)
    });
    Balancer {
        settings: s,
        port,
        socket,
        child,
        _dir: dir,
    }
}
