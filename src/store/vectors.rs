//! Served vectors, by generation: reading them, and writing a new generation in pieces that
//! never hold SQLite's writer for long (Postgres: one COPY of blocks, `blocks`).

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolCopyExt;

use super::blocks::{self, Packer, COPY_HEADER, COPY_TRAILER, ENTRY_HEAD, TUPLE_HEAD};
use super::error::{classify, Result};
use super::{Store, StoreError, INSERT_CHUNK};

/// A batch of served rows, (entity id, values as JSON text), to write under a generation. The
/// store asks only for the rows: whoever carries them (the worker's frames, a test's vector)
/// decides how they are read, and a row that cannot be read fails the write with its reason.
/// Owned and `Send`, so a SQLite write can take it to a blocking thread.
pub trait VectorRows: Send + 'static {
    /// How many rows, and bytes of ids and values: they size the Postgres COPY buffer.
    fn count(&self) -> usize;
    fn text_bytes(&self) -> usize;
    fn rows(&self) -> impl Iterator<Item = std::result::Result<(&str, &str), String>>;
}

impl VectorRows for Vec<(String, String)> {
    fn count(&self) -> usize {
        self.len()
    }

    fn text_bytes(&self) -> usize {
        self.iter()
            .map(|(id, values)| id.len() + values.len())
            .sum()
    }

    fn rows(&self) -> impl Iterator<Item = std::result::Result<(&str, &str), String>> {
        self.iter()
            .map(|(id, values)| Ok((id.as_str(), values.as_str())))
    }
}

/// Rows deleted per statement when a generation is dropped (on Postgres, blocks of up to 32
/// vectors): each statement is one short write, so other writers get SQLite's lock in between.
const DELETE_CHUNK: i64 = 20_000;

/// Writes one generation's vectors as they arrive.
pub enum VectorWriter {
    /// rusqlite on a connection of its own: each chunk is one `BEGIN IMMEDIATE ... COMMIT`
    /// with a prepared statement, a few tens of milliseconds of the writer's lock.
    Sqlite {
        path: std::path::PathBuf,
        busy_timeout: std::time::Duration,
        conn: Option<rusqlite::Connection>,
        generation: i64,
        /// The pool every other write takes its one connection from: each chunk holds that
        /// connection while it writes, so writers waiting for it get their turn between chunks
        /// (SQLite's own busy wait backs off and can miss every gap in a steady stream).
        turns: sqlx::SqlitePool,
    },
    /// An in-memory SQLite database (tests): through its one pooled connection.
    SqlitePool {
        pool: sqlx::SqlitePool,
        generation: i64,
    },
    /// One COPY of blocks for the whole generation: Postgres readers never wait on it. The
    /// rows must come in id order, as the worker sends them.
    Postgres {
        copy: Option<sqlx::postgres::PgCopyIn<sqlx::pool::PoolConnection<sqlx::Postgres>>>,
        packer: Packer,
    },
}

impl VectorWriter {
    pub async fn write(&mut self, chunk: impl VectorRows) -> Result<()> {
        match self {
            VectorWriter::Sqlite {
                path,
                busy_timeout,
                conn,
                generation,
                turns,
            } => {
                let _turn = turns.acquire().await?;
                let taken = conn.take();
                let (path, timeout, generation) = (path.clone(), *busy_timeout, *generation);
                let (back, written) = tokio::task::spawn_blocking(move || {
                    let mut conn = match taken {
                        Some(c) => c,
                        None => match open_writer(&path, timeout) {
                            Ok(c) => c,
                            Err(e) => return (None, Err(e)),
                        },
                    };
                    let written = insert_chunk(&mut conn, generation, &chunk);
                    (Some(conn), written)
                })
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?;
                *conn = back;
                written
            }
            VectorWriter::SqlitePool { pool, generation } => {
                let rows: Vec<(&str, &str)> = chunk
                    .rows()
                    .collect::<std::result::Result<_, _>>()
                    .map_err(StoreError::Invalid)?;
                let mut tx = pool.begin().await?;
                for part in rows.chunks(INSERT_CHUNK) {
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO feature_vectors (generation, entity_id, feature_values) ",
                    );
                    insert.push_values(part, |mut row, (id, values)| {
                        row.push_bind(*generation).push_bind(*id).push_bind(*values);
                    });
                    insert.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }
            VectorWriter::Postgres { copy, packer } => {
                let copy = copy
                    .as_mut()
                    .ok_or_else(|| StoreError::Invalid("the COPY has ended".into()))?;
                let mut tuples = Vec::with_capacity(
                    chunk.text_bytes() + ENTRY_HEAD * chunk.count() + TUPLE_HEAD * 64,
                );
                for row in chunk.rows() {
                    let (id, values) = row.map_err(StoreError::Invalid)?;
                    packer.push(id, values, &mut tuples)?;
                }
                if !tuples.is_empty() {
                    copy.send(tuples).await?;
                }
                Ok(())
            }
        }
    }

    /// Every chunk is written: end the COPY (Postgres). Nothing is served yet.
    pub async fn finish(mut self) -> Result<()> {
        if let VectorWriter::Postgres { copy, packer } = &mut self {
            if let Some(mut copy) = copy.take() {
                let mut last = Vec::with_capacity(4096);
                packer.flush(&mut last)?;
                last.extend_from_slice(&COPY_TRAILER);
                copy.send(last).await?;
                copy.finish().await?;
            }
        }
        Ok(())
    }

    /// Give up: what was written stays under a generation nobody serves, and is dropped.
    pub async fn abort(mut self) {
        if let VectorWriter::Postgres { copy, .. } = &mut self {
            if let Some(copy) = copy.take() {
                let _ = copy.abort("the publish was abandoned").await;
            }
        }
    }
}

fn open_writer(
    path: &std::path::Path,
    busy_timeout: std::time::Duration,
) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

fn insert_chunk(
    conn: &mut rusqlite::Connection,
    generation: i64,
    chunk: &impl VectorRows,
) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO feature_vectors (generation, entity_id, feature_values) \
             VALUES (?1, ?2, ?3)",
        )?;
        for row in chunk.rows() {
            let (id, values) = row.map_err(StoreError::Invalid)?;
            insert.execute(rusqlite::params![generation, id, values])?;
        }
    }
    Ok(tx.commit()?)
}

impl Store {
    /// A new generation to write vectors under, recorded `writing` for `job`: if the publish
    /// dies, the sweep finds it by its job and drops it.
    pub async fn begin_generation(&self, job: Option<i64>, now: DateTime<Utc>) -> Result<i64> {
        Ok(on_pool!(self, write, |p| sqlx::query_scalar(
            "INSERT INTO vector_generations (state, job_id, created_at) \
             VALUES ('writing', $1, $2) RETURNING id"
        )
        .bind(job)
        .bind(now)
        .fetch_one(p)
        .await)?)
    }

    /// Where a new generation's vectors go.
    pub async fn vector_writer(&self, generation: i64) -> Result<VectorWriter> {
        match self {
            Store::Sqlite {
                write,
                path: Some(path),
                busy_timeout,
                ..
            } => Ok(VectorWriter::Sqlite {
                path: path.clone(),
                busy_timeout: *busy_timeout,
                conn: None,
                generation,
                turns: write.clone(),
            }),
            Store::Sqlite { write, .. } => Ok(VectorWriter::SqlitePool {
                pool: write.clone(),
                generation,
            }),
            Store::Postgres(p) => {
                let mut copy = p
                    .copy_in_raw(
                        "COPY feature_vector_blocks (generation, first_id, entries) \
                         FROM STDIN (FORMAT binary)",
                    )
                    .await?;
                copy.send(COPY_HEADER.as_slice()).await?;
                Ok(VectorWriter::Postgres {
                    copy: Some(copy),
                    packer: Packer::new(generation),
                })
            }
        }
    }

    /// Delete a generation nobody serves, a chunk per statement, then its record.
    pub async fn drop_generation(&self, generation: i64) -> Result<()> {
        loop {
            let statement = match self {
                Store::Sqlite { .. } => {
                    "DELETE FROM feature_vectors WHERE generation = $1 AND entity_id IN \
                     (SELECT entity_id FROM feature_vectors WHERE generation = $1 LIMIT $2)"
                }
                Store::Postgres(_) => {
                    "DELETE FROM feature_vector_blocks WHERE generation = $1 AND first_id IN \
                     (SELECT first_id FROM feature_vector_blocks WHERE generation = $1 LIMIT $2)"
                }
            };
            let deleted = on_pool!(self, write, |p| sqlx::query(statement)
                .bind(generation)
                .bind(DELETE_CHUNK)
                .execute(p)
                .await
                .map(|r| r.rows_affected())
                .map_err(classify))?;
            if deleted == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        on_pool!(self, write, |p| sqlx::query(
            "DELETE FROM vector_generations WHERE id = $1 AND state <> 'served'"
        )
        .bind(generation)
        .execute(p)
        .await
        .map(|_| ())
        .map_err(classify))?;
        Ok(())
    }

    /// Mark a generation that will never be served (its publish failed) for dropping.
    pub async fn retire_generation(&self, generation: i64) -> Result<()> {
        on_pool!(self, write, |p| sqlx::query(
            "UPDATE vector_generations SET state = 'retired' WHERE id = $1 AND state = 'writing'"
        )
        .bind(generation)
        .execute(p)
        .await
        .map(|_| ())
        .map_err(classify))?;
        Ok(())
    }

    /// Generations to drop: retired ones, and those still `writing` whose job has ended (its
    /// publish died with its replica, and the job was marked failed).
    pub async fn generations_to_drop(&self) -> Result<Vec<i64>> {
        Ok(on_pool!(self, read, |p| sqlx::query_scalar(
            "SELECT g.id FROM vector_generations g WHERE g.state = 'retired' \
             OR (g.state = 'writing' AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = g.job_id \
                 AND j.status IN ('succeeded', 'failed'))) ORDER BY g.id"
        )
        .fetch_all(p)
        .await)?)
    }

    /// Stored values (JSON text) of many entities of one generation; absent entities are
    /// absent. The ids must be distinct (Postgres answers an id as often as it is asked).
    pub async fn get_values_many(
        &self,
        generation: i64,
        entity_ids: &[&str],
    ) -> Result<Vec<(String, String)>> {
        let mut found = Vec::with_capacity(entity_ids.len());
        for chunk in entity_ids.chunks(INSERT_CHUNK) {
            match self {
                Store::Sqlite { read, .. } => {
                    let mut q = sqlx::QueryBuilder::new(
                        "SELECT entity_id, feature_values FROM feature_vectors WHERE generation = ",
                    );
                    q.push_bind(generation).push(" AND entity_id IN (");
                    let mut list = q.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    q.push(")");
                    let rows: Vec<(String, String)> = q.build_query_as().fetch_all(read).await?;
                    found.extend(rows);
                }
                Store::Postgres(p) => {
                    let chunk: Vec<&str> = chunk
                        .iter()
                        .copied()
                        .filter(|id| super::storable(id))
                        .collect();
                    // Each id with the block a point read would pick for it.
                    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
                        "SELECT q.id, b.entries FROM unnest($2::text[]) AS q(id) \
                         CROSS JOIN LATERAL (SELECT entries FROM feature_vector_blocks \
                         WHERE generation = $1 AND first_id <= q.id \
                         ORDER BY first_id DESC LIMIT 1) b",
                    )
                    .bind(generation)
                    .bind(&chunk)
                    .fetch_all(p)
                    .await?;
                    for (id, block) in rows {
                        if let Some(values) = blocks::find(&block, &id)? {
                            let values = values.to_string();
                            found.push((id, values));
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    /// Every stored (entity, values) of a generation, for an in-memory snapshot.
    pub async fn all_values(&self, generation: i64) -> Result<Vec<(String, String)>> {
        match self {
            Store::Sqlite { read, .. } => Ok(sqlx::query_as(
                "SELECT entity_id, feature_values FROM feature_vectors WHERE generation = $1",
            )
            .bind(generation)
            .fetch_all(read)
            .await?),
            Store::Postgres(p) => {
                use futures::TryStreamExt;
                // A block at a time: the blocks are not held beside what they decode to.
                let mut rows = sqlx::query_scalar::<_, Vec<u8>>(
                    "SELECT entries FROM feature_vector_blocks WHERE generation = $1",
                )
                .bind(generation)
                .fetch(p);
                let mut all = Vec::new();
                while let Some(block) = rows.try_next().await? {
                    for entry in blocks::entries(&block) {
                        let (id, values) = entry?;
                        all.push((id.to_string(), values.to_string()));
                    }
                }
                Ok(all)
            }
        }
    }

    /// One entity's stored values (JSON text) in a generation.
    pub async fn get_vector(&self, generation: i64, entity_id: &str) -> Result<Option<String>> {
        match self {
            Store::Sqlite { read, fast, .. } => {
                if let Some(fast) = fast {
                    match fast.get_values(generation, entity_id) {
                        Ok(found) => return Ok(found),
                        Err(e) => tracing::debug!(error = e, "fast SQLite read failed; using sqlx"),
                    }
                }
                Ok(sqlx::query_scalar(
                    "SELECT feature_values FROM feature_vectors \
                     WHERE generation = $1 AND entity_id = $2",
                )
                .bind(generation)
                .bind(entity_id)
                .fetch_optional(read)
                .await?)
            }
            Store::Postgres(p) => {
                if !super::storable(entity_id) {
                    return Ok(None);
                }
                // The block whose first id is the greatest at or below this one: one probe
                // of the primary key, backwards.
                let block: Option<Vec<u8>> = sqlx::query_scalar(
                    "SELECT entries FROM feature_vector_blocks \
                     WHERE generation = $1 AND first_id <= $2 ORDER BY first_id DESC LIMIT 1",
                )
                .bind(generation)
                .bind(entity_id)
                .fetch_optional(p)
                .await?;
                match block {
                    Some(block) => Ok(blocks::find(&block, entity_id)?.map(str::to_string)),
                    None => Ok(None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Rows whose second one cannot be read, as a broken frame would be.
    struct Broken;

    impl VectorRows for Broken {
        fn count(&self) -> usize {
            2
        }

        fn text_bytes(&self) -> usize {
            0
        }

        fn rows(&self) -> impl Iterator<Item = std::result::Result<(&str, &str), String>> {
            [
                Ok(("u9", "{}")),
                Err("a vector chunk ended early".to_string()),
            ]
            .into_iter()
        }
    }

    #[tokio::test]
    async fn plain_rows_are_written_under_their_generation_and_an_unreadable_row_fails_its_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = format!("sqlite:{}/vectors.db", dir.path().display());
        for url in [file.as_str(), "sqlite::memory:"] {
            let store = Store::connect(url, Duration::from_secs(5))
                .await
                .expect("store");
            let generation = store.begin_generation(None, Utc::now()).await.expect("gen");
            let mut writer = store.vector_writer(generation).await.expect("writer");
            let rows = vec![
                ("u1".to_string(), r#"{"spend":1.5}"#.to_string()),
                ("u\t2".to_string(), r#"{"spend":null}"#.to_string()),
            ];
            writer.write(rows).await.expect("written");
            let failed = writer.write(Broken).await;
            assert!(
                matches!(&failed, Err(StoreError::Invalid(why)) if why.contains("ended early")),
                "{url}: {failed:?}"
            );
            writer.finish().await.expect("finished");

            let mut stored = store.all_values(generation).await.expect("read");
            stored.sort();
            assert_eq!(
                stored,
                vec![
                    ("u\t2".to_string(), r#"{"spend":null}"#.to_string()),
                    ("u1".to_string(), r#"{"spend":1.5}"#.to_string()),
                ],
                "{url}: the broken chunk wrote nothing"
            );
        }
    }
}
