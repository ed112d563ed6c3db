//! The jobs log: every compute, backfill and refresh, with how it ended.

use chrono::{DateTime, Utc};

use super::error::Result;
use super::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Compute,
    Backfill,
    Refresh,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Compute => "compute",
            JobKind::Backfill => "backfill",
            JobKind::Refresh => "refresh",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub feature_id: i64,
    pub version_id: Option<i64>,
    pub version: String,
    pub status: String,
    /// The feature's engine when the job was queued.
    pub engine: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// Which jobs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub feature_id: Option<i64>,
    pub status: Option<JobStatus>,
    pub limit: i64,
}

const JOB_COLUMNS: &str = "id, kind, feature_id, version_id, version, status, engine, created_at, \
     started_at, finished_at, error";

impl Store {
    /// Record a job waiting for a compute worker.
    pub async fn queue_job(
        &self,
        kind: JobKind,
        feature_id: i64,
        version_id: Option<i64>,
        version: &str,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        Ok(on_pool!(self, write, |p| sqlx::query_scalar(
            "INSERT INTO jobs (kind, feature_id, version_id, version, status, created_at, \
             heartbeat_at, engine) VALUES ($1, $2, $3, $4, 'queued', $5, $5, \
             COALESCE((SELECT engine FROM features WHERE id = $2), 'polars')) RETURNING id"
        )
        .bind(kind.as_str())
        .bind(feature_id)
        .bind(version_id)
        .bind(version)
        .bind(now)
        .fetch_one(p)
        .await)?)
    }

    pub async fn job_running(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        self.update_at(
            "UPDATE jobs SET status = 'running', started_at = $2, heartbeat_at = $2 \
             WHERE id = $1 AND status = 'queued'",
            id,
            now,
        )
        .await
        .map(|_| ())
    }

    /// Record how a job ended; `version_id` fills in the version a first compute created.
    pub async fn job_finished(
        &self,
        id: i64,
        status: JobStatus,
        version_id: Option<i64>,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        on_pool!(self, write, |p| sqlx::query(
            "UPDATE jobs SET status = $2, version_id = COALESCE($3, version_id), error = $4, \
             finished_at = $5 WHERE id = $1"
        )
        .bind(id)
        .bind(status.as_str())
        .bind(version_id)
        .bind(error)
        .bind(now)
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>> {
        Ok(on_pool!(self, read, |p| {
            let mut q =
                sqlx::QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1"));
            if let Some(feature_id) = filter.feature_id {
                q.push(" AND feature_id = ").push_bind(feature_id);
            }
            if let Some(status) = filter.status {
                q.push(" AND status = ").push_bind(status.as_str());
            }
            q.push(" ORDER BY id DESC LIMIT ").push_bind(filter.limit);
            q.build_query_as().fetch_all(p).await
        })?)
    }

    /// The replica working on a job is still alive.
    pub async fn job_heartbeat(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        self.update_at(
            "UPDATE jobs SET heartbeat_at = $2 WHERE id = $1 AND finished_at IS NULL",
            id,
            now,
        )
        .await
        .map(|_| ())
    }

    /// Mark failed the queued or running jobs whose replica stopped beating before `cutoff`;
    /// returns how many.
    pub async fn fail_abandoned_jobs(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        Ok(on_pool!(self, write, |p| sqlx::query(
            "UPDATE jobs SET status = 'failed', finished_at = $2, \
             error = 'the replica running this job stopped before it finished' \
             WHERE status IN ('queued', 'running') AND heartbeat_at < $1"
        )
        .bind(cutoff)
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?)
    }

    /// Delete finished jobs older than `cutoff`; returns how many went.
    pub async fn prune_jobs(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        Ok(on_pool!(self, write, |p| sqlx::query(
            "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < $1"
        )
        .bind(cutoff)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?)
    }
}
