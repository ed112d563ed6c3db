//! Datasets registered where they already live, read-only: a Delta table (its version is the
//! freshness mark) or a directory of Parquet files (its listing is: names, sizes, times).

use futures::TryStreamExt;
use polars::prelude::{DataType, Schema};
use sha2::{Digest, Sha256};

use super::delta::Pinned;
use super::location::Location;
use super::{OfflineError, OfflineStore, Result};
use crate::engine::schema::ColumnType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalFormat {
    Delta,
    Parquet,
}

impl ExternalFormat {
    pub fn parse(s: &str) -> Option<ExternalFormat> {
        match s {
            "delta" => Some(ExternalFormat::Delta),
            "parquet" => Some(ExternalFormat::Parquet),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExternalFormat::Delta => "delta",
            ExternalFormat::Parquet => "parquet",
        }
    }
}

/// What an external dataset holds now.
#[derive(Debug, Clone)]
pub struct Found {
    /// Columns with a type a raw table can have, in the dataset's order.
    pub columns: Vec<(String, ColumnType)>,
    /// Columns of other types (lists, structs, binary), which SQL over the table cannot see.
    pub skipped: Vec<String>,
    pub pinned: Pinned,
    /// A Parquet dataset's listing; `None` for Delta.
    pub fingerprint: Option<String>,
}

/// The raw-table type of a polars column type, if it has one.
pub fn column_type(dtype: &DataType) -> Option<ColumnType> {
    Some(match dtype {
        DataType::String => ColumnType::String,
        DataType::Boolean => ColumnType::Boolean,
        DataType::Date => ColumnType::Date,
        DataType::Datetime(_, _) => ColumnType::Datetime,
        d if d.is_integer() => ColumnType::Integer,
        d if d.is_float() || d.is_decimal() => ColumnType::Float,
        _ => return None,
    })
}

fn split_columns(schema: &Schema) -> (Vec<(String, ColumnType)>, Vec<String>) {
    let mut columns = Vec::new();
    let mut skipped = Vec::new();
    for (name, dtype) in schema.iter() {
        match column_type(dtype) {
            Some(ty) => columns.push((name.to_string(), ty)),
            None => skipped.push(name.to_string()),
        }
    }
    (columns, skipped)
}

impl OfflineStore {
    /// Read an external dataset's schema and current version.
    pub async fn inspect_external(
        &self,
        format: ExternalFormat,
        location: &Location,
    ) -> Result<Found> {
        match format {
            ExternalFormat::Delta => {
                if !self.delta_exists(location).await? {
                    return Err(OfflineError::Invalid(format!(
                        "{} holds no Delta table (no _delta_log/00000000000000000000.json)",
                        location.uri()
                    )));
                }
                let pinned = self.pin_delta(location).await?;
                let arrow = self.delta_schema(location).await?;
                let mut schema = Schema::default();
                for field in arrow.fields() {
                    let dtype = DataType::from_arrow_dtype(&polars_field_type(field.data_type()));
                    schema.insert(field.name().as_str().into(), dtype);
                }
                let (columns, skipped) = split_columns(&schema);
                Ok(Found {
                    columns,
                    skipped,
                    pinned,
                    fingerprint: None,
                })
            }
            ExternalFormat::Parquet => {
                let (files, fingerprint) = self.list_parquet(location).await?;
                let Some(first) = files.first().cloned() else {
                    return Err(OfflineError::Invalid(format!(
                        "{} holds no .parquet files",
                        location.uri()
                    )));
                };
                let options = self.options().clone();
                let all = files.clone();
                let (schema, total_rows) = tokio::task::spawn_blocking(move || {
                    let schema = crate::engine::scan::file_schema(&first, &options)?;
                    let rows = crate::engine::scan::row_count(&all, &options)?;
                    Ok::<_, String>((schema, rows))
                })
                .await
                .map_err(OfflineError::storage)?
                .map_err(|e| OfflineError::Invalid(format!("reading the Parquet files: {e}")))?;
                let (columns, skipped) = split_columns(&schema);
                Ok(Found {
                    columns,
                    skipped,
                    pinned: Pinned {
                        // A dataset's first listing is its version 1.
                        version: 1,
                        files,
                        total_rows,
                        partitioned: false,
                        txns: Vec::new(),
                    },
                    fingerprint: Some(fingerprint),
                })
            }
        }
    }

    /// The `.parquet` files under `location` (hidden names, starting with `_` or `.`, left
    /// out), sorted, and a fingerprint of the listing: names, sizes and modification times.
    pub async fn list_parquet(&self, location: &Location) -> Result<(Vec<String>, String)> {
        let store = location.store(self.options())?;
        let mut listed: Vec<_> = store.list(None).try_collect().await?;
        listed.retain(|m| {
            let key = m.location.as_ref();
            key.ends_with(".parquet")
                && !key
                    .split('/')
                    .any(|part| part.starts_with('_') || part.starts_with('.'))
        });
        listed.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        let mut digest = Sha256::new();
        let mut files = Vec::with_capacity(listed.len());
        for meta in &listed {
            digest.update(
                format!(
                    "{}\t{}\t{}\n",
                    meta.location,
                    meta.size,
                    meta.last_modified.timestamp_micros()
                )
                .as_bytes(),
            );
            files.push(location.join(meta.location.as_ref()).uri());
        }
        let fingerprint = digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok((files, fingerprint))
    }
}

/// The arrow-rs type as polars' arrow knows it, for the types a raw table can hold; anything
/// else becomes `Null` (skipped).
fn polars_field_type(
    dtype: &deltalake::arrow::datatypes::DataType,
) -> polars::prelude::ArrowDataType {
    use deltalake::arrow::datatypes::DataType as A;
    use polars::prelude::{ArrowDataType as P, ArrowTimeUnit};
    match dtype {
        A::Utf8 | A::LargeUtf8 | A::Utf8View => P::Utf8View,
        A::Boolean => P::Boolean,
        A::Int8 => P::Int8,
        A::Int16 => P::Int16,
        A::Int32 => P::Int32,
        A::Int64 => P::Int64,
        A::UInt8 => P::UInt8,
        A::UInt16 => P::UInt16,
        A::UInt32 => P::UInt32,
        A::UInt64 => P::UInt64,
        A::Float16 | A::Float32 => P::Float32,
        A::Float64 | A::Decimal128(_, _) | A::Decimal256(_, _) => P::Float64,
        A::Date32 | A::Date64 => P::Date32,
        A::Timestamp(_, _) => P::Timestamp(ArrowTimeUnit::Microsecond, None),
        _ => P::Null,
    }
}
