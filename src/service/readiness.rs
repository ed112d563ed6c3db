//! Readiness of the data location: it answers, and it holds every table the database
//! registers. A replica pointed at another directory than the others (replicas must share one
//! data location) is not ready, and says why.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::offline::OfflineStore;
use crate::store::Store;

/// How long one check's answer stands: listing many tables on object storage per `/ready`
/// would cost more than it tells.
const CHECK_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct ReadyCache(Mutex<Option<(Instant, Result<(), String>)>>);

impl ReadyCache {
    /// `Err` with the reason when the data location cannot serve this replica's tables.
    pub async fn data_location(&self, offline: &OfflineStore, store: &Store) -> Result<(), String> {
        let mut cached = self.0.lock().await;
        if let Some((at, answer)) = cached.as_ref() {
            if at.elapsed() < CHECK_EVERY {
                return answer.clone();
            }
        }
        let answer = check(offline, store).await;
        *cached = Some((Instant::now(), answer.clone()));
        answer
    }
}

async fn check(offline: &OfflineStore, store: &Store) -> Result<(), String> {
    let root = offline.root().uri();
    offline
        .check_root()
        .await
        .map_err(|e| format!("Data location {root} unavailable: {e}"))?;
    let tables = store
        .list_raw_tables()
        .await
        .map_err(|e| format!("Database unavailable: {e}"))?;
    for table in tables {
        let Some(stored) = &table.storage_uri else {
            continue;
        };
        let location = offline
            .resolve(stored)
            .map_err(|e| format!("Raw table '{}': {e}", table.name))?;
        let present = match table.source_format.as_deref() {
            Some("parquet") => offline
                .list_parquet(&location)
                .await
                .map(|(files, _)| !files.is_empty()),
            _ => offline.delta_exists(&location).await,
        };
        match present {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "Data location {root} does not hold raw table '{}' (expected at {}): every \
                     replica over one database must use the same DATA_DIR",
                    table.name,
                    location.uri()
                ))
            }
            Err(e) => {
                return Err(format!(
                    "Raw table '{}' at {} cannot be read: {e}",
                    table.name,
                    location.uri()
                ))
            }
        }
    }
    Ok(())
}
