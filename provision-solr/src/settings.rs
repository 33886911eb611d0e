//! The settings of a Solr host: where the distribution comes from, where it goes, how it runs
//! and who may talk to it.

use std::net::IpAddr;

use provision_core::facts::Facts;
use provision_core::stack::PloneSolr;
use serde::Serialize;

use crate::error::{SolrError, invalid};

/// The Solr release installed by default: the one collective.solr's own buildouts use
/// (`plone_solr.version`).
pub const DEFAULT_VERSION: &str = PloneSolr::DEFAULT_VERSION;
/// The sha512 of `solr-9.10.1.tgz` as Apache publishes it.
pub const DEFAULT_SHA512: &str = PloneSolr::DEFAULT_SHA512;
/// Solr's port.
pub const DEFAULT_PORT: u16 = PloneSolr::DEFAULT_PORT;
/// How the official distribution runs in the foreground (relative to its directory).
pub const DEFAULT_START_COMMAND: &str = "bin/solr start -f";
/// The suffix of the core a reindex builds beside the live one.
pub const REBUILD_SUFFIX: &str = PloneSolr::REBUILD_SUFFIX;
/// The heap never goes below this (MiB): Solr's own default.
pub const MIN_HEAP_MB: u64 = 512;
/// Nor above this (MiB): the rest of a big host serves Solr better as page cache for the index.
pub const MAX_HEAP_MB: u64 = 8192;
/// The open-file limit Solr asks for (bin/solr warns below it).
pub const RECOMMENDED_OPEN_FILES: u64 = 65_000;

/// A Solr distribution archive (`.tgz` with one top directory, like `solr-9.10.1.tgz`): it is
/// downloaded on the host and unpacked only when its sha512 is this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SolrArchive {
    /// Names the install directory (`/opt/solr-<version>`).
    pub version: String,
    /// `http://` or `https://`.
    pub url: String,
    /// Hex, 128 digits.
    pub sha512: String,
}

impl SolrArchive {
    /// The official release archive of `version` from Apache's permanent archive.
    pub fn official(version: &str, sha512: &str) -> SolrArchive {
        SolrArchive {
            version: version.to_string(),
            url: format!("https://archive.apache.org/dist/solr/solr/{version}/solr-{version}.tgz"),
            sha512: sha512.to_ascii_lowercase(),
        }
    }
}

impl Default for SolrArchive {
    fn default() -> SolrArchive {
        SolrArchive::official(DEFAULT_VERSION, DEFAULT_SHA512)
    }
}

/// Everything the `solr` layer needs to know about one Solr host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SolrSettings {
    /// The host's private address: Solr listens only there (`SOLR_JETTY_HOST`).
    pub bind_address: IpAddr,
    /// Default 8983.
    pub port: u16,
    /// Clients allowed to send requests (`SOLR_IP_ALLOWLIST`), addresses or CIDR networks:
    /// the stack's hosts that use Solr. The host itself is always allowed.
    pub allowed_clients: Vec<String>,
    /// The distribution. Default the official 9.10.1 archive.
    pub archive: SolrArchive,
    /// How the distribution starts in the foreground, relative to its directory (or absolute).
    /// Default `bin/solr start -f`; it reads its settings from the environment file.
    pub start_command: String,
    /// Where versions are unpacked (`<root>/solr-<version>`) and the link to the running one
    /// lives (`<root>/solr`). Default `/opt`.
    pub install_root: String,
    /// `plone_solr.data_dir`: the Solr home (`SOLR_HOME`) with `solr.xml`, the configsets and
    /// the cores and their indexes. Default `/var/lib/solr`.
    pub data_dir: String,
    /// Default `/var/log/solr`.
    pub log_dir: String,
    /// The environment of Solr (`SOLR_INCLUDE`). Default `/etc/default/solr.in.sh`.
    pub env_file: String,
    /// Solr's user and group. Default `solr`.
    pub user: String,
    pub group: String,
    /// The JVM heap in MiB (`SOLR_HEAP`). Default from the host's memory: [`heap_megabytes`].
    pub heap_mb: u64,
    /// `LimitNOFILE` of the unit: 65000, or the host's hard limit when lower.
    pub open_files: u64,
    /// The cores to create, each from the configset. Default `["plone"]`.
    pub cores: Vec<String>,
    /// The configset's name under `<data_dir>/configsets`. Default `plone`.
    pub configset: String,
    /// The Java runtime package. Default `default-jre-headless` (OpenJDK 17 on Debian 12).
    pub java_package: String,
    /// Default 1024 (Solr's).
    pub max_boolean_clauses: u32,
    /// More `KEY=value` lines for the environment file (e.g. `SOLR_OPTS`, `GC_TUNE`).
    pub extra_environment: Vec<(String, String)>,
}

/// The heap for a host with `memory_bytes` of memory: a quarter of it, at least
/// [`MIN_HEAP_MB`] and at most [`MAX_HEAP_MB`], in MiB.
pub fn heap_megabytes(memory_bytes: u64) -> u64 {
    (memory_bytes / 4 / (1024 * 1024)).clamp(MIN_HEAP_MB, MAX_HEAP_MB)
}

impl SolrSettings {
    /// The defaults for a host listening on `bind_address` with `memory_bytes` of memory.
    pub fn new(bind_address: IpAddr, memory_bytes: u64) -> SolrSettings {
        SolrSettings {
            bind_address,
            port: DEFAULT_PORT,
            allowed_clients: Vec::new(),
            archive: SolrArchive::default(),
            start_command: DEFAULT_START_COMMAND.to_string(),
            install_root: "/opt".to_string(),
            data_dir: "/var/lib/solr".to_string(),
            log_dir: "/var/log/solr".to_string(),
            env_file: "/etc/default/solr.in.sh".to_string(),
            user: "solr".to_string(),
            group: "solr".to_string(),
            heap_mb: heap_megabytes(memory_bytes),
            open_files: RECOMMENDED_OPEN_FILES,
            cores: vec!["plone".to_string()],
            configset: "plone".to_string(),
            java_package: "default-jre-headless".to_string(),
            max_boolean_clauses: 1024,
            extra_environment: Vec::new(),
        }
    }

    /// The defaults for a host as its facts describe it: heap from its memory, the open-file
    /// limit within its hard limit.
    pub fn for_host(bind_address: IpAddr, facts: &Facts) -> SolrSettings {
        let mut settings = SolrSettings::new(bind_address, facts.memory_bytes);
        if let Some(limit) = facts.open_files_limit {
            settings.open_files = settings.open_files.min(limit);
        }
        settings
    }

    /// `/opt/solr-<version>`.
    pub fn install_dir(&self) -> String {
        format!("{}/solr-{}", self.install_root, self.archive.version)
    }

    /// The link to the running version, `/opt/solr`.
    pub fn current_link(&self) -> String {
        format!("{}/solr", self.install_root)
    }

    pub fn configsets_dir(&self) -> String {
        format!("{}/configsets", self.data_dir)
    }

    /// The `conf` directory of the configset.
    pub fn configset_conf_dir(&self) -> String {
        format!("{}/{}/conf", self.configsets_dir(), self.configset)
    }

    /// `http://ADDRESS:PORT/solr`, as the host itself and the stack reach it.
    pub fn base_url(&self) -> String {
        format!("http://{}:{}/solr", url_host(self.bind_address), self.port)
    }

    /// The core a reindex of `core` builds.
    pub fn rebuild_core(core: &str) -> String {
        format!("{core}{REBUILD_SUFFIX}")
    }

    /// `ExecStart`: the start command with its program made absolute under the current link.
    pub fn exec_start(&self) -> String {
        if self.start_command.starts_with('/') {
            self.start_command.clone()
        } else {
            format!("{}/{}", self.current_link(), self.start_command)
        }
    }

    /// The program of a relative start command, checked in a new archive before it goes live.
    pub(crate) fn start_program(&self) -> Option<&str> {
        let program = self.start_command.split_whitespace().next()?;
        (!program.starts_with('/')).then_some(program)
    }

    /// `SOLR_IP_ALLOWLIST`: the host itself, then the allowed clients, without repeats.
    pub fn allowlist(&self) -> String {
        let mut entries: Vec<String> = Vec::new();
        let own = self.bind_address.to_string();
        for entry in
            std::iter::once(own.as_str()).chain(self.allowed_clients.iter().map(String::as_str))
        {
            let rendered = allowlist_entry(entry);
            if !entries.contains(&rendered) {
                entries.push(rendered);
            }
        }
        entries.join(", ")
    }

    /// Refuse settings that cannot work, naming the setting.
    pub fn check(&self) -> Result<(), SolrError> {
        if self.bind_address.is_unspecified() {
            return Err(invalid(
                "bind_address",
                format!(
                    "{} would listen on every network of the host; use its private address",
                    self.bind_address
                ),
            ));
        }
        if self.port == 0 {
            return Err(invalid("port", "0 is not a port"));
        }
        for client in &self.allowed_clients {
            if parse_network(client).is_none() {
                return Err(invalid(
                    "allowed_clients",
                    format!("{client:?} is not an IP address or a network like 10.0.0.0/24"),
                ));
            }
        }
        let archive = &self.archive;
        if archive.version.is_empty()
            || !archive
                .version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(invalid(
                "archive.version",
                format!(
                    "{:?} must be letters, digits, dots, dashes or underscores",
                    archive.version
                ),
            ));
        }
        let url_ok = (archive.url.starts_with("http://") || archive.url.starts_with("https://"))
            && archive
                .url
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"'\"\\`$<>".contains(&b));
        if !url_ok {
            return Err(invalid(
                "archive.url",
                format!(
                    "{:?} must be an http:// or https:// URL without quotes, spaces or $",
                    archive.url
                ),
            ));
        }
        if archive.sha512.len() != 128
            || !archive
                .sha512
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid(
                "archive.sha512",
                "must be the 128 lower-case hex digits of the archive's SHA-512 (as in its .sha512 file)",
            ));
        }
        let command_ok = !self.start_command.trim().is_empty()
            && self
                .start_command
                .bytes()
                .all(|b| (b.is_ascii_graphic() || b == b' ') && !b"%\\'\"`$;&|<>".contains(&b));
        if !command_ok {
            return Err(invalid(
                "start_command",
                format!(
                    "{:?} must be a program with plain arguments (no quotes, $, %, or shell operators)",
                    self.start_command
                ),
            ));
        }
        for (setting, path) in [
            ("install_root", &self.install_root),
            ("data_dir", &self.data_dir),
            ("log_dir", &self.log_dir),
            ("env_file", &self.env_file),
        ] {
            check_path(setting, path)?;
        }
        for (setting, name) in [("user", &self.user), ("group", &self.group)] {
            check_account(setting, name)?;
        }
        if self.heap_mb < 128 {
            return Err(invalid(
                "heap_mb",
                format!("{} MiB is too little for Solr (at least 128)", self.heap_mb),
            ));
        }
        if self.open_files < 1024 {
            return Err(invalid(
                "open_files",
                format!("{} open files are too few for Solr", self.open_files),
            ));
        }
        if self.cores.is_empty() {
            return Err(invalid("cores", "name at least one core"));
        }
        for (index, core) in self.cores.iter().enumerate() {
            check_core_name("cores", core)?;
            if core.ends_with(REBUILD_SUFFIX) {
                return Err(invalid(
                    "cores",
                    format!(
                        "{core:?} ends with {REBUILD_SUFFIX}, which names the core a reindex builds"
                    ),
                ));
            }
            if self.cores[..index].contains(core) {
                return Err(invalid("cores", format!("{core:?} is named twice")));
            }
        }
        check_core_name("configset", &self.configset)?;
        if self.java_package.is_empty()
            || !self
                .java_package
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
        {
            return Err(invalid(
                "java_package",
                format!("{:?} is not a Debian package name", self.java_package),
            ));
        }
        for (key, value) in &self.extra_environment {
            let key_ok = key
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
                && key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !key_ok {
                return Err(invalid(
                    "extra_environment",
                    format!("{key:?} is not an environment variable name"),
                ));
            }
            if value.bytes().any(|b| b"\"\\`$\n\r".contains(&b)) {
                return Err(invalid(
                    "extra_environment",
                    format!(
                        "the value of {key} must not contain quotes, backslashes, $ or line breaks"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// An address in a URL: IPv6 in brackets.
pub(crate) fn url_host(address: IpAddr) -> String {
    match address {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// An address or a network (`ADDRESS/PREFIX`), if it is one.
fn parse_network(text: &str) -> Option<(IpAddr, Option<u8>)> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix.parse::<u8>().ok()?)),
        None => (text, None),
    };
    let address: IpAddr = address
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let most = if address.is_ipv4() { 32 } else { 128 };
    if prefix.is_some_and(|p| p > most) {
        return None;
    }
    Some((address, prefix))
}

/// An allowlist entry as Solr documents it: IPv6 addresses in brackets.
fn allowlist_entry(text: &str) -> String {
    match parse_network(text) {
        Some((IpAddr::V6(address), prefix)) => match prefix {
            Some(prefix) => format!("[{address}]/{prefix}"),
            None => format!("[{address}]"),
        },
        Some((IpAddr::V4(address), prefix)) => match prefix {
            Some(prefix) => format!("{address}/{prefix}"),
            None => address.to_string(),
        },
        None => text.to_string(),
    }
}

/// A core or configset name: letters, digits, `_` and `-` (they go into URLs, directory names
/// and shell commands).
pub(crate) fn check_core_name(setting: &'static str, name: &str) -> Result<(), SolrError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid(
            setting,
            format!("{name:?} must be 1 to 64 letters, digits, _ or -"),
        ));
    }
    Ok(())
}

/// An absolute path without characters that configs, units or scripts would read differently.
fn check_path(setting: &'static str, path: &str) -> Result<(), SolrError> {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+@".contains(&b));
    if !path.starts_with('/')
        || path.len() < 2
        || !plain
        || path.contains("/../")
        || path.ends_with("/..")
    {
        return Err(invalid(
            setting,
            format!("{path:?} must be an absolute path of letters, digits and / . _ - + @"),
        ));
    }
    Ok(())
}

/// A user or group name as `useradd` accepts it.
fn check_account(setting: &'static str, name: &str) -> Result<(), SolrError> {
    if !provision_core::resource::is_valid_account_name(name) {
        return Err(invalid(
            setting,
            format!("{name:?} is not a valid user or group name"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    fn settings() -> SolrSettings {
        SolrSettings::new("10.0.0.5".parse().unwrap(), 16 * GIB)
    }

    #[test]
    fn the_heap_is_a_quarter_of_the_memory_within_bounds() {
        assert_eq!(heap_megabytes(16 * GIB), 4096);
        assert_eq!(heap_megabytes(GIB), MIN_HEAP_MB);
        assert_eq!(heap_megabytes(0), MIN_HEAP_MB);
        assert_eq!(heap_megabytes(256 * GIB), MAX_HEAP_MB);
        assert_eq!(heap_megabytes(6 * GIB), 1536);
    }

    #[test]
    fn the_open_file_limit_stays_within_the_hosts() {
        let mut facts = provision_core::facts::Facts::parse(
            "os_id=debian\ncpus=2\nmemory_kib=8388608\ninit=systemd\nopen_files_limit=20000\n",
        )
        .unwrap();
        let settings = SolrSettings::for_host("10.0.0.5".parse().unwrap(), &facts);
        assert_eq!(settings.open_files, 20_000);
        assert_eq!(settings.heap_mb, 2048);
        facts.open_files_limit = None;
        let settings = SolrSettings::for_host("10.0.0.5".parse().unwrap(), &facts);
        assert_eq!(settings.open_files, RECOMMENDED_OPEN_FILES);
    }

    #[test]
    fn the_allowlist_has_the_host_and_its_clients_once_with_ipv6_in_brackets() {
        let mut s = settings();
        s.allowed_clients = vec![
            "10.0.0.11".into(),
            "10.0.0.5".into(),
            "fd00::12".into(),
            "10.1.0.0/16".into(),
            "fd00:1::/64".into(),
            "10.0.0.11".into(),
        ];
        assert_eq!(
            s.allowlist(),
            "10.0.0.5, 10.0.0.11, [fd00::12], 10.1.0.0/16, [fd00:1::]/64"
        );
        s.check().unwrap();
    }

    #[test]
    fn the_official_archive_is_apaches_permanent_one() {
        let s = settings();
        assert_eq!(
            s.archive.url,
            "https://archive.apache.org/dist/solr/solr/9.10.1/solr-9.10.1.tgz"
        );
        assert_eq!(s.install_dir(), "/opt/solr-9.10.1");
        assert_eq!(s.current_link(), "/opt/solr");
        assert_eq!(s.exec_start(), "/opt/solr/bin/solr start -f");
        assert_eq!(s.base_url(), "http://10.0.0.5:8983/solr");
        let v6 = SolrSettings::new("fd00::5".parse().unwrap(), GIB);
        assert_eq!(v6.base_url(), "http://[fd00::5]:8983/solr");
    }

    #[test]
    fn impossible_settings_are_refused_naming_the_setting() {
        type Change = Box<dyn Fn(&mut SolrSettings)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "bind_address",
                Box::new(|s| s.bind_address = "0.0.0.0".parse().unwrap()),
            ),
            (
                "allowed_clients",
                Box::new(|s| s.allowed_clients = vec!["app1".into()]),
            ),
            (
                "allowed_clients",
                Box::new(|s| s.allowed_clients = vec!["10.0.0.0/33".into()]),
            ),
            (
                "archive.sha512",
                Box::new(|s| s.archive.sha512 = "abc".into()),
            ),
            (
                "archive.url",
                Box::new(|s| s.archive.url = "ftp://example.org/solr.tgz".into()),
            ),
            (
                "archive.url",
                Box::new(|s| s.archive.url = "https://example.org/$(reboot)".into()),
            ),
            (
                "archive.version",
                Box::new(|s| s.archive.version = "9 10".into()),
            ),
            (
                "start_command",
                Box::new(|s| s.start_command = "bin/solr start -f; reboot".into()),
            ),
            ("data_dir", Box::new(|s| s.data_dir = "var/lib/solr".into())),
            ("cores", Box::new(|s| s.cores = Vec::new())),
            (
                "cores",
                Box::new(|s| s.cores = vec!["plone".into(), "plone".into()]),
            ),
            (
                "cores",
                Box::new(|s| s.cores = vec!["plone_rebuild".into()]),
            ),
            ("cores", Box::new(|s| s.cores = vec!["a b".into()])),
            ("heap_mb", Box::new(|s| s.heap_mb = 64)),
            (
                "extra_environment",
                Box::new(|s| s.extra_environment = vec![("SOLR_OPTS".into(), "-Dx=$HOME".into())]),
            ),
            (
                "extra_environment",
                Box::new(|s| s.extra_environment = vec![("solr opts".into(), "x".into())]),
            ),
        ];
        for (setting, change) in cases {
            let mut s = settings();
            change(&mut s);
            let error = s.check().expect_err(setting).to_string();
            assert!(
                error.starts_with(&format!("{setting}:")),
                "{setting}: {error}"
            );
        }
        settings().check().unwrap();
    }
}
