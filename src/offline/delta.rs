//! Delta tables through delta-rs: create a managed table, append one Parquet file as one
//! commit, and pin a version (its file list) for a compute.

use std::collections::HashMap;
use std::sync::{Arc, Once};

use bytes::Bytes;
use deltalake::arrow::datatypes::{DataType as ArrowType, Field, Schema as ArrowSchema, TimeUnit};
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, StructType, Transaction};
use deltalake::logstore::{
    default_logstore, logstore_factories, object_store_factories, LogStore, LogStoreFactory,
    ObjectStoreFactory, ObjectStoreRef, StorageConfig,
};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaResult, DeltaTable, DeltaTableBuilder, TableProperty};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use url::Url;

use super::location::{s3_bucket_store, Location, StorageOptions};
use super::{OfflineError, OfflineStore, Result};
use crate::engine::schema::{ColumnType, TableSchema};

/// A commit this service made.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    pub version: i64,
    pub rows: i64,
}

/// One version of a table, as a compute reads it: the data files of that version.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub version: i64,
    /// Absolute paths or `s3://` URIs.
    pub files: Vec<String>,
    /// Rows in the version, as the files' statistics count them (0 where they do not say).
    pub total_rows: i64,
    /// Partition columns, whose values are in the file paths (`col=value/`), not the files.
    pub partitioned: bool,
    /// The number each asked-for application's `txn` had at this version, if any.
    pub txns: Vec<Option<i64>>,
}

/// An application transaction recorded with a commit (Delta's `txn` action): `app`'s
/// `number`, the newest it has committed.
#[derive(Debug, Clone, Copy)]
pub struct Txn<'a> {
    pub app: &'a str,
    pub number: i64,
}

/// What an appended file holds of a stream, as its name says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Holds {
    /// Rows of no stream, or nothing the name need say.
    Rows,
    /// The offsets `(after, upto]` of a stream of one lane (`stream_range`).
    Offsets { after: i64, upto: i64 },
    /// Rows of several lanes of a stream: the commit's `txn`s say up to which offsets
    /// (`holds_lanes`).
    Lanes,
}

/// The suffix of a file holding several lanes of a stream.
const LANES: &str = "-lanes.zstd.parquet";

/// Whether a file holds rows of several lanes of a stream (`Holds::Lanes`).
pub fn holds_lanes(path: &str) -> bool {
    path.ends_with(LANES)
}

/// The offsets `(after, upto]` a stream's file holds, read from its name (`None` for any
/// other file).
pub fn stream_range(path: &str) -> Option<(i64, i64)> {
    let name = path.rsplit('/').next()?.strip_suffix(".zstd.parquet")?;
    let (rest, upto) = name.rsplit_once('-')?;
    let (_, after) = rest.rsplit_once("-o")?;
    Some((after.parse().ok()?, upto.parse().ok()?))
}

/// Commits between checkpoints: a table is loaded from its newest checkpoint plus the commits
/// after it, so this bounds what a load reads.
const CHECKPOINT_INTERVAL: &str = "50";

#[derive(Debug, Default)]
struct S3Factory;

impl ObjectStoreFactory for S3Factory {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, ObjectPath)> {
        let options: StorageOptions = config
            .raw
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let store = s3_bucket_store(url, &options)
            .map_err(|e| deltalake::DeltaTableError::Generic(e.to_string()))?;
        let path = ObjectPath::from_url_path(url.path())
            .map_err(|e| deltalake::DeltaTableError::Generic(e.to_string()))?;
        Ok((store, path))
    }
}

impl LogStoreFactory for S3Factory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        // The default log store commits with a conditional PUT (If-None-Match: *), which S3
        // honours: no lock table needed.
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// deltalake knows local files by itself; `s3://` goes through object_store's S3 client
/// (its `s3` feature would pull in the AWS SDK for a DynamoDB lock we do not need).
pub(super) fn register_s3() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let factory = Arc::new(S3Factory);
        for scheme in ["s3://", "s3a://"] {
            if let Ok(url) = Url::parse(scheme) {
                let objects: Arc<dyn ObjectStoreFactory> = factory.clone();
                let logs: Arc<dyn LogStoreFactory> = factory.clone();
                object_store_factories().insert(url.clone(), objects);
                logstore_factories().insert(url, logs);
            }
        }
    });
}

/// The Delta schema of a raw table: datetimes are UTC instants (Delta `timestamp`).
pub(super) fn arrow_schema(schema: &TableSchema) -> ArrowSchema {
    ArrowSchema::new(
        schema
            .columns()
            .map(|(name, ty, _)| {
                let dtype = match ty {
                    ColumnType::String => ArrowType::Utf8,
                    ColumnType::Integer => ArrowType::Int64,
                    ColumnType::Float => ArrowType::Float64,
                    ColumnType::Boolean => ArrowType::Boolean,
                    ColumnType::Date => ArrowType::Date32,
                    ColumnType::Datetime => {
                        ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
                    }
                };
                Field::new(name, dtype, true)
            })
            .collect::<Vec<_>>(),
    )
}

impl OfflineStore {
    fn storage_map(&self) -> HashMap<String, String> {
        self.options()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A Delta table at `location`, loaded at its newest version. Loaded tables are kept, so a
    /// later call reads only the commits made since.
    pub(super) async fn delta_table(
        &self,
        location: &Location,
    ) -> Result<Arc<tokio::sync::Mutex<DeltaTable>>> {
        let key = location.uri();
        let kept = self.0.tables.lock().ok().and_then(|t| t.get(&key).cloned());
        if let Some(table) = kept {
            table.lock().await.update_state().await?;
            return Ok(table);
        }
        let table = DeltaTableBuilder::from_url(location.url()?)?
            .with_storage_options(self.storage_map())
            .load()
            .await?;
        let table = Arc::new(tokio::sync::Mutex::new(table));
        if let Ok(mut tables) = self.0.tables.lock() {
            tables.insert(key, table.clone());
        }
        Ok(table)
    }

    /// Whether a Delta table exists at `location` (its first commit is there).
    pub async fn delta_exists(&self, location: &Location) -> Result<bool> {
        let store = location.store(self.options())?;
        match store
            .head(&ObjectPath::from("_delta_log/00000000000000000000.json"))
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Create the Delta table of a managed raw table; nothing happens if it exists.
    pub async fn create_managed(&self, location: &Location, schema: &TableSchema) -> Result<()> {
        self.create_delta(location, &arrow_schema(schema)).await
    }

    /// Create the Delta table of a stream's rejected messages: where in the source each one
    /// was (`partition`, `offset`), why it was set aside, its bytes as they came, and when.
    pub async fn create_rejected(&self, location: &Location) -> Result<()> {
        let utc = ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = ArrowSchema::new(vec![
            Field::new("partition", ArrowType::Utf8, false),
            Field::new("offset", ArrowType::Int64, false),
            Field::new("reason", ArrowType::Utf8, false),
            Field::new("payload", ArrowType::Binary, false),
            Field::new("received_at", utc, false),
        ]);
        self.create_delta(location, &schema).await
    }

    async fn create_delta(&self, location: &Location, schema: &ArrowSchema) -> Result<()> {
        if self.delta_exists(location).await? {
            return Ok(());
        }
        let delta_schema =
            StructType::try_from_arrow(schema).map_err(|e| OfflineError::Invalid(e.to_string()))?;
        CreateBuilder::new()
            .with_location(location.uri())
            .with_storage_options(self.storage_map())
            .with_columns(delta_schema.fields().cloned())
            .with_configuration_property(
                TableProperty::CheckpointInterval,
                Some(CHECKPOINT_INTERVAL),
            )
            .with_save_mode(SaveMode::Ignore)
            .await?;
        Ok(())
    }

    /// Upload one Parquet file into the table and commit it, alone, as the next version.
    /// `before_commit` runs between the upload and the commit (the crash tests' failpoint):
    /// until the commit, the file is no part of the table. `txn` marks the commit with an
    /// application transaction (app id, number) for each of `txns` (a stream's lanes; a
    /// retried move's one), so a retry can tell it already landed. `holds`: what the file's
    /// name says it holds.
    pub async fn append(
        &self,
        location: &Location,
        parquet: Bytes,
        rows: i64,
        txns: &[Txn<'_>],
        holds: Holds,
        before_commit: impl std::future::Future<Output = ()>,
    ) -> Result<Appended> {
        let table = self.delta_table(location).await?;
        let mut table = table.lock().await;
        // Named by time first, so a listing in name order is in ingest order; a stream's file
        // says which offsets it holds (`stream_range`), or that it holds several lanes.
        let suffix = match holds {
            Holds::Rows => ".zstd.parquet".to_string(),
            Holds::Offsets { after, upto } => format!("-o{after}-{upto}.zstd.parquet"),
            Holds::Lanes => LANES.to_string(),
        };
        let name = format!(
            "part-{:020}-{}{suffix}",
            chrono::Utc::now().timestamp_micros(),
            uuid::Uuid::new_v4().simple()
        );
        let size = parquet.len() as i64;
        table
            .object_store()
            .put(&ObjectPath::from(name.as_str()), parquet.into())
            .await?;
        before_commit.await;
        let add = Add {
            path: name,
            size,
            partition_values: HashMap::new(),
            modification_time: chrono::Utc::now().timestamp_millis(),
            data_change: true,
            stats: Some(serde_json::json!({ "numRecords": rows }).to_string()),
            ..Default::default()
        };
        let mut properties = CommitProperties::default().with_cleanup_expired_logs(Some(false));
        for txn in txns {
            properties =
                properties.with_application_transaction(Transaction::new(txn.app, txn.number));
        }
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        let finalized = CommitBuilder::from(properties)
            .with_actions(vec![Action::Add(add)])
            .build(Some(table.snapshot()?), table.log_store(), operation)
            .await?;
        let version = finalized.version() as i64;
        table.state = Some(finalized.snapshot());
        Ok(Appended { version, rows })
    }

    /// The newest number a `txn` of `app` committed, if any.
    pub async fn txn_version(&self, location: &Location, app: &str) -> Result<Option<i64>> {
        let table = self.delta_table(location).await?;
        let table = table.lock().await;
        Ok(table
            .snapshot()?
            .transaction_version(table.log_store().as_ref(), app)
            .await?)
    }

    /// The newest version of a Delta table and its files. Refuses what plain Parquet scans
    /// would read wrongly: column mapping and deletion vectors.
    pub async fn pin_delta(&self, location: &Location) -> Result<Pinned> {
        self.pin_delta_with(location, &[]).await
    }

    /// `pin_delta`, with the number each of `apps`' `txn` had at that version (in
    /// `Pinned::txns`).
    pub async fn pin_delta_with(&self, location: &Location, apps: &[String]) -> Result<Pinned> {
        let table = self.delta_table(location).await?;
        let table = table.lock().await;
        let snapshot = table.snapshot()?;
        let mut txns = Vec::with_capacity(apps.len());
        for app in apps {
            txns.push(
                snapshot
                    .transaction_version(table.log_store().as_ref(), app)
                    .await?,
            );
        }
        let config = snapshot.metadata().configuration();
        if config
            .get("delta.columnMapping.mode")
            .is_some_and(|m| m != "none")
        {
            return Err(OfflineError::Invalid(
                "the Delta table uses column mapping, which is not supported".into(),
            ));
        }
        let mut total_rows = 0i64;
        let mut files = Vec::new();
        for file in snapshot.log_data().iter() {
            if file.deletion_vector_descriptor().is_some() {
                return Err(OfflineError::Invalid(
                    "the Delta table has deletion vectors, which are not supported".into(),
                ));
            }
            total_rows += file.num_records().unwrap_or(0) as i64;
            files.push((file.modification_time(), file.object_store_path()));
        }
        // In commit order, as near as the log says: scans and previews read rows as ingested.
        files.sort();
        let partitioned = !snapshot.metadata().partition_columns().is_empty();
        let log = table.log_store();
        let files = files
            .into_iter()
            .map(|(_, path)| log.to_uri(&path))
            .collect();
        Ok(Pinned {
            version: snapshot.version() as i64,
            files,
            total_rows,
            partitioned,
            txns,
        })
    }

    /// The schema of a Delta table at its newest version.
    pub async fn delta_schema(
        &self,
        location: &Location,
    ) -> Result<deltalake::arrow::datatypes::SchemaRef> {
        let table = self.delta_table(location).await?;
        let table = table.lock().await;
        Ok(table.snapshot()?.snapshot().arrow_schema())
    }
}
