//! Blobs in an S3 bucket, mounted with s3fs (the cookbook's `s3fs-fuse` recipe): the bucket is
//! created or verified from the controller with the S3 API, and every host that needs the blobs
//! mounts it through fstab with its keys in a 0600 file.
//!
//! s3fs keeps each file's owner and mode in the object's metadata, so the blob directory keeps
//! the Plone user's 0700 directories without a fixed uid on the mount.

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::operation::head_bucket::HeadBucketError;
use provision_core::phase::Phase;
use provision_core::resource::{File, Mount, Packages, Resource};

use crate::error::{BlobsError, invalid};

/// Where the keys of a mount live on the host.
pub const PASSWD_DIR: &str = "/etc/provision/s3fs";

/// An S3 endpoint and the keys to use it.
#[derive(Debug, Clone)]
pub struct S3Access {
    /// An S3-compatible endpoint (path-style requests); `None` is AWS.
    pub url: Option<String>,
    /// Default `us-east-1`.
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

/// One bucket mounted on a host.
#[derive(Debug, Clone)]
pub struct S3fsMount {
    pub bucket: String,
    pub mount_point: String,
    /// s3fs `use_cache`: a local directory that caches what was read. Default none.
    pub cache_dir: Option<String>,
    pub access: S3Access,
}

impl S3fsMount {
    /// The host's file with this mount's keys.
    pub fn passwd_file(&self) -> String {
        format!("{PASSWD_DIR}/{}.passwd", self.bucket)
    }

    /// The fstab options: `allow_other` so that the Plone user (not root, who mounts) sees
    /// the files; path-style requests for S3-compatible endpoints.
    pub fn options(&self) -> String {
        let mut options = vec![
            "_netdev".to_string(),
            "allow_other".to_string(),
            format!("passwd_file={}", self.passwd_file()),
        ];
        if let Some(url) = &self.access.url {
            options.push(format!("url={url}"));
            options.push("use_path_request_style".to_string());
        }
        if self.access.region != "us-east-1" {
            options.push(format!("endpoint={}", self.access.region));
        }
        if let Some(dir) = &self.cache_dir {
            options.push(format!("use_cache={dir}"));
        }
        options.join(",")
    }

    fn validate(&self) -> Result<(), BlobsError> {
        let setting = "s3fs_fuse.mounts";
        if !is_valid_bucket_name(&self.bucket) {
            return Err(invalid(
                setting,
                format!(
                    "`{}` is not a valid bucket name (3 to 63 lowercase letters, digits, `.` and \
                     `-`, starting and ending with a letter or digit)",
                    self.bucket
                ),
            ));
        }
        if !self.mount_point.starts_with('/') {
            return Err(invalid(
                setting,
                format!(
                    "the path `{}` of bucket {} must be absolute",
                    self.mount_point, self.bucket
                ),
            ));
        }
        // fstab fields are separated by white space, options by commas.
        let options = self.options();
        if options.contains(char::is_whitespace) || self.mount_point.contains(char::is_whitespace) {
            return Err(invalid(
                setting,
                format!(
                    "the mount of bucket {} has white space in its path, url or cache \
                     directory; fstab cannot hold it",
                    self.bucket
                ),
            ));
        }
        Ok(())
    }
}

/// What a host needs to mount `mounts`: s3fs from the distribution (setup), the keys and the
/// fstab mounts (configure).
pub fn client_resources(mounts: &[S3fsMount], phase: Phase) -> Result<Vec<Resource>, BlobsError> {
    for mount in mounts {
        mount.validate()?;
    }
    let mut resources = Vec::new();
    if mounts.is_empty() {
        return Ok(resources);
    }
    match phase {
        Phase::Setup => resources.push(Packages::new(["s3fs", "fuse3"]).into()),
        Phase::Configure => {
            for mount in mounts {
                let keys = format!("{}:{}\n", mount.access.access_key, mount.access.secret_key);
                resources.push(
                    File::new(mount.passwd_file(), keys)
                        .owner("root", "root")
                        .mode(0o600)
                        .secret()
                        .into(),
                );
                resources.push(
                    Mount::new(
                        &mount.bucket,
                        &mount.mount_point,
                        "fuse.s3fs",
                        &mount.options(),
                    )
                    .into(),
                );
            }
        }
        Phase::Deploy => {}
    }
    Ok(resources)
}

/// S3's bucket naming rule (the part that matters for a typo).
pub fn is_valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// What [`ensure_bucket`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketState {
    Exists,
    /// Absent, and created.
    Created,
    /// Absent; a plan does not create it.
    WouldCreate,
}

/// An S3 API failure, with the endpoint and bucket in the message.
#[derive(Debug, thiserror::Error)]
#[error("S3 bucket {bucket} at {endpoint}: {message}")]
pub struct BucketError {
    pub bucket: String,
    pub endpoint: String,
    pub message: String,
}

fn client(access: &S3Access) -> aws_sdk_s3::Client {
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(access.region.clone()))
        .credentials_provider(Credentials::new(
            access.access_key.clone(),
            access.secret_key.clone(),
            None,
            None,
            "provision",
        ))
        // S3-compatible stores reject the 2025 default CRC trailers.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(url) = &access.url {
        config = config.endpoint_url(url).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(config.build())
}

/// Makes sure `bucket` exists: verified with HEAD, created when absent unless `plan`.
pub async fn ensure_bucket(
    access: &S3Access,
    bucket: &str,
    plan: bool,
) -> Result<BucketState, BucketError> {
    let error = |message: String| BucketError {
        bucket: bucket.to_string(),
        endpoint: access.url.clone().unwrap_or_else(|| "AWS S3".to_string()),
        message,
    };
    let s3 = client(access);
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => return Ok(BucketState::Exists),
        Err(SdkError::ServiceError(e)) if matches!(e.err(), HeadBucketError::NotFound(_)) => {}
        Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 403 => {
            return Err(error(
                "access denied: the keys in the secrets file (s3fs_fuse_s3_key, \
                 s3fs_fuse_s3_secret) may not use this bucket, or it belongs to another account"
                    .to_string(),
            ));
        }
        Err(e) => return Err(error(DisplayErrorContext(&e).to_string())),
    }
    if plan {
        return Ok(BucketState::WouldCreate);
    }
    let mut create = s3.create_bucket().bucket(bucket);
    if access.url.is_none() && access.region != "us-east-1" {
        create = create.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    access.region.as_str(),
                ))
                .build(),
        );
    }
    create
        .send()
        .await
        .map_err(|e| error(format!("cannot create it: {}", DisplayErrorContext(&e))))?;
    Ok(BucketState::Created)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(url: Option<&str>) -> S3fsMount {
        S3fsMount {
            bucket: "site-blobs".to_string(),
            mount_point: "/mnt/s3/blobs".to_string(),
            cache_dir: None,
            access: S3Access {
                url: url.map(str::to_string),
                region: "us-east-1".to_string(),
                access_key: "AKIDEXAMPLE".to_string(),
                secret_key: "wJalrXUtnFEMI".to_string(),
            },
        }
    }

    #[test]
    fn options_use_path_style_only_for_custom_endpoints() {
        assert_eq!(
            mount(None).options(),
            "_netdev,allow_other,passwd_file=/etc/provision/s3fs/site-blobs.passwd"
        );
        assert_eq!(
            mount(Some("http://10.0.0.1:9000")).options(),
            "_netdev,allow_other,passwd_file=/etc/provision/s3fs/site-blobs.passwd,\
             url=http://10.0.0.1:9000,use_path_request_style"
        );
    }

    #[test]
    fn keys_are_a_secret_root_only_file() {
        let resources = client_resources(&[mount(None)], Phase::Configure).unwrap();
        let Resource::File(file) = &resources[0] else {
            panic!("the keys come first")
        };
        assert_eq!(file.mode, 0o600);
        assert!(file.secret);
    }

    #[test]
    fn bad_bucket_names_are_refused() {
        let mut bad = mount(None);
        bad.bucket = "Site_Blobs".to_string();
        let error = client_resources(&[bad], Phase::Setup).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`Site_Blobs` is not a valid bucket name"),
            "{error}"
        );
        assert!(is_valid_bucket_name("a.b-c"));
        assert!(!is_valid_bucket_name("ab"));
        assert!(!is_valid_bucket_name("-ab"));
    }
}
