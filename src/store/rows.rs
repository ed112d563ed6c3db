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
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VectorRow {
    pub entity_id: String,
    pub feature_values: String,
    pub computed_at: DateTime<Utc>,
}
