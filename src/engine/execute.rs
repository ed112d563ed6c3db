//! Running a feature's SQL in polars over a frame registered as `data`.

use std::time::{Duration, Instant};

use polars::prelude::*;
use polars::sql::SQLContext;

use super::sql_guard::{self, DATA_TABLE};

/// Guard, then execute `sql` over `frame`. A fresh context per call: contexts share tables.
pub fn run_sql(sql: &str, frame: DataFrame) -> Result<DataFrame, String> {
    run_sql_within(sql, frame, None)
}

/// As `run_sql`, but a query still running after `limit` is cancelled (polars stops it at its
/// next operator boundary) and reported as over the time limit.
pub fn run_sql_within(
    sql: &str,
    frame: DataFrame,
    limit: Option<Duration>,
) -> Result<DataFrame, String> {
    sql_guard::check(sql)?;
    let mut ctx = SQLContext::new();
    ctx.register(DATA_TABLE, frame.lazy());
    let lf = ctx
        .execute(sql)
        .map_err(|e| clean_message(&e.to_string()))?;
    let Some(limit) = limit else {
        return lf.collect().map_err(|e| clean_message(&e.to_string()));
    };
    let started = Instant::now();
    let query = lf
        .collect_concurrently()
        .map_err(|e| clean_message(&e.to_string()))?;
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(result) = query.fetch() {
            return result.map_err(|e| clean_message(&e.to_string()));
        }
        if started.elapsed() >= limit {
            query.cancel();
            // polars' worker sends the outcome with `unwrap()` once its current operator ends;
            // a dropped receiver would make that panic and rayon abort the whole process. A
            // detached thread keeps the receiver until then.
            let draining = query.clone();
            std::thread::spawn(move || {
                let _ = draining.fetch_blocking();
            });
            return Err(format!(
                "the computation exceeded the time limit of {} s and was cancelled",
                limit.as_secs()
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Polars' messages end with a backtrace hint and sometimes carry plan dumps; keep the first
/// meaningful line so a client sees a readable reason.
fn clean_message(msg: &str) -> String {
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
    fn a_query_past_its_time_limit_is_cancelled() {
        let n = 2_000_000;
        let keys: Vec<i64> = (0..n).map(|i| i % 100_003).collect();
        let df = df!("k" => keys.clone(), "v" => keys).unwrap();
        let err = run_sql_within(
            "SELECT k, SUM(v) AS s, COUNT(*) AS c FROM data GROUP BY k ORDER BY s",
            df,
            Some(Duration::ZERO),
        )
        .unwrap_err();
        assert!(err.contains("time limit"), "{err}");
    }

    #[test]
    fn unknown_columns_fail_with_the_engine_message() {
        let df = df!("user_id" => ["a"]).unwrap();
        let err = run_sql("SELECT nope FROM data", df).unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }
}
