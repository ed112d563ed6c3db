//! Rows as both backends return them. JSON columns are kept as text: both databases store
//! them as TEXT and the service parses them only where it needs to.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RawTableRow {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub schema_definition: String,
    pub event_time_column: Option<String>,
    /// Where its rows live: relative to the data location for a managed Delta table, a URI
    /// for an external dataset; `None` for a managed table whose Delta table is not made yet.
    pub storage_uri: Option<String>,
    /// `None`: a managed Delta table; `delta` or `parquet`: an external dataset, read-only.
    pub source_format: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FeatureRow {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub raw_table_id: i64,
    pub computation_logic: String,
    pub entity_key: String,
    /// `polars` or `spark`.
    pub engine: String,
    /// An aggregation feature's declaration (JSON); `None` for a SQL feature.
    pub declaration: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionRow {
    pub id: i64,
    pub feature_id: i64,
    pub version: String,
    pub status: String,
    pub computation_logic: String,
    pub entity_key: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub computed_at: Option<DateTime<Utc>>,
    pub entity_count: Option<i64>,
    pub output_schema: Option<String>,
    pub generation: i64,
    /// The table version the served snapshot read, and when it was committed.
    pub data_version: Option<i64>,
    pub data_as_of: Option<DateTime<Utc>>,
    /// Scheduled refresh: the period (null: manual), when it is next due, when it last found
    /// nothing new, and how many refreshes in a row failed (for back-off).
    pub refresh_every_seconds: Option<i64>,
    pub next_refresh_at: Option<DateTime<Utc>>,
    pub refresh_checked_at: Option<DateTime<Utc>>,
    pub refresh_failures: i32,
    /// The raw table holds batches the served snapshot did not read.
    pub stale: bool,
}
