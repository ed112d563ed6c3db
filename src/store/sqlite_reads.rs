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

use rusqlite::{Connection, OpenFlags, OptionalExtension};

thread_local! {
    static CONNECTIONS: RefCell<HashMap<PathBuf, Connection>> = RefCell::new(HashMap::new());
}

const GET_VALUES: &str =
    "SELECT feature_values FROM feature_vectors WHERE generation = ?1 AND entity_id = ?2";

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
    pub fn get_values(&self, generation: i64, entity_id: &str) -> Result<Option<String>, String> {
        CONNECTIONS.with(|cell| {
            let mut connections = cell.borrow_mut();
            if !connections.contains_key(&self.path) {
                let conn = open(&self.path).map_err(|e| e.to_string())?;
                connections.insert(self.path.clone(), conn);
            }
            let conn = connections
                .get(&self.path)
                .ok_or_else(|| "no connection".to_string())?;
            let mut stmt = conn.prepare_cached(GET_VALUES).map_err(|e| e.to_string())?;
            stmt.query_row(rusqlite::params![generation, entity_id], |r| r.get(0))
                .optional()
                .map_err(|e| e.to_string())
        })
    }
}
