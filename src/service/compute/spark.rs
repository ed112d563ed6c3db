//! The Spark handoff: the feature's SQL run on the cluster over the pinned files, and the
//! worker's job pointed at the cluster's result, which it then checks, snapshots and sends as
//! any compute's.

use crate::offline::OfflineStore;
use crate::service::spark::{self as service_spark, ResultDir};
use crate::service::{Result, ServiceError};
use crate::spark::Spark;
use crate::store::RawTableRow;
use crate::worker::{ComputeJob, Input};

/// Run `task`'s SQL on Spark over its input files and point the task at the result: a
/// worker then reads it as it is (`SELECT * FROM data`), with no `as_of` (Spark applied it).
pub(super) async fn on_spark(
    spark: &Option<Spark>,
    offline: &OfflineStore,
    timeout: std::time::Duration,
    table: &RawTableRow,
    task: &mut ComputeJob,
) -> Result<ResultDir> {
    let spark = service_spark::cluster(spark)?;
    service_spark::usable_for(offline, table)?;
    let Input::Files { files, partitioned } = &task.input else {
        return Err(ServiceError::Invalid(
            "A feature computed on Spark reads its raw table's stored rows; rows sent with the \
             compute are computed with the polars engine only"
                .into(),
        ));
    };
    if *partitioned {
        return Err(ServiceError::Invalid(format!(
            "Raw table '{}' is a partitioned dataset, which the engine 'spark' does not read here",
            table.name
        )));
    }
    crate::engine::sql_guard::check(&task.sql)
        .map_err(|e| ServiceError::Invalid(format!("Feature computation failed: {e}")))?;
    let dir = ResultDir::new(offline)?;
    let started = std::time::Instant::now();
    let files = crate::spark::compute(
        spark,
        crate::spark::Run {
            files,
            event_time: task.as_of.as_ref().map(|l| (l.column.as_str(), l.micros)),
            sql: &task.sql,
            output: dir.path(),
        },
        timeout,
    )
    .await?;
    tracing::info!(
        table = %table.name,
        files = files.len(),
        spark_ms = started.elapsed().as_millis() as u64,
        "Spark computed a feature's result"
    );
    task.sql = format!("SELECT * FROM {}", crate::engine::sql_guard::DATA_TABLE);
    task.input = Input::Result { files };
    task.as_of = None;
    task.input_rows = 0;
    Ok(dir)
}
