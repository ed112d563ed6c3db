//! Single files: Parquet bytes written from a frame, put at a location, read back.

use bytes::Bytes;
use object_store::ObjectStoreExt;
use polars::prelude::*;

use super::location::{s3_bucket_store, Location, StorageOptions};
use super::{OfflineError, Result};

/// A frame as zstd Parquet. Datetimes are written as UTC instants (Delta's `timestamp`; a
/// naive one would be `timestamp_ntz`, which older readers refuse).
pub fn write_parquet(frame: &mut DataFrame) -> Result<Vec<u8>, String> {
    let naive: Vec<PlSmallStr> = frame
        .columns()
        .iter()
        .filter(|c| matches!(c.dtype(), DataType::Datetime(_, None)))
        .map(|c| c.name().clone())
        .collect();
    for name in naive {
        let utc = frame
            .column(&name)
            .and_then(|c| {
                c.cast(&DataType::Datetime(
                    TimeUnit::Microseconds,
                    Some(TimeZone::UTC),
                ))
            })
            .map_err(|e| e.to_string())?;
        frame.with_column(utc).map_err(|e| e.to_string())?;
    }
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .with_compression(ParquetCompression::Zstd(None))
        .with_statistics(StatisticsOptions::default())
        .finish(frame)
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Put `bytes` at `location` (a file path or an `s3://` key), replacing nothing that readers
/// could see half-written: a local file is written beside and renamed into place.
pub async fn put_file(location: &Location, bytes: Bytes, options: &StorageOptions) -> Result<()> {
    match location {
        Location::Local(path) => {
            let dir = path.parent().ok_or_else(|| {
                OfflineError::Invalid(format!("{} has no parent", path.display()))
            })?;
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| OfflineError::io(dir, e))?;
            let partial = path.with_extension("partial");
            tokio::fs::write(&partial, &bytes)
                .await
                .map_err(|e| OfflineError::io(&partial, e))?;
            tokio::fs::rename(&partial, path)
                .await
                .map_err(|e| OfflineError::io(path, e))
        }
        Location::S3(url) => {
            let store = s3_bucket_store(url, options)?;
            let key = object_store::path::Path::from(url.path().trim_matches('/'));
            store.put(&key, bytes.into()).await?;
            Ok(())
        }
    }
}

/// The bytes of one file.
pub async fn get_file(location: &Location, options: &StorageOptions) -> Result<Bytes> {
    match location {
        Location::Local(path) => tokio::fs::read(path)
            .await
            .map(Bytes::from)
            .map_err(|e| OfflineError::io(path, e)),
        Location::S3(url) => {
            let store = s3_bucket_store(url, options)?;
            let key = object_store::path::Path::from(url.path().trim_matches('/'));
            Ok(store.get(&key).await?.bytes().await?)
        }
    }
}

/// A snapshot file as a frame (entity key first).
pub async fn read_snapshot(location: &Location, options: &StorageOptions) -> Result<DataFrame> {
    let bytes = get_file(location, options).await?;
    tokio::task::spawn_blocking(move || {
        ParquetReader::new(std::io::Cursor::new(bytes))
            .finish()
            .map_err(|e| OfflineError::Invalid(format!("a snapshot file is unreadable: {e}")))
    })
    .await
    .map_err(OfflineError::storage)?
}
