use provision_core::template::TemplateError;

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error(
        "HAProxy's statistics page needs a password: set `haproxy.stats_password` (or \
         `haproxy_stats_password` in the secrets file), or turn the page off with \
         `haproxy.enable_stats = false`"
    )]
    MissingStatsPassword,
    #[error("`{key}` = {value:?}: {reason}")]
    InvalidSetting {
        key: String,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Template(#[from] TemplateError),
}

impl FrontendError {
    pub(crate) fn invalid(key: impl Into<String>, value: &str, reason: impl Into<String>) -> Self {
        FrontendError::InvalidSetting {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
