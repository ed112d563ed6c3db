//! The store's rows as the API shows them (`From` each row into its body), beside the services
//! that return the rows, so the handlers never see the store and `model` (the bodies) knows
//! nothing of it.

use super::raw_tables::TableState;
use crate::keys::EntityKey;
use crate::model::{
    Declaration, Engine, Feature, FeatureVersion, Job, RawTable, RawTableSource, Snapshot,
    SourceFormat,
};
use crate::store::{FeatureRow, JobRow, SnapshotRow, VersionRow};

impl From<TableState> for RawTable {
    fn from(TableState { row: r, summary }: TableState) -> Self {
        let source = match (r.source_format.as_deref(), r.storage_uri) {
            (Some("delta"), Some(uri)) => Some(RawTableSource {
                format: SourceFormat::Delta,
                uri,
            }),
            (Some("parquet"), Some(uri)) => Some(RawTableSource {
                format: SourceFormat::Parquet,
                uri,
            }),
            _ => None,
        };
        RawTable {
            id: r.id,
            name: r.name,
            description: r.description,
            schema_definition: serde_json::from_str(&r.schema_definition).unwrap_or_default(),
            event_time_column: r.event_time_column,
            created_at: r.created_at,
            updated_at: r.updated_at,
            row_count: summary.as_ref().map_or(0, |s| s.row_count),
            last_ingest_at: summary.as_ref().map(|s| s.last_ingest_at),
            version: summary.map(|s| s.version),
            source,
        }
    }
}

impl From<FeatureRow> for Feature {
    fn from(r: FeatureRow) -> Self {
        let declaration = r
            .declaration
            .as_deref()
            .and_then(|d| serde_json::from_str::<Declaration>(d).ok());
        let (aggregations, filter) = match declaration {
            Some(d) => (Some(d.aggregations), d.filter),
            None => (None, None),
        };
        Feature {
            aggregations,
            filter,
            id: r.id,
            name: r.name,
            description: r.description,
            raw_table_id: r.raw_table_id,
            computation_logic: r.computation_logic,
            entity_key: EntityKey::from_stored(&r.entity_key),
            engine: Engine::from_stored(&r.engine),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<VersionRow> for FeatureVersion {
    fn from(r: VersionRow) -> Self {
        FeatureVersion {
            id: r.id,
            feature_id: r.feature_id,
            version: r.version,
            status: r.status,
            computation_logic: r.computation_logic,
            entity_key: EntityKey::from_stored(&r.entity_key),
            created_at: r.created_at,
            computed_at: r.computed_at,
            entity_count: r.entity_count,
            output_schema: r
                .output_schema
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
            data_as_of: r.data_as_of,
            stale: r.stale,
            refresh_every_seconds: r.refresh_every_seconds,
            next_refresh_at: r.next_refresh_at,
            refresh_checked_at: r.refresh_checked_at,
            refresh_failures: r.refresh_failures,
        }
    }
}

impl From<SnapshotRow> for Snapshot {
    fn from(r: SnapshotRow) -> Self {
        Snapshot {
            id: r.id,
            valid_from: r.valid_from,
            computed_at: r.computed_at,
            entity_count: r.entity_count,
            kind: r.kind,
            data_as_of: r.data_as_of,
        }
    }
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Self {
        Job {
            id: r.id,
            kind: r.kind,
            feature_id: r.feature_id,
            version_id: r.version_id,
            version: r.version,
            status: r.status,
            engine: Engine::from_stored(&r.engine),
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            error: r.error,
        }
    }
}

/// Each row as shown.
pub fn all<R, T: From<R>>(rows: Vec<R>) -> Vec<T> {
    rows.into_iter().map(T::from).collect()
}
