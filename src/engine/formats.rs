//! Bulk ingest formats (CSV, Parquet) into a frame of the table's schema, with the same rules
//! and messages as JSON rows: every schema column present, values of the declared type, nulls
//! allowed, other columns not stored.

use std::io::Cursor;
use std::sync::Arc;

use polars::prelude::*;

use super::schema::{parse_date, parse_datetime_micros, ColumnType, TableSchema};

/// Every schema column must be among the frame's columns.
fn check_columns(schema: &TableSchema, frame: &DataFrame) -> Result<(), String> {
    let present: Vec<&str> = frame
        .get_column_names()
        .into_iter()
        .map(|n| n.as_str())
        .collect();
    let missing = schema.missing_columns(&present);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("Missing required columns: {}", missing.join(", ")))
    }
}

/// The name a value type has in the original's messages (Python's type names).
fn python_type(dtype: &DataType) -> String {
    match dtype {
        DataType::String => "str".into(),
        DataType::Boolean => "bool".into(),
        DataType::Date => "date".into(),
        DataType::Datetime(_, _) => "datetime".into(),
        d if d.is_integer() => "int".into(),
        d if d.is_float() => "float".into(),
        other => other.to_string(),
    }
}

/// Parse a CSV body with a header row. Integer, float and boolean columns are parsed by polars;
/// date and datetime columns are read as text and parsed exactly as JSON rows are.
pub fn frame_from_csv(schema: &TableSchema, body: Vec<u8>) -> Result<DataFrame, String> {
    let header = CsvReadOptions::default()
        .with_has_header(true)
        .with_n_rows(Some(0))
        .with_infer_schema_length(Some(0))
        .into_reader_with_file_handle(Cursor::new(body.as_slice()))
        .finish()
        .map_err(|e| format!("CSV does not parse: {e}"))?;
    check_columns(schema, &header)?;
    let read_schema: Schema = header
        .get_column_names()
        .into_iter()
        .map(|name| {
            let dtype = schema
                .columns()
                .find(|(n, _, _)| *n == name.as_str())
                .map_or(DataType::String, |(_, ty, _)| match ty {
                    ColumnType::Date | ColumnType::Datetime => DataType::String,
                    other => other.dtype(),
                });
            Field::new(name.clone(), dtype)
        })
        .collect();
    let wanted: Arc<[PlSmallStr]> = schema.column_names().map(PlSmallStr::from).collect();
    let frame = CsvReadOptions::default()
        .with_has_header(true)
        .with_schema(Some(Arc::new(read_schema)))
        .with_columns(Some(wanted))
        .into_reader_with_file_handle(Cursor::new(body))
        .finish()
        .map_err(|e| first_line(&e.to_string()))?;
    if frame.height() == 0 {
        return Err("No data provided".into());
    }
    conform(schema, frame)
}

/// Read a Parquet file and convert its columns to the schema's types where the conversion is
/// lossless (any integer to integer, any number to float, text to date/datetime as JSON does).
pub fn frame_from_parquet(schema: &TableSchema, body: Vec<u8>) -> Result<DataFrame, String> {
    let frame = ParquetReader::new(Cursor::new(body))
        .finish()
        .map_err(|e| format!("Parquet does not parse: {}", first_line(&e.to_string())))?;
    check_columns(schema, &frame)?;
    if frame.height() == 0 {
        return Err("No data provided".into());
    }
    conform(schema, frame)
}

/// When a Parquet body already is what the table stores (exactly the schema's columns, each of
/// its stored type: text, 64-bit integers and floats, booleans, dates, microsecond UTC
/// datetimes), its rows are valid by construction and the file can be stored as it came,
/// without decoding it. Returns its row count then; `None` means "convert it".
pub fn parquet_as_stored(schema: &TableSchema, body: &[u8]) -> Option<usize> {
    let mut reader = ParquetReader::new(Cursor::new(body));
    let file_schema = reader.schema().ok()?;
    if file_schema.len() != schema.columns().count() {
        return None;
    }
    for (name, ty, _) in schema.columns() {
        let field = file_schema.get(name)?;
        let stored = match ty {
            ColumnType::Datetime => DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
            other => other.dtype(),
        };
        if DataType::from_arrow_field(field) != stored {
            return None;
        }
    }
    reader.num_rows().ok().filter(|rows| *rows > 0)
}

/// Select the schema's columns and bring each to its declared type, or say which one is wrong.
fn conform(schema: &TableSchema, frame: DataFrame) -> Result<DataFrame, String> {
    let mut columns = Vec::new();
    let mut errors = Vec::new();
    for (name, ty, declared) in schema.columns() {
        let column = frame.column(name).map_err(|e| e.to_string())?;
        match conform_column(column, ty) {
            Ok(c) => columns.push(c),
            Err(got) => errors.push(format!("Column {name} should be {declared}, got {got}")),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    DataFrame::new(frame.height(), columns).map_err(|e| e.to_string())
}

/// The converted column, or what the values were (for the message).
fn conform_column(column: &Column, ty: ColumnType) -> Result<Column, String> {
    let dtype = column.dtype().clone();
    let got = || python_type(&dtype);
    let strict = |c: &Column, to: &DataType| c.strict_cast(to).map_err(|_| got());
    match (ty, &dtype) {
        (_, DataType::Null) => column.cast(&ty.dtype()).map_err(|_| got()),
        (ColumnType::String, DataType::String) => Ok(column.clone()),
        (ColumnType::Integer, d) if d.is_integer() => strict(column, &DataType::Int64),
        (ColumnType::Float, d) if d.is_primitive_numeric() => strict(column, &DataType::Float64),
        (ColumnType::Boolean, DataType::Boolean) => Ok(column.clone()),
        (ColumnType::Date, DataType::Date) => Ok(column.clone()),
        (ColumnType::Datetime, DataType::Datetime(_, _) | DataType::Date) => {
            strict(column, &ty.dtype())
        }
        (ColumnType::Date, DataType::String) => parse_text(column, parse_date, &ty.dtype()),
        (ColumnType::Datetime, DataType::String) => {
            parse_text(column, parse_datetime_micros, &ty.dtype())
        }
        _ => Err(got()),
    }
}

/// Parse a text column value by value (as JSON rows are parsed) into `dtype`'s physical type.
fn parse_text<T>(
    column: &Column,
    parse: fn(&str) -> Option<T>,
    dtype: &DataType,
) -> Result<Column, String>
where
    Series: NamedFrom<Vec<Option<T>>, [Option<T>]>,
{
    let text = column.str().map_err(|_| python_type(column.dtype()))?;
    let mut out: Vec<Option<T>> = Vec::with_capacity(text.len());
    for v in text.iter() {
        out.push(match v {
            None => None,
            Some(s) => Some(parse(s).ok_or_else(|| format!("str {s:?}"))?),
        });
    }
    Column::new(column.name().clone(), out)
        .cast(dtype)
        .map_err(|e| e.to_string())
}

fn first_line(msg: &str) -> String {
    msg.lines()
        .next()
        .unwrap_or(msg)
        .chars()
        .take(500)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parquet_body_of_exactly_the_stored_types_is_kept_as_it_came() {
        let def = [("k", "string"), ("n", "integer"), ("t", "datetime")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let schema = TableSchema::from_definition(&def).unwrap();
        let write = |mut frame: DataFrame| {
            let mut out = Vec::new();
            ParquetWriter::new(&mut out).finish(&mut frame).unwrap();
            out
        };
        let t = |zone: Option<TimeZone>| {
            Int64Chunked::from_vec("t".into(), vec![0, 1])
                .into_datetime(TimeUnit::Microseconds, zone)
                .into_column()
        };
        let frame = |n: Column, t: Column| {
            DataFrame::new(2, vec![Column::new("k".into(), ["a", "b"]), n, t]).unwrap()
        };
        let stored = frame(Column::new("n".into(), [1i64, 2]), t(Some(TimeZone::UTC)));
        assert_eq!(parquet_as_stored(&schema, &write(stored)), Some(2));
        // Narrower integers, naive datetimes, extra columns: converted, not kept.
        let narrow = frame(Column::new("n".into(), [1i32, 2]), t(Some(TimeZone::UTC)));
        assert_eq!(parquet_as_stored(&schema, &write(narrow)), None);
        let naive = frame(Column::new("n".into(), [1i64, 2]), t(None));
        assert_eq!(parquet_as_stored(&schema, &write(naive)), None);
        let mut extra = frame(Column::new("n".into(), [1i64, 2]), t(Some(TimeZone::UTC)));
        extra
            .with_column(Column::new("x".into(), [1i64, 2]))
            .unwrap();
        assert_eq!(parquet_as_stored(&schema, &write(extra)), None);
        assert_eq!(parquet_as_stored(&schema, b"not parquet"), None);
    }

    fn schema() -> TableSchema {
        let def = [
            ("user_id", "string"),
            ("amount", "float"),
            ("n", "int"),
            ("day", "date"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        TableSchema::from_definition(&def).unwrap()
    }

    #[test]
    fn csv_rows_are_typed_and_extra_columns_dropped() {
        let csv = "user_id,amount,n,day,extra\nu1,1.5,2,2024-01-15,x\nu2,,3,,y\n";
        let df = frame_from_csv(&schema(), csv.as_bytes().to_vec()).unwrap();
        assert_eq!(df.height(), 2);
        assert_eq!(df.width(), 4);
        assert_eq!(df.column("amount").unwrap().dtype(), &DataType::Float64);
        assert_eq!(df.column("day").unwrap().dtype(), &DataType::Date);
        assert_eq!(df.column("amount").unwrap().null_count(), 1);
    }

    #[test]
    fn csv_missing_columns_are_listed() {
        let err = frame_from_csv(&schema(), b"user_id\nu1\n".to_vec()).unwrap_err();
        assert_eq!(err, "Missing required columns: amount, day, n");
    }

    #[test]
    fn csv_bad_values_are_refused() {
        let err = frame_from_csv(
            &schema(),
            b"user_id,amount,n,day\nu1,abc,1,2024-01-01\n".to_vec(),
        )
        .unwrap_err();
        assert!(err.contains("abc") || err.contains("amount"), "{err}");
        let err = frame_from_csv(
            &schema(),
            b"user_id,amount,n,day\nu1,1,1,2024-13-01\n".to_vec(),
        )
        .unwrap_err();
        assert!(err.starts_with("Column day should be date"), "{err}");
    }

    #[test]
    fn parquet_columns_are_converted_or_refused_by_type() {
        let mut df = df!(
            "user_id" => ["a", "b"],
            "amount" => [1i32, 2],
            "n" => [1i16, 2],
            "day" => ["2024-01-01", "2024-01-02"]
        )
        .unwrap();
        let mut buf = Vec::new();
        ParquetWriter::new(&mut buf).finish(&mut df).unwrap();
        let out = frame_from_parquet(&schema(), buf).unwrap();
        assert_eq!(out.column("amount").unwrap().dtype(), &DataType::Float64);
        assert_eq!(out.column("n").unwrap().dtype(), &DataType::Int64);

        let mut bad =
            df!("user_id" => [1i64], "amount" => [1.0], "n" => [1i64], "day" => ["2024-01-01"])
                .unwrap();
        let mut buf = Vec::new();
        ParquetWriter::new(&mut buf).finish(&mut bad).unwrap();
        let err = frame_from_parquet(&schema(), buf).unwrap_err();
        assert_eq!(err, "Column user_id should be string, got int");
    }
}
