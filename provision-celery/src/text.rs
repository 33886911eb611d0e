//! Text for the formats this crate writes: command lines (shell words in, systemd words out),
//! systemd environment files, redis.conf strings and URLs, plus the checks of names and paths.

use crate::error::{CeleryError, invalid};

/// Split extra arguments (`celery_args`, `beat_args`) as `sh` would split words: blanks
/// separate, `'...'` is literal, `"..."` and a bare `\` escape. No expansions.
pub(crate) fn split_words(setting: &str, text: &str) -> Result<Vec<String>, CeleryError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\n' | '\r' => return Err(invalid(setting, "must be one line")),
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(invalid(setting, "a ' quote is not closed")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(invalid(setting, "a \" quote is not closed")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(invalid(setting, "a \" quote is not closed")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(invalid(setting, "ends with a lone \\")),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// One word of a systemd `ExecStart=` line: `%` and `$` doubled (systemd expands specifiers
/// and variables there), and double quotes around anything but plain characters.
pub(crate) fn systemd_word(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+%".contains(&b));
    if plain {
        return escaped;
    }
    format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A command line for `ExecStart=`.
pub(crate) fn systemd_command(words: &[String]) -> String {
    words
        .iter()
        .map(|w| systemd_word(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An environment variable name as `sh` and systemd accept it.
pub(crate) fn check_env_name(setting: &str, name: &str) -> Result<(), CeleryError> {
    if !provision_core::shell::is_environment_name(name) {
        return Err(invalid(
            setting,
            format!("{name:?} is not an environment variable name"),
        ));
    }
    Ok(())
}

/// `NAME="value"` for a systemd `EnvironmentFile=`.
pub(crate) fn env_line(setting: &str, name: &str, value: &str) -> Result<String, CeleryError> {
    provision_core::shell::environment_file_line(name, value).map_err(|e| invalid(setting, e))
}

/// A string for redis.conf: double quotes, with `\\`, `\"` and `\xHH` for anything that is
/// not printable ASCII (redis-server reads these escapes).
pub(crate) fn redis_string(value: &str) -> String {
    let mut out = String::from("\"");
    for b in value.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

/// Percent-encoding of everything but RFC 3986's unreserved characters, for the password in a
/// `redis://` URL (kombu and redis-py decode it).
pub(crate) fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An absolute path without characters that units, configs or scripts read differently.
pub(crate) fn check_path(setting: &str, path: &str) -> Result<(), CeleryError> {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+@".contains(&b));
    if !path.starts_with('/') || !plain || path.split('/').any(|p| p == "..") {
        return Err(invalid(
            setting,
            format!(
                "{path:?} must be an absolute path of letters, digits and / . _ - + @ (no white \
                 space, quotes, $ or ..)"
            ),
        ));
    }
    Ok(())
}

/// A user or group name as `useradd` accepts it.
pub(crate) fn check_account(setting: &str, name: &str) -> Result<(), CeleryError> {
    if !provision_core::resource::is_valid_account_name(name) {
        return Err(invalid(
            setting,
            format!("{name:?} is not a valid user or group name"),
        ));
    }
    Ok(())
}

/// A name that goes into unit and file names (the app's name).
pub(crate) fn check_name(setting: &str, name: &str) -> Result<(), CeleryError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !name.starts_with('-');
    if !ok {
        return Err(invalid(
            setting,
            format!("{name:?} must be letters, digits, _ and - (it names units and files)"),
        ));
    }
    Ok(())
}

/// A dotted Python module name, optionally with `:attribute` (`my.package.tasks:app`).
pub(crate) fn check_module(setting: &str, name: &str) -> Result<(), CeleryError> {
    let identifier = |part: &str| {
        let mut bytes = part.bytes();
        bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let (module, attribute) = match name.split_once(':') {
        Some((m, a)) => (m, Some(a)),
        None => (name, None),
    };
    let ok =
        module.split('.').all(identifier) && attribute.is_none_or(|a| a.split('.').all(identifier));
    if !ok {
        return Err(invalid(
            setting,
            format!("{name:?} is not a Python module name (like my.package.tasks)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_sh() {
        assert_eq!(
            split_words("x", r#"--concurrency=2  -Q 'a b' "c \"d\" \$e" f\ g"#).unwrap(),
            ["--concurrency=2", "-Q", "a b", r#"c "d" $e"#, "f g"]
        );
        assert_eq!(split_words("x", "   ").unwrap(), Vec::<String>::new());
        assert_eq!(split_words("x", "''").unwrap(), [""]);
        assert!(split_words("x", "'open").is_err());
        assert!(split_words("x", "a\nb").is_err());
    }

    #[test]
    fn systemd_words_escape_specifiers_variables_and_quotes() {
        assert_eq!(systemd_word("--hostname=site@%h"), "--hostname=site@%%h");
        assert_eq!(systemd_word("a b"), "\"a b\"");
        assert_eq!(systemd_word(r#"$HOME "x" \"#), r#""$$HOME \"x\" \\""#);
        assert_eq!(systemd_word(""), "\"\"");
    }

    #[test]
    fn environment_lines_escape_for_systemd_and_sh() {
        assert_eq!(
            env_line("e", "A", r#"x"$`\y"#).unwrap(),
            r#"A="x\"\$\`\\y""#
        );
        assert!(env_line("e", "1A", "x").is_err());
        assert!(env_line("e", "A", "x\ny").is_err());
    }

    #[test]
    fn redis_strings_and_url_passwords_are_escaped() {
        assert_eq!(redis_string(r#"a"b\c é"#), r#""a\"b\\c \xc3\xa9""#);
        assert_eq!(percent_encode("p@ss:w/rd%$"), "p%40ss%3Aw%2Frd%25%24");
    }

    #[test]
    fn modules_paths_and_names_are_checked() {
        assert!(check_module("m", "my.package.tasks").is_ok());
        assert!(check_module("m", "tasks:app").is_ok());
        assert!(check_module("m", "my-package").is_err());
        assert!(check_module("m", "").is_err());
        assert!(check_path("p", "/srv/www/site/current/bin/celery").is_ok());
        assert!(check_path("p", "/srv/../etc").is_err());
        assert!(check_path("p", "bin/celery").is_err());
        assert!(check_name("a", "site_1").is_ok());
        assert!(check_name("a", "a b").is_err());
        assert!(check_account("u", "plone").is_ok());
        assert!(check_account("u", "Plone").is_err());
    }
}
