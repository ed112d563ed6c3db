//! Where data lives: a directory on this machine or a prefix in an S3 bucket, and the
//! settings that reach it. The same `Location` names a place for deltalake (commits), for
//! object_store (uploads, listings) and for polars in the workers (scans).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use url::Url;

use super::OfflineError;

/// S3 settings as object_store (and polars, and deltalake through it) name them:
/// `aws_endpoint_url`, `aws_region`, `aws_access_key_id`, `aws_secret_access_key`,
/// `aws_session_token`, `aws_allow_http`.
pub type StorageOptions = BTreeMap<String, String>;

#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An absolute, normalised directory path.
    Local(PathBuf),
    /// `s3://bucket/prefix` with no trailing slash.
    S3(Url),
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

impl Location {
    /// A path (relative to the working directory, or absolute) or an `s3://` URL. Local paths
    /// are made absolute and normalised (`.` and `..` resolved lexically), so prefix checks mean
    /// what they say; symlinks are resolved where the path exists.
    pub fn parse(spec: &str) -> Result<Location, OfflineError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(OfflineError::Invalid("an empty location".into()));
        }
        if let Some(rest) = spec
            .strip_prefix("s3://")
            .or_else(|| spec.strip_prefix("s3a://"))
        {
            let trimmed = rest.trim_end_matches('/');
            let (bucket, prefix) = trimmed.split_once('/').unwrap_or((trimmed, ""));
            if bucket.is_empty() {
                return Err(OfflineError::Invalid(format!("{spec:?} names no bucket")));
            }
            if prefix.split('/').any(|p| p == ".." || p == ".") {
                return Err(OfflineError::Invalid(format!(
                    "{spec:?}: '.' and '..' are not allowed in an S3 key"
                )));
            }
            let url = Url::parse(&format!("s3://{trimmed}"))
                .map_err(|e| OfflineError::Invalid(format!("{spec:?}: {e}")))?;
            return Ok(Location::S3(url));
        }
        if spec.contains("://") {
            return Err(OfflineError::Invalid(format!(
                "{spec:?}: only local paths and s3:// URLs are supported"
            )));
        }
        let path = spec.strip_prefix("file://").unwrap_or(spec);
        let absolute = if Path::new(path).is_absolute() {
            PathBuf::from(path)
        } else {
            std::env::current_dir()
                .map_err(|e| OfflineError::Invalid(format!("no working directory: {e}")))?
                .join(path)
        };
        Ok(Location::Local(resolve_links(&normalise(&absolute))))
    }

    /// A place under this one. `relative` uses `/` and must not climb out.
    pub fn join(&self, relative: &str) -> Location {
        let parts = relative
            .split('/')
            .filter(|p| !p.is_empty() && *p != "." && *p != "..");
        match self {
            Location::Local(dir) => {
                let mut out = dir.clone();
                for p in parts {
                    out.push(p);
                }
                Location::Local(out)
            }
            Location::S3(url) => {
                let mut text = url.as_str().trim_end_matches('/').to_string();
                for p in parts {
                    text.push('/');
                    text.push_str(p);
                }
                Location::S3(Url::parse(&text).unwrap_or_else(|_| url.clone()))
            }
        }
    }

    /// The location as deltalake, polars and the database take it: an absolute path, or the
    /// `s3://` URL.
    pub fn uri(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::S3(u) => u.as_str().trim_end_matches('/').to_string(),
        }
    }

    /// As a URL (`file:///...` or `s3://...`), for deltalake.
    pub fn url(&self) -> Result<Url, OfflineError> {
        match self {
            Location::Local(p) => Url::from_directory_path(p)
                .map_err(|_| OfflineError::Invalid(format!("{} is not absolute", p.display()))),
            Location::S3(u) => Ok(u.clone()),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Location::Local(_))
    }

    /// Whether `self` is `prefix` or lies under it (by whole path segments).
    pub fn is_under(&self, prefix: &Location) -> bool {
        match (self, prefix) {
            (Location::Local(p), Location::Local(q)) => p.starts_with(q),
            (Location::S3(p), Location::S3(q)) => {
                let (p, q) = (p.as_str(), q.as_str().trim_end_matches('/'));
                p == q || p.starts_with(&format!("{q}/"))
            }
            _ => false,
        }
    }

    /// This location relative to `root` (with `/`), when it lies under it.
    pub fn relative_to(&self, root: &Location) -> Option<String> {
        match (self, root) {
            (Location::Local(p), Location::Local(r)) => p.strip_prefix(r).ok().map(|rel| {
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            }),
            (Location::S3(p), Location::S3(r)) => {
                let r = r.as_str().trim_end_matches('/');
                p.as_str()
                    .strip_prefix(r)
                    .map(|rest| rest.trim_start_matches('/').to_string())
            }
            _ => None,
        }
    }

    /// An object store rooted at this location, and nothing above it.
    pub fn store(&self, options: &StorageOptions) -> Result<Arc<dyn ObjectStore>, OfflineError> {
        match self {
            Location::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| OfflineError::io(dir, e))?;
                let fs = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| OfflineError::Storage(Box::new(e)))?;
                Ok(Arc::new(fs))
            }
            Location::S3(url) => {
                let bucket = s3_bucket_store(url, options)?;
                let prefix = url.path().trim_matches('/');
                if prefix.is_empty() {
                    Ok(bucket)
                } else {
                    Ok(Arc::new(object_store::prefix::PrefixStore::new(
                        bucket,
                        ObjectPath::from(prefix),
                    )))
                }
            }
        }
    }
}

/// An S3 client for the bucket of `url`, configured from `options`. Conditional PUT
/// (`If-None-Match: *`) is what keeps two writers from taking the same Delta version.
pub fn s3_bucket_store(
    url: &Url,
    options: &StorageOptions,
) -> Result<Arc<dyn ObjectStore>, OfflineError> {
    let mut builder = AmazonS3Builder::new().with_url(url.as_str());
    for (key, value) in options {
        if let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(key, value.as_str());
        }
    }
    let store = builder
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .build()
        .map_err(|e| OfflineError::Storage(Box::new(e)))?;
    Ok(Arc::new(store))
}

/// `/a/./b/../c` -> `/a/c`, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Resolve symlinks in the longest prefix of `path` that exists, so a link inside an allowed
/// directory cannot lead out of it.
fn resolve_links(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_absolute_and_cannot_climb_out_of_a_prefix() {
        let root = Location::parse("/srv/data").unwrap();
        let sneaky = Location::parse("/srv/data/../etc/passwd").unwrap();
        assert!(!sneaky.is_under(&root));
        assert!(Location::parse("/srv/data/raw/t1").unwrap().is_under(&root));
        assert!(!Location::parse("/srv/database").unwrap().is_under(&root));
        assert_eq!(root.join("raw/../x").uri(), "/srv/data/raw/x");
    }

    #[test]
    fn s3_locations_join_and_compare_by_whole_segments() {
        let root = Location::parse("s3://bucket/pre/").unwrap();
        assert_eq!(root.uri(), "s3://bucket/pre");
        let table = root.join("raw_tables/7");
        assert_eq!(table.uri(), "s3://bucket/pre/raw_tables/7");
        assert!(table.is_under(&root));
        assert_eq!(table.relative_to(&root).as_deref(), Some("raw_tables/7"));
        assert!(!Location::parse("s3://bucket/prefix")
            .unwrap()
            .is_under(&root));
        assert!(Location::parse("s3://bucket/a/../b").is_err());
        assert!(Location::parse("http://x/y").is_err());
    }
}
