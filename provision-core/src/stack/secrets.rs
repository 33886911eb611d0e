//! Secrets: passwords and keys, from the secrets file and the environment, never printed.
//!
//! The secrets file is a TOML table of `name = "value"`, readable by its owner only. An
//! environment variable `PROVISION_SECRET_<NAME>` (upper case) overrides the entry `<name>`.
//! Secret attributes (such as `haproxy.stats_password`) take the secret of the same path with
//! `_` for `.` (`haproxy_stats_password`) when there is one; a secret written inline in the
//! attributes is registered under that name, so that [`Secrets::mask`] hides it too.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::attributes::Attributes;
use super::error::{Location, Problem, ProblemKind, StackError};
use super::locate::{LineIndex, Part, Seg, Sources, toml_to_json};

/// The prefix of the environment variables that hold secrets.
pub const SECRET_ENV_PREFIX: &str = "PROVISION_SECRET_";

/// What [`Secrets::mask`] writes in place of a secret.
pub const MASK: &str = "********";

/// Secrets shorter than this are not masked: masking every "ab" in an output would hide more
/// than it protects.
pub const MASK_MIN_LEN: usize = 4;

/// A secret attribute value. Debug never shows it; [`SecretString::expose`] does, for the one
/// place that writes it to a host.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret itself. Write it only to files of mode 0600/0640 on a host.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

// Documented as a write-only string: the reference shows no value for a secret, not even a default.
impl schemars::JsonSchema for SecretString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretString".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "writeOnly": true })
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretString({MASK})")
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        SecretString::new(value)
    }
}

/// Named secrets. Names are lower case (`haproxy_stats_password`).
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secrets {
    pub fn new() -> Self {
        Secrets::default()
    }

    /// Reads a secrets file. It must not be readable or writable by group or others.
    /// `named_at` is where the stack file names it, for the error message.
    pub fn load(path: &Path, named_at: Option<Location>) -> Result<Self, StackError> {
        let read_error = |source| StackError::Read {
            what: "secrets file",
            path: path.to_path_buf(),
            named_at: named_at.clone(),
            source,
        };
        // A secrets file that does not exist yet holds no secrets: provision may create it
        // (with a generated HAProxy stats password), and the secrets it lacks are reported
        // where they are needed.
        let metadata = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Secrets::new()),
            other => other.map_err(read_error)?,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(StackError::InsecureSecrets {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = metadata;
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Secrets::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a secrets file: a TOML table of `name = "value"`.
    pub fn parse(text: &str, file: &str) -> Result<Self, StackError> {
        let doc = super::locate::parse_document(text).map_err(|e| {
            let location = e.span.map(|s| {
                let pos = LineIndex::new(text).pos(s.start);
                Location {
                    file: file.to_string(),
                    line: pos.line,
                    column: pos.column,
                }
            });
            StackError::invalid(vec![Problem {
                kind: ProblemKind::Syntax {
                    format: "TOML",
                    file: file.to_string(),
                    message: first_line(&e.message),
                },
                location,
            }])
        })?;
        let (value, map) = toml_to_json(&doc, file);
        let sources = Sources {
            toml: map,
            json: None,
        };
        let mut secrets = Secrets::new();
        let mut problems = Vec::new();
        if let Value::Object(entries) = value {
            for (name, value) in entries {
                match value {
                    Value::String(s) => secrets.insert(&name, s),
                    other => {
                        let located = sources.locate(&[Seg::Key(name)], Part::Value);
                        problems.push(Problem {
                            kind: ProblemKind::WrongType {
                                path: located.path,
                                expected: "a string (secrets are `name = \"value\"`)".to_string(),
                                found: kind_of(&other).to_string(),
                            },
                            location: located.location,
                        });
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(secrets)
        } else {
            Err(StackError::invalid(problems))
        }
    }

    /// Adds the `PROVISION_SECRET_<NAME>` variables of the process environment; they win over
    /// the file.
    #[must_use]
    pub fn with_env(self) -> Self {
        self.with_vars(std::env::vars())
    }

    /// Adds the `PROVISION_SECRET_<NAME>` entries of `vars` (name, value); they win over what
    /// is there. Other variables and empty values are ignored.
    #[must_use]
    pub fn with_vars(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        for (key, value) in vars {
            if let Some(name) = key.strip_prefix(SECRET_ENV_PREFIX)
                && !name.is_empty()
                && !value.is_empty()
            {
                self.insert(name, value);
            }
        }
        self
    }

    /// Sets a secret (the name is stored in lower case).
    pub fn insert(&mut self, name: &str, value: impl Into<String>) {
        self.values.insert(name.to_ascii_lowercase(), value.into());
    }

    /// The secret of that name (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The names of all secrets, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value of [`MASK_MIN_LEN`] characters or more replaced by
    /// [`MASK`]. Longer secrets are replaced first, so one that contains another is hidden
    /// whole. A secret of several lines (a private key) is also hidden line by line, since a
    /// diff shows it that way. A secret is also hidden percent-encoded, as it is written into
    /// URLs (the Redis password in the clients' `BROKER_URL`).
    pub fn mask(&self, text: &str) -> String {
        let mut values: Vec<String> = self
            .values
            .values()
            .flat_map(|v| std::iter::once(v.as_str()).chain(v.lines().map(str::trim)))
            .filter(|v| v.chars().count() >= MASK_MIN_LEN)
            .flat_map(|v| [v.to_string(), percent_encoded(v)])
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        let mut out = text.to_string();
        for value in values {
            if out.contains(&value) {
                out = out.replace(&value, MASK);
            }
        }
        out
    }

    /// Fills the secret attributes from the secrets, and registers the inline ones so that
    /// they are masked too. A secret from the file or the environment wins over an inline
    /// value.
    pub(crate) fn bind(&mut self, attributes: &mut Attributes) {
        let a = attributes;
        self.slot("haproxy_stats_password", &mut a.haproxy.stats_password);
        let db = &mut a.plone_instances.relstorage.db;
        self.slot("plone_instances_relstorage_db_password", &mut db.password);
        self.slot("plone_instances_relstorage_db_dsn", &mut db.dsn);
        self.slot("s3fs_fuse_s3_key", &mut a.s3fs_fuse.s3_key);
        self.slot("s3fs_fuse_s3_secret", &mut a.s3fs_fuse.s3_secret);
        self.slot("ebs_snapshots_aws_key", &mut a.ebs_snapshots.aws_key);
        self.slot("ebs_snapshots_aws_secret", &mut a.ebs_snapshots.aws_secret);
        self.slot("newrelic_license", &mut a.newrelic.license);
        self.slot("traceview_access_key", &mut a.traceview.access_key);
        for (app, deploy) in &mut a.deploy {
            if let Some(database) = &mut deploy.database {
                self.slot(
                    &format!("deploy_{app}_database_password"),
                    &mut database.password,
                );
            }
            self.slot(
                &format!("deploy_{app}_ssl_certificate_key"),
                &mut deploy.ssl_certificate_key,
            );
            for (i, archive) in deploy.buildout_cache_archives.iter_mut().enumerate() {
                let name = format!("deploy_{app}_buildout_cache_archives_{i}_password");
                self.slot(&name, &mut archive.password);
            }
        }
        let requirepass = "redis_config_requirepass";
        if let Some(secret) = self.get(requirepass) {
            a.redis
                .config
                .insert("requirepass".to_string(), Value::String(secret.to_string()));
        } else if let Some(Value::String(inline)) = a.redis.config.get("requirepass") {
            let inline = inline.clone();
            self.insert(requirepass, inline);
        }
    }

    fn slot(&mut self, name: &str, value: &mut Option<SecretString>) {
        if let Some(secret) = self.get(name) {
            *value = Some(SecretString::new(secret));
        } else if let Some(inline) = value {
            let inline = inline.expose().to_string();
            self.insert(name, inline);
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

pub(crate) fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or("").trim().to_string()
}

/// Every byte but RFC 3986's unreserved characters as `%XX`: how a secret appears in a URL.
fn percent_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_secret_of_several_lines_is_hidden_line_by_line() {
        let mut secrets = Secrets::new();
        secrets.insert(
            "key",
            "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\nhkiG9w0BAQEFAASC\n-----END KEY-----\n",
        );
        let diff =
            "+-----BEGIN KEY-----\n+MIIEvQIBADANBgkq\n+hkiG9w0BAQEFAASC\n+-----END KEY-----\n";
        let masked = secrets.mask(diff);
        assert!(!masked.contains("MIIEvQIBADANBgkq"), "{masked}");
        assert!(!masked.contains("hkiG9w0BAQEFAASC"), "{masked}");
    }

    #[test]
    fn mask_hides_every_secret_of_four_characters_or_more() {
        let mut secrets = Secrets::new();
        secrets.insert("db", "s3cret-pw");
        secrets.insert("longer", "s3cret-pw-2");
        secrets.insert("short", "abc");
        let text = "dsn password='s3cret-pw' other=s3cret-pw-2 abc";
        assert_eq!(
            secrets.mask(text),
            "dsn password='********' other=******** abc"
        );
    }

    #[test]
    fn mask_hides_a_secret_percent_encoded_in_a_url() {
        let mut secrets = Secrets::new();
        secrets.insert("redis_config_requirepass", "p@ss:w/rd%$");
        assert_eq!(
            secrets.mask("BROKER_URL redis://:p%40ss%3Aw%2Frd%25%24@10.0.0.5:6379/0 p@ss:w/rd%$"),
            "BROKER_URL redis://:********@10.0.0.5:6379/0 ********"
        );
    }

    #[test]
    fn environment_wins_over_the_file() {
        let secrets = Secrets::parse(
            "haproxy_stats_password = \"from-file\"\nother = \"kept\"\n",
            "s.toml",
        )
        .unwrap()
        .with_vars(vars(&[
            ("PROVISION_SECRET_HAPROXY_STATS_PASSWORD", "from-env"),
            ("PROVISION_SECRET_NEW_ONE", "added"),
            ("PROVISION_SECRET_EMPTY", ""),
            ("HOME", "/root"),
        ]));
        assert_eq!(secrets.get("haproxy_stats_password"), Some("from-env"));
        assert_eq!(secrets.get("HAPROXY_STATS_PASSWORD"), Some("from-env"));
        assert_eq!(secrets.get("other"), Some("kept"));
        assert_eq!(secrets.get("new_one"), Some("added"));
        assert_eq!(secrets.get("empty"), None);
        assert_eq!(
            secrets.names().collect::<Vec<_>>(),
            ["haproxy_stats_password", "new_one", "other"]
        );
    }

    #[test]
    fn debug_never_shows_values() {
        let mut secrets = Secrets::new();
        secrets.insert("db_password", "hunter22");
        let shown = format!("{secrets:?} {:?}", SecretString::new("hunter22"));
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(shown.contains("db_password"), "{shown}");
    }

    #[test]
    fn secrets_file_values_must_be_strings() {
        let err = Secrets::parse("a = \"x\"\nport = 5\n", "secrets.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "wrong type for `port` at secrets.toml:2:8: expected a string (secrets are `name = \"value\"`), found a number"
        );
        let err = Secrets::parse("a = \n", "secrets.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid TOML at secrets.toml:1:5: string values must be quoted, expected literal string"
        );
    }

    #[cfg(unix)]
    #[test]
    fn load_refuses_a_file_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        std::fs::write(&path, "x = \"value\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Secrets::load(&path, None).unwrap_err();
        let shown = err
            .to_string()
            .replace(&dir.path().display().to_string(), "DIR");
        assert_eq!(
            shown,
            "the secrets file DIR/secrets.toml can be read or written by other users (mode 0644); \
             run `chmod 600 DIR/secrets.toml` and try again"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Secrets::load(&path, None).unwrap().get("x"), Some("value"));
    }

    #[test]
    fn bind_fills_attributes_and_registers_inline_secrets() {
        let mut attributes = Attributes::default();
        attributes.s3fs_fuse.s3_secret = Some("inline-secret".into());
        attributes.haproxy.stats_password = Some("inline-stats".into());
        let mut secrets = Secrets::new().with_vars(vars(&[(
            "PROVISION_SECRET_HAPROXY_STATS_PASSWORD",
            "from-env",
        )]));
        secrets.bind(&mut attributes);
        assert_eq!(
            attributes.haproxy.stats_password.as_ref().unwrap().expose(),
            "from-env"
        );
        assert_eq!(secrets.get("s3fs_fuse_s3_secret"), Some("inline-secret"));
        assert_eq!(secrets.mask("key=inline-secret"), "key=********");
    }
}
