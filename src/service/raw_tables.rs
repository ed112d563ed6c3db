use std::collections::BTreeMap;

use super::AppState;
use super::{changed, failures, lookup};
use super::{Result, ServiceError};
use crate::clock::Clock;
use crate::engine::schema::{is_identifier, ColumnType, TableSchema, MAX_IDENTIFIER_LEN};
use crate::model::{RawTableCreate, RawTablePreview, RawTableSource, SourceFormat};
use crate::offline::{ExternalFormat, Location, OfflineStore, Pinned};
use crate::store::{
    DataMark, IngestSummary, InitialVersion, NewRawTable, RawTableRow, Store, StoreError,
};
use crate::worker::{Input, Job, PreviewJob, Task};

const MAX_PREVIEW_ROWS: usize = 1000;

/// The table's schema as registered; an empty schema when it was registered without one.
pub fn schema_of(table: &RawTableRow) -> Result<TableSchema> {
    TableSchema::from_definition(&definition_of(table)?).map_err(ServiceError::fault)
}

/// The stored `schema_definition` (column -> declared type); empty when none was given.
pub fn definition_of(table: &RawTableRow) -> Result<BTreeMap<String, String>> {
    let def: Option<BTreeMap<String, String>> =
        serde_json::from_str(&table.schema_definition).map_err(ServiceError::fault)?;
    Ok(def.unwrap_or_default())
}

/// The external format of a table, or `None` for a table this service stores.
pub fn external_format(table: &RawTableRow) -> Option<ExternalFormat> {
    table
        .source_format
        .as_deref()
        .and_then(ExternalFormat::parse)
}

pub async fn create(
    store: &Store,
    offline: &OfflineStore,
    clock: &Clock,
    req: RawTableCreate,
) -> Result<TableState> {
    if !is_identifier(&req.name) {
        return Err(ServiceError::Invalid(format!(
            "Invalid raw table name {:?}: use letters, digits and '_' (starting with a letter or '_'), at most {MAX_IDENTIFIER_LEN} characters",
            req.name
        )));
    }
    if let Some(def) = &req.schema_definition {
        TableSchema::from_definition(def).map_err(ServiceError::Invalid)?;
    }
    let (definition, external) = match &req.source {
        Some(source) => {
            let (definition, found) =
                inspect_source(offline, source, &req.schema_definition).await?;
            (Some(definition), Some(found))
        }
        None => (req.schema_definition.clone(), None),
    };
    let schema = match &definition {
        Some(def) => Some(TableSchema::from_definition(def).map_err(ServiceError::Invalid)?),
        None => None,
    };
    if let Some(column) = &req.event_time_column {
        let ty = schema
            .as_ref()
            .and_then(|s| s.columns().find(|(n, _, _)| n == column).map(|(_, t, _)| t));
        if !matches!(ty, Some(ColumnType::Date | ColumnType::Datetime)) {
            return Err(ServiceError::Invalid(format!(
                "event_time_column '{column}' must be a date or datetime column of schema_definition"
            )));
        }
    }
    let schema_json = serde_json::to_string(&definition).map_err(ServiceError::fault)?;
    let (storage_uri, source_format, initial_version) = match external {
        Some((location, format, pinned, fingerprint)) => (
            Some(location.uri()),
            Some(format.as_str()),
            Some(InitialVersion {
                version: pinned.version,
                row_count: pinned.total_rows,
                fingerprint,
            }),
        ),
        None => (None, None, None),
    };
    let row = store
        .create_raw_table(
            &NewRawTable {
                name: &req.name,
                description: req.description.as_deref(),
                schema_definition: &schema_json,
                event_time_column: req.event_time_column.as_deref(),
                storage_uri: storage_uri.as_deref(),
                source_format,
                initial_version,
            },
            clock.now(),
        )
        .await
        .map_err(|e| match e {
            StoreError::Duplicate => {
                ServiceError::Invalid(format!("Raw table with name '{}' already exists", req.name))
            }
            e => e.into(),
        })?;
    let row = if row.source_format.is_none() && schema.as_ref().is_some_and(|s| !s.is_empty()) {
        match ensure_managed(store, offline, row.clone()).await {
            Ok(row) => row,
            Err(e) => {
                // A table whose storage could not be made is not registered.
                let _ = store.delete_raw_table(row.id).await;
                return Err(e);
            }
        }
    } else {
        row
    };
    let summaries = store.ingest_summaries(Some(row.id)).await?;
    Ok(with_summary(row, &summaries))
}

/// An external dataset's schema (as given, checked against the dataset, or read from it) and
/// where it stands now.
async fn inspect_source(
    offline: &OfflineStore,
    source: &RawTableSource,
    declared: &Option<BTreeMap<String, String>>,
) -> Result<(
    BTreeMap<String, String>,
    (Location, ExternalFormat, Pinned, Option<String>),
)> {
    let format = match source.format {
        SourceFormat::Delta => ExternalFormat::Delta,
        SourceFormat::Parquet => ExternalFormat::Parquet,
    };
    let location = offline
        .check_external(&source.uri)
        .map_err(|e| ServiceError::Invalid(format!("Invalid source: {e}")))?;
    let found = offline
        .inspect_external(format, &location)
        .await
        .map_err(|e| match e {
            crate::offline::OfflineError::Invalid(reason) => {
                ServiceError::Invalid(format!("Invalid source: {reason}"))
            }
            e => e.into(),
        })?;
    let definition = match declared {
        Some(declared) => {
            for (name, declared_type) in declared {
                let wanted = ColumnType::parse(declared_type);
                let has = found
                    .columns
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| *t);
                match (has, wanted) {
                    (Some(has), Some(wanted)) if has == wanted => {}
                    (Some(has), _) => {
                        return Err(ServiceError::Invalid(format!(
                        "Invalid source: column '{name}' is {} in the dataset, not {declared_type}",
                        has.name()
                    )))
                    }
                    (None, _) => {
                        return Err(ServiceError::Invalid(format!(
                            "Invalid source: the dataset has no column '{name}'{}",
                            if found.skipped.contains(name) {
                                " of a type a raw table can hold"
                            } else {
                                ""
                            }
                        )))
                    }
                }
            }
            declared.clone()
        }
        None => found
            .columns
            .iter()
            .filter(|(name, _)| is_identifier(name))
            .map(|(name, ty)| (name.clone(), ty.name().to_string()))
            .collect(),
    };
    if definition.is_empty() {
        return Err(ServiceError::Invalid(
            "Invalid source: the dataset has no column a raw table can hold".into(),
        ));
    }
    Ok((
        definition,
        (location, format, found.pinned, found.fingerprint),
    ))
}

/// Make the Delta table of a managed raw table if it has none yet; the row as it is after.
pub async fn ensure_managed(
    store: &Store,
    offline: &OfflineStore,
    row: RawTableRow,
) -> Result<RawTableRow> {
    if row.storage_uri.is_some() || row.source_format.is_some() {
        return Ok(row);
    }
    let schema = schema_of(&row)?;
    let relative = offline.new_managed_table_path(row.id);
    let location = offline.root().join(&relative);
    offline.create_managed(&location, &schema).await?;
    // Two replicas making the table at once: the first recorded wins, and both use it (the
    // other's empty table stays behind unused).
    let stored = store
        .claim_storage_uri(row.id, &relative)
        .await?
        .ok_or_else(|| lookup::table_not_found(row.id))?;
    Ok(RawTableRow {
        storage_uri: Some(stored),
        ..row
    })
}

/// Where a table's rows live; `None` for a table registered without a schema (it holds none).
pub async fn location_of(
    store: &Store,
    offline: &OfflineStore,
    table: &RawTableRow,
) -> Result<Option<Location>> {
    let row = if table.storage_uri.is_none() && !schema_of(table)?.is_empty() {
        ensure_managed(store, offline, table.clone()).await?
    } else {
        table.clone()
    };
    match &row.storage_uri {
        Some(stored) => Ok(Some(offline.resolve(stored)?)),
        None => Ok(None),
    }
}

/// Where a table's rows are, without making anything: `None` for a table that has no data
/// location yet (it holds no rows).
fn stored_location(offline: &OfflineStore, table: &RawTableRow) -> Result<Option<Location>> {
    match &table.storage_uri {
        Some(stored) => Ok(Some(offline.resolve(stored)?)),
        None => Ok(None),
    }
}

/// What the database has not recorded of the version just pinned.
enum Unrecorded {
    Nothing,
    /// An external Parquet dataset whose listing changed: a new version with this fingerprint.
    Listing {
        fingerprint: String,
    },
    /// Delta versions from `first` (after the newest one recorded) up to the pinned one.
    Delta {
        first: i64,
    },
}

/// The table version a compute reads now, and its files; `None` when the table holds no rows
/// at all. A read of the data location and the database, with one exception in one place:
/// versions the database had not recorded yet (an ingest whose server stopped between its
/// commit and its record, a commit to an external table, a changed Parquet listing) are
/// recorded by `record_unrecorded` before the pin is returned, so freshness counts them.
pub async fn pin(state: &AppState, table: &RawTableRow) -> Result<Option<(Pinned, DataMark)>> {
    pin_with(state, table, &[]).await
}

/// `pin`, with the number each stream application of `apps` (a stream's lanes) had in the
/// `txn` at the pinned version (`Pinned::txns`): which of a stream's offsets the pinned files
/// hold.
pub async fn pin_with(
    state: &AppState,
    table: &RawTableRow,
    apps: &[String],
) -> Result<Option<(Pinned, DataMark)>> {
    let Some(location) = stored_location(&state.offline, table)? else {
        return Ok(None);
    };
    let newest = state.store.newest_table_version(table.id).await?;
    let (pinned, unrecorded) = match external_format(table) {
        Some(ExternalFormat::Parquet) => {
            let (files, fingerprint) = state.offline.list_parquet(&location).await?;
            let known = newest
                .as_ref()
                .filter(|v| v.fingerprint.as_deref() == Some(&fingerprint));
            let (version, unrecorded) = match known {
                Some(v) => (v.version, Unrecorded::Nothing),
                None => (
                    newest.as_ref().map_or(1, |v| v.version + 1),
                    Unrecorded::Listing { fingerprint },
                ),
            };
            let pinned = Pinned {
                version,
                files,
                total_rows: 0,
                partitioned: false,
                txns: vec![None; apps.len()],
            };
            (pinned, unrecorded)
        }
        _ => {
            let pinned = state
                .offline
                .pin_delta_with(&location, apps)
                .await
                .map_err(|e| match e {
                    crate::offline::OfflineError::Invalid(reason) => ServiceError::Invalid(
                        format!("raw table '{}' cannot be read: {reason}", table.name),
                    ),
                    e => e.into(),
                })?;
            let known = newest.as_ref().map_or(0, |v| v.version);
            let unrecorded = if pinned.version > known {
                let first = if external_format(table).is_some() || newest.is_some() {
                    known + 1
                } else {
                    // Version 0 of a managed table is its creation: no rows.
                    1
                };
                Unrecorded::Delta { first }
            } else {
                Unrecorded::Nothing
            };
            (pinned, unrecorded)
        }
    };
    record_unrecorded(state, table, &pinned, unrecorded).await?;
    if pinned.files.is_empty() {
        return Ok(None);
    }
    let mark = state
        .store
        .table_version(table.id, pinned.version)
        .await?
        .map(|v| DataMark {
            version: v.version,
            ingested_at: v.created_at,
        });
    Ok(mark.map(|mark| (pinned, mark)))
}

/// The one place pinning writes: each version the database has not recorded, the rows it
/// added counted on the newest (what is stored now minus what was counted before).
async fn record_unrecorded(
    state: &AppState,
    table: &RawTableRow,
    pinned: &Pinned,
    unrecorded: Unrecorded,
) -> Result<()> {
    match unrecorded {
        Unrecorded::Nothing => Ok(()),
        Unrecorded::Listing { fingerprint } => {
            let total = {
                let (files, options) = (pinned.files.clone(), state.offline.options().clone());
                super::blocking(move || crate::engine::scan::row_count(&files, &options))
                    .await?
                    .unwrap_or(0)
            };
            record_holding(state, table.id, pinned.version, total, Some(&fingerprint)).await
        }
        Unrecorded::Delta { first } => {
            for version in first..pinned.version {
                record(state, table.id, version, 0, None).await?;
            }
            record_holding(state, table.id, pinned.version, pinned.total_rows, None).await
        }
    }
}

/// Record `version` as the one that brings the table to `total` rows (see
/// `Store::record_table_version_holding`).
async fn record_holding(
    state: &AppState,
    table_id: i64,
    version: i64,
    total: i64,
    fingerprint: Option<&str>,
) -> Result<()> {
    let changes = state
        .store
        .record_table_version_holding(table_id, version, total, fingerprint, state.clock.now())
        .await?;
    changed::announce(state, changes).await;
    Ok(())
}

async fn record(
    state: &AppState,
    table_id: i64,
    version: i64,
    rows: i64,
    fingerprint: Option<&str>,
) -> Result<()> {
    let changes = state
        .store
        .record_table_version(table_id, version, rows, fingerprint, state.clock.now())
        .await?;
    changed::announce(state, changes).await;
    Ok(())
}

pub async fn list(store: &Store) -> Result<Vec<TableState>> {
    let rows = store.list_raw_tables().await?;
    let summaries = store.ingest_summaries(None).await?;
    Ok(rows
        .into_iter()
        .map(|r| with_summary(r, &summaries))
        .collect())
}

/// A table and where its data stands (rows, last ingest, version): what a client is shown.
pub struct TableState {
    pub row: RawTableRow,
    /// None before the first ingest.
    pub summary: Option<IngestSummary>,
}

fn with_summary(row: RawTableRow, summaries: &[IngestSummary]) -> TableState {
    let summary = summaries.iter().find(|s| s.raw_table_id == row.id).cloned();
    TableState { row, summary }
}

pub async fn get(store: &Store, id: i64) -> Result<TableState> {
    let row = lookup::table(store, id).await?;
    let summaries = store.ingest_summaries(Some(id)).await?;
    Ok(with_summary(row, &summaries))
}

/// A raw table can be deleted once no feature reads it. A table this service stores goes with
/// its Delta table; an external dataset is left where it is.
pub async fn delete(store: &Store, offline: &OfflineStore, id: i64) -> Result<()> {
    let table = lookup::table(store, id).await?;
    let in_use = |names: Vec<String>| {
        ServiceError::Invalid(format!(
            "Raw table '{}' is used by features: {}; delete them first",
            table.name,
            names.join(", ")
        ))
    };
    let users = store.feature_names_of_raw_table(id).await?;
    if !users.is_empty() {
        return Err(in_use(users));
    }
    match store.delete_raw_table(id).await {
        Ok(true) => {}
        Ok(false) => return Err(lookup::table_not_found(id)),
        Err(StoreError::StillReferenced) => {
            return Err(in_use(store.feature_names_of_raw_table(id).await?))
        }
        Err(e) => return Err(e.into()),
    }
    if let (None, Some(stored)) = (&table.source_format, &table.storage_uri) {
        if let Ok(location) = offline.resolve(stored) {
            let offline = offline.clone();
            tokio::spawn(async move { offline.remove_dir(&location).await });
        }
    }
    Ok(())
}

/// The first rows of a raw table's newest version, as JSON objects, read by a worker.
pub async fn preview(state: &AppState, id: i64, limit: Option<usize>) -> Result<RawTablePreview> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PREVIEW_ROWS {
        return Err(ServiceError::Invalid(format!(
            "limit must be between 1 and {MAX_PREVIEW_ROWS}"
        )));
    }
    let table = lookup::table(&state.store, id).await?;
    let Some((pinned, _)) = pin(state, &table).await? else {
        return Ok(RawTablePreview {
            raw_table_id: id,
            total_rows: state.store.stored_row_count(id).await?,
            rows: Vec::new(),
        });
    };
    let total_rows = state.store.stored_row_count(id).await?;
    let job = Job {
        task: Task::Preview(PreviewJob {
            input: Input::Files {
                files: pinned.files,
                partitioned: pinned.partitioned,
            },
            schema: definition_of(&table)?,
            limit,
        }),
        storage: state.offline.options().clone(),
    };
    let (_, payload) = match state.compute.run(&job, None).await {
        Ok(answer) => answer,
        // Deleted while its files were read (they go with it): the table is gone, not broken.
        Err(_) if state.store.get_raw_table(id).await?.is_none() => {
            return Err(lookup::table_not_found(id))
        }
        Err(e) => return Err(failures::worker_error(e, "Reading the table failed")),
    };
    let rows =
        serde_json::from_slice(payload.as_deref().unwrap_or(b"[]")).map_err(ServiceError::fault)?;
    Ok(RawTablePreview {
        raw_table_id: id,
        total_rows,
        rows,
    })
}
