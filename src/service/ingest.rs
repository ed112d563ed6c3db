use serde_json::{Map, Value};

use crate::engine::batches;
use crate::error::{AppError, Result};
use crate::model::{now, IngestResponse};
use crate::AppState;

use super::{blocking, raw_tables};

/// Validate rows against the table's schema and append them as one stored batch.
/// A batch with any invalid row stores nothing.
pub async fn ingest(
    state: &AppState,
    raw_table_id: i64,
    rows: Vec<Map<String, Value>>,
) -> Result<IngestResponse> {
    let table = raw_tables::get_row(state, raw_table_id).await?;
    let schema = raw_tables::schema_of(&table)?;
    if schema.is_empty() {
        return Err(AppError::BadRequest(format!(
            "Invalid data: raw table '{}' has no schema_definition; register it with one to ingest rows",
            table.name
        )));
    }
    let count = rows.len();
    let blob = blocking(move || {
        let mut frame = schema.frame_from_rows(&rows)?;
        batches::encode(&mut frame).map_err(|e| format!("could not encode rows: {e}"))
    })
    .await?
    .map_err(|e| AppError::BadRequest(format!("Invalid data: {e}")))?;
    state
        .store
        .append_batch(raw_table_id, count as i64, &blob, now())
        .await
        .map_err(|e| match e {
            AppError::StillReferenced => raw_tables::not_found(raw_table_id),
            e => e,
        })?;
    Ok(IngestResponse {
        message: format!(
            "Successfully ingested {count} records into raw table '{}'",
            table.name
        ),
        records_ingested: count,
    })
}
