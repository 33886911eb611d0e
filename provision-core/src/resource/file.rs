//! A file with exact content, owner, group and mode, replaced atomically.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{Drift, parse_mode, state_value};
use crate::shell::{atomic_write_steps, quote};

/// Old content larger than this is not fetched for a diff.
const DIFF_LIMIT: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct File {
    pub path: String,
    pub content: Vec<u8>,
    pub owner: String,
    pub group: String,
    pub mode: u32,
    /// A command that must accept the new content before it replaces the live file, with `{}`
    /// for the temporary file's path (e.g. `haproxy -c -f {}`).
    pub validate: Option<String>,
    /// The content is a secret (a private key): plans show that it changed, never what it
    /// holds.
    pub secret: bool,
}

impl File {
    /// A file owned by root:root, mode 0644.
    pub fn new(path: impl Into<String>, content: impl Into<Vec<u8>>) -> File {
        File {
            path: path.into(),
            content: content.into(),
            owner: "root".to_string(),
            group: "root".to_string(),
            mode: 0o644,
            validate: None,
            secret: false,
        }
    }

    #[must_use]
    pub fn owner(mut self, owner: &str, group: &str) -> File {
        self.owner = owner.to_string();
        self.group = group.to_string();
        self
    }

    #[must_use]
    pub fn mode(mut self, mode: u32) -> File {
        self.mode = mode;
        self
    }

    #[must_use]
    pub fn secret(mut self) -> File {
        self.secret = true;
        self
    }

    #[must_use]
    pub fn validate(mut self, command: impl Into<String>) -> File {
        self.validate = Some(command.into());
        self
    }

    fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.content))
    }

    pub(crate) fn drift(&self, state: &[&str]) -> Result<Option<Drift>, String> {
        let mut drift = self.drift_with_diff(state)?;
        if self.secret
            && let Some(drift) = &mut drift
            && drift.diff.is_some()
        {
            drift.diff = Some("(secret content not shown)\n".to_string());
        }
        Ok(drift)
    }

    fn drift_with_diff(&self, state: &[&str]) -> Result<Option<Drift>, String> {
        let kind = state_value(state, "kind").ok_or("no state reported")?;
        match kind {
            "absent" | "link" => {
                let what = if kind == "link" {
                    "replace symlink with file"
                } else {
                    "create"
                };
                Ok(Some(Drift {
                    summary: vec![format!(
                        "{what} ({} bytes, {}:{} {:04o})",
                        self.content.len(),
                        self.owner,
                        self.group,
                        self.mode
                    )],
                    diff: Some(unified_diff(&self.path, b"", &self.content)),
                    fix: self.write_script(),
                }))
            }
            "file" => self.drift_of_existing(state),
            _ => Err(format!(
                "{} exists and is not a regular file; remove it or choose another path",
                self.path
            )),
        }
    }

    fn drift_of_existing(&self, state: &[&str]) -> Result<Option<Drift>, String> {
        let mut summary = Vec::new();
        let mut diff = None;
        let content_differs = state_value(state, "content") != Some("same");
        if content_differs {
            summary.push("content changed".to_string());
            diff = Some(match state_value(state, "old") {
                Some(old) => {
                    let old = base64::engine::general_purpose::STANDARD
                        .decode(old)
                        .map_err(|e| format!("unreadable old content: {e}"))?;
                    unified_diff(&self.path, &old, &self.content)
                }
                None => "(old content too large to show)\n".to_string(),
            });
        }
        let meta = state_value(state, "meta").unwrap_or_default();
        let mut fields = meta.split(' ');
        let (owner, group) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        let mode = fields.next().and_then(parse_mode);
        if (owner, group) != (self.owner.as_str(), self.group.as_str()) {
            summary.push(format!(
                "owner {owner}:{group} -> {}:{}",
                self.owner, self.group
            ));
        }
        if mode != Some(self.mode) {
            summary.push(format!(
                "mode {} -> {:04o}",
                mode.map(|m| format!("{m:04o}")).unwrap_or_default(),
                self.mode
            ));
        }
        if summary.is_empty() {
            return Ok(None);
        }
        let fix = if content_differs {
            self.write_script()
        } else {
            let p = quote(&self.path);
            format!(
                "chown {}:{} {p} && chmod {:o} {p}\n",
                quote(&self.owner),
                quote(&self.group),
                self.mode
            )
        };
        Ok(Some(Drift { summary, diff, fix }))
    }

    /// The fix that writes the whole file: content from a here-document, then the atomic steps.
    pub(crate) fn write_script(&self) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(&self.content);
        let marker = format!("PROVISION_EOF_{}", &self.sha256()[..16]);
        let dir = self.path.rsplit_once('/').map(|(d, _)| d).unwrap_or(".");
        let dir = if dir.is_empty() { "/" } else { dir };
        format!(
            "mkdir -p {dir}\nbase64 -d <<'{marker}' | {{ {steps}; }}\n{encoded}\n{marker}\n",
            dir = quote(dir),
            steps = atomic_write_steps(
                &self.path,
                &self.owner,
                &self.group,
                self.mode,
                self.validate.as_deref()
            ),
        )
    }
}

/// The check of many files in a constant number of processes: one `stat` for type, owner,
/// group and mode of all of them (and of the `directories`, checked in the same call), one
/// `sha256sum -c` for all contents; only files whose content differs cost more (their old
/// content is sent back for the diff).
pub(crate) fn batch_check_script(files: &[&File], directories: &[&str]) -> String {
    let paths: Vec<String> = files
        .iter()
        .map(|f| quote(&f.path))
        .chain(directories.iter().map(|d| quote(d)))
        .collect();
    if paths.is_empty() {
        return String::new();
    }
    let mut script = format!(
        "stat -c '@S %F|%U|%G|%a|%n' -- {} 2>/dev/null\n",
        paths.join(" ")
    );
    if files.is_empty() {
        return script;
    }
    let mut sums = String::new();
    for file in files {
        sums.push_str(&format!("{}  {}\n", file.sha256(), file.path));
    }
    // `sha256sum -c` names each file that differs as `PATH: FAILED[ open or read]`.
    script.push_str(&format!(
        "sha256sum -c --quiet 2>/dev/null <<'PROVISION_SUMS' | \
         while IFS= read -r p; do case $p in *': FAILED'*) p=${{p%': FAILED'*}};; *) continue;; esac; \
         printf '@X %s\\n' \"$p\"; \
         if [ -f \"$p\" ] && [ ! -L \"$p\" ] && [ \"$(stat -c %s -- \"$p\")\" -le {DIFF_LIMIT} ]; then \
         printf '@O %s|' \"$p\"; base64 -w0 < \"$p\"; echo; fi; done\n{sums}PROVISION_SUMS\n"
    ));
    script
}

/// The `%F|%U|%G|%a` fields the batch `stat` printed for `path`, if it exists.
pub(crate) fn batch_stat<'a>(path: &str, output: &'a str) -> Option<[&'a str; 4]> {
    output.lines().find_map(|line| {
        let fields: Vec<&str> = line.strip_prefix("@S ")?.splitn(5, '|').collect();
        (fields.len() == 5 && fields[4] == path)
            .then(|| [fields[0], fields[1], fields[2], fields[3]])
    })
}

/// Whether a path can go through [`batch_check_script`] (the `sha256sum -c` list format
/// cannot hold newlines or backslashes).
pub(crate) fn batchable(path: &str) -> bool {
    !path.contains(['\n', '\\', '|'])
}

/// Turn the batch check's output into each file's state lines for [`File::drift`]:
/// `kind=absent|file|link|other`, `meta=OWNER GROUP MODE`, `content=same|differs`, `old=B64`.
pub(crate) fn batch_states(path: &str, output: &str) -> Vec<String> {
    let mut kind = "absent";
    let mut meta = None;
    let mut differs = false;
    let mut old = None;
    if let Some([file_type, owner, group, mode]) = batch_stat(path, output) {
        kind = match file_type {
            "regular file" | "regular empty file" => "file",
            "symbolic link" => "link",
            _ => "other",
        };
        meta = Some(format!("{owner} {group} {mode}"));
    }
    for line in output.lines() {
        if line.strip_prefix("@X ") == Some(path) {
            differs = true;
        } else if let Some((p, content)) = line.strip_prefix("@O ").and_then(|r| r.rsplit_once('|'))
            && p == path
        {
            old = Some(content.to_string());
        }
    }
    let mut state = vec![format!("kind={kind}")];
    if let Some(meta) = meta {
        state.push(format!("meta={meta}"));
    }
    state.push(format!(
        "content={}",
        if differs { "differs" } else { "same" }
    ));
    if let Some(old) = old {
        state.push(format!("old={old}"));
    }
    state
}

/// A unified diff of two versions of a file; binary content is described, not shown.
pub(crate) fn unified_diff(path: &str, old: &[u8], new: &[u8]) -> String {
    match (std::str::from_utf8(old), std::str::from_utf8(new)) {
        (Ok(old), Ok(new)) => similar::TextDiff::from_lines(old, new)
            .unified_diff()
            .context_radius(3)
            .header(&format!("{path} (on host)"), &format!("{path} (wanted)"))
            .to_string(),
        _ => format!(
            "binary content differs ({} bytes -> {} bytes)\n",
            old.len(),
            new.len()
        ),
    }
}
