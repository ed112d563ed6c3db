//! Scheduled refresh: the scheduler's lease and the versions due for a refresh.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::Result;
use super::Store;

/// A version whose refresh period has passed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DueRefresh {
    pub version_id: i64,
    pub feature_id: i64,
    pub version: String,
    pub raw_table_id: i64,
    pub refresh_every_seconds: i64,
    /// The table version the served snapshot read.
    pub data_version: Option<i64>,
    pub refresh_failures: i32,
}

/// A served version's freshness, for metrics.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ServedFreshness {
    pub feature: String,
    pub version: String,
    pub computed_at: DateTime<Utc>,
    pub stale: bool,
}

impl Store {
    /// Every computed version that is not archived, with its served snapshot's age and whether
    /// it is stale.
    pub async fn served_freshness(&self) -> Result<Vec<ServedFreshness>> {
        Ok(on_pool!(self, read, |p| sqlx::query_as(concat!(
            "SELECT f.name AS feature, v.version, v.computed_at, ",
            stale_sql!("v", "f.raw_table_id"),
            " FROM feature_versions v JOIN features f ON f.id = v.feature_id \
             WHERE v.computed_at IS NOT NULL AND v.status <> 'archived' ORDER BY v.id"
        ))
        .fetch_all(p)
        .await)?)
    }

    /// Take or renew the scheduler lease for `ttl`; whether `holder` holds it now. One UPDATE
    /// decides, so two replicas can never both win: on Postgres the row lock makes the second
    /// re-check the condition after the first commits, and it then fails. Postgres judges
    /// expiry by its own clock; SQLite by `now`, the caller's reading of the database's clock.
    pub async fn hold_lease(
        &self,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let held: Option<i32> = match self {
            Store::Postgres(p) => {
                sqlx::query_scalar(
                    "UPDATE scheduler_lease SET holder = $1, \
                     expires_at = clock_timestamp() + make_interval(secs => $2) \
                     WHERE id = 1 AND (holder = $1 OR expires_at < clock_timestamp()) RETURNING id",
                )
                .bind(holder)
                .bind(ttl.as_secs_f64())
                .fetch_optional(p)
                .await?
            }
            Store::Sqlite { write, .. } => {
                let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
                sqlx::query_scalar(
                    "UPDATE scheduler_lease SET holder = $1, expires_at = $2 \
                     WHERE id = 1 AND (holder = $1 OR expires_at < $3) RETURNING id",
                )
                .bind(holder)
                .bind(until)
                .bind(now)
                .fetch_optional(write)
                .await?
            }
        };
        Ok(held.is_some())
    }

    /// Give the lease up (on shutdown), so another replica need not wait for it to expire.
    pub async fn release_lease(&self, holder: &str) -> Result<()> {
        on_pool!(self, write, |p| {
            sqlx::query(
            "UPDATE scheduler_lease SET holder = NULL, expires_at = $2 WHERE id = 1 AND holder = $1"
        )
        .bind(holder)
        .bind(DateTime::<Utc>::UNIX_EPOCH)
        .execute(p)
        .await
        .map(|_| ())
        })?;
        Ok(())
    }

    /// Versions with a refresh period that are due at `now`, most overdue first. Archived
    /// versions are left alone.
    pub async fn due_refreshes(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<DueRefresh>> {
        Ok(on_pool!(self, read, |p| sqlx::query_as(
            "SELECT v.id AS version_id, v.feature_id, v.version, f.raw_table_id, \
             v.refresh_every_seconds, v.data_version, v.refresh_failures \
             FROM feature_versions v JOIN features f ON f.id = v.feature_id \
             WHERE v.refresh_every_seconds IS NOT NULL AND v.status <> 'archived' \
             AND v.next_refresh_at <= $1 ORDER BY v.next_refresh_at LIMIT $2"
        )
        .bind(now)
        .bind(limit)
        .fetch_all(p)
        .await)?)
    }

    /// Claim a due refresh by moving its next time to `next`; false when it was no longer due
    /// (another scheduler claimed it, or its schedule changed).
    pub async fn claim_refresh(
        &self,
        version_id: i64,
        now: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(on_pool!(self, write, |p| sqlx::query(
            "UPDATE feature_versions SET next_refresh_at = $2 WHERE id = $1 \
             AND refresh_every_seconds IS NOT NULL AND next_refresh_at <= $3"
        )
        .bind(version_id)
        .bind(next)
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected() == 1))?)
    }

    /// A refresh found nothing new, or succeeded: record when, and clear the failure count.
    pub async fn refresh_checked(&self, version_id: i64, now: DateTime<Utc>) -> Result<()> {
        self.update_at(
            "UPDATE feature_versions SET refresh_checked_at = $2, refresh_failures = 0 \
             WHERE id = $1",
            version_id,
            now,
        )
        .await
        .map(|_| ())
    }

    /// A refresh failed: count it and put the next try off until `retry_at`.
    pub async fn refresh_failed(&self, version_id: i64, retry_at: DateTime<Utc>) -> Result<()> {
        self.update_at(
            "UPDATE feature_versions SET refresh_failures = refresh_failures + 1, \
             next_refresh_at = $2 WHERE id = $1 AND refresh_every_seconds IS NOT NULL",
            version_id,
            retry_at,
        )
        .await
        .map(|_| ())
    }
}
