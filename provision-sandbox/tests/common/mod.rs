//! Helpers shared by the sandbox's integration tests.
#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Output;
use std::time::{Duration, Instant};

use provision_sandbox::Host;

/// What a connection attempt from the machine to a port sees.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// Connected and the server spoke first (an SSH banner).
    Banner(String),
    /// TCP connected but nothing came within the timeout.
    Silent,
    /// Connection refused (RST): nothing listens.
    Refused,
    /// No answer at all: the SYN (or ARP) went unanswered.
    NoAnswer,
    Other(String),
}

pub fn probe(addr: SocketAddr, timeout: Duration) -> Probe {
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            return match e.kind() {
                std::io::ErrorKind::ConnectionRefused => Probe::Refused,
                // an unanswered ARP ends as "no route to host" after about 3 s
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::HostUnreachable => {
                    Probe::NoAnswer
                }
                _ => Probe::Other(e.to_string()),
            };
        }
    };
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 128];
    match stream.read(&mut buf) {
        Ok(n) if n > 0 => Probe::Banner(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
        Ok(_) => Probe::Other("closed without a word".into()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Probe::Silent
        }
        Err(e) => Probe::Other(e.to_string()),
    }
}

pub fn ssh_probe(host: &Host) -> Probe {
    probe(host.ssh_addr(), Duration::from_secs(2))
}

/// Polls until `f` holds or panics after `secs` seconds.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {secs} s waiting for: {what}");
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a script in a host (nsenter) and returns its stdout; panics on failure.
pub fn sh_ok(host: &Host, script: &str) -> String {
    let out = host.sh(script).unwrap();
    assert!(
        out.status.success(),
        "`{script}` on {}: {}",
        host.name(),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
