//! Lazy scans of a table version's Parquet files: what a worker's SQL reads as `data`.
//!
//! The scan is lazy and runs on polars' streaming engine, so only what the query needs (the
//! columns it names, the row groups its filters can keep) is read, a morsel at a time.

use std::collections::BTreeMap;

use polars::prelude::cloud::CloudOptions;
use polars::prelude::*;

use super::schema::TableSchema;

/// Cloud settings for polars from the storage options (`aws_endpoint_url`, ...); `None` for
/// local paths.
fn cloud_options(
    first: &str,
    options: &BTreeMap<String, String>,
) -> Result<Option<CloudOptions>, String> {
    if !(first.starts_with("s3://") || first.starts_with("s3a://")) {
        return Ok(None);
    }
    CloudOptions::from_untyped_config(
        Some(CloudScheme::S3),
        options.iter().map(|(k, v)| (k.as_str(), v.clone())),
    )
    .map(Some)
    .map_err(|e| e.to_string())
}

fn scan_args(
    first: &str,
    options: &BTreeMap<String, String>,
    partitioned: bool,
) -> Result<ScanArgsParquet, String> {
    Ok(ScanArgsParquet {
        cloud_options: cloud_options(first, options)?,
        glob: false,
        hive_options: if partitioned {
            HiveOptions::new_enabled()
        } else {
            HiveOptions::new_disabled()
        },
        // Files written at different times may hold a column the schema gained later.
        allow_missing_columns: true,
        ..Default::default()
    })
}

/// The files as one lazy frame with `schema`'s columns and types (the declared ones, so SQL
/// sees what it saw at registration whatever width the files store). With `until`, only rows
/// whose event time is at or before it: the filter is on the stored column, so the scan skips
/// row groups whose statistics rule them out.
pub fn scan_files(
    files: &[String],
    options: &BTreeMap<String, String>,
    partitioned: bool,
    schema: &TableSchema,
    until: Option<(&str, i64)>,
) -> Result<LazyFrame, String> {
    let Some(first) = files.first() else {
        return rows_until(schema.empty_frame().lazy(), until);
    };
    let paths: Vec<PlRefPath> = files.iter().map(|f| PlRefPath::new(f.as_str())).collect();
    let frame =
        LazyFrame::scan_parquet_files(paths.into(), scan_args(first, options, partitioned)?)
            .map_err(|e| e.to_string())?;
    let frame = rows_until(frame, until)?;
    let columns: Vec<Expr> = schema
        .columns()
        .map(|(name, ty, _)| col(name).cast(ty.dtype()))
        .collect();
    Ok(frame.select(columns))
}

/// A result written by another engine (Spark's part files), with the columns it has.
pub fn scan_result(
    files: &[String],
    options: &BTreeMap<String, String>,
) -> Result<LazyFrame, String> {
    let Some(first) = files.first() else {
        return Err("the result has no files".into());
    };
    let paths: Vec<PlRefPath> = files.iter().map(|f| PlRefPath::new(f.as_str())).collect();
    LazyFrame::scan_parquet_files(paths.into(), scan_args(first, options, false)?)
        .map_err(|e| e.to_string())
}

/// Keep the rows whose `column` (a date or a datetime, of any unit or zone) is at or before
/// `micros` since the Unix epoch, UTC. A date counts as its midnight, UTC; a row without an
/// event time is left out, since nobody can say it happened by then.
pub fn rows_until(mut frame: LazyFrame, until: Option<(&str, i64)>) -> Result<LazyFrame, String> {
    let Some((column, micros)) = until else {
        return Ok(frame);
    };
    let limit = instant(&mut frame, column, micros)?;
    Ok(frame.filter(col(column).lt_eq(limit)))
}

/// Keep the rows whose event time `column` is after `micros` (see `rows_until`).
pub fn rows_after(mut frame: LazyFrame, column: &str, micros: i64) -> Result<LazyFrame, String> {
    let limit = instant(&mut frame, column, micros)?;
    Ok(frame.filter(col(column).gt(limit)))
}

/// `micros` as a literal of the event time column's own type, so the comparison is on the
/// stored column and the scan can skip row groups by their statistics. A date rounds down
/// to its day.
fn instant(frame: &mut LazyFrame, column: &str, micros: i64) -> Result<Expr, String> {
    let schema = frame.collect_schema().map_err(|e| e.to_string())?;
    match schema.get(column) {
        Some(DataType::Datetime(unit, zone)) => {
            let value = match unit {
                TimeUnit::Nanoseconds => micros.saturating_mul(1000),
                TimeUnit::Microseconds => micros,
                TimeUnit::Milliseconds => micros.div_euclid(1000),
            };
            Ok(lit(value).cast(DataType::Datetime(*unit, zone.clone())))
        }
        Some(DataType::Date) => {
            Ok(lit(micros.div_euclid(86_400_000_000) as i32).cast(DataType::Date))
        }
        Some(other) => Err(format!(
            "the event time column '{column}' is {other}, not a date or datetime"
        )),
        None => Err(format!("the event time column '{column}' is missing")),
    }
}

/// The schema of one Parquet file, from its footer.
pub fn file_schema(file: &str, options: &BTreeMap<String, String>) -> Result<Schema, String> {
    let mut frame = LazyFrame::scan_parquet(PlRefPath::new(file), scan_args(file, options, false)?)
        .map_err(|e| e.to_string())?;
    frame
        .collect_schema()
        .map(|s| s.as_ref().clone())
        .map_err(|e| e.to_string())
}

/// Rows in the files, from their footers.
pub fn row_count(files: &[String], options: &BTreeMap<String, String>) -> Result<i64, String> {
    let Some(first) = files.first() else {
        return Ok(0);
    };
    let paths: Vec<PlRefPath> = files.iter().map(|f| PlRefPath::new(f.as_str())).collect();
    let counted = LazyFrame::scan_parquet_files(paths.into(), scan_args(first, options, false)?)
        .and_then(|f| f.select([len()]).collect())
        .map_err(|e| e.to_string())?;
    let n = counted
        .columns()
        .first()
        .and_then(|c| c.get(0).ok())
        .and_then(|v| v.extract::<i64>())
        .unwrap_or(0);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(frame: LazyFrame) -> Vec<String> {
        let frame = frame.collect().unwrap();
        frame
            .column("k")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .flatten()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn rows_at_or_before_the_instant_are_kept_and_undated_rows_are_not() {
        let day = 86_400_000_000i64;
        let frame = df!(
            "ts" => [Some(0i64), Some(day), Some(day + 1), None],
            "k" => ["a", "b", "c", "d"]
        )
        .unwrap()
        .lazy()
        .with_column(col("ts").cast(DataType::Datetime(TimeUnit::Microseconds, None)));
        assert_eq!(
            keys(rows_until(frame, Some(("ts", day))).unwrap()),
            ["a", "b"]
        );
    }

    #[test]
    fn a_date_counts_as_its_midnight_and_zoned_nanoseconds_compare_as_instants() {
        let day = 86_400_000_000i64;
        let dates = df!("d" => [0i32, 1, 2], "k" => ["a", "b", "c"])
            .unwrap()
            .lazy()
            .with_column(col("d").cast(DataType::Date));
        assert_eq!(
            keys(rows_until(dates.clone(), Some(("d", day))).unwrap()),
            ["a", "b"]
        );
        assert_eq!(
            keys(rows_until(dates, Some(("d", day - 1))).unwrap()),
            ["a"]
        );
        let zoned = df!("t" => [0i64, day * 1000, day * 1000 + 1], "k" => ["a", "b", "c"])
            .unwrap()
            .lazy()
            .with_column(col("t").cast(DataType::Datetime(
                TimeUnit::Nanoseconds,
                Some(TimeZone::UTC),
            )));
        assert_eq!(
            keys(rows_until(zoned, Some(("t", day))).unwrap()),
            ["a", "b"]
        );
    }

    #[test]
    fn a_missing_or_untimed_event_column_is_an_error() {
        let frame = df!("k" => ["a"]).unwrap().lazy();
        assert!(rows_until(frame.clone(), Some(("ts", 0))).is_err());
        assert!(rows_until(frame, Some(("k", 0))).is_err());
    }
}
