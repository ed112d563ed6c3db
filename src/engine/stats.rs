//! Statistics of a snapshot's value columns, computed once at publish (in the compute worker)
//! and stored with the snapshot.
//!
//! Numbers (integers, floats, dates as days since 1970-01-01, datetimes as microseconds since
//! the epoch): count (rows, nulls included), nulls (NaN and infinities count as null, as they
//! are served), mean, sample standard deviation (n - 1), min, max, quantiles by linear
//! interpolation between closest ranks (numpy's default), and a 10-bin equal-width histogram
//! over [min, max] whose last bin includes max. Strings and booleans (and anything else, as
//! text): count, nulls, distinct, and the 20 most frequent values with exact counts (ties by
//! value).

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

/// Histogram bins of a numeric column.
pub const HISTOGRAM_BINS: usize = 10;
/// Most frequent values kept for a categorical column.
pub const TOP_VALUES: usize = 20;
/// A top value longer than this is cut (its count stays exact).
const MAX_VALUE_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnStats {
    Numeric(NumericStats),
    Categorical(CategoricalStats),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericStats {
    #[serde(rename = "type")]
    pub kind: String,
    pub count: u64,
    pub nulls: u64,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub quantiles: Option<Quantiles>,
    pub histogram: Histogram,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p01: f64,
    pub p05: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalStats {
    #[serde(rename = "type")]
    pub kind: String,
    pub count: u64,
    pub nulls: u64,
    pub distinct: u64,
    pub top: Vec<TopValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopValue {
    pub value: serde_json::Value,
    pub count: u64,
}

/// Stats of every column of `frame` but `key`, by column name.
pub fn frame_stats(frame: &DataFrame, key: &str) -> Result<BTreeMap<String, ColumnStats>, String> {
    let mut out = BTreeMap::new();
    for column in frame.columns() {
        if column.name().as_str() == key {
            continue;
        }
        let series = column.as_materialized_series();
        out.insert(column.name().to_string(), column_stats(series)?);
    }
    Ok(out)
}

/// Whether a column is summarised as numbers, and its type name as shown.
pub fn numeric_kind(dtype: &DataType) -> Option<&'static str> {
    match dtype {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Some("integer"),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => Some("integer"),
        DataType::Float32 | DataType::Float64 => Some("float"),
        DataType::Date => Some("date"),
        DataType::Datetime(_, _) => Some("datetime"),
        _ => None,
    }
}

/// A numeric column's values as f64 (dates in days, datetimes in microseconds), `None` for
/// nulls and non-finite values.
pub fn numbers(series: &Series) -> Result<Vec<Option<f64>>, String> {
    let as_numbers = match series.dtype() {
        DataType::Date => series
            .cast(&DataType::Int32)
            .and_then(|s| s.cast(&DataType::Float64)),
        DataType::Datetime(_, _) => series
            .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
            .and_then(|s| s.cast(&DataType::Int64))
            .and_then(|s| s.cast(&DataType::Float64)),
        _ => series.cast(&DataType::Float64),
    }
    .map_err(|e| e.to_string())?;
    let values = as_numbers.f64().map_err(|e| e.to_string())?;
    Ok(values.iter().map(|v| v.filter(|x| x.is_finite())).collect())
}

/// A categorical column's values as text (booleans as `true`/`false`), `None` for nulls.
pub fn categories(series: &Series) -> Result<Vec<Option<String>>, String> {
    let text = series.cast(&DataType::String).map_err(|e| e.to_string())?;
    let text = text.str().map_err(|e| e.to_string())?;
    Ok(text.iter().map(|v| v.map(str::to_string)).collect())
}

fn column_stats(series: &Series) -> Result<ColumnStats, String> {
    let count = series.len() as u64;
    if let Some(kind) = numeric_kind(series.dtype()) {
        let mut values: Vec<f64> = numbers(series)?.into_iter().flatten().collect();
        let nulls = count - values.len() as u64;
        return Ok(ColumnStats::Numeric(numeric(
            kind,
            count,
            nulls,
            &mut values,
        )));
    }
    let boolean = matches!(series.dtype(), DataType::Boolean);
    let kind = if boolean { "boolean" } else { "string" };
    // Counted over the column's own text, without a String per value.
    let text = series.cast(&DataType::String).map_err(|e| e.to_string())?;
    let text = text.str().map_err(|e| e.to_string())?;
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut nulls = 0;
    for v in text.iter() {
        match v {
            Some(v) => *counts.entry(v).or_default() += 1,
            None => nulls += 1,
        }
    }
    let mut ranked: Vec<(&str, u64)> = counts.iter().map(|(v, c)| (*v, *c)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let top = ranked
        .into_iter()
        .take(TOP_VALUES)
        .map(|(v, c)| TopValue {
            value: if boolean {
                serde_json::Value::Bool(v == "true")
            } else {
                serde_json::Value::String(v.chars().take(MAX_VALUE_CHARS).collect())
            },
            count: c,
        })
        .collect();
    Ok(ColumnStats::Categorical(CategoricalStats {
        kind: kind.into(),
        count,
        nulls,
        distinct: counts.len() as u64,
        top,
    }))
}

fn numeric(kind: &str, count: u64, nulls: u64, values: &mut [f64]) -> NumericStats {
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    let (mean, std) = match n {
        0 => (None, None),
        _ => {
            let mean = sum(values.iter().copied()) / n as f64;
            let std = (n > 1).then(|| {
                let squares = sum(values.iter().map(|v| (v - mean) * (v - mean)));
                (squares / (n - 1) as f64).sqrt()
            });
            (Some(mean), std)
        }
    };
    let quantiles = (n > 0).then(|| Quantiles {
        p01: quantile(values, 0.01),
        p05: quantile(values, 0.05),
        p25: quantile(values, 0.25),
        p50: quantile(values, 0.50),
        p75: quantile(values, 0.75),
        p95: quantile(values, 0.95),
        p99: quantile(values, 0.99),
    });
    NumericStats {
        kind: kind.into(),
        count,
        nulls,
        mean,
        std,
        min: values.first().copied(),
        max: values.last().copied(),
        quantiles,
        histogram: histogram(values),
    }
}

/// Neumaier's compensated sum: the mean of a million values keeps its last digits.
fn sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut total, mut carry) = (0.0f64, 0.0f64);
    for v in values {
        let t = total + v;
        if total.abs() >= v.abs() {
            carry += (total - t) + v;
        } else {
            carry += (v - t) + total;
        }
        total = t;
    }
    total + carry
}

/// The `q` quantile of sorted values, linearly interpolated between closest ranks.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn histogram(sorted: &[f64]) -> Histogram {
    let (Some(&min), Some(&max)) = (sorted.first(), sorted.last()) else {
        return Histogram {
            edges: Vec::new(),
            counts: Vec::new(),
        };
    };
    if min == max {
        return Histogram {
            edges: vec![min, max],
            counts: vec![sorted.len() as u64],
        };
    }
    let width = (max - min) / HISTOGRAM_BINS as f64;
    let edges = (0..=HISTOGRAM_BINS)
        .map(|i| {
            if i == HISTOGRAM_BINS {
                max
            } else {
                min + width * i as f64
            }
        })
        .collect();
    let mut counts = vec![0u64; HISTOGRAM_BINS];
    for v in sorted {
        let bin = (((v - min) / width) as usize).min(HISTOGRAM_BINS - 1);
        counts[bin] += 1;
    }
    Histogram { edges, counts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_stats_are_exact_on_a_small_column() {
        let s = Series::new(
            "x".into(),
            &[Some(1.0), None, Some(4.0), Some(f64::NAN), Some(2.0)],
        );
        let ColumnStats::Numeric(n) = column_stats(&s).unwrap() else {
            panic!("numeric")
        };
        assert_eq!((n.count, n.nulls), (5, 2));
        assert_eq!((n.min, n.max), (Some(1.0), Some(4.0)));
        assert!((n.mean.unwrap() - 7.0 / 3.0).abs() < 1e-12);
        // sample variance of 1, 2, 4: ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 7/3
        assert!((n.std.unwrap() - (7.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let q = n.quantiles.unwrap();
        assert_eq!(q.p50, 2.0);
        assert!((q.p25 - 1.5).abs() < 1e-12);
        assert_eq!(n.histogram.counts.iter().sum::<u64>(), 3);
        assert_eq!(n.histogram.edges.len(), HISTOGRAM_BINS + 1);
        assert_eq!(
            n.histogram.counts[HISTOGRAM_BINS - 1],
            1,
            "max is in the last bin"
        );
    }

    #[test]
    fn a_constant_or_empty_column_has_a_degenerate_histogram() {
        let s = Series::new("x".into(), &[3i64, 3, 3]);
        let ColumnStats::Numeric(n) = column_stats(&s).unwrap() else {
            panic!("numeric")
        };
        assert_eq!(n.histogram.edges, [3.0, 3.0]);
        assert_eq!(n.histogram.counts, [3]);
        assert_eq!(n.std, Some(0.0));
        let s = Series::new("x".into(), &[None::<f64>, None]);
        let ColumnStats::Numeric(n) = column_stats(&s).unwrap() else {
            panic!("numeric")
        };
        assert_eq!((n.mean, n.quantiles.is_none()), (None, true));
        assert!(n.histogram.counts.is_empty());
    }

    #[test]
    fn categorical_stats_rank_by_count_then_value() {
        let s = Series::new(
            "c".into(),
            &[Some("b"), Some("a"), None, Some("b"), Some("c")],
        );
        let ColumnStats::Categorical(c) = column_stats(&s).unwrap() else {
            panic!("categorical")
        };
        assert_eq!((c.count, c.nulls, c.distinct), (5, 1, 3));
        let top: Vec<(String, u64)> = c
            .top
            .iter()
            .map(|t| (t.value.as_str().unwrap().to_string(), t.count))
            .collect();
        assert_eq!(top, [("b".into(), 2), ("a".into(), 1), ("c".into(), 1)]);
        let s = Series::new("flag".into(), &[true, false, true]);
        let ColumnStats::Categorical(c) = column_stats(&s).unwrap() else {
            panic!("categorical")
        };
        assert_eq!(c.kind, "boolean");
        assert_eq!(c.top[0].value, serde_json::Value::Bool(true));
    }
}
