use provision_core::template::TemplateError;

/// What can go wrong turning settings into resources; every message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum BlobsError {
    /// A setting that cannot work.
    #[error("`{setting}`: {message}")]
    Invalid { setting: String, message: String },
    #[error(transparent)]
    Template(#[from] TemplateError),
}

pub(crate) fn invalid(setting: impl Into<String>, message: impl Into<String>) -> BlobsError {
    BlobsError::Invalid {
        setting: setting.into(),
        message: message.into(),
    }
}

/// Characters that configs, fstab and shell scripts all take without quoting problems.
fn plain(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./+@".contains(&b))
}

/// An absolute path that fstab, exports files and ganesha.conf can hold as it is.
pub(crate) fn check_path(setting: &str, path: &str) -> Result<(), BlobsError> {
    if !path.starts_with('/') {
        return Err(invalid(
            setting,
            format!("{path:?} is not an absolute path: start it with /"),
        ));
    }
    if path == "/" {
        return Err(invalid(
            setting,
            "/ cannot be shared: name a directory of its own, e.g. /srv/exports",
        ));
    }
    if path.ends_with('/') || path.contains("//") || path.split('/').any(|c| c == "." || c == "..")
    {
        return Err(invalid(
            setting,
            format!("write {path:?} without `.`, `..`, doubled or trailing slashes"),
        ));
    }
    if !plain(path) {
        return Err(invalid(
            setting,
            format!(
                "{path:?} holds characters that fstab or the NFS exports format cannot take: \
                 use letters, digits and - _ . + @"
            ),
        ));
    }
    Ok(())
}

/// A host name or an IPv4/IPv6 address (no port, no network).
pub(crate) fn check_host(setting: &str, host: &str) -> Result<(), BlobsError> {
    if host.parse::<std::net::IpAddr>().is_ok() || is_host_name(host) {
        return Ok(());
    }
    Err(invalid(
        setting,
        format!("{host:?} is neither an IP address nor a host name"),
    ))
}

pub(crate) fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Mount options as fstab holds them: one comma-separated field, no blanks.
pub(crate) fn check_mount_options(setting: &str, options: &str) -> Result<(), BlobsError> {
    if options.is_empty() {
        return Err(invalid(
            setting,
            "is empty: give at least `rw` (the cookbook's default is `auto,rw,noatime,nodiratime`)",
        ));
    }
    let ok = options
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.,=:/+@".contains(&b));
    if !ok || options.split(',').any(str::is_empty) {
        return Err(invalid(
            setting,
            format!(
                "{options:?} is not an fstab options field: comma-separated options \
                 without blanks, quotes or empty items"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(check_path("p", "/srv/exports").is_ok());
        for bad in [
            "srv",
            "/",
            "/srv/",
            "/srv/../etc",
            "/srv//x",
            "/srv/my exports",
            "/a\"b",
        ] {
            assert!(check_path("p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        for good in ["10.0.0.5", "fd00::5", "blobs-1.example.com", "db"] {
            assert!(check_host("h", good).is_ok(), "{good}");
        }
        for bad in ["", "10.0.0.0/8", "a b", "-x", "host:24007", "a..b"] {
            assert!(check_host("h", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mount_options() {
        assert!(check_mount_options("o", "auto,rw,noatime,nodiratime").is_ok());
        assert!(check_mount_options("o", "rw,backup-volfile-servers=a:b").is_ok());
        for bad in ["", "rw,,noatime", "rw noatime", "rw,'x'"] {
            assert!(check_mount_options("o", bad).is_err(), "{bad}");
        }
    }
}
