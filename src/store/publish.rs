//! Publishing a compute: one small transaction that records the snapshot and, when it is the
//! newest, points the version at the generation of vectors written before it.

use chrono::{DateTime, Utc};

use super::error::{classify, Result};
use super::{Changed, Retired, SnapshotKind, Store, StoreError, BUMP_CHANGES};

/// The table version a compute read, as freshness counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataMark {
    pub version: i64,
    /// When that version was committed (or first seen).
    pub ingested_at: DateTime<Utc>,
}

/// Everything a publish records.
pub struct PublishRequest<'a> {
    pub feature_id: i64,
    pub version: &'a str,
    /// The version's id when the compute began, if it existed then: a version deleted since
    /// is not recreated by this publish (`VersionGone`).
    pub existing: Option<i64>,
    pub computation_logic: &'a str,
    pub entity_key: &'a str,
    pub output_schema: &'a str,
    pub computed_at: DateTime<Utc>,
    pub entity_count: i64,
    /// The vectors, already written under this generation (`begin_generation`); `None` when
    /// the snapshot can only be history (an `as_of` older than the served one).
    pub generation: Option<i64>,
    /// When the snapshot starts to count: the publish time of a live compute, `as_of` else.
    pub valid_from: DateTime<Utc>,
    pub kind: SnapshotKind,
    /// The snapshot's Parquet file, relative to the data location.
    pub location: &'a str,
    /// The table version the compute read; `None` when its rows came with the request.
    pub data: Option<DataMark>,
    /// The snapshot's column statistics as JSON.
    pub stats: Option<&'a str>,
    /// The job this publish ends, recorded succeeded in the same transaction: nobody can see
    /// the snapshot while its job still says it runs, nor the job succeeded without it.
    pub job: Option<i64>,
}

/// The outcome of a publish.
#[derive(Debug, Clone)]
pub struct Published {
    pub version_id: i64,
    pub snapshot_id: i64,
    /// Whether the snapshot became the served set (it is the newest by `valid_from`); then
    /// `generation` and `change` are the new ones. An older one is only kept as history.
    pub served: bool,
    pub generation: i64,
    /// The change counter this publish committed, when it served.
    pub change: Option<i64>,
    /// A generation nobody serves any more (the one replaced, or this publish's own when it
    /// was not served): drop it.
    pub retired: Option<i64>,
}

impl Published {
    /// What this publish changed, to announce.
    pub fn changed(&self) -> Changed {
        Changed {
            change: self.change,
            retired: self
                .retired
                .map(|generation| Retired {
                    version_id: Some(self.version_id),
                    generation,
                })
                .into_iter()
                .collect(),
            ..Changed::default()
        }
    }
}

impl Store {
    /// Create the version if it does not exist, record the snapshot and, when it is the newest,
    /// serve its generation: all in one transaction of a few statements, however many vectors
    /// there are. The version row is updated first: on Postgres its row lock serializes
    /// concurrent publishes of one version, on SQLite the single writer does. Updating before
    /// inserting keeps recomputes from consuming ids (a conflicting insert burns a sequence
    /// value on both backends).
    pub async fn publish(&self, req: &PublishRequest<'_>) -> Result<Published> {
        on_pool!(self, write, |p| {
            let mut tx = p.begin().await?;
            // Taking the version row's lock (Postgres) before reading its newest snapshot keeps
            // two publishes of one version from both deciding they are the newest.
            let lock = "UPDATE feature_versions SET updated_at = updated_at \
                        WHERE feature_id = $1 AND version = $2 \
                        RETURNING id, computed_at, generation";
            let mut found: Option<(i64, Option<DateTime<Utc>>, i64)> = None;
            for attempt in 0..2 {
                found = sqlx::query_as(lock)
                    .bind(req.feature_id)
                    .bind(req.version)
                    .fetch_optional(&mut *tx)
                    .await?;
                match (found, req.existing) {
                    (Some((id, _, _)), Some(existing)) if id != existing => {
                        return Err(StoreError::VersionGone)
                    }
                    (None, Some(_)) => return Err(StoreError::VersionGone),
                    _ => {}
                }
                if found.is_some() || attempt == 1 {
                    break;
                }
                // First compute of this version: create it. A concurrent publish may create it
                // first; then this insert does nothing and the lock waits for it.
                sqlx::query(
                    "INSERT INTO feature_versions (feature_id, version, status, computation_logic, \
                     entity_key, created_at, updated_at) VALUES ($1, $2, 'active', $3, $4, $5, $5) \
                     ON CONFLICT (feature_id, version) DO NOTHING",
                )
                .bind(req.feature_id)
                .bind(req.version)
                .bind(req.computation_logic)
                .bind(req.entity_key)
                .bind(req.computed_at)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
            let (version_id, computed_at, old_generation) =
                found.ok_or(StoreError::StillReferenced)?;
            let newest: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT valid_from FROM feature_snapshots WHERE feature_version_id = $1 \
                 ORDER BY valid_from DESC, id DESC LIMIT 1",
            )
            .bind(version_id)
            .fetch_optional(&mut *tx)
            .await?;
            // A version computed before snapshots existed has served since its computed_at.
            let newest_yet = newest.or(computed_at).is_none_or(|n| req.valid_from >= n);
            let (data_version, data_as_of) = match req.data {
                Some(m) => (Some(m.version), Some(m.ingested_at)),
                None => (None, None),
            };
            let snapshot_id: i64 = sqlx::query_scalar(
                "INSERT INTO feature_snapshots (feature_version_id, valid_from, computed_at, \
                 entity_count, kind, location, data_version, data_as_of, stats) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .bind(version_id)
            .bind(req.valid_from)
            .bind(req.computed_at)
            .bind(req.entity_count)
            .bind(req.kind.as_str())
            .bind(req.location)
            .bind(data_version)
            .bind(data_as_of)
            .bind(req.stats)
            .fetch_one(&mut *tx)
            .await?;
            if let Some(job) = req.job {
                sqlx::query(
                    "UPDATE jobs SET status = 'succeeded', version_id = $2, error = NULL, \
                     finished_at = $3 WHERE id = $1",
                )
                .bind(job)
                .bind(version_id)
                .bind(req.computed_at)
                .execute(&mut *tx)
                .await?;
            }
            let new_generation = match (newest_yet, req.generation) {
                (true, Some(g)) => g,
                (_, own) => {
                    if let Some(g) = own {
                        retire(&mut tx, g).await?;
                    }
                    tx.commit().await?;
                    return Ok(Published {
                        version_id,
                        snapshot_id,
                        served: false,
                        generation: 0,
                        change: None,
                        retired: own,
                    });
                }
            };
            sqlx::query(
                "UPDATE feature_versions SET generation = $7, computed_at = $2, \
                 entity_count = $3, output_schema = $4, updated_at = $2, data_version = $5, \
                 data_as_of = $6 WHERE id = $1",
            )
            .bind(version_id)
            .bind(req.computed_at)
            .bind(req.entity_count)
            .bind(req.output_schema)
            .bind(data_version)
            .bind(data_as_of)
            .bind(new_generation)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE vector_generations SET state = 'served' WHERE id = $1")
                .bind(new_generation)
                .execute(&mut *tx)
                .await?;
            let retired = (computed_at.is_some() && old_generation != new_generation)
                .then_some(old_generation);
            if let Some(old) = retired {
                retire(&mut tx, old).await?;
            }
            let change: i64 = sqlx::query_scalar(BUMP_CHANGES).fetch_one(&mut *tx).await?;
            crate::failpoint::reach(crate::failpoint::PUBLISH_BEFORE_COMMIT).await;
            tx.commit().await?;
            Ok(Published {
                version_id,
                snapshot_id,
                served: true,
                generation: new_generation,
                change: Some(change),
                retired,
            })
        })
    }
}

async fn retire<'c, DB>(tx: &mut sqlx::Transaction<'c, DB>, generation: i64) -> Result<()>
where
    DB: sqlx::Database,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    sqlx::query("UPDATE vector_generations SET state = 'retired' WHERE id = $1")
        .bind(generation)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
