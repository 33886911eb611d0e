//! The egress proxy on the bridge: a small HTTP forward proxy (CONNECT for
//! https, absolute-URI requests for http) that relays only to the allowlist.
//!
//! It runs either in-process (tests, benchmarks: a thread with its own tokio
//! runtime, stopped by `down` or at process exit) or detached (the CLI: the
//! `provision` binary re-executed with a hidden subcommand that calls
//! [`serve_stdin`], the listening socket passed as its stdin).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::egress::{Allowlist, split_host_port};
use crate::error::{IoContext, Result};

const MAX_HEAD: usize = 64 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

type Log = Option<Arc<Mutex<std::fs::File>>>;

fn log_line(log: &Log, line: &str) {
    match log {
        Some(file) => {
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(f, "{line}");
        }
        None => {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }
}

/// Where the proxy's allowlist comes from.
pub enum AllowSource {
    Fixed(Allowlist),
    /// A sandbox's `egress.json`, read again when it changes: `sandbox up` of a stack that
    /// downloads from more hosts rewrites it while the proxy runs.
    File(PathBuf),
}

/// The allowlist of an `egress.json` and the file's modification time.
fn read_allowlist(path: &Path) -> Result<(Allowlist, Option<std::time::SystemTime>)> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let egress: crate::egress::Egress = crate::state::read_json(path)?;
    Ok((egress.allow, modified))
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: std::net::TcpListener,
    source: AllowSource,
    log: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let log: Log = match log {
        Some(path) => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ))),
        None => None,
    };
    let (mut allow, mut read_at, file) = match source {
        AllowSource::Fixed(allow) => (Arc::new(allow), None, None),
        AllowSource::File(path) => {
            let (allow, modified) = read_allowlist(&path).map_err(std::io::Error::other)?;
            (Arc::new(allow), modified, Some(path))
        }
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                if let Some(path) = &file {
                    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                    if modified != read_at {
                        match read_allowlist(path) {
                            Ok((new, at)) => {
                                log_line(&log, &format!("allowlist changed: allowing {:?}", new.hosts));
                                (allow, read_at) = (Arc::new(new), at);
                            }
                            Err(e) => log_line(&log, &format!("keeping the allowlist: {e}")),
                        }
                    }
                }
                let allow = allow.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, peer, &allow, &log).await {
                        log_line(&log, &format!("{peer}: {e}"));
                    }
                });
            }
        }
    }
}

/// Entry point of the detached proxy: the listening socket is stdin, the
/// allowlist a JSON file written by `up`. Runs until killed.
pub async fn serve_stdin(allowlist: &Path) -> Result<()> {
    let (allow, _) = read_allowlist(allowlist)?;
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ctx(|| "cannot take the listening socket from stdin".into())?;
    let listener = std::net::TcpListener::from(fd);
    let addr = listener
        .local_addr()
        .ctx(|| "stdin is not a listening socket".into())?;
    log_line(
        &None,
        &format!(
            "provision-sandbox proxy on {addr}, allowing {:?}",
            allow.hosts
        ),
    );
    serve(
        listener,
        AllowSource::File(allowlist.to_path_buf()),
        None,
        std::future::pending(),
    )
    .await
    .ctx(|| format!("proxy on {addr} failed"))
}

async fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    allow: &Allowlist,
    log: &Log,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let head_end = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client, &mut buf)).await
    {
        Ok(Ok(Some(end))) => end,
        Ok(Ok(None)) => {
            return respond(&mut client, 400, "request head too large or incomplete\n").await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let rest = buf[head_end..].to_vec();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return respond(&mut client, 400, "malformed request line\n").await;
    };

    if method.eq_ignore_ascii_case("CONNECT") {
        let Some((host, port)) = split_host_port(target, 443) else {
            return respond(&mut client, 400, "CONNECT needs host:port\n").await;
        };
        if !allow.allows(&host, port) {
            log_line(log, &format!("{peer} deny CONNECT {host}:{port}"));
            return deny(&mut client, &host, port).await;
        }
        let mut upstream = match connect(&host, port).await {
            Ok(s) => s,
            Err(e) => {
                log_line(log, &format!("{peer} fail CONNECT {host}:{port}: {e}"));
                return respond(
                    &mut client,
                    502,
                    &format!("cannot reach {host}:{port}: {e}\n"),
                )
                .await;
            }
        };
        log_line(log, &format!("{peer} allow CONNECT {host}:{port}"));
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        if !rest.is_empty() {
            upstream.write_all(&rest).await?;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return Ok(());
    }

    let Some(after_scheme) = target.strip_prefix("http://") else {
        return respond(
            &mut client,
            400,
            "this proxy takes CONNECT host:port (https) or absolute http:// URIs\n",
        )
        .await;
    };
    let (authority, path) = match after_scheme.find('/') {
        Some(i) => (&after_scheme[..i], &after_scheme[i..]),
        None => (after_scheme, "/"),
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let Some((host, port)) = split_host_port(authority, 80) else {
        return respond(&mut client, 400, "bad host in URI\n").await;
    };
    if !allow.allows(&host, port) {
        log_line(log, &format!("{peer} deny {method} {host}:{port}"));
        return deny(&mut client, &host, port).await;
    }
    let mut upstream = match connect(&host, port).await {
        Ok(s) => s,
        Err(e) => {
            log_line(log, &format!("{peer} fail {method} {host}:{port}: {e}"));
            return respond(
                &mut client,
                502,
                &format!("cannot reach {host}:{port}: {e}\n"),
            )
            .await;
        }
    };
    log_line(
        log,
        &format!("{peer} allow {method} http://{host}:{port}{path}"),
    );
    // one request per connection: keeps relaying a plain byte copy
    let mut out = format!("{method} {path} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "proxy-connection" | "proxy-authorization" | "connection" | "keep-alive"
        ) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).await?;
    if !rest.is_empty() {
        upstream.write_all(&rest).await?;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}

async fn connect(host: &str, port: u16) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Reads until the end of the request head; returns its length (with the blank line).
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(i + 4));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn respond(client: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    let reason = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "Bad Gateway",
    };
    let msg = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(msg.as_bytes()).await?;
    client.shutdown().await
}

async fn deny(client: &mut TcpStream, host: &str, port: u16) -> std::io::Result<()> {
    respond(
        client,
        403,
        &format!(
            "provision-sandbox: {host}:{port} is not on the egress allowlist (only the machine's package registries and the stack's download hosts are)\n"
        ),
    )
    .await
}

/// A proxy running on a thread of this process.
pub struct InProcessProxy {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessProxy {
    pub fn start(
        listener: std::net::TcpListener,
        allow: Allowlist,
        log: Option<PathBuf>,
    ) -> Result<InProcessProxy> {
        let addr = listener
            .local_addr()
            .ctx(|| "proxy listener has no address".into())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ctx(|| "cannot start the proxy's runtime".into())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("sandbox-proxy-{addr}"))
            .spawn(move || {
                let result =
                    runtime.block_on(serve(listener, AllowSource::Fixed(allow), log, async {
                        let _ = stopped.await;
                    }));
                if let Err(e) = result {
                    let _ = writeln!(std::io::stderr(), "provision-sandbox proxy on {addr}: {e}");
                }
            })
            .ctx(|| "cannot start the proxy thread".into())?;
        Ok(InProcessProxy {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for InProcessProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// In-process proxies by sandbox state directory.
static IN_PROCESS: Mutex<BTreeMap<PathBuf, InProcessProxy>> = Mutex::new(BTreeMap::new());

pub(crate) fn register_in_process(state_dir: PathBuf, proxy: InProcessProxy) {
    let mut map = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    map.insert(state_dir, proxy);
}

pub(crate) fn stop_in_process(state_dir: &Path) {
    let proxy = {
        let mut map = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(state_dir)
    };
    drop(proxy);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;

    fn exchange(proxy: SocketAddr, request: &str) -> String {
        let mut s = StdStream::connect(proxy).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// A one-shot upstream on loopback that answers any request with `body`.
    fn upstream(body: &'static str) -> (u16, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).unwrap();
            req
        });
        (port, t)
    }

    fn proxy_for(port: u16) -> InProcessProxy {
        let allow = Allowlist {
            hosts: ["127.0.0.1".to_string()].into(),
            ports: [port].into(),
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        InProcessProxy::start(l, allow, None).unwrap()
    }

    #[test]
    fn relays_absolute_uri_requests_to_allowed_hosts() {
        let (port, up) = upstream("hello");
        let proxy = proxy_for(port);
        let resp = exchange(
            proxy.addr(),
            &format!(
                "GET http://127.0.0.1:{port}/dists/x HTTP/1.1\r\nHost: 127.0.0.1\r\nProxy-Connection: keep-alive\r\n\r\n"
            ),
        );
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert!(resp.ends_with("hello"));
        let req = up.join().unwrap();
        assert!(req.starts_with("GET /dists/x HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Connection: close") && !req.contains("Proxy-Connection"));
    }

    #[test]
    fn tunnels_connect_to_allowed_hosts() {
        let (port, up) = upstream("tunnel");
        let proxy = proxy_for(port);
        let mut s = StdStream::connect(proxy.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let mut head = [0u8; 39];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head[..], b"HTTP/1.1 200 Connection established\r\n\r\n");
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.ends_with("tunnel"));
        assert!(up.join().unwrap().starts_with("GET / "));
    }

    #[test]
    fn refuses_hosts_and_ports_not_on_the_allowlist() {
        let proxy = proxy_for(9);
        let resp = exchange(proxy.addr(), "CONNECT example.invalid:443 HTTP/1.1\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        assert!(resp.contains("not on the egress allowlist"));
        let resp = exchange(proxy.addr(), "CONNECT 127.0.0.1:10 HTTP/1.1\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        let resp = exchange(proxy.addr(), "GET http://example.invalid/ HTTP/1.1\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        let resp = exchange(proxy.addr(), "GET / HTTP/1.1\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    }
}
