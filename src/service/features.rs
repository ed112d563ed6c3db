use super::AppState;
use super::{Result, ServiceError};
use crate::engine::aggregations;
use crate::model::{Aggregation, Declaration, Engine, FeatureCreate};
use crate::offline::OfflineStore;
use crate::spark::Spark;
use crate::store::StoreError;
use crate::store::{FeatureRow, NewFeature, RawTableRow, Store};
use crate::worker::{ComputeJob, ComputePool, Input, Job, Task};

use super::{changed, failures, lookup};
use super::{check_label, raw_tables};

fn invalid(reason: impl std::fmt::Display) -> ServiceError {
    ServiceError::Invalid(format!("Invalid feature computation: {reason}"))
}

/// Register a feature: SQL (`computation_logic`) or declared `aggregations`, exactly one.
pub async fn create(state: &AppState, req: FeatureCreate) -> Result<FeatureRow> {
    check_label("name", &req.name, 200)?;
    for column in req.entity_key.columns() {
        check_label("entity_key", column, 200)?;
    }
    let table = lookup::table(&state.store, req.raw_table_id).await?;
    let schema = raw_tables::schema_of(&table)?;
    if schema.is_empty() {
        return Err(invalid(format!(
            "raw table '{}' has no schema_definition to compute over",
            table.name
        )));
    }
    let (logic, declaration) = match (&req.computation_logic, &req.aggregations) {
        (Some(sql), None) => {
            if req.filter.is_some() {
                return Err(invalid(
                    "filter goes with aggregations; put the condition in the SQL's WHERE",
                ));
            }
            if req.engine == Engine::Spark {
                validate_on_spark(
                    &state.spark,
                    &state.offline,
                    state.config.compute_timeout,
                    &table,
                    &req,
                    sql,
                )
                .await?;
            } else {
                dry_run(&state.compute, &table, sql, &req.entity_key.stored()).await?;
            }
            (sql.clone(), None)
        }
        (None, Some(aggregations)) => {
            let declaration =
                check_aggregations(&state.compute, &table, &req, aggregations).await?;
            let text = serde_json::to_string(&declaration).map_err(ServiceError::fault)?;
            (String::new(), Some(text))
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                "give computation_logic (SQL) or aggregations, not both",
            ))
        }
        (None, None) => {
            return Err(invalid(
                "give computation_logic (a SELECT over data) or aggregations",
            ))
        }
    };
    let row = state
        .store
        .create_feature(
            &NewFeature {
                name: &req.name,
                description: req.description.as_deref(),
                raw_table_id: req.raw_table_id,
                computation_logic: &logic,
                entity_key: &req.entity_key.stored(),
                engine: req.engine.as_str(),
                declaration: declaration.as_deref(),
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

/// An aggregation feature's declaration, checked: the table has an event time and the key,
/// every aggregation names a column, a function and windows it can have, and the filter is
/// one predicate the SQL guard allows and polars accepts over the table's columns.
async fn check_aggregations(
    compute: &ComputePool,
    table: &RawTableRow,
    req: &FeatureCreate,
    aggregations: &[Aggregation],
) -> Result<Declaration> {
    let refused = |why: String| ServiceError::Invalid(format!("Invalid aggregations: {why}"));
    if req.engine == Engine::Spark {
        return Err(refused(
            "aggregation features are evaluated by the compute workers; leave engine as polars"
                .into(),
        ));
    }
    if table.event_time_column.is_none() {
        return Err(refused(format!(
            "raw table '{}' has no event_time_column; windows need one",
            table.name
        )));
    }
    let schema = raw_tables::schema_of(table)?;
    for key in req.entity_key.columns() {
        if !schema.column_names().any(|c| c == key) {
            return Err(refused(format!(
                "raw table '{}' has no column '{key}' (the entity_key)",
                table.name
            )));
        }
    }
    let key = req.entity_key.stored();
    super::online::plan(aggregations, &schema).map_err(refused)?;
    if let Some(filter) = &req.filter {
        let sql =
            aggregations::filter_sql(filter).map_err(|why| refused(format!("filter: {why}")))?;
        dry_run(compute, table, &sql, &key)
            .await
            .map_err(|e| match e {
                ServiceError::Invalid(why) => refused(format!(
                    "filter: {}",
                    why.trim_start_matches("Invalid feature computation: ")
                )),
                e => e,
            })?;
    }
    Ok(Declaration {
        aggregations: aggregations.to_vec(),
        filter: req.filter.clone(),
    })
}

/// Polars: run the SQL over an empty frame of the table's schema in a worker, like every run
/// of user SQL (rows can come from literals even over an empty frame).
async fn dry_run(
    compute: &ComputePool,
    table: &RawTableRow,
    sql: &str,
    entity_key: &str,
) -> Result<()> {
    let dry_run = Job {
        task: Task::Compute(ComputeJob {
            sql: sql.to_string(),
            entity_key: entity_key.to_string(),
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
    compute
        .run(&dry_run, None)
        .await
        .map_err(|e| failures::worker_error(e, "Invalid feature computation"))?;
    Ok(())
}

/// Spark: the SQL guard, then Spark's analyzer over an empty `data` of the table's columns
/// (nothing runs); the result must have the entity key.
async fn validate_on_spark(
    spark: &Option<Spark>,
    offline: &OfflineStore,
    timeout: std::time::Duration,
    table: &RawTableRow,
    req: &FeatureCreate,
    sql: &str,
) -> Result<()> {
    let spark = super::spark::cluster(spark)?;
    super::spark::usable_for(offline, table)?;
    crate::engine::sql_guard::check(sql).map_err(invalid)?;
    let schema = raw_tables::schema_of(table)?;
    let columns = crate::spark::validate(spark, &schema, sql, timeout)
        .await
        .map_err(|e| match e {
            crate::spark::SparkError::Query(why) => invalid(why),
            e => e.into(),
        })?;
    for key in req.entity_key.columns() {
        if !columns.iter().any(|c| c == key) {
            return Err(invalid(format!(
                "the result has no column '{key}' (the feature's entity_key)"
            )));
        }
    }
    Ok(())
}

pub async fn list(store: &Store) -> Result<Vec<FeatureRow>> {
    Ok(store.list_features().await?)
}

pub async fn get(store: &Store, id: i64) -> Result<FeatureRow> {
    lookup::feature(store, id).await
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
        changed::announce(&state, deleted).await;
        Ok(())
    })
    .await
}
