//! Running a feature's SQL in polars over a frame registered as `data`.

use polars::prelude::*;
use polars::sql::SQLContext;

use super::sql_guard::{self, DATA_TABLE};

/// Guard, then execute `sql` over `frame`. A fresh context per call: contexts share tables.
///
/// This runs inside a compute worker (or a bench); the worker's process limits bound it.
pub fn run_sql(sql: &str, frame: DataFrame) -> Result<DataFrame, String> {
    sql_guard::check(sql)?;
    let mut ctx = SQLContext::new();
    ctx.register(DATA_TABLE, frame.lazy());
    ctx.execute(sql)
        .and_then(|lf| lf.collect())
        .map_err(|e| clean_message(&e.to_string()))
}

/// Guard, then execute `sql` over `data` (a lazy scan) with polars' streaming engine: the
/// input is read a morsel at a time, so only the query's own state (a group-by's groups, a
/// sort) has to fit in memory, not the table.
pub fn run_sql_streaming(sql: &str, data: LazyFrame) -> Result<DataFrame, String> {
    sql_guard::check(sql)?;
    let mut ctx = SQLContext::new();
    ctx.register(DATA_TABLE, data);
    ctx.execute(sql)
        .and_then(|lf| lf.collect_with_engine(Engine::Streaming))
        .map(|r| r.unwrap_single())
        .map_err(|e| clean_message(&e.to_string()))
}

/// Guard, then plan `sql` over `data` without running it, for the caller to narrow and
/// collect.
pub fn plan_sql(sql: &str, data: LazyFrame) -> Result<LazyFrame, String> {
    sql_guard::check(sql)?;
    let mut ctx = SQLContext::new();
    ctx.register(DATA_TABLE, data);
    ctx.execute(sql).map_err(|e| clean_message(&e.to_string()))
}

/// Polars' messages (and panics) end with a backtrace hint and sometimes carry plan dumps;
/// keep the first meaningful line so a client sees a readable reason.
pub fn clean_message(msg: &str) -> String {
    let first = msg
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("the query failed");
    first.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_runs_over_data() {
        let df = df!("user_id" => ["a", "a", "b"], "amount" => [1.0, 3.0, 5.0]).unwrap();
        let out = run_sql(
            "SELECT user_id, AVG(amount) AS avg_amount FROM data GROUP BY user_id ORDER BY user_id",
            df,
        )
        .unwrap();
        let avg = out.column("avg_amount").unwrap().f64().unwrap();
        assert_eq!(avg.get(0), Some(2.0));
        assert_eq!(avg.get(1), Some(5.0));
    }

    #[test]
    fn unknown_columns_fail_with_the_engine_message() {
        let df = df!("user_id" => ["a"]).unwrap();
        let err = run_sql("SELECT nope FROM data", df).unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }
}
