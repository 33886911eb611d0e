//! Errors of the stack model, written for the person who has to fix the stack file.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A place in an input file: `stack.toml:12:1`. Lines and columns count from 1; columns count
/// characters, not bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why the stack (or its custom JSON, or its secrets file) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A file could not be read at all.
    #[error(
        "cannot read the {what} {path}{}: {source}",
        named_at.as_ref().map(|l| format!(" (named at {l})")).unwrap_or_default()
    )]
    Read {
        /// "stack file", "custom JSON" or "secrets file".
        what: &'static str,
        path: PathBuf,
        /// Where the stack file names this file, if it does.
        named_at: Option<Location>,
        #[source]
        source: io::Error,
    },
    /// The secrets file can be read by other users than its owner.
    #[error(
        "the secrets file {path} can be read or written by other users (mode {mode:04o}); \
         run `chmod 600 {path}` and try again",
        path = path.display()
    )]
    InsecureSecrets { path: PathBuf, mode: u32 },
    /// The files were read but say something impossible. Syntax, unknown keys and wrong types
    /// stop the reading of a file, so all of them are reported before any impossible value;
    /// otherwise every impossible value is reported. Display puts one problem per line.
    #[error("{}", Problems(problems))]
    Invalid { problems: Vec<Problem> },
}

impl StackError {
    /// The problems of an [`StackError::Invalid`] error; empty for the other kinds.
    pub fn problems(&self) -> &[Problem] {
        match self {
            StackError::Invalid { problems } => problems,
            _ => &[],
        }
    }

    pub(crate) fn invalid(mut problems: Vec<Problem>) -> Self {
        for problem in &mut problems {
            problem.hide_secret_value();
        }
        StackError::Invalid { problems }
    }
}

/// The last keys of the attributes that hold secrets (see `Secrets::bind`). A value of the
/// wrong type there is still meant as a secret, so messages say only its type.
const SECRET_KEYS: [&str; 11] = [
    "stats_password",
    "password",
    "dsn",
    "s3_key",
    "s3_secret",
    "aws_key",
    "aws_secret",
    "license",
    "access_key",
    "ssl_certificate_key",
    "requirepass",
];

impl Problem {
    fn hide_secret_value(&mut self) {
        if let ProblemKind::WrongType { path, found, .. }
        | ProblemKind::InvalidValue { path, found, .. } = &mut self.kind
        {
            let last = path.rsplit('.').next().unwrap_or(path).trim_matches('"');
            if SECRET_KEYS.contains(&last) {
                *found = type_only(found);
            }
        }
    }
}

/// "the integer 12345678" → "an integer": what was found, without the value.
fn type_only(found: &str) -> String {
    let kinds = [
        ("the string ", "a string"),
        ("the integer ", "an integer"),
        ("the number ", "a number"),
        ("`true`", "a boolean"),
        ("`false`", "a boolean"),
    ];
    kinds
        .iter()
        .find(|(prefix, _)| found.starts_with(prefix))
        .map_or_else(|| found.to_string(), |(_, kind)| kind.to_string())
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// One thing wrong in the stack: what, and where if it has a place in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub location: Option<Location>,
}

/// What is wrong. Paths are written as in the file that holds them
/// (`attributes.plone_instances.per_cpu` in the stack file, `plone_instances.per_cpu` in the
/// custom JSON).
#[derive(Debug, Clone, PartialEq)]
pub enum ProblemKind {
    /// The file is not valid TOML or JSON.
    Syntax {
        format: &'static str,
        file: String,
        message: String,
    },
    /// A key that is not part of the stack format.
    UnknownKey {
        path: String,
        suggestion: Option<String>,
        valid: Vec<String>,
    },
    /// A layer name that is not one of [`Layer::ALL`](super::Layer::ALL).
    UnknownLayer {
        path: String,
        value: String,
        suggestion: Option<String>,
    },
    /// A value outside a fixed set (such as an app's `kind`).
    UnknownValue {
        path: String,
        value: String,
        suggestion: Option<String>,
        valid: Vec<String>,
    },
    /// A value of the wrong type.
    WrongType {
        path: String,
        expected: String,
        found: String,
    },
    /// A value of the right type but out of range.
    InvalidValue {
        path: String,
        expected: String,
        found: String,
    },
    /// A required key is absent.
    MissingKey { path: String },
    /// A value or a combination of values that cannot work; the message says what to change.
    Impossible { message: String },
}

fn at(location: &Option<Location>) -> String {
    location
        .as_ref()
        .map(|l| format!(" at {l}"))
        .unwrap_or_default()
}

fn backquoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lists of valid names longer than this are not spelled out in messages.
const LIST_AT_MOST: usize = 12;

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = at(&self.location);
        match &self.kind {
            ProblemKind::Syntax {
                format,
                file,
                message,
            } => match &self.location {
                Some(l) => write!(f, "invalid {format} at {l}: {message}"),
                None => write!(f, "invalid {format} in {file}: {message}"),
            },
            ProblemKind::UnknownKey {
                path,
                suggestion,
                valid,
            } => {
                write!(f, "unknown key `{path}`{at}")?;
                if let Some(s) = suggestion {
                    write!(f, "; did you mean `{s}`?")
                } else if valid.is_empty() {
                    write!(f, "; no keys are allowed here")
                } else if valid.len() <= LIST_AT_MOST {
                    write!(f, "; the keys allowed here are {}", backquoted(valid))
                } else {
                    Ok(())
                }
            }
            ProblemKind::UnknownLayer {
                path,
                value,
                suggestion,
            } => {
                write!(f, "unknown layer `{value}` in `{path}`{at}")?;
                // The cookbook's `celerybeat` layer: here beat is a setting, so it cannot end
                // up on two hosts.
                if value == "celerybeat" {
                    return write!(
                        f,
                        "; beat is not a layer here: set `plone_instances.enable_celery` and \
                         `plone_instances.celerybeat` to true, and Celery beat runs on exactly \
                         one host, the first `plone_instances` host"
                    );
                }
                match suggestion {
                    Some(s) => write!(f, "; did you mean `{s}`?"),
                    None => {
                        let all: Vec<String> =
                            super::Layer::ALL.iter().map(|l| l.to_string()).collect();
                        write!(f, "; the layers are {}", backquoted(&all))
                    }
                }
            }
            ProblemKind::UnknownValue {
                path,
                value,
                suggestion,
                valid,
            } => {
                write!(f, "unknown value `{value}` for `{path}`{at}")?;
                match suggestion {
                    Some(s) => write!(f, "; did you mean `{s}`?"),
                    None => write!(f, "; use one of {}", backquoted(valid)),
                }
            }
            ProblemKind::WrongType {
                path,
                expected,
                found,
            } => {
                write!(
                    f,
                    "wrong type for `{path}`{at}: expected {expected}, found {found}"
                )
            }
            ProblemKind::InvalidValue {
                path,
                expected,
                found,
            } => {
                write!(
                    f,
                    "invalid value for `{path}`{at}: expected {expected}, found {found}"
                )
            }
            ProblemKind::MissingKey { path } => match &self.location {
                Some(l) => write!(
                    f,
                    "missing key `{path}` in the table at {l}; it is required"
                ),
                None => write!(f, "missing key `{path}`; it is required"),
            },
            ProblemKind::Impossible { message } => f.write_str(message),
        }
    }
}

/// The candidate nearest to `word`, if one is near enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    // Words in another order (`celery_enabled` for `enable_celery`) compare as near.
    let sorted = |s: &str| {
        let mut words: Vec<&str> = s.split(['_', '-']).collect();
        words.sort_unstable();
        words.join("_")
    };
    let lower_sorted = sorted(&lower);
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        let score = strsim::jaro_winkler(&lower, candidate)
            .max(strsim::jaro_winkler(&lower_sorted, &sorted(candidate)));
        if score >= 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_typos_only() {
        let keys = ["per_cpu", "instance_count", "zodb_cache_size"];
        assert_eq!(nearest("per_cpux", keys).as_deref(), Some("per_cpu"));
        assert_eq!(nearest("PER_CPU", keys).as_deref(), Some("per_cpu"));
        assert_eq!(nearest("threads", keys).as_deref(), None);
        assert_eq!(
            nearest("cache_size_zodb", keys).as_deref(),
            Some("zodb_cache_size")
        );
        assert_eq!(
            nearest("zeo", ["zeoserver", "lb"]).as_deref(),
            Some("zeoserver")
        );
    }

    #[test]
    fn invalid_lists_one_problem_per_line() {
        let problem = |message: &str| Problem {
            kind: ProblemKind::Impossible {
                message: message.to_string(),
            },
            location: None,
        };
        let err = StackError::invalid(vec![problem("first"), problem("second")]);
        assert_eq!(err.to_string(), "first\nsecond");
    }
}
