//! The offline store: raw tables as Delta Lake tables and snapshots as Parquet files, under
//! `DATA_DIR` (a directory or an `s3://` prefix). The only code that knows about Delta and
//! object storage; workers get file lists and URLs from it, the database gets versions and
//! locations.

mod delta;
mod external;
mod files;
mod location;

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::DeltaTable;

pub use delta::{holds_lanes, stream_range, Appended, Holds, Pinned, Txn};
pub use external::{ExternalFormat, Found};
pub use files::{get_file, put_file, read_snapshot, write_parquet};
pub use location::{Location, StorageOptions};

/// Why the offline store failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// What the client asked for cannot be done (a bad URI, an unsupported dataset): a 400.
    #[error("{0}")]
    Invalid(String),
    /// The storage did not answer or refused: a server-side fault.
    #[error("data storage: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl OfflineError {
    pub(crate) fn io(path: &std::path::Path, e: std::io::Error) -> OfflineError {
        OfflineError::Storage(Box::new(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        )))
    }

    pub(crate) fn storage(e: impl std::error::Error + Send + Sync + 'static) -> OfflineError {
        OfflineError::Storage(Box::new(e))
    }
}

impl From<deltalake::DeltaTableError> for OfflineError {
    fn from(e: deltalake::DeltaTableError) -> Self {
        OfflineError::Storage(Box::new(e))
    }
}

impl From<object_store::Error> for OfflineError {
    fn from(e: object_store::Error) -> Self {
        OfflineError::Storage(Box::new(e))
    }
}

pub type Result<T, E = OfflineError> = std::result::Result<T, E>;

fn path_safe(instance: &str) -> String {
    instance
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// Where the data lives and how to reach it. Cheap to clone.
#[derive(Clone)]
pub struct OfflineStore(Arc<Inner>);

struct Inner {
    root: Location,
    options: StorageOptions,
    /// Where external datasets may be registered from, besides `root`.
    external_prefixes: Vec<Location>,
    /// Loaded Delta tables by URI: refreshing one reads only the commits since.
    tables: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<DeltaTable>>>>,
    /// Names this database in paths, so two databases over one data location never share a
    /// table directory (renamed with the database: `rename_instance`).
    instance: std::sync::RwLock<String>,
}

impl std::fmt::Debug for OfflineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineStore")
            .field("root", &self.0.root)
            .finish()
    }
}

impl OfflineStore {
    pub fn new(
        root: Location,
        options: StorageOptions,
        external_prefixes: Vec<Location>,
        instance: &str,
    ) -> OfflineStore {
        delta::register_s3();
        OfflineStore(Arc::new(Inner {
            root,
            options,
            external_prefixes,
            tables: Default::default(),
            instance: std::sync::RwLock::new(path_safe(instance)),
        }))
    }

    /// The database was renamed: what it creates from now on goes under the new name, and
    /// never into a directory a table of the database before a restore wrote.
    pub fn rename_instance(&self, instance: &str) {
        match self.0.instance.write() {
            Ok(mut held) => *held = path_safe(instance),
            Err(poisoned) => *poisoned.into_inner() = path_safe(instance),
        }
    }

    fn instance(&self) -> String {
        self.0
            .instance
            .read()
            .map_or_else(|p| p.into_inner().clone(), |i| i.clone())
    }

    pub fn root(&self) -> &Location {
        &self.0.root
    }

    pub fn options(&self) -> &StorageOptions {
        &self.0.options
    }

    /// A new relative location for a managed raw table's Delta table. A fresh directory each
    /// time: after a database is restored from a backup, ids are handed out again, and a new
    /// table must never find the Delta log of one created after the backup. 48 random bits
    /// suffice for that (a clash needs the same id as well), and keep object keys short: some
    /// S3 servers (s3s-fs, which CI runs) name a file after the whole key.
    pub fn new_managed_table_path(&self, raw_table_id: i64) -> String {
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!(
            "raw_tables/{}/{raw_table_id}-{}",
            self.instance(),
            &random[..12]
        )
    }

    /// A new relative location for the Delta table of a stream's rejected messages, fresh for
    /// the same reason as a managed table's.
    pub fn new_rejected_path(&self, raw_table_id: i64) -> String {
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!(
            "rejected/{}/{raw_table_id}-{}",
            self.instance(),
            &random[..12]
        )
    }

    /// A new snapshot file's relative location.
    pub fn new_snapshot_path(&self, feature_id: i64) -> String {
        format!(
            "snapshots/{}/f{feature_id}/{}.parquet",
            self.instance(),
            uuid::Uuid::new_v4().simple()
        )
    }

    /// A new directory's relative location for a training set written as a dataset.
    pub fn new_training_set_path(&self) -> String {
        format!(
            "training_sets/{}/{}",
            self.instance(),
            uuid::Uuid::new_v4().simple()
        )
    }

    /// A stored location: relative to the root for what this service owns, else a URI.
    pub fn resolve(&self, stored: &str) -> Result<Location> {
        if stored.starts_with('/') || stored.contains("://") {
            Location::parse(stored)
        } else {
            Ok(self.0.root.join(stored))
        }
    }

    /// Where an external dataset may come from: under the data location or an allowed prefix.
    pub fn check_external(&self, uri: &str) -> Result<Location> {
        let location = Location::parse(uri)?;
        let allowed = location.is_under(&self.0.root)
            || self
                .0
                .external_prefixes
                .iter()
                .any(|p| location.is_under(p));
        if !allowed {
            return Err(OfflineError::Invalid(format!(
                "{uri:?} is not under DATA_DIR or a prefix listed in EXTERNAL_SOURCE_PREFIXES"
            )));
        }
        Ok(location)
    }

    /// Whether the data location answers: what `/ready` asks.
    pub async fn check_root(&self) -> Result<()> {
        use object_store::ObjectStoreExt;
        let store = self.0.root.store(&self.0.options)?;
        let marker = object_store::path::Path::from("_feature_store");
        match store.head(&marker).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => {
                store
                    .put(
                        &marker,
                        bytes::Bytes::from_static(b"feature-store data\n").into(),
                    )
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Drop a loaded Delta table from the ones kept.
    fn forget_table(&self, location: &Location) {
        if let Ok(mut tables) = self.0.tables.lock() {
            tables.remove(&location.uri());
        }
    }

    /// Delete a directory this service owns (a dropped table) and all it holds. Best effort:
    /// what is not deleted is only unreferenced bytes.
    pub async fn remove_dir(&self, location: &Location) {
        use futures::TryStreamExt;
        use object_store::ObjectStoreExt;
        self.forget_table(location);
        let outcome: Result<()> = async {
            if let Location::Local(path) = location {
                return match tokio::fs::remove_dir_all(path).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(OfflineError::io(path, e))
                    }
                    _ => Ok(()),
                };
            }
            let store = location.store(&self.0.options)?;
            let listed: Vec<_> = store.list(None).try_collect().await?;
            for meta in listed {
                store.delete(&meta.location).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(location = %location.uri(), error = %e, "could not remove data");
        }
    }

    /// Delete one file this service owns (a pruned snapshot). Best effort, as `remove_dir`.
    pub async fn remove_file(&self, location: &Location) {
        use object_store::ObjectStoreExt;
        let outcome: Result<()> = async {
            match location {
                Location::Local(path) => match tokio::fs::remove_file(path).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(OfflineError::io(path, e))
                    }
                    _ => Ok(()),
                },
                Location::S3(url) => {
                    let store = location::s3_bucket_store(url, &self.0.options)?;
                    let key = object_store::path::Path::from(url.path().trim_matches('/'));
                    match store.delete(&key).await {
                        Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
                        Err(e) => Err(e.into()),
                    }
                }
            }
        }
        .await;
        if let Err(e) = outcome {
            tracing::warn!(location = %location.uri(), error = %e, "could not remove data");
        }
    }
}
