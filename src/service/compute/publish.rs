//! A compute's second half: the worker's vectors written as a new generation while they
//! arrive, then served in one small transaction, and the change announced; or, when anything
//! fails, the generation and the snapshot file abandoned. It runs to its end even if the
//! client that asked has gone (`service::detached`).

use chrono::{DateTime, Utc};

use super::compute_failed;
use crate::offline::OfflineStore;
use crate::served::VersionMeta;
use crate::service::jobs::Tracked;
use crate::service::{changed, lookup, AppState, Result, ServiceError};
use crate::store::{
    DataMark, PublishRequest, Published, SnapshotKind, Store, StoreError, VectorRows,
};
use crate::worker::protocol::VectorChunk;
use crate::worker::{Reply, Running};

/// Everything a publish needs once the worker has replied, owned, so it can outlive the
/// request.
pub(super) struct Publication {
    pub state: AppState,
    pub feature_id: i64,
    pub version: String,
    /// The version's id when the work began, if it existed.
    pub existing: Option<i64>,
    pub logic: String,
    pub entity_key: String,
    pub tracked: Tracked,
    pub kind: SnapshotKind,
    /// Spark's result directory, removed once the worker has read it.
    pub spark_result: Option<crate::service::spark::ResultDir>,
    pub reply: Reply,
    /// Whether the vectors are written at all (a result older than the served one is history).
    pub may_serve: bool,
    pub valid_from_as_of: Option<DateTime<Utc>>,
    /// The snapshot file the worker wrote, under the data location.
    pub location: String,
    /// The table version the result reflects, recorded with it.
    pub data: Option<DataMark>,
    /// Whether this publish also finishes the job (the last step of a backfill, a compute).
    pub finishes: bool,
}

impl Publication {
    /// Write the vectors, serve them, announce the change; abandon what was written on any
    /// failure.
    pub async fn run(self, running: Running) -> Result<(Published, DateTime<Utc>, Written)> {
        // Removed once the worker has read it and the publish is done, whatever the outcome.
        let _spark_result = self.spark_result;
        let output_schema =
            serde_json::to_string(&self.reply.output_schema).map_err(ServiceError::fault)?;
        let generation = match self.may_serve {
            true => Some(
                self.state
                    .store
                    .begin_generation(Some(self.tracked.id()), self.state.clock.now())
                    .await?,
            ),
            false => None,
        };
        let written = write_vectors(&self.state.store, generation, running).await;
        let published = match written {
            Ok(written) => {
                let computed_at = self.state.clock.now();
                let valid_from = self.valid_from_as_of.unwrap_or(computed_at);
                self.state
                    .store
                    .publish(&PublishRequest {
                        feature_id: self.feature_id,
                        version: &self.version,
                        existing: self.existing,
                        computation_logic: &self.logic,
                        entity_key: &self.entity_key,
                        output_schema: &output_schema,
                        computed_at,
                        entity_count: self.reply.rows as i64,
                        generation,
                        valid_from,
                        kind: self.kind,
                        location: &self.location,
                        data: self.data,
                        stats: self.reply.stats.as_deref(),
                        job: self.finishes.then(|| self.tracked.id()),
                    })
                    .await
                    .map(|p| (p, valid_from, written))
                    .map_err(|e| match e {
                        StoreError::StillReferenced => lookup::feature_not_found(self.feature_id),
                        StoreError::VersionGone => ServiceError::NotFound(format!(
                            "Version '{}' was deleted while it was computed; nothing was published",
                            self.version
                        )),
                        e => e.into(),
                    })
            }
            Err(e) => Err(e),
        };
        let (published, valid_from, written) = match published {
            Ok(done) => done,
            Err(e) => {
                abandon(
                    &self.state.store,
                    &self.state.offline,
                    generation,
                    &self.location,
                );
                return Err(e);
            }
        };
        changed::announce(&self.state, published.changed()).await;
        if self.finishes {
            self.tracked.finished_by_publish();
        }
        if published.served {
            // Batch serving loads a version whole on first use; one too big for its cap is
            // known now, from what was written, and never loaded.
            let meta = VersionMeta {
                version_id: published.version_id,
                entity_key: self.entity_key.as_str().into(),
                generation: published.generation,
                entity_count: Some(self.reply.rows as i64),
                computed_at: None,
                freshness: Default::default(),
            };
            self.state
                .cache
                .note_size(meta, written.bytes, self.reply.rows as u64)
                .await;
        }
        Ok((published, valid_from, written))
    }
}

/// What writing a generation's vectors took.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Written {
    /// Bytes of entity ids and values.
    pub bytes: u64,
    /// Waiting for the worker's chunks, and writing them to the database.
    pub waited: std::time::Duration,
    pub wrote: std::time::Duration,
}

/// Write the worker's vectors under `generation` as they arrive, a chunk at a time, then wait
/// for the worker to exit. Without a generation there are none to write.
async fn write_vectors(
    store: &Store,
    generation: Option<i64>,
    mut running: Running,
) -> Result<Written> {
    let Some(generation) = generation else {
        running.finish().await.map_err(compute_failed)?;
        return Ok(Written::default());
    };
    let mut writer = store.vector_writer(generation).await?;
    let mut written = Written::default();
    loop {
        let waiting = std::time::Instant::now();
        let next = running.next_chunk().await;
        written.waited += waiting.elapsed();
        let chunk = match next {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                writer.abort().await;
                return Err(compute_failed(e));
            }
        };
        written.bytes += chunk.text_bytes() as u64;
        let writing = std::time::Instant::now();
        let stored = writer.write(chunk).await;
        written.wrote += writing.elapsed();
        if let Err(e) = stored {
            writer.abort().await;
            return Err(e.into());
        }
    }
    let writing = std::time::Instant::now();
    writer.finish().await?;
    written.wrote += writing.elapsed();
    running.finish().await.map_err(compute_failed)?;
    Ok(written)
}

/// The worker's chunk, read as the rows the store writes.
impl VectorRows for VectorChunk {
    fn count(&self) -> usize {
        self.rows as usize
    }

    fn text_bytes(&self) -> usize {
        // The framing (two u32 lengths a row) is all that is not ids and values.
        self.bytes.len().saturating_sub(8 * self.rows as usize)
    }

    fn rows(&self) -> impl Iterator<Item = std::result::Result<(&str, &str), String>> {
        self.iter()
    }
}

/// A publish that failed after its worker replied: its vectors and snapshot file are nobody's.
fn abandon(store: &Store, offline: &OfflineStore, generation: Option<i64>, location: &str) {
    let (store, offline) = (store.clone(), offline.clone());
    let location = location.to_string();
    tokio::spawn(async move {
        if let Some(g) = generation {
            if let Err(e) = store.retire_generation(g).await {
                tracing::warn!(generation = g, error = %e, "could not retire a generation");
            }
        }
        if let Ok(file) = offline.resolve(&location) {
            offline.remove_file(&file).await;
        }
        if let Some(g) = generation {
            changed::drop_generations(&store, vec![g]);
        }
    });
}
