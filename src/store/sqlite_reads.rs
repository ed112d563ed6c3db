//! Vector point reads on SQLite through rusqlite, on the calling thread.
//!
//! sqlx runs every SQLite connection on a worker thread of its own and talks to it over a
//! channel; for a single indexed lookup that hand-off cost more than the query (52% of CPU in
//! futex wake-ups in the uncached-serving profile, against ~5% in SQLite). A read-only
//! connection per thread answers the same lookup in a few microseconds, short enough to run
//! inline on the async worker.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::VectorRow;

thread_local! {
    static CONNECTIONS: RefCell<HashMap<PathBuf, Connection>> = RefCell::new(HashMap::new());
}

const GET_VECTOR: &str = "SELECT entity_id, feature_values, computed_at FROM feature_vectors \
                          WHERE feature_version_id = ?1 AND entity_id = ?2";

#[derive(Clone, Debug)]
pub struct FastReads {
    path: PathBuf,
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

impl FastReads {
    pub fn new(path: &Path) -> Self {
        FastReads {
            path: path.to_path_buf(),
        }
    }

    /// `Err` means "ask sqlx instead" (the caller falls back), not a failed request.
    pub fn get_vector(
        &self,
        version_id: i64,
        entity_id: &str,
    ) -> Result<Option<VectorRow>, String> {
        CONNECTIONS.with(|cell| {
            let mut connections = cell.borrow_mut();
            if !connections.contains_key(&self.path) {
                let conn = open(&self.path).map_err(|e| e.to_string())?;
                connections.insert(self.path.clone(), conn);
            }
            let conn = connections
                .get(&self.path)
                .ok_or_else(|| "no connection".to_string())?;
            let mut stmt = conn.prepare_cached(GET_VECTOR).map_err(|e| e.to_string())?;
            let row: Option<(String, String, String)> = stmt
                .query_row(rusqlite::params![version_id, entity_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
                .map_err(|e| e.to_string())?;
            row.map(|(entity_id, feature_values, computed_at)| {
                let computed_at = DateTime::parse_from_rfc3339(&computed_at)
                    .map_err(|e| format!("computed_at {computed_at:?}: {e}"))?
                    .with_timezone(&Utc);
                Ok(VectorRow {
                    entity_id,
                    feature_values,
                    computed_at,
                })
            })
            .transpose()
        })
    }
}
