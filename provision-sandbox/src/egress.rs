//! What the hosts may reach: the package registries the machine itself uses,
//! read at run time from its apt sources and pip configuration (no registry
//! name is written in this repository), and the files that configure apt and
//! pip inside each host to go through the proxy on the bridge.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};

/// Host names (lowercase) the proxy relays to, and the ports it allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowlist {
    pub hosts: BTreeSet<String>,
    pub ports: BTreeSet<u16>,
}

impl Allowlist {
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host) && self.ports.contains(&port)
    }

    fn add_url(&mut self, url: &str) -> bool {
        match parse_url(url) {
            Some(u) if u.scheme == "http" || u.scheme == "https" => {
                self.hosts.insert(u.host.to_ascii_lowercase());
                self.ports.insert(u.port);
                true
            }
            _ => false,
        }
    }
}

/// The parts of a URL the allowlist needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

pub fn parse_url(url: &str) -> Option<Url> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default_port = match scheme.as_str() {
        "https" => 443,
        _ => 80,
    };
    let (host, port) = split_host_port(hostport, default_port)?;
    Some(Url { scheme, host, port })
}

/// Splits `host[:port]` or `[v6][:port]`.
pub fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host.to_string(), port.parse().ok()?)),
        Some(_) => None,
        None if !s.is_empty() => Some((s.to_string(), default_port)),
        None => None,
    }
}

/// One apt source entry (one-line or deb822 format).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AptSource {
    pub file: PathBuf,
    pub types: Vec<String>,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// A keyring file (inline keys are left out).
    pub signed_by: Option<PathBuf>,
}

/// Parses a one-line `sources.list` file.
pub fn parse_sources_list(file: &Path, text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (kind, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let mut rest = rest.trim();
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else {
                continue;
            };
            for opt in opts.split_whitespace() {
                if let Some(v) = opt.strip_prefix("signed-by=") {
                    signed_by = v.split(',').next().map(PathBuf::from);
                }
            }
            rest = after.trim();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource {
            file: file.to_path_buf(),
            types: vec![kind.to_string()],
            uris: vec![uri.to_string()],
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
            signed_by,
        });
    }
    out
}

/// Parses a deb822 `.sources` file.
pub fn parse_deb822(file: &Path, text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut flush = |fields: &mut Vec<(String, String)>| {
        if fields.is_empty() {
            return;
        }
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        };
        let words = |key: &str| -> Vec<String> {
            get(key)
                .map(|v| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let enabled = get("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        if enabled {
            let signed_by = get("Signed-By")
                .map(str::trim)
                .filter(|v| !v.contains('\n') && !v.starts_with("-----"))
                .and_then(|v| v.split_whitespace().next())
                .map(PathBuf::from);
            out.push(AptSource {
                file: file.to_path_buf(),
                types: words("Types"),
                uris: words("URIs"),
                suites: words("Suites"),
                components: words("Components"),
                signed_by,
            });
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut fields);
        } else if line.starts_with('#') {
            continue;
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    flush(&mut fields);
    out
}

/// The machine's apt sources and the files that hold them.
pub fn machine_apt_sources() -> (Vec<AptSource>, Vec<PathBuf>) {
    let mut sources = Vec::new();
    let mut files = Vec::new();
    let list = Path::new("/etc/apt/sources.list");
    if let Ok(text) = std::fs::read_to_string(list) {
        sources.extend(parse_sources_list(list, &text));
        files.push(list.to_path_buf());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for path in entries {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("list") => sources.extend(parse_sources_list(&path, &text)),
            Some("sources") => sources.extend(parse_deb822(&path, &text)),
            _ => continue,
        }
        files.push(path);
    }
    (sources, files)
}

/// The mirror debootstrap uses: the machine's first http(s) `deb` source for
/// `suite`, with its keyring when it names one.
pub fn debian_mirror(suite: &str) -> Option<(String, Option<PathBuf>)> {
    let (sources, _) = machine_apt_sources();
    let http = |u: &&String| u.starts_with("http://") || u.starts_with("https://");
    sources
        .iter()
        .filter(|s| s.types.iter().any(|t| t == "deb"))
        .find_map(|s| {
            s.suites
                .iter()
                .any(|x| x == suite)
                .then(|| s.uris.iter().find(http))
                .flatten()
                .map(|u| (u.clone(), s.signed_by.clone().filter(|p| p.is_file())))
        })
}

/// pip settings that matter inside a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipSettings {
    pub index_url: Option<String>,
    pub extra_index_urls: Vec<String>,
    pub trusted_hosts: Vec<String>,
    pub cert: Option<PathBuf>,
}

/// Parses `pip config list` output (`section.key='value'`), later lines win
/// (pip prints environment values last), `install.` over `global.`.
pub fn parse_pip_config_list(text: &str) -> PipSettings {
    let mut values: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value
            .trim()
            .trim_matches('\'')
            .trim_matches('"')
            .to_string();
        let Some((section, name)) = key.trim().rsplit_once('.') else {
            continue;
        };
        if matches!(section, "global" | "install" | ":env:" | "download") {
            values.push((name.to_string(), value));
        }
    }
    let last = |name: &str| {
        values
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let words = |name: &str| -> Vec<String> {
        last(name)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    PipSettings {
        index_url: last("index-url"),
        extra_index_urls: words("extra-index-url"),
        trusted_hosts: words("trusted-host"),
        cert: last("cert").map(PathBuf::from),
    }
}

fn try_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The machine's pip configuration, asked from pip itself.
fn machine_pip() -> Option<PipSettings> {
    [
        ("pip3", &["config", "list"][..]),
        ("pip", &["config", "list"][..]),
        ("python3", &["-m", "pip", "config", "list"][..]),
    ]
    .iter()
    .find_map(|(program, args)| try_output(program, args))
    .map(|text| parse_pip_config_list(&text))
}

/// pip's built-in index and file host, when no index is configured.
fn pip_default_index() -> Option<(String, String)> {
    let text = try_output(
        "python3",
        &[
            "-c",
            "from pip._internal.models.index import PyPI; print(PyPI.simple_url); print(PyPI.file_storage_domain)",
        ],
    )?;
    let mut lines = text.lines();
    Some((
        lines.next()?.trim().to_string(),
        lines.next()?.trim().to_string(),
    ))
}

/// Settings from `apt-config dump` that hosts need to read the same mirrors.
fn machine_apt_options() -> Vec<(String, String)> {
    const KEYS: &[&str] = &["Acquire::Check-Valid-Until", "Acquire::Check-Date"];
    let Some(dump) = try_output("apt-config", &["dump"]) else {
        return Vec::new();
    };
    dump.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            KEYS.contains(&k).then(|| {
                (
                    k.to_string(),
                    v.trim_end_matches(';').trim_matches('"').to_string(),
                )
            })
        })
        .collect()
}

/// Everything hosts need to reach the machine's package registries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Egress {
    pub allow: Allowlist,
    /// apt source files copied into hosts (same paths).
    pub apt_files: Vec<PathBuf>,
    /// Keyrings copied into hosts (same paths).
    pub apt_keyrings: Vec<PathBuf>,
    pub apt_options: Vec<(String, String)>,
    pub pip: PipSettings,
    /// CA files copied into hosts (same paths): the file pip's `cert` names and
    /// the machine's local CAs, so TLS inside a host trusts what the machine trusts.
    pub ca_files: Vec<PathBuf>,
    /// What could not be carried over, for the user.
    pub notes: Vec<String>,
}

impl Egress {
    /// Reads the machine's configuration.
    pub fn from_machine() -> Egress {
        let mut e = Egress::default();
        let (sources, files) = machine_apt_sources();
        e.apt_files = files;
        for source in &sources {
            for uri in &source.uris {
                if !e.allow.add_url(uri) {
                    e.notes.push(format!(
                        "apt source {uri} ({}) is not http(s): hosts cannot reach it",
                        source.file.display()
                    ));
                }
            }
            if let Some(keyring) = &source.signed_by
                && keyring.is_file()
                && !e.apt_keyrings.contains(keyring)
            {
                e.apt_keyrings.push(keyring.clone());
            }
        }
        for dir in ["/etc/apt/trusted.gpg.d", "/etc/apt/keyrings"] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                let mut paths: Vec<PathBuf> = entries.flatten().map(|x| x.path()).collect();
                paths.sort();
                e.apt_keyrings
                    .extend(paths.into_iter().filter(|p| p.is_file()));
            }
        }
        if Path::new("/etc/apt/trusted.gpg").is_file() {
            e.apt_keyrings.push("/etc/apt/trusted.gpg".into());
        }
        e.apt_options = machine_apt_options();

        match machine_pip() {
            Some(pip) => e.pip = pip,
            None => e.notes.push(
                "pip is not installed on the machine: its configuration is unknown, pip in the hosts uses pip's defaults".into(),
            ),
        }
        let mut index_urls: Vec<String> = e.pip.index_url.iter().cloned().collect();
        index_urls.extend(e.pip.extra_index_urls.iter().cloned());
        let default = pip_default_index();
        if e.pip.index_url.is_none() {
            match &default {
                Some((url, _)) => index_urls.push(url.clone()),
                None => e.notes.push(
                    "pip's default index could not be read from the machine's pip: hosts get no Python package index".into(),
                ),
            }
        }
        for url in &index_urls {
            if e.allow.add_url(url) {
                // the default index serves its files from a second host
                if let Some((default_url, files_host)) = &default
                    && parse_url(default_url).map(|u| u.host) == parse_url(url).map(|u| u.host)
                {
                    e.allow.hosts.insert(files_host.to_ascii_lowercase());
                    e.allow.ports.insert(443);
                }
            } else if !url.trim().is_empty() {
                e.notes.push(format!(
                    "pip index {url} is not http(s): hosts cannot reach it"
                ));
            }
        }
        if let Some(cert) = &e.pip.cert {
            if cert.is_file() {
                e.ca_files.push(cert.clone());
            } else {
                e.notes.push(format!(
                    "pip's cert {} does not exist on the machine",
                    cert.display()
                ));
                e.pip.cert = None;
            }
        }
        let local_cas = Path::new("/usr/local/share/ca-certificates");
        collect_files(local_cas, &mut e.ca_files);
        e
    }

    /// Lets the hosts reach the hosts of `urls` too (the stack's downloads: Solr's archive,
    /// app repositories, ...). Returns whether the allowlist grew; a URL that is not http(s)
    /// is noted.
    pub fn allow_urls(&mut self, urls: &[String]) -> bool {
        let before = self.allow.clone();
        for url in urls {
            if !self.allow.add_url(url) {
                self.notes
                    .push(format!("{url} is not http(s): hosts cannot reach it"));
            }
        }
        self.allow != before
    }

    /// Writes apt, pip and proxy settings into a host's root. Run on every
    /// start: the proxy's port may differ between runs of `up`.
    pub fn write_host_config(&self, root: &Path, proxy: SocketAddr, no_proxy: &str) -> Result<()> {
        let proxy_url = format!("http://{proxy}/");
        let mut apt = String::from(
            "// written by provision-sandbox: egress goes through its proxy on the bridge\n",
        );
        apt.push_str(&format!("Acquire::http::Proxy \"{proxy_url}\";\n"));
        apt.push_str(&format!("Acquire::https::Proxy \"{proxy_url}\";\n"));
        for (key, value) in &self.apt_options {
            apt.push_str(&format!("{key} \"{value}\";\n"));
        }
        write_in_root(
            root,
            Path::new("/etc/apt/apt.conf.d/00provision-sandbox"),
            apt.as_bytes(),
        )?;

        for file in self
            .apt_files
            .iter()
            .chain(&self.apt_keyrings)
            .chain(&self.ca_files)
        {
            let content = std::fs::read(file).ctx(|| format!("cannot read {}", file.display()))?;
            write_in_root(root, file, &content)?;
        }

        let mut pip = String::from(
            "# written by provision-sandbox from the machine's pip configuration\n[global]\n",
        );
        pip.push_str(&format!("proxy = http://{proxy}\n"));
        if let Some(url) = &self.pip.index_url {
            pip.push_str(&format!("index-url = {url}\n"));
        }
        if !self.pip.extra_index_urls.is_empty() {
            pip.push_str(&format!(
                "extra-index-url = {}\n",
                self.pip.extra_index_urls.join("\n    ")
            ));
        }
        if !self.pip.trusted_hosts.is_empty() {
            pip.push_str(&format!(
                "trusted-host = {}\n",
                self.pip.trusted_hosts.join("\n    ")
            ));
        }
        if let Some(cert) = &self.pip.cert {
            pip.push_str(&format!("cert = {}\n", cert.display()));
        }
        write_in_root(root, Path::new("/etc/pip.conf"), pip.as_bytes())?;

        // login shells (ssh sessions) also get the proxy for curl, buildout, git...
        let env = format!(
            "http_proxy={proxy_url}\nhttps_proxy={proxy_url}\nHTTP_PROXY={proxy_url}\nHTTPS_PROXY={proxy_url}\nno_proxy={no_proxy}\nNO_PROXY={no_proxy}\n"
        );
        write_in_root(root, Path::new("/etc/environment"), env.as_bytes())?;
        Ok(())
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect_files(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
    }
}

/// Writes `content` at the absolute path `inside` of a host's root, replacing a
/// symlink rather than following it out of the root.
pub(crate) fn write_in_root(root: &Path, inside: &Path, content: &[u8]) -> Result<()> {
    let rel = inside.strip_prefix("/").unwrap_or(inside);
    let target = root.join(rel);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).ctx(|| format!("cannot create {}", parent.display()))?;
    }
    if target.is_symlink() {
        std::fs::remove_file(&target).ctx(|| format!("cannot replace {}", target.display()))?;
    }
    std::fs::write(&target, content).ctx(|| format!("cannot write {}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://user:pw@mirror.test:8443/simple/"),
            Some(Url {
                scheme: "https".into(),
                host: "mirror.test".into(),
                port: 8443
            })
        );
        assert_eq!(parse_url("http://mirror.test/debian").unwrap().port, 80);
        assert_eq!(parse_url("http://[fd00::1]/x").unwrap().host, "fd00::1");
        assert!(parse_url("cdrom:/x").is_none());
        assert_eq!(
            split_host_port("a.test:443", 80),
            Some(("a.test".into(), 443))
        );
        assert_eq!(split_host_port("a.test", 80), Some(("a.test".into(), 80)));
        assert_eq!(split_host_port("[::1]:8", 80), Some(("::1".into(), 8)));
        assert_eq!(split_host_port("a.test:x", 80), None);
    }

    #[test]
    fn apt_sources_both_formats() {
        let one = parse_sources_list(
            Path::new("/l"),
            "# c\ndeb [arch=amd64 signed-by=/k.gpg] http://m.test/debian bookworm main contrib\ndeb-src http://m.test/debian bookworm main\n",
        );
        assert_eq!(one.len(), 2);
        assert_eq!(one[0].signed_by.as_deref(), Some(Path::new("/k.gpg")));
        assert_eq!(one[0].components, ["main", "contrib"]);
        let deb822 = parse_deb822(
            Path::new("/s"),
            "Types: deb\n# comment\nURIs: http://m.test/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /k.gpg\n\nTypes: deb\nURIs: http://s.test/x\nSuites: s\nEnabled: no\n\nTypes: deb\nURIs: https://i.test/y\nSuites: s\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n",
        );
        assert_eq!(deb822.len(), 2);
        assert_eq!(deb822[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(deb822[0].signed_by.as_deref(), Some(Path::new("/k.gpg")));
        assert_eq!(deb822[1].signed_by, None);
    }

    #[test]
    fn pip_config_list() {
        let pip = parse_pip_config_list(
            "global.index-url='https://idx.test/simple'\nglobal.cert='/etc/ca.pem'\n:env:.index-url='https://env.test/simple'\n:env:.extra-index-url='https://a.test/ https://b.test/'\n:env:.find-links='/opt/wheels'\n",
        );
        assert_eq!(pip.index_url.as_deref(), Some("https://env.test/simple"));
        assert_eq!(pip.extra_index_urls.len(), 2);
        assert_eq!(pip.cert.as_deref(), Some(Path::new("/etc/ca.pem")));
    }

    #[test]
    fn allowlist() {
        let mut a = Allowlist::default();
        assert!(a.add_url("https://Idx.test/simple"));
        assert!(a.allows("idx.test", 443));
        assert!(a.allows("IDX.test.", 443));
        assert!(!a.allows("idx.test", 22));
        assert!(!a.allows("other.test", 443));
        assert!(!a.add_url("file:///x"));
    }
}
