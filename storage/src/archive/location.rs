//! Archive URLs: `file:///absolute/path` (a local directory) and `s3://bucket[/prefix]` (any
//! S3-compatible store, configured by the standard `AWS_*` environment variables).

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use super::{archive_err, Archive};
use crate::error::{StorageError, StorageResult};

/// A parsed archive URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An absolute directory.
    Directory(String),
    /// A bucket and a key prefix (empty: the bucket's root).
    S3 { bucket: String, prefix: String },
}

fn invalid(url: &str, why: &str) -> StorageError {
    StorageError::InvalidRequest(format!("archive URL {url:?}: {why}"))
}

impl Location {
    /// Parses `file:///absolute/path` or `s3://bucket[/prefix]` without touching the store.
    pub fn parse(url: &str) -> StorageResult<Location> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid(url, "the path must be absolute (file:///...)"));
            }
            return Ok(Location::Directory(path.to_string()));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = prefix.trim_matches('/');
            if bucket.is_empty() {
                return Err(invalid(url, "no bucket (s3://bucket/prefix)"));
            }
            // S3 bucket names: 3-63 lower-case letters, digits, dots and hyphens.
            let name_ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                });
            if !name_ok {
                return Err(invalid(url, "not a valid S3 bucket name"));
            }
            Path::parse(prefix).map_err(|e| invalid(url, &format!("bad prefix: {e}")))?;
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        Err(invalid(
            url,
            "expected file:///absolute/path or s3://bucket/prefix",
        ))
    }
}

/// Retries of one S3 request (object_store retries server errors, throttling and transport
/// failures): 100 ms doubling to 5 s, at most 5 times or 60 s, so that a store that is down
/// fails an upload within about a minute (object_store's default connect timeout, 5 s, and
/// request timeout, 30 s, stay) and the connector's own, longer backoff between
/// attempts takes over instead of holding an upload slot.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(60),
    }
}

impl Archive {
    /// Opens the archive at `url` (see [`Location::parse`]). A directory is created when
    /// missing. An S3 archive takes its endpoint, region and credentials from the standard
    /// `AWS_*` environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`, ...);
    /// nothing is sent to the store until the archive is used.
    pub fn open(url: &str) -> StorageResult<Archive> {
        Archive::open_with(url, &[])
    }

    /// [`Archive::open`], with S3 settings (object_store's names, e.g. `aws_endpoint`,
    /// `aws_access_key_id`) taking precedence over the environment's; ignored for directories.
    pub fn open_with(url: &str, s3_options: &[(&str, &str)]) -> StorageResult<Archive> {
        let store: Arc<dyn ObjectStore> = match Location::parse(url)? {
            Location::Directory(path) => {
                std::fs::create_dir_all(&path).map_err(|e| archive_err(&path, e))?;
                Arc::new(
                    LocalFileSystem::new_with_prefix(&path).map_err(|e| archive_err(&path, e))?,
                )
            }
            Location::S3 { bucket, prefix } => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry_config());
                for (key, value) in s3_options {
                    let key: AmazonS3ConfigKey = key
                        .parse()
                        .map_err(|e| archive_err(&format!("S3 option {key}"), e))?;
                    builder = builder.with_config(key, *value);
                }
                let s3 = builder.build().map_err(|e| archive_err(url, e))?;
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, Path::from(prefix)))
                }
            }
        };
        Ok(Archive::with_store(store, url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_directories_and_buckets_with_prefixes() {
        assert_eq!(
            Location::parse("file:///srv/archive").unwrap(),
            Location::Directory("/srv/archive".into())
        );
        let s3 = |bucket: &str, prefix: &str| Location::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        };
        assert_eq!(Location::parse("s3://logs").unwrap(), s3("logs", ""));
        assert_eq!(Location::parse("s3://logs/").unwrap(), s3("logs", ""));
        assert_eq!(
            Location::parse("s3://logs/strata/prod/").unwrap(),
            s3("logs", "strata/prod")
        );
        for bad in [
            "file://x",
            "s3://",
            "s3://a",
            "s3://UPPER/x",
            "gs://b/p",
            "s3://b/../x",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    /// S3 settings come from the environment and the options; building contacts nothing.
    #[test]
    fn s3_archives_open_without_contacting_the_store() {
        let a = Archive::open_with(
            "s3://bucket/prefix",
            &[
                ("aws_endpoint", "http://127.0.0.1:1"),
                ("aws_allow_http", "true"),
                ("aws_region", "us-east-1"),
            ],
        )
        .unwrap();
        assert_eq!(a.url(), "s3://bucket/prefix");
        assert!(Archive::open_with("s3://bucket", &[("no_such_option", "1")]).is_err());
    }
}
