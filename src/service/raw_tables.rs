use crate::engine::schema::{is_identifier, ColumnType, TableSchema, MAX_IDENTIFIER_LEN};
use crate::engine::{batches, result};
use crate::error::{AppError, Result};
use crate::model::{now, RawTable, RawTableCreate, RawTablePreview};
use crate::store::StoreError;
use crate::store::{IngestSummary, RawTableRow};
use crate::AppState;

const MAX_PREVIEW_ROWS: usize = 1000;

pub fn not_found(id: i64) -> AppError {
    AppError::NotFound(format!("Raw table with ID {id} not found"))
}

/// The table's schema as registered; an empty schema when it was registered without one.
pub fn schema_of(table: &RawTableRow) -> Result<TableSchema> {
    TableSchema::from_definition(&definition_of(table)?).map_err(AppError::internal)
}

/// The stored `schema_definition` (column -> declared type); empty when none was given.
pub fn definition_of(table: &RawTableRow) -> Result<std::collections::BTreeMap<String, String>> {
    let def: Option<std::collections::BTreeMap<String, String>> =
        serde_json::from_str(&table.schema_definition).map_err(AppError::internal)?;
    Ok(def.unwrap_or_default())
}

pub async fn create(state: &AppState, req: RawTableCreate) -> Result<RawTable> {
    if !is_identifier(&req.name) {
        return Err(AppError::BadRequest(format!(
            "Invalid raw table name {:?}: use letters, digits and '_' (starting with a letter or '_'), at most {MAX_IDENTIFIER_LEN} characters",
            req.name
        )));
    }
    let schema = match &req.schema_definition {
        Some(def) => Some(TableSchema::from_definition(def).map_err(AppError::BadRequest)?),
        None => None,
    };
    if let Some(column) = &req.event_time_column {
        let ty = schema
            .as_ref()
            .and_then(|s| s.columns().find(|(n, _, _)| n == column).map(|(_, t, _)| t));
        if !matches!(ty, Some(ColumnType::Date | ColumnType::Datetime)) {
            return Err(AppError::BadRequest(format!(
                "event_time_column '{column}' must be a date or datetime column of schema_definition"
            )));
        }
    }
    let schema_json = serde_json::to_string(&req.schema_definition).map_err(AppError::internal)?;
    let row = state
        .store
        .create_raw_table(
            &req.name,
            req.description.as_deref(),
            &schema_json,
            req.event_time_column.as_deref(),
            now(),
        )
        .await
        .map_err(|e| match e {
            StoreError::Duplicate => {
                AppError::BadRequest(format!("Raw table with name '{}' already exists", req.name))
            }
            e => e.into(),
        })?;
    Ok(row.into())
}

pub async fn list(state: &AppState) -> Result<Vec<RawTable>> {
    let rows = state.store.list_raw_tables().await?;
    let summaries = state.store.ingest_summaries(None).await?;
    Ok(rows
        .into_iter()
        .map(|r| with_summary(r, &summaries))
        .collect())
}

/// A table as shown, with its row count and last ingest.
fn with_summary(row: RawTableRow, summaries: &[IngestSummary]) -> RawTable {
    let summary = summaries.iter().find(|s| s.raw_table_id == row.id);
    let mut table = RawTable::from(row);
    if let Some(s) = summary {
        table.row_count = s.row_count;
        table.last_ingest_at = Some(s.last_ingest_at);
    }
    table
}

pub async fn get_row(state: &AppState, id: i64) -> Result<RawTableRow> {
    state
        .store
        .get_raw_table(id)
        .await?
        .ok_or_else(|| not_found(id))
}

pub async fn get(state: &AppState, id: i64) -> Result<RawTable> {
    let row = get_row(state, id).await?;
    let summaries = state.store.ingest_summaries(Some(id)).await?;
    Ok(with_summary(row, &summaries))
}

/// A raw table can be deleted (with its stored rows) once no feature reads it.
pub async fn delete(state: &AppState, id: i64) -> Result<()> {
    let table = get_row(state, id).await?;
    let in_use = |names: Vec<String>| {
        AppError::BadRequest(format!(
            "Raw table '{}' is used by features: {}; delete them first",
            table.name,
            names.join(", ")
        ))
    };
    let users = state.store.feature_names_of_raw_table(id).await?;
    if !users.is_empty() {
        return Err(in_use(users));
    }
    match state.store.delete_raw_table(id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(not_found(id)),
        Err(StoreError::StillReferenced) => {
            Err(in_use(state.store.feature_names_of_raw_table(id).await?))
        }
        Err(e) => Err(e.into()),
    }
}

/// The first rows stored in a raw table, as JSON objects.
pub async fn preview(state: &AppState, id: i64, limit: Option<usize>) -> Result<RawTablePreview> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PREVIEW_ROWS {
        return Err(AppError::BadRequest(format!(
            "limit must be between 1 and {MAX_PREVIEW_ROWS}"
        )));
    }
    let table = get_row(state, id).await?;
    let schema = schema_of(&table)?;
    let total_rows = state.store.stored_row_count(id).await?;
    let blobs = state.store.load_first_batches(id, limit as i64).await?;
    let rows = super::blocking(move || {
        let frame = batches::decode_all(&blobs, &schema.polars_schema())?;
        result::rows_as_json(&frame.head(Some(limit)))
    })
    .await?
    .map_err(AppError::internal)?;
    Ok(RawTablePreview {
        raw_table_id: id,
        total_rows,
        rows,
    })
}
