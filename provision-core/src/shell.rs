//! Quoting for POSIX `sh`: every value that goes into a remote script passes through here.

/// Quote `s` as one word for POSIX `sh`.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Whether `name` can be an environment variable (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_environment_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `NAME="value"` for a systemd `EnvironmentFile=`, which `sh` reads the same way: inside
/// double quotes only `\`, `"`, `$` and `` ` `` are escaped. The error says what is wrong.
pub fn environment_file_line(name: &str, value: &str) -> Result<String, String> {
    if !is_environment_name(name) {
        return Err(format!("{name:?} is not an environment variable name"));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(format!("the value of {name} must be one line"));
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    Ok(format!("{name}=\"{quoted}\""))
}

/// The shell steps of an atomic write whose content arrives on stdin (`cat`): a temporary file
/// beside the target, optional validation of it (`validate` with `{}` for its path), owner,
/// mode, fsync, rename. One `&&` chain, so the first failing step fails the whole and the
/// temporary file is removed. Also used by the batched apply script.
pub(crate) fn atomic_write_steps(
    path: &str,
    owner: &str,
    group: &str,
    mode: u32,
    validate: Option<&str>,
) -> String {
    let path_q = quote(path);
    let validate = validate
        .map(|command| format!("{} && ", command.replace("{}", "\"$tmp\"")))
        .unwrap_or_default();
    format!(
        "d=$(dirname {path_q}); tmp=$(mktemp \"$d/.provision.XXXXXX\") && \
         trap 'rm -f \"$tmp\"' EXIT && \
         cat > \"$tmp\" && {validate}chown {owner}:{group} \"$tmp\" && chmod {mode:o} \"$tmp\" && \
         sync \"$tmp\" && mv -f \"$tmp\" {path_q} && trap - EXIT && sync \"$d\"",
        owner = quote(owner),
        group = quote(group),
    )
}

#[cfg(test)]
mod tests {
    use super::{environment_file_line, quote};

    #[test]
    fn environment_file_values_are_double_quoted() {
        assert_eq!(
            environment_file_line("URL", r#"redis://:p"$`\x@h"#).unwrap(),
            r#"URL="redis://:p\"\$\`\\x@h""#
        );
        assert!(environment_file_line("1X", "v").is_err());
        assert!(environment_file_line("X", "a\nb").is_err());
    }

    #[test]
    fn plain_words_stay_bare() {
        assert_eq!(
            quote("/etc/haproxy/haproxy.cfg"),
            "/etc/haproxy/haproxy.cfg"
        );
    }

    #[test]
    fn specials_are_single_quoted() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's $HOME"), r"'it'\''s $HOME'");
    }
}
