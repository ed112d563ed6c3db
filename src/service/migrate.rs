//! The move, at start, of what earlier versions kept in the database: raw batches (LZ4 Arrow
//! IPC blobs) into each table's Delta table, one commit per batch, and snapshot blobs into
//! Parquet files. Every step commits on its own, and a batch's commit carries an application
//! transaction (its batch id), so a move that stops anywhere resumes without doubling a batch.

use super::raw_tables;
use super::{Result, ServiceError};
use crate::offline::OfflineStore;
use crate::store::Store;

/// The application id of the move's Delta transactions.
pub const MOVE_APP: &str = "feature-store-blob-move";

pub async fn run(store: &Store, offline: &OfflineStore) -> Result<()> {
    let lock = store.lock_blob_move().await?;
    let outcome = move_everything(store, offline).await;
    lock.release().await;
    outcome
}

async fn move_everything(store: &Store, offline: &OfflineStore) -> Result<()> {
    for table in store.tables_without_storage().await? {
        if raw_tables::schema_of(&table)?.is_empty() {
            continue;
        }
        raw_tables::ensure_managed(store, offline, table).await?;
    }
    for table_id in store.tables_with_blobs().await? {
        move_batches(store, offline, table_id).await?;
    }
    move_snapshots(store, offline).await
}

async fn move_batches(store: &Store, offline: &OfflineStore, table_id: i64) -> Result<()> {
    let Some(table) = store.get_raw_table(table_id).await? else {
        return Ok(());
    };
    let schema = raw_tables::schema_of(&table)?;
    let location = raw_tables::location_of(store, offline, &table)
        .await?
        .ok_or_else(|| {
            ServiceError::fault(format!("raw table {table_id} has batches but no schema"))
        })?;
    let batches = store.legacy_batches(table_id).await?;
    tracing::info!(
        table = %table.name,
        batches = batches.len(),
        "moving stored batches into the table's Delta table"
    );
    for batch in batches {
        // A batch committed by a move that stopped before recording it is the newest commit.
        let landed = offline.txn_version(&location, MOVE_APP).await?;
        let version = if landed.is_some_and(|v| v >= batch.id) {
            offline.pin_delta(&location).await?.version
        } else {
            let blob = store.legacy_batch_data(batch.id).await?;
            let polars_schema = schema.polars_schema();
            let parquet = super::blocking(move || {
                let mut frame = crate::engine::batches::decode_all(&[blob], &polars_schema)?;
                crate::offline::write_parquet(&mut frame)
            })
            .await?
            .map_err(ServiceError::fault)?;
            offline
                .append(
                    &location,
                    parquet.into(),
                    batch.row_count,
                    &[crate::offline::Txn {
                        app: MOVE_APP,
                        number: batch.id,
                    }],
                    crate::offline::Holds::Rows,
                    std::future::ready(()),
                )
                .await?
                .version
        };
        store.finish_moved_batch(table_id, &batch, version).await?;
    }
    Ok(())
}

async fn move_snapshots(store: &Store, offline: &OfflineStore) -> Result<()> {
    let snapshots = store.legacy_snapshots().await?;
    if !snapshots.is_empty() {
        tracing::info!(
            snapshots = snapshots.len(),
            "moving stored snapshots into files"
        );
    }
    for (snapshot_id, feature_id) in snapshots {
        let Some(blob) = store.legacy_snapshot_data(snapshot_id).await? else {
            continue;
        };
        let parquet = super::blocking(move || {
            let mut frame = crate::engine::result::snapshot_from_ipc(&blob)?;
            crate::offline::write_parquet(&mut frame)
        })
        .await?
        .map_err(ServiceError::fault)?;
        let relative = format!(
            "{}/moved-{snapshot_id}.parquet",
            offline
                .new_snapshot_path(feature_id)
                .rsplit_once('/')
                .map_or("snapshots", |(dir, _)| dir)
        );
        let location = offline.root().join(&relative);
        crate::offline::put_file(&location, parquet.into(), offline.options()).await?;
        store.set_snapshot_location(snapshot_id, &relative).await?;
    }
    Ok(())
}
