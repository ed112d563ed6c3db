use super::{Result, ServiceError};
use crate::model::{Engine, FeatureCreate};
use crate::store::StoreError;
use crate::store::{FeatureRow, NewFeature, RawTableRow};
use crate::worker::{ComputeJob, Input, Job, Task};
use crate::AppState;

use super::{check_label, raw_tables};
use super::{failures, generations, lookup};

fn invalid(reason: impl std::fmt::Display) -> ServiceError {
    ServiceError::Invalid(format!("Invalid feature computation: {reason}"))
}

/// Register a feature after proving its SQL: guarded, then dry-run on an empty frame of the
/// raw table's schema, and its output must carry the entity key.
pub async fn create(state: &AppState, req: FeatureCreate) -> Result<FeatureRow> {
    check_label("name", &req.name, 200)?;
    check_label("entity_key", &req.entity_key, 200)?;
    let table = lookup::table(state, req.raw_table_id).await?;
    let schema = raw_tables::schema_of(&table)?;
    if schema.is_empty() {
        return Err(invalid(format!(
            "raw table '{}' has no schema_definition to compute over",
            table.name
        )));
    }
    if req.engine == Engine::Spark {
        validate_on_spark(state, &table, &req).await?;
    } else {
        dry_run(state, &table, &req).await?;
    }
    let row = state
        .store
        .create_feature(
            &NewFeature {
                name: &req.name,
                description: req.description.as_deref(),
                raw_table_id: req.raw_table_id,
                computation_logic: &req.computation_logic,
                entity_key: &req.entity_key,
                engine: req.engine.as_str(),
            },
            state.clock.now(),
        )
        .await
        .map_err(|e| match e {
            StoreError::Duplicate => {
                ServiceError::Invalid(format!("Feature with name '{}' already exists", req.name))
            }
            StoreError::StillReferenced => lookup::table_not_found(req.raw_table_id),
            e => e.into(),
        })?;
    Ok(row)
}

/// Polars: run the SQL over an empty frame of the table's schema in a worker, like every run
/// of user SQL (rows can come from literals even over an empty frame).
async fn dry_run(state: &AppState, table: &RawTableRow, req: &FeatureCreate) -> Result<()> {
    let dry_run = Job {
        task: Task::Compute(ComputeJob {
            sql: req.computation_logic.clone(),
            entity_key: req.entity_key.clone(),
            max_rows: usize::MAX,
            schema: raw_tables::definition_of(table)?,
            dry_run: true,
            input: Input::Empty,
            as_of: None,
            snapshot: None,
            vectors: false,
            input_rows: 0,
        }),
        storage: Default::default(),
    };
    state
        .compute
        .run(&dry_run, None)
        .await
        .map_err(|e| failures::worker_error(e, "Invalid feature computation"))?;
    Ok(())
}

/// Spark: the SQL guard, then Spark's analyzer over an empty `data` of the table's columns
/// (nothing runs); the result must have the entity key.
async fn validate_on_spark(
    state: &AppState,
    table: &RawTableRow,
    req: &FeatureCreate,
) -> Result<()> {
    let spark = super::spark::cluster(state)?;
    super::spark::usable_for(state, table)?;
    crate::engine::sql_guard::check(&req.computation_logic).map_err(invalid)?;
    let schema = raw_tables::schema_of(table)?;
    let columns = crate::spark::validate(
        spark,
        &schema,
        &req.computation_logic,
        state.config.compute_timeout,
    )
    .await
    .map_err(|e| match e {
        crate::spark::SparkError::Query(why) => invalid(why),
        e => e.into(),
    })?;
    if !columns.iter().any(|c| c == &req.entity_key) {
        return Err(invalid(format!(
            "the result has no column '{}' (the feature's entity_key)",
            req.entity_key
        )));
    }
    Ok(())
}

pub async fn list(state: &AppState) -> Result<Vec<FeatureRow>> {
    Ok(state.store.list_features().await?)
}

pub async fn get(state: &AppState, id: i64) -> Result<FeatureRow> {
    lookup::feature(state, id).await
}

/// Deletes the feature, its versions and their vectors; serving stops at once.
pub async fn delete(state: &AppState, id: i64) -> Result<()> {
    let state = state.clone();
    super::detached(async move {
        let deleted = state
            .store
            .delete_feature(id)
            .await?
            .ok_or_else(|| lookup::feature_not_found(id))?;
        state.cache.advance(deleted.change as u64).await;
        generations::forget(&state, deleted);
        Ok(())
    })
    .await
}
