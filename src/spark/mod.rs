//! Spark: a feature whose engine is `spark` runs its SQL on an Apache Spark cluster, through
//! Spark Connect (`SPARK_CONNECT_URL`). Spark reads the same pinned Parquet files of one table
//! version a polars worker would, as the view `data` (an `as_of` adds the event-time filter),
//! and writes the result as Parquet into the data directory. A compute worker then checks that
//! result and turns it into the snapshot and the served vectors, as for any compute: the
//! server only sends file lists and SQL, and never holds a Spark result.

mod client;

pub use client::{endpoint, Field, FieldKind, Session, Spark};

use std::path::Path;
use std::time::Duration;

use crate::engine::schema::{ColumnType, TableSchema};
use crate::engine::sql_guard::DATA_TABLE;

/// Code generated from Spark Connect's protocol files (`proto/spark/connect`).
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("spark.connect");
}

/// The view a result with DECIMAL columns is registered as, to be read back as doubles.
const RESULT_VIEW: &str = "feature_result";
/// Spark's messages can carry a long query context; a client needs the start of it.
const MAX_MESSAGE_CHARS: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum SparkError {
    #[error("the Spark cluster could not be reached: {0}")]
    Unreachable(String),
    /// The SQL failed to analyze or to run: Spark's own words.
    #[error("{0}")]
    Query(String),
    #[error("the computation took longer than the time limit of {0} s")]
    TimedOut(u64),
    #[error("Spark answered in a way this client does not understand: {0}")]
    Protocol(String),
    #[error("the result Spark wrote could not be read: {0}")]
    Output(String),
}

impl SparkError {
    fn from_status(status: tonic::Status) -> SparkError {
        let message: String = status.message().chars().take(MAX_MESSAGE_CHARS).collect();
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown if message.contains("connect") => {
                SparkError::Unreachable(message)
            }
            tonic::Code::Unavailable => SparkError::Unreachable(message),
            _ => SparkError::Query(message),
        }
    }
}

/// One run on Spark: the files of one table version, the feature's SQL, where the result goes.
pub struct Run<'a> {
    pub files: &'a [String],
    /// Only rows whose event time (this column) is at or before this many microseconds since
    /// 1970, UTC.
    pub event_time: Option<(&'a str, i64)>,
    pub sql: &'a str,
    /// A local directory, which Spark replaces with its part files.
    pub output: &'a Path,
}

/// Run the SQL on the cluster, within `limit` (past it, the session's operations are
/// interrupted). Returns the result's Parquet files.
pub async fn compute(
    spark: &Spark,
    run: Run<'_>,
    limit: Duration,
) -> Result<Vec<String>, SparkError> {
    let mut session = spark.session();
    let outcome = match tokio::time::timeout(limit, execute(&mut session, &run)).await {
        Ok(outcome) => outcome,
        Err(_) => {
            session.interrupt().await;
            Err(SparkError::TimedOut(limit.as_secs()))
        }
    };
    session.release().await;
    outcome?;
    result_files(run.output)
}

async fn execute(session: &mut Session, run: &Run<'_>) -> Result<(), SparkError> {
    prepare(session).await?;
    let mut data = client::parquet(run.files);
    if let Some((column, micros)) = run.event_time {
        // A date counts as its midnight, UTC (the session's zone), as in polars.
        let condition = format!(
            "CAST({} AS TIMESTAMP) <= timestamp_micros({micros})",
            quote(column)
        );
        data = client::filter(data, &condition);
    }
    session.create_view(DATA_TABLE, data).await?;
    let fields = session.schema(run.sql).await?;
    // Spark types decimal literals and their arithmetic DECIMAL; polars has doubles there.
    let result = if fields.iter().any(|f| f.kind == FieldKind::Decimal) {
        session
            .create_view(RESULT_VIEW, client::sql(run.sql))
            .await?;
        let columns: Vec<String> = fields
            .iter()
            .map(|f| match f.kind {
                FieldKind::Decimal => format!("CAST({0} AS DOUBLE) AS {0}", quote(&f.name)),
                FieldKind::Other => quote(&f.name),
            })
            .collect();
        client::sql(&format!("SELECT {} FROM {RESULT_VIEW}", columns.join(", ")))
    } else {
        client::sql(run.sql)
    };
    let output = run
        .output
        .to_str()
        .ok_or_else(|| SparkError::Output("the output path is not UTF-8".into()))?;
    session.write_parquet(result, output).await
}

/// Settings every session gets: times in UTC, and timestamps written as microseconds (what
/// polars reads and writes), not the legacy INT96.
async fn prepare(session: &mut Session) -> Result<(), SparkError> {
    session
        .run_sql("SET spark.sql.session.timeZone = UTC")
        .await?;
    session
        .run_sql("SET spark.sql.parquet.outputTimestampType = TIMESTAMP_MICROS")
        .await
}

/// Check `sql` on the cluster without running it, over an empty `data` of the table's
/// declared columns; the names of the columns it returns.
pub async fn validate(
    spark: &Spark,
    schema: &TableSchema,
    sql: &str,
    limit: Duration,
) -> Result<Vec<String>, SparkError> {
    let mut session = spark.session();
    let analyzed = tokio::time::timeout(limit, async {
        prepare(&mut session).await?;
        session
            .create_view(DATA_TABLE, client::sql(&empty_table(schema)))
            .await?;
        session.schema(sql).await
    })
    .await;
    session.release().await;
    let fields = analyzed.map_err(|_| SparkError::TimedOut(limit.as_secs()))??;
    Ok(fields.into_iter().map(|f| f.name).collect())
}

/// `SELECT CAST(NULL AS type) AS col, ... LIMIT 0`: the table's columns, typed as Spark reads
/// them from our files, and no rows.
fn empty_table(schema: &TableSchema) -> String {
    let columns: Vec<String> = schema
        .columns()
        .map(|(name, ty, _)| {
            let spark_type = match ty {
                ColumnType::String => "STRING",
                ColumnType::Integer => "BIGINT",
                ColumnType::Float => "DOUBLE",
                ColumnType::Boolean => "BOOLEAN",
                ColumnType::Date => "DATE",
                ColumnType::Datetime => "TIMESTAMP_NTZ",
            };
            format!("CAST(NULL AS {spark_type}) AS {}", quote(name))
        })
        .collect();
    format!("SELECT {} LIMIT 0", columns.join(", "))
}

/// A Spark SQL identifier, quoted.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The part files Spark wrote into `dir`, in name order.
fn result_files(dir: &Path) -> Result<Vec<String>, SparkError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SparkError::Output(e.to_string()))?;
    let mut files: Vec<String> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("part-") && n.ends_with(".parquet"))
        })
        .filter_map(|p| p.to_str().map(str::to_string))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(SparkError::Output(format!(
            "no Parquet files in {}",
            dir.display()
        )));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_urls_are_sc_host_and_port() {
        assert_eq!(
            endpoint("sc://127.0.0.1:15002").as_deref(),
            Ok("http://127.0.0.1:15002")
        );
        assert_eq!(
            endpoint("sc://spark.internal").as_deref(),
            Ok("http://spark.internal:15002")
        );
        for bad in [
            "http://x:15002",
            "sc://",
            "sc://x:15002/;token=abc",
            "x:15002",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_empty_table_has_every_declared_column_typed_as_spark_reads_our_files() {
        let schema = TableSchema::from_definition(
            &[
                ("user_id", "string"),
                ("amount", "float"),
                ("ts", "datetime"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
        .unwrap();
        assert_eq!(
            empty_table(&schema),
            "SELECT CAST(NULL AS DOUBLE) AS `amount`, CAST(NULL AS TIMESTAMP_NTZ) AS `ts`, \
             CAST(NULL AS STRING) AS `user_id` LIMIT 0"
        );
        assert_eq!(quote("a`b"), "`a``b`");
    }
}
