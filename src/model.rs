//! Request and response bodies: the original service's wire format, plus the fields and
//! endpoints this port adds. Timestamps are ISO 8601 UTC with microseconds.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::keys::EntityKey;
use crate::times::format_ts;

fn ts<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ts(t))
}

fn opt_ts<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ts(t, s),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "healthy")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: &'static str,
    #[schema(example = "sqlite")]
    pub database: &'static str,
    #[schema(example = "memory")]
    pub cache: &'static str,
}

// ---- raw tables ----

#[derive(Debug, Deserialize, ToSchema)]
pub struct RawTableCreate {
    /// A plain SQL identifier: a letter or `_`, then letters, digits or `_`.
    #[schema(
        example = "user_transactions",
        pattern = "^[A-Za-z_][A-Za-z0-9_]*$",
        min_length = 1,
        max_length = 63
    )]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Column name -> type: string, integer (int), float (double), boolean (bool), date,
    /// datetime (timestamp). (`api::docs` gives it its exact shape, from the engine's names.)
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = json!({"user_id": "string", "transaction_amount": "float", "transaction_date": "string"}))]
    pub schema_definition: Option<BTreeMap<String, String>>,
    /// The column that says when each row happened: a `date` or `datetime` column of the
    /// schema. Needed for `as_of` computes and backfills.
    #[serde(default)]
    pub event_time_column: Option<String>,
    /// Register an existing dataset, read-only, instead of a table this service stores:
    /// its schema is read from it (and checked against `schema_definition` when one is given).
    #[serde(default)]
    pub source: Option<RawTableSource>,
}

/// An external dataset: a Delta table, or a directory of Parquet files, under `DATA_DIR` or a
/// prefix listed in `EXTERNAL_SOURCE_PREFIXES` (a path or an `s3://` URI).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RawTableSource {
    #[schema(example = "delta")]
    pub format: SourceFormat,
    #[schema(example = "s3://lake/events", min_length = 1, max_length = 2048)]
    pub uri: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Delta,
    Parquet,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RawTable {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub schema_definition: Option<BTreeMap<String, String>>,
    pub event_time_column: Option<String>,
    #[serde(serialize_with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
    /// Rows stored in the table.
    pub row_count: i64,
    /// When rows were last ingested (null: never).
    #[serde(serialize_with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_ingest_at: Option<DateTime<Utc>>,
    /// The table's newest version (a Delta version; for a Parquet dataset, a count of the
    /// listings seen); null before the first ingest.
    pub version: Option<i64>,
    /// The external dataset it reads, read-only; null for a table this service stores (a Delta
    /// table under DATA_DIR).
    pub source: Option<RawTableSource>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// How many rows to return (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RawTablePreview {
    pub raw_table_id: i64,
    /// Rows stored in the table in all.
    pub total_rows: i64,
    /// The first `limit` rows, in ingest order.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<Map<String, Value>>,
}

// ---- features ----

#[derive(Debug, Deserialize, ToSchema)]
pub struct FeatureCreate {
    #[schema(
        example = "avg_transaction_amount",
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 200
    )]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub raw_table_id: i64,
    /// One SELECT over the table `data`, returning one row per entity. A feature has this or
    /// `aggregations`, not both.
    #[serde(default)]
    #[schema(
        example = "SELECT user_id, AVG(transaction_amount) as avg_amount FROM data GROUP BY user_id",
        max_length = 65536
    )]
    pub computation_logic: Option<String>,
    /// Windowed aggregations over the raw table's events, by its `event_time_column`: each
    /// value is exact at the instant it is asked for (a training row's timestamp). Output
    /// columns are `{column}_{function}_{window}` (`amount_sum_7d`; a percentile is
    /// `amount_p95_30d`).
    #[serde(default)]
    pub aggregations: Option<Vec<Aggregation>>,
    /// With `aggregations`: a SQL predicate over the table's columns; only the events it
    /// keeps are aggregated (`status = 'ok'`).
    #[serde(default)]
    #[schema(example = "status = 'ok'", max_length = 65536)]
    pub filter: Option<String>,
    /// The output column that names the entity, or a list of 1 to 4 that name it together
    /// (`["user_id", "merchant_id"]`). (Documented as either by `api::docs`.)
    #[schema(
        value_type = String,
        example = "user_id",
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 200
    )]
    pub entity_key: EntityKey,
    /// Where its versions are computed: `polars` (the compute workers, the default) or
    /// `spark` (the cluster at `SPARK_CONNECT_URL`). Fixed for the feature's life.
    #[serde(default)]
    pub engine: Engine,
}

/// One function of one column over one or more windows. A window at instant t holds the
/// events with `t - window < event_time <= t`; null values are skipped; on a window without
/// values `count` and `count_distinct` are 0 and the others null.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Aggregation {
    /// A column of the raw table (numeric for all but count, count_distinct, first, last).
    #[schema(example = "amount")]
    pub column: String,
    /// count, sum, mean, min, max, stddev (sample), first, last (by event time),
    /// count_distinct, percentile (with q; linear interpolation, as numpy's default).
    #[schema(example = "sum")]
    pub function: String,
    /// The percentile's fraction, in (0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<f64>,
    /// Window lengths: a positive integer and s, m, h, d or w; at most 366 days.
    #[schema(example = json!(["1h", "1d", "7d", "30d"]))]
    pub windows: Vec<String>,
}

/// How an aggregation feature is stored: what was declared.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Declaration {
    pub aggregations: Vec<Aggregation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// What runs a feature's SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Polars,
    Spark,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Polars => "polars",
            Engine::Spark => "spark",
        }
    }

    /// As stored; anything unknown reads as polars (the column's check allows no other).
    pub fn from_stored(stored: &str) -> Engine {
        match stored {
            "spark" => Engine::Spark,
            _ => Engine::Polars,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Feature {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub raw_table_id: i64,
    /// The SQL; empty for an aggregation feature.
    pub computation_logic: String,
    /// A column name, or a list of the columns that name the entity together.
    #[schema(value_type = String)]
    pub entity_key: EntityKey,
    pub engine: Engine,
    /// An aggregation feature's declaration; absent for a SQL feature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregations: Option<Vec<Aggregation>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(serialize_with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

// ---- versions ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VersionStatus {
    #[default]
    Active,
    Deprecated,
    Archived,
}

impl VersionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Active => "active",
            VersionStatus::Deprecated => "deprecated",
            VersionStatus::Archived => "archived",
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VersionCreate {
    #[schema(
        example = "v1",
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 100
    )]
    pub version: String,
    #[serde(default)]
    pub status: VersionStatus,
    /// Accepted for compatibility with the original; must equal the path's id when given.
    #[serde(default)]
    pub feature_id: Option<i64>,
    /// Recompute from stored rows every this many seconds when the raw table has rows the
    /// served snapshot did not read; null or absent: only when asked.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31_536_000)]
    pub refresh_every_seconds: Option<i64>,
}

/// A change to a version: its status, its refresh period, or both. Read from a JSON object
/// only: serde would otherwise take `[null, null]` as a struct, field by field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(try_from = "Map<String, Value>")]
pub struct VersionUpdate {
    pub status: Option<VersionStatus>,
    /// Seconds between scheduled refreshes; null: back to manual; absent: unchanged.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 31_536_000)]
    pub refresh_every_seconds: Option<Option<i64>>,
}

impl TryFrom<Map<String, Value>> for VersionUpdate {
    type Error = String;

    fn try_from(mut body: Map<String, Value>) -> Result<Self, String> {
        let status =
            match body.remove("status") {
                None => None,
                Some(v) => Some(serde_json::from_value(v).map_err(|_| {
                    "status must be one of active, deprecated, archived".to_string()
                })?),
            };
        let refresh_every_seconds = match body.remove("refresh_every_seconds") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(v) => Some(Some(v.as_i64().ok_or(
                "refresh_every_seconds must be an integer number of seconds, or null",
            )?)),
        };
        Ok(VersionUpdate {
            status,
            refresh_every_seconds,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureVersion {
    pub id: i64,
    pub feature_id: i64,
    pub version: String,
    #[schema(value_type = VersionStatus)]
    pub status: String,
    /// The feature's SQL as it was when this version was created.
    pub computation_logic: String,
    /// A column name, or a list of the columns that name the entity together.
    #[schema(value_type = String)]
    pub entity_key: EntityKey,
    #[serde(serialize_with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub computed_at: Option<DateTime<Utc>>,
    pub entity_count: Option<i64>,
    /// Output column -> type, recorded by the last compute.
    pub output_schema: Option<BTreeMap<String, String>>,
    /// Ingest time of the newest stored batch the served snapshot read; null when it read
    /// none (its rows came with the request) or nothing was computed.
    #[serde(serialize_with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub data_as_of: Option<DateTime<Utc>>,
    /// The raw table holds rows the served snapshot did not read.
    pub stale: bool,
    /// Seconds between scheduled refreshes; null: manual.
    pub refresh_every_seconds: Option<i64>,
    /// When the scheduler next looks for new rows (null: manual).
    #[serde(serialize_with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_refresh_at: Option<DateTime<Utc>>,
    /// When a scheduled refresh last succeeded or found nothing new.
    #[serde(serialize_with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub refresh_checked_at: Option<DateTime<Utc>>,
    /// Scheduled refreshes that failed in a row (each doubles the wait, up to an hour).
    pub refresh_failures: i32,
}

// ---- compute ----

#[derive(Debug, Deserialize, ToSchema)]
pub struct ComputeRequest {
    #[serde(default)]
    #[schema(
        example = "v1",
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 100
    )]
    pub version: Option<String>,
    /// Rows to compute over; absent or empty means the rows ingested into the raw table.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub raw_data: Option<Vec<Map<String, Value>>>,
    /// Compute over the rows whose event time is at or before this instant (RFC 3339); the
    /// snapshot is valid from it. Needs the raw table's `event_time_column`.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub as_of: Option<DateTime<Utc>>,
}

/// Documents compute's two body forms; the handler reads the body itself.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ComputeBody {
    Request(ComputeRequest),
    /// Rows to compute over, with the version in `?version=`.
    #[schema(value_type = Vec<Object>)]
    Rows(Vec<Map<String, Value>>),
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ComputeQuery {
    /// The version to compute (the original README's form); a body `version` takes precedence.
    #[param(
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 100
    )]
    pub version: Option<String>,
    /// As the body's `as_of`; the body's takes precedence.
    #[param(value_type = Option<String>, format = DateTime)]
    pub as_of: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ComputeResponse {
    pub feature_version_id: i64,
    pub vectors_created: usize,
    pub entities_processed: usize,
    /// The snapshot this compute made.
    pub snapshot_id: i64,
    /// When it counts from: the publish time, or `as_of`.
    #[schema(format = DateTime)]
    pub valid_from: String,
}

// ---- history ----

/// Documents the JSON form of a training-set request; the handler reads the body itself.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TrainingSetRequest {
    /// As in batch serving: `name`, `name@version` or a version id.
    #[schema(example = json!(["total"]), min_items = 1, max_items = 100)]
    features: Vec<FeatureRef>,
    /// Each with `entity_id` (or, instead, each feature's key columns by name: `user_id`,
    /// `merchant_id`), `timestamp` (RFC 3339) and any other columns (a label, say), which
    /// come back as sent. Each feature joins on its own key columns.
    #[schema(value_type = Vec<Object>, min_items = 1, example = json!([{"entity_id": "u1", "timestamp": "2024-01-02T12:00:00Z", "label": 1}]))]
    rows: Vec<Map<String, Value>>,
    #[schema(minimum = 0)]
    max_age_seconds: Option<i64>,
}

/// A training set whose rows are a raw table's, written as Parquet files in the data location.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingDatasetRequest {
    /// As in batch serving: `name`, `name@version` or a version id.
    #[schema(example = json!(["user_spend"]), min_items = 1, max_items = 100)]
    pub features: Vec<FeatureRef>,
    pub labels: LabelsRequest,
    #[schema(minimum = 0)]
    pub max_age_seconds: Option<i64>,
}

/// The raw table whose rows are the labelled rows: `entity_id` (or each feature's key columns
/// by name), a time column, and any other columns, which the answer keeps.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsRequest {
    pub raw_table_id: i64,
    /// The column holding each row's time (a datetime, a date or RFC 3339 text); by default
    /// the table's `timestamp` column, else its `event_time_column`. The files call it
    /// `timestamp`.
    pub time_column: Option<String>,
}

/// A training set written as a dataset: Parquet files, one row per label row, with
/// entity_id (when the labels have it), timestamp, the label table's other columns, then
/// `<ref>__<column>` per feature value.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrainingDataset {
    /// The directory holding the files (a path in the data location, or an `s3://` prefix).
    pub uri: String,
    /// Each file's full path or URI, in row order.
    pub files: Vec<String>,
    pub rows: usize,
    pub labels: LabelsRead,
    /// Each reference and the version it read (null: an aggregation feature by name, which is
    /// evaluated from its table).
    pub versions: BTreeMap<String, Option<i64>>,
}

/// Which version of the label table was read.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabelsRead {
    pub raw_table_id: i64,
    pub version: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct BackfillRequest {
    #[schema(value_type = String, format = DateTime)]
    pub start: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub end: DateTime<Utc>,
    #[schema(minimum = 1)]
    pub every_seconds: i64,
}

/// One publish of a version: its whole vector set, valid from `valid_from`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Snapshot {
    pub id: i64,
    #[serde(serialize_with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub valid_from: DateTime<Utc>,
    #[serde(serialize_with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub computed_at: DateTime<Utc>,
    pub entity_count: i64,
    /// `compute`, `backfill` or `refresh`.
    #[schema(example = "compute")]
    pub kind: String,
    /// Ingest time of the newest stored raw batch it read; null when its rows came with the
    /// compute request.
    #[serde(serialize_with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub data_as_of: Option<DateTime<Utc>>,
}

// ---- statistics ----

/// How one value column moved from a base snapshot to a target (see `engine::drift`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    /// `numeric` or `categorical`.
    pub kind: String,
    /// Null when either snapshot has no non-null value in the column.
    pub psi: Option<f64>,
    /// Target null share minus base null share.
    pub null_rate_change: f64,
    pub base_null_rate: f64,
    pub target_null_rate: f64,
    pub bins: Vec<DriftBin>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftBin {
    /// `<= 1.5`, `(1.5, 2]`, `> 9` for numbers; the value (or `(other)`) for categories.
    pub label: String,
    /// A numeric bin's bounds (`lower` excluded, `upper` included; absent: unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    pub base: u64,
    pub target: u64,
}

/// A snapshot's column statistics: for numbers `type`, `count`, `nulls`, `mean`, `std`, `min`,
/// `max`, `quantiles` (p01 .. p99) and `histogram` (`edges`, `counts`); for strings and
/// booleans `type`, `count`, `nulls`, `distinct` and `top` (up to 20 `{value, count}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotStats {
    pub snapshot_id: i64,
    pub entity_count: i64,
    /// Output column (all but the entity key) -> its statistics.
    #[schema(value_type = Object)]
    pub columns: serde_json::Value,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DriftQuery {
    /// The snapshot to compare from (default: the one before `target`).
    pub base: Option<i64>,
    /// The snapshot to compare (default: the newest).
    pub target: Option<i64>,
}

/// Drift from one snapshot of a version to another, per value column.
#[derive(Debug, Serialize, ToSchema)]
pub struct Drift {
    pub base: i64,
    pub target: i64,
    /// Column -> `{kind, psi, null_rate_change, base_null_rate, target_null_rate, bins:
    /// [{label, base, target}]}`.
    #[schema(value_type = Object)]
    pub columns: BTreeMap<String, ColumnDrift>,
}

// ---- jobs ----

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only this feature's jobs.
    pub feature_id: Option<i64>,
    /// Only jobs in this state.
    #[param(pattern = "^(queued|running|succeeded|failed)$")]
    pub status: Option<String>,
    /// How many, newest first (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// A compute, backfill or scheduled refresh, and how it went.
#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    pub id: i64,
    /// `compute`, `backfill` or `refresh`.
    #[schema(example = "refresh")]
    pub kind: String,
    pub feature_id: i64,
    /// Null for a first compute that failed before its version existed.
    pub version_id: Option<i64>,
    /// The version's label.
    pub version: String,
    /// `queued` (waiting for a compute worker), `running`, `succeeded` or `failed`.
    #[schema(example = "succeeded")]
    pub status: String,
    /// What ran it: the feature's engine.
    pub engine: Engine,
    #[serde(serialize_with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed, as its client was told.
    pub error: Option<String>,
}

// ---- vectors ----

/// The text parameters borrow from the query string when it holds them unescaped, as a
/// model's requests do: a cached answer then copies none of them.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VectorQuery<'a> {
    /// The entity of a feature keyed by one column (or a tuple's `entity_id` as an answer
    /// gives it). Without it, each key column is a parameter of its own (see `key`).
    #[serde(borrow)]
    #[param(value_type = Option<String>)]
    pub entity_id: Option<Cow<'a, str>>,
    /// Serve the newest active computed version of this feature.
    #[serde(borrow)]
    #[param(value_type = Option<String>)]
    pub feature_name: Option<Cow<'a, str>>,
    /// Serve this version (takes precedence over `feature_name`).
    pub feature_version_id: Option<i64>,
    /// Serve what was served at this instant (RFC 3339): the version's snapshot in force then.
    #[param(value_type = Option<String>, format = DateTime)]
    pub as_of: Option<DateTime<Utc>>,
    /// Instead of `entity_id`: the feature's key columns, each as its own parameter
    /// (`user_id=u1&merchant_id=m7`); missing or extra ones are a 400 naming them.
    #[param(style = Form, explode, value_type = Option<Object>)]
    #[serde(default)]
    pub key: Vec<(String, String)>,
}

/// Documented shape of a served vector; the body itself is assembled from stored JSON text.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureVector {
    pub entity_id: String,
    /// A feature keyed by several columns: its key values by column, typed as its result
    /// typed them (`entity_id` is the same tuple as one text).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub entity: Option<Map<String, Value>>,
    #[schema(value_type = Object)]
    pub feature_values: Map<String, Value>,
    /// Null for an aggregation feature (its values come from the events, not a version).
    pub feature_version_id: Option<i64>,
    #[schema(value_type = String, format = DateTime)]
    pub computed_at: String,
    /// An aggregation feature's: the instant its values hold at (the request's).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub evaluated_at: Option<String>,
    /// Ingest time of the newest stored raw batch the snapshot read; null when its rows came
    /// with the compute request.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub data_as_of: Option<String>,
    /// The raw table holds rows this snapshot did not read.
    pub stale: bool,
    /// With `as_of`: the snapshot that served it.
    #[schema(nullable = false)]
    pub snapshot_id: Option<i64>,
    /// With `as_of`: when that snapshot started to count.
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub valid_from: Option<String>,
}

/// A feature in a batch request: `"name"` (newest active computed version), `"name@v2"` (that
/// version) or a version id. Serialized untagged (which the schema reads); read by the visitor
/// below, not serde's untagged reader, which buffers each reference and builds an error for the
/// integer it is not before it tries the text (~5 % of a 100 × 10 batch's instructions).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum FeatureRef {
    Id(i64),
    Name(String),
}

impl<'de> Deserialize<'de> for FeatureRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FeatureRef;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a feature name (text) or a version id (integer)")
            }
            fn visit_i64<E: serde::de::Error>(self, id: i64) -> Result<FeatureRef, E> {
                Ok(FeatureRef::Id(id))
            }
            fn visit_u64<E: serde::de::Error>(self, id: u64) -> Result<FeatureRef, E> {
                i64::try_from(id)
                    .map(FeatureRef::Id)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(id), &self))
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<FeatureRef, E> {
                Ok(FeatureRef::Name(name.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, name: String) -> Result<FeatureRef, E> {
                Ok(FeatureRef::Name(name))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Text of a request body, borrowed from it when it holds no escapes. A newtype because serde
/// borrows a `Cow` only where it is a field of its own, not an element of a `Vec`.
#[derive(Debug, Deserialize)]
pub struct BodyText<'a>(#[serde(borrow)] pub std::borrow::Cow<'a, str>);

/// Read from the body it borrows from: a batch's entity ids are not copied out of it (a
/// `String` per id was most of the request's parsing).
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchRequest<'a> {
    /// The entities, by id (features keyed by one column).
    #[serde(default, borrow)]
    #[schema(value_type = Option<Vec<String>>, example = json!(["user_001", "user_002"]), max_items = 10000)]
    pub entity_ids: Option<Vec<BodyText<'a>>>,
    /// Instead of `entity_ids`: each entity an object of key column -> value (text or an
    /// integer), `{"user_id": "u1", "merchant_id": "m7"}`, or a plain id. Each feature takes
    /// the columns it is keyed by, so a user feature and a user x merchant feature can share
    /// one request; an entity without a feature's key column is a 400 naming it.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Value>>, max_items = 10000, example = json!([{"user_id": "u1", "merchant_id": "m7"}]))]
    pub entities: Option<Vec<Value>>,
    #[schema(example = json!(["avg_transaction_amount", "avg_transaction_amount@v1", 1]), min_items = 1, max_items = 100)]
    pub features: Vec<FeatureRef>,
    /// Serve what was served at this instant (RFC 3339): each version's snapshot in force then.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub as_of: Option<DateTime<Utc>>,
}

/// Documented shape of a batch answer; the body is assembled from stored JSON text.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// Feature reference -> the version id that served it (null when it did not resolve).
    #[schema(value_type = Object)]
    pub versions: Map<String, Value>,
    /// Feature reference -> `{data_as_of, stale}` of the snapshot that served it (null when it
    /// did not resolve); an aggregation feature's also has `evaluated_at`, the instant its
    /// values hold at.
    #[schema(value_type = Object)]
    pub freshness: Map<String, Value>,
    /// Feature reference -> why it did not resolve (unknown feature, no computed version...).
    #[schema(value_type = Object)]
    pub unresolved: Map<String, Value>,
    pub results: Vec<BatchRow>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchRow {
    /// The entity as sent in `entity_ids` (or as a plain id in `entities`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    /// The entity as sent in `entities`, when it was an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub entity: Option<Map<String, Value>>,
    /// Feature reference -> its `feature_values` for this entity, or null when missing.
    #[schema(value_type = Object)]
    pub features: Map<String, Value>,
    /// The references with no values for this entity.
    pub missing: Vec<String>,
}

// ---- ingest ----

/// A file's bytes (Parquet), as documentation of a binary body.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct BinaryFile(Vec<u8>);

#[derive(Debug, Deserialize, ToSchema)]
pub struct IngestRequest {
    pub raw_table_id: i64,
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResponse {
    pub message: String,
    pub records_ingested: usize,
}

// ---- streams ----

/// What a raw table follows: a Kafka topic (`brokers`, `topic`) or a NATS JetStream stream
/// (`url`, `stream`, `subject`). Settings left out take their defaults, and the answer shows
/// them filled in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamSource {
    /// `kafka` or `nats`.
    #[serde(rename = "type")]
    #[schema(example = "nats")]
    pub kind: String,
    /// Kafka: the bootstrap brokers, `host:port` separated by commas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "127.0.0.1:9092")]
    pub brokers: Option<String>,
    /// Kafka: the topic; every partition of it is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "transactions")]
    pub topic: Option<String>,
    /// NATS: the server, `nats://host:port` or `tls://host:port` (no credentials in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "nats://127.0.0.1:4222")]
    pub url: Option<String>,
    /// NATS: the JetStream stream to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "TX")]
    pub stream: Option<String>,
    /// NATS: only messages on subjects matching this filter (`tx.>`); all of the stream's
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "tx.>")]
    pub subject: Option<String>,
    /// How a message is read: `json`, one object per message (the only format for now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "json")]
    pub format: Option<String>,
    /// A micro-batch commits after this many messages (1 to 100000; default 10000)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 10000)]
    pub max_batch_events: Option<u32>,
    /// ...or this long after its first message, whichever comes first (10 to 60000 ms;
    /// default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 1000)]
    pub max_batch_interval_ms: Option<u32>,
}

/// A position in the source: a Kafka partition (its number), or for NATS the stream itself,
/// whose offsets are its sequences.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct StreamPartition {
    pub partition: String,
    /// The last offset committed to the table (rows and rejected messages alike).
    pub committed_offset: Option<i64>,
    /// Messages after it that the source holds, as of the last commit.
    pub lag: Option<i64>,
}

/// A raw table's stream and how following it goes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamResponse {
    pub raw_table_id: i64,
    /// The source as `PUT` set it, its defaults filled in (the same fields, at the top level).
    #[serde(rename = "type")]
    #[schema(example = "nats")]
    pub kind: String,
    pub brokers: Option<String>,
    pub topic: Option<String>,
    pub url: Option<String>,
    pub stream: Option<String>,
    pub subject: Option<String>,
    pub format: Option<String>,
    pub max_batch_events: Option<u32>,
    pub max_batch_interval_ms: Option<u32>,
    /// `starting`, `running`, `failing` (with `reason`), or `waiting` (no replica holds it).
    #[schema(example = "running")]
    pub status: String,
    pub reason: Option<String>,
    /// The replica committing it now.
    pub committer: Option<String>,
    pub partitions: Vec<StreamPartition>,
    /// Messages committed to the table as rows since the stream was set.
    pub events_committed: i64,
    /// Messages set aside, with their reasons, in `rejected_location`.
    pub rejected: i64,
    pub events_per_second: Option<f64>,
    /// The Delta table of rejected messages: partition, offset, reason, payload, received_at.
    pub rejected_location: String,
    #[serde(serialize_with = "opt_ts")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_commit_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

/// Every error: `{"detail": "<message>"}`, or for request-validation failures (422) FastAPI's
/// list of `{loc, msg, type}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub detail: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ErrorDetail {
    Message(String),
    Validation(Vec<ValidationError>),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationError {
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}
