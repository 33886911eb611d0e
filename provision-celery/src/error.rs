use provision_core::template::TemplateError;

/// What can go wrong turning settings into resources; every message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum CeleryError {
    #[error(
        "the Redis broker needs a password: add `redis_config_requirepass` to the secrets file \
         (or set PROVISION_SECRET_REDIS_CONFIG_REQUIREPASS)"
    )]
    MissingPassword,
    /// A setting that cannot work.
    #[error("`{setting}`: {message}")]
    Invalid { setting: String, message: String },
    #[error(transparent)]
    Template(#[from] TemplateError),
}

pub(crate) fn invalid(setting: impl Into<String>, message: impl Into<String>) -> CeleryError {
    CeleryError::Invalid {
        setting: setting.into(),
        message: message.into(),
    }
}
