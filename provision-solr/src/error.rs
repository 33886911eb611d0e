use provision_core::template::TemplateError;

/// What can go wrong turning Solr settings into resources or commands.
#[derive(Debug, thiserror::Error)]
pub enum SolrError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A setting that cannot work; the message says what to change.
    #[error("{setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

pub(crate) fn invalid(setting: &'static str, message: impl Into<String>) -> SolrError {
    SolrError::Invalid {
        setting,
        message: message.into(),
    }
}
