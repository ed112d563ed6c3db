//! Event time: keep the rows of a raw table that happened at or before an instant.

use polars::prelude::*;

/// The rows of `frame` whose `column` (a date or a datetime) is at or before `as_of_micros`
/// (microseconds since the Unix epoch, UTC). A date counts as its midnight, UTC; a row without
/// an event time is left out, since nobody can say it happened by then.
pub fn rows_until(frame: DataFrame, column: &str, as_of_micros: i64) -> Result<DataFrame, String> {
    let c = frame
        .column(column)
        .map_err(|_| format!("the event time column '{column}' is missing"))?;
    let mask: BooleanChunked = match c.dtype() {
        DataType::Datetime(unit, _) => {
            let limit = match unit {
                TimeUnit::Nanoseconds => as_of_micros.saturating_mul(1000),
                TimeUnit::Microseconds => as_of_micros,
                TimeUnit::Milliseconds => as_of_micros.div_euclid(1000),
            };
            let values = c.datetime().map_err(|e| e.to_string())?;
            values
                .physical()
                .iter()
                .map(|v| v.map(|v| v <= limit))
                .collect()
        }
        DataType::Date => {
            let day = as_of_micros.div_euclid(86_400_000_000) as i32;
            let values = c.date().map_err(|e| e.to_string())?;
            values
                .physical()
                .iter()
                .map(|v| v.map(|v| v <= day))
                .collect()
        }
        other => {
            return Err(format!(
                "the event time column '{column}' is {other}, not a date or datetime"
            ))
        }
    };
    let mask = mask
        .fill_null_with_values(false)
        .map_err(|e| e.to_string())?;
    frame.filter(&mask).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_at_or_before_the_instant_are_kept_and_undated_rows_are_not() {
        let day = 86_400_000_000i64;
        let frame = df!(
            "ts" => [Some(0i64), Some(day), Some(day + 1), None],
            "k" => ["a", "b", "c", "d"]
        )
        .unwrap();
        let frame = frame
            .lazy()
            .with_column(col("ts").cast(DataType::Datetime(TimeUnit::Microseconds, None)))
            .collect()
            .unwrap();
        let kept = rows_until(frame, "ts", day).unwrap();
        let keys: Vec<_> = kept
            .column("k")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .flatten()
            .collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn a_date_counts_as_its_midnight() {
        let frame = df!("d" => [0i32, 1, 2]).unwrap();
        let frame = frame
            .lazy()
            .with_column(col("d").cast(DataType::Date))
            .collect()
            .unwrap();
        let day = 86_400_000_000i64;
        assert_eq!(rows_until(frame.clone(), "d", day).unwrap().height(), 2);
        assert_eq!(rows_until(frame, "d", day - 1).unwrap().height(), 1);
    }
}
