use bytes::Bytes;
use futures::{Stream, StreamExt};
use polars::prelude::DataFrame;
use serde_json::{Map, Value};

use super::AppState;
use super::{Result, ServiceError};
use crate::engine::json_rows::{self, JsonRowsError};
use crate::engine::schema::TableSchema;
use crate::engine::{formats, ndjson::NdjsonReader};
use crate::model::IngestResponse;
use crate::offline;
use crate::store::RawTableRow;
use crate::store::{Changed, Store, StoreError};

use super::lookup;
use super::{blocking, changed, raw_tables};

/// A bulk upload in one of the accepted formats.
pub enum Upload {
    Rows(Vec<Map<String, Value>>),
    /// A JSON array of row objects, as sent: read straight into columns.
    JsonArray(Bytes),
    Csv(Bytes),
    Parquet(Bytes),
}

fn invalid(reason: impl std::fmt::Display) -> ServiceError {
    ServiceError::Invalid(format!("Invalid data: {reason}"))
}

/// The table and its schema, refusing tables registered without one and external datasets.
pub(super) async fn target(store: &Store, raw_table_id: i64) -> Result<(RawTableRow, TableSchema)> {
    let table = lookup::table(store, raw_table_id).await?;
    if let Some(format) = raw_tables::external_format(&table) {
        return Err(ServiceError::Invalid(format!(
            "Raw table '{}' reads an external {} dataset, read-only; write to it where it lives",
            table.name,
            format.as_str()
        )));
    }
    let schema = raw_tables::schema_of(&table)?;
    if schema.is_empty() {
        return Err(invalid(format!(
            "raw table '{}' has no schema_definition; register it with one to ingest rows",
            table.name
        )));
    }
    Ok((table, schema))
}

/// Validate rows against the table's schema and append them as one stored batch.
/// A batch with any invalid row stores nothing.
pub async fn ingest(
    state: &AppState,
    raw_table_id: i64,
    rows: Vec<Map<String, Value>>,
) -> Result<IngestResponse> {
    ingest_upload(state, raw_table_id, Upload::Rows(rows)).await
}

pub async fn ingest_upload(
    state: &AppState,
    raw_table_id: i64,
    upload: Upload,
) -> Result<IngestResponse> {
    let (table, schema) = match target(&state.store, raw_table_id).await {
        Ok(target) => target,
        // A malformed body is a 422 whatever table it names, as when bodies were parsed whole
        // before the table was looked at.
        Err(e) => match &upload {
            Upload::JsonArray(body) => {
                let body = body.clone();
                match blocking(move || json_rows::malformed(&body)).await? {
                    Some(why) => return Err(ServiceError::Unreadable(why)),
                    None => return Err(e),
                }
            }
            _ => return Err(e),
        },
    };
    let stored = blocking(move || read_upload(&schema, upload)).await??;
    store(state, &table, stored).await
}

/// The upload as what to commit: `Invalid` for rows that do not fit the schema, `Unreadable`
/// for a JSON body that is not an array of objects.
fn read_upload(schema: &TableSchema, upload: Upload) -> Result<Stored> {
    let frame = match upload {
        Upload::Rows(rows) => schema.frame_from_rows(&rows),
        Upload::JsonArray(body) => match json_rows::frame_from_json_array(schema, &body) {
            Ok(frame) => Ok(frame),
            Err(JsonRowsError::Invalid(why)) => Err(why),
            Err(JsonRowsError::Unreadable(why)) => return Err(ServiceError::Unreadable(why)),
        },
        Upload::Csv(body) => formats::frame_from_csv(schema, body.into()),
        Upload::Parquet(body) => match formats::parquet_as_stored(schema, &body) {
            Some(rows) => {
                return Ok(Stored::AsItCame {
                    parquet: body,
                    rows,
                })
            }
            None => formats::frame_from_parquet(schema, body.into()),
        },
    };
    frame.map(Stored::Frame).map_err(invalid)
}

/// What an ingest commits: rows to write as a Parquet file, or a Parquet file that already
/// is what the table stores.
pub(super) enum Stored {
    Frame(DataFrame),
    AsItCame { parquet: Bytes, rows: usize },
}

/// NDJSON, parsed as it arrives; `max_bytes` bounds the body (413 beyond it).
pub async fn ingest_ndjson<S, E>(
    state: &AppState,
    raw_table_id: i64,
    mut body: S,
    max_bytes: usize,
) -> Result<IngestResponse>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (table, schema) = target(&state.store, raw_table_id).await?;
    let mut reader = NdjsonReader::new(&schema);
    let mut received = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ServiceError::Unreadable(e.to_string()))?;
        received += chunk.len();
        if received > max_bytes {
            return Err(ServiceError::TooLarge);
        }
        reader.feed(&chunk).map_err(invalid)?;
    }
    let frame = reader.finish().map_err(invalid)?;
    store(state, &table, Stored::Frame(frame)).await
}

/// Commit the rows as one Parquet file, one Delta version: until the commit, nothing of the
/// upload is part of the table.
async fn store(state: &AppState, table: &RawTableRow, stored: Stored) -> Result<IngestResponse> {
    let count = commit(state, table, stored, Vec::new()).await?;
    state.metrics.ingested_rows.inc_by(count as u64);
    Ok(IngestResponse {
        message: format!(
            "Successfully ingested {count} records into raw table '{}'",
            table.name
        ),
        records_ingested: count,
    })
}

/// A stream's commit, for one of its lanes: the lane's application id, and the offsets
/// `(after, upto]` its rows hold. `after` is given for a stream of one lane, whose file is
/// named with its offsets; a stream of several lanes' file says only that (`Holds`).
pub(super) struct StreamTxn {
    pub app: String,
    pub after: Option<i64>,
    pub upto: i64,
}

/// Commit rows as one Parquet file, one Delta version, record the version and announce it;
/// the number of rows. `txns` (a stream's lanes: application ids and the offsets the rows
/// hold; none for an ingest) go into the same Delta commit, so what was committed and where to
/// resume can never disagree.
pub(super) async fn commit(
    state: &AppState,
    table: &RawTableRow,
    stored: Stored,
    txns: Vec<StreamTxn>,
) -> Result<usize> {
    let location = raw_tables::location_of(&state.store, &state.offline, table)
        .await?
        .ok_or_else(|| ServiceError::fault("a table with a schema has no storage"))?;
    let (parquet, count) = match stored {
        Stored::AsItCame { parquet, rows } => (parquet, rows),
        Stored::Frame(mut frame) => {
            let count = frame.height();
            let parquet = blocking(move || offline::write_parquet(&mut frame))
                .await?
                .map_err(ServiceError::fault)?;
            (Bytes::from(parquet), count)
        }
    };
    let holds = match txns.as_slice() {
        [] => offline::Holds::Rows,
        [StreamTxn {
            after: Some(after),
            upto,
            ..
        }] => offline::Holds::Offsets {
            after: *after,
            upto: *upto,
        },
        _ => offline::Holds::Lanes,
    };
    // The versions over this table turn stale: tell serving, even if the client has gone.
    let (state2, table_id, row) = (state.clone(), table.id, table.clone());
    super::detached(async move {
        let appended = state2
            .offline
            .append(
                &location,
                parquet,
                count as i64,
                &txns
                    .iter()
                    .map(|t| offline::Txn {
                        app: &t.app,
                        number: t.upto,
                    })
                    .collect::<Vec<_>>(),
                holds,
                crate::failpoint::reach(crate::failpoint::INGEST_BEFORE_COMMIT),
            )
            .await?;
        // A version before this one that is not recorded yet (its ingest committed but found
        // the database busy, below, or has not recorded it yet): recording this one alone would
        // leave that one's rows out of the table's count for good, so pinning records every
        // missing version, the rows they added counted on the newest.
        let gap = match state2.store.newest_table_version(table_id).await {
            Ok(newest) => newest.map_or(0, |v| v.version) + 1 < appended.version,
            Err(_) => false,
        };
        let recorded = if gap {
            raw_tables::pin(&state2, &row)
                .await
                .map(|_| Changed::default())
        } else {
            state2
                .store
                .record_table_version(
                    table_id,
                    appended.version,
                    appended.rows,
                    None,
                    state2.clock.now(),
                )
                .await
                .map_err(|e| match e {
                    StoreError::StillReferenced => lookup::table_not_found(table_id),
                    e => e.into(),
                })
        };
        match recorded {
            Ok(changes) => changed::announce(&state2, changes).await,
            Err(ServiceError::NotFound(gone)) => return Err(ServiceError::NotFound(gone)),
            // The rows are committed to the Delta table and every read of it sees them: a 503
            // here ("changed nothing") would be false, and a client that retried would store
            // them twice. The next compute or preview over the table records the version
            // (pinning records every Delta version newer than the newest recorded one).
            Err(error) => tracing::warn!(
                table_id,
                version = appended.version,
                error = %error,
                "ingested rows are committed, but their table version is not recorded yet"
            ),
        }
        Ok(())
    })
    .await?;
    Ok(count)
}
