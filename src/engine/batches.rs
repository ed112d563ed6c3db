//! Stored raw rows: each ingest is one LZ4-compressed Arrow IPC batch, so compute reads
//! columns straight back into polars without touching per-row JSON.

use std::io::Cursor;

use polars::prelude::*;

pub fn encode(frame: &mut DataFrame) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    IpcWriter::new(&mut buf)
        .with_compression(Some(IpcCompression::LZ4))
        .finish(frame)
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Decode stored batches into one frame with `schema`'s columns, in ingest order.
/// Columns are selected by name so batches written under an older column order still line up.
pub fn decode_all(blobs: &[Vec<u8>], schema: &Schema) -> Result<DataFrame, String> {
    let names: Vec<PlSmallStr> = schema.iter_names().cloned().collect();
    let mut frames = Vec::with_capacity(blobs.len());
    for blob in blobs {
        let df = IpcReader::new(Cursor::new(blob.as_slice()))
            .finish()
            .map_err(|e| e.to_string())?;
        frames.push(
            df.select(names.iter().cloned())
                .map_err(|e| e.to_string())?,
        );
    }
    match frames.len() {
        0 => Ok(DataFrame::empty_with_schema(schema)),
        1 => Ok(frames.pop().unwrap_or_default()),
        _ => {
            let lazies: Vec<LazyFrame> = frames.into_iter().map(IntoLazy::lazy).collect();
            concat(lazies, UnionArgs::default())
                .and_then(|lf| lf.collect())
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_in_order() {
        let mut a = df!("k" => ["x", "y"], "v" => [1i64, 2]).unwrap();
        let mut b = df!("k" => ["z"], "v" => [3i64]).unwrap();
        let blobs = vec![encode(&mut a).unwrap(), encode(&mut b).unwrap()];
        let schema = a.schema().as_ref().clone();
        let all = decode_all(&blobs, &schema).unwrap();
        assert_eq!(all.height(), 3);
        assert_eq!(all.column("v").unwrap().i64().unwrap().get(2), Some(3));
    }
}
