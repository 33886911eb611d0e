//! Copies of the ZEO backups in an S3 bucket, so that the database survives the loss of its
//! host.
//!
//! The ZEO host pushes them itself, right after each backup, with Debian's `rclone`: the
//! daily backup is a timer on the host, and its copy must leave the host also when no
//! controller runs. In the bucket, under the stack's prefix:
//!
//! - `filestorage/`: repozo's files as they are (full and incremental backups, `.dat`,
//!   `.index`);
//! - `blobs/`: every blob file once (a blob file never changes: a new revision is a new file);
//! - `snapshots/STAMP.list`: the files of the blob snapshot `STAMP`, one path a line.
//!
//! A push sends the blobs of each new snapshot before its list, and repozo's `.dat` files
//! before the backups they describe, each file in time order and stopping at the first
//! failure: whatever the bucket holds is a usable prefix of the backups. It then keeps the
//! newest `keep` full backups, with their incrementals and snapshot lists, and deletes the
//! blob files no remaining list names. `provision-zeo-restore --from-s3` fetches a backup and
//! its snapshot back into the backup directory (a new host included) and restores from there.

use serde::Serialize;

use crate::{Error, invalid};

/// The script that pushes, lists and fetches the copies (see its head).
pub const SCRIPT: &str = "/usr/local/sbin/provision-zeo-s3";
/// The rclone remote named in the config file.
pub const REMOTE: &str = "backups";

/// Where the copies go, and the keys (from the secrets).
#[derive(Clone, PartialEq, Serialize)]
pub struct S3Copies {
    /// The bucket; it must exist.
    pub bucket: String,
    /// The key prefix of this stack's backups, without leading or trailing `/`.
    pub prefix: String,
    /// An S3-compatible endpoint URL (path-style requests); `None`: AWS.
    pub endpoint: Option<String>,
    /// Default `us-east-1`.
    pub region: String,
    /// Full backups kept in the bucket (at least the host's own `backup_keep`).
    pub keep: u32,
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for S3Copies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Copies")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl S3Copies {
    /// rclone's name of the copies: `backups:BUCKET/PREFIX`.
    pub fn remote(&self) -> String {
        format!("{REMOTE}:{}/{}", self.bucket, self.prefix)
    }

    /// Where they are, for people: `s3://BUCKET/PREFIX` (and the endpoint when not AWS).
    pub fn url(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("s3://{}/{} at {endpoint}", self.bucket, self.prefix),
            None => format!("s3://{}/{}", self.bucket, self.prefix),
        }
    }

    /// Refuse what rclone, S3 or the scripts would read differently, naming the setting.
    pub fn check(&self, host_keep: u32) -> Result<(), Error> {
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !bucket_ok {
            return Err(invalid(
                "backup_s3.bucket",
                format!(
                    "{:?} is not a bucket name (3 to 63 letters, digits, . _ -)",
                    self.bucket
                ),
            ));
        }
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-+@=".contains(&b))
        };
        if !self.prefix.split('/').all(segment_ok) {
            return Err(invalid(
                "backup_s3.prefix",
                format!(
                    "{:?} must be names of letters, digits and . _ - + @ = separated by single /, \
                     without a leading or trailing /",
                    self.prefix
                ),
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
            let plain = endpoint
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"'\"\\$`#;".contains(&b));
            if !scheme_ok || !plain {
                return Err(invalid(
                    "backup_s3.endpoint",
                    format!("{endpoint:?} is not an http:// or https:// URL"),
                ));
            }
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "backup_s3.region",
                format!("{:?} is not a region such as us-east-1", self.region),
            ));
        }
        if self.keep < host_keep.max(1) {
            return Err(invalid(
                "backup_s3.keep",
                format!(
                    "{} would keep fewer full backups in the bucket than on the host ({host_keep}); \
                     keep at least {host_keep}",
                    self.keep
                ),
            ));
        }
        for (setting, key) in [
            ("backup_s3 access key", &self.access_key),
            ("backup_s3 secret key", &self.secret_key),
        ] {
            if key.is_empty() || key.chars().any(char::is_control) || key.trim() != key {
                return Err(invalid(
                    setting,
                    "must be one line without leading or trailing white space",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Serialize)]
pub(crate) struct RcloneContext<'a> {
    copier: &'static str,
    what: &'static str,
    readers: &'static str,
    remote: &'static str,
    provider: &'static str,
    access_key: &'a str,
    secret_key: &'a str,
    region: &'a str,
    endpoint: Option<&'a str>,
}

/// The context of rclone's config: `copier` copies `what` there; root and `readers` read it.
pub(crate) fn rclone_context<'a>(
    copies: &'a S3Copies,
    copier: &'static str,
    what: &'static str,
    readers: &'static str,
) -> RcloneContext<'a> {
    RcloneContext {
        copier,
        what,
        readers,
        remote: REMOTE,
        provider: if copies.endpoint.is_some() {
            "Other"
        } else {
            "AWS"
        },
        access_key: &copies.access_key,
        secret_key: &copies.secret_key,
        region: &copies.region,
        endpoint: copies.endpoint.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copies() -> S3Copies {
        S3Copies {
            bucket: "backups".to_string(),
            prefix: "cluster/zeo".to_string(),
            endpoint: None,
            region: "eu-west-1".to_string(),
            keep: 4,
            access_key: "AKIDEXAMPLE".to_string(),
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCY".to_string(),
        }
    }

    #[test]
    fn plain_settings_pass() {
        copies().check(2).unwrap();
        let mut other = copies();
        other.endpoint = Some("http://10.0.0.1:9000".to_string());
        other.check(2).unwrap();
        assert_eq!(other.remote(), "backups:backups/cluster/zeo");
    }

    #[test]
    fn odd_settings_are_refused_by_name() {
        let refused = |change: &dyn Fn(&mut S3Copies)| {
            let mut c = copies();
            change(&mut c);
            c.check(2).unwrap_err().to_string()
        };
        assert!(refused(&|c| c.bucket = "a b".into()).starts_with("backup_s3.bucket"));
        assert!(refused(&|c| c.prefix = "/zeo".into()).starts_with("backup_s3.prefix"));
        assert!(refused(&|c| c.prefix = "a//b".into()).starts_with("backup_s3.prefix"));
        assert!(refused(&|c| c.prefix = "a/../b".into()).starts_with("backup_s3.prefix"));
        assert!(
            refused(&|c| c.endpoint = Some("ftp://x".into())).starts_with("backup_s3.endpoint")
        );
        assert!(refused(&|c| c.keep = 1).contains("keep at least 2"));
        assert!(refused(&|c| c.secret_key = "a\nb".into()).contains("secret key"));
    }

    #[test]
    fn debug_hides_the_keys() {
        let shown = format!("{:?}", copies());
        assert!(
            !shown.contains("AKIDEXAMPLE") && !shown.contains("wJalr"),
            "{shown}"
        );
    }
}
