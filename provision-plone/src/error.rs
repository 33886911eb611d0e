use provision_core::template::TemplateError;

#[derive(Debug, thiserror::Error)]
pub enum PloneError {
    #[error("`{key}` = {value:?}: {reason}")]
    InvalidSetting {
        key: String,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A local `git` command (the controller side of a pushed source) failed.
    #[error("git {what} in {repository}: {message}")]
    Git {
        what: String,
        repository: String,
        message: String,
    },
    /// A deploy script ran and reported a failure.
    #[error("{step} failed: {message}{}", log_tail.as_deref().map(|t| format!("\n{t}")).unwrap_or_default())]
    Step {
        step: String,
        message: String,
        /// The last lines of the build log or of stderr.
        log_tail: Option<String>,
    },
}

impl PloneError {
    pub(crate) fn invalid(key: &str, value: &str, reason: impl Into<String>) -> Self {
        PloneError::InvalidSetting {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
