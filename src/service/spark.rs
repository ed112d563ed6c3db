//! What the services need of Spark: the configured cluster, whether a table can be computed
//! there, and a run's result directory in the data location.

use std::path::{Path, PathBuf};

use super::{Result, ServiceError};
use crate::offline::{Location, OfflineStore};
use crate::spark::Spark;
use crate::store::RawTableRow;

/// The cluster, or `Invalid` saying that none is configured.
pub fn cluster(spark: &Option<Spark>) -> Result<&Spark> {
    spark.as_ref().ok_or_else(|| {
        ServiceError::Invalid(
            "The engine 'spark' needs SPARK_CONNECT_URL (sc://host:port) to be set on the server"
                .into(),
        )
    })
}

/// Spark reads our files by path and writes its result into the data directory: both must
/// be on a filesystem it shares (it has no S3 connector here), and partitioned external
/// datasets are left to polars.
pub fn usable_for(offline: &OfflineStore, table: &RawTableRow) -> Result<()> {
    if !matches!(offline.root(), Location::Local(_)) {
        return Err(ServiceError::Invalid(
            "The engine 'spark' needs DATA_DIR on a local or shared filesystem, not object storage"
                .into(),
        ));
    }
    if table
        .storage_uri
        .as_deref()
        .is_some_and(|uri| uri.contains("://") && !uri.starts_with("file://"))
    {
        return Err(ServiceError::Invalid(format!(
            "The engine 'spark' reads local files only; raw table '{}' is in object storage",
            table.name
        )));
    }
    Ok(())
}

/// A new directory for one Spark result, under `DATA_DIR/spark/`; it is removed (with what
/// Spark wrote into it) when this is dropped, once the worker has read it.
pub struct ResultDir(PathBuf);

impl ResultDir {
    pub fn new(offline: &OfflineStore) -> Result<ResultDir> {
        let Location::Local(root) = offline.root() else {
            return Err(ServiceError::fault(
                "a Spark result outside a local DATA_DIR",
            ));
        };
        let dir = root
            .join("spark")
            .join(uuid::Uuid::new_v4().simple().to_string());
        Ok(ResultDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ResultDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), error = %e, "could not remove a Spark result");
            }
        }
    }
}
