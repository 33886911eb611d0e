//! A Solr distribution archive for tests, assembled from Maven artifacts (the official release
//! archive cannot be downloaded here): `testdata/solr-dist/build.sh` puts solr-core,
//! solr-test-framework and their runtime dependencies, a small launcher (JettySolrRunner with
//! the official start script's settings) and a `bin/solr` that runs it in the foreground into
//! a `.tgz` shaped like the official one. The provisioner installs it like any archive: URL
//! and sha512. Built once into [`CACHE_DIR`] (outside the repository), reused across runs.
//!
//! Shared by provision-solr's tests and provision's (`#[path]`, in tests/common).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sha2::{Digest as _, Sha512};

/// Where built archives are kept, one directory per recipe.
pub const CACHE_DIR: &str = "/var/cache/provision-tests/solr";
/// The Solr version on Maven Central the archive is made of (the layer's default version).
pub const VERSION: &str = provision_solr::DEFAULT_VERSION;

const SOURCE_FILES: &[&str] = &[
    "build.sh",
    "pom.xml",
    "ProvisionTestSolr.java",
    "solr",
    "log4j2.xml",
];

/// A built archive.
#[derive(Debug, Clone)]
pub struct Distribution {
    pub archive: PathBuf,
    pub sha512: String,
    pub version: String,
}

impl Distribution {
    /// The archive's file name, e.g. `solr-9.10.1.tgz`.
    pub fn file_name(&self) -> String {
        self.archive
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../provision-solr/testdata/solr-dist")
        .canonicalize()
        .expect("provision-solr/testdata/solr-dist exists")
}

fn missing_program(programs: &[&str]) -> Option<String> {
    programs
        .iter()
        .find(|p| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|p| p.to_string())
}

/// Build the archive, or reuse the one built from the same recipe. `Err` says why it cannot
/// be built here (a missing program, Maven that cannot reach its repository): the caller
/// skips or, under `PROVISION_SANDBOX=required`, fails.
pub fn build() -> Result<Distribution, String> {
    if let Some(program) = missing_program(&["mvn", "javac", "java", "tar", "flock", "sha512sum"]) {
        return Err(format!(
            "{program} is not installed (the test Solr is built with Maven and a JDK: apt-get install maven default-jdk-headless)"
        ));
    }
    let source = source_dir();
    let mut recipe = Sha512::new();
    recipe.update(VERSION.as_bytes());
    for file in SOURCE_FILES {
        let content = std::fs::read(source.join(file)).expect("test distribution source");
        recipe.update((*file).as_bytes());
        recipe.update(&content);
    }
    let key = &hex::encode(recipe.finalize())[..16];
    let out = Path::new(CACHE_DIR).join(format!("{VERSION}-{key}"));
    std::fs::create_dir_all(CACHE_DIR).map_err(|e| format!("cannot create {CACHE_DIR}: {e}"))?;
    let started = Instant::now();
    let output = Command::new("flock")
        .arg(Path::new(CACHE_DIR).join(".lock"))
        .arg("sh")
        .arg(source.join("build.sh"))
        .arg(&out)
        .arg(VERSION)
        .arg(&source)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the build: {e}"))?;
    if !output.status.success() {
        let mut log = String::from_utf8_lossy(&output.stdout).into_owned();
        log.push_str(&String::from_utf8_lossy(&output.stderr));
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        return Err(format!(
            "the test Solr distribution could not be built from Maven artifacts ({}): {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let archive = out.join(format!("solr-{VERSION}.tgz"));
    let sha512 = std::fs::read_to_string(archive.with_extension("tgz.sha512"))
        .map_err(|e| format!("{}: {e}", archive.display()))?
        .trim()
        .to_string();
    eprintln!(
        "test Solr distribution {} ready in {:.1} s",
        archive.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(Distribution {
        archive,
        sha512,
        version: VERSION.to_string(),
    })
}

/// Serves one file over HTTP/1.0 at `/NAME` on `address` (port 0 takes a free one) from a
/// background thread, until dropped. Anything else is 404.
pub struct FileServer {
    pub address: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileServer {
    pub fn start(address: std::net::IpAddr, file: &Path) -> FileServer {
        use std::io::{Read as _, Write as _};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind((address, 0))
            .unwrap_or_else(|e| panic!("cannot listen on {address}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let bound = listener.local_addr().unwrap();
        let name = format!("/{}", file.file_name().unwrap().to_string_lossy());
        let file = file.to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let mut stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    }
                    Err(_) => continue,
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request);
                let path = request.split(' ').nth(1).unwrap_or("");
                // Streamed: an egg cache is hundreds of MiB.
                if path == name
                    && let Ok(mut body) = std::fs::File::open(&file)
                {
                    let length = body.metadata().map(|m| m.len()).unwrap_or(0);
                    let _ = write!(
                        stream,
                        "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n",
                    );
                    let _ = std::io::copy(&mut body, &mut stream);
                } else {
                    let _ =
                        stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                }
            }
        });
        FileServer {
            address: bound,
            stop,
            thread: Some(thread),
        }
    }

    /// The URL of the served file.
    pub fn url(&self, distribution: &Distribution) -> String {
        format!("http://{}/{}", self.address, distribution.file_name())
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One HTTP/1.0 request; (status, body). A connection that fails is status 0.
pub fn http(address: &str, method: &str, path: &str, body: Option<(&str, &str)>) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(
        &address.parse().expect("address:port"),
        std::time::Duration::from_secs(5),
    ) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let (content_type, content) = body.unwrap_or(("text/plain", ""));
    let _ = write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{content}",
        content.len()
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A document in collective.solr's update format (XML, as it posts to /update).
pub fn document_xml(uid: &str, title: &str, text: &str) -> String {
    format!(
        "<add><doc><field name=\"UID\">{uid}</field><field name=\"id\">{uid}</field>\
         <field name=\"Title\">{title}</field><field name=\"SearchableText\">{title} {text}</field>\
         <field name=\"portal_type\">Document</field><field name=\"review_state\">published</field>\
         <field name=\"allowedRolesAndUsers\">Anonymous</field><field name=\"path_depth\">2</field>\
         <field name=\"created\">2024-05-01T10:00:00.000Z</field><field name=\"is_folderish\">false</field>\
         </doc></add>"
    )
}

/// [`build`] for a test: `None` after one `SKIPPED` line when the archive cannot be built
/// here; under `PROVISION_SANDBOX=required` (CI) that is a failure instead.
pub fn build_or_skip() -> Option<Distribution> {
    match build() {
        Ok(distribution) => Some(distribution),
        Err(reason) => {
            assert!(
                std::env::var("PROVISION_SANDBOX").as_deref() != Ok("required"),
                "PROVISION_SANDBOX=required and {reason}"
            );
            eprintln!("SKIPPED: {reason}");
            None
        }
    }
}
