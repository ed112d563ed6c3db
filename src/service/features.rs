use crate::error::{AppError, Result};
use crate::model::{Feature, FeatureCreate};
use crate::store::FeatureRow;
use crate::store::StoreError;
use crate::worker::{ComputeJob, Input, Job, Task};
use crate::AppState;

use super::{check_label, compute, raw_tables};

pub fn not_found(id: i64) -> AppError {
    AppError::NotFound(format!("Feature with ID {id} not found"))
}

fn invalid(reason: impl std::fmt::Display) -> AppError {
    AppError::BadRequest(format!("Invalid feature computation: {reason}"))
}

pub async fn get_row(state: &AppState, id: i64) -> Result<FeatureRow> {
    state
        .store
        .get_feature(id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// Register a feature after proving its SQL: guarded, then dry-run on an empty frame of the
/// raw table's schema, and its output must carry the entity key.
pub async fn create(state: &AppState, req: FeatureCreate) -> Result<Feature> {
    check_label("name", &req.name, 200)?;
    check_label("entity_key", &req.entity_key, 200)?;
    let table = raw_tables::get_row(state, req.raw_table_id).await?;
    let schema = raw_tables::schema_of(&table)?;
    if schema.is_empty() {
        return Err(invalid(format!(
            "raw table '{}' has no schema_definition to compute over",
            table.name
        )));
    }
    // In a worker, like every run of user SQL: rows can come from literals even over an
    // empty frame.
    let dry_run = Job {
        task: Task::Compute(ComputeJob {
            sql: req.computation_logic.clone(),
            entity_key: req.entity_key.clone(),
            max_rows: usize::MAX,
            schema: raw_tables::definition_of(&table)?,
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
        .map_err(|e| compute::worker_error(e, "Invalid feature computation"))?;
    let row = state
        .store
        .create_feature(
            &req.name,
            req.description.as_deref(),
            req.raw_table_id,
            &req.computation_logic,
            &req.entity_key,
            state.clock.now(),
        )
        .await
        .map_err(|e| match e {
            StoreError::Duplicate => {
                AppError::BadRequest(format!("Feature with name '{}' already exists", req.name))
            }
            StoreError::StillReferenced => raw_tables::not_found(req.raw_table_id),
            e => e.into(),
        })?;
    Ok(row.into())
}

pub async fn list(state: &AppState) -> Result<Vec<Feature>> {
    Ok(state
        .store
        .list_features()
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

pub async fn get(state: &AppState, id: i64) -> Result<Feature> {
    Ok(get_row(state, id).await?.into())
}

/// Deletes the feature, its versions and their vectors; serving stops at once.
pub async fn delete(state: &AppState, id: i64) -> Result<()> {
    let state = state.clone();
    super::detached(async move {
        let deleted = state
            .store
            .delete_feature(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        state.cache.advance(deleted.change as u64).await;
        super::compute::forget(&state, deleted);
        Ok(())
    })
    .await
}
